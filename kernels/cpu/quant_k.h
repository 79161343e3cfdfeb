/* quant_k.h - the ggml k-quant super-block formats Q4_K and Q6_K (256
 * values per block): byte layouts (the other k-quants' are in
 * quant_blocks.h), row conversion of every k-quant (quant_k.c) and the
 * Q4_K/Q6_K matrix product kernels (matmul_k.c) that the dispatcher in
 * matmul.c picks. */
#ifndef SHARDLM_QUANT_K_H
#define SHARDLM_QUANT_K_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_internal.h"

/* Q4_K: fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins for the 8
 * sub-blocks of 32, then 128 bytes of nibbles. Value = d*sc*q - dmin*m. */
#define SHARDLM_Q4_K_BYTES (2 + 2 + 12 + SHARDLM_QK_K / 2)
/* Q6_K: 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 int8 scales
 * (one per sub-block of 16), fp16 d. Value = d*sc*(q - 32). */
#define SHARDLM_Q6_K_BYTES (SHARDLM_QK_K / 2 + SHARDLM_QK_K / 4 + SHARDLM_QK_K / 16 + 2)
#define SHARDLM_Q6_K_QH 128 /* offset of the high bits */
#define SHARDLM_Q6_K_SC 192 /* offset of the scales */
#define SHARDLM_Q6_K_D 208  /* offset of d */

/* Scale and min (each 6 bits) of sub-block j (0..7) from the 12 packed
 * bytes: sub-blocks 0-3 keep theirs in the low 6 bits of bytes j and j+4;
 * 4-7 keep the low 4 bits in byte j+4 (scale low nibble, min high) and the
 * top 2 bits in the spare top bits of bytes j-4 (scale) and j (min). */
static inline void shardlm_q4_k_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

void shardlm_quant_k_dequant(shardlm_dtype t, const uint8_t *src, float *dst, size_t n);
void shardlm_quant_k_quant(shardlm_dtype t, const float *src, uint8_t *dst, size_t n);

/* The matmul kernel for Q4_K/Q6_K on the path `o` (scalar or a SIMD one);
 * it reads the same 8-bit activations (blocks of 32) as Q8_0. */
shardlm_mm_fn shardlm_matmul_k_pick(const shardlm_isa_ops *o, shardlm_dtype t);

#if defined(__x86_64__)
/* The AVX-512 VNNI kernels (matmul_avx512_k.c): the AVX2 ones' bits. */
void shardlm_avx512vnni_q4_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx512vnni_q6_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx512vnni_q5_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx512vnni_q3_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx512vnni_q2_k(const shardlm_mm_args *a, size_t r0, size_t r1);
void shardlm_avx2_q6_k(const shardlm_mm_args *a, size_t r0, size_t r1); /* matmul_k.c */
#endif

#endif
