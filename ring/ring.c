/* ring.c - the TCP ring communicator's data path. Every collective is
 * described as two queues of byte segments: what this rank sends to its right
 * neighbour and what it receives from its left one. A send segment may depend
 * on a receive segment (forward what just arrived), which pipelines the ring
 * steps at byte granularity. One poll() loop drives both directions of the
 * full-duplex ring with non-blocking sockets, so no call can deadlock on TCP
 * flow control, and it blocks in poll() whenever it has to wait. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ring_internal.h"
#include "shardlm_common.h"

/* Landing zone for partial sums; small enough to stay in cache, and each
 * recv() into it is already bounded by the socket buffer. */
#define RING_SCRATCH_BYTES (256u << 10)

typedef struct {
    char *ptr;
    size_t len;
    int dep; /* receive segment whose bytes this forwards, or -1 */
} ring_send_seg;

typedef struct {
    char *ptr;
    size_t len;
    int add; /* f32 values summed into ptr rather than stored */
} ring_recv_seg;

typedef struct {
    shardlm_comm base;
    ring_links links;
    int left_rank, right_rank;
    int nsend, nrecv;
    ring_send_seg *sends; /* 2 * world_size entries, filled per call */
    ring_recv_seg *recvs;
    char *scratch;
    char *fwd; /* gatherv relay buffer, grown on demand */
    size_t fwd_cap;
    unsigned char *bar; /* world_size bytes for the barrier */
} ring_comm;

typedef struct {
    const char *op;
    uint64_t deadline_ns; /* UINT64_MAX: none */
    int timeout_ms;
    int si, ri;           /* current send / receive segment */
    size_t sent, rcvd;    /* bytes done in those segments */
    size_t added;         /* bytes of the receive segment already summed */
} ring_xfer;

static void ring_break(ring_comm *c)
{
    /* Neighbours blocked on us see EOF at once instead of waiting out
     * their own timeouts, so a failure travels around the ring fast. */
    shutdown(c->links.left_fd, SHUT_RDWR);
    shutdown(c->links.right_fd, SHUT_RDWR);
}

static int ring_fail_peer(ring_comm *c, const ring_xfer *x, int right, int err)
{
    int peer = right ? c->right_rank : c->left_rank;
    const char *addr = right ? c->links.right_addr : c->links.left_addr;
    c->base.fault_peer = peer;
    if (err == 0)
        shardlm_err_set("rank %d: %s: rank %d (%s neighbour, %s) closed the connection", c->base.rank, x->op, peer,
                        right ? "right" : "left", addr);
    else
        shardlm_err_set("rank %d: %s: rank %d (%s neighbour, %s): %s", c->base.rank, x->op, peer,
                        right ? "right" : "left", addr, strerror(err));
    ring_break(c);
    return SHARDLM_EPEER;
}

static int ring_fail_timeout(ring_comm *c, const ring_xfer *x, int waiting_left)
{
    int peer = waiting_left ? c->left_rank : c->right_rank;
    c->base.fault_peer = peer;
    shardlm_err_set("rank %d: %s: timed out after %d ms waiting for rank %d (%s neighbour, %s)%s", c->base.rank,
                    x->op, x->timeout_ms, peer, waiting_left ? "left" : "right",
                    waiting_left ? c->links.left_addr : c->links.right_addr,
                    waiting_left ? "" : " to take our data");
    ring_break(c);
    return SHARDLM_ETIMEDOUT;
}

/* Bytes of send segment `dep`'s source that are final and may be sent. */
static size_t ring_avail(const ring_comm *c, const ring_xfer *x, const ring_send_seg *s)
{
    if (s->dep < 0 || x->ri > s->dep) return s->len;
    if (x->ri < s->dep) return 0;
    return c->recvs[s->dep].add ? x->added : x->rcvd;
}

static int ring_pump_send(ring_comm *c, ring_xfer *x, int *progress, int *want_out)
{
    while (x->si < c->nsend) {
        const ring_send_seg *s = &c->sends[x->si];
        if (x->sent == s->len) {
            x->si++;
            x->sent = 0;
            continue;
        }
        size_t avail = ring_avail(c, x, s);
        if (avail <= x->sent) return SHARDLM_OK;
        ssize_t n = send(c->links.right_fd, s->ptr + x->sent, avail - x->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                *want_out = 1;
                return SHARDLM_OK;
            }
            return ring_fail_peer(c, x, 1, errno);
        }
        x->sent += (size_t)n;
        *progress = 1;
    }
    return SHARDLM_OK;
}

/* dst += src. Explicit 16-byte vectors: -O2 does not vectorise a loop of
 * unknown length, and this sum is a tenth of a large all-reduce's time. */
typedef float ring_v4f __attribute__((vector_size(16)));

static void ring_add_f32(float *restrict dst, const float *restrict src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        ring_v4f a0, a1, b0, b1;
        memcpy(&a0, dst + i, 16);
        memcpy(&a1, dst + i + 4, 16);
        memcpy(&b0, src + i, 16);
        memcpy(&b1, src + i + 4, 16);
        a0 += b0;
        a1 += b1;
        memcpy(dst + i, &a0, 16);
        memcpy(dst + i + 4, &a1, 16);
    }
    for (; i < n; i++) dst[i] += src[i];
}

/* Sums the whole floats that have landed in scratch since the last call.
 * recv() never crosses the end of scratch, so they are contiguous there. */
static void ring_add_landed(ring_comm *c, const ring_recv_seg *r, ring_xfer *x)
{
    size_t f0 = x->added / 4, f1 = x->rcvd / 4;
    if (f1 == f0) return;
    float *restrict dst = (float *)(void *)r->ptr + f0;
    const float *restrict src = (const float *)(void *)(c->scratch + (x->added % RING_SCRATCH_BYTES));
    ring_add_f32(dst, src, f1 - f0);
    x->added = f1 * 4;
}

static int ring_pump_recv(ring_comm *c, ring_xfer *x, int *progress, int *want_in)
{
    while (x->ri < c->nrecv) {
        const ring_recv_seg *r = &c->recvs[x->ri];
        if (x->rcvd == r->len) {
            x->ri++;
            x->rcvd = x->added = 0;
            continue;
        }
        size_t want = r->len - x->rcvd;
        char *dst = r->ptr + x->rcvd;
        if (r->add) {
            size_t off = x->rcvd % RING_SCRATCH_BYTES;
            dst = c->scratch + off;
            if (want > RING_SCRATCH_BYTES - off) want = RING_SCRATCH_BYTES - off;
        }
        ssize_t n = recv(c->links.left_fd, dst, want, MSG_DONTWAIT);
        if (n == 0) return ring_fail_peer(c, x, 0, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                *want_in = 1;
                return SHARDLM_OK;
            }
            return ring_fail_peer(c, x, 0, errno);
        }
        x->rcvd += (size_t)n;
        if (r->add) ring_add_landed(c, r, x);
        *progress = 1;
    }
    return SHARDLM_OK;
}

/* Optional busy-wait before sleeping in poll() (SHARDLM_RING_SPIN_US);
 * off by default, see docs/PERFORMANCE.md. */
static int ring_spin_us(void)
{
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("SHARDLM_RING_SPIN_US");
        v = e ? atoi(e) : 0;
        if (v < 0) v = 0;
    }
    return v;
}

static int ring_wait(ring_comm *c, ring_xfer *x, int want_out, int want_in)
{
    struct pollfd p[2];
    int np = 0;
    if (want_in) p[np++] = (struct pollfd){.fd = c->links.left_fd, .events = POLLIN};
    if (want_out) p[np++] = (struct pollfd){.fd = c->links.right_fd, .events = POLLOUT};
    int spin = ring_spin_us();
    if (spin) {
        uint64_t end = shardlm_now_ns() + (uint64_t)spin * 1000u;
        while (shardlm_now_ns() < end)
            if (poll(p, (nfds_t)np, 0) > 0) return SHARDLM_OK;
    }
    for (;;) {
        int ms = -1;
        if (x->deadline_ns != UINT64_MAX) {
            uint64_t now = shardlm_now_ns();
            if (now >= x->deadline_ns) return ring_fail_timeout(c, x, want_in);
            ms = (int)((x->deadline_ns - now + 999999) / 1000000);
        }
        int r = poll(p, (nfds_t)np, ms);
        if (r > 0) return SHARDLM_OK;
        if (r < 0 && errno != EINTR) {
            shardlm_err_set("rank %d: %s: poll: %s", c->base.rank, x->op, strerror(errno));
            ring_break(c);
            return SHARDLM_ERUNTIME;
        }
    }
}

/* Runs the queued segments to completion or failure. */
static int ring_run(ring_comm *c, const char *op, int timeout_ms)
{
    ring_xfer x = {.op = op, .timeout_ms = timeout_ms, .deadline_ns = UINT64_MAX};
    if (timeout_ms >= 0) x.deadline_ns = shardlm_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        int progress = 0, want_out = 0, want_in = 0;
        int rc = ring_pump_send(c, &x, &progress, &want_out);
        if (!rc) rc = ring_pump_recv(c, &x, &progress, &want_in);
        if (rc) return rc;
        if (x.si == c->nsend && x.ri == c->nrecv) return SHARDLM_OK;
        if (progress) continue;
        rc = ring_wait(c, &x, want_out, want_in);
        if (rc) return rc;
    }
}

static void ring_q_send(ring_comm *c, const void *ptr, size_t len, int dep)
{
    c->sends[c->nsend++] = (ring_send_seg){(char *)ptr, len, dep};
}

static void ring_q_recv(ring_comm *c, void *ptr, size_t len, int add)
{
    c->recvs[c->nrecv++] = (ring_recv_seg){ptr, len, add};
}

static int ring_mod(int a, int w) { return ((a % w) + w) % w; }

/* Reduce-scatter then all-gather over world_size segments; step t sends
 * segment r-t and receives segment r-t-1, which step t+1 forwards. */
static int ring_allreduce(shardlm_comm *base, float *buf, size_t n, int timeout_ms)
{
    ring_comm *c = (ring_comm *)base;
    int w = base->world_size, r = base->rank;
    c->nsend = c->nrecv = 0;
    for (int t = 0; t < 2 * (w - 1); t++) {
        int ss = ring_mod(r - t, w), rs = ring_mod(r - t - 1, w);
        size_t s0 = n * (size_t)ss / (size_t)w, s1 = n * (size_t)(ss + 1) / (size_t)w;
        size_t r0 = n * (size_t)rs / (size_t)w, r1 = n * (size_t)(rs + 1) / (size_t)w;
        ring_q_send(c, buf + s0, (s1 - s0) * sizeof(float), t - 1);
        ring_q_recv(c, buf + r0, (r1 - r0) * sizeof(float), t < w - 1);
    }
    return ring_run(c, "allreduce", timeout_ms);
}

static int ring_allgather_into(ring_comm *c, const void *send, size_t bytes, void *recv, int timeout_ms,
                               const char *op)
{
    int w = c->base.world_size, r = c->base.rank;
    char *out = recv;
    if (out + (size_t)r * bytes != send) memmove(out + (size_t)r * bytes, send, bytes);
    c->nsend = c->nrecv = 0;
    for (int s = 0; s < w - 1; s++) {
        ring_q_send(c, out + (size_t)ring_mod(r - s, w) * bytes, bytes, s - 1);
        ring_q_recv(c, out + (size_t)ring_mod(r - s - 1, w) * bytes, bytes, 0);
    }
    return ring_run(c, op, timeout_ms);
}

static int ring_allgather(shardlm_comm *base, const void *send, size_t bytes, void *recv, int timeout_ms)
{
    if (bytes == 0) return SHARDLM_OK;
    return ring_allgather_into((ring_comm *)base, send, bytes, recv, timeout_ms, "allgather");
}

/* Blocks flow rightwards toward rank 0: rank r relays ranks 1..r-1's
 * blocks, then appends its own, so rank 0 reads them in rank order. */
static int ring_gatherv(shardlm_comm *base, const void *send, const size_t *bytes, void *recv, int timeout_ms)
{
    ring_comm *c = (ring_comm *)base;
    int w = base->world_size, r = base->rank;
    c->nsend = c->nrecv = 0;
    if (r == 0) {
        size_t total = 0;
        for (int k = 1; k < w; k++) total += bytes[k];
        if (bytes[0]) memmove(recv, send, bytes[0]);
        ring_q_recv(c, (char *)recv + bytes[0], total, 0);
        return ring_run(c, "gatherv", timeout_ms);
    }
    size_t relay = 0;
    for (int k = 1; k < r; k++) relay += bytes[k];
    if (relay > c->fwd_cap) {
        char *p = realloc(c->fwd, relay);
        if (!p) {
            shardlm_err_set("rank %d: gatherv: out of memory for a %zu-byte relay buffer", r, relay);
            ring_break(c);
            return SHARDLM_ENOMEM;
        }
        c->fwd = p;
        c->fwd_cap = relay;
    }
    ring_q_recv(c, c->fwd, relay, 0);
    ring_q_send(c, c->fwd, relay, 0);
    ring_q_send(c, send, bytes[r], -1);
    return ring_run(c, "gatherv", timeout_ms);
}

/* A pipeline from the root around the ring; the rank left of the root
 * receives without forwarding. */
static int ring_broadcast(shardlm_comm *base, void *buf, size_t bytes, int root, int timeout_ms)
{
    ring_comm *c = (ring_comm *)base;
    int w = base->world_size, d = ring_mod(base->rank - root, w);
    if (bytes == 0) return SHARDLM_OK;
    c->nsend = c->nrecv = 0;
    if (d == 0) {
        ring_q_send(c, buf, bytes, -1);
    } else {
        ring_q_recv(c, buf, bytes, 0);
        if (d < w - 1) ring_q_send(c, buf, bytes, 0);
    }
    return ring_run(c, "broadcast", timeout_ms);
}

/* A one-byte all-gather: nobody finishes before every rank's byte, sent on
 * entry, has gone round. */
static int ring_barrier(shardlm_comm *base, int timeout_ms)
{
    ring_comm *c = (ring_comm *)base;
    unsigned char mine = (unsigned char)base->rank;
    return ring_allgather_into(c, &mine, 1, c->bar, timeout_ms, "barrier");
}

static void ring_destroy(shardlm_comm *base)
{
    ring_comm *c = (ring_comm *)base;
    close(c->links.left_fd);
    close(c->links.right_fd);
    free(c->sends);
    free(c->recvs);
    free(c->scratch);
    free(c->fwd);
    free(c->bar);
    free(c);
}

static const shardlm_comm_ops ring_ops = {
    .name = "ring",
    .allreduce_f32 = ring_allreduce,
    .allgather = ring_allgather,
    .gatherv = ring_gatherv,
    .broadcast = ring_broadcast,
    .barrier = ring_barrier,
    .destroy = ring_destroy,
};

int shardlm_ring_comm_create(const shardlm_ring_config *cfg, int connect_timeout_ms, shardlm_comm **out)
{
    int rc = shardlm_ring_config_validate(cfg, "ring config");
    if (rc) return rc;
    if (cfg->world_size == 1) return shardlm_comm_local_create(out);
    ring_comm *c = calloc(1, sizeof *c);
    size_t w = (size_t)cfg->world_size;
    if (c) {
        c->sends = calloc(2 * w, sizeof *c->sends);
        c->recvs = calloc(2 * w, sizeof *c->recvs);
        c->scratch = malloc(RING_SCRATCH_BYTES);
        c->bar = calloc(w, 1);
    }
    if (!c || !c->sends || !c->recvs || !c->scratch || !c->bar) {
        if (c) free(c->sends), free(c->recvs), free(c->scratch), free(c->bar);
        free(c);
        shardlm_err_set("rank %d: out of memory creating the ring", cfg->rank);
        return SHARDLM_ENOMEM;
    }
    rc = ring_setup_links(cfg, connect_timeout_ms, &c->links);
    if (rc) {
        free(c->sends), free(c->recvs), free(c->scratch), free(c->bar);
        free(c);
        return rc;
    }
    c->base.ops = &ring_ops;
    c->base.rank = cfg->rank;
    c->base.world_size = cfg->world_size;
    c->left_rank = (cfg->rank + cfg->world_size - 1) % cfg->world_size;
    c->right_rank = (cfg->rank + 1) % cfg->world_size;
    *out = &c->base;
    return SHARDLM_OK;
}
