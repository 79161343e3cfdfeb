/* test_server_tools.c - the tool fields of a chat request and the answers
 * made from a model's text: tools, tool_choice and parallel_tool_calls
 * into the request, and every bad one with its exact error; the grammar,
 * triggers and marker tokens a request gets with each tool_choice; a
 * server whose template has no tool-call format; the JSON message (content
 * null, tool_calls with ids, finish_reason tool_calls) and the stream's
 * deltas, which put together are that message however the text was cut
 * into tokens. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"
#include "shardlm_common.h"
#include "test_util.h"

#define VOCAB 512
#define TOOL(name, props, req)                                                                                         \
    "{\"type\":\"function\",\"function\":{\"name\":\"" name "\",\"description\":\"d\",\"parameters\":{\"type\":"   \
    "\"object\",\"properties\":" props ",\"required\":" req "}}}"
#define WEATHER TOOL("get_weather", "{\"city\":{\"type\":\"string\"}}", "[\"city\"]")
#define TIME TOOL("get_time", "{}", "[]")
#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"}]"

static int parse(const char *body, shardlm_server_req *r, shardlm_server_err *e)
{
    memset(e, 0, sizeof *e);
    return shardlm_server_parse(SHARDLM_API_CHAT, body, strlen(body), VOCAB, r, e);
}

Test(server_tools, fields_into_the_request)
{
    shardlm_server_req r;
    shardlm_server_err e;
    cr_assert_eq(parse("{" MSGS ",\"tools\":[" WEATHER "," TIME "]}", &r, &e), 0, "%s", e.message);
    cr_expect_eq(r.n_tools, 2);
    cr_expect_str_eq(r.tools[1].name, "get_time");
    cr_expect_eq(r.tool_choice, SHARDLM_TOOL_CHOICE_AUTO, "auto is the default with tools");
    cr_expect(r.parallel_tool_calls, "true is OpenAI's default");
    cr_expect(cJSON_IsObject(r.tools[0].params));
    shardlm_server_req_free(&r);
    cr_assert_eq(parse("{" MSGS ",\"tools\":[" WEATHER "," TIME "],\"tool_choice\":{\"type\":\"function\","
                       "\"function\":{\"name\":\"get_time\"}},\"parallel_tool_calls\":false}",
                       &r, &e),
                 0, "%s", e.message);
    cr_expect_eq(r.tool_choice, SHARDLM_TOOL_CHOICE_NAMED);
    cr_expect_eq(r.tool_named, 1);
    cr_expect(!r.parallel_tool_calls);
    shardlm_server_req_free(&r);
    cr_assert_eq(parse("{" MSGS ",\"tool_choice\":\"auto\"}", &r, &e), 0);
    cr_expect_eq(r.tool_choice, SHARDLM_TOOL_CHOICE_NONE, "auto without tools is plain text");
    shardlm_server_req_free(&r);
    cr_assert_eq(parse("{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
                       "\"tool_choice\":\"none\"}",
                       &r, &e),
                 0);
    cr_expect_eq(r.tool_choice, SHARDLM_TOOL_CHOICE_NONE);
    cr_expect_null(r.tools[0].params, "no parameters: no arguments");
    cr_expect(strstr(r.chat_vars, "\"tools\":[{"), "tools reach the template with tool_choice none too");
    shardlm_server_req_free(&r);
}

Test(server_tools, bad_tool_fields)
{
    static const struct {
        const char *body, *param, *message;
    } bad[] = {
        {"{" MSGS ",\"tools\":{}}", "tools", "tools must be an array"},
        {"{" MSGS ",\"tools\":[]}", "tools", "tools must be an array of 1 to 128 tools"},
        {"{" MSGS ",\"tools\":[7]}", "tools", "tools[0] must be an object"},
        {"{" MSGS ",\"tools\":[{\"type\":\"custom\",\"custom\":{\"name\":\"x\"}}]}", "tools",
         "tools[0].type must be \"function\" (the only kind of tool supported)"},
        {"{" MSGS ",\"tools\":[{\"type\":\"function\"}]}", "tools", "tools[0].function must be an object"},
        {"{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]}", "tools",
         "tools[0].function.name must be 1 to 64 letters, digits, '_' or '-'"},
        {"{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"returns\":{}}}]}", "tools",
         "tools[0].function.returns is not supported"},
        {"{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"},\"x\":1}]}", "tools",
         "tools[0].x is not supported"},
        {"{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":[]}}]}", "tools",
         "tools[0].function.parameters must be a JSON Schema object"},
        {"{" MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":"
         "\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"format\":\"hostname\"}}}}}]}",
         "tools", "tools[0].function.parameters: \"format\": \"hostname\" at #/properties/a is not supported (date, "
         "time, date-time, uuid, ipv4 and email are)"},
        {"{" MSGS ",\"tools\":[" WEATHER "," WEATHER "]}", "tools", "tools name the function 'get_weather' twice"},
        {"{" MSGS ",\"tools\":[" WEATHER "],\"tool_choice\":\"any\"}", "tool_choice",
         "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": "
         "{\"name\": ...}}"},
        {"{" MSGS ",\"tools\":[" WEATHER "],\"tool_choice\":{\"type\":\"allowed_tools\"}}", "tool_choice",
         "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": "
         "{\"name\": ...}}"},
        {"{" MSGS ",\"tools\":[" WEATHER "],\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"x\"}}}",
         "tool_choice", "tool_choice names the function 'x', which is not in tools"},
        {"{" MSGS ",\"tool_choice\":\"required\"}", "tool_choice", "tool_choice \"required\" needs tools"},
        {"{" MSGS ",\"tools\":[" WEATHER "],\"parallel_tool_calls\":\"yes\"}", "parallel_tool_calls",
         "parallel_tool_calls must be a boolean"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shardlm_server_req r;
        shardlm_server_err e;
        cr_assert_eq(parse(bad[i].body, &r, &e), SHARDLM_EINPUT, "%s", bad[i].body);
        cr_expect_eq(e.status, 400);
        cr_expect_str_eq(e.param, bad[i].param, "%s", bad[i].body);
        cr_expect_str_eq(e.message, bad[i].message, "%s", bad[i].body);
        shardlm_server_req_free(&r);
    }
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

Test(server_tools, setup_by_tool_choice)
{
    shardlm_tokenizer *tok = stories_tokenizer();
    shardlm_server_req r;
    shardlm_server_err e;
    static const struct {
        const char *choice;
        int grammar, triggers;
    } cases[] = {
        {"\"none\"", 0, 0}, {"\"auto\"", 1, 1}, {"\"required\"", 1, 0},
        {"{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}", 1, 0},
    };
    for (size_t i = 0; i < 4; i++) {
        char body[1024];
        snprintf(body, sizeof body, "{" MSGS ",\"tools\":[" WEATHER "],\"tool_choice\":%s}", cases[i].choice);
        cr_assert_eq(parse(body, &r, &e), 0, "%s", e.message);
        cr_assert_eq(shardlm_server_tools_setup(&r, SHARDLM_TOOLFMT_HERMES, tok, &e), 0, "%s", e.message);
        cr_expect_eq(r.grammar != NULL, cases[i].grammar, "%s", cases[i].choice);
        cr_expect_eq(r.n_triggers, cases[i].triggers, "%s", cases[i].choice);
        cr_expect_eq(r.tool_format, cases[i].grammar ? SHARDLM_TOOLFMT_HERMES : SHARDLM_TOOLFMT_NONE);
        cr_expect_eq(r.n_as_text, 0, "stories260K has no marker tokens");
        if (r.n_triggers) cr_expect_str_eq(r.triggers[0].text, "<tool_call>");
        shardlm_server_req_free(&r);
    }
    cr_assert_eq(parse("{" MSGS ",\"tools\":[" WEATHER "],\"tool_choice\":\"required\"}", &r, &e), 0);
    cr_expect_eq(shardlm_server_tools_setup(&r, SHARDLM_TOOLFMT_NONE, tok, &e), SHARDLM_EINPUT);
    cr_expect_str_eq(e.param, "tools");
    cr_expect(strstr(e.message, "this server's chat template renders no tool-call format"), "%s", e.message);
    shardlm_server_req_free(&r);
    cr_assert_eq(parse("{" MSGS ",\"tools\":[" WEATHER "],\"response_format\":{\"type\":\"json_object\"}}", &r, &e),
                 0);
    cr_expect_eq(shardlm_server_tools_setup(&r, SHARDLM_TOOLFMT_HERMES, tok, &e), SHARDLM_EINPUT);
    cr_expect(strstr(e.message, "cannot be combined with a response_format"), "%s", e.message);
    shardlm_server_req_free(&r);
    shardlm_tokenizer_free(tok);
}

/* ---- answers ---- */

static srv_call_info info(shardlm_toolfmt f, const char *const *names, int n)
{
    return (srv_call_info){.kind = SHARDLM_API_CHAT, .model = "m", .id = "chatcmpl-test", .n = 1,
                           .tool_format = f, .tool_names = names, .n_tools = n};
}

/* Puts deltas together as a client does: content concatenated, calls by
 * index with arguments concatenated. */
static void accumulate(cJSON *msg, cJSON *deltas)
{
    cJSON *d;
    cJSON_ArrayForEach(d, deltas) {
        cJSON *c = cJSON_GetObjectItem(d, "content");
        if (c) {
            cJSON *have = cJSON_GetObjectItem(msg, "content");
            char *s = malloc(strlen(cJSON_IsString(have) ? have->valuestring : "") + strlen(c->valuestring) + 1);
            sprintf(s, "%s%s", cJSON_IsString(have) ? have->valuestring : "", c->valuestring);
            if (have) cJSON_ReplaceItemInObject(msg, "content", cJSON_CreateString(s));
            else cJSON_AddStringToObject(msg, "content", s);
            free(s);
        }
        cJSON *tc = cJSON_GetObjectItem(d, "tool_calls"), *call;
        cr_assert(c || tc, "a delta holds content or calls");
        cr_assert(!(c && tc), "one kind per delta");
        cJSON_ArrayForEach(call, tc) {
            int idx = cJSON_GetObjectItem(call, "index")->valueint;
            cJSON *calls = cJSON_GetObjectItem(msg, "tool_calls");
            if (!calls) calls = cJSON_AddArrayToObject(msg, "tool_calls");
            cJSON *fn = cJSON_GetObjectItem(call, "function");
            if (cJSON_HasObjectItem(call, "id")) {
                cr_assert_eq(cJSON_GetArraySize(calls), idx, "calls open in order");
                cr_assert_str_eq(cJSON_GetObjectItem(fn, "arguments")->valuestring, "",
                                 "the opening delta has empty arguments");
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "id", cJSON_GetObjectItem(call, "id")->valuestring);
                cJSON_AddStringToObject(o, "type", "function");
                cJSON *f = cJSON_AddObjectToObject(o, "function");
                cJSON_AddStringToObject(f, "name", cJSON_GetObjectItem(fn, "name")->valuestring);
                cJSON_AddStringToObject(f, "arguments", "");
                cJSON_AddItemToArray(calls, o);
                continue;
            }
            cr_assert(!cJSON_HasObjectItem(fn, "name"), "later deltas carry arguments only");
            cJSON *f = cJSON_GetObjectItem(cJSON_GetArrayItem(calls, idx), "function");
            cr_assert_not_null(f, "arguments for call %d before it opened", idx);
            const char *have = cJSON_GetObjectItem(f, "arguments")->valuestring;
            const char *more = cJSON_GetObjectItem(fn, "arguments")->valuestring;
            char *s = malloc(strlen(have) + strlen(more) + 1);
            sprintf(s, "%s%s", have, more);
            cJSON_ReplaceItemInObject(f, "arguments", cJSON_CreateString(s));
            free(s);
        }
    }
}

/* The message of text whole, and the deltas of text cut every `step`
 * bytes put together, must be the same JSON. */
static void stream_equals_message(shardlm_toolfmt f, const char *text, int want_calls, const char *want_content)
{
    static const char *const names[] = {"get_weather", "get_time"};
    srv_call_info ci = info(f, names, 2);
    int n_calls;
    cJSON *m = srv_tools_message(&ci, 0, text, strlen(text), &n_calls);
    cr_assert_not_null(m);
    cr_expect_eq(n_calls, want_calls, "%s", text);
    cJSON *content = cJSON_GetObjectItem(m, "content");
    if (want_content) cr_expect_str_eq(cJSON_GetStringValue(content), want_content, "%s", text);
    else cr_expect(cJSON_IsNull(content), "content is null with calls only: %s", text);
    for (size_t step = 1; step <= strlen(text); step += step < 4 ? 1 : 7) {
        shardlm_toolparse *tp;
        cr_assert_eq(srv_tools_parser(&ci, &tp), 0);
        cJSON *acc = cJSON_CreateObject();
        cJSON_AddStringToObject(acc, "role", "assistant");
        for (size_t at = 0, len = strlen(text); at <= len; at += step) {
            size_t k = len - at < step ? len - at : step;
            cJSON *ds = srv_tools_deltas(&ci, 0, tp, text + at, k, at + step > len);
            cr_assert_not_null(ds);
            accumulate(acc, ds);
            cJSON_Delete(ds);
        }
        const char *mc = cJSON_GetStringValue(cJSON_GetObjectItem(m, "content"));
        const char *ac = cJSON_GetStringValue(cJSON_GetObjectItem(acc, "content"));
        cr_expect_str_eq(ac ? ac : "(null)", mc ? mc : "(null)", "content, cut every %zu bytes: [%s] vs [%s]", step, ac ? ac : "(null)", mc ? mc : "(null)");
        char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(acc, "tool_calls"));
        char *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(m, "tool_calls"));
        cr_expect_str_eq(a ? a : "(none)", b ? b : "(none)", "tool_calls, cut every %zu bytes", step);
        free(a);
        free(b);
        cJSON_Delete(acc);
        shardlm_toolparse_free(tp);
    }
    cJSON_Delete(m);
}

Test(server_tools, stream_deltas_put_together_are_the_message)
{
    stream_equals_message(SHARDLM_TOOLFMT_HERMES,
                          "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
                          "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>",
                          2, NULL);
    stream_equals_message(SHARDLM_TOOLFMT_HERMES,
                          "I will check.\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", 1,
                          "I will check.");
    stream_equals_message(SHARDLM_TOOLFMT_HERMES, "No tools needed. <tool", 0, "No tools needed. <tool");
    stream_equals_message(SHARDLM_TOOLFMT_MISTRAL_ARGS, "[TOOL_CALLS]get_time[ARGS]{\"tz\": \"\\\"}\"}", 1, NULL);
    stream_equals_message(SHARDLM_TOOLFMT_LLAMA3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
                          1, NULL);
}

Test(server_tools, message_ids_and_finish_reason)
{
    static const char *const names[] = {"get_weather"};
    srv_call_info ci = info(SHARDLM_TOOLFMT_MISTRAL, names, 1);
    srv_choice ch = {0};
    const char *text = "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}]";
    srv_event *ev = calloc(1, sizeof *ev + strlen(text) + 1);
    ev->len = strlen(text);
    memcpy(ev->text, text, ev->len);
    cr_assert_eq(srv_choice_add(&ci, &ch, ev), 0);
    ev->is_end = 1, ev->why = SHARDLM_FINISH_STOP, ev->len = 0;
    cr_assert_eq(srv_choice_add(&ci, &ch, ev), 0);
    free(ev);
    char *body = srv_body_final(&ci, &ch, (srv_usage){10, 20, 8});
    cJSON *o = cJSON_Parse(body);
    cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(c, "finish_reason")), "tool_calls");
    cJSON *call = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "message"), "tool_calls"), 0);
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(call, "id"));
    cr_expect_eq(strlen(id), 9, "Mistral's ids are 9 characters: %s", id);
    cr_expect_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(call, "function"), "arguments")),
                     "{\"city\": \"Rome\"}");
    cJSON *u = cJSON_GetObjectItem(o, "usage");
    cr_expect_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(u, "prompt_tokens_details"), "cached_tokens")->valueint, 8);
    cr_expect_eq(cJSON_GetObjectItem(u, "total_tokens")->valueint, 30);
    cJSON_Delete(o);
    free(body);
    srv_choice_free(&ch);
}

/* ---- streamed and non-streamed logprobs ---- */

static srv_event *token_event(const char *text, int32_t tok, int with_lp)
{
    srv_event *ev = calloc(1, sizeof *ev + strlen(text) + 1);
    ev->len = strlen(text);
    memcpy(ev->text, text, ev->len);
    ev->token = tok;
    if (with_lp) {
        ev->has_lp = 1;
        ev->lp = (shardlm_logprobs){.token = tok, .logprob = -0.25f * (float)(tok % 7), .n_top = 2,
                                    .top = {{tok, -0.5f}, {(tok + 1) % 512, -1.5f}}};
    }
    return ev;
}

/* One choice's logprobs from the SSE text of its chunks, joined as the
 * non-streamed answer has them. */
static cJSON *joined_logprobs(shardlm_api_kind kind, const char *sse)
{
    cJSON *out = kind == SHARDLM_API_CHAT ? cJSON_CreateArray() : NULL;
    for (const char *p = strstr(sse, "data: "); p; p = strstr(p + 1, "data: ")) {
        const char *end = strstr(p, "\n\n");
        char *j = strndup(p + 6, (size_t)(end - p - 6));
        cJSON *o = cJSON_Parse(j), *c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
        cJSON *lp = cJSON_GetObjectItem(c, "logprobs"), *x;
        free(j);
        if (cJSON_IsNull(lp) || !lp) {
            cJSON_Delete(o);
            continue;
        }
        if (kind == SHARDLM_API_CHAT) {
            cJSON_ArrayForEach(x, cJSON_GetObjectItem(lp, "content")) cJSON_AddItemToArray(out, cJSON_Duplicate(x, 1));
        } else if (!out) {
            out = cJSON_Duplicate(lp, 1);
        } else {
            static const char *const keys[] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
            for (int k = 0; k < 4; k++)
                cJSON_ArrayForEach(x, cJSON_GetObjectItem(lp, keys[k]))
                    cJSON_AddItemToArray(cJSON_GetObjectItem(out, keys[k]), cJSON_Duplicate(x, 1));
        }
        cJSON_Delete(o);
    }
    return out;
}

static void logprobs_agree(shardlm_api_kind kind, shardlm_toolfmt f)
{
    shardlm_tokenizer *tok = stories_tokenizer();
    static const char *const names[] = {"get_time"};
    srv_call_info ci = {.kind = kind, .model = "m", .tok = tok, .id = "x", .n = 1, .logprobs = 1, .top_logprobs = 2,
                        .tool_format = f, .tool_names = names, .n_tools = 1};
    /* text as the scheduler reports it: some tokens with text held back (empty), then released */
    static const struct {
        const char *text;
        int32_t tok;
    } toks[] = {{"Once", 403}, {" upon", 407}, {"", 300}, {" a t", 261}, {"ime <tool", 378},
                {"_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", 13}};
    srv_choice ch = {0};
    srv_stream_choice sc = {0};
    char *sse = strdup("");
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
        srv_event *ev = token_event(toks[i].text, toks[i].tok, 1);
        cr_assert_eq(srv_choice_add(&ci, &ch, ev), 0);
        int nothing;
        char *s = srv_sse_event(&ci, &sc, ev, &nothing);
        cr_assert(s && !nothing, "every token with logprobs is sent");
        sse = realloc(sse, strlen(sse) + strlen(s) + 1);
        strcat(sse, s);
        free(s);
        free(ev);
    }
    cJSON *streamed = joined_logprobs(kind, sse);
    cJSON *whole = ch.lp;
    char *a = cJSON_PrintUnformatted(streamed), *b = cJSON_PrintUnformatted(whole);
    cr_expect_str_eq(a, b, "streamed logprobs, joined, are the non-streamed ones");
    if (kind == SHARDLM_API_COMPLETIONS) {
        cJSON *off = cJSON_GetObjectItem(whole, "text_offset");
        int want[] = {0, 4, 9, 9, 13};
        for (int i = 0; i < 5; i++) cr_expect_eq(cJSON_GetArrayItem(off, i)->valueint, want[i], "text_offset %d", i);
    }
    free(a);
    free(b);
    free(sse);
    cJSON_Delete(streamed);
    srv_choice_free(&ch);
    shardlm_toolparse_free(sc.tp);
    shardlm_tokenizer_free(tok);
}

Test(server_tools, streamed_logprobs_are_the_non_streamed_ones)
{
    logprobs_agree(SHARDLM_API_COMPLETIONS, SHARDLM_TOOLFMT_NONE);
    logprobs_agree(SHARDLM_API_CHAT, SHARDLM_TOOLFMT_NONE);
    logprobs_agree(SHARDLM_API_CHAT, SHARDLM_TOOLFMT_HERMES);
}
