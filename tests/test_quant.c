/* test_quant.c - element types: names and sizes, IEEE half and bfloat16
 * conversion on known values (subnormals, inf, NaN, ties), and the Q8_0 /
 * Q4_0 block formats (exact bytes of hand-made blocks, error bounds). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "shardlm_kernels.h"

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

Test(quant, dtype_table)
{
    cr_assert_str_eq(shardlm_dtype_name(SHARDLM_DT_Q4_0), "q4_0");
    cr_assert_str_eq(shardlm_dtype_name(SHARDLM_DT_BF16), "bf16");
    cr_assert_str_eq(shardlm_dtype_name(13), "q5_k");
    cr_assert_str_eq(shardlm_dtype_name(16), "iq2_xxs"); /* known, not computable */
    cr_assert_str_eq(shardlm_dtype_name(99), "type#99");
    cr_assert_eq(shardlm_dtype_parse("q8_0"), SHARDLM_DT_Q8_0);
    cr_assert_eq(shardlm_dtype_parse("f16"), SHARDLM_DT_F16);
    cr_assert_eq(shardlm_dtype_parse("q5_k"), 13);
    cr_assert_eq(shardlm_dtype_parse("Q5_K"), 13, "ggml spells it q5_K");
    cr_assert_eq(shardlm_dtype_parse("q9_9"), -1);
    cr_assert(shardlm_dtype_supported(30) && shardlm_dtype_supported(3) && shardlm_dtype_supported(13));
    cr_assert(!shardlm_dtype_supported(16) && !shardlm_dtype_supported(9) && !shardlm_dtype_supported(99));
    cr_assert_eq(shardlm_dtype_block_bytes(SHARDLM_DT_Q8_0), 34);
    cr_assert_eq(shardlm_dtype_block_bytes(SHARDLM_DT_Q4_0), 18);
    cr_assert_eq(shardlm_dtype_block_elems(SHARDLM_DT_Q4_0), 32);
    cr_assert_eq(shardlm_dtype_block_elems(99), 0);
    cr_assert_eq(shardlm_dtype_row_bytes(SHARDLM_DT_Q8_0, 64), 68);
    cr_assert_eq(shardlm_dtype_row_bytes(SHARDLM_DT_Q4_0, 96), 54);
    cr_assert_eq(shardlm_dtype_row_bytes(SHARDLM_DT_Q4_0, 33), 0);
    cr_assert_eq(shardlm_dtype_row_bytes(SHARDLM_DT_F16, 3), 6);
    cr_assert_eq(shardlm_dtype_row_bytes(SHARDLM_DT_F32, 5), 20);
    cr_assert_eq(shardlm_dtype_row_bytes(99, 32), 0);
}

Test(quant, f32_to_f16_known)
{
    cr_assert_eq(shardlm_f32_to_f16(1.0f), 0x3c00);
    cr_assert_eq(shardlm_f32_to_f16(-2.0f), 0xc000);
    cr_assert_eq(shardlm_f32_to_f16(0.5f), 0x3800);
    cr_assert_eq(shardlm_f32_to_f16(-0.0f), 0x8000);
    cr_assert_eq(shardlm_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(shardlm_f32_to_f16(65519.99f), 0x7bff);
    cr_assert_eq(shardlm_f32_to_f16(65520.0f), 0x7c00, "the tie above the max rounds to even = inf");
    cr_assert_eq(shardlm_f32_to_f16(1e10f), 0x7c00);
    cr_assert_eq(shardlm_f32_to_f16(INFINITY), 0x7c00);
    cr_assert_eq(shardlm_f32_to_f16(-INFINITY), 0xfc00);
    uint16_t n = shardlm_f32_to_f16(NAN);
    cr_assert((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0, "NaN stays NaN: %04x", n);
    n = shardlm_f32_to_f16(bits_f(0x7f800001)); /* NaN whose payload is all in the dropped bits */
    cr_assert((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0, "signalling NaN stays NaN: %04x", n);
    /* ties to even between normals */
    cr_assert_eq(shardlm_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    cr_assert_eq(shardlm_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    cr_assert_eq(shardlm_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    /* subnormals */
    cr_assert_eq(shardlm_f32_to_f16(0x1p-24f), 0x0001);
    cr_assert_eq(shardlm_f32_to_f16(0x1p-25f), 0x0000, "half the smallest subnormal ties to 0");
    cr_assert_eq(shardlm_f32_to_f16(nextafterf(0x1p-25f, 1.0f)), 0x0001);
    cr_assert_eq(shardlm_f32_to_f16(3 * 0x1p-25f), 0x0002, "1.5 ulp ties to even 2");
    cr_assert_eq(shardlm_f32_to_f16(5 * 0x1p-25f), 0x0002, "2.5 ulp ties to even 2");
    cr_assert_eq(shardlm_f32_to_f16(1023 * 0x1p-24f), 0x03ff);
    cr_assert_eq(shardlm_f32_to_f16(0x1p-14f), 0x0400);
    cr_assert_eq(shardlm_f32_to_f16(0x1p-14f - 0x1p-26f), 0x0400, "rounds up into the smallest normal");
    cr_assert_eq(shardlm_f32_to_f16(-0x1p-24f), 0x8001);
    cr_assert_eq(shardlm_f32_to_f16(1e-30f), 0x0000);
    cr_assert_eq(shardlm_f32_to_f16(bits_f(0x00000001)), 0x0000, "f32 subnormal");
}

Test(quant, f16_to_f32_known)
{
    cr_assert_eq(shardlm_f16_to_f32(0x3c00), 1.0f);
    cr_assert_eq(shardlm_f16_to_f32(0xc000), -2.0f);
    cr_assert_eq(shardlm_f16_to_f32(0x3555), 0.333251953125f);
    cr_assert_eq(shardlm_f16_to_f32(0x7bff), 65504.0f);
    cr_assert_eq(shardlm_f16_to_f32(0x0001), 0x1p-24f);
    cr_assert_eq(shardlm_f16_to_f32(0x03ff), 1023 * 0x1p-24f);
    cr_assert_eq(shardlm_f16_to_f32(0x8001), -0x1p-24f);
    cr_assert_eq(f_bits(shardlm_f16_to_f32(0x8000)), 0x80000000u);
    cr_assert(isinf(shardlm_f16_to_f32(0x7c00)) && shardlm_f16_to_f32(0x7c00) > 0);
    cr_assert(isinf(shardlm_f16_to_f32(0xfc00)) && shardlm_f16_to_f32(0xfc00) < 0);
    cr_assert(isnan(shardlm_f16_to_f32(0x7e00)));
    cr_assert(isnan(shardlm_f16_to_f32(0x7c01)));
}

Test(quant, f16_round_trip_all)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = shardlm_f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        cr_assert_eq(shardlm_f32_to_f16(f), h, "half %04x -> %a -> %04x", h, f, shardlm_f32_to_f16(f));
    }
}

/* Against the exact midpoints between neighbouring halves: just below rounds
 * down, just above rounds up. */
Test(quant, f16_midpoints)
{
    for (uint32_t h = 0; h < 0x7bff; h += 7) {
        double lo = shardlm_f16_to_f32((uint16_t)h), hi = shardlm_f16_to_f32((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2); /* exact in f32 */
        cr_assert_eq(shardlm_f32_to_f16(nextafterf(mid, 0.0f)), h);
        cr_assert_eq(shardlm_f32_to_f16(nextafterf(mid, INFINITY)), h + 1);
        cr_assert_eq(shardlm_f32_to_f16(mid), (h & 1) ? h + 1 : h, "tie at %04x", h);
    }
}

Test(quant, bf16_known)
{
    cr_assert_eq(shardlm_f32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(shardlm_f32_to_bf16(-2.0f), 0xc000);
    cr_assert_eq(shardlm_f32_to_bf16(bits_f(0x3f808000)), 0x3f80, "tie to even (down)");
    cr_assert_eq(shardlm_f32_to_bf16(bits_f(0x3f818000)), 0x3f82, "tie to even (up)");
    cr_assert_eq(shardlm_f32_to_bf16(bits_f(0x3f808001)), 0x3f81);
    cr_assert_eq(shardlm_f32_to_bf16(bits_f(0x3f807fff)), 0x3f80);
    cr_assert_eq(shardlm_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(shardlm_f32_to_bf16(bits_f(0x7f7fffff)), 0x7f80, "max float rounds to inf");
    uint16_t n = shardlm_f32_to_bf16(bits_f(0x7f800001));
    cr_assert((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0, "NaN stays NaN: %04x", n);
    cr_assert_eq(shardlm_f32_to_bf16(bits_f(0x00000001)), 0x0000, "tiny subnormal rounds to 0");
    cr_assert_eq(shardlm_bf16_to_f32(0x3f80), 1.0f);
    cr_assert_eq(shardlm_bf16_to_f32(0x4049), 3.140625f);
    cr_assert(isnan(shardlm_bf16_to_f32(0x7fc0)));
}

/* d = 1 exactly (absmax 127), so each q is round-half-away(x). */
Test(quant, q8_0_hand_block)
{
    float x[32] = {0};
    x[0] = -127.0f;
    x[1] = 3.5f;
    x[2] = -2.5f;
    x[3] = 0.49f;
    x[4] = 126.6f;
    x[5] = -0.5f;
    x[31] = 64.0f;
    uint8_t b[34];
    shardlm_quant_row(SHARDLM_DT_Q8_0, x, b, 32);
    uint8_t want[34] = {0x00, 0x3c, 0x81, 4, 0xfd, 0, 127, 0xff};
    want[2 + 31] = 64;
    cr_assert_arr_eq(b, want, 34);
    float y[32];
    shardlm_dequant_row(SHARDLM_DT_Q8_0, b, y, 32);
    cr_assert_eq(y[0], -127.0f);
    cr_assert_eq(y[1], 4.0f);
    cr_assert_eq(y[5], -1.0f, "roundf(-0.5) is -1: half away from zero");
    /* an all-zero block has d = 0 and all-zero quants */
    float z[32] = {0};
    shardlm_quant_row(SHARDLM_DT_Q8_0, z, b, 32);
    uint8_t zeros[34] = {0};
    cr_assert_arr_eq(b, zeros, 34);
}

/* x[j] = j - 16: the largest magnitude is -16, so d = -16 / -8 = 2 and
 * q = min(15, trunc(x/2 + 8.5)). */
Test(quant, q4_0_hand_block)
{
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16);
    uint8_t b[18];
    shardlm_quant_row(SHARDLM_DT_Q4_0, x, b, 32);
    const uint8_t want[18] = {0x00, 0x40, 0x80, 0x91, 0x91, 0xa2, 0xa2, 0xb3, 0xb3, 0xc4,
                              0xc4, 0xd5, 0xd5, 0xe6, 0xe6, 0xf7, 0xf7, 0xf8};
    cr_assert_arr_eq(b, want, 18);
    float y[32];
    shardlm_dequant_row(SHARDLM_DT_Q4_0, b, y, 32);
    cr_assert_eq(y[0], -16.0f, "the extreme element is exact");
    cr_assert_eq(y[1], -14.0f);
    cr_assert_eq(y[16], 0.0f);
    cr_assert_eq(y[31], 14.0f, "15 is clipped to the top bucket 7*d");
    /* a positive extreme gives a negative d */
    float p[32] = {0};
    p[5] = 8.0f;
    p[6] = -8.0f;
    p[7] = 2.0f;
    shardlm_quant_row(SHARDLM_DT_Q4_0, p, b, 32);
    cr_assert_eq(b[0] | (b[1] << 8), 0xbc00, "d = 8 / -8 = -1");
    cr_assert_eq(b[2 + 5] & 0xf, 0, "q = trunc(8 * -1 + 8.5) = 0");
    cr_assert_eq(b[2 + 6] & 0xf, 15, "q = min(15, 16)");
    cr_assert_eq(b[2 + 7] & 0xf, 6, "q = trunc(-2 + 8.5)");
}

/* Deterministic values of varied scale per block. */
static void fill_random(float *x, size_t n, uint32_t seed)
{
    uint32_t s = seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        float scale = (float)(1u << ((i / 32) % 12)) * 1e-3f;
        x[i] = ((float)(s >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
    }
}

/* Q8_0: the quants come from the f32 scale d = absmax/127, the stored scale
 * is dh = fp16(d), so each element is off by at most |d|/2 (rounding) plus
 * 127*|d - dh| (scale rounding). */
Test(quant, q8_0_error_bound)
{
    enum { N = 32 * 256 };
    static float x[N], y[N];
    static uint8_t q[N / 32 * 34];
    fill_random(x, N, 1);
    shardlm_quant_row(SHARDLM_DT_Q8_0, x, q, N);
    shardlm_dequant_row(SHARDLM_DT_Q8_0, q, y, N);
    for (size_t b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        float d = amax / 127.0f;
        float dh = shardlm_f16_to_f32((uint16_t)(q[b * 34] | (q[b * 34 + 1] << 8)));
        cr_assert_eq(dh, shardlm_f16_to_f32(shardlm_f32_to_f16(d)));
        double tol = d / 2 + 127 * fabs(d - dh) + 1e-6 * amax;
        for (int j = 0; j < 32; j++)
            cr_assert_leq(fabs(x[b * 32 + j] - y[b * 32 + j]), tol, "block %zu elem %d", b, j);
    }
}

/* Q4_0: d = m/-8 where m is the element of largest magnitude. With
 * dh = fp16(d): elements with x/d < 7.5 are off by at most |d|/2 + 8|d - dh|;
 * those with x/d in [7.5, 8] are clipped to the top bucket 7*dh and are off
 * by at most |d| + 8|d - dh|; m itself comes back as -8*dh. */
Test(quant, q4_0_error_bound)
{
    enum { N = 32 * 256 };
    static float x[N], y[N];
    static uint8_t q[N / 32 * 18];
    fill_random(x, N, 2);
    shardlm_quant_row(SHARDLM_DT_Q4_0, x, q, N);
    shardlm_dequant_row(SHARDLM_DT_Q4_0, q, y, N);
    int clipped = 0;
    for (size_t b = 0; b < N / 32; b++) {
        float m = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(x[b * 32 + j]) > fabsf(m)) m = x[b * 32 + j];
        float d = m / -8.0f;
        float dh = shardlm_f16_to_f32((uint16_t)(q[b * 18] | (q[b * 18 + 1] << 8)));
        double slack = 8 * fabs(d - dh) + 1e-6 * fabs(m);
        for (int j = 0; j < 32; j++) {
            float xv = x[b * 32 + j], err = fabsf(xv - y[b * 32 + j]);
            int top = xv / d >= 7.5f;
            clipped += top;
            cr_assert_leq(err, (top ? fabsf(d) : fabsf(d) / 2) + slack, "block %zu elem %d", b, j);
            if (xv == m) cr_assert_eq(y[b * 32 + j], -8 * dh);
        }
    }
    cr_assert_gt(clipped, 0, "the data should exercise the clipped top bucket");
}

Test(quant, float_rows_round_trip)
{
    float x[64], y[64];
    fill_random(x, 64, 3);
    uint8_t b[256];
    shardlm_quant_row(SHARDLM_DT_F32, x, b, 64);
    shardlm_dequant_row(SHARDLM_DT_F32, b, y, 64);
    cr_assert_arr_eq(x, y, sizeof x);
    shardlm_quant_row(SHARDLM_DT_F16, x, b, 64);
    shardlm_dequant_row(SHARDLM_DT_F16, b, y, 64);
    for (int i = 0; i < 64; i++) {
        cr_assert_eq(b[2 * i] | (b[2 * i + 1] << 8), shardlm_f32_to_f16(x[i]), "little-endian halves");
        cr_assert_leq(fabsf(x[i] - y[i]), fabsf(x[i]) * 0x1p-11f + 0x1p-25f);
    }
    shardlm_quant_row(SHARDLM_DT_BF16, x, b, 64);
    shardlm_dequant_row(SHARDLM_DT_BF16, b, y, 64);
    for (int i = 0; i < 64; i++) cr_assert_leq(fabsf(x[i] - y[i]), fabsf(x[i]) * 0x1p-8f);
}
