/* spec_draft.c - speculative decoding with a draft model: a smaller model
 * with the target's vocabulary, run whole on rank 0 (world size 1, its own
 * KV pool and threads), proposing its greedy continuation. Each sequence
 * keeps the token ids whose draft KV is stored, so after the target's
 * verdict only what changed is computed again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "spec.h"

struct shardlm_spec_draft {
    shardlm_model *m;
    shardlm_state *st;
    shardlm_comm *comm;
    shardlm_pool *pool;
    int vocab, n_ctx, block_size, max_batch;
    int32_t *free_blocks; /* stack of unused KV blocks */
    int n_free;
    float *logits;
};

struct shardlm_spec_seq {
    shardlm_spec_draft *d;
    int32_t *blocks; /* this sequence's draft KV blocks, in position order */
    int n_blocks;
    int32_t *ids;    /* tokens whose draft KV is stored, n_ids of them */
    int n_ids, cap;
};

/* The draft must tokenize exactly as the target: the same number of
 * tokens, the same piece for every id, and the same BOS and EOS. */
static int draft_vocab_check(const shardlm_tokenizer *dt, const shardlm_tokenizer *tt, const char *dpath,
                             const char *tpath)
{
    int32_t n = shardlm_tokenizer_n_vocab(dt), nt = shardlm_tokenizer_n_vocab(tt);
    if (n != nt) {
        shardlm_err_set("--draft-model %s has %d tokens but the model %s has %d: a draft needs the same vocabulary",
                        dpath, n, tpath, nt);
        return SHARDLM_EINPUT;
    }
    for (int32_t i = 0; i < n; i++) {
        size_t la = 0, lb = 0;
        const char *a = shardlm_tokenizer_piece(dt, i, &la), *b = shardlm_tokenizer_piece(tt, i, &lb);
        if (la != lb || (la && memcmp(a, b, la))) {
            shardlm_err_set("--draft-model %s: token %d is '%.*s' there but '%.*s' in the model %s: a draft needs the "
                            "same vocabulary",
                            dpath, (int)i, (int)(la > 40 ? 40 : la), a ? a : "", (int)(lb > 40 ? 40 : lb), b ? b : "",
                            tpath);
            return SHARDLM_EINPUT;
        }
    }
    if (shardlm_tokenizer_bos(dt) != shardlm_tokenizer_bos(tt) || shardlm_tokenizer_eos(dt) != shardlm_tokenizer_eos(tt)) {
        shardlm_err_set("--draft-model %s: its BOS/EOS ids (%d/%d) differ from the model %s's (%d/%d)", dpath,
                        (int)shardlm_tokenizer_bos(dt), (int)shardlm_tokenizer_eos(dt), tpath,
                        (int)shardlm_tokenizer_bos(tt), (int)shardlm_tokenizer_eos(tt));
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

static int draft_load(shardlm_spec_draft *d, const char *path, const shardlm_tokenizer *target_tok,
                      const char *target_path)
{
    shardlm_gguf *g = NULL;
    shardlm_tokenizer *dt = NULL;
    int rc = shardlm_gguf_open(path, &g);
    if (rc) {
        shardlm_err_set("--draft-model %s: %s", path, shardlm_err_get());
        return rc;
    }
    rc = shardlm_tokenizer_from_gguf(g, &dt);
    if (rc) shardlm_err_set("--draft-model %s: %s", path, shardlm_err_get());
    if (!rc) rc = draft_vocab_check(dt, target_tok, path, target_path);
    if (!rc && (rc = shardlm_model_load(g, 1, 0, NULL, &d->m))) shardlm_err_set("--draft-model %s: %s", path, shardlm_err_get());
    if (!rc && shardlm_model_hparams(d->m)->vocab != shardlm_tokenizer_n_vocab(dt)) { /* its argmax must be a token */
        shardlm_err_set("--draft-model %s: the model has %d output rows but its tokenizer %d tokens", path,
                        shardlm_model_hparams(d->m)->vocab, (int)shardlm_tokenizer_n_vocab(dt));
        rc = SHARDLM_EINPUT;
    }
    shardlm_tokenizer_free(dt);
    shardlm_gguf_close(g);
    return rc;
}

int shardlm_spec_draft_open(const char *path, const shardlm_tokenizer *target_tok, const char *target_path,
                            const shardlm_spec_draft_opts *o, shardlm_spec_draft **out)
{
    shardlm_spec_draft *d = calloc(1, sizeof *d);
    if (!d) return SHARDLM_ENOMEM;
    int rc = draft_load(d, path, target_tok, target_path);
    if (!rc) {
        const shardlm_hparams *hp = shardlm_model_hparams(d->m);
        d->vocab = hp->vocab;
        d->n_ctx = o->n_ctx < hp->ctx ? o->n_ctx : hp->ctx;
        d->block_size = o->block_size;
        d->max_batch = o->max_batch;
        int nb = o->n_blocks;
        rc = shardlm_state_new(d->m, d->n_ctx, nb, d->block_size, d->max_batch, &d->st);
        if (!rc) rc = shardlm_comm_local_create(&d->comm);
        if (!rc && o->n_threads > 1) rc = shardlm_pool_new(o->n_threads, 0, &d->pool);
        if (!rc) shardlm_state_set_pool(d->st, d->pool);
        d->free_blocks = malloc((size_t)nb * sizeof *d->free_blocks);
        d->logits = malloc((size_t)d->vocab * sizeof(float));
        if (!rc && (!d->free_blocks || !d->logits)) rc = SHARDLM_ENOMEM;
        for (int i = 0; !rc && i < nb; i++) d->free_blocks[d->n_free++] = nb - 1 - i;
    }
    if (rc) {
        shardlm_spec_draft_free(d);
        return rc;
    }
    *out = d;
    return SHARDLM_OK;
}

void shardlm_spec_draft_free(shardlm_spec_draft *d)
{
    if (!d) return;
    shardlm_state_free(d->st);
    shardlm_comm_destroy(d->comm);
    shardlm_pool_free(d->pool);
    shardlm_model_free(d->m);
    free(d->free_blocks);
    free(d->logits);
    free(d);
}

const shardlm_model *shardlm_spec_draft_model(const shardlm_spec_draft *d) { return d->m; }

void shardlm_spec_seq_free(shardlm_spec_seq *ss)
{
    if (!ss) return;
    for (int i = ss->n_blocks - 1; i >= 0; i--) ss->d->free_blocks[ss->d->n_free++] = ss->blocks[i];
    free(ss->blocks);
    free(ss->ids);
    free(ss);
}

/* Blocks and id room for n tokens; 0 or SHARDLM_ENOMEM (the pool is shared
 * by every sequence: a sequence that cannot get blocks drafts nothing). */
static int seq_room(shardlm_spec_seq *ss, int n)
{
    shardlm_spec_draft *d = ss->d;
    int need = (n + d->block_size - 1) / d->block_size;
    if (n > ss->cap) {
        int32_t *ids = realloc(ss->ids, (size_t)n * sizeof *ids);
        int32_t *bl = realloc(ss->blocks, (size_t)(need + 1) * sizeof *bl);
        if (ids) ss->ids = ids;
        if (bl) ss->blocks = bl;
        if (!ids || !bl) return SHARDLM_ENOMEM;
        ss->cap = n;
    }
    if (need - ss->n_blocks > d->n_free) return SHARDLM_ENOMEM;
    while (ss->n_blocks < need) ss->blocks[ss->n_blocks++] = d->free_blocks[--d->n_free];
    return SHARDLM_OK;
}

/* Runs toks at positions from.., logits of the last; returns its argmax. */
static int seq_forward(shardlm_spec_seq *ss, const int32_t *toks, int from, int n, int32_t *best)
{
    shardlm_spec_draft *d = ss->d;
    for (int off = 0; off < n;) {
        int c = n - off < d->max_batch ? n - off : d->max_batch;
        int32_t pos[c], seq[c];
        uint8_t want[c];
        for (int i = 0; i < c; i++) pos[i] = from + off + i, seq[i] = 0, want[i] = off + i == n - 1;
        const int32_t *tables[1] = {ss->blocks};
        int table_len[1] = {ss->n_blocks};
        shardlm_batch b = {c, toks + off, pos, seq, want, 1, tables, table_len};
        int rc = shardlm_model_forward_batch(d->m, d->st, d->comm, &b, d->logits, 60000);
        if (rc) return rc;
        memcpy(ss->ids + from + off, toks + off, (size_t)c * sizeof *toks);
        ss->n_ids = from + off + c;
        off += c;
    }
    int32_t arg = 0; /* lowest id on ties, as the sampler's greedy pick */
    for (int32_t i = 1; i < d->vocab; i++)
        if (d->logits[i] > d->logits[arg]) arg = i;
    *best = arg;
    return SHARDLM_OK;
}

int shardlm_spec_draft_propose(shardlm_spec_draft *d, shardlm_spec_seq **pss, const int32_t *toks, int n_toks, int k,
                               int32_t *out)
{
    if (!d || n_toks < 1) return 0;
    if (k > d->n_ctx - n_toks) k = d->n_ctx - n_toks; /* the last draft's position: n_toks + k - 1 */
    if (k < 1) return 0;
    if (!*pss) {
        if (!(*pss = calloc(1, sizeof **pss))) return SHARDLM_ENOMEM;
        (*pss)->d = d;
    }
    shardlm_spec_seq *ss = *pss;
    if (seq_room(ss, n_toks + k - 1)) return 0;
    int keep = 0; /* stored KV still valid: the common prefix, leaving the last token to compute */
    while (keep < ss->n_ids && keep < n_toks - 1 && ss->ids[keep] == toks[keep]) keep++;
    int32_t t;
    int rc = seq_forward(ss, toks + keep, keep, n_toks - keep, &t);
    for (int i = 0; !rc && i < k; i++) {
        out[i] = t;
        if (i + 1 < k) rc = seq_forward(ss, &out[i], n_toks + i, 1, &t);
    }
    return rc ? rc : k;
}
