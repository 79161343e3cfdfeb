/* test_control_check.c - the typed control messages on the wire: each
 * kind's encoding is pinned byte for byte (the bytes the protobuf Envelope
 * gave before the typed API, so old and new ranks interoperate), decodes
 * back to what was sent, and the decoder's validation refuses what no
 * receiver may act on: a Heartbeat without its sender's stamp, an
 * over-long Shutdown reason, Steps and Faults out of range. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_control.h"

/* Encodes m and decodes it again, as a receiver would (lim may be NULL). */
static int roundtrip(const shardlm_ctrl_msg *m, const shardlm_ctrl_limits *lim, shardlm_ctrl_msg *got)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    cr_assert_eq(shardlm_ctrl_encode(m, &buf, &n), SHARDLM_OK, "%s", shardlm_err_get());
    int rc = shardlm_ctrl_decode(buf, n, lim, got);
    free(buf);
    return rc;
}

static void expect_bytes(const shardlm_ctrl_msg *m, const uint8_t *want, size_t n_want, const char *what)
{
    uint8_t *buf = NULL;
    size_t n = 0;
    cr_assert_eq(shardlm_ctrl_encode(m, &buf, &n), SHARDLM_OK, "%s: %s", what, shardlm_err_get());
    cr_assert_eq(n, n_want, "%s: %zu bytes, pinned %zu", what, n, n_want);
    for (size_t i = 0; i < n; i++) cr_assert_eq(buf[i], want[i], "%s: byte %zu is %02x, pinned %02x", what, i, buf[i], want[i]);
    free(buf);
}

Test(control_check, heartbeat_needs_a_stamp)
{
    shardlm_ctrl_msg m = {.kind = SHARDLM_CTRL_MSG_HEARTBEAT, .u.heartbeat_ns = 123456789}, got;
    cr_expect_eq(roundtrip(&m, NULL, &got), SHARDLM_OK);
    cr_expect_eq(got.kind, SHARDLM_CTRL_MSG_HEARTBEAT);
    cr_expect_eq(got.u.heartbeat_ns, 123456789u);
    shardlm_ctrl_msg_free(&got);
    m.u.heartbeat_ns = 0;
    cr_expect_eq(roundtrip(&m, NULL, &got), SHARDLM_EPEER);
    cr_expect(strstr(shardlm_err_get(), "Heartbeat") != NULL, "error: %s", shardlm_err_get());
}

Test(control_check, shutdown_rejoin_and_reason)
{
    shardlm_ctrl_msg m = {.kind = SHARDLM_CTRL_MSG_SHUTDOWN, .u.shutdown = {"rank 3 is lost", 1}}, got;
    cr_expect_eq(roundtrip(&m, NULL, &got), SHARDLM_OK);
    cr_expect_eq(got.u.shutdown.rejoin, 1);
    cr_expect_str_eq(got.u.shutdown.reason, "rank 3 is lost");
    shardlm_ctrl_msg_free(&got);
    m.u.shutdown.rejoin = 0;
    cr_expect_eq(roundtrip(&m, NULL, &got), SHARDLM_OK);
    cr_expect_eq(got.u.shutdown.rejoin, 0);
    shardlm_ctrl_msg_free(&got);
    /* rejoin on the wire as varint 2: a bool decodes as 1, never above */
    const uint8_t two[] = {0x22, 0x02, 0x10, 0x02};
    cr_expect_eq(shardlm_ctrl_decode(two, sizeof two, NULL, &got), SHARDLM_OK);
    cr_expect_eq(got.u.shutdown.rejoin, 1);
    shardlm_ctrl_msg_free(&got);
    static char longer[5000];
    memset(longer, 'x', sizeof longer - 1);
    m.u.shutdown = (shardlm_ctrl_shutdown){longer, 1};
    cr_expect_eq(roundtrip(&m, NULL, &got), SHARDLM_EPEER);
    cr_expect(strstr(shardlm_err_get(), "Shutdown") != NULL, "error: %s", shardlm_err_get());
}

/* The Envelope bytes of each kind as protobuf-c packed them before the
 * typed API (collectives/shardlm.proto field numbers, proto3 packed
 * repeated fields): the wire format is unchanged. */
Test(control_check, encodings_are_pinned)
{
    const int32_t tok[] = {5, 300, 7}, pos[] = {0, 1, 2}, seq[] = {0, 0, 1}, b0[] = {0, 3}, b1[] = {2};
    const uint32_t want[] = {0, 1, 1};
    const shardlm_ctrl_table tabs[] = {{b0, 2}, {b1, 1}};
    shardlm_ctrl_msg step = {.kind = SHARDLM_CTRL_MSG_STEP, .u.step = {42, 3, tok, pos, seq, want, 2, tabs}};
    const uint8_t step_b[] = {0x1a, 0x22, 0x08, 0x2a, 0x12, 0x04, 0x05, 0xac, 0x02, 0x07, 0x1a, 0x03,
                              0x00, 0x01, 0x02, 0x22, 0x03, 0x00, 0x00, 0x01, 0x2a, 0x03, 0x00, 0x01,
                              0x01, 0x32, 0x04, 0x0a, 0x02, 0x00, 0x03, 0x32, 0x03, 0x0a, 0x01, 0x02};
    expect_bytes(&step, step_b, sizeof step_b, "Step");

    shardlm_ctrl_msg fault = {.kind = SHARDLM_CTRL_MSG_FAULT, .u.fault = {2, -1, "timed out"}};
    const uint8_t fault_b[] = {0x4a, 0x18, 0x08, 0x02, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                               0xff, 0x01, 0x1a, 0x09, 't', 'i', 'm', 'e', 'd', ' ', 'o', 'u', 't'};
    expect_bytes(&fault, fault_b, sizeof fault_b, "Fault");

    shardlm_ctrl_msg sd = {.kind = SHARDLM_CTRL_MSG_SHUTDOWN, .u.shutdown = {"bye", 1}};
    const uint8_t sd_b[] = {0x22, 0x07, 0x0a, 0x03, 'b', 'y', 'e', 0x10, 0x01};
    expect_bytes(&sd, sd_b, sizeof sd_b, "Shutdown");

    shardlm_ctrl_msg hb = {.kind = SHARDLM_CTRL_MSG_HEARTBEAT, .u.heartbeat_ns = 1000000007ull};
    const uint8_t hb_b[] = {0x2a, 0x06, 0x08, 0x87, 0x94, 0xeb, 0xdc, 0x03};
    expect_bytes(&hb, hb_b, sizeof hb_b, "Heartbeat");

    const shardlm_ctrl_range rr[] = {{0, 4096, 4096, 1}, {8192, 64, 256, 3}};
    shardlm_ctrl_msg wb = {.kind = SHARDLM_CTRL_MSG_WEIGHTS_BEGIN,
                           .u.weights_begin = {9000, 4288, 0x0123456789abcdefull, 2, rr, 0}};
    const uint8_t wb_b[] = {0x32, 0x25, 0x08, 0xa8, 0x46, 0x10, 0xc0, 0x21, 0x19, 0xef, 0xcd, 0xab, 0x89,
                            0x67, 0x45, 0x23, 0x01, 0x22, 0x08, 0x10, 0x80, 0x20, 0x18, 0x80, 0x20, 0x20,
                            0x01, 0x22, 0x0a, 0x08, 0x80, 0x40, 0x10, 0x40, 0x18, 0x80, 0x02, 0x20, 0x03};
    expect_bytes(&wb, wb_b, sizeof wb_b, "WeightsBegin");

    const uint8_t data[] = {1, 2, 3, 4, 5};
    shardlm_ctrl_msg ch = {.kind = SHARDLM_CTRL_MSG_WEIGHTS_CHUNK, .u.weights_chunk = {8192, data, 5}};
    const uint8_t ch_b[] = {0x3a, 0x0a, 0x08, 0x80, 0x40, 0x12, 0x05, 0x01, 0x02, 0x03, 0x04, 0x05};
    expect_bytes(&ch, ch_b, sizeof ch_b, "WeightsChunk");

    shardlm_ctrl_msg we = {.kind = SHARDLM_CTRL_MSG_WEIGHTS_END, .u.weights_checksum = 0xfeedfacecafebeefull};
    const uint8_t we_b[] = {0x42, 0x09, 0x09, 0xef, 0xbe, 0xfe, 0xca, 0xce, 0xfa, 0xed, 0xfe};
    expect_bytes(&we, we_b, sizeof we_b, "WeightsEnd");

    shardlm_ctrl_msg id = {.kind = SHARDLM_CTRL_MSG_NCCL_ID};
    uint8_t id_b[134] = {0x52, 0x83, 0x01, 0x0a, 0x80, 0x01};
    for (int i = 0; i < 128; i++) id.u.nccl_id[i] = id_b[6 + i] = (uint8_t)(i * 3);
    expect_bytes(&id, id_b, sizeof id_b, "NcclId");
}

/* What was sent is what a receiver sees, through the typed views. */
Test(control_check, step_and_weights_decode_to_what_was_sent)
{
    const int32_t tok[] = {5, 300, 7}, pos[] = {0, 1, 2}, seq[] = {0, 0, 1}, b0[] = {0, 3}, b1[] = {2};
    const uint32_t want[] = {0, 1, 1};
    const shardlm_ctrl_table tabs[] = {{b0, 2}, {b1, 1}};
    shardlm_ctrl_msg m = {.kind = SHARDLM_CTRL_MSG_STEP, .u.step = {42, 3, tok, pos, seq, want, 2, tabs}}, got;
    shardlm_ctrl_limits lim = {.world = 4, .max_batch = 8, .n_vocab = 512, .n_ctx = 64, .kv_blocks = 4};
    cr_assert_eq(roundtrip(&m, &lim, &got), SHARDLM_OK, "%s", shardlm_err_get());
    const shardlm_ctrl_step *st = &got.u.step;
    cr_assert_eq(got.kind, SHARDLM_CTRL_MSG_STEP);
    cr_assert_eq(st->step_id, 42u);
    cr_assert_eq(st->n_tokens, 3u);
    cr_assert_eq(st->n_tables, 2u);
    cr_assert_arr_eq(st->tokens, tok, sizeof tok);
    cr_assert_arr_eq(st->pos, pos, sizeof pos);
    cr_assert_arr_eq(st->seq, seq, sizeof seq);
    cr_assert_arr_eq(st->want_logits, want, sizeof want);
    cr_assert_eq(st->tables[0].n_blocks, 2u);
    cr_assert_eq(st->tables[0].blocks[1], 3);
    cr_assert_eq(st->tables[1].n_blocks, 1u);
    cr_assert_eq(st->tables[1].blocks[0], 2);
    shardlm_ctrl_msg_free(&got);
    /* token 300 is past a 256-token vocabulary; block 3 past a 3-block pool */
    lim.n_vocab = 256;
    cr_expect_eq(roundtrip(&m, &lim, &got), SHARDLM_EPEER);
    cr_expect(strstr(shardlm_err_get(), "tokens[1]") != NULL, "error: %s", shardlm_err_get());
    lim.n_vocab = 512, lim.kv_blocks = 3;
    cr_expect_eq(roundtrip(&m, &lim, &got), SHARDLM_EPEER);
    cr_expect(strstr(shardlm_err_get(), "tables.blocks") != NULL, "error: %s", shardlm_err_get());

    const shardlm_ctrl_range rr[] = {{0, 4096, 4096, 1}, {8192, 64, 256, 3}};
    m = (shardlm_ctrl_msg){.kind = SHARDLM_CTRL_MSG_WEIGHTS_BEGIN,
                           .u.weights_begin = {9000, 4288, 0x0123456789abcdefull, 2, rr, 1}};
    cr_assert_eq(roundtrip(&m, NULL, &got), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(got.u.weights_begin.n_ranges, 2u);
    cr_assert_eq(got.u.weights_begin.ranges[1].stride, 256u);
    cr_assert_eq(got.u.weights_begin.ranges[1].count, 3u);
    cr_assert_eq(got.u.weights_begin.fingerprint, 0x0123456789abcdefull);
    cr_assert_eq(got.u.weights_begin.use_cache, 1);
    shardlm_ctrl_msg_free(&got);
}

Test(control_check, fault_ranks_and_garbage)
{
    shardlm_ctrl_msg m = {.kind = SHARDLM_CTRL_MSG_FAULT, .u.fault = {3, 2, "ring timed out"}}, got;
    shardlm_ctrl_limits lim = {.world = 4};
    cr_assert_eq(roundtrip(&m, &lim, &got), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(got.u.fault.rank, 3);
    cr_assert_eq(got.u.fault.peer, 2);
    cr_assert_str_eq(got.u.fault.error, "ring timed out");
    shardlm_ctrl_msg_free(&got);
    m.u.fault.peer = 4;
    cr_expect_eq(roundtrip(&m, &lim, &got), SHARDLM_EPEER);
    cr_expect(strstr(shardlm_err_get(), "Fault") != NULL, "error: %s", shardlm_err_get());
    const uint8_t junk[] = {0x1a, 0x22, 0x08}; /* a Step of 34 bytes cut after one */
    cr_expect_eq(shardlm_ctrl_decode(junk, sizeof junk, NULL, &got), SHARDLM_EPEER);
    cr_expect(strstr(shardlm_err_get(), "undecodable") != NULL, "error: %s", shardlm_err_get());
    shardlm_ctrl_msg hello = {.kind = SHARDLM_CTRL_MSG_HELLO};
    uint8_t *buf = NULL;
    size_t n;
    cr_expect_eq(shardlm_ctrl_encode(&hello, &buf, &n), SHARDLM_EINPUT);
}
