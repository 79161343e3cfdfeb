/* synth.c - synthetic llama GGUF files: llama.cpp's metadata keys and
 * tensor names, weights uniform in +-1/sqrt(cols) from a per-row seeded
 * splitmix64 stream (so the bytes do not depend on the thread count), and a
 * SentencePiece-style vocabulary any llama tokenizer can load. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_kernels.h"
#include "shardlm_model.h"

#define SYNTH_MAX_THREADS 4
#define N_SPECIAL 259 /* <unk>, <s>, </s> and the 256 byte tokens */

void shardlm_synth_defaults(shardlm_synth_opts *o)
{
    *o = (shardlm_synth_opts){.dim = 256, .layers = 4, .heads = 8, .kv_heads = 4, .ffn = 768, .vocab = 512,
                              .context = 2048, .type = SHARDLM_DT_F32, .seed = 42};
}

static int range(const char *opt, int v, int lo, int hi)
{
    if (v >= lo && v <= hi) return 0;
    shardlm_err_set("%s %d is out of range (%d to %d)", opt, v, lo, hi);
    return SHARDLM_EINPUT;
}

/* The types written in super-blocks of 256 (k-quants and IQ4_XS). */
static int synth_is_k(uint32_t t) { return shardlm_dtype_supported(t) && shardlm_dtype_block_elems(t) == SHARDLM_QK_K; }

int shardlm_synth_check(const shardlm_synth_opts *o)
{
    if (range("--dim", o->dim, 1, 65536) || range("--layers", o->layers, 1, 1024) ||
        range("--heads", o->heads, 1, 65536) || range("--kv-heads", o->kv_heads, 1, 65536) ||
        range("--ffn", o->ffn, 1, 1 << 20) || range("--vocab", o->vocab, N_SPECIAL, 1 << 21) ||
        range("--context", o->context, 1, 1 << 24))
        return SHARDLM_EINPUT;
    /* Every type shardlm computes with has a quantiser (bf16 too). */
    if (!shardlm_dtype_supported(o->type)) {
        shardlm_err_set("--type %s is not supported (use one of %s)", shardlm_dtype_name(o->type),
                        shardlm_dtype_supported_names());
        return SHARDLM_EINPUT;
    }
    if (o->dim % o->heads || (o->dim / o->heads) % 2) {
        shardlm_err_set("--heads %d must divide --dim %d into an even head size (RoPE rotates pairs)", o->heads,
                        o->dim);
        return SHARDLM_EINPUT;
    }
    if (o->heads % o->kv_heads) {
        shardlm_err_set("--kv-heads %d must divide --heads %d", o->kv_heads, o->heads);
        return SHARDLM_EINPUT;
    }
    /* k-quant rows that are not whole super-blocks fall back to Q8_0
     * (synth_matrix_type), which still needs blocks of 32. */
    size_t be = synth_is_k(o->type) ? SHARDLM_QK : shardlm_dtype_block_elems(o->type);
    if (o->dim % (int)be || o->ffn % (int)be) {
        shardlm_err_set("--type %s needs --dim (%d) and --ffn (%d) to be multiples of %zu",
                        shardlm_dtype_name(o->type), o->dim, o->ffn, be);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

/* ---- vocabulary ---- */

typedef struct {
    char *text;        /* all pieces, NUL-separated */
    const char **piece;
    float *score;
    int32_t *type;
} synth_vocab;

static void vocab_free(synth_vocab *v)
{
    free(v->text);
    free(v->piece);
    free(v->score);
    free(v->type);
}

/* Normal pieces in order of decreasing score: "▁", the printable ASCII
 * characters, then for L = 1, 2, ... every lowercase word of length L with a
 * leading "▁" and (from L = 2) without. All distinct by construction. */
static void vocab_normal(synth_vocab *v, int first, int n, char *p)
{
    int id = first, end = first + n;
    char word[16];
    v->piece[id++] = p;
    p += sprintf(p, "\xe2\x96\x81") + 1;
    for (int c = 33; c < 127 && id < end; c++) {
        v->piece[id++] = p;
        p += sprintf(p, "%c", c) + 1;
    }
    for (int len = 1; id < end && len < 15; len++) {
        memset(word, 'a', (size_t)len);
        word[len] = 0;
        for (;;) {
            for (int bare = 0; bare < 2 && id < end; bare++) {
                if (bare && len == 1) continue;
                v->piece[id++] = p;
                p += sprintf(p, "%s%s", bare ? "" : "\xe2\x96\x81", word) + 1;
            }
            int k = len - 1; /* odometer over a..z */
            while (k >= 0 && word[k] == 'z') word[k--] = 'a';
            if (k < 0 || id >= end) break;
            word[k]++;
        }
    }
}

static int vocab_make(int n, synth_vocab *v)
{
    memset(v, 0, sizeof *v);
    v->text = malloc((size_t)n * 24);
    v->piece = malloc((size_t)n * sizeof *v->piece);
    v->score = malloc((size_t)n * sizeof *v->score);
    v->type = malloc((size_t)n * sizeof *v->type);
    if (!v->text || !v->piece || !v->score || !v->type) {
        vocab_free(v);
        shardlm_err_set("out of memory for a %d-token vocabulary", n);
        return SHARDLM_ENOMEM;
    }
    char *p = v->text;
    static const char *const special[3] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < N_SPECIAL; i++) {
        v->piece[i] = p;
        p += (i < 3 ? sprintf(p, "%s", special[i]) : sprintf(p, "<0x%02X>", i - 3)) + 1;
        v->score[i] = 0.0f;
        v->type[i] = i == 0 ? 2 : i < 3 ? 3 : 6; /* unknown, control, byte */
    }
    for (int i = N_SPECIAL; i < n; i++) {
        v->score[i] = -(float)(i - N_SPECIAL);
        v->type[i] = 1; /* normal */
    }
    vocab_normal(v, N_SPECIAL, n - N_SPECIAL, p);
    return SHARDLM_OK;
}

/* ---- tensors ---- */

typedef struct {
    const shardlm_synth_opts *o;
    const char *path;
    uint64_t total, done;
    uint32_t *types;
    uint64_t (*ne)[2];
    int n;
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

typedef struct {
    const synth_ctx *c;
    uint64_t index, row0, row1;
    uint8_t *dst;
    int rc;
} synth_job;

static void *synth_rows(void *arg)
{
    synth_job *j = arg;
    const synth_ctx *c = j->c;
    uint32_t type = c->types[j->index];
    uint64_t cols = c->ne[j->index][0];
    size_t row_bytes = shardlm_dtype_row_bytes(type, cols);
    float *buf = malloc((size_t)cols * sizeof *buf);
    if (!buf) {
        j->rc = SHARDLM_ENOMEM;
        return NULL;
    }
    float scale = 1.0f / sqrtf((float)cols);
    uint64_t tseed = mix64(c->o->seed ^ mix64(j->index + 1));
    for (uint64_t r = j->row0; r < j->row1; r++) {
        uint64_t s = mix64(tseed ^ (r + 1) * 0xd1b54a32d192ed03ULL);
        for (uint64_t k = 0; k < cols; k++) {
            float u = (float)(next64(&s) >> 40) * 0x1p-24f; /* [0, 1) */
            buf[k] = (2.0f * u - 1.0f) * scale;
        }
        shardlm_quant_row((shardlm_dtype)type, buf, j->dst + r * row_bytes, (size_t)cols);
    }
    free(buf);
    return NULL;
}

static int synth_fill(void *ctx, uint64_t index, void *dst, uint64_t nbytes)
{
    synth_ctx *c = ctx;
    uint64_t rows = c->ne[index][1];
    int rc = SHARDLM_OK;
    if (c->ne[index][1] == 0) { /* a norm: all ones, always F32 */
        float one = 1.0f;
        for (uint64_t k = 0; k < c->ne[index][0]; k++) memcpy((uint8_t *)dst + 4 * k, &one, 4);
    } else {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        int nt = ncpu < 1 ? 1 : ncpu > SYNTH_MAX_THREADS ? SYNTH_MAX_THREADS : (int)ncpu;
        if (rows * c->ne[index][0] < (1u << 16)) nt = 1;
        synth_job jobs[SYNTH_MAX_THREADS];
        pthread_t th[SYNTH_MAX_THREADS];
        int started[SYNTH_MAX_THREADS] = {0};
        for (int t = 0; t < nt; t++) {
            jobs[t] = (synth_job){c, index, rows * (uint64_t)t / (uint64_t)nt, rows * (uint64_t)(t + 1) / (uint64_t)nt,
                                  dst, SHARDLM_OK};
            started[t] = t > 0 && pthread_create(&th[t], NULL, synth_rows, &jobs[t]) == 0;
            if (t > 0 && !started[t]) synth_rows(&jobs[t]); /* no thread: do it here */
        }
        synth_rows(&jobs[0]);
        for (int t = 0; t < nt; t++) {
            if (started[t]) pthread_join(th[t], NULL);
            if (jobs[t].rc) rc = jobs[t].rc;
        }
        if (rc) shardlm_err_set("%s: out of memory generating weights", c->path);
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

/* Declares one tensor; cols x rows (rows 0 for an F32 norm vector). */
static void add_tensor(shardlm_gguf_writer *w, synth_ctx *c, const char *name, uint64_t cols, uint64_t rows)
{
    uint64_t ne[2] = {cols, rows};
    uint32_t type = rows ? synth_matrix_type(c->o->type, name, cols) : SHARDLM_DT_F32;
    shardlm_gguf_writer_tensor(w, name, type, rows ? 2 : 1, ne);
    c->types[c->n] = type;
    c->ne[c->n][0] = cols;
    c->ne[c->n][1] = rows;
    c->total += shardlm_dtype_row_bytes(type, cols) * (rows ? rows : 1);
    c->n++;
}

static void add_tensors(shardlm_gguf_writer *w, synth_ctx *c)
{
    const shardlm_synth_opts *o = c->o;
    uint64_t d = (uint64_t)o->dim, kv = (uint64_t)(o->dim / o->heads * o->kv_heads), f = (uint64_t)o->ffn;
    add_tensor(w, c, "token_embd.weight", d, (uint64_t)o->vocab);
    for (int l = 0; l < o->layers; l++) {
        static const char *const names[9] = {"attn_norm", "attn_q", "attn_k",  "attn_v",  "attn_output",
                                             "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
        const uint64_t shape[9][2] = {{d, 0}, {d, d}, {d, kv}, {d, kv}, {d, d}, {d, 0}, {d, f}, {d, f}, {f, d}};
        for (int k = 0; k < 9; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[k]);
            add_tensor(w, c, name, shape[k][0], shape[k][1]);
        }
    }
    add_tensor(w, c, "output_norm.weight", d, 0);
    add_tensor(w, c, "output.weight", d, (uint64_t)o->vocab);
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

static void add_metadata(shardlm_gguf_writer *w, const shardlm_synth_opts *o, const synth_vocab *v)
{
    char name[128];
    snprintf(name, sizeof name, "shardlm-synth-d%d-l%d-%s", o->dim, o->layers, shardlm_dtype_name(o->type));
    shardlm_gguf_writer_str(w, "general.architecture", "llama");
    shardlm_gguf_writer_str(w, "general.name", name);
    shardlm_gguf_writer_u32(w, "llama.context_length", (uint32_t)o->context);
    shardlm_gguf_writer_u32(w, "llama.embedding_length", (uint32_t)o->dim);
    shardlm_gguf_writer_u32(w, "llama.block_count", (uint32_t)o->layers);
    shardlm_gguf_writer_u32(w, "llama.feed_forward_length", (uint32_t)o->ffn);
    shardlm_gguf_writer_u32(w, "llama.rope.dimension_count", (uint32_t)(o->dim / o->heads));
    shardlm_gguf_writer_u32(w, "llama.attention.head_count", (uint32_t)o->heads);
    shardlm_gguf_writer_u32(w, "llama.attention.head_count_kv", (uint32_t)o->kv_heads);
    shardlm_gguf_writer_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    shardlm_gguf_writer_f32(w, "llama.rope.freq_base", 10000.0f);
    shardlm_gguf_writer_u32(w, "general.file_type", file_type(o->type));
    shardlm_gguf_writer_u32(w, "general.quantization_version", 2);
    shardlm_gguf_writer_str(w, "tokenizer.ggml.model", "llama");
    shardlm_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", v->piece, (uint64_t)o->vocab);
    shardlm_gguf_writer_arr_f32(w, "tokenizer.ggml.scores", v->score, (uint64_t)o->vocab);
    shardlm_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", v->type, (uint64_t)o->vocab);
    shardlm_gguf_writer_u32(w, "tokenizer.ggml.bos_token_id", 1);
    shardlm_gguf_writer_u32(w, "tokenizer.ggml.eos_token_id", 2);
    shardlm_gguf_writer_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    shardlm_gguf_writer_bool(w, "tokenizer.ggml.add_bos_token", 1);
    shardlm_gguf_writer_bool(w, "tokenizer.ggml.add_eos_token", 0);
}

int shardlm_synth_write(const shardlm_synth_opts *o, const char *path)
{
    int rc = shardlm_synth_check(o);
    if (rc) return rc;
    synth_vocab v;
    if ((rc = vocab_make(o->vocab, &v))) return rc;
    int n = 3 + 9 * o->layers;
    synth_ctx c = {.o = o, .path = path, .types = calloc((size_t)n, sizeof *c.types),
                   .ne = calloc((size_t)n, sizeof *c.ne)};
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(32);
    if (!c.types || !c.ne || !w) {
        shardlm_err_set("%s: out of memory", path);
        rc = SHARDLM_ENOMEM;
    } else {
        add_metadata(w, o, &v);
        add_tensors(w, &c);
        rc = shardlm_gguf_writer_write(w, path, synth_fill, &c);
    }
    shardlm_gguf_writer_free(w);
    free(c.types);
    free(c.ne);
    vocab_free(&v);
    return rc;
}
