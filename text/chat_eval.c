/* chat_eval.c - renders a parsed chat template: statements, scopes and
 * expressions with Jinja's semantics (a for body gets a fresh scope per
 * iteration, so set inside a loop does not leak out, which is why templates
 * use namespace(); if bodies share their parent's scope; undefined values
 * print as nothing but fail when used in arithmetic or attribute access). */
#include <stdlib.h>
#include <string.h>

#include "chat_internal.h"
#include "shardlm_common.h"

struct chat_frame {
    chat_frame *up;
    chat_dict vars;
};

void chat_frame_push(chat_render_ctx *r)
{
    chat_frame *f = chat_alloc(r->e, sizeof *f);
    memset(f, 0, sizeof *f);
    f->up = r->frame;
    r->frame = f;
}

void chat_frame_set(chat_render_ctx *r, chat_str name, chat_val v) { chat_dict_put(r, &r->frame->vars, name, v); }

static chat_val lookup(chat_render_ctx *r, chat_str name)
{
    for (chat_frame *f = r->frame; f; f = f->up) {
        chat_val v = chat_dict_get(&f->vars, name);
        if (v.kind != CV_UNDEF) return v;
    }
    if (chat_known_function(name)) return (chat_val){.kind = CV_FUNC, .s = name};
    return (chat_val){.kind = CV_UNDEF, .s = name};
}

static void out_put(chat_render_ctx *r, chat_str s, uint32_t off)
{
    if (s.n > r->lim.max_output - r->out_len)
        chat_fail(r->e, off, "rendered text exceeds the output limit of %zu bytes", r->lim.max_output);
    if (r->out_len + s.n + 1 > r->out_cap) {
        size_t cap = r->out_cap ? r->out_cap : 256;
        while (cap < r->out_len + s.n + 1) cap *= 2;
        char *p = realloc(r->out, cap);
        if (!p) {
            r->e->status = SHARDLM_ENOMEM;
            chat_fail(r->e, off, "out of memory");
        }
        r->out = p, r->out_cap = cap;
    }
    memcpy(r->out + r->out_len, s.p, s.n);
    r->out_len += s.n;
    r->out[r->out_len] = 0;
}

/* ---- expressions ---- */

static chat_val loop_attr(chat_render_ctx *r, const chat_loop *lp, chat_str name)
{
    size_t i = lp->index0, n = lp->items->n;
    (void)r;
    if (chat_str_eq(name, "index0")) return chat_v_int((int64_t)i);
    if (chat_str_eq(name, "index")) return chat_v_int((int64_t)i + 1);
    if (chat_str_eq(name, "revindex0")) return chat_v_int((int64_t)(n - i - 1));
    if (chat_str_eq(name, "revindex")) return chat_v_int((int64_t)(n - i));
    if (chat_str_eq(name, "first")) return chat_v_bool(i == 0);
    if (chat_str_eq(name, "last")) return chat_v_bool(i + 1 == n);
    if (chat_str_eq(name, "length")) return chat_v_int((int64_t)n);
    if (chat_str_eq(name, "previtem") && i > 0) return lp->items->v[i - 1];
    if (chat_str_eq(name, "nextitem") && i + 1 < n) return lp->items->v[i + 1];
    return (chat_val){.kind = CV_UNDEF, .s = name};
}

static chat_val get_attr(chat_render_ctx *r, chat_val obj, chat_str name, uint32_t off)
{
    switch (obj.kind) {
    case CV_UNDEF: chat_fail_undefined(r, obj, off);
    case CV_DICT: case CV_NS: return chat_dict_get(obj.d, name);
    case CV_LOOP: return loop_attr(r, obj.loop, name);
    default: return (chat_val){.kind = CV_UNDEF, .s = name};
    }
}

/* Python index i (negative counts from the end) into n items, or -1. */
static int64_t norm_index(int64_t i, size_t n)
{
    if (i < 0) i += (int64_t)n;
    return i >= 0 && (uint64_t)i < n ? i : -1;
}

static chat_val get_item(chat_render_ctx *r, chat_val obj, chat_val key, uint32_t off)
{
    if (obj.kind == CV_UNDEF) chat_fail_undefined(r, obj, off);
    if ((obj.kind == CV_DICT || obj.kind == CV_NS) && key.kind == CV_STR) return chat_dict_get(obj.d, key.s);
    if (obj.kind == CV_LOOP && key.kind == CV_STR) return loop_attr(r, obj.loop, key.s);
    if (key.kind != CV_INT && key.kind != CV_BOOL) return (chat_val){.kind = CV_UNDEF, .s = {"item", 4}};
    if (obj.kind == CV_LIST) {
        int64_t i = norm_index(key.i, obj.l->n);
        return i < 0 ? (chat_val){.kind = CV_UNDEF, .s = {"item", 4}} : obj.l->v[i];
    }
    if (obj.kind == CV_STR) {
        int64_t i = norm_index(key.i, chat_utf8_len(obj.s));
        if (i < 0) return (chat_val){.kind = CV_UNDEF, .s = {"item", 4}};
        size_t a = chat_utf8_offset(obj.s, i), b = chat_utf8_offset(obj.s, i + 1);
        return chat_v_str((chat_str){obj.s.p + a, b - a});
    }
    return (chat_val){.kind = CV_UNDEF, .s = {"item", 4}};
}

static int64_t slice_bound(chat_render_ctx *r, const chat_node *n, int64_t dflt, int64_t len, int64_t step)
{
    if (!n) return dflt;
    chat_val v = chat_eval_expr(r, n);
    if (v.kind == CV_NONE) return dflt;
    if (v.kind != CV_INT) chat_fail(r->e, n->off, "slice indices must be integers");
    int64_t i = v.i < 0 ? v.i + len : v.i;
    int64_t lo = step < 0 ? -1 : 0, hi = step < 0 ? len - 1 : len;
    return i < lo ? lo : i > hi ? hi : i;
}

/* Python slicing of a list or a string (by code points). */
static chat_val slice(chat_render_ctx *r, const chat_node *n)
{
    chat_val obj = chat_eval_expr(r, n->a);
    if (obj.kind == CV_UNDEF) chat_fail_undefined(r, obj, n->off);
    if (obj.kind != CV_LIST && obj.kind != CV_STR)
        chat_fail(r->e, n->off, "'%s' object is not subscriptable", chat_type_name(obj));
    int64_t len = (int64_t)(obj.kind == CV_LIST ? obj.l->n : chat_utf8_len(obj.s)), step = 1;
    if (n->d) {
        chat_val s = chat_eval_expr(r, n->d);
        if (s.kind != CV_INT || s.i == 0) chat_fail(r->e, n->off, "slice step must be a non-zero integer");
        step = s.i;
    }
    int64_t start = slice_bound(r, n->b, step < 0 ? len - 1 : 0, len, step);
    int64_t stop = slice_bound(r, n->c, step < 0 ? -1 : len, len, step);
    if (obj.kind == CV_STR && step == 1) { /* the common case, in one pass */
        size_t a = chat_utf8_offset(obj.s, start), b = stop > start ? chat_utf8_offset(obj.s, stop) : a;
        return chat_v_str((chat_str){obj.s.p + a, b - a});
    }
    const chat_list *src = obj.kind == CV_LIST ? obj.l : chat_utf8_chars(r, obj.s);
    size_t count = 0;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) count++;
    chat_list *l = chat_list_new(r, count);
    size_t k = 0;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) l->v[k++] = src->v[i];
    if (obj.kind == CV_LIST) return (chat_val){.kind = CV_LIST, .l = l};
    chat_sb b = {.e = r->e};
    for (size_t j = 0; j < count; j++) chat_sb_put(&b, l->v[j].s.p, l->v[j].s.n);
    return chat_v_str(chat_sb_str(&b));
}

_Noreturn static void bad_operands(chat_render_ctx *r, const chat_node *n, const char *op, chat_val a, chat_val b)
{
    if (a.kind == CV_UNDEF) chat_fail_undefined(r, a, n->off);
    if (b.kind == CV_UNDEF) chat_fail_undefined(r, b, n->off);
    chat_fail(r->e, n->off, "unsupported operand types for %s: '%s' and '%s'", op, chat_type_name(a),
              chat_type_name(b));
}

static int is_num(chat_val v) { return v.kind == CV_INT || v.kind == CV_BOOL; }

static chat_val concat_str(chat_render_ctx *r, chat_str a, chat_str b)
{
    chat_sb s = {.e = r->e};
    chat_sb_put(&s, a.p, a.n);
    chat_sb_put(&s, b.p, b.n);
    return chat_v_str(chat_sb_str(&s));
}

static chat_val add(chat_render_ctx *r, const chat_node *n, chat_val a, chat_val b)
{
    int64_t x;
    if (is_num(a) && is_num(b)) {
        if (__builtin_add_overflow(a.i, b.i, &x)) chat_fail(r->e, n->off, "integer overflow");
        return chat_v_int(x);
    }
    if (a.kind == CV_STR && b.kind == CV_STR) return concat_str(r, a.s, b.s);
    if (a.kind == CV_LIST && b.kind == CV_LIST) {
        chat_list *l = chat_list_new(r, a.l->n + b.l->n);
        if (a.l->n) memcpy(l->v, a.l->v, a.l->n * sizeof *l->v);
        if (b.l->n) memcpy(l->v + a.l->n, b.l->v, b.l->n * sizeof *l->v);
        return (chat_val){.kind = CV_LIST, .l = l};
    }
    bad_operands(r, n, "+", a, b);
}

static chat_val repeat(chat_render_ctx *r, const chat_node *n, chat_val s, int64_t k)
{
    if (k < 0) k = 0;
    if (s.kind == CV_STR && s.s.n && (uint64_t)k > r->lim.max_output / s.s.n)
        chat_fail(r->e, n->off, "string repetition exceeds the output limit");
    chat_sb b = {.e = r->e};
    for (int64_t i = 0; s.kind == CV_STR && i < k; i++) chat_sb_put(&b, s.s.p, s.s.n);
    return chat_v_str(chat_sb_str(&b));
}

static chat_val arith(chat_render_ctx *r, const chat_node *n, chat_val a, chat_val b)
{
    static const char *const names[] = {[OP_SUB] = "-", [OP_MUL] = "*", [OP_FLOORDIV] = "//", [OP_MOD] = "%"};
    if (n->op == OP_MUL && a.kind == CV_STR && is_num(b)) return repeat(r, n, a, b.i);
    if (n->op == OP_MUL && b.kind == CV_STR && is_num(a)) return repeat(r, n, b, a.i);
    if (!is_num(a) || !is_num(b)) bad_operands(r, n, names[n->op], a, b);
    int64_t x = 0;
    int ovf = 0;
    if (n->op == OP_SUB) ovf = __builtin_sub_overflow(a.i, b.i, &x);
    else if (n->op == OP_MUL) ovf = __builtin_mul_overflow(a.i, b.i, &x);
    else {
        if (b.i == 0) chat_fail(r->e, n->off, "integer division or modulo by zero");
        if (a.i == INT64_MIN && b.i == -1) chat_fail(r->e, n->off, "integer overflow");
        int64_t q = a.i / b.i, m = a.i % b.i;
        if (m != 0 && ((m < 0) != (b.i < 0))) q--, m += b.i; /* Python floors */
        x = n->op == OP_FLOORDIV ? q : m;
    }
    if (ovf) chat_fail(r->e, n->off, "integer overflow");
    return chat_v_int(x);
}

static int contains(chat_render_ctx *r, const chat_node *n, chat_val hay, chat_val needle)
{
    switch (hay.kind) {
    case CV_UNDEF: return 0; /* iterating an undefined value yields nothing */
    case CV_STR:
        if (needle.kind != CV_STR) chat_fail(r->e, n->off, "'in <string>' requires a string as left operand");
        if (needle.s.n == 0) return 1;
        for (size_t i = 0; i + needle.s.n <= hay.s.n; i++)
            if (memcmp(hay.s.p + i, needle.s.p, needle.s.n) == 0) return 1;
        return 0;
    case CV_LIST:
        for (size_t i = 0; i < hay.l->n; i++)
            if (chat_equal(hay.l->v[i], needle)) return 1;
        return 0;
    case CV_DICT: case CV_NS: return needle.kind == CV_STR && chat_dict_get(hay.d, needle.s).kind != CV_UNDEF;
    default: chat_fail(r->e, n->off, "argument of type '%s' is not iterable", chat_type_name(hay));
    }
}

static int compare(chat_render_ctx *r, const chat_node *n, chat_val a, chat_val b)
{
    int c;
    if (is_num(a) && is_num(b)) c = (a.i > b.i) - (a.i < b.i);
    else if (a.kind == CV_STR && b.kind == CV_STR) {
        size_t m = a.s.n < b.s.n ? a.s.n : b.s.n;
        c = m ? memcmp(a.s.p, b.s.p, m) : 0;
        if (c == 0) c = (a.s.n > b.s.n) - (a.s.n < b.s.n);
    } else {
        if (a.kind == CV_UNDEF) chat_fail_undefined(r, a, n->off);
        if (b.kind == CV_UNDEF) chat_fail_undefined(r, b, n->off);
        chat_fail(r->e, n->off, "ordering comparison not supported between '%s' and '%s'", chat_type_name(a),
                  chat_type_name(b));
    }
    switch (n->op) {
    case OP_LT: return c < 0;
    case OP_LE: return c <= 0;
    case OP_GT: return c > 0;
    default: return c >= 0;
    }
}

static chat_val binop(chat_render_ctx *r, const chat_node *n)
{
    chat_val a = chat_eval_expr(r, n->a), b = chat_eval_expr(r, n->b);
    switch (n->op) {
    case OP_EQ: return chat_v_bool(chat_equal(a, b));
    case OP_NE: return chat_v_bool(!chat_equal(a, b));
    case OP_LT: case OP_LE: case OP_GT: case OP_GE: return chat_v_bool(compare(r, n, a, b));
    case OP_IN: return chat_v_bool(contains(r, n, b, a));
    case OP_NOTIN: return chat_v_bool(!contains(r, n, b, a));
    case OP_ADD: return add(r, n, a, b);
    case OP_CONCAT: return concat_str(r, chat_to_str(r, a, n->off), chat_to_str(r, b, n->off));
    default: return arith(r, n, a, b);
    }
}

static chat_val list_or_dict(chat_render_ctx *r, const chat_node *n)
{
    if (n->kind == ND_LIST) {
        chat_list *l = chat_list_new(r, n->n_kids);
        for (size_t i = 0; i < n->n_kids; i++) l->v[i] = chat_eval_expr(r, n->kids[i]);
        return (chat_val){.kind = CV_LIST, .l = l};
    }
    chat_dict *d = chat_alloc(r->e, sizeof *d);
    memset(d, 0, sizeof *d);
    for (size_t i = 0; i < n->n_kids; i++) {
        chat_val k = chat_eval_expr(r, n->kids[i]);
        if (k.kind != CV_STR) chat_fail(r->e, n->kids[i]->off, "dict keys must be strings");
        chat_dict_put(r, d, k.s, chat_eval_expr(r, n->kw[i]));
    }
    return (chat_val){.kind = CV_DICT, .d = d};
}

static chat_val eval_expr_inner(chat_render_ctx *r, const chat_node *n)
{
    chat_val v;
    switch (n->kind) {
    case ND_LIT: return n->val;
    case ND_NAME: return lookup(r, n->s);
    case ND_ATTR: return get_attr(r, chat_eval_expr(r, n->a), n->s, n->off);
    case ND_INDEX: v = chat_eval_expr(r, n->a); return get_item(r, v, chat_eval_expr(r, n->b), n->off);
    case ND_SLICE: return slice(r, n);
    case ND_CALL: return chat_call_function(r, n);
    case ND_METHOD: return chat_call_method(r, n, chat_eval_expr(r, n->a));
    case ND_FILTER: return chat_apply_filter(r, n, chat_eval_expr(r, n->a));
    case ND_TEST: return chat_v_bool(chat_apply_test(r, n, chat_eval_expr(r, n->a)) != (n->ival != 0));
    case ND_NOT: return chat_v_bool(!chat_truthy(chat_eval_expr(r, n->a)));
    case ND_NEG:
        v = chat_eval_expr(r, n->a);
        if (v.kind == CV_UNDEF) chat_fail_undefined(r, v, n->off);
        if (!is_num(v) || v.i == INT64_MIN) chat_fail(r->e, n->off, "bad operand type for unary -: '%s'", chat_type_name(v));
        return chat_v_int(-v.i);
    case ND_AND: v = chat_eval_expr(r, n->a); return chat_truthy(v) ? chat_eval_expr(r, n->b) : v;
    case ND_OR: v = chat_eval_expr(r, n->a); return chat_truthy(v) ? v : chat_eval_expr(r, n->b);
    case ND_COND:
        if (chat_truthy(chat_eval_expr(r, n->b))) return chat_eval_expr(r, n->a);
        return n->c ? chat_eval_expr(r, n->c) : (chat_val){.kind = CV_UNDEF, .s = {"else", 4}};
    case ND_BIN: return binop(r, n);
    case ND_LIST: case ND_DICT: return list_or_dict(r, n);
    default: chat_fail(r->e, n->off, "internal error: statement used as expression");
    }
}

chat_val chat_eval_expr(chat_render_ctx *r, const chat_node *n)
{
    if (++r->depth > 4 * CHAT_MAX_DEPTH) chat_fail(r->e, n->off, "expression nesting too deep");
    chat_val v = eval_expr_inner(r, n);
    r->depth--;
    return v;
}

/* ---- statements ---- */

static void count_iteration(chat_render_ctx *r, uint32_t off)
{
    if (++r->iterations > r->lim.max_iterations)
        chat_fail(r->e, off, "loops ran more than %zu iterations", r->lim.max_iterations);
}

/* The items a for loop walks: a list, a dict's keys, a string's characters. */
static const chat_list *iterable(chat_render_ctx *r, chat_val v, uint32_t off)
{
    if (v.kind == CV_LIST) return v.l;
    if (v.kind == CV_UNDEF) return chat_list_new(r, 0);
    if (v.kind == CV_DICT) {
        chat_list *l = chat_list_new(r, v.d->n);
        for (size_t i = 0; i < v.d->n; i++) l->v[i] = chat_v_str(v.d->k[i]);
        return l;
    }
    if (v.kind == CV_STR) return chat_utf8_chars(r, v.s);
    chat_fail(r->e, off, "'%s' object is not iterable", chat_type_name(v));
}

/* for x in items if cond: keeps the items the condition accepts. */
static const chat_list *filter_items(chat_render_ctx *r, const chat_node *n, const chat_list *items)
{
    chat_list *l = chat_list_new(r, items->n);
    l->n = 0;
    for (size_t i = 0; i < items->n; i++) {
        count_iteration(r, n->off);
        chat_frame_push(r);
        chat_frame_set(r, n->s, items->v[i]);
        int keep = chat_truthy(chat_eval_expr(r, n->d));
        r->frame = r->frame->up;
        if (keep) l->v[l->n++] = items->v[i];
    }
    return l;
}

static void eval_stmt(chat_render_ctx *r, const chat_node *n);

static void eval_for(chat_render_ctx *r, const chat_node *n)
{
    const chat_list *items = iterable(r, chat_eval_expr(r, n->a), n->a->off);
    if (n->d) items = filter_items(r, n, items);
    if (items->n == 0 && n->c) chat_eval_body(r, n->c);
    for (size_t i = 0; i < items->n; i++) {
        count_iteration(r, n->off);
        chat_loop *lp = chat_alloc(r->e, sizeof *lp);
        lp->items = items, lp->index0 = i;
        chat_frame_push(r);
        chat_frame_set(r, n->s, items->v[i]);
        chat_frame_set(r, (chat_str){"loop", 4}, (chat_val){.kind = CV_LOOP, .loop = lp});
        chat_eval_body(r, n->b);
        r->frame = r->frame->up;
        int ctl = r->loop_ctl;
        r->loop_ctl = 0;
        if (ctl == 1) break;
    }
}

static void eval_set_attr(chat_render_ctx *r, const chat_node *n)
{
    chat_val ns = lookup(r, n->s);
    if (ns.kind == CV_UNDEF) chat_fail_undefined(r, ns, n->off);
    if (ns.kind != CV_NS)
        chat_fail(r->e, n->off, "cannot assign attribute on non-namespace object '%.*s'", (int)n->s.n, n->s.p);
    chat_dict_put(r, ns.d, n->s2, chat_eval_expr(r, n->a));
}

static void eval_stmt(chat_render_ctx *r, const chat_node *n)
{
    switch (n->kind) {
    case ND_TEXT: out_put(r, n->s, n->off); break;
    case ND_OUTPUT: out_put(r, chat_to_str(r, chat_eval_expr(r, n->a), n->off), n->off); break;
    case ND_IF:
        if (chat_truthy(chat_eval_expr(r, n->a))) chat_eval_body(r, n->b);
        else if (n->c) eval_stmt(r, n->c);
        break;
    case ND_FOR: eval_for(r, n); break;
    case ND_SET: chat_frame_set(r, n->s, chat_eval_expr(r, n->a)); break;
    case ND_SET_ATTR: eval_set_attr(r, n); break;
    case ND_BREAK: r->loop_ctl = 1; break;
    case ND_CONTINUE: r->loop_ctl = 2; break;
    case ND_BODY: chat_eval_body(r, n); break;
    default: chat_fail(r->e, n->off, "internal error: expression used as statement");
    }
}

void chat_eval_body(chat_render_ctx *r, const chat_node *body)
{
    for (size_t i = 0; i < body->n_kids && !r->loop_ctl; i++) eval_stmt(r, body->kids[i]);
}
