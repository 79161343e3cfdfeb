/* shardlm_tokenizer.h - the SentencePiece-style tokenizer that GGUF files
 * describe with tokenizer.ggml.model = "llama": score-ordered merges, byte
 * fallback <0xNN>, BOS/EOS, the "▁" leading-space convention. The tokenizer
 * copies what it needs out of the GGUF, so the file may be closed after. */
#ifndef SHARDLM_TOKENIZER_H
#define SHARDLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "shardlm_gguf.h"

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

#endif
