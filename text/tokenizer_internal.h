/* tokenizer_internal.h - the tokenizer's shared state, for the files that
 * make it up: tokenizer.c (loading, SentencePiece encoding), tokenizer_bpe.c
 * (byte-level BPE), tokenizer_special.c (special-token text, the
 * end-of-generation set) and detok.c (streaming decoding). Internal to
 * text/. */
#ifndef SHARDLM_TOKENIZER_INTERNAL_H
#define SHARDLM_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pretok.h"
#include "shardlm_gguf.h"
#include "shardlm_text.h"

/* token_type values as written by llama.cpp's converters. */
enum {
    TOK_UNDEFINED = 0,
    TOK_NORMAL = 1,
    TOK_UNKNOWN = 2,
    TOK_CONTROL = 3,
    TOK_USER = 4,
    TOK_UNUSED = 5,
    TOK_BYTE = 6,
};

/* Per-token attribute bits beyond the type. */
enum {
    ATTR_EOG = 1,    /* ends generation */
    ATTR_LSTRIP = 2, /* as special text: swallows the whitespace before it */
    ATTR_RSTRIP = 4, /* ... and after it */
    ATTR_KEYED = 8,  /* its key (below) is in the lookup table */
};

typedef enum { TOKZ_SPM, TOKZ_BPE } tokz_kind;

/* One merge: the pair (left, right) of token ids becomes id at rank. */
typedef struct {
    uint64_t pair; /* left << 32 | right; BPE_NO_PAIR when the slot is empty */
    int32_t rank, id;
} bpe_merge;
#define BPE_NO_PAIR UINT64_MAX

/* A byte trie over the text of the special tokens, to find quickly which of
 * them a text contains. */
typedef struct {
    int32_t child, sibling; /* first child, next sibling (-1: none) */
    int32_t special;        /* index into special[] of the token ending here, or -1 */
    uint8_t byte;
} tok_trie_node;

struct shardlm_tokenizer {
    tokz_kind kind;
    char model[16];
    char pre[64]; /* tokenizer.ggml.pre, or "default" */
    const shardlm_pretok *pretok;
    int32_t n;
    int32_t bos, eos, unk, eot, eom; /* -1 when the model has none */
    int add_bos, add_eos, add_space_prefix;
    char *blob;    /* every piece's GGUF text, each followed by a NUL */
    uint32_t *off; /* n + 1 offsets into blob; piece i has off[i+1]-off[i]-1 bytes */
    /* The lookup key of each token: its text (SentencePiece), or the bytes
     * its text stands for (byte-level BPE). key/koff alias blob/off for
     * SentencePiece. */
    char *key;
    uint32_t *koff;
    float *score;
    uint8_t *type;
    uint8_t *attr;
    int16_t *byteval; /* 0..255 for <0xNN> byte tokens, else -1 */
    int32_t byte_id[256]; /* SentencePiece: <0xNN>; BPE: the token of one byte */
    uint32_t max_len;     /* longest mergeable key, bounds SentencePiece pair lookups */
    uint32_t max_out;     /* longest text a token decodes to */
    int32_t *slot;        /* open-addressing key -> id table, -1 = empty */
    uint32_t slot_mask;
    bpe_merge *merges; /* open addressing on pair */
    uint64_t merge_mask;
    tok_trie_node *trie;   /* the nodes below the first byte */
    int32_t trie_root[256]; /* the node of each first byte, or -1 */
    int32_t n_trie;
    int32_t *special; /* ids of control, user-defined and unknown tokens, longest text first */
    int32_t n_special;
    int32_t *eog; /* the end-of-generation ids, ascending */
    int32_t n_eog;
};

static inline size_t tok_len(const shardlm_tokenizer *t, int32_t id)
{
    return t->off[id + 1] - t->off[id] - 1;
}

static inline const char *tok_text(const shardlm_tokenizer *t, int32_t id)
{
    return t->blob + t->off[id];
}

static inline size_t tok_key_len(const shardlm_tokenizer *t, int32_t id)
{
    return t->koff[id + 1] - t->koff[id] - 1;
}

/* The id whose key is s[0..n), or -1. */
int32_t shardlm_tok_find(const shardlm_tokenizer *t, const char *s, size_t n);

/* Appends id to out (cap entries), counting past cap as encode does. */
static inline void shardlm_tok_emit(size_t *n, int32_t *out, size_t cap, int32_t id)
{
    if (*n < cap) out[*n] = id;
    (*n)++;
}

/* Plain text, no special tokens: SentencePiece (with its dummy prefix when
 * prefix is set) or byte-level BPE. */
int shardlm_tok_encode_spm(const shardlm_tokenizer *t, const char *text, size_t len, int prefix, int32_t *out,
                           size_t cap, size_t *n);
int shardlm_tok_encode_bpe(const shardlm_tokenizer *t, const char *text, size_t len, int32_t *out, size_t cap,
                           size_t *n);

/* Reads an optional token id (absent leaves *id as it is), checking it is
 * in range. */
int shardlm_tok_load_id(const shardlm_gguf *g, const char *path, const char *key, int32_t n, int32_t *id);

/* tokenizer_bpe.c: reads the pre-tokenizer and sets each token's key to the
 * bytes it stands for; then, once the key table is built, the byte tokens
 * and tokenizer.ggml.merges. */
int shardlm_tok_load_bpe(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path);
int shardlm_tok_load_bpe_merges(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path);
void shardlm_tok_free_bpe(shardlm_tokenizer *t);

/* tokenizer_special.c: llama.cpp's auto-detected EOT/EOM and the EOG set,
 * the strip attributes, the special-token list and its trie. */
int shardlm_tok_load_special(shardlm_tokenizer *t, const shardlm_gguf *g, const char *path);
void shardlm_tok_free_special(shardlm_tokenizer *t);

/* Splits text at the special tokens it holds (user-defined ones only when
 * all is 0; control and unknown ones too when all is 1), as llama.cpp's
 * tokenizer_st_partition does, and encodes each stretch in between. */
int shardlm_tok_encode_parts(const shardlm_tokenizer *t, const char *text, size_t len, int all, int32_t *out,
                             size_t cap, size_t *n);

#endif
