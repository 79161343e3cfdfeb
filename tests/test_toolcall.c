/* test_toolcall.c - tool calling without a model: which format each real
 * chat template in ../shared/models/templates uses; the parser on every
 * format (calls, text around them, several calls, unknown names, output
 * cut short, malformed heads), fed whole, byte by byte, split at every
 * point and in random pieces, always giving the same content and calls;
 * the grammar of each format (the text a template renders is accepted,
 * wrong names, bad arguments, a second call without parallel_tool_calls
 * and the other tool under a named tool_choice are refused), and random
 * walks through each grammar that all parse back into calls whose
 * arguments are valid JSON of the schema; and the lazy grammar's trigger
 * scan. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "test_util.h"
#include "toolcall.h"

/* ---- format detection ---- */

static shardlm_toolfmt detect_file(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "models/templates/%s", name);
    const char *path = tu_shared(rel);
    shardlm_chat_template *t;
    cr_assert_eq(shardlm_chat_template_from_file(path, NULL, &t), 0, "%s", shardlm_err_get());
    shardlm_toolfmt f = shardlm_toolfmt_detect(t);
    shardlm_chat_template_free(t);
    return f;
}

Test(toolcall, formats_of_the_real_templates)
{
    static const struct {
        const char *file;
        shardlm_toolfmt want;
    } cases[] = {
        {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", SHARDLM_TOOLFMT_HERMES},
        {"Qwen-Qwen2.5-7B-Instruct.jinja", SHARDLM_TOOLFMT_HERMES},
        {"Qwen-Qwen3-0.6B.jinja", SHARDLM_TOOLFMT_HERMES},
        {"meta-llama-Llama-3.1-8B-Instruct.jinja", SHARDLM_TOOLFMT_LLAMA3},
        {"meta-llama-Llama-3.2-3B-Instruct.jinja", SHARDLM_TOOLFMT_LLAMA3},
        {"mistralai-Mistral-Nemo-Instruct-2407.jinja", SHARDLM_TOOLFMT_MISTRAL},
        {"Mistral-Small-3.2-24B-Instruct-2506.jinja", SHARDLM_TOOLFMT_MISTRAL_ARGS},
        {"ibm-granite-granite-3.3-2B-Instruct.jinja", SHARDLM_TOOLFMT_GRANITE},
        {"HuggingFaceTB-SmolLM3-3B.jinja", SHARDLM_TOOLFMT_NONE},
        {"microsoft-Phi-3.5-mini-instruct.jinja", SHARDLM_TOOLFMT_NONE},
        {"google-gemma-2-2b-it.jinja", SHARDLM_TOOLFMT_NONE},
        {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", SHARDLM_TOOLFMT_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        shardlm_toolfmt f = detect_file(cases[i].file);
        cr_expect_eq(f, cases[i].want, "%s: got %s, want %s", cases[i].file, shardlm_toolfmt_name(f),
                     shardlm_toolfmt_name(cases[i].want));
    }
    shardlm_chat_template *t;
    cr_assert_eq(shardlm_chat_template_new(shardlm_chat_default_template, strlen(shardlm_chat_default_template),
                                           "default", &t),
                 0);
    cr_expect_eq(shardlm_toolfmt_detect(t), SHARDLM_TOOLFMT_NONE, "the built-in template renders no calls");
    shardlm_chat_template_free(t);
    cr_expect_eq(shardlm_toolfmt_detect(NULL), SHARDLM_TOOLFMT_NONE);
}

Test(toolcall, call_ids)
{
    char a[32], b[32], m[32];
    shardlm_toolfmt_call_id(SHARDLM_TOOLFMT_HERMES, 1, a);
    shardlm_toolfmt_call_id(SHARDLM_TOOLFMT_HERMES, 2, b);
    shardlm_toolfmt_call_id(SHARDLM_TOOLFMT_MISTRAL, 1, m);
    cr_expect_eq(strlen(a), 29);
    cr_expect(!strncmp(a, "call_", 5));
    cr_expect_str_neq(a, b);
    cr_expect_eq(strlen(m), 9, "Mistral's templates refuse ids that are not 9 characters: %s", m);
    for (const char *p = m; *p; p++) cr_expect(isalnum((unsigned char)*p));
}

/* ---- the parser ---- */

typedef struct {
    char content[4096];
    int has_content;
    int n;
    char name[64][65];
    char args[64][1024];
    int last_index, order_ok;
} result;

static void on_event(void *ctx, const shardlm_toolparse_event *ev)
{
    result *r = ctx;
    if (ev->kind == SHARDLM_TOOLPARSE_CONTENT) {
        cr_assert(ev->len > 0, "no empty content events");
        strncat(r->content, ev->text, ev->len);
        r->has_content = 1;
    } else if (ev->kind == SHARDLM_TOOLPARSE_CALL) {
        cr_assert(r->n < 64, "at most 64 calls in a test");
        if (ev->index != r->n) r->order_ok = 0;
        snprintf(r->name[r->n], sizeof r->name[0], "%.*s", (int)ev->len, ev->text);
        r->n++;
    } else {
        if (ev->index != r->n - 1 || ev->len == 0) r->order_ok = 0;
        cr_assert(strlen(r->args[r->n - 1]) + ev->len < sizeof r->args[0]);
        strncat(r->args[r->n - 1], ev->text, ev->len);
    }
}

static const char *const NAMES[] = {"get_weather", "get_time", "add"};

/* Parses text cut at the given cut points (ascending, within it). */
static result parse_cuts(shardlm_toolfmt f, const char *text, const size_t *cuts, int n_cuts)
{
    result r;
    memset(&r, 0, sizeof r);
    r.order_ok = 1;
    shardlm_toolparse *p;
    cr_assert_eq(shardlm_toolparse_new(f, NAMES, 3, &p), 0);
    size_t at = 0, len = strlen(text);
    for (int i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        cr_assert_eq(shardlm_toolparse_feed(p, text + at, end - at, on_event, &r), 0);
        at = end;
    }
    cr_assert_eq(shardlm_toolparse_finish(p, on_event, &r), 0);
    cr_assert_eq(shardlm_toolparse_n_calls(p), r.n);
    shardlm_toolparse_free(p);
    cr_assert(r.order_ok, "a call's events come in order, after it begins");
    return r;
}

static void same(const result *a, const result *b, const char *how, const char *text)
{
    cr_assert_str_eq(a->content, b->content, "%s: content differs for %s", how, text);
    cr_assert_eq(a->n, b->n, "%s: number of calls differs for %s", how, text);
    for (int i = 0; i < a->n; i++) {
        cr_assert_str_eq(a->name[i], b->name[i], "%s: name %d for %s", how, i, text);
        cr_assert_str_eq(a->args[i], b->args[i], "%s: arguments %d for %s", how, i, text);
    }
}

/* The text parsed whole must give want_content and the calls; and so must
 * every other way of cutting it. */
static void expect_parse(shardlm_toolfmt f, const char *text, const char *want_content, int n_calls,
                         const char *const *names, const char *const *args)
{
    result whole = parse_cuts(f, text, NULL, 0);
    cr_assert_str_eq(whole.content, want_content, "content of %s", text);
    cr_assert_eq(whole.n, n_calls, "calls in %s", text);
    for (int i = 0; i < n_calls; i++) {
        cr_assert_str_eq(whole.name[i], names[i], "call %d of %s", i, text);
        cr_assert_str_eq(whole.args[i], args[i], "arguments %d of %s", i, text);
    }
    size_t len = strlen(text), cuts[4096];
    for (size_t k = 1; k < len; k++) { /* two pieces, cut at k */
        result r = parse_cuts(f, text, &k, 1);
        same(&whole, &r, "split in two", text);
    }
    for (size_t k = 1; k < len && k < 4096; k++) cuts[k - 1] = k; /* byte by byte */
    result r = parse_cuts(f, text, cuts, (int)(len - 1));
    same(&whole, &r, "byte by byte", text);
    uint64_t x = 0x9E3779B97F4A7C15ull ^ len;
    for (int round = 0; round < 20; round++) { /* random pieces */
        int n = 0;
        for (size_t k = 1; k < len; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            if (x % 4 == 0) cuts[n++] = k;
        }
        r = parse_cuts(f, text, cuts, n);
        same(&whole, &r, "random pieces", text);
    }
}

#define ARR(...) (const char *const[]){__VA_ARGS__}

Test(toolcall, hermes_calls)
{
    shardlm_toolfmt H = SHARDLM_TOOLFMT_HERMES;
    expect_parse(H, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", "",
                 1, ARR("get_weather"), ARR("{\"city\": \"Paris\"}"));
    expect_parse(H,
                 "Let me look.\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
                 "</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\", \"s\": "
                 "\"a\\\"}b{\"}}\n</tool_call>\n",
                 "Let me look.", 2, ARR("get_weather", "get_time"),
                 ARR("{\"city\": \"Paris\"}", "{\"tz\": \"CET\", \"s\": \"a\\\"}b{\"}"));
    /* compact and spaced JSON, nested values */
    expect_parse(H, "<tool_call>{\"name\":\"add\",\"arguments\":{\"xs\":[1,{\"y\":[2]}]}}</tool_call>", "", 1,
                 ARR("add"), ARR("{\"xs\":[1,{\"y\":[2]}]}"));
}

Test(toolcall, hermes_text_and_failures)
{
    shardlm_toolfmt H = SHARDLM_TOOLFMT_HERMES;
    expect_parse(H, "Hello there. \n", "Hello there. \n", 0, NULL, NULL);
    expect_parse(H, "A tag <tool", "A tag <tool", 0, NULL, NULL);
    expect_parse(H, "<tool_cal", "<tool_cal", 0, NULL, NULL);
    /* an unknown function, a head that is not a call: text */
    const char *unknown = "<tool_call>\n{\"name\": \"launch\", \"arguments\": {}}\n</tool_call>";
    expect_parse(H, unknown, unknown, 0, NULL, NULL);
    const char *nohead = "<tool_call> is how I call tools";
    expect_parse(H, nohead, nohead, 0, NULL, NULL);
    /* cut before the name is complete: text; cut inside the arguments: the call keeps what came */
    expect_parse(H, "<tool_call>\n{\"name\": \"get_wea", "<tool_call>\n{\"name\": \"get_wea", 0, NULL, NULL);
    expect_parse(H, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Pa", "", 1,
                 ARR("get_weather"), ARR("{\"city\": \"Pa"));
    /* text after the call is content again */
    expect_parse(H, "<tool_call>\n{\"name\": \"add\", \"arguments\": {}}\n</tool_call>\nDone.", "Done.", 1, ARR("add"),
                 ARR("{}"));
    /* a second marker after a failed head still starts a call */
    expect_parse(H, "<tool_call>oops <tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1}}</tool_call>",
                 "<tool_call>oops", 1, ARR("add"), ARR("{\"a\": 1}"));
}

Test(toolcall, llama3_calls)
{
    shardlm_toolfmt L = SHARDLM_TOOLFMT_LLAMA3;
    expect_parse(L, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", "", 1, ARR("get_weather"),
                 ARR("{\"city\": \"Paris\"}"));
    expect_parse(L, "<|python_tag|>{\"name\": \"add\", \"parameters\": {\"a\": 1, \"b\": 2}}", "", 1, ARR("add"),
                 ARR("{\"a\": 1, \"b\": 2}"));
    expect_parse(L, " \n{\"name\": \"add\", \"arguments\": {\"a\": -1.5e3}}", "", 1, ARR("add"),
                 ARR("{\"a\": -1.5e3}"));
    /* JSON that is not a call, and a call that does not start the text */
    expect_parse(L, "{\"answer\": 42}", "{\"answer\": 42}", 0, NULL, NULL);
    expect_parse(L, "Sure: {\"name\": \"add\", \"parameters\": {}}", "Sure: {\"name\": \"add\", \"parameters\": {}}", 0,
                 NULL, NULL);
    expect_parse(L, "{\"name\"", "{\"name\"", 0, NULL, NULL);
}

Test(toolcall, mistral_calls)
{
    shardlm_toolfmt M = SHARDLM_TOOLFMT_MISTRAL;
    expect_parse(M,
                 "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {}}, {\"name\": \"get_time\", \"arguments\": "
                 "{\"tz\": \"UTC\"}, \"id\": \"abcDEF123\"}]",
                 "", 2, ARR("add", "get_time"), ARR("{}", "{\"tz\": \"UTC\"}"));
    expect_parse(M, "[TOOL_CALLS] [ {\"name\": \"add\", \"arguments\": {\"a\": [1, 2]}} ]", "", 1, ARR("add"),
                 ARR("{\"a\": [1, 2]}"));
    expect_parse(M, "[TOOL_CALLS]no list", "[TOOL_CALLS]no list", 0, NULL, NULL);
    shardlm_toolfmt G = SHARDLM_TOOLFMT_GRANITE;
    expect_parse(G, "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"q\": \"}]\"}}]", "", 1,
                 ARR("get_weather"), ARR("{\"q\": \"}]\"}"));
    shardlm_toolfmt A = SHARDLM_TOOLFMT_MISTRAL_ARGS;
    expect_parse(A, "[TOOL_CALLS]add[ARGS]{}[TOOL_CALLS]get_time[CALL_ID]abcDEF123[ARGS]{\"tz\": [\"a\", 2]}", "", 2,
                 ARR("add", "get_time"), ARR("{}", "{\"tz\": [\"a\", 2]}"));
    expect_parse(A, "[TOOL_CALLS]nope[ARGS]{}", "[TOOL_CALLS]nope[ARGS]{}", 0, NULL, NULL);
    expect_parse(A, "Calling.\n[TOOL_CALLS]add[ARGS]{\"a\": 1}", "Calling.", 1, ARR("add"), ARR("{\"a\": 1}"));
}

/* ---- the grammar ---- */

static const char *const SCHEMAS[] = {
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":6},"
    "\"unit\":{\"enum\":[\"c\",\"f\"]}},\"required\":[\"city\",\"unit\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"tz\":{\"enum\":[\"UTC\",\"CET\"]}},\"required\":[\"tz\"]}",
    NULL, /* add: no parameters, the object {} */
};

static shardlm_grammar *tool_grammar(shardlm_toolfmt f, int only, int parallel)
{
    cJSON *p[3] = {cJSON_Parse(SCHEMAS[0]), cJSON_Parse(SCHEMAS[1]), NULL};
    shardlm_grammar *g;
    char why[512];
    cr_assert_eq(shardlm_toolcall_grammar(f, NAMES, (const cJSON *const *)p, 3, only, parallel, &g, why, sizeof why),
                 0, "%s: %s", shardlm_toolfmt_name(f), why);
    cJSON_Delete(p[0]);
    cJSON_Delete(p[1]);
    return g;
}

/* 1 when the whole text is a sentence of g. */
static int accepts(shardlm_grammar *g, const char *text)
{
    shardlm_grammar_state *s;
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &s), 0);
    int ok = !shardlm_grammar_accept_bytes(s, text, strlen(text)) && shardlm_grammar_can_end(s);
    shardlm_grammar_state_free(s);
    return ok;
}

Test(toolcall, grammar_takes_what_templates_render)
{
    static const struct {
        shardlm_toolfmt f;
        const char *one, *two, *bad_args, *bad_name;
    } cases[] = {
        {SHARDLM_TOOLFMT_HERMES,
         "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>",
         "<tool_call>\n{\"name\": \"add\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", "
         "\"arguments\": {\"tz\": \"UTC\"}}\n</tool_call>",
         "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
         "<tool_call>\n{\"name\": \"launch\", \"arguments\": {}}\n</tool_call>"},
        {SHARDLM_TOOLFMT_LLAMA3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\", \"unit\": \"f\"}}",
         NULL, "{\"name\": \"get_time\", \"parameters\": {\"tz\": \"PST\"}}", "{\"name\": \"x\", \"parameters\": {}}"},
        {SHARDLM_TOOLFMT_MISTRAL, "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {}}]",
         "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {}}, {\"name\": \"get_time\", \"arguments\": {\"tz\": "
         "\"CET\"}}]",
         "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 1}}]",
         "[TOOL_CALLS][{\"name\": \"sub\", \"arguments\": {}}]"},
        {SHARDLM_TOOLFMT_MISTRAL_ARGS, "[TOOL_CALLS]get_time[ARGS]{\"tz\": \"UTC\"}",
         "[TOOL_CALLS]get_time[ARGS]{\"tz\": \"UTC\"}[TOOL_CALLS]add[ARGS]{}", "[TOOL_CALLS]add[ARGS]{\"tz\": 1}",
         "[TOOL_CALLS]sub[ARGS]{}"},
        {SHARDLM_TOOLFMT_GRANITE, "<|tool_call|>[{\"name\": \"add\", \"arguments\": {}}]",
         "<|tool_call|>[{\"name\": \"add\", \"arguments\": {}}, {\"name\": \"add\", \"arguments\": {}}]",
         "<|tool_call|>[{\"name\": \"get_time\", \"arguments\": {}}]",
         "<|tool_call|>[{\"name\": \"sub\", \"arguments\": {}}]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *fn = shardlm_toolfmt_name(cases[i].f);
        shardlm_grammar *par = tool_grammar(cases[i].f, -1, 1), *single = tool_grammar(cases[i].f, -1, 0);
        cr_expect(accepts(par, cases[i].one), "%s: %s", fn, cases[i].one);
        cr_expect(accepts(single, cases[i].one), "%s single: %s", fn, cases[i].one);
        if (cases[i].two) {
            cr_expect(accepts(par, cases[i].two), "%s parallel: %s", fn, cases[i].two);
            cr_expect(!accepts(single, cases[i].two), "%s: two calls without parallel_tool_calls", fn);
        }
        cr_expect(!accepts(par, cases[i].bad_args), "%s: arguments against the schema: %s", fn, cases[i].bad_args);
        cr_expect(!accepts(par, cases[i].bad_name), "%s: unknown tool: %s", fn, cases[i].bad_name);
        shardlm_grammar_unref(par);
        shardlm_grammar_unref(single);
    }
    /* Llama 3's <|python_tag|> may lead; a named tool_choice allows that tool alone */
    shardlm_grammar *g = tool_grammar(SHARDLM_TOOLFMT_LLAMA3, -1, 1);
    cr_expect(accepts(g, "<|python_tag|>{\"name\": \"add\", \"parameters\": {}}"));
    shardlm_grammar_unref(g);
    g = tool_grammar(SHARDLM_TOOLFMT_HERMES, 1, 0);
    cr_expect(accepts(g, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"tz\": \"CET\"}}\n</tool_call>"));
    cr_expect(!accepts(g, "<tool_call>\n{\"name\": \"add\", \"arguments\": {}}\n</tool_call>"));
    shardlm_grammar_unref(g);
}

Test(toolcall, grammar_refuses_a_schema_by_tool)
{
    cJSON *p[1] = {cJSON_Parse("{\"type\":\"object\",\"properties\":{\"a\":{\"not\":{}}}}")};
    shardlm_grammar *g = NULL;
    char why[512];
    cr_assert_eq(shardlm_toolcall_grammar(SHARDLM_TOOLFMT_HERMES, NAMES, (const cJSON *const *)p, 1, -1, 1, &g, why,
                                          sizeof why),
                 SHARDLM_EINPUT);
    cr_expect_str_eq(why, "tools[0].function.parameters: \"not\" at #/properties/a is not supported");
    cr_expect_null(g);
    cJSON_Delete(p[0]);
}

/* A random text of g: at each step one byte among those g allows (ending
 * when it must, or at random once it may). */
static size_t random_sentence(shardlm_grammar *g, uint64_t *x, char *out, size_t cap)
{
    shardlm_grammar_state *s;
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &s), 0);
    size_t n = 0;
    while (n + 1 < cap && !shardlm_grammar_must_end(s)) {
        *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
        if (shardlm_grammar_can_end(s) && *x % 3 == 0) break;
        unsigned char ok[256];
        int nok = 0;
        for (int b = 0; b < 256; b++) {
            shardlm_grammar_state *c;
            cr_assert_eq(shardlm_grammar_state_copy(s, &c), 0);
            unsigned char byte = (unsigned char)b;
            /* ASCII keeps the walk short; multi-byte characters are the mask tests' business */
            if (b < 128 && !shardlm_grammar_accept_bytes(c, &byte, 1)) ok[nok++] = byte;
            shardlm_grammar_state_free(c);
        }
        cr_assert(nok > 0, "the grammar is stuck after %.*s", (int)n, out);
        out[n] = (char)ok[(*x >> 8) % (uint64_t)nok];
        cr_assert_eq(shardlm_grammar_accept_bytes(s, &out[n], 1), 0);
        n++;
    }
    cr_assert(shardlm_grammar_can_end(s), "the walk ran out of room: %.*s", (int)n, out);
    shardlm_grammar_state_free(s);
    out[n] = 0;
    return n;
}

Test(toolcall, every_sentence_of_the_grammar_parses_back)
{
    static const shardlm_toolfmt fmts[] = {SHARDLM_TOOLFMT_HERMES, SHARDLM_TOOLFMT_LLAMA3, SHARDLM_TOOLFMT_MISTRAL,
                                           SHARDLM_TOOLFMT_MISTRAL_ARGS, SHARDLM_TOOLFMT_GRANITE};
    uint64_t x = 12345;
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
        shardlm_grammar *g = tool_grammar(fmts[f], -1, 1);
        for (int k = 0; k < 25; k++) {
            char text[8192];
            random_sentence(g, &x, text, sizeof text);
            result r = parse_cuts(fmts[f], text, NULL, 0);
            cr_assert_str_eq(r.content, "", "%s: no content in %s", shardlm_toolfmt_name(fmts[f]), text);
            cr_assert(r.n >= 1, "%s: no call in %s", shardlm_toolfmt_name(fmts[f]), text);
            for (int i = 0; i < r.n; i++) {
                cJSON *a = cJSON_Parse(r.args[i]);
                cr_assert(cJSON_IsObject(a), "%s: arguments %s of %s", shardlm_toolfmt_name(fmts[f]), r.args[i], text);
                if (!strcmp(r.name[i], "get_weather")) {
                    const char *city = cJSON_GetStringValue(cJSON_GetObjectItem(a, "city"));
                    size_t chars = 0;
                    for (const char *c = city ? city : ""; *c; c++) chars += ((unsigned char)*c & 0xC0) != 0x80;
                    cr_expect(city && chars <= 6, "city in %s", r.args[i]);
                    const char *u = cJSON_GetStringValue(cJSON_GetObjectItem(a, "unit"));
                    cr_expect(u && (!strcmp(u, "c") || !strcmp(u, "f")), "unit in %s", r.args[i]);
                    cr_expect_eq(cJSON_GetArraySize(a), 2, "no other members: %s", r.args[i]);
                } else if (!strcmp(r.name[i], "get_time")) {
                    const char *tz = cJSON_GetStringValue(cJSON_GetObjectItem(a, "tz"));
                    cr_expect(tz && (!strcmp(tz, "UTC") || !strcmp(tz, "CET")), "tz in %s", r.args[i]);
                } else {
                    cr_expect_str_eq(r.name[i], "add");
                    cr_expect_eq(cJSON_GetArraySize(a), 0, "add takes no arguments: %s", r.args[i]);
                }
                cJSON_Delete(a);
            }
        }
        shardlm_grammar_unref(g);
    }
}

/* ---- the trigger scan ---- */

static int scan(const shardlm_grammar_trigger *tr, int n, const char *const *pieces, int np, char *got)
{
    shardlm_trigger_scan t;
    cr_assert_eq(shardlm_trigger_scan_init(&t, tr, n), 0);
    int at = -1;
    for (int i = 0; i < np; i++) {
        const char *from;
        size_t len;
        int r = shardlm_trigger_scan_feed(&t, pieces[i], strlen(pieces[i]), &from, &len);
        cr_assert(r >= 0);
        if (r) {
            cr_assert_eq(at, -1, "fires once");
            snprintf(got, 256, "%.*s", (int)len, from);
            at = i;
        }
    }
    shardlm_trigger_scan_free(&t);
    return at;
}

Test(toolcall, trigger_scan)
{
    char got[256];
    const shardlm_grammar_trigger *t;
    int n = shardlm_toolfmt_triggers(SHARDLM_TOOLFMT_HERMES, &t);
    cr_expect_eq(scan(t, n, ARR("Let me ", "call <tool", "_call>\n{\"na"), 3, got), 2);
    cr_expect_str_eq(got, "<tool_call>\n{\"na", "the grammar takes the text from the trigger on");
    cr_expect_eq(scan(t, n, ARR("no ", "call here <tool_ca", "ll"), 3, got), -1);
    n = shardlm_toolfmt_triggers(SHARDLM_TOOLFMT_LLAMA3, &t);
    cr_expect_eq(scan(t, n, ARR(" \n", "{\"na", "me\": \"add\""), 3, got), 2);
    cr_expect_str_eq(got, "{\"name\": \"add\"");
    cr_expect_eq(scan(t, n, ARR("x {\"name\": ", "\"add\""), 2, got), -1, "the bare form only starts the output");
    cr_expect_eq(scan(t, n, ARR("x ", "<|python_tag|>{"), 2, got), 1);
    cr_expect_str_eq(got, "<|python_tag|>{");
    /* a long text before the trigger is not kept */
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    n = shardlm_toolfmt_triggers(SHARDLM_TOOLFMT_MISTRAL, &t);
    cr_expect_eq(scan(t, n, ARR(big, big, "[TOOL_", "CALLS]x"), 4, got), 3);
    cr_expect_str_eq(got, "[TOOL_CALLS]x");
    shardlm_grammar_trigger bad = {"", 0};
    shardlm_trigger_scan s;
    cr_expect_eq(shardlm_trigger_scan_init(&s, &bad, 1), SHARDLM_EINPUT);
}
