/* test_arch.c - the architectures (llama with Llama 3 scaling, key_length
 * and tied output; qwen2; qwen3): the RoPE kernels and frequency factors
 * against plain formulas, shardlm's logits against a plain reference forward
 * pass written here from llama.cpp's graphs, logits across world sizes 1, 2
 * and 4 through the binary, and the messages for what is not supported. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_kernels.h"
#include "shardlm_model.h"
#include "test_util.h"

/* ---- RoPE: kernels against plain formulas ---- */

/* pair j of a head: (i0, i1) and its angle, plainly, in double */
static void plain_rope(float *v, int n_heads, int head_dim, int rope_dim, int pos, double base, double scale,
                       const float *factors, int neox)
{
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < rope_dim / 2; j++) {
            double theta = pos * pow(base, -2.0 * j / rope_dim) * scale / (factors ? factors[j] : 1.0);
            int i0 = neox ? j : 2 * j, i1 = neox ? j + rope_dim / 2 : 2 * j + 1;
            float *q = v + h * head_dim;
            double x0 = q[i0], x1 = q[i1];
            q[i0] = (float)(x0 * cos(theta) - x1 * sin(theta));
            q[i1] = (float)(x0 * sin(theta) + x1 * cos(theta));
        }
}

static float *rand_vec(size_t n)
{
    float *v = malloc(n * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++) v[i] = tu_frand();
    return v;
}

/* The table path (shardlm_rope_freqs_ext + shardlm_rope_table + the kernel)
 * against the plain formula at angles up to ~200 rad (tolerance 2e-5: the
 * f32 angle), and the NeoX kernel bit for bit against its f32 reference. */
static void check_rope(int neox, int rope_dim, float scale, const float *factors)
{
    enum { H = 3, HD = 32 };
    const int pos[] = {0, 1, 5, 37, 200};
    float freq[HD / 2], tab[2 * HD];
    shardlm_rope_freqs_ext(freq, rope_dim, 10000.0f, scale, factors);
    for (size_t p = 0; p < sizeof pos / sizeof pos[0]; p++) {
        float *v = rand_vec(H * HD), *want = malloc(sizeof(float) * H * HD), *ref = malloc(sizeof(float) * H * HD);
        memcpy(want, v, sizeof(float) * H * HD);
        memcpy(ref, v, sizeof(float) * H * HD);
        plain_rope(want, H, HD, rope_dim, pos[p], 10000.0, scale, factors, neox);
        shardlm_rope_table(tab, freq, rope_dim, pos[p]);
        (neox ? shardlm_rope_neox : shardlm_rope)(v, H, HD, rope_dim, tab);
        for (int i = 0; i < H * HD; i++)
            cr_assert(fabsf(v[i] - want[i]) <= 2e-5f, "%s rope_dim %d scale %g pos %d [%d]: %g, plain %g",
                      neox ? "neox" : "pairs", rope_dim, (double)scale, pos[p], i, (double)v[i], (double)want[i]);
        if (neox && scale == 1.0f && !factors) {
            shardlm_ref_rope_neox(ref, H, HD, rope_dim, pos[p], 10000.0f);
            cr_assert(memcmp(ref, v, sizeof(float) * H * HD) == 0, "neox kernel differs from its reference at %d",
                      pos[p]);
        }
        free(v), free(want), free(ref);
    }
}

Test(arch_rope, neox_halves_against_the_plain_formula)
{
    check_rope(1, 32, 1.0f, NULL);
    check_rope(1, 24, 1.0f, NULL); /* partial: the last 8 of each head pass through */
}

Test(arch_rope, neox_is_not_the_pair_layout)
{
    float freq[8], tab[32], a[16], b[16];
    for (int i = 0; i < 16; i++) a[i] = b[i] = tu_frand();
    shardlm_rope_freqs(freq, 16, 10000.0f);
    shardlm_rope_table(tab, freq, 16, 3);
    shardlm_rope(a, 1, 16, 16, tab);
    shardlm_rope_neox(b, 1, 16, 16, tab);
    float d = 0;
    for (int i = 0; i < 16; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    cr_assert_gt(d, 0.1f, "the two layouts must rotate different pairs");
}

Test(arch_rope, llama3_factors_and_linear_scale_against_the_plain_formula)
{
    float ff[16];
    for (int j = 0; j < 16; j++) ff[j] = 1.0f + (float)j * 0.5f;
    check_rope(0, 32, 1.0f, ff);
    check_rope(1, 32, 1.0f, ff);
    check_rope(0, 32, 0.25f, NULL); /* linear: rope.scaling.factor 4 */
    check_rope(1, 32, 0.25f, ff);
}

/* Llama 3.1's converter: base 500000, head size 128, factor 8, low 1,
 * high 4, original context 8192. Worked by hand from its formula. */
Test(arch_rope, llama3_factors_follow_the_converter)
{
    float f[64];
    shardlm_rope_llama3_factors(f, 128, 500000.0f, 8.0f, 1.0f, 4.0f, 8192.0f);
    for (int j = 0; j < 64; j++) {
        double freq = pow(500000.0, -2.0 * j / 128), wl = 2 * M_PI / freq, want;
        if (wl < 8192.0 / 4) want = 1;
        else if (wl > 8192.0) want = 8;
        else {
            double smooth = (8192.0 / wl - 1) / (4 - 1);
            want = 1 / ((1 - smooth) / 8 + smooth);
        }
        cr_assert(fabs(f[j] - want) <= 1e-5 * want, "factor %d: %g, want %g", j, (double)f[j], want);
        if (j) cr_assert_geq(f[j], f[j - 1], "factors grow with the wavelength");
    }
    cr_assert_eq(f[0], 1.0f);
    cr_assert_eq(f[63], 8.0f);
    int blended = 0;
    for (int j = 0; j < 64; j++) blended += f[j] > 1.0f && f[j] < 8.0f;
    cr_assert_gt(blended, 0, "some frequencies fall in the smooth band");
}

Test(arch_kernels, add_bias_adds_each_row)
{
    float y[6] = {1, 2, 3, 4, 5, 6}, b[3] = {10, 20, 30};
    shardlm_add_bias(y, b, 2, 3);
    const float want[6] = {11, 22, 33, 14, 25, 36};
    for (int i = 0; i < 6; i++) cr_assert_eq(y[i], want[i]);
}

/* ---- synth files ---- */

/* shardlm synth -o DIR/name with the shape below and extra flags. */
static const char *synth(const char *name, const char *const *extra)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tu_tmpdir(), name);
    char *argv[40] = {(char *)tu_bin(), "synth", "-o", path, "--dim", "64", "--layers", "2", "--heads", "4",
                      "--kv-heads", "2", "--ffn", "96", "--vocab", "300"};
    int a = 16;
    for (; extra && *extra; extra++) argv[a++] = (char *)*extra;
    argv[a] = NULL;
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "synth %s: %s", name, r.err);
    tu_result_free(&r);
    return path;
}

/* The architectures' variants every test below runs. */
typedef struct {
    const char *name;
    const char *flags[12];
} variant;

static const variant variants[] = {
    {"llama.gguf", {NULL}},
    /* Llama 3: frequency factors; key_length 32 != 64 / 4; tied output; every llama bias */
    {"llama3.gguf", {"--rope-scaling", "llama3", "--rope-base", "500000", "--rope-factor", "32", "--head-dim", "32",
                     "--tie-embeddings", "--biases", "all", NULL}},
    {"llama-linear.gguf", {"--rope-scaling", "linear", "--rope-factor", "4", NULL}},
    {"qwen2.gguf", {"--arch", "qwen2", NULL}},
    {"qwen2-all.gguf", {"--arch", "qwen2", "--biases", "all", "--tie-embeddings", NULL}},
    {"qwen3.gguf", {"--arch", "qwen3", "--head-dim", "32", NULL}},
};
#define N_VARIANTS (sizeof variants / sizeof variants[0])

/* ---- a plain reference forward pass (llama.cpp's llama/qwen2/qwen3 graphs) ---- */

typedef struct {
    shardlm_gguf *g;
    shardlm_hparams hp;
    int neox;
} ref_model;

/* A whole tensor as f32, or NULL when the file lacks it. */
static float *tensor(const ref_model *r, const char *name)
{
    const shardlm_gguf_tensor *t = shardlm_gguf_find_tensor(r->g, name);
    if (!t) return NULL;
    size_t cols = t->ne[0], rows = t->ne[1], rb = shardlm_dtype_row_bytes(t->type, cols);
    float *v = malloc(cols * rows * sizeof(float));
    for (size_t i = 0; i < rows; i++) shardlm_dequant_row((shardlm_dtype)t->type, t->data + i * rb, v + i * cols, cols);
    return v;
}

static float *ltensor(const ref_model *r, int l, const char *what)
{
    char n[96];
    snprintf(n, sizeof n, "blk.%d.%s", l, what);
    return tensor(r, n);
}

/* y = W x (+ b): W rows x cols */
static void linear(const float *w, const float *b, const float *x, int rows, int cols, float *y)
{
    for (int i = 0; i < rows; i++) {
        double s = b ? b[i] : 0;
        for (int k = 0; k < cols; k++) s += (double)w[(size_t)i * cols + k] * x[k];
        y[i] = (float)s;
    }
}

static void rmsnorm(float *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double k = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) x[i] = (float)(x[i] * k * w[i]);
}

/* Causal attention of T tokens: q [T][H*hd], k/v [T][KV*hd] -> out. */
static void attend(const float *q, const float *k, const float *v, int T, int H, int KV, int hd, float *out)
{
    double *sc = malloc(sizeof(double) * (size_t)T);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int kh = h / (H / KV);
            double mx = -1e300, sum = 0;
            for (int u = 0; u <= t; u++) {
                double d = 0;
                for (int e = 0; e < hd; e++) d += (double)q[(t * H + h) * hd + e] * k[(u * KV + kh) * hd + e];
                sc[u] = d / sqrt((double)hd);
                if (sc[u] > mx) mx = sc[u];
            }
            for (int u = 0; u <= t; u++) sum += sc[u] = exp(sc[u] - mx);
            for (int e = 0; e < hd; e++) {
                double o = 0;
                for (int u = 0; u <= t; u++) o += sc[u] / sum * v[(u * KV + kh) * hd + e];
                out[(t * H + h) * hd + e] = (float)o;
            }
        }
    free(sc);
}

static void ref_layer(const ref_model *r, int l, float *x, int T, const float *rope_ff)
{
    const shardlm_hparams *hp = &r->hp;
    int D = hp->dim, H = hp->n_heads, KV = hp->n_kv_heads, hd = hp->head_dim, F = hp->ffn;
    float *an = ltensor(r, l, "attn_norm.weight"), *wq = ltensor(r, l, "attn_q.weight"),
          *wk = ltensor(r, l, "attn_k.weight"), *wv = ltensor(r, l, "attn_v.weight"),
          *wo = ltensor(r, l, "attn_output.weight"), *bq = ltensor(r, l, "attn_q.bias"),
          *bk = ltensor(r, l, "attn_k.bias"), *bv = ltensor(r, l, "attn_v.bias"), *bo = ltensor(r, l, "attn_output.bias"),
          *qn = ltensor(r, l, "attn_q_norm.weight"), *kn = ltensor(r, l, "attn_k_norm.weight"),
          *fn = ltensor(r, l, "ffn_norm.weight"), *wg = ltensor(r, l, "ffn_gate.weight"),
          *wu = ltensor(r, l, "ffn_up.weight"), *wd = ltensor(r, l, "ffn_down.weight"),
          *bg = ltensor(r, l, "ffn_gate.bias"), *bu = ltensor(r, l, "ffn_up.bias"), *bd = ltensor(r, l, "ffn_down.bias");
    float *xb = malloc(sizeof(float) * D), *q = malloc(sizeof(float) * T * H * hd),
          *k = malloc(sizeof(float) * T * KV * hd), *v = malloc(sizeof(float) * T * KV * hd),
          *att = malloc(sizeof(float) * T * H * hd), *o = malloc(sizeof(float) * D), *g = malloc(sizeof(float) * F),
          *u = malloc(sizeof(float) * F);
    for (int t = 0; t < T; t++) {
        memcpy(xb, x + t * D, sizeof(float) * D);
        rmsnorm(xb, an, D, hp->eps);
        linear(wq, bq, xb, H * hd, D, q + t * H * hd);
        linear(wk, bk, xb, KV * hd, D, k + t * KV * hd);
        linear(wv, bv, xb, KV * hd, D, v + t * KV * hd);
        for (int h = 0; qn && h < H; h++) rmsnorm(q + (t * H + h) * hd, qn, hd, hp->eps);
        for (int h = 0; kn && h < KV; h++) rmsnorm(k + (t * KV + h) * hd, kn, hd, hp->eps);
        plain_rope(q + t * H * hd, H, hd, hp->rope_dim, t, hp->rope_base, hp->rope_freq_scale, rope_ff, r->neox);
        plain_rope(k + t * KV * hd, KV, hd, hp->rope_dim, t, hp->rope_base, hp->rope_freq_scale, rope_ff, r->neox);
    }
    attend(q, k, v, T, H, KV, hd, att);
    for (int t = 0; t < T; t++) {
        linear(wo, bo, att + t * H * hd, D, H * hd, o);
        for (int i = 0; i < D; i++) x[t * D + i] += o[i];
        memcpy(xb, x + t * D, sizeof(float) * D);
        rmsnorm(xb, fn, D, hp->eps);
        linear(wg, bg, xb, F, D, g);
        linear(wu, bu, xb, F, D, u);
        for (int i = 0; i < F; i++) g[i] = (float)(g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
        linear(wd, bd, g, D, F, o);
        for (int i = 0; i < D; i++) x[t * D + i] += o[i];
    }
    float *all[] = {an, wq, wk, wv, wo, bq, bk, bv, bo, qn, kn, fn, wg, wu, wd, bg, bu, bd, xb, q, k, v, att, o, g, u};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

/* Logits of every position of toks[0..T), into out [T][vocab]. */
static void ref_forward(const char *path, const int32_t *toks, int T, float *out)
{
    ref_model r = {0};
    cr_assert_eq(shardlm_gguf_open(path, &r.g), 0, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_hparams_read(r.g, &r.hp), 0, "%s", shardlm_err_get());
    shardlm_gguf_str a;
    cr_assert_eq(shardlm_gguf_get_str(r.g, "general.architecture", &a), 0);
    r.neox = !(a.len == 5 && !memcmp(a.ptr, "llama", 5)); /* llama.cpp: LLAMA_ROPE_TYPE_NEOX for qwen2/qwen3 */
    int D = r.hp.dim, V = (int)shardlm_gguf_find_tensor(r.g, "token_embd.weight")->ne[1];
    float *emb = tensor(&r, "token_embd.weight"), *outw = tensor(&r, "output.weight"), *outb = tensor(&r, "output.bias");
    float *on = tensor(&r, "output_norm.weight"), *ff = tensor(&r, "rope_freqs.weight");
    float *x = malloc(sizeof(float) * T * D);
    for (int t = 0; t < T; t++) memcpy(x + t * D, emb + (size_t)toks[t] * D, sizeof(float) * D);
    for (int l = 0; l < r.hp.n_layers; l++) ref_layer(&r, l, x, T, ff);
    for (int t = 0; t < T; t++) {
        rmsnorm(x + t * D, on, D, r.hp.eps);
        linear(outw ? outw : emb, outb, x + t * D, V, D, out + (size_t)t * V);
    }
    free(emb), free(outw), free(outb), free(on), free(ff), free(x);
    shardlm_gguf_close(r.g);
}

/* shardlm's logits at world size 1, one batch of T tokens, every one wanted. */
static void shardlm_forward(const char *path, const int32_t *toks, int T, float *out)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(path, &g), 0, "%s", shardlm_err_get());
    shardlm_model *m;
    cr_assert_eq(shardlm_model_load(g, 1, 0, NULL, &m), 0, "%s", shardlm_err_get());
    shardlm_gguf_close(g);
    shardlm_state *s;
    cr_assert_eq(shardlm_state_new(m, 64, 0, 16, T, &s), 0, "%s", shardlm_err_get());
    shardlm_comm *comm;
    cr_assert_eq(shardlm_comm_local_create(&comm), 0);
    int32_t pos[64], seq[64] = {0}, table[4] = {0, 1, 2, 3}, tlen = 4;
    uint8_t want[64];
    for (int i = 0; i < T; i++) pos[i] = i, want[i] = 1;
    const int32_t *tables[1] = {table};
    shardlm_batch b = {T, toks, pos, seq, want, 1, tables, &tlen};
    cr_assert_eq(shardlm_model_forward_batch(m, s, comm, &b, out, 10000), 0, "%s", shardlm_err_get());
    shardlm_state_free(s);
    shardlm_comm_destroy(comm);
    shardlm_model_free(m);
}

/* Max |shardlm - reference| <= 2e-6 x max |logit| over 20 positions (F32
 * weights: rounding and summation order are the difference; seen: at most
 * 4e-7). */
Test(arch_model, every_architecture_matches_the_plain_reference)
{
    enum { T = 20 };
    int32_t toks[T];
    for (int i = 0; i < T; i++) toks[i] = (int32_t)(1 + (i * 37) % 299);
    for (size_t v = 0; v < N_VARIANTS; v++) {
        const char *path = synth(variants[v].name, variants[v].flags);
        float *a = malloc(sizeof(float) * T * 300), *b = malloc(sizeof(float) * T * 300);
        ref_forward(path, toks, T, a);
        shardlm_forward(path, toks, T, b);
        float mx = 0, d = 0;
        for (int i = 0; i < T * 300; i++) mx = fmaxf(mx, fabsf(a[i])), d = fmaxf(d, fabsf(a[i] - b[i]));
        cr_assert_gt(mx, 0.1f, "%s: logits too small to tell anything", variants[v].name);
        cr_assert_leq(d, 2e-6f * mx, "%s: max |shardlm - reference| %g, max |logit| %g", variants[v].name, (double)d,
                      (double)mx);
        free(a), free(b);
    }
}

/* A token's logits do not depend on the rest of its batch, for every
 * architecture: 20 tokens in one batch equal them one at a time, bit for bit. */
Test(arch_model, batches_do_not_change_a_token)
{
    enum { T = 20 };
    int32_t toks[T], pos[T], seq[T] = {0}, table[4] = {0, 1, 2, 3}, tlen = 4;
    uint8_t want[T];
    for (int i = 0; i < T; i++) toks[i] = (int32_t)(1 + (i * 53) % 299), pos[i] = i, want[i] = 1;
    const int32_t *tables[1] = {table};
    shardlm_comm *comm;
    cr_assert_eq(shardlm_comm_local_create(&comm), 0);
    for (size_t v = 0; v < N_VARIANTS; v++) {
        shardlm_gguf *g;
        cr_assert_eq(shardlm_gguf_open(synth(variants[v].name, variants[v].flags), &g), 0, "%s", shardlm_err_get());
        shardlm_model *m;
        cr_assert_eq(shardlm_model_load(g, 1, 0, NULL, &m), 0, "%s", shardlm_err_get());
        shardlm_gguf_close(g);
        float *a = malloc(sizeof(float) * T * 300), *b = malloc(sizeof(float) * T * 300);
        shardlm_state *s1, *s2;
        cr_assert_eq(shardlm_state_new(m, 64, 0, 16, T, &s1), 0);
        cr_assert_eq(shardlm_state_new(m, 64, 0, 16, T, &s2), 0);
        shardlm_batch all = {T, toks, pos, seq, want, 1, tables, &tlen};
        cr_assert_eq(shardlm_model_forward_batch(m, s1, comm, &all, a, 10000), 0, "%s", shardlm_err_get());
        for (int i = 0; i < T; i++) {
            shardlm_batch one = {1, toks + i, pos + i, seq, want, 1, tables, &tlen};
            cr_assert_eq(shardlm_model_forward_batch(m, s2, comm, &one, b + i * 300, 10000), 0);
        }
        cr_assert(memcmp(a, b, sizeof(float) * T * 300) == 0, "%s: batched and one-by-one logits differ",
                  variants[v].name);
        shardlm_state_free(s1), shardlm_state_free(s2), shardlm_model_free(m);
        free(a), free(b);
    }
    shardlm_comm_destroy(comm);
}

/* What the subtlest features change, so the test above can fail: Llama 3's
 * factors (over 20 positions only the slowest frequencies turn, and those
 * are the ones scaled) and qwen2's biases move the logits by at least 50
 * times its tolerance. */
Test(arch_model, the_features_change_the_logits)
{
    enum { T = 20 };
    int32_t toks[T];
    for (int i = 0; i < T; i++) toks[i] = (int32_t)(1 + (i * 37) % 299);
    const char *const plain[] = {"--head-dim", "32", "--tie-embeddings", "--biases", "all", "--rope-base", "500000", NULL};
    const char *const scaled[] = {"--head-dim", "32", "--tie-embeddings", "--biases", "all", "--rope-base", "500000",
                                  "--rope-scaling", "llama3", "--rope-factor", "32", NULL};
    float *a = malloc(sizeof(float) * T * 300), *b = malloc(sizeof(float) * T * 300);
    shardlm_forward(synth("f-plain.gguf", plain), toks, T, a);
    shardlm_forward(synth("f-scaled.gguf", scaled), toks, T, b);
    float mx = 0, d = 0;
    for (int i = 0; i < T * 300; i++) mx = fmaxf(mx, fabsf(a[i])), d = fmaxf(d, fabsf(a[i] - b[i]));
    cr_assert_gt(d, 1e-4f * mx, "Llama 3 factors change the logits: %g of %g", (double)d, (double)mx);
    const char *const q2[] = {"--arch", "qwen2", NULL}, *const q2nb[] = {"--arch", "qwen2", "--biases", "none", NULL};
    shardlm_forward(synth("f-q2.gguf", q2), toks, T, a);
    shardlm_forward(synth("f-q2nb.gguf", q2nb), toks, T, b);
    d = 0;
    for (int i = 0; i < T * 300; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    cr_assert_gt(d, 1e-2f * mx, "qwen2's biases change the logits: %g", (double)d);
    free(a), free(b);
}

/* ---- world sizes 1, 2 and 4 through the binary ---- */

static float *logits_at(const char *model, const char *ws, size_t *n)
{
    char out[600];
    snprintf(out, sizeof out, "%s/lg-%s.f32", tu_tmpdir(), ws);
    char *argv[] = {(char *)tu_bin(), "generate", "-m", (char *)model, "--temp", "0", "-n", "12", "--world-size",
                    (char *)ws, "--logits-out", out, NULL};
    tu_result r = tu_run(argv, NULL, 120);
    cr_assert_eq(r.exit_code, 0, "%s at world size %s: %s", model, ws, r.err);
    tu_result_free(&r);
    size_t bytes;
    float *v = (float *)tu_read_file(out, &bytes);
    cr_assert_not_null(v);
    *n = bytes / sizeof(float);
    return v;
}

/* Logits at world sizes 2 and 4 equal world size 1's within 1e-5 x
 * max|logit| (only the all-reduce's summation order differs): the column-
 * parallel biases split with their heads, the row-parallel ones (llama's
 * attn_output / ffn_down biases, +-0.5 each) added once, not once per rank. */
Test(arch_world, logits_agree_across_world_sizes_1_2_4)
{
    for (size_t v = 0; v < N_VARIANTS; v++) {
        const char *path = synth(variants[v].name, variants[v].flags);
        char model[512];
        snprintf(model, sizeof model, "%s", path);
        size_t n1, n;
        float *ref = logits_at(model, "1", &n1), mx = 0;
        cr_assert_geq(n1, 300, "%s: no logits", variants[v].name);
        for (size_t i = 0; i < n1; i++) mx = fmaxf(mx, fabsf(ref[i]));
        const char *ws[] = {"2", "4"};
        for (int k = 0; k < 2; k++) {
            float *x = logits_at(model, ws[k], &n), d = 0;
            cr_assert_eq(n, n1, "%s: world size %s wrote %zu floats, world size 1 %zu", variants[v].name, ws[k], n, n1);
            for (size_t i = 0; i < n; i++) d = fmaxf(d, fabsf(x[i] - ref[i]));
            cr_assert_leq(d, 1e-5f * mx, "%s world size %s: max |diff| %g, max |logit| %g", variants[v].name, ws[k],
                          (double)d, (double)mx);
            free(x);
        }
        free(ref);
    }
}

/* ---- what is refused, and how ---- */

static int zeros(void *ctx, uint64_t index, void *dst, uint64_t nbytes)
{
    (void)ctx, (void)index;
    memset(dst, 0, nbytes);
    return 0;
}

/* A GGUF of another architecture: info describes it, generate names it. */
Test(arch_errors, unsupported_architecture_is_named_with_the_supported_list)
{
    char path[512];
    snprintf(path, sizeof path, "%s/gemma2.gguf", tu_tmpdir());
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(32);
    shardlm_gguf_writer_str(w, "general.architecture", "gemma2");
    shardlm_gguf_writer_u32(w, "gemma2.embedding_length", 64);
    shardlm_gguf_writer_u32(w, "gemma2.block_count", 1);
    uint64_t ne[2] = {64, 4};
    shardlm_gguf_writer_tensor(w, "token_embd.weight", SHARDLM_DT_F32, 2, ne);
    cr_assert_eq(shardlm_gguf_writer_write(w, path, zeros, NULL), 0, "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    char *gen[] = {(char *)tu_bin(), "generate", "-m", path, "-n", "1", NULL};
    tu_expect_exit(gen, 2, "architecture 'gemma2' is not supported (supported: llama, qwen2, qwen3)");
    char *info[] = {(char *)tu_bin(), "info", path, NULL};
    tu_result r = tu_run(info, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "architecture          gemma2\n"), "%s", r.out);
    cr_assert(strstr(r.out, "shardlm runs it       no: ") && strstr(r.out, "'gemma2' is not supported"), "%s", r.out);
    cr_assert(strstr(r.out, "token_embd.weight"), "the tensor table is listed: %s", r.out);
    tu_result_free(&r);
}

/* The first `count` occurrences of the k bytes `from` in the file's
 * metadata become `to`. */
static void patch(const char *path, const char *from, const char *to, size_t k, int count)
{
    size_t len;
    char *b = tu_read_file(path, &len);
    cr_assert_not_null(b);
    size_t head = len < 65536 ? len : 65536; /* the metadata, not the weights */
    int done = 0;
    for (size_t i = 0; i + k <= head && done < count; i++)
        if (!memcmp(b + i, from, k)) memcpy(b + i, to, k), done++;
    cr_assert_gt(done, 0, "nothing to patch");
    cr_assert_eq(tu_write_file(path, b, len), 0);
    free(b);
}

Test(arch_errors, tensors_and_keys_an_architecture_does_not_take)
{
    /* output.bias is qwen2's; a qwen3 file with one is refused, naming it */
    const char *const q2[] = {"--arch", "qwen2", "--biases", "all", "--vocab", "260", NULL};
    char path[512];
    snprintf(path, sizeof path, "%s", synth("as-qwen3.gguf", q2));
    patch(path, "qwen2", "qwen3", 5, 1000); /* the architecture, its keys and the name */
    char *gen[] = {(char *)tu_bin(), "generate", "-m", path, "-n", "1", NULL};
    tu_expect_exit(gen, 2, "tensor 'output.bias' is not part of a qwen3 model");
    /* qwen2 has no head size of its own */
    const char *const hd[] = {"--head-dim", "32", "--vocab", "260", NULL};
    snprintf(path, sizeof path, "%s", synth("as-qwen2.gguf", hd));
    patch(path, "llama.", "qwen2.", 6, 1000);                             /* the keys */
    patch(path, "\5\0\0\0\0\0\0\0llama", "\5\0\0\0\0\0\0\0qwen2", 13, 1); /* the architecture, not the tokenizer */
    tu_expect_exit(gen, 2, "qwen2.attention.key_length 32 must be embedding_length 64 / head_count 4");
    /* RoPE scaling other than linear (yarn, longrope) */
    const char *const lin[] = {"--rope-scaling", "linear", "--vocab", "260", NULL};
    snprintf(path, sizeof path, "%s", synth("yarn.gguf", lin));
    patch(path, "linear", "yarn42", 6, 1);
    tu_expect_exit(gen, 2, "llama.rope.scaling.type 'yarn42' is not supported (supported: none, linear");
}

Test(arch_errors, kv_heads_that_ranks_cannot_share)
{
    shardlm_hparams hp = {.dim = 768, .n_layers = 1, .n_heads = 12, .n_kv_heads = 3, .head_dim = 64, .ffn = 256,
                          .vocab = 100, .rope_dim = 64};
    shardlm_shard_plan p;
    cr_assert_eq(shardlm_plan_make(&hp, 4, 1, 32, &p), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "3 KV heads cannot be shared by 4 ranks"), "%s", shardlm_err_get());
    cr_assert_eq(shardlm_plan_make(&hp, 3, 1, 32, &p), SHARDLM_OK, "%s", shardlm_err_get()); /* 3 divides */
    cr_assert_eq(p.n_kv_heads, 1);
    cr_assert_eq(p.kv_head0, 1);
    hp.n_kv_heads = 2, hp.n_heads = 8;
    cr_assert_eq(shardlm_plan_make(&hp, 4, 3, 32, &p), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(p.kv_head0, 1, "rank 3's query heads 6, 7 use KV head 1");
    cr_assert_eq(shardlm_plan_make(&hp, 16, 0, 32, &p), SHARDLM_EINPUT, "8 heads over 16 ranks");
}
