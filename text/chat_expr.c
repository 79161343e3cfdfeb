/* chat_expr.c - evaluates chat-template expressions with
 * @huggingface/jinja's semantics: arithmetic on JavaScript numbers (% is
 * JavaScript's remainder, / always gives a float), + joins when either
 * side is a string and ~ always (both through JavaScript's String() of the
 * raw values, so 1.0 ~ "" is "1"), "in" on strings, arrays (===) and
 * objects (keys), anything in undefined is false; attribute access on
 * undefined or none gives undefined rather than failing; a missing
 * variable is undefined. */
#include <math.h>
#include <string.h>

#include "chat_internal.h"

chat_val chat_lookup(chat_env *env, chat_str name)
{
    for (chat_env *e = env; e; e = e->up) {
        for (size_t i = 0; i < e->vars.n; i++)
            if (chat_str_same(e->vars.k[i], name)) return e->vars.v[i];
    }
    return chat_v_undef();
}

static chat_val join2(chat_ctx *r, chat_val a, chat_val b, int undef_empty)
{
    chat_sb s = {.e = r->e};
    if (!(undef_empty && a.kind == CV_UNDEF)) chat_js_string(r, &s, a);
    if (!(undef_empty && b.kind == CV_UNDEF)) chat_js_string(r, &s, b);
    return chat_v_str(chat_sb_str(&s));
}

static int str_contains(chat_str hay, chat_str needle)
{
    if (!needle.n) return 1;
    for (size_t i = 0; i + needle.n <= hay.n; i++)
        if (!memcmp(hay.p + i, needle.p, needle.n)) return 1;
    return 0;
}

_Noreturn static void unknown_op(chat_ctx *r, chat_str op, chat_val a, chat_val b)
{
    chat_fail_r(r, "unknown operator \"%.*s\" between %s and %s", (int)op.n, op.p, chat_type_name(a),
                chat_type_name(b));
}

static chat_val numeric(chat_ctx *r, chat_str op, chat_val a, chat_val b, int *done)
{
    double x = a.num, y = b.num;
    int fl = a.kind == CV_FLOAT || b.kind == CV_FLOAT;
    *done = 1;
    (void)r;
    if (chat_str_eq(op, "+")) return chat_v_num(x + y, fl);
    if (chat_str_eq(op, "-")) return chat_v_num(x - y, fl);
    if (chat_str_eq(op, "*")) return chat_v_num(x * y, fl);
    if (chat_str_eq(op, "/")) return chat_v_float(x / y);
    if (chat_str_eq(op, "//")) return chat_v_num(floor(x / y), fl);
    if (chat_str_eq(op, "%")) return chat_v_num(fmod(x, y), fl);
    if (chat_str_eq(op, "<")) return chat_v_bool(x < y);
    if (chat_str_eq(op, ">")) return chat_v_bool(x > y);
    if (chat_str_eq(op, "<=")) return chat_v_bool(x <= y);
    if (chat_str_eq(op, ">=")) return chat_v_bool(x >= y);
    *done = 0;
    return chat_v_undef();
}

static chat_val power(chat_ctx *r, chat_val a, chat_val b)
{
    double x = a.kind == CV_BOOL ? a.b : a.num, y = b.kind == CV_BOOL ? b.b : b.num;
    if (x == 0 && y < 0) chat_fail_r(r, "0.0 cannot be raised to a negative power");
    double p = pow(x, y);
    if (!isfinite(p)) chat_fail_r(r, "exponentiation result is not a finite real number");
    return chat_v_num(p, a.kind == CV_FLOAT || b.kind == CV_FLOAT || y < 0);
}

static chat_val binary(chat_ctx *r, const chat_node *n, chat_env *env)
{
    chat_str op = n->s;
    chat_val a = chat_eval(r, n->a, env);
    if (chat_str_eq(op, "and")) return chat_truthy(a) ? chat_eval(r, n->b, env) : a;
    if (chat_str_eq(op, "or")) return chat_truthy(a) ? a : chat_eval(r, n->b, env);
    chat_val b = chat_eval(r, n->b, env);
    r->off = n->off;
    if (chat_str_eq(op, "==")) return chat_v_bool(chat_loose_eq(r, a, b));
    if (chat_str_eq(op, "!=")) return chat_v_bool(!chat_loose_eq(r, a, b));
    int is_in = chat_str_eq(op, "in"), not_in = chat_str_eq(op, "not in");
    if (chat_is_num(a) && chat_is_num(b) && !chat_str_eq(op, "~") && !chat_str_eq(op, "**")) {
        int done;
        chat_val v = numeric(r, op, a, b, &done);
        if (done) return v;
    } else if (a.kind == CV_UNDEF || b.kind == CV_UNDEF) {
        if (b.kind == CV_UNDEF && (is_in || not_in)) return chat_v_bool(not_in);
        if (chat_str_eq(op, "~") && a.kind != CV_NULL && b.kind != CV_NULL) return join2(r, a, b, 1);
        chat_fail_r(r, "cannot perform operation %.*s on undefined values", (int)op.n, op.p);
    } else if (a.kind == CV_NULL || b.kind == CV_NULL) {
        chat_fail_r(r, "cannot perform operation %.*s on none", (int)op.n, op.p);
    } else if (chat_str_eq(op, "~")) {
        return join2(r, a, b, 0);
    } else if (chat_str_eq(op, "**") && (chat_is_num(a) || a.kind == CV_BOOL) && (chat_is_num(b) || b.kind == CV_BOOL)) {
        return power(r, a, b);
    } else if (a.kind == CV_ARRAY && b.kind == CV_ARRAY) {
        if (chat_str_eq(op, "+")) {
            chat_list *l = chat_list_new(r, a.l->n + b.l->n);
            if (a.l->n) memcpy(l->v, a.l->v, a.l->n * sizeof *l->v);
            if (b.l->n) memcpy(l->v + a.l->n, b.l->v, b.l->n * sizeof *l->v);
            return chat_v_list(l);
        }
    } else if (b.kind == CV_ARRAY && (is_in || not_in)) {
        int found = 0;
        for (size_t i = 0; i < b.l->n && !found; i++) found = chat_strict_eq(b.l->v[i], a);
        return chat_v_bool(found == is_in);
    }
    if ((a.kind == CV_STR || b.kind == CV_STR) && chat_str_eq(op, "+")) return join2(r, a, b, 0);
    if (a.kind == CV_STR && b.kind == CV_STR && (is_in || not_in)) return chat_v_bool(str_contains(b.s, a.s) == is_in);
    if (a.kind == CV_STR && b.kind == CV_OBJECT && (is_in || not_in))
        return chat_v_bool(chat_dict_has(b.d, a.s) == is_in);
    unknown_op(r, op, a, b);
}

static chat_val unary(chat_ctx *r, const chat_node *n, chat_env *env)
{
    chat_val v = chat_eval(r, n->a, env);
    if (chat_str_eq(n->s, "not")) return chat_v_bool(!chat_truthy(v));
    int neg = chat_str_eq(n->s, "-");
    r->off = n->off;
    if (v.kind == CV_BOOL) return chat_v_int(neg ? -(double)v.b : v.b);
    if (!chat_is_num(v)) chat_fail_r(r, "unknown operator \"%.*s\" for %s", (int)n->s.n, n->s.p, chat_type_name(v));
    return chat_v_num(neg ? -v.num : v.num, v.kind == CV_FLOAT);
}

/* The reference's slice(): Python's rules, bounds clamped. */
static chat_val slice(chat_ctx *r, chat_val obj, const chat_node *n, chat_env *env)
{
    if (obj.kind != CV_ARRAY && obj.kind != CV_STR) chat_fail_r(r, "slice object must be an array or string");
    const chat_node *parts[3] = {n->a, n->b, n->c};
    double v[3];
    int given[3];
    for (int k = 0; k < 3; k++) {
        chat_val x = parts[k] ? chat_eval(r, parts[k], env) : chat_v_undef();
        if (x.kind != CV_INT && x.kind != CV_UNDEF) chat_fail_r(r, "slice indices must be integers or undefined");
        given[k] = x.kind == CV_INT;
        v[k] = x.num;
    }
    const chat_list *src = obj.kind == CV_ARRAY ? obj.l : chat_chars(r, obj.s);
    double len = (double)src->n, step = given[2] ? v[2] : 1, start, stop;
    if (step >= 0) {
        start = !given[0] ? 0 : v[0] < 0 ? fmax(len + v[0], 0) : fmin(v[0], len);
        stop = !given[1] ? len : v[1] < 0 ? fmax(len + v[1], 0) : fmin(v[1], len);
    } else {
        start = !given[0] ? len - 1 : v[0] < 0 ? fmax(len + v[0], -1) : fmin(v[0], len - 1);
        stop = !given[1] ? -1 : v[1] < -1 ? fmax(len + v[1], -1) : fmin(v[1], len - 1);
    }
    double dir = step > 0 ? 1 : step < 0 ? -1 : 0;
    chat_list *l = chat_list_new(r, 0);
    for (double i = start; dir * i < dir * stop; i += step) {
        chat_count_iteration(r, n->off);
        chat_list_push(r, l, src->v[(size_t)i]);
    }
    if (obj.kind == CV_ARRAY) return chat_v_list(l);
    chat_sb b = {.e = r->e};
    for (size_t i = 0; i < l->n; i++) chat_sb_put(&b, l->v[i].s.p, l->v[i].s.n);
    return chat_v_str(chat_sb_str(&b));
}

chat_val chat_member(chat_ctx *r, chat_val obj, chat_val prop, uint32_t off)
{
    r->off = off;
    if (obj.kind == CV_OBJECT || obj.kind == CV_NS) {
        if (prop.kind != CV_STR) chat_fail_r(r, "cannot access property with non-string: got %s", chat_type_name(prop));
        if (chat_dict_has(obj.d, prop.s)) return chat_dict_get(obj.d, prop.s);
        return obj.kind == CV_OBJECT ? chat_method(r, obj, prop.s) : chat_v_undef();
    }
    if (obj.kind == CV_ARRAY || obj.kind == CV_STR) {
        if (prop.kind == CV_INT) {
            if (obj.kind == CV_STR) return chat_u16_at(r, obj.s, prop.num);
            double i = prop.num < 0 ? prop.num + (double)obj.l->n : prop.num;
            return i >= 0 && i < (double)obj.l->n ? obj.l->v[(size_t)i] : chat_v_undef();
        }
        if (prop.kind == CV_STR) return chat_method(r, obj, prop.s);
        chat_fail_r(r, "cannot access property with non-string/non-number: got %s", chat_type_name(prop));
    }
    if (prop.kind != CV_STR) chat_fail_r(r, "cannot access property with non-string: got %s", chat_type_name(prop));
    return chat_v_undef();
}

static chat_val member_expr(chat_ctx *r, const chat_node *n, chat_env *env)
{
    chat_val obj = chat_eval(r, n->a, env);
    chat_val prop;
    r->off = n->off;
    if (n->ival && n->b->kind == ND_SLICE) return slice(r, obj, n->b, env);
    if (n->ival) prop = chat_eval(r, n->b, env);
    else if (n->b->kind == ND_INT) prop = chat_v_int(n->b->num);
    else prop = chat_v_str(n->b->s);
    return chat_member(r, obj, prop, n->off);
}

void chat_eval_args(chat_ctx *r, const chat_node *const *args, size_t n, chat_env *env, chat_args *out)
{
    chat_list *pos = chat_list_new(r, 0);
    out->kw = NULL;
    for (size_t i = 0; i < n; i++) {
        const chat_node *a = args[i];
        if (a->kind == ND_KWARG || a->kind == ND_KWSPREAD) continue;
        chat_val v = chat_eval(r, a->kind == ND_SPREAD ? a->a : a, env);
        if (a->kind != ND_SPREAD) {
            chat_list_push(r, pos, v);
            continue;
        }
        r->off = a->off;
        if (v.kind != CV_ARRAY) chat_fail_r(r, "cannot unpack non-iterable type: %s", chat_type_name(v));
        for (size_t k = 0; k < v.l->n; k++) chat_list_push(r, pos, v.l->v[k]);
    }
    for (size_t i = 0; i < n; i++) {
        const chat_node *a = args[i];
        if (a->kind != ND_KWARG && a->kind != ND_KWSPREAD) continue;
        if (!out->kw) out->kw = chat_dict_new(r);
        chat_val v = chat_eval(r, a->a, env);
        r->off = a->off;
        if (a->kind == ND_KWARG) {
            if (chat_dict_has(out->kw, a->s))
                chat_fail_r(r, "got multiple values for keyword argument '%.*s'", (int)a->s.n, a->s.p);
            chat_dict_put(r, out->kw, a->s, v);
            continue;
        }
        if (v.kind != CV_OBJECT) chat_fail_r(r, "argument after ** must be a mapping, not %s", chat_type_name(v));
        for (size_t k = 0; k < v.d->n; k++) {
            if (chat_dict_has(out->kw, v.d->k[k]))
                chat_fail_r(r, "got multiple values for keyword argument '%.*s'", (int)v.d->k[k].n, v.d->k[k].p);
            chat_dict_put(r, out->kw, v.d->k[k], v.d->v[k]);
        }
    }
    out->v = pos->v, out->n = pos->n;
}

static chat_val literal(chat_ctx *r, const chat_node *n, chat_env *env)
{
    if (n->kind == ND_OBJECT) {
        chat_dict *d = chat_dict_new(r);
        for (size_t i = 0; i < n->n_kids; i++) {
            chat_val k = chat_eval(r, n->kids[i], env);
            r->off = n->kids[i]->off;
            if (k.kind != CV_STR) chat_fail_r(r, "object keys must be strings: got %s", chat_type_name(k));
            chat_dict_put(r, d, k.s, chat_eval(r, n->vals[i], env));
        }
        return chat_v_dict(d);
    }
    chat_list *l = chat_list_new(r, n->n_kids);
    for (size_t i = 0; i < n->n_kids; i++) l->v[i] = chat_eval(r, n->kids[i], env);
    chat_val v = chat_v_list(l);
    v.tuple = n->kind == ND_TUPLE;
    return v;
}

static chat_val eval_inner(chat_ctx *r, const chat_node *n, chat_env *env)
{
    chat_args a;
    chat_val v;
    switch (n->kind) {
    case ND_NAME: return chat_lookup(env, n->s);
    case ND_INT: return chat_v_int(n->num);
    case ND_FLOAT: return chat_v_float(n->num);
    case ND_STR: return chat_v_str(n->s);
    case ND_BIN: return binary(r, n, env);
    case ND_UNARY: return unary(r, n, env);
    case ND_MEMBER: return member_expr(r, n, env);
    case ND_CALL:
        chat_eval_args(r, (const chat_node *const *)n->kids, n->n_kids, env, &a);
        v = chat_eval(r, n->a, env);
        return chat_call(r, v, &a, env, n->off);
    case ND_FILTER: return chat_apply_filter(r, chat_eval(r, n->a, env), n->b, env);
    case ND_TEST:
        v = chat_eval(r, n->a, env);
        chat_eval_args(r, (const chat_node *const *)n->kids, n->n_kids, env, &a);
        return chat_v_bool(chat_apply_test(r, n->s, v, &a, n->off) != (n->ival != 0));
    case ND_TERNARY: return chat_eval(r, chat_truthy(chat_eval(r, n->a, env)) ? n->b : n->c, env);
    case ND_SELECT: return chat_truthy(chat_eval(r, n->b, env)) ? chat_eval(r, n->a, env) : chat_v_undef();
    case ND_ARRAY: case ND_TUPLE: case ND_OBJECT: return literal(r, n, env);
    default: r->off = n->off; chat_fail_r(r, "this cannot be used as a value");
    }
}

chat_val chat_eval(chat_ctx *r, const chat_node *n, chat_env *env)
{
    if (++r->depth > 4 * CHAT_MAX_DEPTH) chat_fail(r->e, n->off, "expression nesting too deep");
    chat_val v = eval_inner(r, n, env);
    r->depth--;
    return v;
}
