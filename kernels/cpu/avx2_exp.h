/* avx2_exp.h - the AVX2 polynomial expf shared by ops_avx2.c (softmax,
 * SiLU) and attention_avx2.c (online softmax). Maximum relative error about
 * 2e-7 (a few ulp) over [-87, 88] (measured in tests/test_kernels.c);
 * outside that range it clamps, which changes results only below 1e-37 in
 * absolute terms. Include only from files built for x86-64. */
#ifndef SHARDLM_AVX2_EXP_H
#define SHARDLM_AVX2_EXP_H

#include <immintrin.h>

/* e^x = 2^k * e^r with k = round(x / ln 2), |r| <= ln2 / 2; e^r by a
 * degree-7 polynomial (Taylor-like coefficients tuned for this interval,
 * from the Cephes expf design). ln 2 is split in two so r is exact. */
static inline __attribute__((always_inline, target("avx2,fma"))) __m256 shardlm_exp256(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* k is in [-126, 127], so 2^k is a normal float built from its exponent. */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

#endif
