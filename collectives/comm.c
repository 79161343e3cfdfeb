/* comm.c - the collective API's front door: argument checks, the "broken
 * communicator" rule (after one failure every later call fails at once, so a
 * rank never resumes a collective its peers have abandoned), and the local
 * backend used when the world has a single rank. */
#include "shardlm_comm.h"

#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"

static int comm_usable(shardlm_comm *c, const char *op)
{
    if (!c) {
        shardlm_err_set("%s: no communicator", op);
        return SHARDLM_EINPUT;
    }
    if (c->broken) {
        shardlm_err_set("rank %d: %s: communicator is broken by an earlier error; "
                        "it must be destroyed and rebuilt", c->rank, op);
        return SHARDLM_EPEER;
    }
    c->fault_peer = -1; /* a transport that knows better sets it when the call fails */
    return SHARDLM_OK;
}

/* Any failure poisons the communicator: the ring is mid-collective and the
 * byte streams to the neighbours are no longer in step. */
static int comm_result(shardlm_comm *c, int rc)
{
    if (rc != SHARDLM_OK) c->broken = 1;
    return rc;
}

int shardlm_comm_allreduce_f32(shardlm_comm *c, float *buf, size_t n, int timeout_ms)
{
    int rc = comm_usable(c, "allreduce");
    if (rc) return rc;
    if (n == 0) return SHARDLM_OK;
    if (!buf) {
        shardlm_err_set("rank %d: allreduce: NULL buffer for %zu floats", c->rank, n);
        return comm_result(c, SHARDLM_EINPUT);
    }
    return comm_result(c, c->ops->allreduce_f32(c, buf, n, timeout_ms));
}

int shardlm_comm_allgather(shardlm_comm *c, const void *send, size_t bytes, void *recv, int timeout_ms)
{
    int rc = comm_usable(c, "allgather");
    if (rc) return rc;
    if (bytes && (!send || !recv)) {
        shardlm_err_set("rank %d: allgather: NULL buffer", c->rank);
        return comm_result(c, SHARDLM_EINPUT);
    }
    return comm_result(c, c->ops->allgather(c, send, bytes, recv, timeout_ms));
}

int shardlm_comm_gatherv(shardlm_comm *c, const void *send, const size_t *bytes, void *recv, int timeout_ms)
{
    int rc = comm_usable(c, "gatherv");
    if (rc) return rc;
    if (!bytes || (bytes[c->rank] && !send) || (c->rank == 0 && !recv)) {
        shardlm_err_set("rank %d: gatherv: NULL buffer or size array", c->rank);
        return comm_result(c, SHARDLM_EINPUT);
    }
    return comm_result(c, c->ops->gatherv(c, send, bytes, recv, timeout_ms));
}

int shardlm_comm_broadcast(shardlm_comm *c, void *buf, size_t bytes, int root, int timeout_ms)
{
    int rc = comm_usable(c, "broadcast");
    if (rc) return rc;
    if (root < 0 || root >= c->world_size) {
        shardlm_err_set("rank %d: broadcast: root %d is outside 0..%d", c->rank, root, c->world_size - 1);
        return comm_result(c, SHARDLM_EINPUT);
    }
    if (bytes && !buf) {
        shardlm_err_set("rank %d: broadcast: NULL buffer", c->rank);
        return comm_result(c, SHARDLM_EINPUT);
    }
    return comm_result(c, c->ops->broadcast(c, buf, bytes, root, timeout_ms));
}

int shardlm_comm_barrier(shardlm_comm *c, int timeout_ms)
{
    int rc = comm_usable(c, "barrier");
    if (rc) return rc;
    return comm_result(c, c->ops->barrier(c, timeout_ms));
}

void shardlm_comm_destroy(shardlm_comm *c)
{
    if (c) c->ops->destroy(c);
}

/* ---- local backend: one rank, so every collective is a copy or nothing ---- */

static int local_allreduce(shardlm_comm *c, float *buf, size_t n, int timeout_ms)
{
    (void)c, (void)buf, (void)n, (void)timeout_ms;
    return SHARDLM_OK;
}

static int local_allgather(shardlm_comm *c, const void *send, size_t bytes, void *recv, int timeout_ms)
{
    (void)c, (void)timeout_ms;
    if (bytes) memmove(recv, send, bytes);
    return SHARDLM_OK;
}

static int local_gatherv(shardlm_comm *c, const void *send, const size_t *bytes, void *recv, int timeout_ms)
{
    (void)c, (void)timeout_ms;
    if (bytes[0]) memmove(recv, send, bytes[0]);
    return SHARDLM_OK;
}

static int local_broadcast(shardlm_comm *c, void *buf, size_t bytes, int root, int timeout_ms)
{
    (void)c, (void)buf, (void)bytes, (void)root, (void)timeout_ms;
    return SHARDLM_OK;
}

static int local_barrier(shardlm_comm *c, int timeout_ms)
{
    (void)c, (void)timeout_ms;
    return SHARDLM_OK;
}

static void local_destroy(shardlm_comm *c) { free(c); }

static const shardlm_comm_ops local_ops = {
    .name = "local",
    .allreduce_f32 = local_allreduce,
    .allgather = local_allgather,
    .gatherv = local_gatherv,
    .broadcast = local_broadcast,
    .barrier = local_barrier,
    .destroy = local_destroy,
};

int shardlm_comm_local_create(shardlm_comm **out)
{
    shardlm_comm *c = calloc(1, sizeof *c);
    if (!c) {
        shardlm_err_set("local communicator: out of memory");
        return SHARDLM_ENOMEM;
    }
    c->ops = &local_ops;
    c->rank = 0;
    c->world_size = 1;
    *out = c;
    return SHARDLM_OK;
}

/* In every build, MPI or not, so that a build without MPI can still say
 * that mpirun started it. */
int shardlm_comm_mpi_launched(void)
{
    return getenv("PMI_RANK") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("OMPI_COMM_WORLD_SIZE");
}
