/* matmul_k_more.c - matrix products with Q2_K, Q3_K and Q5_K weights:
 * scalar and AVX2 kernels. As for Q4_K/Q6_K (matmul_k.c), each activation
 * block of 32 lines up with the super-block's sub-blocks:
 *   Q2_K (16-value sub-blocks a, b; value d*sc*q - dmin*m): per block
 *     d*xd * (sc_a*sum_a(q*qx) + sc_b*sum_b(q*qx))
 *       - dmin*xd * (m_a*sum_a(qx) + m_b*sum_b(qx)), both sums exact;
 *   Q3_K (value d*s*(q - 4), s signed): d*xd * (s_a*sum_a((q-4)*qx) + ...),
 *     the pair sums (|q-4| * 2 * 127 at most) within int16;
 *   Q5_K (32-value sub-blocks, as Q4_K with a fifth bit):
 *     sum_j d*sc_j*xd_j * sum(q*qx) - sum_j dmin*m_j*xs_j.
 * The result differs from shardlm_ref_matmul only by the activation
 * rounding. */
#include "matmul_rows.h"
#include "quant_k.h"

#define KM_BLOCKS (SHARDLM_QK_K / SHARDLM_QK) /* activation blocks per super-block */

/* ---- scalar ---- */

/* Code l (0..31) of activation block j (0..7) of a Q2_K/Q3_K super-block's
 * 2-bit codes. */
static int km_low2(const uint8_t *qs, int j, int l) { return (qs[32 * (j / 4) + l] >> (2 * (j % 4))) & 3; }

static float q2_k_dot(const uint8_t *wr, size_t cols, const int8_t *xq, const float *xd, const float *xs)
{
    (void)xs;
    float acc = 0.0f, corr = 0.0f;
    for (size_t sb = 0; sb < cols / SHARDLM_QK_K; sb++, wr += SHARDLM_Q2_K_BYTES) {
        float d = shardlm_qb_f16(wr + SHARDLM_Q2_K_D), dmin = shardlm_qb_f16(wr + SHARDLM_Q2_K_D + 2);
        for (int j = 0; j < KM_BLOCKS; j++, xq += SHARDLM_QK) {
            int32_t s[2] = {0, 0}, t[2] = {0, 0};
            for (int l = 0; l < 32; l++) {
                s[l / 16] += km_low2(wr + SHARDLM_Q2_K_QS, j, l) * xq[l];
                t[l / 16] += xq[l];
            }
            const uint8_t *sc = wr + 2 * j;
            int32_t isum = (sc[0] & 15) * s[0] + (sc[1] & 15) * s[1], msum = (sc[0] >> 4) * t[0] + (sc[1] >> 4) * t[1];
            float x = xd[sb * KM_BLOCKS + (size_t)j];
            acc += (float)isum * (d * x);
            corr += (float)msum * (dmin * x);
        }
    }
    return acc - corr;
}

static float q3_k_dot(const uint8_t *wr, size_t cols, const int8_t *xq, const float *xd, const float *xs)
{
    (void)xs;
    float acc = 0.0f;
    for (size_t sb = 0; sb < cols / SHARDLM_QK_K; sb++, wr += SHARDLM_Q3_K_BYTES) {
        float d = shardlm_qb_f16(wr + SHARDLM_Q3_K_D);
        for (int j = 0; j < KM_BLOCKS; j++, xq += SHARDLM_QK) {
            int32_t s[2] = {0, 0};
            for (int l = 0; l < 32; l++) {
                int q = km_low2(wr + SHARDLM_Q3_K_QS, j, l) | ((wr[l] >> j) & 1) << 2;
                s[l / 16] += (q - 4) * xq[l];
            }
            int32_t isum = shardlm_q3_k_scale(wr + SHARDLM_Q3_K_SC, 2 * j) * s[0] +
                           shardlm_q3_k_scale(wr + SHARDLM_Q3_K_SC, 2 * j + 1) * s[1];
            acc += (float)isum * (d * xd[sb * KM_BLOCKS + (size_t)j]);
        }
    }
    return acc;
}

static float q5_k_dot(const uint8_t *wr, size_t cols, const int8_t *xq, const float *xd, const float *xs)
{
    float acc = 0.0f, corr = 0.0f;
    for (size_t sb = 0; sb < cols / SHARDLM_QK_K; sb++, wr += SHARDLM_Q5_K_BYTES) {
        float d = shardlm_qb_f16(wr), dmin = shardlm_qb_f16(wr + 2);
        const uint8_t *qh = wr + SHARDLM_Q5_K_QH;
        for (int j = 0; j < KM_BLOCKS; j++, xq += SHARDLM_QK) {
            int sc, m, shift = (j % 2) * 4;
            shardlm_q4_k_scale_min(wr + 4, j, &sc, &m);
            const uint8_t *qj = wr + SHARDLM_Q5_K_QS + 32 * (j / 2);
            int32_t isum = 0;
            for (int l = 0; l < 32; l++) isum += (((qj[l] >> shift) & 15) | ((qh[l] >> j) & 1) << 4) * xq[l];
            size_t b = sb * KM_BLOCKS + (size_t)j;
            acc += (float)isum * (d * (float)sc * xd[b]);
            corr += dmin * (float)m * xs[b];
        }
    }
    return acc - corr;
}

SHARDLM_SCALAR_ROWS(shardlm_scalar_q2_k, q2_k_dot)
SHARDLM_SCALAR_ROWS(shardlm_scalar_q3_k, q3_k_dot)
SHARDLM_SCALAR_ROWS(shardlm_scalar_q5_k, q5_k_dot)

/* ---- AVX2 ---- */

#if defined(__x86_64__)

/* Two int16 (or int8) values: a in the low 128-bit lane, b in the high. */
AVX2_INLINE __m256i km_pair16(int a, int b)
{
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)a)), _mm_set1_epi16((short)b), 1);
}
AVX2_INLINE __m256i km_pair8(int a, int b)
{
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi8((char)a)), _mm_set1_epi8((char)b), 1);
}

AVX2_INLINE void q2_k_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK, nsb = a->cols / SHARDLM_QK_K;
    const uint8_t *wr = a->w + r * a->row_bytes;
    const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi16(1);
    __m256 acc[4];
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm256_setzero_ps();
    for (size_t sb = 0; sb < nsb; sb++, wr += SHARDLM_Q2_K_BYTES) {
        float d = _cvtsh_ss(shardlm_rd16(wr + SHARDLM_Q2_K_D)), dmin = _cvtsh_ss(shardlm_rd16(wr + SHARDLM_Q2_K_D + 2));
        for (int h = 0; h < 2; h++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(wr + SHARDLM_Q2_K_QS + 32 * h));
            for (int k = 0; k < 4; k++) {
                int j = 4 * h + k;
                const uint8_t *sc = wr + 2 * j;
                __m256i w = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), three);
                __m256i scv = km_pair16(sc[0] & 15, sc[1] & 15), mv = km_pair8(sc[0] >> 4, sc[1] >> 4);
                size_t b = sb * KM_BLOCKS + (size_t)j;
#pragma GCC unroll 4
                for (int ii = 0; ii < N; ii++) {
                    __m256i x = mr_x(a, i0 + ii, b);
                    __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), scv);
                    __m256i t = _mm256_madd_epi16(_mm256_maddubs_epi16(mv, x), one);
                    float xd = a->xd[(i0 + ii) * nb + b];
                    acc[ii] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * xd), acc[ii]);
                    acc[ii] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), _mm256_set1_ps(-(dmin * xd)), acc[ii]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) a->y[(i0 + ii) * a->rows + r] = hsum8(acc[ii]);
}

/* The 16 scales of a Q3_K super-block, minus 32, as int16. */
AVX2_INLINE void q3_k_scales16(const uint8_t *s, int16_t out[16])
{
    uint8_t r[16];
    shardlm_q3_k_scales_biased(s, r);
    __m128i v = _mm_sub_epi8(_mm_loadu_si128((const __m128i *)r), _mm_set1_epi8(32));
    _mm256_storeu_si256((__m256i *)out, _mm256_cvtepi8_epi16(v));
}

/* Per block: the signed codes q - 4 (-4..3) once, then per input the sign
 * trick (|w| * (x * sign w)) sums them against x in int16 pairs, and one
 * madd weights the two 16-value halves by their signed scales. */
AVX2_INLINE void q3_k_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK, nsb = a->cols / SHARDLM_QK_K;
    const uint8_t *wr = a->w + r * a->row_bytes;
    const __m256i three = _mm256_set1_epi8(3), bit = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
    __m256 acc[4];
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm256_setzero_ps();
    for (size_t sb = 0; sb < nsb; sb++, wr += SHARDLM_Q3_K_BYTES) {
        float d = _cvtsh_ss(shardlm_rd16(wr + SHARDLM_Q3_K_D));
        int16_t sc[16];
        q3_k_scales16(wr + SHARDLM_Q3_K_SC, sc);
        __m256i hm = _mm256_loadu_si256((const __m256i *)wr);
        for (int h = 0; h < 2; h++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(wr + SHARDLM_Q3_K_QS + 32 * h));
            for (int k = 0; k < 4; k++) {
                int j = 4 * h + k;
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, j), bit);
                __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), three);
                __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2));
                __m256i w = _mm256_sub_epi8(u, four), aw = _mm256_abs_epi8(w);
                __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[2 * j + 1]), _mm_set1_epi16(sc[2 * j]));
                size_t b = sb * KM_BLOCKS + (size_t)j;
#pragma GCC unroll 4
                for (int ii = 0; ii < N; ii++) {
                    __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(mr_x(a, i0 + ii, b), w));
                    __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, scv));
                    acc[ii] = _mm256_fmadd_ps(f, _mm256_set1_ps(d * a->xd[(i0 + ii) * nb + b]), acc[ii]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) a->y[(i0 + ii) * a->rows + r] = hsum8(acc[ii]);
}

AVX2_INLINE void q5_k_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N)
{
    size_t nsb = a->cols / SHARDLM_QK_K, nb = a->cols / SHARDLM_QK;
    const uint8_t *wr = a->w + r * a->row_bytes;
    const __m256i low = _mm256_set1_epi8(0x0f), bit = _mm256_set1_epi8(1);
    __m256 acc[4];
    float corr[4] = {0};
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm256_setzero_ps();
    for (size_t sb = 0; sb < nsb; sb++, wr += SHARDLM_Q5_K_BYTES) {
        float d = _cvtsh_ss(shardlm_rd16(wr)), dmin = _cvtsh_ss(shardlm_rd16(wr + 2));
        float fs[4][KM_BLOCKS];
        for (int j = 0; j < KM_BLOCKS; j++) {
            int sc, m;
            shardlm_q4_k_scale_min(wr + 4, j, &sc, &m);
#pragma GCC unroll 4
            for (int ii = 0; ii < N; ii++) {
                size_t b = (i0 + ii) * nb + sb * KM_BLOCKS + (size_t)j;
                fs[ii][j] = d * (float)sc * a->xd[b];
                corr[ii] += dmin * (float)m * a->xs[b];
            }
        }
        __m256i qh = _mm256_loadu_si256((const __m256i *)(wr + SHARDLM_Q5_K_QH));
        for (int c = 0; c < 4; c++) {
            __m256i w = _mm256_loadu_si256((const __m256i *)(wr + SHARDLM_Q5_K_QS + 32 * c));
            __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), bit), 4);
            __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), bit), 4);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(w, low), h0);
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(w, 4), low), h1);
#pragma GCC unroll 4
            for (int ii = 0; ii < N; ii++) {
                size_t b = sb * KM_BLOCKS + 2 * (size_t)c;
                __m256i p0 = dot_u8s8(lo, mr_x(a, i0 + ii, b)), p1 = dot_u8s8(hi, mr_x(a, i0 + ii, b + 1));
                acc[ii] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(fs[ii][2 * c]), acc[ii]);
                acc[ii] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(fs[ii][2 * c + 1]), acc[ii]);
            }
        }
    }
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) a->y[(i0 + ii) * a->rows + r] = hsum8(acc[ii]) - corr[ii];
}

SHARDLM_AVX2_ROWS(shardlm_avx2_q2_k, q2_k_tile)
SHARDLM_AVX2_ROWS(shardlm_avx2_q3_k, q3_k_tile)
SHARDLM_AVX2_ROWS(shardlm_avx2_q5_k, q5_k_tile)
#endif
