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

/* Connects the ring: listens on cfg->port, connects to the right neighbour
 * with retry and backoff, and checks each neighbour's rank and world size.
 * Fails with a message naming the peer once connect_timeout_ms has passed. */
int shardlm_ring_comm_create(const shardlm_ring_config *cfg, int connect_timeout_ms, shardlm_comm **out);

#endif
