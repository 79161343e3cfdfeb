/* ring.c - the ring communicator's data path. Every collective is
 * described as two queues of byte segments: what this rank sends to its right
 * neighbour and what it receives from its left one. A send segment may depend
 * on a receive segment (forward what just arrived), which pipelines the ring
 * steps at byte granularity. One loop drives both directions of the
 * full-duplex ring, so no call can deadlock on flow control. Each hop is TCP
 * (non-blocking sockets) or shared memory (shm.c); a rank waits in poll()
 * when a TCP hop is involved, else it spins briefly and sleeps on futexes. */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
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
    uint64_t shm_spin_ns; /* how long a shared-memory wait spins before sleeping */
    uint64_t shm_yield_ns; /* then how long it calls sched_yield() before sleeping */
    uint64_t tcp_spin_ns; /* the same before poll() on TCP hops (SHARDLM_RING_SPIN_US, default 0) */
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
    /* Neighbours blocked on us see EOF (or the segment marked broken) at
     * once instead of waiting out their own timeouts, so a failure travels
     * around the ring fast. */
    shutdown(c->links.left_fd, SHUT_RDWR);
    shutdown(c->links.right_fd, SHUT_RDWR);
    ring_shm_close(&c->links.left);
    ring_shm_close(&c->links.right);
}

static const char *ring_hop_kind(const ring_comm *c, int right)
{
    return (right ? c->links.right.seg : c->links.left.seg) ? ", shared memory" : "";
}

static int ring_fail_peer(ring_comm *c, const ring_xfer *x, int right, int err)
{
    int peer = right ? c->right_rank : c->left_rank;
    const char *addr = right ? c->links.right_addr : c->links.left_addr;
    c->base.fault_peer = peer;
    if (err == 0)
        shardlm_err_set("rank %d: %s: rank %d (%s neighbour, %s%s) closed the connection", c->base.rank, x->op, peer,
                        right ? "right" : "left", addr, ring_hop_kind(c, right));
    else
        shardlm_err_set("rank %d: %s: rank %d (%s neighbour, %s%s): %s", c->base.rank, x->op, peer,
                        right ? "right" : "left", addr, ring_hop_kind(c, right), strerror(err));
    ring_break(c);
    return SHARDLM_EPEER;
}

static int ring_fail_timeout(ring_comm *c, const ring_xfer *x, int waiting_left)
{
    int peer = waiting_left ? c->left_rank : c->right_rank;
    c->base.fault_peer = peer;
    shardlm_err_set("rank %d: %s: timed out after %d ms waiting for rank %d (%s neighbour, %s%s)%s", c->base.rank,
                    x->op, x->timeout_ms, peer, waiting_left ? "left" : "right",
                    waiting_left ? c->links.left_addr : c->links.right_addr, ring_hop_kind(c, !waiting_left),
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
        if (c->links.right.seg) {
            size_t k = ring_shm_write(&c->links.right, s->ptr + x->sent, avail - x->sent);
            if (k == 0) {
                *want_out = 1;
                return SHARDLM_OK;
            }
            x->sent += k;
            *progress = 1;
            continue;
        }
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
 * unknown length, and this sum is a tenth of a large all-reduce's time. src
 * is bytes: in a shared-memory ring a value may sit at any offset. */
typedef float ring_v4f __attribute__((vector_size(16)));

void ring_add_f32(float *restrict dst, const unsigned char *restrict src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        ring_v4f a0, a1, b0, b1;
        memcpy(&a0, dst + i, 16);
        memcpy(&a1, dst + i + 4, 16);
        memcpy(&b0, src + 4 * i, 16);
        memcpy(&b1, src + 4 * i + 16, 16);
        a0 += b0;
        a1 += b1;
        memcpy(dst + i, &a0, 16);
        memcpy(dst + i + 4, &a1, 16);
    }
    for (; i < n; i++) {
        float v;
        memcpy(&v, src + 4 * i, 4);
        dst[i] += v;
    }
}

/* Sums the whole floats that have landed in scratch since the last call.
 * recv() never crosses the end of scratch, so they are contiguous there. */
static void ring_add_landed(ring_comm *c, const ring_recv_seg *r, ring_xfer *x)
{
    size_t f0 = x->added / 4, f1 = x->rcvd / 4;
    if (f1 == f0) return;
    float *dst = (float *)(void *)r->ptr + f0;
    const unsigned char *src = (const unsigned char *)c->scratch + (x->added % RING_SCRATCH_BYTES);
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
        if (c->links.left.seg) {
            size_t k = ring_shm_read(&c->links.left, dst, want, r->add); /* sums straight out of the segment */
            if (k == 0) {
                *want_in = 1;
                return SHARDLM_OK;
            }
            x->rcvd += k;
            x->added = x->rcvd;
            *progress = 1;
            continue;
        }
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

/* A shared-memory sleep wakes this often to see whether the peer process
 * is still there (its socket closes when it dies; a dead process rings no
 * bell). */
#define RING_LIVENESS_NS 10000000ull

static _Atomic int ring_no_waitv; /* the kernel lacks futex_waitv: sleep in poll() instead */

static inline void ring_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static ring_hop *ring_side(ring_comm *c, int right) { return right ? &c->links.right : &c->links.left; }

/* A shared-memory hop we wait on: 1 when its peer moved, 0 when not, else
 * the failure (the peer marked the hop broken and left nothing to read). */
static int ring_shm_check(ring_comm *c, ring_xfer *x, int right)
{
    int r = ring_shm_poll(ring_side(c, right));
    return r < 0 ? ring_fail_peer(c, x, right, 0) : r;
}

static int ring_check_all(ring_comm *c, ring_xfer *x, const int *side, int n)
{
    for (int k = 0; k < n; k++) {
        int r = ring_shm_check(c, x, side[k]);
        if (r) return r;
    }
    return 0;
}

/* Before sleeping: spins up to spin_ns, then calls sched_yield() until
 * yield_ns more have passed, watching the shared-memory hops (and, when
 * np > 0, the sockets). Returns 1 when something moved, 0, or a failure. */
static int ring_spin(ring_comm *c, ring_xfer *x, const int *side, int n, struct pollfd *p, int np, uint64_t spin_ns,
                     uint64_t yield_ns)
{
    if (!spin_ns && !yield_ns) return 0; /* the sleep loop checks once more before it sleeps */
    uint64_t t0 = shardlm_now_ns(), end = t0 + spin_ns, yend = end + yield_ns;
    int spinning = spin_ns > 0;
    for (unsigned i = 0;; i++) {
        int r = ring_check_all(c, x, side, n);
        if (r) return r;
        if (np && poll(p, (nfds_t)np, 0) > 0) return 1;
        if (spinning && ((i & 63) != 63 || shardlm_now_ns() < end)) {
            ring_cpu_relax();
            continue;
        }
        spinning = 0;
        if (!yield_ns || shardlm_now_ns() >= yend) return 0;
        sched_yield();
    }
}

/* A dead peer's socket has closed: fail naming it, unless its last bytes
 * are still to be read. Returns 0 when every peer is there. */
static int ring_check_alive(ring_comm *c, ring_xfer *x, const int *side, int n)
{
    for (int k = 0; k < n; k++) {
        int e = ring_shm_peer_gone(ring_side(c, side[k]));
        if (!e) continue;
        int r = ring_shm_check(c, x, side[k]);
        if (r) return r;
        return ring_fail_peer(c, x, side[k], e == ECONNRESET ? 0 : e);
    }
    return 0;
}

static int ring_wait_poll(ring_comm *c, ring_xfer *x, int want_out, int want_in);

/* Every hop we wait on is shared memory: yield a while, then sleep on the
 * bells, waking every RING_LIVENESS_NS to see that the peers are alive. */
static int ring_wait_shm(ring_comm *c, ring_xfer *x, int want_out, int want_in)
{
    int side[2], n = 0;
    if (want_in) side[n++] = 0;
    if (want_out) side[n++] = 1;
    ring_hop *hs[2] = {ring_side(c, side[0]), n > 1 ? ring_side(c, side[1]) : NULL};
    int r = ring_spin(c, x, side, n, NULL, 0, c->shm_spin_ns, c->shm_yield_ns);
    if (r) return r < 0 ? r : SHARDLM_OK;
    for (;;) {
        uint64_t now = shardlm_now_ns();
        if (now >= x->deadline_ns) return ring_fail_timeout(c, x, want_in);
        for (int k = 0; k < n; k++) ring_shm_sleep_begin(hs[k], RING_SHM_SLEEP_FUTEX);
        r = ring_check_all(c, x, side, n); /* after announcing: a wake-up cannot be missed */
        int nosys = 0;
        if (!r) {
            uint64_t until = now + RING_LIVENESS_NS < x->deadline_ns ? now + RING_LIVENESS_NS : x->deadline_ns;
            nosys = ring_shm_futex_wait(hs, n, until) == ENOSYS;
        }
        for (int k = 0; k < n; k++) ring_shm_sleep_end(hs[k]);
        if (nosys) {
            atomic_store(&ring_no_waitv, 1);
            return ring_wait_poll(c, x, want_out, want_in);
        }
        if (!r) r = ring_check_all(c, x, side, n);
        if (!r) r = ring_check_alive(c, x, side, n);
        if (r) return r < 0 ? r : SHARDLM_OK;
    }
}

/* A TCP hop is involved: sleep in poll(). Shared-memory hops in the wait
 * ask their peers for a byte on the socket instead of a futex wake. */
static int ring_wait_poll(ring_comm *c, ring_xfer *x, int want_out, int want_in)
{
    struct pollfd p[2];
    int np = 0, side[2], n = 0, tcp[2];
    if (want_in) {
        tcp[np] = !c->links.left.seg;
        p[np++] = (struct pollfd){.fd = c->links.left_fd, .events = POLLIN};
        if (!tcp[np - 1]) side[n++] = 0;
    }
    if (want_out) {
        tcp[np] = !c->links.right.seg;
        p[np] = (struct pollfd){.fd = c->links.right_fd, .events = tcp[np] ? POLLOUT : POLLIN};
        if (!tcp[np++]) side[n++] = 1;
    }
    int r = ring_spin(c, x, side, n, p, np, n ? c->shm_spin_ns : c->tcp_spin_ns, n ? c->shm_yield_ns : 0);
    if (r) return r < 0 ? r : SHARDLM_OK;
    for (;;) {
        int ms = -1;
        if (x->deadline_ns != UINT64_MAX) {
            uint64_t now = shardlm_now_ns();
            if (now >= x->deadline_ns) return ring_fail_timeout(c, x, want_in);
            ms = (int)((x->deadline_ns - now + 999999) / 1000000);
        }
        for (int k = 0; k < n; k++) ring_shm_sleep_begin(ring_side(c, side[k]), RING_SHM_SLEEP_SOCKET);
        r = ring_check_all(c, x, side, n);
        int pr = r ? 0 : poll(p, (nfds_t)np, ms);
        int perr = errno;
        for (int k = 0; k < n; k++) ring_shm_sleep_end(ring_side(c, side[k]));
        if (r) return r < 0 ? r : SHARDLM_OK;
        if (pr < 0 && perr != EINTR) {
            shardlm_err_set("rank %d: %s: poll: %s", c->base.rank, x->op, strerror(perr));
            ring_break(c);
            return SHARDLM_ERUNTIME;
        }
        if (pr <= 0) continue;
        for (int i = 0; i < np; i++)
            if (tcp[i] && p[i].revents) return SHARDLM_OK;
        r = ring_check_alive(c, x, side, n); /* drains the wake-up bytes */
        if (!r) r = ring_check_all(c, x, side, n);
        if (r) return r < 0 ? r : SHARDLM_OK;
    }
}

static int ring_wait(ring_comm *c, ring_xfer *x, int want_out, int want_in)
{
    int tcp = (want_in && !c->links.left.seg) || (want_out && !c->links.right.seg);
    int shm = (want_in && c->links.left.seg) || (want_out && c->links.right.seg);
    if (shm && !tcp && !atomic_load(&ring_no_waitv)) return ring_wait_shm(c, x, want_out, want_in);
    return ring_wait_poll(c, x, want_out, want_in);
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
    ring_shm_close(&c->links.left); /* a neighbour still waiting fails at once */
    ring_shm_close(&c->links.right);
    ring_shm_unmap(&c->links.left);
    ring_shm_unmap(&c->links.right);
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

int shardlm_ring_transport_parse(const char *name, shardlm_ring_transport *out)
{
    if (!name) return SHARDLM_EINPUT;
    if (!strcmp(name, "auto")) *out = SHARDLM_RING_AUTO;
    else if (!strcmp(name, "tcp")) *out = SHARDLM_RING_TCP;
    else if (!strcmp(name, "shm")) *out = SHARDLM_RING_SHM;
    else return SHARDLM_EINPUT;
    return SHARDLM_OK;
}

int shardlm_ring_transport_env(shardlm_ring_transport *out)
{
    const char *e = getenv("SHARDLM_RING_TRANSPORT");
    *out = SHARDLM_RING_AUTO;
    if (!e || !*e || shardlm_ring_transport_parse(e, out) == SHARDLM_OK) return SHARDLM_OK;
    shardlm_err_set("SHARDLM_RING_TRANSPORT='%s': expected auto, tcp or shm", e);
    return SHARDLM_EINPUT;
}

static int ring_env_int(const char *name, int dflt)
{
    const char *e = getenv(name);
    return e && *e ? atoi(e) : dflt;
}

/* How a shared-memory wait waits before its futex sleep: sched_yield() in
 * a loop, after an optional spin. On an idle core yield returns at once and
 * works as a spin (a system call per turn); on a busy one it hands the core
 * to whoever is runnable, often the peer we wait for. Pure spinning cost
 * its whole length whenever the peer was not running (8 KiB at W=2 on the
 * loaded 2-core VM: 14 us with no spin, 20 / 55 / 120 us spinning 2 / 20 /
 * 50 us first), so it is off unless SHARDLM_SHM_SPIN_US asks for it. A
 * futex sleep and its wake-up cost tens of microseconds, so it comes last.
 * When this host runs more ranks than it has cores (both hops local and
 * the world larger than the online cores: ranks that share a host form a
 * run of the ring), a waiter's peer is usually not running, and yielding
 * longer before the sleep hands it the core sooner than a futex round
 * trip: 4 ranks on 2 quiet cores went from 0.59-0.73x of 2 ranks' decode at
 * 50 us to 0.80-0.89x at 500 us. docs/PERFORMANCE.md has the measurements. */
#define RING_SHM_SPIN_US 0
#define RING_SHM_YIELD_US 50
#define RING_SHM_YIELD_OVERSUB_US 500

static int ring_oversubscribed(const ring_comm *c, int world)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return c->links.left.seg && c->links.right.seg && cores > 0 && world > cores;
}

static void ring_shm_waits(const ring_comm *c, int world, uint64_t *spin_ns, uint64_t *yield_ns)
{
    int spin = ring_env_int("SHARDLM_SHM_SPIN_US", RING_SHM_SPIN_US);
    int yield = ring_env_int("SHARDLM_SHM_YIELD_US",
                             ring_oversubscribed(c, world) ? RING_SHM_YIELD_OVERSUB_US : RING_SHM_YIELD_US);
    *spin_ns = spin > 0 ? (uint64_t)spin * 1000u : 0;
    *yield_ns = yield > 0 ? (uint64_t)yield * 1000u : 0;
}

static void ring_free(ring_comm *c)
{
    if (c) free(c->sends), free(c->recvs), free(c->scratch), free(c->bar);
    free(c);
}

int shardlm_ring_comm_create_opts(const shardlm_ring_config *cfg, const shardlm_ring_opts *o, shardlm_comm **out)
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
        ring_free(c);
        shardlm_err_set("rank %d: out of memory creating the ring", cfg->rank);
        return SHARDLM_ENOMEM;
    }
    int tmo = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 1;
    rc = ring_setup_links(cfg, tmo, &c->links);
    if (rc) {
        ring_free(c);
        return rc;
    }
    /* A fresh deadline: a neighbour may still be connecting its other link. */
    rc = ring_shm_negotiate(cfg, o, &c->links, shardlm_now_ns() + (uint64_t)tmo * 1000000u);
    if (rc) {
        close(c->links.left_fd);
        close(c->links.right_fd);
        ring_free(c);
        return rc;
    }
    c->base.ops = &ring_ops;
    c->base.rank = cfg->rank;
    c->base.world_size = cfg->world_size;
    c->left_rank = (cfg->rank + cfg->world_size - 1) % cfg->world_size;
    c->right_rank = (cfg->rank + 1) % cfg->world_size;
    ring_shm_waits(c, cfg->world_size, &c->shm_spin_ns, &c->shm_yield_ns);
    int tcp_us = ring_env_int("SHARDLM_RING_SPIN_US", 0);
    c->tcp_spin_ns = tcp_us > 0 ? (uint64_t)tcp_us * 1000u : 0;
    *out = &c->base;
    return SHARDLM_OK;
}

int shardlm_ring_comm_create(const shardlm_ring_config *cfg, int connect_timeout_ms, shardlm_comm **out)
{
    shardlm_ring_opts o = {.connect_timeout_ms = connect_timeout_ms};
    int rc = shardlm_ring_transport_env(&o.transport);
    return rc ? rc : shardlm_ring_comm_create_opts(cfg, &o, out);
}

static int ring_open(const shardlm_comm_open_opts *o, shardlm_comm **out)
{
    const shardlm_ring_open_config *rcfg = o->config;
    if (!rcfg || !rcfg->cfg) {
        shardlm_err_set("rank %d: the ring transport needs a RING_CONFIG", o->rank);
        return SHARDLM_EINPUT;
    }
    shardlm_ring_opts ro = {o->timeout_ms, rcfg->transport};
    return shardlm_ring_comm_create_opts(rcfg->cfg, &ro, out);
}

const shardlm_comm_transport shardlm_ring_comm_transport = {"ring", "ring/ring.c", ring_open};

const char *shardlm_ring_comm_hop(const shardlm_comm *base, int right, const char **why)
{
    if (!base || base->ops != &ring_ops) return NULL;
    const ring_comm *c = (const ring_comm *)base;
    const ring_hop *h = right ? &c->links.right : &c->links.left;
    if (why) *why = h->why;
    return h->seg ? "shm" : "tcp";
}
