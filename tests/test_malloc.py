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


CHILD_HEADER = """
import contextlib, ctypes, ctypes.util, os, resource, sys
from diffatr.malloc import retained_memory

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
enter = sys.argv[1:] == ["enter"]
block = retained_memory if enter else contextlib.nullcontext


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def touched(n):
    p = libc.malloc(n); ctypes.memset(p, 1, n); return p
"""

A_STEP = (
    CHILD_HEADER
    + """
def step(n=8, size=16 << 20):  # a training step's blocks: allocated, touched, freed
    blocks = [touched(size) for _ in range(n)]
    for p in reversed(blocks):
        libc.free(p)


def step_faults():
    step(); step()  # glibc's adaptive threshold settles
    before = faults()
    step()
    return faults() - before


outside = step_faults()
with retained_memory():
    inside = step_faults()
print(outside, inside)
"""
)

AFTER_THE_BLOCK = (
    CHILD_HEADER
    + """
with block():
    pass
before = faults()
for _ in range(50):
    libc.free(touched(4 << 20))
print(faults() - before)
"""
)

FREED_AFTER_THE_BLOCK = (
    CHILD_HEADER
    + """
page = os.sysconf("SC_PAGE_SIZE")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page


start = rss()
with block():
    big = touched(256 << 20)  # allocated inside (a loaded cache, a returned array)
    later = [touched(1 << 20) for _ in range(8)]  # and blocks above it in the heap
libc.free(big)  # freed after the block
print((rss() - start) >> 20)
"""
)


def child(script: str, *args: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return [int(x) for x in out.stdout.split()]


@glibc
def test_a_freed_heap_top_is_kept_inside_and_returned_outside() -> None:
    """A step of 8 blocks of 16 MB: outside, glibc gives the 128 MB freed at its heap top back
    (above its trim threshold, 64 MB at most) and the next step faults it in again (32,768
    pages); inside it is kept. (A fresh process: glibc's default depends on its history.)"""
    outside, inside = child(A_STEP)
    assert outside > 20_000
    assert inside < 1000


@glibc
def test_after_the_block_malloc_adapts_as_before() -> None:
    """50 x (malloc + touch + free of 4 MB) after one enter/exit costs what it costs in a
    process that never entered (~1,000-2,000 faults: the first block's pages). Fixed 128 KiB
    thresholds on leaving cost ~51,000: each block mapped and faulted in afresh."""
    (never,) = child(AFTER_THE_BLOCK, "never")
    (entered,) = child(AFTER_THE_BLOCK, "enter")
    assert never < 5000
    assert entered <= never + 1000


@glibc
def test_a_large_array_allocated_inside_goes_back_when_freed_after() -> None:
    """256 MB allocated inside the block, freed after it: its pages go back to the kernel as
    in a process that never entered (they stayed, 263 MB, when the block turned mmap off)."""
    (never,) = child(FREED_AFTER_THE_BLOCK, "never")
    (entered,) = child(FREED_AFTER_THE_BLOCK, "enter")
    assert never < 64
    assert entered <= never + 16


@glibc
def test_malloc_settings_of_the_user_are_left_alone(monkeypatch) -> None:
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with retained_memory() as applied:
        assert not applied
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072")
    with retained_memory() as applied:
        assert not applied


def test_the_head_loads_its_caches_outside_the_block(monkeypatch, tmp_path) -> None:
    """Only the training steps run inside `retained_memory`: arrays loaded before (the caches)
    or kept after are allocated with glibc's own settings."""
    from diffatr import malloc
    from diffatr.cache import SyntheticConfig, make_synthetic
    from diffatr.diffusion_head import RerankConfig
    from diffatr.diffusion_head import train as module

    for split, n in (("train", 24), ("val", 12)):
        make_synthetic(tmp_path / f"{split}.h5", SyntheticConfig(n_clips=n, dim=8), split=split)
    depth = {}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            depth.setdefault(name, malloc._depth[0])
            return fn(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    spy("load_joint", module.load_joint)
    spy("run_epoch_heads", module.run_epoch_heads)
    cfg = HeadConfig(K=4, epochs=1, batch_size=4, compiled=False, device="cpu")
    module.train_head(tmp_path / "train.h5", tmp_path / "val.h5", tmp_path / "h.pt", cfg,
                      RerankConfig(topk=4, compiled=False), False, lambda _: None)  # fmt: skip
    assert depth == {"load_joint": 0, "run_epoch_heads": 1}
