/* repack.c - Q4_0 to the load-time Q4_0_R8 layout and Q8_0 to Q8_0_R4
 * (shardlm_kernels.h) and back, and the fallback kernels for paths without
 * their own.
 *
 * Why repack: the AVX2 kernel (matmul_avx2_r8.c) keeps 8 rows in the 8
 * lanes of a vector, so one maddubs multiplies 4 weights of each of 8 rows
 * by the same 4 activations (broadcast), and a block's 8 row sums come out
 * as one vector with no horizontal reduction. That needs, per block, the 8
 * rows' scales side by side and the 8 rows' nibbles interleaved 4 bytes at
 * a time, which is what R8 stores; a group of 8 rows is then one
 * sequential stream. The values are unchanged (shardlm_r8_gather_row
 * restores a plain row exactly).
 *
 * Q8_0_R4 only interleaves whole blocks of 4 rows (no lanes trick: the
 * AVX2 kernel is the plain Q8_0 tile reading other addresses, so its
 * arithmetic and results are the plain kernel's). What it buys is one
 * sequential stream per matrix instead of 4 row streams, and the 4 rows'
 * scales in one 8-byte load. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cpu_internal.h"
#include "shardlm_common.h"

/* Packs 8 plain rows (one group) into an R8 group: per block, the 8 f16
 * scales, then 4 chunks of 32 bytes where chunk c holds bytes 4c..4c+3 of
 * each row's 16 nibble bytes, row after row. */
static void r8_group_pack(uint8_t *dst, const uint8_t *src, size_t row_bytes, size_t nb)
{
    for (size_t b = 0; b < nb; b++) {
        uint8_t *blk = shardlm_r8_block(dst, row_bytes, 0, b);
        for (size_t rr = 0; rr < 8; rr++) {
            const uint8_t *p = src + rr * row_bytes + b * SHARDLM_Q4_0_BYTES;
            memcpy(blk + 2 * rr, p, 2);
            for (size_t c = 0; c < 4; c++) memcpy(blk + 16 + 32 * c + 4 * rr, p + 2 + 4 * c, 4);
        }
    }
}

void shardlm_r8_gather_row(const uint8_t *w, size_t rows, size_t cols, size_t r, uint8_t *out)
{
    size_t nb = cols / SHARDLM_QK, rb = nb * SHARDLM_Q4_0_BYTES, rows8 = rows & ~(size_t)7;
    if (r >= rows8) {
        memcpy(out, w + r * rb, rb); /* the plain tail */
        return;
    }
    size_t g = r / 8, rr = r % 8;
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = shardlm_r8_block(w, rb, g, b);
        uint8_t *p = out + b * SHARDLM_Q4_0_BYTES;
        memcpy(p, blk + 2 * rr, 2);
        for (size_t c = 0; c < 4; c++) memcpy(p + 2 + 4 * c, blk + 16 + 32 * c + 4 * rr, 4);
    }
}

/* Packs 4 plain Q8_0 rows into an R4 group: per block, the 4 f16 scales,
 * then the 4 rows' 32 weights. */
static void r4_group_pack(uint8_t *dst, const uint8_t *src, size_t row_bytes, size_t nb)
{
    for (size_t b = 0; b < nb; b++) {
        uint8_t *blk = shardlm_r4_block(dst, row_bytes, 0, b);
        for (size_t rr = 0; rr < 4; rr++) {
            const uint8_t *p = src + rr * row_bytes + b * SHARDLM_Q8_0_BYTES;
            memcpy(blk + 2 * rr, p, 2);
            memcpy(blk + 8 + SHARDLM_QK * rr, p + 2, SHARDLM_QK);
        }
    }
}

void shardlm_r4_gather_row(const uint8_t *w, size_t rows, size_t cols, size_t r, uint8_t *out)
{
    size_t nb = cols / SHARDLM_QK, rb = nb * SHARDLM_Q8_0_BYTES, rows4 = rows & ~(size_t)3;
    if (r >= rows4) {
        memcpy(out, w + r * rb, rb); /* the plain tail */
        return;
    }
    size_t g = r / 4, rr = r % 4;
    for (size_t b = 0; b < nb; b++) {
        const uint8_t *blk = shardlm_r4_block(w, rb, g, b);
        uint8_t *p = out + b * SHARDLM_Q8_0_BYTES;
        memcpy(p, blk + 2 * rr, 2);
        memcpy(p + 2, blk + 8 + SHARDLM_QK * rr, SHARDLM_QK);
    }
}

/* Weights are read once per token as one long stream: on 4 KiB
 * pages a 1 GB model is 256 k TLB entries per token. A 2 MiB-aligned copy
 * with MADV_HUGEPAGE lets the kernel back it with huge pages where
 * transparent huge pages are in "madvise" mode (Debian's default). The
 * memory is still freed with free(). */
#define REPACK_HUGE (2u << 20)
void *shardlm_weights_alloc(size_t n)
{
    const char *env = getenv("SHARDLM_HUGEPAGES");
    if (n < REPACK_HUGE || (env && !strcmp(env, "0"))) return malloc(n);
    void *p = NULL;
    if (posix_memalign(&p, REPACK_HUGE, n)) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, n & ~(size_t)(REPACK_HUGE - 1), MADV_HUGEPAGE); /* advice only: failure is harmless */
#endif
    return p;
}

static int repack_wanted(shardlm_dtype t, size_t rows, size_t cols)
{
    const char *env = getenv("SHARDLM_REPACK");
    if (env && !strcmp(env, "0")) return 0;
    if (cols == 0 || cols % SHARDLM_QK) return 0;
    if (t == SHARDLM_DT_Q4_0) return rows >= 8 && shardlm_isa_has_q4_0_r8();
    return t == SHARDLM_DT_Q8_0 && rows >= 4 && shardlm_isa_has_q8_0_r4();
}

static int repack_q8_0(const void *src, size_t rows, size_t cols, void **dst, shardlm_dtype *dst_type)
{
    size_t nb = cols / SHARDLM_QK, rb = nb * SHARDLM_Q8_0_BYTES, rows4 = rows & ~(size_t)3;
    uint8_t *out = shardlm_weights_alloc(rows * rb);
    if (!out) return SHARDLM_ENOMEM;
    for (size_t r = 0; r < rows4; r += 4)
        r4_group_pack(out + r * rb, (const uint8_t *)src + r * rb, rb, nb);
    memcpy(out + rows4 * rb, (const uint8_t *)src + rows4 * rb, (rows - rows4) * rb);
    *dst = out;
    *dst_type = SHARDLM_DT_Q8_0_R4;
    return SHARDLM_OK;
}

int shardlm_repack(shardlm_dtype t, const void *src, size_t rows, size_t cols, void **dst,
                   shardlm_dtype *dst_type)
{
    *dst = NULL;
    *dst_type = t;
    if (!repack_wanted(t, rows, cols)) return SHARDLM_OK;
    if (t == SHARDLM_DT_Q8_0) return repack_q8_0(src, rows, cols, dst, dst_type);
    size_t nb = cols / SHARDLM_QK, rb = nb * SHARDLM_Q4_0_BYTES, rows8 = rows & ~(size_t)7;
    uint8_t *out = shardlm_weights_alloc(rows * rb);
    if (!out) return SHARDLM_ENOMEM;
    for (size_t r = 0; r < rows8; r += 8)
        r8_group_pack(out + r * rb, (const uint8_t *)src + r * rb, rb, nb);
    memcpy(out + rows8 * rb, (const uint8_t *)src + rows8 * rb, (rows - rows8) * rb);
    *dst = out;
    *dst_type = SHARDLM_DT_Q4_0_R8;
    return SHARDLM_OK;
}

void shardlm_dequant_mat_row(shardlm_dtype t, const void *w, size_t rows, size_t cols, size_t r, float *dst)
{
    if (t != SHARDLM_DT_Q4_0_R8 && t != SHARDLM_DT_Q8_0_R4) {
        shardlm_dequant_row(t, (const uint8_t *)w + r * shardlm_dtype_row_bytes(t, cols), dst, cols);
        return;
    }
    shardlm_dtype pt = t == SHARDLM_DT_Q4_0_R8 ? SHARDLM_DT_Q4_0 : SHARDLM_DT_Q8_0;
    uint8_t stack[4096];
    size_t rb = shardlm_dtype_row_bytes(pt, cols);
    uint8_t *row = rb <= sizeof stack ? stack : malloc(rb);
    if (!row) abort(); /* a row is a few KB */
    if (pt == SHARDLM_DT_Q4_0) shardlm_r8_gather_row(w, rows, cols, r, row);
    else shardlm_r4_gather_row(w, rows, cols, r, row);
    shardlm_dequant_row(pt, row, dst, cols);
    if (row != stack) free(row);
}

void shardlm_r8_tail(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t rows8 = a->rows & ~(size_t)7;
    shardlm_mm_args t = *a; /* the tail as a plain matrix; y keeps its stride a->rows */
    t.w = a->w + rows8 * a->row_bytes;
    t.y = a->y + rows8;
    a->q4_0_plain(&t, r0 - rows8, r1 - rows8);
}

void shardlm_r8_generic(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    uint8_t *row = malloc(a->row_bytes);
    if (!row) abort(); /* a row is a few KB */
    shardlm_mm_args one = *a;
    one.w = row;
    for (size_t r = r0; r < r1; r++) {
        shardlm_r8_gather_row(a->w, a->rows, a->cols, r, row);
        one.y = a->y + r; /* row 0 of `one` is row r; y keeps its stride a->rows */
        a->q4_0_plain(&one, 0, 1);
    }
    free(row);
}

void shardlm_r4_generic(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    uint8_t *row = malloc(a->row_bytes);
    if (!row) abort(); /* a row is a few KB */
    shardlm_mm_args one = *a;
    one.w = row;
    for (size_t r = r0; r < r1; r++) {
        shardlm_r4_gather_row(a->w, a->rows, a->cols, r, row);
        one.y = a->y + r; /* row 0 of `one` is row r; y keeps its stride a->rows */
        a->q8_0_plain(&one, 0, 1);
    }
    free(row);
}
