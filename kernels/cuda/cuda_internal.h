/* cuda_internal.h - what the .cu files of the CUDA backend share: the
 * context's layout and the error helpers that turn a CUDA or cuBLAS status
 * into a shardlm status and an error text naming the operation. */
#ifndef SHARDLM_CUDA_INTERNAL_H
#define SHARDLM_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "shardlm_common.h"
}
#include "shardlm_cuda.h"

struct shardlm_cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *scratch; /* activations rounded to f16/bf16 for cublasGemmEx */
    size_t scratch_bytes;
};

/* The cuBLAS entry points shardlm uses, from blas.cu's dlopen. */
typedef struct {
    decltype(&cublasCreate_v2) create;
    decltype(&cublasSetStream_v2) set_stream;
    decltype(&cublasDestroy_v2) destroy;
    decltype(&cublasSgemm_v2) sgemm;
    /* spelled out: C++ sees an overload of cublasGemmEx */
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                              const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                              cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
    decltype(&cublasGetStatusString) status_string;
} shardlm_cuda_blas_fns;
/* Opens cuBLAS once; NULL (with the error text set) when it cannot. */
const shardlm_cuda_blas_fns *shardlm_cuda_blas(void);

/* SHARDLM_OK, or SHARDLM_ERUNTIME with "CUDA <what>: <error string>". */
int shardlm_cuda_check(cudaError_t e, const char *what);
/* The launch status of the kernel just enqueued, named for the message. */
int shardlm_cuda_launched(const char *kernel);
int shardlm_cuda_blas_check(cublasStatus_t s, const char *what);
/* Makes the device current for this thread (a rank may call from several). */
int shardlm_cuda_enter(const shardlm_cuda_ctx *c);
/* Grows c->scratch to at least bytes. */
int shardlm_cuda_scratch(shardlm_cuda_ctx *c, size_t bytes);

/* Grid size for n items of `per_block` each, at least 1. */
static inline unsigned shardlm_cuda_blocks(size_t n, unsigned per_block)
{
    size_t b = (n + per_block - 1) / per_block;
    return b ? (unsigned)b : 1u;
}

/* Slot of token tok's position in the paged cache (see shardlm_cuda_kv). */
__device__ static inline size_t shardlm_cuda_kv_slot(const shardlm_cuda_kv &kv, int layer, int tok)
{
    int pos = kv.d_pos[tok];
    const int32_t *table = kv.d_tables + (size_t)kv.d_seq[tok] * kv.table_stride;
    return ((size_t)layer * kv.n_blocks + (size_t)table[pos / kv.block_size]) * kv.block_size +
           (size_t)(pos % kv.block_size);
}

#endif
