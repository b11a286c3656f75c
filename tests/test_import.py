"""`diffatr cache import`: round trips export -> import (Parquet, npz) give the same rows, the
source's own metadata kept apart as untrusted;
.npy rows following a caption file; chunked reading; one-line refusals with no output."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from diffatr.cache import Cache, CacheWriter, export
from diffatr.cache.importer import ImportConfig, import_embeddings
from diffatr.checkpoints import file_sha256
from diffatr.cli import main

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

IDS = ["a.wav", "b, c.wav", "ü – 日本.wav", "d.wav"]
CAPTIONS = ["a dog barks", "tab\there", "two\nlines", "rain", "query only", "café"]
INDEX = [0, 1, 1, 2, -1, 3]


def _make(path, dtype="float32"):
    rng = np.random.default_rng(1)
    with CacheWriter(path, dataset="unit", split="val", space="joint", dtype=dtype) as w:
        w.set_attrs(
            "audio",
            encoder="cnn14",
            feature_kind="pre_fc1",
            settings={"k": [1, 2]},
            sample_rate=32000,
        )
        w.set_attrs("text", encoder="/m/minilm", feature_kind="mean", settings={"pooling": "mean"})
        w.add_audio(IDS, rng.standard_normal((4, 6)).astype(np.float32))
        w.add_text(CAPTIONS, INDEX, rng.standard_normal((6, 6)).astype(np.float32))
    return path


def _content(path):
    with Cache(path) as c:
        return {
            "root": {k: c.attrs[k] for k in ("dataset", "split", "embedding_space")},
            "ids": c.audio_ids(),
            "captions": c.captions(),
            "index": c.audio_index().tolist(),
            "audio": c.embeddings("audio")[:],
            "text": c.embeddings("text")[:],
            "audio_attrs": c.side_attrs("audio"),
            "text_attrs": c.side_attrs("text"),
            "dtype": str(c.embeddings("audio").dtype),
        }


def _same(a, b):
    for key in a:
        if key in ("audio", "text"):
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


def _cli(*args):
    return CliRunner().invoke(main, ["cache", "import", *map(str, args)])


def _refused(result, out, *fragments):
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert line.startswith("Error: ") and len(line.splitlines()) == 1, result.output
    for f in fragments:
        assert f in line, line
    assert not out.exists()
    assert not out.with_name(out.name + ".partial").exists()


@pytest.mark.parametrize("fmt", ["parquet", "npz"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_gives_the_same_cache(tmp_path, fmt, dtype):
    source = _make(tmp_path / "src.h5", dtype)
    files = export(source, fmt, tmp_path / "x")
    audio, text = (files[0], files[1]) if fmt == "parquet" else (files[0], files[0])
    out = tmp_path / "back.h5"
    flags = ["--float16"] if dtype == "float16" else []
    if fmt == "npz":  # npz carries no attributes: give them
        flags += ["--dataset", "unit", "--split", "val"]
    result = _cli(out, "--audio", audio, "--text", text, *flags)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out}: 4 clips (6-d), 6 captions (6-d)"
    want, got = _content(source), _content(out)
    for side in ("audio_attrs", "text_attrs"):
        had, has = want.pop(side), got.pop(side)
        if fmt == "parquet":  # the source's own metadata: kept, untrusted, never promoted
            _kept_untrusted(had, has)
    _same(want, got)


def _kept_untrusted(had: dict, has: dict) -> None:
    assert json.loads(has["imported_metadata"])["attrs"] == had
    assert has["encoder"] == has["feature_kind"] == "imported"
    assert has["checkpoint_sha256"] == ""
    assert set(has["settings"]) == {"imported_from", "source_format"}
    origin = json.loads(has["imported_from"])
    assert origin["sha256"] == file_sha256(origin["file"]) and origin["format"] == "parquet"


def test_chunked_reading_gives_the_same_rows(tmp_path, monkeypatch):
    import diffatr.cache.export_parquet as ep

    source = _make(tmp_path / "src.h5")
    monkeypatch.setattr(ep, "_GROUP_BYTES", 4 * 6 * 2)  # row groups of 2
    a, t = export(source, "parquet", tmp_path / "x")
    assert pq.ParquetFile(a).metadata.num_row_groups == 2
    import_embeddings(tmp_path / "back.h5", a, t, ImportConfig(chunk_rows=3))
    want, got = _content(source), _content(tmp_path / "back.h5")
    for side in ("audio_attrs", "text_attrs"):
        _kept_untrusted(want.pop(side), got.pop(side))
    _same(want, got)


def _clotho(path):
    path.write_text(
        "file_name,caption_1,caption_2\n"
        "a.wav,a dog barks,a dog\n"
        "b.wav,rain falls,wet rain\n"
        "c.wav,wind,strong wind\n",
        encoding="utf-8",
    )
    return path


def test_npy_rows_follow_the_caption_file(tmp_path):
    rng = np.random.default_rng(2)
    audio, text = rng.standard_normal((3, 4)), rng.standard_normal((6, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", audio)  # float64: converted
    np.save(tmp_path / "t.npy", text)
    out = tmp_path / "c.h5"
    minilm = "/models/all-MiniLM-L6-v2"
    result = _cli(
        out,
        "--audio",
        tmp_path / "a.npy",
        "--text",
        tmp_path / "t.npy",
        "--captions",
        _clotho(tmp_path / "caps.csv"),
        "--text-encoder",
        minilm,
        "--pooling",
        "mean",
        "--audio-encoder",
        "laion-clap",
    )
    assert result.exit_code == 0, result.output
    c = _content(out)
    assert c["ids"] == ["a.wav", "b.wav", "c.wav"]
    assert c["captions"] == [
        "a dog barks",
        "a dog",
        "rain falls",
        "wet rain",
        "wind",
        "strong wind",
    ]
    assert c["index"] == [0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(c["audio"], audio.astype(np.float32))
    np.testing.assert_array_equal(c["text"], text)
    assert c["text_attrs"]["encoder"] == minilm and c["text_attrs"]["feature_kind"] == "mean"
    assert c["text_attrs"]["settings"]["pooling"] == "mean"
    assert c["audio_attrs"]["encoder"] == "laion-clap"
    assert c["root"] == {"dataset": "imported", "split": "test", "embedding_space": "joint"}


def _parquet(path, column, ids=None):
    cols = {"embedding": column}
    if ids is not None:
        cols = {"id": pa.array(ids), **cols}
    pq.write_table(pa.table(cols), path)
    return path


def test_variable_lists_of_doubles_are_accepted(tmp_path):
    rows = [[1.0, 2.0], [3.0, 4.5], [0.5, 0.25]]
    a = _parquet(
        tmp_path / "a.parquet", pa.array(rows, pa.list_(pa.float64())), ["a.wav", "b.wav", "c.wav"]
    )
    np.save(tmp_path / "t.npy", np.ones((6, 2), np.float32))
    out = tmp_path / "v.h5"
    result = _cli(
        out, "--audio", a, "--text", tmp_path / "t.npy", "--captions", _clotho(tmp_path / "c.csv")
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(_content(out)["audio"], np.array(rows, np.float32))


def test_refusals_are_one_line_and_leave_nothing(tmp_path):
    caps = _clotho(tmp_path / "caps.csv")
    good_a, good_t = tmp_path / "a.npy", tmp_path / "t.npy"
    np.save(good_a, np.ones((3, 4), np.float32))
    np.save(good_t, np.ones((6, 4), np.float32))
    out = tmp_path / "o.h5"

    np.save(tmp_path / "a5.npy", np.ones((5, 4), np.float32))
    _refused(
        _cli(out, "--audio", tmp_path / "a5.npy", "--text", good_t, "--captions", caps),
        out,
        "a5.npy: 5 rows",
        "has 3 clips",
    )
    np.save(tmp_path / "t7.npy", np.ones((7, 4), np.float32))
    _refused(
        _cli(out, "--audio", good_a, "--text", tmp_path / "t7.npy", "--captions", caps),
        out,
        "t7.npy: 7 rows",
        "has 6 captions",
    )

    nan = np.ones((6, 4), np.float32)
    nan[4, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    _refused(
        _cli(out, "--audio", good_a, "--text", tmp_path / "nan.npy", "--captions", caps),
        out,
        "nan.npy: row 4 holds NaN",
    )

    np.save(tmp_path / "int.npy", np.ones((3, 4), np.int32))
    _refused(
        _cli(out, "--audio", tmp_path / "int.npy", "--text", good_t, "--captions", caps),
        out,
        "int.npy",
        "not floats",
    )

    strings = _parquet(
        tmp_path / "s.parquet", pa.array([["x"], ["y"], ["z"]], pa.list_(pa.string()))
    )
    _refused(
        _cli(out, "--audio", strings, "--text", good_t, "--captions", caps),
        out,
        "s.parquet: column 'embedding' is list<element: string>, not a list of floats",
    )

    ragged = _parquet(tmp_path / "r.parquet", pa.array([[1.0, 2, 3, 4], [1.0, 2, 3, 4], [1.0]]))
    _refused(
        _cli(out, "--audio", ragged, "--text", good_t, "--captions", caps),
        out,
        "r.parquet: row 2",
        "same length",
    )

    vecs = pa.array([[1.0] * 4] * 3, pa.list_(pa.float32(), 4))
    stranger = _parquet(tmp_path / "id.parquet", vecs, ["a.wav", "zzz.wav", "c.wav"])
    _refused(
        _cli(out, "--audio", stranger, "--text", good_t, "--captions", caps),
        out,
        "row 1 has id 'zzz.wav', not a clip of",
    )

    _refused(_cli(out, "--audio", good_a, "--text", good_t), out, "a.npy: holds no clip ids")

    np.save(tmp_path / "t3.npy", np.ones((6, 3), np.float32))
    _refused(
        _cli(out, "--audio", good_a, "--text", tmp_path / "t3.npy", "--captions", caps),
        out,
        "3-d",
        "4-d",
        "--space backbone",
    )
    result = _cli(
        out,
        "--audio",
        good_a,
        "--text",
        tmp_path / "t3.npy",
        "--captions",
        caps,
        "--space",
        "backbone",
    )
    assert result.exit_code == 0, result.output


def test_text_clip_ids_must_exist(tmp_path):
    vecs = pa.array([[1.0, 0.0]] * 2, pa.list_(pa.float32(), 2))
    a = _parquet(tmp_path / "a.parquet", vecs, ["a.wav", "b.wav"])
    t = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"caption": ["x", "y"], "clip_id": ["a.wav", "nope.wav"], "embedding": vecs}), t
    )
    out = tmp_path / "o.h5"
    _refused(
        _cli(out, "--audio", a, "--text", t), out, "t.parquet: row 1 belongs to clip 'nope.wav'"
    )


def test_npz_with_one_matrix_or_several(tmp_path):
    caps = _clotho(tmp_path / "caps.csv")
    audio = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.savez(tmp_path / "a.npz", vectors=audio, names=np.array(["x", "y", "z"]))  # 1-D ignored
    np.save(tmp_path / "t.npy", np.ones((6, 4), np.float32))
    out = tmp_path / "o.h5"
    result = _cli(
        out, "--audio", tmp_path / "a.npz", "--text", tmp_path / "t.npy", "--captions", caps
    )
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(_content(out)["audio"], audio)
    np.savez(tmp_path / "two.npz", a=audio, b=audio)
    out2 = tmp_path / "o2.h5"
    _refused(
        _cli(
            out2, "--audio", tmp_path / "two.npz", "--text", tmp_path / "t.npy", "--captions", caps
        ),
        out2,
        "two.npz: holds 2 2-D arrays (a, b)",
    )


def test_an_imported_cache_verifies_with_its_missing_sample_rate_said_expected(tmp_path):
    """The README's own import (npy + a caption file) has no sample rate to record: `cache
    verify` says that is expected for an import, not a bare provenance warning; a cache that
    was not imported keeps the plain warning."""
    import h5py

    from diffatr.cache import verify

    rng = np.random.default_rng(4)
    np.save(tmp_path / "a.npy", rng.standard_normal((3, 4)).astype(np.float32))
    np.save(tmp_path / "t.npy", rng.standard_normal((6, 4)).astype(np.float32))
    out = tmp_path / "c.h5"
    args = ["--audio", tmp_path / "a.npy", "--text", tmp_path / "t.npy"]
    assert _cli(out, *args, "--captions", _clotho(tmp_path / "caps.csv")).exit_code == 0
    report = verify(out)
    assert report.ok and report.warnings == [
        "/audio lacks provenance attributes: sample_rate (expected for an imported cache: "
        "its source did not record them)"
    ]
    made = tmp_path / "made.h5"
    _make(made)
    with h5py.File(made, "a") as f:
        del f["audio"].attrs["sample_rate"]
    assert "/audio lacks provenance attributes: sample_rate" in verify(made).warnings
