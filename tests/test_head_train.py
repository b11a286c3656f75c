"""Training the diffusion head on cached tensors (diffatr/diffusion_head/train.py, checkpoint.py):
the checkpoint and its logs, reproducibility, the loss going down, naive == fused, refusals."""

import csv
import json
import re
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

import diffatr.diffusion_head.train as train_module
from diffatr.cache import CacheWriter, SyntheticConfig, load_tensors, make_synthetic
from diffatr.diffusion_head import DiffusionScores, HeadConfig, RerankConfig, load_head
from diffatr.diffusion_head.train import (
    SELECT_ON,
    HeadJob,
    stacks_heads,
    train_head,
    train_heads,
)
from diffatr.diffusion_head.trainer import HeadTrainer
from diffatr.errors import UserError
from diffatr.evaluate import paper_protocol

D = 16
CFG = HeadConfig(K=10, epochs=3, batch_size=8, lr=1e-2, compiled=False, device="cpu")
RERANK = RerankConfig(topk=8, compiled=False)
PARAMS = {
    f"{name}.{kind}"
    for name in ("time_mlp.0", "time_mlp.2", "out_proj", "decoder.0", "decoder.2")
    for kind in ("weight", "bias")
} | {"q_proj.weight", "k_proj.weight", "v_proj.weight"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("head")
    paths = {"train": root / "train.h5", "val": root / "val.h5", "val32": root / "val32.h5"}
    make_synthetic(
        paths["train"],
        SyntheticConfig(n_clips=96, captions_per_clip=(1, 3, 5), dim=D, seed=0),
        split="train",
    )
    for name, dim in (("val", D), ("val32", 32)):
        make_synthetic(
            paths[name],
            SyntheticConfig(n_clips=32, captions_per_clip=(1, 3, 5), dim=dim, seed=1),
            split="val",
        )
    return paths


def train(caches, out, cfg=CFG, **changes):
    return train_head(
        caches["train"], caches["val"], out, replace(cfg, **changes), RERANK, False, lambda _: None
    )


@pytest.fixture(scope="module")
def trained(caches, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "sub" / "head.pt"  # missing folder: created
    return train(caches, out), out


def states(head) -> dict[str, dict[str, torch.Tensor]]:
    return {"t2a": head.t2a.state_dict(), "a2t": head.a2t.state_dict()}


def assert_same_weights(a, b) -> None:
    for direction, state in states(a).items():
        other = states(b)[direction]
        assert state.keys() == other.keys()
        for name, tensor in state.items():
            assert torch.equal(tensor, other[name]), f"{direction} {name}"


def metrics_only(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_checkpoint_is_a_plain_dict_with_its_config(trained) -> None:
    _, out = trained
    blob = torch.load(out, map_location="cpu", weights_only=True)
    for key in ("format", "version", "config", "dim", "t2a", "a2t", "epoch", "val_metrics"):
        assert key in blob, key
    assert blob["format"] == "diffatr-diffusion-head" and blob["version"] == 1
    assert blob["config"] == asdict(CFG) and blob["dim"] == D
    for direction in ("t2a", "a2t"):
        assert set(blob[direction]) == PARAMS
        assert blob[direction]["decoder.0.weight"].shape == (2 * D, 2 * D)
    history = blob["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    # the saved epoch is the best by the selection score, and its metrics are the logged ones
    score = [sum(row[k] for k in SELECT_ON) for row in history]
    assert blob["epoch"] == 1 + int(np.argmax(score))
    logged = history[blob["epoch"] - 1]
    assert blob["val_metrics"] == {k: v for k, v in logged.items() if "_" in k and " " not in k}
    assert set(blob["val_metrics"]) >= set(SELECT_ON) | {"t2a_mAP@10", "a2t_medR"}
    assert not list(out.parent.glob("*.partial"))


def test_logs_beside_the_checkpoint(trained) -> None:
    head, out = trained
    log = json.loads(out.with_name("head.pt.log.json").read_text())
    assert metrics_only(log) == head.meta["history"]  # the checkpoint holds no wall clock
    assert all(row["loss"] > 0 and row["seconds"] > 0 for row in log)
    with open(out.with_name("head.pt.log.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(log) and list(rows[0]) == list(log[0])
    for row, want in zip(rows, log, strict=True):
        assert {k: float(v) for k, v in row.items()} == pytest.approx(want)


def test_load_head_round_trip(trained) -> None:
    head, out = trained
    loaded = load_head(out)
    assert loaded.config == CFG and loaded.dim == D
    assert_same_weights(loaded, head)
    assert loaded.meta["history"] == head.meta["history"]
    assert loaded.meta["epoch"] == head.meta["epoch"]
    assert not loaded.t2a.training and not loaded.a2t.training


def test_saved_weights_give_the_logged_validation_metrics(trained, caches) -> None:
    _, out = trained
    head, val = load_head(out), load_tensors(caches["val"])
    scores = DiffusionScores(val.text, val.audio, head, RERANK)
    assert paper_protocol(scores, val.audio_index) == pytest.approx(head.meta["val_metrics"])


def test_same_seed_same_checkpoint_other_seed_other_weights(trained, caches, tmp_path) -> None:
    head, _ = trained
    again = train(caches, tmp_path / "again.pt")
    assert_same_weights(again, head)
    assert metrics_only(again.meta["history"]) == metrics_only(head.meta["history"])
    other = train(caches, tmp_path / "other.pt", seed=1)
    diff = (other.t2a.q_proj.weight - head.t2a.q_proj.weight).abs().max()
    assert diff > 1e-3


def test_training_lowers_the_loss(caches, tmp_path) -> None:
    """The per-epoch loss is dominated by the draws of k and eps, so compare with lr = 0 on the
    very same batches, steps and noise (one seed): learning must lower every later epoch's."""
    epochs = 5
    frozen = train(caches, tmp_path / "frozen.pt", epochs=epochs, lr=0.0).meta["history"]
    learnt = train(caches, tmp_path / "learnt.pt", epochs=epochs).meta["history"]
    gap = [f["loss"] - t["loss"] for f, t in zip(frozen, learnt, strict=True)]
    assert all(g > 0 for g in gap[1:]), gap
    assert gap[-1] > gap[1] > 0.1, gap


def test_naive_and_fused_training_agree(caches, tmp_path) -> None:
    fused = train(caches, tmp_path / "fused.pt", epochs=1)
    naive = train(caches, tmp_path / "naive.pt", epochs=1, fused=False)
    assert naive.meta["history"][0]["loss"] == pytest.approx(
        fused.meta["history"][0]["loss"], abs=1e-4
    )
    for direction, state in states(fused).items():
        for name, tensor in state.items():
            if name == "decoder.2.bias":
                # b2 shifts every logit of a row alike, so CE's gradient for it is 0 up to
                # rounding, and Adam turns that rounding noise into full-size steps
                continue
            torch.testing.assert_close(states(naive)[direction][name], tensor, rtol=0, atol=1e-4)


def test_denormals_stay_flushed_after_validation(caches, tmp_path, monkeypatch) -> None:
    """flush_denormal is on for the whole run (x86 denormals cost ~5x per batch); validation's
    own flush_denormal block must not switch it off for the epochs after the first."""
    seen = []
    real = HeadTrainer.step

    def probe(*args, **kwargs):
        seen.append(float(torch.tensor([1e-39]) * 1.0) == 0.0)  # a denormal flushed to zero?
        return real(*args, **kwargs)

    monkeypatch.setattr(HeadTrainer, "step", probe)
    train(caches, tmp_path / "h.pt", epochs=2)
    assert seen and all(seen), f"flushed in {sum(seen)} of {len(seen)} training steps"


def _backbone_cache(path, da: int = 24, dt: int = D) -> None:
    g = np.random.default_rng(0)
    with CacheWriter(path, dataset="toy", split="train", space="backbone") as w:
        for side in ("audio", "text"):
            w.set_attrs(side, encoder="toy", feature_kind="toy", settings={}, sample_rate=None)
        w.add_audio([f"{i}.wav" for i in range(10)], g.standard_normal((10, da), dtype=np.float32))
        w.add_text(
            [f"c{i}" for i in range(20)],
            np.arange(20) % 10,
            g.standard_normal((20, dt), dtype=np.float32),
        )


def test_refusals_name_the_file_and_what_to_do(caches, tmp_path) -> None:
    backbone = tmp_path / "backbone.h5"
    _backbone_cache(backbone)
    out = tmp_path / "h.pt"
    with pytest.raises(
        UserError,
        match=r"backbone\.h5.*24-d audio and 16-d text.*diffatr train-contrastive.*"
        r"diffatr project .*backbone\.h5 --proj proj\.pt",
    ):
        train_head(backbone, caches["val"], out, CFG, RERANK, False, lambda _: None)
    with pytest.raises(UserError, match=r"backbone\.h5: validation cache.*project"):
        train_head(caches["train"], backbone, out, CFG, RERANK, False, lambda _: None)
    square = tmp_path / "square.h5"  # backbone features that happen to share a width
    _backbone_cache(square, da=D)
    with pytest.raises(UserError, match=r"square\.h5: train cache holds backbone .*features"):
        train_head(square, caches["val"], out, CFG, RERANK, False, lambda _: None)
    with pytest.raises(UserError, match=r"val32\.h5: 32-d features.*train cache's are 16-d"):
        train_head(caches["train"], caches["val32"], out, CFG, RERANK, False, lambda _: None)
    with pytest.raises(UserError, match=r"missing\.h5"):
        train_head(tmp_path / "missing.h5", caches["val"], out, CFG, RERANK, False, print)
    assert not out.exists() and not list(tmp_path.glob("h.pt*"))


def test_too_few_clips_or_labels_are_refused(caches, tmp_path) -> None:
    one_clip = tmp_path / "one_clip.h5"
    unlabelled = tmp_path / "unlabelled.h5"
    g = np.random.default_rng(0)
    for path, index in ((one_clip, [0, 0, 0]), (unlabelled, [-1, -1, 0])):
        with CacheWriter(path, dataset="toy", split="train", space="joint") as w:
            for side in ("audio", "text"):
                w.set_attrs(side, encoder="toy", feature_kind="toy", settings={})
            w.add_audio(["a.wav"], g.standard_normal((1, D), dtype=np.float32))
            w.add_text(["x", "y", "z"], index, g.standard_normal((3, D), dtype=np.float32))
    with pytest.raises(UserError, match=r"one_clip\.h5: too few distinct clips"):
        train_head(one_clip, caches["val"], tmp_path / "h.pt", CFG, RERANK, False, print)
    with pytest.raises(UserError, match=r"unlabelled\.h5: .*fewer than 2 captions with a clip"):
        train_head(unlabelled, caches["val"], tmp_path / "h.pt", CFG, RERANK, False, print)


def test_batches_far_below_the_batch_size_are_warned_about(caches, tmp_path, capsys) -> None:
    """The 32-clip split cannot fill batches of 80 distinct clips."""
    train_head(
        caches["val"], caches["val"], tmp_path / "h.pt", replace(CFG, epochs=1, batch_size=80),
        RERANK, False, lambda _: None,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert re.search(r"val\.h5: batches average [\d.]+ pairs, not 80: too few distinct", err)


def test_heads_trained_together_equal_each_trained_alone(caches, tmp_path, monkeypatch) -> None:
    """train_heads (one stacked computation over seeds 0, 1, 2, validated together) against
    train_head per seed: the same trained weights to float rounding, the same logs (recalls to
    a near-tie), a checkpoint and logs per head.
    The seeds' epochs end in short batches and different batch counts, which step per head."""
    trainers = []
    real_init = HeadTrainer.__init__

    def record(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        trainers.append(self)

    monkeypatch.setattr(HeadTrainer, "__init__", record)
    seeds = (0, 1, 2)
    jobs = [
        HeadJob(caches["train"], caches["val"], tmp_path / f"seed{s}.pt", replace(CFG, seed=s),
                replace(RERANK, seed=s))
        for s in seeds
    ]  # fmt: skip
    sampled_together = []
    real_stacked = train_module.stacked_scores
    monkeypatch.setattr(
        train_module,
        "stacked_scores",
        lambda text, audio, heads, *a: (
            sampled_together.append(len(heads)) or real_stacked(text, audio, heads, *a)
        ),
    )
    together = train_heads(jobs, False, lambda _: None, stack=True)
    assert sampled_together == [3] * CFG.epochs  # validated together, one stacked run an epoch
    val = load_tensors(caches["val"])
    one = {"t2a": 100 / len(val.text), "a2t": 100 / len(val.audio)}
    for h, (s, head) in enumerate(zip(seeds, together, strict=True)):
        alone = train(caches, tmp_path / f"alone{s}.pt", seed=s)
        # the weights after the last epoch (the checkpoint holds the best epoch's EMA, and a
        # validation near-tie could pick another epoch)
        for d in ("t2a", "a2t"):
            got = dict(trainers[0].heads_nets[h][d].named_parameters())
            for name, want in trainers[-1].nets[d].named_parameters():
                torch.testing.assert_close(got[name], want, rtol=0, atol=2e-5, msg=f"{s} {name}")
        # the logged losses agree; validation ranks may flip a near-tie (the weights differ in
        # the last bits), so each recall agrees to one query
        want, got = alone.meta["history"], head.meta["history"]
        assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
        for a, b in zip(got, want, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
            for key in SELECT_ON:
                assert abs(a[key] - b[key]) <= one[key[:3]] + 1e-9, key
        score = [sum(row[k] for k in SELECT_ON) for row in got]
        assert head.meta["epoch"] == 1 + int(np.argmax(score))
        assert_same_weights(load_head(tmp_path / f"seed{s}.pt"), head)
        assert metrics_only(json.loads((tmp_path / f"seed{s}.pt.log.json").read_text())) == got


def test_heads_trained_together_must_share_their_settings(caches, tmp_path) -> None:
    jobs = [
        HeadJob(caches["train"], caches["val"], tmp_path / "a.pt", CFG, RERANK),
        HeadJob(caches["train"], caches["val"], tmp_path / "b.pt", replace(CFG, seed=1, K=20)),
    ]
    with pytest.raises(ValueError, match="differ only in their seed"):
        train_heads(jobs, False, lambda _: None)
    with pytest.raises(ValueError, match="seeds trained together must differ"):
        train_heads([jobs[0], replace(jobs[0], out=tmp_path / "c.pt")], False, lambda _: None)


def test_several_heads_stack_by_default_on_cuda_only(caches, tmp_path, monkeypatch) -> None:
    """stack=None: one after another on CPU (a stacked head measured slower there), each as
    train_head would train it; stacked on CUDA; an explicit choice wins on any device."""
    assert stacks_heads(None, torch.device("cuda")) and not stacks_heads(None, torch.device("cpu"))
    assert stacks_heads(True, torch.device("cpu")) and not stacks_heads(False, torch.device("cuda"))
    heads = []
    real_init = HeadTrainer.__init__

    def record(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        heads.append(self.heads)

    monkeypatch.setattr(HeadTrainer, "__init__", record)
    jobs = [
        HeadJob(caches["train"], caches["val"], tmp_path / f"seed{s}.pt", replace(CFG, seed=s),
                replace(RERANK, seed=s))
        for s in (0, 1)
    ]  # fmt: skip
    echoed = []
    got = train_heads(jobs, False, echoed.append)
    assert heads == [1, 1] and [e for e in echoed if e.startswith("seed")] == ["seed 0:", "seed 1:"]
    alone = train_head(caches["train"], caches["val"], tmp_path / "alone1.pt", jobs[1].cfg,
                       jobs[1].rerank, False, lambda _: None)  # fmt: skip
    assert_same_weights(got[1], alone)


def test_a_head_that_changes_no_ranking_is_said_to_have_learned_nothing(
    caches, tmp_path, capsys, monkeypatch
) -> None:
    """Validation metrics equal to cosine's at every epoch (seen on 81 training pairs): the log
    says so with the usual causes, the history counts the differing metrics per epoch (0), and
    the checkpoint carries the warning. The re-ranking is replaced by cosine itself here, the
    sure way to a head that changes nothing."""
    from diffatr.evaluate import CosineScores

    monkeypatch.setattr(train_module, "DiffusionScores", lambda t, a, *_: CosineScores(t, a))
    head = train(caches, tmp_path / "flat.pt", epochs=2)
    err = capsys.readouterr().err
    assert "equal cosine's at every epoch (2)" in err and "too few training pairs" in err
    assert [row["unlike cosine"] for row in head.meta["history"]] == [0, 0]
    blob = torch.load(tmp_path / "flat.pt", map_location="cpu", weights_only=True)
    assert "learned nothing" in blob["warning"]
    assert "unlike cosine" not in blob["val_metrics"]


def test_a_head_that_moves_rankings_is_not_warned_about(trained) -> None:
    head, _ = trained
    assert any(row["unlike cosine"] > 0 for row in head.meta["history"])
    assert "warning" not in head.meta


def test_the_best_epoch_snapshot_copies_only_the_heads_rows() -> None:
    """Stacked heads' parameters are views of one tensor of every head; the snapshot of one
    head holds its own elements only (a deepcopy held the whole stack: 6x for three heads)."""
    from diffatr.diffusion_head.denoiser import Denoiser
    from diffatr.diffusion_head.stacked import StackedPair
    from diffatr.diffusion_head.train import snapshot

    nets = [Denoiser(D, max_steps=10) for _ in range(3)]
    StackedPair(nets)
    for name, p in nets[1].named_parameters():
        assert p.untyped_storage().nbytes() > p.numel() * p.element_size(), name  # a view
    copy = snapshot(nets[1])
    own = sum(p.numel() * p.element_size() for p in nets[1].parameters())
    assert sum(t.untyped_storage().nbytes() for t in copy.values()) == own
    for name, p in nets[1].named_parameters():
        assert torch.equal(copy[name], p)
