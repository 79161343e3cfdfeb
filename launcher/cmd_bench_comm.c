/* cmd_bench_comm.c - `shardlm bench-comm`: times the ring all-reduce from
 * 4 KiB to 64 MiB (or at the sizes listed). Rank 0 spawns the other ranks
 * as copies of itself with RING_CONFIG set; a process that finds RING_CONFIG
 * acts as that rank. Every iteration's result is checked, so a wrong sum
 * fails the benchmark. --compare runs shared memory, TCP and MPI in
 * alternation (bench_compare.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_comm.h"
#include "node.h"
#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "shardlm_launch.h"
#include "shardlm_model.h"

#define BENCH_WARMUP 3

typedef struct {
    size_t bytes;
    double median_us, algbw_gbps;
} bench_row;

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: shardlm bench-comm --world-size W [--json] [--min-bytes B] [--max-bytes B]\n"
               "                          [--sizes B,B,...] [--iters N] [--timeout-ms T] [--comm ring|mpi]\n"
               "                          [--ring-transport auto|tcp|shm]\n"
               "       mpirun -np W shardlm bench-comm --comm mpi [options]\n"
               "       shardlm bench-comm --compare [--worlds 2,4] [--rounds 3] [--json]\n"
               "  Times the all-reduce of B bytes of f32 (B doubling from --min-bytes,\n"
               "  default 4096, to --max-bytes, default 67108864) across W local ranks.\n"
               "  --comm ring     the ring (default; rank 0 spawns the others)\n"
               "  --ring-transport auto|tcp|shm  the ring's hops: shared memory between local\n"
               "                  ranks (auto, the default, or shm) or TCP (tcp)\n"
               "  --comm mpi      MPI_Iallreduce, under mpirun (the default under mpirun)\n"
               "  --sizes LIST    comma-separated sizes in bytes instead of the doubling range\n"
               "  --compare       shared-memory ring, TCP ring and MPI (mpirun, when present) in\n"
               "                  alternating rounds: latency at 8 KiB, bandwidth at 1 and 16 MiB\n"
               "  --worlds LIST   world sizes for --compare (default 2,4)\n"
               "  --rounds N      rounds for --compare (default 3); medians are reported\n"
               "  --comm-dtype q8 Q8_0 blocks on the wire (all-gathered, summed in rank order)\n"
               "  --iters N       timed iterations per size (default: 200 up to 256 KiB,\n"
               "                  50 up to 4 MiB, 20 above), after %d warm-up iterations\n"
               "  --timeout-ms T  deadline of each collective and of the ring set-up (10000)\n"
               "  --json          print one JSON array of {bytes, median_us, algbw_gbps}\n"
               "algbw is bytes / median time (as nccl-tests' algbw).\n", BENCH_WARMUP);
}

static int bench_parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || v < 4 || v > (1ull << 34) || v % 4) return -1;
    *out = (size_t)v;
    return 0;
}

/* "A,B,C" of positive integers within lo..hi; returns how many, or -1. */
static int bench_parse_list(const char *s, long lo, long hi, long *out, int cap)
{
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < lo || v > hi || n == cap || (*end && *end != ',')) return -1;
        out[n++] = v;
        s = *end ? end + 1 : end;
        if (*end && !*s) return -1;
    }
    return n ? n : -1;
}

static int bench_parse_sizes(const char *v, bench_opts *o)
{
    long l[BENCH_MAX_SIZES];
    o->nsizes = bench_parse_list(v, 4, 1l << 34, l, BENCH_MAX_SIZES);
    for (int i = 0; i < o->nsizes; i++) {
        if (l[i] % 4) return -1;
        o->sizes[i] = (size_t)l[i];
    }
    return o->nsizes < 0;
}

static int bench_parse_worlds(const char *v, bench_opts *o)
{
    long l[BENCH_MAX_WORLDS];
    o->nworlds = bench_parse_list(v, 2, 64, l, BENCH_MAX_WORLDS);
    for (int i = 0; i < o->nworlds; i++) {
        if (l[i] & (l[i] - 1)) return -1;
        o->worlds[i] = (int)l[i];
    }
    return o->nworlds < 0;
}

static int bench_parse(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.min_bytes = 4096, .max_bytes = 64u << 20, .timeout_ms = 10000, .rounds = 3,
                      .worlds = {2, 4}, .nworlds = 2};
    if (shardlm_ring_transport_env(&o->transport)) {
        fprintf(stderr, "shardlm bench-comm: %s\n", shardlm_err_get());
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--json") || !strcmp(a, "--compare")) {
            if (a[2] == 'j') o->json = 1;
            else o->compare = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            bench_usage(stdout);
            return 0;
        }
        if (!v) bad = 1;
        else if (!strcmp(a, "--world-size")) o->world = atoi(v), bad = o->world < 1 || o->world > 1024 || (o->world & (o->world - 1));
        else if (!strcmp(a, "--comm")) o->comm = v, bad = strcmp(v, "ring") && strcmp(v, "mpi");
        else if (!strcmp(a, "--comm-dtype")) o->q8 = !strcmp(v, "q8"), bad = strcmp(v, "f32") && strcmp(v, "q8");
        else if (!strcmp(a, "--iters")) o->iters = atoi(v), bad = o->iters < 1 || o->iters > 1000000;
        else if (!strcmp(a, "--timeout-ms")) o->timeout_ms = atoi(v), bad = o->timeout_ms < 1;
        else if (!strcmp(a, "--min-bytes")) bad = bench_parse_size(v, &o->min_bytes);
        else if (!strcmp(a, "--max-bytes")) bad = bench_parse_size(v, &o->max_bytes);
        else if (!strcmp(a, "--sizes")) bad = bench_parse_sizes(v, o);
        else if (!strcmp(a, "--worlds")) bad = bench_parse_worlds(v, o);
        else if (!strcmp(a, "--rounds")) o->rounds = atoi(v), bad = o->rounds < 1 || o->rounds > 100;
        else if (!strcmp(a, "--ring-transport")) bad = shardlm_ring_transport_parse(v, &o->transport) != 0;
        else {
            fprintf(stderr, "shardlm bench-comm: unknown option '%s'\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "shardlm bench-comm: bad or missing value for %s%s%s\n", a, v ? ": " : "", v ? v : "");
            return 2;
        }
        i++;
    }
    if (!o->comm) o->comm = shardlm_comm_mpi_launched() ? "mpi" : "ring";
    if (o->compare) return -1;
    if (!o->world && strcmp(o->comm, "mpi")) {
        fprintf(stderr, "shardlm bench-comm: --world-size W is required\n");
        bench_usage(stderr);
        return 2;
    }
    if (o->min_bytes > o->max_bytes) {
        fprintf(stderr, "shardlm bench-comm: --min-bytes is larger than --max-bytes\n");
        return 2;
    }
    return -1;
}

static int bench_iters(const bench_opts *o, size_t bytes)
{
    if (o->iters) return o->iters;
    return bytes <= (256u << 10) ? 200 : bytes <= (4u << 20) ? 50 : 20;
}

/* Integer-valued data, so the expected sum is exact at any world size. */
static void bench_fill(float *b, size_t n, int rank, int it)
{
    for (size_t i = 0; i < n; i++) b[i] = (float)(int32_t)(((uint32_t)i + (uint32_t)it) & 1023u) + (float)rank;
}

/* Exact for f32. With q8 each rank's values (|v| <= 1023 + rank) are
 * rounded once to 8 bits: within amax / 254 per rank, so W * amax / 127
 * leaves a factor of two. */
static int bench_check(const float *b, size_t n, int world, int it, int q8)
{
    float base = (float)(world * (world - 1) / 2);
    float tol = q8 ? (float)world * (1023.0f + (float)world) / 127.0f : 0.0f;
    for (size_t i = 0; i < n; i++) {
        float want = (float)world * (float)(int32_t)(((uint32_t)i + (uint32_t)it) & 1023u) + base;
        if (!(fabsf(b[i] - want) <= tol)) {
            shardlm_err_set("wrong all-reduce result at element %zu of %zu: got %g, expected %g", i, n, b[i], want);
            return SHARDLM_ERUNTIME;
        }
    }
    return SHARDLM_OK;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One size: warm-up, then timed iterations, each from a barrier. */
static int bench_size(shardlm_comm *c, const bench_opts *o, float *buf, uint8_t *q8, size_t bytes, double *times,
                      bench_row *row)
{
    size_t n = bytes / 4;
    int iters = bench_iters(o, bytes), rank = shardlm_comm_rank(c), w = shardlm_comm_size(c);
    for (int it = 0; it < BENCH_WARMUP + iters; it++) {
        bench_fill(buf, n, rank, it);
        int rc = shardlm_comm_barrier(c, o->timeout_ms);
        if (rc) return rc;
        uint64_t t0 = shardlm_now_ns();
        rc = q8 ? shardlm_comm_allreduce_q8(c, buf, n, q8, o->timeout_ms)
                : shardlm_comm_allreduce_f32(c, buf, n, o->timeout_ms);
        uint64_t t1 = shardlm_now_ns();
        if (rc || (rc = bench_check(buf, n, w, it, q8 != NULL))) return rc;
        if (it >= BENCH_WARMUP) times[it - BENCH_WARMUP] = (double)(t1 - t0) * 1e-3;
    }
    qsort(times, (size_t)iters, sizeof *times, bench_cmp_double);
    double med = iters % 2 ? times[iters / 2] : 0.5 * (times[iters / 2 - 1] + times[iters / 2]);
    *row = (bench_row){bytes, med, (double)bytes / (med * 1e-6) / 1e9};
    return SHARDLM_OK;
}

static void bench_print(const bench_opts *o, const bench_row *rows, int nrows, const char *transport)
{
    if (o->json) {
        printf("[");
        for (int i = 0; i < nrows; i++)
            printf("%s{\"bytes\":%zu,\"median_us\":%.2f,\"algbw_gbps\":%.4f}", i ? "," : "", rows[i].bytes,
                   rows[i].median_us, rows[i].algbw_gbps);
        printf("]\n");
        return;
    }
    printf("# shardlm bench-comm: %s all-reduce (f32 sum%s), world size %d, median of timed iterations\n",
           transport, o->q8 ? ", Q8_0 blocks on the wire" : "", o->world);
    printf("%12s %12s %12s\n", "bytes", "median_us", "algbw_GB/s");
    for (int i = 0; i < nrows; i++)
        printf("%12zu %12.1f %12.3f\n", rows[i].bytes, rows[i].median_us, rows[i].algbw_gbps);
}

/* "ring (shm)", "ring (tcp)", or each hop when they differ. */
static void bench_transport(shardlm_comm *c, char *out, size_t cap)
{
    const char *l = shardlm_ring_comm_hop(c, 0, NULL), *r = shardlm_ring_comm_hop(c, 1, NULL);
    if (!l) snprintf(out, cap, "%s", shardlm_comm_name(c));
    else if (!strcmp(l, r)) snprintf(out, cap, "%s (%s)", shardlm_comm_name(c), l);
    else snprintf(out, cap, "%s (rank 0: left hop %s, right hop %s)", shardlm_comm_name(c), l, r);
}

static int bench_run(shardlm_comm *c, const bench_opts *o)
{
    size_t sizes[BENCH_MAX_SIZES + 40], maxb = 0;
    int nsizes = 0, rank = shardlm_comm_rank(c);
    for (int k = 0; k < o->nsizes; k++) sizes[nsizes++] = o->sizes[k];
    for (size_t b = o->min_bytes; !o->nsizes && b <= o->max_bytes; b *= 2) sizes[nsizes++] = b;
    for (int k = 0; k < nsizes; k++) maxb = sizes[k] > maxb ? sizes[k] : maxb;
    int max_iters = o->iters ? o->iters : 200;
    float *buf = malloc(maxb);
    double *times = malloc(sizeof(double) * (size_t)max_iters);
    bench_row *rows = calloc((size_t)nsizes, sizeof *rows);
    uint8_t *q8 = o->q8 ? malloc(shardlm_comm_allreduce_q8_scratch(shardlm_comm_size(c), maxb / 4)) : NULL;
    int rc = (buf && times && rows && (q8 || !o->q8)) ? SHARDLM_OK : SHARDLM_ENOMEM;
    if (rc) shardlm_err_set("rank %d: out of memory for a %zu-byte buffer", rank, maxb);
    int tty = rank == 0 && isatty(STDERR_FILENO);
    for (int i = 0; rc == SHARDLM_OK && i < nsizes; i++) {
        if (tty) fprintf(stderr, "\rbench-comm: %zu bytes (%d/%d)   ", sizes[i], i + 1, nsizes);
        rc = bench_size(c, o, buf, q8, sizes[i], times, &rows[i]);
    }
    if (tty) fprintf(stderr, "\r%40s\r", "");
    if (rc == SHARDLM_OK) rc = shardlm_comm_barrier(c, o->timeout_ms);
    char transport[128];
    bench_transport(c, transport, sizeof transport);
    if (rc == SHARDLM_OK && rank == 0) bench_print(o, rows, nsizes, transport);
    fflush(stdout);
    free(buf);
    free(times);
    free(rows);
    free(q8);
    return rc;
}

/* The ring through the transports' registry, as a serving rank opens it. */
static int bench_open_ring(const shardlm_ring_config *cfg, const bench_opts *o, shardlm_comm **c)
{
    shardlm_node_transports();
    shardlm_ring_open_config rcfg = {cfg, o->transport};
    shardlm_comm_open_opts co = {cfg->rank, cfg->world_size, o->timeout_ms, &rcfg};
    return shardlm_comm_open("ring", &co, c);
}

/* A rank spawned by rank 0 (or by `shardlm launch`, or by hand). */
static int bench_as_rank(const char *path, const bench_opts *o)
{
    shardlm_ring_config cfg;
    int rc = shardlm_ring_config_load(path, &cfg);
    if (rc) {
        fprintf(stderr, "shardlm bench-comm: %s\n", shardlm_err_get());
        return 2;
    }
    if (cfg.world_size != o->world) {
        fprintf(stderr, "shardlm bench-comm: %s: field 'world_size': %d does not match --world-size %d\n", path,
                cfg.world_size, o->world);
        return 2;
    }
    shardlm_comm *c = NULL;
    rc = bench_open_ring(&cfg, o, &c);
    if (rc == SHARDLM_OK) rc = bench_run(c, o);
    if (rc) fprintf(stderr, "shardlm bench-comm (rank %d): %s\n", cfg.rank, shardlm_err_get());
    shardlm_comm_destroy(c);
    return shardlm_exit_code(rc);
}

static char **bench_child_argv(int argc, char **argv)
{
    char **a = calloc((size_t)argc + 2, sizeof *a);
    if (!a) return NULL;
    a[0] = (char *)shardlm_cli_self();
    for (int i = 0; i < argc; i++) a[i + 1] = argv[i];
    return a;
}

/* Rank 0 with no RING_CONFIG: spawn ranks 1..W-1 and lead. */
static int bench_as_leader(int argc, char **argv, const bench_opts *o)
{
    shardlm_comm *c = NULL;
    if (o->world == 1) {
        int rc = shardlm_comm_local_create(&c);
        if (rc == SHARDLM_OK) rc = bench_run(c, o);
        shardlm_comm_destroy(c);
        return shardlm_exit_code(rc);
    }
    shardlm_ring_config *cfgs = calloc((size_t)o->world, sizeof *cfgs);
    char **cargv = bench_child_argv(argc, argv);
    shardlm_launch *l = NULL;
    int rc = cfgs && cargv ? shardlm_launch_plan(o->world, cfgs) : SHARDLM_ENOMEM;
    if (rc == SHARDLM_OK) rc = shardlm_launch_start(o->world, 1, cfgs, cargv, &l, NULL);
    if (rc == SHARDLM_OK) rc = bench_open_ring(&cfgs[0], o, &c);
    if (rc == SHARDLM_OK) rc = bench_run(c, o);
    if (rc) fprintf(stderr, "shardlm bench-comm (rank 0): %s\n", shardlm_err_get());
    shardlm_comm_destroy(c);
    if (l && shardlm_launch_wait(l, rc ? 2000 : o->timeout_ms) != SHARDLM_OK && rc == SHARDLM_OK) {
        fprintf(stderr, "shardlm bench-comm: %s\n", shardlm_err_get());
        rc = SHARDLM_ERUNTIME;
    }
    shardlm_launch_free(l);
    free(cfgs);
    free(cargv);
    return shardlm_exit_code(rc);
}

/* Under mpirun: every rank is a copy of this command. */
static int bench_as_mpi(bench_opts *o)
{
    int rank = 0, world = 0;
    shardlm_comm *c = NULL;
    int rc = shardlm_comm_mpi_launched() ? shardlm_comm_mpi_init(&rank, &world, NULL, NULL) : SHARDLM_EINPUT;
    if (rc == SHARDLM_EINPUT && !shardlm_comm_mpi_launched())
        shardlm_err_set("--comm mpi: run under mpirun (mpirun -np W shardlm bench-comm --comm mpi)");
    if (!rc && o->world && o->world != world) {
        shardlm_err_set("--world-size %d does not match mpirun's %d ranks", o->world, world);
        rc = SHARDLM_EINPUT;
    }
    o->world = world;
    shardlm_comm_open_opts co = {rank, world, o->timeout_ms, NULL};
    if (!rc) rc = shardlm_comm_open("mpi", &co, &c); /* world size 1: local */
    if (!rc) rc = bench_run(c, o);
    if (rc) fprintf(stderr, "shardlm bench-comm (rank %d): %s\n", rank, shardlm_err_get());
    if (c) shardlm_comm_destroy(c);
    if (!rc) shardlm_comm_mpi_finalize();
    return shardlm_exit_code(rc);
}

int shardlm_cmd_bench_comm(int argc, char **argv)
{
    bench_opts o;
    int code = bench_parse(argc, argv, &o);
    if (code >= 0) return code;
    if (o.compare) return shardlm_bench_comm_compare(&o);
    if (!strcmp(o.comm, "mpi")) return bench_as_mpi(&o);
    const char *cfg = getenv("RING_CONFIG");
    if (cfg && *cfg) return bench_as_rank(cfg, &o);
    return bench_as_leader(argc, argv, &o);
}
