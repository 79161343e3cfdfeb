/* common.c - error text, clocks, RSS and progress output. */
#include "shardlm_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char err_buf[512];

void shardlm_err_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
}

const char *shardlm_err_get(void) { return err_buf[0] ? err_buf : "unknown error"; }

int shardlm_exit_code(int status)
{
    if (status == SHARDLM_OK) return 0;
    return status == SHARDLM_EINPUT ? 2 : 1;
}

uint64_t shardlm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double shardlm_now_s(void) { return (double)shardlm_now_ns() * 1e-9; }

size_t shardlm_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, rss = 0;
    int n = fscanf(f, "%lu %lu", &size, &rss);
    fclose(f);
    if (n != 2) return 0;
    return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

void shardlm_progress(const char *what, uint64_t done, uint64_t total)
{
    static int tty = -1;
    if (tty < 0) tty = isatty(STDERR_FILENO);
    if (!tty) {
        if (done == total) fprintf(stderr, "%s: done (%llu)\n", what, (unsigned long long)total);
        return;
    }
    int pct = total ? (int)(done * 100 / total) : 100;
    fprintf(stderr, "\r%s: %3d%% (%llu/%llu)%s", what, pct, (unsigned long long)done,
            (unsigned long long)total, done == total ? "\n" : "");
    fflush(stderr);
}

uint64_t shardlm_fnv1a64(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void shardlm_peer_name(int fd, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
            port = ntohs(a->sin6_port);
        } else if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
            port = ntohs(a->sin_port);
        }
    }
    snprintf(buf, cap, "%s:%d", strncmp(host, "::ffff:", 7) == 0 ? host + 7 : host, port);
}

int shardlm_io_full(int fd, void *p, size_t n, int writing, uint64_t deadline_ns)
{
    uint8_t *b = p;
    while (n) {
        uint64_t now = shardlm_now_ns();
        struct pollfd pf = {fd, writing ? POLLOUT : POLLIN, 0};
        int pr = now < deadline_ns ? poll(&pf, 1, (int)((deadline_ns - now) / 1000000 + 1)) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr == 0) return SHARDLM_ETIMEDOUT;
        if (pr < 0) return SHARDLM_EPEER;
        ssize_t k = writing ? send(fd, b, n, MSG_NOSIGNAL | MSG_DONTWAIT) : recv(fd, b, n, MSG_DONTWAIT);
        if (k < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (k <= 0) {
            if (k == 0) errno = 0;
            return SHARDLM_EPEER;
        }
        b += k;
        n -= (size_t)k;
    }
    return SHARDLM_OK;
}
