/* control_guard.c - see control_guard.h. The thread never touches the
 * workers' sockets or the control module's buffers: it owns only the
 * connections it accepted, and hands a held one over through a locked
 * queue, so a step in flight is never blocked by a stranger. */
#include "control_guard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shardlm.pb-c.h"
#include "shardlm_auth.h"
#include "shardlm_common.h"

#define GUARD_MAX_HELD 8
#define GUARD_MAX_HELLO (64u << 10)

struct ctrl_guard {
    int listen_fd;
    pthread_t thread;
    int started;
    atomic_int stop;
    pthread_mutex_t mu; /* guards complete and the held queue */
    int complete;
    int n_held;
    int held[GUARD_MAX_HELD];
    uint64_t held_since[GUARD_MAX_HELD];
};

int ctrl_guard_auth(int fd, int auth_ms, uint64_t deadline_ns)
{
    char who[96];
    shardlm_peer_name(fd, who, sizeof who);
    uint64_t d = shardlm_now_ns() + (uint64_t)auth_ms * 1000000ull;
    int srv = 1;
    const char *w = who;
    int rc = shardlm_auth_handshake(&fd, &srv, 1, d < deadline_ns ? d : deadline_ns, &w);
    if (rc) fprintf(stderr, "shardlm: refused a control connection from %s: %s\n", who, shardlm_err_get());
    return rc;
}

int ctrl_guard_new(int listen_fd, ctrl_guard **out)
{
    ctrl_guard *g = calloc(1, sizeof *g);
    if (!g) return SHARDLM_ENOMEM;
    g->listen_fd = listen_fd;
    atomic_init(&g->stop, 0);
    pthread_mutex_init(&g->mu, NULL);
    *out = g;
    return SHARDLM_OK;
}

/* Reads the held peer's Hello (its rank, or -1) and answers it with a
 * refusal, so a worker says why it was turned away instead of timing out. */
static int guard_refuse_hello(int fd, const char *why)
{
    uint64_t deadline = shardlm_now_ns() + 1000000000ull;
    uint8_t h[4];
    int rank = -1;
    if (shardlm_io_full(fd, h, 4, 0, deadline)) return -1;
    uint32_t n = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
    uint8_t *b = n <= GUARD_MAX_HELLO ? malloc(n ? n : 1) : NULL;
    if (!b) return -1;
    Shardlm__Envelope *env = shardlm_io_full(fd, b, n, 0, deadline) ? NULL : shardlm__envelope__unpack(NULL, n, b);
    free(b);
    if (!env) return -1;
    if (env->msg_case == SHARDLM__ENVELOPE__MSG_HELLO) rank = (int)env->hello->rank;
    shardlm__envelope__free_unpacked(env, NULL);
    Shardlm__HelloAck ack = SHARDLM__HELLO_ACK__INIT;
    ack.error = (char *)why;
    Shardlm__Envelope out = SHARDLM__ENVELOPE__INIT;
    out.msg_case = SHARDLM__ENVELOPE__MSG_HELLO_ACK;
    out.hello_ack = &ack;
    size_t len = shardlm__envelope__get_packed_size(&out);
    uint8_t *frame = malloc(len + 4);
    if (frame) {
        frame[0] = (uint8_t)len; frame[1] = (uint8_t)(len >> 8); frame[2] = (uint8_t)(len >> 16);
        frame[3] = (uint8_t)(len >> 24);
        shardlm__envelope__pack(&out, frame + 4);
        shardlm_io_full(fd, frame, len + 4, 1, deadline); /* best effort: it is refused either way */
        free(frame);
    }
    return rank;
}

static void guard_refuse_complete(int fd)
{
    static const char why[] = "the cluster is complete (every worker rank is connected); a restarted worker "
                              "is taken when rank 0 re-forms the cluster";
    char who[96];
    shardlm_peer_name(fd, who, sizeof who);
    int rank = guard_refuse_hello(fd, why);
    if (rank >= 0)
        fprintf(stderr, "shardlm: refused a control connection from %s: it proved the cluster token as rank %d, "
                "but %s\n", who, rank, why);
    else
        fprintf(stderr, "shardlm: refused a control connection from %s: it proved the cluster token but sent no "
                "handshake, and %s\n", who, why);
    close(fd);
}

/* Refuses the held peers whose time is up while the cluster stays complete. */
static void guard_expire(ctrl_guard *g)
{
    int out[GUARD_MAX_HELD], n_out = 0;
    uint64_t now = shardlm_now_ns();
    pthread_mutex_lock(&g->mu);
    for (int i = 0; g->complete && i < g->n_held;) {
        if (now - g->held_since[i] < CTRL_GUARD_HOLD_MS * 1000000ull) {
            i++;
            continue;
        }
        out[n_out++] = g->held[i];
        g->n_held--;
        memmove(&g->held[i], &g->held[i + 1], (size_t)(g->n_held - i) * sizeof g->held[0]);
        memmove(&g->held_since[i], &g->held_since[i + 1], (size_t)(g->n_held - i) * sizeof g->held_since[0]);
    }
    pthread_mutex_unlock(&g->mu);
    for (int i = 0; i < n_out; i++) guard_refuse_complete(out[i]);
}

/* One late connection: the token first, then hold it. */
static void guard_admit(ctrl_guard *g, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (ctrl_guard_auth(fd, CTRL_GUARD_AUTH_MS, UINT64_MAX)) {
        close(fd);
        return;
    }
    pthread_mutex_lock(&g->mu);
    int full = g->n_held == GUARD_MAX_HELD;
    if (!full) {
        g->held[g->n_held] = fd;
        g->held_since[g->n_held++] = shardlm_now_ns();
    }
    pthread_mutex_unlock(&g->mu);
    if (full) {
        char who[96];
        shardlm_peer_name(fd, who, sizeof who);
        fprintf(stderr, "shardlm: refused a control connection from %s: %d others already wait for a "
                "re-formation\n", who, GUARD_MAX_HELD);
        close(fd);
    }
}

static void *guard_main(void *arg)
{
    ctrl_guard *g = arg;
    while (!atomic_load(&g->stop)) {
        struct pollfd pf = {g->listen_fd, POLLIN, 0};
        int pr = poll(&pf, 1, 100);
        guard_expire(g);
        pthread_mutex_lock(&g->mu);
        int on = g->complete;
        pthread_mutex_unlock(&g->mu);
        if (pr <= 0) continue;
        if (!on) { /* accept_all reads the listener now */
            usleep(100000);
            continue;
        }
        int fd = accept4(g->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) guard_admit(g, fd);
    }
    return NULL;
}

int ctrl_guard_set_complete(ctrl_guard *g, int complete)
{
    pthread_mutex_lock(&g->mu);
    g->complete = complete;
    pthread_mutex_unlock(&g->mu);
    if (!complete || g->started) return SHARDLM_OK;
    int rc = pthread_create(&g->thread, NULL, guard_main, g);
    if (rc) {
        shardlm_err_set("control channel: cannot start the late-connection thread: %s", strerror(rc));
        return SHARDLM_ERUNTIME;
    }
    g->started = 1;
    return SHARDLM_OK;
}

int ctrl_guard_take(ctrl_guard *g)
{
    int fd = -1;
    pthread_mutex_lock(&g->mu);
    if (g->n_held) {
        fd = g->held[0];
        g->n_held--;
        memmove(&g->held[0], &g->held[1], (size_t)g->n_held * sizeof g->held[0]);
        memmove(&g->held_since[0], &g->held_since[1], (size_t)g->n_held * sizeof g->held_since[0]);
    }
    pthread_mutex_unlock(&g->mu);
    return fd;
}

void ctrl_guard_free(ctrl_guard *g)
{
    if (!g) return;
    if (g->started) {
        atomic_store(&g->stop, 1);
        pthread_join(g->thread, NULL);
    }
    for (int i = 0; i < g->n_held; i++) close(g->held[i]);
    pthread_mutex_destroy(&g->mu);
    free(g);
}
