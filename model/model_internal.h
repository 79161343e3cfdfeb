/* model_internal.h - the layout of a loaded shard, the inference state, and
 * the backend table the one layer walker (forward.c) calls. Shared by the
 * loader, the walker and the two backends (backend_cpu.c, backend_cuda.c).
 * Not part of the public API. */
#ifndef SHARDLM_MODEL_INTERNAL_H
#define SHARDLM_MODEL_INTERNAL_H

#include "shardlm_kernels.h"
#include "shardlm_model.h"

/* What sets one architecture apart (plan.c), following llama.cpp's loader
 * and graph for it: the RoPE style, qwen3's per-head q/k norms, whether
 * attention.key_length may differ from dim / heads, and which optional
 * tensors a file may hold (SHARDLM_OPT_*). */
enum {
    SHARDLM_OPT_QKV_BIAS = 1,   /* blk.N.attn_{q,k,v}.bias */
    SHARDLM_OPT_O_BIAS = 2,     /* blk.N.attn_output.bias */
    SHARDLM_OPT_FFN_BIAS = 4,   /* blk.N.ffn_{gate,up,down}.bias */
    SHARDLM_OPT_OUT_BIAS = 8,   /* output.bias */
    SHARDLM_OPT_ROPE_FREQS = 16 /* rope_freqs.weight (Llama 3 frequency factors) */
};
typedef struct {
    const char *name;
    int rope_neox, qk_norm, own_head_dim;
    unsigned optional;
} shardlm_arch_desc;
const shardlm_arch_desc *shardlm_arch_desc_of(shardlm_arch a);

/* A row-major matrix of `rows` rows of `cols` elements, owned by the model.
 * data is host memory, or device memory once the model is on a GPU. */
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
    /* Optional (NULL when the file has none). Column-parallel biases are
     * this rank's slice; row-parallel ones (bo, b_down) are whole and added
     * once, after the all-reduce. */
    float *bq, *bk, *bv, *bo;
    float *b_gate, *b_up, *b_down;
    float *q_norm, *k_norm; /* qwen3: head_dim each, applied to every head before RoPE */
} shardlm_layer;

typedef struct shardlm_backend shardlm_backend;

struct shardlm_model {
    shardlm_hparams hp;
    shardlm_shard_plan plan;
    shardlm_mat tok_embd; /* vocab x dim, replicated */
    shardlm_mat output;   /* n_vocab x dim, this rank's vocabulary rows */
    float *output_norm;
    float *output_b;     /* optional: this rank's vocabulary slice of output.bias */
    float *rope_factors; /* optional: rope_dim / 2 divisors of the RoPE frequencies (rope_freqs.weight), host */
    shardlm_layer *layers;
    size_t shard_bytes;
    int *vocab_counts; /* n_vocab of every rank, for the logits gather */
    const shardlm_backend *be;     /* where the weights live: CPU, or CUDA after shardlm_model_to_device */
    struct shardlm_model_dev *dev; /* the CUDA backend's own (context, device index) */
};

/* One weight of the model, for code that visits them all (the CUDA upload,
 * freeing): a matrix, or a float vector of n elements (NULL when absent). */
typedef struct {
    const char *name; /* the GGUF name, less "blk.N.": "attn_q.weight", "attn_q.bias", ... */
    shardlm_mat *mat;
    float **vec;
    size_t n;
} shardlm_weight;
#define SHARDLM_MAX_WEIGHTS 24
/* The weights of layer l, or the model's own (embedding, output) for l = -1.
 * Returns how many were written to out (at most SHARDLM_MAX_WEIGHTS). */
int shardlm_model_weights(shardlm_model *m, int l, shardlm_weight *out);

/* ---- inference state ---- */

/* The activations of one step, in the backend's memory: [batch][width]. */
typedef struct {
    float *x, *xb, *xb2; /* dim */
    float *q, *att;      /* local q width */
    float *k, *v;        /* local KV width */
    float *hb, *hb2;     /* local FFN rows */
    float *lg_local;     /* local vocabulary rows */
} shardlm_acts;

struct shardlm_state {
    const shardlm_model *m;
    const shardlm_backend *be;
    int n_ctx, max_batch;     /* n_ctx: positions one sequence may reach */
    int n_blocks, block_size; /* the paged KV pool of this rank */
    shardlm_dtype kv_type;    /* element type of the cache rows */
    shardlm_acts a;
    float *lg_all;            /* rank 0: the gathered vocabulary slices (host) */
    size_t *gather_bytes;     /* [world] */
    uint64_t allreduce_ns;    /* time spent in all-reduce, all steps */
    shardlm_pool *pool;       /* borrowed; NULL: single-threaded (CPU) */
    uint8_t *q8_scratch;      /* --comm-dtype q8 wire blocks; NULL: f32 all-reduce (CPU) */
    void *bs;                 /* the backend's own: KV cache, RoPE tables, device staging */
};

/* ---- the backend table ----
 * Every operation of a step, on buffers in the backend's memory. Each
 * returns a status; the walker stops at the first failure. Operations are
 * row-wise (or per token), so a token's result never depends on the rest
 * of the batch. */
struct shardlm_backend {
    const char *name;
    /* Allocates s->a and s->bs (s's sizes are set); frees them. */
    int (*state_new)(shardlm_state *s);
    void (*state_free)(shardlm_state *s);
    /* Before the first operation of a step (the CUDA backend uploads the
     * tokens, positions and block tables) and after the last. */
    int (*begin)(shardlm_state *s, const shardlm_batch *b);
    int (*end)(shardlm_state *s);
    /* x[i] = row b->tokens[i] of the embedding table, as f32. */
    int (*embed)(shardlm_state *s, const shardlm_mat *table, const shardlm_batch *b, float *x);
    /* Each of rows rows of dim values: out = w * x / sqrt(mean(x^2) + eps); out may be x. */
    int (*rmsnorm)(shardlm_state *s, float *out, const float *x, const float *w, int rows, int dim, float eps);
    /* Y[i][r] = sum_c W[r][c] X[i][c] for i < n. */
    int (*matmul)(shardlm_state *s, const shardlm_mat *w, const float *x, int n, float *y);
    /* ys[i] = w[i] x for k matrices of one input width (q/k/v, gate/up),
     * each as matmul gives it; NULL: the forward pass calls matmul k times. */
    int (*matmul_many)(shardlm_state *s, int k, const shardlm_mat *const *w, const float *x, int n, float **ys);
    /* y[i][j] += bias[j] for rows rows of width values. */
    int (*add_bias)(shardlm_state *s, float *y, const float *bias, int rows, int width);
    /* Rotates every token's local q and k heads at its position (the
     * model's RoPE style, frequencies, factors and scale). */
    int (*rope)(shardlm_state *s, float *q, int n_q_heads, float *k, int n_kv_heads, const shardlm_batch *b);
    /* Stores every token's k and v rows at its position of layer l's cache. */
    int (*kv_store)(shardlm_state *s, int l, const float *k, const float *v, const shardlm_batch *b);
    /* Causal attention of the local query heads over layer l's cache. */
    int (*attention)(shardlm_state *s, int l, const float *q, float *out, const shardlm_batch *b);
    /* x[i] += y[i]; a[i] = silu(a[i]) * b[i]; dst = src (n floats). */
    int (*add)(shardlm_state *s, float *x, const float *y, size_t n);
    int (*silu_mul)(shardlm_state *s, float *a, const float *b, size_t n);
    int (*copy)(shardlm_state *s, float *dst, const float *src, size_t n);
    /* Sum all-reduce of n floats in place. */
    int (*allreduce)(shardlm_state *s, shardlm_comm *c, float *buf, size_t n, int timeout_ms);
    /* Gathers every rank's local logits (s->gather_bytes) into rank 0's
     * host buffer recv, in rank order. */
    int (*gather)(shardlm_state *s, shardlm_comm *c, const float *local, float *recv, int timeout_ms);
};

extern const shardlm_backend shardlm_backend_cpu;  /* backend_cpu.c */
extern const shardlm_backend shardlm_backend_cuda; /* backend_cuda.c */

/* backend_cuda.c: releases the device copy of the weights (m->dev). */
void shardlm_dev_model_free(shardlm_model *m);

/* ---- synth_vocab.c: the vocabulary of a synthetic model ---- */
#define SHARDLM_SYNTH_MIN_VOCAB 259 /* the built-in one: <unk>, <s>, </s>, 256 byte tokens, then words */
/* Writes the tokenizer.* metadata: the built-in vocabulary of o->vocab
 * tokens, or every tokenizer.* entry of o->vocab_path. */
int shardlm_synth_write_vocab(shardlm_gguf_writer *w, const shardlm_synth_opts *o);

/* ---- ranges.c: a growable list of byte ranges. The loader in record mode
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
