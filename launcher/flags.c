/* flags.c - the flag table of generate, serve, worker, bench and launch, and
 * the parser, --help and markdown written from it (see flags.h). A new flag
 * is one line of the table plus a case in each command's apply function. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"

#define G SHARDLM_CMD_GENERATE
#define S SHARDLM_CMD_SERVE
#define W SHARDLM_CMD_WORKER
#define B SHARDLM_CMD_BENCH
#define L SHARDLM_CMD_LAUNCH
#define NONE SHARDLM_FLAG_NONE
#define STR SHARDLM_FLAG_STR
#define INT SHARDLM_FLAG_INT
#define POW2 SHARDLM_FLAG_POW2
#define NUM SHARDLM_FLAG_NUM
#define U64 SHARDLM_FLAG_U64
#define CHOICE SHARDLM_FLAG_CHOICE

/* clang-format off */
static const shardlm_flag flags[] = {
    /* the node: every rank's bring-up (launcher/node.h) */
    {F_MODEL, "model", 'm', STR, "PATH", 0, 0, NULL, "GGUF model file (workers: the same file as rank 0)", G | S | W | B},
    {F_WORLD, "world-size", 0, POW2, "W", 1, 64, "1, or RING_CONFIG's", "spawn W-1 local workers on a loopback ring", G | S | B},
    {F_CTX, "ctx", 0, INT, "N", 1, 1 << 24, "the model's", "context length", G | S},
    {F_TIMEOUT, "timeout-ms", 0, INT, "MS", 1, 1 << 30, "30000", "collective and control timeout", G | S | W},
    {F_CONNECT_TIMEOUT, "connect-timeout-ms", 0, INT, "MS", 1, 1 << 30, "60000", "ring and control set-up deadline", G | S | W},
    {F_THREADS, "threads", 't', INT, "N", 1, 1024, "its share of the physical cores", "kernel threads per rank", G | S | W | B},
    {F_PIN, "pin-threads", 0, NONE, NULL, 0, 0, NULL, "pin each kernel thread to a core", G | S | W | B},
    {F_ISQ, "isq", 0, CHOICE, "q8_0|q4_0", 0, 0, NULL, "quantise F32/F16/BF16 weights while loading each shard", G | S | B},
    {F_KV_TYPE, "kv-cache-type", 0, CHOICE, "f32|f16|q8_0", 0, 0, "f32", "KV cache element type (workers learn rank 0's)", G | S | B},
    {F_COMM_DTYPE, "comm-dtype", 0, CHOICE, "f32|q8", 0, 0, "f32", "all-reduce wire format (q8: Q8_0 blocks)", G | S | B},
    {F_COMM, "comm", 0, CHOICE, "auto|ring|mpi|nccl", 0, 0, "auto", "collective backend (the same on every rank)", G | S | W | B},
    {F_RING_TRANSPORT, "ring-transport", 0, CHOICE, "auto|tcp|shm", 0, 0, "auto", "the ring's hops: auto is shared memory between ranks on one host, TCP across hosts", G | S | W | B},
    {F_NUMA, "numa", 0, NONE, NULL, 0, 0, NULL, "pin each local rank to its share of the NUMA nodes and cores", G | S | W | B},
    {F_DEVICE, "device", 0, STR, "cpu|cuda|cuda:K", 0, 0, "cpu", "where the shard runs", G | S | W | B},
    {F_WEIGHTS_FROM, "weights-from", 0, STR, "rank0", 0, 0, NULL, "workers get their shards from rank 0, not the model file", G | S | W},
    {F_WEIGHTS_CACHE, "weights-cache", 0, STR, "DIR", 0, 0, "$SHARDLM_WEIGHTS_CACHE, else ~/.cache/shardlm/weights", "where workers keep received shards", G | S | W},
    {F_CLUSTER_TOKEN_FILE, "cluster-token-file", 0, STR, "FILE", 0, 0, "$SHARDLM_CLUSTER_TOKEN(_FILE)", "the cluster token (first line of FILE) that every rank-to-rank connection proves", G | S | W | B},
    {F_RING_CONFIG, "ring-config", 0, STR, "PATH", 0, 0, "$RING_CONFIG", "this rank's ring config", W},
    {F_IDLE_TIMEOUT, "idle-timeout-ms", 0, INT, "MS", 1, 1 << 30, "600000", "longest wait for rank 0's next message (rank 0 sends a heartbeat every --heartbeat-ms while idle)", W},
    {F_READY_FILE, "ready-file", 0, STR, "PATH", 0, 0, NULL, "create PATH once joined and loaded, remove it when this rank stops following rank 0 (a readiness probe: test -f PATH)", W},
    {F_REJOIN, "rejoin", 0, NONE, NULL, 0, 0, NULL, "when rank 0 or the ring is lost, or rank 0 re-forms the cluster, connect again (until it succeeds) instead of exiting 1", W},
    /* generate */
    {F_PROMPT, "prompt", 'p', STR, "TEXT", 0, 0, "BOS alone", "prompt, after BOS where the model adds one", G},
    {F_PROMPT_IDS, "prompt-ids", 0, STR, "IDS", 0, 0, NULL, "the prompt as token ids (e.g. 1,403,407), no BOS added", G},
    {F_N_NEW, "n-new", 'n', INT, "N", 0, 1 << 24, "256", "tokens to generate", G},
    {F_TEMP, "temp", 0, NUM, "T", 0, 1e6, "1.0", "temperature, 0 = greedy", G},
    {F_TOP_P, "top-p", 0, NUM, "P", 0, 1, "0.9", "nucleus sampling threshold, above 0", G},
    {F_SEED, "seed", 0, U64, "S", 0, 0, "the time", "sampler seed", G},
    {F_ECHO, "echo", 0, NONE, NULL, 0, 0, NULL, "print the prompt before the generated text", G},
    {F_LOGITS_OUT, "logits-out", 0, STR, "FILE", 0, 0, NULL, "append each step's logits (f32) to FILE", G},
    {F_IDS_OUT, "ids-out", 0, STR, "FILE", 0, 0, NULL, "write the generated token ids to FILE, one per line", G},
    {F_IGNORE_EOS, "ignore-eos", 0, NONE, NULL, 0, 0, NULL, "do not stop at EOS or BOS: always generate N tokens", G},
    {F_GRAMMAR, "grammar", 0, STR, "FILE", 0, 0, NULL, "constrain the output to a GBNF grammar (bench: and time the mask)", G | B},
    {F_JSON_SCHEMA, "json-schema", 0, STR, "FILE", 0, 0, NULL, "constrain the output to JSON valid against a JSON Schema", G | B},
    /* speculative decoding (launcher/spec_cli.h) */
    {F_SPEC, "spec", 0, CHOICE, "off|ngram|draft", 0, 0, "off", "speculative decoding: ngram drafts by prompt lookup, draft with --draft-model; output is unchanged either way (bench: also decode -n tokens through the scheduler, off and on, on a repetitive prompt and a story)", G | S | B},
    {F_SPEC_TOKENS, "spec-tokens", 0, INT, "K", 1, 16, "4", "draft tokens verified per step", G | S | B},
    {F_SPEC_NGRAM, "spec-ngram", 0, INT, "N", 1, 8, "3", "longest suffix prompt lookup matches", G | S | B},
    {F_DRAFT_MODEL, "draft-model", 0, STR, "FILE", 0, 0, NULL, "a smaller model with the same vocabulary, run on rank 0 (implies --spec draft)", G | S | B},
    /* serve */
    {F_HOST, "host", 0, STR, "H", 0, 0, "127.0.0.1", "address to bind", S},
    {F_PORT, "port", 0, INT, "P", 0, 65535, "8080", "port (0 picks a free one)", S},
    {F_API_KEY, "api-key", 0, STR, "K", 0, 0, "$SHARDLM_API_KEY", "require Authorization: Bearer K on /v1", S},
    {F_MODEL_NAME, "model-name", 0, STR, "NAME", 0, 0, "the file name", "model id in /v1/models and responses", S},
    {F_MAX_SEQS, "max-seqs", 0, INT, "N", 1, 4096, "32", "sequences per step", S},
    {F_MAX_BATCHED, "max-num-batched-tokens", 0, INT, "N", 1, 1 << 20, "512", "tokens per step", S},
    {F_MAX_QUEUE, "max-queue", 0, INT, "N", 0, 1 << 20, "256", "waiting requests before 429", S},
    {F_BLOCK_SIZE, "block-size", 0, CHOICE, "8|16|32", 0, 0, "16", "tokens per KV block", S},
    {F_KV_MB, "kv-cache-mb", 0, NUM, "MB", 0, 1e7, "256", "KV pool per rank, above 0", S},
    {F_NO_PREFIX, "no-prefix-cache", 0, NONE, NULL, 0, 0, NULL, "turn prefix caching off", S},
    {F_CHAT_TEMPLATE, "chat-template", 0, STR, "FILE", 0, 0, "the model's", "Jinja chat template", S},
    {F_MAX_BODY_KB, "max-body-kb", 0, INT, "KB", 1, 1 << 20, "1024", "largest request body", S},
    {F_REQUEST_TIMEOUT, "request-timeout", 0, INT, "S", 1, 86400, "600", "longest wait on the engine per request", S},
    {F_API_KEY_FILE, "api-key-file", 0, STR, "FILE", 0, 0, NULL, "read the API key from FILE (its first line)", S},
    {F_MAX_PROMPT, "max-prompt-tokens", 0, INT, "N", 0, 1 << 24, "the context", "longest prompt accepted (400 over it)", S},
    {F_MAX_CONNS, "max-connections", 0, INT, "N", 1, 65536, "4096", "concurrent HTTP connections (one thread each)", S},
    {F_HTTP_TIMEOUT, "http-timeout", 0, INT, "S", 1, 86400, "request-timeout + 30", "close a connection silent for S seconds once its request is in", S},
    {F_HTTP_HEADER_TIMEOUT, "http-header-timeout", 0, INT, "S", 1, 86400, "10", "close a connection whose request (headers and body) is not in S seconds after it opened or its last response ended, however it trickles; responses and streams are not cut", S},
    {F_MAX_CONNS_PER_IP, "max-connections-per-ip", 0, INT, "N", 0, 65536, "0 (no limit)", "concurrent HTTP connections from one client address; more are closed at once", S},
    {F_HEARTBEAT, "heartbeat-ms", 0, INT, "MS", 10, 3600000, "2000", "idle heartbeat interval on the control channel", S},
    {F_HEARTBEAT_TIMEOUT, "heartbeat-timeout-ms", 0, INT, "MS", 100, 86400000, "10000", "a worker that answers no heartbeat this long is lost", S},
    {F_DRAIN_TIMEOUT, "drain-timeout", 0, INT, "S", 0, 86400, "30", "SIGTERM: how long requests in flight may finish", S},
    {F_NO_HEAL, "no-heal", 0, NONE, NULL, 0, 0, NULL, "a lost rank stops serve (exit 1) instead of re-forming the cluster", S},
    /* bench, named as llama-bench names them */
    {F_N_PROMPT, "n-prompt", 'p', INT, "N", 0, 100000, "128", "prompt tokens processed as one batch (0: skip)", B},
    {F_N_GEN, "n-gen", 'n', INT, "N", 0, 100000, "128", "decode steps of one token each (0: skip)", B},
    {F_REPS, "repetitions", 'r', INT, "N", 1, 64, "3", "repetitions; the median is reported", B},
    {F_BATCH, "batch", 0, INT, "B", 0, 256, NULL, "also decode B sequences together for -n steps (aggregate tok/s)", B},
    {F_JSON, "json", 0, NONE, NULL, 0, 0, NULL, "print one JSON object: pp_tok_s, tg_tok_s, their samples, ...", B},
    /* launch */
    {F_LAUNCH_WORLD, "world-size", 'n', POW2, "W", 1, 1024, NULL, "number of ranks", L},
    {F_LAUNCH_TIMEOUT, "timeout", 0, INT, "S", 1, 86400 * 7, "none", "kill every rank and fail after S seconds", L},
};
/* clang-format on */

static const struct {
    const char *name;
    unsigned bit;
    const char *usage; /* the first lines of --help */
    const char *foot;  /* after the flags */
} cmds[] = {
    {"generate", G, "usage: shardlm generate -m MODEL [options]\n",
     "Under mpirun every rank runs this same command: rank 0 generates, the others\n"
     "become workers (`mpirun -np 4 shardlm generate -m MODEL`).\n"},
    {"serve", S, "usage: shardlm serve -m MODEL [options]\n",
     "Under mpirun every rank runs this same command: rank 0 serves HTTP, the others\n"
     "become workers (`mpirun -np 4 shardlm serve -m MODEL`).\n"},
    {"worker", W, "usage: RING_CONFIG=rankK.json shardlm worker (-m MODEL | --weights-from rank0) [options]\n",
     "--numa places the rank by $SHARDLM_LOCAL_RANK, else rank mod $SHARDLM_LOCAL_WORLD_SIZE.\n"},
    {"bench", B, "usage: shardlm bench -m MODEL [options]\n", NULL},
    {"launch", L,
     "usage: shardlm launch -n W [--timeout S] -- COMMAND [ARGS...]\n"
     "Runs W copies of COMMAND (ranks 0..W-1) on a loopback ring. Each gets\n"
     "RING_CONFIG (its ring config file) and SHARDLM_RANK in its environment.\n",
     "Exits 0 when every rank exits 0; otherwise reports the first failing rank,\n"
     "stops the others and exits 1.\n"},
};

#define N_FLAGS (sizeof flags / sizeof flags[0])
#define N_CMDS (sizeof cmds / sizeof cmds[0])

static int flags_cmd(const char *cmd)
{
    for (size_t c = 0; c < N_CMDS; c++)
        if (!strcmp(cmds[c].name, cmd)) return (int)c;
    return -1;
}

static const shardlm_flag *flags_find(unsigned bit, const char *name, size_t len, char shrt)
{
    for (size_t k = 0; k < N_FLAGS; k++) {
        const shardlm_flag *f = &flags[k];
        if (!(f->cmds & bit)) continue;
        if (name ? strlen(f->name) == len && !memcmp(f->name, name, len) : f->shrt == shrt) return f;
    }
    return NULL;
}

/* "a, b or c" from "a|b|c". */
static void flags_choices(const char *words, char *out, size_t cap)
{
    size_t n = 0, k = 0, total = 1;
    for (const char *p = words; *p; p++) total += *p == '|';
    out[0] = 0;
    for (const char *p = words; *p && n + 8 < cap; k++) {
        size_t w = strcspn(p, "|");
        const char *sep = k == 0 ? "" : k + 1 == total ? " or " : ", ";
        n += (size_t)snprintf(out + n, cap - n, "%s%.*s", sep, (int)w, p);
        p += w + (p[w] == '|');
    }
}

static int flags_choice_index(const char *words, const char *v)
{
    int k = 0;
    for (const char *p = words; *p; k++) {
        size_t w = strcspn(p, "|");
        if (strlen(v) == w && !memcmp(p, v, w)) return k;
        p += w + (p[w] == '|');
    }
    return -1;
}

/* Checks v against f's type; 0, or -1 with what was expected in why. */
static int flags_value(const shardlm_flag *f, const char *s, shardlm_flag_value *v, char *why, size_t cap)
{
    char *end;
    errno = 0;
    switch (f->type) {
    case SHARDLM_FLAG_INT:
    case SHARDLM_FLAG_POW2: {
        long long x = strtoll(s, &end, 10);
        int ok = *s && !*end && !errno && x >= f->lo && x <= f->hi;
        if (f->type == SHARDLM_FLAG_POW2 && (x < 1 || (x & (x - 1)))) ok = 0;
        v->i = x;
        snprintf(why, cap, "%s in %.0f..%.0f", f->type == SHARDLM_FLAG_POW2 ? "a power of two" : "an integer", f->lo,
                 f->hi);
        return ok ? 0 : -1;
    }
    case SHARDLM_FLAG_NUM:
        v->d = strtod(s, &end);
        snprintf(why, cap, "a number in %g..%g", f->lo, f->hi);
        return *s && !*end && isfinite(v->d) && v->d >= f->lo && v->d <= f->hi ? 0 : -1;
    case SHARDLM_FLAG_U64: {
        unsigned long long x = strtoull(s, &end, 10);
        v->i = (long long)x;
        snprintf(why, cap, "a non-negative integer");
        return *s >= '0' && *s <= '9' && !*end && !errno ? 0 : -1;
    }
    case SHARDLM_FLAG_CHOICE:
        v->i = flags_choice_index(f->arg, s);
        flags_choices(f->arg, why, cap);
        return v->i < 0 ? -1 : 0;
    default:
        return 0;
    }
}

/* One flag at argv[*i]; 0, -1 after one line on stderr. */
static int flags_one(const char *cmd, unsigned bit, int argc, char **argv, int *i, shardlm_flag_apply apply,
                     void *ctx)
{
    const char *a = argv[*i], *val = NULL;
    const shardlm_flag *f;
    size_t len = 2;
    if (a[1] == '-') {
        const char *eq = strchr(a + 2, '=');
        len = eq ? (size_t)(eq - a) : strlen(a);
        f = flags_find(bit, a + 2, len - 2, 0);
        if (eq) val = eq + 1;
    } else {
        f = flags_find(bit, NULL, 0, a[1]);
        if (a[2]) val = a + 2;
    }
    if (!f) {
        fprintf(stderr, "shardlm %s: unknown option '%.*s' (try 'shardlm %s --help')\n", cmd, (int)len, a, cmd);
        return -1;
    }
    char opt[64];
    snprintf(opt, sizeof opt, "%s%s", a[1] == '-' ? "--" : "-", a[1] == '-' ? f->name : (char[]){f->shrt, 0});
    if (f->type == SHARDLM_FLAG_NONE && val) {
        fprintf(stderr, "shardlm %s: option '%s' takes no value\n", cmd, opt);
        return -1;
    }
    if (f->type != SHARDLM_FLAG_NONE && !val) {
        if (*i + 1 >= argc) {
            fprintf(stderr, "shardlm %s: option '%s' needs a value (%s)\n", cmd, opt, f->arg);
            return -1;
        }
        val = argv[++*i];
    }
    shardlm_flag_value v = {f, val, 0, 0};
    char why[160];
    if (flags_value(f, val ? val : "", &v, why, sizeof why)) {
        fprintf(stderr, "shardlm %s: invalid value '%s' for %s (%s)\n", cmd, val, opt, why);
        return -1;
    }
    return apply(ctx, &v);
}

int shardlm_flags_parse(const char *cmd, int argc, char **argv, shardlm_flag_apply apply, void *ctx, int *rest)
{
    int c = flags_cmd(cmd);
    if (c < 0) return -1;
    if (rest) *rest = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            shardlm_flags_help(cmd, stdout);
            return 1;
        }
        if (rest && !strcmp(a, "--")) {
            *rest = i + 1;
            return 0;
        }
        if (a[0] != '-' || !a[1] || !strcmp(a, "--")) {
            const char *bad = strcmp(a, "--") ? a : i + 1 < argc ? argv[i + 1] : NULL;
            if (!bad) return 0;
            fprintf(stderr, "shardlm %s: unexpected argument '%s' (try 'shardlm %s --help')\n", cmd, bad, cmd);
            return -1;
        }
        if (flags_one(cmd, cmds[c].bit, argc, argv, &i, apply, ctx)) return -1;
    }
    return 0;
}

/* "  -m, --model PATH" */
static void flags_left(const shardlm_flag *f, char *out, size_t cap)
{
    int n = f->shrt ? snprintf(out, cap, "  -%c, --%s", f->shrt, f->name) : snprintf(out, cap, "      --%s", f->name);
    if (f->arg && n > 0 && (size_t)n < cap) snprintf(out + n, cap - (size_t)n, " %s", f->arg);
}

int shardlm_flags_help(const char *cmd, FILE *f)
{
    int c = flags_cmd(cmd);
    if (c < 0) return -1;
    fputs(cmds[c].usage, f);
    for (size_t k = 0; k < N_FLAGS; k++) {
        const shardlm_flag *fl = &flags[k];
        if (!(fl->cmds & cmds[c].bit)) continue;
        char left[96];
        flags_left(fl, left, sizeof left);
        fprintf(f, "%-36s %s", left, fl->help);
        if (fl->dflt) fprintf(f, " (default: %s)", fl->dflt);
        fputc('\n', f);
    }
    if (cmds[c].foot) fputs(cmds[c].foot, f);
    return 0;
}

/* Markdown's table cells cannot hold a bare '|'. */
static void flags_md_cell(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|') fputc('\\', f);
        fputc(*s, f);
    }
}

static void flags_md_table(FILE *f, unsigned bit)
{
    fprintf(f, "| flag | value | default | what it does |\n|---|---|---|---|\n");
    for (size_t k = 0; k < N_FLAGS; k++) {
        const shardlm_flag *fl = &flags[k];
        if (!(fl->cmds & bit)) continue;
        fprintf(f, "| ");
        if (fl->shrt) fprintf(f, "`-%c`, ", fl->shrt);
        fprintf(f, "`--%s` | ", fl->name);
        char why[160] = "";
        shardlm_flag_value v = {fl, NULL, 0, 0};
        if (fl->type == SHARDLM_FLAG_INT || fl->type == SHARDLM_FLAG_POW2 || fl->type == SHARDLM_FLAG_NUM)
            flags_value(fl, "", &v, why, sizeof why);
        if (fl->arg) fputc('`', f), flags_md_cell(f, fl->arg), fputc('`', f);
        if (why[0]) fprintf(f, ": "), flags_md_cell(f, why);
        fprintf(f, " | ");
        flags_md_cell(f, fl->dflt ? fl->dflt : "");
        fprintf(f, " | ");
        flags_md_cell(f, fl->help);
        fprintf(f, " |\n");
    }
}

void shardlm_flags_markdown(FILE *f)
{
    for (size_t c = 0; c < N_CMDS; c++) {
        fprintf(f, "### %s\n\n```\n", cmds[c].name);
        shardlm_flags_help(cmds[c].name, f);
        fprintf(f, "```\n\n");
        flags_md_table(f, cmds[c].bit);
        if (c + 1 < N_CMDS) fputc('\n', f);
    }
}
