/* cmd_generate.c - `shardlm generate`: rank 0 of a one-shot generation. With
 * --world-size W it spawns W-1 local workers on a loopback ring; with
 * RING_CONFIG set it is rank 0 of a ring started by hand. stdout carries
 * exactly the generated text; progress and figures go to stderr. */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "node.h"
#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "weights.h"
#include "shardlm_launch.h"
#include "gen_spec.h"
#include "grammar.h"
#include "sampling.h"
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
    shardlm_spec_cli spec;    /* --spec: the request runs through the scheduler (gen_spec.c) */
} gen_opts;

static void gen_usage(FILE *f)
{
    fprintf(f,
            "usage: shardlm generate -m MODEL [options]\n"
            "  -m, --model PATH          GGUF model file\n"
            "  -p, --prompt TEXT         prompt, after BOS where the model adds one\n"
            "                            (default: start from BOS alone)\n"
            "      --prompt-ids IDS      the prompt as token ids (e.g. 1,403,407), no BOS added\n"
            "  -n, --n-new N             tokens to generate (default 256)\n"
            "      --temp T              temperature, 0 = greedy (default 1.0)\n"
            "      --top-p P             nucleus sampling threshold (default 0.9)\n"
            "      --seed S              sampler seed (default: time)\n"
            "      --world-size W        spawn W-1 local workers (default 1, or RING_CONFIG's)\n"
            "      --echo                print the prompt before the generated text\n"
            "      --ctx N               context length (default: the model's)\n"
            "      --timeout-ms MS       collective timeout (default 30000)\n"
            "      --threads N           kernel threads per rank (default: its share of the cores)\n"
            "      --pin-threads         pin each kernel thread to a core\n"
            "      --isq q8_0|q4_0       quantise F32/F16/BF16 weights while loading each shard\n"
            "      --kv-cache-type T     KV cache element type: f32 (default), f16, q8_0\n"
            "      --comm-dtype f32|q8   all-reduce wire format (default f32; q8: Q8_0 blocks)\n"
            "      --logits-out FILE     append each step's logits (f32) to FILE\n"
            "      --ids-out FILE        write the generated token ids to FILE, one per line\n"
            "      --ignore-eos          do not stop at EOS or BOS: always generate N tokens\n"
            "      --grammar FILE        constrain the output to a GBNF grammar (llama.cpp's syntax)\n"
            "      --json-schema FILE    constrain the output to JSON valid against a JSON Schema\n"
            "      --comm KIND           collective backend: auto (default), ring, mpi, nccl\n"
            "      --ring-transport T    the ring's hops: auto (default: shared memory between ranks\n"
            "                            on one host, TCP across hosts), tcp or shm\n"
            "      --numa                pin each local rank to its share of the NUMA nodes and cores\n"
            "      --device DEV          cpu (default), cuda or cuda:K\n"
            "      --weights-from rank0  local workers get their shards from rank 0, not the file\n"
            "      --weights-cache DIR   the local workers' weights cache (see `shardlm worker`)\n"
            SHARDLM_SPEC_CLI_USAGE
            "Under mpirun every rank runs this same command: rank 0 generates, the others\n"
            "become workers (`mpirun -np 4 shardlm generate -m MODEL`).\n");
}

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

static int gen_parse(int argc, char **argv, gen_opts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"prompt", required_argument, 0, 'p'},
        {"n-new", required_argument, 0, 'n'},   {"temp", required_argument, 0, 'T'},
        {"top-p", required_argument, 0, 'P'},   {"seed", required_argument, 0, 'S'},
        {"world-size", required_argument, 0, 'W'}, {"echo", no_argument, 0, 'E'},
        {"ctx", required_argument, 0, 'C'},     {"timeout-ms", required_argument, 0, 't'},
        {"logits-out", required_argument, 0, 'L'}, {"help", no_argument, 0, 'h'},
        {"threads", required_argument, 0, 'j'},  {"pin-threads", no_argument, 0, 'J'},
        {"isq", required_argument, 0, 'Q'},      {"comm", required_argument, 0, 'K'},
        {"device", required_argument, 0, 'D'},   {"kv-cache-type", required_argument, 0, 'V'},
        {"comm-dtype", required_argument, 0, 'X'},  {"prompt-ids", required_argument, 0, 'I'},
        {"ids-out", required_argument, 0, 'O'},     {"ignore-eos", no_argument, 0, 'e'},
        {"comm-dtype", required_argument, 0, 'X'}, {"ring-transport", required_argument, 0, 'R'},
        {"numa", no_argument, 0, 'U'},
        {"weights-from", required_argument, 0, 'w'}, {"weights-cache", required_argument, 0, 'G'},
        {"grammar", required_argument, 0, 'g'},  {"json-schema", required_argument, 0, 'J' + 256},
        SHARDLM_SPEC_CLI_OPTIONS, {0, 0, 0, 0}};
    int c;
    char *end;
    optind = 1;
#define BAD(name)                                                                              \
    do {                                                                                       \
        fprintf(stderr, "shardlm generate: invalid value '%s' for %s\n", optarg, name);        \
        return SHARDLM_EINPUT;                                                                 \
    } while (0)
    while ((c = getopt_long(argc, argv, "m:p:n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->node.model_path = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'n': o->n_new = (int)strtol(optarg, &end, 10); if (*end || o->n_new < 0) BAD("-n"); break;
        case 'T': o->temp = strtof(optarg, &end); if (*end || !(o->temp >= 0 && o->temp < 1e6)) BAD("--temp"); break;
        case 'P': o->top_p = strtof(optarg, &end); if (*end || !(o->top_p > 0 && o->top_p <= 1)) BAD("--top-p"); break;
        case 'S': o->seed = strtoull(optarg, &end, 10); if (*end) BAD("--seed"); break;
        case 'W': o->world = (int)strtol(optarg, &end, 10); if (*end || o->world < 1 || o->world > 64 || (o->world & (o->world - 1))) BAD("--world-size (a power of two, 1..64)"); break;
        case 'E': o->echo = 1; break;
        case 'C': o->node.n_ctx = (int)strtol(optarg, &end, 10); if (*end || o->node.n_ctx < 1) BAD("--ctx"); break;
        case 't': o->node.timeout_ms = (int)strtol(optarg, &end, 10); if (*end || o->node.timeout_ms < 1) BAD("--timeout-ms"); break;
        case 'L': o->logits_out = optarg; break;
        case 'O': o->ids_out = optarg; break;
        case 'e': o->ignore_eos = 1; break;
        case 'I': { int rc = gen_parse_ids(optarg, o); if (rc) return rc; break; }
        case 'j': o->node.n_threads = (int)strtol(optarg, &end, 10); if (*end || o->node.n_threads < 1 || o->node.n_threads > 1024) BAD("--threads"); break;
        case 'J': o->node.pin_threads = 1; break;
        case 'Q': o->node.isq = shardlm_dtype_parse(optarg); if (o->node.isq != SHARDLM_DT_Q8_0 && o->node.isq != SHARDLM_DT_Q4_0) BAD("--isq (q8_0 or q4_0)"); break;
        case 'K': o->node.comm = optarg; break;
        case 'R': if (shardlm_node_ring_transport_check(optarg, "generate")) return SHARDLM_EINPUT; o->node.ring_transport = optarg; break;
        case 'U': o->node.numa = 1; break;
        case 'D': o->node.device = optarg; break;
        case 'X': if (strcmp(optarg, "f32") && strcmp(optarg, "q8")) BAD("--comm-dtype (f32 or q8)"); o->node.comm_q8 = !strcmp(optarg, "q8"); break;
        case 'V': o->node.kv_type = shardlm_node_kv_type_parse(optarg); if (o->node.kv_type < 0) BAD("--kv-cache-type (f32, f16 or q8_0)"); break;
        case 'w': o->node.weights_from = optarg; break;
        case 'G': o->node.weights_cache = optarg; break;
        case 'g': case 'J' + 256:
            if (o->grammar_file) {
                fprintf(stderr, "shardlm generate: --grammar and --json-schema are given more than once\n");
                return SHARDLM_EINPUT;
            }
            o->grammar_file = optarg;
            o->json_schema = c != 'g';
            break;
        case 'h': gen_usage(stdout); return 1;
        default: {
            int sc = shardlm_spec_cli_opt(&o->spec, c, optarg, "generate");
            if (sc > 0) break;
            if (!sc) gen_usage(stderr);
            return SHARDLM_EINPUT;
        }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shardlm generate: unexpected argument '%s'\n", argv[optind]);
        return SHARDLM_EINPUT;
    }
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
    float *logits;
    int vocab;
    double prefill_s, decode_s;
    int n_prompt, n_decoded;
    shardlm_gen_spec_result spec; /* --spec */
} gen_run;

/* Names the rank that went away after a failed step, if one can be found. */
static void gen_report_loss(gen_run *g, int rc)
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
    (void)rc;
}

static int gen_step(gen_run *g, const int32_t *toks, const int32_t *pos, const uint8_t *want, int n)
{
    int rc = shardlm_engine_step(g->node->engine, toks, pos, want, n, g->logits);
    if (!rc && g->logits_file && fwrite(g->logits, sizeof(float), (size_t)g->vocab, g->logits_file) != (size_t)g->vocab)
        fprintf(stderr, "shardlm: short write to the logits file\n");
    return rc;
}

/* Feeds the prompt in batches; the logits of its last token come back. */
static int gen_prefill(gen_run *g, const int32_t *toks, int n, int max_batch)
{
    double t0 = shardlm_now_s();
    for (int start = 0; start < n; start += max_batch) {
        int m = n - start < max_batch ? n - start : max_batch;
        int32_t pos[m];
        uint8_t want[m];
        for (int i = 0; i < m; i++) {
            pos[i] = start + i;
            /* with --logits-out every prompt position is stepped one by one */
            want[i] = g->logits_file || start + i == n - 1;
        }
        int rc = gen_step(g, toks + start, pos, want, m);
        if (rc) return rc;
    }
    g->prefill_s = shardlm_now_s() - t0;
    g->n_prompt = n;
    return SHARDLM_OK;
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

/* --grammar / --json-schema: the sampler's hook masks each step. */
typedef struct {
    shardlm_grammar_vocab *vocab;
    shardlm_grammar_state *state;
} gen_constraint;

static int gen_mask(void *ctx, float *logits, int n_vocab)
{
    gen_constraint *c = ctx;
    int32_t n = shardlm_grammar_vocab_n(c->vocab);
    if (n > n_vocab) return SHARDLM_EINPUT;
    for (int32_t i = n; i < n_vocab; i++) logits[i] = -INFINITY;
    return shardlm_grammar_apply(c->state, c->vocab, logits);
}

static int gen_constraint_open(const gen_opts *o, const shardlm_tokenizer *tok, int lead, gen_constraint *c)
{
    shardlm_grammar *gr;
    int rc = shardlm_grammar_from_file(o->grammar_file, o->json_schema, &gr);
    if (rc) return rc;
    rc = shardlm_grammar_vocab_from_tokenizer(tok, &c->vocab);
    if (!rc) rc = shardlm_grammar_state_new(gr, lead, &c->state);
    shardlm_grammar_unref(gr); /* the state holds it */
    return rc;
}

static int gen_decode(gen_run *g, const gen_opts *o, shardlm_detok *d, int pos)
{
    const shardlm_tokenizer *tok = g->node->tok;
    gen_constraint con = {0};
    /* the same per-sequence sampler as `serve`, with temperature and top_p */
    shardlm_sampling_params sp = shardlm_sampling_params_default();
    sp.temperature = o->temp;
    sp.top_p = o->top_p;
    sp.seed = o->seed;
    sp.has_seed = 1;
    shardlm_seq_sampler *smp;
    if (shardlm_seq_sampler_new(&sp, NULL, 0, 0, &smp)) return SHARDLM_ENOMEM;
    int n_ctx = shardlm_engine_n_ctx(g->node->engine), rc = SHARDLM_OK;
    if (o->grammar_file && (rc = gen_constraint_open(o, tok, d->prev == shardlm_tokenizer_bos(tok), &con))) {
        shardlm_seq_sampler_free(smp);
        return rc;
    }
    if (con.state) shardlm_seq_sampler_set_hook(smp, gen_mask, &con);
    double t0 = shardlm_now_s();
    for (int i = 0; i < o->n_new; i++) {
        int32_t next = shardlm_seq_sample(smp, &sp, g->logits, g->vocab, NULL);
        if (next < 0 || (con.state && shardlm_grammar_accept_token(con.state, con.vocab, next))) {
            rc = next < 0 ? SHARDLM_ENOMEM : SHARDLM_ERUNTIME;
            break;
        }
        /* the model's end-of-generation tokens, and BOS, as llama2.c's run.c */
        if (!o->ignore_eos && (shardlm_tokenizer_is_eog(tok, next) || next == shardlm_tokenizer_bos(tok))) break;
        if (g->ids_file) fprintf(g->ids_file, "%d\n", (int)next);
        gen_emit(tok, d, next);
        if (i + 1 == o->n_new || (con.state && shardlm_grammar_must_end(con.state))) break;
        if (pos >= n_ctx) {
            fprintf(stderr, "shardlm: stopping at the context length (%d)\n", n_ctx);
            break;
        }
        uint8_t want = 1;
        if ((rc = gen_step(g, &next, &pos, &want, 1))) break;
        pos++;
        g->n_decoded++;
    }
    g->decode_s = shardlm_now_s() - t0;
    shardlm_seq_sampler_free(smp);
    shardlm_grammar_state_free(con.state);
    shardlm_grammar_vocab_free(con.vocab);
    return rc;
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

/* --spec: the scheduler generates (and writes the text); figures as gen_decode's. */
static int gen_spec(gen_run *g, const gen_opts *o, const int32_t *toks, int n)
{
    shardlm_grammar *gr = NULL;
    int rc = o->grammar_file ? shardlm_grammar_from_file(o->grammar_file, o->json_schema, &gr) : SHARDLM_OK;
    shardlm_gen_spec_req r = {toks, n, o->n_new, o->ignore_eos, o->temp, o->top_p, o->seed, gr, g->ids_file};
    if (!rc) rc = shardlm_gen_spec_run(g->node, &o->spec.spec, &r, &g->spec);
    shardlm_grammar_unref(gr);
    g->n_prompt = n;
    g->prefill_s = g->spec.prefill_s;
    g->decode_s = g->spec.decode_s;
    g->n_decoded = g->spec.n_gen > 0 ? g->spec.n_gen - 1 : 0; /* the first token comes from the prompt's step */
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
    if (!rc && o->echo)
        for (size_t i = 0; i < n; i++) gen_emit(tok, &d, toks[i]);
    else if (!rc)
        d.prev = toks[n - 1]; /* after BOS alone, the first piece's leading space is dropped */
    int max_batch = g->logits_file ? 1 : 256;
    if (!rc && o->n_new > 0 && o->spec.spec.mode) rc = gen_spec(g, o, toks, (int)n);
    else if (!rc && o->n_new > 0) rc = gen_prefill(g, toks, (int)n, max_batch);
    if (!rc && o->n_new > 0 && !o->spec.spec.mode) rc = gen_decode(g, o, &d, (int)n);
    char tail[16];
    size_t k = shardlm_detok_flush(&d, tail, sizeof tail);
    fwrite(tail, 1, k, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    free(toks);
    return rc;
}

static void gen_summary(const gen_run *g, const shardlm_node *n)
{
    fprintf(stderr, "shardlm: world size %d, %d thread(s) per rank (%s kernels), shard load %.2f s, rank 0 resident "
            "%.1f MiB at exit\n", n->world, n->n_threads, shardlm_kernels_isa(), n->load_s,
            (double)shardlm_rss_bytes() / 1048576.0);
    if (g->prefill_s > 0)
        fprintf(stderr, "shardlm: prompt %d tokens, %.1f tok/s\n", g->n_prompt, g->n_prompt / g->prefill_s);
    if (g->decode_s > 0 && g->n_decoded > 0)
        fprintf(stderr, "shardlm: decode %d tokens, %.1f tok/s\n", g->n_decoded, g->n_decoded / g->decode_s);
    if (g->spec.drafts > 0)
        fprintf(stderr, "shardlm: speculative decoding: %llu of %llu draft tokens accepted (%.3f) in %llu drafts\n",
                (unsigned long long)g->spec.accepted, (unsigned long long)g->spec.draft_tokens,
                (double)g->spec.accepted / (double)g->spec.draft_tokens, (unsigned long long)g->spec.drafts);
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
    g->logits = malloc((size_t)g->vocab * sizeof(float));
    return g->logits ? SHARDLM_OK : SHARDLM_ENOMEM;
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
        if (rc) gen_report_loss(&g, rc);
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
    free(g.logits);
    free(o.prompt_ids);
    shardlm_spec_cli_close(&o.spec);
    return shardlm_exit_code(rc);
}
