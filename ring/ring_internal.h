/* ring_internal.h - shared between the ring's set-up (setup.c, libuv; and
 * shm_setup.c, which settles each hop on shared memory or TCP) and its data
 * path (ring.c, plain non-blocking sockets + poll, and shm.c, one
 * single-producer single-consumer byte ring per shared-memory hop). */
#ifndef SHARDLM_RING_INTERNAL_H
#define SHARDLM_RING_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "shardlm_ring.h"

/* Handshake sent by both ends of every link, network byte order. */
#define RING_MAGIC 0x534c4d52u /* "SLMR" */
#define RING_PROTO_VERSION 3u  /* 2: the transport negotiation follows the hello; 3: its shm offer carries the hand-over nonce */
#define RING_HELLO_BYTES 16

typedef struct ring_shm_seg ring_shm_seg; /* the shared segment (shm.c) */

/* One hop as this rank sees it. The TCP socket stays open beside a
 * shared-memory segment: it carries wake-ups while this end sleeps in
 * poll(), and its close is how a dead peer shows. */
typedef struct {
    ring_shm_seg *seg;  /* NULL: the hop is TCP */
    size_t map_bytes;
    uint32_t cap;       /* data bytes, a power of two */
    int producer;       /* 1 on the right hop (we write), 0 on the left one */
    int fd;             /* the hop's TCP socket */
    uint64_t pos;       /* producer: bytes written; consumer: bytes read */
    uint64_t seen;      /* the peer's counter when the ring was last found full / empty */
    uint32_t bell_val;  /* our bell's value when we announced a sleep */
    char why[128];      /* why this transport */
} ring_hop;

/* The two connected links of one rank, taken out of libuv. */
typedef struct {
    int left_fd;  /* accepted from rank-1; we only receive on it */
    int right_fd; /* connected to rank+1; we only send on it */
    char left_addr[300];
    char right_addr[300];
    ring_hop left, right;
} ring_links;

/* Listens, connects, handshakes; on success the fds are blocking-free,
 * TCP_NODELAY sockets owned by the caller. */
int ring_setup_links(const shardlm_ring_config *cfg, int connect_timeout_ms, ring_links *out);

/* After ring_setup_links: exchanges host identities on both links and
 * moves every hop that can onto shared memory (shm_setup.c). Fills
 * l->left and l->right; on failure no segment stays mapped. */
int ring_shm_negotiate(const shardlm_ring_config *cfg, const shardlm_ring_opts *o, ring_links *l,
                       uint64_t deadline_ns);

/* The shared-memory hand-over's token proof on its unix socket (shm_setup.c).
 * prove (consumer): sends HMAC(token, nonce) for the nonce of the producer's
 * offer; 0 or -1. check (producer): reads and verifies it within wait_ms;
 * SHARDLM_OK, or SHARDLM_EPEER with the reason (a wrong token, none, a
 * close). Without a cluster token the proof is zeros and any is accepted. */
int ring_shm_handover_prove(int usock, const uint8_t nonce[32]);
int ring_shm_handover_check(int usock, const uint8_t nonce[32], int wait_ms);

/* ---- shm.c: the segment and its byte ring ---- */

/* Data bytes per hop: $SHARDLM_SHM_BYTES (a power of two, 4 KiB..256 MiB)
 * or the default. */
uint32_t ring_shm_capacity(void);
/* The producer's side: a sealed memfd of `cap` data bytes, mapped and
 * initialised with the cookie; *memfd is left open for passing. */
int ring_shm_create(ring_hop *h, uint32_t cap, uint64_t cookie, int *memfd, char *err, size_t errcap);
/* The consumer's side: maps a received memfd and checks it is the segment
 * the producer announced. */
int ring_shm_attach(ring_hop *h, int memfd, uint32_t cap, uint64_t cookie, char *err, size_t errcap);
void ring_shm_unmap(ring_hop *h);

/* Copies up to len bytes in (producer) or out (consumer); returns how many,
 * 0 when the ring is full / empty. With add the consumer sums whole f32
 * values into dst instead of copying. Both wake a sleeping peer. */
size_t ring_shm_write(ring_hop *h, const void *src, size_t len);
size_t ring_shm_read(ring_hop *h, void *dst, size_t len, int add);

/* 1: the peer's counter moved since the last empty/full result; 0: not;
 * -1: not, and the peer has marked the hop broken. */
int ring_shm_poll(const ring_hop *h);
/* Marks the hop broken and wakes the peer wherever it sleeps. */
void ring_shm_close(ring_hop *h);

#define RING_SHM_SLEEP_FUTEX 1u
#define RING_SHM_SLEEP_SOCKET 2u
/* Announce a sleep (the peer then wakes us by futex or by a byte on the
 * socket), and take it back after waking. */
void ring_shm_sleep_begin(ring_hop *h, uint32_t mode);
void ring_shm_sleep_end(ring_hop *h);
/* Sleeps on the bells of n (1 or 2) hops that announced a futex sleep,
 * until one rings or until_ns (CLOCK_MONOTONIC) passes. Returns 0, or
 * ENOSYS when the kernel cannot wait on two futexes (then sleep on the
 * sockets instead). */
int ring_shm_futex_wait(ring_hop *const *hs, int n, uint64_t until_ns);
/* Whether the peer process is still there: 0 alive, else the errno of its
 * socket (ECONNRESET for an orderly close). Drains wake-up bytes. */
int ring_shm_peer_gone(ring_hop *h);

/* dst[i] += src's i-th f32 (src need not be aligned). */
void ring_add_f32(float *restrict dst, const unsigned char *restrict src, size_t n);

#endif
