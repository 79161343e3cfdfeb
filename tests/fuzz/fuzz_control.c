/* fuzz_control.c - libFuzzer harness for the control messages
 * (collectives/): any bytes as one frame's payload, decoded by protobuf-c
 * and validated by shardlm_ctrl_check with a receiver's limits, as the
 * control channel does before any rank acts on a message. A Step that
 * passes must be one the forward pass can index safely: the harness walks
 * it the way the worker does (every block its positions need). */
#include "fuzz_util.h"

#include "shardlm_common.h"
#include "shardlm_control.h"

enum { L_WORLD = 4, L_BATCH = 64, L_VOCAB = 512, L_CTX = 256, L_BLOCKS = 16, L_BLOCK_SIZE = 16 };

/* The accesses the worker and the forward pass make with a checked Step. */
static void walk_step(const Shardlm__Step *st)
{
    volatile int sink = 0;
    for (size_t i = 0; i < st->n_tokens; i++) {
        const Shardlm__BlockTable *t = st->tables[st->seq[i]];
        size_t need = (size_t)st->pos[i] / L_BLOCK_SIZE + 1;
        for (size_t k = 0; k < need && k < t->n_blocks; k++) sink += t->blocks[k];
        sink += st->tokens[i] + (int)st->want_logits[i];
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Shardlm__Envelope *env = shardlm__envelope__unpack(NULL, size, data);
    if (!env) return 0;
    /* As a worker after the handshake, and as rank 0 (only the world known). */
    shardlm_ctrl_limits worker = {L_WORLD, L_BATCH, L_VOCAB, L_CTX, L_BLOCKS};
    shardlm_ctrl_limits rank0 = {.world = L_WORLD};
    int ok = shardlm_ctrl_check(env, &worker) == SHARDLM_OK;
    shardlm_ctrl_check(env, &rank0);
    shardlm_ctrl_check(env, NULL);
    if (ok && env->msg_case == SHARDLM__ENVELOPE__MSG_STEP) walk_step(env->step);
    if (ok && env->msg_case == SHARDLM__ENVELOPE__MSG_FAULT &&
        (env->fault->rank >= L_WORLD || env->fault->peer < -1 || env->fault->peer >= L_WORLD))
        abort();
    /* What was decoded packs again, and decoding that is memory-safe. */
    size_t n = shardlm__envelope__get_packed_size(env);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) abort();
    shardlm__envelope__pack(env, buf);
    Shardlm__Envelope *again = shardlm__envelope__unpack(NULL, n, buf);
    /* Not asserted: a repeated oneof member re-packs differently (protobuf-c's
     * behaviour, found by the fuzzer, regress/control/); only that it is safe. */
    if (again) shardlm__envelope__free_unpacked(again, NULL);
    free(buf);
    shardlm__envelope__free_unpacked(env, NULL);
    return 0;
}
