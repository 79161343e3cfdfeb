/* sampling.c - rank 0's per-sequence sampler for served requests: parameter
 * checks, a splitmix64 stream per sequence, sparse token counts for the
 * penalties, bias/penalty processing, top-k/top-p/min-p truncation by
 * partial selection (a bounded heap, never a sort of the whole vocabulary
 * unless top_p needs it) and logprobs. See sampling.h for the order. */
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampling.h"
#include "shardlm_common.h"

/* ---- parameters ---- */

shardlm_sampling_params shardlm_sampling_params_default(void)
{
    return (shardlm_sampling_params){
        .temperature = 1.0f,
        .top_p = 1.0f,
        .repetition_penalty = 1.0f,
    };
}

static int check_fail(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int check_fail(char *why, size_t cap, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (why && cap) snprintf(why, cap, "%s", line);
    shardlm_err_set("%s", line);
    return SHARDLM_EINPUT;
}

static int in_range(float v, float lo, float hi)
{
    return isfinite(v) && v >= lo && v <= hi;
}

static int check_bias(const shardlm_sampling_params *p, int n_vocab, char *why, size_t cap)
{
    if (p->n_logit_bias < 0 || p->n_logit_bias > SHARDLM_LOGIT_BIAS_MAX || (p->n_logit_bias && !p->logit_bias))
        return check_fail(why, cap, "logit_bias must have at most %d entries, got %d", SHARDLM_LOGIT_BIAS_MAX,
                          p->n_logit_bias);
    for (int i = 0; i < p->n_logit_bias; i++) {
        const shardlm_logit_bias *b = &p->logit_bias[i];
        if (b->token < 0 || b->token >= n_vocab)
            return check_fail(why, cap, "logit_bias token %d is outside the vocabulary of %d tokens", (int)b->token,
                              n_vocab);
        if (!isfinite(b->bias))
            return check_fail(why, cap, "logit_bias of token %d must be a finite number", (int)b->token);
        /* A bounded count keeps this quadratic scan cheap. */
        for (int j = 0; j < i; j++)
            if (p->logit_bias[j].token == b->token)
                return check_fail(why, cap, "logit_bias names token %d twice", (int)b->token);
    }
    return SHARDLM_OK;
}

int shardlm_sampling_params_check(const shardlm_sampling_params *p, int n_vocab, char *why, size_t cap)
{
    if (!in_range(p->temperature, 0.0f, 2.0f))
        return check_fail(why, cap, "temperature must be in [0, 2], got %g", (double)p->temperature);
    if (p->top_k < 0) return check_fail(why, cap, "top_k must be >= 0, got %d", (int)p->top_k);
    if (!in_range(p->top_p, 0.0f, 1.0f) || p->top_p == 0.0f)
        return check_fail(why, cap, "top_p must be in (0, 1], got %g", (double)p->top_p);
    if (!in_range(p->min_p, 0.0f, 1.0f))
        return check_fail(why, cap, "min_p must be in [0, 1], got %g", (double)p->min_p);
    if (!isfinite(p->repetition_penalty) || p->repetition_penalty <= 0.0f)
        return check_fail(why, cap, "repetition_penalty must be a finite number > 0, got %g",
                          (double)p->repetition_penalty);
    if (!in_range(p->presence_penalty, -2.0f, 2.0f))
        return check_fail(why, cap, "presence_penalty must be in [-2, 2], got %g", (double)p->presence_penalty);
    if (!in_range(p->frequency_penalty, -2.0f, 2.0f))
        return check_fail(why, cap, "frequency_penalty must be in [-2, 2], got %g", (double)p->frequency_penalty);
    if (p->top_logprobs < 0 || p->top_logprobs > SHARDLM_TOP_LOGPROBS_MAX)
        return check_fail(why, cap, "top_logprobs must be in [0, %d], got %d", SHARDLM_TOP_LOGPROBS_MAX,
                          p->top_logprobs);
    if (p->top_logprobs > 0 && !p->logprobs)
        return check_fail(why, cap, "top_logprobs needs logprobs to be true");
    return check_bias(p, n_vocab, why, cap);
}

/* ---- per-sequence state ---- */

/* Open-addressing table keyed by token id (-1: empty slot). Sparse on
 * purpose: 256 sequences x 32000-token dense counts would be 32 MiB, while a
 * sequence touches at most prompt + output distinct tokens. */
typedef struct {
    int32_t token;
    int32_t count;     /* times generated */
    int32_t in_prompt; /* seen in the prompt */
} tok_entry;

struct shardlm_seq_sampler {
    uint64_t rng;
    tok_entry *tab;
    uint32_t cap, used;
    int track; /* a penalty is on: keep the table */
    int n_generated;
    shardlm_logits_hook hook;
    void *hook_ctx;
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits; one step of the stream. */
static double rng_uniform(uint64_t *x)
{
    return (double)(splitmix64(x) >> 11) * 0x1.0p-53;
}

static uint64_t rng_seed(const shardlm_sampling_params *p, uint32_t choice)
{
    static _Atomic uint64_t counter;
    uint64_t x = p->has_seed ? p->seed : shardlm_now_ns() ^ (atomic_fetch_add(&counter, 1) << 32);
    uint64_t base = splitmix64(&x);
    return base ^ ((uint64_t)choice * 0xd1b54a32d192ed03ull);
}

static uint32_t tab_slot(uint32_t cap, int32_t token)
{
    return ((uint32_t)token * 2654435761u) & (cap - 1);
}

/* Makes room for one more entry (load factor at most 1/2). */
static int tab_reserve(shardlm_seq_sampler *s)
{
    if ((s->used + 1) * 2 <= s->cap) return SHARDLM_OK;
    uint32_t cap = s->cap ? s->cap * 2 : 64;
    tok_entry *t = malloc((size_t)cap * sizeof *t);
    if (!t) {
        shardlm_err_set("out of memory for the sampler's token counts");
        return SHARDLM_ENOMEM;
    }
    for (uint32_t i = 0; i < cap; i++) t[i] = (tok_entry){-1, 0, 0};
    for (uint32_t i = 0; i < s->cap; i++) {
        if (s->tab[i].token < 0) continue;
        uint32_t j = tab_slot(cap, s->tab[i].token);
        while (t[j].token >= 0) j = (j + 1) & (cap - 1);
        t[j] = s->tab[i];
    }
    free(s->tab);
    s->tab = t;
    s->cap = cap;
    return SHARDLM_OK;
}

/* The entry of token, inserted when missing; tab_reserve must have run. */
static tok_entry *tab_get(shardlm_seq_sampler *s, int32_t token)
{
    uint32_t i = tab_slot(s->cap, token);
    while (s->tab[i].token >= 0 && s->tab[i].token != token) i = (i + 1) & (s->cap - 1);
    if (s->tab[i].token < 0) {
        s->tab[i] = (tok_entry){token, 0, 0};
        s->used++;
    }
    return &s->tab[i];
}

int shardlm_seq_sampler_new(const shardlm_sampling_params *p, const int32_t *prompt, int n_prompt, uint32_t choice,
                            shardlm_seq_sampler **out)
{
    *out = NULL;
    shardlm_seq_sampler *s = calloc(1, sizeof *s);
    if (!s) return SHARDLM_ENOMEM;
    s->rng = rng_seed(p, choice);
    s->track = p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    /* The prompt matters only to repetition_penalty. */
    for (int i = 0; p->repetition_penalty != 1.0f && i < n_prompt; i++) {
        if (tab_reserve(s)) {
            shardlm_seq_sampler_free(s);
            return SHARDLM_ENOMEM;
        }
        tab_get(s, prompt[i])->in_prompt = 1;
    }
    *out = s;
    return SHARDLM_OK;
}

void shardlm_seq_sampler_free(shardlm_seq_sampler *s)
{
    if (!s) return;
    free(s->tab);
    free(s);
}

int shardlm_seq_sampler_accept(shardlm_seq_sampler *s, int32_t token)
{
    if (s->track) {
        if (tab_reserve(s)) return SHARDLM_ENOMEM;
        tab_get(s, token)->count++;
    }
    s->n_generated++;
    return SHARDLM_OK;
}

void shardlm_seq_sampler_set_hook(shardlm_seq_sampler *s, shardlm_logits_hook fn, void *ctx)
{
    s->hook = fn;
    s->hook_ctx = ctx;
}

int shardlm_seq_sampler_n_generated(const shardlm_seq_sampler *s)
{
    return s->n_generated;
}

/* ---- processing: bias, then penalties ---- */

static void apply_bias(const shardlm_sampling_params *p, float *logits)
{
    for (int i = 0; i < p->n_logit_bias; i++) {
        float b = p->logit_bias[i].bias;
        logits[p->logit_bias[i].token] += b > 100.0f ? 100.0f : b < -100.0f ? -100.0f : b;
    }
}

static float penalize(const shardlm_sampling_params *p, const tok_entry *e, float l)
{
    float rp = p->repetition_penalty;
    if (rp != 1.0f && (e->in_prompt || e->count > 0)) l = l > 0.0f ? l / rp : l * rp;
    if (e->count > 0) l -= p->presence_penalty + p->frequency_penalty * (float)e->count;
    return l;
}

void shardlm_seq_process_logits(const shardlm_seq_sampler *s, const shardlm_sampling_params *p, float *logits,
                                int n_vocab)
{
    apply_bias(p, logits);
    /* Only the tokens in the table can be penalised: walk it, not the vocab. */
    for (uint32_t i = 0; i < s->cap; i++) {
        const tok_entry *e = &s->tab[i];
        if (e->token >= 0 && e->token < n_vocab) logits[e->token] = penalize(p, e, logits[e->token]);
    }
}

/* ---- candidate selection ---- */

typedef struct {
    float logit;
    int32_t id;
} cand;

/* The total order of candidates: higher logit first, then lower id. */
static int cand_better(cand a, cand b)
{
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

/* Min-heap on that order: h[0] is the worst candidate kept. */
static void heap_down(cand *h, int m, int i)
{
    for (;;) {
        int l = 2 * i + 1, w = i;
        if (l < m && cand_better(h[w], h[l])) w = l;
        if (l + 1 < m && cand_better(h[w], h[l + 1])) w = l + 1;
        if (w == i) return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void heap_up(cand *h, int i)
{
    while (i > 0 && cand_better(h[(i - 1) / 2], h[i])) {
        cand t = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
}

/* The best min(k, n) of x into out, sorted best first: O(n log k). */
static int select_top(const float *x, int n, int k, cand *out)
{
    int m = 0;
    if (k > n) k = n;
    for (int i = 0; i < n; i++) {
        cand c = {x[i], i};
        if (m < k) {
            out[m] = c;
            heap_up(out, m++);
        } else if (cand_better(c, out[0])) {
            out[0] = c;
            heap_down(out, m, 0);
        }
    }
    /* Heap sort: moving the worst to the end leaves best-first order. */
    for (int end = m - 1; end > 0; end--) {
        cand t = out[0];
        out[0] = out[end];
        out[end] = t;
        heap_down(out, end, 0);
    }
    return m;
}

/* The running maximum stays in a register: reloading x[best] each step
 * made a load-compare chain 3x slower at vocab 32000. */
static int32_t argmax(const float *x, int n)
{
    int32_t best = 0;
    float v = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > v) v = x[i], best = i;
    return best;
}

/* Unnormalised probability at temperature t relative to the maximum m. */
static float weight(float l, float m, float t)
{
    return expf((l - m) / t);
}

/* No sort needed: softmax over the tokens whose weight reaches w_min
 * (min_p alone, or nothing), drawn in id order. */
static int32_t draw_threshold(const float *x, int n, float t, float w_min, double u)
{
    float m = x[argmax(x, n)];
    double z = 0.0;
    for (int i = 0; i < n; i++) {
        float w = weight(x[i], m, t);
        if (w >= w_min) z += w;
    }
    double r = u * z, acc = 0.0;
    int32_t last = -1;
    for (int i = 0; i < n; i++) {
        float w = weight(x[i], m, t);
        if (w < w_min || w <= 0.0f) continue; /* w == 0: a masked (-inf) token */
        acc += w;
        last = i;
        if (r < acc) return i;
    }
    return last >= 0 ? last : argmax(x, n); /* rounding: the last kept token */
}

/* Length of the shortest prefix of c whose weight reaches top_p * z, or 0
 * when c does not reach it. */
static int nucleus_len(const cand *c, int nc, double z, float top_p, float t)
{
    if (top_p >= 1.0f) return nc;
    double cum = 0.0, goal = (double)top_p * z;
    for (int i = 0; i < nc; i++) {
        cum += weight(c[i].logit, c[0].logit, t);
        if (cum >= goal) return i + 1;
    }
    return 0;
}

static int32_t draw_sorted(const cand *c, int keep, float t, double u)
{
    double z = 0.0;
    for (int i = 0; i < keep; i++) z += weight(c[i].logit, c[0].logit, t);
    double r = u * z, acc = 0.0;
    for (int i = 0; i < keep; i++) {
        acc += weight(c[i].logit, c[0].logit, t);
        if (r < acc) return c[i].id;
    }
    return c[keep - 1].id;
}

/* Of a sorted prefix, the part that min_p keeps (never empty). */
static int min_p_cut(const cand *c, int keep, float min_p, float t)
{
    while (keep > 1 && weight(c[keep - 1].logit, c[0].logit, t) < min_p) keep--;
    return keep;
}

/* top_k (with top_p and min_p inside it): a sorted head of k tokens. */
static int32_t draw_top_k(const shardlm_sampling_params *p, const float *x, int n, double u)
{
    float t = p->temperature;
    int k = p->top_k < n ? p->top_k : n;
    cand stack[64], *c = k <= 64 ? stack : malloc((size_t)k * sizeof *c);
    if (!c) {
        shardlm_err_set("out of memory selecting %d sampling candidates", k);
        return -1;
    }
    int nc = select_top(x, n, k, c);
    while (nc > 1 && c[nc - 1].logit == -INFINITY) nc--; /* masked tokens are never candidates */
    double z = 0.0;
    for (int i = 0; i < nc; i++) z += weight(c[i].logit, c[0].logit, t);
    int keep = nucleus_len(c, nc, z, p->top_p, t);
    int32_t id = draw_sorted(c, min_p_cut(c, keep ? keep : nc, p->min_p, t), t, u);
    if (c != stack) free(c);
    return id;
}

typedef struct {
    float logit;
    int32_t id;
    float w; /* weight at the temperature, relative to the maximum */
} wcand;

static int wcand_better(const wcand *a, const wcand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int wcand_desc(const void *a, const void *b)
{
    return wcand_better(a, b) ? -1 : wcand_better(b, a) ? 1 : 0;
}

static void wcand_swap(wcand *c, int i, int j)
{
    wcand t = c[i];
    c[i] = c[j];
    c[j] = t;
}

/* Median of c[lo], c[mid], c[hi - 1] moved to hi - 1. */
static void wcand_pivot(wcand *c, int lo, int hi)
{
    int a = lo, b = lo + (hi - lo) / 2, z = hi - 1;
    if (wcand_better(&c[b], &c[a])) wcand_swap(c, a, b);
    if (wcand_better(&c[z], &c[b])) wcand_swap(c, b, z);
    if (wcand_better(&c[b], &c[a])) wcand_swap(c, a, b);
    wcand_swap(c, b, z);
}

/* Reorders c so that its first r entries are the nucleus (the best tokens
 * whose weight first reaches goal) and returns r: a quickselect on mass,
 * O(n) expected, where a flat distribution would need most of a sort. */
static int nucleus_select(wcand *c, int n, double goal)
{
    int lo = 0, hi = n;
    double acc = 0.0;
    for (int round = 0; hi - lo > 32 && round < 64; round++) {
        wcand_pivot(c, lo, hi);
        int a = lo;
        double mass = 0.0;
        for (int i = lo; i < hi - 1; i++)
            if (wcand_better(&c[i], &c[hi - 1])) {
                mass += c[i].w;
                wcand_swap(c, i, a++);
            }
        wcand_swap(c, a, hi - 1);
        if (acc + mass >= goal) {
            hi = a;
            continue;
        }
        acc += mass + c[a].w;
        if (acc >= goal) return a + 1;
        lo = a + 1;
    }
    qsort(c + lo, (size_t)(hi - lo), sizeof *c, wcand_desc); /* a short rest */
    for (int i = lo; i < hi; i++)
        if ((acc += c[i].w) >= goal) return i + 1;
    return hi > 0 ? hi : 1;
}

/* top_p without top_k over the whole vocabulary. */
static int32_t draw_nucleus_all(const shardlm_sampling_params *p, const float *x, int n, double u)
{
    float t = p->temperature, m = x[argmax(x, n)];
    wcand *c = malloc((size_t)n * sizeof *c);
    if (!c) {
        shardlm_err_set("out of memory for %d sampling candidates", n);
        return -1;
    }
    double z = 0.0;
    for (int i = 0; i < n; i++) {
        c[i] = (wcand){x[i], i, weight(x[i], m, t)};
        z += c[i].w;
    }
    int keep = nucleus_select(c, n, (double)p->top_p * z);
    /* min_p is a threshold on the weight: order does not matter. */
    double kept = 0.0;
    for (int i = 0; i < keep; i++) kept += c[i].w >= p->min_p ? c[i].w : 0.0f;
    double r = u * kept, acc = 0.0;
    int32_t id = c[0].id;
    for (int i = 0; i < keep; i++) {
        if (c[i].w < p->min_p || c[i].w <= 0.0f) continue;
        id = c[i].id;
        if (r < (acc += c[i].w)) break;
    }
    free(c);
    return id;
}

/* top_p without top_k: a sorted head of 64 usually holds the nucleus
 * (peaked distributions); otherwise select it by mass. */
static int32_t draw_nucleus(const shardlm_sampling_params *p, const float *x, int n, double u)
{
    float t = p->temperature, m = x[argmax(x, n)];
    double z = 0.0;
    for (int i = 0; i < n; i++) z += weight(x[i], m, t);
    cand c[64];
    int nc = select_top(x, n, 64, c);
    while (nc > 1 && c[nc - 1].logit == -INFINITY) nc--;
    int keep = nucleus_len(c, nc, z, p->top_p, t);
    if (!keep && nc < n) return draw_nucleus_all(p, x, n, u);
    return draw_sorted(c, min_p_cut(c, keep ? keep : nc, p->min_p, t), t, u);
}

/* ---- logprobs ---- */

static void fill_logprobs(const float *x, int n, int32_t tok, int top, shardlm_logprobs *out)
{
    float m = x[argmax(x, n)];
    double z = 0.0;
    for (int i = 0; i < n; i++) z += exp((double)x[i] - m);
    double lse = m + log(z);
    out->token = tok;
    out->logprob = (float)(x[tok] - lse);
    cand c[SHARDLM_TOP_LOGPROBS_MAX];
    out->n_top = top > 0 ? select_top(x, n, top, c) : 0;
    while (out->n_top > 0 && c[out->n_top - 1].logit == -INFINITY) out->n_top--; /* masked: impossible */
    for (int i = 0; i < out->n_top; i++) out->top[i] = (shardlm_token_logprob){c[i].id, (float)(c[i].logit - lse)};
}

/* ---- the sampler ---- */

void shardlm_logits_ban(float *logits, int n_vocab, const int32_t *ids, int n, int unless_alone)
{
    if (unless_alone) {
        int banned = 0, possible = 0;
        for (int i = 0; i < n; i++) {
            int dup = 0;
            for (int j = 0; j < i; j++) dup |= ids[j] == ids[i];
            banned += !dup && ids[i] >= 0 && ids[i] < n_vocab && logits[ids[i]] > -INFINITY;
        }
        for (int32_t t = 0; t < n_vocab && possible <= banned; t++) possible += logits[t] > -INFINITY;
        if (possible <= banned) return;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < n_vocab) logits[ids[i]] = -INFINITY;
}

int32_t shardlm_seq_sample(shardlm_seq_sampler *s, const shardlm_sampling_params *p, float *logits, int n_vocab,
                           shardlm_logprobs *out)
{
    double u = rng_uniform(&s->rng); /* exactly one step per token */
    if (s->track && tab_reserve(s)) return -1;
    shardlm_seq_process_logits(s, p, logits, n_vocab);
    if (s->hook && s->hook(s->hook_ctx, logits, n_vocab)) return -1;
    int32_t id;
    if (p->temperature <= 0.0f || p->top_k == 1)
        id = argmax(logits, n_vocab);
    else if ((p->top_k == 0 || p->top_k >= n_vocab) && p->top_p >= 1.0f)
        id = draw_threshold(logits, n_vocab, p->temperature, p->min_p, u);
    else if (p->top_k > 0)
        id = draw_top_k(p, logits, n_vocab, u);
    else
        id = draw_nucleus(p, logits, n_vocab, u);
    if (id < 0) return -1;
    if (p->logprobs && out) fill_logprobs(logits, n_vocab, id, p->top_logprobs, out);
    shardlm_seq_sampler_accept(s, id); /* room was reserved above */
    return id;
}
