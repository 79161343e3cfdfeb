/* quant_k_low.c - the 2- and 3-bit k-quants Q2_K and Q3_K (super-blocks of
 * 256 in 16 sub-blocks of 16; layouts in quant_blocks.h): exact
 * dequantisation in ggml's operation order, and a simple reference
 * quantiser (plain fitting per sub-block, not ggml's scale search).
 *
 *   Q2_K: sub-block j gets min mn_j = -min(0, min x) and step
 *     s_j = (max(0, max x) + mn_j) / 3; both are quantised to 4 bits
 *     against d = max s_j / 15 and dmin = max mn_j / 15 (fp16 rounded up,
 *     so no code is clamped), and values re-fitted with the stored ones:
 *     q = clamp(round((x + dmin*m_j) / (d*sc_j)), 0, 3).
 *     |x - y| <= (sc_j/2 + 1.5)*d + dmin/2 (rounding sc_j*d/2; the clamp
 *     at 3 at most 1.5*d + dmin/2, the one at 0 at most dmin/2).
 *   Q3_K: sub-block j wants s_j = x_max,j / -4 (x_max the value of largest
 *     magnitude, which lands on -4); d = max|s_j| / 31 (fp16 rounded up),
 *     codes c_j = round(s_j / d) in -31..31 (never clamped, so
 *     |s_j - d*c_j| <= d/2); q = clamp(round(x / (d*c_j)), -4, 3). With
 *     sigma_j = d*c_j: |x - y| <= |sigma_j| + 2*d (the clamp at 3 costs at
 *     most |sigma_j| + 2d, the one at -4 at most 2d, as |x| <= 4|s_j|).
 *   Both up to f32 rounding. */
#include "quant_blocks.h"

/* Code of value e (0..255) among the 64 bytes of 2-bit codes. */
static int low2(const uint8_t *qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

static void put_low2(uint8_t *qs, int e, int v)
{
    qs[32 * (e / 128) + e % 32] |= (uint8_t)(v << (2 * ((e % 128) / 32)));
}

/* ---- Q2_K ---- */

void shardlm_q2_k_dequant_block(const uint8_t *p, float *y)
{
    float d = shardlm_qb_f16(p + SHARDLM_Q2_K_D), dmin = shardlm_qb_f16(p + SHARDLM_Q2_K_D + 2);
    const uint8_t *qs = p + SHARDLM_Q2_K_QS;
    for (int j = 0; j < 16; j++) {
        float dl = d * (float)(p[j] & 15), ml = dmin * (float)(p[j] >> 4);
        for (int l = 0; l < 16; l++) y[16 * j + l] = dl * (float)low2(qs, 16 * j + l) - ml;
    }
}

/* 4-bit codes of v[0..15] against unit (0 when unit is 0). */
static void codes4(const float *v, float unit, int *code)
{
    for (int j = 0; j < 16; j++) code[j] = unit > 0.0f ? shardlm_qb_round(v[j] / unit, 0, 15) : 0;
}

void shardlm_q2_k_quant_block(const float *x, uint8_t *out)
{
    float s[16], mn[16], smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < 16; j++) {
        float lo = 0.0f, hi = 0.0f;
        for (int l = 0; l < 16; l++) {
            lo = fminf(lo, x[16 * j + l]);
            hi = fmaxf(hi, x[16 * j + l]);
        }
        s[j] = (hi - lo) / 3.0f;
        mn[j] = -lo;
        smax = fmaxf(smax, s[j]);
        mmax = fmaxf(mmax, mn[j]);
    }
    shardlm_qb_put16(out + SHARDLM_Q2_K_D, shardlm_qb_f16_away(smax / 15.0f));
    shardlm_qb_put16(out + SHARDLM_Q2_K_D + 2, shardlm_qb_f16_away(mmax / 15.0f));
    float d = shardlm_qb_f16(out + SHARDLM_Q2_K_D), dmin = shardlm_qb_f16(out + SHARDLM_Q2_K_D + 2);
    int sc[16], m[16];
    codes4(s, d, sc);
    codes4(mn, dmin, m);
    uint8_t *qs = out + SHARDLM_Q2_K_QS;
    memset(qs, 0, 64);
    for (int j = 0; j < 16; j++) {
        out[j] = (uint8_t)(sc[j] | m[j] << 4);
        float step = d * (float)sc[j], off = dmin * (float)m[j];
        for (int l = 0; l < 16; l++)
            put_low2(qs, 16 * j + l, step > 0.0f ? shardlm_qb_round((x[16 * j + l] + off) / step, 0, 3) : 0);
    }
}

/* ---- Q3_K ---- */

void shardlm_q3_k_dequant_block(const uint8_t *p, float *y)
{
    float d = shardlm_qb_f16(p + SHARDLM_Q3_K_D);
    const uint8_t *hm = p, *qs = p + SHARDLM_Q3_K_QS;
    for (int j = 0; j < 16; j++) {
        float dl = d * (float)shardlm_q3_k_scale(p + SHARDLM_Q3_K_SC, j);
        for (int l = 0; l < 16; l++) {
            int e = 16 * j + l;
            int q = low2(qs, e) - ((hm[e % 32] >> (e / 32)) & 1 ? 0 : 4);
            y[e] = dl * (float)q;
        }
    }
}

/* Inverse of shardlm_q3_k_scale: u[k] are the stored 6-bit codes. */
static void q3_k_pack_scales(const int *u, uint8_t *s)
{
    memset(s, 0, 12);
    for (int k = 0; k < 16; k++) {
        s[k % 8] |= (uint8_t)((u[k] & 15) << (k < 8 ? 0 : 4));
        s[8 + k % 4] |= (uint8_t)((u[k] >> 4) << (2 * (k / 4)));
    }
}

void shardlm_q3_k_quant_block(const float *x, uint8_t *out)
{
    float s[16], smax = 0.0f;
    for (int j = 0; j < 16; j++) {
        float amax = 0.0f, max = 0.0f;
        for (int l = 0; l < 16; l++)
            if (fabsf(x[16 * j + l]) > amax) {
                amax = fabsf(x[16 * j + l]);
                max = x[16 * j + l];
            }
        s[j] = max / -4.0f;
        smax = fmaxf(smax, fabsf(s[j]));
    }
    shardlm_qb_put16(out + SHARDLM_Q3_K_D, shardlm_qb_f16_away(smax / 31.0f));
    float d = shardlm_qb_f16(out + SHARDLM_Q3_K_D);
    int u[16];
    memset(out, 0, SHARDLM_Q3_K_SC);
    for (int j = 0; j < 16; j++) {
        int c = d > 0.0f ? shardlm_qb_round(s[j] / d, -31, 31) : 0;
        u[j] = c + 32;
        float step = d * (float)c;
        for (int l = 0; l < 16; l++) {
            int e = 16 * j + l;
            int q = 4 + (step != 0.0f ? shardlm_qb_round(x[e] / step, -4, 3) : 0);
            put_low2(out + SHARDLM_Q3_K_QS, e, q & 3);
            out[e % 32] |= (uint8_t)((q >> 2) << (e / 32));
        }
    }
    q3_k_pack_scales(u, out + SHARDLM_Q3_K_SC);
}
