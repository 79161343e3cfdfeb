/* sampling.h - rank 0's OpenAI-style sampler for served requests: request
 * parameters and their validation, a per-sequence sampler (own RNG, sparse
 * token counts for the penalties), logprobs, stop-string matching across
 * token boundaries and the finish reason.
 *
 * Order of operations in shardlm_seq_sample, on the logits of one row:
 *   1. logit_bias: logit += bias (each bias clamped to [-100, 100]);
 *   2. repetition_penalty over tokens seen in prompt + output (a positive
 *      logit is divided by it, a negative one multiplied);
 *   3. presence/frequency penalties over the generated tokens:
 *      logit -= presence * [count > 0] + frequency * count;
 *      -> logits now hold the "processed" logits (left in the caller's array);
 *   3b. the constraint hook, when set (a grammar's token mask): tokens it
 *      forbids get -inf, so logprobs and every cut below see the
 *      constrained distribution (the hook always leaves some token);
 *   4. logprobs, when asked: log-softmax of the processed logits at
 *      temperature 1, before any truncation (the model's log probability of
 *      the token after bias and penalties);
 *   5. temperature 0 (or top_k 1): argmax, lowest id on ties; otherwise
 *      softmax at the temperature -> top_k -> top_p (over the distribution
 *      renormalised after top_k; the smallest set whose mass reaches top_p)
 *      -> min_p (drops tokens below min_p times the most likely one) ->
 *      one draw from what is left.
 * Candidates are ordered by logit, then by lower id, so every cut is
 * deterministic. Nothing sorts the vocabulary: top_k keeps a heap of k;
 * top_p alone tries a heap of 64, then selects the nucleus by mass
 * (quickselect, O(n) expected) when the head is not enough. The RNG advances exactly once per call, greedy included,
 * so the n-th token of a seeded request depends only on the seed, the choice
 * index and the logits, never on other sequences in the batch.
 *
 * Not thread-safe per object; separate objects may live on separate threads. */
#ifndef SHARDLM_SAMPLING_H
#define SHARDLM_SAMPLING_H

#include <stddef.h>
#include <stdint.h>

#define SHARDLM_TOP_LOGPROBS_MAX 20
#define SHARDLM_LOGIT_BIAS_MAX 1024 /* entries per request */
#define SHARDLM_STOP_MAX 4          /* OpenAI's limit on stop strings */
#define SHARDLM_STOP_MAX_LEN 256    /* bytes per stop string */

typedef struct {
    int32_t token;
    float bias; /* clamped to [-100, 100] when applied, as OpenAI does */
} shardlm_logit_bias;

typedef struct {
    float temperature;        /* [0, 2] as OpenAI; 0: greedy */
    int32_t top_k;            /* >= 0; 0: off */
    float top_p;              /* (0, 1]; 1: off */
    float min_p;              /* [0, 1]; 0: off */
    float repetition_penalty; /* > 0; 1: off */
    float presence_penalty;   /* [-2, 2] */
    float frequency_penalty;  /* [-2, 2] */
    const shardlm_logit_bias *logit_bias; /* borrowed; distinct token ids */
    int n_logit_bias;                     /* 0 .. SHARDLM_LOGIT_BIAS_MAX */
    uint64_t seed;
    int has_seed;     /* 0: seeded from the clock and a process counter */
    int logprobs;     /* fill shardlm_logprobs for each token */
    int top_logprobs; /* 0 .. 20 alternatives; needs logprobs */
} shardlm_sampling_params;

/* Defaults: temperature 1, every filter and penalty off, no seed. */
shardlm_sampling_params shardlm_sampling_params_default(void);

/* SHARDLM_OK, or SHARDLM_EINPUT with one line in why (also the thread's
 * error text) that starts with the OpenAI name of the offending parameter
 * followed by a space, e.g. "top_p must be in (0, 1], got 0". Rejects NaN
 * and infinities everywhere. */
int shardlm_sampling_params_check(const shardlm_sampling_params *p, int n_vocab, char *why, size_t cap);

typedef struct {
    int32_t token;
    float logprob;
} shardlm_token_logprob;

typedef struct {
    int32_t token;  /* the chosen token */
    float logprob;  /* its log probability */
    int n_top;      /* = top_logprobs (fewer when fewer tokens are possible) */
    shardlm_token_logprob top[SHARDLM_TOP_LOGPROBS_MAX]; /* descending */
} shardlm_logprobs;

typedef struct shardlm_seq_sampler shardlm_seq_sampler;

/* A sampler for one sequence (one choice of a request). choice is the index
 * among the request's n choices: a seeded request gets a distinct stream
 * for each choice. The prompt is remembered (as a set) only when
 * repetition_penalty is on. p must stay the same for the sampler's life. */
int shardlm_seq_sampler_new(const shardlm_sampling_params *p, const int32_t *prompt, int n_prompt, uint32_t choice,
                            shardlm_seq_sampler **out);
void shardlm_seq_sampler_free(shardlm_seq_sampler *s);

/* A hook run on the processed logits before logprobs and sampling
 * (constrained decoding): it sets forbidden tokens to -INFINITY and
 * returns SHARDLM_OK, or an error that makes shardlm_seq_sample fail. */
typedef int (*shardlm_logits_hook)(void *ctx, float *logits, int n_vocab);
void shardlm_seq_sampler_set_hook(shardlm_seq_sampler *s, shardlm_logits_hook fn, void *ctx);

/* Sets logits[ids[i]] to -INFINITY (ids outside [0, n_vocab) are skipped).
 * unless_alone: not when that would leave no token possible. */
void shardlm_logits_ban(float *logits, int n_vocab, const int32_t *ids, int n, int unless_alone);

/* Records a token as generated without sampling it (it then counts for
 * the penalties). shardlm_seq_sample records its own picks. */
int shardlm_seq_sampler_accept(shardlm_seq_sampler *s, int32_t token);

/* Tokens generated so far (accepted or sampled). */
int shardlm_seq_sampler_n_generated(const shardlm_seq_sampler *s);

/* Steps 1-3 only: overwrites logits with the processed logits. */
void shardlm_seq_process_logits(const shardlm_seq_sampler *s, const shardlm_sampling_params *p, float *logits,
                                int n_vocab);

/* Picks the next token (see the order above), records it, and fills out
 * when p->logprobs is set and out is not NULL. logits is overwritten with
 * the processed logits. Returns the token, or -1 when out of memory (the
 * thread's error text says so; the RNG has still advanced). */
int32_t shardlm_seq_sample(shardlm_seq_sampler *s, const shardlm_sampling_params *p, float *logits, int n_vocab,
                           shardlm_logprobs *out);

/* ---- stop strings ---- */

/* Holds back text that could be the start of a stop string, and any
 * incomplete UTF-8 character at the end, until it can be emitted safely.
 * A matched stop string and everything after it are never emitted. */
typedef struct {
    char stop[SHARDLM_STOP_MAX][SHARDLM_STOP_MAX_LEN];
    size_t stop_len[SHARDLM_STOP_MAX];
    int n_stop;
    int matched;  /* index of the stop string that matched, -1 while none */
    char *buf;    /* pending text: [0, n_out) handed out last call, then held */
    size_t n_buf, n_out, cap;
} shardlm_stopper;

/* Copies the n stop strings (0..4, each 1..256 bytes, else SHARDLM_EINPUT
 * naming "stop"). */
int shardlm_stopper_init(shardlm_stopper *s, const char *const *stops, int n);
void shardlm_stopper_free(shardlm_stopper *s);

/* Feeds the next piece of decoded text. Returns the number of bytes that
 * are safe to emit now, at *text (valid until the next call); *stopped is
 * set once a stop string matched (the returned bytes are then the last
 * ones to emit; later feeds return 0). Returns (size_t)-1 when out of
 * memory. */
size_t shardlm_stopper_feed(shardlm_stopper *s, const char *piece, size_t n, const char **text, int *stopped);

/* At the end of the sequence: the held-back text (none after a stop). */
size_t shardlm_stopper_flush(shardlm_stopper *s, const char **text);

/* ---- grammar triggers ---- */

/* A lazy grammar (tool calls with tool_choice "auto") applies only once
 * the output contains one of its trigger strings; the trigger text and all
 * that follows it are then the grammar's. at_start: the trigger counts only
 * where the output begins (after any whitespace). */
typedef struct {
    const char *text; /* 1..64 bytes */
    int at_start;
} shardlm_grammar_trigger;

#define SHARDLM_TRIGGER_MAX 4
#define SHARDLM_TRIGGER_MAX_LEN 64

/* Watches the output text for the first trigger, across token boundaries. */
typedef struct {
    char text[SHARDLM_TRIGGER_MAX][SHARDLM_TRIGGER_MAX_LEN + 1];
    size_t len[SHARDLM_TRIGGER_MAX];
    int at_start[SHARDLM_TRIGGER_MAX];
    int n, fired;
    int lead_done; /* the output's first non-whitespace byte has been judged */
    char *buf;     /* the output since the earliest place a trigger may still start */
    size_t n_buf, cap;
} shardlm_trigger_scan;

/* Copies the n triggers (1..4, each 1..64 bytes, else SHARDLM_EINPUT). */
int shardlm_trigger_scan_init(shardlm_trigger_scan *t, const shardlm_grammar_trigger *tr, int n);
void shardlm_trigger_scan_free(shardlm_trigger_scan *t);
/* Feeds the next piece of output text. Returns 1 when a trigger matched
 * (first by position): *from and *len are then the output from the start of
 * that trigger to the end of the text fed, which the grammar must take;
 * later feeds return 0. Returns 0 while none has matched, -1 when out of
 * memory. */
int shardlm_trigger_scan_feed(shardlm_trigger_scan *t, const char *piece, size_t n, const char **from, size_t *len);

/* ---- finish reason ---- */

/* How a request ended: the one enum of `serve` (finish_reason, metrics)
 * and `generate`, both run by the scheduler (runtime/scheduler.h). */
typedef enum {
    SHARDLM_FINISH_NONE = 0,   /* still running */
    SHARDLM_FINISH_STOP,       /* an end token, a stop string or a complete grammar: "stop" */
    SHARDLM_FINISH_LENGTH,     /* max_tokens reached or the context is full: "length" */
    SHARDLM_FINISH_CANCELLED,  /* shardlm_sched_cancel, e.g. a client went away */
    SHARDLM_FINISH_ERROR,      /* the engine failed (a rank was lost) */
} shardlm_finish_reason;

/* After a token: stop wins over length when both happen on the same token.
 * max_tokens <= 0 means no limit but the context. */
shardlm_finish_reason shardlm_finish_decide(int is_eos, int stop_matched, int n_generated, int max_tokens,
                                            int ctx_full);
/* "stop", "length", or NULL for the others (JSON null). */
const char *shardlm_finish_reason_str(shardlm_finish_reason r);

#endif
