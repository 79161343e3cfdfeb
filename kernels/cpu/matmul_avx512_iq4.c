/* matmul_avx512_iq4.c - AVX-512 VNNI kernels for IQ4_NL and IQ4_XS weights,
 * two rows per 512-bit register (row r in lanes 0..7, row r + 1 in lanes
 * 8..15), as matmul_avx512_k.c does for Q4_K/Q6_K.
 *
 * The AVX2 kernels (matmul_iq4.c) sum each row in 8 float lanes: per block
 * of 32, lane n gets the exact int32 sum of level * x over bytes 4n..4n+3
 * (maddubs + madd on |level| and sign(x, level)), converted and added as
 * acc_n = fma(p_n, s, acc_n) in block order, s the rounded float product
 * d * xd (IQ4_NL) or (d * ls) * xd (IQ4_XS); then hsum8. vpdpbusd yields
 * the same 4-byte integer sums, so each half of a register repeats one
 * AVX2 register and the output bits are the AVX2 kernel's: switching
 * SHARDLM_ISA never changes a bit (tests/test_iq4_exact.c rebuilds the
 * arithmetic in scalar code and pins both paths to it).
 *
 * vpdpbusd multiplies unsigned by signed bytes and the levels and the
 * activations are both signed, so the activations go in as x ^ 0x80 =
 * x + 128 (unsigned) and each lane's chain starts from -128 * sum of its 4
 * levels, made once per block and shared by every input of the tile: the
 * sum is then exactly sum(level * x), |(x + 128) * level| * 4 < 2^17. */
#if defined(__x86_64__)
#include <immintrin.h>

#include "matmul_avx512_pairs.h"
#include "matmul_rows.h"

#define IV_TARGET "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define IV_INLINE static inline __attribute__((always_inline, target(IV_TARGET)))
#define IV_N 8          /* inputs per tile: 8 accumulators leave room for the row pair's block */

/* The levels of one block (16 nibble bytes at q0, q1) of a row pair, in
 * element order per half (low nibbles are elements 0..15), and the chain
 * start -128 * (sum of each 4 levels). */
IV_INLINE void iv_block(const uint8_t *q0, const uint8_t *q1, __m512i *lev, __m512i *neg)
{
    const __m512i tab = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)shardlm_iq4nl));
    const __m512i order = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)q0)),
                                        _mm_loadu_si128((const __m128i *)q1), 1);
    /* [q0, q0 >> 4, q1, q1 >> 4]; the 16-bit shift's stray bits are masked off. */
    __m512i nib = _mm512_permutex2var_epi64(_mm512_castsi256_si512(v), order,
                                            _mm512_castsi256_si512(_mm256_srli_epi16(v, 4)));
    *lev = _mm512_shuffle_epi8(tab, _mm512_and_si512(nib, _mm512_set1_epi8(0x0f)));
    *neg = _mm512_sub_epi32(_mm512_setzero_si512(),
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), *lev));
}

/* The f16 at p0 in lanes 0..7 and the one at p1 in lanes 8..15. */
IV_INLINE __m512 iv_d2(const uint8_t *p0, const uint8_t *p1)
{
    __m128i h = _mm_cvtsi32_si128((int)((uint32_t)shardlm_rd16(p0) | (uint32_t)shardlm_rd16(p1) << 16));
    const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    return _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_cvtph_ps(h)));
}

/* acc[ii] += block b of a row pair (levels, chain start, per-half scale sv)
 * for inputs i0..i0+N-1; sv * xd is the AVX2 kernel's rounded product. */
IV_INLINE void iv_step(const shardlm_mm_args *a, __m512i lev, __m512i neg, __m512 sv, size_t i0, int N, size_t b,
                       __m512 *acc)
{
    size_t nb = a->cols / SHARDLM_QK;
#pragma GCC unroll 8
    for (int ii = 0; ii < N; ii++) {
        const int8_t *x = a->xq + (i0 + ii) * a->cols + b * SHARDLM_QK;
        __m512i xv = _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)x)),
                                      _mm512_set1_epi8((char)0x80));
        __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(neg, xv, lev));
        acc[ii] = _mm512_fmadd_ps(p, _mm512_mul_ps(sv, _mm512_set1_ps(a->xd[(i0 + ii) * nb + b])), acc[ii]);
    }
}

/* The first input pass streams the rows (later ones hit L1/L2): fetch the
 * same bytes of the rows the next tile pass reads. A fixed 2 KB ahead in
 * each row, as Q6_K does, ran IQ4_NL decode at 20 GMAC/s where this runs
 * 25-36, and without a prefetch at 10 (docs/PERFORMANCE.md). */
IV_INLINE void iv_prefetch(const shardlm_mm_args *a, const uint8_t *p0, const uint8_t *p1, size_t i0, int P, int lines)
{
    if (i0) return;
    size_t dist = 2 * (size_t)P * a->row_bytes;
    for (int l = 0; l < 64 * lines; l += 64) {
        _mm_prefetch((const char *)p0 + dist + l, _MM_HINT_T0);
        _mm_prefetch((const char *)p1 + dist + l, _MM_HINT_T0);
    }
}

IV_INLINE void iv_store(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N, __m512 acc[][IV_N])
{
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 8
        for (int ii = 0; ii < N; ii++) {
            size_t rr = r + 2 * (size_t)p;
            float *y = a->y + (i0 + ii) * a->rows + rr;
            y[0] = hsum8(_mm512_castps512_ps256(acc[p][ii]));
            if (rr + 1 < r1) y[1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p][ii]), 1)));
        }
}

/* ---- IQ4_NL ---- */

/* Rows r + 2p, r + 2p + 1 (p < P) against inputs i0..i0+N-1. */
IV_INLINE void nl_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK;
    const uint8_t *w0[2], *w1[2];
    __m512 acc[2][IV_N];
    kv_row_pairs(a, r, r1, P, w0, w1);
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 8
        for (int ii = 0; ii < N; ii++) acc[p][ii] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        size_t off = b * SHARDLM_IQ4_NL_BYTES;
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) {
            const uint8_t *x0 = w0[p] + off, *x1 = w1[p] + off;
            if (b % 8 == 0) iv_prefetch(a, x0, x1, i0, P, 3); /* 8 blocks are 144 bytes */
            __m512i lev, neg;
            iv_block(x0 + 2, x1 + 2, &lev, &neg);
            iv_step(a, lev, neg, iv_d2(x0, x1), i0, N, b, acc[p]);
        }
    }
    iv_store(a, r, r1, P, i0, N, acc);
}

/* ---- IQ4_XS ---- */

/* The 8 sub-block scales ls - 32 of each row's super-block as floats per
 * half: 4-bit lows at bytes 4..7 (sub-block j: bits 4j..4j+3 of that
 * word), 2-bit highs at bytes 2..3 (bits 2j, 2j + 1). */
IV_INLINE __m512 xs_scales(const uint8_t *b0, const uint8_t *b1)
{
    uint32_t l0, l1;
    memcpy(&l0, b0 + 4, 4);
    memcpy(&l1, b1 + 4, 4);
    const __m512i sl = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
    const __m512i sh = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14);
    __m512i lo = _mm512_inserti64x4(_mm512_set1_epi32((int)l0), _mm256_set1_epi32((int)l1), 1);
    __m512i hi =
        _mm512_inserti64x4(_mm512_set1_epi32(shardlm_rd16(b0 + 2)), _mm256_set1_epi32(shardlm_rd16(b1 + 2)), 1);
    lo = _mm512_and_si512(_mm512_srlv_epi32(lo, sl), _mm512_set1_epi32(15));
    hi = _mm512_and_si512(_mm512_srlv_epi32(hi, sh), _mm512_set1_epi32(3));
    __m512i ls = _mm512_sub_epi32(_mm512_or_si512(lo, _mm512_slli_epi32(hi, 4)), _mm512_set1_epi32(32));
    return _mm512_cvtepi32_ps(ls);
}

/* As nl_tile; the scale of sub-block j per half is d * (ls_j - 32), the
 * AVX2 kernel's rounded float product. */
IV_INLINE void xs_tile(const shardlm_mm_args *a, size_t r, size_t r1, int P, size_t i0, int N)
{
    size_t nsb = a->cols / SHARDLM_QK_K;
    const uint8_t *w0[2], *w1[2];
    __m512 acc[2][IV_N];
    kv_row_pairs(a, r, r1, P, w0, w1);
#pragma GCC unroll 2
    for (int p = 0; p < P; p++)
#pragma GCC unroll 8
        for (int ii = 0; ii < N; ii++) acc[p][ii] = _mm512_setzero_ps();
    for (size_t sb = 0; sb < nsb; sb++) {
        size_t off = sb * SHARDLM_IQ4_XS_BYTES;
#pragma GCC unroll 2
        for (int p = 0; p < P; p++) {
            const uint8_t *x0 = w0[p] + off, *x1 = w1[p] + off;
            iv_prefetch(a, x0, x1, i0, P, 3); /* 136 bytes */
            __m512 dl = _mm512_mul_ps(iv_d2(x0, x1), xs_scales(x0, x1));
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                const __m512i pick = _mm512_setr_epi32(j, j, j, j, j, j, j, j, 8 + j, 8 + j, 8 + j, 8 + j, 8 + j,
                                                       8 + j, 8 + j, 8 + j);
                __m512i lev, neg;
                iv_block(x0 + SHARDLM_IQ4_XS_QS + 16 * j, x1 + SHARDLM_IQ4_XS_QS + 16 * j, &lev, &neg);
                iv_step(a, lev, neg, _mm512_permutexvar_ps(pick, dl), i0, N, 8 * sb + (size_t)j, acc[p]);
            }
        }
    }
    iv_store(a, r, r1, P, i0, N, acc);
}

/* The row loop is matmul_avx512_pairs.h's, with IV_N-input tiles. */
static const shardlm_mm_fn iv_nl_decode = NULL, iv_xs_decode = NULL;

KV_ROWS(shardlm_avx512vnni_iq4_nl, nl_tile, 2, iv_nl_decode, IV_N)
KV_ROWS(shardlm_avx512vnni_iq4_xs, xs_tile, 2, iv_xs_decode, IV_N)
#endif
