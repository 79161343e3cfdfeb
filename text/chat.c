/* chat.c - chat-template API: load (from text, a GGUF or a file), the
 * built-in default, limits and rendering. Also the arena and the error
 * plumbing the engine shares: each entry point sets a jmp_buf; failures deep
 * in the lexer, parser or renderer longjmp back to it, and the arena they
 * allocated from is freed in one go. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_internal.h"
#include "shardlm_common.h"

/* ---- arena ---- */

struct chat_blk {
    chat_blk *next;
    size_t used, cap;
    max_align_t data[];
};

void *chat_arena_try(chat_arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (n == 0) n = sizeof(max_align_t);
    chat_blk *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (a->limit && a->total + cap > a->limit) return NULL;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = a->head, b->used = 0, b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void chat_arena_free(chat_arena *a)
{
    for (chat_blk *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    a->head = NULL;
    a->total = 0;
}

/* ---- errors ---- */

static void line_col(const chat_err *e, uint32_t off, int *line, int *col)
{
    const char *src = e->src;
    if (e->map) off = e->map[off < e->map_n ? off : e->map_n];
    *line = 1, *col = 1;
    for (uint32_t i = 0; src && i < off && src[i]; i++) {
        if (src[i] == '\n') (*line)++, *col = 1;
        else (*col)++;
    }
}

_Noreturn void chat_fail(chat_err *e, uint32_t off, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (e->raised) {
        shardlm_err_set("%s", msg);
    } else {
        int line, col;
        line_col(e, off, &line, &col);
        shardlm_err_set("%s:%d:%d: %s", e->origin, line, col, msg);
    }
    if (!e->status) e->status = SHARDLM_EINPUT;
    longjmp(e->jb, 1);
}

void *chat_alloc(chat_err *e, size_t n)
{
    void *p = chat_arena_try(e->arena, n);
    if (!p) {
        int over = e->arena->limit && e->arena->total + n > e->arena->limit;
        if (!over) e->status = SHARDLM_ENOMEM;
        chat_fail(e, 0, over ? "scratch memory limit of %zu bytes exceeded" : "out of memory", e->arena->limit);
    }
    return p;
}

chat_str chat_str_dup(chat_err *e, const char *p, size_t n)
{
    char *c = chat_alloc(e, n + 1);
    memcpy(c, p, n);
    c[n] = 0;
    return (chat_str){c, n};
}

int chat_str_eq(chat_str a, const char *z)
{
    size_t n = strlen(z);
    return a.n == n && memcmp(a.p, z, n) == 0;
}

int chat_str_same(chat_str a, chat_str b) { return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0); }

/* ---- templates ---- */

const char shardlm_chat_default_template[] =
    "{% for message in messages %}"
    "{% if message.role == 'system' %}{{ message.content }}\n\n"
    "{% elif message.role == 'user' %}User: {{ message.content }}\n"
    "{% elif message.role == 'assistant' %}Assistant: {{ message.content }}\n"
    "{% else %}{{ message.role | capitalize }}: {{ message.content }}\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}";

shardlm_chat_limits shardlm_chat_default_limits(void)
{
    return (shardlm_chat_limits){16u << 20, 256u << 20, 1000000};
}

void shardlm_chat_template_free(shardlm_chat_template *t)
{
    if (!t) return;
    chat_arena_free(&t->arena);
    free(t->origin);
    free(t->bos);
    free(t->eos);
    free(t);
}

/* Lexes and parses into t; everything here unwinds through st->e. */
typedef struct {
    chat_err e;
    const char *source;
    size_t len;
} load_state;

static void compile(shardlm_chat_template *t, load_state *st)
{
    if (st->len > UINT32_MAX / 2) chat_fail(&st->e, 0, "chat template too large (%zu bytes)", st->len);
    size_t n_tok;
    char *src = chat_alloc(&st->e, st->len + 1);
    memcpy(src, st->source, st->len);
    src[st->len] = 0;
    st->e.src = src;
    chat_tok *toks = chat_lex(&st->e, src, st->len, &n_tok);
    t->src = src;
    t->map = st->e.map, t->map_n = st->e.map_n;
    t->root = chat_parse(&st->e, toks, n_tok);
    chat_scan_unsupported(t, t->root);
}

int shardlm_chat_template_new(const char *source, size_t len, const char *origin, shardlm_chat_template **out)
{
    *out = NULL;
    shardlm_chat_template *t = calloc(1, sizeof *t);
    /* on the heap: longjmp comes back here, and locals changed since setjmp
     * would be indeterminate */
    load_state *st = calloc(1, sizeof *st);
    if (!t || !st || !(t->origin = strdup(origin ? origin : "chat template")) || !(t->bos = strdup("")) ||
        !(t->eos = strdup(""))) {
        shardlm_chat_template_free(t);
        free(st);
        shardlm_err_set("chat template: out of memory");
        return SHARDLM_ENOMEM;
    }
    t->lim = shardlm_chat_default_limits();
    st->e.origin = t->origin;
    st->e.arena = &t->arena;
    st->source = source ? source : "";
    st->len = source ? len : 0;
    int status = SHARDLM_OK;
    if (setjmp(st->e.jb)) status = st->e.status;
    else compile(t, st);
    free(st);
    if (status) {
        shardlm_chat_template_free(t);
        return status;
    }
    *out = t;
    return SHARDLM_OK;
}

static int set_str(char **dst, const char *s)
{
    char *c = strdup(s ? s : "");
    if (!c) return SHARDLM_ENOMEM;
    free(*dst);
    *dst = c;
    return SHARDLM_OK;
}

int shardlm_chat_template_set_tokens(shardlm_chat_template *t, const char *bos, const char *eos)
{
    if (set_str(&t->bos, bos) || set_str(&t->eos, eos)) {
        shardlm_err_set("chat template: out of memory");
        return SHARDLM_ENOMEM;
    }
    return SHARDLM_OK;
}

void shardlm_chat_template_set_limits(shardlm_chat_template *t, shardlm_chat_limits lim) { t->lim = lim; }
int shardlm_chat_template_is_default(const shardlm_chat_template *t) { return t->is_default; }
const char *shardlm_chat_template_origin(const shardlm_chat_template *t) { return t->origin; }

/* Text of the token whose id is stored under key, or "" (malloc'd). */
static char *token_text(const shardlm_gguf *g, const char *key)
{
    uint64_t id;
    shardlm_gguf_str s = {"", 0};
    if (shardlm_gguf_get_u64(g, key, &id) == SHARDLM_OK &&
        shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", id, &s) != SHARDLM_OK)
        s = (shardlm_gguf_str){"", 0};
    char *c = malloc(s.len + 1);
    if (c) memcpy(c, s.ptr, s.len), c[s.len] = 0;
    return c;
}

static int set_tokens_from_gguf(shardlm_chat_template *t, const shardlm_gguf *g)
{
    char *bos = token_text(g, "tokenizer.ggml.bos_token_id");
    char *eos = token_text(g, "tokenizer.ggml.eos_token_id");
    int rc = bos && eos ? shardlm_chat_template_set_tokens(t, bos, eos) : SHARDLM_ENOMEM;
    if (rc) shardlm_err_set("chat template: out of memory");
    free(bos);
    free(eos);
    return rc;
}

int shardlm_chat_template_from_gguf(const shardlm_gguf *g, shardlm_chat_template **out)
{
    shardlm_gguf_str src;
    char origin[4200];
    *out = NULL;
    int rc = shardlm_gguf_get_str(g, "tokenizer.chat_template", &src);
    if (rc < 0) return rc;
    int is_default = rc == 1;
    if (is_default) {
        src = (shardlm_gguf_str){shardlm_chat_default_template, strlen(shardlm_chat_default_template)};
        snprintf(origin, sizeof origin, "built-in default chat template");
    } else {
        snprintf(origin, sizeof origin, "%s: tokenizer.chat_template", shardlm_gguf_path(g));
    }
    rc = shardlm_chat_template_new(src.ptr, src.len, origin, out);
    if (rc) return rc;
    (*out)->is_default = is_default;
    if ((rc = set_tokens_from_gguf(*out, g))) {
        shardlm_chat_template_free(*out);
        *out = NULL;
    }
    return rc;
}

int shardlm_chat_template_from_file(const char *path, const shardlm_gguf *g, shardlm_chat_template **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        shardlm_err_set("%s: cannot open chat template: %s", path, strerror(errno));
        return SHARDLM_EINPUT;
    }
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap && cap < (64u << 20)) buf = realloc(buf, cap *= 2); /* a template is small */
        else if (n == cap) break;
    }
    int bad = ferror(f) || (buf && n == cap);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        shardlm_err_set("%s: cannot read chat template%s", path, bad ? " (unreadable or over 64 MiB)" : "");
        return buf ? SHARDLM_EINPUT : SHARDLM_ENOMEM;
    }
    int rc = shardlm_chat_template_new(buf, n, path, out);
    free(buf);
    if (rc == SHARDLM_OK && g && (rc = set_tokens_from_gguf(*out, g))) {
        shardlm_chat_template_free(*out);
        *out = NULL;
    }
    return rc;
}

