/* server_resp_tools.c - a chat answer whose text may hold tool calls, as
 * OpenAI writes it: the JSON message {"role", "content", "tool_calls":
 * [{"id", "type": "function", "function": {"name", "arguments"}}]}, and the
 * stream's deltas (a call opens with its index, id, type and name and an
 * empty "arguments"; its arguments follow in pieces; text comes as
 * "content"). Both run the same parser (toolcall_parse.c) over the same
 * text, so they agree. */
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"
#include "shardlm_common.h"

/* The id of call `index` of choice `choice`: from the call's id, so that
 * a stream and a JSON answer to one request could not tell apart how they
 * were made. */
static void call_id(const srv_call_info *ci, int choice, int index, char out[32])
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a of the completion id */
    for (const char *p = ci->id; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    shardlm_toolfmt_call_id(ci->tool_format, h ^ ((uint64_t)choice << 40) ^ (uint64_t)index, out);
}

int srv_tools_parser(const srv_call_info *ci, shardlm_toolparse **out)
{
    return shardlm_toolparse_new(ci->tool_format, ci->tool_names, ci->n_tools, out);
}

/* ---- the JSON answer ---- */

typedef struct {
    const srv_call_info *ci;
    int choice;
    char *content, *args;
    size_t n_content, n_args;
    cJSON *calls, *cur; /* cur: the open call's "function" */
    int oom;
} collect;

static void grow_put(collect *c, char **buf, size_t *n, const char *s, size_t len)
{
    char *t = realloc(*buf, *n + len + 1);
    if (!t) {
        c->oom = 1;
        return;
    }
    memcpy(t + *n, s, len);
    *n += len;
    t[*n] = 0;
    *buf = t;
}

static void close_call(collect *c)
{
    if (c->cur) cJSON_AddStringToObject(c->cur, "arguments", c->args ? c->args : "");
    c->cur = NULL;
    c->n_args = 0;
    if (c->args) c->args[0] = 0;
}

static void collect_event(void *ctx, const shardlm_toolparse_event *ev)
{
    collect *c = ctx;
    if (ev->kind == SHARDLM_TOOLPARSE_CONTENT) {
        grow_put(c, &c->content, &c->n_content, ev->text, ev->len);
    } else if (ev->kind == SHARDLM_TOOLPARSE_ARGS) {
        grow_put(c, &c->args, &c->n_args, ev->text, ev->len);
    } else {
        close_call(c);
        char id[32], *name = strndup(ev->text, ev->len);
        cJSON *call = cJSON_CreateObject();
        call_id(c->ci, c->choice, ev->index, id);
        cJSON_AddStringToObject(call, "id", id);
        cJSON_AddStringToObject(call, "type", "function");
        c->cur = cJSON_AddObjectToObject(call, "function");
        cJSON_AddStringToObject(c->cur, "name", name ? name : "");
        cJSON_AddItemToArray(c->calls, call);
        free(name);
    }
}

cJSON *srv_tools_message(const srv_call_info *ci, int choice, const char *text, size_t len, int *n_calls)
{
    collect c = {ci, choice, NULL, NULL, 0, 0, cJSON_CreateArray(), NULL, 0};
    shardlm_toolparse *p = NULL;
    int rc = srv_tools_parser(ci, &p);
    if (!rc) rc = shardlm_toolparse_feed(p, text ? text : "", len, collect_event, &c);
    if (!rc) rc = shardlm_toolparse_finish(p, collect_event, &c);
    close_call(&c);
    *n_calls = p ? shardlm_toolparse_n_calls(p) : 0;
    shardlm_toolparse_free(p);
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "assistant");
    if (c.n_content || !*n_calls) cJSON_AddStringToObject(m, "content", c.content ? c.content : "");
    else cJSON_AddNullToObject(m, "content");
    if (*n_calls) cJSON_AddItemToObject(m, "tool_calls", c.calls);
    else cJSON_Delete(c.calls);
    free(c.content);
    free(c.args);
    if (rc || c.oom) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

/* ---- the stream's deltas ---- */

typedef struct {
    const srv_call_info *ci;
    int choice;
    cJSON *deltas; /* array of delta objects, in order */
} deltas;

static cJSON *last_tool_delta(cJSON *d, int index)
{
    cJSON *tc = cJSON_GetObjectItemCaseSensitive(d, "tool_calls");
    cJSON *call = tc ? tc->child : NULL, *idx = cJSON_GetObjectItemCaseSensitive(call, "index");
    /* the delta that opens a call stays on its own, as OpenAI sends it */
    return idx && idx->valueint == index && !cJSON_HasObjectItem(call, "id") ? call : NULL;
}

/* Appends text to a string member, creating it. */
static void append_str(cJSON *o, const char *name, const char *s, size_t n)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    size_t have = v && v->valuestring ? strlen(v->valuestring) : 0;
    char *t = malloc(have + n + 1);
    if (!t) return;
    if (have) memcpy(t, v->valuestring, have);
    memcpy(t + have, s, n);
    t[have + n] = 0;
    if (v) cJSON_ReplaceItemInObjectCaseSensitive(o, name, cJSON_CreateString(t));
    else cJSON_AddStringToObject(o, name, t);
    free(t);
}

static void delta_event(void *ctx, const shardlm_toolparse_event *ev)
{
    deltas *ds = ctx;
    cJSON *last = cJSON_GetArrayItem(ds->deltas, cJSON_GetArraySize(ds->deltas) - 1);
    if (ev->kind == SHARDLM_TOOLPARSE_CONTENT) {
        if (!last || !cJSON_HasObjectItem(last, "content")) cJSON_AddItemToArray(ds->deltas, last = cJSON_CreateObject());
        append_str(last, "content", ev->text, ev->len);
        return;
    }
    cJSON *call = ev->kind == SHARDLM_TOOLPARSE_ARGS ? last_tool_delta(last, ev->index) : NULL;
    if (!call) { /* a new delta for this call */
        cJSON *d = cJSON_CreateObject(), *tc = cJSON_AddArrayToObject(d, "tool_calls");
        call = cJSON_CreateObject();
        cJSON_AddNumberToObject(call, "index", ev->index);
        if (ev->kind == SHARDLM_TOOLPARSE_CALL) {
            char id[32], *name = strndup(ev->text, ev->len);
            call_id(ds->ci, ds->choice, ev->index, id);
            cJSON_AddStringToObject(call, "id", id);
            cJSON_AddStringToObject(call, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(call, "function");
            cJSON_AddStringToObject(fn, "name", name ? name : "");
            cJSON_AddStringToObject(fn, "arguments", "");
            free(name);
        } else {
            cJSON_AddObjectToObject(call, "function");
        }
        cJSON_AddItemToArray(tc, call);
        cJSON_AddItemToArray(ds->deltas, d);
        if (ev->kind == SHARDLM_TOOLPARSE_CALL) return;
    }
    append_str(cJSON_GetObjectItemCaseSensitive(call, "function"), "arguments", ev->text, ev->len);
}

cJSON *srv_tools_deltas(const srv_call_info *ci, int choice, shardlm_toolparse *tp, const char *text, size_t len,
                        int final)
{
    deltas ds = {ci, choice, cJSON_CreateArray()};
    int rc = shardlm_toolparse_feed(tp, text, len, delta_event, &ds);
    if (!rc && final) rc = shardlm_toolparse_finish(tp, delta_event, &ds);
    if (rc) {
        cJSON_Delete(ds.deltas);
        return NULL;
    }
    return ds.deltas;
}
