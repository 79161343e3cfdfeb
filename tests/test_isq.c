/* test_isq.c - in-situ quantisation (--isq): an F16 model quantised to Q8_0
 * while loading gives logits within the documented bound of the F16 logits
 * (docs/PERFORMANCE.md: max |diff| <= 0.05 x max|logit|, mean |diff| <=
 * 0.01 x max|logit|), holds a smaller shard, and bad values are refused. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static const char *prompt = "Once upon a time, there was a little girl named Lily. She loved to play outside";

static tu_result run_logits(const char *model, const char *isq, const char *out)
{
    char *argv[24];
    int a = 0;
    argv[a++] = (char *)tu_bin();
    argv[a++] = "generate";
    argv[a++] = "-m";
    argv[a++] = (char *)model;
    argv[a++] = "--temp";
    argv[a++] = "0";
    argv[a++] = "-n";
    argv[a++] = "1";
    argv[a++] = "--world-size";
    argv[a++] = "2";
    argv[a++] = "-p";
    argv[a++] = (char *)prompt;
    argv[a++] = "--logits-out";
    argv[a++] = (char *)out;
    if (isq) {
        argv[a++] = "--isq";
        argv[a++] = (char *)isq;
    }
    argv[a] = NULL;
    return tu_run(argv, NULL, 120);
}

static double shard_mib(const char *err)
{
    const char *p = strstr(err, "rank 0 loaded: shard ");
    cr_assert_not_null(p, "no memory report: %s", err);
    return atof(p + strlen("rank 0 loaded: shard "));
}

Test(isq, q8_0_logits_within_bound_of_f16)
{
    char model[512], ref[512], q8[512];
    snprintf(model, sizeof model, "%s/f16.gguf", tu_tmpdir());
    snprintf(ref, sizeof ref, "%s/f16.f32", tu_tmpdir());
    snprintf(q8, sizeof q8, "%s/q8.f32", tu_tmpdir());
    char *sargv[] = {(char *)tu_bin(), "synth", "-o", model, "--dim", "256", "--layers", "4", "--heads", "8",
                     "--kv-heads", "4", "--ffn", "768", "--vocab", "512", "--type", "f16", "--seed", "3", NULL};
    tu_result s = tu_run(sargv, NULL, 60);
    cr_assert_eq(s.exit_code, 0, "%s", s.err);
    tu_result a = run_logits(model, NULL, ref), b = run_logits(model, "q8_0", q8);
    cr_assert_eq(a.exit_code, 0, "%s", a.err);
    cr_assert_eq(b.exit_code, 0, "%s", b.err);
    cr_assert_lt(shard_mib(b.err), 0.6 * shard_mib(a.err), "Q8_0 shard is not smaller: %s", b.err);
    size_t na, nb;
    float *x = (float *)tu_read_file(ref, &na), *y = (float *)tu_read_file(q8, &nb);
    cr_assert(x && y && na == nb && na >= 16 * 512 * sizeof(float), "logit files %zu and %zu bytes", na, nb);
    size_t n = na / sizeof(float);
    double maxabs = 0, worst = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        maxabs = fmax(maxabs, fabs(x[i]));
        double d = fabs((double)x[i] - y[i]);
        worst = fmax(worst, d);
        sum += d;
    }
    cr_assert_gt(worst, 0.0, "quantisation changed nothing: was --isq applied?");
    cr_assert_leq(worst, 0.05 * maxabs, "max |diff| %g > 0.05 x %g", worst, maxabs);
    cr_assert_leq(sum / (double)n, 0.01 * maxabs, "mean |diff| %g > 0.01 x %g", sum / (double)n, maxabs);
    free(x);
    free(y);
    tu_result_free(&s);
    tu_result_free(&a);
    tu_result_free(&b);
}

Test(isq, unsupported_type_exits_2)
{
    char *argv[] = {(char *)tu_bin(), "generate", "-m", "x.gguf", "--isq", "q5_1", NULL};
    tu_expect_exit(argv, 2, "invalid value 'q5_1' for --isq");
}
