/* scheduler_internal.h - the scheduler's state, shared by its three files:
 * scheduler.c (the engine loop: intake, admission, packing, preemption),
 * scheduler_seq.c (one sequence: sampling, text, stop strings, grammar) and
 * scheduler_api.c (set-up and the calls other threads make). Private to
 * runtime/. */
#ifndef SHARDLM_SCHEDULER_INTERNAL_H
#define SHARDLM_SCHEDULER_INTERNAL_H

#include <pthread.h>

#include "kvcache.h"
#include "scheduler.h"

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
    int all_rows;                 /* cb.on_logits: every position's row, one prefill token per step */
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
    shardlm_sched_heal_fn heal;    /* NULL: a lost rank ends the loop */
    void *heal_ctx;
    int hb_ms;                     /* idle wait before a heartbeat */
};

/* scheduler_seq.c */
sched_seq *sched_seq_new(const shardlm_sched *s, const shardlm_request_desc *d, shardlm_request_cb cb);
void sched_seq_free(sched_seq *q);
/* Samples the next token of a sequence whose logits came back; ends it
 * (sched_seq_end) when it is done and returns 1 (q is freed), else 0 with
 * the token in *out. */
int sched_seq_sample(shardlm_sched *s, sched_seq *q, float *row, int32_t *out);

/* spec.c: speculative decoding's scheduler side */
/* Draft tokens into q->draft for a decoding sequence, within spare and what
 * the request and the context can still take; returns how many. */
int sched_spec_draft(shardlm_sched *s, sched_seq *q, int spare);
/* Samples a decoding sequence's 1 + n_draft rows, keeping drafts while the
 * samples equal them. */
void sched_spec_verify(shardlm_sched *s, sched_seq *q, float *rows);

/* scheduler.c */
/* Ends a sequence wherever it is: frees its KV and reports, last. */
void sched_seq_end(shardlm_sched *s, sched_seq *q, shardlm_finish_reason why);
sched_seq *sched_wait_pop(shardlm_sched *s);

#endif
