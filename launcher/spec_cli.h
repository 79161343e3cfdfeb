/* spec_cli.h - the speculative-decoding flags (--spec, --spec-tokens,
 * --spec-ngram, --draft-model), shared by generate, serve and bench: their parsing,
 * help text and the draft model's opening on rank 0. Internal to the
 * launcher. */
#ifndef SHARDLM_SPEC_CLI_H
#define SHARDLM_SPEC_CLI_H

#include "flags.h"
#include "node.h"
#include "spec.h"

typedef struct {
    shardlm_spec_opts spec; /* .draft is set by shardlm_spec_cli_open */
    const char *draft_path;
} shardlm_spec_cli;

/* Off, 4 tokens, n-gram 3. */
void shardlm_spec_cli_init(shardlm_spec_cli *c);
/* One parsed flag of the table (its range already checked): 1 when it was
 * one of the four, 0 when it is not. */
int shardlm_spec_cli_apply(shardlm_spec_cli *c, const shardlm_flag_value *v);
/* After parsing: SHARDLM_OK, or SHARDLM_EINPUT with the reason (--spec
 * draft without a file, a value out of range). */
int shardlm_spec_cli_check(shardlm_spec_cli *c);
/* Rank 0, after the node is up: opens the draft model (its vocabulary
 * checked against the node's) sized for the node's engine. */
int shardlm_spec_cli_open(shardlm_spec_cli *c, const shardlm_node *n, const char *model_path);
void shardlm_spec_cli_close(shardlm_spec_cli *c);
/* One line for start-up logs: "off", "ngram: 4 tokens, suffixes up to 3", ... */
void shardlm_spec_cli_describe(const shardlm_spec_cli *c, char *buf, size_t cap);

#endif
