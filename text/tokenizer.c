/* tokenizer.c - the SentencePiece-BPE tokenizer of GGUF "llama" models:
 * loading the vocabulary out of the GGUF, encoding by score-ordered pair
 * merges with <0xNN> byte fallback, and the streaming UTF-8-safe decoder. */
#include "shardlm_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"

/* token_type values as written by llama.cpp's converters. */
enum {
    TOK_UNDEFINED = 0,
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3,
    TOK_USER = 4,
    TOK_UNUSED = 5,
    TOK_BYTE = 6,
};

struct shardlm_tokenizer {
    int32_t n;
    int32_t bos, eos, unk;
    int add_space_prefix;
    char *blob;      /* every piece, each followed by a NUL */
    uint32_t *off;   /* n + 1 offsets into blob; piece i has off[i+1]-off[i]-1 bytes */
    float *score;
    uint8_t *type;
    int16_t *byteval; /* 0..255 for <0xNN> byte tokens, else -1 */
    int32_t byte_id[256];
    uint32_t max_len; /* longest mergeable piece, bounds pair lookups */
    int32_t *slot;    /* open-addressing piece -> id table, -1 = empty */
    uint32_t slot_mask;
};

/* ---- piece -> id hash table ---- */

static uint32_t tok_hash(const char *s, size_t n)
{
    return (uint32_t)shardlm_fnv1a64(SHARDLM_FNV_INIT, s, n);
}

static size_t tok_len(const shardlm_tokenizer *t, int32_t id)
{
    return t->off[id + 1] - t->off[id] - 1;
}

static int32_t tok_find(const shardlm_tokenizer *t, const char *s, size_t n)
{
    for (uint32_t h = tok_hash(s, n) & t->slot_mask;; h = (h + 1) & t->slot_mask) {
        int32_t id = t->slot[h];
        if (id < 0) return -1;
        if (tok_len(t, id) == n && memcmp(t->blob + t->off[id], s, n) == 0) return id;
    }
}

/* Types that SentencePiece lets BPE produce; control, unknown and byte
 * pieces are reserved and only ever come from explicit ids. */
static int tok_mergeable(const shardlm_tokenizer *t, int32_t id)
{
    uint8_t ty = t->type[id];
    return ty == TOK_NORMAL || ty == TOK_USER || ty == TOK_UNUSED || ty == TOK_UNDEFINED;
}

static int32_t tok_find_mergeable(const shardlm_tokenizer *t, const char *s, size_t n)
{
    int32_t id = tok_find(t, s, n);
    return id >= 0 && tok_mergeable(t, id) ? id : -1;
}

static int tok_build_table(shardlm_tokenizer *t)
{
    uint32_t cap = 16;
    while (cap < (uint32_t)t->n * 2u) cap <<= 1;
    t->slot = malloc(cap * sizeof *t->slot);
    if (!t->slot) return SHARDLM_ENOMEM;
    memset(t->slot, 0xff, cap * sizeof *t->slot);
    t->slot_mask = cap - 1;
    for (int32_t id = 0; id < t->n; id++) {
        const char *s = t->blob + t->off[id];
        size_t n = tok_len(t, id);
        /* On duplicate pieces the first id wins, as in SentencePiece. */
        if (tok_find(t, s, n) >= 0) continue;
        uint32_t h = tok_hash(s, n) & t->slot_mask;
        while (t->slot[h] >= 0) h = (h + 1) & t->slot_mask;
        t->slot[h] = id;
    }
    return SHARDLM_OK;
}

/* ---- loading ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Byte value of a "<0xNN>" piece, or -1. */
static int parse_byte_piece(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static int tok_load_pieces(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    const char *key = "tokenizer.ggml.tokens";
    shardlm_gguf_vtype elem;
    uint64_t n;
    const void *data;
    int rc = shardlm_gguf_get_arr(g, key, &elem, &n, &data);
    if (rc == 1 || (rc == SHARDLM_OK && (elem != SHARDLM_GGUF_STRING || n == 0 || n > INT32_MAX / 4))) {
        shardlm_err_set("%s: %s is missing, empty or not an array of strings", path, key);
        return SHARDLM_EINPUT;
    }
    if (rc != SHARDLM_OK) return rc;
    t->n = (int32_t)n;
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        shardlm_gguf_str s;
        if ((rc = shardlm_gguf_arr_str(g, key, i, &s)) != SHARDLM_OK) return rc;
        total += s.len + 1;
    }
    if (total > UINT32_MAX) {
        shardlm_err_set("%s: %s is too large (%llu bytes)", path, key, (unsigned long long)total);
        return SHARDLM_EINPUT;
    }
    t->blob = malloc(total);
    t->off = malloc((n + 1) * sizeof *t->off);
    if (!t->blob || !t->off) return SHARDLM_ENOMEM;
    uint32_t at = 0;
    for (uint64_t i = 0; i < n; i++) {
        shardlm_gguf_str s;
        if ((rc = shardlm_gguf_arr_str(g, key, i, &s)) != SHARDLM_OK) return rc;
        t->off[i] = at;
        memcpy(t->blob + at, s.ptr, s.len);
        at += (uint32_t)s.len;
        t->blob[at++] = 0;
    }
    t->off[n] = at;
    return SHARDLM_OK;
}

/* A per-token numeric array (scores, token_type): absent means "use dflt";
 * present with the wrong length is an error. */
static int tok_load_numeric(const shardlm_gguf *g, const char *path, const char *key, int32_t n,
                            double dflt, double *vals)
{
    shardlm_gguf_vtype elem;
    uint64_t cnt;
    const void *data;
    int rc = shardlm_gguf_get_arr(g, key, &elem, &cnt, &data);
    if (rc == 1) {
        for (int32_t i = 0; i < n; i++) vals[i] = dflt;
        return SHARDLM_OK;
    }
    if (rc != SHARDLM_OK) return rc;
    if (cnt != (uint64_t)n || elem == SHARDLM_GGUF_STRING || elem == SHARDLM_GGUF_ARRAY) {
        shardlm_err_set("%s: %s has %llu numeric entries, expected %d", path, key, (unsigned long long)cnt, n);
        return SHARDLM_EINPUT;
    }
    for (int32_t i = 0; i < n; i++)
        if ((rc = shardlm_gguf_arr_f64(g, key, (uint64_t)i, &vals[i])) != SHARDLM_OK) return rc;
    return SHARDLM_OK;
}

static int tok_load_scores_types(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    double *tmp = malloc((size_t)t->n * sizeof *tmp);
    t->score = malloc((size_t)t->n * sizeof *t->score);
    t->type = malloc((size_t)t->n);
    t->byteval = malloc((size_t)t->n * sizeof *t->byteval);
    if (!tmp || !t->score || !t->type || !t->byteval) {
        free(tmp);
        return SHARDLM_ENOMEM;
    }
    int rc = tok_load_numeric(g, path, "tokenizer.ggml.scores", t->n, 0.0, tmp);
    for (int32_t i = 0; rc == SHARDLM_OK && i < t->n; i++) t->score[i] = (float)tmp[i];
    if (rc == SHARDLM_OK) rc = tok_load_numeric(g, path, "tokenizer.ggml.token_type", t->n, TOK_NORMAL, tmp);
    for (int32_t i = 0; rc == SHARDLM_OK && i < t->n; i++) {
        int byte = parse_byte_piece(t->blob + t->off[i], tok_len(t, i));
        t->type[i] = tmp[i] >= 0 && tmp[i] <= TOK_BYTE ? (uint8_t)tmp[i] : TOK_UNDEFINED;
        /* Without token_type every piece defaults to normal; byte tokens are
         * then known by their spelling alone. */
        if (byte >= 0 && t->type[i] == TOK_NORMAL) t->type[i] = TOK_BYTE;
        t->byteval[i] = t->type[i] == TOK_BYTE ? (int16_t)byte : -1;
    }
    free(tmp);
    return rc;
}

/* Reads an optional special-token id, checking it is in range. */
static int tok_load_id(const shardlm_gguf *g, const char *path, const char *key, int32_t n, int32_t *id)
{
    uint64_t v;
    int rc = shardlm_gguf_get_u64(g, key, &v);
    if (rc == 1) return SHARDLM_OK;
    if (rc != SHARDLM_OK) return rc;
    if (v >= (uint64_t)n) {
        shardlm_err_set("%s: %s = %llu is outside the %d-token vocabulary", path, key, (unsigned long long)v, n);
        return SHARDLM_EINPUT;
    }
    *id = (int32_t)v;
    return SHARDLM_OK;
}

static int tok_check_model(const shardlm_gguf *g, const char *path)
{
    shardlm_gguf_str m;
    int rc = shardlm_gguf_get_str(g, "tokenizer.ggml.model", &m);
    if (rc == 1) {
        shardlm_err_set("%s: no tokenizer (tokenizer.ggml.model is missing)", path);
        return SHARDLM_EINPUT;
    }
    if (rc != SHARDLM_OK) return rc;
    if (m.len != 5 || memcmp(m.ptr, "llama", 5) != 0) {
        shardlm_err_set("%s: tokenizer.ggml.model is '%.*s'; only 'llama' (SentencePiece) is supported", path,
                        (int)(m.len > 64 ? 64 : m.len), m.ptr);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

static int tok_load_specials(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    t->bos = t->n > 1 ? 1 : 0;
    t->eos = t->n > 2 ? 2 : 0;
    t->unk = 0;
    t->add_space_prefix = 1;
    int rc = tok_load_id(g, path, "tokenizer.ggml.bos_token_id", t->n, &t->bos);
    if (rc == SHARDLM_OK) rc = tok_load_id(g, path, "tokenizer.ggml.eos_token_id", t->n, &t->eos);
    if (rc == SHARDLM_OK) rc = tok_load_id(g, path, "tokenizer.ggml.unknown_token_id", t->n, &t->unk);
    if (rc != SHARDLM_OK) return rc;
    int asp;
    rc = shardlm_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &asp);
    if (rc == SHARDLM_OK) t->add_space_prefix = asp != 0;
    return rc == 1 ? SHARDLM_OK : rc;
}

static void tok_index(shardlm_tokenizer *t)
{
    char name[8];
    for (int b = 0; b < 256; b++) {
        snprintf(name, sizeof name, "<0x%02X>", b);
        int32_t id = tok_find(t, name, 6);
        t->byte_id[b] = id >= 0 && t->byteval[id] == b ? id : -1;
    }
    t->max_len = 0;
    for (int32_t id = 0; id < t->n; id++)
        if (tok_mergeable(t, id) && tok_len(t, id) > t->max_len) t->max_len = (uint32_t)tok_len(t, id);
}

int shardlm_tokenizer_from_gguf(const shardlm_gguf *g, shardlm_tokenizer **out)
{
    *out = NULL;
    const char *path = shardlm_gguf_path(g);
    int rc = tok_check_model(g, path);
    if (rc != SHARDLM_OK) return rc;
    shardlm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return SHARDLM_ENOMEM;
    rc = tok_load_pieces(t, g, path);
    if (rc == SHARDLM_OK) rc = tok_load_scores_types(t, g, path);
    if (rc == SHARDLM_OK) rc = tok_load_specials(t, g, path);
    if (rc == SHARDLM_OK) rc = tok_build_table(t);
    if (rc != SHARDLM_OK) {
        if (rc == SHARDLM_ENOMEM) shardlm_err_set("%s: out of memory loading the tokenizer", path);
        shardlm_tokenizer_free(t);
        return rc;
    }
    tok_index(t);
    *out = t;
    return SHARDLM_OK;
}

void shardlm_tokenizer_free(shardlm_tokenizer *t)
{
    if (!t) return;
    free(t->blob);
    free(t->off);
    free(t->score);
    free(t->type);
    free(t->byteval);
    free(t->slot);
    free(t);
}

int32_t shardlm_tokenizer_n_vocab(const shardlm_tokenizer *t) { return t->n; }
int32_t shardlm_tokenizer_bos(const shardlm_tokenizer *t) { return t->bos; }
int32_t shardlm_tokenizer_eos(const shardlm_tokenizer *t) { return t->eos; }

const char *shardlm_tokenizer_piece(const shardlm_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = tok_len(t, id);
    return t->blob + t->off[id];
}

/* ---- encoding ----
 * Symbols are a doubly linked list over one normalized buffer, so a pair's
 * text is always contiguous and is looked up without copying. Candidate
 * pairs sit in a binary max-heap keyed by (score, -left position); stale
 * entries (a side already merged away) are skipped when popped. Each merge
 * pushes at most two new pairs, so for n characters the heap sees O(n)
 * entries and encoding costs O(n log n) heap work plus one hash lookup of at
 * most max_len bytes per candidate pair. */

typedef struct {
    uint32_t start, len;
    int32_t prev, next;
} tok_sym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t len; /* combined length when pushed; detects stale entries */
} tok_pair;

typedef struct {
    tok_pair *v;
    size_t n, cap;
} tok_heap;

static int pair_before(const tok_pair *a, const tok_pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(tok_heap *h, tok_pair p)
{
    size_t i = h->n++; /* capacity is reserved up front: no growth needed */
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&p, &h->v[up])) break;
        h->v[i] = h->v[up];
        i = up;
    }
    h->v[i] = p;
}

static tok_pair heap_pop(tok_heap *h)
{
    tok_pair top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && pair_before(&h->v[c + 1], &h->v[c])) c++;
        if (!pair_before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

typedef struct {
    const shardlm_tokenizer *t;
    const char *buf;
    tok_sym *sym;
    tok_heap heap;
} tok_enc;

static void enc_try_pair(tok_enc *e, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) return;
    uint32_t len = e->sym[left].len + e->sym[right].len;
    if (len > e->t->max_len) return;
    int32_t id = tok_find_mergeable(e->t, e->buf + e->sym[left].start, len);
    if (id < 0) return;
    heap_push(&e->heap, (tok_pair){e->t->score[id], left, right, len});
}

static void enc_merge_all(tok_enc *e)
{
    while (e->heap.n) {
        tok_pair p = heap_pop(&e->heap);
        tok_sym *l = &e->sym[p.left], *r = &e->sym[p.right];
        if (l->len == 0 || r->len == 0 || l->next != p.right || l->len + r->len != p.len) continue;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) e->sym[r->next].prev = p.left;
        enc_try_pair(e, l->prev, p.left);
        enc_try_pair(e, p.left, l->next);
    }
}

/* Length of the valid UTF-8 character at s (n bytes left), or 1 for a byte
 * that does not start one, so malformed input degrades to single bytes. */
static uint32_t utf8_char_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    uint32_t need = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (need <= 1 || need > n) return 1;
    unsigned lo = 0x80, hi = 0xBF; /* the second byte's range excludes overlongs and surrogates */
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    if (s[1] < lo || s[1] > hi) return 1;
    for (uint32_t i = 2; i < need; i++)
        if ((s[i] & 0xC0) != 0x80) return 1;
    return need;
}

/* The dummy prefix plus the text, every ' ' spelled "▁" (3 bytes). */
static char *enc_normalize(const shardlm_tokenizer *t, const char *text, size_t len, size_t *out_len)
{
    if (len >= INT32_MAX / 3 - 1) return NULL; /* offsets and symbol ids are 32-bit */
    char *buf = malloc(3 * (len + 1));
    if (!buf) return NULL;
    size_t n = 0;
    for (size_t i = (t->add_space_prefix ? 0 : 1); i <= len; i++) {
        char c = i == 0 ? ' ' : text[i - 1];
        if (c == ' ') {
            memcpy(buf + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            buf[n++] = c;
        }
    }
    *out_len = n;
    return buf;
}

static void enc_emit(size_t *n, int32_t *out, size_t cap, int32_t id)
{
    if (*n < cap) out[*n] = id;
    (*n)++;
}

static void enc_emit_symbol(const tok_enc *e, const tok_sym *s, size_t *n, int32_t *out, size_t cap)
{
    const shardlm_tokenizer *t = e->t;
    int32_t id = tok_find_mergeable(t, e->buf + s->start, s->len);
    if (id >= 0) {
        enc_emit(n, out, cap, id);
        return;
    }
    for (uint32_t i = 0; i < s->len; i++) {
        int32_t b = t->byte_id[(unsigned char)e->buf[s->start + i]];
        enc_emit(n, out, cap, b >= 0 ? b : t->unk);
    }
}

static int enc_run(tok_enc *e, size_t blen, size_t *n, int32_t *out, size_t cap)
{
    e->sym = malloc(blen * sizeof *e->sym);
    e->heap.cap = 3 * blen + 1;
    e->heap.v = malloc(e->heap.cap * sizeof *e->heap.v);
    if (!e->sym || !e->heap.v) return SHARDLM_ENOMEM;
    int32_t ns = 0;
    for (size_t at = 0; at < blen; ns++) {
        uint32_t cl = utf8_char_len((const unsigned char *)e->buf + at, blen - at);
        e->sym[ns] = (tok_sym){(uint32_t)at, cl, ns - 1, -1};
        if (ns > 0) e->sym[ns - 1].next = ns;
        at += cl;
    }
    for (int32_t i = 0; i + 1 < ns; i++) enc_try_pair(e, i, i + 1);
    enc_merge_all(e);
    for (int32_t i = 0; i >= 0 && i < ns; i = e->sym[i].next) enc_emit_symbol(e, &e->sym[i], n, out, cap);
    return SHARDLM_OK;
}

int shardlm_tokenizer_encode(const shardlm_tokenizer *t, const char *text, size_t len, int add_bos,
                             int32_t *out, size_t cap, size_t *n_out)
{
    size_t n = 0;
    *n_out = 0;
    if (add_bos) enc_emit(&n, out, cap, t->bos);
    if (len == 0) {
        *n_out = n;
        return SHARDLM_OK;
    }
    tok_enc e = {.t = t};
    size_t blen;
    char *buf = enc_normalize(t, text, len, &blen);
    if (!buf) {
        shardlm_err_set("tokenizer: cannot encode %zu bytes of text (too long, or out of memory)", len);
        return SHARDLM_ENOMEM;
    }
    e.buf = buf;
    int rc = enc_run(&e, blen, &n, out, cap);
    free(e.sym);
    free(e.heap.v);
    free(buf);
    if (rc != SHARDLM_OK) {
        shardlm_err_set("tokenizer: cannot encode %zu bytes of text (too long, or out of memory)", len);
        return rc;
    }
    *n_out = n;
    return SHARDLM_OK;
}

/* ---- streaming decoding ---- */

typedef struct {
    char *buf;
    size_t cap, n;
} detok_out;

/* Appends whole units only, so a short buffer never gets half a character. */
static void out_put(detok_out *o, const void *p, size_t k)
{
    if (o->n + k > o->cap) {
        o->cap = o->n; /* full: drop the rest rather than split a character */
        return;
    }
    memcpy(o->buf + o->n, p, k);
    o->n += k;
}

static void out_replacement(detok_out *o) { out_put(o, "\xef\xbf\xbd", 3); }

/* Copies piece text with "▁" turned into ' ' and any invalid UTF-8 (only a
 * corrupt vocabulary could hold some) turned into U+FFFD. */
static void out_piece(detok_out *o, const char *s, size_t n, int drop_space)
{
    size_t i = 0;
    if (drop_space) {
        if (n >= 3 && memcmp(s, "\xe2\x96\x81", 3) == 0) i = 3;
        else if (n >= 1 && s[0] == ' ') i = 1;
    }
    while (i < n) {
        uint32_t cl = utf8_char_len((const unsigned char *)s + i, n - i);
        if (cl == 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0) out_put(o, " ", 1);
        else if (cl == 1 && (unsigned char)s[i] >= 0x80) out_replacement(o);
        else out_put(o, s + i, cl);
        i += cl;
    }
}

/* Expected total length of a sequence starting with lead byte c, or 0. */
static int utf8_need(unsigned c)
{
    return c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
}

/* Whether byte b may follow the pending bytes (checks the second byte's
 * narrower ranges that exclude overlongs, surrogates and > U+10FFFF). */
static int utf8_accepts(const shardlm_detok *d, unsigned b)
{
    if ((b & 0xC0) != 0x80) return 0;
    if (d->n_pend != 1) return 1;
    unsigned c = d->pend[0];
    if (c == 0xE0) return b >= 0xA0;
    if (c == 0xED) return b <= 0x9F;
    if (c == 0xF0) return b >= 0x90;
    if (c == 0xF4) return b <= 0x8F;
    return 1;
}

static void detok_flush_pending(shardlm_detok *d, detok_out *o)
{
    if (d->n_pend) out_replacement(o);
    d->n_pend = 0;
}

static void detok_byte(shardlm_detok *d, detok_out *o, unsigned b)
{
    if (d->n_pend) {
        if (utf8_accepts(d, b)) {
            d->pend[d->n_pend++] = (unsigned char)b;
            if (d->n_pend == utf8_need(d->pend[0])) {
                out_put(o, d->pend, (size_t)d->n_pend);
                d->n_pend = 0;
            }
            return;
        }
        detok_flush_pending(d, o); /* b is then judged on its own */
    }
    if (b < 0x80) {
        /* Like run.c's safe_printf: stray control bytes are not printed. */
        if (b >= 0x20 || b == '\t' || b == '\n' || b == '\r') out_put(o, &(char){(char)b}, 1);
    } else if (utf8_need(b)) {
        d->pend[0] = (unsigned char)b;
        d->n_pend = 1;
    } else {
        out_replacement(o);
    }
}

void shardlm_detok_init(shardlm_detok *d)
{
    memset(d, 0, sizeof *d);
    d->prev = -1;
}

size_t shardlm_detok_push(const shardlm_tokenizer *t, shardlm_detok *d, int32_t id, char *buf, size_t cap)
{
    detok_out o = {buf, cap, 0};
    int32_t prev = d->prev;
    d->prev = id;
    if (id < 0 || id >= t->n) return 0;
    if (t->byteval[id] >= 0) {
        detok_byte(d, &o, (unsigned)t->byteval[id]);
        return o.n;
    }
    if (t->type[id] == TOK_CONTROL) return 0;
    detok_flush_pending(d, &o);
    out_piece(&o, t->blob + t->off[id], tok_len(t, id), prev == t->bos);
    return o.n;
}

size_t shardlm_detok_flush(shardlm_detok *d, char *buf, size_t cap)
{
    detok_out o = {buf, cap, 0};
    detok_flush_pending(d, &o);
    return o.n;
}

/* ---- control tokens written as text (chat templates) ---- */

/* The longest control token whose text starts at s, or -1. */
static int32_t special_at(const shardlm_tokenizer *t, const char *s, size_t n)
{
    int32_t best = -1;
    size_t best_len = 0;
    for (int32_t id = 0; id < t->n; id++) {
        size_t k = tok_len(t, id);
        if (t->type[id] != TOK_CONTROL || k < 2 || k > n || k <= best_len) continue;
        if (memcmp(s, t->blob + t->off[id], k) == 0) best = id, best_len = k;
    }
    return best;
}

int shardlm_tokenizer_encode_special(const shardlm_tokenizer *t, const char *text, size_t len, int add_bos,
                                     int32_t *out, size_t cap, size_t *n_out)
{
    size_t n = 0, start = 0;
    if (add_bos) enc_emit(&n, out, cap, t->bos);
    for (size_t i = 0; i <= len; i++) {
        int32_t sp = i < len && (text[i] == '<' || text[i] == '[') ? special_at(t, text + i, len - i) : -1;
        if (sp < 0 && i < len) continue;
        size_t got = 0;
        /* each stretch of plain text is encoded as SentencePiece encodes a
         * fresh string, dummy-prefix space included (as llama.cpp does) */
        int rc = shardlm_tokenizer_encode(t, text + start, i - start, 0, n < cap ? out + n : NULL, n < cap ? cap - n : 0,
                                          &got);
        if (rc) return rc;
        n += got;
        if (sp >= 0) {
            enc_emit(&n, out, cap, sp);
            i += tok_len(t, sp) - 1;
            start = i + 1;
        }
    }
    *n_out = n;
    return SHARDLM_OK;
}
