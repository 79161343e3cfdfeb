/* shardlm_text.h - the text side of a model: its tokenizer and its chat
 * template, both read from a GGUF. Rank 0 alone uses this module; the
 * forward pass never sees text.
 *
 * Tokenizer: the SentencePiece-style tokenizer that GGUF files
 * describe with tokenizer.ggml.model = "llama": score-ordered merges, byte
 * fallback <0xNN>, BOS/EOS, the "▁" leading-space convention. The tokenizer
 * copies what it needs out of the GGUF, so the file may be closed after.
 *
 * Chat templates: Jinja as Hugging Face chat templates use it
 * (tokenizer.chat_template in GGUF), parsed once at start-up and rendered
 * per request exactly as @huggingface/jinja renders them (the renderer of
 * transformers.js, with trim_blocks and lstrip_blocks on): its whitespace
 * control, operator precedence, JavaScript numbers and strings, tojson,
 * printing (true/false, arrays and objects as JSON, none and undefined as
 * nothing) and undefined handling. Where that renderer has no answer (it
 * throws), Jinja2's is used. text/chat*.c say which constructs exist;
 * docs/API.md lists them. */
#ifndef SHARDLM_TEXT_H
#define SHARDLM_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "shardlm_gguf.h"

/* ==== tokenizer ==== */
typedef struct shardlm_tokenizer shardlm_tokenizer;

int shardlm_tokenizer_from_gguf(const shardlm_gguf *g, shardlm_tokenizer **out);
void shardlm_tokenizer_free(shardlm_tokenizer *t);

int32_t shardlm_tokenizer_n_vocab(const shardlm_tokenizer *t);
int32_t shardlm_tokenizer_bos(const shardlm_tokenizer *t);
int32_t shardlm_tokenizer_eos(const shardlm_tokenizer *t);

/* Encodes len bytes of text. Writes at most cap ids to out and the full
 * count to *n_out (call again with a larger buffer if *n_out > cap). */
int shardlm_tokenizer_encode(const shardlm_tokenizer *t, const char *text, size_t len, int add_bos,
                             int32_t *out, size_t cap, size_t *n_out);

/* As shardlm_tokenizer_encode, but the text of control tokens ("<s>",
 * "</s>", "<|im_start|>", ...) becomes those tokens, as chat templates
 * expect; the plain text between them is encoded as usual. */
int shardlm_tokenizer_encode_special(const shardlm_tokenizer *t, const char *text, size_t len, int add_bos,
                                     int32_t *out, size_t cap, size_t *n_out);

/* The raw piece text of a token ("▁" kept), for `shardlm info`. */
const char *shardlm_tokenizer_piece(const shardlm_tokenizer *t, int32_t id, size_t *len);

/* Streaming decoder: turns ids into valid UTF-8 text. Byte tokens are
 * buffered until they complete a UTF-8 character; invalid sequences come out
 * as U+FFFD. The leading space of the first piece after BOS is dropped. */
typedef struct {
    int32_t prev;
    unsigned char pend[4];
    int n_pend;
} shardlm_detok;

void shardlm_detok_init(shardlm_detok *d);
/* Appends the text of id to buf (cap bytes); returns bytes written. */
size_t shardlm_detok_push(const shardlm_tokenizer *t, shardlm_detok *d, int32_t id, char *buf, size_t cap);
size_t shardlm_detok_flush(shardlm_detok *d, char *buf, size_t cap);

/* ==== chat templates ==== */
typedef struct shardlm_chat_template shardlm_chat_template;

/* One chat message. role and content are NUL-terminated UTF-8; a NULL
 * content is none in the template (an assistant turn with only tool calls). */
typedef struct {
    const char *role;
    const char *content;
} shardlm_chat_message;

/* Guards against runaway templates; every render checks them. */
typedef struct {
    size_t max_output;     /* bytes of rendered text */
    size_t max_memory;     /* bytes of scratch memory per render */
    size_t max_iterations; /* loop iterations per render, all loops together */
} shardlm_chat_limits;

/* 16 MiB output, 256 MiB scratch, 1,000,000 iterations. */
shardlm_chat_limits shardlm_chat_default_limits(void);

/* Parses a template. origin names it in error text (a GGUF path, or the
 * --chat-template FILE). A syntax error or an unsupported statement returns
 * SHARDLM_EINPUT with "ORIGIN:LINE:COL: problem" (an unknown filter or test
 * is not an error here: see shardlm_chat_template_unsupported). bos_token and eos_token
 * start empty (see shardlm_chat_template_set_tokens). */
int shardlm_chat_template_new(const char *source, size_t len, const char *origin,
                              shardlm_chat_template **out);
void shardlm_chat_template_free(shardlm_chat_template *t);

/* The model's tokenizer.chat_template, or, when the GGUF has none, the
 * built-in default below; bos_token/eos_token are the text of
 * tokenizer.ggml.tokens[bos_token_id / eos_token_id] ("" when absent). */
int shardlm_chat_template_from_gguf(const shardlm_gguf *g, shardlm_chat_template **out);

/* --chat-template FILE: the file's template, with bos/eos text taken from g
 * when g is not NULL. */
int shardlm_chat_template_from_file(const char *path, const shardlm_gguf *g,
                                    shardlm_chat_template **out);

/* The built-in default, a plain-text template with no special tokens (the
 * tokenizer adds BOS itself):
 *   system:    CONTENT "\n\n"
 *   user:      "User: " CONTENT "\n"
 *   assistant: "Assistant: " CONTENT "\n"
 *   other:     Role ": " CONTENT "\n"
 *   generation prompt: "Assistant:" */
extern const char shardlm_chat_default_template[];

/* Copies the text that bos_token / eos_token stand for (NULL means ""). */
int shardlm_chat_template_set_tokens(shardlm_chat_template *t, const char *bos, const char *eos);
void shardlm_chat_template_set_limits(shardlm_chat_template *t, shardlm_chat_limits lim);

/* 1 when t is the built-in default (no model template was found). */
int shardlm_chat_template_is_default(const shardlm_chat_template *t);
const char *shardlm_chat_template_origin(const shardlm_chat_template *t);

/* Renders messages (role and content only) with add_generation_prompt.
 * *out is malloc'd, NUL-terminated, owned by the caller. Errors are
 * SHARDLM_EINPUT (the request or the template is at fault; meant for an
 * HTTP 400): the text is the template's own raise_exception message
 * verbatim, or "chat template ORIGIN:LINE:COL: problem" for anything else
 * (an unsupported filter reached, a type error, a limit exceeded); or
 * SHARDLM_ENOMEM. Thread-safe: renders share nothing mutable. */
int shardlm_chat_render(const shardlm_chat_template *t, const shardlm_chat_message *msgs, size_t n,
                        int add_generation_prompt, char **out, size_t *out_len);

typedef struct {
    int64_t now; /* strftime_now's time, seconds since the epoch (local time zone); 0: the clock */
} shardlm_chat_render_opts;

/* Renders with the template variables given as one JSON object, as
 * transformers.js passes them: its members (messages, tools, documents,
 * add_generation_prompt, any chat_template_kwargs) become variables;
 * bos_token/eos_token come from the template unless vars sets them, and
 * add_generation_prompt is false unless set. o may be NULL. Errors as
 * shardlm_chat_render; vars that are not a JSON object are SHARDLM_EINPUT. */
int shardlm_chat_render_json(const shardlm_chat_template *t, const char *vars, size_t len,
                             const shardlm_chat_render_opts *o, char **out, size_t *out_len);

/* The first filter, test or function the template uses that the engine
 * does not have ("unsupported filter 'x' at ORIGIN:LINE:COL"), or NULL.
 * The template still renders until a request reaches that construct. */
const char *shardlm_chat_template_unsupported(const shardlm_chat_template *t);

#endif
