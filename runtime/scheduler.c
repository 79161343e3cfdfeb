/* scheduler.c - continuous batching on rank 0 (see scheduler.h).
 *
 * One engine thread owns every running and waiting sequence. Other threads
 * only append to the inbox and the cancel list under the mutex. Each step:
 * take new arrivals and cancellations, admit waiting sequences FCFS (prefix
 * cache lookup), pack the decode tokens of every running sequence and then
 * chunks of prefill within the token budget, reserve KV blocks (preempting
 * the newest sequence not in this step when the pool runs out; it is
 * recomputed later), run the step, then sample, detokenize, apply stop
 * strings and report. Callbacks run without the lock held. */
#include "scheduler_internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shardlm_common.h"

/* ---- lists (engine thread) ---- */

static void wait_push_back(shardlm_sched *s, sched_seq *q)
{
    q->next = NULL;
    if (s->wait_tail) s->wait_tail->next = q;
    else s->wait_head = q;
    s->wait_tail = q;
    s->n_waiting++;
}

static void wait_push_front(shardlm_sched *s, sched_seq *q)
{
    q->next = s->wait_head;
    s->wait_head = q;
    if (!s->wait_tail) s->wait_tail = q;
    s->n_waiting++;
}

sched_seq *sched_wait_pop(shardlm_sched *s)
{
    sched_seq *q = s->wait_head;
    if (!q) return NULL;
    s->wait_head = q->next;
    if (!s->wait_head) s->wait_tail = NULL;
    s->n_waiting--;
    q->next = NULL;
    return q;
}

static void running_remove(shardlm_sched *s, sched_seq *q)
{
    for (int i = 0; i < s->n_running; i++)
        if (s->running[i] == q) {
            memmove(&s->running[i], &s->running[i + 1], (size_t)(s->n_running - i - 1) * sizeof *s->running);
            s->n_running--;
            return;
        }
}

static void publish_stats(shardlm_sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->st.running = s->n_running;
    s->st.waiting = s->n_waiting + s->n_inbox;
    s->st.kv_usage = shardlm_kv_usage(s->kv);
    s->st.prefix_queries = shardlm_kv_prefix_queries(s->kv);
    s->st.prefix_hits = shardlm_kv_prefix_hits(s->kv);
    s->st.allreduce_seconds = shardlm_engine_allreduce_seconds(s->e);
    pthread_mutex_unlock(&s->mu);
}

/* Ends a sequence wherever it is: frees its KV and reports, last. */
void sched_seq_end(shardlm_sched *s, sched_seq *q, shardlm_finish_reason why)
{
    if (q->has_kv) shardlm_kv_seq_free(s->kv, &q->kv);
    q->has_kv = 0;
    running_remove(s, q);
    if (q->cb.on_end) q->cb.on_end(q->cb.ctx, why, q->n_prompt, q->n_gen);
    sched_seq_free(q);
}

/* ---- taking work from other threads ---- */

static int is_cancelled(const shardlm_sched *s, uint64_t id, const uint64_t *ids, int n)
{
    (void)s;
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return 1;
    return 0;
}

/* Moves arrivals to the waiting list and ends cancelled sequences. Returns
 * 1 when stopping. Waits (sending heartbeats) while there is nothing to do. */
static int sched_intake(shardlm_sched *s)
{
    pthread_mutex_lock(&s->mu);
    while (!s->stopping && !s->inbox && !s->n_cancels && !s->n_running && !s->n_waiting) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long ns = ts.tv_nsec + (long)(s->hb_ms % 1000) * 1000000L;
        ts.tv_sec += s->hb_ms / 1000 + ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) {
            pthread_mutex_unlock(&s->mu);
            int rc = shardlm_engine_heartbeat(s->e); /* workers bound their idle wait */
            pthread_mutex_lock(&s->mu);
            if (rc) {
                pthread_mutex_unlock(&s->mu);
                return -1;
            }
        }
    }
    int stopping = s->stopping;
    sched_seq *in = s->inbox;
    s->inbox = s->inbox_tail = NULL;
    s->n_inbox = 0;
    int nc = s->n_cancels;
    uint64_t stack_ids[64], *ids = nc <= 64 ? stack_ids : malloc((size_t)nc * sizeof *ids);
    if (ids) memcpy(ids, s->cancels, (size_t)nc * sizeof *ids);
    s->n_cancels = 0;
    pthread_mutex_unlock(&s->mu);
    while (in) {
        sched_seq *q = in;
        in = in->next;
        wait_push_back(s, q);
    }
    for (int i = 0; ids && nc && i < s->n_running; i++)
        if (is_cancelled(s, s->running[i]->id, ids, nc)) sched_seq_end(s, s->running[i--], SHARDLM_FINISH_CANCELLED);
    for (sched_seq **pp = &s->wait_head; ids && nc && *pp;) {
        sched_seq *q = *pp;
        if (!is_cancelled(s, q->id, ids, nc)) {
            pp = &q->next;
            continue;
        }
        *pp = q->next;
        s->n_waiting--;
        if (s->wait_tail == q) s->wait_tail = NULL;
        sched_seq_end(s, q, SHARDLM_FINISH_CANCELLED);
    }
    if (!s->wait_tail)
        for (sched_seq *q = s->wait_head; q; q = q->next) s->wait_tail = q;
    if (ids != stack_ids) free(ids);
    return stopping;
}

/* FCFS admission up to --max-seqs, while the free KV blocks cover the
 * head's tokens (admitting what cannot run only causes preemption churn);
 * the prefix cache serves what it can. */
static void sched_admit(shardlm_sched *s)
{
    int bs = shardlm_kv_block_size(s->kv);
    while (s->n_running < s->o.max_num_seqs && s->wait_head) {
        int need = (s->wait_head->n_tokens + bs) / bs; /* its tokens plus the next one */
        if (s->n_running > 0 && shardlm_kv_n_free(s->kv) < need) break;
        sched_seq *q = sched_wait_pop(s);
        q->n_computed = shardlm_kv_seq_begin(s->kv, &q->kv, q->tokens, q->n_tokens);
        q->has_kv = 1;
        s->running[s->n_running++] = q;
        if (!q->admitted && q->cb.on_admit) q->cb.on_admit(q->cb.ctx, q->n_computed > 0 ? q->n_computed : 0);
        q->admitted = 1;
    }
}

/* Drops a sequence's KV so others can run; it recomputes when readmitted. */
static void sched_preempt(shardlm_sched *s, sched_seq *q)
{
    shardlm_kv_seq_free(s->kv, &q->kv);
    q->has_kv = 0;
    q->n_computed = 0;
    running_remove(s, q);
    wait_push_front(s, q);
    s->st.preemptions++;
}

/* The newest running sequence that is not already in this step. */
static sched_seq *sched_victim(shardlm_sched *s, int nb_seqs)
{
    for (int i = s->n_running - 1; i >= 0; i--) {
        int in_step = 0;
        for (int k = 0; k < nb_seqs; k++) in_step |= s->b_seqs[k] == s->running[i];
        if (!in_step) return s->running[i];
    }
    return NULL;
}

/* Adds up to `budget` of q's uncomputed tokens to the step, and a decoding
 * sequence's draft tokens within `spare` (spec.c); returns how many. */
static int sched_add(shardlm_sched *s, sched_seq *q, int budget, int spare, int *nb, int *ns)
{
    int k = q->n_tokens - q->n_computed;
    if (k > budget) k = budget;
    if (q->all_rows && k > 1) k = 1; /* one logits row per sequence and step */
    if (k <= 0) return 0;
    q->n_draft = 0;
    while (shardlm_kv_seq_reserve(s->kv, &q->kv, q->n_computed + k) != SHARDLM_OK) {
        sched_seq *v = sched_victim(s, *ns);
        if (!v || v == q) return 0; /* waits for a later step */
        sched_preempt(s, v);
    }
    /* drafts take blocks only when they are free: never a preemption */
    if (k == 1 && spare > 0 && !q->all_rows && (q->n_draft = sched_spec_draft(s, q, spare)) > 0 &&
        shardlm_kv_seq_reserve(s->kv, &q->kv, q->n_computed + 1 + q->n_draft) != SHARDLM_OK)
        q->n_draft = 0;
    int si = (*ns)++;
    s->b_seqs[si] = q;
    s->b_tables[si] = q->kv.blocks;
    s->b_table_len[si] = q->kv.n_blocks;
    for (int j = 0; j < k; j++) {
        int i = (*nb)++;
        s->b_tokens[i] = q->tokens[q->n_computed + j];
        s->b_pos[i] = q->n_computed + j;
        s->b_seq[i] = si;
        s->b_want[i] = q->all_rows || q->n_computed + j == q->n_tokens - 1;
    }
    for (int j = 0; j < q->n_draft; j++) { /* verified together: a row each */
        int i = (*nb)++;
        s->b_tokens[i] = q->draft[j];
        s->b_pos[i] = q->n_computed + 1 + j;
        s->b_seq[i] = si;
        s->b_want[i] = 1;
    }
    q->chunk = k;
    return k + q->n_draft;
}

/* Decode tokens first (one per running sequence), then prefill chunks, in
 * arrival order, within --max-num-batched-tokens. */
static int sched_build(shardlm_sched *s, int *nb, int *ns)
{
    int budget = s->max_batch, n_dec = 0;
    *nb = *ns = 0;
    for (int i = 0; i < s->n_running; i++) n_dec += s->running[i]->n_tokens - s->running[i]->n_computed == 1;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < s->n_running && budget > 0; i++) {
            sched_seq *q = s->running[i];
            int decode = q->n_tokens - q->n_computed == 1;
            if (decode != (pass == 0)) continue;
            /* drafts only from what is left once every decoding sequence has its token */
            int spare = decode ? budget - n_dec : 0;
            n_dec -= decode;
            budget -= sched_add(s, q, budget, spare, nb, ns);
        }
    return *nb;
}

static void sched_after_step(shardlm_sched *s, int ns)
{
    int row = 0;
    for (int k = 0; k < ns; k++) { /* rows come back in batch order */
        sched_seq *q = s->b_seqs[k];
        q->n_computed += q->chunk;
        shardlm_kv_seq_commit(s->kv, &q->kv, q->tokens, q->n_computed);
        q->want_row = q->n_computed == q->n_tokens || q->all_rows ? row : -1;
        row += q->want_row >= 0 ? 1 + q->n_draft : 0;
    }
    for (int k = 0; k < ns; k++) {
        sched_seq *q = s->b_seqs[k];
        float *r = q->want_row >= 0 ? s->logits + (size_t)q->want_row * s->vocab : NULL;
        int32_t tok;
        if (r && q->all_rows) q->cb.on_logits(q->cb.ctx, r, s->vocab);
        if (r && q->n_computed == q->n_tokens && q->n_draft > 0) sched_spec_verify(s, q, r);
        else if (r && q->n_computed == q->n_tokens) sched_seq_sample(s, q, r, &tok);
    }
}

static void sched_fail_all(shardlm_sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1; /* no new arrivals from here on */
    pthread_mutex_unlock(&s->mu);
    while (s->n_running) sched_seq_end(s, s->running[0], SHARDLM_FINISH_ERROR);
    sched_seq *q;
    while ((q = sched_wait_pop(s))) sched_seq_end(s, q, SHARDLM_FINISH_ERROR);
    pthread_mutex_lock(&s->mu);
    sched_seq *in = s->inbox;
    s->inbox = s->inbox_tail = NULL;
    s->n_inbox = 0;
    pthread_mutex_unlock(&s->mu);
    while (in) {
        q = in;
        in = in->next;
        sched_seq_end(s, q, SHARDLM_FINISH_ERROR);
    }
}

/* Every request in flight ends with an error; the KV pool is forgotten
 * (the re-formed workers start empty, so no prefix may be trusted), and
 * queued requests, preempted ones included, wait for the cluster. */
static int sched_drop_in_flight(shardlm_sched *s)
{
    int n = s->n_running;
    while (s->n_running) sched_seq_end(s, s->running[0], SHARDLM_FINISH_ERROR);
    shardlm_kv *kv = NULL;
    int rc = shardlm_kv_new(shardlm_kv_n_blocks(s->kv), shardlm_kv_block_size(s->kv), s->o.prefix_caching, &kv);
    if (rc) return rc;
    shardlm_kv_free(s->kv);
    s->kv = kv;
    pthread_mutex_lock(&s->mu);
    s->st.failed_in_flight += (uint64_t)n;
    pthread_mutex_unlock(&s->mu);
    return SHARDLM_OK;
}

/* After a failed step or heartbeat: without a heal callback, every request
 * ends and the loop returns rc; with one, the requests in flight fail and
 * the loop resumes once the cluster is back (SHARDLM_OK). 1: a stop ended
 * the healing (every request has ended). */
static int sched_recover(shardlm_sched *s, int rc)
{
    char why[384];
    snprintf(why, sizeof why, "%s", shardlm_err_get());
    pthread_mutex_lock(&s->mu);
    s->st.healthy = 0;
    s->st.healing = s->heal != NULL;
    snprintf(s->st.reason, sizeof s->st.reason, "%s", why);
    snprintf(s->st.last_error, sizeof s->st.last_error, "%s", why);
    pthread_mutex_unlock(&s->mu);
    int hrc = s->heal ? sched_drop_in_flight(s) : rc;
    publish_stats(s);
    if (!hrc) hrc = s->heal(s->heal_ctx, s, why);
    pthread_mutex_lock(&s->mu);
    s->st.healing = 0;
    if (!hrc) {
        s->st.healthy = 1;
        s->st.reason[0] = 0;
        s->st.heals++;
    }
    pthread_mutex_unlock(&s->mu);
    if (!hrc) return SHARDLM_OK;
    int asked = s->heal && shardlm_sched_stopping(s); /* a stop ended the healing: not a failure */
    snprintf(why, sizeof why, "%s", shardlm_err_get());
    sched_fail_all(s);
    shardlm_err_set("%s", why);
    return asked ? 1 : hrc;
}

int shardlm_sched_run(shardlm_sched *s)
{
    for (;;) {
        int stop = sched_intake(s);
        if (stop < 0) {
            int hrc = sched_recover(s, SHARDLM_EPEER);
            if (hrc) return hrc > 0 ? SHARDLM_OK : hrc;
            continue;
        }
        if (stop) { /* every request still held ends now: none is silently lost */
            sched_fail_all(s);
            return SHARDLM_OK;
        }
        sched_admit(s);
        int nb, ns;
        if (!sched_build(s, &nb, &ns)) {
            /* the oldest sequence alone cannot get another KV block */
            if (s->n_running) sched_seq_end(s, s->running[0], SHARDLM_FINISH_LENGTH);
            publish_stats(s);
            continue;
        }
        shardlm_batch b = {nb, s->b_tokens, s->b_pos, s->b_seq, s->b_want, ns, s->b_tables, s->b_table_len};
        int rc = shardlm_engine_step_batch(s->e, &b, s->logits);
        if (rc) {
            int hrc = sched_recover(s, rc);
            if (hrc) return hrc > 0 ? SHARDLM_OK : hrc;
            continue;
        }
        pthread_mutex_lock(&s->mu);
        s->st.steps++;
        pthread_mutex_unlock(&s->mu);
        sched_after_step(s, ns);
        publish_stats(s);
    }
}

