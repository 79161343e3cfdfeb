/* ops_avx2.c - AVX2 RMSNorm, softmax and SiLU-multiply, with the polynomial
 * expf of avx2_exp.h. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#include "avx2_exp.h"
#include "cpu_internal.h"

#define OPS_TARGET __attribute__((target("avx2,fma")))
#define OPS_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

OPS_INLINE float ops_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define exp256 shardlm_exp256

OPS_TARGET void shardlm_avx2_rmsnorm(float *out, const float *x, const float *weight, size_t n, float eps)
{
    /* f32 squares summed in double, as shardlm_ref_rmsnorm (and ggml) do; the
     * order differs, but a double sum rounds to the same f32 mean */
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i);
        __m256 sq = _mm256_mul_ps(a, a);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
    }
    __m256d s = _mm256_add_pd(s0, s1);
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    double sum = _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
    for (; i < n; i++) sum += (double)(x[i] * x[i]);
    float scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    __m256 sv = _mm256_set1_ps(scale);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(weight + i), _mm256_mul_ps(sv, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) out[i] = weight[i] * (scale * x[i]);
}

OPS_TARGET void shardlm_avx2_softmax(float *x, size_t n)
{
    if (n == 0) return;
    float mx = x[0];
    size_t i = 0;
    __m256 mv = _mm256_set1_ps(x[0]);
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    mx = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    for (; i < n; i++)
        if (x[i] > mx) mx = x[i];
    __m256 sum = _mm256_setzero_ps(), mxv = _mm256_set1_ps(mx);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), mxv));
        _mm256_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    float s = ops_hsum(sum);
    for (; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    __m256 inv = _mm256_set1_ps(1.0f / s);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] /= s;
}

OPS_TARGET void shardlm_avx2_silu_mul(float *a, const float *b, size_t n)
{
    size_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(a + i);
        __m256 e = exp256(_mm256_xor_ps(v, neg));
        __m256 r = _mm256_div_ps(v, _mm256_add_ps(one, e));
        _mm256_storeu_ps(a + i, _mm256_mul_ps(r, _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}
#endif
