/* toolcall_parse.c - the model's text -> message content and tool calls,
 * fed in any pieces. The text is scanned for the format's markers; from a
 * marker on, the call's head (up to the arguments) is held until it is
 * complete and names a known tool, then the call begins and its arguments
 * stream out as the JSON value they are, byte by byte, ending where the
 * value ends; the closing syntax is dropped. A head that turns out not to
 * be a call gives its text back as content. Whitespace next to a call is
 * not content. Every decision depends only on
 * the bytes seen, never on where the pieces were cut, so any split gives
 * the same events (concatenated). */
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "toolcall.h"

enum { P_TEXT, P_HEAD, P_ARGS, P_TAIL };
enum { NEED = -1, FAIL = -2 }; /* results of the head and tail scans; >= 0: bytes taken */

typedef struct {
    char *s;
    size_t n, cap;
} pbuf;

struct shardlm_toolparse {
    shardlm_toolfmt f;
    char **names;
    int n_names;
    pbuf in;      /* text not decided yet */
    pbuf ws;      /* whitespace content held back */
    int mode;
    int nonws;    /* some content other than whitespace was given out */
    int n_calls;
    int head_len; /* P_HEAD: the marker's length (0: the head starts the object) */
    int in_list;  /* a list format ([...]) is open */
    int after_call; /* no content since the last call ended */
    /* P_ARGS: the JSON value being streamed */
    int v_started, v_depth, v_str, v_esc, v_scalar;
    shardlm_toolparse_fn fn;
    void *ctx;
};

static int pb_put(pbuf *b, const char *s, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n) cap *= 2;
        char *t = realloc(b->s, cap);
        if (!t) return SHARDLM_ENOMEM;
        b->s = t;
        b->cap = cap;
    }
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    return SHARDLM_OK;
}

static void pb_drop(pbuf *b, size_t n)
{
    memmove(b->s, b->s + n, b->n - n);
    b->n -= n;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

static void event(shardlm_toolparse *p, shardlm_toolparse_kind k, const char *s, size_t n)
{
    if (k != SHARDLM_TOOLPARSE_CALL && !n) return;
    shardlm_toolparse_event ev = {k, k == SHARDLM_TOOLPARSE_CONTENT ? -1 : p->n_calls - 1, s, n};
    p->fn(p->ctx, &ev);
}

/* Decided content: whitespace at its end is held until more content or
 * the end shows it is not right before a call. */
static int content(shardlm_toolparse *p, const char *s, size_t n)
{
    if (p->after_call) { /* nor is whitespace right after one */
        while (n && is_ws(*s)) s++, n--;
        if (n) p->after_call = 0;
    }
    size_t k = n;
    while (k > 0 && is_ws(s[k - 1])) k--;
    if (k) {
        event(p, SHARDLM_TOOLPARSE_CONTENT, p->ws.s, p->ws.n);
        p->ws.n = 0;
        event(p, SHARDLM_TOOLPARSE_CONTENT, s, k);
        p->nonws = 1;
    }
    return pb_put(&p->ws, s + k, n - k);
}

/* ---- markers ---- */

typedef struct {
    const char *text;
    int at_start; /* only where the text begins (the marker is part of the call) */
} marker;

static int markers(shardlm_toolfmt f, marker *m)
{
    switch (f) {
    case SHARDLM_TOOLFMT_HERMES: m[0] = (marker){"<tool_call>", 0}; return 1;
    case SHARDLM_TOOLFMT_LLAMA3:
        m[0] = (marker){"<|python_tag|>", 0};
        m[1] = (marker){"{\"name\"", 1};
        return 2;
    case SHARDLM_TOOLFMT_MISTRAL:
    case SHARDLM_TOOLFMT_MISTRAL_ARGS: m[0] = (marker){"[TOOL_CALLS]", 0}; return 1;
    case SHARDLM_TOOLFMT_GRANITE: m[0] = (marker){"<|tool_call|>", 0}; return 1;
    default: return 0;
    }
}

/* P_TEXT: gives out content up to the first marker (or up to what may
 * still become one) and enters P_HEAD there. */
static int scan_text(shardlm_toolparse *p, int final)
{
    marker m[2];
    int nm = markers(p->f, m);
    size_t best = (size_t)-1, hold = 0, k = 0;
    int which = -1;
    while (k < p->in.n && is_ws(p->in.s[k])) k++;
    for (int i = 0; i < nm; i++) {
        size_t len = strlen(m[i].text);
        if (m[i].at_start) {
            if (p->nonws || k == p->in.n) continue;
            size_t have = p->in.n - k < len ? p->in.n - k : len;
            if (memcmp(p->in.s + k, m[i].text, have)) continue;
            if (have == len && k < best) best = k, which = i;
            else if (!final && p->in.n - k > hold) hold = p->in.n - k;
            continue;
        }
        const char *hit = memmem(p->in.s, p->in.n, m[i].text, len);
        if (hit && (size_t)(hit - p->in.s) < best) best = (size_t)(hit - p->in.s), which = i;
        for (size_t h = len - 1; !final && h > hold; h--)
            if (h <= p->in.n && !memcmp(p->in.s + p->in.n - h, m[i].text, h)) {
                hold = h;
                break;
            }
    }
    size_t give = which >= 0 ? best : p->in.n - hold;
    if (content(p, p->in.s, give)) return SHARDLM_ENOMEM;
    pb_drop(&p->in, give);
    if (which < 0) return NEED;
    p->mode = P_HEAD;
    p->head_len = m[which].at_start ? 0 : (int)strlen(m[which].text);
    return SHARDLM_OK;
}

/* ---- the head of a call ---- */

static size_t skip_ws(const pbuf *b, size_t i)
{
    while (i < b->n && is_ws(b->s[i])) i++;
    return i;
}

/* Expects lit at i: the index after it, NEED, or FAIL. */
static long lit(const pbuf *b, size_t i, const char *lit)
{
    size_t n = strlen(lit), have = b->n - i < n ? b->n - i : n;
    if (memcmp(b->s + i, lit, have)) return FAIL;
    return have < n ? NEED : (long)(i + n);
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
}

/* A run of name characters from i ending at `stop` (a character or, with
 * stop 0, "["): its end, NEED or FAIL. */
static long name_run(const pbuf *b, size_t i, char stop)
{
    size_t j = i;
    while (j < b->n && name_char(b->s[j]) && j - i <= SHARDLM_TOOL_NAME_MAX) j++;
    if (j - i > SHARDLM_TOOL_NAME_MAX) return FAIL;
    if (j == b->n) return NEED;
    return j > i && b->s[j] == (stop ? stop : '[') ? (long)j : FAIL;
}

#define STEP(expr)                                                                                                     \
    do {                                                                                                               \
        long r_ = (expr);                                                                                              \
        if (r_ < 0) return r_;                                                                                         \
        i = (size_t)r_;                                                                                                \
    } while (0)

/* {"name": "N", "arguments": (or "parameters": ) from i; the name's span. */
static long object_head(const pbuf *b, size_t i, size_t *n0, size_t *n1)
{
    STEP(lit(b, skip_ws(b, i), "{"));
    STEP(lit(b, skip_ws(b, i), "\"name\""));
    STEP(lit(b, skip_ws(b, i), ":"));
    STEP(lit(b, skip_ws(b, i), "\""));
    *n0 = i;
    STEP(name_run(b, i, '"'));
    *n1 = i;
    STEP(lit(b, i, "\""));
    STEP(lit(b, skip_ws(b, i), ","));
    i = skip_ws(b, i);
    long a = lit(b, i, "\"arguments\"");
    if (a == FAIL) a = lit(b, i, "\"parameters\"");
    STEP(a);
    STEP(lit(b, skip_ws(b, i), ":"));
    return (long)i;
}

/* N[ARGS] or N[CALL_ID]ID[ARGS] from i. */
static long args_head(const pbuf *b, size_t i, size_t *n0, size_t *n1)
{
    *n0 = i;
    STEP(name_run(b, i, 0));
    *n1 = i;
    long a = lit(b, i, "[ARGS]");
    if (a != FAIL) return a;
    STEP(lit(b, i, "[CALL_ID]"));
    STEP(name_run(b, i, 0));
    return lit(b, i, "[ARGS]");
}

static long head(const shardlm_toolparse *p, size_t *n0, size_t *n1)
{
    const pbuf *b = &p->in;
    size_t i = (size_t)p->head_len;
    if (p->f == SHARDLM_TOOLFMT_MISTRAL_ARGS) return args_head(b, i, n0, n1);
    if ((p->f == SHARDLM_TOOLFMT_MISTRAL || p->f == SHARDLM_TOOLFMT_GRANITE) && !p->in_list)
        STEP(lit(b, skip_ws(b, i), "["));
    return object_head(b, i, n0, n1);
}

static int known(const shardlm_toolparse *p, const char *s, size_t n)
{
    for (int i = 0; i < p->n_names; i++)
        if (strlen(p->names[i]) == n && !memcmp(p->names[i], s, n)) return 1;
    return 0;
}

static int scan_head(shardlm_toolparse *p, int final)
{
    size_t n0 = 0, n1 = 0;
    long r = head(p, &n0, &n1);
    if (r == NEED && !final) return NEED;
    if (r < 0 || !known(p, p->in.s + n0, n1 - n0)) { /* not a call: its text is content */
        /* the marker, or the first byte of a bare object or a list's next
         * item, is content; the rest is scanned again as text */
        size_t give = p->head_len ? (size_t)p->head_len : p->in.n ? 1 : 0;
        p->mode = P_TEXT;
        p->in_list = 0;
        if (content(p, p->in.s, give)) return SHARDLM_ENOMEM;
        pb_drop(&p->in, give);
        return SHARDLM_OK;
    }
    p->ws.n = 0; /* whitespace before a call is not content */
    p->n_calls++;
    event(p, SHARDLM_TOOLPARSE_CALL, p->in.s + n0, n1 - n0);
    if (p->f == SHARDLM_TOOLFMT_MISTRAL || p->f == SHARDLM_TOOLFMT_GRANITE) p->in_list = 1;
    pb_drop(&p->in, (size_t)r);
    p->mode = P_ARGS;
    p->v_started = p->v_depth = p->v_str = p->v_esc = p->v_scalar = 0;
    return SHARDLM_OK;
}

/* ---- the arguments: one JSON value, streamed ---- */

static int scalar_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '+' ||
           c == '-';
}

/* Classifies byte c of the value: 1 part of it, 0 the value ended before
 * it, 2 part of it and the last. */
static int value_byte(shardlm_toolparse *p, char c)
{
    if (!p->v_started) {
        p->v_started = 1;
        if (c == '{' || c == '[') p->v_depth = 1;
        else if (c == '"') p->v_str = 1;
        else if (scalar_char(c)) p->v_scalar = 1;
        else return 0;
        return 1;
    }
    if (p->v_str) {
        if (p->v_esc) p->v_esc = 0;
        else if (c == '\\') p->v_esc = 1;
        else if (c == '"') p->v_str = 0;
        return p->v_str || p->v_depth ? 1 : 2;
    }
    if (p->v_scalar) return scalar_char(c);
    if (c == '"') p->v_str = 1;
    else if (c == '{' || c == '[') p->v_depth++;
    else if (c == '}' || c == ']') p->v_depth--;
    return p->v_depth ? 1 : 2;
}

static int scan_args(shardlm_toolparse *p, int final)
{
    size_t i = 0;
    if (!p->v_started) i = skip_ws(&p->in, 0);
    size_t start = i;
    int ended = 0;
    for (; i < p->in.n && !ended; i++) {
        int r = value_byte(p, p->in.s[i]);
        if (r == 0) break;
        ended = r == 2;
    }
    if (i < p->in.n && !ended) ended = 1; /* a scalar (or nothing) ended before byte i */
    event(p, SHARDLM_TOOLPARSE_ARGS, p->in.s + start, i - start);
    pb_drop(&p->in, i);
    if (!ended && !final) return NEED;
    p->mode = P_TAIL;
    return SHARDLM_OK;
}

/* ---- after the arguments ---- */

/* The end of a JSON value starting at i (for members after the arguments,
 * such as Mistral's "id"): the index after it, NEED or FAIL. */
static long skip_value(const pbuf *b, size_t i)
{
    if (i >= b->n) return NEED;
    char c0 = b->s[i];
    if (c0 != '"' && c0 != '{' && c0 != '[') {
        size_t j = i;
        while (j < b->n && scalar_char(b->s[j])) j++;
        return j == i ? FAIL : j == b->n ? NEED : (long)j;
    }
    int depth = 0, str = 0, esc = 0;
    for (size_t j = i; j < b->n; j++) {
        char c = b->s[j];
        if (str) {
            if (esc) {
                esc = 0;
            } else if (c == '\\') {
                esc = 1;
            } else if (c == '"') {
                str = 0;
                if (!depth) return (long)(j + 1);
            }
        } else if (c == '"') {
            str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            return (long)(j + 1);
        }
    }
    return NEED;
}

/* Closes the call object (other members skipped) and the format's
 * wrapper: the bytes taken, NEED or FAIL; *more: a list goes on. */
static long tail(const shardlm_toolparse *p, int *more)
{
    const pbuf *b = &p->in;
    size_t i = 0;
    *more = 0;
    if (p->f == SHARDLM_TOOLFMT_MISTRAL_ARGS) return 0;
    for (;;) { /* , "key": value ... } */
        i = skip_ws(b, i);
        if (i == b->n) return NEED;
        if (b->s[i] == '}') {
            i++;
            break;
        }
        STEP(lit(b, i, ","));
        STEP(lit(b, skip_ws(b, i), "\""));
        STEP(name_run(b, i, '"'));
        STEP(lit(b, i, "\""));
        STEP(lit(b, skip_ws(b, i), ":"));
        STEP(skip_value(b, skip_ws(b, i)));
    }
    if (p->f == SHARDLM_TOOLFMT_HERMES) return lit(b, skip_ws(b, i), "</tool_call>");
    if (p->f == SHARDLM_TOOLFMT_LLAMA3) return (long)i;
    i = skip_ws(b, i);
    if (i == b->n) return NEED;
    if (b->s[i] == ',') {
        *more = 1;
        return (long)(i + 1);
    }
    return lit(b, i, "]");
}

static int scan_tail(shardlm_toolparse *p, int final)
{
    int more = 0;
    long r = tail(p, &more);
    if (r == NEED && !final) return NEED;
    p->mode = P_TEXT;
    p->after_call = 1;
    if (r == NEED) {
        p->in.n = 0; /* closing syntax cut short: dropped */
        return SHARDLM_OK;
    }
    if (r >= 0) pb_drop(&p->in, (size_t)r);
    if (r >= 0 && more) {
        p->mode = P_HEAD; /* the list's next call */
        p->head_len = 0;
    } else {
        p->in_list = 0;
    }
    return SHARDLM_OK;
}

/* ---- driving ---- */

static int run(shardlm_toolparse *p, int final)
{
    for (int guard = 0; guard < 1 << 20; guard++) {
        if (p->mode == P_TEXT && !p->in.n) return SHARDLM_OK;
        int r = p->mode == P_TEXT   ? scan_text(p, final)
                : p->mode == P_HEAD ? scan_head(p, final)
                : p->mode == P_ARGS ? scan_args(p, final)
                                    : scan_tail(p, final);
        if (r == NEED) return SHARDLM_OK;
        if (r) return r;
    }
    return SHARDLM_OK;
}

int shardlm_toolparse_new(shardlm_toolfmt f, const char *const *names, int n, shardlm_toolparse **out)
{
    shardlm_toolparse *p = calloc(1, sizeof *p);
    if (!p || !(p->names = calloc((size_t)(n > 0 ? n : 1), sizeof *p->names))) {
        free(p);
        return SHARDLM_ENOMEM;
    }
    p->f = f;
    for (int i = 0; i < n; i++) {
        if (!(p->names[i] = strdup(names[i]))) {
            shardlm_toolparse_free(p);
            return SHARDLM_ENOMEM;
        }
        p->n_names++;
    }
    *out = p;
    return SHARDLM_OK;
}

void shardlm_toolparse_free(shardlm_toolparse *p)
{
    if (!p) return;
    for (int i = 0; i < p->n_names; i++) free(p->names[i]);
    free(p->names);
    free(p->in.s);
    free(p->ws.s);
    free(p);
}

int shardlm_toolparse_feed(shardlm_toolparse *p, const char *text, size_t len, shardlm_toolparse_fn fn, void *ctx)
{
    p->fn = fn;
    p->ctx = ctx;
    if (pb_put(&p->in, text, len)) return SHARDLM_ENOMEM;
    return run(p, 0);
}

int shardlm_toolparse_finish(shardlm_toolparse *p, shardlm_toolparse_fn fn, void *ctx)
{
    p->fn = fn;
    p->ctx = ctx;
    int rc = run(p, 1);
    if (!rc && !p->n_calls) event(p, SHARDLM_TOOLPARSE_CONTENT, p->ws.s, p->ws.n);
    p->ws.n = 0;
    return rc;
}

int shardlm_toolparse_n_calls(const shardlm_toolparse *p)
{
    return p->n_calls;
}
