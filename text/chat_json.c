/* chat_json.c - JSON text -> template values, as transformers.js hands a
 * parsed JSON object to the reference: numbers that are integers become
 * integers (1.0 included), and object keys come in JavaScript's property
 * order (keys that are array indices first, ascending; then the rest in
 * the order written; a repeated key keeps its first place and last value). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "chat_internal.h"

/* A canonical array index ("0", "17"; not "017" or "4294967295"). */
static int index_key(const char *k, double *out)
{
    size_t n = strlen(k);
    if (!n || n > 10 || (n > 1 && k[0] == '0')) return 0;
    double v = 0;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < '0' || k[i] > '9') return 0;
        v = v * 10 + (k[i] - '0');
    }
    if (v >= 4294967295.0) return 0;
    *out = v;
    return 1;
}

static chat_val convert(chat_ctx *r, const cJSON *j, int depth);

static chat_val object(chat_ctx *r, const cJSON *j, int depth)
{
    chat_dict *d = chat_dict_new(r);
    const cJSON *c;
    double lo = -1;
    /* index keys first, smallest first: a pass per index key keeps it simple */
    for (;;) {
        double best = INFINITY, v;
        for (c = j->child; c; c = c->next)
            if (index_key(c->string, &v) && v > lo && v < best) best = v;
        if (best == INFINITY) break;
        for (c = j->child; c; c = c->next)
            if (index_key(c->string, &v) && v == best)
                chat_dict_put(r, d, chat_str_dup(r->e, c->string, strlen(c->string)), convert(r, c, depth + 1));
        lo = best;
    }
    for (c = j->child; c; c = c->next) {
        double v;
        if (!index_key(c->string, &v))
            chat_dict_put(r, d, chat_str_dup(r->e, c->string, strlen(c->string)), convert(r, c, depth + 1));
    }
    return chat_v_dict(d);
}

static chat_val convert(chat_ctx *r, const cJSON *j, int depth)
{
    if (depth > 4 * CHAT_MAX_DEPTH) chat_fail_r(r, "template variables nest too deeply");
    if (cJSON_IsNull(j)) return chat_v_null();
    if (cJSON_IsBool(j)) return chat_v_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double x = j->valuedouble;
        return chat_v_num(x, !(isfinite(x) && x == floor(x)));
    }
    if (cJSON_IsString(j)) return chat_v_str(chat_str_dup(r->e, j->valuestring, strlen(j->valuestring)));
    if (cJSON_IsArray(j)) {
        chat_list *l = chat_list_new(r, 0);
        for (const cJSON *c = j->child; c; c = c->next) chat_list_push(r, l, convert(r, c, depth + 1));
        return chat_v_list(l);
    }
    if (cJSON_IsObject(j)) return object(r, j, depth);
    return chat_v_undef();
}

int chat_json_parse(chat_ctx *r, const char *text, size_t len, chat_val *out, char *why, size_t why_cap)
{
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!j) {
        snprintf(why, why_cap, "not valid JSON");
        return -1;
    }
    /* reachable from the context, so a failure (longjmp) still frees it */
    r->pending_json = j;
    *out = convert(r, j, 0);
    r->pending_json = NULL;
    cJSON_Delete(j);
    return 0;
}
