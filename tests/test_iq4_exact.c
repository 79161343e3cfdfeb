/* test_iq4_exact.c - the IQ4_NL and IQ4_XS SIMD kernels' exact arithmetic.
 *
 * The AVX2 kernels (kernels/cpu/matmul_iq4.c) and the AVX-512 VNNI ones
 * (matmul_avx512_iq4.c, two rows per register, one per half) promise one
 * arithmetic per (row, input), rebuilt here in scalar code from the bytes:
 * 8 float lanes, lane n summing level * x over bytes 4n..4n+3 of each
 * 32-value block as an exact integer, then acc_n = fma(that, scale, acc_n)
 * in block order (scale d * xd, or (d * ls) * xd for IQ4_XS, each product
 * rounded to float), then ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). Both paths
 * must match it, and each other, bit for bit, so switching SHARDLM_ISA
 * never changes an output. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_kernels.h"
#include "test_util.h"

#define NL_BYTES 18
#define XS_BYTES 136

/* ggml's kvalues_iq4nl, copied from its format description. */
static const int kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static float f16(const uint8_t *p) { return shardlm_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

typedef struct {
    int8_t q[32];
    float d;
} act_block;

/* The kernels' 8-bit activation block (cpu_internal.h): scale rounded to f16. */
static act_block act_quant(const float *x)
{
    act_block a;
    float amax = 0.0f;
    for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(x[k]));
    float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int k = 0; k < 32; k++) a.q[k] = (int8_t)nearbyintf(x[k] * id);
    a.d = shardlm_f16_to_f32(shardlm_f32_to_f16(amax / 127.0f));
    return a;
}

/* acc[n] += the 4-byte integer sums of one block (16 nibble bytes) times s. */
static void block_fma(float acc[8], const uint8_t *qs, const act_block *xa, float s)
{
    for (int n = 0; n < 8; n++) {
        int32_t p = 0;
        for (int k = 4 * n; k < 4 * n + 4; k++) p += kv[k < 16 ? qs[k] & 15 : qs[k - 16] >> 4] * xa->q[k];
        acc[n] = fmaf((float)p, s, acc[n]);
    }
}

static float lanes_sum(const float l[8])
{
    float s0 = l[0] + l[4], s1 = l[1] + l[5], s2 = l[2] + l[6], s3 = l[3] + l[7];
    return (s0 + s2) + (s1 + s3);
}

static float iq4_nl_expected(const uint8_t *row, const float *x, size_t cols)
{
    float acc[8] = {0};
    for (size_t b = 0; b < cols / 32; b++) {
        act_block xa = act_quant(x + 32 * b);
        block_fma(acc, row + b * NL_BYTES + 2, &xa, f16(row + b * NL_BYTES) * xa.d);
    }
    return lanes_sum(acc);
}

static float iq4_xs_expected(const uint8_t *row, const float *x, size_t cols)
{
    float acc[8] = {0};
    for (size_t sb = 0; sb < cols / 256; sb++) {
        const uint8_t *b = row + sb * XS_BYTES;
        float d = f16(b);
        for (int j = 0; j < 8; j++) {
            int ls = ((b[4 + j / 2] >> (4 * (j % 2))) & 15) | ((b[2] | b[3] << 8) >> (2 * j) & 3) << 4;
            act_block xa = act_quant(x + sb * 256 + 32 * (size_t)j);
            block_fma(acc, b + 8 + 16 * j, &xa, (d * (float)(ls - 32)) * xa.d);
        }
    }
    return lanes_sum(acc);
}

/* Weights of rows x cols and n inputs, some of them 20x the others. */
static void fill(shardlm_dtype t, size_t rows, size_t cols, size_t n, uint8_t *w, float *x)
{
    size_t rb = shardlm_dtype_row_bytes(t, cols);
    for (size_t r = 0; r < rows; r++) {
        float scale = powf(10.0f, 1.5f * tu_frand());
        for (size_t c = 0; c < cols; c++) x[c] = scale * tu_frand();
        shardlm_quant_row(t, x, w + r * rb, cols);
    }
    for (size_t k = 0; k < n * cols; k++) x[k] = tu_frand() * (k % 97 == 0 ? 20.0f : 1.0f);
}

/* shardlm_matmul on each of isas[0..nisa), with and without a 2-thread
 * pool, against the rebuild and against each other: rows 1, 3 (a pair and
 * a lone row), 37 (a 16-row block tail, an odd row) and 300 (several
 * thread chunks); 1, 2, 5 and 17 inputs (tiles of 8 and their tails). */
static void check_exact(shardlm_dtype t, const char *const *isas, int nisa)
{
    static const size_t rows_l[] = {1, 3, 37, 300}, n_l[] = {1, 2, 5, 17};
    size_t cols = 9 * 256, rb = shardlm_dtype_row_bytes(t, cols);
    shardlm_pool *pool;
    cr_assert_eq(shardlm_pool_new(2, 0, &pool), 0);
    for (size_t ri = 0; ri < 4; ri++)
        for (size_t ni = 0; ni < 4; ni++) {
            size_t rows = rows_l[ri], n = n_l[ni];
            uint8_t *w = malloc(rb * rows);
            float *x = malloc(n * cols * sizeof(float)), *want = malloc(n * rows * sizeof(float));
            float *y[2] = {malloc(n * rows * sizeof(float)), malloc(n * rows * sizeof(float))};
            cr_assert(w && x && want && y[0] && y[1]);
            fill(t, rows, cols, n, w, x);
            for (size_t i = 0; i < n; i++)
                for (size_t r = 0; r < rows; r++)
                    want[i * rows + r] = t == SHARDLM_DT_IQ4_NL ? iq4_nl_expected(w + r * rb, x + i * cols, cols)
                                                                : iq4_xs_expected(w + r * rb, x + i * cols, cols);
            for (int p = 0; p < 2; p++)
                for (int s = 0; s < nisa; s++) {
                    cr_assert_eq(shardlm_kernels_force_isa(isas[s]), 0);
                    float *ys = y[s > 0];
                    for (size_t k = 0; k < n * rows; k++) ys[k] = NAN;
                    shardlm_matmul(p ? pool : NULL, t, w, rows, cols, x, n, ys);
                    for (size_t k = 0; k < n * rows; k++)
                        cr_assert(!memcmp(&want[k], &ys[k], sizeof want[k]),
                                  "%s %s rows=%zu n=%zu pool=%d y[%zu][%zu] %.9g, want %.9g", isas[s],
                                  shardlm_dtype_name(t), rows, n, p, k / rows, k % rows, ys[k], want[k]);
                    if (s > 0)
                        cr_assert(!memcmp(y[0], y[1], n * rows * sizeof(float)), "%s and %s differ: %s rows=%zu n=%zu",
                                  isas[0], isas[s], shardlm_dtype_name(t), rows, n);
                }
            free(w), free(x), free(want), free(y[0]), free(y[1]);
        }
    shardlm_pool_free(pool);
}

Test(iq4_exact, avx2_exact_arithmetic)
{
    static const char *const isas[] = {"avx2"};
    if (shardlm_kernels_force_isa("avx2") != 0) cr_skip_test("SKIP: no AVX2 on this CPU");
    check_exact(SHARDLM_DT_IQ4_NL, isas, 1);
    check_exact(SHARDLM_DT_IQ4_XS, isas, 1);
}

Test(iq4_exact, avx512vnni_same_bits_as_avx2)
{
    static const char *const isas[] = {"avx2", "avx512vnni"};
    if (shardlm_kernels_force_isa("avx512vnni") != 0)
        cr_skip_test("SKIP: this CPU has no AVX-512 VNNI, so the VNNI IQ4_NL/IQ4_XS kernels cannot run here");
    char k[48];
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_IQ4_NL, k, sizeof k), "iq4_nl/avx512vnni");
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_IQ4_XS, k, sizeof k), "iq4_xs/avx512vnni");
    check_exact(SHARDLM_DT_IQ4_NL, isas, 2);
    check_exact(SHARDLM_DT_IQ4_XS, isas, 2);
}
