/* The decoder's pair logits in training, forward and backward, without the (G, B, N, W)
   activations (native_loss.py; stacked.py's `_PairLogits` is the torch twin and the oracle).

   For each group g, query row b and candidate j (W = 2D, the decoder's hidden width):

       Z_bj = HE_b + GC_j                       (W,)   the first layer's pre-activation
       logit_bj = w2 . relu(Z_bj)                      forward
       dHE_b = w2 * sum_j [Z_bj > 0] G_bj              backward, G = dL/dlogit (G, B, N)
       dGC_j = w2 * sum_b [Z_bj > 0] G_bj
       dw2   = sum_b sum_j relu(Z_bj) G_bj

   Z is recomputed from the small HE (G, B, W) and GC (G, N, W) wherever it is needed, never
   stored: each pass reads O((B + N) W) floats per group. Every output element is summed by one
   thread in a fixed order (the dot in LANES fixed partial sums; the sums over j, over b and,
   for dw2, over b of per-row partials, in index order), so the bits are the same on any
   thread count and vector width. Built with -fopenmp, the threads are torch's own OpenMP team
   (native.py); without, one thread. flush: treat float32 denormals as zero (the caller's torch
   setting); each thread's MXCSR is put back. */
#include <stdint.h>

#include "native_common.h"

/* One pair's share of a query row's sums: d += [z > 0] g_j, p += relu(z) g_j (as m z: the
   form gcc vectorises; the same value, up to the sign of a zero term). */
static void row_grad(const float *restrict h, const float *restrict c, float gj,
                     float *restrict d, float *restrict p, int64_t W) {
    for (int64_t i = 0; i < W; i++) {
        const float z = h[i] + c[i], m = z > 0.0f ? gj : 0.0f;
        d[i] += m;
        p[i] += m * z;
    }
}

/* out (G, B, N) = w2 . relu(HE_b + GC_j) for every group and pair. */
void pair_logits(int64_t G, int64_t B, int64_t N, int64_t W, const float *HE, const float *GC,
                 const float *w2, float *out, int flush, int threads) {
#pragma omp parallel num_threads(threads)
    {
        unsigned csr = set_flush(flush);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < G * B; r++) {
            const int64_t g = r / B;
            const float *h = HE + r * W, *c = GC + g * N * W, *w = w2 + g * W;
            for (int64_t j = 0; j < N; j++) out[r * N + j] = pair_logit(h, c + j * W, w, W);
        }
        put_back(csr);
    }
}

/* dHE (G, B, W), dGC (G, N, W), dw2 (G, W) from G_ (G, B, N); part (G, B, W) scratch. */
void pair_logits_grad(int64_t G, int64_t B, int64_t N, int64_t W, const float *HE,
                      const float *GC, const float *w2, const float *G_, float *dHE, float *dGC,
                      float *dw2, float *part, int flush, int threads) {
#pragma omp parallel num_threads(threads)
    {
        unsigned csr = set_flush(flush);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < G * B; r++) { /* query row: dHE_b and its share of dw2 */
            const int64_t g = r / B;
            const float *h = HE + r * W, *w = w2 + g * W, *gr = G_ + r * N;
            float *restrict d = dHE + r * W, *restrict p = part + r * W;
            for (int64_t i = 0; i < W; i++) d[i] = 0.0f, p[i] = 0.0f;
            for (int64_t j = 0; j < N; j++) row_grad(h, GC + (g * N + j) * W, gr[j], d, p, W);
            for (int64_t i = 0; i < W; i++) d[i] *= w[i];
        }
#pragma omp for schedule(static)
        for (int64_t q = 0; q < G * N; q++) { /* candidate column: dGC_j */
            const int64_t g = q / N, j = q % N;
            const float *c = GC + q * W, *w = w2 + g * W;
            float *restrict d = dGC + q * W;
            for (int64_t i = 0; i < W; i++) d[i] = 0.0f;
            for (int64_t b = 0; b < B; b++) {
                const float *restrict h = HE + (g * B + b) * W;
                const float gj = G_[(g * B + b) * N + j];
                for (int64_t i = 0; i < W; i++) d[i] += h[i] + c[i] > 0.0f ? gj : 0.0f;
            }
            for (int64_t i = 0; i < W; i++) d[i] *= w[i];
        }
#pragma omp for schedule(static)
        for (int64_t g = 0; g < G; g++) { /* dw2: the rows' partials in row order */
            float *restrict d = dw2 + g * W;
            for (int64_t i = 0; i < W; i++) d[i] = 0.0f;
            for (int64_t b = 0; b < B; b++) {
                const float *restrict p = part + (g * B + b) * W;
                for (int64_t i = 0; i < W; i++) d[i] += p[i];
            }
        }
        put_back(csr);
    }
}
