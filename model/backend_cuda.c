/* backend_cuda.c - the CUDA implementation of the backend table, and the
 * upload that puts a loaded shard on a device. After
 * shardlm_model_to_device every weight pointer of the model (matrices and
 * vectors) is device memory and the model's backend is this one, so the
 * one layer walker (forward.c) runs the same steps on the GPU: every
 * operation is a kernel enqueued on the context's stream.
 *
 * Collectives get device pointers when the communicator takes them
 * (SHARDLM_COMM_CAP_DEVICE_MEM: NCCL); any other (local, ring, mpi) gets
 * host memory, staged through a host buffer. Compiled in every build:
 * without CUDA the shardlm_cuda_* calls fail with "built without CUDA". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h" /* shardlm_r8/r4_gather_row: repacked rows back to plain */
#include "model_internal.h"
#include "shardlm_common.h"
#include "shardlm_cuda.h"

typedef struct shardlm_model_dev {
    shardlm_cuda_ctx *ctx;
    int device;
} shardlm_model_dev;

/* ---- upload ---- */

/* The name a weight has in the GGUF, for messages. */
static const char *weight_name(char *buf, size_t cap, int layer, const char *what)
{
    if (layer < 0) snprintf(buf, cap, "%s", what);
    else snprintf(buf, cap, "blk.%d.%s", layer, what);
    return buf;
}

static int check_type(const shardlm_mat *h, int layer, const char *what)
{
    if (shardlm_cuda_dtype_ok(h->type) || h->type == SHARDLM_DT_Q4_0_R8 || h->type == SHARDLM_DT_Q8_0_R4)
        return SHARDLM_OK;
    char n[96];
    shardlm_err_set("tensor '%s' has type %s, which the CUDA backend cannot compute with (it takes f32, f16, bf16, "
                    "q8_0 and q4_0); run this model with --device cpu", weight_name(n, sizeof n, layer, what),
                    shardlm_dtype_name(h->type));
    return SHARDLM_EINPUT;
}

/* Every type is checked before any memory is allocated. */
static int check_all(shardlm_model *m)
{
    shardlm_weight w[SHARDLM_MAX_WEIGHTS];
    for (int l = -1; l < m->hp.n_layers; l++) {
        int n = shardlm_model_weights(m, l, w);
        for (int i = 0; i < n; i++) {
            int rc = w[i].mat ? check_type(w[i].mat, l, w[i].name) : SHARDLM_OK;
            if (rc) return rc;
        }
    }
    return SHARDLM_OK;
}

/* The device copy of a matrix. Q4_0_R8 and Q8_0_R4 are CPU-only
 * interleavings: their rows go back to plain Q4_0 / Q8_0. */
static int upload_mat(shardlm_cuda_ctx *c, const shardlm_mat *h, const char *name, void **out)
{
    int r8 = h->type == SHARDLM_DT_Q4_0_R8, r4 = h->type == SHARDLM_DT_Q8_0_R4;
    shardlm_dtype t = r8 ? SHARDLM_DT_Q4_0 : r4 ? SHARDLM_DT_Q8_0 : h->type;
    size_t rb = shardlm_dtype_row_bytes(t, h->cols), bytes = rb * h->rows;
    int rc = shardlm_cuda_alloc(c, out, bytes, name);
    if (rc) return rc;
    if (!r8 && !r4) return shardlm_cuda_upload(c, *out, h->data, bytes);
    uint8_t *plain = malloc(bytes ? bytes : 1);
    if (!plain) return SHARDLM_ENOMEM;
    for (size_t r = 0; r < h->rows; r++)
        (r8 ? shardlm_r8_gather_row : shardlm_r4_gather_row)(h->data, h->rows, h->cols, r, plain + r * rb);
    rc = shardlm_cuda_upload(c, *out, plain, bytes);
    if (!rc) rc = shardlm_cuda_sync(c, "uploading a repacked tensor"); /* plain is freed next */
    free(plain);
    return rc;
}

static int upload_weight(shardlm_cuda_ctx *c, const shardlm_weight *w, int layer, void **out)
{
    char n[96];
    weight_name(n, sizeof n, layer, w->name);
    if (w->mat) return upload_mat(c, w->mat, n, out);
    if (!*w->vec) return SHARDLM_OK; /* an optional vector the file lacks */
    int rc = shardlm_cuda_alloc(c, out, w->n * sizeof(float), n);
    return rc ? rc : shardlm_cuda_upload(c, *out, *w->vec, w->n * sizeof(float));
}

/* d[(l + 1) * SHARDLM_MAX_WEIGHTS + i]: the device copy of weight i of layer l. */
static int upload_all(shardlm_model *m, shardlm_cuda_ctx *c, void **d)
{
    shardlm_weight w[SHARDLM_MAX_WEIGHTS];
    int rc = SHARDLM_OK;
    for (int l = -1; !rc && l < m->hp.n_layers; l++) {
        int n = shardlm_model_weights(m, l, w);
        for (int i = 0; !rc && i < n; i++) rc = upload_weight(c, &w[i], l, &d[(size_t)(l + 1) * SHARDLM_MAX_WEIGHTS + i]);
        if (!rc && l >= 0 && m->plan.rank == 0)
            shardlm_progress("uploading shard", (uint64_t)l + 1, (uint64_t)m->hp.n_layers);
    }
    return rc ? rc : shardlm_cuda_sync(c, "uploading the model shard");
}

/* The host copies are dropped once the device has them: only the device
 * path runs this model from now on. */
static void swap_to_device(shardlm_model *m, void **d)
{
    shardlm_weight w[SHARDLM_MAX_WEIGHTS];
    for (int l = -1; l < m->hp.n_layers; l++) {
        int n = shardlm_model_weights(m, l, w);
        for (int i = 0; i < n; i++) {
            void *dp = d[(size_t)(l + 1) * SHARDLM_MAX_WEIGHTS + i];
            if (w[i].mat) {
                shardlm_mat *h = w[i].mat;
                free(h->data);
                h->data = dp;
                if (h->type == SHARDLM_DT_Q4_0_R8) h->type = SHARDLM_DT_Q4_0;
                if (h->type == SHARDLM_DT_Q8_0_R4) h->type = SHARDLM_DT_Q8_0;
            } else {
                free(*w[i].vec);
                *w[i].vec = dp;
            }
        }
    }
}

int shardlm_model_to_device(shardlm_model *m, int device)
{
    if (m->dev) {
        shardlm_err_set("the model is already on CUDA device %d", m->dev->device);
        return SHARDLM_EINPUT;
    }
    int rc = check_all(m);
    if (rc) return rc;
    size_t slots = ((size_t)m->hp.n_layers + 1) * SHARDLM_MAX_WEIGHTS;
    void **d = calloc(slots, sizeof *d);
    shardlm_model_dev *dv = calloc(1, sizeof *dv);
    if (!d || !dv) rc = SHARDLM_ENOMEM;
    if (!rc) rc = shardlm_cuda_ctx_new(device, &dv->ctx);
    if (!rc) rc = upload_all(m, dv->ctx, d);
    if (rc) { /* the host copy is intact: the model still runs on the CPU */
        for (size_t i = 0; d && dv && i < slots; i++) shardlm_cuda_release(dv->ctx, d[i]);
        if (dv) shardlm_cuda_ctx_free(dv->ctx);
        free(dv), free(d);
        return rc;
    }
    swap_to_device(m, d);
    free(d);
    dv->device = device;
    m->dev = dv;
    m->be = &shardlm_backend_cuda;
    return SHARDLM_OK;
}

void shardlm_dev_model_free(shardlm_model *m)
{
    shardlm_model_dev *dv = m->dev;
    if (!dv) return;
    shardlm_weight w[SHARDLM_MAX_WEIGHTS];
    for (int l = -1; l < m->hp.n_layers && (l < 0 || m->layers); l++) {
        int n = shardlm_model_weights(m, l, w);
        for (int i = 0; i < n; i++) {
            void **p = w[i].mat ? &w[i].mat->data : (void **)w[i].vec;
            shardlm_cuda_release(dv->ctx, *p);
            *p = NULL;
        }
    }
    shardlm_cuda_ctx_free(dv->ctx);
    free(dv);
    m->dev = NULL;
}

int shardlm_model_device(const shardlm_model *m) { return m->dev ? m->dev->device : -1; }

/* ---- state: the paged KV cache and the activations, on the device ---- */

typedef struct {
    shardlm_cuda_ctx *ctx; /* the model's */
    shardlm_cuda_kv kv;    /* cache and this step's tables, all on the device */
    int32_t *tokens, *pos, *seq, *tables;
    size_t tables_cap; /* int32s in tables and h_tables */
    int32_t *h_tables;
    float *h_stage;  /* host side of all-reduces and the gather (host-memory transports) */
    float *d_lg_all; /* rank 0: the gather's target for device-memory transports */
    float *d_freq;   /* [rope_dim / 2] RoPE inverse frequencies (factors and scale applied) */
} cuda_state;

static void cuda_state_free(shardlm_state *s)
{
    cuda_state *d = s->bs;
    if (!d) return;
    shardlm_cuda_ctx *c = d->ctx;
    shardlm_acts *a = &s->a;
    float *bufs[] = {d->kv.d_k, d->kv.d_v, a->x, a->xb, a->xb2, a->q, a->att, a->k, a->v, a->hb, a->hb2,
                     a->lg_local, d->d_lg_all, d->d_freq};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) shardlm_cuda_release(c, bufs[i]);
    memset(a, 0, sizeof *a);
    shardlm_cuda_release(c, d->tokens);
    shardlm_cuda_release(c, d->pos);
    shardlm_cuda_release(c, d->seq);
    shardlm_cuda_release(c, d->tables);
    free(d->h_tables);
    free(d->h_stage);
    free(d);
    s->bs = NULL;
}

static int dalloc(cuda_state *d, void *p, size_t bytes, const char *what)
{
    return shardlm_cuda_alloc(d->ctx, (void **)p, bytes, what);
}

/* The CPU's frequency table (shardlm_rope_freqs_ext), so both agree. */
static int upload_freqs(shardlm_state *s, cuda_state *d)
{
    const shardlm_hparams *hp = &s->m->hp;
    size_t n = (size_t)hp->rope_dim / 2 + 1;
    float *h = malloc(n * sizeof(float));
    if (!h) return SHARDLM_ENOMEM;
    shardlm_rope_freqs_ext(h, hp->rope_dim, hp->rope_base, hp->rope_freq_scale, s->m->rope_factors);
    int rc = dalloc(d, &d->d_freq, n * sizeof(float), "RoPE frequencies");
    if (!rc) rc = shardlm_cuda_upload(d->ctx, d->d_freq, h, n * sizeof(float));
    if (!rc) rc = shardlm_cuda_sync(d->ctx, "uploading the RoPE frequencies"); /* h is freed next */
    free(h);
    return rc;
}

static int state_buffers(shardlm_state *s, cuda_state *d, size_t kv_floats)
{
    const shardlm_shard_plan *p = &s->m->plan;
    shardlm_acts *a = &s->a;
    size_t B = (size_t)s->max_batch, dim = (size_t)s->m->hp.dim, f = sizeof(float);
    size_t qw = (size_t)p->n_q_heads * s->m->hp.head_dim, kvw = (size_t)d->kv.kv_width;
    int rc = dalloc(d, &d->kv.d_k, kv_floats * f, "the K cache");
    if (!rc) rc = dalloc(d, &d->kv.d_v, kv_floats * f, "the V cache");
    if (!rc) rc = shardlm_cuda_zero(d->ctx, d->kv.d_k, kv_floats * f);
    if (!rc) rc = shardlm_cuda_zero(d->ctx, d->kv.d_v, kv_floats * f);
    if (!rc) rc = dalloc(d, &a->x, B * dim * f, "activations");
    if (!rc) rc = dalloc(d, &a->xb, B * dim * f, "activations");
    if (!rc) rc = dalloc(d, &a->xb2, B * dim * f, "activations");
    if (!rc) rc = dalloc(d, &a->q, B * qw * f, "queries");
    if (!rc) rc = dalloc(d, &a->att, B * qw * f, "attention output");
    if (!rc) rc = dalloc(d, &a->k, B * kvw * f, "keys");
    if (!rc) rc = dalloc(d, &a->v, B * kvw * f, "values");
    if (!rc) rc = dalloc(d, &a->hb, B * p->n_ffn * f, "FFN activations");
    if (!rc) rc = dalloc(d, &a->hb2, B * p->n_ffn * f, "FFN activations");
    if (!rc) rc = dalloc(d, &a->lg_local, B * p->n_vocab * f, "logits");
    if (!rc && p->rank == 0) rc = dalloc(d, &d->d_lg_all, B * s->m->hp.vocab * f, "gathered logits");
    if (!rc) rc = dalloc(d, &d->tokens, B * sizeof(int32_t), "batch tokens");
    if (!rc) rc = dalloc(d, &d->pos, B * sizeof(int32_t), "batch positions");
    if (!rc) rc = dalloc(d, &d->seq, B * sizeof(int32_t), "batch sequences");
    size_t stage = B * (dim > (size_t)p->n_vocab ? dim : (size_t)p->n_vocab);
    if (!rc && !(d->h_stage = malloc(stage * f))) rc = SHARDLM_ENOMEM;
    if (!rc) rc = upload_freqs(s, d);
    return rc ? rc : shardlm_cuda_sync(d->ctx, "allocating the KV cache");
}

static int cuda_state_new(shardlm_state *s)
{
    cuda_state *d = calloc(1, sizeof *d);
    if (!d) return SHARDLM_ENOMEM;
    s->bs = d;
    d->ctx = s->m->dev->ctx;
    d->kv.n_blocks = s->n_blocks;
    d->kv.block_size = s->block_size;
    d->kv.kv_width = s->m->plan.n_kv_heads * s->m->hp.head_dim;
    size_t kv = (size_t)s->m->hp.n_layers * (size_t)s->n_blocks * (size_t)s->block_size * (size_t)d->kv.kv_width;
    return state_buffers(s, d, kv);
}

/* ---- one step ---- */

/* Tokens, positions, sequences and the block tables (one row per sequence,
 * as long as this step's furthest position needs) go to the device. */
static int cuda_begin(shardlm_state *s, const shardlm_batch *b)
{
    cuda_state *d = s->bs;
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

/* A step ends with the device idle, so a kernel fault shows here. */
static int cuda_end(shardlm_state *s) { return shardlm_cuda_sync(((cuda_state *)s->bs)->ctx, "the forward step"); }

static shardlm_cuda_ctx *ctx_of(shardlm_state *s) { return ((cuda_state *)s->bs)->ctx; }

static int cuda_embed(shardlm_state *s, const shardlm_mat *t, const shardlm_batch *b, float *x)
{
    return shardlm_cuda_embed(ctx_of(s), t->type, t->data, t->cols, ((cuda_state *)s->bs)->tokens, b->n, x);
}

static int cuda_rmsnorm(shardlm_state *s, float *out, const float *x, const float *w, int rows, int dim, float eps)
{
    return shardlm_cuda_rmsnorm(ctx_of(s), out, x, w, rows, (size_t)dim, eps);
}

static int cuda_matmul(shardlm_state *s, const shardlm_mat *w, const float *x, int n, float *y)
{
    return shardlm_cuda_matmul(ctx_of(s), w->type, w->data, w->rows, w->cols, x, (size_t)n, y);
}

static int cuda_add_bias(shardlm_state *s, float *y, const float *bias, int rows, int width)
{
    return shardlm_cuda_add_bias(ctx_of(s), y, bias, rows, (size_t)width);
}

static int cuda_rope(shardlm_state *s, float *q, int n_q_heads, float *k, int n_kv_heads, const shardlm_batch *b)
{
    const shardlm_hparams *hp = &s->m->hp;
    cuda_state *d = s->bs;
    int hd = hp->head_dim, rd = hp->rope_dim, neox = hp->rope_neox;
    int rc = shardlm_cuda_rope_freqs(d->ctx, q, b->n, n_q_heads, hd, rd, d->pos, d->d_freq, neox);
    return rc ? rc : shardlm_cuda_rope_freqs(d->ctx, k, b->n, n_kv_heads, hd, rd, d->pos, d->d_freq, neox);
}

static int cuda_kv_store(shardlm_state *s, int l, const float *k, const float *v, const shardlm_batch *b)
{
    cuda_state *d = s->bs;
    return shardlm_cuda_kv_store(d->ctx, &d->kv, l, k, v, b->n);
}

static int cuda_attention(shardlm_state *s, int l, const float *q, float *out, const shardlm_batch *b)
{
    const shardlm_hparams *hp = &s->m->hp;
    const shardlm_shard_plan *p = &s->m->plan;
    cuda_state *d = s->bs;
    shardlm_cuda_heads heads = {p->n_q_heads, hp->head_dim, p->q_head0, p->kv_head0, hp->n_heads / hp->n_kv_heads};
    return shardlm_cuda_attention(d->ctx, &d->kv, &heads, l, q, out, b->n);
}

static int cuda_add(shardlm_state *s, float *x, const float *y, size_t n) { return shardlm_cuda_add(ctx_of(s), x, y, n); }

static int cuda_silu_mul(shardlm_state *s, float *a, const float *b, size_t n)
{
    return shardlm_cuda_silu_mul(ctx_of(s), a, b, n);
}

static int cuda_copy(shardlm_state *s, float *dst, const float *src, size_t n)
{
    return shardlm_cuda_copy(ctx_of(s), dst, src, n * sizeof(float));
}

/* A device-memory transport reads the buffer once the stream has produced
 * it; others get a host copy. */
static int cuda_allreduce(shardlm_state *s, shardlm_comm *comm, float *buf, size_t n, int timeout_ms)
{
    cuda_state *d = s->bs;
    if (shardlm_comm_has(comm, SHARDLM_COMM_CAP_DEVICE_MEM)) {
        int rc = shardlm_cuda_sync(d->ctx, "the step before an all-reduce");
        return rc ? rc : shardlm_comm_allreduce_f32(comm, buf, n, timeout_ms);
    }
    int rc = shardlm_cuda_download(d->ctx, d->h_stage, buf, n * sizeof(float));
    if (!rc) rc = shardlm_comm_allreduce_f32(comm, d->h_stage, n, timeout_ms);
    if (!rc) rc = shardlm_cuda_upload(d->ctx, buf, d->h_stage, n * sizeof(float));
    return rc;
}

/* The local vocabulary slices go to rank 0: device to device when the
 * transport takes device memory, else through host memory. */
static int cuda_gather(shardlm_state *s, shardlm_comm *comm, const float *local, float *recv, int timeout_ms)
{
    cuda_state *d = s->bs;
    const shardlm_shard_plan *p = &s->m->plan;
    size_t total = 0;
    for (int r = 0; r < p->world; r++) total += s->gather_bytes[r];
    if (shardlm_comm_has(comm, SHARDLM_COMM_CAP_DEVICE_MEM)) {
        int rc = shardlm_cuda_sync(d->ctx, "the step before the logits gather");
        if (!rc) rc = shardlm_comm_gatherv(comm, local, s->gather_bytes, d->d_lg_all, timeout_ms);
        if (!rc && p->rank == 0) rc = shardlm_cuda_download(d->ctx, recv, d->d_lg_all, total);
        return rc;
    }
    int rc = shardlm_cuda_download(d->ctx, d->h_stage, local, s->gather_bytes[p->rank]);
    return rc ? rc : shardlm_comm_gatherv(comm, d->h_stage, s->gather_bytes, recv, timeout_ms);
}

const shardlm_backend shardlm_backend_cuda = {
    .name = "cuda",
    .state_new = cuda_state_new,
    .state_free = cuda_state_free,
    .begin = cuda_begin,
    .end = cuda_end,
    .embed = cuda_embed,
    .rmsnorm = cuda_rmsnorm,
    .matmul = cuda_matmul,
    .add_bias = cuda_add_bias,
    .rope = cuda_rope,
    .kv_store = cuda_kv_store,
    .attention = cuda_attention,
    .add = cuda_add,
    .silu_mul = cuda_silu_mul,
    .copy = cuda_copy,
    .allreduce = cuda_allreduce,
    .gather = cuda_gather,
};
