/* chat_eval.c - renders chat-template statements with @huggingface/jinja's
 * scoping: a for loop gets one scope for all its iterations (so a set in
 * the body is seen by later iterations but not after the loop, which is
 * why templates use namespace()); if bodies share their parent's scope;
 * macros see the scope they were defined in. A break or continue drops the
 * text its iteration had produced so far, and a loop whose iterations all
 * ended that way renders its else block, as the reference does. Also
 * macros, {% call %} with caller(), {% filter %} and block set. */
#include <stdio.h>
#include <string.h>

#include "chat_internal.h"
#include "shardlm_common.h"

chat_env *chat_env_new(chat_ctx *r, chat_env *up)
{
    chat_env *e = chat_alloc(r->e, sizeof *e);
    memset(e, 0, sizeof *e);
    e->up = up;
    return e;
}

void chat_env_set(chat_ctx *r, chat_env *env, chat_str name, chat_val v) { chat_dict_put(r, &env->vars, name, v); }

void chat_count_iteration(chat_ctx *r, uint32_t off)
{
    if (++r->iterations > r->lim.max_iterations)
        chat_fail(r->e, off, "loops ran more than %zu iterations", r->lim.max_iterations);
}

static void put(chat_ctx *r, chat_sb *b, chat_str s, uint32_t off)
{
    if (s.n > r->lim.max_output || b->n > r->lim.max_output - s.n)
        chat_fail(r->e, off, "rendered text exceeds the output limit of %zu bytes", r->lim.max_output);
    chat_sb_put(b, s.p, s.n);
}

static void render_block(chat_ctx *r, const chat_node *body, chat_env *env, chat_sb *out);

/* ---- for ---- */

static void bind_target(chat_ctx *r, const chat_node *target, chat_val item, chat_env *scope)
{
    if (target->kind == ND_NAME) return chat_env_set(r, scope, target->s, item);
    for (size_t j = 0; j < target->n_kids; j++)
        chat_env_set(r, scope, target->kids[j]->s, j < item.l->n ? item.l->v[j] : chat_v_undef());
}

static const chat_list *loop_items(chat_ctx *r, const chat_node *n, chat_val it)
{
    r->off = n->b->off;
    if (it.kind == CV_ARRAY) return it.l;
    if (it.kind == CV_UNDEF) return chat_list_new(r, 0); /* Jinja2's answer; the reference fails */
    if (it.kind == CV_STR) return chat_chars(r, it.s);   /* likewise */
    if (it.kind == CV_OBJECT) {
        chat_list *l = chat_list_new(r, it.d->n);
        for (size_t i = 0; i < it.d->n; i++) l->v[i] = chat_v_str(it.d->k[i]);
        return l;
    }
    chat_fail_r(r, "expected an iterable or an object in a for loop: got %s", chat_type_name(it));
}

/* Checks tuple targets and applies the "if" filter, before iterating. */
static const chat_list *select_items(chat_ctx *r, const chat_node *n, const chat_list *items, chat_env *scope)
{
    if (n->a->kind == ND_NAME && !n->e) return items;
    chat_list *l = chat_list_new(r, 0);
    for (size_t i = 0; i < items->n; i++) {
        chat_val it = items->v[i];
        chat_count_iteration(r, n->off);
        if (n->a->kind == ND_TUPLE) {
            r->off = n->off;
            if (it.kind != CV_ARRAY || it.tuple) chat_fail_r(r, "cannot unpack non-iterable type: %s", chat_type_name(it));
            if (it.l->n != n->a->n_kids)
                chat_fail_r(r, "too %s items to unpack", n->a->n_kids > it.l->n ? "few" : "many");
        }
        if (n->e) {
            chat_env *test = chat_env_new(r, scope);
            bind_target(r, n->a, it, test);
            if (!chat_truthy(chat_eval(r, n->e, test))) continue;
        }
        chat_list_push(r, l, it);
    }
    return l;
}

/* The loop object, built at its final size: deep loops make many. */
static chat_val loop_object(chat_ctx *r, const chat_list *items, size_t i)
{
    static const chat_str keys[] = {{"index", 5},     {"index0", 6}, {"revindex", 8},
                                    {"revindex0", 9}, {"first", 5},  {"last", 4},
                                    {"length", 6},    {"previtem", 8}, {"nextitem", 8}};
    chat_dict *d = chat_alloc(r->e, sizeof *d + sizeof keys / sizeof keys[0] * sizeof(chat_val));
    double n = (double)items->n, k = (double)i;
    d->n = d->cap = sizeof keys / sizeof keys[0];
    d->k = (chat_str *)keys;
    d->v = (chat_val *)(d + 1);
    chat_val v[] = {chat_v_int(k + 1),         chat_v_int(k),
                    chat_v_int(n - k),         chat_v_int(n - k - 1),
                    chat_v_bool(i == 0),       chat_v_bool(i + 1 == items->n),
                    chat_v_int(n),             i > 0 ? items->v[i - 1] : chat_v_undef(),
                    i + 1 < items->n ? items->v[i + 1] : chat_v_undef()};
    memcpy(d->v, v, sizeof v);
    return chat_v_dict(d);
}

static void render_for(chat_ctx *r, const chat_node *n, chat_env *env, chat_sb *out)
{
    chat_env *scope = chat_env_new(r, env);
    const chat_list *items = loop_items(r, n, chat_eval(r, n->b, scope));
    items = select_items(r, n, items, scope);
    int none = 1;
    for (size_t i = 0; i < items->n; i++) {
        chat_count_iteration(r, n->off);
        chat_env_set(r, scope, (chat_str){"loop", 4}, loop_object(r, items, i));
        bind_target(r, n->a, items->v[i], scope);
        size_t mark = out->n;
        render_block(r, n->c, scope, out);
        int ctl = r->loop_ctl;
        r->loop_ctl = 0;
        if (ctl) {
            out->n = mark; /* the reference loses what the interrupted iteration wrote */
            if (out->p) out->p[mark] = 0;
            if (ctl == 1) break;
            continue;
        }
        none = 0;
    }
    if (none && n->d) render_block(r, n->d, scope, out);
}

/* ---- set ---- */

static void exec_set(chat_ctx *r, const chat_node *n, chat_env *env)
{
    chat_val v;
    if (n->b) {
        v = chat_eval(r, n->b, env);
    } else {
        chat_sb b = {.e = r->e};
        render_block(r, n->c, env, &b);
        v = chat_v_str(chat_sb_str(&b));
    }
    const chat_node *t = n->a;
    r->off = n->off;
    if (t->kind == ND_NAME) return chat_env_set(r, env, t->s, v);
    if (t->kind == ND_TUPLE) {
        if (v.kind != CV_ARRAY) chat_fail_r(r, "cannot unpack non-iterable type in set: %s", chat_type_name(v));
        if (v.l->n != t->n_kids) chat_fail_r(r, "too %s items to unpack in set", t->n_kids > v.l->n ? "few" : "many");
        for (size_t i = 0; i < t->n_kids; i++) {
            if (t->kids[i]->kind != ND_NAME) chat_fail_r(r, "cannot unpack to a non-name in set");
            chat_env_set(r, env, t->kids[i]->s, v.l->v[i]);
        }
        return;
    }
    chat_val obj = chat_eval(r, t->a, env);
    r->off = n->off;
    if (obj.kind != CV_NS) chat_fail_r(r, "cannot assign attribute on non-namespace object");
    if (t->ival || t->b->kind != ND_NAME) chat_fail_r(r, "cannot assign to a member with a non-name property");
    chat_dict_put(r, obj.d, t->b->s, v);
}

/* ---- macros and calls ---- */

/* Parameters of a macro or call block from args; defaults are evaluated
 * last, in the new scope (so they may use earlier parameters). */
static void bind_params(chat_ctx *r, const chat_node *m, const char *name, const chat_args *a, chat_env *scope)
{
    chat_dict *kw = chat_dict_new(r);
    for (size_t i = 0; a->kw && i < a->kw->n; i++) chat_dict_put(r, kw, a->kw->k[i], a->kw->v[i]);
    const chat_node *pending[64];
    size_t n_pending = 0;
    for (size_t i = 0; i < m->n_kids; i++) {
        const chat_node *p = m->kids[i];
        chat_str pn = p->s;
        chat_val v = chat_v_undef();
        int given = i < a->n;
        if (given) v = a->v[i];
        else if (chat_dict_has(kw, pn)) {
            v = chat_dict_get(kw, pn), given = 1;
            for (size_t k = 0; k < kw->n; k++)
                if (chat_str_same(kw->k[k], pn)) {
                    memmove(kw->k + k, kw->k + k + 1, (kw->n - k - 1) * sizeof *kw->k);
                    memmove(kw->v + k, kw->v + k + 1, (kw->n - k - 1) * sizeof *kw->v);
                    kw->n--;
                    break;
                }
        }
        if (!given && p->kind == ND_KWARG) {
            if (n_pending == 64) chat_fail_r(r, "macro %s has too many parameters with defaults", name);
            pending[n_pending++] = p;
        }
        chat_env_set(r, scope, pn, v);
    }
    if (m->uses_kwargs) chat_env_set(r, scope, (chat_str){"kwargs", 6}, chat_v_dict(kw));
    else if (kw->n) chat_fail_r(r, "macro %s takes no keyword argument '%.*s'", name, (int)kw->k[0].n, kw->k[0].p);
    if (m->uses_varargs) {
        chat_list *l = chat_list_new(r, 0);
        for (size_t i = m->n_kids; i < a->n; i++) chat_list_push(r, l, a->v[i]);
        chat_env_set(r, scope, (chat_str){"varargs", 7}, chat_v_list(l));
    } else if (a->n > m->n_kids) {
        chat_fail_r(r, "macro %s takes not more than %zu argument(s)", name, m->n_kids);
    }
    for (size_t i = 0; i < n_pending; i++) chat_env_set(r, scope, pending[i]->s, chat_eval(r, pending[i]->a, scope));
}

static chat_val call_macro(chat_ctx *r, chat_func *f, const chat_args *a, chat_env *site)
{
    const chat_node *m = f->node;
    chat_env *parent = f->closure;
    if (m->uses_caller) {
        parent = chat_env_new(r, f->closure);
        chat_val caller = site && site->call_block ? chat_dict_get(&site->vars, (chat_str){"caller", 6}) : chat_v_undef();
        chat_env_set(r, parent, (chat_str){"caller", 6}, caller);
    }
    chat_env *scope = chat_env_new(r, parent);
    char name[80];
    if (f->kind == CF_MACRO) snprintf(name, sizeof name, "'%.*s'", (int)m->s.n, m->s.p);
    else snprintf(name, sizeof name, "None");
    bind_params(r, m, name, a, scope);
    chat_sb b = {.e = r->e};
    render_block(r, m->b, scope, &b);
    return chat_v_str(chat_sb_str(&b));
}

chat_val chat_call(chat_ctx *r, chat_val fn, const chat_args *a, chat_env *site, uint32_t off)
{
    r->off = off;
    if (fn.kind != CV_FUNC) chat_fail_r(r, "cannot call something that is not a function: got %s", chat_type_name(fn));
    if (++r->depth > CHAT_MAX_DEPTH) chat_fail_r(r, "calls nest deeper than %d levels", CHAT_MAX_DEPTH);
    chat_val v;
    if (fn.f->kind == CF_BUILTIN) v = fn.f->fn(r, fn.f->self, a);
    else v = call_macro(r, fn.f, a, site);
    r->depth--;
    return v;
}

static void define_macro(chat_ctx *r, const chat_node *n, chat_env *env)
{
    chat_func *f = chat_alloc(r->e, sizeof *f);
    memset(f, 0, sizeof *f);
    f->kind = CF_MACRO;
    f->node = n;
    f->closure = env;
    f->name = "macro";
    chat_env_set(r, env, n->s, (chat_val){.kind = CV_FUNC, .f = f});
}

static chat_val call_block(chat_ctx *r, const chat_node *n, chat_env *env)
{
    chat_func *caller = chat_alloc(r->e, sizeof *caller);
    memset(caller, 0, sizeof *caller);
    caller->kind = CF_CALLER;
    caller->node = n;
    caller->closure = env;
    caller->name = "caller";
    const chat_node *c = n->a;
    chat_args a;
    chat_eval_args(r, (const chat_node *const *)c->kids, c->n_kids, env, &a);
    chat_val fn = chat_eval(r, c->a, env);
    chat_env *site = chat_env_new(r, env);
    site->call_block = 1;
    chat_env_set(r, site, (chat_str){"caller", 6}, (chat_val){.kind = CV_FUNC, .f = caller});
    return chat_call(r, fn, &a, site, n->off);
}

/* ---- blocks ---- */

static void put_value(chat_ctx *r, chat_sb *out, chat_val v, uint32_t off)
{
    if (v.kind == CV_NULL || v.kind == CV_UNDEF) return;
    r->off = off;
    put(r, out, chat_to_str(r, v), off);
}

static void render_stmt(chat_ctx *r, const chat_node *n, chat_env *env, chat_sb *out)
{
    chat_sb b;
    switch (n->kind) {
    case ND_TEXT: put(r, out, n->s, n->off); break;
    case ND_IF: render_block(r, chat_truthy(chat_eval(r, n->a, env)) ? n->b : n->c, env, out); break;
    case ND_FOR: render_for(r, n, env, out); break;
    case ND_SET: exec_set(r, n, env); break;
    case ND_MACRO: define_macro(r, n, env); break;
    case ND_CALL_BLOCK: put_value(r, out, call_block(r, n, env), n->off); break;
    case ND_FILTER_BLOCK:
        b = (chat_sb){.e = r->e};
        render_block(r, n->b, env, &b);
        put_value(r, out, chat_apply_filter(r, chat_v_str(chat_sb_str(&b)), n->a, env), n->off);
        break;
    case ND_BREAK: r->loop_ctl = 1; break;
    case ND_CONTINUE: r->loop_ctl = 2; break;
    default: put_value(r, out, chat_eval(r, n, env), n->off); break;
    }
}

static void render_block(chat_ctx *r, const chat_node *body, chat_env *env, chat_sb *out)
{
    if (!body) return;
    if (++r->depth > 4 * CHAT_MAX_DEPTH) chat_fail(r->e, body->off, "blocks nest too deeply");
    for (size_t i = 0; i < body->n_kids && !r->loop_ctl; i++) render_stmt(r, body->kids[i], env, out);
    r->depth--;
}

chat_str chat_render_body(chat_ctx *r, const chat_node *body, chat_env *env)
{
    chat_sb b = {.e = r->e};
    render_block(r, body, env, &b);
    if (r->loop_ctl) chat_fail(r->e, body->off, "'%s' outside a loop", r->loop_ctl == 1 ? "break" : "continue");
    return chat_sb_str(&b);
}
