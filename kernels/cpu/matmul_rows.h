/* matmul_rows.h - the row loops shared by the kernels of the block types
 * beyond Q8_0/Q4_0/Q4_K/Q6_K (matmul_q5.c, matmul_iq4.c, matmul_k_more.c).
 * A kernel is a row dot product over the 8-bit activations of one input
 * (cpu_internal.h): scalar, or on x86 an AVX2 tile of one row and N <= 4
 * inputs, which unpacks each weight block once for all N. Every output is
 * computed by the same arithmetic whatever N, the tail or the thread split,
 * so the products are batch invariant bit for bit. */
#ifndef SHARDLM_MATMUL_ROWS_H
#define SHARDLM_MATMUL_ROWS_H

#include "cpu_internal.h"
#include "quant_blocks.h"

/* DOT(wr, cols, xq, xd, xs): one row of weights against one input. */
#define SHARDLM_SCALAR_ROWS(NAME, DOT)                                                                  \
    void NAME(const shardlm_mm_args *a, size_t r0, size_t r1)                                          \
    {                                                                                                   \
        size_t nb = a->cols / SHARDLM_QK;                                                               \
        for (size_t r = r0; r < r1; r++)                                                                \
            for (size_t i = 0; i < a->n; i++)                                                           \
                a->y[i * a->rows + r] = DOT(a->w + r * a->row_bytes, a->cols, a->xq + i * a->cols,      \
                                            a->xd + i * nb, a->xs + i * nb);                            \
    }

#if defined(__x86_64__)
#include <immintrin.h>

#include "matmul_x86_tiles.h"

/* TILE(a, r, i0, N): row r against inputs i0..i0+N-1; a constant N per call
 * keeps the accumulators in registers. */
#define SHARDLM_AVX2_ROWS(NAME, TILE)                                                                   \
    AVX2_TARGET void NAME(const shardlm_mm_args *a, size_t r0, size_t r1)                               \
    {                                                                                                   \
        for (size_t r = r0; r < r1; r++) {                                                              \
            size_t i = 0;                                                                               \
            for (; i + 4 <= a->n; i += 4) TILE(a, r, i, 4);                                             \
            switch (a->n - i) {                                                                         \
            case 3: TILE(a, r, i, 3); break;                                                            \
            case 2: TILE(a, r, i, 2); break;                                                            \
            case 1: TILE(a, r, i, 1); break;                                                            \
            }                                                                                           \
        }                                                                                               \
    }

/* 16 nibble bytes -> 32 bytes 0..15 in element order (low nibbles are
 * elements 0..15, high ones 16..31). */
AVX2_INLINE __m256i mr_nibbles(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0f));
}

/* Bit e of qh -> byte e is 0xff or 0 (e < 32). */
AVX2_INLINE __m256i mr_bits32(uint32_t qh)
{
    const __m256i pick = _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), pick); /* byte e = byte e/8 of qh */
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

/* Sum of signed w times signed x over 32 bytes as 8 int32 (|w| <= 127). */
AVX2_INLINE __m256i mr_dot_s8(__m256i w, __m256i x)
{
    return dot_u8s8(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
}

/* Activation block b of input i. */
AVX2_INLINE __m256i mr_x(const shardlm_mm_args *a, size_t i, size_t b)
{
    return _mm256_loadu_si256((const __m256i *)(a->xq + i * a->cols + b * SHARDLM_QK));
}
#endif

#endif
