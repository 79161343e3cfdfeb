/* test_ring_auth.c - impostors at the ring's doors, with real sockets: the
 * shared-memory hand-over's token proof on its unix socket (the right
 * token, a wrong one, none, garbage, silence), and a 2-rank ring that must
 * refuse a wrong-token peer on its listen port while it forms, log it with
 * the peer's address, still form, and refuse connections once formed. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ring_internal.h"
#include "shardlm_auth.h"
#include "shardlm_common.h"

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
