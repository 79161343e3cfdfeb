/* state.c - the inference state of one rank: the sizes every backend
 * shares, rank 0's host buffer for the gathered logits, and the CPU-only
 * settings (thread pool, q8 all-reduce). The KV cache and the activations
 * belong to the backend the model runs on (backend_cpu.c, backend_cuda.c). */
#include <stdlib.h>

#include "model_internal.h"
#include "shardlm_common.h"

void shardlm_state_set_pool(shardlm_state *s, shardlm_pool *pool) { s->pool = pool; }

int shardlm_state_set_comm_q8(shardlm_state *s, int world, int on)
{
    free(s->q8_scratch);
    s->q8_scratch = NULL;
    if (!on) return SHARDLM_OK;
    if (s->be != &shardlm_backend_cpu) {
        shardlm_err_set("--comm-dtype q8: the CUDA device path all-reduces f32");
        return SHARDLM_EINPUT;
    }
    size_t n = (size_t)s->max_batch * (size_t)s->m->hp.dim;
    s->q8_scratch = malloc(shardlm_comm_allreduce_q8_scratch(world, n));
    return s->q8_scratch ? SHARDLM_OK : SHARDLM_ENOMEM;
}

int shardlm_state_new(const shardlm_model *m, int n_ctx, int n_blocks, int block_size, int max_batch,
                      shardlm_state **out)
{
    return shardlm_state_new_kv(m, n_ctx, n_blocks, block_size, max_batch, SHARDLM_DT_F32, out);
}

size_t shardlm_kv_bytes_per_token(const shardlm_hparams *hp, const shardlm_shard_plan *p, shardlm_dtype kv_type)
{
    return (size_t)hp->n_layers * (size_t)p->n_kv_heads * 2 * shardlm_kv_row_bytes(kv_type, hp->head_dim);
}

static int check_sizes(const shardlm_model *m, int n_ctx, int n_blocks, int block_size, int max_batch,
                       shardlm_dtype kv_type)
{
    if (n_ctx < 1 || max_batch < 1 || block_size < 1 || n_blocks < 0) {
        shardlm_err_set("context %d, batch %d and block size %d must be positive", n_ctx, max_batch, block_size);
        return SHARDLM_EINPUT;
    }
    if (kv_type != SHARDLM_DT_F32 && kv_type != SHARDLM_DT_F16 && kv_type != SHARDLM_DT_Q8_0) {
        shardlm_err_set("--kv-cache-type %s: expected f32, f16 or q8_0", shardlm_dtype_name(kv_type));
        return SHARDLM_EINPUT;
    }
    if (m->be != &shardlm_backend_cpu && kv_type != SHARDLM_DT_F32) {
        shardlm_err_set("--kv-cache-type %s: the CUDA device keeps an f32 KV cache", shardlm_dtype_name(kv_type));
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

int shardlm_state_new_kv(const shardlm_model *m, int n_ctx, int n_blocks, int block_size, int max_batch,
                         shardlm_dtype kv_type, shardlm_state **out)
{
    int rc = check_sizes(m, n_ctx, n_blocks, block_size, max_batch, kv_type);
    if (rc) return rc;
    if (n_blocks == 0) n_blocks = (n_ctx + block_size - 1) / block_size;
    shardlm_state *s = calloc(1, sizeof *s);
    if (!s) return SHARDLM_ENOMEM;
    *s = (shardlm_state){.m = m, .be = m->be, .n_ctx = n_ctx, .max_batch = max_batch, .n_blocks = n_blocks,
                         .block_size = block_size, .kv_type = kv_type};
    const shardlm_shard_plan *p = &m->plan;
    /* Only rank 0 receives the gather: other ranks keep no vocab-wide rows. */
    if (p->rank == 0 && !(s->lg_all = malloc((size_t)max_batch * (size_t)m->hp.vocab * sizeof(float))))
        rc = SHARDLM_ENOMEM;
    if (!rc && !(s->gather_bytes = calloc((size_t)p->world, sizeof(size_t)))) rc = SHARDLM_ENOMEM;
    if (rc) shardlm_err_set("out of memory allocating the logits buffers for a batch of %d", max_batch);
    if (!rc) rc = s->be->state_new(s);
    if (rc) {
        shardlm_state_free(s);
        return rc;
    }
    *out = s;
    return SHARDLM_OK;
}

void shardlm_state_free(shardlm_state *s)
{
    if (!s) return;
    s->be->state_free(s);
    free(s->lg_all);
    free(s->gather_bytes);
    free(s->q8_scratch);
    free(s);
}

int shardlm_state_n_ctx(const shardlm_state *s) { return s->n_ctx; }
int shardlm_state_n_blocks(const shardlm_state *s) { return s->n_blocks; }
double shardlm_state_allreduce_seconds(const shardlm_state *s) { return (double)s->allreduce_ns * 1e-9; }
