/* chat_parse.c - recursive-descent parser for chat templates, following
 * Jinja's precedence (lowest first): "x if c else y", or, and, not,
 * comparisons/in, + -, ~, * // %, unary -, then primaries with their
 * postfixes (.attr, [key], [a:b:c], (args)) and filters/tests (|f, is t).
 * Every construct outside the supported subset is refused here, at load. */
#include <stdio.h>
#include <string.h>

#include "chat_internal.h"

typedef struct {
    chat_err *e;
    const chat_tok *t;
    size_t i, n;
    int depth;
    int loops; /* for bodies we are inside (break/continue need one) */
} parser;

static const chat_tok *peek(parser *P) { return &P->t[P->i]; }
static const chat_tok *next(parser *P) { return P->i + 1 < P->n ? &P->t[P->i++] : &P->t[P->i]; }

static int is_op(const chat_tok *t, const char *op) { return t->kind == TK_OP && chat_str_eq(t->s, op); }
static int is_kw(const chat_tok *t, const char *kw) { return t->kind == TK_NAME && chat_str_eq(t->s, kw); }

static const char *describe(const chat_tok *t)
{
    switch (t->kind) {
    case TK_EOF: return "end of template";
    case TK_TEXT: return "text";
    case TK_EXPR_OPEN: return "'{{'";
    case TK_EXPR_CLOSE: return "'}}'";
    case TK_STMT_OPEN: return "'{%'";
    case TK_STMT_CLOSE: return "'%}'";
    case TK_STRING: return "a string";
    case TK_INT: return "a number";
    default: return NULL;
    }
}

_Noreturn static void unexpected(parser *P, const char *wanted)
{
    const chat_tok *t = peek(P);
    const char *d = describe(t);
    if (d) chat_fail(P->e, t->off, "expected %s, found %s", wanted, d);
    chat_fail(P->e, t->off, "expected %s, found '%.*s'", wanted, (int)t->s.n, t->s.p);
}

static void expect_op(parser *P, const char *op)
{
    if (!is_op(peek(P), op)) {
        char w[16];
        snprintf(w, sizeof w, "'%s'", op);
        unexpected(P, w);
    }
    next(P);
}

static void expect_kind(parser *P, chat_tok_kind k, const char *what)
{
    if (peek(P)->kind != k) unexpected(P, what);
    next(P);
}

static chat_str expect_name(parser *P)
{
    if (peek(P)->kind != TK_NAME) unexpected(P, "a name");
    return next(P)->s;
}

static chat_node *node(parser *P, chat_node_kind kind, uint32_t off)
{
    chat_node *n = chat_alloc(P->e, sizeof *n);
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->off = off;
    return n;
}

static void enter(parser *P)
{
    if (++P->depth > CHAT_MAX_DEPTH)
        chat_fail(P->e, peek(P)->off, "nesting deeper than %d levels", CHAT_MAX_DEPTH);
}

/* A growing array of node pointers, in the arena. */
typedef struct {
    chat_node **v;
    chat_str *names;
    size_t n, cap;
} nvec;

static void push(parser *P, nvec *v, chat_node *x, chat_str name)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        chat_node **nv = chat_alloc(P->e, cap * sizeof *nv);
        chat_str *nn = chat_alloc(P->e, cap * sizeof *nn);
        if (v->n) {
            memcpy(nv, v->v, v->n * sizeof *nv);
            memcpy(nn, v->names, v->n * sizeof *nn);
        }
        v->v = nv;
        v->names = nn;
        v->cap = cap;
    }
    v->names[v->n] = name;
    v->v[v->n++] = x;
}

static chat_node *expr(parser *P);
static chat_node *unary(parser *P, int with_filter);

/* (args, name=value, ...) after the '(' was seen; positional then keyword. */
static void call_args(parser *P, chat_node *n)
{
    nvec pos = {0}, kw = {0};
    next(P);
    while (!is_op(peek(P), ")")) {
        if (peek(P)->kind == TK_NAME && is_op(&P->t[P->i + 1], "=")) {
            chat_str name = next(P)->s;
            next(P);
            push(P, &kw, expr(P), name);
        } else {
            if (kw.n) chat_fail(P->e, peek(P)->off, "positional argument after keyword argument");
            push(P, &pos, expr(P), (chat_str){0});
        }
        if (!is_op(peek(P), ",")) break;
        next(P);
    }
    expect_op(P, ")");
    n->kids = pos.v, n->n_kids = pos.n;
    n->kw = kw.v, n->names = kw.names, n->n_kw = kw.n;
}

static chat_node *literal(parser *P, uint32_t off, chat_val v)
{
    chat_node *n = node(P, ND_LIT, off);
    n->val = v;
    return n;
}

static chat_node *list_or_dict(parser *P, int dict)
{
    const chat_tok *open = next(P);
    chat_node *n = node(P, dict ? ND_DICT : ND_LIST, open->off);
    nvec keys = {0}, vals = {0};
    const char *close = dict ? "}" : "]";
    while (!is_op(peek(P), close)) {
        push(P, &keys, expr(P), (chat_str){0});
        if (dict) {
            expect_op(P, ":");
            push(P, &vals, expr(P), (chat_str){0});
        }
        if (!is_op(peek(P), ",")) break;
        next(P);
    }
    expect_op(P, close);
    n->kids = keys.v, n->n_kids = keys.n;
    n->kw = vals.v, n->n_kw = vals.n;
    return n;
}

static chat_node *name_primary(parser *P)
{
    const chat_tok *t = next(P);
    static const struct { const char *name; chat_vkind kind; int64_t i; } consts[] = {
        {"true", CV_BOOL, 1}, {"True", CV_BOOL, 1}, {"false", CV_BOOL, 0},
        {"False", CV_BOOL, 0}, {"none", CV_NONE, 0}, {"None", CV_NONE, 0},
    };
    for (size_t k = 0; k < sizeof consts / sizeof consts[0]; k++)
        if (chat_str_eq(t->s, consts[k].name))
            return literal(P, t->off, (chat_val){.kind = consts[k].kind, .i = consts[k].i});
    if (is_op(peek(P), "(")) {
        if (!chat_known_function(t->s))
            chat_fail(P->e, t->off, "unsupported function '%.*s'", (int)t->s.n, t->s.p);
        chat_node *n = node(P, ND_CALL, t->off);
        n->s = t->s;
        call_args(P, n);
        return n;
    }
    chat_node *n = node(P, ND_NAME, t->off);
    n->s = t->s;
    return n;
}

static chat_node *primary(parser *P)
{
    const chat_tok *t = peek(P);
    if (t->kind == TK_NAME) return name_primary(P);
    if (t->kind == TK_INT) return next(P), literal(P, t->off, chat_v_int(t->ival));
    if (t->kind == TK_STRING) {
        /* adjacent literals concatenate, as in Python */
        chat_str s = next(P)->s;
        while (peek(P)->kind == TK_STRING) {
            chat_str b = next(P)->s;
            char *c = chat_alloc(P->e, s.n + b.n + 1);
            memcpy(c, s.p, s.n);
            memcpy(c + s.n, b.p, b.n);
            s = (chat_str){c, s.n + b.n};
        }
        return literal(P, t->off, chat_v_str(s));
    }
    if (is_op(t, "(")) {
        next(P);
        chat_node *n = expr(P);
        if (is_op(peek(P), ",")) chat_fail(P->e, peek(P)->off, "unsupported tuple");
        expect_op(P, ")");
        return n;
    }
    if (is_op(t, "[")) return list_or_dict(P, 0);
    if (is_op(t, "{")) return list_or_dict(P, 1);
    unexpected(P, "an expression");
}

/* [key] or [start:stop:step] after '[' was seen. */
static chat_node *subscript(parser *P, chat_node *obj)
{
    uint32_t off = next(P)->off;
    chat_node *parts[3] = {0};
    int k = 0;
    for (;;) {
        if (!is_op(peek(P), ":") && !is_op(peek(P), "]")) parts[k] = expr(P);
        if (!is_op(peek(P), ":") || k == 2) break;
        next(P);
        k++;
    }
    expect_op(P, "]");
    chat_node *n = node(P, k ? ND_SLICE : ND_INDEX, off);
    n->a = obj;
    n->b = parts[0], n->c = parts[1], n->d = parts[2];
    if (!k && !parts[0]) chat_fail(P->e, off, "empty subscript");
    return n;
}

static chat_node *postfix(parser *P, chat_node *n)
{
    for (;;) {
        const chat_tok *t = peek(P);
        if (is_op(t, ".")) {
            next(P);
            chat_str name = expect_name(P);
            if (is_op(peek(P), "(")) {
                if (!chat_known_method(name))
                    chat_fail(P->e, t->off, "unsupported method '.%.*s()'", (int)name.n, name.p);
                chat_node *m = node(P, ND_METHOD, t->off);
                m->a = n, m->s = name;
                call_args(P, m);
                if (m->n_kw) chat_fail(P->e, t->off, "keyword arguments to methods are not supported");
                n = m;
            } else {
                chat_node *m = node(P, ND_ATTR, t->off);
                m->a = n, m->s = name;
                n = m;
            }
        } else if (is_op(t, "[")) {
            n = subscript(P, n);
        } else if (is_op(t, "(")) {
            chat_fail(P->e, t->off, "unsupported call of a computed value");
        } else {
            return n;
        }
    }
}

static chat_node *filters_and_tests(parser *P, chat_node *n)
{
    for (;;) {
        const chat_tok *t = peek(P);
        if (is_op(t, "|")) {
            next(P);
            chat_str name = expect_name(P);
            if (!chat_known_filter(name))
                chat_fail(P->e, t->off, "unsupported filter '%.*s'", (int)name.n, name.p);
            chat_node *f = node(P, ND_FILTER, t->off);
            f->a = n, f->s = name;
            if (is_op(peek(P), "(")) call_args(P, f);
            n = f;
        } else if (is_kw(t, "is")) {
            next(P);
            chat_node *f = node(P, ND_TEST, t->off);
            if (is_kw(peek(P), "not")) next(P), f->ival = 1;
            const chat_tok *nt = peek(P);
            chat_str name = nt->kind == TK_NAME ? nt->s : (chat_str){0};
            if (is_kw(nt, "none") || is_kw(nt, "true") || is_kw(nt, "false")) next(P);
            else name = expect_name(P);
            if (!chat_known_test(name))
                chat_fail(P->e, nt->off, "unsupported test '%.*s'", (int)name.n, name.p);
            if (is_op(peek(P), "(")) chat_fail(P->e, peek(P)->off, "tests with arguments are not supported");
            f->a = n, f->s = name;
            n = f;
        } else {
            return n;
        }
    }
}

static chat_node *unary(parser *P, int with_filter)
{
    const chat_tok *t = peek(P);
    chat_node *n;
    enter(P);
    if (is_op(t, "-") || is_op(t, "+")) {
        next(P);
        chat_node *x = unary(P, 0);
        n = x;
        if (is_op(t, "-")) n = node(P, ND_NEG, t->off), n->a = x;
    } else {
        n = postfix(P, primary(P));
    }
    if (with_filter) n = filters_and_tests(P, n);
    P->depth--;
    return n;
}

static chat_node *binary(parser *P, chat_op op, uint32_t off, chat_node *a, chat_node *b)
{
    chat_node *n = node(P, ND_BIN, off);
    n->op = op, n->a = a, n->b = b;
    return n;
}

static chat_node *math2(parser *P)
{
    chat_node *n = unary(P, 1);
    for (;;) {
        const chat_tok *t = peek(P);
        chat_op op;
        if (is_op(t, "*")) op = OP_MUL;
        else if (is_op(t, "//")) op = OP_FLOORDIV;
        else if (is_op(t, "%")) op = OP_MOD;
        else if (is_op(t, "/") || is_op(t, "**"))
            chat_fail(P->e, t->off, "unsupported operator '%.*s'", (int)t->s.n, t->s.p);
        else return n;
        next(P);
        n = binary(P, op, t->off, n, unary(P, 1));
    }
}

static chat_node *concat(parser *P)
{
    chat_node *n = math2(P);
    while (is_op(peek(P), "~")) {
        uint32_t off = next(P)->off;
        n = binary(P, OP_CONCAT, off, n, math2(P));
    }
    return n;
}

static chat_node *math1(parser *P)
{
    chat_node *n = concat(P);
    for (;;) {
        const chat_tok *t = peek(P);
        if (!is_op(t, "+") && !is_op(t, "-")) return n;
        next(P);
        n = binary(P, is_op(t, "+") ? OP_ADD : OP_SUB, t->off, n, concat(P));
    }
}

static int compare_op(parser *P, chat_op *op)
{
    static const struct { const char *s; chat_op op; } ops[] = {
        {"==", OP_EQ}, {"!=", OP_NE}, {"<", OP_LT}, {"<=", OP_LE}, {">", OP_GT}, {">=", OP_GE},
    };
    const chat_tok *t = peek(P);
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++)
        if (is_op(t, ops[k].s)) return next(P), *op = ops[k].op, 1;
    if (is_kw(t, "in")) return next(P), *op = OP_IN, 1;
    if (is_kw(t, "not") && is_kw(&P->t[P->i + 1], "in")) return next(P), next(P), *op = OP_NOTIN, 1;
    return 0;
}

static chat_node *compare(parser *P)
{
    chat_node *n = math1(P);
    chat_op op;
    uint32_t off = peek(P)->off;
    while (compare_op(P, &op)) {
        n = binary(P, op, off, n, math1(P));
        off = peek(P)->off;
    }
    return n;
}

static chat_node *not_expr(parser *P)
{
    if (!is_kw(peek(P), "not")) return compare(P);
    const chat_tok *t = next(P);
    enter(P);
    chat_node *n = node(P, ND_NOT, t->off);
    n->a = not_expr(P);
    P->depth--;
    return n;
}

static chat_node *and_expr(parser *P)
{
    chat_node *n = not_expr(P);
    while (is_kw(peek(P), "and")) {
        chat_node *m = node(P, ND_AND, next(P)->off);
        m->a = n, m->b = not_expr(P);
        n = m;
    }
    return n;
}

static chat_node *or_expr(parser *P)
{
    chat_node *n = and_expr(P);
    while (is_kw(peek(P), "or")) {
        chat_node *m = node(P, ND_OR, next(P)->off);
        m->a = n, m->b = and_expr(P);
        n = m;
    }
    return n;
}

static chat_node *expr(parser *P)
{
    enter(P);
    chat_node *n = or_expr(P);
    if (is_kw(peek(P), "if")) {
        chat_node *c = node(P, ND_COND, next(P)->off);
        c->a = n, c->b = or_expr(P);
        if (is_kw(peek(P), "else")) next(P), c->c = expr(P);
        n = c;
    }
    P->depth--;
    return n;
}

/* ---- statements ---- */

static chat_node *body(parser *P, const char *const *ends, uint32_t open_off, chat_str *end_kw);

static void close_stmt(parser *P) { expect_kind(P, TK_STMT_CLOSE, "'%}'"); }

static chat_node *stmt_if(parser *P, uint32_t off)
{
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    chat_node *n = node(P, ND_IF, off);
    n->a = expr(P);
    close_stmt(P);
    chat_str kw;
    n->b = body(P, ends, off, &kw);
    if (chat_str_eq(kw, "elif")) {
        n->c = stmt_if(P, (uint32_t)(kw.p - P->e->src));
    } else if (chat_str_eq(kw, "else")) {
        static const char *const endif[] = {"endif", NULL};
        close_stmt(P);
        n->c = body(P, endif, off, &kw);
        close_stmt(P);
    } else {
        close_stmt(P);
    }
    return n;
}

static chat_node *stmt_for(parser *P, uint32_t off)
{
    static const char *const ends[] = {"else", "endfor", NULL};
    chat_node *n = node(P, ND_FOR, off);
    n->s = expect_name(P);
    if (is_op(peek(P), ",")) chat_fail(P->e, peek(P)->off, "unsupported: more than one loop variable");
    if (!is_kw(peek(P), "in")) unexpected(P, "'in'");
    next(P);
    /* the iterable stops before a trailing "if" filter (no inline if here) */
    n->a = or_expr(P);
    if (is_kw(peek(P), "if")) next(P), n->d = or_expr(P);
    if (is_kw(peek(P), "recursive")) chat_fail(P->e, peek(P)->off, "unsupported: recursive loops");
    close_stmt(P);
    chat_str kw;
    P->loops++;
    n->b = body(P, ends, off, &kw);
    P->loops--;
    close_stmt(P);
    if (chat_str_eq(kw, "else")) {
        static const char *const endfor[] = {"endfor", NULL};
        n->c = body(P, endfor, off, &kw);
        close_stmt(P);
    }
    return n;
}

static chat_node *stmt_set(parser *P, uint32_t off)
{
    chat_str name = expect_name(P);
    chat_node *n = node(P, ND_SET, off);
    n->s = name;
    if (is_op(peek(P), ".")) {
        next(P);
        n->kind = ND_SET_ATTR;
        n->s2 = expect_name(P);
    }
    if (is_op(peek(P), ",")) chat_fail(P->e, peek(P)->off, "unsupported: tuple assignment");
    if (peek(P)->kind == TK_STMT_CLOSE) chat_fail(P->e, off, "unsupported: block set ({%% set x %%}...{%% endset %%})");
    expect_op(P, "=");
    n->a = expr(P);
    close_stmt(P);
    return n;
}

/* One {% ... %} after the keyword was read; NULL when kw ends the body. */
static chat_node *statement(parser *P, const chat_tok *kw, const char *const *ends, int *ended)
{
    for (int k = 0; ends && ends[k]; k++)
        if (chat_str_eq(kw->s, ends[k])) return *ended = 1, NULL;
    if (chat_str_eq(kw->s, "if")) return stmt_if(P, kw->off);
    if (chat_str_eq(kw->s, "for")) return stmt_for(P, kw->off);
    if (chat_str_eq(kw->s, "set")) return stmt_set(P, kw->off);
    if (chat_str_eq(kw->s, "break") || chat_str_eq(kw->s, "continue")) {
        if (!P->loops) chat_fail(P->e, kw->off, "'%.*s' outside a loop", (int)kw->s.n, kw->s.p);
        chat_node *n = node(P, chat_str_eq(kw->s, "break") ? ND_BREAK : ND_CONTINUE, kw->off);
        close_stmt(P);
        return n;
    }
    static const char *const known_ends[] = {"endif", "endfor", "elif", "else", NULL};
    for (int k = 0; known_ends[k]; k++)
        if (chat_str_eq(kw->s, known_ends[k]))
            chat_fail(P->e, kw->off, "unexpected '%.*s'", (int)kw->s.n, kw->s.p);
    chat_fail(P->e, kw->off, "unsupported statement '%.*s'", (int)kw->s.n, kw->s.p);
}

static chat_node *body(parser *P, const char *const *ends, uint32_t open_off, chat_str *end_kw)
{
    uint32_t start = peek(P)->off;
    chat_node *b = node(P, ND_BODY, start);
    nvec v = {0};
    enter(P);
    for (;;) {
        const chat_tok *t = peek(P);
        if (t->kind == TK_EOF) {
            if (!ends) break;
            int k = 0;
            while (ends[k + 1]) k++;
            chat_fail(P->e, open_off, "'{%% %s %%}' is missing for this block", ends[k]);
        }
        next(P);
        if (t->kind == TK_TEXT) {
            chat_node *n = node(P, ND_TEXT, t->off);
            n->s = t->s;
            push(P, &v, n, (chat_str){0});
        } else if (t->kind == TK_EXPR_OPEN) {
            chat_node *n = node(P, ND_OUTPUT, t->off);
            n->a = expr(P);
            expect_kind(P, TK_EXPR_CLOSE, "'}}'");
            push(P, &v, n, (chat_str){0});
        } else if (t->kind == TK_STMT_OPEN) {
            if (peek(P)->kind != TK_NAME) unexpected(P, "a statement name");
            const chat_tok *kw = next(P);
            int ended = 0;
            chat_node *n = statement(P, kw, ends, &ended);
            if (ended) {
                *end_kw = kw->s;
                break;
            }
            push(P, &v, n, (chat_str){0});
        } else {
            chat_fail(P->e, t->off, "unexpected %s", describe(t));
        }
    }
    P->depth--;
    b->kids = v.v, b->n_kids = v.n;
    return b;
}

chat_node *chat_parse(chat_err *e, const chat_tok *toks, size_t n_tok)
{
    parser P = {.e = e, .t = toks, .n = n_tok};
    chat_str kw;
    return body(&P, NULL, 0, &kw);
}
