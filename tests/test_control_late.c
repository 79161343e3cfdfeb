/* test_control_late.c - rank 0's control port after the cluster has
 * formed, in process over loopback: a worker that reconnects (the right
 * token) before rank 0 has noticed its old connection is gone is held, and
 * the re-formation that follows takes it, so healing does not depend on
 * which side notices a loss first. impostor_e2e covers the refusals. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "shardlm_auth.h"
#include "shardlm_common.h"
#include "shardlm_control.h"
#include "test_util.h"

typedef struct {
    int port, rc;
    shardlm_ctrl *c;
    char err[512];
} worker;

static void *worker_main(void *p)
{
    worker *w = p;
    shardlm_ctrl_hello h = {.fingerprint = 42, .world_size = 2, .rank = 1, .backend = "ring"};
    w->rc = shardlm_ctrl_connect("127.0.0.1", w->port, &h, 20000, &w->c);
    snprintf(w->err, sizeof w->err, "%s", shardlm_err_get());
    return NULL;
}

static void fini_token(void) { shardlm_auth_set_token(NULL); }

Test(control_late, a_worker_back_before_its_loss_is_noticed_joins_the_reformation, .fini = fini_token, .timeout = 60)
{
    cr_assert_eq(shardlm_auth_set_token("the-cluster-token"), 0);
    shardlm_ctrl *c = NULL;
    cr_assert_eq(shardlm_ctrl_listen("127.0.0.1", 0, 2, &c), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_ctrl_hello mine = {.fingerprint = 42, .world_size = 2, .rank = 0, .backend = "ring", .n_ctx = 64,
                               .max_batch = 1, .isq = -1, .kv_blocks = 4, .block_size = 16};
    worker first = {.port = shardlm_ctrl_port(c)}, again = {.port = shardlm_ctrl_port(c)};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, worker_main, &first);
    cr_assert_eq(shardlm_ctrl_accept_all(c, &mine, 10000), SHARDLM_OK, "%s", shardlm_err_get());
    pthread_join(t1, NULL);
    cr_assert_eq(first.rc, SHARDLM_OK, "%s", first.err);
    /* the cluster is complete; rank 1 restarts and reconnects at once */
    shardlm_ctrl_close(first.c);
    pthread_create(&t2, NULL, worker_main, &again);
    tu_nap_ms(1000); /* it has proved the token and waits in rank 0's guard */
    shardlm_ctrl_reset_workers(c); /* rank 0 noticed the loss */
    cr_assert_eq(shardlm_ctrl_accept_all(c, &mine, 10000), SHARDLM_OK, "%s", shardlm_err_get());
    pthread_join(t2, NULL);
    cr_assert_eq(again.rc, SHARDLM_OK, "the restarted worker was not taken: %s", again.err);
    shardlm_ctrl_close(again.c);
    shardlm_ctrl_close(c);
}
