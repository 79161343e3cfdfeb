/* test_kvcache.c - rank 0's paged KV-cache bookkeeping: allocation and free
 * accounting, reserve failure without side effects, prefix-cache hits with
 * shared physical blocks and exact counters, the last-token cap, forced hash
 * collisions, dedupe of identical blocks, LRU eviction order, and a
 * randomized stress run checked against an independent model that
 * simulates the KV each physical slot holds. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"
#include "shardlm_common.h"

static shardlm_kv *kv_make(int n_blocks, int block_size, int prefix)
{
    shardlm_kv *kv = NULL;
    cr_assert_eq(shardlm_kv_new(n_blocks, block_size, prefix, &kv), SHARDLM_OK, "%s", shardlm_err_get());
    return kv;
}

/* Distinct token ids per family: family f, position i. */
static void prompt_fill(int32_t *p, int n, int family)
{
    for (int i = 0; i < n; i++) p[i] = family * 1000 + i;
}

/* begin + reserve + commit of a whole prompt, as one prefill step. */
static int prefill(shardlm_kv *kv, shardlm_kv_seq *s, const int32_t *p, int n)
{
    int covered = shardlm_kv_seq_begin(kv, s, p, n);
    cr_assert_geq(covered, 0, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_kv_seq_reserve(kv, s, n), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_kv_seq_commit(kv, s, p, n);
    cr_assert_eq(shardlm_kv_check(kv), SHARDLM_OK, "%s", shardlm_err_get());
    return covered;
}

Test(kvcache, rejects_bad_parameters)
{
    shardlm_kv *kv = NULL;
    cr_assert_eq(shardlm_kv_new(10, 12, 1, &kv), SHARDLM_EINPUT);
    cr_assert_null(kv);
    cr_assert_not_null(strstr(shardlm_err_get(), "--block-size"));
    cr_assert_eq(shardlm_kv_new(10, 64, 1, &kv), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_kv_new(0, 16, 1, &kv), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_kv_new(1, 8, 0, &kv), SHARDLM_OK);
    shardlm_kv_seq s;
    int32_t t = 1;
    cr_assert_eq(shardlm_kv_seq_begin(kv, &s, &t, 0), SHARDLM_EINPUT);
    cr_assert_null(s.blocks);
    shardlm_kv_free(kv);
}

Test(kvcache, blocks_for_mb)
{
    /* 1 MiB / (64 B/token * 16 tokens) = 1024 blocks. */
    cr_assert_eq(shardlm_kv_blocks_for_mb(1.0, 64, 16), 1024);
    cr_assert_eq(shardlm_kv_blocks_for_mb(1.5, 64, 16), 1536);
    cr_assert_eq(shardlm_kv_blocks_for_mb(1.0, 100, 32), 327); /* floor(1048576/3200) */
    cr_assert_eq(shardlm_kv_blocks_for_mb(0.001, 1024, 16), SHARDLM_EINPUT);
    cr_assert_not_null(strstr(shardlm_err_get(), "--kv-cache-mb"));
    cr_assert_eq(shardlm_kv_blocks_for_mb(-1, 64, 16), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_kv_blocks_for_mb(1.0, 64, 7), SHARDLM_EINPUT);
}

Test(kvcache, allocation_and_free_accounting)
{
    shardlm_kv *kv = kv_make(10, 16, 0);
    shardlm_kv_seq s;
    int32_t p[40];
    prompt_fill(p, 40, 1);
    cr_assert_eq(shardlm_kv_seq_begin(kv, &s, p, 40), 0);
    cr_assert_eq(s.n_blocks, 0);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &s, 40), SHARDLM_OK);
    cr_assert_eq(s.n_blocks, 3);
    cr_assert_eq(s.blocks[0], 0);
    cr_assert_eq(s.blocks[1], 1);
    cr_assert_eq(s.blocks[2], 2);
    cr_assert_eq(shardlm_kv_n_free(kv), 7);
    cr_assert_float_eq(shardlm_kv_usage(kv), 0.3, 1e-12);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &s, 48), SHARDLM_OK);
    cr_assert_eq(s.n_blocks, 3);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &s, 49), SHARDLM_OK);
    cr_assert_eq(s.n_blocks, 4);
    cr_assert_eq(shardlm_kv_n_free(kv), 6);
    for (int i = 0; i < 4; i++) cr_assert_eq(shardlm_kv_block_state(kv, s.blocks[i]), SHARDLM_KV_USED);
    shardlm_kv_seq_free(kv, &s);
    cr_assert_null(s.blocks);
    cr_assert_eq(shardlm_kv_n_free(kv), 10);
    cr_assert_float_eq(shardlm_kv_usage(kv), 0.0, 0);
    for (int b = 0; b < 10; b++) cr_assert_eq(shardlm_kv_block_state(kv, b), SHARDLM_KV_FREE);
    cr_assert_eq(shardlm_kv_check(kv), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_kv_free(kv);
}

Test(kvcache, table_grows_geometrically)
{
    shardlm_kv *kv = kv_make(1000, 8, 0);
    shardlm_kv_seq s;
    int32_t t = 5;
    shardlm_kv_seq_begin(kv, &s, &t, 1);
    int grows = 0, cap = s.cap;
    for (int n = 1; n <= 8000; n++) {
        cr_assert_eq(shardlm_kv_seq_reserve(kv, &s, n), SHARDLM_OK);
        if (s.cap != cap) grows++, cap = s.cap;
    }
    cr_assert_eq(s.n_blocks, 1000);
    cr_assert_leq(grows, 10);
    cr_assert_eq(shardlm_kv_n_free(kv), 0);
    shardlm_kv_seq_free(kv, &s);
    shardlm_kv_free(kv);
}

Test(kvcache, reserve_failure_leaves_table_unchanged)
{
    shardlm_kv *kv = kv_make(4, 16, 1);
    shardlm_kv_seq a, b;
    int32_t p[48];
    prompt_fill(p, 48, 2);
    prefill(kv, &a, p, 48);
    int32_t before[3];
    memcpy(before, a.blocks, sizeof before);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &a, 80), SHARDLM_ENOMEM);
    cr_assert_not_null(strstr(shardlm_err_get(), "KV cache full"));
    cr_assert_eq(a.n_blocks, 3);
    cr_assert_arr_eq(a.blocks, before, sizeof before);
    cr_assert_eq(a.n_tokens, 48);
    cr_assert_eq(shardlm_kv_n_free(kv), 1);
    cr_assert_eq(shardlm_kv_check(kv), SHARDLM_OK, "%s", shardlm_err_get());
    /* A second sequence can take the last block but not two. */
    int32_t q[20];
    prompt_fill(q, 20, 3);
    cr_assert_eq(shardlm_kv_seq_begin(kv, &b, q, 20), 0);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &b, 20), SHARDLM_ENOMEM);
    cr_assert_eq(b.n_blocks, 0);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &b, 16), SHARDLM_OK);
    cr_assert_eq(shardlm_kv_n_free(kv), 0);
    cr_assert_float_eq(shardlm_kv_usage(kv), 1.0, 0);
    shardlm_kv_seq_free(kv, &b);
    shardlm_kv_seq_free(kv, &a);
    cr_assert_eq(shardlm_kv_n_free(kv), 4);
    shardlm_kv_free(kv);
}

Test(kvcache, shared_prefix_40_tokens)
{
    shardlm_kv *kv = kv_make(16, 16, 1);
    shardlm_kv_seq a, b;
    int32_t p[40];
    prompt_fill(p, 40, 4);
    cr_assert_eq(prefill(kv, &a, p, 40), 0);
    cr_assert_eq(shardlm_kv_block_registered(kv, a.blocks[0]), 1);
    cr_assert_eq(shardlm_kv_block_registered(kv, a.blocks[1]), 1);
    cr_assert_eq(shardlm_kv_block_registered(kv, a.blocks[2]), 0); /* partial */

    cr_assert_eq(shardlm_kv_seq_begin(kv, &b, p, 40), 32);
    cr_assert_eq(b.n_cached, 32);
    cr_assert_eq(b.n_tokens, 32);
    cr_assert_eq(b.n_blocks, 2);
    cr_assert_eq(b.blocks[0], a.blocks[0]);
    cr_assert_eq(b.blocks[1], a.blocks[1]);
    cr_assert_eq(shardlm_kv_block_refcount(kv, a.blocks[0]), 2);
    cr_assert_eq(shardlm_kv_block_refcount(kv, a.blocks[1]), 2);
    cr_assert_eq(shardlm_kv_block_refcount(kv, a.blocks[2]), 1);
    cr_assert_eq(shardlm_kv_prefix_queries(kv), 80);
    cr_assert_eq(shardlm_kv_prefix_hits(kv), 32);

    cr_assert_eq(shardlm_kv_seq_reserve(kv, &b, 40), SHARDLM_OK);
    shardlm_kv_seq_commit(kv, &b, p, 40);
    cr_assert_eq(b.n_blocks, 3);
    cr_assert_neq(b.blocks[2], a.blocks[2]);
    cr_assert_float_eq(shardlm_kv_usage(kv), 4.0 / 16, 1e-12);
    cr_assert_eq(shardlm_kv_n_free(kv), 12);

    shardlm_kv_seq_free(kv, &a);
    cr_assert_eq(shardlm_kv_block_refcount(kv, b.blocks[0]), 1);
    cr_assert_float_eq(shardlm_kv_usage(kv), 3.0 / 16, 1e-12);
    shardlm_kv_seq_free(kv, &b);
    cr_assert_float_eq(shardlm_kv_usage(kv), 0.0, 0);
    cr_assert_eq(shardlm_kv_n_free(kv), 16);
    cr_assert_eq(shardlm_kv_check(kv), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_kv_free(kv);
}

Test(kvcache, exact_block_multiple_leaves_last_token)
{
    shardlm_kv *kv = kv_make(8, 16, 1);
    shardlm_kv_seq a, b;
    int32_t p[32];
    prompt_fill(p, 32, 5);
    prefill(kv, &a, p, 32);
    int second = a.blocks[1];
    cr_assert_eq(shardlm_kv_block_registered(kv, second), 1);
    shardlm_kv_seq_free(kv, &a);
    cr_assert_eq(shardlm_kv_seq_begin(kv, &b, p, 32), 16);
    cr_assert_eq(b.n_blocks, 1);
    /* The second block is recomputed into a fresh block, then deduped. */
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &b, 32), SHARDLM_OK);
    cr_assert_neq(b.blocks[1], second);
    shardlm_kv_seq_commit(kv, &b, p, 32);
    cr_assert_eq(b.blocks[1], second);
    cr_assert_eq(shardlm_kv_n_free(kv), 8 - 2);
    cr_assert_eq(shardlm_kv_prefix_hits(kv), 16);
    cr_assert_eq(shardlm_kv_prefix_queries(kv), 64);
    /* A 17-token prompt covers 16; a 16-token one covers nothing. */
    shardlm_kv_seq c, d;
    cr_assert_eq(shardlm_kv_seq_begin(kv, &c, p, 17), 16);
    cr_assert_eq(shardlm_kv_seq_begin(kv, &d, p, 16), 0);
    shardlm_kv_seq_free(kv, &d);
    shardlm_kv_seq_free(kv, &c);
    shardlm_kv_seq_free(kv, &b);
    cr_assert_eq(shardlm_kv_check(kv), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_kv_free(kv);
}

Test(kvcache, differing_token_in_block_two)
{
    shardlm_kv *kv = kv_make(16, 16, 1);
    shardlm_kv_seq a, b, c;
    int32_t p[50], q[50], r[50];
    prompt_fill(p, 50, 6);
    prefill(kv, &a, p, 50);
    memcpy(q, p, sizeof q);
    q[20] = -7;
    cr_assert_eq(shardlm_kv_seq_begin(kv, &b, q, 50), 16);
    cr_assert_eq(b.blocks[0], a.blocks[0]);
    /* A change in block 1 also hides block 2, which has the same tokens. */
    memcpy(r, p, sizeof r);
    r[3] = -7;
    cr_assert_eq(shardlm_kv_seq_begin(kv, &c, r, 50), 0);
    cr_assert_eq(shardlm_kv_prefix_hits(kv), 16);
    cr_assert_eq(shardlm_kv_prefix_queries(kv), 150);
    shardlm_kv_seq_free(kv, &c);
    shardlm_kv_seq_free(kv, &b);
    shardlm_kv_seq_free(kv, &a);
    shardlm_kv_free(kv);
}

Test(kvcache, forced_hash_collision_never_false_hit)
{
    shardlm_kv *kv = kv_make(32, 8, 1);
    shardlm_kv_test_hash_mask(kv, 0); /* every block hashes to 0 */
    shardlm_kv_seq a, b, c, d;
    int32_t pa[17], pb[17], pc[17];
    /* pa = [A, C, x]; pb = [B, D, x]; pc = [B, C, x]. */
    prompt_fill(pa, 17, 7);
    prompt_fill(pb, 17, 8);
    memcpy(pc, pb, 8 * sizeof(int32_t));
    memcpy(pc + 8, pa + 8, 9 * sizeof(int32_t));
    prefill(kv, &a, pa, 17);
    cr_assert_eq(prefill(kv, &b, pb, 17), 0);
    /* Block B hits; C exists in the cache, with the same (colliding) hash
     * and tokens, but after A, so it must not be used after B. */
    cr_assert_eq(shardlm_kv_seq_begin(kv, &c, pc, 17), 8);
    cr_assert_eq(c.blocks[0], b.blocks[0]);
    /* Identical prompts still hit through the colliding bucket. */
    cr_assert_eq(shardlm_kv_seq_begin(kv, &d, pa, 17), 16);
    cr_assert_eq(d.blocks[1], a.blocks[1]);
    cr_assert_eq(shardlm_kv_check(kv), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_kv_seq_free(kv, &d);
    shardlm_kv_seq_free(kv, &c);
    shardlm_kv_seq_free(kv, &b);
    shardlm_kv_seq_free(kv, &a);
    shardlm_kv_free(kv);
}

Test(kvcache, evicted_child_leaves_prefix_hit)
{
    /* A cached chain [A, C] under colliding hashes: eviction takes C first
     * (even after A was touched again), and A alone still hits. */
    shardlm_kv *kv = kv_make(3, 8, 1);
    shardlm_kv_test_hash_mask(kv, 0);
    shardlm_kv_seq a, x, y;
    int32_t pa[17], px[9], py[17];
    prompt_fill(pa, 17, 9);
    prefill(kv, &a, pa, 17); /* blocks 0 (A), 1 (C), 2 (partial) */
    int blk_a = a.blocks[0], blk_c = a.blocks[1];
    shardlm_kv_seq_free(kv, &a);
    /* LRU now: C (older), A. A 9-token prompt starting with A uses A. */
    cr_assert_eq(shardlm_kv_seq_begin(kv, &x, pa, 9), 8);
    shardlm_kv_seq_free(kv, &x);
    /* LRU: C, A, with the partial block free. Reserving 3 blocks takes the
     * free one, then evicts C, then A. */
    prompt_fill(px, 9, 10);
    cr_assert_eq(shardlm_kv_seq_begin(kv, &x, px, 9), 0);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &x, 9), SHARDLM_OK);
    cr_assert_eq(x.blocks[1], blk_c);
    cr_assert_eq(shardlm_kv_block_state(kv, blk_a), SHARDLM_KV_CACHED);
    shardlm_kv_seq_free(kv, &x);
    /* Now the chain's child C is gone; A still hits. */
    memcpy(py, pa, sizeof py);
    cr_assert_eq(shardlm_kv_seq_begin(kv, &y, py, 17), 8);
    shardlm_kv_seq_free(kv, &y);
    shardlm_kv_free(kv);
}

Test(kvcache, dedupe_identical_blocks)
{
    shardlm_kv *kv = kv_make(10, 16, 1);
    shardlm_kv_seq a, b;
    int32_t p[40];
    prompt_fill(p, 40, 11);
    /* Both begin before either has computed anything. */
    cr_assert_eq(shardlm_kv_seq_begin(kv, &a, p, 40), 0);
    cr_assert_eq(shardlm_kv_seq_begin(kv, &b, p, 40), 0);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &a, 40), SHARDLM_OK);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &b, 40), SHARDLM_OK);
    cr_assert_eq(shardlm_kv_n_free(kv), 4);
    int b0 = b.blocks[0], b1 = b.blocks[1], b2 = b.blocks[2];
    shardlm_kv_seq_commit(kv, &a, p, 40);
    shardlm_kv_seq_commit(kv, &b, p, 40);
    cr_assert_eq(b.blocks[0], a.blocks[0]);
    cr_assert_eq(b.blocks[1], a.blocks[1]);
    cr_assert_eq(b.blocks[2], b2); /* the partial block stays private */
    cr_assert_eq(shardlm_kv_block_refcount(kv, a.blocks[0]), 2);
    cr_assert_eq(shardlm_kv_block_refcount(kv, a.blocks[1]), 2);
    cr_assert_eq(shardlm_kv_block_state(kv, b0), SHARDLM_KV_FREE);
    cr_assert_eq(shardlm_kv_block_state(kv, b1), SHARDLM_KV_FREE);
    cr_assert_eq(shardlm_kv_n_free(kv), 6);
    cr_assert_float_eq(shardlm_kv_usage(kv), 0.4, 1e-12);
    cr_assert_eq(shardlm_kv_check(kv), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_kv_seq_free(kv, &a);
    shardlm_kv_seq_free(kv, &b);
    cr_assert_eq(shardlm_kv_n_free(kv), 10);
    shardlm_kv_free(kv);
}

Test(kvcache, decode_fills_and_registers_blocks)
{
    shardlm_kv *kv = kv_make(10, 8, 1);
    shardlm_kv_seq a, b;
    int32_t t[30];
    prompt_fill(t, 30, 12);
    cr_assert_eq(prefill(kv, &a, t, 5), 0);
    /* Decode one token at a time up to 20. */
    for (int n = 6; n <= 20; n++) {
        cr_assert_eq(shardlm_kv_seq_reserve(kv, &a, n), SHARDLM_OK);
        shardlm_kv_seq_commit(kv, &a, t, n);
        cr_assert_eq(a.n_full, n / 8);
        cr_assert_eq(shardlm_kv_block_registered(kv, a.blocks[(n - 1) / 8]), n % 8 == 0);
    }
    cr_assert_eq(a.n_blocks, 3);
    /* A prompt equal to prompt + generated text hits both full blocks. */
    cr_assert_eq(shardlm_kv_seq_begin(kv, &b, t, 30), 16);
    shardlm_kv_seq_free(kv, &b);
    shardlm_kv_seq_free(kv, &a);
    shardlm_kv_free(kv);
}

Test(kvcache, lru_eviction_order)
{
    /* 4 blocks of 8. Three 9-token prompts each leave one cached block. */
    shardlm_kv *kv = kv_make(4, 8, 1);
    int32_t p[3][9];
    int cached[3];
    for (int i = 0; i < 3; i++) {
        shardlm_kv_seq s;
        prompt_fill(p[i], 9, 20 + i);
        prefill(kv, &s, p[i], 9);
        cached[i] = s.blocks[0];
        shardlm_kv_seq_free(kv, &s);
    }
    for (int i = 0; i < 3; i++) cr_assert_eq(shardlm_kv_block_state(kv, cached[i]), SHARDLM_KV_CACHED);
    cr_assert_eq(shardlm_kv_n_free(kv), 4);
    cr_assert_float_eq(shardlm_kv_usage(kv), 0.0, 0);
    /* Two blocks: the free one, then the oldest cached (prompt 0). */
    shardlm_kv_seq x, y;
    int32_t q[16];
    prompt_fill(q, 16, 30);
    shardlm_kv_seq_begin(kv, &x, q, 16);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &x, 16), SHARDLM_OK);
    cr_assert_eq(x.blocks[1], cached[0]);
    cr_assert_eq(shardlm_kv_block_state(kv, cached[1]), SHARDLM_KV_CACHED);
    /* Evicted blocks no longer hit; the others do. */
    cr_assert_eq(shardlm_kv_seq_begin(kv, &y, p[0], 9), 0);
    shardlm_kv_seq_free(kv, &y);
    cr_assert_eq(shardlm_kv_seq_begin(kv, &y, p[2], 9), 8);
    shardlm_kv_seq_free(kv, &y); /* prompt 2's block is now the newest */
    /* One more: prompt 1 is now the oldest. */
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &x, 24), SHARDLM_OK);
    cr_assert_eq(x.blocks[2], cached[1]);
    cr_assert_eq(shardlm_kv_seq_begin(kv, &y, p[1], 9), 0);
    shardlm_kv_seq_free(kv, &y);
    cr_assert_eq(shardlm_kv_seq_begin(kv, &y, p[2], 9), 8);
    shardlm_kv_seq_free(kv, &y);
    shardlm_kv_seq_free(kv, &x);
    cr_assert_float_eq(shardlm_kv_usage(kv), 0.0, 0);
    cr_assert_eq(shardlm_kv_check(kv), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_kv_free(kv);
}

Test(kvcache, tail_block_evicted_before_prefix)
{
    shardlm_kv *kv = kv_make(3, 8, 1);
    shardlm_kv_seq a, x;
    int32_t p[17], q[9];
    prompt_fill(p, 17, 40);
    prefill(kv, &a, p, 17);
    int first = a.blocks[0], second = a.blocks[1];
    shardlm_kv_seq_free(kv, &a);
    prompt_fill(q, 9, 41);
    shardlm_kv_seq_begin(kv, &x, q, 9);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &x, 16), SHARDLM_OK); /* free + 1 evicted */
    cr_assert_eq(x.blocks[1], second);
    cr_assert_eq(shardlm_kv_block_state(kv, first), SHARDLM_KV_CACHED);
    shardlm_kv_seq_free(kv, &x);
    shardlm_kv_free(kv);
}

Test(kvcache, prefix_caching_off_never_hits)
{
    shardlm_kv *kv = kv_make(16, 16, 0);
    shardlm_kv_seq a, b;
    int32_t p[40];
    prompt_fill(p, 40, 13);
    prefill(kv, &a, p, 40);
    cr_assert_eq(shardlm_kv_block_registered(kv, a.blocks[0]), 0);
    cr_assert_eq(prefill(kv, &b, p, 40), 0);
    cr_assert_neq(b.blocks[0], a.blocks[0]);
    shardlm_kv_seq_free(kv, &a);
    cr_assert_eq(prefill(kv, &a, p, 40), 0);
    cr_assert_eq(shardlm_kv_prefix_hits(kv), 0);
    cr_assert_eq(shardlm_kv_prefix_queries(kv), 0);
    shardlm_kv_seq_free(kv, &a);
    shardlm_kv_seq_free(kv, &b);
    for (int i = 0; i < 16; i++) cr_assert_eq(shardlm_kv_block_state(kv, i), SHARDLM_KV_FREE);
    shardlm_kv_free(kv);
}

/* ---- randomized stress against a reference model ---- */

#define ST_SEQS 12
#define ST_MAXTOK 160

typedef struct {
    int live;
    int32_t tok[ST_MAXTOK]; /* prompt, then generated tokens */
    int n_tok;              /* tokens known (prompt + generated) */
    int n_prompt;
    shardlm_kv_seq s;
} st_seq;

typedef struct {
    shardlm_kv *kv;
    int bs, n_blocks, prefix;
    uint64_t rng;
    uint64_t *slot; /* simulated KV: [n_blocks * bs] prefix fingerprints */
    st_seq seq[ST_SEQS];
    int32_t stems[3][ST_MAXTOK];
    uint64_t queries, hits;
    int dedupes, preemptions;
} st_world;

static uint64_t st_rand(st_world *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static int st_below(st_world *w, int n)
{
    return (int)(st_rand(w) % (uint64_t)n);
}

/* What the KV at position p "is": a function of tokens[0..p] only. */
static uint64_t st_fingerprint(const int32_t *t, int p)
{
    uint64_t h = 0x1234567;
    for (int i = 0; i <= p; i++) h = (h ^ (uint64_t)(uint32_t)t[i]) * 0x9E3779B97F4A7C15ULL + 1;
    return h;
}

static size_t st_slot(const st_world *w, const st_seq *q, int p)
{
    return (size_t)q->s.blocks[p / w->bs] * (size_t)w->bs + (size_t)(p % w->bs);
}

/* Every stored position of every live sequence holds KV for its own prefix:
 * shared blocks were computed for the same prefix, and nobody overwrote
 * a block another sequence reads. */
static void st_check_content(const st_world *w)
{
    for (int i = 0; i < ST_SEQS; i++) {
        const st_seq *q = &w->seq[i];
        if (!q->live) continue;
        for (int p = 0; p < q->s.n_tokens; p++)
            cr_assert_eq(w->slot[st_slot(w, q, p)], st_fingerprint(q->tok, p), "seq %d position %d", i, p);
    }
}

/* Refcounts equal table occurrences; each block is exactly one of free,
 * referenced, cached; the counters agree. */
static void st_check_blocks(const st_world *w)
{
    int *count = calloc((size_t)w->n_blocks, sizeof(int));
    for (int i = 0; i < ST_SEQS; i++) {
        const st_seq *q = &w->seq[i];
        if (!q->live) continue;
        cr_assert_leq(q->s.n_tokens, q->s.n_blocks * w->bs);
        cr_assert_eq(q->s.n_full, q->s.n_tokens / w->bs);
        for (int j = 0; j < q->s.n_blocks; j++) count[q->s.blocks[j]]++;
        for (int j = 0; j < q->s.n_blocks; j++)
            for (int k = 0; k < j; k++) cr_assert_neq(q->s.blocks[j], q->s.blocks[k]);
    }
    int used = 0, free_or_cached = 0;
    for (int b = 0; b < w->n_blocks; b++) {
        cr_assert_eq(shardlm_kv_block_refcount(w->kv, b), count[b], "block %d", b);
        int st = shardlm_kv_block_state(w->kv, b);
        if (count[b] > 0) {
            cr_assert_eq(st, SHARDLM_KV_USED);
            used++;
        } else {
            cr_assert(st == SHARDLM_KV_FREE || st == SHARDLM_KV_CACHED);
            free_or_cached++;
        }
        if (!w->prefix) cr_assert_eq(shardlm_kv_block_registered(w->kv, b), 0);
    }
    cr_assert_eq(shardlm_kv_n_free(w->kv), free_or_cached);
    cr_assert_float_eq(shardlm_kv_usage(w->kv), (double)used / w->n_blocks, 1e-12);
    cr_assert_eq(shardlm_kv_prefix_queries(w->kv), w->queries);
    cr_assert_eq(shardlm_kv_prefix_hits(w->kv), w->hits);
    cr_assert_eq(shardlm_kv_check(w->kv), SHARDLM_OK, "%s", shardlm_err_get());
    free(count);
}

/* Prompts share one of a few random stems for a random length, then go
 * on with random tokens, so whole-block matches and near misses are common.
 * Sometimes a prompt replays a live sequence's tokens, as a preempted
 * sequence does when it restarts. */
static void st_prompt(st_world *w, st_seq *q)
{
    int n = 1 + st_below(w, 100);
    const st_seq *o = &w->seq[st_below(w, ST_SEQS)];
    if (o != q && o->live && o->n_tok > 0 && st_below(w, 4) == 0) {
        n = o->n_tok;
        memcpy(q->tok, o->tok, (size_t)n * sizeof(int32_t));
    } else {
        int stem = st_below(w, 3), shared = st_below(w, n + 1);
        for (int i = 0; i < n; i++) q->tok[i] = i < shared ? w->stems[stem][i] : st_below(w, 3);
    }
    q->n_tok = q->n_prompt = n;
}

static void st_begin(st_world *w, st_seq *q)
{
    st_prompt(w, q);
    int n = q->n_prompt;
    int covered = shardlm_kv_seq_begin(w->kv, &q->s, q->tok, n);
    cr_assert_geq(covered, 0);
    cr_assert_eq(covered % w->bs, 0);
    cr_assert_leq(covered, ((n - 1) / w->bs) * w->bs);
    if (!w->prefix) cr_assert_eq(covered, 0);
    if (w->prefix) w->queries += (uint64_t)n, w->hits += (uint64_t)covered;
    q->live = 1;
}

static void st_end(st_world *w, st_seq *q)
{
    shardlm_kv_seq_free(w->kv, &q->s);
    cr_assert_null(q->s.blocks);
    q->live = 0;
}

/* One step: a prefill chunk or one decode token; preempts on ENOMEM. */
static void st_step(st_world *w, st_seq *q)
{
    int done = q->s.n_tokens;
    int target = done < q->n_prompt ? done + 1 + st_below(w, q->n_prompt - done) : done + 1;
    if (target > ST_MAXTOK) {
        st_end(w, q);
        return;
    }
    int32_t before[64];
    int nb = q->s.n_blocks, nfree = shardlm_kv_n_free(w->kv);
    memcpy(before, q->s.blocks, (size_t)nb * sizeof(int32_t));
    int rc = shardlm_kv_seq_reserve(w->kv, &q->s, target);
    if (rc == SHARDLM_ENOMEM) {
        cr_assert_eq(q->s.n_blocks, nb);
        cr_assert_arr_eq(q->s.blocks, before, (size_t)nb * sizeof(int32_t));
        cr_assert_eq(shardlm_kv_n_free(w->kv), nfree);
        st_end(w, q); /* preempted */
        w->preemptions++;
        return;
    }
    cr_assert_eq(rc, SHARDLM_OK);
    if (target > q->n_tok) q->tok[q->n_tok++] = st_below(w, 3); /* sampled */
    for (int p = done; p < target; p++) w->slot[st_slot(w, q, p)] = st_fingerprint(q->tok, p);
    shardlm_kv_seq_commit(w->kv, &q->s, q->tok, target);
    cr_assert_eq(q->s.n_tokens, target);
    for (int i = 0; i < nb && i < q->s.n_blocks; i++) w->dedupes += q->s.blocks[i] != before[i];
    for (int i = nb; i < q->s.n_blocks; i++) w->dedupes += shardlm_kv_block_refcount(w->kv, q->s.blocks[i]) > 1;
}

static void st_run(int n_blocks, int bs, int prefix, uint64_t mask, uint64_t seed, int ops)
{
    st_world w = {.bs = bs, .n_blocks = n_blocks, .prefix = prefix, .rng = seed};
    w.kv = kv_make(n_blocks, bs, prefix);
    shardlm_kv_test_hash_mask(w.kv, mask);
    w.slot = calloc((size_t)n_blocks * (size_t)bs, sizeof(uint64_t));
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < ST_MAXTOK; j++) w.stems[i][j] = st_below(&w, 50);
    for (int op = 0; op < ops; op++) {
        st_seq *q = &w.seq[st_below(&w, ST_SEQS)];
        int r = st_below(&w, 20);
        if (!q->live)
            st_begin(&w, q);
        else if (r == 0)
            st_end(&w, q);
        else
            st_step(&w, q);
        st_check_content(&w);
        if (op % 7 == 0) st_check_blocks(&w);
    }
    for (int i = 0; i < ST_SEQS; i++)
        if (w.seq[i].live) st_end(&w, &w.seq[i]);
    st_check_blocks(&w);
    cr_assert_float_eq(shardlm_kv_usage(w.kv), 0.0, 0);
    cr_assert_eq(shardlm_kv_n_free(w.kv), n_blocks);
    cr_log_info("stress bs %d: %d ops, %llu/%llu tokens hit, %d dedupes, %d preemptions", bs, ops,
                (unsigned long long)w.hits, (unsigned long long)w.queries, w.dedupes, w.preemptions);
    cr_assert_gt(w.preemptions, 0, "the pool never ran out");
    if (prefix) {
        cr_assert_gt(w.hits * 10, w.queries, "too few prefix-cache hits to test much");
        cr_assert_gt(w.dedupes, 0, "no duplicate block was ever merged");
    }
    free(w.slot);
    shardlm_kv_free(w.kv);
}

Test(kvcache, stress_prefix_bs8)
{
    st_run(48, 8, 1, ~0ULL, 0x9e3779b97f4a7c15ULL, 20000);
}

Test(kvcache, stress_prefix_bs16_tight_pool)
{
    st_run(20, 16, 1, ~0ULL, 12345, 20000);
}

Test(kvcache, stress_prefix_bs32)
{
    st_run(24, 32, 1, ~0ULL, 777, 20000);
}

Test(kvcache, stress_prefix_colliding_hashes)
{
    st_run(48, 8, 1, 0x3, 4242, 20000);
}

Test(kvcache, stress_no_prefix)
{
    st_run(30, 16, 0, ~0ULL, 99, 10000);
}
