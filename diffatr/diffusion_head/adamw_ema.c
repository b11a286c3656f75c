/* The head's optimiser step in two native passes: the gradient's sum of squares, then clip +
   AdamW + EMA (native_optim.py; optim.py states the formulas and is the torch twin).

   Tensor t of `nt` holds n[t] float32 values, contiguous, in `heads` equal parts (part h is
   head h's rows). Pass 1, `sum_squares`: blocks [b0, b1) of a fixed partition (block i: tensor
   bt[i], offset bo[i], bn[i] values, at most one head's) each summed alone in LANES fixed
   partial sums, then in double: the same bits on any thread count and vector width.
   Pass 2, `adamw_ema`: the tensors' elements laid end to end, split among threads, each
   element read and written once (g read, p, m, v and e read and written):

       g' = coef g;  p <- p (1 - lr wd);  m <- m + (1 - beta1)(g' - m)       (torch's lerp)
       v <- beta2 v + ((1 - beta2) g') g'                                   (torch's addcmul)
       p <- p - m / (sqrt(v) / bc2 + eps) * step
       e <- decay e + p (1 - decay)

   with coef, lr, step, bc2 per head (float32, as the torch twin rounds them) and wd per tensor.
   Elementwise, so splitting the elements among threads changes no bit. Built with -fopenmp,
   the threads are torch's own OpenMP team (native.py); without, one thread. flush: treat
   float32 denormals as zero (the caller's torch setting); each thread's MXCSR is put back. */
#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "native_common.h"

void sum_squares(const float *const *g, const int64_t *bt, const int64_t *bo, const int64_t *bn,
                 int64_t blocks, double *out, int flush, int threads) {
#pragma omp parallel num_threads(threads)
    {
        unsigned csr = set_flush(flush);
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; b++) {
            const float *x = g[bt[b]] + bo[b];
            int64_t n = bn[b], i = 0;
            float acc[LANES] = {0};
            for (; i + LANES <= n; i += LANES)
                for (int l = 0; l < LANES; l++) acc[l] += x[i + l] * x[i + l];
            for (int l = 0; i < n; i++, l++) acc[l] += x[i] * x[i];
            double s = 0.0;
            for (int l = 0; l < LANES; l++) s += acc[l];
            out[b] = s;
        }
        put_back(csr);
    }
}

static void update(float *restrict p, const float *restrict g, float *restrict m,
                   float *restrict v, float *restrict e, int64_t n, int decays, float keep,
                   float coef, float step, float bc2, const float *c) {
    const float weight = c[0], beta2 = c[1], one_b2 = c[2], eps = c[3], decay = c[4],
                one_decay = c[5];
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * coef;
        float pi = decays ? p[i] * keep : p[i];
        float mi = m[i] + weight * (gi - m[i]);
        float vi = v[i] * beta2 + one_b2 * gi * gi;
        pi = pi - mi / (sqrtf(vi) / bc2 + eps) * step;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
        e[i] = e[i] * decay + pi * one_decay;
    }
}

static void range(int64_t nt, float *const *p, const float *const *g, float *const *m,
                  float *const *v, float *const *e, const int64_t *n, const float *wd,
                  int64_t heads, const float *lr, const float *coef, const float *step,
                  const float *bc2, const float *c, int64_t lo, int64_t hi) {
    int64_t base = 0;
    for (int64_t t = 0; t < nt && base < hi; base += n[t], t++) {
        int64_t part = n[t] / heads;
        for (int64_t h = 0; h < heads; h++) {
            int64_t s = base + h * part, f = s + part; /* head h's elements of tensor t */
            int64_t a = s > lo ? s : lo, z = f < hi ? f : hi;
            if (a >= z) continue;
            int64_t off = a - base;
            float keep = 1.0f - lr[h] * wd[t];
            update(p[t] + off, g[t] + off, m[t] + off, v[t] + off, e[t] + off, z - a,
                   wd[t] != 0.0f, keep, coef[h], step[h], bc2[h], c);
        }
    }
}

/* wd[t]: tensor t's weight decay (0: none); lr, coef, step, bc2: per head; c: lerp's weight
   1 - beta1, beta2, 1 - beta2, eps, decay, 1 - decay (each rounded from double to float once,
   as torch rounds a Python number). The elements, laid end to end, are split into `threads`
   ranges (multiples of 16). */
void adamw_ema(int64_t nt, float *const *p, const float *const *g, float *const *m,
               float *const *v, float *const *e, const int64_t *n, const float *wd,
               int64_t heads, const float *lr, const float *coef, const float *step,
               const float *bc2, const float *c, int flush, int threads) {
    int64_t total = 0;
    for (int64_t t = 0; t < nt; t++) total += n[t];
#pragma omp parallel num_threads(threads)
    {
        int id = 0, count = 1;
#ifdef _OPENMP
        id = omp_get_thread_num();
        count = omp_get_num_threads();
#endif
        int64_t lo = (total * id / count + 15) / 16 * 16;
        int64_t hi = id + 1 == count ? total : (total * (id + 1) / count + 15) / 16 * 16;
        unsigned csr = set_flush(flush);
        range(nt, p, g, m, v, e, n, wd, heads, lr, coef, step, bc2, c, lo, hi < total ? hi : total);
        put_back(csr);
    }
}
