/* shardlm_kernels.h - tensor element types and the compute kernels of the
 * forward pass. Types use ggml's numbering so GGUF type ids map directly.
 *
 * Every kernel has a plain scalar reference (shardlm_ref_*). Optimised
 * kernels are tested against those references. */
#ifndef SHARDLM_KERNELS_H
#define SHARDLM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SHARDLM_DT_F32 = 0,
    SHARDLM_DT_F16 = 1,
    SHARDLM_DT_Q4_0 = 2,
    SHARDLM_DT_Q4_1 = 3,
    SHARDLM_DT_Q5_0 = 6,
    SHARDLM_DT_Q5_1 = 7,
    SHARDLM_DT_Q8_0 = 8,
    SHARDLM_DT_Q2_K = 10,
    SHARDLM_DT_Q3_K = 11,
    SHARDLM_DT_Q4_K = 12,
    SHARDLM_DT_Q5_K = 13,
    SHARDLM_DT_Q6_K = 14,
    SHARDLM_DT_IQ4_NL = 20,
    SHARDLM_DT_IQ4_XS = 23,
    SHARDLM_DT_BF16 = 30,
    /* Q4_0 repacked at load time (shardlm_repack): in memory only, never in
     * a file, so its id is far above ggml's. */
    SHARDLM_DT_Q4_0_R8 = 1000,
    /* Q8_0 repacked at load time likewise (4 rows interleaved). */
    SHARDLM_DT_Q8_0_R4 = 1001,
} shardlm_dtype;

#define SHARDLM_QK 32    /* elements per Q4_0 / Q4_1 / Q5_x / Q8_0 / IQ4_NL block */
#define SHARDLM_QK_K 256 /* elements per k-quant (Q2_K..Q6_K) and IQ4_XS super-block */

/* Type ids are raw GGUF values; kernels/cpu/dtype.c has a table of all of
 * ggml's. 1 when shardlm can compute with the type (the enum above). */
int shardlm_dtype_supported(uint32_t type);
/* 1 when the id is a ggml type whose block size and bytes are known (every
 * current ggml type, computable or not: iq2_xxs, tq1_0, mxfp4, ...). */
int shardlm_dtype_known(uint32_t type);
/* ggml's name in lower case ("f32", "q5_k", "iq2_xxs", ...; also for ids
 * ggml has removed, e.g. "q4_0_4_4"), or "type#N" for ids it never had. */
const char *shardlm_dtype_name(uint32_t type);
/* Parses a name as above (case-insensitive, any ggml type); -1 when unknown. */
int shardlm_dtype_parse(const char *name);
/* "f32, f16, q4_0, ..." : the types shardlm computes with, for messages. */
const char *shardlm_dtype_supported_names(void);
/* Elements per block (1 for float types) and bytes per block. Both 0 for
 * unknown types and removed layouts. */
size_t shardlm_dtype_block_elems(uint32_t type);
size_t shardlm_dtype_block_bytes(uint32_t type);
/* Bytes of a row of n elements; 0 when n is not a multiple of the block. */
size_t shardlm_dtype_row_bytes(uint32_t type, uint64_t n);

float shardlm_f16_to_f32(uint16_t h);
uint16_t shardlm_f32_to_f16(float f);
float shardlm_bf16_to_f32(uint16_t h);
uint16_t shardlm_f32_to_bf16(float f);

/* Convert n elements (n a multiple of the block size) between f32 and a
 * supported type. Dequantisation is exactly as the GGUF/ggml reference
 * defines it (bit for bit ggml's own: tests/ggml/ggml_xcheck.c). For the
 * types other than Q8_0/Q4_0, quantisation is a simple reference method
 * (not ggml's search for the best scales); the error bounds are stated in
 * kernels/cpu/quant_k.c, quant_k_low.c, quant_q5.c and quant_iq4.c. */
void shardlm_dequant_row(shardlm_dtype t, const void *src, float *dst, size_t n);
/* (Neither takes SHARDLM_DT_Q4_0_R8 or _Q8_0_R4, whose rows are interleaved: see
 * shardlm_repack and shardlm_dequant_mat_row.) */
void shardlm_quant_row(shardlm_dtype t, const float *src, void *dst, size_t n);

/* ---- scalar reference kernels ---- */

/* y[r] = sum_c W[r][c] * x[c] for a row-major W of `rows` rows of `cols`
 * elements of type t. */
void shardlm_ref_matvec(shardlm_dtype t, const void *w, size_t rows, size_t cols, const float *x,
                        float *y);
/* Y[i][r] = sum_c W[r][c] * X[i][c] for i < n (X is n x cols, Y is n x rows). */
void shardlm_ref_matmul(shardlm_dtype t, const void *w, size_t rows, size_t cols, const float *x,
                        size_t n, float *y);
void shardlm_ref_rmsnorm(float *out, const float *x, const float *weight, size_t n, float eps);
/* Rotates interleaved pairs (v[2i], v[2i+1]) of the first rope_dim elements of
 * each of n_heads heads of head_dim elements, at position pos. */
void shardlm_ref_rope(float *v, int n_heads, int head_dim, int rope_dim, int pos, float base);
/* NeoX layout (qwen2, qwen3): rotates (v[j], v[j + rope_dim/2]) for
 * j < rope_dim/2 with angle pos / base^(2j / rope_dim). */
void shardlm_ref_rope_neox(float *v, int n_heads, int head_dim, int rope_dim, int pos, float base);
void shardlm_ref_softmax(float *x, size_t n);
/* a[i] = silu(a[i]) * b[i] */
void shardlm_ref_silu_mul(float *a, const float *b, size_t n);

/* ---- CPU thread pool ---- */

/* A persistent pool: n_threads - 1 worker threads are created once; the
 * thread calling shardlm_pool_run takes part as tid 0. Idle workers spin
 * briefly, then sleep on a futex, so pools of several ranks sharing cores do
 * not burn CPU. One shardlm_pool_run at a time per pool; fn must not call
 * shardlm_pool_run on the same pool. */
typedef struct shardlm_pool shardlm_pool;

/* pin: bind thread i to the i-th CPU of this process's affinity mask.
 * Returns SHARDLM_OK, SHARDLM_EINPUT (n_threads < 1) or SHARDLM_ERUNTIME. */
int shardlm_pool_new(int n_threads, int pin, shardlm_pool **out);
void shardlm_pool_free(shardlm_pool *p);
int shardlm_pool_size(const shardlm_pool *p);
/* Runs fn(ctx, tid, nth) on every thread (tid 0..nth-1, nth = pool size);
 * returns when all calls have returned. p may be NULL: fn(ctx, 0, 1). */
void shardlm_pool_run(shardlm_pool *p, void (*fn)(void *ctx, int tid, int nth), void *ctx);
/* Physical cores (not SMT siblings) this process may run on; at least 1. */
int shardlm_cpu_physical_cores(void);

/* ---- optimised CPU kernels (SIMD path chosen once from cpuid) ---- */

/* CPUID.1:ECX.F16C (clang 14's __builtin_cpu_supports has no "f16c"); 0 off x86. */
int shardlm_cpu_has_f16c(void);

/* Same result as shardlm_ref_matmul, for every supported type (and Q4_0_R8
 * / Q8_0_R4: bitwise the result of the plain matrix).
 * For the quantised types the activations are quantised to 8-bit blocks
 * (one f32 scale per 32 values) and the inner loops are integer dot
 * products, so the result differs from the reference by that quantisation
 * error. pool may be NULL (single-threaded). Not reentrant on one pool. */
void shardlm_matmul(shardlm_pool *pool, shardlm_dtype t, const void *w, size_t rows, size_t cols,
                    const float *x, size_t n, float *y);
/* Several matrices of the same input width applied to one x (q/k/v, gate/up):
 * ys[i] = parts[i] x, each bitwise what shardlm_matmul gives, but with one
 * quantisation of x and one pool run (no barrier between the products) when
 * the parts share a type; otherwise the products run one by one. */
#define SHARDLM_MATMUL_MANY_MAX 4
typedef struct {
    shardlm_dtype t;
    const void *w;
    size_t rows;
} shardlm_matmul_part;
void shardlm_matmul_many(shardlm_pool *pool, int k, const shardlm_matmul_part *parts, size_t cols, const float *x,
                         size_t n, float **ys);
void shardlm_rmsnorm(float *out, const float *x, const float *weight, size_t n, float eps);
void shardlm_softmax(float *x, size_t n);
void shardlm_silu_mul(float *a, const float *b, size_t n);

/* ---- RoPE with precomputed tables (kernels/cpu/rope.c) ----
 * Same result as shardlm_ref_rope, bit for bit: the inverse frequencies and
 * the angles are computed by the same expressions, once per model and once
 * per token instead of once per element, and the rotation uses the same
 * products and sums (no fused multiply-add). */

/* freq[i] = 1 / base^(2i / rope_dim) for i < rope_dim / 2. */
void shardlm_rope_freqs(float *freq, int rope_dim, float base);
/* The rotation of one position, for shardlm_rope: tab[0..rope_dim) holds
 * cos(pos * freq[i/2]), tab[rope_dim..2*rope_dim) holds -sin for even i and
 * +sin for odd i. */
void shardlm_rope_table(float *tab, const float *freq, int rope_dim, int pos);
/* Rotates n_heads heads of head_dim elements like shardlm_ref_rope, with a
 * table from shardlm_rope_table for that position. */
void shardlm_rope(float *v, int n_heads, int head_dim, int rope_dim, const float *tab);

/* ---- what the architectures add (kernels/cpu/rope.c) ---- */

/* As shardlm_rope_freqs, then freq[i] = freq[i] / factors[i] * scale:
 * Llama 3's frequency factors (rope_freqs.weight; NULL: none) and linear
 * scaling (scale = 1 / rope.scaling.factor). */
void shardlm_rope_freqs_ext(float *freq, int rope_dim, float base, float scale, const float *factors);
/* The NeoX layout with a shardlm_rope_table table: bit for bit
 * shardlm_ref_rope_neox when the table came from shardlm_rope_freqs. */
void shardlm_rope_neox(float *v, int n_heads, int head_dim, int rope_dim, const float *tab);
/* y[r][j] += b[j] for r < rows, j < width. */
void shardlm_add_bias(float *y, const float *b, size_t rows, size_t width);

/* ---- attention over the paged KV cache (kernels/cpu/attention.c) ----
 * The cache holds, per position and KV head, one row of head_dim values of
 * type SHARDLM_DT_F32, SHARDLM_DT_F16 or SHARDLM_DT_Q8_0. A Q8_0 row is
 * ceil(head_dim / 32) f16 scales followed by head_dim int8 values: chunk c
 * holds elements [32c, 32c + 32) (the last may be shorter), x = d_c * q,
 * d_c = amax / 127 (the usual Q8_0 block when head_dim % 32 == 0, with the
 * scales gathered in front). */

/* Bytes of one row; 0 for other types or head_dim < 1. */
size_t shardlm_kv_row_bytes(shardlm_dtype t, int head_dim);
/* Converts head_dim floats to one row, and back. */
void shardlm_kv_store(shardlm_dtype t, const float *x, int head_dim, void *row);
void shardlm_kv_load(shardlm_dtype t, const void *row, int head_dim, float *x);

/* One layer of the cache: block b's slot j holds n_kv_heads rows, K at
 * k + ((b * block_size + j) * n_kv_heads + h) * row_bytes, V likewise. */
typedef struct {
    shardlm_dtype type;
    int head_dim, n_kv_heads, block_size;
    const uint8_t *k, *v;
} shardlm_kv_view;

/* n tokens. Token i attends to positions 0..pos[i] of sequence seq[i],
 * whose block b is tables[seq[i]][b] (its own K/V must be stored already).
 * Local query head h (global q_head0 + h) uses local KV head
 * (q_head0 + h) / group - kv_head0, group = query heads per KV head.
 * q and out are [n][n_q_heads * head_dim]; q is rotated already. */
typedef struct {
    int n;
    const int32_t *pos, *seq;
    const int32_t *const *tables;
    int n_q_heads, q_head0, kv_head0, group;
    const float *q;
    float *out;
} shardlm_attn_batch;

/* Causal softmax(q k^T / sqrt(head_dim)) v for every token and local query
 * head, in one pass over each token's KV rows (online softmax), the query
 * heads sharing a KV head together, (token, KV head) items spread over pool
 * (may be NULL). Each item is computed the same way whatever else is in the
 * batch or however many threads run, so results are batch invariant. It
 * differs from shardlm_ref_attention by float rounding only (summation
 * order, exp approximation: tests/test_attention.c states the bound). */
void shardlm_attention(shardlm_pool *pool, const shardlm_kv_view *kv, const shardlm_attn_batch *b);
/* The reference: per head, scores, shardlm_ref_softmax, weighted sum. */
void shardlm_ref_attention(const shardlm_kv_view *kv, const shardlm_attn_batch *b);

/* ---- load-time repacking ----
 * Q4_0 as SHARDLM_DT_Q4_0_R8: rows in groups of 8; per group, for each
 * block (144 bytes), the 8 rows' f16 scales, then 4 chunks of 32 bytes:
 * chunk c holds nibble bytes 4c..4c+3 of row 0, then of row 1, ... row 7,
 * so a vector lane is a row (kernels/cpu/matmul_avx2_r8.c). A group is one
 * sequential stream. The last rows % 8 rows stay plain Q4_0 after the
 * groups. Same total size as Q4_0; shardlm_matmul gives bitwise the same
 * result as for the plain matrix on every path.
 * Q8_0 as SHARDLM_DT_Q8_0_R4: rows in groups of 4; per group, for each
 * block (136 bytes), the 4 rows' f16 scales, then the 4 rows' 32 int8
 * weights, row 0 first. The last rows % 4 rows stay plain Q8_0. */

/* When t is Q4_0 (rows >= 8) or Q8_0 (rows >= 4), cols % 32 == 0 and the kernels in use have a
 * faster repacked path (SHARDLM_REPACK=0 in the environment turns this
 * off): *dst = a new malloc'd repacked copy, *dst_type = its type. Otherwise
 * *dst = NULL and *dst_type = t. Returns 0, or SHARDLM_ENOMEM. */
int shardlm_repack(shardlm_dtype t, const void *src, size_t rows, size_t cols, void **dst,
                   shardlm_dtype *dst_type);
/* Memory for weights: n bytes, 2 MiB-aligned and advised for transparent
 * huge pages when n >= 2 MiB (SHARDLM_HUGEPAGES=0 turns that off), else
 * plain malloc. Freed with free(); NULL when out of memory. */
void *shardlm_weights_alloc(size_t n);
/* Row r of a matrix of type t (rows interleaved, so shardlm_dequant_row
 * cannot find one from a pointer) to cols floats; t may be any type. */
void shardlm_dequant_mat_row(shardlm_dtype t, const void *w, size_t rows, size_t cols, size_t r, float *dst);

/* The path in use: "avx512vnni", "avx512", "avx2", "neon" or "scalar".
 * SHARDLM_ISA=scalar|avx2|avx512|avx512vnni|neon in the environment forces
 * one at start-up (a path the CPU lacks is refused with a message on
 * stderr, and the best available is used). */
const char *shardlm_kernels_isa(void);
/* For tests and benchmarks: switch the path now. Returns 0, or -1 when the
 * name is unknown or the CPU lacks it (the path is then unchanged). Not
 * thread-safe against kernels running concurrently. */
int shardlm_kernels_force_isa(const char *name);
/* The kernel the path in use runs for a weight matrix of type t, as
 * "LAYOUT/ISA": the layout after shardlm_repack (e.g. "q4_0_r8") and the
 * narrowest path whose table holds that kernel (an "avx512vnni" path may
 * run "avx2" kernels it does not beat). Writes at most len bytes to buf and
 * returns buf; "none" for a type without a kernel. */
const char *shardlm_kernels_kernel(shardlm_dtype t, char *buf, size_t len);
/* The same for a matrix already in layout l (what shardlm_repack returned):
 * a matrix too small to repack keeps its own type's kernel. */
const char *shardlm_kernels_layout_kernel(shardlm_dtype l, char *buf, size_t len);
/* Every weight type with kernels, for reports (doctor, bench --json). */
#define SHARDLM_KERNELS_N_DTYPES 15
extern const shardlm_dtype shardlm_kernels_dtypes[SHARDLM_KERNELS_N_DTYPES];

#endif
