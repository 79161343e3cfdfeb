/* cmd_serve.c - `shardlm serve`: rank 0 as an OpenAI-compatible server.
 * It checks the chat template first (a bad one fails at start-up, exit 2),
 * binds the HTTP port (answering 503 "loading" meanwhile), brings the ranks
 * up like `generate` (local workers with --world-size, or RING_CONFIG),
 * then runs the scheduler's engine loop on the main thread until SIGINT or
 * SIGTERM. A lost rank does not end it: the cluster re-forms behind the
 * HTTP server (serve_heal.c). A watcher thread turns a signal into an
 * orderly stop: SIGTERM first drains (no new requests, those in flight
 * finish), SIGINT cancels what is in flight; the engine loop ends, workers
 * are told to shut down. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node.h"
#include "shardlm_auth.h"
#include "scheduler.h"
#include "serve_heal.h"
#include "server.h"
#include "shardlm_text.h"
#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "weights.h"
#include "shardlm_launch.h"
#include "spec_cli.h"

typedef struct {
    shardlm_node_opts node;
    shardlm_server_opts http;
    shardlm_sched_opts sched;
    int world;
    const char *chat_template;
    double failed_grace_s;
    int hb_ms, hb_timeout_ms; /* --heartbeat-ms, --heartbeat-timeout-ms */
    double drain_s;           /* --drain-timeout */
    int no_heal;              /* --no-heal: a lost rank ends serve, as before */
    shardlm_spec_cli spec;
} serve_opts;

/* --api-key-file: read like the cluster token's file (trailing newline
 * dropped, so a mounted Secret works); the copy lives as long as the
 * process (the server keeps its own). */
static int serve_read_key(const char *path, const char **key)
{
    static char buf[4096];
    if (shardlm_auth_read_secret(path, buf, sizeof buf)) {
        fprintf(stderr, "shardlm serve: --api-key-file: %s\n", shardlm_err_get());
        return -1;
    }
    *key = buf;
    return 0;
}

static int serve_flag(void *ctx, const shardlm_flag_value *v)
{
    serve_opts *o = ctx;
    switch (v->flag->id) {
    case F_WORLD: o->world = (int)v->i; return 0;
    case F_HOST: o->http.host = v->str; return 0;
    case F_PORT: o->http.port = (int)v->i; return 0;
    case F_API_KEY: o->http.api_key = v->str; return 0;
    case F_MODEL_NAME: o->http.model_name = v->str; return 0;
    case F_MAX_SEQS: o->sched.max_num_seqs = (int)v->i; return 0;
    case F_MAX_BATCHED: o->sched.max_num_batched_tokens = (int)v->i; return 0;
    case F_MAX_QUEUE: o->sched.max_queue = (int)v->i; return 0;
    case F_BLOCK_SIZE: o->sched.block_size = atoi(v->str); return 0; /* one of 8|16|32, checked */
    case F_KV_MB:
        if (v->d <= 0) {
            fprintf(stderr, "shardlm serve: invalid value '%s' for --kv-cache-mb (above 0)\n", v->str);
            return -1;
        }
        o->sched.kv_cache_mb = v->d;
        return 0;
    case F_NO_PREFIX: o->sched.prefix_caching = 0; return 0;
    case F_CHAT_TEMPLATE: o->chat_template = v->str; return 0;
    case F_MAX_BODY_KB: o->http.max_body_bytes = (size_t)v->i * 1024; return 0;
    case F_REQUEST_TIMEOUT: o->http.request_timeout_s = (double)v->i; return 0;
    case F_API_KEY_FILE: return serve_read_key(v->str, &o->http.api_key);
    case F_MAX_PROMPT: o->http.max_prompt_tokens = (int)v->i; return 0;
    case F_MAX_CONNS: o->http.max_connections = (int)v->i; return 0;
    case F_HTTP_TIMEOUT: o->http.idle_timeout_s = (int)v->i; return 0;
    case F_HTTP_HEADER_TIMEOUT: o->http.header_timeout_s = (int)v->i; return 0;
    case F_MAX_CONNS_PER_IP: o->http.max_connections_per_ip = (int)v->i; return 0;
    case F_HEARTBEAT: o->hb_ms = (int)v->i; return 0;
    case F_HEARTBEAT_TIMEOUT: o->hb_timeout_ms = (int)v->i; return 0;
    case F_DRAIN_TIMEOUT: o->drain_s = (double)v->i; return 0;
    case F_NO_HEAL: o->no_heal = 1; return 0;
    default: return shardlm_spec_cli_apply(&o->spec, v) ? 0 : shardlm_node_flag(&o->node, v, "serve");
    }
}

static int serve_parse(int argc, char **argv, serve_opts *o)
{
    int rc = shardlm_flags_parse("serve", argc, argv, serve_flag, o, NULL);
    if (rc) return rc > 0 ? 1 : SHARDLM_EINPUT;
    const char *wbad = shardlm_weights_flags_check(o->node.model_path, o->node.weights_from, 0);
    if (wbad) {
        fprintf(stderr, "shardlm serve: %s\n", wbad);
        return SHARDLM_EINPUT;
    }
    if (o->hb_timeout_ms <= o->hb_ms) {
        fprintf(stderr, "shardlm serve: --heartbeat-timeout-ms %d must be longer than --heartbeat-ms %d\n",
                o->hb_timeout_ms, o->hb_ms);
        return SHARDLM_EINPUT;
    }
    /* local workers reconnect after a loss, and give up on a silent rank 0 */
    o->node.rejoin = !o->no_heal;
    o->node.idle_timeout_ms = o->hb_timeout_ms + o->hb_ms;
    if (shardlm_spec_cli_check(&o->spec)) {
        fprintf(stderr, "shardlm serve: %s\n", shardlm_err_get());
        return SHARDLM_EINPUT;
    }
    o->node.max_batch = o->sched.max_num_batched_tokens;
    o->node.kv_cache_mb = o->sched.kv_cache_mb;
    o->node.block_size = o->sched.block_size;
    return SHARDLM_OK;
}

/* The model's template, or --chat-template FILE; checked before anything
 * expensive starts. A template the engine cannot parse does not stop the
 * server: completions still work, chat answers 400 with why (*why), and
 * one warning says so now. Only a model or --chat-template file that
 * cannot be read is an input error. */
static int serve_template(const serve_opts *o, shardlm_chat_template **tpl, char *why, size_t why_cap)
{
    shardlm_gguf *g = NULL;
    why[0] = 0;
    int rc = shardlm_gguf_open(o->node.model_path, &g);
    if (!rc && o->chat_template && access(o->chat_template, R_OK)) {
        shardlm_err_set("--chat-template %s: cannot read it: %s", o->chat_template, strerror(errno));
        rc = SHARDLM_EINPUT;
    } else if (!rc) {
        int trc = o->chat_template ? shardlm_chat_template_from_file(o->chat_template, g, tpl)
                                   : shardlm_chat_template_from_gguf(g, tpl);
        if (trc == SHARDLM_EINPUT) {
            snprintf(why, why_cap, "%s", shardlm_err_get());
            fprintf(stderr, "shardlm: warning: the chat template cannot be used (%s); /v1/completions works, "
                    "chat requests get 400\n", why);
        } else if (trc) {
            rc = trc;
        }
    }
    shardlm_gguf_close(g);
    if (!rc && *tpl && shardlm_chat_template_is_default(*tpl))
        fprintf(stderr, "shardlm: %s has no chat template; using the built-in plain-text one\n",
                o->node.model_path);
    if (!rc && *tpl && shardlm_chat_template_unsupported(*tpl))
        fprintf(stderr, "shardlm: warning: the chat template uses an %s; chat requests that reach it get 400\n",
                shardlm_chat_template_unsupported(*tpl));
    return rc;
}

/* ---- signals: the handler only writes to a pipe; the watcher acts ---- */

static int serve_pipe[2] = {-1, -1};
static volatile sig_atomic_t serve_signals;

static void serve_on_signal(int sig)
{
    if (++serve_signals > 1) { /* a second one: stop waiting for an orderly exit */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(serve_pipe[1], &b, 1);
    (void)w;
}

typedef struct {
    shardlm_server *srv;
    shardlm_sched *sched;
    double drain_s;
} serve_watch;

/* SIGTERM: no new requests; waits until those in flight (and queued) are
 * answered, or the drain timeout. */
static void serve_drain(serve_watch *w)
{
    shardlm_sched_stats st;
    shardlm_sched_stats_get(w->sched, &st);
    fprintf(stderr, "shardlm: SIGTERM: draining (new requests get 503; %d running, %d queued; up to %.0f s)\n",
            st.running, st.waiting, w->drain_s);
    shardlm_server_drain(w->srv);
    double t0 = shardlm_now_s();
    for (;;) {
        shardlm_sched_stats_get(w->sched, &st);
        int left = st.running + st.waiting + shardlm_server_in_flight(w->srv);
        if (!left) {
            fprintf(stderr, "shardlm: drained in %.1f s\n", shardlm_now_s() - t0);
            return;
        }
        if (shardlm_now_s() - t0 >= w->drain_s || serve_signals > 1) {
            fprintf(stderr, "shardlm: drain timeout (%.0f s): cancelling %d request(s) still in flight\n", w->drain_s,
                    left);
            return;
        }
        usleep(20000);
    }
}

static void *serve_watcher(void *arg)
{
    serve_watch *w = arg;
    unsigned char b = 0;
    while (read(serve_pipe[0], &b, 1) < 0 && errno == EINTR) {
    }
    if (b == SIGTERM) serve_drain(w);
    else if (b) fprintf(stderr, "shardlm: signal %d: stopping (cancelling requests in flight)\n", b);
    shardlm_server_stop(w->srv); /* while the engine still runs, so cancels complete */
    shardlm_sched_stop(w->sched);
    return NULL;
}

static int serve_signals_install(void)
{
    if (pipe(serve_pipe)) return SHARDLM_ERUNTIME;
    struct sigaction sa = {0};
    sa.sa_handler = serve_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error return, not a death */
    return SHARDLM_OK;
}

/* ---- bring-up ---- */

static int serve_open(serve_opts *o, shardlm_launch **launch, shardlm_node *n)
{
    const char *env_cfg = getenv("RING_CONFIG");
    int rc = SHARDLM_OK;
    if (o->world > 1 && env_cfg) {
        shardlm_err_set("--world-size spawns local workers; with RING_CONFIG set the world size comes from %s",
                        env_cfg);
        return SHARDLM_EINPUT;
    }
    if (o->world > 1) rc = shardlm_node_spawn_local(&o->node, o->world, launch);
    else o->node.ring_config = env_cfg;
    if (!rc) rc = shardlm_node_open(&o->node, n);
    if (!rc && n->rank != 0) {
        shardlm_err_set("%s: field 'rank': serve runs as rank 0; other ranks run `shardlm worker`",
                        o->node.ring_config);
        rc = SHARDLM_EINPUT;
    }
    if (!rc) rc = shardlm_node_report_memory(n, "loaded");
    return rc;
}

/* The default model name: the file name without directories and .gguf. */
static void serve_model_name(serve_opts *o, char *buf, size_t cap)
{
    if (o->http.model_name) return;
    const char *base = strrchr(o->node.model_path, '/');
    base = base ? base + 1 : o->node.model_path;
    size_t len = strlen(base);
    if (len > 5 && !strcmp(base + len - 5, ".gguf")) len -= 5;
    snprintf(buf, cap, "%.*s", (int)len, base);
    o->http.model_name = buf;
}

/* Runs the engine loop until a stop; after an engine failure, keeps
 * answering 503 for a short grace so clients and probes can see why. */
static int serve_run(serve_opts *o, shardlm_server *srv, shardlm_sched *s, pthread_t *watcher)
{
    serve_watch w = {srv, s, o->drain_s};
    if (pthread_create(watcher, NULL, serve_watcher, &w)) return SHARDLM_ERUNTIME;
    int rc = shardlm_sched_run(s);
    if (rc) {
        fprintf(stderr, "shardlm: the engine failed: %s\n", shardlm_err_get());
        shardlm_server_set_failed(srv, shardlm_err_get());
        for (int i = 0; i < (int)(o->failed_grace_s * 10) && !serve_signals; i++) usleep(100000);
    }
    unsigned char b = 0;
    if (!serve_signals && write(serve_pipe[1], &b, 1) != 1) rc = rc ? rc : SHARDLM_ERUNTIME;
    pthread_join(*watcher, NULL);
    return rc;
}

static int serve_main(serve_opts *o, shardlm_launch **launch, shardlm_node *n, shardlm_chat_template *tpl)
{
    char name[256];
    serve_model_name(o, name, sizeof name);
    shardlm_server *srv = NULL;
    shardlm_sched *s = NULL;
    int rc = shardlm_server_start(&o->http, NULL, NULL, NULL, &srv);
    if (rc) return rc;
    fprintf(stderr, "shardlm: listening on http://%s:%d (model \"%s\"; loading)\n",
            o->http.host ? o->http.host : "127.0.0.1", shardlm_server_port(srv), o->http.model_name);
    rc = serve_open(o, launch, n);
    if (!rc) rc = shardlm_spec_cli_open(&o->spec, n, o->node.model_path);
    o->sched.spec = o->spec.spec;
    if (!rc) rc = shardlm_sched_new(n->engine, n->tok, &o->sched, &s);
    if (rc) {
        shardlm_server_stop(srv);
        return rc;
    }
    fprintf(stderr, "shardlm: KV pool: %d blocks x %d tokens = %d tokens (%.1f MiB per rank); context %d; "
            "prefix cache %s\n", n->kv_blocks, n->block_size, n->kv_blocks * n->block_size, o->sched.kv_cache_mb,
            shardlm_engine_n_ctx(n->engine), o->sched.prefix_caching ? "on" : "off");
    char spec[512];
    shardlm_spec_cli_describe(&o->spec, spec, sizeof spec);
    fprintf(stderr, "shardlm: speculative decoding: %s\n", spec);
    shardlm_server_set_n_ctx(srv, shardlm_engine_n_ctx(n->engine));
    shardlm_server_attach(srv, s, n->tok, tpl);
    shardlm_serve_heal_ctx heal = {&o->node, n, *launch, 10000, NULL};
    shardlm_sched_set_heartbeat(s, o->hb_ms);
    shardlm_engine_set_heartbeat_timeout(n->engine, o->hb_timeout_ms);
    if (n->world > 1 && !o->no_heal && !n->mpi && !strcmp(n->comm_kind, "ring")) {
        if (!*launch) heal.attempt_ms = o->node.connect_timeout_ms;
        shardlm_sched_set_heal(s, shardlm_serve_heal, &heal);
        fprintf(stderr, "shardlm: supervision: a lost rank fails the requests in flight, then the cluster re-forms "
                "(%s; heartbeat every %d ms, lost after %d ms)\n",
                *launch ? "local workers are restarted" : "workers come back through their supervisor", o->hb_ms,
                o->hb_timeout_ms);
    }
    const char *tools = shardlm_server_tool_format(srv);
    fprintf(stderr, "shardlm: tool calls: %s%s\n", tools,
            strcmp(tools, "none") ? " format (from the chat template)"
                                  : " (the chat template renders no tool-call format; tool_choice must be \"none\")");
    fprintf(stderr, "shardlm: ready on http://%s:%d\n", o->http.host ? o->http.host : "127.0.0.1",
            shardlm_server_port(srv));
    pthread_t watcher;
    if (!(rc = serve_signals_install())) rc = serve_run(o, srv, s, &watcher); /* the watcher stops srv */
    else shardlm_server_stop(srv);
    shardlm_sched_free(s);
    return rc;
}

int shardlm_cmd_serve(int argc, char **argv)
{
    serve_opts o = {.node = {.timeout_ms = 30000, .connect_timeout_ms = 60000, .load_timeout_ms = 600000,
                             .isq = -1},
                    .http = {.port = 8080},
                    .sched = {.max_num_seqs = 32, .max_num_batched_tokens = 512, .max_queue = 256,
                              .block_size = 16, .kv_cache_mb = 256, .prefix_caching = 1},
                    .world = 1, .failed_grace_s = 5, .hb_ms = 2000, .hb_timeout_ms = 10000, .drain_s = 30};
    shardlm_spec_cli_init(&o.spec);
    int rc = serve_parse(argc, argv, &o);
    if (rc == 1) return 0;
    if (rc) return 2;
    int code = shardlm_node_mpi_dispatch(&o.node, o.world, "serve");
    if (code >= 0) return code;
    shardlm_chat_template *tpl = NULL;
    char tpl_why[1024];
    if ((rc = serve_template(&o, &tpl, tpl_why, sizeof tpl_why))) {
        fprintf(stderr, "shardlm: %s\n", shardlm_err_get());
        return shardlm_exit_code(rc);
    }
    if (tpl_why[0]) o.http.chat_template_error = tpl_why;
    shardlm_launch *launch = NULL;
    shardlm_node n = {0};
    rc = serve_main(&o, &launch, &n, tpl);
    if (rc) fprintf(stderr, "shardlm: %s\n", shardlm_err_get());
    if (n.engine) shardlm_engine_shutdown(n.engine, rc ? "rank 0 failed" : "server stopped");
    shardlm_node_close(&n);
    if (launch) {
        if (rc) shardlm_launch_kill(launch, SIGTERM);
        if (shardlm_launch_wait(launch, 5000) && !rc) rc = SHARDLM_ERUNTIME;
        shardlm_launch_free(launch);
    }
    shardlm_chat_template_free(tpl);
    shardlm_spec_cli_close(&o.spec);
    return shardlm_exit_code(rc);
}
