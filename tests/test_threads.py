"""The thread policy of training (diffatr/threads.py): the cores other processes used, from
/proc/stat minus this process's own CPU time, set torch's thread count; the entry count comes
back afterwards; DIFFATR_THREADS=off / N; phase 1 and the co-attention trainer follow it every
step. The machine's load is simulated (no timing here)."""

import pytest
import torch

from diffatr import threads


class FakeMachine:
    """Elapsed seconds, all processes' CPU seconds and ours, advanced by `run`."""

    def __init__(self):
        self.now, self.total, self.own = 100.0, 5000.0, 10.0

    def run(self, seconds: float, ours: float, others: float) -> None:
        self.now += seconds
        self.own += ours * seconds
        self.total += (ours + others) * seconds


@pytest.fixture
def machine(monkeypatch):
    m = FakeMachine()
    monkeypatch.setattr(threads.time, "monotonic", lambda: m.now)
    monkeypatch.setattr(threads, "_cpu_seconds", lambda: m.total)
    monkeypatch.setattr(threads, "_own_seconds", lambda: m.own)
    before = torch.get_num_threads()
    yield m
    torch.set_num_threads(before)


def test_other_processes_cores_are_measured_and_given_up(machine, monkeypatch) -> None:
    torch.set_num_threads(2)
    policy = threads.AdaptiveThreads(max_threads=2, cores=2)
    machine.run(0.1, ours=2.0, others=0.0)
    assert policy.others() is None  # too soon to tell
    machine.run(1.0, ours=2.0, others=0.1)  # an idle machine's background
    assert policy.others() == pytest.approx(0.1 / 1.1)  # since the last look, 1.1 s ago
    machine.run(1.0, ours=2.0, others=0.1)
    policy.tick()
    assert torch.get_num_threads() == 2
    machine.run(1.0, ours=0.7, others=1.3)  # a two-thread competitor
    policy.tick()
    assert torch.get_num_threads() == 1
    machine.run(1.0, ours=1.0, others=1.0)
    policy.tick()
    assert torch.get_num_threads() == 1
    machine.run(1.0, ours=1.0, others=0.05)  # it ended
    policy.tick()
    assert torch.get_num_threads() == 2 and policy.changes == 2


def test_a_busy_machine_starts_with_one_thread(machine, monkeypatch) -> None:
    torch.set_num_threads(2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.4, 1.0, 0.5))
    with threads.training_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_a_bigger_machine_keeps_the_cores_left(machine) -> None:
    torch.set_num_threads(2)
    policy = threads.AdaptiveThreads(max_threads=8, cores=16)
    machine.run(1.0, ours=8.0, others=9.5)  # others hold 10 cores: 6 left, capped at 8
    policy.tick()
    assert torch.get_num_threads() == 6


def test_training_threads_restores_the_count_and_obeys_the_environment(machine, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 0.1, 0.1))  # idle on entry
    with threads.training_threads():
        assert torch.get_num_threads() == 2
        machine.run(1.0, ours=1.0, others=1.5)
        threads.tick()
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2 and not threads._active
    monkeypatch.setenv("DIFFATR_THREADS", "off")
    with threads.training_threads():
        machine.run(1.0, ours=1.0, others=1.5)
        threads.tick()
        assert torch.get_num_threads() == 2
    monkeypatch.setenv("DIFFATR_THREADS", "1")
    with threads.training_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)  # one thread on entry (the tests' setting): never more
    monkeypatch.setenv("DIFFATR_THREADS", "adaptive")
    with threads.training_threads():
        machine.run(1.0, ours=1.0, others=0.0)
        threads.tick()
        assert torch.get_num_threads() == 1


def _train_contrastive(root):
    from diffatr.cache import BackboneSyntheticConfig, make_synthetic_backbone
    from diffatr.contrastive import ContrastiveConfig
    from diffatr.contrastive import train as module

    data = BackboneSyntheticConfig(n_clips=40, captions_per_clip=(2,), audio_dim=24, text_dim=16)
    for split in ("train", "val"):
        make_synthetic_backbone(root / f"{split}.h5", data, split=split)
    cfg = ContrastiveConfig(joint_dim=8, epochs=2, batch_size=16, device="cpu")
    batches = cfg.epochs * (40 * 2 // 16)  # whole batches only

    def run():
        module.train_contrastive(
            root / "train.h5", root / "val.h5", root / "p.pt", cfg, False, lambda _: None
        )

    return module, run, batches


def _train_coattention(root):
    from diffatr.cache import SequenceSyntheticConfig, make_synthetic_sequences
    from diffatr.coattention import CoAttentionConfig
    from diffatr.coattention import train as module

    for split, seed in (("train", 1), ("val", 2)):
        make_synthetic_sequences(root / f"{split}.h5", SequenceSyntheticConfig(n_bags=5, seed=seed))
    cfg = CoAttentionConfig(d_model=16, heads=2, ffn=32, batch_size=8, epochs=2, val_topk=4)
    batches = cfg.epochs * (5 * 2 * 2 // 8 + 1)  # 20 pairs: 8 + 8 + 4 per epoch

    def run():
        module.train_coattention(
            root / "train.h5", root / "val.h5", root / "c.pt", cfg, False, lambda _: None
        )

    return module, run, batches


@pytest.mark.parametrize("trainer", [_train_contrastive, _train_coattention])
def test_phase_1_and_the_coattention_head_follow_the_policy_every_step(
    trainer, machine, monkeypatch, tmp_path
) -> None:
    """The trainers run inside `training_threads` and tick once a step: a competitor that holds
    a core takes a thread away at the next step, and its end gives the thread back."""
    module, run, batches = trainer(tmp_path)
    torch.set_num_threads(2)
    monkeypatch.delenv("DIFFATR_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 0.1, 0.1))  # idle on entry
    others = iter([1.5, 1.5] + [0.0] * 1000)  # cores the others use, look by look
    monkeypatch.setattr(threads.AdaptiveThreads, "others", lambda self: next(others))
    seen = []

    def spy() -> None:
        threads.tick()
        seen.append(torch.get_num_threads())

    monkeypatch.setattr(module, "tick", spy)
    run()
    assert seen[:3] == [1, 1, 2] and set(seen[3:]) == {2}
    assert len(seen) == batches
    assert torch.get_num_threads() == 2 and not threads._active


def test_compiled_kernels_keep_the_entry_count_while_the_policy_runs(machine, monkeypatch):
    """torch.compile'd CPU kernels split reductions by the thread count they were compiled
    for: while the policy may change threads they compile for one thread (inductor's
    cpp.threads), whatever the policy sets; restored afterwards (docs/reproducibility.md)."""
    from torch._inductor import config

    torch.set_num_threads(2)
    monkeypatch.delenv("DIFFATR_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.4, 2.0, 2.0))  # busy: 1 thread
    before = config.cpp.threads
    with threads.training_threads():
        assert torch.get_num_threads() == 1 and config.cpp.threads == 1
        machine.run(1.0, ours=2.0, others=0.0)  # the machine got quiet: 2 threads
        threads.tick()
        assert torch.get_num_threads() == 2 and config.cpp.threads == 1
    assert config.cpp.threads == before and torch.get_num_threads() == 2


def test_ranking_threads_gives_a_core_up_between_blocks_and_compiles_at_the_entry_count(
    machine, monkeypatch
) -> None:
    """Re-ranking's policy: no first guess (the first block, whose call compiles, runs at the
    entry count even on a busy machine), compiled kernels not pinned (they read the count at
    run time), a core given up at the next look, the entry count back on leaving; inside a
    training policy, that policy's."""
    from torch._inductor import config

    torch.set_num_threads(2)
    monkeypatch.delenv("DIFFATR_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.4, 2.0, 2.0))  # busy
    before = config.cpp.threads
    with threads.ranking_threads():
        assert torch.get_num_threads() == 2 and config.cpp.threads == before
        machine.run(1.0, ours=1.0, others=1.5)  # a competitor holds a core
        threads.tick()
        assert torch.get_num_threads() == 1 and config.cpp.threads == before
    assert torch.get_num_threads() == 2 and not threads._active
    with threads.training_threads():  # validation inside training: training's policy
        outer = threads._active[-1]
        with threads.ranking_threads():
            assert threads._active == [outer]
        assert torch.get_num_threads() == 1  # training's first guess, kept
    monkeypatch.setenv("DIFFATR_THREADS", "off")
    with threads.ranking_threads():
        machine.run(1.0, ours=1.0, others=1.5)
        threads.tick()
        assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["adaptve", "0", "-2", "two"])
def test_a_bad_diffatr_threads_is_refused_by_name(value, monkeypatch) -> None:
    """A typo must not silently turn the policy off (it did: anything unknown meant "off")."""
    from diffatr.errors import UserError

    monkeypatch.setenv("DIFFATR_THREADS", value)
    for policy in (threads.training_threads, threads.ranking_threads):
        refused = pytest.raises(UserError, match=f"DIFFATR_THREADS='{value}': use adaptive, off")
        with refused, policy():
            pass


def test_the_cli_refuses_a_bad_diffatr_threads_before_any_work(tmp_path) -> None:
    from click.testing import CliRunner

    from diffatr.cli import main

    missing = tmp_path / "not-read.h5"  # the setting is checked first: no "no such file"
    result = CliRunner().invoke(main, ["evaluate", str(missing)], env={"DIFFATR_THREADS": "x"})
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error: DIFFATR_THREADS='x': use adaptive, off" in result.output
