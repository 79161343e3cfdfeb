/* json_regex.c - JSON Schema "pattern" (ECMA-262 regular expressions, as
 * with the u flag) -> a GBNF sequence for the content of a JSON string
 * that holds a match. A pattern matches anywhere unless anchored, so an
 * unanchored side gets any characters around it; each character set is
 * written in its JSON-encoded forms (raw, or \" \\ \n ... \u00XX for the
 * ones JSON must escape). Supported: literals, '.', classes with ranges and
 * negation, \d \D \w \W \s \S and the character escapes, groups (plain,
 * (?:...) and named), alternation, * + ? {m} {m,} {m,n} (lazy or not), and
 * ^ / $ at the very start / end. Refused, by name: lookarounds, back
 * references, \b \B, \p{...}, anchors elsewhere, and repeating what can
 * match empty text without a bound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_schema_internal.h"
#include "shardlm_common.h"

#define MAXCP 0x10FFFFu

typedef struct {
    uint32_t lo, hi;
} rx_range;

typedef struct {
    rx_range *r;
    size_t n, cap;
} rx_set;

typedef struct {
    js_ctx *j;
    const char *path;
    const unsigned char *p, *end;
    char any[JS_NAME_MAX]; /* the any-JSON-character rule */
    int depth;
} rx;

static int rx_fail(rx *x, const char *what)
{
    return js_fail(x->j, "\"pattern\" at %s: %s is not supported", x->path, what);
}

static int set_add(rx_set *s, uint32_t lo, uint32_t hi)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        rx_range *r = realloc(s->r, cap * sizeof *r);
        if (!r) return SHARDLM_ENOMEM;
        s->r = r;
        s->cap = cap;
    }
    s->r[s->n++] = (rx_range){lo, hi};
    return 0;
}

static int range_cmp(const void *a, const void *b)
{
    const rx_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void set_normalize(rx_set *s)
{
    qsort(s->r, s->n, sizeof *s->r, range_cmp);
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (k && s->r[i].lo <= s->r[k - 1].hi + 1) {
            if (s->r[i].hi > s->r[k - 1].hi) s->r[k - 1].hi = s->r[i].hi;
        } else {
            s->r[k++] = s->r[i];
        }
    }
    s->n = k;
}

static int set_complement(rx_set *s)
{
    set_normalize(s);
    rx_set c = {0};
    uint32_t next = 0;
    int rc = 0;
    for (size_t i = 0; i < s->n && !rc; i++) {
        if (s->r[i].lo > next) rc = set_add(&c, next, s->r[i].lo - 1);
        next = s->r[i].hi + 1;
    }
    if (!rc && next <= MAXCP) rc = set_add(&c, next, MAXCP);
    free(s->r);
    *s = c;
    return rc;
}

/* ---- writing a set in its JSON-encoded forms ---- */

static void put_cp(js_sb *e, uint32_t c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) js_sb_fmt(e, "%c", (char)c);
    else if (c <= 0xFF) js_sb_fmt(e, "\\x%02X", c);
    else if (c <= 0xFFFF) js_sb_fmt(e, "\\u%04X", c);
    else js_sb_fmt(e, "\\U%08X", c);
}

static int has(const rx_set *s, uint32_t c)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->r[i].lo <= c && c <= s->r[i].hi) return 1;
    return 0;
}

static int set_expr(rx *x, rx_set *s, js_sb *e)
{
    set_normalize(s);
    int alts = 0, any_raw = 0;
    js_sb raw = {0};
    js_sb_add(&raw, "[");
    for (size_t i = 0; i < s->n; i++) { /* raw characters: all but '"', '\' and controls */
        uint32_t lo = s->r[i].lo < 0x20 ? 0x20 : s->r[i].lo, hi = s->r[i].hi;
        for (uint32_t cut = 0; lo <= hi && cut < 3; cut++) {
            uint32_t stop = hi;
            if (lo <= '"' && '"' <= hi) stop = '"' - 1;
            else if (lo <= '\\' && '\\' <= hi) stop = '\\' - 1;
            if (lo <= stop) {
                put_cp(&raw, lo);
                if (stop > lo) js_sb_add(&raw, "-"), put_cp(&raw, stop);
                any_raw = 1;
            }
            if (stop == hi) break;
            lo = stop + 2;
        }
    }
    js_sb_add(&raw, "]");
    js_sb_add(e, "( ");
    if (any_raw) js_sb_addn(e, raw.s, raw.n), alts++;
    free(raw.s);
    static const char *const named[0x20] = {['\b'] = "b", ['\f'] = "f", ['\n'] = "n", ['\r'] = "r", ['\t'] = "t"};
    for (uint32_t c = 0; c < 0x20; c++) {
        if (!has(s, c)) continue;
        if (named[c]) js_sb_fmt(e, "%s\"\\\\%s\"", alts++ ? " | " : "", named[c]);
        else js_sb_fmt(e, "%s\"\\\\u00%02x\"", alts++ ? " | " : "", c);
    }
    if (has(s, '"')) js_sb_fmt(e, "%s\"\\\\\\\"\"", alts++ ? " | " : "");
    if (has(s, '\\')) js_sb_fmt(e, "%s\"\\\\\\\\\"", alts++ ? " | " : "");
    js_sb_add(e, " )");
    if (!alts) return js_fail(x->j, "\"pattern\" at %s has a character class that matches nothing", x->path);
    return 0;
}

/* ---- escapes and classes ---- */

static int add_class_escape(rx_set *s, int c)
{
    int rc = 0;
    switch (c) {
    case 'd': return set_add(s, '0', '9');
    case 'w':
        rc = set_add(s, '0', '9');
        if (!rc) rc = set_add(s, 'A', 'Z');
        if (!rc) rc = set_add(s, 'a', 'z');
        return rc ? rc : set_add(s, '_', '_');
    case 's': {
        static const uint32_t ws[][2] = {{9, 13}, {32, 32}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
                                         {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
                                         {0xFEFF, 0xFEFF}};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0] && !rc; i++) rc = set_add(s, ws[i][0], ws[i][1]);
        return rc;
    }
    }
    return -1;
}

static int hexn(rx *x, int n, uint32_t *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, x->p++) {
        int c = x->p < x->end ? *x->p : -1;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return rx_fail(x, "a malformed \\x or \\u escape");
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

/* After '\': one character (*cp) or a class escape (into s, *cp = -1). */
static int parse_escape(rx *x, rx_set *s, int64_t *cp, int in_class)
{
    if (x->p >= x->end) return rx_fail(x, "a '\\' at the end");
    int c = *x->p++;
    uint32_t v;
    if (strchr("dws", c) || strchr("DWS", c)) {
        rx_set t = {0};
        int lower = c >= 'a';
        if (add_class_escape(&t, lower ? c : c + 32) || (!lower && set_complement(&t))) return SHARDLM_ENOMEM;
        for (size_t i = 0; i < t.n; i++)
            if (set_add(s, t.r[i].lo, t.r[i].hi)) return SHARDLM_ENOMEM;
        free(t.r);
        *cp = -1;
        return 0;
    }
    switch (c) {
    case 'n': *cp = '\n'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'v': *cp = '\v'; return 0;
    case '0': *cp = 0; return 0;
    case 'x': if (hexn(x, 2, &v)) return SHARDLM_EINPUT; *cp = v; return 0;
    case 'u':
        if (x->p < x->end && *x->p == '{') {
            x->p++;
            v = 0;
            int n = 0;
            while (x->p < x->end && *x->p != '}' && n < 7) {
                uint32_t d;
                if (hexn(x, 1, &d)) return SHARDLM_EINPUT;
                v = v << 4 | d;
                n++;
            }
            if (x->p >= x->end || *x->p != '}' || !n || v > MAXCP) return rx_fail(x, "a malformed \\u{...} escape");
            x->p++;
        } else if (hexn(x, 4, &v)) {
            return SHARDLM_EINPUT;
        }
        *cp = v;
        return 0;
    case 'b':
        if (in_class) {
            *cp = '\b';
            return 0;
        }
        return rx_fail(x, "the word boundary \\b");
    case 'B': return rx_fail(x, "\\B");
    case 'p': case 'P': return rx_fail(x, "a Unicode property escape (\\p{...})");
    case 'c': return rx_fail(x, "a control escape (\\cX)");
    case 'k': return rx_fail(x, "a named back reference (\\k<...>)");
    }
    if (c >= '1' && c <= '9') return rx_fail(x, "a back reference");
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return rx_fail(x, "an unknown escape");
    *cp = c; /* an escaped punctuation character stands for itself */
    return 0;
}

/* One UTF-8 character of the pattern. */
static int next_cp(rx *x, uint32_t *cp)
{
    unsigned c = *x->p;
    int len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!len || x->p + len > x->end) return rx_fail(x, "invalid UTF-8");
    uint32_t v = len == 1 ? c : c & (0x7Fu >> len);
    for (int i = 1; i < len; i++) v = v << 6 | (x->p[i] & 0x3F);
    x->p += len;
    *cp = v;
    return 0;
}

static int parse_class(rx *x, rx_set *s)
{
    x->p++; /* '[' */
    int neg = x->p < x->end && *x->p == '^';
    if (neg) x->p++;
    int first = 1;
    while (x->p < x->end && (*x->p != ']' || 0)) {
        int64_t lo;
        uint32_t u;
        if (*x->p == '\\') {
            x->p++;
            if (parse_escape(x, s, &lo, 1)) return SHARDLM_EINPUT;
        } else {
            if (next_cp(x, &u)) return SHARDLM_EINPUT;
            lo = u;
        }
        first = 0;
        if (lo < 0) continue;
        int64_t hi = lo;
        if (x->p + 1 < x->end && *x->p == '-' && x->p[1] != ']') {
            x->p++;
            if (*x->p == '\\') {
                x->p++;
                if (parse_escape(x, s, &hi, 1)) return SHARDLM_EINPUT;
                if (hi < 0) return rx_fail(x, "a class escape as a range end");
            } else {
                if (next_cp(x, &u)) return SHARDLM_EINPUT;
                hi = u;
            }
            if (hi < lo) return js_fail(x->j, "\"pattern\" at %s has a reversed range in a class", x->path);
        }
        if (set_add(s, (uint32_t)lo, (uint32_t)hi)) return SHARDLM_ENOMEM;
    }
    (void)first;
    if (x->p >= x->end) return js_fail(x->j, "\"pattern\" at %s has an unterminated '['", x->path);
    x->p++;
    if (neg && set_complement(s)) return SHARDLM_ENOMEM;
    return 0;
}

/* ---- the pattern ---- */

static int parse_disj(rx *x, js_sb *e, int *nullable, int *n_alts);

/* One atom into e; *nullable when it can match empty text. */
static int parse_atom(rx *x, js_sb *e, int *nullable)
{
    int c = *x->p;
    rx_set s = {0};
    int rc = 0;
    *nullable = 0;
    if (c == '(') {
        x->p++;
        if (x->p < x->end && *x->p == '?') {
            if (x->p + 1 < x->end && x->p[1] == ':') x->p += 2;
            else if (x->p + 2 < x->end && x->p[1] == '<' && x->p[2] != '=' && x->p[2] != '!') {
                while (x->p < x->end && *x->p != '>') x->p++;
                if (x->p < x->end) x->p++;
            } else return rx_fail(x, "a lookahead or lookbehind");
        }
        if (++x->depth > 100) return rx_fail(x, "groups nested over 100 deep");
        int alts;
        js_sb_add(e, "( ");
        if (parse_disj(x, e, nullable, &alts)) return SHARDLM_EINPUT;
        js_sb_add(e, " )");
        x->depth--;
        if (x->p >= x->end || *x->p != ')') return js_fail(x->j, "\"pattern\" at %s has an unclosed '('", x->path);
        x->p++;
        return 0;
    }
    if (c == '[') rc = parse_class(x, &s);
    else if (c == '.') {
        x->p++;
        rc = set_add(&s, '\n', '\n') || set_add(&s, '\r', '\r') || set_add(&s, 0x2028, 0x2029) || set_complement(&s);
    } else if (c == '\\') {
        int64_t cp;
        x->p++;
        rc = parse_escape(x, &s, &cp, 0);
        if (!rc && cp >= 0) rc = set_add(&s, (uint32_t)cp, (uint32_t)cp);
    } else if (c == '^' || c == '$') {
        return rx_fail(x, "'^' or '$' other than at the very start or end of the pattern");
    } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        return js_fail(x->j, "\"pattern\" at %s has '%c' with nothing to repeat", x->path, c);
    } else {
        uint32_t u;
        rc = next_cp(x, &u);
        if (!rc) rc = set_add(&s, u, u);
    }
    if (!rc) rc = set_expr(x, &s, e);
    free(s.r);
    return rc;
}

static int parse_quant(rx *x, long *min, long *max)
{
    int c = *x->p++;
    if (c == '*') *min = 0, *max = -1;
    else if (c == '+') *min = 1, *max = -1;
    else if (c == '?') *min = 0, *max = 1;
    else {
        char *end;
        *min = strtol((const char *)x->p, &end, 10);
        if ((const unsigned char *)end == x->p) return rx_fail(x, "a '{' that is not a {m,n} quantifier");
        x->p = (const unsigned char *)end;
        *max = *min;
        if (x->p < x->end && *x->p == ',') {
            x->p++;
            *max = -1;
            if (x->p < x->end && *x->p >= '0' && *x->p <= '9') {
                *max = strtol((const char *)x->p, &end, 10);
                x->p = (const unsigned char *)end;
            }
        }
        if (x->p >= x->end || *x->p != '}') return rx_fail(x, "a malformed {m,n} quantifier");
        x->p++;
        if (*min > JS_MAX_BOUND || *max > JS_MAX_BOUND) return rx_fail(x, "a repetition bound over 10000");
        if (*max >= 0 && *max < *min) return js_fail(x->j, "\"pattern\" at %s has a reversed {m,n}", x->path);
    }
    if (x->p < x->end && *x->p == '?') x->p++; /* lazy: the same strings */
    return 0;
}

static int parse_alt(rx *x, js_sb *e, int *nullable)
{
    *nullable = 1;
    int any = 0;
    while (x->p < x->end && *x->p != '|' && *x->p != ')') {
        if (*x->p == '$' && x->p + 1 == x->end) break; /* the end anchor, handled by the caller */
        js_sb atom = {0};
        int null_atom;
        if (parse_atom(x, &atom, &null_atom)) {
            free(atom.s);
            return SHARDLM_EINPUT;
        }
        long min = 1, max = 1;
        if (x->p < x->end && strchr("*+?{", *x->p) && parse_quant(x, &min, &max)) {
            free(atom.s);
            return SHARDLM_EINPUT;
        }
        if (null_atom && max < 0) {
            free(atom.s);
            return rx_fail(x, "an unbounded repetition of something that can match empty text");
        }
        js_sb_add(e, any++ ? " " : "");
        js_sb_addn(e, atom.s ? atom.s : "", atom.n);
        free(atom.s);
        if (min == 1 && max == 1) {
        } else if (max < 0) js_sb_fmt(e, "{%ld,}", min);
        else js_sb_fmt(e, "{%ld,%ld}", min, max);
        if (!(null_atom || min == 0)) *nullable = 0;
    }
    if (!any) js_sb_add(e, "\"\"");
    return 0;
}

static int parse_disj(rx *x, js_sb *e, int *nullable, int *n_alts)
{
    *n_alts = 0;
    *nullable = 0;
    for (;;) {
        int n;
        if ((*n_alts)++) js_sb_add(e, " | ");
        if (parse_alt(x, e, &n)) return SHARDLM_EINPUT;
        *nullable |= n;
        if (x->p >= x->end || *x->p != '|') return 0;
        x->p++;
    }
}

int js_regex_expr(js_ctx *j, const char *pattern, const char *path, js_sb *e)
{
    rx x = {j, path, (const unsigned char *)pattern, (const unsigned char *)pattern + strlen(pattern), "", 0};
    int start = x.p < x.end && *x.p == '^';
    if (start) x.p++;
    js_prim(j, JP_CHAR, x.any);
    js_sb body = {0};
    int nullable, alts;
    int rc = parse_disj(&x, &body, &nullable, &alts);
    int end = !rc && x.p < x.end && *x.p == '$' && x.p + 1 == x.end;
    if (end) x.p++;
    if (!rc && x.p < x.end)
        rc = *x.p == ')' ? js_fail(j, "\"pattern\" at %s has an unmatched ')'", path)
                         : rx_fail(&x, "'$' other than at the very end of the pattern");
    if (!rc && alts > 1 && (start || end))
        rc = rx_fail(&x, "'^' or '$' next to a top-level '|' (put the alternatives in a group)");
    if (!rc) js_sb_fmt(e, "%s%s( %s )%s%s", start ? "" : x.any, start ? "" : "* ", body.s ? body.s : "\"\"",
                       end ? "" : " ", end ? "" : x.any), js_sb_add(e, end ? "" : "*");
    free(body.s);
    return rc ? rc : body.oom ? SHARDLM_ENOMEM : 0;
}
