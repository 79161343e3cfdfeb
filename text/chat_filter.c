/* chat_filter.c - the filters. Each behaves as @huggingface/jinja's does
 * where it has one (tojson takes keyword arguments only; sort is case
 * insensitive; join joins the raw values; selectattr without a test keeps
 * truthy attributes); where it has none, or refuses a type, Jinja2's
 * meaning is used (reject, select, map with a filter name, sum, min, max,
 * trim(chars), default without arguments, length of undefined, ...).
 * x|f and x|f() are the same filter. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat_internal.h"

typedef chat_val (*filter_fn)(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env);

static chat_val filter_by_name(chat_ctx *r, chat_str name, chat_val x, const chat_args *a, chat_env *env);

_Noreturn static void cannot(chat_ctx *r, const char *f, chat_val x)
{
    chat_fail_r(r, "cannot apply filter \"%s\" to type: %s", f, chat_type_name(x));
}

static int want_bool(chat_ctx *r, chat_val v, int dflt, const char *what)
{
    if (v.kind == CV_UNDEF) return dflt;
    if (v.kind != CV_BOOL) chat_fail_r(r, "%s must be a boolean", what);
    return v.b;
}

static chat_str want_str(chat_ctx *r, chat_val v, const char *what)
{
    if (v.kind != CV_STR) chat_fail_r(r, "%s must be a string, got %s", what, chat_type_name(v));
    return v.s;
}

/* The attribute at a dotted path ("a.b", "items.0"), or undefined. */
static chat_val attr_path(chat_val v, chat_str path)
{
    size_t i = 0;
    while (i <= path.n) {
        size_t j = i;
        while (j < path.n && path.p[j] != '.') j++;
        chat_str part = {path.p + i, j - i};
        if (v.kind == CV_OBJECT || v.kind == CV_NS) {
            v = chat_dict_get(v.d, part);
        } else if (v.kind == CV_ARRAY) {
            char *end, buf[24];
            if (part.n == 0 || part.n >= sizeof buf) return chat_v_undef();
            memcpy(buf, part.p, part.n), buf[part.n] = 0;
            long k = strtol(buf, &end, 10);
            if (end == buf || k < 0 || (size_t)k >= v.l->n) return chat_v_undef();
            v = v.l->v[k];
        } else {
            return chat_v_undef();
        }
        i = j + 1;
    }
    return v;
}

/* ---- conversions ---- */

static chat_val f_tojson(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)env;
    chat_json_opts o = {.indent = -1, .undef_null = 1};
    chat_dict *kw = a->kw;
    chat_val ind = kw ? chat_dict_get(kw, (chat_str){"indent", 6}) : chat_v_undef();
    if (ind.kind != CV_UNDEF && ind.kind != CV_NULL && ind.kind != CV_INT) chat_fail_r(r, "if set, indent must be a number");
    if (ind.kind == CV_INT) o.indent = ind.num > 1e4 ? 10000 : (int)ind.num;
    o.ensure_ascii = want_bool(r, kw ? chat_dict_get(kw, (chat_str){"ensure_ascii", 12}) : chat_v_undef(), 0, "ensure_ascii");
    o.sort_keys = want_bool(r, kw ? chat_dict_get(kw, (chat_str){"sort_keys", 9}) : chat_v_undef(), 0, "sort_keys");
    chat_val sep = kw ? chat_dict_get(kw, (chat_str){"separators", 10}) : chat_v_undef();
    if (sep.kind == CV_ARRAY) {
        if (sep.l->n != 2 || sep.l->v[0].kind != CV_STR || sep.l->v[1].kind != CV_STR)
            chat_fail_r(r, "separators must be a tuple of two strings");
        o.item_sep = sep.l->v[0].s, o.key_sep = sep.l->v[1].s;
    } else if (sep.kind != CV_UNDEF && sep.kind != CV_NULL) {
        chat_fail_r(r, "if set, separators must be a tuple of two strings");
    }
    chat_sb b = {.e = r->e};
    chat_json(r, &b, x, &o, 0);
    return chat_v_str(chat_sb_str(&b));
}

static chat_val f_string(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)a, (void)env;
    if (x.kind == CV_STR || chat_is_num(x) || x.kind == CV_BOOL) return chat_v_str(chat_to_str(r, x));
    if (x.kind == CV_ARRAY) {
        chat_json_opts o = {.indent = -1};
        chat_sb b = {.e = r->e};
        chat_json(r, &b, x, &o, 0);
        return chat_v_str(chat_sb_str(&b));
    }
    if (x.kind == CV_OBJECT || x.kind == CV_NS) return chat_v_str(chat_to_str(r, x)); /* Jinja2 prints it too */
    cannot(r, "string", x);
}

/* parseInt / parseFloat of a string prefix. */
static int parse_num(chat_str s, int is_int, double *out)
{
    chat_str t = chat_trim(s, 1, 0);
    char buf[128];
    size_t n = t.n < sizeof buf - 1 ? t.n : sizeof buf - 1;
    memcpy(buf, t.p, n), buf[n] = 0;
    char *end;
    if (is_int) {
        long long v = strtoll(buf, &end, 10);
        *out = (double)v;
    } else {
        if (strpbrk(buf, "xXnN") && !strncmp(buf, "Infinity", 8)) return *out = INFINITY, 1;
        *out = strtod(buf, &end);
        if (strpbrk(buf, "xX")) { /* parseFloat stops at an x */
            char *x = strpbrk(buf, "xX");
            *x = 0;
            *out = strtod(buf, &end);
        }
    }
    return end != buf;
}

static chat_val f_int_float(chat_ctx *r, chat_val x, const chat_args *a, int is_int, const char *name)
{
    chat_val dflt = chat_arg(a, 0, "default");
    if (dflt.kind == CV_UNDEF) dflt = is_int ? chat_v_int(0) : chat_v_float(0);
    double d;
    if (x.kind == CV_STR) return parse_num(x.s, is_int, &d) ? chat_v_num(d, !is_int) : dflt;
    if (chat_is_num(x)) return is_int ? chat_v_int(trunc(x.num) + 0.0) : chat_v_float(x.num);
    if (x.kind == CV_BOOL) return chat_v_num(x.b, !is_int);
    cannot(r, name, x);
}

static chat_val f_int(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return f_int_float(r, x, a, 1, "int"); }
static chat_val f_float(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return f_int_float(r, x, a, 0, "float"); }

static chat_val f_abs(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)a, (void)env;
    if (chat_is_num(x)) return chat_v_num(fabs(x.num), x.kind == CV_FLOAT);
    cannot(r, "abs", x);
}

static chat_val f_round(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)env;
    if (!chat_is_num(x)) cannot(r, "round", x);
    chat_val p = chat_arg(a, 0, "precision"), m = chat_arg(a, 1, "method");
    double k = pow(10, p.kind == CV_INT ? p.num : 0), v = x.num * k;
    if (m.kind == CV_STR && chat_str_eq(m.s, "floor")) v = floor(v);
    else if (m.kind == CV_STR && chat_str_eq(m.s, "ceil")) v = ceil(v);
    else v = nearbyint(v); /* Python rounds half to even */
    return chat_v_float(v / k);
}

static chat_val f_default(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)env;
    chat_val d = a->n > 0 ? a->v[0] : chat_dict_get(a->kw ? a->kw : &(chat_dict){0}, (chat_str){"default_value", 13});
    if (d.kind == CV_UNDEF && a->n == 0) d = chat_v_strz("");
    int boolean = want_bool(r, chat_arg(a, 1, "boolean"), 0, "`default` filter flag");
    return x.kind == CV_UNDEF || (boolean && !chat_truthy(x)) ? d : x;
}

/* ---- strings ---- */

static chat_val f_case(chat_ctx *r, chat_val x, const char *name)
{
    if (x.kind != CV_STR) cannot(r, name, x);
    switch (name[0]) {
    case 'u': return chat_v_str(chat_case(r, x.s, 1));
    case 'l': return chat_v_str(chat_case(r, x.s, 0));
    case 't': return chat_v_str(chat_title(r, x.s));
    default: return chat_v_str(chat_capitalize(r, x.s));
    }
}

static chat_val f_upper(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)a, (void)env; return f_case(r, x, "upper"); }
static chat_val f_lower(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)a, (void)env; return f_case(r, x, "lower"); }
static chat_val f_title(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)a, (void)env; return f_case(r, x, "title"); }
static chat_val f_capitalize(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)a, (void)env; return f_case(r, x, "capitalize"); }

static chat_val f_trim(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)env;
    if (x.kind != CV_STR) cannot(r, "trim", x);
    chat_val chars = chat_arg(a, 0, "chars");
    if (chars.kind == CV_UNDEF || chars.kind == CV_NULL) return chat_v_str(chat_trim(x.s, 1, 1));
    chat_str c = want_str(r, chars, "trim chars"), s = x.s;
    while (s.n && memchr(c.p, s.p[0], c.n)) s.p++, s.n--;
    while (s.n && memchr(c.p, s.p[s.n - 1], c.n)) s.n--;
    return chat_v_str(s);
}

static chat_val f_indent(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)env;
    if (x.kind != CV_STR) cannot(r, "indent", x);
    chat_val w = chat_arg(a, 0, "width");
    chat_str pad;
    if (w.kind == CV_STR) pad = w.s;
    else if (w.kind == CV_INT || w.kind == CV_UNDEF) {
        double n = w.kind == CV_INT ? w.num : 4;
        n = n < 0 ? 0 : n > 256 ? 256 : n;
        char *p = chat_alloc(r->e, (size_t)n + 1);
        memset(p, ' ', (size_t)n);
        pad = (chat_str){p, (size_t)n};
    } else {
        chat_fail_r(r, "width must be an integer or a string");
    }
    int first = chat_truthy(chat_arg(a, 1, "first")), blank = chat_truthy(chat_arg(a, 2, "blank"));
    chat_sb b = {.e = r->e};
    size_t line = 0;
    for (size_t i = 0, st = 0; i <= x.s.n; i++) {
        if (i < x.s.n && x.s.p[i] != '\n') continue;
        size_t len = i - st;
        if (line) chat_sb_putz(&b, "\n");
        if ((first || line) && (blank || len)) chat_sb_put(&b, pad.p, pad.n);
        chat_sb_put(&b, x.s.p + st, len);
        st = i + 1, line++;
    }
    return chat_v_str(chat_sb_str(&b));
}

static chat_val f_replace(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)env;
    if (x.kind != CV_STR) cannot(r, "replace", x);
    chat_val m = chat_method(r, x, (chat_str){"replace", 7});
    return chat_call(r, m, a, NULL, r->off);
}

static chat_val f_wordcount(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)a, (void)env;
    if (x.kind != CV_STR) cannot(r, "wordcount", x);
    double n = 0;
    int in = 0;
    for (size_t i = 0; i < x.s.n; i++) {
        char c = x.s.p[i];
        int w = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                (unsigned char)c >= 0x80;
        if (w && !in) n++;
        in = w;
    }
    return chat_v_int(n);
}

/* ---- sequences ---- */

static const chat_list *as_list(chat_ctx *r, chat_val x, const char *name)
{
    if (x.kind == CV_ARRAY) return x.l;
    if (x.kind == CV_STR) return chat_chars(r, x.s);
    if (x.kind == CV_UNDEF) return chat_list_new(r, 0);
    if (x.kind == CV_OBJECT) {
        chat_list *l = chat_list_new(r, x.d->n);
        for (size_t i = 0; i < x.d->n; i++) l->v[i] = chat_v_str(x.d->k[i]);
        return l;
    }
    cannot(r, name, x);
}

static chat_val f_length(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)a, (void)env;
    if (x.kind == CV_STR) return chat_v_int((double)chat_u16_len(x.s));
    if (x.kind == CV_ARRAY) return chat_v_int((double)x.l->n);
    if (x.kind == CV_OBJECT) return chat_v_int((double)x.d->n);
    if (x.kind == CV_UNDEF) return chat_v_int(0);
    cannot(r, "length", x);
}

static chat_val f_list(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)a, (void)env;
    if (x.kind == CV_ARRAY) return x;
    const chat_list *l = as_list(r, x, "list");
    return chat_v_list((chat_list *)l);
}

static chat_val f_first_last(chat_ctx *r, chat_val x, int last)
{
    const chat_list *l = as_list(r, x, last ? "last" : "first");
    return l->n ? l->v[last ? l->n - 1 : 0] : chat_v_undef();
}

static chat_val f_first(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)a, (void)env; return f_first_last(r, x, 0); }
static chat_val f_last(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)a, (void)env; return f_first_last(r, x, 1); }

static chat_val f_reverse(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)a, (void)env;
    const chat_list *l = as_list(r, x, "reverse");
    chat_list *o = chat_list_new(r, l->n);
    for (size_t i = 0; i < l->n; i++) o->v[i] = l->v[l->n - 1 - i];
    if (x.kind != CV_STR) return chat_v_list(o);
    chat_sb b = {.e = r->e};
    for (size_t i = 0; i < o->n; i++) chat_sb_put(&b, o->v[i].s.p, o->v[i].s.n);
    return chat_v_str(chat_sb_str(&b));
}

/* Array.prototype.join of the raw values. */
static void raw_item(chat_ctx *r, chat_sb *b, chat_val v)
{
    if (v.kind == CV_UNDEF || v.kind == CV_NULL) return;
    if (v.kind == CV_OBJECT || v.kind == CV_NS) return chat_sb_putz(b, "[object Map]");
    if (v.kind == CV_INT || v.kind == CV_FLOAT) return chat_num_str(b, v.num);
    if (v.kind == CV_ARRAY) {
        for (size_t i = 0; i < v.l->n; i++) {
            if (i) chat_sb_putz(b, ",");
            chat_val x = v.l->v[i];
            chat_str s = x.kind == CV_NULL ? (chat_str){"null", 4}
                       : x.kind == CV_UNDEF ? (chat_str){"undefined", 9} : chat_to_str(r, x);
            chat_sb_put(b, s.p, s.n);
        }
        return;
    }
    chat_str s = chat_to_str(r, v);
    chat_sb_put(b, s.p, s.n);
}

static chat_val f_join(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)env;
    if (x.kind != CV_ARRAY && x.kind != CV_STR) cannot(r, "join", x);
    chat_val sepv = chat_arg(a, 0, "separator");
    if (sepv.kind == CV_UNDEF) sepv = chat_arg(a, 0, "d");
    chat_str sep = sepv.kind == CV_UNDEF ? (chat_str){"", 0} : want_str(r, sepv, "separator");
    chat_val attr = chat_arg(a, 1, "attribute");
    const chat_list *l = as_list(r, x, "join");
    chat_sb b = {.e = r->e};
    for (size_t i = 0; i < l->n; i++) {
        if (i) chat_sb_put(&b, sep.p, sep.n);
        raw_item(r, &b, attr.kind == CV_STR ? attr_path(l->v[i], attr.s) : l->v[i]);
    }
    return chat_v_str(chat_sb_str(&b));
}

static chat_val sort_key(chat_val item, chat_val attr)
{
    if (attr.kind == CV_STR) return attr_path(item, attr.s);
    if (attr.kind == CV_INT) {
        if (item.kind == CV_ARRAY) {
            double i = attr.num;
            return i >= 0 && i < (double)item.l->n ? item.l->v[(size_t)i] : chat_v_undef();
        }
        return chat_v_undef();
    }
    return item;
}

static chat_val f_sort(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)env;
    const chat_list *l = as_list(r, x, "sort");
    int reverse = want_bool(r, chat_arg(a, 0, "reverse"), 0, "reverse");
    int cs = want_bool(r, chat_arg(a, 1, "case_sensitive"), 0, "case_sensitive");
    chat_val attr = chat_arg(a, 2, "attribute");
    chat_list *o = chat_list_new(r, l->n);
    for (size_t i = 0; i < l->n; i++) { /* insertion sort: stable, as Array.prototype.sort is */
        size_t j = i;
        chat_count_iteration(r, r->off);
        while (j > 0) {
            int c = chat_compare(r, sort_key(o->v[j - 1], attr), sort_key(l->v[i], attr), cs);
            if ((reverse ? -c : c) <= 0) break;
            o->v[j] = o->v[j - 1], j--;
        }
        o->v[j] = l->v[i];
    }
    return chat_v_list(o);
}

static chat_val f_unique(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)a, (void)env;
    const chat_list *l = as_list(r, x, "unique");
    chat_list *o = chat_list_new(r, 0);
    for (size_t i = 0; i < l->n; i++) {
        int seen = 0;
        for (size_t k = 0; k < o->n && !seen; k++) seen = chat_strict_eq(o->v[k], l->v[i]);
        if (!seen) chat_list_push(r, o, l->v[i]);
    }
    return chat_v_list(o);
}

static chat_val f_items(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    (void)a, (void)env;
    if (x.kind == CV_UNDEF) return chat_v_list(chat_list_new(r, 0));
    if (x.kind != CV_OBJECT) cannot(r, "items", x);
    chat_val m = chat_method(r, x, (chat_str){"items", 5});
    return chat_call(r, m, &(chat_args){0}, NULL, r->off);
}

static chat_val f_object_method(chat_ctx *r, chat_val x, const chat_args *a, const char *name)
{
    if (x.kind != CV_OBJECT) cannot(r, name, x);
    return chat_call(r, chat_method(r, x, (chat_str){name, strlen(name)}), a, NULL, r->off);
}

static chat_val f_dictsort(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return f_object_method(r, x, a, "dictsort"); }
static chat_val f_keys(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return f_object_method(r, x, a, "keys"); }
static chat_val f_values(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return f_object_method(r, x, a, "values"); }

/* selectattr/rejectattr(attr[, test, args...]), select/reject(test[, args...]). */
static chat_val select_common(chat_ctx *r, chat_val x, const chat_args *a, int by_attr, int keep)
{
    const char *name = by_attr ? (keep ? "selectattr" : "rejectattr") : (keep ? "select" : "reject");
    const chat_list *l = as_list(r, x, name);
    size_t k = by_attr ? 1 : 0;
    chat_str attr = {0};
    if (by_attr) attr = want_str(r, chat_arg(a, 0, NULL), "attribute");
    chat_val test = chat_arg(a, k, NULL);
    chat_args targs = {a->n > k + 1 ? a->v + k + 1 : NULL, a->n > k + 1 ? a->n - k - 1 : 0, NULL};
    chat_list *o = chat_list_new(r, 0);
    for (size_t i = 0; i < l->n; i++) {
        chat_val item = l->v[i], v = item;
        int ok;
        chat_count_iteration(r, r->off);
        if (by_attr) {
            if (item.kind != CV_OBJECT && item.kind != CV_NS)
                chat_fail_r(r, "`%s` can only be applied to an array of objects", name);
            int has = chat_dict_has(item.d, attr);
            v = has ? chat_dict_get(item.d, attr) : attr_path(item, attr);
            if (!has && v.kind == CV_UNDEF) { /* the reference: a missing attribute never passes */
                if (!keep) chat_list_push(r, o, item);
                continue;
            }
        }
        if (test.kind == CV_UNDEF) ok = chat_truthy(v);
        else ok = chat_apply_test(r, want_str(r, test, "test name"), v, &targs, r->off);
        if (ok == keep) chat_list_push(r, o, item);
    }
    return chat_v_list(o);
}

static chat_val f_selectattr(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return select_common(r, x, a, 1, 1); }
static chat_val f_rejectattr(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return select_common(r, x, a, 1, 0); }
static chat_val f_select(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return select_common(r, x, a, 0, 1); }
static chat_val f_reject(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return select_common(r, x, a, 0, 0); }

static chat_val f_map(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env)
{
    const chat_list *l = as_list(r, x, "map");
    chat_val attr = a->kw ? chat_dict_get(a->kw, (chat_str){"attribute", 9}) : chat_v_undef();
    chat_list *o = chat_list_new(r, l->n);
    if (attr.kind != CV_UNDEF) {
        chat_str at = want_str(r, attr, "attribute");
        chat_val dflt = chat_dict_get(a->kw, (chat_str){"default", 7});
        for (size_t i = 0; i < l->n; i++) {
            if (l->v[i].kind != CV_OBJECT && l->v[i].kind != CV_NS) chat_fail_r(r, "items in map must be objects");
            chat_val v = attr_path(l->v[i], at);
            o->v[i] = v.kind == CV_UNDEF ? dflt : v;
        }
        return chat_v_list(o);
    }
    if (!a->n) chat_fail_r(r, "map needs a filter name or attribute=");
    chat_str f = want_str(r, a->v[0], "map filter name");
    chat_args rest = {a->v + 1, a->n - 1, a->kw};
    for (size_t i = 0; i < l->n; i++) {
        chat_count_iteration(r, r->off);
        o->v[i] = filter_by_name(r, f, l->v[i], &rest, env);
    }
    return chat_v_list(o);
}

static chat_val fold(chat_ctx *r, chat_val x, const chat_args *a, const char *name)
{
    const chat_list *l = as_list(r, x, name);
    chat_val attr = chat_dict_get(a->kw ? a->kw : &(chat_dict){0}, (chat_str){"attribute", 9});
    if (name[1] == 'u') { /* sum(attribute=, start=0) */
        chat_val start = chat_arg(a, 1, "start");
        if (attr.kind == CV_UNDEF) attr = chat_arg(a, 0, NULL);
        double s = start.kind == CV_UNDEF ? 0 : start.num;
        int fl = start.kind == CV_FLOAT;
        for (size_t i = 0; i < l->n; i++) {
            chat_val v = attr.kind == CV_STR ? attr_path(l->v[i], attr.s) : l->v[i];
            if (!chat_is_num(v) && v.kind != CV_BOOL) chat_fail_r(r, "sum: %s is not a number", chat_type_name(v));
            s += v.kind == CV_BOOL ? v.b : v.num;
            fl |= v.kind == CV_FLOAT;
        }
        return chat_v_num(s, fl);
    }
    int cs = want_bool(r, chat_arg(a, 0, "case_sensitive"), 0, "case_sensitive");
    if (!l->n) return chat_v_undef();
    chat_val best = l->v[0];
    for (size_t i = 1; i < l->n; i++) {
        int c = chat_compare(r, sort_key(l->v[i], attr), sort_key(best, attr), cs);
        if (name[1] == 'i' ? c < 0 : c > 0) best = l->v[i];
    }
    return best;
}

static chat_val f_sum(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return fold(r, x, a, "sum"); }
static chat_val f_min(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return fold(r, x, a, "min"); }
static chat_val f_max(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)env; return fold(r, x, a, "max"); }

static chat_val f_safe(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)r, (void)a, (void)env; return x; }

static chat_val f_bool(chat_ctx *r, chat_val x, const chat_args *a, chat_env *env) { (void)r, (void)a, (void)env; return chat_v_bool(chat_truthy(x)); }

static const struct {
    const char *name;
    filter_fn fn;
} FILTERS[] = {
    {"abs", f_abs},         {"bool", f_bool},           {"capitalize", f_capitalize}, {"count", f_length},
    {"d", f_default},       {"default", f_default},     {"dictsort", f_dictsort},     {"first", f_first},
    {"float", f_float},     {"indent", f_indent},       {"int", f_int},               {"items", f_items},
    {"join", f_join},       {"keys", f_keys},           {"last", f_last},             {"length", f_length},
    {"list", f_list},       {"lower", f_lower},         {"map", f_map},               {"max", f_max},
    {"min", f_min},         {"reject", f_reject},       {"rejectattr", f_rejectattr}, {"replace", f_replace},
    {"reverse", f_reverse}, {"round", f_round},         {"safe", f_safe},             {"select", f_select},
    {"selectattr", f_selectattr}, {"sort", f_sort},     {"string", f_string},         {"sum", f_sum},
    {"title", f_title},     {"tojson", f_tojson},       {"trim", f_trim},             {"unique", f_unique},
    {"upper", f_upper},     {"values", f_values},       {"wordcount", f_wordcount},
};

int chat_known_filter(chat_str name)
{
    for (size_t i = 0; i < sizeof FILTERS / sizeof FILTERS[0]; i++)
        if (chat_str_eq(name, FILTERS[i].name)) return 1;
    return 0;
}

static chat_val filter_by_name(chat_ctx *r, chat_str name, chat_val x, const chat_args *a, chat_env *env)
{
    for (size_t i = 0; i < sizeof FILTERS / sizeof FILTERS[0]; i++)
        if (chat_str_eq(name, FILTERS[i].name)) return FILTERS[i].fn(r, x, a, env);
    chat_fail_r(r, "unsupported filter '%.*s'", (int)name.n, name.p);
}

chat_val chat_apply_filter(chat_ctx *r, chat_val x, const chat_node *f, chat_env *env)
{
    chat_args a = {0};
    const chat_node *name = f;
    if (f->kind == ND_CALL) {
        name = f->a;
        chat_eval_args(r, (const chat_node *const *)f->kids, f->n_kids, env, &a);
    }
    r->off = name->off;
    return filter_by_name(r, name->s, x, &a, env);
}
