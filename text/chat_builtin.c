/* chat_builtin.c - tests ("is defined"), methods of strings and objects,
 * and the global functions (namespace, range, raise_exception,
 * strftime_now) as @huggingface/jinja defines them: strip/lstrip/rstrip
 * trim JavaScript whitespace and ignore a chars argument, as the reference
 * does; "x is iterable" holds for arrays and strings only; equalto and eq
 * compare with ===. Tests with arguments (divisibleby, in, ne, lt, ...)
 * and a few string methods (join, find, count) are Jinja2's. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "chat_internal.h"

_Noreturn void chat_fail_r(chat_ctx *r, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    chat_fail(r->e, r->off, "%s", msg);
}

chat_val chat_arg(const chat_args *a, size_t i, const char *kw)
{
    if (i < a->n) return a->v[i];
    if (kw && a->kw) return chat_dict_get(a->kw, (chat_str){kw, strlen(kw)});
    return chat_v_undef();
}

chat_val chat_func_val(chat_ctx *r, const char *name, chat_builtin_fn fn, chat_val self)
{
    chat_func *f = chat_alloc(r->e, sizeof *f);
    memset(f, 0, sizeof *f);
    f->kind = CF_BUILTIN, f->name = name, f->fn = fn, f->self = self;
    return (chat_val){.kind = CV_FUNC, .f = f};
}

/* ---- tests ---- */

static int test_cmp(chat_ctx *r, chat_str t, chat_val x, chat_val y)
{
    if (chat_str_eq(t, "ne")) return !chat_strict_eq(x, y);
    int c = chat_compare(r, x, y, 1);
    if (chat_str_eq(t, "lt") || chat_str_eq(t, "lessthan")) return c < 0;
    if (chat_str_eq(t, "le")) return c <= 0;
    if (chat_str_eq(t, "gt") || chat_str_eq(t, "greaterthan")) return c > 0;
    return c >= 0;
}

static int test_in(chat_ctx *r, chat_val x, chat_val seq)
{
    if (seq.kind == CV_ARRAY) {
        for (size_t i = 0; i < seq.l->n; i++)
            if (chat_strict_eq(seq.l->v[i], x)) return 1;
        return 0;
    }
    if (seq.kind == CV_OBJECT && x.kind == CV_STR) return chat_dict_has(seq.d, x.s);
    if (seq.kind == CV_STR && x.kind == CV_STR) {
        for (size_t i = 0; i + x.s.n <= seq.s.n; i++)
            if (!memcmp(seq.s.p + i, x.s.p, x.s.n)) return 1;
        return 0;
    }
    chat_fail_r(r, "'in' test: %s is not a container", chat_type_name(seq));
}

static const char *const TESTS[] = {"boolean", "callable", "odd", "even", "false", "true", "none", "string",
                                    "number", "integer", "float", "iterable", "mapping", "sequence", "lower",
                                    "upper", "defined", "undefined", "equalto", "eq", "sameas", "ne", "lt",
                                    "lessthan", "le", "gt", "greaterthan", "ge", "in", "divisibleby", "escaped",
                                    NULL};

int chat_known_test(chat_str name)
{
    for (int i = 0; TESTS[i]; i++)
        if (chat_str_eq(name, TESTS[i])) return 1;
    return 0;
}

int chat_apply_test(chat_ctx *r, chat_str t, chat_val x, const chat_args *a, uint32_t off)
{
    chat_vkind k = x.kind;
    chat_val y = chat_arg(a, 0, NULL);
    r->off = off;
    if (chat_str_eq(t, "defined")) return k != CV_UNDEF;
    if (chat_str_eq(t, "undefined")) return k == CV_UNDEF;
    if (chat_str_eq(t, "none")) return k == CV_NULL;
    if (chat_str_eq(t, "boolean")) return k == CV_BOOL;
    if (chat_str_eq(t, "true")) return k == CV_BOOL && x.b;
    if (chat_str_eq(t, "false")) return k == CV_BOOL && !x.b;
    if (chat_str_eq(t, "string")) return k == CV_STR;
    if (chat_str_eq(t, "number")) return k == CV_INT || k == CV_FLOAT;
    if (chat_str_eq(t, "integer")) return k == CV_INT;
    if (chat_str_eq(t, "float")) return k == CV_FLOAT;
    if (chat_str_eq(t, "callable")) return k == CV_FUNC;
    if (chat_str_eq(t, "iterable")) return (k == CV_ARRAY && !x.tuple) || k == CV_STR;
    if (chat_str_eq(t, "mapping")) return k == CV_OBJECT;
    if (chat_str_eq(t, "sequence")) return k == CV_ARRAY || k == CV_OBJECT || k == CV_STR;
    if (chat_str_eq(t, "escaped")) return 0;
    if (chat_str_eq(t, "lower") || chat_str_eq(t, "upper"))
        return k == CV_STR && chat_str_same(x.s, chat_case(r, x.s, t.p[0] == 'u'));
    if (chat_str_eq(t, "odd") || chat_str_eq(t, "even")) {
        if (k != CV_INT) chat_fail_r(r, "cannot %.*s on %s", (int)t.n, t.p, chat_type_name(x));
        return (fmod(x.num, 2) != 0) == (t.p[0] == 'o');
    }
    if (chat_str_eq(t, "equalto") || chat_str_eq(t, "eq") || chat_str_eq(t, "sameas")) return chat_strict_eq(x, y);
    if (!a->n) chat_fail_r(r, "test '%.*s' needs an argument", (int)t.n, t.p);
    if (chat_str_eq(t, "in")) return test_in(r, x, y);
    if (chat_str_eq(t, "divisibleby")) {
        if (!chat_is_num(x) || !chat_is_num(y)) chat_fail_r(r, "divisibleby needs numbers");
        return y.num != 0 && fmod(x.num, y.num) == 0;
    }
    if (chat_known_test(t)) return test_cmp(r, t, x, y);
    chat_fail_r(r, "unsupported test '%.*s'", (int)t.n, t.p);
}

/* ---- string methods ---- */

static chat_val m_upper(chat_ctx *r, chat_val s, const chat_args *a) { (void)a; return chat_v_str(chat_case(r, s.s, 1)); }
static chat_val m_lower(chat_ctx *r, chat_val s, const chat_args *a) { (void)a; return chat_v_str(chat_case(r, s.s, 0)); }
static chat_val m_title(chat_ctx *r, chat_val s, const chat_args *a) { (void)a; return chat_v_str(chat_title(r, s.s)); }
static chat_val m_capitalize(chat_ctx *r, chat_val s, const chat_args *a) { (void)a; return chat_v_str(chat_capitalize(r, s.s)); }
static chat_val m_strip(chat_ctx *r, chat_val s, const chat_args *a) { (void)r, (void)a; return chat_v_str(chat_trim(s.s, 1, 1)); }
static chat_val m_lstrip(chat_ctx *r, chat_val s, const chat_args *a) { (void)r, (void)a; return chat_v_str(chat_trim(s.s, 1, 0)); }
static chat_val m_rstrip(chat_ctx *r, chat_val s, const chat_args *a) { (void)r, (void)a; return chat_v_str(chat_trim(s.s, 0, 1)); }

static int affix(chat_str s, chat_str x, int end)
{
    return x.n <= s.n && !memcmp(end ? s.p + s.n - x.n : s.p, x.p, x.n);
}

static chat_val fix_common(chat_ctx *r, chat_val s, const chat_args *a, int end)
{
    const char *name = end ? "endswith" : "startswith";
    if (!a->n) chat_fail_r(r, "%s() requires at least one argument", name);
    chat_val p = a->v[0];
    if (p.kind == CV_STR) return chat_v_bool(affix(s.s, p.s, end));
    if (p.kind != CV_ARRAY) chat_fail_r(r, "%s() argument must be a string or tuple of strings", name);
    for (size_t i = 0; i < p.l->n; i++) {
        if (p.l->v[i].kind != CV_STR) chat_fail_r(r, "%s() tuple elements must be strings", name);
        if (affix(s.s, p.l->v[i].s, end)) return chat_v_bool(1);
    }
    return chat_v_bool(0);
}

static chat_val m_startswith(chat_ctx *r, chat_val s, const chat_args *a) { return fix_common(r, s, a, 0); }
static chat_val m_endswith(chat_ctx *r, chat_val s, const chat_args *a) { return fix_common(r, s, a, 1); }

static chat_val m_split(chat_ctx *r, chat_val self, const chat_args *a)
{
    chat_val sep = chat_arg(a, 0, NULL), maxv = chat_arg(a, 1, NULL);
    if (sep.kind == CV_UNDEF) sep = chat_v_null();
    if (sep.kind != CV_STR && sep.kind != CV_NULL) chat_fail_r(r, "sep argument must be a string or null");
    if (maxv.kind != CV_UNDEF && maxv.kind != CV_INT) chat_fail_r(r, "maxsplit argument must be a number");
    double max = maxv.kind == CV_INT ? maxv.num : -1;
    chat_str s = self.s;
    chat_list *l = chat_list_new(r, 0);
    if (sep.kind == CV_NULL) {
        s = chat_trim(s, 1, 0);
        for (size_t i = 0; i < s.n;) {
            size_t j = i;
            uint32_t c = chat_utf8_next(s, &j);
            if (chat_js_space(c)) { i = j; continue; }
            size_t st = i;
            if (max >= 0 && (double)l->n >= max) {
                chat_list_push(r, l, chat_v_str((chat_str){s.p + st, s.n - st}));
                break;
            }
            while (i < s.n) {
                size_t k = i;
                if (chat_js_space(chat_utf8_next(s, &k))) break;
                i = k;
            }
            chat_list_push(r, l, chat_v_str((chat_str){s.p + st, i - st}));
        }
        return chat_v_list(l);
    }
    if (!sep.s.n) chat_fail_r(r, "empty separator");
    size_t st = 0;
    for (size_t i = 0; i + sep.s.n <= s.n;) {
        if (memcmp(s.p + i, sep.s.p, sep.s.n)) { i++; continue; }
        if (max >= 0 && (double)l->n >= max) break;
        chat_list_push(r, l, chat_v_str((chat_str){s.p + st, i - st}));
        i += sep.s.n, st = i;
    }
    chat_list_push(r, l, chat_v_str((chat_str){s.p + st, s.n - st}));
    return chat_v_list(l);
}

static chat_val m_replace(chat_ctx *r, chat_val s, const chat_args *a)
{
    if (a->n < 2) chat_fail_r(r, "replace() requires at least two arguments");
    if (a->v[0].kind != CV_STR || a->v[1].kind != CV_STR) chat_fail_r(r, "replace() arguments must be strings");
    chat_val count = chat_arg(a, 2, "count");
    if (count.kind != CV_UNDEF && count.kind != CV_NULL && count.kind != CV_INT)
        chat_fail_r(r, "replace() count argument must be a number or null");
    return chat_v_str(chat_replace(r, s.s, a->v[0].s, a->v[1].s, count.kind == CV_INT ? count.num : -1));
}

static chat_val m_join(chat_ctx *r, chat_val s, const chat_args *a)
{
    chat_val l = chat_arg(a, 0, NULL);
    if (l.kind != CV_ARRAY) chat_fail_r(r, "join() takes a list");
    chat_sb b = {.e = r->e};
    for (size_t i = 0; i < l.l->n; i++) {
        if (l.l->v[i].kind != CV_STR) chat_fail_r(r, "join(): item %zu is not a string", i);
        if (i) chat_sb_put(&b, s.s.p, s.s.n);
        chat_sb_put(&b, l.l->v[i].s.p, l.l->v[i].s.n);
    }
    return chat_v_str(chat_sb_str(&b));
}

static chat_val find_count(chat_ctx *r, chat_val s, const chat_args *a, int count)
{
    chat_val x = chat_arg(a, 0, NULL);
    if (x.kind != CV_STR) chat_fail_r(r, "%s() takes a string", count ? "count" : "find");
    double n = 0;
    for (size_t i = 0, u = 0; i + x.s.n <= s.s.n;) {
        if (!memcmp(s.s.p + i, x.s.p, x.s.n)) {
            if (!count) return chat_v_int((double)u);
            n++;
            i += x.s.n ? x.s.n : 1;
            continue;
        }
        u += ((unsigned char)s.s.p[i] & 0xC0) != 0x80;
        i++;
    }
    return chat_v_int(count ? n : -1);
}

static chat_val m_find(chat_ctx *r, chat_val s, const chat_args *a) { return find_count(r, s, a, 0); }
static chat_val m_count(chat_ctx *r, chat_val s, const chat_args *a) { return find_count(r, s, a, 1); }

/* ---- object methods ---- */

static chat_val m_get(chat_ctx *r, chat_val o, const chat_args *a)
{
    chat_val k = chat_arg(a, 0, NULL), d = chat_arg(a, 1, NULL);
    if (k.kind != CV_STR) chat_fail_r(r, "object key must be a string: got %s", chat_type_name(k));
    if (chat_dict_has(o.d, k.s)) return chat_dict_get(o.d, k.s);
    return d.kind == CV_UNDEF && a->n < 2 ? chat_v_null() : d;
}

static chat_val pairs(chat_ctx *r, const chat_dict *d, int what)
{
    chat_list *l = chat_list_new(r, d->n);
    for (size_t i = 0; i < d->n; i++) {
        if (what == 'k') l->v[i] = chat_v_str(d->k[i]);
        else if (what == 'v') l->v[i] = d->v[i];
        else {
            chat_list *p = chat_list_new(r, 2);
            p->v[0] = chat_v_str(d->k[i]), p->v[1] = d->v[i];
            l->v[i] = chat_v_list(p);
        }
    }
    return chat_v_list(l);
}

static chat_val m_items(chat_ctx *r, chat_val o, const chat_args *a) { (void)a; return pairs(r, o.d, 'i'); }
static chat_val m_keys(chat_ctx *r, chat_val o, const chat_args *a) { (void)a; return pairs(r, o.d, 'k'); }
static chat_val m_values(chat_ctx *r, chat_val o, const chat_args *a) { (void)a; return pairs(r, o.d, 'v'); }

static chat_val m_dictsort(chat_ctx *r, chat_val o, const chat_args *a)
{
    chat_val cs = chat_arg(a, 0, "case_sensitive"), by = chat_arg(a, 1, "by"), rev = chat_arg(a, 2, "reverse");
    if (cs.kind != CV_UNDEF && cs.kind != CV_BOOL) chat_fail_r(r, "case_sensitive must be a boolean");
    if (rev.kind != CV_UNDEF && rev.kind != CV_BOOL) chat_fail_r(r, "reverse must be a boolean");
    if (by.kind != CV_UNDEF && (by.kind != CV_STR || (!chat_str_eq(by.s, "key") && !chat_str_eq(by.s, "value"))))
        chat_fail_r(r, "by must be either 'key' or 'value'");
    int idx = by.kind == CV_STR && chat_str_eq(by.s, "value"), sens = cs.kind == CV_BOOL && cs.b;
    int sign = rev.kind == CV_BOOL && rev.b ? -1 : 1;
    chat_val items = pairs(r, o.d, 'i');
    chat_list *l = items.l;
    for (size_t i = 1; i < l->n; i++)
        for (size_t j = i; j > 0; j--) {
            int c = chat_compare(r, l->v[j - 1].l->v[idx], l->v[j].l->v[idx], sens) * sign;
            if (c <= 0) break;
            chat_val t = l->v[j];
            l->v[j] = l->v[j - 1], l->v[j - 1] = t;
        }
    return items;
}

static const struct {
    const char *name;
    chat_builtin_fn fn;
    char on; /* 's' strings, 'o' objects */
} METHODS[] = {
    {"upper", m_upper, 's'},         {"lower", m_lower, 's'},     {"strip", m_strip, 's'},
    {"title", m_title, 's'},         {"capitalize", m_capitalize, 's'}, {"rstrip", m_rstrip, 's'},
    {"lstrip", m_lstrip, 's'},       {"startswith", m_startswith, 's'}, {"endswith", m_endswith, 's'},
    {"split", m_split, 's'},         {"replace", m_replace, 's'}, {"join", m_join, 's'},
    {"find", m_find, 's'},           {"count", m_count, 's'},     {"get", m_get, 'o'},
    {"items", m_items, 'o'},         {"keys", m_keys, 'o'},       {"values", m_values, 'o'},
    {"dictsort", m_dictsort, 'o'},
};

chat_val chat_method(chat_ctx *r, chat_val obj, chat_str name)
{
    if ((obj.kind == CV_STR || obj.kind == CV_ARRAY) && chat_str_eq(name, "length"))
        return chat_v_int(obj.kind == CV_STR ? (double)chat_u16_len(obj.s) : (double)obj.l->n);
    char on = obj.kind == CV_STR ? 's' : obj.kind == CV_OBJECT ? 'o' : 0;
    for (size_t i = 0; on && i < sizeof METHODS / sizeof METHODS[0]; i++)
        if (METHODS[i].on == on && chat_str_eq(name, METHODS[i].name))
            return chat_func_val(r, METHODS[i].name, METHODS[i].fn, obj);
    return chat_v_undef();
}

/* ---- global functions ---- */

static void namespace_entry(chat_ctx *r, chat_dict *d, chat_val pair)
{
    const chat_list *kv = pair.kind == CV_ARRAY ? pair.l : pair.kind == CV_STR ? chat_chars(r, pair.s) : NULL;
    if (!kv || kv->n != 2) chat_fail_r(r, "namespace expected an object or an iterable of [key, value] pairs");
    if (kv->v[0].kind != CV_STR) chat_fail_r(r, "namespace keys must be strings");
    chat_dict_put(r, d, kv->v[0].s, kv->v[1]);
}

static chat_val g_namespace(chat_ctx *r, chat_val self, const chat_args *a)
{
    (void)self;
    chat_dict *d = chat_dict_new(r);
    if (a->n > 1) chat_fail_r(r, "namespace expected at most 1 argument, got %zu", a->n);
    if (a->n == 1) {
        chat_val src = a->v[0];
        if (src.kind == CV_OBJECT)
            for (size_t i = 0; i < src.d->n; i++) chat_dict_put(r, d, src.d->k[i], src.d->v[i]);
        else if (src.kind == CV_ARRAY)
            for (size_t i = 0; i < src.l->n; i++) namespace_entry(r, d, src.l->v[i]);
        else chat_fail_r(r, "'%s' object is not iterable", chat_type_name(src));
    }
    for (size_t i = 0; a->kw && i < a->kw->n; i++) chat_dict_put(r, d, a->kw->k[i], a->kw->v[i]);
    return (chat_val){.kind = CV_NS, .d = d};
}

static chat_val g_raise_exception(chat_ctx *r, chat_val self, const chat_args *a)
{
    (void)self;
    chat_val m = chat_arg(a, 0, NULL);
    chat_str s = m.kind == CV_UNDEF ? (chat_str){"", 0} : m.kind == CV_NULL ? (chat_str){"null", 4} : chat_to_str(r, m);
    r->e->raised = 1;
    chat_fail_r(r, "%.*s", (int)s.n, s.p);
}

static chat_val g_range(chat_ctx *r, chat_val self, const chat_args *a)
{
    (void)self;
    for (size_t i = 0; i < a->n; i++)
        if (!chat_is_num(a->v[i])) chat_fail_r(r, "range() arguments must be numbers");
    if (!a->n || a->n > 3) chat_fail_r(r, "range() takes 1 to 3 arguments");
    double start = a->n > 1 ? a->v[0].num : 0, stop = a->n > 1 ? a->v[1].num : a->v[0].num;
    double step = a->n > 2 ? a->v[2].num : 1;
    if (step == 0) chat_fail_r(r, "range() step must not be zero");
    chat_list *l = chat_list_new(r, 0);
    for (double i = start; step > 0 ? i < stop : i > stop; i += step) {
        chat_count_iteration(r, r->off);
        chat_list_push(r, l, chat_v_num(i, i != floor(i)));
    }
    return chat_v_list(l);
}

static chat_val g_strftime_now(chat_ctx *r, chat_val self, const chat_args *a)
{
    (void)self;
    chat_val f = chat_arg(a, 0, NULL);
    if (f.kind != CV_STR) chat_fail_r(r, "strftime_now() takes a format string");
    return chat_v_str(chat_strftime(r, f.s, r->now));
}

void chat_bind_globals(chat_ctx *r, chat_env *env)
{
    static const struct {
        const char *name;
        chat_builtin_fn fn;
    } fns[] = {{"namespace", g_namespace}, {"raise_exception", g_raise_exception}, {"range", g_range},
               {"strftime_now", g_strftime_now}};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        chat_env_set(r, env, (chat_str){fns[i].name, strlen(fns[i].name)},
                     chat_func_val(r, fns[i].name, fns[i].fn, chat_v_undef()));
    static const char *const consts[] = {"true", "True", "false", "False", "none", "None"};
    for (int i = 0; i < 6; i++)
        chat_env_set(r, env, (chat_str){consts[i], strlen(consts[i])},
                     i < 4 ? chat_v_bool(i < 2) : chat_v_null());
}
