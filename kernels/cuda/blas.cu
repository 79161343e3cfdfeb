/* blas.cu - cuBLAS, opened with dlopen on first use. Linking libcublas
 * makes every process map and relocate it at start-up: about 210 MiB
 * resident per rank, even for ranks that never touch a GPU. Only a rank
 * that creates a CUDA context pays for it here. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "cuda_internal.h"

static shardlm_cuda_blas_fns g_blas;
static int g_blas_rc = -1;
static char g_blas_err[512];
static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;

template <typename F> static bool blas_sym(void *lib, const char *name, F *out)
{
    *out = reinterpret_cast<F>(dlsym(lib, name));
    if (*out) return true;
    snprintf(g_blas_err, sizeof g_blas_err, "cuBLAS: %s is missing from the library", name);
    return false;
}

static void blas_load(void)
{
    /* the soname of the toolkit we built with first, then any */
    const char *names[] = {"libcublas.so." SHARDLM_CUBLAS_MAJOR, "libcublas.so"};
    void *lib = NULL;
    for (const char *n : names)
        if ((lib = dlopen(n, RTLD_NOW | RTLD_LOCAL))) break;
    if (!lib) {
        snprintf(g_blas_err, sizeof g_blas_err, "cuBLAS: cannot open libcublas.so." SHARDLM_CUBLAS_MAJOR ": %s",
                 dlerror());
        g_blas_rc = SHARDLM_ERUNTIME;
        return;
    }
    bool ok = blas_sym(lib, "cublasCreate_v2", &g_blas.create) &&
              blas_sym(lib, "cublasSetStream_v2", &g_blas.set_stream) &&
              blas_sym(lib, "cublasDestroy_v2", &g_blas.destroy) && blas_sym(lib, "cublasSgemm_v2", &g_blas.sgemm) &&
              blas_sym(lib, "cublasGemmEx", &g_blas.gemm_ex) &&
              blas_sym(lib, "cublasGetStatusString", &g_blas.status_string);
    g_blas_rc = ok ? SHARDLM_OK : SHARDLM_ERUNTIME;
}

const shardlm_cuda_blas_fns *shardlm_cuda_blas(void)
{
    pthread_once(&g_blas_once, blas_load);
    if (g_blas_rc == SHARDLM_OK) return &g_blas;
    shardlm_err_set("%s", g_blas_err);
    return NULL;
}
