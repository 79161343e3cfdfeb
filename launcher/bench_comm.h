/* bench_comm.h - the options of `shardlm bench-comm` (cmd_bench_comm.c)
 * and its --compare mode (bench_compare.c), which runs the benchmark as
 * child processes, one per transport, in alternating rounds. */
#ifndef SHARDLM_BENCH_COMM_H
#define SHARDLM_BENCH_COMM_H

#include <stddef.h>

#include "shardlm_ring.h"

#define BENCH_MAX_SIZES 64
#define BENCH_MAX_WORLDS 8

typedef struct {
    int world, json, iters, timeout_ms;
    size_t min_bytes, max_bytes;
    size_t sizes[BENCH_MAX_SIZES]; /* --sizes; nsizes 0: the doubling range */
    int nsizes;
    const char *comm; /* "ring" or "mpi" */
    int q8;           /* --comm-dtype q8: Q8_0 blocks on the wire */
    shardlm_ring_transport transport;
    int compare, rounds;
    int worlds[BENCH_MAX_WORLDS], nworlds;
} bench_opts;

/* --compare: returns the exit status. */
int shardlm_bench_comm_compare(const bench_opts *o);

#endif
