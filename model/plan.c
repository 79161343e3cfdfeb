/* plan.c - the architectures shardlm runs, hyperparameters from their
 * ARCH.* metadata, and the Megatron-style split of heads, FFN rows and
 * vocabulary over the ranks. */
#include <stdio.h>
#include <string.h>

#include "model_internal.h"
#include "shardlm_common.h"

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

/* ---- architectures (llama.cpp: src/models/{llama,qwen2,qwen3}.cpp) ---- */

static const shardlm_arch_desc archs[SHARDLM_N_ARCHS] = {
    [SHARDLM_ARCH_LLAMA] = {"llama", 0, 0, 1,
                            SHARDLM_OPT_QKV_BIAS | SHARDLM_OPT_O_BIAS | SHARDLM_OPT_FFN_BIAS | SHARDLM_OPT_ROPE_FREQS},
    [SHARDLM_ARCH_QWEN2] = {"qwen2", 1, 0, 0, SHARDLM_OPT_QKV_BIAS | SHARDLM_OPT_OUT_BIAS},
    [SHARDLM_ARCH_QWEN3] = {"qwen3", 1, 1, 1, SHARDLM_OPT_QKV_BIAS},
};

const shardlm_arch_desc *shardlm_arch_desc_of(shardlm_arch a) { return &archs[a]; }
const char *shardlm_arch_name(shardlm_arch a) { return (unsigned)a < SHARDLM_N_ARCHS ? archs[a].name : "?"; }
const char *shardlm_arch_list(void) { return "llama, qwen2, qwen3"; }

int shardlm_arch_parse(const char *name)
{
    for (int i = 0; i < SHARDLM_N_ARCHS; i++)
        if (!strcmp(name, archs[i].name)) return i;
    return -1;
}

static int hp_check(const shardlm_gguf *g, const char *a, const shardlm_hparams *hp)
{
    const char *path = shardlm_gguf_path(g);
    if (hp->n_heads % hp->n_kv_heads) {
        shardlm_err_set("%s: head_count %d is not a multiple of head_count_kv %d", path, hp->n_heads,
                        hp->n_kv_heads);
        return SHARDLM_EINPUT;
    }
    if (hp->rope_dim > hp->head_dim || hp->rope_dim % 2) {
        shardlm_err_set("%s: %s.rope.dimension_count %d must be even and at most the head size %d", path, a,
                        hp->rope_dim, hp->head_dim);
        return SHARDLM_EINPUT;
    }
    if (!archs[hp->arch].own_head_dim && hp->head_dim * hp->n_heads != hp->dim) {
        shardlm_err_set("%s: %s.attention.key_length %d must be embedding_length %d / head_count %d for %s "
                        "(llama.cpp's %s has no head size of its own)", path, a, hp->head_dim, hp->dim, hp->n_heads,
                        a, a);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

/* The head size: attention.key_length, else dim / heads (which must then
 * divide); value_length must equal it. */
static int hp_head_dim(const shardlm_gguf *g, const char *a, shardlm_hparams *hp)
{
    const char *path = shardlm_gguf_path(g);
    char key[160];
    snprintf(key, sizeof key, "%s.attention.key_length", a);
    if (shardlm_gguf_find_kv(g, key) < 0 && hp->dim % hp->n_heads) {
        shardlm_err_set("%s: embedding_length %d is not a multiple of head_count %d and there is no %s", path,
                        hp->dim, hp->n_heads, key);
        return SHARDLM_EINPUT;
    }
    hp->head_dim = hp->dim / hp->n_heads;
    int rc = hp_get_int(g, a, "attention.key_length", 0, &hp->head_dim);
    int v = hp->head_dim;
    if (!rc) rc = hp_get_int(g, a, "attention.value_length", 0, &v);
    if (!rc && v != hp->head_dim) {
        shardlm_err_set("%s: %s.attention.value_length %d differs from key_length %d, which shardlm (like "
                        "llama.cpp's %s) does not support", path, a, v, hp->head_dim, a);
        rc = SHARDLM_EINPUT;
    }
    return rc;
}

/* rope.scaling.*: "none" and "linear" (the default type when a factor is
 * given, as in llama.cpp). Llama 3's scaling is a tensor, rope_freqs.weight. */
static int hp_rope_scaling(const shardlm_gguf *g, const char *a, shardlm_hparams *hp)
{
    const char *path = shardlm_gguf_path(g);
    char key[160], type[32] = "linear";
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    shardlm_gguf_str t;
    int rc = shardlm_gguf_get_str(g, key, &t);
    if (rc != SHARDLM_OK && rc != 1) return rc;
    if (rc == SHARDLM_OK) snprintf(type, sizeof type, "%.*s", (int)(t.len < 31 ? t.len : 31), t.ptr);
    if (strcmp(type, "none") && strcmp(type, "linear")) {
        shardlm_err_set("%s: %s '%s' is not supported (supported: none, linear; Llama 3 scaling comes as the "
                        "tensor rope_freqs.weight)", path, key, type);
        return SHARDLM_EINPUT;
    }
    /* A factor of 0 means none, as in llama.cpp; the old key is rope.scale_linear. */
    double factor = 0.0;
    float attn = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.factor", a);
    if ((rc = shardlm_gguf_get_f64(g, key, &factor)) == 1) {
        snprintf(key, sizeof key, "%s.rope.scale_linear", a);
        rc = shardlm_gguf_get_f64(g, key, &factor);
    }
    if (rc != SHARDLM_OK && rc != 1) return rc;
    if (!(factor == 0.0 || (factor > 0.0 && factor <= 1e6))) {
        shardlm_err_set("%s: metadata key '%s' has value %g; a scaling factor is positive (or 0: none)", path, key,
                        factor);
        return SHARDLM_EINPUT;
    }
    if ((rc = hp_get_float(g, a, "rope.scaling.attn_factor", &attn))) return rc;
    if (attn != 1.0f) {
        shardlm_err_set("%s: %s.rope.scaling.attn_factor %g is not supported (only 1)", path, a, attn);
        return SHARDLM_EINPUT;
    }
    hp->rope_freq_scale = !strcmp(type, "none") || factor == 0.0 ? 1.0f : 1.0f / (float)factor; /* as llama.cpp */
    return SHARDLM_OK;
}

static int hp_arch(const shardlm_gguf *g, char *a, size_t cap, shardlm_arch *arch)
{
    const char *path = shardlm_gguf_path(g);
    shardlm_gguf_str s;
    int rc = shardlm_gguf_get_str(g, "general.architecture", &s);
    if (rc == 1) {
        shardlm_err_set("%s: missing metadata key 'general.architecture'", path);
        return SHARDLM_EINPUT;
    }
    if (rc != SHARDLM_OK) return rc;
    snprintf(a, cap, "%.*s", (int)(s.len < cap - 1 ? s.len : cap - 1), s.ptr);
    int k = shardlm_arch_parse(a);
    if (k < 0) {
        shardlm_err_set("%s: architecture '%s' is not supported (supported: %s)", path, a, shardlm_arch_list());
        return SHARDLM_EINPUT;
    }
    *arch = (shardlm_arch)k;
    char key[160];
    uint64_t experts = 0;
    snprintf(key, sizeof key, "%s.expert_count", a);
    if ((rc = shardlm_gguf_get_u64(g, key, &experts)) != SHARDLM_OK && rc != 1) return rc;
    if (experts > 0) {
        shardlm_err_set("%s: %s = %llu: mixture-of-experts models are not supported", path, key,
                        (unsigned long long)experts);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

/* ---- which tensors a file of an architecture may hold ----
 * llama.cpp refuses a file with tensors its loader does not take; so does
 * shardlm, rather than compute something else while ignoring them. */

typedef struct {
    const char *suffix;
    unsigned need; /* SHARDLM_OPT_* bit that allows it; 0: always */
} tensor_rule;

static const tensor_rule layer_rules[] = {
    {"attn_norm.weight", 0},      {"attn_q.weight", 0},         {"attn_k.weight", 0},
    {"attn_v.weight", 0},         {"attn_output.weight", 0},    {"ffn_norm.weight", 0},
    {"ffn_gate.weight", 0},       {"ffn_up.weight", 0},         {"ffn_down.weight", 0},
    {"attn_q.bias", SHARDLM_OPT_QKV_BIAS}, {"attn_k.bias", SHARDLM_OPT_QKV_BIAS}, {"attn_v.bias", SHARDLM_OPT_QKV_BIAS},
    {"attn_output.bias", SHARDLM_OPT_O_BIAS}, {"ffn_gate.bias", SHARDLM_OPT_FFN_BIAS},
    {"ffn_up.bias", SHARDLM_OPT_FFN_BIAS}, {"ffn_down.bias", SHARDLM_OPT_FFN_BIAS},
};

static int name_known(const shardlm_arch_desc *a, int n_layers, const char *name)
{
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "output_norm.weight") || !strcmp(name, "output.weight"))
        return 1;
    if (!strcmp(name, "output.bias")) return (a->optional & SHARDLM_OPT_OUT_BIAS) != 0;
    if (!strcmp(name, "rope_freqs.weight")) return (a->optional & SHARDLM_OPT_ROPE_FREQS) != 0;
    int l = -1, off = 0;
    char prefix[32];
    if (sscanf(name, "blk.%d.%n", &l, &off) != 1 || off == 0 || l < 0 || l >= n_layers) return 0;
    snprintf(prefix, sizeof prefix, "blk.%d.", l);
    if (strncmp(name, prefix, strlen(prefix))) return 0; /* "blk.01." and the like */
    const char *suf = name + off;
    if (a->qk_norm && (!strcmp(suf, "attn_q_norm.weight") || !strcmp(suf, "attn_k_norm.weight"))) return 1;
    for (size_t i = 0; i < sizeof layer_rules / sizeof layer_rules[0]; i++)
        if (!strcmp(suf, layer_rules[i].suffix)) return !layer_rules[i].need || (a->optional & layer_rules[i].need);
    return 0;
}

static int check_names(const shardlm_gguf *g, const shardlm_hparams *hp)
{
    const shardlm_arch_desc *a = &archs[hp->arch];
    for (uint64_t i = 0; i < shardlm_gguf_n_tensors(g); i++) {
        const char *name = shardlm_gguf_tensor_at(g, i)->name;
        if (name_known(a, hp->n_layers, name)) continue;
        shardlm_err_set("%s: tensor '%s' is not part of a %s model with %d layers as llama.cpp loads one; shardlm "
                        "refuses it rather than ignore it", shardlm_gguf_path(g), name, a->name, hp->n_layers);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

int shardlm_hparams_read(const shardlm_gguf *g, shardlm_hparams *hp)
{
    char a[64];
    memset(hp, 0, sizeof *hp);
    int rc = hp_arch(g, a, sizeof a, &hp->arch);
    if (rc) return rc;
    hp->rope_neox = archs[hp->arch].rope_neox;
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
    if ((rc = hp_get_int(g, a, "attention.head_count_kv", 0, &hp->n_kv_heads)) || (rc = hp_head_dim(g, a, hp)))
        return rc;
    hp->rope_dim = hp->head_dim;
    if ((rc = hp_get_int(g, a, "rope.dimension_count", 0, &hp->rope_dim)) ||
        (rc = hp_get_float(g, a, "attention.layer_norm_rms_epsilon", &hp->eps)) ||
        (rc = hp_get_float(g, a, "rope.freq_base", &hp->rope_base)) || (rc = hp_rope_scaling(g, a, hp)))
        return rc;
    uint64_t n_vocab = 0;
    shardlm_gguf_vtype et;
    const void *data;
    if (shardlm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n_vocab, &data) != SHARDLM_OK) n_vocab = 0;
    hp->vocab = (int)n_vocab; /* 0: taken from token_embd's shape by the loader */
    rc = hp_check(g, a, hp);
    return rc ? rc : check_names(g, hp);
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
         * world / n_kv ranks whose query heads use it, which needs every
         * rank's query heads to fall in one group. */
        if (world % hp->n_kv_heads) {
            shardlm_err_set("the model's %d KV heads cannot be shared by %d ranks: a rank's %d query heads would "
                            "span two KV heads; use a world size that %d divides or that divides %d", hp->n_kv_heads,
                            world, p->n_q_heads, hp->n_kv_heads, hp->n_kv_heads);
            return SHARDLM_EINPUT;
        }
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
