/* test_repack.c - Q4_0 and Q8_0 repacked at load time (SHARDLM_DT_Q4_0_R8,
 * SHARDLM_DT_Q8_0_R4, kernels/cpu/repack.c): on every SIMD path this CPU
 * supports, with and without a thread pool, shardlm_matmul on the repacked
 * matrix must give bitwise the result of the plain matrix (so batch
 * invariance and every golden output carry over), and each repacked row
 * must dequantise to the plain row; and shardlm_matmul_many (several
 * products of one input in one pool run) must give each product's bits;
 * and weight memory must be advised for huge pages. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_kernels.h"
#include "test_util.h"



/* Random rows of type t; row scales vary over 3 decades as real layers' do. */
static void *q_rows(shardlm_dtype t, size_t rows, size_t cols)
{
    size_t rb = shardlm_dtype_row_bytes(t, cols);
    uint8_t *w = malloc(rb * rows);
    float *tmp = malloc(cols * sizeof(float));
    cr_assert(w && tmp);
    for (size_t r = 0; r < rows; r++) {
        float scale = powf(10.0f, 1.5f * tu_frand());
        for (size_t c = 0; c < cols; c++) tmp[c] = scale * tu_frand();
        shardlm_quant_row(t, tmp, w + r * rb, cols);
    }
    free(tmp);
    return w;
}

static void *q4_rows(size_t rows, size_t cols) { return q_rows(SHARDLM_DT_Q4_0, rows, cols); }

/* The repacked type of a plain one, and the fewest rows it repacks. */
static shardlm_dtype packed_type(shardlm_dtype t) { return t == SHARDLM_DT_Q4_0 ? SHARDLM_DT_Q4_0_R8 : SHARDLM_DT_Q8_0_R4; }
static size_t group_rows(shardlm_dtype t) { return t == SHARDLM_DT_Q4_0 ? 8 : 4; }

/* A path with a repacked kernel, made current; NULL when the CPU has none. */
static const char *force_repacking_isa(void)
{
    static const char *const fast[] = {"avx2"};
    for (size_t s = 0; s < sizeof fast / sizeof fast[0]; s++)
        if (shardlm_kernels_force_isa(fast[s]) == 0) return fast[s];
    return NULL;
}

static void check_same(shardlm_pool *pool, shardlm_dtype pt, const void *plain, const void *r8, size_t rows,
                       size_t cols, const float *x, size_t n, const char *isa)
{
    float *y0 = malloc(n * rows * sizeof(float)), *y1 = malloc(n * rows * sizeof(float));
    cr_assert(y0 && y1);
    for (size_t k = 0; k < n * rows; k++) y0[k] = y1[k] = NAN;
    shardlm_matmul(pool, pt, plain, rows, cols, x, n, y0);
    shardlm_matmul(pool, packed_type(pt), r8, rows, cols, x, n, y1);
    for (size_t k = 0; k < n * rows; k++)
        cr_assert(!memcmp(&y0[k], &y1[k], sizeof(float)),
                  "%s %s rows=%zu cols=%zu n=%zu pool=%d: y[%zu][%zu] plain %.9g repacked %.9g", isa, shardlm_dtype_name(pt), rows, cols, n,
                  shardlm_pool_size(pool), k / rows, k % rows, y0[k], y1[k]);
    free(y0);
    free(y1);
}

/* Every path, no pool and a 2-thread pool, for one matrix. */
static void check_matrix(shardlm_pool *pool, shardlm_dtype pt, size_t rows, size_t cols)
{
    static const size_t n_l[] = {1, 2, 5, 13, 16}; /* 13: a whole 8-input VNNI tile and a 5-input tail */
    void *plain = q_rows(pt, rows, cols), *r8;
    shardlm_dtype t;
    cr_assert_not_null(force_repacking_isa());
    cr_assert_eq(shardlm_repack(pt, plain, rows, cols, &r8, &t), 0);
    if (rows < group_rows(pt)) { /* nothing to interleave: declined */
        cr_assert_null(r8);
        cr_assert_eq(t, pt);
        free(plain);
        return;
    }
    cr_assert_not_null(r8);
    cr_assert_eq(t, packed_type(pt));
    for (size_t ni = 0; ni < sizeof n_l / sizeof n_l[0]; ni++) {
        size_t n = n_l[ni];
        float *x = malloc(n * cols * sizeof(float));
        cr_assert(x);
        for (size_t k = 0; k < n * cols; k++) x[k] = (k % 97 == 0 ? 20.0f : 1.0f) * tu_frand();
        for (size_t s = 0; s < TU_N_ISAS; s++) {
            if (shardlm_kernels_force_isa(tu_isas[s]) != 0) continue;
            check_same(NULL, pt, plain, r8, rows, cols, x, n, tu_isas[s]);
            check_same(pool, pt, plain, r8, rows, cols, x, n, tu_isas[s]);
        }
        free(x);
    }
    free(plain);
    free(r8);
}

Test(repack, matmul_bitwise_equal_on_every_path)
{
    if (!force_repacking_isa()) cr_skip_test("no path with a repacked kernel on this CPU");
    /* cols: 1 block; 2; 11 (a short last run with a pair and an odd block);
     * 66 and 72 (a second pass of QT_KC = 64 blocks, short and full run);
     * 129 (odd, as in the kernel tests). */
    static const size_t rows_l[] = {1, 3, 4, 6, 7, 8, 9, 17, 1000}, cols_l[] = {32, 64, 352, 2112, 2304, 4128};
    shardlm_pool *pool;
    cr_assert_eq(shardlm_pool_new(2, 0, &pool), 0);
    for (size_t ri = 0; ri < sizeof rows_l / sizeof rows_l[0]; ri++)
        for (size_t ci = 0; ci < sizeof cols_l / sizeof cols_l[0]; ci++) {
            check_matrix(pool, SHARDLM_DT_Q4_0, rows_l[ri], cols_l[ci]);
            check_matrix(pool, SHARDLM_DT_Q8_0, rows_l[ri], cols_l[ci]);
        }
    shardlm_pool_free(pool);
}

static void check_dequant_rows(shardlm_dtype pt)
{
    size_t rows = 21, cols = 352, rb = shardlm_dtype_row_bytes(pt, cols);
    uint8_t *plain = q_rows(pt, rows, cols);
    void *r8;
    shardlm_dtype t;
    cr_assert_eq(shardlm_repack(pt, plain, rows, cols, &r8, &t), 0);
    cr_assert_eq(t, packed_type(pt));
    float a[352], b[352];
    for (size_t r = 0; r < rows; r++) {
        shardlm_dequant_row(pt, plain + r * rb, a, cols);
        shardlm_dequant_mat_row(t, r8, rows, cols, r, b);
        cr_assert(!memcmp(a, b, sizeof a), "%s row %zu", shardlm_dtype_name(pt), r);
        shardlm_dequant_mat_row(pt, plain, rows, cols, r, b);
        cr_assert(!memcmp(a, b, sizeof a), "%s plain row %zu", shardlm_dtype_name(pt), r);
    }
    free(plain);
    free(r8);
}

Test(repack, dequant_rows_equal_plain)
{
    if (!force_repacking_isa()) cr_skip_test("no path with a repacked kernel on this CPU");
    check_dequant_rows(SHARDLM_DT_Q4_0);
    check_dequant_rows(SHARDLM_DT_Q8_0);
}

Test(repack, declines_when_not_faster)
{
    size_t rows = 16, cols = 64;
    void *plain = q4_rows(rows, cols), *r8 = plain;
    shardlm_dtype t;
    cr_assert_eq(shardlm_kernels_force_isa("scalar"), 0);
    cr_assert_eq(shardlm_repack(SHARDLM_DT_Q4_0, plain, rows, cols, &r8, &t), 0);
    cr_assert(r8 == NULL && t == SHARDLM_DT_Q4_0, "the scalar path has no repacked kernel");
    cr_assert_eq(shardlm_repack(SHARDLM_DT_Q8_0, plain, 1, 32, &r8, &t), 0);
    cr_assert(r8 == NULL && t == SHARDLM_DT_Q8_0, "the scalar path has no Q8_0_R4 kernel");
    cr_assert_eq(shardlm_repack(SHARDLM_DT_Q4_K, plain, 1, 256, &r8, &t), 0);
    cr_assert(r8 == NULL && t == SHARDLM_DT_Q4_K, "only Q4_0 and Q8_0 are repacked");
    if (force_repacking_isa()) {
        setenv("SHARDLM_REPACK", "0", 1);
        cr_assert_eq(shardlm_repack(SHARDLM_DT_Q4_0, plain, rows, cols, &r8, &t), 0);
        unsetenv("SHARDLM_REPACK");
        cr_assert(r8 == NULL && t == SHARDLM_DT_Q4_0, "SHARDLM_REPACK=0 turns it off");
    }
    free(plain);
}

/* The AVX-512 VNNI Q8_0_R4 kernel (kernels/cpu/matmul_avx512.c) against the
 * AVX2 plain Q8_0 kernel, whose arithmetic it promises to keep bit for bit:
 * one group, groups split over a 2-thread pool, plain tails of 1 row, decode
 * and batches. */
Test(repack, q8_0_r4_avx512vnni_equals_avx2_plain)
{
    if (shardlm_kernels_force_isa("avx512vnni") != 0)
        cr_skip_test("SKIP: this CPU has no AVX-512 VNNI, so the VNNI Q8_0_R4 kernel cannot run here");
    char k[48];
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_Q8_0, k, sizeof k), "q8_0_r4/avx512vnni");
    static const size_t rows_l[] = {4, 37, 301}, n_l[] = {1, 2, 5, 16, 17};
    size_t cols = 67 * SHARDLM_QK;
    shardlm_pool *pool;
    cr_assert_eq(shardlm_pool_new(2, 0, &pool), 0);
    for (size_t ri = 0; ri < 3; ri++) {
        size_t rows = rows_l[ri];
        void *plain = q_rows(SHARDLM_DT_Q8_0, rows, cols), *r4;
        shardlm_dtype t;
        cr_assert_eq(shardlm_repack(SHARDLM_DT_Q8_0, plain, rows, cols, &r4, &t), 0);
        cr_assert_eq(t, SHARDLM_DT_Q8_0_R4);
        for (size_t ni = 0; ni < 5; ni++) {
            size_t n = n_l[ni];
            float *x = malloc(n * cols * sizeof(float)), *y0 = malloc(n * rows * sizeof(float)),
                  *y1 = malloc(n * rows * sizeof(float));
            cr_assert(x && y0 && y1);
            for (size_t c = 0; c < n * cols; c++) x[c] = tu_frand();
            cr_assert_eq(shardlm_kernels_force_isa("avx2"), 0);
            shardlm_matmul(NULL, SHARDLM_DT_Q8_0, plain, rows, cols, x, n, y0);
            cr_assert_eq(shardlm_kernels_force_isa("avx512vnni"), 0);
            shardlm_matmul(pool, SHARDLM_DT_Q8_0_R4, r4, rows, cols, x, n, y1);
            for (size_t e = 0; e < n * rows; e++)
                cr_assert(!memcmp(&y0[e], &y1[e], sizeof(float)), "rows=%zu n=%zu y[%zu][%zu]: avx2 %.9g vnni %.9g",
                          rows, n, e / rows, e % rows, y0[e], y1[e]);
            free(x);
            free(y0);
            free(y1);
        }
        free(plain);
        free(r4);
    }
    shardlm_pool_free(pool);
}

/* shardlm_matmul_many (q/k/v and gate/up in one pool run, one quantisation
 * of x) against each product alone without a pool, bitwise: on every path,
 * repacked and plain matrices, rows that split into uneven chunks and plain
 * tails, a mixed-type set (which runs one by one), 2 and 3 threads. */
static void check_many(shardlm_pool *pool, const shardlm_dtype *ts, const size_t *rows, int k, size_t cols,
                       const char *isa)
{
    static const size_t n_l[] = {1, 3, 5};
    void *w[SHARDLM_MATMUL_MANY_MAX];
    shardlm_matmul_part parts[SHARDLM_MATMUL_MANY_MAX];
    for (int i = 0; i < k; i++) {
        w[i] = q_rows(ts[i], rows[i], cols);
        void *packed;
        shardlm_dtype t;
        cr_assert_eq(shardlm_repack(ts[i], w[i], rows[i], cols, &packed, &t), 0);
        if (packed) free(w[i]), w[i] = packed;
        parts[i] = (shardlm_matmul_part){t, w[i], rows[i]};
    }
    for (size_t ni = 0; ni < 3; ni++) {
        size_t n = n_l[ni];
        float *x = malloc(n * cols * sizeof(float)), *ys[SHARDLM_MATMUL_MANY_MAX], *ref[SHARDLM_MATMUL_MANY_MAX];
        cr_assert(x);
        for (size_t c = 0; c < n * cols; c++) x[c] = tu_frand();
        for (int i = 0; i < k; i++) {
            ys[i] = malloc(n * rows[i] * sizeof(float)), ref[i] = malloc(n * rows[i] * sizeof(float));
            cr_assert(ys[i] && ref[i]);
            for (size_t e = 0; e < n * rows[i]; e++) ys[i][e] = NAN;
            shardlm_matmul(NULL, parts[i].t, parts[i].w, rows[i], cols, x, n, ref[i]);
        }
        shardlm_matmul_many(pool, k, parts, cols, x, n, ys);
        for (int i = 0; i < k; i++) {
            for (size_t e = 0; e < n * rows[i]; e++)
                cr_assert(!memcmp(&ys[i][e], &ref[i][e], sizeof(float)),
                          "%s %s part %d of %d rows=%zu n=%zu threads=%d: y[%zu][%zu] many %.9g alone %.9g", isa,
                          shardlm_dtype_name(parts[i].t), i, k, rows[i], n, shardlm_pool_size(pool), e / rows[i],
                          e % rows[i], ys[i][e], ref[i][e]);
            free(ys[i]), free(ref[i]);
        }
        free(x);
    }
    for (int i = 0; i < k; i++) free(w[i]);
}

Test(repack, matmul_many_equals_one_by_one)
{
    static const size_t qkv[] = {203, 37, 41}, gu[] = {301, 301};
    static const shardlm_dtype q4[] = {SHARDLM_DT_Q4_0, SHARDLM_DT_Q4_0, SHARDLM_DT_Q4_0},
                               q8[] = {SHARDLM_DT_Q8_0, SHARDLM_DT_Q8_0, SHARDLM_DT_Q8_0},
                               f32[] = {SHARDLM_DT_F32, SHARDLM_DT_F32, SHARDLM_DT_F32},
                               mixed[] = {SHARDLM_DT_Q4_0, SHARDLM_DT_Q8_0, SHARDLM_DT_Q4_K};
    size_t cols = 9 * 256; /* whole Q4_K blocks */
    int runs = 0;
    for (size_t s = 0; s < TU_N_ISAS; s++) {
        if (shardlm_kernels_force_isa(tu_isas[s]) != 0) continue;
        for (int th = 1; th <= 3; th++) { /* one thread: one quantisation of x too */
            shardlm_pool *pool;
            cr_assert_eq(shardlm_pool_new(th, 0, &pool), 0);
            check_many(pool, q4, qkv, 3, cols, tu_isas[s]);
            check_many(pool, q8, qkv, 3, cols, tu_isas[s]);
            check_many(pool, q4, gu, 2, cols, tu_isas[s]);
            check_many(pool, q8, gu, 2, cols, tu_isas[s]);
            check_many(pool, f32, qkv, 3, cols, tu_isas[s]);
            check_many(pool, mixed, qkv, 3, cols, tu_isas[s]);
            shardlm_pool_free(pool);
            runs++;
        }
    }
    cr_assert_gt(runs, 0);
}

/* The VmFlags of the mapping holding p carry "hg" (MADV_HUGEPAGE). */
static int advised_huge(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    cr_assert(f, "cannot read /proc/self/smaps");
    char line[512];
    int in = 0, hg = 0;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) { /* a mapping's header line */
            in = a >= lo && a < hi;
        } else if (in && !strncmp(line, "VmFlags:", 8)) {
            hg = strstr(line, " hg") != NULL;
            break;
        }
    }
    fclose(f);
    return hg;
}

/* Weights of 2 MiB and more sit 2 MiB-aligned in memory advised for huge
 * pages (the streams then need 512x fewer TLB entries); smaller ones and
 * SHARDLM_HUGEPAGES=0 get plain malloc, which is not advised. */
Test(repack, weights_alloc_advises_huge_pages)
{
    unsetenv("SHARDLM_HUGEPAGES");
    size_t n = (size_t)6 << 20;
    uint8_t *p = shardlm_weights_alloc(n);
    cr_assert(p);
    memset(p, 1, n);
    cr_assert_eq((uintptr_t)p % (2u << 20), 0, "not 2 MiB-aligned: %p", (void *)p);
    cr_assert(advised_huge(p), "the weights' mapping lacks MADV_HUGEPAGE (VmFlags hg)");
    cr_assert(advised_huge(p + n - (2u << 20) - 1));
    free(p);
    setenv("SHARDLM_HUGEPAGES", "0", 1);
    uint8_t *q = shardlm_weights_alloc(n);
    unsetenv("SHARDLM_HUGEPAGES");
    cr_assert(q);
    cr_assert(!advised_huge(q), "SHARDLM_HUGEPAGES=0 still advised huge pages");
    free(q);
}
