/* doctor.h - the parts of `shardlm doctor` (launcher/cmd_doctor.c): probes
 * of this machine (doctor_probe.c) and of its place in a ring
 * (doctor_ring.c). Every probe adds a section to one JSON report and one
 * or more checks, each printed as an `ok`/`FAIL` line unless --json. */
#ifndef SHARDLM_DOCTOR_H
#define SHARDLM_DOCTOR_H

#include <cjson/cJSON.h>

typedef struct {
    cJSON *root;   /* the --json report */
    cJSON *checks; /* array of {name, ok, detail} inside root */
    int json;      /* print the report at the end instead of lines as they come */
    int failed;    /* a check failed: exit 1 */
    int bad_input; /* the ring config is invalid: exit 2 */
} shardlm_doctor;

/* Records one check and prints its line (unless --json). */
void shardlm_doctor_check(shardlm_doctor *d, const char *name, int ok, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Machine probes. Only a broken installation fails: a missing CUDA driver,
 * runtime or NCCL library is reported as information. */
void shardlm_doctor_probe_build(shardlm_doctor *d);
void shardlm_doctor_probe_cpu(shardlm_doctor *d);
void shardlm_doctor_probe_numa(shardlm_doctor *d); /* the nodes --numa spreads ranks over */
void shardlm_doctor_probe_memory(shardlm_doctor *d);
void shardlm_doctor_probe_cuda(shardlm_doctor *d);
void shardlm_doctor_probe_nccl(shardlm_doctor *d);
void shardlm_doctor_probe_mpi(shardlm_doctor *d);

/* The ring named by a RING_CONFIG file: validation, the ports this rank
 * binds, name resolution, connecting to both neighbours, the transport of
 * each hop (shared memory or TCP, and why) and one timed all-reduce. Every
 * rank of the ring runs it at the same time. transport: "auto", "tcp" or
 * "shm" (NULL: $SHARDLM_RING_TRANSPORT or auto). */
void shardlm_doctor_ring(shardlm_doctor *d, const char *path, int timeout_ms, const char *transport);

#endif
