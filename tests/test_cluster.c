/* test_cluster.c - rank processes started the way operators start them:
 * a worker killed mid-generation, ranks started by hand with RING_CONFIG
 * files, and handshake mismatches. Nothing may hang or be left behind. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shardlm_launch.h"
#include "test_util.h"

static pid_t spawn(char *const argv[], const char *ring_config, const char *out_path, const char *err_path)
{
    char env[4200];
    snprintf(env, sizeof env, "RING_CONFIG=%s", ring_config ? ring_config : "");
    const char *e[] = {ring_config ? env : "RING_CONFIG", NULL};
    return tu_spawn(argv, e, out_path, err_path);
}

static int children_of(pid_t parent, pid_t *out, int cap)
{
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < cap) {
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = 0;
        char *rp = strrchr(buf, ')');
        int ppid = 0;
        char st;
        if (rp && sscanf(rp + 2, "%c %d", &st, &ppid) == 2 && ppid == parent) out[n++] = atoi(e->d_name);
    }
    if (d) closedir(d);
    return n;
}

/* Gone, or a zombie nobody has reaped yet: either way no longer running. */
static int is_running(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = 0;
    char *rp = strrchr(buf, ')');
    return rp && rp[2] != 'Z' && rp[2] != 'X';
}

static const char *synth_model(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/slow.gguf", tu_tmpdir());
    if (access(path, R_OK) == 0) return path;
    char *argv[] = {(char *)tu_bin(), "synth", "-o", path, "--dim", "512", "--layers", "8", "--heads", "8",
                    "--kv-heads", "4", "--ffn", "1376", "--vocab", "2048", "--type", "f32", "--seed", "7", NULL};
    tu_result r = tu_run(argv, NULL, 120);
    cr_assert_eq(r.exit_code, 0, "synth failed: %s", r.err);
    tu_result_free(&r);
    return path;
}

Test(cluster, killed_worker_is_named_and_nothing_is_left, .timeout = 120)
{
    const char *model = synth_model();
    char out[512], err[512];
    snprintf(out, sizeof out, "%s/kill.out", tu_tmpdir());
    snprintf(err, sizeof err, "%s/kill.err", tu_tmpdir());
    char *argv[] = {(char *)tu_bin(), "generate", "-m", (char *)model, "-n", "100000", "--world-size", "4",
                    "--timeout-ms", "3000", NULL};
    pid_t pid = spawn(argv, NULL, out, err);
    size_t len = 0;
    for (int i = 0; i < 3000 && len < 20; i++) { /* wait for generation to be under way */
        free(tu_read_file(out, &len));
        usleep(10000);
    }
    cr_assert_geq(len, 20, "generation never started");
    pid_t kids[8];
    int nk = children_of(pid, kids, 8);
    cr_assert_eq(nk, 3, "expected 3 workers, found %d", nk);
    kill(kids[1], SIGKILL);
    time_t t0 = time(NULL);
    int rc = tu_wait(pid, 20);
    cr_assert_eq(rc, 1, "generate exit %d", rc);
    cr_assert_leq(time(NULL) - t0, 5, "took %ld s to notice", (long)(time(NULL) - t0));
    char *e = tu_read_file(err, NULL);
    cr_assert(strstr(e, "is lost") != NULL && strstr(e, "rank ") != NULL, "stderr: %s", e);
    free(e);
    usleep(300000);
    for (int i = 0; i < nk; i++) cr_assert(!is_running(kids[i]), "worker pid %d still running", kids[i]);
}

static void write_configs(int world, char paths[][512])
{
    shardlm_ring_config cfgs[8];
    cr_assert_eq(shardlm_launch_plan(world, cfgs), 0);
    for (int r = 0; r < world; r++) {
        snprintf(paths[r], 512, "%s/ring%d.json", tu_tmpdir(), r);
        cr_assert_eq(shardlm_ring_config_write(paths[r], &cfgs[r]), 0);
    }
}

/* The manual multi-machine path, on one machine: rank 0 runs generate, the
 * others run worker, each with its own RING_CONFIG. */
Test(cluster, ranks_started_by_hand_reproduce_the_golden_text, .timeout = 120)
{
    char model[512], cfg[2][512], out[2][512], err[2][512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    write_configs(2, cfg);
    for (int r = 0; r < 2; r++) {
        snprintf(out[r], 512, "%s/hand%d.out", tu_tmpdir(), r);
        snprintf(err[r], 512, "%s/hand%d.err", tu_tmpdir(), r);
    }
    char *wargv[] = {(char *)tu_bin(), "worker", "-m", model, NULL};
    char *gargv[] = {(char *)tu_bin(), "generate", "-m", model, "--temp", "0", "-n", "256", NULL};
    pid_t w = spawn(wargv, cfg[1], out[1], err[1]);
    pid_t g = spawn(gargv, cfg[0], out[0], err[0]);
    int grc = tu_wait(g, 60), wrc = tu_wait(w, 10);
    char *text = tu_read_file(out[0], NULL), *want = tu_read_file(tu_shared("models/stories260K.greedy.txt"), NULL);
    char *e = tu_read_file(err[0], NULL);
    cr_assert_eq(grc, 0, "generate exit %d: %s", grc, e);
    cr_assert_eq(wrc, 0, "worker exit %d", wrc);
    cr_assert_str_eq(text, want);
    free(text); free(want); free(e);
}

Test(cluster, different_model_files_fail_the_handshake_on_both_sides, .timeout = 60)
{
    char m0[512], m1[512], cfg[2][512], out[2][512], err[2][512];
    snprintf(m0, sizeof m0, "%s", tu_shared("models/stories260K.gguf"));
    snprintf(m1, sizeof m1, "%s", tu_shared("models/llama-2-tiny-random.gguf"));
    write_configs(2, cfg);
    for (int r = 0; r < 2; r++) {
        snprintf(out[r], 512, "%s/fp%d.out", tu_tmpdir(), r);
        snprintf(err[r], 512, "%s/fp%d.err", tu_tmpdir(), r);
    }
    char *wargv[] = {(char *)tu_bin(), "worker", "-m", m1, NULL};
    char *gargv[] = {(char *)tu_bin(), "generate", "-m", m0, "--temp", "0", "-n", "8", NULL};
    pid_t w = spawn(wargv, cfg[1], out[1], err[1]);
    pid_t g = spawn(gargv, cfg[0], out[0], err[0]);
    int grc = tu_wait(g, 30), wrc = tu_wait(w, 30);
    char *e0 = tu_read_file(err[0], NULL), *e1 = tu_read_file(err[1], NULL);
    cr_assert_eq(grc, 2, "generate exit %d: %s", grc, e0);
    cr_assert_eq(wrc, 2, "worker exit %d: %s", wrc, e1);
    cr_assert(strstr(e0, "model fingerprint") != NULL, "rank 0 stderr: %s", e0);
    cr_assert(strstr(e1, "refused the handshake of rank 1") && strstr(e1, "model fingerprint"), "worker: %s", e1);
    free(e0); free(e1);
}

Test(cluster, worker_with_broken_ring_config_exits_2_naming_file_and_field)
{
    char path[512];
    snprintf(path, sizeof path, "%s/bad.json", tu_tmpdir());
    const char *json = "{\"master_ip\":\"127.0.0.1\",\"master_port\":1234,\"port\":1235,\"right_port\":1236,"
                       "\"rank\":1,\"world_size\":3}";
    cr_assert_eq(tu_write_file(path, json, strlen(json)), 0);
    char model[512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    char *argv[] = {(char *)tu_bin(), "worker", "-m", model, "--ring-config", path, NULL};
    tu_result r = tu_run(argv, NULL, 30);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, path) && strstr(r.err, "world_size"), "stderr: %s", r.err);
    tu_result_free(&r);
}

Test(cluster, worker_refuses_rank_0)
{
    char cfg[2][512], model[512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    write_configs(2, cfg);
    char *argv[] = {(char *)tu_bin(), "worker", "-m", model, "--ring-config", cfg[0], NULL};
    tu_result r = tu_run(argv, NULL, 30);
    cr_assert_eq(r.exit_code, 2);
    cr_assert(strstr(r.err, "field 'rank'") != NULL, "stderr: %s", r.err);
    tu_result_free(&r);
}
