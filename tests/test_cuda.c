/* test_cuda.c - the CUDA and NCCL backend: every device kernel against the
 * CPU reference on random data, stories260K's and each architecture's
 * logits on the device against the CPU, the greedy golden text through the engine on the device, and a
 * two-GPU NCCL all-reduce. Without CUDA, or without a device, each of those
 * skips with a line naming the reason; the error paths that need no device
 * (the --device message, unsupported weight types, the stubs) always run. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_cuda.h"
#include "shardlm_model.h"
#include "shardlm_nccl.h"
#include "shardlm_runtime.h"
#include "shardlm_text.h"
#include "test_util.h"

/* Skips the current test unless at least k devices are usable. The reason
 * also goes to stderr, so `ctest -V` shows it without Criterion's --verbose. */
#define SKIP(...) \
    do { \
        fprintf(stderr, __VA_ARGS__), fputc('\n', stderr); \
        cr_skip_test(__VA_ARGS__); \
    } while (0)

static void need_devices(int k)
{
    if (!shardlm_cuda_built()) SKIP("SKIP: built without CUDA");
    int n = 0;
    if (shardlm_cuda_device_count(&n)) SKIP("SKIP: no CUDA device (%s)", shardlm_err_get());
    if (n < k) SKIP("SKIP: needs %d CUDA devices, this machine has %d", k, n);
}

static unsigned rng_state = 12345u;
static float frand(void) /* uniform in [-1, 1) */
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / (float)(1u << 23) - 1.0f;
}

static float *rand_vec(size_t n, float scale)
{
    float *v = malloc(n * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}

/* ---- device buffers ---- */

static shardlm_cuda_ctx *ctx0(void)
{
    shardlm_cuda_ctx *c;
    cr_assert_eq(shardlm_cuda_ctx_new(0, &c), 0, "%s", shardlm_err_get());
    return c;
}

static void *up(shardlm_cuda_ctx *c, const void *h, size_t bytes)
{
    void *d;
    cr_assert_eq(shardlm_cuda_alloc(c, &d, bytes, "test"), 0, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_cuda_upload(c, d, h, bytes), 0, "%s", shardlm_err_get());
    return d;
}

static void down(shardlm_cuda_ctx *c, void *h, const void *d, size_t bytes)
{
    cr_assert_eq(shardlm_cuda_download(c, h, d, bytes), 0, "%s", shardlm_err_get());
}

static void assert_close(const float *got, const float *want, size_t n, float tol, const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_assert(fabsf(got[i] - want[i]) <= tol * (1.0f + fabsf(want[i])), "%s[%zu]: device %g, CPU %g", what, i,
                  (double)got[i], (double)want[i]);
}

/* ---- kernels against kernels/cpu/ref.c ---- */

Test(cuda_kernels, rmsnorm_rope_silu_add_softmax_argmax)
{
    need_devices(1);
    shardlm_cuda_ctx *c = ctx0();
    enum { ROWS = 5, DIM = 96, HEADS = 3, HD = 32 };
    size_t n = ROWS * DIM;
    float *x = rand_vec(n, 3.0f), *w = rand_vec(DIM, 1.0f), *y = rand_vec(n, 2.0f), *ref = malloc(n * 4),
          *got = malloc(n * 4);
    float *dx = up(c, x, n * 4), *dw = up(c, w, DIM * 4), *dy = up(c, y, n * 4), *dout = up(c, x, n * 4);

    for (int r = 0; r < ROWS; r++) shardlm_ref_rmsnorm(ref + r * DIM, x + r * DIM, w, DIM, 1e-5f);
    cr_assert_eq(shardlm_cuda_rmsnorm(c, dout, dx, dw, ROWS, DIM, 1e-5f), 0, "%s", shardlm_err_get());
    down(c, got, dout, n * 4);
    assert_close(got, ref, n, 1e-5f, "rmsnorm");

    int32_t pos[ROWS] = {0, 1, 7, 300, 4095};
    int32_t *dpos = up(c, pos, sizeof pos);
    memcpy(ref, x, n * 4);
    for (int r = 0; r < ROWS; r++) shardlm_ref_rope(ref + r * DIM, HEADS, HD, HD - 8, pos[r], 10000.0f);
    cr_assert_eq(shardlm_cuda_rope(c, dx, ROWS, HEADS, HD, HD - 8, dpos, 10000.0f), 0, "%s", shardlm_err_get());
    down(c, got, dx, n * 4);
    assert_close(got, ref, n, 1e-5f, "rope"); /* libm vs CUDA sinf/cosf: a few ulp */

    cr_assert_eq(shardlm_cuda_upload(c, dx, x, n * 4), 0);
    memcpy(ref, x, n * 4);
    shardlm_ref_silu_mul(ref, y, n);
    cr_assert_eq(shardlm_cuda_silu_mul(c, dx, dy, n), 0, "%s", shardlm_err_get());
    down(c, got, dx, n * 4);
    assert_close(got, ref, n, 1e-6f, "silu_mul");

    cr_assert_eq(shardlm_cuda_upload(c, dx, x, n * 4), 0);
    cr_assert_eq(shardlm_cuda_add(c, dx, dy, n), 0, "%s", shardlm_err_get());
    down(c, got, dx, n * 4);
    for (size_t i = 0; i < n; i++) cr_assert_eq(got[i], x[i] + y[i], "add[%zu]", i);

    cr_assert_eq(shardlm_cuda_upload(c, dx, x, n * 4), 0);
    memcpy(ref, x, n * 4);
    for (int r = 0; r < ROWS; r++) shardlm_ref_softmax(ref + r * DIM, DIM);
    cr_assert_eq(shardlm_cuda_softmax(c, dx, ROWS, DIM), 0, "%s", shardlm_err_get());
    down(c, got, dx, n * 4);
    assert_close(got, ref, n, 1e-5f, "softmax");

    x[2 * DIM + 17] = 100.0f, x[2 * DIM + 50] = 100.0f; /* a tie: the first wins */
    cr_assert_eq(shardlm_cuda_upload(c, dx, x, n * 4), 0);
    int32_t am[ROWS], *dam = up(c, am, sizeof am);
    cr_assert_eq(shardlm_cuda_argmax(c, dx, ROWS, DIM, dam), 0, "%s", shardlm_err_get());
    down(c, am, dam, sizeof am);
    for (int r = 0; r < ROWS; r++) {
        int best = 0;
        for (int i = 1; i < DIM; i++)
            if (x[r * DIM + i] > x[r * DIM + best]) best = i;
        cr_assert_eq(am[r], best, "argmax row %d", r);
    }
    void *bufs[] = {dx, dw, dy, dout, dpos, dam};
    for (size_t i = 0; i < 6; i++) shardlm_cuda_release(c, bufs[i]);
    shardlm_cuda_ctx_free(c);
    free(x), free(w), free(y), free(ref), free(got);
}

/* What the architectures add: bias rows, RoPE from a frequency table (pairs
 * and NeoX halves, Llama 3 factors, linear scale) and the per-head q/k norm
 * (rmsnorm over rows of head_dim, in place), against the CPU's kernels. */
Test(cuda_kernels, bias_rope_freqs_and_head_norm)
{
    need_devices(1);
    shardlm_cuda_ctx *c = ctx0();
    enum { ROWS = 5, HEADS = 3, HD = 64, RD = 48, W = HEADS * HD };
    size_t n = ROWS * W;
    float *x = rand_vec(n, 2.0f), *b = rand_vec(W, 1.0f), *ref = malloc(n * 4), *got = malloc(n * 4);
    float *dx = up(c, x, n * 4), *db = up(c, b, W * 4);
    memcpy(ref, x, n * 4);
    shardlm_add_bias(ref, b, ROWS, W);
    cr_assert_eq(shardlm_cuda_add_bias(c, dx, db, ROWS, W), 0, "%s", shardlm_err_get());
    down(c, got, dx, n * 4);
    for (size_t i = 0; i < n; i++) cr_assert_eq(got[i], ref[i], "add_bias[%zu]", i);

    int32_t pos[ROWS] = {0, 1, 7, 300, 4095};
    int32_t *dpos = up(c, pos, sizeof pos);
    float ff[RD / 2], freq[RD / 2], tab[2 * RD];
    for (int j = 0; j < RD / 2; j++) ff[j] = 1.0f + 0.25f * (float)j;
    for (int neox = 0; neox < 2; neox++) {
        shardlm_rope_freqs_ext(freq, RD, 500000.0f, neox ? 0.5f : 1.0f, ff);
        float *dfreq = up(c, freq, sizeof freq);
        cr_assert_eq(shardlm_cuda_upload(c, dx, x, n * 4), 0);
        memcpy(ref, x, n * 4);
        for (int r = 0; r < ROWS; r++) {
            shardlm_rope_table(tab, freq, RD, pos[r]);
            (neox ? shardlm_rope_neox : shardlm_rope)(ref + r * W, HEADS, HD, RD, tab);
        }
        cr_assert_eq(shardlm_cuda_rope_freqs(c, dx, ROWS, HEADS, HD, RD, dpos, dfreq, neox), 0, "%s",
                     shardlm_err_get());
        down(c, got, dx, n * 4);
        assert_close(got, ref, n, 1e-5f, neox ? "rope_freqs neox" : "rope_freqs pairs");
        shardlm_cuda_release(c, dfreq);
    }

    float *w = rand_vec(HD, 1.0f), *dw = up(c, w, HD * 4);
    cr_assert_eq(shardlm_cuda_upload(c, dx, x, n * 4), 0);
    for (int r = 0; r < ROWS * HEADS; r++) shardlm_ref_rmsnorm(ref + r * HD, x + r * HD, w, HD, 1e-6f);
    cr_assert_eq(shardlm_cuda_rmsnorm(c, dx, dx, dw, ROWS * HEADS, HD, 1e-6f), 0, "%s", shardlm_err_get());
    down(c, got, dx, n * 4);
    assert_close(got, ref, n, 1e-5f, "per-head rmsnorm");
    void *bufs[] = {dx, db, dpos, dw};
    for (size_t i = 0; i < 4; i++) shardlm_cuda_release(c, bufs[i]);
    shardlm_cuda_ctx_free(c);
    free(x), free(b), free(ref), free(got), free(w);
}

static const shardlm_dtype all_types[] = {SHARDLM_DT_F32, SHARDLM_DT_F16, SHARDLM_DT_BF16, SHARDLM_DT_Q8_0,
                                          SHARDLM_DT_Q4_0};

/* Activation rounding: F16/BF16 GEMMs see x in the weights' type. */
static float type_tol(shardlm_dtype t)
{
    return t == SHARDLM_DT_F16 ? 2e-3f : t == SHARDLM_DT_BF16 ? 1.5e-2f : 1e-4f;
}

static void check_matmul(shardlm_cuda_ctx *c, shardlm_dtype t, size_t rows, size_t cols, size_t n)
{
    float *wf = rand_vec(rows * cols, 1.0f), *x = rand_vec(n * cols, 1.0f);
    size_t rb = shardlm_dtype_row_bytes(t, cols);
    uint8_t *w = malloc(rb * rows);
    for (size_t r = 0; r < rows; r++) shardlm_quant_row(t, wf + r * cols, w + r * rb, cols);
    float *ref = malloc(n * rows * 4), *got = malloc(n * rows * 4);
    shardlm_ref_matmul(t, w, rows, cols, x, n, ref);
    void *dw = up(c, w, rb * rows), *dx = up(c, x, n * cols * 4), *dy = up(c, ref, n * rows * 4);
    cr_assert_eq(shardlm_cuda_matmul(c, t, dw, rows, cols, dx, n, dy), 0, "%s", shardlm_err_get());
    down(c, got, dy, n * rows * 4);
    for (size_t i = 0; i < n * rows; i++) {
        float mag = 0.0f; /* sum |w x|: the scale of the rounding */
        for (size_t k = 0; k < cols; k++) mag += fabsf(wf[(i % rows) * cols + k] * x[(i / rows) * cols + k]);
        cr_assert(fabsf(got[i] - ref[i]) <= type_tol(t) * mag + 1e-5f, "%s %zux%zu n=%zu [%zu]: device %g, CPU %g",
                  shardlm_dtype_name(t), rows, cols, n, i, (double)got[i], (double)ref[i]);
    }
    shardlm_cuda_release(c, dw), shardlm_cuda_release(c, dx), shardlm_cuda_release(c, dy);
    free(wf), free(x), free(w), free(ref), free(got);
}

Test(cuda_kernels, matmul_every_type_decode_and_prefill)
{
    need_devices(1);
    shardlm_cuda_ctx *c = ctx0();
    for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++) {
        check_matmul(c, all_types[i], 37, 256, 1);
        check_matmul(c, all_types[i], 64, 128, 13); /* batches beyond the 8 tokens of a warp */
    }
    shardlm_cuda_ctx_free(c);
}

Test(cuda_kernels, embedding_every_type)
{
    need_devices(1);
    shardlm_cuda_ctx *c = ctx0();
    enum { VOCAB = 20, DIM = 64, N = 4 };
    int32_t tok[N] = {0, 19, 7, 7};
    for (size_t i = 0; i < sizeof all_types / sizeof all_types[0]; i++) {
        shardlm_dtype t = all_types[i];
        float *tf = rand_vec(VOCAB * DIM, 2.0f), ref[N * DIM], got[N * DIM];
        size_t rb = shardlm_dtype_row_bytes(t, DIM);
        uint8_t *tab = malloc(rb * VOCAB);
        for (int r = 0; r < VOCAB; r++) shardlm_quant_row(t, tf + r * DIM, tab + r * rb, DIM);
        for (int k = 0; k < N; k++) shardlm_dequant_row(t, tab + tok[k] * rb, ref + k * DIM, DIM);
        void *dt = up(c, tab, rb * VOCAB), *dtok = up(c, tok, sizeof tok), *dout = up(c, ref, sizeof ref);
        cr_assert_eq(shardlm_cuda_embed(c, t, dt, DIM, dtok, N, dout), 0, "%s", shardlm_err_get());
        down(c, got, dout, sizeof got);
        for (int k = 0; k < N * DIM; k++) cr_assert_eq(got[k], ref[k], "%s embed[%d]", shardlm_dtype_name(t), k);
        shardlm_cuda_release(c, dt), shardlm_cuda_release(c, dtok), shardlm_cuda_release(c, dout);
        free(tf), free(tab);
    }
    shardlm_cuda_ctx_free(c);
}

/* Paged attention on the CPU, written out as model/forward.c does it. */
static void ref_attention(const float *kc, const float *vc, int nb, int bs, int kvw, const int32_t *table, int layer,
                          int pos, const float *q, int hd, size_t head_off, float *out)
{
    float sc[512];
    for (int t = 0; t <= pos; t++) {
        size_t slot = ((size_t)layer * nb + table[t / bs]) * bs + t % bs;
        float d = 0.0f;
        for (int i = 0; i < hd; i++) d += q[i] * kc[slot * kvw + head_off + i];
        sc[t] = d / sqrtf((float)hd);
    }
    shardlm_ref_softmax(sc, (size_t)pos + 1);
    for (int i = 0; i < hd; i++) out[i] = 0.0f;
    for (int t = 0; t <= pos; t++) {
        size_t slot = ((size_t)layer * nb + table[t / bs]) * bs + t % bs;
        for (int i = 0; i < hd; i++) out[i] += sc[t] * vc[slot * kvw + head_off + i];
    }
}

Test(cuda_kernels, paged_attention_decode_and_prefill)
{
    need_devices(1);
    shardlm_cuda_ctx *c = ctx0();
    enum { LAYERS = 2, NB = 12, BS = 4, KVH = 2, HD = 40, QH = 4, N = 6, L = 1 };
    int kvw = KVH * HD;
    size_t cache = (size_t)LAYERS * NB * BS * kvw;
    float *kc = rand_vec(cache, 1.0f), *vc = rand_vec(cache, 1.0f), *q = rand_vec(N * QH * HD, 1.0f);
    float *k = rand_vec(N * kvw, 1.0f), *v = rand_vec(N * kvw, 1.0f);
    /* sequence 0: blocks 5, 2, 9 (a prefill chunk of 4 tokens at 6..9);
     * sequence 1: blocks 0, 11 (one decode token at 5) and 3 at 30 */
    int32_t tables[2][8] = {{5, 2, 9, 0, 0, 0, 0, 0}, {0, 11, 1, 4, 6, 7, 8, 10}};
    int32_t seq[N] = {0, 0, 0, 0, 1, 1}, pos[N] = {6, 7, 8, 9, 5, 30};
    /* the device gets the cache before the batch's rows are stored */
    shardlm_cuda_kv kv = {up(c, kc, cache * 4), up(c, vc, cache * 4), NB, BS, kvw, up(c, tables, sizeof tables),
                          8, up(c, seq, sizeof seq), up(c, pos, sizeof pos)};
    for (int i = 0; i < N; i++) { /* the store, on the CPU */
        size_t slot = ((size_t)L * NB + tables[seq[i]][pos[i] / BS]) * BS + pos[i] % BS;
        memcpy(kc + slot * kvw, k + i * kvw, kvw * 4);
        memcpy(vc + slot * kvw, v + i * kvw, kvw * 4);
    }
    float *dk = up(c, k, N * kvw * 4), *dv = up(c, v, N * kvw * 4), *dq = up(c, q, N * QH * HD * 4);
    float *dout = up(c, q, N * QH * HD * 4), got[N * QH * HD], ref[N * QH * HD];
    cr_assert_eq(shardlm_cuda_kv_store(c, &kv, L, dk, dv, N), 0, "%s", shardlm_err_get());
    shardlm_cuda_heads h = {QH, HD, 4, 2, 2}; /* rank 1 of 2: global q heads 4..7, KV heads 2..3 */
    cr_assert_eq(shardlm_cuda_attention(c, &kv, &h, L, dq, dout, N), 0, "%s", shardlm_err_get());
    down(c, got, dout, sizeof got);
    for (int i = 0; i < N; i++)
        for (int hh = 0; hh < QH; hh++)
            ref_attention(kc, vc, NB, BS, kvw, tables[seq[i]], L, pos[i], q + (i * QH + hh) * HD, HD,
                          (size_t)((4 + hh) / 2 - 2) * HD, ref + (i * QH + hh) * HD);
    assert_close(got, ref, N * QH * HD, 1e-5f, "attention");
    shardlm_cuda_ctx_free(c);
    free(kc), free(vc), free(q), free(k), free(v);
}

/* ---- the model on the device ---- */

static shardlm_model *load_model(const char *path, int device)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), 0, "%s", shardlm_err_get());
    shardlm_model *m;
    cr_assert_eq(shardlm_model_load(g, 1, 0, NULL, &m), 0, "%s", shardlm_err_get());
    shardlm_gguf_close(g);
    if (device >= 0) cr_assert_eq(shardlm_model_to_device(m, device), 0, "%s", shardlm_err_get());
    return m;
}

/* Runs tokens 0..n-1 as one prefill batch, then one decode step; returns
 * the logits of the last prefill token and of the decode token. */
static void run_steps(shardlm_model *m, const int32_t *toks, int n, float *out)
{
    shardlm_state *s;
    cr_assert_eq(shardlm_state_new(m, 64, 0, 16, 16, &s), 0, "%s", shardlm_err_get());
    shardlm_comm *comm;
    cr_assert_eq(shardlm_comm_local_create(&comm), 0);
    int32_t pos[16], seq[16] = {0}, table[4] = {0, 1, 2, 3}, tlen = 4;
    uint8_t want[16] = {0};
    for (int i = 0; i < n; i++) pos[i] = i;
    want[n - 1] = 1;
    const int32_t *tables[1] = {table};
    shardlm_batch b = {n, toks, pos, seq, want, 1, tables, &tlen};
    cr_assert_eq(shardlm_model_forward_batch(m, s, comm, &b, out, 10000), 0, "%s", shardlm_err_get());
    int vocab = shardlm_model_hparams(m)->vocab;
    shardlm_batch d = {1, toks + n, pos + n, seq, want + n - 1, 1, tables, &tlen};
    pos[n] = n;
    cr_assert_eq(shardlm_model_forward_batch(m, s, comm, &d, out + vocab, 10000), 0, "%s", shardlm_err_get());
    shardlm_state_free(s);
    shardlm_comm_destroy(comm);
}

Test(cuda_model, stories260k_logits_match_cpu)
{
    need_devices(1);
    const char *path = tu_shared("models/stories260K.gguf");
    shardlm_model *cpu = load_model(path, -1), *gpu = load_model(path, 0);
    int vocab = shardlm_model_hparams(cpu)->vocab;
    int32_t toks[8] = {1, 403, 407, 261, 378, 432, 383, 286};
    float *a = malloc(2 * vocab * 4), *b = malloc(2 * vocab * 4);
    run_steps(cpu, toks, 7, a);
    run_steps(gpu, toks, 7, b);
    float mx = 0.0f, diff = 0.0f;
    for (int i = 0; i < 2 * vocab; i++) {
        mx = fmaxf(mx, fabsf(a[i]));
        diff = fmaxf(diff, fabsf(a[i] - b[i]));
    }
    /* the CPU quantises activations for quantised weights; stated bound */
    cr_assert(diff <= 1e-3f * mx, "max |device - CPU| = %g, max |logit| = %g", (double)diff, (double)mx);
    shardlm_model_free(cpu), shardlm_model_free(gpu);
    free(a), free(b);
}

/* Each architecture's synthetic model (F32) on the device against the CPU:
 * Llama 3 factors with key_length != dim / heads, tied output and every
 * llama bias; qwen2 with q/k/v and output biases; qwen3 with its q/k norms. */
Test(cuda_model, every_architecture_logits_match_cpu)
{
    need_devices(1);
    shardlm_synth_opts so[3];
    for (int i = 0; i < 3; i++) {
        shardlm_synth_defaults(&so[i]);
        so[i].dim = 128, so[i].layers = 2, so[i].heads = 4, so[i].kv_heads = 2, so[i].ffn = 256, so[i].vocab = 300;
    }
    so[0].rope_scaling = SHARDLM_SYNTH_ROPE_LLAMA3, so[0].rope_base = 500000.0f, so[0].head_dim = 64;
    so[0].tie_embeddings = 1, so[0].biases = SHARDLM_SYNTH_BIAS_ALL;
    so[1].arch = SHARDLM_ARCH_QWEN2, so[1].biases = SHARDLM_SYNTH_BIAS_ALL;
    so[2].arch = SHARDLM_ARCH_QWEN3, so[2].head_dim = 64;
    int32_t toks[8] = {1, 40, 77, 261, 12, 299, 5, 100};
    for (int i = 0; i < 3; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/arch%d.gguf", tu_tmpdir(), i);
        cr_assert_eq(shardlm_synth_write(&so[i], path), 0, "%s", shardlm_err_get());
        shardlm_model *cpu = load_model(path, -1), *gpu = load_model(path, 0);
        float a[2 * 300], b[2 * 300], mx = 0, diff = 0;
        run_steps(cpu, toks, 7, a);
        run_steps(gpu, toks, 7, b);
        for (int k = 0; k < 2 * 300; k++) mx = fmaxf(mx, fabsf(a[k])), diff = fmaxf(diff, fabsf(a[k] - b[k]));
        cr_assert(diff <= 1e-4f * mx, "%s: max |device - CPU| = %g, max |logit| = %g",
                  shardlm_arch_name(so[i].arch), (double)diff, (double)mx);
        shardlm_model_free(cpu), shardlm_model_free(gpu);
    }
}

/* Greedy decoding through the engine at world size 1 on device 0 gives
 * Karpathy's text for 256 tokens after BOS, as `shardlm generate` does. */
Test(cuda_model, stories260k_greedy_golden_text)
{
    need_devices(1);
    const char *path = tu_shared("models/stories260K.gguf");
    char *want = tu_read_file(tu_shared("models/stories260K.greedy.txt"), NULL);
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), 0);
    shardlm_tokenizer *tok;
    cr_assert_eq(shardlm_tokenizer_from_gguf(g, &tok), 0, "%s", shardlm_err_get());
    shardlm_gguf_close(g);
    shardlm_model *m = load_model(path, 0);
    shardlm_comm *comm;
    cr_assert_eq(shardlm_comm_local_create(&comm), 0);
    shardlm_engine_opts o = {.n_ctx = 512, .max_batch = 16, .kv_blocks = 0, .block_size = 16, .timeout_ms = 10000,
                             .n_threads = 1};
    shardlm_engine *e;
    cr_assert_eq(shardlm_engine_new(m, comm, NULL, &o, &e), 0, "%s", shardlm_err_get());
    int vocab = shardlm_model_hparams(m)->vocab;
    float *lg = malloc(vocab * 4);
    int32_t t = shardlm_tokenizer_bos(tok), p = 0;
    uint8_t w = 1;
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    shardlm_detok d;
    shardlm_detok_init(&d);
    d.prev = t;
    for (int i = 0; i < 256; i++, p++) {
        cr_assert_eq(shardlm_engine_step(e, &t, &p, &w, 1, lg), 0, "%s", shardlm_err_get());
        t = 0;
        for (int k = 1; k < vocab; k++)
            if (lg[k] > lg[t]) t = k;
        if (t == shardlm_tokenizer_eos(tok) || t == shardlm_tokenizer_bos(tok)) break;
        len += shardlm_detok_push(tok, &d, t, out + len, cap - len);
    }
    len += shardlm_detok_flush(&d, out + len, cap - len);
    cr_assert_str_eq(out, want, "device greedy text differs from Karpathy's");
    shardlm_engine_free(e);
    shardlm_comm_destroy(comm);
    shardlm_model_free(m);
    shardlm_tokenizer_free(tok);
    free(lg), free(out), free(want);
}

/* ---- NCCL: two ranks, one thread and one GPU each ---- */

typedef struct {
    int rank;
    uint8_t id[SHARDLM_NCCL_ID_BYTES];
    int rc;
    char err[512];
    float host[1000], back[1000];
} nccl_rank;

static void *nccl_rank_main(void *arg)
{
    nccl_rank *r = arg;
    shardlm_comm *c = NULL;
    shardlm_cuda_ctx *cx = NULL;
    float *dev = NULL;
    r->rc = shardlm_nccl_comm_create(r->rank, 2, r->id, r->rank, 20000, &c);
    for (int i = 0; i < 1000; i++) r->host[i] = (float)(i * (r->rank + 1));
    if (!r->rc) r->rc = shardlm_comm_allreduce_f32(c, r->host, 1000, 10000); /* host memory, staged */
    if (!r->rc) r->rc = shardlm_cuda_ctx_new(r->rank, &cx);
    if (!r->rc) r->rc = shardlm_cuda_alloc(cx, (void **)&dev, sizeof r->host, "test");
    if (!r->rc) r->rc = shardlm_cuda_upload(cx, dev, r->host, sizeof r->host);
    if (!r->rc) r->rc = shardlm_cuda_sync(cx, "upload");
    if (!r->rc) r->rc = shardlm_comm_allreduce_f32(c, dev, 1000, 10000); /* device memory, in place */
    if (!r->rc) r->rc = shardlm_cuda_download(cx, r->back, dev, sizeof r->back);
    if (!r->rc) r->rc = shardlm_comm_barrier(c, 10000);
    if (r->rc) snprintf(r->err, sizeof r->err, "%s", shardlm_err_get());
    shardlm_cuda_release(cx, dev);
    shardlm_cuda_ctx_free(cx);
    shardlm_comm_destroy(c);
    return NULL;
}

Test(nccl, allreduce_two_gpus_host_and_device_buffers)
{
    need_devices(2);
    cr_assert(shardlm_nccl_built(), "CUDA is built in but NCCL is not");
    nccl_rank r[2] = {{.rank = 0}, {.rank = 1}};
    cr_assert_eq(shardlm_nccl_unique_id(r[0].id), 0, "%s", shardlm_err_get());
    memcpy(r[1].id, r[0].id, sizeof r[0].id);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, nccl_rank_main, &r[i]);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(r[k].rc, 0, "rank %d: %s", k, r[k].err);
        for (int i = 0; i < 1000; i++) {
            cr_assert_eq(r[k].host[i], (float)(3 * i), "rank %d host[%d]", k, i);
            cr_assert_eq(r[k].back[i], (float)(6 * i), "rank %d device[%d]", k, i);
        }
    }
}

/* ---- error paths: these run everywhere ---- */

Test(cuda_errors, device_flag_is_named_when_unusable)
{
    int rc = shardlm_cuda_pick_device(0, "cuda:x");
    cr_assert_lt(rc, 0);
    cr_assert(strstr(shardlm_err_get(), "--device") != NULL, "%s", shardlm_err_get());
    if (!shardlm_cuda_built()) {
        cr_assert_lt(shardlm_cuda_pick_device(0, "cuda"), 0);
        cr_assert(strstr(shardlm_err_get(), "built without CUDA") != NULL, "%s", shardlm_err_get());
        return;
    }
    int n = 0;
    if (shardlm_cuda_device_count(&n)) {
        cr_assert_eq(shardlm_cuda_pick_device(0, "cuda"), SHARDLM_EINPUT);
        const char *e = shardlm_err_get();
        cr_assert(strstr(e, "--device cuda") && strstr(e, "cudaGetDeviceCount: "), "%s", e);
        return;
    }
    cr_assert_eq(shardlm_cuda_pick_device(3, "cuda"), 3 % n);
    cr_assert_eq(shardlm_cuda_pick_device(0, "cuda:0"), 0);
    cr_assert_eq(shardlm_cuda_pick_device(0, "cuda:4096"), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "--device cuda:4096") && strstr(shardlm_err_get(), "out of range"), "%s",
              shardlm_err_get());
}

/* A k-quant model is refused before anything is allocated, naming a tensor
 * and its type, and stays usable on the CPU. */
Test(cuda_errors, unsupported_weight_type_is_named)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/q4k.gguf", tu_tmpdir());
    shardlm_synth_opts so;
    shardlm_synth_defaults(&so);
    so.dim = 256, so.layers = 1, so.ffn = 512, so.type = SHARDLM_DT_Q4_K;
    cr_assert_eq(shardlm_synth_write(&so, path), 0, "%s", shardlm_err_get());
    shardlm_model *m = load_model(path, -1);
    int rc = shardlm_model_to_device(m, 0);
    cr_assert_eq(rc, SHARDLM_EINPUT, "rc %d: %s", rc, shardlm_err_get());
    const char *e = shardlm_err_get();
    cr_assert(strstr(e, "tensor '") && (strstr(e, "q4_k") || strstr(e, "q6_k")) && strstr(e, "--device cpu"), "%s", e);
    cr_assert_eq(shardlm_model_device(m), -1);
    int32_t t[2] = {1, 2};
    float *lg = malloc(2 * shardlm_model_hparams(m)->vocab * 4);
    run_steps(m, t, 1, lg); /* still runs on the CPU */
    free(lg);
    shardlm_model_free(m);
}

/* Without a usable device the upload fails with a message, and the model
 * keeps running on the CPU. */
Test(cuda_errors, to_device_without_device_fails_cleanly)
{
    int n = 0;
    if (shardlm_cuda_built() && shardlm_cuda_device_count(&n) == 0)
        SKIP("SKIP: a CUDA device is present (%d); the device tests cover this path", n);
    shardlm_model *m = load_model(tu_shared("models/stories260K.gguf"), -1);
    cr_assert_neq(shardlm_model_to_device(m, 0), 0);
    if (!shardlm_cuda_built())
        cr_assert(strstr(shardlm_err_get(), "built without CUDA") != NULL, "%s", shardlm_err_get());
    int32_t t[2] = {1, 403};
    float *lg = malloc(2 * shardlm_model_hparams(m)->vocab * 4);
    run_steps(m, t, 1, lg);
    free(lg);
    shardlm_model_free(m);
}

Test(nccl, stub_or_library)
{
    if (!shardlm_nccl_built()) {
        shardlm_comm *c;
        uint8_t id[SHARDLM_NCCL_ID_BYTES] = {0};
        cr_assert_eq(shardlm_nccl_comm_create(0, 1, id, 0, 1000, &c), SHARDLM_EINPUT);
        cr_assert(strstr(shardlm_err_get(), "--comm nccl") && strstr(shardlm_err_get(), "built without"), "%s",
                  shardlm_err_get());
        cr_assert_str_empty(shardlm_nccl_version());
        return;
    }
    cr_assert(strchr(shardlm_nccl_version(), '.') != NULL, "version '%s'", shardlm_nccl_version());
}
