/* bench_spec.h - bench's speculative-decoding pass (bench_spec.c). */
#ifndef SHARDLM_BENCH_SPEC_H
#define SHARDLM_BENCH_SPEC_H

#include <stddef.h>

#include "node.h"
#include "spec.h"

/* Rank 0: reps alternating rounds of one greedy request of n_tok tokens
 * with speculation off and with spec, on a repetitive prompt and on a
 * story; prints a table (json 0) or writes a JSON array's items into
 * json_out. SHARDLM_ERUNTIME when the texts differ. */
int shardlm_bench_spec(shardlm_node *n, const shardlm_spec_opts *spec, const char *label, int n_tok, int reps,
                       int json, char *json_out, size_t json_cap);

#endif
