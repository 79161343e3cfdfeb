/* test_kernels.c - the optimised CPU kernels (kernels/cpu/matmul*.c,
 * ops_avx2.c) against the scalar references, on every SIMD path this CPU
 * supports, with and without a thread pool; and the thread pool itself. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shardlm_kernels.h"
#include "test_util.h"



static void fill(float *v, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) v[i] = tu_frand() * scale;
}

/* Per-output tolerance.
 * Float weights (F32/F16/BF16): both sides compute the same products in
 * f32 and differ only in summation order; a sum of `cols` terms has error
 * at most ~cols*2^-24*sum|w*x| in the worst case and ~2^-24*sum|w*x| in
 * practice, so 1e-5 * sum|w*x| leaves room without hiding real bugs.
 * Block types: the kernels replace x by x' = d'*q with q = round(x/d), d =
 * amax(block)/127 and d' = d or d rounded to f16 (as ggml's block_q8_0),
 * so |x - x'| <= d/2 + 127*|d - d'| <= d*(1/2 + 127*2^-11) per element and
 * the product differs by at most sum_blocks that * sum_{c in b} |w_c| (w as
 * the reference dequantises it). On top, f32 rounding of the per-block terms, which the
 * kernels sum apart from the offset terms of types with one (Q4_0's 8*d,
 * the min m of Q4_1/Q5_1, dmin*m_j of Q2_K/Q4_K/Q5_K): allow 1e-4 *
 * sum (|w| + |offset|) * |x| for that. */
static float f16_at(const uint8_t *p) { return shardlm_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

/* The offset a kernel handles apart for value c of a row (an upper bound). */
static double offset_of(shardlm_dtype t, const uint8_t *row, size_t c)
{
    size_t be = shardlm_dtype_block_elems(t), bb = shardlm_dtype_block_bytes(t);
    const uint8_t *b = row + (be ? c / be * bb : 0);
    switch (t) {
    case SHARDLM_DT_Q4_0: return 8.0 * fabs(f16_at(b));
    case SHARDLM_DT_Q4_1:
    case SHARDLM_DT_Q5_1: return fabs(f16_at(b + 2));
    case SHARDLM_DT_Q2_K: return 15.0 * f16_at(b + 82);
    case SHARDLM_DT_Q4_K:
    case SHARDLM_DT_Q5_K: return 63.0 * f16_at(b + 2);
    default: return 0.0;
    }
}

static double tol_for(shardlm_dtype t, const uint8_t *qrow, const float *wrow, const float *x, size_t cols)
{
    double sabs = 0.0, qerr = 0.0;
    if (t == SHARDLM_DT_F32 || t == SHARDLM_DT_F16 || t == SHARDLM_DT_BF16) {
        for (size_t c = 0; c < cols; c++) sabs += fabs((double)wrow[c] * x[c]);
        return 1e-5 * sabs + 1e-30;
    }
    for (size_t c = 0; c < cols; c++) sabs += (fabs(wrow[c]) + offset_of(t, qrow, c)) * fabs(x[c]);
    for (size_t b = 0; b < cols / SHARDLM_QK; b++) {
        double amax = 0.0, sw = 0.0;
        for (int k = 0; k < SHARDLM_QK; k++) {
            amax = fmax(amax, fabs(x[b * SHARDLM_QK + k]));
            sw += fabs(wrow[b * SHARDLM_QK + k]);
        }
        qerr += amax / 127.0 * (0.5 + 127.0 * 0x1p-11) * sw;
    }
    return qerr * 1.001 + 1e-4 * sabs + 1e-30;
}

typedef struct {
    shardlm_dtype t;
    size_t rows, cols, n;
    void *w;
    float *wf, *x, *ref, *tol;
} mm_case;

/* with_ref 0: weights and inputs only (the batch invariance checks compare
 * the kernels with themselves). */
static mm_case mm_case_make(shardlm_dtype t, size_t rows, size_t cols, size_t n, int with_ref)
{
    mm_case c = {.t = t, .rows = rows, .cols = cols, .n = n};
    size_t rb = shardlm_dtype_row_bytes(t, cols);
    c.w = malloc(rb * rows);
    c.wf = malloc(rows * cols * sizeof(float));
    c.x = malloc(n * cols * sizeof(float));
    c.ref = malloc(n * rows * sizeof(float));
    c.tol = malloc(n * rows * sizeof(float));
    cr_assert(c.w && c.wf && c.x && c.ref && c.tol);
    float *tmp = malloc(cols * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        fill(tmp, cols, 1.0f);
        shardlm_quant_row(t, tmp, (uint8_t *)c.w + r * rb, cols);
        shardlm_dequant_row(t, (uint8_t *)c.w + r * rb, c.wf + r * cols, cols);
    }
    free(tmp);
    /* Some activation blocks with a large outlier, as real hidden states have. */
    fill(c.x, n * cols, 1.0f);
    for (size_t i = 0; i < n * cols; i += 97) c.x[i] *= 20.0f;
    if (!with_ref) return c;
    shardlm_ref_matmul(t, c.w, rows, cols, c.x, n, c.ref);
    for (size_t i = 0; i < n; i++)
        for (size_t r = 0; r < rows; r++)
            c.tol[i * rows + r] = (float)tol_for(t, (const uint8_t *)c.w + r * rb, c.wf + r * cols, c.x + i * cols, cols);
    return c;
}

static mm_case mm_case_new(shardlm_dtype t, size_t rows, size_t cols, size_t n)
{
    return mm_case_make(t, rows, cols, n, 1);
}

static void mm_case_free(mm_case *c)
{
    free(c->w);
    free(c->wf);
    free(c->x);
    free(c->ref);
    free(c->tol);
}

static void check_case(const mm_case *c, shardlm_pool *pool, const char *isa)
{
    float *y = malloc(c->n * c->rows * sizeof(float));
    for (size_t k = 0; k < c->n * c->rows; k++) y[k] = NAN;
    shardlm_matmul(pool, c->t, c->w, c->rows, c->cols, c->x, c->n, y);
    for (size_t i = 0; i < c->n; i++)
        for (size_t r = 0; r < c->rows; r++) {
            size_t k = i * c->rows + r;
            double err = fabs((double)y[k] - c->ref[k]);
            cr_assert(err <= c->tol[k],
                      "%s %s rows=%zu cols=%zu n=%zu pool=%d: y[%zu][%zu]=%.9g ref=%.9g err=%.3g tol=%.3g", isa,
                      shardlm_dtype_name(c->t), c->rows, c->cols, c->n, shardlm_pool_size(pool), i, r, y[k],
                      c->ref[k], err, c->tol[k]);
        }
    free(y);
}

static void check_type_all_isas(shardlm_dtype t)
{
    static const size_t rows_l[] = {1, 3, 17, 1000}, n_l[] = {1, 2, 5, 16};
    /* Block types of 256 need whole super-blocks: 1, 2 and 17. */
    int k = shardlm_dtype_block_elems(t) == 256;
    const size_t cols_l[3] = {k ? 256 : 32, k ? 512 : 64, k ? 4352 : 4096 + 32};
    shardlm_pool *pool;
    cr_assert_eq(shardlm_pool_new(2, 0, &pool), 0);
    int tested = 0;
    for (size_t ri = 0; ri < 4; ri++)
        for (size_t ci = 0; ci < 3; ci++)
            for (size_t ni = 0; ni < 4; ni++) {
                mm_case c = mm_case_new(t, rows_l[ri], cols_l[ci], n_l[ni]);
                for (size_t s = 0; s < TU_N_ISAS; s++) {
                    if (shardlm_kernels_force_isa(tu_isas[s]) != 0) continue;
                    check_case(&c, NULL, tu_isas[s]);
                    check_case(&c, pool, tu_isas[s]);
                    tested++;
                }
                mm_case_free(&c);
            }
    cr_assert_geq(tested, 48, "the scalar path at least must run");
    shardlm_pool_free(pool);
}

Test(matmul, f32) { check_type_all_isas(SHARDLM_DT_F32); }
Test(matmul, f16) { check_type_all_isas(SHARDLM_DT_F16); }
Test(matmul, bf16) { check_type_all_isas(SHARDLM_DT_BF16); }
Test(matmul, q8_0) { check_type_all_isas(SHARDLM_DT_Q8_0); }
Test(matmul, q4_0) { check_type_all_isas(SHARDLM_DT_Q4_0); }
Test(matmul, q4_1) { check_type_all_isas(SHARDLM_DT_Q4_1); }
Test(matmul, q5_0) { check_type_all_isas(SHARDLM_DT_Q5_0); }
Test(matmul, q5_1) { check_type_all_isas(SHARDLM_DT_Q5_1); }
Test(matmul, iq4_nl) { check_type_all_isas(SHARDLM_DT_IQ4_NL); }
Test(matmul, q2_k) { check_type_all_isas(SHARDLM_DT_Q2_K); }
Test(matmul, q3_k) { check_type_all_isas(SHARDLM_DT_Q3_K); }
Test(matmul, q5_k) { check_type_all_isas(SHARDLM_DT_Q5_K); }
Test(matmul, iq4_xs) { check_type_all_isas(SHARDLM_DT_IQ4_XS); }

/* The SIMD paths do the same integer arithmetic as the scalar path on the
 * same quantised activations, so they agree far more closely than either
 * agrees with the f32 reference. */
Test(matmul, simd_matches_scalar_integer_path)
{
    static const shardlm_dtype types[] = {SHARDLM_DT_Q8_0, SHARDLM_DT_Q4_0, SHARDLM_DT_Q4_1, SHARDLM_DT_Q5_0,
                                          SHARDLM_DT_Q5_1, SHARDLM_DT_IQ4_NL, SHARDLM_DT_Q2_K, SHARDLM_DT_Q3_K,
                                          SHARDLM_DT_Q5_K, SHARDLM_DT_IQ4_XS};
    size_t rows = 37, n = 6;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        size_t cols = shardlm_dtype_block_elems(types[ti]) == 256 ? 2048 + 256 : 2048 + 96;
        mm_case c = mm_case_new(types[ti], rows, cols, n);
        float *ys = malloc(n * rows * sizeof(float)), *yv = malloc(n * rows * sizeof(float));
        cr_assert_eq(shardlm_kernels_force_isa("scalar"), 0);
        shardlm_matmul(NULL, c.t, c.w, rows, cols, c.x, n, ys);
        for (size_t s = 1; s < TU_N_ISAS; s++) {
            if (shardlm_kernels_force_isa(tu_isas[s]) != 0) continue;
            shardlm_matmul(NULL, c.t, c.w, rows, cols, c.x, n, yv);
            for (size_t k = 0; k < n * rows; k++) {
                double sabs = c.tol[k]; /* >= 1e-4 * sum|w*x| */
                cr_assert(fabs((double)yv[k] - ys[k]) <= sabs * 0.1, "%s vs scalar %s at %zu: %.9g vs %.9g",
                          tu_isas[s], shardlm_dtype_name(c.t), k, yv[k], ys[k]);
            }
        }
        free(ys);
        free(yv);
        mm_case_free(&c);
    }
}

/* The AVX2 Q4_0 kernels (plain and repacked) promise one arithmetic per
 * (row, input), which is what makes them batch invariant: per block, the
 * exact integer dot(q, x) - 8 * sum(x) of the 8-bit activations, then acc =
 * fma(that, d_w * d_x, acc) in block order from +0, d_x rounded to f16. Rebuilt here in scalar
 * code, it must match bit for bit; an off-by-one anywhere shows. */
static float q4_0_avx2_expected(const uint8_t *row, const float *x, size_t cols)
{
    float acc = 0.0f;
    for (size_t b = 0; b < cols / 32; b++) {
        const uint8_t *blk = row + b * 18;
        const float *xb = x + b * 32;
        float amax = 0.0f;
        for (int k = 0; k < 32; k++) amax = fmaxf(amax, fabsf(xb[k]));
        /* the activation scale is rounded to f16 as ggml's (cpu_internal.h) */
        float d = shardlm_f16_to_f32(shardlm_f32_to_f16(amax / 127.0f)), id = amax > 0.0f ? 127.0f / amax : 0.0f;
        int32_t dot = 0, sum = 0;
        for (int k = 0; k < 32; k++) {
            int32_t q = (int32_t)nearbyintf(xb[k] * id), w = k < 16 ? blk[2 + k] & 15 : blk[2 + k - 16] >> 4;
            dot += w * q;
            sum += q;
        }
        uint16_t h = (uint16_t)(blk[0] | blk[1] << 8);
        acc = fmaf((float)(dot - 8 * sum), shardlm_f16_to_f32(h) * d, acc);
    }
    return acc;
}

/* The plain and R8 products on the path in use against the scalar rebuild. */
static void check_q4_0_exact(const char *isa, size_t rows, size_t n)
{
    size_t cols = 67 * 32;
    mm_case c = mm_case_new(SHARDLM_DT_Q4_0, rows, cols, n);
    void *r8;
    shardlm_dtype t;
    cr_assert_eq(shardlm_repack(SHARDLM_DT_Q4_0, c.w, rows, cols, &r8, &t), 0);
    cr_assert_eq(t, SHARDLM_DT_Q4_0_R8);
    float *y0 = malloc(n * rows * sizeof(float)), *y1 = malloc(n * rows * sizeof(float));
    cr_assert(y0 && y1);
    shardlm_matmul(NULL, SHARDLM_DT_Q4_0, c.w, rows, cols, c.x, n, y0);
    shardlm_matmul(NULL, SHARDLM_DT_Q4_0_R8, r8, rows, cols, c.x, n, y1);
    for (size_t i = 0; i < n; i++)
        for (size_t r = 0; r < rows; r++) {
            float want = q4_0_avx2_expected((const uint8_t *)c.w + r * (cols / 32 * 18), c.x + i * cols, cols);
            cr_assert(!memcmp(&want, &y0[i * rows + r], sizeof want), "%s plain y[%zu][%zu] %.9g, want %.9g", isa,
                      i, r, y0[i * rows + r], want);
            cr_assert(!memcmp(&want, &y1[i * rows + r], sizeof want), "%s R8 y[%zu][%zu] %.9g, want %.9g", isa, i,
                      r, y1[i * rows + r], want);
        }
    free(y0);
    free(y1);
    free(r8);
    mm_case_free(&c);
}

Test(matmul, q4_0_avx2_exact_arithmetic)
{
    if (shardlm_kernels_force_isa("avx2") != 0) cr_skip_test("no AVX2 on this CPU");
    check_q4_0_exact("avx2", 21, 5); /* 2 groups + a plain tail; 4 + 1 inputs */
}

/* The VNNI R8 kernel (16 rows in lanes, kernels/cpu/matmul_avx512.c) keeps
 * that arithmetic: 21 rows (one pair of groups, a plain tail), 37 (a pair,
 * then a lone group run with its partner lanes unused, a tail), 1..17
 * inputs (n = 1 is the AVX2 kernel by design; 5, 16 and 17 are VNNI). */
Test(matmul, q4_0_avx512vnni_exact_arithmetic)
{
    if (shardlm_kernels_force_isa("avx512vnni") != 0)
        cr_skip_test("SKIP: this CPU has no AVX-512 VNNI, so the VNNI Q4_0_R8 kernel cannot run here");
    char k[48];
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_Q4_0, k, sizeof k), "q4_0_r8/avx512vnni");
    static const size_t rows_l[] = {21, 37, 64}, n_l[] = {1, 2, 5, 16, 17};
    for (size_t ri = 0; ri < 3; ri++)
        for (size_t ni = 0; ni < 5; ni++) check_q4_0_exact("avx512vnni", rows_l[ri], n_l[ni]);
}

/* Batch invariance, which the serving path relies on ("a batch must not
 * change results"): each row of a batched product must be bit-for-bit the
 * product of that row alone, whatever n, tile shape, tail or thread split
 * computed it. cols = 67 blocks exercises the odd-block tail of Q4_0's
 * pair kernels (K-quants: 9 super-blocks); 300 rows span several thread
 * chunks and row tails (Q4_0_R8: 37 groups of 8 and a plain tail of 4,
 * through the 8 x 4 tiles, their 3/2/1-input tails and the matvec; Q8_0_R4:
 * 75 groups of 4; 7 rows: 1 group and a plain tail of 3). */
static void check_batch_invariant(shardlm_dtype t, shardlm_pool *pool, const char *isa)
{
    static const size_t rows_l[] = {1, 7, 300}, n_l[] = {2, 3, 5, 8, 17};
    int r8 = t == SHARDLM_DT_Q4_0_R8 || t == SHARDLM_DT_Q8_0_R4;
    shardlm_dtype pt = t == SHARDLM_DT_Q4_0_R8 ? SHARDLM_DT_Q4_0 : t == SHARDLM_DT_Q8_0_R4 ? SHARDLM_DT_Q8_0 : t;
    size_t cols = !r8 && shardlm_dtype_block_elems(t) == 256 ? 9 * 256 : 67 * SHARDLM_QK;
    for (size_t ri = 0; ri < 3; ri++)
        for (size_t ni = 0; ni < 5; ni++) {
            size_t rows = rows_l[ri], n = n_l[ni];
            /* Q4_0_R8 / Q8_0_R4: the plain matrix repacked, where this path repacks. */
            mm_case c = mm_case_make(pt, rows, cols, n, 0);
            void *w = c.w, *packed = NULL;
            shardlm_dtype wt = c.t;
            if (r8) cr_assert_eq(shardlm_repack(pt, c.w, rows, cols, &packed, &wt), 0);
            if (packed) w = packed;
            float *yb = malloc(n * rows * sizeof(float)), *y1 = malloc(rows * sizeof(float));
            cr_assert(yb && y1);
            shardlm_matmul(pool, wt, w, rows, cols, c.x, n, yb);
            for (size_t i = 0; i < n; i++) {
                shardlm_matmul(NULL, wt, w, rows, cols, c.x + i * cols, 1, y1);
                cr_assert(!memcmp(y1, yb + i * rows, rows * sizeof(float)),
                          "%s %s rows=%zu n=%zu pool=%d: row %zu of the batch differs from it alone", isa,
                          shardlm_dtype_name(t), rows, n, shardlm_pool_size(pool), i);
            }
            free(yb);
            free(y1);
            free(packed);
            mm_case_free(&c);
        }
}

Test(matmul, batch_invariant_bitwise)
{
    static const shardlm_dtype types[] = {SHARDLM_DT_F32, SHARDLM_DT_F16, SHARDLM_DT_BF16, SHARDLM_DT_Q8_0,
                                          SHARDLM_DT_Q4_0, SHARDLM_DT_Q4_K, SHARDLM_DT_Q6_K, SHARDLM_DT_Q4_0_R8,
                                          SHARDLM_DT_Q8_0_R4, SHARDLM_DT_Q4_1, SHARDLM_DT_Q5_0, SHARDLM_DT_Q5_1,
                                          SHARDLM_DT_IQ4_NL, SHARDLM_DT_Q2_K, SHARDLM_DT_Q3_K, SHARDLM_DT_Q5_K,
                                          SHARDLM_DT_IQ4_XS};
    shardlm_pool *pool;
    cr_assert_eq(shardlm_pool_new(2, 0, &pool), 0);
    int tested = 0;
    for (size_t s = 0; s < TU_N_ISAS; s++) {
        if (shardlm_kernels_force_isa(tu_isas[s]) != 0) continue;
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            check_batch_invariant(types[ti], NULL, tu_isas[s]);
            check_batch_invariant(types[ti], pool, tu_isas[s]);
            tested++;
        }
    }
    cr_assert_geq(tested, 5, "the scalar path at least must run");
    shardlm_pool_free(pool);
}

Test(matmul, force_isa_rejects_unknown)
{
    cr_assert_eq(shardlm_kernels_force_isa("sse9"), -1);
    cr_assert_eq(shardlm_kernels_force_isa("scalar"), 0);
    cr_assert_str_eq(shardlm_kernels_isa(), "scalar");
}

/* Each Criterion test runs in a fresh process, so the environment is read
 * at this test's first kernel call. */
Test(matmul, env_forces_scalar)
{
    setenv("SHARDLM_ISA", "scalar", 1);
    cr_assert_str_eq(shardlm_kernels_isa(), "scalar");
    mm_case c = mm_case_new(SHARDLM_DT_Q4_0, 17, 64, 2);
    check_case(&c, NULL, "env-scalar");
    mm_case_free(&c);
}

Test(matmul, env_unknown_falls_back)
{
    setenv("SHARDLM_ISA", "bogus", 1);
    const char *isa = shardlm_kernels_isa();
    cr_assert(strcmp(isa, "bogus") != 0);
    cr_assert_neq(shardlm_kernels_force_isa(isa), -1, "the fallback is a supported path");
}

/* ---- elementwise ops ---- */

static void check_ops_one(size_t n, const char *isa)
{
    float *x = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float)), *a = malloc(n * sizeof(float)),
          *b = malloc(n * sizeof(float)), *r1 = malloc(n * sizeof(float)), *r2 = malloc(n * sizeof(float));
    fill(x, n, 10.0f);
    fill(w, n, 1.0f);
    shardlm_ref_rmsnorm(r1, x, w, n, 1e-5f);
    shardlm_rmsnorm(r2, x, w, n, 1e-5f);
    for (size_t i = 0; i < n; i++) cr_assert(fabsf(r1[i] - r2[i]) <= 1e-5f * fabsf(r1[i]) + 1e-30f, "%s rmsnorm", isa);
    memcpy(r1, x, n * sizeof(float));
    memcpy(r2, x, n * sizeof(float));
    shardlm_ref_softmax(r1, n);
    shardlm_softmax(r2, n);
    for (size_t i = 0; i < n; i++) cr_assert(fabsf(r1[i] - r2[i]) <= 1e-5f * r1[i] + 1e-37f, "%s softmax %zu", isa, i);
    fill(a, n, 30.0f);
    fill(b, n, 2.0f);
    memcpy(r1, a, n * sizeof(float));
    memcpy(r2, a, n * sizeof(float));
    shardlm_ref_silu_mul(r1, b, n);
    shardlm_silu_mul(r2, b, n);
    for (size_t i = 0; i < n; i++)
        cr_assert(fabsf(r1[i] - r2[i]) <= 1e-6f * fabsf(r1[i]) + 1e-30f, "%s silu %zu: %g vs %g", isa, i, r1[i], r2[i]);
    free(x), free(w), free(a), free(b), free(r1), free(r2);
}

Test(ops, tu_isas)
{
    static const size_t sizes[] = {1, 7, 8, 33, 4096};
    for (size_t s = 0; s < TU_N_ISAS; s++) {
        if (shardlm_kernels_force_isa(tu_isas[s]) != 0) continue;
        for (size_t k = 0; k < 5; k++) check_ops_one(sizes[k], tu_isas[s]);
    }
}

/* exp through silu with b = 1: silu(a) = a / (1 + e^-a) carries e^-a's
 * relative error (damped by e^-a / (1 + e^-a)), so sweeping a over
 * [-87, 87] bounds the polynomial exp. Measured max relative error: see the
 * message; the assertion holds it under 1e-6. */
Test(ops, exp_accuracy_sweep)
{
    size_t n = 200001;
    float *a = malloc(n * sizeof(float)), *r = malloc(n * sizeof(float)), *one = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        a[i] = -87.0f + 174.0f * (float)i / (float)(n - 1);
        one[i] = 1.0f;
    }
    for (size_t s = 0; s < TU_N_ISAS; s++) {
        if (shardlm_kernels_force_isa(tu_isas[s]) != 0) continue;
        memcpy(r, a, n * sizeof(float));
        shardlm_silu_mul(r, one, n);
        double worst = 0.0;
        for (size_t i = 0; i < n; i++) {
            double exact = (double)a[i] / (1.0 + exp(-(double)a[i]));
            if (exact != 0.0) worst = fmax(worst, fabs((r[i] - exact) / exact));
        }
        cr_log_info("%s: silu max relative error %.3g", tu_isas[s], worst);
        cr_assert(worst < 1e-6, "%s: %.3g", tu_isas[s], worst);
    }
    free(a), free(r), free(one);
}

/* ---- thread pool ---- */

typedef struct {
    _Atomic int calls[8];
    int nth_seen[8];
    int *data;
    size_t len;
    int round;
} pool_probe;

static void probe_fn(void *ctx, int tid, int nth)
{
    pool_probe *p = ctx;
    atomic_fetch_add(&p->calls[tid], 1);
    p->nth_seen[tid] = nth;
    for (size_t i = (size_t)tid; i < p->len; i += (size_t)nth) p->data[i] = p->round * 1000 + (int)(i % 1000);
}

static void pool_exercise(int threads, int rounds, int sleep_every)
{
    shardlm_pool *pool;
    cr_assert_eq(shardlm_pool_new(threads, 0, &pool), 0);
    cr_assert_eq(shardlm_pool_size(pool), threads);
    pool_probe p = {.len = 4099};
    p.data = calloc(p.len, sizeof(int));
    for (int r = 0; r < rounds; r++) {
        p.round = r;
        shardlm_pool_run(pool, probe_fn, &p);
        /* Every element written by whichever thread owns it, before run returned. */
        for (size_t i = 0; i < p.len; i++) cr_assert_eq(p.data[i], r * 1000 + (int)(i % 1000), "round %d elem %zu", r, i);
        if (sleep_every && r % sleep_every == 0) usleep(2000); /* workers fall asleep on the futex */
    }
    for (int t = 0; t < threads; t++) {
        cr_assert_eq(atomic_load(&p.calls[t]), rounds, "tid %d ran %d of %d", t, atomic_load(&p.calls[t]), rounds);
        cr_assert_eq(p.nth_seen[t], threads);
    }
    free(p.data);
    shardlm_pool_free(pool);
}

Test(pool, many_runs_two_threads) { pool_exercise(2, 20000, 0); }
Test(pool, oversubscribed_four_threads) { pool_exercise(4, 2000, 0); }
Test(pool, sleeping_workers_wake) { pool_exercise(3, 200, 3); }
Test(pool, single_thread_and_null) { pool_exercise(1, 10, 0); }

Test(pool, pinned_and_errors)
{
    shardlm_pool *pool = (shardlm_pool *)1;
    cr_assert_neq(shardlm_pool_new(0, 0, &pool), 0);
    cr_assert_null(pool);
    cr_assert_eq(shardlm_pool_new(2, 1, &pool), 0);
    pool_probe p = {.len = 10};
    p.data = calloc(p.len, sizeof(int));
    shardlm_pool_run(pool, probe_fn, &p);
    cr_assert_eq(atomic_load(&p.calls[1]), 1);
    free(p.data);
    shardlm_pool_free(pool);
    shardlm_pool_free(NULL);
    cr_assert_geq(shardlm_cpu_physical_cores(), 1);
}
