/* shardlm_launch.h - spawning local rank processes: ring configs on free
 * loopback ports, fork/exec of the worker command with RING_CONFIG set,
 * signal forwarding and reaping. Children die with their parent
 * (PR_SET_PDEATHSIG), so no orphans survive a crash of the launcher. */
#ifndef SHARDLM_LAUNCH_H
#define SHARDLM_LAUNCH_H

#include <sys/types.h>

#include "shardlm_ring.h"

typedef struct shardlm_launch shardlm_launch;

/* Fills cfgs[0..world-1] with a loopback ring on free ports. */
int shardlm_launch_plan(int world, shardlm_ring_config *cfgs);

/* Writes each rank's config to a private temporary directory and spawns
 * ranks first_rank..world-1 running argv with RING_CONFIG=<that rank's file>
 * and SHARDLM_RANK=<rank> in the environment. The caller is usually rank 0
 * (first_rank = 1); `shardlm launch` passes 0. On return *cfg0_path names
 * rank 0's config file. SIGINT/SIGTERM are forwarded to the children. */
int shardlm_launch_start(int world, int first_rank, const shardlm_ring_config *cfgs, char *const argv[],
                         shardlm_launch **out, const char **cfg0_path);

/* Non-blocking check: returns the rank of a child that exited (and its wait
 * status in *status), or -1 when all are still running. */
int shardlm_launch_poll(shardlm_launch *l, int *status);
/* Waits up to timeout_ms for every child to exit, then SIGKILLs the rest.
 * Returns 0 when all exited with status 0. */
int shardlm_launch_wait(shardlm_launch *l, int timeout_ms);
void shardlm_launch_kill(shardlm_launch *l, int sig);
/* Blocks up to timeout_ms (negative: no limit) until a child exits; returns
 * its rank and wait status like shardlm_launch_poll, or -1 on timeout or
 * when no child is left. */
int shardlm_launch_wait_any(shardlm_launch *l, int timeout_ms, int *status);
/* The wait status of a rank that has been reaped (0 before that). */
int shardlm_launch_status(const shardlm_launch *l, int rank);
/* Starts rank `rank` again with the same command and config (serve's
 * supervision); a child still running there is SIGKILLed and reaped first. */
int shardlm_launch_respawn(shardlm_launch *l, int rank);
/* Whether rank `rank`'s child is running (not yet reaped). */
int shardlm_launch_alive(const shardlm_launch *l, int rank);
/* Reaps everything, removes the temporary directory and frees l. */
void shardlm_launch_free(shardlm_launch *l);

#endif
