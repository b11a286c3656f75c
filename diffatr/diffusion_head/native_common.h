/* What the head's C kernels share (ddim_rows.c, adamw_ema.c, pair_logits.c): the fixed
   partial sums, the caller's denormal setting, the pair logit. diffatr/native.py hashes this
   header with each source that includes it, so a change here builds every kernel again. */
#ifndef DIFFATR_NATIVE_COMMON_H
#define DIFFATR_NATIVE_COMMON_H

#include <stdint.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* Sums over a vector run in LANES fixed partial sums, added in lane order at the end: the
   same bits on any vector width and thread count. */
#define LANES 16

/* Treat float32 denormals as zero on this thread when `flush` (the caller's torch setting,
   torch.set_flush_denormal(True): FTZ | DAZ); returns the MXCSR to put back. */
static inline unsigned set_flush(int flush) {
#if defined(__SSE__)
    unsigned csr = _mm_getcsr();
    if (flush) _mm_setcsr(csr | 0x8040);
    return csr;
#else
    (void)flush;
    return 0;
#endif
}

static inline void put_back(unsigned csr) {
#if defined(__SSE__)
    _mm_setcsr(csr);
#else
    (void)csr;
#endif
}

/* The decoder's logit of one pair: w2 . relu(h + c) over W, in LANES fixed partial sums. */
static inline float pair_logit(const float *restrict h, const float *restrict c,
                               const float *restrict w2, int64_t W) {
    float acc[LANES] = {0};
    int64_t w = 0;
    for (; w + LANES <= W; w += LANES)
        for (int l = 0; l < LANES; l++) {
            float z = h[w + l] + c[w + l];
            acc[l] += (z > 0.0f ? z : 0.0f) * w2[w + l];
        }
    for (int l = 0; w < W; w++, l++) {
        float z = h[w] + c[w];
        acc[l] += (z > 0.0f ? z : 0.0f) * w2[w];
    }
    float s = 0.0f;
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

#endif
