/* shardlm_cuda.h - the CUDA device backend as a C API: device discovery,
 * a per-rank context (one stream, one cuBLAS handle), device memory, and the
 * kernels of the forward pass. Callable from C; no CUDA header needed.
 *
 * Every kernel is enqueued on the context's stream and returns a status at
 * once; a launch error becomes SHARDLM_ERUNTIME with an error text naming
 * the kernel. Errors of the kernels themselves show at the next
 * shardlm_cuda_sync/download, which name the operation they were waiting
 * for. Pointers named d_* are device memory.
 *
 * In a build without CUDA (SHARDLM_HAVE_CUDA undefined) every function is
 * present and fails with "this shardlm was built without CUDA"
 * (kernels/cuda/cuda_stub.c), so callers need no #ifdef. */
#ifndef SHARDLM_CUDA_H
#define SHARDLM_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* shardlm_kernels.h has no guard of its own */
#endif

#include "shardlm_kernels.h"

/* ---- devices ---- */

/* 1 when this shardlm was compiled with CUDA. */
int shardlm_cuda_built(void);
/* Number of visible devices. Fails (SHARDLM_ERUNTIME) when the runtime finds
 * none, with an error text holding cudaGetDeviceCount's error string. */
int shardlm_cuda_device_count(int *count);

typedef struct {
    char name[256];
    size_t total_mem, free_mem; /* bytes */
    int cc_major, cc_minor;     /* compute capability */
    int multiprocessors;
    int driver_version, runtime_version; /* 1000 * major + 10 * minor */
} shardlm_cuda_device_info;
int shardlm_cuda_get_device_info(int device, shardlm_cuda_device_info *info);

/* The device of a rank from a --device spec: "cuda" -> local_rank % count,
 * "cuda:K" -> K. Returns the device index (>= 0), or SHARDLM_EINPUT with a
 * message naming --device when the spec is malformed, K is out of range or
 * no device exists (the message includes cudaGetDeviceCount's error). */
int shardlm_cuda_pick_device(int local_rank, const char *spec);

/* ---- context: a device, a stream and a cuBLAS handle ---- */

typedef struct shardlm_cuda_ctx shardlm_cuda_ctx;
int shardlm_cuda_ctx_new(int device, shardlm_cuda_ctx **out);
void shardlm_cuda_ctx_free(shardlm_cuda_ctx *c);
int shardlm_cuda_ctx_device(const shardlm_cuda_ctx *c);
/* Waits for the stream; what names the step for the error text. */
int shardlm_cuda_sync(shardlm_cuda_ctx *c, const char *what);

/* ---- memory (what names the buffer in the out-of-memory message) ---- */

int shardlm_cuda_alloc(shardlm_cuda_ctx *c, void **d_out, size_t bytes, const char *what);
void shardlm_cuda_release(shardlm_cuda_ctx *c, void *d_ptr);
/* Host to device, enqueued (the host buffer may be reused on return). */
int shardlm_cuda_upload(shardlm_cuda_ctx *c, void *d_dst, const void *src, size_t bytes);
/* Device to host; returns when the data is there (waits for the stream). */
int shardlm_cuda_download(shardlm_cuda_ctx *c, void *dst, const void *d_src, size_t bytes);
int shardlm_cuda_copy(shardlm_cuda_ctx *c, void *d_dst, const void *d_src, size_t bytes);
int shardlm_cuda_zero(shardlm_cuda_ctx *c, void *d_dst, size_t bytes);

/* ---- kernels ---- */

/* 1 when shardlm_cuda_matmul/embed take this weight type: F32, F16, BF16,
 * Q8_0, Q4_0 (GGUF block layouts). */
int shardlm_cuda_dtype_ok(shardlm_dtype t);

/* out[i] = row d_tokens[i] of a vocab x dim table, as f32, for i < n. */
int shardlm_cuda_embed(shardlm_cuda_ctx *c, shardlm_dtype t, const void *d_table, size_t dim, const int32_t *d_tokens,
                       int n, float *d_out);
/* Each of rows rows: out = w * x / sqrt(mean(x^2) + eps). out may be x;
 * with rows = tokens x heads and dim = head_dim it is qwen3's per-head
 * q/k norm. */
int shardlm_cuda_rmsnorm(shardlm_cuda_ctx *c, float *d_out, const float *d_x, const float *d_w, int rows, size_t dim,
                         float eps);
/* Row i of n rows (n_heads x head_dim each) rotated at position d_pos[i],
 * exactly as shardlm_ref_rope (interleaved pairs of the first rope_dim). */
int shardlm_cuda_rope(shardlm_cuda_ctx *c, float *d_v, int n, int n_heads, int head_dim, int rope_dim,
                      const int32_t *d_pos, float base);
/* RoPE from precomputed inverse frequencies d_freq[rope_dim / 2] (as
 * shardlm_rope_freqs_ext makes them: base, Llama 3 factors, linear scale):
 * pair j of row i turns by d_pos[i] * d_freq[j]. neox = 0: the pairs
 * (x[2j], x[2j+1]) as shardlm_rope; 1: (x[j], x[j + rope_dim/2]) as
 * shardlm_rope_neox. */
int shardlm_cuda_rope_freqs(shardlm_cuda_ctx *c, float *d_v, int n, int n_heads, int head_dim, int rope_dim,
                            const int32_t *d_pos, const float *d_freq, int neox);
/* y[r][j] += b[j] for r < rows, j < width (q/k/v, output and FFN biases). */
int shardlm_cuda_add_bias(shardlm_cuda_ctx *c, float *d_y, const float *d_b, int rows, size_t width);
/* a[i] = silu(a[i]) * b[i] */
int shardlm_cuda_silu_mul(shardlm_cuda_ctx *c, float *d_a, const float *d_b, size_t n);
/* x[i] += y[i] */
int shardlm_cuda_add(shardlm_cuda_ctx *c, float *d_x, const float *d_y, size_t n);
/* Y[i][r] = sum_c W[r][c] * X[i][c] (X: n x cols, Y: n x rows), W row-major
 * of type t. F32 uses cublasSgemm; F16/BF16 round X to the weight type and
 * use cublasGemmEx with f32 accumulation; Q8_0/Q4_0 dequantise on the fly
 * in a warp-per-row kernel (f32 activations, so no activation rounding). */
int shardlm_cuda_matmul(shardlm_cuda_ctx *c, shardlm_dtype t, const void *d_w, size_t rows, size_t cols,
                        const float *d_x, size_t n, float *d_y);
/* In place, each of rows rows of n values. */
int shardlm_cuda_softmax(shardlm_cuda_ctx *c, float *d_x, int rows, int n);
/* d_out[i] = index of the largest value of row i (the first on ties). */
int shardlm_cuda_argmax(shardlm_cuda_ctx *c, const float *d_x, int rows, int n, int32_t *d_out);

/* The paged KV cache of one rank, as model/forward.c lays it out: position
 * pos of a sequence with block table T is at slot
 * (layer * n_blocks + T[pos / block_size]) * block_size + pos % block_size,
 * each slot kv_width floats (local KV heads x head_dim). */
typedef struct {
    float *d_k, *d_v;
    int n_blocks, block_size, kv_width;
    const int32_t *d_tables; /* [n_seqs][table_stride] */
    int table_stride;
    const int32_t *d_seq, *d_pos; /* [n]: each token's sequence and position */
} shardlm_cuda_kv;

/* Stores the n rows of d_k/d_v (kv_width each) at their tokens' slots. */
int shardlm_cuda_kv_store(shardlm_cuda_ctx *c, const shardlm_cuda_kv *kv, int layer, const float *d_k,
                          const float *d_v, int n);

typedef struct {
    int n_q_heads, head_dim; /* local query heads */
    int q_head0, kv_head0;   /* first local query / KV head (global index) */
    int group;               /* query heads per KV head (n_heads / n_kv_heads) */
} shardlm_cuda_heads;

/* Causal attention of n tokens (decode or a prefill chunk: each token sees
 * positions 0..pos of its own sequence, so store the batch's KV first).
 * d_q and d_out: [n][n_q_heads * head_dim]. head_dim <= 256. */
int shardlm_cuda_attention(shardlm_cuda_ctx *c, const shardlm_cuda_kv *kv, const shardlm_cuda_heads *h, int layer,
                           const float *d_q, float *d_out, int n);

#ifdef __cplusplus
}
#endif

#endif
