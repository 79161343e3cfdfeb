/* gen_spec.h - `generate --spec ...`: the one request runs through the
 * scheduler (gen_spec.c), which does the speculation, instead of generate's
 * own decode loop. Internal to the launcher. */
#ifndef SHARDLM_GEN_SPEC_H
#define SHARDLM_GEN_SPEC_H

#include <stdio.h>

#include "grammar.h"
#include "node.h"
#include "spec.h"

typedef struct {
    const int32_t *prompt;
    int n_prompt, n_new, ignore_eos;
    float temp, top_p;
    uint64_t seed;
    shardlm_grammar *grammar; /* borrowed; NULL: none */
    FILE *ids_file;           /* --ids-out, or NULL */
} shardlm_gen_spec_req;

typedef struct {
    int n_gen;
    double decode_s; /* from the first token to the last */
    double prefill_s; /* from submission to the first token */
    uint64_t drafts, draft_tokens, accepted;
} shardlm_gen_spec_result;

/* Rank 0: generates r's tokens with speculation spec, writing the text to
 * stdout as it comes. Returns a status (the engine's, after a failed step). */
int shardlm_gen_spec_run(shardlm_node *n, const shardlm_spec_opts *spec, const shardlm_gen_spec_req *r,
                         shardlm_gen_spec_result *out);

#endif
