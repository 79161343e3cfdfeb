/* node.h - bringing up one rank: config, model file, control handshake,
 * collective, shard and engine, in that order. Shared by `generate` (rank
 * 0) and `worker` (the others). Internal to the launcher. */
#ifndef SHARDLM_NODE_H
#define SHARDLM_NODE_H

#include "shardlm_gguf.h"
#include "shardlm_launch.h"
#include "shardlm_ring.h"
#include "shardlm_runtime.h"
#include "shardlm_tokenizer.h"

typedef struct {
    const char *model_path;
    const char *ring_config; /* NULL: world size 1 */
    int timeout_ms;          /* each collective and control message */
    int connect_timeout_ms;  /* ring and control set-up */
    int load_timeout_ms;     /* how long ranks wait for each other to load */
    int n_ctx;               /* rank 0: 0 means the model's context length */
    int max_batch;           /* rank 0 */
    int n_threads;           /* kernel threads of this rank; 0: its share of the cores */
    int local_ranks;         /* ranks sharing this machine, for the default thread count */
    int pin_threads;
    int isq;                 /* rank 0: in-situ quantisation type, -1 none; workers learn it */
    double kv_cache_mb;      /* rank 0: paged KV pool per rank; 0: one sequence of n_ctx */
    int block_size;          /* rank 0: positions per KV block (default 16) */
    int (*watch)(void *ctx); /* rank 0: polled while waiting for workers */
    void *watch_ctx;
} shardlm_node_opts;

typedef struct {
    int rank, world;
    shardlm_ring_config cfg;
    shardlm_tokenizer *tok; /* rank 0 only */
    shardlm_ctrl *ctrl;
    shardlm_comm *comm;
    shardlm_model *model;
    shardlm_engine *engine;
    double load_s;
    int n_threads;
    int kv_blocks, block_size; /* the KV pool every rank holds */
} shardlm_node;

/* Spawns world-1 local `shardlm worker` processes for o's model on a
 * loopback ring, points o->ring_config at rank 0's config, sets
 * o->local_ranks, and makes o->watch notice a worker that dies during
 * start-up. Free *out with shardlm_launch_free. */
int shardlm_node_spawn_local(shardlm_node_opts *o, int world, shardlm_launch **out);

/* Brings the rank up. Returns a status; the error text says what failed. */
int shardlm_node_open(const shardlm_node_opts *o, shardlm_node *n);
void shardlm_node_close(shardlm_node *n);
/* Collective: every rank reports shard size and resident memory; rank 0
 * prints them to stderr under the heading `when`. */
int shardlm_node_report_memory(shardlm_node *n, const char *when);

#endif
