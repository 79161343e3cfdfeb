/* matmul_avx2_r8.c - the AVX2 Q4_0 kernels, for the load-time repacked
 * layout (SHARDLM_DT_Q4_0_R8, see repack.c) and for plain Q4_0.
 *
 * Rows in lanes: a tile is 8 weight rows x N inputs (N <= 4), and lane k of
 * every vector belongs to row k. Per block, four 32-byte chunks hold 4
 * nibble bytes of each row; masking gives 4 weights per row for elements
 * e..e+3 (low nibbles) and e+16..e+19 (high). Each is multiplied by the
 * same 4 activations broadcast to all lanes (maddubs), the 8 products of a
 * block add up in int16 (|sum| <= 8 * 2 * 15 * 127 < 32767), and one madd
 * gives the 8 rows' exact integer dot products. Per block and input that is
 * 8 maddubs, 7 adds, 1 madd, and one convert and FMA for all 8 rows; the
 * unpacked block is reused by every input of the tile.
 *
 * The arithmetic per (row, input) is therefore fixed: for each block b in
 * order, i = dot(q, x) - 8 * sum(x) exactly in integers (the +8 offset of
 * Q4_0), then acc = fma((float)i, d_w * d_x, acc), starting from +0. Every
 * tile shape computes exactly that, so the matvec (N = 1), the GEMM tiles,
 * the plain layout (whose 8 rows are transposed into the same registers
 * block by block) and any thread split give bitwise the same outputs:
 * batch invariance and R8 == plain (tests/test_repack.c). */
#if defined(__x86_64__)
#include <immintrin.h>

#include "cpu_internal.h"
#include "matmul_x86_tiles.h"

/* One block of 8 rows, unpacked: scales and the 4 low/high nibble chunks. */
typedef struct {
    __m256 dw;
    __m256i lo[4], hi[4];
} r8_wblk;

AVX2_INLINE void r8_split(r8_wblk *w, int c, __m256i v)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    w->lo[c] = _mm256_and_si256(v, m4);
    w->hi[c] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
}

/* Block b of the packed group at grp. */
AVX2_INLINE void r8_load_packed(const uint8_t *blk, r8_wblk *w)
{
    w->dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) r8_split(w, c, _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c)));
}

/* Block b of 8 plain rows: gathers the scales and transposes the rows'
 * 4-byte groups into the packed chunks (rows 0..3 in the low 128-bit lane,
 * 4..7 in the high one, so two unpack levels finish the 8 x 4 transpose). */
AVX2_INLINE void r8_load_plain(const uint8_t *const *rp, size_t b, r8_wblk *w)
{
    size_t o = b * SHARDLM_Q4_0_BYTES;
    __m128i h = _mm_setr_epi16((short)shardlm_rd16(rp[0] + o), (short)shardlm_rd16(rp[1] + o),
                               (short)shardlm_rd16(rp[2] + o), (short)shardlm_rd16(rp[3] + o),
                               (short)shardlm_rd16(rp[4] + o), (short)shardlm_rd16(rp[5] + o),
                               (short)shardlm_rd16(rp[6] + o), (short)shardlm_rd16(rp[7] + o));
    w->dw = _mm256_cvtph_ps(h);
    __m256i r[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++)
        r[k] = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)(rp[k + 4] + o + 2)),
                                _mm_loadu_si128((const __m128i *)(rp[k] + o + 2)));
    __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    r8_split(w, 0, _mm256_unpacklo_epi64(t0, t2));
    r8_split(w, 1, _mm256_unpackhi_epi64(t0, t2));
    r8_split(w, 2, _mm256_unpacklo_epi64(t1, t3));
    r8_split(w, 3, _mm256_unpackhi_epi64(t1, t3));
}

/* 4 activation bytes, broadcast to every lane (one vpbroadcastd load). */
AVX2_INLINE __m256i r8_bcast4(const int8_t *x)
{
    int32_t v;
    memcpy(&v, x, sizeof v);
    return _mm256_set1_epi32(v);
}

/* acc (8 rows) += this block's contribution for one input: x its 32
 * activations, xo 8 * their sum, xd their scale. */
AVX2_INLINE __m256 r8_dot(const r8_wblk *w, const int8_t *x, int32_t xo, float xd, __m256 acc)
{
    __m256i s = _mm256_maddubs_epi16(w->lo[0], r8_bcast4(x));
    s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w->hi[0], r8_bcast4(x + 16)));
#pragma GCC unroll 3
    for (int c = 1; c < 4; c++) {
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w->lo[c], r8_bcast4(x + 4 * c)));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(w->hi[c], r8_bcast4(x + 16 + 4 * c)));
    }
    __m256i i = _mm256_sub_epi32(_mm256_madd_epi16(s, _mm256_set1_epi16(1)), _mm256_set1_epi32(xo));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(w->dw, _mm256_set1_ps(xd)), acc);
}

/* Software prefetch distance of the packed stream, in bytes. One core here
 * waits on DRAM latency more than on bandwidth, so asking early keeps more
 * lines in flight than the hardware prefetcher does on its own. */
#ifndef R8_PF_BYTES
/* 64 blocks, 9.2 KB: +3-10 % over 32 on a decode-shaped matvec on Zen 5 (16 was slower, 128 no
 * better; docs/PERFORMANCE.md); not re-measured on an AVX2-only machine. */
#define R8_PF_BYTES (64 * 8 * SHARDLM_Q4_0_BYTES)
#endif

/* Keeps v in a register here: without it GCC reassociates the int16 sums
 * (integer adds are associative), computes all 32 maddubs of a block first
 * and spills them to the stack. */
#define R8_KEEP(v) __asm__("" : "+x"(v))

/* The packed 8 x N tile, chunk by chunk: each 32-byte chunk is unpacked
 * into 2 registers and used by all N inputs before the next is loaded, so
 * the live set (2 weight chunks, N int16 sums, N accumulators, the scales
 * and the madd constant) fits the 16 ymm registers without spills; holding
 * a whole unpacked block (8 registers) spilled the accumulators to the
 * stack. The int16 sums only change grouping: wrapping integer adds are
 * associative and the total fits int16, so i is the same exact integer. */
AVX2_INLINE void r8_tile_packed(const shardlm_mm_args *a, const uint8_t *grp, size_t i0, int N, __m256 *acc)
{
    size_t nb = a->cols / SHARDLM_QK;
    const int8_t *xq = a->xq + i0 * a->cols;
    const float *xd = a->xd + i0 * nb;
    const int32_t *xo = a->xo + i0 * nb;
    const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = grp + b * 8 * SHARDLM_Q4_0_BYTES;
        if (i0 == 0) /* the first input pass streams the group; later ones hit L1/L2 */
            for (int l = 0; l < 8 * SHARDLM_Q4_0_BYTES; l += 64)
                _mm_prefetch((const char *)blk + R8_PF_BYTES + l, _MM_HINT_T0);
        const int8_t *x = xq + b * SHARDLM_QK;
        __m256i s[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(blk + 16 + 32 * c));
            __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
#pragma GCC unroll 4
            for (int ii = 0; ii < N; ii++) {
                const int8_t *xi = x + ii * a->cols + 4 * c;
                __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, r8_bcast4(xi)),
                                             _mm256_maddubs_epi16(hi, r8_bcast4(xi + 16)));
                s[ii] = c ? _mm256_add_epi16(s[ii], p) : p;
                R8_KEEP(s[ii]);
            }
        }
        __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)blk));
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++) {
            __m256i i = _mm256_sub_epi32(_mm256_madd_epi16(s[ii], ones), _mm256_set1_epi32(xo[ii * nb + b]));
            acc[ii] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(dw, _mm256_set1_ps(xd[ii * nb + b])),
                                      acc[ii]);
        }
    }
}

/* 8 rows x N inputs from input i0, over every block; packed (a constant):
 * grp is the group, else rp are the 8 plain rows. Leaves the 8 row sums in
 * acc[ii]. */
AVX2_INLINE void r8_tile(const shardlm_mm_args *a, int packed, const uint8_t *grp, const uint8_t *const *rp,
                         size_t i0, int N, __m256 *acc)
{
    if (packed) {
        r8_tile_packed(a, grp, i0, N, acc);
        return;
    }
    size_t nb = a->cols / SHARDLM_QK;
    const int8_t *xq = a->xq + i0 * a->cols;
    const float *xd = a->xd + i0 * nb;
    const int32_t *xo = a->xo + i0 * nb;
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) acc[ii] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        r8_wblk w;
        if (packed) {
            const uint8_t *blk = grp + b * 8 * SHARDLM_Q4_0_BYTES;
            /* The first input pass streams the group; later ones hit L1/L2. */
            if (i0 == 0)
                for (int l = 0; l < 8 * SHARDLM_Q4_0_BYTES; l += 64)
                    _mm_prefetch((const char *)blk + R8_PF_BYTES + l, _MM_HINT_T0);
            r8_load_packed(blk, &w);
        } else {
            r8_load_plain(rp, b, &w);
        }
#pragma GCC unroll 4
        for (int ii = 0; ii < N; ii++)
            acc[ii] = r8_dot(&w, xq + ii * a->cols + b * SHARDLM_QK, xo[ii * nb + b], xd[ii * nb + b], acc[ii]);
    }
}

/* Stores lanes [l0, l1) of acc[ii] as rows r + l of input i0 + ii. */
AVX2_INLINE void r8_store(const shardlm_mm_args *a, size_t r, int l0, int l1, size_t i0, int N, const __m256 *acc)
{
#pragma GCC unroll 4
    for (int ii = 0; ii < N; ii++) {
        float *y = a->y + (i0 + ii) * a->rows + r;
        if (l0 == 0 && l1 == 8) {
            _mm256_storeu_ps(y, acc[ii]);
            continue;
        }
        float t[8];
        _mm256_storeu_ps(t, acc[ii]);
        memcpy(y + l0, t + l0, (size_t)(l1 - l0) * sizeof(float));
    }
}

/* Every input for the 8 rows at r (lanes [l0, l1) kept): tiles of 4 inputs
 * then the rest, each tile reading the group's weights once. */
AVX2_INLINE void r8_rows(const shardlm_mm_args *a, int packed, const uint8_t *grp, const uint8_t *const *rp, size_t r,
                         int l0, int l1, size_t i)
{
    __m256 acc[4];
    for (; i + 4 <= a->n; i += 4) {
        r8_tile(a, packed, grp, rp, i, 4, acc);
        r8_store(a, r, l0, l1, i, 4, acc);
    }
    switch (a->n - i) {
    case 3: r8_tile(a, packed, grp, rp, i, 3, acc); r8_store(a, r, l0, l1, i, 3, acc); break;
    case 2: r8_tile(a, packed, grp, rp, i, 2, acc); r8_store(a, r, l0, l1, i, 2, acc); break;
    case 1: r8_tile(a, packed, grp, rp, i, 1, acc); r8_store(a, r, l0, l1, i, 1, acc); break;
    }
}

static AVX2_TARGET void r8_rows_packed(const shardlm_mm_args *a, size_t r, int l0, int l1)
{
    r8_rows(a, 1, shardlm_r8_block(a->w, a->row_bytes, r / 8, 0), NULL, r, l0, l1, 0);
}

/* The whole group at r, inputs i.. (fewer than 4 left: the tails). */
static AVX2_TARGET void r8_rows_packed_from(const shardlm_mm_args *a, size_t r, size_t i)
{
    r8_rows(a, 1, shardlm_r8_block(a->w, a->row_bytes, r / 8, 0), NULL, r, 0, 8, i);
}

static AVX2_TARGET void r8_rows_plain(const shardlm_mm_args *a, size_t r, int cnt)
{
    const uint8_t *rp[8];
    for (int k = 0; k < 8; k++) /* short tiles repeat the last row; its extra lanes are not stored */
        rp[k] = a->w + (r + (size_t)(k < cnt ? k : cnt - 1)) * a->row_bytes;
    r8_rows(a, 0, NULL, rp, r, 0, cnt, 0);
}

#ifndef R8_GROUPS
#define R8_GROUPS 4
#endif

/* Groups [r, r_end) (whole, 8 rows each) for every input: R8_GROUPS groups
 * at a time, each tile of inputs passing over all of them, so the inputs'
 * activations stay in L1 while the few groups' weights stay in L2. */
static AVX2_TARGET void r8_groups_packed(const shardlm_mm_args *a, size_t r, size_t r_end)
{
    __m256 acc[4];
    for (; r < r_end; r += 8 * R8_GROUPS) {
        size_t re = r + 8 * R8_GROUPS < r_end ? r + 8 * R8_GROUPS : r_end, i = 0;
        for (; i + 4 <= a->n; i += 4)
            for (size_t g = r; g < re; g += 8) {
                r8_tile(a, 1, shardlm_r8_block(a->w, a->row_bytes, g / 8, 0), NULL, i, 4, acc);
                r8_store(a, g, 0, 8, i, 4, acc);
            }
        for (size_t g = r; g < re && i < a->n; g += 8) r8_rows_packed_from(a, g, i);
    }
}

AVX2_TARGET void shardlm_avx2_q4_0_r8(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t rows8 = a->rows & ~(size_t)7, r = r0 & ~(size_t)7;
    size_t full0 = (r0 + 7) & ~(size_t)7, full1 = (r1 < rows8 ? r1 : rows8) & ~(size_t)7;
    if (a->n > 4 && full0 < full1) { /* whole groups, blocked; edges below */
        if (r < full0) r8_rows_packed(a, r, (int)(r0 - r), r1 < full0 ? (int)(r1 - r) : 8);
        r8_groups_packed(a, full0, full1);
        r = full1;
    }
    for (; r < r1 && r < rows8; r += 8) { /* a chunk edge inside a group keeps only its lanes */
        int l0 = r < r0 ? (int)(r0 - r) : 0, l1 = r + 8 <= r1 ? 8 : (int)(r1 - r);
        r8_rows_packed(a, r, l0, l1);
    }
    if (r1 > rows8) shardlm_r8_tail(a, r0 > rows8 ? r0 : rows8, r1);
}

AVX2_TARGET void shardlm_avx2_q4_0(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r += 8) r8_rows_plain(a, r, r1 - r < 8 ? (int)(r1 - r) : 8);
}
#endif
