"""Projecting a backbone cache into the joint space (diffatr/contrastive/project.py) and the
phase-1 commands end to end through click, with their one-line refusals."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffatr.cache import (
    BackboneSyntheticConfig,
    Cache,
    CacheWriter,
    Rows,
    SyntheticConfig,
    make_synthetic,
    make_synthetic_backbone,
    verify,
)
from diffatr.checkpoints import file_sha256
from diffatr.cli import main
from diffatr.contrastive import ContrastiveConfig, load_projection, project_cache
from diffatr.contrastive import project as project_module
from diffatr.contrastive.train import train_contrastive
from diffatr.evaluate import EvalConfig, evaluate_cache

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = BackboneSyntheticConfig(captions_per_clip=(1, 3, 5), audio_dim=64, text_dim=48)
CFG = ContrastiveConfig(joint_dim=32, epochs=2, batch_size=16, lr=1e-3, device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    paths = {name: root / f"{name}.h5" for name in ("train", "val", "test")}
    for i, name in enumerate(paths):
        cfg = replace(DATA, n_clips=150 if name == "train" else 40, seed=i, sequences=True)
        make_synthetic_backbone(paths[name], cfg, split=name)
    paths["proj"] = root / "proj.pt"
    train_contrastive(paths["train"], paths["val"], paths["proj"], CFG, False, lambda _: None)
    paths["joint"] = root / "test_joint.h5"
    project_cache(paths["test"], paths["proj"], paths["joint"], device="cpu")
    return paths


def read(path):
    with Cache(path) as c:
        out = {
            "audio": c.embeddings("audio")[:],
            "text": c.embeddings("text")[:],
            "ids": c.audio_ids(),
            "captions": c.captions(),
            "index": c.audio_index(),
            "attrs": c.attrs,
            "audio_attrs": c.side_attrs("audio"),
            "text_attrs": c.side_attrs("text"),
        }
        for side, seq, off in (
            ("audio", "frames", "frame_offsets"),
            ("text", "tokens", "token_offsets"),
        ):
            if c.has_sequences(side):
                out[seq] = Rows(c, f"{side}/{seq}")[:]
                out[off] = Rows(c, f"{side}/{off}")[:]
        return out


def heads_oracle(state, x, side):
    """relu(x W0^T + b0) W2^T + b2 in float64 numpy."""
    w = {k: v.double().numpy() for k, v in state.items() if k.startswith(side)}
    h = np.maximum(x.astype(np.float64) @ w[f"{side}.0.weight"].T + w[f"{side}.0.bias"], 0)
    return h @ w[f"{side}.2.weight"].T + w[f"{side}.2.bias"]


def test_projected_cache_is_verified_and_holds_the_heads_outputs(files) -> None:
    report = verify(files["joint"])
    assert report.ok and not report.warnings, (report.errors, report.warnings)
    src, out = read(files["test"]), read(files["joint"])
    state = load_projection(files["proj"]).heads.state_dict()
    assert out["audio"].shape == (40, 32) and out["text"].shape == (len(src["index"]), 32)
    for side in ("audio", "text"):
        np.testing.assert_allclose(out[side], heads_oracle(state, src[side], side), atol=1e-5)
    assert out["ids"] == src["ids"] and out["captions"] == src["captions"]
    np.testing.assert_array_equal(out["index"], src["index"])


def test_sequences_are_copied_bit_for_bit(files) -> None:
    src, out = read(files["test"]), read(files["joint"])
    for key in ("frames", "frame_offsets", "tokens", "token_offsets"):
        assert out[key].dtype == src[key].dtype and out[key].tobytes() == src[key].tobytes(), key
    assert out["frames"].shape[1] == 64 != out["audio"].shape[1]  # a joint cache allows it


def test_blocks_do_not_change_the_output(files, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(project_module, "CHUNK_ROWS", 7)
    monkeypatch.setattr(project_module, "SEQUENCE_ROWS", 10)  # below many rows: 1 per block
    project_cache(files["test"], files["proj"], tmp_path / "small.h5", device="cpu")
    small, whole = read(tmp_path / "small.h5"), read(files["joint"])
    for key in ("frames", "frame_offsets", "tokens", "token_offsets", "index"):
        np.testing.assert_array_equal(small[key], whole[key], err_msg=key)
    for key in ("audio", "text"):  # a matmul's rounding depends on its row count (BLAS blocks)
        np.testing.assert_allclose(small[key], whole[key], rtol=0, atol=1e-6, err_msg=key)


def test_provenance_of_the_joint_cache(files) -> None:
    out, src = read(files["joint"]), read(files["test"])
    assert out["attrs"]["embedding_space"] == "joint"
    assert (out["attrs"]["dataset"], out["attrs"]["split"]) == ("synthetic", "test")
    sha = file_sha256(files["proj"])
    assert out["attrs"]["projection_sha256"] == sha
    assert out["attrs"]["source_cache"] == str(files["test"])
    for side, encoder in (("audio", "synthetic-cnn14"), ("text", "synthetic-bert")):
        attrs = out[f"{side}_attrs"]
        assert attrs["encoder"] == f"{encoder}+projection" and attrs["feature_kind"] == "joint"
        assert attrs["projection_sha256"] == sha
        settings = attrs["settings"]
        assert settings["projection"]["sha256"] == sha
        assert settings["projection"]["config"]["joint_dim"] == 32
        assert settings["source"]["encoder"] == encoder
        assert settings["source"]["settings"] == src[f"{side}_attrs"]["settings"]
        assert settings["sequences"] == ["frames", "tokens"]
    assert out["audio_attrs"]["sample_rate"] == src["audio_attrs"]["sample_rate"]


def test_evaluate_reads_the_projected_cache(files, tmp_path) -> None:
    result = evaluate_cache(files["joint"], EvalConfig(device="cpu"))
    assert 0 < result.metrics["t2a_R@1"] <= 100 and result.counts["clips"] == 40
    # the validation split projected by the same heads gives the metrics training logged
    project_cache(files["val"], files["proj"], tmp_path / "val_joint.h5", device="cpu")
    val = evaluate_cache(tmp_path / "val_joint.h5", EvalConfig(device="cpu")).metrics
    assert val == pytest.approx(load_projection(files["proj"]).meta["val_metrics"], abs=1e-9)


def test_no_sequences_and_float16(files, tmp_path) -> None:
    out = tmp_path / "half.h5"
    result = project_cache(files["test"], files["proj"], out, sequences=False, dtype="float16")
    assert result.sequences == () and result.joint_dim == 32
    half, whole = read(out), read(files["joint"])
    assert "frames" not in half and "tokens" not in half and half["audio"].dtype == np.float16
    np.testing.assert_allclose(half["text"], whole["text"], rtol=2e-3, atol=2e-3)
    assert verify(out).ok


# -- refusals ----------------------------------------------------------------------------------
def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error_line(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _one_side_backbone(path, da=64) -> None:
    g = np.random.default_rng(0)
    with CacheWriter(path, dataset="toy", split="test", space="backbone") as w:
        w.set_attrs("audio", encoder="toy", feature_kind="toy", settings={}, sample_rate=1)
        w.add_audio([f"{i}.wav" for i in range(4)], g.random((4, da), dtype=np.float32))


def test_project_refusals_are_one_line(files, tmp_path) -> None:
    joint, other, audio_only = tmp_path / "j.h5", tmp_path / "wide.h5", tmp_path / "a.h5"
    make_synthetic(joint, SyntheticConfig(n_clips=10, dim=32))
    make_synthetic_backbone(other, replace(DATA, n_clips=10, audio_dim=80))
    _one_side_backbone(audio_only)
    not_proj = tmp_path / "other.pt"
    torch.save({"format": "diffatr-diffusion-head", "t2a": {}}, not_proj)
    out = tmp_path / "out.h5"
    proj = files["proj"]
    assert_one_error_line(
        run("project", joint, "--proj", proj, "--out", out), "j.h5", "already a joint-space"
    )
    assert_one_error_line(
        run("project", other, "--proj", proj, "--out", out),
        "wide.h5: audio features are 80-d", f"projection {proj} takes 64-d audio",
    )  # fmt: skip
    assert_one_error_line(
        run("project", audio_only, "--proj", proj, "--out", out), "a.h5: has no /text group"
    )
    assert_one_error_line(
        run("project", files["test"], "--proj", not_proj, "--out", out),
        "other.pt: not a projection checkpoint", "diffatr-diffusion-head",
    )  # fmt: skip
    assert_one_error_line(
        run("project", files["test"], "--proj", tmp_path / "none.pt", "--out", out),
        "none.pt: no such projection checkpoint",
    )  # fmt: skip
    assert_one_error_line(
        run("project", tmp_path / "none.h5", "--proj", proj, "--out", out), "none.h5: no such file"
    )
    assert_one_error_line(
        run("project", files["test"], "--proj", proj, "--out", files["joint"]), "already exists"
    )
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_train_contrastive_refusals_are_one_line(files, tmp_path) -> None:
    joint = tmp_path / "j.h5"
    make_synthetic(joint, SyntheticConfig(n_clips=10, dim=32))
    out = tmp_path / "p.pt"
    result = run("train-contrastive", joint, "--val", files["val"], "--out", out)
    assert_one_error_line(result, "j.h5: train cache is already in a joint space")
    result = run("train-contrastive", files["train"], "--val", tmp_path / "no.h5", "--out", out)
    assert_one_error_line(result, "no.h5: no such file")
    assert run("train-contrastive", files["train"], "--val", files["val"], "--out", out,
               "--batch-size", "1").exit_code == 2  # fmt: skip
    assert not out.exists()


# -- the commands end to end -------------------------------------------------------------------
def test_phase_one_end_to_end_through_the_cli(tmp_path) -> None:
    splits = {name: tmp_path / f"{name}.h5" for name in ("train", "val", "test")}
    for seed, (name, path) in enumerate(splits.items()):
        result = run(
            "cache", "synthetic-backbone", path, "--clips", 120 if name == "train" else 30,
            "--captions-per-clip", 3, "--audio-dim", 40, "--text-dim", 24, "--seed", seed,
            "--split", name, "--sequences",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    proj = tmp_path / "proj.pt"
    result = run(
        "train-contrastive", splits["train"], "--val", splits["val"], "--out", proj,
        "--epochs", 2, "--batch-size", 8, "--lr", 1e-3, "--joint-dim", 16, "--keep-siblings",
        "--seed", 4, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "epoch 2:" in result.output and f"wrote {proj} (epoch" in result.output
    blob = torch.load(proj, weights_only=True)
    assert blob["config"]["exclude_siblings"] is False and blob["config"]["seed"] == 4
    assert blob["config"]["joint_dim"] == 16 and blob["config"]["batch_size"] == 8
    assert (blob["audio_dim"], blob["text_dim"]) == (40, 24)
    joint = tmp_path / "test_joint.h5"
    result = run("project", splits["test"], "--proj", proj, "--out", joint, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "30 clips, 90 captions, 16-d joint space, frames and tokens copied" in result.output
    assert run("cache", "verify", joint, "--strict").exit_code == 0
    result = run("evaluate", joint)
    assert result.exit_code == 0 and "t2a" in result.output and "a2t" in result.output
