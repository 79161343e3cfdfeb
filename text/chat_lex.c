/* chat_lex.c - chat-template lexer. Whitespace control follows
 * @huggingface/jinja (what transformers.js and so the reference renders),
 * which differs from Jinja2 in the corners: lstrip_blocks and trim_blocks
 * are regular expressions run over the whole source first (so they also
 * act inside string literals and raw text), "{%-"/"{{-" trim only the text
 * token just before them, "-%}"/"-}}" skip whitespace after, and the
 * transformers-only {% generation %} tags vanish. Whitespace is
 * JavaScript's (\s), line breaks for lstrip_blocks are \n, \r, U+2028 and
 * U+2029. */
#include <string.h>

#include "chat_internal.h"

/* ---- preprocessing: text plus, for each byte, its offset in the source ---- */

typedef struct {
    chat_err *e;
    char *s;
    uint32_t *m;
    size_t n, cap;
} pre;

static void pre_init(chat_err *e, pre *p, size_t cap)
{
    p->e = e;
    p->cap = cap + 1;
    p->s = chat_alloc(e, p->cap);
    p->m = chat_alloc(e, p->cap * sizeof *p->m);
    p->n = 0;
}

static void pre_put(pre *p, char c, uint32_t orig)
{
    p->s[p->n] = c;
    p->m[p->n++] = orig;
}

static void pre_end(pre *p, uint32_t end)
{
    p->s[p->n] = 0;
    p->m[p->n] = end;
}

/* Width of the JavaScript whitespace character at s[i], or 0. */
static size_t space_at(const char *s, size_t n, size_t i)
{
    size_t j = i;
    uint32_t cp = chat_utf8_next((chat_str){s, n}, &j);
    return chat_js_space(cp) ? j - i : 0;
}

/* Width of the whitespace character ending at s[end], or 0. */
static size_t space_before(const char *s, size_t start, size_t end)
{
    for (size_t w = 1; w <= 3 && w <= end - start; w++) {
        size_t i = end - w;
        if (w < 3 && ((unsigned char)s[i] & 0xC0) == 0x80) continue;
        return space_at(s, end, i) == w ? w : 0;
    }
    return 0;
}

static int line_break_at(const char *s, size_t n, size_t i, size_t *w)
{
    if (s[i] == '\n' || s[i] == '\r') return *w = 1, 1;
    if (i + 2 < n + 0 && (unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x80 &&
        ((unsigned char)s[i + 2] == 0xA8 || (unsigned char)s[i + 2] == 0xA9))
        return *w = 3, 1;
    return 0;
}

/* /^[ \t]*({[#%-])/gm -> "$1" */
static void lstrip_blocks(const pre *in, pre *out)
{
    int line_start = 1;
    for (size_t i = 0; i < in->n;) {
        if (line_start) {
            size_t q = i;
            while (q < in->n && (in->s[q] == ' ' || in->s[q] == '\t')) q++;
            if (q + 1 < in->n && in->s[q] == '{' && strchr("#%-", in->s[q + 1]) && in->s[q + 1]) i = q;
            line_start = 0;
        }
        size_t w;
        if (line_break_at(in->s, in->n, i, &w)) {
            for (size_t k = 0; k < w; k++) pre_put(out, in->s[i + k], in->m[i + k]);
            i += w;
            line_start = 1;
            continue;
        }
        pre_put(out, in->s[i], in->m[i]);
        i++;
    }
    pre_end(out, in->m[in->n]);
}

/* /([#%-]})\n/g -> "$1" */
static void trim_blocks(const pre *in, pre *out)
{
    for (size_t i = 0; i < in->n;) {
        if (i + 2 < in->n && in->s[i] && strchr("#%-", in->s[i]) && in->s[i + 1] == '}' && in->s[i + 2] == '\n') {
            pre_put(out, in->s[i], in->m[i]);
            pre_put(out, in->s[i + 1], in->m[i + 1]);
            i += 3;
            continue;
        }
        pre_put(out, in->s[i], in->m[i]);
        i++;
    }
    pre_end(out, in->m[in->n]);
}

static size_t skip_spaces(const pre *p, size_t i)
{
    size_t w;
    while (i < p->n && (w = space_at(p->s, p->n, i))) i += w;
    return i;
}

/* Matches /{%(-?)\s*(?:end)?generation\s*(-?)%}/ at i; returns its end. */
static size_t generation_tag(const pre *p, size_t i, int *lstrip, int *rstrip)
{
    if (i + 1 >= p->n || p->s[i] != '{' || p->s[i + 1] != '%') return 0;
    size_t j = i + 2;
    *lstrip = j < p->n && p->s[j] == '-';
    j = skip_spaces(p, j + (size_t)*lstrip);
    if (p->n - j >= 3 && !memcmp(p->s + j, "end", 3)) j += 3;
    if (p->n - j < 10 || memcmp(p->s + j, "generation", 10)) return 0;
    j = skip_spaces(p, j + 10);
    *rstrip = j < p->n && p->s[j] == '-';
    j += (size_t)*rstrip;
    if (j + 1 >= p->n || p->s[j] != '%' || p->s[j + 1] != '}') return 0;
    return j + 2;
}

static void drop_generation_tags(const pre *in, pre *out)
{
    size_t last = 0;
    for (size_t i = 0; i < in->n; i++) {
        int ls, rs;
        size_t end = generation_tag(in, i, &ls, &rs);
        if (!end) continue;
        size_t after = skip_spaces(in, end), stop = i, w;
        while (ls && stop > last && (w = space_before(in->s, last, stop))) stop -= w;
        for (size_t k = last; k < stop; k++) pre_put(out, in->s[k], in->m[k]);
        for (size_t k = end; !rs && k < after; k++) pre_put(out, in->s[k], in->m[k]);
        last = after;
        i = after - 1;
    }
    for (size_t k = last; k < in->n; k++) pre_put(out, in->s[k], in->m[k]);
    pre_end(out, in->m[in->n]);
}

static void preprocess(chat_err *e, const char *src, size_t len, pre *out)
{
    pre a, b;
    pre_init(e, &a, len);
    for (size_t i = 0; i < len; i++) pre_put(&a, src[i], (uint32_t)i);
    if (a.n && a.s[a.n - 1] == '\n') a.n--;
    pre_end(&a, (uint32_t)a.n);
    pre_init(e, &b, a.n);
    lstrip_blocks(&a, &b);
    pre_init(e, &a, b.n);
    trim_blocks(&b, &a);
    pre_init(e, out, a.n);
    drop_generation_tags(&a, out);
}

/* ---- tokens ---- */

typedef struct {
    chat_err *e;
    const char *s;
    size_t n, pos;
    chat_tok *v;
    size_t nv, cap;
    int curly;
} lexer;

static void emit(lexer *L, chat_tok_kind kind, size_t off, chat_str s)
{
    if (L->nv == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 64;
        chat_tok *v = chat_alloc(L->e, cap * sizeof *v);
        if (L->nv) memcpy(v, L->v, L->nv * sizeof *v);
        L->v = v;
        L->cap = cap;
    }
    L->v[L->nv++] = (chat_tok){kind, (uint32_t)off, s};
}

static chat_tok_kind last_kind(const lexer *L) { return L->nv ? L->v[L->nv - 1].kind : TK_EOF; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_word(char c) { return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

_Noreturn static void end_of_input(lexer *L) { chat_fail(L->e, (uint32_t)L->n, "unexpected end of input"); }

/* "{%-" / "{{-": the text token just before loses its trailing whitespace. */
static void strip_last_text(lexer *L)
{
    if (!L->nv || L->v[L->nv - 1].kind != TK_TEXT) return;
    chat_tok *t = &L->v[L->nv - 1];
    t->s = chat_trim(t->s, 0, 1);
    if (!t->s.n) L->nv--;
}

static void skip_ws(lexer *L)
{
    size_t w;
    while (L->pos < L->n && (w = space_at(L->s, L->n, L->pos))) L->pos += w;
}

/* Inside a tag: whitespace, which may not run to the end. */
static void skip_tag_ws(lexer *L)
{
    skip_ws(L);
    if (L->pos >= L->n) end_of_input(L);
}

static size_t digits(lexer *L, size_t i)
{
    while (i < L->n && is_digit(L->s[i])) i++;
    if (i >= L->n) end_of_input(L);
    return i;
}

static int hex_val(char c)
{
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void lex_string(lexer *L)
{
    size_t start = L->pos;
    char q = L->s[L->pos++];
    chat_sb b = {.e = L->e};
    for (;;) {
        if (L->pos >= L->n) end_of_input(L);
        char c = L->s[L->pos++];
        if (c == q) break;
        if (c != '\\') {
            chat_sb_put(&b, &c, 1);
            continue;
        }
        if (L->pos >= L->n) end_of_input(L);
        char x = L->s[L->pos++];
        if (x == 'x' || x == 'u') {
            int w = x == 'x' ? 2 : 4;
            uint32_t cp = 0;
            for (int k = 0; k < w; k++) {
                int h = L->pos + (size_t)k < L->n ? hex_val(L->s[L->pos + (size_t)k]) : -1;
                if (h < 0) chat_fail(L->e, (uint32_t)(L->pos - 2), "invalid hexadecimal escape sequence '\\%c'", x);
                cp = cp * 16 + (uint32_t)h;
            }
            L->pos += (size_t)w;
            chat_utf8_put(&b, cp);
            continue;
        }
        char c2;
        switch (x) {
        case 'n': c2 = '\n'; break;
        case 't': c2 = '\t'; break;
        case 'r': c2 = '\r'; break;
        case 'b': c2 = '\b'; break;
        case 'f': c2 = '\f'; break;
        case 'v': c2 = '\v'; break;
        case '\'': case '"': case '\\': c2 = x; break;
        default: chat_fail(L->e, (uint32_t)(L->pos - 2), "unexpected escaped character '%c'", x);
        }
        chat_sb_put(&b, &c2, 1);
    }
    emit(L, TK_STRING, start, chat_sb_str(&b));
}

/* digits, optionally ".digits"; sign already consumed into start. */
static void lex_number(lexer *L, size_t start, int allow_frac)
{
    size_t i = digits(L, L->pos);
    if (allow_frac && i + 1 < L->n && L->s[i] == '.' && is_digit(L->s[i + 1])) i = digits(L, i + 1);
    L->pos = i;
    emit(L, TK_NUMBER, start, (chat_str){L->s + start, i - start});
}

static const struct {
    const char *seq;
    chat_tok_kind kind;
} RULES[] = {
    {"{%", TK_STMT_OPEN}, {"%}", TK_STMT_CLOSE}, {"{{", TK_EXPR_OPEN}, {"}}", TK_EXPR_CLOSE},
    {"(", TK_LPAREN},     {")", TK_RPAREN},      {"{", TK_LBRACE},     {"}", TK_RBRACE},
    {"[", TK_LBRACKET},   {"]", TK_RBRACKET},    {",", TK_COMMA},      {".", TK_DOT},
    {":", TK_COLON},      {"|", TK_PIPE},        {"<=", TK_COMPARE},   {">=", TK_COMPARE},
    {"==", TK_COMPARE},   {"!=", TK_COMPARE},    {"<", TK_COMPARE},    {">", TK_COMPARE},
    {"+", TK_ADD},        {"-", TK_ADD},         {"~", TK_ADD},        {"**", TK_POW},
    {"*", TK_MUL},        {"//", TK_MUL},        {"/", TK_MUL},        {"%", TK_MUL},
    {"=", TK_EQUALS},
};

static int lex_rule(lexer *L)
{
    for (size_t k = 0; k < sizeof RULES / sizeof RULES[0]; k++) {
        size_t w = strlen(RULES[k].seq);
        if (RULES[k].kind == TK_EXPR_CLOSE && L->curly > 0) continue;
        if (L->n - L->pos < w || memcmp(L->s + L->pos, RULES[k].seq, w)) continue;
        emit(L, RULES[k].kind, L->pos, (chat_str){L->s + L->pos, w});
        if (RULES[k].kind == TK_EXPR_OPEN) L->curly = 0;
        else if (RULES[k].kind == TK_LBRACE) L->curly++;
        else if (RULES[k].kind == TK_RBRACE) L->curly--;
        L->pos += w;
        return 1;
    }
    return 0;
}

/* Text up to the next "{%", "{{" or "{#". */
static int lex_text(lexer *L)
{
    size_t end = L->pos;
    while (end < L->n && !(L->s[end] == '{' && end + 1 < L->n && strchr("%{#", L->s[end + 1]) && L->s[end + 1]))
        end++;
    if (end == L->pos) return 0;
    emit(L, TK_TEXT, L->pos, (chat_str){L->s + L->pos, end - L->pos});
    L->pos = end;
    return 1;
}

static void lex_comment(lexer *L)
{
    size_t open = L->pos;
    L->pos += 2;
    int strip_before = L->pos < L->n && L->s[L->pos] == '-';
    L->pos += (size_t)strip_before;
    const char *end = NULL;
    for (size_t i = L->pos; i + 1 < L->n; i++)
        if (L->s[i] == '#' && L->s[i + 1] == '}') {
            end = L->s + i;
            break;
        }
    if (!end) chat_fail(L->e, (uint32_t)open, "missing end of comment tag ('#}')");
    int strip_after = end > L->s + L->pos && end[-1] == '-';
    if (strip_before) strip_last_text(L);
    emit(L, TK_COMMENT, open, (chat_str){L->s + L->pos, (size_t)(end - L->s) - L->pos});
    L->pos = (size_t)(end - L->s) + 2;
    if (strip_after) skip_ws(L);
}

/* One token (or text) at L->pos. */
static void lex_one(lexer *L)
{
    chat_tok_kind last = last_kind(L);
    if ((last == TK_EOF || last == TK_STMT_CLOSE || last == TK_EXPR_CLOSE || last == TK_COMMENT) && lex_text(L)) return;
    const char *p = L->s + L->pos;
    size_t left = L->n - L->pos;
    if (p[0] == '{' && left > 1 && p[1] == '#') return lex_comment(L);
    if (p[0] == '{' && left > 2 && p[2] == '-' && (p[1] == '%' || p[1] == '{')) {
        strip_last_text(L);
        emit(L, p[1] == '%' ? TK_STMT_OPEN : TK_EXPR_OPEN, L->pos, (chat_str){p, 2});
        if (p[1] == '{') L->curly = 0;
        L->pos += 3;
        return;
    }
    skip_tag_ws(L);
    p = L->s + L->pos;
    left = L->n - L->pos;
    if (p[0] == '-' && left > 2 && p[2] == '}' && (p[1] == '%' || p[1] == '}')) {
        emit(L, p[1] == '%' ? TK_STMT_CLOSE : TK_EXPR_CLOSE, L->pos, (chat_str){p + 1, 2});
        L->pos += 3;
        skip_ws(L);
        return;
    }
    if (p[0] == '-' || p[0] == '+') {
        if (last == TK_TEXT || last == TK_EOF) chat_fail(L->e, (uint32_t)L->pos, "unexpected character '%c'", p[0]);
        if (last != TK_NAME && last != TK_NUMBER && last != TK_STRING && last != TK_RPAREN && last != TK_RBRACKET) {
            size_t start = L->pos++;
            if (L->pos < L->n && is_digit(L->s[L->pos])) return lex_number(L, start, 1);
            if (L->pos >= L->n) end_of_input(L);
            emit(L, TK_UNARY, start, (chat_str){L->s + start, 1});
            return;
        }
    }
    if (lex_rule(L)) return;
    if (p[0] == '\'' || p[0] == '"') return lex_string(L);
    if (is_digit(p[0])) return lex_number(L, L->pos, last != TK_DOT);
    if (is_word(p[0])) {
        size_t s = L->pos;
        while (L->pos < L->n && is_word(L->s[L->pos])) L->pos++;
        if (L->pos >= L->n) end_of_input(L);
        emit(L, TK_NAME, s, (chat_str){L->s + s, L->pos - s});
        return;
    }
    chat_fail(L->e, (uint32_t)L->pos, "unexpected character '%c'", p[0]);
}

chat_tok *chat_lex(chat_err *e, const char *src, size_t len, size_t *n_tok)
{
    pre p;
    preprocess(e, src, len, &p);
    e->map = p.m;
    e->map_n = p.n;
    lexer L = {.e = e, .s = p.s, .n = p.n};
    while (L.pos < L.n) lex_one(&L);
    emit(&L, TK_EOF, L.n, (chat_str){L.s + L.n, 0});
    *n_tok = L.nv;
    return L.v;
}
