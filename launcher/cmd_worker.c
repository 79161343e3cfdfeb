/* cmd_worker.c - `shardlm worker`: a rank other than 0. It joins rank 0's
 * control channel and the ring named by RING_CONFIG, loads its shard, and
 * runs whatever steps rank 0 sends until told to stop. */
#include <stdio.h>
#include <stdlib.h>

#include "node.h"
#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "weights.h"

typedef struct {
    shardlm_node_opts node;
    int idle_ms;
} worker_opts;

static int worker_flag(void *ctx, const shardlm_flag_value *v)
{
    worker_opts *w = ctx;
    if (v->flag->id == F_IDLE_TIMEOUT) {
        w->idle_ms = (int)v->i;
        return 0;
    }
    return shardlm_node_flag(&w->node, v, "worker");
}

/* SHARDLM_LOCAL_WORLD_SIZE: the ranks on this machine, for the default
 * thread count; a bad value is an input error naming it. */
static int worker_local_ranks(int *out)
{
    const char *name = "SHARDLM_LOCAL_WORLD_SIZE", *lws = getenv(name);
    if (!lws) lws = getenv(name = "MISTRALRS_MN_LOCAL_WORLD_SIZE");
    *out = 1;
    if (!lws) return 0;
    char *end;
    long v = strtol(lws, &end, 10);
    if (!*lws || *end || v < 1 || v > 1024) {
        fprintf(stderr, "shardlm worker: invalid value '%s' for $%s (an integer in 1..1024)\n", lws, name);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int shardlm_cmd_worker(int argc, char **argv)
{
    worker_opts w = {.node = {.ring_config = getenv("RING_CONFIG"), .timeout_ms = 30000,
                              .connect_timeout_ms = 60000, .load_timeout_ms = 600000, .max_batch = 1, .isq = -1},
                     .idle_ms = 600000};
    shardlm_node_opts o;
    int prc = shardlm_flags_parse("worker", argc, argv, worker_flag, &w, NULL);
    if (prc) return prc > 0 ? 0 : 2;
    if (worker_local_ranks(&w.node.local_ranks)) return 2;
    o = w.node;
    int idle_ms = w.idle_ms;
    const char *wbad = shardlm_weights_flags_check(o.model_path, o.weights_from, 1);
    if (wbad || !o.ring_config) {
        fprintf(stderr, "shardlm worker: %s\n", wbad ? wbad : "RING_CONFIG (or --ring-config) is required");
        return 2;
    }
    shardlm_ring_config cfg = {0};
    int rc = shardlm_ring_config_load(o.ring_config, &cfg);
    if (!rc && cfg.rank == 0) {
        shardlm_err_set("%s: field 'rank': rank 0 runs `shardlm generate` (or `serve`), not `worker`", o.ring_config);
        rc = SHARDLM_EINPUT;
    }
    if (rc) {
        fprintf(stderr, "shardlm worker: %s\n", shardlm_err_get());
        return shardlm_exit_code(rc);
    }
    return shardlm_node_worker_main(&o, idle_ms, "worker");
}
