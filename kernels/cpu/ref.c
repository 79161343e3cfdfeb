/* ref.c - plain scalar reference kernels. They define what every optimised
 * kernel must compute; keep them simple enough to check by eye. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_kernels.h"

static float ref_dot_f32(const float *a, const float *b, size_t n)
{
    float s = 0.0f;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void shardlm_ref_matvec(shardlm_dtype t, const void *w, size_t rows, size_t cols, const float *x, float *y)
{
    shardlm_ref_matmul(t, w, rows, cols, x, 1, y);
}

/* Dequantises one row at a time into a stack-or-heap scratch row, then dots
 * it with every input vector, so a batch reads each weight row once. */
void shardlm_ref_matmul(shardlm_dtype t, const void *w, size_t rows, size_t cols, const float *x, size_t n,
                        float *y)
{
    size_t rb = shardlm_dtype_row_bytes(t, cols);
    if (t == SHARDLM_DT_F32) {
        for (size_t r = 0; r < rows; r++)
            for (size_t i = 0; i < n; i++) y[i * rows + r] = ref_dot_f32((const float *)w + r * cols, x + i * cols, cols);
        return;
    }
    float stack_row[4096];
    float *row = cols <= 4096 ? stack_row : malloc(cols * sizeof(float));
    if (!row) abort(); /* an allocation of one row failing leaves nothing sane to do */
    for (size_t r = 0; r < rows; r++) {
        shardlm_dequant_row(t, (const unsigned char *)w + r * rb, row, cols);
        for (size_t i = 0; i < n; i++) y[i * rows + r] = ref_dot_f32(row, x + i * cols, cols);
    }
    if (row != stack_row) free(row);
}

/* The mean square is summed in double over f32 squares and rounded to f32
 * once, as ggml does: a float sum made the scale differ from llama.cpp's by
 * an ulp now and then, enough to flip the rounding of 8-bit activations that
 * sit on a tie (the normalised rows of a quantised token embedding do). */
void shardlm_ref_rmsnorm(float *out, const float *x, const float *weight, size_t n, float eps)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    float mean = (float)(sum / (double)n);
    float ss = 1.0f / sqrtf(mean + eps);
    for (size_t i = 0; i < n; i++) out[i] = weight[i] * (ss * x[i]);
}

void shardlm_ref_rope(float *v, int n_heads, int head_dim, int rope_dim, int pos, float base)
{
    for (int h = 0; h < n_heads; h++) {
        float *q = v + (size_t)h * head_dim;
        for (int i = 0; i < rope_dim; i += 2) {
            float freq = 1.0f / powf(base, (float)i / (float)rope_dim);
            float a = (float)pos * freq;
            float c = cosf(a), s = sinf(a);
            float x0 = q[i], x1 = q[i + 1];
            q[i] = x0 * c - x1 * s;
            q[i + 1] = x0 * s + x1 * c;
        }
    }
}

void shardlm_ref_rope_neox(float *v, int n_heads, int head_dim, int rope_dim, int pos, float base)
{
    int half = rope_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        float *q = v + (size_t)h * head_dim;
        for (int j = 0; j < half; j++) {
            float freq = 1.0f / powf(base, (float)(2 * j) / (float)rope_dim);
            float a = (float)pos * freq;
            float c = cosf(a), s = sinf(a);
            float x0 = q[j], x1 = q[j + half];
            q[j] = x0 * c - x1 * s;
            q[j + half] = x0 * s + x1 * c;
        }
    }
}

void shardlm_ref_softmax(float *x, size_t n)
{
    if (n == 0) return;
    float mx = x[0];
    for (size_t i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    for (size_t i = 0; i < n; i++) x[i] /= sum;
}

void shardlm_ref_silu_mul(float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) a[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
}

/* Per token and query head: every score, a softmax, then the weighted sum
 * of the V rows, each row read through the block table and widened to f32. */
void shardlm_ref_attention(const shardlm_kv_view *kv, const shardlm_attn_batch *b)
{
    int hd = kv->head_dim, bs = kv->block_size;
    size_t rb = shardlm_kv_row_bytes(kv->type, hd), qw = (size_t)b->n_q_heads * hd;
    float *row = malloc((size_t)hd * sizeof(float));
    if (!row) abort();
    for (int i = 0; i < b->n; i++) {
        const int32_t *table = b->tables[b->seq[i]];
        int n_pos = b->pos[i] + 1;
        float *sc = malloc((size_t)n_pos * sizeof(float));
        if (!sc) abort();
        for (int h = 0; h < b->n_q_heads; h++) {
            int kh = (b->q_head0 + h) / b->group - b->kv_head0;
            const float *q = b->q + i * qw + (size_t)h * hd;
            float *o = b->out + i * qw + (size_t)h * hd;
            for (int pass = 0; pass < 2; pass++) {
                if (pass == 1) memset(o, 0, (size_t)hd * sizeof(float));
                for (int t = 0; t < n_pos; t++) {
                    size_t r = ((size_t)table[t / bs] * bs + (size_t)(t % bs)) * kv->n_kv_heads + (size_t)kh;
                    shardlm_kv_load(kv->type, (pass ? kv->v : kv->k) + r * rb, hd, row);
                    if (pass == 0) sc[t] = ref_dot_f32(q, row, (size_t)hd) / sqrtf((float)hd);
                    else
                        for (int e = 0; e < hd; e++) o[e] += sc[t] * row[e];
                }
                if (pass == 0) shardlm_ref_softmax(sc, (size_t)n_pos);
            }
        }
        free(sc);
    }
    free(row);
}
