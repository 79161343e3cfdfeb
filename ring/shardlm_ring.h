/* shardlm_ring.h - the TCP ring transport and its RING_CONFIG file.
 *
 * RING_CONFIG uses mistral.rs's field names. Rank r listens on `port` for its
 * left neighbour (r-1) and connects to its right neighbour (r+1) at
 * right_ip:right_port. Rank 0 also listens on master_ip:master_port for the
 * control channel (see collectives/shardlm_control.h). */
#ifndef SHARDLM_RING_H
#define SHARDLM_RING_H

#include "shardlm_comm.h"

typedef struct {
    char master_ip[256]; /* IP address or host name */
    int master_port;
    int port;
    char right_ip[256]; /* IP address or host name; default 127.0.0.1 */
    int right_port;
    int rank;
    int world_size;
} shardlm_ring_config;

/* Loads and validates a RING_CONFIG file. On failure returns SHARDLM_EINPUT
 * with an error text of the form "PATH: field 'NAME': problem". */
int shardlm_ring_config_load(const char *path, shardlm_ring_config *cfg);
/* Validates a config already in memory; `origin` names it in messages. */
int shardlm_ring_config_validate(const shardlm_ring_config *cfg, const char *origin);
int shardlm_ring_config_write(const char *path, const shardlm_ring_config *cfg);

/* How a hop of the ring carries its bytes. AUTO: shared memory when both
 * ends are on the same host (same boot_id, host name and network namespace)
 * and neither end asked for tcp, else TCP. SHM: as AUTO, but a hop that
 * cannot use shared memory fails the set-up (SHARDLM_EINPUT, naming the peer
 * and why). TCP: loopback or network TCP on every hop. */
typedef enum { SHARDLM_RING_AUTO = 0, SHARDLM_RING_TCP = 1, SHARDLM_RING_SHM = 2 } shardlm_ring_transport;

typedef struct {
    int connect_timeout_ms;
    shardlm_ring_transport transport;
} shardlm_ring_opts;

/* "auto", "tcp" or "shm"; SHARDLM_EINPUT otherwise (no error text set). */
int shardlm_ring_transport_parse(const char *name, shardlm_ring_transport *out);
/* $SHARDLM_RING_TRANSPORT, or AUTO when unset; SHARDLM_EINPUT naming the
 * variable when it holds anything else. */
int shardlm_ring_transport_env(shardlm_ring_transport *out);

/* Connects the ring: listens on cfg->port, connects to the right neighbour
 * with retry and backoff, and checks each neighbour's rank and world size;
 * then each hop settles on shared memory or TCP (see above). Fails with a
 * message naming the peer once connect_timeout_ms has passed. */
int shardlm_ring_comm_create_opts(const shardlm_ring_config *cfg, const shardlm_ring_opts *opts, shardlm_comm **out);
/* The same with the transport from $SHARDLM_RING_TRANSPORT (default auto). */
int shardlm_ring_comm_create(const shardlm_ring_config *cfg, int connect_timeout_ms, shardlm_comm **out);

/* The ring in the transports' registry (shardlm_comm_open "ring"): its
 * config is a shardlm_ring_open_config; the open options' timeout_ms is the
 * connect timeout. */
typedef struct {
    const shardlm_ring_config *cfg;
    shardlm_ring_transport transport;
} shardlm_ring_open_config;
extern const shardlm_comm_transport shardlm_ring_comm_transport;

/* What a hop of a ring communicator uses: "shm" or "tcp" for the hop to the
 * right neighbour (right = 1) or from the left one (right = 0); NULL when c
 * is not a ring of two or more ranks. *why (may be NULL) gets a short
 * reason, such as "same host" or "another host (boot_id differs)". */
const char *shardlm_ring_comm_hop(const shardlm_comm *c, int right, const char **why);

#endif
