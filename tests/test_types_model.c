/* test_types_model.c - the tensor types through the GGUF reader, `shardlm
 * info`, the shard loader and the forward pass: files with types shardlm
 * cannot compute with are described by info and refused by the loader by
 * tensor and type name; a file mixing 32- and 256-value blocks splits its
 * FFN in whole super-blocks; and a synthetic model of every new type
 * is sharded on block boundaries (the shard sizes say so exactly, F32
 * where a slice would cut a block) and generates the same text at world
 * sizes 1, 2 and 4 with logits within a stated bound. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_kernels.h"
#include "shardlm_model.h"
#include "test_util.h"

/* ---- a small llama file with chosen tensor types ---- */

#define DIM 256
#define FFN 768
#define LAYERS 2
#define VOCAB 300

typedef struct {
    const char *name;
    uint32_t type;
} type_override;

typedef struct {
    int n;
    uint32_t type[3 + 9 * LAYERS];
    uint64_t ne[3 + 9 * LAYERS][2];
} model_spec;

/* Random rows quantised to the type; random bytes for types shardlm cannot
 * quantise (their contents do not matter: only their layout is read). */
static int fill(void *ctx, uint64_t index, void *dst, uint64_t nbytes)
{
    const model_spec *s = ctx;
    uint32_t t = s->type[index];
    uint64_t cols = s->ne[index][0], rows = s->ne[index][1] ? s->ne[index][1] : 1;
    if (!shardlm_dtype_supported(t)) {
        for (uint64_t k = 0; k < nbytes; k++) ((uint8_t *)dst)[k] = (uint8_t)(k * 131 + 7);
        return 0;
    }
    float *row = malloc(cols * sizeof *row);
    size_t rb = shardlm_dtype_row_bytes(t, cols);
    for (uint64_t r = 0; r < rows; r++) {
        for (uint64_t c = 0; c < cols; c++) row[c] = s->ne[index][1] ? tu_frand() * 0.06f : 1.0f;
        shardlm_quant_row((shardlm_dtype)t, row, (uint8_t *)dst + r * rb, cols);
    }
    free(row);
    return 0;
}

static void add(shardlm_gguf_writer *w, model_spec *s, const char *name, uint64_t cols, uint64_t rows, uint32_t dflt,
                const type_override *ov)
{
    uint32_t t = rows ? dflt : SHARDLM_DT_F32;
    for (; ov && ov->name; ov++)
        if (!strcmp(ov->name, name)) t = ov->type;
    uint64_t ne[2] = {cols, rows};
    shardlm_gguf_writer_tensor(w, name, t, rows ? 2 : 1, ne);
    s->type[s->n] = t;
    s->ne[s->n][0] = cols;
    s->ne[s->n][1] = rows;
    s->n++;
}

/* Writes PATH (in the test's scratch dir): llama metadata (no tokenizer;
 * the loader takes the vocabulary from token_embd), weights of type dflt,
 * norms F32, except the overrides (NULL-name terminated). */
static const char *write_model(const char *file, uint32_t dflt, const type_override *ov)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tu_tmpdir(), file);
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(32);
    cr_assert(w);
    shardlm_gguf_writer_str(w, "general.architecture", "llama");
    shardlm_gguf_writer_u32(w, "llama.embedding_length", DIM);
    shardlm_gguf_writer_u32(w, "llama.block_count", LAYERS);
    shardlm_gguf_writer_u32(w, "llama.feed_forward_length", FFN);
    shardlm_gguf_writer_u32(w, "llama.attention.head_count", 8);
    shardlm_gguf_writer_u32(w, "llama.attention.head_count_kv", 4);
    model_spec s = {0};
    add(w, &s, "token_embd.weight", DIM, VOCAB, dflt, ov);
    for (int l = 0; l < LAYERS; l++) {
        static const char *const names[9] = {"attn_norm", "attn_q", "attn_k",  "attn_v",  "attn_output",
                                             "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
        const uint64_t shape[9][2] = {{DIM, 0},   {DIM, DIM}, {DIM, DIM / 2}, {DIM, DIM / 2}, {DIM, DIM},
                                      {DIM, 0},   {DIM, FFN}, {DIM, FFN},     {FFN, DIM}};
        for (int k = 0; k < 9; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, names[k]);
            add(w, &s, name, shape[k][0], shape[k][1], dflt, ov);
        }
    }
    add(w, &s, "output_norm.weight", DIM, 0, dflt, ov);
    add(w, &s, "output.weight", DIM, VOCAB, dflt, ov);
    cr_assert_eq(shardlm_gguf_writer_write(w, path, fill, &s), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    return path;
}

/* shardlm_model_load(world, rank) must fail with exactly want (after "PATH: "). */
static void expect_load_error(const char *path, const char *want)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK, "the reader accepts it: %s", shardlm_err_get());
    shardlm_model *m = NULL;
    cr_assert_eq(shardlm_model_load(g, 2, 1, NULL, &m), SHARDLM_EINPUT);
    cr_assert_null(m);
    char full[1024];
    snprintf(full, sizeof full, "%s: %s", path, want);
    cr_assert_str_eq(shardlm_err_get(), full);
    shardlm_gguf_close(g);
}

#define SUPPORTED "f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, bf16"

Test(types_model, loader_names_tensor_and_type)
{
    type_override down[] = {{"blk.0.ffn_down.weight", 16}, {NULL, 0}}; /* iq2_xxs */
    expect_load_error(write_model("iq2.gguf", SHARDLM_DT_Q8_0, down),
                      "tensor 'blk.0.ffn_down.weight' has type iq2_xxs, which shardlm cannot compute with "
                      "(supported: " SUPPORTED ")");
    type_override q[] = {{"blk.1.attn_q.weight", 34}, {NULL, 0}}; /* tq1_0 */
    expect_load_error(write_model("tq1.gguf", SHARDLM_DT_Q4_1, q),
                      "tensor 'blk.1.attn_q.weight' has type tq1_0, which shardlm cannot compute with "
                      "(supported: " SUPPORTED ")");
    type_override norm[] = {{"blk.0.attn_norm.weight", 24}, {NULL, 0}}; /* i8 */
    expect_load_error(write_model("i8.gguf", SHARDLM_DT_Q5_K, norm),
                      "tensor 'blk.0.attn_norm.weight' has type i8, which shardlm cannot compute with "
                      "(supported: " SUPPORTED ")");
}

Test(types_model, info_lists_and_marks_unsupported_types)
{
    type_override ov[] = {{"blk.0.ffn_down.weight", 16}, {"blk.1.attn_k.weight", 39}, {NULL, 0}}; /* iq2_xxs, mxfp4 */
    const char *path = write_model("mixed.gguf", SHARDLM_DT_Q5_0, ov);
    char *argv[] = {(char *)tu_bin(), "info", (char *)path, NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "%s", r.err);
    const char *want[] = {
        /* 768 x 256 iq2_xxs: 3 blocks of 66 bytes per row */
        "  blk.0.ffn_down.weight            iq2_xxs [768, 256]                      50688       460352  "
        "(type not computable)\n",
        "  blk.1.attn_k.weight              mxfp4   [256, 128]                      17408       557120  "
        "(type not computable)\n",
        "  blk.0.attn_q.weight              q5_0    [256, 256]                      45056        53824\n",
        "2 tensors with a type shardlm cannot compute with: generate, serve and bench refuse this file "
        "(supported: " SUPPORTED ")\n"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(r.out, want[i]), "info lacks '%s':\n%s", want[i], r.out);
    /* Exactly the two are marked. */
    int marks = 0;
    for (const char *p = r.out; (p = strstr(p, "(type not computable)")); p++) marks++;
    cr_assert_eq(marks, 2, "%s", r.out);
    const char *line = strstr(r.out, "  blk.0.ffn_down.weight ");
    cr_assert(line && strstr(line, "(type not computable)") < strchr(line, '\n'), "%s", r.out);
    cr_assert_str_empty(r.err);
    tu_result_free(&r);
}

/* Layer 0's ffn_down is Q5_0 (blocks of 32), layer 1's Q6_K (256): the FFN
 * must split in 256s, or rank 0's slice of layer 1 would cut a super-block
 * (and be held as F32). */
Test(types_model, mixed_blocks_split_ffn_in_super_blocks)
{
    type_override ov[] = {{"blk.0.ffn_down.weight", SHARDLM_DT_Q5_0}, {"blk.1.ffn_down.weight", SHARDLM_DT_Q6_K},
                          {NULL, 0}};
    const char *path = write_model("mix.gguf", SHARDLM_DT_Q8_0, ov);
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK, "%s", shardlm_err_get());
    int covered = 0;
    for (int rank = 0; rank < 2; rank++) {
        shardlm_model *m;
        cr_assert_eq(shardlm_model_load(g, 2, rank, NULL, &m), SHARDLM_OK, "%s", shardlm_err_get());
        const shardlm_shard_plan *p = shardlm_model_plan(m);
        cr_assert(p->ffn0 % 256 == 0 && p->n_ffn % 256 == 0, "rank %d: ffn rows [%d, +%d)", rank, p->ffn0, p->n_ffn);
        cr_assert_eq(p->ffn0, covered);
        covered += p->n_ffn;
        shardlm_model_free(m);
    }
    cr_assert_eq(covered, FFN);
    shardlm_gguf_close(g);
}

/* ---- every new type end to end ---- */

static tu_result gen(const char *model, const char *ws, const char *logits)
{
    char *argv[] = {(char *)tu_bin(), "generate", "-m", (char *)model, "--temp", "0", "-n", "8", "-p", "One day",
                    "--world-size", (char *)ws, "--logits-out", (char *)logits, NULL};
    return tu_run(argv, NULL, 180);
}

static float *read_floats(const char *path, size_t *n)
{
    size_t len;
    char *b = tu_read_file(path, &len);
    cr_assert(b && len % 4 == 0 && len > 0, "%s: no logits", path);
    *n = len / 4;
    return (float *)b;
}

/* The sum over ranks of the shard bytes at world size w. */
static size_t shard_sum(shardlm_gguf *g, int w)
{
    size_t sum = 0;
    for (int r = 0; r < w; r++) {
        shardlm_model *m;
        cr_assert_eq(shardlm_model_load(g, w, r, NULL, &m), SHARDLM_OK, "%s", shardlm_err_get());
        sum += shardlm_model_shard_bytes(m);
        shardlm_model_free(m);
    }
    return sum;
}

/* dim 512, ffn 1024, 8 heads, 4 KV heads. At world size 2 every
 * row-parallel slice (attn_output 256 columns, ffn_down 512) is whole
 * blocks for every type, so the ranks together hold exactly the file's
 * matrices, plus a copy of the replicated embedding and norms per extra
 * rank. At world size 4, attn_output's 128 columns cut the 256-value
 * super-blocks and those slices are held as F32 (4 bytes a value); the
 * 32-value types stay whole blocks. */
static void check_shard_bytes(const char *model, int k256)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(model, &g), SHARDLM_OK, "%s", shardlm_err_get());
    size_t one = shard_sum(g, 1);
    size_t repl = shardlm_gguf_find_tensor(g, "token_embd.weight")->nbytes + 4 * 512 * (2 * 2 + 1);
    size_t fallback = 0;
    for (int l = 0; l < 2; l++) {
        char n[64];
        snprintf(n, sizeof n, "blk.%d.attn_output.weight", l);
        fallback += 4 * 512 * 512 - shardlm_gguf_find_tensor(g, n)->nbytes;
    }
    cr_assert_eq(shard_sum(g, 2), one + repl, "world size 2 holds more than the blocks");
    cr_assert_eq(shard_sum(g, 4), one + 3 * repl + (k256 ? fallback : 0));
    shardlm_gguf_close(g);
}

/* Logits at world sizes 2 and 4 against world size 1: the partial sums
 * of the row-parallel products are added in another order, and a tiny
 * change in an activation can move its 8-bit rounding (or a block's amax)
 * downstream, so logits of any 8-bit-activation type move by up to ~1-2%
 * between world sizes (tests/test_quant_k.c says the same of Q4_K), as do
 * those of the F32 slices at world size 4: within 0.05 x max|logit|, which
 * a wrong slice or a misread block would break. Greedy text is equal at
 * every world size: the model is a bigram chain (synth --bigram, as the
 * llama.cpp harness uses), whose top-1 margins are several standard
 * deviations of the logits, far above those differences; plain random
 * weights have near ties that such differences flip. */
static void check_type_end_to_end(const char *type)
{
    char model[512], l[3][512];
    snprintf(model, sizeof model, "%s/%s.gguf", tu_tmpdir(), type);
    char *syn[] = {(char *)tu_bin(), "synth", "-o", model, "--type", (char *)type, "--dim", "512", "--ffn", "1024",
                   "--heads", "8", "--kv-heads", "4", "--layers", "2", "--vocab", "512", "--bigram", "8", NULL};
    tu_result s = tu_run(syn, NULL, 120);
    cr_assert_eq(s.exit_code, 0, "synth: %s", s.err);
    tu_result_free(&s);
    check_shard_bytes(model, shardlm_dtype_block_elems((uint32_t)shardlm_dtype_parse(type)) == 256);
    static const char *const ws[3] = {"1", "2", "4"};
    char *text[3];
    float *lg[3];
    size_t n[3];
    for (int k = 0; k < 3; k++) {
        snprintf(l[k], sizeof l[k], "%s/%s-w%s.bin", tu_tmpdir(), type, ws[k]);
        tu_result r = gen(model, ws[k], l[k]);
        cr_assert_eq(r.exit_code, 0, "%s world size %s: %s", type, ws[k], r.err);
        text[k] = strdup(r.out);
        tu_result_free(&r);
        lg[k] = read_floats(l[k], &n[k]);
    }
    float maxabs = 0.0f;
    for (size_t i = 0; i < n[0]; i++) maxabs = fmaxf(maxabs, fabsf(lg[0][i]));
    for (int k = 1; k < 3; k++) {
        cr_assert_str_eq(text[k], text[0], "%s: world size %s generates different text", type, ws[k]);
        cr_assert_eq(n[k], n[0]);
        float worst = 0.0f, tol = 0.05f * maxabs;
        for (size_t i = 0; i < n[0]; i++) worst = fmaxf(worst, fabsf(lg[k][i] - lg[0][i]));
        cr_log_info("%s world size %s: max |logit diff| %.3g (%.2g x max)", type, ws[k], worst, worst / maxabs);
        cr_assert_leq(worst, tol, "%s world size %s: max |logit diff| %g > %g", type, ws[k], worst, tol);
    }
    for (int k = 0; k < 3; k++) {
        free(text[k]);
        free(lg[k]);
    }
}

Test(types_model, q4_1_end_to_end, .timeout = 400) { check_type_end_to_end("q4_1"); }
Test(types_model, q5_0_end_to_end, .timeout = 400) { check_type_end_to_end("q5_0"); }
Test(types_model, q5_1_end_to_end, .timeout = 400) { check_type_end_to_end("q5_1"); }
Test(types_model, iq4_nl_end_to_end, .timeout = 400) { check_type_end_to_end("iq4_nl"); }
Test(types_model, q2_k_end_to_end, .timeout = 400) { check_type_end_to_end("q2_k"); }
Test(types_model, q3_k_end_to_end, .timeout = 400) { check_type_end_to_end("q3_k"); }
Test(types_model, q5_k_end_to_end, .timeout = 400) { check_type_end_to_end("q5_k"); }
Test(types_model, iq4_xs_end_to_end, .timeout = 400) { check_type_end_to_end("iq4_xs"); }
