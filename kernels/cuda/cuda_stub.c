/* cuda_stub.c - the CUDA API of a build without CUDA: every entry point
 * exists and fails saying so, so `--device cuda` gets a message instead of
 * a link error and callers need no #ifdef. */
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_cuda.h"

static int no_cuda(void)
{
    shardlm_err_set("--device cuda: this shardlm was built without CUDA (install the CUDA toolkit and rebuild "
                    "with -DSHARDLM_CUDA=ON)");
    return SHARDLM_EINPUT;
}

int shardlm_cuda_built(void) { return 0; }

int shardlm_cuda_device_count(int *count)
{
    *count = 0;
    return no_cuda();
}

int shardlm_cuda_get_device_info(int device, shardlm_cuda_device_info *info)
{
    (void)device;
    memset(info, 0, sizeof *info);
    return no_cuda();
}

int shardlm_cuda_pick_device(int local_rank, const char *spec)
{
    (void)local_rank, (void)spec;
    return no_cuda();
}

int shardlm_cuda_ctx_new(int device, shardlm_cuda_ctx **out)
{
    (void)device;
    *out = NULL;
    return no_cuda();
}

void shardlm_cuda_ctx_free(shardlm_cuda_ctx *c) { (void)c; }
int shardlm_cuda_ctx_device(const shardlm_cuda_ctx *c) { (void)c; return -1; }
int shardlm_cuda_sync(shardlm_cuda_ctx *c, const char *what) { (void)c, (void)what; return no_cuda(); }

int shardlm_cuda_alloc(shardlm_cuda_ctx *c, void **d_out, size_t bytes, const char *what)
{
    (void)c, (void)bytes, (void)what;
    *d_out = NULL;
    return no_cuda();
}

void shardlm_cuda_release(shardlm_cuda_ctx *c, void *d_ptr) { (void)c, (void)d_ptr; }

int shardlm_cuda_upload(shardlm_cuda_ctx *c, void *d_dst, const void *src, size_t bytes)
{
    (void)c, (void)d_dst, (void)src, (void)bytes;
    return no_cuda();
}

int shardlm_cuda_download(shardlm_cuda_ctx *c, void *dst, const void *d_src, size_t bytes)
{
    (void)c, (void)dst, (void)d_src, (void)bytes;
    return no_cuda();
}

int shardlm_cuda_copy(shardlm_cuda_ctx *c, void *d_dst, const void *d_src, size_t bytes)
{
    (void)c, (void)d_dst, (void)d_src, (void)bytes;
    return no_cuda();
}

int shardlm_cuda_zero(shardlm_cuda_ctx *c, void *d_dst, size_t bytes)
{
    (void)c, (void)d_dst, (void)bytes;
    return no_cuda();
}

/* The same answer as the CUDA build, so a model's types are judged alike. */
int shardlm_cuda_dtype_ok(shardlm_dtype t)
{
    return t == SHARDLM_DT_F32 || t == SHARDLM_DT_F16 || t == SHARDLM_DT_BF16 || t == SHARDLM_DT_Q8_0 ||
           t == SHARDLM_DT_Q4_0;
}

int shardlm_cuda_embed(shardlm_cuda_ctx *c, shardlm_dtype t, const void *d_table, size_t dim, const int32_t *d_tokens,
                       int n, float *d_out)
{
    (void)c, (void)t, (void)d_table, (void)dim, (void)d_tokens, (void)n, (void)d_out;
    return no_cuda();
}

int shardlm_cuda_rmsnorm(shardlm_cuda_ctx *c, float *d_out, const float *d_x, const float *d_w, int rows, size_t dim,
                         float eps)
{
    (void)c, (void)d_out, (void)d_x, (void)d_w, (void)rows, (void)dim, (void)eps;
    return no_cuda();
}

int shardlm_cuda_rope(shardlm_cuda_ctx *c, float *d_v, int n, int n_heads, int head_dim, int rope_dim,
                      const int32_t *d_pos, float base)
{
    (void)c, (void)d_v, (void)n, (void)n_heads, (void)head_dim, (void)rope_dim, (void)d_pos, (void)base;
    return no_cuda();
}

int shardlm_cuda_rope_freqs(shardlm_cuda_ctx *c, float *d_v, int n, int n_heads, int head_dim, int rope_dim,
                            const int32_t *d_pos, const float *d_freq, int neox)
{
    (void)c, (void)d_v, (void)n, (void)n_heads, (void)head_dim, (void)rope_dim, (void)d_pos, (void)d_freq, (void)neox;
    return no_cuda();
}

int shardlm_cuda_add_bias(shardlm_cuda_ctx *c, float *d_y, const float *d_b, int rows, size_t width)
{
    (void)c, (void)d_y, (void)d_b, (void)rows, (void)width;
    return no_cuda();
}

int shardlm_cuda_silu_mul(shardlm_cuda_ctx *c, float *d_a, const float *d_b, size_t n)
{
    (void)c, (void)d_a, (void)d_b, (void)n;
    return no_cuda();
}

int shardlm_cuda_add(shardlm_cuda_ctx *c, float *d_x, const float *d_y, size_t n)
{
    (void)c, (void)d_x, (void)d_y, (void)n;
    return no_cuda();
}

int shardlm_cuda_matmul(shardlm_cuda_ctx *c, shardlm_dtype t, const void *d_w, size_t rows, size_t cols,
                        const float *d_x, size_t n, float *d_y)
{
    (void)c, (void)t, (void)d_w, (void)rows, (void)cols, (void)d_x, (void)n, (void)d_y;
    return no_cuda();
}

int shardlm_cuda_softmax(shardlm_cuda_ctx *c, float *d_x, int rows, int n)
{
    (void)c, (void)d_x, (void)rows, (void)n;
    return no_cuda();
}

int shardlm_cuda_argmax(shardlm_cuda_ctx *c, const float *d_x, int rows, int n, int32_t *d_out)
{
    (void)c, (void)d_x, (void)rows, (void)n, (void)d_out;
    return no_cuda();
}

int shardlm_cuda_kv_store(shardlm_cuda_ctx *c, const shardlm_cuda_kv *kv, int layer, const float *d_k,
                          const float *d_v, int n)
{
    (void)c, (void)kv, (void)layer, (void)d_k, (void)d_v, (void)n;
    return no_cuda();
}

int shardlm_cuda_attention(shardlm_cuda_ctx *c, const shardlm_cuda_kv *kv, const shardlm_cuda_heads *h, int layer,
                           const float *d_q, float *d_out, int n)
{
    (void)c, (void)kv, (void)h, (void)layer, (void)d_q, (void)d_out, (void)n;
    return no_cuda();
}
