/* test_server_deadline.c - the HTTP server's request deadline
 * (--http-header-timeout) and per-address connection limit, on a server
 * with no engine attached (it answers 503 "loading"): a client trickling
 * header bytes and one that sends nothing are closed between T and T + 3 s,
 * while a complete request is answered; past the per-address limit a new
 * connection is closed at once; and connections finishing their requests
 * on either side of the deadline, then a stop with some still open, leave
 * nothing behind (ASan: no use after free between the reaper and MHD's own
 * close). The streamed-response side is in tests/abuse (it needs a model). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include "shardlm_common.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static shardlm_server *start(int header_s, int per_ip)
{
    shardlm_server_opts o = {.port = 0, .header_timeout_s = header_s, .max_connections_per_ip = per_ip};
    shardlm_server *srv = NULL;
    cr_assert_eq(shardlm_server_start(&o, NULL, NULL, NULL, &srv), SHARDLM_OK, "%s", shardlm_err_get());
    return srv;
}

static int dial(int port, const char *from)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    if (from) {
        inet_pton(AF_INET, from, &a.sin_addr);
        cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0, "bind %s: %s", from, strerror(errno));
    }
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    return fd;
}

static void say(int fd, const char *s)
{
    (void)!send(fd, s, strlen(s), MSG_NOSIGNAL);
}

/* Reads what is there without waiting; 1 once the server has closed
 * (end of file or reset). got collects the bytes (NUL-terminated). */
static int drain(int fd, char *got, size_t cap, size_t *len)
{
    for (;;) {
        char buf[512];
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0) return 1;
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : 1;
        size_t k = (size_t)n < cap - 1 - *len ? (size_t)n : cap - 1 - *len;
        memcpy(got + *len, buf, k);
        *len += k;
        got[*len] = 0;
    }
}

typedef struct {
    int fd;
    double closed; /* seconds after t0; 0: still open */
    char got[256];
    size_t len;
} peer;

/* Polls every open peer for up to max_s seconds (or until all are closed),
 * calling tick(now) every 100 ms; records when each was closed. */
static void watch(peer *p, int n, double t0, double max_s, void (*tick)(peer *, int, double))
{
    while (now_s() - t0 < max_s) {
        struct pollfd pf[256];
        int open = 0;
        for (int i = 0; i < n; i++) {
            pf[i] = (struct pollfd){.fd = p[i].closed ? -1 : p[i].fd, .events = POLLIN};
            open += !p[i].closed;
        }
        if (!open) return;
        poll(pf, (nfds_t)n, 100);
        double t = now_s() - t0;
        for (int i = 0; i < n; i++)
            if (!p[i].closed && (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) &&
                drain(p[i].fd, p[i].got, sizeof p[i].got, &p[i].len))
                p[i].closed = t;
        if (tick) tick(p, n, t);
    }
}

static void trickle(peer *p, int n, double t)
{
    (void)n;
    (void)t;
    if (!p[1].closed) say(p[1].fd, "X"); /* peer 1 keeps sending a header byte */
}

Test(server_deadline, slow_and_idle_clients_are_closed_at_the_deadline)
{
    shardlm_server *srv = start(1, 0);
    int port = shardlm_server_port(srv);
    double t0 = now_s();
    peer p[3] = {{.fd = dial(port, NULL)}, {.fd = dial(port, NULL)}, {.fd = dial(port, NULL)}};
    say(p[1].fd, "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    say(p[2].fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"); /* a whole request: answered */
    watch(p, 3, t0, 6, trickle);
    for (int i = 0; i < 2; i++) {
        cr_assert(p[i].closed, "peer %d (%s) was still open after 6 s", i, i ? "slow" : "idle");
        cr_assert(p[i].closed >= 1.0 && p[i].closed <= 4.0, "peer %d closed after %.2f s, not within 1-4 s", i,
                  p[i].closed);
        cr_assert_eq(p[i].len, 0, "peer %d got an answer: %s", i, p[i].got);
    }
    cr_assert(strstr(p[2].got, "HTTP/1.1 503") && strstr(p[2].got, "\"loading\""), "the whole request got: %s",
              p[2].got);
    for (int i = 0; i < 3; i++) close(p[i].fd);
    shardlm_server_stop(srv);
}

Test(server_deadline, connections_past_the_per_address_limit_are_closed_at_once)
{
    shardlm_server *srv = start(2, 3);
    int port = shardlm_server_port(srv);
    double t0 = now_s();
    peer p[5];
    for (int i = 0; i < 5; i++) p[i] = (peer){.fd = dial(port, "127.0.77.1")};
    watch(p, 5, t0, 1.0, NULL);
    int early = 0;
    for (int i = 0; i < 5; i++) early += p[i].closed > 0;
    cr_assert_eq(early, 2, "%d of 5 connections from one address were closed at once, with a limit of 3", early);
    /* another address is not affected */
    peer q = {.fd = dial(port, "127.0.78.1")};
    say(q.fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    watch(&q, 1, now_s(), 3, NULL);
    cr_assert(strstr(q.got, "HTTP/1.1 503"), "another address got: %s", q.got);
    /* the held ones reach the deadline, and the address may connect again */
    watch(p, 5, t0, 6, NULL);
    for (int i = 0; i < 5; i++) cr_assert(p[i].closed, "connection %d still open after 6 s", i);
    for (int i = 0; i < 5; i++) close(p[i].fd);
    close(q.fd);
    usleep(300 * 1000);
    peer r = {.fd = dial(port, "127.0.77.1")};
    say(r.fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    watch(&r, 1, now_s(), 3, NULL);
    cr_assert(strstr(r.got, "HTTP/1.1 503"), "the address, once its connections closed, got: %s", r.got);
    close(r.fd);
    shardlm_server_stop(srv);
}

#define CHURN 48

static double finish_at[CHURN];

/* Peer i ends its headers at finish_at[i] (negative: never). */
static void finish(peer *p, int n, double t)
{
    for (int i = 0; i < n; i++)
        if (finish_at[i] >= 0 && t >= finish_at[i] && !p[i].closed) {
            say(p[i].fd, "\r\n");
            finish_at[i] = -1;
        }
}

Test(server_deadline, requests_finishing_around_the_deadline_and_a_stop_with_some_open)
{
    shardlm_server *srv = start(1, 0);
    int port = shardlm_server_port(srv);
    double t0 = now_s();
    peer p[CHURN];
    for (int i = 0; i < CHURN; i++) {
        p[i] = (peer){.fd = dial(port, NULL)};
        say(p[i].fd, "GET /health HTTP/1.1\r\nHost: x\r\n");
        /* spread over 0.5-1.5 s, so some finish before the deadline and some after; every 8th never */
        finish_at[i] = i % 8 == 7 ? -1 : 0.5 + (double)i / CHURN;
    }
    watch(p, CHURN, t0, 5, finish);
    for (int i = 0; i < CHURN; i++) {
        cr_assert(p[i].closed, "peer %d still open after 5 s", i);
        double at = i % 8 == 7 ? -1 : 0.5 + (double)i / CHURN;
        if (at >= 0 && at < 0.8) cr_assert(strstr(p[i].got, "HTTP/1.1 503"), "peer %d (done at %.2f s) got: %s", i, at, p[i].got);
        if (at < 0) cr_assert_eq(p[i].len, 0, "peer %d never finished but got: %s", i, p[i].got);
        close(p[i].fd);
    }
    /* a stop while connections are open and their deadline is near */
    int late[8];
    for (int i = 0; i < 8; i++) {
        late[i] = dial(port, NULL);
        if (i % 2) say(late[i], "GET /health HTTP/1.1\r\n");
    }
    usleep(900 * 1000);
    shardlm_server_stop(srv);
    for (int i = 0; i < 8; i++) close(late[i]);
}
