/* repack.c - Q4_0 to the load-time Q4_0_R8 layout (shardlm_kernels.h) and
 * back, and the fallback Q4_0_R8 kernel for paths without their own.
 *
 * Why repack: in plain Q4_0 each row's f16 scale sits every 18 bytes, so a
 * SIMD kernel gathers 8 scales with 8 scalar loads and inserts, about as
 * many instructions as the dot product itself, and a 4-row tile reads 4
 * separate streams. In Q4_0_R8 a run's 8 scales of a row are one 16-byte
 * load, a row's two adjacent blocks are one 32-byte load, and a group of 8
 * rows is one sequential stream. The values are unchanged, so kernels can
 * do exactly the arithmetic of the plain path, in the same order. */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "shardlm_common.h"

/* Blocks in the run starting at block b0: 8, or fewer for the last. */
#define R8_RUN_LEN(nb, b0) ((nb) - (b0) < 8 ? (nb) - (b0) : 8)

/* Packs 8 plain rows (one group) into an R8 group. */
static void r8_group_pack(uint8_t *dst, const uint8_t *src, size_t row_bytes, size_t nb)
{
    for (size_t b0 = 0; b0 < nb; b0 += 8) {
        size_t k = R8_RUN_LEN(nb, b0);
        uint8_t *run = dst + b0 * 8 * SHARDLM_Q4_0_BYTES, *nib = run + 16 * k;
        for (size_t rr = 0; rr < 8; rr++)
            for (size_t j = 0; j < k; j++) {
                const uint8_t *blk = src + rr * row_bytes + (b0 + j) * SHARDLM_Q4_0_BYTES;
                memcpy(run + 2 * (rr * k + j), blk, 2);
                memcpy(nib + 16 * (rr * k + j), blk + 2, 16);
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
    for (size_t b0 = 0; b0 < nb; b0 += 8) {
        size_t k = R8_RUN_LEN(nb, b0);
        const uint8_t *run = shardlm_r8_run(w, rb, g, b0), *nib = run + 16 * k;
        for (size_t j = 0; j < k; j++) {
            uint8_t *blk = out + (b0 + j) * SHARDLM_Q4_0_BYTES;
            memcpy(blk, run + 2 * (rr * k + j), 2);
            memcpy(blk + 2, nib + 16 * (rr * k + j), 16);
        }
    }
}

static int repack_wanted(shardlm_dtype t, size_t rows, size_t cols)
{
    const char *env = getenv("SHARDLM_REPACK");
    if (env && !strcmp(env, "0")) return 0;
    return t == SHARDLM_DT_Q4_0 && cols > 0 && cols % SHARDLM_QK == 0 && rows >= 8 && shardlm_isa_has_q4_0_r8();
}

int shardlm_repack(shardlm_dtype t, const void *src, size_t rows, size_t cols, void **dst,
                   shardlm_dtype *dst_type)
{
    *dst = NULL;
    *dst_type = t;
    if (!repack_wanted(t, rows, cols)) return SHARDLM_OK;
    size_t nb = cols / SHARDLM_QK, rb = nb * SHARDLM_Q4_0_BYTES, rows8 = rows & ~(size_t)7;
    uint8_t *out = malloc(rows * rb);
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
    if (t != SHARDLM_DT_Q4_0_R8) {
        shardlm_dequant_row(t, (const uint8_t *)w + r * shardlm_dtype_row_bytes(t, cols), dst, cols);
        return;
    }
    uint8_t stack[4096];
    size_t rb = cols / SHARDLM_QK * SHARDLM_Q4_0_BYTES;
    uint8_t *row = rb <= sizeof stack ? stack : malloc(rb);
    if (!row) abort(); /* a row is a few KB */
    shardlm_r8_gather_row(w, rows, cols, r, row);
    shardlm_dequant_row(SHARDLM_DT_Q4_0, row, dst, cols);
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
