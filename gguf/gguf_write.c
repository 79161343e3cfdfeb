/* gguf_write.c - GGUF v3 writer. Metadata and the tensor table are built
 * in memory; tensor bytes are then streamed one tensor at a time through
 * the caller's fill callback into PATH.tmp, which is renamed over PATH only
 * when everything was written. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_internal.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_kernels.h"

typedef struct {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[4];
    uint64_t nbytes, offset;
} wtensor;

struct shardlm_gguf_writer {
    uint32_t alignment;
    uint8_t *buf; /* serialised metadata entries */
    size_t len, cap;
    uint64_t n_kv;
    char **keys;
    wtensor *t;
    uint64_t n_t, cap_t;
    char err[256]; /* first declaration error, reported by write */
};

static void bad(shardlm_gguf_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(shardlm_gguf_writer *w, const char *fmt, ...)
{
    if (w->err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
}

static void put(shardlm_gguf_writer *w, const void *p, size_t n)
{
    if (w->err[0] || n == 0) return; /* p may be NULL when n is 0 */
    if (w->cap - w->len < n) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap - w->len < n) cap *= 2;
        uint8_t *nb = realloc(w->buf, cap);
        if (!nb) return bad(w, "out of memory building metadata");
        w->buf = nb;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void put_u32(shardlm_gguf_writer *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(shardlm_gguf_writer *w, uint64_t v) { put(w, &v, 8); }
static void put_str(shardlm_gguf_writer *w, const char *s)
{
    size_t n = strlen(s);
    put_u64(w, n);
    put(w, s, n);
}

static size_t scalar_size(uint32_t t)
{
    static const uint8_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sz ? sz[t] : 0;
}

/* Starts an entry: key and value type. Rejects duplicate keys. */
static int begin(shardlm_gguf_writer *w, const char *key, uint32_t type)
{
    if (w->err[0]) return -1;
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return bad(w, "duplicate metadata key '%s'", key), -1;
    char **nk = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *nk);
    char *k = strdup(key);
    if (nk) w->keys = nk;
    if (!nk || !k) {
        free(k);
        return bad(w, "out of memory building metadata"), -1;
    }
    w->keys[w->n_kv++] = k;
    put_str(w, key);
    put_u32(w, type);
    return 0;
}

shardlm_gguf_writer *shardlm_gguf_writer_new(uint32_t alignment)
{
    if (!alignment) alignment = 32;
    if (alignment & (alignment - 1)) return NULL;
    shardlm_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->alignment = alignment;
    if (alignment != 32) shardlm_gguf_writer_u32(w, "general.alignment", alignment);
    return w;
}

void shardlm_gguf_writer_free(shardlm_gguf_writer *w)
{
    if (!w) return;
    for (uint64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    for (uint64_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->keys);
    free(w->t);
    free(w->buf);
    free(w);
}

void shardlm_gguf_writer_scalar(shardlm_gguf_writer *w, const char *key, shardlm_gguf_vtype t, const void *v)
{
    size_t sz = scalar_size(t);
    if (!sz) return bad(w, "metadata key '%s': %s is not a scalar type", key, shardlm_gguf_vtype_name(t));
    if (begin(w, key, t) == 0) put(w, v, sz);
}

void shardlm_gguf_writer_u32(shardlm_gguf_writer *w, const char *key, uint32_t v)
{
    shardlm_gguf_writer_scalar(w, key, SHARDLM_GGUF_UINT32, &v);
}

void shardlm_gguf_writer_i32(shardlm_gguf_writer *w, const char *key, int32_t v)
{
    shardlm_gguf_writer_scalar(w, key, SHARDLM_GGUF_INT32, &v);
}

void shardlm_gguf_writer_f32(shardlm_gguf_writer *w, const char *key, float v)
{
    shardlm_gguf_writer_scalar(w, key, SHARDLM_GGUF_FLOAT32, &v);
}

void shardlm_gguf_writer_bool(shardlm_gguf_writer *w, const char *key, int v)
{
    uint8_t b = v != 0;
    shardlm_gguf_writer_scalar(w, key, SHARDLM_GGUF_BOOL, &b);
}

void shardlm_gguf_writer_str(shardlm_gguf_writer *w, const char *key, const char *v)
{
    if (begin(w, key, SHARDLM_GGUF_STRING) == 0) put_str(w, v);
}

void shardlm_gguf_writer_arr(shardlm_gguf_writer *w, const char *key, shardlm_gguf_vtype elem, const void *v,
                             uint64_t n)
{
    size_t sz = scalar_size(elem);
    if (!sz) return bad(w, "metadata key '%s': %s arrays need writer_arr_str", key, shardlm_gguf_vtype_name(elem));
    if (n > SIZE_MAX / sz) return bad(w, "metadata key '%s': array too large", key);
    if (begin(w, key, SHARDLM_GGUF_ARRAY)) return;
    put_u32(w, elem);
    put_u64(w, n);
    put(w, v, (size_t)n * sz);
}

void shardlm_gguf_writer_arr_str(shardlm_gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    if (begin(w, key, SHARDLM_GGUF_ARRAY)) return;
    put_u32(w, SHARDLM_GGUF_STRING);
    put_u64(w, n);
    for (uint64_t i = 0; i < n; i++) put_str(w, v[i]);
}

void shardlm_gguf_writer_arr_f32(shardlm_gguf_writer *w, const char *key, const float *v, uint64_t n)
{
    shardlm_gguf_writer_arr(w, key, SHARDLM_GGUF_FLOAT32, v, n);
}

void shardlm_gguf_writer_arr_i32(shardlm_gguf_writer *w, const char *key, const int32_t *v, uint64_t n)
{
    shardlm_gguf_writer_arr(w, key, SHARDLM_GGUF_INT32, v, n);
}

static void put_gstr(shardlm_gguf_writer *w, shardlm_gguf_str s)
{
    put_u64(w, s.len);
    put(w, s.ptr, (size_t)s.len);
}

/* Strings and string arrays are copied through the reader's accessors;
 * everything else is packed little-endian values, copied as bytes. */
void shardlm_gguf_writer_copy(shardlm_gguf_writer *w, const shardlm_gguf *src, uint64_t i)
{
    gguf_kv_info kv;
    if (w->err[0]) return;
    if (gguf_kv_view(src, i, &kv)) return bad(w, "metadata entry %llu of %s does not exist", (unsigned long long)i,
                                              shardlm_gguf_path(src));
    shardlm_gguf_str k = shardlm_gguf_kv_key(src, i);
    char *key = strndup(k.ptr, (size_t)k.len);
    if (!key) return bad(w, "out of memory building metadata");
    shardlm_gguf_str sv;
    if (begin(w, key, kv.type) == 0) {
        if (kv.type == SHARDLM_GGUF_STRING && shardlm_gguf_get_str(src, key, &sv) == SHARDLM_OK) {
            put_gstr(w, sv);
        } else if (kv.type == SHARDLM_GGUF_ARRAY) {
            put_u32(w, kv.arr_type);
            put_u64(w, kv.arr_n);
            for (uint64_t j = 0; kv.arr_type == SHARDLM_GGUF_STRING && j < kv.arr_n; j++)
                if (shardlm_gguf_arr_str(src, key, j, &sv) == SHARDLM_OK) put_gstr(w, sv);
            if (kv.arr_type != SHARDLM_GGUF_STRING && !scalar_size(kv.arr_type))
                bad(w, "metadata key '%s': arrays of %s cannot be copied", key, shardlm_gguf_vtype_name(kv.arr_type));
            else if (kv.arr_type != SHARDLM_GGUF_STRING)
                put(w, kv.arr_data, (size_t)kv.arr_n * scalar_size(kv.arr_type));
        } else {
            put(w, kv.val, scalar_size(kv.type));
        }
    }
    free(key);
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

/* Checks a declaration and computes its byte size. */
static int tensor_size(shardlm_gguf_writer *w, const wtensor *t, uint64_t *nbytes)
{
    if (!shardlm_dtype_known(t->type))
        return bad(w, "tensor '%s': type %s has no known block layout", t->name, shardlm_dtype_name(t->type)), -1;
    if (t->n_dims == 0 || t->n_dims > 4) return bad(w, "tensor '%s': %u dimensions", t->name, t->n_dims), -1;
    uint64_t rows = 1;
    for (uint32_t d = 1; d < 4; d++)
        if (__builtin_mul_overflow(rows, t->ne[d], &rows)) return bad(w, "tensor '%s': too large", t->name), -1;
    uint64_t row = shardlm_dtype_row_bytes(t->type, t->ne[0]);
    if (!t->ne[0] || !rows || !row)
        return bad(w, "tensor '%s': ne[0]=%llu is zero or not a multiple of the %s block", t->name,
                   (unsigned long long)t->ne[0], shardlm_dtype_name(t->type)), -1;
    if (__builtin_mul_overflow(row, rows, nbytes)) return bad(w, "tensor '%s': too large", t->name), -1;
    return 0;
}

void shardlm_gguf_writer_tensor(shardlm_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                const uint64_t *ne)
{
    if (w->err[0]) return;
    for (uint64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return bad(w, "duplicate tensor name '%s'", name);
    if (w->n_t == w->cap_t) {
        uint64_t cap = w->cap_t ? 2 * w->cap_t : 64;
        wtensor *nt = realloc(w->t, (size_t)cap * sizeof *nt);
        if (!nt) return bad(w, "out of memory declaring tensors");
        w->t = nt;
        w->cap_t = cap;
    }
    wtensor t = {.name = strdup(name), .type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    if (!t.name) return bad(w, "out of memory declaring tensors");
    for (uint32_t d = 0; d < n_dims && d < 4; d++) t.ne[d] = ne[d];
    uint64_t prev_end = w->n_t ? w->t[w->n_t - 1].offset + w->t[w->n_t - 1].nbytes : 0;
    t.offset = align_up(prev_end, w->alignment);
    w->t[w->n_t++] = t; /* owned from here, freed with the writer */
    tensor_size(w, &w->t[w->n_t - 1], &w->t[w->n_t - 1].nbytes);
}

/* Header, metadata and tensor table, padded to the alignment. */
static uint8_t *build_head(shardlm_gguf_writer *w, size_t *len)
{
    shardlm_gguf_writer h = {.alignment = w->alignment};
    put(&h, "GGUF", 4);
    put_u32(&h, 3);
    put_u64(&h, w->n_t);
    put_u64(&h, w->n_kv);
    put(&h, w->buf, w->len);
    for (uint64_t i = 0; i < w->n_t; i++) {
        put_str(&h, w->t[i].name);
        put_u32(&h, w->t[i].n_dims);
        put(&h, w->t[i].ne, 8ull * w->t[i].n_dims);
        put_u32(&h, w->t[i].type);
        put_u64(&h, w->t[i].offset);
    }
    static const uint8_t zeros[256];
    while (!h.err[0] && h.len % w->alignment) {
        size_t pad = (size_t)(w->alignment - h.len % w->alignment);
        put(&h, zeros, pad < sizeof zeros ? pad : sizeof zeros);
    }
    if (h.err[0]) {
        free(h.buf);
        return NULL;
    }
    *len = h.len;
    return h.buf;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t k = write(fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static int write_zeros(int fd, uint64_t n)
{
    static const uint8_t zeros[4096];
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (write_all(fd, zeros, k)) return -1;
        n -= k;
    }
    return 0;
}

/* Streams every tensor through one buffer as large as the largest. */
static int write_tensors(shardlm_gguf_writer *w, int fd, const char *path, shardlm_gguf_fill_fn fill, void *ctx)
{
    uint64_t max = 0, pos = 0;
    for (uint64_t i = 0; i < w->n_t; i++)
        if (w->t[i].nbytes > max) max = w->t[i].nbytes;
    uint8_t *buf = malloc((size_t)(max ? max : 1));
    if (!buf) {
        shardlm_err_set("%s: out of memory for a %llu-byte tensor", path, (unsigned long long)max);
        return SHARDLM_ENOMEM;
    }
    int rc = SHARDLM_OK;
    for (uint64_t i = 0; i < w->n_t && rc == SHARDLM_OK; i++) {
        const wtensor *t = &w->t[i];
        memset(buf, 0, (size_t)t->nbytes);
        if (fill && (rc = fill(ctx, i, buf, t->nbytes)) != SHARDLM_OK) break;
        if (write_zeros(fd, t->offset - pos) || write_all(fd, buf, (size_t)t->nbytes)) {
            shardlm_err_set("%s: write failed: %s", path, strerror(errno));
            rc = SHARDLM_ERUNTIME;
        }
        pos = t->offset + t->nbytes;
    }
    if (rc == SHARDLM_OK && write_zeros(fd, align_up(pos, w->alignment) - pos)) {
        shardlm_err_set("%s: write failed: %s", path, strerror(errno));
        rc = SHARDLM_ERUNTIME;
    }
    free(buf);
    return rc;
}

int shardlm_gguf_writer_write(shardlm_gguf_writer *w, const char *path, shardlm_gguf_fill_fn fill, void *ctx)
{
    if (w->err[0]) {
        shardlm_err_set("%s: %s", path, w->err);
        return SHARDLM_EINPUT;
    }
    size_t head_len;
    uint8_t *head = build_head(w, &head_len);
    if (!head) {
        shardlm_err_set("%s: out of memory building the header", path);
        return SHARDLM_ENOMEM;
    }
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        shardlm_err_set("%.200s...: path too long", path);
        free(head);
        return SHARDLM_EINPUT;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        shardlm_err_set("%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(head);
        return SHARDLM_EINPUT;
    }
    int rc = SHARDLM_OK;
    if (write_all(fd, head, head_len)) {
        shardlm_err_set("%s: write failed: %s", path, strerror(errno));
        rc = SHARDLM_ERUNTIME;
    }
    free(head);
    if (rc == SHARDLM_OK) rc = write_tensors(w, fd, path, fill, ctx);
    if (close(fd) != 0 && rc == SHARDLM_OK) {
        shardlm_err_set("%s: write failed: %s", path, strerror(errno));
        rc = SHARDLM_ERUNTIME;
    }
    if (rc == SHARDLM_OK && rename(tmp, path) != 0) {
        shardlm_err_set("%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        rc = SHARDLM_ERUNTIME;
    }
    if (rc != SHARDLM_OK) unlink(tmp);
    return rc;
}
