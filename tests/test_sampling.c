/* test_sampling.c - rank 0's request sampler: greedy, logit_bias, top_k,
 * top_p, min_p and the three penalties checked on the processed logits;
 * seeded reproducibility and batch independence; the empirical distribution
 * against the softmax; logprobs against a double log-softmax; truncation
 * against a full-sort reference at vocab 32000; the stopper across pieces
 * and UTF-8; parameter checks; the finish reason; the unchanged
 * `shardlm generate` sampler; and the cost per token at vocab 32000. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampling.h"
#include "shardlm_common.h"
#include "shardlm_runtime.h"

/* ---- helpers ---- */

static uint64_t t_rng = 88172645463325252ull;
static double t_unif(void)
{
    t_rng ^= t_rng << 13;
    t_rng ^= t_rng >> 7;
    t_rng ^= t_rng << 17;
    return (double)(t_rng >> 11) * 0x1.0p-53;
}

static float t_gauss(void)
{
    double u = t_unif() + 1e-12, v = t_unif();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

static void fill_gauss(float *x, int n, float sigma)
{
    for (int i = 0; i < n; i++) x[i] = sigma * t_gauss();
}

static shardlm_seq_sampler *mk(const shardlm_sampling_params *p, const int32_t *prompt, int n_prompt)
{
    shardlm_seq_sampler *s = NULL;
    cr_assert_eq(shardlm_seq_sampler_new(p, prompt, n_prompt, 0, &s), SHARDLM_OK);
    return s;
}

static shardlm_sampling_params seeded(uint64_t seed)
{
    shardlm_sampling_params p = shardlm_sampling_params_default();
    p.seed = seed;
    p.has_seed = 1;
    return p;
}

/* One pick from a copy of x (the sampler overwrites its row). */
static int32_t pick(shardlm_seq_sampler *s, const shardlm_sampling_params *p, const float *x, int n)
{
    float *row = malloc((size_t)n * sizeof *row);
    memcpy(row, x, (size_t)n * sizeof *row);
    int32_t id = shardlm_seq_sample(s, p, row, n, NULL);
    free(row);
    cr_assert(id >= 0 && id < n, "pick %d out of range", (int)id);
    return id;
}

static int32_t ref_argmax(const float *x, int n)
{
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* ---- greedy, bias, top_k, top_p, min_p ---- */

Test(sampling, greedy_is_argmax_lowest_id_on_ties)
{
    shardlm_sampling_params p = seeded(1);
    p.temperature = 0.0f;
    shardlm_seq_sampler *s = mk(&p, NULL, 0);
    float x[1000];
    for (int r = 0; r < 50; r++) {
        fill_gauss(x, 1000, 2.0f);
        cr_assert_eq(pick(s, &p, x, 1000), ref_argmax(x, 1000));
    }
    float tie[5] = {1, 3, 0, 3, 2};
    cr_assert_eq(pick(s, &p, tie, 5), 1);
    shardlm_seq_sampler_free(s);
}

Test(sampling, logit_bias_forces_and_forbids)
{
    float x[50];
    fill_gauss(x, 50, 2.0f);
    int32_t top = ref_argmax(x, 50), low = top == 7 ? 8 : 7;
    shardlm_logit_bias force = {low, 100.0f};
    shardlm_sampling_params p = seeded(3);
    p.logit_bias = &force;
    p.n_logit_bias = 1;
    shardlm_seq_sampler *s = mk(&p, NULL, 0);
    for (int i = 0; i < 500; i++) cr_assert_eq(pick(s, &p, x, 50), low);
    shardlm_seq_sampler_free(s);

    /* -100 on the argmax: greedy takes the runner-up, sampling never it. */
    shardlm_logit_bias ban = {top, -100.0f};
    p.logit_bias = &ban;
    p.temperature = 0.0f;
    s = mk(&p, NULL, 0);
    float y[50];
    memcpy(y, x, sizeof y);
    y[top] = -1e30f;
    cr_assert_eq(pick(s, &p, x, 50), ref_argmax(y, 50));
    shardlm_seq_sampler_free(s);
    p.temperature = 2.0f;
    s = mk(&p, NULL, 0);
    for (int i = 0; i < 2000; i++) cr_assert_neq(pick(s, &p, x, 50), top);
    shardlm_seq_sampler_free(s);

    /* Bias beyond +-100 is clamped: the processed logit shows it. */
    shardlm_logit_bias big = {2, 500.0f};
    p.logit_bias = &big;
    s = mk(&p, NULL, 0);
    float z[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    shardlm_seq_process_logits(s, &p, z, 4);
    cr_assert_float_eq(z[2], 100.5f, 1e-4);
    cr_assert_eq(z[0], 0.5f);
    shardlm_seq_sampler_free(s);
}

Test(sampling, top_k_1_is_greedy_at_any_temperature)
{
    const float temps[] = {0.3f, 1.0f, 2.0f};
    float x[2000];
    for (int t = 0; t < 3; t++) {
        shardlm_sampling_params p = seeded(10 + (uint64_t)t);
        p.temperature = temps[t];
        p.top_k = 1;
        shardlm_seq_sampler *s = mk(&p, NULL, 0);
        for (int r = 0; r < 30; r++) {
            fill_gauss(x, 2000, 1.0f);
            cr_assert_eq(pick(s, &p, x, 2000), ref_argmax(x, 2000));
        }
        shardlm_seq_sampler_free(s);
    }
}

Test(sampling, tiny_top_p_is_argmax)
{
    shardlm_sampling_params p = seeded(5);
    p.temperature = 1.5f;
    p.top_p = 1e-6f;
    shardlm_seq_sampler *s = mk(&p, NULL, 0);
    float x[3000];
    for (int r = 0; r < 30; r++) {
        fill_gauss(x, 3000, 0.5f); /* flat: the head has to grow */
        cr_assert_eq(pick(s, &p, x, 3000), ref_argmax(x, 3000));
    }
    shardlm_seq_sampler_free(s);
}

Test(sampling, min_p_filters)
{
    /* p = .5 .3 .15 .05: min_p .2 drops below .1 (token 3); .7 keeps token 0 only. */
    float x[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    int seen[4] = {0};
    shardlm_sampling_params p = seeded(9);
    p.min_p = 0.2f;
    shardlm_seq_sampler *s = mk(&p, NULL, 0);
    for (int i = 0; i < 4000; i++) seen[pick(s, &p, x, 4)]++;
    shardlm_seq_sampler_free(s);
    cr_assert(seen[0] && seen[1] && seen[2]);
    cr_assert_eq(seen[3], 0);
    p.min_p = 0.7f;
    p.top_k = 3; /* the sorted path applies min_p too */
    s = mk(&p, NULL, 0);
    for (int i = 0; i < 1000; i++) cr_assert_eq(pick(s, &p, x, 4), 0);
    shardlm_seq_sampler_free(s);
}

/* ---- penalties, on the processed logits ---- */

static void processed(const shardlm_sampling_params *p, const float *in, float *out)
{
    const int32_t prompt[] = {1, 2};
    shardlm_seq_sampler *s = mk(p, prompt, 2);
    cr_assert_eq(shardlm_seq_sampler_accept(s, 2), SHARDLM_OK);
    cr_assert_eq(shardlm_seq_sampler_accept(s, 3), SHARDLM_OK);
    cr_assert_eq(shardlm_seq_sampler_accept(s, 3), SHARDLM_OK);
    cr_assert_eq(shardlm_seq_sampler_n_generated(s), 3);
    memcpy(out, in, 5 * sizeof *out);
    shardlm_seq_process_logits(s, p, out, 5);
    shardlm_seq_sampler_free(s);
}

static void expect5(const float *got, float a, float b, float c, float d, float e)
{
    const float want[5] = {a, b, c, d, e};
    for (int i = 0; i < 5; i++) cr_assert_float_eq(got[i], want[i], 1e-6, "logit %d: %g, want %g", i, got[i], want[i]);
}

Test(sampling, penalties_change_exactly_their_logits)
{
    /* prompt {1, 2}; generated 2, 3, 3 */
    const float in[5] = {1.0f, 2.0f, -1.0f, 4.0f, 3.0f};
    float out[5];
    shardlm_sampling_params p = seeded(1);
    processed(&p, in, out);
    expect5(out, 1.0f, 2.0f, -1.0f, 4.0f, 3.0f);

    p.repetition_penalty = 2.0f; /* prompt and output: / positive, * negative */
    processed(&p, in, out);
    expect5(out, 1.0f, 1.0f, -2.0f, 2.0f, 3.0f);

    p = seeded(1);
    p.presence_penalty = 0.5f; /* generated only, once */
    processed(&p, in, out);
    expect5(out, 1.0f, 2.0f, -1.5f, 3.5f, 3.0f);

    p = seeded(1);
    p.frequency_penalty = -0.25f; /* generated only, per occurrence */
    processed(&p, in, out);
    expect5(out, 1.0f, 2.0f, -0.75f, 4.5f, 3.0f);

    shardlm_logit_bias b = {3, 1.0f};
    p = seeded(1);
    p.repetition_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.logit_bias = &b;
    p.n_logit_bias = 1; /* bias first: (4 + 1) / 2 - 0.5 - 0.5 */
    processed(&p, in, out);
    expect5(out, 1.0f, 1.0f, -2.75f, 1.5f, 3.0f);
}

Test(sampling, sampled_tokens_count_for_the_penalties)
{
    shardlm_sampling_params p = seeded(1);
    p.temperature = 0.0f;
    p.frequency_penalty = 0.6f;
    shardlm_seq_sampler *s = mk(&p, NULL, 0);
    const float x[3] = {2.0f, 1.5f, 0.0f};
    /* 2.0 > 1.5 -> 0; 1.4 < 1.5 -> 1; 1.4 > 0.9 -> 0; 0.8 < 0.9 -> 1 ... */
    const int32_t want[6] = {0, 1, 0, 1, 0, 1};
    for (int i = 0; i < 6; i++) cr_assert_eq(pick(s, &p, x, 3), want[i], "step %d", i);
    cr_assert_eq(shardlm_seq_sampler_n_generated(s), 6);
    shardlm_seq_sampler_free(s);
}

/* ---- reproducibility ---- */

static void run_seq(shardlm_seq_sampler *s, const shardlm_sampling_params *p, const float *x, int n, int32_t *out,
                    int count)
{
    for (int i = 0; i < count; i++) out[i] = pick(s, p, x, n);
}

Test(sampling, same_seed_same_200_samples)
{
    float x[500];
    fill_gauss(x, 500, 1.0f);
    shardlm_sampling_params p = seeded(1234);
    p.top_p = 0.95f;
    int32_t a[200], b[200], c[200];
    shardlm_seq_sampler *s = mk(&p, NULL, 0);
    run_seq(s, &p, x, 500, a, 200);
    shardlm_seq_sampler_free(s);
    s = mk(&p, NULL, 0);
    run_seq(s, &p, x, 500, b, 200);
    shardlm_seq_sampler_free(s);
    cr_assert_arr_eq(a, b, sizeof a);
    p.seed = 1235;
    s = mk(&p, NULL, 0);
    run_seq(s, &p, x, 500, c, 200);
    shardlm_seq_sampler_free(s);
    cr_assert(memcmp(a, c, sizeof a) != 0, "another seed gives another sequence");
    /* Choices of one seeded request get different streams. */
    p.seed = 1234;
    cr_assert_eq(shardlm_seq_sampler_new(&p, NULL, 0, 1, &s), SHARDLM_OK);
    run_seq(s, &p, x, 500, c, 200);
    shardlm_seq_sampler_free(s);
    cr_assert(memcmp(a, c, sizeof a) != 0, "choice 1 differs from choice 0");
}

Test(sampling, interleaved_samplers_match_their_solo_runs)
{
    float x[300];
    fill_gauss(x, 300, 1.0f);
    shardlm_sampling_params pa = seeded(11), pb = seeded(22), pc = seeded(33);
    pb.top_k = 20;
    pb.presence_penalty = 0.3f;
    pc.temperature = 0.0f; /* a greedy neighbour in the batch */
    int32_t a[200], b[200], ia[200], ib[200];
    shardlm_seq_sampler *sa = mk(&pa, NULL, 0), *sb = mk(&pb, NULL, 0), *sc = mk(&pc, NULL, 0);
    run_seq(sa, &pa, x, 300, a, 200);
    run_seq(sb, &pb, x, 300, b, 200);
    shardlm_seq_sampler_free(sa);
    shardlm_seq_sampler_free(sb);
    sa = mk(&pa, NULL, 0);
    sb = mk(&pb, NULL, 0);
    int na = 0, nb = 0;
    for (int step = 0; na < 200 || nb < 200; step++) {
        if (step % 3 != 2 && nb < 200) ib[nb++] = pick(sb, &pb, x, 300);
        pick(sc, &pc, x, 300);
        if (step % 2 == 0 && na < 200) ia[na++] = pick(sa, &pa, x, 300);
    }
    cr_assert_arr_eq(a, ia, sizeof a);
    cr_assert_arr_eq(b, ib, sizeof b);
    shardlm_seq_sampler_free(sa);
    shardlm_seq_sampler_free(sb);
    shardlm_seq_sampler_free(sc);
}

/* ---- distribution: 20000 draws, max |freq - p| <= 0.02 (~5.6 sigma) ---- */

static void expect_distribution(const shardlm_sampling_params *p, const float *x, const double *want)
{
    enum { N = 20000 };
    int seen[4] = {0};
    shardlm_seq_sampler *s = mk(p, NULL, 0);
    for (int i = 0; i < N; i++) seen[pick(s, p, x, 4)]++;
    shardlm_seq_sampler_free(s);
    for (int i = 0; i < 4; i++)
        cr_assert(fabs(seen[i] / (double)N - want[i]) <= 0.02, "token %d: %.4f, want %.4f", i, seen[i] / (double)N,
                  want[i]);
}

Test(sampling, empirical_distribution_matches_softmax)
{
    const float x[4] = {logf(0.1f) + 3.0f, logf(0.2f) + 3.0f, logf(0.3f) + 3.0f, logf(0.4f) + 3.0f};
    shardlm_sampling_params p = seeded(77);
    expect_distribution(&p, x, (const double[]){0.1, 0.2, 0.3, 0.4});
    p.temperature = 0.5f; /* p^2, renormalised over 0.30 */
    expect_distribution(&p, x, (const double[]){0.01 / 0.3, 0.04 / 0.3, 0.09 / 0.3, 0.16 / 0.3});
    p.temperature = 1.0f;
    p.top_p = 0.65f; /* 0.4 + 0.3 reaches it: {3, 2} renormalised */
    expect_distribution(&p, x, (const double[]){0, 0, 3.0 / 7, 4.0 / 7});
    p.top_p = 1.0f;
    p.top_k = 3;
    expect_distribution(&p, x, (const double[]){0, 2.0 / 9, 3.0 / 9, 4.0 / 9});
    p.top_p = 0.5f; /* after top_k: .44 + .33 reaches .5 of the renormalised */
    expect_distribution(&p, x, (const double[]){0, 0, 3.0 / 7, 4.0 / 7});
}

/* ---- truncation against a full-sort reference at vocab 32000 ---- */

typedef struct {
    float l;
    int32_t id;
} ref_c;

static int ref_desc(const void *a, const void *b)
{
    const ref_c *x = a, *y = b;
    if (x->l != y->l) return x->l < y->l ? 1 : -1;
    return x->id - y->id;
}

/* Membership of the kept set: sort all, cut by top_k, top_p, min_p. */
static void ref_kept(const float *x, int n, const shardlm_sampling_params *p, unsigned char *kept)
{
    ref_c *c = malloc((size_t)n * sizeof *c);
    for (int i = 0; i < n; i++) c[i] = (ref_c){x[i], i};
    qsort(c, (size_t)n, sizeof *c, ref_desc);
    int k = p->top_k > 0 && p->top_k < n ? p->top_k : n;
    double z = 0.0, cum = 0.0;
    for (int i = 0; i < k; i++) z += exp((c[i].l - c[0].l) / p->temperature);
    int keep = k;
    for (int i = 0; i < k && p->top_p < 1.0f; i++) {
        cum += exp((c[i].l - c[0].l) / p->temperature);
        if (cum >= p->top_p * z) {
            keep = i + 1;
            break;
        }
    }
    memset(kept, 0, (size_t)n);
    for (int i = 0; i < keep; i++)
        if (i == 0 || exp((c[i].l - c[0].l) / p->temperature) >= p->min_p * 0.999) kept[c[i].id] = 1;
    free(c);
}

Test(sampling, truncation_matches_full_sort_reference)
{
    enum { V = 32000 };
    float *x = malloc(V * sizeof *x);
    unsigned char *kept = malloc(V);
    const struct {
        int k;
        float p, minp, t, sigma;
    } cases[] = {{40, 1.0f, 0, 1.0f, 2.0f},   {0, 0.9f, 0, 1.0f, 4.0f},  {0, 0.9f, 0, 1.0f, 0.3f},
                 {50, 0.8f, 0, 0.7f, 1.0f},  {0, 0.5f, 0.05f, 1.2f, 3.0f}, {1000, 0.95f, 0, 1.0f, 1.0f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fill_gauss(x, V, cases[c].sigma);
        shardlm_sampling_params p = seeded(100 + c);
        p.top_k = cases[c].k;
        p.top_p = cases[c].p;
        p.min_p = cases[c].minp;
        p.temperature = cases[c].t;
        ref_kept(x, V, &p, kept);
        shardlm_seq_sampler *s = mk(&p, NULL, 0);
        for (int i = 0; i < 200; i++) {
            int32_t id = pick(s, &p, x, V);
            cr_assert(kept[id], "case %zu: token %d (logit %g) is outside the kept set", c, (int)id, x[id]);
        }
        shardlm_seq_sampler_free(s);
    }
    free(kept);
    free(x);
}

/* ---- logprobs ---- */

Test(sampling, logprobs_are_log_softmax_of_processed_logits)
{
    enum { V = 400 };
    float x[V], row[V];
    fill_gauss(x, V, 2.0f);
    shardlm_logit_bias b = {17, 5.0f};
    shardlm_sampling_params p = seeded(8);
    p.logprobs = 1;
    p.top_logprobs = 5;
    p.logit_bias = &b;
    p.n_logit_bias = 1;
    double y[V], m = -INFINITY, z = 0.0;
    for (int i = 0; i < V; i++) y[i] = x[i] + (i == 17 ? 5.0 : 0.0), m = fmax(m, y[i]);
    for (int i = 0; i < V; i++) z += exp(y[i] - m);
    double lse = m + log(z);
    for (int greedy = 1; greedy >= 0; greedy--) {
        p.temperature = greedy ? 0.0f : 1.0f;
        shardlm_seq_sampler *s = mk(&p, NULL, 0);
        for (int r = 0; r < 20; r++) {
            shardlm_logprobs lp;
            memcpy(row, x, sizeof row);
            int32_t id = shardlm_seq_sample(s, &p, row, V, &lp);
            cr_assert_eq(lp.token, id);
            cr_assert_float_eq(lp.logprob, y[id] - lse, 1e-5);
            cr_assert_eq(lp.n_top, 5);
            int has_chosen = 0;
            for (int i = 0; i < lp.n_top; i++) {
                cr_assert_float_eq(lp.top[i].logprob, y[lp.top[i].token] - lse, 1e-5);
                if (i) cr_assert(lp.top[i - 1].logprob >= lp.top[i].logprob, "sorted descending");
                has_chosen |= lp.top[i].token == id;
            }
            cr_assert_eq(lp.top[0].token, 17, "the biased token leads");
            if (greedy) cr_assert(has_chosen && lp.top[0].token == id);
        }
        shardlm_seq_sampler_free(s);
    }
}

/* ---- stop strings ---- */

typedef struct {
    char out[512];
    size_t n;
    int stopped;
} feed_log;

static size_t feed(shardlm_stopper *st, feed_log *f, const char *piece)
{
    const char *t;
    size_t k = shardlm_stopper_feed(st, piece, strlen(piece), &t, &f->stopped);
    cr_assert_neq(k, (size_t)-1);
    memcpy(f->out + f->n, t, k);
    f->n += k;
    f->out[f->n] = 0;
    return k;
}

static size_t flush(shardlm_stopper *st, feed_log *f)
{
    const char *t;
    size_t k = shardlm_stopper_flush(st, &t);
    memcpy(f->out + f->n, t, k);
    f->n += k;
    f->out[f->n] = 0;
    return k;
}

static void stopper(shardlm_stopper *st, int n, const char *const *stops)
{
    cr_assert_eq(shardlm_stopper_init(st, stops, n), SHARDLM_OK);
}

Test(stopper, stop_split_over_three_pieces)
{
    shardlm_stopper st;
    stopper(&st, 1, (const char *const[]){"STOP"});
    feed_log f = {0};
    cr_assert_eq(feed(&st, &f, "Hello ST"), 6);
    cr_assert_eq(feed(&st, &f, "O"), 0);
    cr_assert_eq(f.stopped, 0);
    feed(&st, &f, "P world");
    cr_assert_eq(f.stopped, 1);
    cr_assert_eq(st.matched, 0);
    cr_assert_eq(feed(&st, &f, "more"), 0);
    cr_assert_eq(flush(&st, &f), 0);
    cr_assert_str_eq(f.out, "Hello ");
    shardlm_stopper_free(&st);
}

Test(stopper, false_start_releases_held_text)
{
    shardlm_stopper st;
    stopper(&st, 1, (const char *const[]){"Hello"});
    feed_log f = {0};
    cr_assert_eq(feed(&st, &f, "Hel"), 0);
    cr_assert_eq(feed(&st, &f, "p"), 4);
    cr_assert_str_eq(f.out, "Help");
    cr_assert_eq(feed(&st, &f, " HeHel"), 3); /* "Hel" may still start it */
    cr_assert_eq(flush(&st, &f), 3);
    cr_assert_str_eq(f.out, "Help HeHel");
    cr_assert_eq(f.stopped, 0);
    shardlm_stopper_free(&st);
}

Test(stopper, several_stop_strings_earliest_wins)
{
    shardlm_stopper st;
    stopper(&st, 3, (const char *const[]){"###", "\n\nUser:", "END"});
    feed_log f = {0};
    feed(&st, &f, "abc\n\nUs");
    cr_assert_str_eq(f.out, "abc");
    feed(&st, &f, "er: x");
    cr_assert(f.stopped && st.matched == 1);
    cr_assert_str_eq(f.out, "abc");
    shardlm_stopper_free(&st);

    stopper(&st, 3, (const char *const[]){"###", "\n\nUser:", "END"});
    feed_log g = {0};
    feed(&st, &g, "foo END ### bar");
    cr_assert(g.stopped && st.matched == 2);
    cr_assert_str_eq(g.out, "foo ");
    shardlm_stopper_free(&st);
}

Test(stopper, utf8_characters_are_never_cut)
{
    shardlm_stopper st;
    stopper(&st, 0, NULL);
    feed_log f = {0};
    cr_assert_eq(feed(&st, &f, "a\xC3"), 1); /* é's lead byte waits */
    cr_assert_eq(feed(&st, &f, "\xA9z"), 3);
    cr_assert_eq(feed(&st, &f, "\xF0\x9F"), 0); /* a 4-byte emoji in three pieces */
    cr_assert_eq(feed(&st, &f, "\x98"), 0);
    cr_assert_eq(feed(&st, &f, "\x80!"), 5);
    cr_assert_str_eq(f.out, "a\xC3\xA9z\xF0\x9F\x98\x80!");
    shardlm_stopper_free(&st);

    /* "世" could start the stop "世界": held whole, then released whole. */
    stopper(&st, 1, (const char *const[]){"\xE4\xB8\x96\xE7\x95\x8C"});
    feed_log g = {0};
    cr_assert_eq(feed(&st, &g, "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96"), 6);
    cr_assert_eq(feed(&st, &g, "\xE4\xBA"), 3);
    cr_assert_eq(feed(&st, &g, "\xBA"), 3);
    cr_assert_str_eq(g.out, "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE4\xBA\xBA");
    shardlm_stopper_free(&st);

    /* A stray byte is not held for ever. */
    stopper(&st, 0, NULL);
    feed_log h = {0};
    cr_assert_eq(feed(&st, &h, "x\xE4"), 1);
    cr_assert_eq(feed(&st, &h, "y"), 2);
    shardlm_stopper_free(&st);
}

Test(stopper, byte_pieces_of_utf8_text_emit_whole_characters)
{
    const char *text = "na\xC3\xAFve caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x99\x82 fin\xC3\xA9 STOP\xC3\xA9 tail";
    shardlm_stopper st;
    stopper(&st, 1, (const char *const[]){"\xC3\xA9 STOP"});
    feed_log f = {0};
    for (size_t i = 0; text[i] && !f.stopped; i++) {
        char one[2] = {text[i], 0};
        size_t before = f.n, k = feed(&st, &f, one);
        /* Each chunk starts and ends on a character boundary. */
        if (k) {
            cr_assert(((unsigned char)f.out[before] & 0xC0) != 0x80);
            cr_assert(f.n == strlen(text) || ((unsigned char)text[f.n] & 0xC0) != 0x80);
        }
    }
    flush(&st, &f);
    cr_assert(f.stopped);
    cr_assert_str_eq(f.out, "na\xC3\xAFve caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x99\x82 fin");
    shardlm_stopper_free(&st);
}

Test(stopper, flush_releases_held_text_at_the_end)
{
    shardlm_stopper st;
    stopper(&st, 2, (const char *const[]){"xyz", "</s>"});
    feed_log f = {0};
    cr_assert_eq(feed(&st, &f, "abcx"), 3);
    cr_assert_eq(feed(&st, &f, "y"), 0);
    cr_assert_eq(flush(&st, &f), 2);
    cr_assert_str_eq(f.out, "abcxy");
    cr_assert_eq(f.stopped, 0);
    shardlm_stopper_free(&st);
}

/* Random texts over {a, b, c} cut into random pieces: the output is the
 * text up to the first stop string, whatever the cuts. */
Test(stopper, random_pieces_match_reference)
{
    const char *stops[] = {"abc", "cab", "bbbb"};
    for (int trial = 0; trial < 500; trial++) {
        char text[120];
        int n = 1 + (int)(t_unif() * 100);
        for (int i = 0; i < n; i++) text[i] = "abc"[(int)(t_unif() * 3)];
        text[n] = 0;
        size_t want = (size_t)n;
        for (int k = 0; k < 3; k++) {
            const char *hit = strstr(text, stops[k]);
            if (hit && (size_t)(hit - text) < want) want = (size_t)(hit - text);
        }
        shardlm_stopper st;
        stopper(&st, 3, stops);
        feed_log f = {0};
        for (int i = 0; i < n;) {
            int len = 1 + (int)(t_unif() * 5);
            if (i + len > n) len = n - i;
            char piece[8];
            memcpy(piece, text + i, (size_t)len);
            piece[len] = 0;
            feed(&st, &f, piece);
            i += len;
        }
        flush(&st, &f);
        cr_assert_eq(f.n, want, "trial %d: %s", trial, text);
        cr_assert(memcmp(f.out, text, want) == 0);
        cr_assert_eq(f.stopped, want < (size_t)n);
        shardlm_stopper_free(&st);
    }
}

Test(stopper, init_rejects_bad_stop_lists)
{
    shardlm_stopper st;
    char big[SHARDLM_STOP_MAX_LEN + 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cr_assert_eq(shardlm_stopper_init(&st, (const char *const[]){"a", "b", "c", "d", "e"}, 5), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "stop"));
    cr_assert_eq(shardlm_stopper_init(&st, (const char *const[]){"a", ""}, 2), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_stopper_init(&st, (const char *const[]){big}, 1), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "stop"));
}

/* ---- parameter checks ---- */

Test(sampling, params_check_names_each_bad_parameter)
{
    char why[200];
    shardlm_sampling_params p = shardlm_sampling_params_default();
    cr_assert_eq(shardlm_sampling_params_check(&p, 100, why, sizeof why), SHARDLM_OK);
    shardlm_logit_bias good[2] = {{5, 100.0f}, {6, -300.0f}};
    p.logit_bias = good;
    p.n_logit_bias = 2;
    p.temperature = 2.0f;
    p.top_p = 1e-9f;
    p.min_p = 1.0f;
    p.presence_penalty = -2.0f;
    p.frequency_penalty = 2.0f;
    p.repetition_penalty = 0.01f;
    p.logprobs = 1;
    p.top_logprobs = 20;
    p.top_k = 1000000;
    cr_assert_eq(shardlm_sampling_params_check(&p, 100, why, sizeof why), SHARDLM_OK, "%s", why);

    shardlm_logit_bias outside = {100, 1.0f}, negative = {-1, 1.0f}, nanb = {3, NAN}, dup[2] = {{4, 1}, {4, 2}};
#define BAD(field_stmt, name)                                                                            \
    do {                                                                                                 \
        shardlm_sampling_params q = shardlm_sampling_params_default();                                   \
        field_stmt;                                                                                      \
        why[0] = 0;                                                                                      \
        cr_assert_eq(shardlm_sampling_params_check(&q, 100, why, sizeof why), SHARDLM_EINPUT, "%s", #field_stmt); \
        cr_assert(strncmp(why, name " ", strlen(name) + 1) == 0, "%s: '%s'", #field_stmt, why);         \
        cr_assert_str_eq(shardlm_err_get(), why);                                                         \
    } while (0)
    BAD(q.temperature = NAN, "temperature");
    BAD(q.temperature = INFINITY, "temperature");
    BAD(q.temperature = -0.1f, "temperature");
    BAD(q.temperature = 2.01f, "temperature");
    BAD(q.top_k = -1, "top_k");
    BAD(q.top_p = 0.0f, "top_p");
    BAD(q.top_p = 1.0001f, "top_p");
    BAD(q.top_p = NAN, "top_p");
    BAD(q.top_p = -0.5f, "top_p");
    BAD(q.min_p = -0.01f, "min_p");
    BAD(q.min_p = 1.5f, "min_p");
    BAD(q.min_p = NAN, "min_p");
    BAD(q.repetition_penalty = 0.0f, "repetition_penalty");
    BAD(q.repetition_penalty = -1.0f, "repetition_penalty");
    BAD(q.repetition_penalty = INFINITY, "repetition_penalty");
    BAD(q.repetition_penalty = NAN, "repetition_penalty");
    BAD(q.presence_penalty = 2.5f, "presence_penalty");
    BAD(q.presence_penalty = -INFINITY, "presence_penalty");
    BAD(q.frequency_penalty = -2.01f, "frequency_penalty");
    BAD(q.frequency_penalty = NAN, "frequency_penalty");
    BAD(q.logprobs = 1; q.top_logprobs = 21, "top_logprobs");
    BAD(q.logprobs = 1; q.top_logprobs = -1, "top_logprobs");
    BAD(q.top_logprobs = 2, "top_logprobs");
    BAD(q.logit_bias = &outside; q.n_logit_bias = 1, "logit_bias");
    BAD(q.logit_bias = &negative; q.n_logit_bias = 1, "logit_bias");
    BAD(q.logit_bias = &nanb; q.n_logit_bias = 1, "logit_bias");
    BAD(q.logit_bias = dup; q.n_logit_bias = 2, "logit_bias");
    BAD(q.logit_bias = NULL; q.n_logit_bias = 1, "logit_bias");
    BAD(q.logit_bias = dup; q.n_logit_bias = SHARDLM_LOGIT_BIAS_MAX + 1, "logit_bias");
#undef BAD
}

/* ---- finish reason ---- */

Test(sampling, finish_reason)
{
    cr_assert_eq(shardlm_finish_decide(0, 0, 3, 10, 0), SHARDLM_FINISH_NONE);
    cr_assert_eq(shardlm_finish_decide(1, 0, 3, 10, 0), SHARDLM_FINISH_STOP);
    cr_assert_eq(shardlm_finish_decide(0, 1, 3, 10, 0), SHARDLM_FINISH_STOP);
    cr_assert_eq(shardlm_finish_decide(0, 0, 10, 10, 0), SHARDLM_FINISH_LENGTH);
    cr_assert_eq(shardlm_finish_decide(1, 0, 10, 10, 0), SHARDLM_FINISH_STOP, "stop wins on the last token");
    cr_assert_eq(shardlm_finish_decide(0, 0, 500, 0, 0), SHARDLM_FINISH_NONE, "no max_tokens");
    cr_assert_eq(shardlm_finish_decide(0, 0, 500, 0, 1), SHARDLM_FINISH_LENGTH, "context full");
    cr_assert_str_eq(shardlm_finish_reason_str(SHARDLM_FINISH_STOP), "stop");
    cr_assert_str_eq(shardlm_finish_reason_str(SHARDLM_FINISH_LENGTH), "length");
    cr_assert_null(shardlm_finish_reason_str(SHARDLM_FINISH_NONE));
}


/* ---- cost per token at vocab 32000 (printed, not asserted) ---- */

static double bench(const shardlm_sampling_params *p, const float *x, int n, int reps)
{
    float *row = malloc((size_t)n * sizeof *row);
    shardlm_seq_sampler *s = mk(p, NULL, 0);
    double total = 0.0;
    for (int r = 0; r < reps; r++) {
        memcpy(row, x, (size_t)n * sizeof *row);
        uint64_t t0 = shardlm_now_ns();
        shardlm_seq_sample(s, p, row, n, NULL);
        total += (double)(shardlm_now_ns() - t0);
    }
    shardlm_seq_sampler_free(s);
    free(row);
    return total / reps / 1e3;
}

Test(sampling, cost_per_token_at_vocab_32000)
{
    enum { V = 32000, REPS = 200 };
    float *x = malloc(V * sizeof *x);
    const float sigmas[2] = {4.0f, 1.0f}; /* peaked (LLM-like head), flat */
    /* greedy, temperature 1, top_p 0.9, top_k 40, all three, logprobs */
    const float temp[6] = {0, 1, 1, 1, 1, 1}, top_p[6] = {1, 1, 0.9f, 1, 0.9f, 1}, min_p[6] = {0, 0, 0, 0, 0.05f, 0};
    const int top_k[6] = {0, 0, 0, 40, 40, 0};
    for (int d = 0; d < 2; d++) {
        fill_gauss(x, V, sigmas[d]);
        double us[6];
        for (int c = 0; c < 6; c++) {
            shardlm_sampling_params p = seeded(1);
            p.temperature = temp[c], p.top_p = top_p[c], p.min_p = min_p[c], p.top_k = top_k[c];
            p.logprobs = c == 5, p.top_logprobs = c == 5 ? 5 : 0;
            us[c] = bench(&p, x, V, REPS);
        }
        fprintf(stderr,
                "sampling cost, vocab %d, logits N(0,%g): greedy %.1f us, temp-1 %.1f us, top_p 0.9 %.1f us, "
                "top_k 40 %.1f us, top_k+top_p+min_p %.1f us, temp-1+top_logprobs 5 %.1f us\n",
                V, (double)sigmas[d], us[0], us[1], us[2], us[3], us[4], us[5]);
    }
    free(x);
}
