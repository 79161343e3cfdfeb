/* spec.c - speculative decoding: the flags' values, prompt-lookup (n-gram)
 * proposals over a sequence's own tokens, and the scheduler's side (drafts
 * for a step, verification of their rows). */
#include "spec.h"

#include <pthread.h>

#include <string.h>

#include "scheduler_internal.h"
#include "shardlm_common.h"

int shardlm_spec_mode_parse(const char *name)
{
    if (!name) return -1;
    if (!strcmp(name, "off")) return SHARDLM_SPEC_OFF;
    if (!strcmp(name, "ngram")) return SHARDLM_SPEC_NGRAM;
    if (!strcmp(name, "draft")) return SHARDLM_SPEC_DRAFT;
    return -1;
}

const char *shardlm_spec_mode_name(int mode)
{
    return mode == SHARDLM_SPEC_NGRAM ? "ngram" : mode == SHARDLM_SPEC_DRAFT ? "draft" : "off";
}

int shardlm_spec_opts_check(const shardlm_spec_opts *o)
{
    if (o->mode == SHARDLM_SPEC_OFF) return SHARDLM_OK;
    if (o->mode != SHARDLM_SPEC_NGRAM && o->mode != SHARDLM_SPEC_DRAFT) {
        shardlm_err_set("--spec must be off, ngram or draft, got mode %d", o->mode);
        return SHARDLM_EINPUT;
    }
    if (o->n_tokens < 1 || o->n_tokens > SHARDLM_SPEC_MAX_TOKENS) {
        shardlm_err_set("--spec-tokens must be in 1..%d, got %d", SHARDLM_SPEC_MAX_TOKENS, o->n_tokens);
        return SHARDLM_EINPUT;
    }
    if (o->mode == SHARDLM_SPEC_NGRAM && (o->ngram < 1 || o->ngram > SHARDLM_SPEC_MAX_NGRAM)) {
        shardlm_err_set("--spec-ngram must be in 1..%d, got %d", SHARDLM_SPEC_MAX_NGRAM, o->ngram);
        return SHARDLM_EINPUT;
    }
    if (o->mode == SHARDLM_SPEC_DRAFT && !o->draft) {
        shardlm_err_set("--spec draft needs --draft-model FILE");
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

/* Latest j < n - ng whose ng tokens equal the suffix, scanning down from
 * `from`; -1 when none. */
static int ngram_find(const int32_t *t, int n, int ng, int from)
{
    const int32_t *suf = t + n - ng;
    for (int j = from; j >= 0; j--)
        if (t[j] == suf[0] && !memcmp(t + j, suf, (size_t)ng * sizeof *t)) return j;
    return -1;
}

int shardlm_spec_ngram_propose(const int32_t *toks, int n_toks, int max_ngram, int k, int32_t *out)
{
    if (!toks || n_toks < 2 || k < 1) return 0;
    if (max_ngram > n_toks - 1) max_ngram = n_toks - 1;
    for (int ng = max_ngram; ng >= 1; ng--) {
        int best = -1, best_len = 0, tries = 0;
        /* Most recent first: in a loop the last repetition predicts best.
         * A match right before the suffix leaves fewer than k tokens to
         * copy, so older matches are tried until one leaves k (at most
         * 64, so a common token does not make this quadratic). */
        for (int j = ngram_find(toks, n_toks, ng, n_toks - ng - 1); j >= 0 && tries < 64;
             j = ngram_find(toks, n_toks, ng, j - 1), tries++) {
            int len = n_toks - (j + ng);
            if (len > k) len = k;
            if (len > best_len) best = j, best_len = len;
            if (len == k) break;
        }
        if (best >= 0) {
            memcpy(out, toks + best + ng, (size_t)best_len * sizeof *out);
            return best_len;
        }
    }
    return 0;
}

int shardlm_spec_propose(const shardlm_spec_opts *o, shardlm_spec_seq **ss, const int32_t *toks, int n_toks, int k,
                         int32_t *out)
{
    if (k > SHARDLM_SPEC_MAX_TOKENS) k = SHARDLM_SPEC_MAX_TOKENS;
    if (o->mode == SHARDLM_SPEC_NGRAM) return shardlm_spec_ngram_propose(toks, n_toks, o->ngram, k, out);
    if (o->mode == SHARDLM_SPEC_DRAFT) return shardlm_spec_draft_propose(o->draft, ss, toks, n_toks, k, out);
    return 0;
}

/* ---- the scheduler's side ---- */

/* A step yields at most n_draft + 1 tokens, and the last draft's position
 * must be inside the context. */
int sched_spec_draft(shardlm_sched *s, sched_seq *q, int spare)
{
    const shardlm_spec_opts *o = &s->o.spec;
    if (o->mode == SHARDLM_SPEC_OFF) return 0;
    int k = o->n_tokens < spare ? o->n_tokens : spare;
    if (k > s->n_ctx - 1 - q->n_computed) k = s->n_ctx - 1 - q->n_computed;
    if (q->max_tokens > 0 && k > q->max_tokens - q->n_gen - 1) k = q->max_tokens - q->n_gen - 1;
    if (k < 1) return 0;
    int n = shardlm_spec_propose(o, &q->spec, q->tokens, q->n_tokens, k, q->draft);
    return n > 0 ? n : 0; /* a draft model that fails only costs the speed-up */
}

/* Row i predicts the token after draft i-1. Each row is sampled as if it
 * were the only one; draft i is kept (its KV, computed this step, becomes
 * the sequence's) while the sample equals it, and the first sample that
 * differs is the step's last token. The KV of rejected drafts is returned
 * with the blocks that held only them. */
void sched_spec_verify(shardlm_sched *s, sched_seq *q, float *rows)
{
    int nd = q->n_draft, acc = 0;
    for (int i = 0; i <= nd; i++) {
        int32_t tok;
        if (sched_seq_sample(s, q, rows + (size_t)i * s->vocab, &tok)) break; /* ended; q is freed */
        if (i == nd || tok != q->draft[i]) {
            shardlm_kv_seq_trim(s->kv, &q->kv, q->n_computed + 1);
            break;
        }
        acc++;
        shardlm_kv_seq_commit(s->kv, &q->kv, q->tokens, ++q->n_computed);
    }
    pthread_mutex_lock(&s->mu);
    s->st.spec_drafts++;
    s->st.spec_draft_tokens += (uint64_t)nd;
    s->st.spec_accepted += (uint64_t)acc;
    pthread_mutex_unlock(&s->mu);
}
