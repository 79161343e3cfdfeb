/* shardlm_kernels.h - tensor element types and the compute kernels of the
 * forward pass. Types use ggml's numbering so GGUF type ids map directly.
 *
 * Every kernel has a plain scalar reference (shardlm_ref_*). Optimised
 * kernels are tested against those references. */
#ifndef SHARDLM_KERNELS_H
#define SHARDLM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SHARDLM_DT_F32 = 0,
    SHARDLM_DT_F16 = 1,
    SHARDLM_DT_Q4_0 = 2,
    SHARDLM_DT_Q8_0 = 8,
    SHARDLM_DT_BF16 = 30,
} shardlm_dtype;

#define SHARDLM_QK 32 /* elements per Q4_0 / Q8_0 block */

/* 1 when the type id (a raw GGUF value) is one shardlm can compute with. */
int shardlm_dtype_supported(uint32_t type);
/* "f32", "f16", "q4_0", "q8_0", "bf16", or "type#N" for others. */
const char *shardlm_dtype_name(uint32_t type);
/* Parses a name as above; returns -1 when unknown. */
int shardlm_dtype_parse(const char *name);
/* Elements per block (1 for float types) and bytes per block. Both 0 for
 * unknown types. */
size_t shardlm_dtype_block_elems(uint32_t type);
size_t shardlm_dtype_block_bytes(uint32_t type);
/* Bytes of a row of n elements; 0 when n is not a multiple of the block. */
size_t shardlm_dtype_row_bytes(uint32_t type, uint64_t n);

float shardlm_f16_to_f32(uint16_t h);
uint16_t shardlm_f32_to_f16(float f);
float shardlm_bf16_to_f32(uint16_t h);
uint16_t shardlm_f32_to_bf16(float f);

/* Convert n elements (n a multiple of the block size) between f32 and a type,
 * exactly as the GGUF/ggml reference defines them. */
void shardlm_dequant_row(shardlm_dtype t, const void *src, float *dst, size_t n);
void shardlm_quant_row(shardlm_dtype t, const float *src, void *dst, size_t n);

/* ---- scalar reference kernels ---- */

/* y[r] = sum_c W[r][c] * x[c] for a row-major W of `rows` rows of `cols`
 * elements of type t. */
void shardlm_ref_matvec(shardlm_dtype t, const void *w, size_t rows, size_t cols, const float *x,
                        float *y);
/* Y[i][r] = sum_c W[r][c] * X[i][c] for i < n (X is n x cols, Y is n x rows). */
void shardlm_ref_matmul(shardlm_dtype t, const void *w, size_t rows, size_t cols, const float *x,
                        size_t n, float *y);
void shardlm_ref_rmsnorm(float *out, const float *x, const float *weight, size_t n, float eps);
/* Rotates interleaved pairs (v[2i], v[2i+1]) of the first rope_dim elements of
 * each of n_heads heads of head_dim elements, at position pos. */
void shardlm_ref_rope(float *v, int n_heads, int head_dim, int rope_dim, int pos, float base);
void shardlm_ref_softmax(float *x, size_t n);
/* a[i] = silu(a[i]) * b[i] */
void shardlm_ref_silu_mul(float *a, const float *b, size_t n);

#endif
