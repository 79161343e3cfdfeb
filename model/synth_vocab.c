/* synth_vocab.c - the vocabulary of a synthetic GGUF: a small
 * SentencePiece-style one that any llama tokenizer can load, or the
 * tokenizer.* metadata of a real GGUF (a vocabulary-only file such as
 * llama.cpp's models/ggml-vocab-*.gguf) copied verbatim. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"

#define N_SPECIAL SHARDLM_SYNTH_MIN_VOCAB /* <unk>, <s>, </s> and the 256 byte tokens */

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

static int write_builtin(shardlm_gguf_writer *w, int n)
{
    synth_vocab v;
    int rc = vocab_make(n, &v);
    if (rc) return rc;
    shardlm_gguf_writer_str(w, "tokenizer.ggml.model", "llama");
    shardlm_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", v.piece, (uint64_t)n);
    shardlm_gguf_writer_arr_f32(w, "tokenizer.ggml.scores", v.score, (uint64_t)n);
    shardlm_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", v.type, (uint64_t)n);
    shardlm_gguf_writer_u32(w, "tokenizer.ggml.bos_token_id", 1);
    shardlm_gguf_writer_u32(w, "tokenizer.ggml.eos_token_id", 2);
    shardlm_gguf_writer_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    shardlm_gguf_writer_bool(w, "tokenizer.ggml.add_bos_token", 1);
    shardlm_gguf_writer_bool(w, "tokenizer.ggml.add_eos_token", 0);
    vocab_free(&v);
    return SHARDLM_OK;
}

/* Opens a vocabulary GGUF and counts its tokens. */
static int vocab_open(const char *path, shardlm_gguf **g, int *n)
{
    int rc = shardlm_gguf_open(path, g);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", shardlm_err_get());
        shardlm_err_set("--vocab: %s", why);
        return rc;
    }
    shardlm_gguf_vtype et;
    uint64_t count = 0;
    const void *data;
    rc = shardlm_gguf_get_arr(*g, "tokenizer.ggml.tokens", &et, &count, &data);
    if (rc || et != SHARDLM_GGUF_STRING || count == 0 || count > (1u << 21)) {
        shardlm_err_set("--vocab %s: no usable string array 'tokenizer.ggml.tokens' (1 to 2^21 tokens)", path);
        shardlm_gguf_close(*g);
        *g = NULL;
        return SHARDLM_EINPUT;
    }
    *n = (int)count;
    return SHARDLM_OK;
}

int shardlm_synth_vocab_size(const shardlm_synth_opts *o, int *n)
{
    if (!o->vocab_path) {
        *n = o->vocab;
        return SHARDLM_OK;
    }
    shardlm_gguf *g;
    int rc = vocab_open(o->vocab_path, &g, n);
    shardlm_gguf_close(g);
    return rc;
}

int shardlm_synth_write_vocab(shardlm_gguf_writer *w, const shardlm_synth_opts *o)
{
    if (!o->vocab_path) return write_builtin(w, o->vocab);
    shardlm_gguf *g;
    int n, rc = vocab_open(o->vocab_path, &g, &n);
    if (rc) return rc;
    for (uint64_t i = 0; i < shardlm_gguf_n_kv(g); i++) {
        shardlm_gguf_str k = shardlm_gguf_kv_key(g, i);
        if (k.len > 10 && !memcmp(k.ptr, "tokenizer.", 10)) shardlm_gguf_writer_copy(w, g, i);
    }
    shardlm_gguf_close(g);
    return SHARDLM_OK;
}
