/* shardlm_control.h - the control channel: rank 0 listens on
 * master_ip:master_port, every worker connects, and rank 0 drives them with
 * protobuf-c messages (collectives/shardlm.proto): a handshake, one Step per
 * forward step, heartbeats while idle, and Shutdown. Frames are a 4-byte
 * little-endian length followed by one Envelope. Every wait has a timeout. */
#ifndef SHARDLM_CONTROL_H
#define SHARDLM_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "shardlm.pb-c.h"

#define SHARDLM_PROTOCOL_VERSION 1u

typedef struct {
    uint64_t fingerprint; /* model fingerprint */
    int world_size;
    int rank;
    const char *backend; /* collective backend name */
    int n_ctx;           /* decided by rank 0, learnt by workers */
    int max_batch;       /* decided by rank 0, learnt by workers */
    int isq;             /* decided by rank 0, learnt by workers (-1: none) */
    int kv_blocks;       /* decided by rank 0, learnt by workers */
    int block_size;      /* decided by rank 0, learnt by workers */
    int kv_type;         /* KV cache element type (shardlm_dtype), decided by rank 0, learnt by workers */
    int comm_q8;         /* --comm-dtype q8, decided by rank 0, learnt by workers */
} shardlm_ctrl_hello;

/* --weights-from rank0: a worker's request for its weights, carried in its
 * Hello (cached_*: its verified cached copy, 0 when it has none). */
typedef struct {
    int need_weights;
    uint64_t cached_fingerprint;
    uint64_t cached_ranges_hash;
} shardlm_ctrl_weights_req;

typedef struct shardlm_ctrl shardlm_ctrl;

/* Rank 0: binds and listens (before the workers start connecting). */
int shardlm_ctrl_listen(const char *host, int port, int world_size, shardlm_ctrl **out);
/* Rank 0: the port it listens on (port 0 in listen picks a free one). */
int shardlm_ctrl_port(const shardlm_ctrl *c);
/* Rank 0: accepts world_size - 1 workers and checks each handshake against
 * `mine`. A mismatch is answered with a refusal naming the difference, and
 * fails here too with SHARDLM_EINPUT. */
int shardlm_ctrl_accept_all(shardlm_ctrl *c, const shardlm_ctrl_hello *mine, int timeout_ms);
/* Worker: connects (retrying until the deadline), sends its handshake and
 * learns rank 0's shared settings (n_ctx, max_batch, isq, KV pool and type) into *mine. */
int shardlm_ctrl_connect(const char *host, int port, shardlm_ctrl_hello *mine, int timeout_ms,
                         shardlm_ctrl **out);

/* Rank 0: while accepting, watch(ctx) is called every 100 ms; a non-zero
 * return (with the error text set) aborts the wait, e.g. when a locally
 * spawned worker has already exited. */
void shardlm_ctrl_set_watch(shardlm_ctrl *c, int (*watch)(void *ctx), void *ctx);

/* Rank 0: sends one message to every worker. */
int shardlm_ctrl_broadcast(shardlm_ctrl *c, const Shardlm__Envelope *env, int timeout_ms);
/* Worker: receives the next message (free it with
 * shardlm__envelope__free_unpacked(env, NULL)). */
int shardlm_ctrl_recv(shardlm_ctrl *c, int timeout_ms, Shardlm__Envelope **env);
/* Rank 0: the rank of a worker whose connection has closed, waiting up to
 * wait_ms for one to show; -1 when none has. */
int shardlm_ctrl_find_dead(shardlm_ctrl *c, int wait_ms);

/* Worker: tells rank 0 why it is about to stop (a Fault message: its rank,
 * the peer its failed collective was waiting on or -1, the error text), so
 * rank 0 can tell the ranks that failed from the one that was lost. Best
 * effort, bounded by timeout_ms; keeps the caller's error text. */
int shardlm_ctrl_send_fault(shardlm_ctrl *c, int rank, int peer, const char *error, int timeout_ms);
/* Rank 0, after a collective failed: waits up to wait_ms until every worker
 * has sent a Fault or closed its control connection. A worker that did
 * neither (its link went silent) or closed without a Fault (it died) is
 * lost. Returns the lowest lost rank, or -1 when every worker reported a
 * Fault; writes one line into why naming the lost rank(s), how each was
 * lost and the ranks whose Faults name it as the peer they waited on. */
int shardlm_ctrl_collect_faults(shardlm_ctrl *c, int wait_ms, char *why, size_t cap);
void shardlm_ctrl_close(shardlm_ctrl *c);

/* --weights-from rank0 (launcher/weights.c). Rank 0: sends one message to
 * worker `rank` only. */
int shardlm_ctrl_send(shardlm_ctrl *c, int rank, const Shardlm__Envelope *env, int timeout_ms);
/* Rank 0, after accept_all: whether worker `rank` asked for weights and
 * which cached copy it has (a need_weights worker's fingerprint is not
 * checked by the handshake; the transfer settles it). */
shardlm_ctrl_weights_req shardlm_ctrl_weights_request(const shardlm_ctrl *c, int rank);
/* Worker: shardlm_ctrl_connect for a worker without the model file; its
 * Hello asks rank 0 for weights (mine->fingerprint is not used). */
int shardlm_ctrl_connect_weights(const char *host, int port, shardlm_ctrl_hello *mine,
                                 const shardlm_ctrl_weights_req *want, int timeout_ms, shardlm_ctrl **out);

/* What a receiver knows to check a decoded message against (control_check.c);
 * 0: not known yet, that bound is not checked. */
typedef struct {
    int world;     /* ranks: Fault.rank and Fault.peer */
    int max_batch; /* Step tokens */
    int n_vocab;   /* Step token ids */
    int n_ctx;     /* Step positions */
    int kv_blocks; /* Step block ids and table lengths */
} shardlm_ctrl_limits;

/* Validates one decoded Envelope (sizes, ranks, counts, ids) before use:
 * SHARDLM_OK, or SHARDLM_EPEER with the error text naming the message and
 * field. Every frame the control channel receives goes through it. */
int shardlm_ctrl_check(const Shardlm__Envelope *env, const shardlm_ctrl_limits *lim);

#endif
