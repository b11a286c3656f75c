"""Issue 20 item 4: a bad output path fails before the work, in one line, for every command that
writes; `cache export` does not silently replace another cache's export in the same folder.

Tests run as root, where permission bits do not stop a write, so the bad paths here are ones
no user can write: a path under a FILE, a file where a folder is meant and a folder where a
file is meant (for options whose click type already refuses the last two, only the first).
"Before the work" is checked by what did not happen (no epoch line, no metrics table, no
output file)."""

from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from diffatr.cache import (
    BackboneSyntheticConfig,
    SyntheticConfig,
    export,
    make_synthetic,
    make_synthetic_backbone,
)
from diffatr.cli import main
from diffatr.errors import UserError
from diffatr.outputs import EXPORT_RECORD, check_output_dir, check_output_file


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    small = SyntheticConfig(n_clips=16, captions_per_clip=(2,), dim=8, n_classes=3)
    for split, seed in (("train", 0), ("val", 1)):
        make_synthetic(root / f"{split}.h5", replace(small, seed=seed), split=split)
    back = BackboneSyntheticConfig(n_clips=16, captions_per_clip=(2,), audio_dim=6, text_dim=5)
    make_synthetic_backbone(root / "btrain.h5", back, split="train")
    make_synthetic_backbone(root / "bval.h5", back, split="val")
    (root / "a_file").write_text("not a folder\n")
    return root


def test_the_checks(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    fine = tmp_path / "new" / "deeper" / "out.pt"
    check_output_file(fine, "--out")
    check_output_dir(tmp_path / "new" / "dir", "--out")
    assert not (tmp_path / "new").exists()  # a check creates nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # its probe is gone
    check_output_file(a_file, "--out")  # an existing file is replaced atomically
    with pytest.raises(UserError, match=r"f/out.pt: cannot be created: .*f is a file"):
        check_output_file(a_file / "out.pt", "--out")
    with pytest.raises(UserError, match=r"is a folder; --json takes a file name"):
        check_output_file(tmp_path, "--json")
    with pytest.raises(UserError, match=r"f: is a file; --report takes a folder"):
        check_output_dir(a_file, "--report")
    with pytest.raises(UserError, match=r"cannot be created: .*f is a file"):
        check_output_dir(a_file / "sub" / "dir", "--out")


def test_training_fails_before_the_first_epoch(data):
    under_a_file = data / "a_file" / "x.pt"
    fast = ["--epochs", "1", "--batch-size", "8"]
    result = _run("train-head", data / "train.h5", "--val", data / "val.h5", "--out",
                  under_a_file, *fast, "--steps-K", "4", "--no-compile")  # fmt: skip
    assert "epoch" not in _one_line(result, "x.pt", "is a file, not a folder", "--out")
    result = _run("train-head", data / "train.h5", "--val", data / "val.h5", "--seeds", "0,1",
                  "--out", data / "a_file", *fast)  # fmt: skip
    _one_line(result, "a_file: is a file; --out takes a folder")
    result = _run("train-contrastive", data / "btrain.h5", "--val", data / "bval.h5", "--out",
                  under_a_file, *fast)  # fmt: skip
    assert "epoch" not in _one_line(result, "is a file, not a folder")
    result = _run("train-coattention", data / "train.h5", "--val", data / "val.h5", "--out",
                  under_a_file)  # fmt: skip
    _one_line(result, "x.pt: cannot be created")


def test_evaluate_and_search_fail_before_the_results(data):
    cache, bad = data / "val.h5", data / "a_file" / "r.json"
    result = _run("evaluate", cache, "--json", bad)
    assert "R@1" not in _one_line(result, "r.json", "--json")
    result = _run(
        "evaluate", cache, "--submission", data / "a_file" / "s.csv", "--protocol", "dcase"
    )
    _one_line(result, "s.csv: cannot be created", "--submission")
    result = _run(
        "evaluate", cache, "--baseline", "dual-softmax", "--report", data / "a_file" / "r"
    )
    _one_line(result, "cannot be created", "--report")
    # (without the check this cache's error would be about its text encoder)
    _one_line(_run("search", cache, "a dog", "--json", bad), "r.json", "--json")


def test_cache_commands_fail_before_reading(data, tmp_path):
    bad = data / "a_file" / "o.h5"
    np.save(tmp_path / "a.npy", np.ones((3, 4), np.float32))
    result = _run("cache", "import", bad, "--audio", tmp_path / "a.npy", "--text",
                  tmp_path / "a.npy")  # fmt: skip
    _one_line(result, "o.h5: cannot be created")
    _one_line(_run("cache", "synthetic", bad, "--clips", "4"), "o.h5: cannot be created")
    _one_line(_run("cache", "synthetic-backbone", bad), "o.h5: cannot be created")
    _one_line(_run("cache", "merge", data / "val.h5", "--out", bad), "o.h5: cannot be created")
    result = _run("cache", "export", data / "val.h5", "--format", "npy", "--out", bad)
    _one_line(result, "o.h5: cannot be created")
    result = _run("project", data / "bval.h5", "--proj", data / "p.pt", "--out", bad)
    _one_line(result, "o.h5: cannot be created")  # before the (missing) projection is read
    assert not list(tmp_path.glob("*.h5"))


def test_long_commands_fail_before_the_work(data, tmp_path):
    folder = data / "a_file" / "runs"
    result = _run("ablate", "eta", "--data", "x=a.h5,b.h5,c.h5", "--out", folder)
    _one_line(result, "runs: cannot be created: ")
    _one_line(_run("demo", "--out", folder), "runs: cannot be created: ")
    captions = tmp_path / "c.csv"
    captions.write_text("file_name,caption_1\na.wav,a dog\n")
    result = _run("extract", captions, "--audio-dir", tmp_path, "--out", data / "a_file" / "o.h5")
    _one_line(result, "o.h5: cannot be created")


@pytest.mark.parametrize("fmt", ["npy", "tsv"])
def test_export_does_not_clobber_another_caches_export(data, tmp_path, fmt):
    folder = tmp_path / "x"
    first = export(data / "train.h5", fmt, folder)
    before = {p.name: p.read_bytes() for p in first}
    result = _run("cache", "export", data / "val.h5", "--format", fmt, "--out", folder)
    _one_line(result, "train.h5", "--overwrite")
    assert {p.name: p.read_bytes() for p in first} == before  # the first export is intact
    again = _run("cache", "export", data / "train.h5", "--format", fmt, "--out", folder)
    assert again.exit_code == 0, again.output  # the same cache replaces its own export
    result = _run("cache", "export", data / "val.h5", "--format", fmt, "--out", folder,
                  "--overwrite")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in first} != before
    assert (folder / EXPORT_RECORD).is_file()


def test_export_refuses_files_it_did_not_write(data, tmp_path):
    (tmp_path / "vectors.tsv").write_text("mine\n")
    result = _run("cache", "export", data / "val.h5", "--format", "tsv", "--out", tmp_path)
    _one_line(result, "vectors.tsv: exists (not exported from this cache)")
    assert (tmp_path / "vectors.tsv").read_text() == "mine\n"
