/* test_dispatch.c - the ISA tables of kernels/cpu never make a wider path
 * slower by leaving something out: every entry a narrower table has, a
 * wider one has too (on x86 an AVX-512 table without the Q4_0_R8 entry
 * once meant no repack and half the AVX2 decode speed), and on this CPU
 * the default path repacks whatever the AVX2 path repacks and runs, for
 * each weight type, the AVX2 kernel unless it holds one of its own. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "../kernels/cpu/cpu_internal.h"
#include "shardlm_kernels.h"

/* Every entry of shardlm_isa_ops, by name. */
#define ISA_FIELDS(X)                                                                                  \
    X(f32) X(f16) X(bf16) X(q8_0) X(q4_0) X(q4_0_r8) X(q8_0_r4) X(quant_x) X(rmsnorm) X(softmax)       \
    X(silu_mul) X(q4_1) X(q5_0) X(q5_1) X(q2_k) X(q3_k) X(q5_k) X(iq4_nl) X(iq4_xs)

/* Fails naming the first entry that narrow has and wide lacks. */
static void check_superset(const shardlm_isa_ops *narrow, const shardlm_isa_ops *wide)
{
#define CHECK_FIELD(f)                                                                                  \
    cr_expect(!narrow->f || wide->f, "the %s table lacks %s, which the narrower %s table has", wide->name, \
              #f, narrow->name);
    ISA_FIELDS(CHECK_FIELD)
#undef CHECK_FIELD
}

Test(dispatch, wider_tables_have_every_narrower_entry)
{
#if defined(__x86_64__)
    const shardlm_isa_ops *chain[] = {&shardlm_isa_scalar, &shardlm_isa_avx2, &shardlm_isa_avx512,
                                      &shardlm_isa_avx512vnni};
#elif defined(__aarch64__)
    const shardlm_isa_ops *chain[] = {&shardlm_isa_scalar, &shardlm_isa_neon};
#else
    const shardlm_isa_ops *chain[] = {&shardlm_isa_scalar};
#endif
    size_t n = sizeof chain / sizeof chain[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++) check_superset(chain[i], chain[j]);
#if defined(__x86_64__)
    /* The repacked kernels are what decode speed rests on: named here too. */
    for (size_t i = 1; i < n; i++) {
        cr_assert_not_null(chain[i]->q4_0_r8, "%s has no Q4_0_R8 kernel", chain[i]->name);
        cr_assert_not_null(chain[i]->q8_0_r4, "%s has no Q8_0_R4 kernel", chain[i]->name);
    }
#endif
}

/* Kernels (LAYOUT/ISA) of every weight type on one path. */
static void kernels_of(const char *isa, char out[][48])
{
    cr_assert_eq(shardlm_kernels_force_isa(isa), 0, "%s", isa);
    for (size_t k = 0; k < SHARDLM_KERNELS_N_DTYPES; k++) shardlm_kernels_kernel(shardlm_kernels_dtypes[k], out[k], 48);
}

/* A kernel an AVX-512 table holds instead of the AVX2 one: each measured
 * faster on Zen 5 (docs/PERFORMANCE.md, "AVX-512 kernels"). Anything else
 * the default path picks must be exactly what the AVX2 path picks. */
static int measured_faster(const char *kernel)
{
    static const char *const ok[] = {
        "q4_0_r8/avx512vnni",
        "q8_0_r4/avx512vnni",
        "q4_k/avx512vnni",
        "q5_k/avx512vnni",
        "q3_k/avx512vnni",
        "q2_k/avx512vnni",
        "q4_1/avx512vnni",
        "q5_0/avx512vnni",
        "q5_1/avx512vnni",
        "q6_k/avx512vnni",
        "iq4_nl/avx512vnni",
        "iq4_xs/avx512vnni",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(kernel, ok[i])) return 1;
    return 0;
}

Test(dispatch, default_path_never_picks_below_avx2)
{
    if (shardlm_kernels_force_isa("avx2") != 0) cr_skip_test("this CPU has no AVX2 path (SKIP: no x86 AVX2)");
    static const char *const wide[] = {"avx512", "avx512vnni"};
    char base[SHARDLM_KERNELS_N_DTYPES][48], got[SHARDLM_KERNELS_N_DTYPES][48];
    kernels_of("avx2", base);
    int ran = 0;
    for (size_t w = 0; w < 2; w++) {
        if (shardlm_kernels_force_isa(wide[w]) != 0) continue;
        ran++;
        kernels_of(wide[w], got);
        for (size_t k = 0; k < SHARDLM_KERNELS_N_DTYPES; k++) {
            const char *name = shardlm_dtype_name(shardlm_kernels_dtypes[k]);
            /* Same layout (the repack), and the AVX2 kernel or a measured one. */
            cr_expect(!strncmp(base[k], got[k], strcspn(base[k], "/")) && got[k][strcspn(base[k], "/")] == '/',
                      "%s: %s runs layout %s, avx2 runs %s", name, wide[w], got[k], base[k]);
            cr_expect(!strcmp(base[k], got[k]) || measured_faster(got[k]), "%s: %s picks %s, avx2 picks %s",
                      name, wide[w], got[k], base[k]);
        }
    }
    if (!ran) cr_log_info("this CPU has no AVX-512 path: only the tables were compared");
}

Test(dispatch, kernel_names)
{
    char buf[48];
    cr_assert_eq(shardlm_kernels_force_isa("scalar"), 0);
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_Q4_0, buf, sizeof buf), "q4_0/scalar");
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_Q6_K, buf, sizeof buf), "q6_k/scalar");
    if (shardlm_kernels_force_isa("avx2") != 0) return;
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_Q4_0, buf, sizeof buf), "q4_0_r8/avx2");
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_Q8_0, buf, sizeof buf), "q8_0_r4/avx2");
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_F16, buf, sizeof buf), "f16/avx2");
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_Q4_K, buf, sizeof buf), "q4_k/avx2");
    setenv("SHARDLM_REPACK", "0", 1);
    cr_assert_str_eq(shardlm_kernels_kernel(SHARDLM_DT_Q4_0, buf, sizeof buf), "q4_0/avx2");
    unsetenv("SHARDLM_REPACK");
}
