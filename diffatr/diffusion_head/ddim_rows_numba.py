"""ddim_rows.c's loop in numba, for machines without a C compiler and for `--no-compile`.

Reads and writes nothing. The same arithmetic, row by row and sum by sum, as `ddim_rows.c`
(that file states it), so the same bytes: numba ships its own LLVM, so it needs no C or C++
compiler, and compiles once per machine (~3 s; cached beside this file or in NUMBA_CACHE_DIR).
One thread per call and no GIL: the caller splits rows among threads, each row computed alone,
so the thread count changes no byte.

The sums over D and 2D keep the C loop's LANES fixed partial sums (lane = index mod LANES, in
increasing index, then lanes 0..LANES-1 added in order), but run across a row's candidates j:
acc[lane, j] += term(w, j) with j innermost. numba leaves LLVM's SLP vectoriser off, so the C
loop's shape (16 scalar lanes per pair) stays scalar here (3x the C loop, measured); the loop
over j is a plain elementwise loop that LLVM's loop vectoriser takes, with no reassociation.
For that a row's GC rows are gathered once, transposed (GT: 2D x k, 128 KB at k = 32, D = 512),
and read at every step. Measured 1.2-1.4x the C loop (from 3x; bench/bench_commands.py,
docs/speed.md).
"""

import numpy as np

try:  # a dependency of librosa, so installed with diffatr; without it, torch code only
    import numba
except ImportError:  # pragma: no cover
    numba = None

LANES = 16  # fixed partial sums over D and 2D, as ddim_rows.c's


def _rows(
    r0, r1, QC, KC, idx, VCM, GC, WK, HEp, w2, b2, ks, coef, noise, x_T, out
):  # pragma: no cover (JIT)
    N, W, S, D = idx.shape[1], VCM.shape[1], ks.shape[0], KC.shape[1]
    x = np.empty(N, np.float32)
    qk = np.empty(N, np.float32)
    A = np.empty(N, np.float32)
    x0 = np.empty(N, np.float32)
    logit = np.empty(N, np.float32)
    HE = np.empty(W, np.float32)
    GT = np.empty((W, N), np.float32)  # GC[idx[r, j], w] at [w, j]
    acc = np.empty((LANES, N), np.float32)  # the partial sums of every candidate j
    zero, one = np.float32(0.0), np.float32(1.0)
    for r in range(r0, r1):
        acc[:] = zero
        for j in range(N):  # QK_j = QC[r] . KC[idx[r, j]]
            c = KC[idx[r, j]]
            for d in range(D):
                acc[d % LANES, j] += QC[r, d] * c[d]
        _lane_sums(acc, qk)
        for j in range(N):
            g = GC[idx[r, j]]
            for w in range(W):
                GT[w, j] = g[w]
            x[j] = x_T[r, j]
            x0[j] = x_T[r, j]
        for n in range(S):
            k = ks[n]
            m = np.float32(-np.inf)
            for j in range(N):
                A[j] = qk[j] + WK[k, idx[r, j]] + x[j]
                m = max(m, A[j])
            z = zero
            for j in range(N):
                A[j] = np.exp(A[j] - m)
                z += A[j]
            for w in range(W):
                HE[w] = HEp[k, w]
            for j in range(N):
                A[j] = A[j] / z
                a, v = A[j], VCM[idx[r, j]]
                for w in range(W):
                    HE[w] += a * v[w]
            acc[:] = zero
            for w in range(W):  # w2 . relu(HE + GC[idx[r, j]]) of every j
                h, u, lane = HE[w], w2[w], w % LANES
                for j in range(N):
                    acc[lane, j] += max(h + GT[w, j], zero) * u
            _lane_sums(acc, logit)
            for j in range(N):
                o = min(max(logit[j] + b2 + A[j], -one), one)
                eps = (x[j] - coef[n, 0] * o) / coef[n, 1]
                x0[j] = o
                x[j] = coef[n, 2] * o + coef[n, 3] * eps
                if noise.shape[0] > n and coef[n, 4] > zero:
                    x[j] += coef[n, 4] * noise[n, r, j]
        for j in range(N):
            out[r, j] = x0[j]


def _lane_sums(acc, s):  # pragma: no cover (JIT)
    """s[j] = the LANES partial sums acc[:, j] added in lane order from 0, as ddim_rows.c."""
    s[:] = np.float32(0.0)
    for lane in range(LANES):
        for j in range(s.shape[0]):
            s[j] += acc[lane, j]


if numba is None:  # pragma: no cover
    kernel = None
else:
    _lane_sums = numba.njit(cache=True, nogil=True)(_lane_sums)
    kernel = numba.njit(cache=True, nogil=True)(_rows)
