/* grammar.h - constrained decoding for rank 0's sampler: GBNF grammars
 * (llama.cpp's syntax), JSON Schema compiled to GBNF, and the token mask
 * that keeps a sequence inside its grammar. Internal header of the runtime
 * module; the scheduler, the server, `generate` and `bench` use it.
 *
 * Three objects:
 *   shardlm_grammar        a compiled grammar plus its caches (the pushdown
 *                          states met so far and their byte transitions);
 *                          compiled once per request and shared, by
 *                          reference count, by the request's n choices;
 *   shardlm_grammar_vocab  a model's tokens as byte strings in a trie,
 *                          built once per model;
 *   shardlm_grammar_state  one sequence's place in its grammar.
 *
 * Text is matched as UTF-8 bytes: a token may end inside a character and
 * the next one complete it; only well-formed UTF-8 (no overlongs, no
 * surrogates) ever passes. Threading: a grammar (with every state on it)
 * and a vocab may be used by one thread at a time, except that
 * shardlm_grammar_ref/unref may be called from any thread. The scheduler
 * touches them only on its engine thread. */
#ifndef SHARDLM_GRAMMAR_H
#define SHARDLM_GRAMMAR_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "shardlm_text.h"

typedef struct shardlm_grammar shardlm_grammar;
typedef struct shardlm_grammar_vocab shardlm_grammar_vocab;
typedef struct shardlm_grammar_state shardlm_grammar_state;

/* ---- grammars ---- */

/* Compiles GBNF text whose start rule is `root`. Syntax (llama.cpp's):
 * rules `name ::= alternatives` (names of letters, digits, '-' and '_'),
 * alternatives separated by '|', sequences of "literals" (escapes \n \r \t
 * \\ \" \' \[ \] \xHH \uHHHH \UHHHHHHHH), [character classes] with ranges
 * and ^ negation, '.' (any character), rule names, ( groups ), and the
 * repetitions * + ? {m} {m,} {m,n} {,n}; '#' starts a comment. A rule ends
 * at a newline unless the newline is inside ( ) or follows '|' or '::='.
 * Errors (SHARDLM_EINPUT) are one line in why: "line L column C: what"
 * (columns count characters from 1). Refused: an undefined rule, a rule
 * defined twice, no root rule, left recursion, a repetition of something
 * that can match empty text, bounds over 10000, more than 2^20 elements. */
int shardlm_grammar_compile(const char *text, size_t len, shardlm_grammar **out, char *why, size_t cap);
shardlm_grammar *shardlm_grammar_ref(shardlm_grammar *g);
void shardlm_grammar_unref(shardlm_grammar *g);

/* JSON Schema -> GBNF. Appends rules to *buf (malloc'd, grown as needed;
 * *len is its length, both start NULL/0): the rule called `name` matches
 * one JSON value valid against the schema (no whitespace around it); all
 * other rules it appends are called "name-...". Whitespace between tokens
 * is bounded (at most one space, or a newline and 20 spaces or tabs), as
 * are number lengths (see docs/API.md). The supported keywords are listed
 * in docs/API.md; any other keyword, or a supported one with a value it
 * cannot honour exactly, is SHARDLM_EINPUT with why naming the keyword and
 * its place, e.g. `"uniqueItems" at #/properties/tags is not supported`. */
int shardlm_json_schema_gbnf(const cJSON *schema, const char *name, char **buf, size_t *len, char *why,
                             size_t cap);

/* The whole grammar for a response_format: root ::= the schema's value.
 * schema NULL means any JSON object (response_format json_object). */
int shardlm_json_schema_grammar(const cJSON *schema, shardlm_grammar **out, char *why, size_t cap);

/* A grammar from a file (the CLI's --grammar FILE, or --json-schema FILE
 * when json_schema). SHARDLM_EINPUT with the error text "FILE: what" (a
 * GBNF error's line and column, a schema keyword refused, bad JSON). */
int shardlm_grammar_from_file(const char *path, int json_schema, shardlm_grammar **out);

/* ---- vocabularies ---- */

/* n tokens, token i spelling bytes[i] (lens[i] bytes) when it is decoded.
 * Tokens with no bytes (control tokens) are never allowed, except the
 * end-of-generation tokens eog[0..n_eog), which are allowed exactly when
 * the grammar can end. lead_bytes/lead_lens, when not NULL, give each
 * token's text as the first token after BOS (SentencePiece drops a leading
 * space there); see shardlm_grammar_state_new. Copies everything. */
int shardlm_grammar_vocab_new(int32_t n, const char *const *bytes, const uint32_t *lens,
                              const char *const *lead_bytes, const uint32_t *lead_lens, const int32_t *eog,
                              int n_eog, shardlm_grammar_vocab **out);
/* The same from a tokenizer: each token's bytes as it adds them to a
 * decoded stream (shardlm_tokenizer_token_bytes: a byte-level BPE piece's
 * raw bytes, half a character included; control tokens none, so never
 * allowed), and the model's end-of-generation set (EOS where it has none).
 * Since the grammar passes only well-formed UTF-8, the decoder then emits
 * exactly the bytes the grammar matched. */
int shardlm_grammar_vocab_from_tokenizer(const shardlm_tokenizer *tok, shardlm_grammar_vocab **out);
/* The same, except that the tokens as_text[0..n) (control tokens such as
 * [TOOL_CALLS]) spell their piece, as the scheduler then outputs them. */
int shardlm_grammar_vocab_from_tokenizer_as_text(const shardlm_tokenizer *tok, const int32_t *as_text, int n_as_text,
                                                 shardlm_grammar_vocab **out);
void shardlm_grammar_vocab_free(shardlm_grammar_vocab *v);
int32_t shardlm_grammar_vocab_n(const shardlm_grammar_vocab *v);

/* ---- one sequence ---- */

/* A state at the start of g (takes a reference on g). lead: the first
 * token will be decoded as the first after BOS (its lead bytes count). */
int shardlm_grammar_state_new(shardlm_grammar *g, int lead, shardlm_grammar_state **out);
void shardlm_grammar_state_free(shardlm_grammar_state *s);
/* An independent copy of s (same grammar, same place). */
int shardlm_grammar_state_copy(const shardlm_grammar_state *s, shardlm_grammar_state **out);

/* Feeds text: SHARDLM_OK, or SHARDLM_EINPUT (state unchanged) when the
 * grammar cannot continue with these bytes. */
int shardlm_grammar_accept_bytes(shardlm_grammar_state *s, const void *bytes, size_t n);
/* Feeds one token's bytes (an end-of-generation token ends the state);
 * SHARDLM_EINPUT when the token is not allowed here. */
int shardlm_grammar_accept_token(shardlm_grammar_state *s, const shardlm_grammar_vocab *v, int32_t token);

/* 1 when the text so far is a whole sentence of the grammar. */
int shardlm_grammar_can_end(shardlm_grammar_state *s);
/* 1 when nothing can follow but the end (or an end token was accepted). */
int shardlm_grammar_must_end(shardlm_grammar_state *s);

/* The tokens that may come next, as a bitset over token ids (bit t of
 * allowed[t / 64]; (n + 63) / 64 words). End-of-generation tokens are set
 * when the grammar can end, and also when no other token is allowed (a
 * dead end: the vocabulary cannot spell what the grammar needs). Returns
 * the number of tokens allowed, or -1 when out of memory. */
int shardlm_grammar_mask(shardlm_grammar_state *s, const shardlm_grammar_vocab *v, uint64_t *allowed);
/* The same applied to logits: every token not allowed gets -INFINITY.
 * SHARDLM_OK or SHARDLM_ENOMEM. */
int shardlm_grammar_apply(shardlm_grammar_state *s, const shardlm_grammar_vocab *v, float *logits);

#endif
