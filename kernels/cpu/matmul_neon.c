/* matmul_neon.c - ARM NEON kernels (AArch64): Q8_0/Q4_0 with the dot
 * product extension (sdot) where the compiler targets it, F32 with FMA.
 * F16/BF16 weights and the elementwise ops use the scalar code. One row x
 * one input at a time: simpler than the x86 tiles (not tuned; it has only
 * been syntax-checked with clang --target=aarch64, not run). */
#if defined(__aarch64__)
#include <arm_neon.h>

#include "cpu_internal.h"

/* Sum of 16 int8 products into 4 int32 lanes. */
static inline int32x4_t neon_dot16(int32x4_t acc, int8x16_t a, int8x16_t b)
{
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    int16x8_t hi = vmull_s8(vget_high_s8(a), vget_high_s8(b));
    return vpadalq_s16(vpadalq_s16(acc, lo), hi);
#endif
}

static float neon_q8_row(const uint8_t *wr, size_t nb, const int8_t *xq, const float *xd)
{
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (size_t b = 0; b < nb; b++, wr += SHARDLM_Q8_0_BYTES) {
        const int8_t *qw = (const int8_t *)(wr + 2), *qx = xq + b * SHARDLM_QK;
        int32x4_t s = neon_dot16(vdupq_n_s32(0), vld1q_s8(qw), vld1q_s8(qx));
        s = neon_dot16(s, vld1q_s8(qw + 16), vld1q_s8(qx + 16));
        float d = shardlm_f16_to_f32(shardlm_rd16(wr)) * xd[b];
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(s), d);
    }
    return vaddvq_f32(acc);
}

/* Nibbles minus 8 become signed int8 directly, so no offset correction. */
static float neon_q4_row(const uint8_t *wr, size_t nb, const int8_t *xq, const float *xd)
{
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (size_t b = 0; b < nb; b++, wr += SHARDLM_Q4_0_BYTES) {
        uint8x16_t q = vld1q_u8(wr + 2);
        int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, m4)), eight);
        int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), eight);
        const int8_t *qx = xq + b * SHARDLM_QK;
        int32x4_t s = neon_dot16(vdupq_n_s32(0), lo, vld1q_s8(qx));
        s = neon_dot16(s, hi, vld1q_s8(qx + 16));
        float d = shardlm_f16_to_f32(shardlm_rd16(wr)) * xd[b];
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(s), d);
    }
    return vaddvq_f32(acc);
}

static float neon_f32_row(const float *w, const float *x, size_t cols)
{
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
    size_t c = 0;
    for (; c + 8 <= cols; c += 8) {
        a0 = vfmaq_f32(a0, vld1q_f32(w + c), vld1q_f32(x + c));
        a1 = vfmaq_f32(a1, vld1q_f32(w + c + 4), vld1q_f32(x + c + 4));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; c < cols; c++) s += w[c] * x[c];
    return s;
}

static void neon_q8_0(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t nb = a->cols / SHARDLM_QK;
    for (size_t r = r0; r < r1; r++)
        for (size_t i = 0; i < a->n; i++)
            a->y[i * a->rows + r] = neon_q8_row(a->w + r * a->row_bytes, nb, a->xq + i * a->cols, a->xd + i * nb);
}

static void neon_q4_0(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t nb = a->cols / SHARDLM_QK;
    for (size_t r = r0; r < r1; r++)
        for (size_t i = 0; i < a->n; i++)
            a->y[i * a->rows + r] = neon_q4_row(a->w + r * a->row_bytes, nb, a->xq + i * a->cols, a->xd + i * nb);
}

static void neon_f32(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    for (size_t r = r0; r < r1; r++)
        for (size_t i = 0; i < a->n; i++)
            a->y[i * a->rows + r] = neon_f32_row((const float *)(a->w + r * a->row_bytes), a->x + i * a->cols, a->cols);
}

/* Borrowed from matmul_scalar.c through the scalar ops table. */
const shardlm_isa_ops shardlm_isa_neon = {
    .name = "neon",
    .q8_0 = neon_q8_0,
    .q4_0 = neon_q4_0,
    .f32 = neon_f32,
    .f16 = shardlm_scalar_f16, /* no NEON kernels of their own yet */
    .bf16 = shardlm_scalar_bf16,
    .quant_x = shardlm_scalar_quant_x,
    .rmsnorm = shardlm_ref_rmsnorm,
    .softmax = shardlm_ref_softmax,
    .silu_mul = shardlm_ref_silu_mul,
    SHARDLM_ISA_MORE_TYPES_SCALAR,
};
#endif
