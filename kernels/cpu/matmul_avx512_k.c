/* matmul_avx512_k.c - AVX-512 VNNI kernels for the K-quants (Q2_K to Q6_K)
 * on the plain ggml layout, two rows per 512-bit register (row r in lanes
 * 0..7, row r + 1 in lanes 8..15), so each half does what one AVX2 register
 * does in matmul_k.c (matmul_k_more.c for Q2_K, Q3_K, Q5_K) and the bits stay the AVX2
 * kernel's.
 *
 * Why two rows in halves rather than 16 rows in lanes (as Q4_0_R8): the
 * AVX2 kernels sum each row in 8 float lanes, lane n holding bytes 4n..4n+3
 * of every 32-byte chunk, then add the lanes in hsum8's order. vpdpbusd
 * produces exactly those 4-byte integer sums, so a half-register keeps
 * every rounding of the AVX2 path: switching SHARDLM_ISA never changes an
 * output bit, and no repacked layout is needed (tests/test_quant_k.c
 * rebuilds the arithmetic in scalar code and pins both paths to it).
 *
 * Per row and input the AVX2 arithmetic is:
 *   Q4_K: per 32-value sub-block j, fs_j = (d * sc_j) * xd_j and the exact
 *     int32 4-byte sums p of nibble * x; acc = fma(p, fs_j, acc) in j
 *     order; corr += (dmin * m_j) * xs_j in j order; y = hsum8(acc) - corr.
 *   Q5_K: as Q4_K, the value's fifth bit or-ed into each nibble first.
 *   Q6_K: per 32-value block j, the exact int32 sc * sum((u - 32) * x) of 4
 *     bytes (sc the 16-value sub-block's scale); acc = fma(that, d * xd_j,
 *     acc) in j order; y = hsum8(acc).
 *   Q3_K and Q2_K: as Q6_K with their own codes and signed (Q3_K) or
 *     unsigned (Q2_K) 16-value scales; Q2_K adds fma(m * sum(x),
 *     -(dmin * xd_j), acc) after each block's product.
 * Products of two floats are each rounded (ISO C: no contraction), as in
 * the AVX2 kernels' scalar code. */
#if defined(__x86_64__)
#include "matmul_avx512_pairs.h"
#include "quant_blocks.h"
#include "quant_k.h"

/* ---- Q4_K ---- */

/* The 8 scales and 8 mins of a Q4_K super-block (quant_k.h's layout) as
 * floats, unpacked a 32-bit word at a time. */
KV_INLINE void q4k_scales(const uint8_t *s, __m256 *sc, __m256 *m)
{
    uint32_t w[3], o[4];
    memcpy(w, s, 12);
    o[0] = w[0] & 0x3f3f3f3fu;
    o[1] = (w[2] & 0x0f0f0f0fu) | (w[0] >> 6 & 0x03030303u) << 4;
    o[2] = w[1] & 0x3f3f3f3fu;
    o[3] = (w[2] >> 4 & 0x0f0f0f0fu) | (w[1] >> 6 & 0x03030303u) << 4;
    __m128i v = _mm_loadu_si128((const __m128i *)o);
    *sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
    *m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8)));
}

/* Rows r + 2p, r + 2p + 1 (p < P; a missing second row repeats the first
 * and is not stored) against inputs i0..i0+N-1. Q5 (a constant): Q5_K,
 * whose fifth bit joins each nibble before the products, as in the AVX2
 * kernel (matmul_k_more.c); everything after is Q4_K's arithmetic. */
#define KV_VCORR (P == 1 && N > 1) /* the min-term sums in lanes (batches) */
KV_INLINE void q45k_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N, int Q5)
{
    size_t nsb = a->cols / SHARDLM_QK_K, nb = a->cols / SHARDLM_QK;
    size_t sb_bytes = Q5 ? SHARDLM_Q5_K_BYTES : SHARDLM_Q4_K_BYTES, qs = Q5 ? SHARDLM_Q5_K_QS : 16;
    const uint8_t *w0[2], *w1[2];
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512i pick[KV_SB];
#pragma GCC unroll 8
    for (int j = 0; j < KV_SB; j++)
        pick[j] = _mm512_setr_epi32(j, j, j, j, j, j, j, j, 8 + j, 8 + j, 8 + j, 8 + j, 8 + j, 8 + j, 8 + j, 8 + j);
    __m512 acc[2][4], cv = _mm512_setzero_ps();
    float corr[2][4][2];
    kv_row_pairs(a, r, r1, P, w0, w1);
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            acc[p][ii] = _mm512_setzero_ps();
            corr[p][ii][0] = corr[p][ii][1] = 0.0f;
        }
    for (size_t sb = 0; sb < nsb; sb++) {
        size_t off = sb * sb_bytes, b0 = sb * KV_SB;
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) {
            const uint8_t *x0 = w0[p] + off, *x1 = w1[p] + off;
            __m512i qh = Q5 ? kv_pair(x0 + SHARDLM_Q5_K_QH, x1 + SHARDLM_Q5_K_QH) : _mm512_setzero_si512();
            __m256 sc0, m0, sc1, m1;
            q4k_scales(x0 + 4, &sc0, &m0);
            q4k_scales(x1 + 4, &sc1, &m1);
            /* (d * sc_j) and (dmin * m_j) per half, as the AVX2 kernel's scalar products. */
            __m512 ds = _mm512_mul_ps(kv_two(_cvtsh_ss(shardlm_rd16(x0)), _cvtsh_ss(shardlm_rd16(x1))), kv_cat(sc0, sc1));
            __m512 dm = _mm512_mul_ps(kv_two(_cvtsh_ss(shardlm_rd16(x0 + 2)), _cvtsh_ss(shardlm_rd16(x1 + 2))),
                                      kv_cat(m0, m1));
            __m512 fs[4];
#pragma GCC unroll 4
            for (int ii = 0; ii < N; ii++) fs[ii] = _mm512_mul_ps(ds, kv_f8(a->xd + (i0 + ii) * nb + b0));
            if (KV_VCORR) {
                /* One lane per (row h, input ii), lane 4h + ii: the same
                 * products and the same j-order sums, 8 adds per super-block
                 * for the tile instead of 16 per input. */
                __m256 xsv[4];
#pragma GCC unroll 4
                for (int ii = 0; ii < 4; ii++)
                    xsv[ii] = ii < N ? _mm256_loadu_ps(a->xs + (i0 + ii) * nb + b0) : _mm256_setzero_ps();
                __m512 xa = kv_cat(xsv[0], xsv[1]), xc = kv_cat(xsv[2], xsv[3]);
#pragma GCC unroll 8
                for (int j = 0; j < KV_SB; j++) {
                    const __m512i im = _mm512_setr_epi32(j, j, j, j, 8 + j, 8 + j, 8 + j, 8 + j, j, j, j, j, 8 + j,
                                                         8 + j, 8 + j, 8 + j);
                    const __m512i ix = _mm512_setr_epi32(j, 8 + j, 16 + j, 24 + j, j, 8 + j, 16 + j, 24 + j, j, 8 + j,
                                                         16 + j, 24 + j, j, 8 + j, 16 + j, 24 + j);
                    cv = _mm512_add_ps(cv, _mm512_mul_ps(_mm512_permutexvar_ps(im, dm), _mm512_permutex2var_ps(xa, ix, xc)));
                }
            } else {
#pragma GCC unroll 4
                for (int ii = 0; ii < N; ii++) {
                    float t[16];
                    _mm512_storeu_ps(t, _mm512_mul_ps(dm, kv_f8(a->xs + (i0 + ii) * nb + b0)));
                    for (int j = 0; j < KV_SB; j++) {
                        corr[p][ii][0] += t[j];
                        corr[p][ii][1] += t[8 + j];
                    }
                }
            }
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                __m512i q = kv_pair(x0 + qs + 32 * c, x1 + qs + 32 * c);
                __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
                if (Q5) { /* bit 2c (2c + 1) of each qh byte is the fifth bit of sub-block 2c's (2c + 1's) value */
                    const __m512i bit = _mm512_set1_epi8(1);
                    lo = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh, 2 * c), bit), 4));
                    hi = _mm512_or_si512(hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh, 2 * c + 1), bit), 4));
                }
#pragma GCC unroll 4
                for (int ii = 0; ii < N; ii++) {
                    __m512i p0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, kv_x(a, i0 + ii, b0 + 2 * c));
                    __m512i p1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, kv_x(a, i0 + ii, b0 + 2 * c + 1));
                    __m512 f0 = _mm512_permutexvar_ps(pick[2 * c], fs[ii]);
                    __m512 f1 = _mm512_permutexvar_ps(pick[2 * c + 1], fs[ii]);
                    acc[p][ii] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p0), f0, acc[p][ii]);
                    acc[p][ii] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p1), f1, acc[p][ii]);
                }
            }
        }
    }
    if (KV_VCORR) {
        float t[16];
        _mm512_storeu_ps(t, cv);
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) corr[0][ii][0] = t[ii], corr[0][ii][1] = t[4 + ii];
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++)
            kv_store(a, i0 + ii, r + 2 * (size_t)p, r + 2 * (size_t)p + 1 < r1, acc[p][ii], corr[p][ii]);
}
#undef KV_VCORR

KV_INLINE void q4k_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N)
{
    q45k_tile(a, r, r1, P, i0, N, 0);
}

KV_INLINE void q5k_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N)
{
    q45k_tile(a, r, r1, P, i0, N, 1);
}

/* ---- Q6_K ---- */

/* The four 32-byte groups of 6-bit codes of one half (values 0-31, 32-63,
 * 64-95, 96-127) of two rows, as matmul_k.c's q6_k_codes per half. */
KV_INLINE void q6k_codes(const uint8_t *r0, const uint8_t *r1, int h, __m512i u[4])
{
    const __m512i low = _mm512_set1_epi8(0x0f), top = _mm512_set1_epi8(0x30);
    __m512i l0 = kv_pair(r0 + 64 * h, r1 + 64 * h), l1 = kv_pair(r0 + 64 * h + 32, r1 + 64 * h + 32);
    __m512i q = kv_pair(r0 + SHARDLM_Q6_K_QH + 32 * h, r1 + SHARDLM_Q6_K_QH + 32 * h);
    /* 16-bit shifts move bits across byte edges; the masks drop them. */
    u[0] = _mm512_or_si512(_mm512_and_si512(l0, low), _mm512_and_si512(_mm512_slli_epi16(q, 4), top));
    u[1] = _mm512_or_si512(_mm512_and_si512(l1, low), _mm512_and_si512(_mm512_slli_epi16(q, 2), top));
    u[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l0, 4), low), _mm512_and_si512(q, top));
    u[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l1, 4), low),
                           _mm512_and_si512(_mm512_srli_epi16(q, 2), top));
}

/* As q4k_tile. Per block j and input: s = dpbusd(u, x) - dpbusd(32, x) is
 * the exact sum of (u - 32) * x over each 4 bytes, times the int32 scale of
 * its 16-value sub-block (lanes 0-3 and 8-11: sc_2j, 4-7 and 12-15:
 * sc_2j+1): the integer of the AVX2 maddubs/madd chain, |s * sc| < 2^23. */
KV_INLINE void q6k_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N)
{
    size_t nsb = a->cols / SHARDLM_QK_K, nb = a->cols / SHARDLM_QK;
    const uint8_t *w0[2], *w1[2];
    const __m512i k32 = _mm512_set1_epi8(32);
    __m512 acc[2][4];
    kv_row_pairs(a, r, r1, P, w0, w1);
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) acc[p][ii] = _mm512_setzero_ps();
    for (size_t sb = 0; sb < nsb; sb++) {
        size_t off = sb * SHARDLM_Q6_K_BYTES, b0 = sb * KV_SB;
        /* 32 * sum(x) per 4 bytes, the same for every row pair. */
        __m512i ox[4][KV_SB];
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++)
#pragma GCC unroll 8
            for (int j = 0; j < KV_SB; j++)
                ox[ii][j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k32, kv_x(a, i0 + ii, b0 + j));
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) {
            const uint8_t *x0 = w0[p] + off, *x1 = w1[p] + off;
            if (i0 == 0) /* the first input pass streams the rows; later ones hit L1/L2 */
                for (int l = 0; l < SHARDLM_Q6_K_BYTES; l += 64) {
                    _mm_prefetch((const char *)x0 + KV_PF_BYTES + l, _MM_HINT_T0);
                    _mm_prefetch((const char *)x1 + KV_PF_BYTES + l, _MM_HINT_T0);
                }
            __m512 dv = kv_two(_cvtsh_ss(shardlm_rd16(x0 + SHARDLM_Q6_K_D)), _cvtsh_ss(shardlm_rd16(x1 + SHARDLM_Q6_K_D)));
            __m512i s0 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(x0 + SHARDLM_Q6_K_SC)));
            __m512i s1 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(x1 + SHARDLM_Q6_K_SC)));
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m512i u[4];
                q6k_codes(x0, x1, h, u);
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    int j = 4 * h + k, e = 2 * j, o = 2 * j + 1;
                    __m512i idx = _mm512_setr_epi32(e, e, e, e, o, o, o, o, 16 + e, 16 + e, 16 + e, 16 + e, 16 + o,
                                                    16 + o, 16 + o, 16 + o);
                    __m512i scv = _mm512_permutex2var_epi32(s0, idx, s1);
#pragma GCC unroll 4
                    for (int ii = 0; ii < N; ii++) {
                        size_t b = (i0 + ii) * nb + b0 + (size_t)j;
                        __m512i s = _mm512_sub_epi32(
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[k], kv_x(a, i0 + ii, b0 + (size_t)j)),
                            ox[ii][j]);
                        __m512 f = _mm512_cvtepi32_ps(_mm512_mullo_epi32(s, scv));
                        acc[p][ii] = _mm512_fmadd_ps(f, _mm512_mul_ps(dv, _mm512_set1_ps(a->xd[b])), acc[p][ii]);
                    }
                }
            }
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) kv_store(a, i0 + ii, r + 2 * (size_t)p, r + 2 * (size_t)p + 1 < r1, acc[p][ii], NULL);
}

/* ---- Q3_K and Q2_K: 16-value sub-blocks, as Q6_K ---- */

/* The int32 scale of each 4-byte group of value block j for two rows whose
 * 16 sub-block scales (as int32) are s0 and s1: lanes 0-3 and 8-11 take
 * sub-block 2j, 4-7 and 12-15 sub-block 2j + 1. */
KV_INLINE __m512i kv_sub_scales(__m512i s0, __m512i s1, int j)
{
    int e = 2 * j, o = 2 * j + 1;
    const __m512i idx =
        _mm512_setr_epi32(e, e, e, e, o, o, o, o, 16 + e, 16 + e, 16 + e, 16 + e, 16 + o, 16 + o, 16 + o, 16 + o);
    return _mm512_permutex2var_epi32(s0, idx, s1);
}

/* Q3_K's 16 signed scales of one row as int32. */
KV_INLINE __m512i q3k_scales(const uint8_t *row)
{
    uint8_t b[16];
    shardlm_q3_k_scales_biased(row + SHARDLM_Q3_K_SC, b);
    return _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b)), _mm512_set1_epi32(32));
}

/* As q6k_tile, for the AVX2 kernel's arithmetic (matmul_k_more.c): per
 * block j and input, the exact int32 sc * sum((u - 4) * x) of each 4 bytes
 * (u = 2 low bits | high bit << 2; the AVX2 sign trick sums the same
 * integers), then acc = fma(that, d * xd_j, acc) in j order. */
KV_INLINE void q3k_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N)
{
    size_t nsb = a->cols / SHARDLM_QK_K, nb = a->cols / SHARDLM_QK;
    const uint8_t *w0[2], *w1[2];
    const __m512i k4 = _mm512_set1_epi8(4), three = _mm512_set1_epi8(3), bit = _mm512_set1_epi8(1);
    __m512 acc[2][4];
    kv_row_pairs(a, r, r1, P, w0, w1);
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) acc[p][ii] = _mm512_setzero_ps();
    for (size_t sb = 0; sb < nsb; sb++) {
        size_t off = sb * SHARDLM_Q3_K_BYTES, b0 = sb * KV_SB;
        __m512i ox[4][KV_SB]; /* 4 * sum(x) per 4 bytes, the same for every row pair */
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++)
#pragma GCC unroll 8
            for (int j = 0; j < KV_SB; j++)
                ox[ii][j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), k4, kv_x(a, i0 + ii, b0 + j));
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) {
            const uint8_t *x0 = w0[p] + off, *x1 = w1[p] + off;
            __m512 dv = kv_two(_cvtsh_ss(shardlm_rd16(x0 + SHARDLM_Q3_K_D)), _cvtsh_ss(shardlm_rd16(x1 + SHARDLM_Q3_K_D)));
            __m512i s0 = q3k_scales(x0), s1 = q3k_scales(x1), hm = kv_pair(x0, x1);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m512i q = kv_pair(x0 + SHARDLM_Q3_K_QS + 32 * h, x1 + SHARDLM_Q3_K_QS + 32 * h);
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    int j = 4 * h + k;
                    __m512i hb = _mm512_and_si512(_mm512_srli_epi16(hm, j), bit);
                    __m512i u = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(q, 2 * k), three),
                                                _mm512_slli_epi16(hb, 2));
                    __m512i scv = kv_sub_scales(s0, s1, j);
#pragma GCC unroll 4
                    for (int ii = 0; ii < N; ii++) {
                        size_t b = (i0 + ii) * nb + b0 + (size_t)j;
                        __m512i sum = _mm512_sub_epi32(
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, kv_x(a, i0 + ii, b0 + (size_t)j)), ox[ii][j]);
                        __m512 f = _mm512_cvtepi32_ps(_mm512_mullo_epi32(sum, scv));
                        acc[p][ii] = _mm512_fmadd_ps(f, _mm512_mul_ps(dv, _mm512_set1_ps(a->xd[b])), acc[p][ii]);
                    }
                }
            }
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) kv_store(a, i0 + ii, r + 2 * (size_t)p, r + 2 * (size_t)p + 1 < r1, acc[p][ii], NULL);
}

/* As q3k_tile, for Q2_K (value d * sc * q - dmin * m, q 2 bits): per block
 * j and input, s = sc * sum(q * x) and t = m * sum(x) per 4 bytes, exact;
 * acc = fma(s, d * xd_j, acc), then acc = fma(t, -(dmin * xd_j), acc). */
KV_INLINE void q2k_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N)
{
    size_t nsb = a->cols / SHARDLM_QK_K, nb = a->cols / SHARDLM_QK;
    const uint8_t *w0[2], *w1[2];
    const __m512i one = _mm512_set1_epi8(1), three = _mm512_set1_epi8(3), low = _mm512_set1_epi32(15);
    __m512 acc[2][4];
    kv_row_pairs(a, r, r1, P, w0, w1);
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) acc[p][ii] = _mm512_setzero_ps();
    for (size_t sb = 0; sb < nsb; sb++) {
        size_t off = sb * SHARDLM_Q2_K_BYTES, b0 = sb * KV_SB;
        __m512i xs[4][KV_SB]; /* sum(x) per 4 bytes */
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++)
#pragma GCC unroll 8
            for (int j = 0; j < KV_SB; j++)
                xs[ii][j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), one, kv_x(a, i0 + ii, b0 + j));
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) {
            const uint8_t *x0 = w0[p] + off, *x1 = w1[p] + off;
            __m512 dv = kv_two(_cvtsh_ss(shardlm_rd16(x0 + SHARDLM_Q2_K_D)), _cvtsh_ss(shardlm_rd16(x1 + SHARDLM_Q2_K_D)));
            __m512 mv = kv_two(_cvtsh_ss(shardlm_rd16(x0 + SHARDLM_Q2_K_D + 2)),
                               _cvtsh_ss(shardlm_rd16(x1 + SHARDLM_Q2_K_D + 2)));
            __m512i c0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)x0));
            __m512i c1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)x1));
            __m512i s0 = _mm512_and_si512(c0, low), s1 = _mm512_and_si512(c1, low);
            __m512i m0 = _mm512_srli_epi32(c0, 4), m1 = _mm512_srli_epi32(c1, 4);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m512i q = kv_pair(x0 + SHARDLM_Q2_K_QS + 32 * h, x1 + SHARDLM_Q2_K_QS + 32 * h);
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    int j = 4 * h + k;
                    __m512i w = _mm512_and_si512(_mm512_srli_epi16(q, 2 * k), three);
                    __m512i scv = kv_sub_scales(s0, s1, j), mnv = kv_sub_scales(m0, m1, j);
#pragma GCC unroll 4
                    for (int ii = 0; ii < N; ii++) {
                        __m512 xd = _mm512_set1_ps(a->xd[(i0 + ii) * nb + b0 + (size_t)j]);
                        __m512i sq = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, kv_x(a, i0 + ii, b0 + (size_t)j));
                        __m512 fs = _mm512_cvtepi32_ps(_mm512_mullo_epi32(sq, scv));
                        __m512 ft = _mm512_cvtepi32_ps(_mm512_mullo_epi32(xs[ii][j], mnv));
                        acc[p][ii] = _mm512_fmadd_ps(fs, _mm512_mul_ps(dv, xd), acc[p][ii]);
                        /* -(dmin * xd): the sign flip is exact, as the AVX2 kernel's scalar negation */
                        acc[p][ii] = _mm512_fmadd_ps(ft, _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(mv, xd)),
                                                     acc[p][ii]);
                    }
                }
            }
        }
    }
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) kv_store(a, i0 + ii, r + 2 * (size_t)p, r + 2 * (size_t)p + 1 < r1, acc[p][ii], NULL);
}

/* Q6_K and Q3_K decode (one input) run the AVX2 kernel, same bits:
 * streaming the weights from DRAM, two rows per register ran 1.1-2x slower
 * than AVX2's one row at a time even with prefetch (Q3_K: 8.8 against 12.3
 * GMAC/s; docs/PERFORMANCE.md), while in batches it was faster. */
static const shardlm_mm_fn kv_q4k_decode = NULL, kv_q6k_decode = shardlm_avx2_q6_k;
static const shardlm_mm_fn kv_q5k_decode = NULL, kv_q3k_decode = shardlm_avx2_q3_k, kv_q2k_decode = NULL;

KV_ROWS(shardlm_avx512vnni_q4_k, q4k_tile, 2, kv_q4k_decode, 4)
KV_ROWS(shardlm_avx512vnni_q5_k, q5k_tile, 2, kv_q5k_decode, 4)
KV_ROWS(shardlm_avx512vnni_q3_k, q3k_tile, 2, kv_q3k_decode, 4)
KV_ROWS(shardlm_avx512vnni_q2_k, q2k_tile, 2, kv_q2k_decode, 4)
KV_ROWS(shardlm_avx512vnni_q6_k, q6k_tile, 2, kv_q6k_decode, 4)
#endif
