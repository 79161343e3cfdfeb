/* cmd_generate.c - `shardlm generate`: rank 0 of a one-shot generation. With
 * --world-size W it spawns W-1 local workers on a loopback ring; with
 * RING_CONFIG set it is rank 0 of a ring started by hand. stdout carries
 * exactly the generated text; progress and figures go to stderr. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "flags.h"
#include "node.h"
#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "weights.h"
#include "shardlm_launch.h"
#include "grammar.h"
#include "sampling.h"
#include "scheduler.h"
#include "spec_cli.h"

typedef struct {
    shardlm_node_opts node;
    const char *prompt;
    int n_new, world, echo;
    float temp, top_p;
    uint64_t seed;
    const char *logits_out, *ids_out;
    int32_t *prompt_ids; /* --prompt-ids: the prompt as token ids, instead of -p */
    int n_prompt_ids, ignore_eos;
    const char *grammar_file; /* --grammar or --json-schema */
    int json_schema;
    shardlm_spec_cli spec;    /* --spec: the scheduler verifies drafts (runtime/spec.c) */
} gen_opts;

/* --prompt-ids: decimal ids separated by commas or spaces. Their range is
 * checked against the vocabulary once the model is open (gen_prompt). */
static int gen_parse_ids(const char *s, gen_opts *o)
{
    size_t cap = strlen(s) / 2 + 1;
    free(o->prompt_ids);
    o->n_prompt_ids = 0;
    if (!(o->prompt_ids = malloc(cap * sizeof *o->prompt_ids))) return SHARDLM_ENOMEM;
    for (const char *p = s;;) {
        while (*p == ',' || *p == ' ') p++;
        if (!*p) break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX || (*end && *end != ',' && *end != ' ')) {
            fprintf(stderr, "shardlm generate: invalid value '%s' for --prompt-ids (token ids separated by "
                    "commas, e.g. 1,403,407)\n", s);
            return SHARDLM_EINPUT;
        }
        o->prompt_ids[o->n_prompt_ids++] = (int32_t)v;
        p = end;
    }
    if (o->n_prompt_ids == 0) {
        fprintf(stderr, "shardlm generate: --prompt-ids is empty\n");
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

static int gen_flag(void *ctx, const shardlm_flag_value *v)
{
    gen_opts *o = ctx;
    switch (v->flag->id) {
    case F_WORLD: o->world = (int)v->i; return 0;
    case F_PROMPT: o->prompt = v->str; return 0;
    case F_PROMPT_IDS: return gen_parse_ids(v->str, o) ? -1 : 0;
    case F_N_NEW: o->n_new = (int)v->i; return 0;
    case F_TEMP: o->temp = (float)v->d; return 0;
    case F_TOP_P:
        if (v->d <= 0) {
            fprintf(stderr, "shardlm generate: invalid value '%s' for --top-p (above 0, at most 1)\n", v->str);
            return -1;
        }
        o->top_p = (float)v->d;
        return 0;
    case F_SEED: o->seed = (uint64_t)v->i; return 0;
    case F_ECHO: o->echo = 1; return 0;
    case F_LOGITS_OUT: o->logits_out = v->str; return 0;
    case F_IDS_OUT: o->ids_out = v->str; return 0;
    case F_IGNORE_EOS: o->ignore_eos = 1; return 0;
    case F_GRAMMAR:
    case F_JSON_SCHEMA:
        if (o->grammar_file) {
            fprintf(stderr, "shardlm generate: --grammar and --json-schema are given more than once\n");
            return -1;
        }
        o->grammar_file = v->str;
        o->json_schema = v->flag->id == F_JSON_SCHEMA;
        return 0;
    default: return shardlm_spec_cli_apply(&o->spec, v) ? 0 : shardlm_node_flag(&o->node, v, "generate");
    }
}

static int gen_parse(int argc, char **argv, gen_opts *o)
{
    int rc = shardlm_flags_parse("generate", argc, argv, gen_flag, o, NULL);
    if (rc) return rc > 0 ? 1 : SHARDLM_EINPUT;
    if (shardlm_spec_cli_check(&o->spec) || (o->spec.spec.mode && o->logits_out)) {
        fprintf(stderr, "shardlm generate: %s\n",
                o->logits_out ? "--logits-out steps one token at a time: not with --spec" : shardlm_err_get());
        return SHARDLM_EINPUT;
    }
    if (o->prompt && o->prompt_ids) {
        fprintf(stderr, "shardlm generate: give the prompt as text (-p) or as ids (--prompt-ids), not both\n");
        return SHARDLM_EINPUT;
    }
    shardlm_grammar *gr = NULL; /* a bad grammar fails before any rank starts */
    if (o->grammar_file && shardlm_grammar_from_file(o->grammar_file, o->json_schema, &gr)) {
        fprintf(stderr, "shardlm generate: %s\n", shardlm_err_get());
        return SHARDLM_EINPUT;
    }
    shardlm_grammar_unref(gr);
    const char *wbad = shardlm_weights_flags_check(o->node.model_path, o->node.weights_from, 0);
    if (wbad) {
        fprintf(stderr, "shardlm generate: %s\n", wbad);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

typedef struct {
    shardlm_node *node;
    shardlm_launch *launch;
    FILE *logits_file, *ids_file;
    int vocab;
    /* the one request, as the scheduler reports it (engine thread = this one) */
    shardlm_sched *sched;
    double t_submit, t_first, t_end;
    int n_prompt, n_gen;
    shardlm_finish_reason why;
    shardlm_sched_stats st; /* at the end: the spec_decode counters */
} gen_run;

/* Names the rank that went away after a failed step, if one can be found. */
static void gen_report_loss(gen_run *g)
{
    int lost = -1, st = 0;
    if (shardlm_engine_lost_rank(g->node->engine) > 0) { /* the engine traced it from the workers' faults */
        fprintf(stderr, "shardlm: %s\n", shardlm_err_get());
        return;
    }
    if (g->launch) {
        for (int i = 0; i < 20 && lost < 0; i++) {
            lost = shardlm_launch_poll(g->launch, &st);
            if (lost < 0) usleep(50000);
        }
    } else if (g->node->ctrl) {
        lost = shardlm_ctrl_find_dead(g->node->ctrl, 1000);
    }
    if (lost > 0)
        fprintf(stderr, "shardlm: rank %d is lost: %s\n", lost, shardlm_err_get());
    else
        fprintf(stderr, "shardlm: %s\n", shardlm_err_get());
}

static void gen_emit(const shardlm_tokenizer *tok, shardlm_detok *d, int32_t id)
{
    char buf[1024];
    size_t cap = shardlm_detok_max(tok);
    char *big = cap > sizeof buf ? malloc(cap) : NULL;
    char *out = big ? big : buf;
    size_t k = shardlm_detok_push(tok, d, id, out, big ? cap : sizeof buf);
    fwrite(out, 1, k, stdout);
    fflush(stdout);
    free(big);
}

/* ---- the scheduler's callbacks: generate is a client like serve's ---- */

static void gen_on_token(void *ctx, const char *text, size_t len, int32_t token, const shardlm_logprobs *lp)
{
    gen_run *g = ctx;
    (void)lp;
    if (token >= 0 && !g->t_first) g->t_first = shardlm_now_s();
    if (token >= 0 && g->ids_file) fprintf(g->ids_file, "%d\n", (int)token);
    fwrite(text, 1, len, stdout); /* streamed to the terminal token by token */
    fflush(stdout);
}

static void gen_on_end(void *ctx, shardlm_finish_reason why, int prompt_tokens, int completion_tokens)
{
    gen_run *g = ctx;
    g->t_end = shardlm_now_s();
    g->why = why;
    g->n_prompt = prompt_tokens;
    g->n_gen = completion_tokens;
    shardlm_sched_stop(g->sched); /* the engine loop ends after this step */
}

static void gen_on_logits(void *ctx, const float *row, int n_vocab)
{
    gen_run *g = ctx;
    if (fwrite(row, sizeof(float), (size_t)n_vocab, g->logits_file) != (size_t)n_vocab)
        fprintf(stderr, "shardlm: short write to the logits file\n");
}

/* The prompt's tokens: -p encoded with BOS, or --prompt-ids as given. */
static int gen_prompt(const gen_run *g, const gen_opts *o, int32_t **toks, size_t *n)
{
    const shardlm_tokenizer *tok = g->node->tok;
    size_t len = o->prompt ? strlen(o->prompt) : 0;
    if (!o->prompt_ids)
        return shardlm_tokenizer_encode_alloc(tok, o->prompt ? o->prompt : "", len, shardlm_tokenizer_add_special(tok),
                                              0, toks, n);
    if (!(*toks = malloc((size_t)o->n_prompt_ids * sizeof(int32_t)))) return SHARDLM_ENOMEM;
    for (int i = 0; i < o->n_prompt_ids; i++) {
        if (o->prompt_ids[i] >= g->vocab) {
            shardlm_err_set("--prompt-ids: token id %d is outside the vocabulary of %s (0..%d)",
                            (int)o->prompt_ids[i], o->node.model_path, g->vocab - 1);
            return SHARDLM_EINPUT;
        }
        (*toks)[i] = o->prompt_ids[i];
    }
    *n = (size_t)o->n_prompt_ids;
    return SHARDLM_OK;
}

/* One request of the scheduler, with serve's sampler, end tokens, grammar
 * and finish reasons; the engine loop runs on this thread until it ends. */
static int gen_request(gen_run *g, const gen_opts *o, const int32_t *toks, int n)
{
    shardlm_sched_opts so = {.max_num_seqs = 1, .max_num_batched_tokens = shardlm_engine_max_batch(g->node->engine),
                             .max_queue = 1, .block_size = g->node->block_size, .spec = o->spec.spec};
    shardlm_request_desc d = {.prompt = toks, .n_prompt = n, .max_tokens = o->n_new, .ignore_eos = o->ignore_eos};
    d.params = shardlm_sampling_params_default();
    d.params.temperature = o->temp;
    d.params.top_p = o->top_p;
    d.params.seed = o->seed;
    d.params.has_seed = 1;
    shardlm_request_cb cb = {gen_on_token, gen_on_end, g, NULL, g->logits_file ? gen_on_logits : NULL};
    shardlm_grammar *gr = NULL;
    uint64_t id;
    int rc = o->grammar_file ? shardlm_grammar_from_file(o->grammar_file, o->json_schema, &gr) : SHARDLM_OK;
    d.grammar = gr;
    if (!rc) rc = shardlm_sched_new(g->node->engine, g->node->tok, &so, &g->sched);
    g->t_submit = shardlm_now_s();
    if (!rc) rc = shardlm_sched_submit(g->sched, &d, cb, &id);
    shardlm_grammar_unref(gr); /* the request holds its own reference */
    if (!rc) rc = shardlm_sched_run(g->sched);
    if (!rc && g->why == SHARDLM_FINISH_ERROR) {
        shardlm_err_set("generation failed (out of memory, or the grammar refused every token)");
        rc = SHARDLM_ERUNTIME;
    }
    if (!rc && g->why == SHARDLM_FINISH_LENGTH && g->n_gen < o->n_new)
        fprintf(stderr, "shardlm: stopping at the context length (%d)\n", shardlm_sched_n_ctx(g->sched));
    if (g->sched) shardlm_sched_stats_get(g->sched, &g->st);
    shardlm_sched_free(g->sched);
    g->sched = NULL;
    return rc;
}

static int gen_generate(gen_run *g, const gen_opts *o)
{
    const shardlm_tokenizer *tok = g->node->tok;
    int32_t *toks = NULL;
    size_t n = 0;
    int rc = gen_prompt(g, o, &toks, &n);
    int n_ctx = shardlm_engine_n_ctx(g->node->engine);
    if (!rc && n == 0) {
        shardlm_err_set("the prompt is empty and this model adds no BOS token: give a prompt with -p");
        rc = SHARDLM_EINPUT;
    }
    if (!rc && (int)n >= n_ctx) {
        shardlm_err_set("the prompt is %zu tokens, which does not fit the context of %d", n, n_ctx);
        rc = SHARDLM_EINPUT;
    }
    shardlm_detok d;
    shardlm_detok_init(&d);
    char tail[16];
    for (size_t i = 0; !rc && o->echo && i < n; i++) gen_emit(tok, &d, toks[i]);
    fwrite(tail, 1, shardlm_detok_flush(&d, tail, sizeof tail), stdout);
    if (!rc && o->n_new > 0) rc = gen_request(g, o, toks, (int)n);
    fputc('\n', stdout);
    fflush(stdout);
    free(toks);
    return rc;
}

/* Prompt tokens/s: from submitting to the first token (the prompt's steps);
 * decode tokens/s: the steps after it, one per token but the first. */
static void gen_summary(const gen_run *g, const shardlm_node *n)
{
    fprintf(stderr, "shardlm: world size %d, %d thread(s) per rank (%s kernels), shard load %.2f s, rank 0 resident "
            "%.1f MiB at exit\n", n->world, n->n_threads, shardlm_kernels_isa(), n->load_s,
            (double)shardlm_rss_bytes() / 1048576.0);
    if (g->t_first > g->t_submit)
        fprintf(stderr, "shardlm: prompt %d tokens, %.1f tok/s\n", g->n_prompt, g->n_prompt / (g->t_first - g->t_submit));
    if (g->n_gen > 0) {
        double dt = g->t_end - g->t_first;
        if (g->n_gen > 1 && dt > 0)
            fprintf(stderr, "shardlm: decode %d tokens, %.1f tok/s (finish: %s)\n", g->n_gen, (g->n_gen - 1) / dt,
                    shardlm_finish_reason_str(g->why));
        else
            fprintf(stderr, "shardlm: decode %d token (finish: %s)\n", g->n_gen, shardlm_finish_reason_str(g->why));
    }
    if (g->st.spec_drafts > 0)
        fprintf(stderr, "shardlm: speculative decoding: %llu of %llu draft tokens accepted (%.3f) in %llu drafts\n",
                (unsigned long long)g->st.spec_accepted, (unsigned long long)g->st.spec_draft_tokens,
                (double)g->st.spec_accepted / (double)g->st.spec_draft_tokens, (unsigned long long)g->st.spec_drafts);
}

static int gen_open(gen_opts *o, gen_run *g, shardlm_node *n)
{
    const char *env_cfg = getenv("RING_CONFIG");
    int rc = SHARDLM_OK;
    if (o->world > 1 && env_cfg) {
        shardlm_err_set("--world-size spawns local workers; with RING_CONFIG set the world size comes from %s",
                        env_cfg);
        return SHARDLM_EINPUT;
    }
    if (o->world > 1) rc = shardlm_node_spawn_local(&o->node, o->world, &g->launch);
    else o->node.ring_config = env_cfg;
    if (rc) return rc;
    rc = shardlm_node_open(&o->node, n);
    if (!rc && n->rank != 0) {
        shardlm_err_set("%s: field 'rank': generate runs as rank 0; other ranks run `shardlm worker`",
                        o->node.ring_config);
        rc = SHARDLM_EINPUT;
    }
    if (!rc) rc = shardlm_node_report_memory(n, "loaded");
    if (!rc) rc = shardlm_spec_cli_open(&o->spec, n, o->node.model_path);
    if (rc) return rc;
    g->vocab = shardlm_tokenizer_n_vocab(n->tok);
    if (g->vocab != shardlm_model_hparams(n->model)->vocab) {
        shardlm_err_set("%s: tokenizer has %d tokens but the model %d", o->node.model_path, g->vocab,
                        shardlm_model_hparams(n->model)->vocab);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

int shardlm_cmd_generate(int argc, char **argv)
{
    gen_opts o = {.node = {.timeout_ms = 30000, .connect_timeout_ms = 60000, .load_timeout_ms = 600000,
                           .max_batch = 256, .isq = -1},
                  .n_new = 256, .world = 1, .temp = 1.0f, .top_p = 0.9f};
    o.seed = (uint64_t)time(NULL);
    shardlm_spec_cli_init(&o.spec);
    int rc = gen_parse(argc, argv, &o);
    if (rc) free(o.prompt_ids);
    if (rc == 1) return 0;
    if (rc) return 2;
    int code = shardlm_node_mpi_dispatch(&o.node, o.world, "generate");
    if (code >= 0) return code;
    gen_run g = {0};
    shardlm_node n = {0};
    g.node = &n;
    if (o.logits_out && !(g.logits_file = fopen(o.logits_out, "wb"))) {
        fprintf(stderr, "shardlm: cannot write %s\n", o.logits_out);
        return 2;
    }
    if (o.ids_out && !(g.ids_file = fopen(o.ids_out, "w"))) {
        fprintf(stderr, "shardlm: cannot write %s\n", o.ids_out);
        if (g.logits_file) fclose(g.logits_file);
        free(o.prompt_ids);
        return 2;
    }
    if (o.logits_out) o.node.max_batch = 1;
    rc = gen_open(&o, &g, &n);
    if (rc) fprintf(stderr, "shardlm: %s\n", shardlm_err_get());
    if (!rc) {
        rc = gen_generate(&g, &o);
        if (rc) gen_report_loss(&g);
        else gen_summary(&g, &n);
    }
    if (n.engine) shardlm_engine_shutdown(n.engine, rc ? "rank 0 failed" : "done");
    shardlm_node_close(&n);
    if (g.launch) {
        if (rc) shardlm_launch_kill(g.launch, SIGTERM);
        int wrc = shardlm_launch_wait(g.launch, 5000);
        if (!rc && wrc) {
            fprintf(stderr, "shardlm: a worker exited with an error\n");
            rc = SHARDLM_ERUNTIME;
        }
        shardlm_launch_free(g.launch);
    }
    if (g.logits_file) fclose(g.logits_file);
    if (g.ids_file && fclose(g.ids_file) && !rc) {
        fprintf(stderr, "shardlm: cannot write %s\n", o.ids_out);
        rc = SHARDLM_ERUNTIME;
    }
    free(o.prompt_ids);
    shardlm_spec_cli_close(&o.spec);
    return shardlm_exit_code(rc);
}
