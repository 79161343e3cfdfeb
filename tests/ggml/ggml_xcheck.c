/* ggml_xcheck.c - shardlm's tensor types against ggml's own code, loaded at
 * run time from the llama.cpp peer (/work/shared/peers/llamacpp/setup.sh
 * installs its prebuilt libggml-base.so and libggml-cpu-*.so). For every
 * type shardlm computes with it checks:
 *   - names, block sizes and bytes of every ggml type id agree;
 *   - dequantisation is bitwise ggml's, on rows ggml quantised (its own
 *     quantiser), rows shardlm quantised, and blocks of random bytes (every
 *     bit pattern of codes and scales; the fp16 fields kept finite);
 *   - shardlm_matmul on every ISA this CPU has and ggml's vec_dot (on its
 *     own 8-bit activations) both stay within their stated tolerances of
 *     the exact dot product of the dequantised row.
 * Exit 0: all agree; 1: a mismatch (each printed); 77: the peer is not
 * installed (a failure instead when CI=true). Not a Criterion test, so
 * that ctest can report the skip. SHARDLM_LLAMACPP_DIR overrides the peer
 * directory ($HOME/.cache/shardlm-peers/llamacpp). */
#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shardlm_kernels.h"

/* ggml's public ABI (ggml.h / ggml-cpu.h), declared here so the test needs
 * no llama.cpp headers at build time. */
typedef void (*to_float_fn)(const void *x, float *y, int64_t k);
typedef void (*from_float_fn)(const float *x, void *y, int64_t k);
typedef void (*vec_dot_fn)(int n, float *s, size_t bs, const void *x, size_t bx, const void *y, size_t by, int nrc);
struct ggml_traits {
    const char *type_name;
    int64_t blck_size, blck_size_interleave;
    size_t type_size;
    bool is_quantized;
    to_float_fn to_float;
    from_float_fn from_float_ref;
};
struct ggml_traits_cpu {
    from_float_fn from_float;
    vec_dot_fn vec_dot;
    int vec_dot_type;
    int64_t nrows;
};

static struct {
    const struct ggml_traits *(*traits)(int);
    const struct ggml_traits_cpu *(*traits_cpu)(int);
    size_t (*quantize_chunk)(int, const float *, void *, int64_t, int64_t, int64_t, const float *);
    int64_t (*blck_size)(int);
    size_t (*type_size)(int);
    const char *(*type_name)(int);
    void (*cpu_init)(void);
} G;

static int g_fail;

#define FAIL(...)                                                                                                  \
    do {                                                                                                           \
        fprintf(stderr, "ggml_xcheck: FAIL: " __VA_ARGS__);                                                        \
        fputc('\n', stderr);                                                                                       \
        g_fail++;                                                                                                  \
    } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd64(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}
static float frand(void) { return (float)(rnd64() >> 40) * 0x1p-23f - 1.0f; } /* [-1, 1) */

/* ---- loading the peer ---- */

static int load_peer(void)
{
    const char *dir = getenv("SHARDLM_LLAMACPP_DIR"), *home = getenv("HOME");
    char base[1024], lib[1200];
    if (dir && *dir) snprintf(base, sizeof base, "%s", dir);
    else snprintf(base, sizeof base, "%s/.cache/shardlm-peers/llamacpp", home ? home : "/root");
    const char *bins = "node_modules/@node-llama-cpp/linux-x64/bins/linux-x64";
    snprintf(lib, sizeof lib, "%s/%s/libggml-base.so", base, bins);
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    const char *ci = getenv("CI");
    if (!h) {
        int ci_on = ci && !strcmp(ci, "true");
        fprintf(stderr, "ggml_xcheck: %s\n  the llama.cpp peer is not installed (/work/shared/peers/llamacpp/setup.sh)%s\n",
                dlerror(), ci_on ? "; CI=true requires it" : ": skipping");
        return ci_on ? 1 : 77;
    }
    __builtin_cpu_init();
    snprintf(lib, sizeof lib, "%s/%s/libggml-cpu-%s.so", base, bins, __builtin_cpu_supports("avx2") ? "haswell" : "x64");
    void *c = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!c) {
        fprintf(stderr, "ggml_xcheck: %s: %s\n", lib, dlerror());
        return 1;
    }
    *(void **)&G.traits = dlsym(h, "ggml_get_type_traits");
    *(void **)&G.quantize_chunk = dlsym(h, "ggml_quantize_chunk");
    *(void **)&G.blck_size = dlsym(h, "ggml_blck_size");
    *(void **)&G.type_size = dlsym(h, "ggml_type_size");
    *(void **)&G.type_name = dlsym(h, "ggml_type_name");
    *(void **)&G.traits_cpu = dlsym(c, "ggml_get_type_traits_cpu");
    *(void **)&G.cpu_init = dlsym(c, "ggml_cpu_init");
    if (!G.traits || !G.quantize_chunk || !G.blck_size || !G.type_size || !G.type_name || !G.traits_cpu ||
        !G.cpu_init) {
        fprintf(stderr, "ggml_xcheck: the peer's ggml lacks a symbol this check needs\n");
        return 1;
    }
    G.cpu_init();
    printf("ggml_xcheck: ggml from %s\n", base);
    return 0;
}

/* ---- the type table ---- */

/* ggml's names and sizes for every id shardlm's table has (0..42). Ids ggml
 * removed have size 0 there and must be unknown here. */
static void check_table(void)
{
    for (uint32_t t = 0; t <= 42; t++) {
        const char *gn = G.type_name((int)t);
        int64_t be = G.blck_size((int)t);
        if (be == 0) {
            if (shardlm_dtype_known(t)) FAIL("id %u: ggml has no layout (%s) but shardlm claims one", t, gn);
            continue;
        }
        if (strcasecmp(gn, shardlm_dtype_name(t)))
            FAIL("id %u: ggml calls it %s, shardlm %s", t, gn, shardlm_dtype_name(t));
        if ((int64_t)shardlm_dtype_block_elems(t) != be || shardlm_dtype_block_bytes(t) != G.type_size((int)t))
            FAIL("id %u (%s): ggml block %lld x %zu bytes, shardlm %zu x %zu", t, gn, (long long)be,
                 G.type_size((int)t), shardlm_dtype_block_elems(t), shardlm_dtype_block_bytes(t));
    }
}

/* ---- dequantisation ---- */

static const shardlm_dtype k_types[] = {SHARDLM_DT_F16,  SHARDLM_DT_BF16, SHARDLM_DT_Q4_0,  SHARDLM_DT_Q4_1,
                                        SHARDLM_DT_Q5_0, SHARDLM_DT_Q5_1, SHARDLM_DT_Q8_0,  SHARDLM_DT_Q2_K,
                                        SHARDLM_DT_Q3_K, SHARDLM_DT_Q4_K, SHARDLM_DT_Q5_K,  SHARDLM_DT_Q6_K,
                                        SHARDLM_DT_IQ4_NL, SHARDLM_DT_IQ4_XS};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

/* Offsets of the fp16 scale fields in a block (-1 ends the list); F16 and
 * BF16 are all scales. */
static void f16_fields(shardlm_dtype t, int *off)
{
    static const struct {
        shardlm_dtype t;
        int off[3];
    } f[] = {{SHARDLM_DT_Q4_0, {0, -1}},  {SHARDLM_DT_Q4_1, {0, 2, -1}},  {SHARDLM_DT_Q5_0, {0, -1}},
             {SHARDLM_DT_Q5_1, {0, 2, -1}}, {SHARDLM_DT_Q8_0, {0, -1}},  {SHARDLM_DT_Q2_K, {80, 82, -1}},
             {SHARDLM_DT_Q3_K, {108, -1}}, {SHARDLM_DT_Q4_K, {0, 2, -1}}, {SHARDLM_DT_Q5_K, {0, 2, -1}},
             {SHARDLM_DT_Q6_K, {208, -1}}, {SHARDLM_DT_IQ4_NL, {0, -1}}, {SHARDLM_DT_IQ4_XS, {0, -1}},
             {SHARDLM_DT_F16, {0, -1}},   {SHARDLM_DT_BF16, {0, -1}}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].t == t) memcpy(off, f[i].off, sizeof f[i].off);
}

/* Random bytes, with every fp16 (or bf16) field made finite. */
static void random_blocks(shardlm_dtype t, uint8_t *b, size_t nblocks)
{
    size_t bb = shardlm_dtype_block_bytes(t);
    for (size_t k = 0; k < nblocks * bb; k++) b[k] = (uint8_t)rnd64();
    int off[3];
    f16_fields(t, off);
    for (size_t k = 0; k < nblocks; k++)
        for (int f = 0; f < 3 && off[f] >= 0; f++) {
            uint8_t *p = b + k * bb + off[f];
            if (t == SHARDLM_DT_BF16) p[1] = (uint8_t)((p[1] & 0x80) | ((p[1] & 0x7f) % 0x7f)); /* exp < 255 */
            else p[1] = (uint8_t)((p[1] & 0x83) | (((p[1] >> 2) & 0x1f) % 31) << 2);          /* exp < 31 */
        }
}

static void compare_dequant(shardlm_dtype t, const uint8_t *q, size_t n, const char *what)
{
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    shardlm_dequant_row(t, q, a, n);
    G.traits((int)t)->to_float(q, b, (int64_t)n);
    size_t bad = 0, first = 0;
    for (size_t k = 0; k < n; k++)
        if (memcmp(&a[k], &b[k], sizeof a[k]) && !(isnan(a[k]) && isnan(b[k])) && !bad++) first = k;
    if (bad)
        FAIL("%s %s: %zu of %zu values differ from ggml's dequantisation; first at %zu: %.9g vs ggml %.9g",
             shardlm_dtype_name(t), what, bad, n, first, a[first], b[first]);
    free(a);
    free(b);
}

/* Rows of several shapes of data: uniform, outliers, all positive, tiny,
 * zeros, growing. */
static void fill_kind(float *x, size_t n, int kind)
{
    for (size_t i = 0; i < n; i++) {
        float u = frand();
        x[i] = kind == 0 ? u : kind == 1 ? u * (i % 97 == 0 ? 50.0f : 1.0f) : kind == 2 ? fabsf(u) + 3.0f
               : kind == 3 ? u * 1e-4f : kind == 4 ? 0.0f : u * (float)(i / 256 + 1) * 0.01f;
    }
}

static void check_dequant(shardlm_dtype t)
{
    enum { N = 4096 };
    size_t rb = shardlm_dtype_row_bytes(t, N);
    float *x = malloc(N * sizeof *x);
    uint8_t *q = malloc(rb);
    for (int kind = 0; kind < 6; kind++) {
        char what[64];
        fill_kind(x, N, kind);
        G.quantize_chunk((int)t, x, q, 0, 1, N, NULL);
        snprintf(what, sizeof what, "ggml-quantised row (data kind %d)", kind);
        compare_dequant(t, q, N, what);
        shardlm_quant_row(t, x, q, N);
        snprintf(what, sizeof what, "shardlm-quantised row (data kind %d)", kind);
        compare_dequant(t, q, N, what);
    }
    for (int rep = 0; rep < 16; rep++) {
        random_blocks(t, q, N / shardlm_dtype_block_elems(t));
        compare_dequant(t, q, N, "random-byte blocks");
    }
    free(x);
    free(q);
}

/* ---- dot products ---- */

/* The per-element offset (min) term of a type, for the f32 rounding allowance. */
static double offset_of(shardlm_dtype t, const uint8_t *row, size_t c)
{
    size_t be = shardlm_dtype_block_elems(t), bb = shardlm_dtype_block_bytes(t);
    const uint8_t *b = row + c / be * bb;
    uint16_t h;
    switch (t) {
    case SHARDLM_DT_Q4_1:
    case SHARDLM_DT_Q5_1: memcpy(&h, b + 2, 2); return fabs(shardlm_f16_to_f32(h));
    case SHARDLM_DT_Q4_0: memcpy(&h, b, 2); return 8.0 * fabs(shardlm_f16_to_f32(h));
    case SHARDLM_DT_Q2_K: memcpy(&h, b + 82, 2); return 15.0 * fabs(shardlm_f16_to_f32(h));
    case SHARDLM_DT_Q4_K:
    case SHARDLM_DT_Q5_K: memcpy(&h, b + 2, 2); return 63.0 * fabs(shardlm_f16_to_f32(h));
    default: return 0.0;
    }
}

/* Bound on |dot - exact| when x is replaced by blocks of `blk` values
 * rounded to amax/127 steps (scale_err: extra relative error of a stored
 * scale), or for float activations by a relative rounding `rel`. */
static double act_bound(const float *w, const float *x, size_t n, size_t blk, double scale_err, double rel)
{
    double e = 0.0;
    if (blk == 0) {
        for (size_t c = 0; c < n; c++) e += fabs((double)w[c] * x[c]) * rel;
        return e;
    }
    for (size_t b0 = 0; b0 < n; b0 += blk) {
        double amax = 0.0, sw = 0.0;
        for (size_t c = b0; c < b0 + blk; c++) {
            amax = fmax(amax, fabs(x[c]));
            sw += fabs(w[c]);
        }
        e += amax / 127.0 * (0.5 + 127.0 * scale_err) * sw;
    }
    return e;
}

static const char *const k_isas[] = {"scalar", "avx2", "avx512", "avx512vnni", "neon"};

static void check_dot(shardlm_dtype t)
{
    enum { N = 4096 };
    size_t rb = shardlm_dtype_row_bytes(t, N);
    float *w = malloc(N * sizeof *w), *x = malloc(N * sizeof *x), y;
    uint8_t *q = malloc(rb), *xq = malloc(N * 4 + 1024);
    const struct ggml_traits_cpu *ct = G.traits_cpu((int)t);
    int vt = ct->vec_dot_type;
    const char *vn = G.type_name(vt);
    size_t vblk = G.traits(vt)->is_quantized ? (size_t)G.blck_size(vt) : 0;
    /* q8_0/q8_1 store their scale as fp16 (relative error 2^-11); q8_K as f32. */
    double vscale = vblk == 32 ? 0x1p-11 : 0.0, vrel = !strcmp(vn, "bf16") ? 0x1p-8 : 0x1p-11;
    double worst_s = 0.0, worst_g = 0.0;
    for (int rep = 0; rep < 8; rep++) {
        fill_kind(x, N, rep % 2 ? 1 : 0);
        G.quantize_chunk((int)t, x, q, 0, 1, N, NULL);
        shardlm_dequant_row(t, q, w, N);
        for (size_t c = 0; c < N; c++) x[c] = frand() * (c % 97 == 0 ? 20.0f : 1.0f);
        double exact = 0.0, sabs = 0.0;
        for (size_t c = 0; c < N; c++) {
            exact += (double)w[c] * x[c];
            sabs += (fabs(w[c]) + offset_of(t, q, c)) * fabs(x[c]);
        }
        /* ggml: its activation type, its kernel. */
        G.traits_cpu(vt)->from_float(x, xq, N);
        float g;
        ct->vec_dot(N, &g, 0, q, 0, xq, 0, 1);
        double tol_g = act_bound(w, x, N, vblk, vscale, vrel) * 1.001 + 1e-4 * sabs;
        if (!(fabs(g - exact) <= tol_g)) FAIL("%s: ggml vec_dot %.9g, exact %.9g, tol %.3g", shardlm_dtype_name(t), g, exact, tol_g);
        worst_g = fmax(worst_g, fabs(g - exact) / tol_g);
        /* shardlm: 8-bit blocks of 32. */
        int is_float = t == SHARDLM_DT_F16 || t == SHARDLM_DT_BF16;
        /* shardlm's scale may be rounded to f16 too (as ggml's q8_0). */
        double tol_s = (is_float ? 1e-5 * sabs : act_bound(w, x, N, 32, 0x1p-11, 0.0) * 1.001 + 1e-4 * sabs) + 1e-30;
        for (size_t s = 0; s < sizeof k_isas / sizeof k_isas[0]; s++) {
            if (shardlm_kernels_force_isa(k_isas[s]) != 0) continue;
            shardlm_matmul(NULL, t, q, 1, N, x, 1, &y);
            if (!(fabs(y - exact) <= tol_s))
                FAIL("%s %s: shardlm_matmul %.9g, exact %.9g, tol %.3g (ggml %.9g)", k_isas[s], shardlm_dtype_name(t), y,
                     exact, tol_s, g);
            worst_s = fmax(worst_s, fabs(y - exact) / tol_s);
        }
    }
    printf("  %-7s dequant bitwise = ggml; dot: shardlm within %.2f, ggml (%s activations) within %.2f of "
           "their tolerances\n",
           shardlm_dtype_name(t), worst_s, vn, worst_g);
    free(w), free(x), free(q), free(xq);
}

int main(void)
{
    int rc = load_peer();
    if (rc) return rc;
    check_table();
    for (size_t i = 0; i < N_TYPES; i++) {
        check_dequant(k_types[i]);
        check_dot(k_types[i]);
    }
    if (g_fail) {
        fprintf(stderr, "ggml_xcheck: %d failures\n", g_fail);
        return 1;
    }
    printf("ggml_xcheck: all %zu types agree with ggml\n", N_TYPES);
    return 0;
}
