/* server_internal.h - what the server's files share: the metrics registry
 * (server_metrics.c), one HTTP call with its event queue (server.c) and the
 * OpenAI response bodies built from those events (server_resp.c). */
#ifndef SHARDLM_SERVER_INTERNAL_H
#define SHARDLM_SERVER_INTERNAL_H

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "scheduler.h"
#include "server.h"
#include "server_parse.h"

/* ---- metrics ---- */

#define SRV_HIST_MAX_BUCKETS 24

typedef struct {
    const double *le; /* upper bounds, ascending */
    int n_le;
    uint64_t counts[SRV_HIST_MAX_BUCKETS + 1]; /* the last one is +Inf */
    double sum;
    uint64_t count;
} srv_hist;

typedef struct {
    pthread_mutex_t mu;
    srv_hist ttft, itl, e2e;
    uint64_t finished_stop, finished_length, finished_cancelled, finished_error;
    uint64_t http_requests, http_errors;
    uint64_t header_timeouts; /* copied from the deadline when rendered */
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_destroy(srv_metrics *m);
void srv_metrics_observe(srv_metrics *m, srv_hist *h, double seconds);
void srv_metrics_finished(srv_metrics *m, shardlm_finish_reason why);
void srv_metrics_http(srv_metrics *m, int status);
void srv_metrics_header_timeouts(srv_metrics *m, uint64_t n);
/* Prometheus text exposition (version 0.0.4); malloc'd. st may be NULL
 * (no scheduler attached yet). */
char *srv_metrics_render(srv_metrics *m, const shardlm_sched_stats *st, const char *model);

/* ---- one call: an HTTP request and its n scheduler requests ---- */

/* What the engine callbacks report, in order; the HTTP thread consumes it. */
typedef struct srv_event {
    struct srv_event *next;
    int choice;
    int is_end;
    shardlm_finish_reason why;
    int prompt_tokens, completion_tokens; /* at the end */
    int32_t token;
    int has_lp;
    shardlm_logprobs lp;
    size_t len;
    char text[]; /* len bytes, NUL-terminated */
} srv_event;

/* A choice's answer as the non-streaming response accumulates it. */
typedef struct {
    char *text;
    size_t len, cap;
    cJSON *lp; /* chat: logprobs.content array; completions: the logprobs object */
    size_t text_offset;
    const char *finish;
} srv_choice;

typedef struct {
    shardlm_api_kind kind;
    const char *model;
    const shardlm_tokenizer *tok;
    char id[48];
    long created;
    int n, logprobs, top_logprobs, include_usage;
    /* chat with tools: the answer is parsed in this format (NONE: text) */
    shardlm_toolfmt tool_format;
    const char *const *tool_names;
    int n_tools;
} srv_call_info;

/* A streamed choice's state. */
typedef struct {
    size_t text_offset;    /* completions: bytes of text sent, for logprobs' text_offset */
    shardlm_toolparse *tp; /* chat with tools: the choice's parser (made at its first event) */
} srv_stream_choice;

/* ---- response bodies (server_resp.c) ---- */

/* Appends an event to a choice (non-streaming). */
int srv_choice_add(const srv_call_info *ci, srv_choice *c, const srv_event *ev);
void srv_choice_free(srv_choice *c);
/* Token counts for usage: prompt (once), completion (all choices), and the
 * prompt tokens the prefix cache served. */
typedef struct {
    int prompt, completion, cached;
} srv_usage;

/* The whole non-streaming body. */
char *srv_body_final(const srv_call_info *ci, srv_choice *ch, srv_usage u);
/* The SSE events ("data: {...}\n\n") for a token or an end; NULL when
 * there is nothing to send (no text, no call, no logprobs) or out of
 * memory. */
char *srv_sse_event(const srv_call_info *ci, srv_stream_choice *sc, const srv_event *ev, int *nothing);
/* Chat: the first chunk of a choice, delta {"role":"assistant","content":""}. */
char *srv_sse_role(const srv_call_info *ci, int choice);
/* The usage chunk (choices: []) sent before [DONE] when asked for. */
char *srv_sse_usage(const srv_call_info *ci, srv_usage u);

/* ---- chat answers with tool calls (server_resp_tools.c) ---- */

/* A parser for the call's tool format and names. */
int srv_tools_parser(const srv_call_info *ci, shardlm_toolparse **out);
/* The message of a whole answer: content (null when only calls came) and
 * tool_calls; *n_calls says how many. NULL when out of memory. */
cJSON *srv_tools_message(const srv_call_info *ci, int choice, const char *text, size_t len, int *n_calls);
/* The deltas (an array of delta objects) for more text of a streamed
 * choice; final: the choice ended (held-back text comes out). */
cJSON *srv_tools_deltas(const srv_call_info *ci, int choice, shardlm_toolparse *tp, const char *text, size_t len,
                        int final);
/* An error as an SSE event, for a stream that cannot finish. */
char *srv_sse_error(const shardlm_server_err *e);
/* {"object":"list","data":[{"id":model,...}]} */
char *srv_body_models(const char *model, long created);

/* ---- the request deadline (server_deadline.c) ---- */

typedef struct srv_sock srv_sock;

typedef struct srv_deadline {
    pthread_mutex_t mu; /* the list, each socket's clock, cut_total */
    pthread_cond_t cv;
    pthread_t thread;
    int running, stop;
    double limit_s;
    srv_sock *head; /* the open sockets */
    uint64_t cut_total;
} srv_deadline;

/* Starts the reaper (before MHD: its callbacks may come at once). */
int srv_deadline_start(srv_deadline *dl, double limit_s);
/* After MHD_stop_daemon. A deadline never started is ignored. */
void srv_deadline_stop(srv_deadline *dl);
/* MHD_OPTION_NOTIFY_CONNECTION's callback, cls the srv_deadline. */
void srv_deadline_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                         enum MHD_ConnectionNotificationCode code);
/* The request is in (or answered early): its clock stops until... */
void srv_deadline_request_in(struct MHD_Connection *conn);
/* ...its response has ended; the next request's clock starts. */
void srv_deadline_response_done(struct MHD_Connection *conn);
/* Connections shut down for missing their deadline. */
uint64_t srv_deadline_cut_total(srv_deadline *dl);

/* ---- the server and its calls (server.c, server_call.c) ---- */

enum { SRV_LOADING = 0, SRV_READY, SRV_FAILED };

typedef struct srv_call srv_call;

struct shardlm_server {
    struct MHD_Daemon *d;
    char *host, *api_key, *model;
    char *tpl_error; /* why there is no chat template, or NULL */
    shardlm_toolfmt tool_format; /* what the template renders for tool calls */
    int n_ctx;       /* 0: unknown */
    int max_prompt;  /* 0: no limit but the context */
    size_t max_body;
    double timeout_s;
    int header_timeout_s;
    int port;
    long started;
    _Atomic int phase;
    _Atomic int stopping;
    _Atomic int draining; /* SIGTERM: new requests get 503, those in flight finish */
    char failed_why[512];
    shardlm_sched *sched; /* set before phase becomes SRV_READY */
    const shardlm_tokenizer *tok;
    const shardlm_chat_template *tpl;
    srv_metrics m;
    srv_deadline dl; /* --http-header-timeout */
    _Atomic uint64_t next_id;
    pthread_mutex_t calls_mu; /* the list of calls in flight */
    srv_call *calls;
};

/* Queues a response with a JSON body (copied); counts it in the metrics. */
enum MHD_Result srv_respond(shardlm_server *srv, struct MHD_Connection *conn, int status, const char *type,
                            const char *body);
enum MHD_Result srv_respond_err(shardlm_server *srv, struct MHD_Connection *conn, const shardlm_server_err *e);

/* POST /v1/completions and /v1/chat/completions once the body is in:
 * parses, submits n requests and answers (blocking for a JSON answer, or
 * with a streaming response). *call is set once requests were submitted;
 * hand it to srv_call_completed when MHD reports the request done. */
enum MHD_Result srv_call_handle(shardlm_server *srv, struct MHD_Connection *conn, shardlm_api_kind kind,
                                const char *body, size_t len, srv_call **call);
/* Cancels the call's unfinished choices (the client went away, or it is
 * done) and drops the HTTP side's reference. */
void srv_call_completed(srv_call *c);
/* Cancels every call in flight (shutdown). */
void srv_calls_cancel_all(shardlm_server *srv);

#endif
