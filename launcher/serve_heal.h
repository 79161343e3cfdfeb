/* serve_heal.h - `serve`'s supervision: when a rank is lost, rank 0's
 * HTTP server and queue stay up while the cluster re-forms behind them.
 * Internal to the launcher. */
#ifndef SHARDLM_SERVE_HEAL_H
#define SHARDLM_SERVE_HEAL_H

#include "node.h"
#include "scheduler.h"

typedef struct {
    const shardlm_node_opts *node; /* rank 0's bring-up options */
    shardlm_node *n;
    shardlm_launch *launch;        /* local workers to restart; NULL: their supervisor restarts them */
    int attempt_ms;                /* how long one re-forming attempt waits for the workers */
    shardlm_sched *s;              /* set by the callback */
} shardlm_serve_heal_ctx;

/* A shardlm_sched_heal_fn (ctx: a shardlm_serve_heal_ctx): tells the workers
 * still connected to re-form, restarts the lost local rank (SIGKILL first
 * when it is stopped or hung) and any local worker that exits meanwhile,
 * then re-forms the cluster (shardlm_node_reform), attempt after attempt,
 * until it is back or the scheduler is stopped. */
int shardlm_serve_heal(void *ctx, shardlm_sched *s, const char *why);

#endif
