/* scheduler_api.c - the scheduler's set-up and teardown, and the calls
 * other threads make: submit, cancel, stats, stop (see scheduler.h). */
#include <stdlib.h>
#include <string.h>

#include "scheduler_internal.h"
#include "shardlm_common.h"

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
    s->hb_ms = 2000;
    s->st.healthy = 1;
    s->piece_cap = shardlm_detok_max(tok);
    s->piece = malloc(s->piece_cap);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int bs = shardlm_engine_block_size(e), rc = SHARDLM_OK;
    if (o->block_size > 0 && o->block_size != bs) {
        shardlm_err_set("--block-size %d, but the engine's KV pool has blocks of %d positions", o->block_size, bs);
        rc = SHARDLM_EINPUT;
    }
    if (!rc) rc = shardlm_kv_new(shardlm_engine_kv_blocks(e), bs, o->prefix_caching, &s->kv);
    if (!rc) rc = sched_alloc_step(s);
    if (!rc && !s->piece) rc = SHARDLM_ENOMEM;
    if (rc) {
        shardlm_sched_free(s);
        return rc;
    }
    s->st.kv_blocks = shardlm_kv_n_blocks(s->kv);
    s->st.block_size = bs;
    *out = s;
    return SHARDLM_OK;
}

void shardlm_sched_free(shardlm_sched *s)
{
    if (!s) return;
    for (int i = 0; s->running && i < s->n_running; i++) sched_seq_free(s->running[i]);
    sched_seq *q;
    while ((q = sched_wait_pop(s))) sched_seq_free(q);
    while ((q = s->inbox)) {
        s->inbox = q->next;
        sched_seq_free(q);
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
    sched_seq *q = sched_seq_new(s, d, cb);
    if (!q) {
        shardlm_err_set("out of memory, or a stop string is invalid");
        return SHARDLM_EINPUT;
    }
    pthread_mutex_lock(&s->mu);
    if ((!s->st.healthy && !s->heal) || s->stopping) rc = SHARDLM_ERUNTIME; /* while healing, requests queue */
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
        sched_seq_free(q);
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

int shardlm_sched_stopping(shardlm_sched *s)
{
    pthread_mutex_lock(&s->mu);
    int v = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return v;
}

void shardlm_sched_set_heal(shardlm_sched *s, shardlm_sched_heal_fn fn, void *ctx)
{
    s->heal = fn;
    s->heal_ctx = ctx;
}

void shardlm_sched_set_heartbeat(shardlm_sched *s, int interval_ms) { s->hb_ms = interval_ms > 0 ? interval_ms : 2000; }

void shardlm_sched_stop(shardlm_sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}
