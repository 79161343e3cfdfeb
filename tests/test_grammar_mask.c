/* test_grammar_mask.c - the token mask against a brute-force reference:
 * at every step along valid documents, each token of the vocabulary is
 * checked by feeding its bytes through a copy of the state one token at a
 * time (shardlm_grammar_accept_token), and the mask (the trie walk with
 * its subtree shortcuts and its cache) must agree on every token, as must
 * shardlm_grammar_apply on logits. Vocabularies: Llama 2's (the
 * SentencePiece tokenizer of llama-2-tiny-random.gguf, with the first
 * token after BOS losing its space), a synthetic one full of UTF-8
 * fragments, quotes, escapes, blanks, duplicates and empty tokens, and
 * Llama 3's 128k: its bytes decoded here from the GGUF, and through the
 * tokenizer once the byte-level BPE tokenizer loads gpt2 GGUFs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/grammar.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_text.h"
#include "test_util.h"

/* Token bytes as the test sees them, to pick the next token of a document. */
typedef struct {
    shardlm_grammar_vocab *v;
    int32_t n, eog;
    char **text;
    uint32_t *len;
    const shardlm_tokenizer *tok; /* when from a tokenizer: the walk's tokens are also decoded */
} tvocab;

static void tvocab_free(tvocab *t)
{
    for (int32_t i = 0; i < t->n; i++) free(t->text[i]);
    free(t->text);
    free(t->len);
    shardlm_grammar_vocab_free(t->v);
}

static const char *const SCHEMA =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\"},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},"
    "\"score\":{\"type\":\"number\"},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"red\",\"green\",\"\xc3\xa9t\xc3\xa9\"]},\"maxItems\":4},"
    "\"home\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":12},"
    "\"zip\":{\"type\":\"string\",\"pattern\":\"^[0-9]{5}$\"}},\"required\":[\"city\"]},"
    "\"when\":{\"type\":\"string\",\"format\":\"date\"},"
    "\"extra\":{\"anyOf\":[{\"type\":\"null\"},{\"type\":\"boolean\"},{\"type\":\"object\"}]}},"
    "\"required\":[\"name\",\"age\",\"tags\",\"home\"]}";

static const char *const DOCS[] = {
    "{\"name\": \"Zo\xc3\xab \\\"Q\\\" \\u00e9\xe4\xb8\x80\xf0\x9f\x98\x80 end\", \"age\": 42, \"score\": -1.5e-3,\n"
    "  \"tags\": [\"red\", \"\xc3\xa9t\xc3\xa9\"], \"home\": {\"city\": \"Oslo\", \"zip\": \"01234\"},\n"
    "  \"when\": \"2024-02-29\", \"extra\": {\"k\": [1, {\"z\": null}, \"s\\\\\"]}}",
    "{\"name\":\"\",\"age\":150,\"tags\":[],\"home\":{\"city\":\"\\n\\t\"},\"extra\":true}",
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* The mask of s, checked token by token against accept_token on copies,
 * and apply() against the mask. Returns the number allowed. */
static int check_mask(shardlm_grammar_state *s, const tvocab *t, uint64_t *bits, float *logits, const char *where)
{
    int n = shardlm_grammar_mask(s, t->v, bits);
    cr_assert_geq(n, 1, "%s: the mask allows nothing", where);
    int count = 0, bad = 0;
    for (int32_t i = 0; i < t->n; i++) {
        shardlm_grammar_state *c;
        cr_assert_eq(shardlm_grammar_state_copy(s, &c), 0);
        int ref = shardlm_grammar_accept_token(c, t->v, i) == SHARDLM_OK;
        shardlm_grammar_state_free(c);
        int got = (int)(bits[i / 64] >> (i % 64) & 1);
        if (ref != got && bad++ < 5)
            cr_expect_fail("%s: token %d (%.*s): mask %d, brute force %d", where, i, (int)t->len[i], t->text[i], got,
                           ref);
        count += got;
    }
    cr_assert_eq(bad, 0, "%s: %d tokens disagree", where, bad);
    cr_assert_eq(count, n);
    for (int32_t i = 0; i < t->n; i++) logits[i] = (float)(i % 7);
    cr_assert_eq(shardlm_grammar_apply(s, t->v, logits), 0);
    for (int32_t i = 0; i < t->n; i++) {
        int got = (int)(bits[i / 64] >> (i % 64) & 1);
        cr_assert(got ? logits[i] == (float)(i % 7) : logits[i] == -INFINITY, "%s: apply differs at token %d", where, i);
    }
    return n;
}

/* Walks doc with the tokens that spell it (longest first, sometimes a
 * shorter one), checking the mask at every step. */
static void walk_doc(shardlm_grammar *g, const tvocab *t, const char *doc, int lead, int max_steps)
{
    shardlm_grammar_state *s;
    cr_assert_eq(shardlm_grammar_state_new(g, lead, &s), 0);
    uint64_t *bits = malloc(((size_t)t->n + 63) / 64 * 8);
    float *logits = malloc((size_t)t->n * sizeof *logits);
    size_t pos = 0, len = strlen(doc);
    int32_t *cand = malloc((size_t)t->n * sizeof *cand);
    /* what the streaming decoder makes of the chosen tokens: the document, byte for byte */
    char *dec = malloc(len + 64);
    size_t n_dec = 0, dmax = t->tok ? shardlm_detok_max(t->tok) : 0;
    shardlm_detok dt;
    shardlm_detok_init(&dt);
    if (t->tok && lead) dt.prev = shardlm_tokenizer_bos(t->tok);
    for (int step = 0; step < max_steps; step++) {
        char where[64];
        snprintf(where, sizeof where, "step %d at byte %zu", step, pos);
        check_mask(s, t, bits, logits, where);
        if (pos == len) break;
        int nc = 0;
        for (int32_t i = 0; i < t->n; i++)
            if ((bits[i / 64] >> (i % 64) & 1) && t->len[i] && t->len[i] <= len - pos &&
                !memcmp(t->text[i], doc + pos, t->len[i]) && !(lead && t->text[i][0] == ' '))
                cand[nc++] = i;
        cr_assert_gt(nc, 0, "%s: no allowed token spells the document", where);
        int32_t best = cand[0];
        for (int k = 1; k < nc; k++)
            if (t->len[cand[k]] > t->len[best]) best = cand[k];
        if (next_rand() % 4 == 0) best = cand[next_rand() % nc];
        cr_assert_eq(shardlm_grammar_accept_token(s, t->v, best), 0);
        if (t->tok) {
            char *piece = malloc(dmax);
            size_t k = shardlm_detok_push(t->tok, &dt, best, piece, dmax);
            cr_assert_leq(n_dec + k, len, "%s: the decoder wrote more than the document", where);
            memcpy(dec + n_dec, piece, k);
            n_dec += k;
            free(piece);
        }
        pos += t->len[best];
        lead = 0;
    }
    cr_assert_eq(pos, len, "the document was not finished in %d steps", max_steps);
    cr_assert(shardlm_grammar_can_end(s));
    if (t->tok) {
        n_dec += shardlm_detok_flush(&dt, dec + n_dec, 8);
        cr_assert(n_dec == len && !memcmp(dec, doc, len), "the decoded tokens are not the document: %.*s", (int)n_dec,
                  dec);
    }
    free(dec);
    free(cand);
    free(bits);
    free(logits);
    shardlm_grammar_state_free(s);
}

static shardlm_grammar *schema(const char *text)
{
    cJSON *js = cJSON_Parse(text);
    char why[512];
    shardlm_grammar *g = NULL;
    cr_assert_eq(shardlm_json_schema_grammar(js, &g, why, sizeof why), 0, "%s", why);
    cJSON_Delete(js);
    return g;
}

/* The vocabulary of a tokenizer, with the texts the test walks by. */
static void from_tokenizer(const shardlm_tokenizer *tok, tvocab *t)
{
    memset(t, 0, sizeof *t);
    cr_assert_eq(shardlm_grammar_vocab_from_tokenizer(tok, &t->v), 0, "%s", shardlm_err_get());
    t->n = shardlm_tokenizer_n_vocab(tok);
    t->eog = shardlm_tokenizer_eos(tok);
    t->text = calloc((size_t)t->n, sizeof *t->text);
    t->len = calloc((size_t)t->n, sizeof *t->len);
    t->tok = tok;
    size_t cap = shardlm_detok_max(tok);
    char *buf = malloc(cap);
    for (int32_t i = 0; i < t->n; i++) {
        size_t k = shardlm_tokenizer_token_bytes(tok, i, 0, buf, cap);
        t->text[i] = malloc(k + 1);
        memcpy(t->text[i], buf, k);
        t->len[i] = (uint32_t)k;
    }
    free(buf);
}

static void run_tokenizer_vocab(const char *rel)
{
    shardlm_gguf *gf;
    cr_assert_eq(shardlm_gguf_open(tu_shared(rel), &gf), 0, "%s", shardlm_err_get());
    shardlm_tokenizer *tok;
    int rc = shardlm_tokenizer_from_gguf(gf, &tok);
    if (rc && strstr(shardlm_err_get(), "gpt2")) {
        shardlm_gguf_close(gf);
        cr_skip_test("SKIP: %s needs the byte-level BPE tokenizer (branch bpe): %s", rel, shardlm_err_get());
    }
    cr_assert_eq(rc, 0, "%s", shardlm_err_get());
    tvocab t;
    from_tokenizer(tok, &t);
    shardlm_grammar *g = schema(SCHEMA);
    for (size_t d = 0; d < sizeof DOCS / sizeof DOCS[0]; d++) walk_doc(g, &t, DOCS[d], 0, 400);
    shardlm_grammar_unref(g);
    g = schema("{\"type\":\"object\"}"); /* json_object: the free-form grammar */
    walk_doc(g, &t, "{\"a\": [1, 2.5, \"x\\u0041\", {\"b\": false}], \"c\": null}", 0, 200);
    shardlm_grammar_unref(g);
    tvocab_free(&t);
    shardlm_tokenizer_free(tok);
    shardlm_gguf_close(gf);
}

Test(grammar_mask, llama2_vocabulary)
{
    run_tokenizer_vocab("models/llama-2-tiny-random.gguf");
}

Test(grammar_mask, llama3_vocabulary)
{
    run_tokenizer_vocab("models/vocab/ggml-vocab-llama-bpe.gguf");
}

/* Llama 3's 128,256 tokens as bytes, decoded here from the GGUF's
 * byte-level spellings (GPT-2's byte-to-character map) without the
 * tokenizer, so the mask is checked on a real 128k vocabulary today. */
static void llama3_bytes(tvocab *t)
{
    int map[512];
    for (int i = 0; i < 512; i++) map[i] = -1;
    for (int b = 0, extra = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        map[keep ? b : 256 + extra++] = b;
    }
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(tu_shared("models/vocab/ggml-vocab-llama-bpe.gguf"), &g), 0);
    shardlm_gguf_vtype elem;
    uint64_t n;
    const void *data;
    cr_assert_eq(shardlm_gguf_get_arr(g, "tokenizer.ggml.tokens", &elem, &n, &data), 0);
    memset(t, 0, sizeof *t);
    t->n = (int32_t)n;
    t->text = calloc(n, sizeof *t->text);
    t->len = calloc(n, sizeof *t->len);
    for (uint64_t i = 0; i < n; i++) {
        shardlm_gguf_str sp;
        double type = 1;
        cr_assert_eq(shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", i, &sp), 0);
        shardlm_gguf_arr_f64(g, "tokenizer.ggml.token_type", i, &type);
        t->text[i] = malloc(sp.len + 1);
        if (type == 3) continue; /* control tokens have no text */
        for (uint64_t j = 0; j < sp.len;) {
            unsigned c = (unsigned char)sp.ptr[j];
            uint32_t cp = c < 0x80 ? c : (c & 0x1F) << 6 | (sp.ptr[j + 1] & 0x3F);
            j += c < 0x80 ? 1 : 2;
            cr_assert(cp < 512 && map[cp] >= 0, "token %llu: not a byte-level spelling", (unsigned long long)i);
            t->text[i][t->len[i]++] = (char)map[cp];
        }
    }
    shardlm_gguf_close(g);
    int32_t eog[2] = {128001, 128009}; /* <|end_of_text|>, <|eot_id|> */
    cr_assert_eq(shardlm_grammar_vocab_new(t->n, (const char *const *)t->text, t->len, NULL, NULL, eog, 2, &t->v), 0);
    t->eog = eog[1];
}

Test(grammar_mask, llama3_vocabulary_bytes)
{
    tvocab t;
    llama3_bytes(&t);
    shardlm_grammar *g = schema(SCHEMA);
    for (size_t d = 0; d < sizeof DOCS / sizeof DOCS[0]; d++) walk_doc(g, &t, DOCS[d], 0, 300);
    shardlm_grammar_unref(g);
    tvocab_free(&t);
}

/* The first token after BOS is decoded without its leading space. */
Test(grammar_mask, first_token_after_bos)
{
    shardlm_gguf *gf;
    cr_assert_eq(shardlm_gguf_open(tu_shared("models/llama-2-tiny-random.gguf"), &gf), 0);
    shardlm_tokenizer *tok;
    cr_assert_eq(shardlm_tokenizer_from_gguf(gf, &tok), 0);
    tvocab t;
    from_tokenizer(tok, &t);
    char why[256];
    shardlm_grammar *g;
    const char *gbnf = "root ::= \"Hello\" [ a-z]*";
    cr_assert_eq(shardlm_grammar_compile(gbnf, strlen(gbnf), &g, why, sizeof why), 0);
    shardlm_grammar_state *s;
    cr_assert_eq(shardlm_grammar_state_new(g, 1, &s), 0);
    uint64_t *bits = malloc(((size_t)t.n + 63) / 64 * 8);
    float *logits = malloc((size_t)t.n * sizeof *logits);
    check_mask(s, &t, bits, logits, "after BOS");
    int32_t ids[8];
    size_t n = 0;
    cr_assert_eq(shardlm_tokenizer_encode(tok, "Hello", 5, 0, ids, 8, &n), 0);
    cr_assert_eq(n, 1, "\"Hello\" is one token, \"\xe2\x96\x81Hello\"");
    cr_assert_eq(t.text[ids[0]][0], ' ', "its text has the space");
    cr_assert(bits[ids[0] / 64] >> (ids[0] % 64) & 1, "after BOS it spells \"Hello\" and is allowed");
    cr_assert_eq(shardlm_grammar_accept_token(s, t.v, ids[0]), 0);
    check_mask(s, &t, bits, logits, "after Hello");
    cr_assert(!(bits[ids[0] / 64] >> (ids[0] % 64) & 1), "no second Hello, nor its space");
    free(bits);
    free(logits);
    shardlm_grammar_state_free(s);
    shardlm_grammar_unref(g);
    tvocab_free(&t);
    shardlm_tokenizer_free(tok);
    shardlm_gguf_close(gf);
}

/* ---- a synthetic vocabulary ---- */

static void synth_add(tvocab *t, int *cap, const char *s, size_t n)
{
    if (t->n == *cap) {
        *cap *= 2;
        t->text = realloc(t->text, (size_t)*cap * sizeof *t->text);
        t->len = realloc(t->len, (size_t)*cap * sizeof *t->len);
    }
    t->text[t->n] = malloc(n + 1);
    memcpy(t->text[t->n], s, n);
    t->len[t->n++] = (uint32_t)n;
}

static void synth_vocab(tvocab *t)
{
    memset(t, 0, sizeof *t);
    int cap = 1024;
    t->text = malloc((size_t)cap * sizeof *t->text);
    t->len = malloc((size_t)cap * sizeof *t->len);
    synth_add(t, &cap, "", 0); /* 0: the end token */
    synth_add(t, &cap, "", 0); /* 1: a control token, never allowed */
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        if (b != 1) synth_add(t, &cap, &c, 1); /* every byte but \x01, so "\x01" cannot be spelled */
    }
    static const char *const pieces[] = {
        "\"", "\":", "\": ", "\",", "\", \"", "{\"", "\"}", "\"]", "[\"", "\\\"", "\\\\", "\\n", "\\u", "\\u00",
        "\\u00e9", "\\ud83d", "  ", "    ", "\n  ", "\n    ", "\n\n", " \"", "true", "false", "null", "nul", "12",
        "345", "0.", ".5", "e-", "-1", "Zo", "\xc3\xab", "\xc3", "\xa9", "\xe4\xb8", "\x80", "\xe4\xb8\x80",
        "\xf0\x9f\x98", "\x98\x80", "\xf0\x9f\x98\x80", "\xed\xa0\x80", "\xc0\x80", "red", "gre", "en", "\xc3\xa9t",
        "\xc3\xa9t\xc3\xa9", "Oslo", "zip", "city", "home", "name", "age", "tags", "when", "extra", "2024", "-02",
        "-29", "\"when\"", "\"home\": {\"", "\"\"", "e", "a\"b", "ab\\", "\t", "\x7f", "\"\xc3", "}}", "]}", "},",
        "\"name\"", "\"age\"", "\"tags\"", "\"extra\"", "\"score\"", "score", "\"city\"", "\"zip\"", "0123", "4\"",
        "01234", "\"extra\": {\"k\": [1"};
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) synth_add(t, &cap, pieces[i], strlen(pieces[i]));
    synth_add(t, &cap, "\"", 1); /* a duplicate */
    static const char alpha[] = "\"\\{}[],: \nabcz019.-eE\xc3\xa9\xe4\xb8\x80";
    for (int i = 0; i < 3000; i++) { /* random byte strings over an alphabet of troublemakers */
        char s[8];
        int n = 1 + (int)(next_rand() % 6);
        for (int k = 0; k < n; k++) s[k] = alpha[next_rand() % (sizeof alpha - 1)];
        synth_add(t, &cap, s, (size_t)n);
    }
    int32_t eog = 0;
    cr_assert_eq(shardlm_grammar_vocab_new(t->n, (const char *const *)t->text, t->len, NULL, NULL, &eog, 1, &t->v), 0,
                 "%s", shardlm_err_get());
    t->eog = 0;
}

Test(grammar_mask, synthetic_vocabulary)
{
    tvocab t;
    synth_vocab(&t);
    shardlm_grammar *g = schema(SCHEMA);
    for (int r = 0; r < 3; r++) /* random splits differ each round */
        for (size_t d = 0; d < sizeof DOCS / sizeof DOCS[0]; d++) walk_doc(g, &t, DOCS[d], 0, 600);
    shardlm_grammar_unref(g);
    const char *gbnf = "root ::= ( [^\\x00-\\x7f] | [a-c] )+ \"\\\"\" [\\u4e00-\\u9fff]? \"end\"";
    char why[256];
    cr_assert_eq(shardlm_grammar_compile(gbnf, strlen(gbnf), &g, why, sizeof why), 0, "%s", why);
    walk_doc(g, &t, "a\xc3\xa9\xf0\x9f\x98\x80" "cb\"\xe4\xb8\x80" "end", 0, 100);
    shardlm_grammar_unref(g);
    tvocab_free(&t);
}

Test(grammar_mask, end_tokens)
{
    tvocab t;
    synth_vocab(&t);
    uint64_t *bits = malloc(((size_t)t.n + 63) / 64 * 8);
    float *logits = malloc((size_t)t.n * sizeof *logits);
    char why[256];
    shardlm_grammar *g;
    const char *gbnf = "root ::= \"a\" \"b\"?";
    cr_assert_eq(shardlm_grammar_compile(gbnf, strlen(gbnf), &g, why, sizeof why), 0);
    shardlm_grammar_state *s;
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &s), 0);
    check_mask(s, &t, bits, logits, "start");
    cr_assert(!(bits[0] & 1), "no end before \"a\"");
    cr_assert_eq(shardlm_grammar_accept_token(s, t.v, 0), SHARDLM_EINPUT, "nor may the end token be accepted");
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "a", 1), 0);
    check_mask(s, &t, bits, logits, "after a");
    cr_assert(bits[0] & 1, "the end is allowed once the grammar can end");
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "b", 1), 0);
    cr_assert_eq(shardlm_grammar_mask(s, t.v, bits), 1, "after ab: only the end");
    cr_assert_eq(bits[0], 1u);
    cr_assert(shardlm_grammar_must_end(s));
    cr_assert_eq(shardlm_grammar_accept_token(s, t.v, 0), 0);
    cr_assert_eq(shardlm_grammar_accept_token(s, t.v, 'a' + 1), SHARDLM_EINPUT, "nothing after the end");
    shardlm_grammar_state_free(s);
    shardlm_grammar_unref(g);
    /* a text the vocabulary cannot spell: the end is forced */
    gbnf = "root ::= \"x\" \"\\x01\"";
    cr_assert_eq(shardlm_grammar_compile(gbnf, strlen(gbnf), &g, why, sizeof why), 0);
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &s), 0);
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "x", 1), 0);
    cr_assert_eq(shardlm_grammar_mask(s, t.v, bits), 1);
    cr_assert_eq(bits[0], 1u, "a dead end allows the end token alone");
    cr_assert_eq(shardlm_grammar_accept_token(s, t.v, 0), 0, "the forced end is accepted");
    cr_assert_eq(shardlm_grammar_accept_bytes(s, "x", 1), SHARDLM_EINPUT, "nothing follows the end");
    shardlm_grammar_state_free(s);
    shardlm_grammar_unref(g);
    free(bits);
    free(logits);
    tvocab_free(&t);
}

/* The same walk twice on one grammar: the second takes every mask from
 * the cache, and must still agree with the brute force. */
Test(grammar_mask, cached_masks_agree)
{
    tvocab t;
    synth_vocab(&t);
    shardlm_grammar *g = schema(SCHEMA);
    walk_doc(g, &t, DOCS[1], 0, 300);
    walk_doc(g, &t, DOCS[1], 0, 300); /* warm */
    shardlm_grammar_unref(g);
    tvocab_free(&t);
}
