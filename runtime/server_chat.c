/* server_chat.c - what the server hands a chat template, and the bodies of
 * the endpoints that show what the model is fed: POST /apply-template
 * (llama.cpp's: messages in, {"prompt"} out), POST /tokenize (llama.cpp's
 * {"content", "add_special", "parse_special", "with_pieces"}, or vLLM's
 * {"prompt"} / {"messages"} with its answer fields) and POST /detokenize
 * ({"tokens"} -> {"content"}, and vLLM's "prompt" too). Pure request ->
 * response functions, like server_parse.c. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_parse.h"
#include "shardlm_common.h"

#define INVALID "invalid_request_error"

static int bad(shardlm_server_err *e, const char *param, const char *msg)
{
    return shardlm_server_err_set(e, 400, INVALID, NULL, param, "%s %s", param, msg);
}

/* ---- the template's variables ---- */

/* A message as the template sees it: role "developer" is "system", text
 * parts are one string, and a tool call's arguments given as a JSON string
 * become the object templates expect (as llama.cpp does). */
static cJSON *template_message(const cJSON *m, const shardlm_chat_message *checked, size_t i, shardlm_server_err *e,
                               int *rc)
{
    cJSON *out = cJSON_CreateObject();
    const cJSON *f;
    cJSON_ArrayForEach(f, m) {
        if (!strcmp(f->string, "role") || !strcmp(f->string, "content")) continue;
        if (!strcmp(f->string, "tool_calls") && !cJSON_IsNull(f)) {
            char param[64];
            snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
            if (!cJSON_IsArray(f)) return *rc = bad(e, param, "must be an array"), cJSON_Delete(out), NULL;
            cJSON *calls = cJSON_Duplicate(f, 1);
            cJSON *c;
            cJSON_ArrayForEach(c, calls) {
                cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
                if (!cJSON_IsObject(c) || !cJSON_IsObject(fn) ||
                    !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(fn, "name"))) {
                    cJSON_Delete(calls), cJSON_Delete(out);
                    *rc = bad(e, param, "items must be objects with function.name a string");
                    return NULL;
                }
                cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
                cJSON *parsed = cJSON_IsString(args) ? cJSON_Parse(args->valuestring) : NULL;
                if (parsed && cJSON_IsObject(parsed)) cJSON_ReplaceItemInObjectCaseSensitive(fn, "arguments", parsed);
                else cJSON_Delete(parsed);
            }
            cJSON_AddItemToObject(out, "tool_calls", calls);
            continue;
        }
        cJSON_AddItemToObject(out, f->string, cJSON_Duplicate(f, 1));
    }
    /* role and content first, as clients write them */
    cJSON *head = cJSON_CreateObject();
    cJSON_AddStringToObject(head, "role", checked->role);
    if (checked->content) cJSON_AddStringToObject(head, "content", checked->content);
    else cJSON_AddNullToObject(head, "content");
    while (out->child) {
        cJSON *item = cJSON_DetachItemViaPointer(out, out->child);
        cJSON_AddItemToObject(head, item->string, item);
    }
    cJSON_Delete(out);
    return head;
}

int shardlm_server_chat_vars(const void *body, shardlm_server_req *r, shardlm_server_err *e)
{
    const cJSON *o = body;
    int rc = SHARDLM_OK, agp = 1;
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(o, "tools");
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(o, "chat_template_kwargs");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(o, "add_generation_prompt");
    if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools)) return bad(e, "tools", "must be an array");
    if (kw && !cJSON_IsNull(kw) && !cJSON_IsObject(kw)) return bad(e, "chat_template_kwargs", "must be an object");
    if (g && !cJSON_IsNull(g) && !cJSON_IsBool(g)) return bad(e, "add_generation_prompt", "must be a boolean");
    if (cJSON_IsBool(g)) agp = cJSON_IsTrue(g);
    cJSON *vars = cJSON_CreateObject(), *msgs = cJSON_AddArrayToObject(vars, "messages");
    const cJSON *m;
    size_t i = 0;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(o, "messages")) {
        cJSON *tm = template_message(m, &r->msgs[i], i, e, &rc);
        if (!tm) break;
        cJSON_AddItemToArray(msgs, tm);
        i++;
    }
    if (!rc) {
        if (cJSON_IsArray(tools)) cJSON_AddItemToObject(vars, "tools", cJSON_Duplicate(tools, 1));
        cJSON_AddBoolToObject(vars, "add_generation_prompt", agp);
        const cJSON *k;
        if (cJSON_IsObject(kw)) cJSON_ArrayForEach(k, kw) {
                cJSON_DeleteItemFromObjectCaseSensitive(vars, k->string);
                cJSON_AddItemToObject(vars, k->string, cJSON_Duplicate(k, 1));
            }
        if (!(r->chat_vars = cJSON_PrintUnformatted(vars))) rc = SHARDLM_ENOMEM;
    }
    cJSON_Delete(vars);
    return rc;
}

/* ---- the endpoints ---- */

static char *print_and_free(cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *shardlm_server_apply_template(const char *body, size_t len, const shardlm_tokenizer *tok,
                                    const shardlm_chat_template *tpl, shardlm_server_err *e)
{
    shardlm_server_req r;
    char *text = NULL;
    int rc = shardlm_server_parse_loose(SHARDLM_API_CHAT, body, len, shardlm_tokenizer_n_vocab(tok), &r, e);
    if (!rc) rc = shardlm_server_render_chat(&r, tpl, &text, NULL, e);
    shardlm_server_req_free(&r);
    if (rc) return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", text);
    free(text);
    return print_and_free(o);
}

static int get_flag(const cJSON *o, const char *name, int dflt, int *out, shardlm_server_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    *out = dflt;
    if (!v || cJSON_IsNull(v)) return SHARDLM_OK;
    if (!cJSON_IsBool(v)) return bad(e, name, "must be a boolean");
    *out = cJSON_IsTrue(v);
    return SHARDLM_OK;
}

/* One token's text: its bytes, as a string when they are UTF-8, else as
 * an array of byte values (llama.cpp's with_pieces). */
static cJSON *piece_json(const shardlm_tokenizer *tok, int32_t id)
{
    char buf[512];
    size_t n = 0, len = 0;
    const char *raw = shardlm_tokenizer_piece(tok, id, &len);
    unsigned byte;
    if (raw && len == 6 && sscanf(raw, "<0x%2X>", &byte) == 1 && byte >= 0x80) {
        cJSON *a = cJSON_CreateArray();
        cJSON_AddItemToArray(a, cJSON_CreateNumber(byte));
        return a;
    }
    shardlm_detok d;
    shardlm_detok_init(&d);
    n = shardlm_detok_push(tok, &d, id, buf, sizeof buf - 1);
    n += shardlm_detok_flush(&d, buf + n, sizeof buf - 1 - n);
    buf[n < sizeof buf ? n : sizeof buf - 1] = 0;
    return cJSON_CreateString(buf);
}

static int encode_text(const shardlm_tokenizer *tok, const char *s, int add_bos, int special, int32_t **ids, int *n)
{
    size_t len = strlen(s), cap = len + 2, got = 0;
    if (!(*ids = malloc(cap * sizeof **ids))) return SHARDLM_ENOMEM;
    int rc = special ? shardlm_tokenizer_encode_special(tok, s, len, add_bos, *ids, cap, &got)
                     : shardlm_tokenizer_encode(tok, s, len, add_bos, *ids, cap, &got);
    if (!rc && got > cap) rc = SHARDLM_ERUNTIME;
    *n = (int)got;
    return rc;
}

/* vLLM: {"prompt": ..., "add_special_tokens": true} or {"messages": [...]}. */
static int tokenize_vllm(const char *body, size_t len, const cJSON *o, const shardlm_tokenizer *tok,
                         const shardlm_chat_template *tpl, int32_t **ids, int *n, shardlm_server_err *e)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    int add;
    if (p) {
        if (!cJSON_IsString(p)) return bad(e, "prompt", "must be a string");
        if (get_flag(o, "add_special_tokens", 1, &add, e)) return SHARDLM_EINPUT;
        return encode_text(tok, p->valuestring, add, 1, ids, n);
    }
    shardlm_server_req r;
    int rc = shardlm_server_parse_loose(SHARDLM_API_CHAT, body, len, shardlm_tokenizer_n_vocab(tok), &r, e);
    if (!rc) rc = shardlm_server_prompt_ids(&r, tok, tpl, ids, n, e);
    shardlm_server_req_free(&r);
    return rc;
}

char *shardlm_server_tokenize(const char *body, size_t len, const shardlm_tokenizer *tok,
                              const shardlm_chat_template *tpl, int n_ctx, shardlm_server_err *e)
{
    memset(e, 0, sizeof *e);
    cJSON *o = cJSON_ParseWithLength(body, len);
    int32_t *ids = NULL;
    int n = 0, rc = SHARDLM_OK, pieces = 0, add = 0, special = 1;
    const cJSON *content = o ? cJSON_GetObjectItemCaseSensitive(o, "content") : NULL;
    int vllm = o && !content && (cJSON_GetObjectItemCaseSensitive(o, "prompt") ||
                                 cJSON_GetObjectItemCaseSensitive(o, "messages"));
    if (!o || !cJSON_IsObject(o)) {
        rc = shardlm_server_err_set(e, 400, INVALID, NULL, NULL, "the body must be a JSON object");
    } else if (vllm) {
        rc = tokenize_vllm(body, len, o, tok, tpl, &ids, &n, e);
    } else if (!cJSON_IsString(content)) {
        rc = bad(e, "content", content ? "must be a string" : "is required (or vLLM's prompt or messages)");
    } else if (!(rc = get_flag(o, "add_special", 0, &add, e)) && !(rc = get_flag(o, "parse_special", 1, &special, e)) &&
               !(rc = get_flag(o, "with_pieces", 0, &pieces, e))) {
        rc = encode_text(tok, content->valuestring, add, special, &ids, &n);
    }
    cJSON_Delete(o);
    if (rc && e->status == 0)
        shardlm_server_err_set(e, 500, "server_error", NULL, NULL, "cannot tokenize: %s", shardlm_err_get());
    if (rc) {
        free(ids);
        return NULL;
    }
    cJSON *out = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(out, "tokens");
    for (int i = 0; i < n; i++) {
        if (!pieces) {
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
            continue;
        }
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", ids[i]);
        cJSON_AddItemToObject(t, "piece", piece_json(tok, ids[i]));
        cJSON_AddItemToArray(arr, t);
    }
    if (vllm) {
        cJSON_AddNumberToObject(out, "count", n);
        if (n_ctx > 0) cJSON_AddNumberToObject(out, "max_model_len", n_ctx);
        cJSON_AddNullToObject(out, "token_strs");
    }
    free(ids);
    return print_and_free(out);
}

char *shardlm_server_detokenize(const char *body, size_t len, const shardlm_tokenizer *tok, shardlm_server_err *e)
{
    cJSON *o = cJSON_ParseWithLength(body, len);
    const cJSON *t = o ? cJSON_GetObjectItemCaseSensitive(o, "tokens") : NULL;
    int nv = shardlm_tokenizer_n_vocab(tok);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        shardlm_server_err_set(e, 400, INVALID, NULL, NULL, "the body must be a JSON object");
        return NULL;
    }
    if (!cJSON_IsArray(t)) {
        cJSON_Delete(o);
        bad(e, "tokens", t ? "must be an array of token ids" : "is required");
        return NULL;
    }
    size_t cap = 256, n = 0;
    char *text = malloc(cap);
    shardlm_detok d;
    shardlm_detok_init(&d);
    const cJSON *x;
    int i = 0;
    cJSON_ArrayForEach(x, t) {
        double v = x->valuedouble;
        if (!cJSON_IsNumber(x) || v != floor(v) || v < 0 || v >= nv) {
            shardlm_server_err_set(e, 400, INVALID, NULL, "tokens", "tokens[%d] is not a token id in [0, %d)", i, nv);
            free(text), text = NULL;
            break;
        }
        char buf[512];
        size_t k = shardlm_detok_push(tok, &d, (int32_t)v, buf, sizeof buf);
        if (k > sizeof buf) k = sizeof buf;
        char *nt = n + k + 16 > cap ? realloc(text, cap = (n + k + 16) * 2) : text;
        if (!nt) {
            free(text), text = NULL;
            shardlm_server_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
            break;
        }
        text = nt;
        memcpy(text + n, buf, k), n += k, i++;
    }
    cJSON_Delete(o);
    if (!text) return NULL;
    n += shardlm_detok_flush(&d, text + n, 15);
    text[n] = 0;
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "content", text);
    cJSON_AddStringToObject(out, "prompt", text);
    free(text);
    return print_and_free(out);
}
