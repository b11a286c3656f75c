"""`diffatr cache export` and `diffatr.cache.export`: NumPy archives, one .npy per array, and
the Embedding Projector's TSV pair; contents equal the cache, nothing half-written is left."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from diffatr.cache import Cache, CacheError, CacheWriter, export
from diffatr.cli import main
from diffatr.outputs import EXPORT_RECORD

IDS = ["a.wav", "b, c.wav", "ü – 日本.wav", "d.wav"]
CAPTIONS = [
    "a dog barks",
    "tab\there",
    "two\nlines",
    "windows\r\nline",
    'quote " and, comma',
    "café – 日本",
]
INDEX = [0, 1, 1, 2, -1, 3]
NPZ_ARRAYS = {"audio_ids", "captions", "audio_index", "audio_embeddings", "text_embeddings"}


def _files(folder):
    """The exported files in `folder`: all but the record of which cache made them."""
    assert (folder / EXPORT_RECORD).is_file()
    return [p for p in folder.iterdir() if p.name != EXPORT_RECORD]


def _make(path, dtype="float32", text_dim=5, audio_only=False):
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((4, 5)) * 10).astype(np.float32)
    text = rng.standard_normal((6, text_dim)).astype(np.float32) / 7
    with CacheWriter(path, dataset="unit", split="test", space="backbone", dtype=dtype) as w:
        w.add_audio(IDS, audio)
        if not audio_only:
            w.add_text(CAPTIONS, INDEX, text)
    return path


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    return {
        "float32": _make(root / "c32.h5"),
        "float16": _make(root / "c16.h5", dtype="float16"),
        "dims": _make(root / "dims.h5", text_dim=3),
        "audio_only": _make(root / "audio_only.h5", audio_only=True),
    }


def _stored(path):
    with Cache(path) as cache:
        out = {"audio_ids": cache.audio_ids(), "audio_embeddings": cache.embeddings("audio")[:]}
        if cache.has("text"):
            out |= {
                "captions": cache.captions(),
                "audio_index": cache.audio_index(),
                "text_embeddings": cache.embeddings("text")[:],
            }
        return out


def _export_cli(cache, fmt, out):
    result = CliRunner().invoke(
        main, ["cache", "export", str(cache), "--format", fmt, "--out", str(out)]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    return result


def _no_partial(folder):
    leftovers = [p.name for p in folder.rglob("*") if ".partial" in p.name]
    assert leftovers == []


def _rows(path):
    """Lines of a TSV file, split on newlines only (as a strict TSV reader would)."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert text.splitlines() == lines  # no other line breaks (\r, \u2028, ...) inside cells
    return [line.split("\t") for line in lines]


# -- npz -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_npz_equals_the_cache(caches, tmp_path, dtype):
    source = caches[dtype]
    result = _export_cli(source, "npz", tmp_path / "out")
    assert result.exit_code == 0, result.output
    target = tmp_path / "out" / f"{source.stem}.npz"
    assert result.output.strip() == f"wrote {target}"
    assert sorted(p.name for p in _files(tmp_path / "out")) == [target.name]
    stored = _stored(source)
    with np.load(target, allow_pickle=False) as z:
        assert set(z.files) == NPZ_ARRAYS
        assert z["audio_ids"].tolist() == IDS
        assert z["captions"].tolist() == CAPTIONS
        assert z["audio_index"].dtype == np.int64
        assert z["audio_index"].tolist() == INDEX
        for name in ("audio_embeddings", "text_embeddings"):
            assert z[name].dtype == np.dtype(dtype)
            np.testing.assert_array_equal(z[name], stored[name])


def test_npz_of_an_audio_only_cache(caches, tmp_path):
    (path,) = export(caches["audio_only"], "npz", tmp_path)
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"audio_ids", "audio_embeddings"}
        assert z["audio_ids"].tolist() == IDS


def test_npz_streams_across_chunks(tmp_path):
    """More rows than one read chunk (8192): the streamed .npy header and body must agree."""
    n = 8192 + 5
    emb = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    with CacheWriter(tmp_path / "big.h5", dataset="d", split="s", space="joint") as w:
        w.add_audio([f"{i}.wav" for i in range(n)], emb)
    (path,) = export(tmp_path / "big.h5", "npz", tmp_path / "out")
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["audio_embeddings"], emb)
    tsv = export(tmp_path / "big.h5", "tsv", tmp_path / "tsv")
    vectors = np.loadtxt(tsv[0], delimiter="\t", dtype=np.float32)
    np.testing.assert_array_equal(vectors, emb)  # small integers survive %.6g exactly
    assert len(_rows(tsv[1])) == n + 1


# -- npy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_npy_writes_one_file_per_array(caches, tmp_path, dtype):
    source = caches[dtype]
    out = tmp_path / "out"
    result = _export_cli(source, "npy", out)
    assert result.exit_code == 0, result.output
    expected = {f"{name}.npy" for name in NPZ_ARRAYS} | {"attributes.json"}
    assert {p.name for p in _files(out)} == expected
    stored = _stored(source)
    for name in NPZ_ARRAYS:
        array = np.load(out / f"{name}.npy", allow_pickle=False)
        if name.endswith("embeddings"):
            assert array.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(array, stored[name])
        else:
            assert list(array.tolist()) == list(np.asarray(stored[name]).tolist())
    attrs = json.loads((out / "attributes.json").read_text(encoding="utf-8"))
    assert attrs["format"] == "diffatr-cache" and attrs["format_version"] == 1
    assert (attrs["dataset"], attrs["split"]) == ("unit", "test")


# -- tsv -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_tsv_pair_when_dims_agree(caches, tmp_path, dtype):
    source = caches[dtype]
    result = _export_cli(source, "tsv", tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in _files(tmp_path)) == ["metadata.tsv", "vectors.tsv"]
    stored = _stored(source)

    vectors = _rows(tmp_path / "vectors.tsv")
    assert len(vectors) == len(IDS) + len(CAPTIONS)  # no header
    values = np.array(vectors, dtype=np.float64)
    expected = np.concatenate([stored["audio_embeddings"], stored["text_embeddings"]])
    np.testing.assert_allclose(values, expected.astype(np.float64), rtol=1e-5, atol=0)

    meta = _rows(tmp_path / "metadata.tsv")
    assert meta[0] == ["modality", "name", "clip_id"]
    assert len(meta) == 1 + len(vectors)
    assert all(len(row) == 3 for row in meta)
    assert meta[1 : 1 + len(IDS)] == [["audio", i, i] for i in IDS]
    text_rows = meta[1 + len(IDS) :]
    assert [row[0] for row in text_rows] == ["text"] * len(CAPTIONS)
    assert [row[1] for row in text_rows] == [
        "a dog barks",
        "tab here",
        "two lines",
        "windows line",
        'quote " and, comma',
        "café – 日本",
    ]
    assert [row[2] for row in text_rows] == [IDS[k] if k >= 0 else "" for k in INDEX]


def test_tsv_one_pair_per_modality_when_dims_differ(caches, tmp_path):
    written = export(caches["dims"], "tsv", tmp_path)
    names = {
        "audio_vectors.tsv",
        "audio_metadata.tsv",
        "text_vectors.tsv",
        "text_metadata.tsv",
    }
    assert {p.name for p in written} == names
    assert {p.name for p in _files(tmp_path)} == names
    stored = _stored(caches["dims"])
    for side, n, dim in (("audio", len(IDS), 5), ("text", len(CAPTIONS), 3)):
        vectors = np.array(_rows(tmp_path / f"{side}_vectors.tsv"), dtype=np.float64)
        assert vectors.shape == (n, dim)
        np.testing.assert_allclose(vectors, stored[f"{side}_embeddings"], rtol=1e-5, atol=0)
        meta = _rows(tmp_path / f"{side}_metadata.tsv")
        assert meta[0] == ["modality", "name", "clip_id"] and len(meta) == n + 1
        assert {row[0] for row in meta[1:]} == {side}


def test_tsv_of_an_audio_only_cache(caches, tmp_path):
    written = export(caches["audio_only"], "tsv", tmp_path)
    assert [p.name for p in written] == ["vectors.tsv", "metadata.tsv"]
    assert len(_rows(tmp_path / "vectors.tsv")) == len(IDS)
    assert len(_rows(tmp_path / "metadata.tsv")) == len(IDS) + 1


# -- atomic writes and errors ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["npz", "npy", "tsv"])
def test_no_partial_files_are_left(caches, tmp_path, fmt):
    try:
        written = export(caches["float32"], fmt, tmp_path / "out")
    finally:
        _no_partial(tmp_path)
    assert written and all(p.exists() for p in written)
    assert {p.name for p in _files(tmp_path / "out")} == {p.name for p in written}


def test_export_overwrites_its_own_earlier_output(caches, tmp_path):
    export(caches["float32"], "tsv", tmp_path)
    export(caches["dims"], "tsv", tmp_path)  # the same folder, other files
    export(caches["float32"], "tsv", tmp_path)
    assert len(_rows(tmp_path / "vectors.tsv")) == len(IDS) + len(CAPTIONS)
    _no_partial(tmp_path)


@pytest.mark.parametrize("what", ["missing", "text-file", "not-a-cache"])
def test_bad_path_gives_a_one_line_error(tmp_path, what):
    path = tmp_path / "input.h5"
    if what == "text-file":
        path.write_text("not hdf5\n")
    elif what == "not-a-cache":
        import h5py

        with h5py.File(path, "w") as h:
            h["x"] = np.zeros(3)
    for fmt in ("npz", "npy", "tsv"):
        result = _export_cli(path, fmt, tmp_path / "out")
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, result.output
        assert lines[0].startswith(f"Error: {path}: "), lines[0]
        assert "Traceback" not in result.output
    with pytest.raises(CacheError, match=str(path)):
        export(path, "npz", tmp_path / "out")
    assert not any((tmp_path / "out").glob("*"))


def test_folder_instead_of_a_cache(tmp_path):
    with pytest.raises(CacheError, match="folder"):
        export(tmp_path, "npz", tmp_path / "out")


def test_unknown_format_is_refused(caches, tmp_path):
    with pytest.raises(CacheError, match="npz"):
        export(caches["float32"], "csv", tmp_path)
    result = _export_cli(caches["float32"], "csv", tmp_path)
    assert result.exit_code == 2 and "csv" in result.output
