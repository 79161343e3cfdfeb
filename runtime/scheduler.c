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
#include "scheduler.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvcache.h"
#include "shardlm_common.h"

typedef struct sched_seq {
    uint64_t id;
    shardlm_request_cb cb;
    int32_t *tokens; /* prompt, then generated tokens */
    int n_tokens, cap, n_prompt, n_gen, n_computed, max_tokens;
    shardlm_sampling_params params;
    shardlm_logit_bias *bias; /* owned copy behind params.logit_bias */
    shardlm_seq_sampler *smp;
    shardlm_stopper stop;
    shardlm_detok detok;
    shardlm_kv_seq kv;
    int has_kv, cancelled, chunk, want_row;
    shardlm_grammar *grammar;     /* constrained decoding: NULL when off */
    shardlm_grammar_state *gst;   /* made on the engine thread at the first sample */
    const shardlm_grammar_vocab *gvocab;
    int lead;                     /* the prompt ends with BOS (the first piece loses its space) */
    shardlm_trigger_scan trig;    /* a lazy grammar waits for a trigger (trig.n > 0) */
    int32_t as_text[SHARDLM_SCHED_MAX_AS_TEXT]; /* sorted */
    int n_as_text;
    int32_t stop_ids[SHARDLM_SCHED_MAX_STOP_IDS];
    int n_stop_ids, min_tokens, ignore_eos, admitted, failed;
    int32_t bos;
    int32_t draft[SHARDLM_SPEC_MAX_TOKENS]; /* this step's draft tokens, after tokens[n_computed] */
    int n_draft;
    shardlm_spec_seq *spec;       /* a draft model's state for this sequence (NULL: none) */
    const shardlm_tokenizer *tok; /* the scheduler's, for the EOG set in the sampler hook */
    struct sched_seq *next; /* inbox / waiting list */
} sched_seq;

/* A grammar vocabulary in which some control tokens spell their piece. */
typedef struct sched_gvocab {
    int32_t ids[SHARDLM_SCHED_MAX_AS_TEXT];
    int n;
    shardlm_grammar_vocab *v;
    struct sched_gvocab *next;
} sched_gvocab;

struct shardlm_sched {
    shardlm_engine *e;
    const shardlm_tokenizer *tok;
    shardlm_sched_opts o;
    shardlm_kv *kv;
    int n_ctx, vocab, max_batch;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    sched_seq *inbox, *inbox_tail;
    int n_inbox, stopping;
    uint64_t *cancels;
    int n_cancels, cap_cancels;
    uint64_t next_id;
    shardlm_sched_stats st;
    /* engine thread only */
    sched_seq *wait_head, *wait_tail;
    int n_waiting;
    sched_seq **running;
    int n_running;
    int32_t *b_tokens, *b_pos, *b_seq;
    uint8_t *b_want;
    const int32_t **b_tables;
    int *b_table_len;
    sched_seq **b_seqs;
    float *logits;
    shardlm_grammar_vocab *gvocab; /* the tokens as bytes, built at the first grammar request */
    char *piece; /* one token's text: shardlm_detok_max bytes */
    size_t piece_cap;
    sched_gvocab *gvariants;       /* the same with control tokens as text, one per set asked for */
};

/* ---- one sequence ---- */

static void seq_free(sched_seq *q)
{
    if (!q) return;
    shardlm_seq_sampler_free(q->smp);
    shardlm_spec_seq_free(q->spec);
    shardlm_grammar_state_free(q->gst);
    shardlm_grammar_unref(q->grammar);
    shardlm_trigger_scan_free(&q->trig);
    shardlm_stopper_free(&q->stop);
    free(q->tokens);
    free(q->bias);
    free(q);
}

static int cmp_id(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Copies n ids (bounded by sched_check), sorted. */
static void seq_copy_ids(int32_t *dst, int *n_dst, const int32_t *src, int n)
{
    if (n > 0) memcpy(dst, src, (size_t)n * sizeof *dst);
    *n_dst = n > 0 ? n : 0;
    qsort(dst, (size_t)*n_dst, sizeof *dst, cmp_id);
}

static int has_id(const int32_t *ids, int n, int32_t id)
{
    return n > 0 && bsearch(&id, ids, (size_t)n, sizeof *ids, cmp_id) != NULL;
}

static int seq_hook(void *ctx, float *logits, int n_vocab);

static sched_seq *seq_new(const shardlm_sched *s, const shardlm_request_desc *d, shardlm_request_cb cb)
{
    sched_seq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->cb = cb;
    q->cap = d->n_prompt + 64;
    q->tokens = malloc((size_t)q->cap * sizeof(int32_t));
    q->params = d->params;
    q->max_tokens = d->max_tokens;
    if (d->params.n_logit_bias > 0) {
        q->bias = malloc((size_t)d->params.n_logit_bias * sizeof *q->bias);
        if (q->bias) memcpy(q->bias, d->params.logit_bias, (size_t)d->params.n_logit_bias * sizeof *q->bias);
        q->params.logit_bias = q->bias;
    }
    if (!q->tokens || (d->params.n_logit_bias > 0 && !q->bias) ||
        shardlm_stopper_init(&q->stop, d->stop, d->n_stop) ||
        shardlm_seq_sampler_new(&q->params, d->prompt, d->n_prompt, d->choice, &q->smp)) {
        seq_free(q);
        return NULL;
    }
    memcpy(q->tokens, d->prompt, (size_t)d->n_prompt * sizeof(int32_t));
    q->n_tokens = q->n_prompt = d->n_prompt;
    shardlm_detok_init(&q->detok);
    q->detok.prev = d->prompt[d->n_prompt - 1]; /* so a leading space after BOS alone is dropped */
    q->grammar = shardlm_grammar_ref(d->grammar);
    q->lead = q->detok.prev == shardlm_tokenizer_bos(s->tok);
    if (d->n_triggers > 0 && shardlm_trigger_scan_init(&q->trig, d->triggers, d->n_triggers)) {
        seq_free(q);
        return NULL;
    }
    seq_copy_ids(q->as_text, &q->n_as_text, d->as_text, d->n_as_text);
    seq_copy_ids(q->stop_ids, &q->n_stop_ids, d->stop_token_ids, d->n_stop_token_ids);
    q->min_tokens = d->min_tokens;
    q->ignore_eos = d->ignore_eos;
    q->bos = shardlm_tokenizer_bos(s->tok);
    q->tok = s->tok;
    if (q->min_tokens > 0) shardlm_seq_sampler_set_hook(q->smp, seq_hook, q);
    return q;
}

static int seq_append(sched_seq *q, int32_t tok)
{
    if (q->n_tokens == q->cap) {
        int cap = q->cap * 2;
        int32_t *t = realloc(q->tokens, (size_t)cap * sizeof *t);
        if (!t) return SHARDLM_ENOMEM;
        q->tokens = t;
        q->cap = cap;
    }
    q->tokens[q->n_tokens++] = tok;
    return SHARDLM_OK;
}

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

static sched_seq *wait_pop(shardlm_sched *s)
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
static void seq_end(shardlm_sched *s, sched_seq *q, shardlm_end why)
{
    if (q->has_kv) shardlm_kv_seq_free(s->kv, &q->kv);
    q->has_kv = 0;
    running_remove(s, q);
    if (q->cb.on_end) q->cb.on_end(q->cb.ctx, why, q->n_prompt, q->n_gen);
    seq_free(q);
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
        ts.tv_sec += 2;
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT) {
            pthread_mutex_unlock(&s->mu);
            int rc = shardlm_engine_heartbeat(s->e); /* workers bound their idle wait */
            pthread_mutex_lock(&s->mu);
            if (rc) {
                s->st.healthy = 0;
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
        if (is_cancelled(s, s->running[i]->id, ids, nc)) seq_end(s, s->running[i--], SHARDLM_END_CANCELLED);
    for (sched_seq **pp = &s->wait_head; ids && nc && *pp;) {
        sched_seq *q = *pp;
        if (!is_cancelled(s, q->id, ids, nc)) {
            pp = &q->next;
            continue;
        }
        *pp = q->next;
        s->n_waiting--;
        if (s->wait_tail == q) s->wait_tail = NULL;
        seq_end(s, q, SHARDLM_END_CANCELLED);
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
        sched_seq *q = wait_pop(s);
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

static int sched_draft(shardlm_sched *s, sched_seq *q, int spare);

/* Adds up to `budget` of q's uncomputed tokens to the step, and a decoding
 * sequence's draft tokens within `spare`; returns how many. */
static int sched_add(shardlm_sched *s, sched_seq *q, int budget, int spare, int *nb, int *ns)
{
    int k = q->n_tokens - q->n_computed;
    if (k > budget) k = budget;
    if (k <= 0) return 0;
    q->n_draft = 0;
    while (shardlm_kv_seq_reserve(s->kv, &q->kv, q->n_computed + k) != SHARDLM_OK) {
        sched_seq *v = sched_victim(s, *ns);
        if (!v || v == q) return 0; /* waits for a later step */
        sched_preempt(s, v);
    }
    /* drafts take blocks only when they are free: never a preemption */
    if (k == 1 && spare > 0 && (q->n_draft = sched_draft(s, q, spare)) > 0 &&
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
        s->b_want[i] = q->n_computed + j == q->n_tokens - 1;
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

/* Draft tokens for a decoding sequence, within spare and what the request
 * and the context can still take: a step yields at most n_draft + 1 tokens,
 * and the last draft's position must be inside the context. */
static int sched_draft(shardlm_sched *s, sched_seq *q, int spare)
{
    const shardlm_spec_opts *o = &s->o.spec;
    if (o->mode == SHARDLM_SPEC_OFF) return 0;
    int k = o->n_tokens < spare ? o->n_tokens : spare;
    if (k > s->n_ctx - 1 - q->n_computed) k = s->n_ctx - 1 - q->n_computed;
    if (q->max_tokens > 0 && k > q->max_tokens - q->n_gen - 1) k = q->max_tokens - q->n_gen - 1;
    if (k < 1) return 0;
    int n = shardlm_spec_propose(o, &q->spec, q->tokens, q->n_tokens, k, q->draft);
    return n > 0 ? n : 0; /* a draft model that fails only costs the speed-up */
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

/* ---- after a step ---- */

static void emit(sched_seq *q, const char *text, size_t len, int32_t tok, const shardlm_logprobs *lp)
{
    if (q->cb.on_token) q->cb.on_token(q->cb.ctx, text, len, tok, lp);
}

/* A token's text: its detokenized text, or its piece when it is one of
 * the request's control tokens shown as text. */
static size_t seq_piece(const shardlm_sched *s, sched_seq *q, int32_t tok, char *buf, size_t cap)
{
    if (!has_id(q->as_text, q->n_as_text, tok)) return shardlm_detok_push(s->tok, &q->detok, tok, buf, cap);
    size_t n = shardlm_detok_flush(&q->detok, buf, cap), len = 0;
    const char *p = shardlm_tokenizer_piece(s->tok, tok, &len);
    if (!p || len > cap - n) len = 0;
    if (len) memcpy(buf + n, p, len);
    q->detok.prev = tok;
    return n + len;
}

static int seq_grammar_begin(shardlm_sched *s, sched_seq *q);

/* A lazy grammar: once a trigger shows in the output, the grammar starts
 * there and takes the text from the trigger on (and any UTF-8 lead byte
 * detok still holds). Text it refuses leaves the request unconstrained. */
static void seq_watch(shardlm_sched *s, sched_seq *q, const char *piece, size_t n)
{
    const char *from;
    size_t len;
    int hit = shardlm_trigger_scan_feed(&q->trig, piece, n, &from, &len);
    if (hit < 0) q->failed = 1;
    if (hit <= 0) return;
    if (seq_grammar_begin(s, q)) {
        q->failed = 1;
        return;
    }
    if (shardlm_grammar_accept_bytes(q->gst, from, len) ||
        (q->detok.n_pend && shardlm_grammar_accept_bytes(q->gst, q->detok.pend, (size_t)q->detok.n_pend))) {
        shardlm_grammar_state_free(q->gst);
        q->gst = NULL;
    }
}

/* Decodes a sampled token and passes the text through the stop strings.
 * Returns 1 when a stop string matched. */
static int seq_text(shardlm_sched *s, sched_seq *q, int32_t tok, const shardlm_logprobs *lp)
{
    size_t n = seq_piece(s, q, tok, s->piece, s->piece_cap);
    if (q->trig.n && !q->gst) seq_watch(s, q, s->piece, n);
    const char *out = NULL;
    int stopped = 0;
    size_t k = shardlm_stopper_feed(&q->stop, s->piece, n, &out, &stopped);
    if (k == (size_t)-1) k = 0;
    emit(q, out ? out : "", k, tok, lp);
    return stopped;
}

/* Text still held back (an incomplete character, a possible stop start). */
static void seq_flush(sched_seq *q)
{
    char tail[16];
    size_t n = shardlm_detok_flush(&q->detok, tail, sizeof tail);
    const char *out = NULL;
    int stopped = 0;
    size_t k = n ? shardlm_stopper_feed(&q->stop, tail, n, &out, &stopped) : 0;
    if (k && k != (size_t)-1) emit(q, out, k, -1, NULL);
    if (!stopped && (k = shardlm_stopper_flush(&q->stop, &out)) > 0) emit(q, out, k, -1, NULL);
}

/* The tokens that end a request: EOS and BOS (unless ignore_eos), and its
 * stop_token_ids. */
static int seq_is_end(const shardlm_sched *s, const sched_seq *q, int32_t tok)
{
    if (has_id(q->stop_ids, q->n_stop_ids, tok)) return 1;
    /* the model's end-of-generation tokens, and BOS, as llama2.c's run.c
     * (models trained on BOS-separated documents start the next one) */
    return !q->ignore_eos && (shardlm_tokenizer_is_eog(s->tok, tok) || tok == shardlm_tokenizer_bos(s->tok));
}

/* The sampler's hook: a constrained sequence's grammar mask (and -inf for
 * model rows the tokenizer does not have), then min_tokens. */
static int seq_hook(void *ctx, float *logits, int n_vocab)
{
    sched_seq *q = ctx;
    if (q->gst) {
        int32_t n = shardlm_grammar_vocab_n(q->gvocab);
        if (n > n_vocab) {
            shardlm_err_set("the tokenizer has %d tokens but the model only %d", n, n_vocab);
            return SHARDLM_EINPUT;
        }
        int rc = shardlm_grammar_apply(q->gst, q->gvocab, logits);
        for (int32_t i = n; i < n_vocab; i++) logits[i] = -INFINITY;
        if (rc) return rc;
    }
    if (q->n_gen < q->min_tokens) { /* min_tokens: no end token yet, unless a grammar allows nothing else */
        int32_t ban[SHARDLM_SCHED_MAX_STOP_IDS + SHARDLM_SCHED_MAX_EOG + 1];
        int nb = 0;
        if (!q->ignore_eos) {
            size_t ne = shardlm_tokenizer_eog(q->tok, ban, SHARDLM_SCHED_MAX_EOG);
            nb = (int)(ne < SHARDLM_SCHED_MAX_EOG ? ne : SHARDLM_SCHED_MAX_EOG);
            if (q->bos >= 0) ban[nb++] = q->bos;
        }
        for (int i = 0; i < q->n_stop_ids; i++) ban[nb++] = q->stop_ids[i];
        shardlm_logits_ban(logits, n_vocab, ban, nb, q->gst != NULL);
    }
    return SHARDLM_OK;
}

/* The grammar vocabulary for q: the model's, or the variant in which q's
 * control tokens spell their pieces (built once per set). */
static const shardlm_grammar_vocab *sched_vocab(shardlm_sched *s, const sched_seq *q)
{
    if (!q->n_as_text) {
        if (!s->gvocab && shardlm_grammar_vocab_from_tokenizer(s->tok, &s->gvocab)) return NULL;
        return s->gvocab;
    }
    for (sched_gvocab *g = s->gvariants; g; g = g->next)
        if (g->n == q->n_as_text && !memcmp(g->ids, q->as_text, (size_t)g->n * sizeof *g->ids)) return g->v;
    sched_gvocab *g = calloc(1, sizeof *g);
    if (!g || shardlm_grammar_vocab_from_tokenizer_as_text(s->tok, q->as_text, q->n_as_text, &g->v)) {
        free(g);
        return NULL;
    }
    memcpy(g->ids, q->as_text, (size_t)q->n_as_text * sizeof *g->ids);
    g->n = q->n_as_text;
    g->next = s->gvariants;
    s->gvariants = g;
    return g->v;
}

/* A constrained sequence's grammar state and the sampler hook, on the
 * engine thread (the grammar's caches are not shared across threads). */
static int seq_grammar_begin(shardlm_sched *s, sched_seq *q)
{
    if (q->gst) return SHARDLM_OK;
    if (!(q->gvocab = sched_vocab(s, q))) return SHARDLM_ENOMEM;
    /* a lazy grammar starts after some output: no first-token lead */
    if (shardlm_grammar_state_new(q->grammar, q->trig.n ? 0 : q->lead, &q->gst)) return SHARDLM_ENOMEM;
    shardlm_seq_sampler_set_hook(q->smp, seq_hook, q);
    return SHARDLM_OK;
}

/* Samples the next token of a sequence whose logits came back. Returns 1
 * when the sequence ended (q is freed), else 0 with the token in *out. */
static int seq_sample(shardlm_sched *s, sched_seq *q, float *row, int32_t *out)
{
    shardlm_logprobs lp;
    if (q->grammar && !q->trig.n && seq_grammar_begin(s, q)) {
        seq_end(s, q, SHARDLM_END_ERROR);
        return 1;
    }
    int32_t tok = shardlm_seq_sample(q->smp, &q->params, row, s->vocab, q->params.logprobs ? &lp : NULL);
    if (tok < 0 || seq_append(q, tok) || (q->gst && shardlm_grammar_accept_token(q->gst, q->gvocab, tok))) {
        seq_end(s, q, SHARDLM_END_ERROR);
        return 1;
    }
    *out = tok;
    q->n_gen++;
    pthread_mutex_lock(&s->mu);
    s->st.generation_tokens++;
    pthread_mutex_unlock(&s->mu);
    int eos = seq_is_end(s, q, tok);
    int stopped = eos ? 0 : seq_text(s, q, tok, q->params.logprobs ? &lp : NULL);
    if (q->failed) {
        seq_end(s, q, SHARDLM_END_ERROR);
        return 1;
    }
    /* a grammar that can only end now ends here, without a step for the EOS */
    int done = q->gst && !eos && shardlm_grammar_must_end(q->gst);
    shardlm_finish_reason f =
        shardlm_finish_decide(eos, stopped || done, q->n_gen, q->max_tokens, q->n_tokens >= s->n_ctx);
    if (f == SHARDLM_FINISH_NONE) return 0;
    if (!stopped) seq_flush(q);
    seq_end(s, q, f == SHARDLM_FINISH_STOP ? SHARDLM_END_STOP : SHARDLM_END_LENGTH);
    return 1;
}

/* A decoding sequence with drafts: row i predicts the token after draft
 * i-1. Each row is sampled as if it were the only one; draft i is kept
 * (its KV, computed this step, becomes the sequence's) while the sample
 * equals it, and the first sample that differs is the step's last token.
 * The KV of rejected drafts is returned with the blocks that held only them. */
static void seq_verify(shardlm_sched *s, sched_seq *q, float *rows)
{
    int nd = q->n_draft, acc = 0;
    for (int i = 0; i <= nd; i++) {
        int32_t tok;
        if (seq_sample(s, q, rows + (size_t)i * s->vocab, &tok)) break; /* ended; q is freed */
        if (i == nd || tok != q->draft[i]) {
            shardlm_kv_seq_trim(s->kv, &q->kv, q->n_computed + 1);
            break;
        }
        acc++;
        shardlm_kv_seq_commit(s->kv, &q->kv, q->tokens, ++q->n_computed);
    }
    pthread_mutex_lock(&s->mu);
    s->st.spec_drafts++;
    s->st.spec_draft_tokens += (uint64_t)nd;
    s->st.spec_accepted += (uint64_t)acc;
    pthread_mutex_unlock(&s->mu);
}

static void sched_after_step(shardlm_sched *s, int ns)
{
    int row = 0;
    for (int k = 0; k < ns; k++) { /* rows come back in batch order */
        sched_seq *q = s->b_seqs[k];
        q->n_computed += q->chunk;
        shardlm_kv_seq_commit(s->kv, &q->kv, q->tokens, q->n_computed);
        q->want_row = q->n_computed == q->n_tokens ? row : -1;
        row += q->want_row >= 0 ? 1 + q->n_draft : 0;
    }
    for (int k = 0; k < ns; k++) {
        sched_seq *q = s->b_seqs[k];
        int32_t tok;
        if (q->want_row < 0) continue;
        if (q->n_draft > 0) seq_verify(s, q, s->logits + (size_t)q->want_row * s->vocab);
        else seq_sample(s, q, s->logits + (size_t)q->want_row * s->vocab, &tok);
    }
}

static void sched_fail_all(shardlm_sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1; /* no new arrivals from here on */
    pthread_mutex_unlock(&s->mu);
    while (s->n_running) seq_end(s, s->running[0], SHARDLM_END_ERROR);
    sched_seq *q;
    while ((q = wait_pop(s))) seq_end(s, q, SHARDLM_END_ERROR);
    pthread_mutex_lock(&s->mu);
    sched_seq *in = s->inbox;
    s->inbox = s->inbox_tail = NULL;
    s->n_inbox = 0;
    pthread_mutex_unlock(&s->mu);
    while (in) {
        q = in;
        in = in->next;
        seq_end(s, q, SHARDLM_END_ERROR);
    }
}

int shardlm_sched_run(shardlm_sched *s)
{
    for (;;) {
        int stop = sched_intake(s);
        if (stop) { /* every request still held ends now: none is silently lost */
            sched_fail_all(s);
            return stop < 0 ? SHARDLM_EPEER : SHARDLM_OK;
        }
        sched_admit(s);
        int nb, ns;
        if (!sched_build(s, &nb, &ns)) {
            /* the oldest sequence alone cannot get another KV block */
            if (s->n_running) seq_end(s, s->running[0], SHARDLM_END_LENGTH);
            publish_stats(s);
            continue;
        }
        shardlm_batch b = {nb, s->b_tokens, s->b_pos, s->b_seq, s->b_want, ns, s->b_tables, s->b_table_len};
        int rc = shardlm_engine_step_batch(s->e, &b, s->logits);
        if (rc) {
            char why[256];
            snprintf(why, sizeof why, "%s", shardlm_err_get());
            pthread_mutex_lock(&s->mu);
            s->st.healthy = 0;
            pthread_mutex_unlock(&s->mu);
            sched_fail_all(s);
            shardlm_err_set("%s", why);
            return rc;
        }
        pthread_mutex_lock(&s->mu);
        s->st.steps++;
        pthread_mutex_unlock(&s->mu);
        sched_after_step(s, ns);
        publish_stats(s);
    }
}

/* ---- API for other threads ---- */

static int sched_alloc_step(shardlm_sched *s)
{
    int B = s->max_batch, S = s->o.max_num_seqs;
    s->running = calloc((size_t)S, sizeof *s->running);
    s->b_tokens = malloc((size_t)B * sizeof(int32_t));
    s->b_pos = malloc((size_t)B * sizeof(int32_t));
    s->b_seq = malloc((size_t)B * sizeof(int32_t));
    s->b_want = malloc((size_t)B);
    s->b_tables = malloc((size_t)S * sizeof *s->b_tables);
    s->b_table_len = malloc((size_t)S * sizeof(int));
    s->b_seqs = malloc((size_t)S * sizeof *s->b_seqs);
    int rows = S * (1 + (s->o.spec.mode ? s->o.spec.n_tokens : 0)); /* verified drafts: a row each */
    if (rows > B) rows = B > S ? B : S;
    s->logits = malloc((size_t)rows * (size_t)s->vocab * sizeof(float));
    s->cap_cancels = 64;
    s->cancels = malloc((size_t)s->cap_cancels * sizeof(uint64_t));
    return s->running && s->b_tokens && s->b_pos && s->b_seq && s->b_want && s->b_tables && s->b_table_len &&
                   s->b_seqs && s->logits && s->cancels
               ? SHARDLM_OK
               : SHARDLM_ENOMEM;
}

int shardlm_sched_new(shardlm_engine *e, const shardlm_tokenizer *tok, const shardlm_sched_opts *o,
                      shardlm_sched **out)
{
    if (o->max_num_seqs < 1 || o->max_queue < 0) {
        shardlm_err_set("--max-seqs must be at least 1 and --max-queue not negative");
        return SHARDLM_EINPUT;
    }
    if (shardlm_spec_opts_check(&o->spec)) return SHARDLM_EINPUT;
    shardlm_sched *s = calloc(1, sizeof *s);
    if (!s) return SHARDLM_ENOMEM;
    s->e = e;
    s->tok = tok;
    s->o = *o;
    s->n_ctx = shardlm_engine_n_ctx(e);
    s->vocab = shardlm_model_hparams(shardlm_engine_model(e))->vocab;
    s->max_batch = shardlm_engine_max_batch(e);
    if (o->max_num_batched_tokens > 0 && o->max_num_batched_tokens < s->max_batch)
        s->max_batch = o->max_num_batched_tokens;
    s->next_id = 1;
    s->st.healthy = 1;
    s->piece_cap = shardlm_detok_max(tok);
    s->piece = malloc(s->piece_cap);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc = shardlm_kv_new(shardlm_engine_kv_blocks(e), o->block_size, o->prefix_caching, &s->kv);
    if (!rc) rc = sched_alloc_step(s);
    if (!rc && !s->piece) rc = SHARDLM_ENOMEM;
    if (rc) {
        shardlm_sched_free(s);
        return rc;
    }
    s->st.kv_blocks = shardlm_kv_n_blocks(s->kv);
    s->st.block_size = o->block_size;
    *out = s;
    return SHARDLM_OK;
}

void shardlm_sched_free(shardlm_sched *s)
{
    if (!s) return;
    for (int i = 0; s->running && i < s->n_running; i++) seq_free(s->running[i]);
    sched_seq *q;
    while ((q = wait_pop(s))) seq_free(q);
    while ((q = s->inbox)) {
        s->inbox = q->next;
        seq_free(q);
    }
    shardlm_kv_free(s->kv);
    shardlm_grammar_vocab_free(s->gvocab);
    for (sched_gvocab *g = s->gvariants, *next; g; g = next) {
        next = g->next;
        shardlm_grammar_vocab_free(g->v);
        free(g);
    }
    free(s->running); free(s->b_tokens); free(s->b_pos); free(s->b_seq); free(s->b_want);
    free(s->b_tables); free(s->b_table_len); free(s->b_seqs); free(s->logits); free(s->cancels);
    free(s->piece);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

static int sched_check(const shardlm_sched *s, const shardlm_request_desc *d)
{
    int pool = shardlm_kv_n_blocks(s->kv) * shardlm_kv_block_size(s->kv);
    if (d->n_prompt < 1 || !d->prompt) {
        shardlm_err_set("the prompt is empty");
        return SHARDLM_EINPUT;
    }
    if (d->n_prompt >= s->n_ctx || d->n_prompt >= pool) {
        shardlm_err_set("the prompt is %d tokens, but this model's context holds %d (KV pool: %d tokens)", d->n_prompt,
                        s->n_ctx, pool);
        return SHARDLM_EINPUT;
    }
    for (int i = 0; i < d->n_prompt; i++)
        if (d->prompt[i] < 0 || d->prompt[i] >= s->vocab) {
            shardlm_err_set("prompt token %d is outside the vocabulary (0..%d)", d->prompt[i], s->vocab - 1);
            return SHARDLM_EINPUT;
        }
    if (d->n_triggers > 0 && !d->grammar) {
        shardlm_err_set("grammar triggers need a grammar");
        return SHARDLM_EINPUT;
    }
    if (d->n_as_text < 0 || d->n_as_text > SHARDLM_SCHED_MAX_AS_TEXT || d->n_stop_token_ids < 0 ||
        d->n_stop_token_ids > SHARDLM_SCHED_MAX_STOP_IDS) {
        shardlm_err_set("stop_token_ids takes at most %d ids, and at most %d control tokens are shown as text",
                        SHARDLM_SCHED_MAX_STOP_IDS, SHARDLM_SCHED_MAX_AS_TEXT);
        return SHARDLM_EINPUT;
    }
    for (int i = 0; i < d->n_as_text + d->n_stop_token_ids; i++) {
        int32_t id = i < d->n_as_text ? d->as_text[i] : d->stop_token_ids[i - d->n_as_text];
        if (id < 0 || id >= s->vocab) {
            shardlm_err_set("token %d is outside the vocabulary (0..%d)", id, s->vocab - 1);
            return SHARDLM_EINPUT;
        }
    }
    if (d->min_tokens < 0 || (d->max_tokens > 0 && d->min_tokens > d->max_tokens)) {
        shardlm_err_set("min_tokens must be in [0, max_tokens], got %d", d->min_tokens);
        return SHARDLM_EINPUT;
    }
    char why[256];
    return shardlm_sampling_params_check(&d->params, s->vocab, why, sizeof why);
}

int shardlm_sched_submit(shardlm_sched *s, const shardlm_request_desc *d, shardlm_request_cb cb, uint64_t *id)
{
    int rc = sched_check(s, d);
    if (rc) return rc;
    sched_seq *q = seq_new(s, d, cb);
    if (!q) {
        shardlm_err_set("out of memory, or a stop string is invalid");
        return SHARDLM_EINPUT;
    }
    pthread_mutex_lock(&s->mu);
    if (!s->st.healthy || s->stopping) rc = SHARDLM_ERUNTIME;
    else if (s->o.max_queue > 0 && s->st.waiting >= s->o.max_queue) rc = SHARDLM_EBUSY;
    if (!rc) {
        q->id = s->next_id++;
        if (s->inbox_tail) s->inbox_tail->next = q;
        else s->inbox = q;
        s->inbox_tail = q;
        s->n_inbox++;
        s->st.waiting++;
        s->st.prompt_tokens += (uint64_t)d->n_prompt;
        *id = q->id;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        shardlm_err_set(rc == SHARDLM_EBUSY ? "the wait queue is full (%d requests)" : "the engine has stopped",
                        s->o.max_queue);
        seq_free(q);
    }
    return rc;
}

void shardlm_sched_cancel(shardlm_sched *s, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    if (s->n_cancels == s->cap_cancels) {
        uint64_t *c = realloc(s->cancels, (size_t)s->cap_cancels * 2 * sizeof *c);
        if (c) {
            s->cancels = c;
            s->cap_cancels *= 2;
        }
    }
    if (s->n_cancels < s->cap_cancels) s->cancels[s->n_cancels++] = id;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void shardlm_sched_stats_get(shardlm_sched *s, shardlm_sched_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->st;
    pthread_mutex_unlock(&s->mu);
}

int shardlm_sched_n_ctx(const shardlm_sched *s) { return s->n_ctx; }

void shardlm_sched_stop(shardlm_sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}
