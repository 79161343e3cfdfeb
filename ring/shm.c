/* shm.c - a shared-memory hop of the ring: one segment per hop (a sealed
 * memfd, never a name in /dev/shm), holding a single-producer
 * single-consumer byte ring. The producer publishes a byte count (head),
 * the consumer another (tail); each side sleeps on its own futex word (its
 * "bell") or, when it must also watch a TCP link, in poll() on the hop's
 * socket, and says which in a sleep flag. The other side reads the flag
 * after publishing and rings the bell only when someone sleeps, so a ring
 * with both ends awake costs no system call. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ring_internal.h"

#define SHM_MAGIC 0x53484d52494e4731ull /* "SHMRING1" */
#define SHM_VERSION 1u
#define SHM_DEFAULT_BYTES (1u << 20) /* 256 KiB lost 16 MiB bandwidth under load (docs/PERFORMANCE.md) */
/* Largest copy before publishing, so the other side can start on the
 * first part of a large message while the rest is copied. */
#define SHM_CHUNK_MAX (32u << 10)

#define SHM_CLOSED_PRODUCER 1u
#define SHM_CLOSED_CONSUMER 2u

/* Each line is written by one side only (the sleep flags by both, but only
 * around sleeps), so the two sides do not bounce one cache line. */
struct ring_shm_seg {
    uint64_t magic, cookie;
    uint32_t version, cap;
    alignas(64) _Atomic uint64_t head;  /* producer: bytes written */
    _Atomic uint32_t c_bell;            /* producer rings the consumer */
    alignas(64) _Atomic uint64_t tail;  /* consumer: bytes read */
    _Atomic uint32_t p_bell;            /* consumer rings the producer */
    alignas(64) _Atomic uint32_t c_sleep;
    alignas(64) _Atomic uint32_t p_sleep;
    alignas(64) _Atomic uint32_t closed;
    alignas(64) unsigned char data[];
};

uint32_t ring_shm_capacity(void)
{
    const char *e = getenv("SHARDLM_SHM_BYTES");
    if (e && *e) {
        char *end;
        unsigned long long v = strtoull(e, &end, 10);
        if (!*end && v >= 4096 && v <= (256u << 20) && !(v & (v - 1))) return (uint32_t)v;
    }
    return SHM_DEFAULT_BYTES;
}

static size_t shm_map_bytes(uint32_t cap)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), n = sizeof(ring_shm_seg) + cap;
    return (n + page - 1) / page * page;
}

int ring_shm_create(ring_hop *h, uint32_t cap, uint64_t cookie, int *memfd, char *err, size_t errcap)
{
    size_t bytes = shm_map_bytes(cap);
    int fd = memfd_create("shardlm-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    void *p = MAP_FAILED;
    const char *what = "memfd_create";
    if (fd >= 0 && (what = "ftruncate", ftruncate(fd, (off_t)bytes) == 0) &&
        (what = "sealing", fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0))
        what = "mmap", p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errcap, "%s of a %zu-byte segment: %s", what, bytes, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    ring_shm_seg *s = p;
    s->cookie = cookie;
    s->version = SHM_VERSION;
    s->cap = cap;
    atomic_store(&s->head, 0);
    atomic_store(&s->tail, 0);
    atomic_store_explicit((_Atomic uint64_t *)&s->magic, SHM_MAGIC, memory_order_release);
    h->seg = s;
    h->map_bytes = bytes;
    h->cap = cap;
    h->producer = 1;
    h->pos = h->seen = 0;
    *memfd = fd;
    return 0;
}

int ring_shm_attach(ring_hop *h, int memfd, uint32_t cap, uint64_t cookie, char *err, size_t errcap)
{
    size_t bytes = shm_map_bytes(cap);
    struct stat st;
    if (fstat(memfd, &st) != 0 || (size_t)st.st_size != bytes) {
        snprintf(err, errcap, "the received segment is not the announced %zu bytes", bytes);
        return -1;
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, memfd, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errcap, "mmap of the received segment: %s", strerror(errno));
        return -1;
    }
    ring_shm_seg *s = p;
    if (atomic_load_explicit((_Atomic uint64_t *)&s->magic, memory_order_acquire) != SHM_MAGIC ||
        s->cookie != cookie || s->version != SHM_VERSION || s->cap != cap) {
        snprintf(err, errcap, "the received segment does not carry the announced cookie");
        munmap(p, bytes);
        return -1;
    }
    h->seg = s;
    h->map_bytes = bytes;
    h->cap = cap;
    h->producer = 0;
    h->pos = h->seen = 0;
    return 0;
}

void ring_shm_unmap(ring_hop *h)
{
    if (h->seg) munmap(h->seg, h->map_bytes);
    h->seg = NULL;
}

static long shm_futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, (uint32_t *)addr, op, val, ts, NULL, 0);
}

/* Called after publishing: wakes the peer if it announced a sleep. The
 * seq_cst store of the counter before this seq_cst load pairs with the
 * sleeper's store of its flag before its re-check (ring_shm_poll), so one
 * of the two always sees the other. */
static void shm_notify(ring_hop *h, _Atomic uint32_t *sleep, _Atomic uint32_t *bell)
{
    if (!atomic_load(sleep)) return;
    uint32_t mode = atomic_exchange(sleep, 0);
    if (mode == RING_SHM_SLEEP_FUTEX) {
        atomic_fetch_add(bell, 1);
        shm_futex(bell, FUTEX_WAKE, 1, NULL);
    } else if (mode == RING_SHM_SLEEP_SOCKET) {
        char b = 1;
        (void)!send(h->fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL); /* a full buffer already holds a wake-up */
    }
}

static size_t shm_chunk(const ring_hop *h)
{
    size_t c = h->cap / 4;
    return c < SHM_CHUNK_MAX ? c : SHM_CHUNK_MAX;
}

size_t ring_shm_write(ring_hop *h, const void *src, size_t len)
{
    ring_shm_seg *s = h->seg;
    uint64_t tail = atomic_load_explicit(&s->tail, memory_order_acquire);
    size_t space = h->cap - (size_t)(h->pos - tail);
    size_t n = len < space ? len : space;
    if (n > shm_chunk(h)) n = shm_chunk(h);
    if (n == 0) {
        h->seen = tail;
        return 0;
    }
    size_t off = (size_t)(h->pos & (h->cap - 1)), first = h->cap - off < n ? h->cap - off : n;
    memcpy(s->data + off, src, first);
    if (n > first) memcpy(s->data, (const unsigned char *)src + first, n - first);
    h->pos += n;
    atomic_store(&s->head, h->pos);
    shm_notify(h, &s->c_sleep, &s->c_bell);
    return n;
}

/* dst (whole f32 values, n bytes) += the ring's bytes from pos; a value
 * that straddles the end of the ring is put together first. */
static void shm_add_out(const ring_hop *h, uint64_t pos, float *dst, size_t n)
{
    const unsigned char *d = h->seg->data;
    size_t mask = h->cap - 1, done = 0;
    while (done < n) {
        size_t off = (size_t)((pos + done) & mask), run = h->cap - off;
        if (run > n - done) run = n - done;
        size_t whole = run / 4 * 4;
        if (whole) {
            ring_add_f32(dst + done / 4, d + off, whole / 4);
            done += whole;
            continue;
        }
        unsigned char v[4];
        for (size_t k = 0; k < 4; k++) v[k] = d[(pos + done + k) & mask];
        ring_add_f32(dst + done / 4, v, 1);
        done += 4;
    }
}

size_t ring_shm_read(ring_hop *h, void *dst, size_t len, int add)
{
    ring_shm_seg *s = h->seg;
    uint64_t head = atomic_load_explicit(&s->head, memory_order_acquire);
    size_t avail = (size_t)(head - h->pos);
    size_t n = len < avail ? len : avail;
    if (n > shm_chunk(h)) n = shm_chunk(h);
    if (add) n &= ~(size_t)3; /* sum whole values only; the rest waits for its bytes */
    if (n == 0) {
        h->seen = head;
        return 0;
    }
    if (add) {
        shm_add_out(h, h->pos, dst, n);
    } else {
        size_t off = (size_t)(h->pos & (h->cap - 1)), first = h->cap - off < n ? h->cap - off : n;
        memcpy(dst, s->data + off, first);
        if (n > first) memcpy((unsigned char *)dst + first, s->data, n - first);
    }
    h->pos += n;
    atomic_store(&s->tail, h->pos);
    shm_notify(h, &s->p_sleep, &s->p_bell);
    return n;
}

int ring_shm_poll(const ring_hop *h)
{
    ring_shm_seg *s = h->seg;
    /* closed first: a peer that wrote and then closed is seen with its data */
    uint32_t closed = atomic_load(&s->closed) & (h->producer ? SHM_CLOSED_CONSUMER : SHM_CLOSED_PRODUCER);
    uint64_t peer = atomic_load(h->producer ? &s->tail : &s->head);
    if (peer != h->seen) return 1;
    return closed ? -1 : 0;
}

void ring_shm_close(ring_hop *h)
{
    ring_shm_seg *s = h->seg;
    if (!s) return;
    atomic_fetch_or(&s->closed, h->producer ? SHM_CLOSED_PRODUCER : SHM_CLOSED_CONSUMER);
    _Atomic uint32_t *bell = h->producer ? &s->c_bell : &s->p_bell;
    atomic_fetch_add(bell, 1);
    shm_futex(bell, FUTEX_WAKE, INT_MAX, NULL);
}

void ring_shm_sleep_begin(ring_hop *h, uint32_t mode)
{
    ring_shm_seg *s = h->seg;
    h->bell_val = atomic_load(h->producer ? &s->p_bell : &s->c_bell);
    atomic_store(h->producer ? &s->p_sleep : &s->c_sleep, mode);
}

void ring_shm_sleep_end(ring_hop *h)
{
    ring_shm_seg *s = h->seg;
    atomic_store(h->producer ? &s->p_sleep : &s->c_sleep, 0);
}

static _Atomic uint32_t *shm_my_bell(ring_hop *h) { return h->producer ? &h->seg->p_bell : &h->seg->c_bell; }

#ifndef FUTEX_32
#define FUTEX_32 2
#endif

int ring_shm_futex_wait(ring_hop *const *hs, int n, uint64_t until_ns)
{
    struct timespec abs = {(time_t)(until_ns / 1000000000u), (long)(until_ns % 1000000000u)};
    if (n == 1) {
        struct timespec now, rel;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left = (int64_t)until_ns - ((int64_t)now.tv_sec * 1000000000 + now.tv_nsec);
        if (left <= 0) return 0;
        rel = (struct timespec){(time_t)(left / 1000000000), (long)(left % 1000000000)};
        shm_futex(shm_my_bell(hs[0]), FUTEX_WAIT, hs[0]->bell_val, &rel);
        return 0;
    }
    struct futex_waitv w[2];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 2; i++) {
        w[i].val = hs[i]->bell_val;
        w[i].uaddr = (uint64_t)(uintptr_t)shm_my_bell(hs[i]);
        w[i].flags = FUTEX_32; /* shared: the words live in a mapping of another process */
    }
    long r = syscall(SYS_futex_waitv, w, 2u, 0u, &abs, CLOCK_MONOTONIC);
    return r < 0 && errno == ENOSYS ? ENOSYS : 0;
}

int ring_shm_peer_gone(ring_hop *h)
{
    struct pollfd p = {.fd = h->fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & POLLIN) {
        char buf[64];
        for (;;) {
            ssize_t r = recv(h->fd, buf, sizeof buf, MSG_DONTWAIT);
            if (r > 0) continue;
            if (r == 0) return ECONNRESET;
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return errno;
        }
    }
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return ECONNRESET;
    return 0;
}
