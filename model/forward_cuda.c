/* forward_cuda.c - the forward pass on a CUDA device: the same steps as
 * model/forward.c, in the same order, with every tensor in device memory.
 * shardlm_model_to_device uploads a loaded shard; afterwards
 * shardlm_state_new and shardlm_model_forward_batch come here (the hooks
 * are marked "CUDA hook" in forward.c and load.c), keeping their contract:
 * rank 0 gets the wanted tokens' logits in its host array.
 *
 * All-reduces and the logits gather pass device pointers to an "nccl"
 * communicator; any other (local, ring, mpi) gets host memory, staged
 * through a host buffer. Compiled in every build: without CUDA the
 * shardlm_cuda_* calls fail with "built without CUDA". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h" /* shardlm_r8/r4_gather_row: repacked rows back to plain */
#include "model_internal.h"
#include "shardlm_common.h"
#include "shardlm_cuda.h"

typedef struct {
    shardlm_dtype type;
    size_t rows, cols;
    void *d;
} dmat;

typedef struct {
    float *attn_norm, *ffn_norm;
    dmat wq, wk, wv, wo, w_gate, w_up, w_down;
} dlayer;

struct shardlm_model_dev {
    shardlm_cuda_ctx *ctx;
    int device;
    dmat tok_embd, output;
    float *output_norm;
    dlayer *layers;
    int n_layers;
};

struct shardlm_state_dev {
    shardlm_cuda_ctx *ctx; /* the model's */
    int max_batch;
    shardlm_cuda_kv kv;  /* cache and this step's tables, all on the device */
    float *x, *xb, *xb2, *q, *att, *k, *v, *hb, *hb2, *lg_local, *lg_all;
    int32_t *tokens, *pos, *seq, *tables;
    size_t tables_cap;  /* int32s in tables and h_tables */
    int32_t *h_tables;
    float *h_stage;     /* host side of all-reduces and the gather (non-NCCL) */
    float *h_lg_all;    /* rank 0: the gathered slices */
    size_t *gather_bytes;
};

/* ---- upload ---- */

/* The name a tensor has in the GGUF, for messages. */
static const char *mat_name(char *buf, size_t cap, int layer, const char *what)
{
    if (layer < 0) snprintf(buf, cap, "%s.weight", what);
    else snprintf(buf, cap, "blk.%d.%s.weight", layer, what);
    return buf;
}

static int check_type(const shardlm_mat *h, int layer, const char *what)
{
    if (shardlm_cuda_dtype_ok(h->type) || h->type == SHARDLM_DT_Q4_0_R8 || h->type == SHARDLM_DT_Q8_0_R4)
        return SHARDLM_OK;
    char n[96];
    shardlm_err_set("tensor '%s' has type %s, which the CUDA backend cannot compute with (it takes f32, f16, bf16, "
                    "q8_0 and q4_0); run this model with --device cpu", mat_name(n, sizeof n, layer, what),
                    shardlm_dtype_name(h->type));
    return SHARDLM_EINPUT;
}

/* Q4_0_R8 and Q8_0_R4 are CPU-only interleavings: their rows go back to
 * plain Q4_0 / Q8_0. */
static int upload_mat(shardlm_model_dev *dv, const shardlm_mat *h, int layer, const char *what, dmat *out)
{
    char n[96];
    int rc = check_type(h, layer, what);
    if (rc) return rc;
    int r8 = h->type == SHARDLM_DT_Q4_0_R8, r4 = h->type == SHARDLM_DT_Q8_0_R4;
    out->type = r8 ? SHARDLM_DT_Q4_0 : r4 ? SHARDLM_DT_Q8_0 : h->type;
    out->rows = h->rows;
    out->cols = h->cols;
    size_t rb = shardlm_dtype_row_bytes(out->type, h->cols), bytes = rb * h->rows;
    if ((rc = shardlm_cuda_alloc(dv->ctx, &out->d, bytes, mat_name(n, sizeof n, layer, what)))) return rc;
    if (!r8 && !r4) return shardlm_cuda_upload(dv->ctx, out->d, h->data, bytes);
    uint8_t *plain = malloc(bytes ? bytes : 1);
    if (!plain) return SHARDLM_ENOMEM;
    for (size_t r = 0; r < h->rows; r++)
        (r8 ? shardlm_r8_gather_row : shardlm_r4_gather_row)(h->data, h->rows, h->cols, r, plain + r * rb);
    rc = shardlm_cuda_upload(dv->ctx, out->d, plain, bytes);
    if (!rc) rc = shardlm_cuda_sync(dv->ctx, "uploading a repacked tensor"); /* plain is freed next */
    free(plain);
    return rc;
}

static int upload_vec(shardlm_model_dev *dv, const float *h, size_t n, const char *what, float **out)
{
    int rc = shardlm_cuda_alloc(dv->ctx, (void **)out, n * sizeof(float), what);
    return rc ? rc : shardlm_cuda_upload(dv->ctx, *out, h, n * sizeof(float));
}

#define LAYER_MATS(X)                                                                                                  \
    X(wq, "attn_q") X(wk, "attn_k") X(wv, "attn_v") X(wo, "attn_output") X(w_gate, "ffn_gate") X(w_up, "ffn_up")     \
        X(w_down, "ffn_down")

/* Every type is checked before any memory is allocated. */
static int check_all(const shardlm_model *m)
{
    int rc = check_type(&m->tok_embd, -1, "token_embd");
    if (!rc) rc = check_type(&m->output, -1, "output");
    for (int l = 0; !rc && l < m->hp.n_layers; l++) {
        const shardlm_layer *ly = &m->layers[l];
#define CHECK(f, name) if (!rc) rc = check_type(&ly->f, l, name);
        LAYER_MATS(CHECK)
#undef CHECK
    }
    return rc;
}

static int upload_layer(shardlm_model_dev *dv, const shardlm_model *m, int l)
{
    const shardlm_layer *h = &m->layers[l];
    dlayer *d = &dv->layers[l];
    size_t dim = (size_t)m->hp.dim;
    int rc = upload_vec(dv, h->attn_norm, dim, "attn_norm", &d->attn_norm);
    if (!rc) rc = upload_vec(dv, h->ffn_norm, dim, "ffn_norm", &d->ffn_norm);
#define UP(f, name) if (!rc) rc = upload_mat(dv, &h->f, l, name, &d->f);
    LAYER_MATS(UP)
#undef UP
    return rc;
}

void shardlm_dev_model_free(shardlm_model_dev *dv)
{
    if (!dv) return;
    shardlm_cuda_ctx *c = dv->ctx;
    for (int l = 0; dv->layers && l < dv->n_layers; l++) {
        dlayer *d = &dv->layers[l];
        shardlm_cuda_release(c, d->attn_norm);
        shardlm_cuda_release(c, d->ffn_norm);
#define REL(f, name) shardlm_cuda_release(c, d->f.d);
        LAYER_MATS(REL)
#undef REL
    }
    free(dv->layers);
    shardlm_cuda_release(c, dv->tok_embd.d);
    shardlm_cuda_release(c, dv->output.d);
    shardlm_cuda_release(c, dv->output_norm);
    shardlm_cuda_ctx_free(c);
    free(dv);
}

/* The host copies of the weight matrices are dropped once the device has
 * them: only the device path runs this model from now on. */
static void drop_host_weights(shardlm_model *m)
{
    free(m->tok_embd.data), m->tok_embd.data = NULL;
    free(m->output.data), m->output.data = NULL;
    for (int l = 0; l < m->hp.n_layers; l++) {
        shardlm_layer *ly = &m->layers[l];
#define DROP(f, name) free(ly->f.data), ly->f.data = NULL;
        LAYER_MATS(DROP)
#undef DROP
    }
}

static int upload_all(shardlm_model_dev *dv, const shardlm_model *m)
{
    int rc = upload_mat(dv, &m->tok_embd, -1, "token_embd", &dv->tok_embd);
    if (!rc) rc = upload_mat(dv, &m->output, -1, "output", &dv->output);
    if (!rc) rc = upload_vec(dv, m->output_norm, (size_t)m->hp.dim, "output_norm", &dv->output_norm);
    for (int l = 0; !rc && l < m->hp.n_layers; l++) {
        rc = upload_layer(dv, m, l);
        if (!rc && m->plan.rank == 0) shardlm_progress("uploading shard", (uint64_t)l + 1, (uint64_t)m->hp.n_layers);
    }
    return rc ? rc : shardlm_cuda_sync(dv->ctx, "uploading the model shard");
}

int shardlm_model_to_device(shardlm_model *m, int device)
{
    if (m->dev) {
        shardlm_err_set("the model is already on CUDA device %d", m->dev->device);
        return SHARDLM_EINPUT;
    }
    int rc = check_all(m);
    if (rc) return rc;
    shardlm_model_dev *dv = calloc(1, sizeof *dv);
    if (!dv) return SHARDLM_ENOMEM;
    dv->device = device;
    dv->n_layers = m->hp.n_layers;
    if ((rc = shardlm_cuda_ctx_new(device, &dv->ctx))) {
        free(dv);
        return rc;
    }
    if (!(dv->layers = calloc((size_t)m->hp.n_layers, sizeof *dv->layers))) rc = SHARDLM_ENOMEM;
    if (!rc) rc = upload_all(dv, m);
    if (rc) { /* the host copy is intact: the model still runs on the CPU */
        shardlm_dev_model_free(dv);
        return rc;
    }
    drop_host_weights(m);
    m->dev = dv;
    return SHARDLM_OK;
}

int shardlm_model_device(const shardlm_model *m) { return m->dev ? m->dev->device : -1; }

/* ---- state: the paged KV cache and the activations, on the device ---- */

void shardlm_dev_state_free(shardlm_state_dev *d)
{
    if (!d) return;
    shardlm_cuda_ctx *c = d->ctx;
    float *bufs[] = {d->kv.d_k, d->kv.d_v, d->x, d->xb, d->xb2, d->q, d->att, d->k, d->v, d->hb, d->hb2,
                     d->lg_local, d->lg_all};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) shardlm_cuda_release(c, bufs[i]);
    shardlm_cuda_release(c, d->tokens);
    shardlm_cuda_release(c, d->pos);
    shardlm_cuda_release(c, d->seq);
    shardlm_cuda_release(c, d->tables);
    free(d->h_tables);
    free(d->h_stage);
    free(d->h_lg_all);
    free(d->gather_bytes);
    free(d);
}

static int dalloc(shardlm_state_dev *d, void *p, size_t bytes, const char *what)
{
    return shardlm_cuda_alloc(d->ctx, (void **)p, bytes, what);
}

static int state_buffers(shardlm_state_dev *d, const shardlm_model *m, size_t kv_floats)
{
    const shardlm_shard_plan *p = &m->plan;
    size_t B = (size_t)d->max_batch, dim = (size_t)m->hp.dim, f = sizeof(float);
    size_t qw = (size_t)p->n_q_heads * m->hp.head_dim, kvw = (size_t)d->kv.kv_width;
    int rc = dalloc(d, &d->kv.d_k, kv_floats * f, "the K cache");
    if (!rc) rc = dalloc(d, &d->kv.d_v, kv_floats * f, "the V cache");
    if (!rc) rc = shardlm_cuda_zero(d->ctx, d->kv.d_k, kv_floats * f);
    if (!rc) rc = shardlm_cuda_zero(d->ctx, d->kv.d_v, kv_floats * f);
    if (!rc) rc = dalloc(d, &d->x, B * dim * f, "activations");
    if (!rc) rc = dalloc(d, &d->xb, B * dim * f, "activations");
    if (!rc) rc = dalloc(d, &d->xb2, B * dim * f, "activations");
    if (!rc) rc = dalloc(d, &d->q, B * qw * f, "queries");
    if (!rc) rc = dalloc(d, &d->att, B * qw * f, "attention output");
    if (!rc) rc = dalloc(d, &d->k, B * kvw * f, "keys");
    if (!rc) rc = dalloc(d, &d->v, B * kvw * f, "values");
    if (!rc) rc = dalloc(d, &d->hb, B * p->n_ffn * f, "FFN activations");
    if (!rc) rc = dalloc(d, &d->hb2, B * p->n_ffn * f, "FFN activations");
    if (!rc) rc = dalloc(d, &d->lg_local, B * p->n_vocab * f, "logits");
    if (!rc && p->rank == 0) rc = dalloc(d, &d->lg_all, B * m->hp.vocab * f, "gathered logits");
    if (!rc) rc = dalloc(d, &d->tokens, B * sizeof(int32_t), "batch tokens");
    if (!rc) rc = dalloc(d, &d->pos, B * sizeof(int32_t), "batch positions");
    if (!rc) rc = dalloc(d, &d->seq, B * sizeof(int32_t), "batch sequences");
    size_t stage = B * (dim > (size_t)p->n_vocab ? dim : (size_t)p->n_vocab);
    if (!rc && !(d->h_stage = malloc(stage * f))) rc = SHARDLM_ENOMEM;
    if (!rc && p->rank == 0 && !(d->h_lg_all = malloc(B * m->hp.vocab * f))) rc = SHARDLM_ENOMEM;
    if (!rc && !(d->gather_bytes = calloc((size_t)p->world, sizeof(size_t)))) rc = SHARDLM_ENOMEM;
    return rc ? rc : shardlm_cuda_sync(d->ctx, "allocating the KV cache");
}

int shardlm_dev_state_new(const shardlm_model *m, int n_blocks, int block_size, int max_batch, shardlm_state_dev **out)
{
    *out = NULL;
    shardlm_state_dev *d = calloc(1, sizeof *d);
    if (!d) return SHARDLM_ENOMEM;
    d->ctx = m->dev->ctx;
    d->max_batch = max_batch;
    d->kv.n_blocks = n_blocks;
    d->kv.block_size = block_size;
    d->kv.kv_width = m->plan.n_kv_heads * m->hp.head_dim;
    size_t kv = (size_t)m->hp.n_layers * (size_t)n_blocks * (size_t)block_size * (size_t)d->kv.kv_width;
    int rc = state_buffers(d, m, kv);
    if (rc) {
        shardlm_dev_state_free(d);
        return rc;
    }
    *out = d;
    return SHARDLM_OK;
}

/* ---- one step ---- */

/* Tokens, positions, sequences and the block tables (one row per sequence,
 * as long as this step's furthest position needs) go to the device. */
static int upload_batch(shardlm_state_dev *d, const shardlm_batch *b)
{
    int stride = 1;
    for (int i = 0; i < b->n; i++)
        if (b->pos[i] / d->kv.block_size + 1 > stride) stride = b->pos[i] / d->kv.block_size + 1;
    size_t need = (size_t)b->n_seqs * (size_t)stride;
    if (need > d->tables_cap) {
        int32_t *h = realloc(d->h_tables, need * sizeof(int32_t));
        if (!h) return SHARDLM_ENOMEM;
        d->h_tables = h;
        int rc = shardlm_cuda_sync(d->ctx, "growing the block tables"); /* the old one may be in use */
        shardlm_cuda_release(d->ctx, d->tables);
        d->tables = NULL;
        d->tables_cap = 0;
        if (rc || (rc = dalloc(d, &d->tables, need * sizeof(int32_t), "block tables"))) return rc;
        d->tables_cap = need;
    }
    memset(d->h_tables, 0, need * sizeof(int32_t));
    for (int q = 0; q < b->n_seqs; q++) {
        int len = b->table_len[q] < stride ? b->table_len[q] : stride;
        if (len > 0) memcpy(d->h_tables + (size_t)q * stride, b->tables[q], (size_t)len * sizeof(int32_t));
    }
    d->kv.d_tables = d->tables;
    d->kv.table_stride = stride;
    d->kv.d_seq = d->seq;
    d->kv.d_pos = d->pos;
    size_t nb = (size_t)b->n * sizeof(int32_t);
    int rc = shardlm_cuda_upload(d->ctx, d->tokens, b->tokens, nb);
    if (!rc) rc = shardlm_cuda_upload(d->ctx, d->pos, b->pos, nb);
    if (!rc) rc = shardlm_cuda_upload(d->ctx, d->seq, b->seq, nb);
    if (!rc) rc = shardlm_cuda_upload(d->ctx, d->tables, d->h_tables, need * sizeof(int32_t));
    return rc;
}

static int is_nccl(shardlm_comm *comm) { return strcmp(shardlm_comm_name(comm), "nccl") == 0; }

/* Sums xb2 over the ranks: NCCL reads device memory (once the stream has
 * produced it); other transports get a host copy. */
static int allreduce(shardlm_state_dev *d, shardlm_comm *comm, size_t n, int timeout_ms, uint64_t *ns)
{
    if (shardlm_comm_size(comm) == 1) return SHARDLM_OK;
    uint64_t t0 = shardlm_now_ns();
    int rc = is_nccl(comm) ? shardlm_cuda_sync(d->ctx, "the step before an all-reduce") : SHARDLM_OK;
    if (!rc && is_nccl(comm)) rc = shardlm_comm_allreduce_f32(comm, d->xb2, n, timeout_ms);
    else if (!rc) {
        rc = shardlm_cuda_download(d->ctx, d->h_stage, d->xb2, n * sizeof(float));
        if (!rc) rc = shardlm_comm_allreduce_f32(comm, d->h_stage, n, timeout_ms);
        if (!rc) rc = shardlm_cuda_upload(d->ctx, d->xb2, d->h_stage, n * sizeof(float));
    }
    *ns += shardlm_now_ns() - t0;
    return rc;
}

static int layer_forward(const shardlm_model *m, shardlm_state_dev *d, shardlm_comm *comm, int l, int n,
                         int timeout_ms, uint64_t *ns)
{
    const shardlm_hparams *hp = &m->hp;
    const shardlm_shard_plan *p = &m->plan;
    const dlayer *ly = &m->dev->layers[l];
    shardlm_cuda_ctx *c = d->ctx;
    size_t dim = (size_t)hp->dim, N = (size_t)n;
    shardlm_cuda_heads heads = {p->n_q_heads, hp->head_dim, p->q_head0, p->kv_head0, hp->n_heads / hp->n_kv_heads};

    /* attention: column-parallel q/k/v, local heads, row-parallel o */
    int rc = shardlm_cuda_rmsnorm(c, d->xb, d->x, ly->attn_norm, n, dim, hp->eps);
    if (!rc) rc = shardlm_cuda_matmul(c, ly->wq.type, ly->wq.d, ly->wq.rows, ly->wq.cols, d->xb, N, d->q);
    if (!rc) rc = shardlm_cuda_matmul(c, ly->wk.type, ly->wk.d, ly->wk.rows, ly->wk.cols, d->xb, N, d->k);
    if (!rc) rc = shardlm_cuda_matmul(c, ly->wv.type, ly->wv.d, ly->wv.rows, ly->wv.cols, d->xb, N, d->v);
    if (!rc) rc = shardlm_cuda_rope(c, d->q, n, p->n_q_heads, hp->head_dim, hp->rope_dim, d->pos, hp->rope_base);
    if (!rc) rc = shardlm_cuda_rope(c, d->k, n, p->n_kv_heads, hp->head_dim, hp->rope_dim, d->pos, hp->rope_base);
    if (!rc) rc = shardlm_cuda_kv_store(c, &d->kv, l, d->k, d->v, n);
    if (!rc) rc = shardlm_cuda_attention(c, &d->kv, &heads, l, d->q, d->att, n);
    if (!rc) rc = shardlm_cuda_matmul(c, ly->wo.type, ly->wo.d, ly->wo.rows, ly->wo.cols, d->att, N, d->xb2);
    if (!rc) rc = allreduce(d, comm, N * dim, timeout_ms, ns);
    if (!rc) rc = shardlm_cuda_add(c, d->x, d->xb2, N * dim);

    /* SwiGLU MLP: column-parallel gate/up, row-parallel down */
    if (!rc) rc = shardlm_cuda_rmsnorm(c, d->xb, d->x, ly->ffn_norm, n, dim, hp->eps);
    if (!rc) rc = shardlm_cuda_matmul(c, ly->w_gate.type, ly->w_gate.d, ly->w_gate.rows, ly->w_gate.cols, d->xb, N, d->hb);
    if (!rc) rc = shardlm_cuda_matmul(c, ly->w_up.type, ly->w_up.d, ly->w_up.rows, ly->w_up.cols, d->xb, N, d->hb2);
    if (!rc) rc = shardlm_cuda_silu_mul(c, d->hb, d->hb2, N * (size_t)p->n_ffn);
    if (!rc) rc = shardlm_cuda_matmul(c, ly->w_down.type, ly->w_down.d, ly->w_down.rows, ly->w_down.cols, d->hb, N, d->xb2);
    if (!rc) rc = allreduce(d, comm, N * dim, timeout_ms, ns);
    if (!rc) rc = shardlm_cuda_add(c, d->x, d->xb2, N * dim);
    return rc;
}

/* The local vocabulary slices of the wanted rows go to rank 0: device to
 * device over NCCL, else through host memory. Returns them in h_lg_all. */
static int gather_logits(const shardlm_model *m, shardlm_state_dev *d, shardlm_comm *comm, int nw, int timeout_ms)
{
    const shardlm_shard_plan *p = &m->plan;
    size_t f = sizeof(float), total = (size_t)nw * m->hp.vocab * f;
    for (int r = 0; r < p->world; r++) d->gather_bytes[r] = (size_t)nw * m->vocab_counts[r] * f;
    int rc;
    if (is_nccl(comm)) {
        rc = shardlm_cuda_sync(d->ctx, "the step before the logits gather");
        if (!rc) rc = shardlm_comm_gatherv(comm, d->lg_local, d->gather_bytes, d->lg_all, timeout_ms);
        if (!rc && p->rank == 0) rc = shardlm_cuda_download(d->ctx, d->h_lg_all, d->lg_all, total);
        return rc;
    }
    rc = shardlm_cuda_download(d->ctx, d->h_stage, d->lg_local, d->gather_bytes[p->rank]);
    return rc ? rc : shardlm_comm_gatherv(comm, d->h_stage, d->gather_bytes, d->h_lg_all, timeout_ms);
}

static int logits_forward(const shardlm_model *m, shardlm_state_dev *d, shardlm_comm *comm, const uint8_t *want, int n,
                          float *logits, int timeout_ms)
{
    const shardlm_hparams *hp = &m->hp;
    const dmat *out = &m->dev->output;
    size_t dim = (size_t)hp->dim, rowb = dim * sizeof(float);
    int nw = 0, rc = SHARDLM_OK;
    for (int i = 0; !rc && i < n; i++)
        if (want[i]) rc = shardlm_cuda_copy(d->ctx, d->xb2 + (size_t)nw++ * dim, d->x + (size_t)i * dim, rowb);
    if (rc || nw == 0) return rc;
    rc = shardlm_cuda_rmsnorm(d->ctx, d->xb, d->xb2, m->dev->output_norm, nw, dim, hp->eps);
    if (!rc) rc = shardlm_cuda_matmul(d->ctx, out->type, out->d, out->rows, out->cols, d->xb, (size_t)nw, d->lg_local);
    if (!rc) rc = gather_logits(m, d, comm, nw, timeout_ms);
    if (rc || m->plan.rank != 0 || !logits) return rc;
    const float *src = d->h_lg_all;
    for (int r = 0, v0 = 0; r < m->plan.world; v0 += m->vocab_counts[r], r++) {
        int nv = m->vocab_counts[r];
        for (int i = 0; i < nw; i++, src += nv) memcpy(logits + (size_t)i * hp->vocab + v0, src, nv * sizeof(float));
    }
    return SHARDLM_OK;
}

int shardlm_dev_forward(const shardlm_model *m, shardlm_state_dev *d, shardlm_comm *comm, const shardlm_batch *b,
                        float *logits, int timeout_ms, uint64_t *allreduce_ns)
{
    const dmat *emb = &m->dev->tok_embd;
    int rc = upload_batch(d, b);
    if (!rc) rc = shardlm_cuda_embed(d->ctx, emb->type, emb->d, (size_t)m->hp.dim, d->tokens, b->n, d->x);
    for (int l = 0; !rc && l < m->hp.n_layers; l++) rc = layer_forward(m, d, comm, l, b->n, timeout_ms, allreduce_ns);
    if (!rc) rc = logits_forward(m, d, comm, b->want, b->n, logits, timeout_ms);
    /* a step ends with the device idle, so a kernel fault shows here */
    return rc ? rc : shardlm_cuda_sync(d->ctx, "the forward step");
}
