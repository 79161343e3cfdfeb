/* gguf_internal.h - pieces shared by the GGUF reader's files: a string ->
 * index hash table (for keys and tensor names) and a view of one parsed
 * metadata entry. Not part of the public API. */
#ifndef SHARDLM_GGUF_INTERNAL_H
#define SHARDLM_GGUF_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "shardlm_gguf.h"

/* Open addressing over (ptr, len) strings that outlive the table. */
typedef struct {
    const char **keys;
    uint64_t *lens;
    int64_t *vals;
    uint64_t cap; /* power of two, at least twice the entries */
} gguf_hash;

int gguf_hash_init(gguf_hash *h, uint64_t n);
void gguf_hash_free(gguf_hash *h);
/* Inserts key -> v unless present; returns the value now stored for key. */
int64_t gguf_hash_insert(gguf_hash *h, const char *key, uint64_t len, int64_t v);
/* The value for key, or -1. */
int64_t gguf_hash_find(const gguf_hash *h, const char *key, uint64_t len);

typedef struct {
    uint32_t type;
    const uint8_t *val;
    uint32_t arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;
    const uint8_t *const *arr_strs;
} gguf_kv_info;

int gguf_kv_view(const shardlm_gguf *g, uint64_t i, gguf_kv_info *out);

#endif
