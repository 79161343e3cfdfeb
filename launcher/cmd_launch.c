/* cmd_launch.c - `shardlm launch -n W [--timeout S] -- COMMAND [ARGS...]`:
 * runs W local ranks of COMMAND on a loopback ring, each with its own
 * RING_CONFIG, and fails as a whole as soon as one rank fails. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "shardlm_launch.h"

#define LAUNCH_GRACE_MS 3000

static void launch_usage(FILE *f)
{
    fprintf(f, "usage: shardlm launch -n W [--timeout S] -- COMMAND [ARGS...]\n"
               "  Runs W copies of COMMAND (ranks 0..W-1) on a loopback ring. Each gets\n"
               "  RING_CONFIG (its ring config file) and SHARDLM_RANK in its environment.\n"
               "  -n W          number of ranks: a power of two, 1..1024\n"
               "  --timeout S   kill every rank and fail after S seconds (default: none)\n"
               "Exits 0 when every rank exits 0; otherwise reports the first failing rank,\n"
               "stops the others and exits 1.\n");
}

static int launch_parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static void launch_describe(int rank, int st)
{
    if (WIFSIGNALED(st))
        fprintf(stderr, "shardlm launch: rank %d killed by signal %d\n", rank, WTERMSIG(st));
    else
        fprintf(stderr, "shardlm launch: rank %d exited with status %d\n", rank, WEXITSTATUS(st));
}

/* Waits for every rank; returns the exit status of `shardlm launch`. */
static int launch_supervise(shardlm_launch *l, int world, int timeout_s)
{
    uint64_t t0 = shardlm_now_ns();
    for (int left = world; left > 0;) {
        int ms = -1;
        if (timeout_s > 0) {
            uint64_t spent = (shardlm_now_ns() - t0) / 1000000u;
            ms = spent >= (uint64_t)timeout_s * 1000u ? 0 : (int)((uint64_t)timeout_s * 1000u - spent);
        }
        int st = 0, r = shardlm_launch_wait_any(l, ms, &st);
        if (r < 0) {
            fprintf(stderr, "shardlm launch: timed out after %d s; killing all ranks\n", timeout_s);
            shardlm_launch_kill(l, SIGKILL);
            return 1;
        }
        left--;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;
        launch_describe(r, st);
        shardlm_launch_kill(l, SIGTERM);
        shardlm_launch_wait(l, LAUNCH_GRACE_MS);
        return 1;
    }
    return 0;
}

int shardlm_cmd_launch(int argc, char **argv)
{
    int world = 0, timeout_s = 0, i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            launch_usage(stdout);
            return 0;
        }
        if ((!strcmp(a, "-n") || !strcmp(a, "--world-size")) && i + 1 < argc) {
            if (launch_parse_int(argv[++i], 1, 1024, &world) || (world & (world - 1))) {
                fprintf(stderr, "shardlm launch: -n %s: expected a power of two in 1..1024\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(a, "--timeout") && i + 1 < argc) {
            if (launch_parse_int(argv[++i], 1, 86400 * 7, &timeout_s)) {
                fprintf(stderr, "shardlm launch: --timeout %s: expected seconds (a positive integer)\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "shardlm launch: unexpected argument '%s'\n", a);
            launch_usage(stderr);
            return 2;
        }
    }
    if (world == 0 || i >= argc) {
        fprintf(stderr, "shardlm launch: %s\n", world == 0 ? "-n W is required" : "no COMMAND after --");
        launch_usage(stderr);
        return 2;
    }
    shardlm_ring_config *cfgs = calloc((size_t)world, sizeof *cfgs);
    shardlm_launch *l = NULL;
    int rc = cfgs ? shardlm_launch_plan(world, cfgs) : SHARDLM_ENOMEM;
    if (rc == SHARDLM_OK) rc = shardlm_launch_start(world, 0, cfgs, argv + i, &l, NULL);
    free(cfgs);
    if (rc) {
        fprintf(stderr, "shardlm launch: %s\n", shardlm_err_get());
        return 1;
    }
    int code = launch_supervise(l, world, timeout_s);
    shardlm_launch_free(l);
    return code;
}
