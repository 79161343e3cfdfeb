/* gguf_test_helpers.h - helpers shared by the GGUF, synth and info tests:
 * running the CLI, making a small synth file, expecting one-line input
 * errors, and a minimal walker over a known-good GGUF to find the bytes a
 * test corrupts. Header-only because each test_*.c builds on its own. */
#ifndef SHARDLM_GGUF_TEST_HELPERS_H
#define SHARDLM_GGUF_TEST_HELPERS_H

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_kernels.h"
#include "test_util.h"

static inline tu_result run3(const char *a, const char *b, const char *c)
{
    char *argv[] = {(char *)tu_bin(), (char *)a, (char *)b, (char *)c, NULL};
    return tu_run(argv, NULL, 60);
}

/* A small q8_0 synth file (dim 64, 1 layer, 4 heads, 2 kv, ffn 96, vocab 300). */
static inline const char *small_synth(const char *name, const char *type, const char *seed)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tu_tmpdir(), name);
    char *argv[] = {(char *)tu_bin(), "synth", "-o", path, "--dim", "64", "--layers", "1", "--heads", "4",
                    "--kv-heads", "2", "--ffn", "96", "--vocab", "300", "--type", (char *)type,
                    "--seed", (char *)seed, NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "synth failed: %s", r.err);
    tu_result_free(&r);
    return path;
}

static inline int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* `shardlm info PATH` must fail with exit 2 and one stderr line
 * "shardlm: PATH: ..." that contains `phrase`. */
static inline void expect_info_error(const char *path, const char *phrase)
{
    tu_result r = run3("info", path, NULL);
    cr_assert_eq(r.exit_code, 2, "exit %d for '%s'; stderr: %s", r.exit_code, phrase, r.err);
    cr_assert_eq(count_lines(r.err), 1, "want one stderr line, got: %s", r.err);
    char prefix[600];
    snprintf(prefix, sizeof prefix, "shardlm: %s: ", path);
    cr_assert(strncmp(r.err, prefix, strlen(prefix)) == 0, "stderr does not start with '%s': %s", prefix, r.err);
    cr_assert(strstr(r.err, phrase), "stderr lacks '%s': %s", phrase, r.err);
    cr_assert_eq(r.out_len, 0, "nothing on stdout: %s", r.out);
    tu_result_free(&r);
}

/* A minimal walker over a known-good file, to find what to corrupt. */
typedef struct {
    uint8_t *b;
    size_t len;
} blob;

static inline uint64_t rd64(const blob *f, size_t p)
{
    uint64_t v;
    memcpy(&v, f->b + p, 8);
    return v;
}

static inline uint32_t rd32(const blob *f, size_t p)
{
    uint32_t v;
    memcpy(&v, f->b + p, 4);
    return v;
}

static inline void wr64(blob *f, size_t p, uint64_t v) { memcpy(f->b + p, &v, 8); }
static inline void wr32(blob *f, size_t p, uint32_t v) { memcpy(f->b + p, &v, 4); }

static inline size_t skip_value(const blob *f, size_t p, uint32_t t)
{
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (t == 8) return p + 8 + rd64(f, p);
    if (t != 9) return p + sz[t];
    uint32_t et = rd32(f, p);
    uint64_t n = rd64(f, p + 4);
    p += 12;
    for (uint64_t i = 0; i < n; i++) p = skip_value(f, p, et);
    return p;
}

/* Offset of the value-type field of `key`, or of the first tensor entry
 * when key is NULL. */
static inline size_t find_kv(const blob *f, const char *key)
{
    uint64_t n_kv = rd64(f, 16);
    size_t p = 24;
    for (uint64_t i = 0; i < n_kv; i++) {
        uint64_t kl = rd64(f, p);
        int hit = key && kl == strlen(key) && memcmp(f->b + p + 8, key, kl) == 0;
        p += 8 + kl;
        if (hit) return p;
        p = skip_value(f, p + 4, rd32(f, p));
    }
    if (key) cr_assert_fail("key %s not in file", key);
    return p;
}

/* Offset of tensor `name`'s entry (its name-length field). */
static inline size_t find_tensor(const blob *f, const char *name)
{
    size_t p = find_kv(f, NULL);
    for (uint64_t i = 0; i < rd64(f, 8); i++) {
        uint64_t nl = rd64(f, p);
        if (nl == strlen(name) && memcmp(f->b + p + 8, name, nl) == 0) return p;
        uint32_t nd = rd32(f, p + 8 + nl);
        p += 8 + nl + 4 + 8ull * nd + 4 + 8;
    }
    cr_assert_fail("tensor %s not in file", name);
    return 0;
}

/* Field offsets inside a tensor entry. */
static inline size_t t_ndims(const blob *f, size_t e) { return e + 8 + rd64(f, e); }
static inline size_t t_ne(const blob *f, size_t e) { return t_ndims(f, e) + 4; }
static inline size_t t_type(const blob *f, size_t e) { return t_ne(f, e) + 8ull * rd32(f, t_ndims(f, e)); }
static inline size_t t_off(const blob *f, size_t e) { return t_type(f, e) + 4; }

static inline blob load_base(void)
{
    const char *src = small_synth("base.gguf", "q8_0", "7");
    blob f;
    f.b = (uint8_t *)tu_read_file(src, &f.len);
    cr_assert(f.b);
    return f;
}

/* Writes the first `len` bytes of f as NAME in the scratch dir. */
static inline const char *save(const blob *f, size_t len, const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tu_tmpdir(), name);
    cr_assert_eq(tu_write_file(path, f->b, len), 0);
    return path;
}

static inline uint64_t u64_of(const shardlm_gguf *g, const char *key)
{
    uint64_t v = 0;
    cr_assert_eq(shardlm_gguf_get_u64(g, key, &v), SHARDLM_OK, "%s: %s", key, shardlm_err_get());
    return v;
}

static inline void assert_dims(const shardlm_gguf *g, const char *name, uint32_t type, uint64_t ne0, uint64_t ne1)
{
    const shardlm_gguf_tensor *t = shardlm_gguf_find_tensor(g, name);
    cr_assert(t, "no tensor %s", name);
    cr_assert_eq(t->type, type, "%s type %u", name, t->type);
    cr_assert(t->ne[0] == ne0 && t->ne[1] == ne1, "%s is [%" PRIu64 ", %" PRIu64 "]", name, t->ne[0], t->ne[1]);
    cr_assert_eq(t->n_dims, ne1 == 1 ? 1u : 2u, "%s", name);
}


#endif
