/* numa.h - `--numa`: placing the ranks that share a machine on its NUMA
 * nodes and cores, read from /sys/devices/system/node. Ranks are spread
 * over the nodes in blocks (ring neighbours share a node), and each node's
 * CPUs are split among its ranks without overlap while there are enough.
 * Internal to the launcher; the parsing takes any directory, so tests run
 * it on fake sysfs trees. */
#ifndef SHARDLM_NUMA_H
#define SHARDLM_NUMA_H

#include <sched.h>
#include <stddef.h>

#define SHARDLM_NUMA_MAX_NODES 256

typedef struct {
    int n;                               /* nodes that have CPUs */
    int id[SHARDLM_NUMA_MAX_NODES];      /* their numbers (nodeN), ascending */
    cpu_set_t cpus[SHARDLM_NUMA_MAX_NODES];
} shardlm_numa_topo;

typedef struct {
    int node;       /* the node's number, -1 when the machine shows no nodes */
    int n_nodes;    /* nodes the ranks were spread over */
    cpu_set_t cpus; /* this rank's CPUs */
    int shared;     /* more ranks than CPUs on its node: it shares its CPU */
} shardlm_numa_slot;

/* "0-3,8,10-11" (a sysfs cpulist; trailing newline allowed) into out.
 * Returns 0, or -1 for anything else. An empty list is valid. */
int shardlm_numa_parse_cpulist(const char *s, cpu_set_t *out);
/* Prints a set as a cpulist ("0-3,8"). */
void shardlm_numa_format(const cpu_set_t *s, char *buf, size_t cap);

/* Reads dir/nodeN/cpulist for every nodeN under dir (normally
 * /sys/devices/system/node). Nodes without CPUs are left out; a missing dir
 * gives t->n = 0. A malformed cpulist fails with SHARDLM_EINPUT naming the
 * file. */
int shardlm_numa_read(const char *dir, shardlm_numa_topo *t);

/* The place of local rank `local_rank` of `local_ranks` on topology t,
 * within the CPUs in `allowed` (nodes with none of them are skipped; with
 * no node left, `allowed` is one node). Fails with SHARDLM_EINPUT when no
 * CPU is allowed at all. */
int shardlm_numa_place(const shardlm_numa_topo *t, const cpu_set_t *allowed, int local_rank, int local_ranks,
                       shardlm_numa_slot *out);

/* Binds this thread (and the threads it creates later) to the slot's CPUs
 * and, on a machine of several nodes, prefers the slot's node for memory. */
int shardlm_numa_apply(const shardlm_numa_slot *s);

#endif
