/* cmd_info.c - `shardlm info MODEL`: a GGUF file's header, architecture
 * hyperparameters, every metadata entry, the tensor table and a tokenizer
 * summary, in plain text for humans (and for tests to grep). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_kernels.h"
#include "shardlm_model.h"
#include "shardlm_text.h"

static void info_usage(FILE *f)
{
    fputs("usage: shardlm info MODEL.gguf   (or: shardlm info -m MODEL.gguf)\n"
          "\n"
          "Prints the GGUF header (version, alignment, size, fingerprint), the\n"
          "architecture's hyperparameters and whether shardlm runs it (and if not,\n"
          "why), every metadata key with its type and value, the tensor table\n"
          "(marking tensors whose type shardlm cannot compute with) and a\n"
          "tokenizer summary (model, pre-tokenizer, special ids, whether BOS/EOS are\n"
          "added, the end-of-generation ids). Files shardlm cannot run are described\n"
          "all the same.\n"
          "\n"
          "  -m, --model PATH   the GGUF file (as every other command takes it)\n"
          "  -h, --help         show this help\n",
          f);
}

static void print_header(const shardlm_gguf *g)
{
    printf("file:          %s\n", shardlm_gguf_path(g));
    printf("GGUF version:  %u\n", shardlm_gguf_version(g));
    printf("alignment:     %" PRIu64 "\n", shardlm_gguf_alignment(g));
    printf("size:          %" PRIu64 " bytes\n", shardlm_gguf_file_size(g));
    printf("fingerprint:   %016" PRIx64 "\n", shardlm_gguf_fingerprint(g));
    printf("metadata keys: %" PRIu64 "\n", shardlm_gguf_n_kv(g));
    printf("tensors:       %" PRIu64 "\n", shardlm_gguf_n_tensors(g));
}

/* One hyperparameter: its value, or the default noted when absent. */
static void print_hparam(const shardlm_gguf *g, const char *arch, const char *label, const char *key,
                         const char *dflt)
{
    char full[160];
    snprintf(full, sizeof full, "%s.%s", arch, key);
    double v;
    int rc = shardlm_gguf_get_f64(g, full, &v);
    if (rc == SHARDLM_OK) printf("  %-21s %g\n", label, v);
    else if (rc == 1) printf("  %-21s %s\n", label, dflt);
    else printf("  %-21s (invalid: %s)\n", label, shardlm_err_get());
}

static void print_hparams(const shardlm_gguf *g)
{
    char arch[64] = "(absent)";
    shardlm_gguf_str s;
    if (shardlm_gguf_get_str(g, "general.architecture", &s) == SHARDLM_OK)
        snprintf(arch, sizeof arch, "%.*s", (int)(s.len < 63 ? s.len : 63), s.ptr);
    printf("\nhyperparameters:\n  %-21s %s\n", "architecture", arch);
    print_hparam(g, arch, "context length", "context_length", "(absent)");
    print_hparam(g, arch, "embedding length", "embedding_length", "(absent)");
    print_hparam(g, arch, "block count", "block_count", "(absent)");
    print_hparam(g, arch, "FFN length", "feed_forward_length", "(absent)");
    print_hparam(g, arch, "head count", "attention.head_count", "(absent)");
    print_hparam(g, arch, "KV head count", "attention.head_count_kv", "(absent: default = head count)");
    print_hparam(g, arch, "RMS eps", "attention.layer_norm_rms_epsilon", "(absent: default 1e-05)");
    print_hparam(g, arch, "RoPE freq base", "rope.freq_base", "(absent: default 10000)");
    print_hparam(g, arch, "RoPE dimension count", "rope.dimension_count", "(absent: default = head size)");
    print_hparam(g, arch, "key length", "attention.key_length", "(absent: default = embedding length / head count)");
    print_hparam(g, arch, "value length", "attention.value_length", "(absent: default = key length)");
    print_hparam(g, arch, "RoPE scaling factor", "rope.scaling.factor", "(absent: no scaling)");
    char key[160];
    shardlm_gguf_str t;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    if (shardlm_gguf_get_str(g, key, &t) == SHARDLM_OK)
        printf("  %-21s %.*s\n", "RoPE scaling type", (int)(t.len < 32 ? t.len : 32), t.ptr);
    if (shardlm_gguf_find_tensor(g, "rope_freqs.weight")) printf("  %-21s %s\n", "RoPE freq factors", "rope_freqs.weight");
    /* Whether shardlm runs it, and if not, why: the loader's own message. */
    shardlm_hparams hp;
    if (shardlm_hparams_read(g, &hp) == SHARDLM_OK)
        printf("  %-21s yes (%s, %s RoPE, head size %d)\n", "shardlm runs it", shardlm_arch_name(hp.arch),
               hp.rope_neox ? "NeoX" : "interleaved-pair", hp.head_dim);
    else
        printf("  %-21s no: %s\n", "shardlm runs it", shardlm_err_get());
}

static void print_metadata(const shardlm_gguf *g)
{
    printf("\nmetadata:\n");
    for (uint64_t i = 0; i < shardlm_gguf_n_kv(g); i++) {
        shardlm_gguf_str k = shardlm_gguf_kv_key(g, i);
        char val[512];
        shardlm_gguf_kv_format(g, i, val, sizeof val);
        shardlm_gguf_vtype t = shardlm_gguf_kv_type(g, i);
        /* Arrays carry their element type and count in the formatted value. */
        printf("  %-40.*s %-8s %s\n", (int)(k.len < 200 ? k.len : 200), k.ptr,
               t == SHARDLM_GGUF_ARRAY ? "array" : shardlm_gguf_vtype_name(t), val);
    }
}

static void print_tensors(const shardlm_gguf *g)
{
    uint64_t n_bad = 0;
    printf("\ntensors:\n  %-32s %-7s %-24s %12s %12s\n", "name", "type", "dims", "bytes", "offset");
    for (uint64_t i = 0; i < shardlm_gguf_n_tensors(g); i++) {
        const shardlm_gguf_tensor *t = shardlm_gguf_tensor_at(g, i);
        char dims[96];
        size_t n = 0;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n += (size_t)snprintf(dims + n, sizeof dims - n, "%s%" PRIu64, d ? ", " : "[", t->ne[d]);
        snprintf(dims + n, sizeof dims - n, "]");
        int ok = shardlm_dtype_supported(t->type);
        printf("  %-32s %-7s %-24s %12" PRIu64 " %12" PRIu64 "%s\n", t->name, shardlm_dtype_name(t->type), dims,
               t->nbytes, t->offset, ok ? "" : "  (type not computable)");
        if (!ok) n_bad++;
    }
    if (n_bad)
        printf("  %" PRIu64 " tensor%s with a type shardlm cannot compute with: generate, serve and bench "
               "refuse this file (supported: %s)\n",
               n_bad, n_bad == 1 ? "" : "s", shardlm_dtype_supported_names());
}

static void print_piece(shardlm_gguf_str s)
{
    putchar('\'');
    for (uint64_t i = 0; i < s.len && i < 32; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < 32 || c == 127) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('\'');
}

static void print_token_id(const shardlm_gguf *g, const char *label, const char *key)
{
    uint64_t v;
    int rc = shardlm_gguf_get_u64(g, key, &v);
    if (rc == SHARDLM_OK) printf("  %-11s %" PRIu64 "\n", label, v);
    else printf("  %-11s (absent)\n", label);
}

/* What the tokenizer makes of the file: its pre-tokenizer, the tokens it
 * adds, and the ids that end generation; or why it cannot load it. */
static void print_tokenizer_use(const shardlm_gguf *g)
{
    shardlm_tokenizer *t;
    if (shardlm_tokenizer_from_gguf(g, &t) != SHARDLM_OK) {
        printf("  %-11s %s\n", "error", shardlm_err_get());
        return;
    }
    int add = shardlm_tokenizer_add_special(t);
    printf("  %-11s %s\n  %-11s %s\n  %-11s %s\n", "pre", shardlm_tokenizer_pre(t), "add bos",
           add & SHARDLM_TOK_ADD_BOS ? "yes" : "no", "add eos", add & SHARDLM_TOK_ADD_EOS ? "yes" : "no");
    int32_t eog[64];
    size_t n = shardlm_tokenizer_eog(t, eog, 64);
    printf("  %-11s", "eog ids");
    for (size_t i = 0; i < n && i < 64; i++) {
        size_t len;
        const char *p = shardlm_tokenizer_piece(t, eog[i], &len);
        printf("%s %d ", i ? "," : "", (int)eog[i]);
        print_piece((shardlm_gguf_str){p, len});
    }
    printf("%s\n", n > 64 ? ", ..." : n == 0 ? " (none)" : "");
    shardlm_tokenizer_free(t);
}

static void print_tokenizer(const shardlm_gguf *g)
{
    shardlm_gguf_str model;
    printf("\ntokenizer:\n");
    if (shardlm_gguf_get_str(g, "tokenizer.ggml.model", &model) != SHARDLM_OK) {
        printf("  (none)\n");
        return;
    }
    shardlm_gguf_vtype et;
    uint64_t n = 0;
    const void *data;
    if (shardlm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data) != SHARDLM_OK ||
        et != SHARDLM_GGUF_STRING)
        n = 0;
    printf("  %-11s %.*s\n  %-11s %" PRIu64 "\n", "model", (int)(model.len < 64 ? model.len : 64), model.ptr,
           "vocab size", n);
    print_token_id(g, "bos id", "tokenizer.ggml.bos_token_id");
    print_token_id(g, "eos id", "tokenizer.ggml.eos_token_id");
    print_token_id(g, "unk id", "tokenizer.ggml.unknown_token_id");
    print_tokenizer_use(g);
    /* The first few, then a few past the 259 specials and byte tokens. */
    static const uint64_t ids[] = {0, 1, 2, 3, 259, 260, 261, 300, 1000};
    printf("  examples:  ");
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        shardlm_gguf_str s;
        if (ids[i] >= n || shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", ids[i], &s) != SHARDLM_OK) continue;
        printf("%s%" PRIu64 "=", i ? " " : "", ids[i]);
        print_piece(s);
    }
    printf("\n");
}

int shardlm_cmd_info(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, 0, 'h'}, {"model", required_argument, 0, 'm'},
                                             {0, 0, 0, 0}};
    opterr = 0;
    optind = 1;
    int c;
    const char *path = NULL;
    while ((c = getopt_long(argc, argv, ":hm:", longopts, NULL)) != -1) {
        if (c == 'h') {
            info_usage(stdout);
            return 0;
        }
        if (c == 'm' && !path) {
            path = optarg;
            continue;
        }
        if (c == 'm' || c == ':')
            fprintf(stderr, "shardlm info: %s (try 'shardlm info --help')\n",
                    c == 'm' ? "-m is given more than once" : "option -m needs a value (PATH)");
        else
            fprintf(stderr, "shardlm info: unknown option '%s' (try 'shardlm info --help')\n", argv[optind - 1]);
        return 2;
    }
    if (argc - optind != !path) {
        fprintf(stderr, "shardlm info: give exactly one MODEL.gguf, as -m MODEL or as the argument "
                "(try 'shardlm info --help')\n");
        return 2;
    }
    shardlm_gguf *g;
    int rc = shardlm_gguf_open(path ? path : argv[optind], &g);
    if (rc != SHARDLM_OK) {
        fprintf(stderr, "shardlm: %s\n", shardlm_err_get());
        return shardlm_exit_code(rc);
    }
    print_header(g);
    print_hparams(g);
    print_metadata(g);
    print_tensors(g);
    print_tokenizer(g);
    shardlm_gguf_close(g);
    return 0;
}
