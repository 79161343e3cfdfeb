/* chat_internal.h - shared pieces of the chat-template engine: the arena,
 * tokens (chat_lex.c), the syntax tree (chat_parse.c), values and the
 * renderer (chat_eval.c, chat_builtin.c). Errors inside the engine unwind
 * with longjmp to the public entry point; everything lives in an arena, so
 * nothing leaks on that path. */
#ifndef SHARDLM_CHAT_INTERNAL_H
#define SHARDLM_CHAT_INTERNAL_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

#include "shardlm_text.h"

#define CHAT_MAX_DEPTH 128 /* nesting of statements and expressions */

typedef struct {
    const char *p;
    size_t n;
} chat_str;

/* ---- arena ---- */
typedef struct chat_blk chat_blk;
typedef struct {
    chat_blk *head;
    size_t total, limit;
} chat_arena;

void *chat_arena_try(chat_arena *a, size_t n); /* NULL: over limit or OOM */
void chat_arena_free(chat_arena *a);

/* Error context shared by lexer, parser and renderer. */
typedef struct {
    jmp_buf jb;
    const char *origin;
    const char *src; /* for line/column of an offset */
    int status;
    int raised; /* raise_exception: the message is the whole error text */
    chat_arena *arena;
} chat_err;

_Noreturn void chat_fail(chat_err *e, uint32_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void *chat_alloc(chat_err *e, size_t n); /* fails through e */
chat_str chat_str_dup(chat_err *e, const char *p, size_t n);
int chat_str_eq(chat_str a, const char *z);

/* ---- tokens ---- */
typedef enum {
    TK_EOF,
    TK_TEXT,
    TK_EXPR_OPEN,
    TK_EXPR_CLOSE,
    TK_STMT_OPEN,
    TK_STMT_CLOSE,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_OP,
} chat_tok_kind;

typedef struct {
    chat_tok_kind kind;
    uint32_t off;
    chat_str s;
    int64_t ival;
} chat_tok;

/* Normalises newlines, drops one trailing newline, applies the whitespace
 * rules and splits the source into tokens (ending with TK_EOF). */
chat_tok *chat_lex(chat_err *e, const char *src, size_t len, size_t *n_tok);

/* ---- syntax tree ---- */
typedef enum {
    /* statements */
    ND_BODY,     /* kids: statements */
    ND_TEXT,     /* s */
    ND_OUTPUT,   /* a */
    ND_IF,       /* a cond, b then-body, c else (body or if) or NULL */
    ND_FOR,      /* s var, a iterable, b body, c else-body, d filter */
    ND_SET,      /* s name, a value */
    ND_SET_ATTR, /* s name, s2 attribute, a value */
    ND_BREAK,
    ND_CONTINUE,
    /* expressions */
    ND_LIT,    /* val */
    ND_NAME,   /* s */
    ND_ATTR,   /* a object, s attribute */
    ND_INDEX,  /* a object, b key */
    ND_SLICE,  /* a object, b start, c stop, d step (any NULL) */
    ND_CALL,   /* s function name, kids args, names/kw kwargs */
    ND_METHOD, /* a object, s method, kids args */
    ND_FILTER, /* a operand, s filter, kids args, names/kw kwargs */
    ND_TEST,   /* a operand, s test, ival negated */
    ND_NOT,    /* a */
    ND_NEG,    /* a */
    ND_BIN,    /* op, a, b */
    ND_AND,    /* a, b */
    ND_OR,     /* a, b */
    ND_COND,   /* a value, b condition, c else-value or NULL */
    ND_LIST,   /* kids */
    ND_DICT,   /* kids keys, kw values */
} chat_node_kind;

typedef enum {
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN,
    OP_ADD, OP_SUB, OP_MUL, OP_FLOORDIV, OP_MOD, OP_CONCAT,
} chat_op;

/* ---- values ---- */
typedef enum {
    CV_UNDEF, /* s: the name that was missing */
    CV_NONE,
    CV_BOOL,
    CV_INT,
    CV_STR,
    CV_LIST,
    CV_DICT,
    CV_NS,   /* namespace(): a dict whose attributes set can change */
    CV_LOOP,
    CV_FUNC, /* s: a built-in function's name */
} chat_vkind;

typedef struct chat_list chat_list;
typedef struct chat_dict chat_dict;
typedef struct chat_loop chat_loop;

typedef struct {
    chat_vkind kind;
    union {
        int64_t i;
        chat_str s;
        chat_list *l;
        chat_dict *d;
        chat_loop *loop;
    };
} chat_val;

struct chat_list {
    size_t n;
    chat_val *v;
};
struct chat_dict {
    size_t n, cap;
    chat_str *k;
    chat_val *v;
};
struct chat_loop {
    const chat_list *items;
    size_t index0;
};

typedef struct chat_node chat_node;
struct chat_node {
    chat_node_kind kind;
    chat_op op;
    uint32_t off;
    int64_t ival;
    chat_str s, s2;
    chat_val val;
    chat_node *a, *b, *c, *d;
    chat_node **kids;
    size_t n_kids;
    chat_str *names; /* kwarg names (ND_CALL, ND_FILTER) */
    chat_node **kw;  /* kwarg values, or dict values */
    size_t n_kw;
};

chat_node *chat_parse(chat_err *e, const chat_tok *toks, size_t n_tok);

/* Is a filter / test / function / method known (checked at parse time)? */
int chat_known_filter(chat_str name);
int chat_known_test(chat_str name);
int chat_known_function(chat_str name);
int chat_known_method(chat_str name);

/* ---- rendering ---- */
typedef struct chat_frame chat_frame;

typedef struct {
    chat_err *e;
    chat_frame *frame;
    shardlm_chat_limits lim;
    char *out;
    size_t out_len, out_cap;
    size_t iterations;
    int depth;
    int loop_ctl; /* set by break/continue: 1 break, 2 continue */
} chat_render_ctx;

struct shardlm_chat_template {
    chat_arena arena;
    char *origin;
    char *bos, *eos;
    const char *src;
    chat_node *root;
    shardlm_chat_limits lim;
    int is_default;
};

/* Renders root with messages etc. already bound in ctx->frame. */
void chat_eval_body(chat_render_ctx *r, const chat_node *body);
chat_val chat_eval_expr(chat_render_ctx *r, const chat_node *n);
void chat_frame_push(chat_render_ctx *r);
void chat_frame_set(chat_render_ctx *r, chat_str name, chat_val v);

/* A string being built in the render arena. */
typedef struct {
    chat_err *e;
    char *p;
    size_t n, cap;
} chat_sb;
void chat_sb_put(chat_sb *b, const char *s, size_t n);
void chat_sb_putz(chat_sb *b, const char *z);
chat_str chat_sb_str(const chat_sb *b);

/* chat_value.c */
void chat_repr(chat_sb *b, chat_val v);                /* Python repr() */
int chat_json(chat_sb *b, chat_val v, int64_t indent, int level); /* 0: not serialisable */
int chat_is_space_at(chat_str s, size_t i, size_t *w); /* Python str.isspace of the char at i */
int chat_is_space_before(chat_str s, size_t end, size_t *w);
chat_list *chat_list_new(chat_render_ctx *r, size_t n);
_Noreturn void chat_fail_undefined(chat_render_ctx *r, chat_val v, uint32_t off);

/* chat_builtin.c */
chat_val chat_v_str(chat_str s);
chat_val chat_v_int(int64_t i);
chat_val chat_v_bool(int b);
int chat_truthy(chat_val v);
int chat_equal(chat_val a, chat_val b);
const char *chat_type_name(chat_val v);
chat_str chat_to_str(chat_render_ctx *r, chat_val v, uint32_t off); /* Python str() */
chat_val chat_dict_get(const chat_dict *d, chat_str key);
void chat_dict_put(chat_render_ctx *r, chat_dict *d, chat_str key, chat_val v);
chat_val chat_apply_filter(chat_render_ctx *r, const chat_node *n, chat_val x);
int chat_apply_test(chat_render_ctx *r, const chat_node *n, chat_val x);
chat_val chat_call_function(chat_render_ctx *r, const chat_node *n);
chat_val chat_call_method(chat_render_ctx *r, const chat_node *n, chat_val obj);
size_t chat_utf8_len(chat_str s);
/* The characters of s, one string each. */
chat_list *chat_utf8_chars(chat_render_ctx *r, chat_str s);
/* Byte offset of code point i (clamped to s.n). */
size_t chat_utf8_offset(chat_str s, int64_t i);

#endif
