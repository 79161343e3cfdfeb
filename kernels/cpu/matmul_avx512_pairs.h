/* matmul_avx512_pairs.h - the two-rows-per-register scaffolding of the
 * AVX-512 VNNI kernels for plain (not repacked) block layouts: row r in
 * the low 256 bits, row r + 1 in the high, so each half does what one AVX2
 * register does and the bits stay the AVX2 kernel's (matmul_avx512_k.c
 * explains why). Loads, the pair bookkeeping and the row loop; the tiles
 * live with their block types. */
#ifndef SHARDLM_MATMUL_AVX512_PAIRS_H
#define SHARDLM_MATMUL_AVX512_PAIRS_H
#if defined(__x86_64__)
#include <immintrin.h>

#include "matmul_x86_tiles.h"
#include "quant_blocks.h"
#include "quant_k.h"

#define KV_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define KV_INLINE static inline __attribute__((always_inline, target(KV_TARGET)))
#define KV_SB (SHARDLM_QK_K / SHARDLM_QK) /* activation blocks per super-block */
#ifndef KV_PF_BYTES
#define KV_PF_BYTES 2048
#endif
#define KV_ROW_BLOCK 16                   /* rows per pass of each 4-input tile, as X86_ROW_BLOCK */

/* Two 32-byte pieces side by side. */
KV_INLINE __m512i kv_pair(const uint8_t *p0, const uint8_t *p1)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p0)),
                              _mm256_loadu_si256((const __m256i *)p1), 1);
}

/* Activation block b of input i in both halves. */
KV_INLINE __m512i kv_x(const shardlm_mm_args *a, size_t i, size_t b)
{
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(a->xq + i * a->cols + b * SHARDLM_QK)));
}

/* 8 consecutive floats in both halves. */
KV_INLINE __m512 kv_f8(const float *p)
{
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(p))));
}

/* lanes 0..7 = a, 8..15 = b. */
KV_INLINE __m512 kv_two(float a, float b)
{
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(a))),
                                               _mm256_castps_pd(_mm256_set1_ps(b)), 1));
}

/* lanes 0..7 = a, 8..15 = b. */
KV_INLINE __m512 kv_cat(__m256 a, __m256 b)
{
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(a)), _mm256_castps_pd(b), 1));
}

/* Stores hsum8 of each half (minus corr) where the row is in range. */
KV_INLINE void kv_store(const shardlm_mm_args *a, size_t i, size_t r, int both, __m512 acc, const float *corr)
{
    float *y = a->y + i * a->rows + r;
    y[0] = hsum8(_mm512_castps512_ps256(acc)) - (corr ? corr[0] : 0.0f);
    if (both) y[1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1))) - (corr ? corr[1] : 0.0f);
}

/* The P row pairs of a tile from row r: pair p is rows r + 2p and the one
 * after it, or row r + 2p twice when that is the last row before r1. */
KV_INLINE void kv_row_pairs(const shardlm_mm_args *a, size_t r, size_t r1, int P, const uint8_t *w0[2],
                            const uint8_t *w1[2])
{
#pragma GCC unroll 2
    for (int p = 0; p < P; p++) {
        size_t ra = r + 2 * (size_t)p, rb = ra + 1 < r1 ? ra + 1 : ra;
        w0[p] = a->w + ra * a->row_bytes;
        w1[p] = a->w + rb * a->row_bytes;
    }
}

/* ---- row loops ----
 * n == 1: DECODE when set, else 2 * DP rows (DP pairs) per pass, then a
 * pair or a lone row. n > 1: row blocks of 16, each tile of TN (4 or 8)
 * inputs passing over the block's pairs so the activations stay in L1;
 * then the 1..TN-1 input tail. Only the order of whole tiles differs
 * between n, tails and thread splits, never what one (row, input)
 * computes, so the results are batch invariant bit for bit. */
/* Tail of K inputs; a K no smaller than TN never happens and compiles as 1. */
#define KV_TAIL(TILE, TN, K)                                                                        \
    case K: TILE(a, rp, re, 1, i, (TN) > (K) ? (K) : 1); break
#define KV_ROWS(NAME, TILE, DP, DECODE, TN)                                                         \
    __attribute__((target(KV_TARGET))) void NAME(const shardlm_mm_args *a, size_t r0, size_t r1)    \
    {                                                                                               \
        if (a->n == 1 && DECODE) {                                                                  \
            DECODE(a, r0, r1);                                                                      \
            return;                                                                                 \
        }                                                                                           \
        if (a->n == 1) {                                                                            \
            size_t r = r0;                                                                          \
            for (; r + 2 * DP <= r1; r += 2 * DP) TILE(a, r, r1, DP, 0, 1);                         \
            for (; r < r1; r += 2) TILE(a, r, r1, 1, 0, 1);                                         \
            return;                                                                                 \
        }                                                                                           \
        for (size_t r = r0; r < r1; r += KV_ROW_BLOCK) {                                            \
            size_t re = r + KV_ROW_BLOCK < r1 ? r + KV_ROW_BLOCK : r1, i = 0;                       \
            for (; i + (TN) <= a->n; i += (TN))                                                     \
                for (size_t rp = r; rp < re; rp += 2) TILE(a, rp, re, 1, i, (TN));                  \
            for (size_t rp = r; rp < re; rp += 2) {                                                 \
                switch (a->n - i) {                                                                 \
                    KV_TAIL(TILE, TN, 7);                                                           \
                    KV_TAIL(TILE, TN, 6);                                                           \
                    KV_TAIL(TILE, TN, 5);                                                           \
                    KV_TAIL(TILE, TN, 4);                                                           \
                    KV_TAIL(TILE, TN, 3);                                                           \
                    KV_TAIL(TILE, TN, 2);                                                           \
                    KV_TAIL(TILE, TN, 1);                                                           \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }

#endif
#endif
