"""The per-block counts of joint_ranks.py's one pass, in one read of the block.

Reads a block of similarity rows (b, Na) and per-row / per-column thresholds; writes nothing.
For each row r, with its ground-truth score s[r], and each of `SLOTS` thresholds per column
(lo[g], hi[g], g = 0 .. SLOTS - 1):
    higher[r] = #{c: B[r, c] > s[r]}        equal[r] = #{c: B[r, c] == s[r]}
    above[g, c] = #{r: B[r, c] > hi[g, c]}  atleast[g, c] = #{r: B[r, c] >= lo[g, c]}
all int32. Eager torch compares the whole block 2 + 2 * SLOTS times (a bool mask each); on the
CPU a numba kernel (one thread) does every comparison while a tile of columns is in cache: one
read of memory instead of twelve. It is the fast path for float32/float64 blocks on the CPU;
the torch code (`eager_counts`) serves other devices and dtypes and is the kernel's oracle.
"""

import numpy as np
import torch

try:  # a dependency of librosa, so installed with diffatr; without it, eager torch only
    import numba
except ImportError:  # pragma: no cover
    numba = None

SLOTS = 5  # thresholds per column in one call: Clotho's 5 captions per clip
TILE = 256  # columns whose thresholds and counts stay in L1 while every row passes over them


def eager_counts(block: torch.Tensor, s: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """(higher (b,), equal (b,), above (SLOTS, Na), atleast (SLOTS, Na)) for block (b, Na),
    s (b,), lo and hi (SLOTS, Na), with torch ops on any device."""
    above = torch.stack([(block > hi[g]).sum(0, dtype=torch.int32) for g in range(len(hi))])
    atleast = torch.stack([(block >= lo[g]).sum(0, dtype=torch.int32) for g in range(len(lo))])
    higher = (block > s[:, None]).sum(1, dtype=torch.int32)
    equal = (block == s[:, None]).sum(1, dtype=torch.int32)
    return higher, equal, above, atleast


def block_counts(block: torch.Tensor, s: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
    """`eager_counts`, by the numba kernel where it applies (a CPU float32/float64 block)."""
    if numba is None or block.device.type != "cpu" or block.dtype not in _NUMPY:
        return eager_counts(block, s, lo, hi)
    b, na = block.shape
    higher = np.zeros(b, np.int32)
    equal = np.zeros(b, np.int32)
    above = np.zeros((len(hi), na), np.int32)
    atleast = np.zeros((len(lo), na), np.int32)
    arrays = [x.to(block.dtype).contiguous().numpy() for x in (block, s, lo, hi)]
    _kernel(*arrays, higher, equal, above, atleast)
    return tuple(torch.from_numpy(x) for x in (higher, equal, above, atleast))


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def _counts_kernel(block, s, lo, hi, higher, equal, above, atleast):  # pragma: no cover (JIT)
    b, na = block.shape
    for t0 in range(0, na, TILE):
        t1 = min(na, t0 + TILE)
        for r in range(b):
            row = block[r, t0:t1]
            sr = s[r]
            gt = np.int32(0)
            eq = np.int32(0)
            for c in range(row.shape[0]):
                gt += np.int32(row[c] > sr)
                eq += np.int32(row[c] == sr)
            higher[r] += gt
            equal[r] += eq
            for g in range(lo.shape[0]):  # contiguous inner loops: vectorised compares
                h = hi[g, t0:t1]
                low = lo[g, t0:t1]
                up = above[g, t0:t1]
                least = atleast[g, t0:t1]
                for c in range(row.shape[0]):
                    up[c] += np.int32(row[c] > h[c])
                    least[c] += np.int32(row[c] >= low[c])


if numba is not None:
    # One thread: a parallel numba region leaves its own OpenMP pool spinning beside torch's,
    # which slowed the next block's matrix product more than the second thread saved here.
    # cache: compiled once per machine (a few seconds), then loaded from __pycache__.
    _kernel = numba.njit(cache=True, nogil=True)(_counts_kernel)
