/* json_schema.c - JSON Schema -> GBNF (strict): one rule per schema node,
 * with objects, arrays, enums, anyOf/oneOf and local $refs here, and the
 * leaves (strings, numbers, shared primitives) in json_schema_prim.c.
 *
 * Objects follow OpenAI's strict mode: properties come in declaration
 * order, each required one always, each optional one maybe, and no others.
 * A keyword this compiler does not know, or one it cannot honour exactly,
 * is refused with its name and place, never skipped: the grammar only ever
 * produces documents that validate. oneOf is accepted when its branches are
 * provably disjoint (different types, different enum/const values, or
 * objects told apart by a required property with different const values),
 * since a document matching two branches would not validate. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar.h"
#include "json_schema_internal.h"
#include "shardlm_common.h"

static const char *const annotations[] = {"title", "description", "$schema", "$id", "$comment", "examples",
                                          "default", "deprecated", "readOnly", "writeOnly", "$defs",
                                          "definitions", NULL};
static const char *const known[] = {"type", "properties", "required", "additionalProperties", "items",
                                    "minItems", "maxItems", "uniqueItems", "enum", "const", "anyOf", "oneOf",
                                    "$ref", "minLength", "maxLength", "pattern", "format", "minimum", "maximum",
                                    "exclusiveMinimum", "exclusiveMaximum", NULL};

static int in_list(const char *k, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (!strcmp(k, list[i])) return 1;
    return 0;
}

static int gen(js_ctx *j, const cJSON *s, const char *path, int depth, char *out);

/* path + "/" + key, with JSON Pointer escapes (~0, ~1). */
static void child_path(char *dst, const char *path, const char *a, const char *key)
{
    size_t n = (size_t)snprintf(dst, JS_PATH_MAX, "%s/%s%s", path, a, key ? "/" : "");
    for (const char *k = key; k && *k && n + 3 < JS_PATH_MAX; k++) {
        if (*k == '~' || *k == '/') {
            dst[n++] = '~';
            dst[n++] = *k == '~' ? '0' : '1';
        } else {
            dst[n++] = *k;
        }
    }
    dst[n < JS_PATH_MAX ? n : JS_PATH_MAX - 1] = 0;
}

static int check_keywords(js_ctx *j, const cJSON *s, const char *path)
{
    const cJSON *k;
    cJSON_ArrayForEach(k, s) {
        if (!strcmp(k->string, "$id") && strcmp(path, "#"))
            return js_fail(j, "\"$id\" at %s is not supported (only at the root)", path);
        if (!in_list(k->string, annotations) && !in_list(k->string, known))
            return js_fail(j, "\"%.64s\" at %s is not supported", k->string, path);
    }
    return 0;
}

/* Only annotations (and the keywords in also) may stand next to kw. */
static int check_alone(js_ctx *j, const cJSON *s, const char *kw, const char *also, const char *path)
{
    const cJSON *k;
    cJSON_ArrayForEach(k, s) {
        if (!strcmp(k->string, kw) || in_list(k->string, annotations) || (also && !strcmp(k->string, also)))
            continue;
        return js_fail(j, "\"%.64s\" next to \"%s\" at %s is not supported", k->string, kw, path);
    }
    return 0;
}

/* Appends "name ::= expr\n" and takes the name for out. */
static int emit_rule(js_ctx *j, const char *hint, js_sb *expr, char *out)
{
    js_new_name(j, hint, out);
    js_sb_fmt(&j->out, "%s ::= ", out);
    js_sb_addn(&j->out, expr->s ? expr->s : "\"\"", expr->s ? expr->n : 2);
    js_sb_add(&j->out, "\n");
    int oom = expr->oom;
    free(expr->s);
    memset(expr, 0, sizeof *expr);
    return oom ? SHARDLM_ENOMEM : 0;
}

/* ---- $ref ---- */

static const cJSON *resolve(const cJSON *root, const char *ptr)
{
    if (!strcmp(ptr, "#")) return root;
    if (strncmp(ptr, "#/", 2)) return NULL;
    const cJSON *cur = root;
    const char *p = ptr + 2;
    while (cur && *p) {
        char tok[256];
        size_t n = 0;
        for (; *p && *p != '/' && n + 1 < sizeof tok; p++) {
            if (*p == '~' && (p[1] == '0' || p[1] == '1')) tok[n++] = p[1] == '0' ? '~' : '/', p++;
            else tok[n++] = *p;
        }
        tok[n] = 0;
        if (*p == '/') p++;
        if (cJSON_IsArray(cur)) {
            char *end;
            long i = strtol(tok, &end, 10);
            cur = *end || !n ? NULL : cJSON_GetArrayItem(cur, (int)i);
        } else {
            cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
        }
    }
    return cur;
}

static int ref_rule(js_ctx *j, const cJSON *ref, const char *path, int depth, char *out)
{
    if (!cJSON_IsString(ref)) return js_fail(j, "\"$ref\" at %s must be a string", path);
    const char *ptr = ref->valuestring;
    if (ptr[0] != '#')
        return js_fail(j, "\"$ref\": \"%.64s\" at %s refers to another document, which is not supported", ptr, path);
    if (strlen(ptr) >= JS_PATH_MAX) return js_fail(j, "\"$ref\" at %s is too long", path);
    for (size_t i = 0; i < j->n_refs; i++)
        if (!strcmp(j->refs[i].ptr, ptr)) {
            snprintf(out, JS_NAME_MAX, "%s", j->refs[i].rule);
            return 0;
        }
    const cJSON *target = resolve(j->root, ptr);
    if (!target) return js_fail(j, "\"$ref\": \"%.64s\" at %s does not resolve", ptr, path);
    if (j->n_refs == j->cap_refs) {
        size_t cap = j->cap_refs ? j->cap_refs * 2 : 8;
        js_ref *r = realloc(j->refs, cap * sizeof *r);
        if (!r) return SHARDLM_ENOMEM;
        j->refs = r;
        j->cap_refs = cap;
    }
    js_ref *r = &j->refs[j->n_refs++];
    snprintf(r->ptr, sizeof r->ptr, "%s", ptr);
    js_new_name(j, "ref", r->rule); /* named before its body, so recursion refers to it */
    char rule[JS_NAME_MAX], body[JS_NAME_MAX];
    snprintf(rule, sizeof rule, "%s", r->rule);
    if (gen(j, target, ptr, depth + 1, body)) return SHARDLM_EINPUT;
    js_sb_fmt(&j->out, "%s ::= %s\n", rule, body);
    snprintf(out, JS_NAME_MAX, "%s", rule);
    return 0;
}

/* ---- enum and const ---- */

enum { T_OBJ = 1, T_ARR = 2, T_STR = 4, T_INT = 8, T_FRAC = 16, T_BOOL = 32, T_NULL = 64, T_ALL = 127 };

static unsigned type_bit(const char *t)
{
    return !strcmp(t, "object") ? T_OBJ : !strcmp(t, "array") ? T_ARR : !strcmp(t, "string") ? T_STR
           : !strcmp(t, "integer") ? T_INT : !strcmp(t, "number") ? T_INT | T_FRAC
           : !strcmp(t, "boolean") ? T_BOOL : !strcmp(t, "null") ? T_NULL : 0;
}

static unsigned value_bit(const cJSON *v)
{
    if (cJSON_IsObject(v)) return T_OBJ;
    if (cJSON_IsArray(v)) return T_ARR;
    if (cJSON_IsString(v)) return T_STR;
    if (cJSON_IsNumber(v)) return v->valuedouble == floor(v->valuedouble) ? T_INT : T_FRAC;
    if (cJSON_IsBool(v)) return T_BOOL;
    return T_NULL;
}

/* The type keyword as bits (T_ALL when absent); 0 after an error. */
static unsigned type_bits(js_ctx *j, const cJSON *s, const char *path)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (!t) return T_ALL;
    unsigned bits = 0;
    if (cJSON_IsString(t)) bits = type_bit(t->valuestring);
    const cJSON *x = NULL;
    if (cJSON_IsArray(t)) cJSON_ArrayForEach(x, t) {
            unsigned b = cJSON_IsString(x) ? type_bit(x->valuestring) : 0;
            if (!b) break;
            bits |= b;
        }
    if (!bits || (cJSON_IsArray(t) && x)) {
        js_fail(j, "\"type\" at %s must be one of object, array, string, integer, number, boolean, null (or a list "
                   "of them)", path);
        return 0;
    }
    return bits;
}

static int enum_rule(js_ctx *j, const cJSON *s, const char *path, char *out)
{
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum"), *cn = cJSON_GetObjectItemCaseSensitive(s, "const");
    if (en && cn) return js_fail(j, "\"enum\" together with \"const\" at %s is not supported", path);
    if (en && (!cJSON_IsArray(en) || !cJSON_GetArraySize(en)))
        return js_fail(j, "\"enum\" at %s must be a non-empty array", path);
    if (check_alone(j, s, en ? "enum" : "const", "type", path)) return SHARDLM_EINPUT;
    unsigned types = type_bits(j, s, path);
    if (!types) return SHARDLM_EINPUT;
    js_sb e = {0};
    int n = 0;
    const cJSON *v;
    for (v = en ? en->child : cn; v; v = en ? v->next : NULL) {
        if (!(value_bit(v) & types)) continue;
        char *txt = cJSON_PrintUnformatted(v);
        if (!txt) {
            free(e.s);
            return SHARDLM_ENOMEM;
        }
        js_sb_add(&e, n++ ? " | " : "");
        js_sb_lit(&e, txt, strlen(txt));
        free(txt);
    }
    if (!n) {
        free(e.s);
        return js_fail(j, "\"%s\" at %s has no value of the schema's \"type\"", en ? "enum" : "const", path);
    }
    return emit_rule(j, "enum", &e, out);
}

/* ---- oneOf: branches must be told apart ---- */

typedef struct {
    unsigned types;
    const cJSON *values; /* enum array, or a const value (one) */
    int one;             /* values is a single const value */
    const cJSON *schema; /* after $ref hops */
} js_sig;

static js_sig sig_of(js_ctx *j, const cJSON *s)
{
    js_sig g = {T_ALL, NULL, 0, NULL};
    for (int hop = 0; hop < JS_MAX_DEPTH && cJSON_IsObject(s) && cJSON_HasObjectItem(s, "$ref"); hop++) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(s, "$ref");
        s = cJSON_IsString(r) ? resolve(j->root, r->valuestring) : NULL;
    }
    g.schema = s;
    if (!cJSON_IsObject(s)) return g;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (cJSON_IsString(t)) g.types = type_bit(t->valuestring);
    const cJSON *x;
    if (cJSON_IsArray(t)) {
        g.types = 0;
        cJSON_ArrayForEach(x, t) g.types |= cJSON_IsString(x) ? type_bit(x->valuestring) : T_ALL;
    }
    if ((x = cJSON_GetObjectItemCaseSensitive(s, "const"))) g.values = x, g.one = 1;
    if ((x = cJSON_GetObjectItemCaseSensitive(s, "enum")) && cJSON_IsArray(x)) g.values = x, g.one = 0;
    if (g.values) {
        unsigned vb = 0;
        const cJSON *v;
        if (g.one) vb = value_bit(g.values);
        else cJSON_ArrayForEach(v, g.values) vb |= value_bit(v);
        g.types &= vb;
    }
    return g;
}

static int value_in(const cJSON *v, const js_sig *g)
{
    if (g->one) return cJSON_Compare(v, g->values, 1);
    const cJSON *w;
    cJSON_ArrayForEach(w, g->values)
        if (cJSON_Compare(v, w, 1)) return 1;
    return 0;
}

static int values_disjoint(const js_sig *a, const js_sig *b)
{
    if (a->one) return !value_in(a->values, b);
    const cJSON *v;
    cJSON_ArrayForEach(v, a->values)
        if (value_in(v, b)) return 0;
    return 1;
}

static int is_required(const cJSON *s, const char *name)
{
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(s, "required"))
        if (cJSON_IsString(r) && !strcmp(r->valuestring, name)) return 1;
    return 0;
}

/* Objects that both require a property whose const/enum values differ. */
static int discriminated(js_ctx *j, const js_sig *a, const js_sig *b)
{
    if (a->types != T_OBJ || b->types != T_OBJ) return 0;
    const cJSON *pa = cJSON_GetObjectItemCaseSensitive(a->schema, "properties");
    const cJSON *pb = cJSON_GetObjectItemCaseSensitive(b->schema, "properties"), *p;
    cJSON_ArrayForEach(p, pa) {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(pb, p->string);
        if (!q || !is_required(a->schema, p->string) || !is_required(b->schema, p->string)) continue;
        js_sig x = sig_of(j, p), y = sig_of(j, q);
        if ((!(x.types & y.types)) || (x.values && y.values && values_disjoint(&x, &y))) return 1;
    }
    return 0;
}

static int check_one_of(js_ctx *j, const cJSON *arr, const char *path)
{
    int n = cJSON_GetArraySize(arr);
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++) {
            js_sig x = sig_of(j, cJSON_GetArrayItem(arr, a)), y = sig_of(j, cJSON_GetArrayItem(arr, b));
            if (!(x.types & y.types)) continue;
            if (x.values && y.values && values_disjoint(&x, &y)) continue;
            if (discriminated(j, &x, &y)) continue;
            return js_fail(j, "\"oneOf\" at %s: branches %d and %d may both match, so a document could fail "
                              "oneOf (use anyOf, or tell them apart by type, const or enum)", path, a, b);
        }
    return 0;
}

static int any_of_rule(js_ctx *j, const cJSON *s, const char *kw, const char *path, int depth, char *out)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(s, kw);
    if (!cJSON_IsArray(arr) || !cJSON_GetArraySize(arr))
        return js_fail(j, "\"%s\" at %s must be a non-empty array of schemas", kw, path);
    if (check_alone(j, s, kw, NULL, path)) return SHARDLM_EINPUT;
    if (!strcmp(kw, "oneOf") && check_one_of(j, arr, path)) return SHARDLM_EINPUT;
    js_sb e = {0};
    int i = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, arr) {
        char sub[JS_PATH_MAX], name[JS_NAME_MAX], idx[16];
        snprintf(idx, sizeof idx, "%d", i);
        child_path(sub, path, kw, idx);
        if (gen(j, b, sub, depth + 1, name)) {
            free(e.s);
            return SHARDLM_EINPUT;
        }
        js_sb_fmt(&e, "%s%s", i++ ? " | " : "", name);
    }
    return emit_rule(j, "alt", &e, out);
}

/* ---- objects ---- */

typedef struct {
    const char *name;
    const cJSON *schema; /* NULL: any value (required but not in properties) */
    int required;
} js_prop;

static int object_free_form(js_ctx *j, const cJSON *ap, const char *path, int depth, js_sb *e)
{
    char ws[JS_NAME_MAX], str[JS_NAME_MAX], v[JS_NAME_MAX], sub[JS_PATH_MAX];
    js_prim(j, JP_WS, ws);
    if (cJSON_IsFalse(ap)) {
        js_sb_fmt(e, "\"{\" %s \"}\"", ws);
        return 0;
    }
    if (!ap || cJSON_IsTrue(ap)) {
        js_sb_add(e, js_prim(j, JP_OBJECT, v));
        return 0;
    }
    child_path(sub, path, "additionalProperties", NULL);
    if (gen(j, ap, sub, depth + 1, v)) return SHARDLM_EINPUT;
    js_prim(j, JP_STRING, str);
    js_sb_fmt(e, "\"{\" %s ( %s %s \":\" %s %s %s ( \",\" %s %s %s \":\" %s %s %s )* )? \"}\"", ws, str, ws, ws, v, ws,
              ws, str, ws, ws, v, ws);
    return 0;
}

static int collect_props(js_ctx *j, const cJSON *s, const char *path, js_prop **out, int *n)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required"), *x;
    if (props && !cJSON_IsObject(props)) return js_fail(j, "\"properties\" at %s must be an object", path);
    if (req && !cJSON_IsArray(req)) return js_fail(j, "\"required\" at %s must be an array of strings", path);
    cJSON_ArrayForEach(x, req)
        if (!cJSON_IsString(x)) return js_fail(j, "\"required\" at %s must be an array of strings", path);
    int cap = cJSON_GetArraySize(props) + cJSON_GetArraySize(req) + 1;
    js_prop *p = calloc((size_t)cap, sizeof *p);
    if (!p) return SHARDLM_ENOMEM;
    *out = p;
    *n = 0;
    cJSON_ArrayForEach(x, props) p[(*n)++] = (js_prop){x->string, x, is_required(s, x->string)};
    cJSON_ArrayForEach(x, req) {
        int dup = 0;
        for (int i = 0; i < *n; i++) dup |= !strcmp(p[i].name, x->valuestring);
        if (!dup) p[(*n)++] = (js_prop){x->valuestring, NULL, 1};
    }
    return 0;
}

/* One member: "key" ws ":" ws value ws, as a rule. */
static int member_rule(js_ctx *j, const js_prop *p, const char *path, int depth, char *out)
{
    char ws[JS_NAME_MAX], v[JS_NAME_MAX], sub[JS_PATH_MAX];
    js_prim(j, JP_WS, ws);
    if (p->schema) {
        child_path(sub, path, "properties", p->name);
        if (gen(j, p->schema, sub, depth + 1, v)) return SHARDLM_EINPUT;
    } else {
        js_prim(j, JP_VALUE, v);
    }
    cJSON *key = cJSON_CreateString(p->name);
    char *txt = key ? cJSON_PrintUnformatted(key) : NULL;
    cJSON_Delete(key);
    if (!txt) return SHARDLM_ENOMEM;
    js_sb e = {0};
    js_sb_lit(&e, txt, strlen(txt));
    free(txt);
    js_sb_fmt(&e, " %s \":\" %s %s %s", ws, ws, v, ws);
    return emit_rule(j, "kv", &e, out);
}

/* Members in declaration order: rest[i] is what may follow once at least
 * one member was written (each item with its leading comma). */
static int members_expr(js_ctx *j, const js_prop *p, int n, const char *path, int depth, js_sb *e)
{
    char (*kv)[JS_NAME_MAX] = calloc((size_t)n, sizeof *kv), (*rest)[JS_NAME_MAX] = calloc((size_t)n + 1, sizeof *rest);
    char ws[JS_NAME_MAX];
    js_prim(j, JP_WS, ws);
    int rc = kv && rest ? 0 : SHARDLM_ENOMEM;
    for (int i = 0; !rc && i < n; i++) rc = member_rule(j, &p[i], path, depth, kv[i]);
    for (int i = n - 1; !rc && i >= 1; i--) {
        js_sb r = {0};
        js_sb_fmt(&r, p[i].required ? "\",\" %s %s" : "( \",\" %s %s )?", ws, kv[i]);
        if (rest[i + 1][0]) js_sb_fmt(&r, " %s", rest[i + 1]);
        rc = emit_rule(j, "rest", &r, rest[i]);
    }
    int first = 1, alts = 0;
    for (int i = 0; !rc && i < n; i++) {
        js_sb_fmt(e, "%s%s%s%s", first ? "( " : " | ", kv[i], rest[i + 1][0] ? " " : "", rest[i + 1]);
        first = 0;
        alts++;
        if (p[i].required) break;
    }
    if (!rc) {
        int any_required = 0;
        for (int i = 0; i < n; i++) any_required |= p[i].required;
        js_sb_add(e, any_required ? " )" : " )?");
    }
    free(kv);
    free(rest);
    (void)alts;
    return rc;
}

static int object_expr(js_ctx *j, const cJSON *s, const char *path, int depth, js_sb *e)
{
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    if (ap && !cJSON_IsBool(ap) && !cJSON_IsObject(ap))
        return js_fail(j, "\"additionalProperties\" at %s must be a boolean or a schema", path);
    js_prop *p = NULL;
    int n = 0, rc = collect_props(j, s, path, &p, &n);
    if (!rc && !n) rc = object_free_form(j, ap, path, depth, e);
    else if (!rc) {
        char ws[JS_NAME_MAX];
        js_sb_fmt(e, "\"{\" %s ", js_prim(j, JP_WS, ws));
        rc = members_expr(j, p, n, path, depth, e);
        js_sb_add(e, " \"}\"");
    }
    free(p);
    return rc;
}

/* ---- arrays ---- */

static int get_count(js_ctx *j, const cJSON *s, const char *key, const char *path, long *v)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!x) return 0;
    if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble != floor(x->valuedouble))
        return js_fail(j, "\"%s\" at %s must be a non-negative integer", key, path);
    if (x->valuedouble > JS_MAX_BOUND)
        return js_fail(j, "\"%s\" at %s is %.0f; at most %d is supported", key, path, x->valuedouble, JS_MAX_BOUND);
    *v = (long)x->valuedouble;
    return 0;
}

static int array_expr(js_ctx *j, const cJSON *s, const char *path, int depth, js_sb *e)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    const cJSON *uniq = cJSON_GetObjectItemCaseSensitive(s, "uniqueItems");
    if (uniq && !cJSON_IsBool(uniq)) return js_fail(j, "\"uniqueItems\" at %s must be a boolean", path);
    if (cJSON_IsTrue(uniq)) return js_fail(j, "\"uniqueItems\": true at %s is not supported", path);
    if (cJSON_IsArray(items))
        return js_fail(j, "\"items\" as an array (a tuple) at %s is not supported", path);
    long min = 0, max = -1;
    if (get_count(j, s, "minItems", path, &min) || get_count(j, s, "maxItems", path, &max)) return SHARDLM_EINPUT;
    if (cJSON_IsFalse(items)) max = 0;
    if (max >= 0 && min > max) return js_fail(j, "\"minItems\" at %s is greater than \"maxItems\"", path);
    char ws[JS_NAME_MAX], v[JS_NAME_MAX], sub[JS_PATH_MAX];
    js_prim(j, JP_WS, ws);
    if (max == 0) {
        js_sb_fmt(e, "\"[\" %s \"]\"", ws);
        return 0;
    }
    if (!items || cJSON_IsTrue(items)) {
        js_prim(j, JP_VALUE, v);
    } else {
        child_path(sub, path, "items", NULL);
        if (gen(j, items, sub, depth + 1, v)) return SHARDLM_EINPUT;
    }
    long lo = min > 0 ? min - 1 : 0;
    js_sb_fmt(e, "\"[\" %s %s%s %s ( \",\" %s %s %s )", ws, min ? "" : "( ", v, ws, ws, v, ws);
    if (max < 0) js_sb_fmt(e, "{%ld,}", lo);
    else js_sb_fmt(e, "{%ld,%ld}", lo, max - 1);
    js_sb_fmt(e, "%s \"]\"", min ? "" : " )?");
    return 0;
}

/* ---- one schema ---- */

static unsigned inferred_types(const cJSON *s)
{
    static const char *const obj[] = {"properties", "required", "additionalProperties", NULL};
    static const char *const arr[] = {"items", "minItems", "maxItems", "uniqueItems", NULL};
    static const char *const str[] = {"minLength", "maxLength", "pattern", "format", NULL};
    static const char *const num[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", NULL};
    unsigned t = 0;
    const cJSON *k;
    cJSON_ArrayForEach(k, s) {
        if (in_list(k->string, obj)) t |= T_OBJ;
        if (in_list(k->string, arr)) t |= T_ARR;
        if (in_list(k->string, str)) t |= T_STR;
        if (in_list(k->string, num)) t |= T_INT | T_FRAC;
    }
    return t ? t : T_ALL;
}

static int typed_rule(js_ctx *j, const cJSON *s, const char *path, int depth, char *out)
{
    unsigned t = cJSON_HasObjectItem(s, "type") ? type_bits(j, s, path) : inferred_types(s);
    if (!t) return SHARDLM_EINPUT;
    char n[JS_NAME_MAX];
    if (t == T_ALL) {
        snprintf(out, JS_NAME_MAX, "%s", js_prim(j, JP_VALUE, n));
        return 0;
    }
    js_sb e = {0};
    int rc = 0, k = 0;
    if (!rc && (t & T_OBJ)) js_sb_add(&e, k++ ? " | " : ""), rc = object_expr(j, s, path, depth, &e);
    if (!rc && (t & T_ARR)) js_sb_add(&e, k++ ? " | " : ""), rc = array_expr(j, s, path, depth, &e);
    if (!rc && (t & T_STR)) js_sb_add(&e, k++ ? " | " : ""), rc = js_string_expr(j, s, path, &e);
    if (!rc && (t & T_FRAC)) js_sb_add(&e, k++ ? " | " : ""), rc = js_number_expr(j, s, path, &e);
    else if (!rc && (t & T_INT)) js_sb_add(&e, k++ ? " | " : ""), rc = js_integer_expr(j, s, path, &e);
    if (!rc && (t & T_BOOL)) js_sb_fmt(&e, "%s%s", k++ ? " | " : "", js_prim(j, JP_BOOLEAN, n));
    if (!rc && (t & T_NULL)) js_sb_fmt(&e, "%s%s", k++ ? " | " : "", js_prim(j, JP_NULL, n));
    if (rc) {
        free(e.s);
        return rc;
    }
    return emit_rule(j, "v", &e, out);
}

static int gen(js_ctx *j, const cJSON *s, const char *path, int depth, char *out)
{
    char n[JS_NAME_MAX];
    if (j->failed) return SHARDLM_EINPUT;
    if (depth > JS_MAX_DEPTH) return js_fail(j, "the schema at %s is nested more than %d deep", path, JS_MAX_DEPTH);
    if (cJSON_IsTrue(s)) {
        snprintf(out, JS_NAME_MAX, "%s", js_prim(j, JP_VALUE, n));
        return 0;
    }
    if (cJSON_IsFalse(s)) return js_fail(j, "the schema false at %s matches nothing", path);
    if (!cJSON_IsObject(s)) return js_fail(j, "the schema at %s must be an object or a boolean", path);
    if (check_keywords(j, s, path)) return SHARDLM_EINPUT;
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    if (ref) return check_alone(j, s, "$ref", NULL, path) ? SHARDLM_EINPUT : ref_rule(j, ref, path, depth, out);
    if (cJSON_HasObjectItem(s, "enum") || cJSON_HasObjectItem(s, "const")) return enum_rule(j, s, path, out);
    if (cJSON_HasObjectItem(s, "anyOf") && cJSON_HasObjectItem(s, "oneOf"))
        return js_fail(j, "\"anyOf\" together with \"oneOf\" at %s is not supported", path);
    if (cJSON_HasObjectItem(s, "anyOf")) return any_of_rule(j, s, "anyOf", path, depth, out);
    if (cJSON_HasObjectItem(s, "oneOf")) return any_of_rule(j, s, "oneOf", path, depth, out);
    return typed_rule(j, s, path, depth, out);
}

/* ---- public ---- */

int shardlm_json_schema_gbnf(const cJSON *schema, const char *name, char **buf, size_t *len, char *why, size_t cap)
{
    js_ctx j = {.root = schema, .name = name, .why = why, .cap = cap};
    j.out = (js_sb){*buf, *len, *len, 0};
    if (why && cap) why[0] = 0;
    char top[JS_NAME_MAX];
    int rc = gen(&j, schema, "#", 0, top);
    if (!rc) {
        js_sb_fmt(&j.out, "%s ::= %s\n", name, top);
        js_emit_prims(&j);
    }
    free(j.refs);
    if (!rc && j.out.oom) rc = SHARDLM_ENOMEM;
    if (rc == SHARDLM_ENOMEM && why && cap) snprintf(why, cap, "out of memory compiling the JSON Schema");
    *buf = j.out.s;
    *len = j.out.n;
    return rc ? rc : j.failed ? SHARDLM_EINPUT : SHARDLM_OK;
}

int shardlm_json_schema_grammar(const cJSON *schema, shardlm_grammar **out, char *why, size_t cap)
{
    *out = NULL;
    cJSON *any = NULL;
    if (!schema) {
        any = cJSON_CreateObject();
        if (!any || !cJSON_AddStringToObject(any, "type", "object")) {
            cJSON_Delete(any);
            return SHARDLM_ENOMEM;
        }
        schema = any;
    }
    char *buf = strdup("root ::= json\n");
    size_t len = buf ? strlen(buf) : 0;
    int rc = buf ? shardlm_json_schema_gbnf(schema, "json", &buf, &len, why, cap) : SHARDLM_ENOMEM;
    cJSON_Delete(any);
    if (!rc) {
        char err[512];
        rc = shardlm_grammar_compile(buf, len, out, err, sizeof err);
        if (rc == SHARDLM_EINPUT && why && cap) {
            if (strstr(err, "left-recursive"))
                snprintf(why, cap, "the schema reaches itself through \"$ref\" before any JSON text");
            else
                snprintf(why, cap, "the schema's grammar does not compile (%s)", err);
        }
    }
    free(buf);
    return rc;
}

int shardlm_grammar_from_file(const char *path, int json_schema, shardlm_grammar **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        shardlm_err_set("%s: cannot open the file", path);
        return SHARDLM_EINPUT;
    }
    char *text = NULL;
    size_t len = 0, cap = 0, k;
    char chunk[65536];
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0 && len + k <= (64u << 20)) {
        if (len + k + 1 > cap) {
            cap = (len + k + 1) * 2;
            char *t = realloc(text, cap);
            if (!t) {
                free(text);
                fclose(f);
                return SHARDLM_ENOMEM;
            }
            text = t;
        }
        memcpy(text + len, chunk, k);
        len += k;
    }
    fclose(f);
    if (!text && !(text = calloc(1, 1))) return SHARDLM_ENOMEM;
    text[len] = 0;
    char why[512];
    int rc;
    if (json_schema) {
        cJSON *s = cJSON_ParseWithLength(text, len);
        rc = s ? shardlm_json_schema_grammar(s, out, why, sizeof why) : SHARDLM_EINPUT;
        if (!s) snprintf(why, sizeof why, "not valid JSON");
        cJSON_Delete(s);
    } else {
        rc = shardlm_grammar_compile(text, len, out, why, sizeof why);
    }
    free(text);
    if (rc) shardlm_err_set("%s: %s", path, why);
    return rc;
}
