/* nccl.c - the "nccl" transport of the collective API (see shardlm_nccl.h
 * for the contract). Every NCCL call is non-blocking; the waits poll the
 * stream and NCCL's async error against a deadline, so a dead or stuck peer
 * turns into an error naming this rank and the operation, never a hang. */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shardlm_common.h"
#include "shardlm_nccl.h"

typedef struct {
    shardlm_comm base;
    ncclComm_t nc;
    cudaStream_t stream;
    int device;
    void *scratch; /* device staging for host buffers */
    size_t scratch_bytes;
} nccl_comm;

#define STAGE_ALIGN 256

int shardlm_nccl_built(void) { return 1; }

const char *shardlm_nccl_version(void)
{
    static char buf[32];
    int v = 0;
    if (ncclGetVersion(&v) != ncclSuccess) return "";
    snprintf(buf, sizeof buf, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
    return buf;
}

int shardlm_nccl_unique_id(uint8_t id[SHARDLM_NCCL_ID_BYTES])
{
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess) {
        shardlm_err_set("NCCL: cannot make a unique id: %s", ncclGetErrorString(r));
        return SHARDLM_ERUNTIME;
    }
    memcpy(id, u.internal, SHARDLM_NCCL_ID_BYTES);
    return SHARDLM_OK;
}

/* ---- waiting with a deadline ---- */

static uint64_t deadline_of(int timeout_ms) { return shardlm_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u; }

/* Short spins keep the latency of a small all-reduce low; after that sleep,
 * so ranks sharing cores (or a long wait) do not burn a CPU. */
static void backoff(int *spins)
{
    if ((*spins)++ < 2000) return;
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
}

/* Aborts the communicator: in-flight work is cancelled and peers blocked on
 * us see an error instead of waiting forever. */
static void comm_abort(nccl_comm *c)
{
    if (!c->nc) return;
    ncclCommAbort(c->nc);
    c->nc = NULL;
}

static int fail_nccl(nccl_comm *c, const char *op, ncclResult_t r)
{
    const char *detail = c->nc ? ncclGetLastError(c->nc) : "";
    shardlm_err_set("rank %d: nccl %s failed: %s%s%s (a peer may have died; communicator aborted)", c->base.rank, op,
                    ncclGetErrorString(r), detail && *detail ? ": " : "", detail ? detail : "");
    comm_abort(c);
    return r == ncclRemoteError || r == ncclSystemError ? SHARDLM_EPEER : SHARDLM_ERUNTIME;
}

static int fail_timeout(nccl_comm *c, const char *op, int timeout_ms)
{
    shardlm_err_set("rank %d: nccl %s timed out after %d ms (a peer is stuck or dead; communicator aborted)",
                    c->base.rank, op, timeout_ms);
    comm_abort(c);
    return SHARDLM_ETIMEDOUT;
}

/* After a non-blocking NCCL call: waits until it has been enqueued. */
static int wait_enqueued(nccl_comm *c, ncclResult_t r, const char *op, uint64_t deadline, int timeout_ms)
{
    int spins = 0;
    while (r == ncclInProgress) {
        if (shardlm_now_ns() > deadline) return fail_timeout(c, op, timeout_ms);
        backoff(&spins);
        if (ncclCommGetAsyncError(c->nc, &r) != ncclSuccess) r = ncclInternalError;
    }
    return r == ncclSuccess ? SHARDLM_OK : fail_nccl(c, op, r);
}

/* Waits for everything on the stream, watching NCCL's async error. */
static int wait_stream(nccl_comm *c, const char *op, uint64_t deadline, int timeout_ms)
{
    int spins = 0;
    for (;;) {
        cudaError_t q = cudaStreamQuery(c->stream);
        if (q == cudaSuccess) return SHARDLM_OK;
        if (q != cudaErrorNotReady) {
            shardlm_err_set("rank %d: nccl %s: CUDA error %s (communicator aborted)", c->base.rank, op,
                            cudaGetErrorString(q));
            comm_abort(c);
            return SHARDLM_ERUNTIME;
        }
        ncclResult_t a = ncclSuccess;
        ncclCommGetAsyncError(c->nc, &a);
        if (a != ncclSuccess && a != ncclInProgress) return fail_nccl(c, op, a);
        if (shardlm_now_ns() > deadline) return fail_timeout(c, op, timeout_ms);
        backoff(&spins);
    }
}

static int cuda_ok(nccl_comm *c, cudaError_t e, const char *op)
{
    if (e == cudaSuccess) return SHARDLM_OK;
    shardlm_err_set("rank %d: nccl %s: CUDA %s", c->base.rank, op, cudaGetErrorString(e));
    return SHARDLM_ERUNTIME;
}

/* ---- host or device buffers ---- */

static int on_device(const void *p)
{
    struct cudaPointerAttributes a;
    if (!p || cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError(); /* an unknown host pointer is not an error */
        return 0;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

static size_t align_up(size_t n) { return (n + STAGE_ALIGN - 1) / STAGE_ALIGN * STAGE_ALIGN; }

static int scratch_reserve(nccl_comm *c, size_t bytes, const char *op)
{
    if (bytes <= c->scratch_bytes) return SHARDLM_OK;
    cudaFree(c->scratch); /* the stream is idle between operations */
    c->scratch = NULL;
    c->scratch_bytes = 0;
    cudaError_t e = cudaMalloc(&c->scratch, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        shardlm_err_set("rank %d: nccl %s: cannot allocate %zu bytes of device staging: %s", c->base.rank, op, bytes,
                        cudaGetErrorString(e));
        return SHARDLM_ENOMEM;
    }
    c->scratch_bytes = bytes;
    return SHARDLM_OK;
}

/* Device views of a call's buffers: a host recv maps to the start of the
 * scratch, a host send after it (and is copied there now). in_place: send
 * and recv are the same buffer. */
typedef struct {
    const void *send;
    void *recv;
    int recv_host;
} staged;

static int stage_in(nccl_comm *c, const char *op, const void *send, size_t sbytes, void *recv, size_t rbytes,
                    int in_place, staged *s)
{
    int send_dev = on_device(send), recv_dev = recv ? on_device(recv) : 1;
    size_t need = (recv_dev ? 0 : align_up(rbytes)) + (send_dev || in_place ? 0 : sbytes);
    int rc = scratch_reserve(c, need, op);
    if (rc) return rc;
    s->recv = recv_dev ? recv : c->scratch;
    s->recv_host = !recv_dev;
    if (in_place) {
        s->send = s->recv;
        if (!recv_dev && sbytes)
            return cuda_ok(c, cudaMemcpyAsync(s->recv, send, sbytes, cudaMemcpyHostToDevice, c->stream), op);
        return SHARDLM_OK;
    }
    s->send = send;
    if (send_dev || !sbytes) return SHARDLM_OK;
    void *dst = (char *)c->scratch + (recv_dev ? 0 : align_up(rbytes));
    s->send = dst;
    return cuda_ok(c, cudaMemcpyAsync(dst, send, sbytes, cudaMemcpyHostToDevice, c->stream), op);
}

/* After the collective has finished: copies a staged result back to host. */
static int stage_out(nccl_comm *c, const char *op, const staged *s, void *recv, size_t rbytes, uint64_t deadline,
                     int timeout_ms)
{
    if (!s->recv_host || !rbytes) return SHARDLM_OK;
    int rc = cuda_ok(c, cudaMemcpyAsync(recv, s->recv, rbytes, cudaMemcpyDeviceToHost, c->stream), op);
    return rc ? rc : wait_stream(c, op, deadline, timeout_ms);
}

static int enter(nccl_comm *c, const char *op)
{
    if (!c->nc) {
        shardlm_err_set("rank %d: nccl %s: communicator was aborted by an earlier error", c->base.rank, op);
        return SHARDLM_EPEER;
    }
    return cuda_ok(c, cudaSetDevice(c->device), op);
}

/* ---- the collectives ---- */

static int nccl_allreduce(shardlm_comm *base, float *buf, size_t n, int timeout_ms)
{
    nccl_comm *c = (nccl_comm *)base;
    const char *op = "allreduce";
    uint64_t dl = deadline_of(timeout_ms);
    size_t bytes = n * sizeof(float);
    staged s;
    int rc = enter(c, op);
    if (!rc) rc = stage_in(c, op, buf, bytes, buf, bytes, 1, &s);
    if (!rc) rc = wait_enqueued(c, ncclAllReduce(s.send, s.recv, n, ncclFloat, ncclSum, c->nc, c->stream), op, dl,
                                timeout_ms);
    if (!rc) rc = wait_stream(c, op, dl, timeout_ms);
    return rc ? rc : stage_out(c, op, &s, buf, bytes, dl, timeout_ms);
}

static int nccl_allgather(shardlm_comm *base, const void *send, size_t bytes, void *recv, int timeout_ms)
{
    nccl_comm *c = (nccl_comm *)base;
    const char *op = "allgather";
    uint64_t dl = deadline_of(timeout_ms);
    size_t total = bytes * (size_t)base->world_size;
    staged s;
    int rc = enter(c, op);
    if (!rc) rc = stage_in(c, op, send, bytes, recv, total, 0, &s);
    if (!rc) rc = wait_enqueued(c, ncclAllGather(s.send, s.recv, bytes, ncclUint8, c->nc, c->stream), op, dl,
                                timeout_ms);
    if (!rc) rc = wait_stream(c, op, dl, timeout_ms);
    return rc ? rc : stage_out(c, op, &s, recv, total, dl, timeout_ms);
}

/* Rank 0 receives every other rank's block in one group; its own block is a
 * device copy. Zero-sized blocks are skipped on both sides alike. */
static ncclResult_t gatherv_group(nccl_comm *c, const staged *s, const size_t *bytes)
{
    int rank = c->base.rank;
    ncclGroupStart();
    if (rank != 0) {
        if (bytes[rank]) ncclSend(s->send, bytes[rank], ncclUint8, 0, c->nc, c->stream);
        return ncclGroupEnd();
    }
    if (bytes[0]) cudaMemcpyAsync(s->recv, s->send, bytes[0], cudaMemcpyDeviceToDevice, c->stream);
    size_t off = bytes[0];
    for (int r = 1; r < c->base.world_size; off += bytes[r], r++)
        if (bytes[r]) ncclRecv((char *)s->recv + off, bytes[r], ncclUint8, r, c->nc, c->stream);
    return ncclGroupEnd();
}

static int nccl_gatherv(shardlm_comm *base, const void *send, const size_t *bytes, void *recv, int timeout_ms)
{
    nccl_comm *c = (nccl_comm *)base;
    const char *op = "gatherv";
    uint64_t dl = deadline_of(timeout_ms);
    size_t total = 0;
    for (int r = 0; r < base->world_size; r++) total += bytes[r];
    if (base->rank != 0) recv = NULL, total = 0;
    staged s;
    int rc = enter(c, op);
    if (!rc) rc = stage_in(c, op, send, bytes[base->rank], recv, total, 0, &s);
    if (!rc) rc = wait_enqueued(c, gatherv_group(c, &s, bytes), op, dl, timeout_ms);
    if (!rc) rc = wait_stream(c, op, dl, timeout_ms);
    return rc || !recv ? rc : stage_out(c, op, &s, recv, total, dl, timeout_ms);
}

static int nccl_broadcast(shardlm_comm *base, void *buf, size_t bytes, int root, int timeout_ms)
{
    nccl_comm *c = (nccl_comm *)base;
    const char *op = "broadcast";
    uint64_t dl = deadline_of(timeout_ms);
    staged s;
    if (!bytes) return SHARDLM_OK;
    int rc = enter(c, op);
    if (!rc) rc = stage_in(c, op, buf, bytes, buf, bytes, 1, &s);
    if (!rc) rc = wait_enqueued(c, ncclBroadcast(s.send, s.recv, bytes, ncclUint8, root, c->nc, c->stream), op, dl,
                                timeout_ms);
    if (!rc) rc = wait_stream(c, op, dl, timeout_ms);
    return rc ? rc : stage_out(c, op, &s, buf, bytes, dl, timeout_ms);
}

/* A one-float all-reduce on the staging buffer: returns once every rank
 * has reached it. */
static int nccl_barrier(shardlm_comm *base, int timeout_ms)
{
    nccl_comm *c = (nccl_comm *)base;
    const char *op = "barrier";
    uint64_t dl = deadline_of(timeout_ms);
    int rc = enter(c, op);
    if (!rc) rc = scratch_reserve(c, STAGE_ALIGN, op);
    if (!rc) rc = wait_enqueued(c, ncclAllReduce(c->scratch, c->scratch, 1, ncclFloat, ncclSum, c->nc, c->stream), op,
                                dl, timeout_ms);
    return rc ? rc : wait_stream(c, op, dl, timeout_ms);
}

/* Finalize flushes outstanding work; if that does not finish in a few
 * seconds (a peer is gone) the communicator is aborted instead. */
static void nccl_destroy(shardlm_comm *base)
{
    nccl_comm *c = (nccl_comm *)base;
    cudaSetDevice(c->device);
    if (c->nc) {
        ncclResult_t r = ncclCommFinalize(c->nc);
        uint64_t dl = deadline_of(5000);
        int spins = 0;
        while (r == ncclInProgress && shardlm_now_ns() < dl) {
            backoff(&spins);
            ncclCommGetAsyncError(c->nc, &r);
        }
        if (r == ncclSuccess) ncclCommDestroy(c->nc);
        else comm_abort(c);
    }
    cudaFree(c->scratch);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

static const shardlm_comm_ops nccl_ops = {
    .name = "nccl",
    .allreduce_f32 = nccl_allreduce,
    .allgather = nccl_allgather,
    .gatherv = nccl_gatherv,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .destroy = nccl_destroy,
    .caps = SHARDLM_COMM_CAP_DEVICE_MEM, /* cudaPointerGetAttributes tells device from host buffers */
};

/* ---- bring-up ---- */

static int init_wait(nccl_comm *c, ncclResult_t r, int timeout_ms)
{
    uint64_t dl = deadline_of(timeout_ms);
    int spins = 0;
    while (r == ncclInProgress) {
        if (shardlm_now_ns() > dl) {
            shardlm_err_set("rank %d: nccl init of %d ranks timed out after %d ms (did every rank start, on its own "
                            "GPU, with the same id?)", c->base.rank, c->base.world_size, timeout_ms);
            comm_abort(c);
            return SHARDLM_ETIMEDOUT;
        }
        backoff(&spins);
        if (ncclCommGetAsyncError(c->nc, &r) != ncclSuccess) r = ncclInternalError;
    }
    return r == ncclSuccess ? SHARDLM_OK : fail_nccl(c, "init", r);
}

int shardlm_nccl_comm_create(int rank, int world, const uint8_t id[SHARDLM_NCCL_ID_BYTES], int device, int timeout_ms,
                             shardlm_comm **out)
{
    *out = NULL;
    if (world < 1 || rank < 0 || rank >= world) {
        shardlm_err_set("nccl: rank %d is outside a world of %d", rank, world);
        return SHARDLM_EINPUT;
    }
    nccl_comm *c = calloc(1, sizeof *c);
    if (!c) return SHARDLM_ENOMEM;
    c->base.ops = &nccl_ops;
    c->base.rank = rank;
    c->base.world_size = world;
    c->device = device;
    int rc = cuda_ok(c, cudaSetDevice(device), "init (cudaSetDevice)");
    if (!rc) rc = cuda_ok(c, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "init (stream)");
    if (rc) {
        nccl_destroy(&c->base);
        return rc;
    }
    ncclUniqueId uid;
    memcpy(uid.internal, id, SHARDLM_NCCL_ID_BYTES);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&c->nc, world, uid, rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress) {
        shardlm_err_set("rank %d: nccl init of %d ranks on device %d failed: %s", rank, world, device,
                        ncclGetErrorString(r));
        if (c->nc) comm_abort(c);
        nccl_destroy(&c->base);
        return SHARDLM_ERUNTIME;
    }
    if ((rc = init_wait(c, r, timeout_ms))) {
        nccl_destroy(&c->base);
        return rc;
    }
    *out = &c->base;
    return SHARDLM_OK;
}
