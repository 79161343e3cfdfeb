/* test_tokenizer_bpe_input.c - byte-level BPE on hard input: long texts
 * (1 MB without a space, 100k repeats of one character) against llama.cpp's
 * ids, malformed vocabularies (each a clear error naming the GGUF key), and
 * the `tokenize` and `info` commands on the real vocabularies. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_text.h"
#include "test_util.h"

static shardlm_tokenizer *load_vocab(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "models/vocab/ggml-vocab-%s.gguf", name);
    shardlm_gguf *g = NULL;
    shardlm_tokenizer *t = NULL;
    cr_assert_eq(shardlm_gguf_open(tu_shared(rel), &g), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_tokenizer_from_gguf(g, &t), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_gguf_close(g);
    return t;
}

/* ---- long inputs: llama.cpp's id count and the FNV-1a of its ids ---- */

typedef struct {
    const char *name, *unit;
    size_t reps;
    const char *tail;
    size_t n_llama3;
    uint64_t h_llama3;
    size_t n_qwen2;
    uint64_t h_qwen2;
} long_case;

static const long_case LONG[] = {
    {"a100k", "a", 100000, "", 12500, 0x3e8559ddc8a65265ULL, 12500, 0xc12ff65a1e235c25ULL},
    {"abc1m", "abcdefghij", 100000, "", 200000, 0x91df8e15f6764aa5ULL, 200000, 0x8dae421cb9f24725ULL},
    {"sp100k", " ", 100000, "x", 783, 0x373c39ae588b55e0ULL, 783, 0x2a7e2d3517a6b78aULL},
    {"d100k", "1", 100000, "", 33334, 0xffa7758b159ef719ULL, 100000, 0xec1cb6d54d532f25ULL},
    {"e50k", "\xc3\xa9", 50000, "", 50000, 0x2aeaa24364c9d685ULL, 50000, 0x84acdb052cb972c5ULL},
    {"nl100k", "\n", 100000, "", 3125, 0x1d2f1d36bf8faf14ULL, 3125, 0x0d783c7deef575a3ULL},
    {"hello1m", "Hello world! ", 80000, "", 240001, 0x5aea38467247c5f6ULL, 240001, 0x0258d4cc1cc50cb5ULL},
};

static char *repeat(const long_case *c, size_t *len)
{
    size_t u = strlen(c->unit), k = strlen(c->tail);
    char *s = malloc(u * c->reps + k + 1);
    cr_assert_not_null(s);
    for (size_t i = 0; i < c->reps; i++) memcpy(s + i * u, c->unit, u);
    memcpy(s + u * c->reps, c->tail, k);
    *len = u * c->reps + k;
    return s;
}

static void check_long(const char *vocab, int qwen)
{
    shardlm_tokenizer *t = load_vocab(vocab);
    for (size_t c = 0; c < sizeof LONG / sizeof LONG[0]; c++) {
        size_t len, n;
        char *s = repeat(&LONG[c], &len);
        int32_t *ids = malloc((len + 2) * sizeof *ids);
        cr_assert_not_null(ids);
        double t0 = shardlm_now_s();
        cr_assert_eq(shardlm_tokenizer_encode(t, s, len, 0, ids, len + 2, &n), SHARDLM_OK, "%s", shardlm_err_get());
        double dt = shardlm_now_s() - t0;
        uint64_t h = shardlm_fnv1a64(SHARDLM_FNV_INIT, ids, n * sizeof *ids);
        size_t wn = qwen ? LONG[c].n_qwen2 : LONG[c].n_llama3;
        uint64_t wh = qwen ? LONG[c].h_qwen2 : LONG[c].h_llama3;
        cr_assert(n == wn && h == wh, "%s %s: %zu ids (hash %016llx), llama.cpp %zu (%016llx)", vocab, LONG[c].name, n,
                  (unsigned long long)h, wn, (unsigned long long)wh);
        cr_log_info("%s %s: %zu bytes, %zu ids, %.3f s", vocab, LONG[c].name, len, n, dt);
        size_t cap = len + shardlm_detok_max(t), at = 0; /* decoded back in full */
        char *back = malloc(cap);
        shardlm_detok d;
        shardlm_detok_init(&d);
        for (size_t i = 0; i < n; i++) at += shardlm_detok_push(t, &d, ids[i], back + at, cap - at);
        at += shardlm_detok_flush(&d, back + at, cap - at);
        cr_assert(at == len && memcmp(back, s, len) == 0, "%s %s: round trip", vocab, LONG[c].name);
        free(back);
        free(ids);
        free(s);
    }
    shardlm_tokenizer_free(t);
}

Test(bpe_long, llama_bpe) { check_long("llama-bpe", 0); }
Test(bpe_long, qwen2) { check_long("qwen2", 1); }

/* Bytes that are not UTF-8 are encoded as themselves (llama.cpp would put
 * U+FFFD in their place) and decode to U+FFFD. */
Test(bpe_long, invalid_utf8)
{
    shardlm_tokenizer *t = load_vocab("llama-bpe");
    const char in[] = "a\xff" "b\xe2\x82 \xc3" "\xed\xa0\x80" "z";
    size_t n, len = sizeof in - 1;
    int32_t ids[64];
    cr_assert_eq(shardlm_tokenizer_encode(t, in, len, 0, ids, 64, &n), SHARDLM_OK);
    char out[256];
    size_t at = 0;
    shardlm_detok d;
    shardlm_detok_init(&d);
    for (size_t i = 0; i < n; i++) at += shardlm_detok_push(t, &d, ids[i], out + at, sizeof out - at);
    at += shardlm_detok_flush(&d, out + at, sizeof out - at);
    out[at] = 0;
    cr_assert_str_eq(out, "a\xef\xbf\xbd" "b\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz");
    shardlm_tokenizer_free(t);
}

/* ---- malformed vocabularies ---- */

/* GPT-2's bytes_to_unicode, written out for the test: byte b's character. */
static void byte_char(int b, char *out)
{
    int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE, cp = b;
    if (!printable) {
        int k = 0;
        for (int x = 0; x < b; x++)
            k += !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE);
        cp = 256 + k;
    }
    if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
    else out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

typedef struct {
    const char *extra[8];  /* tokens after the 256 bytes */
    const char *merges[8]; /* NULL-terminated */
    const char *pre;       /* NULL: absent */
    const char *model;
    int n_types;           /* token_type entries (-1: as many as tokens) */
    int merges_as_ints;
    int bos, add_bos;      /* -1: absent */
} fake_vocab;

static const char *write_fake(const fake_vocab *v, const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", tu_tmpdir(), name);
    static char bytes[256][4];
    const char *toks[264];
    int n = 0;
    for (int b = 0; b < 256; b++) byte_char(b, bytes[b]), toks[n++] = bytes[b];
    for (int i = 0; v->extra[i]; i++) toks[n++] = v->extra[i];
    int32_t types[264];
    for (int i = 0; i < n; i++) types[i] = 1;
    int nm = 0;
    while (v->merges[nm]) nm++;
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(32);
    shardlm_gguf_writer_str(w, "general.architecture", "gpt2");
    shardlm_gguf_writer_str(w, "tokenizer.ggml.model", v->model ? v->model : "gpt2");
    if (v->pre) shardlm_gguf_writer_str(w, "tokenizer.ggml.pre", v->pre);
    shardlm_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    shardlm_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)(v->n_types < 0 ? n : v->n_types));
    if (v->merges_as_ints) shardlm_gguf_writer_arr_i32(w, "tokenizer.ggml.merges", types, 3);
    else if (nm || v->merges[0] == NULL) shardlm_gguf_writer_arr_str(w, "tokenizer.ggml.merges", v->merges, (uint64_t)nm);
    if (v->bos >= 0) shardlm_gguf_writer_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    if (v->add_bos >= 0) shardlm_gguf_writer_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
    cr_assert_eq(shardlm_gguf_writer_write(w, path, NULL, NULL), 0, "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    return path;
}

static shardlm_tokenizer *open_fake(const char *path, int *rc)
{
    shardlm_gguf *g = NULL;
    shardlm_tokenizer *t = NULL;
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK, "%s", shardlm_err_get());
    *rc = shardlm_tokenizer_from_gguf(g, &t);
    shardlm_gguf_close(g);
    return t;
}

static void expect_refused(const fake_vocab *v, const char *name, const char *p1, const char *p2)
{
    const char *path = write_fake(v, name);
    int rc;
    shardlm_tokenizer *t = open_fake(path, &rc);
    cr_assert_eq(rc, SHARDLM_EINPUT, "%s: loaded", name);
    cr_assert_null(t);
    const char *e = shardlm_err_get();
    cr_assert(strstr(e, path) && strstr(e, p1) && (!p2 || strstr(e, p2)), "%s: error '%s' lacks '%s' / '%s'", name, e,
              p1, p2 ? p2 : "");
}

#define GOOD_EXTRA {"ab", "\xc4\xa0" "ab", "bc", NULL}
#define GOOD_MERGES {"b c", "a b", "\xc4\xa0 ab", NULL}

Test(bpe_bad, good_fake_vocab_merges_by_rank)
{
    fake_vocab v = {GOOD_EXTRA, GOOD_MERGES, "gpt-2", NULL, -1, 0, -1, -1};
    int rc;
    shardlm_tokenizer *t = open_fake(write_fake(&v, "good"), &rc);
    cr_assert_eq(rc, SHARDLM_OK, "%s", shardlm_err_get());
    int32_t ids[16];
    size_t n;
    cr_assert_eq(shardlm_tokenizer_encode(t, "ab ab abc", 9, 0, ids, 16, &n), 0);
    int32_t want[] = {256, 257, ' ', 'a', 258}; /* "bc" (rank 0) beats "ab" (rank 1) in "abc" */
    cr_assert_eq(n, 5, "%zu ids", n);
    cr_assert_arr_eq(ids, want, sizeof want);
    cr_assert_eq(shardlm_tokenizer_bos(t), -1, "no default BOS for BPE");
    cr_assert_eq(shardlm_tokenizer_eog(t, ids, 16), 0);
    shardlm_tokenizer_free(t);
}

Test(bpe_bad, malformed_merge_line)
{
    fake_vocab v = {GOOD_EXTRA, {"b c", "ab", NULL}, "gpt-2", NULL, -1, 0, -1, -1};
    expect_refused(&v, "malformed", "tokenizer.ggml.merges[1] 'ab'", "not two tokens");
}

Test(bpe_bad, merge_names_unknown_token)
{
    fake_vocab v = {GOOD_EXTRA, {"a b", "a zz", NULL}, "gpt-2", NULL, -1, 0, -1, -1};
    expect_refused(&v, "unknown", "tokenizer.ggml.merges[1] 'a zz' names 'zz'", "tokenizer.ggml.tokens");
}

Test(bpe_bad, merge_makes_unknown_token)
{
    fake_vocab v = {GOOD_EXTRA, {"a b", "c d", NULL}, "gpt-2", NULL, -1, 0, -1, -1};
    expect_refused(&v, "result", "tokenizer.ggml.merges[1] 'c d'", "makes a token that is not");
}

Test(bpe_bad, token_type_wrong_length)
{
    fake_vocab v = {GOOD_EXTRA, GOOD_MERGES, "gpt-2", NULL, 100, 0, -1, -1};
    expect_refused(&v, "types", "tokenizer.ggml.token_type has 100 numeric entries, expected 259", NULL);
}

Test(bpe_bad, missing_merges)
{
    fake_vocab v = {GOOD_EXTRA, {NULL}, "gpt-2", NULL, -1, 0, -1, -1};
    const char *path = write_fake(&v, "empty_merges");
    int rc;
    shardlm_tokenizer *t = open_fake(path, &rc); /* an empty array is a vocabulary of bytes */
    cr_assert_eq(rc, SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_tokenizer_free(t);
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(32);
    const char *toks[] = {"a", "b"};
    shardlm_gguf_writer_str(w, "tokenizer.ggml.model", "gpt2");
    shardlm_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", toks, 2);
    char p[512];
    snprintf(p, sizeof p, "%s/no_merges.gguf", tu_tmpdir());
    cr_assert_eq(shardlm_gguf_writer_write(w, p, NULL, NULL), 0);
    shardlm_gguf_writer_free(w);
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(p, &g), 0);
    cr_assert_eq(shardlm_tokenizer_from_gguf(g, &t), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "tokenizer.ggml.merges is missing"), "%s", shardlm_err_get());
    shardlm_gguf_close(g);
}

Test(bpe_bad, merges_not_strings)
{
    fake_vocab v = {GOOD_EXTRA, GOOD_MERGES, "gpt-2", NULL, -1, 1, -1, -1};
    expect_refused(&v, "ints", "tokenizer.ggml.merges", "not an array of strings");
}

Test(bpe_bad, unknown_pre_named_with_the_supported_list)
{
    fake_vocab v = {GOOD_EXTRA, GOOD_MERGES, "frobnicate", NULL, -1, 0, -1, -1};
    expect_refused(&v, "pre", "tokenizer.ggml.pre is 'frobnicate'", "supported: default, llama-bpe");
}

Test(bpe_bad, unknown_model)
{
    fake_vocab v = {GOOD_EXTRA, GOOD_MERGES, "gpt-2", "t5", -1, 0, -1, -1};
    expect_refused(&v, "model", "tokenizer.ggml.model is 't5'", "'gpt2' (byte-level BPE)");
}

Test(bpe_bad, add_bos_without_bos)
{
    fake_vocab v = {GOOD_EXTRA, GOOD_MERGES, "llama-bpe", NULL, -1, 0, -1, -1}; /* llama-bpe adds BOS */
    expect_refused(&v, "nobos", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id");
    fake_vocab ok = {GOOD_EXTRA, GOOD_MERGES, "llama-bpe", NULL, -1, 0, -1, 0};
    int rc;
    shardlm_tokenizer *t = open_fake(write_fake(&ok, "nobos_ok"), &rc);
    cr_assert_eq(rc, SHARDLM_OK, "add_bos_token false needs no BOS: %s", shardlm_err_get());
    shardlm_tokenizer_free(t);
}

Test(bpe_bad, bos_out_of_range)
{
    fake_vocab v = {GOOD_EXTRA, GOOD_MERGES, "gpt-2", NULL, -1, 0, 5000, -1};
    expect_refused(&v, "bosrange", "tokenizer.ggml.bos_token_id = 5000", "259-token");
}

Test(bpe_bad, duplicate_token)
{
    fake_vocab v = {{"ab", "ab", NULL}, {"a b", NULL}, "gpt-2", NULL, -1, 0, -1, -1};
    expect_refused(&v, "dup", "tokenizer.ggml.tokens[257] 'ab' repeats token 256", NULL);
}

/* ---- the CLI on real vocabularies ---- */

Test(bpe_cli, tokenize_qwen2_chat)
{
    char *argv[] = {(char *)tu_bin(), "tokenize", "-m", (char *)tu_shared("models/vocab/ggml-vocab-qwen2.gguf"),
                    "--special", "<|im_start|>user\nHi<|im_end|>", NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "151644 872 198 13048 151645\n");
    tu_result_free(&r);
}

Test(bpe_cli, tokenize_llama3_bos)
{
    char *argv[] = {(char *)tu_bin(), "tokenize", "-m", (char *)tu_shared("models/vocab/ggml-vocab-llama-bpe.gguf"),
                    "--bos", "Hello world", NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "128000 9906 1917\n");
    tu_result_free(&r);
}

Test(bpe_cli, info_llama3)
{
    char *argv[] = {(char *)tu_bin(), "info", (char *)tu_shared("models/vocab/ggml-vocab-llama-bpe.gguf"), NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "stderr: %s", r.err);
    const char *want[] = {"  model       gpt2\n", "  vocab size  128256\n", "  bos id      128000\n",
                          "  pre         llama-bpe\n", "  add bos     yes\n", "  add eos     no\n",
                          "  eog ids     128001 '<|end_of_text|>', 128009 '<|eot_id|>'\n"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(r.out, want[i]), "info lacks '%s':\n%s", want[i], r.out);
    cr_assert_str_empty(r.err);
    tu_result_free(&r);
}

Test(bpe_cli, info_and_tokenize_on_a_bad_vocab)
{
    fake_vocab v = {GOOD_EXTRA, {"a zz", NULL}, "gpt-2", NULL, -1, 0, -1, -1};
    const char *path = write_fake(&v, "cli_bad");
    char *info[] = {(char *)tu_bin(), "info", (char *)path, NULL};
    tu_result r = tu_run(info, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "info still describes the file: %s", r.err);
    cr_assert(strstr(r.out, "  error       ") && strstr(r.out, "tokenizer.ggml.merges[0]"), "%s", r.out);
    tu_result_free(&r);
    char *tok[] = {(char *)tu_bin(), "tokenize", "-m", (char *)path, "x", NULL};
    tu_expect_exit(tok, 2, "tokenizer.ggml.merges[0] 'a zz' names 'zz'");
}
