/* kvcache.c - rank 0's paged KV-cache bookkeeping: block tables, reference
 * counts, the prefix cache over full blocks and LRU eviction (see kvcache.h).
 *
 * Every block is in exactly one state:
 *   FREE   refcount 0, not registered, on the free stack;
 *   USED   refcount > 0 (registered or not), in one or more tables;
 *   CACHED refcount 0, registered, on the LRU list (evictable).
 * Registered blocks sit in a chained hash table keyed by their chain hash.
 * A hit also needs the same token ids and the same parent (the cached block
 * that holds the previous block of the prefix, checked with its
 * registration number), so a hash collision can never return KV computed
 * for another prefix. Every operation is O(1) per block, apart from walking
 * one hash bucket. */
#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"
#include "shardlm_common.h"

typedef struct {
    uint64_t hash;       /* chain hash, while registered */
    uint64_t gen;        /* registration number, unique while registered */
    uint64_t parent_gen; /* parent's gen when this block was registered */
    int32_t parent;      /* block of the previous prefix block, -1 first */
    int32_t ref;         /* tables holding this block */
    int32_t lru_prev, lru_next;
    int32_t hnext; /* next in the hash bucket */
    uint8_t registered;
} kv_block;

struct shardlm_kv {
    int n_blocks, block_size, prefix_caching;
    kv_block *blk;
    int32_t *tokens; /* [n_blocks][block_size]: ids of registered blocks */
    int32_t *free_stack;
    int n_free_stack;
    int32_t lru_head, lru_tail; /* head: least recently used */
    int n_lru;
    int32_t *buckets;
    uint64_t bucket_mask;
    int n_used; /* blocks with refcount > 0 */
    uint64_t next_gen;
    uint64_t queries, hits;
    uint64_t hash_mask;
};

#define KV_ROOT_HASH SHARDLM_FNV_INIT

/* ---- hashing ---- */

static uint64_t kv_chain_hash(const shardlm_kv *kv, uint64_t prev, const int32_t *tokens)
{
    uint64_t h = shardlm_fnv1a64(prev, tokens, (size_t)kv->block_size * sizeof(int32_t));
    return h & kv->hash_mask;
}

/* FNV's low bits are weak on their own; mix before taking a bucket. */
static uint64_t kv_bucket(const shardlm_kv *kv, uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h & kv->bucket_mask;
}

static const int32_t *kv_tokens(const shardlm_kv *kv, int b)
{
    return kv->tokens + (size_t)b * (size_t)kv->block_size;
}

static int kv_matches(const shardlm_kv *kv, int b, uint64_t h, int parent, const int32_t *tokens)
{
    const kv_block *k = &kv->blk[b];
    if (k->hash != h || k->parent != parent) return 0;
    /* Defensive: parents are never evicted before their children (see
     * shardlm_kv_check), but the registration number would also reject a
     * child whose parent's block id was reused for another prefix. */
    if (parent >= 0 && k->parent_gen != kv->blk[parent].gen) return 0;
    return memcmp(kv_tokens(kv, b), tokens, (size_t)kv->block_size * sizeof(int32_t)) == 0;
}

static int kv_lookup(const shardlm_kv *kv, uint64_t h, int parent, const int32_t *tokens)
{
    for (int b = kv->buckets[kv_bucket(kv, h)]; b >= 0; b = kv->blk[b].hnext)
        if (kv_matches(kv, b, h, parent, tokens)) return b;
    return -1;
}

static void kv_register(shardlm_kv *kv, int b, uint64_t h, int parent, const int32_t *tokens)
{
    kv_block *k = &kv->blk[b];
    uint64_t bucket = kv_bucket(kv, h);
    k->hash = h;
    k->gen = ++kv->next_gen;
    k->parent = parent;
    k->parent_gen = parent >= 0 ? kv->blk[parent].gen : 0;
    k->registered = 1;
    k->hnext = kv->buckets[bucket];
    kv->buckets[bucket] = b;
    memcpy(kv->tokens + (size_t)b * (size_t)kv->block_size, tokens, (size_t)kv->block_size * sizeof(int32_t));
}

static void kv_unregister(shardlm_kv *kv, int b)
{
    int32_t *link = &kv->buckets[kv_bucket(kv, kv->blk[b].hash)];
    while (*link != b) link = &kv->blk[*link].hnext;
    *link = kv->blk[b].hnext;
    kv->blk[b].hnext = -1;
    kv->blk[b].registered = 0;
    /* gen stays: a stale child still names this gen, and the next
     * registration of b gets a new one, so the stale child never matches. */
}

/* ---- LRU list and free stack ---- */

static void kv_lru_push_tail(shardlm_kv *kv, int b)
{
    kv->blk[b].lru_prev = kv->lru_tail;
    kv->blk[b].lru_next = -1;
    if (kv->lru_tail >= 0)
        kv->blk[kv->lru_tail].lru_next = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_lru++;
}

static void kv_lru_remove(shardlm_kv *kv, int b)
{
    kv_block *k = &kv->blk[b];
    if (k->lru_prev >= 0)
        kv->blk[k->lru_prev].lru_next = k->lru_next;
    else
        kv->lru_head = k->lru_next;
    if (k->lru_next >= 0)
        kv->blk[k->lru_next].lru_prev = k->lru_prev;
    else
        kv->lru_tail = k->lru_prev;
    k->lru_prev = k->lru_next = -1;
    kv->n_lru--;
}

/* One more table holds b; a CACHED block stops being evictable. */
static void kv_ref(shardlm_kv *kv, int b)
{
    if (kv->blk[b].ref++ == 0) {
        kv->n_used++;
        if (kv->blk[b].registered) kv_lru_remove(kv, b);
    }
}

/* One table fewer holds b. A registered block becomes the most recently
 * used CACHED block; any other goes back to the free stack. */
static void kv_unref(shardlm_kv *kv, int b)
{
    assert(kv->blk[b].ref > 0);
    if (--kv->blk[b].ref > 0) return;
    kv->n_used--;
    if (kv->blk[b].registered)
        kv_lru_push_tail(kv, b);
    else
        kv->free_stack[kv->n_free_stack++] = b;
}

/* A block for a table: a free one, else the least recently used cached one
 * (which leaves the prefix cache). The caller checked one is available. */
static int kv_take(shardlm_kv *kv)
{
    int b;
    if (kv->n_free_stack > 0) {
        b = kv->free_stack[--kv->n_free_stack];
    } else {
        b = kv->lru_head;
        assert(b >= 0);
        kv_lru_remove(kv, b);
        kv_unregister(kv, b);
    }
    kv_ref(kv, b);
    return b;
}

/* ---- pool ---- */

static uint64_t kv_pow2_at_least(uint64_t n)
{
    uint64_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

static int kv_alloc(shardlm_kv *kv)
{
    size_t n = (size_t)kv->n_blocks;
    uint64_t n_buckets = kv_pow2_at_least(2 * n);
    kv->blk = calloc(n, sizeof *kv->blk);
    kv->tokens = calloc(n * (size_t)kv->block_size, sizeof(int32_t));
    kv->free_stack = malloc(n * sizeof(int32_t));
    kv->buckets = malloc((size_t)n_buckets * sizeof(int32_t));
    if (!kv->blk || !kv->tokens || !kv->free_stack || !kv->buckets) return SHARDLM_ENOMEM;
    kv->bucket_mask = n_buckets - 1;
    for (uint64_t i = 0; i < n_buckets; i++) kv->buckets[i] = -1;
    /* Stack top is block 0, so a fresh pool hands out 0, 1, 2, ... */
    for (int i = 0; i < kv->n_blocks; i++) {
        kv->blk[i] = (kv_block){.parent = -1, .lru_prev = -1, .lru_next = -1, .hnext = -1};
        kv->free_stack[i] = kv->n_blocks - 1 - i;
    }
    kv->n_free_stack = kv->n_blocks;
    return SHARDLM_OK;
}

int shardlm_kv_new(int n_blocks, int block_size, int prefix_caching, shardlm_kv **out)
{
    *out = NULL;
    if (block_size != 8 && block_size != 16 && block_size != 32) {
        shardlm_err_set("--block-size %d: must be 8, 16 or 32", block_size);
        return SHARDLM_EINPUT;
    }
    if (n_blocks < 1 || n_blocks > INT_MAX / block_size) {
        shardlm_err_set("KV cache of %d blocks: must be 1..%d blocks of %d tokens", n_blocks,
                        INT_MAX / block_size, block_size);
        return SHARDLM_EINPUT;
    }
    shardlm_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return SHARDLM_ENOMEM;
    kv->n_blocks = n_blocks;
    kv->block_size = block_size;
    kv->prefix_caching = prefix_caching != 0;
    kv->lru_head = kv->lru_tail = -1;
    kv->hash_mask = ~0ULL;
    if (kv_alloc(kv)) {
        shardlm_kv_free(kv);
        shardlm_err_set("KV cache of %d blocks: out of memory for its bookkeeping", n_blocks);
        return SHARDLM_ENOMEM;
    }
    *out = kv;
    return SHARDLM_OK;
}

void shardlm_kv_free(shardlm_kv *kv)
{
    if (!kv) return;
    free(kv->blk);
    free(kv->tokens);
    free(kv->free_stack);
    free(kv->buckets);
    free(kv);
}

int shardlm_kv_blocks_for_mb(double kv_cache_mb, size_t bytes_per_token_per_rank, int block_size)
{
    if (block_size != 8 && block_size != 16 && block_size != 32) {
        shardlm_err_set("--block-size %d: must be 8, 16 or 32", block_size);
        return SHARDLM_EINPUT;
    }
    double per_block = (double)bytes_per_token_per_rank * block_size;
    double n = isfinite(kv_cache_mb) && kv_cache_mb > 0 && per_block > 0 ? floor(kv_cache_mb * 1048576.0 / per_block)
                                                                         : 0;
    if (n < 1) {
        shardlm_err_set("--kv-cache-mb %g holds no block of %d tokens (%zu bytes per token on this rank)",
                        kv_cache_mb, block_size, bytes_per_token_per_rank);
        return SHARDLM_EINPUT;
    }
    int max = INT_MAX / block_size;
    return n > max ? max : (int)n;
}

/* ---- sequences ---- */

static int kv_seq_grow(shardlm_kv_seq *s, int need)
{
    if (need <= s->cap) return SHARDLM_OK;
    int cap = s->cap > 0 ? s->cap : 4;
    while (cap < need) cap = cap > INT_MAX / 2 ? need : cap * 2;
    int32_t *p = realloc(s->blocks, (size_t)cap * sizeof(int32_t));
    if (!p) {
        shardlm_err_set("KV block table of %d entries: out of memory", cap);
        return SHARDLM_ENOMEM;
    }
    s->blocks = p;
    s->cap = cap;
    return SHARDLM_OK;
}

/* Shares cached blocks along the prompt's hash chain until the first miss. */
static int kv_seq_match(shardlm_kv *kv, shardlm_kv_seq *s, const int32_t *prompt, int n_prompt)
{
    int bs = kv->block_size;
    int max_blocks = (n_prompt - 1) / bs; /* the last token is always computed */
    uint64_t h = KV_ROOT_HASH;
    int parent = -1;
    for (int i = 0; i < max_blocks; i++) {
        h = kv_chain_hash(kv, h, prompt + (size_t)i * bs);
        int b = kv_lookup(kv, h, parent, prompt + (size_t)i * bs);
        if (b < 0) break;
        kv_ref(kv, b);
        s->blocks[s->n_blocks++] = b;
        parent = b;
    }
    return s->n_blocks * bs;
}

int shardlm_kv_seq_begin(shardlm_kv *kv, shardlm_kv_seq *s, const int32_t *prompt, int n_prompt)
{
    memset(s, 0, sizeof *s);
    if (n_prompt < 1 || !prompt) {
        shardlm_err_set("KV cache: a sequence needs at least one prompt token (got %d)", n_prompt);
        return SHARDLM_EINPUT;
    }
    /* Room for the whole prompt plus one block, so most reserves never grow. */
    int rc = kv_seq_grow(s, n_prompt / kv->block_size + 2);
    if (rc) return rc;
    if (!kv->prefix_caching) return 0;
    int covered = kv_seq_match(kv, s, prompt, n_prompt);
    s->n_tokens = s->n_cached = covered;
    s->n_full = s->n_blocks;
    kv->queries += (uint64_t)n_prompt;
    kv->hits += (uint64_t)covered;
    return covered;
}

int shardlm_kv_seq_reserve(shardlm_kv *kv, shardlm_kv_seq *s, int n_tokens_total)
{
    int bs = kv->block_size;
    if (n_tokens_total < 0 || n_tokens_total > INT_MAX - bs) {
        shardlm_err_set("KV cache: cannot reserve %d tokens", n_tokens_total);
        return SHARDLM_EINPUT;
    }
    int need = (n_tokens_total + bs - 1) / bs;
    if (need <= s->n_blocks) return SHARDLM_OK;
    int extra = need - s->n_blocks;
    if (extra > kv->n_free_stack + kv->n_lru) {
        shardlm_err_set("KV cache full: %d more blocks needed, %d free or evictable of %d", extra,
                        kv->n_free_stack + kv->n_lru, kv->n_blocks);
        return SHARDLM_ENOMEM;
    }
    int rc = kv_seq_grow(s, need); /* before taking blocks: no partial table */
    if (rc) return rc;
    while (s->n_blocks < need) s->blocks[s->n_blocks++] = kv_take(kv);
    return SHARDLM_OK;
}

#ifndef NDEBUG
/* Copy-on-write never arises: only full blocks are ever shared (registered),
 * and a sequence writes only at positions >= n_tokens, which lie past its
 * full blocks. So every block written now must be private and unregistered. */
static void kv_assert_private(const shardlm_kv *kv, const shardlm_kv_seq *s, int from, int to)
{
    if (to <= from) return;
    for (int i = from / kv->block_size; i <= (to - 1) / kv->block_size; i++) {
        assert(kv->blk[s->blocks[i]].ref == 1);
        assert(!kv->blk[s->blocks[i]].registered);
    }
}
#endif

/* Registers full block i of s, or switches s to an identical cached block.
 * Block i-1 is registered already (it was committed or shared before) and
 * held by s, so it is still the parent the cache knows. */
static void kv_commit_block(shardlm_kv *kv, shardlm_kv_seq *s, int i, const int32_t *tokens)
{
    int parent = i > 0 ? s->blocks[i - 1] : -1;
    assert(parent < 0 || kv->blk[parent].registered);
    uint64_t h = kv_chain_hash(kv, parent >= 0 ? kv->blk[parent].hash : KV_ROOT_HASH, tokens);
    int own = s->blocks[i];
    int cached = kv_lookup(kv, h, parent, tokens);
    if (cached < 0) {
        kv_register(kv, own, h, parent, tokens);
        return;
    }
    /* Dedupe: identical tokens after the identical prefix hold identical KV
     * (the premise of prefix caching), so keep one copy and free ours. */
    kv_ref(kv, cached);
    s->blocks[i] = cached;
    kv_unref(kv, own);
}

void shardlm_kv_seq_commit(shardlm_kv *kv, shardlm_kv_seq *s, const int32_t *tokens, int n_computed)
{
    int bs = kv->block_size;
    assert(n_computed >= s->n_tokens);
    assert(n_computed <= s->n_blocks * bs);
#ifndef NDEBUG
    kv_assert_private(kv, s, s->n_tokens, n_computed);
#endif
    s->n_tokens = n_computed;
    int full = n_computed / bs;
    if (kv->prefix_caching)
        for (int i = s->n_full; i < full; i++) kv_commit_block(kv, s, i, tokens + (size_t)i * bs);
    if (full > s->n_full) s->n_full = full;
}

void shardlm_kv_seq_trim(shardlm_kv *kv, shardlm_kv_seq *s, int n_tokens_total)
{
    int keep = n_tokens_total < s->n_tokens ? s->n_tokens : n_tokens_total;
    keep = (keep + kv->block_size - 1) / kv->block_size;
    /* Blocks past the committed tokens hold no full committed block, so
     * none is registered: each goes straight back to the free stack. */
    while (s->n_blocks > keep) kv_unref(kv, s->blocks[--s->n_blocks]);
}

void shardlm_kv_seq_free(shardlm_kv *kv, shardlm_kv_seq *s)
{
    /* Last block first: it becomes the older LRU entry, so a prefix
     * outlives its continuations and stays reachable from the root. */
    for (int i = s->n_blocks - 1; i >= 0; i--) kv_unref(kv, s->blocks[i]);
    free(s->blocks);
    memset(s, 0, sizeof *s);
}

/* ---- queries ---- */

int shardlm_kv_n_blocks(const shardlm_kv *kv)
{
    return kv->n_blocks;
}

int shardlm_kv_block_size(const shardlm_kv *kv)
{
    return kv->block_size;
}

int shardlm_kv_n_free(const shardlm_kv *kv)
{
    return kv->n_free_stack + kv->n_lru;
}

double shardlm_kv_usage(const shardlm_kv *kv)
{
    return (double)kv->n_used / (double)kv->n_blocks;
}

uint64_t shardlm_kv_prefix_queries(const shardlm_kv *kv)
{
    return kv->queries;
}

uint64_t shardlm_kv_prefix_hits(const shardlm_kv *kv)
{
    return kv->hits;
}

int shardlm_kv_block_state(const shardlm_kv *kv, int block)
{
    const kv_block *k = &kv->blk[block];
    if (k->ref > 0) return SHARDLM_KV_USED;
    return k->registered ? SHARDLM_KV_CACHED : SHARDLM_KV_FREE;
}

int shardlm_kv_block_refcount(const shardlm_kv *kv, int block)
{
    return kv->blk[block].ref;
}

int shardlm_kv_block_registered(const shardlm_kv *kv, int block)
{
    return kv->blk[block].registered;
}

void shardlm_kv_test_hash_mask(shardlm_kv *kv, uint64_t mask)
{
    kv->hash_mask = mask;
}

/* ---- consistency check ---- */

enum { KV_SEEN_FREE = 1, KV_SEEN_LRU = 2, KV_SEEN_HASH = 4 };

#define KV_FAIL(...)                   \
    do {                               \
        shardlm_err_set(__VA_ARGS__);  \
        return SHARDLM_ERUNTIME;       \
    } while (0)

static int kv_check_free(const shardlm_kv *kv, uint8_t *seen)
{
    for (int i = 0; i < kv->n_free_stack; i++) {
        int b = kv->free_stack[i];
        if (b < 0 || b >= kv->n_blocks || seen[b]) KV_FAIL("free stack entry %d: bad or repeated block %d", i, b);
        if (kv->blk[b].ref || kv->blk[b].registered) KV_FAIL("free block %d is referenced or registered", b);
        seen[b] |= KV_SEEN_FREE;
    }
    return SHARDLM_OK;
}

static int kv_check_lru(const shardlm_kv *kv, uint8_t *seen)
{
    int n = 0, prev = -1;
    for (int b = kv->lru_head; b >= 0; prev = b, b = kv->blk[b].lru_next) {
        if (b >= kv->n_blocks || seen[b] || n > kv->n_blocks) KV_FAIL("LRU list: bad or repeated block %d", b);
        if (kv->blk[b].lru_prev != prev) KV_FAIL("LRU list: block %d has a wrong back link", b);
        if (kv->blk[b].ref || !kv->blk[b].registered) KV_FAIL("LRU block %d is referenced or unregistered", b);
        seen[b] |= KV_SEEN_LRU;
        n++;
    }
    if (prev != kv->lru_tail || n != kv->n_lru) KV_FAIL("LRU list: %d entries, count says %d", n, kv->n_lru);
    return SHARDLM_OK;
}

static int kv_check_hash(const shardlm_kv *kv, uint8_t *seen)
{
    for (uint64_t i = 0; i <= kv->bucket_mask; i++) {
        for (int b = kv->buckets[i], n = 0; b >= 0; b = kv->blk[b].hnext, n++) {
            if (b >= kv->n_blocks || (seen[b] & KV_SEEN_HASH) || n > kv->n_blocks)
                KV_FAIL("hash bucket %llu: bad or repeated block %d", (unsigned long long)i, b);
            if (!kv->blk[b].registered || kv_bucket(kv, kv->blk[b].hash) != i)
                KV_FAIL("hash bucket %llu: block %d is unregistered or misplaced", (unsigned long long)i, b);
            seen[b] |= KV_SEEN_HASH;
        }
    }
    return SHARDLM_OK;
}

static int kv_check_blocks(const shardlm_kv *kv, const uint8_t *seen)
{
    int used = 0;
    for (int b = 0; b < kv->n_blocks; b++) {
        const kv_block *k = &kv->blk[b];
        if (k->ref < 0) KV_FAIL("block %d has refcount %d", b, k->ref);
        /* Parents outlive children (a holder of a child holds its parent,
         * and frees the child first), so no cached block is orphaned. */
        if (k->registered && k->parent >= 0 &&
            (!kv->blk[k->parent].registered || kv->blk[k->parent].gen != k->parent_gen))
            KV_FAIL("registered block %d lost its parent %d", b, k->parent);
        if (k->registered != !!(seen[b] & KV_SEEN_HASH)) KV_FAIL("block %d: registered flag disagrees with hash", b);
        int want = k->ref > 0 ? 0 : k->registered ? KV_SEEN_LRU : KV_SEEN_FREE;
        if ((seen[b] & (KV_SEEN_FREE | KV_SEEN_LRU)) != want) KV_FAIL("block %d is in the wrong list", b);
        used += k->ref > 0;
    }
    if (used != kv->n_used) KV_FAIL("%d blocks referenced, count says %d", used, kv->n_used);
    return SHARDLM_OK;
}

int shardlm_kv_check(const shardlm_kv *kv)
{
    uint8_t *seen = calloc((size_t)kv->n_blocks, 1);
    if (!seen) return SHARDLM_ENOMEM;
    int rc = kv_check_free(kv, seen);
    if (!rc) rc = kv_check_lru(kv, seen);
    if (!rc) rc = kv_check_hash(kv, seen);
    if (!rc) rc = kv_check_blocks(kv, seen);
    free(seen);
    return rc;
}
