/* gguf_hash.c - the small string -> index table behind metadata and tensor
 * lookups, so `find` is O(1) even for files with thousands of tensors. */
#include <stdlib.h>
#include <string.h>

#include "gguf_internal.h"
#include "shardlm_common.h"

int gguf_hash_init(gguf_hash *h, uint64_t n)
{
    uint64_t cap = 16;
    while (cap < 2 * n) cap *= 2; /* n is bounded by the file size, so no overflow */
    h->cap = cap;
    h->keys = calloc((size_t)cap, sizeof *h->keys);
    h->lens = calloc((size_t)cap, sizeof *h->lens);
    h->vals = malloc((size_t)cap * sizeof *h->vals);
    if (!h->keys || !h->lens || !h->vals) {
        gguf_hash_free(h);
        return -1;
    }
    for (uint64_t i = 0; i < cap; i++) h->vals[i] = -1;
    return 0;
}

void gguf_hash_free(gguf_hash *h)
{
    free(h->keys);
    free(h->lens);
    free(h->vals);
    memset(h, 0, sizeof *h);
}

static uint64_t slot_of(const gguf_hash *h, const char *key, uint64_t len)
{
    uint64_t i = shardlm_fnv1a64(SHARDLM_FNV_INIT, key, (size_t)len) & (h->cap - 1);
    while (h->vals[i] >= 0 && !(h->lens[i] == len && memcmp(h->keys[i], key, (size_t)len) == 0))
        i = (i + 1) & (h->cap - 1);
    return i;
}

int64_t gguf_hash_insert(gguf_hash *h, const char *key, uint64_t len, int64_t v)
{
    uint64_t i = slot_of(h, key, len);
    if (h->vals[i] >= 0) return h->vals[i];
    h->keys[i] = key;
    h->lens[i] = len;
    h->vals[i] = v;
    return v;
}

int64_t gguf_hash_find(const gguf_hash *h, const char *key, uint64_t len)
{
    if (!h->cap) return -1;
    return h->vals[slot_of(h, key, len)];
}
