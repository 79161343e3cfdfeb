/* cmd_synth.c - `shardlm synth`: writes a synthetic llama GGUF of any shape
 * with random weights, for tests and benchmarks without real model files. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "shardlm_kernels.h"
#include "shardlm_model.h"

static void synth_usage(FILE *f)
{
    fputs("usage: shardlm synth -o OUT.gguf [options]\n"
            "\n"
            "Writes a llama-architecture GGUF v3 with random weights (uniform in\n"
            "+-1/sqrt(row length), fixed-seed PRNG: the same options give the same\n"
            "bytes) and a llama SentencePiece vocabulary of V tokens.\n"
            "\n"
            "  -o, --output PATH   file to write (required)\n"
            "      --dim D         embedding length            (default 256)\n"
            "      --layers L      transformer blocks          (default 4)\n"
            "      --heads H       attention heads, divide D    (default 8)\n"
            "      --kv-heads K    KV heads, divide H           (default 4)\n"
            "      --ffn F         feed-forward length         (default 768)\n"
            "      --vocab V       vocabulary size, >= 259     (default 512)\n"
            "      --type T        f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k,\n"
            "                      q3_k, q4_k, q5_k, q6_k, iq4_nl or iq4_xs (default f32);\n"
            "                      quantised types need D and F to be multiples of 32;\n"
            "                      q2_k..q6_k and iq4_xs write rows not a multiple of\n"
            "                      256 as q8_0, and q4_k writes output.weight as q6_k\n"
            "                      (as Q4_K_M)\n"
            "      --context C     context length metadata     (default 2048)\n"
            "      --seed S        PRNG seed                   (default 42)\n"
            "  -h, --help          show this help\n",
          f);
}

static int bad_flag(const char *msg, const char *opt, const char *val)
{
    fprintf(stderr, "shardlm: %s%s%s%s\n", opt ? opt : "", opt ? " " : "", val ? val : "", msg);
    return 2;
}

static int parse_int(const char *opt, const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < INT_MIN || v > INT_MAX) return bad_flag(": not an integer", opt, s);
    *out = (int)v;
    return 0;
}

static int parse_u64(const char *opt, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-') return bad_flag(": not a non-negative integer", opt, s);
    *out = v;
    return 0;
}

enum { OPT_DIM = 256, OPT_LAYERS, OPT_HEADS, OPT_KV, OPT_FFN, OPT_VOCAB, OPT_TYPE, OPT_CONTEXT, OPT_SEED };

static int synth_opt(int c, const char *arg, shardlm_synth_opts *o, const char **out)
{
    switch (c) {
    case 'o': *out = arg; return 0;
    case OPT_DIM: return parse_int("--dim", arg, &o->dim);
    case OPT_LAYERS: return parse_int("--layers", arg, &o->layers);
    case OPT_HEADS: return parse_int("--heads", arg, &o->heads);
    case OPT_KV: return parse_int("--kv-heads", arg, &o->kv_heads);
    case OPT_FFN: return parse_int("--ffn", arg, &o->ffn);
    case OPT_VOCAB: return parse_int("--vocab", arg, &o->vocab);
    case OPT_CONTEXT: return parse_int("--context", arg, &o->context);
    case OPT_SEED: return parse_u64("--seed", arg, &o->seed);
    case OPT_TYPE: {
        int t = shardlm_dtype_parse(arg);
        if (t < 0) return bad_flag(": unknown type (see `shardlm synth --help`)", "--type", arg);
        o->type = (uint32_t)t;
        return 0;
    }
    default: return 2;
    }
}

int shardlm_cmd_synth(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"output", required_argument, 0, 'o'},     {"dim", required_argument, 0, OPT_DIM},
        {"layers", required_argument, 0, OPT_LAYERS}, {"heads", required_argument, 0, OPT_HEADS},
        {"kv-heads", required_argument, 0, OPT_KV}, {"ffn", required_argument, 0, OPT_FFN},
        {"vocab", required_argument, 0, OPT_VOCAB}, {"type", required_argument, 0, OPT_TYPE},
        {"context", required_argument, 0, OPT_CONTEXT}, {"seed", required_argument, 0, OPT_SEED},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
    shardlm_synth_opts o;
    shardlm_synth_defaults(&o);
    const char *out = NULL;
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, ":o:h", longopts, NULL)) != -1) {
        if (c == 'h') {
            synth_usage(stdout);
            return 0;
        }
        if (c == '?') return bad_flag(" (try `shardlm synth --help`)", "unknown option", argv[optind - 1]);
        if (c == ':') return bad_flag(" needs a value", "option", argv[optind - 1]);
        if (synth_opt(c, optarg, &o, &out)) return 2;
    }
    if (optind < argc) return bad_flag(" (synth takes no positional arguments)", "unexpected argument", argv[optind]);
    if (!out) return bad_flag("missing -o OUT.gguf (try `shardlm synth --help`)", NULL, NULL);
    double t0 = shardlm_now_s();
    int rc = shardlm_synth_write(&o, out);
    if (rc) {
        fprintf(stderr, "shardlm: %s\n", shardlm_err_get());
        return shardlm_exit_code(rc);
    }
    printf("wrote %s: llama dim %d, %d layers, %d heads (%d kv), ffn %d, vocab %d, %s, seed %llu in %.2f s\n", out,
           o.dim, o.layers, o.heads, o.kv_heads, o.ffn, o.vocab, shardlm_dtype_name(o.type),
           (unsigned long long)o.seed, shardlm_now_s() - t0);
    return 0;
}
