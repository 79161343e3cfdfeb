/* matmul_avx512_q5.c - AVX-512 VNNI kernels for Q4_1, Q5_0 and Q5_1
 * weights, two rows per register (matmul_avx512_pairs.h), each half doing
 * the AVX2 kernel's arithmetic (matmul_q5.c) so the bits are the same:
 * per 32-value block and input, the exact int32 sums of each 4 bytes of
 * q * x (Q5_0: (q - 16) * x, here q * x - 16 * x: the same integer), then
 * acc = fma(that, d * xd, acc) in block order; Q4_1 and Q5_1 add their
 * min term apart, corr += m * xs in block order; y = hsum8(acc) + corr. */
#if defined(__x86_64__)
#include "matmul_avx512_pairs.h"

enum { Q5V_Q4_1, Q5V_Q5_0, Q5V_Q5_1 };

/* The 32 codes (nibble | fifth bit << 4) of one block of two rows, row b0's
 * in the low half, value e at byte e of its half. */
KV_INLINE __m512i q5v_codes(const uint8_t *b0, const uint8_t *b1, int kind)
{
    size_t qs = kind == Q5V_Q4_1 ? 4 : kind == Q5V_Q5_0 ? 6 : 8;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i t = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(b1 + qs)), _mm_loadu_si128((const __m128i *)(b0 + qs)));
    __m256i lo = _mm256_and_si256(t, m4), hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), m4);
    /* 128-bit lanes [lo0, lo1, hi0, hi1] -> [lo0, hi0, lo1, hi1] */
    __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    z = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));
    if (kind == Q5V_Q4_1) return z;
    uint32_t h0, h1;
    memcpy(&h0, b0 + (kind == Q5V_Q5_0 ? 2 : 4), 4);
    memcpy(&h1, b1 + (kind == Q5V_Q5_0 ? 2 : 4), 4);
    return _mm512_mask_add_epi8(z, (__mmask64)h0 | (__mmask64)h1 << 32, z, _mm512_set1_epi8(16));
}

/* Rows r + 2p, r + 2p + 1 (p < P; a missing second row repeats the first
 * and is not stored) against inputs i0..i0+N-1. */
KV_INLINE void q5v_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N, int kind)
{
    size_t nb = a->cols / SHARDLM_QK;
    size_t bb = kind == Q5V_Q4_1 ? SHARDLM_Q4_1_BYTES : kind == Q5V_Q5_0 ? SHARDLM_Q5_0_BYTES : SHARDLM_Q5_1_BYTES;
    const uint8_t *w0[2], *w1[2];
    __m512 acc[2][4];
    float corr[2][4][2];
    kv_row_pairs(a, r, r1, P, w0, w1);
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            acc[p][ii] = _mm512_setzero_ps();
            corr[p][ii][0] = corr[p][ii][1] = 0.0f;
        }
    for (size_t b = 0; b < nb; b++) {
        __m512i o16[4]; /* Q5_0: 16 * sum(x) per 4 bytes, the same for every row pair */
        if (kind == Q5V_Q5_0)
#pragma GCC unroll 4
            for (int ii = 0; ii < N; ii++)
                o16[ii] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(16), kv_x(a, i0 + ii, b));
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) {
            const uint8_t *x0 = w0[p] + b * bb, *x1 = w1[p] + b * bb;
            __m512i u = q5v_codes(x0, x1, kind);
            __m512 dv = kv_two(_cvtsh_ss(shardlm_rd16(x0)), _cvtsh_ss(shardlm_rd16(x1)));
            float m0 = kind == Q5V_Q5_0 ? 0.0f : _cvtsh_ss(shardlm_rd16(x0 + 2));
            float m1 = kind == Q5V_Q5_0 ? 0.0f : _cvtsh_ss(shardlm_rd16(x1 + 2));
#pragma GCC unroll 4
            for (int ii = 0; ii < N; ii++) {
                size_t k = (i0 + ii) * nb + b;
                __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, kv_x(a, i0 + ii, b));
                if (kind == Q5V_Q5_0) s = _mm512_sub_epi32(s, o16[ii]);
                acc[p][ii] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dv, _mm512_set1_ps(a->xd[k])), acc[p][ii]);
                if (kind != Q5V_Q5_0) {
                    corr[p][ii][0] += m0 * a->xs[k];
                    corr[p][ii][1] += m1 * a->xs[k];
                }
            }
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            size_t row = r + 2 * (size_t)p;
            float *y = a->y + (i0 + ii) * a->rows + row;
            y[0] = hsum8(_mm512_castps512_ps256(acc[p][ii])) + corr[p][ii][0];
            if (row + 1 < r1)
                y[1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p][ii]), 1))) + corr[p][ii][1];
        }
}

KV_INLINE void q4_1v_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N)
{
    q5v_tile(a, r, r1, P, i0, N, Q5V_Q4_1);
}
KV_INLINE void q5_0v_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N)
{
    q5v_tile(a, r, r1, P, i0, N, Q5V_Q5_0);
}
KV_INLINE void q5_1v_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N)
{
    q5v_tile(a, r, r1, P, i0, N, Q5V_Q5_1);
}

/* Decode (one input) runs the AVX2 kernels, same bits: two rows per
 * register streamed slower there (one Zen 5 core, 5632 x 2048 from DRAM:
 * Q4_1 16.3 against 21.7 GMAC/s, Q5_0 7.7 against 15.7, Q5_1 13.8 against
 * 17.0), while 16 inputs ran 1.3-1.5x faster (docs/PERFORMANCE.md). */
static const shardlm_mm_fn q4_1v_decode = shardlm_avx2_q4_1, q5_0v_decode = shardlm_avx2_q5_0,
                           q5_1v_decode = shardlm_avx2_q5_1;

KV_ROWS(shardlm_avx512vnni_q4_1, q4_1v_tile, 2, q4_1v_decode, 4)
KV_ROWS(shardlm_avx512vnni_q5_0, q5_0v_tile, 2, q5_0v_decode, 4)
KV_ROWS(shardlm_avx512vnni_q5_1, q5_1v_tile, 2, q5_1v_decode, 4)
#endif
