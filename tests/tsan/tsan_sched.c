/* tsan_sched.c - the scheduler under ThreadSanitizer: four client threads
 * submit greedy requests (and cancel some) while the engine thread runs
 * continuous batching on stories260K. Every request must end exactly once,
 * the same prompt must give the same text, and TSan must stay silent. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../launcher/node.h"
#include "../../runtime/scheduler.h"
#include "shardlm_common.h"

#define CLIENTS 4
#define PER 6

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char text[2048];
    size_t len;
    int ended;
    shardlm_finish_reason why;
} req;

static shardlm_sched *sched;
static shardlm_node node;
static req reqs[CLIENTS][PER];

static void on_token(void *ctx, const char *t, size_t n, int32_t tok, const shardlm_logprobs *lp)
{
    req *r = ctx;
    (void)tok;
    (void)lp;
    pthread_mutex_lock(&r->mu);
    if (r->len + n < sizeof r->text) memcpy(r->text + r->len, t, n), r->len += n;
    pthread_mutex_unlock(&r->mu);
}

static void on_end(void *ctx, shardlm_finish_reason why, int np, int nc)
{
    req *r = ctx;
    (void)np;
    (void)nc;
    pthread_mutex_lock(&r->mu);
    r->ended++;
    r->why = why;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void *client(void *arg)
{
    int c = (int)(long)arg;
    for (int i = 0; i < PER; i++) {
        req *r = &reqs[c][i];
        const char *p = i % 2 ? "Once upon a time" : "One day, Lily";
        int32_t toks[64];
        size_t n = 0;
        shardlm_tokenizer_encode(node.tok, p, strlen(p), 1, toks, 64, &n);
        shardlm_request_desc d = {.prompt = toks, .n_prompt = (int)n, .params = shardlm_sampling_params_default(),
                                  .max_tokens = 24};
        d.params.temperature = 0;
        shardlm_request_cb cb = {.on_token = on_token, .on_end = on_end, .ctx = r};
        uint64_t id;
        if (shardlm_sched_submit(sched, &d, cb, &id)) return (void *)1;
        if (i == PER - 1 && c == 0) shardlm_sched_cancel(sched, id);
        pthread_mutex_lock(&r->mu);
        while (!r->ended) pthread_cond_wait(&r->cv, &r->mu);
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

static void *engine(void *arg)
{
    (void)arg;
    shardlm_sched_run(sched);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *shared = argc > 1 ? argv[1] : "../shared";
    char model[1024];
    snprintf(model, sizeof model, "%s/models/stories260K.gguf", shared);
    if (access(model, R_OK)) {
        const char *ci = getenv("CI");
        printf("%s: %s missing\n", ci && !strcmp(ci, "true") ? "FAIL" : "SKIP", model);
        return ci && !strcmp(ci, "true");
    }
    shardlm_node_opts o = {.model_path = model, .timeout_ms = 10000, .connect_timeout_ms = 10000,
                           .load_timeout_ms = 10000, .max_batch = 128, .n_threads = 2, .isq = -1,
                           .kv_cache_mb = 1.0, .block_size = 16, .n_ctx = 256};
    shardlm_sched_opts so = {8, 128, 100, 16, 1.0, 1, {0}};
    if (shardlm_node_open(&o, &node) || shardlm_sched_new(node.engine, node.tok, &so, &sched)) {
        printf("FAIL: %s\n", shardlm_err_get());
        return 1;
    }
    for (int c = 0; c < CLIENTS; c++)
        for (int i = 0; i < PER; i++) pthread_mutex_init(&reqs[c][i].mu, NULL), pthread_cond_init(&reqs[c][i].cv, NULL);
    pthread_t eng, cl[CLIENTS];
    pthread_create(&eng, NULL, engine, NULL);
    for (long c = 0; c < CLIENTS; c++) pthread_create(&cl[c], NULL, client, (void *)c);
    for (int c = 0; c < CLIENTS; c++) pthread_join(cl[c], NULL);
    shardlm_sched_stop(sched);
    pthread_join(eng, NULL);
    int fails = 0;
    for (int c = 0; c < CLIENTS; c++)
        for (int i = 0; i < PER; i++) {
            req *r = &reqs[c][i], *ref = &reqs[1][i % 2];
            int cancelled = c == 0 && i == PER - 1;
            if (r->ended != 1) fails++, printf("FAIL: request %d/%d ended %d times\n", c, i, r->ended);
            else if (!cancelled && (r->len != ref->len || memcmp(r->text, ref->text, r->len)))
                fails++, printf("FAIL: request %d/%d text differs\n", c, i);
        }
    shardlm_sched_free(sched);
    shardlm_node_close(&node);
    printf("tsan: %d passed, %d failed\n", CLIENTS * PER - fails, fails);
    return fails != 0;
}
