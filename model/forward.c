/* forward.c - the tensor-parallel forward pass of a Llama-family model, in
 * the spirit of llama2.c's run.c: one function that reads top to bottom.
 * Each rank computes its heads and FFN rows; two all-reduces per layer sum
 * the row-parallel partial outputs; logits are gathered to rank 0.
 *
 * A step is a batch of tokens from one or more sequences. The KV cache is
 * paged: blocks of block_size positions, addressed through each sequence's
 * block table, which rank 0 owns and sends with every step. Every token is
 * computed the same way whatever else is in the batch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "shardlm_common.h"

struct shardlm_state {
    int n_ctx, max_batch;     /* n_ctx: positions one sequence may reach */
    int n_blocks, block_size; /* the paged KV pool of this rank */
    size_t kv_width;          /* local KV heads x head_dim */
    float *k_cache, *v_cache; /* [layer][block][slot][kv_width] */
    uint64_t allreduce_ns;    /* time spent in all-reduce, all steps */
    float *x, *xb, *xb2;      /* [batch][dim] */
    float *q, *att;           /* [batch][local q width] */
    float *k, *v;             /* [batch][kv_width] */
    float *hb, *hb2;          /* [batch][local ffn] */
    float *lg_local;          /* [batch][local vocab] */
    float *lg_all;            /* [batch][vocab], rank 0's gather buffer */
    size_t *gather_bytes;     /* [world] */
    shardlm_pool *pool;       /* borrowed; NULL: single-threaded */
    float *att_scores;        /* [threads][n_ctx] */
    int n_score_rows;
    shardlm_state_dev *dev;   /* CUDA hook: everything above but the sizes lives here */
};

void shardlm_state_set_pool(shardlm_state *s, shardlm_pool *pool)
{
    int nth = pool ? shardlm_pool_size(pool) : 1;
    if (nth > s->n_score_rows) {
        float *sc = realloc(s->att_scores, (size_t)nth * (size_t)s->n_ctx * sizeof(float));
        if (!sc) return; /* keep the old pool: still correct, just fewer threads */
        s->att_scores = sc;
        s->n_score_rows = nth;
    }
    s->pool = pool;
}

int shardlm_state_new(const shardlm_model *m, int n_ctx, int n_blocks, int block_size, int max_batch,
                      shardlm_state **out)
{
    const shardlm_hparams *hp = &m->hp;
    const shardlm_shard_plan *p = &m->plan;
    if (n_ctx < 1 || max_batch < 1 || block_size < 1 || n_blocks < 0) {
        shardlm_err_set("context %d, batch %d and block size %d must be positive", n_ctx, max_batch, block_size);
        return SHARDLM_EINPUT;
    }
    if (n_blocks == 0) n_blocks = (n_ctx + block_size - 1) / block_size;
    shardlm_state *s = calloc(1, sizeof *s);
    if (!s) return SHARDLM_ENOMEM;
    size_t B = (size_t)max_batch, hd = (size_t)hp->head_dim;
    s->n_ctx = n_ctx;
    s->max_batch = max_batch;
    s->n_blocks = n_blocks;
    s->block_size = block_size;
    s->kv_width = (size_t)p->n_kv_heads * hd;
    if (m->dev) { /* CUDA hook: the cache and scratch go to the device */
        int rc = shardlm_dev_state_new(m, n_blocks, block_size, max_batch, &s->dev);
        if (rc) free(s);
        else *out = s;
        return rc;
    }
    size_t kv = (size_t)hp->n_layers * (size_t)n_blocks * (size_t)block_size * s->kv_width;
    size_t qw = (size_t)p->n_q_heads * hd;
    s->k_cache = calloc(kv, sizeof(float));
    s->v_cache = calloc(kv, sizeof(float));
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
    s->att_scores = malloc((size_t)n_ctx * sizeof(float));
    s->n_score_rows = 1;
    if (!s->k_cache || !s->v_cache || !s->x || !s->xb || !s->xb2 || !s->q || !s->att || !s->k || !s->v ||
        !s->hb || !s->hb2 || !s->lg_local || !s->lg_all || !s->gather_bytes || !s->att_scores) {
        shardlm_state_free(s);
        shardlm_err_set("out of memory allocating the KV cache: %d blocks of %d positions", n_blocks, block_size);
        return SHARDLM_ENOMEM;
    }
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
    free(s->lg_local); free(s->lg_all); free(s->gather_bytes); free(s->att_scores);
    free(s);
}

int shardlm_state_n_ctx(const shardlm_state *s) { return s->n_ctx; }
int shardlm_state_n_blocks(const shardlm_state *s) { return s->n_blocks; }
double shardlm_state_allreduce_seconds(const shardlm_state *s) { return (double)s->allreduce_ns * 1e-9; }

/* Where position pos of a sequence with block table `table` lives. */
static size_t kv_offset(const shardlm_state *s, int layer, const int32_t *table, int pos)
{
    size_t block = (size_t)table[pos / s->block_size];
    size_t slot = ((size_t)layer * s->n_blocks + block) * s->block_size + (size_t)(pos % s->block_size);
    return slot * s->kv_width;
}

static void matmul(shardlm_state *s, const shardlm_mat *w, const float *x, size_t n, float *y)
{
    shardlm_matmul(s->pool, w->type, w->data, w->rows, w->cols, x, n, y);
}

/* Causal attention of one token and one local query head over positions
 * 0..pos of its sequence, read through the sequence's block table. */
static void attend_head(const shardlm_model *m, const shardlm_state *s, int layer, const int32_t *table, int pos,
                        int h, const float *qh, float *oh, float *scores)
{
    const shardlm_hparams *hp = &m->hp;
    const shardlm_shard_plan *p = &m->plan;
    int hd = hp->head_dim, group = hp->n_heads / hp->n_kv_heads;
    size_t head_off = (size_t)((p->q_head0 + h) / group - p->kv_head0) * hd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int t = 0; t <= pos; t++) {
        const float *kt = s->k_cache + kv_offset(s, layer, table, t) + head_off;
        float dot = 0.0f;
        for (int i = 0; i < hd; i++) dot += qh[i] * kt[i];
        scores[t] = dot * scale;
    }
    shardlm_softmax(scores, (size_t)pos + 1);
    memset(oh, 0, (size_t)hd * sizeof(float));
    for (int t = 0; t <= pos; t++) {
        const float *vt = s->v_cache + kv_offset(s, layer, table, t) + head_off;
        float a = scores[t];
        for (int i = 0; i < hd; i++) oh[i] += a * vt[i];
    }
}

typedef struct {
    const shardlm_model *m;
    shardlm_state *s;
    int layer;
    const shardlm_batch *b;
} attend_job;

/* Threads take (token, head) pairs round-robin; each has its own scores row. */
static void attend_worker(void *ctx, int tid, int nth)
{
    attend_job *j = ctx;
    const shardlm_batch *b = j->b;
    int nh = j->m->plan.n_q_heads, hd = j->m->hp.head_dim;
    size_t qw = (size_t)nh * hd;
    float *scores = j->s->att_scores + (size_t)tid * j->s->n_ctx;
    for (int w = tid; w < b->n * nh; w += nth) {
        int i = w / nh, h = w % nh;
        attend_head(j->m, j->s, j->layer, b->tables[b->seq[i]], b->pos[i], h, j->s->q + i * qw + (size_t)h * hd,
                    j->s->att + i * qw + (size_t)h * hd, scores);
    }
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
    int rc = shardlm_comm_allreduce_f32(comm, s->xb2, n, timeout_ms);
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
        shardlm_ref_rope(s->q + i * qw, p->n_q_heads, hp->head_dim, hp->rope_dim, pos[i], hp->rope_base);
        shardlm_ref_rope(s->k + i * kvw, p->n_kv_heads, hp->head_dim, hp->rope_dim, pos[i], hp->rope_base);
        size_t off = kv_offset(s, l, b->tables[b->seq[i]], pos[i]);
        memcpy(s->k_cache + off, s->k + i * kvw, kvw * sizeof(float));
        memcpy(s->v_cache + off, s->v + i * kvw, kvw * sizeof(float));
    }
    attend_job job = {m, s, l, b};
    shardlm_pool_run(s->pool, attend_worker, &job);
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
