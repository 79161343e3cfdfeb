/* test_ready_file.c - `shardlm worker --ready-file PATH`, the signal the
 * Kubernetes readiness probe of a worker pod tests for (deploy/k8s): the
 * file exists only while the worker is joined to rank 0 and loaded; a stale
 * one is removed at start, an unwritable path is refused up front. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shardlm_launch.h"
#include "test_util.h"

static void write_configs(int world, char paths[][512])
{
    shardlm_ring_config cfgs[8];
    cr_assert_eq(shardlm_launch_plan(world, cfgs), 0);
    for (int r = 0; r < world; r++) {
        snprintf(paths[r], 512, "%s/ring%d.json", tu_tmpdir(), r);
        cr_assert_eq(shardlm_ring_config_write(paths[r], &cfgs[r]), 0);
    }
}

static pid_t spawn_with(char *const argv[], const char *cfg, const char *log)
{
    char env[600];
    snprintf(env, sizeof env, "RING_CONFIG=%s", cfg);
    const char *e[] = {env, NULL};
    return tu_spawn(argv, e, log, log);
}

/* Polls up to limit_ms for path to exist (want 1) or not (want 0). */
static int wait_for(const char *path, int want, int limit_ms)
{
    for (int t = 0; t < limit_ms; t += 20) {
        if ((access(path, F_OK) == 0) == want) return 1;
        tu_nap_ms(20);
    }
    return 0;
}

Test(ready_file, exists_while_joined_and_is_gone_after_rank_0_stops, .timeout = 120)
{
    char model[512], cfg[2][512], ready[512], wlog[512], slog[512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    write_configs(2, cfg);
    snprintf(ready, sizeof ready, "%s/worker.ready", tu_tmpdir());
    snprintf(wlog, sizeof wlog, "%s/worker.log", tu_tmpdir());
    snprintf(slog, sizeof slog, "%s/serve.log", tu_tmpdir());
    cr_assert_eq(tu_write_file(ready, "stale\n", 6), 0);
    char *wargv[] = {(char *)tu_bin(), "worker", "-m", model, "--ready-file", ready, NULL};
    pid_t w = spawn_with(wargv, cfg[1], wlog);
    /* before rank 0 exists the worker cannot be ready: the stale file must go */
    cr_assert(wait_for(ready, 0, 10000), "the stale ready file was not removed at start");
    tu_nap_ms(300);
    cr_assert_neq(access(ready, F_OK), 0, "ready file exists before rank 0 is up");
    char *sargv[] = {(char *)tu_bin(), "serve", "-m", model, "--port", "0", NULL};
    pid_t s = spawn_with(sargv, cfg[0], slog);
    cr_assert(wait_for(ready, 1, 60000), "the worker never wrote its ready file");
    char *text = tu_read_file(ready, NULL);
    cr_assert_str_eq(text, "rank 1: joined rank 0, weights loaded\n");
    free(text);
    int up = 0; /* serve takes SIGTERM gracefully once it says it is ready */
    for (int t = 0; t < 30000 && !up; t += 20) {
        char *log = tu_read_file(slog, NULL);
        up = log && strstr(log, "shardlm: ready on") != NULL;
        free(log);
        if (!up) tu_nap_ms(20);
    }
    cr_assert(up, "serve never became ready");
    kill(s, SIGTERM); /* rank 0 stops: the worker gets its Shutdown and stops following */
    int src = tu_wait(s, 30), wrc = tu_wait(w, 30);
    cr_assert_eq(src, 0, "serve exit %d", src);
    cr_assert_eq(wrc, 0, "worker exit %d", wrc);
    cr_assert_neq(access(ready, F_OK), 0, "ready file left behind after the worker stopped");
}

Test(ready_file, worker_that_never_joins_leaves_no_ready_file, .timeout = 60)
{
    char model[512], cfg[2][512], ready[512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    write_configs(2, cfg); /* nobody runs rank 0 */
    snprintf(ready, sizeof ready, "%s/lonely.ready", tu_tmpdir());
    cr_assert_eq(tu_write_file(ready, "stale\n", 6), 0);
    char *argv[] = {(char *)tu_bin(), "worker", "-m", model, "--ready-file", ready, "--ring-config", cfg[1],
                    "--connect-timeout-ms", "1000", NULL};
    tu_result r = tu_run(argv, NULL, 30);
    cr_assert_neq(r.exit_code, 0, "worker without rank 0 exited 0: %s", r.err);
    cr_assert_neq(access(ready, F_OK), 0, "ready file exists although the worker never joined");
    tu_result_free(&r);
}

Test(ready_file, unwritable_path_is_refused_before_joining)
{
    char model[512], cfg[2][512];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    write_configs(2, cfg);
    char *argv[] = {(char *)tu_bin(), "worker", "-m", model, "--ready-file", "/nonexistent-dir/ready",
                    "--ring-config", cfg[1], "--connect-timeout-ms", "60000", NULL};
    tu_result r = tu_run(argv, NULL, 20); /* well before the connect timeout */
    cr_assert_eq(r.exit_code, 2, "exit %d: %s", r.exit_code, r.err);
    cr_assert(strstr(r.err, "--ready-file /nonexistent-dir/ready: cannot create it") != NULL, "stderr: %s", r.err);
    tu_result_free(&r);
}
