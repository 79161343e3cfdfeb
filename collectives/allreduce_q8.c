/* allreduce_q8.c - a sum all-reduce that puts 8-bit activations on the wire
 * (--comm-dtype q8, an idea from distributed-llama).
 *
 * Each rank quantises its partial sums once to Q8_0 blocks (32 values, one
 * f16 scale: 34 bytes instead of 128), all-gathers the blocks, and sums every
 * rank's dequantised blocks in rank order. Quantising once (rather than at
 * every ring hop) bounds the error at one rounding per rank, and the fixed
 * summation order gives every rank bit-identical results. It moves W x 34/128
 * of the bytes of one f32 copy; the f32 ring moves 2(W-1)/W copies.
 *
 * It lives with the collectives (on top of any transport's all-gather); the
 * Q8_0 packing comes from kernels, the one layer below. */
#include <string.h>

#include "shardlm_comm.h"
#include "shardlm_common.h"
#include "shardlm_kernels.h"

#define Q8_BLOCK 32
#define Q8_BYTES 34

static size_t q8_bytes(size_t n) { return (n + Q8_BLOCK - 1) / Q8_BLOCK * Q8_BYTES; }

size_t shardlm_comm_allreduce_q8_scratch(int world, size_t n) { return q8_bytes(n) * (size_t)(world + 1); }

static void q8_pack(const float *x, size_t n, uint8_t *out)
{
    size_t full = n / Q8_BLOCK * Q8_BLOCK;
    if (full) shardlm_quant_row(SHARDLM_DT_Q8_0, x, out, full);
    if (full == n) return;
    float tail[Q8_BLOCK] = {0}; /* the last, partial block padded with zeros */
    memcpy(tail, x + full, (n - full) * sizeof(float));
    shardlm_quant_row(SHARDLM_DT_Q8_0, tail, out + full / Q8_BLOCK * Q8_BYTES, Q8_BLOCK);
}

/* x += the n values held in Q8_0 blocks at q. */
static void q8_accumulate(const uint8_t *q, size_t n, float *x)
{
    float blk[Q8_BLOCK];
    for (size_t i = 0; i < n; i += Q8_BLOCK) {
        size_t k = n - i < Q8_BLOCK ? n - i : Q8_BLOCK;
        shardlm_dequant_row(SHARDLM_DT_Q8_0, q + i / Q8_BLOCK * Q8_BYTES, blk, Q8_BLOCK);
        for (size_t j = 0; j < k; j++) x[i + j] += blk[j];
    }
}

int shardlm_comm_allreduce_q8(shardlm_comm *c, float *buf, size_t n, uint8_t *scratch, int timeout_ms)
{
    int w = shardlm_comm_size(c);
    if (w == 1 || n == 0) return shardlm_comm_allreduce_f32(c, buf, n, timeout_ms);
    size_t bytes = q8_bytes(n);
    uint8_t *mine = scratch, *all = scratch + bytes;
    q8_pack(buf, n, mine);
    int rc = shardlm_comm_allgather(c, mine, bytes, all, timeout_ms);
    if (rc) return rc;
    memset(buf, 0, n * sizeof(float));
    for (int r = 0; r < w; r++) q8_accumulate(all + (size_t)r * bytes, n, buf);
    return SHARDLM_OK;
}
