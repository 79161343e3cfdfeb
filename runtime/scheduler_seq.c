/* scheduler_seq.c - one sequence of the scheduler (see scheduler_internal.h):
 * its making, sampling (grammar mask, min_tokens, end tokens), text (detok,
 * control tokens shown as text, stop strings, lazy-grammar triggers) and
 * finish reason. Engine thread only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler_internal.h"
#include "shardlm_common.h"

/* ---- one sequence ---- */

void sched_seq_free(sched_seq *q)
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

sched_seq *sched_seq_new(const shardlm_sched *s, const shardlm_request_desc *d, shardlm_request_cb cb)
{
    sched_seq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    q->cb = cb;
    q->all_rows = cb.on_logits != NULL;
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
        sched_seq_free(q);
        return NULL;
    }
    memcpy(q->tokens, d->prompt, (size_t)d->n_prompt * sizeof(int32_t));
    q->n_tokens = q->n_prompt = d->n_prompt;
    shardlm_detok_init(&q->detok);
    q->detok.prev = d->prompt[d->n_prompt - 1]; /* so a leading space after BOS alone is dropped */
    q->grammar = shardlm_grammar_ref(d->grammar);
    q->lead = q->detok.prev == shardlm_tokenizer_bos(s->tok);
    if (d->n_triggers > 0 && shardlm_trigger_scan_init(&q->trig, d->triggers, d->n_triggers)) {
        sched_seq_free(q);
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

/* Samples the next token of a sequence whose logits came back. */
int sched_seq_sample(shardlm_sched *s, sched_seq *q, float *row, int32_t *out)
{
    shardlm_logprobs lp;
    if (q->grammar && !q->trig.n && seq_grammar_begin(s, q)) {
        sched_seq_end(s, q, SHARDLM_FINISH_ERROR);
        return 1;
    }
    int32_t tok = shardlm_seq_sample(q->smp, &q->params, row, s->vocab, q->params.logprobs ? &lp : NULL);
    if (tok < 0 || seq_append(q, tok) || (q->gst && shardlm_grammar_accept_token(q->gst, q->gvocab, tok))) {
        sched_seq_end(s, q, SHARDLM_FINISH_ERROR);
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
        sched_seq_end(s, q, SHARDLM_FINISH_ERROR);
        return 1;
    }
    /* a grammar that can only end now ends here, without a step for the EOS;
     * the context is full when the newest token has no position left */
    int done = q->gst && !eos && shardlm_grammar_must_end(q->gst);
    shardlm_finish_reason f =
        shardlm_finish_decide(eos, stopped || done, q->n_gen, q->max_tokens, q->n_tokens > s->n_ctx);
    if (f == SHARDLM_FINISH_NONE) return 0;
    if (!stopped) seq_flush(q);
    sched_seq_end(s, q, f == SHARDLM_FINISH_STOP ? SHARDLM_FINISH_STOP : SHARDLM_FINISH_LENGTH);
    return 1;
}

