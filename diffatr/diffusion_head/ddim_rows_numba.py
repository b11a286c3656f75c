"""ddim_rows.c's loop in numba, for machines without a C compiler and for `--no-compile`.

Reads and writes nothing. The same arithmetic, row by row, as `ddim_rows.c` (that file states
it): numba ships its own LLVM, so it needs no C or C++ compiler, and compiles once per machine
(~3 s; cached beside this file or in NUMBA_CACHE_DIR). Measured 3x slower than the C (its
sum over 2D is not vectorised), 1.5x faster than the torch.compile'd steps and 5x faster than
eager torch at AudioCaps-test scale (docs/speed.md). One thread per call and no GIL: the
caller splits rows among threads, each row computed alone, so the thread count changes no byte.
"""

import numpy as np

try:  # a dependency of librosa, so installed with diffatr; without it, torch code only
    import numba
except ImportError:  # pragma: no cover
    numba = None

LANES = 16  # fixed partial sums over 2D, as ddim_rows.c's


def _rows(
    r0, r1, QC, KC, idx, VCM, GC, WK, HEp, w2, b2, ks, coef, noise, x_T, out
):  # pragma: no cover (JIT)
    N, W, S, D = idx.shape[1], VCM.shape[1], ks.shape[0], KC.shape[1]
    x = np.empty(N, np.float32)
    qk = np.empty(N, np.float32)
    A = np.empty(N, np.float32)
    x0 = np.empty(N, np.float32)
    HE = np.empty(W, np.float32)
    acc = np.empty(LANES, np.float32)
    zero, one = np.float32(0.0), np.float32(1.0)
    for r in range(r0, r1):
        for j in range(N):
            x[j] = x_T[r, j]
            x0[j] = x_T[r, j]
            c = KC[idx[r, j]]
            acc[:] = zero
            d0 = 0
            while d0 + LANES <= D:
                for lane in range(LANES):
                    acc[lane] += QC[r, d0 + lane] * c[d0 + lane]
                d0 += LANES
            lane = 0
            while d0 < D:
                acc[lane] += QC[r, d0] * c[d0]
                d0 += 1
                lane += 1
            s = zero
            for lane in range(LANES):
                s += acc[lane]
            qk[j] = s
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
            for j in range(N):
                g = GC[idx[r, j]]
                acc[:] = zero
                w0 = 0
                while w0 + LANES <= W:
                    for lane in range(LANES):
                        v = HE[w0 + lane] + g[w0 + lane]
                        acc[lane] += max(v, zero) * w2[w0 + lane]
                    w0 += LANES
                lane = 0
                while w0 < W:
                    v = HE[w0] + g[w0]
                    acc[lane] += max(v, zero) * w2[w0]
                    w0 += 1
                    lane += 1
                s = zero
                for lane in range(LANES):
                    s += acc[lane]
                o = min(max(s + b2 + A[j], -one), one)
                eps = (x[j] - coef[n, 0] * o) / coef[n, 1]
                x0[j] = o
                x[j] = coef[n, 2] * o + coef[n, 3] * eps
                if noise.shape[0] > n and coef[n, 4] > zero:
                    x[j] += coef[n, 4] * noise[n, r, j]
        for j in range(N):
            out[r, j] = x0[j]


kernel = None if numba is None else numba.njit(cache=True, nogil=True)(_rows)
