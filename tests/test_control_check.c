/* test_control_check.c - shardlm_ctrl_check's rules for the supervision
 * messages: a Heartbeat must carry its sender's stamp, and Shutdown.rejoin
 * (which decides whether a worker reconnects or exits) is 0 or 1, after a
 * round trip through the wire encoding as recv_env sees it. */
#include <criterion/criterion.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_control.h"

/* Packs env and decodes it again, as a receiver would, then checks it. */
static int roundtrip_check(const Shardlm__Envelope *env)
{
    uint8_t buf[8192];
    size_t n = shardlm__envelope__get_packed_size(env);
    cr_assert(n <= sizeof buf);
    shardlm__envelope__pack(env, buf);
    Shardlm__Envelope *got = shardlm__envelope__unpack(NULL, n, buf);
    cr_assert_not_null(got);
    int rc = shardlm_ctrl_check(got, NULL);
    shardlm__envelope__free_unpacked(got, NULL);
    return rc;
}

Test(control_check, heartbeat_needs_a_stamp)
{
    Shardlm__Heartbeat hb = SHARDLM__HEARTBEAT__INIT;
    Shardlm__Envelope env = SHARDLM__ENVELOPE__INIT;
    env.msg_case = SHARDLM__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    hb.now_ns = 123456789;
    cr_expect_eq(roundtrip_check(&env), SHARDLM_OK);
    hb.now_ns = 0;
    cr_expect_eq(roundtrip_check(&env), SHARDLM_EPEER);
    cr_expect(strstr(shardlm_err_get(), "Heartbeat") != NULL, "error: %s", shardlm_err_get());
}

Test(control_check, shutdown_rejoin_and_reason)
{
    Shardlm__Shutdown sd = SHARDLM__SHUTDOWN__INIT;
    Shardlm__Envelope env = SHARDLM__ENVELOPE__INIT;
    env.msg_case = SHARDLM__ENVELOPE__MSG_SHUTDOWN;
    env.shutdown = &sd;
    sd.reason = "rank 3 is lost";
    sd.rejoin = 1;
    cr_expect_eq(roundtrip_check(&env), SHARDLM_OK);
    sd.rejoin = 0;
    cr_expect_eq(roundtrip_check(&env), SHARDLM_OK);
    /* a decoded message is never above 1, but one built in memory can be */
    sd.rejoin = 2;
    cr_expect_eq(shardlm_ctrl_check(&env, NULL), SHARDLM_EPEER);
    cr_expect(strstr(shardlm_err_get(), "rejoin") != NULL, "error: %s", shardlm_err_get());
    static char longer[5000];
    memset(longer, 'x', sizeof longer - 1);
    sd.rejoin = 1;
    sd.reason = longer;
    cr_expect_eq(roundtrip_check(&env), SHARDLM_EPEER);
    cr_expect(strstr(shardlm_err_get(), "Shutdown") != NULL, "error: %s", shardlm_err_get());
}
