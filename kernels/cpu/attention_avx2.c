/* attention_avx2.c - the AVX2 pieces of the paged attention kernel
 * (attention.c): F16 rows widened with F16C, Q8_0 rows widened and scaled,
 * dot products and weighted row sums with FMA, and the polynomial exp of
 * avx2_exp.h. Vectors run over head_dim; a head_dim that is not a multiple
 * of 8 finishes each row with scalar code. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#include "attention_internal.h"
#include "avx2_exp.h"
#include "cpu_internal.h"

#define ATT_TARGET __attribute__((target("avx2,fma,f16c")))

static inline ATT_TARGET float att_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static ATT_TARGET void avx2_row_f16(const uint8_t *r, int hd, float *x)
{
    int i = 0;
    for (; i + 8 <= hd; i += 8) _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 2 * i))));
    for (; i < hd; i++) x[i] = shardlm_f16_to_f32(shardlm_rd16(r + 2 * i));
}

/* One F16C conversion per 32-value chunk; 8-value groups never straddle a chunk. */
static ATT_TARGET void avx2_row_q8(const uint8_t *r, int hd, float *x)
{
    const int8_t *q = (const int8_t *)(r + 2 * ((hd + SHARDLM_QK - 1) / SHARDLM_QK));
    int i = 0;
    for (int c = 0; i + 8 <= hd; c++) {
        __m256 d = _mm256_set1_ps(_cvtsh_ss(shardlm_rd16(r + 2 * c)));
        for (int e = 0; e < SHARDLM_QK && i + 8 <= hd; e += 8, i += 8) {
            __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + i)));
            _mm256_storeu_ps(x + i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(v)));
        }
    }
    for (; i < hd; i++) x[i] = shardlm_f16_to_f32(shardlm_rd16(r + 2 * (i / SHARDLM_QK))) * q[i];
}

static ATT_TARGET void avx2_rows_to_f32(shardlm_dtype t, const uint8_t *const *rows, int nt, int hd, float *dst)
{
    for (int u = 0; u < nt; u++) {
        if (t == SHARDLM_DT_F16) avx2_row_f16(rows[u], hd, dst + (size_t)u * hd);
        else avx2_row_q8(rows[u], hd, dst + (size_t)u * hd);
    }
}

static ATT_TARGET float avx2_dot(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    if (i + 8 <= n) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        i += 8;
    }
    float s = att_hsum(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static ATT_TARGET void avx2_scores(const float *q, int g, const float *const *k, int nt, int hd, float scale, float *s)
{
    for (int j = 0; j < g; j++)
        for (int u = 0; u < nt; u++) s[j * SHARDLM_ATTN_TILE + u] = avx2_dot(q + (size_t)j * hd, k[u], hd) * scale;
}

static ATT_TARGET float avx2_exp_sum(float *s, int n, float m)
{
    __m256 mv = _mm256_set1_ps(m), sum = _mm256_setzero_ps();
    int u = 0;
    for (; u + 8 <= n; u += 8) {
        __m256 e = shardlm_exp256(_mm256_sub_ps(_mm256_loadu_ps(s + u), mv));
        _mm256_storeu_ps(s + u, e);
        sum = _mm256_add_ps(sum, e);
    }
    float total = att_hsum(sum);
    if (u < n) { /* the tail through the same polynomial, so no lane depends on where a tile ends */
        float t[8] = {0};
        for (int i = u; i < n; i++) t[i - u] = s[i] - m;
        _mm256_storeu_ps(t, shardlm_exp256(_mm256_loadu_ps(t)));
        for (int i = u; i < n; i++) total += s[i] = t[i - u];
    }
    return total;
}

static ATT_TARGET void avx2_accumulate(float *acc, const float *c, const float *p, int g, const float *const *v, int nt,
                                       int hd)
{
    for (int j = 0; j < g; j++) {
        float *a = acc + (size_t)j * hd;
        const float *pj = p + j * SHARDLM_ATTN_TILE;
        __m256 cv = _mm256_set1_ps(c[j]);
        int i = 0;
        for (; i + 8 <= hd; i += 8) {
            __m256 x = _mm256_mul_ps(_mm256_loadu_ps(a + i), cv);
            for (int u = 0; u < nt; u++) x = _mm256_fmadd_ps(_mm256_set1_ps(pj[u]), _mm256_loadu_ps(v[u] + i), x);
            _mm256_storeu_ps(a + i, x);
        }
        for (; i < hd; i++) {
            float x = a[i] * c[j];
            for (int u = 0; u < nt; u++) x += pj[u] * v[u][i];
            a[i] = x;
        }
    }
}

const shardlm_attn_ops shardlm_attn_avx2 = {avx2_rows_to_f32, avx2_scores, avx2_exp_sum, avx2_accumulate};
#endif
