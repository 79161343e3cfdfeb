/* numa.c - see numa.h. No libnuma: the topology is a few sysfs files and
 * the memory policy one system call. */
#include "numa.h"

#include <dirent.h>
#include <errno.h>
#include <linux/mempolicy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shardlm_common.h"

static int numa_num(const char **s, long *out)
{
    char *end;
    if (**s < '0' || **s > '9') return -1;
    errno = 0;
    long v = strtol(*s, &end, 10);
    if (errno || v >= CPU_SETSIZE) return -1;
    *s = end;
    *out = v;
    return 0;
}

int shardlm_numa_parse_cpulist(const char *s, cpu_set_t *out)
{
    CPU_ZERO(out);
    if (*s == '\n' && !s[1]) return 0;
    while (*s) {
        long a, b;
        if (numa_num(&s, &a)) return -1;
        b = a;
        if (*s == '-') {
            s++;
            if (numa_num(&s, &b) || b < a) return -1;
        }
        for (long c = a; c <= b; c++) CPU_SET((int)c, out);
        if (*s == ',') {
            s++;
            if (!*s || *s == '\n') return -1;
        } else if (*s == '\n' && !s[1]) {
            return 0;
        } else if (*s) {
            return -1;
        }
    }
    return 0;
}

void shardlm_numa_format(const cpu_set_t *s, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = 0;
    for (int c = 0; c < CPU_SETSIZE && len < cap; c++) {
        if (!CPU_ISSET(c, s)) continue;
        int e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, s)) e++;
        int k = e > c ? snprintf(buf + len, cap - len, "%s%d-%d", len ? "," : "", c, e)
                      : snprintf(buf + len, cap - len, "%s%d", len ? "," : "", c);
        if (k < 0) break;
        len += (size_t)k;
        c = e;
    }
}

/* Digits only after "node": "node12", not "node12x" or "nodes". */
static int numa_node_id(const char *name)
{
    if (strncmp(name, "node", 4) || !name[4]) return -1;
    for (const char *p = name + 4; *p; p++)
        if (*p < '0' || *p > '9') return -1;
    long v = strtol(name + 4, NULL, 10);
    return v < 1 << 20 ? (int)v : -1;
}

static int numa_read_node(const char *dir, int id, cpu_set_t *set)
{
    char path[4096], line[8192];
    snprintf(path, sizeof path, "%s/node%d/cpulist", dir, id);
    FILE *f = fopen(path, "r");
    if (!f) {
        CPU_ZERO(set); /* no cpulist: no CPUs to place on it */
        return SHARDLM_OK;
    }
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    if (shardlm_numa_parse_cpulist(line, set)) {
        shardlm_err_set("%s: not a CPU list ('%.40s'); expected e.g. 0-3,8-11", path, line);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

static int numa_cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int shardlm_numa_read(const char *dir, shardlm_numa_topo *t)
{
    t->n = 0;
    DIR *d = opendir(dir);
    if (!d) return SHARDLM_OK;
    int ids[SHARDLM_NUMA_MAX_NODES], n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < SHARDLM_NUMA_MAX_NODES) {
        int id = numa_node_id(e->d_name);
        if (id >= 0) ids[n++] = id;
    }
    closedir(d);
    qsort(ids, (size_t)n, sizeof *ids, numa_cmp_int);
    for (int i = 0; i < n; i++) {
        int rc = numa_read_node(dir, ids[i], &t->cpus[t->n]);
        if (rc) return rc;
        if (CPU_COUNT(&t->cpus[t->n]) == 0) continue; /* memory-only node */
        t->id[t->n++] = ids[i];
    }
    return SHARDLM_OK;
}

/* The k-th CPU of a set, in ascending order. */
static int numa_nth(const cpu_set_t *s, int k)
{
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, s) && k-- == 0) return c;
    return -1;
}

int shardlm_numa_place(const shardlm_numa_topo *t, const cpu_set_t *allowed, int local_rank, int local_ranks,
                       shardlm_numa_slot *out)
{
    shardlm_numa_topo usable; /* 33 KiB */
    usable.n = 0;
    for (int i = 0; i < t->n; i++) {
        CPU_AND(&usable.cpus[usable.n], &t->cpus[i], allowed);
        if (CPU_COUNT(&usable.cpus[usable.n])) usable.id[usable.n++] = t->id[i];
    }
    if (usable.n == 0) {
        if (CPU_COUNT(allowed) == 0) {
            shardlm_err_set("--numa: this process may run on no CPU");
            return SHARDLM_EINPUT;
        }
        usable.cpus[0] = *allowed;
        usable.id[0] = t->n ? t->id[0] : -1;
        usable.n = 1;
    }
    long N = usable.n, L = local_ranks > 0 ? local_ranks : 1, i = ((local_rank % L) + L) % L;
    long k = i * N / L;                                       /* blocks of ranks per node */
    long first = (k * L + N - 1) / N, next = ((k + 1) * L + N - 1) / N; /* ranks i with i*N/L == k */
    long j = i - first, m = next - first;
    const cpu_set_t *cpus = &usable.cpus[k];
    long C = CPU_COUNT(cpus);
    CPU_ZERO(&out->cpus);
    long lo = j * C / m, hi = (j + 1) * C / m;
    if (hi <= lo) hi = lo + 1; /* fewer CPUs than ranks: share one */
    for (long c = lo; c < hi; c++) CPU_SET(numa_nth(cpus, (int)c), &out->cpus);
    out->node = usable.id[k];
    out->n_nodes = (int)N;
    out->shared = C < m;
    return SHARDLM_OK;
}

int shardlm_numa_apply(const shardlm_numa_slot *s)
{
    if (sched_setaffinity(0, sizeof s->cpus, &s->cpus) != 0) {
        shardlm_err_set("--numa: sched_setaffinity: %s", strerror(errno));
        return SHARDLM_ERUNTIME;
    }
    if (s->n_nodes < 2 || s->node < 0) return SHARDLM_OK;
    unsigned long mask[(SHARDLM_NUMA_MAX_NODES * 4) / (8 * sizeof(unsigned long)) + 1] = {0};
    size_t bits = 8 * sizeof(unsigned long);
    if ((size_t)s->node >= bits * (sizeof mask / sizeof mask[0])) return SHARDLM_OK;
    mask[(size_t)s->node / bits] |= 1ul << ((size_t)s->node % bits);
    /* preferred, not bound: a full node spills to the others instead of failing */
    if (syscall(SYS_set_mempolicy, MPOL_PREFERRED, mask, (unsigned long)(bits * (sizeof mask / sizeof mask[0]))) != 0) {
        shardlm_err_set("--numa: set_mempolicy(node %d): %s", s->node, strerror(errno));
        return SHARDLM_ERUNTIME;
    }
    return SHARDLM_OK;
}
