/* node.h - bringing up one rank: config, model file, control handshake,
 * collective, shard and engine, in that order. Shared by `generate` (rank
 * 0) and `worker` (the others). Internal to the launcher. */
#ifndef SHARDLM_NODE_H
#define SHARDLM_NODE_H

#include "flags.h"
#include "shardlm_gguf.h"
#include "shardlm_launch.h"
#include "shardlm_ring.h"
#include "shardlm_runtime.h"
#include "shardlm_text.h"

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
    int kv_type;             /* rank 0: --kv-cache-type (shardlm_dtype; 0 is f32); workers learn it */
    int comm_q8;             /* rank 0: --comm-dtype q8; workers learn it */
    int (*watch)(void *ctx); /* rank 0: polled while waiting for workers */
    void *watch_ctx;
    const char *comm;        /* --comm: "auto" (NULL), "ring", "mpi" or "nccl" */
    const char *ring_transport; /* --ring-transport: "auto", "tcp", "shm"; NULL: $SHARDLM_RING_TRANSPORT or auto */
    int numa;                /* --numa: pin this rank to its share of the NUMA nodes and cores */
    const char *device;      /* --device: NULL or "cpu", "cuda" or "cuda:K" */
    const char *weights_from;  /* "rank0": workers get their shard's bytes from rank 0 (launcher/weights.h) */
    const char *weights_cache; /* workers' weights cache directory (NULL: the default) */
    int rejoin;                /* worker: after losing rank 0 or the ring, connect again instead of exiting */
    int idle_timeout_ms;       /* local workers (spawn_local): their --idle-timeout-ms; 0: their default */
    const char *ready_file;    /* worker: exists only while this rank is up and following rank 0 */
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
    int kv_type;               /* its element type, rank 0's --kv-cache-type */
    int comm_q8;               /* rank 0's --comm-dtype q8 */
    const char *comm_kind;     /* "ring", "mpi", "nccl" (resolved from --comm) */
    int mpi;                   /* rank and world came from mpirun */
    int local_rank, local_ranks;
    int device;                /* CUDA device, -1 for the CPU */
} shardlm_node;

/* Resolves --comm: auto picks nccl for a CUDA --device, mpi under mpirun,
 * and otherwise the ring. Fails with SHARDLM_EINPUT on an unknown name. */
int shardlm_node_comm_kind(const shardlm_node_opts *o, const char **kind);
/* Registers the transports the launcher links (ring, NCCL) with the
 * collectives' registry, so shardlm_comm_open finds them; idempotent. */
void shardlm_node_transports(void);
/* Under mpirun (with an MPI backend): initialises MPI and returns this
 * process's rank in *rank; otherwise *rank = -1. Commands call this first so
 * ranks other than 0 can turn into workers. */
int shardlm_node_mpi_rank(const shardlm_node_opts *o, int *rank);
/* For `generate` and `serve` under mpirun: ranks other than 0 run as
 * workers here. Returns the exit status to return (a worker's, or 2 / 1 for
 * a bad start, with the message printed), or -1 when this process goes on
 * as rank 0 (or was not started by mpirun). local_world is --world-size. */
int shardlm_node_mpi_dispatch(const shardlm_node_opts *o, int local_world, const char *who);
/* A whole worker rank: open, report memory, run rank 0's steps until told to
 * stop (or idle_ms passes without a message). With o->ready_file, that file
 * is removed first, created once the rank is up and removed when the steps
 * end. Returns the exit status. */
int shardlm_node_worker_main(const shardlm_node_opts *o, int idle_ms, const char *who);

/* Spawns world-1 local `shardlm worker` processes for o's model on a
 * loopback ring, points o->ring_config at rank 0's config, sets
 * o->local_ranks, and makes o->watch notice a worker that dies during
 * start-up. Free *out with shardlm_launch_free. */
int shardlm_node_spawn_local(shardlm_node_opts *o, int world, shardlm_launch **out);

/* Checks a --ring-transport value; returns 0 or prints "shardlm WHO:
 * invalid value ..." and returns SHARDLM_EINPUT. */
int shardlm_node_ring_transport_check(const char *value, const char *who);

/* --kv-cache-type: "f32", "f16" or "q8_0" -> its shardlm_dtype; -1 otherwise. */
int shardlm_node_kv_type_parse(const char *name);

/* Rank 0 of a ring cluster, after a rank was lost: drops its ring and
 * worker connections (the control listener stays), accepts the workers
 * again (the handshake checks fingerprint and world size as at start-up;
 * o->watch is polled meanwhile), serves their weights, connects the ring,
 * and points the engine at the new communicator. The model, tokenizer and
 * KV pool of rank 0 are kept. */
int shardlm_node_reform(const shardlm_node_opts *o, shardlm_node *n);
/* One of the node's flags from the table (launcher/flags.h) into o:
 * -m, --ctx, --timeout-ms, --comm, ... Returns 0, or -1 after printing one
 * line naming the flag (who is the command). */
int shardlm_node_flag(shardlm_node_opts *o, const shardlm_flag_value *v, const char *who);

/* Brings the rank up. Returns a status; the error text says what failed. */
int shardlm_node_open(const shardlm_node_opts *o, shardlm_node *n);
void shardlm_node_close(shardlm_node *n);
/* Collective: every rank reports shard size and resident memory; rank 0
 * prints them to stderr under the heading `when`. */
int shardlm_node_report_memory(shardlm_node *n, const char *when);

#endif
