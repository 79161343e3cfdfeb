/* shardlm_text.h - the text side of a model: its tokenizer and its chat
 * template, both read from a GGUF. Rank 0 alone uses this module; the
 * forward pass never sees text.
 *
 * Tokenizers, as llama.cpp reads them from a GGUF:
 *   tokenizer.ggml.model = "llama": SentencePiece-style BPE (score-ordered
 *     merges, byte fallback <0xNN>, the "▁" leading-space convention);
 *   tokenizer.ggml.model = "gpt2": GPT-2-style byte-level BPE, merges in the
 *     order of tokenizer.ggml.merges, after the pre-tokenizer regexes that
 *     tokenizer.ggml.pre names (llama-bpe, qwen2, qwen35, gpt-2, smollm,
 *     default and their aliases; an unknown name is refused).
 * Token types come from tokenizer.ggml.token_type; the end-of-generation set
 * is eos, eot and eom plus the tokens llama.cpp recognises by their text
 * (<|eot_id|>, <|im_end|>, <|end|>, <|endoftext|>, ...). The tokenizer
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
/* BOS and EOS ids, or -1 where a byte-level BPE vocabulary has none. */
int32_t shardlm_tokenizer_bos(const shardlm_tokenizer *t);
int32_t shardlm_tokenizer_eos(const shardlm_tokenizer *t);
/* tokenizer.ggml.model ("llama", "gpt2") and the pre-tokenizer's name
 * ("default" for SentencePiece and where the GGUF names none). */
const char *shardlm_tokenizer_model(const shardlm_tokenizer *t);
const char *shardlm_tokenizer_pre(const shardlm_tokenizer *t);

/* Whether id ends generation; the whole set, ascending (writes at most cap
 * ids, returns how many there are). */
int shardlm_tokenizer_is_eog(const shardlm_tokenizer *t, int32_t id);
size_t shardlm_tokenizer_eog(const shardlm_tokenizer *t, int32_t *out, size_t cap);

/* What encoding adds around the text (flags for the add argument). */
enum { SHARDLM_TOK_ADD_BOS = 1, SHARDLM_TOK_ADD_EOS = 2 };
/* The model's own choice: tokenizer.ggml.add_bos_token / add_eos_token,
 * defaulting as llama.cpp does (SentencePiece adds BOS; byte-level BPE adds
 * it for the llama-bpe family only; neither adds EOS). */
int shardlm_tokenizer_add_special(const shardlm_tokenizer *t);

/* Encodes len bytes of text, with BOS first and/or EOS last as add says.
 * Writes at most cap ids to out and the full count to *n_out (call again
 * with a larger buffer if *n_out > cap; len + 3 ids is enough unless
 * SentencePiece special tokens of one byte are about). The text of
 * user-defined tokens (type 4) becomes those tokens, as llama.cpp does even
 * without special-token parsing. */
int shardlm_tokenizer_encode(const shardlm_tokenizer *t, const char *text, size_t len, int add, int32_t *out,
                             size_t cap, size_t *n_out);

/* As shardlm_tokenizer_encode, but the text of control and unknown tokens
 * ("<s>", "<|im_start|>", "<|eot_id|>", ...) becomes those tokens too, as
 * chat templates expect: the longest special token is split out first, as
 * llama.cpp's tokenizer does; the plain text between them is encoded as
 * usual (SentencePiece gives each stretch its dummy prefix). */
int shardlm_tokenizer_encode_special(const shardlm_tokenizer *t, const char *text, size_t len, int add,
                                     int32_t *out, size_t cap, size_t *n_out);

/* Either of the two (special = 1: encode_special) into a malloc'd array of
 * the right size: *out holds *n_out ids, freed by the caller. */
int shardlm_tokenizer_encode_alloc(const shardlm_tokenizer *t, const char *text, size_t len, int add, int special,
                                   int32_t **out, size_t *n_out);

/* The raw piece text of a token ("▁" kept), for `shardlm info`. */
const char *shardlm_tokenizer_piece(const shardlm_tokenizer *t, int32_t id, size_t *len);

/* Streaming decoder: turns ids into valid UTF-8 text, byte-exact for text
 * that is valid UTF-8. Bytes that end inside a character (byte tokens,
 * byte-level BPE pieces) are held until the character is complete; invalid
 * sequences come out as U+FFFD. Control tokens give no text. Where the
 * model uses a dummy-prefix space (add_space_prefix), the leading space of
 * the piece after BOS is dropped. SentencePiece byte tokens of control
 * characters other than \t \n \r are dropped, as llama2.c's run.c does. */
typedef struct {
    int32_t prev;
    unsigned char pend[4];
    int n_pend;
} shardlm_detok;

void shardlm_detok_init(shardlm_detok *d);
/* Appends the text of id to buf (cap bytes); returns bytes written. Whole
 * characters only: what does not fit is dropped. */
size_t shardlm_detok_push(const shardlm_tokenizer *t, shardlm_detok *d, int32_t id, char *buf, size_t cap);
size_t shardlm_detok_flush(shardlm_detok *d, char *buf, size_t cap);
/* The most one push or flush writes with this tokenizer. */
size_t shardlm_detok_max(const shardlm_tokenizer *t);
/* The bytes token id adds to a stream (as the first token after BOS when
 * after_bos), before the decoder's UTF-8 checks: a byte-level BPE piece's
 * raw bytes (half a character included), a byte token's byte, nothing for
 * control tokens. A stream of tokens whose bytes together are well-formed
 * UTF-8 decodes to exactly those bytes, which is what the grammar mask
 * relies on. At most shardlm_detok_max(t) bytes; what does not fit in cap
 * is dropped. */
size_t shardlm_tokenizer_token_bytes(const shardlm_tokenizer *t, int32_t id, int after_bos, char *buf, size_t cap);

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
