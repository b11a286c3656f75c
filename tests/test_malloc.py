"""diffatr.malloc: inside `retained_memory` a training step reuses the pages of the last one."""

import resource
import subprocess
import sys

import pytest
import torch

from diffatr.diffusion_head import HeadConfig
from diffatr.diffusion_head.trainer import HeadTrainer
from diffatr.malloc import _mallopt, retained_memory

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or _mallopt() is None, reason="glibc's malloc only"
)


def faults_per_step(trainer: HeadTrainer, data: list, steps: int = 3) -> int:
    """The fewest minor page faults of a training step, over `steps` after two to settle
    (the heap grows to its high-water mark first)."""
    counts = []
    for _ in range(2 + steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        trainer.step_heads(data)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return min(counts[2:])


@glibc
def test_stacked_training_steps_reuse_their_pages() -> None:
    """Three stacked heads (eager, D 512; ~100 MB of buffers a step): inside the block a step
    faults (almost) no page in. glibc's default depends on its allocation history (its
    thresholds adapt): bench/bench_stacking.py measured 8,600 faults a step compiled."""
    trainer = HeadTrainer(512, HeadConfig(compiled=False), total_steps=100, seeds=range(3))
    g = [torch.Generator().manual_seed(h) for h in range(3)]
    data = [(torch.randn(32, 512), torch.randn(32, 512), g[h]) for h in range(3)]
    with retained_memory() as applied:
        assert applied
        with retained_memory() as nested:  # nested blocks keep it
            assert nested
        retained = faults_per_step(trainer, data)
    assert retained < 1000  # of the ~25,000 pages a step's buffers span


def test_turned_off_by_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("DIFFATR_MALLOC", "off")
    with retained_memory() as applied:
        assert not applied


REALLOCATION = """
import ctypes, ctypes.util, resource, sys
from diffatr.malloc import retained_memory

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]


def faults(n=64 << 20):  # malloc and touch n bytes again right after freeing them
    p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(p)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(n); ctypes.memset(p, 1, n)
    count = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.free(p)
    return count


outside = faults()
with retained_memory():
    inside = faults()
print(outside, inside)
"""


@glibc
def test_a_freed_large_block_is_kept_inside_and_returned_outside() -> None:
    """64 MB is above glibc's largest mmap threshold (32 MB): in a fresh process it is mapped
    afresh and faulted in page by page (16,384 pages) each time; inside the block the heap keeps
    it. (A fresh process: glibc's default depends on the allocation history.)"""
    out = subprocess.run([sys.executable, "-c", REALLOCATION], capture_output=True, text=True,
                         check=True)  # fmt: skip
    outside, inside = map(int, out.stdout.split())
    assert outside > 10_000
    assert inside < 1000
