/* sched_sink.h - what the scheduler tests collect from a request's callbacks,
 * and the scheduler thread and node options they run it with.
 *
 * A sink holds, per request slot, the streamed text, the token ids, the first
 * logprobs, the prefix-cache hit and how it ended; a slot is the callback
 * context that names one entry. Define SINK_MAX (requests per sink) before
 * including. Sinks are big: declare them static. */
#ifndef SHARDLM_TESTS_SCHED_SINK_H
#define SHARDLM_TESTS_SCHED_SINK_H

#include <pthread.h>
#include <string.h>
#include <time.h>

#include "../launcher/node.h"
#include "../runtime/scheduler.h"
#include "shardlm_runtime.h"

#ifndef SINK_MAX
#error "define SINK_MAX before including sched_sink.h"
#endif
#define SINK_TEXT 8192
#define SINK_TOKS 512
#define SINK_LPS 4

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char text[SINK_MAX][SINK_TEXT]; /* NUL-terminated by sink_wait */
    size_t len[SINK_MAX];
    int32_t toks[SINK_MAX][SINK_TOKS];
    shardlm_logprobs lp[SINK_MAX][SINK_LPS];
    int ntok[SINK_MAX], done[SINK_MAX], cached[SINK_MAX], admitted[SINK_MAX], generated[SINK_MAX];
    shardlm_finish_reason why[SINK_MAX];
} sink;

typedef struct {
    sink *k;
    int i;
} slot;

static inline void sink_init(sink *k)
{
    memset(k, 0, sizeof *k);
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
}

static inline void sink_on_token(void *ctx, const char *text, size_t len, int32_t tok, const shardlm_logprobs *lp)
{
    slot *s = ctx;
    sink *k = s->k;
    pthread_mutex_lock(&k->mu);
    if (k->len[s->i] + len < SINK_TEXT) {
        memcpy(k->text[s->i] + k->len[s->i], text, len);
        k->len[s->i] += len;
    }
    if (tok >= 0) {
        int n = k->ntok[s->i]++;
        if (n < SINK_TOKS) k->toks[s->i][n] = tok;
        if (lp && n < SINK_LPS) k->lp[s->i][n] = *lp;
    }
    pthread_mutex_unlock(&k->mu);
}

static inline void sink_on_end(void *ctx, shardlm_finish_reason why, int n_prompt, int n_completion)
{
    slot *s = ctx;
    (void)n_prompt;
    pthread_mutex_lock(&s->k->mu);
    s->k->generated[s->i] = n_completion;
    s->k->done[s->i] = 1;
    s->k->why[s->i] = why;
    pthread_cond_broadcast(&s->k->cv);
    pthread_mutex_unlock(&s->k->mu);
}

static inline void sink_on_admit(void *ctx, int cached)
{
    slot *s = ctx;
    pthread_mutex_lock(&s->k->mu);
    s->k->cached[s->i] = cached;
    s->k->admitted[s->i]++;
    pthread_mutex_unlock(&s->k->mu);
}

/* Waits up to `seconds` for request i to end; 1 when it did. Its text is then
 * NUL-terminated. Bounded, so a lost request fails the test rather than hangs it. */
static inline int sink_wait(sink *k, int i, int seconds)
{
    pthread_mutex_lock(&k->mu);
    for (int t = 0; !k->done[i] && t < seconds * 10; t++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&k->cv, &k->mu, &ts);
    }
    int done = k->done[i];
    if (done) k->text[i][k->len[i] < SINK_TEXT ? k->len[i] : SINK_TEXT - 1] = 0;
    pthread_mutex_unlock(&k->mu);
    return done;
}

/* Submits d with its text and end going to entry i of k (through sl);
 * returns the submit status and sets *id. */
static inline int sink_submit(shardlm_sched *s, const shardlm_request_desc *d, sink *k, slot *sl, int i, uint64_t *id)
{
    sl->k = k;
    sl->i = i;
    shardlm_request_cb cb = {.on_token = sink_on_token, .on_end = sink_on_end, .ctx = sl};
    return shardlm_sched_submit(s, d, cb, id);
}

/* A node on a one-thread engine, bounded timeouts, 16-token KV blocks. */
static inline shardlm_node_opts sink_node_opts(const char *model, double kv_mb, int n_ctx)
{
    return (shardlm_node_opts){.model_path = model, .timeout_ms = 10000, .connect_timeout_ms = 10000,
                               .load_timeout_ms = 10000, .max_batch = 256, .n_threads = 1, .isq = -1,
                               .kv_cache_mb = kv_mb, .block_size = 16, .n_ctx = n_ctx};
}

static inline void *sink_sched_main(void *s)
{
    shardlm_sched_run(s);
    return NULL;
}

/* Runs s on its own thread, as serve does; sink_sched_stop stops, joins and frees it. */
static inline void sink_sched_start(shardlm_sched *s, pthread_t *t) { pthread_create(t, NULL, sink_sched_main, s); }

static inline void sink_sched_stop(shardlm_sched *s, pthread_t t)
{
    shardlm_sched_stop(s);
    pthread_join(t, NULL);
    shardlm_sched_free(s);
}

#endif
