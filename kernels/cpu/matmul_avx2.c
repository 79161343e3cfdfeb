/* matmul_avx2.c - AVX2+FMA+F16C kernels. Compiled with per-function target
 * attributes so the binary still runs on older x86-64; matmul.c calls them
 * only when cpuid reports the features.
 *
 * Tiles: a tile is R weight rows x N inputs. n == 1 uses 4 x 1 (matvec:
 * four row streams for the prefetcher); n > 1 uses 2 x 4, so each unpacked
 * weight block is used for 4 inputs while in a register, and the 2 rows
 * (a few KB) stay in L1 while every group of 4 inputs passes over them.
 * Q4_0 has its own 8-row tiles in matmul_avx2_r8.c. */
#if defined(__x86_64__)
#include <immintrin.h>

#include "cpu_internal.h"
#include "matmul_x86_tiles.h"

/* ---- float weights ---- */

AVX2_INLINE __m256 load_w8(shardlm_dtype t, const uint8_t *p)
{
    if (t == SHARDLM_DT_F32) return _mm256_loadu_ps((const float *)p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (t == SHARDLM_DT_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)); /* bf16: top half of f32 */
}

static float w_scalar(shardlm_dtype t, const uint8_t *row, size_t c)
{
    if (t == SHARDLM_DT_F32) {
        float f;
        memcpy(&f, row + 4 * c, sizeof f);
        return f;
    }
    uint16_t h = shardlm_rd16(row + 2 * c);
    return t == SHARDLM_DT_F16 ? shardlm_f16_to_f32(h) : shardlm_bf16_to_f32(h);
}

AVX2_INLINE void float_tile(const shardlm_mm_args *a, size_t r, int R, size_t i0, int N, shardlm_dtype t)
{
    size_t es = t == SHARDLM_DT_F32 ? 4 : 2, cols = a->cols, c = 0;
    const uint8_t *wr[4];
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int rr = 0; rr < R; rr++) {
        wr[rr] = a->w + (r + rr) * a->row_bytes;
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) acc[rr][ii] = _mm256_setzero_ps();
    }
    for (; c + 8 <= cols; c += 8) {
        __m256 wv[4];
#pragma GCC unroll 4
        for (int rr = 0; rr < R; rr++) wv[rr] = load_w8(t, wr[rr] + c * es);
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            __m256 xv = _mm256_loadu_ps(a->x + (i0 + ii) * cols + c);
#pragma GCC unroll 4
            for (int rr = 0; rr < R; rr++) acc[rr][ii] = _mm256_fmadd_ps(wv[rr], xv, acc[rr][ii]);
        }
    }
#pragma GCC unroll 4
    for (int rr = 0; rr < R; rr++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            float s = hsum8(acc[rr][ii]);
            const float *xi = a->x + (i0 + ii) * cols;
            for (size_t k = c; k < cols; k++) s += w_scalar(t, wr[rr], k) * xi[k];
            a->y[(i0 + ii) * a->rows + r + rr] = s;
        }
}

AVX2_INLINE void f32_tile(const shardlm_mm_args *a, size_t r, int R, size_t i0, int N)
{
    float_tile(a, r, R, i0, N, SHARDLM_DT_F32);
}
AVX2_INLINE void f16_tile(const shardlm_mm_args *a, size_t r, int R, size_t i0, int N)
{
    float_tile(a, r, R, i0, N, SHARDLM_DT_F16);
}
AVX2_INLINE void bf16_tile(const shardlm_mm_args *a, size_t r, int R, size_t i0, int N)
{
    float_tile(a, r, R, i0, N, SHARDLM_DT_BF16);
}

/* ---- quantised weights ---- */

/* Q8_0: one block at a time, with the sign trick |w| * (x * sign w) so the
 * unsigned x signed maddubs applies to signed weights. Row rr's block b has
 * its scale at sp[rr] + b * bb and its 32 weights at qp[rr] + b * bb (bb:
 * 34 for plain rows, 136 in Q8_0_R4 groups). */
AVX2_INLINE void q8_0_tile_at(const shardlm_mm_args *a, const uint8_t *const *sp, const uint8_t *const *wr,
                              size_t bb, size_t r, int R, size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK;
    __m256 acc[8], cv[8];
    float sc[8][QT_KC];
#pragma GCC unroll 8
    for (int k = 0; k < R * N; k++) acc[k] = cv[k] = _mm256_setzero_ps();
    for (size_t b0 = 0; b0 < nb; b0 += QT_KC) {
        size_t kb = nb - b0 < QT_KC ? nb - b0 : QT_KC;
        q_scales(a, sp, bb, R, i0, N, b0, kb, sc, cv, 0);
        for (size_t b = 0; b < kb; b++) {
            __m256i wv[4], ws[4];
#pragma GCC unroll 4
            for (int rr = 0; rr < R; rr++) {
                ws[rr] = _mm256_loadu_si256((const __m256i *)(wr[rr] + (b0 + b) * bb));
                wv[rr] = _mm256_abs_epi8(ws[rr]);
            }
#pragma GCC unroll 4
            for (int ii = 0; ii < N; ii++) {
                __m256i xv = _mm256_loadu_si256((const __m256i *)(a->xq + (i0 + ii) * a->cols + (b0 + b) * SHARDLM_QK));
#pragma GCC unroll 4
                for (int rr = 0; rr < R; rr++) {
                    __m256 p = _mm256_cvtepi32_ps(dot_u8s8(wv[rr], _mm256_sign_epi8(xv, ws[rr])));
                    acc[rr * N + ii] = _mm256_fmadd_ps(p, _mm256_broadcast_ss(&sc[rr * N + ii][b]), acc[rr * N + ii]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int rr = 0; rr < R; rr++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) a->y[(i0 + ii) * a->rows + r + rr] = hsum8(acc[rr * N + ii]);
}

AVX2_INLINE void q8_0_tile(const shardlm_mm_args *a, size_t r, int R, size_t i0, int N)
{
    const uint8_t *sp[4], *qp[4];
#pragma GCC unroll 4
    for (int rr = 0; rr < R; rr++) {
        sp[rr] = a->w + (r + rr) * a->row_bytes;
        qp[rr] = sp[rr] + 2;
    }
    q8_0_tile_at(a, sp, qp, SHARDLM_Q8_0_BYTES, r, R, i0, N);
}

/* The matvec's (N == 1) Q8_0_R4 tile: the arithmetic of q8_0_tile_at
 * (acc = fma(p, d_w * d_x, acc) per block, then hsum8), but each scale is
 * converted in the block loop. The table pass of q8_0_tile_at over 64
 * blocks of 136 bytes touches every other cache line, and its strided
 * misses halved the out-of-cache rate (6 against 11 GB/s plain); this way
 * the group is read once, front to back (14 GB/s). */
AVX2_INLINE void q8_0_r4_stream(const shardlm_mm_args *a, const uint8_t *const *sp, const uint8_t *const *qp,
                                size_t r, int R, size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK;
    __m256 acc[8];
#pragma GCC unroll 8
    for (int k = 0; k < R * N; k++) acc[k] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        __m256i wv[4], ws[4];
        float dw[4];
#pragma GCC unroll 4
        for (int rr = 0; rr < R; rr++) {
            dw[rr] = _cvtsh_ss(shardlm_rd16(sp[rr] + b * SHARDLM_R4_BLOCK));
            ws[rr] = _mm256_loadu_si256((const __m256i *)(qp[rr] + b * SHARDLM_R4_BLOCK));
            wv[rr] = _mm256_abs_epi8(ws[rr]);
        }
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(a->xq + (i0 + ii) * a->cols + b * SHARDLM_QK));
            float xd = a->xd[(i0 + ii) * nb + b];
#pragma GCC unroll 4
            for (int rr = 0; rr < R; rr++) {
                __m256 p = _mm256_cvtepi32_ps(dot_u8s8(wv[rr], _mm256_sign_epi8(xv, ws[rr])));
                acc[rr * N + ii] = _mm256_fmadd_ps(p, _mm256_set1_ps(dw[rr] * xd), acc[rr * N + ii]);
            }
        }
    }
#pragma GCC unroll 4
    for (int rr = 0; rr < R; rr++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) a->y[(i0 + ii) * a->rows + r + rr] = hsum8(acc[rr * N + ii]);
}

/* Rows of whole Q8_0_R4 groups: row r is row r % 4 of group r / 4. GEMM
 * tiles (N > 1) keep the scale table: their group is in L2 after the first
 * input tile, and the table saves a convert and multiply per row-input. */
AVX2_INLINE void q8_0_r4_tile(const shardlm_mm_args *a, size_t r, int R, size_t i0, int N)
{
    const uint8_t *sp[4], *qp[4];
#pragma GCC unroll 4
    for (int rr = 0; rr < R; rr++) {
        const uint8_t *g = shardlm_r4_block(a->w, a->row_bytes, (r + rr) / 4, 0);
        size_t k = (r + rr) % 4;
        sp[rr] = g + 2 * k;
        qp[rr] = g + 8 + SHARDLM_QK * k;
    }
    if (N == 1) q8_0_r4_stream(a, sp, qp, r, R, i0, N);
    else q8_0_tile_at(a, sp, qp, SHARDLM_R4_BLOCK, r, R, i0, N);
}

/* Q4_0 lives in matmul_avx2_r8.c: one rows-in-lanes kernel for the plain
 * and the repacked layout, so both give the same bits. */

SHARDLM_X86_TILED(avx2_f32, f32_tile, AVX2_TARGET)
SHARDLM_X86_TILED(avx2_f16, f16_tile, AVX2_TARGET)
SHARDLM_X86_TILED(avx2_bf16, bf16_tile, AVX2_TARGET)
SHARDLM_X86_TILED(avx2_q8_0, q8_0_tile, AVX2_TARGET)
SHARDLM_X86_TILED(avx2_q8_0_r4_groups, q8_0_r4_tile, AVX2_TARGET)

/* Named so the AVX-512 tables can hold them too (cpu_internal.h). */
AVX2_TARGET void shardlm_avx2_f32(const shardlm_mm_args *a, size_t r0, size_t r1) { avx2_f32(a, r0, r1); }
AVX2_TARGET void shardlm_avx2_f16(const shardlm_mm_args *a, size_t r0, size_t r1) { avx2_f16(a, r0, r1); }
AVX2_TARGET void shardlm_avx2_bf16(const shardlm_mm_args *a, size_t r0, size_t r1) { avx2_bf16(a, r0, r1); }
AVX2_TARGET void shardlm_avx2_q8_0(const shardlm_mm_args *a, size_t r0, size_t r1) { avx2_q8_0(a, r0, r1); }

/* Q8_0_R4: the groups, then the rows % 4 plain tail rows, each through the
 * same Q8_0 tile (so bitwise the plain matrix's result). */
AVX2_TARGET void shardlm_avx2_q8_0_r4(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t rows4 = a->rows & ~(size_t)3;
    if (r0 < rows4) avx2_q8_0_r4_groups(a, r0, r1 < rows4 ? r1 : rows4);
    if (r1 <= rows4) return;
    shardlm_mm_args t = *a; /* the tail as a plain matrix; y keeps its stride a->rows */
    t.w = a->w + rows4 * a->row_bytes;
    t.y = a->y + rows4;
    avx2_q8_0(&t, (r0 > rows4 ? r0 : rows4) - rows4, r1 - rows4);
}

/* ---- activation quantisation ---- */

AVX2_TARGET void shardlm_avx2_quant_x(const float *x, size_t cols, int8_t *q, float *d, float *s)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (size_t b = 0; b < cols / SHARDLM_QK; b++) {
        const float *xb = x + b * SHARDLM_QK;
        __m256 v[4], m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(xb + 8 * k);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[k]));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
        __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        __m256i qi[4];
        for (int k = 0; k < 4; k++) qi[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id)); /* round half even */
        /* Pack 32 int32 -> 32 int8; packs works per 128-bit lane, so restore order. */
        __m256i p16a = _mm256_packs_epi32(qi[0], qi[1]), p16b = _mm256_packs_epi32(qi[2], qi[3]);
        __m256i p8 = _mm256_packs_epi16(p16a, p16b);
        p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + b * SHARDLM_QK), p8);
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        d[b] = shardlm_act_scale(amax);
        s[b] = d[b] * (float)_mm_cvtsi128_si32(s4);
    }
}

const shardlm_isa_ops shardlm_isa_avx2 = {
    .name = "avx2",
    SHARDLM_ISA_AVX2_KERNELS,
    .quant_x = shardlm_avx2_quant_x,
    .rmsnorm = shardlm_avx2_rmsnorm,
    .softmax = shardlm_avx2_softmax,
    .silu_mul = shardlm_avx2_silu_mul,
    SHARDLM_ISA_MORE_TYPES_AVX2,
};
#endif
