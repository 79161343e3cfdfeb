/* quant_k.c - the ggml k-quant formats Q4_K, Q5_K and Q6_K: exact
 * dequantisation (as the GGUF/ggml format defines it) and a simple reference
 * quantiser, and the row functions for every k-quant (Q2_K and Q3_K are in
 * quant_k_low.c). Written from the format description; layouts are in
 * quant_k.h and quant_blocks.h.
 *
 * Quantiser (not ggml's iterative scale search; plain fitting per sub-block):
 *   Q4_K / Q5_K (L = 15 / 31 levels): sub-block j of 32 gets min
 *     mn_j = -min(0, min x) and scale s_j = (max x + mn_j) / L; the 8 scales
 *     and 8 mins are quantised to 6 bits against super-block scales
 *     d = max s_j / 63, dmin = max mn_j / 63 (stored as fp16 rounded up),
 *     then every value is re-fitted with the stored scale/min:
 *     q = clamp(round((x + dmin*m_j) / (d*sc_j)), 0, L).
 *     Error bound per element: |x - y| <= (sc_j/2 + (L+1)/2) * d + dmin/2,
 *     with d, dmin, sc_j as stored (rounding term sc_j*d/2; a clamp at L
 *     costs at most L*d/2 + dmin/2, one at 0 at most dmin/2): for Q4_K
 *     (sc_j/2 + 8)*d + dmin/2, for Q5_K (sc_j/2 + 16)*d + dmin/2. Roughly
 *     1/30 (Q4_K) or 1/60 (Q5_K) of the sub-block's range.
 *   Q6_K: sub-block j of 16 gets s_j = amax_j / 31; scales are quantised to
 *     int8 (0..127) against d = max s_j / 127 (fp16 rounded up), and
 *     values re-fitted:
 *     q = clamp(round(x / (d*sc_j)), -32, 31).
 *     Error bound per element: |x - y| <= (sc_j/2 + 16) * d (rounding
 *     sc_j*d/2; a clamp at 31 at most 15.5*d). Roughly amax_j / 62.
 *   All hold up to f32 rounding (a relative 1e-6 or so). */
#include <math.h>
#include <string.h>

#include "quant_blocks.h"
#include "quant_k.h"

static float get_f16(const uint8_t *p) { return shardlm_f16_to_f32(shardlm_rd16(p)); }

/* Stores v >= 0 as the nearest fp16 not below it, so that v_j / stored never
 * exceeds the top code and the scale codes are never clamped; that keeps
 * the error bound above true even where fp16 is coarse (subnormal). */
static void put_f16_up(uint8_t *p, float v)
{
    uint16_t h = shardlm_f32_to_f16(v);
    if (shardlm_f16_to_f32(h) < v && h < 0x7c00u) h++;
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* round(v) clamped to [lo, hi]; comparisons first so that NaN or inf input
 * cannot make the float-to-int conversion undefined (NaN gives lo). */
static int round_clamp(float v, int lo, int hi)
{
    if (!(v > (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    return (int)nearbyintf(v);
}

/* ---- Q4_K ---- */

static void q4_k_dequant_block(const uint8_t *p, float *y)
{
    float d = get_f16(p), dmin = get_f16(p + 2);
    const uint8_t *s = p + 4, *q = p + 16;
    /* Four chunks of 64 values share 32 bytes: low nibbles are sub-block
     * 2c, high nibbles sub-block 2c+1. */
    for (int c = 0; c < 4; c++, q += 32, y += 64) {
        int sc0, m0, sc1, m1;
        shardlm_q4_k_scale_min(s, 2 * c, &sc0, &m0);
        shardlm_q4_k_scale_min(s, 2 * c + 1, &sc1, &m1);
        float d0 = d * (float)sc0, o0 = dmin * (float)m0;
        float d1 = d * (float)sc1, o1 = dmin * (float)m1;
        for (int l = 0; l < 32; l++) {
            y[l] = d0 * (float)(q[l] & 0x0f) - o0;
            y[l + 32] = d1 * (float)(q[l] >> 4) - o1;
        }
    }
}

/* Inverse of shardlm_q4_k_scale_min for all 8 sub-blocks. */
static void q4_k_pack_scales(const int *sc, const int *m, uint8_t *s)
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4));
    }
}

/* 6-bit codes of v[0..7] against step `unit` (0 when unit is 0). */
static void q4_k_codes(const float *v, float unit, int *code)
{
    for (int j = 0; j < 8; j++) code[j] = unit > 0.0f ? round_clamp(v[j] / unit, 0, 63) : 0;
}

/* Q4_K (levels 15, qh NULL) or Q5_K (levels 31): d, dmin and the scales at
 * out, the low 4 bits of the codes at q, their fifth bits at qh. */
static void q45_k_quant_block(const float *x, int levels, uint8_t *out, uint8_t *qh, uint8_t *q)
{
    float s[8], mn[8], smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < 8; j++) {
        float lo = 0.0f, hi = 0.0f;
        for (int l = 0; l < 32; l++) {
            lo = fminf(lo, x[32 * j + l]);
            hi = fmaxf(hi, x[32 * j + l]);
        }
        s[j] = (hi - lo) / (float)levels;
        mn[j] = -lo;
        smax = fmaxf(smax, s[j]);
        mmax = fmaxf(mmax, mn[j]);
    }
    put_f16_up(out, smax / 63.0f);
    put_f16_up(out + 2, mmax / 63.0f);
    /* Fit against the stored (fp16-rounded) scales, as dequant will use. */
    float d = get_f16(out), dmin = get_f16(out + 2);
    int sc[8], m[8];
    q4_k_codes(s, d, sc);
    q4_k_codes(mn, dmin, m);
    q4_k_pack_scales(sc, m, out + 4);
    memset(q, 0, SHARDLM_QK_K / 2);
    if (qh) memset(qh, 0, 32);
    for (int j = 0; j < 8; j++) {
        float step = d * (float)sc[j], off = dmin * (float)m[j];
        for (int l = 0; l < 32; l++) {
            int v = step > 0.0f ? round_clamp((x[32 * j + l] + off) / step, 0, levels) : 0;
            /* Sub-block j lives in chunk j/2, low nibble when j is even. */
            q[32 * (j / 2) + l] |= (uint8_t)(j % 2 ? (v & 15) << 4 : v & 15);
            if (qh) qh[l] |= (uint8_t)((v >> 4) << j);
        }
    }
}

/* ---- Q5_K ---- */

static void q5_k_dequant_block(const uint8_t *p, float *y)
{
    float d = get_f16(p), dmin = get_f16(p + 2);
    const uint8_t *s = p + 4, *qh = p + SHARDLM_Q5_K_QH, *q = p + SHARDLM_Q5_K_QS;
    /* As Q4_K, plus the fifth bit of value 32j + l in bit j of qh[l]. */
    for (int c = 0; c < 4; c++, q += 32, y += 64) {
        int sc0, m0, sc1, m1;
        shardlm_q4_k_scale_min(s, 2 * c, &sc0, &m0);
        shardlm_q4_k_scale_min(s, 2 * c + 1, &sc1, &m1);
        float d0 = d * (float)sc0, o0 = dmin * (float)m0;
        float d1 = d * (float)sc1, o1 = dmin * (float)m1;
        for (int l = 0; l < 32; l++) {
            y[l] = d0 * (float)((q[l] & 0x0f) + ((qh[l] >> (2 * c)) & 1) * 16) - o0;
            y[l + 32] = d1 * (float)((q[l] >> 4) + ((qh[l] >> (2 * c + 1)) & 1) * 16) - o1;
        }
    }
}

/* ---- Q6_K ---- */

static void q6_k_dequant_block(const uint8_t *p, float *y)
{
    const uint8_t *ql = p, *qh = p + SHARDLM_Q6_K_QH;
    const int8_t *sc = (const int8_t *)(p + SHARDLM_Q6_K_SC);
    float d = get_f16(p + SHARDLM_Q6_K_D);
    /* Two halves of 128: value l + 32k (k = 0..3) takes its low 4 bits from
     * ql[l + 32*(k%2)] (low nibble for k < 2) and its high 2 bits from bits
     * 2k..2k+1 of qh[l]. Sub-block (16 values) index = position / 16. */
    for (int h = 0; h < 2; h++, ql += 64, qh += 32, y += 128, sc += 8) {
        for (int l = 0; l < 32; l++) {
            int q0 = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
            int q1 = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
            int q2 = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            int q3 = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            int is = l / 16;
            y[l] = d * (float)sc[is] * (float)(q0 - 32);
            y[l + 32] = d * (float)sc[is + 2] * (float)(q1 - 32);
            y[l + 64] = d * (float)sc[is + 4] * (float)(q2 - 32);
            y[l + 96] = d * (float)sc[is + 6] * (float)(q3 - 32);
        }
    }
}

/* Stores the 6-bit codes u[256] (q + 32) in the ql/qh layout above. */
static void q6_k_pack(const uint8_t *u, uint8_t *ql, uint8_t *qh)
{
    for (int h = 0; h < 2; h++, u += 128, ql += 64, qh += 32) {
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((u[l] & 0x0f) | ((u[l + 64] & 0x0f) << 4));
            ql[l + 32] = (uint8_t)((u[l + 32] & 0x0f) | ((u[l + 96] & 0x0f) << 4));
            qh[l] = (uint8_t)((u[l] >> 4) | ((u[l + 32] >> 4) << 2) | ((u[l + 64] >> 4) << 4) |
                              ((u[l + 96] >> 4) << 6));
        }
    }
}

static void q6_k_quant_block(const float *x, uint8_t *out)
{
    float s[16], smax = 0.0f;
    for (int j = 0; j < 16; j++) {
        float amax = 0.0f;
        for (int l = 0; l < 16; l++) amax = fmaxf(amax, fabsf(x[16 * j + l]));
        s[j] = amax / 31.0f;
        smax = fmaxf(smax, s[j]);
    }
    put_f16_up(out + SHARDLM_Q6_K_D, smax / 127.0f);
    float d = get_f16(out + SHARDLM_Q6_K_D);
    uint8_t u[SHARDLM_QK_K];
    for (int j = 0; j < 16; j++) {
        int sc = d > 0.0f ? round_clamp(s[j] / d, 0, 127) : 0;
        out[SHARDLM_Q6_K_SC + j] = (uint8_t)sc;
        float step = d * (float)sc;
        for (int l = 0; l < 16; l++)
            u[16 * j + l] = (uint8_t)(32 + (step > 0.0f ? round_clamp(x[16 * j + l] / step, -32, 31) : 0));
    }
    q6_k_pack(u, out, out + SHARDLM_Q6_K_QH);
}

/* ---- rows ---- */

void shardlm_quant_k_dequant(shardlm_dtype t, const uint8_t *src, float *dst, size_t n)
{
    size_t bb = shardlm_dtype_block_bytes(t);
    for (size_t b = 0; b < n / SHARDLM_QK_K; b++, src += bb, dst += SHARDLM_QK_K) {
        switch (t) {
        case SHARDLM_DT_Q2_K: shardlm_q2_k_dequant_block(src, dst); break;
        case SHARDLM_DT_Q3_K: shardlm_q3_k_dequant_block(src, dst); break;
        case SHARDLM_DT_Q4_K: q4_k_dequant_block(src, dst); break;
        case SHARDLM_DT_Q5_K: q5_k_dequant_block(src, dst); break;
        default: q6_k_dequant_block(src, dst); break;
        }
    }
}

void shardlm_quant_k_quant(shardlm_dtype t, const float *src, uint8_t *dst, size_t n)
{
    size_t bb = shardlm_dtype_block_bytes(t);
    for (size_t b = 0; b < n / SHARDLM_QK_K; b++, src += SHARDLM_QK_K, dst += bb) {
        switch (t) {
        case SHARDLM_DT_Q2_K: shardlm_q2_k_quant_block(src, dst); break;
        case SHARDLM_DT_Q3_K: shardlm_q3_k_quant_block(src, dst); break;
        case SHARDLM_DT_Q4_K: q45_k_quant_block(src, 15, dst, NULL, dst + 16); break;
        case SHARDLM_DT_Q5_K: q45_k_quant_block(src, 31, dst, dst + SHARDLM_Q5_K_QH, dst + SHARDLM_Q5_K_QS); break;
        default: q6_k_quant_block(src, dst); break;
        }
    }
}
