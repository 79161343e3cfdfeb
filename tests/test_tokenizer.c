/* test_tokenizer.c - the SentencePiece tokenizer against llama.cpp's Llama 2
 * test vectors and run.c's stories260K outputs, the streaming detokenizer's
 * UTF-8 handling, and the `shardlm tokenize` command. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_text.h"
#include "test_util.h"
#include "tokenizer_util.h"


static int32_t *encode(const shardlm_tokenizer *t, const char *s, size_t len, int bos, size_t *n)
{
    size_t cap = 4;
    int32_t *ids = malloc(cap * sizeof *ids);
    cr_assert_not_null(ids);
    int rc = shardlm_tokenizer_encode(t, s, len, bos, ids, cap, n);
    cr_assert_eq(rc, SHARDLM_OK, "%s", shardlm_err_get());
    if (*n > cap) { /* exercises the "call again with a larger buffer" contract */
        cap = *n;
        ids = realloc(ids, cap * sizeof *ids);
        cr_assert_not_null(ids);
        size_t n2;
        cr_assert_eq(shardlm_tokenizer_encode(t, s, len, bos, ids, cap, &n2), SHARDLM_OK);
        cr_assert_eq(n2, *n);
    }
    return ids;
}

/* Decodes as run.c prints: token by token, the first id being BOS. */
static char *decode(const shardlm_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    size_t cap = n * 64 + 16, at = 0;
    char *out = malloc(cap + 1);
    cr_assert_not_null(out);
    shardlm_detok d;
    shardlm_detok_init(&d);
    for (size_t i = 0; i < n; i++) at += shardlm_detok_push(t, &d, ids[i], out + at, cap - at);
    at += shardlm_detok_flush(&d, out + at, cap - at);
    out[at] = 0;
    *len = at;
    return out;
}

/* Splits the .inp file into its 46 strings (pointers into buf). */
static size_t split_inputs(char *buf, size_t len, const char **s, size_t *slen, size_t max)
{
    size_t k = 0;
    char *p = buf, *end = buf + len;
    while (p < end && k < max) {
        char *q = memmem(p, (size_t)(end - p), SEP, strlen(SEP));
        if (!q) break;
        s[k] = p;
        slen[k++] = (size_t)(q - p);
        p = q + strlen(SEP);
    }
    return k;
}

static size_t parse_ids(const char *line, int32_t *ids, size_t max)
{
    size_t n = 0;
    char *end;
    for (;;) {
        long v = strtol(line, &end, 10);
        if (end == line || n == max) break;
        ids[n++] = (int32_t)v;
        line = end;
    }
    return n;
}

static void check_vectors(const char *model)
{
    shardlm_tokenizer *t = load_tok(tu_shared(model));
    size_t inp_len, out_len;
    char *inp = tu_read_file(tu_shared("models/ggml-vocab-llama-spm.gguf.inp"), &inp_len);
    char *outs = tu_read_file(tu_shared("models/ggml-vocab-llama-spm.gguf.out"), &out_len);
    cr_assert(inp && outs);
    const char *s[64];
    size_t slen[64];
    size_t k = split_inputs(inp, inp_len, s, slen, 64);
    cr_assert_eq(k, 46, "expected 46 test strings, found %zu", k);
    static int32_t want[4096];
    char *line = outs;
    for (size_t i = 0; i < k; i++) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "%s: .out has fewer lines than .inp", model);
        *nl = 0;
        size_t nw = parse_ids(line, want, 4096), n;
        int32_t *got = encode(t, s[i], slen[i], 0, &n);
        cr_assert_eq(n, nw, "%s: string %zu '%.*s': %zu ids, expected %zu", model, i, (int)slen[i], s[i], n, nw);
        for (size_t j = 0; j < n; j++)
            cr_assert_eq(got[j], want[j], "%s: string %zu, id %zu: %d, expected %d", model, i, j, got[j], want[j]);
        /* Round trip: decoding after a BOS drops exactly the dummy prefix. */
        int32_t *withbos = encode(t, s[i], slen[i], 1, &n);
        size_t dlen;
        char *back = decode(t, withbos, n, &dlen);
        cr_assert(dlen == slen[i] && memcmp(back, s[i], dlen) == 0, "%s: string %zu round trip gave '%s'", model, i,
                  back);
        free(back);
        free(withbos);
        free(got);
        line = nl + 1;
    }
    free(inp);
    free(outs);
    shardlm_tokenizer_free(t);
}

Test(tokenizer, llama_vectors_vocab_only) { check_vectors("models/ggml-vocab-llama-spm.gguf"); }
Test(tokenizer, llama_vectors_tiny_random) { check_vectors("models/llama-2-tiny-random.gguf"); }

Test(tokenizer, llama_vocab_metadata)
{
    shardlm_tokenizer *t = load_tok(tu_shared("models/llama-2-tiny-random.gguf"));
    cr_assert_eq(shardlm_tokenizer_n_vocab(t), 32000);
    cr_assert_eq(shardlm_tokenizer_bos(t), 1);
    cr_assert_eq(shardlm_tokenizer_eos(t), 2);
    size_t len;
    const char *p = shardlm_tokenizer_piece(t, 15043, &len);
    cr_assert(len == 8 && memcmp(p, "\xe2\x96\x81Hello", 8) == 0);
    cr_assert_null(shardlm_tokenizer_piece(t, 32000, &len));
    shardlm_tokenizer_free(t);
}

/* Chat templates write control tokens as text: "<s>" and "</s>" become
 * BOS/EOS and each stretch of plain text is encoded as a fresh string. */
Test(tokenizer, control_token_text_in_chat_prompts)
{
    shardlm_tokenizer *t = load_tok(tu_shared("models/llama-2-tiny-random.gguf"));
    const char *text = "<s>[INST] Hi [/INST] Hello </s><s>[INST] Bye [/INST]";
    int32_t got[128], a[64], b[64];
    size_t n = 0, na = 0, nb = 0;
    cr_assert_eq(shardlm_tokenizer_encode_special(t, text, strlen(text), 0, got, 128, &n), 0);
    const char *fa = "[INST] Hi [/INST] Hello ", *fb = "[INST] Bye [/INST]";
    cr_assert_eq(shardlm_tokenizer_encode(t, fa, strlen(fa), 0, a, 64, &na), 0);
    cr_assert_eq(shardlm_tokenizer_encode(t, fb, strlen(fb), 0, b, 64, &nb), 0);
    cr_assert_eq(n, 1 + na + 2 + nb, "got %zu ids", n);
    cr_assert_eq(got[0], 1);
    cr_assert(memcmp(got + 1, a, na * sizeof(int32_t)) == 0);
    cr_assert_eq(got[1 + na], 2);
    cr_assert_eq(got[2 + na], 1);
    cr_assert(memcmp(got + 3 + na, b, nb * sizeof(int32_t)) == 0);
    /* without control-token text it is the plain encoder */
    cr_assert_eq(shardlm_tokenizer_encode_special(t, fa, strlen(fa), 1, got, 128, &n), 0);
    cr_assert_eq(n, na + 1);
    cr_assert(memcmp(got + 1, a, na * sizeof(int32_t)) == 0);
    shardlm_tokenizer_free(t);
}

Test(tokenizer, stories_prompt)
{
    shardlm_tokenizer *t = load_tok(tu_shared("models/stories260K.gguf"));
    cr_assert_eq(shardlm_tokenizer_n_vocab(t), 512);
    size_t n;
    int32_t *ids = encode(t, "Once upon a time", 16, 1, &n);
    int32_t want[] = {1, 403, 407, 261, 378};
    cr_assert_eq(n, 5);
    cr_assert_arr_eq(ids, want, sizeof want);
    free(ids);
    ids = encode(t, "", 0, 1, &n);
    cr_assert(n == 1 && ids[0] == 1, "empty text with BOS is just BOS");
    free(ids);
    ids = encode(t, "", 0, 0, &n);
    cr_assert_eq(n, 0);
    free(ids);
    shardlm_tokenizer_free(t);
}

/* Decodes an ids file of run.c and compares with its stdout (run.c ends
 * with a newline of its own). */
static void check_runc_decode(const char *ids_file, const char *txt_file)
{
    shardlm_tokenizer *t = load_tok(tu_shared("models/stories260K.gguf"));
    size_t len, tlen;
    char *txt = tu_read_file(tu_shared(ids_file), &len);
    char *want = tu_read_file(tu_shared(txt_file), &tlen);
    cr_assert(txt && want);
    static int32_t ids[1024];
    size_t n = parse_ids(txt, ids, 1024);
    cr_assert(n > 1 && ids[0] == 1, "%s starts with BOS", ids_file);
    size_t dlen;
    char *got = decode(t, ids, n, &dlen);
    cr_assert(tlen == dlen + 1 && memcmp(got, want, dlen) == 0 && want[dlen] == '\n',
              "decoded:\n%s\nexpected:\n%s", got, want);
    free(got);
    free(txt);
    free(want);
    shardlm_tokenizer_free(t);
}

Test(tokenizer, stories_greedy_decode)
{
    check_runc_decode("models/stories260K.runc-greedy-256.ids.txt", "models/stories260K.greedy.txt");
}

Test(tokenizer, stories_prompt_decode)
{
    check_runc_decode("models/stories260K.runc-prompt.ids.txt", "models/stories260K.runc-prompt.txt");
}

/* ---- streaming detokenizer ---- */

static int32_t byte_tok(const shardlm_tokenizer *t, unsigned b)
{
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    for (int32_t id = 0; id < shardlm_tokenizer_n_vocab(t); id++) {
        size_t len;
        const char *p = shardlm_tokenizer_piece(t, id, &len);
        if (len == 6 && memcmp(p, name, 6) == 0) return id;
    }
    cr_assert_fail("no byte token %s", name);
    return -1;
}

/* Pushes ids one by one, then flushes; returns the concatenated text. */
static char *push_all(const shardlm_tokenizer *t, const int32_t *ids, size_t n, size_t *step_len)
{
    static char buf[256];
    size_t at = 0;
    shardlm_detok d;
    shardlm_detok_init(&d);
    for (size_t i = 0; i < n; i++) {
        size_t k = shardlm_detok_push(t, &d, ids[i], buf + at, sizeof buf - 1 - at);
        if (step_len) step_len[i] = k;
        at += k;
    }
    at += shardlm_detok_flush(&d, buf + at, sizeof buf - 1 - at);
    buf[at] = 0;
    return buf;
}

Test(detok, split_utf8_char_comes_out_whole)
{
    shardlm_tokenizer *t = load_tok(tu_shared("models/stories260K.gguf"));
    int32_t ids[] = {byte_tok(t, 0xE2), byte_tok(t, 0x82), byte_tok(t, 0xAC)};
    size_t step[3];
    cr_assert_str_eq(push_all(t, ids, 3, step), "\xe2\x82\xac"); /* U+20AC */
    cr_assert(step[0] == 0 && step[1] == 0 && step[2] == 3, "held back until complete: %zu %zu %zu", step[0],
              step[1], step[2]);
    shardlm_tokenizer_free(t);
}

Test(detok, invalid_sequences_become_replacement_chars)
{
    shardlm_tokenizer *t = load_tok(tu_shared("models/stories260K.gguf"));
    int32_t lead_then_ascii[] = {byte_tok(t, 0xE2), byte_tok(t, 0x41)};
    cr_assert_str_eq(push_all(t, lead_then_ascii, 2, NULL), "\xef\xbf\xbd" "A");
    int32_t stray[] = {byte_tok(t, 0x80), byte_tok(t, 0xFF)};
    cr_assert_str_eq(push_all(t, stray, 2, NULL), "\xef\xbf\xbd\xef\xbf\xbd");
    int32_t truncated[] = {byte_tok(t, 0xF0), byte_tok(t, 0x9F)}; /* cut short by the flush */
    cr_assert_str_eq(push_all(t, truncated, 2, NULL), "\xef\xbf\xbd");
    int32_t overlong[] = {byte_tok(t, 0xE0), byte_tok(t, 0x80), byte_tok(t, 0x80)};
    cr_assert_str_eq(push_all(t, overlong, 3, NULL), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    int32_t lead_then_piece[] = {byte_tok(t, 0xC3), 403};
    cr_assert_str_eq(push_all(t, lead_then_piece, 2, NULL), "\xef\xbf\xbd Once");
    shardlm_tokenizer_free(t);
}

Test(detok, leading_space_dropped_only_after_bos)
{
    shardlm_tokenizer *t = load_tok(tu_shared("models/stories260K.gguf"));
    int32_t after_bos[] = {1, 403, 407};
    cr_assert_str_eq(push_all(t, after_bos, 3, NULL), "Once upon");
    int32_t no_bos[] = {403, 407};
    cr_assert_str_eq(push_all(t, no_bos, 2, NULL), " Once upon");
    int32_t eos_mid[] = {403, 2, 407};
    cr_assert_str_eq(push_all(t, eos_mid, 3, NULL), " Once upon", "EOS gives no text and drops nothing");
    shardlm_tokenizer_free(t);
}

Test(detok, control_bytes_dropped_whitespace_kept)
{
    shardlm_tokenizer *t = load_tok(tu_shared("models/stories260K.gguf"));
    int32_t ids[] = {byte_tok(t, 0x01), byte_tok(t, '\n'), byte_tok(t, 0x1B), byte_tok(t, '\t'), byte_tok(t, 0x7F),
                     byte_tok(t, 'x')};
    cr_assert_str_eq(push_all(t, ids, 6, NULL), "\n\t\x7fx");
    shardlm_tokenizer_free(t);
}

Test(tokenizer, malformed_utf8_input_falls_back_to_bytes)
{
    shardlm_tokenizer *t = load_tok(tu_shared("models/llama-2-tiny-random.gguf"));
    const char in[] = "a\xff" "b\xe2\x82 \xc3";
    size_t n;
    int32_t *ids = encode(t, in, sizeof in - 1, 0, &n);
    int seen_ff = 0;
    for (size_t i = 0; i < n; i++) seen_ff |= ids[i] == byte_tok(t, 0xFF);
    cr_assert(seen_ff, "0xFF became its byte token");
    free(ids);
    ids = encode(t, in, sizeof in - 1, 1, &n);
    size_t dlen;
    char *back = decode(t, ids, n, &dlen);
    cr_assert_str_eq(back, "a\xef\xbf\xbd" "b\xef\xbf\xbd \xef\xbf\xbd");
    free(back);
    free(ids);
    shardlm_tokenizer_free(t);
}

/* A long input stays fast (heap-ordered merges) and round-trips. */
Test(tokenizer, long_input_speed)
{
    shardlm_tokenizer *t = load_tok(tu_shared("models/llama-2-tiny-random.gguf"));
    size_t inp_len;
    char *inp = tu_read_file(tu_shared("models/ggml-vocab-llama-spm.gguf.inp"), &inp_len);
    cr_assert_not_null(inp);
    size_t len = 0, cap = 100 * 1024;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    while (len + inp_len <= cap) {
        memcpy(text + len, inp, inp_len);
        len += inp_len;
    }
    double t0 = shardlm_now_s();
    size_t n;
    int32_t *ids = encode(t, text, len, 1, &n);
    double dt = shardlm_now_s() - t0;
    cr_log_info("encoded %zu bytes into %zu tokens in %.4f s (%.0f tokens/s)", len, n, dt, (double)n / dt);
    fprintf(stderr, "encode speed: %zu bytes -> %zu tokens in %.4f s (%.0f tokens/s)\n", len, n, dt, (double)n / dt);
    cr_assert_lt(dt, 5.0, "100 KB took %.2f s", dt);
    size_t dlen;
    char *back = decode(t, ids, n, &dlen);
    cr_assert(dlen == len && memcmp(back, text, len) == 0, "long round trip");
    free(back);
    free(ids);
    free(text);
    free(inp);
    shardlm_tokenizer_free(t);
}

/* ---- synthetic vocabularies through the GGUF writer ---- */

static const char *write_vocab(const char *name, const char *model, const char *const *pieces, const float *scores,
                               const int32_t *types, uint64_t n, int add_space)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tu_tmpdir(), name);
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(32);
    cr_assert_not_null(w);
    shardlm_gguf_writer_str(w, "general.architecture", "llama");
    shardlm_gguf_writer_str(w, "tokenizer.ggml.model", model);
    shardlm_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", pieces, n);
    shardlm_gguf_writer_arr_f32(w, "tokenizer.ggml.scores", scores, n);
    shardlm_gguf_writer_arr_i32(w, "tokenizer.ggml.token_type", types, n);
    if (add_space >= 0) shardlm_gguf_writer_bool(w, "tokenizer.ggml.add_space_prefix", add_space);
    cr_assert_eq(shardlm_gguf_writer_write(w, path, NULL, NULL), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    return path;
}

static const char *const tiny_pieces[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "ab", "ba", "<0x63>", "<s"};
static const float tiny_scores[] = {0, 0, 0, -1, -2, -2, -5, -5, 0, 10};
static const int32_t tiny_types[] = {2, 3, 3, 1, 1, 1, 1, 1, 6, 1};

Test(tokenizer, ties_merge_leftmost_and_no_space_prefix)
{
    const char *p = write_vocab("tiny.gguf", "llama", tiny_pieces, tiny_scores, tiny_types, 10, 0);
    shardlm_tokenizer *t = load_tok(p);
    size_t n;
    int32_t *ids = encode(t, "aba", 3, 0, &n); /* "ab" and "ba" tie: the left pair wins */
    int32_t want[] = {6, 4};
    cr_assert_eq(n, 2);
    cr_assert_arr_eq(ids, want, sizeof want);
    free(ids);
    ids = encode(t, "c<s>", 4, 0, &n); /* byte fallback, unknown byte, no control-token merge */
    int32_t want2[] = {8, 9, 0};
    cr_assert_eq(n, 3, "got %zu ids", n);
    cr_assert_arr_eq(ids, want2, sizeof want2);
    free(ids);
    shardlm_tokenizer_free(t);
}

Test(tokenizer, other_models_rejected)
{
    const char *p = write_vocab("bert.gguf", "bert", tiny_pieces, tiny_scores, tiny_types, 10, -1);
    shardlm_gguf *g = NULL;
    shardlm_tokenizer *t = NULL;
    cr_assert_eq(shardlm_gguf_open(p, &g), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_tokenizer_from_gguf(g, &t), SHARDLM_EINPUT);
    cr_assert_null(t);
    const char *e = shardlm_err_get();
    cr_assert(strstr(e, p) && strstr(e, "'bert'") && strstr(e, "supported: 'llama'"), "error names file, model and "
              "the supported ones: %s", e);
    shardlm_gguf_close(g);
}

/* ---- the CLI ---- */

Test(cli_tokenize, prompt_with_bos)
{
    const char *m = tu_shared("models/stories260K.gguf");
    char *argv[] = {(char *)tu_bin(), "tokenize", "-m", (char *)m, "--bos", "Once upon a time", NULL};
    tu_result r = tu_run(argv, NULL, 30);
    cr_assert_eq(r.exit_code, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "1 403 407 261 378\n");
    tu_result_free(&r);
}

Test(cli_tokenize, stdin_input)
{
    const char *m = tu_shared("models/stories260K.gguf");
    char *argv[] = {(char *)tu_bin(), "tokenize", "--model", (char *)m, NULL};
    tu_result r = tu_run(argv, "Once upon a time", 30);
    cr_assert_eq(r.exit_code, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "403 407 261 378\n");
    tu_result_free(&r);
}

Test(cli_tokenize, missing_model_exits_2)
{
    char path[512];
    snprintf(path, sizeof path, "%s/no-such-model.gguf", tu_tmpdir());
    char *argv[] = {(char *)tu_bin(), "tokenize", "-m", path, "hello", NULL};
    tu_result r = tu_run(argv, NULL, 30);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strncmp(r.err, "shardlm: ", 9) == 0 && strstr(r.err, path), "stderr: %s", r.err);
    cr_assert(strchr(r.err, '\n') == r.err + strlen(r.err) - 1, "one line: %s", r.err);
    cr_assert_str_eq(r.out, "");
    tu_result_free(&r);
}

Test(cli_tokenize, usage_and_bad_flags)
{
    char *help[] = {(char *)tu_bin(), "tokenize", "--help", NULL};
    tu_result r = tu_run(help, NULL, 30);
    cr_assert_eq(r.exit_code, 0);
    cr_assert(strstr(r.out, "usage: shardlm tokenize"), "stdout: %s", r.out);
    tu_result_free(&r);
    char *bad[] = {(char *)tu_bin(), "tokenize", "--frobnicate", NULL};
    r = tu_run(bad, NULL, 30);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "--frobnicate"), "stderr: %s", r.err);
    tu_result_free(&r);
    char *nomodel[] = {(char *)tu_bin(), "tokenize", "text", NULL};
    r = tu_run(nomodel, NULL, 30);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "-m"), "stderr: %s", r.err);
    tu_result_free(&r);
}

/* One-byte user-defined tokens split the text into stretches that each get
 * the dummy prefix: more ids than bytes + 3, which encode_alloc sizes for
 * (llama.cpp gives the same ids). */
Test(tokenizer, user_defined_one_byte_tokens)
{
    static const char *const pieces[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "x"};
    static const float scores[] = {0, 0, 0, -1, -2, -2};
    static const int32_t types[] = {2, 3, 3, 1, 1, 4};
    shardlm_tokenizer *t = load_tok(write_vocab("user1.gguf", "llama", pieces, scores, types, 6, -1));
    int32_t *ids, want[] = {1, 3, 4, 5, 3, 4, 5, 3, 4};
    size_t n;
    cr_assert_eq(shardlm_tokenizer_encode_alloc(t, "axaxa", 5, SHARDLM_TOK_ADD_BOS, 0, &ids, &n), SHARDLM_OK);
    cr_assert_eq(n, 9, "%zu ids", n);
    cr_assert_arr_eq(ids, want, sizeof want);
    free(ids);
    shardlm_tokenizer_free(t);
}
