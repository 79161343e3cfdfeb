/* test_comm_q8.c - --comm-dtype q8: Q8_0 blocks on the all-reduce wire.
 * Teacher-forced logits over 257 positions of stories260K at world sizes 2
 * and 4 stay within the bound docs/PERFORMANCE.md states against f32 at
 * world size 1 (measured: max 0.77-0.87 %, mean 0.11-0.12 % of max|logit|),
 * every rank gets the same sum, and a bad value is refused. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_model.h"
#include "test_util.h"

static void run_logits(const char *model, const char *prompt, const char *ws, const char *dtype, const char *out)
{
    char *argv[] = {(char *)tu_bin(), "generate", "-m", (char *)model, "--temp", "0", "-n", "1", "-p",
                    (char *)prompt, "--world-size", (char *)ws, "--comm-dtype", (char *)dtype, "--logits-out",
                    (char *)out, NULL};
    tu_result r = tu_run(argv, NULL, 120);
    cr_assert_eq(r.exit_code, 0, "world size %s %s: stderr:\n%s", ws, dtype, r.err);
    tu_result_free(&r);
}

Test(comm_q8, logits_within_the_documented_bound)
{
    char model[4096], ref_path[512], path[512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    char *text = tu_read_file(tu_shared("models/stories260K.greedy.txt"), NULL);
    cr_assert_not_null(text);
    /* the whole greedy text as the prompt: 257 positions, teacher-forced */
    snprintf(ref_path, sizeof ref_path, "%s/ref.f32", tu_tmpdir());
    run_logits(model, text, "1", "f32", ref_path);
    size_t n_ref;
    float *ref = (float *)tu_read_file(ref_path, &n_ref);
    n_ref /= sizeof(float);
    cr_assert_gt(n_ref, 200 * 512u, "only %zu logits", n_ref);
    float scale = 0;
    for (size_t i = 0; i < n_ref; i++) scale = fmaxf(scale, fabsf(ref[i]));
    const char *ws[] = {"2", "4"};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/q8-%s.f32", tu_tmpdir(), ws[k]);
        run_logits(model, text, ws[k], "q8", path);
        size_t n;
        float *x = (float *)tu_read_file(path, &n);
        cr_assert_eq(n / sizeof(float), n_ref);
        double worst = 0, sum = 0;
        for (size_t i = 0; i < n_ref; i++) {
            double d = fabs((double)x[i] - ref[i]);
            worst = fmax(worst, d);
            sum += d;
        }
        double mean = sum / (double)n_ref;
        cr_assert_leq(worst, 0.02 * scale, "world size %s: max |d| %g > 2%% of %g", ws[k], worst, scale);
        cr_assert_leq(mean, 0.003 * scale, "world size %s: mean |d| %g > 0.3%% of %g", ws[k], mean, scale);
        cr_assert_gt(worst, 1e-4 * scale, "world size %s: q8 logits equal f32's: was q8 used at all?", ws[k]);
        free(x);
    }
    free(ref);
    free(text);
}

Test(comm_q8, bad_value_exits_2)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    char *argv[] = {(char *)tu_bin(), "generate", "-m", model, "--comm-dtype", "int4", NULL};
    tu_expect_exit(argv, 2, "invalid value 'int4' for --comm-dtype");
}

/* World size 1 has nothing to send: the q8 path is the f32 one. */
Test(comm_q8, world_size_1_is_exact)
{
    shardlm_comm *c = NULL;
    cr_assert_eq(shardlm_comm_local_create(&c), 0);
    float x[100];
    for (int i = 0; i < 100; i++) x[i] = (float)i * 0.37f - 11.0f;
    uint8_t scratch[1024];
    cr_assert_leq(shardlm_model_allreduce_q8_scratch(1, 100), sizeof scratch);
    cr_assert_eq(shardlm_model_allreduce_q8(c, x, 100, scratch, 1000), 0);
    for (int i = 0; i < 100; i++) cr_assert_eq(x[i], (float)i * 0.37f - 11.0f);
    shardlm_comm_destroy(c);
}
