/* quant_iq4.c - ggml's non-linear 4-bit formats IQ4_NL (blocks of 32) and
 * IQ4_XS (super-blocks of 256 with 6-bit sub-block scales); layouts in
 * quant_blocks.h. Exact dequantisation (ggml's operation order) and a
 * simple reference quantiser.
 *
 * Quantiser (no scale search, unlike ggml's):
 *   IQ4_NL: d = x_max / -127, x_max the value of largest magnitude (so it
 *     lands on the level -127), stored as the fp16 at or beyond it in
 *     magnitude; each value takes the level nearest x / d. The largest gap
 *     between levels is 24 and the top level is 113, so |x - y| <= 14*|d|.
 *   IQ4_XS: each sub-block j of 32 wants s_j = x_max,j / -127; the
 *     super-block scale d = max|s_j| / 31 (fp16 at or above), the codes
 *     c_j = round(s_j / d) in -31..31 (never clamped, so |s_j - d*c_j| <=
 *     d/2), and values take the nearest level of x / (d*c_j). With
 *     sigma_j = d*c_j: |x - y| <= 14*|sigma_j| + 63.5*d (|x| <= 127*|s_j|).
 *   Both up to f32 rounding. */
#include "quant_blocks.h"

const int8_t shardlm_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* ---- dequantisation ---- */

/* 16 nibble bytes: element j low, j + 16 high. */
static void iq4_group(const uint8_t *qs, float d, float *y)
{
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)shardlm_iq4nl[qs[j] & 15];
        y[j + 16] = d * (float)shardlm_iq4nl[qs[j] >> 4];
    }
}

static void iq4_xs_block(const uint8_t *p, float *y)
{
    float d = shardlm_qb_f16(p);
    for (int ib = 0; ib < 8; ib++)
        iq4_group(p + SHARDLM_IQ4_XS_QS + 16 * ib, d * (float)shardlm_iq4_xs_scale(p, ib), y + 32 * ib);
}

/* ---- quantisation ---- */

/* Index of the level nearest v (NaN: 0). */
static int iq4_nearest(float v)
{
    int best = 0;
    float err = fabsf(v - (float)shardlm_iq4nl[0]);
    for (int k = 1; k < 16; k++) {
        float e = fabsf(v - (float)shardlm_iq4nl[k]);
        if (e < err) {
            err = e;
            best = k;
        }
    }
    return best;
}

/* The signed value of largest magnitude among n. */
static float signed_max(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

/* 32 values against step d (0: every value takes the level nearest 0). */
static void iq4_group_quant(const float *x, float d, uint8_t *qs)
{
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = iq4_nearest(d != 0.0f ? x[j] / d : 0.0f);
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)(q[j] | q[j + 16] << 4);
}

static void iq4_nl_quant(const float *x, uint8_t *out)
{
    shardlm_qb_put16(out, shardlm_qb_f16_away(signed_max(x, 32) / -127.0f));
    iq4_group_quant(x, shardlm_qb_f16(out), out + 2);
}

static void iq4_xs_quant(const float *x, uint8_t *out)
{
    float s[8], smax = 0.0f;
    for (int ib = 0; ib < 8; ib++) {
        s[ib] = signed_max(x + 32 * ib, 32) / -127.0f;
        smax = fmaxf(smax, fabsf(s[ib]));
    }
    shardlm_qb_put16(out, shardlm_qb_f16_away(smax / 31.0f));
    float d = shardlm_qb_f16(out);
    uint16_t sh = 0;
    memset(out + 4, 0, 4);
    for (int ib = 0; ib < 8; ib++) {
        int c = d > 0.0f ? shardlm_qb_round(s[ib] / d, -31, 31) : 0, ls = c + 32;
        out[4 + ib / 2] |= (uint8_t)((ls & 15) << (4 * (ib % 2)));
        sh |= (uint16_t)((ls >> 4) << (2 * ib));
        iq4_group_quant(x + 32 * ib, d * (float)c, out + SHARDLM_IQ4_XS_QS + 16 * ib);
    }
    shardlm_qb_put16(out + 2, sh);
}

/* ---- rows ---- */

void shardlm_iq4_dequant(shardlm_dtype t, const uint8_t *src, float *dst, size_t n)
{
    if (t == SHARDLM_DT_IQ4_XS) {
        for (size_t b = 0; b < n / SHARDLM_QK_K; b++) iq4_xs_block(src + b * SHARDLM_IQ4_XS_BYTES, dst + b * SHARDLM_QK_K);
        return;
    }
    for (size_t b = 0; b < n / SHARDLM_QK; b++, src += SHARDLM_IQ4_NL_BYTES, dst += SHARDLM_QK)
        iq4_group(src + 2, shardlm_qb_f16(src), dst);
}

void shardlm_iq4_quant(shardlm_dtype t, const float *src, uint8_t *dst, size_t n)
{
    if (t == SHARDLM_DT_IQ4_XS) {
        for (size_t b = 0; b < n / SHARDLM_QK_K; b++) iq4_xs_quant(src + b * SHARDLM_QK_K, dst + b * SHARDLM_IQ4_XS_BYTES);
        return;
    }
    for (size_t b = 0; b < n / SHARDLM_QK; b++) iq4_nl_quant(src + b * SHARDLM_QK, dst + b * SHARDLM_IQ4_NL_BYTES);
}
