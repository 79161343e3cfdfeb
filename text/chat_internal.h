/* chat_internal.h - shared pieces of the chat-template engine: the arena,
 * tokens (chat_lex.c), the syntax tree (chat_parse.c), values
 * (chat_value.c, chat_json.c), the renderer (chat_eval.c, chat_expr.c) and
 * the built-ins (chat_filter.c, chat_builtin.c). Semantics follow
 * @huggingface/jinja, the renderer transformers.js uses; where it has no
 * answer (it throws), Jinja2's is taken. Errors unwind with longjmp to the
 * public entry point; everything lives in an arena, so nothing leaks. */
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
    const char *src;       /* the original source, for line/column */
    const uint32_t *map;   /* offset in the preprocessed text -> offset in src */
    size_t map_n;
    int status;
    int raised; /* raise_exception: the message is the whole error text */
    chat_arena *arena;
} chat_err;

_Noreturn void chat_fail(chat_err *e, uint32_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void *chat_alloc(chat_err *e, size_t n); /* fails through e */
chat_str chat_str_dup(chat_err *e, const char *p, size_t n);
int chat_str_eq(chat_str a, const char *z);
int chat_str_same(chat_str a, chat_str b);

/* ---- tokens ---- */
typedef enum {
    TK_EOF,
    TK_TEXT,
    TK_COMMENT,
    TK_STMT_OPEN,
    TK_STMT_CLOSE,
    TK_EXPR_OPEN,
    TK_EXPR_CLOSE,
    TK_NUMBER,  /* s: digits, "-" and "." included */
    TK_STRING,  /* s: the decoded value */
    TK_NAME,
    TK_EQUALS,
    TK_LPAREN,
    TK_RPAREN,
    TK_LBRACE,
    TK_RBRACE,
    TK_LBRACKET,
    TK_RBRACKET,
    TK_COMMA,
    TK_DOT,
    TK_COLON,
    TK_PIPE,
    TK_COMPARE, /* < > <= >= == != */
    TK_ADD,     /* + - ~ */
    TK_MUL,     /* * / // % */
    TK_POW,     /* ** */
    TK_UNARY,   /* - + before an operand */
} chat_tok_kind;

typedef struct {
    chat_tok_kind kind;
    uint32_t off; /* in the preprocessed text */
    chat_str s;
} chat_tok;

/* Preprocesses the source as @huggingface/jinja does (one trailing newline
 * dropped, lstrip_blocks and trim_blocks as regular expressions over the
 * text, the {% generation %} tags removed) and splits it into tokens
 * ending with TK_EOF. Fills e->map. */
chat_tok *chat_lex(chat_err *e, const char *src, size_t len, size_t *n_tok);

/* ---- syntax tree ---- */
typedef enum {
    /* statements */
    ND_BODY,      /* kids */
    ND_TEXT,      /* s */
    ND_IF,        /* a test, b body, c else body */
    ND_FOR,       /* a target (name or tuple), b iterable, c body, d else body, e select test */
    ND_SET,       /* a target, b value (NULL: c is the block body) */
    ND_MACRO,     /* s name, kids params (name or kwarg), b body */
    ND_CALL_BLOCK,/* a call, kids caller params, b body */
    ND_FILTER_BLOCK, /* a filter (name or call), b body */
    ND_BREAK,
    ND_CONTINUE,
    /* expressions */
    ND_INT, ND_FLOAT, /* num */
    ND_STR,       /* s */
    ND_NAME,      /* s */
    ND_ARRAY,     /* kids */
    ND_TUPLE,     /* kids */
    ND_OBJECT,    /* kids keys, vals values */
    ND_BIN,       /* s operator, a, b */
    ND_UNARY,     /* s "not", "-" or "+", a */
    ND_MEMBER,    /* a object, b property, ival computed */
    ND_SLICE,     /* a, b, c: start, stop, step (any NULL) */
    ND_CALL,      /* a callee, kids args */
    ND_KWARG,     /* s name, a value */
    ND_SPREAD,    /* a (*x) */
    ND_KWSPREAD,  /* a (**x) */
    ND_FILTER,    /* a operand, b filter: ND_NAME or ND_CALL of one */
    ND_TEST,      /* a operand, s test, ival negated, kids arguments */
    ND_TERNARY,   /* a condition, b true value, c false value */
    ND_SELECT,    /* a value, b condition (x if c, without else) */
} chat_node_kind;

typedef struct chat_node chat_node;
struct chat_node {
    chat_node_kind kind;
    uint32_t off;
    int64_t ival;
    double num;
    chat_str s;
    chat_node *a, *b, *c, *d, *e;
    chat_node **kids, **vals;
    size_t n_kids;
    int uses_caller, uses_varargs, uses_kwargs; /* macros and call blocks */
};

chat_node *chat_parse(chat_err *e, const chat_tok *toks, size_t n_tok);

/* ---- values ---- */
typedef enum {
    CV_UNDEF,
    CV_NULL,
    CV_BOOL,
    CV_INT,   /* a JavaScript number that is an integer */
    CV_FLOAT,
    CV_STR,
    CV_ARRAY, /* tuple: ival set */
    CV_OBJECT,
    CV_NS,    /* namespace(): attributes, no methods */
    CV_FUNC,
} chat_vkind;

typedef struct chat_list chat_list;
typedef struct chat_dict chat_dict;
typedef struct chat_func chat_func;

typedef struct {
    chat_vkind kind;
    int tuple;
    union {
        int b;
        double num;
        chat_str s;
        chat_list *l;
        chat_dict *d;
        chat_func *f;
    };
} chat_val;

struct chat_list {
    size_t n, cap;
    chat_val *v;
};
struct chat_dict {
    size_t n, cap;
    chat_str *k;
    chat_val *v;
};

/* ---- rendering ---- */
typedef struct chat_env chat_env;
struct chat_env {
    chat_env *up;
    chat_dict vars;
    int call_block; /* the scope a {% call %} made: holds "caller" */
};

typedef struct {
    chat_err *e;
    shardlm_chat_limits lim;
    char *out;
    size_t out_len, out_cap;
    size_t iterations;
    int depth;
    int64_t now;   /* seconds since the epoch for strftime_now */
    int loop_ctl;  /* set by break/continue: 1 break, 2 continue */
    uint32_t off;  /* where the current built-in was called, for errors */
    void *pending_json; /* a cJSON tree being converted (freed on failure) */
} chat_ctx;

/* Calling convention of built-in functions and macros: positional
 * arguments, then keyword arguments (kw may be NULL). */
typedef struct {
    chat_val *v;
    size_t n;
    chat_dict *kw;
} chat_args;

typedef chat_val (*chat_builtin_fn)(chat_ctx *r, chat_val self, const chat_args *a);

typedef enum { CF_BUILTIN, CF_MACRO, CF_CALLER } chat_func_kind;
struct chat_func {
    chat_func_kind kind;
    const char *name;
    chat_builtin_fn fn;     /* CF_BUILTIN */
    chat_val self;          /* a method's object */
    const chat_node *node;  /* CF_MACRO, CF_CALLER */
    chat_env *closure;
};

struct shardlm_chat_template {
    chat_arena arena;
    char *origin;
    char *bos, *eos;
    const char *src;
    const uint32_t *map;
    size_t map_n;
    chat_node *root;
    shardlm_chat_limits lim;
    int is_default;
    char unsupported[480]; /* the first construct rendering would refuse, or "" */
};

/* chat_render.c: notes in t->unsupported the first filter, test or
 * function the engine does not have (found at load; the template still
 * renders until a request reaches it). */
void chat_scan_unsupported(shardlm_chat_template *t, const chat_node *root);

/* chat_eval.c */
chat_str chat_render_body(chat_ctx *r, const chat_node *body, chat_env *env);
void chat_env_set(chat_ctx *r, chat_env *env, chat_str name, chat_val v);
chat_env *chat_env_new(chat_ctx *r, chat_env *up);
chat_val chat_call(chat_ctx *r, chat_val fn, const chat_args *a, chat_env *site, uint32_t off);
void chat_count_iteration(chat_ctx *r, uint32_t off);

/* chat_expr.c */
chat_val chat_eval(chat_ctx *r, const chat_node *n, chat_env *env);
chat_val chat_lookup(chat_env *env, chat_str name);
void chat_eval_args(chat_ctx *r, const chat_node *const *args, size_t n, chat_env *env, chat_args *out);
chat_val chat_member(chat_ctx *r, chat_val obj, chat_val prop, uint32_t off);

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
chat_val chat_v_str(chat_str s);
chat_val chat_v_strz(const char *z);
chat_val chat_v_int(double i);
chat_val chat_v_float(double f);
chat_val chat_v_num(double x, int is_float);
chat_val chat_v_bool(int b);
chat_val chat_v_undef(void);
chat_val chat_v_null(void);
chat_val chat_v_list(chat_list *l);
chat_val chat_v_dict(chat_dict *d);
int chat_truthy(chat_val v);
int chat_is_num(chat_val v);              /* int or float */
int chat_loose_eq(chat_ctx *r, chat_val a, chat_val b); /* JavaScript's == on the values */
void chat_js_string(chat_ctx *r, chat_sb *b, chat_val v); /* String(x.value) in JavaScript */
int chat_strict_eq(chat_val a, chat_val b);
const char *chat_type_name(chat_val v);  /* "StringValue", ... as the reference names them */
/* How a value prints ({{ x }}, ~, string()); undefined and none are "". */
chat_str chat_to_str(chat_ctx *r, chat_val v);
void chat_num_str(chat_sb *b, double x);  /* JavaScript's Number.prototype.toString */
/* JSON.stringify-like output: indent < 0 none; undefined prints as
 * "undefined" unless undef_null. Fails naming a function. */
typedef struct {
    int indent;
    int ensure_ascii, sort_keys, undef_null;
    chat_str item_sep, key_sep; /* {0}: the defaults */
} chat_json_opts;
void chat_json(chat_ctx *r, chat_sb *b, chat_val v, const chat_json_opts *o, int depth);
chat_list *chat_list_new(chat_ctx *r, size_t n);
void chat_list_push(chat_ctx *r, chat_list *l, chat_val v);
chat_dict *chat_dict_new(chat_ctx *r);
chat_val chat_dict_get(const chat_dict *d, chat_str key);
int chat_dict_has(const chat_dict *d, chat_str key);
void chat_dict_put(chat_ctx *r, chat_dict *d, chat_str key, chat_val v);
int chat_compare(chat_ctx *r, chat_val a, chat_val b, int case_sensitive); /* sort order; fails on mixed types */

/* chat_text.c: strings as JavaScript sees them (UTF-16 lengths and
 * indices, its whitespace, case mapping). */
size_t chat_u16_len(chat_str s);
chat_val chat_u16_at(chat_ctx *r, chat_str s, double i); /* undefined when out of range */
chat_list *chat_chars(chat_ctx *r, chat_str s);           /* code points, one string each */
chat_str chat_trim(chat_str s, int left, int right);
chat_str chat_case(chat_ctx *r, chat_str s, int upper);
chat_str chat_title(chat_ctx *r, chat_str s);
chat_str chat_capitalize(chat_ctx *r, chat_str s);
int chat_js_space(uint32_t cp);
uint32_t chat_utf8_next(chat_str s, size_t *i);
void chat_utf8_put(chat_sb *b, uint32_t cp);
chat_str chat_replace(chat_ctx *r, chat_str s, chat_str old, chat_str rep, double count);
chat_str chat_strftime(chat_ctx *r, chat_str fmt, int64_t now);

/* chat_json.c: JSON text -> values, keys in JavaScript's property order. */
int chat_json_parse(chat_ctx *r, const char *text, size_t len, chat_val *out, char *why, size_t why_cap);

/* chat_filter.c */
int chat_known_filter(chat_str name);
chat_val chat_apply_filter(chat_ctx *r, chat_val x, const chat_node *f, chat_env *env);

/* chat_builtin.c */
int chat_apply_test(chat_ctx *r, chat_str name, chat_val x, const chat_args *a, uint32_t off);
int chat_known_test(chat_str name);
chat_val chat_method(chat_ctx *r, chat_val obj, chat_str name); /* bound method or undefined */
void chat_bind_globals(chat_ctx *r, chat_env *env);
chat_val chat_func_val(chat_ctx *r, const char *name, chat_builtin_fn fn, chat_val self);
_Noreturn void chat_fail_r(chat_ctx *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
chat_val chat_arg(const chat_args *a, size_t i, const char *kw); /* positional i or keyword kw, else undefined */

#endif
