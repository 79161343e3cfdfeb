/* toolcall.h - tool calling. A chat template's tool-call format, found by
 * rendering a probe conversation with one tool call and looking at what the
 * template wrote; the grammar that keeps a model inside that format (each
 * tool's arguments constrained by its JSON Schema); the triggers and marker
 * tokens of the format; and the parser that turns the model's text back into
 * OpenAI tool calls. The parser takes the text in any pieces and gives the
 * same result however it is split, so a stream and a JSON answer agree.
 * Internal header of the runtime module (server and tests). */
#ifndef SHARDLM_TOOLCALL_H
#define SHARDLM_TOOLCALL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "grammar.h"
#include "sampling.h"
#include "shardlm_text.h"

typedef enum {
    SHARDLM_TOOLFMT_NONE = 0,     /* the template renders no format we parse */
    SHARDLM_TOOLFMT_HERMES,       /* <tool_call>\n{"name": N, "arguments": A}\n</tool_call> (Hermes, Qwen) */
    SHARDLM_TOOLFMT_LLAMA3,       /* {"name": N, "parameters": A}, bare or after <|python_tag|> (Llama 3.x) */
    SHARDLM_TOOLFMT_MISTRAL,      /* [TOOL_CALLS][{"name": N, "arguments": A}, ...] (Mistral Nemo, v3) */
    SHARDLM_TOOLFMT_MISTRAL_ARGS, /* [TOOL_CALLS]N[ARGS]A, once per call (Mistral Small 3.2, v11) */
    SHARDLM_TOOLFMT_GRANITE,      /* <|tool_call|>[{"name": N, "arguments": A}, ...] (Granite 3.x) */
} shardlm_toolfmt;

#define SHARDLM_TOOLS_MAX 128     /* tools per request, as OpenAI */
#define SHARDLM_TOOL_NAME_MAX 64  /* [a-zA-Z0-9_-]{1,64}, as OpenAI */
#define SHARDLM_TOOL_CALLS_MAX 16 /* calls in one answer: so a model cannot call for ever */

/* "hermes", "llama3", "mistral", "mistral-args", "granite" or "none". */
const char *shardlm_toolfmt_name(shardlm_toolfmt f);

/* Renders a user turn and an assistant turn with one tool call (a tool
 * "probe_fn" with arguments {"probe_arg": "probe_val"}) and classifies
 * what the template wrote for it; NONE when it wrote none of the formats
 * above or cannot render the probe. Granite's template renders no calls:
 * it is known by the "<|tool_call|>" its system prompt asks for. */
shardlm_toolfmt shardlm_toolfmt_detect(const shardlm_chat_template *tpl);

/* The triggers that start a call in free text (tool_choice "auto"): the
 * lazy grammar applies from there. Returns how many (1..2) in *out. */
int shardlm_toolfmt_triggers(shardlm_toolfmt f, const shardlm_grammar_trigger **out);

/* Marker texts of the format that models emit as single control tokens
 * ("<|python_tag|>", "[TOOL_CALLS]", "[ARGS]", ...); NULL-terminated. */
const char *const *shardlm_toolfmt_markers(shardlm_toolfmt f);

/* Whether the format has room for several calls in one answer (Llama 3's
 * templates take one). */
int shardlm_toolfmt_parallel(shardlm_toolfmt f);

/* A tool call id: "call_" and 24 letters and digits, or for the Mistral
 * formats 9 letters and digits (their templates refuse other ids). seed
 * picks it. */
void shardlm_toolfmt_call_id(shardlm_toolfmt f, uint64_t seed, char out[32]);

/* The grammar for one answer of tool calls in format f: n tools named
 * names[i] whose arguments follow params[i] (a JSON Schema; NULL: no
 * arguments, the object {}), one call or, when parallel and the format
 * allows it, one to SHARDLM_TOOL_CALLS_MAX. only >= 0 restricts it to tool `only`. For a lazy
 * grammar (tool_choice "auto") the same grammar is used from a trigger on.
 * SHARDLM_EINPUT with why naming the tool ("tools[2].function.parameters:
 * ...") when a schema cannot be compiled. */
int shardlm_toolcall_grammar(shardlm_toolfmt f, const char *const *names, const cJSON *const *params, int n,
                             int only, int parallel, shardlm_grammar **out, char *why, size_t cap);

/* ---- parsing the model's text ---- */

typedef enum {
    SHARDLM_TOOLPARSE_CONTENT = 1, /* text of the message's content */
    SHARDLM_TOOLPARSE_CALL,        /* call `index` begins: text is the function name */
    SHARDLM_TOOLPARSE_ARGS,        /* more of call `index`'s arguments (JSON text as written) */
} shardlm_toolparse_kind;

typedef struct {
    shardlm_toolparse_kind kind;
    int index;
    const char *text;
    size_t len;
} shardlm_toolparse_event;

typedef void (*shardlm_toolparse_fn)(void *ctx, const shardlm_toolparse_event *ev);

typedef struct shardlm_toolparse shardlm_toolparse;

/* A parser for format f that knows the n tool names (a call to any other
 * name is text). */
int shardlm_toolparse_new(shardlm_toolfmt f, const char *const *names, int n, shardlm_toolparse **out);
void shardlm_toolparse_free(shardlm_toolparse *p);
/* Feeds text; events come out as soon as they are certain (text that may
 * still begin a call, and whitespace that may still precede one, is held
 * back). SHARDLM_OK or SHARDLM_ENOMEM. */
int shardlm_toolparse_feed(shardlm_toolparse *p, const char *text, size_t len, shardlm_toolparse_fn fn, void *ctx);
/* The end of the text: what was held back. A call whose name never
 * completed is text; a call cut inside its arguments keeps what came. */
int shardlm_toolparse_finish(shardlm_toolparse *p, shardlm_toolparse_fn fn, void *ctx);
/* Calls begun so far. */
int shardlm_toolparse_n_calls(const shardlm_toolparse *p);

#endif
