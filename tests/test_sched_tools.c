/* test_sched_tools.c - tool calls and the small request fields in the
 * scheduler, on stories260K: 20 answers at temperature 1 under the
 * tool-call grammar of every format, each of which parses into calls whose
 * arguments validate against the tool's schema; a lazy grammar that starts
 * exactly at its trigger (anywhere, or only at the start) and one whose
 * trigger never comes; a control token "[TOOL_CALLS]" given to the model,
 * output as text, allowed by the grammar and firing the trigger; min_tokens,
 * stop_token_ids and ignore_eos; and the prefix cache's cached_tokens. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../launcher/node.h"
#include "../runtime/scheduler.h"
#include "../runtime/toolcall.h"
#include "shardlm_common.h"
#include "test_util.h"

#define MAXREQ 20
#define SINK_MAX MAXREQ
#include "sched_sink.h"

typedef struct {
    shardlm_node node;
    shardlm_sched *sched;
    pthread_t thread;
    sink k;
    slot sl[MAXREQ];
} rig;

static void rig_up(rig *r, const char *model)
{
    sink_init(&r->k);
    shardlm_node_opts o = sink_node_opts(model, 64, 2048);
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

static void wait_all(rig *r, int n)
{
    for (int i = 0; i < n; i++) cr_assert(sink_wait(&r->k, i, 180), "request %d did not finish", i);
}

static int encode(rig *r, const char *prompt, int special, int32_t *toks, int cap)
{
    size_t n = 0;
    int rc = special ? shardlm_tokenizer_encode_special(r->node.tok, prompt, strlen(prompt), 1, toks, (size_t)cap, &n)
                     : shardlm_tokenizer_encode(r->node.tok, prompt, strlen(prompt), 1, toks, (size_t)cap, &n);
    cr_assert_eq(rc, 0);
    cr_assert_leq(n, (size_t)cap);
    return (int)n;
}

static void submit(rig *r, int i, shardlm_request_desc d)
{
    r->sl[i] = (slot){&r->k, i};
    shardlm_request_cb cb = {.on_token = sink_on_token, .on_end = sink_on_end, .ctx = &r->sl[i], .on_admit = sink_on_admit};
    uint64_t id;
    cr_assert_eq(shardlm_sched_submit(r->sched, &d, cb, &id), 0, "%s", shardlm_err_get());
}

static shardlm_sampling_params greedy(void)
{
    shardlm_sampling_params p = shardlm_sampling_params_default();
    p.temperature = 0;
    return p;
}

/* ---- tool calls under every format's grammar ---- */

static const char *const NAMES[] = {"get_weather", "get_time"};
static const char *const SCHEMAS[] = {
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":8},"
    "\"unit\":{\"enum\":[\"celsius\",\"fahrenheit\"]},\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":7}},"
    "\"required\":[\"city\",\"unit\"],\"additionalProperties\":false}",
    "{\"type\":\"object\",\"properties\":{\"zone\":{\"enum\":[\"UTC\",\"CET\"]},\"exact\":{\"type\":\"boolean\"}},"
    "\"required\":[\"zone\",\"exact\"],\"additionalProperties\":false}",
};

/* What the arguments of call `name` must be, checked by hand. */
static void check_args(const char *name, const char *args, const char *text)
{
    cJSON *a = cJSON_Parse(args);
    cr_assert(cJSON_IsObject(a), "arguments are not a JSON object: %s (in %s)", args, text);
    const cJSON *m;
    if (!strcmp(name, "get_weather")) {
        const char *city = cJSON_GetStringValue(cJSON_GetObjectItem(a, "city"));
        const char *unit = cJSON_GetStringValue(cJSON_GetObjectItem(a, "unit"));
        size_t chars = 0;
        for (const char *c = city ? city : ""; *c; c++) chars += ((unsigned char)*c & 0xC0) != 0x80;
        cr_expect(city && chars >= 1 && chars <= 8, "city: %s", args);
        cr_expect(unit && (!strcmp(unit, "celsius") || !strcmp(unit, "fahrenheit")), "unit: %s", args);
        if ((m = cJSON_GetObjectItem(a, "days")))
            cr_expect(cJSON_IsNumber(m) && m->valuedouble == (int)m->valuedouble && m->valueint >= 1 &&
                          m->valueint <= 7,
                      "days: %s", args);
        cJSON_ArrayForEach(m, a) cr_expect(!strcmp(m->string, "city") || !strcmp(m->string, "unit") ||
                                               !strcmp(m->string, "days"),
                                           "extra member %s: %s", m->string, args);
    } else {
        cr_assert_str_eq(name, "get_time");
        const char *zone = cJSON_GetStringValue(cJSON_GetObjectItem(a, "zone"));
        cr_expect(zone && (!strcmp(zone, "UTC") || !strcmp(zone, "CET")), "zone: %s", args);
        cr_expect(cJSON_IsBool(cJSON_GetObjectItem(a, "exact")), "exact: %s", args);
        cr_expect_eq(cJSON_GetArraySize(a), 2, "members: %s", args);
    }
    cJSON_Delete(a);
}

typedef struct {
    char content[8192];
    int n;
    char name[32][65];
    char args[32][2048];
} calls;

static void collect(void *ctx, const shardlm_toolparse_event *ev)
{
    calls *c = ctx;
    if (ev->kind == SHARDLM_TOOLPARSE_CONTENT) strncat(c->content, ev->text, ev->len);
    else if (ev->kind == SHARDLM_TOOLPARSE_CALL && c->n < 32)
        snprintf(c->name[c->n++], sizeof c->name[0], "%.*s", (int)ev->len, ev->text);
    else if (ev->kind == SHARDLM_TOOLPARSE_ARGS && c->n <= 32) strncat(c->args[c->n - 1], ev->text, ev->len);
}

static void parse(shardlm_toolfmt f, const char *text, calls *c, const char *const *names, int n)
{
    memset(c, 0, sizeof *c);
    shardlm_toolparse *p;
    cr_assert_eq(shardlm_toolparse_new(f, names, n, &p), 0);
    cr_assert_eq(shardlm_toolparse_feed(p, text, strlen(text), collect, c), 0);
    cr_assert_eq(shardlm_toolparse_finish(p, collect, c), 0);
    shardlm_toolparse_free(p);
}

Test(sched_tools, twenty_answers_in_every_format_validate)
{
    static rig r;
    rig_up(&r, tu_shared("models/stories260K.gguf"));
    static const shardlm_toolfmt fmts[] = {SHARDLM_TOOLFMT_HERMES, SHARDLM_TOOLFMT_LLAMA3, SHARDLM_TOOLFMT_MISTRAL,
                                           SHARDLM_TOOLFMT_MISTRAL_ARGS, SHARDLM_TOOLFMT_GRANITE};
    cJSON *params[2] = {cJSON_Parse(SCHEMAS[0]), cJSON_Parse(SCHEMAS[1])};
    int32_t toks[64];
    int n = encode(&r, "Once upon a time, Lily wanted to know the weather.", 0, toks, 64);
    for (int i = 0; i < MAXREQ; i++) {
        shardlm_toolfmt f = fmts[i % 5];
        shardlm_grammar *g;
        char why[512];
        /* even requests: one call or more; odd: exactly one (parallel_tool_calls false) */
        cr_assert_eq(shardlm_toolcall_grammar(f, NAMES, (const cJSON *const *)params, 2, -1, i % 2 == 0, &g, why,
                                              sizeof why),
                     0, "%s", why);
        shardlm_sampling_params p = shardlm_sampling_params_default(); /* temperature 1 */
        p.seed = 500 + (uint64_t)i;
        p.has_seed = 1;
        submit(&r, i, (shardlm_request_desc){.prompt = toks, .n_prompt = n, .params = p, .max_tokens = 1900,
                                             .grammar = g, .choice = (uint32_t)i});
        shardlm_grammar_unref(g);
    }
    wait_all(&r, MAXREQ);
    int total = 0;
    for (int i = 0; i < MAXREQ; i++) {
        shardlm_toolfmt f = fmts[i % 5];
        const char *t = r.k.text[i];
        cr_expect_eq(r.k.why[i], SHARDLM_FINISH_STOP, "%s request %d ended with %d: %s", shardlm_toolfmt_name(f), i,
                     r.k.why[i], t);
        calls c;
        parse(f, t, &c, NAMES, 2);
        cr_expect_str_eq(c.content, "", "%s: no text outside the calls: %s", shardlm_toolfmt_name(f), t);
        cr_assert_geq(c.n, 1, "%s: no call in %s", shardlm_toolfmt_name(f), t);
        if (i % 2 || f == SHARDLM_TOOLFMT_LLAMA3) cr_expect_eq(c.n, 1, "one call: %s", t);
        cr_expect_leq(c.n, SHARDLM_TOOL_CALLS_MAX);
        for (int j = 0; j < c.n; j++) check_args(c.name[j], c.args[j], t);
        total += c.n;
    }
    cr_log_info("sched_tools: %d calls in %d answers; e.g. %s", total, MAXREQ, r.k.text[0]);
    cJSON_Delete(params[0]);
    cJSON_Delete(params[1]);
    rig_down(&r);
}

/* ---- lazy grammars ---- */

static shardlm_grammar *gbnf(const char *text)
{
    shardlm_grammar *g;
    char why[256];
    cr_assert_eq(shardlm_grammar_compile(text, strlen(text), &g, why, sizeof why), 0, "%s", why);
    return g;
}

Test(sched_tools, lazy_grammar_starts_at_its_trigger)
{
    static rig r;
    rig_up(&r, tu_shared("models/stories260K.gguf"));
    int32_t toks[16];
    int n = encode(&r, "Once upon a time", 0, toks, 16);
    shardlm_grammar *g = gbnf("root ::= \"Lily\" \" the cat!\"");
    shardlm_grammar *h = gbnf("root ::= \", there\" \" it ends.\"");
    static const shardlm_grammar_trigger lily = {"Lily", 0}, zebra = {"Zebra", 0}, start = {", there", 1},
                                         late = {"girl", 1};
    shardlm_request_desc d = {.prompt = toks, .n_prompt = n, .params = greedy(), .max_tokens = 40};
    submit(&r, 0, d); /* unconstrained, for reference */
    d.grammar = g;
    d.triggers = &lily;
    d.n_triggers = 1;
    submit(&r, 1, d);
    d.triggers = &zebra;
    submit(&r, 2, d);
    d.grammar = h;
    d.triggers = &start;
    submit(&r, 3, d);
    d.triggers = &late;
    submit(&r, 4, d);
    wait_all(&r, 5);
    const char *ref = r.k.text[0];
    cr_assert(!strncmp(ref, ", there was a little girl named Lily", 36), "the greedy story: %s", ref);
    cr_expect_str_eq(r.k.text[1], ", there was a little girl named Lily the cat!");
    cr_expect_eq(r.k.why[1], SHARDLM_FINISH_STOP, "the grammar completes: stop");
    cr_expect_str_eq(r.k.text[2], ref, "a trigger that never comes constrains nothing");
    cr_expect_eq(r.k.why[2], SHARDLM_FINISH_LENGTH);
    cr_expect_str_eq(r.k.text[3], ", there it ends.");
    cr_expect_str_eq(r.k.text[4], ref, "an at-start trigger later in the text does not fire");
    shardlm_grammar_unref(g);
    shardlm_grammar_unref(h);
    rig_down(&r);
}

/* ---- a control token as a call marker ---- */

Test(sched_tools, control_token_marker_is_text_and_fires_the_trigger)
{
    char model[600];
    snprintf(model, sizeof model, "%s/marker.gguf", tu_tmpdir());
    const int32_t id = 500;
    const char *piece = "[TOOL_CALLS]";
    tu_gguf_with_control_tokens(tu_shared("models/stories260K.gguf"), model, &id, &piece, 1);
    static rig r;
    rig_up(&r, model);
    const char *const add[] = {"add"};
    const cJSON *none[] = {NULL};
    shardlm_grammar *g;
    char why[512];
    cr_assert_eq(shardlm_toolcall_grammar(SHARDLM_TOOLFMT_MISTRAL_ARGS, add, none, 1, -1, 0, &g, why, sizeof why), 0,
                 "%s", why);
    int32_t toks[16];
    int n = encode(&r, "Once upon a time", 0, toks, 16);
    shardlm_logit_bias bias = {id, 100};
    shardlm_sampling_params p = greedy();
    p.logit_bias = &bias;
    p.n_logit_bias = 1;
    const shardlm_grammar_trigger *trig;
    int nt = shardlm_toolfmt_triggers(SHARDLM_TOOLFMT_MISTRAL_ARGS, &trig);
    shardlm_request_desc d = {.prompt = toks, .n_prompt = n, .params = p, .max_tokens = 60, .grammar = g,
                              .as_text = &id, .n_as_text = 1};
    submit(&r, 0, d); /* required: the grammar allows the token, which spells its piece */
    d.as_text = NULL, d.n_as_text = 0;
    submit(&r, 1, d); /* the token spells nothing, so the grammar spells the marker in pieces */
    d.as_text = &id, d.n_as_text = 1, d.triggers = trig, d.n_triggers = nt;
    submit(&r, 2, d); /* auto: the model's marker token fires the lazy grammar */
    d.grammar = NULL, d.triggers = NULL, d.n_triggers = 0, d.max_tokens = 3;
    submit(&r, 3, d); /* no grammar: the marker is text, the rest is the model's */
    wait_all(&r, 4);
    for (int i = 0; i < 3; i++) {
        calls c;
        parse(SHARDLM_TOOLFMT_MISTRAL_ARGS, r.k.text[i], &c, add, 1);
        cr_expect_eq(r.k.why[i], SHARDLM_FINISH_STOP, "request %d: %s", i, r.k.text[i]);
        cr_expect_eq(c.n, 1, "request %d: one call in %s", i, r.k.text[i]);
        cJSON *a = cJSON_Parse(c.args[0]);
        cr_expect(cJSON_IsObject(a) && !cJSON_GetArraySize(a), "request %d: add takes {}: %s", i, r.k.text[i]);
        cJSON_Delete(a);
        cr_expect(!strncmp(r.k.text[i], "[TOOL_CALLS]add[ARGS]", 21), "request %d: %s", i, r.k.text[i]);
    }
    cr_expect_eq(r.k.toks[0][0], id, "the biased marker token is allowed and chosen");
    cr_expect_eq(r.k.toks[2][0], id);
    cr_expect_neq(r.k.toks[1][0], id, "without as_text the control token has no text the grammar could take");
    cr_expect_gt(r.k.ntok[1], r.k.ntok[0], "spelling the marker takes more tokens");
    cr_expect(!strncmp(r.k.text[3], "[TOOL_CALLS][TOOL_CALLS][TOOL_CALLS]", 36), "%s", r.k.text[3]);
    shardlm_grammar_unref(g);
    rig_down(&r);
}

/* ---- min_tokens, stop_token_ids, ignore_eos, cached_tokens ---- */

Test(sched_tools, min_tokens_stop_token_ids_ignore_eos)
{
    static rig r;
    rig_up(&r, tu_shared("models/stories260K.gguf"));
    int32_t toks[16];
    int n = encode(&r, "Once upon a time", 0, toks, 16);
    int32_t eos = shardlm_tokenizer_eos(r.node.tok);
    shardlm_logit_bias to_eos = {eos, 100};
    shardlm_sampling_params p = greedy();
    shardlm_request_desc d = {.prompt = toks, .n_prompt = n, .params = p, .max_tokens = 12};
    submit(&r, 0, d); /* reference */
    d.params.logit_bias = &to_eos;
    d.params.n_logit_bias = 1;
    submit(&r, 1, d); /* EOS at once */
    d.min_tokens = 5;
    submit(&r, 2, d); /* EOS only after 5 tokens */
    d.min_tokens = 0;
    d.ignore_eos = 1;
    d.max_tokens = 4;
    submit(&r, 3, d); /* EOS is an ordinary token: 4 of them, length */
    wait_all(&r, 4);
    /* an ending token is counted but not reported as text */
    cr_assert_eq(r.k.ntok[0], 12);
    cr_expect_eq(r.k.generated[1], 1);
    cr_expect_eq(r.k.ntok[1], 0);
    cr_expect_eq(r.k.why[1], SHARDLM_FINISH_STOP);
    cr_expect_eq(r.k.generated[2], 6, "5 tokens, then EOS");
    cr_expect_eq(r.k.ntok[2], 5);
    for (int i = 0; i < 5; i++) cr_expect_neq(r.k.toks[2][i], eos);
    cr_expect_eq(r.k.why[2], SHARDLM_FINISH_STOP);
    cr_expect_eq(r.k.ntok[3], 4);
    cr_expect_eq(r.k.why[3], SHARDLM_FINISH_LENGTH);
    for (int i = 0; i < 4; i++) cr_expect_eq(r.k.toks[3][i], eos);
    /* stop_token_ids: the reference's third token ends it, its text not shown */
    int32_t third = r.k.toks[0][2];
    memset(&r.k, 0, sizeof r.k);
    d = (shardlm_request_desc){.prompt = toks, .n_prompt = n, .params = greedy(), .max_tokens = 12,
                               .stop_token_ids = &third, .n_stop_token_ids = 1};
    submit(&r, 0, d);
    d.min_tokens = 3; /* the stop token is masked for the first three */
    submit(&r, 1, d);
    wait_all(&r, 2);
    cr_expect_eq(r.k.generated[0], 3);
    cr_expect_eq(r.k.ntok[0], 2);
    cr_expect_eq(r.k.why[0], SHARDLM_FINISH_STOP);
    cr_expect_str_eq(r.k.text[0], ", there", "the text of the first two tokens only");
    cr_expect_geq(r.k.generated[1], 4);
    cr_expect_neq(r.k.toks[1][2], third);
    int32_t bad = 99999;
    d.stop_token_ids = &bad;
    uint64_t id;
    cr_expect_eq(shardlm_sched_submit(r.sched, &d, (shardlm_request_cb){0}, &id), SHARDLM_EINPUT);
    d.stop_token_ids = NULL, d.n_stop_token_ids = 0, d.min_tokens = 20;
    cr_expect_eq(shardlm_sched_submit(r.sched, &d, (shardlm_request_cb){0}, &id), SHARDLM_EINPUT,
                 "min_tokens over max_tokens");
    rig_down(&r);
}

Test(sched_tools, cached_tokens_come_from_the_prefix_cache)
{
    static rig r;
    rig_up(&r, tu_shared("models/stories260K.gguf"));
    int32_t toks[128];
    int n = encode(&r, "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                       "One day, she saw a big red ball.", 0, toks, 128);
    cr_assert_geq(n, 33, "the prompt spans two full blocks of 16");
    shardlm_request_desc d = {.prompt = toks, .n_prompt = n, .params = greedy(), .max_tokens = 2};
    submit(&r, 0, d);
    wait_all(&r, 1);
    submit(&r, 1, d);
    wait_all(&r, 2);
    cr_expect_eq(r.k.cached[0], 0, "a cold cache serves nothing");
    cr_expect_eq(r.k.cached[1], (n - 1) / 16 * 16, "the second request finds the first one's full blocks");
    cr_expect_eq(r.k.admitted[0], 1);
    cr_expect_eq(r.k.admitted[1], 1);
    rig_down(&r);
}
