/* quant_blocks.h - byte layouts of the block formats beyond Q8_0/Q4_0/Q4_K/
 * Q6_K (Q4_1, Q5_0, Q5_1, IQ4_NL: 32 values; Q2_K, Q3_K, Q5_K, IQ4_XS: 256),
 * written from ggml's block structs (ggml-common.h), and the helpers the
 * quantisers (quant_q5.c, quant_iq4.c, quant_k*.c) and kernels (matmul_q5.c,
 * matmul_iq4.c, matmul_k*.c) share. All multi-byte fields are little-endian
 * and unaligned. */
#ifndef SHARDLM_QUANT_BLOCKS_H
#define SHARDLM_QUANT_BLOCKS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "shardlm_kernels.h"

/* Q4_1: f16 d, f16 m, 16 bytes of nibbles (element j low, j + 16 high).
 * Value = q*d + m. */
#define SHARDLM_Q4_1_BYTES 20
/* Q5_0: f16 d, u32 qh (bit e: the fifth bit of element e), 16 nibble bytes
 * as Q4_0. Value = (q - 16)*d. */
#define SHARDLM_Q5_0_BYTES 22
/* Q5_1: f16 d, f16 m, u32 qh, 16 nibble bytes. Value = q*d + m. */
#define SHARDLM_Q5_1_BYTES 24
/* IQ4_NL: f16 d, 16 nibble bytes as Q4_0. Value = d*shardlm_iq4nl[q]. */
#define SHARDLM_IQ4_NL_BYTES 18

/* Q2_K: 16 bytes of scales (low nibble: scale, high: min, for the 16
 * sub-blocks of 16), 64 bytes of 2-bit codes, f16 d, f16 dmin. Value
 * d*sc*q - dmin*m. Value e: code (qs[32*(e/128) + e%32] >> 2*((e%128)/32))
 * & 3, sub-block e/16. */
#define SHARDLM_Q2_K_BYTES 84
#define SHARDLM_Q2_K_QS 16
#define SHARDLM_Q2_K_D 80
/* Q3_K: 32 bytes of high bits (value e: bit (e/32) of hmask[e%32]), 64
 * bytes of low 2 bits (as Q2_K), 12 bytes of 6-bit scales (sub-blocks of
 * 16, stored + 32), f16 d. Value d*(sc - 32)*(q - 4), q = low | high << 2. */
#define SHARDLM_Q3_K_BYTES 110
#define SHARDLM_Q3_K_QS 32
#define SHARDLM_Q3_K_SC 96
#define SHARDLM_Q3_K_D 108
/* Q5_K: f16 d, f16 dmin, 12 bytes of scales/mins as Q4_K, 32 bytes of
 * fifth bits (value e: bit (e/32) of qh[e%32]), 128 nibble bytes as Q4_K.
 * Value d*sc*q - dmin*m. */
#define SHARDLM_Q5_K_BYTES 176
#define SHARDLM_Q5_K_QH 16
#define SHARDLM_Q5_K_QS 48
/* IQ4_XS: f16 d, u16 scales_h (2 high bits of each of the 8 sub-block
 * scales), 4 bytes scales_l (low nibbles: sub-block 2i low, 2i+1 high),
 * then 8 x 16 nibble bytes, one Q4_0-style group per sub-block of 32.
 * Value d*(ls - 32)*shardlm_iq4nl[q]. */
#define SHARDLM_IQ4_XS_BYTES 136
#define SHARDLM_IQ4_XS_QS 8

/* The 16 non-linear levels of IQ4_NL / IQ4_XS (ggml's kvalues_iq4nl). */
extern const int8_t shardlm_iq4nl[16];

static inline uint16_t shardlm_qb_rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t shardlm_qb_rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline float shardlm_qb_f16(const uint8_t *p) { return shardlm_f16_to_f32(shardlm_qb_rd16(p)); }

/* Scale k (0..15) of Q3_K, minus 32: the low 4 bits are the low nibbles of
 * bytes 0..7 (k < 8) or their high nibbles (k >= 8); the top 2 bits are
 * bits 2*(k/4).. of byte 8 + k%4. */
static inline int shardlm_q3_k_scale(const uint8_t *s, int k)
{
    int lo = k < 8 ? s[k] & 15 : s[k - 8] >> 4;
    int hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* All 16 Q3_K scales, still biased by +32 (0..63), unpacked a 32-bit word
 * (4 scales) at a time: out[k] - 32 == shardlm_q3_k_scale(s, k). */
static inline void shardlm_q3_k_scales_biased(const uint8_t *s, uint8_t out[16])
{
    uint32_t a[3], r[4];
    memcpy(a, s, 12);
    r[0] = (a[0] & 0x0f0f0f0fu) | (a[2] & 0x03030303u) << 4;
    r[1] = (a[1] & 0x0f0f0f0fu) | (a[2] >> 2 & 0x03030303u) << 4;
    r[2] = (a[0] >> 4 & 0x0f0f0f0fu) | (a[2] >> 4 & 0x03030303u) << 4;
    r[3] = (a[1] >> 4 & 0x0f0f0f0fu) | (a[2] >> 6 & 0x03030303u) << 4;
    memcpy(out, r, 16);
}

/* Scale of IQ4_XS sub-block ib (0..7), minus 32. */
static inline int shardlm_iq4_xs_scale(const uint8_t *blk, int ib)
{
    int lo = (blk[4 + ib / 2] >> (4 * (ib % 2))) & 15;
    int hi = (shardlm_qb_rd16(blk + 2) >> (2 * ib)) & 3;
    return (lo | hi << 4) - 32;
}

/* ---- quantiser helpers ---- */

static inline void shardlm_qb_put16(uint8_t *p, uint16_t h)
{
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* The fp16 nearest v, moved one step away from zero when its magnitude is
 * below |v|: so v / stored never exceeds the top code. */
static inline uint16_t shardlm_qb_f16_away(float v)
{
    uint16_t h = shardlm_f32_to_f16(v);
    if (fabsf(shardlm_f16_to_f32(h)) < fabsf(v) && (h & 0x7fffu) < 0x7c00u) h++;
    return h;
}

/* The largest fp16 not above v (v finite). */
static inline uint16_t shardlm_qb_f16_down(float v)
{
    uint16_t h = shardlm_f32_to_f16(v);
    if (shardlm_f16_to_f32(h) > v) {
        if (h & 0x8000u) h++; /* negative (or -0): larger magnitude */
        else h--;             /* positive: smaller */
    }
    return h;
}

/* nearbyint(v) clamped to [lo, hi]; comparisons first so that NaN or inf cannot make the
 * float-to-int conversion undefined (NaN gives lo). */
static inline int shardlm_qb_round(float v, int lo, int hi)
{
    if (!(v > (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    return (int)nearbyintf(v);
}

/* Rows of n values (n a multiple of the block) of the formats above. */
void shardlm_q5_dequant(shardlm_dtype t, const uint8_t *src, float *dst, size_t n);  /* quant_q5.c */
void shardlm_q5_quant(shardlm_dtype t, const float *src, uint8_t *dst, size_t n);
void shardlm_iq4_dequant(shardlm_dtype t, const uint8_t *src, float *dst, size_t n); /* quant_iq4.c */
void shardlm_iq4_quant(shardlm_dtype t, const float *src, uint8_t *dst, size_t n);
void shardlm_q2_k_dequant_block(const uint8_t *p, float *y); /* quant_k_low.c */
void shardlm_q3_k_dequant_block(const uint8_t *p, float *y);
void shardlm_q2_k_quant_block(const float *x, uint8_t *out);
void shardlm_q3_k_quant_block(const float *x, uint8_t *out);

#endif
