/* shm_setup.c - settling each hop of a freshly connected ring on shared
 * memory or TCP. Both ends of every hop send each other who they are (the
 * kernel's boot_id, the host name, the network namespace, the transport they
 * were asked for) over the TCP link the ring already has, and each computes
 * the same verdict from the two. For a local hop the producer (the left end)
 * makes a sealed memfd and hands it over an abstract unix socket; the
 * consumer maps it, checks its cookie and answers yes or no, so both ends
 * agree even when the hand-over fails. An abstract socket's name is visible
 * to every process on the host, so the producer gives the segment only to a
 * connection from its own user (SO_PEERCRED) that also proves the cluster
 * token: the offer carries a fresh nonce over the authenticated TCP hop, and
 * the consumer's first bytes on the unix socket are an HMAC over it. Host identity is never guessed from
 * an IP address: loopback between network namespaces is another host here,
 * and two addresses of one machine are the same host.
 *
 * Every rank runs the same phases in order, and a phase waits only on
 * earlier phases of its neighbours (offers before connects, connects before
 * accepts), so the ring cannot deadlock; every wait has the set-up deadline. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ring_internal.h"
#include "shardlm_auth.h"
#include "shardlm_common.h"

#define IDENT_MAGIC 0x534c4d53u /* "SLMS" */
#define IDENT_BYTES 160
#define OFFER_BYTES 128 /* ... name at 24..87, the hand-over nonce at 88..119 */
#define HANDOVER_PURPOSE "shm-handover"
#define HANDOVER_AUTH_MS 2000

typedef struct {
    uint32_t want;
    uint64_t netns_dev, netns_ino;
    char boot_id[40];
    char host[96];
} shm_ident;

typedef struct {
    const shardlm_ring_config *cfg;
    uint64_t deadline;
    int fd[2];          /* 0: left link, 1: right link */
    const char *addr[2];
    int peer[2];        /* the neighbour's rank */
    shm_ident mine, theirs[2];
    int local[2];       /* the hop can try shared memory */
    /* right hop (we produce) */
    int memfd, listener, offered, result_read, result_ok;
    uint64_t cookie;
    uint8_t nonce[SHARDLM_AUTH_NONCE_BYTES]; /* what the consumer's proof covers */
    uint32_t cap;
    char name[64];
    /* left hop (we consume) */
    int usock, offer_ok;
    uint32_t offer_cap;
    uint64_t offer_cookie;
    uint8_t offer_nonce[SHARDLM_AUTH_NONCE_BYTES];
    char offer_name[64];
    char fail[2][128];  /* why a local hop fell back */
} shm_neg;

static const char *side_name(int right) { return right ? "right" : "left"; }

static void put32(unsigned char *b, uint32_t v)
{
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(v >> (24 - 8 * i));
}

static void put64(unsigned char *b, uint64_t v)
{
    put32(b, (uint32_t)(v >> 32));
    put32(b + 4, (uint32_t)v);
}

static uint32_t get32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint64_t get64(const unsigned char *b) { return (uint64_t)get32(b) << 32 | get32(b + 4); }

/* ---- bounded I/O on the non-blocking ring sockets ---- */

static int neg_wait(shm_neg *n, int fd, short ev, int right, const char *what)
{
    for (;;) {
        uint64_t now = shardlm_now_ns();
        if (now >= n->deadline) {
            shardlm_err_set("rank %d: transport set-up: timed out waiting for rank %d (%s neighbour, %s) to %s",
                            n->cfg->rank, n->peer[right], side_name(right), n->addr[right], what);
            return SHARDLM_ETIMEDOUT;
        }
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, (int)((n->deadline - now + 999999) / 1000000));
        if (r > 0) return SHARDLM_OK;
        if (r < 0 && errno != EINTR) {
            shardlm_err_set("rank %d: transport set-up: poll: %s", n->cfg->rank, strerror(errno));
            return SHARDLM_ERUNTIME;
        }
    }
}

static int neg_io_fail(shm_neg *n, int right, int err)
{
    if (err == 0)
        shardlm_err_set("rank %d: rank %d (%s neighbour, %s) closed the connection during the transport set-up",
                        n->cfg->rank, n->peer[right], side_name(right), n->addr[right]);
    else
        shardlm_err_set("rank %d: transport set-up with rank %d (%s neighbour, %s): %s", n->cfg->rank,
                        n->peer[right], side_name(right), n->addr[right], strerror(err));
    return SHARDLM_EPEER;
}

static int neg_send(shm_neg *n, int right, const void *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = send(n->fd[right], (const char *)buf + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            done += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return neg_io_fail(n, right, errno);
        int rc = neg_wait(n, n->fd[right], POLLOUT, right, "take our transport message");
        if (rc) return rc;
    }
    return SHARDLM_OK;
}

static int neg_recv(shm_neg *n, int right, void *buf, size_t len, const char *what)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = recv(n->fd[right], (char *)buf + done, len - done, MSG_DONTWAIT);
        if (r > 0) {
            done += (size_t)r;
            continue;
        }
        if (r == 0) return neg_io_fail(n, right, 0);
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return neg_io_fail(n, right, errno);
        int rc = neg_wait(n, n->fd[right], POLLIN, right, what);
        if (rc) return rc;
    }
    return SHARDLM_OK;
}

/* ---- who we are ---- */

static void read_line(const char *path, char *out, size_t cap)
{
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (!fgets(out, (int)cap, f)) out[0] = 0;
    fclose(f);
    out[strcspn(out, "\r\n")] = 0;
}

static void ident_mine(shm_ident *id, shardlm_ring_transport want)
{
    memset(id, 0, sizeof *id);
    id->want = (uint32_t)want;
    read_line("/proc/sys/kernel/random/boot_id", id->boot_id, sizeof id->boot_id);
    if (gethostname(id->host, sizeof id->host - 1) != 0) id->host[0] = 0;
    struct stat st;
    if (stat("/proc/self/ns/net", &st) == 0) id->netns_dev = (uint64_t)st.st_dev, id->netns_ino = (uint64_t)st.st_ino;
}

static void ident_encode(const shm_ident *id, unsigned char *b)
{
    memset(b, 0, IDENT_BYTES);
    put32(b, IDENT_MAGIC);
    put32(b + 4, id->want);
    put64(b + 8, id->netns_dev);
    put64(b + 16, id->netns_ino);
    memcpy(b + 24, id->boot_id, sizeof id->boot_id - 1);
    memcpy(b + 64, id->host, sizeof id->host - 1);
}

static int ident_decode(shm_neg *n, int right, const unsigned char *b, shm_ident *id)
{
    memset(id, 0, sizeof *id);
    id->want = get32(b + 4);
    if (get32(b) != IDENT_MAGIC || id->want > SHARDLM_RING_SHM) {
        shardlm_err_set("rank %d: rank %d (%s neighbour, %s) sent a malformed transport message", n->cfg->rank,
                        n->peer[right], side_name(right), n->addr[right]);
        return SHARDLM_EPEER;
    }
    id->netns_dev = get64(b + 8);
    id->netns_ino = get64(b + 16);
    memcpy(id->boot_id, b + 24, sizeof id->boot_id - 1);
    memcpy(id->host, b + 64, sizeof id->host - 1);
    return SHARDLM_OK;
}

/* The same verdict on both ends of a hop: 1 when it may use shared memory;
 * otherwise why not. */
static int ident_local(const shm_ident *a, const shm_ident *b, char *why, size_t cap)
{
    if (a->want == SHARDLM_RING_TCP || b->want == SHARDLM_RING_TCP)
        snprintf(why, cap, "--ring-transport tcp");
    else if (!a->boot_id[0] || !b->boot_id[0])
        snprintf(why, cap, "host unknown (no /proc/sys/kernel/random/boot_id)");
    else if (strcmp(a->boot_id, b->boot_id))
        snprintf(why, cap, "another host (boot_id differs)");
    else if (strcmp(a->host, b->host))
        snprintf(why, cap, "another host name ('%s' and '%s')", a->host, b->host);
    else if (a->netns_dev != b->netns_dev || a->netns_ino != b->netns_ino)
        snprintf(why, cap, "another network namespace");
    else
        return 1;
    return 0;
}

/* ---- the hand-over's proof of the cluster token ---- */

int ring_shm_handover_prove(int usock, const uint8_t nonce[SHARDLM_AUTH_NONCE_BYTES])
{
    uint8_t p[SHARDLM_AUTH_MAC_BYTES];
    if (shardlm_auth_nonce_proof(HANDOVER_PURPOSE, nonce, p)) return -1;
    /* 32 bytes fit a fresh unix socket's buffer: this never waits on the producer */
    ssize_t k = send(usock, p, sizeof p, MSG_NOSIGNAL | MSG_DONTWAIT);
    errno = k < 0 ? errno : EPROTO;
    return k == (ssize_t)sizeof p ? 0 : -1;
}

int ring_shm_handover_check(int usock, const uint8_t nonce[SHARDLM_AUTH_NONCE_BYTES], int wait_ms)
{
    uint8_t p[SHARDLM_AUTH_MAC_BYTES];
    size_t got = 0;
    uint64_t deadline = shardlm_now_ns() + (uint64_t)(wait_ms > 0 ? wait_ms : 0) * 1000000ull;
    while (got < sizeof p) {
        uint64_t now = shardlm_now_ns();
        struct pollfd pf = {.fd = usock, .events = POLLIN};
        int r = now < deadline ? poll(&pf, 1, (int)((deadline - now + 999999) / 1000000)) : 0;
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            shardlm_err_set("no proof of the cluster token within %d ms", wait_ms);
            return SHARDLM_EPEER;
        }
        ssize_t k = recv(usock, p + got, sizeof p - got, MSG_DONTWAIT);
        if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (k <= 0) {
            shardlm_err_set("it closed the connection before proving the cluster token");
            return SHARDLM_EPEER;
        }
        got += (size_t)k;
    }
    return shardlm_auth_nonce_check(HANDOVER_PURPOSE, nonce, p);
}

/* ---- right hop: we make the segment and hand it over ---- */

/* Makes the segment and a listening abstract unix socket, and describes
 * them (or that they could not be made) in the offer. */
static void neg_make_offer(shm_neg *n, ring_hop *h, unsigned char *b)
{
    char err[128] = "";
    memset(b, 0, OFFER_BYTES);
    put32(b, IDENT_MAGIC);
    n->cap = ring_shm_capacity();
    if (getrandom(&n->cookie, sizeof n->cookie, 0) != (ssize_t)sizeof n->cookie)
        n->cookie = shardlm_now_ns() ^ ((uint64_t)getpid() << 32);
    snprintf(n->name, sizeof n->name, "shardlm-ring-%d-%016llx", (int)getpid(), (unsigned long long)n->cookie);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path + 1, n->name, strlen(n->name)); /* abstract: nothing on disk, scoped by the netns */
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(n->name));
    if (shardlm_auth_nonce(n->nonce)) snprintf(err, sizeof err, "%s", shardlm_err_get());
    else if (ring_shm_create(h, n->cap, n->cookie, &n->memfd, err, sizeof err) == 0) {
        n->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (n->listener < 0 || bind(n->listener, (struct sockaddr *)&a, alen) || listen(n->listener, 1))
            snprintf(err, sizeof err, "unix socket: %s", strerror(errno));
    }
    put32(b + 4, err[0] ? 1u : 0u);
    put32(b + 8, n->cap);
    put64(b + 16, n->cookie);
    memcpy(b + 24, n->name, strlen(n->name));
    memcpy(b + 88, n->nonce, sizeof n->nonce);
    if (err[0]) snprintf(n->fail[1], sizeof n->fail[1], "%s", err);
    n->offered = !err[0];
}

static void neg_send_fd(shm_neg *n, int c)
{
    char byte = 'F';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &n->memfd, sizeof(int));
    if (sendmsg(c, &m, MSG_NOSIGNAL) != 1)
        snprintf(n->fail[1], sizeof n->fail[1], "passing the segment: %s", strerror(errno));
}

/* Waits for the consumer to connect (or to say over TCP that it could
 * not), then sends the memfd with one byte of data. A consumer that gets
 * nothing (the connection closes) answers no. */
static int neg_hand_over(shm_neg *n)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = n->listener, .events = POLLIN}, {.fd = n->fd[1], .events = POLLIN}};
        uint64_t now = shardlm_now_ns();
        if (now >= n->deadline) return neg_wait(n, n->fd[1], POLLIN, 1, "take the shared-memory segment");
        int r = poll(p, 2, (int)((n->deadline - now + 999999) / 1000000));
        if (r < 0 && errno != EINTR) return neg_io_fail(n, 1, errno);
        if (r <= 0) continue;
        if (p[1].revents) { /* it answered before connecting: it could not */
            unsigned char yes = 0;
            int rc = neg_recv(n, 1, &yes, 1, "answer");
            if (rc) return rc;
            n->result_read = 1;
            n->result_ok = 0;
            snprintf(n->fail[1], sizeof n->fail[1], "rank %d could not reach our unix socket", n->peer[1]);
            return SHARDLM_OK;
        }
        int c = accept4(n->listener, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) continue;
        /* an abstract socket has no permissions: hand the segment to our own user only */
        struct ucred cred;
        socklen_t clen = sizeof cred;
        if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 || cred.uid != geteuid()) {
            fprintf(stderr, "shardlm: refused a shared-memory hand-over to pid %d: it runs as uid %d, not %d\n",
                    (int)cred.pid, (int)cred.uid, (int)geteuid());
            close(c);
            continue;
        }
        uint64_t left_ms = (n->deadline - now) / 1000000;
        if (ring_shm_handover_check(c, n->nonce, left_ms < HANDOVER_AUTH_MS ? (int)left_ms : HANDOVER_AUTH_MS)) {
            fprintf(stderr, "shardlm: refused a shared-memory hand-over to pid %d (uid %d): %s\n", (int)cred.pid,
                    (int)cred.uid, shardlm_err_get());
            close(c);
            continue; /* the real consumer may still come */
        }
        neg_send_fd(n, c);
        close(c);
        return SHARDLM_OK;
    }
}

/* ---- left hop: we take the segment ---- */

static int neg_read_offer(shm_neg *n)
{
    unsigned char b[OFFER_BYTES];
    int rc = neg_recv(n, 0, b, sizeof b, "offer its shared-memory segment");
    if (rc) return rc;
    if (get32(b) != IDENT_MAGIC) {
        shardlm_err_set("rank %d: rank %d (left neighbour, %s) sent a malformed shared-memory offer", n->cfg->rank,
                        n->peer[0], n->addr[0]);
        return SHARDLM_EPEER;
    }
    n->offer_ok = get32(b + 4) == 0;
    n->offer_cap = get32(b + 8);
    n->offer_cookie = get64(b + 16);
    memcpy(n->offer_nonce, b + 88, sizeof n->offer_nonce);
    memcpy(n->offer_name, b + 24, sizeof n->offer_name - 1);
    n->offer_name[sizeof n->offer_name - 1] = 0;
    if (!n->offer_ok) snprintf(n->fail[0], sizeof n->fail[0], "rank %d could not offer a segment", n->peer[0]);
    if (n->offer_ok && (n->offer_cap < 4096 || (n->offer_cap & (n->offer_cap - 1)) || n->offer_cap > (256u << 20))) {
        n->offer_ok = 0;
        snprintf(n->fail[0], sizeof n->fail[0], "rank %d offered a segment of %u bytes", n->peer[0], n->offer_cap);
    }
    return SHARDLM_OK;
}

/* Connecting to a listening unix socket completes at once (the backlog
 * takes it), so this never waits on the producer's accept. */
static int neg_connect(shm_neg *n)
{
    n->usock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t len = strlen(n->offer_name);
    memcpy(a.sun_path + 1, n->offer_name, len);
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
    if (n->usock >= 0 && connect(n->usock, (struct sockaddr *)&a, alen) == 0 &&
        ring_shm_handover_prove(n->usock, n->offer_nonce) == 0)
        return SHARDLM_OK;
    snprintf(n->fail[0], sizeof n->fail[0], "cannot reach rank %d's unix socket: %s", n->peer[0], strerror(errno));
    if (n->usock >= 0) close(n->usock);
    n->usock = -1;
    unsigned char no = 0;
    return neg_send(n, 0, &no, 1);
}

static int neg_take(shm_neg *n, ring_hop *h)
{
    char byte = 0, err[128] = "";
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    struct pollfd p = {.fd = n->usock, .events = POLLIN};
    uint64_t now = shardlm_now_ns();
    int fd = -1;
    if (now < n->deadline && poll(&p, 1, (int)((n->deadline - now + 999999) / 1000000)) > 0 &&
        recvmsg(n->usock, &m, MSG_CMSG_CLOEXEC) == 1) {
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    }
    if (fd < 0) snprintf(err, sizeof err, "no segment came from rank %d", n->peer[0]);
    else if (ring_shm_attach(h, fd, n->offer_cap, n->offer_cookie, err, sizeof err) == 0) err[0] = 0;
    if (fd >= 0) close(fd); /* the mapping keeps the memory; nothing is left to clean up */
    close(n->usock);
    n->usock = -1;
    if (err[0]) snprintf(n->fail[0], sizeof n->fail[0], "%s", err);
    unsigned char yes = err[0] ? 0 : 1;
    return neg_send(n, 0, &yes, 1);
}

/* ---- the phases ---- */

static int neg_idents(shm_neg *n)
{
    unsigned char b[IDENT_BYTES];
    ident_encode(&n->mine, b);
    int rc = neg_send(n, 0, b, sizeof b);
    if (!rc) rc = neg_send(n, 1, b, sizeof b);
    for (int s = 0; s < 2 && !rc; s++) {
        rc = neg_recv(n, s, b, sizeof b, "say where it runs");
        if (!rc) rc = ident_decode(n, s, b, &n->theirs[s]);
    }
    return rc;
}

static int neg_hops(shm_neg *n, ring_links *l)
{
    unsigned char offer[OFFER_BYTES];
    int rc = SHARDLM_OK;
    if (n->local[1]) {
        neg_make_offer(n, &l->right, offer);
        rc = neg_send(n, 1, offer, sizeof offer);
    }
    if (!rc && n->local[0]) {
        rc = neg_read_offer(n);
        if (!rc && n->offer_ok) rc = neg_connect(n);
    }
    if (!rc && n->local[1] && n->offered) rc = neg_hand_over(n);
    if (!rc && n->local[0] && n->usock >= 0) rc = neg_take(n, &l->left);
    if (!rc && n->local[1] && n->offered && !n->result_read) {
        unsigned char yes = 0;
        rc = neg_recv(n, 1, &yes, 1, "say whether it mapped our segment");
        n->result_ok = yes == 1;
        if (!rc && !n->result_ok && !n->fail[1][0])
            snprintf(n->fail[1], sizeof n->fail[1], "rank %d could not map our segment", n->peer[1]);
    }
    if (n->local[1] && !n->result_ok) ring_shm_unmap(&l->right);
    return rc;
}

static void neg_cleanup(shm_neg *n)
{
    if (n->memfd >= 0) close(n->memfd);
    if (n->listener >= 0) close(n->listener);
    if (n->usock >= 0) close(n->usock);
}

/* A hop that had to use shared memory and cannot: both ends say so. */
static int neg_check_forced(shm_neg *n, ring_links *l)
{
    for (int s = 0; s < 2; s++) {
        ring_hop *h = s ? &l->right : &l->left;
        int forced = n->mine.want == SHARDLM_RING_SHM || n->theirs[s].want == SHARDLM_RING_SHM;
        if (h->seg || !forced) continue;
        shardlm_err_set("rank %d: --ring-transport shm (asked for by rank %d): the hop %s rank %d (%s neighbour, %s) "
                        "cannot use shared memory: %s", n->cfg->rank,
                        n->mine.want == SHARDLM_RING_SHM ? n->cfg->rank : n->peer[s], s ? "to" : "from", n->peer[s],
                        side_name(s), n->addr[s], h->why);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

int ring_shm_negotiate(const shardlm_ring_config *cfg, const shardlm_ring_opts *o, ring_links *l,
                       uint64_t deadline_ns)
{
    int w = cfg->world_size;
    shm_neg n = {.cfg = cfg, .deadline = deadline_ns, .fd = {l->left_fd, l->right_fd},
                 .addr = {l->left_addr, l->right_addr}, .peer = {(cfg->rank + w - 1) % w, (cfg->rank + 1) % w},
                 .memfd = -1, .listener = -1, .usock = -1};
    memset(&l->left, 0, sizeof l->left);
    memset(&l->right, 0, sizeof l->right);
    l->left.fd = l->left_fd;
    l->right.fd = l->right_fd;
    l->right.producer = 1;
    ident_mine(&n.mine, o->transport);
    int rc = neg_idents(&n);
    for (int s = 0; s < 2 && !rc; s++) {
        ring_hop *h = s ? &l->right : &l->left;
        n.local[s] = ident_local(&n.mine, &n.theirs[s], h->why, sizeof h->why);
    }
    if (!rc) rc = neg_hops(&n, l);
    neg_cleanup(&n);
    for (int s = 0; s < 2 && !rc; s++) {
        ring_hop *h = s ? &l->right : &l->left;
        if (h->seg) snprintf(h->why, sizeof h->why, "same host");
        /* %.100s: fail[] is longer than why[]; the reason's head is what matters. */
        else if (n.local[s]) snprintf(h->why, sizeof h->why, "shared memory failed: %.100s", n.fail[s]);
    }
    if (!rc) rc = neg_check_forced(&n, l);
    if (rc) {
        ring_shm_unmap(&l->left);
        ring_shm_unmap(&l->right);
    }
    return rc;
}
