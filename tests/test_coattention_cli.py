"""`diffatr train-coattention` then `diffatr evaluate --head` end to end through click, the
options a co-attention checkpoint refuses, and the refusals of bad input (one `Error:` line)."""

import csv
import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from diffatr.cache import CacheWriter, SequenceSyntheticConfig, make_synthetic_sequences
from diffatr.cli import main
from diffatr.coattention import CoAttentionConfig, CoRerankConfig, load_coattention
from diffatr.coattention.evaluate import evaluate_with_coattention
from diffatr.evaluate import evaluate_cache

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("co_cli")
    paths = {"train": root / "train.h5", "val": root / "val.h5", "ckpt": root / "co.pt"}
    make_synthetic_sequences(paths["train"], SequenceSyntheticConfig(n_bags=10, seed=1))
    make_synthetic_sequences(paths["val"], SequenceSyntheticConfig(n_bags=6, seed=2))
    result = run(
        "train-coattention", paths["train"], "--val", paths["val"], "--out", paths["ckpt"],
        "--variant", "iterating", "--layers", "2", "--epochs", "1", "--batch-size", "8",
        "--d-model", "16", "--heads", "2", "--ffn", "24", "--val-topk", "4", "--seed", "3",
        "--chunk-captions", "9", "--buffer-chunks", "2", "--lr", "1e-3", "--dropout", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    paths["train_output"] = result.output
    return paths


def test_train_coattention_writes_a_checkpoint_with_the_options(files) -> None:
    assert "epoch 1: loss" in files["train_output"]
    assert f"wrote {files['ckpt']}" in files["train_output"]
    head = load_coattention(files["ckpt"])
    cfg = head.config
    assert (cfg.variant, cfg.layers, cfg.epochs, cfg.batch_size, cfg.seed) == (
        "iterating",
        2,
        1,
        8,
        3,
    )
    assert (cfg.d_model, cfg.heads, cfg.ffn, cfg.val_topk, cfg.chunk_captions) == (16, 2, 24, 4, 9)
    assert cfg.buffer_chunks == 2 and cfg.lr == 1e-3 and cfg.dropout == 0.0
    assert head.model.depth == 2 and len(head.model.blocks) == 1
    assert files["ckpt"].with_name("co.pt.log.json").is_file()


def test_evaluate_head_prints_both_rankings_and_writes_json(files, tmp_path) -> None:
    out = tmp_path / "m.json"
    result = run("evaluate", files["val"], "--head", files["ckpt"], "--topk", "4", "--json", out)
    assert result.exit_code == 0, result.output
    rows = [line.split()[:2] for line in result.output.splitlines() if line.strip()]
    for system in ("cosine", "coattention"):
        for direction in ("t2a", "a2t"):
            assert [system, direction] in rows, result.output
    payload = json.loads(out.read_text())
    assert set(payload) == {"cosine", "coattention"}
    api = evaluate_with_coattention(files["val"], files["ckpt"], CoRerankConfig(topk=4))
    assert payload["coattention"]["metrics"] == pytest.approx(api["coattention"].metrics)
    assert payload["cosine"]["metrics"] == pytest.approx(evaluate_cache(files["val"]).metrics)
    assert payload["coattention"]["counts"]["head"]["rerank"]["mode"] == "gen"
    assert payload["coattention"]["counts"]["head"]["checkpoint"] == str(files["ckpt"])


def test_fusion_all_and_dcase(files, tmp_path) -> None:
    out, sub = tmp_path / "f.json", tmp_path / "sub.csv"
    base = ["evaluate", files["val"], "--head", files["ckpt"]]
    result = run(*base, "--topk", "4", "--mode", "fusion", "--alpha", "0.5", "--json", out)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["coattention-fusion"]["counts"]["head"]["rerank"]["alpha"] == 0.5
    for key in ("t2a_R@5", "t2a_R@10", "a2t_R@5"):  # k >= top-k: the cosine top-k stays on top
        assert payload["coattention-fusion"]["metrics"][key] == payload["cosine"]["metrics"][key]
    result = run(*base, "--topk", "all", "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["coattention"]["counts"]["head"]["rerank"]["topk"] is None
    result = run(*base, "--topk", "12", "--protocol", "dcase", "--submission", sub)
    assert result.exit_code == 0, result.output
    with open(sub, newline="") as f:
        assert next(csv.reader(f))[:2] == ["caption", "file_name_1"]


@pytest.mark.parametrize(
    "extra,flags",
    [(["--steps", "3"], "--steps"), (["--eta", "0.1", "--seed", "2"], "--eta, --seed"),
     (["--temperature", "2"], "--temperature"), (["--no-compile"], "--no-compile")],
)  # fmt: skip
def test_diffusion_only_options_are_refused(files, extra, flags) -> None:
    result = run("evaluate", files["val"], "--head", files["ckpt"], *extra)
    assert result.exit_code == 2
    assert f"{flags} only apply to a diffusion head" in result.output
    assert "co-attention head" in result.output


def test_bad_input_is_one_error_line(files, tmp_path) -> None:
    bare = tmp_path / "bare.h5"
    with CacheWriter(bare, dataset="x", split="val", space="joint") as w:
        w.add_audio(["a", "b"], np.eye(2))
        w.add_text(["1", "2"], [0, 1], np.eye(2))
    for args in (
        ["evaluate", bare, "--head", files["ckpt"]],
        ["train-coattention", bare, "--val", files["val"], "--out", tmp_path / "x.pt"],
    ):
        result = run(*args)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in lines[0]
        assert "`diffatr extract ... --frames --tokens`" in lines[0]


def test_every_option_is_explained_and_defaults_match_the_config() -> None:
    result = run("train-coattention", "--help")
    assert result.exit_code == 0
    command = main.commands["train-coattention"]
    defaults = CoAttentionConfig()
    for param in command.params:
        if param.param_type_name == "option":
            assert param.help, param.name
            if param.name in {f.name for f in dataclasses.fields(CoAttentionConfig)}:
                assert param.default == getattr(defaults, param.name), param.name
