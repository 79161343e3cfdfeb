/* shardlm_model.h - a decoder-only transformer (general.architecture llama,
 * qwen2 or qwen3) sharded Megatron-style across the ranks of a
 * communicator, and its forward pass.
 *
 * Column-parallel (split by output rows): q, k, v, gate, up, output, and
 * their biases. Row-parallel (split by input columns): o and down, each
 * followed by one sum all-reduce; their biases are added once, after the
 * sum. Norms (including qwen3's per-head q/k norms), RoPE frequency
 * factors and the token embedding are replicated. Each rank keeps only its
 * shard in memory: the slices are copied out of the GGUF mapping and the
 * mapping is released. */
#ifndef SHARDLM_MODEL_H
#define SHARDLM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "shardlm_comm.h"
#include "shardlm_gguf.h"
#include "shardlm_kernels.h"

/* The architectures shardlm runs (docs/MODELS.md). */
typedef enum {
    SHARDLM_ARCH_LLAMA = 0, /* Llama 2/3.x, Mistral, TinyLlama, SmolLM2: interleaved-pair RoPE */
    SHARDLM_ARCH_QWEN2 = 1, /* Qwen2, Qwen2.5: q/k/v biases, NeoX RoPE */
    SHARDLM_ARCH_QWEN3 = 2, /* Qwen3: per-head q/k RMSNorm before RoPE, NeoX RoPE */
} shardlm_arch;
#define SHARDLM_N_ARCHS 3
/* "llama", "qwen2", "qwen3" (the general.architecture value). */
const char *shardlm_arch_name(shardlm_arch a);
/* The value's architecture, or -1 when shardlm does not run it. */
int shardlm_arch_parse(const char *name);
/* "llama, qwen2, qwen3", for messages. */
const char *shardlm_arch_list(void);

typedef struct {
    int dim, n_layers, n_heads, n_kv_heads, head_dim, ffn, vocab, ctx, rope_dim;
    float eps, rope_base;
    shardlm_arch arch;
    int rope_neox;         /* 1: rotate (x[i], x[i + rope_dim/2]) (NeoX); 0: (x[2i], x[2i+1]) */
    float rope_freq_scale; /* rope.scaling.type linear: 1 / rope.scaling.factor; otherwise 1 */
} shardlm_hparams;

/* What one rank holds. Heads and FFN rows are contiguous ranges. */
typedef struct {
    int rank, world;
    int q_head0, n_q_heads;   /* local query heads */
    int kv_head0, n_kv_heads; /* local KV heads (replicated when n_kv < world) */
    int ffn0, n_ffn;          /* local FFN rows */
    int vocab0, n_vocab;      /* local rows of the output projection */
} shardlm_shard_plan;

/* Reads and checks the ARCH.* hyperparameters of an open GGUF (head_dim is
 * attention.key_length when present), and that every tensor is one the
 * architecture takes. SHARDLM_EINPUT naming the file and the key or tensor,
 * or naming the architecture and the supported list. */
int shardlm_hparams_read(const shardlm_gguf *g, shardlm_hparams *hp);

/* Splits the model over `world` ranks. ffn_unit is the granularity of the
 * FFN split (the loader passes the lcm of every layer's ffn_down block
 * size, so no rank's slice of ffn_down cuts a block). Fails with SHARDLM_EINPUT,
 * saying why, when the heads do not divide. */
int shardlm_plan_make(const shardlm_hparams *hp, int world, int rank, int ffn_unit, shardlm_shard_plan *p);

typedef struct shardlm_model shardlm_model;

/* How to load: isq >= 0 quantises every F32/F16/BF16 weight matrix of the
 * shard to that type (SHARDLM_DT_Q8_0 or SHARDLM_DT_Q4_0) while loading
 * ("in-situ quantisation"); pool (may be NULL) runs that on its threads. */
typedef struct {
    int isq;
    shardlm_pool *pool;
} shardlm_load_opts;

/* Loads this rank's shard from an open GGUF (which the caller may close
 * right after). opts may be NULL. */
int shardlm_model_load(const shardlm_gguf *g, int world, int rank, const shardlm_load_opts *opts,
                       shardlm_model **out);
void shardlm_model_free(shardlm_model *m);
const shardlm_hparams *shardlm_model_hparams(const shardlm_model *m);
const shardlm_shard_plan *shardlm_model_plan(const shardlm_model *m);
/* Bytes of weights this rank holds. */
size_t shardlm_model_shard_bytes(const shardlm_model *m);

/* Bytes of a file: count pieces of length bytes, stride bytes apart, the
 * first at offset. A contiguous range has count 1 and stride == length. */
typedef struct {
    uint64_t offset, length, stride;
    uint32_t count;
} shardlm_byte_range;

/* Exactly the bytes of g that shardlm_model_load(g, world, rank, ...) reads,
 * plus the header [0, data offset), sorted by offset and not overlapping
 * (model/ranges.c). A file holding only these bytes, with anything in the
 * gaps, loads the same shard. Free *out with free(). */
int shardlm_model_shard_ranges(const shardlm_gguf *g, int world, int rank, shardlm_byte_range **out, size_t *n);
/* Sum of the piece lengths of n ranges. */
uint64_t shardlm_byte_ranges_total(const shardlm_byte_range *r, size_t n);
/* A hash of the range list itself: says which bytes a shard cache holds. */
uint64_t shardlm_byte_ranges_hash(const shardlm_byte_range *r, size_t n);

/* Inference state: the paged KV cache of this rank's heads (n_blocks
 * blocks of block_size positions; 0 blocks: enough for one sequence of
 * n_ctx positions) and scratch for batches of up to max_batch tokens. */
typedef struct shardlm_state shardlm_state;
int shardlm_state_new(const shardlm_model *m, int n_ctx, int n_blocks, int block_size, int max_batch,
                      shardlm_state **out);
/* The same with the cache's element type: SHARDLM_DT_F32 (what
 * shardlm_state_new uses), SHARDLM_DT_F16 or SHARDLM_DT_Q8_0 (rows of
 * head_dim, see shardlm_kv_row_bytes). A model on a CUDA device takes
 * only F32. SHARDLM_EINPUT naming --kv-cache-type otherwise. */
int shardlm_state_new_kv(const shardlm_model *m, int n_ctx, int n_blocks, int block_size, int max_batch,
                         shardlm_dtype kv_type, shardlm_state **out);
/* KV cache bytes of one position on one rank: layers x local KV heads x
 * 2 rows (K and V), for sizing the pool. */
size_t shardlm_kv_bytes_per_token(const shardlm_hparams *hp, const shardlm_shard_plan *p, shardlm_dtype kv_type);
void shardlm_state_free(shardlm_state *s);
int shardlm_state_n_ctx(const shardlm_state *s);
int shardlm_state_n_blocks(const shardlm_state *s);
/* Wall time this state's steps spent in all-reduce. */
double shardlm_state_allreduce_seconds(const shardlm_state *s);

/* One step: n tokens from n_seqs sequences. Token i is sequence seq[i]'s
 * token at position pos[i]; its KV goes to block tables[seq[i]][pos / bs],
 * and it attends to positions 0..pos[i] of its sequence. want[i] asks for
 * its logits. */
typedef struct {
    int n;
    const int32_t *tokens, *pos, *seq;
    const uint8_t *want;
    int n_seqs;
    const int32_t *const *tables;
    const int *table_len;
} shardlm_batch;

/* Runs a batch. Logits are computed for the tokens with want[i] != 0 and
 * gathered to rank 0, which receives them in `logits` as one row of vocab
 * floats per wanted token, in batch order (workers pass NULL). Every rank
 * must call it with the same batch. */
int shardlm_model_forward_batch(const shardlm_model *m, shardlm_state *s, shardlm_comm *comm, const shardlm_batch *b,
                                float *logits, int timeout_ms);
/* Makes this state's two all-reduces per layer use the q8 wire format
 * (shardlm_comm_allreduce_q8; on = 1) or f32 (on = 0, the default). CPU states only. */
int shardlm_state_set_comm_q8(shardlm_state *s, int world, int on);

/* Runs the kernels of this state's steps on pool (borrowed; NULL: one thread). */
void shardlm_state_set_pool(shardlm_state *s, shardlm_pool *pool);

/* ---- CUDA (model/backend_cuda.c, docs/GPU.md) ----
 * Uploads this rank's shard to CUDA device `device` (after
 * shardlm_model_load; see shardlm_cuda_pick_device). From then on
 * shardlm_state_new puts the KV cache and scratch on the device and
 * shardlm_model_forward_batch runs there, with the same contract (logits in
 * rank 0's host array); make states after this call. The host copies of
 * the weight matrices are freed. Fails, leaving the model usable on the
 * CPU, with a message naming the tensor and type when a weight type has no
 * device kernel (f32, f16, bf16, q8_0 and q4_0 do), and with "built without
 * CUDA" in a build without it. */
int shardlm_model_to_device(shardlm_model *m, int device);
/* The CUDA device of the model, or -1 when it runs on the CPU. */
int shardlm_model_device(const shardlm_model *m);

/* ---- synthetic models (model/synth.c) ----
 * A synthetic GGUF of any shape and architecture with llama.cpp's keys and
 * tensor names (random weights from a fixed-seed PRNG; a small valid
 * SentencePiece vocabulary, or a real vocabulary copied from a GGUF), for
 * tests, benchmarks and comparisons with llama.cpp. */
typedef enum {
    SHARDLM_SYNTH_ROPE_NONE = 0,
    SHARDLM_SYNTH_ROPE_LLAMA3 = 1, /* rope_freqs.weight, as llama.cpp's converter writes for Llama 3.1+ */
    SHARDLM_SYNTH_ROPE_LINEAR = 2, /* ARCH.rope.scaling.type linear, .factor */
} shardlm_synth_rope;

typedef enum {
    SHARDLM_SYNTH_BIAS_DEFAULT = -1, /* the architecture's usual: q/k/v for qwen2, none otherwise */
    SHARDLM_SYNTH_BIAS_NONE = 0,
    SHARDLM_SYNTH_BIAS_QKV = 1,
    SHARDLM_SYNTH_BIAS_ALL = 2, /* every bias llama.cpp's loader takes for the architecture */
} shardlm_synth_bias;

typedef struct {
    int dim, layers, heads, kv_heads, ffn, vocab, context;
    /* Matrices: any type shardlm_dtype_supported accepts; norms and
     * biases are always F32. With Q4_K, output.weight is Q6_K (as in llama.cpp's
     * Q4_K_M); with a 256-block type (the k-quants, IQ4_XS), matrices whose
     * rows are not a multiple of 256 are written as Q8_0. */
    uint32_t type;
    uint64_t seed;
    shardlm_arch arch;
    int head_dim;           /* 0: dim / heads; else written as attention.key_length and value_length */
    const char *vocab_path; /* NULL: the built-in vocabulary of `vocab` tokens; else a GGUF whose
                             * tokenizer.* metadata is copied (vocab becomes its token count) */
    shardlm_synth_rope rope_scaling;
    float rope_factor;      /* the scaling factor (0: the default, 8) */
    float rope_base;        /* rope.freq_base (0: the default, 10000) */
    shardlm_synth_bias biases;
    int tie_embeddings;     /* 1: no output.weight (the output reuses token_embd) */
    /* > 0: a "bigram chain" model for greedy comparisons with other engines
     * (tests/llamacpp/run.sh). output.weight row j is a copy of token_embd
     * row sigma(j), sigma one random cycle through the vocabulary, and the
     * embedding rows are scaled by this gain, so token t's logits peak at
     * sigma^-1(t) by a margin that rounding cannot flip, while the layers
     * still carry most of the rest of the logits. 0: plain random weights. */
    float bigram;
} shardlm_synth_opts;

/* Llama 3's RoPE frequency factors, as llama.cpp's converter computes them
 * for rope_freqs.weight: for each of the rope_dim / 2 frequencies
 * base^(-2i/rope_dim), 1 when its wavelength is below orig_ctx /
 * high_freq_factor, factor above orig_ctx / low_freq_factor, and a smooth
 * blend between. synth uses factor, 1, 4 and 8192 (Llama 3.1's values). */
void shardlm_rope_llama3_factors(float *out, int rope_dim, float base, float factor, float low_freq_factor,
                                 float high_freq_factor, float orig_ctx);

/* The defaults `shardlm synth` uses: llama, dim 256, layers 4, heads 8,
 * kv_heads 4, ffn 768, vocab 512, context 2048, f32, seed 42, RoPE base
 * 10000 unscaled, the architecture's usual biases, untied output. */
void shardlm_synth_defaults(shardlm_synth_opts *o);

/* Checks the options; SHARDLM_EINPUT with a message naming the option
 * (as its command-line flag, e.g. "--heads") when one is invalid. */
int shardlm_synth_check(const shardlm_synth_opts *o);

/* The vocabulary size the file gets: o->vocab, or the token count of
 * o->vocab_path (SHARDLM_EINPUT naming --vocab when it has none). */
int shardlm_synth_vocab_size(const shardlm_synth_opts *o, int *n);

/* Writes the file (via PATH.tmp). The same options give a byte-identical
 * file. Shows progress on a terminal. */
int shardlm_synth_write(const shardlm_synth_opts *o, const char *path);

#endif
