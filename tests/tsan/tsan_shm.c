/* tsan_shm.c - the ring's shared-memory hops under ThreadSanitizer. Criterion
 * cannot start under TSan (Snaipe/Criterion#274), so this is a plain program:
 * exit 0 and "N passed, 0 failed" on success.
 *
 * Forked ranks (as tsan_ring.c) at world sizes 2, 4 and 8, all hops on
 * shared memory and then a ring mixing shared-memory and TCP hops, run the
 * all-reduce at lengths 1, 3, 1000 and 1 << 20 with an odd-sized all-gather
 * and broadcast in between, every element checked against the exact sum.
 * Then four ranks as threads of one process, each with its own
 * communicator: the transport's process-wide state (the futex_waitv
 * fallback flag, configuration read at set-up, error text) is shared by
 * them, which is where TSan can see a race within one process. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shardlm_common.h"
#include "shardlm_launch.h"
#include "shardlm_ring.h"

#define MAXW 8

static float value(size_t i, int r) { return (float)((i * 7 + (size_t)r * 13) % 101); }

static int check_sums(shardlm_comm *c, float *buf, size_t n)
{
    int w = shardlm_comm_size(c), r = shardlm_comm_rank(c);
    for (size_t i = 0; i < n; i++) buf[i] = value(i, r);
    if (shardlm_comm_allreduce_f32(c, buf, n, 20000)) return fprintf(stderr, "rank %d: %s\n", r, shardlm_err_get()), 1;
    for (size_t i = 0; i < n; i++) {
        float want = 0;
        for (int q = 0; q < w; q++) want += value(i, q);
        if (buf[i] != want) return fprintf(stderr, "rank %d: n=%zu [%zu] %g != %g\n", r, n, i, buf[i], want), 1;
    }
    return 0;
}

/* An odd byte count leaves the next all-reduce's floats misaligned in the
 * rings; the bytes themselves are checked too. */
static int check_bytes(shardlm_comm *c, size_t b)
{
    int w = shardlm_comm_size(c), r = shardlm_comm_rank(c), bad = 0;
    unsigned char *send = malloc(b), *recv = malloc(b * (size_t)w);
    for (size_t j = 0; j < b; j++) send[j] = (unsigned char)(r * 31 + (int)j);
    if (shardlm_comm_allgather(c, send, b, recv, 20000)) bad = 1;
    for (int q = 0; q < w && !bad; q++)
        for (size_t j = 0; j < b; j++) bad |= recv[(size_t)q * b + j] != (unsigned char)(q * 31 + (int)j);
    if (!bad && shardlm_comm_broadcast(c, send, b, w - 1, 20000)) bad = 1;
    for (size_t j = 0; j < b && !bad; j++) bad |= send[j] != (unsigned char)((w - 1) * 31 + (int)j);
    if (bad) fprintf(stderr, "rank %d: allgather/broadcast of %zu bytes: %s\n", r, b, shardlm_err_get());
    free(send);
    free(recv);
    return bad;
}

static int rank_run(const shardlm_ring_config *cfg, shardlm_ring_transport t)
{
    shardlm_comm *c;
    shardlm_ring_opts o = {20000, t};
    if (shardlm_ring_comm_create_opts(cfg, &o, &c)) {
        fprintf(stderr, "rank %d: %s\n", cfg->rank, shardlm_err_get());
        return 1;
    }
    static const size_t lens[] = {1, 3, 1000, 1u << 20};
    float *buf = malloc((1u << 20) * sizeof(float));
    int bad = !buf;
    for (size_t li = 0; li < 4 && !bad; li++) {
        bad = check_sums(c, buf, lens[li]);
        if (!bad) bad = check_bytes(c, lens[li] | 1);
        if (!bad) bad = check_sums(c, buf, lens[li]);
    }
    if (!bad && shardlm_comm_barrier(c, 20000)) bad = 1;
    free(buf);
    shardlm_comm_destroy(c);
    return bad;
}

/* tcp_rank >= 0: that rank asks for TCP (its two hops), the rest auto. */
static int process_case(int world, int tcp_rank)
{
    shardlm_ring_config cfgs[MAXW];
    if (shardlm_launch_plan(world, cfgs)) return 1;
    pid_t pids[MAXW];
    fflush(NULL);
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        shardlm_ring_transport t = tcp_rank < 0 ? SHARDLM_RING_SHM : r == tcp_rank ? SHARDLM_RING_TCP : SHARDLM_RING_AUTO;
        if (pids[r] == 0) _exit(rank_run(&cfgs[r], t));
    }
    int fails = 0;
    for (int r = 0; r < world; r++) {
        int st;
        waitpid(pids[r], &st, 0);
        fails += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    printf("%s: shared-memory ring, world size %d%s\n", fails ? "FAIL" : "ok", world,
           tcp_rank >= 0 ? ", one rank on TCP" : "");
    return fails != 0;
}

typedef struct {
    shardlm_ring_config cfg;
    int rc;
} thread_rank;

static void *thread_main(void *p)
{
    thread_rank *t = p;
    t->rc = rank_run(&t->cfg, SHARDLM_RING_SHM);
    return NULL;
}

static int thread_case(void)
{
    enum { W = 4 };
    shardlm_ring_config cfgs[W];
    thread_rank t[W];
    pthread_t th[W];
    if (shardlm_launch_plan(W, cfgs)) return 1;
    for (int r = 0; r < W; r++) {
        t[r] = (thread_rank){cfgs[r], 1};
        pthread_create(&th[r], NULL, thread_main, &t[r]);
    }
    int fails = 0;
    for (int r = 0; r < W; r++) {
        pthread_join(th[r], NULL);
        fails += t[r].rc != 0;
    }
    printf("%s: shared-memory ring, %d ranks as threads of one process\n", fails ? "FAIL" : "ok", W);
    return fails != 0;
}

int main(void)
{
    int failed = 0, total = 0;
    int worlds[] = {2, 4, 8};
    for (int i = 0; i < 3; i++, total++) failed += process_case(worlds[i], -1);
    failed += process_case(4, 1), total++;
    failed += thread_case(), total++;
    printf("tsan: %d passed, %d failed\n", total - failed, failed);
    return failed != 0;
}
