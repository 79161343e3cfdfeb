/* matmul_avx512.c - the AVX-512 tables, and the AVX-512 VNNI kernels for
 * the repacked layouts (Q4_0_R8, Q8_0_R4) that measured faster than the
 * AVX2 ones on Zen 5 (docs/PERFORMANCE.md). Each keeps the AVX2 kernel's
 * arithmetic exactly, so switching paths never changes an output bit and
 * batch invariance holds across the two. Everything else the tables take
 * from AVX2 (which every AVX-512 CPU runs), never leaving an entry out. */
#if defined(__x86_64__)
#include <immintrin.h>

#include "cpu_internal.h"
#include "matmul_x86_tiles.h"
#include "quant_k.h"

#define T512 "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define T512VNNI "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"

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

/* acc += w . (4 activation bytes at x, broadcast to every lane): the
 * broadcast folds into vpdpbusd's memory operand ({1to16}), one macro-op
 * where set1 + dpbusd took two (GCC does not fold it on its own). */
AI512V __m512i r16_dp(__m512i acc, __m512i w, const int8_t *x)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)(const void *)x));
    return acc;
}

/* acc (16 rows) += one block's contribution for one input. Two integer
 * chains (low and high nibbles) shorten the dependency; their sum minus
 * 8 * sum(x) is the same exact integer in any order. */
AI512V __m512 r16_dot(const r16_wblk *w, const int8_t *x, const int32_t *xo, const float *xd, __m512 acc)
{
    __m512i s0 = r16_dp(_mm512_setzero_si512(), w->lo[0], x);
    __m512i s1 = r16_dp(_mm512_setzero_si512(), w->hi[0], x + 16);
#pragma GCC unroll 3
    for (int c = 1; c < 4; c++) {
        s0 = r16_dp(s0, w->lo[c], x + 4 * c);
        s1 = r16_dp(s1, w->hi[c], x + 16 + 4 * c);
    }
    __m512 p = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(*xo)));
    return _mm512_fmadd_ps(p, _mm512_mul_ps(w->dw, _mm512_set1_ps(*xd)), acc);
}

/* Inputs per tile: 8 accumulators, the unpacked block (9 registers) and
 * the chains' temporaries fit the 32 zmm registers, and each unpacked
 * block serves twice the inputs that 4 did. */
#define R16_N 8

/* Rows of groups g0, g1 x N inputs from i0; lanes [l0, l1) stored as rows r.. */
AI512V void r16_tile(const shardlm_mm_args *a, const uint8_t *g0, const uint8_t *g1, size_t r, int l0, int l1,
                     size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK;
    const int8_t *xq = a->xq + i0 * a->cols;
    const float *xd = a->xd + i0 * nb;
    const int32_t *xo = a->xo + i0 * nb;
    __m512 acc[R16_N];
#pragma GCC unroll 8
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *b0 = g0 + b * 8 * SHARDLM_Q4_0_BYTES, *b1 = g1 + b * 8 * SHARDLM_Q4_0_BYTES;
        /* The first input pass prefetches the same block of the next 16 rows.
         * A distance inside each group's stream never fetched the next pair's
         * second group: from DRAM this tile ran 26 % below its cached speed. */
        if (i0 == 0) {
            size_t next = 16 * a->row_bytes;
            for (int l = 0; l < 8 * SHARDLM_Q4_0_BYTES; l += 64) {
                _mm_prefetch((const char *)b0 + next + l, _MM_HINT_T0);
                _mm_prefetch((const char *)b0 + next + 8 * a->row_bytes + l, _MM_HINT_T0);
            }
        }
        r16_wblk w;
        r16_load(b0, b1, &w);
#pragma GCC unroll 8
        for (int ii = 0; ii < N; ii++)
            acc[ii] = r16_dot(&w, xq + ii * a->cols + b * SHARDLM_QK, xo + ii * nb + b, xd + ii * nb + b, acc[ii]);
    }
    __mmask16 m = (__mmask16)(((1u << l1) - 1) & ~((1u << l0) - 1));
#pragma GCC unroll 8
    for (int ii = 0; ii < N; ii++) _mm512_mask_storeu_ps(a->y + (i0 + ii) * a->rows + r, m, acc[ii]);
}

/* Every input for the 16 rows at r (8-aligned), lanes [l0, l1). */
static __attribute__((target(T512VNNI))) void r16_rows(const shardlm_mm_args *a, size_t r, int l0, int l1)
{
    size_t rows8 = a->rows & ~(size_t)7;
    const uint8_t *g0 = shardlm_r8_block(a->w, a->row_bytes, r / 8, 0);
    const uint8_t *g1 = r + 8 < rows8 ? shardlm_r8_block(a->w, a->row_bytes, r / 8 + 1, 0) : g0;
    size_t i = 0;
    for (; i + R16_N <= a->n; i += R16_N) r16_tile(a, g0, g1, r, l0, l1, i, R16_N);
    switch (a->n - i) {
    case 7: r16_tile(a, g0, g1, r, l0, l1, i, 7); break;
    case 6: r16_tile(a, g0, g1, r, l0, l1, i, 6); break;
    case 5: r16_tile(a, g0, g1, r, l0, l1, i, 5); break;
    case 4: r16_tile(a, g0, g1, r, l0, l1, i, 4); break;
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

/* ---- Q8_0_R4 with VNNI: two rows per 512-bit register ----
 *
 * An R4 block holds the 4 rows' 32 weights back to back after their
 * scales, so one 64-byte load is rows k and k + 1 of the group, and the
 * input's 32 activations broadcast to both halves. vpdpbusd multiplies
 * unsigned by signed bytes, so the activations go in offset, x + 128 (one
 * xor per block and input), and each lane's chain starts from
 * -128 * sum(w), made once per block for every input: the sum of 4
 * products per 32-bit lane is then the exact integer of the AVX2 maddubs +
 * madd pair (|x + 128| * |w| <= 255 * 128, no overflow). Where the sign
 * trick (|w| and x * sign(w)) took a mask and a masked subtract per input,
 * this takes the xor: 126 -> 134 GMAC/s at 16 inputs, and 148 with 8
 * inputs per tile. Then acc = fma((float)dot, d_w * d_x, acc) per
 * block and hsum8 of each half, as matmul_avx2.c's Q8_0 tile. So the bits
 * are the AVX2 plain and R4 kernels' (tests/test_repack.c); decode (one
 * input) runs it too, measured 5 % faster than the AVX2 R4 stream. */
/* Inputs per tile: 16 accumulators, 2 weight and 2 correction registers
 * fit the 32 zmm registers; 8 ran 10 % faster than 4 at 16 inputs. */
#define R4V_N 8
#ifndef R4V_PF_BYTES
/* 64 blocks, 8.7 KB ahead: 32 and 64 gave +9-11 % on Zen 5, 16 less (docs/PERFORMANCE.md) */
#define R4V_PF_BYTES (64 * SHARDLM_R4_BLOCK)
#endif

AI512V void r4v_tile(const shardlm_mm_args *a, const uint8_t *grp, size_t r, size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK;
    const __m512i pick0 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i pick1 = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m512 acc[2][R4V_N];
#pragma GCC unroll 8
    for (int ii = 0; ii < N; ii++) acc[0][ii] = acc[1][ii] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * SHARDLM_R4_BLOCK;
        if (i0 == 0) /* the first input pass streams the group: more lines in flight than the hardware's */
            for (int l = 0; l < SHARDLM_R4_BLOCK; l += 64)
                _mm_prefetch((const char *)blk + R4V_PF_BYTES + l, _MM_HINT_T0);
        __m512 d4 = _mm512_castps128_ps512(_mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)blk)));
        __m512 dw[2] = {_mm512_permutexvar_ps(pick0, d4), _mm512_permutexvar_ps(pick1, d4)};
        __m512i ws[2], neg[2];
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) {
            ws[p] = _mm512_loadu_si512(blk + 8 + 64 * p);
            neg[p] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                      _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), ws[p]));
        }
#pragma GCC unroll 8
        for (int ii = 0; ii < N; ii++) {
            __m512i xv = _mm512_xor_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256(
                                              (const __m256i *)(a->xq + (i0 + ii) * a->cols + b * SHARDLM_QK))),
                                          _mm512_set1_epi8((char)0x80));
            __m512 xd = _mm512_set1_ps(a->xd[(i0 + ii) * nb + b]);
#pragma GCC unroll 2
            for (int p = 0; p < 2; p++) {
                __m512i d = _mm512_dpbusd_epi32(neg[p], xv, ws[p]);
                acc[p][ii] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(dw[p], xd), acc[p][ii]);
            }
        }
    }
#pragma GCC unroll 8
    for (int ii = 0; ii < N; ii++) {
        float *y = a->y + (i0 + ii) * a->rows + r;
#pragma GCC unroll 2
        for (int p = 0; p < 2; p++) {
            y[2 * p] = hsum8(_mm512_castps512_ps256(acc[p][ii]));
            y[2 * p + 1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p][ii]), 1)));
        }
    }
}

/* Whole groups [r, r_end) for every input: 4 groups at a time, each tile of
 * inputs passing over them, so the activations stay in L1. */
static __attribute__((target(T512VNNI))) void r4v_groups(const shardlm_mm_args *a, size_t r, size_t r_end)
{
    for (; r < r_end; r += 16) {
        size_t re = r + 16 < r_end ? r + 16 : r_end, i = 0;
        for (; i + R4V_N <= a->n; i += R4V_N)
            for (size_t g = r; g < re; g += 4)
                r4v_tile(a, shardlm_r4_block(a->w, a->row_bytes, g / 4, 0), g, i, R4V_N);
        for (size_t g = r; g < re; g += 4) {
            const uint8_t *grp = shardlm_r4_block(a->w, a->row_bytes, g / 4, 0);
            switch (a->n - i) {
            case 7: r4v_tile(a, grp, g, i, 7); break;
            case 6: r4v_tile(a, grp, g, i, 6); break;
            case 5: r4v_tile(a, grp, g, i, 5); break;
            case 4: r4v_tile(a, grp, g, i, 4); break;
            case 3: r4v_tile(a, grp, g, i, 3); break;
            case 2: r4v_tile(a, grp, g, i, 2); break;
            case 1: r4v_tile(a, grp, g, i, 1); break;
            }
        }
    }
}

static __attribute__((target(T512VNNI))) void avx512vnni_q8_0_r4(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t rows4 = a->rows & ~(size_t)3, g0 = (r0 + 3) & ~(size_t)3, g1 = (r1 < rows4 ? r1 : rows4) & ~(size_t)3;
    if (g0 >= g1) {
        shardlm_avx2_q8_0_r4(a, r0, r1);
        return;
    }
    /* Rows outside whole groups (chunk edges, the plain tail): the AVX2 kernel, same bits. */
    if (r0 < g0) shardlm_avx2_q8_0_r4(a, r0, g0);
    r4v_groups(a, g0, g1);
    if (g1 < r1) shardlm_avx2_q8_0_r4(a, g1, r1);
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
    /* SHARDLM_ISA_AVX2_KERNELS but for Q4_0_R8 and Q8_0_R4 (faster: docs/PERFORMANCE.md). */
    .f32 = shardlm_avx2_f32, .f16 = shardlm_avx2_f16, .bf16 = shardlm_avx2_bf16, .q8_0 = shardlm_avx2_q8_0,
    .q4_0 = shardlm_avx2_q4_0, .q4_0_r8 = avx512vnni_q4_0_r8, .q8_0_r4 = avx512vnni_q8_0_r4,
    .quant_x = shardlm_avx2_quant_x,
    .rmsnorm = shardlm_avx2_rmsnorm,
    .softmax = shardlm_avx2_softmax,
    .silu_mul = shardlm_avx2_silu_mul,
    /* SHARDLM_ISA_MORE_TYPES_AVX2, one per line, replaced where measured faster. */
    .q5_k = shardlm_avx512vnni_q5_k,
    .q4_1 = shardlm_avx512vnni_q4_1,
    .q5_0 = shardlm_avx512vnni_q5_0,
    .q5_1 = shardlm_avx512vnni_q5_1,
    .q2_k = shardlm_avx512vnni_q2_k,
    .q3_k = shardlm_avx512vnni_q3_k,
    .iq4_nl = shardlm_avx512vnni_iq4_nl,
    .iq4_xs = shardlm_avx512vnni_iq4_xs,
};
#endif
