/* test_cli.c - the flag table as users meet it: one line naming an unknown
 * option or a bad value (exit 2) for generate, serve, worker, bench and
 * launch; --help for each; `info -m MODEL`; flags each command accepts. */
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
