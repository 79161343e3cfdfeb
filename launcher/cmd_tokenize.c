/* cmd_tokenize.c - `shardlm tokenize`: prints the token ids of a text (an
 * argument, or all of stdin) using a GGUF model's tokenizer. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_text.h"

static void tokenize_usage(FILE *f)
{
    fprintf(f,
            "usage: shardlm tokenize -m MODEL [--bos] [--special] [TEXT]\n"
            "\n"
            "Prints the token ids of TEXT (or of all of stdin when TEXT is absent),\n"
            "separated by spaces, using the tokenizer stored in the GGUF file MODEL.\n"
            "The text of user-defined tokens always becomes those tokens.\n"
            "\n"
            "  -m, --model PATH  GGUF model file\n"
            "      --bos         start with the BOS token\n"
            "      --special     parse control-token text (<|eot_id|>, <|im_start|>, <s>)\n"
            "                    as those tokens, as chat prompts are\n"
            "  -h, --help        show this help\n");
}

/* Reads all of stdin into a malloc'd buffer. */
static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) break;
    }
    if (ferror(stdin)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static int print_ids(const shardlm_tokenizer *t, const char *text, size_t len, int bos, int special)
{
    int32_t *ids;
    size_t n;
    int rc = shardlm_tokenizer_encode_alloc(t, text, len, bos ? SHARDLM_TOK_ADD_BOS : 0, special, &ids, &n);
    if (rc != SHARDLM_OK) {
        fprintf(stderr, "shardlm: %s\n", shardlm_err_get());
        return shardlm_exit_code(rc);
    }
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
    printf("\n");
    free(ids);
    return fflush(stdout) == 0 ? 0 : 1;
}

static int tokenize_run(const char *model, const char *text, int bos, int special)
{
    shardlm_gguf *g = NULL;
    shardlm_tokenizer *t = NULL;
    int rc = shardlm_gguf_open(model, &g);
    if (rc == SHARDLM_OK) rc = shardlm_tokenizer_from_gguf(g, &t);
    if (g) shardlm_gguf_close(g); /* the tokenizer keeps its own copy */
    if (rc != SHARDLM_OK) {
        fprintf(stderr, "shardlm: %s\n", shardlm_err_get());
        return shardlm_exit_code(rc);
    }
    size_t len = text ? strlen(text) : 0;
    char *in = text ? NULL : read_stdin(&len);
    int status;
    if (!text && !in) {
        fprintf(stderr, "shardlm: tokenize: cannot read stdin\n");
        status = 1;
    } else {
        status = print_ids(t, text ? text : in, len, bos, special);
    }
    free(in);
    shardlm_tokenizer_free(t);
    return status;
}

int shardlm_cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"bos", no_argument, NULL, 'b'},
        {"special", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model = NULL;
    int bos = 0, special = 0, c;
    optind = 1;
    opterr = 0; /* we print our own one-line errors */
    while ((c = getopt_long(argc, argv, ":m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'b': bos = 1; break;
        case 's': special = 1; break;
        case 'h': tokenize_usage(stdout); return 0;
        case ':':
            fprintf(stderr, "shardlm: tokenize: option '%s' needs a value\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "shardlm: tokenize: unknown option '%s' (try `shardlm tokenize --help`)\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "shardlm: tokenize: -m MODEL is required (try `shardlm tokenize --help`)\n");
        return 2;
    }
    if (argc - optind > 1) {
        fprintf(stderr, "shardlm: tokenize: expected at most one TEXT argument, got %d (quote the text)\n",
                argc - optind);
        return 2;
    }
    return tokenize_run(model, optind < argc ? argv[optind] : NULL, bos, special);
}
