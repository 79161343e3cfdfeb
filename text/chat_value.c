/* chat_value.c - the chat-template value type as @huggingface/jinja has
 * it: numbers are JavaScript doubles (tagged integer or float), == is
 * JavaScript's loose equality on the values (objects and arrays by
 * identity), {{ }} prints true/false, arrays and objects as JSON (with
 * undefined for missing items), undefined and none as nothing; tojson is
 * JSON.stringify with Python's separators (", " and ": ", or "," when
 * indenting) and no HTML escaping. Also dicts (insertion order), lists and
 * the string builder. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_internal.h"

chat_val chat_v_str(chat_str s) { return (chat_val){.kind = CV_STR, .s = s}; }
chat_val chat_v_strz(const char *z) { return chat_v_str((chat_str){z, strlen(z)}); }
chat_val chat_v_int(double i) { return (chat_val){.kind = CV_INT, .num = i}; }
chat_val chat_v_float(double f) { return (chat_val){.kind = CV_FLOAT, .num = f}; }
chat_val chat_v_num(double x, int is_float) { return is_float ? chat_v_float(x) : chat_v_int(x); }
chat_val chat_v_bool(int b) { return (chat_val){.kind = CV_BOOL, .b = b != 0}; }
chat_val chat_v_undef(void) { return (chat_val){.kind = CV_UNDEF}; }
chat_val chat_v_null(void) { return (chat_val){.kind = CV_NULL}; }
chat_val chat_v_list(chat_list *l) { return (chat_val){.kind = CV_ARRAY, .l = l}; }
chat_val chat_v_dict(chat_dict *d) { return (chat_val){.kind = CV_OBJECT, .d = d}; }

/* ---- string builder ---- */

void chat_sb_put(chat_sb *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 32;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = chat_alloc(b->e, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void chat_sb_putz(chat_sb *b, const char *z) { chat_sb_put(b, z, strlen(z)); }
chat_str chat_sb_str(const chat_sb *b) { return (chat_str){b->n ? b->p : "", b->n}; }

/* ---- lists and dicts ---- */

chat_list *chat_list_new(chat_ctx *r, size_t n)
{
    chat_list *l = chat_alloc(r->e, sizeof *l);
    l->n = n, l->cap = n;
    l->v = n ? chat_alloc(r->e, n * sizeof *l->v) : NULL;
    return l;
}

void chat_list_push(chat_ctx *r, chat_list *l, chat_val v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        chat_val *nv = chat_alloc(r->e, cap * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv, l->cap = cap;
    }
    l->v[l->n++] = v;
}

chat_dict *chat_dict_new(chat_ctx *r)
{
    chat_dict *d = chat_alloc(r->e, sizeof *d);
    memset(d, 0, sizeof *d);
    return d;
}

static long dict_find(const chat_dict *d, chat_str key)
{
    for (size_t i = 0; i < d->n; i++)
        if (chat_str_same(d->k[i], key)) return (long)i;
    return -1;
}

chat_val chat_dict_get(const chat_dict *d, chat_str key)
{
    long i = dict_find(d, key);
    return i < 0 ? chat_v_undef() : d->v[i];
}

int chat_dict_has(const chat_dict *d, chat_str key) { return dict_find(d, key) >= 0; }

void chat_dict_put(chat_ctx *r, chat_dict *d, chat_str key, chat_val v)
{
    long i = dict_find(d, key);
    if (i >= 0) {
        d->v[i] = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        chat_str *k = chat_alloc(r->e, cap * sizeof *k);
        chat_val *vv = chat_alloc(r->e, cap * sizeof *vv);
        if (d->n) {
            memcpy(k, d->k, d->n * sizeof *k);
            memcpy(vv, d->v, d->n * sizeof *vv);
        }
        d->k = k, d->v = vv, d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n++] = v;
}

/* ---- truth, equality, types ---- */

int chat_is_num(chat_val v) { return v.kind == CV_INT || v.kind == CV_FLOAT; }

int chat_truthy(chat_val v)
{
    switch (v.kind) {
    case CV_UNDEF: case CV_NULL: return 0;
    case CV_BOOL: return v.b;
    case CV_INT: case CV_FLOAT: return v.num != 0 && !isnan(v.num);
    case CV_STR: return v.s.n != 0;
    case CV_ARRAY: return v.l->n != 0;
    case CV_OBJECT: return v.d->n != 0;
    default: return 1; /* namespaces and functions */
    }
}

const char *chat_type_name(chat_val v)
{
    static const char *const names[] = {"UndefinedValue", "NullValue", "BooleanValue", "IntegerValue", "FloatValue",
                                        "StringValue", "ArrayValue", "ObjectValue", "NamespaceValue", "FunctionValue"};
    if (v.kind == CV_ARRAY && v.tuple) return "TupleValue";
    return names[v.kind];
}

/* ToNumber of a primitive, as == needs it. */
static double to_number(chat_val v)
{
    if (v.kind == CV_BOOL) return v.b;
    if (chat_is_num(v)) return v.num;
    if (v.kind == CV_NULL) return 0;
    if (v.kind == CV_STR) {
        chat_str t = chat_trim(v.s, 1, 1);
        if (!t.n) return 0;
        char buf[128];
        if (t.n >= sizeof buf) return NAN;
        memcpy(buf, t.p, t.n);
        buf[t.n] = 0;
        char *end;
        double d = (t.n > 2 && buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X')) ? (double)strtoll(buf, &end, 16)
                                                                                 : strtod(buf, &end);
        if (*end || strpbrk(buf, "nN") || (strpbrk(buf, "xX") && !(buf[1] == 'x' || buf[1] == 'X'))) return NAN;
        return d;
    }
    return NAN;
}

int chat_strict_eq(chat_val a, chat_val b)
{
    if (chat_is_num(a) && chat_is_num(b)) return a.num == b.num;
    if (a.kind != b.kind) return 0;
    switch (a.kind) {
    case CV_UNDEF: case CV_NULL: return 1;
    case CV_BOOL: return a.b == b.b;
    case CV_STR: return chat_str_same(a.s, b.s);
    case CV_ARRAY: return a.l == b.l;
    case CV_OBJECT: case CV_NS: return a.d == b.d;
    case CV_FUNC: return a.f == b.f;
    default: return 0;
    }
}

int chat_loose_eq(chat_ctx *r, chat_val a, chat_val b)
{
    int an = a.kind == CV_UNDEF || a.kind == CV_NULL, bn = b.kind == CV_UNDEF || b.kind == CV_NULL;
    if (an || bn) return an && bn;
    int ap = a.kind <= CV_STR, bp = b.kind <= CV_STR;
    if (!ap && !bp) return chat_strict_eq(a, b);
    if (!ap || !bp) { /* an array or object meets a primitive: ToPrimitive is String() of it */
        if ((!ap ? a : b).kind == CV_FUNC) return 0;
        chat_sb s = {.e = r->e};
        chat_js_string(r, &s, !ap ? a : b);
        chat_val p = chat_v_str(chat_sb_str(&s));
        return chat_loose_eq(r, !ap ? p : a, !ap ? b : p);
    }
    if (a.kind == CV_STR && b.kind == CV_STR) return chat_str_same(a.s, b.s);
    return to_number(a) == to_number(b);
}

static int str_cmp(chat_str a, chat_str b)
{
    /* JavaScript compares UTF-16 code units; for text outside the astral
     * planes that is the order of the code points, as UTF-8 bytes are */
    size_t m = a.n < b.n ? a.n : b.n;
    int c = m ? memcmp(a.p, b.p, m) : 0;
    return c ? (c < 0 ? -1 : 1) : (a.n > b.n) - (a.n < b.n);
}

int chat_compare(chat_ctx *r, chat_val a, chat_val b, int case_sensitive)
{
    if (a.kind == CV_NULL && b.kind == CV_NULL) return 0;
    if (a.kind == CV_UNDEF && b.kind == CV_UNDEF) return 0;
    int an = chat_is_num(a) || a.kind == CV_BOOL, bn = chat_is_num(b) || b.kind == CV_BOOL;
    if (a.kind != CV_NULL && b.kind != CV_NULL && a.kind != CV_UNDEF && b.kind != CV_UNDEF) {
        if (an && bn) {
            double x = to_number(a), y = to_number(b);
            return x < y ? -1 : x > y;
        }
        if (a.kind == CV_STR && b.kind == CV_STR) {
            if (case_sensitive) return str_cmp(a.s, b.s);
            return str_cmp(chat_case(r, a.s, 0), chat_case(r, b.s, 0));
        }
    }
    chat_fail_r(r, "cannot compare %s with %s", chat_type_name(a), chat_type_name(b));
}

/* String(x.value) in JavaScript, which ~ and + use. */
void chat_js_string(chat_ctx *r, chat_sb *b, chat_val v)
{
    switch (v.kind) {
    case CV_UNDEF: chat_sb_putz(b, "undefined"); break;
    case CV_NULL: chat_sb_putz(b, "null"); break;
    case CV_INT: case CV_FLOAT: chat_num_str(b, v.num); break;
    case CV_ARRAY:
        for (size_t i = 0; i < v.l->n; i++) {
            chat_val x = v.l->v[i];
            if (i) chat_sb_putz(b, ",");
            /* each item through its RuntimeValue.toString() */
            if (x.kind == CV_NULL) chat_sb_putz(b, "null");
            else if (x.kind == CV_UNDEF) chat_sb_putz(b, "undefined");
            else if (x.kind == CV_FUNC) chat_sb_putz(b, "[function]");
            else {
                chat_str s = chat_to_str(r, x);
                chat_sb_put(b, s.p, s.n);
            }
        }
        break;
    case CV_OBJECT: case CV_NS: chat_sb_putz(b, "[object Map]"); break;
    default: {
        chat_str s = chat_to_str(r, v);
        chat_sb_put(b, s.p, s.n);
    }
    }
}

/* ---- printing ---- */

/* Number::toString(10): the shortest digits that read back as x. */
void chat_num_str(chat_sb *b, double x)
{
    char buf[64], digits[32];
    if (isnan(x)) return chat_sb_putz(b, "NaN");
    if (isinf(x)) return chat_sb_putz(b, x < 0 ? "-Infinity" : "Infinity");
    if (x == 0) return chat_sb_putz(b, "0");
    if (x < 0) chat_sb_putz(b, "-"), x = -x;
    int prec = 1;
    for (; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, x);
        if (strtod(buf, NULL) == x) break;
    }
    /* buf: d.ddddde[+-]XX */
    int k = 0, exp10 = atoi(strchr(buf, 'e') + 1);
    for (const char *p = buf; *p && *p != 'e'; p++)
        if (*p != '.') digits[k++] = *p;
    while (k > 1 && digits[k - 1] == '0') k--;
    digits[k] = 0;
    int n = exp10 + 1;
    if (k <= n && n <= 21) {
        chat_sb_put(b, digits, (size_t)k);
        for (int i = k; i < n; i++) chat_sb_putz(b, "0");
    } else if (0 < n && n <= 21) {
        chat_sb_put(b, digits, (size_t)n);
        chat_sb_putz(b, ".");
        chat_sb_put(b, digits + n, (size_t)(k - n));
    } else if (-6 < n && n <= 0) {
        chat_sb_putz(b, "0.");
        for (int i = 0; i < -n; i++) chat_sb_putz(b, "0");
        chat_sb_put(b, digits, (size_t)k);
    } else {
        chat_sb_put(b, digits, 1);
        if (k > 1) chat_sb_putz(b, "."), chat_sb_put(b, digits + 1, (size_t)(k - 1));
        snprintf(buf, sizeof buf, "e%c%d", n - 1 < 0 ? '-' : '+', abs(n - 1));
        chat_sb_putz(b, buf);
    }
}

/* FloatValue.toString: integral values keep ".0" (toFixed(1)). */
static void float_str(chat_sb *b, double x)
{
    char buf[400];
    if (x == 0 && signbit(x)) return chat_sb_putz(b, "-0.0");
    if (isfinite(x) && x == floor(x) && fabs(x) < 1e21) {
        snprintf(buf, sizeof buf, "%.1f", x);
        return chat_sb_putz(b, buf);
    }
    chat_num_str(b, x);
}

static void put_value(chat_ctx *r, chat_sb *b, chat_val v)
{
    switch (v.kind) {
    case CV_UNDEF: case CV_NULL: break;
    case CV_BOOL: chat_sb_putz(b, v.b ? "true" : "false"); break;
    case CV_INT: chat_num_str(b, v.num); break;
    case CV_FLOAT: float_str(b, v.num); break;
    case CV_STR: chat_sb_put(b, v.s.p, v.s.n); break;
    case CV_ARRAY: case CV_OBJECT: case CV_NS: {
        chat_json_opts o = {.indent = -1};
        chat_json(r, b, v, &o, 0);
        break;
    }
    case CV_FUNC: chat_sb_putz(b, "[function]"); break; /* what String() of a JavaScript closure is not: stable */
    }
}

chat_str chat_to_str(chat_ctx *r, chat_val v)
{
    if (v.kind == CV_STR) return v.s;
    chat_sb b = {.e = r->e};
    put_value(r, &b, v);
    return chat_sb_str(&b);
}

/* ---- JSON ---- */

static void json_str(chat_sb *b, chat_str s, int ascii)
{
    char esc[16];
    chat_sb_putz(b, "\"");
    for (size_t i = 0; i < s.n;) {
        size_t at = i;
        uint32_t c = chat_utf8_next(s, &i);
        const char *e = NULL;
        switch (c) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        }
        if (e) {
            chat_sb_putz(b, e);
        } else if (c < 0x20 || (c >= 0xD800 && c <= 0xDFFF)) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            chat_sb_putz(b, esc);
        } else if (ascii && c >= 0x7F) {
            if (c >= 0x10000) {
                snprintf(esc, sizeof esc, "\\u%04x\\u%04x", 0xD800 + ((c - 0x10000) >> 10),
                         0xDC00 + ((c - 0x10000) & 0x3FF));
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", c);
            }
            chat_sb_putz(b, esc);
        } else {
            chat_sb_put(b, s.p + at, i - at);
        }
    }
    chat_sb_putz(b, "\"");
}

static void json_pad(chat_sb *b, int indent, int depth)
{
    chat_sb_putz(b, "\n");
    for (int i = 0; i < indent * depth; i++) chat_sb_putz(b, " ");
}

/* Indices of d's keys, sorted when asked (by code point: localeCompare
 * differs only for non-ASCII letters and case, which key names rarely use). */
static size_t *keys_in_order(chat_ctx *r, const chat_dict *d, int sort)
{
    size_t *ix = chat_alloc(r->e, (d->n + 1) * sizeof *ix);
    for (size_t i = 0; i < d->n; i++) ix[i] = i;
    for (size_t i = 1; sort && i < d->n; i++) /* insertion sort: stable, and dicts are small */
        for (size_t j = i; j > 0 && str_cmp(d->k[ix[j - 1]], d->k[ix[j]]) > 0; j--) {
            size_t t = ix[j];
            ix[j] = ix[j - 1], ix[j - 1] = t;
        }
    return ix;
}

void chat_json(chat_ctx *r, chat_sb *b, chat_val v, const chat_json_opts *o, int depth)
{
    int ind = o->indent > 0 ? o->indent : 0;
    chat_str item = o->item_sep.p ? o->item_sep : ind ? (chat_str){",", 1} : (chat_str){", ", 2};
    chat_str key = o->key_sep.p ? o->key_sep : (chat_str){": ", 2};
    if (++r->depth > 4 * CHAT_MAX_DEPTH) chat_fail_r(r, "tojson: nesting too deep");
    switch (v.kind) {
    case CV_NULL: chat_sb_putz(b, "null"); break;
    case CV_UNDEF: chat_sb_putz(b, o->undef_null ? "null" : "undefined"); break;
    case CV_BOOL: chat_sb_putz(b, v.b ? "true" : "false"); break;
    case CV_INT: case CV_FLOAT:
        if (!isfinite(v.num)) chat_sb_putz(b, "null");
        else chat_num_str(b, v.num);
        break;
    case CV_STR: json_str(b, v.s, o->ensure_ascii); break;
    case CV_ARRAY:
        if (v.tuple) chat_fail_r(r, "cannot convert to JSON: TupleValue");
        chat_sb_putz(b, "[");
        for (size_t i = 0; i < v.l->n; i++) {
            if (i) chat_sb_put(b, item.p, item.n);
            if (ind) json_pad(b, ind, depth + 1);
            chat_json(r, b, v.l->v[i], o, depth + 1);
        }
        if (ind && v.l->n) json_pad(b, ind, depth);
        chat_sb_putz(b, "]");
        break;
    case CV_OBJECT: case CV_NS: {
        size_t *ix = keys_in_order(r, v.d, o->sort_keys);
        chat_sb_putz(b, "{");
        for (size_t i = 0; i < v.d->n; i++) {
            if (i) chat_sb_put(b, item.p, item.n);
            if (ind) json_pad(b, ind, depth + 1);
            json_str(b, v.d->k[ix[i]], o->ensure_ascii);
            chat_sb_put(b, key.p, key.n);
            chat_json(r, b, v.d->v[ix[i]], o, depth + 1);
        }
        if (ind && v.d->n) json_pad(b, ind, depth);
        chat_sb_putz(b, "}");
        break;
    }
    case CV_FUNC: chat_fail_r(r, "cannot convert to JSON: FunctionValue");
    }
    r->depth--;
}
