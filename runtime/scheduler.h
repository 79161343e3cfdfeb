/* scheduler.h - rank 0's request scheduler: continuous batching over the
 * lockstep engine. HTTP threads submit and cancel requests; one engine
 * thread runs shardlm_sched_run, which packs each step (the decode tokens of
 * every running sequence plus chunked prefill, first come first served),
 * samples, detokenizes, applies stop strings and reports through the
 * request's callbacks. Internal header of the runtime module.
 *
 * Threading: submit, cancel and stats may be called from any thread. The
 * callbacks run on the engine thread and must not block for long. */
#ifndef SHARDLM_SCHEDULER_H
#define SHARDLM_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "grammar.h"
#include "sampling.h"
#include "shardlm_runtime.h"
#include "spec.h"
#include "shardlm_text.h"

typedef struct shardlm_sched shardlm_sched;

typedef struct {
    int max_num_seqs;           /* --max-seqs: running sequences per step */
    int max_num_batched_tokens; /* --max-num-batched-tokens: tokens per step */
    int max_queue;              /* --max-queue: waiting requests before 429 */
    int block_size;             /* --block-size as the engine was made with (0: take the engine's);
                                   shardlm_sched_new fails when they differ */
    double kv_cache_mb;         /* --kv-cache-mb: the pool, per rank */
    int prefix_caching;         /* 0 with --no-prefix-cache */
    shardlm_spec_opts spec;     /* speculative decoding (--spec ...); zeroed: off */
} shardlm_sched_opts;

/* A request ends with one of shardlm_finish_reason's (runtime/sampling.h):
 * STOP, LENGTH, CANCELLED or ERROR (the text in shardlm_err_get). */

typedef struct {
    /* Text that is safe to send (stop strings never appear), with the token
     * that completed it and, when asked for, its logprobs. text may be
     * empty (a byte token that does not yet complete a character). */
    void (*on_token)(void *ctx, const char *text, size_t len, int32_t token, const shardlm_logprobs *lp);
    /* Exactly once per accepted request, last. */
    void (*on_end)(void *ctx, shardlm_finish_reason why, int prompt_tokens, int completion_tokens);
    void *ctx;
    /* Optional: once, when the request is first admitted, the number of
     * its prompt tokens the prefix cache served (usage's cached_tokens). */
    void (*on_admit)(void *ctx, int cached_tokens);
    /* Optional: the logits row of every position, prompt and output, in
     * order (`generate --logits-out`): P prompt tokens and N generated give
     * P + N - 1 rows, the last token never being fed back. Such a request
     * prefills one token per step. */
    void (*on_logits)(void *ctx, const float *row, int n_vocab);
} shardlm_request_cb;

typedef struct {
    const int32_t *prompt; /* copied; starts with BOS when the model wants one */
    int n_prompt;
    shardlm_sampling_params params; /* copied, logit_bias included */
    int max_tokens;                 /* <= 0: until EOS or the context is full */
    const char *const *stop;        /* copied; 0..4 strings */
    int n_stop;
    uint32_t choice;                /* index among a request's n choices (seeds differ) */
    /* NULL, or the grammar the output must follow (constrained decoding):
     * the scheduler takes its own reference and keeps this sequence's state
     * in it; the request ends with SHARDLM_FINISH_STOP as soon as the grammar
     * can only end. */
    shardlm_grammar *grammar;
    /* n_triggers > 0 makes the grammar lazy: it applies only from the
     * first trigger in the output on, and the trigger's text is its start
     * (tool calls with tool_choice "auto"). Copied. */
    const shardlm_grammar_trigger *triggers;
    int n_triggers;
    /* Control tokens whose piece is output as text (tool-call markers such
     * as [TOOL_CALLS]); the grammar spells them as that text. Copied; at
     * most SHARDLM_SCHED_MAX_AS_TEXT. */
    const int32_t *as_text;
    int n_as_text;
    int min_tokens;               /* end tokens are masked until this many tokens were generated */
    const int32_t *stop_token_ids; /* copied; ending on one is "stop", its text is not output */
    int n_stop_token_ids;         /* 0..SHARDLM_SCHED_MAX_STOP_IDS */
    int ignore_eos;               /* EOS (and BOS) are ordinary tokens: only max_tokens, the context,
                                     stop strings and stop_token_ids end the request */
} shardlm_request_desc;

#define SHARDLM_SCHED_MAX_AS_TEXT 8
#define SHARDLM_SCHED_MAX_STOP_IDS 64
#define SHARDLM_SCHED_MAX_EOG 32 /* end-of-generation tokens min_tokens holds back */

typedef struct {
    int running, waiting;
    double kv_usage;                      /* 0..1, blocks held by live sequences */
    int kv_blocks, block_size;
    uint64_t prefix_queries, prefix_hits; /* tokens */
    uint64_t prompt_tokens, generation_tokens;
    uint64_t preemptions;
    double allreduce_seconds;             /* total time in all-reduce, all steps */
    uint64_t steps;
    /* speculative decoding, vLLM's spec_decode counters: verify steps of one
     * sequence that had drafts, draft tokens proposed, draft tokens accepted */
    uint64_t spec_drafts, spec_draft_tokens, spec_accepted;
    int healthy;                          /* 0 while the engine is down (failed, or re-forming) */
    int healing;                          /* 1 while a heal callback re-forms the cluster */
    uint64_t heals;                       /* times the cluster re-formed */
    uint64_t failed_in_flight;            /* requests ended by a lost rank */
    char reason[384];                     /* while !healthy: why (names the lost rank) */
    char last_error[384];                 /* the last engine failure, kept after a heal */
} shardlm_sched_stats;

/* Called on the engine thread after a step (or a heartbeat) failed: the
 * requests in flight have ended with SHARDLM_FINISH_ERROR, queued ones wait.
 * It brings the cluster back (blocking) and returns SHARDLM_OK to resume,
 * or a status to give up (every request still held then ends with
 * SHARDLM_FINISH_ERROR). why is the failure, naming the lost rank. */
typedef int (*shardlm_sched_heal_fn)(void *ctx, shardlm_sched *s, const char *why);

/* The scheduler borrows engine and tokenizer. The KV pool (its blocks and
 * their size) is the engine's, the one source of truth; kv_cache_mb only
 * says how it was sized. */
int shardlm_sched_new(shardlm_engine *e, const shardlm_tokenizer *tok, const shardlm_sched_opts *o,
                      shardlm_sched **out);
void shardlm_sched_free(shardlm_sched *s);

/* SHARDLM_OK with *id set; SHARDLM_EINPUT when the prompt does not fit the
 * context (the error text names both lengths); SHARDLM_EBUSY when
 * max_queue requests already wait; SHARDLM_ERUNTIME once the engine has
 * failed. */
int shardlm_sched_submit(shardlm_sched *s, const shardlm_request_desc *d, shardlm_request_cb cb, uint64_t *id);
/* Cancels a waiting or running request and frees its KV blocks; its on_end
 * runs with SHARDLM_FINISH_CANCELLED (at once, or at the end of the current
 * step). Unknown or finished ids are ignored. */
void shardlm_sched_cancel(shardlm_sched *s, uint64_t id);
void shardlm_sched_stats_get(shardlm_sched *s, shardlm_sched_stats *out);
int shardlm_sched_n_ctx(const shardlm_sched *s);

/* The engine loop: runs until shardlm_sched_stop. Returns SHARDLM_OK after
 * a stop, or the engine's status when a step failed (every request then
 * ends with SHARDLM_FINISH_ERROR). */
int shardlm_sched_run(shardlm_sched *s);
void shardlm_sched_stop(shardlm_sched *s);
/* 1 once shardlm_sched_stop was called (a heal callback polls it). */
int shardlm_sched_stopping(shardlm_sched *s);
/* With a heal callback, a lost rank no longer ends the engine loop: see
 * shardlm_sched_heal_fn. Set before shardlm_sched_run. */
void shardlm_sched_set_heal(shardlm_sched *s, shardlm_sched_heal_fn fn, void *ctx);
/* How long the engine thread waits while idle before a heartbeat (0: the
 * default, 2000 ms). Set before shardlm_sched_run. */
void shardlm_sched_set_heartbeat(shardlm_sched *s, int interval_ms);

#endif
