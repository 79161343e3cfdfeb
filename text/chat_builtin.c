/* chat_builtin.c - the filters, tests, functions and methods chat templates
 * may use. Each name is listed once here; the parser refuses all others at
 * load. Semantics follow Python/Jinja; case mapping is ASCII-only. */
#include <string.h>

#include "chat_internal.h"

static int in_list(chat_str name, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (chat_str_eq(name, list[i])) return 1;
    return 0;
}

static const char *const FILTERS[] = {"trim", "length", "count", "upper", "lower", "title", "capitalize",
                                      "default", "d", "tojson", "string", "first", "last", "join", NULL};
static const char *const TESTS[] = {"defined", "undefined", "none", "string", "number", "integer", "boolean",
                                    "mapping", "sequence", "iterable", "true", "false", "odd", "even", NULL};
static const char *const FUNCTIONS[] = {"raise_exception", "namespace", "range", NULL};
static const char *const METHODS[] = {"strip", "lstrip", "rstrip", "startswith", "endswith", "split", "title",
                                      "upper", "lower", "capitalize", "replace", "get", NULL};

int chat_known_filter(chat_str name) { return in_list(name, FILTERS); }
int chat_known_test(chat_str name) { return in_list(name, TESTS); }
int chat_known_function(chat_str name) { return in_list(name, FUNCTIONS); }
int chat_known_method(chat_str name) { return in_list(name, METHODS); }

/* ---- arguments ---- */

typedef struct {
    chat_val v[4];
    int given[4];
} args;

/* Binds positional and keyword arguments of n to the parameter names. */
static void bind_args(chat_render_ctx *r, const chat_node *n, const char *const *params, args *a)
{
    int np = 0;
    while (params[np]) np++;
    memset(a, 0, sizeof *a);
    if (n->n_kids > (size_t)np)
        chat_fail(r->e, n->off, "'%.*s' takes at most %d argument(s)", (int)n->s.n, n->s.p, np);
    for (size_t i = 0; i < n->n_kids; i++) a->v[i] = chat_eval_expr(r, n->kids[i]), a->given[i] = 1;
    for (size_t i = 0; i < n->n_kw; i++) {
        int k = 0;
        while (k < np && !chat_str_eq(n->names[i], params[k])) k++;
        if (k == np)
            chat_fail(r->e, n->kw[i]->off, "'%.*s' got an unexpected keyword argument '%.*s'", (int)n->s.n,
                      n->s.p, (int)n->names[i].n, n->names[i].p);
        a->v[k] = chat_eval_expr(r, n->kw[i]), a->given[k] = 1;
    }
}

static chat_str want_str(chat_render_ctx *r, const chat_node *n, chat_val v, const char *what)
{
    if (v.kind == CV_UNDEF) chat_fail_undefined(r, v, n->off);
    if (v.kind != CV_STR) chat_fail(r->e, n->off, "%s must be a string, not '%s'", what, chat_type_name(v));
    return v.s;
}

/* ---- string helpers ---- */

static char up(char c) { return c >= 'a' && c <= 'z' ? (char)(c - 32) : c; }
static char low(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }
static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (unsigned char)c >= 0x80; }

static chat_str map_case(chat_render_ctx *r, chat_str s, int mode)
{
    char *p = chat_alloc(r->e, s.n + 1);
    int prev_alpha = 0, word_start = 1;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        switch (mode) {
        case 'U': c = up(c); break;
        case 'L': c = low(c); break;
        case 'C': c = i == 0 ? up(c) : low(c); break;
        case 'T': c = prev_alpha ? low(c) : up(c); break; /* str.title(): words are runs of letters */
        case 'J':                                         /* Jinja's |title: words start after - space ( { [ < */
            c = word_start ? up(c) : low(c);
            word_start = strchr("- \t\n\r\v\f({[<", c) != NULL;
            break;
        }
        prev_alpha = is_alpha(c);
        p[i] = c;
    }
    return (chat_str){p, s.n};
}

static int in_chars(chat_str chars, const char *p, size_t w)
{
    for (size_t i = 0; i + w <= chars.n; i++)
        if (memcmp(chars.p + i, p, w) == 0) return 1;
    return 0;
}

/* str.strip/lstrip/rstrip: whitespace, or any character of chars. */
static chat_str strip(chat_str s, const chat_str *chars, int left, int right)
{
    size_t a = 0, b = s.n, w;
    while (left && a < b) {
        int hit = chars ? (w = chat_utf8_offset((chat_str){s.p + a, b - a}, 1), in_chars(*chars, s.p + a, w))
                        : chat_is_space_at(s, a, &w);
        if (!hit) break;
        a += w;
    }
    while (right && b > a) {
        int hit = chat_is_space_before((chat_str){s.p + a, b - a}, b - a, &w);
        if (chars) hit = in_chars(*chars, s.p + b - w, w);
        if (!hit) break;
        b -= w;
    }
    return (chat_str){s.p + a, b - a};
}

static void list_push(chat_render_ctx *r, chat_list *l, size_t *cap, chat_val v)
{
    if (l->n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        chat_val *nv = chat_alloc(r->e, *cap * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
    }
    l->v[l->n++] = v;
}

/* str.split(sep=None, maxsplit=-1). */
static chat_val split(chat_render_ctx *r, const chat_node *n, chat_str s, const args *a)
{
    chat_list *l = chat_list_new(r, 0);
    size_t cap = 0, i = 0, w;
    int64_t max = a->given[1] && a->v[1].kind == CV_INT ? a->v[1].i : -1;
    if (a->given[0] && a->v[0].kind != CV_NONE) {
        chat_str sep = want_str(r, n, a->v[0], "separator");
        if (!sep.n) chat_fail(r->e, n->off, "empty separator");
        size_t start = 0;
        for (i = 0; i + sep.n <= s.n && max != 0;) {
            if (memcmp(s.p + i, sep.p, sep.n) != 0) { i++; continue; }
            list_push(r, l, &cap, chat_v_str((chat_str){s.p + start, i - start}));
            i += sep.n, start = i, max--;
        }
        list_push(r, l, &cap, chat_v_str((chat_str){s.p + start, s.n - start}));
        return (chat_val){.kind = CV_LIST, .l = l};
    }
    for (;;) {
        while (i < s.n && chat_is_space_at(s, i, &w)) i += w;
        if (i >= s.n) break;
        size_t start = i;
        if (max == 0) {
            chat_str rest = strip((chat_str){s.p + i, s.n - i}, NULL, 0, 1);
            list_push(r, l, &cap, chat_v_str(rest));
            break;
        }
        while (i < s.n && !chat_is_space_at(s, i, &w)) i += w;
        list_push(r, l, &cap, chat_v_str((chat_str){s.p + start, i - start}));
        max--;
    }
    return (chat_val){.kind = CV_LIST, .l = l};
}

static chat_val replace(chat_render_ctx *r, const chat_node *n, chat_str s, const args *a)
{
    chat_str old = want_str(r, n, a->v[0], "replace() argument 1");
    chat_str rep = want_str(r, n, a->v[1], "replace() argument 2");
    int64_t max = a->given[2] && a->v[2].kind == CV_INT ? a->v[2].i : -1;
    if (!old.n) chat_fail(r->e, n->off, "replace() with an empty pattern is not supported");
    chat_sb b = {.e = r->e};
    size_t i = 0;
    while (i < s.n) {
        if (max != 0 && i + old.n <= s.n && memcmp(s.p + i, old.p, old.n) == 0) {
            chat_sb_put(&b, rep.p, rep.n);
            i += old.n, max--;
        } else {
            chat_sb_put(&b, s.p + i++, 1);
        }
    }
    return chat_v_str(chat_sb_str(&b));
}

static int affix(chat_str s, chat_str x, int end)
{
    if (x.n > s.n) return 0;
    return memcmp(end ? s.p + s.n - x.n : s.p, x.p, x.n) == 0;
}

/* ---- methods ---- */

static chat_val string_method(chat_render_ctx *r, const chat_node *n, chat_str s)
{
    static const char *const p_strip[] = {"chars", NULL}, *const p_fix[] = {"prefix", NULL},
                             *const p_split[] = {"sep", "maxsplit", NULL}, *const p_none[] = {NULL},
                             *const p_rep[] = {"old", "new", "count", NULL};
    args a;
    chat_str m = n->s;
    if (chat_str_eq(m, "strip") || chat_str_eq(m, "lstrip") || chat_str_eq(m, "rstrip")) {
        bind_args(r, n, p_strip, &a);
        chat_str chars = {0};
        int have = a.given[0] && a.v[0].kind != CV_NONE;
        if (have) chars = want_str(r, n, a.v[0], "strip() argument");
        return chat_v_str(strip(s, have ? &chars : NULL, m.p[0] != 'r', m.p[0] != 'l'));
    }
    if (chat_str_eq(m, "startswith") || chat_str_eq(m, "endswith")) {
        bind_args(r, n, p_fix, &a);
        if (!a.given[0]) chat_fail(r->e, n->off, "%.*s() takes exactly one argument", (int)m.n, m.p);
        return chat_v_bool(affix(s, want_str(r, n, a.v[0], "argument"), m.p[0] == 'e'));
    }
    if (chat_str_eq(m, "split")) return bind_args(r, n, p_split, &a), split(r, n, s, &a);
    if (chat_str_eq(m, "replace")) {
        bind_args(r, n, p_rep, &a);
        if (!a.given[1]) chat_fail(r->e, n->off, "replace() takes at least 2 arguments");
        return replace(r, n, s, &a);
    }
    bind_args(r, n, p_none, &a);
    int mode = chat_str_eq(m, "upper") ? 'U' : chat_str_eq(m, "lower") ? 'L' : chat_str_eq(m, "title") ? 'T' : 'C';
    if (!chat_str_eq(m, "capitalize") && mode == 'C')
        chat_fail(r->e, n->off, "'str' object has no attribute '%.*s'", (int)m.n, m.p);
    return chat_v_str(map_case(r, s, mode));
}

chat_val chat_call_method(chat_render_ctx *r, const chat_node *n, chat_val obj)
{
    if (obj.kind == CV_UNDEF) chat_fail_undefined(r, obj, n->off);
    if (obj.kind == CV_STR) return string_method(r, n, obj.s);
    if ((obj.kind == CV_DICT || obj.kind == CV_NS) && chat_str_eq(n->s, "get")) {
        static const char *const p_get[] = {"key", "default", NULL};
        args a;
        bind_args(r, n, p_get, &a);
        chat_val v = chat_dict_get(obj.d, want_str(r, n, a.v[0], "get() key"));
        return v.kind != CV_UNDEF ? v : a.given[1] ? a.v[1] : (chat_val){.kind = CV_NONE};
    }
    chat_fail(r->e, n->off, "'%s' object has no method '%.*s'", chat_type_name(obj), (int)n->s.n, n->s.p);
}

/* ---- functions ---- */

static chat_val range(chat_render_ctx *r, const chat_node *n)
{
    static const char *const p[] = {"start", "stop", "step", NULL};
    args a;
    bind_args(r, n, p, &a);
    for (size_t i = 0; i < n->n_kids; i++)
        if (a.v[i].kind != CV_INT) chat_fail(r->e, n->off, "range() arguments must be integers");
    if (n->n_kids == 0 || n->n_kw) chat_fail(r->e, n->off, "range() takes 1 to 3 positional arguments");
    int64_t start = n->n_kids > 1 ? a.v[0].i : 0, stop = n->n_kids > 1 ? a.v[1].i : a.v[0].i;
    int64_t step = n->n_kids > 2 ? a.v[2].i : 1;
    if (step == 0) chat_fail(r->e, n->off, "range() step must not be zero");
    size_t count = 0;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
        if (++count > r->lim.max_iterations)
            chat_fail(r->e, n->off, "range() longer than the iteration limit of %zu", r->lim.max_iterations);
    chat_list *l = chat_list_new(r, count);
    for (size_t k = 0; k < count; k++) l->v[k] = chat_v_int(start + (int64_t)k * step);
    return (chat_val){.kind = CV_LIST, .l = l};
}

chat_val chat_call_function(chat_render_ctx *r, const chat_node *n)
{
    if (chat_str_eq(n->s, "range")) return range(r, n);
    if (chat_str_eq(n->s, "namespace")) {
        chat_dict *d = chat_alloc(r->e, sizeof *d);
        memset(d, 0, sizeof *d);
        if (n->n_kids) chat_fail(r->e, n->off, "namespace() takes keyword arguments only");
        for (size_t i = 0; i < n->n_kw; i++) chat_dict_put(r, d, n->names[i], chat_eval_expr(r, n->kw[i]));
        return (chat_val){.kind = CV_NS, .d = d};
    }
    /* raise_exception(message): the message becomes the whole error text */
    if (n->n_kids != 1 || n->n_kw) chat_fail(r->e, n->off, "raise_exception() takes one argument");
    chat_str msg = chat_to_str(r, chat_eval_expr(r, n->kids[0]), n->off);
    r->e->raised = 1;
    chat_fail(r->e, n->off, "%.*s", (int)msg.n, msg.p);
}

/* ---- filters ---- */

static chat_val length(chat_render_ctx *r, const chat_node *n, chat_val x)
{
    switch (x.kind) {
    case CV_UNDEF: return chat_v_int(0);
    case CV_STR: return chat_v_int((int64_t)chat_utf8_len(x.s));
    case CV_LIST: return chat_v_int((int64_t)x.l->n);
    case CV_DICT: case CV_NS: return chat_v_int((int64_t)x.d->n);
    default: chat_fail(r->e, n->off, "object of type '%s' has no len()", chat_type_name(x));
    }
}

static chat_val first_last(chat_render_ctx *r, const chat_node *n, chat_val x, int last)
{
    size_t len = x.kind == CV_LIST ? x.l->n : x.kind == CV_STR ? chat_utf8_len(x.s) : 0;
    if (x.kind == CV_UNDEF) chat_fail_undefined(r, x, n->off);
    if (x.kind != CV_LIST && x.kind != CV_STR)
        chat_fail(r->e, n->off, "'%s' object is not a sequence", chat_type_name(x));
    if (!len) return (chat_val){.kind = CV_UNDEF, .s = {"item", 4}};
    size_t i = last ? len - 1 : 0;
    if (x.kind == CV_LIST) return x.l->v[i];
    size_t a = chat_utf8_offset(x.s, (int64_t)i), b = chat_utf8_offset(x.s, (int64_t)i + 1);
    return chat_v_str((chat_str){x.s.p + a, b - a});
}

static chat_val join(chat_render_ctx *r, const chat_node *n, chat_val x, const args *a)
{
    chat_str sep = a->given[0] ? chat_to_str(r, a->v[0], n->off) : (chat_str){"", 0};
    const chat_list *l = x.kind == CV_LIST ? x.l : NULL;
    if (x.kind == CV_UNDEF) return chat_v_str((chat_str){"", 0});
    if (!l) chat_fail(r->e, n->off, "join expects a list, not '%s'", chat_type_name(x));
    chat_sb b = {.e = r->e};
    for (size_t i = 0; i < l->n; i++) {
        if (i) chat_sb_put(&b, sep.p, sep.n);
        chat_str s = chat_to_str(r, l->v[i], n->off);
        chat_sb_put(&b, s.p, s.n);
    }
    return chat_v_str(chat_sb_str(&b));
}

static chat_val tojson(chat_render_ctx *r, const chat_node *n, chat_val x, const args *a)
{
    int64_t indent = -1;
    if (a->given[0] && a->v[0].kind == CV_INT) indent = a->v[0].i < 0 ? 0 : a->v[0].i;
    else if (a->given[0] && a->v[0].kind != CV_NONE) chat_fail(r->e, n->off, "tojson indent must be an integer");
    if (x.kind == CV_UNDEF) chat_fail_undefined(r, x, n->off);
    chat_sb b = {.e = r->e};
    if (!chat_json(&b, x, indent, 0))
        chat_fail(r->e, n->off, "object of type '%s' is not JSON serializable", chat_type_name(x));
    return chat_v_str(chat_sb_str(&b));
}

chat_val chat_apply_filter(chat_render_ctx *r, const chat_node *n, chat_val x)
{
    static const char *const p_none[] = {NULL}, *const p_trim[] = {"chars", NULL},
                             *const p_def[] = {"default_value", "boolean", NULL},
                             *const p_json[] = {"indent", NULL}, *const p_join[] = {"d", NULL};
    chat_str f = n->s;
    args a;
    if (chat_str_eq(f, "default") || chat_str_eq(f, "d")) {
        bind_args(r, n, p_def, &a);
        int use = x.kind == CV_UNDEF || (chat_truthy(a.v[1]) && !chat_truthy(x));
        return use ? (a.given[0] ? a.v[0] : chat_v_str((chat_str){"", 0})) : x;
    }
    if (chat_str_eq(f, "tojson")) return bind_args(r, n, p_json, &a), tojson(r, n, x, &a);
    if (chat_str_eq(f, "join")) return bind_args(r, n, p_join, &a), join(r, n, x, &a);
    if (chat_str_eq(f, "trim")) {
        bind_args(r, n, p_trim, &a);
        chat_str chars = {0};
        int have = a.given[0] && a.v[0].kind != CV_NONE;
        if (have) chars = want_str(r, n, a.v[0], "trim chars");
        return chat_v_str(strip(chat_to_str(r, x, n->off), have ? &chars : NULL, 1, 1));
    }
    bind_args(r, n, p_none, &a);
    if (chat_str_eq(f, "length") || chat_str_eq(f, "count")) return length(r, n, x);
    if (chat_str_eq(f, "first") || chat_str_eq(f, "last")) return first_last(r, n, x, f.p[0] == 'l');
    chat_str s = chat_to_str(r, x, n->off);
    if (chat_str_eq(f, "string")) return chat_v_str(s);
    int mode = chat_str_eq(f, "upper") ? 'U' : chat_str_eq(f, "lower") ? 'L' : chat_str_eq(f, "title") ? 'J' : 'C';
    return chat_v_str(map_case(r, s, mode));
}

/* ---- tests ---- */

int chat_apply_test(chat_render_ctx *r, const chat_node *n, chat_val x)
{
    chat_str t = n->s;
    chat_vkind k = x.kind;
    if (chat_str_eq(t, "defined")) return k != CV_UNDEF;
    if (chat_str_eq(t, "undefined")) return k == CV_UNDEF;
    if (chat_str_eq(t, "none")) return k == CV_NONE;
    if (chat_str_eq(t, "string")) return k == CV_STR;
    if (chat_str_eq(t, "number")) return k == CV_INT || k == CV_BOOL;
    if (chat_str_eq(t, "integer")) return k == CV_INT;
    if (chat_str_eq(t, "boolean")) return k == CV_BOOL;
    if (chat_str_eq(t, "mapping")) return k == CV_DICT;
    if (chat_str_eq(t, "sequence")) return k == CV_STR || k == CV_LIST || k == CV_DICT;
    if (chat_str_eq(t, "iterable")) return k == CV_STR || k == CV_LIST || k == CV_DICT || k == CV_UNDEF;
    if (chat_str_eq(t, "true")) return k == CV_BOOL && x.i;
    if (chat_str_eq(t, "false")) return k == CV_BOOL && !x.i;
    if (k == CV_UNDEF) chat_fail_undefined(r, x, n->off);
    if (k != CV_INT) chat_fail(r->e, n->off, "'%.*s' test needs an integer", (int)t.n, t.p);
    return chat_str_eq(t, "odd") ? (x.i & 1) != 0 : (x.i & 1) == 0;
}
