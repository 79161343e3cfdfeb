/* test_ring.c - the ring communicator with real processes, over TCP and
 * over shared memory (every test that moves data runs once per transport,
 * and each rank checks its hops really use it): every collective at world
 * sizes 2, 4 and 8 checked element by element, the local backend, set-up
 * failures (timeout, duplicate ranks), and a rank SIGKILLed mid-run: the
 * survivors must fail within timeout + 1 s, naming a peer, and every
 * process must be reaped. tests/test_shm.c has the shared-memory specifics. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shardlm_common.h"
#include "shardlm_launch.h"
#include "shardlm_ring.h"
#include "test_util.h"

#define MAXW 8
#define CALL_MS 20000

typedef int (*rank_fn)(shardlm_comm *c, void *arg);

/* The transport every rank of the current test asks for (Criterion runs
 * each test in a process of its own). */
static shardlm_ring_transport g_transport = SHARDLM_RING_TCP;

/* Each test that moves data, once per transport. */
#define BOTH(name)                                                                   \
    static void name(void);                                                          \
    Test(ring, name##_tcp) { g_transport = SHARDLM_RING_TCP, name(); }               \
    Test(ring, name##_shm) { g_transport = SHARDLM_RING_SHM, name(); }               \
    static void name(void)

/* A rank process: connect, check both hops use the transport asked for,
 * run fn, exit with its result (never returns). */
static void rank_main(const shardlm_ring_config *cfg, rank_fn fn, void *arg)
{
    shardlm_comm *c = NULL;
    shardlm_ring_opts o = {10000, g_transport};
    int rc = shardlm_ring_comm_create_opts(cfg, &o, &c);
    if (rc) {
        fprintf(stderr, "rank %d: set-up failed: %s\n", cfg->rank, shardlm_err_get());
        _exit(90);
    }
    const char *want = g_transport == SHARDLM_RING_SHM ? "shm" : "tcp";
    for (int right = 0; right < 2; right++) {
        const char *got = shardlm_ring_comm_hop(c, right, NULL);
        if (!got || strcmp(got, want)) {
            fprintf(stderr, "rank %d: %s hop uses %s, not %s\n", cfg->rank, right ? "right" : "left", got, want);
            _exit(91);
        }
    }
    int res = fn(c, arg);
    shardlm_comm_destroy(c);
    _exit(res);
}

/* Runs fn on w forked ranks; each must exit 0. */
static void run_world(int w, rank_fn fn, void *arg)
{
    shardlm_ring_config cfg[MAXW];
    cr_assert_eq(shardlm_launch_plan(w, cfg), SHARDLM_OK, "%s", shardlm_err_get());
    pid_t pids[MAXW];
    int st[MAXW];
    fflush(NULL);
    for (int r = 0; r < w; r++) {
        pids[r] = fork();
        cr_assert_neq(pids[r], -1);
        if (pids[r] == 0) rank_main(&cfg[r], fn, arg);
    }
    tu_reap_all(pids, w, st, NULL, shardlm_now_ns(), 120000);
    for (int r = 0; r < w; r++)
        cr_assert(WIFEXITED(st[r]) && WEXITSTATUS(st[r]) == 0, "world %d: rank %d ended with wait status %d", w,
                  r, st[r]);
    tu_assert_no_children();
}

/* ---- all-reduce ---- */

static float ar_value(size_t i, int r) { return (float)((i * 13 + (size_t)r * 7) % 101); }

static int ar_ranks(shardlm_comm *c, void *arg)
{
    (void)arg;
    static const size_t lens[] = {1, 3, 1000, 1u << 20};
    int w = shardlm_comm_size(c), r = shardlm_comm_rank(c);
    float *buf = malloc(sizeof(float) * (1u << 20));
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        size_t n = lens[k];
        for (size_t i = 0; i < n; i++) buf[i] = ar_value(i, r);
        if (shardlm_comm_allreduce_f32(c, buf, n, CALL_MS)) {
            fprintf(stderr, "allreduce n=%zu: %s\n", n, shardlm_err_get());
            return 1;
        }
        for (size_t i = 0; i < n; i++) {
            float want = 0;
            for (int q = 0; q < w; q++) want += ar_value(i, q);
            if (buf[i] != want) {
                fprintf(stderr, "rank %d n=%zu: element %zu is %g, expected %g\n", r, n, i, buf[i], want);
                return 2;
            }
        }
    }
    free(buf);
    return 0;
}

BOTH(allreduce_w2) { run_world(2, ar_ranks, NULL); }
BOTH(allreduce_w4) { run_world(4, ar_ranks, NULL); }
BOTH(allreduce_w8) { run_world(8, ar_ranks, NULL); }

/* ---- allgather, gatherv, broadcast, barrier ---- */

static unsigned char pat(int r, size_t j) { return (unsigned char)(r * 31 + (int)j * 7 + 1); }

static int ag_ranks(shardlm_comm *c, void *arg)
{
    (void)arg;
    static const size_t sizes[] = {1, 5, 4096, 100003};
    int w = shardlm_comm_size(c), r = shardlm_comm_rank(c);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t b = sizes[k];
        unsigned char *send = malloc(b), *recv = malloc(b * (size_t)w);
        for (size_t j = 0; j < b; j++) send[j] = pat(r, j);
        if (shardlm_comm_allgather(c, send, b, recv, CALL_MS)) return 1;
        for (int q = 0; q < w; q++)
            for (size_t j = 0; j < b; j++)
                if (recv[(size_t)q * b + j] != pat(q, j)) return 2;
        free(send);
        free(recv);
    }
    return 0;
}

static const size_t gv_sizes[2][MAXW] = {
    {3, 0, 1000, 17, 0, 65536, 1, 5},
    {0, 70000, 0, 0, 9, 2, 0, 300000},
};

static int gv_ranks(shardlm_comm *c, void *arg)
{
    (void)arg;
    int w = shardlm_comm_size(c), r = shardlm_comm_rank(c);
    for (int k = 0; k < 2; k++) {
        const size_t *sz = gv_sizes[k];
        size_t total = 0;
        for (int q = 0; q < w; q++) total += sz[q];
        unsigned char *send = malloc(sz[r] + 1), *recv = r == 0 ? malloc(total + 1) : NULL;
        for (size_t j = 0; j < sz[r]; j++) send[j] = pat(r, j);
        if (shardlm_comm_gatherv(c, send, sz, recv, CALL_MS)) {
            fprintf(stderr, "gatherv: %s\n", shardlm_err_get());
            return 1;
        }
        size_t off = 0;
        for (int q = 0; r == 0 && q < w; off += sz[q], q++)
            for (size_t j = 0; j < sz[q]; j++)
                if (recv[off + j] != pat(q, j)) return 2;
        free(send);
        free(recv);
    }
    return 0;
}

static int bc_ranks(shardlm_comm *c, void *arg)
{
    (void)arg;
    int w = shardlm_comm_size(c), r = shardlm_comm_rank(c);
    size_t b = 200001;
    unsigned char *buf = malloc(b);
    int roots[] = {w - 1, 1};
    for (int k = 0; k < 2; k++) {
        for (size_t j = 0; j < b; j++) buf[j] = r == roots[k] ? pat(roots[k], j) : 0;
        if (shardlm_comm_broadcast(c, buf, b, roots[k], CALL_MS)) return 1;
        for (size_t j = 0; j < b; j++)
            if (buf[j] != pat(roots[k], j)) return 2;
    }
    free(buf);
    return 0;
}

/* The last rank arrives 300 ms late; nobody may leave the barrier early. */
static int bar_ranks(shardlm_comm *c, void *arg)
{
    (void)arg;
    int w = shardlm_comm_size(c), r = shardlm_comm_rank(c);
    for (int i = 0; i < 20; i++)
        if (shardlm_comm_barrier(c, CALL_MS)) return 1;
    if (r == w - 1) tu_nap_ms(300);
    uint64_t t0 = shardlm_now_ns();
    if (shardlm_comm_barrier(c, CALL_MS)) return 1;
    double ms = (double)(shardlm_now_ns() - t0) * 1e-6;
    if (r != w - 1 && ms < 250) {
        fprintf(stderr, "rank %d left the barrier after %.1f ms\n", r, ms);
        return 3;
    }
    return 0;
}

BOTH(allgather) { for (int w = 2; w <= MAXW; w *= 2) run_world(w, ag_ranks, NULL); }
BOTH(gatherv_uneven) { for (int w = 2; w <= MAXW; w *= 2) run_world(w, gv_ranks, NULL); }
BOTH(broadcast_nonzero_root) { for (int w = 2; w <= MAXW; w *= 2) run_world(w, bc_ranks, NULL); }
BOTH(barrier) { for (int w = 2; w <= 4; w *= 2) run_world(w, bar_ranks, NULL); }

/* ---- world size 1 ---- */

Test(ring, world1_local)
{
    shardlm_ring_config cfg;
    cr_assert_eq(shardlm_launch_plan(1, &cfg), SHARDLM_OK);
    shardlm_comm *c = NULL;
    cr_assert_eq(shardlm_ring_comm_create(&cfg, 1000, &c), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_str_eq(shardlm_comm_name(c), "local");
    cr_assert_eq(shardlm_comm_size(c), 1);
    float v[3] = {1, 2, 3};
    cr_assert_eq(shardlm_comm_allreduce_f32(c, v, 3, 100), 0);
    cr_assert(v[0] == 1 && v[1] == 2 && v[2] == 3);
    char a[4] = "abc", b[4] = {0};
    size_t sz[1] = {4};
    cr_assert_eq(shardlm_comm_allgather(c, a, 4, b, 100), 0);
    cr_assert_str_eq(b, "abc");
    memset(b, 0, 4);
    cr_assert_eq(shardlm_comm_gatherv(c, a, sz, b, 100), 0);
    cr_assert_str_eq(b, "abc");
    cr_assert_eq(shardlm_comm_broadcast(c, a, 4, 0, 100), 0);
    cr_assert_eq(shardlm_comm_broadcast(c, a, 4, 1, 100), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_comm_barrier(c, 100), SHARDLM_EPEER, "a failed call must break the communicator");
    cr_assert(strstr(shardlm_err_get(), "broken"));
    shardlm_comm_destroy(c);
}

/* ---- set-up failures ---- */

Test(ring, setup_timeout_names_right_neighbour)
{
    shardlm_ring_config cfg[2];
    cr_assert_eq(shardlm_launch_plan(2, cfg), SHARDLM_OK);
    shardlm_comm *c = NULL;
    uint64_t t0 = shardlm_now_ns();
    int rc = shardlm_ring_comm_create(&cfg[0], 1000, &c);
    double s = (double)(shardlm_now_ns() - t0) * 1e-9;
    cr_assert_eq(rc, SHARDLM_ETIMEDOUT, "rc %d: %s", rc, shardlm_err_get());
    cr_assert(s >= 0.9 && s <= 2.0, "set-up took %.2f s for a 1 s deadline", s);
    char want[64];
    snprintf(want, sizeof want, "rank 1 at 127.0.0.1:%d", cfg[0].right_port);
    cr_assert(strstr(shardlm_err_get(), want), "message '%s' lacks '%s'", shardlm_err_get(), want);
    cr_assert(strstr(shardlm_err_get(), "rank 0"), "%s", shardlm_err_get());
}

Test(ring, duplicate_rank_detected)
{
    shardlm_ring_config cfg[2];
    cr_assert_eq(shardlm_launch_plan(2, cfg), SHARDLM_OK);
    cfg[1].rank = 0; /* two processes both claim rank 0 */
    pid_t pids[2];
    int st[2];
    fflush(NULL);
    for (int i = 0; i < 2; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            shardlm_comm *c = NULL;
            int rc = shardlm_ring_comm_create(&cfg[i], 5000, &c);
            if (rc == SHARDLM_EINPUT && strstr(shardlm_err_get(), "duplicate rank")) _exit(0);
            fprintf(stderr, "process %d: rc %d: %s\n", i, rc, shardlm_err_get());
            _exit(1);
        }
    }
    uint64_t t0 = shardlm_now_ns();
    tu_reap_all(pids, 2, st, NULL, t0, 10000);
    double s = (double)(shardlm_now_ns() - t0) * 1e-9;
    for (int i = 0; i < 2; i++) cr_assert(WIFEXITED(st[i]) && WEXITSTATUS(st[i]) == 0);
    cr_assert(s < 3.0, "duplicate detection took %.2f s; it should not wait for the deadline", s);
    tu_assert_no_children();
}

/* ---- a rank killed mid-run ---- */

#define KILL_TIMEOUT_MS 2000

static int kill_ranks(shardlm_comm *c, void *arg)
{
    const char *dir = arg;
    int r = shardlm_comm_rank(c);
    size_t n = 1u << 16;
    float *buf = calloc(n, sizeof *buf);
    int rc = 0;
    uint64_t end = shardlm_now_ns() + 30ull * 1000000000ull;
    for (int i = 0; i < 1000000 && shardlm_now_ns() < end && rc == 0; i++)
        rc = shardlm_comm_allreduce_f32(c, buf, n, KILL_TIMEOUT_MS);
    char path[512];
    snprintf(path, sizeof path, "%s/rank%d.msg", dir, r);
    const char *msg = shardlm_err_get();
    tu_write_file(path, msg, strlen(msg));
    free(buf);
    return rc == SHARDLM_EPEER ? 10 : rc == SHARDLM_ETIMEDOUT ? 11 : 12;
}

BOTH(killed_rank_fails_survivors_fast)
{
    const int w = 4, victim = 2;
    const char *dir = tu_tmpdir();
    shardlm_ring_config cfg[4];
    cr_assert_eq(shardlm_launch_plan(w, cfg), SHARDLM_OK);
    pid_t pids[4];
    int st[4];
    double exit_ms[4];
    fflush(NULL);
    for (int r = 0; r < w; r++) {
        pids[r] = fork();
        if (pids[r] == 0) rank_main(&cfg[r], kill_ranks, (void *)dir);
    }
    tu_nap_ms(500);
    uint64_t t_kill = shardlm_now_ns();
    cr_assert_eq(kill(pids[victim], SIGKILL), 0);
    tu_reap_all(pids, w, st, exit_ms, t_kill, KILL_TIMEOUT_MS + 5000);
    cr_assert(WIFSIGNALED(st[victim]) && WTERMSIG(st[victim]) == SIGKILL);
    for (int r = 0; r < w; r++) {
        if (r == victim) continue;
        cr_assert(WIFEXITED(st[r]) && (WEXITSTATUS(st[r]) == 10 || WEXITSTATUS(st[r]) == 11),
                  "rank %d: wait status %d (90: set-up failed, 91: wrong transport, 12: no error or wrong code)", r,
                  st[r]);
        cr_assert(exit_ms[r] <= KILL_TIMEOUT_MS + 1000, "rank %d failed %.0f ms after the kill", r, exit_ms[r]);
        char path[512];
        snprintf(path, sizeof path, "%s/rank%d.msg", dir, r);
        char *msg = tu_read_file(path, NULL);
        cr_assert(msg, "rank %d wrote no message", r);
        cr_assert(strstr(msg, "neighbour") && strstr(msg, "127.0.0.1:"), "rank %d: '%s' names no peer", r, msg);
        cr_log_info("rank %d after %.0f ms: %s", r, exit_ms[r], msg);
        free(msg);
    }
    tu_assert_no_children();
}
