/* matmul_k.c - matrix products with Q4_K / Q6_K weights: a portable scalar
 * kernel and an AVX2 one (per-function target attributes, used by the x86
 * SIMD paths but avx512vnni, which takes matmul_avx512_k.c's kernels with
 * the same bits; NEON and scalar builds use the scalar kernel).
 *
 * Both read the same 8-bit activations as Q8_0 (blocks of 32 with scale xd
 * and xs = xd * sum(q)), which line up with the k-quant sub-blocks:
 *   Q4_K: one activation block per sub-block j of 32 values, so
 *     sum_j [ d*sc_j*xd_j * sum(q4*qx) ] - sum_j dmin*m_j*xs_j
 *     and the min term needs no per-element work at all.
 *   Q6_K: one activation block per pair of 16-value sub-blocks, so
 *     sum_j d*xd_j * (sc_2j * sum_a((q6-32)*qx) + sc_2j+1 * sum_b(...)),
 *     all integer inside a block.
 * The result differs from shardlm_ref_matmul only by the activation
 * rounding, as for Q8_0/Q4_0. */
#include "matmul_rows.h"
#include "quant_k.h"

#define KQ_SB_BLOCKS (SHARDLM_QK_K / SHARDLM_QK) /* activation blocks per super-block */

/* ---- scalar ---- */

static float q4_k_row_dot(const uint8_t *wr, size_t nsb, const int8_t *xq, const float *xd, const float *xs)
{
    float acc = 0.0f, corr = 0.0f;
    for (size_t sb = 0; sb < nsb; sb++, wr += SHARDLM_Q4_K_BYTES) {
        float d = shardlm_f16_to_f32(shardlm_rd16(wr)), dmin = shardlm_f16_to_f32(shardlm_rd16(wr + 2));
        const uint8_t *q = wr + 16;
        for (int j = 0; j < KQ_SB_BLOCKS; j++) {
            int sc, m, shift = (j % 2) * 4;
            shardlm_q4_k_scale_min(wr + 4, j, &sc, &m);
            const uint8_t *qj = q + 32 * (j / 2);
            const int8_t *x = xq + (sb * KQ_SB_BLOCKS + j) * SHARDLM_QK;
            int32_t isum = 0;
            for (int l = 0; l < 32; l++) isum += ((qj[l] >> shift) & 0x0f) * x[l];
            size_t b = sb * KQ_SB_BLOCKS + (size_t)j;
            acc += (float)isum * (d * (float)sc * xd[b]);
            corr += dmin * (float)m * xs[b];
        }
    }
    return acc - corr;
}

/* The 6-bit code (0..63) of value l + 32k (k = 0..3) of a Q6_K half. */
static int q6_k_code(const uint8_t *ql, const uint8_t *qh, int k, int l)
{
    int lo = k % 2 ? ql[l + 32] : ql[l];
    lo = k < 2 ? lo & 0x0f : lo >> 4;
    return lo | (((qh[l] >> (2 * k)) & 3) << 4);
}

static float q6_k_row_dot(const uint8_t *wr, size_t nsb, const int8_t *xq, const float *xd)
{
    float acc = 0.0f;
    for (size_t sb = 0; sb < nsb; sb++, wr += SHARDLM_Q6_K_BYTES) {
        float d = shardlm_f16_to_f32(shardlm_rd16(wr + SHARDLM_Q6_K_D));
        const int8_t *sc = (const int8_t *)(wr + SHARDLM_Q6_K_SC);
        for (int j = 0; j < KQ_SB_BLOCKS; j++) {
            int h = j / 4, k = j % 4;
            const uint8_t *ql = wr + 64 * h, *qh = wr + SHARDLM_Q6_K_QH + 32 * h;
            const int8_t *x = xq + (sb * KQ_SB_BLOCKS + j) * SHARDLM_QK;
            int32_t s0 = 0, s1 = 0;
            for (int l = 0; l < 16; l++) s0 += (q6_k_code(ql, qh, k, l) - 32) * x[l];
            for (int l = 16; l < 32; l++) s1 += (q6_k_code(ql, qh, k, l) - 32) * x[l];
            int32_t isum = sc[2 * j] * s0 + sc[2 * j + 1] * s1;
            acc += (float)isum * (d * xd[sb * KQ_SB_BLOCKS + j]);
        }
    }
    return acc;
}

static void scalar_q4_k(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t nb = a->cols / SHARDLM_QK, nsb = a->cols / SHARDLM_QK_K;
    for (size_t r = r0; r < r1; r++)
        for (size_t i = 0; i < a->n; i++)
            a->y[i * a->rows + r] = q4_k_row_dot(a->w + r * a->row_bytes, nsb, a->xq + i * a->cols, a->xd + i * nb,
                                                 a->xs + i * nb);
}

static void scalar_q6_k(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t nb = a->cols / SHARDLM_QK, nsb = a->cols / SHARDLM_QK_K;
    for (size_t r = r0; r < r1; r++)
        for (size_t i = 0; i < a->n; i++)
            a->y[i * a->rows + r] = q6_k_row_dot(a->w + r * a->row_bytes, nsb, a->xq + i * a->cols, a->xd + i * nb);
}

/* ---- AVX2 ---- */

#if defined(__x86_64__)
#include <immintrin.h>

#define KQ_TARGET __attribute__((target("avx2,fma,f16c")))
#define KQ_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

KQ_INLINE float kq_hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 int32 partial sums of u8 w times s8 x over 32 bytes. */
KQ_INLINE __m256i kq_dot(__m256i w, __m256i x)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

/* One Q4_K row against N inputs (i0..i0+N-1); the nibbles of each chunk are
 * unpacked once and used for all N. */
KQ_INLINE void q4_k_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N)
{
    size_t nsb = a->cols / SHARDLM_QK_K, nb = a->cols / SHARDLM_QK;
    const uint8_t *wr = a->w + r * a->row_bytes;
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256 acc[4];
    float corr[4] = {0};
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm256_setzero_ps();
    for (size_t sb = 0; sb < nsb; sb++, wr += SHARDLM_Q4_K_BYTES) {
        float d = _cvtsh_ss(shardlm_rd16(wr)), dmin = _cvtsh_ss(shardlm_rd16(wr + 2));
        float fs[4][KQ_SB_BLOCKS];
        for (int j = 0; j < KQ_SB_BLOCKS; j++) {
            int sc, m;
            shardlm_q4_k_scale_min(wr + 4, j, &sc, &m);
#pragma GCC unroll 4
            for (int ii = 0; ii < N; ii++) {
                size_t b = (i0 + ii) * nb + sb * KQ_SB_BLOCKS + (size_t)j;
                fs[ii][j] = d * (float)sc * a->xd[b];
                corr[ii] += dmin * (float)m * a->xs[b];
            }
        }
        for (int c = 0; c < 4; c++) {
            __m256i w = _mm256_loadu_si256((const __m256i *)(wr + 16 + 32 * c));
            __m256i lo = _mm256_and_si256(w, low), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), low);
#pragma GCC unroll 4
            for (int ii = 0; ii < N; ii++) {
                const int8_t *x = a->xq + (i0 + ii) * a->cols + (sb * KQ_SB_BLOCKS + 2 * (size_t)c) * SHARDLM_QK;
                __m256i p0 = kq_dot(lo, _mm256_loadu_si256((const __m256i *)x));
                __m256i p1 = kq_dot(hi, _mm256_loadu_si256((const __m256i *)(x + SHARDLM_QK)));
                acc[ii] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(fs[ii][2 * c]), acc[ii]);
                acc[ii] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(fs[ii][2 * c + 1]), acc[ii]);
            }
        }
    }
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) a->y[(i0 + ii) * a->rows + r] = kq_hsum8(acc[ii]) - corr[ii];
}

/* The four 32-byte groups of 6-bit codes of one Q6_K half (values 0-31,
 * 32-63, 64-95, 96-127). */
KQ_INLINE void q6_k_codes(const uint8_t *ql, const uint8_t *qh, __m256i u[4])
{
    const __m256i low = _mm256_set1_epi8(0x0f), top = _mm256_set1_epi8(0x30);
    __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
    __m256i h = _mm256_loadu_si256((const __m256i *)qh);
    /* 16-bit shifts move bits across byte edges; the masks drop them. */
    u[0] = _mm256_or_si256(_mm256_and_si256(l0, low), _mm256_and_si256(_mm256_slli_epi16(h, 4), top));
    u[1] = _mm256_or_si256(_mm256_and_si256(l1, low), _mm256_and_si256(_mm256_slli_epi16(h, 2), top));
    u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low), _mm256_and_si256(h, top));
    u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low),
                           _mm256_and_si256(_mm256_srli_epi16(h, 2), top));
}

/* One Q6_K row against N inputs. Per activation block: (u - 32) * x summed
 * in pairs as int16 (maddubs of u minus maddubs of 32; both in range), then
 * weighted by the two sub-block scales in one madd. */
KQ_INLINE void q6_k_tile(const shardlm_mm_args *a, size_t r, size_t i0, int N)
{
    size_t nsb = a->cols / SHARDLM_QK_K, nb = a->cols / SHARDLM_QK;
    const uint8_t *wr = a->w + r * a->row_bytes;
    const __m256i k32 = _mm256_set1_epi8(32);
    __m256 acc[4];
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm256_setzero_ps();
    for (size_t sb = 0; sb < nsb; sb++, wr += SHARDLM_Q6_K_BYTES) {
        float d = _cvtsh_ss(shardlm_rd16(wr + SHARDLM_Q6_K_D));
        const int8_t *sc = (const int8_t *)(wr + SHARDLM_Q6_K_SC);
        for (int h = 0; h < 2; h++) {
            __m256i u[4];
            q6_k_codes(wr + 64 * h, wr + SHARDLM_Q6_K_QH + 32 * h, u);
            for (int k = 0; k < 4; k++) {
                int j = 4 * h + k;
                __m256i scv = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(sc[2 * j])),
                                                      _mm_set1_epi16(sc[2 * j + 1]), 1);
#pragma GCC unroll 4
                for (int ii = 0; ii < N; ii++) {
                    size_t b = (i0 + ii) * nb + sb * KQ_SB_BLOCKS + (size_t)j;
                    __m256i x = _mm256_loadu_si256((const __m256i *)(a->xq + b * SHARDLM_QK));
                    __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(u[k], x), _mm256_maddubs_epi16(k32, x));
                    __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, scv));
                    acc[ii] = _mm256_fmadd_ps(f, _mm256_set1_ps(d * a->xd[b]), acc[ii]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) a->y[(i0 + ii) * a->rows + r] = kq_hsum8(acc[ii]);
}

/* The row loop the other block types use (matmul_rows.h), kept file-local. */
static SHARDLM_AVX2_ROWS(avx2_q4_k, q4_k_tile)
SHARDLM_AVX2_ROWS(shardlm_avx2_q6_k, q6_k_tile) /* also VNNI decode's (matmul_avx512_k.c) */
#endif

shardlm_mm_fn shardlm_matmul_k_pick(const shardlm_isa_ops *o, shardlm_dtype t)
{
#if defined(__x86_64__)
    /* Measured faster than AVX2 on Zen 5, same bits (docs/PERFORMANCE.md). */
    if (o == &shardlm_isa_avx512vnni)
        return t == SHARDLM_DT_Q4_K ? shardlm_avx512vnni_q4_k : shardlm_avx512vnni_q6_k;
    /* Every x86 SIMD table implies AVX2+FMA+F16C (see isa_lookup). */
    if (o != &shardlm_isa_scalar) return t == SHARDLM_DT_Q4_K ? avx2_q4_k : shardlm_avx2_q6_k;
#else
    (void)o;
#endif
    return t == SHARDLM_DT_Q4_K ? scalar_q4_k : scalar_q6_k;
}
