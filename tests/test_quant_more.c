/* test_quant_more.c - the block types Q4_1, Q5_0, Q5_1, IQ4_NL (32 values)
 * and Q2_K, Q3_K, Q5_K, IQ4_XS (256): exact dequantisation of hand-built
 * blocks (bytes written here from ggml's format description, expected
 * values decoded independently here, a few worked by hand), the reference
 * quantisers' stated error bounds, and the type table. Kernels against the
 * reference are in test_kernels.c; bitwise agreement with ggml itself in
 * tests/ggml/ggml_xcheck.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_kernels.h"
#include "test_util.h"

/* ggml's kvalues_iq4nl, copied from its format description. */
static const int kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static float f16(const uint8_t *p) { return shardlm_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }
static uint32_t u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void pattern(uint8_t *p, int n, int mul, int add)
{
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(i * mul + add);
}

static void dequant(shardlm_dtype t, const uint8_t *b, float *y, size_t n)
{
    for (size_t k = 0; k < n; k++) y[k] = NAN;
    shardlm_dequant_row(t, b, y, n);
}

/* ---- 32-value blocks ---- */

/* Nibble of element e (0..31) of 16 bytes: low nibbles first. */
static int nib(const uint8_t *qs, int e) { return e < 16 ? qs[e] & 15 : qs[e - 16] >> 4; }

Test(quant_more, q4_1_hand_built)
{
    uint8_t b[20] = {0x00, 0x38, 0x00, 0xBC}; /* d = 0.5, m = -1 */
    pattern(b + 4, 16, 37, 11);
    float y[32];
    dequant(SHARDLM_DT_Q4_1, b, y, 32);
    for (int e = 0; e < 32; e++) cr_assert_eq(y[e], 0.5f * (float)nib(b + 4, e) - 1.0f, "value %d: %g", e, y[e]);
    cr_assert_eq(y[0], 4.5f);   /* byte 0 = 11: low nibble 11 -> 0.5*11 - 1 */
    cr_assert_eq(y[16], -1.0f); /* its high nibble 0 */
    cr_assert_eq(y[17], 0.5f);  /* byte 1 = 48 = 0x30: high nibble 3 -> 1.5 - 1 */
}

Test(quant_more, q5_0_hand_built)
{
    uint8_t b[22] = {0x00, 0x34, 0x0F, 0x0F, 0xA5, 0xA5}; /* d = 0.25, qh = 0xA5A50F0F */
    pattern(b + 6, 16, 37, 11);
    float y[32];
    dequant(SHARDLM_DT_Q5_0, b, y, 32);
    uint32_t qh = u32(b + 2);
    for (int e = 0; e < 32; e++) {
        int q = nib(b + 6, e) | (int)((qh >> e) & 1) << 4;
        cr_assert_eq(y[e], 0.25f * (float)(q - 16), "value %d: %g", e, y[e]);
    }
    cr_assert_eq(y[0], 2.75f); /* nibble 11, fifth bit 1: 27 - 16 = 11 */
    cr_assert_eq(y[16], 0.0f); /* nibble 0, bit 16 (0xA5 & 1) set: 16 - 16 */
    cr_assert_eq(y[4], -0.25f); /* byte 4 = 159 = 0x9F: nibble 15, bit 4 clear: 15 - 16 = -1 */
}

Test(quant_more, q5_1_hand_built)
{
    uint8_t b[24] = {0x00, 0x38, 0x00, 0x40, 0x0F, 0x0F, 0xA5, 0xA5}; /* d = 0.5, m = 2 */
    pattern(b + 8, 16, 37, 11);
    float y[32];
    dequant(SHARDLM_DT_Q5_1, b, y, 32);
    uint32_t qh = u32(b + 4);
    for (int e = 0; e < 32; e++) {
        int q = nib(b + 8, e) | (int)((qh >> e) & 1) << 4;
        cr_assert_eq(y[e], 0.5f * (float)q + 2.0f, "value %d: %g", e, y[e]);
    }
    cr_assert_eq(y[0], 15.5f); /* 27 * 0.5 + 2 */
}

Test(quant_more, iq4_nl_hand_built)
{
    uint8_t b[18] = {0x00, 0x40}; /* d = 2 */
    pattern(b + 2, 16, 37, 11);
    float y[32];
    dequant(SHARDLM_DT_IQ4_NL, b, y, 32);
    for (int e = 0; e < 32; e++) cr_assert_eq(y[e], 2.0f * (float)kv[nib(b + 2, e)], "value %d: %g", e, y[e]);
    cr_assert_eq(y[0], 76.0f);    /* level 11 = 38 */
    cr_assert_eq(y[16], -254.0f); /* level 0 = -127 */
}

/* ---- 256-value super-blocks ---- */

/* The 2-bit code of value e among 64 bytes: byte 32*(e/128) + e%32, bits
 * 2*((e%128)/32). */
static int code2(const uint8_t *qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3; }

Test(quant_more, q2_k_hand_built)
{
    uint8_t b[84];
    for (int j = 0; j < 16; j++) b[j] = (uint8_t)(j | (15 - j) << 4); /* scale j, min 15 - j */
    pattern(b + 16, 64, 29, 3);
    b[80] = 0x00, b[81] = 0x38, b[82] = 0x00, b[83] = 0x34; /* d = 0.5, dmin = 0.25 */
    float y[256];
    dequant(SHARDLM_DT_Q2_K, b, y, 256);
    for (int e = 0; e < 256; e++) {
        int j = e / 16;
        float want = 0.5f * (float)j * (float)code2(b + 16, e) - 0.25f * (float)(15 - j);
        cr_assert_eq(y[e], want, "value %d: %g, want %g", e, y[e], want);
    }
    /* value 255: sub-block 15 (scale 15, min 0), byte 32 + 31 = 63 -> 63*29+3
     * = 1830 mod 256 = 38 = 0b00100110, bits 6-7: 0 -> 0; value 100:
     * sub-block 6, byte 4 = 119 = 0b01110111, bits 6-7 = 1: 0.5*6*1 - 0.25*9. */
    cr_assert_eq(y[255], 0.0f);
    cr_assert_eq(y[100], 0.75f);
}

/* ggml's Q3_K scale unpacking, word-wise as ggml writes it: bytes 0-3 and
 * 4-7 give low nibbles (scales 0-7) and high nibbles (8-15), bytes 8-11
 * the 2-bit tops. */
static void q3k_scales(const uint8_t *s, int out[16])
{
    uint32_t a[3], r[4];
    memcpy(a, s, 12);
    r[0] = (a[0] & 0x0f0f0f0f) | ((a[2] & 0x03030303) << 4);
    r[1] = (a[1] & 0x0f0f0f0f) | (((a[2] >> 2) & 0x03030303) << 4);
    r[2] = ((a[0] >> 4) & 0x0f0f0f0f) | (((a[2] >> 4) & 0x03030303) << 4);
    r[3] = ((a[1] >> 4) & 0x0f0f0f0f) | (((a[2] >> 6) & 0x03030303) << 4);
    for (int k = 0; k < 16; k++) out[k] = (int)((r[k / 4] >> (8 * (k % 4))) & 0xff) - 32;
}

Test(quant_more, q3_k_hand_built)
{
    uint8_t b[110];
    pattern(b, 32, 13, 5);       /* hmask */
    pattern(b + 32, 64, 29, 3);  /* low 2 bits */
    pattern(b + 96, 12, 53, 17); /* scales */
    b[108] = 0x00, b[109] = 0xB8; /* d = -0.5 */
    int sc[16];
    q3k_scales(b + 96, sc);
    float y[256];
    dequant(SHARDLM_DT_Q3_K, b, y, 256);
    for (int e = 0; e < 256; e++) {
        int q = code2(b + 32, e) - ((b[e % 32] >> (e / 32)) & 1 ? 0 : 4);
        float want = -0.5f * (float)sc[e / 16] * (float)q;
        cr_assert_eq(y[e], want, "value %d: %g, want %g", e, y[e], want);
    }
    /* scale 0: byte 0 = 17 (low nibble 1), byte 8 = 8*53+17 = 441 mod 256
     * = 185 = 0b10111001 (bits 0-1: 1) -> 1 | 1 << 4 = 17 - 32 = -15. Value
     * 0: code 3 & 3 = 3, hmask byte 0 = 5 bit 0 set -> q = 3: -0.5 * -15 * 3. */
    cr_assert_eq(sc[0], -15);
    cr_assert_eq(y[0], 22.5f);
}

/* Q4_K/Q5_K 6-bit scale and min of sub-block j, as in test_quant_k.c. */
static void k4_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    *sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
    *m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
}

Test(quant_more, q5_k_hand_built)
{
    uint8_t b[176] = {0x00, 0x38, 0x00, 0x34}; /* d = 0.5, dmin = 0.25 */
    static const uint8_t scales[12] = {0x41, 0x82, 0xC3, 0x8A, 0x40, 0x45, 0xFF, 0x0C, 0xF1, 0x01, 0x0F, 0x1F};
    memcpy(b + 4, scales, 12);
    pattern(b + 16, 32, 7, 1);    /* fifth bits */
    pattern(b + 48, 128, 37, 11); /* nibbles */
    float y[256];
    dequant(SHARDLM_DT_Q5_K, b, y, 256);
    for (int e = 0; e < 256; e++) {
        int j = e / 32, l = e % 32, sc, m;
        k4_scale_min(b + 4, j, &sc, &m);
        int byte = b[48 + 32 * (j / 2) + l];
        int q = (j % 2 ? byte >> 4 : byte & 15) | ((b[16 + l] >> j) & 1) << 4;
        float want = 0.5f * (float)sc * (float)q - 0.25f * (float)m;
        cr_assert_eq(y[e], want, "value %d: %g, want %g", e, y[e], want);
    }
    /* value 0: sub-block 0 (scale 1, min 0), nibble 11, fifth bit of qh[0]
     * = 1 -> 27 * 0.5 = 13.5. */
    cr_assert_eq(y[0], 13.5f);
}

Test(quant_more, iq4_xs_hand_built)
{
    uint8_t b[136] = {0x00, 0x38, 0x6C, 0x1B, 0x21, 0x43, 0x65, 0x87}; /* d = 0.5, scales_h 0x1B6C */
    pattern(b + 8, 128, 37, 11);
    float y[256];
    dequant(SHARDLM_DT_IQ4_XS, b, y, 256);
    for (int e = 0; e < 256; e++) {
        int ib = e / 32, ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 15) | ((0x1B6C >> (2 * ib)) & 3) << 4;
        float want = 0.5f * (float)(ls - 32) * (float)kv[nib(b + 8 + 16 * ib, e % 32)];
        cr_assert_eq(y[e], want, "value %d: %g, want %g", e, y[e], want);
    }
    /* sub-block 0: low nibble of 0x21 = 1, bits 0-1 of 0x1B6C = 0 -> ls 1,
     * scale -31; value 0 takes level 11 (38): 0.5 * -31 * 38. */
    cr_assert_eq(y[0], -589.0f);
}

/* ---- quantiser error bounds (stated in the quant_*.c files) ---- */

/* The bound for value e of a quantised row, from its stored bytes. */
static double bound_for(shardlm_dtype t, const uint8_t *row, int e)
{
    size_t be = shardlm_dtype_block_elems(t), bb = shardlm_dtype_block_bytes(t);
    const uint8_t *b = row + (size_t)e / be * bb;
    int k = (int)((size_t)e % be);
    switch (t) {
    case SHARDLM_DT_Q4_1:
    case SHARDLM_DT_Q5_1: return f16(b) / 2.0;
    case SHARDLM_DT_Q5_0: return fabs(f16(b));
    case SHARDLM_DT_IQ4_NL: return 14.0 * fabs(f16(b));
    case SHARDLM_DT_Q2_K: return ((b[k / 16] & 15) / 2.0 + 1.5) * f16(b + 80) + f16(b + 82) / 2.0;
    case SHARDLM_DT_Q3_K: {
        int sc[16];
        q3k_scales(b + 96, sc);
        double d = f16(b + 108);
        return fabs(d * sc[k / 16]) + 2.0 * d;
    }
    case SHARDLM_DT_Q5_K: {
        int sc, m;
        k4_scale_min(b + 4, k / 32, &sc, &m);
        return (sc / 2.0 + 16.0) * f16(b) + f16(b + 2) / 2.0;
    }
    case SHARDLM_DT_IQ4_XS: {
        int ib = k / 32, ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 15) | ((b[2] | b[3] << 8) >> (2 * ib) & 3) << 4;
        double d = f16(b);
        return 14.0 * fabs(d * (ls - 32)) + 63.5 * d;
    }
    default: cr_assert_fail("no bound for %s", shardlm_dtype_name(t)); return 0;
    }
}

/* The offset (min) a value carries, whose f32 rounding the bound allows for. */
static double offset_for(shardlm_dtype t, const uint8_t *row, int e)
{
    size_t be = shardlm_dtype_block_elems(t), bb = shardlm_dtype_block_bytes(t);
    const uint8_t *b = row + (size_t)e / be * bb;
    if (t == SHARDLM_DT_Q4_1 || t == SHARDLM_DT_Q5_1) return fabs(f16(b + 2));
    if (t == SHARDLM_DT_Q2_K) return f16(b + 82) * 15.0;
    if (t == SHARDLM_DT_Q5_K) return f16(b + 2) * 63.0;
    return 0.0;
}

/* Every value within its bound on six shapes of data, and the RMS error at
 * most rms_max x the row's max |x| (a measured figure with margin). */
static void check_bound(shardlm_dtype t, double rms_max)
{
    enum { N = 2048 };
    float x[N], y[N];
    uint8_t q[N / 32 * 24];
    for (int kind = 0; kind < 6; kind++) {
        for (int i = 0; i < N; i++) {
            float u = tu_frand();
            x[i] = kind == 0 ? u : kind == 1 ? u * (i % 97 == 0 ? 50.0f : 1.0f) : kind == 2 ? fabsf(u) + 3.0f
                   : kind == 3 ? -fabsf(u) * 1e-3f : kind == 4 ? 0.0f : u * (float)(i / 256 + 1) * 1e-2f;
        }
        shardlm_quant_row(t, x, q, N);
        shardlm_dequant_row(t, q, y, N);
        double se = 0.0, amax = 0.0;
        for (int i = 0; i < N; i++) {
            double err = fabs((double)x[i] - y[i]), bound = bound_for(t, q, i);
            cr_assert_leq(err, bound * 1.0001 + 1e-6 * (fabs(x[i]) + offset_for(t, q, i)),
                          "%s kind %d value %d: x=%g y=%g err=%g bound=%g", shardlm_dtype_name(t), kind, i, x[i], y[i],
                          err, bound);
            se += err * err;
            amax = fmax(amax, fabs(x[i]));
        }
        double rms = sqrt(se / N);
        cr_log_info("%s kind %d: rms error %.4f x max|x|", shardlm_dtype_name(t), kind, amax > 0 ? rms / amax : 0.0);
        cr_assert_leq(rms, rms_max * amax, "%s kind %d: rms error %g > %g x max|x| %g", shardlm_dtype_name(t), kind,
                      rms, rms_max, amax);
    }
}

Test(quant_more, q4_1_bound) { check_bound(SHARDLM_DT_Q4_1, 0.045); }
Test(quant_more, q5_0_bound) { check_bound(SHARDLM_DT_Q5_0, 0.025); }
Test(quant_more, q5_1_bound) { check_bound(SHARDLM_DT_Q5_1, 0.022); }
Test(quant_more, iq4_nl_bound) { check_bound(SHARDLM_DT_IQ4_NL, 0.055); }
Test(quant_more, q2_k_bound) { check_bound(SHARDLM_DT_Q2_K, 0.2); }
Test(quant_more, q3_k_bound) { check_bound(SHARDLM_DT_Q3_K, 0.1); }
Test(quant_more, q5_k_bound) { check_bound(SHARDLM_DT_Q5_K, 0.025); }
Test(quant_more, iq4_xs_bound) { check_bound(SHARDLM_DT_IQ4_XS, 0.06); }

/* NaN and inf input must not crash (or trip UBSan) any quantiser. */
Test(quant_more, non_finite_input_is_safe)
{
    static const shardlm_dtype types[] = {SHARDLM_DT_Q4_1, SHARDLM_DT_Q5_0, SHARDLM_DT_Q5_1, SHARDLM_DT_IQ4_NL,
                                          SHARDLM_DT_Q2_K, SHARDLM_DT_Q3_K, SHARDLM_DT_Q5_K, SHARDLM_DT_IQ4_XS};
    float x[256], y[256];
    uint8_t q[256];
    for (int i = 0; i < 256; i++) x[i] = i % 3 == 0 ? NAN : i % 3 == 1 ? INFINITY : -1e30f;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        shardlm_quant_row(types[k], x, q, 256);
        shardlm_dequant_row(types[k], q, y, 256);
    }
}

/* ---- the type table ---- */

Test(quant_more, sizes_and_names)
{
    static const struct {
        uint32_t id;
        const char *name;
        size_t elems, bytes;
    } want[] = {{3, "q4_1", 32, 20},     {6, "q5_0", 32, 22},     {7, "q5_1", 32, 24},    {10, "q2_k", 256, 84},
                {11, "q3_k", 256, 110},  {13, "q5_k", 256, 176},  {20, "iq4_nl", 32, 18}, {23, "iq4_xs", 256, 136}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert(shardlm_dtype_supported(want[i].id), "%s", want[i].name);
        cr_assert_str_eq(shardlm_dtype_name(want[i].id), want[i].name);
        cr_assert_eq(shardlm_dtype_parse(want[i].name), (int)want[i].id);
        cr_assert_eq(shardlm_dtype_block_elems(want[i].id), want[i].elems, "%s", want[i].name);
        cr_assert_eq(shardlm_dtype_block_bytes(want[i].id), want[i].bytes, "%s", want[i].name);
    }
    cr_assert_eq(shardlm_dtype_row_bytes(SHARDLM_DT_Q5_K, 5632), 22 * 176);
    cr_assert_eq(shardlm_dtype_row_bytes(SHARDLM_DT_Q2_K, 288), 0);
    cr_assert_eq(shardlm_dtype_row_bytes(SHARDLM_DT_Q5_0, 96), 3 * 22);
}

/* Types shardlm cannot compute with: named, sized, not supported; removed
 * and never-defined ids: no layout. */
Test(quant_more, unsupported_types_are_named)
{
    static const struct {
        uint32_t id;
        const char *name;
        size_t elems, bytes;
    } want[] = {{9, "q8_1", 32, 36},     {15, "q8_k", 256, 292},   {16, "iq2_xxs", 256, 66}, {17, "iq2_xs", 256, 74},
                {18, "iq3_xxs", 256, 98}, {19, "iq1_s", 256, 50},  {21, "iq3_s", 256, 110},  {22, "iq2_s", 256, 82},
                {24, "i8", 1, 1},        {28, "f64", 1, 8},       {29, "iq1_m", 256, 56},   {34, "tq1_0", 256, 54},
                {35, "tq2_0", 256, 66},  {39, "mxfp4", 32, 17},   {40, "nvfp4", 64, 36},    {41, "q1_0", 128, 18},
                {42, "q2_0", 64, 18}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert(!shardlm_dtype_supported(want[i].id) && shardlm_dtype_known(want[i].id), "%s", want[i].name);
        cr_assert_str_eq(shardlm_dtype_name(want[i].id), want[i].name);
        cr_assert_eq(shardlm_dtype_block_elems(want[i].id), want[i].elems, "%s", want[i].name);
        cr_assert_eq(shardlm_dtype_block_bytes(want[i].id), want[i].bytes, "%s", want[i].name);
    }
    static const uint32_t gone[] = {4, 5, 31, 32, 33, 36, 37, 38};
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++) {
        cr_assert(!shardlm_dtype_known(gone[i]), "id %u", gone[i]);
        cr_assert_neq(strncmp(shardlm_dtype_name(gone[i]), "type#", 5), 0, "removed ids keep their names");
    }
    cr_assert_str_eq(shardlm_dtype_name(31), "q4_0_4_4");
    cr_assert(!shardlm_dtype_known(43) && !shardlm_dtype_known(1000));
    cr_assert_str_eq(shardlm_dtype_name(43), "type#43");
}

/* The list in messages names exactly the supported ids, in id order. */
Test(quant_more, supported_names_match_the_table)
{
    char want[512] = "";
    for (uint32_t t = 0; t < 64; t++)
        if (shardlm_dtype_supported(t)) {
            if (want[0]) strcat(want, ", ");
            strcat(want, shardlm_dtype_name(t));
        }
    cr_assert_str_eq(shardlm_dtype_supported_names(), want);
}
