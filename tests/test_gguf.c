/* test_gguf.c - the GGUF reader against corrupted files, the real model
 * files and `shardlm info`. Each corruption must make `shardlm info` exit 2
 * with one stderr line naming the file and the problem (and, in the
 * ASan/UBSan build, without any sanitizer report). */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_test_helpers.h"

/* ---- corrupted files through the CLI ---- */

Test(gguf_corrupt, empty_and_missing_files)
{
    blob f = {(uint8_t *)"", 0};
    expect_info_error(save(&f, 0, "empty.gguf"), "empty file");
    char missing[512];
    snprintf(missing, sizeof missing, "%s/no-such.gguf", tu_tmpdir());
    expect_info_error(missing, "cannot open");
}

Test(gguf_corrupt, header)
{
    blob f = load_base();
    expect_info_error(save(&f, 20, "short.gguf"), "truncated header");
    f.b[0] = 'X';
    expect_info_error(save(&f, f.len, "magic.gguf"), "bad magic");
    f.b[0] = 'G';
    wr32(&f, 4, 1);
    expect_info_error(save(&f, f.len, "v1.gguf"), "unsupported GGUF version 1 ");
    wr32(&f, 4, 99);
    expect_info_error(save(&f, f.len, "v99.gguf"), "unsupported GGUF version 99 ");
    wr32(&f, 4, 3);
    uint64_t nt = rd64(&f, 8), nkv = rd64(&f, 16);
    wr64(&f, 8, 1ull << 62);
    expect_info_error(save(&f, f.len, "ntensors.gguf"), "tensor count 4611686018427387904 is larger than the file");
    wr64(&f, 8, nt);
    wr64(&f, 16, UINT64_MAX);
    expect_info_error(save(&f, f.len, "nkv.gguf"), "metadata key count 18446744073709551615 is larger");
    wr64(&f, 16, nkv);
    free(f.b);
}

Test(gguf_corrupt, metadata)
{
    blob f = load_base();
    /* cut inside the characters of entry #17's key (bos_token_id, after the
     * vocabulary, so the header's counts still look plausible) */
    size_t bos = find_kv(&f, "tokenizer.ggml.bos_token_id") - strlen("tokenizer.ggml.bos_token_id") - 8;
    expect_info_error(save(&f, bos + 8 + 5, "key.gguf"), "truncated in the key of metadata entry #17");
    size_t name = find_kv(&f, "general.name");
    uint64_t len = rd64(&f, name + 4);
    wr64(&f, name + 4, 1ull << 40);
    expect_info_error(save(&f, f.len, "strlen.gguf"), "metadata key 'general.name': string length runs past end");
    wr64(&f, name + 4, len);
    wr32(&f, name, 77);
    expect_info_error(save(&f, f.len, "vtype.gguf"), "metadata key 'general.name': unknown value type 77");
    wr32(&f, name, 8);
    size_t sc = find_kv(&f, "tokenizer.ggml.scores");
    uint64_t n = rd64(&f, sc + 8);
    wr64(&f, sc + 8, 1ull << 62);
    expect_info_error(save(&f, f.len, "arrn.gguf"),
                      "metadata key 'tokenizer.ggml.scores': array of 4611686018427387904 float32 elements runs past");
    wr64(&f, sc + 8, n);
    size_t tok = find_kv(&f, "tokenizer.ggml.tokens");
    wr64(&f, tok + 8, 1ull << 61);
    expect_info_error(save(&f, f.len, "strarr.gguf"), "'tokenizer.ggml.tokens': array of 2305843009213693952 string");
    free(f.b);
}

Test(gguf_corrupt, tensor_table)
{
    blob f = load_base();
    size_t emb = find_tensor(&f, "token_embd.weight");
    expect_info_error(save(&f, t_ne(&f, emb) + 3, "table.gguf"), "tensor 'token_embd.weight': truncated tensor entry");
    wr32(&f, t_type(&f, emb), 99);
    expect_info_error(save(&f, f.len, "ttype.gguf"), "tensor 'token_embd.weight': unknown type id 99 (not a ggml type)");
    wr32(&f, t_type(&f, emb), 31);
    expect_info_error(save(&f, f.len, "removed.gguf"),
                      "tensor 'token_embd.weight': type q4_0_4_4 (id 31) was removed from ggml and its layout is not known");
    /* A type shardlm cannot compute with still has its sizes checked. */
    wr32(&f, t_type(&f, emb), 16);
    expect_info_error(save(&f, f.len, "iq2.gguf"), "ne[0]=64 is not a multiple of the block size 256 of iq2_xxs");
    wr32(&f, t_type(&f, emb), SHARDLM_DT_Q8_0);
    wr32(&f, t_ndims(&f, emb), 5);
    expect_info_error(save(&f, f.len, "ndims.gguf"), "tensor 'token_embd.weight': 5 dimensions");
    wr32(&f, t_ndims(&f, emb), 2);
    wr64(&f, t_ne(&f, emb), 1ull << 32);
    wr64(&f, t_ne(&f, emb) + 8, 1ull << 32);
    expect_info_error(save(&f, f.len, "neprod.gguf"), "tensor 'token_embd.weight': element count overflows");
    wr64(&f, t_ne(&f, emb), 63);
    wr64(&f, t_ne(&f, emb) + 8, 300);
    expect_info_error(save(&f, f.len, "block.gguf"), "ne[0]=63 is not a multiple of the block size 32 of q8_0");
    wr64(&f, t_ne(&f, emb), 64);
    size_t k = find_tensor(&f, "blk.0.attn_k.weight");
    cr_assert_eq(f.b[k + 8 + 11], 'k');
    f.b[k + 8 + 11] = 'q'; /* blk.0.attn_k -> blk.0.attn_q */
    expect_info_error(save(&f, f.len, "dup.gguf"), "duplicate tensor name 'blk.0.attn_q.weight'");
    free(f.b);
}

Test(gguf_corrupt, tensor_data)
{
    blob f = load_base();
    size_t norm = find_tensor(&f, "blk.0.attn_norm.weight");
    uint64_t off = rd64(&f, t_off(&f, norm));
    wr64(&f, t_off(&f, norm), off + 4);
    char want[128];
    snprintf(want, sizeof want, "tensor 'blk.0.attn_norm.weight': offset %" PRIu64 " is not a multiple of the alignment 32",
             off + 4);
    expect_info_error(save(&f, f.len, "unaligned.gguf"), want);
    wr64(&f, t_off(&f, norm), off);
    size_t out = find_tensor(&f, "output.weight");
    uint64_t oo = rd64(&f, t_off(&f, out));
    wr64(&f, t_off(&f, out), 1ull << 40);
    expect_info_error(save(&f, f.len, "offset.gguf"), "tensor 'output.weight': data (offset 1099511627776");
    wr64(&f, t_off(&f, out), oo);
    /* output.weight is 300 rows of 68 bytes at the end: cut its last 100 */
    expect_info_error(save(&f, f.len - 100, "size.gguf"), "tensor 'output.weight': data (offset");
    tu_result r = run3("info", save(&f, f.len - 100, "size.gguf"), NULL);
    cr_assert(strstr(r.err, "20400 bytes) runs past end of file"), "%s", r.err);
    tu_result_free(&r);
    free(f.b);
}

Test(gguf_corrupt, alignment_not_power_of_two)
{
    char path[512];
    snprintf(path, sizeof path, "%s/align.gguf", tu_tmpdir());
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(64);
    cr_assert(w);
    uint64_t ne[1] = {8};
    shardlm_gguf_writer_tensor(w, "t", SHARDLM_DT_F32, 1, ne);
    cr_assert_eq(shardlm_gguf_writer_write(w, path, NULL, NULL), SHARDLM_OK);
    shardlm_gguf_writer_free(w);
    blob f;
    f.b = (uint8_t *)tu_read_file(path, &f.len);
    size_t a = find_kv(&f, "general.alignment");
    cr_assert_eq(rd32(&f, a + 4), 64);
    wr32(&f, a + 4, 48);
    expect_info_error(save(&f, f.len, "align48.gguf"), "general.alignment 48 is not a power of two");
    cr_assert_null(shardlm_gguf_writer_new(48), "the writer refuses it too");
    free(f.b);
}

/* ---- the real model files ---- */

Test(gguf_models, stories260k)
{
    const char *path = tu_shared("models/stories260K.gguf");
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_gguf_version(g), 3);
    cr_assert_eq(shardlm_gguf_alignment(g), 32);
    cr_assert_eq(shardlm_gguf_file_size(g), 1185376);
    cr_assert_eq(shardlm_gguf_n_tensors(g), 48);
    shardlm_gguf_str arch;
    cr_assert_eq(shardlm_gguf_get_str(g, "general.architecture", &arch), 0);
    cr_assert(arch.len == 5 && memcmp(arch.ptr, "llama", 5) == 0);
    cr_assert_eq(u64_of(g, "llama.embedding_length"), 64);
    cr_assert_eq(u64_of(g, "llama.feed_forward_length"), 172);
    cr_assert_eq(u64_of(g, "llama.block_count"), 5);
    cr_assert_eq(u64_of(g, "llama.attention.head_count"), 8);
    cr_assert_eq(u64_of(g, "llama.attention.head_count_kv"), 4);
    cr_assert_eq(u64_of(g, "llama.rope.dimension_count"), 8);
    cr_assert_eq(u64_of(g, "llama.context_length"), 2048);
    double eps, base;
    cr_assert_eq(shardlm_gguf_get_f64(g, "llama.attention.layer_norm_rms_epsilon", &eps), 0);
    cr_assert_eq((float)eps, 1e-5f);
    cr_assert_eq(shardlm_gguf_get_f64(g, "llama.rope.freq_base", &base), 1, "absent");
    cr_assert_eq(u64_of(g, "tokenizer.ggml.bos_token_id"), 1);
    cr_assert_eq(u64_of(g, "tokenizer.ggml.eos_token_id"), 2);
    cr_assert_eq(u64_of(g, "tokenizer.ggml.unknown_token_id"), 0);
    shardlm_gguf_vtype et;
    uint64_t n;
    const void *data;
    cr_assert_eq(shardlm_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data), 0);
    cr_assert(et == SHARDLM_GGUF_STRING && n == 512);
    shardlm_gguf_str s;
    cr_assert_eq(shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", 1, &s), 0);
    cr_assert(s.len == 3 && memcmp(s.ptr, "<s>", 3) == 0);
    cr_assert_eq(shardlm_gguf_arr_str(g, "tokenizer.ggml.tokens", 3 + 0x41, &s), 0);
    cr_assert(s.len == 6 && memcmp(s.ptr, "<0x41>", 6) == 0);
    double score;
    cr_assert_eq(shardlm_gguf_arr_f64(g, "tokenizer.ggml.scores", 260, &score), 0);
    cr_assert_eq(score, -1.0, "merge scores are 0, -1, -2, ... from id 259");
    assert_dims(g, "token_embd.weight", SHARDLM_DT_F32, 64, 512);
    assert_dims(g, "blk.0.attn_q.weight", SHARDLM_DT_F32, 64, 64);
    assert_dims(g, "blk.0.attn_k.weight", SHARDLM_DT_F32, 64, 32);
    assert_dims(g, "blk.4.ffn_gate.weight", SHARDLM_DT_F32, 64, 172);
    assert_dims(g, "blk.4.ffn_down.weight", SHARDLM_DT_F32, 172, 64);
    assert_dims(g, "output_norm.weight", SHARDLM_DT_F32, 64, 1);
    shardlm_gguf_close(g);
}

Test(gguf_models, llama2_tiny_random)
{
    const char *path = tu_shared("models/llama-2-tiny-random.gguf");
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_gguf_n_tensors(g), 12);
    cr_assert_eq(u64_of(g, "general.file_type"), 1);
    shardlm_gguf_str name;
    cr_assert_eq(shardlm_gguf_get_str(g, "general.name", &name), 0);
    cr_assert(name.len == 8 && memcmp(name.ptr, "LLaMA v2", 8) == 0);
    cr_assert_eq(u64_of(g, "llama.embedding_length"), 8);
    cr_assert_eq(u64_of(g, "llama.block_count"), 1);
    cr_assert_eq(u64_of(g, "llama.feed_forward_length"), 32);
    cr_assert_eq(u64_of(g, "llama.attention.head_count"), 2);
    cr_assert_eq(u64_of(g, "llama.attention.head_count_kv"), 2);
    cr_assert_eq(u64_of(g, "llama.rope.dimension_count"), 4);
    cr_assert_eq(u64_of(g, "llama.context_length"), 4096);
    double d;
    cr_assert_eq(shardlm_gguf_arr_f64(g, "tokenizer.ggml.scores", 31999, &d), 0);
    cr_assert_eq(shardlm_gguf_arr_f64(g, "tokenizer.ggml.scores", 32000, &d), SHARDLM_EINPUT);
    assert_dims(g, "output.weight", SHARDLM_DT_F16, 8, 32000);
    assert_dims(g, "blk.0.attn_norm.weight", SHARDLM_DT_F32, 8, 1);
    const shardlm_gguf_tensor *t = shardlm_gguf_find_tensor(g, "output.weight");
    cr_assert_eq(t->nbytes, 8 * 32000 * 2);
    float w[8];
    shardlm_dequant_row(SHARDLM_DT_F16, t->data, w, 8);
    for (int i = 0; i < 8; i++) cr_assert(isfinite(w[i]) && fabsf(w[i]) < 10.0f);
    shardlm_gguf_close(g);
}

Test(gguf_models, vocab_only_file)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(tu_shared("models/ggml-vocab-llama-spm.gguf"), &g), SHARDLM_OK, "%s",
                 shardlm_err_get());
    cr_assert_eq(shardlm_gguf_n_tensors(g), 0);
    int b;
    cr_assert_eq(shardlm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b), 0);
    cr_assert_eq(b, 1);
    shardlm_gguf_close(g);
}

Test(gguf_cli, info_stories)
{
    const char *path = tu_shared("models/stories260K.gguf");
    tu_result r = run3("info", path, NULL);
    cr_assert_eq(r.exit_code, 0, "%s", r.err);
    const char *want[] = {
        "GGUF version:  3\n", "alignment:     32\n", "size:          1185376 bytes\n", "tensors:       48\n",
        "  architecture          llama\n", "  head count            8\n", "  KV head count         4\n",
        "  embedding length      64\n", "  block count           5\n", "  FFN length            172\n",
        "  context length        2048\n", "  RMS eps               1e-05\n",
        "  RoPE freq base        (absent: default 10000)\n", "  RoPE dimension count  8\n",
        "  llama.attention.head_count               uint32   8\n",
        "  tokenizer.ggml.tokens                    array    string[512] [\"<unk>\", \"<s>\", \"</s>\", \"<0x00>\", "
        "\"<0x01>\", ...]\n",
        "  blk.0.attn_k.weight              f32     [64, 32]                         8192       278784\n",
        "  model       llama\n", "  vocab size  512\n", "  bos id      1\n", "  eos id      2\n",
        "  unk id      0\n"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert(strstr(r.out, want[i]), "info output lacks '%s':\n%s", want[i], r.out);
    char fp[64];
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), 0);
    snprintf(fp, sizeof fp, "fingerprint:   %016" PRIx64 "\n", shardlm_gguf_fingerprint(g));
    shardlm_gguf_close(g);
    cr_assert(strstr(r.out, fp), "lacks %s", fp);
    cr_assert_str_empty(r.err);
    tu_result_free(&r);
}

Test(gguf_cli, info_usage)
{
    tu_result r = run3("info", "--help", NULL);
    cr_assert_eq(r.exit_code, 0);
    cr_assert(strstr(r.out, "usage: shardlm info MODEL.gguf"));
    tu_result_free(&r);
    r = run3("info", NULL, NULL);
    cr_assert_eq(r.exit_code, 2);
    cr_assert_eq(count_lines(r.err), 1, "%s", r.err);
    tu_result_free(&r);
    r = run3("info", "--bogus", "x");
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "--bogus"), "%s", r.err);
    tu_result_free(&r);
}
