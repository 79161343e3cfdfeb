/* stop.c - text matched across token boundaries: stop strings, the
 * triggers of lazy grammars, and the finish reason. The stopper keeps the
 * text that could still turn into a stop string (plus an unfinished UTF-8
 * character) and releases it as soon as it cannot; a matched stop string and
 * whatever follows it are dropped. The trigger scan keeps only the text a
 * trigger could still start in. */
#include <stdlib.h>
#include <string.h>

#include "sampling.h"
#include "shardlm_common.h"

int shardlm_stopper_init(shardlm_stopper *s, const char *const *stops, int n)
{
    memset(s, 0, sizeof *s);
    s->matched = -1;
    if (n < 0 || n > SHARDLM_STOP_MAX) {
        shardlm_err_set("stop takes at most %d strings, got %d", SHARDLM_STOP_MAX, n);
        return SHARDLM_EINPUT;
    }
    for (int i = 0; i < n; i++) {
        size_t len = stops[i] ? strlen(stops[i]) : 0;
        if (len == 0 || len > SHARDLM_STOP_MAX_LEN) {
            shardlm_err_set("stop strings must be 1 to %d bytes, string %d is %zu", SHARDLM_STOP_MAX_LEN, i, len);
            return SHARDLM_EINPUT;
        }
        memcpy(s->stop[i], stops[i], len);
        s->stop_len[i] = len;
    }
    s->n_stop = n;
    return SHARDLM_OK;
}

void shardlm_stopper_free(shardlm_stopper *s)
{
    free(s->buf);
    s->buf = NULL;
    s->n_buf = s->n_out = s->cap = 0;
}

/* Forgets the bytes handed out by the previous call. */
static void stopper_drop_out(shardlm_stopper *s)
{
    if (!s->n_out) return;
    memmove(s->buf, s->buf + s->n_out, s->n_buf - s->n_out);
    s->n_buf -= s->n_out;
    s->n_out = 0;
}

static int stopper_append(shardlm_stopper *s, const char *piece, size_t n)
{
    if (s->n_buf + n > s->cap) {
        size_t cap = s->cap ? s->cap : 64;
        while (cap < s->n_buf + n) cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b) {
            shardlm_err_set("out of memory holding %zu bytes of text for the stop strings", s->n_buf + n);
            return SHARDLM_ENOMEM;
        }
        s->buf = b;
        s->cap = cap;
    }
    if (n) memcpy(s->buf + s->n_buf, piece, n);
    s->n_buf += n;
    return SHARDLM_OK;
}

/* Earliest stop string in the buffer: its offset, and its index in *which;
 * (size_t)-1 when none. */
static size_t stopper_find(const shardlm_stopper *s, int *which)
{
    size_t best = (size_t)-1;
    for (int i = 0; s->n_buf && i < s->n_stop; i++) {
        const char *hit = memmem(s->buf, s->n_buf, s->stop[i], s->stop_len[i]);
        if (hit && (size_t)(hit - s->buf) < best) {
            best = (size_t)(hit - s->buf);
            *which = i;
        }
    }
    return best;
}

/* Length of the longest tail of the buffer that begins some stop string. */
static size_t stopper_partial(const shardlm_stopper *s)
{
    size_t longest = 0;
    for (int i = 0; i < s->n_stop; i++) {
        size_t h = s->stop_len[i] - 1 < s->n_buf ? s->stop_len[i] - 1 : s->n_buf;
        for (; h > longest; h--)
            if (memcmp(s->buf + s->n_buf - h, s->stop[i], h) == 0) break;
        if (h > longest) longest = h;
    }
    return longest;
}

/* Moves cut back so that buf[0, cut) ends on a whole UTF-8 character. Only
 * a well-formed lead byte whose character runs past cut moves it, so bad
 * bytes are released rather than held for ever. */
static size_t utf8_cut(const char *buf, size_t cut)
{
    size_t j = cut;
    int cont = 0;
    while (j > 0 && cont < 3 && ((unsigned char)buf[j - 1] & 0xC0) == 0x80) j--, cont++;
    if (j == 0) return cut;
    unsigned char lead = (unsigned char)buf[j - 1];
    size_t need = lead >= 0xF0 && lead < 0xF8 ? 4 : lead >= 0xE0 && lead < 0xF0 ? 3 : lead >= 0xC0 && lead < 0xE0 ? 2 : 1;
    return need > 1 && j - 1 + need > cut ? j - 1 : cut;
}

/* Never NULL, so that callers may copy zero bytes from it. */
static const char *stopper_text(const shardlm_stopper *s)
{
    return s->buf ? s->buf : "";
}

size_t shardlm_stopper_feed(shardlm_stopper *s, const char *piece, size_t n, const char **text, int *stopped)
{
    *text = stopper_text(s);
    *stopped = s->matched >= 0;
    if (*stopped) return 0;
    stopper_drop_out(s);
    if (stopper_append(s, piece, n)) return (size_t)-1;
    *text = stopper_text(s);
    int which = -1;
    size_t at = stopper_find(s, &which);
    if (at != (size_t)-1) {
        s->matched = which;
        s->n_buf = s->n_out = at; /* the stop string and the rest are dropped */
        *stopped = 1;
        return at;
    }
    s->n_out = utf8_cut(s->buf, s->n_buf - stopper_partial(s));
    return s->n_out;
}

size_t shardlm_stopper_flush(shardlm_stopper *s, const char **text)
{
    *text = stopper_text(s);
    if (s->matched >= 0) return 0;
    stopper_drop_out(s);
    *text = stopper_text(s);
    s->n_out = s->n_buf;
    return s->n_out;
}

/* ---- grammar triggers ---- */

int shardlm_trigger_scan_init(shardlm_trigger_scan *t, const shardlm_grammar_trigger *tr, int n)
{
    memset(t, 0, sizeof *t);
    if (n < 1 || n > SHARDLM_TRIGGER_MAX) {
        shardlm_err_set("a lazy grammar takes 1 to %d triggers, got %d", SHARDLM_TRIGGER_MAX, n);
        return SHARDLM_EINPUT;
    }
    for (int i = 0; i < n; i++) {
        size_t len = tr[i].text ? strlen(tr[i].text) : 0;
        if (len == 0 || len > SHARDLM_TRIGGER_MAX_LEN) {
            shardlm_err_set("grammar triggers must be 1 to %d bytes, trigger %d is %zu", SHARDLM_TRIGGER_MAX_LEN, i,
                            len);
            return SHARDLM_EINPUT;
        }
        memcpy(t->text[i], tr[i].text, len + 1);
        t->len[i] = len;
        t->at_start[i] = tr[i].at_start;
    }
    t->n = n;
    return SHARDLM_OK;
}

void shardlm_trigger_scan_free(shardlm_trigger_scan *t)
{
    free(t->buf);
    t->buf = NULL;
    t->n_buf = t->cap = 0;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The earliest trigger in the buffer (its offset), or (size_t)-1; k is the
 * output's first non-whitespace byte while the start is undecided. */
static size_t trigger_find(shardlm_trigger_scan *t, size_t k)
{
    size_t best = (size_t)-1;
    int open = 0; /* an at-start trigger may still match at k */
    for (int i = 0; i < t->n; i++) {
        if (t->at_start[i]) {
            if (t->lead_done || k == t->n_buf) {
                open |= !t->lead_done;
                continue;
            }
            size_t have = t->n_buf - k < t->len[i] ? t->n_buf - k : t->len[i];
            if (memcmp(t->buf + k, t->text[i], have)) continue;
            if (have == t->len[i] && k < best) best = k;
            open |= have < t->len[i];
            continue;
        }
        const char *hit = memmem(t->buf, t->n_buf, t->text[i], t->len[i]);
        if (hit && (size_t)(hit - t->buf) < best) best = (size_t)(hit - t->buf);
    }
    if (!open) t->lead_done = 1;
    return best;
}

int shardlm_trigger_scan_feed(shardlm_trigger_scan *t, const char *piece, size_t n, const char **from, size_t *len)
{
    if (t->fired || !t->n) return 0;
    if (t->n_buf + n > t->cap) {
        size_t cap = t->cap ? t->cap : 128;
        while (cap < t->n_buf + n) cap *= 2;
        char *b = realloc(t->buf, cap);
        if (!b) {
            shardlm_err_set("out of memory watching for grammar triggers");
            return -1;
        }
        t->buf = b;
        t->cap = cap;
    }
    if (n) memcpy(t->buf + t->n_buf, piece, n);
    t->n_buf += n;
    size_t k = 0;
    while (!t->lead_done && k < t->n_buf && is_ws(t->buf[k])) k++;
    size_t at = trigger_find(t, t->lead_done ? t->n_buf : k);
    if (at != (size_t)-1) {
        t->fired = 1;
        *from = t->buf + at;
        *len = t->n_buf - at;
        return 1;
    }
    /* a later match starts within the last (longest - 1) bytes, or at k */
    size_t keep = 0;
    for (int i = 0; i < t->n; i++)
        if (t->len[i] - 1 > keep) keep = t->len[i] - 1;
    size_t drop = t->n_buf > keep ? t->n_buf - keep : 0;
    if (!t->lead_done && k < drop) drop = k;
    memmove(t->buf, t->buf + drop, t->n_buf - drop);
    t->n_buf -= drop;
    return 0;
}

shardlm_finish_reason shardlm_finish_decide(int is_eos, int stop_matched, int n_generated, int max_tokens,
                                            int ctx_full)
{
    if (is_eos || stop_matched) return SHARDLM_FINISH_STOP;
    if ((max_tokens > 0 && n_generated >= max_tokens) || ctx_full) return SHARDLM_FINISH_LENGTH;
    return SHARDLM_FINISH_NONE;
}

const char *shardlm_finish_reason_str(shardlm_finish_reason r)
{
    switch (r) {
    case SHARDLM_FINISH_STOP: return "stop";
    case SHARDLM_FINISH_LENGTH: return "length";
    default: return NULL;
    }
}
