/* server_call.c - one completion call: n scheduler requests, the event
 * queue their callbacks fill on the engine thread, and the HTTP thread
 * that drains it into a JSON answer or an SSE stream.
 *
 * Lifetime: a call holds one reference for the HTTP side (dropped when
 * MHD reports the request complete) and one per submitted choice (dropped
 * by its on_end, which the scheduler calls exactly once). Whoever drops the
 * last one frees it, so neither side can outlive the other's pointers.
 * Waits are sliced (100 ms) so the HTTP thread also notices a client that
 * hung up, a server that stops, and its deadline. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server_internal.h"
#include "shardlm_common.h"

#define SLICE_NS 100000000L

typedef struct {
    srv_call *call;
    int choice;
} srv_slot;

struct srv_call {
    shardlm_server *srv;
    srv_call_info ci;
    struct MHD_Connection *conn;
    int fd;
    int stream;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_event *head, *tail;
    int refs;
    int n_ended;
    int ended[SHARDLM_SERVER_MAX_N];
    int submitted[SHARDLM_SERVER_MAX_N];
    uint64_t ids[SHARDLM_SERVER_MAX_N];
    srv_slot slots[SHARDLM_SERVER_MAX_N];
    int prompt_tokens, completion_tokens, cached_tokens;
    int any_error;
    char (*tool_names)[SHARDLM_TOOL_NAME_MAX + 1]; /* chat with tools: what ci.tool_names points at */
    const char **tool_name_ptrs;
    srv_stream_choice sc[SHARDLM_SERVER_MAX_N];
    /* engine thread only: latency bookkeeping */
    double t0, t_last[SHARDLM_SERVER_MAX_N];
    int n_tok[SHARDLM_SERVER_MAX_N];
    /* stream output: the SSE text not yet handed to MHD */
    char *pend;
    size_t pend_len, pend_off;
    int roles_sent, finished;
    double last_event;
    srv_call *prev, *next; /* the server's list of calls in flight */
};

/* ---- engine-thread callbacks ---- */

static srv_event *event_new(int choice, const char *text, size_t len)
{
    srv_event *ev = calloc(1, sizeof *ev + len + 1);
    if (!ev) return NULL;
    ev->choice = choice;
    ev->len = len;
    if (len) memcpy(ev->text, text, len);
    return ev;
}

static void push_locked(srv_call *c, srv_event *ev)
{
    if (c->tail) c->tail->next = ev;
    else c->head = ev;
    c->tail = ev;
    pthread_cond_broadcast(&c->cv);
}

static void call_free(srv_call *c)
{
    for (srv_event *ev = c->head, *n; ev; ev = n) {
        n = ev->next;
        free(ev);
    }
    free(c->pend);
    for (int i = 0; i < SHARDLM_SERVER_MAX_N; i++) shardlm_toolparse_free(c->sc[i].tp);
    free(c->tool_names);
    free(c->tool_name_ptrs);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

/* Drops one reference; frees on the last. */
static void call_unref(srv_call *c)
{
    pthread_mutex_lock(&c->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) call_free(c);
}

static void on_token(void *ctx, const char *text, size_t len, int32_t token, const shardlm_logprobs *lp)
{
    srv_slot *sl = ctx;
    srv_call *c = sl->call;
    int i = sl->choice;
    double now = shardlm_now_s();
    srv_metrics *m = &c->srv->m;
    srv_metrics_observe(m, c->n_tok[i] ? &m->itl : &m->ttft, now - (c->n_tok[i] ? c->t_last[i] : c->t0));
    c->t_last[i] = now;
    c->n_tok[i]++;
    srv_event *ev = event_new(i, text, len);
    if (!ev) return; /* out of memory: the text is lost, the end still comes */
    ev->token = token;
    if (lp && c->ci.logprobs) {
        ev->has_lp = 1;
        ev->lp = *lp;
    }
    pthread_mutex_lock(&c->mu);
    push_locked(c, ev);
    pthread_mutex_unlock(&c->mu);
}

/* The prefix cache's share of the prompt, as choice 0 found it. */
static void on_admit(void *ctx, int cached_tokens)
{
    srv_slot *sl = ctx;
    if (sl->choice) return;
    pthread_mutex_lock(&sl->call->mu);
    sl->call->cached_tokens = cached_tokens;
    pthread_mutex_unlock(&sl->call->mu);
}

static void on_end(void *ctx, shardlm_finish_reason why, int prompt_tokens, int completion_tokens)
{
    srv_slot *sl = ctx;
    srv_call *c = sl->call;
    srv_metrics_observe(&c->srv->m, &c->srv->m.e2e, shardlm_now_s() - c->t0);
    srv_metrics_finished(&c->srv->m, why);
    srv_event *ev = event_new(sl->choice, NULL, 0);
    pthread_mutex_lock(&c->mu);
    c->ended[sl->choice] = 1;
    c->n_ended++;
    if (sl->choice == 0 || !c->prompt_tokens) c->prompt_tokens = prompt_tokens; /* the same prompt for all */
    c->completion_tokens += completion_tokens;
    if (why == SHARDLM_FINISH_ERROR || why == SHARDLM_FINISH_CANCELLED) c->any_error = 1;
    if (ev) {
        ev->is_end = 1;
        ev->why = why;
        push_locked(c, ev);
    }
    pthread_cond_broadcast(&c->cv);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last) call_free(c);
}

/* ---- submitting ---- */

static void cancel_unfinished(srv_call *c)
{
    uint64_t ids[SHARDLM_SERVER_MAX_N];
    int n = 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->ci.n; i++)
        if (c->submitted[i] && !c->ended[i]) ids[n++] = c->ids[i];
    pthread_mutex_unlock(&c->mu);
    /* outside the lock: cancel may run on_end right here */
    for (int i = 0; i < n; i++) shardlm_sched_cancel(c->srv->sched, ids[i]);
}

/* The failure reason, read only once the phase says it was written. */
static const char *failed_why(shardlm_server *srv, const char *otherwise)
{
    if (atomic_load_explicit(&srv->phase, memory_order_acquire) == SRV_FAILED) return srv->failed_why;
    return otherwise;
}

static void submit_error(shardlm_server *srv, int rc, const shardlm_server_req *r, shardlm_server_err *e)
{
    const char *param = r->kind == SHARDLM_API_CHAT ? "messages" : "prompt";
    if (rc == SHARDLM_EINPUT)
        shardlm_server_err_set(e, 400, "invalid_request_error", "context_length_exceeded", param, "%s",
                               shardlm_err_get());
    else if (rc == SHARDLM_EBUSY)
        shardlm_server_err_set(e, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                               "the wait queue is full (--max-queue); retry later");
    else
        shardlm_server_err_set(e, 503, "server_error", "engine_unavailable", NULL, "the engine is not running: %s",
                               failed_why(srv, shardlm_err_get()));
}

/* Submits every choice; on a failure cancels those already in. */
static int submit_all(srv_call *c, const shardlm_server_req *r, const int32_t *ids, int n_ids,
                      shardlm_server_err *e)
{
    shardlm_request_desc d = {.prompt = ids,
                              .n_prompt = n_ids,
                              .params = r->params,
                              .max_tokens = r->max_tokens,
                              .stop = (const char *const *)r->stop,
                              .n_stop = r->n_stop,
                              .grammar = r->grammar,
                              .triggers = r->triggers,
                              .n_triggers = r->n_triggers,
                              .as_text = r->as_text,
                              .n_as_text = r->n_as_text,
                              .min_tokens = r->min_tokens,
                              .stop_token_ids = r->stop_ids,
                              .n_stop_token_ids = r->n_stop_ids,
                              .ignore_eos = r->ignore_eos};
    for (int i = 0; i < c->ci.n; i++) {
        d.choice = (uint32_t)i;
        shardlm_request_cb cb = {.on_token = on_token, .on_end = on_end, .ctx = &c->slots[i], .on_admit = on_admit};
        pthread_mutex_lock(&c->mu);
        c->refs++; /* before submit: on_end may come before submit returns */
        pthread_mutex_unlock(&c->mu);
        uint64_t id = 0;
        int rc = shardlm_sched_submit(c->srv->sched, &d, cb, &id);
        pthread_mutex_lock(&c->mu);
        if (rc) c->refs--;
        else c->ids[i] = id, c->submitted[i] = 1;
        pthread_mutex_unlock(&c->mu);
        if (rc) {
            submit_error(c->srv, rc, r, e);
            cancel_unfinished(c);
            return rc;
        }
    }
    return SHARDLM_OK;
}

static void list_add(shardlm_server *srv, srv_call *c)
{
    pthread_mutex_lock(&srv->calls_mu);
    c->next = srv->calls;
    if (srv->calls) srv->calls->prev = c;
    srv->calls = c;
    pthread_mutex_unlock(&srv->calls_mu);
}

static void list_remove(shardlm_server *srv, srv_call *c)
{
    pthread_mutex_lock(&srv->calls_mu);
    if (c->prev) c->prev->next = c->next;
    else srv->calls = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    pthread_mutex_unlock(&srv->calls_mu);
}

void srv_calls_cancel_all(shardlm_server *srv)
{
    /* cancel cannot be called under calls_mu (on_end may free a call that
     * is being removed), so collect ids first; bounded by a fixed batch */
    for (int round = 0; round < 1024; round++) {
        uint64_t ids[256];
        int n = 0;
        pthread_mutex_lock(&srv->calls_mu);
        for (srv_call *c = srv->calls; c && n + SHARDLM_SERVER_MAX_N <= 256; c = c->next) {
            pthread_mutex_lock(&c->mu);
            for (int i = 0; i < c->ci.n; i++)
                if (c->submitted[i] && !c->ended[i]) ids[n++] = c->ids[i];
            pthread_mutex_unlock(&c->mu);
        }
        pthread_mutex_unlock(&srv->calls_mu);
        if (!n) return;
        for (int i = 0; i < n; i++) shardlm_sched_cancel(srv->sched, ids[i]);
        if (n < 256 - SHARDLM_SERVER_MAX_N) return;
    }
}

void srv_call_completed(srv_call *c)
{
    if (!c) return;
    cancel_unfinished(c);
    list_remove(c->srv, c);
    call_unref(c);
}

/* ---- waiting ---- */

static int client_gone(int fd)
{
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

enum { WAIT_OK = 0, WAIT_TIMEOUT, WAIT_GONE, WAIT_STOPPING };

/* Waits, with c->mu held, until an event is queued or every choice ended. */
static int wait_locked(srv_call *c, double deadline)
{
    while (!c->head && c->n_ended < c->ci.n) {
        if (shardlm_now_s() > deadline) return WAIT_TIMEOUT;
        if (atomic_load(&c->srv->stopping)) return WAIT_STOPPING;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += SLICE_NS;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
        if (!c->head && client_gone(c->fd)) return WAIT_GONE;
    }
    return WAIT_OK;
}

static srv_event *pop_locked(srv_call *c)
{
    srv_event *ev = c->head;
    if (ev && !(c->head = ev->next)) c->tail = NULL;
    return ev;
}

static void wait_error(srv_call *c, int w, shardlm_server_err *e)
{
    if (w == WAIT_TIMEOUT)
        shardlm_server_err_set(e, 504, "server_error", "timeout", NULL,
                               "no answer from the engine within %.0f s", c->srv->timeout_s);
    else if (w == WAIT_STOPPING)
        shardlm_server_err_set(e, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
    else
        shardlm_server_err_set(e, 503, "server_error", "engine_unavailable", NULL, "the engine failed: %s",
                               failed_why(c->srv, "a rank was lost"));
}

/* ---- answering ---- */

static enum MHD_Result answer_json(srv_call *c)
{
    srv_choice ch[SHARDLM_SERVER_MAX_N] = {0};
    double deadline = c->t0 + c->srv->timeout_s;
    int w = WAIT_OK, failed = 0;
    pthread_mutex_lock(&c->mu);
    while (w == WAIT_OK) {
        w = wait_locked(c, deadline);
        srv_event *ev;
        while ((ev = pop_locked(c))) {
            if (ev->is_end && ev->why != SHARDLM_FINISH_STOP && ev->why != SHARDLM_FINISH_LENGTH) failed = 1;
            if (srv_choice_add(&c->ci, &ch[ev->choice], ev)) failed = 1;
            free(ev);
        }
        if (w == WAIT_OK && c->n_ended == c->ci.n) break;
    }
    srv_usage u = {c->prompt_tokens, c->completion_tokens, c->cached_tokens};
    pthread_mutex_unlock(&c->mu);
    enum MHD_Result res;
    if (w == WAIT_GONE) {
        res = MHD_NO; /* MHD closes; the completed callback cancels */
    } else if (w != WAIT_OK || failed) {
        shardlm_server_err e;
        wait_error(c, w, &e);
        res = srv_respond_err(c->srv, c->conn, &e);
    } else {
        char *body = srv_body_final(&c->ci, ch, u);
        res = body ? srv_respond(c->srv, c->conn, 200, "application/json", body) : MHD_NO;
        free(body);
    }
    for (int i = 0; i < c->ci.n; i++) srv_choice_free(&ch[i]);
    return res;
}

/* Sets the pending SSE text (takes s); NULL s means out of memory. */
static int set_pending(srv_call *c, char *s)
{
    free(c->pend);
    c->pend = s;
    c->pend_len = s ? strlen(s) : 0;
    c->pend_off = 0;
    return s ? 0 : -1;
}

static char *stream_tail(srv_call *c)
{
    pthread_mutex_lock(&c->mu);
    srv_usage u = {c->prompt_tokens, c->completion_tokens, c->cached_tokens};
    pthread_mutex_unlock(&c->mu);
    char *usage = c->ci.include_usage ? srv_sse_usage(&c->ci, u) : NULL;
    size_t n = (usage ? strlen(usage) : 0) + 16;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%sdata: [DONE]\n\n", usage ? usage : "");
    free(usage);
    return s;
}

/* Produces the next piece of SSE text; 0 when some is pending, 1 at the
 * end of the stream, -1 to drop the connection. */
static int stream_next(srv_call *c)
{
    if (c->finished) return 1;
    if (c->ci.kind == SHARDLM_API_CHAT && c->roles_sent < c->ci.n)
        return set_pending(c, srv_sse_role(&c->ci, c->roles_sent++));
    for (int guard = 0; guard < 1000000; guard++) {
        pthread_mutex_lock(&c->mu);
        int w = wait_locked(c, c->last_event + c->srv->timeout_s);
        srv_event *ev = w == WAIT_OK ? pop_locked(c) : NULL;
        int done = w == WAIT_OK && !ev && c->n_ended == c->ci.n;
        pthread_mutex_unlock(&c->mu);
        if (w == WAIT_GONE) return -1;
        if (w != WAIT_OK || (ev && ev->is_end && ev->why != SHARDLM_FINISH_STOP && ev->why != SHARDLM_FINISH_LENGTH)) {
            shardlm_server_err e;
            wait_error(c, w == WAIT_OK ? WAIT_STOPPING + 1 : w, &e);
            free(ev);
            c->finished = 1;
            char *err = srv_sse_error(&e);
            size_t n = (err ? strlen(err) : 0) + 16;
            char *s = malloc(n);
            if (s) snprintf(s, n, "%sdata: [DONE]\n\n", err ? err : "");
            free(err);
            return set_pending(c, s);
        }
        if (done) {
            c->finished = 1;
            return set_pending(c, stream_tail(c));
        }
        c->last_event = shardlm_now_s();
        int nothing = 0;
        char *s = srv_sse_event(&c->ci, &c->sc[ev->choice], ev, &nothing);
        free(ev);
        if (!nothing) return set_pending(c, s);
    }
    return -1;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    srv_call *c = cls;
    (void)pos;
    if (c->pend_off == c->pend_len) {
        int r = stream_next(c);
        if (r < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (r > 0) return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t k = c->pend_len - c->pend_off < max ? c->pend_len - c->pend_off : max;
    memcpy(buf, c->pend + c->pend_off, k);
    c->pend_off += k;
    return (ssize_t)k;
}

static enum MHD_Result answer_stream(srv_call *c)
{
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, c, NULL);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    enum MHD_Result res = MHD_queue_response(c->conn, 200, resp);
    MHD_destroy_response(resp);
    srv_metrics_http(&c->srv->m, 200);
    return res;
}

/* ---- the call ---- */

/* The tool names the answer's parser knows (the request is freed before
 * the answer is made). */
static int call_tools(srv_call *c, const shardlm_server_req *r)
{
    c->tool_names = calloc((size_t)r->n_tools, sizeof *c->tool_names);
    c->tool_name_ptrs = calloc((size_t)r->n_tools, sizeof *c->tool_name_ptrs);
    if (!c->tool_names || !c->tool_name_ptrs) return 0;
    for (int i = 0; i < r->n_tools; i++) {
        memcpy(c->tool_names[i], r->tools[i].name, sizeof c->tool_names[i]);
        c->tool_name_ptrs[i] = c->tool_names[i];
    }
    c->ci.tool_format = r->tool_format;
    c->ci.tool_names = c->tool_name_ptrs;
    c->ci.n_tools = r->n_tools;
    return 1;
}

static srv_call *call_new(shardlm_server *srv, struct MHD_Connection *conn, const shardlm_server_req *r)
{
    srv_call *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->srv = srv;
    c->conn = conn;
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    c->fd = info ? info->connect_fd : -1;
    c->refs = 1;
    c->stream = r->stream;
    c->t0 = c->last_event = shardlm_now_s();
    c->ci = (srv_call_info){.kind = r->kind,
                            .model = srv->model,
                            .tok = srv->tok,
                            .created = (long)time(NULL),
                            .n = r->n,
                            .logprobs = r->params.logprobs,
                            .top_logprobs = r->params.top_logprobs,
                            .include_usage = r->include_usage};
    snprintf(c->ci.id, sizeof c->ci.id, "%s-%llx%08llx", r->kind == SHARDLM_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)srv->started, (unsigned long long)atomic_fetch_add(&srv->next_id, 1));
    for (int i = 0; i < r->n; i++) c->slots[i] = (srv_slot){c, i};
    if (r->tool_format != SHARDLM_TOOLFMT_NONE && !call_tools(c, r)) {
        call_free(c);
        return NULL;
    }
    return c;
}

/* echo: the prompt's text leads each choice. */
static int queue_echo(srv_call *c, const shardlm_server_req *r, const int32_t *ids, int n_ids)
{
    char *text = r->prompt_text;
    char *buf = NULL;
    if (!text) {
        size_t step = shardlm_detok_max(c->srv->tok), cap = (size_t)n_ids * 16 + step + 16, k = 0;
        if (!(buf = malloc(cap))) return SHARDLM_ENOMEM;
        shardlm_detok d;
        shardlm_detok_init(&d);
        for (int i = 0; i < n_ids; i++) {
            if (cap - k < step + 8) { /* room for the longest piece, whatever the tokens */
                char *nb = realloc(buf, cap * 2);
                if (!nb) {
                    free(buf);
                    return SHARDLM_ENOMEM;
                }
                buf = nb;
                cap *= 2;
            }
            k += shardlm_detok_push(c->srv->tok, &d, ids[i], buf + k, cap - k - 8);
        }
        k += shardlm_detok_flush(&d, buf + k, cap - k);
        buf[k] = 0;
        text = buf;
    }
    for (int i = 0; i < c->ci.n; i++) {
        srv_event *ev = event_new(i, text, strlen(text));
        if (!ev) break;
        push_locked(c, ev);
    }
    free(buf);
    return SHARDLM_OK;
}

enum MHD_Result srv_call_handle(shardlm_server *srv, struct MHD_Connection *conn, shardlm_api_kind kind,
                                const char *body, size_t len, srv_call **call)
{
    shardlm_server_req r;
    shardlm_server_err e;
    int32_t *ids = NULL;
    int n_ids = 0;
    int rc = shardlm_server_parse(kind, body, len, shardlm_tokenizer_n_vocab(srv->tok), &r, &e);
    if (!rc) rc = shardlm_server_tools_setup(&r, srv->tool_format, srv->tok, &e);
    if (!rc) rc = shardlm_server_prompt_ids(&r, srv->tok, srv->tpl, &ids, &n_ids, &e);
    srv_call *c = rc ? NULL : call_new(srv, conn, &r);
    if (!rc && !c) rc = shardlm_server_err_set(&e, 500, "server_error", NULL, NULL, "out of memory");
    if (!rc && r.echo) queue_echo(c, &r, ids, n_ids);
    if (!rc) rc = submit_all(c, &r, ids, n_ids, &e);
    free(ids);
    shardlm_server_req_free(&r);
    if (rc) {
        if (c) call_unref(c);
        return srv_respond_err(srv, conn, &e);
    }
    list_add(srv, c);
    *call = c;
    return c->stream ? answer_stream(c) : answer_json(c);
}
