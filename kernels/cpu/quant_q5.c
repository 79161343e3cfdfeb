/* quant_q5.c - the ggml formats Q4_1, Q5_0 and Q5_1 (blocks of 32; layouts
 * in quant_blocks.h): exact dequantisation, written from the format
 * description with ggml's operation order (so the floats are bitwise
 * ggml's), and a simple reference quantiser.
 *
 * Quantiser (plain fitting per block, no search):
 *   Q4_1 / Q5_1 (L = 15 / 31 levels above the minimum): the minimum m is
 *     stored as the fp16 at or below min x, the step d = (max x - m) / L as
 *     the fp16 at or above it, and q = round((x - m) / d) with the stored
 *     values. Then no value is clamped, and |x - y| <= d/2 (d as stored).
 *   Q5_0: as ggml, d = x_max / -16 where x_max is the value of largest
 *     magnitude (so it lands on -16), stored as the fp16 at or beyond it in
 *     magnitude; q = clamp(round(x / d), -16, 15). |x - y| <= |d|/2, except
 *     values of the opposite sign near |x_max|, which the clamp at 15 moves
 *     by at most |d|: so |x - y| <= |d| overall.
 *   All hold up to f32 rounding (a relative 1e-6 of |x| and |m|). */
#include "quant_blocks.h"

/* ---- dequantisation ---- */

static void q4_1_block(const uint8_t *p, float *y)
{
    float d = shardlm_qb_f16(p), m = shardlm_qb_f16(p + 2);
    const uint8_t *qs = p + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(qs[j] & 15) * d + m;
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
    }
}

/* The 5-bit codes of a Q5_x block: nibbles at qs, fifth bits in qh. */
static void q5_codes(uint32_t qh, const uint8_t *qs, int *q)
{
    for (int j = 0; j < 16; j++) {
        q[j] = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
        q[j + 16] = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
    }
}

static void q5_0_block(const uint8_t *p, float *y)
{
    float d = shardlm_qb_f16(p);
    int q[32];
    q5_codes(shardlm_qb_rd32(p + 2), p + 6, q);
    for (int j = 0; j < 32; j++) y[j] = (float)(q[j] - 16) * d;
}

static void q5_1_block(const uint8_t *p, float *y)
{
    float d = shardlm_qb_f16(p), m = shardlm_qb_f16(p + 2);
    int q[32];
    q5_codes(shardlm_qb_rd32(p + 4), p + 8, q);
    for (int j = 0; j < 32; j++) y[j] = (float)q[j] * d + m;
}

/* ---- quantisation ---- */

/* Stores 32 codes as nibbles (element j low, j + 16 high) and, when qh is
 * not NULL, their fifth bits. */
static void q5_pack(const int *q, uint8_t *qs, uint8_t *qh)
{
    uint32_t hb = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
        hb |= (uint32_t)(q[j] >> 4 & 1) << j | (uint32_t)(q[j + 16] >> 4 & 1) << (j + 16);
    }
    if (qh)
        for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(hb >> (8 * k));
}

/* Q4_1 / Q5_1: d and m at out, codes 0..levels. */
static void min_step_block(const float *x, int levels, uint8_t *out, int q[32])
{
    float lo = x[0], hi = x[0];
    for (int j = 1; j < 32; j++) {
        lo = fminf(lo, x[j]);
        hi = fmaxf(hi, x[j]);
    }
    shardlm_qb_put16(out + 2, shardlm_qb_f16_down(lo));
    float m = shardlm_qb_f16(out + 2);
    shardlm_qb_put16(out, shardlm_qb_f16_away((hi - m) / (float)levels));
    float d = shardlm_qb_f16(out);
    for (int j = 0; j < 32; j++) q[j] = d > 0.0f ? shardlm_qb_round((x[j] - m) / d, 0, levels) : 0;
}

static void q4_1_quant(const float *x, uint8_t *out)
{
    int q[32];
    min_step_block(x, 15, out, q);
    q5_pack(q, out + 4, NULL);
}

static void q5_1_quant(const float *x, uint8_t *out)
{
    int q[32];
    min_step_block(x, 31, out, q);
    q5_pack(q, out + 8, out + 4);
}

static void q5_0_quant(const float *x, uint8_t *out)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    shardlm_qb_put16(out, shardlm_qb_f16_away(max / -16.0f));
    float d = shardlm_qb_f16(out);
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = 16 + (d != 0.0f ? shardlm_qb_round(x[j] / d, -16, 15) : 0);
    q5_pack(q, out + 6, out + 2);
}

/* ---- rows ---- */

void shardlm_q5_dequant(shardlm_dtype t, const uint8_t *src, float *dst, size_t n)
{
    size_t bb = shardlm_dtype_block_bytes(t);
    for (size_t b = 0; b < n / SHARDLM_QK; b++, src += bb, dst += SHARDLM_QK) {
        if (t == SHARDLM_DT_Q4_1) q4_1_block(src, dst);
        else if (t == SHARDLM_DT_Q5_0) q5_0_block(src, dst);
        else q5_1_block(src, dst);
    }
}

void shardlm_q5_quant(shardlm_dtype t, const float *src, uint8_t *dst, size_t n)
{
    size_t bb = shardlm_dtype_block_bytes(t);
    for (size_t b = 0; b < n / SHARDLM_QK; b++, src += SHARDLM_QK, dst += bb) {
        if (t == SHARDLM_DT_Q4_1) q4_1_quant(src, dst);
        else if (t == SHARDLM_DT_Q5_0) q5_0_quant(src, dst);
        else q5_1_quant(src, dst);
    }
}
