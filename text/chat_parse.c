/* chat_parse.c - recursive-descent parser for chat templates with
 * @huggingface/jinja's grammar, whose precedence differs from Jinja2's:
 * lowest first, "a if c else b" (and "a if c" alone), or, and, not,
 * comparisons and in/not in (one level, left to right), + - ~ (one level),
 * * / // %, **, "is" tests, "|" filters, unary - +, then primaries with
 * their .attr / [key] / [a:b:c] / (args) postfixes. So "-x|abs" is
 * "(-x)|abs" and "a ~ b + c" is "(a ~ b) + c". Statements: if/elif/else,
 * for (with a tuple target, an "if" filter and else), set (also tuples,
 * ns.attr and {% set x %}...{% endset %}), macro, call, filter, break,
 * continue. Anything else is a syntax error at load. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_internal.h"

typedef struct {
    chat_err *e;
    const chat_tok *t;
    size_t i, n;
    int depth;
} parser;

static const chat_tok *peek(parser *P) { return &P->t[P->i]; }
static const chat_tok *peek_at(parser *P, size_t k) { return &P->t[P->i + k < P->n ? P->i + k : P->n - 1]; }
static const chat_tok *next(parser *P) { return P->i + 1 < P->n ? &P->t[P->i++] : &P->t[P->i]; }
static int is(parser *P, chat_tok_kind k) { return peek(P)->kind == k; }
static int is_name(parser *P, const char *name) { return is(P, TK_NAME) && chat_str_eq(peek(P)->s, name); }

static const char *kind_name(chat_tok_kind k)
{
    static const char *const names[] = {
        "end of template", "text", "comment", "'{%'", "'%}'", "'{{'", "'}}'", "a number", "a string", "a name",
        "'='", "'('", "')'", "'{'", "'}'", "'['", "']'", "','", "'.'", "':'", "'|'", "a comparison", "an operator",
        "an operator", "'**'", "a sign",
    };
    return names[k];
}

_Noreturn static void unexpected(parser *P, const char *wanted)
{
    const chat_tok *t = peek(P);
    if (t->kind == TK_NAME || t->kind == TK_ADD || t->kind == TK_MUL || t->kind == TK_COMPARE)
        chat_fail(P->e, t->off, "expected %s, found '%.*s'", wanted, (int)t->s.n, t->s.p);
    chat_fail(P->e, t->off, "expected %s, found %s", wanted, kind_name(t->kind));
}

static const chat_tok *expect(parser *P, chat_tok_kind k)
{
    if (!is(P, k)) unexpected(P, kind_name(k));
    return next(P);
}

static void expect_name(parser *P, const char *name)
{
    if (!is_name(P, name)) {
        char w[40];
        snprintf(w, sizeof w, "'%s'", name);
        unexpected(P, w);
    }
    next(P);
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
    if (++P->depth > CHAT_MAX_DEPTH) chat_fail(P->e, peek(P)->off, "nesting deeper than %d levels", CHAT_MAX_DEPTH);
}

/* A growing array of node pointers, in the arena. */
typedef struct {
    chat_node **v;
    size_t n, cap;
} nvec;

static void push(parser *P, nvec *v, chat_node *x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        chat_node **nv = chat_alloc(P->e, cap * sizeof *nv);
        if (v->n) memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static chat_node *expr(parser *P);
static chat_node *primary(parser *P);
static chat_node *member(parser *P, chat_node *obj);

/* (a, b=c, *d, **e) as arguments, or (a, b=default) as parameters. */
static void arg_list(parser *P, chat_node *n, int params)
{
    nvec v = {0};
    int saw_kw = 0, saw_spread = 0;
    expect(P, TK_LPAREN);
    while (!is(P, TK_RPAREN)) {
        const chat_tok *t = peek(P);
        int kwspread = t->kind == TK_POW, spread = t->kind == TK_MUL && chat_str_eq(t->s, "*");
        if (params && (kwspread || spread)) chat_fail(P->e, t->off, "argument unpacking in a parameter list");
        chat_node *a;
        if (kwspread || spread) {
            next(P);
            if (spread && saw_spread) chat_fail(P->e, t->off, "only one '*' argument unpacking is allowed");
            saw_spread |= spread;
            a = node(P, kwspread ? ND_KWSPREAD : ND_SPREAD, t->off);
            a->a = expr(P);
        } else {
            a = expr(P);
            if (is(P, TK_EQUALS)) {
                next(P);
                if (a->kind != ND_NAME) chat_fail(P->e, a->off, "expected a name before '='");
                chat_node *kw = node(P, ND_KWARG, a->off);
                kw->s = a->s;
                kw->a = expr(P);
                a = kw;
                saw_kw = 1;
            } else if (saw_kw) {
                chat_fail(P->e, a->off, params ? "a parameter without a default follows one with a default"
                                                : "a positional argument follows a keyword argument");
            } else if (params && a->kind != ND_NAME) {
                chat_fail(P->e, a->off, "expected a parameter name");
            }
        }
        push(P, &v, a);
        if (kwspread) {
            if (is(P, TK_COMMA)) next(P);
            if (!is(P, TK_RPAREN)) chat_fail(P->e, t->off, "'**' must be the last argument");
            break;
        }
        if (is(P, TK_COMMA)) next(P);
        else if (!is(P, TK_RPAREN)) unexpected(P, "',' or ')'");
    }
    expect(P, TK_RPAREN);
    n->kids = v.v, n->n_kids = v.n;
}

static chat_node *call(parser *P, chat_node *callee)
{
    chat_node *n = node(P, ND_CALL, peek(P)->off);
    n->a = callee;
    arg_list(P, n, 0);
    n = member(P, n);
    if (is(P, TK_LPAREN)) n = call(P, n);
    return n;
}

/* [key] or [a:b:c]: the contents of the brackets. */
static chat_node *subscript(parser *P)
{
    chat_node *parts[4] = {0};
    int k = 0, slice = 0;
    uint32_t off = peek(P)->off;
    while (!is(P, TK_RBRACKET)) {
        if (k == 4) chat_fail(P->e, off, "a slice takes at most 3 parts");
        if (is(P, TK_COLON)) {
            parts[k++] = NULL;
            next(P);
            slice = 1;
        } else {
            parts[k++] = expr(P);
            if (is(P, TK_COLON)) next(P), slice = 1;
            else if (!is(P, TK_RBRACKET)) unexpected(P, "':' or ']'");
        }
    }
    if (k == 0) chat_fail(P->e, off, "empty subscript");
    if (!slice) return parts[0];
    if (k > 3) chat_fail(P->e, off, "a slice takes at most 3 parts");
    chat_node *n = node(P, ND_SLICE, off);
    n->a = parts[0], n->b = k > 1 ? parts[1] : NULL, n->c = k > 2 ? parts[2] : NULL;
    return n;
}

static chat_node *member(parser *P, chat_node *obj)
{
    while (is(P, TK_DOT) || is(P, TK_LBRACKET)) {
        const chat_tok *op = next(P);
        chat_node *m = node(P, ND_MEMBER, op->off);
        m->a = obj;
        if (op->kind == TK_LBRACKET) {
            m->b = subscript(P);
            m->ival = 1;
            expect(P, TK_RBRACKET);
        } else {
            m->b = primary(P);
            if (m->b->kind != ND_NAME && m->b->kind != ND_INT)
                chat_fail(P->e, m->b->off, "expected a name or an integer after '.'");
        }
        obj = m;
    }
    return obj;
}

static chat_node *call_member(parser *P)
{
    chat_node *n = member(P, primary(P));
    return is(P, TK_LPAREN) ? call(P, n) : n;
}

static chat_node *unary_sign(parser *P)
{
    const chat_tok *t = peek(P);
    if ((t->kind == TK_UNARY || t->kind == TK_ADD) && (chat_str_eq(t->s, "-") || chat_str_eq(t->s, "+"))) {
        next(P);
        enter(P);
        chat_node *n = node(P, ND_UNARY, t->off);
        n->s = t->s;
        n->a = unary_sign(P);
        P->depth--;
        return n;
    }
    return call_member(P);
}

static chat_node *filter_expr(parser *P)
{
    chat_node *n = unary_sign(P);
    while (is(P, TK_PIPE)) {
        uint32_t off = next(P)->off;
        chat_node *f = primary(P);
        if (f->kind != ND_NAME) chat_fail(P->e, f->off, "expected a filter name");
        if (is(P, TK_LPAREN)) f = call(P, f);
        chat_node *x = node(P, ND_FILTER, off);
        x->a = n, x->b = f;
        n = x;
    }
    return n;
}

/* x is [not] NAME, or NAME(args) (an extension: Jinja2's tests with
 * arguments, which the reference cannot parse). */
static chat_node *test_expr(parser *P)
{
    chat_node *n = filter_expr(P);
    while (is_name(P, "is")) {
        chat_node *t = node(P, ND_TEST, next(P)->off);
        if (is_name(P, "not")) next(P), t->ival = 1;
        chat_node *name = primary(P);
        if (name->kind != ND_NAME) chat_fail(P->e, name->off, "expected a test name");
        t->s = name->s;
        t->a = n;
        if (is(P, TK_LPAREN)) arg_list(P, t, 0);
        n = t;
    }
    return n;
}

static chat_node *binary(parser *P, const chat_tok *op, chat_node *a, chat_node *b)
{
    chat_node *n = node(P, ND_BIN, op->off);
    n->s = op->s;
    n->a = a, n->b = b;
    return n;
}

static chat_node *power(parser *P)
{
    chat_node *n = test_expr(P);
    while (is(P, TK_POW)) {
        const chat_tok *op = next(P);
        n = binary(P, op, n, test_expr(P));
    }
    return n;
}

static chat_node *multiplicative(parser *P)
{
    chat_node *n = power(P);
    while (is(P, TK_MUL)) {
        const chat_tok *op = next(P);
        n = binary(P, op, n, power(P));
    }
    return n;
}

static chat_node *additive(parser *P)
{
    chat_node *n = multiplicative(P);
    while (is(P, TK_ADD)) {
        const chat_tok *op = next(P);
        n = binary(P, op, n, multiplicative(P));
    }
    return n;
}

static chat_node *comparison(parser *P)
{
    chat_node *n = additive(P);
    for (;;) {
        chat_tok op = *peek(P);
        if (is_name(P, "not") && peek_at(P, 1)->kind == TK_NAME && chat_str_eq(peek_at(P, 1)->s, "in")) {
            next(P), next(P);
            op.s = (chat_str){"not in", 6};
        } else if (is_name(P, "in") || is(P, TK_COMPARE)) {
            next(P);
        } else {
            return n;
        }
        n = binary(P, &op, n, additive(P));
    }
}

static chat_node *logical_not(parser *P)
{
    if (!is_name(P, "not")) return comparison(P);
    const chat_tok *t = next(P);
    enter(P);
    chat_node *n = node(P, ND_UNARY, t->off);
    n->s = t->s;
    n->a = logical_not(P);
    P->depth--;
    return n;
}

static chat_node *logical(parser *P, int is_or)
{
    chat_node *n = is_or ? logical(P, 0) : logical_not(P);
    while (is_name(P, is_or ? "or" : "and")) {
        const chat_tok *op = next(P);
        n = binary(P, op, n, is_or ? logical(P, 0) : logical_not(P));
    }
    return n;
}

static chat_node *expr(parser *P)
{
    enter(P);
    chat_node *n = logical(P, 1);
    if (is_name(P, "if")) {
        uint32_t off = next(P)->off;
        chat_node *test = logical(P, 1);
        chat_node *t = node(P, ND_SELECT, off);
        t->a = n, t->b = test;
        if (is_name(P, "else")) {
            next(P);
            t->kind = ND_TERNARY;
            t->a = test, t->b = n, t->c = expr(P);
        }
        n = t;
    }
    P->depth--;
    return n;
}

/* a, b, c: a tuple; a alone: itself. */
static chat_node *sequence(parser *P, int primary_only)
{
    uint32_t off = peek(P)->off;
    chat_node *first = primary_only ? primary(P) : expr(P);
    if (!is(P, TK_COMMA)) return first;
    nvec v = {0};
    push(P, &v, first);
    while (is(P, TK_COMMA)) {
        next(P);
        push(P, &v, primary_only ? primary(P) : expr(P));
    }
    chat_node *t = node(P, ND_TUPLE, off);
    t->kids = v.v, t->n_kids = v.n;
    return t;
}

static chat_node *container(parser *P, chat_node_kind kind, chat_tok_kind close)
{
    chat_node *n = node(P, kind, peek(P)->off);
    nvec keys = {0}, vals = {0};
    next(P);
    while (!is(P, close)) {
        if (is(P, TK_EOF)) unexpected(P, kind_name(close));
        push(P, &keys, expr(P));
        if (kind == ND_OBJECT) {
            expect(P, TK_COLON);
            push(P, &vals, expr(P));
        }
        if (is(P, TK_COMMA)) next(P);
    }
    next(P);
    n->kids = keys.v, n->n_kids = keys.n, n->vals = vals.v;
    return n;
}

static double parse_number(chat_str s)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.*s", (int)(s.n < 63 ? s.n : 63), s.p);
    return strtod(buf, NULL);
}

static chat_node *primary(parser *P)
{
    const chat_tok *t = peek(P);
    chat_node *n;
    enter(P);
    switch (t->kind) {
    case TK_NUMBER:
        next(P);
        n = node(P, memchr(t->s.p, '.', t->s.n) ? ND_FLOAT : ND_INT, t->off);
        n->num = parse_number(t->s);
        break;
    case TK_STRING: {
        chat_sb b = {.e = P->e};
        while (is(P, TK_STRING)) {
            chat_str s = next(P)->s;
            chat_sb_put(&b, s.p, s.n);
        }
        n = node(P, ND_STR, t->off);
        n->s = chat_sb_str(&b);
        break;
    }
    case TK_NAME:
        next(P);
        n = node(P, ND_NAME, t->off);
        n->s = t->s;
        break;
    case TK_LPAREN:
        next(P);
        n = sequence(P, 0);
        expect(P, TK_RPAREN);
        break;
    case TK_LBRACKET: n = container(P, ND_ARRAY, TK_RBRACKET); break;
    case TK_LBRACE: n = container(P, ND_OBJECT, TK_RBRACE); break;
    default: unexpected(P, "an expression");
    }
    P->depth--;
    return n;
}

/* ---- statements ---- */

/* Statements until {% NAME %} for one of names (not consumed). */
static chat_node *body_until(parser *P, const char *const *names, uint32_t open);

static int at_stmt(parser *P, const char *const *names)
{
    if (!is(P, TK_STMT_OPEN) || peek_at(P, 1)->kind != TK_NAME) return 0;
    for (int k = 0; names[k]; k++)
        if (chat_str_eq(peek_at(P, 1)->s, names[k])) return 1;
    return 0;
}

static void end_stmt(parser *P, const char *name)
{
    expect(P, TK_STMT_OPEN);
    expect_name(P, name);
    expect(P, TK_STMT_CLOSE);
}

static chat_node *stmt_if(parser *P, uint32_t off)
{
    static const char *const branch[] = {"endif", "elif", "else", NULL}, *const endif[] = {"endif", NULL};
    chat_node *n = node(P, ND_IF, off);
    n->a = expr(P);
    expect(P, TK_STMT_CLOSE);
    n->b = body_until(P, branch, off);
    if (at_stmt(P, (const char *const[]){"elif", NULL})) {
        next(P);
        uint32_t eoff = next(P)->off;
        chat_node *alt = node(P, ND_BODY, eoff);
        alt->kids = chat_alloc(P->e, sizeof *alt->kids);
        alt->kids[0] = stmt_if(P, eoff);
        alt->n_kids = 1;
        n->c = alt;
        return n; /* the innermost if consumed the endif */
    }
    if (at_stmt(P, (const char *const[]){"else", NULL})) {
        next(P), next(P);
        expect(P, TK_STMT_CLOSE);
        n->c = body_until(P, endif, off);
    }
    end_stmt(P, "endif");
    return n;
}

static chat_node *stmt_for(parser *P, uint32_t off)
{
    static const char *const ends[] = {"endfor", "else", NULL}, *const endfor[] = {"endfor", NULL};
    chat_node *n = node(P, ND_FOR, off);
    n->a = sequence(P, 1);
    if (n->a->kind != ND_NAME && n->a->kind != ND_TUPLE) chat_fail(P->e, n->a->off, "expected a loop variable");
    for (size_t i = 0; n->a->kind == ND_TUPLE && i < n->a->n_kids; i++)
        if (n->a->kids[i]->kind != ND_NAME) chat_fail(P->e, n->a->kids[i]->off, "expected a loop variable");
    expect_name(P, "in");
    n->b = expr(P);
    if (n->b->kind == ND_SELECT) n->e = n->b->b, n->b = n->b->a;
    if (is_name(P, "recursive")) chat_fail(P->e, peek(P)->off, "unsupported: recursive loops");
    expect(P, TK_STMT_CLOSE);
    n->c = body_until(P, ends, off);
    if (at_stmt(P, (const char *const[]){"else", NULL})) {
        next(P), next(P);
        expect(P, TK_STMT_CLOSE);
        n->d = body_until(P, endfor, off);
    }
    end_stmt(P, "endfor");
    return n;
}

static chat_node *stmt_set(parser *P, uint32_t off)
{
    static const char *const endset[] = {"endset", NULL};
    chat_node *n = node(P, ND_SET, off);
    n->a = sequence(P, 0);
    if (n->a->kind != ND_NAME && n->a->kind != ND_TUPLE && n->a->kind != ND_MEMBER)
        chat_fail(P->e, n->a->off, "cannot assign to this expression");
    if (is(P, TK_EQUALS)) {
        next(P);
        n->b = sequence(P, 0);
    } else {
        expect(P, TK_STMT_CLOSE);
        n->c = body_until(P, endset, off);
        expect(P, TK_STMT_OPEN);
        expect_name(P, "endset");
    }
    expect(P, TK_STMT_CLOSE);
    return n;
}

/* Does the body read caller, varargs or kwargs (so a macro binds them)? */
static void scan_special(chat_node *m, const chat_node *x)
{
    if (!x) return;
    if (x->kind == ND_NAME) {
        m->uses_caller |= chat_str_eq(x->s, "caller");
        m->uses_varargs |= chat_str_eq(x->s, "varargs");
        m->uses_kwargs |= chat_str_eq(x->s, "kwargs");
    }
    if (x->kind == ND_MACRO) return; /* a nested macro binds its own */
    const chat_node *kids[] = {x->a, x->b, x->c, x->d, x->e};
    for (size_t i = 0; i < 5; i++) scan_special(m, kids[i]);
    for (size_t i = 0; i < x->n_kids; i++) {
        scan_special(m, x->kids[i]);
        if (x->vals) scan_special(m, x->vals[i]);
    }
}

static chat_node *stmt_macro(parser *P, uint32_t off)
{
    static const char *const endmacro[] = {"endmacro", NULL};
    chat_node *name = primary(P);
    if (name->kind != ND_NAME) chat_fail(P->e, name->off, "expected a macro name");
    chat_node *n = node(P, ND_MACRO, off);
    n->s = name->s;
    arg_list(P, n, 1);
    expect(P, TK_STMT_CLOSE);
    n->b = body_until(P, endmacro, off);
    end_stmt(P, "endmacro");
    scan_special(n, n->b);
    return n;
}

static chat_node *stmt_call(parser *P, uint32_t off)
{
    static const char *const endcall[] = {"endcall", NULL};
    chat_node *n = node(P, ND_CALL_BLOCK, off);
    if (is(P, TK_LPAREN)) arg_list(P, n, 1);
    chat_node *callee = primary(P);
    if (callee->kind != ND_NAME) chat_fail(P->e, callee->off, "expected a macro name after 'call'");
    chat_node *c = node(P, ND_CALL, callee->off);
    c->a = callee;
    arg_list(P, c, 0);
    n->a = c;
    expect(P, TK_STMT_CLOSE);
    n->b = body_until(P, endcall, off);
    end_stmt(P, "endcall");
    scan_special(n, n->b);
    return n;
}

static chat_node *stmt_filter(parser *P, uint32_t off)
{
    static const char *const endfilter[] = {"endfilter", NULL};
    chat_node *n = node(P, ND_FILTER_BLOCK, off);
    chat_node *f = primary(P);
    if (f->kind != ND_NAME) chat_fail(P->e, f->off, "expected a filter name");
    if (is(P, TK_LPAREN)) f = call(P, f);
    n->a = f;
    expect(P, TK_STMT_CLOSE);
    n->b = body_until(P, endfilter, off);
    end_stmt(P, "endfilter");
    return n;
}

static chat_node *statement(parser *P)
{
    uint32_t open = expect(P, TK_STMT_OPEN)->off;
    if (!is(P, TK_NAME)) unexpected(P, "a statement name");
    const chat_tok *kw = next(P);
    chat_str s = kw->s;
    (void)open;
    if (chat_str_eq(s, "if")) return stmt_if(P, kw->off);
    if (chat_str_eq(s, "for")) return stmt_for(P, kw->off);
    if (chat_str_eq(s, "set")) return stmt_set(P, kw->off);
    if (chat_str_eq(s, "macro")) return stmt_macro(P, kw->off);
    if (chat_str_eq(s, "call")) return stmt_call(P, kw->off);
    if (chat_str_eq(s, "filter")) return stmt_filter(P, kw->off);
    if (chat_str_eq(s, "break") || chat_str_eq(s, "continue")) {
        expect(P, TK_STMT_CLOSE);
        return node(P, chat_str_eq(s, "break") ? ND_BREAK : ND_CONTINUE, kw->off);
    }
    static const char *const ends[] = {"endif", "endfor", "endmacro", "endcall", "endfilter", "endset", "elif", "else", NULL};
    for (int k = 0; ends[k]; k++)
        if (chat_str_eq(s, ends[k])) chat_fail(P->e, kw->off, "unexpected '{%% %.*s %%}'", (int)s.n, s.p);
    chat_fail(P->e, kw->off, "unsupported statement '%.*s'", (int)s.n, s.p);
}

/* One element of a body: text, {{ expression }} or a statement; NULL for a comment. */
static chat_node *any(parser *P)
{
    const chat_tok *t = peek(P);
    if (t->kind == TK_COMMENT) return next(P), NULL;
    if (t->kind == TK_TEXT) {
        chat_node *n = node(P, ND_TEXT, next(P)->off);
        n->s = t->s;
        return n;
    }
    if (t->kind == TK_STMT_OPEN) return statement(P);
    if (t->kind == TK_EXPR_OPEN) {
        next(P);
        chat_node *n = expr(P);
        expect(P, TK_EXPR_CLOSE);
        return n;
    }
    unexpected(P, "text, '{{' or '{%'");
}

static chat_node *body_until(parser *P, const char *const *names, uint32_t open)
{
    chat_node *b = node(P, ND_BODY, peek(P)->off);
    nvec v = {0};
    enter(P);
    while (!(names && at_stmt(P, names))) {
        if (is(P, TK_EOF)) {
            if (!names) break;
            chat_fail(P->e, open, "'{%% %s %%}' is missing for this block", names[0]);
        }
        chat_node *n = any(P);
        if (n) push(P, &v, n);
    }
    P->depth--;
    b->kids = v.v, b->n_kids = v.n;
    return b;
}

chat_node *chat_parse(chat_err *e, const chat_tok *toks, size_t n_tok)
{
    parser P = {.e = e, .t = toks, .n = n_tok};
    return body_until(&P, NULL, 0);
}
