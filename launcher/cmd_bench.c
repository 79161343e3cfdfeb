/* cmd_bench.c - `shardlm bench`: prompt-processing and decode tokens/s of a
 * model across W local ranks, in the spirit of llama-bench. Each repetition
 * runs a fresh prompt of P tokens as one batch (pp), then N single-token
 * decode steps from an empty context (tg); the medians are reported. With
 * --batch B it also runs B sequences decoding together, one token of each
 * per step over the paged KV cache, as `serve` batches its users (tgB). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_spec.h"
#include "grammar.h"
#include "node.h"
#include "sampling.h"
#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "spec_cli.h"

typedef struct {
    shardlm_node_opts node;
    int pp, tg, reps, world, json, batch;
    const char *grammar_file; /* --grammar / --json-schema: also time the token mask */
    int json_schema;
    shardlm_spec_cli spec;    /* --spec: also decode -n tokens through the scheduler, off and on */
} bench_opts;

/* What the constrained-decoding pass measured. */
typedef struct {
    double mask_us, p50_us, max_us, step_us, vocab_ms;
    int tokens, docs;
} bench_mask;

static int bench_flag(void *ctx, const shardlm_flag_value *v)
{
    bench_opts *o = ctx;
    switch (v->flag->id) {
    case F_WORLD: o->world = (int)v->i; return 0;
    case F_N_PROMPT: o->pp = (int)v->i; return 0;
    case F_N_GEN: o->tg = (int)v->i; return 0;
    case F_REPS: o->reps = (int)v->i; return 0;
    case F_BATCH: o->batch = (int)v->i; return 0;
    case F_JSON: o->json = 1; return 0;
    case F_GRAMMAR:
    case F_JSON_SCHEMA:
        if (o->grammar_file) {
            fprintf(stderr, "shardlm bench: --grammar and --json-schema are given more than once\n");
            return -1;
        }
        o->grammar_file = v->str;
        o->json_schema = v->flag->id == F_JSON_SCHEMA;
        return 0;
    default: return shardlm_spec_cli_apply(&o->spec, v) ? 0 : shardlm_node_flag(&o->node, v, "bench");
    }
}

static int bench_parse(int argc, char **argv, bench_opts *o)
{
    int rc = shardlm_flags_parse("bench", argc, argv, bench_flag, o, NULL);
    if (rc) return rc > 0 ? 1 : SHARDLM_EINPUT;
    shardlm_grammar *gr = NULL; /* a bad grammar fails before any rank starts */
    if (o->grammar_file && shardlm_grammar_from_file(o->grammar_file, o->json_schema, &gr)) {
        fprintf(stderr, "shardlm bench: %s\n", shardlm_err_get());
        return SHARDLM_EINPUT;
    }
    shardlm_grammar_unref(gr);
    if (shardlm_spec_cli_check(&o->spec) || (o->spec.spec.mode && o->tg < 1)) {
        fprintf(stderr, "shardlm bench: %s\n", o->tg < 1 ? "--spec needs -n decode steps" : shardlm_err_get());
        return SHARDLM_EINPUT;
    }
    if (o->grammar_file && o->tg < 1) {
        fprintf(stderr, "shardlm bench: --%s needs -n decode steps\n", o->json_schema ? "json-schema" : "grammar");
        return SHARDLM_EINPUT;
    }
    if (!o->node.model_path) {
        fprintf(stderr, "shardlm bench: -m MODEL is required\n");
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    double s[64];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* One prompt of n tokens in one batch; returns tokens/s or a negative status. */
static double bench_pp(shardlm_engine *e, const int32_t *toks, int n, float *logits)
{
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    uint8_t *want = calloc((size_t)n, 1);
    if (!pos || !want) return SHARDLM_ENOMEM;
    for (int i = 0; i < n; i++) pos[i] = i;
    want[n - 1] = 1;
    double t0 = shardlm_now_s();
    int rc = shardlm_engine_step(e, toks, pos, want, n, logits);
    double dt = shardlm_now_s() - t0;
    free(pos);
    free(want);
    return rc ? rc : n / dt;
}

static double bench_tg(shardlm_engine *e, const int32_t *toks, int n, float *logits)
{
    uint8_t want = 1;
    double t0 = shardlm_now_s();
    for (int i = 0; i < n; i++) {
        int rc = shardlm_engine_step(e, &toks[i], &i, &want, 1, logits);
        if (rc) return rc;
    }
    return n / (shardlm_now_s() - t0);
}

/* B sequences from empty contexts, n steps of one token each, all in one
 * batch per step; sequence s owns KV blocks [s * per, (s + 1) * per).
 * Returns aggregate tokens/s or a negative status. */
static double bench_tg_batch(shardlm_engine *e, const int32_t *toks, int n, int B, int block_size, float *logits)
{
    int per = (n + block_size - 1) / block_size;
    if ((long)B * per > shardlm_engine_kv_blocks(e)) {
        shardlm_err_set("--batch %d x %d steps needs %ld KV blocks; the pool holds %d", B, n, (long)B * per,
                        shardlm_engine_kv_blocks(e));
        return SHARDLM_EINPUT;
    }
    int32_t *blocks = malloc((size_t)B * (size_t)per * sizeof *blocks), *tk = malloc((size_t)B * 3 * sizeof *tk);
    const int32_t **tables = malloc((size_t)B * sizeof *tables);
    int *tlen = malloc((size_t)B * sizeof *tlen);
    uint8_t *want = malloc((size_t)B);
    if (!blocks || !tk || !tables || !tlen || !want) {
        free(blocks), free(tk), free(tables), free(tlen), free(want);
        return SHARDLM_ENOMEM;
    }
    int32_t *pos = tk + B, *seq = tk + 2 * B;
    for (int k = 0; k < B * per; k++) blocks[k] = k;
    for (int s = 0; s < B; s++) tables[s] = blocks + s * per, tlen[s] = per, seq[s] = s, want[s] = 1;
    shardlm_batch b = {.n = B, .tokens = tk, .pos = pos, .seq = seq, .want = want, .n_seqs = B, .tables = tables,
                       .table_len = tlen};
    int rc = 0;
    double t0 = shardlm_now_s();
    for (int i = 0; i < n && !rc; i++) {
        for (int s = 0; s < B; s++) tk[s] = toks[(i + s) % (n + 1)], pos[s] = i; /* different tokens per sequence */
        rc = shardlm_engine_step_batch(e, &b, logits);
    }
    double dt = shardlm_now_s() - t0;
    free(blocks), free(tk), free(tables), free(tlen), free(want);
    return rc ? rc : (double)n * B / dt;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* One sequence decoding -n tokens under the grammar (temperature 1, a
 * fixed seed), restarted whenever a document ends. Each step's mask is
 * timed right after the step itself, so load on the machine falls on both
 * alike. */
static int bench_grammar_run(const bench_opts *o, shardlm_node *n, float *logits, int vocab, bench_mask *bm)
{
    shardlm_grammar *gr = NULL;
    shardlm_grammar_vocab *gv = NULL;
    shardlm_grammar_state *st = NULL;
    shardlm_seq_sampler *smp = NULL;
    shardlm_sampling_params sp = shardlm_sampling_params_default();
    sp.seed = 42;
    sp.has_seed = 1;
    float *mask_us = malloc((size_t)o->tg * sizeof *mask_us);
    double t0 = shardlm_now_s();
    int rc = mask_us ? shardlm_grammar_vocab_from_tokenizer(n->tok, &gv) : SHARDLM_ENOMEM;
    bm->vocab_ms = (shardlm_now_s() - t0) * 1e3;
    int32_t eos = shardlm_tokenizer_eos(n->tok), tok = shardlm_tokenizer_bos(n->tok);
    if (!rc && shardlm_grammar_vocab_n(gv) > vocab) {
        shardlm_err_set("the tokenizer has more tokens than the model (%d > %d)", shardlm_grammar_vocab_n(gv), vocab);
        rc = SHARDLM_EINPUT;
    }
    if (!rc) rc = shardlm_grammar_from_file(o->grammar_file, o->json_schema, &gr);
    if (!rc) rc = shardlm_grammar_state_new(gr, 1, &st);
    if (!rc) rc = shardlm_seq_sampler_new(&sp, NULL, 0, 0, &smp);
    double step_s = 0, mask_s = 0;
    uint8_t want = 1;
    for (int i = 0; !rc && i < o->tg; i++) {
        double a = shardlm_now_s();
        if ((rc = shardlm_engine_step(n->engine, &tok, &i, &want, 1, logits))) break;
        double b = shardlm_now_s();
        rc = shardlm_grammar_apply(st, gv, logits);
        for (int32_t k = shardlm_grammar_vocab_n(gv); k < vocab; k++) logits[k] = -INFINITY;
        double c = shardlm_now_s();
        step_s += b - a;
        mask_s += c - b;
        mask_us[i] = (float)((c - b) * 1e6);
        if (!rc && ((tok = shardlm_seq_sample(smp, &sp, logits, vocab, NULL)) < 0 ||
                    shardlm_grammar_accept_token(st, gv, tok)))
            rc = SHARDLM_ERUNTIME;
        if (!rc && (tok == eos || shardlm_grammar_must_end(st))) { /* a document is done: start the next */
            bm->docs++;
            shardlm_grammar_state_free(st);
            st = NULL;
            rc = shardlm_grammar_state_new(gr, 0, &st);
            if (tok == eos) tok = shardlm_tokenizer_bos(n->tok);
        }
    }
    if (!rc) {
        qsort(mask_us, (size_t)o->tg, sizeof *mask_us, cmp_float);
        bm->tokens = o->tg;
        bm->mask_us = mask_s / o->tg * 1e6;
        bm->step_us = step_s / o->tg * 1e6;
        bm->p50_us = mask_us[o->tg / 2];
        bm->max_us = mask_us[o->tg - 1];
    }
    free(mask_us);
    shardlm_seq_sampler_free(smp);
    shardlm_grammar_state_free(st);
    shardlm_grammar_unref(gr);
    shardlm_grammar_vocab_free(gv);
    return rc;
}

static uint64_t model_weight_bytes(const char *path)
{
    shardlm_gguf *g;
    if (shardlm_gguf_open(path, &g)) return 0;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < shardlm_gguf_n_tensors(g); i++) sum += shardlm_gguf_tensor_at(g, i)->nbytes;
    shardlm_gguf_close(g);
    return sum;
}

static void bench_print_mask(const bench_opts *o, const shardlm_node *n, const bench_mask *m)
{
    double pct = m->step_us > 0 ? 100.0 * m->mask_us / m->step_us : 0;
    if (!o->json) {
        printf("| %s | mask %s | vocab %d | %d tokens, %d documents | mask %.1f us/token (p50 %.1f, max %.1f) = %.2f %% "
               "of a %.1f us decode step; vocabulary trie %.0f ms |\n", o->node.model_path, o->grammar_file,
               shardlm_model_hparams(n->model)->vocab, m->tokens, m->docs, m->mask_us, m->p50_us, m->max_us, pct,
               m->step_us, m->vocab_ms);
        return;
    }
    printf(",\"mask_file\":\"%s\",\"mask_tokens\":%d,\"mask_docs\":%d,\"mask_us\":%.3f,\"mask_p50_us\":%.3f,"
           "\"mask_max_us\":%.3f,\"mask_step_us\":%.3f,\"mask_pct_of_decode\":%.3f,\"mask_vocab_ms\":%.1f",
           o->grammar_file, m->tokens, m->docs, m->mask_us, m->p50_us, m->max_us, m->step_us, pct, m->vocab_ms);
}

static void bench_print(const bench_opts *o, const shardlm_node *n, const double *pp, const double *tg,
                        const double *tb, int reps, const bench_mask *m, const char *spec_json)
{
    double mpp = o->pp ? median(pp, reps) : 0, mtg = o->tg ? median(tg, reps) : 0;
    double mtb = o->batch && o->tg ? median(tb, reps) : 0;
    uint64_t wb = model_weight_bytes(o->node.model_path);
    if (!o->json) {
        printf("| model | weights MiB | ranks | threads/rank | isa | test | tok/s |\n|---|---|---|---|---|---|---|\n");
        if (o->pp)
            printf("| %s | %.0f | %d | %d | %s | pp%d | %.2f |\n", o->node.model_path, wb / 1048576.0, n->world,
                   n->n_threads, shardlm_kernels_isa(), o->pp, mpp);
        if (o->tg)
            printf("| %s | %.0f | %d | %d | %s | tg%d | %.2f |\n", o->node.model_path, wb / 1048576.0, n->world,
                   n->n_threads, shardlm_kernels_isa(), o->tg, mtg);
        if (mtb > 0)
            printf("| %s | %.0f | %d | %d | %s | tg%d x %d seqs | %.2f (%.2fx tg) |\n", o->node.model_path,
                   wb / 1048576.0, n->world, n->n_threads, shardlm_kernels_isa(), o->tg, o->batch, mtb,
                   mtg > 0 ? mtb / mtg : 0);
        if (o->grammar_file) bench_print_mask(o, n, m);
        return;
    }
    printf("{\"model\":\"%s\",\"weights_bytes\":%llu,\"world_size\":%d,\"threads\":%d,\"isa\":\"%s\",\"pp\":%d,"
           "\"tg\":%d,\"pp_tok_s\":%.3f,\"tg_tok_s\":%.3f,",
           o->node.model_path, (unsigned long long)wb, n->world, n->n_threads, shardlm_kernels_isa(), o->pp, o->tg,
           mpp, mtg);
    printf("\"kernels\":{");
    for (size_t k = 0; k < SHARDLM_KERNELS_N_DTYPES; k++) {
        char kb[48];
        printf("%s\"%s\":\"%s\"", k ? "," : "", shardlm_dtype_name(shardlm_kernels_dtypes[k]),
               shardlm_kernels_kernel(shardlm_kernels_dtypes[k], kb, sizeof kb));
    }
    printf("},\"pp_samples\":[");
    for (int i = 0; o->pp && i < reps; i++) printf("%s%.3f", i ? "," : "", pp[i]);
    printf("],\"tg_samples\":[");
    for (int i = 0; o->tg && i < reps; i++) printf("%s%.3f", i ? "," : "", tg[i]);
    printf("]");
    if (mtb > 0) {
        printf(",\"batch\":%d,\"tg_batch_tok_s\":%.3f,\"tg_batch_ratio\":%.3f,\"tg_batch_samples\":[", o->batch, mtb,
               mtg > 0 ? mtb / mtg : 0);
        for (int i = 0; i < reps; i++) printf("%s%.3f", i ? "," : "", tb[i]);
        printf("]");
    }
    if (o->grammar_file) bench_print_mask(o, n, m);
    if (spec_json) printf(",\"spec_decode\":[%s]", spec_json);
    printf("}\n");
}

static int bench_run(const bench_opts *o, shardlm_node *n)
{
    int vocab = shardlm_model_hparams(n->model)->vocab, len = o->pp > o->tg ? o->pp : o->tg;
    int32_t *toks = malloc((size_t)(len + 1) * sizeof *toks);
    int rows = o->batch > 1 ? o->batch : 1;
    float *logits = malloc((size_t)vocab * (size_t)rows * sizeof *logits);
    if (!toks || !logits) return SHARDLM_ENOMEM;
    uint64_t x = 0x243f6a8885a308d3ull; /* fixed token ids: runs are comparable */
    for (int i = 0; i <= len; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = (int32_t)(3 + (x >> 33) % (uint64_t)(vocab > 3 ? vocab - 3 : 1));
    }
    double pp[64], tg[64], tb[64];
    int rc = SHARDLM_OK;
    bench_tg(n->engine, toks, len < 4 ? len : 4, logits); /* warm-up: page in weights and threads */
    for (int r = 0; r < o->reps && !rc; r++) {
        if (o->pp && (pp[r] = bench_pp(n->engine, toks, o->pp, logits)) < 0) rc = (int)pp[r];
        if (!rc && o->tg && (tg[r] = bench_tg(n->engine, toks, o->tg, logits)) < 0) rc = (int)tg[r];
        if (!rc && o->tg && o->batch &&
            (tb[r] = bench_tg_batch(n->engine, toks, o->tg, o->batch, n->block_size, logits)) < 0)
            rc = (int)tb[r];
        shardlm_progress("bench", (uint64_t)r + 1, (uint64_t)o->reps);
    }
    bench_mask bm = {0};
    if (!rc && o->grammar_file) rc = bench_grammar_run(o, n, logits, vocab, &bm);
    static char spec_json[4096];
    int spec_on = o->spec.spec.mode != SHARDLM_SPEC_OFF;
    if (!rc && !o->json) bench_print(o, n, pp, tg, tb, o->reps, &bm, NULL);
    if (!rc && spec_on) { /* a second table; in JSON, one more field of the object */
        char label[32];
        snprintf(label, sizeof label, "%s k=%d", shardlm_spec_mode_name(o->spec.spec.mode), o->spec.spec.n_tokens);
        rc = shardlm_bench_spec(n, &o->spec.spec, label, o->tg, o->reps, o->json, spec_json, sizeof spec_json);
    }
    if (!rc && o->json) bench_print(o, n, pp, tg, tb, o->reps, &bm, spec_on ? spec_json : NULL);
    free(toks);
    free(logits);
    return rc;
}

int shardlm_cmd_bench(int argc, char **argv)
{
    bench_opts o = {.node = {.timeout_ms = 60000, .connect_timeout_ms = 60000, .load_timeout_ms = 600000, .isq = -1},
                    .pp = 128, .tg = 128, .reps = 3, .world = 1};
    shardlm_spec_cli_init(&o.spec);
    int rc = bench_parse(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : 2;
    o.node.max_batch = o.pp > 1 ? o.pp : 1;
    if (o.batch > o.node.max_batch) o.node.max_batch = o.batch;
    /* --batch needs the paged KV pool: 512 MiB per rank holds 16 sequences
     * of 700 tokens of TinyLlama-1.1B (45 KB of f32 KV per token); too small
     * a pool is reported, not overrun. */
    if (o.batch) o.node.kv_cache_mb = 512;
    o.node.n_ctx = (o.pp > o.tg ? o.pp : o.tg) + 8;
    if (o.spec.spec.mode) { /* the prompts, the drafts, and room for a prompt chunk */
        o.node.n_ctx += 256;
        if (o.node.max_batch < 64) o.node.max_batch = 64;
    }
    shardlm_launch *l = NULL;
    shardlm_node n = {0};
    if (o.world > 1) rc = shardlm_node_spawn_local(&o.node, o.world, &l);
    if (!rc) rc = shardlm_node_open(&o.node, &n);
    if (!rc) rc = shardlm_node_report_memory(&n, "loaded");
    if (!rc) rc = shardlm_spec_cli_open(&o.spec, &n, o.node.model_path);
    if (!rc) rc = bench_run(&o, &n);
    shardlm_spec_cli_close(&o.spec);
    if (rc) fprintf(stderr, "shardlm bench: %s\n", shardlm_err_get());
    if (n.engine) shardlm_engine_shutdown(n.engine, "bench done");
    shardlm_node_close(&n);
    if (l) {
        shardlm_launch_wait(l, 5000);
        shardlm_launch_free(l);
    }
    return shardlm_exit_code(rc);
}
