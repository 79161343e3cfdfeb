/* gguf_meta.c - typed metadata lookups and human-readable formatting on
 * top of the validated entries that gguf.c parsed. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_internal.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"

enum { NUM_UINT, NUM_INT, NUM_FLOAT, NUM_OTHER };

typedef struct {
    int kind;
    uint64_t u;
    int64_t i;
    double f;
} gguf_num;

/* Decodes a scalar numeric value; kind NUM_OTHER for bool, string, array. */
static gguf_num read_num(uint32_t t, const uint8_t *p)
{
    gguf_num n = {NUM_OTHER, 0, 0, 0};
    uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64; float f32; double f64;
    switch (t) {
    case SHARDLM_GGUF_UINT8: memcpy(&u8, p, 1); n.kind = NUM_UINT; n.u = u8; break;
    case SHARDLM_GGUF_UINT16: memcpy(&u16, p, 2); n.kind = NUM_UINT; n.u = u16; break;
    case SHARDLM_GGUF_UINT32: memcpy(&u32, p, 4); n.kind = NUM_UINT; n.u = u32; break;
    case SHARDLM_GGUF_UINT64: memcpy(&u64, p, 8); n.kind = NUM_UINT; n.u = u64; break;
    case SHARDLM_GGUF_INT8: memcpy(&u8, p, 1); n.kind = NUM_INT; n.i = (int8_t)u8; break;
    case SHARDLM_GGUF_INT16: memcpy(&u16, p, 2); n.kind = NUM_INT; n.i = (int16_t)u16; break;
    case SHARDLM_GGUF_INT32: memcpy(&u32, p, 4); n.kind = NUM_INT; n.i = (int32_t)u32; break;
    case SHARDLM_GGUF_INT64: memcpy(&u64, p, 8); n.kind = NUM_INT; n.i = (int64_t)u64; break;
    case SHARDLM_GGUF_FLOAT32: memcpy(&f32, p, 4); n.kind = NUM_FLOAT; n.f = f32; break;
    case SHARDLM_GGUF_FLOAT64: memcpy(&f64, p, 8); n.kind = NUM_FLOAT; n.f = f64; break;
    default: break;
    }
    if (n.kind == NUM_UINT) n.f = (double)n.u;
    if (n.kind == NUM_INT) n.f = (double)n.i;
    return n;
}

static int wrong(const shardlm_gguf *g, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int wrong(const shardlm_gguf *g, const char *key, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    shardlm_err_set("%s: metadata key '%s' %s", shardlm_gguf_path(g), key, msg);
    return SHARDLM_EINPUT;
}

/* Finds key; returns 1 when absent. */
static int lookup(const shardlm_gguf *g, const char *key, gguf_kv_info *kv)
{
    int64_t i = shardlm_gguf_find_kv(g, key);
    if (i < 0) return 1;
    gguf_kv_view(g, (uint64_t)i, kv);
    return 0;
}

static int get_num(const shardlm_gguf *g, const char *key, gguf_num *n, const char *want)
{
    gguf_kv_info kv;
    if (lookup(g, key, &kv)) return 1;
    *n = read_num(kv.type, kv.val);
    if (n->kind == NUM_OTHER)
        return wrong(g, key, "has type %s, expected %s", shardlm_gguf_vtype_name(kv.type), want);
    return 0;
}

int shardlm_gguf_get_u64(const shardlm_gguf *g, const char *key, uint64_t *out)
{
    gguf_num n;
    int rc = get_num(g, key, &n, "an unsigned integer");
    if (rc) return rc;
    if (n.kind == NUM_FLOAT) return wrong(g, key, "is a float, expected an unsigned integer");
    if (n.kind == NUM_INT && n.i < 0) return wrong(g, key, "is negative (%" PRId64 ")", n.i);
    *out = n.kind == NUM_UINT ? n.u : (uint64_t)n.i;
    return SHARDLM_OK;
}

int shardlm_gguf_get_i64(const shardlm_gguf *g, const char *key, int64_t *out)
{
    gguf_num n;
    int rc = get_num(g, key, &n, "an integer");
    if (rc) return rc;
    if (n.kind == NUM_FLOAT) return wrong(g, key, "is a float, expected an integer");
    if (n.kind == NUM_UINT && n.u > (uint64_t)INT64_MAX) return wrong(g, key, "is too large for int64");
    *out = n.kind == NUM_UINT ? (int64_t)n.u : n.i;
    return SHARDLM_OK;
}

int shardlm_gguf_get_f64(const shardlm_gguf *g, const char *key, double *out)
{
    gguf_num n;
    int rc = get_num(g, key, &n, "a number");
    if (rc) return rc;
    *out = n.f;
    return SHARDLM_OK;
}

int shardlm_gguf_get_bool(const shardlm_gguf *g, const char *key, int *out)
{
    gguf_kv_info kv;
    if (lookup(g, key, &kv)) return 1;
    if (kv.type != SHARDLM_GGUF_BOOL)
        return wrong(g, key, "has type %s, expected bool", shardlm_gguf_vtype_name(kv.type));
    *out = kv.val[0] != 0;
    return SHARDLM_OK;
}

static shardlm_gguf_str str_at(const uint8_t *p)
{
    shardlm_gguf_str s;
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

int shardlm_gguf_get_str(const shardlm_gguf *g, const char *key, shardlm_gguf_str *out)
{
    gguf_kv_info kv;
    if (lookup(g, key, &kv)) return 1;
    if (kv.type != SHARDLM_GGUF_STRING)
        return wrong(g, key, "has type %s, expected string", shardlm_gguf_vtype_name(kv.type));
    *out = str_at(kv.val);
    return SHARDLM_OK;
}

int shardlm_gguf_get_arr(const shardlm_gguf *g, const char *key, shardlm_gguf_vtype *elem, uint64_t *n,
                         const void **data)
{
    gguf_kv_info kv;
    if (lookup(g, key, &kv)) return 1;
    if (kv.type != SHARDLM_GGUF_ARRAY)
        return wrong(g, key, "has type %s, expected an array", shardlm_gguf_vtype_name(kv.type));
    *elem = (shardlm_gguf_vtype)kv.arr_type;
    *n = kv.arr_n;
    *data = kv.arr_data;
    return SHARDLM_OK;
}

static int get_elem(const shardlm_gguf *g, const char *key, uint64_t i, gguf_kv_info *kv)
{
    if (lookup(g, key, kv)) return 1;
    if (kv->type != SHARDLM_GGUF_ARRAY)
        return wrong(g, key, "has type %s, expected an array", shardlm_gguf_vtype_name(kv->type));
    if (i >= kv->arr_n)
        return wrong(g, key, "has %" PRIu64 " elements, index %" PRIu64 " is out of range", kv->arr_n, i);
    return 0;
}

int shardlm_gguf_arr_str(const shardlm_gguf *g, const char *key, uint64_t i, shardlm_gguf_str *out)
{
    gguf_kv_info kv;
    int rc = get_elem(g, key, i, &kv);
    if (rc) return rc;
    if (kv.arr_type != SHARDLM_GGUF_STRING)
        return wrong(g, key, "is an array of %s, expected strings", shardlm_gguf_vtype_name(kv.arr_type));
    *out = str_at(kv.arr_strs[i]);
    return SHARDLM_OK;
}

static size_t elem_size(uint32_t t)
{
    static const uint8_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < sizeof sz ? sz[t] : 0;
}

int shardlm_gguf_arr_f64(const shardlm_gguf *g, const char *key, uint64_t i, double *out)
{
    gguf_kv_info kv;
    int rc = get_elem(g, key, i, &kv);
    if (rc) return rc;
    size_t sz = elem_size(kv.arr_type);
    gguf_num n = sz ? read_num(kv.arr_type, kv.arr_data + i * sz) : (gguf_num){NUM_OTHER, 0, 0, 0};
    if (n.kind == NUM_OTHER)
        return wrong(g, key, "is an array of %s, expected numbers", shardlm_gguf_vtype_name(kv.arr_type));
    *out = n.f;
    return SHARDLM_OK;
}

/* ---- formatting ---- */

typedef struct {
    char *buf;
    size_t cap, len;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...)
{
    if (b->len + 1 >= b->cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0) b->len = b->len + (size_t)n < b->cap ? b->len + (size_t)n : b->cap - 1;
}

/* Quoted, with control bytes escaped and long strings cut short. */
static void put_str(sbuf *b, shardlm_gguf_str s)
{
    put(b, "\"");
    uint64_t n = s.len < 48 ? s.len : 48;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') put(b, "\\%c", c);
        else if (c < 32 || c == 127) put(b, "\\x%02x", c);
        else put(b, "%c", c);
    }
    put(b, s.len > n ? "\"..." : "\"");
}

/* The shortest %g form that reads back as the same value (1e-05, not
 * 9.99999975e-06, for an f32 1e-5). */
static void put_float(sbuf *b, double v, int is_f32)
{
    char tmp[40];
    if (v > -1e15 && v < 1e15 && v == (double)(int64_t)v) return put(b, "%.0f", v);
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        double back = strtod(tmp, NULL);
        if (is_f32 ? (float)back == (float)v : back == v) break;
    }
    put(b, "%s", tmp);
}

static void put_scalar(sbuf *b, uint32_t t, const uint8_t *p)
{
    if (t == SHARDLM_GGUF_BOOL) return put(b, "%s", p[0] ? "true" : "false");
    if (t == SHARDLM_GGUF_STRING) return put_str(b, str_at(p));
    gguf_num n = read_num(t, p);
    if (n.kind == NUM_UINT) put(b, "%" PRIu64, n.u);
    else if (n.kind == NUM_INT) put(b, "%" PRId64, n.i);
    else if (n.kind == NUM_FLOAT) put_float(b, n.f, t == SHARDLM_GGUF_FLOAT32);
    else put(b, "?");
}

void shardlm_gguf_kv_format(const shardlm_gguf *g, uint64_t i, char *buf, size_t cap)
{
    if (!cap) return;
    buf[0] = 0;
    gguf_kv_info kv;
    if (gguf_kv_view(g, i, &kv)) return;
    sbuf b = {buf, cap, 0};
    if (kv.type != SHARDLM_GGUF_ARRAY) return put_scalar(&b, kv.type, kv.val);
    put(&b, "%s[%" PRIu64 "] [", shardlm_gguf_vtype_name(kv.arr_type), kv.arr_n);
    uint64_t show = kv.arr_n < 5 ? kv.arr_n : 5;
    size_t sz = elem_size(kv.arr_type);
    for (uint64_t j = 0; j < show; j++) {
        if (j) put(&b, ", ");
        if (kv.arr_type == SHARDLM_GGUF_STRING) put_str(&b, str_at(kv.arr_strs[j]));
        else if (sz) put_scalar(&b, kv.arr_type, kv.arr_data + j * sz);
        else put(&b, "[...]");
    }
    put(&b, kv.arr_n > show ? ", ...]" : "]");
}
