"""Keep freed memory in the process while training, so each step reuses the last step's pages.

Reads and writes nothing; changes glibc's malloc settings (Linux; elsewhere it does nothing).
A training step of the heads frees its gradients and activations and allocates them again at
the next step. glibc gives the free top of its heap back to the kernel once it exceeds the
trim threshold (twice its dynamic mmap threshold, at most 64 MB) and maps blocks above the mmap
threshold afresh, so the next step page-faults them in again, zeroed by the kernel: measured
with three stacked heads (bench/bench_stacking.py) ~3,000-43,000 minor faults per step. Inside
`retained_memory()` the heap is not trimmed and blocks up to 32 MB come from it.

On leaving, malloc is left as it would be without the block, as far as glibc allows: setting
any threshold switches glibc's adaptation off for good (`mp_.no_dyn_threshold`), so the block
leaves the values that adaptation reaches and never leaves (mmap threshold 32 MB, trim 64 MB:
where a process is once it has freed one mapped 32 MB block, as training does by itself), and
`malloc_trim` returns what the block kept. Blocks above 32 MB are mapped inside too, so an array
allocated inside and freed after goes back to the kernel as it would have. Where the user set
malloc's own variables (MALLOC_*_ or GLIBC_TUNABLES glibc.malloc.*), or DIFFATR_MALLOC=off,
malloc is left alone. docs/reproducibility.md says what this changes.
"""

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
CEILING = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)  # glibc's DEFAULT_MMAP_THRESHOLD_MAX
RETAIN = {M_TRIM_THRESHOLD: (1 << 31) - 1, M_MMAP_THRESHOLD: CEILING}
# glibc's own adaptive thresholds at their ceiling: mmap threshold 32 MB, trim twice that
ADAPTED = {M_MMAP_THRESHOLD: CEILING, M_TRIM_THRESHOLD: 2 * CEILING}
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_")  # fmt: skip


def _user_set_malloc() -> bool:
    """Whether the environment set glibc's thresholds itself (then they are the user's)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(os.environ.get(name) for name in USER_SETTINGS) or "glibc.malloc." in tunables


def _libc():
    """glibc, or None (another C library, another system, turned off, or set by the user)."""
    if os.environ.get("DIFFATR_MALLOC", "").strip().lower() == "off" or _user_set_malloc():
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt does nothing)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def _mallopt():
    """glibc's `mallopt`, or None where `retained_memory` leaves malloc alone."""
    libc = _libc()
    return None if libc is None else libc.mallopt


_depth = [0]


@contextlib.contextmanager
def retained_memory() -> Iterator[bool]:
    """Inside the block, freed memory stays in the process; yields whether that applies.
    Nested blocks keep it until the outermost one ends."""
    libc = _libc()
    applied = libc is not None
    if applied and _depth[0] == 0:
        applied = all(libc.mallopt(param, value) == 1 for param, value in RETAIN.items())
    _depth[0] += 1
    try:
        yield applied
    finally:
        _depth[0] -= 1
        if libc is not None and _depth[0] == 0:
            for param, value in ADAPTED.items():
                libc.mallopt(param, value)
            libc.malloc_trim(0)  # what the block kept goes back now, not at some later free
