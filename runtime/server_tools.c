/* server_tools.c - the tool fields of a chat request: `tools` (function
 * tools; each parameters schema is compiled once here so a keyword the
 * grammar compiler refuses is a 400 naming the tool), `tool_choice`
 * ("none", "auto", "required" or one named function) and
 * `parallel_tool_calls`; then, with the server's tool-call format, the
 * grammar that constrains the answer, the triggers that switch it on for
 * "auto", and the format's marker tokens. See docs/API.md, "Tool calls". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_parse.h"
#include "shardlm_common.h"

#define INVALID "invalid_request_error"

#define bad(e, param, ...) shardlm_server_err_set(e, 400, INVALID, NULL, param, __VA_ARGS__)

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > SHARDLM_TOOL_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

static int only_keys(const cJSON *o, const char *const *keys, const char *where, shardlm_server_err *e)
{
    const cJSON *k;
    cJSON_ArrayForEach(k, o) {
        int ok = 0;
        for (int i = 0; keys[i]; i++) ok |= !strcmp(k->string, keys[i]);
        if (!ok) return bad(e, "tools", "%s.%.64s is not supported", where, k->string);
    }
    return SHARDLM_OK;
}

/* tools[i]: {"type": "function", "function": {"name", "description",
 * "parameters", "strict"}}. */
static int parse_tool(const cJSON *t, int i, shardlm_server_tool *out, shardlm_server_err *e)
{
    static const char *const tool_keys[] = {"type", "function", NULL};
    static const char *const fn_keys[] = {"name", "description", "parameters", "strict", NULL};
    char at[48];
    snprintf(at, sizeof at, "tools[%d]", i);
    if (!cJSON_IsObject(t)) return bad(e, "tools", "%s must be an object", at);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "function"))
        return bad(e, "tools", "%s.type must be \"function\" (the only kind of tool supported)", at);
    if (only_keys(t, tool_keys, at, e)) return SHARDLM_EINPUT;
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
    if (!cJSON_IsObject(fn)) return bad(e, "tools", "%s.function must be an object", at);
    snprintf(at, sizeof at, "tools[%d].function", i);
    if (only_keys(fn, fn_keys, at, e)) return SHARDLM_EINPUT;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
    const cJSON *strict = cJSON_GetObjectItemCaseSensitive(fn, "strict");
    if (!cJSON_IsString(name) || !valid_name(name->valuestring))
        return bad(e, "tools", "%s.name must be 1 to 64 letters, digits, '_' or '-'", at);
    if (desc && !cJSON_IsNull(desc) && !cJSON_IsString(desc))
        return bad(e, "tools", "%s.description must be a string", at);
    if (strict && !cJSON_IsNull(strict) && !cJSON_IsBool(strict))
        return bad(e, "tools", "%s.strict must be a boolean", at);
    if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params))
        return bad(e, "tools", "%s.parameters must be a JSON Schema object", at);
    snprintf(out->name, sizeof out->name, "%s", name->valuestring);
    if (cJSON_IsObject(params) && !(out->params = cJSON_Duplicate(params, 1))) return SHARDLM_ENOMEM;
    /* compiled now only to refuse what the grammar cannot honour */
    char *buf = NULL, why[448];
    size_t len = 0;
    int rc = out->params ? shardlm_json_schema_gbnf(out->params, "t", &buf, &len, why, sizeof why) : SHARDLM_OK;
    free(buf);
    if (rc == SHARDLM_EINPUT) return bad(e, "tools", "%s.parameters: %s", at, why);
    return rc;
}

static int parse_choice(const cJSON *c, shardlm_server_req *r, shardlm_server_err *e)
{
    if (!c || cJSON_IsNull(c)) {
        r->tool_choice = r->n_tools ? SHARDLM_TOOL_CHOICE_AUTO : SHARDLM_TOOL_CHOICE_NONE;
        return SHARDLM_OK;
    }
    if (cJSON_IsString(c)) {
        const char *s = c->valuestring;
        r->tool_choice = !strcmp(s, "none") ? SHARDLM_TOOL_CHOICE_NONE
                         : !strcmp(s, "auto") ? SHARDLM_TOOL_CHOICE_AUTO
                         : !strcmp(s, "required") ? SHARDLM_TOOL_CHOICE_REQUIRED
                                                  : (shardlm_tool_choice)-1;
        if ((int)r->tool_choice < 0)
            return bad(e, "tool_choice", "tool_choice must be \"none\", \"auto\", \"required\" or "
                                         "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        if (r->tool_choice == SHARDLM_TOOL_CHOICE_REQUIRED && !r->n_tools)
            return bad(e, "tool_choice", "tool_choice \"required\" needs tools");
        if (!r->n_tools) r->tool_choice = SHARDLM_TOOL_CHOICE_NONE; /* "auto" with nothing to call */
        return SHARDLM_OK;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "type");
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    if (!cJSON_IsObject(c) || !cJSON_IsString(type) || strcmp(type->valuestring, "function") || !cJSON_IsString(name))
        return bad(e, "tool_choice", "tool_choice must be \"none\", \"auto\", \"required\" or "
                                     "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    for (int i = 0; i < r->n_tools; i++)
        if (!strcmp(r->tools[i].name, name->valuestring)) {
            r->tool_choice = SHARDLM_TOOL_CHOICE_NAMED;
            r->tool_named = i;
            return SHARDLM_OK;
        }
    return bad(e, "tool_choice", "tool_choice names the function '%.64s', which is not in tools",
               name->valuestring);
}

int shardlm_server_parse_tools(const cJSON *o, shardlm_server_req *r, shardlm_server_err *e)
{
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(o, "tools");
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(o, "parallel_tool_calls");
    r->parallel_tool_calls = 1; /* OpenAI's default */
    if (par && !cJSON_IsNull(par)) {
        if (!cJSON_IsBool(par)) return bad(e, "parallel_tool_calls", "parallel_tool_calls must be a boolean");
        r->parallel_tool_calls = cJSON_IsTrue(par);
    }
    if (tools && !cJSON_IsNull(tools)) {
        int n = cJSON_IsArray(tools) ? cJSON_GetArraySize(tools) : -1;
        if (n < 1 || n > SHARDLM_TOOLS_MAX)
            return bad(e, "tools", "tools must be an array of 1 to 128 tools");
        if (!(r->tools = calloc((size_t)n, sizeof *r->tools))) return SHARDLM_ENOMEM;
        const cJSON *t;
        cJSON_ArrayForEach(t, tools) {
            int rc = parse_tool(t, r->n_tools, &r->tools[r->n_tools], e);
            r->n_tools++;
            if (rc) return rc;
            for (int j = 0; j < r->n_tools - 1; j++)
                if (!strcmp(r->tools[j].name, r->tools[r->n_tools - 1].name))
                    return bad(e, "tools", "tools name the function '%s' twice", r->tools[j].name);
        }
    }
    return parse_choice(cJSON_GetObjectItemCaseSensitive(o, "tool_choice"), r, e);
}

/* The format's markers that the tokenizer has as control tokens (their
 * text is not output unless asked for). */
static void marker_tokens(shardlm_server_req *r, const shardlm_tokenizer *tok)
{
    for (const char *const *m = shardlm_toolfmt_markers(r->tool_format); *m; m++) {
        int32_t ids[8];
        size_t n = 0;
        if (shardlm_tokenizer_encode_special(tok, *m, strlen(*m), 0, ids, 8, &n) || n != 1) continue;
        shardlm_detok d;
        char buf[64];
        shardlm_detok_init(&d);
        if (shardlm_detok_push(tok, &d, ids[0], buf, sizeof buf) == 0 && r->n_as_text < SHARDLM_SERVER_MAX_AS_TEXT)
            r->as_text[r->n_as_text++] = ids[0];
    }
}

int shardlm_server_tools_setup(shardlm_server_req *r, shardlm_toolfmt fmt, const shardlm_tokenizer *tok,
                               shardlm_server_err *e)
{
    if (r->kind != SHARDLM_API_CHAT || r->tool_choice == SHARDLM_TOOL_CHOICE_NONE) return SHARDLM_OK;
    if (fmt == SHARDLM_TOOLFMT_NONE)
        return bad(e, "tools", "this server's chat template renders no tool-call format it can parse (Hermes/Qwen "
                               "<tool_call>, Llama 3 JSON, Mistral [TOOL_CALLS], Granite <|tool_call|>): start serve "
                               "with --chat-template naming a template for tool calling, or send tool_choice "
                               "\"none\"");
    if (r->grammar)
        return bad(e, "tools", "tools with tool_choice other than \"none\" cannot be combined with a "
                               "response_format of type json_object or json_schema, or with grammar");
    const char *names[SHARDLM_TOOLS_MAX];
    const cJSON *params[SHARDLM_TOOLS_MAX];
    for (int i = 0; i < r->n_tools; i++) names[i] = r->tools[i].name, params[i] = r->tools[i].params;
    int named = r->tool_choice == SHARDLM_TOOL_CHOICE_NAMED;
    char why[512];
    int rc = shardlm_toolcall_grammar(fmt, names, params, r->n_tools, named ? r->tool_named : -1,
                                      r->parallel_tool_calls && !named, &r->grammar, why, sizeof why);
    if (rc == SHARDLM_EINPUT) return shardlm_server_err_set(e, 400, INVALID, NULL, "tools", "%s", why);
    if (rc) return shardlm_server_err_set(e, 500, "server_error", NULL, NULL, "%s", why), rc;
    r->tool_format = fmt;
    if (r->tool_choice == SHARDLM_TOOL_CHOICE_AUTO) {
        const shardlm_grammar_trigger *t;
        r->n_triggers = shardlm_toolfmt_triggers(fmt, &t);
        memcpy(r->triggers, t, (size_t)r->n_triggers * sizeof *t);
    }
    marker_tokens(r, tok);
    return SHARDLM_OK;
}
