/* flags.h - the one table of command-line flags of generate, serve, worker,
 * bench and launch: each flag's name, short option, argument, checked range,
 * default, help text and commands. The same table parses argv, prints each
 * command's --help and writes docs/CLI.md's flag tables
 * (`shardlm help --markdown`). Internal to the launcher. */
#ifndef SHARDLM_FLAGS_H
#define SHARDLM_FLAGS_H

#include <stdint.h>
#include <stdio.h>

/* The commands that take flags from the table (bits of shardlm_flag.cmds). */
enum {
    SHARDLM_CMD_GENERATE = 1,
    SHARDLM_CMD_SERVE = 2,
    SHARDLM_CMD_WORKER = 4,
    SHARDLM_CMD_BENCH = 8,
    SHARDLM_CMD_LAUNCH = 16,
};

typedef enum {
    SHARDLM_FLAG_NONE,   /* a switch: no value */
    SHARDLM_FLAG_STR,    /* any text */
    SHARDLM_FLAG_INT,    /* an integer in lo..hi */
    SHARDLM_FLAG_POW2,   /* a power of two in lo..hi */
    SHARDLM_FLAG_NUM,    /* a number in lo..hi */
    SHARDLM_FLAG_U64,    /* a non-negative 64-bit integer */
    SHARDLM_FLAG_CHOICE, /* one of the words in arg, separated by '|' */
} shardlm_flag_type;

/* Every flag's identity; a command's apply function switches on it. */
typedef enum {
    F_MODEL = 1, F_WORLD, F_CTX, F_TIMEOUT, F_CONNECT_TIMEOUT, F_THREADS, F_PIN, F_ISQ, F_KV_TYPE,
    F_COMM_DTYPE, F_COMM, F_RING_TRANSPORT, F_NUMA, F_DEVICE, F_WEIGHTS_FROM, F_WEIGHTS_CACHE,
    F_RING_CONFIG, F_IDLE_TIMEOUT, F_READY_FILE, F_REJOIN, F_CLUSTER_TOKEN_FILE,
    F_PROMPT, F_PROMPT_IDS, F_N_NEW, F_TEMP, F_TOP_P, F_SEED, F_ECHO, F_LOGITS_OUT, F_IDS_OUT,
    F_IGNORE_EOS, F_GRAMMAR, F_JSON_SCHEMA,
    F_HOST, F_PORT, F_API_KEY, F_MODEL_NAME, F_MAX_SEQS, F_MAX_BATCHED, F_MAX_QUEUE, F_BLOCK_SIZE,
    F_KV_MB, F_NO_PREFIX, F_CHAT_TEMPLATE, F_MAX_BODY_KB, F_REQUEST_TIMEOUT, F_API_KEY_FILE, F_MAX_PROMPT,
    F_MAX_CONNS, F_HTTP_TIMEOUT, F_HTTP_HEADER_TIMEOUT, F_MAX_CONNS_PER_IP, F_HEARTBEAT, F_HEARTBEAT_TIMEOUT,
    F_DRAIN_TIMEOUT, F_NO_HEAL,
    F_N_PROMPT, F_N_GEN, F_REPS, F_BATCH, F_JSON,
    F_LAUNCH_WORLD, F_LAUNCH_TIMEOUT,
    F_SPEC, F_SPEC_TOKENS, F_SPEC_NGRAM, F_DRAFT_MODEL,
} shardlm_flag_id;

typedef struct {
    shardlm_flag_id id;
    const char *name;  /* the long option, without "--" */
    char shrt;         /* the short option, or 0 */
    shardlm_flag_type type;
    const char *arg;   /* the value's name in --help (N, PATH), or CHOICE's words "a|b|c" */
    double lo, hi;     /* INT, POW2 and NUM: the accepted range */
    const char *dflt;  /* the default as --help shows it; NULL: none shown */
    const char *help;
    unsigned cmds;     /* SHARDLM_CMD_* */
} shardlm_flag;

/* One parsed flag, handed to the command's apply function. */
typedef struct {
    const shardlm_flag *flag;
    const char *str; /* the value as given (NULL for a switch) */
    long long i;     /* INT, POW2, U64 (as uint64_t bits), CHOICE: the word's index */
    double d;        /* NUM */
} shardlm_flag_value;

/* Takes one flag; returns 0, or -1 after printing one line on stderr. */
typedef int (*shardlm_flag_apply)(void *ctx, const shardlm_flag_value *v);

/* Parses argv[1..] for command cmd ("generate", ...): each flag is looked
 * up, its value checked, and apply called. Returns 0; 1 after printing
 * --help on stdout; or -1 after printing one line naming the bad flag or
 * value (the caller exits 2). With rest non-NULL, "--" ends the flags and
 * *rest is the index after it (argc when absent); otherwise any argument
 * that is not a flag is an error. */
int shardlm_flags_parse(const char *cmd, int argc, char **argv, shardlm_flag_apply apply, void *ctx, int *rest);

/* The command's --help text, from the table. 0, or -1 for an unknown cmd. */
int shardlm_flags_help(const char *cmd, FILE *f);
/* docs/CLI.md's generated part: each command's --help and flag table. */
void shardlm_flags_markdown(FILE *f);

#endif
