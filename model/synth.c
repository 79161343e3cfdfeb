/* synth.c - synthetic GGUF files of the llama, qwen2 and qwen3
 * architectures: llama.cpp's metadata keys and tensor names, weights uniform
 * in +-1/sqrt(cols) from a per-row seeded splitmix64 stream (so the bytes do
 * not depend on the thread count), and a vocabulary (synth_vocab.c).
 *
 * Each tensor's stream is seeded by its place in the plain llama layout, so
 * files that differ only in architecture, biases, norms or RoPE scaling
 * share their matrices: what differs between their outputs is what the
 * architecture does. Biases are uniform in +-0.5, qwen3's q/k norm weights
 * in [0.5, 1.5), the other norms are ones. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model_internal.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_kernels.h"

#define SYNTH_MAX_THREADS 4
#define EXTRA_ID 0x100000u  /* seed ids of the tensors a plain llama file lacks start here */
#define NEW_ID UINT32_MAX    /* add_tensor: give it the next of those */

void shardlm_synth_defaults(shardlm_synth_opts *o)
{
    *o = (shardlm_synth_opts){.dim = 256, .layers = 4, .heads = 8, .kv_heads = 4, .ffn = 768, .vocab = 512,
                              .context = 2048, .type = SHARDLM_DT_F32, .seed = 42, .arch = SHARDLM_ARCH_LLAMA,
                              .rope_factor = 8.0f, .rope_base = 10000.0f, .biases = SHARDLM_SYNTH_BIAS_DEFAULT};
}

void shardlm_rope_llama3_factors(float *out, int rope_dim, float base, float factor, float low_freq_factor,
                                 float high_freq_factor, float orig_ctx)
{
    const double pi = 3.14159265358979323846;
    double low_wl = orig_ctx / low_freq_factor, high_wl = orig_ctx / high_freq_factor;
    for (int i = 0; i < rope_dim / 2; i++) {
        double freq = 1.0 / pow(base, 2.0 * i / rope_dim), wl = 2 * pi / freq;
        if (wl < high_wl) out[i] = 1.0f;
        else if (wl > low_wl) out[i] = factor;
        else {
            double smooth = (orig_ctx / wl - low_freq_factor) / (high_freq_factor - low_freq_factor);
            out[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}

static int range(const char *opt, int v, int lo, int hi)
{
    if (v >= lo && v <= hi) return 0;
    shardlm_err_set("%s %d is out of range (%d to %d)", opt, v, lo, hi);
    return SHARDLM_EINPUT;
}

/* The types written in super-blocks of 256 (k-quants and IQ4_XS). */
static int synth_is_k(uint32_t t) { return shardlm_dtype_supported(t) && shardlm_dtype_block_elems(t) == SHARDLM_QK_K; }
static int head_dim_of(const shardlm_synth_opts *o) { return o->head_dim ? o->head_dim : o->dim / o->heads; }
/* 0 in these fields means the default, so callers that fill the options by
 * hand keep working. */
static float rope_base_of(const shardlm_synth_opts *o) { return o->rope_base > 0.0f ? o->rope_base : 10000.0f; }
static float rope_factor_of(const shardlm_synth_opts *o) { return o->rope_factor > 0.0f ? o->rope_factor : 8.0f; }

static int check_shape(const shardlm_synth_opts *o)
{
    if (!o->head_dim && (o->dim % o->heads || (o->dim / o->heads) % 2)) {
        shardlm_err_set("--heads %d must divide --dim %d into an even head size (RoPE rotates pairs)", o->heads,
                        o->dim);
        return SHARDLM_EINPUT;
    }
    if (o->head_dim % 2) {
        shardlm_err_set("--head-dim %d must be even (RoPE rotates pairs)", o->head_dim);
        return SHARDLM_EINPUT;
    }
    if (o->arch == SHARDLM_ARCH_QWEN2 && o->head_dim && o->head_dim * o->heads != o->dim) {
        shardlm_err_set("--head-dim %d: qwen2 has no head size of its own (llama.cpp's qwen2 takes dim / heads = "
                        "%d); use llama or qwen3", o->head_dim, o->dim / o->heads);
        return SHARDLM_EINPUT;
    }
    if (o->heads % o->kv_heads) {
        shardlm_err_set("--kv-heads %d must divide --heads %d", o->kv_heads, o->heads);
        return SHARDLM_EINPUT;
    }
    /* k-quant rows that are not whole super-blocks fall back to Q8_0
     * (synth_matrix_type), which still needs blocks of 32. */
    int be = synth_is_k(o->type) ? SHARDLM_QK : (int)shardlm_dtype_block_elems(o->type), qw = o->heads * head_dim_of(o);
    if (o->dim % be || o->ffn % be || qw % be) {
        shardlm_err_set("--type %s needs --dim (%d), --ffn (%d) and heads x head size (%d) to be multiples of %d",
                        shardlm_dtype_name(o->type), o->dim, o->ffn, qw, be);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

int shardlm_synth_check(const shardlm_synth_opts *o)
{
    if (range("--dim", o->dim, 1, 65536) || range("--layers", o->layers, 1, 1024) ||
        range("--heads", o->heads, 1, 65536) || range("--kv-heads", o->kv_heads, 1, 65536) ||
        range("--ffn", o->ffn, 1, 1 << 20) || range("--head-dim", o->head_dim, 0, 1024) ||
        (!o->vocab_path && range("--vocab", o->vocab, SHARDLM_SYNTH_MIN_VOCAB, 1 << 21)) ||
        range("--context", o->context, 1, 1 << 24))
        return SHARDLM_EINPUT;
    if ((unsigned)o->arch >= SHARDLM_N_ARCHS) {
        shardlm_err_set("--arch %d is not one of %s", (int)o->arch, shardlm_arch_list());
        return SHARDLM_EINPUT;
    }
    /* Every type shardlm computes with has a quantiser (bf16 too). */
    if (!shardlm_dtype_supported(o->type)) {
        shardlm_err_set("--type %s is not supported (use one of %s)", shardlm_dtype_name(o->type),
                        shardlm_dtype_supported_names());
        return SHARDLM_EINPUT;
    }
    if (!(o->rope_factor == 0.0f || (o->rope_factor >= 1.0f && o->rope_factor <= 1e4f)) ||
        !(o->rope_base == 0.0f || (o->rope_base > 1.0f && o->rope_base <= 1e9f))) {
        shardlm_err_set("--rope-factor %g must be in 1..10000 and --rope-base %g in (1, 1e9]", (double)o->rope_factor,
                        (double)o->rope_base);
        return SHARDLM_EINPUT;
    }
    if (!(o->bigram >= 0 && o->bigram <= 1e4f)) {
        shardlm_err_set("--bigram %g is out of range (0 to 10000)", (double)o->bigram);
        return SHARDLM_EINPUT;
    }
    if (o->bigram > 0 && o->tie_embeddings) {
        shardlm_err_set("--bigram needs an output.weight of its own; it cannot be combined with --tie-embeddings");
        return SHARDLM_EINPUT;
    }
    if (o->rope_scaling == SHARDLM_SYNTH_ROPE_LLAMA3 && o->arch != SHARDLM_ARCH_LLAMA) {
        shardlm_err_set("--rope-scaling llama3: rope_freqs.weight belongs to the llama architecture, not %s "
                        "(llama.cpp's %s does not read it)", shardlm_arch_name(o->arch), shardlm_arch_name(o->arch));
        return SHARDLM_EINPUT;
    }
    return check_shape(o);
}

/* ---- tensors ---- */

typedef enum { T_MATRIX, T_ONES, T_NORM_RAND, T_BIAS, T_ROPE_FREQS } tensor_kind;

typedef struct {
    uint32_t type, kind, seed_id;
    uint64_t cols, rows; /* rows 0: a 1-D vector of cols values */
} synth_tensor;

typedef struct {
    const shardlm_synth_opts *o;
    const char *path;
    uint64_t total, done;
    synth_tensor *t;
    int n, vocab;
    uint32_t extra;  /* next seed id for tensors beyond the llama layout */
    uint32_t out_id; /* output.weight's seed id */
    uint32_t *sigma; /* --bigram: output row j copies embedding row sigma[j] */
} synth_ctx;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* splitmix64 step */
static uint64_t next64(uint64_t *s)
{
    *s += 0x9e3779b97f4a7c15ULL;
    return mix64(*s);
}

/* Row r of the tensor with this seed id: cols values uniform in [0, 1). */
static void uniform_row(const synth_ctx *c, uint32_t seed_id, uint64_t r, float *buf, uint64_t cols)
{
    uint64_t tseed = mix64(c->o->seed ^ mix64((uint64_t)seed_id + 1));
    uint64_t s = mix64(tseed ^ (r + 1) * 0xd1b54a32d192ed03ULL);
    for (uint64_t k = 0; k < cols; k++) buf[k] = (float)(next64(&s) >> 40) * 0x1p-24f;
}

typedef struct {
    const synth_ctx *c;
    const synth_tensor *t;
    uint64_t row0, row1;
    uint8_t *dst;
    int rc;
} synth_job;

static void *synth_rows(void *arg)
{
    synth_job *j = arg;
    const synth_tensor *t = j->t;
    size_t row_bytes = shardlm_dtype_row_bytes(t->type, t->cols);
    float *buf = malloc((size_t)t->cols * sizeof *buf);
    if (!buf) {
        j->rc = SHARDLM_ENOMEM;
        return NULL;
    }
    float scale = 1.0f / sqrtf((float)t->cols);
    const synth_ctx *c = j->c;
    /* --bigram: output rows are the (unscaled) embedding rows of sigma */
    int copy = c->sigma && t->seed_id == c->out_id;
    if (c->sigma && t->seed_id == 0) scale *= c->o->bigram;
    for (uint64_t r = j->row0; r < j->row1; r++) {
        uniform_row(c, copy ? 0 : t->seed_id, copy ? c->sigma[r] : r, buf, t->cols);
        for (uint64_t k = 0; k < t->cols; k++) buf[k] = (2.0f * buf[k] - 1.0f) * scale;
        shardlm_quant_row((shardlm_dtype)t->type, buf, j->dst + r * row_bytes, (size_t)t->cols);
    }
    free(buf);
    return NULL;
}

/* A matrix, its rows spread over up to SYNTH_MAX_THREADS threads. */
static int fill_matrix(synth_ctx *c, const synth_tensor *t, void *dst)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nt = ncpu < 1 ? 1 : ncpu > SYNTH_MAX_THREADS ? SYNTH_MAX_THREADS : (int)ncpu, rc = SHARDLM_OK;
    if (t->rows * t->cols < (1u << 16)) nt = 1;
    synth_job jobs[SYNTH_MAX_THREADS];
    pthread_t th[SYNTH_MAX_THREADS];
    int started[SYNTH_MAX_THREADS] = {0};
    for (int k = 0; k < nt; k++) {
        jobs[k] = (synth_job){c, t, t->rows * (uint64_t)k / (uint64_t)nt, t->rows * (uint64_t)(k + 1) / (uint64_t)nt,
                              dst, SHARDLM_OK};
        started[k] = k > 0 && pthread_create(&th[k], NULL, synth_rows, &jobs[k]) == 0;
        if (k > 0 && !started[k]) synth_rows(&jobs[k]); /* no thread: do it here */
    }
    synth_rows(&jobs[0]);
    for (int k = 0; k < nt; k++) {
        if (started[k]) pthread_join(th[k], NULL);
        if (jobs[k].rc) rc = jobs[k].rc;
    }
    if (rc) shardlm_err_set("%s: out of memory generating weights", c->path);
    return rc;
}

/* A vector, always F32. */
static void fill_vector(const synth_ctx *c, const synth_tensor *t, float *v)
{
    const shardlm_synth_opts *o = c->o;
    if (t->kind == T_ROPE_FREQS) {
        shardlm_rope_llama3_factors(v, (int)t->cols * 2, rope_base_of(o), rope_factor_of(o), 1.0f, 4.0f, 8192.0f);
        return;
    }
    if (t->kind != T_ONES) uniform_row(c, t->seed_id, 0, v, t->cols);
    for (uint64_t k = 0; k < t->cols; k++)
        v[k] = t->kind == T_ONES ? 1.0f : t->kind == T_NORM_RAND ? 0.5f + v[k] : v[k] - 0.5f;
}

static int synth_fill(void *ctx, uint64_t index, void *dst, uint64_t nbytes)
{
    synth_ctx *c = ctx;
    const synth_tensor *t = &c->t[index];
    int rc = SHARDLM_OK;
    if (t->rows) {
        rc = fill_matrix(c, t, dst);
    } else {
        float *v = malloc(t->cols * sizeof(float));
        if (!v) return SHARDLM_ENOMEM;
        fill_vector(c, t, v);
        memcpy(dst, v, t->cols * sizeof(float)); /* dst may be unaligned */
        free(v);
    }
    c->done += nbytes;
    shardlm_progress("synth", c->done, c->total);
    return rc;
}

/* The type of a matrix of rows of `cols`. --type q4_k mimics llama.cpp's
 * Q4_K_M mix in its simplest form: output.weight is Q6_K, so both k-quant
 * types are exercised. A row that is not whole super-blocks of 256 (for
 * the k-quants and IQ4_XS) falls back to Q8_0 (shardlm_synth_opts
 * documents this). */
static uint32_t synth_matrix_type(uint32_t t, const char *name, uint64_t cols)
{
    if (!synth_is_k(t)) return t;
    if (cols % SHARDLM_QK_K) return SHARDLM_DT_Q8_0;
    return t == SHARDLM_DT_Q4_K && !strcmp(name, "output.weight") ? SHARDLM_DT_Q6_K : t;
}

/* Declares one tensor; cols x rows (rows 0 for an F32 vector). seed_id
 * NEW_ID: a tensor beyond the llama layout, numbered from EXTRA_ID. */
static void add_tensor(shardlm_gguf_writer *w, synth_ctx *c, const char *name, tensor_kind kind, uint32_t seed_id,
                       uint64_t cols, uint64_t rows)
{
    uint64_t ne[2] = {cols, rows};
    uint32_t type = rows ? synth_matrix_type(c->o->type, name, cols) : SHARDLM_DT_F32;
    shardlm_gguf_writer_tensor(w, name, type, rows ? 2 : 1, ne);
    c->t[c->n++] = (synth_tensor){type, kind, seed_id != NEW_ID ? seed_id : c->extra++, cols, rows};
    c->total += shardlm_dtype_row_bytes(type, cols) * (rows ? rows : 1);
}

/* Which biases: the architecture's usual, or every one llama.cpp's loader
 * takes for it (model_internal.h: SHARDLM_OPT_*). */
static unsigned synth_biases(const shardlm_synth_opts *o)
{
    unsigned all = shardlm_arch_desc_of(o->arch)->optional & ~SHARDLM_OPT_ROPE_FREQS;
    switch (o->biases) {
    case SHARDLM_SYNTH_BIAS_NONE: return 0;
    case SHARDLM_SYNTH_BIAS_QKV: return SHARDLM_OPT_QKV_BIAS;
    case SHARDLM_SYNTH_BIAS_ALL: return all;
    default: return o->arch == SHARDLM_ARCH_QWEN2 ? SHARDLM_OPT_QKV_BIAS : 0;
    }
}

static void add_layer(shardlm_gguf_writer *w, synth_ctx *c, int l)
{
    const shardlm_synth_opts *o = c->o;
    unsigned bias = synth_biases(o);
    uint64_t d = (uint64_t)o->dim, hd = (uint64_t)head_dim_of(o), f = (uint64_t)o->ffn;
    uint64_t q = hd * (uint64_t)o->heads, kv = hd * (uint64_t)o->kv_heads;
    static const char *const names[9] = {"attn_norm", "attn_q",   "attn_k", "attn_v",  "attn_output",
                                         "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
    const uint64_t shape[9][2] = {{d, 0}, {d, q}, {d, kv}, {d, kv}, {q, d}, {d, 0}, {d, f}, {d, f}, {f, d}};
    /* the bias of matrix k: its output width, and the bit that asks for it */
    const unsigned bias_bit[9] = {0, SHARDLM_OPT_QKV_BIAS, SHARDLM_OPT_QKV_BIAS, SHARDLM_OPT_QKV_BIAS,
                                  SHARDLM_OPT_O_BIAS, 0, SHARDLM_OPT_FFN_BIAS, SHARDLM_OPT_FFN_BIAS,
                                  SHARDLM_OPT_FFN_BIAS};
    char name[64];
    for (int k = 0; k < 9; k++) {
        snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[k]);
        add_tensor(w, c, name, shape[k][1] ? T_MATRIX : T_ONES, (uint32_t)(1 + 9 * l + k), shape[k][0], shape[k][1]);
        if (bias & bias_bit[k]) {
            snprintf(name, sizeof name, "blk.%d.%s.bias", l, names[k]);
            add_tensor(w, c, name, T_BIAS, NEW_ID, shape[k][1], 0);
        }
        if (k == 3 && o->arch == SHARDLM_ARCH_QWEN3) {
            snprintf(name, sizeof name, "blk.%d.attn_q_norm.weight", l);
            add_tensor(w, c, name, T_NORM_RAND, NEW_ID, hd, 0);
            snprintf(name, sizeof name, "blk.%d.attn_k_norm.weight", l);
            add_tensor(w, c, name, T_NORM_RAND, NEW_ID, hd, 0);
        }
    }
}

static void add_tensors(shardlm_gguf_writer *w, synth_ctx *c)
{
    const shardlm_synth_opts *o = c->o;
    uint64_t d = (uint64_t)o->dim, v = (uint64_t)c->vocab;
    uint32_t last = (uint32_t)(1 + 9 * o->layers);
    add_tensor(w, c, "token_embd.weight", T_MATRIX, 0, d, v);
    if (o->rope_scaling == SHARDLM_SYNTH_ROPE_LLAMA3)
        add_tensor(w, c, "rope_freqs.weight", T_ROPE_FREQS, EXTRA_ID - 1, (uint64_t)head_dim_of(o) / 2, 0); /* no stream */
    for (int l = 0; l < o->layers; l++) add_layer(w, c, l);
    add_tensor(w, c, "output_norm.weight", T_ONES, last, d, 0);
    c->out_id = last + 1;
    if (!o->tie_embeddings) add_tensor(w, c, "output.weight", T_MATRIX, c->out_id, d, v);
    if (synth_biases(o) & SHARDLM_OPT_OUT_BIAS) add_tensor(w, c, "output.bias", T_BIAS, NEW_ID, v, 0);
}

/* llama.cpp's general.file_type (LLAMA_FTYPE_MOSTLY_*) of a --type. */
static uint32_t file_type(uint32_t t)
{
    switch (t) {
    case SHARDLM_DT_F16: return 1;
    case SHARDLM_DT_Q4_0: return 2;
    case SHARDLM_DT_Q4_1: return 3;
    case SHARDLM_DT_Q8_0: return 7;
    case SHARDLM_DT_Q5_0: return 8;
    case SHARDLM_DT_Q5_1: return 9;
    case SHARDLM_DT_Q2_K: return 10;
    case SHARDLM_DT_Q3_K: return 11; /* MOSTLY_Q3_K_S */
    case SHARDLM_DT_Q4_K: return 15; /* MOSTLY_Q4_K_M */
    case SHARDLM_DT_Q5_K: return 16; /* MOSTLY_Q5_K_S */
    case SHARDLM_DT_Q6_K: return 18; /* MOSTLY_Q6_K */
    case SHARDLM_DT_IQ4_NL: return 25;
    case SHARDLM_DT_IQ4_XS: return 30;
    case SHARDLM_DT_BF16: return 32;
    default: return 0;
    }
}

static void add_metadata(shardlm_gguf_writer *w, const shardlm_synth_opts *o)
{
    const char *a = shardlm_arch_name(o->arch);
    char name[128], key[128];
    if (o->arch == SHARDLM_ARCH_LLAMA) /* the name synth always gave llama files */
        snprintf(name, sizeof name, "shardlm-synth-d%d-l%d-%s", o->dim, o->layers, shardlm_dtype_name(o->type));
    else
        snprintf(name, sizeof name, "shardlm-synth-%s-d%d-l%d-%s", a, o->dim, o->layers, shardlm_dtype_name(o->type));
#define KEY(k) (snprintf(key, sizeof key, "%s.%s", a, k), key)
    shardlm_gguf_writer_str(w, "general.architecture", a);
    shardlm_gguf_writer_str(w, "general.name", name);
    shardlm_gguf_writer_u32(w, KEY("context_length"), (uint32_t)o->context);
    shardlm_gguf_writer_u32(w, KEY("embedding_length"), (uint32_t)o->dim);
    shardlm_gguf_writer_u32(w, KEY("block_count"), (uint32_t)o->layers);
    shardlm_gguf_writer_u32(w, KEY("feed_forward_length"), (uint32_t)o->ffn);
    shardlm_gguf_writer_u32(w, KEY("rope.dimension_count"), (uint32_t)head_dim_of(o));
    shardlm_gguf_writer_u32(w, KEY("attention.head_count"), (uint32_t)o->heads);
    shardlm_gguf_writer_u32(w, KEY("attention.head_count_kv"), (uint32_t)o->kv_heads);
    if (o->head_dim) {
        shardlm_gguf_writer_u32(w, KEY("attention.key_length"), (uint32_t)o->head_dim);
        shardlm_gguf_writer_u32(w, KEY("attention.value_length"), (uint32_t)o->head_dim);
    }
    shardlm_gguf_writer_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    shardlm_gguf_writer_f32(w, KEY("rope.freq_base"), rope_base_of(o));
    if (o->rope_scaling == SHARDLM_SYNTH_ROPE_LINEAR) {
        shardlm_gguf_writer_str(w, KEY("rope.scaling.type"), "linear");
        shardlm_gguf_writer_f32(w, KEY("rope.scaling.factor"), rope_factor_of(o));
    }
#undef KEY
    shardlm_gguf_writer_u32(w, "general.file_type", file_type(o->type));
    shardlm_gguf_writer_u32(w, "general.quantization_version", 2);
}

/* --bigram's sigma: one cycle through all n ids (Sattolo's shuffle), so
 * greedy decoding walks the whole vocabulary before it repeats. */
static uint32_t *synth_cycle(uint64_t seed, int n)
{
    uint32_t *p = malloc((size_t)n * sizeof *p);
    if (!p) return NULL;
    for (int i = 0; i < n; i++) p[i] = (uint32_t)i;
    uint64_t s = mix64(seed ^ 0x62696772616dULL);
    for (int i = n - 1; i > 0; i--) {
        int k = (int)(next64(&s) % (uint64_t)i); /* k < i: never a fixed point */
        uint32_t t = p[i];
        p[i] = p[k];
        p[k] = t;
    }
    return p;
}

int shardlm_synth_write(const shardlm_synth_opts *o, const char *path)
{
    int rc = shardlm_synth_check(o), vocab = 0;
    if (!rc) rc = shardlm_synth_vocab_size(o, &vocab);
    if (rc) return rc;
    int n = 18 * o->layers + 5; /* at most: 9 tensors, 7 biases and 2 norms per layer; 5 others */
    synth_ctx c = {.o = o, .path = path, .vocab = vocab, .extra = EXTRA_ID, .t = calloc((size_t)n, sizeof *c.t),
                   .sigma = o->bigram > 0 ? synth_cycle(o->seed, vocab) : NULL};
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(32);
    if (!c.t || !w || (o->bigram > 0 && !c.sigma)) {
        shardlm_err_set("%s: out of memory", path);
        rc = SHARDLM_ENOMEM;
    } else {
        add_metadata(w, o);
        rc = shardlm_synth_write_vocab(w, o);
        add_tensors(w, &c);
        if (!rc) rc = shardlm_gguf_writer_write(w, path, synth_fill, &c);
    }
    shardlm_gguf_writer_free(w);
    free(c.t);
    free(c.sigma);
    return rc;
}
