/* server_parse.h - the server's pure request layer: request body bytes ->
 * a validated request (sampling parameters, stop strings, n, stream, ...)
 * or an OpenAI error (HTTP status, type, message, param, code), and the
 * request -> prompt token ids (tokenizer, chat template). Nothing here does
 * I/O, so tests drive it directly. Internal to the runtime module. */
#ifndef SHARDLM_SERVER_PARSE_H
#define SHARDLM_SERVER_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "grammar.h"
#include "sampling.h"
#include "shardlm_text.h"
#include "toolcall.h"

#define SHARDLM_SERVER_MAX_N 16          /* choices per request */
#define SHARDLM_SERVER_MAX_MESSAGES 4096 /* chat messages per request */
#define SHARDLM_SERVER_MAX_STOP_IDS 64   /* stop_token_ids per request */
#define SHARDLM_SERVER_MAX_AS_TEXT 8     /* marker control tokens shown as text */

typedef enum { SHARDLM_API_COMPLETIONS = 1, SHARDLM_API_CHAT } shardlm_api_kind;

typedef struct {
    int status;         /* HTTP status */
    const char *type;   /* "invalid_request_error", "server_error", ... */
    const char *code;   /* NULL: JSON null */
    char param[96];     /* "": JSON null */
    char message[1024];
} shardlm_server_err;

typedef enum {
    SHARDLM_TOOL_CHOICE_NONE = 0, /* tools (if any) are shown to the template; the answer is text */
    SHARDLM_TOOL_CHOICE_AUTO,     /* text, or calls from a trigger on (a lazy grammar) */
    SHARDLM_TOOL_CHOICE_REQUIRED, /* calls only, constrained from the first token */
    SHARDLM_TOOL_CHOICE_NAMED,    /* one call of tool_named, constrained */
} shardlm_tool_choice;

/* One function tool of a chat request. */
typedef struct {
    char name[SHARDLM_TOOL_NAME_MAX + 1];
    cJSON *params; /* its parameters schema (owned), or NULL: no arguments */
} shardlm_server_tool;

typedef struct {
    shardlm_api_kind kind;
    /* completions: a text prompt, or token ids */
    char *prompt_text;
    int32_t *prompt_ids;
    int n_prompt_ids; /* > 0 when the prompt was token ids */
    /* chat */
    shardlm_chat_message *msgs; /* role/content owned by the request */
    size_t n_msgs;
    char *chat_vars; /* the template's variables, a JSON object (messages, tools, ...) */
    /* both */
    shardlm_sampling_params params; /* params.logit_bias points at bias */
    shardlm_logit_bias *bias;
    int max_tokens; /* <= 0: until EOS or the context */
    int n;
    char *stop[SHARDLM_STOP_MAX];
    int n_stop;
    int stream, include_usage, echo;
    /* response_format json_object/json_schema or grammar, compiled; NULL:
     * plain text. Owned (one reference). With tools, the tool-call grammar. */
    shardlm_grammar *grammar;
    /* extensions (vLLM's): see docs/API.md */
    int min_tokens, ignore_eos;
    int32_t stop_ids[SHARDLM_SERVER_MAX_STOP_IDS];
    int n_stop_ids;
    /* chat: tools, tool_choice, parallel_tool_calls (server_tools.c) */
    shardlm_server_tool *tools;
    int n_tools;
    shardlm_tool_choice tool_choice;
    int tool_named; /* index into tools for SHARDLM_TOOL_CHOICE_NAMED */
    int parallel_tool_calls;
    /* set by shardlm_server_tools_setup: the format the answer is parsed in
     * (NONE: plain text), the lazy grammar's triggers, and the format's
     * marker control tokens the scheduler shows as text */
    shardlm_toolfmt tool_format;
    shardlm_grammar_trigger triggers[SHARDLM_TRIGGER_MAX];
    int n_triggers;
    int32_t as_text[SHARDLM_SERVER_MAX_AS_TEXT];
    int n_as_text;
} shardlm_server_req;

/* Sets e to status/type/code/param and a printf-style message; returns
 * SHARDLM_EINPUT for convenience. */
int shardlm_server_err_set(shardlm_server_err *e, int status, const char *type, const char *code,
                           const char *param, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* {"error":{"message":...,"type":...,"param":...,"code":...}}, malloc'd. */
char *shardlm_server_err_json(const shardlm_server_err *e);

/* Parses and validates a body. n_vocab bounds token ids and logit_bias
 * keys. SHARDLM_OK, or SHARDLM_EINPUT with e filled (status 400), or
 * SHARDLM_ENOMEM. Free *r with shardlm_server_req_free in every case. */
int shardlm_server_parse(shardlm_api_kind kind, const char *body, size_t len, int n_vocab, shardlm_server_req *r,
                         shardlm_server_err *e);
/* The same without refusing fields the endpoints do not know (for the
 * bodies of /apply-template and /tokenize, which take chat requests and
 * their own fields). */
int shardlm_server_parse_loose(shardlm_api_kind kind, const char *body, size_t len, int n_vocab,
                               shardlm_server_req *r, shardlm_server_err *e);

/* server_fields.c: every member of a completion body must be a field of
 * the endpoint (docs/API.md's table); the fields this server refuses, or
 * takes only with certain values, are refused here by name. */
int shardlm_server_check_fields(shardlm_api_kind kind, const cJSON *o, shardlm_server_err *e);
/* Field i of that list (NULL past its end) and its endpoints, a bit set
 * of 1 << shardlm_api_kind. */
const char *shardlm_server_field(size_t i, unsigned *endpoints);

/* server_tools.c: tools, tool_choice and parallel_tool_calls of a chat
 * body into r (each tool's parameters schema checked by compiling it). */
int shardlm_server_parse_tools(const cJSON *o, shardlm_server_req *r, shardlm_server_err *e);
/* With the server's tool-call format (shardlm_toolfmt_detect) and
 * tokenizer: the grammar, triggers and marker tokens of a request whose
 * tool_choice is not none. A 400 when the format is NONE or the request
 * also asks for another grammar. */
int shardlm_server_tools_setup(shardlm_server_req *r, shardlm_toolfmt fmt, const shardlm_tokenizer *tok,
                               shardlm_server_err *e);
void shardlm_server_req_free(shardlm_server_req *r);

/* response_format and grammar of a parsed body into r->grammar
 * (server_format.c); called by shardlm_server_parse. */
int shardlm_server_parse_format(const cJSON *o, shardlm_server_req *r, shardlm_server_err *e);

/* The prompt as token ids (malloc'd into *ids): a text prompt is encoded
 * with BOS, token ids are taken as they are, chat messages are rendered
 * with tpl (add_generation_prompt on) and encoded; a template's
 * raise_exception becomes a 400 with its message. */
int shardlm_server_prompt_ids(const shardlm_server_req *r, const shardlm_tokenizer *tok,
                              const shardlm_chat_template *tpl, int32_t **ids, int *n, shardlm_server_err *e);

/* Renders a parsed chat request with tpl (SHARDLM_EINPUT: a 400 in e,
 * naming the template's construct or its raise_exception text). */
int shardlm_server_render_chat(const shardlm_server_req *r, const shardlm_chat_template *tpl, char **text,
                               size_t *len, shardlm_server_err *e);

/* server_chat.c: builds r->chat_vars from a chat body (a cJSON object):
 * messages as the template sees them, tools, add_generation_prompt
 * (default true) and the members of chat_template_kwargs. */
int shardlm_server_chat_vars(const void *body, shardlm_server_req *r, shardlm_server_err *e);

/* The bodies of POST /apply-template, /tokenize and /detokenize: the
 * response JSON (malloc'd), or NULL with e set. n_ctx: vLLM's
 * max_model_len (0: left out). */
char *shardlm_server_apply_template(const char *body, size_t len, const shardlm_tokenizer *tok,
                                    const shardlm_chat_template *tpl, shardlm_server_err *e);
char *shardlm_server_tokenize(const char *body, size_t len, const shardlm_tokenizer *tok,
                              const shardlm_chat_template *tpl, int n_ctx, shardlm_server_err *e);
char *shardlm_server_detokenize(const char *body, size_t len, const shardlm_tokenizer *tok, shardlm_server_err *e);

#endif
