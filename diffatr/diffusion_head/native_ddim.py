"""DDIM over each query's top-k in one native call per block: `ddim_rows.c`, built by native.py.

Reads and writes nothing (the library is built into the compile cache by `diffatr.native`).
fused.py's `GalleryDenoiser.sample` runs a block of queries step by step: one compiled call per
step, every step reading the block's gathered candidates (2 x b x k x 2D floats, 67 MB at
b = 256) from memory, plus torch.compile's ~4-5 s per process of dynamo and inductor before
the first call. The C loop takes one query at a time through all its steps, its candidates
read from the gallery's constants by index (no gather) and kept in the core's cache: measured
at AudioCaps-test scale (4,785 queries, top-32, 50 steps, D = 512, 2 cores) 1.7 s against
7.6 s for the compiled steps (docs/speed.md). numba, which the evaluation's counting kernel
uses, runs the same loop, the same bytes, 1.2-1.4x the C (ddim_rows_numba.py says how).

Rows are split among torch's thread count of the moment (the re-ranking thread policy), each
row computed alone in a fixed order, so the result is the same bytes for any count
(tests/test_native_ddim.py). Float32 CPU tensors only. `backend` picks the loop: the C one
where compiled code is allowed and a C compiler builds it, else its numba twin
(ddim_rows_numba.py, also `--no-compile`'s), else None: the torch code (fused.py, the loops'
oracle) serves the rest.
"""

import ctypes
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .. import native
from ..device import denormals_flushed
from . import ddim_rows_numba
from .ddim import StepCoefficients

SOURCE = Path(__file__).with_name("ddim_rows.c")
WHAT = "the head's DDIM kernel"

_P, _I = ctypes.c_void_p, ctypes.c_int64
_ARGTYPES = [_I] * 8 + [_P] * 8 + [ctypes.c_float, _P, _P, _P, _P, _P, ctypes.c_int]


def library() -> ctypes.CDLL | None:
    """The built kernel (once per process), or None without a C compiler that builds it."""
    lib = native.load(SOURCE, WHAT)
    if lib is not None and lib.ddim_rows.argtypes is None:
        lib.ddim_rows.argtypes, lib.ddim_rows.restype = _ARGTYPES, ctypes.c_int
    return lib


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the C kernel applies to these tensors (float32 on the CPU) and is built."""
    return _applies(tensors) and library() is not None


def backend(compiled: bool, *tensors: torch.Tensor) -> str | None:
    """Which loop runs DDIM over these tensors' gathered candidates: "c" (compiled code allowed
    and a C compiler built it), "numba" (no C compiler, or `--no-compile`: numba needs none),
    or None (not float32 on the CPU, or neither available: fused.py's torch steps)."""
    if compiled and usable(*tensors):
        return "c"
    if ddim_rows_numba.kernel is not None and _applies(tensors):
        return "numba"
    return None


def _applies(tensors) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def ddim_rows(
    QC: torch.Tensor,
    KC: torch.Tensor,
    idx: torch.Tensor,
    VCM: torch.Tensor,
    GC: torch.Tensor,
    WK: torch.Tensor,
    HEp: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    coefficients: list[tuple[int, StepCoefficients]],
    x_T: torch.Tensor,
    noise: torch.Tensor | None = None,
    loop: str = "c",
) -> torch.Tensor:
    """The final x0_hat (b, k) of DDIM over each row's candidates idx (b, k): QC (b, D) and KC
    (Nc, D) give the step-free attention logits QC[r] . KC[idx[r, j]], VCM and GC (Nc, 2D),
    WK (K, Nc), HEp (K, 2D), w2 (2D,), b2 a scalar, noise (steps, b, k) when eta > 0
    (ddim_rows.c states the arithmetic); `loop` "c" or "numba" (`backend`)."""
    b, k = idx.shape
    Nc, W = VCM.shape
    ks = torch.tensor([step for step, _ in coefficients], dtype=torch.int64)
    coef = torch.tensor([list(c) for _, c in coefficients], dtype=torch.float32).reshape(-1, 5)
    if noise is not None and (len(noise) == 0 or all(c.sigma == 0 for _, c in coefficients)):
        noise = None
    arrays = [QC, KC, idx.to(torch.int64), VCM, GC, WK, HEp, w2]
    arrays = [t.contiguous() for t in arrays]
    tail = [t.contiguous() for t in (ks, coef)]
    noise = None if noise is None else noise.contiguous()
    x_T = x_T.contiguous()
    out = torch.empty(b, k, dtype=torch.float32)
    flush = int(denormals_flushed())

    if loop == "numba":
        arrays_np = [t.numpy() for t in arrays] + [np.float32(b2)] + [t.numpy() for t in tail]
        none = np.zeros((0, 1, 1), np.float32)
        tail_np = [none if noise is None else noise.numpy(), x_T.numpy(), out.numpy()]

        def rows(r0: int, r1: int) -> None:
            ddim_rows_numba.kernel(r0, r1, *arrays_np, *tail_np)

        return _split(rows, b, out)
    lib = library()

    def rows(r0: int, r1: int) -> None:
        status = lib.ddim_rows(
            r0, r1, b, k, W, Nc, len(coefficients), KC.shape[1],
            *(t.data_ptr() for t in arrays), float(b2),
            *(t.data_ptr() for t in tail), None if noise is None else noise.data_ptr(),
            x_T.data_ptr(), out.data_ptr(), flush,
        )  # fmt: skip
        if status != 0:
            raise MemoryError(f"{WHAT}: out of memory for a row's {W} floats")

    return _split(rows, b, out)


def _split(rows, b: int, out: torch.Tensor) -> torch.Tensor:
    """rows(r0, r1) over b rows split among torch's thread count of the moment; out."""
    parts = max(1, min(torch.get_num_threads(), b))
    bounds = [(b * p // parts, b * (p + 1) // parts) for p in range(parts)]
    if parts == 1:
        rows(0, b)
    else:  # ctypes and numba's nogil let go of the GIL: each thread runs its rows natively
        with ThreadPoolExecutor(parts) as pool:
            for future in [pool.submit(rows, r0, r1) for r0, r1 in bounds]:
                future.result()
    return out
