/* test_ring_auth.c - impostors at the ring's doors, with real sockets: the
 * shared-memory hand-over's token proof on its unix socket (the right
 * token, a wrong one, none, garbage, silence), and a 2-rank ring that must
 * refuse a wrong-token peer on its listen port while it forms, log it with
 * the peer's address, still form, and refuse connections once formed
 * (ECONNREFUSED: the listener is closed). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ring_internal.h"
#include "shardlm_auth.h"
#include "shardlm_common.h"
#include "shardlm_launch.h"
#include "shardlm_ring.h"
#include "test_util.h"

static const uint8_t NONCE[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static void fini_token(void) { shardlm_auth_set_token(NULL); }

/* The producer's check on one end of a unix socket pair after the
 * consumer side wrote what prove() (under `token`) or `raw` makes. */
static int handover(const char *token, const void *raw, size_t n, int close_after)
{
    int sp[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    if (raw) {
        cr_assert_eq(write(sp[0], raw, n), (ssize_t)n);
    } else {
        shardlm_auth_set_token(token);
        cr_assert_eq(ring_shm_handover_prove(sp[0], NONCE), 0);
        shardlm_auth_set_token("the-cluster-token");
    }
    if (close_after) close(sp[0]);
    int rc = ring_shm_handover_check(sp[1], NONCE, 300);
    if (!close_after) close(sp[0]);
    close(sp[1]);
    return rc;
}

Test(shm_handover, the_right_token_is_taken, .fini = fini_token)
{
    cr_assert_eq(handover("the-cluster-token", NULL, 0, 0), SHARDLM_OK, "%s", shardlm_err_get());
}

Test(shm_handover, a_wrong_token_is_refused, .fini = fini_token)
{
    cr_assert_eq(handover("another-token", NULL, 0, 0), SHARDLM_EPEER);
    cr_assert_str_eq(shardlm_err_get(), "wrong cluster token");
}

Test(shm_handover, no_token_garbage_and_silence_are_refused, .fini = fini_token)
{
    shardlm_auth_set_token("the-cluster-token");
    uint8_t zeros[32] = {0}; /* what a consumer without a token sends */
    cr_assert_eq(handover(NULL, zeros, sizeof zeros, 0), SHARDLM_EPEER);
    cr_assert_str_eq(shardlm_err_get(), "wrong cluster token");
    cr_assert_eq(handover(NULL, "garbage", 7, 1), SHARDLM_EPEER);
    cr_assert_str_eq(shardlm_err_get(), "it closed the connection before proving the cluster token");
    cr_assert_eq(handover(NULL, "", 0, 0), SHARDLM_EPEER);
    cr_assert_str_eq(shardlm_err_get(), "no proof of the cluster token within 300 ms");
}

Test(shm_handover, without_a_cluster_token_any_proof_passes, .fini = fini_token)
{
    shardlm_auth_set_token(NULL);
    int sp[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    cr_assert_eq(ring_shm_handover_prove(sp[0], NONCE), 0);
    cr_assert_eq(ring_shm_handover_check(sp[1], NONCE, 300), SHARDLM_OK);
    close(sp[0]);
    close(sp[1]);
}

/* ---- the ring's listen port while the ring forms ---- */

#define TOKEN "the-cluster-token"

/* One ring rank: forms the ring, sums one value, then holds the ring until
 * the parent closes `hold` (so the test can try the closed listener). */
static void ring_rank(const shardlm_ring_config *cfg, int hold, const char *err_path)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!freopen(err_path, "w", stderr)) _exit(80);
    setvbuf(stderr, NULL, _IONBF, 0);
    shardlm_comm *c = NULL;
    shardlm_ring_opts o = {15000, SHARDLM_RING_TCP};
    if (shardlm_ring_comm_create_opts(cfg, &o, &c)) {
        fprintf(stderr, "set-up failed: %s\n", shardlm_err_get());
        _exit(90);
    }
    float v = 1;
    if (shardlm_comm_allreduce_f32(c, &v, 1, 10000) || v != 2) _exit(91);
    fprintf(stderr, "ring formed\n");
    char b;
    alarm(30);
    while (read(hold, &b, 1) > 0) {
    }
    shardlm_comm_destroy(c);
    _exit(0);
}

static int connect_port(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

static int local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    return ntohs(a.sin_port);
}

/* Reads until the peer closes; 1 when it did within ms, 0 when not. */
static int closed_within(int fd, int ms)
{
    uint64_t end = shardlm_now_ns() + (uint64_t)ms * 1000000ull;
    char b[256];
    for (;;) {
        uint64_t now = shardlm_now_ns();
        struct pollfd pf = {fd, POLLIN, 0};
        if (now >= end || poll(&pf, 1, (int)((end - now) / 1000000 + 1)) <= 0) return 0;
        ssize_t k = recv(fd, b, sizeof b, 0);
        if (k <= 0) return 1; /* a close, or a reset */
    }
}

static void read_exact(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd pf = {fd, POLLIN, 0};
        cr_assert_gt(poll(&pf, 1, 5000), 0, "the rank sent no handshake");
        ssize_t k = recv(fd, (char *)p + got, n - got, 0);
        cr_assert_gt(k, 0, "the rank closed before its handshake");
        got += (size_t)k;
    }
}

/* A ring peer that claims to be `rank` and knows the ring protocol but
 * holds another token: ring hello and token hello, then a proof made with
 * its own (wrong) token. Returns the socket, its local port in *port. */
static int wrong_token_peer(int to_port, int rank, int world, int *port)
{
    int fd = -1;
    for (int i = 0; i < 200 && fd < 0; i++) /* until the rank listens */
        if ((fd = connect_port(to_port)) < 0) tu_nap_ms(25);
    cr_assert_geq(fd, 0, "rank 1 never listened on %d", to_port);
    *port = local_port(fd);
    uint32_t h[4] = {htonl(RING_MAGIC), htonl(RING_PROTO_VERSION), htonl((uint32_t)rank), htonl((uint32_t)world)};
    uint8_t out[RING_HELLO_BYTES + SHARDLM_AUTH_HELLO_BYTES], in[RING_HELLO_BYTES + SHARDLM_AUTH_HELLO_BYTES];
    uint8_t proof[SHARDLM_AUTH_MAC_BYTES];
    shardlm_auth_steps st;
    shardlm_auth_set_token("not-the-cluster-token");
    memcpy(out, h, sizeof h);
    cr_assert_eq(shardlm_auth_begin(&st, 0, out + RING_HELLO_BYTES), 0);
    cr_assert_eq(write(fd, out, sizeof out), (ssize_t)sizeof out);
    read_exact(fd, in, sizeof in);
    cr_assert_eq(shardlm_auth_answer(&st, in + RING_HELLO_BYTES, proof, "rank 1"), 0);
    cr_assert_eq(write(fd, proof, sizeof proof), (ssize_t)sizeof proof);
    shardlm_auth_set_token(TOKEN);
    return fd;
}

static int log_has(const char *path, const char *what)
{
    char *t = tu_read_file(path, NULL);
    int ok = t && strstr(t, what);
    free(t);
    return ok;
}

Test(ring_port, a_wrong_token_peer_is_refused_while_the_ring_forms, .fini = fini_token, .timeout = 60)
{
    shardlm_ring_config cfg[2];
    cr_assert_eq(shardlm_launch_plan(2, cfg), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_auth_set_token(TOKEN), 0);
    int hold[2];
    cr_assert_eq(pipe(hold), 0);
    char err[2][512];
    pid_t pid[2];
    for (int r = 0; r < 2; r++) snprintf(err[r], sizeof err[r], "%s/rank%d.err", tu_tmpdir(), r);
    fflush(NULL);
    /* rank 1 alone first: its listener is open, its left neighbour not there */
    if ((pid[1] = fork()) == 0) close(hold[1]), ring_rank(&cfg[1], hold[0], err[1]);
    int p_bad = 0, p_junk = 0, p_quiet = 0;
    int bad = wrong_token_peer(cfg[1].port, 0, 2, &p_bad);
    cr_assert(closed_within(bad, 5000), "rank 1 did not close on the wrong-token peer within 5 s");
    int junk = connect_port(cfg[1].port);
    cr_assert_geq(junk, 0);
    p_junk = local_port(junk);
    cr_assert_eq(write(junk, "GET / HTTP/1.0\r\n\r\n0123456789012345678901234567890123456789", 58), 58);
    cr_assert(closed_within(junk, 5000), "rank 1 did not close on garbage within 5 s");
    int quiet = connect_port(cfg[1].port); /* says nothing: must not keep the neighbour out */
    cr_assert_geq(quiet, 0);
    p_quiet = local_port(quiet);
    /* the real rank 0 now: the ring forms */
    if ((pid[0] = fork()) == 0) close(hold[1]), ring_rank(&cfg[0], hold[0], err[0]);
    close(hold[0]);
    int formed = 0;
    for (int i = 0; i < 400 && !formed; i++, tu_nap_ms(25)) formed = log_has(err[0], "ring formed") && log_has(err[1], "ring formed");
    cr_assert(formed, "the ring did not form: rank 1 said: %s", tu_read_file(err[1], NULL));
    char want[256];
    snprintf(want, sizeof want, "refused a ring connection from 127.0.0.1:%d: cluster authentication with rank 1's left "
             "peer 127.0.0.1:%d refused: wrong cluster token", p_bad, p_bad);
    cr_assert(log_has(err[1], want), "rank 1's log lacks '%s': %s", want, tu_read_file(err[1], NULL));
    snprintf(want, sizeof want, "refused a ring connection from 127.0.0.1:%d: rank 1: left peer 127.0.0.1:%d is not a "
             "shardlm rank", p_junk, p_junk);
    cr_assert(log_has(err[1], want), "rank 1's log lacks '%s': %s", want, tu_read_file(err[1], NULL));
    snprintf(want, sizeof want, "refused a ring connection from 127.0.0.1:%d: the left neighbour rank 0 has connected",
             p_quiet);
    cr_assert(log_has(err[1], want), "rank 1's log lacks '%s': %s", want, tu_read_file(err[1], NULL));
    cr_assert(closed_within(quiet, 5000), "the silent peer was not closed once the ring formed");
    /* formed: the listeners are closed, a late peer is refused by the kernel */
    for (int r = 0; r < 2; r++) {
        int late = connect_port(cfg[r].port);
        cr_assert(late < 0 && errno == ECONNREFUSED, "rank %d's ring port still accepts after formation", r);
    }
    close(hold[1]);
    int st[2];
    tu_reap_all(pid, 2, st, NULL, shardlm_now_ns(), 20000);
    for (int r = 0; r < 2; r++)
        cr_assert(WIFEXITED(st[r]) && WEXITSTATUS(st[r]) == 0, "rank %d: wait status %d: %s", r, st[r],
                  tu_read_file(err[r], NULL));
    close(bad);
    close(junk);
    close(quiet);
    tu_assert_no_children();
}
