/* launch.c - spawning local rank processes for a loopback ring: distinct
 * free ports, one config file per rank in a private directory, fork/exec
 * with RING_CONFIG and SHARDLM_RANK, SIGINT/SIGTERM forwarded to the
 * children, and reaping through pidfds so waits block instead of polling.
 * Children get PR_SET_PDEATHSIG(SIGKILL), so they cannot outlive us, and
 * each runs in its own process group, which every kill targets. */
#include "shardlm_launch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shardlm_common.h"

extern char **environ;

#define LAUNCH_MAX_CHILDREN 1024

struct shardlm_launch {
    int world, first_rank;
    pid_t pid[LAUNCH_MAX_CHILDREN];   /* by rank; 0 = not ours or reaped */
    int pidfd[LAUNCH_MAX_CHILDREN];   /* -1 when unavailable */
    int status[LAUNCH_MAX_CHILDREN];
    char dir[64];
    char paths[LAUNCH_MAX_CHILDREN][96];
    struct sigaction old_int, old_term;
    char **argv; /* copied, for shardlm_launch_respawn */
};

/* Read by the signal handler: the live children of the current launch. */
static volatile pid_t launch_sig_pids[LAUNCH_MAX_CHILDREN];
static volatile sig_atomic_t launch_sig_n;
static shardlm_launch *volatile launch_sig_l;

static void launch_on_signal(int sig)
{
    for (int i = 0; i < launch_sig_n; i++)
        if (launch_sig_pids[i] > 0) kill(-launch_sig_pids[i], sig);
    /* unlink and rmdir are async-signal-safe: leave no config files. */
    shardlm_launch *l = launch_sig_l;
    for (int r = 0; l && r < l->world; r++)
        if (l->paths[r][0]) unlink(l->paths[r]);
    if (l) rmdir(l->dir);
    /* Then die of the same signal, as the caller would have without us. */
    signal(sig, SIG_DFL);
    raise(sig);
}

int shardlm_launch_plan(int world, shardlm_ring_config *cfgs)
{
    if (world < 1 || world > LAUNCH_MAX_CHILDREN) {
        shardlm_err_set("launch: world size %d is outside 1..%d", world, LAUNCH_MAX_CHILDREN);
        return SHARDLM_EINPUT;
    }
    /* One port per rank plus rank 0's control channel. All probe sockets
     * stay bound until every port is chosen, so the ports are distinct. */
    int n = world + 1, rc = SHARDLM_OK;
    int *fds = malloc(sizeof(int) * (size_t)n), *ports = malloc(sizeof(int) * (size_t)n);
    int opened = 0;
    for (; fds && ports && opened < n; opened++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) {
            shardlm_err_set("launch: cannot reserve a loopback port: %s", strerror(errno));
            if (fd >= 0) close(fd);
            rc = SHARDLM_ERUNTIME;
            break;
        }
        fds[opened] = fd;
        ports[opened] = ntohs(a.sin_port);
    }
    if (!fds || !ports) {
        shardlm_err_set("launch: out of memory");
        rc = SHARDLM_ENOMEM;
    }
    for (int i = 0; i < opened; i++) close(fds[i]);
    for (int r = 0; rc == SHARDLM_OK && r < world; r++) {
        shardlm_ring_config *c = &cfgs[r];
        memset(c, 0, sizeof *c);
        snprintf(c->master_ip, sizeof c->master_ip, "127.0.0.1");
        snprintf(c->right_ip, sizeof c->right_ip, "127.0.0.1");
        c->master_port = ports[world];
        c->port = ports[r];
        c->right_port = ports[(r + 1) % world];
        c->rank = r;
        c->world_size = world;
    }
    free(fds);
    free(ports);
    return rc;
}

/* The environment for rank r, built before fork: after fork only
 * async-signal-safe calls are allowed if the parent has threads. */
static char **launch_env(const char *cfg_path, int rank, int world, char *buf_cfg, size_t cap_cfg,
                         char *buf_rank, size_t cap_rank, char *buf_local, size_t cap_local)
{
    size_t n = 0;
    while (environ[n]) n++;
    char **env = calloc(n + 4, sizeof *env);
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "RING_CONFIG=", 12) && strncmp(environ[i], "SHARDLM_RANK=", 13) &&
            strncmp(environ[i], "SHARDLM_LOCAL_WORLD_SIZE=", 25))
            env[k++] = environ[i];
    snprintf(buf_cfg, cap_cfg, "RING_CONFIG=%s", cfg_path);
    snprintf(buf_rank, cap_rank, "SHARDLM_RANK=%d", rank);
    /* every launched rank is on this machine: rank r is local rank r (its GPU with --device cuda) */
    snprintf(buf_local, cap_local, "SHARDLM_LOCAL_WORLD_SIZE=%d", world);
    env[k++] = buf_cfg;
    env[k++] = buf_rank;
    env[k++] = buf_local;
    env[k] = NULL;
    return env;
}

static void launch_child(char *const argv[], char **env, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The parent may have died before prctl took effect. */
    if (getppid() != parent) _exit(127);
    /* Its own process group, so that a kill reaches whatever the rank
     * started too (a shell's children, say). */
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    execvpe(argv[0], argv, env);
    char msg[512];
    int len = snprintf(msg, sizeof msg, "shardlm launch: cannot run %s: %s\n", argv[0], strerror(errno));
    if (len > 0) (void)!write(STDERR_FILENO, msg, (size_t)len);
    _exit(127);
}

static int launch_spawn(shardlm_launch *l, int r, char *const argv[])
{
    char ecfg[160], erank[32], elocal[48];
    char **env = launch_env(l->paths[r], r, l->world, ecfg, sizeof ecfg, erank, sizeof erank, elocal, sizeof elocal);
    if (!env) {
        shardlm_err_set("launch: out of memory");
        return SHARDLM_ENOMEM;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) launch_child(argv, env, parent);
    free(env);
    if (pid < 0) {
        shardlm_err_set("launch: fork for rank %d: %s", r, strerror(errno));
        return SHARDLM_ERUNTIME;
    }
    setpgid(pid, pid); /* also here: no race with the first kill */
    l->pid[r] = pid;
    l->pidfd[r] = (int)syscall(SYS_pidfd_open, pid, 0);
    launch_sig_pids[r] = pid;
    return SHARDLM_OK;
}

static void launch_install_signals(shardlm_launch *l)
{
    struct sigaction sa = {0};
    sa.sa_handler = launch_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &l->old_int);
    sigaction(SIGTERM, &sa, &l->old_term);
}

int shardlm_launch_start(int world, int first_rank, const shardlm_ring_config *cfgs, char *const argv[],
                         shardlm_launch **out, const char **cfg0_path)
{
    if (world < 1 || world > LAUNCH_MAX_CHILDREN || first_rank < 0 || first_rank > world || !argv || !argv[0]) {
        shardlm_err_set("launch: bad arguments (world %d, first rank %d)", world, first_rank);
        return SHARDLM_EINPUT;
    }
    shardlm_launch *l = calloc(1, sizeof *l);
    if (!l) {
        shardlm_err_set("launch: out of memory");
        return SHARDLM_ENOMEM;
    }
    l->world = world;
    l->first_rank = first_rank;
    for (int r = 0; r < world; r++) l->pidfd[r] = -1;
    snprintf(l->dir, sizeof l->dir, "/tmp/shardlm-launch-XXXXXX");
    if (!mkdtemp(l->dir)) {
        shardlm_err_set("launch: mkdtemp %s: %s", l->dir, strerror(errno));
        free(l);
        return SHARDLM_ERUNTIME;
    }
    int rc = SHARDLM_OK;
    for (int r = 0; r < world && rc == SHARDLM_OK; r++) {
        snprintf(l->paths[r], sizeof l->paths[r], "%s/rank%d.json", l->dir, r);
        rc = shardlm_ring_config_write(l->paths[r], &cfgs[r]);
    }
    launch_sig_n = 0;
    for (int r = 0; r < world; r++) launch_sig_pids[r] = 0;
    if (rc == SHARDLM_OK) {
        launch_sig_l = l;
        launch_install_signals(l);
        launch_sig_n = world;
    }
    int argc = 0;
    while (argv[argc]) argc++;
    if (rc == SHARDLM_OK && !(l->argv = calloc((size_t)argc + 1, sizeof *l->argv))) rc = SHARDLM_ENOMEM;
    for (int i = 0; rc == SHARDLM_OK && i < argc; i++)
        if (!(l->argv[i] = strdup(argv[i]))) rc = SHARDLM_ENOMEM;
    for (int r = first_rank; r < world && rc == SHARDLM_OK; r++) rc = launch_spawn(l, r, argv);
    if (rc) {
        shardlm_launch_free(l);
        return rc;
    }
    if (cfg0_path) *cfg0_path = l->paths[0];
    *out = l;
    return SHARDLM_OK;
}

static void launch_reaped(shardlm_launch *l, int r, int st)
{
    l->status[r] = st;
    l->pid[r] = 0;
    launch_sig_pids[r] = 0;
    if (l->pidfd[r] >= 0) close(l->pidfd[r]);
    l->pidfd[r] = -1;
}

int shardlm_launch_poll(shardlm_launch *l, int *status)
{
    for (int r = l->first_rank; r < l->world; r++) {
        if (!l->pid[r]) continue;
        int st;
        pid_t p = waitpid(l->pid[r], &st, WNOHANG);
        if (p == l->pid[r]) {
            launch_reaped(l, r, st);
            if (status) *status = st;
            return r;
        }
    }
    return -1;
}

static int launch_running(const shardlm_launch *l)
{
    int n = 0;
    for (int r = l->first_rank; r < l->world; r++) n += l->pid[r] != 0;
    return n;
}

/* Blocks until some child may have exited or timeout_ms passed. */
static void launch_block(shardlm_launch *l, int timeout_ms)
{
    struct pollfd p[LAUNCH_MAX_CHILDREN];
    int n = 0, all_fds = 1;
    for (int r = l->first_rank; r < l->world; r++) {
        if (!l->pid[r]) continue;
        if (l->pidfd[r] < 0) all_fds = 0;
        else p[n++] = (struct pollfd){.fd = l->pidfd[r], .events = POLLIN};
    }
    /* Without pidfds (old kernels), fall back to short naps. */
    if (!all_fds && (timeout_ms < 0 || timeout_ms > 20)) timeout_ms = 20;
    poll(p, (nfds_t)n, timeout_ms);
}

int shardlm_launch_wait_any(shardlm_launch *l, int timeout_ms, int *status)
{
    uint64_t deadline = shardlm_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000u;
    for (;;) {
        int r = shardlm_launch_poll(l, status);
        if (r >= 0 || !launch_running(l)) return r;
        int left = -1;
        if (timeout_ms >= 0) {
            uint64_t now = shardlm_now_ns();
            if (now >= deadline) return -1;
            left = (int)((deadline - now + 999999) / 1000000);
        }
        launch_block(l, left);
    }
}

int shardlm_launch_wait(shardlm_launch *l, int timeout_ms)
{
    while (launch_running(l)) {
        int st;
        if (shardlm_launch_wait_any(l, timeout_ms, &st) < 0) break;
    }
    if (launch_running(l)) {
        shardlm_launch_kill(l, SIGKILL);
        for (int r = l->first_rank; r < l->world; r++) {
            int st;
            if (l->pid[r] && waitpid(l->pid[r], &st, 0) == l->pid[r]) launch_reaped(l, r, st);
        }
        shardlm_err_set("launch: ranks still running after %d ms were killed", timeout_ms);
        return SHARDLM_ETIMEDOUT;
    }
    for (int r = l->first_rank; r < l->world; r++) {
        int st = l->status[r];
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) continue;
        if (WIFSIGNALED(st)) shardlm_err_set("rank %d killed by signal %d", r, WTERMSIG(st));
        else shardlm_err_set("rank %d exited with status %d", r, WEXITSTATUS(st));
        return SHARDLM_ERUNTIME;
    }
    return SHARDLM_OK;
}

void shardlm_launch_kill(shardlm_launch *l, int sig)
{
    for (int r = l->first_rank; r < l->world; r++)
        if (l->pid[r] && kill(-l->pid[r], sig) != 0) kill(l->pid[r], sig);
}

int shardlm_launch_status(const shardlm_launch *l, int rank)
{
    return (rank >= 0 && rank < l->world) ? l->status[rank] : 0;
}

void shardlm_launch_free(shardlm_launch *l)
{
    if (!l) return;
    shardlm_launch_kill(l, SIGKILL);
    for (int r = l->first_rank; r < l->world; r++) {
        int st = 0;
        while (l->pid[r] && waitpid(l->pid[r], &st, 0) < 0 && errno == EINTR) {
        }
        if (l->pid[r]) launch_reaped(l, r, st);
    }
    if (launch_sig_n) {
        launch_sig_n = 0;
        launch_sig_l = NULL;
        sigaction(SIGINT, &l->old_int, NULL);
        sigaction(SIGTERM, &l->old_term, NULL);
    }
    for (int r = 0; r < l->world; r++)
        if (l->paths[r][0]) unlink(l->paths[r]);
    rmdir(l->dir);
    for (int i = 0; l->argv && l->argv[i]; i++) free(l->argv[i]);
    free(l->argv);
    free(l);
}

int shardlm_launch_respawn(shardlm_launch *l, int rank)
{
    if (!l || rank < l->first_rank || rank >= l->world || !l->argv) {
        shardlm_err_set("launch: rank %d is not one of ours", rank);
        return SHARDLM_EINPUT;
    }
    if (l->pid[rank]) { /* still there (stopped, or hung): it must go first */
        int st = 0;
        if (kill(-l->pid[rank], SIGKILL) != 0) kill(l->pid[rank], SIGKILL);
        while (waitpid(l->pid[rank], &st, 0) < 0 && errno == EINTR) {
        }
        launch_reaped(l, rank, st);
    }
    return launch_spawn(l, rank, l->argv);
}

int shardlm_launch_alive(const shardlm_launch *l, int rank)
{
    return l && rank >= 0 && rank < l->world && l->pid[rank] != 0;
}
