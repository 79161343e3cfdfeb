/* tokenizer.c - loading a GGUF tokenizer (tokenizer.ggml.model "llama",
 * SentencePiece, or "gpt2", byte-level BPE in tokenizer_bpe.c): the pieces,
 * their types, the special ids and flags, and the key -> id table; and the
 * SentencePiece encoder (score-ordered pair merges with <0xNN> byte
 * fallback). */
#include "shardlm_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "tokenizer_internal.h"
#include "unicode.h"

/* ---- key -> id hash table ---- */

static uint32_t tok_hash(const char *s, size_t n)
{
    return (uint32_t)shardlm_fnv1a64(SHARDLM_FNV_INIT, s, n);
}

int32_t shardlm_tok_find(const shardlm_tokenizer *t, const char *s, size_t n)
{
    for (uint32_t h = tok_hash(s, n) & t->slot_mask;; h = (h + 1) & t->slot_mask) {
        int32_t id = t->slot[h];
        if (id < 0) return -1;
        if (tok_key_len(t, id) == n && memcmp(t->key + t->koff[id], s, n) == 0) return id;
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
    int32_t id = shardlm_tok_find(t, s, n);
    return id >= 0 && tok_mergeable(t, id) ? id : -1;
}

/* Keyed tokens into the table. On duplicate keys the first id wins, as in
 * SentencePiece; byte-level BPE vocabularies (which llama.cpp refuses to
 * load with duplicates) get an error instead. */
static int tok_build_table(shardlm_tokenizer *t, const char *path)
{
    uint32_t cap = 16;
    while (cap < (uint32_t)t->n * 2u) cap <<= 1;
    t->slot = malloc(cap * sizeof *t->slot);
    if (!t->slot) return SHARDLM_ENOMEM;
    memset(t->slot, 0xff, cap * sizeof *t->slot);
    t->slot_mask = cap - 1;
    for (int32_t id = 0; id < t->n; id++) {
        if (!(t->attr[id] & ATTR_KEYED)) continue;
        const char *s = t->key + t->koff[id];
        size_t n = tok_key_len(t, id);
        int32_t dup = shardlm_tok_find(t, s, n);
        if (dup >= 0 && t->kind == TOKZ_BPE) {
            shardlm_err_set("%s: tokenizer.ggml.tokens[%d] '%.*s' repeats token %d", path, id,
                            (int)(tok_len(t, id) > 64 ? 64 : tok_len(t, id)), tok_text(t, id), dup);
            return SHARDLM_EINPUT;
        }
        if (dup >= 0) continue;
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
    t->attr = calloc((size_t)t->n, 1);
    t->byteval = malloc((size_t)t->n * sizeof *t->byteval);
    if (!tmp || !t->score || !t->type || !t->attr || !t->byteval) {
        free(tmp);
        return SHARDLM_ENOMEM;
    }
    int rc = tok_load_numeric(g, path, "tokenizer.ggml.scores", t->n, 0.0, tmp);
    for (int32_t i = 0; rc == SHARDLM_OK && i < t->n; i++) t->score[i] = (float)tmp[i];
    if (rc == SHARDLM_OK) rc = tok_load_numeric(g, path, "tokenizer.ggml.token_type", t->n, TOK_NORMAL, tmp);
    for (int32_t i = 0; rc == SHARDLM_OK && i < t->n; i++) {
        int byte = parse_byte_piece(t->blob + t->off[i], tok_len(t, i));
        t->type[i] = tmp[i] >= 0 && tmp[i] <= TOK_BYTE ? (uint8_t)tmp[i] : TOK_UNDEFINED;
        /* Without token_type every SentencePiece piece defaults to normal;
         * byte tokens are then known by their spelling alone. */
        if (byte >= 0 && t->type[i] == TOK_NORMAL && t->kind == TOKZ_SPM) t->type[i] = TOK_BYTE;
        t->byteval[i] = t->type[i] == TOK_BYTE ? (int16_t)byte : -1;
    }
    free(tmp);
    return rc;
}

int shardlm_tok_load_id(const shardlm_gguf *g, const char *path, const char *key, int32_t n, int32_t *id)
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

static int tok_check_model(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    shardlm_gguf_str m;
    int rc = shardlm_gguf_get_str(g, "tokenizer.ggml.model", &m);
    if (rc == 1) {
        shardlm_err_set("%s: no tokenizer (tokenizer.ggml.model is missing)", path);
        return SHARDLM_EINPUT;
    }
    if (rc != SHARDLM_OK) return rc;
    if (m.len == 5 && memcmp(m.ptr, "llama", 5) == 0) t->kind = TOKZ_SPM;
    else if (m.len == 4 && memcmp(m.ptr, "gpt2", 4) == 0) t->kind = TOKZ_BPE;
    else {
        shardlm_err_set("%s: tokenizer.ggml.model is '%.*s'; supported: 'llama' (SentencePiece), 'gpt2' "
                        "(byte-level BPE)", path, (int)(m.len > 64 ? 64 : m.len), m.ptr);
        return SHARDLM_EINPUT;
    }
    snprintf(t->model, sizeof t->model, "%.*s", (int)m.len, m.ptr);
    return SHARDLM_OK;
}

static int tok_load_flag(const shardlm_gguf *g, const char *key, int *v)
{
    int b, rc = shardlm_gguf_get_bool(g, key, &b);
    if (rc == SHARDLM_OK) *v = b != 0;
    return rc == 1 ? SHARDLM_OK : rc;
}

/* The special ids and the add_* flags, with llama.cpp's defaults: for
 * SentencePiece BOS 1, EOS 2, unknown 0, BOS added and a dummy prefix; for
 * BPE no default ids (llama.cpp falls back to id 11 for BOS and EOS, which
 * would make a comma end generation in GPT-2's vocabulary), BOS added only
 * where the pre-tokenizer says so, no prefix. */
static int tok_load_specials(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    int spm = t->kind == TOKZ_SPM;
    t->bos = spm && t->n > 1 ? 1 : -1;
    t->eos = spm && t->n > 2 ? 2 : -1;
    t->unk = spm ? 0 : -1;
    t->eot = t->eom = -1;
    t->add_bos = spm ? 1 : shardlm_pretok_add_bos(t->pretok);
    t->add_eos = 0;
    t->add_space_prefix = spm;
    int rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.bos_token_id", t->n, &t->bos);
    if (!rc) rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.eos_token_id", t->n, &t->eos);
    if (!rc) rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.unknown_token_id", t->n, &t->unk);
    if (!rc) rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.eot_token_id", t->n, &t->eot);
    if (!rc) rc = shardlm_tok_load_id(g, path, "tokenizer.ggml.eom_token_id", t->n, &t->eom);
    if (!rc) rc = tok_load_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    if (!rc) rc = tok_load_flag(g, "tokenizer.ggml.add_eos_token", &t->add_eos);
    if (!rc) rc = tok_load_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);
    if (rc) return rc;
    if ((t->add_bos && t->bos < 0) || (t->add_eos && t->eos < 0)) {
        shardlm_err_set("%s: the tokenizer adds %s (tokenizer.ggml.%s) but has no tokenizer.ggml.%s", path,
                        t->bos < 0 ? "BOS" : "EOS", t->bos < 0 ? "add_bos_token" : "add_eos_token",
                        t->bos < 0 ? "bos_token_id" : "eos_token_id");
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

/* SentencePiece: the key is the piece text; the <0xNN> byte tokens, the
 * longest mergeable piece. */
static void tok_index_spm(shardlm_tokenizer *t)
{
    t->key = t->blob;
    t->koff = t->off;
    for (int32_t id = 0; id < t->n; id++) {
        t->attr[id] |= ATTR_KEYED;
        if (tok_len(t, id) > t->max_out) t->max_out = (uint32_t)tok_len(t, id);
    }
}

static void tok_index_spm_bytes(shardlm_tokenizer *t)
{
    char name[8];
    for (int b = 0; b < 256; b++) {
        snprintf(name, sizeof name, "<0x%02X>", b);
        int32_t id = shardlm_tok_find(t, name, 6);
        t->byte_id[b] = id >= 0 && t->byteval[id] == b ? id : -1;
    }
    t->max_len = 0;
    for (int32_t id = 0; id < t->n; id++)
        if (tok_mergeable(t, id) && tok_len(t, id) > t->max_len) t->max_len = (uint32_t)tok_len(t, id);
}

static int tok_load(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path)
{
    int rc = tok_check_model(t, g, path);
    if (!rc) rc = tok_load_pieces(t, g, path);
    if (!rc) rc = tok_load_scores_types(t, g, path);
    if (!rc && t->kind == TOKZ_BPE) rc = shardlm_tok_load_bpe(t, g, path);
    if (!rc && t->kind == TOKZ_SPM) {
        snprintf(t->pre, sizeof t->pre, "default");
        tok_index_spm(t);
    }
    if (!rc) rc = tok_load_specials(t, g, path);
    if (!rc) rc = tok_build_table(t, path);
    if (!rc && t->kind == TOKZ_BPE) rc = shardlm_tok_load_bpe_merges(t, g, path);
    if (!rc && t->kind == TOKZ_SPM) tok_index_spm_bytes(t);
    if (!rc) rc = shardlm_tok_load_special(t, g, path);
    return rc;
}

int shardlm_tokenizer_from_gguf(const shardlm_gguf *g, shardlm_tokenizer **out)
{
    *out = NULL;
    const char *path = shardlm_gguf_path(g);
    shardlm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return SHARDLM_ENOMEM;
    int rc = tok_load(t, g, path);
    if (rc != SHARDLM_OK) {
        if (rc == SHARDLM_ENOMEM) shardlm_err_set("%s: out of memory loading the tokenizer", path);
        shardlm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return SHARDLM_OK;
}

void shardlm_tokenizer_free(shardlm_tokenizer *t)
{
    if (!t) return;
    shardlm_tok_free_bpe(t);
    shardlm_tok_free_special(t);
    free(t->blob);
    free(t->off);
    free(t->score);
    free(t->type);
    free(t->attr);
    free(t->byteval);
    free(t->slot);
    free(t);
}

int32_t shardlm_tokenizer_n_vocab(const shardlm_tokenizer *t) { return t->n; }
int32_t shardlm_tokenizer_bos(const shardlm_tokenizer *t) { return t->bos; }
int32_t shardlm_tokenizer_eos(const shardlm_tokenizer *t) { return t->eos; }
const char *shardlm_tokenizer_model(const shardlm_tokenizer *t) { return t->model; }
const char *shardlm_tokenizer_pre(const shardlm_tokenizer *t) { return t->pre; }

int shardlm_tokenizer_add_special(const shardlm_tokenizer *t)
{
    return (t->add_bos ? SHARDLM_TOK_ADD_BOS : 0) | (t->add_eos ? SHARDLM_TOK_ADD_EOS : 0);
}

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
static char *enc_normalize(int prefix, const char *text, size_t len, size_t *out_len)
{
    if (len >= INT32_MAX / 3 - 1) return NULL; /* offsets and symbol ids are 32-bit */
    char *buf = malloc(3 * (len + 1));
    if (!buf) return NULL;
    size_t n = 0;
    for (size_t i = prefix ? 0 : 1; i <= len; i++) {
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

static void enc_emit_symbol(const tok_enc *e, const tok_sym *s, size_t *n, int32_t *out, size_t cap)
{
    const shardlm_tokenizer *t = e->t;
    int32_t id = tok_find_mergeable(t, e->buf + s->start, s->len);
    if (id >= 0) {
        shardlm_tok_emit(n, out, cap, id);
        return;
    }
    for (uint32_t i = 0; i < s->len; i++) {
        int32_t b = t->byte_id[(unsigned char)e->buf[s->start + i]];
        if (b >= 0 || t->unk >= 0) shardlm_tok_emit(n, out, cap, b >= 0 ? b : t->unk);
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

int shardlm_tok_encode_spm(const shardlm_tokenizer *t, const char *text, size_t len, int prefix, int32_t *out,
                           size_t cap, size_t *n)
{
    if (len == 0) return SHARDLM_OK;
    tok_enc e = {.t = t};
    size_t blen;
    char *buf = enc_normalize(prefix, text, len, &blen);
    int rc = buf ? SHARDLM_OK : SHARDLM_ENOMEM;
    e.buf = buf;
    if (!rc) rc = enc_run(&e, blen, n, out, cap);
    free(e.sym);
    free(e.heap.v);
    free(buf);
    if (rc != SHARDLM_OK) shardlm_err_set("tokenizer: cannot encode %zu bytes of text (too long, or out of memory)", len);
    return rc;
}

static int tok_encode(const shardlm_tokenizer *t, const char *text, size_t len, int add, int all, int32_t *out,
                      size_t cap, size_t *n_out)
{
    size_t n = 0;
    *n_out = 0;
    if ((add & SHARDLM_TOK_ADD_BOS) && t->bos >= 0) shardlm_tok_emit(&n, out, cap, t->bos);
    int rc = shardlm_tok_encode_parts(t, text, len, all, out, cap, &n);
    if (rc) return rc;
    if ((add & SHARDLM_TOK_ADD_EOS) && t->eos >= 0) shardlm_tok_emit(&n, out, cap, t->eos);
    *n_out = n;
    return SHARDLM_OK;
}

int shardlm_tokenizer_encode(const shardlm_tokenizer *t, const char *text, size_t len, int add, int32_t *out,
                             size_t cap, size_t *n_out)
{
    return tok_encode(t, text, len, add, 0, out, cap, n_out);
}

int shardlm_tokenizer_encode_special(const shardlm_tokenizer *t, const char *text, size_t len, int add,
                                     int32_t *out, size_t cap, size_t *n_out)
{
    return tok_encode(t, text, len, add, 1, out, cap, n_out);
}

int shardlm_tokenizer_encode_alloc(const shardlm_tokenizer *t, const char *text, size_t len, int add, int special,
                                   int32_t **out, size_t *n_out)
{
    size_t cap = len + 3;
    *out = NULL;
    for (;;) {
        int32_t *ids = realloc(*out, cap * sizeof *ids);
        if (!ids) {
            free(*out);
            *out = NULL;
            shardlm_err_set("tokenizer: out of memory encoding %zu bytes of text", len);
            return SHARDLM_ENOMEM;
        }
        *out = ids;
        int rc = tok_encode(t, text, len, add, special, ids, cap, n_out);
        if (rc || *n_out <= cap) {
            if (rc) free(*out), *out = NULL;
            return rc;
        }
        cap = *n_out;
    }
}
