/* gguf.c - GGUF v2/v3 reader. The file is mapped read-only and every
 * length, count, offset and size is checked at open, so the accessors below
 * can trust the parsed tables and never read outside the mapping. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf_internal.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_kernels.h"

#define GGUF_MAX_DEPTH 4 /* nested arrays deeper than this are rejected */

typedef struct {
    shardlm_gguf_str key;
    uint32_t type;
    const uint8_t *val; /* scalar value, string length field, or array element-type field */
    uint32_t arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data;
    const uint8_t **arr_strs; /* string arrays: each element's length field, for O(1) access */
} gguf_kv;

struct shardlm_gguf {
    char *path;
    const uint8_t *map;
    uint64_t size;
    uint32_t version;
    uint64_t alignment, data_off, fingerprint;
    uint64_t n_kv, n_tensors;
    gguf_kv *kvs;
    shardlm_gguf_tensor *tensors;
    char *names;
    gguf_hash kv_index, tensor_index;
};

/* Parsing cursor over the mapping. */
typedef struct {
    shardlm_gguf *g;
    uint64_t pos;
} cursor;

static int fail(const shardlm_gguf *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const shardlm_gguf *g, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    shardlm_err_set("%s: %s", g->path, msg);
    return SHARDLM_EINPUT;
}

static uint64_t left(const cursor *c) { return c->g->size - c->pos; }

static int take(cursor *c, void *dst, uint64_t n)
{
    if (left(c) < n) return -1;
    memcpy(dst, c->g->map + c->pos, n);
    c->pos += n;
    return 0;
}

/* A GGUF string: u64 length, then bytes. */
static int take_str(cursor *c, shardlm_gguf_str *s)
{
    uint64_t n;
    if (take(c, &n, 8) || left(c) < n) return -1;
    s->ptr = (const char *)c->g->map + c->pos;
    s->len = n;
    c->pos += n;
    return 0;
}

static size_t scalar_size(uint32_t t)
{
    static const uint8_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sz ? sz[t] : 0;
}

const char *shardlm_gguf_vtype_name(shardlm_gguf_vtype t)
{
    static const char *const nm[] = {"uint8", "int8",  "uint16", "int16",  "uint32", "int32", "float32",
                                     "bool",  "string", "array", "uint64", "int64",  "float64"};
    return (unsigned)t < sizeof nm / sizeof nm[0] ? nm[t] : "invalid";
}

/* Skips the elements of an array (possibly nested), checking every bound. */
static int skip_array(cursor *c, const char *key, uint32_t et, uint64_t n, int depth);

static int skip_value(cursor *c, const char *key, uint32_t t, int depth)
{
    size_t sz = scalar_size(t);
    if (sz) {
        if (left(c) < sz) return fail(c->g, "metadata key '%s': value truncated", key);
        c->pos += sz;
        return 0;
    }
    if (t == SHARDLM_GGUF_STRING) {
        shardlm_gguf_str s;
        if (take_str(c, &s)) return fail(c->g, "metadata key '%s': string length runs past end of file", key);
        return 0;
    }
    if (t != SHARDLM_GGUF_ARRAY) return fail(c->g, "metadata key '%s': unknown value type %u", key, t);
    if (depth >= GGUF_MAX_DEPTH) return fail(c->g, "metadata key '%s': arrays nested too deeply", key);
    uint32_t et;
    uint64_t n;
    if (take(c, &et, 4) || take(c, &n, 8)) return fail(c->g, "metadata key '%s': array header truncated", key);
    return skip_array(c, key, et, n, depth + 1);
}

static int skip_array(cursor *c, const char *key, uint32_t et, uint64_t n, int depth)
{
    size_t sz = scalar_size(et);
    if (sz) {
        if (n > left(c) / sz)
            return fail(c->g, "metadata key '%s': array of %llu %s elements runs past end of file", key,
                        (unsigned long long)n, shardlm_gguf_vtype_name(et));
        c->pos += n * sz;
        return 0;
    }
    if (et != SHARDLM_GGUF_STRING && et != SHARDLM_GGUF_ARRAY)
        return fail(c->g, "metadata key '%s': unknown array element type %u", key, et);
    /* Every string or array element takes at least 8 (12) bytes. */
    if (n > left(c) / 8)
        return fail(c->g, "metadata key '%s': array of %llu %s elements runs past end of file", key,
                    (unsigned long long)n, shardlm_gguf_vtype_name(et));
    for (uint64_t i = 0; i < n; i++) {
        int rc = skip_value(c, key, et, depth);
        if (rc) return rc;
    }
    return 0;
}

/* Printable, one-line, bounded copy of a name from the file for messages. */
static void safe_name(char *out, size_t cap, const char *p, uint64_t len)
{
    size_t n = 0;
    for (uint64_t i = 0; i < len && n + 4 < cap; i++) {
        unsigned char ch = (unsigned char)p[i];
        out[n++] = (ch >= 32 && ch < 127) ? (char)ch : '?';
    }
    if (len > n && n + 4 >= cap) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = 0;
}

static int index_str_array(cursor *c, gguf_kv *kv)
{
    kv->arr_strs = malloc((size_t)(kv->arr_n ? kv->arr_n : 1) * sizeof *kv->arr_strs);
    if (!kv->arr_strs) {
        shardlm_err_set("%s: out of memory indexing a string array", c->g->path);
        return SHARDLM_ENOMEM;
    }
    cursor s = {c->g, (uint64_t)(kv->arr_data - c->g->map)};
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        shardlm_gguf_str str;
        kv->arr_strs[i] = c->g->map + s.pos;
        if (take_str(&s, &str)) return SHARDLM_ERUNTIME; /* cannot happen: checked by skip_array */
    }
    return 0;
}

static int parse_kv(cursor *c, uint64_t i, gguf_kv *kv)
{
    shardlm_gguf *g = c->g;
    if (take_str(c, &kv->key))
        return fail(g, "truncated in the key of metadata entry #%llu", (unsigned long long)i);
    char key[96];
    safe_name(key, sizeof key, kv->key.ptr, kv->key.len);
    if (take(c, &kv->type, 4)) return fail(g, "metadata key '%s': value type truncated", key);
    kv->val = g->map + c->pos;
    if (kv->type != SHARDLM_GGUF_ARRAY) return skip_value(c, key, kv->type, 0);
    if (take(c, &kv->arr_type, 4) || take(c, &kv->arr_n, 8))
        return fail(g, "metadata key '%s': array header truncated", key);
    kv->arr_data = g->map + c->pos;
    int rc = skip_array(c, key, kv->arr_type, kv->arr_n, 1);
    if (rc == 0 && kv->arr_type == SHARDLM_GGUF_STRING) rc = index_str_array(c, kv);
    return rc;
}

static int parse_header(cursor *c)
{
    shardlm_gguf *g = c->g;
    if (g->size < 24) {
        if (g->size >= 4 && memcmp(g->map, "GGUF", 4) != 0) return fail(g, "bad magic (not a GGUF file)");
        return fail(g, "truncated header (file is %llu bytes, a GGUF header needs 24)",
                    (unsigned long long)g->size);
    }
    if (memcmp(g->map, "GGUF", 4) != 0) return fail(g, "bad magic (not a GGUF file)");
    c->pos = 4;
    take(c, &g->version, 4);
    if (g->version != 2 && g->version != 3)
        return fail(g, "unsupported GGUF version %u (supported: 2 and 3)", g->version);
    take(c, &g->n_tensors, 8);
    take(c, &g->n_kv, 8);
    /* A tensor entry takes at least 24 bytes and a metadata entry 13, so
     * larger counts cannot be genuine and would overflow allocations. */
    if (g->n_tensors > left(c) / 24)
        return fail(g, "tensor count %llu is larger than the file can hold", (unsigned long long)g->n_tensors);
    if (g->n_kv > left(c) / 13)
        return fail(g, "metadata key count %llu is larger than the file can hold", (unsigned long long)g->n_kv);
    return 0;
}

static int parse_metadata(cursor *c)
{
    shardlm_gguf *g = c->g;
    g->kvs = calloc((size_t)(g->n_kv ? g->n_kv : 1), sizeof *g->kvs);
    if (!g->kvs || gguf_hash_init(&g->kv_index, g->n_kv)) {
        shardlm_err_set("%s: out of memory for %llu metadata entries", g->path, (unsigned long long)g->n_kv);
        return SHARDLM_ENOMEM;
    }
    for (uint64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kvs[i];
        int rc = parse_kv(c, i, kv);
        if (rc) return rc;
        if (gguf_hash_insert(&g->kv_index, kv->key.ptr, kv->key.len, i) != (int64_t)i) {
            char key[96];
            safe_name(key, sizeof key, kv->key.ptr, kv->key.len);
            return fail(g, "duplicate metadata key '%s'", key);
        }
    }
    return 0;
}

/* Reads the alignment from general.alignment (any unsigned integer type). */
static int read_alignment(shardlm_gguf *g)
{
    g->alignment = 32;
    uint64_t a;
    int rc = shardlm_gguf_get_u64(g, "general.alignment", &a);
    if (rc == 1) return 0;
    if (rc) return rc;
    if (a == 0 || (a & (a - 1)) || a > (1u << 30))
        return fail(g, "general.alignment %llu is not a power of two (up to 2^30)", (unsigned long long)a);
    g->alignment = a;
    return 0;
}

/* Dimensions, element count, type and byte size of one tensor. */
static int check_shape(shardlm_gguf *g, shardlm_gguf_tensor *t, const char *nm)
{
    if (t->n_dims == 0 || t->n_dims > 4) return fail(g, "tensor '%s': %u dimensions (1 to 4 allowed)", nm, t->n_dims);
    uint64_t count = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX)
            return fail(g, "tensor '%s': dimension %u has invalid size %llu", nm, d, (unsigned long long)t->ne[d]);
        if (__builtin_mul_overflow(count, t->ne[d], &count) || count > (uint64_t)INT64_MAX)
            return fail(g, "tensor '%s': element count overflows", nm);
    }
    /* Any type whose layout is known passes, computable or not: `shardlm
     * info` lists it and the loader refuses it by name. */
    if (!shardlm_dtype_known(t->type)) {
        if (strncmp(shardlm_dtype_name(t->type), "type#", 5) == 0)
            return fail(g, "tensor '%s': unknown type id %u (not a ggml type)", nm, t->type);
        return fail(g, "tensor '%s': type %s (id %u) was removed from ggml and its layout is not known", nm,
                    shardlm_dtype_name(t->type), t->type);
    }
    size_t be = shardlm_dtype_block_elems(t->type);
    if (t->ne[0] % be)
        return fail(g, "tensor '%s': ne[0]=%llu is not a multiple of the block size %zu of %s", nm,
                    (unsigned long long)t->ne[0], be, shardlm_dtype_name(t->type));
    uint64_t row = shardlm_dtype_row_bytes(t->type, t->ne[0]);
    if (row == 0 || __builtin_mul_overflow(row, count / t->ne[0], &t->nbytes))
        return fail(g, "tensor '%s': byte size overflows", nm);
    return 0;
}

static int parse_tensor(cursor *c, uint64_t i, shardlm_gguf_tensor *t, shardlm_gguf_str *name)
{
    shardlm_gguf *g = c->g;
    if (take_str(c, name)) return fail(g, "truncated in the name of tensor #%llu", (unsigned long long)i);
    char nm[96];
    safe_name(nm, sizeof nm, name->ptr, name->len);
    if (name->len == 0 || memchr(name->ptr, 0, name->len))
        return fail(g, "tensor #%llu: name '%s' is empty or contains a NUL byte", (unsigned long long)i, nm);
    if (take(c, &t->n_dims, 4)) return fail(g, "tensor '%s': truncated tensor entry", nm);
    if (t->n_dims == 0 || t->n_dims > 4) return fail(g, "tensor '%s': %u dimensions (1 to 4 allowed)", nm, t->n_dims);
    for (int d = 0; d < 4; d++) t->ne[d] = 1;
    if (take(c, t->ne, 8ull * t->n_dims) || take(c, &t->type, 4) || take(c, &t->offset, 8))
        return fail(g, "tensor '%s': truncated tensor entry", nm);
    return check_shape(g, t, nm);
}

/* Name copies, the tensor hash, data placement and bounds. */
static int place_tensors(shardlm_gguf *g, const shardlm_gguf_str *names, uint64_t names_len)
{
    g->names = malloc(names_len + g->n_tensors + 1);
    if (!g->names || gguf_hash_init(&g->tensor_index, g->n_tensors)) {
        shardlm_err_set("%s: out of memory for %llu tensors", g->path, (unsigned long long)g->n_tensors);
        return SHARDLM_ENOMEM;
    }
    char *p = g->names;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        shardlm_gguf_tensor *t = &g->tensors[i];
        memcpy(p, names[i].ptr, names[i].len);
        p[names[i].len] = 0;
        t->name = p;
        p += names[i].len + 1;
        char nm[96];
        safe_name(nm, sizeof nm, t->name, names[i].len);
        if (gguf_hash_insert(&g->tensor_index, t->name, names[i].len, i) != (int64_t)i)
            return fail(g, "duplicate tensor name '%s'", nm);
        if (t->offset % g->alignment)
            return fail(g, "tensor '%s': offset %llu is not a multiple of the alignment %llu", nm,
                        (unsigned long long)t->offset, (unsigned long long)g->alignment);
        uint64_t avail = g->size - g->data_off;
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return fail(g, "tensor '%s': data (offset %llu, %llu bytes) runs past end of file", nm,
                        (unsigned long long)t->offset, (unsigned long long)t->nbytes);
        t->data = g->map + g->data_off + t->offset;
    }
    return 0;
}

static int parse_tensors(cursor *c)
{
    shardlm_gguf *g = c->g;
    size_t n = (size_t)(g->n_tensors ? g->n_tensors : 1);
    g->tensors = calloc(n, sizeof *g->tensors);
    shardlm_gguf_str *names = calloc(n, sizeof *names);
    int rc = 0;
    if (!g->tensors || !names) {
        shardlm_err_set("%s: out of memory for %llu tensors", g->path, (unsigned long long)g->n_tensors);
        rc = SHARDLM_ENOMEM;
    }
    uint64_t names_len = 0;
    for (uint64_t i = 0; !rc && i < g->n_tensors; i++) {
        rc = parse_tensor(c, i, &g->tensors[i], &names[i]);
        names_len += names[i].len; /* bounded by the file size */
    }
    if (!rc) rc = read_alignment(g);
    if (!rc) {
        uint64_t pad = (g->alignment - c->pos % g->alignment) % g->alignment;
        /* A tensor-less file may end without the final padding. */
        g->data_off = pad > left(c) ? g->size : c->pos + pad;
        if (g->n_tensors && pad > left(c)) rc = fail(g, "truncated before the tensor data section");
    }
    if (!rc) rc = place_tensors(g, names, names_len);
    free(names);
    return rc;
}

static int map_file(shardlm_gguf *g)
{
    int fd = open(g->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block us */
    if (fd < 0) return fail(g, "cannot open: %s", strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) rc = fail(g, "cannot stat: %s", strerror(errno));
    else if (!S_ISREG(st.st_mode)) rc = fail(g, "not a regular file");
    else if (st.st_size == 0) rc = fail(g, "empty file (0 bytes), not a GGUF file");
    if (!rc) {
        g->size = (uint64_t)st.st_size;
        void *m = mmap(NULL, (size_t)g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) rc = fail(g, "cannot map %llu bytes: %s", (unsigned long long)g->size, strerror(errno));
        else g->map = m;
    }
    close(fd);
    return rc;
}

int shardlm_gguf_open(const char *path, shardlm_gguf **out)
{
    *out = NULL;
    shardlm_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        shardlm_err_set("%s: out of memory", path);
        return SHARDLM_ENOMEM;
    }
    cursor c = {g, 0};
    int rc = map_file(g);
    if (!rc) rc = parse_header(&c);
    if (!rc) rc = parse_metadata(&c);
    if (!rc) rc = parse_tensors(&c);
    if (rc) {
        shardlm_gguf_close(g);
        return rc;
    }
    uint64_t h = shardlm_fnv1a64(SHARDLM_FNV_INIT, g->map, (size_t)g->data_off);
    g->fingerprint = shardlm_fnv1a64(h, &g->size, sizeof g->size);
    *out = g;
    return SHARDLM_OK;
}

void shardlm_gguf_close(shardlm_gguf *g)
{
    if (!g) return;
    if (g->map) munmap((void *)g->map, (size_t)g->size);
    for (uint64_t i = 0; g->kvs && i < g->n_kv; i++) free(g->kvs[i].arr_strs);
    free(g->kvs);
    free(g->tensors);
    free(g->names);
    gguf_hash_free(&g->kv_index);
    gguf_hash_free(&g->tensor_index);
    free(g->path);
    free(g);
}

const char *shardlm_gguf_path(const shardlm_gguf *g) { return g->path; }
uint32_t shardlm_gguf_version(const shardlm_gguf *g) { return g->version; }
uint64_t shardlm_gguf_alignment(const shardlm_gguf *g) { return g->alignment; }
uint64_t shardlm_gguf_file_size(const shardlm_gguf *g) { return g->size; }
uint64_t shardlm_gguf_data_offset(const shardlm_gguf *g) { return g->data_off; }
uint64_t shardlm_gguf_fingerprint(const shardlm_gguf *g) { return g->fingerprint; }
uint64_t shardlm_gguf_n_tensors(const shardlm_gguf *g) { return g->n_tensors; }
uint64_t shardlm_gguf_n_kv(const shardlm_gguf *g) { return g->n_kv; }

const shardlm_gguf_tensor *shardlm_gguf_tensor_at(const shardlm_gguf *g, uint64_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const shardlm_gguf_tensor *shardlm_gguf_find_tensor(const shardlm_gguf *g, const char *name)
{
    int64_t i = gguf_hash_find(&g->tensor_index, name, strlen(name));
    return i < 0 ? NULL : &g->tensors[i];
}

shardlm_gguf_str shardlm_gguf_kv_key(const shardlm_gguf *g, uint64_t i)
{
    shardlm_gguf_str none = {"", 0};
    return i < g->n_kv ? g->kvs[i].key : none;
}

shardlm_gguf_vtype shardlm_gguf_kv_type(const shardlm_gguf *g, uint64_t i)
{
    return i < g->n_kv ? (shardlm_gguf_vtype)g->kvs[i].type : (shardlm_gguf_vtype)-1;
}

int64_t shardlm_gguf_find_kv(const shardlm_gguf *g, const char *key)
{
    return gguf_hash_find(&g->kv_index, key, strlen(key));
}

/* For gguf_meta.c: the parsed entry behind index i. */
int gguf_kv_view(const shardlm_gguf *g, uint64_t i, gguf_kv_info *out)
{
    if (i >= g->n_kv) return -1;
    const gguf_kv *kv = &g->kvs[i];
    out->type = kv->type;
    out->val = kv->val;
    out->arr_type = kv->arr_type;
    out->arr_n = kv->arr_n;
    out->arr_data = kv->arr_data;
    out->arr_strs = kv->arr_strs;
    return 0;
}
