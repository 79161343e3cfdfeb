/* test_tokenizer_bpe.c - the byte-level BPE tokenizers (and Phi-3's
 * SentencePiece) against llama.cpp: every test vector of ../shared/models/
 * vocab, the stress and random strings of tests/data/ (ids from llama.cpp's
 * tokenizer, tests/peer/tokenizer_xcheck.sh), the gpt-2 vocabulary under the smollm and
 * default pre-tokenizers, byte-exact streamed decoding in any chunking,
 * special-token text in chat prompts, the end-of-generation sets and the
 * add_bos/add_eos flags. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_text.h"
#include "test_util.h"
#include "tokenizer_util.h"


static shardlm_tokenizer *load_vocab(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "models/vocab/ggml-vocab-%s.gguf", name);
    return load_tok(tu_shared(rel));
}

static int32_t *encode(const shardlm_tokenizer *t, const char *s, size_t len, int special, size_t *n)
{
    size_t cap = len + 2;
    int32_t *ids = malloc(cap * sizeof *ids);
    cr_assert_not_null(ids);
    int rc = special ? shardlm_tokenizer_encode_special(t, s, len, 0, ids, cap, n)
                     : shardlm_tokenizer_encode(t, s, len, 0, ids, cap, n);
    cr_assert_eq(rc, SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_leq(*n, cap, "more ids than bytes");
    return ids;
}

/* A well-formed UTF-8 check, for each streamed chunk. */
static int valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

/* Pushes ids one at a time; every chunk must be whole characters. */
static char *decode(const shardlm_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    size_t step = shardlm_detok_max(t), cap = (n + 1) * step + 1, at = 0;
    char *out = malloc(cap);
    cr_assert_not_null(out);
    shardlm_detok d;
    shardlm_detok_init(&d);
    for (size_t i = 0; i < n; i++) {
        size_t k = shardlm_detok_push(t, &d, ids[i], out + at, step);
        cr_assert(valid_utf8(out + at, k), "chunk %zu of %zu bytes is not whole UTF-8", i, k);
        at += k;
    }
    at += shardlm_detok_flush(&d, out + at, step);
    out[at] = 0;
    *len = at;
    return out;
}

/* ---- .inp/.out files ---- */

typedef struct {
    char *inp, *outs;
    const char *s[512];
    size_t len[512];
    char *line[512];
    size_t n;
} vectors;

static void vectors_load(vectors *v, const char *inp_path, const char *out_path)
{
    size_t il, ol;
    v->inp = tu_read_file(inp_path, &il);
    v->outs = tu_read_file(out_path, &ol);
    cr_assert(v->inp && v->outs, "cannot read %s or %s", inp_path, out_path);
    v->n = 0;
    for (char *p = v->inp, *end = v->inp + il, *q; p < end && (q = memmem(p, (size_t)(end - p), SEP, strlen(SEP)));
         p = q + strlen(SEP)) {
        cr_assert_lt(v->n, 512);
        v->s[v->n] = p;
        v->len[v->n++] = (size_t)(q - p);
    }
    char *line = v->outs;
    for (size_t i = 0; i < v->n; i++) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "%s has fewer lines than %s has strings", out_path, inp_path);
        *nl = 0;
        v->line[i] = line;
        line = nl + 1;
    }
    cr_assert_eq(*line, 0, "%s has more lines than %s has strings", out_path, inp_path);
}

static void vectors_free(vectors *v)
{
    free(v->inp);
    free(v->outs);
}

static size_t parse_ids(const char *line, int32_t *ids, size_t max)
{
    size_t n = 0;
    char *end;
    for (;;) {
        long x = strtol(line, &end, 10);
        if (end == line || n == max) break;
        ids[n++] = (int32_t)x;
        line = end;
    }
    return n;
}

static void expect_ids(const shardlm_tokenizer *t, const char *what, size_t i, const char *s, size_t len,
                       const char *line, int special)
{
    static int32_t want[8192];
    size_t nw = parse_ids(line, want, 8192), n;
    int32_t *got = encode(t, s, len, special, &n);
    cr_assert_eq(n, nw, "%s: string %zu '%.*s': %zu ids, llama.cpp has %zu", what, i, (int)len, s, n, nw);
    for (size_t j = 0; j < n; j++)
        cr_assert_eq(got[j], want[j], "%s: string %zu '%.*s', id %zu: %d, llama.cpp has %d", what, i, (int)len, s, j,
                     got[j], want[j]);
    free(got);
}

/* Decoding is byte-exact: ids one at a time, each of the text's bytes as
 * its own token, and the text cut into random pieces encoded apart. */
static void expect_round_trips(const shardlm_tokenizer *t, const char *what, size_t i, const char *s, size_t len)
{
    size_t n, dlen;
    int32_t *ids = encode(t, s, len, 0, &n);
    char *back = decode(t, ids, n, &dlen);
    cr_assert(dlen == len && memcmp(back, s, len) == 0, "%s: string %zu round trip gave '%s'", what, i, back);
    free(back);
    free(ids);
    int32_t *bytes = calloc(len + 1, sizeof *bytes), *parts = calloc(len + 1, sizeof *parts);
    cr_assert(bytes && parts);
    size_t np = 0;
    for (size_t b = 0, cut = 0; b < len; b++) {
        size_t k;
        int32_t *one = encode(t, s + b, 1, 0, &k);
        cr_assert_eq(k, 1, "%s: byte %zu of string %zu is %zu tokens", what, b, i, k);
        bytes[b] = one[0];
        free(one);
        if (b + 1 == len || (tu_frand() > 0.6f)) { /* a random cut, mid-character or not */
            int32_t *piece = encode(t, s + cut, b + 1 - cut, 0, &k);
            memcpy(parts + np, piece, k * sizeof *parts);
            np += k;
            free(piece);
            cut = b + 1;
        }
    }
    back = decode(t, bytes, len, &dlen);
    cr_assert(dlen == len && memcmp(back, s, len) == 0, "%s: string %zu byte by byte gave '%s'", what, i, back);
    free(back);
    back = decode(t, parts, np, &dlen);
    cr_assert(dlen == len && memcmp(back, s, len) == 0, "%s: string %zu cut in pieces gave '%s'", what, i, back);
    free(back);
    free(bytes);
    free(parts);
}

static void check_vocab_vectors(const char *name, int round_trip)
{
    char inp[256], out[256];
    snprintf(inp, sizeof inp, "models/vocab/ggml-vocab-%s.gguf.inp", name);
    snprintf(out, sizeof out, "models/vocab/ggml-vocab-%s.gguf.out", name);
    vectors v;
    char inp_path[4096]; /* tu_shared() answers in one static buffer */
    snprintf(inp_path, sizeof inp_path, "%s", tu_shared(inp));
    vectors_load(&v, inp_path, tu_shared(out));
    shardlm_tokenizer *t = load_vocab(name);
    for (size_t i = 0; i < v.n; i++) {
        expect_ids(t, name, i, v.s[i], v.len[i], v.line[i], 0);
        if (round_trip) expect_round_trips(t, name, i, v.s[i], v.len[i]);
    }
    cr_log_info("%s: %zu vectors", name, v.n);
    shardlm_tokenizer_free(t);
    vectors_free(&v);
}

Test(bpe_vectors, llama_bpe) { check_vocab_vectors("llama-bpe", 1); }
Test(bpe_vectors, qwen2) { check_vocab_vectors("qwen2", 1); }
Test(bpe_vectors, qwen35) { check_vocab_vectors("qwen35", 1); }
Test(bpe_vectors, gpt_2) { check_vocab_vectors("gpt-2", 1); }

/* Phi-3 is SentencePiece: its round trip is the one test_tokenizer.c checks
 * for Llama 2 (a dummy prefix, dropped after BOS). */
Test(bpe_vectors, phi_3)
{
    check_vocab_vectors("phi-3", 0);
    vectors v;
    char inp_path[4096];
    snprintf(inp_path, sizeof inp_path, "%s", tu_shared("models/vocab/ggml-vocab-phi-3.gguf.inp"));
    vectors_load(&v, inp_path, tu_shared("models/vocab/ggml-vocab-phi-3.gguf.out"));
    shardlm_tokenizer *t = load_vocab("phi-3");
    for (size_t i = 0; i < v.n; i++) {
        size_t n, dlen, cap = v.len[i] + 2;
        int32_t *ids = malloc(cap * sizeof *ids);
        cr_assert_eq(shardlm_tokenizer_encode(t, v.s[i], v.len[i], SHARDLM_TOK_ADD_BOS, ids, cap, &n), 0);
        char *back = decode(t, ids, n, &dlen);
        cr_assert(dlen == v.len[i] && memcmp(back, v.s[i], dlen) == 0, "phi-3 string %zu gave '%s'", i, back);
        free(back);
        free(ids);
    }
    shardlm_tokenizer_free(t);
    vectors_free(&v);
}

/* ---- another pre-tokenizer over the gpt-2 vocabulary ---- */

static char **copy_strs(const shardlm_gguf *g, const char *key, uint64_t *n)
{
    shardlm_gguf_vtype et;
    const void *data;
    cr_assert_eq(shardlm_gguf_get_arr(g, key, &et, n, &data), 0);
    char **v = malloc(*n * sizeof *v);
    cr_assert_not_null(v);
    for (uint64_t i = 0; i < *n; i++) {
        shardlm_gguf_str s;
        cr_assert_eq(shardlm_gguf_arr_str(g, key, i, &s), 0);
        v[i] = strndup(s.ptr, s.len);
    }
    return v;
}

static void free_strs(char **v, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* The gpt-2 vocabulary with tokenizer.ggml.pre = pre, as
 * tests/peer/gguf_set_pre.py writes it for llama.cpp. */
static const char *gpt2_with_pre(const char *pre)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/gpt-2.%s.gguf", tu_tmpdir(), pre);
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(tu_shared("models/vocab/ggml-vocab-gpt-2.gguf"), &g), 0);
    uint64_t nt, nm;
    char **toks = copy_strs(g, "tokenizer.ggml.tokens", &nt), **merges = copy_strs(g, "tokenizer.ggml.merges", &nm);
    int32_t *types = malloc(nt * sizeof *types);
    for (uint64_t i = 0; i < nt; i++) {
        double x;
        cr_assert_eq(shardlm_gguf_arr_f64(g, "tokenizer.ggml.token_type", i, &x), 0);
        types[i] = (int32_t)x;
    }
    shardlm_gguf_close(g);
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(32);
    shardlm_gguf_writer_str(w, "general.architecture", "gpt2");
    shardlm_gguf_writer_str(w, "tokenizer.ggml.model", "gpt2");
    shardlm_gguf_writer_str(w, "tokenizer.ggml.pre", pre);
    shardlm_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, nt);
    shardlm_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", types, nt);
    shardlm_gguf_writer_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, nm);
    shardlm_gguf_writer_u32(w, "tokenizer.ggml.bos_token_id", 50256);
    shardlm_gguf_writer_u32(w, "tokenizer.ggml.eos_token_id", 50256);
    cr_assert_eq(shardlm_gguf_writer_write(w, path, NULL, NULL), 0, "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    free_strs(toks, nt);
    free_strs(merges, nm);
    free(types);
    return path;
}

static const char *data_path(const char *name)
{
    static char path[2][512];
    static int k;
    const char *src = getenv("SHARDLM_SRC");
    k ^= 1;
    snprintf(path[k], sizeof path[k], "%s/tests/data/%s", src ? src : "..", name);
    return path[k];
}

/* rt: 1 checks round trips too; -1 parses special tokens instead. */
static void check_file(const shardlm_tokenizer *t, const char *what, const char *inp, const char *out, int rt)
{
    vectors v;
    vectors_load(&v, inp, out);
    for (size_t i = 0; i < v.n; i++) {
        expect_ids(t, what, i, v.s[i], v.len[i], v.line[i], rt < 0);
        if (rt > 0) expect_round_trips(t, what, i, v.s[i], v.len[i]);
    }
    vectors_free(&v);
}

static void check_pre(const char *pre)
{
    shardlm_tokenizer *t = load_tok(gpt2_with_pre(pre));
    cr_assert_str_eq(shardlm_tokenizer_pre(t), pre);
    char out[128], what[64];
    snprintf(out, sizeof out, "vocab-gpt-2.%s.out", pre);
    snprintf(what, sizeof what, "gpt-2 with pre %s", pre);
    check_file(t, what, tu_shared("models/vocab/ggml-vocab-gpt-2.gguf.inp"), data_path(out), 1);
    snprintf(out, sizeof out, "bpe-stress.gpt-2.%s.out", pre);
    check_file(t, what, data_path("bpe-stress.inp"), data_path(out), 0);
    snprintf(out, sizeof out, "bpe-fuzz.gpt-2.%s.out", pre);
    check_file(t, what, data_path("bpe-fuzz.inp"), data_path(out), 0);
    shardlm_tokenizer_free(t);
}

Test(bpe_pre, smollm) { check_pre("smollm"); }
Test(bpe_pre, default_pre) { check_pre("default"); }

/* ---- stress strings, and random ones (tests/peer/gen_fuzz.py), plain
 * and with special-token parsing ---- */

static void check_stress(const char *name)
{
    shardlm_tokenizer *t = load_vocab(name);
    char out[128], what[128];
    snprintf(out, sizeof out, "bpe-stress.%s.out", name);
    check_file(t, name, data_path("bpe-stress.inp"), data_path(out), 0);
    snprintf(out, sizeof out, "bpe-fuzz.%s.out", name);
    snprintf(what, sizeof what, "%s fuzz", name);
    check_file(t, what, data_path("bpe-fuzz.inp"), data_path(out), 0);
    snprintf(out, sizeof out, "bpe-fuzz.%s.special.out", name);
    snprintf(what, sizeof what, "%s fuzz, special tokens parsed", name);
    check_file(t, what, data_path("bpe-fuzz.inp"), data_path(out), -1);
    shardlm_tokenizer_free(t);
}

Test(bpe_stress, llama_bpe) { check_stress("llama-bpe"); }
Test(bpe_stress, qwen2) { check_stress("qwen2"); }
Test(bpe_stress, qwen35) { check_stress("qwen35"); }
Test(bpe_stress, gpt_2) { check_stress("gpt-2"); }
Test(bpe_stress, phi_3) { check_stress("phi-3"); }

/* ---- special tokens in chat prompts (ids from llama.cpp's tokenizer with
 * parse_special, and from the vocabulary: each stretch encoded alone) ---- */

static void expect_special(const shardlm_tokenizer *t, const char *text, int add, const int32_t *want, size_t nw)
{
    size_t cap = strlen(text) + 2, n;
    int32_t *got = malloc(cap * sizeof *got);
    cr_assert_eq(shardlm_tokenizer_encode_special(t, text, strlen(text), add, got, cap, &n), 0);
    cr_assert_eq(n, nw, "'%s': %zu ids, expected %zu", text, n, nw);
    for (size_t i = 0; i < n; i++) cr_assert_eq(got[i], want[i], "'%s' id %zu: %d, expected %d", text, i, got[i], want[i]);
    free(got);
}

static int32_t one_id(const shardlm_tokenizer *t, const char *s)
{
    size_t n;
    int32_t *ids = encode(t, s, strlen(s), 0, &n), id = ids[0];
    cr_assert_eq(n, 1, "'%s' is %zu tokens", s, n);
    free(ids);
    return id;
}

Test(bpe_special, llama3_chat)
{
    shardlm_tokenizer *t = load_vocab("llama-bpe");
    const char *chat = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
    int32_t want[] = {128006, 882, 128007, 271, 13347, 128009};
    cr_assert_eq(one_id(t, "user"), 882);
    cr_assert_eq(one_id(t, "\n\n"), 271);
    cr_assert_eq(one_id(t, "Hi"), 13347);
    expect_special(t, chat, 0, want, 6);
    int32_t with_bos[] = {128000, 128006, 882, 128007, 271, 13347, 128009};
    cr_assert_eq(shardlm_tokenizer_add_special(t), SHARDLM_TOK_ADD_BOS);
    expect_special(t, chat, shardlm_tokenizer_add_special(t), with_bos, 7);
    /* without special parsing the control-token text is plain text */
    size_t n;
    int32_t *ids = encode(t, chat, strlen(chat), 0, &n);
    int32_t plain[] = {27, 91, 2527, 8932, 851, 91, 29, 882, 27, 91, 408, 8932, 851, 91, 1363, 13347, 27, 91, 68, 354,
                       851, 91, 29};
    cr_assert_eq(n, sizeof plain / sizeof plain[0]);
    cr_assert_arr_eq(ids, plain, sizeof plain);
    free(ids);
    shardlm_tokenizer_free(t);
}

Test(bpe_special, qwen2_chat)
{
    shardlm_tokenizer *t = load_vocab("qwen2");
    int32_t want[] = {151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198};
    cr_assert_eq(one_id(t, "user"), 872);
    cr_assert_eq(one_id(t, "assistant"), 77091);
    cr_assert_eq(shardlm_tokenizer_add_special(t), 0, "Qwen adds no BOS");
    expect_special(t, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", shardlm_tokenizer_add_special(t),
                   want, 9);
    shardlm_tokenizer_free(t);
}

/* Phi-3's added tokens swallow the whitespace after them (llama.cpp keys
 * this on general.name), except <s>. */
Test(bpe_special, phi3_rstrip)
{
    shardlm_tokenizer *t = load_vocab("phi-3");
    int32_t want[] = {1, 32010, 6324, 32007, 32001};
    expect_special(t, "<|user|>\nHi<|end|>\n<|assistant|>\n", shardlm_tokenizer_add_special(t), want, 5);
    int32_t want2[] = {1, 518, 25580, 29962, 6324, 29871, 2, 921};
    expect_special(t, "<s>[INST] Hi </s> x", 0, want2, 8);
    shardlm_tokenizer_free(t);
}

Test(bpe_special, gpt2_repeated)
{
    shardlm_tokenizer *t = load_vocab("gpt-2");
    int32_t want[] = {50256, 50256, 17250, 50256};
    expect_special(t, "<|endoftext|><|endoftext|>Hi<|endoftext|>", 0, want, 4);
    shardlm_tokenizer_free(t);
}

/* ---- end of generation and flags (llama.cpp's llama_vocab_is_eog) ---- */

static void expect_eog(const char *name, const int32_t *want, size_t nw, int add, int32_t bos, int32_t eos)
{
    shardlm_tokenizer *t = load_vocab(name);
    int32_t got[16];
    size_t n = shardlm_tokenizer_eog(t, got, 16);
    cr_assert_eq(n, nw, "%s: %zu EOG ids, expected %zu", name, n, nw);
    cr_assert_arr_eq(got, want, nw * sizeof *want, "%s EOG set", name);
    for (size_t i = 0; i < nw; i++) cr_assert(shardlm_tokenizer_is_eog(t, want[i]));
    cr_assert(!shardlm_tokenizer_is_eog(t, 0) && !shardlm_tokenizer_is_eog(t, -1));
    cr_assert(!shardlm_tokenizer_is_eog(t, shardlm_tokenizer_n_vocab(t)));
    cr_assert_eq(shardlm_tokenizer_add_special(t), add, "%s add flags", name);
    cr_assert_eq(shardlm_tokenizer_bos(t), bos);
    cr_assert_eq(shardlm_tokenizer_eos(t), eos);
    shardlm_tokenizer_free(t);
}

Test(bpe_eog, llama_bpe) { expect_eog("llama-bpe", (int32_t[]){128001, 128009}, 2, SHARDLM_TOK_ADD_BOS, 128000, 128001); }
/* "</s>" (128247) is an ordinary token of Qwen's, but llama.cpp ends on it by its text */
Test(bpe_eog, qwen2) { expect_eog("qwen2", (int32_t[]){128247, 151643, 151645}, 3, 0, 151643, 151643); }
Test(bpe_eog, qwen35) { expect_eog("qwen35", (int32_t[]){128247, 151643, 151645}, 3, 0, 151643, 151643); }
Test(bpe_eog, gpt_2) { expect_eog("gpt-2", (int32_t[]){50256}, 1, 0, 50256, 50256); }
Test(bpe_eog, phi_3) { expect_eog("phi-3", (int32_t[]){2, 32000, 32007}, 3, SHARDLM_TOK_ADD_BOS, 1, 32000); }

Test(bpe_eog, model_and_pre)
{
    shardlm_tokenizer *t = load_vocab("qwen35");
    cr_assert_str_eq(shardlm_tokenizer_model(t), "gpt2");
    cr_assert_str_eq(shardlm_tokenizer_pre(t), "qwen35");
    shardlm_tokenizer_free(t);
    t = load_vocab("phi-3");
    cr_assert_str_eq(shardlm_tokenizer_model(t), "llama");
    shardlm_tokenizer_free(t);
}
