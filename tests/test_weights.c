/* test_weights.c - --weights-from rank0: the byte ranges a shard reads
 * (a file holding only them, garbage elsewhere, loads the same shard and
 * computes the same logits), the transfer from rank 0 into the worker's
 * cache and its reuse, and the failures (a corrupted cache file, rank 0
 * killed mid-transfer). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model_internal.h"
#include "shardlm_common.h"
#include "shardlm_launch.h"
#include "test_util.h"

/* ---- helpers ---- */

static pid_t spawn(char *const argv[], const char *ring_config, const char *out_path, const char *err_path,
                   const char *cache_env)
{
    char env[4200], cache[4200];
    snprintf(env, sizeof env, "RING_CONFIG=%s", ring_config ? ring_config : "");
    snprintf(cache, sizeof cache, "SHARDLM_WEIGHTS_CACHE=%s", cache_env ? cache_env : "");
    const char *e[] = {ring_config ? env : "RING_CONFIG", cache_env ? cache : NULL, NULL};
    return tu_spawn(argv, e, out_path, err_path);
}

static void write_configs(int world, char paths[][512], const char *tag)
{
    shardlm_ring_config cfgs[8];
    cr_assert_eq(shardlm_launch_plan(world, cfgs), 0);
    for (int r = 0; r < world; r++) {
        snprintf(paths[r], 512, "%s/%s-ring%d.json", tu_tmpdir(), tag, r);
        cr_assert_eq(shardlm_ring_config_write(paths[r], &cfgs[r]), 0);
    }
}

static const char *stories(void)
{
    static char path[4096];
    snprintf(path, sizeof path, "%s", tu_shared("models/stories260K.gguf"));
    return path;
}

/* A copy of src with only rank's ranges copied and 0xAA everywhere else. */
static void write_sparse_copy(const char *src, int world, int rank, const char *dst)
{
    shardlm_gguf *g = NULL;
    cr_assert_eq(shardlm_gguf_open(src, &g), 0, "%s", shardlm_err_get());
    shardlm_byte_range *r = NULL;
    size_t n = 0;
    cr_assert_eq(shardlm_model_shard_ranges(g, world, rank, &r, &n), 0, "%s", shardlm_err_get());
    size_t size = shardlm_gguf_file_size(g);
    uint8_t *buf = malloc(size), *orig = (uint8_t *)tu_read_file(src, NULL);
    cr_assert(buf && orig);
    memset(buf, 0xAA, size);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(i == 0 || r[i].offset >= r[i - 1].offset + (r[i - 1].count - 1) * r[i - 1].stride + r[i - 1].length,
                  "ranges overlap or are out of order at %zu", i);
        for (uint32_t k = 0; k < r[i].count; k++) {
            uint64_t off = r[i].offset + k * r[i].stride;
            cr_assert_leq(off + r[i].length, size);
            memcpy(buf + off, orig + off, r[i].length);
            total += r[i].length;
        }
    }
    cr_assert_eq(r[0].offset, 0, "the header comes first");
    cr_assert_eq(total, shardlm_byte_ranges_total(r, n));
    if (world > 1) cr_assert_lt(total, size, "rank %d of %d reads the whole file", rank, world);
    cr_assert_eq(tu_write_file(dst, buf, size), 0);
    free(buf);
    free(orig);
    free(r);
    shardlm_gguf_close(g);
}

static void assert_mat_eq(const shardlm_mat *a, const shardlm_mat *b, const char *what)
{
    cr_assert(a->type == b->type && a->rows == b->rows && a->cols == b->cols, "%s: shape differs", what);
    size_t bytes = shardlm_dtype_row_bytes(a->type, a->cols) * a->rows;
    cr_assert(memcmp(a->data, b->data, bytes) == 0, "%s: contents differ", what);
}

static void assert_vec_eq(const float *a, const float *b, int n, const char *what)
{
    cr_assert(memcmp(a, b, (size_t)n * sizeof(float)) == 0, "%s: contents differ", what);
}

/* Loads (world, rank) from both files and compares every weight. */
static void assert_same_shard(const char *real, const char *sparse, int world, int rank)
{
    shardlm_gguf *g1 = NULL, *g2 = NULL;
    shardlm_model *m1 = NULL, *m2 = NULL;
    cr_assert_eq(shardlm_gguf_open(real, &g1), 0);
    cr_assert_eq(shardlm_gguf_open(sparse, &g2), 0, "%s", shardlm_err_get());
    cr_assert_eq(shardlm_gguf_fingerprint(g1), shardlm_gguf_fingerprint(g2));
    cr_assert_eq(shardlm_model_load(g1, world, rank, NULL, &m1), 0);
    cr_assert_eq(shardlm_model_load(g2, world, rank, NULL, &m2), 0, "%s", shardlm_err_get());
    int dim = m1->hp.dim;
    assert_mat_eq(&m1->tok_embd, &m2->tok_embd, "token_embd");
    assert_mat_eq(&m1->output, &m2->output, "output");
    assert_vec_eq(m1->output_norm, m2->output_norm, dim, "output_norm");
    for (int l = 0; l < m1->hp.n_layers; l++) {
        shardlm_layer *a = &m1->layers[l], *b = &m2->layers[l];
        assert_vec_eq(a->attn_norm, b->attn_norm, dim, "attn_norm");
        assert_vec_eq(a->ffn_norm, b->ffn_norm, dim, "ffn_norm");
        assert_mat_eq(&a->wq, &b->wq, "wq");
        assert_mat_eq(&a->wk, &b->wk, "wk");
        assert_mat_eq(&a->wv, &b->wv, "wv");
        assert_mat_eq(&a->wo, &b->wo, "wo");
        assert_mat_eq(&a->w_gate, &b->w_gate, "w_gate");
        assert_mat_eq(&a->w_up, &b->w_up, "w_up");
        assert_mat_eq(&a->w_down, &b->w_down, "w_down");
    }
    shardlm_model_free(m1);
    shardlm_model_free(m2);
    shardlm_gguf_close(g1);
    shardlm_gguf_close(g2);
}

/* ---- ranges ---- */

static void check_ranges(int world)
{
    const char *model = stories();
    char sparse[8][512], cfg[8][512], out[8][512], err[8][512], tag[32], ref_logits[512], logits[512];
    snprintf(tag, sizeof tag, "ranges%d", world);
    for (int r = 0; r < world; r++) {
        snprintf(sparse[r], 512, "%s/%s-r%d.gguf", tu_tmpdir(), tag, r);
        write_sparse_copy(model, world, r, sparse[r]);
        assert_same_shard(model, sparse[r], world, r);
        snprintf(out[r], 512, "%s/%s-%d.out", tu_tmpdir(), tag, r);
        snprintf(err[r], 512, "%s/%s-%d.err", tu_tmpdir(), tag, r);
    }
    /* Reference logits from the real file, then every rank from its own sparse copy. */
    char ws[8];
    snprintf(ws, sizeof ws, "%d", world);
    snprintf(ref_logits, sizeof ref_logits, "%s/%s-ref.f32", tu_tmpdir(), tag);
    snprintf(logits, sizeof logits, "%s/%s-sparse.f32", tu_tmpdir(), tag);
    char *rargv[] = {(char *)tu_bin(), "generate", "-m", (char *)model, "--temp", "0", "-n", "32", "--world-size",
                     ws, "--logits-out", ref_logits, NULL};
    tu_result ref = tu_run(rargv, NULL, 120);
    cr_assert_eq(ref.exit_code, 0, "reference run: %s", ref.err);
    write_configs(world, cfg, tag);
    pid_t pids[8];
    for (int r = 1; r < world; r++) {
        char *wargv[] = {(char *)tu_bin(), "worker", "-m", sparse[r], NULL};
        pids[r] = spawn(wargv, cfg[r], out[r], err[r], NULL);
    }
    char *gargv[] = {(char *)tu_bin(), "generate", "-m", sparse[0], "--temp", "0", "-n", "32", "--logits-out",
                     logits, NULL};
    pids[0] = spawn(gargv, cfg[0], out[0], err[0], NULL);
    int grc = tu_wait(pids[0], 60);
    for (int r = 1; r < world; r++) cr_assert_eq(tu_wait(pids[r], 10), 0, "worker %d", r);
    char *e = tu_read_file(err[0], NULL), *text = tu_read_file(out[0], NULL);
    cr_assert_eq(grc, 0, "generate exit %d: %s", grc, e);
    cr_assert_str_eq(text, ref.out, "text differs");
    size_t n1 = 0, n2 = 0;
    char *a = tu_read_file(ref_logits, &n1), *b = tu_read_file(logits, &n2);
    cr_assert(a && b && n1 == n2 && n1 > 0, "logits files: %zu vs %zu bytes", n1, n2);
    cr_assert(memcmp(a, b, n1) == 0, "logits differ between the real file and the sparse copies");
    free(a); free(b); free(e); free(text);
    tu_result_free(&ref);
}

Test(weights, ranges_cover_exactly_what_world_2_loads, .timeout = 180) { check_ranges(2); }
Test(weights, ranges_cover_exactly_what_world_4_loads, .timeout = 180) { check_ranges(4); }

/* A synthetic model whose row-parallel slices cut quantisation blocks (so
 * they are loaded as whole rows and dequantised) and whose output is tied
 * to the embedding: the ranges still load the same shard. */
Test(weights, ranges_of_unaligned_and_tied_models, .timeout = 120)
{
    char path[512], sparse[512];
    snprintf(path, sizeof path, "%s/q8.gguf", tu_tmpdir());
    char *argv[] = {(char *)tu_bin(), "synth", "-o", path, "--dim", "64", "--layers", "2", "--heads", "8",
                    "--kv-heads", "2", "--ffn", "160", "--vocab", "300", "--type", "q8_0", "--seed", "3", NULL};
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, 0, "synth: %s", r.err);
    tu_result_free(&r);
    for (int world = 2; world <= 4; world *= 2) {
        for (int rank = 0; rank < world; rank++) {
            snprintf(sparse, sizeof sparse, "%s/q8-%d-%d.gguf", tu_tmpdir(), world, rank);
            write_sparse_copy(path, world, rank, sparse);
            assert_same_shard(path, sparse, world, rank);
        }
    }
}

/* ---- transfer from rank 0 ---- */

typedef struct {
    char cfg[2][512], out[2][512], err[2][512];
} run2;

/* Rank 0 runs generate with the file, rank 1 a worker with --weights-from
 * rank0 and the cache directory cache; both outputs are kept under tag. */
static void start_pair(run2 *r, const char *tag, const char *cache, const char *model, const char *n, pid_t *g,
                       pid_t *w)
{
    write_configs(2, r->cfg, tag);
    for (int k = 0; k < 2; k++) {
        snprintf(r->out[k], 512, "%s/%s-%d.out", tu_tmpdir(), tag, k);
        snprintf(r->err[k], 512, "%s/%s-%d.err", tu_tmpdir(), tag, k);
    }
    char *wargv[] = {(char *)tu_bin(), "worker", "--weights-from", "rank0", "--timeout-ms", "5000", NULL};
    char *gargv[] = {(char *)tu_bin(), "generate", "-m", (char *)model, "--temp", "0", "-n", (char *)n, NULL};
    *w = spawn(wargv, r->cfg[1], r->out[1], r->err[1], cache);
    *g = spawn(gargv, r->cfg[0], r->out[0], r->err[0], NULL);
}

/* Runs the pair to the end and checks the golden text; returns rank 1's stderr. */
static char *golden_pair(const char *tag, const char *cache)
{
    run2 r;
    pid_t g, w;
    start_pair(&r, tag, cache, stories(), "256", &g, &w);
    int grc = tu_wait(g, 60), wrc = tu_wait(w, 10);
    char *text = tu_read_file(r.out[0], NULL), *want = tu_read_file(tu_shared("models/stories260K.greedy.txt"), NULL);
    char *e0 = tu_read_file(r.err[0], NULL), *e1 = tu_read_file(r.err[1], NULL);
    cr_assert_eq(grc, 0, "generate exit %d: %s\nworker: %s", grc, e0, e1);
    cr_assert_eq(wrc, 0, "worker exit %d: %s", wrc, e1);
    cr_assert_str_eq(text, want);
    free(text); free(want); free(e0);
    return e1;
}

static void cache_file(const char *cache, char *path, size_t cap)
{
    shardlm_gguf *g = NULL;
    cr_assert_eq(shardlm_gguf_open(stories(), &g), 0);
    snprintf(path, cap, "%s/%016llx-w2-r1.gguf", cache, (unsigned long long)shardlm_gguf_fingerprint(g));
    shardlm_gguf_close(g);
}

Test(weights, worker_without_the_file_reproduces_the_golden_text_then_reuses_its_cache, .timeout = 180)
{
    char cache[512], path[1024], ok[1100];
    snprintf(cache, sizeof cache, "%s/cache-a/nested", tu_tmpdir());
    char *e1 = golden_pair("xfer1", cache);
    cr_assert(strstr(e1, "received") && strstr(e1, "from rank 0"), "no transfer reported: %s", e1);
    free(e1);
    cache_file(cache, path, sizeof path);
    snprintf(ok, sizeof ok, "%s.ok", path);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "no cache file %s", path);
    cr_assert_eq(stat(ok, &st), 0, "no sidecar %s", ok);
    e1 = golden_pair("xfer2", cache);
    cr_assert(strstr(e1, "no transfer") && !strstr(e1, "received"), "the second run transferred: %s", e1);
    free(e1);
}

Test(weights, corrupted_cache_is_detected_and_fetched_again, .timeout = 180)
{
    char cache[512], path[1024];
    snprintf(cache, sizeof cache, "%s/cache-b", tu_tmpdir());
    free(golden_pair("bad1", cache));
    cache_file(cache, path, sizeof path);
    /* flip bytes inside a range the shard reads: the replicated embedding */
    shardlm_gguf *g = NULL;
    cr_assert_eq(shardlm_gguf_open(stories(), &g), 0);
    const shardlm_gguf_tensor *t = shardlm_gguf_find_tensor(g, "token_embd.weight");
    long off = (long)(shardlm_gguf_data_offset(g) + t->offset + 1000);
    shardlm_gguf_close(g);
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t b[16];
    cr_assert_eq(pread(fd, b, sizeof b, off), (ssize_t)sizeof b);
    for (size_t i = 0; i < sizeof b; i++) b[i] ^= 0x5a;
    cr_assert_eq(pwrite(fd, b, sizeof b, off), (ssize_t)sizeof b);
    close(fd);
    char *e1 = golden_pair("bad2", cache);
    cr_assert(strstr(e1, path) && strstr(e1, "checksum"), "corruption not reported naming %s: %s", path, e1);
    cr_assert(strstr(e1, "received"), "not fetched again: %s", e1);
    free(e1);
    e1 = golden_pair("bad3", cache);
    cr_assert(strstr(e1, "no transfer"), "the re-fetched copy is not reused: %s", e1);
    free(e1);
}

Test(weights, rank_0_killed_mid_transfer_fails_the_worker_naming_rank_0, .timeout = 120)
{
    /* big enough that the transfer is under way for a while */
    char model[512], cache[512];
    snprintf(model, sizeof model, "%s/big.gguf", tu_tmpdir());
    snprintf(cache, sizeof cache, "%s/cache-c", tu_tmpdir());
    char *sargv[] = {(char *)tu_bin(), "synth", "-o", model, "--dim", "1024", "--layers", "12", "--heads", "8",
                     "--kv-heads", "4", "--ffn", "2816", "--vocab", "8000", "--type", "f32", NULL};
    tu_result s = tu_run(sargv, NULL, 120);
    cr_assert_eq(s.exit_code, 0, "synth: %s", s.err);
    tu_result_free(&s);
    run2 r;
    pid_t g, w;
    start_pair(&r, "kill", cache, model, "4", &g, &w);
    int started = 0;
    for (int i = 0; i < 2000 && !started; i++) { /* until the worker has a partial file */
        char part[1024];
        DIR *d = opendir(cache);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (strstr(e->d_name, ".part")) {
                snprintf(part, sizeof part, "%s/%s", cache, e->d_name);
                struct stat st;
                started = stat(part, &st) == 0 && st.st_blocks > 0;
            }
        if (d) closedir(d);
        usleep(5000);
    }
    cr_assert(started, "the transfer never started");
    kill(g, SIGKILL);
    waitpid(g, NULL, 0);
    time_t t0 = time(NULL);
    int wrc = tu_wait(w, 30);
    char *e1 = tu_read_file(r.err[1], NULL);
    cr_assert(wrc == 1, "worker exit %d: %s", wrc, e1);
    cr_assert_leq(time(NULL) - t0, 10, "the worker took %ld s to notice", (long)(time(NULL) - t0));
    cr_assert(strstr(e1, "rank 0") && strstr(e1, ".part"), "stderr does not name rank 0 and the file: %s", e1);
    DIR *d = opendir(cache);
    struct dirent *e;
    while (d && (e = readdir(d))) cr_assert(!strstr(e->d_name, ".gguf"), "left behind: %s", e->d_name);
    if (d) closedir(d);
    free(e1);
}

/* generate --world-size spawns its workers with --weights-from rank0. */
Test(weights, generate_spawns_workers_that_fetch_their_weights, .timeout = 120)
{
    char cache[512], path[1024];
    snprintf(cache, sizeof cache, "%s/cache-d", tu_tmpdir());
    char *argv[] = {(char *)tu_bin(), "generate", "-m", (char *)stories(), "--temp", "0", "-n", "256",
                    "--world-size", "2", "--weights-from", "rank0", "--weights-cache", cache, NULL};
    tu_result r = tu_run(argv, NULL, 60);
    char *want = tu_read_file(tu_shared("models/stories260K.greedy.txt"), NULL);
    cr_assert_eq(r.exit_code, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, want);
    cr_assert(strstr(r.err, "sent rank 1 its weights"), "stderr: %s", r.err);
    cache_file(cache, path, sizeof path);
    cr_assert_eq(access(path, R_OK), 0, "no cache file %s", path);
    free(want);
    tu_result_free(&r);
}

Test(weights, worker_flags_are_checked)
{
    char *a1[] = {(char *)tu_bin(), "worker", "--weights-from", "rank1", "--ring-config", "x.json", NULL};
    char *a2[] = {(char *)tu_bin(), "worker", "--ring-config", "x.json", NULL};
    char *a3[] = {(char *)tu_bin(), "worker", "-m", "m.gguf", "--weights-from", "rank0", "--ring-config", "x.json", NULL};
    char *const *argvs[] = {a1, a2, a3};
    const char *want[] = {"only source is 'rank0'", "--weights-from rank0) is required", "not both"};
    for (int i = 0; i < 3; i++) {
        tu_result r = tu_run(argvs[i], NULL, 10);
        cr_assert_eq(r.exit_code, 2, "case %d: exit %d", i, r.exit_code);
        cr_assert(strstr(r.err, want[i]), "case %d: %s", i, r.err);
        tu_result_free(&r);
    }
}
