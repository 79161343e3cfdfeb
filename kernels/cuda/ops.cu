/* ops.cu - the element-wise and row-wise kernels of the forward pass:
 * embedding lookup, RMSNorm (rows of dim, or of head_dim for qwen3's q/k
 * norms), RoPE (pairs or NeoX halves, from a frequency table), bias add,
 * SiLU-multiply, residual add, softmax,
 * argmax and the paged KV store. Each mirrors its scalar reference in
 * kernels/cpu/ref.c (same formulas, f32 throughout, no fast-math). */
#include <cuda_fp16.h>
#include <math.h>

#include "cuda_internal.h"

#define ROW_THREADS 256 /* threads of the one-block-per-row kernels */

__device__ static float f16_at(const unsigned char *p)
{
    return __half2float(__ushort_as_half(*(const unsigned short *)p));
}

/* Element e of a row of type t (GGUF layouts: Q8_0 = f16 d + 32 int8;
 * Q4_0 = f16 d + 16 bytes, low nibbles are elements 0..15, high 16..31,
 * each minus 8). Rows are whole blocks, so every f16 is 2-byte aligned. */
__device__ static float elem_at(int t, const unsigned char *row, size_t e)
{
    switch (t) {
    case SHARDLM_DT_F32: return ((const float *)row)[e];
    case SHARDLM_DT_F16: return f16_at(row + 2 * e);
    case SHARDLM_DT_BF16: return __uint_as_float((unsigned)((const unsigned short *)row)[e] << 16);
    case SHARDLM_DT_Q8_0: {
        const unsigned char *b = row + (e / 32) * 34;
        return (float)(signed char)b[2 + e % 32] * f16_at(b);
    }
    default: { /* Q4_0 */
        const unsigned char *b = row + (e / 32) * 18;
        int j = (int)(e % 32), byte = b[2 + (j & 15)];
        int q = j < 16 ? (byte & 15) : (byte >> 4);
        return (float)(q - 8) * f16_at(b);
    }
    }
}

__global__ static void embed_k(int t, const unsigned char *table, size_t row_bytes, size_t dim, const int32_t *tokens,
                               float *out)
{
    const unsigned char *row = table + (size_t)tokens[blockIdx.x] * row_bytes;
    for (size_t e = threadIdx.x; e < dim; e += blockDim.x) out[blockIdx.x * dim + e] = elem_at(t, row, e);
}

int shardlm_cuda_dtype_ok(shardlm_dtype t)
{
    return t == SHARDLM_DT_F32 || t == SHARDLM_DT_F16 || t == SHARDLM_DT_BF16 || t == SHARDLM_DT_Q8_0 ||
           t == SHARDLM_DT_Q4_0;
}

int shardlm_cuda_embed(shardlm_cuda_ctx *c, shardlm_dtype t, const void *d_table, size_t dim, const int32_t *d_tokens,
                       int n, float *d_out)
{
    if (!shardlm_cuda_dtype_ok(t) || shardlm_dtype_row_bytes(t, dim) == 0) {
        shardlm_err_set("CUDA kernel embed: type %s with %zu columns is not supported on the device",
                        shardlm_dtype_name(t), dim);
        return SHARDLM_EINPUT;
    }
    if (n <= 0) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    embed_k<<<n, ROW_THREADS, 0, c->stream>>>((int)t, (const unsigned char *)d_table, shardlm_dtype_row_bytes(t, dim),
                                              dim, d_tokens, d_out);
    return shardlm_cuda_launched("embed");
}

/* Sum over the block; every thread gets the result. */
__device__ static float block_sum(float v)
{
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = (blockDim.x + 31) / 32;
    __syncthreads(); /* part[] may still be read by a previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ static float block_max(float v)
{
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = (blockDim.x + 31) / 32;
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    v = lane < nw ? part[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__global__ static void rmsnorm_k(float *out, const float *x, const float *w, size_t dim, float eps)
{
    const float *xr = x + blockIdx.x * dim;
    float *o = out + blockIdx.x * dim;
    float ss = 0.0f;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = 1.0f / sqrtf(block_sum(ss) / (float)dim + eps);
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = w[i] * (ss * xr[i]);
}

int shardlm_cuda_rmsnorm(shardlm_cuda_ctx *c, float *d_out, const float *d_x, const float *d_w, int rows, size_t dim,
                         float eps)
{
    if (rows <= 0) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    rmsnorm_k<<<rows, ROW_THREADS, 0, c->stream>>>(d_out, d_x, d_w, dim, eps);
    return shardlm_cuda_launched("rmsnorm");
}

/* One thread per rotated pair; the angle is computed as the reference
 * does (powf, then cosf/sinf in f32), so positions agree bit-for-bit or
 * within an ulp of the libm functions. */
__global__ static void rope_k(float *v, size_t total, int n_heads, int head_dim, int rope_dim, const int32_t *pos,
                              float base)
{
    size_t id = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (id >= total) return;
    int half = rope_dim / 2;
    size_t tok = id / ((size_t)n_heads * half);
    int h = (int)(id / half % n_heads), i = (int)(id % half) * 2;
    float *q = v + (tok * n_heads + h) * head_dim;
    float freq = 1.0f / powf(base, (float)i / (float)rope_dim);
    float a = (float)pos[tok] * freq;
    float co = cosf(a), si = sinf(a);
    float x0 = q[i], x1 = q[i + 1];
    q[i] = x0 * co - x1 * si;
    q[i + 1] = x0 * si + x1 * co;
}

int shardlm_cuda_rope(shardlm_cuda_ctx *c, float *d_v, int n, int n_heads, int head_dim, int rope_dim,
                      const int32_t *d_pos, float base)
{
    size_t total = (size_t)n * n_heads * (rope_dim / 2);
    if (total == 0) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    rope_k<<<shardlm_cuda_blocks(total, 256), 256, 0, c->stream>>>(d_v, total, n_heads, head_dim, rope_dim, d_pos,
                                                                    base);
    return shardlm_cuda_launched("rope");
}

/* One thread per rotated pair; the angle is pos * freq[j] in f32, then
 * cosf/sinf, as the CPU's tables compute it. */
__global__ static void rope_freqs_k(float *v, size_t total, int n_heads, int head_dim, int rope_dim,
                                    const int32_t *pos, const float *freq, int neox)
{
    size_t id = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (id >= total) return;
    int half = rope_dim / 2;
    size_t tok = id / ((size_t)n_heads * half);
    int h = (int)(id / half % n_heads), j = (int)(id % half);
    float *q = v + (tok * n_heads + h) * head_dim;
    float a = (float)pos[tok] * freq[j];
    float co = cosf(a), si = sinf(a);
    int i0 = neox ? j : 2 * j, i1 = neox ? j + half : 2 * j + 1;
    float x0 = q[i0], x1 = q[i1];
    q[i0] = x0 * co - x1 * si;
    q[i1] = x0 * si + x1 * co;
}

int shardlm_cuda_rope_freqs(shardlm_cuda_ctx *c, float *d_v, int n, int n_heads, int head_dim, int rope_dim,
                            const int32_t *d_pos, const float *d_freq, int neox)
{
    size_t total = (size_t)n * n_heads * (rope_dim / 2);
    if (total == 0) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    rope_freqs_k<<<shardlm_cuda_blocks(total, 256), 256, 0, c->stream>>>(d_v, total, n_heads, head_dim, rope_dim,
                                                                          d_pos, d_freq, neox);
    return shardlm_cuda_launched("rope_freqs");
}

__global__ static void add_bias_k(float *y, const float *b, size_t n, size_t width)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += b[i % width];
}

__global__ static void silu_mul_k(float *a, const float *b, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

__global__ static void add_k(float *x, const float *y, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] += y[i];
}

/* Grid-stride kernels need no more blocks than the device can hold. */
static unsigned ew_blocks(size_t n)
{
    unsigned b = shardlm_cuda_blocks(n, 256);
    return b > 4096 ? 4096 : b;
}

int shardlm_cuda_silu_mul(shardlm_cuda_ctx *c, float *d_a, const float *d_b, size_t n)
{
    if (!n) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    silu_mul_k<<<ew_blocks(n), 256, 0, c->stream>>>(d_a, d_b, n);
    return shardlm_cuda_launched("silu_mul");
}

int shardlm_cuda_add_bias(shardlm_cuda_ctx *c, float *d_y, const float *d_b, int rows, size_t width)
{
    size_t n = (size_t)(rows > 0 ? rows : 0) * width;
    if (!n) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    add_bias_k<<<ew_blocks(n), 256, 0, c->stream>>>(d_y, d_b, n, width);
    return shardlm_cuda_launched("add_bias");
}

int shardlm_cuda_add(shardlm_cuda_ctx *c, float *d_x, const float *d_y, size_t n)
{
    if (!n) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    add_k<<<ew_blocks(n), 256, 0, c->stream>>>(d_x, d_y, n);
    return shardlm_cuda_launched("add");
}

__global__ static void softmax_k(float *x, int n)
{
    float *r = x + (size_t)blockIdx.x * n;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, r[i]);
    mx = block_max(mx);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        r[i] = expf(r[i] - mx);
        sum += r[i];
    }
    sum = block_sum(sum);
    for (int i = threadIdx.x; i < n; i += blockDim.x) r[i] /= sum;
}

int shardlm_cuda_softmax(shardlm_cuda_ctx *c, float *d_x, int rows, int n)
{
    if (rows <= 0 || n <= 0) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    softmax_k<<<rows, ROW_THREADS, 0, c->stream>>>(d_x, n);
    return shardlm_cuda_launched("softmax");
}

/* (value, index) pairs reduced so the larger value wins, the lower index on
 * ties; NaN never wins. */
__device__ static void better(float *v, int *i, float v2, int i2)
{
    if (v2 > *v || (v2 == *v && i2 < *i)) *v = v2, *i = i2;
}

__global__ static void argmax_k(const float *x, int n, int32_t *out)
{
    __shared__ float pv[32];
    __shared__ int pi[32];
    const float *r = x + (size_t)blockIdx.x * n;
    float v = -INFINITY;
    int idx = n; /* beyond every real index, so any value beats it */
    for (int i = threadIdx.x; i < n; i += blockDim.x) better(&v, &idx, r[i], i);
    for (int o = 16; o > 0; o >>= 1) better(&v, &idx, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    if (lane == 0) pv[warp] = v, pi[warp] = idx;
    __syncthreads();
    if (warp) return;
    v = lane < nw ? pv[lane] : -INFINITY;
    idx = lane < nw ? pi[lane] : n;
    for (int o = 16; o > 0; o >>= 1) better(&v, &idx, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
    if (lane == 0) out[blockIdx.x] = idx < n ? idx : 0;
}

int shardlm_cuda_argmax(shardlm_cuda_ctx *c, const float *d_x, int rows, int n, int32_t *d_out)
{
    if (rows <= 0 || n <= 0) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    argmax_k<<<rows, ROW_THREADS, 0, c->stream>>>(d_x, n, d_out);
    return shardlm_cuda_launched("argmax");
}

__global__ static void kv_store_k(shardlm_cuda_kv kv, int layer, const float *k, const float *v)
{
    size_t w = (size_t)kv.kv_width, dst = shardlm_cuda_kv_slot(kv, layer, blockIdx.x) * w;
    for (size_t j = threadIdx.x; j < w; j += blockDim.x) {
        kv.d_k[dst + j] = k[blockIdx.x * w + j];
        kv.d_v[dst + j] = v[blockIdx.x * w + j];
    }
}

int shardlm_cuda_kv_store(shardlm_cuda_ctx *c, const shardlm_cuda_kv *kv, int layer, const float *d_k,
                          const float *d_v, int n)
{
    if (n <= 0) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    kv_store_k<<<n, 128, 0, c->stream>>>(*kv, layer, d_k, d_v);
    return shardlm_cuda_launched("kv_store");
}
