"""`diffatr train-head` and `diffatr evaluate --head` end to end through click, and the
refusals of a head that does not fit (one `Error:` line, exit status 1, no traceback)."""

import csv
import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffatr.cache import CacheWriter, SyntheticConfig, load_tensors, make_synthetic
from diffatr.cli import main
from diffatr.diffusion_head import DiffusionScores, RerankConfig, load_head
from diffatr.diffusion_head.evaluate import evaluate_with_head
from diffatr.errors import UserError
from diffatr.evaluate import CosineScores, evaluate_cache

D = 16


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("head_cli")
    paths = {name: root / f"{name}.h5" for name in ("train", "val", "val32")}
    for name, clips, dim, seed in (("train", 64, D, 0), ("val", 24, D, 1), ("val32", 24, 32, 1)):
        cfg = SyntheticConfig(n_clips=clips, captions_per_clip=(1, 3, 5), dim=dim, seed=seed)
        make_synthetic(paths[name], cfg, split=name)
    paths["ckpt"] = root / "head.pt"
    result = CliRunner().invoke(
        main,
        [
            "train-head", str(paths["train"]), "--val", str(paths["val"]), "--out",
            str(paths["ckpt"]), "--epochs", "1", "--batch-size", "8", "--steps-K", "10",
            "--no-compile", "--seed", "3",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    paths["train_output"] = result.output
    return paths


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error_line(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_train_head_writes_a_checkpoint_with_the_options(files) -> None:
    out = files["train_output"]
    assert "epoch 1: loss" in out and f"wrote {files['ckpt']}" in out
    # stderr is not a terminal here (a log): each epoch still ends with a plain progress line
    assert re.search(r"^epoch 1/1: (\d+)/\1 batch in \d+s, [\d.e+]+ batch/s, loss ", out, re.M)
    head = load_head(files["ckpt"])
    assert head.config.K == 10 and head.config.batch_size == 8 and head.config.seed == 3
    assert head.config.epochs == 1 and head.dim == D
    assert head.meta["rerank"]["compiled"] is False and head.meta["rerank"]["topk"] == 32
    assert files["ckpt"].with_name("head.pt.log.json").is_file()
    assert files["ckpt"].with_name("head.pt.log.csv").is_file()
    assert files["ckpt"].with_name("head.pt.log.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_with_head_prints_both_rankings_and_writes_json(files, tmp_path) -> None:
    out = tmp_path / "m.json"
    args = ["evaluate", files["val"], "--head", files["ckpt"], "--topk", "8", "--no-compile"]
    result = run(*args, "--json", out)
    assert result.exit_code == 0, result.output
    rows = [line.split()[:2] for line in result.output.splitlines() if line.strip()]
    for system in ("cosine", "diffatr"):
        for direction in ("t2a", "a2t"):
            assert [system, direction] in rows, result.output
    payload = json.loads(out.read_text())
    assert set(payload) == {"cosine", "diffatr"}
    rerank = RerankConfig(topk=8, compiled=False)
    api = evaluate_with_head(files["val"], files["ckpt"], rerank)
    assert payload["diffatr"]["metrics"] == pytest.approx(api["diffatr"].metrics)
    assert payload["cosine"]["metrics"] == pytest.approx(evaluate_cache(files["val"]).metrics)
    assert payload["diffatr"]["ranking"] == "diffatr"
    assert payload["diffatr"]["counts"]["head"]["rerank"]["topk"] == 8
    assert payload["diffatr"]["counts"]["head"]["checkpoint"] == str(files["ckpt"])
    # fusion: R@k for k >= top-k is the cosine baseline's (method.md)
    for key in ("t2a_R@10", "a2t_R@10"):
        assert payload["diffatr"]["metrics"][key] == payload["cosine"]["metrics"][key]


def test_a_topk_covering_the_gallery_is_warned_about(files, tmp_path) -> None:
    common = ["evaluate", files["val"], "--head", files["ckpt"], "--no-compile"]
    result = run(*common, "--topk", "30")
    assert result.exit_code == 0, result.output
    assert "warning: --topk 30 is at least the gallery size (the 24 clips)" in result.output
    assert "--topk" not in run(*common, "--topk", "8").output


def test_topk_all_and_gen_mode(files, tmp_path) -> None:
    out = tmp_path / "all.json"
    base = ["evaluate", files["val"], "--head", files["ckpt"], "--no-compile"]
    result = run(*base, "--topk", "all", "--json", out)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["diffatr"]["counts"]["head"]["rerank"]["topk"] is None
    api = evaluate_with_head(files["val"], files["ckpt"], RerankConfig(topk=None, compiled=False))
    assert payload["diffatr"]["metrics"] == pytest.approx(api["diffatr"].metrics)
    result = run(*base, "--topk", "4", "--mode", "gen", "--steps", "5", "--json", out)
    assert result.exit_code == 0, result.output
    assert "diffatr-gen" in result.output
    assert set(json.loads(out.read_text())) == {"cosine", "diffatr-gen"}


def test_dcase_submission_is_the_heads_ranking(files, tmp_path) -> None:
    sub = tmp_path / "sub.csv"
    args = ["evaluate", files["val"], "--head", files["ckpt"], "--topk", "12", "--no-compile"]
    result = run(*args, "--protocol", "dcase", "--submission", sub)
    assert result.exit_code == 0, result.output
    assert "cosine" in result.output and "diffatr" in result.output
    with open(sub, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["caption", "file_name_1"] and len(rows[0]) == 11
    val = load_tensors(files["val"])
    scores = DiffusionScores(
        val.text, val.audio, load_head(files["ckpt"]), RerankConfig(topk=12, compiled=False)
    )
    order = torch.sort(scores.t2a(0, scores.n_text), dim=1, descending=True, stable=True).indices
    want = [[val.audio_ids[j] for j in row[:10]] for row in order.tolist()]
    assert [row[1:] for row in rows[1:]] == want
    cosine = CosineScores(val.text, val.audio).t2a(0, len(val.text))
    plain = torch.sort(cosine, dim=1, descending=True, stable=True).indices[:, :10]
    assert not torch.equal(order[:, :10], plain)  # the head re-ordered something


@pytest.mark.parametrize("topk", ["0", "abc", "-3", "1.5", ""])
def test_bad_topk_is_a_usage_error(files, topk) -> None:
    result = run("evaluate", files["val"], "--head", files["ckpt"], "--topk", topk)
    assert result.exit_code == 2, result.output
    assert "--topk" in result.output and "Traceback" not in result.output


def test_a_head_that_does_not_fit_is_refused(files, tmp_path) -> None:
    base = ["evaluate", "--no-compile"]
    result = run(*base, files["val32"], "--head", files["ckpt"])
    assert_one_error_line(result, "val32.h5", "32-d", "16-d", "head.pt")
    result = run(*base, files["val"], "--head", files["ckpt"], "--steps", "11")
    assert_one_error_line(result, "head.pt", "K=10", "--steps", "between 1 and 10")
    missing = tmp_path / "missing.pt"
    assert_one_error_line(run(*base, files["val"], "--head", missing), "missing.pt", "no such")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    assert_one_error_line(run(*base, files["val"], "--head", text), "notes.txt", "not a")
    other = tmp_path / "other.pt"
    torch.save({"a": 1}, other)
    assert_one_error_line(
        run(*base, files["val"], "--head", other), "other.pt", "not a diffusion-head", "train-head"
    )
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(files["ckpt"].read_bytes()[:2000])
    assert_one_error_line(run(*base, files["val"], "--head", truncated), "truncated.pt")
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)  # a pickle that weights_only refuses
    assert_one_error_line(run(*base, files["val"], "--head", module), "module.pt")


def test_checkpoint_refusals_through_the_api(files, tmp_path) -> None:
    newer = tmp_path / "newer.pt"
    blob = torch.load(files["ckpt"], weights_only=True)
    torch.save({**blob, "version": 99}, newer)
    with pytest.raises(UserError, match=r"newer\.pt: diffusion-head checkpoint version 99"):
        load_head(newer)
    wrong = tmp_path / "wrong_dim.pt"
    torch.save({**blob, "dim": 32}, wrong)
    with pytest.raises(UserError, match=r"wrong_dim\.pt: the t2a weights do not fit a 32-d"):
        load_head(wrong)
    with pytest.raises(UserError, match="between 1 and 10"):
        evaluate_with_head(files["val"], files["ckpt"], RerankConfig(steps=50, compiled=False))


def _backbone(path) -> None:
    g = np.random.default_rng(0)
    with CacheWriter(path, dataset="toy", split="train", space="backbone") as w:
        for side in ("audio", "text"):
            w.set_attrs(side, encoder="toy", feature_kind="toy", settings={})
        w.add_audio([f"{i}.wav" for i in range(10)], g.standard_normal((10, 24), dtype=np.float32))
        w.add_text(["c"] * 20, np.arange(20) % 10, g.standard_normal((20, D), dtype=np.float32))


def test_train_head_refusals_are_one_line(files, tmp_path) -> None:
    backbone = tmp_path / "backbone.h5"
    _backbone(backbone)
    out = tmp_path / "h.pt"
    common = ["--out", out, "--epochs", "1", "--batch-size", "8", "--steps-K", "10"]
    result = run("train-head", backbone, "--val", files["val"], *common)
    assert_one_error_line(result, "backbone.h5", "24-d audio and 16-d text", "project")
    result = run("train-head", files["train"], "--val", files["val32"], *common)
    assert_one_error_line(result, "val32.h5", "32-d", "16-d")
    result = run("train-head", tmp_path / "nope.h5", "--val", files["val"], *common)
    assert_one_error_line(result, "nope.h5")
    assert not out.exists()
    good = ["train-head", files["train"], "--val", files["val"], "--out", out]
    assert run(*good, "--batch-size", "1").exit_code == 2
    assert run(*good, "--steps-K", "0").exit_code == 2


def test_head_options_without_head_are_a_usage_error(files) -> None:
    result = CliRunner().invoke(main, ["evaluate", str(files["val"]), "--topk", "8", "--seed", "3"])
    assert result.exit_code == 2
    assert "--topk, --seed apply only with --head CHECKPOINT" in result.output
    result = CliRunner().invoke(main, ["evaluate", str(files["val"]), "--topk", "8"])
    assert result.exit_code == 2
    assert "--topk applies only with --head CHECKPOINT or --baseline NAME" in result.output


def test_train_head_seeds_writes_one_checkpoint_per_seed_in_a_folder(files, tmp_path) -> None:
    folder = tmp_path / "heads"
    args = ["train-head", files["train"], "--val", files["val"], "--epochs", "1"]
    args += ["--batch-size", "8", "--steps-K", "10", "--no-compile"]
    result = run(*args, "--out", folder, "--seeds", "3,5", "--stack")
    assert result.exit_code == 0, result.output
    for s in (3, 5):
        assert f"wrote {folder / f'seed{s}.pt'}" in result.output
        assert load_head(folder / f"seed{s}.pt").config.seed == s
        assert (folder / f"seed{s}.pt.log.json").is_file()
    # seed 3 trained with seed 5 beside it: the same head as trained alone (the fixture)
    alone, together = load_head(files["ckpt"]), load_head(folder / "seed3.pt")
    if alone.meta["epoch"] == together.meta["epoch"]:
        torch.testing.assert_close(
            together.t2a.q_proj.weight, alone.t2a.q_proj.weight, atol=2e-5, rtol=0
        )
    assert run(*args, "--out", folder, "--seeds", "1,1").exit_code == 2
    assert run(*args, "--out", folder, "--seeds", "1,2", "--seed", "4").exit_code == 2
    assert run(*args, "--out", folder).exit_code == 2  # a folder without --seeds


def test_evaluate_with_head_writes_a_per_query_report(files, tmp_path) -> None:
    out = tmp_path / "report"
    args = ["evaluate", files["val"], "--head", files["ckpt"], "--topk", "8", "--no-compile"]
    result = run(*args, "--report", out)
    assert result.exit_code == 0, result.output
    assert "diffatr vs cosine: text-to-audio " in result.output
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "What diffatr changed, query by query" in page and '"audio":null' in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
