/* tokenizer_bpe.c - GPT-2-style byte-level BPE (tokenizer.ggml.model =
 * "gpt2"): the pre-tokenizer splits the text into words (pretok.c), and each
 * word's bytes are merged pair by pair in the rank order of
 * tokenizer.ggml.merges, as llama.cpp's llm_tokenizer_bpe_session does.
 *
 * GGUF token text spells each byte as one codepoint (GPT-2's
 * bytes_to_unicode: the printable Latin-1 bytes as themselves, the other 68
 * as U+0100..U+0143). At load every token's text is mapped back to the
 * bytes it stands for, so encoding works on the raw bytes with no
 * re-spelling: a word's symbols start as its single bytes, and the merge
 * table is keyed by pairs of token ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "tokenizer_internal.h"
#include "unicode.h"

/* ---- bytes_to_unicode ---- */

static int byte_is_printable(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

/* inv[cp]: the byte codepoint cp spells, or -1 (cp < BPE_N_CP). */
#define BPE_N_CP (256 + 68)

static void build_inv(int16_t inv[BPE_N_CP])
{
    int k = 0;
    for (int cp = 0; cp < BPE_N_CP; cp++) inv[cp] = -1;
    for (int b = 0; b < 256; b++) {
        if (byte_is_printable(b)) inv[b] = (int16_t)b;
        else inv[256 + k++] = (int16_t)b;
    }
}

/* Maps text to the bytes it spells into dst (at most n bytes); returns the
 * byte count, or -1 when a codepoint spells no byte. */
static long unmap_text(const char *s, size_t n, const int16_t *inv, char *dst)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp, l = shardlm_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if ((cp == 0xFFFD && l == 1 && (unsigned char)s[i] >= 0x80) || cp >= BPE_N_CP || inv[cp] < 0) return -1;
        dst[k++] = (char)inv[cp];
        i += l;
    }
    return (long)k;
}

/* ---- loading ---- */

static int load_pre(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    shardlm_gguf_str s = {"default", 7};
    int rc = shardlm_gguf_get_str(g, "tokenizer.ggml.pre", &s);
    if (rc == 1) s = (shardlm_gguf_str){"default", 7}; /* llama.cpp: "missing pre-tokenizer type, using: 'default'" */
    else if (rc != SHARDLM_OK) return rc;
    t->pretok = shardlm_pretok_find(s.ptr, s.len);
    if (!t->pretok) {
        char names[512];
        shardlm_pretok_names(names, sizeof names);
        shardlm_err_set("%s: tokenizer.ggml.pre is '%.*s', which this tokenizer does not know (supported: %s)", path,
                        (int)(s.len > 64 ? 64 : s.len), s.ptr, names);
        return SHARDLM_EINPUT;
    }
    snprintf(t->pre, sizeof t->pre, "%.*s", (int)s.len, s.ptr);
    return SHARDLM_OK;
}

/* Each token's key: the bytes its text spells. Text that spells no bytes
 * (a control token written with other characters) gets no key. */
static int load_keys(shardlm_tokenizer *t)
{
    int16_t inv[BPE_N_CP];
    build_inv(inv);
    t->key = malloc(t->off[t->n] + 1); /* a key is never longer than its text */
    t->koff = malloc(((size_t)t->n + 1) * sizeof *t->koff);
    if (!t->key || !t->koff) return SHARDLM_ENOMEM;
    uint32_t at = 0;
    t->max_out = 0;
    for (int32_t id = 0; id < t->n; id++) {
        t->koff[id] = at;
        long k = unmap_text(tok_text(t, id), tok_len(t, id), inv, t->key + at);
        if (k > 0) {
            at += (uint32_t)k;
            t->attr[id] |= ATTR_KEYED;
        }
        t->key[at++] = 0;
        size_t out = t->type[id] == TOK_NORMAL && k >= 0 ? (size_t)k : tok_len(t, id);
        if (out > t->max_out) t->max_out = (uint32_t)out;
    }
    t->koff[t->n] = at;
    return SHARDLM_OK;
}

static uint64_t pair_hash(uint64_t pair) { return (pair * 0x9E3779B97F4A7C15ULL) >> 17; }

static const bpe_merge *merge_find(const shardlm_tokenizer *t, int32_t left, int32_t right)
{
    uint64_t pair = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (uint64_t h = pair_hash(pair) & t->merge_mask;; h = (h + 1) & t->merge_mask) {
        const bpe_merge *m = &t->merges[h];
        if (m->pair == pair) return m;
        if (m->pair == BPE_NO_PAIR) return NULL;
    }
}

static int merge_error(const char *path, uint64_t i, shardlm_gguf_str s, const char *why)
{
    shardlm_err_set("%s: tokenizer.ggml.merges[%llu] '%.*s' %s", path, (unsigned long long)i,
                    (int)(s.len > 80 ? 80 : s.len), s.ptr, why);
    return SHARDLM_EINPUT;
}

/* The token whose GGUF text is s[0..n) spelled as bytes, or -1. */
static int32_t find_spelled(const shardlm_tokenizer *t, const char *s, size_t n, const int16_t *inv, char *scratch)
{
    long k = unmap_text(s, n, inv, scratch);
    return k > 0 ? shardlm_tok_find(t, scratch, (size_t)k) : -1;
}

static int add_merge(shardlm_tokenizer *t, const char *path, uint64_t i, shardlm_gguf_str s, const int16_t *inv,
                     char *scratch)
{
    const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL; /* as llama.cpp: find(' ', 1) */
    if (!sp) return merge_error(path, i, s, "is not two tokens separated by a space");
    size_t ll = (size_t)(sp - s.ptr), rl = s.len - ll - 1;
    int32_t left = find_spelled(t, s.ptr, ll, inv, scratch), right = find_spelled(t, sp + 1, rl, inv, scratch);
    if (left < 0 || right < 0) {
        shardlm_err_set("%s: tokenizer.ggml.merges[%llu] '%.*s' names '%.*s', which is not in tokenizer.ggml.tokens",
                        path, (unsigned long long)i, (int)(s.len > 80 ? 80 : s.len), s.ptr,
                        (int)(left < 0 ? (ll > 80 ? 80 : ll) : (rl > 80 ? 80 : rl)), left < 0 ? s.ptr : sp + 1);
        return SHARDLM_EINPUT;
    }
    size_t kl = tok_key_len(t, left), kr = tok_key_len(t, right);
    memcpy(scratch, t->key + t->koff[left], kl);
    memcpy(scratch + kl, t->key + t->koff[right], kr);
    int32_t id = shardlm_tok_find(t, scratch, kl + kr);
    if (id < 0) return merge_error(path, i, s, "makes a token that is not in tokenizer.ggml.tokens");
    uint64_t pair = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint64_t h = pair_hash(pair) & t->merge_mask;
    while (t->merges[h].pair != BPE_NO_PAIR) {
        if (t->merges[h].pair == pair) return SHARDLM_OK; /* a repeated pair keeps its first rank, as llama.cpp */
        h = (h + 1) & t->merge_mask;
    }
    t->merges[h] = (bpe_merge){pair, (int32_t)i, id};
    return SHARDLM_OK;
}

static int load_merges(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    const char *k = "tokenizer.ggml.merges";
    shardlm_gguf_vtype elem;
    uint64_t n;
    const void *data;
    int rc = shardlm_gguf_get_arr(g, k, &elem, &n, &data);
    if (rc == 1) {
        shardlm_err_set("%s: %s is missing (a gpt2 tokenizer needs its merges)", path, k);
        return SHARDLM_EINPUT;
    }
    if (rc != SHARDLM_OK) return rc;
    if (elem != SHARDLM_GGUF_STRING || n > INT32_MAX) {
        shardlm_err_set("%s: %s is not an array of strings", path, k);
        return SHARDLM_EINPUT;
    }
    size_t max_text = 0;
    for (int32_t id = 0; id < t->n; id++)
        if (tok_len(t, id) > max_text) max_text = tok_len(t, id);
    int16_t inv[BPE_N_CP];
    build_inv(inv);
    uint64_t cap = 16;
    while (cap < n + n / 2) cap <<= 1; /* at most two thirds full */
    t->merges = malloc(cap * sizeof *t->merges);
    char *scratch = malloc(2 * max_text + 16);
    if (!t->merges || !scratch) {
        free(scratch);
        return SHARDLM_ENOMEM;
    }
    for (uint64_t h = 0; h < cap; h++) t->merges[h].pair = BPE_NO_PAIR;
    t->merge_mask = cap - 1;
    for (uint64_t i = 0; rc == SHARDLM_OK && i < n; i++) {
        shardlm_gguf_str s;
        rc = shardlm_gguf_arr_str(g, k, i, &s);
        if (rc == SHARDLM_OK && s.len > 2 * max_text + 1)
            rc = merge_error(path, i, s, "is longer than any two tokens");
        if (rc == SHARDLM_OK) rc = add_merge(t, path, i, s, inv, scratch);
    }
    free(scratch);
    return rc;
}

int shardlm_tok_load_bpe(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    int rc = load_pre(t, g, path);
    if (rc == SHARDLM_OK) rc = load_keys(t);
    return rc;
}

/* After the key table is built: the single-byte tokens and the merges. */
int shardlm_tok_load_bpe_merges(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = shardlm_tok_find(t, &c, 1);
    }
    return load_merges(t, g, path);
}

void shardlm_tok_free_bpe(shardlm_tokenizer *t)
{
    free(t->merges);
    if (t->key != t->blob) free(t->key);
    if (t->koff != t->off) free(t->koff);
}

/* ---- encoding ----
 * Per word, symbols form a linked list over the word's bytes; candidate
 * pairs sit in a binary min-heap on (rank, left position), as llama.cpp's
 * work queue; an entry whose sides have changed since it was pushed is
 * skipped. Each merge pushes at most two pairs, so a word of n bytes costs
 * O(n log n) whatever its length. */

typedef struct {
    uint32_t start, len;
    int32_t prev, next, id;
} bpe_sym;

typedef struct {
    int32_t rank, left, right, id; /* id: the merged token */
    uint32_t len;
} bpe_pair;

typedef struct {
    const shardlm_tokenizer *t;
    bpe_sym *sym;
    bpe_pair *heap;
    size_t cap, nh; /* symbols and heap entries allocated (3 per symbol), heap entries used */
    int32_t *out;
    size_t out_cap, n;
    int rc;
} bpe_enc;

static int pair_before(const bpe_pair *a, const bpe_pair *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_enc *e, bpe_pair p)
{
    size_t i = e->nh++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&p, &e->heap[up])) break;
        e->heap[i] = e->heap[up];
        i = up;
    }
    e->heap[i] = p;
}

static bpe_pair heap_pop(bpe_enc *e)
{
    bpe_pair top = e->heap[0], last = e->heap[--e->nh];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= e->nh) break;
        if (c + 1 < e->nh && pair_before(&e->heap[c + 1], &e->heap[c])) c++;
        if (!pair_before(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (e->nh) e->heap[i] = last;
    return top;
}

static void try_pair(bpe_enc *e, int32_t left, int32_t right)
{
    if (left < 0 || right < 0 || e->sym[left].id < 0 || e->sym[right].id < 0) return;
    const bpe_merge *m = merge_find(e->t, e->sym[left].id, e->sym[right].id);
    if (m) heap_push(e, (bpe_pair){m->rank, left, right, m->id, e->sym[left].len + e->sym[right].len});
}

static int reserve(bpe_enc *e, size_t n)
{
    if (n <= e->cap) return SHARDLM_OK;
    size_t cap = e->cap ? e->cap : 64;
    while (cap < n) cap *= 2;
    bpe_sym *s = realloc(e->sym, cap * sizeof *s);
    if (s) e->sym = s;
    bpe_pair *h = s ? realloc(e->heap, 3 * cap * sizeof *h) : NULL;
    if (h) e->heap = h;
    if (!s || !h) return SHARDLM_ENOMEM;
    e->cap = cap;
    return SHARDLM_OK;
}

static void bpe_merge_word(bpe_enc *e, uint32_t n)
{
    e->nh = 0;
    for (uint32_t i = 0; i + 1 < n; i++) try_pair(e, (int32_t)i, (int32_t)i + 1);
    while (e->nh) {
        bpe_pair p = heap_pop(e);
        bpe_sym *l = &e->sym[p.left], *r = &e->sym[p.right];
        if (l->len == 0 || r->len == 0 || l->next != p.right || l->len + r->len != p.len) continue;
        l->id = p.id;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) e->sym[r->next].prev = p.left;
        try_pair(e, l->prev, p.left);
        try_pair(e, p.left, l->next);
    }
}

static void bpe_word(void *ctx, const char *w, size_t n)
{
    bpe_enc *e = ctx;
    const shardlm_tokenizer *t = e->t;
    if (e->rc || n == 0) return;
    if (shardlm_pretok_ignore_merges(t->pretok) || n == 1) {
        int32_t id = shardlm_tok_find(t, w, n);
        if (id >= 0) {
            shardlm_tok_emit(&e->n, e->out, e->out_cap, id);
            return;
        }
    }
    if ((e->rc = reserve(e, n))) return;
    for (uint32_t i = 0; i < n; i++)
        e->sym[i] = (bpe_sym){i, 1, (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, t->byte_id[(unsigned char)w[i]]};
    bpe_merge_word(e, (uint32_t)n);
    /* A byte without a token of its own gives no token, as in llama.cpp
     * (the vocabulary's unknown token where it has one). */
    for (int32_t i = 0; i >= 0; i = e->sym[i].next) {
        int32_t id = e->sym[i].id >= 0 ? e->sym[i].id : t->unk;
        if (id >= 0) shardlm_tok_emit(&e->n, e->out, e->out_cap, id);
    }
}

int shardlm_tok_encode_bpe(const shardlm_tokenizer *t, const char *text, size_t len, int32_t *out, size_t cap,
                           size_t *n)
{
    bpe_enc e = {.t = t, .out = out, .out_cap = cap, .n = *n};
    int rc = shardlm_pretok_split(t->pretok, text, len, bpe_word, &e);
    if (rc == SHARDLM_OK) rc = e.rc;
    free(e.sym);
    free(e.heap);
    if (rc != SHARDLM_OK) {
        shardlm_err_set("tokenizer: cannot encode %zu bytes of text (too long, or out of memory)", len);
        return rc;
    }
    *n = e.n;
    return SHARDLM_OK;
}
