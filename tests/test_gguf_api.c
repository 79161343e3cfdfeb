/* test_gguf_api.c - GGUF writer -> reader round trips of every value
 * type, arrays, alignment and tensor bytes; lookup errors; nested arrays;
 * and random corruptions of a valid file, which must fail cleanly. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf_test_helpers.h"
#include "shardlm_model.h"

/* ---- writer -> reader round trip ---- */

/* Tensor i's byte j is (i * 31 + j) & 0xff. */
static int pattern_fill(void *ctx, uint64_t index, void *dst, uint64_t nbytes)
{
    int *calls = ctx;
    (*calls)++;
    for (uint64_t j = 0; j < nbytes; j++) ((uint8_t *)dst)[j] = (uint8_t)(index * 31 + j);
    return 0;
}

static const char *write_roundtrip_file(void)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/rt.gguf", tu_tmpdir());
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(64);
    cr_assert(w);
    uint8_t u8 = 200; int8_t i8 = -100; uint16_t u16 = 60000; int16_t i16 = -30000;
    uint64_t u64 = 1ull << 60; int64_t i64 = -(1ll << 50); double f64 = 0.1;
    shardlm_gguf_writer_scalar(w, "t.u8", SHARDLM_GGUF_UINT8, &u8);
    shardlm_gguf_writer_scalar(w, "t.i8", SHARDLM_GGUF_INT8, &i8);
    shardlm_gguf_writer_scalar(w, "t.u16", SHARDLM_GGUF_UINT16, &u16);
    shardlm_gguf_writer_scalar(w, "t.i16", SHARDLM_GGUF_INT16, &i16);
    shardlm_gguf_writer_u32(w, "t.u32", 4000000000u);
    shardlm_gguf_writer_i32(w, "t.i32", -7);
    shardlm_gguf_writer_f32(w, "t.f32", 1.5f);
    shardlm_gguf_writer_bool(w, "t.bool", 1);
    shardlm_gguf_writer_str(w, "t.str", "héllo\nworld");
    shardlm_gguf_writer_scalar(w, "t.u64", SHARDLM_GGUF_UINT64, &u64);
    shardlm_gguf_writer_scalar(w, "t.i64", SHARDLM_GGUF_INT64, &i64);
    shardlm_gguf_writer_scalar(w, "t.f64", SHARDLM_GGUF_FLOAT64, &f64);
    const int32_t ai[4] = {1, -2, 3, -4};
    const float af[3] = {0.5f, -1.25f, 1e-5f};
    const char *as[5] = {"a", "", "ccc", "▁d", "<0x0A>"};
    const uint64_t a64[2] = {5, UINT64_MAX};
    shardlm_gguf_writer_arr_i32(w, "a.i32", ai, 4);
    shardlm_gguf_writer_arr_f32(w, "a.f32", af, 3);
    shardlm_gguf_writer_arr_str(w, "a.str", as, 5);
    shardlm_gguf_writer_arr(w, "a.u64", SHARDLM_GGUF_UINT64, a64, 2);
    shardlm_gguf_writer_arr_i32(w, "a.empty", NULL, 0);
    const uint64_t ne_a[2] = {3, 2}, ne_b[1] = {5}, ne_c[2] = {64, 3}, ne_d[3] = {32, 1, 2}, ne_e[2] = {2, 2};
    shardlm_gguf_writer_tensor(w, "a", SHARDLM_DT_F32, 2, ne_a);
    shardlm_gguf_writer_tensor(w, "b", SHARDLM_DT_F16, 1, ne_b);
    shardlm_gguf_writer_tensor(w, "c", SHARDLM_DT_Q8_0, 2, ne_c);
    shardlm_gguf_writer_tensor(w, "d", SHARDLM_DT_Q4_0, 3, ne_d);
    shardlm_gguf_writer_tensor(w, "e", SHARDLM_DT_BF16, 2, ne_e);
    int calls = 0;
    cr_assert_eq(shardlm_gguf_writer_write(w, path, pattern_fill, &calls), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(calls, 5);
    shardlm_gguf_writer_free(w);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_assert_neq(access(tmp, F_OK), 0, "the .tmp file was renamed away");
    return path;
}

Test(gguf_api, roundtrip_scalars)
{
    shardlm_gguf *g;
    const char *path = write_roundtrip_file();
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_gguf_version(g), 3);
    cr_assert_eq(shardlm_gguf_alignment(g), 64);
    cr_assert_eq(shardlm_gguf_n_kv(g), 18, "17 keys + general.alignment");
    uint64_t u; int64_t i; double d; int b;
    cr_assert_eq(shardlm_gguf_get_u64(g, "t.u8", &u), 0); cr_assert_eq(u, 200);
    cr_assert_eq(shardlm_gguf_get_i64(g, "t.i8", &i), 0); cr_assert_eq(i, -100);
    cr_assert_eq(shardlm_gguf_get_u64(g, "t.u16", &u), 0); cr_assert_eq(u, 60000);
    cr_assert_eq(shardlm_gguf_get_i64(g, "t.i16", &i), 0); cr_assert_eq(i, -30000);
    cr_assert_eq(shardlm_gguf_get_u64(g, "t.u32", &u), 0); cr_assert_eq(u, 4000000000u);
    cr_assert_eq(shardlm_gguf_get_i64(g, "t.i32", &i), 0); cr_assert_eq(i, -7);
    cr_assert_eq(shardlm_gguf_get_f64(g, "t.f32", &d), 0); cr_assert_eq(d, 1.5);
    cr_assert_eq(shardlm_gguf_get_bool(g, "t.bool", &b), 0); cr_assert_eq(b, 1);
    cr_assert_eq(shardlm_gguf_get_u64(g, "t.u64", &u), 0); cr_assert_eq(u, 1ull << 60);
    cr_assert_eq(shardlm_gguf_get_i64(g, "t.i64", &i), 0); cr_assert_eq(i, -(1ll << 50));
    cr_assert_eq(shardlm_gguf_get_f64(g, "t.f64", &d), 0); cr_assert_eq(d, 0.1);
    cr_assert_eq(shardlm_gguf_get_f64(g, "t.i32", &d), 0); cr_assert_eq(d, -7.0, "integers read as doubles");
    shardlm_gguf_str s;
    cr_assert_eq(shardlm_gguf_get_str(g, "t.str", &s), 0);
    cr_assert_eq(s.len, strlen("héllo\nworld"));
    cr_assert(memcmp(s.ptr, "héllo\nworld", s.len) == 0);
    int64_t k = shardlm_gguf_find_kv(g, "t.bool");
    cr_assert_geq(k, 0);
    cr_assert_eq(shardlm_gguf_kv_type(g, (uint64_t)k), SHARDLM_GGUF_BOOL);
    cr_assert_eq(shardlm_gguf_kv_key(g, (uint64_t)k).len, 6);
    cr_assert_eq(shardlm_gguf_find_kv(g, "nope"), -1);
    shardlm_gguf_close(g);
}

Test(gguf_api, lookup_errors)
{
    shardlm_gguf *g;
    const char *path = write_roundtrip_file();
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK);
    uint64_t u; int64_t i; int b; shardlm_gguf_str s; double d;
    cr_assert_eq(shardlm_gguf_get_u64(g, "absent.key", &u), 1);
    cr_assert_eq(shardlm_gguf_get_u64(g, "t.str", &u), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "'t.str' has type string, expected an unsigned integer"), "%s",
              shardlm_err_get());
    cr_assert(strstr(shardlm_err_get(), path));
    cr_assert_eq(shardlm_gguf_get_u64(g, "t.i32", &u), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "'t.i32' is negative (-7)"), "%s", shardlm_err_get());
    cr_assert_eq(shardlm_gguf_get_u64(g, "t.f32", &u), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_gguf_get_i64(g, "a.i32", &i), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_gguf_get_bool(g, "t.u8", &b), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_gguf_get_str(g, "t.u8", &s), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_gguf_arr_str(g, "a.str", 5, &s), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "index 5 is out of range"), "%s", shardlm_err_get());
    cr_assert_eq(shardlm_gguf_arr_str(g, "a.i32", 0, &s), SHARDLM_EINPUT);
    cr_assert_eq(shardlm_gguf_arr_f64(g, "a.str", 0, &d), SHARDLM_EINPUT);
    shardlm_gguf_close(g);
}

Test(gguf_api, roundtrip_arrays)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(write_roundtrip_file(), &g), SHARDLM_OK);
    shardlm_gguf_vtype et;
    uint64_t n;
    const void *data;
    cr_assert_eq(shardlm_gguf_get_arr(g, "a.i32", &et, &n, &data), 0);
    cr_assert_eq(et, SHARDLM_GGUF_INT32);
    cr_assert_eq(n, 4);
    int32_t v[4];
    memcpy(v, data, sizeof v);
    cr_assert(v[0] == 1 && v[1] == -2 && v[3] == -4);
    double d;
    cr_assert_eq(shardlm_gguf_arr_f64(g, "a.i32", 1, &d), 0); cr_assert_eq(d, -2.0);
    cr_assert_eq(shardlm_gguf_arr_f64(g, "a.f32", 2, &d), 0); cr_assert_eq((float)d, 1e-5f);
    cr_assert_eq(shardlm_gguf_arr_f64(g, "a.u64", 1, &d), 0); cr_assert_eq(d, 18446744073709551615.0);
    cr_assert_eq(shardlm_gguf_get_arr(g, "a.empty", &et, &n, &data), 0);
    cr_assert_eq(n, 0);
    const char *want[5] = {"a", "", "ccc", "▁d", "<0x0A>"};
    for (int i = 4; i >= 0; i--) {
        shardlm_gguf_str s;
        cr_assert_eq(shardlm_gguf_arr_str(g, "a.str", (uint64_t)i, &s), 0);
        cr_assert_eq(s.len, strlen(want[i]));
        cr_assert(memcmp(s.ptr, want[i], s.len) == 0, "element %d", i);
    }
    char buf[256];
    shardlm_gguf_kv_format(g, (uint64_t)shardlm_gguf_find_kv(g, "a.str"), buf, sizeof buf);
    cr_assert_str_eq(buf, "string[5] [\"a\", \"\", \"ccc\", \"▁d\", \"<0x0A>\"]");
    shardlm_gguf_kv_format(g, (uint64_t)shardlm_gguf_find_kv(g, "a.f32"), buf, sizeof buf);
    cr_assert_str_eq(buf, "float32[3] [0.5, -1.25, 1e-05]");
    shardlm_gguf_kv_format(g, (uint64_t)shardlm_gguf_find_kv(g, "t.str"), buf, sizeof buf);
    cr_assert_str_eq(buf, "\"héllo\\x0aworld\"");
    shardlm_gguf_kv_format(g, (uint64_t)shardlm_gguf_find_kv(g, "t.i64"), buf, sizeof buf);
    cr_assert_str_eq(buf, "-1125899906842624");
    shardlm_gguf_close(g);
}

Test(gguf_api, roundtrip_tensors)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(write_roundtrip_file(), &g), SHARDLM_OK);
    cr_assert_eq(shardlm_gguf_n_tensors(g), 5);
    const uint64_t bytes[5] = {24, 10, 3 * 2 * 34, 2 * 18, 8};
    const uint32_t types[5] = {SHARDLM_DT_F32, SHARDLM_DT_F16, SHARDLM_DT_Q8_0, SHARDLM_DT_Q4_0, SHARDLM_DT_BF16};
    for (uint64_t i = 0; i < 5; i++) {
        const shardlm_gguf_tensor *t = shardlm_gguf_tensor_at(g, i);
        char name[2] = {(char)('a' + i), 0};
        cr_assert_str_eq(t->name, name);
        cr_assert_eq(shardlm_gguf_find_tensor(g, name), t);
        cr_assert_eq(t->type, types[i]);
        cr_assert_eq(t->nbytes, bytes[i], "tensor %s: %" PRIu64, name, t->nbytes);
        cr_assert_eq(t->offset % 64, 0);
        cr_assert_eq((uintptr_t)t->data % 64, 0, "data aligned in memory too");
        for (uint64_t j = 0; j < t->nbytes; j++) cr_assert_eq(t->data[j], (uint8_t)(i * 31 + j));
    }
    const shardlm_gguf_tensor *d = shardlm_gguf_find_tensor(g, "d");
    cr_assert(d->n_dims == 3 && d->ne[0] == 32 && d->ne[1] == 1 && d->ne[2] == 2 && d->ne[3] == 1);
    cr_assert_null(shardlm_gguf_find_tensor(g, "z"));
    cr_assert_null(shardlm_gguf_tensor_at(g, 5));
    cr_assert_eq(shardlm_gguf_file_size(g) % 64, 0, "the last tensor is padded too");
    shardlm_gguf_close(g);
}

Test(gguf_api, version2_and_fingerprint)
{
    const char *path = write_roundtrip_file();
    blob f;
    f.b = (uint8_t *)tu_read_file(path, &f.len);
    shardlm_gguf *g3, *g2;
    cr_assert_eq(shardlm_gguf_open(path, &g3), SHARDLM_OK);
    uint64_t fp3 = shardlm_gguf_fingerprint(g3);
    wr32(&f, 4, 2);
    cr_assert_eq(shardlm_gguf_open(save(&f, f.len, "v2.gguf"), &g2), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_gguf_version(g2), 2);
    cr_assert_neq(shardlm_gguf_fingerprint(g2), fp3, "the header is hashed");
    shardlm_gguf_close(g2);
    wr32(&f, 4, 3);
    f.b[f.len - 1] ^= 1; /* tensor bytes are not hashed */
    cr_assert_eq(shardlm_gguf_open(save(&f, f.len, "v3b.gguf"), &g2), SHARDLM_OK);
    cr_assert_eq(shardlm_gguf_fingerprint(g2), fp3);
    shardlm_gguf_close(g2);
    shardlm_gguf_close(g3);
    free(f.b);
}

/* Hand-built: one key holding an array of two int32 arrays. */
Test(gguf_api, nested_arrays)
{
    uint8_t b[256];
    size_t n = 0;
#define PUT(v) (memcpy(b + n, &(v), sizeof(v)), n += sizeof(v))
    uint32_t ver = 3, t_arr = 9, t_i32 = 5;
    uint64_t nt = 0, nkv = 1, klen = 4, two = 2;
    int32_t vals[2] = {1, 2};
    memcpy(b, "GGUF", 4);
    n = 4;
    PUT(ver); PUT(nt); PUT(nkv); PUT(klen);
    memcpy(b + n, "nest", 4);
    n += 4;
    PUT(t_arr); PUT(t_arr); PUT(two);
    for (int i = 0; i < 2; i++) {
        PUT(t_i32); PUT(two); PUT(vals);
    }
    blob f = {b, n};
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(save(&f, n, "nest.gguf"), &g), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_gguf_vtype et;
    uint64_t cnt;
    const void *data;
    cr_assert_eq(shardlm_gguf_get_arr(g, "nest", &et, &cnt, &data), 0);
    cr_assert(et == SHARDLM_GGUF_ARRAY && cnt == 2);
    double d;
    cr_assert_eq(shardlm_gguf_arr_f64(g, "nest", 0, &d), SHARDLM_EINPUT, "nested lookup is unsupported");
    shardlm_gguf_close(g);
    expect_info_error(save(&f, n - 3, "nest-cut.gguf"), "metadata key 'nest': array of 2 int32 elements runs past");
    uint32_t bad = 42;
    memcpy(b + n - 8 - 8 - 4, &bad, 4); /* second inner array's element type */
    expect_info_error(save(&f, n, "nest-type.gguf"), "metadata key 'nest': unknown array element type 42");
#undef PUT
}

Test(gguf_api, writer_errors)
{
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(0);
    uint64_t ne[1] = {33};
    shardlm_gguf_writer_tensor(w, "x", SHARDLM_DT_Q8_0, 1, ne);
    char path[512];
    snprintf(path, sizeof path, "%s/bad.gguf", tu_tmpdir());
    cr_assert_eq(shardlm_gguf_writer_write(w, path, NULL, NULL), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), path) && strstr(shardlm_err_get(), "'x'"), "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    w = shardlm_gguf_writer_new(0);
    shardlm_gguf_writer_u32(w, "k", 1);
    shardlm_gguf_writer_u32(w, "k", 2);
    cr_assert_eq(shardlm_gguf_writer_write(w, path, NULL, NULL), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "duplicate metadata key 'k'"), "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    w = shardlm_gguf_writer_new(0);
    cr_assert_eq(shardlm_gguf_writer_write(w, "/nonexistent-dir/x.gguf", NULL, NULL), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "/nonexistent-dir/x.gguf: cannot create"), "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    cr_assert_neq(access(path, F_OK), 0, "nothing written on error");
}

/* ---- random corruption ---- */

static uint64_t fuzz_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 17;
}

/* Everything an open file offers must be readable without going out of
 * bounds (ASan checks that in the sanitizer build). */
static void touch_everything(const shardlm_gguf *g)
{
    char buf[512];
    for (uint64_t i = 0; i < shardlm_gguf_n_kv(g); i++) shardlm_gguf_kv_format(g, i, buf, sizeof buf);
    volatile uint8_t sink = 0;
    for (uint64_t i = 0; i < shardlm_gguf_n_tensors(g); i++) {
        const shardlm_gguf_tensor *t = shardlm_gguf_tensor_at(g, i);
        sink ^= t->data[0] ^ t->data[t->nbytes - 1];
        cr_assert_eq(shardlm_gguf_find_tensor(g, t->name), t);
    }
    (void)sink;
}

/* Random byte, word and length damage to the header, metadata and tensor
 * table: every open either succeeds or fails with one "PATH: ..." line. */
Test(gguf_api, random_corruptions)
{
    char base[512], path[512];
    snprintf(base, sizeof base, "%s/fuzz-base.gguf", tu_tmpdir());
    snprintf(path, sizeof path, "%s/fuzz.gguf", tu_tmpdir());
    shardlm_synth_opts o = {.dim = 32, .layers = 1, .heads = 2, .kv_heads = 1, .ffn = 32, .vocab = 260,
                            .context = 64, .type = SHARDLM_DT_Q4_0, .seed = 3};
    cr_assert_eq(shardlm_synth_write(&o, base), SHARDLM_OK, "%s", shardlm_err_get());
    size_t len;
    uint8_t *orig = (uint8_t *)tu_read_file(base, &len);
    uint8_t *b = malloc(len);
    cr_assert(orig && b);
    /* Damage goes into the header, metadata and tensor table only. */
    blob f = {orig, len};
    size_t head = find_kv(&f, NULL);
    for (uint64_t i = 0; i < rd64(&f, 8); i++) head = t_off(&f, head) + 8;
    shardlm_gguf *g;
    static const uint64_t words[] = {0, 1, 5, 31, 33, 0xffffffffull, 1ull << 32, 1ull << 62, UINT64_MAX};
    uint64_t s = 12345;
    int opened = 0, failed = 0;
    for (int it = 0; it < 1500; it++) {
        memcpy(b, orig, len);
        size_t n = len;
        int edits = 1 + (int)(fuzz_next(&s) % 3);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)(fuzz_next(&s) % (head - 8));
            switch (fuzz_next(&s) % 4) {
            case 0: b[at] = (uint8_t)fuzz_next(&s); break;
            case 1: memcpy(b + at, &words[fuzz_next(&s) % 9], 8); break;
            case 2: memcpy(b + at, &words[fuzz_next(&s) % 9], 4); break;
            default: n = (size_t)(fuzz_next(&s) % len); break;
            }
        }
        cr_assert_eq(tu_write_file(path, b, n), 0);
        int rc = shardlm_gguf_open(path, &g);
        if (rc == SHARDLM_OK) {
            touch_everything(g);
            shardlm_gguf_close(g);
            opened++;
            continue;
        }
        failed++;
        cr_assert(rc == SHARDLM_EINPUT || rc == SHARDLM_ENOMEM, "iteration %d: rc %d", it, rc);
        const char *err = shardlm_err_get();
        cr_assert(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':', "iteration %d: %s", it, err);
        cr_assert_null(strchr(err, '\n'), "one line: %s", err);
    }
    cr_assert_gt(failed, 500, "most corruptions are caught (%d failed, %d opened)", failed, opened);
    free(b);
    free(orig);
}
