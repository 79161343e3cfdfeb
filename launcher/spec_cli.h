/* spec_cli.h - the speculative-decoding flags (--spec, --spec-tokens,
 * --spec-ngram, --draft-model), shared by serve and bench: their parsing,
 * help text and the draft model's opening on rank 0. Internal to the
 * launcher. */
#ifndef SHARDLM_SPEC_CLI_H
#define SHARDLM_SPEC_CLI_H

#include <getopt.h>

#include "node.h"
#include "spec.h"

typedef struct {
    shardlm_spec_opts spec; /* .draft is set by shardlm_spec_cli_open */
    const char *draft_path;
} shardlm_spec_cli;

/* getopt_long codes of the four flags (outside any short option's range). */
enum { SHARDLM_SPEC_OPT_MODE = 0x5300, SHARDLM_SPEC_OPT_TOKENS, SHARDLM_SPEC_OPT_NGRAM, SHARDLM_SPEC_OPT_DRAFT };
#define SHARDLM_SPEC_CLI_OPTIONS                                                                                  \
    {"spec", required_argument, 0, SHARDLM_SPEC_OPT_MODE}, {"spec-tokens", required_argument, 0, SHARDLM_SPEC_OPT_TOKENS}, \
        {"spec-ngram", required_argument, 0, SHARDLM_SPEC_OPT_NGRAM},                                               \
        {"draft-model", required_argument, 0, SHARDLM_SPEC_OPT_DRAFT}
#define SHARDLM_SPEC_CLI_USAGE                                                                                      \
    "      --spec off|ngram|draft      speculative decoding (default off): ngram drafts by prompt lookup,\n"          \
    "                                  draft with --draft-model; output is unchanged either way\n"                  \
    "      --spec-tokens K             draft tokens verified per step (1..16, default 4)\n"                         \
    "      --spec-ngram N              longest suffix prompt lookup matches (1..8, default 3)\n"                    \
    "      --draft-model FILE          a smaller model with the same vocabulary, run on rank 0\n"                   \
    "                                  (implies --spec draft)\n"

/* Off, 4 tokens, n-gram 3. */
void shardlm_spec_cli_init(shardlm_spec_cli *c);
/* One option: 1 when it was one of the four and its value is good, 0 when
 * code is not one of them, -1 for a bad value (printed as "shardlm WHO:
 * invalid value ..." unless who is NULL). */
int shardlm_spec_cli_opt(shardlm_spec_cli *c, int code, const char *arg, const char *who);
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
