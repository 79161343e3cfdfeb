/* matmul_x86_tiles.h - the row/input tiling loop shared by the AVX2 and
 * AVX-512 kernel files. Each file supplies an always-inline TILE(a, r, R,
 * i0, N) computing R rows x N inputs; the constant R and N here let the
 * compiler keep the R*N accumulators in registers. */
#ifndef SHARDLM_MATMUL_X86_TILES_H
#define SHARDLM_MATMUL_X86_TILES_H

#include <immintrin.h>

#include "cpu_internal.h"

#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))
/* AVX-512 kernels may inline these: their targets are supersets. */
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Blocks per scale pass of the quantised tiles (a 2 KB stack table per
 * row-input pair at most 8 of them). */
#define QT_KC 64

/* Rows per block of the n > 1 loop: each 4-input tile passes over the
 * block's rows before the next tile, so the 4 inputs' activations stay in
 * L1 and the block's weights in L2 (before, every 2 rows streamed all n
 * inputs from L2). Only the order of whole tiles changes, never what one
 * (row, input) computes, so results are bitwise the same. */
#define X86_ROW_BLOCK 16

/* n == 1: 4 rows at a time. n > 1: 2 rows x 4 inputs, with tails. */
#define SHARDLM_X86_TILED(NAME, TILE, TARGET)                                                          \
    TARGET static void NAME(const shardlm_mm_args *a, size_t r0, size_t r1)                           \
    {                                                                                                 \
        size_t r = r0;                                                                                \
        if (a->n == 1) {                                                                              \
            for (; r + 4 <= r1; r += 4) TILE(a, r, 4, 0, 1);                                          \
            for (; r < r1; r++) TILE(a, r, 1, 0, 1);                                                  \
            return;                                                                                   \
        }                                                                                             \
        for (; r + X86_ROW_BLOCK <= r1; r += X86_ROW_BLOCK) /* whole row blocks, inputs outer */      \
            for (size_t i = 0; i + 4 <= a->n; i += 4)                                                 \
                for (size_t rb = r; rb < r + X86_ROW_BLOCK; rb += 2) TILE(a, rb, 2, i, 4);            \
        for (size_t rt = r0; rt < r; rt += 2) { /* their last 1-3 inputs */                          \
            size_t i = a->n & ~(size_t)3;                                                             \
            switch (a->n - i) {                                                                       \
            case 3: TILE(a, rt, 2, i, 3); break;                                                      \
            case 2: TILE(a, rt, 2, i, 2); break;                                                      \
            case 1: TILE(a, rt, 2, i, 1); break;                                                      \
            }                                                                                         \
        }                                                                                             \
        for (; r + 2 <= r1; r += 2) {                                                                 \
            size_t i = 0;                                                                             \
            for (; i + 4 <= a->n; i += 4) TILE(a, r, 2, i, 4);                                        \
            switch (a->n - i) {                                                                       \
            case 3: TILE(a, r, 2, i, 3); break;                                                       \
            case 2: TILE(a, r, 2, i, 2); break;                                                       \
            case 1: TILE(a, r, 2, i, 1); break;                                                       \
            }                                                                                         \
        }                                                                                             \
        for (; r < r1; r++) {                                                                         \
            size_t i = 0;                                                                             \
            for (; i + 4 <= a->n; i += 4) TILE(a, r, 1, i, 4);                                        \
            switch (a->n - i) {                                                                       \
            case 3: TILE(a, r, 1, i, 3); break;                                                       \
            case 2: TILE(a, r, 1, i, 2); break;                                                       \
            case 1: TILE(a, r, 1, i, 1); break;                                                       \
            }                                                                                         \
        }                                                                                             \
    }

AVX2_INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Per-block scales of one tile for up to QT_KC blocks: sc[rr*N+ii][b] =
 * d_w[rr][b] * d_x[ii][b], and cv[rr*N+ii] accumulates d_w * s_x for the
 * Q4_0 offset. Building them 8 blocks at a time leaves one broadcast load
 * per block in the inner loop instead of an f16 convert and a multiply. */
AVX2_INLINE void q_scales(const shardlm_mm_args *a, const uint8_t *const *wr, size_t bb, int R, size_t i0,
                          int N, size_t b0, size_t kb, float sc[][QT_KC], __m256 *cv, int with_corr)
{
    size_t nb = a->cols / SHARDLM_QK, b = 0;
    float dw[4][QT_KC];
#pragma GCC unroll 4
    for (int rr = 0; rr < R; rr++) {
        const uint8_t *p = wr[rr] + b0 * bb;
        for (b = 0; b + 8 <= kb; b += 8, p += 8 * bb) {
            __m128i h = _mm_setr_epi16((short)shardlm_rd16(p), (short)shardlm_rd16(p + bb),
                                       (short)shardlm_rd16(p + 2 * bb), (short)shardlm_rd16(p + 3 * bb),
                                       (short)shardlm_rd16(p + 4 * bb), (short)shardlm_rd16(p + 5 * bb),
                                       (short)shardlm_rd16(p + 6 * bb), (short)shardlm_rd16(p + 7 * bb));
            _mm256_storeu_ps(dw[rr] + b, _mm256_cvtph_ps(h));
        }
        for (; b < kb; b++, p += bb) dw[rr][b] = _cvtsh_ss(shardlm_rd16(p));
    }
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) {
        const float *xd = a->xd + (i0 + ii) * nb + b0, *xs = a->xs + (i0 + ii) * nb + b0;
#pragma GCC unroll 4
        for (int rr = 0; rr < R; rr++) {
            float *s = sc[rr * N + ii];
            __m256 c = cv[rr * N + ii];
            for (b = 0; b + 8 <= kb; b += 8) {
                __m256 d = _mm256_loadu_ps(dw[rr] + b);
                _mm256_storeu_ps(s + b, _mm256_mul_ps(d, _mm256_loadu_ps(xd + b)));
                if (with_corr) c = _mm256_fmadd_ps(d, _mm256_loadu_ps(xs + b), c);
            }
            float ct = 0.0f;
            for (; b < kb; b++) {
                s[b] = dw[rr][b] * xd[b];
                ct += dw[rr][b] * xs[b];
            }
            if (with_corr) cv[rr * N + ii] = _mm256_add_ps(c, _mm256_setr_ps(ct, 0, 0, 0, 0, 0, 0, 0));
        }
    }
}

/* Q4_0 block: 16 bytes of nibble pairs -> 32 unsigned bytes 0..15, in the
 * element order of the activations (low nibbles are elements 0..15). */
AVX2_INLINE __m256i q4_unpack(const uint8_t *blk)
{
    __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

/* Sum of unsigned(w) * signed(x) over the 32 bytes, as 8 int32 partial sums.
 * maddubs cannot saturate: |pair| <= 2 * 128 * 127 < 32767. */
AVX2_INLINE __m256i dot_u8s8(__m256i w, __m256i x)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

#endif
