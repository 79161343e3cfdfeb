/* cmd_launch.c - `shardlm launch -n W [--timeout S] -- COMMAND [ARGS...]`:
 * runs W local ranks of COMMAND on a loopback ring, each with its own
 * RING_CONFIG, and fails as a whole as soon as one rank fails. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "flags.h"
#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "shardlm_launch.h"

#define LAUNCH_GRACE_MS 3000

typedef struct {
    int world, timeout_s;
} launch_opts;

static int launch_flag(void *ctx, const shardlm_flag_value *v)
{
    launch_opts *o = ctx;
    if (v->flag->id == F_LAUNCH_WORLD) o->world = (int)v->i;
    else o->timeout_s = (int)v->i; /* F_LAUNCH_TIMEOUT, the only other */
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
    launch_opts o = {0, 0};
    int i = argc, prc = shardlm_flags_parse("launch", argc, argv, launch_flag, &o, &i);
    if (prc) return prc > 0 ? 0 : 2;
    int world = o.world, timeout_s = o.timeout_s;
    if (world == 0 || i >= argc) {
        fprintf(stderr, "shardlm launch: %s (try 'shardlm launch --help')\n",
                world == 0 ? "-n W is required" : "no COMMAND after --");
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
