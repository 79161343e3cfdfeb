/* cmd_synth.c - `shardlm synth`: writes a synthetic GGUF (llama, qwen2 or
 * qwen3) of any shape with random weights, for tests, benchmarks and
 * comparisons with llama.cpp without real model files. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "shardlm_kernels.h"
#include "shardlm_model.h"

static void synth_usage(FILE *f)
{
    fputs("usage: shardlm synth -o OUT.gguf [options]\n"
            "\n"
            "Writes a GGUF v3 of the llama, qwen2 or qwen3 architecture with random\n"
            "weights (uniform in +-1/sqrt(row length), fixed-seed PRNG: the same options\n"
            "give the same bytes), llama.cpp's metadata keys and tensor names, and a\n"
            "llama SentencePiece vocabulary of V tokens or a real one copied from a GGUF.\n"
            "\n"
            "  -o, --output PATH   file to write (required)\n"
            "      --arch A        llama, qwen2 (q/k/v biases, NeoX RoPE) or qwen3 (per-head\n"
            "                      q/k norms, NeoX RoPE)                       (default llama)\n"
            "      --dim D         embedding length            (default 256)\n"
            "      --layers L      transformer blocks          (default 4)\n"
            "      --heads H       attention heads              (default 8)\n"
            "      --kv-heads K    KV heads, divide H           (default 4)\n"
            "      --head-dim N    head size, written as attention.key_length and\n"
            "                      value_length (llama, qwen3) (default D / H, which must divide)\n"
            "      --ffn F         feed-forward length         (default 768)\n"
            "      --vocab V       vocabulary size, >= 259     (default 512)\n"
            "      --vocab FILE.gguf\n"
            "                      copy every tokenizer.* key (tokens, scores, types, merges,\n"
            "                      pre, special ids, add_bos, chat_template) from FILE; the\n"
            "                      vocabulary size is its token count\n"
            "      --type T        f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k,\n"
            "                      q3_k, q4_k, q5_k, q6_k, iq4_nl or iq4_xs (default f32);\n"
            "                      quantised types need D and F to be multiples of 32;\n"
            "                      q2_k..q6_k and iq4_xs write rows not a multiple of\n"
            "                      256 as q8_0, and q4_k writes output.weight as q6_k\n"
            "                      (as Q4_K_M)\n"
            "      --rope-base B   rope.freq_base              (default 10000)\n"
            "      --rope-scaling S  none (default); llama3: rope_freqs.weight as llama.cpp's\n"
            "                      converter writes it for Llama 3.1 (factor --rope-factor, low 1,\n"
            "                      high 4, original context 8192; llama only); linear:\n"
            "                      rope.scaling.type linear and rope.scaling.factor\n"
            "      --rope-factor F the scaling factor          (default 8)\n"
            "      --biases B      default (q/k/v for qwen2, none otherwise), none, qkv, or all\n"
            "                      (every bias llama.cpp loads for the architecture: llama\n"
            "                      q/k/v/output/gate/up/down, qwen2 q/k/v and output.bias,\n"
            "                      qwen3 q/k/v)\n"
            "      --tie-embeddings  no output.weight: the output reuses token_embd\n"
            "      --context C     context length metadata     (default 2048)\n"
            "      --seed S        PRNG seed                   (default 42)\n"
            "      --bigram G      a bigram chain for greedy comparisons: output row j\n"
            "                      is embedding row sigma(j) (sigma one random cycle\n"
            "                      through the vocabulary) and the embeddings are\n"
            "                      scaled by G (default 0: off)\n"
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

enum {
    OPT_DIM = 256, OPT_LAYERS, OPT_HEADS, OPT_KV, OPT_FFN, OPT_VOCAB, OPT_TYPE, OPT_CONTEXT, OPT_SEED, OPT_ARCH,
    OPT_HEAD_DIM, OPT_ROPE_SCALING, OPT_ROPE_FACTOR, OPT_ROPE_BASE, OPT_BIASES, OPT_TIE, OPT_BIGRAM
};

static int parse_float(const char *opt, const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) return bad_flag(": not a number", opt, s);
    *out = v;
    return 0;
}

/* --vocab: a number is a size; anything else is a GGUF to copy from. */
static int parse_vocab(const char *s, shardlm_synth_opts *o)
{
    if (*s >= '0' && *s <= '9') {
        o->vocab_path = NULL;
        return parse_int("--vocab", s, &o->vocab);
    }
    if (*s == '-') return parse_int("--vocab", s, &o->vocab); /* a negative size: "not in range" later */
    o->vocab_path = s;
    return 0;
}

/* A word of a fixed list: its index, or -1 after a message naming the list. */
static int parse_word(const char *opt, const char *s, const char *const *words, int n, const char *list)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, words[i])) return i;
    char msg[160];
    snprintf(msg, sizeof msg, ": unknown value (use %s)", list);
    bad_flag(msg, opt, s);
    return -1;
}

static int synth_opt_arch(int c, const char *arg, shardlm_synth_opts *o)
{
    static const char *const scal[] = {"none", "llama3", "linear"};
    static const char *const bias[] = {"default", "none", "qkv", "all"};
    int k;
    switch (c) {
    case OPT_ARCH:
        if ((k = shardlm_arch_parse(arg)) < 0) {
            char msg[128];
            snprintf(msg, sizeof msg, ": unknown architecture (use %s)", shardlm_arch_list());
            return bad_flag(msg, "--arch", arg);
        }
        o->arch = (shardlm_arch)k;
        return 0;
    case OPT_HEAD_DIM: return parse_int("--head-dim", arg, &o->head_dim);
    case OPT_ROPE_FACTOR: return parse_float("--rope-factor", arg, &o->rope_factor);
    case OPT_ROPE_BASE: return parse_float("--rope-base", arg, &o->rope_base);
    case OPT_ROPE_SCALING:
        if ((k = parse_word("--rope-scaling", arg, scal, 3, "none, llama3 or linear")) < 0) return 2;
        o->rope_scaling = (shardlm_synth_rope)k;
        return 0;
    case OPT_BIASES:
        if ((k = parse_word("--biases", arg, bias, 4, "default, none, qkv or all")) < 0) return 2;
        o->biases = (shardlm_synth_bias)(k - 1);
        return 0;
    case OPT_TIE: o->tie_embeddings = 1; return 0;
    default: return 2;
    }
}

static int synth_opt(int c, const char *arg, shardlm_synth_opts *o, const char **out)
{
    switch (c) {
    case 'o': *out = arg; return 0;
    case OPT_DIM: return parse_int("--dim", arg, &o->dim);
    case OPT_LAYERS: return parse_int("--layers", arg, &o->layers);
    case OPT_HEADS: return parse_int("--heads", arg, &o->heads);
    case OPT_KV: return parse_int("--kv-heads", arg, &o->kv_heads);
    case OPT_FFN: return parse_int("--ffn", arg, &o->ffn);
    case OPT_VOCAB: return parse_vocab(arg, o);
    case OPT_CONTEXT: return parse_int("--context", arg, &o->context);
    case OPT_SEED: return parse_u64("--seed", arg, &o->seed);
    case OPT_BIGRAM: {
        char *end;
        errno = 0;
        o->bigram = strtof(arg, &end);
        if (errno || end == arg || *end) return bad_flag(": not a number", "--bigram", arg);
        return 0;
    }
    case OPT_TYPE: {
        int t = shardlm_dtype_parse(arg);
        if (t < 0) return bad_flag(": unknown type (see `shardlm synth --help`)", "--type", arg);
        o->type = (uint32_t)t;
        return 0;
    }
    default: return synth_opt_arch(c, arg, o);
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
        {"bigram", required_argument, 0, OPT_BIGRAM},
        {"arch", required_argument, 0, OPT_ARCH},   {"head-dim", required_argument, 0, OPT_HEAD_DIM},
        {"rope-scaling", required_argument, 0, OPT_ROPE_SCALING},
        {"rope-factor", required_argument, 0, OPT_ROPE_FACTOR}, {"rope-base", required_argument, 0, OPT_ROPE_BASE},
        {"biases", required_argument, 0, OPT_BIASES}, {"tie-embeddings", no_argument, 0, OPT_TIE},
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
    int vocab = o.vocab;
    if (o.vocab_path) shardlm_synth_vocab_size(&o, &vocab);
    printf("wrote %s: %s dim %d, %d layers, %d heads (%d kv), ffn %d, vocab %d, %s, seed %llu in %.2f s\n", out,
           shardlm_arch_name(o.arch), o.dim, o.layers, o.heads, o.kv_heads, o.ffn, vocab,
           shardlm_dtype_name(o.type), (unsigned long long)o.seed, shardlm_now_s() - t0);
    return 0;
}
