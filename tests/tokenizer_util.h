/* tokenizer_util.h - what the tokenizer tests share: loading a tokenizer
 * from a GGUF file, and the separator of llama.cpp's .inp/.out vectors. */
#ifndef SHARDLM_TEST_TOKENIZER_UTIL_H
#define SHARDLM_TEST_TOKENIZER_UTIL_H

#include <criterion/criterion.h>

#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_text.h"

/* Between the test strings of a vocabulary's .inp file and the id lines of its .out file. */
#define SEP "\n__ggml_vocab_test__\n"

static inline shardlm_tokenizer *load_tok(const char *path)
{
    shardlm_gguf *g = NULL;
    shardlm_tokenizer *t = NULL;
    int rc = shardlm_gguf_open(path, &g);
    cr_assert_eq(rc, SHARDLM_OK, "open %s: %s", path, shardlm_err_get());
    rc = shardlm_tokenizer_from_gguf(g, &t);
    cr_assert_eq(rc, SHARDLM_OK, "tokenizer %s: %s", path, shardlm_err_get());
    shardlm_gguf_close(g); /* the tokenizer must not depend on the mapping */
    return t;
}

#endif
