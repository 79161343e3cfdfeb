/* cmd_bench_matmul.c - `shardlm bench-matmul`: times one shardlm_matmul of a
 * rows x cols weight matrix of one type by `--batch` inputs, the figure
 * behind docs/PERFORMANCE.md's kernel tables. The matrix is random floats
 * quantised to the type and repacked as a model load would, so the kernel
 * timed is the one a model of that type runs (named in the output, with the
 * ISA: SHARDLM_ISA chooses it as everywhere). By default the calls cycle
 * through enough copies of the matrix to exceed 64 MiB, so the weights
 * stream from DRAM as in decode; `--matrices 1` times the cached case.
 * Reports the median, p10 and p90 of `--reps` calls after one warm-up pass. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "shardlm_kernels.h"

#define BMM_MAX_BATCHES 16
#define BMM_MAX_BATCH 65536
#define BMM_MAX_DIM (1ll << 31)
#define BMM_STREAM_BYTES (64.0 * 1048576.0)
#define BMM_MAX_MATRICES 64

typedef struct {
    shardlm_dtype type;
    long long rows, cols;
    const char *cols_arg; /* as given, for the block-size message */
    int batch[BMM_MAX_BATCHES], n_batch, max_batch;
    int threads, reps, matrices, json; /* matrices 0: enough to exceed 64 MiB */
} bmm_opts;

/* What one run shares between the batch values. */
typedef struct {
    const bmm_opts *o;
    shardlm_pool *pool;
    shardlm_dtype layout; /* the type after shardlm_repack */
    void **mats;
    size_t mat_bytes;
    float *x, *y;
    double *ts;
    char kernel[48];
} bmm_run;

static void usage(FILE *f)
{
    fprintf(f, "usage: shardlm bench-matmul [--type T] [--rows R] [--cols C] [--batch N[,N...]] [-t THREADS]\n"
               "                            [--reps K] [--matrices M] [--json]\n"
               "  Times shardlm_matmul of an R x C matrix of type T (random weights, repacked as a\n"
               "  model load does) by N inputs: median, p10 and p90 of K calls, GMAC/s and GB/s\n"
               "  of weights streamed (matrix bytes / median).\n"
               "  --type T        weight type (default q4_0): any type with kernels\n"
               "  --rows R        output rows (default 5632)\n"
               "  --cols C        input width, a multiple of the type's block (default 2048)\n"
               "  --batch LIST    inputs per call; a comma list sweeps, e.g. 1,4,16 (default 1)\n"
               "  -t, --threads T kernel threads (default 1)\n"
               "  --reps K        timed calls per batch value (default 200)\n"
               "  --matrices M    copies cycled through, 1..64 (default: enough to exceed\n"
               "                  64 MiB, so weights stream from DRAM; 1: from cache)\n"
               "  --json          one JSON object on stdout instead of a table\n"
               "SHARDLM_ISA and SHARDLM_REPACK choose the kernel as for a model.\n");
}

static int bad_value(const char *flag, const char *val, const char *want)
{
    fprintf(stderr, "shardlm bench-matmul: invalid value '%s' for %s (%s)\n", val, flag, want);
    return 2;
}

/* A whole decimal number in lo..hi; 0, or -1. */
static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* "1,4,16": up to 16 values in 1..65536; 0, or -1. */
static int parse_batches(const char *s, bmm_opts *o)
{
    o->n_batch = o->max_batch = 0;
    for (const char *p = s;; p++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > BMM_MAX_BATCH || o->n_batch == BMM_MAX_BATCHES || (*end && *end != ','))
            return -1;
        o->batch[o->n_batch++] = (int)v;
        if (v > o->max_batch) o->max_batch = (int)v;
        if (!*end) return 0;
        p = end;
    }
}

/* "one of f32, f16, ...": the types with kernels. */
static const char *type_names(void)
{
    static char buf[256];
    size_t n = (size_t)snprintf(buf, sizeof buf, "one of");
    for (size_t k = 0; k < SHARDLM_KERNELS_N_DTYPES && n < sizeof buf; k++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s %s", k ? "," : "",
                              shardlm_dtype_name(shardlm_kernels_dtypes[k]));
    return buf;
}

static int parse_type(const char *s, shardlm_dtype *t)
{
    int v = shardlm_dtype_parse(s);
    for (size_t k = 0; v >= 0 && k < SHARDLM_KERNELS_N_DTYPES; k++)
        if ((int)shardlm_kernels_dtypes[k] == v) {
            *t = shardlm_kernels_dtypes[k];
            return 0;
        }
    return -1;
}

/* An integer option into *dst; 0, or 2 after a message. */
static int take_int(const char *flag, const char *arg, long long lo, long long hi, int *dst)
{
    long long v;
    char want[64];
    snprintf(want, sizeof want, "an integer in %lld..%lld", lo, hi);
    if (parse_int(arg, lo, hi, &v)) return bad_value(flag, arg, want);
    *dst = (int)v;
    return 0;
}

static int take_dim(const char *flag, const char *arg, long long *dst)
{
    char want[64];
    snprintf(want, sizeof want, "an integer in 1..%lld", BMM_MAX_DIM);
    return parse_int(arg, 1, BMM_MAX_DIM, dst) ? bad_value(flag, arg, want) : 0;
}

/* One option; 0, or 2 after a message. */
static int take_opt(int c, const char *arg, bmm_opts *o)
{
    switch (c) {
    case 'T': return parse_type(arg, &o->type) ? bad_value("--type", arg, type_names()) : 0;
    case 'r': return take_dim("--rows", arg, &o->rows);
    case 'c': o->cols_arg = arg; return take_dim("--cols", arg, &o->cols);
    case 'b':
        return parse_batches(arg, o) ? bad_value("--batch", arg, "integers in 1..65536, at most 16, comma-separated")
                                     : 0;
    case 't': return take_int("-t", arg, 1, 256, &o->threads);
    case 'k': return take_int("--reps", arg, 1, 1000000, &o->reps);
    case 'm': return take_int("--matrices", arg, 1, BMM_MAX_MATRICES, &o->matrices);
    case 'J': o->json = 1; return 0;
    }
    return 2;
}

/* 0 to run, 1 after --help, 2 after a message. */
static int parse_opts(int argc, char **argv, bmm_opts *o)
{
    static const struct option opts[] = {
        {"type", required_argument, 0, 'T'},   {"rows", required_argument, 0, 'r'},
        {"cols", required_argument, 0, 'c'},   {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"reps", required_argument, 0, 'k'},
        {"matrices", required_argument, 0, 'm'}, {"json", no_argument, 0, 'J'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":t:h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 1;
        }
        if (c == '?' || c == ':') {
            fprintf(stderr, "shardlm bench-matmul: unknown or incomplete option '%s' "
                            "(try 'shardlm bench-matmul --help')\n", argv[optind - 1]);
            return 2;
        }
        if (take_opt(c, optarg, o)) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "shardlm bench-matmul: unexpected argument '%s' (try 'shardlm bench-matmul --help')\n",
                argv[optind]);
        return 2;
    }
    size_t blk = shardlm_dtype_block_elems(o->type);
    if (o->cols % (long long)blk) {
        char want[96];
        snprintf(want, sizeof want, "a multiple of %zu, %s's block", blk, shardlm_dtype_name(o->type));
        return bad_value("--cols", o->cols_arg, want);
    }
    return 0;
}

/* bytes as "12.3 MiB" or, from 10 GiB, "12.3 GiB". */
static const char *size_str(double bytes, char *buf, size_t len)
{
    double mib = bytes / 1048576;
    if (mib < 10240) snprintf(buf, len, "%.1f MiB", mib);
    else snprintf(buf, len, "%.1f GiB", mib / 1024);
    return buf;
}

/* The whole run's memory, checked before any allocation: a size beyond
 * this machine's RAM is refused by name rather than left to the OOM killer
 * (and every size_t product below is then far from overflow). */
static int check_memory(const bmm_opts *o, double mat_bytes, int matrices)
{
    /* x, its 8-bit copy and y for the largest batch; one row of floats to quantise */
    double io = (double)o->max_batch * ((double)o->cols * 5.5 + (double)o->rows * 4) + (double)o->cols * 4;
    double need = mat_bytes * (matrices + 1) + io;
    double ram = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (ram > 0 && need < ram) return 0;
    char a[32], b[32], c[32];
    fprintf(stderr,
            "shardlm bench-matmul: %lld x %lld %s needs %s (%d + 1 matrices of %s, inputs and outputs for batch %d); "
            "this machine has %s\n",
            o->rows, o->cols, shardlm_dtype_name(o->type), size_str(need, a, sizeof a), matrices,
            size_str(mat_bytes, b, sizeof b), o->max_batch, size_str(ram, c, sizeof c));
    return 1;
}

static float next_float(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (float)(*s >> 40) / 16777216.0f - 0.5f; /* [-0.5, 0.5) */
}

/* The plain matrix: random floats in [-0.5, 0.5) quantised row by row. */
static void *make_matrix(const bmm_opts *o, size_t row_bytes, uint64_t *seed)
{
    uint8_t *w = shardlm_weights_alloc(row_bytes * (size_t)o->rows);
    float *tmp = malloc((size_t)o->cols * sizeof *tmp);
    if (!w || !tmp) {
        free(w);
        free(tmp);
        return NULL;
    }
    for (size_t r = 0; r < (size_t)o->rows; r++) {
        for (size_t c = 0; c < (size_t)o->cols; c++) tmp[c] = next_float(seed);
        shardlm_quant_row(o->type, tmp, w + r * row_bytes, (size_t)o->cols);
    }
    free(tmp);
    return w;
}

/* run->mats[0..m): repacked (or, when the type has no repacked layout,
 * plain) copies of w, each in its own weights allocation. */
static int make_copies(bmm_run *run, const void *w, int m)
{
    const bmm_opts *o = run->o;
    for (int i = 0; i < m; i++) {
        if (shardlm_repack(o->type, w, (size_t)o->rows, (size_t)o->cols, &run->mats[i], &run->layout)) return -1;
        if (run->mats[i]) continue;
        if (!(run->mats[i] = shardlm_weights_alloc(run->mat_bytes))) return -1;
        memcpy(run->mats[i], w, run->mat_bytes);
    }
    return 0;
}

/* The kernel that runs, for the layout the matrix is in. */
static void name_kernel(bmm_run *run)
{
    shardlm_kernels_layout_kernel(run->layout, run->kernel, sizeof run->kernel);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile of sorted v[0..n), interpolating between neighbours. */
static double quantile(const double *v, int n, double q)
{
    double pos = q * (n - 1);
    int i = (int)pos;
    return i + 1 < n ? v[i] + (pos - i) * (v[i + 1] - v[i]) : v[n - 1];
}

/* run->ts[0..reps): seconds per call of n inputs, sorted. */
static void time_batch(bmm_run *run, int n, int matrices, int tty)
{
    const bmm_opts *o = run->o;
    size_t rows = (size_t)o->rows, cols = (size_t)o->cols;
    for (int i = 0; i < matrices; i++) /* warm-up: scratch, threads, page tables */
        shardlm_matmul(run->pool, run->layout, run->mats[i], rows, cols, run->x, (size_t)n, run->y);
    int step = o->reps / 20 > 0 ? o->reps / 20 : 1;
    for (int r = 0; r < o->reps; r++) {
        double t0 = shardlm_now_s();
        shardlm_matmul(run->pool, run->layout, run->mats[r % matrices], rows, cols, run->x, (size_t)n, run->y);
        run->ts[r] = shardlm_now_s() - t0;
        if (tty && ((r + 1) % step == 0 || r + 1 == o->reps)) {
            char what[64];
            snprintf(what, sizeof what, "bench-matmul batch %d", n);
            shardlm_progress(what, (uint64_t)r + 1, (uint64_t)o->reps);
        }
    }
    qsort(run->ts, (size_t)o->reps, sizeof *run->ts, cmp_double);
}

static void print_head(const bmm_run *run, int matrices)
{
    const bmm_opts *o = run->o;
    if (o->json) {
        printf("{\"type\":\"%s\",\"kernel\":\"%s\",\"isa\":\"%s\",\"rows\":%lld,\"cols\":%lld,\"threads\":%d,"
               "\"reps\":%d,\"matrices\":%d,\"matrix_bytes\":%zu,\"matrices_mib\":%.3f,\"results\":[",
               shardlm_dtype_name(o->type), run->kernel, shardlm_kernels_isa(), o->rows, o->cols, o->threads,
               o->reps, matrices, run->mat_bytes, (double)run->mat_bytes * matrices / 1048576);
        return;
    }
    printf("| type | kernel | isa | rows x cols | batch | threads | matrices | median ms | p10 ms | p90 ms | GMAC/s "
           "| GB/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
}

static void print_batch(const bmm_run *run, int n, int matrices, int first)
{
    const bmm_opts *o = run->o;
    int k = o->reps;
    double med = quantile(run->ts, k, 0.5), p10 = quantile(run->ts, k, 0.1), p90 = quantile(run->ts, k, 0.9);
    double gmacs = (double)o->rows * (double)o->cols * n / med / 1e9, gbs = (double)run->mat_bytes / med / 1e9;
    if (o->json)
        printf("%s{\"batch\":%d,\"median_ms\":%.6f,\"p10_ms\":%.6f,\"p90_ms\":%.6f,\"gmac_s\":%.3f,\"gb_s\":%.3f}",
               first ? "" : ",", n, med * 1e3, p10 * 1e3, p90 * 1e3, gmacs, gbs);
    else
        printf("| %s | %s | %s | %lld x %lld | %d | %d | %d (%.1f MiB) | %.4f | %.4f | %.4f | %.1f | %.1f |\n",
               shardlm_dtype_name(o->type), run->kernel, shardlm_kernels_isa(), o->rows, o->cols, n, o->threads,
               matrices, (double)run->mat_bytes * matrices / 1048576, med * 1e3, p10 * 1e3, p90 * 1e3, gmacs, gbs);
    fflush(stdout);
}

/* Allocates and fills everything; 0, or 1 after a message. */
static int run_setup(bmm_run *run, int matrices)
{
    const bmm_opts *o = run->o;
    size_t row_bytes = shardlm_dtype_row_bytes(o->type, (size_t)o->cols), nb = (size_t)o->max_batch;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    run->mat_bytes = row_bytes * (size_t)o->rows;
    run->mats = calloc((size_t)matrices, sizeof *run->mats);
    run->x = malloc(nb * (size_t)o->cols * sizeof(float));
    run->y = malloc(nb * (size_t)o->rows * sizeof(float));
    run->ts = malloc((size_t)o->reps * sizeof *run->ts);
    void *w = run->mats && run->x && run->y && run->ts ? make_matrix(o, row_bytes, &seed) : NULL;
    int rc = !w || make_copies(run, w, matrices);
    free(w);
    if (rc) {
        fprintf(stderr, "shardlm bench-matmul: cannot allocate %d x %.1f MiB of %s weights and batch %d\n", matrices,
                (double)run->mat_bytes / 1048576, shardlm_dtype_name(o->type), o->max_batch);
        return 1;
    }
    if (o->threads > 1 && shardlm_pool_new(o->threads, 0, &run->pool)) {
        fprintf(stderr, "shardlm bench-matmul: cannot start %d threads\n", o->threads);
        return 1;
    }
    for (size_t i = 0; i < nb * (size_t)o->cols; i++) run->x[i] = next_float(&seed);
    name_kernel(run);
    return 0;
}

static void run_free(bmm_run *run, int matrices)
{
    shardlm_pool_free(run->pool);
    for (int i = 0; run->mats && i < matrices; i++) free(run->mats[i]);
    free(run->mats);
    free(run->x);
    free(run->y);
    free(run->ts);
}

int shardlm_cmd_bench_matmul(int argc, char **argv)
{
    bmm_opts o = {.type = SHARDLM_DT_Q4_0, .rows = 5632, .cols = 2048, .batch = {1}, .n_batch = 1, .max_batch = 1,
                  .threads = 1, .reps = 200};
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : 2;
    double mat_bytes = (double)o.rows * (double)shardlm_dtype_row_bytes(o.type, (uint64_t)o.cols);
    int matrices = o.matrices;
    if (!matrices) {
        double m = BMM_STREAM_BYTES / mat_bytes + 1;
        matrices = m > BMM_MAX_MATRICES ? BMM_MAX_MATRICES : (int)m;
    }
    if (check_memory(&o, mat_bytes, matrices)) return 1;
    bmm_run run = {.o = &o};
    rc = run_setup(&run, matrices);
    if (!rc) {
        int tty = isatty(STDERR_FILENO);
        print_head(&run, matrices);
        for (int b = 0; b < o.n_batch; b++) {
            time_batch(&run, o.batch[b], matrices, tty);
            print_batch(&run, o.batch[b], matrices, b == 0);
        }
        if (o.json) printf("]}\n");
    }
    run_free(&run, matrices);
    return rc;
}
