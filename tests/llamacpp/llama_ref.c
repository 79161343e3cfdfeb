/* llama_ref.c - the reference side of the llama.cpp comparison
 * (tests/llamacpp/run.sh): loads a GGUF with llama.cpp (built by
 * scripts/peer-llamacpp.sh against the npm package's prebuilt libraries),
 * feeds a token sequence one token per llama_decode, greedy-generates N
 * tokens and writes the tokens and every step's full logits in the layout of
 * `shardlm generate --logits-out`, so the two files compare row by row.
 *
 * The settings are pinned so that the reference is deterministic and exact
 * where llama.cpp allows: CPU only, one thread, the file read into memory
 * (no mmap), an f32 KV cache (llama.cpp's default is f16; shardlm's is f32)
 * and no flash attention (plain softmax in f32). Not part of the shardlm
 * build: it needs llama.cpp's headers and libraries. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

typedef struct {
    const char *model, *ids, *ids_file, *tokens_out, *logits_out;
    int n_new, threads, verbose, repack;
    float rope_freq_base;
} ref_opts;

static void usage(FILE *f)
{
    fputs("usage: llama_ref -m MODEL (-p IDS | -f IDS_FILE) -n N [options]\n"
          "  -m MODEL          GGUF file\n"
          "  -p IDS            prompt token ids, separated by commas or spaces\n"
          "  -f IDS_FILE       the same, read from a file\n"
          "  -n N              tokens to generate greedily (lowest id on a tie)\n"
          "  -o FILE           write the generated ids there, one per line (default: stdout)\n"
          "  -l FILE           write logits: (prompt + N - 1) rows of n_vocab f32; row k is the\n"
          "                    output after position k (the last generated token is not fed)\n"
          "  -t N              threads (default 1)\n"
          "  --rope-freq-base F  override the model's RoPE base (a negative control for the harness)\n"
          "  --no-repack       no load-time weight repacking (llama.cpp's extra buffer types)\n"
          "  -v                llama.cpp's log on stderr\n"
          "Exit status: 0 done, 2 bad input, 1 llama.cpp failed.\n",
          f);
}

static void log_quiet(enum ggml_log_level level, const char *text, void *user)
{
    int verbose = *(const int *)user;
    if (verbose || level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int parse_int(const char *flag, const char *s, int lo, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > 1 << 24) {
        fprintf(stderr, "llama_ref: %s: '%s' is not an integer >= %d\n", flag, s, lo);
        return 2;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, ref_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "-v")) {
            o->verbose = 1;
        } else if (!strcmp(a, "--no-repack")) {
            o->repack = 0;
        } else if (!has) {
            fprintf(stderr, "llama_ref: %s needs a value (or is unknown; try --help)\n", a);
            return 2;
        } else if (!strcmp(a, "-m")) {
            o->model = argv[++i];
        } else if (!strcmp(a, "-p")) {
            o->ids = argv[++i];
        } else if (!strcmp(a, "-f")) {
            o->ids_file = argv[++i];
        } else if (!strcmp(a, "-o")) {
            o->tokens_out = argv[++i];
        } else if (!strcmp(a, "-l")) {
            o->logits_out = argv[++i];
        } else if (!strcmp(a, "-n")) {
            if (parse_int("-n", argv[++i], 1, &o->n_new)) return 2;
        } else if (!strcmp(a, "-t")) {
            if (parse_int("-t", argv[++i], 1, &o->threads)) return 2;
        } else if (!strcmp(a, "--rope-freq-base")) {
            char *end;
            o->rope_freq_base = strtof(argv[++i], &end);
            if (*end || !(o->rope_freq_base > 0)) {
                fprintf(stderr, "llama_ref: --rope-freq-base: '%s' is not a positive number\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "llama_ref: unknown option '%s' (try --help)\n", a);
            return 2;
        }
    }
    if (!o->model || (!o->ids == !o->ids_file) || o->n_new < 1) {
        fprintf(stderr, "llama_ref: need -m, one of -p and -f, and -n (try --help)\n");
        return 2;
    }
    return 0;
}

/* Reads the whole of path into a NUL-terminated buffer. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1) break;
        char *bigger = realloc(buf, cap *= 2);
        if (!bigger) free(buf);
        buf = bigger;
    }
    fclose(f);
    if (buf) buf[n] = 0;
    return buf;
}

/* Parses ids separated by commas or whitespace; checks them against n_vocab. */
static int parse_ids(const char *text, const char *what, int n_vocab, llama_token **out, int *n_out)
{
    size_t cap = strlen(text) / 2 + 1;
    llama_token *ids = malloc(cap * sizeof *ids);
    int n = 0;
    const char *p = text;
    if (!ids) return 1;
    for (;;) {
        while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v >= n_vocab) {
            fprintf(stderr, "llama_ref: %s: '%.20s' is not a token id in 0..%d\n", what, p, n_vocab - 1);
            free(ids);
            return 2;
        }
        ids[n++] = (llama_token)v;
        p = end;
    }
    if (n == 0) {
        fprintf(stderr, "llama_ref: %s holds no token ids\n", what);
        free(ids);
        return 2;
    }
    *out = ids;
    *n_out = n;
    return 0;
}

static llama_token argmax(const float *logits, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* Feeds one token at the next position; *logits is its output row. */
static int feed(struct llama_context *ctx, llama_token tok, const float **logits)
{
    int rc = llama_decode(ctx, llama_batch_get_one(&tok, 1));
    if (rc) {
        fprintf(stderr, "llama_ref: llama_decode failed (%d)\n", rc);
        return 1;
    }
    *logits = llama_get_logits_ith(ctx, -1);
    if (!*logits) {
        fprintf(stderr, "llama_ref: llama.cpp returned no logits\n");
        return 1;
    }
    return 0;
}

static int write_row(FILE *f, const char *path, const float *row, int n)
{
    if (f && fwrite(row, sizeof *row, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "llama_ref: short write to %s\n", path);
        return 1;
    }
    return 0;
}

/* Prompt, then N greedy tokens; rows of logits go to lf as they come. */
static int run(struct llama_context *ctx, const ref_opts *o, const llama_token *prompt, int n_prompt, int n_vocab,
               FILE *lf, FILE *tf)
{
    const float *logits = NULL;
    for (int i = 0; i < n_prompt; i++)
        if (feed(ctx, prompt[i], &logits) || write_row(lf, o->logits_out, logits, n_vocab)) return 1;
    for (int i = 0; i < o->n_new; i++) {
        llama_token next = argmax(logits, n_vocab);
        fprintf(tf, "%d\n", next);
        if (i + 1 == o->n_new) break;
        if (feed(ctx, next, &logits) || write_row(lf, o->logits_out, logits, n_vocab)) return 1;
    }
    return ferror(tf) ? 1 : 0;
}

static struct llama_context *open_ctx(struct llama_model *model, const ref_opts *o, int n_tokens)
{
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n_tokens < 256 ? 256 : n_tokens);
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = o->threads;
    cp.n_threads_batch = o->threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.rope_freq_base = o->rope_freq_base; /* 0: the model's */
    cp.no_perf = true;
    return llama_init_from_model(model, cp);
}

static int ref_main(const ref_opts *o)
{
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.load_mode = LLAMA_LOAD_MODE_NONE;
    mp.use_extra_bufts = o->repack;
    struct llama_model *model = llama_model_load_from_file(o->model, mp);
    if (!model) {
        fprintf(stderr, "llama_ref: llama.cpp cannot load %s\n", o->model);
        return 2;
    }
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model)), n_prompt = 0, rc = 0;
    llama_token *prompt = NULL;
    char *text = o->ids ? NULL : slurp(o->ids_file);
    if (!o->ids && !text) {
        fprintf(stderr, "llama_ref: cannot read %s: %s\n", o->ids_file, strerror(errno));
        rc = 2;
    }
    if (!rc) rc = parse_ids(o->ids ? o->ids : text, o->ids ? "-p" : o->ids_file, n_vocab, &prompt, &n_prompt);
    struct llama_context *ctx = rc ? NULL : open_ctx(model, o, n_prompt + o->n_new);
    if (!rc && !ctx) {
        fprintf(stderr, "llama_ref: llama.cpp cannot make a context for %s\n", o->model);
        rc = 1;
    }
    FILE *lf = NULL, *tf = stdout;
    if (!rc && o->logits_out && !(lf = fopen(o->logits_out, "wb"))) rc = 2;
    if (!rc && o->tokens_out && !(tf = fopen(o->tokens_out, "w"))) rc = 2;
    if (rc == 2 && ctx) fprintf(stderr, "llama_ref: cannot write %s\n", lf ? o->tokens_out : o->logits_out);
    if (!rc) rc = run(ctx, o, prompt, n_prompt, n_vocab, lf, tf);
    if (lf && fclose(lf)) rc = 1;
    if (tf && tf != stdout && fclose(tf)) rc = 1;
    if (ctx) llama_free(ctx);
    llama_model_free(model);
    free(prompt);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    ref_opts o = {.threads = 1, .repack = 1};
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    llama_log_set(log_quiet, &o.verbose);
    ggml_backend_load_all(); /* the CPU variant (libggml-cpu-*.so) from beside this program */
    llama_backend_init();
    rc = ref_main(&o);
    llama_backend_free();
    return rc;
}
