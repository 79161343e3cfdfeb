/* test_cli.c - the flag table as users meet it: one line naming an unknown
 * option or a bad value (exit 2) for generate, serve, worker, bench and
 * launch; --help for each; `info -m MODEL`; flags each command accepts;
 * `bench-matmul`'s JSON and its refusals of bad input. */
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static tu_result run(const char *a1, const char *a2, const char *a3, const char *a4)
{
    char *argv[] = {(char *)tu_bin(), (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL};
    return tu_run(argv, NULL, 60);
}

static void expect_line(const char *cmd, const char *a, const char *b, const char *line)
{
    tu_result r = run(cmd, a, b, NULL);
    cr_assert_eq(r.exit_code, 2, "%s %s %s: exit %d, stderr %s", cmd, a, b ? b : "", r.exit_code, r.err);
    cr_assert_str_eq(r.err, line, "%s %s %s", cmd, a, b ? b : "");
    cr_assert_str_empty(r.out);
    tu_result_free(&r);
}

static const char *const cmds[] = {"generate", "serve", "worker", "bench", "launch"};

Test(cli, unknown_option_is_one_line)
{
    char want[256];
    for (int i = 0; i < 5; i++) {
        snprintf(want, sizeof want, "shardlm %s: unknown option '--bogus' (try 'shardlm %s --help')\n", cmds[i],
                 cmds[i]);
        expect_line(cmds[i], "--bogus", NULL, want);
        snprintf(want, sizeof want, "shardlm %s: unknown option '--bogus' (try 'shardlm %s --help')\n", cmds[i],
                 cmds[i]);
        expect_line(cmds[i], "--bogus=3", NULL, want);
        snprintf(want, sizeof want, "shardlm %s: unknown option '-Z' (try 'shardlm %s --help')\n", cmds[i], cmds[i]);
        expect_line(cmds[i], "-Z", NULL, want);
    }
}

Test(cli, bad_numbers_name_flag_and_value)
{
    static const char *const cases[][4] = {
        {"worker", "--timeout-ms", "abc", "shardlm worker: invalid value 'abc' for --timeout-ms (an integer in 1..1073741824)\n"},
        {"worker", "--threads", "0", "shardlm worker: invalid value '0' for --threads (an integer in 1..1024)\n"},
        {"worker", "--idle-timeout-ms", "10x", "shardlm worker: invalid value '10x' for --idle-timeout-ms (an integer in 1..1073741824)\n"},
        {"worker", "--connect-timeout-ms", "99999999999", "shardlm worker: invalid value '99999999999' for --connect-timeout-ms (an integer in 1..1073741824)\n"},
        {"serve", "--port", "70000", "shardlm serve: invalid value '70000' for --port (an integer in 0..65535)\n"},
        {"serve", "--block-size", "12", "shardlm serve: invalid value '12' for --block-size (8, 16 or 32)\n"},
        {"serve", "--kv-cache-mb", "0", "shardlm serve: invalid value '0' for --kv-cache-mb (above 0)\n"},
        {"serve", "--comm", "tcp", "shardlm serve: invalid value 'tcp' for --comm (auto, ring, mpi or nccl)\n"},
        {"generate", "-n", "-1", "shardlm generate: invalid value '-1' for -n (an integer in 0..16777216)\n"},
        {"generate", "--temp", "nan", "shardlm generate: invalid value 'nan' for --temp (a number in 0..1e+06)\n"},
        {"generate", "--seed", "-1", "shardlm generate: invalid value '-1' for --seed (a non-negative integer)\n"},
        {"generate", "--world-size", "3", "shardlm generate: invalid value '3' for --world-size (a power of two in 1..64)\n"},
        {"generate", "--device", "gpu", "shardlm generate: invalid value 'gpu' for --device (cpu, cuda or cuda:K)\n"},
        {"bench", "-r", "0", "shardlm bench: invalid value '0' for -r (an integer in 1..64)\n"},
        {"bench", "--batch", "257", "shardlm bench: invalid value '257' for --batch (an integer in 0..256)\n"},
        {"launch", "-n", "3", "shardlm launch: invalid value '3' for -n (a power of two in 1..1024)\n"},
        {"launch", "--timeout", "0", "shardlm launch: invalid value '0' for --timeout (an integer in 1..604800)\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_line(cases[i][0], cases[i][1], cases[i][2], cases[i][3]);
    expect_line("serve", "--port=x", NULL, "shardlm serve: invalid value 'x' for --port (an integer in 0..65535)\n");
    expect_line("generate", "--ctx", NULL, "shardlm generate: option '--ctx' needs a value (N)\n");
    expect_line("generate", "--echo=1", NULL, "shardlm generate: option '--echo' takes no value\n");
    expect_line("serve", "stray", NULL, "shardlm serve: unexpected argument 'stray' (try 'shardlm serve --help')\n");
}

Test(cli, bad_local_world_size_names_the_variable)
{
    setenv("SHARDLM_LOCAL_WORLD_SIZE", "two", 1);
    expect_line("worker", "--ring-config", "x.json",
                "shardlm worker: invalid value 'two' for $SHARDLM_LOCAL_WORLD_SIZE (an integer in 1..1024)\n");
}

Test(cli, help_for_each_command)
{
    for (int i = 0; i < 5; i++) {
        tu_result r = run(cmds[i], "--help", NULL, NULL);
        cr_assert_eq(r.exit_code, 0, "%s", cmds[i]);
        cr_assert(!strncmp(r.out, "usage: ", 7) || strstr(r.out, "usage: ") != NULL, "%s: %s", cmds[i], r.out);
        cr_assert_str_empty(r.err, "%s: %s", cmds[i], r.err);
        tu_result_free(&r);
    }
    tu_result r = run("help", "--markdown", NULL, NULL);
    cr_assert_eq(r.exit_code, 0);
    cr_assert(strstr(r.out, "### generate\n\n```\nusage: shardlm generate -m MODEL [options]\n"), "%s", r.out);
    cr_assert(strstr(r.out, "| `--connect-timeout-ms` | `MS`: an integer in 1..1073741824 | 60000 |"), "%s", r.out);
    tu_result_free(&r);
}

Test(cli, info_takes_dash_m_like_the_others)
{
    const char *model = tu_shared("models/stories260K.gguf");
    tu_result a = run("info", model, NULL, NULL), b = run("info", "-m", model, NULL);
    cr_assert_eq(a.exit_code, 0, "%s", a.err);
    cr_assert_eq(b.exit_code, 0, "%s", b.err);
    cr_assert_str_eq(a.out, b.out);
    cr_assert(strstr(b.out, "fingerprint:"));
    tu_result_free(&a);
    tu_result_free(&b);
    tu_result c = run("info", "-m", model, model);
    cr_assert_eq(c.exit_code, 2);
    tu_result_free(&c);
}

/* docs/CONFIGURATION.md lists --connect-timeout-ms for generate and serve. */
Test(cli, generate_takes_connect_timeout)
{
    const char *model = tu_shared("models/stories260K.gguf");
    char *argv[] = {(char *)tu_bin(), "generate", "-m", (char *)model, "--connect-timeout-ms", "5000", "-n", "4",
                    "--temp", "0", "-t", "1", NULL};
    tu_result r = tu_run(argv, NULL, 120);
    cr_assert_eq(r.exit_code, 0, "%s", r.err);
    cr_assert(strlen(r.out) > 1, "%s", r.out);
    tu_result_free(&r);
}

static double num_field(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    cr_assert(cJSON_IsNumber(v), "no number '%s'", name);
    return v->valuedouble;
}

static const char *str_field(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    cr_assert(cJSON_IsString(v) && v->valuestring[0], "no string '%s'", name);
    return v->valuestring;
}

/* One small product at two batch sizes: the sizes are echoed, the kernel
 * is Q4_0's (plain or repacked), and every figure is a real timing. */
Test(cli, bench_matmul_json)
{
    char *argv[] = {(char *)tu_bin(), "bench-matmul", "--type", "q4_0", "--rows", "64", "--cols", "256", "--batch",
                    "1,3", "--reps", "3", "--matrices", "1", "--json", NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "exit %d, stderr %s", r.exit_code, r.err);
    cr_assert_str_empty(r.err, "%s", r.err); /* progress only on a terminal */
    cJSON *j = cJSON_Parse(r.out);
    cr_assert(cJSON_IsObject(j), "not JSON: %s", r.out);
    cr_assert_str_eq(str_field(j, "type"), "q4_0");
    const char *kernel = str_field(j, "kernel"), *slash = strchr(kernel, '/'); /* "q4_0_r8/avx512vnni" */
    cr_assert(!strncmp(kernel, "q4_0", 4) && slash, "%s", r.out);
    int known_isa = 0, known_kernel_isa = 0;
    for (int i = 0; i < TU_N_ISAS; i++) {
        known_isa |= !strcmp(str_field(j, "isa"), tu_isas[i]);
        known_kernel_isa |= !strcmp(slash + 1, tu_isas[i]);
    }
    cr_assert(known_isa && known_kernel_isa, "%s", r.out);
    cr_assert_eq(num_field(j, "rows"), 64);
    cr_assert_eq(num_field(j, "cols"), 256);
    cr_assert_eq(num_field(j, "threads"), 1);
    cr_assert_eq(num_field(j, "reps"), 3);
    cr_assert_eq(num_field(j, "matrices"), 1);
    cr_assert_eq(num_field(j, "matrix_bytes"), 64 * 256 / 32 * 18); /* 18 bytes per Q4_0 block */
    const cJSON *res = cJSON_GetObjectItemCaseSensitive(j, "results");
    cr_assert(cJSON_IsArray(res) && cJSON_GetArraySize(res) == 2, "%s", r.out);
    for (int i = 0; i < 2; i++) {
        const cJSON *b = cJSON_GetArrayItem(res, i);
        cr_assert_eq(num_field(b, "batch"), i ? 3 : 1);
        double p10 = num_field(b, "p10_ms"), med = num_field(b, "median_ms"), p90 = num_field(b, "p90_ms");
        cr_assert(p10 > 0 && p10 <= med && med <= p90, "%s", r.out);
        cr_assert_gt(num_field(b, "gmac_s"), 0);
        cr_assert_gt(num_field(b, "gb_s"), 0);
        /* GMAC/s is rows x cols x batch over the median */
        cr_assert_float_eq(num_field(b, "gmac_s"), 64.0 * 256 * (i ? 3 : 1) / (med * 1e-3) / 1e9,
                           num_field(b, "gmac_s") * 2e-3 + 2e-3, "%s", r.out);
    }
    cJSON_Delete(j);
    tu_result_free(&r);
}

static void expect_bmm(const char *a, const char *b, const char *c, const char *d, int code, const char *msg)
{
    char *argv[] = {(char *)tu_bin(), "bench-matmul", (char *)a, (char *)b, (char *)c, (char *)d, NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, code, "%s %s: exit %d, stderr %s", a, b, r.exit_code, r.err);
    cr_assert(!strncmp(r.err, msg, strlen(msg)), "%s %s: stderr %s", a, b, r.err);
    cr_assert_eq(strchr(r.err, '\n'), r.err + strlen(r.err) - 1, "not one line: %s", r.err);
    cr_assert_str_empty(r.out, "%s", r.out);
    tu_result_free(&r);
}

Test(cli, bench_matmul_refuses_bad_input)
{
    expect_bmm("--type", "bogus", NULL, NULL, 2,
               "shardlm bench-matmul: invalid value 'bogus' for --type (one of f32, f16, bf16, q4_0,");
    expect_bmm("--type", "q4_0", "--cols", "100", 2,
               "shardlm bench-matmul: invalid value '100' for --cols (a multiple of 32, q4_0's block)\n");
    expect_bmm("--cols", "300", "--type", "q6_k", 2,
               "shardlm bench-matmul: invalid value '300' for --cols (a multiple of 256, q6_k's block)\n");
    expect_bmm("--rows", "0", NULL, NULL, 2,
               "shardlm bench-matmul: invalid value '0' for --rows (an integer in 1..2147483648)\n");
    expect_bmm("--rows", "12x", NULL, NULL, 2, "shardlm bench-matmul: invalid value '12x' for --rows");
    expect_bmm("--batch", "1,,4", NULL, NULL, 2, "shardlm bench-matmul: invalid value '1,,4' for --batch");
    expect_bmm("-t", "0", NULL, NULL, 2, "shardlm bench-matmul: invalid value '0' for -t");
    expect_bmm("--matrices", "65", NULL, NULL, 2, "shardlm bench-matmul: invalid value '65' for --matrices");
    /* far beyond any machine's memory: refused before allocating, naming the size */
    expect_bmm("--rows", "2147483648", "--cols", "2147483648", 1,
               "shardlm bench-matmul: 2147483648 x 2147483648 q4_0 needs ");
}
