/* cpu_internal.h - what the per-ISA kernel files share with the dispatcher
 * (matmul.c): the argument block of one matrix product, the layout of the
 * 8-bit activations, and the table of functions each ISA provides. */
#ifndef SHARDLM_CPU_INTERNAL_H
#define SHARDLM_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "shardlm_kernels.h"

#define SHARDLM_Q8_0_BYTES (2 + SHARDLM_QK)
#define SHARDLM_Q4_0_BYTES (2 + SHARDLM_QK / 2)

/* One product Y[i][r] = sum_c W[r][c] * X[i][c]. Float weight types read x;
 * quantised ones read the 8-bit activations: input i has xq[i*cols + c]
 * (int8, one block of 32 per weight block), block scale xd[i*nb + b] and
 * xs[i*nb + b] = xd * (sum of the block's 32 int8 values), which Q4_0 uses
 * to remove its +8 nibble offset after an unsigned x signed product. */
typedef struct shardlm_mm_args shardlm_mm_args;

/* The scale xd of an activation block whose largest |x| is amax. It is
 * rounded to f16, as in ggml's block_q8_0, whose dot products multiply by the
 * f16 value; the int8 values are still x * 127 / amax. That is what
 * llama.cpp computes; an f32 scale moved the logits of a 2-layer Q8_0 model
 * by up to 0.03 of their standard deviation from llama.cpp's, and this one
 * by 1e-6 (tests/llamacpp/run.sh). */
static inline float shardlm_act_scale(float amax)
{
    return shardlm_f16_to_f32(shardlm_f32_to_f16(amax / 127.0f));
}

/* Computes output rows [r0, r1) for every input. */
typedef void (*shardlm_mm_fn)(const shardlm_mm_args *a, size_t r0, size_t r1);

struct shardlm_mm_args {
    const uint8_t *w;
    size_t row_bytes, rows, cols, n;
    const float *x;
    const int8_t *xq;
    const float *xd, *xs;
    float *y; /* n x rows */
    /* Q4_0 only: xo[i*nb + b] = 8 * (sum of the block's 32 int8 values),
     * exact, so the AVX2 kernels remove the +8 offset in integers. */
    const int32_t *xo;
    /* For SHARDLM_DT_Q4_0_R8: the plain Q4_0 kernel of the path in use,
     * for the rows % 8 tail rows and for paths without a repacked kernel. */
    shardlm_mm_fn q4_0_plain;
    /* For SHARDLM_DT_Q8_0_R4 on paths without an R4 kernel: their plain
     * Q8_0 kernel. */
    shardlm_mm_fn q8_0_plain;
};

/* Quantises one row of cols floats (cols % 32 == 0) to the layout above:
 * q[cols], d[cols/32], s[cols/32]. Every ISA must produce the same bits:
 * d = amax/127, q = round-half-even(x * (127/amax)). */
typedef void (*shardlm_quant_x_fn)(const float *x, size_t cols, int8_t *q, float *d, float *s);

typedef struct {
    const char *name;
    shardlm_mm_fn f32, f16, bf16, q8_0, q4_0;
    /* SHARDLM_DT_Q4_0_R8; NULL: no faster path, so shardlm_repack declines. */
    shardlm_mm_fn q4_0_r8;
    /* SHARDLM_DT_Q8_0_R4 likewise. */
    shardlm_mm_fn q8_0_r4;
    shardlm_quant_x_fn quant_x;
    void (*rmsnorm)(float *out, const float *x, const float *weight, size_t n, float eps);
    void (*softmax)(float *x, size_t n);
    void (*silu_mul)(float *a, const float *b, size_t n);
    /* The block types of matmul_q5.c, matmul_iq4.c and matmul_k_more.c
     * (SHARDLM_ISA_MORE_TYPES_* below); NULL: the AVX2 (x86) or scalar one. */
    shardlm_mm_fn q4_1, q5_0, q5_1, q2_k, q3_k, q5_k, iq4_nl, iq4_xs;
} shardlm_isa_ops;

extern const shardlm_isa_ops shardlm_isa_scalar;
#if defined(__x86_64__)
extern const shardlm_isa_ops shardlm_isa_avx2;
extern const shardlm_isa_ops shardlm_isa_avx512;
extern const shardlm_isa_ops shardlm_isa_avx512vnni;
#endif
#if defined(__aarch64__)
extern const shardlm_isa_ops shardlm_isa_neon;
#endif

/* The kernels of the other block types, and the table entries naming them. */
void shardlm_scalar_q4_1(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_scalar_q5_0(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_scalar_q5_1(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_scalar_q2_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_scalar_q3_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_scalar_q5_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_scalar_iq4_nl(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_scalar_iq4_xs(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_scalar_f16(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_scalar_bf16(const shardlm_mm_args *a, size_t r0, size_t r1);
#define SHARDLM_ISA_MORE_TYPES_SCALAR                                                                   \
    .q4_1 = shardlm_scalar_q4_1, .q5_0 = shardlm_scalar_q5_0, .q5_1 = shardlm_scalar_q5_1,              \
    .q2_k = shardlm_scalar_q2_k, .q3_k = shardlm_scalar_q3_k, .q5_k = shardlm_scalar_q5_k,              \
    .iq4_nl = shardlm_scalar_iq4_nl, .iq4_xs = shardlm_scalar_iq4_xs
#if defined(__x86_64__)
void shardlm_avx2_f32(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_f16(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_bf16(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_q8_0(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_q4_1(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_q5_0(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_q5_1(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_q2_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_q3_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_q5_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_iq4_nl(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_iq4_xs(const shardlm_mm_args *a, size_t r0, size_t r1);
/* The AVX-512 VNNI ones that measured faster (matmul_avx512_q5.c,
 * matmul_avx512_iq4.c), the AVX2 kernels' bits, two rows per register. */
void shardlm_avx512vnni_q4_1(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx512vnni_q5_0(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx512vnni_q5_1(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx512vnni_iq4_nl(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx512vnni_iq4_xs(const shardlm_mm_args *a, size_t r0, size_t r1);
/* Also the plain AVX-512 table's entries; the VNNI table lists them one
 * per line, replacing those measured faster. */
#define SHARDLM_ISA_MORE_TYPES_AVX2                                                                     \
    .q4_1 = shardlm_avx2_q4_1, .q5_0 = shardlm_avx2_q5_0, .q5_1 = shardlm_avx2_q5_1,                    \
    .q2_k = shardlm_avx2_q2_k, .q3_k = shardlm_avx2_q3_k, .q5_k = shardlm_avx2_q5_k,                    \
    .iq4_nl = shardlm_avx2_iq4_nl, .iq4_xs = shardlm_avx2_iq4_xs
/* The AVX2 float, Q8_0 and Q4_0 kernels with their repacked R8/R4 ones. A
 * wider table starts from these and replaces only what it measured faster
 * on a real machine (docs/PERFORMANCE.md): an entry left out would lose the
 * repack, which is how the AVX-512 default once ran at half the AVX2 speed.
 * tests/test_dispatch.c fails if a wider table lacks an entry. */
#define SHARDLM_ISA_AVX2_KERNELS                                                                        \
    .f32 = shardlm_avx2_f32, .f16 = shardlm_avx2_f16, .bf16 = shardlm_avx2_bf16, .q8_0 = shardlm_avx2_q8_0, \
    .q4_0 = shardlm_avx2_q4_0, .q4_0_r8 = shardlm_avx2_q4_0_r8, .q8_0_r4 = shardlm_avx2_q8_0_r4
#endif

/* Pieces one ISA table borrows from another. */
void shardlm_scalar_quant_x(const float *x, size_t cols, int8_t *q, float *d, float *s);
#if defined(__x86_64__)
void shardlm_avx2_quant_x(const float *x, size_t cols, int8_t *q, float *d, float *s);
void shardlm_avx2_rmsnorm(float *out, const float *x, const float *weight, size_t n, float eps);
void shardlm_avx2_softmax(float *x, size_t n);
void shardlm_avx2_silu_mul(float *a, const float *b, size_t n);
void shardlm_avx2_q4_0_r8(const shardlm_mm_args *a, size_t r0, size_t r1); /* matmul_avx2_r8.c */
void shardlm_avx2_q4_0(const shardlm_mm_args *a, size_t r0, size_t r1);    /* matmul_avx2_r8.c */
#endif

/* ---- Q4_0_R8 layout (shardlm_kernels.h) ---- */

/* Block b of group g: 8 blocks' worth of bytes (144) per block index, so
 * this is plain arithmetic. Inside: the 8 rows' f16 scales (16 bytes), then
 * 4 chunks of 32 bytes, chunk c = bytes 4c..4c+3 of the 8 rows' nibbles,
 * row 0 first (low nibble of byte j: element j; high: element j + 16). */
static inline uint8_t *shardlm_r8_block(const uint8_t *w, size_t row_bytes, size_t g, size_t b)
{
    return (uint8_t *)w + g * 8 * row_bytes + b * 8 * SHARDLM_Q4_0_BYTES;
}
/* Copies row r of a Q4_0_R8 matrix out as a plain Q4_0 row. */
void shardlm_r8_gather_row(const uint8_t *w, size_t rows, size_t cols, size_t r, uint8_t *out);
/* The Q4_0_R8 kernel of paths without their own: gathers each row to plain
 * Q4_0 and runs a->q4_0_plain on it. Same result, no faster. */
void shardlm_r8_generic(const shardlm_mm_args *a, size_t r0, size_t r1);
/* Runs a->q4_0_plain on rows [r0, r1) of the plain tail (r0 >= rows & ~7). */
void shardlm_r8_tail(const shardlm_mm_args *a, size_t r0, size_t r1);
/* 1 when the path in use has its own Q4_0_R8 kernel. */
int shardlm_isa_has_q4_0_r8(void);

/* ---- Q8_0_R4 layout (shardlm_kernels.h) ---- */

#define SHARDLM_R4_BLOCK (4 * SHARDLM_Q8_0_BYTES) /* 136: 4 scales, then 4 x 32 weights */

/* Block b of group g (4 rows). */
static inline uint8_t *shardlm_r4_block(const uint8_t *w, size_t row_bytes, size_t g, size_t b)
{
    return (uint8_t *)w + g * 4 * row_bytes + b * SHARDLM_R4_BLOCK;
}
/* Copies row r of a Q8_0_R4 matrix out as a plain Q8_0 row. */
void shardlm_r4_gather_row(const uint8_t *w, size_t rows, size_t cols, size_t r, uint8_t *out);
/* The Q8_0_R4 kernel of paths without their own: gathers each row to plain
 * Q8_0 and runs a->q8_0_plain on it. Same result, no faster. */
void shardlm_r4_generic(const shardlm_mm_args *a, size_t r0, size_t r1);
/* 1 when the path in use has its own Q8_0_R4 kernel. */
int shardlm_isa_has_q8_0_r4(void);
#if defined(__x86_64__)
void shardlm_avx2_q8_0_r4(const shardlm_mm_args *a, size_t r0, size_t r1); /* matmul_avx2.c */
#endif

/* A per-pool scratch area that only grows; NULL pool means a per-thread
 * one. Returns NULL when out of memory. */
void *shardlm_pool_scratch(struct shardlm_pool *p, size_t bytes);

/* Little-endian f16 at p, any alignment. */
static inline uint16_t shardlm_rd16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return h;
}

#endif
