/* test_attention.c - the paged attention kernel (kernels/cpu/attention.c)
 * against the scalar reference shardlm_ref_attention on random caches, on
 * every SIMD path this CPU supports, with and without a thread pool; its
 * batch invariance; the KV row formats; RoPE from tables against
 * shardlm_ref_rope; and --kv-cache-type end to end. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_kernels.h"
#include "test_util.h"


static int irand(int n) { return (int)(((tu_frand() + 1.0f) * 0.5f) * (float)n) % n; }

/* A random cache: n_blocks blocks, filled with random rows of type t (so
 * unused blocks hold data too), and per sequence a table of distinct blocks
 * in random order, so a sequence's positions jump between distant blocks. */
typedef struct {
    shardlm_kv_view kv;
    uint8_t *k, *v;
    int n_seqs, *table_len;
    int32_t **tables;
} cache;

static void cache_make(cache *c, shardlm_dtype t, int hd, int n_kv, int bs, int n_blocks, int n_seqs, int blocks_each)
{
    size_t rb = shardlm_kv_row_bytes(t, hd), n_rows = (size_t)n_blocks * bs * n_kv;
    c->k = malloc(n_rows * rb);
    c->v = malloc(n_rows * rb);
    float *row = malloc((size_t)hd * sizeof(float));
    for (size_t r = 0; r < n_rows; r++) {
        for (int e = 0; e < hd; e++) row[e] = tu_frand() * 2.0f;
        shardlm_kv_store(t, row, hd, c->k + r * rb);
        for (int e = 0; e < hd; e++) row[e] = tu_frand();
        shardlm_kv_store(t, row, hd, c->v + r * rb);
    }
    free(row);
    int *perm = malloc((size_t)n_blocks * sizeof(int));
    for (int b = 0; b < n_blocks; b++) perm[b] = b;
    for (int b = n_blocks - 1; b > 0; b--) {
        int o = irand(b + 1), x = perm[b];
        perm[b] = perm[o];
        perm[o] = x;
    }
    c->n_seqs = n_seqs;
    c->tables = malloc((size_t)n_seqs * sizeof(int32_t *));
    for (int q = 0; q < n_seqs; q++) {
        c->tables[q] = malloc((size_t)blocks_each * sizeof(int32_t));
        for (int b = 0; b < blocks_each; b++) c->tables[q][b] = perm[(q * blocks_each + b) % n_blocks];
    }
    free(perm);
    c->kv = (shardlm_kv_view){t, hd, n_kv, bs, c->k, c->v};
}

static void cache_free(cache *c)
{
    for (int q = 0; q < c->n_seqs; q++) free(c->tables[q]);
    free(c->tables);
    free(c->k);
    free(c->v);
}

/* Tolerance per output element, relative to max|v| = 1 of the random
 * cache: scores are dot products whose f32 rounding is at most about
 * 1e-6 * scale * sum|q_i k_i| in practice; a score error d moves the
 * output by at most 2 d max|v| (the softmax's slope); the polynomial exp
 * adds 2e-7 relative per weight, and the weighted sum's order another few
 * ulp of max|v|. 1e-5 * (1 + scale * sum|q_i| * max|k|) covers all of that
 * with a wide margin and still catches a wrong row or a wrong weight. */
static float tol_for(const float *q, int hd, float kmax)
{
    float sq = 0.0f;
    for (int e = 0; e < hd; e++) sq += fabsf(q[e]);
    return 1e-5f * (1.0f + sq * kmax / sqrtf((float)hd));
}

typedef struct {
    shardlm_dtype t;
    int hd, n_q, group, bs;
} att_case;

/* Tokens of 3 sequences at positions that end inside, at the start and at
 * the end of a block, and at 0; several tokens of one sequence too. */
static void check_case(const att_case *ac, shardlm_pool *pool, const char *isa)
{
    int n_kv = (ac->n_q + ac->group - 1) / ac->group, len = 5 * ac->bs + 3, blocks_each = (len + ac->bs - 1) / ac->bs;
    cache c;
    cache_make(&c, ac->t, ac->hd, n_kv, ac->bs, 3 * blocks_each + 2, 3, blocks_each);
    int32_t pos[] = {len - 1, 0, ac->bs - 1, ac->bs, 2 * ac->bs + 1, len - 2, 1};
    int32_t seq[] = {0, 1, 2, 1, 0, 2, 2};
    int n = (int)(sizeof pos / sizeof pos[0]);
    size_t qw = (size_t)ac->n_q * ac->hd;
    float *q = malloc(n * qw * sizeof(float)), *out = malloc(n * qw * sizeof(float)), *ref = malloc(n * qw * sizeof(float));
    for (size_t e = 0; e < n * qw; e++) q[e] = tu_frand() * 2.0f;
    shardlm_attn_batch b = {n, pos, seq, (const int32_t *const *)c.tables, ac->n_q, 0, 0, ac->group, q, ref};
    shardlm_ref_attention(&c.kv, &b);
    b.out = out;
    shardlm_attention(pool, &c.kv, &b);
    for (int i = 0; i < n; i++)
        for (int h = 0; h < ac->n_q; h++) {
            float tol = tol_for(q + i * qw + (size_t)h * ac->hd, ac->hd, 2.0f);
            for (int e = 0; e < ac->hd; e++) {
                size_t k = i * qw + (size_t)h * ac->hd + e;
                cr_assert_leq(fabsf(out[k] - ref[k]), tol,
                              "%s %s hd=%d group=%d bs=%d pool=%d: token %d (pos %d) head %d [%d] = %.9g, ref %.9g",
                              isa, shardlm_dtype_name(ac->t), ac->hd, ac->group, ac->bs, pool != NULL, i, pos[i], h, e,
                              out[k], ref[k]);
            }
        }
    free(q);
    free(out);
    free(ref);
    cache_free(&c);
}

Test(attention, matches_reference_on_every_isa, .timeout = 120)
{
    static const int hds[] = {8, 12, 32, 64, 128}, groups[] = {1, 4, 8}, bss[] = {1, 3, 16};
    static const shardlm_dtype types[] = {SHARDLM_DT_F32, SHARDLM_DT_F16, SHARDLM_DT_Q8_0};
    shardlm_pool *pool = NULL;
    cr_assert_eq(shardlm_pool_new(3, 0, &pool), 0);
    for (size_t s = 0; s < TU_N_ISAS; s++) {
        if (shardlm_kernels_force_isa(tu_isas[s]) != 0) continue;
        for (size_t t = 0; t < 3; t++)
            for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
                for (size_t g = 0; g < 3; g++)
                    for (size_t k = 0; k < 3; k++) {
                        att_case ac = {types[t], hds[h], 8, groups[g], bss[k]};
                        check_case(&ac, NULL, tu_isas[s]);
                        check_case(&ac, pool, tu_isas[s]);
                    }
    }
    shardlm_pool_free(pool);
}

/* A rank's query heads start at q_head0 and its KV heads at kv_head0, and
 * with fewer KV heads than ranks several ranks hold the same KV head. */
Test(attention, rank_offsets_and_replicated_kv_heads)
{
    cache c;
    int hd = 16, bs = 4;
    cache_make(&c, SHARDLM_DT_F32, hd, 1, bs, 8, 1, 8);
    int32_t pos[] = {29}, seq[] = {0};
    float q[2 * 16], out[2 * 16], ref[2 * 16];
    for (int e = 0; e < 2 * hd; e++) q[e] = tu_frand();
    /* rank 3 of 4, 8 query heads and 2 KV heads: q heads 6, 7 use KV head 1 */
    shardlm_attn_batch b = {1, pos, seq, (const int32_t *const *)c.tables, 2, 6, 1, 4, q, ref};
    shardlm_ref_attention(&c.kv, &b);
    b.out = out;
    shardlm_attention(NULL, &c.kv, &b);
    for (int e = 0; e < 2 * hd; e++) cr_assert_leq(fabsf(out[e] - ref[e]), tol_for(q + (e / hd) * hd, hd, 2.0f));
    cache_free(&c);
}

/* A token's output must not depend on the rest of the batch or on the
 * thread count: compare every token alone, single-threaded, bit for bit. */
Test(attention, batch_invariant_bitwise)
{
    shardlm_pool *pool = NULL;
    cr_assert_eq(shardlm_pool_new(2, 0, &pool), 0);
    for (size_t s = 0; s < TU_N_ISAS; s++) {
        if (shardlm_kernels_force_isa(tu_isas[s]) != 0) continue;
        for (int t = 0; t < 3; t++) {
            shardlm_dtype ty = t == 0 ? SHARDLM_DT_F32 : t == 1 ? SHARDLM_DT_F16 : SHARDLM_DT_Q8_0;
            int hd = 64, n_q = 8, bs = 16, n = 5;
            cache c;
            cache_make(&c, ty, hd, 2, bs, 40, 3, 12);
            int32_t pos[] = {150, 3, 77, 191, 16}, seq[] = {0, 1, 2, 1, 0};
            size_t qw = (size_t)n_q * hd;
            float *q = malloc(n * qw * sizeof(float)), *all = malloc(n * qw * sizeof(float)), one[8 * 64];
            for (size_t e = 0; e < n * qw; e++) q[e] = tu_frand();
            shardlm_attn_batch b = {n, pos, seq, (const int32_t *const *)c.tables, n_q, 0, 0, 4, q, all};
            shardlm_attention(pool, &c.kv, &b);
            for (int i = 0; i < n; i++) {
                shardlm_attn_batch b1 = {1, pos + i, seq + i, (const int32_t *const *)c.tables, n_q, 0, 0, 4,
                                         q + i * qw, one};
                shardlm_attention(NULL, &c.kv, &b1);
                cr_assert_eq(memcmp(one, all + i * qw, qw * sizeof(float)), 0, "%s %s token %d differs in a batch",
                             tu_isas[s], shardlm_dtype_name(ty), i);
            }
            free(q);
            free(all);
            cache_free(&c);
        }
    }
    shardlm_pool_free(pool);
}

/* F16 rows: round to nearest, relative error <= 2^-11. Q8_0 rows: per
 * chunk of 32, |x - x'| <= d/2 + 127 * |d - f16(d)| <= d/2 + 127 * d * 2^-11. */
Test(attention, kv_row_formats_round_trip)
{
    cr_assert_eq(shardlm_kv_row_bytes(SHARDLM_DT_F32, 64), 256);
    cr_assert_eq(shardlm_kv_row_bytes(SHARDLM_DT_F16, 64), 128);
    cr_assert_eq(shardlm_kv_row_bytes(SHARDLM_DT_Q8_0, 64), 68);
    cr_assert_eq(shardlm_kv_row_bytes(SHARDLM_DT_Q8_0, 8), 10);
    cr_assert_eq(shardlm_kv_row_bytes(SHARDLM_DT_Q4_0, 64), 0);
    static const int hds[] = {8, 40, 64, 128};
    for (size_t h = 0; h < 4; h++) {
        int hd = hds[h];
        float x[128], y[128];
        uint8_t row[512];
        for (int e = 0; e < hd; e++) x[e] = tu_frand() * 3.0f;
        x[hd - 1] = 0.0f;
        shardlm_kv_store(SHARDLM_DT_F16, x, hd, row);
        shardlm_kv_load(SHARDLM_DT_F16, row, hd, y);
        for (int e = 0; e < hd; e++) cr_assert_leq(fabsf(y[e] - x[e]), fabsf(x[e]) * 0x1p-11f + 1e-7f);
        shardlm_kv_store(SHARDLM_DT_Q8_0, x, hd, row);
        shardlm_kv_load(SHARDLM_DT_Q8_0, row, hd, y);
        for (int e = 0; e < hd; e++) {
            int c0 = e / 32 * 32, c1 = c0 + 32 < hd ? c0 + 32 : hd;
            float amax = 0.0f;
            for (int i = c0; i < c1; i++) amax = fmaxf(amax, fabsf(x[i]));
            float d = amax / 127.0f;
            cr_assert_leq(fabsf(y[e] - x[e]), d / 2 + 127.0f * d * 0x1p-11f + 1e-7f, "hd %d [%d]", hd, e);
        }
    }
    float z[32] = {0}, zz[32];
    uint8_t zr[64];
    shardlm_kv_store(SHARDLM_DT_Q8_0, z, 32, zr);
    shardlm_kv_load(SHARDLM_DT_Q8_0, zr, 32, zz);
    for (int e = 0; e < 32; e++) cr_assert_eq(zz[e], 0.0f);
}

/* RoPE from tables is the reference's arithmetic, so it must agree bit for
 * bit (which is within the required 1e-6 relative), on every path. */
Test(rope, tables_match_reference_bitwise)
{
    static const int dims[][2] = {{8, 8}, {64, 64}, {128, 128}, {128, 64}, {48, 16}, {6, 6}};
    static const int poss[] = {0, 1, 7, 255, 1000, 4095, 32767};
    static const float bases[] = {10000.0f, 500000.0f};
    for (size_t s = 0; s < TU_N_ISAS; s++) {
        if (shardlm_kernels_force_isa(tu_isas[s]) != 0) continue;
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
            for (size_t b = 0; b < 2; b++) {
                int hd = dims[d][0], rd = dims[d][1], nh = 5;
                float freq[64], tab[256], x[5 * 128], y[5 * 128];
                shardlm_rope_freqs(freq, rd, bases[b]);
                for (size_t p = 0; p < sizeof poss / sizeof poss[0]; p++) {
                    for (int e = 0; e < nh * hd; e++) x[e] = y[e] = tu_frand() * 4.0f;
                    shardlm_ref_rope(x, nh, hd, rd, poss[p], bases[b]);
                    shardlm_rope_table(tab, freq, rd, poss[p]);
                    shardlm_rope(y, nh, hd, rd, tab);
                    for (int e = 0; e < nh * hd; e++)
                        cr_assert_eq(x[e], y[e], "%s hd %d rope %d pos %d [%d]: %.9g vs ref %.9g", tu_isas[s], hd, rd,
                                     poss[p], e, y[e], x[e]);
                }
            }
    }
}

/* ---- --kv-cache-type end to end (stories260K, 2 ranks) ---- */

static float *kv_run(const char *type, const char *n, const char *logits, char **text)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    char *argv[] = {(char *)tu_bin(), "generate", "-m", model, "--temp", "0", "-n", (char *)n, "--world-size", "2",
                    "--kv-cache-type", (char *)type, "--logits-out", (char *)logits, NULL};
    remove(logits);
    tu_result r = tu_run(argv, NULL, 300);
    cr_assert_eq(r.exit_code, 0, "--kv-cache-type %s: exit %d, stderr:\n%s", type, r.exit_code, r.err);
    *text = strdup(r.out);
    tu_result_free(&r);
    size_t len = 0;
    float *l = (float *)tu_read_file(logits, &len);
    cr_assert_not_null(l);
    cr_assert_eq(len, (size_t)atoi(n) * 512 * sizeof(float));
    return l;
}

/* Bounds measured on this model (docs/PERFORMANCE.md, "Attention and KV
 * cache"): f16 keeps Karpathy's 256-token greedy text, logits within 0.023
 * of f32's (bound 0.1); Q8_0 rows of stories260K's head_dim 8 are 8 values
 * per scale, so the text first changes at token 118: over the first 100
 * tokens the text is the golden text's start and the logits are within 0.9
 * (max) / 0.1 (mean) of f32's (bounds 1.5 and 0.25). */
static void kv_check(const char *type, const char *n, float max_bound, float mean_bound, int whole_text)
{
    char f32p[512], tp[512], *f32t, *tt;
    snprintf(f32p, sizeof f32p, "%s/kv-f32.f32", tu_tmpdir());
    snprintf(tp, sizeof tp, "%s/kv-%s.f32", tu_tmpdir(), type);
    float *ref = kv_run("f32", n, f32p, &f32t), *x = kv_run(type, n, tp, &tt);
    char *golden = tu_read_file(tu_shared("models/stories260K.greedy.txt"), NULL);
    cr_assert_not_null(golden);
    if (whole_text) cr_assert_str_eq(tt, golden, "--kv-cache-type %s changed the greedy text", type);
    else { /* the golden text's start, but for the final newline generate adds */
        size_t len = strlen(tt);
        if (len && tt[len - 1] == '\n') len--;
        cr_assert_eq(strncmp(tt, golden, len), 0, "--kv-cache-type %s: text is not the golden start:\n%s", type, tt);
    }
    size_t cnt = (size_t)atoi(n) * 512;
    double worst = 0, sum = 0;
    for (size_t i = 0; i < cnt; i++) {
        double d = fabs((double)x[i] - ref[i]);
        worst = d > worst ? d : worst;
        sum += d;
    }
    cr_assert_leq(worst, max_bound, "--kv-cache-type %s: max |logit diff| %g", type, worst);
    cr_assert_leq(sum / (double)cnt, mean_bound, "--kv-cache-type %s: mean |logit diff| %g", type, sum / (double)cnt);
    free(ref), free(x), free(f32t), free(tt), free(golden);
}

Test(kv_cache_type, f16_keeps_the_golden_text, .timeout = 300) { kv_check("f16", "256", 0.1f, 0.01f, 1); }
Test(kv_cache_type, q8_0_within_its_bound, .timeout = 300) { kv_check("q8_0", "100", 1.5f, 0.25f, 0); }

Test(kv_cache_type, bad_value_exits_2_naming_the_flag)
{
    const char *cmds[] = {"generate", "serve", "bench"};
    for (int i = 0; i < 3; i++) {
        char *argv[] = {(char *)tu_bin(), (char *)cmds[i], "-m", "x.gguf", "--kv-cache-type", "q4_0", NULL};
        tu_result r = tu_run(argv, NULL, 30);
        cr_assert_eq(r.exit_code, 2, "%s: exit %d", cmds[i], r.exit_code);
        cr_assert(strstr(r.err, "--kv-cache-type") != NULL, "%s stderr: %s", cmds[i], r.err);
        tu_result_free(&r);
    }
}
