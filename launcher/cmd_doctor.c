/* cmd_doctor.c - `shardlm doctor`: what this machine offers (CPU, memory,
 * CUDA, NCCL, MPI, this binary's build) and, given a RING_CONFIG, whether
 * this rank can take its place in the ring. Each check prints one `ok` or
 * `FAIL` line; --json prints one object instead. Exit 0 when every check
 * passed, 2 for an invalid ring config, 1 for any other failure. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doctor.h"
#include "shardlm_cli.h"
#include "shardlm_ring.h"

static void doctor_usage(FILE *f)
{
    fprintf(f, "usage: shardlm doctor [--json] [--ring-config FILE] [--timeout-ms MS] [--ring-transport T]\n"
               "  Reports the CPU and its SIMD features, the NUMA nodes, memory, the CUDA driver/runtime and\n"
               "  GPUs, NCCL and MPI (probed at run time, whatever this binary was built with)\n"
               "  and the build's CUDA/NCCL/MPI support. With a ring config (--ring-config or\n"
               "  $RING_CONFIG) it also validates it, checks that this rank's ports can be\n"
               "  bound and its hosts resolve, connects to both ring neighbours, says which\n"
               "  transport each hop uses (shared memory or TCP, and why) and times an\n"
               "  all-reduce: run it on every rank at the same time.\n"
               "  --json          one JSON object on stdout instead of ok/FAIL lines\n"
               "  --ring-config F the rank's RING_CONFIG file (default: $RING_CONFIG)\n"
               "  --timeout-ms MS deadline for connecting and for each collective (default 10000)\n"
               "  --ring-transport T  auto (default), tcp or shm: as the ranks will run\n"
               "Exit status: 0 all checks passed, 2 invalid ring config or flag, 1 another check failed.\n");
}

void shardlm_doctor_check(shardlm_doctor *d, const char *name, int ok, const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "name", name);
    cJSON_AddBoolToObject(c, "ok", ok);
    cJSON_AddStringToObject(c, "detail", detail);
    cJSON_AddItemToArray(d->checks, c);
    if (!ok) d->failed = 1;
    if (!d->json) {
        printf("%-4s %-12s %s\n", ok ? "ok" : "FAIL", name, detail);
        fflush(stdout); /* ranks wait on each other: show progress as it happens */
    }
}

static int doctor_parse(int argc, char **argv, int *json, const char **cfg, int *timeout_ms, const char **transport)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            *json = 1;
        } else if (!strcmp(a, "--ring-transport") && v) {
            shardlm_ring_transport t;
            if (shardlm_ring_transport_parse(v, &t)) {
                fprintf(stderr, "shardlm doctor: invalid value '%s' for --ring-transport (auto, tcp or shm)\n", v);
                return 2;
            }
            *transport = v;
            i++;
        } else if (!strcmp(a, "--ring-config") && v) {
            *cfg = v;
            i++;
        } else if (!strcmp(a, "--timeout-ms") && v) {
            char *end;
            long t = strtol(v, &end, 10);
            if (*end || t < 1 || t > 86400000) {
                fprintf(stderr, "shardlm doctor: invalid value '%s' for --timeout-ms\n", v);
                return 2;
            }
            *timeout_ms = (int)t;
            i++;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            doctor_usage(stdout);
            return 1;
        } else {
            fprintf(stderr, "shardlm doctor: unknown or incomplete option '%s' (try 'shardlm doctor --help')\n", a);
            return 2;
        }
    }
    return 0;
}

int shardlm_cmd_doctor(int argc, char **argv)
{
    int json = 0, timeout_ms = 10000;
    const char *cfg = getenv("RING_CONFIG"), *transport = NULL;
    int rc = doctor_parse(argc, argv, &json, &cfg, &timeout_ms, &transport);
    if (rc) return rc == 1 ? 0 : 2;
    if (transport && !(cfg && *cfg)) {
        fprintf(stderr, "shardlm doctor: --ring-transport applies to a ring: give --ring-config (or $RING_CONFIG)\n");
        return 2;
    }
    shardlm_doctor d = {.json = json, .root = cJSON_CreateObject()};
    if (!d.root || !(d.checks = cJSON_AddArrayToObject(d.root, "checks"))) {
        fprintf(stderr, "shardlm doctor: out of memory\n");
        return 1;
    }
    cJSON_AddStringToObject(d.root, "version", "0.1.0");
    shardlm_doctor_probe_build(&d);
    shardlm_doctor_probe_cpu(&d);
    shardlm_doctor_probe_numa(&d);
    shardlm_doctor_probe_memory(&d);
    shardlm_doctor_probe_cuda(&d);
    shardlm_doctor_probe_nccl(&d);
    shardlm_doctor_probe_mpi(&d);
    if (cfg && *cfg) shardlm_doctor_ring(&d, cfg, timeout_ms, transport);
    cJSON_AddBoolToObject(d.root, "ok", !d.failed);
    if (json) {
        char *s = cJSON_Print(d.root);
        if (s) puts(s);
        free(s);
    } else {
        printf("%s\n", d.failed ? "doctor: some checks FAILED" : "doctor: all checks passed");
    }
    cJSON_Delete(d.root);
    return d.bad_input ? 2 : d.failed ? 1 : 0;
}
