/* test_synth.c - `shardlm synth`: byte-identical output for a seed, every
 * type loads with llama.cpp's tensor names and shapes, the vocabulary, the
 * --bigram chain, and bad options exiting 2 with a message naming the option. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_test_helpers.h"
#include "shardlm_model.h"

/* ---- synth ---- */

Test(gguf_synth, deterministic)
{
    size_t la, lb, lc;
    char *a = tu_read_file(small_synth("s1.gguf", "q4_0", "5"), &la);
    char *b = tu_read_file(small_synth("s2.gguf", "q4_0", "5"), &lb);
    char *c = tu_read_file(small_synth("s3.gguf", "q4_0", "6"), &lc);
    cr_assert(a && b && c);
    cr_assert(la == lb && memcmp(a, b, la) == 0, "same seed, same bytes");
    cr_assert(la == lc && memcmp(a, c, la) != 0, "another seed, other weights");
    free(a);
    free(b);
    free(c);
}

static void check_synth_file(const char *path, uint32_t type)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_gguf_n_tensors(g), 3 + 9);
    cr_assert_eq(u64_of(g, "llama.attention.head_count"), 4);
    cr_assert_eq(u64_of(g, "llama.attention.head_count_kv"), 2);
    cr_assert_eq(u64_of(g, "llama.rope.dimension_count"), 16);
    cr_assert_eq(u64_of(g, "llama.feed_forward_length"), 96);
    cr_assert_eq(u64_of(g, "general.file_type"), type == SHARDLM_DT_F32 ? 0 : type == SHARDLM_DT_F16 ? 1 : type == SHARDLM_DT_Q4_0 ? 2 : 7);
    assert_dims(g, "token_embd.weight", type, 64, 300);
    assert_dims(g, "blk.0.attn_q.weight", type, 64, 64);
    assert_dims(g, "blk.0.attn_k.weight", type, 64, 32);
    assert_dims(g, "blk.0.attn_v.weight", type, 64, 32);
    assert_dims(g, "blk.0.attn_output.weight", type, 64, 64);
    assert_dims(g, "blk.0.ffn_gate.weight", type, 64, 96);
    assert_dims(g, "blk.0.ffn_up.weight", type, 64, 96);
    assert_dims(g, "blk.0.ffn_down.weight", type, 96, 64);
    assert_dims(g, "blk.0.attn_norm.weight", SHARDLM_DT_F32, 64, 1);
    assert_dims(g, "blk.0.ffn_norm.weight", SHARDLM_DT_F32, 64, 1);
    assert_dims(g, "output_norm.weight", SHARDLM_DT_F32, 64, 1);
    assert_dims(g, "output.weight", type, 64, 300);
    float row[96];
    const shardlm_gguf_tensor *t = shardlm_gguf_find_tensor(g, "blk.0.ffn_norm.weight");
    shardlm_dequant_row(SHARDLM_DT_F32, t->data, row, 64);
    for (int i = 0; i < 64; i++) cr_assert_eq(row[i], 1.0f);
    t = shardlm_gguf_find_tensor(g, "blk.0.ffn_down.weight");
    size_t rb = shardlm_dtype_row_bytes(type, 96);
    double sum = 0, sq = 0;
    for (int r = 0; r < 64; r++) {
        shardlm_dequant_row((shardlm_dtype)type, t->data + r * rb, row, 96);
        for (int i = 0; i < 96; i++) {
            cr_assert_leq(fabsf(row[i]), 1.0f / sqrtf(96.0f) * 1.01f, "within +-1/sqrt(cols)");
            sum += row[i];
            sq += row[i] * row[i];
        }
    }
    double n = 64 * 96, var = sq / n;
    cr_assert_lt(fabs(sum / n), 0.01, "mean near 0");
    cr_assert(var > 0.7 / (3 * 96) && var < 1.3 / (3 * 96), "variance of U(-a, a) is a^2/3: %g", var);
    shardlm_gguf_close(g);
}

Test(gguf_synth, every_type_loads)
{
    check_synth_file(small_synth("f32.gguf", "f32", "1"), SHARDLM_DT_F32);
    check_synth_file(small_synth("f16.gguf", "f16", "1"), SHARDLM_DT_F16);
    check_synth_file(small_synth("q8.gguf", "q8_0", "1"), SHARDLM_DT_Q8_0);
    check_synth_file(small_synth("q4.gguf", "q4_0", "1"), SHARDLM_DT_Q4_0);
}

Test(gguf_synth, vocabulary)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(small_synth("voc.gguf", "f32", "1"), &g), SHARDLM_OK);
    shardlm_gguf_str s, m;
    cr_assert_eq(shardlm_gguf_get_str(g, "tokenizer.ggml.model", &m), 0);
    cr_assert(m.len == 5 && !memcmp(m.ptr, "llama", 5));
    int b;
    cr_assert_eq(shardlm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), 0);
    cr_assert_eq(b, 1);
    cr_assert_eq(u64_of(g, "tokenizer.ggml.bos_token_id"), 1);
    cr_assert_eq(u64_of(g, "tokenizer.ggml.eos_token_id"), 2);
    cr_assert_eq(u64_of(g, "tokenizer.ggml.unknown_token_id"), 0);
    const char *want[] = {"<unk>", "<s>", "</s>", "<0x00>"};
    const int types[] = {2, 3, 3, 6};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s), 0);
        cr_assert(s.len == strlen(want[i]) && !memcmp(s.ptr, want[i], s.len), "token %d", i);
        double t;
        cr_assert_eq(shardlm_gguf_arr_f64(g, "tokenizer.ggml.token_type", (uint64_t)i, &t), 0);
        cr_assert_eq(t, types[i]);
    }
    cr_assert_eq(shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", 258, &s), 0);
    cr_assert(s.len == 6 && !memcmp(s.ptr, "<0xFF>", 6));
    cr_assert_eq(shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", 259, &s), 0);
    cr_assert(s.len == 3 && !memcmp(s.ptr, "\xe2\x96\x81", 3), "first normal piece is the space marker");
    double prev = 1;
    for (uint64_t i = 259; i < 300; i++) {
        double sc, t;
        cr_assert_eq(shardlm_gguf_arr_f64(g, "tokenizer.ggml.scores", i, &sc), 0);
        cr_assert_lt(sc, prev, "scores descend");
        prev = sc;
        cr_assert_eq(shardlm_gguf_arr_f64(g, "tokenizer.ggml.token_type", i, &t), 0);
        cr_assert_eq(t, 1);
    }
    for (uint64_t i = 0; i < 300; i++) {
        shardlm_gguf_str a;
        shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", i, &a);
        cr_assert_gt(a.len, 0);
        for (uint64_t j = i + 1; j < 300; j++) {
            shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", j, &s);
            cr_assert(!(a.len == s.len && !memcmp(a.ptr, s.ptr, a.len)), "tokens %" PRIu64 " and %" PRIu64 " equal", i, j);
        }
    }
    shardlm_gguf_close(g);
}

/* synth with extra flags after a base set; must exit 2 naming `opt`. */
static void expect_synth_error(const char *opt, const char *a1, const char *v1, const char *a2, const char *v2)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bad-synth.gguf", tu_tmpdir());
    char *argv[] = {(char *)tu_bin(), "synth", "-o", path, (char *)a1, (char *)v1, (char *)a2, (char *)v2, NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 2, "%s %s: exit %d, %s", a1, v1, r.exit_code, r.err);
    cr_assert_eq(count_lines(r.err), 1, "%s", r.err);
    cr_assert(strncmp(r.err, "shardlm: ", 9) == 0, "%s", r.err);
    cr_assert(strstr(r.err, opt), "stderr should name %s: %s", opt, r.err);
    cr_assert_neq(access(path, F_OK), 0, "no file written");
    tu_result_free(&r);
}

/* --bigram 8: output row j is token_embd row sigma(j) divided by 8 (a power
 * of two: exact), sigma is one cycle through all 300 ids, and without the
 * flag the output rows are nothing of the kind. */
static float *synth_rows_of(const shardlm_gguf *g, const char *name, int rows, int cols)
{
    const shardlm_gguf_tensor *t = shardlm_gguf_find_tensor(g, name);
    cr_assert_not_null(t, "%s", name);
    float *v = malloc((size_t)rows * (size_t)cols * sizeof *v);
    for (int r = 0; r < rows; r++) shardlm_dequant_row(SHARDLM_DT_F32, t->data + (size_t)r * cols * 4, v + r * cols, cols);
    return v;
}

static int bigram_sigma(const char *path, int *sigma)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK, "%s", shardlm_err_get());
    float *e = synth_rows_of(g, "token_embd.weight", 300, 64), *o = synth_rows_of(g, "output.weight", 300, 64);
    int found = 0;
    for (int j = 0; j < 300; j++) {
        sigma[j] = -1;
        for (int k = 0; k < 300 && sigma[j] < 0; k++) {
            int same = 1;
            for (int c = 0; c < 64 && same; c++) same = o[j * 64 + c] * 8.0f == e[k * 64 + c];
            if (same) sigma[j] = k;
        }
        found += sigma[j] >= 0;
    }
    free(e);
    free(o);
    shardlm_gguf_close(g);
    return found;
}

Test(gguf_synth, bigram_chain)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bigram.gguf", tu_tmpdir());
    char *argv[] = {(char *)tu_bin(), "synth", "-o", path, "--dim", "64", "--layers", "1", "--heads", "4",
                    "--kv-heads", "2", "--ffn", "96", "--vocab", "300", "--bigram", "8", NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "%s", r.err);
    tu_result_free(&r);
    int sigma[300], seen[300] = {0};
    cr_assert_eq(bigram_sigma(path, sigma), 300, "every output row is an embedding row / 8");
    int j = 0, steps = 0;
    do {
        cr_assert(!seen[j], "sigma revisits %d after %d steps: not one cycle", j, steps);
        seen[j] = 1;
        j = sigma[j];
        steps++;
    } while (j != 0);
    cr_assert_eq(steps, 300, "sigma's cycle through 0 has %d ids, not all 300", steps);
    cr_assert_eq(bigram_sigma(small_synth("plain.gguf", "f32", "42"), sigma), 0, "without --bigram: no copies");
    expect_synth_error("--bigram -1 is out of range", "--bigram", "-1", "--seed", "1");
    expect_synth_error("--bigram x: not a number", "--bigram", "x", "--seed", "1");
}

Test(gguf_synth, bad_options)
{
    expect_synth_error("--heads 3 must divide --dim 64", "--dim", "64", "--heads", "3");
    expect_synth_error("--heads 64 must divide --dim 64 into an even head size", "--dim", "64", "--heads", "64");
    expect_synth_error("--kv-heads 3 must divide --heads 8", "--kv-heads", "3", "--heads", "8");
    expect_synth_error("--vocab 100 is out of range", "--vocab", "100", "--seed", "1");
    expect_synth_error("--dim 0 is out of range", "--dim", "0", "--seed", "1");
    expect_synth_error("--layers -1 is out of range", "--layers", "-1", "--seed", "1");
    expect_synth_error("--ffn (100)", "--type", "q4_0", "--ffn", "100");
    expect_synth_error("--type iq2_xxs is not supported (use one of f32, f16, q4_0, q4_1,", "--type", "iq2_xxs",
                       "--seed", "1");
    expect_synth_error("--type q9_k: unknown type", "--type", "q9_k", "--seed", "1");
    expect_synth_error("--type q5_0 needs --dim (48)", "--type", "q5_0", "--dim", "48");
    expect_synth_error("--dim abc: not an integer", "--dim", "abc", "--seed", "1");
    expect_synth_error("--seed -3: not a non-negative integer", "--seed", "-3", "--dim", "64");
    expect_synth_error("unknown option --bogus", "--bogus", "1", "--dim", "64");
    char *argv[] = {(char *)tu_bin(), "synth", "--dim", "64", NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "missing -o"), "%s", r.err);
    tu_result_free(&r);
    r = run3("synth", "--help", NULL);
    cr_assert_eq(r.exit_code, 0);
    cr_assert(strstr(r.out, "--kv-heads K") && strstr(r.out, "(default 768)"), "%s", r.out);
    tu_result_free(&r);
}

Test(gguf_synth, defaults_and_output_error)
{
    char path[512];
    snprintf(path, sizeof path, "%s/default.gguf", tu_tmpdir());
    tu_result r = run3("synth", "-o", path);
    cr_assert_eq(r.exit_code, 0, "%s", r.err);
    tu_result_free(&r);
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK);
    cr_assert_eq(u64_of(g, "llama.embedding_length"), 256);
    cr_assert_eq(u64_of(g, "llama.block_count"), 4);
    cr_assert_eq(u64_of(g, "llama.attention.head_count"), 8);
    cr_assert_eq(u64_of(g, "llama.attention.head_count_kv"), 4);
    cr_assert_eq(u64_of(g, "llama.feed_forward_length"), 768);
    cr_assert_eq(u64_of(g, "llama.context_length"), 2048);
    assert_dims(g, "token_embd.weight", SHARDLM_DT_F32, 256, 512);
    shardlm_gguf_close(g);
    r = run3("synth", "-o", "/nonexistent-dir/x.gguf");
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "shardlm: /nonexistent-dir/x.gguf: cannot create"), "%s", r.err);
    tu_result_free(&r);
}

/* ---- architectures (--arch, --head-dim, --biases, --rope-scaling, --tie-embeddings, --vocab FILE) ---- */

static const char *arch_synth(const char *name, const char *a1, const char *a2, const char *a3, const char *a4,
                              const char *a5, const char *a6)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tu_tmpdir(), name);
    char *argv[32] = {(char *)tu_bin(), "synth", "-o", path, "--dim", "64", "--layers", "2", "--heads", "4",
                      "--kv-heads", "2", "--ffn", "96", "--vocab", "300"};
    const char *extra[] = {a1, a2, a3, a4, a5, a6};
    int n = 16;
    for (int i = 0; i < 6 && extra[i]; i++) argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    tu_result r = tu_run(argv, NULL, 120);
    cr_assert_eq(r.exit_code, 0, "synth %s: %s", name, r.err);
    tu_result_free(&r);
    return path;
}

static void assert_str(const shardlm_gguf *g, const char *key, const char *want)
{
    shardlm_gguf_str s;
    cr_assert_eq(shardlm_gguf_get_str(g, key, &s), 0, "no %s", key);
    cr_assert(s.len == strlen(want) && !memcmp(s.ptr, want, s.len), "%s is '%.*s', want '%s'", key, (int)s.len,
              s.ptr, want);
}

/* The file loads as a shard of 2 ranks (names, shapes and the architecture's rules). */
static void assert_loads(const char *path)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), 0, "%s", shardlm_err_get());
    shardlm_model *m;
    cr_assert_eq(shardlm_model_load(g, 2, 1, NULL, &m), 0, "%s: %s", path, shardlm_err_get());
    shardlm_model_free(m);
    shardlm_gguf_close(g);
}

Test(gguf_synth, qwen2_has_qkv_biases_and_llama_s_keys_under_its_name)
{
    shardlm_gguf *g;
    const char *p = arch_synth("q2.gguf", "--arch", "qwen2", NULL, NULL, NULL, NULL);
    cr_assert_eq(shardlm_gguf_open(p, &g), 0);
    assert_str(g, "general.architecture", "qwen2");
    cr_assert_eq(u64_of(g, "qwen2.attention.head_count"), 4);
    cr_assert_eq(u64_of(g, "qwen2.embedding_length"), 64);
    cr_assert_lt(shardlm_gguf_find_kv(g, "llama.embedding_length"), 0);
    cr_assert_lt(shardlm_gguf_find_kv(g, "qwen2.attention.key_length"), 0, "only with --head-dim");
    assert_dims(g, "blk.1.attn_q.bias", SHARDLM_DT_F32, 64, 1);
    assert_dims(g, "blk.1.attn_k.bias", SHARDLM_DT_F32, 32, 1);
    assert_dims(g, "blk.1.attn_v.bias", SHARDLM_DT_F32, 32, 1);
    cr_assert_null(shardlm_gguf_find_tensor(g, "blk.0.attn_output.bias"), "llama.cpp's qwen2 has none");
    cr_assert_null(shardlm_gguf_find_tensor(g, "output.bias"), "only with --biases all");
    const shardlm_gguf_tensor *t = shardlm_gguf_find_tensor(g, "blk.0.attn_q.bias");
    float b[64];
    memcpy(b, t->data, sizeof b);
    float lo = 1, hi = -1;
    for (int i = 0; i < 64; i++) lo = fminf(lo, b[i]), hi = fmaxf(hi, b[i]);
    cr_assert(lo >= -0.5f && hi < 0.5f && hi - lo > 0.5f, "biases uniform in +-0.5: [%g, %g]", lo, hi);
    cr_assert_eq(shardlm_gguf_n_tensors(g), 3 + 2 * 12);
    shardlm_gguf_close(g);
    assert_loads(p);
    p = arch_synth("q2all.gguf", "--arch", "qwen2", "--biases", "all", "--tie-embeddings", NULL);
    cr_assert_eq(shardlm_gguf_open(p, &g), 0);
    assert_dims(g, "output.bias", SHARDLM_DT_F32, 300, 1);
    cr_assert_null(shardlm_gguf_find_tensor(g, "output.weight"), "tied");
    shardlm_gguf_close(g);
    assert_loads(p);
}

Test(gguf_synth, qwen3_has_head_norms_and_its_own_head_size)
{
    shardlm_gguf *g;
    const char *p = arch_synth("q3.gguf", "--arch", "qwen3", "--head-dim", "32", NULL, NULL);
    cr_assert_eq(shardlm_gguf_open(p, &g), 0);
    assert_str(g, "general.architecture", "qwen3");
    cr_assert_eq(u64_of(g, "qwen3.attention.key_length"), 32);
    cr_assert_eq(u64_of(g, "qwen3.attention.value_length"), 32);
    cr_assert_eq(u64_of(g, "qwen3.rope.dimension_count"), 32);
    assert_dims(g, "blk.0.attn_q.weight", SHARDLM_DT_F32, 64, 128);
    assert_dims(g, "blk.0.attn_k.weight", SHARDLM_DT_F32, 64, 64);
    assert_dims(g, "blk.0.attn_output.weight", SHARDLM_DT_F32, 128, 64);
    assert_dims(g, "blk.0.attn_q_norm.weight", SHARDLM_DT_F32, 32, 1);
    assert_dims(g, "blk.1.attn_k_norm.weight", SHARDLM_DT_F32, 32, 1);
    cr_assert_null(shardlm_gguf_find_tensor(g, "blk.0.attn_q.bias"), "qwen3 has no biases");
    float w[32];
    memcpy(w, shardlm_gguf_find_tensor(g, "blk.0.attn_q_norm.weight")->data, sizeof w);
    for (int i = 0; i < 32; i++) cr_assert(w[i] >= 0.5f && w[i] < 1.5f, "q_norm[%d] = %g", i, (double)w[i]);
    shardlm_gguf_close(g);
    assert_loads(p);
}

/* rope_freqs.weight holds what shardlm_rope_llama3_factors gives (itself
 * checked against the converter's formula in test_arch.c); the matrices
 * are those of the file without scaling, seed for seed. */
Test(gguf_synth, llama3_rope_freqs_and_tied_output)
{
    shardlm_gguf *g, *plain;
    const char *p = arch_synth("l3.gguf", "--rope-scaling", "llama3", "--rope-base", "500000", "--tie-embeddings",
                               NULL);
    char path[512];
    snprintf(path, sizeof path, "%s", p);
    cr_assert_eq(shardlm_gguf_open(path, &g), 0);
    cr_assert_eq(shardlm_gguf_open(arch_synth("l3p.gguf", "--rope-base", "500000", "--tie-embeddings", NULL, NULL,
                                              NULL), &plain), 0);
    assert_dims(g, "rope_freqs.weight", SHARDLM_DT_F32, 8, 1);
    cr_assert_null(shardlm_gguf_find_tensor(g, "output.weight"));
    cr_assert_lt(shardlm_gguf_find_kv(g, "llama.rope.scaling.type"), 0, "llama.cpp's converter writes no keys for llama3");
    float f[8], want[8];
    memcpy(f, shardlm_gguf_find_tensor(g, "rope_freqs.weight")->data, sizeof f);
    shardlm_rope_llama3_factors(want, 16, 500000.0f, 8.0f, 1.0f, 4.0f, 8192.0f);
    for (int i = 0; i < 8; i++) cr_assert_eq(f[i], want[i], "factor %d", i);
    const shardlm_gguf_tensor *a = shardlm_gguf_find_tensor(g, "blk.1.ffn_down.weight"),
                              *b = shardlm_gguf_find_tensor(plain, "blk.1.ffn_down.weight");
    cr_assert(a->nbytes == b->nbytes && !memcmp(a->data, b->data, a->nbytes), "same seed, same matrices");
    shardlm_gguf_close(plain);
    shardlm_gguf_close(g);
    assert_loads(path);
    p = arch_synth("lin.gguf", "--rope-scaling", "linear", "--rope-factor", "4", NULL, NULL);
    cr_assert_eq(shardlm_gguf_open(p, &g), 0);
    shardlm_gguf_str s;
    cr_assert_eq(shardlm_gguf_get_str(g, "llama.rope.scaling.type", &s), 0);
    cr_assert(s.len == 6 && !memcmp(s.ptr, "linear", 6));
    double factor;
    cr_assert_eq(shardlm_gguf_get_f64(g, "llama.rope.scaling.factor", &factor), 0);
    cr_assert_eq(factor, 4.0);
    shardlm_hparams hp;
    cr_assert_eq(shardlm_hparams_read(g, &hp), 0, "%s", shardlm_err_get());
    cr_assert_eq(hp.rope_freq_scale, 0.25f);
    shardlm_gguf_close(g);
}

/* Every tokenizer.* entry of the vocabulary file, byte for byte; the size
 * follows its token count. The BPE file is checked for its content only
 * (shardlm's tokenizer takes SentencePiece for now). */
static void assert_vocab_copied(const char *vocab_rel, const char *arch)
{
    const char *vpath = tu_shared(vocab_rel);
    char vp[512];
    snprintf(vp, sizeof vp, "%s", vpath);
    const char *p = arch_synth("v.gguf", "--arch", arch, "--vocab", vp, "--tie-embeddings", NULL);
    shardlm_gguf *g, *v;
    cr_assert_eq(shardlm_gguf_open(p, &g), 0, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_gguf_open(vp, &v), 0);
    int copied = 0;
    for (uint64_t i = 0; i < shardlm_gguf_n_kv(v); i++) {
        shardlm_gguf_str k = shardlm_gguf_kv_key(v, i);
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        int64_t j = shardlm_gguf_find_kv(g, key);
        if (strncmp(key, "tokenizer.", 10)) continue;
        cr_assert_geq(j, 0, "%s: %s not copied", vocab_rel, key);
        char a[512], b[512];
        shardlm_gguf_kv_format(v, i, a, sizeof a);
        shardlm_gguf_kv_format(g, (uint64_t)j, b, sizeof b);
        cr_assert_str_eq(a, b, "%s", key);
        copied++;
    }
    cr_assert_geq(copied, 5);
    shardlm_gguf_vtype et;
    uint64_t n, m;
    const void *d;
    cr_assert_eq(shardlm_gguf_get_arr(v, "tokenizer.ggml.tokens", &et, &n, &d), 0);
    cr_assert_eq(shardlm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &m, &d), 0);
    cr_assert_eq(n, m);
    for (uint64_t i = 0; i < n; i += n / 97 + 1) {
        shardlm_gguf_str x, y;
        cr_assert_eq(shardlm_gguf_arr_str(v, "tokenizer.ggml.tokens", i, &x), 0);
        cr_assert_eq(shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", i, &y), 0);
        cr_assert(x.len == y.len && !memcmp(x.ptr, y.ptr, x.len), "token %" PRIu64, i);
    }
    assert_dims(g, "token_embd.weight", SHARDLM_DT_F32, 64, n);
    shardlm_gguf_close(v);
    shardlm_gguf_close(g);
    assert_loads(p);
}

Test(gguf_synth, vocab_file_is_copied) { assert_vocab_copied("models/vocab/ggml-vocab-phi-3.gguf", "llama"); }
Test(gguf_synth, bpe_vocab_file_is_copied) { assert_vocab_copied("models/vocab/ggml-vocab-qwen2.gguf", "qwen2"); }

Test(gguf_synth, architecture_options_refused)
{
    expect_synth_error("--arch gemma2: unknown architecture (use llama, qwen2, qwen3)", "--arch", "gemma2", "--seed",
                       "1");
    expect_synth_error("--head-dim 64: qwen2 has no head size of its own", "--arch", "qwen2", "--head-dim", "64");
    expect_synth_error("--head-dim 33 must be even", "--head-dim", "33", "--seed", "1");
    expect_synth_error("--rope-scaling llama3: rope_freqs.weight belongs to the llama architecture, not qwen3",
                       "--arch", "qwen3", "--rope-scaling", "llama3");
    expect_synth_error("--rope-scaling yarn: unknown value (use none, llama3 or linear)", "--rope-scaling", "yarn",
                       "--seed", "1");
    expect_synth_error("--biases some: unknown value (use default, none, qkv or all)", "--biases", "some", "--seed",
                       "1");
    expect_synth_error("--rope-factor 0.5 must be in 1..10000", "--rope-factor", "0.5", "--seed", "1");
    expect_synth_error("--vocab: /nonexistent/v.gguf", "--vocab", "/nonexistent/v.gguf", "--seed", "1");
    expect_synth_error("needs --dim (256), --ffn (768) and heads x head size (48)", "--type", "q8_0", "--head-dim",
                       "6");
}
