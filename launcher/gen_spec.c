/* gen_spec.c - generate's speculative path: one request through the
 * scheduler (which proposes, verifies and rolls back), its text streamed to
 * stdout, its tokens to --ids-out. */
#include "gen_spec.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"
#include "shardlm_common.h"

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, n;
    shardlm_end why;
    FILE *ids;
    double t_first, t_last;
} gen_sink;

static void gen_on_token(void *ctx, const char *text, size_t len, int32_t tok, const shardlm_logprobs *lp)
{
    gen_sink *k = ctx;
    (void)lp;
    fwrite(text, 1, len, stdout); /* the engine thread: only this request writes */
    fflush(stdout);
    if (tok < 0) return;
    if (k->ids) fprintf(k->ids, "%d\n", (int)tok);
    double now = shardlm_now_s();
    pthread_mutex_lock(&k->mu);
    if (!k->n++) k->t_first = now;
    k->t_last = now;
    pthread_mutex_unlock(&k->mu);
}

static void gen_on_end(void *ctx, shardlm_end why, int np, int nc)
{
    gen_sink *k = ctx;
    (void)np, (void)nc;
    pthread_mutex_lock(&k->mu);
    k->done = 1;
    k->why = why;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

typedef struct {
    shardlm_sched *s;
    int rc;
    char why[512];
} gen_thread_arg;

static void *gen_thread(void *arg)
{
    gen_thread_arg *a = arg;
    a->rc = shardlm_sched_run(a->s);
    if (a->rc) snprintf(a->why, sizeof a->why, "%s", shardlm_err_get()); /* the error text is per thread */
    return NULL;
}

int shardlm_gen_spec_run(shardlm_node *n, const shardlm_spec_opts *spec, const shardlm_gen_spec_req *r,
                         shardlm_gen_spec_result *out)
{
    shardlm_sched_opts so = {1, shardlm_engine_max_batch(n->engine), 1, n->block_size, 0, 0, *spec};
    gen_thread_arg a = {0};
    int rc = shardlm_sched_new(n->engine, n->tok, &so, &a.s);
    if (rc) return rc;
    gen_sink k = {.ids = r->ids_file};
    pthread_mutex_init(&k.mu, NULL);
    pthread_cond_init(&k.cv, NULL);
    pthread_t th;
    pthread_create(&th, NULL, gen_thread, &a);
    shardlm_request_desc d = {.prompt = r->prompt, .n_prompt = r->n_prompt,
                              .params = shardlm_sampling_params_default(), .max_tokens = r->n_new,
                              .grammar = r->grammar, .ignore_eos = r->ignore_eos};
    d.params.temperature = r->temp;
    d.params.top_p = r->top_p;
    d.params.seed = r->seed;
    d.params.has_seed = 1;
    shardlm_request_cb cb = {.on_token = gen_on_token, .on_end = gen_on_end, .ctx = &k};
    uint64_t id;
    double t0 = shardlm_now_s();
    rc = shardlm_sched_submit(a.s, &d, cb, &id);
    pthread_mutex_lock(&k.mu);
    while (!rc && !k.done) pthread_cond_wait(&k.cv, &k.mu); /* the scheduler ends every request it took */
    pthread_mutex_unlock(&k.mu);
    shardlm_sched_stats st;
    shardlm_sched_stats_get(a.s, &st);
    shardlm_sched_stop(a.s);
    pthread_join(th, NULL);
    shardlm_sched_free(a.s);
    if (!rc && a.rc) {
        shardlm_err_set("%s", a.why);
        rc = a.rc;
    } else if (!rc && k.why == SHARDLM_END_ERROR) {
        shardlm_err_set("the request failed in the scheduler");
        rc = SHARDLM_ERUNTIME;
    }
    *out = (shardlm_gen_spec_result){k.n, k.n > 1 ? k.t_last - k.t_first : 0, k.n ? k.t_first - t0 : 0,
                                     st.spec_drafts, st.spec_draft_tokens, st.spec_accepted};
    pthread_cond_destroy(&k.cv);
    pthread_mutex_destroy(&k.mu);
    return rc;
}
