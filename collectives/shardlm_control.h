/* shardlm_control.h - the control channel: rank 0 listens on
 * master_ip:master_port, every worker connects, and rank 0 drives them with
 * typed messages: a handshake, one Step per forward step, heartbeats while
 * idle, Faults, the weights transfer and Shutdown. On the wire each is a
 * 4-byte little-endian length followed by one protobuf Envelope
 * (collectives/shardlm.proto); the protobuf types stay inside collectives/
 * (control_internal.h). Every wait has a timeout. */
#ifndef SHARDLM_CONTROL_H
#define SHARDLM_CONTROL_H

#include <stddef.h>
#include <stdint.h>

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

/* ---- typed messages (control_msg.c) ---- */

/* The kinds of message; the numbers are the Envelope's field numbers (and
 * what error texts print). Hello and HelloAck are the handshake's own
 * (control.c): a received one has no payload here. */
typedef enum {
    SHARDLM_CTRL_MSG_NONE = 0,
    SHARDLM_CTRL_MSG_HELLO = 1,
    SHARDLM_CTRL_MSG_HELLO_ACK = 2,
    SHARDLM_CTRL_MSG_STEP = 3,
    SHARDLM_CTRL_MSG_SHUTDOWN = 4,
    SHARDLM_CTRL_MSG_HEARTBEAT = 5,
    SHARDLM_CTRL_MSG_WEIGHTS_BEGIN = 6,
    SHARDLM_CTRL_MSG_WEIGHTS_CHUNK = 7,
    SHARDLM_CTRL_MSG_WEIGHTS_END = 8,
    SHARDLM_CTRL_MSG_FAULT = 9,
    SHARDLM_CTRL_MSG_NCCL_ID = 10,
} shardlm_ctrl_kind;

#define SHARDLM_CTRL_NCCL_ID_BYTES 128

/* The KV blocks of one sequence, in position order. */
typedef struct {
    const int32_t *blocks;
    size_t n_blocks;
} shardlm_ctrl_table;

/* One forward step: token i has position pos[i], belongs to sequence
 * seq[i] (an index into tables) and wants its logits when want_logits[i]. */
typedef struct {
    uint64_t step_id;
    size_t n_tokens; /* the length of tokens, pos, seq and want_logits */
    const int32_t *tokens, *pos, *seq;
    const uint32_t *want_logits;
    size_t n_tables;
    const shardlm_ctrl_table *tables;
} shardlm_ctrl_step;

/* --weights-from rank0: count pieces of length bytes, stride bytes apart, from offset. */
typedef struct {
    uint64_t offset, length, stride;
    uint32_t count;
} shardlm_ctrl_range;

typedef struct {
    uint64_t file_size;
    uint64_t total_bytes; /* sum of all range pieces */
    uint64_t fingerprint; /* the model's */
    size_t n_ranges;
    const shardlm_ctrl_range *ranges;
    int use_cache; /* the worker's cached copy is current: nothing follows */
} shardlm_ctrl_weights_begin;

typedef struct {
    uint64_t offset; /* file offset of data */
    const uint8_t *data;
    size_t len;
} shardlm_ctrl_weights_chunk;

typedef struct {
    int rank;
    int peer; /* the rank the failed collective waited on, -1 if none */
    const char *error;
} shardlm_ctrl_fault;

typedef struct {
    const char *reason;
    int rejoin; /* the cluster re-forms: a worker that can reconnects */
} shardlm_ctrl_shutdown;

/* One message. A received one's pointers point into memory it owns until
 * shardlm_ctrl_msg_free. */
typedef struct {
    shardlm_ctrl_kind kind;
    union {
        shardlm_ctrl_step step;
        shardlm_ctrl_shutdown shutdown;
        uint64_t heartbeat_ns; /* the sender's monotonic clock */
        shardlm_ctrl_weights_begin weights_begin;
        shardlm_ctrl_weights_chunk weights_chunk;
        uint64_t weights_checksum; /* WeightsEnd: over the bytes sent, in order */
        shardlm_ctrl_fault fault;
        uint8_t nccl_id[SHARDLM_CTRL_NCCL_ID_BYTES];
    } u;
    void *priv_; /* the decoded frame and its arrays */
} shardlm_ctrl_msg;

void shardlm_ctrl_msg_free(shardlm_ctrl_msg *m);

/* Rank 0: one Step to every worker. */
int shardlm_ctrl_send_step(shardlm_ctrl *c, const shardlm_ctrl_step *st, int timeout_ms);
/* Rank 0: the NCCL unique id to every worker (--comm nccl without MPI). */
int shardlm_ctrl_send_nccl_id(shardlm_ctrl *c, const uint8_t id[SHARDLM_CTRL_NCCL_ID_BYTES], int timeout_ms);
/* Worker: receives the next message, validated (shardlm_ctrl_decode's
 * rules); free it with shardlm_ctrl_msg_free. */
int shardlm_ctrl_recv(shardlm_ctrl *c, int timeout_ms, shardlm_ctrl_msg *out);
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

/* --weights-from rank0 (launcher/weights.c). Rank 0: messages to worker
 * `rank` only: WeightsBegin, then its chunks, then WeightsEnd. */
int shardlm_ctrl_send_weights_begin(shardlm_ctrl *c, int rank, const shardlm_ctrl_weights_begin *b, int timeout_ms);
int shardlm_ctrl_send_weights_chunk(shardlm_ctrl *c, int rank, uint64_t offset, const void *data, size_t len,
                                    int timeout_ms);
int shardlm_ctrl_send_weights_end(shardlm_ctrl *c, int rank, uint64_t checksum, int timeout_ms);
/* Rank 0, after accept_all: whether worker `rank` asked for weights and
 * which cached copy it has (a need_weights worker's fingerprint is not
 * checked by the handshake; the transfer settles it). */
shardlm_ctrl_weights_req shardlm_ctrl_weights_request(const shardlm_ctrl *c, int rank);
/* Worker: shardlm_ctrl_connect for a worker without the model file; its
 * Hello asks rank 0 for weights (mine->fingerprint is not used). */
int shardlm_ctrl_connect_weights(const char *host, int port, shardlm_ctrl_hello *mine,
                                 const shardlm_ctrl_weights_req *want, int timeout_ms, shardlm_ctrl **out);

/* ---- supervision (serve keeps running when a rank is lost) ---- */

/* Rank 0: closes every worker connection but keeps listening, so
 * shardlm_ctrl_accept_all can take the re-formed cluster's workers. */
void shardlm_ctrl_reset_workers(shardlm_ctrl *c);
/* Rank 0: Shutdown to every worker still connected (best effort, each
 * bounded by timeout_ms). rejoin: the cluster re-forms, a worker that can
 * should reconnect rather than exit. Returns the first failure. */
int shardlm_ctrl_send_shutdown(shardlm_ctrl *c, const char *reason, int rejoin, int timeout_ms);
/* Rank 0, while idle: reads the workers' answers to earlier heartbeats,
 * then sends each a new one. Returns the first lost worker (its control
 * connection closed, or no answer for lost_after_ms; 0 turns that check
 * off) with one line in why, or 0 when every worker is alive; -1 on
 * allocation failure. */
int shardlm_ctrl_heartbeat(shardlm_ctrl *c, int timeout_ms, int lost_after_ms, char *why, size_t cap);
/* Worker: answers a heartbeat. */
int shardlm_ctrl_send_heartbeat(shardlm_ctrl *c, int timeout_ms);
/* What a receiver knows to check a decoded message against (control_check.c);
 * 0: not known yet, that bound is not checked. */
typedef struct {
    int world;     /* ranks: Fault.rank and Fault.peer */
    int max_batch; /* Step tokens */
    int n_vocab;   /* Step token ids */
    int n_ctx;     /* Step positions */
    int kv_blocks; /* Step block ids and table lengths */
} shardlm_ctrl_limits;

/* Decodes one frame's payload (the bytes after the length) and validates
 * it (sizes, ranks, counts, ids; control_check.c) before use: SHARDLM_OK,
 * or SHARDLM_EPEER with the error text naming the message and field. Every
 * frame the control channel receives goes through the same rules. lim may
 * be NULL (nothing known). */
int shardlm_ctrl_decode(const uint8_t *p, size_t n, const shardlm_ctrl_limits *lim, shardlm_ctrl_msg *out);
/* Encodes m as the payload of one frame (the bytes the channel sends after
 * the length), into *out (malloc'ed, free it). Not validated: a receiver
 * does that. Hello and HelloAck are not encoded here (SHARDLM_EINPUT). */
int shardlm_ctrl_encode(const shardlm_ctrl_msg *m, uint8_t **out, size_t *len);

#endif
