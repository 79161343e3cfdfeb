/* doctor_ring.c - `shardlm doctor --ring-config FILE`: checks one rank's
 * place in a ring before a model is ever loaded. Every rank runs it at the
 * same time; each failure names the config field, or the peer (rank and
 * address:port), at fault, so an operator knows which file or machine to
 * fix. It also says which transport each hop uses (shared memory between
 * ranks of one host, TCP otherwise) and why. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "doctor.h"
#include "shardlm_common.h"
#include "shardlm_ring.h"

#define DOCTOR_ALLREDUCE_FLOATS 256
#define DOCTOR_ALLREDUCE_ROUNDS 5

/* Binds the port the way the ring (0.0.0.0, SO_REUSEADDR) or the control
 * channel (dual-stack ::) will, then releases it at once so
 * shardlm_ring_comm_create can bind it. No listen(): a neighbour already
 * connecting would be accepted and reset, which fails its ring set-up;
 * unlistened, it is refused and retries. Linux refuses the bind itself
 * while another socket listens on the port. */
static void doctor_bind(shardlm_doctor *d, const char *field, int port, int dual_stack, const char *path)
{
    int fd = dual_stack ? socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
    int v6 = fd >= 0;
    if (!v6) fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1, zero = 0, err = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (v6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        *a = (struct sockaddr_in6){.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = in6addr_any};
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        sl = sizeof *a;
    }
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl)) err = errno;
    if (fd >= 0) close(fd);
    const char *addr = v6 ? "[::]" : "0.0.0.0";
    if (err)
        shardlm_doctor_check(d, field, 0, "%s: field '%s': cannot bind %s:%d: %s%s", path, field, addr, port,
                             strerror(err), err == EADDRINUSE ? " (another program or rank uses it)" : "");
    else
        shardlm_doctor_check(d, field, 1, "%s:%d can be bound", addr, port);
}

/* Resolves a host name, bounded by timeout_ms (getaddrinfo_a), so a dead
 * DNS server cannot hang the doctor. */
static void doctor_resolve(shardlm_doctor *d, const char *field, const char *host, int timeout_ms, const char *path)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct gaicb *req = calloc(1, sizeof *req); /* leaked on a timeout: the lookup may still write to it */
    if (!req) return;
    req->ar_name = host;
    req->ar_request = &hints;
    struct gaicb *list[1] = {req};
    uint64_t deadline = shardlm_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    int rc = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
    /* gai_suspend can return before the request is done (and miss its
     * wake-up), so poll gai_error with short waits until the deadline */
    while (rc == 0 && (rc = gai_error(req)) == EAI_INPROGRESS && shardlm_now_ns() < deadline) {
        struct timespec ts = {0, 20000000L};
        gai_suspend((const struct gaicb *const *)list, 1, &ts);
        rc = 0;
    }
    if (rc == EAI_INPROGRESS) {
        gai_cancel(req);
        shardlm_doctor_check(d, field, 0, "%s: field '%s': resolving '%s' took more than %d ms", path, field, host,
                             timeout_ms);
        return;
    }
    if (rc != 0 || !req->ar_result) {
        shardlm_doctor_check(d, field, 0, "%s: field '%s': cannot resolve '%s': %s", path, field, host,
                             gai_strerror(rc ? rc : EAI_NONAME));
    } else {
        char ip[INET6_ADDRSTRLEN] = "?";
        const struct sockaddr *sa = req->ar_result->ai_addr;
        if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, ip, sizeof ip);
        else
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, ip, sizeof ip);
        shardlm_doctor_check(d, field, 1, "'%s' resolves to %s", host, ip);
    }
    if (req->ar_result) freeaddrinfo(req->ar_result);
    free(req);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One warm-up and DOCTOR_ALLREDUCE_ROUNDS timed all-reduces of 1 KiB;
 * every sum is checked. */
static void doctor_allreduce(shardlm_doctor *d, cJSON *ring, shardlm_comm *comm, int timeout_ms)
{
    int w = shardlm_comm_size(comm);
    float buf[DOCTOR_ALLREDUCE_FLOATS];
    double us[DOCTOR_ALLREDUCE_ROUNDS];
    float want = (float)w * (float)(w + 1) / 2.0f; /* rank r contributes r + 1 */
    for (int round = -1; round < DOCTOR_ALLREDUCE_ROUNDS; round++) {
        for (int i = 0; i < DOCTOR_ALLREDUCE_FLOATS; i++) buf[i] = (float)(shardlm_comm_rank(comm) + 1);
        uint64_t t0 = shardlm_now_ns();
        int rc = shardlm_comm_allreduce_f32(comm, buf, DOCTOR_ALLREDUCE_FLOATS, timeout_ms);
        if (round >= 0) us[round] = (double)(shardlm_now_ns() - t0) / 1000.0;
        if (rc) {
            shardlm_doctor_check(d, "allreduce", 0, "%s", shardlm_err_get());
            return;
        }
        for (int i = 0; i < DOCTOR_ALLREDUCE_FLOATS; i++)
            if (buf[i] != want) {
                shardlm_doctor_check(d, "allreduce", 0, "wrong sum %g at element %d (expected %g)", buf[i], i, want);
                return;
            }
    }
    qsort(us, DOCTOR_ALLREDUCE_ROUNDS, sizeof us[0], cmp_double);
    cJSON_AddNumberToObject(ring, "allreduce_latency_us", us[DOCTOR_ALLREDUCE_ROUNDS / 2]);
    cJSON_AddNumberToObject(ring, "allreduce_min_us", us[0]);
    shardlm_doctor_check(d, "allreduce", 1, "%d bytes across %d ranks: latency %.0f us (median of %d, min %.0f us), "
                         "sums correct", (int)sizeof buf, w, us[DOCTOR_ALLREDUCE_ROUNDS / 2], DOCTOR_ALLREDUCE_ROUNDS,
                         us[0]);
}

/* Which transport each hop took, and why. */
static void doctor_hops(shardlm_doctor *d, cJSON *ring, shardlm_comm *comm, const shardlm_ring_config *cfg)
{
    int w = cfg->world_size, left = (cfg->rank + w - 1) % w, right = (cfg->rank + 1) % w;
    const char *lwhy = "", *rwhy = "";
    const char *lt = shardlm_ring_comm_hop(comm, 0, &lwhy), *rt = shardlm_ring_comm_hop(comm, 1, &rwhy);
    if (!lt || !rt) return;
    cJSON *hops = cJSON_AddObjectToObject(ring, "transport");
    cJSON *l = cJSON_AddObjectToObject(hops, "left"), *r = cJSON_AddObjectToObject(hops, "right");
    cJSON_AddNumberToObject(l, "rank", left);
    cJSON_AddStringToObject(l, "transport", lt);
    cJSON_AddStringToObject(l, "why", lwhy);
    cJSON_AddNumberToObject(r, "rank", right);
    cJSON_AddStringToObject(r, "transport", rt);
    cJSON_AddStringToObject(r, "why", rwhy);
    shardlm_doctor_check(d, "transport", 1, "hop from left rank %d: %s (%s); hop to right rank %d: %s (%s)", left,
                         !strcmp(lt, "shm") ? "shared memory" : "tcp", lwhy, right,
                         !strcmp(rt, "shm") ? "shared memory" : "tcp", rwhy);
}

/* Connects to both neighbours; a failure's text from the ring names the
 * neighbour (rank, address:port), and the fields to check are added. */
static void doctor_connect(shardlm_doctor *d, cJSON *ring, const shardlm_ring_config *cfg, int timeout_ms,
                           shardlm_ring_transport transport)
{
    shardlm_comm *comm = NULL;
    uint64_t t0 = shardlm_now_ns();
    shardlm_ring_opts ro = {timeout_ms, transport};
    int rc = shardlm_ring_comm_create_opts(cfg, &ro, &comm);
    if (rc) {
        int w = cfg->world_size, left = (cfg->rank + w - 1) % w, right = (cfg->rank + 1) % w;
        char also[32] = "";
        if (left != right) snprintf(also, sizeof also, " and rank %d", left);
        if (rc == SHARDLM_EINPUT && strstr(shardlm_err_get(), "--ring-transport")) d->bad_input = 1;
        shardlm_doctor_check(d, "ring", 0, "%s (check right_ip/right_port against rank %d's port, and that rank %d%s "
                             "runs `shardlm doctor` at the same time)", shardlm_err_get(), right, right, also);
        return;
    }
    shardlm_doctor_check(d, "ring", 1, "connected to left rank %d and right rank %d (%s:%d) in %.0f ms",
                         (cfg->rank + cfg->world_size - 1) % cfg->world_size, (cfg->rank + 1) % cfg->world_size,
                         cfg->right_ip, cfg->right_port, (double)(shardlm_now_ns() - t0) / 1e6);
    doctor_hops(d, ring, comm, cfg);
    doctor_allreduce(d, ring, comm, timeout_ms);
    shardlm_comm_destroy(comm);
}

void shardlm_doctor_ring(shardlm_doctor *d, const char *path, int timeout_ms, const char *transport)
{
    shardlm_ring_transport tr = SHARDLM_RING_AUTO;
    if (transport ? shardlm_ring_transport_parse(transport, &tr) : shardlm_ring_transport_env(&tr)) {
        d->bad_input = 1;
        shardlm_doctor_check(d, "ring_transport", 0, "%s",
                             transport ? "--ring-transport: expected auto, tcp or shm" : shardlm_err_get());
        return;
    }
    cJSON *ring = cJSON_AddObjectToObject(d->root, "ring");
    cJSON_AddStringToObject(ring, "config", path);
    shardlm_ring_config cfg;
    if (shardlm_ring_config_load(path, &cfg)) {
        d->bad_input = 1;
        shardlm_doctor_check(d, "ring_config", 0, "%s", shardlm_err_get());
        return;
    }
    cJSON_AddNumberToObject(ring, "rank", cfg.rank);
    cJSON_AddNumberToObject(ring, "world_size", cfg.world_size);
    shardlm_doctor_check(d, "ring_config", 1, "%s: rank %d of %d, port %d, right neighbour %s:%d, master %s:%d", path,
                         cfg.rank, cfg.world_size, cfg.port, cfg.right_ip, cfg.right_port, cfg.master_ip,
                         cfg.master_port);
    int failed = d->failed;
    d->failed = 0;
    if (cfg.world_size > 1) doctor_bind(d, "port", cfg.port, 0, path);
    if (cfg.rank == 0 && cfg.world_size > 1) doctor_bind(d, "master_port", cfg.master_port, 1, path);
    if (cfg.world_size > 1) doctor_resolve(d, "right_ip", cfg.right_ip, timeout_ms, path);
    doctor_resolve(d, "master_ip", cfg.master_ip, timeout_ms, path);
    if (d->failed)
        shardlm_doctor_check(d, "ring", 0, "not connected: fix the checks above first");
    else
        doctor_connect(d, ring, &cfg, timeout_ms, tr);
    d->failed |= failed;
}
