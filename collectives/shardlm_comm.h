/* shardlm_comm.h - the collective API. A communicator has a rank and a world
 * size; transports (local and MPI here, ring in ring/, NCCL in nccl/)
 * implement the vtable and are opened by name through shardlm_comm_open.
 *
 * Every call takes a timeout in milliseconds. On a timeout or a dead peer a
 * call returns SHARDLM_ETIMEDOUT or SHARDLM_EPEER within timeout + 1 s and
 * sets the error text, naming the peer. After such an error the communicator
 * is broken: every later call fails at once. Calls do not allocate. */
#ifndef SHARDLM_COMM_H
#define SHARDLM_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef struct shardlm_comm shardlm_comm;

typedef struct {
    const char *name;
    int (*allreduce_f32)(shardlm_comm *c, float *buf, size_t n, int timeout_ms);
    int (*allgather)(shardlm_comm *c, const void *send, size_t bytes, void *recv, int timeout_ms);
    int (*gatherv)(shardlm_comm *c, const void *send, const size_t *bytes, void *recv, int timeout_ms);
    int (*broadcast)(shardlm_comm *c, void *buf, size_t bytes, int root, int timeout_ms);
    int (*barrier)(shardlm_comm *c, int timeout_ms);
    void (*destroy)(shardlm_comm *c);
    unsigned caps; /* SHARDLM_COMM_CAP_* bits (0: host memory only) */
} shardlm_comm_ops;

/* The collectives take device (CUDA) pointers as well as host ones, so a
 * forward pass on a GPU hands them its buffers without a host copy (NCCL). */
#define SHARDLM_COMM_CAP_DEVICE_MEM 1u

/* Transports embed this as their first member. */
struct shardlm_comm {
    const shardlm_comm_ops *ops;
    int rank;
    int world_size;
    int broken;
    int fault_peer; /* after a failed call: the rank it was waiting on, or -1 (set by the transport) */
};

static inline int shardlm_comm_rank(const shardlm_comm *c) { return c->rank; }
static inline int shardlm_comm_size(const shardlm_comm *c) { return c->world_size; }
static inline const char *shardlm_comm_name(const shardlm_comm *c) { return c->ops->name; }
/* Whether the transport has capability cap (a SHARDLM_COMM_CAP_* bit). */
static inline int shardlm_comm_has(const shardlm_comm *c, unsigned cap) { return (c->ops->caps & cap) != 0; }
/* After a call failed: the peer rank it was waiting on (a worker reports it
 * to rank 0 in its Fault message), or -1 when the transport cannot tell. */
static inline int shardlm_comm_fault_peer(const shardlm_comm *c) { return c ? c->fault_peer : -1; }

/* Sum all-reduce in place over n floats (any n, including n < world size). */
int shardlm_comm_allreduce_f32(shardlm_comm *c, float *buf, size_t n, int timeout_ms);
/* recv holds world_size * bytes: rank r's block at r * bytes. */
int shardlm_comm_allgather(shardlm_comm *c, const void *send, size_t bytes, void *recv, int timeout_ms);
/* Gather to rank 0 only. bytes[r] is rank r's size (known to all ranks);
 * rank 0's recv receives the blocks back to back in rank order. recv is
 * ignored on other ranks. */
int shardlm_comm_gatherv(shardlm_comm *c, const void *send, const size_t *bytes, void *recv, int timeout_ms);
int shardlm_comm_broadcast(shardlm_comm *c, void *buf, size_t bytes, int root, int timeout_ms);
int shardlm_comm_barrier(shardlm_comm *c, int timeout_ms);
void shardlm_comm_destroy(shardlm_comm *c);

/* --comm-dtype q8 (collectives/allreduce_q8.c): a sum all-reduce with Q8_0
 * blocks on the wire, over any transport's all-gather. Each rank's part is
 * quantised once, all-gathered and summed in rank order, so every rank gets
 * identical results. scratch holds shardlm_comm_allreduce_q8_scratch(world,
 * n) bytes (the call does not allocate). World size 1 is the f32 call. */
size_t shardlm_comm_allreduce_q8_scratch(int world, size_t n);
int shardlm_comm_allreduce_q8(shardlm_comm *c, float *buf, size_t n, uint8_t *scratch, int timeout_ms);

/* ---- the transports' registry (collectives/comm_open.c) ---- */

/* What opening a communicator needs: this rank's place, the deadline for
 * connecting or joining, and the transport's own settings (config: ring's
 * shardlm_ring_open_config, NCCL's shardlm_nccl_open_config; NULL for
 * local and mpi). */
typedef struct {
    int rank;
    int world_size;
    int timeout_ms;
    const void *config;
} shardlm_comm_open_opts;

/* One transport: its --comm name, the file it lives in, and its opener. */
typedef struct {
    const char *name;
    const char *home;
    int (*open)(const shardlm_comm_open_opts *o, shardlm_comm **out);
} shardlm_comm_transport;

/* Adds t (kept by pointer; a second one of the same name replaces the
 * first). "local" and "mpi" are built in; ring/ and nccl/ export theirs
 * (shardlm_ring_comm_transport, shardlm_nccl_comm_transport) for the launcher to
 * register, as collectives cannot depend on them. */
int shardlm_comm_register(const shardlm_comm_transport *t);
/* The transport named name, or NULL. */
const shardlm_comm_transport *shardlm_comm_transport_find(const char *name);
/* "local, mpi, ring, nccl": the registered names, as snprintf (returns the
 * length it wanted). */
size_t shardlm_comm_transport_names(char *buf, size_t cap);
/* Opens a communicator with the transport named kind; world_size 1 is the
 * local one whatever kind says. An unknown kind fails with SHARDLM_EINPUT,
 * naming the transports this build has; the transport's own errors pass
 * through unchanged. */
int shardlm_comm_open(const char *kind, const shardlm_comm_open_opts *o, shardlm_comm **out);

/* World size 1: every collective is a copy or a no-op. */
int shardlm_comm_local_create(shardlm_comm **out);

/* MPI (collectives/comm_mpi.c; an MPI build only, else these fail with a
 * message saying so). Waits poll a non-blocking MPI call and sleep between
 * polls, so ranks sharing cores do not spin, and give up at the timeout. */
int shardlm_comm_mpi_built(void);
/* Whether this process was started by mpirun/mpiexec (PMI or Open MPI
 * variables in the environment). */
int shardlm_comm_mpi_launched(void);
/* MPI_Init_thread once per process; rank, world and the ranks on this
 * node (local_rank, local_size). Any pointer may be NULL. */
int shardlm_comm_mpi_init(int *rank, int *world, int *local_rank, int *local_size);
/* A communicator over MPI_COMM_WORLD (after shardlm_comm_mpi_init). */
int shardlm_comm_mpi_create(shardlm_comm **out);
/* Broadcasts bytes from rank 0 over MPI_COMM_WORLD (bootstrap only, before
 * any communicator exists: the NCCL id, rank 0's control address). */
int shardlm_comm_mpi_bcast_bootstrap(void *buf, size_t bytes, int timeout_ms);
/* The MPI library's version string ("" when not built with MPI). */
const char *shardlm_comm_mpi_version(void);
void shardlm_comm_mpi_finalize(void);

#endif
