/* ring_internal.h - shared between the ring's set-up (setup.c, libuv) and its
 * data path (ring.c, plain non-blocking sockets + poll). */
#ifndef SHARDLM_RING_INTERNAL_H
#define SHARDLM_RING_INTERNAL_H

#include <stddef.h>

#include "shardlm_ring.h"

/* Handshake sent by both ends of every link, network byte order. */
#define RING_MAGIC 0x534c4d52u /* "SLMR" */
#define RING_PROTO_VERSION 1u
#define RING_HELLO_BYTES 16

/* The two connected links of one rank, taken out of libuv. */
typedef struct {
    int left_fd;  /* accepted from rank-1; we only receive on it */
    int right_fd; /* connected to rank+1; we only send on it */
    char left_addr[300];
    char right_addr[300];
} ring_links;

/* Listens, connects, handshakes; on success the fds are blocking-free,
 * TCP_NODELAY sockets owned by the caller. */
int ring_setup_links(const shardlm_ring_config *cfg, int connect_timeout_ms, ring_links *out);

#endif
