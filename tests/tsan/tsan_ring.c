/* tsan_ring.c - the ring collectives and the kernel thread pool under
 * ThreadSanitizer. Criterion cannot start under TSan (Snaipe/Criterion#274),
 * so this is a plain program: exit 0 and "N passed, 0 failed" on success.
 * Ranks are forked processes on a loopback ring; each checks every element
 * of its all-reduce against the exact serial sum (integer-valued data). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shardlm_common.h"
#include "shardlm_kernels.h"
#include "shardlm_launch.h"
#include "shardlm_ring.h"

static int rank_main(const shardlm_ring_config *cfg)
{
    shardlm_comm *c;
    if (shardlm_ring_comm_create(cfg, 20000, &c)) {
        fprintf(stderr, "rank %d: %s\n", cfg->rank, shardlm_err_get());
        return 1;
    }
    static const size_t lens[] = {1, 3, 1000, 1u << 20};
    int W = cfg->world_size, bad = 0;
    float *buf = malloc((1u << 20) * sizeof(float));
    for (size_t li = 0; li < 4 && buf; li++) {
        size_t n = lens[li];
        for (size_t i = 0; i < n; i++) buf[i] = (float)((i * 7 + (size_t)cfg->rank * 13) % 101);
        if (shardlm_comm_allreduce_f32(c, buf, n, 20000)) {
            fprintf(stderr, "rank %d: %s\n", cfg->rank, shardlm_err_get());
            bad = 1;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            float want = 0;
            for (int r = 0; r < W; r++) want += (float)((i * 7 + (size_t)r * 13) % 101);
            if (buf[i] != want) {
                fprintf(stderr, "rank %d: n=%zu element %zu is %g, want %g\n", cfg->rank, n, i, buf[i], want);
                bad = 1;
                break;
            }
        }
    }
    free(buf);
    shardlm_comm_destroy(c);
    return bad;
}

static int ring_case(int world)
{
    shardlm_ring_config cfgs[8];
    if (shardlm_launch_plan(world, cfgs)) return 1;
    pid_t pids[8];
    for (int r = 0; r < world; r++) {
        pids[r] = fork();
        if (pids[r] == 0) _exit(rank_main(&cfgs[r]));
    }
    int fails = 0;
    for (int r = 0; r < world; r++) {
        int st;
        waitpid(pids[r], &st, 0);
        fails += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    printf("%s: ring all-reduce, world size %d\n", fails ? "FAIL" : "ok", world);
    return fails != 0;
}

/* Every row of a threaded matmul equals the single-threaded one. */
static int pool_case(void)
{
    shardlm_pool *p;
    if (shardlm_pool_new(2, 0, &p)) return 1;
    size_t rows = 67, cols = 256, n = 3;
    size_t rb = shardlm_dtype_row_bytes(SHARDLM_DT_Q8_0, cols);
    unsigned char *w = malloc(rows * rb);
    float *x = malloc(n * cols * sizeof(float)), *y1 = malloc(n * rows * sizeof(float)), *y2 = malloc(n * rows * sizeof(float));
    float *row = malloc(cols * sizeof(float));
    for (size_t r = 0; r < rows; r++) {
        for (size_t c = 0; c < cols; c++) row[c] = (float)((r * 31 + c * 17) % 23) - 11.0f;
        shardlm_quant_row(SHARDLM_DT_Q8_0, row, w + r * rb, cols);
    }
    for (size_t i = 0; i < n * cols; i++) x[i] = (float)(i % 13) - 6.0f;
    int bad = 0;
    shardlm_matmul(NULL, SHARDLM_DT_Q8_0, w, rows, cols, x, n, y1);
    for (int it = 0; it < 200 && !bad; it++) {
        shardlm_matmul(p, SHARDLM_DT_Q8_0, w, rows, cols, x, n, y2);
        bad = memcmp(y1, y2, n * rows * sizeof(float)) != 0;
    }
    shardlm_pool_free(p);
    free(w); free(x); free(y1); free(y2); free(row);
    printf("%s: threaded matmul equals single-threaded over 200 runs\n", bad ? "FAIL" : "ok");
    return bad;
}

int main(void)
{
    int failed = 0, total = 0;
    int worlds[] = {2, 4, 8};
    for (int i = 0; i < 3; i++, total++) failed += ring_case(worlds[i]);
    failed += pool_case();
    total++;
    printf("tsan: %d passed, %d failed\n", total - failed, failed);
    return failed != 0;
}
