/* matmul_scalar.c - the portable path: plain C kernels doing the same
 * arithmetic as the SIMD ones (integer block dot products on 8-bit
 * activations), used on CPUs without AVX2/NEON and as the tested fallback.
 * Each weight row is read once and dotted with every input. */
#include <math.h>

#include "cpu_internal.h"

/* Round half to even, as the SIMD converts do in the default rounding mode,
 * so every path quantises to the same bits. Input is within [-127, 127]. */
static int round_even(float v)
{
    float r = nearbyintf(v);
    return r >= 127.0f ? 127 : r <= -127.0f ? -127 : r == r ? (int)r : 0;
}

void shardlm_scalar_quant_x(const float *x, size_t cols, int8_t *q, float *d, float *s)
{
    for (size_t b = 0; b < cols / SHARDLM_QK; b++) {
        const float *xb = x + b * SHARDLM_QK;
        float amax = 0.0f;
        for (int k = 0; k < SHARDLM_QK; k++) amax = fmaxf(amax, fabsf(xb[k]));
        float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int sum = 0;
        for (int k = 0; k < SHARDLM_QK; k++) {
            int v = round_even(xb[k] * id);
            q[b * SHARDLM_QK + k] = (int8_t)v;
            sum += v;
        }
        d[b] = shardlm_act_scale(amax);
        s[b] = d[b] * (float)sum;
    }
}

/* F16/BF16/F32 weights: convert a piece of the row, dot it with each input. */
#define SCALAR_PIECE 256

static void scalar_float_rows(const shardlm_mm_args *a, size_t r0, size_t r1, shardlm_dtype t)
{
    float buf[SCALAR_PIECE];
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *wr = a->w + r * a->row_bytes;
        for (size_t i = 0; i < a->n; i++) a->y[i * a->rows + r] = 0.0f;
        for (size_t c0 = 0; c0 < a->cols; c0 += SCALAR_PIECE) {
            size_t len = a->cols - c0 < SCALAR_PIECE ? a->cols - c0 : SCALAR_PIECE;
            shardlm_dequant_row(t, wr + c0 * (t == SHARDLM_DT_F32 ? 4 : 2), buf, len);
            for (size_t i = 0; i < a->n; i++) {
                const float *xi = a->x + i * a->cols + c0;
                float s = 0.0f;
                for (size_t k = 0; k < len; k++) s += buf[k] * xi[k];
                a->y[i * a->rows + r] += s;
            }
        }
    }
}

static void scalar_f32(const shardlm_mm_args *a, size_t r0, size_t r1) { scalar_float_rows(a, r0, r1, SHARDLM_DT_F32); }
void shardlm_scalar_f16(const shardlm_mm_args *a, size_t r0, size_t r1) { scalar_float_rows(a, r0, r1, SHARDLM_DT_F16); }
void shardlm_scalar_bf16(const shardlm_mm_args *a, size_t r0, size_t r1) { scalar_float_rows(a, r0, r1, SHARDLM_DT_BF16); }

static float q8_0_row_dot(const uint8_t *wr, size_t nb, const int8_t *xq, const float *xd)
{
    float acc = 0.0f;
    for (size_t b = 0; b < nb; b++, wr += SHARDLM_Q8_0_BYTES) {
        const int8_t *qw = (const int8_t *)(wr + 2), *qx = xq + b * SHARDLM_QK;
        int32_t isum = 0;
        for (int k = 0; k < SHARDLM_QK; k++) isum += qw[k] * qx[k];
        acc += (float)isum * (shardlm_f16_to_f32(shardlm_rd16(wr)) * xd[b]);
    }
    return acc;
}

/* Q4_0 stores w + 8 as a nibble; sum (nib - 8) * q = sum nib * q - 8 sum q,
 * and the second term is the precomputed activation block sum. */
static float q4_0_row_dot(const uint8_t *wr, size_t nb, const int8_t *xq, const float *xd, const float *xs)
{
    float acc = 0.0f, corr = 0.0f;
    for (size_t b = 0; b < nb; b++, wr += SHARDLM_Q4_0_BYTES) {
        const uint8_t *qw = wr + 2;
        const int8_t *qx = xq + b * SHARDLM_QK;
        int32_t isum = 0;
        for (int k = 0; k < SHARDLM_QK / 2; k++)
            isum += (qw[k] & 0x0f) * qx[k] + (qw[k] >> 4) * qx[k + SHARDLM_QK / 2];
        float dw = shardlm_f16_to_f32(shardlm_rd16(wr));
        acc += (float)isum * (dw * xd[b]);
        corr += dw * xs[b];
    }
    return acc - 8.0f * corr;
}

static void scalar_q8_0(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t nb = a->cols / SHARDLM_QK;
    for (size_t r = r0; r < r1; r++)
        for (size_t i = 0; i < a->n; i++)
            a->y[i * a->rows + r] = q8_0_row_dot(a->w + r * a->row_bytes, nb, a->xq + i * a->cols, a->xd + i * nb);
}

static void scalar_q4_0(const shardlm_mm_args *a, size_t r0, size_t r1)
{
    size_t nb = a->cols / SHARDLM_QK;
    for (size_t r = r0; r < r1; r++)
        for (size_t i = 0; i < a->n; i++)
            a->y[i * a->rows + r] = q4_0_row_dot(a->w + r * a->row_bytes, nb, a->xq + i * a->cols,
                                                 a->xd + i * nb, a->xs + i * nb);
}

const shardlm_isa_ops shardlm_isa_scalar = {
    .name = "scalar",
    .f32 = scalar_f32,
    .f16 = shardlm_scalar_f16,
    .bf16 = shardlm_scalar_bf16,
    .q8_0 = scalar_q8_0,
    .q4_0 = scalar_q4_0,
    .quant_x = shardlm_scalar_quant_x,
    .rmsnorm = shardlm_ref_rmsnorm,
    .softmax = shardlm_ref_softmax,
    .silu_mul = shardlm_ref_silu_mul,
    SHARDLM_ISA_MORE_TYPES_SCALAR,
};
