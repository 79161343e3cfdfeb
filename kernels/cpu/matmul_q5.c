/* matmul_q5.c - matrix products with Q4_1, Q5_0 and Q5_1 weights: a
 * portable scalar kernel and an AVX2 one per type (per-function target
 * attributes; every x86 SIMD table uses it). Each weight block of 32 meets
 * one 8-bit activation block (scale xd, xs = xd * sum(q)):
 *   Q4_1 / Q5_1 (value q*d + m): d*xd * sum(q*qx) + m*xs, the integer sum
 *     exact and the min term costing no per-element work;
 *   Q5_0 (value (q - 16)*d): d*xd * sum((q - 16)*qx), exact in integers.
 * The result differs from shardlm_ref_matmul only by the activation
 * rounding (tests/test_kernels.c states the tolerance). */
#include "matmul_rows.h"

/* ---- scalar ---- */

static float q4_1_dot(const uint8_t *wr, size_t cols, const int8_t *xq, const float *xd, const float *xs)
{
    float acc = 0.0f, corr = 0.0f;
    for (size_t b = 0; b < cols / SHARDLM_QK; b++, wr += SHARDLM_Q4_1_BYTES, xq += SHARDLM_QK) {
        const uint8_t *qs = wr + 4;
        int32_t isum = 0;
        for (int j = 0; j < 16; j++) isum += (qs[j] & 15) * xq[j] + (qs[j] >> 4) * xq[j + 16];
        acc += (float)isum * (shardlm_qb_f16(wr) * xd[b]);
        corr += shardlm_qb_f16(wr + 2) * xs[b];
    }
    return acc + corr;
}

/* sum(code * qx) of a Q5 block's 32 codes (offset subtracted from each). */
static int32_t q5_isum(uint32_t qh, const uint8_t *qs, int offset, const int8_t *xq)
{
    int32_t isum = 0;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4, hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        isum += (lo - offset) * xq[j] + (hi - offset) * xq[j + 16];
    }
    return isum;
}

static float q5_0_dot(const uint8_t *wr, size_t cols, const int8_t *xq, const float *xd, const float *xs)
{
    (void)xs;
    float acc = 0.0f;
    for (size_t b = 0; b < cols / SHARDLM_QK; b++, wr += SHARDLM_Q5_0_BYTES, xq += SHARDLM_QK)
        acc += (float)q5_isum(shardlm_qb_rd32(wr + 2), wr + 6, 16, xq) * (shardlm_qb_f16(wr) * xd[b]);
    return acc;
}

static float q5_1_dot(const uint8_t *wr, size_t cols, const int8_t *xq, const float *xd, const float *xs)
{
    float acc = 0.0f, corr = 0.0f;
    for (size_t b = 0; b < cols / SHARDLM_QK; b++, wr += SHARDLM_Q5_1_BYTES, xq += SHARDLM_QK) {
        acc += (float)q5_isum(shardlm_qb_rd32(wr + 4), wr + 8, 0, xq) * (shardlm_qb_f16(wr) * xd[b]);
        corr += shardlm_qb_f16(wr + 2) * xs[b];
    }
    return acc + corr;
}

SHARDLM_SCALAR_ROWS(shardlm_scalar_q4_1, q4_1_dot)
SHARDLM_SCALAR_ROWS(shardlm_scalar_q5_0, q5_0_dot)
SHARDLM_SCALAR_ROWS(shardlm_scalar_q5_1, q5_1_dot)

/* ---- AVX2 ---- */

#if defined(__x86_64__)

/* One row against N inputs. kind 0: Q4_1, 1: Q5_0, 2: Q5_1 (constant in
 * each caller, so the branches fold away). */
AVX2_INLINE void q5_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N, int kind)
{
    size_t nb = a->cols / SHARDLM_QK;
    size_t bb = kind == 0 ? SHARDLM_Q4_1_BYTES : kind == 1 ? SHARDLM_Q5_0_BYTES : SHARDLM_Q5_1_BYTES;
    const uint8_t *wr = a->w + r * a->row_bytes;
    __m256 acc[4];
    float corr[4] = {0};
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++, wr += bb) {
        float d = _cvtsh_ss(shardlm_rd16(wr));
        __m256i w;
        if (kind == 0) {
            w = mr_nibbles(wr + 4);
        } else {
            uint32_t qh;
            memcpy(&qh, wr + (kind == 1 ? 2 : 4), 4);
            __m256i hb = mr_bits32(qh), nib = mr_nibbles(wr + (kind == 1 ? 6 : 8));
            /* Q5_0: q - 16 as a signed byte is the nibble, or the nibble
             * minus 16 (0xf0 | nibble) where the fifth bit is clear. */
            w = kind == 1 ? _mm256_or_si256(nib, _mm256_andnot_si256(hb, _mm256_set1_epi8((char)0xf0)))
                          : _mm256_or_si256(nib, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
        }
        float m = kind == 1 ? 0.0f : _cvtsh_ss(shardlm_rd16(wr + 2));
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            size_t k = (i0 + ii) * nb + b;
            __m256i x = mr_x(a, i0 + ii, b);
            __m256i p = kind == 1 ? mr_dot_s8(w, x) : dot_u8s8(w, x);
            acc[ii] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * a->xd[k]), acc[ii]);
            if (kind != 1) corr[ii] += m * a->xs[k];
        }
    }
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) a->y[(i0 + ii) * a->rows + r] = hsum8(acc[ii]) + corr[ii];
}

AVX2_INLINE void q4_1_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N) { q5_tile(a, r, i0, N, 0); }
AVX2_INLINE void q5_0_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N) { q5_tile(a, r, i0, N, 1); }
AVX2_INLINE void q5_1_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N) { q5_tile(a, r, i0, N, 2); }

SHARDLM_AVX2_ROWS(shardlm_avx2_q4_1, q4_1_tile)
SHARDLM_AVX2_ROWS(shardlm_avx2_q5_0, q5_0_tile)
SHARDLM_AVX2_ROWS(shardlm_avx2_q5_1, q5_1_tile)
#endif
