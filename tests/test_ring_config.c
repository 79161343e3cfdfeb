/* test_ring_config.c - broken RING_CONFIG files, through the API (status and
 * exact message) and through the CLI (exit 2, stderr naming file and field),
 * plus `shardlm launch` exit reporting and its clean-up of failed runs. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shardlm_common.h"
#include "shardlm_launch.h"
#include "shardlm_ring.h"
#include "test_util.h"

#define GOOD_TAIL "\"master_ip\": \"127.0.0.1\", \"master_port\": 40000"

typedef struct {
    const char *name;
    const char *json; /* NULL: the file does not exist */
    const char *phrase;
    const char *field; /* the field the CLI message must name, or NULL */
} bad_cfg;

static const bad_cfg bad_cfgs[] = {
    {"world3", "{" GOOD_TAIL ", \"port\": 40001, \"right_port\": 40002, \"rank\": 0, \"world_size\": 3}",
     "field 'world_size': 3 is not a power of two in 1..1024", "world_size"},
    {"world2048", "{" GOOD_TAIL ", \"port\": 40001, \"right_port\": 40002, \"rank\": 0, \"world_size\": 2048}",
     "field 'world_size': 2048 is not a power of two", "world_size"},
    {"missing_port", "{" GOOD_TAIL ", \"right_port\": 40002, \"rank\": 0, \"world_size\": 2}",
     "field 'port': missing (required)", "port"},
    {"port0", "{" GOOD_TAIL ", \"port\": 0, \"right_port\": 40002, \"rank\": 0, \"world_size\": 2}",
     "field 'port': port 0 is outside 1..65535", "port"},
    {"port70000", "{" GOOD_TAIL ", \"port\": 70000, \"right_port\": 40002, \"rank\": 0, \"world_size\": 2}",
     "field 'port': port 70000 is outside 1..65535", "port"},
    {"port_abc", "{" GOOD_TAIL ", \"port\": \"abc\", \"right_port\": 40002, \"rank\": 0, \"world_size\": 2}",
     "field 'port': expected an integer, got a string", "port"},
    {"rank_range", "{" GOOD_TAIL ", \"port\": 40001, \"right_port\": 40002, \"rank\": 2, \"world_size\": 2}",
     "field 'rank': 2 is outside 0..1 (world_size 2)", "rank"},
    {"rank_negative", "{" GOOD_TAIL ", \"port\": 40001, \"right_port\": 40002, \"rank\": -1, \"world_size\": 2}",
     "field 'rank': -1 is outside 0..1", "rank"},
    {"rank_fraction", "{" GOOD_TAIL ", \"port\": 40001, \"right_port\": 40002, \"rank\": 0.5, \"world_size\": 2}",
     "field 'rank': expected an integer, got 0.5", "rank"},
    {"self_loop", "{" GOOD_TAIL ", \"port\": 40001, \"right_port\": 40001, \"rank\": 0, \"world_size\": 2}",
     "field 'right_port': 40001 equals 'port'", "right_port"},
    {"unknown_field",
     "{" GOOD_TAIL ", \"port\": 40001, \"right_port\": 40002, \"rigth_ip\": \"10.0.0.2\", \"rank\": 0, "
     "\"world_size\": 2}",
     "field 'rigth_ip': unknown field", "rigth_ip"},
    {"empty_host", "{\"master_ip\": \"\", \"master_port\": 40000, \"port\": 40001, \"right_port\": 40002, "
                   "\"rank\": 0, \"world_size\": 2}",
     "field 'master_ip': empty host", "master_ip"},
    {"malformed", "{\n  \"port\": 40001,,\n}", "malformed JSON near line 2, column ", NULL},
    {"not_object", "[1, 2, 3]", "expected a JSON object at the top level, got an array", NULL},
    {"missing_file", NULL, "cannot open: No such file or directory", NULL},
};
#define N_BAD (sizeof bad_cfgs / sizeof bad_cfgs[0])

static const char *bad_path(const bad_cfg *b, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s.json", tu_tmpdir(), b->name);
    if (b->json) cr_assert_eq(tu_write_file(buf, b->json, strlen(b->json)), 0);
    return buf;
}

Test(ring_config, broken_configs_api)
{
    for (size_t i = 0; i < N_BAD; i++) {
        char path[512];
        bad_path(&bad_cfgs[i], path, sizeof path);
        shardlm_ring_config cfg;
        int rc = shardlm_ring_config_load(path, &cfg);
        const char *err = shardlm_err_get();
        cr_expect_eq(rc, SHARDLM_EINPUT, "%s: rc %d", bad_cfgs[i].name, rc);
        cr_expect(strncmp(err, path, strlen(path)) == 0, "%s: message '%s' does not start with the path",
                  bad_cfgs[i].name, err);
        cr_expect(strstr(err, bad_cfgs[i].phrase), "%s: message '%s' lacks '%s'", bad_cfgs[i].name, err,
                  bad_cfgs[i].phrase);
        cr_expect(!strchr(err, '\n'), "%s: message spans lines", bad_cfgs[i].name);
    }
}

Test(ring_config, good_config_defaults_and_round_trip)
{
    char path[512];
    snprintf(path, sizeof path, "%s/good.json", tu_tmpdir());
    const char *j = "{" GOOD_TAIL ", \"port\": 40001, \"right_port\": 40002, \"rank\": 1, \"world_size\": 4}";
    cr_assert_eq(tu_write_file(path, j, strlen(j)), 0);
    shardlm_ring_config a, b;
    cr_assert_eq(shardlm_ring_config_load(path, &a), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_str_eq(a.right_ip, "127.0.0.1");
    cr_assert(a.port == 40001 && a.right_port == 40002 && a.rank == 1 && a.world_size == 4);
    snprintf(a.right_ip, sizeof a.right_ip, "shardlm-1.shardlm.default.svc.cluster.local");
    cr_assert_eq(shardlm_ring_config_write(path, &a), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_ring_config_load(path, &b), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(memcmp(&a, &b, sizeof a), 0);
}

Test(ring_config, broken_configs_cli)
{
    for (size_t i = 0; i < N_BAD; i++) {
        char path[512], env[600];
        bad_path(&bad_cfgs[i], path, sizeof path);
        snprintf(env, sizeof env, "RING_CONFIG=%s", path);
        char *argv[] = {"/usr/bin/env", env, (char *)tu_bin(), "bench-comm", "--world-size", "2", NULL};
        tu_result r = tu_run(argv, NULL, 30);
        cr_expect_eq(r.exit_code, 2, "%s: exit %d, stderr: %s", bad_cfgs[i].name, r.exit_code, r.err);
        cr_expect(strstr(r.err, path), "%s: stderr does not name the file: %s", bad_cfgs[i].name, r.err);
        cr_expect(strstr(r.err, bad_cfgs[i].phrase), "%s: stderr lacks '%s': %s", bad_cfgs[i].name,
                  bad_cfgs[i].phrase, r.err);
        if (bad_cfgs[i].field) {
            char f[80];
            snprintf(f, sizeof f, "field '%s'", bad_cfgs[i].field);
            cr_expect(strstr(r.err, f), "%s: stderr does not name %s: %s", bad_cfgs[i].name, f, r.err);
        }
        tu_result_free(&r);
    }
}

/* Two bench-comm processes whose configs both say rank 0. */
Test(ring_config, duplicate_ranks_cli)
{
    const char *dir = tu_tmpdir();
    char pa[512], pb[512], ea[600], eb[600], errf[512];
    snprintf(pa, sizeof pa, "%s/dup_a.json", dir);
    snprintf(pb, sizeof pb, "%s/dup_b.json", dir);
    snprintf(errf, sizeof errf, "%s/dup_a.err", dir);
    /* Fresh free ports: fixed ones can be held by another socket (a left-over
     * connection or a client's ephemeral port), and then the second rank
     * fails to bind instead of meeting its duplicate. */
    shardlm_ring_config plan[2];
    cr_assert_eq(shardlm_launch_plan(2, plan), SHARDLM_OK, "%s", shardlm_err_get());
    char ja[300], jb[300];
    snprintf(ja, sizeof ja, "{" GOOD_TAIL ", \"port\": %d, \"right_port\": %d, \"rank\": 0, \"world_size\": 2}",
             plan[0].port, plan[1].port);
    snprintf(jb, sizeof jb, "{" GOOD_TAIL ", \"port\": %d, \"right_port\": %d, \"rank\": 0, \"world_size\": 2}",
             plan[1].port, plan[0].port);
    cr_assert_eq(tu_write_file(pa, ja, strlen(ja)), 0);
    cr_assert_eq(tu_write_file(pb, jb, strlen(jb)), 0);
    snprintf(ea, sizeof ea, "RING_CONFIG=%s", pa);
    snprintf(eb, sizeof eb, "RING_CONFIG=%s", pb);
    fflush(NULL);
    pid_t a = fork();
    if (a == 0) {
        int fd = open(errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 2);
        execl("/usr/bin/env", "env", ea, tu_bin(), "bench-comm", "--world-size", "2", "--timeout-ms", "5000",
              (char *)NULL);
        _exit(127);
    }
    char *argv[] = {"/usr/bin/env", eb, (char *)tu_bin(), "bench-comm", "--world-size", "2", "--timeout-ms",
                    "5000", NULL};
    tu_result r = tu_run(argv, NULL, 20);
    int st;
    cr_assert_eq(waitpid(a, &st, 0), a);
    char *erra = tu_read_file(errf, NULL);
    cr_assert_eq(r.exit_code, 2, "exit %d: %s / first process: %s", r.exit_code, r.err, erra);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "first process: status %d: %s / second process: %s", st,
              erra, r.err);
    cr_assert(strstr(r.err, "duplicate rank") && strstr(erra, "duplicate rank"), "%s / %s", r.err, erra);
    free(erra);
    tu_result_free(&r);
}

/* ---- shardlm launch ---- */

static tu_result run_launch(const char *n, const char *script, int timeout_s)
{
    char *argv[] = {(char *)tu_bin(), "launch", "-n", (char *)n, "--", "/bin/sh", "-c", (char *)script, NULL};
    return tu_run(argv, NULL, timeout_s);
}

Test(launch, all_ranks_succeed)
{
    tu_result r = run_launch("4", "test -r \"$RING_CONFIG\" && test -n \"$SHARDLM_RANK\"", 30);
    cr_assert_eq(r.exit_code, 0, "exit %d: %s", r.exit_code, r.err);
    tu_result_free(&r);
}

Test(launch, reports_exit_status)
{
    tu_result r = run_launch("2", "exit 3", 30);
    cr_assert_eq(r.exit_code, 1, "exit %d: %s", r.exit_code, r.err);
    cr_assert(strstr(r.err, "shardlm launch: rank ") && strstr(r.err, " exited with status 3"), "%s", r.err);
    tu_result_free(&r);
}

Test(launch, reports_signal)
{
    tu_result r = run_launch("2", "if [ \"$SHARDLM_RANK\" = 1 ]; then kill -9 $$; fi; sleep 30", 30);
    cr_assert_eq(r.exit_code, 1, "exit %d: %s", r.exit_code, r.err);
    cr_assert(strstr(r.err, "shardlm launch: rank 1 killed by signal 9"), "%s", r.err);
    tu_result_free(&r);
}

Test(launch, failed_rank_leaves_no_children)
{
    const char *dir = tu_tmpdir();
    char script[1024];
    snprintf(script, sizeof script,
             "echo $$ > %s/pid.$SHARDLM_RANK; "
             "if [ \"$SHARDLM_RANK\" = 2 ]; then sleep 0.3; exit 4; fi; exec sleep 60", dir);
    uint64_t t0 = shardlm_now_ns();
    tu_result r = run_launch("4", script, 30);
    double s = (double)(shardlm_now_ns() - t0) * 1e-9;
    cr_assert_eq(r.exit_code, 1, "exit %d: %s", r.exit_code, r.err);
    cr_assert(strstr(r.err, "rank 2 exited with status 4"), "%s", r.err);
    cr_assert(s < 10, "launch took %.1f s to give up", s);
    for (int k = 0; k < 4; k++) {
        char path[600];
        snprintf(path, sizeof path, "%s/pid.%d", dir, k);
        char *txt = tu_read_file(path, NULL);
        cr_assert(txt, "rank %d never ran", k);
        pid_t pid = (pid_t)atoi(txt);
        free(txt);
        errno = 0;
        cr_assert(pid > 0 && kill(pid, 0) == -1 && errno == ESRCH, "rank %d (pid %d) is still alive", k, pid);
    }
    tu_result_free(&r);
}

Test(launch, runs_bench_comm_ranks)
{
    char *argv[] = {(char *)tu_bin(), "launch", "-n", "2", "--timeout", "60", "--", (char *)tu_bin(),
                    "bench-comm", "--world-size", "2", "--max-bytes", "65536", "--iters", "5", "--json", NULL};
    tu_result r = tu_run(argv, NULL, 90);
    cr_assert_eq(r.exit_code, 0, "exit %d: %s", r.exit_code, r.err);
    cr_assert(r.out[0] == '[' && strstr(r.out, "\"bytes\":65536") && strstr(r.out, "\"algbw_gbps\":"), "%s",
              r.out);
    tu_result_free(&r);
}

Test(bench_comm, json_world4)
{
    char *argv[] = {(char *)tu_bin(), "bench-comm", "--world-size", "4", "--max-bytes", "1048576", "--iters",
                    "5", "--json", NULL};
    tu_result r = tu_run(argv, NULL, 120);
    cr_assert_eq(r.exit_code, 0, "exit %d: %s", r.exit_code, r.err);
    int rows = 0;
    for (const char *p = r.out; (p = strstr(p, "\"median_us\":")); p++) rows++;
    cr_assert_eq(rows, 9, "expected 9 sizes (4 KiB .. 1 MiB): %s", r.out);
    cr_assert_eq(strchr(r.out, '\n'), r.out + strlen(r.out) - 1, "one line of JSON expected: %s", r.out);
    tu_result_free(&r);
}
