/* DDIM over each query's top-k candidates, one query row at a time (native_ddim.py).

   fused.py's `GalleryDenoiser.sample` for gathered candidates, with its notation: for every
   row r of a block and every step n (k = ks[n], c = coef[n]):

       A      = softmax_j(QK_j + WK[k, idx[r, j]] + x[j]),   QK_j = QC[r] . KC[idx[r, j]]
       HE     = sum_j A_j VCM[idx[r, j]] + HEp[k]                       (2D,)
       x0_j   = clamp(w2 . relu(HE + GC[idx[r, j]]) + b2 + A_j, -1, 1)
       eps_j  = (x_j - c[0] x0_j) / c[1]
       x_j   <- c[2] x0_j + c[3] eps_j (+ c[4] noise[n, r, j] when c[4] > 0)

   and out[r] = the last x0. A row's candidates (2 x k x 2D floats, 256 KB at k = 32,
   D = 512) stay in the core's cache for all its steps, where the step-by-step torch code
   reads the whole block from memory at every step. Each row is computed alone and in a fixed
   order, so splitting rows among threads changes no bit; the sum over 2D uses LANES fixed
   partial sums, the same on any vector width. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "native_common.h"

/* a . b over D, in LANES fixed partial sums */
static float dot(const float *restrict a, const float *restrict b, int64_t D) {
    float acc[LANES] = {0};
    int64_t d = 0;
    for (; d + LANES <= D; d += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += a[d + l] * b[d + l];
    for (int l = 0; d < D; d++, l++) acc[l] += a[d] * b[d];
    float s = 0.0f;
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

/* Rows [r0, r1) of a block of b rows: QC (b, D); KC (Nc, D); idx, x_T, out (b, N); VCM, GC
   (Nc, W); WK (K, Nc);
   HEp (K, W); w2 (W,); ks (S,); coef (S, 5); noise (S, b, N) or NULL. flush: treat float32
   denormals as zero (the caller's torch setting, per thread; this thread's MXCSR is put back
   before returning). 0 on success. */
int ddim_rows(int64_t r0, int64_t r1, int64_t b, int64_t N, int64_t W, int64_t Nc, int64_t S,
              int64_t D, const float *QC, const float *KC, const int64_t *idx, const float *VCM, const float *GC,
              const float *WK, const float *HEp, const float *w2, float b2, const int64_t *ks,
              const float *coef, const float *noise, const float *x_T, float *out, int flush) {
    float *x = malloc(sizeof(float) * (4 * N + W));
    if (!x) return 1;
    float *A = x + N, *x0 = x + 2 * N, *qk = x + 3 * N, *HE = x + 4 * N;
    unsigned csr = set_flush(flush);
    for (int64_t r = r0; r < r1; r++) {
        const int64_t *row = idx + r * N;
        for (int64_t j = 0; j < N; j++) qk[j] = dot(QC + r * D, KC + row[j] * D, D);
        for (int64_t j = 0; j < N; j++) x0[j] = x[j] = x_T[r * N + j];
        for (int64_t n = 0; n < S; n++) {
            const float *wk = WK + ks[n] * Nc, *hep = HEp + ks[n] * W, *c = coef + 5 * n;
            float m = -INFINITY, z = 0.0f;
            for (int64_t j = 0; j < N; j++) {
                A[j] = qk[j] + wk[row[j]] + x[j];
                if (A[j] > m) m = A[j];
            }
            for (int64_t j = 0; j < N; j++) z += (A[j] = expf(A[j] - m));
            for (int64_t w = 0; w < W; w++) HE[w] = hep[w];
            for (int64_t j = 0; j < N; j++) {
                const float a = (A[j] /= z), *v = VCM + row[j] * W;
                for (int64_t w = 0; w < W; w++) HE[w] += a * v[w];
            }
            for (int64_t j = 0; j < N; j++) {
                float o = pair_logit(HE, GC + row[j] * W, w2, W) + b2 + A[j];
                o = o < -1.0f ? -1.0f : (o > 1.0f ? 1.0f : o);
                const float eps = (x[j] - c[0] * o) / c[1];
                x0[j] = o;
                x[j] = c[2] * o + c[3] * eps;
                if (noise && c[4] > 0.0f) x[j] += c[4] * noise[(n * b + r) * N + j];
            }
        }
        for (int64_t j = 0; j < N; j++) out[r * N + j] = x0[j];
    }
    put_back(csr);
    free(x);
    return 0;
}
