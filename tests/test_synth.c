/* test_synth.c - `shardlm synth`: byte-identical output for a seed, every
 * type loads with llama.cpp's tensor names and shapes, the vocabulary, and
 * bad options exiting 2 with a message naming the option. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_test_helpers.h"

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
