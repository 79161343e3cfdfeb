/* comm_mpi.c - the collective API over MPI (built when CMake finds MPICH).
 *
 * Every collective is the non-blocking MPI call (MPI_Iallreduce and so on)
 * followed by our own wait: MPI_Test in a loop that spins briefly, then
 * yields, then sleeps. Blocking MPICH calls busy-poll, which makes several
 * ranks on few cores crawl (each rank burns its slice waiting for a peer that
 * cannot run); the sleeping wait also gives every call its timeout. MPI has no
 * way to cancel a collective, so a timeout breaks the communicator for good
 * and the process must exit (mpirun then stops the other ranks). */
#include <limits.h>
#include <mpi.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shardlm_comm.h"
#include "shardlm_common.h"

typedef struct {
    shardlm_comm base;
    MPI_Comm world;
    int *counts, *displs; /* gatherv scratch, world_size each */
} mpi_comm;

static int g_inited, g_dirty; /* dirty: a collective failed; MPI_Finalize could hang */

int shardlm_comm_mpi_built(void) { return 1; }

const char *shardlm_comm_mpi_version(void)
{
    static char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (!v[0] && MPI_Get_library_version(v, &len) == MPI_SUCCESS) {
        char *nl = strchr(v, '\n'); /* MPICH prints a multi-line banner: keep the first line */
        if (nl) *nl = 0;
    }
    return v;
}

static int mpi_fail(int rank, const char *what, int err)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(err, msg, &len);
    shardlm_err_set("rank %d: MPI %s failed: %s", rank, what, msg);
    g_dirty = 1;
    return SHARDLM_EPEER;
}

static int g_spin_us = -1, g_yield_us, g_sleep_us;

static int env_us(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

/* Waits for one request: spin on MPI_Test for SHARDLM_MPI_SPIN_US, then
 * yield until SHARDLM_MPI_YIELD_US, then sleep SHARDLM_MPI_SLEEP_US per
 * poll. Returns ETIMEDOUT at the deadline. */
static int mpi_wait(int rank, MPI_Request *req, const char *what, int timeout_ms)
{
    if (g_spin_us < 0) {
        g_yield_us = env_us("SHARDLM_MPI_YIELD_US", 2000);
        g_sleep_us = env_us("SHARDLM_MPI_SLEEP_US", 100);
        g_spin_us = env_us("SHARDLM_MPI_SPIN_US", 50);
    }
    uint64_t t0 = shardlm_now_ns(), spin_end = t0 + (uint64_t)g_spin_us * 1000;
    uint64_t yield_end = t0 + (uint64_t)g_yield_us * 1000;
    uint64_t deadline = t0 + (uint64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000000;
    for (;;) {
        int done = 0, err = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (err != MPI_SUCCESS) return mpi_fail(rank, what, err);
        if (done) return SHARDLM_OK;
        uint64_t now = shardlm_now_ns();
        if (now >= deadline) {
            shardlm_err_set("rank %d: MPI %s timed out after %d ms: another rank is stalled or dead", rank, what,
                            timeout_ms);
            g_dirty = 1;
            return SHARDLM_ETIMEDOUT;
        }
        if (now < spin_end) continue;
        if (now < yield_end) {
            sched_yield();
            continue;
        }
        struct timespec ts = {0, (long)g_sleep_us * 1000};
        nanosleep(&ts, NULL);
    }
}

int shardlm_comm_mpi_init(int *rank, int *world, int *local_rank, int *local_size)
{
    if (!g_inited) {
        int provided = 0, err = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
        if (err != MPI_SUCCESS) return mpi_fail(-1, "MPI_Init_thread", err);
        if (provided < MPI_THREAD_SERIALIZED) {
            shardlm_err_set("MPI: the library gives thread level %d; shardlm needs MPI_THREAD_SERIALIZED", provided);
            return SHARDLM_ERUNTIME;
        }
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        g_inited = 1;
    }
    int r = 0, w = 1, lr = 0, ls = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &w);
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, r, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_rank(node, &lr);
        MPI_Comm_size(node, &ls);
        MPI_Comm_free(&node);
    }
    if (rank) *rank = r;
    if (world) *world = w;
    if (local_rank) *local_rank = lr;
    if (local_size) *local_size = ls;
    return SHARDLM_OK;
}

static mpi_comm *as_mpi(shardlm_comm *c) { return (mpi_comm *)c; }

static int mpi_allreduce(shardlm_comm *c, float *buf, size_t n, int timeout_ms)
{
    mpi_comm *m = as_mpi(c);
    for (size_t off = 0; off < n;) { /* MPI counts are int */
        int k = n - off > (size_t)INT_MAX ? INT_MAX : (int)(n - off);
        MPI_Request req;
        int err = MPI_Iallreduce(MPI_IN_PLACE, buf + off, k, MPI_FLOAT, MPI_SUM, m->world, &req);
        if (err != MPI_SUCCESS) return mpi_fail(c->rank, "allreduce", err);
        int rc = mpi_wait(c->rank, &req, "allreduce", timeout_ms);
        if (rc) return rc;
        off += (size_t)k;
    }
    return SHARDLM_OK;
}

static int too_big(int rank, const char *what, size_t bytes)
{
    shardlm_err_set("rank %d: MPI %s: %zu bytes exceeds MPI's int count", rank, what, bytes);
    return SHARDLM_EINPUT;
}

static int mpi_allgather(shardlm_comm *c, const void *send, size_t bytes, void *recv, int timeout_ms)
{
    if (bytes > (size_t)INT_MAX) return too_big(c->rank, "allgather", bytes);
    MPI_Request req;
    int err = MPI_Iallgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, as_mpi(c)->world, &req);
    if (err != MPI_SUCCESS) return mpi_fail(c->rank, "allgather", err);
    return mpi_wait(c->rank, &req, "allgather", timeout_ms);
}

static int mpi_gatherv(shardlm_comm *c, const void *send, const size_t *bytes, void *recv, int timeout_ms)
{
    mpi_comm *m = as_mpi(c);
    size_t off = 0;
    for (int r = 0; r < c->world_size; r++) {
        if (bytes[r] > (size_t)INT_MAX || off > (size_t)INT_MAX) return too_big(c->rank, "gatherv", bytes[r]);
        m->counts[r] = (int)bytes[r];
        m->displs[r] = (int)off;
        off += bytes[r];
    }
    MPI_Request req;
    int err = MPI_Igatherv(send, m->counts[c->rank], MPI_BYTE, recv, m->counts, m->displs, MPI_BYTE, 0, m->world,
                           &req);
    if (err != MPI_SUCCESS) return mpi_fail(c->rank, "gatherv", err);
    return mpi_wait(c->rank, &req, "gatherv", timeout_ms);
}

static int mpi_broadcast(shardlm_comm *c, void *buf, size_t bytes, int root, int timeout_ms)
{
    if (bytes > (size_t)INT_MAX) return too_big(c->rank, "broadcast", bytes);
    MPI_Request req;
    int err = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, as_mpi(c)->world, &req);
    if (err != MPI_SUCCESS) return mpi_fail(c->rank, "broadcast", err);
    return mpi_wait(c->rank, &req, "broadcast", timeout_ms);
}

static int mpi_barrier(shardlm_comm *c, int timeout_ms)
{
    MPI_Request req;
    int err = MPI_Ibarrier(as_mpi(c)->world, &req);
    if (err != MPI_SUCCESS) return mpi_fail(c->rank, "barrier", err);
    return mpi_wait(c->rank, &req, "barrier", timeout_ms);
}

static void mpi_destroy(shardlm_comm *c)
{
    mpi_comm *m = as_mpi(c);
    if (!c->broken && !g_dirty) MPI_Comm_free(&m->world); /* freeing after a failed collective can block */
    free(m->counts);
    free(m->displs);
    free(m);
}

static const shardlm_comm_ops mpi_ops = {"mpi", mpi_allreduce, mpi_allgather, mpi_gatherv,
                                         mpi_broadcast, mpi_barrier, mpi_destroy, 0 /* host memory */};

int shardlm_comm_mpi_create(shardlm_comm **out)
{
    *out = NULL;
    int rank = 0, world = 1;
    int rc = shardlm_comm_mpi_init(&rank, &world, NULL, NULL);
    if (rc) return rc;
    mpi_comm *m = calloc(1, sizeof *m);
    if (m) m->counts = calloc((size_t)world, sizeof(int));
    if (m) m->displs = calloc((size_t)world, sizeof(int));
    if (!m || !m->counts || !m->displs) {
        if (m) free(m->counts), free(m->displs);
        free(m);
        shardlm_err_set("MPI communicator: out of memory");
        return SHARDLM_ENOMEM;
    }
    int err = MPI_Comm_dup(MPI_COMM_WORLD, &m->world);
    if (err != MPI_SUCCESS) {
        free(m->counts), free(m->displs), free(m);
        return mpi_fail(rank, "MPI_Comm_dup", err);
    }
    MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN);
    m->base.ops = &mpi_ops;
    m->base.rank = rank;
    m->base.world_size = world;
    *out = &m->base;
    return SHARDLM_OK;
}

int shardlm_comm_mpi_bcast_bootstrap(void *buf, size_t bytes, int timeout_ms)
{
    int rank = 0;
    int rc = shardlm_comm_mpi_init(&rank, NULL, NULL, NULL);
    if (rc) return rc;
    if (bytes > (size_t)INT_MAX) return too_big(rank, "bootstrap broadcast", bytes);
    MPI_Request req;
    int err = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
    if (err != MPI_SUCCESS) return mpi_fail(rank, "bootstrap broadcast", err);
    return mpi_wait(rank, &req, "bootstrap broadcast", timeout_ms);
}

void shardlm_comm_mpi_finalize(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (g_inited && !fin && !g_dirty) MPI_Finalize();
}
