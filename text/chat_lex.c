/* chat_lex.c - chat-template lexer: splits the source into text and tag
 * tokens with Jinja's whitespace rules as transformers configures them
 * (trim_blocks: the newline after a block or comment tag goes; lstrip_blocks:
 * spaces and tabs before a block or comment tag at the start of a line go;
 * "-" strips all whitespace on its side; "+" turns the automatic rules off). */
#include <string.h>

#include "chat_internal.h"

typedef struct {
    chat_err *e;
    const char *src;
    size_t len, pos;
    chat_tok *v;
    size_t n, cap;
} lexer;

static void emit(lexer *L, chat_tok_kind kind, uint32_t off, chat_str s, int64_t ival)
{
    if (L->n == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 64;
        chat_tok *v = chat_alloc(L->e, cap * sizeof *v);
        if (L->n) memcpy(v, L->v, L->n * sizeof *v);
        L->v = v;
        L->cap = cap;
    }
    L->v[L->n++] = (chat_tok){kind, off, s, ival};
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
static int is_name0(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Next "{{", "{%" or "{#" at or after pos, or len. */
static size_t find_tag(const lexer *L, size_t pos)
{
    for (size_t i = pos; i + 1 < L->len; i++)
        if (L->src[i] == '{' && (L->src[i + 1] == '{' || L->src[i + 1] == '%' || L->src[i + 1] == '#')) return i;
    return L->len;
}

/* lstrip_blocks: drop spaces/tabs between the line start and the tag, when
 * nothing else stands there (Jinja looks at the source, not the output). */
static size_t lstrip_line(const lexer *L, size_t start, size_t end)
{
    size_t ls = end;
    while (ls > start && (L->src[ls - 1] == ' ' || L->src[ls - 1] == '\t')) ls--;
    int at_line_start = ls > start ? L->src[ls - 1] == '\n' : (ls == 0 || L->src[ls - 1] == '\n');
    return at_line_start ? ls : end;
}

/* Emits the text in [start, end) given the markers of the tags around it.
 * next_tag is '{', '%' or '#' for the tag that follows (0 at the end). */
static void emit_text(lexer *L, size_t start, size_t end, int strip_left, char next_tag, char next_mark)
{
    if (strip_left)
        while (start < end && is_space(L->src[start])) start++;
    if (next_mark == '-') {
        while (end > start && is_space(L->src[end - 1])) end--;
    } else if (next_mark != '+' && (next_tag == '%' || next_tag == '#')) {
        end = lstrip_line(L, start, end);
    }
    if (end > start) emit(L, TK_TEXT, (uint32_t)start, (chat_str){L->src + start, end - start}, 0);
}

/* Decodes a quoted string literal at L->pos (Python escapes). */
static void lex_string(lexer *L)
{
    size_t start = L->pos;
    char q = L->src[L->pos++];
    char *buf = chat_alloc(L->e, L->len - L->pos + 1);
    size_t n = 0;
    for (;;) {
        if (L->pos >= L->len) chat_fail(L->e, (uint32_t)start, "unterminated string literal");
        char c = L->src[L->pos++];
        if (c == q) break;
        if (c != '\\') {
            buf[n++] = c;
            continue;
        }
        if (L->pos >= L->len) chat_fail(L->e, (uint32_t)start, "unterminated string literal");
        char x = L->src[L->pos++];
        switch (x) {
        case 'n': buf[n++] = '\n'; break;
        case 't': buf[n++] = '\t'; break;
        case 'r': buf[n++] = '\r'; break;
        case '0': buf[n++] = '\0'; break;
        case '\\': case '\'': case '"': buf[n++] = x; break;
        case '\n': break; /* line continuation */
        case 'u': case 'x':
            chat_fail(L->e, (uint32_t)(L->pos - 2), "unsupported string escape '\\%c'", x);
        default: buf[n++] = '\\'; buf[n++] = x; break; /* Python keeps unknown escapes */
        }
    }
    emit(L, TK_STRING, (uint32_t)start, (chat_str){buf, n}, 0);
}

static void lex_number(lexer *L)
{
    size_t start = L->pos;
    int64_t v = 0;
    while (L->pos < L->len && is_digit(L->src[L->pos])) {
        int d = L->src[L->pos++] - '0';
        if (v > (INT64_MAX - d) / 10) chat_fail(L->e, (uint32_t)start, "integer literal too large");
        v = v * 10 + d;
    }
    if (L->pos + 1 < L->len && L->src[L->pos] == '.' && is_digit(L->src[L->pos + 1]))
        chat_fail(L->e, (uint32_t)start, "unsupported float literal");
    emit(L, TK_INT, (uint32_t)start, (chat_str){L->src + start, L->pos - start}, v);
}

static const char *const OPS2[] = {"==", "!=", "<=", ">=", "//", "**", NULL};
static const char OPS1[] = "()[]{},:.|~+-*/%<>=";

static void lex_op(lexer *L, int *depth)
{
    const char *p = L->src + L->pos;
    for (int i = 0; OPS2[i]; i++) {
        if (L->pos + 1 < L->len && p[0] == OPS2[i][0] && p[1] == OPS2[i][1]) {
            emit(L, TK_OP, (uint32_t)L->pos, (chat_str){p, 2}, 0);
            L->pos += 2;
            return;
        }
    }
    if (!strchr(OPS1, *p) || *p == 0) chat_fail(L->e, (uint32_t)L->pos, "unexpected character '%c'", *p);
    if (*p == '(' || *p == '[' || *p == '{') (*depth)++;
    if ((*p == ')' || *p == ']' || *p == '}') && *depth > 0) (*depth)--;
    emit(L, TK_OP, (uint32_t)L->pos, (chat_str){p, 1}, 0);
    L->pos++;
}

/* Does the tag close here? Sets *mark to '-', '+' or 0. */
static int at_close(const lexer *L, char kind, char *mark)
{
    const char *p = L->src + L->pos;
    size_t left = L->len - L->pos;
    char c = kind == '{' ? '}' : '%';
    if (left >= 3 && (p[0] == '-' || p[0] == '+') && p[1] == c && p[2] == '}') {
        *mark = p[0];
        return 3;
    }
    if (left >= 2 && p[0] == c && p[1] == '}') {
        *mark = 0;
        return 2;
    }
    return 0;
}

/* Tokens of one {{ }} or {% %} tag; returns the closing marker. */
static char lex_tag(lexer *L, char kind, size_t open)
{
    emit(L, kind == '{' ? TK_EXPR_OPEN : TK_STMT_OPEN, (uint32_t)open, (chat_str){L->src + open, 2}, 0);
    int depth = 0;
    for (;;) {
        while (L->pos < L->len && is_space(L->src[L->pos])) L->pos++;
        if (L->pos >= L->len) chat_fail(L->e, (uint32_t)open, "unterminated tag (no closing '%s')",
                                        kind == '{' ? "}}" : "%}");
        char mark;
        int w = depth == 0 ? at_close(L, kind, &mark) : 0;
        if (w) {
            emit(L, kind == '{' ? TK_EXPR_CLOSE : TK_STMT_CLOSE, (uint32_t)L->pos,
                 (chat_str){L->src + L->pos, (size_t)w}, 0);
            L->pos += (size_t)w;
            return mark;
        }
        char c = L->src[L->pos];
        if (is_name0(c)) {
            size_t s = L->pos;
            while (L->pos < L->len && (is_name0(L->src[L->pos]) || is_digit(L->src[L->pos]))) L->pos++;
            emit(L, TK_NAME, (uint32_t)s, (chat_str){L->src + s, L->pos - s}, 0);
        } else if (is_digit(c)) {
            lex_number(L);
        } else if (c == '\'' || c == '"') {
            lex_string(L);
        } else {
            lex_op(L, &depth);
        }
    }
}

/* Skips a {# #} comment; returns its closing marker. */
static char skip_comment(lexer *L, size_t open)
{
    for (size_t i = L->pos; i + 1 < L->len; i++) {
        if (L->src[i] == '#' && L->src[i + 1] == '}') {
            char mark = i > L->pos && (L->src[i - 1] == '-' || L->src[i - 1] == '+') ? L->src[i - 1] : 0;
            L->pos = i + 2;
            return mark;
        }
    }
    chat_fail(L->e, (uint32_t)open, "unterminated comment (no closing '#}')");
}

/* Copies src with \r\n and \r turned into \n, minus one trailing newline. */
static char *normalise(chat_err *e, const char *src, size_t len, size_t *out_len)
{
    char *s = chat_alloc(e, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n > 0 && s[n - 1] == '\n') n--;
    s[n] = 0;
    *out_len = n;
    return s;
}

chat_tok *chat_lex(chat_err *e, const char *src, size_t len, size_t *n_tok)
{
    lexer L = {.e = e};
    L.src = normalise(e, src, len, &L.len);
    e->src = L.src;
    int strip_left = 0;     /* previous tag ended with "-" */
    for (;;) {
        size_t tag = find_tag(&L, L.pos);
        char kind = tag < L.len ? L.src[tag + 1] : 0;
        char mark = tag + 2 < L.len && kind ? L.src[tag + 2] : 0;
        if (mark != '-' && mark != '+') mark = 0;
        emit_text(&L, L.pos, tag, strip_left, kind, mark);
        if (tag >= L.len) break;
        L.pos = tag + 2 + (mark ? 1 : 0);
        char close = kind == '#' ? skip_comment(&L, tag) : lex_tag(&L, kind, tag);
        strip_left = close == '-';
        /* trim_blocks: one newline right after a block or comment tag */
        if (!close && kind != '{' && L.pos < L.len && L.src[L.pos] == '\n') L.pos++;
    }
    emit(&L, TK_EOF, (uint32_t)L.len, (chat_str){L.src + L.len, 0}, 0);
    *n_tok = L.n;
    return L.v;
}
