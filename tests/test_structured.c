/* test_structured.c - constrained decoding end to end in the scheduler:
 * 20 requests at temperature 1 sharing one grammar compiled from a schema
 * with nested objects, arrays, enums and required fields, on stories260K
 * (trained), llama-2-tiny-random (random weights, the Llama 2
 * vocabulary), and random synth weights carrying the Phi-3 and the Llama 3
 * vocabularies (Llama 3's runs once the byte-level BPE tokenizer loads
 * gpt2 GGUFs); every output must parse and validate against the schema
 * (a small validator below) and end with finish reason stop. Also: logprobs
 * are those of the constrained distribution, and max_tokens cuts a document
 * short with "length". */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../launcher/node.h"
#include "../runtime/scheduler.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "test_util.h"

#define NREQ 20
#define SINK_MAX NREQ
#include "sched_sink.h"

static const char *const SCHEMA =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":10},"
    "\"age\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":120},"
    "\"mood\":{\"enum\":[\"happy\",\"sad\",\"angry\"]},"
    "\"pets\":{\"type\":\"array\",\"maxItems\":2,\"items\":{\"type\":\"object\",\"properties\":{"
    "\"kind\":{\"enum\":[\"dog\",\"cat\"]},\"legs\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":8}},"
    "\"required\":[\"kind\",\"legs\"],\"additionalProperties\":false}},"
    "\"home\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":8},"
    "\"big\":{\"type\":\"boolean\"}},\"required\":[\"city\"],\"additionalProperties\":false}},"
    "\"required\":[\"name\",\"age\",\"mood\",\"pets\",\"home\"],\"additionalProperties\":false}";

/* ---- a validator for the keywords the test uses ---- */

static size_t codepoints(const char *s)
{
    size_t n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static int valid(const cJSON *v, const cJSON *s, char *why, size_t cap)
{
    const cJSON *t = cJSON_GetObjectItem(s, "type"), *k;
    if (cJSON_IsString(t)) {
        const char *ty = t->valuestring;
        int ok = !strcmp(ty, "object") ? cJSON_IsObject(v) : !strcmp(ty, "array") ? cJSON_IsArray(v)
                 : !strcmp(ty, "string") ? cJSON_IsString(v) : !strcmp(ty, "boolean") ? cJSON_IsBool(v)
                 : !strcmp(ty, "integer") ? cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble)
                 : !strcmp(ty, "number") ? cJSON_IsNumber(v) : cJSON_IsNull(v);
        if (!ok) return snprintf(why, cap, "not of type %s", ty), 0;
    }
    if ((k = cJSON_GetObjectItem(s, "enum"))) {
        int hit = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, k) hit |= cJSON_Compare(v, e, 1);
        if (!hit) return snprintf(why, cap, "not in the enum"), 0;
    }
    if ((k = cJSON_GetObjectItem(s, "minimum")) && v->valuedouble < k->valuedouble) return snprintf(why, cap, "below minimum"), 0;
    if ((k = cJSON_GetObjectItem(s, "maximum")) && v->valuedouble > k->valuedouble) return snprintf(why, cap, "above maximum"), 0;
    if (cJSON_IsString(v)) {
        size_t n = codepoints(v->valuestring);
        if ((k = cJSON_GetObjectItem(s, "minLength")) && n < (size_t)k->valueint) return snprintf(why, cap, "too short"), 0;
        if ((k = cJSON_GetObjectItem(s, "maxLength")) && n > (size_t)k->valueint) return snprintf(why, cap, "too long"), 0;
    }
    if (cJSON_IsArray(v)) {
        if ((k = cJSON_GetObjectItem(s, "maxItems")) && cJSON_GetArraySize(v) > k->valueint) return snprintf(why, cap, "too many items"), 0;
        const cJSON *it = cJSON_GetObjectItem(s, "items"), *e;
        cJSON_ArrayForEach(e, v) if (it && !valid(e, it, why, cap)) return 0;
    }
    if (cJSON_IsObject(v)) {
        const cJSON *props = cJSON_GetObjectItem(s, "properties"), *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(s, "required"))
            if (!cJSON_GetObjectItem(v, e->valuestring)) return snprintf(why, cap, "lacks %s", e->valuestring), 0;
        cJSON_ArrayForEach(e, v) {
            const cJSON *ps = cJSON_GetObjectItem(props, e->string);
            if (!ps) return snprintf(why, cap, "has the extra property %s", e->string), 0;
            if (!valid(e, ps, why, cap)) return 0;
        }
    }
    return 1;
}

/* ---- the scheduler rig ---- */

typedef struct {
    shardlm_node node;
    shardlm_sched *sched;
    pthread_t thread;
} rig;

static void rig_up(rig *r, const char *rel, int n_ctx)
{
    char model[600];
    snprintf(model, sizeof model, "%s", rel[0] == '/' ? rel : tu_shared(rel));
    shardlm_node_opts o = sink_node_opts(model, 64, n_ctx);
    cr_assert_eq(shardlm_node_open(&o, &r->node), 0, "%s", shardlm_err_get());
    shardlm_sched_opts so = {32, 256, 1000, 16, 64, 1, {0}};
    cr_assert_eq(shardlm_sched_new(r->node.engine, r->node.tok, &so, &r->sched), 0, "%s", shardlm_err_get());
    sink_sched_start(r->sched, &r->thread);
}

static void rig_down(rig *r)
{
    sink_sched_stop(r->sched, r->thread);
    shardlm_node_close(&r->node);
}

static void wait_all(sink *k, int n)
{
    for (int i = 0; i < n; i++) cr_assert(sink_wait(k, i, 120), "request %d did not finish", i);
}

static shardlm_grammar *schema_grammar(const char *text)
{
    cJSON *s = cJSON_Parse(text);
    char why[256];
    shardlm_grammar *g;
    cr_assert_eq(shardlm_json_schema_grammar(s, &g, why, sizeof why), 0, "%s", why);
    cJSON_Delete(s);
    return g;
}

static uint64_t submit(rig *r, sink *k, slot *sl, int i, const char *prompt, shardlm_sampling_params p, int max_tokens,
                       shardlm_grammar *g)
{
    int32_t toks[256];
    size_t n = 0;
    cr_assert_eq(shardlm_tokenizer_encode(r->node.tok, prompt, strlen(prompt), 1, toks, 256, &n), 0);
    shardlm_request_desc d = {.prompt = toks, .n_prompt = (int)n, .params = p, .max_tokens = max_tokens, .grammar = g};
    uint64_t id = 0;
    cr_assert_eq(sink_submit(r->sched, &d, k, sl, i, &id), 0, "%s", shardlm_err_get());
    return id;
}

static void twenty_valid_documents(const char *rel)
{
    static sink k;
    static slot sl[NREQ];
    memset(&k, 0, sizeof k);
    sink_init(&k);
    rig r;
    rig_up(&r, rel, 2048);
    shardlm_grammar *g = schema_grammar(SCHEMA);
    for (int i = 0; i < NREQ; i++) {
        shardlm_sampling_params p = shardlm_sampling_params_default(); /* temperature 1 */
        p.seed = 1000 + (uint64_t)i;
        p.has_seed = 1;
        submit(&r, &k, &sl[i], i, i % 2 ? "Once upon a time" : "", p, 1800, g);
    }
    shardlm_grammar_unref(g); /* the requests hold their own references */
    wait_all(&k, NREQ);
    cJSON *schema = cJSON_Parse(SCHEMA);
    int distinct = 0;
    for (int i = 0; i < NREQ; i++) {
        k.text[i][k.len[i]] = 0;
        cr_expect_eq(k.why[i], SHARDLM_FINISH_STOP, "request %d ended with %d: %s", i, k.why[i], k.text[i]);
        cJSON *doc = cJSON_Parse(k.text[i]);
        cr_assert_not_null(doc, "request %d is not JSON: %s", i, k.text[i]);
        char why[128] = "";
        cr_expect(valid(doc, schema, why, sizeof why), "request %d does not validate (%s): %s", i, why, k.text[i]);
        cJSON_Delete(doc);
        distinct += i == 0 || strcmp(k.text[i], k.text[i - 1]) != 0;
    }
    cr_expect_gt(distinct, NREQ / 2, "temperature 1 should give different documents");
    cJSON_Delete(schema);
    rig_down(&r);
}

Test(structured, stories260K_twenty_documents_validate)
{
    twenty_valid_documents("models/stories260K.gguf");
}

Test(structured, random_model_twenty_documents_validate)
{
    twenty_valid_documents("models/llama-2-tiny-random.gguf");
}

/* ---- a random model with the Llama 3 vocabulary ---- */

static int copy_tensor(void *ctx, uint64_t i, void *dst, uint64_t nbytes)
{
    memcpy(dst, shardlm_gguf_tensor_at(ctx, i)->data, nbytes);
    return 0;
}

/* Copies key i of g into w (strings and arrays of any element type). */
static void copy_kv(shardlm_gguf_writer *w, const shardlm_gguf *g, uint64_t i)
{
    shardlm_gguf_str k = shardlm_gguf_kv_key(g, i);
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
    shardlm_gguf_vtype t = shardlm_gguf_kv_type(g, i);
    if (t == SHARDLM_GGUF_STRING) {
        shardlm_gguf_str v;
        cr_assert_eq(shardlm_gguf_get_str(g, key, &v), 0);
        char *z = strndup(v.ptr, v.len);
        shardlm_gguf_writer_str(w, key, z);
        free(z);
    } else if (t == SHARDLM_GGUF_ARRAY) {
        shardlm_gguf_vtype elem;
        uint64_t n;
        const void *data;
        cr_assert_eq(shardlm_gguf_get_arr(g, key, &elem, &n, &data), 0);
        if (elem != SHARDLM_GGUF_STRING) {
            shardlm_gguf_writer_arr(w, key, elem, data, n);
            return;
        }
        char **v = calloc(n ? n : 1, sizeof *v);
        for (uint64_t j = 0; j < n; j++) {
            shardlm_gguf_str e;
            cr_assert_eq(shardlm_gguf_arr_str(g, key, j, &e), 0);
            v[j] = strndup(e.ptr, e.len);
        }
        shardlm_gguf_writer_arr_str(w, key, (const char *const *)v, n);
        for (uint64_t j = 0; j < n; j++) free(v[j]);
        free(v);
    } else {
        uint64_t u = 0;
        int64_t s64 = 0;
        double f = 0;
        int b = 0;
        unsigned char raw[8];
        if (t == SHARDLM_GGUF_FLOAT32 || t == SHARDLM_GGUF_FLOAT64) {
            shardlm_gguf_get_f64(g, key, &f);
            float f32 = (float)f;
            memcpy(raw, t == SHARDLM_GGUF_FLOAT32 ? (void *)&f32 : (void *)&f, t == SHARDLM_GGUF_FLOAT32 ? 4 : 8);
        } else if (t == SHARDLM_GGUF_BOOL) {
            shardlm_gguf_get_bool(g, key, &b);
            raw[0] = (unsigned char)b;
        } else if (t == SHARDLM_GGUF_INT8 || t == SHARDLM_GGUF_INT16 || t == SHARDLM_GGUF_INT32 || t == SHARDLM_GGUF_INT64) {
            shardlm_gguf_get_i64(g, key, &s64);
            memcpy(raw, &s64, 8); /* little-endian: the low bytes first */
        } else {
            shardlm_gguf_get_u64(g, key, &u);
            memcpy(raw, &u, 8);
        }
        shardlm_gguf_writer_scalar(w, key, t, raw);
    }
}

/* A synth model's weights with the tokenizer.* keys of a vocabulary GGUF. */
static void make_model_with_vocab(const char *out, const char *vocab_path, int n_vocab)
{
    char base[512], nv[16];
    snprintf(base, sizeof base, "%s/base.gguf", tu_tmpdir());
    snprintf(nv, sizeof nv, "%d", n_vocab);
    char *argv[] = {(char *)tu_bin(), "synth", "-o", base, "--dim", "64", "--layers", "1", "--heads", "4",
                    "--kv-heads", "2", "--ffn", "96", "--vocab", nv, "--type", "q8_0", NULL};
    tu_result r = tu_run(argv, NULL, 120);
    cr_assert_eq(r.exit_code, 0, "synth: %s", r.err);
    tu_result_free(&r);
    shardlm_gguf *b, *v;
    cr_assert_eq(shardlm_gguf_open(base, &b), 0, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_gguf_open(vocab_path, &v), 0, "%s", shardlm_err_get());
    shardlm_gguf_writer *w = shardlm_gguf_writer_new((uint32_t)shardlm_gguf_alignment(b));
    for (uint64_t i = 0; i < shardlm_gguf_n_kv(b); i++)
        if (strncmp(shardlm_gguf_kv_key(b, i).ptr, "tokenizer.", 10)) copy_kv(w, b, i);
    for (uint64_t i = 0; i < shardlm_gguf_n_kv(v); i++)
        if (!strncmp(shardlm_gguf_kv_key(v, i).ptr, "tokenizer.", 10)) copy_kv(w, v, i);
    for (uint64_t i = 0; i < shardlm_gguf_n_tensors(b); i++) {
        const shardlm_gguf_tensor *t = shardlm_gguf_tensor_at(b, i);
        shardlm_gguf_writer_tensor(w, t->name, t->type, t->n_dims, t->ne);
    }
    cr_assert_eq(shardlm_gguf_writer_write(w, out, copy_tensor, b), 0, "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    shardlm_gguf_close(b);
    shardlm_gguf_close(v);
}

/* 20 documents from a random model carrying the vocabulary of rel; a gpt2
 * vocabulary needs the byte-level BPE tokenizer (branch bpe) and is
 * skipped until one loads. */
static void vocab_model_documents(const char *rel, const char *name)
{
    char vpath[512];
    snprintf(vpath, sizeof vpath, "%s", tu_shared(rel));
    shardlm_gguf *g;
    shardlm_tokenizer *tok;
    cr_assert_eq(shardlm_gguf_open(vpath, &g), 0);
    int rc = shardlm_tokenizer_from_gguf(g, &tok);
    if (!rc) shardlm_tokenizer_free(tok);
    shardlm_gguf_vtype elem;
    uint64_t nt = 0;
    const void *data;
    shardlm_gguf_get_arr(g, "tokenizer.ggml.tokens", &elem, &nt, &data);
    shardlm_gguf_close(g);
    if (rc && strstr(shardlm_err_get(), "gpt2"))
        cr_skip_test("SKIP: %s needs the byte-level BPE tokenizer (branch bpe): %s", rel, shardlm_err_get());
    cr_assert_eq(rc, 0, "%s", shardlm_err_get());
    static char model[600];
    snprintf(model, sizeof model, "%s/%s.gguf", tu_tmpdir(), name);
    make_model_with_vocab(model, vpath, (int)nt);
    twenty_valid_documents(model);
}

Test(structured, llama3_vocabulary_twenty_documents_validate)
{
    vocab_model_documents("models/vocab/ggml-vocab-llama-bpe.gguf", "llama3-vocab");
}

/* The same path with a SentencePiece vocabulary that loads today. */
Test(structured, phi3_vocabulary_twenty_documents_validate)
{
    vocab_model_documents("models/vocab/ggml-vocab-phi-3.gguf", "phi3-vocab");
}

Test(structured, logprobs_are_constrained_and_length_cuts)
{
    static sink k;
    static slot sl[3];
    memset(&k, 0, sizeof k);
    sink_init(&k);
    rig r;
    rig_up(&r, "models/stories260K.gguf", 512);
    char why[256];
    shardlm_grammar *g;
    /* only the byte token <0x7B> spells "{" (checked first), so its
     * constrained probability is 1 */
    const char *gbnf = "root ::= \"{\" [a-z ]*";
    cr_assert_eq(shardlm_grammar_compile(gbnf, strlen(gbnf), &g, why, sizeof why), 0, "%s", why);
    shardlm_grammar_vocab *v;
    shardlm_grammar_state *st;
    cr_assert_eq(shardlm_grammar_vocab_from_tokenizer(r.node.tok, &v), 0);
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &st), 0);
    uint64_t bits[8];
    cr_assert_eq(shardlm_grammar_mask(st, v, bits), 1, "one token may start");
    shardlm_grammar_state_free(st);
    shardlm_grammar_vocab_free(v);
    shardlm_sampling_params p = shardlm_sampling_params_default();
    p.logprobs = 1;
    p.top_logprobs = 5;
    p.seed = 7;
    p.has_seed = 1;
    submit(&r, &k, &sl[0], 0, "One day", p, 6, g);
    shardlm_grammar *j = schema_grammar(SCHEMA);
    p.logprobs = 0;
    p.top_logprobs = 0;
    submit(&r, &k, &sl[1], 1, "One day", p, 3, j);
    wait_all(&k, 2);
    k.text[0][k.len[0]] = 0;
    cr_assert_eq(k.text[0][0], '{', "%s", k.text[0]);
    cr_expect_float_eq(k.lp[0][0].logprob, 0.0f, 1e-6, "logprob %g", (double)k.lp[0][0].logprob);
    cr_expect_eq(k.lp[0][0].n_top, 1, "%d alternatives listed, but only one is possible", k.lp[0][0].n_top);
    for (int t = 1; t < 4; t++) { /* then a distribution over [a-z ] tokens only */
        double mass = 0;
        for (int a = 0; a < k.lp[0][t].n_top; a++) mass += exp(k.lp[0][t].top[a].logprob);
        cr_expect_eq(k.lp[0][t].n_top, 5);
        cr_expect_leq(mass, 1.0 + 1e-5);
        cr_expect(k.lp[0][t].logprob < 0.0f && isfinite(k.lp[0][t].logprob));
    }
    cr_expect_eq(k.why[1], SHARDLM_FINISH_LENGTH, "3 tokens cannot finish the document");
    k.text[1][k.len[1]] = 0;
    cr_expect_null(cJSON_Parse(k.text[1]), "a cut document does not parse: %s", k.text[1]);
    shardlm_grammar_unref(g);
    shardlm_grammar_unref(j);
    rig_down(&r);
}
