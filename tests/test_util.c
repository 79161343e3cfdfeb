/* test_util.c - see test_util.h. */
#include "test_util.h"

#include "shardlm_common.h"
#include "shardlm_gguf.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *tu_shared(const char *rel)
{
    static char path[4096];
    const char *dir = getenv("SHARDLM_SHARED");
    if (!dir) dir = "../shared";
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    if (access(path, R_OK) == 0) return path;
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0)
        cr_assert_fail("shared file %s is missing, and CI=true requires it", path);
    cr_skip_test("SKIP: shared file %s is missing", path);
    return NULL;
}

const char *tu_bin(void)
{
    const char *b = getenv("SHARDLM_BIN");
    return b ? b : "./shardlm";
}

static char tmpdir[256];

static void tu_rm_tmpdir(void)
{
    if (!tmpdir[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

const char *tu_tmpdir(void)
{
    if (tmpdir[0]) return tmpdir;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/shardlm-test-XXXXXX");
    if (!mkdtemp(tmpdir)) cr_assert_fail("mkdtemp: %s", strerror(errno));
    atexit(tu_rm_tmpdir);
    return tmpdir;
}

typedef struct {
    char *buf;
    size_t len, cap;
} tu_buf;

static void tu_buf_read(tu_buf *b, int fd, int *open_flag)
{
    if (b->cap - b->len < 4096) {
        b->cap = b->cap * 2 + 8192;
        b->buf = realloc(b->buf, b->cap);
    }
    ssize_t n = read(fd, b->buf + b->len, b->cap - b->len - 1);
    if (n > 0) b->len += (size_t)n;
    else if (n == 0 || (errno != EINTR && errno != EAGAIN)) *open_flag = 0;
}

tu_result tu_run(char *const argv[], const char *stdin_text, int timeout_s)
{
    int po[2], pe[2], pi[2];
    if (pipe(po) || pipe(pe) || pipe(pi)) cr_assert_fail("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pi[0], 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]); close(pe[0]); close(pi[1]);
        setpgid(0, 0);
        execv(argv[0], argv);
        _exit(127);
    }
    close(po[1]); close(pe[1]); close(pi[0]);
    if (stdin_text) {
        size_t left = strlen(stdin_text);
        while (left) {
            ssize_t n = write(pi[1], stdin_text, left);
            if (n <= 0) break;
            stdin_text += n;
            left -= (size_t)n;
        }
    }
    close(pi[1]);
    tu_buf ob = {0}, eb = {0};
    int oo = 1, eo = 1, timed_out = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (oo || eo) {
        struct pollfd p[2] = {{oo ? po[0] : -1, POLLIN, 0}, {eo ? pe[0] : -1, POLLIN, 0}};
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left_ms = timeout_s * 1000L - ((now.tv_sec - t0.tv_sec) * 1000L + (now.tv_nsec - t0.tv_nsec) / 1000000L);
        if (left_ms <= 0) {
            timed_out = 1;
            kill(-pid, SIGKILL);
            break;
        }
        if (poll(p, 2, (int)left_ms) < 0 && errno != EINTR) break;
        if (p[0].revents) tu_buf_read(&ob, po[0], &oo);
        if (p[1].revents) tu_buf_read(&eb, pe[0], &eo);
    }
    close(po[0]); close(pe[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    tu_result r = {0};
    if (!ob.buf) ob.buf = calloc(1, 1);
    if (!eb.buf) eb.buf = calloc(1, 1);
    ob.buf[ob.len] = 0;
    eb.buf[eb.len] = 0;
    r.out = ob.buf;
    r.out_len = ob.len;
    r.err = eb.buf;
    if (timed_out) r.exit_code = -1;
    else if (WIFEXITED(st)) r.exit_code = WEXITSTATUS(st);
    else r.exit_code = 128 + WTERMSIG(st);
    return r;
}

void tu_result_free(tu_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(b);
        return NULL;
    }
    fclose(f);
    b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

int tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && n == len) ? 0 : -1;
}

static void tu_redirect(int fd, const char *path, int flags)
{
    int f = open(path ? path : "/dev/null", flags, 0644);
    if (f >= 0) dup2(f, fd);
}

pid_t tu_spawn(char *const argv[], const char *const env[], const char *out_path, const char *err_path)
{
    pid_t pid = fork();
    if (pid != 0) return pid;
    setpgid(0, 0);
    tu_redirect(0, NULL, O_RDONLY);
    tu_redirect(1, out_path, O_WRONLY | O_CREAT | O_TRUNC);
    if (err_path && out_path && !strcmp(err_path, out_path)) dup2(1, 2);
    else tu_redirect(2, err_path, O_WRONLY | O_CREAT | O_TRUNC);
    for (int i = 0; env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        if (!eq) {
            unsetenv(env[i]);
            continue;
        }
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(eq - env[i]), env[i]);
        setenv(name, eq + 1, 1);
    }
    execv(argv[0], argv);
    _exit(127);
}

int tu_wait(pid_t pid, int timeout_s)
{
    for (int i = 0; i < timeout_s * 100; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

const char *const tu_isas[TU_N_ISAS] = {"scalar", "avx2", "avx512", "avx512vnni", "neon"};

static uint64_t tu_rng = 0x2545f4914f6cdd1dULL;

float tu_frand(void)
{
    tu_rng ^= tu_rng << 13;
    tu_rng ^= tu_rng >> 7;
    tu_rng ^= tu_rng << 17;
    return (float)((tu_rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

void tu_expect_exit(char *const argv[], int code, const char *phrase)
{
    tu_result r = tu_run(argv, NULL, 60);
    cr_assert_eq(r.exit_code, code, "%s %s: exit %d, expected %d; stderr:\n%s", argv[0], argv[1], r.exit_code, code,
                 r.err);
    cr_assert(strstr(r.err, phrase) != NULL, "no '%s' in stderr:\n%s", phrase, r.err);
    tu_result_free(&r);
}

void tu_nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t tu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void tu_reap_all(pid_t *pids, int n, int *st, double *exit_ms, uint64_t t0_ns, int limit_ms)
{
    int left = 0;
    for (int r = 0; r < n; r++) left += pids[r] != 0;
    uint64_t end = tu_now_ns() + (uint64_t)limit_ms * 1000000u;
    while (left > 0 && tu_now_ns() < end) {
        for (int r = 0; r < n; r++) {
            if (!pids[r]) continue;
            if (waitpid(pids[r], &st[r], WNOHANG) == pids[r]) {
                if (exit_ms) exit_ms[r] = (double)(tu_now_ns() - t0_ns) * 1e-6;
                pids[r] = 0;
                left--;
            }
        }
        tu_nap_ms(2);
    }
    for (int r = 0; r < n; r++) {
        if (!pids[r]) continue;
        kill(pids[r], SIGKILL);
        waitpid(pids[r], &st[r], 0);
        st[r] = -1;
        pids[r] = 0;
    }
    cr_assert_eq(left, 0, "%d rank processes did not finish within %d ms", left, limit_ms);
}

void tu_assert_no_children(void)
{
    errno = 0;
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "a child process was left behind");
    cr_assert_eq(errno, ECHILD);
}

/* ---- rewriting a GGUF's vocabulary ---- */

static int copy_tensor(void *ctx, uint64_t i, void *dst, uint64_t nbytes)
{
    memcpy(dst, shardlm_gguf_tensor_at(ctx, i)->data, nbytes);
    return 0;
}

/* Copies scalar or array key `key` of g into w. */
static void copy_kv(shardlm_gguf_writer *w, const shardlm_gguf *g, uint64_t i, const char *key)
{
    shardlm_gguf_vtype t = shardlm_gguf_kv_type(g, i);
    if (t == SHARDLM_GGUF_STRING) {
        shardlm_gguf_str v;
        cr_assert_eq(shardlm_gguf_get_str(g, key, &v), 0);
        char *z = strndup(v.ptr, v.len);
        shardlm_gguf_writer_str(w, key, z);
        free(z);
    } else if (t == SHARDLM_GGUF_ARRAY) {
        shardlm_gguf_vtype elem;
        uint64_t n;
        const void *data;
        cr_assert_eq(shardlm_gguf_get_arr(g, key, &elem, &n, &data), 0);
        cr_assert_neq(elem, SHARDLM_GGUF_STRING, "string arrays are written by the caller");
        shardlm_gguf_writer_arr(w, key, elem, data, n);
    } else {
        unsigned char raw[8] = {0};
        double f = 0;
        int64_t s64 = 0;
        uint64_t u = 0;
        int b = 0;
        if (t == SHARDLM_GGUF_FLOAT32 || t == SHARDLM_GGUF_FLOAT64) {
            shardlm_gguf_get_f64(g, key, &f);
            float f32 = (float)f;
            memcpy(raw, t == SHARDLM_GGUF_FLOAT32 ? (void *)&f32 : (void *)&f, t == SHARDLM_GGUF_FLOAT32 ? 4 : 8);
        } else if (t == SHARDLM_GGUF_BOOL) {
            shardlm_gguf_get_bool(g, key, &b);
            raw[0] = (unsigned char)b;
        } else if (t == SHARDLM_GGUF_INT8 || t == SHARDLM_GGUF_INT16 || t == SHARDLM_GGUF_INT32 ||
                   t == SHARDLM_GGUF_INT64) {
            shardlm_gguf_get_i64(g, key, &s64);
            memcpy(raw, &s64, 8);
        } else {
            shardlm_gguf_get_u64(g, key, &u);
            memcpy(raw, &u, 8);
        }
        shardlm_gguf_writer_scalar(w, key, t, raw);
    }
}

void tu_gguf_with_control_tokens(const char *in, const char *out, const int32_t *ids, const char *const *pieces,
                                 int n)
{
    shardlm_gguf *g;
    cr_assert_eq(shardlm_gguf_open(in, &g), 0, "%s", shardlm_err_get());
    shardlm_gguf_writer *w = shardlm_gguf_writer_new((uint32_t)shardlm_gguf_alignment(g));
    for (uint64_t i = 0; i < shardlm_gguf_n_kv(g); i++) {
        shardlm_gguf_str k = shardlm_gguf_kv_key(g, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        if (!strcmp(key, "tokenizer.ggml.tokens")) {
            shardlm_gguf_vtype elem;
            uint64_t nt;
            const void *data;
            cr_assert_eq(shardlm_gguf_get_arr(g, key, &elem, &nt, &data), 0);
            char **v = calloc(nt, sizeof *v);
            for (uint64_t j = 0; j < nt; j++) {
                shardlm_gguf_str e;
                cr_assert_eq(shardlm_gguf_arr_str(g, key, j, &e), 0);
                v[j] = strndup(e.ptr, e.len);
                for (int x = 0; x < n; x++)
                    if ((uint64_t)ids[x] == j) free(v[j]), v[j] = strdup(pieces[x]);
            }
            shardlm_gguf_writer_arr_str(w, key, (const char *const *)v, nt);
            for (uint64_t j = 0; j < nt; j++) free(v[j]);
            free(v);
        } else if (!strcmp(key, "tokenizer.ggml.token_type")) {
            shardlm_gguf_vtype elem;
            uint64_t nt;
            const void *data;
            cr_assert_eq(shardlm_gguf_get_arr(g, key, &elem, &nt, &data), 0);
            cr_assert_eq(elem, SHARDLM_GGUF_INT32);
            int32_t *ty = malloc(nt * sizeof *ty);
            memcpy(ty, data, nt * sizeof *ty);
            for (int x = 0; x < n; x++) ty[ids[x]] = 3;
            shardlm_gguf_writer_arr(w, key, SHARDLM_GGUF_INT32, ty, nt);
            free(ty);
        } else if (shardlm_gguf_kv_type(g, i) == SHARDLM_GGUF_ARRAY) {
            shardlm_gguf_vtype elem;
            uint64_t nt;
            const void *data;
            cr_assert_eq(shardlm_gguf_get_arr(g, key, &elem, &nt, &data), 0);
            if (elem == SHARDLM_GGUF_STRING) continue; /* merges and the like: none in the test models */
            copy_kv(w, g, i, key);
        } else {
            copy_kv(w, g, i, key);
        }
    }
    for (uint64_t i = 0; i < shardlm_gguf_n_tensors(g); i++) {
        const shardlm_gguf_tensor *t = shardlm_gguf_tensor_at(g, i);
        shardlm_gguf_writer_tensor(w, t->name, t->type, t->n_dims, t->ne);
    }
    cr_assert_eq(shardlm_gguf_writer_write(w, out, copy_tensor, g), 0, "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    shardlm_gguf_close(g);
}
