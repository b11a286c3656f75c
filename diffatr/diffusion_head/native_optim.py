"""The head's optimiser step (clip + AdamW + EMA) in C: `adamw_ema.c`, built by diffatr/native.py.

Reads and writes nothing (the library is built into the compile cache by `diffatr.native`).
optim.py's torch twin, compiled, is the same two passes over memory, but torch.compile costs a
process ~3.5 s of dynamo and inductor before its first step with a warm cache and ~20 s with an
empty one (one graph per thread count), and its step measured 13-19 ms at D = 512 on 2 cores
(docs/training-step.md). The C step is built once per machine in ~0.3 s and loaded in
milliseconds. The arithmetic is optim.py's, float32, in its order; the norm's sum is over the
same fixed partition (`optim.BLOCK` values per block, each summed alone, the blocks in order),
the update elementwise, so the result is the same bytes for any thread count.

Float32, contiguous CPU tensors only; `usable` says when it applies, else optim.py's torch code.
"""

import ctypes
from pathlib import Path

import numpy as np
import torch

from .. import native
from ..device import denormals_flushed

SOURCE = Path(__file__).with_name("adamw_ema.c")
WHAT = "the head's optimiser kernel"

_P, _I = ctypes.c_void_p, ctypes.c_int64
_C = ctypes.c_int
_SUM = [_P, _P, _P, _P, _I, _P, _C, _C]
_UPDATE = [_I] + [_P] * 7 + [_I] + [_P] * 5 + [_C, _C]


def library() -> ctypes.CDLL | None:
    """The built kernel (once per process), or None without a C compiler that builds it."""
    lib = native.load(SOURCE, WHAT, openmp=True)
    if lib is not None and lib.adamw_ema.argtypes is None:
        lib.sum_squares.argtypes, lib.sum_squares.restype = _SUM, None
        lib.adamw_ema.argtypes, lib.adamw_ema.restype = _UPDATE, None
    return lib


def applies(tensors) -> bool:
    """Whether the kernel takes these tensors: float32, contiguous, on the CPU."""
    return all(
        t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors
    )


def usable(tensors) -> bool:
    """Whether the C step applies to these tensors and is built."""
    return applies(tensors) and library() is not None


class Plan:
    """The fixed partition of one set of tensor sizes into the norm's blocks, and the update's
    constants: made once per (sizes, heads, decays)."""

    def __init__(self, sizes: list[int], heads: int, block: int, decays: list[float]):
        bt, bo, bn, bh = [], [], [], []
        for t, n in enumerate(sizes):
            part = n // heads
            for h in range(heads):
                for off in range(0, part, block):
                    bt.append(t), bo.append(h * part + off), bn.append(min(block, part - off))
                    bh.append(h)
        self.heads = heads
        self.block_head = np.array(bh, dtype=np.int64)
        self.bt, self.bo, self.bn = (torch.tensor(x, dtype=torch.int64) for x in (bt, bo, bn))
        self.sizes = torch.tensor(sizes, dtype=torch.int64)
        self.wd = torch.tensor(decays, dtype=torch.float32)


def _pointers(tensors) -> ctypes.Array:
    return (_P * len(tensors))(*(t.data_ptr() for t in tensors))


def step(plan: Plan, tensors, lr, step_size, bc2, max_norm: float, consts) -> None:
    """One clip + AdamW + EMA step in place: tensors = (params, grads, exp_avg, exp_avg_sq,
    ema) lists; lr, step_size, bc2 float32 (heads,); consts as adamw_ema.c's `c`. On torch's
    thread count of the moment (its OpenMP team, where the library was built with OpenMP)."""
    lib, flush, threads = library(), int(denormals_flushed()), torch.get_num_threads()
    params, grads, exp_avg, exp_avg_sq, ema = tensors
    sums = torch.empty(len(plan.bt), dtype=torch.float64)
    tables = [t.data_ptr() for t in (plan.bt, plan.bo, plan.bn)]
    lib.sum_squares(_pointers(grads), *tables, len(plan.bt), sums.data_ptr(), flush, threads)
    # each head's blocks summed in block order (bincount adds in order): fixed
    per_head = np.bincount(plan.block_head, weights=sums.numpy(), minlength=plan.heads)
    norm = torch.from_numpy(per_head).to(torch.float32).sqrt()
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    c = torch.tensor(consts, dtype=torch.float64).to(torch.float32)
    scalars = [t.contiguous() for t in (lr, coef, step_size, bc2, c)]
    lib.adamw_ema(
        len(params), *(_pointers(x) for x in (params, grads, exp_avg, exp_avg_sq, ema)),
        plan.sizes.data_ptr(), plan.wd.data_ptr(), plan.heads,
        *(t.data_ptr() for t in scalars), flush, threads,
    )  # fmt: skip
