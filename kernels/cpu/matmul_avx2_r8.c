/* matmul_avx2_r8.c - the AVX2 kernel for Q4_0 repacked at load time
 * (SHARDLM_DT_Q4_0_R8, see repack.c).
 *
 * It does exactly the arithmetic of q4p_tile in matmul_avx2.c, in the same
 * order per (row, input) - the same pair products, the same per-lane FMA
 * chains, the same correction sums in passes of QT_KC blocks - so results
 * are bitwise those of the plain Q4_0 path (tests/test_repack.c checks).
 * What changes is only where the operands come from: one 16-byte load and
 * a convert for 8 scales instead of 8 scalar loads and inserts, one 32-byte
 * load for a block pair instead of two loads and an insert, and one
 * sequential stream per group of 8 rows. */
#if defined(__x86_64__)
#include <immintrin.h>

#include "cpu_internal.h"
#include "matmul_x86_tiles.h"

/* Per-(row, input) state of a tile: at most 8 of them. */
typedef struct {
    __m256 acc[8], cv[8];
    float ct[8]; /* this pass's scalar correction of a short last run */
} r8_acc;

/* A full run of 8 blocks from block b for rows r8 + rr of the tile. */
AVX2_INLINE void r8_run8(const shardlm_mm_args *a, const uint8_t *run, int q0, int R, size_t i0, int N, size_t b,
                         r8_acc *s)
{
    const __m256i i01 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), i23 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
    const __m256i i45 = _mm256_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5), i67 = _mm256_setr_epi32(6, 6, 6, 6, 7, 7, 7, 7);
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    size_t nb = a->cols / SHARDLM_QK;
    const uint8_t *nib = run + 16 * 8;
    __m256 scp[8][4];
#pragma GCC unroll 8
    for (int rr = 0; rr < R; rr++) {
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(run + 16 * (q0 + rr))));
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            int k = rr * N + ii;
            __m256 sc = _mm256_mul_ps(d, _mm256_loadu_ps(a->xd + (i0 + ii) * nb + b));
            s->cv[k] = _mm256_fmadd_ps(d, _mm256_loadu_ps(a->xs + (i0 + ii) * nb + b), s->cv[k]);
            scp[k][0] = _mm256_permutevar8x32_ps(sc, i01);
            scp[k][1] = _mm256_permutevar8x32_ps(sc, i23);
            scp[k][2] = _mm256_permutevar8x32_ps(sc, i45);
            scp[k][3] = _mm256_permutevar8x32_ps(sc, i67);
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) {
        __m256i lo[8], hi[8];
#pragma GCC unroll 8
        for (int rr = 0; rr < R; rr++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(nib + 128 * (q0 + rr) + 32 * p));
            lo[rr] = _mm256_and_si256(v, m4);
            hi[rr] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        }
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            const int8_t *xp = a->xq + (i0 + ii) * a->cols + (b + 2 * p) * SHARDLM_QK;
            __m256i x0 = _mm256_loadu_si256((const __m256i *)xp), x1 = _mm256_loadu_si256((const __m256i *)(xp + 32));
#pragma GCC unroll 8
            for (int rr = 0; rr < R; rr++) {
                int k = rr * N + ii;
                __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo[rr], x0), _mm256_maddubs_epi16(hi[rr], x1));
                __m256 pf = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones));
                s->acc[k] = _mm256_fmadd_ps(pf, scp[k][p], s->acc[k]);
            }
        }
    }
}

/* The short last run (kr < 8 blocks): scalar scales, as q_scales and
 * q4p_scales do for a pass's last kb % 8 blocks. */
AVX2_INLINE void r8_run_short(const shardlm_mm_args *a, const uint8_t *run, size_t kr, int q0, int R, size_t i0,
                              int N, size_t b, r8_acc *s)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    size_t nb = a->cols / SHARDLM_QK;
    const uint8_t *nib = run + 16 * kr;
    for (int rr = 0; rr < R; rr++) {
        const uint8_t *scr = run + 2 * kr * (size_t)(q0 + rr), *nr = nib + 16 * kr * (size_t)(q0 + rr);
        for (int ii = 0; ii < N; ii++) {
            int k = rr * N + ii;
            const float *xd = a->xd + (i0 + ii) * nb + b, *xs = a->xs + (i0 + ii) * nb + b;
            const int8_t *xp = a->xq + (i0 + ii) * a->cols + b * SHARDLM_QK;
            float sc[8];
            for (size_t j = 0; j < kr; j++) {
                float dw = _cvtsh_ss(shardlm_rd16(scr + 2 * j));
                sc[j] = dw * xd[j];
                s->ct[k] += dw * xs[j];
            }
            size_t j = 0;
            for (; j + 2 <= kr; j += 2) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(nr + 16 * j));
                __m256i s16 = _mm256_add_epi16(
                    _mm256_maddubs_epi16(_mm256_and_si256(v, m4), _mm256_loadu_si256((const __m256i *)(xp + 32 * j))),
                    _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                         _mm256_loadu_si256((const __m256i *)(xp + 32 * j + 32))));
                __m256 pf = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones));
                s->acc[k] = _mm256_fmadd_ps(pf, _mm256_set_m128(_mm_set1_ps(sc[j + 1]), _mm_set1_ps(sc[j])), s->acc[k]);
            }
            if (j < kr) { /* an odd last block: natural layout, as in q4p_tile */
                __m128i q = _mm_loadu_si128((const __m128i *)(nr + 16 * j));
                __m256i w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), m4);
                __m256 pf = _mm256_cvtepi32_ps(dot_u8s8(w, _mm256_loadu_si256((const __m256i *)(xp + 32 * j))));
                s->acc[k] = _mm256_fmadd_ps(pf, _mm256_set1_ps(sc[j]), s->acc[k]);
            }
        }
    }
}

/* Software prefetch distance of the 8-row matvec, in bytes of the
 * stream. One core here waits on DRAM latency more than on bandwidth, so
 * asking early keeps more lines in flight than the hardware prefetcher
 * does on its own. */
#ifndef R8_PF_BYTES
#define R8_PF_BYTES (4 * 8 * 8 * SHARDLM_Q4_0_BYTES) /* 4 runs: best of 1, 2, 4, 8 here */
#endif

/* Prefetches the 1152 bytes of a run that lie dist bytes ahead of the one
 * at offset off, if still inside the groups (end bytes). */
AVX2_INLINE void r8_prefetch(const uint8_t *w, size_t off, size_t dist, size_t end)
{
    size_t p = off + dist;
    for (size_t l = 0; l < 8 * SHARDLM_Q4_0_BYTES * 8 && p + l < end; l += 64)
        _mm_prefetch((const char *)w + p + l, _MM_HINT_T0);
}

/* Rows r..r+R-1 (inside one group) x inputs i0..i0+N-1. */
AVX2_INLINE void r8_tile(const shardlm_mm_args *a, size_t r, int R, size_t i0, int N)
{
    size_t nb = a->cols / SHARDLM_QK, g = r / 8;
    int q0 = (int)(r % 8);
    r8_acc s;
#pragma GCC unroll 8
    for (int k = 0; k < R * N; k++) s.acc[k] = s.cv[k] = _mm256_setzero_ps();
    for (size_t b0 = 0; b0 < nb; b0 += QT_KC) {
        size_t kb = nb - b0 < QT_KC ? nb - b0 : QT_KC;
#pragma GCC unroll 8
        for (int k = 0; k < R * N; k++) s.ct[k] = 0.0f;
        for (size_t b = b0; b < b0 + kb; b += 8) {
            const uint8_t *run = shardlm_r8_run(a->w, a->row_bytes, g, b);
            size_t off = (size_t)(run - a->w), end = (a->rows & ~(size_t)7) * a->row_bytes;
            /* The matvec streams ahead; a GEMM's first tile of a group asks
             * for the next group, which the group's other tiles give time. */
            if (R == 8) r8_prefetch(a->w, off, R8_PF_BYTES, end);
            else if (q0 == 0 && i0 == 0) r8_prefetch(a->w, off, 8 * a->row_bytes, end);
            if (b + 8 <= b0 + kb) r8_run8(a, run, q0, R, i0, N, b, &s);
            else r8_run_short(a, run, b0 + kb - b, q0, R, i0, N, b, &s);
        }
#pragma GCC unroll 8
        for (int k = 0; k < R * N; k++) s.cv[k] = _mm256_add_ps(s.cv[k], _mm256_setr_ps(s.ct[k], 0, 0, 0, 0, 0, 0, 0));
    }
#pragma GCC unroll 8
    for (int rr = 0; rr < R; rr++)
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++)
            a->y[(i0 + ii) * a->rows + r + rr] = hsum8(s.acc[rr * N + ii]) - 8.0f * hsum8(s.cv[rr * N + ii]);
}

/* One full group of 8 rows: the matvec as one 8-row tile, so each run is
 * read once, in order (two 4-row tiles were slower from DRAM: each skips
 * half of every run); n > 1 as 2 rows x 4 inputs, like the plain tiles. */
AVX2_INLINE void r8_group(const shardlm_mm_args *a, size_t r)
{
    if (a->n == 1) {
        r8_tile(a, r, 8, 0, 1);
        return;
    }
    for (size_t rr = 0; rr < 8; rr += 2) {
        size_t i = 0;
        for (; i + 4 <= a->n; i += 4) r8_tile(a, r + rr, 2, i, 4);
        switch (a->n - i) {
        case 3: r8_tile(a, r + rr, 2, i, 3); break;
        case 2: r8_tile(a, r + rr, 2, i, 2); break;
        case 1: r8_tile(a, r + rr, 2, i, 1); break;
        }
    }
}

AVX2_TARGET void shardlm_avx2_q4_0_r8(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t rows8 = a->rows & ~(size_t)7, r = r0;
    for (; r < r1 && r < rows8;) {
        if (r % 8 == 0 && r + 8 <= r1) {
            r8_group(a, r);
            r += 8;
            continue;
        }
        for (size_t i = 0; i < a->n; i++) r8_tile(a, r, 1, i, 1); /* a chunk edge inside a group */
        r++;
    }
    if (r < r1) shardlm_r8_tail(a, r, r1);
}
#endif
