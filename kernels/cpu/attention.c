/* attention.c - causal attention over the paged KV cache, in one pass per
 * (token, KV head) with an online softmax: positions are taken in tiles of
 * SHARDLM_ATTN_TILE; each tile's scores raise the running maximum, the
 * accumulated output and sum are rescaled once for the tile, and the tile's
 * V rows are added with weights exp(score - max). Every query head that
 * shares the KV head is processed with the same tile, so each K and V row
 * is read from memory once per token however large the GQA group is.
 *
 * Also the KV row formats (F32, F16, Q8_0 per head row) and the scalar
 * pieces; the AVX2 pieces are in attention_avx2.c. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "attention_internal.h"
#include "cpu_internal.h"

/* ---- KV row formats ---- */

static int kv_chunks(int hd) { return (hd + SHARDLM_QK - 1) / SHARDLM_QK; }

size_t shardlm_kv_row_bytes(shardlm_dtype t, int head_dim)
{
    if (head_dim < 1) return 0;
    switch (t) {
    case SHARDLM_DT_F32: return (size_t)head_dim * 4;
    case SHARDLM_DT_F16: return (size_t)head_dim * 2;
    case SHARDLM_DT_Q8_0: return (size_t)kv_chunks(head_dim) * 2 + (size_t)head_dim;
    default: return 0;
    }
}

static void kv_store_q8(const float *x, int hd, uint8_t *row)
{
    int8_t *q = (int8_t *)(row + 2 * kv_chunks(hd));
    for (int c = 0; c * SHARDLM_QK < hd; c++) {
        int e0 = c * SHARDLM_QK, n = hd - e0 < SHARDLM_QK ? hd - e0 : SHARDLM_QK;
        float amax = 0.0f;
        for (int e = 0; e < n; e++) amax = fmaxf(amax, fabsf(x[e0 + e]));
        float d = amax / 127.0f, id = d > 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = shardlm_f32_to_f16(d);
        memcpy(row + 2 * c, &dh, 2);
        for (int e = 0; e < n; e++) {
            float v = nearbyintf(x[e0 + e] * id);
            q[e0 + e] = (int8_t)(v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v);
        }
    }
}

void shardlm_kv_store(shardlm_dtype t, const float *x, int head_dim, void *row)
{
    if (t == SHARDLM_DT_F32) memcpy(row, x, (size_t)head_dim * sizeof(float));
    else if (t == SHARDLM_DT_F16)
        for (int i = 0; i < head_dim; i++) {
            uint16_t h = shardlm_f32_to_f16(x[i]);
            memcpy((uint8_t *)row + 2 * i, &h, 2);
        }
    else if (t == SHARDLM_DT_Q8_0) kv_store_q8(x, head_dim, row);
}

void shardlm_kv_load(shardlm_dtype t, const void *row, int head_dim, float *x)
{
    const uint8_t *r = row;
    if (t == SHARDLM_DT_F32) memcpy(x, row, (size_t)head_dim * sizeof(float));
    else if (t == SHARDLM_DT_F16)
        for (int i = 0; i < head_dim; i++) x[i] = shardlm_f16_to_f32(shardlm_rd16(r + 2 * i));
    else if (t == SHARDLM_DT_Q8_0) {
        const int8_t *q = (const int8_t *)(r + 2 * kv_chunks(head_dim));
        for (int i = 0; i < head_dim; i++) x[i] = shardlm_f16_to_f32(shardlm_rd16(r + 2 * (i / SHARDLM_QK))) * q[i];
    }
}

/* ---- scalar pieces ---- */

static void scalar_rows_to_f32(shardlm_dtype t, const uint8_t *const *rows, int nt, int hd, float *dst)
{
    for (int u = 0; u < nt; u++) shardlm_kv_load(t, rows[u], hd, dst + (size_t)u * hd);
}

static void scalar_scores(const float *q, int g, const float *const *k, int nt, int hd, float scale, float *s)
{
    for (int j = 0; j < g; j++)
        for (int u = 0; u < nt; u++) {
            float dot = 0.0f;
            for (int i = 0; i < hd; i++) dot += q[(size_t)j * hd + i] * k[u][i];
            s[j * SHARDLM_ATTN_TILE + u] = dot * scale;
        }
}

static float scalar_exp_sum(float *s, int n, float m)
{
    float sum = 0.0f;
    for (int u = 0; u < n; u++) sum += s[u] = expf(s[u] - m);
    return sum;
}

static void scalar_accumulate(float *acc, const float *c, const float *p, int g, const float *const *v, int nt, int hd)
{
    for (int j = 0; j < g; j++) {
        float *a = acc + (size_t)j * hd;
        for (int i = 0; i < hd; i++) a[i] *= c[j];
        for (int u = 0; u < nt; u++)
            for (int i = 0; i < hd; i++) a[i] += p[j * SHARDLM_ATTN_TILE + u] * v[u][i];
    }
}

const shardlm_attn_ops shardlm_attn_scalar = {scalar_rows_to_f32, scalar_scores, scalar_exp_sum, scalar_accumulate};

/* ---- the driver ---- */

typedef struct {
    const shardlm_kv_view *kv;
    const shardlm_attn_batch *b;
    const shardlm_attn_ops *ops;
    size_t row_bytes;
    int gmax;           /* most query heads one KV head serves on this rank */
    float *scratch;     /* per thread: per_thread floats */
    size_t per_thread;
    _Atomic int next;   /* next (token, KV head) item */
} attn_job;

static const shardlm_attn_ops *attn_pick(void)
{
#if defined(__x86_64__)
    /* every x86 path but scalar requires AVX2, FMA and F16C (matmul.c) */
    if (!strncmp(shardlm_kernels_isa(), "avx", 3)) return &shardlm_attn_avx2;
#endif
    return &shardlm_attn_scalar;
}

/* The local query heads [*h0, *h1) that use local KV head kh. */
static void attn_heads(const shardlm_attn_batch *b, int kh, int *h0, int *h1)
{
    int lo = (b->kv_head0 + kh) * b->group - b->q_head0, hi = lo + b->group;
    *h0 = lo < 0 ? 0 : lo;
    *h1 = hi > b->n_q_heads ? b->n_q_heads : hi;
}

/* Pointers to the tile's rows as f32: in place for F32, else converted into buf. */
static void attn_rows(const attn_job *j, const uint8_t *base, const int32_t *table, int kh, int t0, int nt,
                      float *buf, const float **out)
{
    const shardlm_kv_view *kv = j->kv;
    const uint8_t *rows[SHARDLM_ATTN_TILE] = {0}; /* zeroed: GCC cannot see nt <= the tile under ASan */
    for (int u = 0; u < nt; u++) {
        int t = t0 + u;
        size_t r = ((size_t)table[t / kv->block_size] * kv->block_size + (size_t)(t % kv->block_size)) * kv->n_kv_heads;
        rows[u] = base + (r + (size_t)kh) * j->row_bytes;
    }
    if (kv->type == SHARDLM_DT_F32) {
        for (int u = 0; u < nt; u++) out[u] = (const float *)(const void *)rows[u];
        return;
    }
    j->ops->rows_to_f32(kv->type, rows, nt, kv->head_dim, buf);
    for (int u = 0; u < nt; u++) out[u] = buf + (size_t)u * kv->head_dim;
}

/* One token i and one local KV head kh: all of its query heads. */
static void attn_item(const attn_job *j, int i, int kh, float *ws)
{
    const shardlm_attn_batch *b = j->b;
    const shardlm_attn_ops *ops = j->ops;
    int hd = j->kv->head_dim, h0, h1, T = SHARDLM_ATTN_TILE;
    attn_heads(b, kh, &h0, &h1);
    if (h0 >= h1) return;
    int g = h1 - h0, n_pos = b->pos[i] + 1;
    size_t qw = (size_t)b->n_q_heads * hd;
    const float *q = b->q + i * qw + (size_t)h0 * hd;
    const int32_t *table = b->tables[b->seq[i]];
    float *acc = ws, *m = acc + (size_t)j->gmax * hd, *l = m + j->gmax, *c = l + j->gmax;
    float *s = c + j->gmax, *kf = s + (size_t)j->gmax * T, *vf = kf + (size_t)T * hd;
    float scale = 1.0f / sqrtf((float)hd);
    memset(acc, 0, (size_t)g * hd * sizeof(float));
    for (int h = 0; h < g; h++) m[h] = -INFINITY, l[h] = 0.0f;
    const float *kp[SHARDLM_ATTN_TILE], *vp[SHARDLM_ATTN_TILE];
    for (int t0 = 0; t0 < n_pos; t0 += T) {
        int nt = n_pos - t0 < T ? n_pos - t0 : T;
        attn_rows(j, j->kv->k, table, kh, t0, nt, kf, kp);
        ops->scores(q, g, kp, nt, hd, scale, s);
        for (int h = 0; h < g; h++) { /* new running max; old sums rescaled by c */
            float *sh = s + h * T, mt = sh[0];
            for (int u = 1; u < nt; u++) mt = sh[u] > mt ? sh[u] : mt;
            float mn = mt > m[h] ? mt : m[h];
            c[h] = m[h] == -INFINITY ? 0.0f : expf(m[h] - mn);
            l[h] = l[h] * c[h] + ops->exp_sum(sh, nt, mn);
            m[h] = mn;
        }
        attn_rows(j, j->kv->v, table, kh, t0, nt, vf, vp);
        ops->accumulate(acc, c, s, g, vp, nt, hd);
    }
    float *out = b->out + i * qw + (size_t)h0 * hd;
    for (int h = 0; h < g; h++)
        for (int e = 0; e < hd; e++) out[(size_t)h * hd + e] = acc[(size_t)h * hd + e] / l[h];
}

static void attn_task(void *ctx, int tid, int nth)
{
    (void)nth;
    attn_job *j = ctx;
    int nkv = j->kv->n_kv_heads, items = j->b->n * nkv;
    float *ws = j->scratch + (size_t)tid * j->per_thread;
    for (;;) {
        int w = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (w >= items) return;
        attn_item(j, w / nkv, w % nkv, ws);
    }
}

void shardlm_attention(shardlm_pool *pool, const shardlm_kv_view *kv, const shardlm_attn_batch *b)
{
    if (b->n < 1) return;
    size_t hd = (size_t)kv->head_dim, T = SHARDLM_ATTN_TILE;
    attn_job j = {.kv = kv, .b = b, .ops = attn_pick(), .row_bytes = shardlm_kv_row_bytes(kv->type, kv->head_dim),
                  .gmax = b->group < b->n_q_heads ? b->group : b->n_q_heads};
    if (!j.row_bytes) abort(); /* a caller bug: a type the cache cannot hold */
    size_t g = (size_t)j.gmax;
    j.per_thread = (g * hd + 3 * g + g * T + 2 * T * hd + 15) & ~(size_t)15; /* 64-byte slices */
    /* Short contexts are not worth waking threads for. */
    size_t work = 0;
    for (int i = 0; i < b->n; i++) work += (size_t)b->pos[i] + 1;
    int nth = work * (size_t)b->n_q_heads * hd < 65536 ? 1 : shardlm_pool_size(pool);
    j.scratch = shardlm_pool_scratch(pool, (size_t)nth * j.per_thread * sizeof(float));
    if (!j.scratch) abort(); /* a few KB per thread */
    atomic_init(&j.next, 0);
    if (nth > 1) shardlm_pool_run(pool, attn_task, &j);
    else attn_task(&j, 0, 1);
}
