/* test_generate.c - end-to-end generation through the real binary: the
 * stories260K golden text at world sizes 1, 2 and 4, logits across world
 * sizes, prompts as ids (--prompt-ids, --ids-out, --ignore-eos), the decode
 * count and finish reason of the scheduler's one request, and the
 * errors a user can cause (bad model, bad world size, bad ids). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static tu_result gen(const char *model, const char *ws, const char *extra1, const char *extra2)
{
    char *argv[16];
    int a = 0;
    argv[a++] = (char *)tu_bin();
    argv[a++] = "generate";
    argv[a++] = "-m";
    argv[a++] = (char *)model;
    argv[a++] = "--temp";
    argv[a++] = "0";
    argv[a++] = "--world-size";
    argv[a++] = (char *)ws;
    if (extra1) argv[a++] = (char *)extra1;
    if (extra2) argv[a++] = (char *)extra2;
    argv[a] = NULL;
    return tu_run(argv, NULL, 300);
}

static void check_golden(const char *ws)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    char *want = tu_read_file(tu_shared("models/stories260K.greedy.txt"), NULL);
    cr_assert_not_null(want);
    tu_result r = gen(model, ws, "-n", "256");
    cr_assert_eq(r.exit_code, 0, "world size %s: exit %d, stderr:\n%s", ws, r.exit_code, r.err);
    cr_assert_str_eq(r.out, want, "world size %s: output differs from Karpathy's greedy text", ws);
    cr_assert(strstr(r.err, "rank 0 loaded: shard") != NULL, "no memory report:\n%s", r.err);
    cr_assert(strstr(r.err, "decode 256 tokens, ") != NULL, "no decode figures:\n%s", r.err);
    free(want);
    tu_result_free(&r);
}

Test(generate, golden_world_size_1) { check_golden("1"); }
Test(generate, golden_world_size_2) { check_golden("2"); }
Test(generate, golden_world_size_4) { check_golden("4"); }

/* run.c -i "Once upon a time" -n 64 prints the 4 prompt tokens after BOS and
 * 60 sampled ones. */
Test(generate, prompt_with_echo_matches_run_c)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    char *want = tu_read_file(tu_shared("models/stories260K.runc-prompt.txt"), NULL);
    char *argv[] = {(char *)tu_bin(), "generate", "-m", model, "--temp", "0", "-n", "60", "--echo",
                    "-p", "Once upon a time", "--world-size", "2", NULL};
    tu_result r = tu_run(argv, NULL, 120);
    cr_assert_eq(r.exit_code, 0, "stderr:\n%s", r.err);
    cr_assert_str_eq(r.out, want);
    tu_result_free(&r);
}

Test(generate, prompt_without_echo_prints_only_new_text)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    char *argv[] = {(char *)tu_bin(), "generate", "-m", model, "--temp", "0", "-n", "8", "-p",
                    "Once upon a time", NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "stderr:\n%s", r.err);
    cr_assert_str_eq(r.out, ", there was a little girl\n");
    tu_result_free(&r);
}

/* Counts the ids of an --ids-out file and checks them against want[]
 * (NULL: no check). */
static int ids_file_check(const char *path, const long *want, int n_want)
{
    char *text = tu_read_file(path, NULL);
    cr_assert_not_null(text, "no ids file %s", path);
    int n = 0;
    char *p = text, *end;
    for (long v = strtol(p, &end, 10); end != p; v = strtol(p, &end, 10), n++) {
        if (want && n < n_want) cr_assert_eq(v, want[n], "id %d is %ld, expected %ld", n, v, want[n]);
        p = end;
    }
    free(text);
    return n;
}

/* --prompt-ids gives the tokens -p "Once upon a time" encodes to (BOS
 * included), so the text is the same; --ids-out holds run.c's next ids. */
Test(generate, prompt_ids_and_ids_out_match_run_c)
{
    char model[4096], ids[512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    snprintf(ids, sizeof ids, "%s/prompt.ids", tu_tmpdir());
    char *argv[] = {(char *)tu_bin(), "generate", "-m", model, "--temp", "0", "-n", "8", "--prompt-ids",
                    "1,403,407,261,378", "--ids-out", ids, "--world-size", "2", NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "stderr:\n%s", r.err);
    cr_assert_str_eq(r.out, ", there was a little girl\n");
    static const long want[8] = {432, 383, 286, 261, 376, 298, 315, 421}; /* stories260K.runc-prompt.ids.txt */
    cr_assert_eq(ids_file_check(ids, want, 8), 8);
    /* -n 8: eight tokens decoded (the first from the prompt's step), as serve counts completion_tokens */
    cr_assert(strstr(r.err, "shardlm: decode 8 tokens, ") != NULL, "stderr:\n%s", r.err);
    cr_assert(strstr(r.err, " tok/s (finish: length)\n") != NULL, "stderr:\n%s", r.err);
    tu_result_free(&r);
}

/* From BOS alone stories260K emits BOS again as its 346th token, where
 * generate stops; --ignore-eos goes on to N tokens. */
Test(generate, ignore_eos_generates_through_bos)
{
    char model[4096], ids[2][512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    for (int k = 0; k < 2; k++) {
        snprintf(ids[k], sizeof ids[k], "%s/ignore-%d.ids", tu_tmpdir(), k);
        char *argv[] = {(char *)tu_bin(), "generate", "-m", model, "--temp", "0", "-n", "400", "--ids-out", ids[k],
                        k ? "--ignore-eos" : NULL, NULL};
        tu_result r = tu_run(argv, NULL, 120);
        cr_assert_eq(r.exit_code, 0, "stderr:\n%s", r.err);
        /* the BOS ends the request as serve's end tokens do ("stop"), and counts as generated */
        cr_assert(strstr(r.err, k ? "decode 400 tokens, " : "decode 346 tokens, ") != NULL, "stderr:\n%s", r.err);
        cr_assert(strstr(r.err, k ? "(finish: length)" : "(finish: stop)") != NULL, "stderr:\n%s", r.err);
        tu_result_free(&r);
    }
    cr_assert_eq(ids_file_check(ids[0], NULL, 0), 345, "without --ignore-eos generation stops at the BOS");
    cr_assert_eq(ids_file_check(ids[1], NULL, 0), 400, "--ignore-eos must give all 400 tokens");
}

Test(generate, bad_prompt_ids_exit_2)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    char *syntax[] = {(char *)tu_bin(), "generate", "-m", model, "--prompt-ids", "1,x", NULL};
    tu_expect_exit(syntax, 2, "invalid value '1,x' for --prompt-ids");
    char *range[] = {(char *)tu_bin(), "generate", "-m", model, "--prompt-ids", "1,512", "-n", "2", NULL};
    tu_expect_exit(range, 2, "--prompt-ids: token id 512 is outside the vocabulary");
    char *both[] = {(char *)tu_bin(), "generate", "-m", model, "--prompt-ids", "1", "-p", "hi", NULL};
    tu_expect_exit(both, 2, "not both");
}

static float *read_logits(const char *path, size_t *n)
{
    size_t bytes = 0;
    char *b = tu_read_file(path, &bytes);
    cr_assert_not_null(b, "no logits file %s", path);
    *n = bytes / sizeof(float);
    return (float *)b;
}

/* Logits of the first 32 positions at world sizes 2 and 4 equal world size
 * 1's within 1e-4 x max|logit| (the summation order of the all-reduce is the
 * only difference). */
Test(generate, logits_agree_across_world_sizes)
{
    char model[4096], path[3][512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    const char *ws[3] = {"1", "2", "4"};
    for (int i = 0; i < 3; i++) {
        snprintf(path[i], sizeof path[i], "%s/logits-%s.f32", tu_tmpdir(), ws[i]);
        char *argv[] = {(char *)tu_bin(), "generate", "-m", model, "--temp", "0", "-n", "32", "--world-size",
                        (char *)ws[i], "--logits-out", path[i], NULL};
        tu_result r = tu_run(argv, NULL, 120);
        cr_assert_eq(r.exit_code, 0, "world size %s: stderr:\n%s", ws[i], r.err);
        tu_result_free(&r);
    }
    size_t n1, n;
    float *ref = read_logits(path[0], &n1);
    cr_assert_eq(n1, 32 * 512, "expected 32 rows of 512 logits, got %zu floats", n1);
    float maxabs = 0;
    for (size_t j = 0; j < n1; j++) maxabs = fmaxf(maxabs, fabsf(ref[j]));
    cr_assert_gt(maxabs, 1.0f);
    for (int i = 1; i < 3; i++) {
        float *x = read_logits(path[i], &n);
        cr_assert_eq(n, n1);
        float worst = 0;
        for (size_t j = 0; j < n; j++) worst = fmaxf(worst, fabsf(x[j] - ref[j]));
        cr_assert_leq(worst, 1e-4f * maxabs, "world size %s: max |diff| %g > %g", ws[i], worst, 1e-4f * maxabs);
        free(x);
    }
    free(ref);
}

Test(generate, missing_model_exits_2_naming_the_file)
{
    tu_result r = gen("/nonexistent/model.gguf", "1", NULL, NULL);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "/nonexistent/model.gguf") != NULL, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "");
    tu_result_free(&r);
}

Test(generate, world_size_not_power_of_two_exits_2)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    tu_result r = gen(model, "3", NULL, NULL);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "--world-size") != NULL, "stderr: %s", r.err);
    tu_result_free(&r);
}

/* llama-2-tiny-random has 2 heads: 4 ranks cannot split them. Every rank
 * must say so and exit 2; nothing may hang. */
Test(generate, heads_that_do_not_divide_are_refused)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", tu_shared("models/llama-2-tiny-random.gguf"));
    tu_result r = gen(model, "4", "-n", "4");
    cr_assert_eq(r.exit_code, 2, "exit %d stderr: %s", r.exit_code, r.err);
    cr_assert(strstr(r.err, "2 attention heads do not split evenly over 4 ranks") != NULL, "stderr: %s", r.err);
    tu_result_free(&r);
}

Test(generate, bad_flag_value_exits_2)
{
    char *argv[] = {(char *)tu_bin(), "generate", "-m", "x.gguf", "--temp", "abc", NULL};
    tu_expect_exit(argv, 2, "invalid value 'abc' for --temp");
}
