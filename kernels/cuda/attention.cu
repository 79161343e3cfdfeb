/* attention.cu - causal attention over the paged KV cache, for decode and
 * prefill alike: one thread block per (token, local query head), each token
 * reading positions 0..pos of its own sequence through its block table, so
 * a prefill chunk is causal simply because every token stops at its own
 * position (the batch's KV is stored first, as model/forward.c does).
 *
 * Why online softmax: the scores of a long context do not fit in shared
 * memory and a global scores buffer would cost batch x heads x context
 * floats. Each warp walks every ATT_WARPS-th position keeping a running
 * max, sum and weighted V; the warps are merged at the end. */
#include <math.h>

#include "cuda_internal.h"

#define ATT_WARPS 4
#define HD_MAX 256
#define PER_LANE (HD_MAX / 32)

__device__ static float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__global__ static void attention_k(shardlm_cuda_kv kv, shardlm_cuda_heads h, int layer, const float *q, float *out,
                                   float scale)
{
    __shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS], s_o[ATT_WARPS][HD_MAX];
    int tok = blockIdx.x / h.n_q_heads, head = blockIdx.x % h.n_q_heads;
    int hd = h.head_dim, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    size_t row = (size_t)tok * h.n_q_heads * hd + (size_t)head * hd;
    size_t head_off = (size_t)((h.q_head0 + head) / h.group - h.kv_head0) * hd;
    float qr[PER_LANE], o[PER_LANE];
    for (int j = 0; j < PER_LANE; j++) {
        int e = lane + 32 * j;
        qr[j] = e < hd ? q[row + e] : 0.0f;
        o[j] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    int pos = kv.d_pos[tok];
    const int32_t *table = kv.d_tables + (size_t)kv.d_seq[tok] * kv.table_stride;
    for (int t = warp; t <= pos; t += ATT_WARPS) {
        size_t slot = ((size_t)layer * kv.n_blocks + (size_t)table[t / kv.block_size]) * kv.block_size +
                      (size_t)(t % kv.block_size);
        const float *kt = kv.d_k + slot * kv.kv_width + head_off, *vt = kv.d_v + slot * kv.kv_width + head_off;
        float d = 0.0f;
        for (int j = 0; j < PER_LANE; j++)
            if (lane + 32 * j < hd) d += qr[j] * kt[lane + 32 * j];
        d = warp_sum(d) * scale;
        float mn = fmaxf(m, d), corr = expf(m - mn), p = expf(d - mn);
        l = l * corr + p;
        for (int j = 0; j < PER_LANE; j++)
            if (lane + 32 * j < hd) o[j] = o[j] * corr + p * vt[lane + 32 * j];
        m = mn;
    }
    if (lane == 0) s_m[warp] = m, s_l[warp] = l;
    for (int j = 0; j < PER_LANE; j++)
        if (lane + 32 * j < hd) s_o[warp][lane + 32 * j] = o[j];
    __syncthreads();
    float mx = s_m[0]; /* warp 0 always saw position 0 */
    for (int w = 1; w < ATT_WARPS; w++) mx = fmaxf(mx, s_m[w]);
    for (int e = threadIdx.x; e < hd; e += blockDim.x) {
        float num = 0.0f, den = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) {
            float f = s_l[w] > 0.0f ? expf(s_m[w] - mx) : 0.0f;
            num += s_o[w][e] * f;
            den += s_l[w] * f;
        }
        out[row + e] = num / den;
    }
}

int shardlm_cuda_attention(shardlm_cuda_ctx *c, const shardlm_cuda_kv *kv, const shardlm_cuda_heads *h, int layer,
                           const float *d_q, float *d_out, int n)
{
    if (h->head_dim < 1 || h->head_dim > HD_MAX || h->group < 1) {
        shardlm_err_set("CUDA kernel attention: head_dim %d (at most %d) or group %d not supported", h->head_dim,
                        HD_MAX, h->group);
        return SHARDLM_EINPUT;
    }
    if (n <= 0 || h->n_q_heads <= 0) return SHARDLM_OK;
    int rc = shardlm_cuda_enter(c);
    if (rc) return rc;
    float scale = 1.0f / sqrtf((float)h->head_dim);
    attention_k<<<(unsigned)n * (unsigned)h->n_q_heads, 32 * ATT_WARPS, 0, c->stream>>>(*kv, *h, layer, d_q, d_out,
                                                                                         scale);
    return shardlm_cuda_launched("attention");
}
