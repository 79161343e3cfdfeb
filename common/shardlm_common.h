/* shardlm_common.h - status codes, thread-local error text, clocks and
 * process statistics shared by every module. Nothing here allocates. */
#ifndef SHARDLM_COMMON_H
#define SHARDLM_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Status codes. Input errors (bad file, bad config, bad flag) map to exit
 * status 2; everything else that fails at run time maps to exit status 1. */
enum {
    SHARDLM_OK = 0,
    SHARDLM_ERUNTIME = -1,
    SHARDLM_EINPUT = -2,
    SHARDLM_ETIMEDOUT = -3,
    SHARDLM_EPEER = -4, /* a peer closed its connection or died */
    SHARDLM_ENOMEM = -5,
    SHARDLM_EBUSY = -6, /* a queue is full: try again later (HTTP 429) */
};

/* The last error message of this thread. Functions that return a status
 * other than SHARDLM_OK set it to one line naming the file, field, peer or
 * parameter at fault. */
void shardlm_err_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *shardlm_err_get(void);

/* Exit status for a status code: 0, 1 or 2. */
int shardlm_exit_code(int status);

/* Monotonic clock. */
uint64_t shardlm_now_ns(void);
double shardlm_now_s(void);

/* Resident set size of this process in bytes (from /proc/self/statm). */
size_t shardlm_rss_bytes(void);

/* Sends (writing) or receives exactly n bytes on a non-blocking-safe socket
 * by deadline_ns (shardlm_now_ns clock): SHARDLM_OK, SHARDLM_ETIMEDOUT, or
 * SHARDLM_EPEER when the peer closed or the socket failed (errno says how,
 * 0 for an orderly close). Sets no error message: callers name the peer. */
int shardlm_io_full(int fd, void *p, size_t n, int writing, uint64_t deadline_ns);

/* "IP:PORT" of a connected socket's peer into buf ("?:0" when unknown; an
 * IPv4-mapped IPv6 address as plain IPv4), for refusals that name a source. */
void shardlm_peer_name(int fd, char *buf, size_t cap);

/* Progress lines go to stderr; a terminal gets them redrawn in place. */
void shardlm_progress(const char *what, uint64_t done, uint64_t total);

/* 64-bit FNV-1a, used for model fingerprints. */
uint64_t shardlm_fnv1a64(uint64_t h, const void *data, size_t n);
#define SHARDLM_FNV_INIT 0xcbf29ce484222325ULL

#endif
