/* pool.c - the persistent CPU thread pool of one rank. Workers are created
 * once and wait for a generation counter to change: a short spin (the next
 * kernel usually follows within microseconds), then a futex sleep, so idle
 * ranks sharing cores cost no CPU. The caller runs as tid 0. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cpu_internal.h"
#include "shardlm_common.h"

/* How long an idle thread spins before sleeping. A futex wake costs the
 * waker ~2-5 us and the sleeper ~10-50 us before it runs again; 30 us of
 * spinning covers the gaps between kernels of one forward pass, while a rank
 * waiting on the network falls asleep almost at once. */
#define POOL_SPIN_NS 30000

typedef struct {
    shardlm_pool *pool;
    int tid;
    pthread_t th;
} pool_worker;

struct shardlm_pool {
    int n;
    int pin;
    int64_t spin_ns;
    pool_worker *workers; /* n - 1 of them */
    void (*fn)(void *ctx, int tid, int nth);
    void *ctx;
    _Atomic uint32_t gen;     /* futex word: bumped once per run */
    _Atomic uint32_t pending; /* futex word: workers still running this run */
    _Atomic int sleepers;     /* workers inside (or about to enter) futex_wait */
    _Atomic int caller_waiting;
    _Atomic int stop;
    void *scratch;
    size_t scratch_bytes;
};

static long futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    return syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins until *addr != val or spin_ns pass; returns 1 when it changed. */
static int spin_while_eq(_Atomic uint32_t *addr, uint32_t val, int64_t spin_ns)
{
    if (spin_ns <= 0) return atomic_load_explicit(addr, memory_order_acquire) != val;
    int64_t deadline = now_ns() + spin_ns;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (atomic_load_explicit(addr, memory_order_acquire) != val) return 1;
            cpu_relax();
        }
        if (now_ns() >= deadline) return 0;
    }
}

/* The i-th CPU (wrapping) of this process's affinity mask, or -1. */
static int nth_allowed_cpu(int i)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    int count = CPU_COUNT(&set);
    if (count <= 0) return -1;
    int want = i % count;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set) && want-- == 0) return c;
    return -1;
}

static int allowed_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return (int)sysconf(_SC_NPROCESSORS_ONLN);
    return CPU_COUNT(&set);
}

static void pin_self(int cpu)
{
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set); /* best effort: pinning is a hint */
}

static void worker_wait_gen(shardlm_pool *p, uint32_t seen)
{
    if (spin_while_eq(&p->gen, seen, p->spin_ns)) return;
    while (atomic_load(&p->gen) == seen) {
        /* Announce the sleep before re-checking gen inside the kernel; the
         * caller bumps gen before reading sleepers, so one of us sees the
         * other (both seq_cst) and no wake-up is lost. */
        atomic_fetch_add(&p->sleepers, 1);
        futex_wait(&p->gen, seen);
        atomic_fetch_sub(&p->sleepers, 1);
    }
}

static void *worker_main(void *arg)
{
    pool_worker *w = arg;
    shardlm_pool *p = w->pool;
    if (p->pin) pin_self(nth_allowed_cpu(w->tid));
    uint32_t seen = 0;
    for (;;) {
        worker_wait_gen(p, seen);
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (atomic_load_explicit(&p->stop, memory_order_relaxed)) break;
        p->fn(p->ctx, w->tid, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_waiting))
            futex_wake(&p->pending, 1);
    }
    return NULL;
}

static void pool_start(shardlm_pool *p)
{
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers) > 0) futex_wake(&p->gen, INT_MAX);
}

static void pool_join(shardlm_pool *p)
{
    for (;;) {
        uint32_t left = atomic_load_explicit(&p->pending, memory_order_acquire);
        if (left == 0) return;
        if (spin_while_eq(&p->pending, left, p->spin_ns)) continue;
        atomic_store(&p->caller_waiting, 1);
        left = atomic_load(&p->pending);
        if (left != 0) futex_wait(&p->pending, left);
        atomic_store(&p->caller_waiting, 0);
    }
}

int shardlm_pool_new(int n_threads, int pin, shardlm_pool **out)
{
    *out = NULL;
    if (n_threads < 1 || n_threads > 4096) {
        shardlm_err_set("thread pool: thread count %d out of range 1..4096", n_threads);
        return SHARDLM_EINPUT;
    }
    shardlm_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->workers = calloc((size_t)n_threads, sizeof *p->workers))) {
        free(p);
        shardlm_err_set("thread pool: out of memory");
        return SHARDLM_ENOMEM;
    }
    p->n = n_threads;
    p->pin = pin;
    /* More threads than CPUs: a spinning thread only delays the one it waits for. */
    p->spin_ns = n_threads > allowed_cpus() ? 0 : POOL_SPIN_NS;
    if (pin) pin_self(nth_allowed_cpu(0));
    for (int i = 1; i < n_threads; i++) {
        pool_worker *w = &p->workers[i - 1];
        w->pool = p;
        w->tid = i;
        int rc = pthread_create(&w->th, NULL, worker_main, w);
        if (rc != 0) {
            p->n = i; /* shut down the ones started */
            shardlm_pool_free(p);
            shardlm_err_set("thread pool: cannot create thread %d: %s", i, strerror(rc));
            return SHARDLM_ERUNTIME;
        }
    }
    *out = p;
    return SHARDLM_OK;
}

void shardlm_pool_free(shardlm_pool *p)
{
    if (!p) return;
    atomic_store(&p->stop, 1);
    pool_start(p);
    for (int i = 1; i < p->n; i++) pthread_join(p->workers[i - 1].th, NULL);
    free(p->workers);
    free(p->scratch);
    free(p);
}

int shardlm_pool_size(const shardlm_pool *p) { return p ? p->n : 1; }

void shardlm_pool_run(shardlm_pool *p, void (*fn)(void *ctx, int tid, int nth), void *ctx)
{
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, (uint32_t)(p->n - 1));
    pool_start(p);
    fn(ctx, 0, p->n);
    pool_join(p);
}

/* ---- scratch ---- */

static _Thread_local void *tls_scratch;
static _Thread_local size_t tls_scratch_bytes;
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_key_init(void) { pthread_key_create(&tls_key, free); }

static void *grow(void **buf, size_t *have, size_t bytes)
{
    if (bytes <= *have) return *buf;
    size_t want = bytes + bytes / 2; /* grow rarely as batches vary */
    void *nb = NULL;
    if (posix_memalign(&nb, 64, want) != 0) return NULL;
    free(*buf);
    *buf = nb;
    *have = want;
    return nb;
}

void *shardlm_pool_scratch(shardlm_pool *p, size_t bytes)
{
    if (p) return grow(&p->scratch, &p->scratch_bytes, bytes);
    void *old = tls_scratch;
    void *s = grow(&tls_scratch, &tls_scratch_bytes, bytes);
    if (s && s != old) {
        /* The key's destructor frees the buffer when a thread exits. */
        pthread_once(&tls_once, tls_key_init);
        pthread_setspecific(tls_key, s);
    }
    return s;
}

/* ---- topology ---- */

static int read_int_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int v = -1;
    if (fscanf(f, "%d", &v) != 1) v = -1;
    fclose(f);
    return v;
}

int shardlm_cpu_physical_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (int)n : 1;
    }
    /* Count distinct (package, core) pairs among the CPUs we may use. */
    int seen_pkg[CPU_SETSIZE], seen_core[CPU_SETSIZE], n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &set)) continue;
        char path[128];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", c);
        int core = read_int_file(path);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", c);
        int pkg = read_int_file(path);
        if (core < 0) core = c; /* no topology: count every CPU */
        int dup = 0;
        for (int i = 0; i < n && !dup; i++) dup = seen_core[i] == core && seen_pkg[i] == pkg;
        if (!dup) {
            seen_core[n] = core;
            seen_pkg[n] = pkg;
            n++;
        }
    }
    return n > 0 ? n : 1;
}
