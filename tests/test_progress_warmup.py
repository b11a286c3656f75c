"""Progress that tells the truth through a warm-up (diffatr/progress.py, diffatr/compiling.py):
rates and time left count from the end of the first step (and of any announced compile), a
line shows no rate before one exists, and a compiled function's first call is announced on an
open display, once per process, as compiled or as loaded from the cache."""

import io

import pytest

from diffatr import compiling, progress
from diffatr.progress import Progress, note, note_warmup


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_slow_first_step_does_not_set_the_rate() -> None:
    log, clock = io.StringIO(), Clock()
    bar = Progress(total=250, desc="epoch 1/5", unit="batch", file=log, clock=clock)
    clock.t += 40.0  # the first batch compiles: 40 s
    bar.update(1)
    clock.t += 1.0
    bar.update(1)
    clock.t += 29.0  # 29 more batches at one a second
    bar.update(29)
    bar.close()
    lines = log.getvalue().splitlines()
    # after the first batch: no rate yet; then 30 batches in 30 s: 1 batch/s and 219 s left,
    # not the 0.44 batch/s and 8m14s that counting the compile would give
    assert lines[0] == "epoch 1/5: 1/250 batch (0%)"
    assert lines[1] == "epoch 1/5: 31/250 batch (12%), 1 batch/s, 3m39s left"
    assert lines[2] == "epoch 1/5: 31/250 batch in 1m10s, 0.443 batch/s"  # the whole truth


def test_no_rate_before_a_step_after_the_warmup() -> None:
    log, clock = io.StringIO(), Clock()
    bar = Progress(total=10, desc="rank", unit="query", file=log, clock=clock)
    clock.t += 31.0
    bar.update(1)  # printed at once (31 s since the start): one step, no rate yet
    assert log.getvalue() == "rank: 1/10 query (10%)\n"
    clock.t += 2.0
    note_warmup()  # e.g. a kernel compiled: the rate counts from here
    clock.t += 30.0
    bar.update(3)
    assert log.getvalue().splitlines()[-1] == "rank: 4/10 query (40%), 0.1 query/s, 1m00s left"
    bar.close()


def test_first_call_is_announced_once_on_an_open_display(monkeypatch) -> None:
    log = io.StringIO()
    misses = iter([0, 0, 0, 1])  # the quiet call compiles nothing, the first "k" one graph
    monkeypatch.setattr(compiling, "_graph_counts", lambda: (next(misses), 0))
    monkeypatch.setattr(compiling, "_CALLED", set())
    note("nothing is open: not shown")
    compiling.first_call("quiet", "nothing", lambda: None)  # no display: silent
    with Progress(total=2, unit="query", file=log) as bar:
        assert compiling.first_call("k", "the test's kernels", lambda x: x + 1, 1) == 2
        assert compiling.first_call("k", "the test's kernels", lambda x: x + 2, 1) == 3
        bar.update(2)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("compiling the test's kernels (on first use")
    assert lines[1].startswith("the test's kernels: compiled in ")
    assert len(lines) == 3 and lines[2].startswith("2/2 query in")
    assert "nothing" not in log.getvalue()


def test_a_warm_cache_is_reported_as_loaded(monkeypatch) -> None:
    log = io.StringIO()
    hits = iter([3, 4])  # one graph loaded from inductor's on-disk cache
    monkeypatch.setattr(compiling, "_graph_counts", lambda: (0, next(hits)))
    monkeypatch.setattr(compiling, "_CALLED", set())
    with Progress(total=1, unit="query", file=log, leave=False):
        compiling.first_call("k", "the kernels", lambda: None)
    assert "the kernels: loaded from the compile cache in " in log.getvalue()


def test_a_call_that_compiled_nothing_does_not_claim_a_cache_hit(monkeypatch) -> None:
    """A fast path that fell back to eager code inside the call (its own warning says why)."""
    log = io.StringIO()
    monkeypatch.setattr(compiling, "_graph_counts", lambda: (2, 5))
    monkeypatch.setattr(compiling, "_CALLED", set())
    with Progress(total=1, unit="query", file=log, leave=False):
        compiling.first_call("k", "the kernels", lambda: None)
    assert log.getvalue().splitlines()[1].startswith("the kernels: nothing compiled in ")


def test_a_note_skips_a_display_left_open_on_a_closed_stream() -> None:
    outer, inner = io.StringIO(), io.StringIO()
    with Progress(total=1, unit="query", file=outer, leave=False):
        bar = Progress(total=1, unit="query", file=inner)  # never closed, as after an exception
        inner.close()
        note("compiling the kernels")  # no "I/O operation on closed file"
        assert outer.getvalue() == "compiling the kernels\n"
        bar.closed = True  # nothing left to print into the closed stream
        progress._ACTIVE.remove(bar)


@pytest.mark.usefixtures("torch_loss", "torch_optimiser")  # the torch.compile'd step
def test_the_head_training_steps_first_compiled_step_is_announced(monkeypatch) -> None:
    """HeadTrainer wraps its first full compiled step in first_call; the compiled functions are
    swapped for their eager originals here so that nothing compiles in the test."""
    import torch

    from diffatr.diffusion_head import optim, stacked
    from diffatr.diffusion_head.config import HeadConfig
    from diffatr.diffusion_head.trainer import HeadTrainer

    monkeypatch.setattr(stacked, "_COMPILED", [stacked.group_losses])
    monkeypatch.setattr(optim, "_COMPILED", [optim._sum_squares, optim._update])
    monkeypatch.setattr(compiling, "_CALLED", set())
    trainer = HeadTrainer(16, HeadConfig(batch_size=4, K=5, compiled=True), total_steps=4)
    g, log = torch.Generator().manual_seed(0), io.StringIO()
    with Progress(total=3, unit="batch", file=log) as bar:
        for B in (4, 4, 3):  # two full batches, then a short one (eager, never announced)
            trainer.step(torch.randn(B, 16), torch.randn(B, 16), g)
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("compiling the head's training step (on first use")
    assert lines[1].startswith("the head's training step: nothing compiled in ")
    assert sum("training step" in line for line in lines) == 2


def test_the_written_out_training_step_announces_no_compile(monkeypatch) -> None:
    """On the CPU with a C compiler the step runs written out and in C (native_loss.py,
    native_optim.py): nothing is compiled or loaded, so nothing is announced."""
    import torch

    from diffatr.diffusion_head import native_loss, native_optim
    from diffatr.diffusion_head.config import HeadConfig
    from diffatr.diffusion_head.trainer import HeadTrainer

    if native_loss.library() is None or native_optim.library() is None:
        pytest.skip("no C compiler")
    monkeypatch.setattr(compiling, "_CALLED", set())
    trainer = HeadTrainer(16, HeadConfig(batch_size=4, K=5, compiled=True), total_steps=2)
    g, log = torch.Generator().manual_seed(0), io.StringIO()
    with Progress(total=2, unit="batch", file=log) as bar:
        for _ in range(2):
            trainer.step(torch.randn(4, 16), torch.randn(4, 16), g)
            bar.update(1)
    assert not [line for line in log.getvalue().splitlines() if "training step" in line]
