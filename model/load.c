/* load.c - copies this rank's shard of a GGUF (llama, qwen2, qwen3) out of
 * the file mapping.
 * After each tensor the pages it touched are dropped from the mapping, so
 * resident memory stays near the size of the shard while loading. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "model_internal.h"
#include "shardlm_common.h"

typedef struct {
    const shardlm_gguf *g;
    shardlm_model *m;
    shardlm_load_opts opts;
    shardlm_range_list *rec; /* record mode (ranges.c): note each read, copy nothing */
} loader;

/* Every read of tensor bytes is announced here first: in record mode it is
 * all that happens, so shardlm_model_shard_ranges lists exactly what a load
 * reads. Returns 1 (after noting the range) when the caller must stop. */
static int load_note(loader *L, int *rc, const shardlm_gguf_tensor *t, uint64_t off, uint64_t len, uint64_t stride,
                     uint64_t count)
{
    if (!L->rec) return 0;
    *rc = shardlm_range_list_add(L->rec, shardlm_gguf_data_offset(L->g) + t->offset + off, len, stride, count);
    return 1;
}

/* ---- in-situ quantisation: F32/F16/BF16 rows to Q8_0/Q4_0 at load ---- */

typedef struct {
    shardlm_dtype src_type, dst_type;
    const uint8_t *src;
    uint8_t *dst;
    size_t rows, cols, src_rb, dst_rb;
} isq_job;

static void isq_worker(void *ctx, int tid, int nth)
{
    isq_job *j = ctx;
    float stack_row[8192];
    float *row = j->cols <= 8192 ? stack_row : malloc(j->cols * sizeof(float));
    if (!row) return; /* leaves zeros: caught by the caller's check below */
    for (size_t r = (size_t)tid; r < j->rows; r += (size_t)nth) {
        shardlm_dequant_row(j->src_type, j->src + r * j->src_rb, row, j->cols);
        shardlm_quant_row(j->dst_type, row, j->dst + r * j->dst_rb, j->cols);
    }
    if (row != stack_row) free(row);
}

static int isq_applies(const loader *L, const shardlm_mat *m)
{
    int t = (int)m->type;
    return L->opts.isq >= 0 && (t == SHARDLM_DT_F32 || t == SHARDLM_DT_F16 || t == SHARDLM_DT_BF16) &&
           m->cols % SHARDLM_QK == 0;
}

/* Replaces a loaded float matrix by its quantised form. */
static int isq_convert(loader *L, shardlm_mat *m)
{
    if (!isq_applies(L, m)) return SHARDLM_OK;
    isq_job j = {m->type, (shardlm_dtype)L->opts.isq, m->data, NULL, m->rows, m->cols,
                 shardlm_dtype_row_bytes(m->type, m->cols), shardlm_dtype_row_bytes((uint32_t)L->opts.isq, m->cols)};
    if (!(j.dst = malloc(j.dst_rb * j.rows + 1))) return SHARDLM_ENOMEM;
    shardlm_pool_run(L->opts.pool, isq_worker, &j);
    L->m->shard_bytes -= j.src_rb * j.rows;
    L->m->shard_bytes += j.dst_rb * j.rows;
    free(m->data);
    m->data = j.dst;
    m->type = (shardlm_dtype)L->opts.isq;
    return SHARDLM_OK;
}

/* Replaces a matrix by the kernels' faster load-time layout, when they have
 * one on this CPU (Q4_0 with AVX2: kernels/cpu/repack.c). */
static int repack_mat(shardlm_mat *m)
{
    void *p;
    shardlm_dtype t;
    if (!m->data) return SHARDLM_OK; /* record mode loaded nothing */
    int rc = shardlm_repack(m->type, m->data, m->rows, m->cols, &p, &t);
    if (rc || !p) return rc;
    free(m->data);
    m->data = p;
    m->type = t;
    return SHARDLM_OK;
}

static void drop_pages(const void *p, size_t n)
{
    uintptr_t ps = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(ps - 1);
    uintptr_t e = ((uintptr_t)p + n + ps - 1) & ~(ps - 1);
    madvise((void *)a, e - a, MADV_DONTNEED); /* advisory: failure only costs memory */
}

/* The reader accepts every ggml type it knows the layout of; computing
 * needs one of ours. */
static int check_type(const shardlm_gguf *g, const shardlm_gguf_tensor *t)
{
    if (shardlm_dtype_supported(t->type)) return SHARDLM_OK;
    shardlm_err_set("%s: tensor '%s' has type %s, which shardlm cannot compute with (supported: %s)",
                    shardlm_gguf_path(g), t->name, shardlm_dtype_name(t->type), shardlm_dtype_supported_names());
    return SHARDLM_EINPUT;
}

/* Finds a tensor and checks it is cols x rows (GGUF order: ne[0] = cols). */
static int find_2d(loader *L, const char *name, uint64_t cols, uint64_t rows, const shardlm_gguf_tensor **out)
{
    const shardlm_gguf_tensor *t = shardlm_gguf_find_tensor(L->g, name);
    const char *path = shardlm_gguf_path(L->g);
    int rc;
    if (!t) {
        shardlm_err_set("%s: missing tensor '%s'", path, name);
        return SHARDLM_EINPUT;
    }
    if ((rc = check_type(L->g, t))) return rc;
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1) {
        shardlm_err_set("%s: tensor '%s' has shape [%llu, %llu], expected [%llu, %llu]", path, name,
                        (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], (unsigned long long)cols,
                        (unsigned long long)rows);
        return SHARDLM_EINPUT;
    }
    *out = t;
    return SHARDLM_OK;
}

static void *load_alloc(loader *L, size_t n)
{
    void *p = shardlm_weights_alloc(n ? n : 1);
    if (p) L->m->shard_bytes += n;
    else shardlm_err_set("out of memory allocating %zu bytes for the model shard", n);
    return p;
}

/* Rows [row0, row0 + nrows) of a 2-D tensor: one contiguous byte range. */
static int load_rows(loader *L, const char *name, uint64_t cols, uint64_t rows, size_t row0, size_t nrows,
                     shardlm_mat *out)
{
    const shardlm_gguf_tensor *t;
    int rc = find_2d(L, name, cols, rows, &t);
    if (rc) return rc;
    size_t rb = shardlm_dtype_row_bytes(t->type, cols);
    if (load_note(L, &rc, t, rb * row0, rb * nrows, rb * nrows, 1)) return rc;
    out->type = (shardlm_dtype)t->type;
    out->rows = nrows;
    out->cols = cols;
    if (!(out->data = load_alloc(L, rb * nrows))) return SHARDLM_ENOMEM;
    memcpy(out->data, t->data + rb * row0, rb * nrows);
    drop_pages(t->data, t->nbytes);
    return isq_convert(L, out);
}

/* Columns [col0, col0 + ncols) of every row. When the slice does not fall on
 * quantisation block boundaries the shard is stored as F32 instead. */
static int load_cols(loader *L, const char *name, uint64_t cols, uint64_t rows, size_t col0, size_t ncols,
                     shardlm_mat *out)
{
    const shardlm_gguf_tensor *t;
    int rc = find_2d(L, name, cols, rows, &t);
    if (rc) return rc;
    size_t be = shardlm_dtype_block_elems(t->type), bb = shardlm_dtype_block_bytes(t->type);
    size_t rb = shardlm_dtype_row_bytes(t->type, cols);
    int aligned = col0 % be == 0 && ncols % be == 0;
    /* aligned: a block-whole piece of every row; otherwise whole rows are dequantised */
    if (load_note(L, &rc, t, aligned ? col0 / be * bb : 0, aligned ? ncols / be * bb : rb, rb, rows)) return rc;
    out->type = aligned ? (shardlm_dtype)t->type : SHARDLM_DT_F32;
    out->rows = rows;
    out->cols = ncols;
    size_t orb = aligned ? ncols / be * bb : ncols * sizeof(float);
    if (!(out->data = load_alloc(L, orb * rows))) return SHARDLM_ENOMEM;
    float *tmp = aligned ? NULL : malloc(cols * sizeof(float));
    if (!aligned && !tmp) return SHARDLM_ENOMEM;
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *src = t->data + r * rb;
        uint8_t *dst = (uint8_t *)out->data + r * orb;
        if (aligned) {
            memcpy(dst, src + col0 / be * bb, orb);
        } else {
            shardlm_dequant_row((shardlm_dtype)t->type, src, tmp, cols);
            memcpy(dst, tmp + col0, orb);
        }
    }
    free(tmp);
    drop_pages(t->data, t->nbytes);
    return isq_convert(L, out);
}

/* Elements [off, off + count) of a 1-D tensor of n elements, as F32. An
 * absent tensor is an error when required, else leaves *out NULL. The whole
 * vector is read (they are small) and the slice kept. */
static int load_vec_part(loader *L, const char *name, uint64_t n, uint64_t off, uint64_t count, int required,
                         float **out)
{
    const shardlm_gguf_tensor *t = shardlm_gguf_find_tensor(L->g, name);
    const char *path = shardlm_gguf_path(L->g);
    *out = NULL;
    if (!t && !required) return SHARDLM_OK;
    if (!t) {
        shardlm_err_set("%s: missing tensor '%s'", path, name);
        return SHARDLM_EINPUT;
    }
    int rc = check_type(L->g, t);
    if (rc) return rc;
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1 || shardlm_dtype_row_bytes(t->type, n) == 0) {
        shardlm_err_set("%s: tensor '%s' must be a vector of %llu elements (it is [%llu, %llu] %s)", path, name,
                        (unsigned long long)n, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                        shardlm_dtype_name(t->type));
        return SHARDLM_EINPUT;
    }
    size_t rb = shardlm_dtype_row_bytes(t->type, n);
    if (load_note(L, &rc, t, 0, rb, rb, 1)) return rc;
    float *all = malloc(n * sizeof(float));
    if (!all) return SHARDLM_ENOMEM;
    shardlm_dequant_row((shardlm_dtype)t->type, t->data, all, n);
    if ((*out = load_alloc(L, count * sizeof(float)))) memcpy(*out, all + off, count * sizeof(float));
    free(all);
    return *out ? SHARDLM_OK : SHARDLM_ENOMEM;
}

/* A 1-D tensor of n elements as F32. */
static int load_vec(loader *L, const char *name, uint64_t n, float **out)
{
    return load_vec_part(L, name, n, 0, n, 1, out);
}

/* The optional vectors of a layer: biases (sliced as the matrices they
 * belong to) and qwen3's q/k norms. Which ones a file may hold was checked
 * against the architecture before (plan.c, check_names). */
static int load_layer_vecs(loader *L, int l, shardlm_layer *ly)
{
    const shardlm_hparams *hp = &L->m->hp;
    const shardlm_shard_plan *p = &L->m->plan;
    size_t hd = (size_t)hp->head_dim, dim = (size_t)hp->dim;
    size_t qw = (size_t)hp->n_heads * hd, kvw = (size_t)hp->n_kv_heads * hd;
    int qk = shardlm_arch_desc_of(hp->arch)->qk_norm, rc;
    char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", l, s), n)
    if ((rc = load_vec_part(L, NAME("attn_q.bias"), qw, p->q_head0 * hd, p->n_q_heads * hd, 0, &ly->bq)) ||
        (rc = load_vec_part(L, NAME("attn_k.bias"), kvw, p->kv_head0 * hd, p->n_kv_heads * hd, 0, &ly->bk)) ||
        (rc = load_vec_part(L, NAME("attn_v.bias"), kvw, p->kv_head0 * hd, p->n_kv_heads * hd, 0, &ly->bv)) ||
        (rc = load_vec_part(L, NAME("attn_output.bias"), dim, 0, dim, 0, &ly->bo)) ||
        (rc = load_vec_part(L, NAME("ffn_gate.bias"), hp->ffn, p->ffn0, p->n_ffn, 0, &ly->b_gate)) ||
        (rc = load_vec_part(L, NAME("ffn_up.bias"), hp->ffn, p->ffn0, p->n_ffn, 0, &ly->b_up)) ||
        (rc = load_vec_part(L, NAME("ffn_down.bias"), dim, 0, dim, 0, &ly->b_down)) ||
        (rc = load_vec_part(L, NAME("attn_q_norm.weight"), hd, 0, hd, qk, &ly->q_norm)) ||
        (rc = load_vec_part(L, NAME("attn_k_norm.weight"), hd, 0, hd, qk, &ly->k_norm)))
        return rc;
#undef NAME
    return SHARDLM_OK;
}

static int load_layer(loader *L, int l, shardlm_layer *ly)
{
    const shardlm_hparams *hp = &L->m->hp;
    const shardlm_shard_plan *p = &L->m->plan;
    size_t hd = (size_t)hp->head_dim, dim = (size_t)hp->dim;
    size_t qw = (size_t)hp->n_heads * hd, kvw = (size_t)hp->n_kv_heads * hd;
    char n[96];
    int rc;
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s.weight", l, s), n)
    if ((rc = load_vec(L, NAME("attn_norm"), dim, &ly->attn_norm)) ||
        (rc = load_vec(L, NAME("ffn_norm"), dim, &ly->ffn_norm)) ||
        (rc = load_rows(L, NAME("attn_q"), dim, qw, p->q_head0 * hd, p->n_q_heads * hd, &ly->wq)) ||
        (rc = load_rows(L, NAME("attn_k"), dim, kvw, p->kv_head0 * hd, p->n_kv_heads * hd, &ly->wk)) ||
        (rc = load_rows(L, NAME("attn_v"), dim, kvw, p->kv_head0 * hd, p->n_kv_heads * hd, &ly->wv)) ||
        (rc = load_cols(L, NAME("attn_output"), qw, dim, p->q_head0 * hd, p->n_q_heads * hd, &ly->wo)) ||
        (rc = load_rows(L, NAME("ffn_gate"), dim, hp->ffn, p->ffn0, p->n_ffn, &ly->w_gate)) ||
        (rc = load_rows(L, NAME("ffn_up"), dim, hp->ffn, p->ffn0, p->n_ffn, &ly->w_up)) ||
        (rc = load_cols(L, NAME("ffn_down"), hp->ffn, dim, p->ffn0, p->n_ffn, &ly->w_down)) ||
        (rc = load_layer_vecs(L, l, ly)))
        return rc;
#undef NAME
    shardlm_mat *mats[] = {&ly->wq, &ly->wk, &ly->wv, &ly->wo, &ly->w_gate, &ly->w_up, &ly->w_down};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
        if ((rc = repack_mat(mats[i]))) return rc;
    return SHARDLM_OK;
}

static size_t gcd_size(size_t a, size_t b) { return b ? gcd_size(b, a % b) : a; }

/* The FFN splits in units every layer's ffn_down block divides (a mixed
 * file, e.g. Q5_0 and Q6_K layers, splits in 256s), so no rank's slice of
 * a row-parallel ffn_down cuts a block. Every block size divides
 * feed_forward_length (the reader checked ne[0]), so their lcm does too;
 * missing or unsupported tensors are reported by the load itself. */
static int ffn_unit(const shardlm_gguf *g, int n_layers)
{
    size_t unit = 1;
    for (int l = 0; l < n_layers; l++) {
        char n[64];
        snprintf(n, sizeof n, "blk.%d.ffn_down.weight", l);
        const shardlm_gguf_tensor *t = shardlm_gguf_find_tensor(g, n);
        size_t be = t && shardlm_dtype_supported(t->type) ? shardlm_dtype_block_elems(t->type) : 1;
        unit = unit / gcd_size(unit, be) * be;
    }
    return (int)unit;
}

/* Vocabulary size and the FFN split granularity come from tensor shapes and
 * types, so they are settled before the plan is made. */
static int load_plan(loader *L, int world, int rank)
{
    shardlm_model *m = L->m;
    const shardlm_gguf_tensor *emb = shardlm_gguf_find_tensor(L->g, "token_embd.weight");
    const shardlm_gguf_tensor *down = shardlm_gguf_find_tensor(L->g, "blk.0.ffn_down.weight");
    if (!emb || !down) {
        shardlm_err_set("%s: missing tensor '%s'", shardlm_gguf_path(L->g),
                        !emb ? "token_embd.weight" : "blk.0.ffn_down.weight");
        return SHARDLM_EINPUT;
    }
    if (m->hp.vocab == 0) m->hp.vocab = (int)emb->ne[1];
    if (emb->ne[1] != (uint64_t)m->hp.vocab) {
        shardlm_err_set("%s: token_embd.weight has %llu rows but the tokenizer has %d tokens",
                        shardlm_gguf_path(L->g), (unsigned long long)emb->ne[1], m->hp.vocab);
        return SHARDLM_EINPUT;
    }
    int rc = check_type(L->g, down);
    if (rc) return rc;
    return shardlm_plan_make(&m->hp, world, rank, ffn_unit(L->g, m->hp.n_layers), &m->plan);
}

static int load_all(loader *L)
{
    shardlm_model *m = L->m;
    const shardlm_hparams *hp = &m->hp;
    int rc = load_rows(L, "token_embd.weight", hp->dim, hp->vocab, 0, hp->vocab, &m->tok_embd);
    if (rc) return rc;
    if ((rc = load_vec(L, "output_norm.weight", hp->dim, &m->output_norm)) ||
        (rc = load_vec_part(L, "output.bias", hp->vocab, m->plan.vocab0, m->plan.n_vocab, 0, &m->output_b)) ||
        (rc = load_vec_part(L, "rope_freqs.weight", hp->rope_dim / 2, 0, hp->rope_dim / 2, 0, &m->rope_factors)))
        return rc;
    for (int j = 0; m->rope_factors && j < hp->rope_dim / 2; j++)
        if (!(m->rope_factors[j] > 0.0f) || m->rope_factors[j] > 1e6f) {
            shardlm_err_set("%s: rope_freqs.weight[%d] is %g; the frequency factors must be positive",
                            shardlm_gguf_path(L->g), j, (double)m->rope_factors[j]);
            return SHARDLM_EINPUT;
        }
    const char *out_name = shardlm_gguf_find_tensor(L->g, "output.weight") ? "output.weight" : "token_embd.weight";
    /* The embedding stays plain: rows are looked up one at a time. */
    if ((rc = load_rows(L, out_name, hp->dim, hp->vocab, m->plan.vocab0, m->plan.n_vocab, &m->output)) ||
        (rc = repack_mat(&m->output)))
        return rc;
    if (!(m->layers = calloc((size_t)hp->n_layers, sizeof *m->layers))) return SHARDLM_ENOMEM;
    for (int l = 0; l < hp->n_layers; l++) {
        if ((rc = load_layer(L, l, &m->layers[l]))) return rc;
        if (m->plan.rank == 0 && !L->rec) shardlm_progress("loading shard", (uint64_t)l + 1, (uint64_t)hp->n_layers);
    }
    return SHARDLM_OK;
}

static int load_model(const shardlm_gguf *g, int world, int rank, const shardlm_load_opts *opts,
                      shardlm_range_list *rec, shardlm_model **out)
{
    shardlm_model *m = calloc(1, sizeof *m);
    if (!m) return SHARDLM_ENOMEM;
    m->be = &shardlm_backend_cpu;
    loader L = {g, m, {-1, NULL}, rec};
    if (opts) L.opts = *opts;
    if (L.opts.isq >= 0 && L.opts.isq != SHARDLM_DT_Q8_0 && L.opts.isq != SHARDLM_DT_Q4_0) {
        free(m);
        shardlm_err_set("--isq %s: in-situ quantisation supports q8_0 and q4_0", shardlm_dtype_name((uint32_t)L.opts.isq));
        return SHARDLM_EINPUT;
    }
    int rc = shardlm_hparams_read(g, &m->hp); /* also checks the tensor names */
    if (!rc) rc = load_plan(&L, world, rank);
    if (!rc && !(m->vocab_counts = calloc((size_t)world, sizeof(int)))) rc = SHARDLM_ENOMEM;
    for (int r = 0; !rc && r < world; r++) {
        shardlm_shard_plan pr;
        rc = shardlm_plan_make(&m->hp, world, r, 1, &pr);
        m->vocab_counts[r] = pr.n_vocab;
    }
    if (!rc) rc = load_all(&L);
    if (rc) {
        shardlm_model_free(m);
        return rc;
    }
    *out = m;
    return SHARDLM_OK;
}

int shardlm_model_load(const shardlm_gguf *g, int world, int rank, const shardlm_load_opts *opts,
                       shardlm_model **out)
{
    return load_model(g, world, rank, opts, NULL, out);
}

int shardlm_model_record_reads(const shardlm_gguf *g, int world, int rank, shardlm_range_list *l)
{
    shardlm_model *m = NULL;
    int rc = load_model(g, world, rank, NULL, l, &m);
    shardlm_model_free(m);
    return rc;
}

int shardlm_model_weights(shardlm_model *m, int l, shardlm_weight *out)
{
    const shardlm_hparams *hp = &m->hp;
    size_t dim = (size_t)hp->dim;
    int n = 0;
#define MAT(f, nm) out[n++] = (shardlm_weight){nm, &(f), NULL, 0}
#define VEC(f, nm, len) out[n++] = (shardlm_weight){nm, NULL, &(f), (len)}
    if (l < 0) {
        MAT(m->tok_embd, "token_embd.weight");
        MAT(m->output, "output.weight");
        VEC(m->output_norm, "output_norm.weight", dim);
        VEC(m->output_b, "output.bias", (size_t)m->plan.n_vocab);
        return n;
    }
    shardlm_layer *ly = &m->layers[l];
    VEC(ly->attn_norm, "attn_norm.weight", dim);
    VEC(ly->ffn_norm, "ffn_norm.weight", dim);
    MAT(ly->wq, "attn_q.weight");
    MAT(ly->wk, "attn_k.weight");
    MAT(ly->wv, "attn_v.weight");
    MAT(ly->wo, "attn_output.weight");
    MAT(ly->w_gate, "ffn_gate.weight");
    MAT(ly->w_up, "ffn_up.weight");
    MAT(ly->w_down, "ffn_down.weight");
    size_t hd = (size_t)hp->head_dim, qw = (size_t)m->plan.n_q_heads * hd, kvw = (size_t)m->plan.n_kv_heads * hd;
    size_t ffn = (size_t)m->plan.n_ffn;
    VEC(ly->bq, "attn_q.bias", qw);
    VEC(ly->bk, "attn_k.bias", kvw);
    VEC(ly->bv, "attn_v.bias", kvw);
    VEC(ly->bo, "attn_output.bias", dim);
    VEC(ly->b_gate, "ffn_gate.bias", ffn);
    VEC(ly->b_up, "ffn_up.bias", ffn);
    VEC(ly->b_down, "ffn_down.bias", dim);
    VEC(ly->q_norm, "attn_q_norm.weight", hd);
    VEC(ly->k_norm, "attn_k_norm.weight", hd);
#undef MAT
#undef VEC
    return n;
}

/* Host memory: the CUDA backend has put its device copy back first. */
static void weights_free(shardlm_model *m, int l)
{
    shardlm_weight w[SHARDLM_MAX_WEIGHTS];
    int n = shardlm_model_weights(m, l, w);
    for (int i = 0; i < n; i++) free(w[i].mat ? w[i].mat->data : *w[i].vec);
}

void shardlm_model_free(shardlm_model *m)
{
    if (!m) return;
    if (m->dev) shardlm_dev_model_free(m); /* device weights, NULL afterwards */
    for (int l = 0; m->layers && l < m->hp.n_layers; l++) weights_free(m, l);
    weights_free(m, -1);
    free(m->rope_factors); /* host only: the backends build their frequency tables from it */
    free(m->layers);
    free(m->vocab_counts);
    free(m);
}

const shardlm_hparams *shardlm_model_hparams(const shardlm_model *m) { return &m->hp; }
const shardlm_shard_plan *shardlm_model_plan(const shardlm_model *m) { return &m->plan; }
size_t shardlm_model_shard_bytes(const shardlm_model *m) { return m->shard_bytes; }
