"""Keep freed memory in the process while training, so each step reuses the last step's pages.

Reads and writes nothing; changes glibc's malloc settings (Linux; elsewhere it does nothing).
A training step of the heads frees its gradients and activations and allocates them again at
the next step. glibc hands blocks above its mmap threshold (dynamic, at most 32 MB) to the
kernel on free and gives back the heap's free top above its trim threshold (twice the mmap
threshold), so the next step page-faults them in again, zeroed by the kernel: measured with
three stacked heads (bench/bench_stacking.py) ~3,000-25,000 minor faults and up to 60 ms of
system time per step. Inside `retained_memory()` nothing is given back (no mmap'd blocks, no
trim): a step's memory comes from pages the process already holds. On leaving, glibc's
initial settings (128 KiB thresholds, mmap allowed) are restored and the next free trims.
DIFFATR_MALLOC=off leaves malloc alone.
"""

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's malloc.h
INITIAL = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}
RETAIN = {M_TRIM_THRESHOLD: (1 << 31) - 1, M_MMAP_THRESHOLD: 32 << 20, M_MMAP_MAX: 0}


def _mallopt():
    """glibc's `mallopt`, or None (another C library, another system, or turned off)."""
    if os.environ.get("DIFFATR_MALLOC", "").strip().lower() == "off":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt does nothing)
        return libc.mallopt
    except (OSError, AttributeError):
        return None


_depth = [0]


@contextlib.contextmanager
def retained_memory() -> Iterator[bool]:
    """Inside the block, freed memory stays in the process; yields whether that applies.
    Nested blocks keep it until the outermost one ends."""
    mallopt = _mallopt()
    applied = mallopt is not None
    if applied and _depth[0] == 0:
        applied = all(mallopt(param, value) == 1 for param, value in RETAIN.items())
    _depth[0] += 1
    try:
        yield applied
    finally:
        _depth[0] -= 1
        if mallopt is not None and _depth[0] == 0:
            for param, value in INITIAL.items():
                mallopt(param, value)
