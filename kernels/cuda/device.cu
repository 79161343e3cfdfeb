/* device.cu - device discovery (count, properties, --device parsing), the
 * per-rank context (stream + cuBLAS handle), device memory and the error
 * helpers every kernel file uses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

int shardlm_cuda_check(cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return SHARDLM_OK;
    shardlm_err_set("CUDA %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
    return SHARDLM_ERUNTIME;
}

int shardlm_cuda_launched(const char *kernel)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) return SHARDLM_OK;
    shardlm_err_set("CUDA kernel %s: launch failed: %s", kernel, cudaGetErrorString(e));
    return SHARDLM_ERUNTIME;
}

int shardlm_cuda_blas_check(cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS) return SHARDLM_OK;
    const shardlm_cuda_blas_fns *b = shardlm_cuda_blas();
    shardlm_err_set("cuBLAS %s: %s", what, b ? b->status_string(s) : "(cuBLAS not loaded)");
    return SHARDLM_ERUNTIME;
}

int shardlm_cuda_built(void) { return 1; }

int shardlm_cuda_device_count(int *count)
{
    *count = 0;
    cudaError_t e = cudaGetDeviceCount(count);
    if (e != cudaSuccess) {
        *count = 0;
        shardlm_err_set("cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return SHARDLM_ERUNTIME;
    }
    if (*count == 0) {
        shardlm_err_set("cudaGetDeviceCount: no CUDA device is visible");
        return SHARDLM_ERUNTIME;
    }
    return SHARDLM_OK;
}

int shardlm_cuda_get_device_info(int device, shardlm_cuda_device_info *info)
{
    memset(info, 0, sizeof *info);
    cudaDeviceProp p;
    int rc = shardlm_cuda_check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
    if (rc) return rc;
    snprintf(info->name, sizeof info->name, "%s", p.name);
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->multiprocessors = p.multiProcessorCount;
    info->total_mem = p.totalGlobalMem;
    cudaDriverGetVersion(&info->driver_version);
    cudaRuntimeGetVersion(&info->runtime_version);
    int cur = 0;
    cudaGetDevice(&cur);
    /* free memory is per device: ask with it current, then restore */
    if (cudaSetDevice(device) == cudaSuccess) cudaMemGetInfo(&info->free_mem, &info->total_mem);
    cudaSetDevice(cur);
    return SHARDLM_OK;
}

/* "cuda" -> -1 (any), "cuda:K" -> K; -2 when malformed. */
static int parse_spec(const char *spec)
{
    if (!spec || strncmp(spec, "cuda", 4) != 0) return -2;
    if (spec[4] == '\0') return -1;
    if (spec[4] != ':' || spec[5] < '0' || spec[5] > '9') return -2;
    char *end;
    long k = strtol(spec + 5, &end, 10);
    return *end || k > 1 << 20 ? -2 : (int)k;
}

int shardlm_cuda_pick_device(int local_rank, const char *spec)
{
    int k = parse_spec(spec);
    if (k == -2) {
        shardlm_err_set("--device %s: expected cpu, cuda or cuda:K", spec ? spec : "(null)");
        return SHARDLM_EINPUT;
    }
    int count = 0;
    if (shardlm_cuda_device_count(&count)) {
        char why[256]; /* the error text is about to be rewritten */
        snprintf(why, sizeof why, "%s", shardlm_err_get());
        shardlm_err_set("--device %s: no CUDA device (%s)", spec, why);
        return SHARDLM_EINPUT;
    }
    if (k >= count) {
        shardlm_err_set("--device %s: device %d is out of range, this node has %d CUDA device%s (0..%d)", spec, k,
                        count, count == 1 ? "" : "s", count - 1);
        return SHARDLM_EINPUT;
    }
    if (local_rank < 0) local_rank = 0;
    return k >= 0 ? k : local_rank % count;
}

int shardlm_cuda_enter(const shardlm_cuda_ctx *c)
{
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur == c->device) return SHARDLM_OK;
    return shardlm_cuda_check(cudaSetDevice(c->device), "cudaSetDevice");
}

int shardlm_cuda_ctx_new(int device, shardlm_cuda_ctx **out)
{
    *out = NULL;
    shardlm_cuda_ctx *c = (shardlm_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) return SHARDLM_ENOMEM;
    c->device = device;
    int rc = shardlm_cuda_check(cudaSetDevice(device), "cudaSetDevice");
    if (!rc) rc = shardlm_cuda_check(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    const shardlm_cuda_blas_fns *b = rc ? NULL : shardlm_cuda_blas();
    if (!rc && !b) rc = SHARDLM_ERUNTIME;
    if (!rc) rc = shardlm_cuda_blas_check(b->create(&c->blas), "cublasCreate");
    if (!rc) rc = shardlm_cuda_blas_check(b->set_stream(c->blas, c->stream), "cublasSetStream");
    if (rc) {
        shardlm_cuda_ctx_free(c);
        return rc;
    }
    *out = c;
    return SHARDLM_OK;
}

void shardlm_cuda_ctx_free(shardlm_cuda_ctx *c)
{
    if (!c) return;
    cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->blas) shardlm_cuda_blas()->destroy(c->blas); /* a handle exists only if cuBLAS loaded */
    cudaFree(c->scratch);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

int shardlm_cuda_ctx_device(const shardlm_cuda_ctx *c) { return c->device; }

int shardlm_cuda_sync(shardlm_cuda_ctx *c, const char *what)
{
    int rc = shardlm_cuda_enter(c);
    return rc ? rc : shardlm_cuda_check(cudaStreamSynchronize(c->stream), what);
}

int shardlm_cuda_scratch(shardlm_cuda_ctx *c, size_t bytes)
{
    if (bytes <= c->scratch_bytes) return SHARDLM_OK;
    /* the old scratch may still be read by queued work */
    int rc = shardlm_cuda_sync(c, "scratch resize");
    if (rc) return rc;
    cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    if ((rc = shardlm_cuda_alloc(c, &c->scratch, bytes, "GEMM activation scratch"))) return rc;
    c->scratch_bytes = bytes;
    return SHARDLM_OK;
}

int shardlm_cuda_alloc(shardlm_cuda_ctx *c, void **d_out, size_t bytes, const char *what)
{
    *d_out = NULL;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    cudaError_t e = cudaMalloc(d_out, bytes ? bytes : 1);
    if (e == cudaSuccess) return SHARDLM_OK;
    *d_out = NULL;
    cudaGetLastError(); /* clear it: an out-of-memory is not sticky */
    shardlm_err_set("CUDA device %d: cannot allocate %zu bytes for %s: %s", c->device, bytes, what,
                    cudaGetErrorString(e));
    return e == cudaErrorMemoryAllocation ? SHARDLM_ENOMEM : SHARDLM_ERUNTIME;
}

void shardlm_cuda_release(shardlm_cuda_ctx *c, void *d_ptr)
{
    if (!d_ptr) return;
    if (c) shardlm_cuda_enter(c);
    cudaFree(d_ptr);
}

int shardlm_cuda_upload(shardlm_cuda_ctx *c, void *d_dst, const void *src, size_t bytes)
{
    if (!bytes) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    return rc ? rc : shardlm_cuda_check(cudaMemcpyAsync(d_dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
}

int shardlm_cuda_download(shardlm_cuda_ctx *c, void *dst, const void *d_src, size_t bytes)
{
    int rc = shardlm_cuda_enter(c);
    if (!rc && bytes)
        rc = shardlm_cuda_check(cudaMemcpyAsync(dst, d_src, bytes, cudaMemcpyDeviceToHost, c->stream), "download");
    return rc ? rc : shardlm_cuda_sync(c, "download");
}

int shardlm_cuda_copy(shardlm_cuda_ctx *c, void *d_dst, const void *d_src, size_t bytes)
{
    if (!bytes) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    return rc ? rc
              : shardlm_cuda_check(cudaMemcpyAsync(d_dst, d_src, bytes, cudaMemcpyDeviceToDevice, c->stream),
                                   "device copy");
}

int shardlm_cuda_zero(shardlm_cuda_ctx *c, void *d_dst, size_t bytes)
{
    if (!bytes) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    return rc ? rc : shardlm_cuda_check(cudaMemsetAsync(d_dst, 0, bytes, c->stream), "memset");
}
