"""`diffatr.cache.verify` and the commands that rely on it: every malformed cache is reported
by name, `diffatr cache verify` exits 1 with one line per error naming the file, and
`diffatr evaluate` refuses it with a one-line `Error: ...` (never a traceback)."""

import os
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from diffatr.cache import SyntheticConfig, make_synthetic, verify
from diffatr.cli import main

N_CLIPS = 12


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.h5"
    make_synthetic(path, SyntheticConfig(n_clips=N_CLIPS, dim=8, seed=1))
    return path


def _damaged(good, tmp_path, damage):
    path = tmp_path / "bad.h5"
    shutil.copy(good, path)
    with h5py.File(path, "r+") as h:
        damage(h)
    return path


def _replace(h, key, value):
    del h[key]
    h[key] = value


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _no_crash(result):
    """Exited through click (sys.exit / ClickException), not through an uncaught exception."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output


def _verify_cli_fails(path, *needles, strict=False):
    result = _cli("cache", "verify", path, *(["--strict"] if strict else []))
    _no_crash(result)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""  # no "ok"
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == (0 if strict else 1), result.stderr
    for line in result.stderr.splitlines():
        assert line.startswith(f"{path}: "), line
    for needle in needles:
        assert needle in result.stderr
    return result


def _evaluate_fails(path, *needles):
    result = _cli("evaluate", path, "--device", "cpu")
    _no_crash(result)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {path}"), lines[0]
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# -- the good cache ----------------------------------------------------------------------------


def test_good_cache_passes(good):
    report = verify(good)
    assert report.ok and report.errors == [] and report.warnings == []
    report.raise_if_bad()
    result = _cli("cache", "verify", good)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{good}: ok"
    strict = _cli("cache", "verify", good, "--strict")
    assert strict.exit_code == 0 and "ok" in strict.stdout


def test_good_float16_cache_with_frames_passes(tmp_path):
    from diffatr.cache import CacheWriter

    path = tmp_path / "f16.h5"
    with CacheWriter(path, dataset="d", split="s", space="joint", dtype="float16") as w:
        for side in ("audio", "text"):
            w.set_attrs(side, encoder="e", feature_kind="k", settings={}, sample_rate=1)
        w.add_audio(["a", "b"], np.eye(2, 4), frames=[np.ones((3, 2)), np.ones((0, 2))])
        w.add_text(["x", "y"], [0, 1], np.eye(2, 4), tokens=[np.ones((1, 5)), np.ones((2, 5))])
    report = verify(path)
    assert report.ok, report.errors
    assert report.warnings == []


def test_a_cache_written_with_plain_h5py_passes(tmp_path):
    """The format is the contract: another tool writing it with h5py gets a valid cache."""
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as h:
        h.attrs.update(
            format="diffatr-cache",
            format_version=1,
            created="2024-05-01T12:00:00+00:00",
            diffatr_version="0.0",
            dataset="other",
            split="test",
            embedding_space="joint",
        )
        strings = h5py.string_dtype("utf-8")
        h["audio/ids"] = np.array(["x.wav", "y.wav"], dtype=strings)
        h["audio/embeddings"] = np.eye(2, 3, dtype=np.float32)
        h["text/captions"] = np.array(["un café", "rain"], dtype=strings)
        h["text/embeddings"] = np.eye(2, 3, dtype=np.float32)
        h["text/audio_index"] = np.array([0, 1], dtype=np.int64)
    report = verify(path)
    assert report.ok, report.errors
    assert all("provenance" in w for w in report.warnings) and len(report.warnings) == 2
    result = _cli("evaluate", path, "--device", "cpu")
    assert result.exit_code == 0, result.output


def test_fixed_length_string_attributes_are_accepted(good, tmp_path):
    def as_bytes(h):
        for name in ("format", "created", "diffatr_version", "dataset", "split", "embedding_space"):
            h.attrs[name] = np.bytes_(h.attrs[name].encode())

    path = _damaged(good, tmp_path, as_bytes)
    report = verify(path)
    assert report.ok, report.errors


# -- errors ------------------------------------------------------------------------------------


def _nan_text(h):
    h["text/embeddings"][3, 2] = np.nan


def _inf_audio(h):
    h["audio/embeddings"][5, 0] = np.inf


def _index_out_of_range(h):
    h["text/audio_index"][4] = N_CLIPS


def _index_below_minus_one(h):
    h["text/audio_index"][4] = -2


def _index_too_short(h):
    _replace(h, "text/audio_index", h["text/audio_index"][:-1])


def _index_float(h):
    _replace(h, "text/audio_index", h["text/audio_index"][:].astype(np.float64))


def _too_few_embedding_rows(h):
    _replace(h, "audio/embeddings", h["audio/embeddings"][:-1])


def _too_many_text_rows(h):
    emb = h["text/embeddings"][:]
    _replace(h, "text/embeddings", np.concatenate([emb, emb[:1]]))


def _joint_dims(h):
    _replace(h, "audio/embeddings", np.ones((N_CLIPS, 16), np.float32))


def _duplicate_ids(h):
    h["audio/ids"][3] = h["audio/ids"][2]


def _not_a_cache(h):
    del h.attrs["format"]


def _version_2(h):
    h.attrs["format_version"] = 2


def _bad_frame_offsets(h):
    h["audio/frames"] = np.ones((10, 4), np.float32)
    h["audio/frame_offsets"] = np.arange(N_CLIPS + 1, dtype=np.int64)  # ends at 12, not 10


def _decreasing_token_offsets(h):
    n = len(h["text/captions"])
    offsets = np.zeros(n + 1, np.int64)
    offsets[1], offsets[2:] = 5, 3
    h["text/tokens"] = np.ones((3, 2), np.float32)
    h["text/token_offsets"] = offsets


def _frames_without_offsets(h):
    h["audio/frames"] = np.ones((10, 4), np.float32)


def _no_audio_index(h):
    del h["text/audio_index"]


def _no_embeddings(h):
    del h["audio/embeddings"]


def _float64_embeddings(h):
    _replace(h, "text/embeddings", h["text/embeddings"][:].astype(np.float64))


def _missing_root_attr(h):
    del h.attrs["dataset"]


def _bad_space(h):
    h.attrs["embedding_space"] = "shared"


def _no_groups(h):
    del h["audio"]
    del h["text"]


ERRORS = {
    "nan-text": (_nan_text, ["/text/embeddings", "NaN", "row 3"]),
    "inf-audio": (_inf_audio, ["/audio/embeddings", "Inf", "row 5"]),
    "index-out-of-range": (_index_out_of_range, ["/text/audio_index", "outside", "row 4"]),
    "index-below-minus-one": (_index_below_minus_one, ["/text/audio_index", "outside"]),
    "index-length": (_index_too_short, ["/text/audio_index", "one per caption"]),
    "index-float": (_index_float, ["/text/audio_index", "integers", "float64"]),
    "audio-rows": (_too_few_embedding_rows, ["/audio/embeddings", "11 rows", "12 names"]),
    "text-rows": (_too_many_text_rows, ["/text/embeddings", "rows", "must match"]),
    "joint-dims": (_joint_dims, ["joint", "16-d", "8-d"]),
    "duplicate-ids": (_duplicate_ids, ["/audio/ids", "synthetic_000002.wav", "more than once"]),
    "no-format": (_not_a_cache, ["not a diffatr cache"]),
    "version-2": (_version_2, ["format_version", "reads 1"]),
    "frame-offsets": (_bad_frame_offsets, ["/audio/frame_offsets", "/audio/frames", "10 rows"]),
    "token-offsets": (_decreasing_token_offsets, ["/text/token_offsets", "never decrease"]),
    "frames-alone": (_frames_without_offsets, ["/audio/frame_offsets is missing"]),
    "no-audio-index": (_no_audio_index, ["/text/audio_index is missing"]),
    "no-embeddings": (_no_embeddings, ["/audio/embeddings is missing"]),
    "float64": (_float64_embeddings, ["/text/embeddings", "float64"]),
    "root-attr": (_missing_root_attr, ["'dataset'", "missing"]),
    "bad-space": (_bad_space, ["embedding_space", "shared"]),
    "no-groups": (_no_groups, ["neither"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_malformed_cache_is_reported(good, tmp_path, case):
    damage, needles = ERRORS[case]
    path = _damaged(good, tmp_path, damage)
    report = verify(path)
    assert not report.ok
    assert any(all(n in e for n in needles) for e in report.errors), report.errors
    assert all("\n" not in e for e in report.errors)
    _verify_cli_fails(path, *needles)
    _evaluate_fails(path, needles[0])


def test_version_error_reads_plainly(good, tmp_path):
    path = _damaged(good, tmp_path, _version_2)
    (error,) = verify(path).errors
    assert error.startswith("format_version 2;"), error


def test_truncated_file(good, tmp_path):
    path = tmp_path / "cut.h5"
    shutil.copy(good, path)
    os.truncate(path, path.stat().st_size // 2)
    report = verify(path)
    assert not report.ok and "truncated" in report.errors[0]
    _verify_cli_fails(path, "truncated")
    _evaluate_fails(path, "truncated")


def test_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("clip,caption\na.wav,a dog barks\n")
    assert "not an HDF5 file" in verify(path).errors[0]
    _verify_cli_fails(path, "not an HDF5 file")
    _evaluate_fails(path, "not an HDF5 file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.h5"
    path.touch()
    assert not verify(path).ok
    _verify_cli_fails(path)
    _evaluate_fails(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.h5"
    assert verify(path).errors == ["no such file"]
    _verify_cli_fails(path, "no such file")
    _evaluate_fails(path, "no such file")


def test_folder_instead_of_file(tmp_path):
    assert "folder" in verify(tmp_path).errors[0]


def test_backbone_cache_with_different_dims(good, tmp_path):
    def backbone(h):
        _joint_dims(h)
        h.attrs["embedding_space"] = "backbone"

    path = _damaged(good, tmp_path, backbone)
    assert verify(path).ok  # a valid phase-1 input ...
    _evaluate_fails(path, "16-d", "8-d")  # ... but cosine ranking is undefined
    no_verify = _cli("evaluate", path, "--device", "cpu", "--no-verify")
    _no_crash(no_verify)
    assert no_verify.exit_code == 1 and "16-d" in no_verify.output


def test_raise_if_bad_counts_the_other_problems(good, tmp_path):
    def two_problems(h):
        _nan_text(h)
        _duplicate_ids(h)

    path = _damaged(good, tmp_path, two_problems)
    report = verify(path)
    assert len(report.errors) == 2
    with pytest.raises(Exception, match=r"and 1 more problem;") as info:
        report.raise_if_bad()
    assert str(info.value).startswith(f"{path}: ")
    result = _cli("cache", "verify", path)
    assert result.exit_code == 1
    assert len([line for line in result.stderr.splitlines() if ": error: " in line]) == 2


# -- warnings ----------------------------------------------------------------------------------


def _caption_without_clip(h):
    h["text/audio_index"][0] = -1


def _clip_without_caption(h):
    index = h["text/audio_index"][:]
    index[index == 0] = 1
    h["text/audio_index"][:] = index


def _no_provenance(h):
    for name in list(h["audio"].attrs):
        del h["audio"].attrs[name]


def _no_text_side(h):
    del h["text"]


WARNINGS = {
    "audio-index-minus-one": (_caption_without_clip, ["1 caption(s)", "-1"]),
    "clip-without-caption": (_clip_without_caption, ["1 clip(s)", "no caption"]),
    "no-provenance": (_no_provenance, ["/audio", "provenance", "encoder", "settings"]),
    "audio-only": (_no_text_side, ["/text"]),
}


@pytest.mark.parametrize("case", list(WARNINGS))
def test_warnings_are_not_errors(good, tmp_path, case):
    damage, needles = WARNINGS[case]
    path = _damaged(good, tmp_path, damage)
    report = verify(path)
    assert report.ok, report.errors
    assert len(report.warnings) == 1, report.warnings
    assert all(n in report.warnings[0] for n in needles), report.warnings
    result = _cli("cache", "verify", path)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{path}: ok (1 warning(s))"
    assert result.stderr.strip() == f"{path}: warning: {report.warnings[0]}"
    _verify_cli_fails(path, report.warnings[0], strict=True)


def test_evaluate_accepts_warnings(good, tmp_path):
    path = _damaged(good, tmp_path, _caption_without_clip)
    result = _cli("evaluate", path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    n_captions = 5 * N_CLIPS
    assert f"{n_captions - 1} captions scored over {N_CLIPS} clips" in result.output


def test_evaluate_refuses_a_cache_where_no_caption_has_a_clip(good, tmp_path):
    def unlabelled(h):
        h["text/audio_index"][:] = -1

    path = _damaged(good, tmp_path, unlabelled)
    assert verify(path).ok
    _evaluate_fails(path, "all -1")
