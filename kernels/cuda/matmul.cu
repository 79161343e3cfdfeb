/* matmul.cu - Y = X W^T for the weight types the device takes. Float
 * weights go to cuBLAS; Q8_0 and Q4_0 are dequantised on the fly by a
 * warp-per-row kernel, so the quantised weights are read once per up to
 * MM_TOK tokens and never expanded in memory. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_internal.h"

#define MM_WARPS 4 /* rows per thread block */
#define MM_TOK 8   /* tokens per warp: each weight value is used MM_TOK times */

/* Warp per row: lane j takes element j of every 32-value block (coalesced
 * reads of the quants and of x), then the lanes' partial sums are added. */
template <int QT>
__global__ static void qmm_k(const unsigned char *w, size_t rows, size_t cols, const float *x, size_t n, float *y)
{
    size_t r = (size_t)blockIdx.x * MM_WARPS + threadIdx.x / 32;
    size_t t0 = (size_t)blockIdx.y * MM_TOK;
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    int nt = n - t0 < MM_TOK ? (int)(n - t0) : MM_TOK;
    const int bb = QT == SHARDLM_DT_Q8_0 ? 34 : 18;
    size_t nb = cols / 32;
    const unsigned char *wr = w + r * nb * bb;
    float acc[MM_TOK] = {0};
    for (size_t b = 0; b < nb; b++) {
        const unsigned char *blk = wr + b * bb;
        float d = __half2float(__ushort_as_half(*(const unsigned short *)blk));
        float v;
        if (QT == SHARDLM_DT_Q8_0) {
            v = (float)(signed char)blk[2 + lane] * d;
        } else {
            int byte = blk[2 + (lane & 15)];
            v = (float)((lane < 16 ? (byte & 15) : (byte >> 4)) - 8) * d;
        }
        const float *xc = x + t0 * cols + b * 32 + lane;
#pragma unroll
        for (int k = 0; k < MM_TOK; k++)
            if (k < nt) acc[k] += v * xc[(size_t)k * cols];
    }
#pragma unroll
    for (int k = 0; k < MM_TOK; k++) {
        float s = acc[k];
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0 && k < nt) y[(t0 + k) * rows + r] = s;
    }
}

static int quant_mm(shardlm_cuda_ctx *c, shardlm_dtype t, const void *w, size_t rows, size_t cols, const float *x,
                    size_t n, float *y)
{
    dim3 grid(shardlm_cuda_blocks(rows, MM_WARPS), shardlm_cuda_blocks(n, MM_TOK));
    if (grid.y > 65535) {
        shardlm_err_set("CUDA kernel matmul: batch of %zu tokens is too large", n);
        return SHARDLM_EINPUT;
    }
    const unsigned char *wb = (const unsigned char *)w;
    if (t == SHARDLM_DT_Q8_0) {
        qmm_k<SHARDLM_DT_Q8_0><<<grid, 32 * MM_WARPS, 0, c->stream>>>(wb, rows, cols, x, n, y);
        return shardlm_cuda_launched("matmul_q8_0");
    }
    qmm_k<SHARDLM_DT_Q4_0><<<grid, 32 * MM_WARPS, 0, c->stream>>>(wb, rows, cols, x, n, y);
    return shardlm_cuda_launched("matmul_q4_0");
}

/* Activations rounded to the weights' 16-bit type, for cublasGemmEx. */
__global__ static void to_f16_k(const float *x, __half *out, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2half(x[i]);
}

__global__ static void to_bf16_k(const float *x, __nv_bfloat16 *out, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __float2bfloat16(x[i]);
}

/* Row-major W (rows x cols) is column-major W^T with ld cols, X likewise,
 * and row-major Y (n x rows) is column-major with ld rows: Y^T = W X^T. */
static int blas_mm(shardlm_cuda_ctx *c, shardlm_dtype t, const void *w, size_t rows, size_t cols, const float *x,
                   size_t n, float *y)
{
    if (rows > 0x7fffffff || cols > 0x7fffffff || n > 0x7fffffff) {
        shardlm_err_set("cuBLAS matmul: %zu x %zu x %zu exceeds int dimensions", rows, cols, n);
        return SHARDLM_EINPUT;
    }
    int m = (int)rows, k = (int)cols, nn = (int)n;
    const float one = 1.0f, zero = 0.0f;
    if (t == SHARDLM_DT_F32)
        return shardlm_cuda_blas_check(shardlm_cuda_blas()->sgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, (const float *)w,
                                                   k, x, k, &zero, y, m),
                                       "sgemm");
    int rc = shardlm_cuda_scratch(c, n * cols * 2);
    if (rc) return rc;
    unsigned grid = shardlm_cuda_blocks(n * cols, 256);
    if (grid > 4096) grid = 4096;
    cudaDataType dt = t == SHARDLM_DT_F16 ? CUDA_R_16F : CUDA_R_16BF;
    if (t == SHARDLM_DT_F16) to_f16_k<<<grid, 256, 0, c->stream>>>(x, (__half *)c->scratch, n * cols);
    else to_bf16_k<<<grid, 256, 0, c->stream>>>(x, (__nv_bfloat16 *)c->scratch, n * cols);
    if ((rc = shardlm_cuda_launched("matmul activation rounding"))) return rc;
    return shardlm_cuda_blas_check(shardlm_cuda_blas()->gemm_ex(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, nn, k, &one, w, dt, k,
                                                c->scratch, dt, k, &zero, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                                                CUBLAS_GEMM_DEFAULT),
                                   t == SHARDLM_DT_F16 ? "gemm f16" : "gemm bf16");
}

int shardlm_cuda_matmul(shardlm_cuda_ctx *c, shardlm_dtype t, const void *d_w, size_t rows, size_t cols,
                        const float *d_x, size_t n, float *d_y)
{
    if (!shardlm_cuda_dtype_ok(t) || shardlm_dtype_row_bytes(t, cols) == 0) {
        shardlm_err_set("CUDA matmul: weight type %s with %zu columns is not supported on the device "
                        "(f32, f16, bf16, q8_0, q4_0 are)", shardlm_dtype_name(t), cols);
        return SHARDLM_EINPUT;
    }
    if (n == 0 || rows == 0) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    if (t == SHARDLM_DT_Q8_0 || t == SHARDLM_DT_Q4_0) return quant_mm(c, t, d_w, rows, cols, d_x, n, d_y);
    return blas_mm(c, t, d_w, rows, cols, d_x, n, d_y);
}
