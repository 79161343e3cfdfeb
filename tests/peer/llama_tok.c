/* llama_tok.c - llama.cpp's tokenizer as a command-line oracle for the
 * tokenizer tests: a small program against the peer's libllama (built by
 * tests/peer/tokenizer_xcheck.sh, never part of shardlm itself).
 *
 *   llama_tok VOCAB.gguf ids [--special] [--add] < TEXT   ids of TEXT
 *   llama_tok VOCAB.gguf vectors FILE.inp [--special]      one line per test string
 *   llama_tok VOCAB.gguf eog                                the EOG ids
 *   llama_tok VOCAB.gguf flags                              add_bos add_eos bos eos
 *   llama_tok VOCAB.gguf bench FILE [REPS]                  encode throughput
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user)
{
    (void)level, (void)text, (void)user;
}

static char *slurp(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    *len = n;
    return buf;
}

static int32_t *tokenize(const struct llama_vocab *v, const char *s, size_t len, int add, int special, int32_t *n)
{
    int32_t cap = (int32_t)len + 8;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    *n = llama_tokenize(v, s, (int32_t)len, ids, cap, add, special);
    if (*n < 0) {
        cap = -*n;
        ids = realloc(ids, (size_t)cap * sizeof *ids);
        *n = llama_tokenize(v, s, (int32_t)len, ids, cap, add, special);
    }
    return ids;
}

static void print_ids(const int32_t *ids, int32_t n)
{
    for (int32_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
}

static int run_vectors(const struct llama_vocab *v, const char *path, int special)
{
    static const char sep[] = "\n__ggml_vocab_test__\n";
    FILE *f = fopen(path, "rb");
    if (!f) return perror(path), 1;
    size_t len;
    char *buf = slurp(f, &len);
    fclose(f);
    for (char *p = buf, *end = buf + len, *q; p < end && (q = memmem(p, (size_t)(end - p), sep, sizeof sep - 1));
         p = q + sizeof sep - 1) {
        int32_t n;
        int32_t *ids = tokenize(v, p, (size_t)(q - p), 0, special, &n);
        print_ids(ids, n);
        free(ids);
    }
    free(buf);
    return 0;
}

static int run_bench(const struct llama_vocab *v, const char *path, int reps)
{
    FILE *f = fopen(path, "rb");
    if (!f) return perror(path), 1;
    size_t len;
    char *buf = slurp(f, &len);
    fclose(f);
    int32_t n = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int r = 0; r < reps; r++) free(tokenize(v, buf, len, 0, 0, &n));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double dt = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    printf("llama.cpp: %zu bytes -> %d tokens, %.4f s per encode, %.2f MB/s, %.0f tokens/s\n", len, n, dt / reps,
           (double)len * reps / dt / 1e6, (double)n * reps / dt);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: llama_tok VOCAB.gguf ids|vectors|eog|flags|bench ...\n");
        return 2;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = 1;
    struct llama_model *m = llama_model_load_from_file(argv[1], mp);
    if (!m) {
        fprintf(stderr, "llama_tok: cannot load %s\n", argv[1]);
        return 2;
    }
    const struct llama_vocab *v = llama_model_get_vocab(m);
    int rc = 0;
    if (!strcmp(argv[2], "ids")) {
        int add = 0, special = 0;
        for (int i = 3; i < argc; i++) {
            if (!strcmp(argv[i], "--add")) add = 1;
            if (!strcmp(argv[i], "--special")) special = 1;
        }
        size_t len;
        char *text = slurp(stdin, &len);
        int32_t n;
        int32_t *ids = tokenize(v, text, len, add, special, &n);
        print_ids(ids, n);
        free(ids);
        free(text);
    } else if (!strcmp(argv[2], "vectors") && argc > 3) {
        rc = run_vectors(v, argv[3], argc > 4 && !strcmp(argv[4], "--special"));
    } else if (!strcmp(argv[2], "eog")) {
        int first = 1;
        for (int32_t id = 0; id < llama_vocab_n_tokens(v); id++)
            if (llama_vocab_is_eog(v, id)) printf(first ? "%d" : " %d", id), first = 0;
        printf("\n");
    } else if (!strcmp(argv[2], "flags")) {
        printf("%d %d %d %d\n", llama_vocab_get_add_bos(v), llama_vocab_get_add_eos(v), llama_vocab_bos(v),
               llama_vocab_eos(v));
    } else if (!strcmp(argv[2], "bench") && argc > 3) {
        rc = run_bench(v, argv[3], argc > 4 ? atoi(argv[4]) : 3);
    } else {
        fprintf(stderr, "llama_tok: unknown mode '%s'\n", argv[2]);
        rc = 2;
    }
    llama_model_free(m);
    return rc;
}
