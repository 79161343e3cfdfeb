/* cmd_worker.c - `shardlm worker`: a rank other than 0. It joins rank 0's
 * control channel and the ring named by RING_CONFIG, loads its shard, and
 * runs whatever steps rank 0 sends until told to stop. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "node.h"
#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "weights.h"

static void worker_usage(FILE *f)
{
    fprintf(f, "usage: RING_CONFIG=rankK.json shardlm worker (-m MODEL | --weights-from rank0) [options]\n"
               "  -m, --model PATH            GGUF model file (the same file as rank 0)\n"
               "      --weights-from rank0    no model file: rank 0 sends this rank's shard, kept in the cache\n"
               "      --weights-cache DIR     where received shards are cached (default: $SHARDLM_WEIGHTS_CACHE,\n"
               "                              else $XDG_CACHE_HOME/shardlm/weights, else ~/.cache/shardlm/weights)\n"
               "      --ring-config PATH      ring config (default: $RING_CONFIG)\n"
               "      --timeout-ms MS         collective and control timeout (default 30000)\n"
               "      --connect-timeout-ms MS ring and control set-up deadline (default 60000)\n"
               "      --idle-timeout-ms MS    longest wait for rank 0's next message (default 600000)\n"
               "      --threads N             kernel threads (default: physical cores / SHARDLM_LOCAL_WORLD_SIZE)\n"
               "      --pin-threads           pin each kernel thread to a core\n"
               "      --comm KIND             auto (default), ring or nccl: the same as rank 0's\n"
               "      --ring-transport T      the ring's hops: auto (default: shared memory between ranks\n"
               "                              on one host, TCP across hosts), tcp or shm\n"
               "      --numa                  pin this rank to its share of the NUMA nodes and cores (its place:\n"
               "                              $SHARDLM_LOCAL_RANK, else rank mod SHARDLM_LOCAL_WORLD_SIZE)\n"
               "      --device DEV            cpu (default), cuda or cuda:K\n"
               "      --ready-file PATH       create PATH once joined and loaded, remove it when this rank stops\n"
               "                              following rank 0 (a readiness probe: `test -f PATH`)\n");
}

int shardlm_cmd_worker(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},          {"ring-config", required_argument, 0, 'r'},
        {"timeout-ms", required_argument, 0, 't'},     {"connect-timeout-ms", required_argument, 0, 'c'},
        {"idle-timeout-ms", required_argument, 0, 'i'}, {"help", no_argument, 0, 'h'},
        {"threads", required_argument, 0, 'j'},        {"pin-threads", no_argument, 0, 'J'},
        {"weights-from", required_argument, 0, 'w'},    {"weights-cache", required_argument, 0, 'W'},
        {"comm", required_argument, 0, 'K'},           {"device", required_argument, 0, 'D'},
        {"ring-transport", required_argument, 0, 'R'}, {"numa", no_argument, 0, 'U'},
        {"ready-file", required_argument, 0, 'Y'},     {0, 0, 0, 0}};
    shardlm_node_opts o = {.ring_config = getenv("RING_CONFIG"), .timeout_ms = 30000, .connect_timeout_ms = 60000,
                           .load_timeout_ms = 600000, .max_batch = 1, .isq = -1};
    const char *lws = getenv("SHARDLM_LOCAL_WORLD_SIZE");
    if (!lws) lws = getenv("MISTRALRS_MN_LOCAL_WORLD_SIZE");
    o.local_ranks = lws ? atoi(lws) : 1;
    int idle_ms = 600000, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o.model_path = optarg; break;
        case 'r': o.ring_config = optarg; break;
        case 't': o.timeout_ms = atoi(optarg); break;
        case 'c': o.connect_timeout_ms = atoi(optarg); break;
        case 'i': idle_ms = atoi(optarg); break;
        case 'j': o.n_threads = atoi(optarg); break;
        case 'J': o.pin_threads = 1; break;
        case 'K': o.comm = optarg; break;
        case 'R': if (shardlm_node_ring_transport_check(optarg, "worker")) return 2; o.ring_transport = optarg; break;
        case 'U': o.numa = 1; break;
        case 'D': o.device = optarg; break;
        case 'w': o.weights_from = optarg; break;
        case 'W': o.weights_cache = optarg; break;
        case 'Y': o.ready_file = optarg; break;
        case 'h': worker_usage(stdout); return 0;
        default: worker_usage(stderr); return 2;
        }
    }
    const char *wbad = shardlm_weights_flags_check(o.model_path, o.weights_from, 1);
    if (wbad || !o.ring_config || o.timeout_ms <= 0 || o.connect_timeout_ms <= 0 || idle_ms <= 0) {
        fprintf(stderr, "shardlm worker: %s\n", wbad ? wbad
                                               : !o.ring_config ? "RING_CONFIG (or --ring-config) is required"
                                                                 : "timeouts must be positive");
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
