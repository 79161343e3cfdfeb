/* test_server_fields.c - docs/API.md's table of request fields against the
 * code: the table is read from the file, and for every row and endpoint
 * the row's example, on top of a small valid body, must parse (honoured and
 * accepted rows; tool rows also set up their grammar) or be refused with
 * exactly the row's message and `param` (refused rows). Every field the
 * parser knows has a row, and every field of OpenAI's API reference for
 * the two endpoints has one too. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_parse.h"
#include "shardlm_common.h"
#include "test_util.h"

#define VOCAB 512

typedef struct {
    char field[64], endpoint[16], status[16];
    char example[2048], message[1024];
} row;

/* The text between the first pair of backticks of cell, or the cell. */
static void unquote(const char *cell, char *out, size_t cap, int first_span_only)
{
    const char *a = strchr(cell, '`'), *b = a ? strchr(a + 1, '`') : NULL;
    if (a && b && (first_span_only || a == cell)) snprintf(out, cap, "%.*s", (int)(b - a - 1), a + 1);
    else snprintf(out, cap, "%s", cell);
}

/* Splits a table line into trimmed cells (an escaped \| stays in its cell). */
static int cells(char *line, char **out, int max)
{
    int n = 0;
    char *p = line + 1; /* past the leading | */
    while (*p && n < max) {
        char *start = p;
        while (*p && !(*p == '|' && p[-1] != '\\')) p++;
        if (!*p) break;
        *p++ = 0;
        while (*start == ' ') start++;
        char *end = start + strlen(start);
        while (end > start && end[-1] == ' ') *--end = 0;
        out[n++] = start;
    }
    return n;
}

static int read_table(row *rows, int max)
{
    char path[1024];
    const char *src = getenv("SHARDLM_SRC");
    cr_assert_not_null(src, "SHARDLM_SRC names the source tree");
    snprintf(path, sizeof path, "%s/docs/API.md", src);
    size_t len;
    char *doc = tu_read_file(path, &len);
    cr_assert_not_null(doc, "cannot read %s", path);
    char *at = strstr(doc, "| field | endpoint | status | example | notes |");
    cr_assert_not_null(at, "docs/API.md has no field table");
    int n = 0;
    char *line = strchr(at, '\n') + 1;
    line = strchr(line, '\n') + 1; /* the |---| line */
    while (*line == '|' && n < max) {
        char *nl = strchr(line, '\n');
        *nl = 0;
        char *c[8];
        cr_assert_eq(cells(line, c, 8), 5, "a row of five cells: %s", line);
        unquote(c[0], rows[n].field, sizeof rows[n].field, 0);
        snprintf(rows[n].endpoint, sizeof rows[n].endpoint, "%s", c[1]);
        snprintf(rows[n].status, sizeof rows[n].status, "%s", c[2]);
        unquote(c[3], rows[n].example, sizeof rows[n].example, 0);
        unquote(c[4], rows[n].message, sizeof rows[n].message, 1);
        n++;
        line = nl + 1;
    }
    free(doc);
    return n;
}

static char *body_with(shardlm_api_kind kind, const char *example)
{
    cJSON *b = cJSON_Parse(kind == SHARDLM_API_CHAT ? "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                                                      "\"max_tokens\":4}"
                                                    : "{\"prompt\":\"Once upon a time\",\"max_tokens\":4}");
    cJSON *x = cJSON_Parse(example), *m;
    cr_assert(cJSON_IsObject(x), "the example is a JSON object: %s", example);
    if (cJSON_HasObjectItem(x, "max_tokens") || cJSON_HasObjectItem(x, "max_completion_tokens"))
        cJSON_DeleteItemFromObjectCaseSensitive(b, "max_tokens"); /* the example's length replaces the base's */
    cJSON_ArrayForEach(m, x) {
        cJSON_DeleteItemFromObjectCaseSensitive(b, m->string);
        cJSON_AddItemToObject(b, m->string, cJSON_Duplicate(m, 1));
    }
    char *s = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    cJSON_Delete(x);
    return s;
}

static int applies(const row *r, shardlm_api_kind k)
{
    return !strcmp(r->endpoint, "both") || !strcmp(r->endpoint, k == SHARDLM_API_CHAT ? "chat" : "completions");
}

static shardlm_tokenizer *stories_tokenizer(void)
{
    shardlm_gguf *g;
    shardlm_tokenizer *t;
    cr_assert_eq(shardlm_gguf_open(tu_shared("models/stories260K.gguf"), &g), 0);
    cr_assert_eq(shardlm_tokenizer_from_gguf(g, &t), 0);
    shardlm_gguf_close(g);
    return t;
}

Test(server_fields, every_row_behaves_as_the_table_says)
{
    static row rows[256];
    int n = read_table(rows, 256), checked = 0;
    cr_assert_gt(n, 50, "the table has its rows (%d)", n);
    shardlm_tokenizer *tok = stories_tokenizer();
    for (int i = 0; i < n; i++)
        for (shardlm_api_kind k = SHARDLM_API_COMPLETIONS; k <= SHARDLM_API_CHAT; k++) {
            if (!applies(&rows[i], k)) continue;
            char *body = body_with(k, rows[i].example);
            shardlm_server_req r;
            shardlm_server_err e = {0};
            int rc = shardlm_server_parse(k, body, strlen(body), VOCAB, &r, &e);
            const char *where = k == SHARDLM_API_CHAT ? "chat" : "completions";
            if (!strcmp(rows[i].status, "refused")) {
                cr_expect_eq(rc, SHARDLM_EINPUT, "%s %s: refused, but parsed: %s", where, rows[i].field, body);
                cr_expect_eq(e.status, 400);
                cr_expect_str_eq(e.param, rows[i].field, "%s %s: param", where, rows[i].field);
                cr_expect_str_eq(e.message, rows[i].message, "%s %s: message", where, rows[i].field);
            } else {
                cr_assert(!strcmp(rows[i].status, "honoured") || !strcmp(rows[i].status, "accepted"),
                          "status of %s is honoured, accepted or refused: %s", rows[i].field, rows[i].status);
                cr_expect_eq(rc, SHARDLM_OK, "%s %s: %s gives %s", where, rows[i].field, body, e.message);
                if (!rc && r.tool_choice != SHARDLM_TOOL_CHOICE_NONE) {
                    cr_expect_eq(shardlm_server_tools_setup(&r, SHARDLM_TOOLFMT_HERMES, tok, &e), 0, "%s: %s",
                                 rows[i].field, e.message);
                    cr_expect_not_null(r.grammar, "%s: a tool-call grammar", rows[i].field);
                }
            }
            shardlm_server_req_free(&r);
            free(body);
            checked++;
        }
    cr_log_info("server_fields: %d rows, %d requests", n, checked);
    shardlm_tokenizer_free(tok);
}

static int has_row(const row *rows, int n, const char *field, shardlm_api_kind k)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].field, field) && applies(&rows[i], k)) return 1;
    return 0;
}

Test(server_fields, every_field_has_a_row)
{
    static row rows[256];
    int n = read_table(rows, 256);
    unsigned where;
    const char *f;
    for (size_t i = 0; (f = shardlm_server_field(i, &where)); i++)
        for (shardlm_api_kind k = SHARDLM_API_COMPLETIONS; k <= SHARDLM_API_CHAT; k++)
            if (where & (1u << k))
                cr_expect(has_row(rows, n, f, k), "%s (%s) has no row in docs/API.md", f,
                          k == SHARDLM_API_CHAT ? "chat" : "completions");
    /* OpenAI's API reference: the request bodies of both endpoints */
    static const char *const chat[] = {
        "messages", "model", "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls", "prediction",
        "presence_penalty", "prompt_cache_key", "prompt_cache_retention", "reasoning_effort", "response_format",
        "safety_identifier", "seed", "service_tier", "stop", "store", "stream", "stream_options", "temperature",
        "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity", "web_search_options", NULL};
    static const char *const completions[] = {
        "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
        "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user",
        NULL};
    for (int i = 0; chat[i]; i++) cr_expect(has_row(rows, n, chat[i], SHARDLM_API_CHAT), "chat: %s", chat[i]);
    for (int i = 0; completions[i]; i++)
        cr_expect(has_row(rows, n, completions[i], SHARDLM_API_COMPLETIONS), "completions: %s", completions[i]);
}

Test(server_fields, the_small_fields_reach_the_request)
{
    shardlm_server_req r;
    shardlm_server_err e;
    const char *body = "{\"prompt\":\"x\",\"max_tokens\":9,\"min_tokens\":4,\"stop_token_ids\":[2,13],"
                       "\"ignore_eos\":true,\"best_of\":2,\"n\":2}";
    cr_assert_eq(shardlm_server_parse(SHARDLM_API_COMPLETIONS, body, strlen(body), VOCAB, &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.min_tokens, 4);
    cr_expect_eq(r.n_stop_ids, 2);
    cr_expect_eq(r.stop_ids[1], 13);
    cr_expect(r.ignore_eos);
    cr_expect_eq(r.n, 2);
    shardlm_server_req_free(&r);
    body = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":5,\"max_completion_tokens\":5,"
           "\"store\":false,\"service_tier\":\"default\",\"stream\":true,\"stream_options\":{\"include_usage\":true,"
           "\"include_obfuscation\":false},\"modalities\":[\"text\"],\"user\":\"u\",\"metadata\":null}";
    cr_assert_eq(shardlm_server_parse(SHARDLM_API_CHAT, body, strlen(body), VOCAB, &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.max_tokens, 5);
    cr_expect(r.include_usage);
    shardlm_server_req_free(&r);
    static const struct {
        shardlm_api_kind k;
        const char *body, *param, *message;
    } bad[] = {
        {SHARDLM_API_COMPLETIONS, "{\"prompt\":\"x\",\"max_tokens\":3,\"min_tokens\":4}", "min_tokens",
         "min_tokens (4) must not exceed max_tokens (3)"},
        {SHARDLM_API_COMPLETIONS, "{\"prompt\":\"x\",\"stop_token_ids\":[512]}", "stop_token_ids",
         "stop_token_ids must be token ids in [0, 512)"},
        {SHARDLM_API_COMPLETIONS, "{\"prompt\":\"x\",\"stop_token_ids\":7}", "stop_token_ids",
         "stop_token_ids must be an array of at most 64 token ids"},
        {SHARDLM_API_COMPLETIONS, "{\"prompt\":\"x\",\"ignore_eos\":1}", "ignore_eos", "ignore_eos must be a boolean"},
        {SHARDLM_API_COMPLETIONS, "{\"prompt\":\"x\",\"tools\":[]}", "tools",
         "Unrecognized request argument supplied: tools"},
        {SHARDLM_API_COMPLETIONS, "{\"prompt\":\"x\",\"max_completion_tokens\":3}", "max_completion_tokens",
         "Unrecognized request argument supplied: max_completion_tokens"},
        {SHARDLM_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":true,"
                           "\"stream_options\":{\"chunk\":1}}",
         "stream_options", "stream_options.chunk is not supported"},
        {SHARDLM_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"user\":5}", "user",
         "user must be a string"},
        {SHARDLM_API_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "messages[0].tool_call_id",
         "messages[0].tool_call_id is required (a string: the id of the call this answers)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(shardlm_server_parse(bad[i].k, bad[i].body, strlen(bad[i].body), VOCAB, &r, &e),
                     SHARDLM_EINPUT, "%s", bad[i].body);
        cr_expect_str_eq(e.param, bad[i].param, "%s", bad[i].body);
        cr_expect_str_eq(e.message, bad[i].message, "%s", bad[i].body);
        shardlm_server_req_free(&r);
    }
    /* /tokenize and /apply-template bodies may carry their own fields */
    body = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"add_special_tokens\":true}";
    cr_expect_eq(shardlm_server_parse_loose(SHARDLM_API_CHAT, body, strlen(body), VOCAB, &r, &e), 0);
    shardlm_server_req_free(&r);
}
