/* backend_cpu.c - the CPU implementation of the backend table: the kernels
 * of kernels/cpu on host buffers, the paged KV cache in host memory (rows
 * of f32, f16 or Q8_0, --kv-cache-type), RoPE from per-token cos/sin
 * tables (pairs or NeoX halves), and the all-reduce in f32 or Q8_0 blocks (--comm-dtype q8). */
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "shardlm_common.h"

typedef struct {
    size_t n_kv, kv_width;      /* local KV heads, and x head_dim */
    size_t kv_row;              /* bytes of one row: one position of one KV head */
    uint8_t *k_cache, *v_cache; /* [layer][block][slot][local KV head] rows */
    float *rope_freq;           /* [rope_dim / 2] inverse frequencies */
    float *rope_tab;            /* [2 * rope_dim] one position's cos/sin */
} cpu_state;

static void cpu_state_free(shardlm_state *s)
{
    shardlm_acts *a = &s->a;
    float *bufs[] = {a->x, a->xb, a->xb2, a->q, a->att, a->k, a->v, a->hb, a->hb2, a->lg_local};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    memset(a, 0, sizeof *a);
    cpu_state *c = s->bs;
    if (!c) return;
    free(c->k_cache), free(c->v_cache), free(c->rope_freq), free(c->rope_tab);
    free(c);
    s->bs = NULL;
}

/* malloc of n floats, never of 0 bytes. */
static float *floats(size_t n) { return malloc(n * sizeof(float) + 1); }

static int cpu_state_new(shardlm_state *s)
{
    const shardlm_hparams *hp = &s->m->hp;
    const shardlm_shard_plan *p = &s->m->plan;
    cpu_state *c = calloc(1, sizeof *c);
    if (!c) return SHARDLM_ENOMEM;
    s->bs = c;
    size_t B = (size_t)s->max_batch, hd = (size_t)hp->head_dim, dim = (size_t)hp->dim;
    c->n_kv = (size_t)p->n_kv_heads;
    c->kv_width = c->n_kv * hd;
    c->kv_row = shardlm_kv_row_bytes(s->kv_type, hp->head_dim);
    size_t kv = (size_t)hp->n_layers * (size_t)s->n_blocks * (size_t)s->block_size * c->n_kv * c->kv_row;
    size_t qw = (size_t)p->n_q_heads * hd;
    c->k_cache = calloc(kv + 1, 1);
    c->v_cache = calloc(kv + 1, 1);
    c->rope_freq = floats((size_t)hp->rope_dim / 2);
    c->rope_tab = floats(2 * (size_t)hp->rope_dim);
    shardlm_acts *a = &s->a;
    a->x = floats(B * dim), a->xb = floats(B * dim), a->xb2 = floats(B * dim);
    a->q = floats(B * qw), a->att = floats(B * qw);
    a->k = floats(B * c->kv_width), a->v = floats(B * c->kv_width);
    a->hb = floats(B * (size_t)p->n_ffn), a->hb2 = floats(B * (size_t)p->n_ffn);
    a->lg_local = floats(B * (size_t)p->n_vocab);
    if (!c->k_cache || !c->v_cache || !c->rope_freq || !c->rope_tab || !a->x || !a->xb || !a->xb2 || !a->q ||
        !a->att || !a->k || !a->v || !a->hb || !a->hb2 || !a->lg_local) {
        shardlm_err_set("out of memory allocating the KV cache: %d blocks of %d positions", s->n_blocks,
                        s->block_size);
        return SHARDLM_ENOMEM;
    }
    shardlm_rope_freqs_ext(c->rope_freq, hp->rope_dim, hp->rope_base, hp->rope_freq_scale, s->m->rope_factors);
    return SHARDLM_OK;
}

static int cpu_begin(shardlm_state *s, const shardlm_batch *b) { (void)s, (void)b; return SHARDLM_OK; }
static int cpu_end(shardlm_state *s) { (void)s; return SHARDLM_OK; }

static int cpu_embed(shardlm_state *s, const shardlm_mat *table, const shardlm_batch *b, float *x)
{
    size_t dim = table->cols, rb = shardlm_dtype_row_bytes(table->type, dim);
    (void)s;
    for (int i = 0; i < b->n; i++)
        shardlm_dequant_row(table->type, (const uint8_t *)table->data + (size_t)b->tokens[i] * rb, x + i * dim, dim);
    return SHARDLM_OK;
}

static int cpu_rmsnorm(shardlm_state *s, float *out, const float *x, const float *w, int rows, int dim, float eps)
{
    (void)s;
    for (int i = 0; i < rows; i++) shardlm_rmsnorm(out + (size_t)i * dim, x + (size_t)i * dim, w, (size_t)dim, eps);
    return SHARDLM_OK;
}

static int cpu_matmul(shardlm_state *s, const shardlm_mat *w, const float *x, int n, float *y)
{
    shardlm_matmul(s->pool, w->type, w->data, w->rows, w->cols, x, (size_t)n, y);
    return SHARDLM_OK;
}

/* One pool run and one quantisation of x for all k (kernels/cpu/matmul.c). */
static int cpu_matmul_many(shardlm_state *s, int k, const shardlm_mat *const *w, const float *x, int n, float **ys)
{
    shardlm_matmul_part parts[SHARDLM_MATMUL_MANY_MAX];
    int same_cols = 1;
    for (int i = 0; i < k; i++) same_cols = same_cols && w[i]->cols == w[0]->cols;
    if (k > SHARDLM_MATMUL_MANY_MAX || !same_cols) {
        for (int i = 0; i < k; i++) cpu_matmul(s, w[i], x, n, ys[i]);
        return SHARDLM_OK;
    }
    for (int i = 0; i < k; i++) parts[i] = (shardlm_matmul_part){w[i]->type, w[i]->data, w[i]->rows};
    shardlm_matmul_many(s->pool, k, parts, w[0]->cols, x, (size_t)n, ys);
    return SHARDLM_OK;
}

static int cpu_add_bias(shardlm_state *s, float *y, const float *bias, int rows, int width)
{
    (void)s;
    shardlm_add_bias(y, bias, (size_t)rows, (size_t)width);
    return SHARDLM_OK;
}

/* One cos/sin table per token, shared by its q and k heads. */
static int cpu_rope(shardlm_state *s, float *q, int n_q_heads, float *k, int n_kv_heads, const shardlm_batch *b)
{
    const shardlm_hparams *hp = &s->m->hp;
    cpu_state *c = s->bs;
    size_t qw = (size_t)n_q_heads * hp->head_dim, kw = (size_t)n_kv_heads * hp->head_dim;
    void (*rot)(float *, int, int, int, const float *) = hp->rope_neox ? shardlm_rope_neox : shardlm_rope;
    for (int i = 0; i < b->n; i++) {
        shardlm_rope_table(c->rope_tab, c->rope_freq, hp->rope_dim, b->pos[i]);
        rot(q + i * qw, n_q_heads, hp->head_dim, hp->rope_dim, c->rope_tab);
        rot(k + i * kw, n_kv_heads, hp->head_dim, hp->rope_dim, c->rope_tab);
    }
    return SHARDLM_OK;
}

/* Byte offset of layer l's KV cache. */
static size_t kv_layer(const shardlm_state *s, int l)
{
    const cpu_state *c = s->bs;
    return (size_t)l * s->n_blocks * s->block_size * c->n_kv * c->kv_row;
}

static int cpu_kv_store(shardlm_state *s, int l, const float *k, const float *v, const shardlm_batch *b)
{
    cpu_state *c = s->bs;
    size_t hd = (size_t)s->m->hp.head_dim;
    for (int i = 0; i < b->n; i++) {
        const int32_t *table = b->tables[b->seq[i]];
        int pos = b->pos[i];
        size_t row = ((size_t)table[pos / s->block_size] * s->block_size + (size_t)(pos % s->block_size)) * c->n_kv;
        size_t off = kv_layer(s, l) + row * c->kv_row;
        for (size_t h = 0; h < c->n_kv; h++) {
            shardlm_kv_store(s->kv_type, k + i * c->kv_width + h * hd, (int)hd, c->k_cache + off + h * c->kv_row);
            shardlm_kv_store(s->kv_type, v + i * c->kv_width + h * hd, (int)hd, c->v_cache + off + h * c->kv_row);
        }
    }
    return SHARDLM_OK;
}

static int cpu_attention(shardlm_state *s, int l, const float *q, float *out, const shardlm_batch *b)
{
    const shardlm_hparams *hp = &s->m->hp;
    const shardlm_shard_plan *p = &s->m->plan;
    cpu_state *c = s->bs;
    shardlm_kv_view kv = {s->kv_type, hp->head_dim, p->n_kv_heads, s->block_size, c->k_cache + kv_layer(s, l),
                          c->v_cache + kv_layer(s, l)};
    shardlm_attn_batch ab = {b->n, b->pos, b->seq, b->tables, p->n_q_heads, p->q_head0, p->kv_head0,
                             hp->n_heads / hp->n_kv_heads, q, out};
    shardlm_attention(s->pool, &kv, &ab);
    return SHARDLM_OK;
}

static int cpu_add(shardlm_state *s, float *x, const float *y, size_t n)
{
    (void)s;
    for (size_t i = 0; i < n; i++) x[i] += y[i];
    return SHARDLM_OK;
}

static int cpu_silu_mul(shardlm_state *s, float *a, const float *b, size_t n)
{
    (void)s;
    shardlm_silu_mul(a, b, n);
    return SHARDLM_OK;
}

static int cpu_copy(shardlm_state *s, float *dst, const float *src, size_t n)
{
    (void)s;
    memcpy(dst, src, n * sizeof(float));
    return SHARDLM_OK;
}

static int cpu_allreduce(shardlm_state *s, shardlm_comm *c, float *buf, size_t n, int timeout_ms)
{
    return s->q8_scratch ? shardlm_comm_allreduce_q8(c, buf, n, s->q8_scratch, timeout_ms)
                         : shardlm_comm_allreduce_f32(c, buf, n, timeout_ms);
}

static int cpu_gather(shardlm_state *s, shardlm_comm *c, const float *local, float *recv, int timeout_ms)
{
    return shardlm_comm_gatherv(c, local, s->gather_bytes, recv, timeout_ms);
}

const shardlm_backend shardlm_backend_cpu = {
    .name = "cpu",
    .state_new = cpu_state_new,
    .state_free = cpu_state_free,
    .begin = cpu_begin,
    .end = cpu_end,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .matmul_many = cpu_matmul_many,
    .add_bias = cpu_add_bias,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .add = cpu_add,
    .silu_mul = cpu_silu_mul,
    .copy = cpu_copy,
    .allreduce = cpu_allreduce,
    .gather = cpu_gather,
};
