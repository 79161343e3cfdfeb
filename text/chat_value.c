/* chat_value.c - the chat-template value type: constructors, truth,
 * equality, dicts, Python's str()/repr() and json.dumps (as transformers'
 * tojson calls it: ensure_ascii=False, no HTML escaping), UTF-8 and
 * whitespace helpers. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "chat_internal.h"

chat_val chat_v_str(chat_str s) { return (chat_val){.kind = CV_STR, .s = s}; }
chat_val chat_v_int(int64_t i) { return (chat_val){.kind = CV_INT, .i = i}; }
chat_val chat_v_bool(int b) { return (chat_val){.kind = CV_BOOL, .i = b != 0}; }

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

chat_list *chat_list_new(chat_render_ctx *r, size_t n)
{
    chat_list *l = chat_alloc(r->e, sizeof *l);
    l->n = n;
    l->v = n ? chat_alloc(r->e, n * sizeof *l->v) : NULL;
    return l;
}

int chat_truthy(chat_val v)
{
    switch (v.kind) {
    case CV_UNDEF: case CV_NONE: return 0;
    case CV_BOOL: case CV_INT: return v.i != 0;
    case CV_STR: return v.s.n != 0;
    case CV_LIST: return v.l->n != 0;
    case CV_DICT: return v.d->n != 0;
    default: return 1;
    }
}

const char *chat_type_name(chat_val v)
{
    static const char *const names[] = {"Undefined", "NoneType", "bool", "int", "str",
                                        "list", "dict", "Namespace", "LoopContext", "function"};
    return names[v.kind];
}

static int is_num(chat_val v) { return v.kind == CV_INT || v.kind == CV_BOOL; }

static int str_eq(chat_str a, chat_str b) { return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0); }

static int dict_equal(const chat_dict *a, const chat_dict *b)
{
    if (a->n != b->n) return 0;
    for (size_t i = 0; i < a->n; i++) {
        chat_val o = chat_dict_get(b, a->k[i]);
        if (o.kind == CV_UNDEF || !chat_equal(a->v[i], o)) return 0;
    }
    return 1;
}

int chat_equal(chat_val a, chat_val b)
{
    if (is_num(a) && is_num(b)) return a.i == b.i;
    if (a.kind != b.kind) return 0;
    switch (a.kind) {
    case CV_UNDEF: case CV_NONE: return 1;
    case CV_STR: case CV_FUNC: return str_eq(a.s, b.s);
    case CV_LIST:
        if (a.l->n != b.l->n) return 0;
        for (size_t i = 0; i < a.l->n; i++)
            if (!chat_equal(a.l->v[i], b.l->v[i])) return 0;
        return 1;
    case CV_DICT: return dict_equal(a.d, b.d);
    case CV_NS: return a.d == b.d;
    case CV_LOOP: return a.loop == b.loop;
    default: return 0;
    }
}

chat_val chat_dict_get(const chat_dict *d, chat_str key)
{
    for (size_t i = 0; i < d->n; i++)
        if (str_eq(d->k[i], key)) return d->v[i];
    return (chat_val){.kind = CV_UNDEF, .s = key};
}

void chat_dict_put(chat_render_ctx *r, chat_dict *d, chat_str key, chat_val v)
{
    for (size_t i = 0; i < d->n; i++)
        if (str_eq(d->k[i], key)) {
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

_Noreturn void chat_fail_undefined(chat_render_ctx *r, chat_val v, uint32_t off)
{
    chat_fail(r->e, off, "'%.*s' is undefined", (int)v.s.n, v.s.p);
}

/* ---- str() and repr() ---- */

static void repr_str(chat_sb *b, chat_str s)
{
    int has_sq = memchr(s.p, '\'', s.n) != NULL, has_dq = memchr(s.p, '"', s.n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    chat_sb_put(b, &q, 1);
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        char esc[8];
        if (c == '\\' || c == (unsigned char)q) snprintf(esc, sizeof esc, "\\%c", c);
        else if (c == '\n') snprintf(esc, sizeof esc, "\\n");
        else if (c == '\r') snprintf(esc, sizeof esc, "\\r");
        else if (c == '\t') snprintf(esc, sizeof esc, "\\t");
        else if (c < 0x20 || c == 0x7f) snprintf(esc, sizeof esc, "\\x%02x", c);
        else {
            chat_sb_put(b, (const char *)&s.p[i], 1);
            continue;
        }
        chat_sb_putz(b, esc);
    }
    chat_sb_put(b, &q, 1);
}

static void repr_dict(chat_sb *b, const chat_dict *d)
{
    chat_sb_putz(b, "{");
    for (size_t i = 0; i < d->n; i++) {
        if (i) chat_sb_putz(b, ", ");
        repr_str(b, d->k[i]);
        chat_sb_putz(b, ": ");
        chat_repr(b, d->v[i]);
    }
    chat_sb_putz(b, "}");
}

void chat_repr(chat_sb *b, chat_val v)
{
    char num[32];
    switch (v.kind) {
    case CV_UNDEF: break;
    case CV_NONE: chat_sb_putz(b, "None"); break;
    case CV_BOOL: chat_sb_putz(b, v.i ? "True" : "False"); break;
    case CV_INT: snprintf(num, sizeof num, "%" PRId64, v.i), chat_sb_putz(b, num); break;
    case CV_STR: repr_str(b, v.s); break;
    case CV_LIST:
        chat_sb_putz(b, "[");
        for (size_t i = 0; i < v.l->n; i++) {
            if (i) chat_sb_putz(b, ", ");
            chat_repr(b, v.l->v[i]);
        }
        chat_sb_putz(b, "]");
        break;
    case CV_DICT: repr_dict(b, v.d); break;
    case CV_NS: chat_sb_putz(b, "<Namespace "), repr_dict(b, v.d), chat_sb_putz(b, ">"); break;
    case CV_LOOP:
        snprintf(num, sizeof num, "<LoopContext %zu/%zu>", v.loop->index0 + 1, v.loop->items->n);
        chat_sb_putz(b, num);
        break;
    case CV_FUNC: chat_sb_putz(b, "<function "), chat_sb_put(b, v.s.p, v.s.n), chat_sb_putz(b, ">"); break;
    }
}

chat_str chat_to_str(chat_render_ctx *r, chat_val v, uint32_t off)
{
    (void)off;
    if (v.kind == CV_STR) return v.s;
    if (v.kind == CV_UNDEF) return (chat_str){"", 0};
    chat_sb b = {.e = r->e};
    chat_repr(&b, v);
    return chat_sb_str(&b);
}

/* ---- json.dumps ---- */

static void json_str(chat_sb *b, chat_str s)
{
    chat_sb_putz(b, "\"");
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        char esc[8];
        switch (c) {
        case '"': chat_sb_putz(b, "\\\""); break;
        case '\\': chat_sb_putz(b, "\\\\"); break;
        case '\n': chat_sb_putz(b, "\\n"); break;
        case '\r': chat_sb_putz(b, "\\r"); break;
        case '\t': chat_sb_putz(b, "\\t"); break;
        case '\b': chat_sb_putz(b, "\\b"); break;
        case '\f': chat_sb_putz(b, "\\f"); break;
        default:
            if (c < 0x20) snprintf(esc, sizeof esc, "\\u%04x", c), chat_sb_putz(b, esc);
            else chat_sb_put(b, (const char *)&s.p[i], 1);
        }
    }
    chat_sb_putz(b, "\"");
}

/* Newline and indentation before an item, when indenting. */
static void json_break(chat_sb *b, int64_t indent, int level)
{
    if (indent < 0) return;
    chat_sb_putz(b, "\n");
    for (int64_t i = 0; i < indent * level; i++) chat_sb_putz(b, " ");
}

int chat_json(chat_sb *b, chat_val v, int64_t indent, int level)
{
    char num[32];
    const char *sep = indent < 0 ? ", " : ",";
    size_t n = v.kind == CV_LIST ? v.l->n : v.kind == CV_DICT ? v.d->n : 0;
    switch (v.kind) {
    case CV_NONE: chat_sb_putz(b, "null"); return 1;
    case CV_BOOL: chat_sb_putz(b, v.i ? "true" : "false"); return 1;
    case CV_INT: snprintf(num, sizeof num, "%" PRId64, v.i), chat_sb_putz(b, num); return 1;
    case CV_STR: json_str(b, v.s); return 1;
    case CV_LIST: case CV_DICT:
        chat_sb_putz(b, v.kind == CV_LIST ? "[" : "{");
        for (size_t i = 0; i < n; i++) {
            if (i) chat_sb_putz(b, sep);
            json_break(b, indent, level + 1);
            if (v.kind == CV_DICT) json_str(b, v.d->k[i]), chat_sb_putz(b, ": ");
            if (!chat_json(b, v.kind == CV_LIST ? v.l->v[i] : v.d->v[i], indent, level + 1)) return 0;
        }
        if (n) json_break(b, indent, level);
        chat_sb_putz(b, v.kind == CV_LIST ? "]" : "}");
        return 1;
    default: return 0;
    }
}

/* ---- UTF-8 and whitespace ---- */

size_t chat_utf8_len(chat_str s)
{
    size_t n = 0;
    for (size_t i = 0; i < s.n; i++) n += ((unsigned char)s.p[i] & 0xC0) != 0x80;
    return n;
}

size_t chat_utf8_offset(chat_str s, int64_t cp)
{
    size_t i = 0;
    for (int64_t k = 0; k < cp && i < s.n; k++) {
        i++;
        while (i < s.n && ((unsigned char)s.p[i] & 0xC0) == 0x80) i++;
    }
    return i;
}

chat_list *chat_utf8_chars(chat_render_ctx *r, chat_str s)
{
    chat_list *l = chat_list_new(r, chat_utf8_len(s));
    size_t k = 0;
    for (size_t i = 0; i < s.n;) {
        size_t a = i++;
        while (i < s.n && ((unsigned char)s.p[i] & 0xC0) == 0x80) i++;
        l->v[k++] = chat_v_str((chat_str){s.p + a, i - a});
    }
    return l;
}

/* Code point at s.p[i] (w: its byte length); invalid bytes come back raw. */
static uint32_t decode_at(chat_str s, size_t i, size_t *w)
{
    unsigned char c = (unsigned char)s.p[i];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (i + len > s.n) len = 1;
    uint32_t cp = len == 1 ? c : c & (0x7F >> len);
    for (size_t k = 1; k < len; k++) cp = (cp << 6) | ((unsigned char)s.p[i + k] & 0x3F);
    *w = len;
    return cp;
}

static int cp_is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

int chat_is_space_at(chat_str s, size_t i, size_t *w) { return cp_is_space(decode_at(s, i, w)); }

int chat_is_space_before(chat_str s, size_t end, size_t *w)
{
    size_t i = end - 1;
    while (i > 0 && end - i < 4 && ((unsigned char)s.p[i] & 0xC0) == 0x80) i--;
    size_t cw;
    uint32_t c = decode_at(s, i, &cw);
    if (i + cw != end) c = (unsigned char)s.p[end - 1], i = end - 1;
    *w = end - i;
    return cp_is_space(c);
}
