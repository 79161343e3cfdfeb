/* server_parse.c - request body -> validated shardlm_server_req, or an
 * OpenAI error naming the parameter at fault (see server_parse.h). Every
 * check happens here, before anything reaches the scheduler, so a bad
 * request never costs engine time. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_parse.h"
#include "shardlm_common.h"

#define INVALID "invalid_request_error"

int shardlm_server_err_set(shardlm_server_err *e, int status, const char *type, const char *code,
                           const char *param, const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return SHARDLM_EINPUT;
}

char *shardlm_server_err_json(const shardlm_server_err *e)
{
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    if (!err) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddStringToObject(err, "message", e->message);
    cJSON_AddStringToObject(err, "type", e->type ? e->type : INVALID);
    if (e->param[0]) cJSON_AddStringToObject(err, "param", e->param);
    else cJSON_AddNullToObject(err, "param");
    if (e->code) cJSON_AddStringToObject(err, "code", e->code);
    else cJSON_AddNullToObject(err, "code");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static int bad(shardlm_server_err *e, const char *param, const char *fmt, const char *detail)
{
    return shardlm_server_err_set(e, 400, INVALID, NULL, param, fmt, param, detail);
}

/* ---- typed field readers: absent or null leaves *out untouched ---- */

static int get_number(const cJSON *o, const char *name, double lo, double hi, float *out, shardlm_server_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) return SHARDLM_OK;
    if (!cJSON_IsNumber(v)) return bad(e, name, "%s must be a number%s", "");
    double d = v->valuedouble;
    /* cJSON turns 1e999 into infinity; JSON itself has no NaN/Infinity */
    if (!isfinite(d)) return bad(e, name, "%s must be a finite number%s", "");
    if (d < lo || d > hi)
        return shardlm_server_err_set(e, 400, INVALID, NULL, name, "%s must be in [%g, %g], got %g", name, lo, hi, d);
    *out = (float)d;
    return SHARDLM_OK;
}

static int get_int(const cJSON *o, const char *name, double lo, double hi, double *out, shardlm_server_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) return SHARDLM_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble))
        return bad(e, name, "%s must be an integer%s", "");
    if (v->valuedouble < lo || v->valuedouble > hi)
        return shardlm_server_err_set(e, 400, INVALID, NULL, name, "%s must be in [%.0f, %.0f], got %.0f", name, lo,
                                      hi, v->valuedouble);
    *out = v->valuedouble;
    return SHARDLM_OK;
}

static int get_bool(const cJSON *o, const char *name, int *out, shardlm_server_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) return SHARDLM_OK;
    if (!cJSON_IsBool(v)) return bad(e, name, "%s must be a boolean%s", "");
    *out = cJSON_IsTrue(v);
    return SHARDLM_OK;
}

static int dup_string(const char *s, char **out)
{
    *out = strdup(s);
    return *out ? SHARDLM_OK : SHARDLM_ENOMEM;
}

/* ---- compound fields ---- */

static int parse_stop(const cJSON *o, shardlm_server_req *r, shardlm_server_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "stop");
    if (!v || cJSON_IsNull(v)) return SHARDLM_OK;
    if (cJSON_IsString(v)) {
        if (!v->valuestring[0]) return bad(e, "stop", "%s must not be an empty string%s", "");
        if (strlen(v->valuestring) > SHARDLM_STOP_MAX_LEN)
            return bad(e, "stop", "%s strings are at most 256 bytes%s", "");
        r->n_stop = 1;
        return dup_string(v->valuestring, &r->stop[0]);
    }
    if (!cJSON_IsArray(v)) return bad(e, "stop", "%s must be a string or an array of strings%s", "");
    if (cJSON_GetArraySize(v) > SHARDLM_STOP_MAX) return bad(e, "stop", "%s takes at most 4 strings%s", "");
    const cJSON *s;
    cJSON_ArrayForEach(s, v) {
        if (!cJSON_IsString(s)) return bad(e, "stop", "%s must be a string or an array of strings%s", "");
        if (!s->valuestring[0]) return bad(e, "stop", "%s must not contain an empty string%s", "");
        if (strlen(s->valuestring) > SHARDLM_STOP_MAX_LEN)
            return bad(e, "stop", "%s strings are at most 256 bytes%s", "");
        if (dup_string(s->valuestring, &r->stop[r->n_stop])) return SHARDLM_ENOMEM;
        r->n_stop++;
    }
    return SHARDLM_OK;
}

static int parse_logit_bias(const cJSON *o, int n_vocab, shardlm_server_req *r, shardlm_server_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "logit_bias");
    if (!v || cJSON_IsNull(v)) return SHARDLM_OK;
    if (!cJSON_IsObject(v)) return bad(e, "logit_bias", "%s must be an object of token id -> bias%s", "");
    int n = cJSON_GetArraySize(v);
    if (n > SHARDLM_LOGIT_BIAS_MAX) return bad(e, "logit_bias", "%s takes at most 1024 entries%s", "");
    if (n == 0) return SHARDLM_OK;
    if (!(r->bias = calloc((size_t)n, sizeof *r->bias))) return SHARDLM_ENOMEM;
    const cJSON *b;
    cJSON_ArrayForEach(b, v) {
        char *end;
        long id = strtol(b->string, &end, 10);
        if (!b->string[0] || *end || id < 0 || id >= n_vocab)
            return shardlm_server_err_set(e, 400, INVALID, NULL, "logit_bias",
                                          "logit_bias key '%.64s' is not a token id in [0, %d)", b->string, n_vocab);
        if (!cJSON_IsNumber(b) || !isfinite(b->valuedouble) || fabs(b->valuedouble) > 100)
            return bad(e, "logit_bias", "%s values must be numbers in [-100, 100]%s", "");
        for (int i = 0; i < r->params.n_logit_bias; i++)
            if (r->bias[i].token == (int32_t)id)
                return bad(e, "logit_bias", "%s names a token twice%s", "");
        r->bias[r->params.n_logit_bias++] = (shardlm_logit_bias){(int32_t)id, (float)b->valuedouble};
    }
    r->params.logit_bias = r->bias;
    return SHARDLM_OK;
}

/* vLLM's min_tokens, stop_token_ids and ignore_eos. */
static int parse_extensions(const cJSON *o, int n_vocab, shardlm_server_req *r, shardlm_server_err *e)
{
    double min = 0;
    int rc = get_int(o, "min_tokens", 0, 1e9, &min, e);
    if (rc || (rc = get_bool(o, "ignore_eos", &r->ignore_eos, e))) return rc;
    r->min_tokens = (int)min;
    if (r->max_tokens > 0 && r->min_tokens > r->max_tokens)
        return shardlm_server_err_set(e, 400, INVALID, NULL, "min_tokens",
                                      "min_tokens (%d) must not exceed max_tokens (%d)", r->min_tokens, r->max_tokens);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "stop_token_ids"), *t;
    if (!ids || cJSON_IsNull(ids)) return SHARDLM_OK;
    if (!cJSON_IsArray(ids) || cJSON_GetArraySize(ids) > SHARDLM_SERVER_MAX_STOP_IDS)
        return bad(e, "stop_token_ids", "%s must be an array of at most 64 token ids%s", "");
    cJSON_ArrayForEach(t, ids) {
        double d = t->valuedouble;
        if (!cJSON_IsNumber(t) || d != floor(d) || d < 0 || d >= n_vocab)
            return shardlm_server_err_set(e, 400, INVALID, NULL, "stop_token_ids",
                                          "stop_token_ids must be token ids in [0, %d)", n_vocab);
        r->stop_ids[r->n_stop_ids++] = (int32_t)d;
    }
    return SHARDLM_OK;
}

/* The fields both endpoints share: sampling, n, stop, stream. */
static int parse_common(const cJSON *o, int n_vocab, shardlm_server_req *r, shardlm_server_err *e)
{
    shardlm_sampling_params *p = &r->params;
    double d, n = 1, max_tokens = r->max_tokens, top_k = 0, seed;
    int rc = SHARDLM_OK;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(o, "model");
    if (model && !cJSON_IsNull(model) && !cJSON_IsString(model)) return bad(e, "model", "%s must be a string%s", "");
    if ((rc = get_number(o, "temperature", 0, 2, &p->temperature, e))) return rc;
    if ((rc = get_number(o, "top_p", -INFINITY, INFINITY, &p->top_p, e))) return rc;
    if (p->top_p <= 0 || p->top_p > 1)
        return shardlm_server_err_set(e, 400, INVALID, NULL, "top_p", "top_p must be in (0, 1], got %g",
                                      (double)p->top_p);
    if ((rc = get_int(o, "top_k", -1, 1e9, &top_k, e))) return rc;
    p->top_k = top_k < 0 ? 0 : (int32_t)top_k; /* -1 means off, as in vLLM */
    if ((rc = get_number(o, "min_p", 0, 1, &p->min_p, e))) return rc;
    if ((rc = get_number(o, "repetition_penalty", 1e-6, 1e6, &p->repetition_penalty, e))) return rc;
    if ((rc = get_number(o, "presence_penalty", -2, 2, &p->presence_penalty, e))) return rc;
    if ((rc = get_number(o, "frequency_penalty", -2, 2, &p->frequency_penalty, e))) return rc;
    if ((rc = get_int(o, "n", 1, SHARDLM_SERVER_MAX_N, &n, e))) return rc;
    r->n = (int)n;
    if ((rc = get_int(o, "max_tokens", 1, 1e9, &max_tokens, e))) return rc;
    if (r->kind == SHARDLM_API_CHAT && (rc = get_int(o, "max_completion_tokens", 1, 1e9, &max_tokens, e))) return rc;
    r->max_tokens = (int)max_tokens;
    if (cJSON_GetObjectItemCaseSensitive(o, "seed")) {
        d = NAN;
        if ((rc = get_int(o, "seed", -9.2e18, 1.8e19, &d, e))) return rc;
        if (!isnan(d)) {
            seed = d;
            p->seed = seed < 0 ? (uint64_t)(int64_t)seed : (uint64_t)seed;
            p->has_seed = 1;
        }
    }
    if ((rc = get_bool(o, "stream", &r->stream, e))) return rc;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(o, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) return bad(e, "stream_options", "%s must be an object%s", "");
        if (!r->stream) return bad(e, "stream_options", "%s is only allowed when stream is true%s", "");
        const cJSON *iu = cJSON_GetObjectItemCaseSensitive(so, "include_usage");
        if (iu && !cJSON_IsNull(iu) && !cJSON_IsBool(iu))
            return bad(e, "stream_options.include_usage", "%s must be a boolean%s", "");
        r->include_usage = cJSON_IsTrue(iu);
    }
    if ((rc = parse_stop(o, r, e))) return rc;
    if ((rc = parse_extensions(o, n_vocab, r, e))) return rc;
    return parse_logit_bias(o, n_vocab, r, e);
}

/* ---- /v1/completions ---- */

static int parse_ids(const cJSON *arr, int n_vocab, shardlm_server_req *r, shardlm_server_err *e)
{
    int n = cJSON_GetArraySize(arr);
    if (n == 0) return bad(e, "prompt", "%s must not be empty%s", "");
    if (!(r->prompt_ids = malloc((size_t)n * sizeof(int32_t)))) return SHARDLM_ENOMEM;
    const cJSON *t;
    cJSON_ArrayForEach(t, arr) {
        double d = t->valuedouble;
        if (!cJSON_IsNumber(t) || d != floor(d) || d < 0 || d >= n_vocab)
            return shardlm_server_err_set(e, 400, INVALID, NULL, "prompt",
                                          "prompt token ids must be integers in [0, %d)", n_vocab);
        r->prompt_ids[r->n_prompt_ids++] = (int32_t)d;
    }
    return SHARDLM_OK;
}

static int parse_prompt(const cJSON *o, int n_vocab, shardlm_server_req *r, shardlm_server_err *e)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    if (!p || cJSON_IsNull(p)) return bad(e, "prompt", "%s is required%s", "");
    if (cJSON_IsString(p)) return dup_string(p->valuestring, &r->prompt_text);
    if (!cJSON_IsArray(p)) return bad(e, "prompt", "%s must be a string or an array of token ids%s", "");
    const cJSON *first = cJSON_GetArrayItem(p, 0);
    /* one prompt wrapped in an array, as some clients send it */
    if (first && (cJSON_IsString(first) || cJSON_IsArray(first))) {
        if (cJSON_GetArraySize(p) != 1)
            return bad(e, "prompt", "%s: one prompt per request is supported (send one request per prompt)%s", "");
        if (cJSON_IsString(first)) return dup_string(first->valuestring, &r->prompt_text);
        return parse_ids(first, n_vocab, r, e);
    }
    return parse_ids(p, n_vocab, r, e);
}

static int parse_completions(const cJSON *o, int n_vocab, shardlm_server_req *r, shardlm_server_err *e)
{
    int rc = parse_prompt(o, n_vocab, r, e);
    if (rc) return rc;
    double lp = -1;
    if ((rc = get_int(o, "logprobs", 0, SHARDLM_TOP_LOGPROBS_MAX, &lp, e))) return rc;
    if (lp >= 0) {
        r->params.logprobs = 1;
        r->params.top_logprobs = (int)lp;
    }
    if ((rc = get_bool(o, "echo", &r->echo, e))) return rc;
    if (r->echo && r->params.logprobs)
        return bad(e, "echo", "%s together with logprobs is not supported (no logprobs for prompt tokens)%s", "");
    return SHARDLM_OK;
}

/* ---- /v1/chat/completions ---- */

static const char *chat_role(const char *role)
{
    static const char *known[] = {"system", "user", "assistant", "tool"};
    if (!strcmp(role, "developer")) return "system"; /* OpenAI's newer name; templates know "system" */
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(role, known[i])) return known[i];
    return NULL;
}

/* content: a string, null, or an array of {"type":"text","text":...} parts
 * (joined with nothing between them). */
static int chat_content(const cJSON *c, size_t i, char **out, shardlm_server_err *e)
{
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (!c || cJSON_IsNull(c)) return SHARDLM_OK;
    if (cJSON_IsString(c)) return dup_string(c->valuestring, out);
    if (!cJSON_IsArray(c)) return bad(e, param, "%s must be a string or an array of text parts%s", "");
    size_t len = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text))
            return bad(e, param, "%s: only parts of type \"text\" are supported%s", "");
        len += strlen(text->valuestring);
    }
    if (!(*out = malloc(len + 1))) return SHARDLM_ENOMEM;
    (*out)[0] = 0;
    cJSON_ArrayForEach(part, c) strcat(*out, cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring);
    return SHARDLM_OK;
}

static int parse_messages(const cJSON *o, shardlm_server_req *r, shardlm_server_err *e)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "messages");
    if (!m || cJSON_IsNull(m)) return bad(e, "messages", "%s is required%s", "");
    if (!cJSON_IsArray(m)) return bad(e, "messages", "%s must be an array%s", "");
    int n = cJSON_GetArraySize(m);
    if (n == 0) return bad(e, "messages", "%s must not be empty%s", "");
    if (n > SHARDLM_SERVER_MAX_MESSAGES) return bad(e, "messages", "%s: at most 4096 messages%s", "");
    if (!(r->msgs = calloc((size_t)n, sizeof *r->msgs))) return SHARDLM_ENOMEM;
    const cJSON *msg;
    cJSON_ArrayForEach(msg, m) {
        size_t i = r->n_msgs;
        char param[64];
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!cJSON_IsObject(msg)) {
            snprintf(param, sizeof param, "messages[%zu]", i);
            return bad(e, param, "%s must be an object%s", "");
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(msg, "role");
        if (!cJSON_IsString(role)) return bad(e, param, "%s must be a string%s", "");
        const char *known = chat_role(role->valuestring);
        if (!known)
            return shardlm_server_err_set(e, 400, INVALID, NULL, param,
                                          "%s '%.64s' is not one of system, developer, user, assistant, tool", param,
                                          role->valuestring);
        r->msgs[i].role = known; /* a static string: never freed */
        r->n_msgs++;
        int rc = chat_content(cJSON_GetObjectItemCaseSensitive(msg, "content"), i, (char **)&r->msgs[i].content, e);
        if (rc) return rc;
        if (!r->msgs[i].content && strcmp(known, "assistant")) {
            snprintf(param, sizeof param, "messages[%zu].content", i);
            return bad(e, param, "%s is required for this role%s", "");
        }
        if (!strcmp(known, "tool") && !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(msg, "tool_call_id"))) {
            snprintf(param, sizeof param, "messages[%zu].tool_call_id", i);
            return bad(e, param, "%s is required (a string: the id of the call this answers)%s", "");
        }
    }
    return SHARDLM_OK;
}

static int parse_chat(const cJSON *o, shardlm_server_req *r, shardlm_server_err *e)
{
    int rc = parse_messages(o, r, e);
    if (!rc) rc = shardlm_server_chat_vars(o, r, e);
    if (!rc) rc = shardlm_server_parse_tools(o, r, e);
    if (rc) return rc;
    double top = 0;
    if ((rc = get_bool(o, "logprobs", &r->params.logprobs, e))) return rc;
    if ((rc = get_int(o, "top_logprobs", 0, SHARDLM_TOP_LOGPROBS_MAX, &top, e))) return rc;
    r->params.top_logprobs = (int)top;
    if (top > 0 && !r->params.logprobs) return bad(e, "top_logprobs", "%s needs logprobs to be true%s", "");
    return SHARDLM_OK;
}

/* The sampler's own check is the last word (same bounds, one source). */
static int final_check(shardlm_server_req *r, int n_vocab, shardlm_server_err *e)
{
    char why[512];
    if (!shardlm_sampling_params_check(&r->params, n_vocab, why, sizeof why)) return SHARDLM_OK;
    char param[64];
    size_t k = strcspn(why, " ");
    snprintf(param, sizeof param, "%.*s", (int)(k < sizeof param ? k : sizeof param - 1), why);
    return shardlm_server_err_set(e, 400, INVALID, NULL, param, "%s", why);
}

static int parse_body(shardlm_api_kind kind, const char *body, size_t len, int n_vocab, int strict,
                      shardlm_server_req *r, shardlm_server_err *e)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->params = shardlm_sampling_params_default();
    r->n = 1;
    r->max_tokens = kind == SHARDLM_API_COMPLETIONS ? 16 : 0; /* OpenAI's defaults */
    cJSON *o = cJSON_ParseWithLength(body, len);
    if (!o) return shardlm_server_err_set(e, 400, INVALID, NULL, NULL, "the body is not valid JSON");
    int rc = SHARDLM_OK;
    if (!cJSON_IsObject(o)) rc = shardlm_server_err_set(e, 400, INVALID, NULL, NULL, "the body must be a JSON object");
    if (!rc && strict) rc = shardlm_server_check_fields(kind, o, e);
    if (!rc) rc = kind == SHARDLM_API_CHAT ? parse_chat(o, r, e) : parse_completions(o, n_vocab, r, e);
    if (!rc) rc = parse_common(o, n_vocab, r, e);
    if (!rc) rc = final_check(r, n_vocab, e);
    if (!rc) rc = shardlm_server_parse_format(o, r, e);
    if (rc == SHARDLM_ENOMEM) shardlm_server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
    cJSON_Delete(o);
    return rc;
}

int shardlm_server_parse(shardlm_api_kind kind, const char *body, size_t len, int n_vocab, shardlm_server_req *r,
                         shardlm_server_err *e)
{
    return parse_body(kind, body, len, n_vocab, 1, r, e);
}

int shardlm_server_parse_loose(shardlm_api_kind kind, const char *body, size_t len, int n_vocab,
                               shardlm_server_req *r, shardlm_server_err *e)
{
    return parse_body(kind, body, len, n_vocab, 0, r, e);
}

void shardlm_server_req_free(shardlm_server_req *r)
{
    for (int i = 0; i < r->n_tools; i++) cJSON_Delete(r->tools[i].params);
    free(r->tools);
    free(r->prompt_text);
    free(r->prompt_ids);
    for (size_t i = 0; i < r->n_msgs; i++) free((char *)r->msgs[i].content);
    free(r->msgs);
    free(r->chat_vars);
    free(r->bias);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    shardlm_grammar_unref(r->grammar);
    memset(r, 0, sizeof *r);
}

/* ---- prompt -> token ids ---- */

static int encode(const shardlm_tokenizer *tok, const char *text, size_t len, int add, int special,
                  int32_t **ids, int *n)
{
    size_t got = 0;
    int rc = shardlm_tokenizer_encode_alloc(tok, text, len, add, special, ids, &got);
    if (!rc && got > INT32_MAX) rc = SHARDLM_ERUNTIME;
    *n = (int)got;
    return rc;
}

/* OpenAI clients send a tool-calling assistant turn with content null,
 * which templates that test content as a string (Qwen3's "'</think>' in
 * content") cannot render. When a render fails and some content is null,
 * try again with "" there, as llama.cpp does; the first error stands if
 * that fails too. */
static int retry_with_empty_content(const shardlm_server_req *r, const shardlm_chat_template *tpl, char **text,
                                    size_t *len, int rc)
{
    char *why = strdup(shardlm_err_get());
    cJSON *vars = r->chat_vars ? cJSON_Parse(r->chat_vars) : NULL, *m;
    int changed = 0;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(vars, "messages")) {
        cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsNull(c)) cJSON_ReplaceItemInObjectCaseSensitive(m, "content", cJSON_CreateString("")), changed = 1;
    }
    char *s = changed ? cJSON_PrintUnformatted(vars) : NULL;
    cJSON_Delete(vars);
    if (s && !shardlm_chat_render_json(tpl, s, strlen(s), NULL, text, len)) rc = SHARDLM_OK;
    else if (why) shardlm_err_set("%s", why);
    free(s);
    free(why);
    return rc;
}

int shardlm_server_render_chat(const shardlm_server_req *r, const shardlm_chat_template *tpl, char **text,
                               size_t *len, shardlm_server_err *e)
{
    *text = NULL;
    if (!tpl)
        return shardlm_server_err_set(e, 400, INVALID, "chat_template_unusable", "messages",
                                      "this server has no usable chat template; use /v1/completions");
    int rc = shardlm_chat_render_json(tpl, r->chat_vars, r->chat_vars ? strlen(r->chat_vars) : 0, NULL, text, len);
    if (rc == SHARDLM_EINPUT) rc = retry_with_empty_content(r, tpl, text, len, rc);
    if (rc == SHARDLM_EINPUT)
        return shardlm_server_err_set(e, 400, INVALID, NULL, "messages", "%s", shardlm_err_get());
    if (rc) shardlm_server_err_set(e, 500, "server_error", NULL, NULL, "chat template: %s", shardlm_err_get());
    return rc;
}

/* Renders the chat. Control-token text in the rendered conversation
 * ("<s>", "</s>", "<|im_start|>") becomes those tokens, as llama.cpp's
 * server does; message content is part of that text, so a client can write
 * them too. BOS and EOS are added as the model asks (add_bos_token,
 * add_eos_token); a leading BOS text is that BOS. */
static int chat_ids(const shardlm_server_req *r, const shardlm_tokenizer *tok, const shardlm_chat_template *tpl,
                    int32_t **ids, int *n, shardlm_server_err *e)
{
    char *text = NULL;
    size_t len = 0;
    int rc = shardlm_server_render_chat(r, tpl, &text, &len, e);
    if (rc) return rc;
    size_t bos_len = 0, skip = 0;
    const char *bos = shardlm_tokenizer_piece(tok, shardlm_tokenizer_bos(tok), &bos_len);
    if (bos && bos_len && len >= bos_len && !memcmp(text, bos, bos_len)) skip = bos_len;
    int add = shardlm_tokenizer_add_special(tok) | (skip ? SHARDLM_TOK_ADD_BOS : 0);
    rc = encode(tok, text + skip, len - skip, add, 1, ids, n);
    free(text);
    return rc;
}

int shardlm_server_prompt_ids(const shardlm_server_req *r, const shardlm_tokenizer *tok,
                              const shardlm_chat_template *tpl, int32_t **ids, int *n, shardlm_server_err *e)
{
    int rc;
    *ids = NULL;
    *n = 0;
    if (r->kind == SHARDLM_API_CHAT) {
        rc = chat_ids(r, tok, tpl, ids, n, e);
    } else if (r->n_prompt_ids > 0) {
        rc = (*ids = malloc((size_t)r->n_prompt_ids * sizeof(int32_t))) ? SHARDLM_OK : SHARDLM_ENOMEM;
        if (!rc) memcpy(*ids, r->prompt_ids, (size_t)r->n_prompt_ids * sizeof(int32_t));
        *n = r->n_prompt_ids;
    } else {
        rc = encode(tok, r->prompt_text, strlen(r->prompt_text), shardlm_tokenizer_add_special(tok), 0, ids, n);
    }
    if (rc && rc != SHARDLM_EINPUT)
        shardlm_server_err_set(e, 500, "server_error", NULL, NULL, "cannot tokenize the prompt: %s",
                               shardlm_err_get());
    if (rc) {
        free(*ids);
        *ids = NULL;
    }
    return rc;
}
