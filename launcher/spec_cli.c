/* spec_cli.c - the speculative-decoding flags of generate, serve and bench,
 * in one place so each command takes them with one line (see spec_cli.h). */
#include "spec_cli.h"

#include <stdio.h>
#include <stdlib.h>

#include "shardlm_common.h"

void shardlm_spec_cli_init(shardlm_spec_cli *c)
{
    *c = (shardlm_spec_cli){.spec = {SHARDLM_SPEC_OFF, 4, 3, NULL}, .draft_path = NULL};
}

int shardlm_spec_cli_apply(shardlm_spec_cli *c, const shardlm_flag_value *v)
{
    switch (v->flag->id) {
    case F_SPEC: c->spec.mode = shardlm_spec_mode_parse(v->str); return 1;
    case F_SPEC_TOKENS: c->spec.n_tokens = (int)v->i; return 1;
    case F_SPEC_NGRAM: c->spec.ngram = (int)v->i; return 1;
    case F_DRAFT_MODEL:
        c->draft_path = v->str;
        if (c->spec.mode == SHARDLM_SPEC_OFF) c->spec.mode = SHARDLM_SPEC_DRAFT;
        return 1;
    default: return 0;
    }
}

int shardlm_spec_cli_check(shardlm_spec_cli *c)
{
    if (c->spec.mode == SHARDLM_SPEC_DRAFT && !c->draft_path) {
        shardlm_err_set("--spec draft needs --draft-model FILE");
        return SHARDLM_EINPUT;
    }
    if (c->draft_path && c->spec.mode != SHARDLM_SPEC_DRAFT) {
        shardlm_err_set("--draft-model is only used with --spec draft (got --spec %s)",
                        shardlm_spec_mode_name(c->spec.mode));
        return SHARDLM_EINPUT;
    }
    if (c->spec.mode == SHARDLM_SPEC_DRAFT) return SHARDLM_OK; /* the draft comes with shardlm_spec_cli_open */
    return shardlm_spec_opts_check(&c->spec);
}

int shardlm_spec_cli_open(shardlm_spec_cli *c, const shardlm_node *n, const char *model_path)
{
    if (c->spec.mode != SHARDLM_SPEC_DRAFT || c->spec.draft) return SHARDLM_OK;
    int n_ctx = shardlm_engine_n_ctx(n->engine), bs = n->block_size > 0 ? n->block_size : 16;
    int blocks = n->kv_blocks > 0 ? n->kv_blocks : (n_ctx + bs - 1) / bs + 1;
    shardlm_spec_draft_opts d = {n_ctx, blocks, bs, shardlm_engine_max_batch(n->engine), n->n_threads};
    int rc = shardlm_spec_draft_open(c->draft_path, n->tok, model_path, &d, &c->spec.draft);
    return rc ? rc : shardlm_spec_opts_check(&c->spec);
}

void shardlm_spec_cli_close(shardlm_spec_cli *c)
{
    shardlm_spec_draft_free(c->spec.draft);
    c->spec.draft = NULL;
}

void shardlm_spec_cli_describe(const shardlm_spec_cli *c, char *buf, size_t cap)
{
    if (c->spec.mode == SHARDLM_SPEC_NGRAM)
        snprintf(buf, cap, "ngram (prompt lookup): %d draft tokens per step, suffixes of up to %d tokens",
                 c->spec.n_tokens, c->spec.ngram);
    else if (c->spec.mode == SHARDLM_SPEC_DRAFT)
        snprintf(buf, cap, "draft model %s on rank 0: %d draft tokens per step", c->draft_path, c->spec.n_tokens);
    else
        snprintf(buf, cap, "off");
}
