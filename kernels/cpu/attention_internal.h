/* attention_internal.h - the per-ISA pieces of the paged attention kernel
 * (attention.c drives them, attention_avx2.c provides the AVX2 ones). Each
 * works on a tile of at most SHARDLM_ATTN_TILE positions of one KV head, so
 * the tile's K and V rows stay in L1 while every query head of the group
 * uses them. */
#ifndef SHARDLM_ATTENTION_INTERNAL_H
#define SHARDLM_ATTENTION_INTERNAL_H

#include "shardlm_kernels.h"

#define SHARDLM_ATTN_TILE 16

typedef struct {
    /* rows[u] (u < nt) as f32 in dst[u * hd ...]; type F16 or Q8_0. */
    void (*rows_to_f32)(shardlm_dtype t, const uint8_t *const *rows, int nt, int hd, float *dst);
    /* s[j * TILE + u] = scale * dot(q[j * hd ...], k[u][...]) for j < g, u < nt. */
    void (*scores)(const float *q, int g, const float *const *k, int nt, int hd, float scale, float *s);
    /* s[u] = exp(s[u] - m) for u < n; returns their sum. */
    float (*exp_sum)(float *s, int n, float m);
    /* acc[j * hd ...] = acc * c[j] + sum_u p[j * TILE + u] * v[u] for j < g. */
    void (*accumulate)(float *acc, const float *c, const float *p, int g, const float *const *v, int nt, int hd);
} shardlm_attn_ops;

extern const shardlm_attn_ops shardlm_attn_scalar;
#if defined(__x86_64__)
extern const shardlm_attn_ops shardlm_attn_avx2;
#endif

#endif
