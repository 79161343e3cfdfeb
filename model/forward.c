/* forward.c - the tensor-parallel forward pass, in the spirit of llama2.c's
 * run.c: one layer walker that reads top to bottom. It runs on the CPU and
 * on a GPU alike, calling the operations of the backend table the model
 * was placed on (model_internal.h: backend_cpu.c, backend_cuda.c), so what
 * a layer computes is written once, here.
 *
 * Each rank computes its heads and FFN rows; two all-reduces per layer sum
 * the row-parallel partial outputs; logits are gathered to rank 0, which
 * interleaves the vocabulary slices into full rows.
 *
 * A step is a batch of tokens from one or more sequences. The KV cache is
 * paged: blocks of block_size positions, addressed through each sequence's
 * block table, which rank 0 owns and sends with every step. Every token is
 * computed the same way whatever else is in the batch. */
#include <string.h>

#include "model_internal.h"
#include "shardlm_common.h"

/* Runs one backend operation; returns from the caller when it fails. */
#define OP(call)                                                                                                       \
    do {                                                                                                               \
        int rc_ = (call);                                                                                              \
        if (rc_) return rc_;                                                                                           \
    } while (0)

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
    if (s->m != m || s->be != m->be) {
        shardlm_err_set("this state was made for another model or before shardlm_model_to_device; make a new one");
        return SHARDLM_EINPUT;
    }
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

/* Sums the row-parallel partial outputs (n floats) over the ranks. */
static int allreduce(shardlm_state *s, shardlm_comm *comm, float *buf, size_t n, int timeout_ms)
{
    if (shardlm_comm_size(comm) == 1) return SHARDLM_OK;
    uint64_t t0 = shardlm_now_ns();
    int rc = s->be->allreduce(s, comm, buf, n, timeout_ms);
    s->allreduce_ns += shardlm_now_ns() - t0;
    return rc;
}

/* y += bias (rows x width), when the file has that bias. */
static int bias(shardlm_state *s, float *y, const float *b, int rows, int width)
{
    return b ? s->be->add_bias(s, y, b, rows, width) : SHARDLM_OK;
}

/* ys[i] = w[i] x for matrices of one input: in one go where the backend can
 * (one barrier and one quantisation on the CPU), else one by one. */
static int matmul_many(shardlm_state *s, int k, const shardlm_mat *const *w, const float *x, int n, float **ys)
{
    if (s->be->matmul_many) return s->be->matmul_many(s, k, w, x, n, ys);
    for (int i = 0; i < k; i++) OP(s->be->matmul(s, w[i], x, n, ys[i]));
    return SHARDLM_OK;
}

/* Attention: column-parallel q/k/v (this rank's heads) with their biases
 * (qwen2), per-head RMSNorm of q and k (qwen3), RoPE (pairs for llama,
 * halves for qwen; Llama 3's frequency factors), the paged cache, then the
 * row-parallel output projection summed over the ranks, its bias added once. */
static int attention_block(const shardlm_model *m, shardlm_state *s, shardlm_comm *comm, int l,
                           const shardlm_batch *b, int timeout_ms)
{
    const shardlm_backend *be = s->be;
    const shardlm_hparams *hp = &m->hp;
    const shardlm_shard_plan *p = &m->plan;
    const shardlm_layer *ly = &m->layers[l];
    shardlm_acts *a = &s->a;
    int n = b->n, hd = hp->head_dim, nq = p->n_q_heads, nkv = p->n_kv_heads;
    OP(be->rmsnorm(s, a->xb, a->x, ly->attn_norm, n, hp->dim, hp->eps));
    const shardlm_mat *qkv[3] = {&ly->wq, &ly->wk, &ly->wv};
    float *qkv_out[3] = {a->q, a->k, a->v};
    OP(matmul_many(s, 3, qkv, a->xb, n, qkv_out));
    OP(bias(s, a->q, ly->bq, n, nq * hd));
    OP(bias(s, a->k, ly->bk, n, nkv * hd));
    OP(bias(s, a->v, ly->bv, n, nkv * hd));
    if (ly->q_norm) OP(be->rmsnorm(s, a->q, a->q, ly->q_norm, n * nq, hd, hp->eps));
    if (ly->k_norm) OP(be->rmsnorm(s, a->k, a->k, ly->k_norm, n * nkv, hd, hp->eps));
    OP(be->rope(s, a->q, nq, a->k, nkv, b));
    OP(be->kv_store(s, l, a->k, a->v, b));
    OP(be->attention(s, l, a->q, a->att, b));
    OP(be->matmul(s, &ly->wo, a->att, n, a->xb2));
    OP(allreduce(s, comm, a->xb2, (size_t)n * hp->dim, timeout_ms));
    OP(bias(s, a->xb2, ly->bo, n, hp->dim));
    return be->add(s, a->x, a->xb2, (size_t)n * hp->dim);
}

/* SwiGLU MLP: column-parallel gate/up (this rank's FFN rows), row-parallel
 * down; biases where the file has them (the down bias once, after the sum). */
static int ffn_block(const shardlm_model *m, shardlm_state *s, shardlm_comm *comm, int l, int n, int timeout_ms)
{
    const shardlm_backend *be = s->be;
    const shardlm_hparams *hp = &m->hp;
    const shardlm_layer *ly = &m->layers[l];
    shardlm_acts *a = &s->a;
    int nf = m->plan.n_ffn;
    OP(be->rmsnorm(s, a->xb, a->x, ly->ffn_norm, n, hp->dim, hp->eps));
    const shardlm_mat *gu[2] = {&ly->w_gate, &ly->w_up};
    float *gu_out[2] = {a->hb, a->hb2};
    OP(matmul_many(s, 2, gu, a->xb, n, gu_out));
    OP(bias(s, a->hb, ly->b_gate, n, nf));
    OP(bias(s, a->hb2, ly->b_up, n, nf));
    OP(be->silu_mul(s, a->hb, a->hb2, (size_t)n * nf));
    OP(be->matmul(s, &ly->w_down, a->hb, n, a->xb2));
    OP(allreduce(s, comm, a->xb2, (size_t)n * hp->dim, timeout_ms));
    OP(bias(s, a->xb2, ly->b_down, n, hp->dim));
    return be->add(s, a->x, a->xb2, (size_t)n * hp->dim);
}

/* Final norm and this rank's vocabulary slice for the wanted tokens, then a
 * gather to rank 0, which interleaves the slices into full rows. */
static int logits_block(const shardlm_model *m, shardlm_state *s, shardlm_comm *comm, const shardlm_batch *b,
                        float *logits, int timeout_ms)
{
    const shardlm_backend *be = s->be;
    const shardlm_hparams *hp = &m->hp;
    shardlm_acts *a = &s->a;
    size_t dim = (size_t)hp->dim;
    int nw = 0;
    for (int i = 0; i < b->n; i++)
        if (b->want[i]) OP(be->copy(s, a->xb2 + (size_t)nw++ * dim, a->x + (size_t)i * dim, dim));
    if (nw == 0) return SHARDLM_OK;
    OP(be->rmsnorm(s, a->xb, a->xb2, m->output_norm, nw, hp->dim, hp->eps));
    OP(be->matmul(s, &m->output, a->xb, nw, a->lg_local));
    OP(bias(s, a->lg_local, m->output_b, nw, m->plan.n_vocab));
    int world = m->plan.world;
    for (int r = 0; r < world; r++) s->gather_bytes[r] = (size_t)nw * m->vocab_counts[r] * sizeof(float);
    OP(be->gather(s, comm, a->lg_local, s->lg_all, timeout_ms));
    if (m->plan.rank != 0 || !logits) return SHARDLM_OK;
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
    OP(check_batch(m, s, b));
    OP(s->be->begin(s, b));
    OP(s->be->embed(s, &m->tok_embd, b, s->a.x));
    for (int l = 0; l < m->hp.n_layers; l++) {
        OP(attention_block(m, s, comm, l, b, timeout_ms));
        OP(ffn_block(m, s, comm, l, b->n, timeout_ms));
    }
    OP(logits_block(m, s, comm, b, logits, timeout_ms));
    return s->be->end(s);
}
