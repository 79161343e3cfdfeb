/* matmul_avx512.c - AVX-512 (BW+VL) and AVX-512 VNNI kernels for Q8_0 and
 * Q4_0 weights. Same tiles and scale tables as matmul_avx2.c, but two
 * 32-element blocks per 512-bit register; VNNI fuses the u8 x s8 multiply
 * and the int32 accumulation into one vpdpbusd. Float weight types,
 * activation quantisation and the elementwise ops reuse the AVX2 code,
 * which every AVX-512 CPU runs (they are memory-bound at n == 1). */
#if defined(__x86_64__)
#include <immintrin.h>

#include "cpu_internal.h"
#include "matmul_x86_tiles.h"

#define T512 "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define T512VNNI "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"

/* Two Q4_0 blocks -> 64 unsigned bytes in activation order:
 * [b0 low nibbles | b0 high | b1 low | b1 high]. */
static inline __attribute__((always_inline, target(T512))) __m512i q4_unpack2(const uint8_t *b0, const uint8_t *b1)
{
    __m256i t = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(b1 + 2)), _mm_loadu_si128((const __m128i *)(b0 + 2)));
    __m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(t), t, 1);      /* q0 q1 q0 q1 */
    a = _mm512_shuffle_i64x2(a, a, _MM_SHUFFLE(3, 1, 2, 0));              /* q0 q0 q1 q1 */
    a = _mm512_mask_blend_epi64(0xCC, a, _mm512_srli_epi16(a, 4));        /* lanes 1, 3 take the high nibbles */
    return _mm512_and_si512(a, _mm512_set1_epi8(0x0f));
}

static inline __attribute__((always_inline, target(T512))) __m512i q8_load2(const uint8_t *b0, const uint8_t *b1)
{
    __m256i lo = _mm256_loadu_si256((const __m256i *)(b0 + 2));
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)(b1 + 2)), 1);
}

/* x * sign(w) for the Q8_0 sign trick (AVX-512 has no vpsignb); where w
 * is 0, |w| is 0 so x need not be zeroed. */
static inline __attribute__((always_inline, target(T512))) __m512i neg_where(__m512i x, __m512i w)
{
    return _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
}

/* Lanes 0..7 get s0, lanes 8..15 get s1. */
static inline __attribute__((always_inline, target(T512))) __m512 pair_scale(float s0, float s1)
{
    __m512d lo = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(s0)));
    return _mm512_castpd_ps(_mm512_insertf64x4(lo, _mm256_castps_pd(_mm256_set1_ps(s1)), 1));
}

/* Defines NAME##_tile for one target and one 512-bit u8 x s8 -> s32 dot. */
#define DEFINE_Q512_TILE(NAME, TGT, DOT512)                                                                   \
    static inline __attribute__((always_inline, target(TGT))) void NAME##_tile(                                \
        const shardlm_mm_args *a, size_t r, int R, size_t i0, int N, int q4)                                   \
    {                                                                                                          \
        size_t nb = a->cols / SHARDLM_QK, bb = q4 ? SHARDLM_Q4_0_BYTES : SHARDLM_Q8_0_BYTES;                   \
        const uint8_t *wr[4];                                                                                  \
        __m512 acc[8];                                                                                         \
        __m256 cv[8];                                                                                          \
        float sc[8][QT_KC];                                                                                    \
        _Pragma("GCC unroll 4") for (int rr = 0; rr < R; rr++) wr[rr] = a->w + (r + rr) * a->row_bytes;        \
        _Pragma("GCC unroll 8") for (int k = 0; k < R * N; k++)                                                \
        {                                                                                                      \
            acc[k] = _mm512_setzero_ps();                                                                      \
            cv[k] = _mm256_setzero_ps();                                                                       \
        }                                                                                                      \
        for (size_t b0 = 0; b0 < nb; b0 += QT_KC) {                                                            \
            size_t kb = nb - b0 < QT_KC ? nb - b0 : QT_KC, b = 0;                                              \
            q_scales(a, wr, bb, R, i0, N, b0, kb, sc, cv, q4);                                                 \
            for (; b + 2 <= kb; b += 2) {                                                                      \
                __m512i wv[4], ws[4];                                                                          \
                _Pragma("GCC unroll 4") for (int rr = 0; rr < R; rr++)                                         \
                {                                                                                              \
                    const uint8_t *blk = wr[rr] + (b0 + b) * bb;                                               \
                    if (q4) {                                                                                  \
                        wv[rr] = q4_unpack2(blk, blk + bb);                                                    \
                    } else {                                                                                   \
                        ws[rr] = q8_load2(blk, blk + bb);                                                      \
                        wv[rr] = _mm512_abs_epi8(ws[rr]);                                                      \
                    }                                                                                          \
                }                                                                                              \
                _Pragma("GCC unroll 4") for (int ii = 0; ii < N; ii++)                                         \
                {                                                                                              \
                    __m512i xv = _mm512_loadu_si512(a->xq + (i0 + ii) * a->cols + (b0 + b) * SHARDLM_QK);     \
                    _Pragma("GCC unroll 4") for (int rr = 0; rr < R; rr++)                                     \
                    {                                                                                          \
                        int k = rr * N + ii;                                                                   \
                        __m512i xs = q4 ? xv : neg_where(xv, ws[rr]);                                          \
                        __m512 p = _mm512_cvtepi32_ps(DOT512(wv[rr], xs));                                     \
                        acc[k] = _mm512_fmadd_ps(p, pair_scale(sc[k][b], sc[k][b + 1]), acc[k]);               \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
            for (; b < kb; b++) /* odd block count: one block on 256 bits */                                   \
                for (int rr = 0; rr < R; rr++) {                                                               \
                    const uint8_t *blk = wr[rr] + (b0 + b) * bb;                                               \
                    __m256i w8 = q4 ? q4_unpack(blk) : _mm256_loadu_si256((const __m256i *)(blk + 2));         \
                    for (int ii = 0; ii < N; ii++) {                                                           \
                        int k = rr * N + ii;                                                                   \
                        __m256i xv = _mm256_loadu_si256(                                                       \
                            (const __m256i *)(a->xq + (i0 + ii) * a->cols + (b0 + b) * SHARDLM_QK));           \
                        __m256i d = q4 ? dot_u8s8(w8, xv)                                                      \
                                       : dot_u8s8(_mm256_abs_epi8(w8), _mm256_sign_epi8(xv, w8));              \
                        __m512 p = _mm512_zextps256_ps512(_mm256_cvtepi32_ps(d));                              \
                        acc[k] = _mm512_fmadd_ps(p, _mm512_set1_ps(sc[k][b]), acc[k]);                         \
                    }                                                                                          \
                }                                                                                              \
        }                                                                                                      \
        for (int rr = 0; rr < R; rr++)                                                                         \
            for (int ii = 0; ii < N; ii++)                                                                     \
                a->y[(i0 + ii) * a->rows + r + rr] =                                                           \
                    _mm512_reduce_add_ps(acc[rr * N + ii]) - 8.0f * hsum8(cv[rr * N + ii]);                    \
    }

#define DOT512_BW(w, x) _mm512_madd_epi16(_mm512_maddubs_epi16((w), (x)), _mm512_set1_epi16(1))
#define DOT512_VNNI(w, x) _mm512_dpbusd_epi32(_mm512_setzero_si512(), (w), (x))

DEFINE_Q512_TILE(q512, T512, DOT512_BW)
DEFINE_Q512_TILE(q512vnni, T512VNNI, DOT512_VNNI)

/* ---- Q4_0_R8 with VNNI: 16 rows in the 16 int32 lanes ----
 *
 * Two R8 groups side by side: group g's 8 rows in lanes 0..7, group g + 1's
 * in lanes 8..15 (the layout stays R8, so SHARDLM_ISA never changes what
 * shardlm_repack builds). Per block and input, 8 vpdpbusd multiply 4
 * nibbles of each of 16 rows by 4 broadcast activations and add into int32
 * (where AVX2 needs maddubs, adds and a madd per 8 rows). The arithmetic per
 * (row, input) is the AVX2 R8 kernel's exactly (matmul_avx2_r8.c): the
 * block's integer dot minus 8 * sum(x), exact, then acc = fma((float)i,
 * d_w * d_x, acc) from +0 in block order. So this kernel, the AVX2 R8 and
 * plain Q4_0 kernels, any tile shape and any thread split give the same
 * bits (tests/test_repack.c). */
#define AI512V static inline __attribute__((always_inline, target(T512VNNI)))

typedef struct {
    __m512 dw;
    __m512i lo[4], hi[4];
} r16_wblk;

/* Block b of the groups at g0 and g1 (g1 may repeat g0: its lanes are then
 * not stored). */
AI512V void r16_load(const uint8_t *b0, const uint8_t *b1, r16_wblk *w)
{
    __m256i h = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)b1), _mm_loadu_si128((const __m128i *)b0));
    w->dw = _mm512_cvtph_ps(h);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b0 + 16 + 32 * c))),
                                       _mm256_loadu_si256((const __m256i *)(b1 + 16 + 32 * c)), 1);
        w->lo[c] = _mm512_and_si512(v, m4);
        w->hi[c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
}

AI512V __m512i r16_bcast4(const int8_t *x)
{
    int32_t v;
    memcpy(&v, x, sizeof v);
    return _mm512_set1_epi32(v);
}

/* acc (16 rows) += one block's contribution for one input. Two integer
 * chains (low and high nibbles) shorten the dependency; their sum is exact. */
AI512V __m512 r16_dot(const r16_wblk *w, const int8_t *x, int32_t xo, float xd, __m512 acc)
{
    __m512i s0 = _mm512_dpbusd_epi32(_mm512_set1_epi32(-xo), w->lo[0], r16_bcast4(x));
    __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w->hi[0], r16_bcast4(x + 16));
#pragma GCC unroll 3
    for (int c = 1; c < 4; c++) {
        s0 = _mm512_dpbusd_epi32(s0, w->lo[c], r16_bcast4(x + 4 * c));
        s1 = _mm512_dpbusd_epi32(s1, w->hi[c], r16_bcast4(x + 16 + 4 * c));
    }
    __m512 p = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
    return _mm512_fmadd_ps(p, _mm512_mul_ps(w->dw, _mm512_set1_ps(xd)), acc);
}

#ifndef R16_PF_BYTES
#define R16_PF_BYTES (32 * 8 * SHARDLM_Q4_0_BYTES) /* as R8_PF_BYTES: 32 blocks ahead per group */
#endif

/* Rows of groups g0, g1 x N inputs from i0; lanes [l0, l1) stored as rows r.. */
AI512V void r16_tile(const shardlm_mm_args *a, const uint8_t *g0, const uint8_t *g1, size_t r, int l0, int l1,
                     size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK;
    const int8_t *xq = a->xq + i0 * a->cols;
    const float *xd = a->xd + i0 * nb;
    const int32_t *xo = a->xo + i0 * nb;
    __m512 acc[4];
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *b0 = g0 + b * 8 * SHARDLM_Q4_0_BYTES, *b1 = g1 + b * 8 * SHARDLM_Q4_0_BYTES;
        if (i0 == 0) { /* the first input pass streams the groups; later ones hit L1/L2 */
            for (int l = 0; l < 8 * SHARDLM_Q4_0_BYTES; l += 64) {
                _mm_prefetch((const char *)b0 + R16_PF_BYTES + l, _MM_HINT_T0);
                _mm_prefetch((const char *)b1 + R16_PF_BYTES + l, _MM_HINT_T0);
            }
        }
        r16_wblk w;
        r16_load(b0, b1, &w);
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++)
            acc[ii] = r16_dot(&w, xq + ii * a->cols + b * SHARDLM_QK, xo[ii * nb + b], xd[ii * nb + b], acc[ii]);
    }
    __mmask16 m = (__mmask16)(((1u << l1) - 1) & ~((1u << l0) - 1));
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) _mm512_mask_storeu_ps(a->y + (i0 + ii) * a->rows + r, m, acc[ii]);
}

/* Every input for the 16 rows at r (8-aligned), lanes [l0, l1). */
static __attribute__((target(T512VNNI))) void r16_rows(const shardlm_mm_args *a, size_t r, int l0, int l1)
{
    size_t rows8 = a->rows & ~(size_t)7;
    const uint8_t *g0 = shardlm_r8_block(a->w, a->row_bytes, r / 8, 0);
    const uint8_t *g1 = r + 8 < rows8 ? shardlm_r8_block(a->w, a->row_bytes, r / 8 + 1, 0) : g0;
    size_t i = 0;
    for (; i + 4 <= a->n; i += 4) r16_tile(a, g0, g1, r, l0, l1, i, 4);
    switch (a->n - i) {
    case 3: r16_tile(a, g0, g1, r, l0, l1, i, 3); break;
    case 2: r16_tile(a, g0, g1, r, l0, l1, i, 2); break;
    case 1: r16_tile(a, g0, g1, r, l0, l1, i, 1); break;
    }
}

static __attribute__((target(T512VNNI))) void avx512vnni_q4_0_r8(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    /* One input (decode) streams the weights once, and there the AVX2 R8
     * kernel measured faster (docs/PERFORMANCE.md); its bits are the same. */
    if (a->n == 1) {
        shardlm_avx2_q4_0_r8(a, r0, r1);
        return;
    }
    size_t rows8 = a->rows & ~(size_t)7, end = r1 < rows8 ? r1 : rows8;
    for (size_t r = r0 & ~(size_t)7; r < end; r += 16) {
        size_t hi = r + 16 < end ? r + 16 : end;
        r16_rows(a, r, r < r0 ? (int)(r0 - r) : 0, (int)(hi - r));
    }
    if (r1 > rows8) shardlm_r8_tail(a, r0 > rows8 ? r0 : rows8, r1);
}

/* Until a 512-bit kernel is measured faster on a real machine, a table
 * holds the AVX2 kernel (and so its repacked layout): the plain 512-bit
 * tiles above ran Q4_0 decode at half the AVX2 R8 speed on Zen 5, because
 * without an R8 entry nothing was repacked (docs/PERFORMANCE.md). */
const shardlm_isa_ops shardlm_isa_avx512 = {
    .name = "avx512",
    SHARDLM_ISA_AVX2_KERNELS,
    .quant_x = shardlm_avx2_quant_x,
    .rmsnorm = shardlm_avx2_rmsnorm,
    .softmax = shardlm_avx2_softmax,
    .silu_mul = shardlm_avx2_silu_mul,
    SHARDLM_ISA_MORE_TYPES_AVX2,
};

const shardlm_isa_ops shardlm_isa_avx512vnni = {
    .name = "avx512vnni",
    /* SHARDLM_ISA_AVX2_KERNELS but for Q4_0_R8 (faster: docs/PERFORMANCE.md). */
    .f32 = shardlm_avx2_f32, .f16 = shardlm_avx2_f16, .bf16 = shardlm_avx2_bf16, .q8_0 = shardlm_avx2_q8_0,
    .q4_0 = shardlm_avx2_q4_0, .q4_0_r8 = avx512vnni_q4_0_r8, .q8_0_r4 = shardlm_avx2_q8_0_r4,
    .quant_x = shardlm_avx2_quant_x,
    .rmsnorm = shardlm_avx2_rmsnorm,
    .softmax = shardlm_avx2_softmax,
    .silu_mul = shardlm_avx2_silu_mul,
    SHARDLM_ISA_MORE_TYPES_AVX2,
};
#endif
