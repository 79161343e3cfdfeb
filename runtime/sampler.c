/* sampler.c - picks the next token on rank 0: greedy at temperature 0,
 * otherwise softmax at the temperature with optional nucleus (top-p)
 * truncation, driven by a seeded xorshift generator so runs reproduce. */
#include <math.h>
#include <stdlib.h>

#include "shardlm_runtime.h"

void shardlm_sampler_seed(shardlm_sampler *s, uint64_t seed)
{
    s->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

static float sampler_uniform(shardlm_sampler *s)
{
    s->rng ^= s->rng >> 12;
    s->rng ^= s->rng << 25;
    s->rng ^= s->rng >> 27;
    return (float)((s->rng * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

static int32_t sampler_argmax(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

typedef struct {
    float p;
    int32_t id;
} prob_id;

static int prob_desc(const void *a, const void *b)
{
    float pa = ((const prob_id *)a)->p, pb = ((const prob_id *)b)->p;
    return pa < pb ? 1 : pa > pb ? -1 : 0;
}

/* Samples from the smallest set of tokens whose probability reaches top_p. */
static int32_t sampler_top_p(shardlm_sampler *s, const float *probs, int n, float coin)
{
    prob_id *v = malloc((size_t)n * sizeof *v);
    if (!v) return sampler_argmax(probs, n);
    int m = 0;
    float cutoff = (1.0f - s->top_p) / (float)(n > 1 ? n - 1 : 1);
    for (int i = 0; i < n; i++)
        if (probs[i] >= cutoff) v[m++] = (prob_id){probs[i], i};
    qsort(v, (size_t)m, sizeof *v, prob_desc);
    float cum = 0.0f;
    int last = m - 1;
    for (int i = 0; i < m; i++) {
        cum += v[i].p;
        if (cum > s->top_p) {
            last = i;
            break;
        }
    }
    float r = coin * cum, acc = 0.0f;
    int32_t pick = v[last].id;
    for (int i = 0; i <= last; i++) {
        acc += v[i].p;
        if (r < acc) {
            pick = v[i].id;
            break;
        }
    }
    free(v);
    return pick;
}

int32_t shardlm_sampler_sample(shardlm_sampler *s, float *logits, int n)
{
    if (s->temperature <= 0.0f) return sampler_argmax(logits, n);
    float mx = logits[0], sum = 0.0f;
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    for (int i = 0; i < n; i++) {
        logits[i] = expf((logits[i] - mx) / s->temperature);
        sum += logits[i];
    }
    for (int i = 0; i < n; i++) logits[i] /= sum;
    float coin = sampler_uniform(s);
    if (s->top_p > 0.0f && s->top_p < 1.0f) return sampler_top_p(s, logits, n, coin);
    float acc = 0.0f;
    for (int i = 0; i < n; i++) {
        acc += logits[i];
        if (coin < acc) return i;
    }
    return n - 1;
}
