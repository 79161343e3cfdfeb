/* server_deadline.c - the HTTP request deadline (--http-header-timeout): a
 * connection whose request (headers, and the body of a POST) is not in
 * within the deadline of its start (the connection opening, or its last
 * response ending) is shut down, however it trickles. libmicrohttpd 0.9.75
 * only has an idle timeout, which any byte resets, so with one thread per
 * connection slow clients could otherwise hold threads up to the cap.
 *
 * MHD reports each socket's open and close (MHD_OPTION_NOTIFY_CONNECTION);
 * open sockets sit on a list with their clock. The access handler stops the
 * clock once the request is in (a response may then take as long as it
 * needs: streams are never cut), the end of a response restarts it for the
 * next request. A reaper thread shuts down the sockets past their deadline;
 * MHD's connection thread then reads end-of-file and drops the connection
 * itself. The descriptor is valid while its socket is on the list: MHD
 * reports the close before it closes the descriptor, and removing from the
 * list takes the lock the reaper holds while it calls shutdown(). */
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#include "server_internal.h"
#include "shardlm_common.h"

#define REAP_PERIOD_NS 200000000L

struct srv_sock {
    srv_sock *prev, *next;
    srv_deadline *dl;
    int fd;
    int armed; /* a request is awaited: the clock runs */
    int cut;   /* shut down already */
    double since;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void reap_locked(srv_deadline *dl)
{
    double now = mono_now();
    for (srv_sock *s = dl->head; s; s = s->next) {
        if (!s->armed || s->cut || now - s->since < dl->limit_s) continue;
        shutdown(s->fd, SHUT_RDWR);
        s->cut = 1;
        dl->cut_total++;
    }
}

static void *reaper_main(void *arg)
{
    srv_deadline *dl = arg;
    pthread_mutex_lock(&dl->mu);
    while (!dl->stop) {
        reap_locked(dl);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += REAP_PERIOD_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&dl->cv, &dl->mu, &ts);
    }
    pthread_mutex_unlock(&dl->mu);
    return NULL;
}

int srv_deadline_start(srv_deadline *dl, double limit_s)
{
    pthread_condattr_t ca;
    dl->limit_s = limit_s;
    dl->head = NULL;
    dl->stop = 0;
    dl->cut_total = 0;
    pthread_mutex_init(&dl->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&dl->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&dl->thread, NULL, reaper_main, dl)) {
        pthread_cond_destroy(&dl->cv);
        pthread_mutex_destroy(&dl->mu);
        shardlm_err_set("cannot start the HTTP deadline thread");
        return SHARDLM_ERUNTIME;
    }
    dl->running = 1;
    return SHARDLM_OK;
}

/* After MHD_stop_daemon: every socket has been reported closed by then;
 * any left over (none expected) is freed. */
void srv_deadline_stop(srv_deadline *dl)
{
    if (!dl->running) return;
    pthread_mutex_lock(&dl->mu);
    dl->stop = 1;
    pthread_cond_signal(&dl->cv);
    pthread_mutex_unlock(&dl->mu);
    pthread_join(dl->thread, NULL);
    while (dl->head) {
        srv_sock *s = dl->head;
        dl->head = s->next;
        free(s);
    }
    pthread_cond_destroy(&dl->cv);
    pthread_mutex_destroy(&dl->mu);
    dl->running = 0;
}

/* STARTED comes on MHD's listening thread before the connection's own
 * thread exists, so asking MHD for the descriptor here races with nothing. */
void srv_deadline_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                         enum MHD_ConnectionNotificationCode code)
{
    srv_deadline *dl = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        srv_sock *s = ci ? calloc(1, sizeof *s) : NULL;
        *socket_context = s;
        if (!s) return; /* out of memory: this one connection goes without a deadline */
        s->dl = dl;
        s->fd = ci->connect_fd;
        s->armed = 1;
        s->since = mono_now();
        pthread_mutex_lock(&dl->mu);
        s->next = dl->head;
        if (dl->head) dl->head->prev = s;
        dl->head = s;
        pthread_mutex_unlock(&dl->mu);
        return;
    }
    srv_sock *s = *socket_context;
    if (!s) return;
    pthread_mutex_lock(&dl->mu);
    if (s->prev) s->prev->next = s->next;
    else dl->head = s->next;
    if (s->next) s->next->prev = s->prev;
    pthread_mutex_unlock(&dl->mu);
    free(s);
    *socket_context = NULL;
}

/* Called on the connection's own thread (MHD's per-connection info is not
 * safe to read from another). */
static void set_armed(struct MHD_Connection *conn, int armed)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    srv_sock *s = ci ? ci->socket_context : NULL;
    if (!s) return;
    pthread_mutex_lock(&s->dl->mu);
    s->armed = armed;
    s->since = mono_now();
    pthread_mutex_unlock(&s->dl->mu);
}

void srv_deadline_request_in(struct MHD_Connection *conn) { set_armed(conn, 0); }

void srv_deadline_response_done(struct MHD_Connection *conn) { set_armed(conn, 1); }

uint64_t srv_deadline_cut_total(srv_deadline *dl)
{
    if (!dl->running) return 0;
    pthread_mutex_lock(&dl->mu);
    uint64_t n = dl->cut_total;
    pthread_mutex_unlock(&dl->mu);
    return n;
}
