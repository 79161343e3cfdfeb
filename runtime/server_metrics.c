/* server_metrics.c - the /metrics registry: latency histograms observed
 * by the server from the scheduler's callbacks, finish-reason counters, and
 * the scheduler's own counters and gauges, rendered in Prometheus text
 * format with vLLM's metric names under the "shardlm:" prefix. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

/* vLLM's buckets, extended downwards: a tiny model on a CPU answers in
 * well under vLLM's smallest bucket. */
static const double ttft_le[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                 0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
static const double itl_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
                                0.15,  0.2,    0.3,   0.4,  0.5,   0.75, 1.0,   2.5};
static const double e2e_le[] = {0.01, 0.05, 0.1,  0.3,  0.5,  0.8,  1.0,  1.5,  2.0,
                                2.5,  5.0,  10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0};

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

void srv_metrics_init(srv_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->ttft = (srv_hist){.le = ttft_le, .n_le = N_OF(ttft_le)};
    m->itl = (srv_hist){.le = itl_le, .n_le = N_OF(itl_le)};
    m->e2e = (srv_hist){.le = e2e_le, .n_le = N_OF(e2e_le)};
}

void srv_metrics_destroy(srv_metrics *m)
{
    pthread_mutex_destroy(&m->mu);
}

void srv_metrics_observe(srv_metrics *m, srv_hist *h, double seconds)
{
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < h->n_le && seconds > h->le[i]) i++;
    h->counts[i]++; /* per bucket here; cumulated when rendered */
    h->sum += seconds;
    h->count++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_finished(srv_metrics *m, shardlm_finish_reason why)
{
    pthread_mutex_lock(&m->mu);
    if (why == SHARDLM_FINISH_STOP) m->finished_stop++;
    else if (why == SHARDLM_FINISH_LENGTH) m->finished_length++;
    else if (why == SHARDLM_FINISH_CANCELLED) m->finished_cancelled++;
    else m->finished_error++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_http(srv_metrics *m, int status)
{
    pthread_mutex_lock(&m->mu);
    m->http_requests++;
    if (status >= 400) m->http_errors++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_header_timeouts(srv_metrics *m, uint64_t n)
{
    pthread_mutex_lock(&m->mu);
    m->header_timeouts = n;
    pthread_mutex_unlock(&m->mu);
}

/* A growing text buffer; on out of memory it stays failed and render
 * returns NULL. */
typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} tbuf;

static void tb_printf(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(tbuf *b, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !b->failed; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (k < 0) b->failed = 1;
        if (b->failed || (b->s && b->len + (size_t)k < b->cap)) {
            if (!b->failed) b->len += (size_t)k;
            return;
        }
        size_t cap = (b->cap + (size_t)k + 1) * 2;
        char *s = realloc(b->s, cap);
        if (!s) b->failed = 1;
        else b->s = s, b->cap = cap;
    }
}

static void metric(tbuf *b, const char *name, const char *type, const char *help, const char *model, double v)
{
    tb_printf(b, "# HELP shardlm:%s %s\n# TYPE shardlm:%s %s\nshardlm:%s{model_name=\"%s\"} %.17g\n", name, help,
              name, type, name, model, v);
}

static void hist(tbuf *b, const char *name, const char *help, const char *model, const srv_hist *h)
{
    tb_printf(b, "# HELP shardlm:%s %s\n# TYPE shardlm:%s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n_le; i++) {
        cum += h->counts[i];
        tb_printf(b, "shardlm:%s_bucket{model_name=\"%s\",le=\"%g\"} %llu\n", name, model, h->le[i],
                  (unsigned long long)cum);
    }
    tb_printf(b, "shardlm:%s_bucket{model_name=\"%s\",le=\"+Inf\"} %llu\n", name, model,
              (unsigned long long)h->count);
    tb_printf(b, "shardlm:%s_sum{model_name=\"%s\"} %.17g\nshardlm:%s_count{model_name=\"%s\"} %llu\n", name, model,
              h->sum, name, model, (unsigned long long)h->count);
}

static void sched_metrics(tbuf *b, const shardlm_sched_stats *st, const char *model)
{
    metric(b, "num_requests_running", "gauge", "Sequences in the running batch.", model, st->running);
    metric(b, "num_requests_waiting", "gauge", "Requests waiting to be scheduled.", model, st->waiting);
    metric(b, "kv_cache_usage_perc", "gauge", "Fraction of KV-cache blocks held by live sequences (1 = full).",
           model, st->kv_usage);
    metric(b, "kv_cache_blocks", "gauge", "KV-cache blocks in the pool.", model, st->kv_blocks);
    metric(b, "kv_cache_block_size", "gauge", "Tokens per KV-cache block.", model, st->block_size);
    metric(b, "prompt_tokens_total", "counter", "Prompt tokens processed.", model, (double)st->prompt_tokens);
    metric(b, "generation_tokens_total", "counter", "Tokens generated.", model, (double)st->generation_tokens);
    metric(b, "prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.", model,
           (double)st->prefix_queries);
    metric(b, "prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.", model,
           (double)st->prefix_hits);
    metric(b, "num_preemptions_total", "counter", "Sequences preempted for lack of KV blocks.", model,
           (double)st->preemptions);
    /* vLLM's spec_decode counters (a counter's exposed name ends in _total) */
    metric(b, "spec_decode_num_drafts_total", "counter", "Verify steps of a sequence that had draft tokens.", model,
           (double)st->spec_drafts);
    metric(b, "spec_decode_num_draft_tokens_total", "counter", "Draft tokens proposed.", model,
           (double)st->spec_draft_tokens);
    metric(b, "spec_decode_num_accepted_tokens_total", "counter", "Draft tokens accepted by the target model.",
           model, (double)st->spec_accepted);
    metric(b, "engine_steps_total", "counter", "Forward steps run.", model, (double)st->steps);
    metric(b, "allreduce_seconds_total", "counter", "Time all steps spent in all-reduce.", model,
           st->allreduce_seconds);
    metric(b, "allreduce_seconds_per_step", "gauge", "Mean time a step spends in all-reduce.", model,
           st->steps ? st->allreduce_seconds / (double)st->steps : 0.0);
    metric(b, "engine_healthy", "gauge", "1 while every rank is up, 0 while the engine is down or re-forming.",
           model, st->healthy);
    metric(b, "cluster_healing", "gauge", "1 while the cluster re-forms after a lost rank.", model, st->healing);
    metric(b, "cluster_reforms_total", "counter", "Times the cluster re-formed after a lost rank.", model,
           (double)st->heals);
    metric(b, "requests_failed_in_flight_total", "counter", "Requests in flight when a rank was lost.", model,
           (double)st->failed_in_flight);
}

char *srv_metrics_render(srv_metrics *m, const shardlm_sched_stats *st, const char *model)
{
    tbuf b = {0};
    if (st) sched_metrics(&b, st, model);
    pthread_mutex_lock(&m->mu);
    tb_printf(&b, "# HELP shardlm:request_success_total Requests finished, by finish reason.\n"
                  "# TYPE shardlm:request_success_total counter\n");
    tb_printf(&b, "shardlm:request_success_total{model_name=\"%s\",finished_reason=\"stop\"} %llu\n", model,
              (unsigned long long)m->finished_stop);
    tb_printf(&b, "shardlm:request_success_total{model_name=\"%s\",finished_reason=\"length\"} %llu\n", model,
              (unsigned long long)m->finished_length);
    metric(&b, "request_cancelled_total", "counter", "Requests cancelled (client gone, timeout, shutdown).", model,
           (double)m->finished_cancelled);
    metric(&b, "request_failed_total", "counter", "Requests ended by an engine failure.", model,
           (double)m->finished_error);
    metric(&b, "http_requests_total", "counter", "HTTP requests answered.", model, (double)m->http_requests);
    metric(&b, "http_errors_total", "counter", "HTTP requests answered with a 4xx or 5xx status.", model,
           (double)m->http_errors);
    metric(&b, "http_header_timeouts_total", "counter",
           "Connections closed because their request was not in within --http-header-timeout.", model,
           (double)m->header_timeouts);
    hist(&b, "time_to_first_token_seconds", "Time from arrival to the first generated token.", model, &m->ttft);
    hist(&b, "inter_token_latency_seconds", "Time between consecutive generated tokens.", model, &m->itl);
    hist(&b, "e2e_request_latency_seconds", "Time from arrival to the end of a choice.", model, &m->e2e);
    pthread_mutex_unlock(&m->mu);
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
