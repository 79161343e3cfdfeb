/* spec.h - speculative decoding on rank 0: draft tokens proposed cheaply
 * (prompt lookup over the sequence's own tokens, or a small draft model on
 * rank 0) that the scheduler then verifies in one step of k+1 positions on
 * the target model. Internal header of the runtime module.
 *
 * Verification samples each verified row with the sequence's own sampler and
 * keeps a draft token only when the sample equals it. Drafts here are
 * deterministic (a lookup, or the draft model's argmax), so this is the
 * standard rejection rule for a draft distribution that puts all its mass on
 * one token (accept with probability p(d), else draw from p without d), and
 * the output distribution is the target's at any temperature. The sampler's
 * RNG advances once per output token either way, so a seeded request gives
 * the same text with speculation on or off. */
#ifndef SHARDLM_SPEC_H
#define SHARDLM_SPEC_H

#include <stdint.h>

#include "shardlm_model.h"
#include "shardlm_text.h"

typedef enum { SHARDLM_SPEC_OFF = 0, SHARDLM_SPEC_NGRAM = 1, SHARDLM_SPEC_DRAFT = 2 } shardlm_spec_mode;

#define SHARDLM_SPEC_MAX_TOKENS 16 /* --spec-tokens upper bound */
#define SHARDLM_SPEC_MAX_NGRAM 8   /* --spec-ngram upper bound */

typedef struct shardlm_spec_draft shardlm_spec_draft;

typedef struct {
    int mode;                  /* shardlm_spec_mode */
    int n_tokens;              /* --spec-tokens K: draft tokens per step, 1..16 */
    int ngram;                 /* --spec-ngram N: longest suffix looked up, 1..8 */
    shardlm_spec_draft *draft; /* SHARDLM_SPEC_DRAFT: the draft model (borrowed) */
} shardlm_spec_opts;

/* "off", "ngram" or "draft" -> the mode; -1 for anything else. */
int shardlm_spec_mode_parse(const char *name);
const char *shardlm_spec_mode_name(int mode);
/* SHARDLM_OK, or SHARDLM_EINPUT naming the flag out of range. */
int shardlm_spec_opts_check(const shardlm_spec_opts *o);

/* Prompt lookup: finds the latest earlier occurrence of the last n tokens
 * of toks[0..n_toks) (n from max_ngram down to 1, the longest suffix that
 * occurs winning) and copies up to k tokens that followed it into out,
 * preferring an occurrence followed by a full k. Returns how many (0: no
 * match). */
int shardlm_spec_ngram_propose(const int32_t *toks, int n_toks, int max_ngram, int k, int32_t *out);

/* One sequence's drafting state (a draft model's KV for it); made by the
 * first shardlm_spec_propose that needs one. */
typedef struct shardlm_spec_seq shardlm_spec_seq;
void shardlm_spec_seq_free(shardlm_spec_seq *ss);

/* Up to k draft tokens to follow toks[0..n_toks) (the sequence so far,
 * its last token not yet computed by the target). Returns how many, or a
 * negative status. */
int shardlm_spec_propose(const shardlm_spec_opts *o, shardlm_spec_seq **ss, const int32_t *toks, int n_toks, int k,
                         int32_t *out);

/* ---- the draft model (spec_draft.c) ---- */
typedef struct {
    int n_ctx;      /* positions a sequence may reach (the target's context) */
    int n_blocks;   /* draft KV pool, shared by every sequence */
    int block_size;
    int max_batch;  /* tokens per draft step (catch-up prefill is chunked) */
    int n_threads;
} shardlm_spec_draft_opts;

/* Opens a draft model for rank 0. Its vocabulary must be the target's
 * (same size, same piece for every id, same BOS and EOS): otherwise
 * SHARDLM_EINPUT naming both files and the first token that differs. */
int shardlm_spec_draft_open(const char *path, const shardlm_tokenizer *target_tok, const char *target_path,
                            const shardlm_spec_draft_opts *o, shardlm_spec_draft **out);
void shardlm_spec_draft_free(shardlm_spec_draft *d);
const shardlm_model *shardlm_spec_draft_model(const shardlm_spec_draft *d);
/* The draft's greedy continuation of toks (k tokens), computing only the
 * tokens whose draft KV is not already stored. 0 when the draft pool has
 * no room for this sequence. */
int shardlm_spec_draft_propose(shardlm_spec_draft *d, shardlm_spec_seq **ss, const int32_t *toks, int n_toks, int k,
                               int32_t *out);

#endif
