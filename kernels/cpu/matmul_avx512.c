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
    SHARDLM_ISA_AVX2_KERNELS,
    .quant_x = shardlm_avx2_quant_x,
    .rmsnorm = shardlm_avx2_rmsnorm,
    .softmax = shardlm_avx2_softmax,
    .silu_mul = shardlm_avx2_silu_mul,
    SHARDLM_ISA_MORE_TYPES_AVX2,
};
#endif
