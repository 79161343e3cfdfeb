/* matmul_iq4.c - matrix products with IQ4_NL and IQ4_XS weights: scalar
 * and AVX2 kernels. The 16 non-linear levels are small integers
 * (shardlm_iq4nl), so a block of 32 is an exact int8 x int8 dot product
 * with the 8-bit activations, scaled once:
 *   IQ4_NL: d*xd * sum(level*qx) per block of 32;
 *   IQ4_XS: (d*ls_j)*xd * sum(level*qx) per sub-block j of 32.
 * AVX2 looks the levels up with one byte shuffle per block. The result
 * differs from shardlm_ref_matmul only by the activation rounding. */
#include "matmul_rows.h"

/* ---- scalar ---- */

static int32_t iq4_isum(const uint8_t *qs, const int8_t *xq)
{
    int32_t isum = 0;
    for (int j = 0; j < 16; j++) isum += shardlm_iq4nl[qs[j] & 15] * xq[j] + shardlm_iq4nl[qs[j] >> 4] * xq[j + 16];
    return isum;
}

static float iq4_nl_dot(const uint8_t *wr, size_t cols, const int8_t *xq, const float *xd, const float *xs)
{
    (void)xs;
    float acc = 0.0f;
    for (size_t b = 0; b < cols / SHARDLM_QK; b++, wr += SHARDLM_IQ4_NL_BYTES, xq += SHARDLM_QK)
        acc += (float)iq4_isum(wr + 2, xq) * (shardlm_qb_f16(wr) * xd[b]);
    return acc;
}

static float iq4_xs_dot(const uint8_t *wr, size_t cols, const int8_t *xq, const float *xd, const float *xs)
{
    (void)xs;
    float acc = 0.0f;
    for (size_t sb = 0; sb < cols / SHARDLM_QK_K; sb++, wr += SHARDLM_IQ4_XS_BYTES) {
        float d = shardlm_qb_f16(wr);
        for (int ib = 0; ib < 8; ib++, xq += SHARDLM_QK) {
            float dl = d * (float)shardlm_iq4_xs_scale(wr, ib);
            acc += (float)iq4_isum(wr + SHARDLM_IQ4_XS_QS + 16 * ib, xq) * (dl * xd[8 * sb + (size_t)ib]);
        }
    }
    return acc;
}

SHARDLM_SCALAR_ROWS(shardlm_scalar_iq4_nl, iq4_nl_dot)
SHARDLM_SCALAR_ROWS(shardlm_scalar_iq4_xs, iq4_xs_dot)

/* ---- AVX2 ---- */

#if defined(__x86_64__)

/* 16 nibble bytes -> the 32 levels as signed bytes, in element order. */
AVX2_INLINE __m256i iq4_levels(const uint8_t *qs)
{
    const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)shardlm_iq4nl));
    return _mm256_shuffle_epi8(tab, mr_nibbles(qs));
}

AVX2_INLINE void iq4_nl_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK;
    const uint8_t *wr = a->w + r * a->row_bytes;
    __m256 acc[4];
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++, wr += SHARDLM_IQ4_NL_BYTES) {
        float d = _cvtsh_ss(shardlm_rd16(wr));
        __m256i w = iq4_levels(wr + 2);
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            __m256 p = _mm256_cvtepi32_ps(mr_dot_s8(w, mr_x(a, i0 + ii, b)));
            acc[ii] = _mm256_fmadd_ps(p, _mm256_set1_ps(d * a->xd[(i0 + ii) * nb + b]), acc[ii]);
        }
    }
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) a->y[(i0 + ii) * a->rows + r] = hsum8(acc[ii]);
}

AVX2_INLINE void iq4_xs_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK, nsb = a->cols / SHARDLM_QK_K;
    const uint8_t *wr = a->w + r * a->row_bytes;
    __m256 acc[4];
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm256_setzero_ps();
    for (size_t sb = 0; sb < nsb; sb++, wr += SHARDLM_IQ4_XS_BYTES) {
        float d = _cvtsh_ss(shardlm_rd16(wr));
        for (int ib = 0; ib < 8; ib++) {
            float dl = d * (float)shardlm_iq4_xs_scale(wr, ib);
            __m256i w = iq4_levels(wr + SHARDLM_IQ4_XS_QS + 16 * ib);
            size_t b = 8 * sb + (size_t)ib;
#pragma GCC unroll 4
            for (int ii = 0; ii < N; ii++) {
                __m256 p = _mm256_cvtepi32_ps(mr_dot_s8(w, mr_x(a, i0 + ii, b)));
                acc[ii] = _mm256_fmadd_ps(p, _mm256_set1_ps(dl * a->xd[(i0 + ii) * nb + b]), acc[ii]);
            }
        }
    }
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) a->y[(i0 + ii) * a->rows + r] = hsum8(acc[ii]);
}

SHARDLM_AVX2_ROWS(shardlm_avx2_iq4_nl, iq4_nl_tile)
SHARDLM_AVX2_ROWS(shardlm_avx2_iq4_xs, iq4_xs_tile)
#endif
