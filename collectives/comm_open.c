/* comm_open.c - the one home of the transports: a registry of every
 * shardlm_comm_ops implementation by name ("local", "mpi" built in here;
 * "ring" from ring/, "nccl" from nccl/, registered by whoever links them,
 * the launcher) and the one opener, so no caller picks a backend's create
 * function itself. Transports depend on collectives, never the reverse,
 * hence registration rather than a table of their symbols. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "shardlm_comm.h"
#include "shardlm_common.h"

#define COMM_MAX_TRANSPORTS 16

static int open_local(const shardlm_comm_open_opts *o, shardlm_comm **out)
{
    (void)o;
    return shardlm_comm_local_create(out);
}

static int open_mpi(const shardlm_comm_open_opts *o, shardlm_comm **out)
{
    (void)o;
    return shardlm_comm_mpi_create(out);
}

static const shardlm_comm_transport local_transport = {"local", "collectives/comm.c", open_local};
static const shardlm_comm_transport mpi_transport = {"mpi", "collectives/comm_mpi.c", open_mpi};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static const shardlm_comm_transport *reg[COMM_MAX_TRANSPORTS] = {&local_transport, &mpi_transport};
static int n_reg = 2;

int shardlm_comm_register(const shardlm_comm_transport *t)
{
    if (!t || !t->name || !t->open) {
        shardlm_err_set("shardlm_comm_register: a transport needs a name and an open function");
        return SHARDLM_EINPUT;
    }
    int rc = SHARDLM_OK;
    pthread_mutex_lock(&reg_mu);
    int i = 0;
    while (i < n_reg && strcmp(reg[i]->name, t->name)) i++;
    if (i < n_reg) reg[i] = t; /* the same name again: the newer one */
    else if (n_reg < COMM_MAX_TRANSPORTS) reg[n_reg++] = t;
    else {
        shardlm_err_set("shardlm_comm_register: more than %d transports", COMM_MAX_TRANSPORTS);
        rc = SHARDLM_EINPUT;
    }
    pthread_mutex_unlock(&reg_mu);
    return rc;
}

const shardlm_comm_transport *shardlm_comm_transport_find(const char *name)
{
    const shardlm_comm_transport *t = NULL;
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; name && i < n_reg && !t; i++)
        if (!strcmp(reg[i]->name, name)) t = reg[i];
    pthread_mutex_unlock(&reg_mu);
    return t;
}

size_t shardlm_comm_transport_names(char *buf, size_t cap)
{
    size_t n = 0;
    if (cap) buf[0] = 0;
    pthread_mutex_lock(&reg_mu);
    for (int i = 0; i < n_reg; i++) {
        int k = snprintf(buf + (n < cap ? n : cap), n < cap ? cap - n : 0, "%s%s", i ? ", " : "", reg[i]->name);
        if (k > 0) n += (size_t)k;
    }
    pthread_mutex_unlock(&reg_mu);
    return n;
}

int shardlm_comm_open(const char *kind, const shardlm_comm_open_opts *o, shardlm_comm **out)
{
    *out = NULL;
    if (o && o->world_size == 1) kind = "local"; /* nothing to connect, whatever the transport */
    const shardlm_comm_transport *t = shardlm_comm_transport_find(kind);
    if (!t) {
        char names[256];
        shardlm_comm_transport_names(names, sizeof names);
        shardlm_err_set("no collective transport named '%s' (this build has: %s)", kind ? kind : "(none)", names);
        return SHARDLM_EINPUT;
    }
    static const shardlm_comm_open_opts none = {0, 1, 0, NULL};
    return t->open(o ? o : &none, out);
}
