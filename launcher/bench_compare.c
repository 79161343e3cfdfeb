/* bench_compare.c - `shardlm bench-comm --compare`: the shared-memory ring,
 * the TCP ring and MPI (under mpirun, when this build has MPI and mpirun is
 * on PATH) timed in one run. Each measurement is a child `shardlm
 * bench-comm --json` at 8 KiB, 1 MiB and 16 MiB; rounds alternate the
 * transports, rotating their order, so a busy machine's load falls on all
 * of them alike, and the medians over rounds are reported with the load
 * average each run saw. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_comm.h"
#include "shardlm_cli.h"
#include "shardlm_common.h"

#define CMP_NT 3
#define CMP_MAX_ROUNDS 100
#define CMP_CHILD_TIMEOUT_S 300

static const char *const cmp_names[CMP_NT] = {"ring/shm", "ring/tcp", "mpi"};
static const size_t cmp_sizes[3] = {8192, 1u << 20, 16u << 20};

typedef struct {
    double us8k[CMP_MAX_ROUNDS], bw1m[CMP_MAX_ROUNDS], bw16m[CMP_MAX_ROUNDS], load[CMP_MAX_ROUNDS];
    int n;
    const char *skip; /* why this transport did not run */
} cmp_cell;

static const char *cmp_mpirun(void)
{
    static char path[4096];
    const char *env = getenv("SHARDLM_MPIRUN");
    if (env && *env) return env;
    for (const char *p = getenv("PATH"); p && *p;) {
        size_t n = strcspn(p, ":");
        snprintf(path, sizeof path, "%.*s/mpirun", (int)n, p);
        if (access(path, X_OK) == 0) return path;
        p += n + (p[n] == ':');
    }
    return NULL;
}

static double cmp_load(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f && fscanf(f, "%lf", &l) != 1) l = -1;
    if (f) fclose(f);
    return l;
}

/* Runs argv with stdout captured (stderr passes through); NULL when it
 * failed or ran past the limit. */
static char *cmp_capture(char *const argv[])
{
    int p[2];
    if (pipe(p)) return NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], STDOUT_FILENO);
        close(p[0]);
        close(p[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0, cap = 4096;
    char *out = malloc(cap);
    uint64_t end = shardlm_now_ns() + (uint64_t)CMP_CHILD_TIMEOUT_S * 1000000000ull;
    int ok = pid > 0 && out;
    while (ok) {
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        uint64_t now = shardlm_now_ns();
        int pr = now >= end ? -1 : poll(&pf, 1, (int)((end - now) / 1000000 + 1));
        if (pr == 0 || (pr < 0 && errno == EINTR && now < end)) continue;
        if (pr < 0) {
            ok = 0;
            break;
        }
        if (len + 1024 > cap) {
            char *bigger = realloc(out, cap * 2);
            if (!bigger) {
                ok = 0;
                break;
            }
            out = bigger;
            cap *= 2;
        }
        ssize_t r = read(p[0], out + len, cap - len - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(p[0]);
    int st = 0;
    if (pid > 0 && !ok) kill(pid, SIGKILL); /* its ranks die with it (PR_SET_PDEATHSIG) */
    if (pid > 0) waitpid(pid, &st, 0);
    if (!ok || !out || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        free(out);
        return NULL;
    }
    out[len] = 0;
    return out;
}

/* One child run; fills the round's numbers, 0 on success. */
static int cmp_one(const bench_opts *o, int t, int world, cmp_cell *cell)
{
    char ws[16], iters[16], sizes[64];
    snprintf(ws, sizeof ws, "%d", world);
    snprintf(iters, sizeof iters, "%d", o->iters);
    snprintf(sizes, sizeof sizes, "%zu,%zu,%zu", cmp_sizes[0], cmp_sizes[1], cmp_sizes[2]);
    char *argv[20];
    int a = 0;
    if (t == 2) argv[a++] = (char *)cmp_mpirun(), argv[a++] = "-np", argv[a++] = ws;
    argv[a++] = (char *)shardlm_cli_self();
    argv[a++] = "bench-comm";
    if (t == 2) argv[a++] = "--comm", argv[a++] = "mpi";
    else argv[a++] = "--world-size", argv[a++] = ws, argv[a++] = "--ring-transport", argv[a++] = t ? "tcp" : "shm";
    argv[a++] = "--sizes";
    argv[a++] = sizes;
    if (o->iters) argv[a++] = "--iters", argv[a++] = iters;
    argv[a++] = "--json";
    argv[a] = NULL;
    double load = cmp_load();
    char *out = cmp_capture(argv);
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    free(out);
    double v[3] = {0};
    int got = 0;
    for (int i = 0; i < 3 && cJSON_IsArray(j); i++) {
        cJSON *row = cJSON_GetArrayItem(j, i);
        cJSON *x = cJSON_GetObjectItem(row, i ? "algbw_gbps" : "median_us");
        if (cJSON_IsNumber(x)) v[i] = x->valuedouble, got++;
    }
    cJSON_Delete(j);
    if (got != 3) {
        fprintf(stderr, "shardlm bench-comm --compare: the %s run at world size %d failed (its error is above)\n",
                cmp_names[t], world);
        return -1;
    }
    int n = cell->n++;
    cell->us8k[n] = v[0], cell->bw1m[n] = v[1], cell->bw16m[n] = v[2], cell->load[n] = load;
    return 0;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double cmp_median(const double *v, int n)
{
    double s[CMP_MAX_ROUNDS];
    memcpy(s, v, sizeof *s * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_dbl);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

static void cmp_print_text(const bench_opts *o, cmp_cell cells[][CMP_NT])
{
    printf("# shardlm bench-comm --compare: %d round(s); each round runs every transport once per world size, the\n"
           "# order rotating; medians over rounds (each run is the median of its timed iterations); load is the\n"
           "# 1-minute load average when each run started\n", o->rounds);
    printf("%5s  %-9s %10s %11s %12s %6s   %s\n", "world", "transport", "8KiB_us", "1MiB_GB/s", "16MiB_GB/s", "load",
           "8KiB_us per round");
    for (int w = 0; w < o->nworlds; w++)
        for (int t = 0; t < CMP_NT; t++) {
            cmp_cell *c = &cells[w][t];
            if (!c->n) {
                printf("%5d  %-9s %s\n", o->worlds[w], cmp_names[t], c->skip ? c->skip : "failed");
                continue;
            }
            printf("%5d  %-9s %10.1f %11.3f %12.3f %6.2f  ", o->worlds[w], cmp_names[t], cmp_median(c->us8k, c->n),
                   cmp_median(c->bw1m, c->n), cmp_median(c->bw16m, c->n), cmp_median(c->load, c->n));
            for (int r = 0; r < c->n; r++) printf(" %.1f", c->us8k[r]);
            printf("\n");
        }
}

static void cmp_print_json(const bench_opts *o, cmp_cell cells[][CMP_NT])
{
    cJSON *root = cJSON_CreateObject(), *res = cJSON_AddArrayToObject(root, "results");
    cJSON_AddNumberToObject(root, "rounds", o->rounds);
    for (int w = 0; w < o->nworlds; w++)
        for (int t = 0; t < CMP_NT; t++) {
            cmp_cell *c = &cells[w][t];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "world", o->worlds[w]);
            cJSON_AddStringToObject(e, "transport", cmp_names[t]);
            if (c->n) {
                cJSON_AddNumberToObject(e, "us_8k", cmp_median(c->us8k, c->n));
                cJSON_AddNumberToObject(e, "gbps_1m", cmp_median(c->bw1m, c->n));
                cJSON_AddNumberToObject(e, "gbps_16m", cmp_median(c->bw16m, c->n));
                cJSON_AddItemToObject(e, "us_8k_rounds", cJSON_CreateDoubleArray(c->us8k, c->n));
                cJSON_AddItemToObject(e, "load_rounds", cJSON_CreateDoubleArray(c->load, c->n));
            } else {
                cJSON_AddStringToObject(e, "skipped", c->skip ? c->skip : "failed");
            }
            cJSON_AddItemToArray(res, e);
        }
    char *s = cJSON_PrintUnformatted(root);
    if (s) puts(s);
    free(s);
    cJSON_Delete(root);
}

int shardlm_bench_comm_compare(const bench_opts *o)
{
    static cmp_cell cells[BENCH_MAX_WORLDS][CMP_NT];
    memset(cells, 0, sizeof cells);
    const char *no_mpi = !shardlm_comm_mpi_built() ? "skipped: this build has no MPI"
                         : !cmp_mpirun()          ? "skipped: no mpirun on PATH (or SHARDLM_MPIRUN)"
                                                  : NULL;
    int failed = 0;
    for (int w = 0; w < o->nworlds; w++) cells[w][2].skip = no_mpi;
    for (int r = 0; r < o->rounds; r++)
        for (int w = 0; w < o->nworlds; w++)
            for (int k = 0; k < CMP_NT; k++) {
                int t = (r + k) % CMP_NT;
                if (cells[w][t].skip) continue;
                if (isatty(STDERR_FILENO))
                    fprintf(stderr, "\rbench-comm --compare: round %d/%d, world %d, %-8s ", r + 1, o->rounds,
                            o->worlds[w], cmp_names[t]);
                failed |= cmp_one(o, t, o->worlds[w], &cells[w][t]) != 0;
            }
    if (isatty(STDERR_FILENO)) fprintf(stderr, "\r%60s\r", "");
    if (o->json) cmp_print_json(o, cells);
    else cmp_print_text(o, cells);
    return failed ? 1 : 0;
}
