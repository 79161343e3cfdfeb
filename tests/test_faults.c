/* test_faults.c - rank 0 naming the lost rank from the workers' Fault
 * reports (shardlm_ctrl_send_fault / shardlm_ctrl_collect_faults), in one
 * process over loopback: a silent worker, a worker that died without a
 * report, and every worker reporting. Runs without root, unlike
 * tests/netns/run.sh, which checks the same on real links. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_control.h"

#define WORLD 4

typedef struct {
    int port, rank;
    shardlm_ctrl *c;
    char err[256]; /* why the connect failed (the error text is per thread) */
} worker_arg;

static void *worker_connect(void *p)
{
    worker_arg *a = p;
    shardlm_ctrl_hello h = {.fingerprint = 42, .world_size = WORLD, .rank = a->rank, .backend = "ring"};
    if (shardlm_ctrl_connect("127.0.0.1", a->port, &h, 5000, &a->c)) {
        a->c = NULL;
        snprintf(a->err, sizeof a->err, "%s", shardlm_err_get());
    }
    return NULL;
}

/* Rank 0 and WORLD-1 connected workers. */
static shardlm_ctrl *cluster(worker_arg w[WORLD])
{
    shardlm_ctrl *c = NULL;
    cr_assert_eq(shardlm_ctrl_listen("127.0.0.1", 0, WORLD, &c), 0, "%s", shardlm_err_get());
    pthread_t t[WORLD];
    for (int r = 1; r < WORLD; r++) {
        w[r] = (worker_arg){shardlm_ctrl_port(c), r, NULL, ""};
        pthread_create(&t[r], NULL, worker_connect, &w[r]);
    }
    /* n_ctx and max_batch as a real rank 0 sends them: a worker refuses a HelloAck without them. */
    shardlm_ctrl_hello mine = {.fingerprint = 42, .world_size = WORLD, .rank = 0, .backend = "ring", .isq = -1,
                               .n_ctx = 256, .max_batch = 1};
    cr_assert_eq(shardlm_ctrl_accept_all(c, &mine, 5000), 0, "%s", shardlm_err_get());
    for (int r = 1; r < WORLD; r++) {
        pthread_join(t[r], NULL);
        cr_assert_not_null(w[r].c, "worker %d did not connect: %s", r, w[r].err);
    }
    return c;
}

Test(faults, silent_worker_is_named_and_corroborated)
{
    worker_arg w[WORLD];
    shardlm_ctrl *c = cluster(w);
    cr_assert_eq(shardlm_ctrl_send_fault(w[1].c, 1, 0, "rank 1: allreduce: rank 0 closed the connection", 1000), 0);
    cr_assert_eq(shardlm_ctrl_send_fault(w[3].c, 3, 2, "rank 3: allreduce: timed out waiting for rank 2", 1000), 0);
    shardlm_ctrl_close(w[1].c);
    shardlm_ctrl_close(w[3].c); /* rank 2 stays connected but says nothing: its link is gone */
    char why[512];
    uint64_t t0 = shardlm_now_ns();
    int lost = shardlm_ctrl_collect_faults(c, 400, why, sizeof why);
    double ms = (double)(shardlm_now_ns() - t0) / 1e6;
    cr_assert_eq(lost, 2, "lost %d: %s", lost, why);
    cr_assert(strstr(why, "rank 2 is lost: neither a fault report nor a close") && strstr(why, "rank 3 failed"),
              "%s", why);
    cr_assert(strstr(why, "rank 1 is lost") == NULL && strstr(why, "rank 3 is lost") == NULL, "%s", why);
    cr_assert(ms >= 350 && ms < 1500, "waited %.0f ms for a 400 ms window", ms);
    shardlm_ctrl_close(w[2].c);
    shardlm_ctrl_close(c);
}

Test(faults, worker_closed_without_a_report_is_named_at_once)
{
    worker_arg w[WORLD];
    shardlm_ctrl *c = cluster(w);
    shardlm_ctrl_close(w[2].c); /* killed: the kernel closes its socket, no Fault */
    cr_assert_eq(shardlm_ctrl_send_fault(w[1].c, 1, 2, "rank 1: allreduce: rank 2 closed the connection", 1000), 0);
    cr_assert_eq(shardlm_ctrl_send_fault(w[3].c, 3, 2, "rank 3: allreduce: rank 2 closed the connection", 1000), 0);
    char why[512];
    uint64_t t0 = shardlm_now_ns();
    int lost = shardlm_ctrl_collect_faults(c, 5000, why, sizeof why);
    double ms = (double)(shardlm_now_ns() - t0) / 1e6;
    cr_assert_eq(lost, 2, "lost %d: %s", lost, why);
    cr_assert(strstr(why, "closed without a fault report") && strstr(why, "rank 1, rank 3 failed"), "%s", why);
    cr_assert_lt(ms, 1000, "every worker had answered, yet it waited %.0f ms", ms);
    shardlm_ctrl_close(w[1].c);
    shardlm_ctrl_close(w[3].c);
    shardlm_ctrl_close(c);
}

Test(faults, every_worker_reporting_names_no_rank)
{
    worker_arg w[WORLD];
    shardlm_ctrl *c = cluster(w);
    for (int r = 1; r < WORLD; r++) cr_assert_eq(shardlm_ctrl_send_fault(w[r].c, r, 0, "rank 0 went away", 1000), 0);
    char why[512];
    int lost = shardlm_ctrl_collect_faults(c, 2000, why, sizeof why);
    cr_assert_eq(lost, -1, "lost %d: %s", lost, why);
    cr_assert(strstr(why, "every worker reported a fault") && strstr(why, "rank 3 waited on rank 0"), "%s", why);
    cr_assert_eq(shardlm_ctrl_send_fault(c, 0, -1, "x", 100), SHARDLM_EINPUT, "rank 0 cannot send a Fault");
    for (int r = 1; r < WORLD; r++) shardlm_ctrl_close(w[r].c);
    shardlm_ctrl_close(c);
}

/* The CI race: rank 1's part of a gather went out before rank 2's link
 * died, so rank 1 sits idle waiting for rank 0 and reports nothing. Only
 * the silent rank a neighbour blames is named. */
Test(faults, idle_silent_worker_is_not_blamed)
{
    worker_arg w[WORLD];
    shardlm_ctrl *c = cluster(w);
    cr_assert_eq(shardlm_ctrl_send_fault(w[3].c, 3, 2, "rank 3: gatherv: timed out waiting for rank 2", 1000), 0);
    shardlm_ctrl_close(w[3].c); /* ranks 1 and 2 stay connected and say nothing */
    char why[512];
    int lost = shardlm_ctrl_collect_faults(c, 300, why, sizeof why);
    cr_assert_eq(lost, 2, "lost %d: %s", lost, why);
    cr_assert(strstr(why, "rank 2 is lost") && strstr(why, "rank 3 failed waiting on it"), "%s", why);
    cr_assert(strstr(why, "rank 1 is lost") == NULL, "an idle rank was blamed: %s", why);
    shardlm_ctrl_close(w[1].c);
    shardlm_ctrl_close(w[2].c);
    shardlm_ctrl_close(c);
}
