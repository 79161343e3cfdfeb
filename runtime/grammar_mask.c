/* grammar_mask.c - which tokens a grammar state allows next. The
 * vocabulary is sorted by bytes into a trie (pre-order arrays, built once
 * per model); a mask walks the trie from the state, stepping the machine
 * one byte per node and skipping a whole subtree at the first byte the
 * grammar refuses. Where the state loops on every byte below a node (the
 * inside of a JSON string: any character but '"', '\' and controls), the
 * node's whole subtree is allowed at once: each internal node records the
 * ASCII bytes below it, whether non-ASCII bytes occur, and whether every
 * path below it is well-formed UTF-8, so the walk only descends towards
 * the few tokens that hold a quote or a backslash. Masks are cached per
 * state (a JSON string's state recurs at every token inside it).
 *
 * Bits are kept in trie order (token rank); applying them to logits maps
 * ranks back to ids. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"
#include "shardlm_common.h"

#define NONE UINT32_MAX
#define BULK_MIN 4 /* subtrees with fewer tokens are walked */
#define SUM_OK 1u  /* the node ends a whole character and every path below is well-formed */
#define SUM_HI 2u  /* a byte >= 0x80 occurs below */

typedef struct {
    uint64_t ascii[2]; /* ASCII bytes occurring below the node */
    uint32_t flags;
} vsum;

struct shardlm_grammar_vocab {
    uint64_t uid;        /* tells cached masks of different vocabularies apart */
    int32_t n;
    char *blob;
    uint32_t *off;       /* token i spells blob[off[i] .. off[i + 1]) */
    char *lead_blob;     /* NULL: no lead texts */
    uint32_t *lead_off;
    int32_t *lead_ids;   /* tokens whose lead text differs */
    uint32_t n_lead;
    uint8_t *is_eog;
    int32_t *eog;
    int n_eog;
    int32_t *excl;       /* tokens never allowed (no bytes), EOG aside */
    uint32_t n_excl;
    uint32_t n_sorted;   /* tokens in the trie */
    int32_t *order;      /* rank -> id */
    uint32_t *rank;      /* id -> rank, NONE outside the trie */
    uint32_t n_nodes;
    uint8_t *nbyte;
    uint16_t *ndepth;
    uint32_t *nend;      /* one past the subtree */
    uint32_t *ntok;      /* first rank below; n_nodes + 1 entries */
    uint32_t *nhere;     /* tokens that end at the node */
    uint32_t *nsum;      /* index into sums, NONE for leaves */
    vsum *sums;
    int max_depth;
};

/* ---- bitsets ---- */

static void bits_set_range(uint64_t *b, uint32_t lo, uint32_t hi)
{
    if (lo >= hi) return;
    uint32_t wl = lo >> 6, wh = (hi - 1) >> 6;
    uint64_t ml = ~0ull << (lo & 63), mh = ~0ull >> (63 - ((hi - 1) & 63));
    if (wl == wh) {
        b[wl] |= ml & mh;
        return;
    }
    b[wl] |= ml;
    for (uint32_t w = wl + 1; w < wh; w++) b[w] = ~0ull;
    b[wh] |= mh;
}

/* Bits set (SWAR: a generic x86-64 build has no popcnt instruction). */
static int bits_count(const uint64_t *b, size_t words)
{
    int n = 0;
    for (size_t i = 0; i < words; i++) {
        uint64_t x = b[i];
        x -= (x >> 1) & 0x5555555555555555ull;
        x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
        x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
        n += (int)((x * 0x0101010101010101ull) >> 56);
    }
    return n;
}

/* n floats of -inf: a few stores, then memcpy doubling (libc's wide copy). */
static void fill_neg_inf(float *x, size_t n)
{
    size_t k = n < 16 ? n : 16;
    for (size_t i = 0; i < k; i++) x[i] = -INFINITY;
    while (k < n) {
        size_t c = k < n - k ? k : n - k;
        memcpy(x + k, x, c * sizeof *x);
        k += c;
    }
}

/* ---- building the vocabulary ---- */

static int rank_cmp(const void *a, const void *b, void *ctx)
{
    const shardlm_grammar_vocab *v = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = v->off[x + 1] - v->off[x], ly = v->off[y + 1] - v->off[y];
    int c = memcmp(v->blob + v->off[x], v->blob + v->off[y], lx < ly ? lx : ly);
    if (c) return c;
    if (lx != ly) return lx < ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* The UTF-8 decoder along a trie path: 0 at a character boundary, 0xFF
 * once malformed, else need << 4 | which range the next byte must be in. */
static uint8_t utf8_next(uint8_t st, uint8_t b)
{
    if (st == 0xFF) return 0xFF;
    if (st == 0) {
        if (b < 0x80) return 0;
        if (b >= 0xC2 && b <= 0xDF) return 1 << 4;
        if (b >= 0xE0 && b <= 0xEF) return (uint8_t)(2 << 4 | (b == 0xE0 ? 1 : b == 0xED ? 2 : 0));
        if (b >= 0xF0 && b <= 0xF4) return (uint8_t)(3 << 4 | (b == 0xF0 ? 3 : b == 0xF4 ? 4 : 0));
        return 0xFF;
    }
    static const uint8_t lo[5] = {0x80, 0xA0, 0x80, 0x90, 0x80}, hi[5] = {0xBF, 0xBF, 0x9F, 0xBF, 0x8F};
    int need = st >> 4, r = st & 15;
    if (b < lo[r] || b > hi[r]) return 0xFF;
    return need == 1 ? 0 : (uint8_t)((need - 1) << 4);
}

static int trie_alloc(shardlm_grammar_vocab *v, size_t cap)
{
    v->nbyte = malloc(cap);
    v->ndepth = malloc(cap * sizeof *v->ndepth);
    v->nend = malloc(cap * sizeof *v->nend);
    v->ntok = malloc((cap + 1) * sizeof *v->ntok);
    v->nhere = calloc(cap, sizeof *v->nhere);
    v->nsum = malloc(cap * sizeof *v->nsum);
    return v->nbyte && v->ndepth && v->nend && v->ntok && v->nhere && v->nsum ? 0 : -1;
}

/* Pre-order trie over the sorted tokens; utf8 gets each node's decoder state. */
static int trie_build(shardlm_grammar_vocab *v, uint8_t **utf8_out)
{
    size_t total = 1;
    uint32_t longest = 0;
    for (uint32_t r = 0; r < v->n_sorted; r++) {
        uint32_t len = v->off[v->order[r] + 1] - v->off[v->order[r]];
        total += len;
        if (len > longest) longest = len;
    }
    if (longest > 65535) {
        shardlm_err_set("a token of %u bytes is too long for the grammar mask", longest);
        return SHARDLM_EINPUT;
    }
    uint32_t *path = malloc(((size_t)longest + 1) * sizeof *path);
    uint8_t *utf8 = malloc(total);
    if (trie_alloc(v, total) || !path || !utf8) {
        free(path);
        free(utf8);
        return SHARDLM_ENOMEM;
    }
    uint32_t n = 1, depth = 0, prev_len = 0;
    const char *prev = NULL;
    v->nbyte[0] = 0;
    v->ndepth[0] = 0;
    v->ntok[0] = 0;
    utf8[0] = 0;
    path[0] = 0;
    for (uint32_t r = 0; r < v->n_sorted; r++) {
        const char *s = v->blob + v->off[v->order[r]];
        uint32_t len = v->off[v->order[r] + 1] - v->off[v->order[r]], lcp = 0;
        while (prev && lcp < len && lcp < prev_len && s[lcp] == prev[lcp]) lcp++;
        for (; depth > lcp; depth--) v->nend[path[depth]] = n;
        for (; depth < len; depth++) {
            uint32_t id = n++, parent = path[depth];
            v->nbyte[id] = (uint8_t)s[depth];
            v->ndepth[id] = (uint16_t)(depth + 1);
            v->ntok[id] = r;
            utf8[id] = utf8_next(utf8[parent], (uint8_t)s[depth]);
            path[depth + 1] = id;
        }
        v->nhere[path[len]]++;
        prev = s;
        prev_len = len;
    }
    for (; depth > 0; depth--) v->nend[path[depth]] = n;
    v->nend[0] = n;
    v->ntok[n] = v->n_sorted;
    v->n_nodes = n;
    v->max_depth = (int)longest;
    free(path);
    *utf8_out = utf8;
    return SHARDLM_OK;
}

/* What lies below each internal node, accumulated in reverse pre-order. */
static int trie_sums(shardlm_grammar_vocab *v, const uint8_t *utf8)
{
    uint32_t n_int = 0;
    for (uint32_t i = 0; i < v->n_nodes; i++) n_int += v->nend[i] > i + 1;
    v->sums = malloc((n_int ? n_int : 1) * sizeof *v->sums);
    vsum *acc = calloc((size_t)v->max_depth + 2, sizeof *acc);
    uint8_t *bad = calloc((size_t)v->max_depth + 2, 1);
    if (!v->sums || !acc || !bad) {
        free(acc);
        free(bad);
        return SHARDLM_ENOMEM;
    }
    uint32_t k = n_int;
    for (uint32_t i = v->n_nodes; i-- > 0;) {
        int d = v->ndepth[i];
        vsum below = acc[d + 1];
        int below_bad = bad[d + 1];
        acc[d + 1] = (vsum){{0, 0}, 0};
        bad[d + 1] = 0;
        v->nsum[i] = NONE;
        if (v->nend[i] > i + 1) {
            below.flags |= utf8[i] == 0 && !below_bad ? SUM_OK : 0;
            v->sums[--k] = below;
            v->nsum[i] = k;
        }
        if (i == 0) break;
        uint8_t b = v->nbyte[i];
        acc[d].ascii[0] |= below.ascii[0];
        acc[d].ascii[1] |= below.ascii[1];
        acc[d].flags |= below.flags & SUM_HI;
        if (b < 128) acc[d].ascii[b >> 6] |= 1ull << (b & 63);
        else acc[d].flags |= SUM_HI;
        bad[d] |= below_bad || utf8[i] == 0xFF;
    }
    free(acc);
    free(bad);
    return SHARDLM_OK;
}

static int copy_texts(int32_t n, const char *const *bytes, const uint32_t *lens, char **blob, uint32_t **off)
{
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) total += lens[i];
    if (total > UINT32_MAX) return SHARDLM_EINPUT;
    *blob = malloc(total ? total : 1);
    *off = malloc(((size_t)n + 1) * sizeof **off);
    if (!*blob || !*off) return SHARDLM_ENOMEM;
    uint32_t k = 0;
    for (int32_t i = 0; i < n; i++) {
        (*off)[i] = k;
        if (lens[i]) memcpy(*blob + k, bytes[i], lens[i]);
        k += lens[i];
    }
    (*off)[n] = k;
    return SHARDLM_OK;
}

static int vocab_lists(shardlm_grammar_vocab *v, const int32_t *eog, int n_eog)
{
    v->is_eog = calloc((size_t)v->n, 1);
    v->eog = malloc(((size_t)n_eog + 1) * sizeof *v->eog);
    v->order = malloc((size_t)v->n * sizeof *v->order);
    v->rank = malloc((size_t)v->n * sizeof *v->rank);
    v->excl = malloc((size_t)v->n * sizeof *v->excl);
    v->lead_ids = malloc((size_t)v->n * sizeof *v->lead_ids);
    if (!v->is_eog || !v->eog || !v->order || !v->rank || !v->excl || !v->lead_ids) return SHARDLM_ENOMEM;
    for (int i = 0; i < n_eog; i++) {
        if (eog[i] < 0 || eog[i] >= v->n) {
            shardlm_err_set("end-of-generation token %d is outside the vocabulary of %d", eog[i], v->n);
            return SHARDLM_EINPUT;
        }
        if (!v->is_eog[eog[i]]) v->eog[v->n_eog++] = eog[i];
        v->is_eog[eog[i]] = 1;
    }
    for (int32_t i = 0; i < v->n; i++) {
        v->rank[i] = NONE;
        if (v->is_eog[i]) continue;
        if (v->off[i + 1] == v->off[i]) v->excl[v->n_excl++] = i;
        else v->order[v->n_sorted++] = i;
        if (v->lead_off && (v->lead_off[i + 1] - v->lead_off[i] != v->off[i + 1] - v->off[i] ||
                            memcmp(v->lead_blob + v->lead_off[i], v->blob + v->off[i], v->off[i + 1] - v->off[i])))
            v->lead_ids[v->n_lead++] = i;
    }
    return SHARDLM_OK;
}

int shardlm_grammar_vocab_new(int32_t n, const char *const *bytes, const uint32_t *lens,
                              const char *const *lead_bytes, const uint32_t *lead_lens, const int32_t *eog,
                              int n_eog, shardlm_grammar_vocab **out)
{
    *out = NULL;
    if (n < 1 || n_eog < 0) {
        shardlm_err_set("a grammar vocabulary needs at least one token");
        return SHARDLM_EINPUT;
    }
    shardlm_grammar_vocab *v = calloc(1, sizeof *v);
    if (!v) return SHARDLM_ENOMEM;
    static _Atomic uint64_t next_uid = 1;
    v->uid = atomic_fetch_add(&next_uid, 1);
    v->n = n;
    uint8_t *utf8 = NULL;
    int rc = copy_texts(n, bytes, lens, &v->blob, &v->off);
    if (!rc && lead_bytes) rc = copy_texts(n, lead_bytes, lead_lens, &v->lead_blob, &v->lead_off);
    if (!rc) rc = vocab_lists(v, eog, n_eog);
    if (!rc) {
        qsort_r(v->order, v->n_sorted, sizeof *v->order, rank_cmp, v);
        for (uint32_t r = 0; r < v->n_sorted; r++) v->rank[v->order[r]] = r;
        rc = trie_build(v, &utf8);
    }
    if (!rc) rc = trie_sums(v, utf8);
    free(utf8);
    if (rc) {
        if (rc == SHARDLM_ENOMEM) shardlm_err_set("out of memory building the grammar vocabulary");
        shardlm_grammar_vocab_free(v);
        return rc;
    }
    *out = v;
    return SHARDLM_OK;
}

void shardlm_grammar_vocab_free(shardlm_grammar_vocab *v)
{
    if (!v) return;
    free(v->blob); free(v->off); free(v->lead_blob); free(v->lead_off); free(v->lead_ids);
    free(v->is_eog); free(v->eog); free(v->excl); free(v->order); free(v->rank);
    free(v->nbyte); free(v->ndepth); free(v->nend); free(v->ntok); free(v->nhere); free(v->nsum); free(v->sums);
    free(v);
}

int32_t shardlm_grammar_vocab_n(const shardlm_grammar_vocab *v)
{
    return v->n;
}

/* ---- from a tokenizer ---- */

/* The model's end-of-generation set (eos, eot, eom, ...), or EOS alone
 * where it has none; tokens spelled as text are not end tokens here. */
static int vocab_eog(const shardlm_tokenizer *tok, const int32_t *as_text, int n_as_text, int32_t *eog, int cap)
{
    int32_t all[64];
    size_t n_all = shardlm_tokenizer_eog(tok, all, 64);
    if (n_all > 64) n_all = 64;
    if (!n_all && shardlm_tokenizer_eos(tok) >= 0) all[n_all++] = shardlm_tokenizer_eos(tok);
    int n = 0;
    for (size_t i = 0; i < n_all && n < cap; i++) {
        int text = 0;
        for (int k = 0; k < n_as_text; k++) text |= as_text[k] == all[i];
        if (!text) eog[n++] = all[i];
    }
    return n;
}

int shardlm_grammar_vocab_from_tokenizer(const shardlm_tokenizer *tok, shardlm_grammar_vocab **out)
{
    return shardlm_grammar_vocab_from_tokenizer_as_text(tok, NULL, 0, out);
}

int shardlm_grammar_vocab_from_tokenizer_as_text(const shardlm_tokenizer *tok, const int32_t *as_text, int n_as_text,
                                                 shardlm_grammar_vocab **out)
{
    int32_t n = shardlm_tokenizer_n_vocab(tok), bos = shardlm_tokenizer_bos(tok);
    char **txt = calloc((size_t)n * 2, sizeof *txt);
    uint32_t *len = calloc((size_t)n * 2, sizeof *len);
    size_t cap = shardlm_detok_max(tok);
    char *buf = malloc(cap);
    int32_t eog[64];
    int n_eog = vocab_eog(tok, as_text, n_as_text, eog, 64);
    int rc = txt && len && buf ? SHARDLM_OK : SHARDLM_ENOMEM;
    for (int32_t i = 0; !rc && i < n; i++) {
        int raw = 0;
        for (int k = 0; k < n_as_text; k++) raw |= as_text[k] == i;
        for (int lead = 0; lead < 2 && !rc; lead++) {
            size_t k = 0;
            const char *piece = raw ? shardlm_tokenizer_piece(tok, i, &k) : NULL;
            if (raw && piece && k <= cap) memcpy(buf, piece, k);
            else k = shardlm_tokenizer_token_bytes(tok, i, lead, buf, cap);
            if (k && !(txt[lead * n + i] = malloc(k))) rc = SHARDLM_ENOMEM;
            if (k && !rc) memcpy(txt[lead * n + i], buf, k);
            len[lead * n + i] = (uint32_t)k;
        }
    }
    int use_lead = bos >= 0;
    if (!rc)
        rc = shardlm_grammar_vocab_new(n, (const char *const *)txt, len, use_lead ? (const char *const *)txt + n : NULL,
                                       use_lead ? len + n : NULL, eog, n_eog, out);
    for (int32_t i = 0; txt && i < 2 * n; i++) free(txt[i]);
    free(buf);
    free(txt);
    free(len);
    if (rc == SHARDLM_ENOMEM) shardlm_err_set("out of memory building the grammar vocabulary");
    return rc;
}

/* ---- the walk ---- */

/* Whether every token below a node reached in state s is allowed. Only
 * states seen to loop (GRS_CAND) pay for their loop information. */
static int bulk_ok(shardlm_grammar *g, int32_t s, const vsum *sum)
{
    if (!(sum->flags & SUM_OK) || !(gr_flags(g, s) & GRS_CAND)) return 0;
    uint32_t f = gr_loop_info(g, s);
    if (!(f & GRS_LOOP)) return 0;
    if ((sum->flags & SUM_HI) && !(f & GRS_LOOP_HI)) return 0;
    const uint64_t *l = gr_loop_ascii(g, s);
    return !(sum->ascii[0] & ~l[0]) && !(sum->ascii[1] & ~l[1]);
}

/* Sets in bits (trie order, zeroed) every token that may follow s0. */
static int walk(shardlm_grammar *g, int32_t s0, const shardlm_grammar_vocab *v, uint64_t *bits)
{
    int32_t stack_states[256], *st = v->max_depth < 255 ? stack_states : malloc(((size_t)v->max_depth + 1) * sizeof *st);
    if (!st) return SHARDLM_ENOMEM;
    st[0] = s0;
    if (v->nsum[0] != NONE && bulk_ok(g, s0, &v->sums[v->nsum[0]])) {
        bits_set_range(bits, 0, v->n_sorted);
    } else {
        for (uint32_t i = 1; i < v->n_nodes;) {
            int d = v->ndepth[i];
            int32_t s = gr_step(g, st[d - 1], v->nbyte[i]);
            if (s < 0) {
                i = v->nend[i];
                continue;
            }
            if (s == st[d - 1]) gr_mark_candidate(g, s);
            uint32_t end = v->nend[i];
            if (v->nsum[i] != NONE && v->ntok[end] - v->ntok[i] >= BULK_MIN && bulk_ok(g, s, &v->sums[v->nsum[i]])) {
                bits_set_range(bits, v->ntok[i], v->ntok[end]);
                i = end;
                continue;
            }
            bits_set_range(bits, v->ntok[i], v->ntok[i] + v->nhere[i]);
            st[d] = s;
            i++;
        }
    }
    if (st != stack_states) free(st);
    return g->m.oom ? SHARDLM_ENOMEM : SHARDLM_OK;
}

/* The cached mask of s0 for v, computed when missing. */
static gr_mask_entry *mask_of(shardlm_grammar *g, int32_t s0, const shardlm_grammar_vocab *v)
{
    size_t words = ((size_t)v->n_sorted + 63) / 64;
    gr_mask_entry *lru = &g->masks[0];
    for (int i = 0; i < GR_MASK_CACHE; i++) {
        gr_mask_entry *e = &g->masks[i];
        if (e->bits && e->sid == s0 && e->epoch == g->m.epoch && e->vocab == v->uid) {
            e->used = ++g->mask_clock;
            return e;
        }
        if (e->used < lru->used) lru = e;
    }
    if (lru->words != words || !lru->bits) {
        free(lru->bits);
        lru->bits = NULL;
        lru->words = words;
        if (!(lru->bits = malloc((words ? words : 1) * sizeof *lru->bits))) return NULL;
    }
    memset(lru->bits, 0, words * sizeof *lru->bits);
    lru->vocab = 0;
    if (walk(g, s0, v, lru->bits)) return NULL;
    lru->vocab = v->uid;
    lru->sid = s0;
    lru->epoch = g->m.epoch;
    lru->count = bits_count(lru->bits, words);
    lru->used = ++g->mask_clock;
    return lru;
}

/* Whether text t (n bytes) may come next from s0. */
static int text_allowed(shardlm_grammar *g, int32_t s0, const char *t, uint32_t n)
{
    int32_t s = s0;
    for (uint32_t i = 0; i < n && s >= 0; i++) s = gr_step(g, s, (uint8_t)t[i]);
    return n && s >= 0;
}

typedef struct {
    const uint64_t *bits; /* trie order */
    uint64_t *own;        /* bits, when patched for a lead token */
    int count;            /* tokens allowed, end tokens aside */
    int eog;              /* end tokens allowed */
} mask_view;

static int mask_compute(shardlm_grammar_state *s, const shardlm_grammar_vocab *v, mask_view *mv)
{
    memset(mv, 0, sizeof *mv);
    if (s->ended) return SHARDLM_OK; /* nothing may follow an end token */
    int32_t s0 = gr_state_sid(s);
    if (s0 < 0) return SHARDLM_ENOMEM;
    shardlm_grammar *g = s->g;
    gr_mask_entry *e = mask_of(g, s0, v);
    if (!e) {
        shardlm_err_set("out of memory computing a grammar mask");
        return SHARDLM_ENOMEM;
    }
    mv->bits = e->bits;
    mv->count = e->count;
    if (s->lead && v->n_lead) { /* the first token after BOS: lead texts decide */
        size_t words = ((size_t)v->n_sorted + 63) / 64;
        if (!(mv->own = malloc((words ? words : 1) * sizeof *mv->own))) return SHARDLM_ENOMEM;
        memcpy(mv->own, e->bits, words * sizeof *mv->own);
        for (uint32_t k = 0; k < v->n_lead; k++) {
            int32_t t = v->lead_ids[k];
            uint32_t r = v->rank[t];
            if (r == NONE) continue;
            int on = text_allowed(g, s0, v->lead_blob + v->lead_off[t], v->lead_off[t + 1] - v->lead_off[t]);
            mv->own[r >> 6] = (mv->own[r >> 6] & ~(1ull << (r & 63))) | (uint64_t)on << (r & 63);
        }
        mv->bits = mv->own;
        mv->count = bits_count(mv->own, words);
        if (g->m.oom) return SHARDLM_ENOMEM;
    }
    mv->eog = (gr_flags(g, s0) & GRS_ACCEPT) || mv->count == 0;
    s->dead_end = mv->count == 0 && !(gr_flags(g, s0) & GRS_ACCEPT);
    return SHARDLM_OK;
}

int shardlm_grammar_mask(shardlm_grammar_state *s, const shardlm_grammar_vocab *v, uint64_t *allowed)
{
    mask_view mv;
    if (mask_compute(s, v, &mv)) return -1;
    memset(allowed, 0, (((size_t)v->n + 63) / 64) * sizeof *allowed);
    for (uint32_t w = 0; mv.bits && w < (v->n_sorted + 63) / 64; w++)
        for (uint64_t x = mv.bits[w]; x; x &= x - 1) {
            int32_t id = v->order[w * 64 + (uint32_t)__builtin_ctzll(x)];
            allowed[id >> 6] |= 1ull << (id & 63);
        }
    for (int i = 0; mv.eog && i < v->n_eog; i++) allowed[v->eog[i] >> 6] |= 1ull << (v->eog[i] & 63);
    free(mv.own);
    return mv.count + (mv.eog ? v->n_eog : 0);
}

int shardlm_grammar_apply(shardlm_grammar_state *s, const shardlm_grammar_vocab *v, float *logits)
{
    mask_view mv;
    if (mask_compute(s, v, &mv)) return SHARDLM_ENOMEM;
    uint32_t words = (v->n_sorted + 63) / 64;
    if ((uint32_t)mv.count < v->n_sorted / 4) {
        /* few allowed: keep them aside, clear everything, put them back */
        size_t k = 0;
        float *keep = malloc(((size_t)mv.count + (size_t)v->n_eog + 1) * sizeof *keep);
        if (!keep) {
            free(mv.own);
            return SHARDLM_ENOMEM;
        }
        for (uint32_t w = 0; mv.bits && w < words; w++)
            for (uint64_t x = mv.bits[w]; x; x &= x - 1) keep[k++] = logits[v->order[w * 64 + (uint32_t)__builtin_ctzll(x)]];
        for (int i = 0; mv.eog && i < v->n_eog; i++) keep[k++] = logits[v->eog[i]];
        fill_neg_inf(logits, (size_t)v->n);
        k = 0;
        for (uint32_t w = 0; mv.bits && w < words; w++)
            for (uint64_t x = mv.bits[w]; x; x &= x - 1) logits[v->order[w * 64 + (uint32_t)__builtin_ctzll(x)]] = keep[k++];
        for (int i = 0; mv.eog && i < v->n_eog; i++) logits[v->eog[i]] = keep[k++];
        free(keep);
    } else {
        for (uint32_t w = 0; w < words; w++) {
            uint64_t x = ~mv.bits[w];
            if (w == words - 1 && (v->n_sorted & 63)) x &= (1ull << (v->n_sorted & 63)) - 1;
            for (; x; x &= x - 1) logits[v->order[w * 64 + (uint32_t)__builtin_ctzll(x)]] = -INFINITY;
        }
        for (uint32_t i = 0; i < v->n_excl; i++) logits[v->excl[i]] = -INFINITY;
        for (int i = 0; !mv.eog && i < v->n_eog; i++) logits[v->eog[i]] = -INFINITY;
    }
    free(mv.own);
    return SHARDLM_OK;
}

int shardlm_grammar_accept_token(shardlm_grammar_state *s, const shardlm_grammar_vocab *v, int32_t token)
{
    if (token < 0 || token >= v->n || s->ended) return SHARDLM_EINPUT;
    if (v->is_eog[token]) {
        if (!shardlm_grammar_can_end(s) && !s->dead_end) return SHARDLM_EINPUT;
        s->ended = 1;
        return SHARDLM_OK;
    }
    const char *t = v->blob + v->off[token];
    uint32_t n = v->off[token + 1] - v->off[token];
    if (s->lead && v->lead_blob) {
        t = v->lead_blob + v->lead_off[token];
        n = v->lead_off[token + 1] - v->lead_off[token];
    }
    if (!n) return SHARDLM_EINPUT;
    int rc = shardlm_grammar_accept_bytes(s, t, n);
    if (!rc) s->lead = 0, s->dead_end = 0;
    return rc;
}
