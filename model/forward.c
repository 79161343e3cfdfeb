/* forward.c - the tensor-parallel forward pass of a Llama-family model, in
 * the spirit of llama2.c's run.c: one function that reads top to bottom.
 * Each rank computes its heads and FFN rows; two all-reduces per layer sum
 * the row-parallel partial outputs; logits are gathered to rank 0.
 *
 * A step is a batch of tokens from one or more sequences. The KV cache is
 * paged: blocks of block_size positions, addressed through each sequence's
 * block table, which rank 0 owns and sends with every step. Every token is
 * computed the same way whatever else is in the batch. The cache holds one
 * row per position and KV head, as f32, f16 or Q8_0 (--kv-cache-type);
 * attention itself is the kernel shardlm_attention (kernels/cpu/attention.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "shardlm_common.h"

struct shardlm_state {
    int n_ctx, max_batch;     /* n_ctx: positions one sequence may reach */
    int n_blocks, block_size; /* the paged KV pool of this rank */
    size_t kv_width;          /* local KV heads x head_dim */
    size_t n_kv;              /* local KV heads */
    shardlm_dtype kv_type;    /* element type of the cache rows */
    size_t kv_row;            /* bytes of one row: one position of one KV head */
    uint8_t *k_cache, *v_cache; /* [layer][block][slot][local KV head] rows */
    float *rope_freq;         /* [rope_dim / 2] inverse frequencies */
    float *rope_tab;          /* [2 * rope_dim] one position's cos/sin */
    uint64_t allreduce_ns;    /* time spent in all-reduce, all steps */
    size_t dim;               /* the model's embedding width */
    uint8_t *q8_scratch;      /* --comm-dtype q8: wire blocks; NULL: f32 all-reduce */
    float *x, *xb, *xb2;      /* [batch][dim] */
    float *q, *att;           /* [batch][local q width] */
    float *k, *v;             /* [batch][kv_width] */
    float *hb, *hb2;          /* [batch][local ffn] */
    float *lg_local;          /* [batch][local vocab] */
    float *lg_all;            /* [batch][vocab], rank 0's gather buffer */
    size_t *gather_bytes;     /* [world] */
    shardlm_pool *pool;       /* borrowed; NULL: single-threaded */
    shardlm_state_dev *dev;   /* CUDA hook: everything above but the sizes lives here */
};

void shardlm_state_set_pool(shardlm_state *s, shardlm_pool *pool) { s->pool = pool; }

int shardlm_state_set_comm_q8(shardlm_state *s, int world, int on)
{
    free(s->q8_scratch);
    s->q8_scratch = NULL;
    if (!on) return SHARDLM_OK;
    if (s->dev) {
        shardlm_err_set("--comm-dtype q8: the CUDA device path all-reduces f32");
        return SHARDLM_EINPUT;
    }
    size_t n = (size_t)s->max_batch * s->dim;
    s->q8_scratch = malloc(shardlm_model_allreduce_q8_scratch(world, n));
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

int shardlm_state_new_kv(const shardlm_model *m, int n_ctx, int n_blocks, int block_size, int max_batch,
                         shardlm_dtype kv_type, shardlm_state **out)
{
    const shardlm_hparams *hp = &m->hp;
    const shardlm_shard_plan *p = &m->plan;
    if (n_ctx < 1 || max_batch < 1 || block_size < 1 || n_blocks < 0) {
        shardlm_err_set("context %d, batch %d and block size %d must be positive", n_ctx, max_batch, block_size);
        return SHARDLM_EINPUT;
    }
    if (kv_type != SHARDLM_DT_F32 && kv_type != SHARDLM_DT_F16 && kv_type != SHARDLM_DT_Q8_0) {
        shardlm_err_set("--kv-cache-type %s: expected f32, f16 or q8_0", shardlm_dtype_name(kv_type));
        return SHARDLM_EINPUT;
    }
    if (m->dev && kv_type != SHARDLM_DT_F32) {
        shardlm_err_set("--kv-cache-type %s: the CUDA device keeps an f32 KV cache", shardlm_dtype_name(kv_type));
        return SHARDLM_EINPUT;
    }
    if (n_blocks == 0) n_blocks = (n_ctx + block_size - 1) / block_size;
    shardlm_state *s = calloc(1, sizeof *s);
    if (!s) return SHARDLM_ENOMEM;
    size_t B = (size_t)max_batch, hd = (size_t)hp->head_dim;
    s->n_ctx = n_ctx;
    s->max_batch = max_batch;
    s->dim = (size_t)hp->dim;
    s->n_blocks = n_blocks;
    s->block_size = block_size;
    s->kv_width = (size_t)p->n_kv_heads * hd;
    s->n_kv = (size_t)p->n_kv_heads;
    s->kv_type = kv_type;
    s->kv_row = shardlm_kv_row_bytes(kv_type, hp->head_dim);
    if (m->dev) { /* CUDA hook: the cache and scratch go to the device */
        int rc = shardlm_dev_state_new(m, n_blocks, block_size, max_batch, &s->dev);
        if (rc) free(s);
        else *out = s;
        return rc;
    }
    size_t kv = (size_t)hp->n_layers * (size_t)n_blocks * (size_t)block_size * p->n_kv_heads * s->kv_row;
    size_t qw = (size_t)p->n_q_heads * hd;
    s->k_cache = calloc(kv, 1);
    s->v_cache = calloc(kv, 1);
    s->rope_freq = malloc((size_t)hp->rope_dim / 2 * sizeof(float) + 1);
    s->rope_tab = malloc(2 * (size_t)hp->rope_dim * sizeof(float) + 1);
    s->x = malloc(B * hp->dim * sizeof(float));
    s->xb = malloc(B * hp->dim * sizeof(float));
    s->xb2 = malloc(B * hp->dim * sizeof(float));
    s->q = malloc(B * qw * sizeof(float) + 1);
    s->att = malloc(B * qw * sizeof(float) + 1);
    s->k = malloc(B * s->kv_width * sizeof(float) + 1);
    s->v = malloc(B * s->kv_width * sizeof(float) + 1);
    s->hb = malloc(B * p->n_ffn * sizeof(float) + 1);
    s->hb2 = malloc(B * p->n_ffn * sizeof(float) + 1);
    s->lg_local = malloc(B * p->n_vocab * sizeof(float) + 1);
    s->lg_all = malloc(B * hp->vocab * sizeof(float));
    s->gather_bytes = calloc((size_t)p->world, sizeof(size_t));
    if (!s->k_cache || !s->v_cache || !s->x || !s->xb || !s->xb2 || !s->q || !s->att || !s->k || !s->v ||
        !s->hb || !s->hb2 || !s->lg_local || !s->lg_all || !s->gather_bytes || !s->rope_freq || !s->rope_tab) {
        shardlm_state_free(s);
        shardlm_err_set("out of memory allocating the KV cache: %d blocks of %d positions", n_blocks, block_size);
        return SHARDLM_ENOMEM;
    }
    shardlm_rope_freqs(s->rope_freq, hp->rope_dim, hp->rope_base);
    *out = s;
    return SHARDLM_OK;
}

void shardlm_state_free(shardlm_state *s)
{
    if (!s) return;
    shardlm_dev_state_free(s->dev); /* CUDA hook */
    free(s->k_cache); free(s->v_cache);
    free(s->x); free(s->xb); free(s->xb2);
    free(s->q); free(s->att); free(s->k); free(s->v);
    free(s->hb); free(s->hb2);
    free(s->lg_local); free(s->lg_all); free(s->gather_bytes);
    free(s->rope_freq); free(s->rope_tab);
    free(s->q8_scratch);
    free(s);
}

int shardlm_state_n_ctx(const shardlm_state *s) { return s->n_ctx; }
int shardlm_state_n_blocks(const shardlm_state *s) { return s->n_blocks; }
double shardlm_state_allreduce_seconds(const shardlm_state *s) { return (double)s->allreduce_ns * 1e-9; }

/* Byte offset of layer l's KV cache. */
static size_t kv_layer(const shardlm_state *s, int l)
{
    return (size_t)l * s->n_blocks * s->block_size * s->n_kv * s->kv_row;
}

/* Stores token i's K and V (rotated already) at position pos of its sequence. */
static void kv_store(shardlm_state *s, int l, const int32_t *table, int pos, int i)
{
    size_t row = ((size_t)table[pos / s->block_size] * s->block_size + (size_t)(pos % s->block_size)) * s->n_kv;
    size_t off = kv_layer(s, l) + row * s->kv_row, hd = s->kv_width / s->n_kv;
    for (size_t h = 0; h < s->n_kv; h++) {
        shardlm_kv_store(s->kv_type, s->k + i * s->kv_width + h * hd, (int)hd, s->k_cache + off + h * s->kv_row);
        shardlm_kv_store(s->kv_type, s->v + i * s->kv_width + h * hd, (int)hd, s->v_cache + off + h * s->kv_row);
    }
}

static void matmul(shardlm_state *s, const shardlm_mat *w, const float *x, size_t n, float *y)
{
    shardlm_matmul(s->pool, w->type, w->data, w->rows, w->cols, x, n, y);
}

/* Causal attention of every token over its sequence's cached positions,
 * this rank's query heads, into s->att. */
static void attend(const shardlm_model *m, shardlm_state *s, int l, const shardlm_batch *b)
{
    const shardlm_shard_plan *p = &m->plan;
    shardlm_kv_view kv = {s->kv_type, m->hp.head_dim, p->n_kv_heads, s->block_size, s->k_cache + kv_layer(s, l),
                          s->v_cache + kv_layer(s, l)};
    shardlm_attn_batch ab = {b->n, b->pos, b->seq, b->tables, p->n_q_heads, p->q_head0, p->kv_head0,
                             m->hp.n_heads / m->hp.n_kv_heads, s->q, s->att};
    shardlm_attention(s->pool, &kv, &ab);
}

static int check_seq(const shardlm_state *s, const shardlm_batch *b, int i)
{
    int q = b->seq[i];
    if (q < 0 || q >= b->n_seqs) {
        shardlm_err_set("token %d names sequence %d of %d", i, q, b->n_seqs);
        return SHARDLM_EINPUT;
    }
    int need = b->pos[i] / s->block_size + 1;
    if (b->table_len[q] < need) {
        shardlm_err_set("sequence %d has %d KV blocks, position %d needs %d", q, b->table_len[q], b->pos[i], need);
        return SHARDLM_EINPUT;
    }
    for (int k = 0; k < need; k++)
        if (b->tables[q][k] < 0 || b->tables[q][k] >= s->n_blocks) {
            shardlm_err_set("sequence %d names KV block %d of %d", q, b->tables[q][k], s->n_blocks);
            return SHARDLM_EINPUT;
        }
    return SHARDLM_OK;
}

static int check_batch(const shardlm_model *m, const shardlm_state *s, const shardlm_batch *b)
{
    if (b->n < 1 || b->n > s->max_batch) {
        shardlm_err_set("batch of %d tokens is outside 1..%d", b->n, s->max_batch);
        return SHARDLM_EINPUT;
    }
    for (int i = 0; i < b->n; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= m->hp.vocab) {
            shardlm_err_set("token id %d is outside the vocabulary (0..%d)", b->tokens[i], m->hp.vocab - 1);
            return SHARDLM_EINPUT;
        }
        if (b->pos[i] < 0 || b->pos[i] >= s->n_ctx) {
            shardlm_err_set("position %d is outside the context (0..%d)", b->pos[i], s->n_ctx - 1);
            return SHARDLM_EINPUT;
        }
        int rc = check_seq(s, b, i);
        if (rc) return rc;
    }
    return SHARDLM_OK;
}

static int allreduce(shardlm_state *s, shardlm_comm *comm, size_t n, int timeout_ms)
{
    uint64_t t0 = shardlm_now_ns();
    int rc = s->q8_scratch ? shardlm_model_allreduce_q8(comm, s->xb2, n, s->q8_scratch, timeout_ms)
                           : shardlm_comm_allreduce_f32(comm, s->xb2, n, timeout_ms);
    s->allreduce_ns += shardlm_now_ns() - t0;
    return rc;
}

static int layer_forward(const shardlm_model *m, shardlm_state *s, shardlm_comm *comm, int l, const shardlm_batch *b,
                         int timeout_ms)
{
    const int32_t *pos = b->pos;
    int n = b->n;
    const shardlm_hparams *hp = &m->hp;
    const shardlm_shard_plan *p = &m->plan;
    const shardlm_layer *ly = &m->layers[l];
    size_t dim = (size_t)hp->dim, qw = (size_t)p->n_q_heads * hp->head_dim, kvw = s->kv_width;

    /* attention: column-parallel q/k/v, local heads, row-parallel o */
    for (int i = 0; i < n; i++) shardlm_rmsnorm(s->xb + i * dim, s->x + i * dim, ly->attn_norm, dim, hp->eps);
    matmul(s, &ly->wq, s->xb, (size_t)n, s->q);
    matmul(s, &ly->wk, s->xb, (size_t)n, s->k);
    matmul(s, &ly->wv, s->xb, (size_t)n, s->v);
    for (int i = 0; i < n; i++) {
        shardlm_rope_table(s->rope_tab, s->rope_freq, hp->rope_dim, pos[i]);
        shardlm_rope(s->q + i * qw, p->n_q_heads, hp->head_dim, hp->rope_dim, s->rope_tab);
        shardlm_rope(s->k + i * kvw, p->n_kv_heads, hp->head_dim, hp->rope_dim, s->rope_tab);
        kv_store(s, l, b->tables[b->seq[i]], pos[i], i);
    }
    attend(m, s, l, b);
    matmul(s, &ly->wo, s->att, (size_t)n, s->xb2);
    int rc = allreduce(s, comm, (size_t)n * dim, timeout_ms);
    if (rc) return rc;
    for (size_t i = 0; i < (size_t)n * dim; i++) s->x[i] += s->xb2[i];

    /* SwiGLU MLP: column-parallel gate/up, row-parallel down */
    for (int i = 0; i < n; i++) shardlm_rmsnorm(s->xb + i * dim, s->x + i * dim, ly->ffn_norm, dim, hp->eps);
    matmul(s, &ly->w_gate, s->xb, (size_t)n, s->hb);
    matmul(s, &ly->w_up, s->xb, (size_t)n, s->hb2);
    shardlm_silu_mul(s->hb, s->hb2, (size_t)n * p->n_ffn);
    matmul(s, &ly->w_down, s->hb, (size_t)n, s->xb2);
    rc = allreduce(s, comm, (size_t)n * dim, timeout_ms);
    if (rc) return rc;
    for (size_t i = 0; i < (size_t)n * dim; i++) s->x[i] += s->xb2[i];
    return SHARDLM_OK;
}

/* Final norm and this rank's vocabulary slice for the wanted tokens, then a
 * gather to rank 0, which interleaves the slices into full rows. */
static int logits_forward(const shardlm_model *m, shardlm_state *s, shardlm_comm *comm, const uint8_t *want, int n,
                          float *logits, int timeout_ms)
{
    const shardlm_hparams *hp = &m->hp;
    size_t dim = (size_t)hp->dim;
    int nw = 0;
    for (int i = 0; i < n; i++)
        if (want[i]) shardlm_rmsnorm(s->xb + (size_t)nw++ * dim, s->x + i * dim, m->output_norm, dim, hp->eps);
    if (nw == 0) return SHARDLM_OK;
    matmul(s, &m->output, s->xb, (size_t)nw, s->lg_local);
    int world = m->plan.world;
    for (int r = 0; r < world; r++) s->gather_bytes[r] = (size_t)nw * m->vocab_counts[r] * sizeof(float);
    int rc = shardlm_comm_gatherv(comm, s->lg_local, s->gather_bytes, s->lg_all, timeout_ms);
    if (rc || m->plan.rank != 0 || !logits) return rc;
    const float *src = s->lg_all;
    for (int r = 0, v0 = 0; r < world; v0 += m->vocab_counts[r], r++) {
        int nv = m->vocab_counts[r];
        for (int i = 0; i < nw; i++, src += nv) memcpy(logits + (size_t)i * hp->vocab + v0, src, nv * sizeof(float));
    }
    return SHARDLM_OK;
}

int shardlm_model_forward_batch(const shardlm_model *m, shardlm_state *s, shardlm_comm *comm, const shardlm_batch *b,
                                float *logits, int timeout_ms)
{
    int rc = check_batch(m, s, b);
    if (rc) return rc;
    if (s->dev) return shardlm_dev_forward(m, s->dev, comm, b, logits, timeout_ms, &s->allreduce_ns); /* CUDA hook */
    if (m->dev) {
        shardlm_err_set("this state was made before shardlm_model_to_device; make a new one");
        return SHARDLM_EINPUT;
    }
    size_t dim = (size_t)m->hp.dim, rb = shardlm_dtype_row_bytes(m->tok_embd.type, dim);
    for (int i = 0; i < b->n; i++)
        shardlm_dequant_row(m->tok_embd.type, (const uint8_t *)m->tok_embd.data + (size_t)b->tokens[i] * rb,
                            s->x + i * dim, dim);
    for (int l = 0; l < m->hp.n_layers; l++)
        if ((rc = layer_forward(m, s, comm, l, b, timeout_ms))) return rc;
    return logits_forward(m, s, comm, b->want, b->n, logits, timeout_ms);
}
