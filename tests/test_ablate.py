"""The ablation runner (diffatr/experiments/): tables from tiny grids, per-seed files that
regenerate them, resume after an interruption, phase 1 for backbone caches, out-of-domain
projection through the source's phase 1, the CLI."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffatr.cache import (
    BackboneSyntheticConfig,
    SequenceSyntheticConfig,
    SyntheticConfig,
    make_synthetic,
    make_synthetic_backbone,
    make_synthetic_sequences,
)
from diffatr.cli import main
from diffatr.coattention import CoAttentionConfig
from diffatr.contrastive import ContrastiveConfig
from diffatr.diffusion_head import HeadConfig, RerankConfig, load_head
from diffatr.evaluate.per_query import load_outcomes
from diffatr.experiments import runner as runner_module
from diffatr.experiments.config import AblationConfig, Dataset
from diffatr.experiments.runner import Ablation
from diffatr.experiments.tables import format_ablation, summarise

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = AblationConfig(
    seeds=(0, 1),
    head=HeadConfig(epochs=1, batch_size=8, K=6, compiled=False),
    rerank=RerankConfig(topk=5, compiled=False),
    contrastive=ContrastiveConfig(joint_dim=16, epochs=2, batch_size=16),
    device="cpu",
)


def _joint(folder, name, seed):
    paths = []
    for split, n, s in (("train", 60, seed), ("val", 20, seed + 1), ("test", 24, seed + 2)):
        path = folder / f"{name}_{split}.h5"
        make_synthetic(path, SyntheticConfig(n_clips=n, dim=16, n_classes=6, seed=s), split=split)
        paths.append(str(path))
    return Dataset(name, *paths)


def _backbone(folder, name, map_seed):
    paths = []
    for split, n, s in (("train", 80, 1), ("val", 20, 2), ("test", 24, 3)):
        path = folder / f"{name}_{split}.h5"
        cfg = BackboneSyntheticConfig(
            n_clips=n, audio_dim=24, text_dim=20, seed=s + 10 * map_seed, map_seed=map_seed
        )
        make_synthetic_backbone(path, cfg, dataset=name, split=split)
        paths.append(str(path))
    return Dataset(name, *paths)


@pytest.fixture(scope="module")
def joint(tmp_path_factory):
    return _joint(tmp_path_factory.mktemp("joint"), "syn", 1)


def test_strategy_table_files_regenerate_the_table(tmp_path, joint):
    run = Ablation(tmp_path, FAST, echo=lambda _: None)
    text = run.run(["strategy"], [joint])["strategy"]
    for label in ("Dis", "Gen", "Gen+Dis", "dual-softmax", "inverted-softmax", "qb-norm"):
        assert f"\n{label} " in text
    assert "paper protocol (Mei et al.)" in text and "mean +- std over 2 seeds" in text
    payload = json.loads((tmp_path / "strategy" / "results.json").read_text())
    records = payload["records"]
    assert len(records) == 6 * 2 and {r["seed"] for r in records} == {0, 1}
    with open(tmp_path / "strategy" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(records)
    # mean and sample std of the CSV's per-seed numbers are the summary's
    for s in payload["summary"]:
        values = [float(r["t2a_R@1"]) for r in rows if r["row"] == s["row"]]
        assert s["mean"]["t2a_R@1"] == pytest.approx(np.mean(values))
        assert s["std"]["t2a_R@1"] == pytest.approx(np.std(values, ddof=1))
    # joint input: cosine and the baselines do not depend on the seed (computed once)
    cosine = [r for r in records if r["system"] == "cosine"]
    assert cosine[0]["metrics"] == cosine[1]["metrics"]
    gen = [r for r in records if r["system"] == "diffatr-gen"]
    assert gen[0]["metrics"] != gen[1]["metrics"]  # another seed, another head
    assert (tmp_path / "strategy" / "table.txt").read_text().strip() == text
    for png in ("recall_curves_syn.png", "diffusion_process_syn.png"):
        assert (tmp_path / "strategy" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(records[0]["curves"]["t2a"]) == 100


def test_gen_and_gen_dis_share_one_ddim_and_equal_their_own_runs(tmp_path, joint, monkeypatch):
    """The strategy table's Gen and Gen+Dis rows re-rank with one DDIM per seed (x0_hat kept
    between them), and their records equal those of runs that sampled on their own."""
    from diffatr.diffusion_head import fused

    cfg = replace(FAST, seeds=(0,))
    calls = {"n": 0}
    real = fused.GalleryDenoiser.sample

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(fused.GalleryDenoiser, "sample", counted)
    shared = Ablation(tmp_path / "shared", cfg, echo=lambda _: None)
    shared.run(["strategy"], [joint])
    shared_calls = calls["n"]
    alone = Ablation(tmp_path / "alone", cfg, echo=lambda _: None)
    alone.samples.for_settings = lambda key: runner_module.Samples()  # nothing kept
    calls["n"] = 0
    alone.run(["strategy"], [joint])
    # validation samples as often in both; the test split once instead of twice
    assert calls["n"] > shared_calls > 0
    got, want = (
        json.loads((tmp_path / name / "strategy" / "results.json").read_text())["records"]
        for name in ("shared", "alone")
    )
    systems = {r["system"] for r in got}
    assert {"diffatr", "diffatr-gen"} <= systems
    for a, b in zip(got, want, strict=True):
        assert a["system"] == b["system"] and a["metrics"] == b["metrics"]


@pytest.mark.parametrize("stack", [False, True], ids=["one-by-one", "stacked"])
def test_an_interrupted_ablation_resumes_and_ends_as_an_uninterrupted_one(
    tmp_path, joint, monkeypatch, stack
):
    cfg = replace(FAST, stack_heads=stack)
    whole = Ablation(tmp_path / "whole", cfg, echo=lambda _: None)
    expected = whole.run(["strategy"], [joint])["strategy"]
    calls = {"n": 0}
    name = "train_heads" if stack else "train_head"
    real = getattr(runner_module, name)
    crash_at = 1 if stack else 2  # stacked: both seeds' heads are one call

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, name, crash)
    first = Ablation(tmp_path / "cut", cfg, echo=lambda _: None)
    with pytest.raises(KeyboardInterrupt):
        first.run(["strategy"], [joint])
    monkeypatch.setattr(runner_module, name, real)
    again = Ablation(tmp_path / "cut", cfg, echo=lambda _: None)
    assert again.run(["strategy"], [joint])["strategy"] == expected
    assert set(first.ran) <= set(again.reused)  # nothing finished before was redone
    assert not set(again.ran) & set(first.ran)
    assert any(name.startswith("head-") for name in again.ran)  # the interrupted head
    third = Ablation(tmp_path / "cut", cfg, echo=lambda _: None)
    third.run(["strategy"], [joint])
    assert third.ran == []


def test_stacked_seeds_fill_the_same_runs_with_the_same_heads(tmp_path, joint, monkeypatch):
    """Stacked (--stack) and one-by-one training fill the same run folders
    (the store does not change) with the same heads, to float rounding; stacked, the heads
    are one `train_heads` call per table row and no `train_head` call."""
    cfg = replace(FAST, seeds=(0, 1, 2), baselines=())
    seq = Ablation(tmp_path / "seq", replace(cfg, stack_heads=False), echo=lambda _: None)
    seq.run(["strategy"], [joint])
    calls = []
    real = runner_module.train_heads
    monkeypatch.setattr(runner_module, "train_head", None)  # must not be called
    monkeypatch.setattr(runner_module, "train_heads", lambda jobs, *a: calls.append(jobs) or
                        real(jobs, *a))  # fmt: skip
    echoed = []
    stacked = Ablation(tmp_path / "stk", replace(cfg, stack_heads=True), echo=echoed.append)
    stacked.run(["strategy"], [joint])
    assert [len(jobs) for jobs in calls] == [3]
    assert any("seeds 0,1,2) as one stacked computation" in line for line in echoed)
    heads = sorted(n for n in seq.ran if n.startswith("head-"))
    assert heads == sorted(n for n in stacked.ran if n.startswith("head-")) and len(heads) == 3
    for name in heads:
        a = load_head(tmp_path / "seq" / "runs" / name / "head.pt")
        b = load_head(tmp_path / "stk" / "runs" / name / "head.pt")
        assert a.meta["epoch"] == b.meta["epoch"] == 1
        for d in ("t2a", "a2t"):
            for (k, x), y in zip(a.__dict__[d].state_dict().items(),
                                 b.__dict__[d].state_dict().values(), strict=True):  # fmt: skip
                torch.testing.assert_close(y, x, rtol=0, atol=2e-5, msg=f"{name} {d} {k}")


def test_eval_only_grids_share_one_head_and_skip_steps_above_K(tmp_path, joint):
    cfg = replace(FAST, seeds=(0,), baselines=())
    run = Ablation(tmp_path, cfg, echo=lambda _: None)
    run.run(["sampling-steps", "alpha"], [joint])
    heads = [name for name in run.ran if name.startswith("head-")]
    assert len(heads) == 1  # one trained head serves both tables
    rows = json.loads((tmp_path / "sampling-steps" / "results.json").read_text())["records"]
    assert [r["row"] for r in rows if r["system"] != "cosine"] == ["S=1", "S=2", "S=5"]  # K=6


def test_backbone_caches_run_phase_1_per_seed_and_ood_projects_the_target_with_the_source(
    tmp_path,
):
    data = tmp_path / "data"
    data.mkdir()
    a, b = _backbone(data, "alpha", 0), _backbone(data, "beta", 0)
    cfg = replace(FAST, baselines=("qb-norm",))
    run = Ablation(tmp_path / "out", cfg, echo=lambda _: None)
    text = run.run(["ood"], [a, b])["ood"]
    assert "alpha -> beta" in text and "beta -> alpha" in text
    phase1 = [n for n in run.ran if n.startswith("phase1-")]
    assert len(phase1) == 2 * 2  # two sources x two seeds
    projected = [n for n in run.ran if n.startswith("project-")]
    assert len(projected) == 2 * 2 * 3  # per source and seed: its train, val, the target's test
    for folder in (tmp_path / "out" / "runs").glob("project-beta_test-*"):
        settings = json.loads((folder / "settings.json").read_text())
        assert settings["projection"]["train"]["path"].endswith("alpha_train.h5")
    records = json.loads((tmp_path / "out" / "ood" / "results.json").read_text())["records"]
    cosine = [r for r in records if r["system"] == "cosine" and r["train"] == "alpha"]
    assert cosine[0]["metrics"] != cosine[1]["metrics"]  # phase 1 differs by seed


def test_format_ablation_shows_mean_and_sample_std():
    records = [
        {"train": "d", "test": "d", "row": "K=10", "system": "diffatr", "seed": s, "metrics": m}
        for s, m in enumerate(
            [{"t2a_R@1": 30.0, "t2a_R@5": 60.0, "t2a_R@10": 70.0}, {"t2a_R@1": 32.0,
             "t2a_R@5": 61.0, "t2a_R@10": 71.0}]
        )
    ]  # fmt: skip
    summary = summarise(records)
    text = format_ablation("steps", summary, "dcase")
    assert "31.0+-1.4" in text and "60.5+-0.7" in text and "DCASE" in text
    assert "a2t" not in text
    one = format_ablation("steps", summarise(records[:1]), "dcase")
    assert "one seed (no spread)" in one and "+-" not in one.split("one seed")[1]
    assert "    30.0         60.0         70.0" in one  # columns kept aligned


def test_cli_runs_a_table_and_refuses_bad_data(tmp_path, joint):
    runner = CliRunner()
    args = ["ablate", "eta", "--data", f"syn={joint.train},{joint.val},{joint.test}"]
    fast = ["--seeds", "0", "--epochs", "1", "--batch-size", "8", "--steps-K", "6"]
    fast += ["--topk", "5", "--no-compile", "--device", "cpu", "--no-baselines"]
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "o"), *fast])
    assert result.exit_code == 0, result.output
    assert "eta=0.5" in result.output and "run(s) done" in result.output
    again = runner.invoke(main, [*args, "--out", str(tmp_path / "o"), *fast])
    assert "0 run(s) done" in again.output
    bad = runner.invoke(main, ["ablate", "eta", "--data", "syn=a.h5", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "NAME=TRAIN.h5,VAL.h5,TEST.h5" in bad.output
    missing = runner.invoke(main, ["ablate", "eta", "--data", "x=a,b,c", "--out", str(tmp_path)])
    assert missing.exit_code == 1 and "a: no such cache file" in missing.output
    one = runner.invoke(main, ["ablate", "ood", *args[2:], "--out", str(tmp_path / "q")])
    assert one.exit_code == 1 and "needs two datasets" in one.output
    seeds = runner.invoke(main, [*args, "--out", str(tmp_path), "--seeds", "1,1"])
    assert seeds.exit_code == 2 and "none twice" in seeds.output
    # --report: the same head (reused), the evaluations again with a per-query record
    report = runner.invoke(main, [*args, "--out", str(tmp_path / "o"), *fast, "--report"])
    assert report.exit_code == 0, report.output
    assert "wrote 3 per-query report(s)" in report.output, report.output  # eta 0, 0.5, 1
    folder = tmp_path / "o" / "eta" / "report"
    pages = sorted(folder.glob("*/index.html"))
    assert len(pages) == 3 and "syn-eta=0.5-diffatr-seed0" in {p.parent.name for p in pages}
    assert "diffatr vs cosine: text-to-audio" in (folder / "index.html").read_text()
    records = json.loads((tmp_path / "o" / "eta" / "results.json").read_text())["records"]
    base = next(r for r in records if r["system"] == "cosine")
    assert load_outcomes(base["queries"]).t2a_rank.max() > 0


def test_the_coattention_head_joins_the_table(tmp_path):
    paths = []
    for split, seed in (("train", 1), ("val", 2), ("test", 3)):
        path = tmp_path / f"seq_{split}.h5"
        make_synthetic_sequences(path, SequenceSyntheticConfig(n_bags=12, seed=seed), split=split)
        paths.append(str(path))
    co = CoAttentionConfig(epochs=1, batch_size=8, d_model=16, heads=2, ffn=16)
    cfg = replace(FAST, seeds=(0,), baselines=(), coattention=co)
    run = Ablation(tmp_path / "out", cfg, echo=lambda _: None)
    text = run.run(["strategy"], [Dataset("seq", *paths)])["strategy"]
    assert "\nco-attention " in text
    assert sum(name.startswith("coattention-") for name in run.ran) == 1
    records = json.loads((tmp_path / "out" / "strategy" / "results.json").read_text())["records"]
    co_row = next(r for r in records if r["system"] == "coattention")
    assert 0 <= co_row["metrics"]["t2a_R@1"] <= 100


def test_seeds_evaluate_together_with_each_seeds_own_record(tmp_path, joint, monkeypatch):
    """On joint data every seed's head re-ranks the same test cache: each head row's seeds are
    evaluated as one stacked computation, into the runs (and records, to a near-tie) that
    evaluating them one by one writes; a second run reuses them all."""
    cfg = replace(FAST, baselines=())
    echoed = []
    together = Ablation(tmp_path / "together", cfg, echo=echoed.append)
    text = together.run(["strategy"], [joint])["strategy"]
    got = records(tmp_path / "together")
    assert any("(seeds together)" in line for line in echoed)
    assert not [x for x in echoed if x.startswith("evaluate diffatr") and "(seed " in x]
    monkeypatch.setattr(Ablation, "stacked_evaluations", lambda *a: None)
    alone = Ablation(tmp_path / "alone", cfg, echo=lambda _: None)
    alone.run(["strategy"], [joint])
    want = records(tmp_path / "alone")

    def evals(run):  # the digests hold the heads' paths, under another root
        return sorted(n.rsplit("-", 1)[0] for n in run.ran if n.startswith("eval-"))

    assert evals(together) == evals(alone)
    assert [(r["row"], r["seed"]) for r in got] == [(r["row"], r["seed"]) for r in want]
    one = 100 / 24  # one of the test split's 24 clips, in percent
    for a, b in zip(got, want, strict=True):
        for key, value in b["metrics"].items():
            assert abs(a["metrics"][key] - value) <= one + 1e-9, (a["row"], key)
    again = Ablation(tmp_path / "together", cfg, echo=lambda _: None)
    assert again.run(["strategy"], [joint])["strategy"] == text
    assert again.ran == []  # `evaluate` finds the stacked runs where it would write its own


def records(out) -> list[dict]:
    return json.loads((out / "strategy" / "results.json").read_text())["records"]


def test_stacked_runs_record_their_own_seconds(tmp_path, joint, monkeypatch):
    """Stacked training and evaluation: each run records its share of the shared work plus its
    own, not the stack's total and not the time of the runs measured before it. A fake clock
    (advanced by the patched work, never read from the machine) makes the seconds exact."""
    import types

    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(
        runner_module, "time", types.SimpleNamespace(perf_counter=lambda: clock.now)
    )

    def costs(seconds, real):
        def call(*a, **k):
            clock.now += seconds
            return real(*a, **k)

        return call

    monkeypatch.setattr(runner_module, "train_heads", costs(30.0, runner_module.train_heads))
    monkeypatch.setattr(runner_module, "stacked_scores", costs(6.0, runner_module.stacked_scores))
    monkeypatch.setattr(runner_module, "measure", costs(10.0, runner_module.measure))
    finished = {}
    real_finish = runner_module.Store.finish  # a staticmethod

    def finish(folder, record):
        finished[folder.name] = dict(record)
        return real_finish(folder, record)

    monkeypatch.setattr(runner_module.Store, "finish", staticmethod(finish))
    cfg = replace(FAST, baselines=(), stack_heads=True)
    Ablation(tmp_path, cfg, echo=lambda _: None).run(["strategy"], [joint])
    heads = {k: v for k, v in finished.items() if k.startswith("head-")}
    assert len(heads) == 2 and all(r["seconds"] == 15.0 for r in heads.values()), heads
    assert all(r["stacked_seconds"] == 30.0 for r in heads.values())
    evals = [r["seconds"] for k, r in finished.items() if k.startswith("eval-diffatr")]
    assert evals and all(s == 6.0 / 2 + 10.0 for s in evals), evals
