/* matmul.c - picks the SIMD path once from cpuid (or SHARDLM_ISA), and
 * drives the matrix products: quantises the activations for the block
 * types, then splits the output rows over the thread pool in chunks taken
 * from a shared counter, so a thread slowed by another rank on its core
 * simply takes fewer chunks. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <cpuid.h>
#include <emmintrin.h>
#endif

#include "cpu_internal.h"
#include "quant_k.h"

static const shardlm_isa_ops *g_isa;
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;

int shardlm_cpu_has_f16c(void)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
#else
    return 0;
#endif
}

/* NULL when the name is unknown or the CPU lacks that path. */
static const shardlm_isa_ops *isa_lookup(const char *name, int *known)
{
    *known = 1;
    if (!strcmp(name, "scalar")) return &shardlm_isa_scalar;
#if defined(__x86_64__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               shardlm_cpu_has_f16c();
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl");
    int vnni = avx512 && __builtin_cpu_supports("avx512vnni");
    if (!strcmp(name, "avx2")) return avx2 ? &shardlm_isa_avx2 : NULL;
    if (!strcmp(name, "avx512")) return vnni ? &shardlm_isa_avx512vnni : avx512 ? &shardlm_isa_avx512 : NULL;
    if (!strcmp(name, "avx512vnni")) return vnni ? &shardlm_isa_avx512vnni : NULL;
    if (!strcmp(name, "neon")) return NULL;
#elif defined(__aarch64__)
    if (!strcmp(name, "neon")) return &shardlm_isa_neon;
    if (!strcmp(name, "avx2") || !strcmp(name, "avx512") || !strcmp(name, "avx512vnni")) return NULL;
#else
    if (!strcmp(name, "avx2") || !strcmp(name, "avx512") || !strcmp(name, "avx512vnni") ||
        !strcmp(name, "neon"))
        return NULL;
#endif
    *known = 0;
    return NULL;
}

static const shardlm_isa_ops *isa_best(void)
{
    static const char *const order[] = {"avx512vnni", "avx512", "avx2", "neon", "scalar"};
    int known;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        const shardlm_isa_ops *o = isa_lookup(order[i], &known);
        if (o) return o;
    }
    return &shardlm_isa_scalar;
}

static void isa_init(void)
{
    const char *env = getenv("SHARDLM_ISA");
    if (env && *env) {
        int known;
        const shardlm_isa_ops *o = isa_lookup(env, &known);
        if (o) {
            g_isa = o;
            return;
        }
        fprintf(stderr, "shardlm: SHARDLM_ISA=%s %s; using %s\n", env,
                known ? "is not supported by this CPU" : "is unknown (scalar|avx2|avx512|avx512vnni|neon)",
                isa_best()->name);
    }
    g_isa = isa_best();
}

static const shardlm_isa_ops *isa(void)
{
    pthread_once(&g_isa_once, isa_init);
    return g_isa;
}

const char *shardlm_kernels_isa(void) { return isa()->name; }

int shardlm_isa_has_q4_0_r8(void) { return isa()->q4_0_r8 != NULL; }

int shardlm_isa_has_q8_0_r4(void) { return isa()->q8_0_r4 != NULL; }

int shardlm_kernels_force_isa(const char *name)
{
    int known;
    isa();
    const shardlm_isa_ops *o = name ? isa_lookup(name, &known) : NULL;
    if (!o) return -1;
    g_isa = o;
    return 0;
}

/* ---- elementwise ops ---- */

void shardlm_rmsnorm(float *out, const float *x, const float *weight, size_t n, float eps)
{
    isa()->rmsnorm(out, x, weight, n, eps);
}

void shardlm_softmax(float *x, size_t n) { isa()->softmax(x, n); }

void shardlm_silu_mul(float *a, const float *b, size_t n) { isa()->silu_mul(a, b, n); }

/* ---- matrix products ---- */

typedef struct {
    shardlm_mm_args a;
    shardlm_mm_fn fn;
    shardlm_quant_x_fn quant_x;
    const float *xf;
    size_t chunk;
    _Atomic size_t next;
} mm_job;

static void mm_rows_task(void *ctx, int tid, int nth)
{
    (void)tid;
    (void)nth;
    mm_job *j = ctx;
    for (;;) {
        size_t r0 = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed) * j->chunk;
        if (r0 >= j->a.rows) return;
        size_t r1 = r0 + j->chunk < j->a.rows ? r0 + j->chunk : j->a.rows;
        j->fn(&j->a, r0, r1);
    }
}

/* xo of cpu_internal.h: 8 * each block's sum of int8 activations. On
 * x86-64 (SSE2 is baseline) psadbw sums the bytes flipped to unsigned
 * (x + 128), a few instructions per block instead of 32 scalar adds. */
static void mm_block_sums(const int8_t *q, size_t nb, int32_t *xo)
{
    for (size_t b = 0; b < nb; b++) {
        const int8_t *p = q + b * SHARDLM_QK;
#if defined(__SSE2__)
        const __m128i flip = _mm_set1_epi8((char)0x80), zero = _mm_setzero_si128();
        __m128i lo = _mm_sad_epu8(_mm_xor_si128(_mm_loadu_si128((const __m128i *)p), flip), zero);
        __m128i hi = _mm_sad_epu8(_mm_xor_si128(_mm_loadu_si128((const __m128i *)(p + 16)), flip), zero);
        __m128i t = _mm_add_epi64(lo, hi);
        int32_t s = _mm_cvtsi128_si32(t) + _mm_cvtsi128_si32(_mm_unpackhi_epi64(t, t)) - 128 * SHARDLM_QK;
#else
        int32_t s = 0;
        for (size_t k = 0; k < SHARDLM_QK; k++) s += p[k];
#endif
        xo[b] = 8 * s;
    }
}

static void mm_quant_task(void *ctx, int tid, int nth)
{
    mm_job *j = ctx;
    size_t nb = j->a.cols / SHARDLM_QK;
    for (size_t i = (size_t)tid; i < j->a.n; i += (size_t)nth) {
        int8_t *q = (int8_t *)j->a.xq + i * j->a.cols;
        j->quant_x(j->xf + i * j->a.cols, j->a.cols, q, (float *)j->a.xd + i * nb, (float *)j->a.xs + i * nb);
        if (j->a.xo) mm_block_sums(q, nb, (int32_t *)j->a.xo + i * nb);
    }
}

static shardlm_mm_fn mm_fn_for(const shardlm_isa_ops *o, shardlm_dtype t)
{
    switch (t) {
    case SHARDLM_DT_F32: return o->f32;
    case SHARDLM_DT_F16: return o->f16;
    case SHARDLM_DT_BF16: return o->bf16;
    case SHARDLM_DT_Q8_0: return o->q8_0;
    case SHARDLM_DT_Q4_0: return o->q4_0;
    case SHARDLM_DT_Q4_K:
    case SHARDLM_DT_Q6_K: return shardlm_matmul_k_pick(o, t); /* matmul_k.c */
    case SHARDLM_DT_Q4_1: return o->q4_1;
    case SHARDLM_DT_Q5_0: return o->q5_0;
    case SHARDLM_DT_Q5_1: return o->q5_1;
    case SHARDLM_DT_Q2_K: return o->q2_k;
    case SHARDLM_DT_Q3_K: return o->q3_k;
    case SHARDLM_DT_Q5_K: return o->q5_k;
    case SHARDLM_DT_IQ4_NL: return o->iq4_nl;
    case SHARDLM_DT_IQ4_XS: return o->iq4_xs;
    /* Never another path's R8 kernel: its sums would be ordered differently. */
    case SHARDLM_DT_Q4_0_R8: return o->q4_0_r8 ? o->q4_0_r8 : shardlm_r8_generic;
    case SHARDLM_DT_Q8_0_R4: return o->q8_0_r4 ? o->q8_0_r4 : shardlm_r4_generic;
    }
    return NULL;
}

static shardlm_mm_fn mm_fn_pick(const shardlm_isa_ops *o, shardlm_dtype t)
{
    shardlm_mm_fn f = mm_fn_for(o, t);
    /* Every table is complete (tests/test_dispatch.c); this is a safety net. */
    if (!f) f = mm_fn_for(&shardlm_isa_scalar, t);
    return f;
}

/* The layout shardlm_repack gives type t on path o (a matrix of many rows). */
static shardlm_dtype mm_layout(const shardlm_isa_ops *o, shardlm_dtype t)
{
    const char *env = getenv("SHARDLM_REPACK");
    if (env && !strcmp(env, "0")) return t;
    if (t == SHARDLM_DT_Q4_0 && o->q4_0_r8) return SHARDLM_DT_Q4_0_R8;
    if (t == SHARDLM_DT_Q8_0 && o->q8_0_r4) return SHARDLM_DT_Q8_0_R4;
    return t;
}

/* The narrowest table holding f for type t: the kernel's own ISA. */
static const char *mm_fn_origin(shardlm_dtype t, shardlm_mm_fn f)
{
    static const shardlm_isa_ops *const all[] = {
        &shardlm_isa_scalar,
#if defined(__x86_64__)
        &shardlm_isa_avx2, &shardlm_isa_avx512, &shardlm_isa_avx512vnni,
#endif
#if defined(__aarch64__)
        &shardlm_isa_neon,
#endif
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (mm_fn_for(all[i], t) == f) return all[i]->name;
    return "?";
}

const char *shardlm_kernels_layout_kernel(shardlm_dtype l, char *buf, size_t len)
{
    shardlm_mm_fn f = mm_fn_pick(isa(), l);
    shardlm_dtype base = l == SHARDLM_DT_Q4_0_R8 ? SHARDLM_DT_Q4_0 : l == SHARDLM_DT_Q8_0_R4 ? SHARDLM_DT_Q8_0 : l;
    if (!f || !shardlm_dtype_row_bytes(base, 256)) snprintf(buf, len, "none");
    else
        snprintf(buf, len, "%s/%s",
                 l == SHARDLM_DT_Q4_0_R8   ? "q4_0_r8"
                 : l == SHARDLM_DT_Q8_0_R4 ? "q8_0_r4"
                                           : shardlm_dtype_name(l),
                 mm_fn_origin(l, f));
    return buf;
}

const char *shardlm_kernels_kernel(shardlm_dtype t, char *buf, size_t len)
{
    return shardlm_kernels_layout_kernel(mm_layout(isa(), t), buf, len);
}

const shardlm_dtype shardlm_kernels_dtypes[SHARDLM_KERNELS_N_DTYPES] = {
    SHARDLM_DT_F32,  SHARDLM_DT_F16,  SHARDLM_DT_BF16, SHARDLM_DT_Q4_0,   SHARDLM_DT_Q4_1,
    SHARDLM_DT_Q5_0, SHARDLM_DT_Q5_1, SHARDLM_DT_Q8_0, SHARDLM_DT_Q2_K,   SHARDLM_DT_Q3_K,
    SHARDLM_DT_Q4_K, SHARDLM_DT_Q5_K, SHARDLM_DT_Q6_K, SHARDLM_DT_IQ4_NL, SHARDLM_DT_IQ4_XS,
};

/* Places q, d and s of the quantised activations in the scratch area;
 * returns 0, or -1 when out of memory. */
static int mm_quant_layout(shardlm_pool *pool, mm_job *j)
{
    size_t n = j->a.n, cols = j->a.cols, nb = cols / SHARDLM_QK;
    size_t qbytes = (n * cols + 63) & ~(size_t)63;
    int q4 = j->a.q4_0_plain != NULL; /* set for Q4_0 and Q4_0_R8 only */
    uint8_t *s = shardlm_pool_scratch(pool, qbytes + (q4 ? 3 : 2) * n * nb * sizeof(float));
    if (!s) return -1;
    j->a.xq = (const int8_t *)s;
    j->a.xd = (const float *)(s + qbytes);
    j->a.xs = j->a.xd + n * nb;
    j->a.xo = q4 ? (const int32_t *)(j->a.xs + n * nb) : NULL;
    return 0;
}

/* Rows per chunk: about 8 chunks per thread for balance, in whole tiles of
 * 16 rows, and big enough that a chunk's weights are worth a prefetch run. */
static size_t mm_chunk_rows(size_t rows, size_t cols, int nth)
{
    if (nth <= 1) return rows;
    size_t c = rows / ((size_t)nth * 8);
    size_t min_rows = cols >= 4096 ? 16 : 32;
    if (c < min_rows) c = min_rows;
    return (c + 15) & ~(size_t)15;
}

/* Fills j for one product (not yet quantised, chunk unset). */
static void mm_job_init(mm_job *j, const shardlm_isa_ops *o, shardlm_dtype t, const void *w, size_t rows, size_t cols,
                        const float *x, size_t n, float *y)
{
    int q4 = t == SHARDLM_DT_Q4_0 || t == SHARDLM_DT_Q4_0_R8; /* R8 rows hold Q4_0 blocks */
    int r4 = t == SHARDLM_DT_Q8_0_R4;                           /* R4 rows hold Q8_0 blocks */
    shardlm_dtype rt = q4 ? SHARDLM_DT_Q4_0 : r4 ? SHARDLM_DT_Q8_0 : t;
    *j = (mm_job){.a = {.w = w, .row_bytes = shardlm_dtype_row_bytes(rt, cols), .rows = rows, .cols = cols, .n = n,
                        .x = x, .y = y, .q4_0_plain = q4 ? mm_fn_pick(o, SHARDLM_DT_Q4_0) : NULL,
                        .q8_0_plain = r4 ? mm_fn_pick(o, SHARDLM_DT_Q8_0) : NULL},
                  .fn = mm_fn_pick(o, t), .quant_x = o->quant_x, .xf = x};
    if (!j->fn || (cols && !j->a.row_bytes)) abort(); /* a caller bug: an unsupported type or ragged row */
}

static int mm_is_block_type(shardlm_dtype t)
{
    return t != SHARDLM_DT_F32 && t != SHARDLM_DT_F16 && t != SHARDLM_DT_BF16;
}

/* Quantises j's activations into the pool's scratch (block types only). */
static void mm_job_quant(shardlm_pool *use, shardlm_pool *pool, mm_job *j, shardlm_dtype t)
{
    if (!mm_is_block_type(t)) return;
    if (mm_quant_layout(pool, j) != 0) abort(); /* scratch is a few KB per input row */
    if (j->a.n >= 4 && use) shardlm_pool_run(use, mm_quant_task, j);
    else mm_quant_task(j, 0, 1);
}

void shardlm_matmul(shardlm_pool *pool, shardlm_dtype t, const void *w, size_t rows, size_t cols,
                    const float *x, size_t n, float *y)
{
    if (rows == 0 || n == 0) return;
    mm_job j;
    mm_job_init(&j, isa(), t, w, rows, cols, x, n, y);
    /* Tiny products are not worth waking threads for. */
    int nth = rows * cols * n < 32768 ? 1 : shardlm_pool_size(pool);
    shardlm_pool *use = nth > 1 ? pool : NULL;
    mm_job_quant(use, pool, &j, t);
    j.chunk = mm_chunk_rows(rows, cols, nth);
    atomic_init(&j.next, 0);
    if (use) shardlm_pool_run(use, mm_rows_task, &j);
    else j.fn(&j.a, 0, rows);
}

/* Several products of one input, run as one pool job: chunks are numbered
 * across the products in order, so a thread that finishes its share of one
 * moves on to the next without a barrier in between. */
typedef struct {
    mm_job j[SHARDLM_MATMUL_MANY_MAX];
    size_t first[SHARDLM_MATMUL_MANY_MAX + 1]; /* first chunk number of each product */
    int k;
    _Atomic size_t next;
} mm_many;

static void mm_many_task(void *ctx, int tid, int nth)
{
    (void)tid;
    (void)nth;
    mm_many *m = ctx;
    int s = 0;
    for (;;) {
        size_t c = atomic_fetch_add_explicit(&m->next, 1, memory_order_relaxed);
        while (s < m->k && c >= m->first[s + 1]) s++; /* chunk numbers only grow per thread */
        if (s >= m->k) return;
        mm_job *j = &m->j[s];
        size_t r0 = (c - m->first[s]) * j->chunk, r1 = r0 + j->chunk < j->a.rows ? r0 + j->chunk : j->a.rows;
        j->fn(&j->a, r0, r1);
    }
}

void shardlm_matmul_many(shardlm_pool *pool, int k, const shardlm_matmul_part *parts, size_t cols, const float *x,
                         size_t n, float **ys)
{
    if (n == 0 || k <= 0) return;
    int same = k <= SHARDLM_MATMUL_MANY_MAX;
    size_t work = 0;
    for (int i = 0; i < k; i++) {
        same = same && parts[i].t == parts[0].t && parts[i].rows > 0;
        work += parts[i].rows * cols * n;
    }
    /* Mixed types quantise differently; tiny products run on one thread anyway. */
    if (!same || work < 32768) {
        for (int i = 0; i < k; i++) shardlm_matmul(pool, parts[i].t, parts[i].w, parts[i].rows, cols, x, n, ys[i]);
        return;
    }
    const shardlm_isa_ops *o = isa();
    mm_many m = {.k = k};
    for (int i = 0; i < k; i++) mm_job_init(&m.j[i], o, parts[i].t, parts[i].w, parts[i].rows, cols, x, n, ys[i]);
    /* One quantisation of x serves every product: same type, same layout. */
    mm_job_quant(pool, pool, &m.j[0], parts[0].t);
    for (int i = 0; i < k; i++) {
        mm_job *j = &m.j[i];
        j->a.xq = m.j[0].a.xq, j->a.xd = m.j[0].a.xd, j->a.xs = m.j[0].a.xs, j->a.xo = m.j[0].a.xo;
        j->chunk = mm_chunk_rows(j->a.rows, cols, shardlm_pool_size(pool));
        m.first[i + 1] = m.first[i] + (j->a.rows + j->chunk - 1) / j->chunk;
    }
    atomic_init(&m.next, 0);
    shardlm_pool_run(pool, mm_many_task, &m);
}
