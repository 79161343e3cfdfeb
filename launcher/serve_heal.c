/* serve_heal.c - see serve_heal.h. Locally spawned workers run with
 * --rejoin, so the survivors of a loss reconnect by themselves and only the
 * lost rank is restarted; with RING_CONFIG (Kubernetes, bare machines)
 * rank 0 only waits, since each worker's own supervisor restarts it. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "serve_heal.h"
#include "shardlm_common.h"

static int heal_exit_code(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

/* Polled every 100 ms while rank 0 waits for the workers. */
static int heal_watch(void *ctx)
{
    shardlm_serve_heal_ctx *h = ctx;
    if (shardlm_sched_stopping(h->s)) {
        shardlm_err_set("stopped while re-forming the cluster");
        return 1;
    }
    int st = 0, r;
    while (h->launch && (r = shardlm_launch_poll(h->launch, &st)) >= 0) {
        fprintf(stderr, "shardlm: worker rank %d exited (status %d); restarting it\n", r, heal_exit_code(st));
        if (shardlm_launch_respawn(h->launch, r)) return 1;
    }
    return 0;
}

/* After a failed attempt every local worker starts afresh: one that is
 * stuck somewhere in its bring-up would otherwise hold the cluster. */
static int heal_restart_all(shardlm_serve_heal_ctx *h)
{
    for (int r = 1; h->launch && r < h->n->world; r++) {
        int rc = shardlm_launch_respawn(h->launch, r);
        if (rc) return rc;
    }
    return SHARDLM_OK;
}

int shardlm_serve_heal(void *ctx, shardlm_sched *s, const char *why)
{
    shardlm_serve_heal_ctx *h = ctx;
    h->s = s;
    double t0 = shardlm_now_s();
    int lost = shardlm_engine_lost_rank(h->n->engine);
    fprintf(stderr, "shardlm: %s\nshardlm: re-forming the cluster (HTTP stays up; requests in flight failed, "
            "queued ones wait)\n", why);
    shardlm_engine_reform_notice(h->n->engine, why);
    if (h->launch && lost > 0) {
        fprintf(stderr, "shardlm: restarting rank %d\n", lost);
        int rc = shardlm_launch_respawn(h->launch, lost);
        if (rc) return rc;
    }
    shardlm_node_opts o = *h->node;
    o.watch = heal_watch;
    o.watch_ctx = h;
    if (h->attempt_ms > 0 && h->attempt_ms < o.connect_timeout_ms) o.connect_timeout_ms = h->attempt_ms;
    for (int attempt = 1;; attempt++) {
        int rc = shardlm_node_reform(&o, h->n);
        if (!rc) {
            fprintf(stderr, "shardlm: the cluster re-formed in %.1f s (attempt %d); serving again\n",
                    shardlm_now_s() - t0, attempt);
            return SHARDLM_OK;
        }
        if (shardlm_sched_stopping(s)) return rc;
        fprintf(stderr, "shardlm: re-forming the cluster, attempt %d: %s; %s\n", attempt, shardlm_err_get(),
                h->launch ? "restarting every local worker" : "waiting for the workers to come back");
        if ((rc = heal_restart_all(h))) return rc;
        for (int i = 0; i < 5 && !shardlm_sched_stopping(s); i++) usleep(100000);
    }
}
