/* kvcache.h - rank 0's paged KV-cache bookkeeping: which physical block
 * holds which tokens of which sequence, reference counts, the prefix cache
 * (hash chain over full blocks) and LRU eviction of cached blocks. It never
 * touches KV data; every rank stores KV as [n_blocks][layer][block_size]
 * [local kv width] and follows the block tables rank 0 sends each step.
 *
 * Not thread-safe: one shardlm_kv and its sequences belong to one thread at a
 * time (the scheduler holds its lock around every call). There is no global
 * state, so separate instances may live on separate threads. */
#ifndef SHARDLM_KVCACHE_H
#define SHARDLM_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct shardlm_kv shardlm_kv;

/* One sequence's block table. The struct belongs to the caller (zero it or
 * let shardlm_kv_seq_begin fill it); the blocks array belongs to the kv
 * module and is released by shardlm_kv_seq_free. Read-only for the caller.
 * Token position p lives in block blocks[p / block_size], slot
 * p % block_size. */
typedef struct {
    int32_t *blocks; /* physical block ids, n_blocks of them */
    int n_blocks;    /* blocks in the table (reserved capacity / block_size) */
    int cap;         /* allocated entries of blocks */
    int n_tokens;    /* tokens whose KV is stored (cached prefix + committed) */
    int n_cached;    /* prompt tokens served from the prefix cache */
    int n_full;      /* leading full blocks already committed (and registered) */
} shardlm_kv_seq;

/* A pool of n_blocks blocks of block_size tokens (8, 16 or 32, else
 * SHARDLM_EINPUT naming --block-size). prefix_caching 0 never caches. */
int shardlm_kv_new(int n_blocks, int block_size, int prefix_caching, shardlm_kv **out);
void shardlm_kv_free(shardlm_kv *kv);

/* Blocks that fit in kv_cache_mb MiB on one rank, given the KV bytes one
 * token takes on that rank (all layers, K and V). Returns the count (>= 1)
 * or SHARDLM_EINPUT naming --kv-cache-mb when not even one block fits. */
int shardlm_kv_blocks_for_mb(double kv_cache_mb, size_t bytes_per_token_per_rank, int block_size);

/* Starts a sequence: shares the longest chain of cached full blocks that
 * matches the prompt, always leaving at least the last prompt token to
 * compute (so at most ((n_prompt-1)/block_size)*block_size tokens). Returns
 * the number of prompt tokens covered (s->n_cached == s->n_tokens), or a
 * negative status (SHARDLM_EINPUT, SHARDLM_ENOMEM) with s left empty. */
int shardlm_kv_seq_begin(shardlm_kv *kv, shardlm_kv_seq *s, const int32_t *prompt, int n_prompt);

/* Makes the table hold blocks for n_tokens_total tokens, taking free blocks
 * first, then evicting least-recently-used cached blocks nobody uses.
 * SHARDLM_ENOMEM (table and pool untouched) when the pool cannot supply them;
 * the scheduler then preempts. */
int shardlm_kv_seq_reserve(shardlm_kv *kv, shardlm_kv_seq *s, int n_tokens_total);

/* Records that KV for tokens[0..n_computed) is now stored (n_computed is at
 * least s->n_tokens and within the reserved blocks). Every block that became
 * full is registered in the prefix cache. When an identical block (same
 * tokens after the same cached parent) is already cached, the sequence
 * switches to that block and its own copy returns to the free list: the
 * table may change at positions that just became full, so send tables to the
 * workers after commit. */
void shardlm_kv_seq_commit(shardlm_kv *kv, shardlm_kv_seq *s, const int32_t *tokens, int n_computed);

/* Gives back the blocks past those that n_tokens_total tokens need (never
 * below the committed s->n_tokens): speculative decoding reserves room for
 * its draft tokens and returns what the rejected ones held. The KV rows of
 * rejected positions inside a kept block are simply written over later. */
void shardlm_kv_seq_trim(shardlm_kv *kv, shardlm_kv_seq *s, int n_tokens_total);

/* Ends a sequence (or preempts it). Registered blocks nobody else uses stay
 * cached and become evictable; the last block of the table is evicted first.
 * Other blocks return to the free list. s is zeroed. */
void shardlm_kv_seq_free(shardlm_kv *kv, shardlm_kv_seq *s);

int shardlm_kv_n_blocks(const shardlm_kv *kv);
int shardlm_kv_block_size(const shardlm_kv *kv);
/* Blocks a reserve can still obtain: free plus cached-evictable. */
int shardlm_kv_n_free(const shardlm_kv *kv);
/* Blocks referenced by live sequences / n_blocks; 0 when nothing runs even
 * if blocks are cached (vLLM's kv_cache_usage_perc). */
double shardlm_kv_usage(const shardlm_kv *kv);
/* Prefix cache counters in tokens (vLLM's prefix_cache_queries/hits):
 * queries += n_prompt and hits += covered per begin; both stay 0 when
 * prefix caching is off. */
uint64_t shardlm_kv_prefix_queries(const shardlm_kv *kv);
uint64_t shardlm_kv_prefix_hits(const shardlm_kv *kv);

/* ---- inspection, for tests and debugging ---- */
enum { SHARDLM_KV_FREE = 0, SHARDLM_KV_USED = 1, SHARDLM_KV_CACHED = 2 };
/* FREE: on the free list. USED: refcount > 0. CACHED: refcount 0, in the
 * prefix cache, evictable. */
int shardlm_kv_block_state(const shardlm_kv *kv, int block);
int shardlm_kv_block_refcount(const shardlm_kv *kv, int block);
/* Whether block is registered in the prefix cache (USED or CACHED). */
int shardlm_kv_block_registered(const shardlm_kv *kv, int block);
/* Walks every internal structure (free stack, LRU list, hash table,
 * counters); returns SHARDLM_OK or SHARDLM_ERUNTIME with the first
 * inconsistency in shardlm_err_get(). O(n_blocks). */
int shardlm_kv_check(const shardlm_kv *kv);
/* Test hook: chain hashes are ANDed with mask (0 makes every block collide)
 * so tests can show that collisions never give a false hit. */
void shardlm_kv_test_hash_mask(shardlm_kv *kv, uint64_t mask);

#endif
