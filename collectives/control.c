/* control.c - the rank 0 <-> worker control channel over plain TCP sockets.
 * Traffic is one small message per step, so blocking writes bounded by
 * poll() deadlines are simpler than an event loop and just as fast. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control_guard.h"
#include "shardlm_auth.h"
#include "shardlm_common.h"
#include "control_internal.h"

#define CTRL_MAX_FRAME (64u << 20)

struct shardlm_ctrl {
    int listen_fd;
    int world;
    int *fds; /* rank 0: fds[r] is worker r's socket; worker: fds[0] is rank 0 */
    char peer[300];
    uint8_t *buf;
    size_t cap;
    int (*watch)(void *ctx);
    void *watch_ctx;
    shardlm_ctrl_weights_req *wreq; /* rank 0: what each worker's Hello asked of its weights */
    uint64_t *hb_wait_ns; /* rank 0: since when each worker owes a heartbeat answer (0: none; made at the first) */
    ctrl_guard *guard;    /* rank 0: answers the control port once the cluster is complete */
};

int shardlm_ctrl_port(const shardlm_ctrl *c)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (!c || c->listen_fd < 0 || getsockname(c->listen_fd, (struct sockaddr *)&ss, &sl)) return -1;
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void shardlm_ctrl_set_watch(shardlm_ctrl *c, int (*watch)(void *ctx), void *ctx)
{
    c->watch = watch;
    c->watch_ctx = ctx;
}

static int deadline_left(uint64_t deadline)
{
    uint64_t now = shardlm_now_ns();
    return now >= deadline ? 0 : (int)((deadline - now) / 1000000 + 1);
}

static int io_full(int fd, void *p, size_t n, int writing, uint64_t deadline, const char *who)
{
    uint8_t *b = p;
    while (n) {
        struct pollfd pf = {fd, writing ? POLLOUT : POLLIN, 0};
        int left = deadline_left(deadline);
        int pr = left ? poll(&pf, 1, left) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr == 0) {
            shardlm_err_set("control channel to %s: timed out", who);
            return SHARDLM_ETIMEDOUT;
        }
        ssize_t k = writing ? send(fd, b, n, MSG_NOSIGNAL) : recv(fd, b, n, 0);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (k <= 0) {
            shardlm_err_set("control channel to %s: connection lost (%s)", who, k == 0 ? "closed" : strerror(errno));
            return SHARDLM_EPEER;
        }
        b += k;
        n -= (size_t)k;
    }
    return SHARDLM_OK;
}

static int send_env(int fd, const Shardlm__Envelope *env, uint64_t deadline, const char *who)
{
    size_t n = shardlm__envelope__get_packed_size(env);
    uint8_t stackbuf[1024];
    uint8_t *b = n + 4 <= sizeof stackbuf ? stackbuf : malloc(n + 4);
    if (!b) return SHARDLM_ENOMEM;
    b[0] = (uint8_t)n; b[1] = (uint8_t)(n >> 8); b[2] = (uint8_t)(n >> 16); b[3] = (uint8_t)(n >> 24);
    shardlm__envelope__pack(env, b + 4);
    int rc = io_full(fd, b, n + 4, 1, deadline, who);
    if (b != stackbuf) free(b);
    return rc;
}

static int recv_env(shardlm_ctrl *c, int fd, uint64_t deadline, const char *who, Shardlm__Envelope **out)
{
    uint8_t h[4];
    int rc = io_full(fd, h, 4, 0, deadline, who);
    if (rc) return rc;
    uint32_t n = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
    if (memcmp(h, "SLMA", 4) == 0) {
        shardlm_err_set("control channel to %s: the peer starts a cluster-token handshake, but no cluster token "
                        "is configured here (--cluster-token-file or SHARDLM_CLUSTER_TOKEN)", who);
        return SHARDLM_EINPUT;
    }
    if (n > CTRL_MAX_FRAME) {
        shardlm_err_set("control channel to %s: frame of %u bytes is over the %u-byte limit", who, n, CTRL_MAX_FRAME);
        return SHARDLM_EPEER;
    }
    if (n > c->cap) {
        uint8_t *nb = realloc(c->buf, n);
        if (!nb) return SHARDLM_ENOMEM;
        c->buf = nb;
        c->cap = n;
    }
    if ((rc = io_full(fd, c->buf, n, 0, deadline, who))) return rc;
    *out = shardlm__envelope__unpack(NULL, n, c->buf);
    if (!*out) {
        shardlm_err_set("control channel to %s: undecodable message of %u bytes", who, n);
        return SHARDLM_EPEER;
    }
    shardlm_ctrl_limits lim = {.world = c->world};
    if ((rc = shardlm_ctrl_check(*out, &lim))) {
        char why[512];
        snprintf(why, sizeof why, "%s", shardlm_err_get());
        shardlm_err_set("control channel to %s: %s", who, why);
        shardlm__envelope__free_unpacked(*out, NULL);
        *out = NULL;
        return rc;
    }
    return SHARDLM_OK;
}

static void tune_socket(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int shardlm_ctrl_listen(const char *host, int port, int world_size, shardlm_ctrl **out)
{
    (void)host; /* rank 0 accepts on every interface; master_ip is where workers find it */
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int v6 = fd >= 0;
    if (!v6) fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        shardlm_err_set("control channel: socket: %s", strerror(errno));
        return SHARDLM_ERUNTIME;
    }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (v6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_any;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        sl = sizeof *a;
    }
    /* non-blocking: the late-connection thread and accept_all may both be
     * woken for one connection, and the loser must not block in accept */
    if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, 64) || fcntl(fd, F_SETFL, O_NONBLOCK)) {
        shardlm_err_set("control channel: cannot listen on master_port %d: %s", port, strerror(errno));
        close(fd);
        return SHARDLM_ERUNTIME;
    }
    shardlm_ctrl *c = calloc(1, sizeof *c);
    if (c) c->fds = malloc((size_t)world_size * sizeof(int));
    if (c) c->wreq = calloc((size_t)world_size, sizeof *c->wreq);
    if (c && c->fds && c->wreq && ctrl_guard_new(fd, &c->guard)) c->guard = NULL;
    if (!c || !c->fds || !c->wreq || !c->guard) {
        if (c) free(c->fds);
        if (c) free(c->wreq);
        free(c);
        close(fd);
        return SHARDLM_ENOMEM;
    }
    for (int r = 0; r < world_size; r++) c->fds[r] = -1;
    c->listen_fd = fd;
    c->world = world_size;
    snprintf(c->peer, sizeof c->peer, "workers");
    *out = c;
    return SHARDLM_OK;
}

/* Compares a worker's handshake with rank 0's; returns NULL when it matches
 * or the reason it does not. */
static const char *hello_mismatch(const Shardlm__Hello *h, const shardlm_ctrl_hello *mine, const int *fds,
                                  char *why, size_t cap)
{
    if (h->protocol_version != SHARDLM_PROTOCOL_VERSION)
        snprintf(why, cap, "protocol version %u, rank 0 speaks %u", h->protocol_version, SHARDLM_PROTOCOL_VERSION);
    else if (h->world_size != (uint32_t)mine->world_size)
        snprintf(why, cap, "world_size %u, rank 0 has %d", h->world_size, mine->world_size);
    else if (h->rank == 0 || h->rank >= (uint32_t)mine->world_size)
        snprintf(why, cap, "rank %u, outside 1..%d", h->rank, mine->world_size - 1);
    else if (fds[h->rank] >= 0)
        snprintf(why, cap, "rank %u, which another worker already has (duplicate rank)", h->rank);
    else if (!h->need_weights && h->model_fingerprint != mine->fingerprint) /* need_weights: rank 0 sends them */
        snprintf(why, cap, "model fingerprint %016llx, rank 0 has %016llx (every rank must load the same model file)",
                 (unsigned long long)h->model_fingerprint, (unsigned long long)mine->fingerprint);
    else if (strcmp(h->backend ? h->backend : "", mine->backend) != 0)
        snprintf(why, cap, "backend '%s', rank 0 uses '%s'", h->backend, mine->backend);
    else
        return NULL;
    return why;
}

static int send_ack(int fd, const char *error, const shardlm_ctrl_hello *mine, uint64_t deadline, const char *who)
{
    Shardlm__HelloAck ack = SHARDLM__HELLO_ACK__INIT;
    ack.ok = error == NULL;
    ack.n_ctx = (uint32_t)mine->n_ctx;
    ack.max_batch = (uint32_t)mine->max_batch;
    ack.isq = mine->isq;
    ack.kv_blocks = (uint32_t)mine->kv_blocks;
    ack.block_size = (uint32_t)mine->block_size;
    ack.kv_type = mine->kv_type;
    ack.comm_q8 = mine->comm_q8 != 0;
    ack.error = (char *)(error ? error : "");
    Shardlm__Envelope env = SHARDLM__ENVELOPE__INIT;
    env.msg_case = SHARDLM__ENVELOPE__MSG_HELLO_ACK;
    env.hello_ack = &ack;
    return send_env(fd, &env, deadline, who);
}

/* Reads one connection's handshake; returns the rank it takes, or a status. */
static int accept_one(shardlm_ctrl *c, int fd, const shardlm_ctrl_hello *mine, uint64_t deadline)
{
    char who[96], why[256];
    shardlm_peer_name(fd, who, sizeof who);
    Shardlm__Envelope *env = NULL;
    int rc = recv_env(c, fd, deadline, who, &env);
    if (rc) return rc;
    if (env->msg_case != SHARDLM__ENVELOPE__MSG_HELLO) {
        shardlm__envelope__free_unpacked(env, NULL);
        shardlm_err_set("control channel: %s did not start with a handshake", who);
        return SHARDLM_EPEER;
    }
    const char *bad = hello_mismatch(env->hello, mine, c->fds, why, sizeof why);
    int rank = (int)env->hello->rank;
    if (!bad) c->wreq[rank] = (shardlm_ctrl_weights_req){env->hello->need_weights, env->hello->model_fingerprint,
                                                         env->hello->cached_ranges_hash};
    shardlm__envelope__free_unpacked(env, NULL);
    send_ack(fd, bad, mine, deadline, who); /* best effort: the worker reports it too */
    if (bad) {
        shardlm_err_set("handshake refused: the worker at %s has %s", who, bad);
        return SHARDLM_EINPUT;
    }
    return rank;
}

/* A stranger gets a few seconds to prove the token, so one silent
 * connection cannot hold the accept loop until the whole deadline. */
#define CTRL_AUTH_MS 5000

/* Takes one connection that proved the token: 0 when it became a worker,
 * 1 to keep waiting, or the status to fail with. */
static int accept_take(shardlm_ctrl *c, int fd, const shardlm_ctrl_hello *mine, uint64_t deadline)
{
    int rank = accept_one(c, fd, mine, deadline);
    if (rank == SHARDLM_EINPUT) {
        close(fd);
        return rank;
    }
    if (rank < 0) { /* not a shardlm worker, or it went away: keep waiting */
        fprintf(stderr, "shardlm: ignoring a control connection: %s\n", shardlm_err_get());
        close(fd);
        return 1;
    }
    c->fds[rank] = fd;
    return 0;
}

static int accept_timed_out(const shardlm_ctrl *c, int timeout_ms)
{
    char missing[256] = "";
    for (int r = 1, n = 0; r < c->world && n < 200; r++)
        if (c->fds[r] < 0) n += snprintf(missing + n, sizeof missing - (size_t)n, "%s%d", n ? ", " : "", r);
    shardlm_err_set("timed out after %d ms waiting for worker rank(s) %s to connect to the master port", timeout_ms,
                    missing);
    return SHARDLM_ETIMEDOUT;
}

int shardlm_ctrl_accept_all(shardlm_ctrl *c, const shardlm_ctrl_hello *mine, int timeout_ms)
{
    uint64_t deadline = shardlm_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    ctrl_guard_set_complete(c->guard, 0);
    for (int have = 1; have < c->world;) {
        int fd = ctrl_guard_take(c->guard); /* a late peer that proved the token before this re-formation */
        if (fd < 0) {
            struct pollfd pf = {c->listen_fd, POLLIN, 0};
            int left = deadline_left(deadline);
            int pr = left ? poll(&pf, 1, left < 100 ? left : 100) : 0;
            if (pr < 0 && errno == EINTR) continue;
            if (c->watch && c->watch(c->watch_ctx)) return SHARDLM_ERUNTIME;
            if (pr == 0 && deadline_left(deadline) > 0) continue;
            if (pr <= 0) return accept_timed_out(c, timeout_ms);
            fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) continue;
            tune_socket(fd);
            if (ctrl_guard_auth(fd, CTRL_AUTH_MS, deadline)) {
                close(fd);
                continue;
            }
        }
        int rc = accept_take(c, fd, mine, deadline);
        if (rc < 0) return rc;
        if (rc == 0) have++;
    }
    return ctrl_guard_set_complete(c->guard, 1);
}

/* connect() bounded by ms: a blocking one to a host behind a dead link
 * waits for the kernel's SYN retries (minutes), and the retry loop would
 * notice a restored link only that late. */
static int connect_bounded(int fd, const struct sockaddr *sa, socklen_t len, int ms)
{
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK)) return -1;
    int rc = connect(fd, sa, len);
    if (rc && errno == EINPROGRESS) {
        struct pollfd pf = {fd, POLLOUT, 0};
        int err = 0;
        socklen_t el = sizeof err;
        rc = poll(&pf, 1, ms) == 1 && !getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) && !err ? 0 : -1;
    }
    return rc || fcntl(fd, F_SETFL, fl) ? -1 : 0;
}

static int ctrl_connect_once(const char *host, int port, int *out_fd)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, ps, &hints, &res) != 0 || !res) return SHARDLM_ETIMEDOUT;
    int rc = SHARDLM_ETIMEDOUT;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        if (connect_bounded(fd, a->ai_addr, a->ai_addrlen, 1000) == 0) {
            tune_socket(fd);
            *out_fd = fd;
            rc = SHARDLM_OK;
            break;
        }
        close(fd);
    }
    freeaddrinfo(res);
    return rc;
}

static int ctrl_handshake(shardlm_ctrl *c, shardlm_ctrl_hello *mine, const shardlm_ctrl_weights_req *want,
                          uint64_t deadline)
{
    Shardlm__Hello h = SHARDLM__HELLO__INIT;
    h.protocol_version = SHARDLM_PROTOCOL_VERSION;
    h.model_fingerprint = mine->fingerprint;
    h.world_size = (uint32_t)mine->world_size;
    h.rank = (uint32_t)mine->rank;
    h.backend = (char *)mine->backend;
    if (want && want->need_weights) {
        h.need_weights = 1;
        h.model_fingerprint = want->cached_fingerprint;
        h.cached_ranges_hash = want->cached_ranges_hash;
    }
    Shardlm__Envelope env = SHARDLM__ENVELOPE__INIT;
    env.msg_case = SHARDLM__ENVELOPE__MSG_HELLO;
    env.hello = &h;
    int rc = send_env(c->fds[0], &env, deadline, c->peer);
    Shardlm__Envelope *ack = NULL;
    if (!rc) rc = recv_env(c, c->fds[0], deadline, c->peer, &ack);
    if (rc) return rc;
    if (ack->msg_case != SHARDLM__ENVELOPE__MSG_HELLO_ACK || !ack->hello_ack->ok) {
        shardlm_err_set("%s refused the handshake of rank %d: %s", c->peer, mine->rank,
                        ack->msg_case == SHARDLM__ENVELOPE__MSG_HELLO_ACK ? ack->hello_ack->error : "unexpected reply");
        rc = SHARDLM_EINPUT;
    } else {
        mine->n_ctx = (int)ack->hello_ack->n_ctx;
        mine->max_batch = (int)ack->hello_ack->max_batch;
        mine->isq = ack->hello_ack->isq;
        mine->kv_blocks = (int)ack->hello_ack->kv_blocks;
        mine->block_size = (int)ack->hello_ack->block_size;
        mine->kv_type = ack->hello_ack->kv_type;
        mine->comm_q8 = ack->hello_ack->comm_q8;
    }
    shardlm__envelope__free_unpacked(ack, NULL);
    return rc;
}

static int ctrl_connect(const char *host, int port, shardlm_ctrl_hello *mine, const shardlm_ctrl_weights_req *want,
                        int timeout_ms, shardlm_ctrl **out)
{
    uint64_t deadline = shardlm_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    shardlm_ctrl *c = calloc(1, sizeof *c);
    if (c) c->fds = malloc(sizeof(int));
    if (!c || !c->fds) {
        free(c);
        return SHARDLM_ENOMEM;
    }
    c->listen_fd = -1;
    c->world = 1;
    c->fds[0] = -1;
    snprintf(c->peer, sizeof c->peer, "rank 0 at %s:%d", host, port);
    int delay_ms = 10;
    while (ctrl_connect_once(host, port, &c->fds[0]) != SHARDLM_OK) {
        if (deadline_left(deadline) <= delay_ms) {
            shardlm_err_set("rank %d: could not reach rank 0 at master %s:%d within %d ms", mine->rank, host, port,
                            timeout_ms);
            shardlm_ctrl_close(c);
            return SHARDLM_ETIMEDOUT;
        }
        usleep((useconds_t)delay_ms * 1000);
        if (delay_ms < 500) delay_ms *= 2;
    }
    int cli = 0;
    const char *w = c->peer;
    int rc = shardlm_auth_handshake(&c->fds[0], &cli, 1, deadline, &w);
    if (rc) rc = SHARDLM_EINPUT; /* a wrong token does not get better by retrying */
    if (!rc) rc = ctrl_handshake(c, mine, want, deadline);
    if (rc) {
        shardlm_ctrl_close(c);
        return rc;
    }
    *out = c;
    return SHARDLM_OK;
}

int shardlm_ctrl_connect(const char *host, int port, shardlm_ctrl_hello *mine, int timeout_ms,
                         shardlm_ctrl **out)
{
    return ctrl_connect(host, port, mine, NULL, timeout_ms, out);
}

int shardlm_ctrl_connect_weights(const char *host, int port, shardlm_ctrl_hello *mine,
                                 const shardlm_ctrl_weights_req *want, int timeout_ms, shardlm_ctrl **out)
{
    return ctrl_connect(host, port, mine, want, timeout_ms, out);
}

int shardlm_ctrl_env_broadcast(shardlm_ctrl *c, const Shardlm__Envelope *env, int timeout_ms)
{
    uint64_t deadline = shardlm_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (int r = 1; r < c->world; r++) {
        char who[32];
        snprintf(who, sizeof who, "rank %d", r);
        int rc = send_env(c->fds[r], env, deadline, who);
        if (rc) return rc;
    }
    return SHARDLM_OK;
}

int shardlm_ctrl_env_recv(shardlm_ctrl *c, int timeout_ms, Shardlm__Envelope **env)
{
    uint64_t deadline = shardlm_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    return recv_env(c, c->fds[0], deadline, c->peer, env);
}

int shardlm_ctrl_find_dead(shardlm_ctrl *c, int wait_ms)
{
    uint64_t deadline = shardlm_now_ns() + (uint64_t)wait_ms * 1000000ull;
    do {
        for (int r = 1; r < c->world; r++) {
            if (c->fds[r] < 0) continue;
            struct pollfd pf = {c->fds[r], POLLIN, 0};
            char b;
            if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLHUP | POLLERR) ||
                                        recv(c->fds[r], &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0))
                return r;
        }
        usleep(10000);
    } while (deadline_left(deadline) > 0);
    return -1;
}

int shardlm_ctrl_send_fault(shardlm_ctrl *c, int rank, int peer, const char *error, int timeout_ms)
{
    if (!c || c->listen_fd >= 0 || c->fds[0] < 0) return SHARDLM_EINPUT; /* workers only */
    char keep[512];
    snprintf(keep, sizeof keep, "%s", shardlm_err_get()); /* the caller reports its own error after this */
    Shardlm__Fault f = SHARDLM__FAULT__INIT;
    f.rank = (uint32_t)rank;
    f.peer = peer;
    f.error = (char *)(error ? error : "");
    Shardlm__Envelope env = SHARDLM__ENVELOPE__INIT;
    env.msg_case = SHARDLM__ENVELOPE__MSG_FAULT;
    env.fault = &f;
    int rc = send_env(c->fds[0], &env, shardlm_now_ns() + (uint64_t)timeout_ms * 1000000ull, c->peer);
    shardlm_err_set("%s", keep);
    return rc;
}

/* What rank 0 learnt from one worker after a failed collective. */
enum { FAULT_SILENT, FAULT_REPORTED, FAULT_CLOSED };
typedef struct {
    int state;
    int peer; /* FAULT_REPORTED: the rank its collective waited on */
} ctrl_fault_slot;

/* Reads one frame from worker r. Rank 0 never expects anything else from a
 * worker at this point, so anything but a Fault is ignored. */
static void fault_read_one(shardlm_ctrl *c, int r, uint64_t deadline, ctrl_fault_slot *s)
{
    char who[32];
    snprintf(who, sizeof who, "rank %d", r);
    uint64_t soon = shardlm_now_ns() + 200000000ull; /* a frame that starts arrives whole at once */
    Shardlm__Envelope *env = NULL;
    int rc = recv_env(c, c->fds[r], soon < deadline ? soon : deadline, who, &env);
    if (rc == SHARDLM_ETIMEDOUT) return;
    if (rc) {
        s->state = FAULT_CLOSED;
        return;
    }
    if (env->msg_case == SHARDLM__ENVELOPE__MSG_FAULT) {
        s->state = FAULT_REPORTED;
        s->peer = env->fault->peer;
    }
    shardlm__envelope__free_unpacked(env, NULL);
}

/* Waits until every worker has reported or closed, or the deadline. */
static void fault_wait(shardlm_ctrl *c, ctrl_fault_slot *s, struct pollfd *pf, int *idx, int wait_ms)
{
    uint64_t deadline = shardlm_now_ns() + (uint64_t)wait_ms * 1000000ull;
    for (;;) {
        int n = 0;
        for (int r = 1; r < c->world; r++)
            if (s[r].state == FAULT_SILENT) {
                pf[n] = (struct pollfd){c->fds[r], POLLIN, 0};
                idx[n++] = r;
            }
        int left = deadline_left(deadline);
        if (n == 0 || left == 0) return;
        int pr = poll(pf, (nfds_t)n, left);
        if (pr < 0 && errno != EINTR) return;
        for (int i = 0; pr > 0 && i < n; i++)
            if (pf[i].revents) fault_read_one(c, idx[i], deadline, &s[idx[i]]);
    }
}

static void fault_append(char *buf, size_t cap, size_t *n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void fault_append(char *buf, size_t cap, size_t *n, const char *fmt, ...)
{
    if (*n + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (k > 0) *n = *n + (size_t)k < cap ? *n + (size_t)k : cap - 1;
}

static int fault_blamed(const ctrl_fault_slot *s, int world, int r)
{
    for (int q = 1; q < world; q++)
        if (s[q].state == FAULT_REPORTED && s[q].peer == r) return 1;
    return 0;
}

/* One line naming every lost worker, how it was lost, and which workers'
 * Faults name it as the peer they were waiting on (corroboration). When
 * some silent worker is named by a neighbour's Fault, the silent ones that
 * nobody names are not called lost: a healthy worker whose part of a
 * gather went out can be idle, waiting for rank 0's next step. */
static int fault_report(const ctrl_fault_slot *s, int world, int wait_ms, char *why, size_t cap)
{
    int first = -1, any_blamed = 0;
    size_t n = 0;
    why[0] = 0;
    for (int r = 1; r < world; r++)
        if (s[r].state != FAULT_REPORTED && fault_blamed(s, world, r)) any_blamed = 1;
    for (int r = 1; r < world; r++) {
        if (s[r].state == FAULT_REPORTED) continue;
        if (any_blamed && !fault_blamed(s, world, r)) continue;
        if (first < 0) first = r;
        fault_append(why, cap, &n, "%srank %d is lost: ", n ? "; " : "", r);
        if (s[r].state == FAULT_SILENT)
            fault_append(why, cap, &n, "neither a fault report nor a close came from it within %d ms", wait_ms);
        else
            fault_append(why, cap, &n, "its control connection closed without a fault report");
        int k = 0;
        for (int q = 1; q < world; q++)
            if (s[q].state == FAULT_REPORTED && s[q].peer == r)
                fault_append(why, cap, &n, "%srank %d", k++ ? ", " : " (its neighbour ", q);
        if (k) fault_append(why, cap, &n, " failed waiting on it)");
    }
    if (first < 0) {
        fault_append(why, cap, &n, "every worker reported a fault:");
        for (int r = 1; r < world; r++) fault_append(why, cap, &n, " rank %d waited on rank %d;", r, s[r].peer);
    }
    return first;
}

int shardlm_ctrl_collect_faults(shardlm_ctrl *c, int wait_ms, char *why, size_t cap)
{
    if (!c || c->listen_fd < 0 || cap == 0) return -1; /* rank 0 only */
    ctrl_fault_slot *s = calloc((size_t)c->world, sizeof *s);
    struct pollfd *pf = calloc((size_t)c->world, sizeof *pf);
    int *idx = calloc((size_t)c->world, sizeof *idx);
    int lost = -1;
    if (!s || !pf || !idx) {
        snprintf(why, cap, "out of memory collecting fault reports");
    } else {
        for (int r = 1; r < c->world; r++) {
            s[r].state = c->fds[r] < 0 ? FAULT_CLOSED : FAULT_SILENT;
            s[r].peer = -1;
        }
        fault_wait(c, s, pf, idx, wait_ms);
        lost = fault_report(s, c->world, wait_ms, why, cap);
    }
    free(s);
    free(pf);
    free(idx);
    return lost;
}

void shardlm_ctrl_close(shardlm_ctrl *c)
{
    if (!c) return;
    ctrl_guard_free(c->guard); /* before the listener it polls is closed */
    if (c->listen_fd >= 0) close(c->listen_fd);
    for (int r = 0; r < c->world; r++)
        if (c->fds[r] >= 0) close(c->fds[r]);
    free(c->fds);
    free(c->wreq);
    free(c->hb_wait_ns);
    free(c->buf);
    free(c);
}

/* ---- --weights-from rank0: per-worker messages (launcher/weights.c) ---- */

int shardlm_ctrl_env_send(shardlm_ctrl *c, int rank, const Shardlm__Envelope *env, int timeout_ms)
{
    if (!c || c->listen_fd < 0 || rank < 1 || rank >= c->world || c->fds[rank] < 0) {
        shardlm_err_set("control channel: no connected worker rank %d to send to", rank);
        return SHARDLM_ERUNTIME;
    }
    char who[32];
    snprintf(who, sizeof who, "rank %d", rank);
    return send_env(c->fds[rank], env, shardlm_now_ns() + (uint64_t)timeout_ms * 1000000ull, who);
}

shardlm_ctrl_weights_req shardlm_ctrl_weights_request(const shardlm_ctrl *c, int rank)
{
    shardlm_ctrl_weights_req none = {0, 0, 0};
    if (!c || !c->wreq || rank < 1 || rank >= c->world) return none;
    return c->wreq[rank];
}

/* ---- supervision: heartbeats, shutdown notices, re-forming ---- */

void shardlm_ctrl_reset_workers(shardlm_ctrl *c)
{
    if (!c || c->listen_fd < 0) return; /* rank 0 only */
    ctrl_guard_set_complete(c->guard, 0);
    for (int r = 1; r < c->world; r++) {
        if (c->fds[r] >= 0) close(c->fds[r]);
        c->fds[r] = -1;
        c->wreq[r] = (shardlm_ctrl_weights_req){0, 0, 0};
    }
    free(c->hb_wait_ns);
    c->hb_wait_ns = NULL;
}

int shardlm_ctrl_send_shutdown(shardlm_ctrl *c, const char *reason, int rejoin, int timeout_ms)
{
    if (!c || c->listen_fd < 0) return SHARDLM_EINPUT;
    Shardlm__Shutdown sd = SHARDLM__SHUTDOWN__INIT;
    sd.reason = (char *)(reason ? reason : "");
    sd.rejoin = rejoin != 0;
    Shardlm__Envelope env = SHARDLM__ENVELOPE__INIT;
    env.msg_case = SHARDLM__ENVELOPE__MSG_SHUTDOWN;
    env.shutdown = &sd;
    uint64_t deadline = shardlm_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    int rc = SHARDLM_OK;
    for (int r = 1; r < c->world; r++) { /* every worker that can still be told, not only up to the first dead one */
        char who[32];
        snprintf(who, sizeof who, "rank %d", r);
        int one = c->fds[r] >= 0 ? send_env(c->fds[r], &env, deadline, who) : SHARDLM_EPEER;
        if (one && !rc) rc = one;
    }
    return rc;
}

int shardlm_ctrl_send_heartbeat(shardlm_ctrl *c, int timeout_ms)
{
    if (!c || c->listen_fd >= 0 || c->fds[0] < 0) return SHARDLM_EINPUT; /* workers only */
    Shardlm__Heartbeat hb = SHARDLM__HEARTBEAT__INIT;
    hb.now_ns = shardlm_now_ns();
    Shardlm__Envelope env = SHARDLM__ENVELOPE__INIT;
    env.msg_case = SHARDLM__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    return send_env(c->fds[0], &env, shardlm_now_ns() + (uint64_t)timeout_ms * 1000000ull, c->peer);
}

/* Reads what worker r has sent since the last heartbeat without waiting
 * for more: its answers (and any late Fault, which is ignored here).
 * Returns 1 when its connection is gone. */
static int hb_drain(shardlm_ctrl *c, int r, uint64_t now)
{
    char who[32];
    snprintf(who, sizeof who, "rank %d", r);
    for (int guard = 0; guard < 64; guard++) {
        struct pollfd pf = {c->fds[r], POLLIN, 0};
        if (poll(&pf, 1, 0) <= 0) return 0;
        Shardlm__Envelope *env = NULL;
        int rc = recv_env(c, c->fds[r], now + 200000000ull, who, &env); /* a frame that starts arrives whole */
        if (rc == SHARDLM_ETIMEDOUT) return 0;
        if (rc) return 1;
        if (env->msg_case == SHARDLM__ENVELOPE__MSG_HEARTBEAT) c->hb_wait_ns[r] = 0;
        shardlm__envelope__free_unpacked(env, NULL);
    }
    return 0;
}

int shardlm_ctrl_heartbeat(shardlm_ctrl *c, int timeout_ms, int lost_after_ms, char *why, size_t cap)
{
    if (!c || c->listen_fd < 0) return -1; /* rank 0 only */
    uint64_t now = shardlm_now_ns();
    if (!c->hb_wait_ns && !(c->hb_wait_ns = calloc((size_t)c->world, sizeof *c->hb_wait_ns))) return -1;
    Shardlm__Heartbeat hb = SHARDLM__HEARTBEAT__INIT;
    hb.now_ns = now;
    Shardlm__Envelope env = SHARDLM__ENVELOPE__INIT;
    env.msg_case = SHARDLM__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    uint64_t deadline = now + (uint64_t)timeout_ms * 1000000ull;
    for (int r = 1; r < c->world; r++) {
        char who[32];
        snprintf(who, sizeof who, "rank %d", r);
        if (c->fds[r] < 0 || hb_drain(c, r, now)) {
            snprintf(why, cap, "rank %d is lost: its control connection closed between steps", r);
            return r;
        }
        uint64_t owed = c->hb_wait_ns[r]; /* only unanswered heartbeats count, not time spent stepping */
        if (lost_after_ms > 0 && owed && now - owed > (uint64_t)lost_after_ms * 1000000ull) {
            snprintf(why, cap, "rank %d is lost: no answer to heartbeats for %llu ms (--heartbeat-timeout-ms %d)", r,
                     (unsigned long long)((now - owed) / 1000000ull), lost_after_ms);
            return r;
        }
        if (!owed) c->hb_wait_ns[r] = now;
        if (send_env(c->fds[r], &env, deadline, who)) {
            snprintf(why, cap, "rank %d is lost: a heartbeat could not be sent (%s)", r, shardlm_err_get());
            return r;
        }
    }
    return 0;
}
