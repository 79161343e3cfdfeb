/* grammar_parse.c - GBNF text -> the compiled grammar (grammar_internal.h).
 * A recursive-descent parser in the shape of llama.cpp's grammar syntax;
 * groups and repetitions become generated rules (X* is g ::= X g | "", so
 * a loop keeps a constant stack depth), then the rules are checked
 * (undefined names, left recursion, repetitions of what can match empty
 * text: all of which would make the machine loop) and flattened into one
 * element array (those two steps are grammar_build.c). Errors name the line
 * and column of the construct. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_parse.h"
#include "shardlm_common.h"

/* ---- small helpers ---- */

#define u32_push gr_u32_push

static void where(const gp *p, size_t at, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < at && i < p->len; i++) {
        unsigned char c = (unsigned char)p->src[i];
        if (c == '\n') ++*line, *col = 1;
        else if ((c & 0xC0) != 0x80) ++*col;
    }
}

int gp_fail(gp *p, size_t at, const char *fmt, ...)
{
    if (p->failed) return SHARDLM_EINPUT;
    p->failed = 1;
    int line, col;
    where(p, at, &line, &col);
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->why && p->cap) snprintf(p->why, p->cap, "line %d column %d: %s", line, col, msg);
    shardlm_err_set("line %d column %d: %s", line, col, msg);
    return SHARDLM_EINPUT;
}

int gp_oom(gp *p)
{
    if (!p->failed && p->why && p->cap) snprintf(p->why, p->cap, "out of memory compiling the grammar");
    p->failed = 1;
    return SHARDLM_ENOMEM;
}

static int peek(const gp *p)
{
    return p->pos < p->len ? (unsigned char)p->src[p->pos] : -1;
}

static int is_word(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Decodes one strict UTF-8 character at s (n bytes left); 0 when invalid. */
static int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    int len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!len || (size_t)len > n) return 0;
    uint32_t v = len == 1 ? c : c & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min[len] || v > GR_MAX_CP || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return len;
}

/* Skips blanks and comments; newlines too when nl. */
static void skip_space(gp *p, int nl)
{
    for (;;) {
        int c = peek(p);
        if (c == ' ' || c == '\t') p->pos++;
        else if (c == '#') {
            while (p->pos < p->len && p->src[p->pos] != '\n' && p->src[p->pos] != '\r') p->pos++;
        } else if (nl && (c == '\n' || c == '\r')) p->pos++;
        else return;
    }
}

/* ---- rules and their names ---- */

static uint64_t hash_bytes(const void *s, size_t n)
{
    const unsigned char *b = s;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static int new_rule(gp *p, int kind, size_t at, uint32_t *id)
{
    if (p->n_rules == p->cap_rules) {
        size_t cap = p->cap_rules ? p->cap_rules * 2 : 32;
        prule *r = realloc(p->rules, cap * sizeof *r);
        if (!r) return gp_oom(p);
        p->rules = r;
        p->cap_rules = cap;
    }
    p->rules[p->n_rules] = (prule){.kind = kind, .def_at = at, .ref_at = at};
    *id = (uint32_t)p->n_rules++;
    return SHARDLM_OK;
}

static int names_grow(gp *p)
{
    size_t cap = p->names_cap ? p->names_cap * 2 : 64;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t) return gp_oom(p);
    for (size_t i = 0; i < p->names_cap; i++) {
        if (!p->names[i]) continue;
        const char *nm = p->rules[p->names[i] - 1].name;
        size_t j = hash_bytes(nm, strlen(nm)) & (cap - 1);
        while (t[j]) j = (j + 1) & (cap - 1);
        t[j] = p->names[i];
    }
    free(p->names);
    p->names = t;
    p->names_cap = cap;
    return SHARDLM_OK;
}

/* The rule called name (n bytes), created undefined when new. */
static int rule_named(gp *p, const char *name, size_t n, size_t at, uint32_t *id)
{
    if ((p->n_named + 1) * 2 > p->names_cap && names_grow(p)) return SHARDLM_ENOMEM;
    size_t j = hash_bytes(name, n) & (p->names_cap - 1);
    for (; p->names[j]; j = (j + 1) & (p->names_cap - 1)) {
        const char *nm = p->rules[p->names[j] - 1].name;
        if (strlen(nm) == n && !memcmp(nm, name, n)) {
            *id = p->names[j] - 1;
            return SHARDLM_OK;
        }
    }
    char *copy = strndup(name, n);
    if (!copy || new_rule(p, RK_USER, at, id)) {
        free(copy);
        return gp_oom(p);
    }
    p->rules[*id].name = copy;
    p->names[j] = *id + 1;
    p->n_named++;
    return SHARDLM_OK;
}

/* ---- character classes ---- */

static int range_cmp(const void *a, const void *b)
{
    const gr_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int cls_tab_grow(gp *p)
{
    size_t cap = p->cls_tab_cap ? p->cls_tab_cap * 2 : 256;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t) return gp_oom(p);
    for (size_t i = 0; i < p->cls_tab_cap; i++) {
        if (!p->cls_tab[i]) continue;
        const gr_class *c = &p->cls[p->cls_tab[i] - 1];
        size_t j = hash_bytes(p->ranges + c->first, c->n * sizeof(gr_range)) & (cap - 1);
        while (t[j]) j = (j + 1) & (cap - 1);
        t[j] = p->cls_tab[i];
    }
    free(p->cls_tab);
    p->cls_tab = t;
    p->cls_tab_cap = cap;
    return SHARDLM_OK;
}

/* Interns the class made of r[0..n) (sorted, disjoint, merged). */
static int class_intern(gp *p, const gr_range *r, size_t n, uint32_t *id)
{
    if ((p->n_cls + 1) * 2 > p->cls_tab_cap && cls_tab_grow(p)) return SHARDLM_ENOMEM;
    size_t j = hash_bytes(r, n * sizeof *r) & (p->cls_tab_cap - 1);
    for (; p->cls_tab[j]; j = (j + 1) & (p->cls_tab_cap - 1)) {
        const gr_class *c = &p->cls[p->cls_tab[j] - 1];
        if (c->n == n && !memcmp(p->ranges + c->first, r, n * sizeof *r)) {
            *id = p->cls_tab[j] - 1;
            return SHARDLM_OK;
        }
    }
    if (p->n_ranges + n > p->cap_ranges) {
        size_t cap = (p->cap_ranges + n) * 2;
        gr_range *v = realloc(p->ranges, cap * sizeof *v);
        if (!v) return gp_oom(p);
        p->ranges = v;
        p->cap_ranges = cap;
    }
    if (p->n_cls == p->cap_cls) {
        size_t cap = p->cap_cls ? p->cap_cls * 2 : 64;
        gr_class *v = realloc(p->cls, cap * sizeof *v);
        if (!v) return gp_oom(p);
        p->cls = v;
        p->cap_cls = cap;
    }
    gr_class c = {(uint32_t)p->n_ranges, (uint32_t)n, {0, 0}};
    memcpy(p->ranges + p->n_ranges, r, n * sizeof *r);
    p->n_ranges += n;
    for (size_t i = 0; i < n && r[i].lo < 128; i++)
        for (uint32_t cp = r[i].lo; cp <= r[i].hi && cp < 128; cp++) c.ascii[cp >> 6] |= 1ull << (cp & 63);
    p->cls[p->n_cls] = c;
    p->cls_tab[j] = (uint32_t)++p->n_cls;
    *id = (uint32_t)p->n_cls - 1;
    return SHARDLM_OK;
}

/* Sorts and merges r in place (n entries, room for n + 1), complementing
 * it over [0, U+10FFFF] when neg; returns the new count. */
static size_t class_normalize(gr_range *r, size_t n, int neg)
{
    qsort(r, n, sizeof *r, range_cmp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k && r[i].lo <= r[k - 1].hi + 1) {
            if (r[i].hi > r[k - 1].hi) r[k - 1].hi = r[i].hi;
        } else {
            r[k++] = r[i];
        }
    }
    if (!neg) return k;
    size_t m = 0;
    uint32_t next = 0;
    for (size_t i = 0; i < k; i++) {
        gr_range cur = r[i];
        if (cur.lo > next) r[m++] = (gr_range){next, cur.lo - 1};
        next = cur.hi + 1;
    }
    if (next <= GR_MAX_CP) r[m++] = (gr_range){next, GR_MAX_CP};
    return m;
}

/* Whether r holds a character UTF-8 can carry (not only surrogates). */
static int class_matchable(const gr_range *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (r[i].lo < 0xD800 || r[i].hi > 0xDFFF) return 1;
    return 0;
}

/* ---- lexical pieces ---- */

static int hex_digits(gp *p, int n, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        int c = peek(p), d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                             : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return gp_fail(p, p->pos, "expected %d hex digits in the escape", n);
        v = v << 4 | (uint32_t)d;
        p->pos++;
    }
    *out = v;
    return SHARDLM_OK;
}

/* One character of a literal or class: an escape or a UTF-8 character. */
static int parse_char(gp *p, uint32_t *cp)
{
    size_t at = p->pos;
    if (peek(p) == '\\') {
        p->pos++;
        int c = peek(p);
        int rc = SHARDLM_OK;
        p->pos++;
        switch (c) {
        case 'n': *cp = '\n'; break;
        case 'r': *cp = '\r'; break;
        case 't': *cp = '\t'; break;
        case 'f': *cp = '\f'; break;
        case '\\': case '"': case '\'': case '[': case ']': case '-': case '^': case '/': *cp = (uint32_t)c; break;
        case 'x': rc = hex_digits(p, 2, cp); break;
        case 'u': rc = hex_digits(p, 4, cp); break;
        case 'U': rc = hex_digits(p, 8, cp); break;
        default:
            if (c < 0) return gp_fail(p, at, "unfinished escape at the end of the grammar");
            return gp_fail(p, at, "unknown escape '\\%c'", c >= 0x20 && c < 0x7F ? c : '?');
        }
        if (rc) return rc;
        if (*cp > GR_MAX_CP) return gp_fail(p, at, "code point U+%X is beyond U+10FFFF", *cp);
        return SHARDLM_OK;
    }
    int n = utf8_decode((const unsigned char *)p->src + p->pos, p->len - p->pos, cp);
    if (!n) return gp_fail(p, at, "invalid UTF-8");
    p->pos += (size_t)n;
    return SHARDLM_OK;
}

static int push_elem(gp *p, gr_u32s *seq, uint32_t e)
{
    if (++p->n_elems > GP_MAX_ELEMS)
        return gp_fail(p, p->pos, "the grammar is too large (more than %u elements)", GP_MAX_ELEMS);
    return u32_push(seq, e) ? gp_oom(p) : SHARDLM_OK;
}

static int push_char(gp *p, gr_u32s *seq, uint32_t cp, size_t at)
{
    if (cp >= 0xD800 && cp <= 0xDFFF) return gp_fail(p, at, "U+%04X is a surrogate, which UTF-8 cannot carry", cp);
    gr_range r = {cp, cp};
    uint32_t id;
    if (class_intern(p, &r, 1, &id)) return SHARDLM_ENOMEM;
    return push_elem(p, seq, GE_MAKE(GE_CHAR, id));
}

static int parse_literal(gp *p, gr_u32s *seq)
{
    size_t start = p->pos++;
    for (;;) {
        int c = peek(p);
        if (c < 0 || c == '\n' || c == '\r') return gp_fail(p, start, "unterminated string literal");
        if (c == '"') break;
        size_t at = p->pos;
        uint32_t cp;
        if (parse_char(p, &cp) || push_char(p, seq, cp, at)) return SHARDLM_EINPUT;
    }
    p->pos++;
    return SHARDLM_OK;
}

static int parse_class(gp *p, gr_u32s *seq)
{
    size_t start = p->pos++;
    int neg = peek(p) == '^';
    if (neg) p->pos++;
    gr_range *r = NULL;
    size_t n = 0, cap = 0;
    int rc = SHARDLM_OK;
    while (!rc) {
        int c = peek(p);
        if (c < 0 || c == '\n' || c == '\r') {
            rc = gp_fail(p, start, "unterminated character class");
            break;
        }
        if (c == ']') break;
        uint32_t lo, hi;
        size_t at = p->pos;
        if ((rc = parse_char(p, &lo))) break;
        hi = lo;
        if (peek(p) == '-' && p->pos + 1 < p->len && p->src[p->pos + 1] != ']') {
            p->pos++;
            if ((rc = parse_char(p, &hi))) break;
            if (hi < lo) {
                rc = gp_fail(p, at, "the range is reversed (U+%04X after U+%04X)", hi, lo);
                break;
            }
        }
        if (n + 2 > cap) {
            cap = cap ? cap * 2 : 8;
            gr_range *v = realloc(r, cap * sizeof *v);
            if (!v) {
                rc = gp_oom(p);
                break;
            }
            r = v;
        }
        r[n++] = (gr_range){lo, hi};
    }
    if (!rc) {
        p->pos++; /* ']' */
        if (!n && !neg) rc = gp_fail(p, start, "empty character class");
    }
    uint32_t id;
    if (!rc && !r && !(r = malloc(sizeof *r))) rc = gp_oom(p);
    if (!rc) {
        n = class_normalize(r, n, neg);
        if (!class_matchable(r, n)) rc = gp_fail(p, start, "the character class matches no character");
    }
    if (!rc) rc = class_intern(p, r, n, &id);
    if (!rc) rc = push_elem(p, seq, GE_MAKE(GE_CHAR, id));
    free(r);
    return rc;
}

/* ---- repetition ---- */

static int parse_count(gp *p, uint32_t *v, int *have)
{
    *have = 0;
    uint64_t x = 0;
    while (peek(p) >= '0' && peek(p) <= '9') {
        x = x * 10 + (uint64_t)(peek(p) - '0');
        if (x > GP_MAX_REPEAT) return gp_fail(p, p->pos, "repetition bounds are at most %d", GP_MAX_REPEAT);
        p->pos++;
        *have = 1;
    }
    *v = (uint32_t)x;
    return SHARDLM_OK;
}

/* {m}, {m,}, {m,n}, {,n}; max UINT32_MAX means unbounded. */
static int parse_bounds(gp *p, uint32_t *min, uint32_t *max)
{
    size_t at = p->pos++;
    int have_m, have_n;
    skip_space(p, 0);
    if (parse_count(p, min, &have_m)) return SHARDLM_EINPUT;
    skip_space(p, 0);
    if (peek(p) == '}') {
        if (!have_m) return gp_fail(p, at, "expected a count in { }");
        p->pos++;
        *max = *min;
        return SHARDLM_OK;
    }
    if (peek(p) != ',') return gp_fail(p, p->pos, "expected ',' or '}' in the repetition bounds");
    p->pos++;
    skip_space(p, 0);
    if (parse_count(p, max, &have_n)) return SHARDLM_EINPUT;
    skip_space(p, 0);
    if (peek(p) != '}') return gp_fail(p, p->pos, "expected '}' after the repetition bounds");
    p->pos++;
    if (!have_m) *min = 0;
    if (!have_n) *max = UINT32_MAX;
    if (!have_m && !have_n) return gp_fail(p, at, "expected a count in { }");
    if (*max < *min) return gp_fail(p, at, "the repetition bounds are reversed ({%u,%u})", *min, *max);
    return SHARDLM_OK;
}

/* g ::= x g | "" */
static int star_rule(gp *p, uint32_t x, size_t at, uint32_t *g)
{
    if (new_rule(p, RK_STAR, at, g)) return SHARDLM_ENOMEM;
    gr_u32s *e = &p->rules[*g].elems;
    p->n_elems += 4;
    return u32_push(e, x) || u32_push(e, GE_MAKE(GE_RULE, *g)) || u32_push(e, GE_END) || u32_push(e, GE_END)
               ? gp_oom(p) : SHARDLM_OK;
}

/* o ::= x [next] | "" */
static int opt_rule(gp *p, uint32_t x, int64_t next, size_t at, uint32_t *o)
{
    if (new_rule(p, RK_OPT, at, o)) return SHARDLM_ENOMEM;
    gr_u32s *e = &p->rules[*o].elems;
    p->n_elems += 4;
    if (u32_push(e, x) || (next >= 0 && u32_push(e, GE_MAKE(GE_RULE, (uint32_t)next))) || u32_push(e, GE_END) ||
        u32_push(e, GE_END))
        return gp_oom(p);
    return p->n_elems > GP_MAX_ELEMS ? gp_fail(p, at, "the grammar is too large (more than %u elements)", GP_MAX_ELEMS)
                                     : SHARDLM_OK;
}

/* Replaces seq[last..] (the item just parsed) by its repetition. */
static int repeat_item(gp *p, gr_u32s *seq, size_t last, int op)
{
    size_t at = p->pos;
    uint32_t min = 0, max = UINT32_MAX;
    if (op == '{') {
        if (parse_bounds(p, &min, &max)) return SHARDLM_EINPUT;
    } else {
        p->pos++;
        min = op == '+';
        max = op == '?' ? 1 : UINT32_MAX;
    }
    uint32_t x = seq->v[last];
    if (seq->n - last > 1) { /* a multi-element item becomes one rule */
        uint32_t r;
        if (new_rule(p, RK_GROUP, at, &r)) return SHARDLM_ENOMEM;
        gr_u32s *e = &p->rules[r].elems;
        for (size_t i = last; i < seq->n; i++)
            if (u32_push(e, seq->v[i])) return gp_oom(p);
        if (u32_push(e, GE_END)) return gp_oom(p);
        x = GE_MAKE(GE_RULE, r);
    }
    seq->n = last;
    for (uint32_t i = 0; i < min; i++)
        if (push_elem(p, seq, x)) return SHARDLM_EINPUT;
    if (max == UINT32_MAX) {
        uint32_t g;
        return star_rule(p, x, at, &g) || push_elem(p, seq, GE_MAKE(GE_RULE, g)) ? SHARDLM_EINPUT : SHARDLM_OK;
    }
    int64_t next = -1;
    for (uint32_t k = min; k < max; k++) {
        uint32_t o;
        if (opt_rule(p, x, next, at, &o)) return SHARDLM_EINPUT;
        next = o;
    }
    return next >= 0 ? push_elem(p, seq, GE_MAKE(GE_RULE, (uint32_t)next)) : SHARDLM_OK;
}

/* ---- alternatives and sequences ---- */

static int parse_alternates(gp *p, uint32_t rule, int nested);

static int parse_group(gp *p, gr_u32s *seq)
{
    size_t at = p->pos++;
    if (++p->depth > GP_MAX_NEST) return gp_fail(p, at, "groups are nested more than %d deep", GP_MAX_NEST);
    uint32_t r;
    if (new_rule(p, RK_GROUP, at, &r)) return SHARDLM_ENOMEM;
    skip_space(p, 1);
    if (parse_alternates(p, r, 1)) return SHARDLM_EINPUT;
    skip_space(p, 1);
    if (peek(p) != ')') return gp_fail(p, at, "'(' is not closed");
    p->pos++;
    p->depth--;
    return push_elem(p, seq, GE_MAKE(GE_RULE, r));
}

static int parse_ref(gp *p, gr_u32s *seq)
{
    size_t at = p->pos;
    while (is_word(peek(p))) p->pos++;
    uint32_t r;
    if (rule_named(p, p->src + at, p->pos - at, at, &r)) return SHARDLM_ENOMEM;
    if (!p->rules[r].defined && p->rules[r].ref_at > at) p->rules[r].ref_at = at;
    return push_elem(p, seq, GE_MAKE(GE_RULE, r));
}

static int parse_sequence(gp *p, gr_u32s *seq, int nested)
{
    size_t last = SIZE_MAX;
    for (;;) {
        skip_space(p, nested);
        int c = peek(p), rc;
        size_t before = seq->n;
        if (c == '"') rc = parse_literal(p, seq);
        else if (c == '[') rc = parse_class(p, seq);
        else if (c == '.') {
            gr_range any = {0, GR_MAX_CP};
            uint32_t id;
            p->pos++;
            rc = class_intern(p, &any, 1, &id);
            if (!rc) rc = push_elem(p, seq, GE_MAKE(GE_CHAR, id));
        } else if (c == '(') rc = parse_group(p, seq);
        else if (is_word(c)) rc = parse_ref(p, seq);
        else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last == SIZE_MAX) return gp_fail(p, p->pos, "'%c' has nothing to repeat", c);
            rc = repeat_item(p, seq, last, c);
            before = last;
        } else if (c < 0 || c == '|' || c == ')' || c == '\n' || c == '\r') return SHARDLM_OK;
        else if (c == ':' && p->pos + 2 < p->len && !memcmp(p->src + p->pos, "::=", 3))
            return gp_fail(p, p->pos, "'::=' inside a rule (a rule ends at a newline)");
        else return gp_fail(p, p->pos, "unexpected '%c'", c >= 0x20 && c < 0x7F ? c : '?');
        if (rc) return rc;
        last = seq->n > before ? before : SIZE_MAX;
    }
}

static int parse_alternates(gp *p, uint32_t rule, int nested)
{
    gr_u32s seq = {0};
    int rc;
    for (;;) {
        seq.n = 0;
        if ((rc = parse_sequence(p, &seq, nested))) break;
        gr_u32s *e = &p->rules[rule].elems;
        for (size_t i = 0; i < seq.n && !rc; i++) rc = u32_push(e, seq.v[i]) ? gp_oom(p) : SHARDLM_OK;
        if (!rc && u32_push(e, GE_END)) rc = gp_oom(p);
        if (rc || peek(p) != '|') break;
        p->pos++;
        skip_space(p, 1);
    }
    free(seq.v);
    return rc;
}

static int parse_rule(gp *p)
{
    size_t at = p->pos;
    if (peek(p) == '|')
        return gp_fail(p, at, "a rule ends at a newline: end the line before with '|', or use ( ) around the alternatives");
    if (!is_word(peek(p))) return gp_fail(p, at, "expected a rule name, found '%c'", peek(p) >= 0x20 && peek(p) < 0x7F ? peek(p) : '?');
    while (is_word(peek(p))) p->pos++;
    size_t n = p->pos - at;
    skip_space(p, 0);
    if (p->pos + 3 > p->len || memcmp(p->src + p->pos, "::=", 3))
        return gp_fail(p, p->pos, "expected '::=' after the rule name '%.*s'", (int)(n > 64 ? 64 : n), p->src + at);
    p->pos += 3;
    uint32_t r;
    if (rule_named(p, p->src + at, n, at, &r)) return SHARDLM_ENOMEM;
    if (p->rules[r].defined) {
        int line, col;
        where(p, p->rules[r].def_at, &line, &col);
        return gp_fail(p, at, "rule '%.*s' is defined twice (first on line %d)", (int)(n > 64 ? 64 : n), p->src + at,
                    line);
    }
    p->rules[r].defined = 1;
    p->rules[r].def_at = at;
    skip_space(p, 1);
    if (parse_alternates(p, r, 0)) return SHARDLM_EINPUT;
    skip_space(p, 0);
    int c = peek(p);
    if (c >= 0 && c != '\n' && c != '\r') return gp_fail(p, p->pos, "unexpected '%c'", c >= 0x20 && c < 0x7F ? c : '?');
    return SHARDLM_OK;
}

static void gp_free(gp *p)
{
    for (size_t r = 0; r < p->n_rules; r++) {
        free(p->rules[r].name);
        free(p->rules[r].elems.v);
    }
    free(p->rules);
    free(p->names);
    free(p->ranges);
    free(p->cls);
    free(p->cls_tab);
}

void gr_free_compiled(shardlm_grammar *g)
{
    free(g->el);
    free(g->alt);
    free(g->rule_alt);
    free(g->cls);
    free(g->ranges);
}

static int gp_run(gp *p, shardlm_grammar *g)
{
    skip_space(p, 1);
    while (p->pos < p->len) {
        if (parse_rule(p)) return SHARDLM_EINPUT;
        skip_space(p, 1);
    }
    uint32_t root = UINT32_MAX;
    for (size_t r = 0; r < p->n_rules; r++)
        if (p->rules[r].name && !strcmp(p->rules[r].name, "root") && p->rules[r].defined) root = (uint32_t)r;
    if (root == UINT32_MAX && !p->failed) {
        int undefined_root = 0;
        for (size_t r = 0; r < p->n_rules; r++) undefined_root |= p->rules[r].name && !strcmp(p->rules[r].name, "root");
        if (!undefined_root) return gp_fail(p, 0, "the grammar has no rule named 'root'");
    }
    if (gp_check_rules(p)) return SHARDLM_EINPUT;
    g->root = root;
    return gp_flatten(p, g);
}

int shardlm_grammar_compile(const char *text, size_t len, shardlm_grammar **out, char *why, size_t cap)
{
    *out = NULL;
    if (why && cap) why[0] = 0;
    gp p = {.src = text ? text : "", .len = text ? len : 0, .why = why, .cap = cap};
    shardlm_grammar *g = calloc(1, sizeof *g);
    if (!g) return gp_oom(&p);
    int rc = gp_run(&p, g);
    if (rc) rc = rc == SHARDLM_ENOMEM || !p.failed ? rc : SHARDLM_EINPUT;
    gp_free(&p);
    if (!rc && (rc = gr_machine_init(g)) && why && cap)
        snprintf(why, cap, "%s", rc == SHARDLM_ENOMEM ? "out of memory compiling the grammar"
                                                      : "line 1 column 1: the root rule is too ambiguous to start");
    if (rc) {
        gr_machine_free(&g->m);
        gr_free_compiled(g);
        free(g->start);
        free(g);
        return rc;
    }
    atomic_init(&g->refs, 1);
    *out = g;
    return SHARDLM_OK;
}
