/* shardlm_runtime.h - rank 0's lockstep engine step, and the workers'
 * step loop. Rank 0 decides everything: each step it sends one Step message
 * over the control channel, then every rank runs the same forward pass in
 * lockstep. Workers never decide anything by themselves. */
#ifndef SHARDLM_RUNTIME_H
#define SHARDLM_RUNTIME_H

#include <stdint.h>

#include "shardlm_comm.h"
#include "shardlm_control.h"
#include "shardlm_model.h"

typedef struct shardlm_engine shardlm_engine;

typedef struct {
    int n_ctx;      /* positions one sequence may reach */
    int max_batch;  /* tokens per step */
    int kv_blocks;  /* paged KV pool (0: one sequence of n_ctx positions) */
    int block_size; /* positions per KV block */
    int timeout_ms; /* each collective and control message */
    int n_threads;  /* kernel threads of this rank */
    int pin;        /* pin kernel threads to cores */
    int kv_type;    /* KV cache element type: SHARDLM_DT_F32 (0), _F16 or _Q8_0 */
    int comm_q8;    /* all-reduce with Q8_0 blocks on the wire (--comm-dtype q8) */
} shardlm_engine_opts;

/* The engine borrows model, comm and ctrl (ctrl is NULL at world size 1);
 * the caller frees them after shardlm_engine_free. It owns its kernel
 * thread pool and the KV pool. */
int shardlm_engine_new(shardlm_model *m, shardlm_comm *comm, shardlm_ctrl *ctrl, const shardlm_engine_opts *o,
                       shardlm_engine **out);
void shardlm_engine_free(shardlm_engine *e);
int shardlm_engine_n_ctx(const shardlm_engine *e);
int shardlm_engine_kv_blocks(const shardlm_engine *e);
int shardlm_engine_block_size(const shardlm_engine *e); /* positions per KV block */
int shardlm_engine_max_batch(const shardlm_engine *e);
const shardlm_model *shardlm_engine_model(const shardlm_engine *e);
double shardlm_engine_allreduce_seconds(const shardlm_engine *e);

/* Rank 0: one lockstep forward step of n tokens of one sequence (see
 * shardlm_model_forward). logits receives a row of vocab floats for each
 * token with want[i] != 0. */
int shardlm_engine_step(shardlm_engine *e, const int32_t *tokens, const int32_t *pos, const uint8_t *want, int n,
                        float *logits);
/* Rank 0: one lockstep step of a multi-sequence batch (paged KV). */
int shardlm_engine_step_batch(shardlm_engine *e, const shardlm_batch *b, float *logits);
/* Rank 0, after a step failed in a collective: the worker it was traced to
 * (the step waited up to 1.5 s for the workers' Fault reports, and the
 * error text names that rank and why), or -1 when none was. */
int shardlm_engine_lost_rank(const shardlm_engine *e);
/* Rank 0, while idle: tells the workers it is alive. */
int shardlm_engine_heartbeat(shardlm_engine *e);
/* Rank 0: tells the workers to exit (best effort). */
void shardlm_engine_shutdown(shardlm_engine *e, const char *reason);

/* Worker: runs steps until rank 0 sends Shutdown (returns SHARDLM_OK) or
 * something fails (returns its status). idle_timeout_ms bounds the wait for
 * the next message. */
int shardlm_engine_worker_loop(shardlm_engine *e, int idle_timeout_ms);

#endif
