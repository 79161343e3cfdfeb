/* test_shm.c - the ring's shared-memory hops with real processes: every
 * collective at world sizes 2, 4 and 8 at lengths 1, 3, 1000 and 1 << 20,
 * interleaved so byte counts that are not whole floats leave the rings
 * misaligned for the next sum, every element checked; rings that mix
 * shared-memory and TCP hops; a SIGKILLed rank (mid-collective, and while
 * its neighbours sleep on their futexes) failing the survivors within the
 * ring's bounds, naming the peer, with no process and no /dev/shm entry
 * left; a SIGSTOPped rank caught by the timeout; --ring-transport shm
 * against tcp; a world with a cluster token; and the stories260K golden
 * text over shared memory. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shardlm_auth.h"
#include "shardlm_common.h"
#include "shardlm_launch.h"
#include "shardlm_ring.h"
#include "test_util.h"

#define MAXW 8
#define CALL_MS 20000
#define FAULT_MS 2000 /* the collective timeout of the fault tests */

typedef int (*rank_fn)(shardlm_comm *c, void *arg);

typedef struct {
    shardlm_ring_transport tr[MAXW]; /* what each rank asks for */
    rank_fn fn;
    void *arg;
    int connect_ms;
    const char *ready_dir; /* each rank touches ready<r> there once connected */
} world_spec;

/* The transport hop a -> a+1 must use, given what every rank asked for. */
static const char *hop_want(const world_spec *ws, int a, int w)
{
    int b = (a + 1) % w;
    return ws->tr[a] == SHARDLM_RING_TCP || ws->tr[b] == SHARDLM_RING_TCP ? "tcp" : "shm";
}

static void rank_main(const shardlm_ring_config *cfg, const world_spec *ws)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed assertion in the test leaves no rank behind */
    shardlm_comm *c = NULL;
    shardlm_ring_opts o = {ws->connect_ms ? ws->connect_ms : 10000, ws->tr[cfg->rank]};
    if (shardlm_ring_comm_create_opts(cfg, &o, &c)) {
        fprintf(stderr, "rank %d: set-up failed: %s\n", cfg->rank, shardlm_err_get());
        _exit(90);
    }
    int w = cfg->world_size, r = cfg->rank;
    const char *want[2] = {hop_want(ws, (r + w - 1) % w, w), hop_want(ws, r, w)};
    for (int right = 0; right < 2; right++) {
        const char *got = shardlm_ring_comm_hop(c, right, NULL);
        if (!got || strcmp(got, want[right])) {
            fprintf(stderr, "rank %d: %s hop uses %s, expected %s\n", r, right ? "right" : "left", got, want[right]);
            _exit(91);
        }
    }
    if (ws->ready_dir) {
        char path[512];
        snprintf(path, sizeof path, "%s/ready%d", ws->ready_dir, r);
        tu_write_file(path, "", 0);
    }
    int res = ws->fn(c, ws->arg);
    shardlm_comm_destroy(c);
    _exit(res);
}

static void fork_world(int w, const world_spec *ws, shardlm_ring_config *cfg, pid_t *pids)
{
    cr_assert_eq(shardlm_launch_plan(w, cfg), SHARDLM_OK, "%s", shardlm_err_get());
    fflush(NULL);
    for (int r = 0; r < w; r++) {
        pids[r] = fork();
        cr_assert_neq(pids[r], -1);
        if (pids[r] == 0) rank_main(&cfg[r], ws);
    }
}

static void run_world(int w, const world_spec *ws)
{
    shardlm_ring_config cfg[MAXW];
    pid_t pids[MAXW];
    int st[MAXW];
    fork_world(w, ws, cfg, pids);
    tu_reap_all(pids, w, st, NULL, shardlm_now_ns(), 120000);
    for (int r = 0; r < w; r++)
        cr_assert(WIFEXITED(st[r]) && WEXITSTATUS(st[r]) == 0,
                  "world %d: rank %d ended with wait status %d (exit %d; 90: set-up, 91: wrong transport)", w, r,
                  st[r], WIFEXITED(st[r]) ? WEXITSTATUS(st[r]) : -1);
    tu_assert_no_children();
}

/* ---- every collective at every length ---- */

static float ar_value(size_t i, int r, int k) { return (float)((i * 13 + (size_t)r * 7 + (size_t)k) % 101); }
static unsigned char pat(int r, size_t j, int k) { return (unsigned char)(r * 31 + (int)j * 7 + k + 1); }

static int check_allreduce(shardlm_comm *c, float *buf, size_t n, int k)
{
    int w = shardlm_comm_size(c), r = shardlm_comm_rank(c);
    for (size_t i = 0; i < n; i++) buf[i] = ar_value(i, r, k);
    if (shardlm_comm_allreduce_f32(c, buf, n, CALL_MS)) return fprintf(stderr, "%s\n", shardlm_err_get()), 1;
    for (size_t i = 0; i < n; i++) {
        float want = 0;
        for (int q = 0; q < w; q++) want += ar_value(i, q, k);
        if (buf[i] != want) return fprintf(stderr, "rank %d allreduce n=%zu: [%zu] %g != %g\n", r, n, i, buf[i], want), 2;
    }
    return 0;
}

static int check_allgather(shardlm_comm *c, unsigned char *send, unsigned char *recv, size_t b, int k)
{
    int w = shardlm_comm_size(c), r = shardlm_comm_rank(c);
    for (size_t j = 0; j < b; j++) send[j] = pat(r, j, k);
    if (shardlm_comm_allgather(c, send, b, recv, CALL_MS)) return fprintf(stderr, "%s\n", shardlm_err_get()), 3;
    for (int q = 0; q < w; q++)
        for (size_t j = 0; j < b; j++)
            if (recv[(size_t)q * b + j] != pat(q, j, k)) return fprintf(stderr, "allgather b=%zu: rank %d byte %zu\n", b, q, j), 4;
    return 0;
}

/* Uneven sizes, some zero: rank q sends len (odd q) or len / 2 + q bytes. */
static int check_gatherv(shardlm_comm *c, unsigned char *send, unsigned char *recv, size_t len, int k)
{
    int w = shardlm_comm_size(c), r = shardlm_comm_rank(c);
    size_t sz[MAXW];
    for (int q = 0; q < w; q++) sz[q] = q % 2 ? len : len / 2 + (size_t)q;
    for (size_t j = 0; j < sz[r]; j++) send[j] = pat(r, j, k);
    if (shardlm_comm_gatherv(c, send, sz, recv, CALL_MS)) return fprintf(stderr, "%s\n", shardlm_err_get()), 5;
    size_t off = 0;
    for (int q = 0; r == 0 && q < w; off += sz[q], q++)
        for (size_t j = 0; j < sz[q]; j++)
            if (recv[off + j] != pat(q, j, k)) return fprintf(stderr, "gatherv len=%zu: rank %d byte %zu\n", len, q, j), 6;
    return 0;
}

static int check_broadcast(shardlm_comm *c, unsigned char *buf, size_t b, int root, int k)
{
    int r = shardlm_comm_rank(c);
    for (size_t j = 0; j < b; j++) buf[j] = r == root ? pat(root, j, k) : 0;
    if (shardlm_comm_broadcast(c, buf, b, root, CALL_MS)) return fprintf(stderr, "%s\n", shardlm_err_get()), 7;
    for (size_t j = 0; j < b; j++)
        if (buf[j] != pat(root, j, k)) return fprintf(stderr, "broadcast b=%zu root %d: byte %zu\n", b, root, j), 8;
    return 0;
}

static int all_collectives(shardlm_comm *c, void *arg)
{
    (void)arg;
    static const size_t lens[] = {1, 3, 1000, 1u << 20};
    int w = shardlm_comm_size(c), rc = 0;
    float *f = malloc(sizeof(float) * (1u << 20));
    unsigned char *send = malloc((1u << 20) + MAXW), *recv = malloc((size_t)MAXW * ((1u << 20) + MAXW));
    for (int rep = 0; rep < 2 && !rc; rep++)
        for (size_t k = 0; k < sizeof lens / sizeof lens[0] && !rc; k++) {
            size_t n = lens[k];
            int tag = rep * 4 + (int)k;
            rc = check_allreduce(c, f, n, tag);
            if (!rc) rc = check_allgather(c, send, recv, n, tag);
            if (!rc) rc = check_allreduce(c, f, n, tag + 1); /* right after an odd byte count */
            if (!rc) rc = check_gatherv(c, send, recv, n, tag);
            if (!rc) rc = check_broadcast(c, send, n, (int)(k + (size_t)rep) % w, tag);
            if (!rc && shardlm_comm_barrier(c, CALL_MS)) rc = 9;
        }
    free(f);
    free(send);
    free(recv);
    return rc;
}

static void shm_suite(int w, const int *tcp_ranks, int ntcp)
{
    world_spec ws = {.fn = all_collectives};
    for (int r = 0; r < w; r++) ws.tr[r] = SHARDLM_RING_AUTO;
    for (int i = 0; i < ntcp; i++) ws.tr[tcp_ranks[i]] = SHARDLM_RING_TCP;
    if (!ntcp) ws.tr[0] = SHARDLM_RING_SHM; /* one rank insisting is enough to fail a hop that falls back */
    run_world(w, &ws);
}

Test(shm, every_collective_w2) { shm_suite(2, NULL, 0); }
Test(shm, every_collective_w4) { shm_suite(4, NULL, 0); }
Test(shm, every_collective_w8) { shm_suite(8, NULL, 0); }

/* With a cluster token the hand-over also proves it on the unix socket
 * (test_ring_auth.c refuses the wrong ones); every hop still goes shm. */
static void clear_token(void) { shardlm_auth_set_token(NULL); }
Test(shm, every_collective_w4_with_a_cluster_token, .fini = clear_token)
{
    cr_assert_eq(shardlm_auth_set_token("shm-test-token"), SHARDLM_OK);
    shm_suite(4, NULL, 0);
}

/* One rank that asks for tcp makes its two hops TCP; the others stay on
 * shared memory, so some ranks wait on a socket and a segment at once. */
Test(shm, mixed_hops_w4)
{
    int tcp[] = {1};
    shm_suite(4, tcp, 1);
}

Test(shm, mixed_hops_w8)
{
    int tcp[] = {2, 5};
    shm_suite(8, tcp, 2);
}

/* ---- set-up refusals ---- */

Test(shm, forced_shm_against_tcp_fails_both_ends)
{
    shardlm_ring_config cfg[2];
    cr_assert_eq(shardlm_launch_plan(2, cfg), SHARDLM_OK);
    pid_t pids[2];
    int st[2];
    const char *dir = tu_tmpdir();
    fflush(NULL);
    for (int r = 0; r < 2; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            shardlm_ring_opts o = {5000, r == 0 ? SHARDLM_RING_SHM : SHARDLM_RING_TCP};
            shardlm_comm *c = NULL;
            int rc = shardlm_ring_comm_create_opts(&cfg[r], &o, &c);
            char path[512];
            snprintf(path, sizeof path, "%s/rank%d.msg", dir, r);
            tu_write_file(path, shardlm_err_get(), strlen(shardlm_err_get()));
            _exit(rc == SHARDLM_EINPUT ? 0 : 1);
        }
    }
    tu_reap_all(pids, 2, st, NULL, shardlm_now_ns(), 10000);
    for (int r = 0; r < 2; r++) {
        char path[512];
        snprintf(path, sizeof path, "%s/rank%d.msg", dir, r);
        char *msg = tu_read_file(path, NULL);
        cr_assert(WIFEXITED(st[r]) && WEXITSTATUS(st[r]) == 0, "rank %d: not SHARDLM_EINPUT: %s", r, msg);
        cr_assert(msg && strstr(msg, "--ring-transport shm (asked for by rank 0)") && strstr(msg, "--ring-transport tcp"),
                  "rank %d: %s", r, msg);
        free(msg);
    }
    tu_assert_no_children();
}

/* ---- faults ---- */

static int count_shm_entries(void)
{
    int n = 0;
    DIR *d = opendir("/dev/shm");
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, "shardlm") != NULL;
    if (d) closedir(d);
    return n;
}

/* The segment is a memfd mapped by the rank: proof the hops are shared
 * memory, and that nothing named exists to be left behind. */
static int maps_memfd(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r"); /* procfs files have no size: read them line by line */
    int yes = 0;
    while (f && !yes && fgets(line, sizeof line, f)) yes = strstr(line, "/memfd:shardlm-ring") != NULL;
    if (f) fclose(f);
    return yes;
}

typedef struct {
    const char *dir;
    int victim;
    int sleepy; /* survivors wait in one long barrier instead of a busy loop */
} fault_arg;

static int fault_ranks(shardlm_comm *c, void *p)
{
    const fault_arg *a = p;
    int r = shardlm_comm_rank(c), rc = 0;
    size_t n = 1u << 16;
    float *buf = calloc(n, sizeof *buf);
    if (r == a->victim) /* stays out of every collective until it is killed or stopped */
        for (;;) pause();
    if (a->sleepy) {
        rc = shardlm_comm_barrier(c, 60000); /* far beyond the test's bound: only death detection ends it */
    } else {
        uint64_t end = shardlm_now_ns() + 30ull * 1000000000ull;
        for (int i = 0; shardlm_now_ns() < end && rc == 0; i++) rc = shardlm_comm_allreduce_f32(c, buf, n, FAULT_MS);
    }
    char path[512], msg[1200];
    snprintf(path, sizeof path, "%s/rank%d.msg", a->dir, r);
    snprintf(msg, sizeof msg, "fault_peer=%d %s", shardlm_comm_fault_peer(c), shardlm_err_get());
    tu_write_file(path, msg, strlen(msg));
    free(buf);
    return rc == SHARDLM_EPEER ? 10 : rc == SHARDLM_ETIMEDOUT ? 11 : 12;
}

/* Runs a world of 4 whose rank 2 is SIGKILLed (or SIGSTOPped) after 500 ms;
 * returns each survivor's message; exit_ms is its exit time after the
 * signal. */
static void fault_world(int sig, int sleepy, int mixed, int *st, double *exit_ms, char **msgs)
{
    enum { W = 4, VICTIM = 2 };
    int before = count_shm_entries();
    fault_arg fa = {tu_tmpdir(), VICTIM, sleepy};
    world_spec ws = {.fn = fault_ranks, .arg = &fa, .ready_dir = fa.dir};
    for (int r = 0; r < W; r++) ws.tr[r] = SHARDLM_RING_AUTO;
    if (mixed) ws.tr[1] = SHARDLM_RING_TCP; /* rank 1 watches a socket and a segment */
    shardlm_ring_config cfg[W];
    pid_t pids[W];
    fork_world(W, &ws, cfg, pids);
    for (int r = 0, waited = 0; r < W; r++) { /* every rank connected (slow on a loaded machine) */
        char path[512];
        snprintf(path, sizeof path, "%s/ready%d", fa.dir, r);
        while (access(path, F_OK) != 0 && waited++ < 6000) tu_nap_ms(10);
    }
    tu_nap_ms(300); /* into the collectives */
    cr_assert(maps_memfd(pids[3]), "rank 3 maps no shared-memory segment");
    uint64_t t0 = shardlm_now_ns();
    pid_t victim = pids[VICTIM];
    cr_assert_eq(kill(victim, sig), 0);
    pids[VICTIM] = 0; /* reaped below, after the others */
    tu_reap_all(pids, W, st, exit_ms, t0, FAULT_MS + 5000);
    kill(victim, SIGKILL);
    waitpid(victim, &st[VICTIM], 0);
    tu_assert_no_children();
    cr_assert_eq(count_shm_entries(), before, "a /dev/shm entry named shardlm was left behind");
    for (int r = 0; r < W; r++) {
        msgs[r] = NULL;
        if (r == VICTIM) continue;
        char path[512];
        snprintf(path, sizeof path, "%s/rank%d.msg", fa.dir, r);
        msgs[r] = tu_read_file(path, NULL);
        cr_assert(msgs[r], "rank %d wrote no message (wait status %d)", r, st[r]);
        cr_log_info("rank %d after %.0f ms: %s", r, exit_ms[r], msgs[r]);
    }
}

static void expect_killed(int sleepy, int mixed)
{
    int st[4];
    double ms[4];
    char *msg[4];
    fault_world(SIGKILL, sleepy, mixed, st, ms, msg);
    int named = 0;
    for (int r = 0; r < 4; r++) {
        if (r == 2) continue;
        cr_assert(WIFEXITED(st[r]) && (WEXITSTATUS(st[r]) == 10 || WEXITSTATUS(st[r]) == 11),
                  "rank %d: wait status %d (12: no error or a wrong code): %s", r, st[r], msg[r]);
        /* a sleepy rank's only deadline is 60 s away: it must notice the death itself */
        cr_assert(ms[r] <= (sleepy ? 1000 : FAULT_MS + 1000), "rank %d failed %.0f ms after the kill", r, ms[r]);
        cr_assert(strstr(msg[r], "neighbour") && strstr(msg[r], "127.0.0.1:"), "rank %d names no peer: %s", r, msg[r]);
        cr_assert(!strstr(msg[r], "fault_peer=-1"), "rank %d set no fault_peer: %s", r, msg[r]);
        named += strstr(msg[r], "fault_peer=2 ") != NULL && strstr(msg[r], "rank 2 (") != NULL;
        free(msg[r]);
    }
    cr_assert(named >= 1, "no survivor named rank 2, the one killed");
}

Test(shm, killed_rank_fails_busy_survivors_fast) { expect_killed(0, 0); }
Test(shm, killed_rank_wakes_sleeping_survivors) { expect_killed(1, 0); }
Test(shm, killed_rank_wakes_sleeping_survivors_mixed_hops) { expect_killed(1, 1); }

Test(shm, stopped_rank_is_caught_by_the_timeout)
{
    int st[4];
    double ms[4];
    char *msg[4];
    fault_world(SIGSTOP, 0, 0, st, ms, msg);
    for (int r = 0; r < 4; r++) {
        if (r == 2) continue;
        cr_assert(WIFEXITED(st[r]) && (WEXITSTATUS(st[r]) == 10 || WEXITSTATUS(st[r]) == 11),
                  "rank %d: wait status %d: %s", r, st[r], msg[r]);
        cr_assert(ms[r] <= FAULT_MS + 1000, "rank %d failed %.0f ms after the stop", r, ms[r]);
        if (r == 3) /* it waits on rank 2's data: only the deadline ends that */
            cr_assert(WEXITSTATUS(st[r]) == 11 && strstr(msg[r], "fault_peer=2 ") &&
                          strstr(msg[r], "timed out after 2000 ms waiting for rank 2 (left neighbour"),
                      "rank 3: %s", msg[r]);
        free(msg[r]);
    }
}

/* ---- the golden text over shared memory ---- */

static void golden(const char *ws, const char *transport, const char *extra)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    char *want = tu_read_file(tu_shared("models/stories260K.greedy.txt"), NULL);
    cr_assert_not_null(want);
    char *argv[] = {(char *)tu_bin(), "generate", "-m", model, "--temp", "0", "-n", "256", "--world-size", (char *)ws,
                    "--ring-transport", (char *)transport, (char *)extra, NULL};
    int before = count_shm_entries();
    tu_result r = tu_run(argv, NULL, 300);
    cr_assert_eq(r.exit_code, 0, "world size %s over %s: exit %d, stderr:\n%s", ws, transport, r.exit_code, r.err);
    cr_assert_str_eq(r.out, want, "world size %s over %s: output differs from Karpathy's greedy text", ws, transport);
    if (extra) cr_assert(strstr(r.err, "--numa: node"), "no --numa placement reported:\n%s", r.err);
    cr_assert_eq(count_shm_entries(), before, "a /dev/shm entry named shardlm was left behind");
    free(want);
    tu_result_free(&r);
}

Test(shm, golden_world_size_2) { golden("2", "shm", NULL); }
Test(shm, golden_world_size_4) { golden("4", "shm", NULL); }
Test(shm, golden_world_size_4_numa) { golden("4", "shm", "--numa"); }
Test(shm, golden_world_size_2_tcp) { golden("2", "tcp", NULL); }

Test(shm, bad_ring_transport_exits_2_naming_the_flag)
{
    char *argv[] = {(char *)tu_bin(), "generate", "-m", "x.gguf", "--ring-transport", "udp", NULL};
    tu_expect_exit(argv, 2, "--ring-transport");
}

Test(shm, ring_transport_with_another_backend_exits_2)
{
    char model[4096];
    snprintf(model, sizeof model, "%s", tu_shared("models/stories260K.gguf"));
    char *argv[] = {(char *)tu_bin(), "generate", "-m", model, "-n", "1", "--comm", "nccl", "--ring-transport", "tcp",
                    NULL};
    tu_expect_exit(argv, 2, "--ring-transport tcp: applies to the ring");
}
