/* ranges.c - which bytes of a GGUF file one rank's shard is made of, so a
 * worker without the file can be sent just those (--weights-from rank0).
 * The list comes from running the loader itself in record mode
 * (shardlm_model_record_reads in load.c), so it cannot drift from what
 * shardlm_model_load reads; here it is only sorted, merged and hashed. */
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"
#include "shardlm_common.h"

int shardlm_range_list_add(shardlm_range_list *l, uint64_t offset, uint64_t length, uint64_t stride,
                           uint64_t count)
{
    if (length == 0 || count == 0) return SHARDLM_OK;
    if (count == 1 || stride == length) { /* contiguous: one piece */
        length *= count;
        count = 1;
        stride = length;
    }
    if (count > UINT32_MAX) {
        shardlm_err_set("byte range of %llu pieces is too many to describe", (unsigned long long)count);
        return SHARDLM_ERUNTIME;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        shardlm_byte_range *v = realloc(l->v, cap * sizeof *v);
        if (!v) return SHARDLM_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (shardlm_byte_range){offset, length, stride, (uint32_t)count};
    return SHARDLM_OK;
}

/* One past the last byte of the last piece. */
static uint64_t range_end(const shardlm_byte_range *r) { return r->offset + (r->count - 1) * r->stride + r->length; }

static int range_cmp(const void *a, const void *b)
{
    const shardlm_byte_range *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return range_end(x) < range_end(y) ? -1 : range_end(x) > range_end(y);
}

/* Folds b (which starts at or after a) into a when they overlap; returns 0
 * when they are disjoint and both stay. Contiguous neighbours are joined.
 * A strided range overlapping anything but a contiguous range covering it
 * (never the case for the loader's reads) becomes its contiguous envelope:
 * a superset, so correctness holds at the cost of some extra bytes. */
static int range_fold(shardlm_byte_range *a, const shardlm_byte_range *b)
{
    uint64_t ea = range_end(a), eb = range_end(b);
    int contiguous = a->count == 1 && b->count == 1;
    if (b->offset > ea || (b->offset == ea && !contiguous)) return 0;
    if (a->count == 1 && eb <= ea) return 1; /* covered */
    if (memcmp(a, b, sizeof *a) == 0) return 1;
    uint64_t end = ea > eb ? ea : eb;
    *a = (shardlm_byte_range){a->offset, end - a->offset, end - a->offset, 1};
    return 1;
}

/* Sorts by offset and folds overlaps, so the ranges can be streamed in order
 * and every byte is sent once (a tied output projection reads the embedding
 * twice). */
static void ranges_normalise(shardlm_range_list *l)
{
    qsort(l->v, l->n, sizeof *l->v, range_cmp);
    size_t w = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (w && range_fold(&l->v[w - 1], &l->v[i])) continue;
        l->v[w++] = l->v[i];
    }
    l->n = w;
}

int shardlm_model_shard_ranges(const shardlm_gguf *g, int world, int rank, shardlm_byte_range **out, size_t *n)
{
    shardlm_range_list l = {0};
    uint64_t hdr = shardlm_gguf_data_offset(g);
    int rc = shardlm_range_list_add(&l, 0, hdr, hdr, 1); /* the header: metadata, tensor table, fingerprint */
    if (!rc) rc = shardlm_model_record_reads(g, world, rank, &l);
    if (rc) {
        free(l.v);
        return rc;
    }
    ranges_normalise(&l);
    *out = l.v;
    *n = l.n;
    return SHARDLM_OK;
}

uint64_t shardlm_byte_ranges_total(const shardlm_byte_range *r, size_t n)
{
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++) t += r[i].length * r[i].count;
    return t;
}

uint64_t shardlm_byte_ranges_hash(const shardlm_byte_range *r, size_t n)
{
    uint64_t h = SHARDLM_FNV_INIT;
    for (size_t i = 0; i < n; i++) {
        uint64_t f[4] = {r[i].offset, r[i].length, r[i].stride, r[i].count};
        uint8_t le[32]; /* little-endian, so rank 0 and a worker agree whatever their CPUs */
        for (int k = 0; k < 32; k++) le[k] = (uint8_t)(f[k / 8] >> (8 * (k % 8)));
        h = shardlm_fnv1a64(h, le, sizeof le);
    }
    return h;
}
