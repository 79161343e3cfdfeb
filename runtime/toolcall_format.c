/* toolcall_format.c - the tool-call formats: which one a chat template
 * uses (what it renders for a probe tool call), their triggers and marker
 * tokens, call ids, and the GBNF grammar of one answer of calls, whose
 * arguments are each tool's JSON Schema compiled by json_schema.c. The
 * wrappers are written exactly as the templates render them, so a model
 * that follows its template pays nothing for the constraint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "toolcall.h"

const char *shardlm_toolfmt_name(shardlm_toolfmt f)
{
    switch (f) {
    case SHARDLM_TOOLFMT_HERMES: return "hermes";
    case SHARDLM_TOOLFMT_LLAMA3: return "llama3";
    case SHARDLM_TOOLFMT_MISTRAL: return "mistral";
    case SHARDLM_TOOLFMT_MISTRAL_ARGS: return "mistral-args";
    case SHARDLM_TOOLFMT_GRANITE: return "granite";
    default: return "none";
    }
}

/* ---- detection ---- */

static const char PROBE[] =
    "{\"messages\":[{\"role\":\"user\",\"content\":\"What is the weather?\"},"
    "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"abc123DEF\",\"type\":\"function\","
    "\"function\":{\"name\":\"probe_fn\",\"arguments\":{\"probe_arg\":\"probe_val\"}}}]}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"probe_fn\",\"description\":\"A probe.\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"probe_arg\":{\"type\":\"string\","
    "\"description\":\"An argument.\"}},\"required\":[\"probe_arg\"]}}}],\"add_generation_prompt\":false}";

/* The first occurrence of a, then (after whitespace) b; NULL when absent. */
static const char *then(const char *s, const char *a, const char *b)
{
    for (const char *p = strstr(s, a); p; p = strstr(p + 1, a)) {
        const char *q = p + strlen(a);
        while (*q == ' ' || *q == '\n') q++;
        if (!strncmp(q, b, strlen(b))) return p;
    }
    return NULL;
}

shardlm_toolfmt shardlm_toolfmt_detect(const shardlm_chat_template *tpl)
{
    char *text = NULL;
    size_t len = 0;
    if (!tpl || shardlm_chat_render_json(tpl, PROBE, sizeof PROBE - 1, NULL, &text, &len)) return SHARDLM_TOOLFMT_NONE;
    shardlm_toolfmt f = SHARDLM_TOOLFMT_NONE;
    if (then(text, "<tool_call>", "{\"name\": \"probe_fn\""))
        f = SHARDLM_TOOLFMT_HERMES;
    else if (strstr(text, "[TOOL_CALLS]probe_fn"))
        f = SHARDLM_TOOLFMT_MISTRAL_ARGS;
    else if (then(text, "[TOOL_CALLS]", "[{\"name\": \"probe_fn\""))
        f = SHARDLM_TOOLFMT_MISTRAL;
    else if (strstr(text, "{\"name\": \"probe_fn\", \"parameters\": "))
        f = SHARDLM_TOOLFMT_LLAMA3;
    else if (strstr(text, "<|tool_call|>"))
        f = SHARDLM_TOOLFMT_GRANITE;
    free(text);
    return f;
}

/* ---- triggers, markers, ids ---- */

static const shardlm_grammar_trigger T_HERMES[] = {{"<tool_call>", 0}};
static const shardlm_grammar_trigger T_LLAMA3[] = {{"<|python_tag|>", 0}, {"{\"name\": ", 1}};
static const shardlm_grammar_trigger T_MISTRAL[] = {{"[TOOL_CALLS]", 0}};
static const shardlm_grammar_trigger T_GRANITE[] = {{"<|tool_call|>", 0}};

int shardlm_toolfmt_triggers(shardlm_toolfmt f, const shardlm_grammar_trigger **out)
{
    switch (f) {
    case SHARDLM_TOOLFMT_HERMES: *out = T_HERMES; return 1;
    case SHARDLM_TOOLFMT_LLAMA3: *out = T_LLAMA3; return 2;
    case SHARDLM_TOOLFMT_MISTRAL:
    case SHARDLM_TOOLFMT_MISTRAL_ARGS: *out = T_MISTRAL; return 1;
    case SHARDLM_TOOLFMT_GRANITE: *out = T_GRANITE; return 1;
    default: *out = NULL; return 0;
    }
}

const char *const *shardlm_toolfmt_markers(shardlm_toolfmt f)
{
    static const char *const hermes[] = {"<tool_call>", "</tool_call>", NULL};
    static const char *const llama3[] = {"<|python_tag|>", NULL};
    static const char *const mistral[] = {"[TOOL_CALLS]", NULL};
    static const char *const args[] = {"[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", NULL};
    static const char *const granite[] = {"<|tool_call|>", NULL};
    static const char *const none[] = {NULL};
    switch (f) {
    case SHARDLM_TOOLFMT_HERMES: return hermes;
    case SHARDLM_TOOLFMT_LLAMA3: return llama3;
    case SHARDLM_TOOLFMT_MISTRAL: return mistral;
    case SHARDLM_TOOLFMT_MISTRAL_ARGS: return args;
    case SHARDLM_TOOLFMT_GRANITE: return granite;
    default: return none;
    }
}

int shardlm_toolfmt_parallel(shardlm_toolfmt f)
{
    return f != SHARDLM_TOOLFMT_LLAMA3 && f != SHARDLM_TOOLFMT_NONE;
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void shardlm_toolfmt_call_id(shardlm_toolfmt f, uint64_t seed, char out[32])
{
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    int mistral = f == SHARDLM_TOOLFMT_MISTRAL || f == SHARDLM_TOOLFMT_MISTRAL_ARGS;
    int n = mistral ? 9 : 24, k = 0;
    if (!mistral) k = snprintf(out, 32, "call_");
    for (int i = 0; i < n; i++) out[k++] = alnum[splitmix(&seed) % (sizeof alnum - 1)];
    out[k] = 0;
}

/* ---- the grammar ---- */

typedef struct {
    char *s;
    size_t n;
    int oom;
} sbuf;

static void put(sbuf *b, const char *fmt, const char *arg)
{
    int k = snprintf(NULL, 0, fmt, arg);
    char *t = b->oom ? NULL : realloc(b->s, b->n + (size_t)k + 1);
    if (!t) {
        b->oom = 1;
        return;
    }
    b->s = t;
    snprintf(b->s + b->n, (size_t)k + 1, fmt, arg);
    b->n += (size_t)k;
}

/* The wrapper of one format: what comes before the calls, between two
 * calls, after them; and around one call's name and arguments (the name
 * goes between call_open and name_close). */
typedef struct {
    const char *before, *between, *after, *call_open, *name_close, *call_close;
} wrapper;

static wrapper wrapper_of(shardlm_toolfmt f)
{
    switch (f) {
    case SHARDLM_TOOLFMT_HERMES:
        return (wrapper){"", "\\n", "", "<tool_call>\\n{\\\"name\\\": \\\"", "\\\", \\\"arguments\\\": ",
                         "}\\n</tool_call>"};
    case SHARDLM_TOOLFMT_LLAMA3:
        return (wrapper){"\"<|python_tag|>\"? ", "", "", "{\\\"name\\\": \\\"", "\\\", \\\"parameters\\\": ", "}"};
    case SHARDLM_TOOLFMT_MISTRAL:
        return (wrapper){"\"[TOOL_CALLS][\" ", ", ", " \"]\"", "{\\\"name\\\": \\\"", "\\\", \\\"arguments\\\": ",
                         "}"};
    case SHARDLM_TOOLFMT_MISTRAL_ARGS: return (wrapper){"", "", "", "[TOOL_CALLS]", "[ARGS]", ""};
    default:
        return (wrapper){"\"<|tool_call|>[\" ", ", ", " \"]\"", "{\\\"name\\\": \\\"", "\\\", \\\"arguments\\\": ",
                         "}"};
    }
}

/* Arguments are written compactly, as templates render them (tojson):
 * at most one space between tokens, where structured outputs also allow a
 * newline and indentation. A small model that loves whitespace then
 * cannot spend its answer on it. Rewrites the schema's rule NAME-ws. */
static int compact_ws(sbuf *b, const char *name)
{
    char head[48];
    int k = snprintf(head, sizeof head, "\n%s-ws ::= ", name);
    char *at = b->s ? strstr(b->s, head) : NULL;
    if (!at) return SHARDLM_OK; /* the schema needs no whitespace */
    char *def = at + k, *eol = strchr(def, '\n');
    const char *tight = "\" \"?";
    size_t old = (size_t)(eol - def), neu = strlen(tight);
    if (neu > old) return SHARDLM_EINPUT; /* cannot happen: the original is longer */
    memcpy(def, tight, neu);
    memmove(def + neu, eol, b->n - (size_t)(eol - b->s) + 1);
    b->n -= old - neu;
    return SHARDLM_OK;
}

static int tool_rules(const char *const *names, const cJSON *const *params, int n, int only, sbuf *b, char *why,
                      size_t cap, const wrapper *w)
{
    cJSON *empty = cJSON_Parse("{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}");
    int rc = empty ? SHARDLM_OK : SHARDLM_ENOMEM, first = 1;
    put(b, "%s", "tc-fn ::= ");
    for (int i = 0; !rc && i < n; i++) {
        if (only >= 0 && i != only) continue;
        char rule[32];
        snprintf(rule, sizeof rule, "tool%d", i);
        put(b, "%s\"", first ? "" : " | ");
        put(b, "%s", names[i]);
        put(b, "%s\" ", w->name_close);
        put(b, "%s", rule);
        first = 0;
    }
    put(b, "%s", "\n");
    for (int i = 0; !rc && i < n; i++) {
        if (only >= 0 && i != only) continue;
        char rule[32], err[448];
        snprintf(rule, sizeof rule, "tool%d", i);
        rc = shardlm_json_schema_gbnf(params[i] ? params[i] : empty, rule, &b->s, &b->n, err, sizeof err);
        if (rc == SHARDLM_EINPUT) snprintf(why, cap, "tools[%d].function.parameters: %s", i, err);
        if (!rc) rc = compact_ws(b, rule);
    }
    cJSON_Delete(empty);
    return rc;
}

int shardlm_toolcall_grammar(shardlm_toolfmt f, const char *const *names, const cJSON *const *params, int n,
                             int only, int parallel, shardlm_grammar **out, char *why, size_t cap)
{
    *out = NULL;
    if (why && cap) why[0] = 0;
    if (f == SHARDLM_TOOLFMT_NONE || n < 1) {
        snprintf(why, cap, "no tool-call format or no tools");
        return SHARDLM_EINPUT;
    }
    wrapper w = wrapper_of(f);
    int many = parallel && shardlm_toolfmt_parallel(f);
    sbuf b = {0};
    put(&b, "root ::= %s", w.before);
    char rep[32];
    snprintf(rep, sizeof rep, "{0,%d}", SHARDLM_TOOL_CALLS_MAX - 1);
    if (many) {
        put(&b, "tc-call ( \"%s\" tc-call )", w.between);
        put(&b, "%s", rep);
    } else {
        put(&b, "%s", "tc-call");
    }
    put(&b, "%s\n", w.after);
    put(&b, "tc-call ::= \"%s\" tc-fn", w.call_open);
    put(&b, w.call_close[0] ? " \"%s\"\n" : "%s\n", w.call_close);
    int rc = b.oom ? SHARDLM_ENOMEM : tool_rules(names, params, n, only, &b, why, cap, &w);
    if (!rc && b.oom) rc = SHARDLM_ENOMEM;
    if (!rc) {
        char err[256];
        rc = shardlm_grammar_compile(b.s, b.n, out, err, sizeof err);
        if (rc == SHARDLM_EINPUT) snprintf(why, cap, "the tool-call grammar does not compile (%s)", err);
    }
    if (rc == SHARDLM_ENOMEM) snprintf(why, cap, "out of memory building the tool-call grammar");
    free(b.s);
    return rc;
}
