/* cmd_bench_mem.c - `shardlm bench-mem`: STREAM-style memory bandwidth, the
 * ceiling for decode (each token streams every weight once). Triad
 * a = b + s*c counts 24 bytes per element as STREAM does; read sums one
 * array. Arrays are far larger than the caches; the best of the repetitions
 * is reported, as STREAM does. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "shardlm_kernels.h"

typedef struct {
    double *a, *b, *c;
    size_t n;
    int read_only;
    double sums[256];
} mem_job;

/* GNU vector types (SSE2 on any x86-64) with several independent
 * accumulators, so the loop is bound by memory, not by add latency. */
typedef double v2d __attribute__((vector_size(16), aligned(8)));

static void mem_worker(void *ctx, int tid, int nth)
{
    mem_job *j = ctx;
    size_t lo = j->n * (size_t)tid / (size_t)nth, hi = j->n * (size_t)(tid + 1) / (size_t)nth;
    lo &= ~(size_t)7;
    hi = tid == nth - 1 ? j->n : hi & ~(size_t)7;
    if (j->read_only) {
        v2d s[4] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
        for (size_t i = lo; i + 8 <= hi; i += 8)
            for (int k = 0; k < 4; k++) s[k] += *(const v2d *)(j->b + i + 2 * k);
        v2d t = s[0] + s[1] + s[2] + s[3];
        j->sums[tid & 255] = t[0] + t[1]; /* keeps the loads alive */
        return;
    }
    const v2d three = {3.0, 3.0};
    for (size_t i = lo; i + 8 <= hi; i += 8)
        for (int k = 0; k < 4; k++)
            *(v2d *)(j->a + i + 2 * k) = *(const v2d *)(j->b + i + 2 * k) + three * *(const v2d *)(j->c + i + 2 * k);
}

static double mem_best(shardlm_pool *p, mem_job *j, int reps, double bytes)
{
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = shardlm_now_s();
        shardlm_pool_run(p, mem_worker, j);
        double gbs = bytes / (shardlm_now_s() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    return best;
}

int shardlm_cmd_bench_mem(int argc, char **argv)
{
    int threads = shardlm_cpu_physical_cores(), mib = 256, reps = 10, json = 0, c;
    static const struct option opts[] = {{"threads", required_argument, 0, 't'}, {"mib", required_argument, 0, 's'},
                                         {"json", no_argument, 0, 'J'},          {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":t:h", opts, NULL)) != -1) {
        char *end = NULL;
        long v = optarg ? strtol(optarg, &end, 10) : 0;
        int bad = optarg && (!*optarg || *end);
        if (c == 't' && !bad && v >= 1 && v <= 256) threads = (int)v;
        else if (c == 's' && !bad && v >= 16 && v <= 8192) mib = (int)v;
        else if (c == 'J') json = 1;
        else if (c == 'h') {
            printf("usage: shardlm bench-mem [-t THREADS] [--mib SIZE_PER_ARRAY] [--json]\n");
            return 0;
        } else if (c == 't' || c == 's') {
            fprintf(stderr, "shardlm bench-mem: invalid value '%s' for %s (an integer in %s)\n", optarg,
                    c == 't' ? "-t" : "--mib", c == 't' ? "1..256" : "16..8192");
            return 2;
        } else {
            fprintf(stderr, "shardlm bench-mem: unknown or incomplete option '%s' (try 'shardlm bench-mem --help')\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    mem_job j = {.n = (size_t)mib << 17}; /* a multiple of 8 elements */
    j.a = malloc(j.n * sizeof(double));
    j.b = malloc(j.n * sizeof(double));
    j.c = malloc(j.n * sizeof(double));
    shardlm_pool *p = NULL;
    if (!j.a || !j.b || !j.c || (threads > 1 && shardlm_pool_new(threads, 0, &p))) {
        fprintf(stderr, "shardlm bench-mem: cannot allocate 3 x %d MiB\n", mib);
        return 1;
    }
    for (size_t i = 0; i < j.n; i++) j.a[i] = 0, j.b[i] = 1.0, j.c[i] = 2.0;
    double triad = mem_best(p, &j, reps, 24.0 * (double)j.n);
    j.read_only = 1;
    double rd = mem_best(p, &j, reps, 8.0 * (double)j.n);
    if (json) printf("{\"threads\":%d,\"triad_gbps\":%.2f,\"read_gbps\":%.2f}\n", threads, triad, rd);
    else printf("threads %d: triad %.1f GB/s, read %.1f GB/s (best of %d, %d MiB arrays)\n", threads, triad, rd, reps, mib);
    shardlm_pool_free(p);
    free(j.a); free(j.b); free(j.c);
    return 0;
}
