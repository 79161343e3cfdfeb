/* server.h - the OpenAI-compatible HTTP front end on rank 0 (libmicrohttpd,
 * one thread per connection). It turns /v1/completions and
 * /v1/chat/completions requests into scheduler requests (one per choice),
 * answers with JSON or Server-Sent Events in OpenAI's formats, and serves
 * /v1/models, /health, /metrics, and /apply-template, /tokenize and
 * /detokenize (what the model is fed) (Prometheus text, vLLM-style names
 * prefixed "shardlm:"). See docs/API.md.
 *
 * The server can start before the model is loaded (it then answers 503
 * "loading" everywhere but /health and /metrics) and is attached to the
 * scheduler once the engine is up. A client that goes away cancels its
 * scheduler requests. Internal header of the runtime module. */
#ifndef SHARDLM_SERVER_H
#define SHARDLM_SERVER_H

#include <stddef.h>

#include "scheduler.h"
#include "shardlm_text.h"

typedef struct shardlm_server shardlm_server;

typedef struct {
    const char *host;        /* NULL: 127.0.0.1 */
    int port;                /* 0: any free port (see shardlm_server_port) */
    const char *api_key;     /* NULL: SHARDLM_API_KEY, if set; "" or unset: no key */
    size_t max_body_bytes;   /* 0: 1 MiB; larger bodies get 413 */
    const char *model_name;  /* id in /v1/models and every response */
    double request_timeout_s;/* 0: 600; longest wait on the engine per request (streams: between events) */
    int max_connections;     /* 0: 4096 concurrent connections (one thread each) */
    int idle_timeout_s;      /* 0: request_timeout_s + 30; a connection silent this long is closed */
    int header_timeout_s;    /* 0: 10; a request (headers and body) not in this long after its connection
                                opened, or its previous response ended, is closed (streams are not cut) */
    int max_connections_per_ip; /* 0: no limit; more from one address are closed at once */
    int max_prompt_tokens;   /* 0: only the context bounds a prompt; longer ones get 400 */
    const char *chat_template_error; /* why tpl is NULL: chat and /apply-template answer 400 with it */
} shardlm_server_opts;

/* Binds and starts serving. s, tok and tpl may be NULL (not attached yet:
 * completions answer 503 "loading"). Returns SHARDLM_EINPUT when the
 * address cannot be used (the error text names it). */
int shardlm_server_start(const shardlm_server_opts *o, shardlm_sched *s, const shardlm_tokenizer *tok,
                         const shardlm_chat_template *tpl, shardlm_server **out);
/* Attaches the scheduler once the model is up; from now on it serves. */
void shardlm_server_attach(shardlm_server *srv, shardlm_sched *s, const shardlm_tokenizer *tok,
                           const shardlm_chat_template *tpl);
/* The context length, reported as vLLM's max_model_len by /tokenize; call
 * before shardlm_server_attach. */
void shardlm_server_set_n_ctx(shardlm_server *srv, int n_ctx);
/* Marks the engine as failed: /health and completions answer 503 with why. */
void shardlm_server_set_failed(shardlm_server *srv, const char *why);
/* The tool-call format found in the attached chat template
 * (shardlm_toolfmt_name: "hermes", ..., or "none"). */
const char *shardlm_server_tool_format(const shardlm_server *srv);
/* SIGTERM: from now on new requests get 503 and /health says "draining";
 * those in flight go on. */
void shardlm_server_drain(shardlm_server *srv);
/* HTTP requests not yet fully answered (a drain waits for 0). */
int shardlm_server_in_flight(shardlm_server *srv);
/* The bound port (useful with port 0). */
int shardlm_server_port(const shardlm_server *srv);
/* Stops accepting, cancels what is in flight, waits for connection
 * threads, frees. Call before freeing the scheduler. NULL is ignored. */
void shardlm_server_stop(shardlm_server *srv);

#endif
