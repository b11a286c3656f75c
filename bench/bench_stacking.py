"""Benchmark: where a stacked head's step goes, against a head alone, on one thread.

Trainers of 1, 2 and 3 heads (HeadTrainer with seeds; D 512, batch 32, compiled) step in turn
in one process (round robin, so a noisy machine slows each alike: per round each trainer one
untimed step to warm the caches, then BURST timed steps), timed in CPU time of the one
thread (time.thread_time: what other processes do costs wall time, not this). Each step splits
into forward + backward (`losses_and_grads`) and the optimiser (clip + AdamW + EMA), with the
minor page faults and system time per step, with and without `diffatr.malloc.retained_memory`.

    python bench/bench_stacking.py --rounds 8
"""

import argparse
import contextlib
import os
import resource
import time

import torch

from diffatr.device import flush_denormal
from diffatr.diffusion_head import HeadConfig
from diffatr.diffusion_head.trainer import HeadTrainer
from diffatr.malloc import retained_memory

BURST = 3  # timed steps in a row per trainer and round


class Timed:
    """One trainer of `heads` stacked heads and its accumulated per-phase costs."""

    def __init__(self, heads: int):
        self.heads = heads
        self.trainer = HeadTrainer(512, HeadConfig(), total_steps=100_000, seeds=range(heads))
        g = [torch.Generator().manual_seed(h) for h in range(heads)]
        self.data = [(torch.randn(32, 512), torch.randn(32, 512), g[h]) for h in range(heads)]
        self.sums = {"fwd+bwd": 0.0, "optimiser": 0.0, "faults": 0.0, "system": 0.0}
        self.n = 0

    def step(self, timed: bool = True) -> None:
        tr, H = self.trainer, self.heads
        draws = [tr._draws(32, g) for _, _, g in self.data]
        k, eps = (torch.cat(x) for x in zip(*draws, strict=True))
        q = torch.stack([x for t, a, _ in self.data for x in (t, a)])  # (2H, B, D)
        c = torch.stack([x for t, a, _ in self.data for x in (a, t)])
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
        tr.loss_fn.losses_and_grads(
            tr.pair.params, tr.pair.step_table, q, c, k, eps, tr.abar, 100.0
        )
        t1 = time.thread_time()
        tr.opt.step([1e-5] * H)
        t2, r1 = time.thread_time(), resource.getrusage(resource.RUSAGE_SELF)
        if timed:
            self.n += 1
            self.sums["fwd+bwd"] += t1 - t0
            self.sums["optimiser"] += t2 - t1
            self.sums["faults"] += r1.ru_minflt - r0.ru_minflt
            self.sums["system"] += r1.ru_stime - r0.ru_stime

    def row(self) -> str:
        s, n, H = self.sums, self.n, self.heads
        fb, opt = 1000 * s["fwd+bwd"] / n / H, 1000 * s["optimiser"] / n / H
        return (f"{H:>5} {fb:10.1f} {opt:10.1f} {fb + opt:9.1f} {s['faults'] / n:9.0f} "
                f"{1000 * s['system'] / n:8.1f}")  # fmt: skip


def run(heads: list[int], rounds: int, retain: bool) -> None:
    memory = retained_memory() if retain else contextlib.nullcontext(False)
    with flush_denormal(), memory as applied:
        timed = [Timed(h) for h in heads]
        for t in timed:  # compile and fault in outside the timing
            for _ in range(3):
                t.step(timed=False)
        for _ in range(rounds):
            for t in timed:  # a burst: its first step refills the caches, as training's would
                t.step(timed=False)
                for _ in range(BURST):
                    t.step()
    label = "retained memory" if applied else "glibc's default malloc"
    print(f"{label}: ms of CPU per head and step; faults and system ms per step")
    print(
        f"{'heads':>5} {'fwd+bwd':>10} {'optimiser':>10} {'total':>9} {'faults':>9} {'sys ms':>8}"
    )
    for t in timed:
        print(t.row())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="bursts per trainer")
    parser.add_argument("--heads", default="1,2,3", help="stacked head counts, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(1)  # CPU time of one thread: robust to a shared machine
    heads = [int(h) for h in args.heads.split(",")]
    print(f"torch {torch.__version__}, 1 thread; load average at start {os.getloadavg()}")
    for retain in (False, True):
        run(heads, args.rounds, retain)
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
