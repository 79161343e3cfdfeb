/* test_sched.c - the scheduler on a real model (stories260K, world size 1,
 * in-process): a batch must not change results, a KV pool too small for
 * everyone still completes every request by preemption, the prefix cache
 * hits without changing output, and a cancel frees its KV blocks. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../launcher/node.h"
#include "shardlm_common.h"
#include "../runtime/scheduler.h"
#include "test_util.h"

#define MAXREQ 32
#define SINK_MAX MAXREQ
#include "sched_sink.h"

typedef struct {
    shardlm_node node;
    shardlm_sched *sched;
    pthread_t thread;
} rig;

static void rig_up(rig *r, double kv_mb, int max_seqs, int prefix)
{
    char model[512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    shardlm_node_opts o = sink_node_opts(model, kv_mb, 512);
    cr_assert_eq(shardlm_node_open(&o, &r->node), 0, "%s", shardlm_err_get());
    shardlm_sched_opts so = {max_seqs, 256, 1000, 16, kv_mb, prefix, {0}};
    cr_assert_eq(shardlm_sched_new(r->node.engine, r->node.tok, &so, &r->sched), 0, "%s", shardlm_err_get());
    sink_sched_start(r->sched, &r->thread);
}

static void rig_down(rig *r)
{
    sink_sched_stop(r->sched, r->thread);
    shardlm_node_close(&r->node);
}

static uint64_t submit(rig *r, sink *k, slot *sl, int i, const char *prompt, int max_tokens)
{
    int32_t toks[256];
    size_t n = 0;
    cr_assert_eq(shardlm_tokenizer_encode(r->node.tok, prompt, strlen(prompt), 1, toks, 256, &n), 0);
    shardlm_request_desc d = {.prompt = toks, .n_prompt = (int)n, .params = shardlm_sampling_params_default(),
                              .max_tokens = max_tokens};
    d.params.temperature = 0;
    uint64_t id = 0;
    cr_assert_eq(sink_submit(r->sched, &d, k, sl, i, &id), 0, "%s", shardlm_err_get());
    return id;
}

static void wait_done(sink *k, int i) { cr_assert(sink_wait(k, i, 60), "request %d did not finish", i); }

static const char *words[8] = {"Lily", "Tom", "a dog", "the sun", "Ben", "a red ball", "Mom", "a little bird"};

static void prompt_of(int i, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s %s and %s", i % 2 ? "Once upon a time," : "One day,", words[i % 8], words[(i / 8) % 8]);
}

/* Every request alone, then all together: the texts must be identical. */
static void batch_equals_alone(double kv_mb, int expect_preemption)
{
    static sink alone, together;
    static slot sa[MAXREQ], st[MAXREQ];
    memset(&alone, 0, sizeof alone);
    memset(&together, 0, sizeof together);
    sink_init(&alone);
    sink_init(&together);
    rig r;
    rig_up(&r, kv_mb, 32, 1);
    char p[256];
    for (int i = 0; i < MAXREQ; i++) {
        prompt_of(i, p, sizeof p);
        submit(&r, &alone, &sa[i], i, p, 48);
        wait_done(&alone, i);
    }
    for (int i = 0; i < MAXREQ; i++) {
        prompt_of(i, p, sizeof p);
        submit(&r, &together, &st[i], i, p, 48);
    }
    for (int i = 0; i < MAXREQ; i++) wait_done(&together, i);
    for (int i = 0; i < MAXREQ; i++) {
        cr_assert_gt(alone.len[i], 20, "request %d produced almost nothing", i);
        cr_assert_eq(together.why[i], SHARDLM_FINISH_LENGTH, "request %d ended with %d", i, together.why[i]);
        cr_assert_eq(together.len[i], alone.len[i], "request %d: %zu vs %zu bytes", i, together.len[i], alone.len[i]);
        cr_assert(memcmp(together.text[i], alone.text[i], alone.len[i]) == 0, "request %d differs in a batch", i);
    }
    shardlm_sched_stats stt;
    shardlm_sched_stats_get(r.sched, &stt);
    fprintf(stderr, "sched: pool %d blocks, %llu steps, %llu preemptions; request 5: \"%.*s\"\n", stt.kv_blocks,
            (unsigned long long)stt.steps, (unsigned long long)stt.preemptions, (int)together.len[5],
            together.text[5]);
    if (expect_preemption) cr_assert_gt(stt.preemptions, 0, "the small pool never preempted");
    else cr_assert_eq(stt.preemptions, 0);
    cr_assert_eq(stt.generation_tokens, 2 * MAXREQ * 48);
    rig_down(&r);
}

Test(sched, batch_of_32_equals_each_alone, .timeout = 240) { batch_equals_alone(8.0, 0); }

/* 0.1 MiB holds 81 tokens per rank: 5 blocks of 16, room for one or two of
 * the 32 sequences at a time. */
Test(sched, small_kv_pool_completes_everything_by_preemption, .timeout = 240) { batch_equals_alone(0.1, 1); }

Test(sched, prefix_cache_hit_keeps_output, .timeout = 120)
{
    static sink k;
    static slot sl[2];
    memset(&k, 0, sizeof k);
    sink_init(&k);
    rig r;
    rig_up(&r, 4.0, 8, 1);
    const char *p = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";
    submit(&r, &k, &sl[0], 0, p, 32);
    wait_done(&k, 0);
    shardlm_sched_stats a, b;
    shardlm_sched_stats_get(r.sched, &a);
    submit(&r, &k, &sl[1], 1, p, 32);
    wait_done(&k, 1);
    shardlm_sched_stats_get(r.sched, &b);
    cr_assert_geq(b.prefix_hits - a.prefix_hits, 16, "hits went from %llu to %llu", (unsigned long long)a.prefix_hits,
                  (unsigned long long)b.prefix_hits);
    cr_assert_eq(k.len[0], k.len[1]);
    cr_assert(memcmp(k.text[0], k.text[1], k.len[0]) == 0, "a cached prefix changed the output");
    rig_down(&r);
}

Test(sched, cancel_frees_kv_blocks, .timeout = 120)
{
    static sink k;
    static slot sl[1];
    memset(&k, 0, sizeof k);
    sink_init(&k);
    rig r;
    rig_up(&r, 4.0, 8, 0);
    uint64_t id = submit(&r, &k, &sl[0], 0, "Once upon a time", 400);
    for (int t = 0; t < 500; t++) { /* wait until it is generating */
        pthread_mutex_lock(&k.mu);
        int n = k.ntok[0];
        pthread_mutex_unlock(&k.mu);
        if (n >= 3) break;
        usleep(2000);
    }
    shardlm_sched_stats s0;
    shardlm_sched_stats_get(r.sched, &s0);
    cr_assert_gt(s0.kv_usage, 0.0);
    shardlm_sched_cancel(r.sched, id);
    wait_done(&k, 0);
    cr_assert_eq(k.why[0], SHARDLM_FINISH_CANCELLED);
    shardlm_sched_stats s1;
    for (int t = 0; t < 100; t++) {
        shardlm_sched_stats_get(r.sched, &s1);
        if (s1.kv_usage == 0.0) break;
        usleep(10000);
    }
    cr_assert_eq(s1.kv_usage, 0.0, "KV usage %g after the cancel", s1.kv_usage);
    cr_assert_eq(s1.running, 0);
    rig_down(&r);
}

Test(sched, prompt_longer_than_context_is_refused_naming_both)
{
    rig r;
    rig_up(&r, 4.0, 8, 1);
    int32_t toks[600];
    for (int i = 0; i < 600; i++) toks[i] = 300;
    shardlm_request_desc d = {.prompt = toks, .n_prompt = 600, .params = shardlm_sampling_params_default(), .max_tokens = 8};
    shardlm_request_cb cb = {0};
    uint64_t id;
    cr_assert_eq(shardlm_sched_submit(r.sched, &d, cb, &id), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "600 tokens") && strstr(shardlm_err_get(), "512"), "%s", shardlm_err_get());
    rig_down(&r);
}
