/* test_spec.c - speculative decoding in the scheduler on stories260K: the
 * prompt-lookup proposer's picks, greedy and seeded output byte-identical
 * with speculation on and off at world sizes 1 and 2 (the golden text),
 * acceptance counters, continuous batching, the prefix cache and a pool so
 * small that sequences are preempted, KV blocks of rejected drafts given
 * back, and the draft model (its vocabulary checked against the target's). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../launcher/node.h"
#include "../runtime/kvcache.h"
#include "../runtime/scheduler.h"
#include "../runtime/spec.h"
#include "shardlm_common.h"
#include "shardlm_launch.h"
#include "test_util.h"

#define MAXREQ 8
#define SINK_MAX MAXREQ
#include "sched_sink.h"

typedef struct {
    shardlm_node node;
    shardlm_sched *sched;
    shardlm_spec_draft *draft;
    pthread_t thread;
    pid_t worker;
} rig;

static const char *model_path(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s", tu_shared("models/stories260K.gguf"));
    return path;
}

/* World size 2: rank 1 is a `shardlm worker` process, rank 0 is this one. */
static void rig_worker(rig *r, char *cfg0, size_t cap)
{
    shardlm_ring_config cfgs[2];
    char cfg1[512];
    cr_assert_eq(shardlm_launch_plan(2, cfgs), 0);
    snprintf(cfg0, cap, "%s/spec_ring0.json", tu_tmpdir());
    snprintf(cfg1, sizeof cfg1, "%s/spec_ring1.json", tu_tmpdir());
    cr_assert_eq(shardlm_ring_config_write(cfg0, &cfgs[0]), 0);
    cr_assert_eq(shardlm_ring_config_write(cfg1, &cfgs[1]), 0);
    char env[600];
    snprintf(env, sizeof env, "RING_CONFIG=%s", cfg1);
    const char *e[] = {env, NULL};
    char *argv[] = {(char *)tu_bin(), "worker", "-m", (char *)model_path(), "--threads", "1", NULL};
    r->worker = tu_spawn(argv, e, NULL, NULL);
}

static void rig_up(rig *r, int world, double kv_mb, int max_seqs, int prefix, shardlm_spec_opts spec)
{
    memset(r, 0, sizeof *r);
    char cfg0[512];
    if (world == 2) rig_worker(r, cfg0, sizeof cfg0);
    shardlm_node_opts o = sink_node_opts(model_path(), kv_mb, 512);
    o.ring_config = world == 2 ? cfg0 : NULL;
    cr_assert_eq(shardlm_node_open(&o, &r->node), 0, "%s", shardlm_err_get());
    /* the worker reports its memory (a collective) before its first step */
    if (world == 2) cr_assert_eq(shardlm_node_report_memory(&r->node, "loaded"), 0, "%s", shardlm_err_get());
    if (spec.mode == SHARDLM_SPEC_DRAFT) {
        shardlm_spec_draft_opts d = {512, 64, 16, 256, 1};
        cr_assert_eq(shardlm_spec_draft_open(model_path(), r->node.tok, model_path(), &d, &r->draft), 0, "%s",
                     shardlm_err_get());
        spec.draft = r->draft;
    }
    shardlm_sched_opts so = {max_seqs, 256, 1000, 16, kv_mb, prefix, spec};
    cr_assert_eq(shardlm_sched_new(r->node.engine, r->node.tok, &so, &r->sched), 0, "%s", shardlm_err_get());
    sink_sched_start(r->sched, &r->thread);
}

static void rig_down(rig *r)
{
    sink_sched_stop(r->sched, r->thread);
    shardlm_spec_draft_free(r->draft);
    if (r->worker > 0) shardlm_engine_shutdown(r->node.engine, "test done");
    shardlm_node_close(&r->node);
    if (r->worker > 0) cr_assert_eq(tu_wait(r->worker, 20), 0, "the worker did not exit cleanly");
}

static void submit_ids(rig *r, sink *k, slot *sl, int i, const int32_t *toks, int n, int max_tokens, float temp,
                       uint64_t seed)
{
    shardlm_request_desc d = {.prompt = toks, .n_prompt = n, .params = shardlm_sampling_params_default(),
                              .max_tokens = max_tokens};
    d.params.temperature = temp;
    d.params.seed = seed;
    d.params.has_seed = 1;
    uint64_t id = 0;
    cr_assert_eq(sink_submit(r->sched, &d, k, sl, i, &id), 0, "%s", shardlm_err_get());
}

static void submit(rig *r, sink *k, slot *sl, int i, const char *prompt, int max_tokens, float temp)
{
    int32_t toks[512];
    size_t n = 0;
    cr_assert_eq(shardlm_tokenizer_encode(r->node.tok, prompt, strlen(prompt), 1, toks, 512, &n), 0);
    submit_ids(r, k, sl, i, toks, (int)n, max_tokens, temp, 1234 + (uint64_t)i);
}

static void wait_done(sink *k, int i) { cr_assert(sink_wait(k, i, 120), "request %d did not finish", i); }

static shardlm_spec_opts ngram(int k, int n) { return (shardlm_spec_opts){SHARDLM_SPEC_NGRAM, k, n, NULL}; }
static const shardlm_spec_opts off = {0};

/* ---- the proposer ---- */

Test(spec, ngram_copies_what_followed_the_latest_match)
{
    int32_t t[] = {1, 5, 6, 7, 8, 9, 5, 6, 7, 2, 3, 5, 6, 7};
    int32_t out[8];
    /* suffix 5 6 7: the latest earlier match (index 6) is followed by 2 3 5 6 */
    cr_assert_eq(shardlm_spec_ngram_propose(t, 14, 3, 4, out), 4);
    cr_assert(out[0] == 2 && out[1] == 3 && out[2] == 5 && out[3] == 6);
    /* asking for 6: the latest match leaves only 5 (2 3 5 6 7), the older
     * one (index 1) all 6 (8 9 5 6 7 2) */
    cr_assert_eq(shardlm_spec_ngram_propose(t, 14, 3, 6, out), 6);
    cr_assert(out[0] == 8 && out[1] == 9 && out[5] == 2);
    /* the longest suffix that occurs wins: 4 7 never occurred, 7 did */
    int32_t u[] = {7, 1, 2, 4, 7};
    cr_assert_eq(shardlm_spec_ngram_propose(u, 5, 3, 2, out), 2);
    cr_assert(out[0] == 1 && out[1] == 2);
    int32_t v[] = {1, 2, 3, 4};
    cr_assert_eq(shardlm_spec_ngram_propose(v, 4, 3, 4, out), 0, "nothing repeats: no draft");
    cr_assert_eq(shardlm_spec_ngram_propose(v, 1, 3, 4, out), 0);
}

Test(spec, flags_are_checked_by_name)
{
    cr_assert_eq(shardlm_spec_mode_parse("ngram"), SHARDLM_SPEC_NGRAM);
    cr_assert_eq(shardlm_spec_mode_parse("draft"), SHARDLM_SPEC_DRAFT);
    cr_assert_eq(shardlm_spec_mode_parse("off"), SHARDLM_SPEC_OFF);
    cr_assert_eq(shardlm_spec_mode_parse("eagle"), -1);
    shardlm_spec_opts o = ngram(0, 3);
    cr_assert_eq(shardlm_spec_opts_check(&o), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "--spec-tokens") != NULL, "%s", shardlm_err_get());
    o = ngram(4, 9);
    cr_assert_eq(shardlm_spec_opts_check(&o), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "--spec-ngram") != NULL, "%s", shardlm_err_get());
    o = (shardlm_spec_opts){SHARDLM_SPEC_DRAFT, 4, 3, NULL};
    cr_assert_eq(shardlm_spec_opts_check(&o), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "--draft-model") != NULL, "%s", shardlm_err_get());
}

/* Rejected drafts: their blocks go back, the committed ones stay. */
Test(spec, kv_trim_returns_the_blocks_of_rejected_drafts)
{
    shardlm_kv *kv;
    cr_assert_eq(shardlm_kv_new(8, 8, 1, &kv), 0);
    int32_t toks[40];
    for (int i = 0; i < 40; i++) toks[i] = i;
    shardlm_kv_seq s = {0};
    cr_assert_eq(shardlm_kv_seq_begin(kv, &s, toks, 6), 0);
    cr_assert_eq(shardlm_kv_seq_reserve(kv, &s, 6 + 1 + 16), 0); /* 23 tokens: 3 blocks */
    cr_assert_eq(s.n_blocks, 3);
    shardlm_kv_seq_commit(kv, &s, toks, 9); /* the last token and two drafts kept */
    shardlm_kv_seq_trim(kv, &s, 10);        /* room for the next token */
    cr_assert_eq(s.n_blocks, 2);
    cr_assert_eq(shardlm_kv_n_free(kv), 6);
    shardlm_kv_seq_trim(kv, &s, 1); /* never below what is committed */
    cr_assert_eq(s.n_blocks, 2);
    cr_assert_eq(shardlm_kv_check(kv), 0, "%s", shardlm_err_get());
    shardlm_kv_seq_free(kv, &s);
    cr_assert_eq(shardlm_kv_n_free(kv), 8);
    shardlm_kv_free(kv);
}

/* ---- greedy output is the same with and without speculation ---- */

/* The golden text from BOS alone: 256 tokens, as `generate -n 256`. */
static void golden(int world, shardlm_spec_opts spec, shardlm_sched_stats *st, char *text, size_t cap)
{
    static sink k;
    static slot sl[1];
    sink_init(&k);
    rig r;
    rig_up(&r, world, 4.0, 8, 1, spec);
    int32_t bos = shardlm_tokenizer_bos(r.node.tok);
    submit_ids(&r, &k, &sl[0], 0, &bos, 1, 256, 0.0f, 1);
    wait_done(&k, 0);
    shardlm_sched_stats_get(r.sched, st);
    rig_down(&r);
    cr_assert_eq(k.why[0], SHARDLM_FINISH_LENGTH, "ended with %d after \"%.*s\"", k.why[0], (int)k.len[0], k.text[0]);
    cr_assert_lt(k.len[0], cap);
    memcpy(text, k.text[0], k.len[0]);
    text[k.len[0]] = 0;
}

static void check_golden(int world)
{
    char *want = tu_read_file(tu_shared("models/stories260K.greedy.txt"), NULL);
    cr_assert_not_null(want);
    size_t wl = strlen(want);
    if (wl && want[wl - 1] == '\n') want[wl - 1] = 0; /* generate ends its output with a newline */
    static char a[4096], b[4096];
    shardlm_sched_stats sa, sb;
    golden(world, off, &sa, a, sizeof a);
    golden(world, ngram(4, 3), &sb, b, sizeof b);
    cr_assert_str_eq(a, want, "world size %d, speculation off: not the golden text:\n%s", world, a);
    cr_assert_str_eq(b, want, "world size %d, n-gram speculation: not the golden text", world);
    cr_assert_eq(sa.spec_drafts, 0);
    cr_assert_gt(sb.spec_accepted, 0, "no draft token was ever accepted");
    cr_assert_leq(sb.spec_accepted, sb.spec_draft_tokens);
    cr_assert_lt(sb.steps, sa.steps, "speculation took %llu steps, without it %llu", (unsigned long long)sb.steps,
                 (unsigned long long)sa.steps);
    cr_assert_eq(sb.generation_tokens, 256);
    fprintf(stderr, "world %d: off %llu steps; ngram %llu steps, %llu drafts, %llu/%llu draft tokens accepted\n",
            world, (unsigned long long)sa.steps, (unsigned long long)sb.steps, (unsigned long long)sb.spec_drafts,
            (unsigned long long)sb.spec_accepted, (unsigned long long)sb.spec_draft_tokens);
    free(want);
}

Test(spec, golden_text_world_size_1, .timeout = 120) { check_golden(1); }
Test(spec, golden_text_world_size_2, .timeout = 180) { check_golden(2); }

/* A prompt that repeats itself: the continuation repeats it too, so most
 * drafts are accepted. */
static const char *rep_prompt = "The cat sat. The cat sat. The cat sat. The cat sat. The cat sat. The cat sat.";

static void one_request(int world, shardlm_spec_opts spec, const char *prompt, float temp, sink *k,
                        shardlm_sched_stats *st)
{
    static slot sl[1];
    sink_init(k);
    rig r;
    rig_up(&r, world, 4.0, 8, 1, spec);
    submit(&r, k, &sl[0], 0, prompt, 96, temp);
    wait_done(k, 0);
    shardlm_sched_stats_get(r.sched, st);
    rig_down(&r);
}

static void check_same(const sink *a, const sink *b, const char *what)
{
    cr_assert_eq(a->why[0], b->why[0], "%s: finish %d vs %d", what, a->why[0], b->why[0]);
    cr_assert_eq(a->len[0], b->len[0], "%s: %zu vs %zu bytes:\n%.*s\n---\n%.*s", what, a->len[0], b->len[0],
                 (int)a->len[0], a->text[0], (int)b->len[0], b->text[0]);
    cr_assert(!memcmp(a->text[0], b->text[0], a->len[0]), "%s: texts differ", what);
}

static void check_repetitive(int world)
{
    static sink a, b;
    shardlm_sched_stats sa, sb;
    one_request(world, off, rep_prompt, 0.0f, &a, &sa);
    one_request(world, ngram(5, 3), rep_prompt, 0.0f, &b, &sb);
    check_same(&a, &b, "repetitive prompt");
    cr_assert_gt(a.len[0], 40);
    double rate = sb.spec_draft_tokens ? (double)sb.spec_accepted / (double)sb.spec_draft_tokens : 0;
    fprintf(stderr, "world %d repetitive: %llu/%llu accepted (%.2f), %llu steps vs %llu\n", world,
            (unsigned long long)sb.spec_accepted, (unsigned long long)sb.spec_draft_tokens, rate,
            (unsigned long long)sb.steps, (unsigned long long)sa.steps);
    cr_assert_geq(rate, 0.5, "acceptance %.2f on a repetitive prompt", rate);
    cr_assert_lt(sb.steps * 2, sa.steps, "%llu steps with speculation, %llu without", (unsigned long long)sb.steps,
                 (unsigned long long)sa.steps);
}

Test(spec, repetitive_prompt_world_size_1, .timeout = 120) { check_repetitive(1); }
Test(spec, repetitive_prompt_world_size_2, .timeout = 180) { check_repetitive(2); }

/* Sampling at temperature 1 with a seed: one draw per output token either
 * way, so the text is the same too. */
Test(spec, seeded_sampling_is_unchanged, .timeout = 120)
{
    static sink a, b;
    shardlm_sched_stats sa, sb;
    one_request(1, off, rep_prompt, 1.0f, &a, &sa);
    one_request(1, ngram(4, 2), rep_prompt, 1.0f, &b, &sb);
    check_same(&a, &b, "temperature 1, seeded");
    cr_assert_gt(sb.spec_draft_tokens, 0);
}

/* Eight sequences batched together, with speculation, each equal to its
 * text alone without it; then again in a pool so small that sequences are
 * preempted; then a second pass that the prefix cache serves. */
static void batch_check(double kv_mb, int expect_preempt)
{
    static sink alone, together, again;
    static slot sa[MAXREQ], st[MAXREQ], sg[MAXREQ];
    sink_init(&alone);
    sink_init(&together);
    sink_init(&again);
    char p[MAXREQ][256];
    for (int i = 0; i < MAXREQ; i++)
        snprintf(p[i], sizeof p[i], "%s the %s. The %s was happy. The %s", i % 2 ? "Lily saw" : "Tom had",
                 i % 3 ? "cat" : "dog", i % 3 ? "cat" : "dog", i % 3 ? "cat" : "dog");
    rig r;
    rig_up(&r, 1, 8.0, MAXREQ, 1, off);
    for (int i = 0; i < MAXREQ; i++) {
        submit(&r, &alone, &sa[i], i, p[i], 64, 0.0f);
        wait_done(&alone, i);
    }
    rig_down(&r);
    rig_up(&r, 1, kv_mb, MAXREQ, 1, ngram(4, 3));
    for (int i = 0; i < MAXREQ; i++) submit(&r, &together, &st[i], i, p[i], 64, 0.0f);
    for (int i = 0; i < MAXREQ; i++) wait_done(&together, i);
    shardlm_sched_stats s1, s2;
    shardlm_sched_stats_get(r.sched, &s1);
    for (int i = 0; i < MAXREQ; i++) submit(&r, &again, &sg[i], i, p[i], 64, 0.0f);
    for (int i = 0; i < MAXREQ; i++) wait_done(&again, i);
    shardlm_sched_stats_get(r.sched, &s2);
    for (int i = 0; i < MAXREQ; i++) {
        cr_assert_gt(alone.len[i], 20);
        cr_assert_eq(together.len[i], alone.len[i], "request %d: %zu vs %zu bytes", i, together.len[i],
                     alone.len[i]);
        cr_assert(!memcmp(together.text[i], alone.text[i], alone.len[i]), "request %d differs", i);
        cr_assert_eq(again.len[i], alone.len[i], "request %d from the prefix cache", i);
        cr_assert(!memcmp(again.text[i], alone.text[i], alone.len[i]), "request %d differs from the cache", i);
    }
    cr_assert_gt(s1.spec_accepted, 0);
    cr_assert_gt(s2.prefix_hits, s1.prefix_hits, "the second pass never hit the prefix cache");
    if (expect_preempt) cr_assert_gt(s1.preemptions, 0, "the small pool never preempted");
    cr_assert_eq(s2.generation_tokens, 2 * MAXREQ * 64);
    fprintf(stderr, "batch (pool %g MiB): %llu/%llu accepted, %llu preemptions\n", kv_mb,
            (unsigned long long)s2.spec_accepted, (unsigned long long)s2.spec_draft_tokens,
            (unsigned long long)s2.preemptions);
    rig_down(&r);
}

Test(spec, batch_with_prefix_cache_equals_each_alone, .timeout = 240) { batch_check(8.0, 0); }
/* 0.1 MiB: 5 blocks of 16 tokens for eight sequences of ~80. */
Test(spec, small_pool_preempts_and_still_equals, .timeout = 240) { batch_check(0.1, 1); }

/* ---- the draft model ---- */

/* The target as its own draft: every greedy draft is accepted. */
Test(spec, draft_model_world_size_2, .timeout = 180)
{
    static sink a, b;
    shardlm_sched_stats sa, sb;
    one_request(2, off, "Once upon a time", 0.0f, &a, &sa);
    one_request(2, (shardlm_spec_opts){SHARDLM_SPEC_DRAFT, 4, 0, NULL}, "Once upon a time", 0.0f, &b, &sb);
    check_same(&a, &b, "draft model");
    cr_assert_gt(sb.spec_draft_tokens, 0);
    cr_assert_eq(sb.spec_accepted, sb.spec_draft_tokens, "a draft identical to the target: %llu of %llu accepted",
                 (unsigned long long)sb.spec_accepted, (unsigned long long)sb.spec_draft_tokens);
}

Test(spec, draft_with_another_vocabulary_is_refused_naming_both_files, .timeout = 60)
{
    shardlm_node n;
    shardlm_node_opts o = {.model_path = model_path(), .timeout_ms = 10000, .connect_timeout_ms = 10000,
                           .load_timeout_ms = 10000, .max_batch = 64, .n_threads = 1, .isq = -1, .n_ctx = 512};
    cr_assert_eq(shardlm_node_open(&o, &n), 0, "%s", shardlm_err_get());
    char other[512];
    snprintf(other, sizeof other, "%s", tu_shared("models/llama-2-tiny-random.gguf"));
    shardlm_spec_draft_opts d = {512, 16, 16, 64, 1};
    shardlm_spec_draft *dr = NULL;
    cr_assert_eq(shardlm_spec_draft_open(other, n.tok, model_path(), &d, &dr), SHARDLM_EINPUT);
    const char *e = shardlm_err_get();
    cr_assert(strstr(e, "llama-2-tiny-random.gguf") && strstr(e, "stories260K.gguf") && strstr(e, "vocabulary"),
              "%s", e);
    cr_assert_null(dr);
    shardlm_node_close(&n);
}

/* ---- serve ---- */

static tu_result curl_get(const char *url, const char *body)
{
    char *post[] = {"/usr/bin/curl", "-s", "-m", "30", "-H", "content-type: application/json", "-d", (char *)body,
                    (char *)url, NULL};
    char *get[] = {"/usr/bin/curl", "-s", "-m", "10", (char *)url, NULL};
    return tu_run(body ? post : get, NULL, 40);
}

static double metric_value(const char *text, const char *name)
{
    const char *p = text;
    while ((p = strstr(p, name))) {
        if (p > text && p[-1] == '\n' && p[strlen(name)] == '{') {
            const char *v = strchr(p, '}');
            return v ? strtod(v + 1, NULL) : -1;
        }
        p += strlen(name);
    }
    return -1;
}

/* `serve --world-size 2 --spec ngram`: the golden text over HTTP, and the
 * spec_decode counters in /metrics. */
Test(spec, serve_world_size_2_counts_drafts_in_metrics, .timeout = 120)
{
    cr_assert(access("/usr/bin/curl", X_OK) == 0, "/usr/bin/curl is missing (scripts/install-deps.sh installs it)");
    char err[600], port_s[16], base[64], url[128];
    snprintf(err, sizeof err, "%s/serve.err", tu_tmpdir());
    int port = 21000 + (int)(getpid() % 20000);
    snprintf(port_s, sizeof port_s, "%d", port);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    char *argv[] = {(char *)tu_bin(), "serve", "-m", (char *)model_path(), "--port", port_s, "--world-size", "2",
                    "--spec", "ngram", "--spec-tokens", "4", "--kv-cache-mb", "4", NULL};
    pid_t pid = tu_spawn(argv, NULL, NULL, err);
    int up = 0;
    snprintf(url, sizeof url, "%s/health", base);
    for (int i = 0; i < 300 && !up; i++) {
        char *h[] = {"/usr/bin/curl", "-s", "-f", "-m", "2", url, NULL};
        tu_result r = tu_run(h, NULL, 5);
        up = r.exit_code == 0;
        tu_result_free(&r);
        if (!up) usleep(100000);
    }
    snprintf(url, sizeof url, "%s/v1/completions", base);
    tu_result r = curl_get(url, "{\"prompt\":\"\",\"max_tokens\":64,\"temperature\":0}");
    snprintf(url, sizeof url, "%s/metrics", base);
    tu_result m = curl_get(url, NULL);
    kill(pid, SIGTERM);
    int code = tu_wait(pid, 20);
    char *e = tu_read_file(err, NULL);
    cr_assert(up, "server never became healthy:\n%s", e);
    cr_assert(strstr(e, "speculative decoding: ngram") != NULL, "start-up log:\n%s", e);
    cr_assert(strstr(r.out, "\"text\":\"Once upon a time, there was a little girl named Lily. She loved to play "
                            "outside in the park. One day, she saw a big, red ball.") != NULL,
              "response: %s", r.out);
    double drafts = metric_value(m.out, "shardlm:spec_decode_num_drafts_total");
    double dtoks = metric_value(m.out, "shardlm:spec_decode_num_draft_tokens_total");
    double acc = metric_value(m.out, "shardlm:spec_decode_num_accepted_tokens_total");
    cr_assert_gt(drafts, 0, "metrics:\n%s", m.out);
    cr_assert_geq(dtoks, drafts);
    cr_assert_gt(acc, 0, "metrics:\n%s", m.out);
    cr_assert_leq(acc, dtoks);
    cr_assert_eq(code, 0, "serve exit %d:\n%s", code, e);
    free(e);
    tu_result_free(&r);
    tu_result_free(&m);
}

Test(spec, serve_refuses_a_draft_with_another_vocabulary, .timeout = 60)
{
    char *argv[] = {(char *)tu_bin(), "serve", "-m", (char *)model_path(), "--port", "0", "--draft-model",
                    (char *)tu_shared("models/llama-2-tiny-random.gguf"), NULL};
    tu_result r = tu_run(argv, NULL, 30);
    cr_assert_eq(r.exit_code, 2, "exit %d: %s", r.exit_code, r.err);
    cr_assert(strstr(r.err, "llama-2-tiny-random.gguf") && strstr(r.err, "stories260K.gguf"), "%s", r.err);
    tu_result_free(&r);
}

/* ---- generate ---- */

static tu_result gen(const char *const *extra)
{
    char *argv[32];
    int a = 0;
    argv[a++] = (char *)tu_bin();
    argv[a++] = "generate";
    argv[a++] = "-m";
    argv[a++] = (char *)model_path();
    while (*extra) argv[a++] = (char *)*extra++;
    argv[a] = NULL;
    return tu_run(argv, NULL, 120);
}

static unsigned long long accepted_in(const char *err)
{
    const char *p = strstr(err, "speculative decoding: ");
    return p ? strtoull(p + strlen("speculative decoding: "), NULL, 10) : 0;
}

Test(spec, generate_world_size_2_prints_the_golden_text, .timeout = 120)
{
    char *want = tu_read_file(tu_shared("models/stories260K.greedy.txt"), NULL);
    cr_assert_not_null(want);
    const char *x[] = {"--temp", "0", "-n", "256", "--world-size", "2", "--spec", "ngram", NULL};
    tu_result r = gen(x);
    cr_assert_eq(r.exit_code, 0, "exit %d:\n%s", r.exit_code, r.err);
    cr_assert_str_eq(r.out, want, "n-gram speculation changed generate's greedy text");
    cr_assert(strstr(r.err, "decode 256 tokens") != NULL, "%s", r.err);
    cr_assert_gt(accepted_in(r.err), 0, "no accepted drafts reported:\n%s", r.err);
    free(want);
    tu_result_free(&r);
}

/* generate's own loop and the scheduler with drafts sample alike: the same
 * seed gives the same text. */
Test(spec, generate_seeded_text_is_the_same_with_and_without_spec, .timeout = 120)
{
    const char *a[] = {"--temp", "1", "--seed", "7", "-n", "160", "-p", "The cat sat. The cat sat. The cat sat.",
                       "--echo", NULL};
    const char *b[] = {"--temp", "1", "--seed", "7", "-n", "160", "-p", "The cat sat. The cat sat. The cat sat.",
                       "--echo", "--spec", "draft", "--draft-model", model_path(), "--spec-tokens", "3", NULL};
    tu_result ra = gen(a), rb = gen(b);
    cr_assert_eq(ra.exit_code, 0, "%s", ra.err);
    cr_assert_eq(rb.exit_code, 0, "%s", rb.err);
    cr_assert_gt(strlen(ra.out), 60);
    cr_assert_str_eq(rb.out, ra.out);
    cr_assert_gt(accepted_in(rb.err), 0, "%s", rb.err);
    tu_result_free(&ra);
    tu_result_free(&rb);
}

Test(spec, generate_refuses_bad_spec_flags_by_name)
{
    const char *a[] = {"--spec", "medusa", NULL};
    tu_result r = gen(a);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "--spec") != NULL, "%s", r.err);
    tu_result_free(&r);
    const char *b[] = {"--spec", "ngram", "--spec-ngram", "0", NULL};
    r = gen(b);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "--spec-ngram") != NULL, "%s", r.err);
    tu_result_free(&r);
    const char *c[] = {"--spec", "ngram", "--logits-out", "/dev/null", NULL};
    r = gen(c);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "--logits-out") != NULL, "%s", r.err);
    tu_result_free(&r);
}
