/* setup.c - connecting a rank to its ring neighbours with libuv: listen for
 * the left neighbour, resolve and connect to the right one with exponential
 * backoff under one overall deadline, and exchange a handshake on both links
 * so that a duplicate rank or a different world size fails at once with a
 * message naming the peer. With a cluster token the handshake also runs the
 * HMAC challenge-response, step by step in the loop. A stranger on the
 * listen port (garbage, no token, a wrong token, a close) is refused and
 * logged with its address, and the wait for the real left neighbour goes
 * on; the listener closes once the ring has formed. The connected sockets
 * are then taken out of libuv: the data path is a tight poll() loop (see
 * ring.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "ring_internal.h"
#include "shardlm_auth.h"
#include "shardlm_common.h"

#define RING_BACKOFF_MIN_MS 5
#define RING_BACKOFF_MAX_MS 500
#define RING_LOOPBACK_SNDBUF (256 << 10)
#define RING_MAX_LEFT 4 /* connections handshaking at once on the listen port */
#define RING_GRACE_MS 300 /* a lost right link waits this long for a better reason */
#define RING_IN_BYTES (RING_HELLO_BYTES + SHARDLM_AUTH_HELLO_BYTES + SHARDLM_AUTH_MAC_BYTES)

typedef struct ring_setup ring_setup;

typedef struct {
    uv_tcp_t tcp;
    ring_setup *s;
    unsigned char in[RING_IN_BYTES]; /* ring hello, then the token's hello and proof */
    size_t got, need;
    shardlm_auth_steps au;
    uint64_t since;
    int is_right;
    int open;      /* tcp handle initialised, must be closed */
    int connected; /* TCP connection established */
    int done;      /* handshake validated */
    char addr[300];
} ring_link;

struct ring_setup {
    uv_loop_t loop;
    const shardlm_ring_config *cfg;
    int timeout_ms;
    int left_rank, right_rank;
    uv_tcp_t listener;
    uv_timer_t deadline, retry;
    uv_getaddrinfo_t gai;
    uv_connect_t conn_req;
    ring_link right;
    ring_link *cand[RING_MAX_LEFT]; /* who may be the left neighbour (heap, freed when closed) */
    ring_link *left;                /* the one that was */
    size_t ah;                      /* bytes of the token's hello: 0 without a token */
    int listener_open, gai_pending;
    int backoff_ms;
    int finished; /* success or error recorded; callbacks stand down */
    int rc;
    char last_err[400];
    char lost_right[400]; /* why the right link died mid-handshake, said after the grace */
};

static void setup_finish(ring_setup *s, int rc)
{
    if (s->finished) return;
    s->finished = 1;
    s->rc = rc;
    uv_stop(&s->loop);
}

static void setup_maybe_done(ring_setup *s)
{
    if (s->left && s->right.done) setup_finish(s, SHARDLM_OK);
}

static void setup_encode_hello(const ring_setup *s, unsigned char *b)
{
    uint32_t w[4] = {htonl(RING_MAGIC), htonl(RING_PROTO_VERSION), htonl((uint32_t)s->cfg->rank),
                     htonl((uint32_t)s->cfg->world_size)};
    memcpy(b, w, sizeof w);
}

/* 16 bytes always fit in a fresh socket's send buffer, so a direct send()
 * is enough, and MSG_NOSIGNAL keeps a vanished peer from raising SIGPIPE. */
static int setup_send(ring_link *l, const void *b, size_t n)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&l->tcp, &fd) != 0) return -1;
    return send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n ? 0 : -1;
}

static int setup_send_hello(ring_setup *s, ring_link *l)
{
    unsigned char b[RING_HELLO_BYTES + SHARDLM_AUTH_HELLO_BYTES];
    setup_encode_hello(s, b);
    if (s->ah && shardlm_auth_begin(&l->au, !l->is_right, b + RING_HELLO_BYTES)) return -1;
    l->need = RING_HELLO_BYTES + s->ah;
    return setup_send(l, b, RING_HELLO_BYTES + s->ah);
}

static const char *setup_side(const ring_link *l) { return l->is_right ? "right" : "left"; }

static void setup_cand_closed(uv_handle_t *h) { free(h->data); }

/* A left candidate leaves: its slot frees at once, its memory when closed. */
static void setup_drop(ring_setup *s, ring_link *l)
{
    for (int i = 0; i < RING_MAX_LEFT; i++)
        if (s->cand[i] == l) s->cand[i] = NULL;
    uv_close((uv_handle_t *)&l->tcp, setup_cand_closed);
}

/* A stranger, logged with its address. On the listen port the wait for the
 * real left neighbour goes on; the right link is the configured address,
 * so its failure fails the set-up. */
static void setup_refuse(ring_setup *s, ring_link *l, int rc)
{
    fprintf(stderr, "shardlm: refused a ring connection from %s: %s\n", l->addr, shardlm_err_get());
    if (l->is_right) setup_finish(s, rc);
    else setup_drop(s, l);
}

/* The left neighbour proved itself: the other candidates are strangers. */
static void setup_left_found(ring_setup *s, ring_link *l)
{
    s->left = l;
    for (int i = 0; i < RING_MAX_LEFT; i++) {
        if (s->cand[i] == l) s->cand[i] = NULL;
        if (!s->cand[i]) continue;
        shardlm_err_set("the left neighbour rank %d has connected", s->left_rank);
        setup_refuse(s, s->cand[i], SHARDLM_EINPUT);
    }
}

static void setup_check_hello(ring_setup *s, ring_link *l)
{
    uint32_t w[4];
    memcpy(w, l->in, sizeof w);
    uint32_t magic = ntohl(w[0]), version = ntohl(w[1]);
    int rank = (int)ntohl(w[2]), world = (int)ntohl(w[3]);
    int me = s->cfg->rank, expect = l->is_right ? s->right_rank : s->left_rank;
    if (magic != RING_MAGIC) {
        shardlm_err_set("rank %d: %s peer %s is not a shardlm rank (bad handshake magic 0x%08x)", me,
                        setup_side(l), l->addr, magic);
        setup_refuse(s, l, SHARDLM_EINPUT);
        return;
    } else if (version != RING_PROTO_VERSION) {
        shardlm_err_set("rank %d: %s peer %s speaks ring protocol v%u, this rank speaks v%u", me, setup_side(l),
                        l->addr, version, RING_PROTO_VERSION);
    } else if (world != s->cfg->world_size) {
        shardlm_err_set("rank %d: %s peer %s claims rank %d of world_size %d, but this rank's world_size is %d",
                        me, setup_side(l), l->addr, rank, world, s->cfg->world_size);
    } else if (rank == me) {
        shardlm_err_set("rank %d: %s peer %s also claims rank %d: duplicate rank in the ring configs", me,
                        setup_side(l), l->addr, rank);
    } else if (rank != expect) {
        shardlm_err_set("rank %d: %s peer %s claims rank %d, expected rank %d", me, setup_side(l), l->addr, rank,
                        expect);
    } else {
        l->done = 1;
        if (!l->is_right) setup_left_found(s, l);
        setup_maybe_done(s);
        return;
    }
    setup_finish(s, SHARDLM_EINPUT);
}

static void setup_lost_right_fire(uv_timer_t *t)
{
    ring_setup *s = t->data;
    if (s->finished) return;
    shardlm_err_set("%s", s->lost_right);
    setup_finish(s, SHARDLM_EPEER);
}

/* A peer that refuses this rank's config (a duplicate rank, another world
 * size) exits at once, and its unaccepted or unread sockets reset: the reset
 * can reach this rank before that peer's hello on the other link, which
 * names the real fault. So a right link lost mid-handshake fails the set-up
 * only after a short grace in which a config error seen elsewhere wins.
 * (The retry timer is idle once the right link has connected.) */
static void setup_lose_right(ring_setup *s, ring_link *l)
{
    uv_read_stop((uv_stream_t *)&l->tcp);
    snprintf(s->lost_right, sizeof s->lost_right, "%s", shardlm_err_get());
    uv_timer_stop(&s->retry);
    uv_timer_start(&s->retry, setup_lost_right_fire, RING_GRACE_MS, 0);
}

static void setup_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    ring_link *l = h->data;
    /* Exactly the missing hello bytes: anything after them is the first
     * collective's data and must stay in the socket for ring.c. */
    buf->base = (char *)l->in + l->got;
    buf->len = l->need - l->got;
}

static void setup_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    ring_link *l = st->data;
    ring_setup *s = l->s;
    if (s->finished) return;
    if (nread < 0) {
        shardlm_err_set("rank %d: %s peer %s closed the connection during the handshake (%s)", s->cfg->rank,
                        setup_side(l), l->addr, uv_strerror((int)nread));
        if (l->is_right) setup_lose_right(s, l);
        else setup_refuse(s, l, SHARDLM_EPEER);
        return;
    }
    l->got += (size_t)nread;
    if (l->got < l->need) return;
    if (s->ah) {
        char who[360];
        snprintf(who, sizeof who, "rank %d's %s peer %s", s->cfg->rank, setup_side(l), l->addr);
        uint32_t magic;
        memcpy(&magic, l->in, 4);
        if (ntohl(magic) != RING_MAGIC) { /* not a rank at all: said as such, before any token talk */
            uv_read_stop(st);
            setup_check_hello(s, l);
            return;
        }
        if (l->need == RING_HELLO_BYTES + s->ah) { /* their hello is in: our proof goes out */
            unsigned char proof[SHARDLM_AUTH_MAC_BYTES];
            if (shardlm_auth_answer(&l->au, l->in + RING_HELLO_BYTES, proof, who)) {
                setup_refuse(s, l, SHARDLM_EINPUT);
                return;
            }
            if (setup_send(l, proof, sizeof proof)) {
                shardlm_err_set("rank %d: cannot send the token proof to %s peer %s: %s", s->cfg->rank,
                                setup_side(l), l->addr, strerror(errno));
                setup_refuse(s, l, SHARDLM_EPEER);
                return;
            }
            l->need += SHARDLM_AUTH_MAC_BYTES;
            return;
        }
        if (shardlm_auth_check(&l->au, l->in + RING_HELLO_BYTES + s->ah, who)) {
            uv_read_stop(st);
            setup_refuse(s, l, SHARDLM_EINPUT);
            return;
        }
    }
    uv_read_stop(st);
    setup_check_hello(s, l);
}

static void setup_start_link(ring_setup *s, ring_link *l)
{
    l->connected = 1;
    uv_tcp_nodelay(&l->tcp, 1);
    if (setup_send_hello(s, l) != 0) {
        shardlm_err_set("rank %d: cannot send the handshake to %s peer %s: %s", s->cfg->rank, setup_side(l),
                        l->addr, strerror(errno));
        if (l->is_right) setup_finish(s, SHARDLM_EPEER);
        else setup_refuse(s, l, SHARDLM_EPEER); /* a stranger that came and went */
        return;
    }
    int r = uv_read_start((uv_stream_t *)&l->tcp, setup_alloc, setup_read);
    if (r) {
        shardlm_err_set("rank %d: reading from %s peer %s: %s", s->cfg->rank, setup_side(l), l->addr,
                        uv_strerror(r));
        setup_finish(s, SHARDLM_ERUNTIME);
    }
}

static void setup_resolve(ring_setup *s);

static void setup_retry_fire(uv_timer_t *t)
{
    ring_setup *s = t->data;
    if (!s->finished) setup_resolve(s);
}

static void setup_schedule_retry(ring_setup *s)
{
    if (s->finished) return;
    uv_timer_start(&s->retry, setup_retry_fire, (uint64_t)s->backoff_ms, 0);
    s->backoff_ms *= 2;
    if (s->backoff_ms > RING_BACKOFF_MAX_MS) s->backoff_ms = RING_BACKOFF_MAX_MS;
}

static void setup_right_closed(uv_handle_t *h)
{
    ring_link *l = h->data;
    setup_schedule_retry(l->s);
}

/* `open` drops at once so the final clean-up never closes it twice. */
static void setup_close_right(ring_setup *s)
{
    s->right.open = 0;
    s->right.connected = 0;
    uv_close((uv_handle_t *)&s->right.tcp, setup_right_closed);
}

/* Linux may connect a loopback socket to itself when the target port is in
 * the ephemeral range and nobody listens yet (TCP simultaneous open). */
static int setup_is_self_connect(uv_tcp_t *t)
{
    struct sockaddr_storage a, b;
    int la = sizeof a, lb = sizeof b;
    if (uv_tcp_getsockname(t, (struct sockaddr *)&a, &la) || uv_tcp_getpeername(t, (struct sockaddr *)&b, &lb))
        return 0;
    return la == lb && !memcmp(&a, &b, (size_t)la);
}

static void setup_connected(uv_connect_t *req, int status)
{
    ring_setup *s = req->data;
    ring_link *l = &s->right;
    if (s->finished) return;
    if (status == 0 && setup_is_self_connect(&l->tcp)) status = UV_ECONNREFUSED;
    if (status < 0) {
        snprintf(s->last_err, sizeof s->last_err, "%s", uv_strerror(status));
        setup_close_right(s);
        return;
    }
    setup_start_link(s, l);
}

static void setup_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    ring_setup *s = req->data;
    s->gai_pending = 0;
    if (s->finished || status < 0) {
        if (status < 0)
            snprintf(s->last_err, sizeof s->last_err, "cannot resolve %s: %s", s->cfg->right_ip,
                     uv_strerror(status));
        uv_freeaddrinfo(ai);
        setup_schedule_retry(s);
        return;
    }
    ring_link *l = &s->right;
    int r = uv_tcp_init_ex(&s->loop, &l->tcp, (unsigned)ai->ai_family);
    if (r == 0) {
        l->open = 1;
        l->tcp.data = l;
        s->conn_req.data = s;
        r = uv_tcp_connect(&s->conn_req, &l->tcp, ai->ai_addr, setup_connected);
    }
    uv_freeaddrinfo(ai);
    if (r) {
        snprintf(s->last_err, sizeof s->last_err, "%s", uv_strerror(r));
        if (l->open) setup_close_right(s);
        else setup_schedule_retry(s);
    }
}

static void setup_resolve(ring_setup *s)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    char port[16];
    snprintf(port, sizeof port, "%d", s->cfg->right_port);
    s->gai.data = s;
    int r = uv_getaddrinfo(&s->loop, &s->gai, setup_resolved, s->cfg->right_ip, port, &hints);
    if (r) {
        snprintf(s->last_err, sizeof s->last_err, "cannot resolve %s: %s", s->cfg->right_ip, uv_strerror(r));
        setup_schedule_retry(s);
        return;
    }
    s->gai_pending = 1;
}

/* A free candidate slot; when all are taken, the oldest gives way, so
 * silent strangers cannot keep the left neighbour out. */
static int setup_slot(ring_setup *s)
{
    int old = 0;
    for (int i = 0; i < RING_MAX_LEFT; i++) {
        if (!s->cand[i]) return i;
        if (s->cand[i]->since < s->cand[old]->since) old = i;
    }
    shardlm_err_set("rank %d: it sent no complete handshake before %d newer connections came", s->cfg->rank,
                    RING_MAX_LEFT);
    setup_refuse(s, s->cand[old], SHARDLM_EINPUT);
    return old;
}

static void setup_on_connection(uv_stream_t *server, int status)
{
    ring_setup *s = server->data;
    if (s->finished || status < 0) return;
    ring_link *l = calloc(1, sizeof *l);
    if (!l) return;
    uv_tcp_init(&s->loop, &l->tcp);
    l->s = s;
    l->tcp.data = l;
    l->open = 1;
    l->since = shardlm_now_ns();
    if (uv_accept(server, (uv_stream_t *)&l->tcp) != 0) {
        uv_close((uv_handle_t *)&l->tcp, setup_cand_closed);
        return;
    }
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&l->tcp, &fd) == 0)
        shardlm_peer_name(fd, l->addr, sizeof l->addr);
    else
        snprintf(l->addr, sizeof l->addr, "?:0");
    if (s->left) { /* someone after the left neighbour */
        shardlm_err_set("the left neighbour rank %d is already connected", s->left_rank);
        fprintf(stderr, "shardlm: refused a ring connection from %s: %s\n", l->addr, shardlm_err_get());
        uv_close((uv_handle_t *)&l->tcp, setup_cand_closed);
        return;
    }
    s->cand[setup_slot(s)] = l;
    setup_start_link(s, l);
}

static const ring_link *setup_newest(const ring_setup *s)
{
    const ring_link *n = NULL;
    for (int i = 0; i < RING_MAX_LEFT; i++)
        if (s->cand[i] && (!n || s->cand[i]->since > n->since)) n = s->cand[i];
    return n;
}

static void setup_deadline(uv_timer_t *t)
{
    ring_setup *s = t->data;
    const shardlm_ring_config *c = s->cfg;
    if (!s->right.done) {
        if (s->right.connected)
            shardlm_err_set("rank %d: right neighbour rank %d at %s:%d accepted the connection but sent no "
                            "shardlm handshake within %d ms", c->rank, s->right_rank, c->right_ip, c->right_port,
                            s->timeout_ms);
        else
            shardlm_err_set("rank %d: right neighbour rank %d at %s:%d unreachable for %d ms (last error: %s)",
                            c->rank, s->right_rank, c->right_ip, c->right_port, s->timeout_ms,
                            s->last_err[0] ? s->last_err : "none");
    } else if (setup_newest(s)) {
        shardlm_err_set("rank %d: left peer %s connected to port %d but sent no shardlm handshake within %d ms",
                        c->rank, setup_newest(s)->addr, c->port, s->timeout_ms);
    } else {
        shardlm_err_set("rank %d: left neighbour rank %d never connected to port %d within %d ms", c->rank,
                        s->left_rank, c->port, s->timeout_ms);
    }
    setup_finish(s, SHARDLM_ETIMEDOUT);
}

static int setup_listen(ring_setup *s)
{
    struct sockaddr_in addr;
    uv_ip4_addr("0.0.0.0", s->cfg->port, &addr);
    int r = uv_tcp_init_ex(&s->loop, &s->listener, AF_INET);
    if (r == 0) {
        s->listener_open = 1;
        s->listener.data = s;
        r = uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
    }
    if (r == 0) r = uv_listen((uv_stream_t *)&s->listener, 16, setup_on_connection);
    if (r) {
        shardlm_err_set("rank %d: cannot listen on port %d: %s%s", s->cfg->rank, s->cfg->port, uv_strerror(r),
                        r == UV_EADDRINUSE ? " (is another rank or program using this port?)" : "");
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

static int setup_peer_is_loopback(int fd)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0) return 0;
    if (sa.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&sa)->sin_addr.s_addr) >> 24) == 127;
    return sa.ss_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&sa)->sin6_addr);
}

/* Socket buffers. On loopback a small send buffer bounds the bytes in
 * flight, so the receiver copies them while they are still in cache; that
 * halves the receive copy's cost (docs/PERFORMANCE.md). The receive side
 * stays autotuned, and links to other machines keep the kernel's autotuning
 * so a long, fast path can fill its bandwidth-delay product.
 * SHARDLM_RING_SOCKBUF=BYTES sets both buffers of every link instead
 * (0: autotuning everywhere). */
static void setup_tune(int fd)
{
    const char *e = getenv("SHARDLM_RING_SOCKBUF");
    if (e && *e) {
        int v = atoi(e);
        if (v > 0) {
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
        }
        return;
    }
    int v = RING_LOOPBACK_SNDBUF;
    if (setup_peer_is_loopback(fd)) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
}

/* Takes a connected socket out of libuv: a close-on-exec duplicate stays
 * open after the uv handle is closed. */
static int setup_detach(ring_link *l)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&l->tcp, &fd) != 0) return -1;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (nfd < 0) return -1;
    int fl = fcntl(nfd, F_GETFL);
    fcntl(nfd, F_SETFL, fl | O_NONBLOCK);
    setup_tune(nfd);
    return nfd;
}

static void setup_close_all(ring_setup *s)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&s->deadline, (uv_handle_t *)&s->retry};
    for (size_t i = 0; i < 2; i++) uv_close(hs[i], NULL);
    if (s->listener_open) uv_close((uv_handle_t *)&s->listener, NULL);
    for (int i = 0; i < RING_MAX_LEFT; i++)
        if (s->cand[i]) uv_close((uv_handle_t *)&s->cand[i]->tcp, setup_cand_closed);
    if (s->left) uv_close((uv_handle_t *)&s->left->tcp, setup_cand_closed);
    if (s->right.open) uv_close((uv_handle_t *)&s->right.tcp, NULL);
    if (s->gai_pending) uv_cancel((uv_req_t *)&s->gai);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
}

int ring_setup_links(const shardlm_ring_config *cfg, int connect_timeout_ms, ring_links *out)
{
    ring_setup *s = calloc(1, sizeof *s);
    if (!s) {
        shardlm_err_set("rank %d: out of memory", cfg->rank);
        return SHARDLM_ENOMEM;
    }
    int w = cfg->world_size;
    s->cfg = cfg;
    s->timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 1;
    s->left_rank = (cfg->rank + w - 1) % w;
    s->right_rank = (cfg->rank + 1) % w;
    s->backoff_ms = RING_BACKOFF_MIN_MS;
    s->right.s = s;
    s->ah = shardlm_auth_enabled() ? SHARDLM_AUTH_HELLO_BYTES : 0;
    s->right.is_right = 1;
    snprintf(s->right.addr, sizeof s->right.addr, "%s:%d", cfg->right_ip, cfg->right_port);
    uv_loop_init(&s->loop);
    uv_timer_init(&s->loop, &s->deadline);
    uv_timer_init(&s->loop, &s->retry);
    s->deadline.data = s->retry.data = s;
    int rc = setup_listen(s);
    if (rc == SHARDLM_OK) {
        uv_timer_start(&s->deadline, setup_deadline, (uint64_t)s->timeout_ms, 0);
        setup_resolve(s);
        while (!s->finished && uv_run(&s->loop, UV_RUN_ONCE)) {
        }
        rc = s->finished ? s->rc : SHARDLM_ERUNTIME;
    }
    if (rc == SHARDLM_OK) {
        out->left_fd = setup_detach(s->left);
        out->right_fd = setup_detach(&s->right);
        snprintf(out->left_addr, sizeof out->left_addr, "%s", s->left->addr);
        snprintf(out->right_addr, sizeof out->right_addr, "%s", s->right.addr);
        if (out->left_fd < 0 || out->right_fd < 0) {
            shardlm_err_set("rank %d: cannot duplicate the ring sockets: %s", cfg->rank, strerror(errno));
            if (out->left_fd >= 0) close(out->left_fd);
            if (out->right_fd >= 0) close(out->right_fd);
            rc = SHARDLM_ERUNTIME;
        }
    }
    setup_close_all(s);
    free(s);
    return rc;
}
