/* server_fields.c - no request field is silently ignored. A completion
 * body may hold only the fields its endpoint has (OpenAI's, plus the
 * extensions docs/API.md lists); anything else is refused as OpenAI refuses
 * it ("Unrecognized request argument supplied: X"). The fields this server
 * cannot honour, or honours only for some values, are refused here with a
 * 400 that names them; the rest are read by server_parse.c and its
 * siblings. docs/API.md's field table says the same, and
 * tests/test_server_fields.c walks that table against this file. */
#include <stdio.h>
#include <string.h>

#include "server_parse.h"
#include "shardlm_common.h"

#define INVALID "invalid_request_error"
#define C (1u << SHARDLM_API_COMPLETIONS)
#define CH (1u << SHARDLM_API_CHAT)

/* Every field of either endpoint, and which endpoints take it. */
static const struct {
    const char *name;
    unsigned where;
} fields[] = {
    {"model", C | CH}, {"prompt", C}, {"messages", CH}, {"suffix", C}, {"best_of", C}, {"echo", C},
    {"max_tokens", C | CH}, {"max_completion_tokens", CH}, {"temperature", C | CH}, {"top_p", C | CH},
    {"n", C | CH}, {"stream", C | CH}, {"stream_options", C | CH}, {"stop", C | CH},
    {"presence_penalty", C | CH}, {"frequency_penalty", C | CH}, {"logit_bias", C | CH}, {"logprobs", C | CH},
    {"top_logprobs", CH}, {"user", C | CH}, {"seed", C | CH}, {"response_format", C | CH}, {"tools", CH},
    {"tool_choice", CH}, {"parallel_tool_calls", CH}, {"functions", CH}, {"function_call", CH},
    {"modalities", CH}, {"audio", CH}, {"prediction", CH}, {"reasoning_effort", CH}, {"service_tier", CH},
    {"store", CH}, {"metadata", CH}, {"web_search_options", CH}, {"prompt_cache_key", CH},
    {"prompt_cache_retention", CH}, {"safety_identifier", CH}, {"verbosity", CH},
    /* extensions */
    {"top_k", C | CH}, {"min_p", C | CH}, {"repetition_penalty", C | CH}, {"grammar", C | CH},
    {"min_tokens", C | CH}, {"stop_token_ids", C | CH}, {"ignore_eos", C | CH}, {"chat_template_kwargs", CH},
    {"add_generation_prompt", CH},
};

static int refuse(shardlm_server_err *e, const char *param, const char *why)
{
    return shardlm_server_err_set(e, 400, INVALID, NULL, param, "%s", why);
}

static const cJSON *get(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNull(v) ? NULL : v;
}

/* Fields refused whatever their value (null is always absent). */
static const struct {
    const char *name, *why;
} never[] = {
    {"suffix", "suffix is not supported: this server does no fill-in-the-middle"},
    {"audio", "audio is not supported: this server answers in text only"},
    {"functions", "functions is deprecated and not supported: use tools"},
    {"function_call", "function_call is deprecated and not supported: use tool_choice"},
    {"prediction", "prediction is not supported: there is no predicted-output decoding here"},
    {"reasoning_effort", "reasoning_effort is not supported: use chat_template_kwargs (e.g. {\"enable_thinking\": "
                         "false}) where the template has such a switch"},
    {"verbosity", "verbosity is not supported"},
    {"web_search_options", "web_search_options is not supported: this server has no web search"},
    {"metadata", "metadata is not supported: this server stores nothing to attach it to"},
    {"prompt_cache_retention", "prompt_cache_retention is not supported: cached prefixes stay while the KV pool "
                               "has room, without a guarantee"},
};

static int check_values(shardlm_api_kind kind, const cJSON *o, shardlm_server_err *e)
{
    const cJSON *v;
    for (size_t i = 0; i < sizeof never / sizeof never[0]; i++)
        if (get(o, never[i].name)) return refuse(e, never[i].name, never[i].why);
    if ((v = get(o, "store")) && !cJSON_IsFalse(v))
        return refuse(e, "store", cJSON_IsTrue(v) ? "store: true is not supported: this server stores nothing"
                                                  : "store must be a boolean");
    if ((v = get(o, "service_tier")) &&
        (!cJSON_IsString(v) || (strcmp(v->valuestring, "auto") && strcmp(v->valuestring, "default"))))
        return refuse(e, "service_tier", "service_tier must be \"auto\" or \"default\": this server has one tier");
    if ((v = get(o, "modalities"))) {
        int ok = cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1 && cJSON_IsString(v->child) &&
                 !strcmp(v->child->valuestring, "text");
        if (!ok) return refuse(e, "modalities", "modalities must be [\"text\"]: this server answers in text only");
    }
    static const char *const strings[] = {"user", "safety_identifier", "prompt_cache_key"};
    for (size_t i = 0; i < 3; i++)
        if ((v = get(o, strings[i])) && !cJSON_IsString(v)) {
            char why[96];
            snprintf(why, sizeof why, "%s must be a string", strings[i]);
            return refuse(e, strings[i], why);
        }
    const cJSON *mt = get(o, "max_tokens"), *mct = get(o, "max_completion_tokens");
    if (kind == SHARDLM_API_CHAT && mt && mct && !cJSON_Compare(mt, mct, 1))
        return refuse(e, "max_tokens", "max_tokens and max_completion_tokens differ: send max_completion_tokens "
                                       "alone (max_tokens is its deprecated name)");
    if ((v = get(o, "best_of"))) {
        const cJSON *n = get(o, "n");
        double want = cJSON_IsNumber(n) ? n->valuedouble : 1;
        if (!cJSON_IsNumber(v) || v->valuedouble != want)
            return refuse(e, "best_of", "best_of must equal n: every generated choice is returned (no "
                                        "server-side selection)");
    }
    return SHARDLM_OK;
}

static int check_stream_options(const cJSON *o, shardlm_server_err *e)
{
    const cJSON *so = get(o, "stream_options"), *k;
    if (!cJSON_IsObject(so)) return SHARDLM_OK; /* its type is checked with stream */
    cJSON_ArrayForEach(k, so) {
        if (!strcmp(k->string, "include_usage")) continue;
        if (!strcmp(k->string, "include_obfuscation")) {
            if (cJSON_IsNull(k) || cJSON_IsFalse(k)) continue;
            return refuse(e, "stream_options.include_obfuscation",
                          "stream_options.include_obfuscation: true is not supported: chunks carry no padding");
        }
        return shardlm_server_err_set(e, 400, INVALID, NULL, "stream_options",
                                      "stream_options.%.64s is not supported", k->string);
    }
    return SHARDLM_OK;
}

const char *shardlm_server_field(size_t i, unsigned *endpoints)
{
    if (i >= sizeof fields / sizeof fields[0]) return NULL;
    *endpoints = fields[i].where;
    return fields[i].name;
}

int shardlm_server_check_fields(shardlm_api_kind kind, const cJSON *o, shardlm_server_err *e)
{
    const cJSON *k;
    cJSON_ArrayForEach(k, o) {
        int known = 0;
        for (size_t i = 0; i < sizeof fields / sizeof fields[0] && !known; i++)
            known = !strcmp(k->string, fields[i].name) && (fields[i].where & (1u << kind));
        if (!known)
            return shardlm_server_err_set(e, 400, INVALID, NULL, k->string,
                                          "Unrecognized request argument supplied: %.64s", k->string);
    }
    int rc = check_values(kind, o, e);
    return rc ? rc : check_stream_options(o, e);
}
