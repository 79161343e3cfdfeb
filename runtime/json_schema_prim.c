/* json_schema_prim.c - the leaves of JSON Schema -> GBNF: the string
 * builder, rule names, the shared primitive rules (bounded whitespace,
 * strings, numbers, any value), strings with lengths and formats, and
 * integer and number ranges written as digit patterns (e.g. [0, 255] is
 * [0-9] | [1-9] [0-9] | "1" [0-9] [0-9] | "2" ( [0-4] [0-9] | "5" [0-5] )).
 * Numbers are bounded in length, as llama.cpp's are: an integer part of
 * at most 16 digits, 16 fraction digits, a 2-digit exponent. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_schema_internal.h"
#include "shardlm_common.h"

#define INT_DIGITS 16 /* the longest integer part generated */
#define BOUND_MAX 1e15

/* ---- the string builder ---- */

void js_sb_addn(js_sb *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *v = realloc(b->s, cap);
        if (!v) {
            b->oom = 1;
            return;
        }
        b->s = v;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

void js_sb_add(js_sb *b, const char *s)
{
    js_sb_addn(b, s, strlen(s));
}

void js_sb_fmt(js_sb *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        js_sb_addn(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    js_sb_addn(b, big, (size_t)n);
    free(big);
}

void js_sb_lit(js_sb *b, const char *s, size_t n)
{
    js_sb_add(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') js_sb_add(b, "\\\"");
        else if (c == '\\') js_sb_add(b, "\\\\");
        else if (c == '\n') js_sb_add(b, "\\n");
        else if (c == '\r') js_sb_add(b, "\\r");
        else if (c == '\t') js_sb_add(b, "\\t");
        else if (c < 0x20 || c == 0x7F) js_sb_fmt(b, "\\x%02X", c);
        else js_sb_addn(b, (const char *)&s[i], 1);
    }
    js_sb_add(b, "\"");
}

/* ---- context helpers ---- */

int js_fail(js_ctx *j, const char *fmt, ...)
{
    if (j->failed) return SHARDLM_EINPUT;
    j->failed = 1;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (j->why && j->cap) snprintf(j->why, j->cap, "%s", msg);
    shardlm_err_set("%s", msg);
    return SHARDLM_EINPUT;
}

void js_new_name(js_ctx *j, const char *hint, char *out)
{
    snprintf(out, JS_NAME_MAX, "%s-%s%u", j->name, hint, ++j->next_id);
}

static const char *const prim_names[] = {"ws", "char", "string", "integer", "number", "boolean", "null",
                                         "value", "object", "array", "hex", "date", "time", "frac"};

const char *js_prim(js_ctx *j, unsigned which, char *buf)
{
    j->used |= which;
    int k = __builtin_ctz(which);
    snprintf(buf, JS_NAME_MAX, "%s-%s", j->name, prim_names[k]);
    return buf;
}

/* The primitives each one refers to. */
static unsigned prim_deps(unsigned p)
{
    switch (p) {
    case JP_STRING: return JP_CHAR;
    case JP_CHAR: return JP_HEX;
    case JP_NUMBER: return JP_INTEGER | JP_FRAC;
    case JP_VALUE: return JP_OBJECT | JP_ARRAY | JP_STRING | JP_NUMBER | JP_BOOLEAN | JP_NULL;
    case JP_OBJECT: return JP_WS | JP_STRING | JP_VALUE;
    case JP_ARRAY: return JP_WS | JP_VALUE;
    default: return 0;
    }
}

void js_emit_prims(js_ctx *j)
{
    for (unsigned changed = 1; changed;) {
        changed = 0;
        for (unsigned k = 0; k < 14; k++)
            if ((j->used & (1u << k)) && (prim_deps(1u << k) & ~j->used)) j->used |= prim_deps(1u << k), changed = 1;
    }
    const char *p = j->name;
    js_sb *o = &j->out;
    unsigned u = j->used;
    /* at most one space, or a newline and 20 blanks: a model that loves spaces cannot loop */
    if (u & JP_WS) js_sb_fmt(o, "%s-ws ::= ( \" \" | \"\\n\" [ \\t]{0,20} )?\n", p);
    if (u & JP_HEX) js_sb_fmt(o, "%s-hex ::= [0-9a-fA-F]\n", p);
    /* \u escapes of surrogates are left out: a lone one would not be a character */
    if (u & JP_CHAR)
        js_sb_fmt(o, "%s-char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" ( [0-9a-cA-Ce-fE-F] "
                     "%s-hex{3} | [dD] [0-7] %s-hex{2} ) )\n", p, p, p);
    if (u & JP_STRING) js_sb_fmt(o, "%s-string ::= \"\\\"\" %s-char* \"\\\"\"\n", p, p);
    if (u & JP_INTEGER) js_sb_fmt(o, "%s-integer ::= \"-\"? ( \"0\" | [1-9] [0-9]{0,%d} )\n", p, INT_DIGITS - 1);
    if (u & JP_FRAC) js_sb_fmt(o, "%s-frac ::= \".\" [0-9]{1,16}\n", p);
    if (u & JP_NUMBER) js_sb_fmt(o, "%s-number ::= %s-integer %s-frac? ( [eE] [-+]? [0-9]{1,2} )?\n", p, p, p);
    if (u & JP_BOOLEAN) js_sb_fmt(o, "%s-boolean ::= \"true\" | \"false\"\n", p);
    if (u & JP_NULL) js_sb_fmt(o, "%s-null ::= \"null\"\n", p);
    if (u & JP_VALUE)
        js_sb_fmt(o, "%s-value ::= %s-object | %s-array | %s-string | %s-number | %s-boolean | %s-null\n", p, p, p, p,
                  p, p, p);
    if (u & JP_OBJECT)
        js_sb_fmt(o, "%s-object ::= \"{\" %s-ws ( %s-string %s-ws \":\" %s-ws %s-value %s-ws ( \",\" %s-ws %s-string "
                     "%s-ws \":\" %s-ws %s-value %s-ws )* )? \"}\"\n", p, p, p, p, p, p, p, p, p, p, p, p, p);
    if (u & JP_ARRAY)
        js_sb_fmt(o, "%s-array ::= \"[\" %s-ws ( %s-value %s-ws ( \",\" %s-ws %s-value %s-ws )* )? \"]\"\n", p, p, p,
                  p, p, p, p);
    if (u & JP_DATE) {
        js_sb_fmt(o, "%s-date ::= [0-9]{4} \"-\" ( ( \"0\" [13578] | \"1\" [02] ) \"-\" ( \"0\" [1-9] | [12] [0-9] | "
                     "\"3\" [01] ) | ( \"0\" [469] | \"11\" ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"30\" ) | \"02-\" ( "
                     "\"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8] ) ) | ( [0-9] [0-9] ( \"0\" [48] | [2468] [048] | "
                     "[13579] [26] ) | ( [02468] [048] | [13579] [26] ) \"00\" ) \"-02-29\"\n", p);
    }
    if (u & JP_TIME)
        js_sb_fmt(o, "%s-time ::= ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,9} "
                     ")? ( \"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )\n", p);
}

/* ---- strings ---- */

/* A length keyword: absent (*v untouched), or an integer in [0, JS_MAX_BOUND]. */
static int get_bound(js_ctx *j, const cJSON *s, const char *key, const char *path, long *v)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!x) return 0;
    if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble != floor(x->valuedouble))
        return js_fail(j, "\"%s\" at %s must be a non-negative integer", key, path);
    if (x->valuedouble > JS_MAX_BOUND)
        return js_fail(j, "\"%s\" at %s is %.0f; at most %d is supported", key, path, x->valuedouble, JS_MAX_BOUND);
    *v = (long)x->valuedouble;
    return 0;
}

static int string_format(js_ctx *j, const char *fmt, const char *path, js_sb *e)
{
    char a[JS_NAME_MAX], b[JS_NAME_MAX];
    if (!strcmp(fmt, "date")) js_sb_fmt(e, "\"\\\"\" %s \"\\\"\"", js_prim(j, JP_DATE, a));
    else if (!strcmp(fmt, "time")) js_sb_fmt(e, "\"\\\"\" %s \"\\\"\"", js_prim(j, JP_TIME, a));
    else if (!strcmp(fmt, "date-time"))
        js_sb_fmt(e, "\"\\\"\" %s \"T\" %s \"\\\"\"", js_prim(j, JP_DATE, a), js_prim(j, JP_TIME, b));
    else if (!strcmp(fmt, "uuid"))
        js_sb_add(e, "\"\\\"\" [0-9a-f]{8} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{4} \"-\" [0-9a-f]{12} "
                     "\"\\\"\"");
    else if (!strcmp(fmt, "ipv4"))
        js_sb_add(e, "\"\\\"\" ( ( \"25\" [0-5] | \"2\" [0-4] [0-9] | \"1\" [0-9] [0-9] | [1-9] [0-9] | [0-9] ) "
                     "\".\" ){3} ( \"25\" [0-5] | \"2\" [0-4] [0-9] | \"1\" [0-9] [0-9] | [1-9] [0-9] | [0-9] ) "
                     "\"\\\"\"");
    else if (!strcmp(fmt, "email"))
        js_sb_add(e, "\"\\\"\" [a-zA-Z0-9_+-]{1,32} ( \".\" [a-zA-Z0-9_+-]{1,32} ){0,4} \"@\" ( [a-z0-9] ( "
                     "[a-z0-9-]{0,30} [a-z0-9] )? \".\" ){1,4} [a-z] [a-z0-9]{1,15} \"\\\"\"");
    else
        return js_fail(j, "\"format\": \"%.64s\" at %s is not supported (date, time, date-time, uuid, ipv4 and "
                          "email are)", fmt, path);
    return 0;
}

int js_string_expr(js_ctx *j, const cJSON *s, const char *path, js_sb *e)
{
    long min = 0, max = -1;
    if (get_bound(j, s, "minLength", path, &min) || get_bound(j, s, "maxLength", path, &max)) return SHARDLM_EINPUT;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(s, "format");
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
    int lens = cJSON_HasObjectItem(s, "minLength") || cJSON_HasObjectItem(s, "maxLength");
    if (fmt && !cJSON_IsString(fmt)) return js_fail(j, "\"format\" at %s must be a string", path);
    if (pat && !cJSON_IsString(pat)) return js_fail(j, "\"pattern\" at %s must be a string", path);
    if ((fmt && (pat || lens)) || (pat && lens))
        return js_fail(j, "\"%s\" together with \"%s\" at %s is not supported", fmt ? "format" : "pattern",
                       fmt && pat ? "pattern" : cJSON_HasObjectItem(s, "minLength") ? "minLength" : "maxLength", path);
    if (fmt) return string_format(j, fmt->valuestring, path, e);
    if (pat) {
        js_sb_add(e, "\"\\\"\" ");
        if (js_regex_expr(j, pat->valuestring, path, e)) return SHARDLM_EINPUT;
        js_sb_add(e, " \"\\\"\"");
        return 0;
    }
    if (max >= 0 && min > max) return js_fail(j, "\"minLength\" at %s is greater than \"maxLength\"", path);
    char c[JS_NAME_MAX];
    if (!lens) {
        js_sb_add(e, js_prim(j, JP_STRING, c));
        return 0;
    }
    js_prim(j, JP_CHAR, c);
    if (max < 0) js_sb_fmt(e, "\"\\\"\" %s{%ld,} \"\\\"\"", c, min);
    else js_sb_fmt(e, "\"\\\"\" %s{%ld,%ld} \"\\\"\"", c, min, max);
    return 0;
}

/* ---- integer ranges as digit patterns ---- */

static int n_digits(uint64_t x)
{
    int n = 1;
    while (x >= 10) x /= 10, n++;
    return n;
}

static uint64_t pow10u(int k)
{
    uint64_t p = 1;
    while (k-- > 0) p *= 10;
    return p;
}

static int all_of(const char *s, int n, char c)
{
    for (int i = 0; i < n; i++)
        if (s[i] != c) return 0;
    return 1;
}

/* The L-digit strings from a to b (a <= b, both L digits). */
static void same_len(js_sb *e, const char *a, const char *b, int L)
{
    if (L == 0) return;
    if (!memcmp(a, b, (size_t)L)) {
        js_sb_lit(e, a, (size_t)L);
        return;
    }
    if (a[0] == b[0]) {
        js_sb_lit(e, a, 1);
        js_sb_add(e, " ( ");
        same_len(e, a + 1, b + 1, L - 1);
        js_sb_add(e, " )");
        return;
    }
    char nines[24], zeros[24];
    memset(nines, '9', sizeof nines);
    memset(zeros, '0', sizeof zeros);
    int lo = a[0], hi = b[0], first = 1;
    js_sb_add(e, "( ");
    if (!all_of(a + 1, L - 1, '0')) {
        js_sb_lit(e, a, 1);
        js_sb_add(e, " ( ");
        same_len(e, a + 1, nines, L - 1);
        js_sb_add(e, " )");
        lo++;
        first = 0;
    }
    int last = !all_of(b + 1, L - 1, '9');
    if (last) hi--;
    if (lo <= hi) {
        js_sb_fmt(e, "%s[%c-%c]", first ? "" : " | ", lo, hi);
        if (L > 1) js_sb_fmt(e, " [0-9]{%d}", L - 1);
        first = 0;
    }
    if (last) {
        js_sb_add(e, first ? "" : " | ");
        js_sb_lit(e, b, 1);
        js_sb_add(e, " ( ");
        same_len(e, zeros, b + 1, L - 1);
        js_sb_add(e, " )");
    }
    js_sb_add(e, " )");
}

/* Decimal forms (no leading zeros) of the integers in [lo, hi];
 * hi UINT64_MAX: no upper bound (up to INT_DIGITS digits). */
static void uint_range(js_sb *e, uint64_t lo, uint64_t hi)
{
    int unbounded = hi == UINT64_MAX, L0 = n_digits(lo), L1 = unbounded ? INT_DIGITS : n_digits(hi);
    js_sb_add(e, "( ");
    for (int L = L0; L <= L1; L++) {
        if (L > L0) js_sb_add(e, " | ");
        uint64_t a = L == 1 ? 0 : pow10u(L - 1), b = pow10u(L) - 1;
        if (a < lo) a = lo;
        if (!unbounded && b > hi) b = hi;
        char sa[24], sb[24];
        snprintf(sa, sizeof sa, "%llu", (unsigned long long)a);
        snprintf(sb, sizeof sb, "%llu", (unsigned long long)b);
        same_len(e, sa, sb, L);
    }
    js_sb_add(e, " )");
}

typedef struct {
    int has_lo, has_hi;
    double lo, hi; /* inclusive */
} js_bounds;

/* minimum/maximum/exclusive*: integral bounds only when integral. */
static int read_bounds(js_ctx *j, const cJSON *s, const char *path, int integer, js_bounds *b)
{
    static const char *const keys[4] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
    memset(b, 0, sizeof *b);
    for (int k = 0; k < 4; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(s, keys[k]);
        if (!x) continue;
        if (!cJSON_IsNumber(x)) return js_fail(j, "\"%s\" at %s must be a number", keys[k], path);
        double v = x->valuedouble;
        if (!isfinite(v) || fabs(v) >= BOUND_MAX)
            return js_fail(j, "\"%s\" at %s is beyond +-1e15, which is not supported", keys[k], path);
        int excl = k & 1, low = k < 2;
        if (!integer && (excl || v != floor(v)))
            return js_fail(j, "\"%s\": %g at %s is not supported for numbers (integer-valued minimum and maximum "
                              "are)", keys[k], v, path);
        if (low) v = excl ? floor(v) + 1 : ceil(v);
        else v = excl ? ceil(v) - 1 : floor(v);
        if (low && (!b->has_lo || v > b->lo)) b->lo = v, b->has_lo = 1;
        if (!low && (!b->has_hi || v < b->hi)) b->hi = v, b->has_hi = 1;
    }
    if (b->has_lo && b->has_hi && b->lo > b->hi) return js_fail(j, "the bounds at %s admit no value", path);
    return 0;
}

/* Integers in [lo, hi] (either side open). */
static void int_range(js_sb *e, const js_bounds *b)
{
    int first = 1;
    js_sb_add(e, "( ");
    if (!b->has_lo || b->lo < 0) { /* negatives: "-" and a magnitude */
        uint64_t mlo = b->has_hi && b->hi < 0 ? (uint64_t)-b->hi : 1;
        uint64_t mhi = b->has_lo ? (uint64_t)-b->lo : UINT64_MAX;
        js_sb_add(e, "\"-\" ");
        uint_range(e, mlo, mhi);
        first = 0;
    }
    if (!b->has_hi || b->hi >= 0) {
        if (!first) js_sb_add(e, " | ");
        uint_range(e, b->has_lo && b->lo > 0 ? (uint64_t)b->lo : 0, b->has_hi ? (uint64_t)b->hi : UINT64_MAX);
    }
    js_sb_add(e, " )");
}

int js_integer_expr(js_ctx *j, const cJSON *s, const char *path, js_sb *e)
{
    if (cJSON_HasObjectItem(s, "multipleOf")) return js_fail(j, "\"multipleOf\" at %s is not supported", path);
    js_bounds b;
    if (read_bounds(j, s, path, 1, &b)) return SHARDLM_EINPUT;
    char n[JS_NAME_MAX];
    if (!b.has_lo && !b.has_hi) js_sb_add(e, js_prim(j, JP_INTEGER, n));
    else int_range(e, &b);
    return 0;
}

/* Non-negative numbers in [lo, hi] (hi < 0: unbounded), no exponent. */
static void num_segment(js_ctx *j, js_sb *e, uint64_t lo, int64_t hi)
{
    char f[JS_NAME_MAX];
    js_prim(j, JP_FRAC, f);
    if (hi < 0) {
        uint_range(e, lo, UINT64_MAX);
        js_sb_fmt(e, " %s?", f);
        return;
    }
    char top[24];
    snprintf(top, sizeof top, "%lld", (long long)hi);
    js_sb_add(e, "( ");
    if ((uint64_t)hi > lo) {
        uint_range(e, lo, (uint64_t)hi - 1);
        js_sb_fmt(e, " %s? | ", f);
    }
    js_sb_lit(e, top, strlen(top));
    js_sb_add(e, " ( \".\" \"0\"{1,16} )? )");
}

int js_number_expr(js_ctx *j, const cJSON *s, const char *path, js_sb *e)
{
    if (cJSON_HasObjectItem(s, "multipleOf")) return js_fail(j, "\"multipleOf\" at %s is not supported", path);
    js_bounds b;
    if (read_bounds(j, s, path, 0, &b)) return SHARDLM_EINPUT;
    char n[JS_NAME_MAX];
    if (!b.has_lo && !b.has_hi) {
        js_sb_add(e, js_prim(j, JP_NUMBER, n));
        return 0;
    }
    js_sb_add(e, "( ");
    if (b.has_lo && b.lo >= 0) {
        num_segment(j, e, (uint64_t)b.lo, b.has_hi ? (int64_t)b.hi : -1);
    } else if (b.has_hi && b.hi <= 0) {
        js_sb_add(e, "\"-\" ");
        num_segment(j, e, (uint64_t)-b.hi, b.has_lo ? (int64_t)-b.lo : -1);
    } else {
        js_sb_add(e, "\"-\" ");
        num_segment(j, e, 0, b.has_lo ? (int64_t)-b.lo : -1);
        js_sb_add(e, " | ");
        num_segment(j, e, 0, b.has_hi ? (int64_t)b.hi : -1);
    }
    js_sb_add(e, " )");
    return 0;
}
