/* bench_spec.c - `shardlm bench --spec ...`: one request decoded through
 * the scheduler with speculation off and on, in alternating rounds, on a
 * repetitive prompt and on a plain story (BOS alone); reports tokens/s of
 * each, the speed-up measured in the same run, the acceptance rate, and
 * whether the two texts are identical. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_spec.h"
#include "scheduler.h"
#include "shardlm_common.h"

#define SPEC_TEXT_MAX 16384

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, n;
    char text[SPEC_TEXT_MAX];
    size_t len;
} spec_sink;

static void spec_on_token(void *ctx, const char *text, size_t len, int32_t tok, const shardlm_logprobs *lp)
{
    spec_sink *k = ctx;
    (void)lp;
    pthread_mutex_lock(&k->mu);
    if (k->len + len < sizeof k->text) memcpy(k->text + k->len, text, len), k->len += len;
    k->n += tok >= 0;
    pthread_mutex_unlock(&k->mu);
}

static void spec_on_end(void *ctx, shardlm_finish_reason why, int np, int nc)
{
    spec_sink *k = ctx;
    (void)why, (void)np, (void)nc;
    pthread_mutex_lock(&k->mu);
    k->done = 1;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

static void *spec_thread(void *arg)
{
    shardlm_sched_run(arg);
    return NULL;
}

typedef struct {
    double tok_s;
    uint64_t drafts, dtoks, acc, steps;
} spec_round;

/* One greedy request of n tokens from a fresh scheduler (no prefix cache,
 * so every round computes its prompt). */
static int spec_one(shardlm_node *n, const shardlm_spec_opts *spec, const int32_t *prompt, int n_prompt, int n_tok,
                    spec_sink *k, spec_round *out)
{
    shardlm_sched_opts so = {1, shardlm_engine_max_batch(n->engine), 4, n->block_size, 0, 0, *spec};
    shardlm_sched *s = NULL;
    int rc = shardlm_sched_new(n->engine, n->tok, &so, &s);
    if (rc) return rc;
    pthread_t th;
    pthread_create(&th, NULL, spec_thread, s);
    memset(k, 0, sizeof *k);
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    shardlm_request_desc d = {.prompt = prompt, .n_prompt = n_prompt, .params = shardlm_sampling_params_default(),
                              .max_tokens = n_tok, .ignore_eos = 1};
    d.params.temperature = 0;
    shardlm_request_cb cb = {.on_token = spec_on_token, .on_end = spec_on_end, .ctx = k};
    uint64_t id;
    double t0 = shardlm_now_s();
    rc = shardlm_sched_submit(s, &d, cb, &id);
    pthread_mutex_lock(&k->mu);
    while (!rc && !k->done) pthread_cond_wait(&k->cv, &k->mu); /* the scheduler always ends a request */
    pthread_mutex_unlock(&k->mu);
    double dt = shardlm_now_s() - t0;
    shardlm_sched_stats st;
    shardlm_sched_stats_get(s, &st);
    shardlm_sched_stop(s);
    pthread_join(th, NULL);
    shardlm_sched_free(s);
    if (!rc && !st.healthy) rc = SHARDLM_ERUNTIME;
    *out = (spec_round){k->n / dt, st.spec_drafts, st.spec_draft_tokens, st.spec_accepted, st.steps};
    return rc;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double med(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The repetitive prompt: a sentence the model keeps repeating. */
static const char *spec_repetitive = "The cat sat. The cat sat. The cat sat. The cat sat. The cat sat. The cat sat.";

static int spec_prompt(const shardlm_node *n, int which, int32_t *toks, int cap, int *len)
{
    if (which == 1) { /* the plain story: BOS alone */
        toks[0] = shardlm_tokenizer_bos(n->tok);
        *len = 1;
        return SHARDLM_OK;
    }
    size_t m = 0;
    int rc = shardlm_tokenizer_encode(n->tok, spec_repetitive, strlen(spec_repetitive), 1, toks, (size_t)cap, &m);
    *len = (int)m;
    return rc;
}

int shardlm_bench_spec(shardlm_node *n, const shardlm_spec_opts *spec, const char *label, int n_tok, int reps,
                       int json, char *json_out, size_t json_cap)
{
    static const char *names[2] = {"repetitive", "story"};
    static spec_sink a, b;
    size_t jl = 0;
    if (json_out && json_cap) json_out[0] = 0;
    if (!json)
        printf("| prompt | spec | tokens | off tok/s | spec tok/s | speed-up | acceptance | accepted/drafted | steps "
               "off/spec | same text |\n|---|---|---|---|---|---|---|---|---|---|\n");
    const shardlm_spec_opts none = {0};
    for (int w = 0; w < 2; w++) {
        int32_t toks[256];
        int np = 0, rc = spec_prompt(n, w, toks, 256, &np);
        double off[64], on[64];
        spec_round ro = {0}, rs = {0};
        int same = 1;
        for (int r = 0; !rc && r < reps; r++) { /* alternating, so load falls on both alike */
            if (!(rc = spec_one(n, &none, toks, np, n_tok, &a, &ro))) off[r] = ro.tok_s;
            if (!rc && !(rc = spec_one(n, spec, toks, np, n_tok, &b, &rs))) on[r] = rs.tok_s;
            same &= !rc && a.len == b.len && !memcmp(a.text, b.text, a.len);
        }
        if (rc) return rc;
        double mo = med(off, reps), ms = med(on, reps), rate = rs.dtoks ? (double)rs.acc / (double)rs.dtoks : 0;
        if (!json)
            printf("| %s | %s | %d | %.1f | %.1f | %.2fx | %.3f | %llu/%llu | %llu/%llu | %s |\n", names[w], label, n_tok,
                   mo, ms, ms / mo, rate, (unsigned long long)rs.acc, (unsigned long long)rs.dtoks,
                   (unsigned long long)ro.steps, (unsigned long long)rs.steps, same ? "yes" : "NO");
        else if (json_out && jl < json_cap)
            jl += (size_t)snprintf(json_out + jl, json_cap - jl,
                                   "%s{\"prompt\":\"%s\",\"spec\":\"%s\",\"tokens\":%d,\"off_tok_s\":%.3f,"
                                   "\"spec_tok_s\":%.3f,\"speedup\":%.4f,\"acceptance\":%.4f,\"accepted\":%llu,"
                                   "\"drafted\":%llu,\"drafts\":%llu,\"steps_off\":%llu,\"steps_spec\":%llu,"
                                   "\"same_text\":%s}",
                                   w ? "," : "", names[w], label, n_tok, mo, ms, ms / mo, rate,
                                   (unsigned long long)rs.acc, (unsigned long long)rs.dtoks,
                                   (unsigned long long)rs.drafts, (unsigned long long)ro.steps,
                                   (unsigned long long)rs.steps, same ? "true" : "false");
        if (!same) {
            shardlm_err_set("speculation changed the greedy text of the %s prompt", names[w]);
            return SHARDLM_ERUNTIME;
        }
    }
    return SHARDLM_OK;
}
