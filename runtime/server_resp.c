/* server_resp.c - OpenAI response bodies: the non-streaming JSON of
 * /v1/completions ("text_completion") and /v1/chat/completions
 * ("chat.completion"), and the Server-Sent Events of their streams
 * ("text_completion" / "chat.completion.chunk" chunks, usage, errors). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"
#include "shardlm_common.h"

/* A token as text for logprobs: what it decodes to on its own (SentencePiece's
 * "▁" as a space, a byte-level BPE token's bytes), bytes that are not whole
 * characters as U+FFFD; a token that decodes to nothing (a control token),
 * or to more than fits, as its piece text. */
static void token_text(const shardlm_tokenizer *tok, int32_t id, char *out, size_t cap)
{
    shardlm_detok d;
    shardlm_detok_init(&d);
    size_t k = shardlm_detok_push(tok, &d, id, out, cap - 4);
    k += shardlm_detok_flush(&d, out + k, cap - 1 - k);
    if (k == 0) {
        const char *p = shardlm_tokenizer_piece(tok, id, &k);
        if (k >= cap) k = cap - 1;
        if (p) memcpy(out, p, k);
        else k = 0;
    }
    out[k] = 0;
}

static cJSON *bytes_array(const char *s)
{
    cJSON *a = cJSON_CreateArray();
    for (const unsigned char *p = (const unsigned char *)s; a && *p; p++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(*p));
    return a;
}

/* Chat: {"token","logprob","bytes","top_logprobs":[{"token","logprob","bytes"}]} */
static cJSON *chat_lp_entry(const srv_call_info *ci, const shardlm_logprobs *lp)
{
    char t[256];
    cJSON *o = cJSON_CreateObject();
    token_text(ci->tok, lp->token, t, sizeof t);
    cJSON_AddStringToObject(o, "token", t);
    cJSON_AddNumberToObject(o, "logprob", lp->logprob);
    cJSON_AddItemToObject(o, "bytes", bytes_array(t));
    cJSON *top = cJSON_AddArrayToObject(o, "top_logprobs");
    for (int i = 0; top && i < lp->n_top; i++) {
        cJSON *e = cJSON_CreateObject();
        token_text(ci->tok, lp->top[i].token, t, sizeof t);
        cJSON_AddStringToObject(e, "token", t);
        cJSON_AddNumberToObject(e, "logprob", lp->top[i].logprob);
        cJSON_AddItemToObject(e, "bytes", bytes_array(t));
        cJSON_AddItemToArray(top, e);
    }
    return o;
}

/* Completions: {"tokens":[],"token_logprobs":[],"top_logprobs":[{tok:lp}],"text_offset":[]} */
static cJSON *cmpl_lp_new(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddArrayToObject(o, "tokens");
    cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON_AddArrayToObject(o, "text_offset");
    return o;
}

static void cmpl_lp_add(const srv_call_info *ci, cJSON *o, const shardlm_logprobs *lp, size_t offset)
{
    char t[256];
    token_text(ci->tok, lp->token, t, sizeof t);
    cJSON_AddItemToArray(cJSON_GetObjectItem(o, "tokens"), cJSON_CreateString(t));
    cJSON_AddItemToArray(cJSON_GetObjectItem(o, "token_logprobs"), cJSON_CreateNumber(lp->logprob));
    cJSON *top = cJSON_CreateObject();
    for (int i = 0; i < lp->n_top; i++) {
        token_text(ci->tok, lp->top[i].token, t, sizeof t);
        cJSON_AddNumberToObject(top, t, lp->top[i].logprob);
    }
    cJSON_AddItemToArray(cJSON_GetObjectItem(o, "top_logprobs"), top);
    cJSON_AddItemToArray(cJSON_GetObjectItem(o, "text_offset"), cJSON_CreateNumber((double)offset));
}


int srv_choice_add(const srv_call_info *ci, srv_choice *c, const srv_event *ev)
{
    if (ev->is_end) {
        c->finish = shardlm_finish_reason_str(ev->why);
        return SHARDLM_OK;
    }
    if (ev->has_lp) {
        if (!c->lp) c->lp = ci->kind == SHARDLM_API_CHAT ? cJSON_CreateArray() : cmpl_lp_new();
        if (!c->lp) return SHARDLM_ENOMEM;
        if (ci->kind == SHARDLM_API_CHAT) cJSON_AddItemToArray(c->lp, chat_lp_entry(ci, &ev->lp));
        else cmpl_lp_add(ci, c->lp, &ev->lp, c->len);
    }
    if (c->len + ev->len + 1 > c->cap) {
        size_t cap = (c->len + ev->len + 1) * 2;
        char *t = realloc(c->text, cap);
        if (!t) return SHARDLM_ENOMEM;
        c->text = t;
        c->cap = cap;
    }
    memcpy(c->text + c->len, ev->text, ev->len);
    c->len += ev->len;
    c->text[c->len] = 0;
    return SHARDLM_OK;
}

void srv_choice_free(srv_choice *c)
{
    free(c->text);
    cJSON_Delete(c->lp);
    memset(c, 0, sizeof *c);
}

static cJSON *envelope(const srv_call_info *ci, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", ci->id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)ci->created);
    cJSON_AddStringToObject(o, "model", ci->model);
    if (ci->kind == SHARDLM_API_CHAT) cJSON_AddNullToObject(o, "system_fingerprint");
    return o;
}

static cJSON *usage(srv_usage n)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", n.prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", n.completion);
    cJSON_AddNumberToObject(u, "total_tokens", n.prompt + n.completion);
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", n.cached);
    return u;
}

static void add_str_or_null(cJSON *o, const char *name, const char *s)
{
    if (s) cJSON_AddStringToObject(o, name, s);
    else cJSON_AddNullToObject(o, name);
}

static char *print_free(cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

/* Chat logprobs wrap the content array: {"content":[...]} */
static void add_logprobs(const srv_call_info *ci, cJSON *choice, cJSON *lp)
{
    if (!ci->logprobs || !lp) {
        cJSON_AddNullToObject(choice, "logprobs");
    } else if (ci->kind == SHARDLM_API_CHAT) {
        cJSON *w = cJSON_AddObjectToObject(choice, "logprobs");
        cJSON_AddItemToObject(w, "content", lp);
    } else {
        cJSON_AddItemToObject(choice, "logprobs", lp);
    }
}

/* "stop" with calls in the answer is "tool_calls", as OpenAI says it. */
static const char *finish_with_calls(const char *finish, int n_calls)
{
    return n_calls && finish && !strcmp(finish, "stop") ? "tool_calls" : finish;
}

char *srv_body_final(const srv_call_info *ci, srv_choice *ch, srv_usage u)
{
    int chat = ci->kind == SHARDLM_API_CHAT;
    cJSON *o = envelope(ci, chat ? "chat.completion" : "text_completion");
    cJSON *arr = cJSON_AddArrayToObject(o, "choices");
    for (int i = 0; arr && i < ci->n; i++) {
        cJSON *c = cJSON_CreateObject();
        int calls = 0;
        cJSON_AddNumberToObject(c, "index", i);
        if (chat && ci->tool_format != SHARDLM_TOOLFMT_NONE) {
            cJSON *m = srv_tools_message(ci, i, ch[i].text, ch[i].len, &calls);
            if (!m) {
                cJSON_Delete(c);
                cJSON_Delete(o);
                return NULL;
            }
            cJSON_AddItemToObject(c, "message", m);
        } else if (chat) {
            cJSON *m = cJSON_AddObjectToObject(c, "message");
            cJSON_AddStringToObject(m, "role", "assistant");
            cJSON_AddStringToObject(m, "content", ch[i].text ? ch[i].text : "");
        } else {
            cJSON_AddStringToObject(c, "text", ch[i].text ? ch[i].text : "");
        }
        add_logprobs(ci, c, ch[i].lp);
        ch[i].lp = NULL; /* now owned by the tree */
        add_str_or_null(c, "finish_reason", finish_with_calls(ch[i].finish, calls));
        cJSON_AddItemToArray(arr, c);
    }
    cJSON_AddItemToObject(o, "usage", usage(u));
    return print_free(o);
}

/* "data: JSON\n\n" from printed JSON, which it frees. */
static char *sse_text(char *j)
{
    if (!j) return NULL;
    size_t n = strlen(j) + 9;
    char *s = malloc(n);
    if (s) snprintf(s, n, "data: %s\n\n", j);
    free(j);
    return s;
}

static char *sse(cJSON *o) { return sse_text(print_free(o)); }

static cJSON *chunk(const srv_call_info *ci, int choice, cJSON **c_out)
{
    int chat = ci->kind == SHARDLM_API_CHAT;
    cJSON *o = envelope(ci, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *arr = cJSON_AddArrayToObject(o, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", choice);
    cJSON_AddItemToArray(arr, c);
    if (ci->include_usage) cJSON_AddNullToObject(o, "usage");
    *c_out = c;
    return o;
}

/* One token's logprobs as its chunk carries them. */
static cJSON *event_logprobs(const srv_call_info *ci, const srv_event *ev, size_t offset)
{
    if (!ev->has_lp) return NULL;
    cJSON *lp;
    if (ci->kind == SHARDLM_API_CHAT) {
        lp = cJSON_CreateArray();
        cJSON_AddItemToArray(lp, chat_lp_entry(ci, &ev->lp));
    } else {
        lp = cmpl_lp_new();
        cmpl_lp_add(ci, lp, &ev->lp, offset);
    }
    return lp;
}

/* Concatenates SSE texts, freeing them. */
static char *sse_cat(char *a, char *b)
{
    if (!a || !b) {
        free(a);
        return b;
    }
    size_t na = strlen(a), nb = strlen(b);
    char *t = realloc(a, na + nb + 1);
    if (t) memcpy(t + na, b, nb + 1);
    else free(a);
    free(b);
    return t;
}

/* A chat choice with tools: one chunk per delta the parser gives (the
 * token's logprobs on the first), then the finish chunk at the end. */
static char *sse_tools(const srv_call_info *ci, srv_stream_choice *sc, const srv_event *ev, int *nothing)
{
    if (!sc->tp && srv_tools_parser(ci, &sc->tp)) return NULL;
    cJSON *ds = srv_tools_deltas(ci, ev->choice, sc->tp, ev->text, ev->len, ev->is_end);
    if (!ds) return NULL;
    char *out = NULL;
    cJSON *lp = event_logprobs(ci, ev, 0);
    int n = cJSON_GetArraySize(ds);
    if (!n && lp) cJSON_AddItemToArray(ds, cJSON_CreateObject()), n = 1;
    for (int i = 0; i < n; i++) {
        cJSON *c, *o = chunk(ci, ev->choice, &c), *d = cJSON_DetachItemFromArray(ds, 0);
        if (!cJSON_GetArraySize(d) && lp) cJSON_AddStringToObject(d, "content", "");
        cJSON_AddItemToObject(c, "delta", d);
        add_logprobs(ci, c, i == 0 ? lp : NULL);
        add_str_or_null(c, "finish_reason", NULL);
        out = sse_cat(out, sse(o));
    }
    if (!n) cJSON_Delete(lp);
    cJSON_Delete(ds);
    if (ev->is_end) {
        cJSON *c, *o = chunk(ci, ev->choice, &c);
        cJSON_AddObjectToObject(c, "delta");
        add_logprobs(ci, c, NULL);
        add_str_or_null(c, "finish_reason", finish_with_calls(shardlm_finish_reason_str(ev->why), shardlm_toolparse_n_calls(sc->tp)));
        out = sse_cat(out, sse(o));
    }
    *nothing = out == NULL && !ev->is_end;
    return out;
}

char *srv_sse_event(const srv_call_info *ci, srv_stream_choice *sc, const srv_event *ev, int *nothing)
{
    int chat = ci->kind == SHARDLM_API_CHAT;
    *nothing = 0;
    if (chat && ci->tool_format != SHARDLM_TOOLFMT_NONE) return sse_tools(ci, sc, ev, nothing);
    if (!ev->is_end && ev->len == 0 && !ev->has_lp) {
        *nothing = 1;
        return NULL;
    }
    cJSON *c, *o = chunk(ci, ev->choice, &c);
    if (chat) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (!ev->is_end) cJSON_AddStringToObject(d, "content", ev->text);
    } else {
        cJSON_AddStringToObject(c, "text", ev->is_end ? "" : ev->text);
    }
    add_logprobs(ci, c, event_logprobs(ci, ev, sc->text_offset));
    sc->text_offset += ev->len;
    add_str_or_null(c, "finish_reason", ev->is_end ? shardlm_finish_reason_str(ev->why) : NULL);
    return sse(o);
}

char *srv_sse_role(const srv_call_info *ci, int choice)
{
    cJSON *c, *o = chunk(ci, choice, &c);
    cJSON *d = cJSON_AddObjectToObject(c, "delta");
    cJSON_AddStringToObject(d, "role", "assistant");
    cJSON_AddStringToObject(d, "content", "");
    cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddNullToObject(c, "finish_reason");
    return sse(o);
}

char *srv_sse_usage(const srv_call_info *ci, srv_usage u)
{
    int chat = ci->kind == SHARDLM_API_CHAT;
    cJSON *o = envelope(ci, chat ? "chat.completion.chunk" : "text_completion");
    cJSON_AddArrayToObject(o, "choices");
    cJSON_AddItemToObject(o, "usage", usage(u));
    return sse(o);
}

char *srv_sse_error(const shardlm_server_err *e) { return sse_text(shardlm_server_err_json(e)); }

char *srv_body_models(const char *model, long created)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *arr = cJSON_AddArrayToObject(o, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", model);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "shardlm");
    cJSON_AddItemToArray(arr, m);
    return print_free(o);
}
