/* test_doctor.c - `shardlm doctor` through the real binary: the --json
 * report's shape, a 2-rank ring check on loopback, and broken ring configs
 * (a port already bound, a right neighbour that is not there, a bad field),
 * each of which must fail naming the field or the peer at fault. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shardlm_launch.h"
#include "test_util.h"

static void write_cfg(const char *path, const shardlm_ring_config *c)
{
    cr_assert_eq(shardlm_ring_config_write(path, c), 0);
}

/* Runs `doctor --ring-config cfg` in the background, output to files. */
static pid_t spawn_doctor_env(const char *cfg, const char *out, const char *timeout_ms, const char *transport)
{
    char *argv[] = {(char *)tu_bin(), "doctor", "--ring-config", (char *)cfg, "--timeout-ms", (char *)timeout_ms, NULL};
    const char *env[] = {"RING_CONFIG", transport ? transport : "SHARDLM_RING_TRANSPORT", NULL};
    return tu_spawn(argv, env, out, out);
}

static pid_t spawn_doctor(const char *cfg, const char *out, const char *timeout_ms)
{
    return spawn_doctor_env(cfg, out, timeout_ms, NULL);
}

static tu_result run_doctor(const char *cfg, const char *timeout_ms)
{
    char *argv[] = {(char *)tu_bin(), "doctor", "--ring-config", (char *)cfg, "--timeout-ms", (char *)timeout_ms,
                    NULL};
    return tu_run(argv, NULL, 60);
}

Test(doctor, json_report_has_build_flags_and_cpu)
{
    unsetenv("RING_CONFIG");
    char *argv[] = {(char *)tu_bin(), "doctor", "--json", NULL};
    tu_result r = tu_run(argv, NULL, 30);
    cr_assert_eq(r.exit_code, 0, "exit %d: %s%s", r.exit_code, r.out, r.err);
    cJSON *j = cJSON_Parse(r.out);
    cr_assert_not_null(j, "not JSON: %s", r.out);
    cJSON *b = cJSON_GetObjectItem(j, "build");
    cr_assert(cJSON_IsObject(b), "no build object: %s", r.out);
    cr_assert(cJSON_IsBool(cJSON_GetObjectItem(b, "cuda")), "build.cuda: %s", r.out);
    cr_assert(cJSON_IsBool(cJSON_GetObjectItem(b, "nccl")), "build.nccl: %s", r.out);
    cr_assert(cJSON_IsBool(cJSON_GetObjectItem(b, "mpi")), "build.mpi: %s", r.out);
    cJSON *cpu = cJSON_GetObjectItem(j, "cpu");
    cr_assert(cJSON_IsObject(cpu), "no cpu section: %s", r.out);
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(cpu, "model")));
    cr_assert(cJSON_IsArray(cJSON_GetObjectItem(cpu, "simd")));
    cr_assert_geq(cJSON_GetObjectItem(cpu, "logical_cpus")->valuedouble, 1);
    cr_assert_gt(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "memory"), "total_bytes")->valuedouble, 0);
    cr_assert(cJSON_IsObject(cJSON_GetObjectItem(j, "cuda")), "no cuda section: %s", r.out);
    cr_assert(cJSON_IsObject(cJSON_GetObjectItem(j, "nccl")), "no nccl section: %s", r.out);
    cJSON *numa = cJSON_GetObjectItem(j, "numa"), *node0 = cJSON_GetArrayItem(numa, 0);
    cr_assert(cJSON_IsArray(numa) && (cJSON_GetArraySize(numa) == 0 ||
                                      cJSON_IsString(cJSON_GetObjectItem(node0, "cpus"))), "no numa section: %s", r.out);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "ok")), "a check failed: %s", r.out);
    cJSON_Delete(j);
    tu_result_free(&r);
}

Test(doctor, two_ranks_on_loopback_connect_and_time_an_allreduce, .timeout = 60)
{
    shardlm_ring_config cfgs[2];
    cr_assert_eq(shardlm_launch_plan(2, cfgs), 0);
    char cfg[2][512], out[2][512];
    for (int r = 0; r < 2; r++) {
        snprintf(cfg[r], 512, "%s/doc%d.json", tu_tmpdir(), r);
        snprintf(out[r], 512, "%s/doc%d.out", tu_tmpdir(), r);
        write_cfg(cfg[r], &cfgs[r]);
    }
    pid_t p1 = spawn_doctor(cfg[1], out[1], "10000");
    pid_t p0 = spawn_doctor(cfg[0], out[0], "10000");
    int rc0 = tu_wait(p0, 30), rc1 = tu_wait(p1, 30);
    for (int r = 0; r < 2; r++) {
        char *o = tu_read_file(out[r], NULL);
        cr_assert_eq(r ? rc1 : rc0, 0, "rank %d exit %d:\n%s", r, r ? rc1 : rc0, o);
        cr_assert(strstr(o, "ok   allreduce") && strstr(o, "latency") && strstr(o, "sums correct"), "rank %d:\n%s",
                  r, o);
        char want[160];
        snprintf(want, sizeof want, "ok   transport    hop from left rank %d: shared memory (same host); hop to right "
                 "rank %d: shared memory (same host)", 1 - r, 1 - r);
        cr_assert(strstr(o, want), "rank %d lacks '%s':\n%s", r, want, o);
        cr_assert(strstr(o, "FAIL") == NULL, "rank %d:\n%s", r, o);
        free(o);
    }
}

/* One rank asking for TCP takes both hops to TCP, and both ranks say why. */
Test(doctor, one_rank_asking_for_tcp_is_reported_on_both_hops, .timeout = 60)
{
    shardlm_ring_config cfgs[2];
    cr_assert_eq(shardlm_launch_plan(2, cfgs), 0);
    char cfg[2][512], out[2][512];
    for (int r = 0; r < 2; r++) {
        snprintf(cfg[r], 512, "%s/doc%d.json", tu_tmpdir(), r);
        snprintf(out[r], 512, "%s/doc%d.out", tu_tmpdir(), r);
        write_cfg(cfg[r], &cfgs[r]);
    }
    pid_t p1 = spawn_doctor_env(cfg[1], out[1], "10000", "SHARDLM_RING_TRANSPORT=tcp");
    pid_t p0 = spawn_doctor(cfg[0], out[0], "10000");
    int rc0 = tu_wait(p0, 30), rc1 = tu_wait(p1, 30);
    for (int r = 0; r < 2; r++) {
        char *o = tu_read_file(out[r], NULL);
        cr_assert_eq(r ? rc1 : rc0, 0, "rank %d exit %d:\n%s", r, r ? rc1 : rc0, o);
        cr_assert(strstr(o, ": tcp (--ring-transport tcp); hop to right rank") &&
                      strstr(o, "shared memory") == NULL, "rank %d:\n%s", r, o);
        free(o);
    }
}

Test(doctor, port_already_bound_fails_naming_field_port, .timeout = 60)
{
    shardlm_ring_config cfgs[2];
    cr_assert_eq(shardlm_launch_plan(2, cfgs), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfgs[1].port)};
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 1), 0);
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/busy.json", tu_tmpdir());
    write_cfg(cfg, &cfgs[1]);
    tu_result r = run_doctor(cfg, "3000");
    close(fd);
    cr_assert_neq(r.exit_code, 0, "doctor passed with its port taken:\n%s", r.out);
    char want[64];
    snprintf(want, sizeof want, "0.0.0.0:%d", cfgs[1].port);
    cr_assert(strstr(r.out, "FAIL port") && strstr(r.out, "field 'port'") && strstr(r.out, want) &&
                  strstr(r.out, "in use"), "output:\n%s", r.out);
    tu_result_free(&r);
}

Test(doctor, missing_right_neighbour_is_named_after_the_timeout, .timeout = 60)
{
    shardlm_ring_config cfgs[2];
    cr_assert_eq(shardlm_launch_plan(2, cfgs), 0); /* rank 1's port: free, and nobody listens on it */
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/lonely.json", tu_tmpdir());
    write_cfg(cfg, &cfgs[0]);
    time_t t0 = time(NULL);
    tu_result r = run_doctor(cfg, "1500");
    time_t took = time(NULL) - t0;
    cr_assert_eq(r.exit_code, 1, "exit %d:\n%s%s", r.exit_code, r.out, r.err);
    char want[96];
    snprintf(want, sizeof want, "right neighbour rank 1 at 127.0.0.1:%d", cfgs[0].right_port);
    cr_assert(strstr(r.out, "FAIL ring") && strstr(r.out, want), "output:\n%s", r.out);
    cr_assert_geq(took, 1, "failed before the timeout");
    cr_assert_leq(took, 10, "took %ld s", (long)took);
    tu_result_free(&r);
}

Test(doctor, bad_field_value_exits_2_naming_the_field)
{
    char cfg[512];
    snprintf(cfg, sizeof cfg, "%s/badws.json", tu_tmpdir());
    const char *json = "{\"master_ip\":\"127.0.0.1\",\"master_port\":1234,\"port\":1235,\"right_port\":1236,"
                       "\"rank\":0,\"world_size\":3}";
    cr_assert_eq(tu_write_file(cfg, json, strlen(json)), 0);
    tu_result r = run_doctor(cfg, "1000");
    cr_assert_eq(r.exit_code, 2, "exit %d:\n%s", r.exit_code, r.out);
    cr_assert(strstr(r.out, "FAIL ring_config") && strstr(r.out, "field 'world_size'"), "output:\n%s", r.out);
    tu_result_free(&r);

    const char *json2 = "{\"master_ip\":\"127.0.0.1\",\"master_port\":1234,\"port\":\"1235\",\"right_port\":1236,"
                        "\"rank\":0,\"world_size\":2}";
    cr_assert_eq(tu_write_file(cfg, json2, strlen(json2)), 0);
    setenv("RING_CONFIG", cfg, 1); /* the environment variable is read too */
    char *argv[] = {(char *)tu_bin(), "doctor", "--json", NULL};
    r = tu_run(argv, NULL, 30);
    unsetenv("RING_CONFIG");
    cr_assert_eq(r.exit_code, 2, "exit %d:\n%s", r.exit_code, r.out);
    cJSON *j = cJSON_Parse(r.out);
    cr_assert_not_null(j, "not JSON: %s", r.out);
    cr_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "ok")));
    cr_assert(strstr(r.out, "field 'port'") != NULL, "output:\n%s", r.out);
    cJSON_Delete(j);
    tu_result_free(&r);
}
