/* control_guard.h - rank 0's answer to control connections that arrive
 * once the cluster has formed (internal to collectives/). A small thread
 * accepts them, runs the cluster-token challenge with a short bound and
 * refuses a failure at once, logged with the source address. A peer that
 * proves the token is held for a while: if a re-formation starts meanwhile
 * (a restarted worker that reconnected before rank 0 noticed the loss),
 * shardlm_ctrl_accept_all takes it; otherwise it is refused with "the
 * cluster is complete". */
#ifndef SHARDLM_CONTROL_GUARD_H
#define SHARDLM_CONTROL_GUARD_H

#include <stdint.h>

/* Bound on the token challenge of a late peer. */
#define CTRL_GUARD_AUTH_MS 2000
/* How long a late peer with the right token waits for a re-formation
 * (covers the default --heartbeat-timeout-ms) before it is refused. */
#define CTRL_GUARD_HOLD_MS 10000

typedef struct ctrl_guard ctrl_guard;

/* For a non-blocking listening socket; no thread runs yet. */
int ctrl_guard_new(int listen_fd, ctrl_guard **out);
/* complete = 1 (every worker connected): the thread answers the listener;
 * 0: accept_all owns it again. The first 1 starts the thread. */
int ctrl_guard_set_complete(ctrl_guard *g, int complete);
/* A held peer that proved the token, for accept_all to read its Hello;
 * -1 when there is none. */
int ctrl_guard_take(ctrl_guard *g);
/* Stops the thread and closes what it holds. */
void ctrl_guard_free(ctrl_guard *g);

/* The token challenge on a freshly accepted control socket, bounded by
 * auth_ms and deadline_ns; a refusal is logged with the source address. */
int ctrl_guard_auth(int fd, int auth_ms, uint64_t deadline_ns);

#endif
