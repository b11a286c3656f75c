"""How many threads training and re-ranking use on a machine that other processes may share.

Reads /proc/stat (Linux) between training steps; writes nothing. A training step of the heads
is hundreds of small operators, each an OpenMP parallel region that ends in a barrier. When
another process holds a core, one of our threads is descheduled while its partner waits at
the barrier for it, every region, so a step that takes 12 ms on an idle machine takes many
times that (bench/bench_contention.py measures it). One thread has no partner to wait for.

The policy ("adaptive", the default): inside `training_threads()`, every `INTERVAL` seconds
`tick()` measures how many cores the *other* processes used since the last look (all CPU
time in /proc/stat minus this process's own) and sets torch's thread count to the cores left
(at most the count on entry, at least 1; the first guess, before any step, is the 1-minute load
average); on leaving, the entry count is restored. On an idle machine nothing changes.
DIFFATR_THREADS=off turns it off; DIFFATR_THREADS=N fixes N threads.

The thread count changes no computed byte (docs/reproducibility.md): the training steps' ops
that split one sum across threads were rewritten to a fixed partition (the head's gradient
norm, `diffusion_head/optim.py`; the co-attention head's LayerNorm, `coattention/units.py`),
and torch.compile'd CPU kernels, which split their reductions by the thread count they were
compiled for and, compiled for every core, by the count at run time, are compiled for one
thread while the policy is active (inductor's `cpp.threads`, restored on leaving): a fixed
count above one would keep them waiting at barriers for a descheduled thread (measured 5-7x
slower head steps with 2 on a busy machine). tests/test_threads_determinism.py holds this.

Re-ranking (`ranking_threads()`, every `TopKScores`: the diffusion and co-attention heads,
the baselines) follows the same policy between blocks of queries: the DDIM step is one
OpenMP region with four barriers per call, thousands of calls per command (measured on 2
cores beside a 2-thread competitor, `evaluate --head` at AudioCaps-test scale: 47-68 s with
DIFFATR_THREADS=off, 37-39 s with the policy, 18-20 s quiet; docs/speed.md). The C loop
that now re-ranks a top-k on the CPU (diffusion_head/native_ddim.py) splits a block's rows
among the policy's count of threads, with no barrier until the block ends.
"""

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator

from .errors import UserError

INTERVAL = 0.5  # seconds between looks at the machine's load
MARGIN = 0.3  # cores the others may use before we give one up (background noise)

_active: list["AdaptiveThreads"] = []


def _cpu_seconds() -> float | None:
    """CPU seconds spent by all processes (busy, not idle or iowait), or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class AdaptiveThreads:
    """Sets torch's thread count from the cores the other processes leave free."""

    def __init__(self, max_threads: int, cores: int | None = None, pin: bool = True):
        self.max_threads, self.pin = max_threads, pin
        self.cores = cores or os.cpu_count() or 1
        self.restart()
        self.changes = 0
        self.compiled_threads: int | None = None  # inductor's cpp.threads before pin(); -1 unset

    def pin_compiled(self) -> None:
        """Compiled CPU kernels: compiled for, and run with, one thread whatever the policy sets
        (a no-op until torch.compile is imported: a trainer compiles after its first tick)."""
        config = sys.modules.get("torch._inductor.config")
        if self.pin and config is not None and self.compiled_threads is None:
            self.compiled_threads = config.cpp.threads
            config.cpp.threads = 1

    def unpin_compiled(self) -> None:
        config = sys.modules.get("torch._inductor.config")
        if config is not None and self.compiled_threads is not None:
            config.cpp.threads = self.compiled_threads
        self.compiled_threads = None

    def start(self) -> None:
        """A first guess before any step: the 1-minute load average (our process idle)."""
        import torch

        try:
            load = os.getloadavg()[0]
        except OSError:
            return
        self._set(torch, load)

    def _set(self, torch, others: float) -> None:
        busy = max(0, math.ceil(others - MARGIN))  # cores the others hold
        want = max(1, min(self.max_threads, self.cores - busy))
        if want != torch.get_num_threads():
            torch.set_num_threads(want)
            self.changes += 1

    def others(self) -> float | None:
        """Cores used by other processes since the last call, or None (unknown, too soon)."""
        now, (t0, total0, own0) = time.monotonic(), self.last
        if now - t0 < INTERVAL:  # too soon: /proc/stat not even read (ticks may be frequent)
            return None
        total, own = _cpu_seconds(), _own_seconds()
        if total is None or total0 is None:
            return None
        self.last = (now, total, own)
        return max(0.0, (total - total0) - (own - own0)) / (now - t0)

    def restart(self) -> None:
        """The next measurement counts from now."""
        self.last = (time.monotonic(), _cpu_seconds(), _own_seconds())

    def tick(self) -> None:
        import torch

        self.pin_compiled()
        others = self.others()
        if others is not None:
            self._set(torch, others)


def check_setting() -> None:
    """Refuse a bad DIFFATR_THREADS now (the CLI, before any work)."""
    _mode()


def _mode() -> str:
    """DIFFATR_THREADS: "adaptive" (unset), "off" or a thread count >= 1; anything else refused
    (a typo must not silently turn the policy off)."""
    mode = os.environ.get("DIFFATR_THREADS", "adaptive").strip().lower() or "adaptive"
    if mode in ("adaptive", "off") or (mode.isdigit() and int(mode) > 0):
        return mode
    raise UserError(
        f"DIFFATR_THREADS={os.environ['DIFFATR_THREADS']!r}: use adaptive, off or a number of "
        "threads (1 or more)"
    )


@contextlib.contextmanager
def training_threads() -> Iterator[None]:
    """The thread policy for a training loop (call `tick()` once per step inside)."""
    with _policy(ranking=False):
        yield


@contextlib.contextmanager
def ranking_threads() -> Iterator[None]:
    """The thread policy for re-ranking (call `tick()` between blocks of queries inside).

    Training's policy with two differences. Compiled kernels are not pinned to one thread: the
    re-ranking kernels split no sum across threads (each query's row is one thread's work;
    tests/test_threads_determinism.py compares the scores' bits on 1 and 2 threads), and the
    kernels read the thread count when they run (inductor's `cpp.dynamic_threads`, set by
    `compiling.compile_settings` for re-ranking: one compiled kernel and one cache entry for
    every count; a change of count costs dynamo one re-trace, not a compile). And no first
    guess: the first block runs at the entry count. Inside a training policy (validation) that
    policy rules, untouched.
    """
    with _policy(ranking=True):
        yield


@contextlib.contextmanager
def _policy(ranking: bool) -> Iterator[None]:
    """DIFFATR_THREADS for one loop; the entry thread count (and inductor's) back on leaving."""
    import torch

    if ranking and _active:  # re-ranking inside training: tick() reaches training's policy
        yield
        return
    mode, before = _mode(), torch.get_num_threads()
    policy = None
    if mode.isdigit() and int(mode) > 0:
        torch.set_num_threads(int(mode))  # the user's explicit count
    elif mode == "adaptive" and before > 1:
        policy = AdaptiveThreads(before, pin=not ranking)
        _active.append(policy)
        policy.pin_compiled()
        if not ranking:
            policy.start()
    try:
        yield
    finally:
        if policy is not None:
            _active.remove(policy)
            policy.unpin_compiled()
        torch.set_num_threads(before)


def tick() -> None:
    """Between two training steps: adjust the thread count if a policy is active."""
    if _active:
        _active[-1].tick()


def restart() -> None:
    """The active policy's next measurement starts now: after compiling, whose C++ compiler
    runs in child processes that /proc/stat counts as other users of the machine (a cold first
    call of `evaluate --head` dropped to one thread for that and compiled its kernels again
    for one thread, measured 33 s instead of 25 s)."""
    if _active:
        _active[-1].restart()


def policy():
    """For benchmarks: an object whose `step_started()` applies the policy of DIFFATR_THREADS
    for the whole process (no context to leave)."""
    import torch

    mode = _mode()
    if mode == "adaptive" and torch.get_num_threads() > 1:
        p = AdaptiveThreads(torch.get_num_threads())
        p.pin_compiled()
        p.start()
        p.step_started = p.tick
        return p
    if mode.isdigit() and int(mode) > 0:
        torch.set_num_threads(int(mode))

    class _Off:
        changes = 0

        def step_started(self) -> None:
            pass

    return _Off()
