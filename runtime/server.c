/* server.c - the HTTP daemon: binding, routing, the API key, request
 * bodies (capped), and the small endpoints (/v1/models, /health,
 * /metrics). Completions are handed to server_call.c once their body is in.
 *
 * libmicrohttpd runs one thread per connection, so a call may block on its
 * queue (JSON answers) or in its stream's reader without holding up other
 * clients; MHD's connection limit bounds the threads, and the request
 * deadline (server_deadline.c) how long a slow client may hold one. */
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server_internal.h"
#include "shardlm_common.h"

#define DEFAULT_MAX_BODY (1u << 20)
#define DEFAULT_HEADER_TIMEOUT 10

enum { R_NONE = 0, R_COMPLETIONS, R_CHAT, R_MODELS, R_HEALTH, R_METRICS, R_APPLY_TEMPLATE, R_TOKENIZE, R_DETOKENIZE };

/* Per HTTP request (MHD's con_cls). */
typedef struct {
    int route;
    char *body;
    size_t len, cap;
    size_t dropped; /* bytes discarded after the body went over the limit */
    srv_call *call;
} srv_conn;

static const struct {
    const char *path;
    int route;
    const char *method;
} routes[] = {
    {"/v1/completions", R_COMPLETIONS, "POST"}, {"/v1/chat/completions", R_CHAT, "POST"},
    {"/v1/models", R_MODELS, "GET"},           {"/health", R_HEALTH, "GET"},
    {"/metrics", R_METRICS, "GET"},           {"/apply-template", R_APPLY_TEMPLATE, "POST"},
    {"/tokenize", R_TOKENIZE, "POST"},        {"/detokenize", R_DETOKENIZE, "POST"},
};

/* ---- responses ---- */

enum MHD_Result srv_respond(shardlm_server *srv, struct MHD_Connection *conn, int status, const char *type,
                            const char *body)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    enum MHD_Result res = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    srv_metrics_http(&srv->m, status);
    return res;
}

enum MHD_Result srv_respond_err(shardlm_server *srv, struct MHD_Connection *conn, const shardlm_server_err *e)
{
    char *body = shardlm_server_err_json(e);
    if (!body) return MHD_NO;
    enum MHD_Result res = srv_respond(srv, conn, e->status, "application/json", body);
    free(body);
    return res;
}

static enum MHD_Result respond_simple(shardlm_server *srv, struct MHD_Connection *conn, int status,
                                      const char *type, const char *code, const char *msg)
{
    shardlm_server_err e;
    shardlm_server_err_set(&e, status, type, code, NULL, "%s", msg);
    return srv_respond_err(srv, conn, &e);
}

/* ---- the small endpoints ---- */

static int phase_of(shardlm_server *srv)
{
    return atomic_load_explicit(&srv->phase, memory_order_acquire);
}

static enum MHD_Result serve_health(shardlm_server *srv, struct MHD_Connection *conn)
{
    int phase = phase_of(srv);
    char body[700];
    if (atomic_load(&srv->draining)) {
        snprintf(body, sizeof body, "{\"status\":\"draining\",\"reason\":\"stopping: requests in flight finish, "
                 "new ones are refused\"}");
    } else if (phase == SRV_READY) {
        shardlm_sched_stats st;
        shardlm_sched_stats_get(srv->sched, &st);
        if (st.healthy) return srv_respond(srv, conn, 200, "application/json", "{\"status\":\"ok\"}");
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "status", st.healing ? "healing" : "failed");
        cJSON_AddStringToObject(o, "reason", st.reason[0] ? st.reason : "the engine failed (a rank was lost)");
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        snprintf(body, sizeof body, "%s", s ? s : "{\"status\":\"failed\"}");
        free(s);
    } else if (phase == SRV_LOADING) {
        snprintf(body, sizeof body, "{\"status\":\"loading\",\"reason\":\"the model is loading\"}");
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "status", "failed");
        cJSON_AddStringToObject(o, "reason", srv->failed_why);
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        snprintf(body, sizeof body, "%s", s ? s : "{\"status\":\"failed\"}");
        free(s);
    }
    return srv_respond(srv, conn, 503, "application/json", body);
}

static enum MHD_Result serve_metrics(shardlm_server *srv, struct MHD_Connection *conn)
{
    shardlm_sched_stats st;
    int ready = phase_of(srv) != SRV_LOADING && srv->sched;
    if (ready) shardlm_sched_stats_get(srv->sched, &st);
    srv_metrics_header_timeouts(&srv->m, srv_deadline_cut_total(&srv->dl));
    char *text = srv_metrics_render(&srv->m, ready ? &st : NULL, srv->model);
    if (!text) return MHD_NO;
    enum MHD_Result res = srv_respond(srv, conn, 200, "text/plain; version=0.0.4; charset=utf-8", text);
    free(text);
    return res;
}

static enum MHD_Result serve_models(shardlm_server *srv, struct MHD_Connection *conn)
{
    char *body = srv_body_models(srv->model, srv->started);
    if (!body) return MHD_NO;
    enum MHD_Result res = srv_respond(srv, conn, 200, "application/json", body);
    free(body);
    return res;
}

/* ---- routing and checks before the body ---- */

/* 0: routed (*route set); else the status to answer (404 or 405). */
static int route_of(const char *url, const char *method, int *route)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path)) continue;
        int get = !strcmp(routes[i].method, "GET");
        if (strcmp(method, routes[i].method) && !(get && !strcmp(method, "HEAD"))) return 405;
        *route = routes[i].route;
        return 0;
    }
    return 404;
}

/* Compares without an early exit, so timing does not reveal the key. */
static int key_ok(const shardlm_server *srv, struct MHD_Connection *conn)
{
    if (!srv->api_key) return 1;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7)) return 0;
    h += 7;
    size_t n = strlen(srv->api_key), m = strlen(h);
    unsigned diff = n != m;
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)srv->api_key[i] ^ (unsigned char)(i < m ? h[i] : 0);
    return !diff;
}

/* The first call of a request: route, key, method, declared length. A
 * non-zero return means a response has been queued (or must close). */
static int first_call(shardlm_server *srv, struct MHD_Connection *conn, const char *url, const char *method,
                      srv_conn *sc, enum MHD_Result *res)
{
    int st = route_of(url, method, &sc->route);
    char msg[256];
    if (st) {
        snprintf(msg, sizeof msg, st == 404 ? "no such endpoint: %.100s" : "method %.16s is not allowed on %.100s",
                 st == 404 ? url : method, url);
        *res = respond_simple(srv, conn, st, "invalid_request_error", st == 404 ? "not_found" : "method_not_allowed",
                              msg);
        return 1;
    }
    if ((!strncmp(url, "/v1/", 4) || sc->route >= R_APPLY_TEMPLATE) && !key_ok(srv, conn)) {
        *res = respond_simple(srv, conn, 401, "invalid_request_error", "invalid_api_key",
                              "a valid API key is required: send Authorization: Bearer KEY");
        return 1;
    }
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > srv->max_body) {
        snprintf(msg, sizeof msg, "the body is %.20s bytes; the limit is %zu", cl, srv->max_body);
        *res = respond_simple(srv, conn, 413, "invalid_request_error", "request_too_large", msg);
        return 1;
    }
    return 0;
}

/* Appends upload data, or discards it once over the limit (the 413 comes
 * when the body has been read: MHD cannot answer in the middle of one).
 * Returns 0, or -1 to drop a client that keeps sending far too much. */
static int take_body(shardlm_server *srv, srv_conn *sc, const char *data, size_t n)
{
    if (sc->dropped || sc->len + n > srv->max_body) {
        sc->dropped += n;
        return sc->dropped > 64 * srv->max_body ? -1 : 0;
    }
    if (sc->len + n + 1 > sc->cap) {
        size_t cap = (sc->len + n + 1) * 2;
        if (cap > srv->max_body + 1) cap = srv->max_body + 1;
        char *b = realloc(sc->body, cap);
        if (!b) return -1;
        sc->body = b;
        sc->cap = cap;
    }
    memcpy(sc->body + sc->len, data, n);
    sc->len += n;
    return 0;
}

/* Chat needs a template; one that could not be loaded was reported at
 * start-up, and every chat request is told why. */
static enum MHD_Result no_template(shardlm_server *srv, struct MHD_Connection *conn)
{
    shardlm_server_err e;
    shardlm_server_err_set(&e, 400, "invalid_request_error", "chat_template_unusable", "messages",
                           "chat is unavailable: the chat template cannot be used (%.900s); /v1/completions works",
                           srv->tpl_error ? srv->tpl_error : "none was loaded");
    return srv_respond_err(srv, conn, &e);
}

/* /apply-template, /tokenize, /detokenize: answered on this thread. */
static enum MHD_Result serve_text(shardlm_server *srv, struct MHD_Connection *conn, int route, const char *body,
                                  size_t len)
{
    shardlm_server_err e;
    memset(&e, 0, sizeof e);
    if (route == R_APPLY_TEMPLATE && !srv->tpl) return no_template(srv, conn);
    char *out = route == R_APPLY_TEMPLATE ? shardlm_server_apply_template(body, len, srv->tok, srv->tpl, &e)
              : route == R_TOKENIZE       ? shardlm_server_tokenize(body, len, srv->tok, srv->tpl, srv->n_ctx, &e)
                                          : shardlm_server_detokenize(body, len, srv->tok, &e);
    if (!out) {
        if (!e.status) shardlm_server_err_set(&e, 500, "server_error", NULL, NULL, "out of memory");
        return srv_respond_err(srv, conn, &e);
    }
    enum MHD_Result res = srv_respond(srv, conn, 200, "application/json", out);
    free(out);
    return res;
}

static enum MHD_Result serve_post(shardlm_server *srv, struct MHD_Connection *conn, srv_conn *sc)
{
    if (sc->dropped) {
        char msg[128];
        snprintf(msg, sizeof msg, "the body is over the limit of %zu bytes", srv->max_body);
        return respond_simple(srv, conn, 413, "invalid_request_error", "request_too_large", msg);
    }
    int phase = phase_of(srv);
    if (atomic_load(&srv->stopping))
        return respond_simple(srv, conn, 503, "server_error", "shutting_down", "the server is shutting down");
    if (atomic_load(&srv->draining))
        return respond_simple(srv, conn, 503, "server_error", "shutting_down",
                              "the server is draining (SIGTERM): requests in flight finish, new ones are refused");
    if (phase == SRV_LOADING)
        return respond_simple(srv, conn, 503, "server_error", "model_loading", "the model is loading; retry later");
    if (phase == SRV_FAILED) {
        char msg[600];
        snprintf(msg, sizeof msg, "the engine failed: %s", srv->failed_why);
        return respond_simple(srv, conn, 503, "server_error", "engine_unavailable", msg);
    }
    const char *body = sc->body ? sc->body : "";
    if (sc->route >= R_APPLY_TEMPLATE) return serve_text(srv, conn, sc->route, body, sc->len);
    if (sc->route == R_CHAT && !srv->tpl) return no_template(srv, conn);
    return srv_call_handle(srv, conn, sc->route == R_CHAT ? SHARDLM_API_CHAT : SHARDLM_API_COMPLETIONS, body,
                           sc->len, &sc->call);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *data, size_t *data_size, void **con_cls)
{
    shardlm_server *srv = cls;
    srv_conn *sc = *con_cls;
    (void)version;
    if (!sc) {
        if (!(sc = calloc(1, sizeof *sc))) return MHD_NO;
        *con_cls = sc;
        enum MHD_Result res;
        int refused = first_call(srv, conn, url, method, sc, &res);
        int bodiless = sc->route == R_HEALTH || sc->route == R_METRICS || sc->route == R_MODELS;
        if (refused || bodiless) srv_deadline_request_in(conn); /* a POST's body is still to come */
        if (refused) return res;
        if (sc->route == R_HEALTH) return serve_health(srv, conn);
        if (sc->route == R_METRICS) return serve_metrics(srv, conn);
        if (sc->route == R_MODELS) return serve_models(srv, conn);
        return MHD_YES; /* a POST: its body comes next */
    }
    if (*data_size) {
        int r = take_body(srv, sc, data, *data_size);
        *data_size = 0;
        return r ? MHD_NO : MHD_YES;
    }
    srv_deadline_request_in(conn);
    return serve_post(srv, conn, sc);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    srv_conn *sc = *con_cls;
    (void)cls;
    (void)toe; /* any unfinished choice is cancelled, whatever ended the request */
    srv_deadline_response_done(conn); /* keep-alive: the next request has the same deadline */
    if (!sc) return;
    srv_call_completed(sc->call);
    free(sc->body);
    free(sc);
    *con_cls = NULL;
}

/* ---- start/stop ---- */

static int resolve(const char *host, int port, struct sockaddr_storage *ss, int *v6)
{
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc) {
        shardlm_err_set("--host %s: not a numeric IPv4 or IPv6 address (%s)", host, gai_strerror(rc));
        return SHARDLM_EINPUT;
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    return SHARDLM_OK;
}

/* Model names go into JSON (escaped there) and Prometheus labels (not):
 * keep label-breaking characters out. */
static char *label_safe(const char *s)
{
    char *t = strdup(s ? s : "shardlm");
    for (char *p = t; p && *p; p++)
        if (*p == '"' || *p == '\\' || *p == '\n') *p = '_';
    return t;
}

/* One thread and one descriptor per connection: make sure the descriptor
 * limit is not what refuses connections first, and say so if it must be. */
static void server_raise_nofile(unsigned conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    rlim_t want = (rlim_t)conns + 256;
    if (rl.rlim_cur >= want) return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want)
        fprintf(stderr, "shardlm: warning: the descriptor limit (%llu, ulimit -n) is below --max-connections %u + 256\n",
                (unsigned long long)rl.rlim_cur, conns);
}

static int server_fields(shardlm_server *srv, const shardlm_server_opts *o)
{
    const char *key = o->api_key ? o->api_key : getenv("SHARDLM_API_KEY");
    srv->host = strdup(o->host ? o->host : "127.0.0.1");
    srv->model = label_safe(o->model_name);
    srv->api_key = key && key[0] ? strdup(key) : NULL;
    srv->tpl_error = o->chat_template_error ? strdup(o->chat_template_error) : NULL;
    srv->max_body = o->max_body_bytes ? o->max_body_bytes : DEFAULT_MAX_BODY;
    srv->timeout_s = o->request_timeout_s > 0 ? o->request_timeout_s : 600;
    srv->header_timeout_s = o->header_timeout_s > 0 ? o->header_timeout_s : DEFAULT_HEADER_TIMEOUT;
    srv->max_prompt = o->max_prompt_tokens > 0 ? o->max_prompt_tokens : 0;
    srv->started = (long)time(NULL);
    if (!srv->host || !srv->model || (key && key[0] && !srv->api_key)) return SHARDLM_ENOMEM;
    return SHARDLM_OK;
}

static void server_free(shardlm_server *srv)
{
    srv_deadline_stop(&srv->dl);
    srv_metrics_destroy(&srv->m);
    pthread_mutex_destroy(&srv->calls_mu);
    free(srv->host);
    free(srv->model);
    free(srv->api_key);
    free(srv->tpl_error);
    free(srv);
}

int shardlm_server_start(const shardlm_server_opts *o, shardlm_sched *s, const shardlm_tokenizer *tok,
                         const shardlm_chat_template *tpl, shardlm_server **out)
{
    shardlm_server *srv = calloc(1, sizeof *srv);
    if (!srv) return SHARDLM_ENOMEM;
    srv_metrics_init(&srv->m);
    pthread_mutex_init(&srv->calls_mu, NULL);
    struct sockaddr_storage ss;
    int v6 = 0, rc = server_fields(srv, o);
    if (!rc) rc = resolve(srv->host, o->port, &ss, &v6);
    if (!rc) rc = srv_deadline_start(&srv->dl, srv->header_timeout_s);
    if (rc) {
        server_free(srv);
        return rc;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                     (v6 ? MHD_USE_IPv6 : 0);
    unsigned limit = o->max_connections > 0 ? (unsigned)o->max_connections : 4096;
    server_raise_nofile(limit);
    /* by default a connection may stay silent as long as a request may wait
     * on the engine (plus slack), so a slow non-streamed answer is not cut */
    unsigned idle = o->idle_timeout_s > 0 ? (unsigned)o->idle_timeout_s : (unsigned)srv->timeout_s + 30;
    srv->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_access, srv, MHD_OPTION_SOCK_ADDR, &ss,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_LIMIT, limit,
                              MHD_OPTION_CONNECTION_TIMEOUT, idle, MHD_OPTION_NOTIFY_CONNECTION,
                              srv_deadline_notify, &srv->dl, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                              (unsigned)(o->max_connections_per_ip > 0 ? o->max_connections_per_ip : 0),
                              MHD_OPTION_END);
    if (!srv->d) {
        shardlm_err_set("cannot listen on %s:%d (in use, or not an address of this machine)", srv->host, o->port);
        server_free(srv);
        return SHARDLM_EINPUT;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di ? di->port : o->port;
    if (s && tok) shardlm_server_attach(srv, s, tok, tpl);
    *out = srv;
    return SHARDLM_OK;
}

void shardlm_server_attach(shardlm_server *srv, shardlm_sched *s, const shardlm_tokenizer *tok,
                           const shardlm_chat_template *tpl)
{
    srv->sched = s;
    srv->tok = tok;
    srv->tpl = tpl;
    srv->tool_format = shardlm_toolfmt_detect(tpl);
    atomic_store_explicit(&srv->phase, SRV_READY, memory_order_release);
}

void shardlm_server_set_n_ctx(shardlm_server *srv, int n_ctx) { srv->n_ctx = n_ctx; }

const char *shardlm_server_tool_format(const shardlm_server *srv) { return shardlm_toolfmt_name(srv->tool_format); }

void shardlm_server_set_failed(shardlm_server *srv, const char *why)
{
    if (atomic_load(&srv->phase) == SRV_FAILED) return;
    snprintf(srv->failed_why, sizeof srv->failed_why, "%s", why ? why : "the engine failed");
    atomic_store_explicit(&srv->phase, SRV_FAILED, memory_order_release);
}

void shardlm_server_drain(shardlm_server *srv) { atomic_store(&srv->draining, 1); }

int shardlm_server_port(const shardlm_server *srv)
{
    return srv->port;
}

void shardlm_server_stop(shardlm_server *srv)
{
    if (!srv) return;
    atomic_store(&srv->stopping, 1);
    if (srv->sched) srv_calls_cancel_all(srv);
    MHD_stop_daemon(srv->d); /* closes connections and joins their threads */
    server_free(srv);
}
