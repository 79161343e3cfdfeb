/* model_internal.h - the layout of a loaded shard, shared by the loader and
 * the forward pass. Not part of the public API. */
#ifndef SHARDLM_MODEL_INTERNAL_H
#define SHARDLM_MODEL_INTERNAL_H

#include "shardlm_kernels.h"
#include "shardlm_model.h"

/* A row-major matrix of `rows` rows of `cols` elements, owned by the model. */
typedef struct {
    shardlm_dtype type;
    size_t rows, cols;
    void *data;
} shardlm_mat;

typedef struct {
    float *attn_norm, *ffn_norm; /* dim each, replicated */
    shardlm_mat wq, wk, wv;      /* column-parallel: local heads x dim */
    shardlm_mat wo;              /* row-parallel: dim x local q width */
    shardlm_mat w_gate, w_up;    /* column-parallel: n_ffn x dim */
    shardlm_mat w_down;          /* row-parallel: dim x n_ffn */
} shardlm_layer;

struct shardlm_model {
    shardlm_hparams hp;
    shardlm_shard_plan plan;
    shardlm_mat tok_embd; /* vocab x dim, replicated */
    shardlm_mat output;   /* n_vocab x dim, this rank's vocabulary rows */
    float *output_norm;
    shardlm_layer *layers;
    size_t shard_bytes;
    int *vocab_counts; /* n_vocab of every rank, for the logits gather */
    struct shardlm_model_dev *dev; /* CUDA hook: set by shardlm_model_to_device */
};

/* ---- CUDA hook: the device forward pass (model/forward_cuda.c) ----
 * After shardlm_model_to_device the weights live on the device (the host
 * copies of the matrices are freed) and forward.c hands states and steps
 * to these. */
typedef struct shardlm_model_dev shardlm_model_dev;
typedef struct shardlm_state_dev shardlm_state_dev;
void shardlm_dev_model_free(shardlm_model_dev *dv);
int shardlm_dev_state_new(const shardlm_model *m, int n_blocks, int block_size, int max_batch, shardlm_state_dev **out);
void shardlm_dev_state_free(shardlm_state_dev *d);
int shardlm_dev_forward(const shardlm_model *m, shardlm_state_dev *d, shardlm_comm *comm, const shardlm_batch *b,
                        float *logits, int timeout_ms, uint64_t *allreduce_ns);

/* ranges.c: a growable list of byte ranges. The loader in record mode
 * appends what each read would touch instead of copying it. */
typedef struct {
    shardlm_byte_range *v;
    size_t n, cap;
} shardlm_range_list;
int shardlm_range_list_add(shardlm_range_list *l, uint64_t offset, uint64_t length, uint64_t stride,
                           uint64_t count);
/* load.c: runs the loader for (world, rank) in record mode: every tensor read
 * goes into l, nothing is copied. */
int shardlm_model_record_reads(const shardlm_gguf *g, int world, int rank, shardlm_range_list *l);

#endif
