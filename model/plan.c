/* plan.c - hyperparameters from llama.* metadata and the Megatron-style
 * split of heads, FFN rows and vocabulary over the ranks. */
#include <stdio.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_model.h"

static int hp_get_int(const shardlm_gguf *g, const char *arch, const char *key, int required, int *out)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    uint64_t v = 0;
    int rc = shardlm_gguf_get_u64(g, full, &v);
    if (rc == 1) {
        if (!required) return SHARDLM_OK;
        shardlm_err_set("%s: missing metadata key '%s'", shardlm_gguf_path(g), full);
        return SHARDLM_EINPUT;
    }
    if (rc != SHARDLM_OK) return rc;
    if (v == 0 || v > (1u << 30)) {
        shardlm_err_set("%s: metadata key '%s' has value %llu, outside 1..2^30", shardlm_gguf_path(g), full,
                        (unsigned long long)v);
        return SHARDLM_EINPUT;
    }
    *out = (int)v;
    return SHARDLM_OK;
}

static int hp_get_float(const shardlm_gguf *g, const char *arch, const char *key, float *out)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    double v = 0;
    int rc = shardlm_gguf_get_f64(g, full, &v);
    if (rc == 1) return SHARDLM_OK;
    if (rc != SHARDLM_OK) return rc;
    if (!(v > 0) || v > 1e12) {
        shardlm_err_set("%s: metadata key '%s' has value %g, which must be positive", shardlm_gguf_path(g), full, v);
        return SHARDLM_EINPUT;
    }
    *out = (float)v;
    return SHARDLM_OK;
}

static int hp_check(const shardlm_gguf *g, const shardlm_hparams *hp)
{
    const char *path = shardlm_gguf_path(g);
    if (hp->n_heads % hp->n_kv_heads) {
        shardlm_err_set("%s: head_count %d is not a multiple of head_count_kv %d", path, hp->n_heads,
                        hp->n_kv_heads);
        return SHARDLM_EINPUT;
    }
    if (hp->rope_dim > hp->head_dim || hp->rope_dim % 2) {
        shardlm_err_set("%s: rope.dimension_count %d must be even and at most the head size %d", path,
                        hp->rope_dim, hp->head_dim);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

int shardlm_hparams_read(const shardlm_gguf *g, shardlm_hparams *hp)
{
    const char *path = shardlm_gguf_path(g);
    shardlm_gguf_str arch;
    int rc = shardlm_gguf_get_str(g, "general.architecture", &arch);
    if (rc == 1) {
        shardlm_err_set("%s: missing metadata key 'general.architecture'", path);
        return SHARDLM_EINPUT;
    }
    if (rc != SHARDLM_OK) return rc;
    char a[64];
    snprintf(a, sizeof a, "%.*s", (int)(arch.len < 63 ? arch.len : 63), arch.ptr);
    if (strcmp(a, "llama") != 0) {
        shardlm_err_set("%s: architecture '%s' is not supported (supported: llama)", path, a);
        return SHARDLM_EINPUT;
    }
    memset(hp, 0, sizeof *hp);
    hp->ctx = 2048;
    hp->eps = 1e-5f;
    hp->rope_base = 10000.0f;
    if ((rc = hp_get_int(g, a, "embedding_length", 1, &hp->dim)) ||
        (rc = hp_get_int(g, a, "block_count", 1, &hp->n_layers)) ||
        (rc = hp_get_int(g, a, "feed_forward_length", 1, &hp->ffn)) ||
        (rc = hp_get_int(g, a, "attention.head_count", 1, &hp->n_heads)) ||
        (rc = hp_get_int(g, a, "context_length", 0, &hp->ctx)))
        return rc;
    hp->n_kv_heads = hp->n_heads;
    hp->head_dim = hp->dim / hp->n_heads;
    if ((rc = hp_get_int(g, a, "attention.head_count_kv", 0, &hp->n_kv_heads)) ||
        (rc = hp_get_int(g, a, "attention.key_length", 0, &hp->head_dim)))
        return rc;
    hp->rope_dim = hp->head_dim;
    if ((rc = hp_get_int(g, a, "rope.dimension_count", 0, &hp->rope_dim)) ||
        (rc = hp_get_float(g, a, "attention.layer_norm_rms_epsilon", &hp->eps)) ||
        (rc = hp_get_float(g, a, "rope.freq_base", &hp->rope_base)))
        return rc;
    uint64_t n_vocab = 0;
    shardlm_gguf_vtype et;
    const void *data;
    if (shardlm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_vocab, &data) != SHARDLM_OK) n_vocab = 0;
    hp->vocab = (int)n_vocab; /* 0: taken from token_embd's shape by the loader */
    return hp_check(g, hp);
}

int shardlm_plan_make(const shardlm_hparams *hp, int world, int rank, int ffn_unit, shardlm_shard_plan *p)
{
    memset(p, 0, sizeof *p);
    p->rank = rank;
    p->world = world;
    if (hp->n_heads % world) {
        shardlm_err_set("the model's %d attention heads do not split evenly over %d ranks; use a world size "
                        "that divides %d", hp->n_heads, world, hp->n_heads);
        return SHARDLM_EINPUT;
    }
    int group = hp->n_heads / hp->n_kv_heads;
    p->n_q_heads = hp->n_heads / world;
    p->q_head0 = rank * p->n_q_heads;
    if (hp->n_kv_heads >= world) {
        if (hp->n_kv_heads % world) {
            shardlm_err_set("the model's %d KV heads do not split evenly over %d ranks", hp->n_kv_heads, world);
            return SHARDLM_EINPUT;
        }
        p->n_kv_heads = hp->n_kv_heads / world;
        p->kv_head0 = rank * p->n_kv_heads;
    } else {
        /* Fewer KV heads than ranks: each KV head is replicated on the
         * world / n_kv ranks whose query heads use it. */
        p->n_kv_heads = 1;
        p->kv_head0 = p->q_head0 / group;
    }
    if (ffn_unit < 1 || hp->ffn % ffn_unit) {
        shardlm_err_set("feed_forward_length %d is not a multiple of its weight block size %d", hp->ffn, ffn_unit);
        return SHARDLM_EINPUT;
    }
    int units = hp->ffn / ffn_unit;
    int u0 = (int)((long)units * rank / world), u1 = (int)((long)units * (rank + 1) / world);
    p->ffn0 = u0 * ffn_unit;
    p->n_ffn = (u1 - u0) * ffn_unit;
    p->vocab0 = (int)((long)hp->vocab * rank / world);
    p->n_vocab = (int)((long)hp->vocab * (rank + 1) / world) - p->vocab0;
    return SHARDLM_OK;
}
