/* pretok.h - the pre-tokenizers of byte-level BPE vocabularies: the regex
 * splits that tokenizer.ggml.pre names, written as matchers over Unicode
 * categories. Internal to text/. */
#ifndef SHARDLM_PRETOK_H
#define SHARDLM_PRETOK_H

#include <stddef.h>
#include <stdint.h>

typedef struct shardlm_pretok shardlm_pretok;

/* The pre-tokenizer called name (len bytes), or NULL. */
const shardlm_pretok *shardlm_pretok_find(const char *name, size_t len);
/* Every supported name, comma-separated, into buf (cap bytes, 512 is enough). */
void shardlm_pretok_names(char *buf, size_t cap);

/* llama.cpp's per-pre-tokenizer settings: a word that is a whole token
 * skips the merges (ignore_merges), and whether BOS is added by default. */
int shardlm_pretok_ignore_merges(const shardlm_pretok *p);
int shardlm_pretok_add_bos(const shardlm_pretok *p);

/* Splits len bytes of UTF-8 into words, calling word() for each in order;
 * together they cover the text exactly. Bytes that are not valid UTF-8 are
 * words' bytes as they are, matched as U+FFFD. SHARDLM_ENOMEM or OK. */
typedef void (*shardlm_pretok_word_fn)(void *ctx, const char *s, size_t n);
int shardlm_pretok_split(const shardlm_pretok *p, const char *text, size_t len, shardlm_pretok_word_fn word,
                         void *ctx);

#endif
