/* node.c - see node.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shardlm_auth.h"
#include "node.h"
#include "numa.h"
#include "shardlm_cuda.h"
#include "shardlm_nccl.h"
#include "shardlm_cli.h"
#include "shardlm_common.h"
#include "weights.h"

int shardlm_node_comm_kind(const shardlm_node_opts *o, const char **kind)
{
    const char *c = o->comm ? o->comm : "auto";
    if (!strcmp(c, "auto")) {
        if (o->device && !strncmp(o->device, "cuda", 4)) *kind = "nccl";
        else if (shardlm_comm_mpi_launched() && !o->ring_config && !getenv("RING_CONFIG")) *kind = "mpi";
        else *kind = "ring";
        return SHARDLM_OK;
    }
    if (strcmp(c, "ring") && strcmp(c, "mpi") && strcmp(c, "nccl")) {
        shardlm_err_set("--comm '%s': expected auto, ring, mpi or nccl", c);
        return SHARDLM_EINPUT;
    }
    *kind = c;
    return SHARDLM_OK;
}

/* Rank and world come from MPI for --comm mpi, and for nccl under mpirun
 * when no RING_CONFIG names the ranks. */
static int node_uses_mpi(const shardlm_node_opts *o, const char *kind)
{
    if (!strcmp(kind, "mpi")) return 1;
    return !strcmp(kind, "nccl") && shardlm_comm_mpi_launched() && !o->ring_config && !getenv("RING_CONFIG");
}

int shardlm_node_mpi_rank(const shardlm_node_opts *o, int *rank)
{
    const char *kind;
    *rank = -1;
    int rc = shardlm_node_comm_kind(o, &kind);
    if (rc || !node_uses_mpi(o, kind)) return rc;
    if (shardlm_comm_mpi_built() && !shardlm_comm_mpi_launched()) { /* else the stub says "built without MPI" */
        shardlm_err_set("--comm %s: not started by mpirun (no PMI_RANK in the environment); use --comm ring "
                        "with --world-size or RING_CONFIG", kind);
        return SHARDLM_EINPUT;
    }
    return shardlm_comm_mpi_init(rank, NULL, NULL, NULL);
}

/* Where workers reach rank 0's control channel under mpirun:
 * SHARDLM_MASTER_IP, else loopback when every rank is on this machine, else
 * the first non-loopback IPv4 address of this host's name. */
static int node_master_ip(const shardlm_node *n, char *ip, size_t cap)
{
    const char *env = getenv("SHARDLM_MASTER_IP");
    if (env && *env) {
        snprintf(ip, cap, "%s", env);
        return SHARDLM_OK;
    }
    if (n->local_ranks == n->world) {
        snprintf(ip, cap, "127.0.0.1");
        return SHARDLM_OK;
    }
    char host[256] = "";
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (gethostname(host, sizeof host - 1) == 0 && getaddrinfo(host, NULL, &hints, &res) == 0) {
        for (struct addrinfo *a = res; a; a = a->ai_next) {
            const struct sockaddr_in *sa = (const struct sockaddr_in *)a->ai_addr;
            if ((ntohl(sa->sin_addr.s_addr) >> 24) == 127) continue;
            inet_ntop(AF_INET, &sa->sin_addr, ip, (socklen_t)cap);
            freeaddrinfo(res);
            return SHARDLM_OK;
        }
        freeaddrinfo(res);
    }
    shardlm_err_set("rank 0 (host '%s') has no non-loopback IPv4 address for the control channel; "
                    "set SHARDLM_MASTER_IP", host);
    return SHARDLM_EINPUT;
}

/* Under mpirun: rank 0 opens the control channel on SHARDLM_MASTER_PORT (or
 * a free port) and tells every rank where it is with one MPI broadcast. */
static int node_config_mpi(const shardlm_node_opts *o, shardlm_node *n)
{
    int rc = shardlm_comm_mpi_init(&n->rank, &n->world, &n->local_rank, &n->local_ranks);
    if (rc) return rc;
    if (n->world & (n->world - 1)) { /* as RING_CONFIG's world_size: the plan splits by powers of two */
        shardlm_err_set("mpirun -np %d: shardlm needs a power-of-two number of ranks", n->world);
        return SHARDLM_EINPUT;
    }
    n->mpi = 1;
    n->cfg.rank = n->rank;
    n->cfg.world_size = n->world;
    struct {
        char ip[256];
        int32_t port, status;
    } where = {"", 0, 0};
    if (n->rank == 0 && n->world > 1) {
        const char *p = getenv("SHARDLM_MASTER_PORT");
        rc = node_master_ip(n, where.ip, sizeof where.ip);
        if (!rc) rc = shardlm_ctrl_listen(where.ip, p ? atoi(p) : 0, n->world, &n->ctrl);
        where.port = rc ? -1 : shardlm_ctrl_port(n->ctrl);
        where.status = rc;
    }
    /* every rank takes part, even when rank 0 failed, so none waits forever */
    int brc = n->world > 1 ? shardlm_comm_mpi_bcast_bootstrap(&where, sizeof where, o->connect_timeout_ms) : 0;
    if (rc || brc) return rc ? rc : brc;
    if (where.status) {
        shardlm_err_set("rank 0 could not open the control channel (its error is above)");
        return SHARDLM_ERUNTIME;
    }
    snprintf(n->cfg.master_ip, sizeof n->cfg.master_ip, "%s", where.ip);
    n->cfg.master_port = where.port;
    return SHARDLM_OK;
}

int shardlm_node_ring_transport_check(const char *value, const char *who)
{
    shardlm_ring_transport t;
    if (shardlm_ring_transport_parse(value, &t) == SHARDLM_OK) return SHARDLM_OK;
    fprintf(stderr, "shardlm %s: invalid value '%s' for --ring-transport (auto, tcp or shm)\n", who, value);
    return SHARDLM_EINPUT;
}

static int node_config(const shardlm_node_opts *o, shardlm_node *n)
{
    int rc = shardlm_node_comm_kind(o, &n->comm_kind);
    n->local_ranks = o->local_ranks;
    if (rc) return rc;
    if (o->ring_transport && strcmp(n->comm_kind, "ring")) {
        shardlm_err_set("--ring-transport %s: applies to the ring, but this rank uses --comm %s", o->ring_transport,
                        n->comm_kind);
        return SHARDLM_EINPUT;
    }
    if (node_uses_mpi(o, n->comm_kind)) {
        int r;
        if ((rc = shardlm_node_mpi_rank(o, &r))) return rc;
        return node_config_mpi(o, n);
    }
    if (!o->ring_config) {
        n->rank = 0;
        n->world = 1;
        return SHARDLM_OK;
    }
    rc = shardlm_ring_config_load(o->ring_config, &n->cfg);
    if (rc) return rc;
    n->rank = n->cfg.rank;
    n->world = n->cfg.world_size;
    return SHARDLM_OK;
}

/* Control handshake first: it checks model fingerprint and world size before
 * any rank commits memory or ring connections. */
static int node_handshake(const shardlm_node_opts *o, shardlm_node *n, uint64_t fp, int *n_ctx, int *max_batch,
                          int *isq, const shardlm_ctrl_weights_req *want)
{
    shardlm_ctrl_hello h = {fp,         n->world,      n->rank,       n->comm_kind, *n_ctx,
                            *max_batch, *isq,          n->kv_blocks, n->block_size, n->kv_type, n->comm_q8};
    int rc = SHARDLM_OK;
    if (n->rank == 0) {
        if (!n->ctrl) rc = shardlm_ctrl_listen(n->cfg.master_ip, n->cfg.master_port, n->world, &n->ctrl);
        if (!rc && o->watch) shardlm_ctrl_set_watch(n->ctrl, o->watch, o->watch_ctx);
        if (!rc) rc = shardlm_ctrl_accept_all(n->ctrl, &h, o->connect_timeout_ms);
        return rc;
    }
    if (want) rc = shardlm_ctrl_connect_weights(n->cfg.master_ip, n->cfg.master_port, &h, want, o->connect_timeout_ms,
                                                &n->ctrl);
    else rc = shardlm_ctrl_connect(n->cfg.master_ip, n->cfg.master_port, &h, o->connect_timeout_ms, &n->ctrl);
    *n_ctx = h.n_ctx;
    *max_batch = h.max_batch;
    *isq = h.isq;
    if (n->rank != 0) {
        n->kv_blocks = h.kv_blocks;
        n->block_size = h.block_size;
        n->kv_type = h.kv_type;
        n->comm_q8 = h.comm_q8;
    }
    return rc;
}

/* --weights-from rank0 on a worker: there is no file to check first, so the
 * handshake comes first; then the shard's bytes arrive in the weights cache
 * (or the cached copy is current) and that file is opened as the model. */
static int node_fetch_weights(const shardlm_node_opts *o, shardlm_node *n, shardlm_gguf **g, int *n_ctx,
                              int *max_batch, int *isq)
{
    shardlm_weights_opts wo = {o->weights_cache, n->world, n->rank, o->timeout_ms, o->load_timeout_ms};
    shardlm_ctrl_weights_req want;
    char path[8192];
    int rc = shardlm_weights_probe(&wo, &want);
    if (!rc) rc = node_handshake(o, n, want.cached_fingerprint, n_ctx, max_batch, isq, &want);
    if (!rc) rc = shardlm_weights_receive(n->ctrl, &wo, &want, path, sizeof path);
    if (!rc) rc = shardlm_gguf_open(path, g);
    return rc;
}

static int node_threads(const shardlm_node_opts *o, const shardlm_node *n)
{
    if (o->n_threads > 0) return o->n_threads;
    int local = n->local_ranks > 0 ? n->local_ranks : 1; /* this rank's share of the physical cores */
    int t = shardlm_cpu_physical_cores() / local;
    return t < 1 ? 1 : t;
}

static int node_model(const shardlm_node_opts *o, shardlm_node *n, shardlm_gguf *g, int *n_ctx, int isq)
{
    double t0 = shardlm_now_s();
    shardlm_load_opts lo = {isq, NULL};
    if (isq >= 0 && node_threads(o, n) > 1 && shardlm_pool_new(node_threads(o, n), 0, &lo.pool)) lo.pool = NULL;
    int rc = shardlm_model_load(g, n->world, n->rank, &lo, &n->model);
    shardlm_pool_free(lo.pool);
    if (rc) return rc;
    n->load_s = shardlm_now_s() - t0;
    const shardlm_hparams *hp = shardlm_model_hparams(n->model);
    if (*n_ctx <= 0 || *n_ctx > hp->ctx) *n_ctx = hp->ctx;
    (void)o;
    return SHARDLM_OK;
}

/* Rank 0 sizes the paged KV pool from --kv-cache-mb: one token's KV on one
 * rank is layers x local KV heads x 2 (K and V) rows of --kv-cache-type. */
static int node_kv_pool(const shardlm_node_opts *o, shardlm_node *n, const shardlm_hparams *hp,
                        const shardlm_shard_plan *p)
{
    n->block_size = o->block_size > 0 ? o->block_size : 16;
    if (o->kv_cache_mb <= 0) return SHARDLM_OK; /* one sequence: sized from the context */
    double per_token = (double)shardlm_kv_bytes_per_token(hp, p, (shardlm_dtype)n->kv_type);
    double blocks = o->kv_cache_mb * 1048576.0 / (per_token * n->block_size);
    if (blocks < 1 || blocks > 1e8) {
        shardlm_err_set("--kv-cache-mb %g holds %.0f blocks of %d tokens (%.0f bytes per token per rank)",
                        o->kv_cache_mb, blocks, n->block_size, per_token);
        return SHARDLM_EINPUT;
    }
    n->kv_blocks = (int)blocks;
    return SHARDLM_OK;
}

int shardlm_node_kv_type_parse(const char *name)
{
    int t = name ? shardlm_dtype_parse(name) : -1;
    return t == SHARDLM_DT_F32 || t == SHARDLM_DT_F16 || t == SHARDLM_DT_Q8_0 ? t : -1;
}

/* --device: -1 for the CPU, else the CUDA device of this rank (its place
 * on this machine picks one of the visible GPUs). */
static int node_device(const shardlm_node_opts *o, shardlm_node *n)
{
    n->device = -1;
    if (!strcmp(n->comm_kind, "nccl") && (!o->device || strncmp(o->device, "cuda", 4))) {
        shardlm_err_set("--comm nccl needs a CUDA device (--device cuda or cuda:K)");
        return SHARDLM_EINPUT;
    }
    if (!o->device || !strcmp(o->device, "cpu")) return SHARDLM_OK;
    if (o->kv_type != SHARDLM_DT_F32) {
        shardlm_err_set("--kv-cache-type %s: --device %s keeps the KV cache in f32; use --kv-cache-type f32",
                        shardlm_dtype_name((uint32_t)o->kv_type), o->device);
        return SHARDLM_EINPUT;
    }
    if (strncmp(o->device, "cuda", 4)) {
        shardlm_err_set("--device '%s': expected cpu, cuda or cuda:K", o->device);
        return SHARDLM_EINPUT;
    }
    int local = n->mpi ? n->local_rank : n->rank % (n->local_ranks > 0 ? n->local_ranks : 1);
    int d = shardlm_cuda_pick_device(local, o->device);
    if (d < 0) return d;
    n->device = d;
    return SHARDLM_OK;
}

/* NCCL: rank 0 makes the unique id and hands it out by MPI_Bcast under
 * mpirun, else over the control channel; then every rank joins. */
static int node_nccl(const shardlm_node_opts *o, shardlm_node *n)
{
    if (n->device < 0) {
        shardlm_err_set("--comm nccl needs a CUDA device (--device cuda or cuda:K)");
        return SHARDLM_EINPUT;
    }
    uint8_t id[SHARDLM_NCCL_ID_BYTES] = {0};
    int rc = n->rank == 0 ? shardlm_nccl_unique_id(id) : SHARDLM_OK;
    if (n->mpi) {
        int brc = shardlm_comm_mpi_bcast_bootstrap(id, sizeof id, o->connect_timeout_ms);
        if (rc || brc) return rc ? rc : brc;
    } else if (n->rank == 0) {
        if (rc) return rc;
        _Static_assert(SHARDLM_NCCL_ID_BYTES == SHARDLM_CTRL_NCCL_ID_BYTES, "one NCCL id size");
        if ((rc = shardlm_ctrl_send_nccl_id(n->ctrl, id, o->connect_timeout_ms))) return rc;
    } else {
        shardlm_ctrl_msg m;
        if ((rc = shardlm_ctrl_recv(n->ctrl, o->connect_timeout_ms, &m))) return rc;
        int ok = m.kind == SHARDLM_CTRL_MSG_NCCL_ID; /* its length checked on receipt */
        if (ok) memcpy(id, m.u.nccl_id, sizeof id);
        shardlm_ctrl_msg_free(&m);
        if (!ok) {
            shardlm_err_set("rank %d: expected the NCCL id from rank 0, got another message "
                            "(is rank 0 running with --comm nccl?)", n->rank);
            return SHARDLM_EPEER;
        }
    }
    shardlm_nccl_open_config nc = {id, n->device};
    shardlm_comm_open_opts co = {n->rank, n->world, o->connect_timeout_ms, &nc};
    return shardlm_comm_open("nccl", &co, &n->comm);
}

void shardlm_node_transports(void)
{
    /* local and mpi are collectives' own; the launcher is what links these */
    shardlm_comm_register(&shardlm_ring_comm_transport);
    shardlm_comm_register(&shardlm_nccl_comm_transport);
}

/* The ring's settings: its RING_CONFIG and --ring-transport. */
static int node_ring(const shardlm_node_opts *o, shardlm_node *n)
{
    if (n->mpi) {
        shardlm_err_set("--comm ring under mpirun needs RING_CONFIG files; use --comm mpi");
        return SHARDLM_EINPUT;
    }
    /* with --weights-from rank0, a worker served early waits here while rank 0 serves the others */
    int tmo = o->weights_from && o->load_timeout_ms > o->connect_timeout_ms ? o->load_timeout_ms : o->connect_timeout_ms;
    shardlm_ring_open_config rcfg = {&n->cfg, SHARDLM_RING_AUTO};
    int rc = o->ring_transport ? shardlm_ring_transport_parse(o->ring_transport, &rcfg.transport)
                               : shardlm_ring_transport_env(&rcfg.transport);
    if (rc && o->ring_transport) shardlm_err_set("--ring-transport '%s': expected auto, tcp or shm", o->ring_transport);
    shardlm_comm_open_opts co = {n->rank, n->world, tmo, &rcfg};
    return rc ? rc : shardlm_comm_open("ring", &co, &n->comm);
}

/* The communicator, through the transports' registry (collectives/comm_open.c).
 * NCCL and the ring first gather what they need (the id, the config). */
static int node_comm(const shardlm_node_opts *o, shardlm_node *n)
{
    shardlm_node_transports();
    shardlm_comm_open_opts co = {n->rank, n->world, o->connect_timeout_ms, NULL};
    if (n->world == 1) return shardlm_comm_open(n->comm_kind, &co, &n->comm); /* local */
    if (!strcmp(n->comm_kind, "nccl")) return node_nccl(o, n);
    if (!strcmp(n->comm_kind, "ring")) return node_ring(o, n);
    return shardlm_comm_open(n->comm_kind, &co, &n->comm);
}

static int node_env_int(const char *name, int dflt)
{
    const char *e = getenv(name);
    return e && *e ? atoi(e) : dflt;
}

/* --numa: this rank's share of the machine's nodes and cores, before any
 * memory is allocated for the shard and before the kernel threads exist
 * (they inherit the CPU mask; --pin-threads then pins within it). The
 * place among the local ranks: MPI's local rank, else $SHARDLM_LOCAL_RANK,
 * else rank mod the local world size. */
static int node_numa(const shardlm_node_opts *o, shardlm_node *n)
{
    if (!o->numa) return SHARDLM_OK;
    int local = n->local_ranks > 0 ? n->local_ranks : node_env_int("SHARDLM_LOCAL_WORLD_SIZE", 1);
    int me = n->mpi ? n->local_rank : node_env_int("SHARDLM_LOCAL_RANK", n->rank % (local > 0 ? local : 1));
    shardlm_numa_topo topo;
    shardlm_numa_slot slot;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) CPU_ZERO(&allowed);
    int rc = shardlm_numa_read("/sys/devices/system/node", &topo);
    if (!rc) rc = shardlm_numa_place(&topo, &allowed, me, local, &slot);
    if (!rc) rc = shardlm_numa_apply(&slot);
    if (rc) return rc;
    char cpus[256];
    shardlm_numa_format(&slot.cpus, cpus, sizeof cpus);
    fprintf(stderr, "shardlm: rank %d (local %d of %d): --numa: node %d of %d, CPUs %s%s\n", n->rank, me, local,
            slot.node, slot.n_nodes, cpus, slot.shared ? " (shared: more local ranks than CPUs)" : "");
    return SHARDLM_OK;
}

int shardlm_node_open(const shardlm_node_opts *o, shardlm_node *n)
{
    memset(n, 0, sizeof *n);
    n->kv_type = o->kv_type; /* rank 0's choice; workers learn it in the handshake */
    n->comm_q8 = o->comm_q8;
    int rc = shardlm_auth_from_env(); /* SHARDLM_CLUSTER_TOKEN(_FILE); spawned workers inherit it */
    if (!rc) rc = node_config(o, n);
    if (!rc && n->world > 1 && !shardlm_auth_enabled())
        fprintf(stderr, "shardlm: warning: no cluster token (SHARDLM_CLUSTER_TOKEN): the control and ring ports "
                        "accept any peer on every interface\n");
    if (!rc) rc = node_device(o, n);
    if (!rc) rc = node_numa(o, n);
    if (rc) return rc;
    shardlm_gguf *g = NULL;
    int n_ctx = o->n_ctx, max_batch = o->max_batch, isq = o->isq;
    int fetch = o->weights_from && n->rank != 0 && n->world > 1;
    rc = fetch ? node_fetch_weights(o, n, &g, &n_ctx, &max_batch, &isq) : shardlm_gguf_open(o->model_path, &g);
    if (rc) return rc;
    shardlm_hparams hp;
    rc = shardlm_hparams_read(g, &hp);
    shardlm_shard_plan early;
    if (!rc) rc = shardlm_plan_make(&hp, n->world, n->rank, 1, &early); /* fail before any connection */
    if (!rc && n->rank == 0) {
        if (n_ctx <= 0 || n_ctx > hp.ctx) n_ctx = hp.ctx;
        rc = node_kv_pool(o, n, &hp, &early);
    }
    if (!rc && n->rank == 0) {
        rc = shardlm_tokenizer_from_gguf(g, &n->tok);
    }
    if (!rc && n->world > 1 && !fetch)
        rc = node_handshake(o, n, shardlm_gguf_fingerprint(g), &n_ctx, &max_batch, &isq, NULL);
    if (!rc && n->world > 1 && n->rank == 0) rc = shardlm_weights_serve(n->ctrl, g, n->world, o->timeout_ms);
    if (!rc) rc = node_comm(o, n);
    if (!rc) rc = node_model(o, n, g, &n_ctx, isq);
    if (!rc && n->device >= 0) rc = shardlm_model_to_device(n->model, n->device);
    shardlm_gguf_close(g); /* the shard has been copied out: release the mapping */
    if (!rc) rc = shardlm_comm_barrier(n->comm, o->load_timeout_ms);
    int threads = node_threads(o, n);
    n->n_threads = threads;
    shardlm_engine_opts eo = {n_ctx, max_batch, n->kv_blocks, n->block_size, o->timeout_ms, threads, o->pin_threads,
                              n->kv_type, n->comm_q8};
    if (!rc) rc = shardlm_engine_new(n->model, n->comm, n->ctrl, &eo, &n->engine);
    return rc;
}

void shardlm_node_close(shardlm_node *n)
{
    int finalize = n->mpi && n->engine;
    shardlm_engine_free(n->engine);
    shardlm_model_free(n->model);
    if (n->comm) shardlm_comm_destroy(n->comm);
    shardlm_ctrl_close(n->ctrl);
    shardlm_tokenizer_free(n->tok);
    memset(n, 0, sizeof *n);
    /* MPI_Finalize waits for the other ranks: only after a full bring-up, when
     * every rank gets here after Shutdown. A failed rank just exits and
     * mpirun stops the job. */
    if (finalize) shardlm_comm_mpi_finalize();
}

int shardlm_node_mpi_dispatch(const shardlm_node_opts *o, int local_world, const char *who)
{
    int rank = -1, rc = shardlm_node_mpi_rank(o, &rank);
    if (!rc && rank >= 0 && local_world > 1) {
        shardlm_err_set("--world-size spawns local workers; under mpirun the world size is -np");
        rc = SHARDLM_EINPUT;
    }
    if (rc) {
        fprintf(stderr, "shardlm %s: %s\n", who, shardlm_err_get());
        return shardlm_exit_code(rc);
    }
    return rank > 0 ? shardlm_node_worker_main(o, 600000, who) : -1;
}

/* --ready-file: a stale file from an earlier run must not say "ready", and
 * a path that cannot be written is better refused now than after loading. */
static int node_ready_clear(const char *path)
{
    if (unlink(path) && errno != ENOENT) {
        shardlm_err_set("--ready-file %s: cannot remove the old file: %s", path, strerror(errno));
        return SHARDLM_EINPUT;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        shardlm_err_set("--ready-file %s: cannot create it: %s", path, strerror(errno));
        return SHARDLM_EINPUT;
    }
    close(fd);
    unlink(path);
    return SHARDLM_OK;
}

/* Written to a temporary name and renamed, so a probe never sees it half made. */
static int node_ready_mark(const char *path, int rank)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int ok = f && fprintf(f, "rank %d: joined rank 0, weights loaded\n", rank) > 0;
    if (f && fclose(f)) ok = 0;
    if (!ok || rename(tmp, path)) {
        shardlm_err_set("--ready-file %s: cannot write it: %s", path, strerror(errno));
        unlink(tmp);
        return SHARDLM_ERUNTIME;
    }
    return SHARDLM_OK;
}

/* One life of a worker: bring-up, then rank 0's steps. */
static int node_worker_once(const shardlm_node_opts *o, int idle_ms, const char *who, int *rank)
{
    shardlm_node n = {0};
    int rc = o->ready_file ? node_ready_clear(o->ready_file) : SHARDLM_OK;
    if (rc) {
        fprintf(stderr, "shardlm %s: %s\n", who, shardlm_err_get());
        return rc;
    }
    rc = shardlm_node_open(o, &n);
    if (!rc && n.rank == 0) {
        shardlm_err_set("rank 0 cannot run as a worker");
        rc = SHARDLM_EINPUT;
    }
    if (!rc) rc = shardlm_node_report_memory(&n, "loaded");
    if (!rc && o->ready_file) rc = node_ready_mark(o->ready_file, n.rank);
    if (!rc) rc = shardlm_engine_worker_loop(n.engine, idle_ms);
    if (o->ready_file) unlink(o->ready_file); /* no longer following rank 0 */
    if (rc) fprintf(stderr, "shardlm %s (rank %d): %s\n", who, n.rank, shardlm_err_get());
    if (n.rank) *rank = n.rank;
    shardlm_node_close(&n);
    return rc;
}

int shardlm_node_worker_main(const shardlm_node_opts *o, int idle_ms, const char *who)
{
    int rank = 0;
    for (;;) {
        int rc = node_worker_once(o, idle_ms, who, &rank);
        /* a refused handshake or a bad flag will not get better by retrying */
        if (!o->rejoin || rc == SHARDLM_OK || rc == SHARDLM_EINPUT)
            return shardlm_exit_code(rc);
        fprintf(stderr, "shardlm %s (rank %d): --rejoin: connecting to rank 0 again\n", who, rank);
        usleep(200000);
    }
}

int shardlm_node_reform(const shardlm_node_opts *o, shardlm_node *n)
{
    if (n->mpi || strcmp(n->comm_kind, "ring")) {
        shardlm_err_set("--comm %s cannot re-form without a restart; only the ring can", n->comm_kind);
        return SHARDLM_EINPUT;
    }
    if (n->comm) shardlm_comm_destroy(n->comm);
    n->comm = NULL;
    shardlm_ctrl_reset_workers(n->ctrl);
    shardlm_gguf *g = NULL;
    int n_ctx = shardlm_engine_n_ctx(n->engine), max_batch = o->max_batch, isq = o->isq;
    int rc = shardlm_gguf_open(o->model_path, &g);
    if (!rc) rc = node_handshake(o, n, shardlm_gguf_fingerprint(g), &n_ctx, &max_batch, &isq, NULL);
    if (!rc) rc = shardlm_weights_serve(n->ctrl, g, n->world, o->timeout_ms);
    shardlm_gguf_close(g);
    if (!rc) rc = node_comm(o, n);
    if (!rc) rc = shardlm_comm_barrier(n->comm, o->load_timeout_ms);
    if (!rc) rc = shardlm_node_report_memory(n, "re-formed");
    if (!rc) shardlm_engine_rebind(n->engine, n->comm, n->ctrl);
    return rc;
}

int shardlm_node_report_memory(shardlm_node *n, const char *when)
{
    uint64_t mine[2] = {shardlm_model_shard_bytes(n->model), shardlm_rss_bytes()};
    uint64_t all[2 * 1024];
    size_t bytes[1024];
    if (n->world > 1024) return SHARDLM_OK;
    for (int r = 0; r < n->world; r++) bytes[r] = sizeof mine;
    int rc = shardlm_comm_gatherv(n->comm, mine, bytes, all, 30000);
    if (rc || n->rank != 0) return rc;
    for (int r = 0; r < n->world; r++)
        fprintf(stderr, "shardlm: rank %d %s: shard %.1f MiB, resident %.1f MiB\n", r, when,
                (double)all[2 * r] / 1048576.0, (double)all[2 * r + 1] / 1048576.0);
    return SHARDLM_OK;
}

static int node_watch_children(void *ctx)
{
    int st = 0, r = shardlm_launch_poll((shardlm_launch *)ctx, &st);
    if (r < 0) return 0;
    shardlm_err_set("worker rank %d exited during start-up (status %d); its error is above", r,
                    WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return 1;
}

int shardlm_node_spawn_local(shardlm_node_opts *o, int world, shardlm_launch **out)
{
    shardlm_ring_config cfgs[64];
    if (world > 64) {
        shardlm_err_set("--world-size %d: at most 64 local ranks", world);
        return SHARDLM_EINPUT;
    }
    int rc = shardlm_launch_plan(world, cfgs);
    if (rc) return rc;
    char tmo[32], ctmo[32], thr[32];
    snprintf(tmo, sizeof tmo, "%d", o->timeout_ms);
    snprintf(ctmo, sizeof ctmo, "%d", o->connect_timeout_ms);
    o->local_ranks = world;
    int threads = o->n_threads > 0 ? o->n_threads : shardlm_cpu_physical_cores() / world;
    snprintf(thr, sizeof thr, "%d", threads > 0 ? threads : 1);
    char idle[32];
    char *argv[28] = {(char *)shardlm_cli_self(), "worker", "--timeout-ms", tmo, "--connect-timeout-ms", ctmo,
                      "--threads", thr};
    int a = 8;
    if (o->rejoin) argv[a++] = "--rejoin";
    if (o->idle_timeout_ms > 0) {
        snprintf(idle, sizeof idle, "%d", o->idle_timeout_ms);
        argv[a++] = "--idle-timeout-ms";
        argv[a++] = idle;
    }
    if (o->weights_from) { /* the workers get their bytes from rank 0 instead of reading the file */
        argv[a++] = "--weights-from";
        argv[a++] = (char *)o->weights_from;
        if (o->weights_cache) argv[a++] = "--weights-cache";
        if (o->weights_cache) argv[a++] = (char *)o->weights_cache;
    } else {
        argv[a++] = "-m";
        argv[a++] = (char *)o->model_path;
    }
    if (o->pin_threads) argv[a++] = "--pin-threads";
    if (o->numa) argv[a++] = "--numa";
    if (o->ring_transport) argv[a++] = "--ring-transport", argv[a++] = (char *)o->ring_transport;
    if (o->comm) argv[a++] = "--comm", argv[a++] = (char *)o->comm;
    if (o->device) argv[a++] = "--device", argv[a++] = (char *)o->device;
    rc = shardlm_launch_start(world, 1, cfgs, argv, out, &o->ring_config);
    if (rc) return rc;
    o->watch = node_watch_children;
    o->watch_ctx = *out;
    return SHARDLM_OK;
}
