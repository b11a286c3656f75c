"""`diffatr cache export --format parquet|safetensors|faiss`: each export loaded back with its
own library (pyarrow, safetensors, faiss) equals the cache; FAISS search equals a NumPy cosine
oracle; row groups / chunks; one-line errors and the missing-extra message."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from diffatr.cache import Cache, CacheError, CacheWriter, export
from diffatr.cli import main
from diffatr.errors import UserError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
faiss = pytest.importorskip("faiss")

IDS = ["a.wav", "b, c.wav", "ü – 日本.wav", "d.wav"]
CAPTIONS = ["a dog barks", "tab\there", "two\nlines", "rain", 'quote " and, comma', "café"]
INDEX = [0, 1, 1, 2, -1, 3]


def _make(path, dtype="float32", text_dim=5, n_extra=0):
    rng = np.random.default_rng(0)
    ids = IDS + [f"x{i}.wav" for i in range(n_extra)]
    audio = (rng.standard_normal((len(ids), 5)) * 10).astype(np.float32)
    text = rng.standard_normal((6, text_dim)).astype(np.float32) / 7
    with CacheWriter(path, dataset="unit", split="test", space="backbone", dtype=dtype) as w:
        w.set_attrs("audio", encoder="cnn14", feature_kind="pre_fc1", settings={"a": 1})
        w.set_attrs("text", encoder="/models/minilm", feature_kind="mean", settings={"b": 2})
        w.add_audio(ids, audio)
        w.add_text(CAPTIONS, INDEX, text)
    return path


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    return {
        "float32": _make(root / "c32.h5"),
        "float16": _make(root / "c16.h5", dtype="float16"),
        "big": _make(root / "big.h5", text_dim=5, n_extra=40),
    }


def _stored(path):
    with Cache(path) as c:
        return c.embeddings("audio")[:], c.embeddings("text")[:], c.attrs


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_parquet_columns_types_and_values(caches, tmp_path, dtype, monkeypatch):
    import diffatr.cache.export_parquet as ep

    monkeypatch.setattr(ep, "_GROUP_BYTES", 4 * 5 * 3)  # 3 rows per group: several groups
    written = export(caches[dtype], "parquet", tmp_path)
    assert [p.name for p in written] == [
        f"c{dtype[-2:]}.audio.parquet",
        f"c{dtype[-2:]}.text.parquet",
    ]
    audio, text, root = _stored(caches[dtype])
    a = pq.read_table(written[0])
    assert a.schema.field("embedding").type == pa.list_(pa.float32(), 5)
    assert a.column("id").to_pylist() == IDS
    np.testing.assert_array_equal(
        np.array(a.column("embedding").to_pylist(), np.float32), audio.astype(np.float32)
    )
    assert pq.ParquetFile(written[0]).metadata.num_row_groups == 2  # 4 rows, 3 per group
    t = pq.read_table(written[1])
    assert t.column("caption").to_pylist() == CAPTIONS
    assert t.column("audio_index").to_pylist() == INDEX
    assert t.column("clip_id").to_pylist() == [IDS[k] if k >= 0 else None for k in INDEX]
    np.testing.assert_array_equal(
        np.array(t.column("embedding").to_pylist(), np.float32), text.astype(np.float32)
    )
    meta = json.loads(t.schema.metadata[b"diffatr"])
    assert meta["modality"] == "text" and meta["root"]["dataset"] == root["dataset"]
    assert meta["attrs"]["encoder"] == "/models/minilm"
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_safetensors_loads_with_the_library(caches, tmp_path, dtype):
    result = CliRunner().invoke(
        main,
        ["cache", "export", str(caches[dtype]), "--format", "safetensors", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    stem = caches[dtype].stem
    tensors = safetensors_numpy.load_file(str(tmp_path / f"{stem}.safetensors"))
    audio, text, root = _stored(caches[dtype])
    assert tensors["audio_embeddings"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(tensors["audio_embeddings"], audio)
    np.testing.assert_array_equal(tensors["text_embeddings"], text)
    assert tensors["audio_index"].tolist() == INDEX
    from safetensors import safe_open

    with safe_open(str(tmp_path / f"{stem}.safetensors"), framework="numpy") as f:
        meta = f.metadata()
    assert json.loads(meta["root"])["split"] == root["split"]
    assert json.loads(meta["text"])["encoder"] == "/models/minilm"
    names = json.loads((tmp_path / meta["names_file"]).read_text(encoding="utf-8"))
    assert names == {"audio_ids": IDS, "captions": CAPTIONS}


def test_faiss_flat_search_equals_numpy_cosine(caches, tmp_path):
    written = export(caches["big"], "faiss", tmp_path)
    assert [p.name for p in written] == [
        "big.audio.faiss",
        "big.audio.ids.json",
        "big.text.faiss",
        "big.text.ids.json",
    ]
    audio, text, _ = _stored(caches["big"])
    index = faiss.read_index(str(tmp_path / "big.audio.faiss"))
    assert (index.ntotal, index.d, index.metric_type) == (44, 5, faiss.METRIC_INNER_PRODUCT)
    sidecar = json.loads((tmp_path / "big.audio.ids.json").read_text(encoding="utf-8"))
    assert sidecar["ids"][:4] == IDS and len(sidecar["ids"]) == 44
    q = text / np.linalg.norm(text, axis=1, keepdims=True)
    scores, rows = index.search(q.astype(np.float32), 5)
    cos = q @ (audio / np.linalg.norm(audio, axis=1, keepdims=True)).T  # the oracle
    np.testing.assert_array_equal(rows, np.argsort(-cos, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(scores, np.sort(cos, axis=1)[:, ::-1][:, :5], atol=1e-5)
    text_side = json.loads((tmp_path / "big.text.ids.json").read_text(encoding="utf-8"))
    assert text_side["ids"] == CAPTIONS
    assert text_side["clip_ids"] == [IDS[k] if k >= 0 else None for k in INDEX]


def test_faiss_index_factory(caches, tmp_path):
    export(caches["big"], "faiss", tmp_path, index_factory="IVF2,Flat")
    index = faiss.read_index(str(tmp_path / "big.audio.faiss"))
    assert index.is_trained and index.ntotal == 44
    result = CliRunner().invoke(
        main,
        [
            "cache",
            "export",
            str(caches["big"]),
            "--format",
            "faiss",
            "--out",
            str(tmp_path / "x"),
            "--index-factory",
            "NoSuchIndex",
        ],
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: --index-factory 'NoSuchIndex'")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    with pytest.raises(CacheError, match="only applies with --format faiss"):
        export(caches["big"], "npz", tmp_path, index_factory="HNSW32")


def test_missing_library_names_the_extra(caches, tmp_path, monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(
        UserError, match=r"pyarrow, which is not installed: pip install 'diffatr\[export\]'"
    ):
        export(caches["float32"], "parquet", tmp_path)
