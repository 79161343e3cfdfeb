/* rope.c - rotary position embedding from precomputed tables, in both
 * layouts (interleaved pairs as llama, halves as NeoX/Qwen), and the bias
 * add of the architectures that have biases. The
 * reference (ref.c) calls powf, cosf and sinf for every element of every
 * head; here the inverse frequencies are computed once per model and the
 * cos/sin of a position once per token, shared by all its q and k heads.
 * The expressions are the reference's, and the rotation is written as
 * x * cos + swap(x) * (-+sin), which rounds exactly as the reference's
 * x0 * c - x1 * s and x0 * s + x1 * c (no fused multiply-add), so the
 * result is bit for bit the same (tests/test_attention.c). */
#include <math.h>
#include <string.h>

#include "shardlm_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

void shardlm_rope_freqs(float *freq, int rope_dim, float base)
{
    for (int i = 0; i < rope_dim; i += 2) freq[i / 2] = 1.0f / powf(base, (float)i / (float)rope_dim);
}

/* Multiplying by 1 and dividing by 1 are exact, so without factors and
 * scale these are shardlm_rope_freqs's values bit for bit. */
void shardlm_rope_freqs_ext(float *freq, int rope_dim, float base, float scale, const float *factors)
{
    shardlm_rope_freqs(freq, rope_dim, base);
    for (int j = 0; j < rope_dim / 2; j++) {
        if (factors) freq[j] /= factors[j];
        freq[j] *= scale;
    }
}

void shardlm_rope_table(float *tab, const float *freq, int rope_dim, int pos)
{
    for (int i = 0; i < rope_dim; i += 2) {
        float a = (float)pos * freq[i / 2];
        float c = cosf(a), s = sinf(a);
        tab[i] = tab[i + 1] = c;
        tab[rope_dim + i] = -s;
        tab[rope_dim + i + 1] = s;
    }
}

static void rope_head_scalar(float *q, int rope_dim, const float *tab, int i)
{
    const float *c = tab, *s = tab + rope_dim;
    for (; i < rope_dim; i += 2) {
        float x0 = q[i], x1 = q[i + 1];
        q[i] = x0 * c[i] + x1 * s[i];
        q[i + 1] = x1 * c[i + 1] + x0 * s[i + 1];
    }
}

#if defined(__x86_64__)
/* Lanes (x0, x1) -> x * (c, c) + (x1, x0) * (-s, s): products rounded
 * separately, then one add, as in the scalar code. */
__attribute__((target("avx2"))) static int rope_head_avx2(float *q, int rope_dim, const float *tab)
{
    int i = 0;
    for (; i + 8 <= rope_dim; i += 8) {
        __m256 x = _mm256_loadu_ps(q + i), sw = _mm256_permute_ps(x, 0xB1);
        __m256 a = _mm256_mul_ps(x, _mm256_loadu_ps(tab + i));
        __m256 b = _mm256_mul_ps(sw, _mm256_loadu_ps(tab + rope_dim + i));
        _mm256_storeu_ps(q + i, _mm256_add_ps(a, b));
    }
    return i;
}
#endif

void shardlm_rope(float *v, int n_heads, int head_dim, int rope_dim, const float *tab)
{
    int simd = 0;
#if defined(__x86_64__)
    simd = !strncmp(shardlm_kernels_isa(), "avx", 3);
#endif
    for (int h = 0; h < n_heads; h++) {
        float *q = v + (size_t)h * head_dim;
        int i = 0;
#if defined(__x86_64__)
        if (simd) i = rope_head_avx2(q, rope_dim, tab);
#endif
        rope_head_scalar(q, rope_dim, tab, i);
    }
}

/* NeoX: pair j is (v[j], v[j + rope_dim/2]), turned by pair j's angle, whose
 * cos is tab[2j] and sin tab[rope_dim + 2j + 1]; the products and sums are
 * those of shardlm_ref_rope_neox, so the result is the same bit for bit. */
void shardlm_rope_neox(float *v, int n_heads, int head_dim, int rope_dim, const float *tab)
{
    int half = rope_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *q = v + (size_t)h * head_dim;
        for (int j = 0; j < half; j++) {
            float c = tab[2 * j], s = tab[rope_dim + 2 * j + 1];
            float x0 = q[j], x1 = q[j + half];
            q[j] = x0 * c - x1 * s;
            q[j + half] = x0 * s + x1 * c;
        }
    }
}

void shardlm_add_bias(float *y, const float *b, size_t rows, size_t width)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < width; j++) y[r * width + j] += b[j];
}
