/* fuzz_control.c - libFuzzer harness for the control messages
 * (collectives/): any bytes as one frame's payload, decoded and validated
 * by shardlm_ctrl_decode with a receiver's limits, as the control channel
 * does before any rank acts on a message. A Step that passes must be one
 * the forward pass can index safely: the harness walks it the way the
 * worker does (every block its positions need). */
#include "fuzz_util.h"

#include "shardlm_common.h"
#include "shardlm_control.h"

enum { L_WORLD = 4, L_BATCH = 64, L_VOCAB = 512, L_CTX = 256, L_BLOCKS = 16, L_BLOCK_SIZE = 16 };

/* The accesses the worker and the forward pass make with a checked Step. */
static void walk_step(const shardlm_ctrl_step *st)
{
    volatile int sink = 0;
    for (size_t i = 0; i < st->n_tokens; i++) {
        const shardlm_ctrl_table *t = &st->tables[st->seq[i]];
        size_t need = (size_t)st->pos[i] / L_BLOCK_SIZE + 1;
        for (size_t k = 0; k < need && k < t->n_blocks; k++) sink += t->blocks[k];
        sink += st->tokens[i] + (int)st->want_logits[i];
    }
    (void)sink;
}

static void walk_begin(const shardlm_ctrl_weights_begin *b)
{
    volatile uint64_t sink = 0;
    for (size_t i = 0; i < b->n_ranges; i++) sink += b->ranges[i].offset + b->ranges[i].length + b->ranges[i].count;
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* As rank 0 (only the world known) and with nothing known. */
    shardlm_ctrl_limits rank0 = {.world = L_WORLD};
    shardlm_ctrl_msg m;
    if (shardlm_ctrl_decode(data, size, &rank0, &m) == SHARDLM_OK) shardlm_ctrl_msg_free(&m);
    if (shardlm_ctrl_decode(data, size, NULL, &m) == SHARDLM_OK) shardlm_ctrl_msg_free(&m);
    /* As a worker after the handshake. */
    shardlm_ctrl_limits worker = {L_WORLD, L_BATCH, L_VOCAB, L_CTX, L_BLOCKS};
    if (shardlm_ctrl_decode(data, size, &worker, &m) != SHARDLM_OK) return 0;
    if (m.kind == SHARDLM_CTRL_MSG_STEP) walk_step(&m.u.step);
    if (m.kind == SHARDLM_CTRL_MSG_WEIGHTS_BEGIN) walk_begin(&m.u.weights_begin);
    if (m.kind == SHARDLM_CTRL_MSG_FAULT && (m.u.fault.rank < 0 || m.u.fault.rank >= L_WORLD ||
                                             m.u.fault.peer < -1 || m.u.fault.peer >= L_WORLD))
        abort();
    /* What was decoded encodes again (not the handshake's kinds), and
     * decoding that is memory-safe. Not asserted equal: a repeated oneof
     * member re-packs differently (protobuf-c's behaviour, found by the
     * fuzzer, regress/control/); only that it is safe. */
    uint8_t *buf = NULL;
    size_t n = 0;
    if (m.kind != SHARDLM_CTRL_MSG_HELLO && m.kind != SHARDLM_CTRL_MSG_HELLO_ACK) {
        if (shardlm_ctrl_encode(&m, &buf, &n) != SHARDLM_OK) abort();
        shardlm_ctrl_msg again;
        if (shardlm_ctrl_decode(buf, n, &worker, &again) == SHARDLM_OK) shardlm_ctrl_msg_free(&again);
        free(buf);
    }
    shardlm_ctrl_msg_free(&m);
    return 0;
}
