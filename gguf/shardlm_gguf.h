/* shardlm_gguf.h - GGUF v2/v3 reader (memory-mapped, validated up front)
 * and writer. All pointers returned by the reader point into the mapping and
 * stay valid until shardlm_gguf_close(). Strings in GGUF are not
 * NUL-terminated: they come back as {ptr, len}. */
#ifndef SHARDLM_GGUF_H
#define SHARDLM_GGUF_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SHARDLM_GGUF_UINT8 = 0,
    SHARDLM_GGUF_INT8 = 1,
    SHARDLM_GGUF_UINT16 = 2,
    SHARDLM_GGUF_INT16 = 3,
    SHARDLM_GGUF_UINT32 = 4,
    SHARDLM_GGUF_INT32 = 5,
    SHARDLM_GGUF_FLOAT32 = 6,
    SHARDLM_GGUF_BOOL = 7,
    SHARDLM_GGUF_STRING = 8,
    SHARDLM_GGUF_ARRAY = 9,
    SHARDLM_GGUF_UINT64 = 10,
    SHARDLM_GGUF_INT64 = 11,
    SHARDLM_GGUF_FLOAT64 = 12,
} shardlm_gguf_vtype;

typedef struct {
    const char *ptr;
    uint64_t len;
} shardlm_gguf_str;

typedef struct {
    const char *name; /* NUL-terminated copy owned by the reader */
    uint32_t type;    /* ggml type id (shardlm_dtype_known; maybe not computable) */
    uint32_t n_dims;
    uint64_t ne[4];   /* dims fastest-first, as in GGUF; unused dims are 1 */
    uint64_t offset;  /* relative to the start of the data section */
    uint64_t nbytes;
    const uint8_t *data;
} shardlm_gguf_tensor;

typedef struct shardlm_gguf shardlm_gguf;

/* Opens and validates a GGUF file. On failure returns SHARDLM_EINPUT (or
 * SHARDLM_ENOMEM) and sets the error text to "PATH: problem". */
int shardlm_gguf_open(const char *path, shardlm_gguf **out);
void shardlm_gguf_close(shardlm_gguf *g);

const char *shardlm_gguf_path(const shardlm_gguf *g);
uint32_t shardlm_gguf_version(const shardlm_gguf *g);
uint64_t shardlm_gguf_alignment(const shardlm_gguf *g);
uint64_t shardlm_gguf_file_size(const shardlm_gguf *g);
/* File offset of the tensor data section (the end of the header, metadata,
 * tensor table and padding): the bytes the fingerprint covers. */
uint64_t shardlm_gguf_data_offset(const shardlm_gguf *g);
/* Hash of the header, metadata and tensor table: equal files, equal prints. */
uint64_t shardlm_gguf_fingerprint(const shardlm_gguf *g);

/* Metadata. Lookups return SHARDLM_OK, 1 when the key is absent, or
 * SHARDLM_EINPUT (error text names file and key) when the type is wrong. */
uint64_t shardlm_gguf_n_kv(const shardlm_gguf *g);
shardlm_gguf_str shardlm_gguf_kv_key(const shardlm_gguf *g, uint64_t i);
shardlm_gguf_vtype shardlm_gguf_kv_type(const shardlm_gguf *g, uint64_t i);
int64_t shardlm_gguf_find_kv(const shardlm_gguf *g, const char *key);
int shardlm_gguf_get_u64(const shardlm_gguf *g, const char *key, uint64_t *out); /* any non-negative integer */
int shardlm_gguf_get_i64(const shardlm_gguf *g, const char *key, int64_t *out);  /* any integer */
int shardlm_gguf_get_f64(const shardlm_gguf *g, const char *key, double *out);   /* floats and integers */
int shardlm_gguf_get_bool(const shardlm_gguf *g, const char *key, int *out);
int shardlm_gguf_get_str(const shardlm_gguf *g, const char *key, shardlm_gguf_str *out);
/* Arrays: element type and count. For numeric element types *data points at
 * the packed little-endian values (possibly unaligned: read with memcpy). */
int shardlm_gguf_get_arr(const shardlm_gguf *g, const char *key, shardlm_gguf_vtype *elem,
                         uint64_t *n, const void **data);
/* Element i of a string array, in O(1). */
int shardlm_gguf_arr_str(const shardlm_gguf *g, const char *key, uint64_t i, shardlm_gguf_str *out);
/* Numeric array element i converted to double (any numeric element type). */
int shardlm_gguf_arr_f64(const shardlm_gguf *g, const char *key, uint64_t i, double *out);
/* A value of any scalar type formatted for humans (for `shardlm info`). */
void shardlm_gguf_kv_format(const shardlm_gguf *g, uint64_t i, char *buf, size_t cap);
/* "uint32", "string", "array", ... ("invalid" for unknown ids). */
const char *shardlm_gguf_vtype_name(shardlm_gguf_vtype t);

uint64_t shardlm_gguf_n_tensors(const shardlm_gguf *g);
const shardlm_gguf_tensor *shardlm_gguf_tensor_at(const shardlm_gguf *g, uint64_t i);
const shardlm_gguf_tensor *shardlm_gguf_find_tensor(const shardlm_gguf *g, const char *name);

/* ---- writer ---- */
typedef struct shardlm_gguf_writer shardlm_gguf_writer;

shardlm_gguf_writer *shardlm_gguf_writer_new(uint32_t alignment);
void shardlm_gguf_writer_free(shardlm_gguf_writer *w);
void shardlm_gguf_writer_u32(shardlm_gguf_writer *w, const char *key, uint32_t v);
void shardlm_gguf_writer_i32(shardlm_gguf_writer *w, const char *key, int32_t v);
void shardlm_gguf_writer_f32(shardlm_gguf_writer *w, const char *key, float v);
void shardlm_gguf_writer_bool(shardlm_gguf_writer *w, const char *key, int v);
void shardlm_gguf_writer_str(shardlm_gguf_writer *w, const char *key, const char *v);
void shardlm_gguf_writer_arr_str(shardlm_gguf_writer *w, const char *key, const char *const *v, uint64_t n);
void shardlm_gguf_writer_arr_f32(shardlm_gguf_writer *w, const char *key, const float *v, uint64_t n);
void shardlm_gguf_writer_arr_i32(shardlm_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
/* Any scalar numeric or bool type t; v points at its little-endian value. */
void shardlm_gguf_writer_scalar(shardlm_gguf_writer *w, const char *key, shardlm_gguf_vtype t, const void *v);
/* An array of any scalar numeric or bool type (packed little-endian values). */
void shardlm_gguf_writer_arr(shardlm_gguf_writer *w, const char *key, shardlm_gguf_vtype elem, const void *v,
                             uint64_t n);
/* Copies metadata entry i of an open file (key, type and value) verbatim. */
void shardlm_gguf_writer_copy(shardlm_gguf_writer *w, const shardlm_gguf *src, uint64_t i);
/* Declares a tensor; its bytes are produced later, in declaration order, by
 * fill(ctx, tensor_index, dst, nbytes) during shardlm_gguf_writer_write, so
 * large files stream to disk without being held in memory. */
typedef int (*shardlm_gguf_fill_fn)(void *ctx, uint64_t index, void *dst, uint64_t nbytes);
void shardlm_gguf_writer_tensor(shardlm_gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                                const uint64_t *ne);
/* Errors (also a bad declaration earlier: a type without a known block
 * layout, ne[0] not a multiple of the block, duplicate name or key) come
 * back as a status, with
 * error text "PATH: problem". A fill returning nonzero aborts the write and
 * its status is returned. */
int shardlm_gguf_writer_write(shardlm_gguf_writer *w, const char *path, shardlm_gguf_fill_fn fill, void *ctx);

#endif
