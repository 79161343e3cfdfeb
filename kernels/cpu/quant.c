/* quant.c - IEEE half and bfloat16 conversion, the ggml Q8_0 / Q4_0 block
 * formats, and the row conversions of every supported type (the other
 * formats live in quant_q5.c, quant_iq4.c, quant_k.c and quant_k_low.c;
 * names and sizes in dtype.c). Written from the GGUF/ggml format
 * description. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant_blocks.h"
#include "quant_k.h"
#include "shardlm_kernels.h"

/* Q8_0: fp16 scale, then 32 signed bytes. Q4_0: fp16 scale, then 16 bytes
 * of nibble pairs (element j low, element j+16 high). */
#define Q8_0_BYTES (2 + SHARDLM_QK)
#define Q4_0_BYTES (2 + SHARDLM_QK / 2)

/* ---- IEEE binary16 ---- */

float shardlm_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        /* Zero or subnormal: man * 2^-24 is exact in f32. */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) bits = sign | 0x7f800000u | (man << 13); /* inf, or NaN keeping its payload */
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* |f| below 2^-14: the result is a half subnormal m * 2^-24 (or zero). */
static uint16_t f16_subnormal(uint32_t ax)
{
    int e = (int)(ax >> 23);
    int shift = 126 - e; /* mantissa with hidden bit, scaled to units of 2^-24 */
    if (shift > 24) return 0; /* below 2^-25, or exactly half of it: rounds to 0 */
    uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    uint32_t q = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++; /* may carry into the smallest normal: correct */
    return (uint16_t)q;
}

uint16_t shardlm_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((ax >> 13) & 0x3ffu); /* quiet NaN */
    if (ax >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds (ties to even) to inf */
    if (ax < 0x38800000u) return sign | f16_subnormal(ax);
    /* Normal: rebias the exponent (127 -> 15) and round 23 mantissa bits to
     * 10, ties to even; a carry correctly bumps the exponent. */
    uint32_t m = ax - (112u << 23);
    m += 0xfffu + ((m >> 13) & 1u);
    return sign | (uint16_t)(m >> 13);
}

/* ---- bfloat16: the top half of an f32 ---- */

float shardlm_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t shardlm_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* stay a (quiet) NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ---- blocks ---- */

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = shardlm_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

static float get_f16(const uint8_t *p) { return shardlm_f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }

static void q8_0_block(const float *x, uint8_t *out)
{
    float amax = 0.0f;
    for (int j = 0; j < SHARDLM_QK; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]);
    /* As ggml: quantise with the f32 scale, store it as f16. */
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(out, d);
    for (int j = 0; j < SHARDLM_QK; j++) {
        float r = roundf(x[j] * id);
        /* The clamps only matter for inf/NaN input, where a cast would be UB. */
        int q = r >= 127.0f ? 127 : r <= -127.0f ? -127 : r == r ? (int)r : 0;
        out[2 + j] = (uint8_t)(int8_t)q;
    }
}

/* ggml's rule: truncate x/d + 8.5 and cap at 15. Written with comparisons so
 * that NaN or inf input cannot make the float-to-int conversion undefined;
 * for finite input x/d lies in [-8, 8], so this equals min(15, trunc(v)). */
static uint8_t q4_0_nibble(float v)
{
    if (v >= 15.0f) return 15;
    if (v > 0.0f) return (uint8_t)(int)v;
    return 0;
}

static void q4_0_block(const float *x, uint8_t *out)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < SHARDLM_QK; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    float d = max / -8.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    put_f16(out, d);
    for (int j = 0; j < SHARDLM_QK / 2; j++) {
        uint8_t lo = q4_0_nibble(x[j] * id + 8.5f);
        uint8_t hi = q4_0_nibble(x[j + SHARDLM_QK / 2] * id + 8.5f);
        out[2 + j] = (uint8_t)(lo | (hi << 4));
    }
}

void shardlm_quant_row(shardlm_dtype t, const float *src, void *dst, size_t n)
{
    uint8_t *o = dst;
    switch (t) {
    case SHARDLM_DT_F32: memcpy(dst, src, n * sizeof(float)); break;
    case SHARDLM_DT_F16:
        for (size_t i = 0; i < n; i++) put_f16(o + 2 * i, src[i]);
        break;
    case SHARDLM_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = shardlm_f32_to_bf16(src[i]);
            o[2 * i] = (uint8_t)h;
            o[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    case SHARDLM_DT_Q8_0:
        for (size_t b = 0; b < n / SHARDLM_QK; b++) q8_0_block(src + b * SHARDLM_QK, o + b * Q8_0_BYTES);
        break;
    case SHARDLM_DT_Q4_0:
        for (size_t b = 0; b < n / SHARDLM_QK; b++) q4_0_block(src + b * SHARDLM_QK, o + b * Q4_0_BYTES);
        break;
    case SHARDLM_DT_Q4_1:
    case SHARDLM_DT_Q5_0:
    case SHARDLM_DT_Q5_1: shardlm_q5_quant(t, src, o, n); break;
    case SHARDLM_DT_IQ4_NL:
    case SHARDLM_DT_IQ4_XS: shardlm_iq4_quant(t, src, o, n); break;
    case SHARDLM_DT_Q2_K:
    case SHARDLM_DT_Q3_K:
    case SHARDLM_DT_Q4_K:
    case SHARDLM_DT_Q5_K:
    case SHARDLM_DT_Q6_K: shardlm_quant_k_quant(t, src, o, n); break;
    case SHARDLM_DT_Q8_0_R4:
    case SHARDLM_DT_Q4_0_R8: abort(); /* a caller bug: whole matrices only, via shardlm_repack */
    }
}

void shardlm_dequant_row(shardlm_dtype t, const void *src, float *dst, size_t n)
{
    const uint8_t *p = src;
    switch (t) {
    case SHARDLM_DT_F32: memcpy(dst, src, n * sizeof(float)); break;
    case SHARDLM_DT_F16:
        for (size_t i = 0; i < n; i++) dst[i] = get_f16(p + 2 * i);
        break;
    case SHARDLM_DT_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = shardlm_bf16_to_f32((uint16_t)(p[2 * i] | (p[2 * i + 1] << 8)));
        break;
    case SHARDLM_DT_Q8_0:
        for (size_t b = 0; b < n / SHARDLM_QK; b++, p += Q8_0_BYTES) {
            float d = get_f16(p);
            for (int j = 0; j < SHARDLM_QK; j++) dst[b * SHARDLM_QK + j] = (float)(int8_t)p[2 + j] * d;
        }
        break;
    case SHARDLM_DT_Q4_0:
        for (size_t b = 0; b < n / SHARDLM_QK; b++, p += Q4_0_BYTES) {
            float d = get_f16(p);
            float *y = dst + b * SHARDLM_QK;
            for (int j = 0; j < SHARDLM_QK / 2; j++) {
                y[j] = (float)((p[2 + j] & 0x0f) - 8) * d;
                y[j + SHARDLM_QK / 2] = (float)((p[2 + j] >> 4) - 8) * d;
            }
        }
        break;
    case SHARDLM_DT_Q4_1:
    case SHARDLM_DT_Q5_0:
    case SHARDLM_DT_Q5_1: shardlm_q5_dequant(t, p, dst, n); break;
    case SHARDLM_DT_IQ4_NL:
    case SHARDLM_DT_IQ4_XS: shardlm_iq4_dequant(t, p, dst, n); break;
    case SHARDLM_DT_Q2_K:
    case SHARDLM_DT_Q3_K:
    case SHARDLM_DT_Q4_K:
    case SHARDLM_DT_Q5_K:
    case SHARDLM_DT_Q6_K: shardlm_quant_k_dequant(t, p, dst, n); break;
    case SHARDLM_DT_Q8_0_R4:
    case SHARDLM_DT_Q4_0_R8: abort(); /* a caller bug: rows are interleaved, see shardlm_dequant_mat_row */
    }
}
