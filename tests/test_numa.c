/* test_numa.c - `--numa` placement (launcher/numa.c) on fake sysfs trees:
 * cpulist parsing and its errors, reading node directories (gaps in the
 * numbering, memory-only nodes, stray entries), and the placement of local
 * ranks: a node per rank when there are enough, blocks of ranks per node
 * otherwise, CPUs split without overlap, shared only when ranks outnumber
 * CPUs, and the process's allowed CPUs respected. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "numa.h"
#include "shardlm_common.h"
#include "test_util.h"

static cpu_set_t set_of(const char *list)
{
    cpu_set_t s;
    cr_assert_eq(shardlm_numa_parse_cpulist(list, &s), 0, "'%s' did not parse", list);
    return s;
}

static void expect_list(const cpu_set_t *s, const char *want)
{
    char got[256];
    shardlm_numa_format(s, got, sizeof got);
    cr_assert_str_eq(got, want);
}

Test(numa, cpulists_parse_and_print_back)
{
    cpu_set_t s = set_of("0-3,8-11\n");
    cr_assert_eq(CPU_COUNT(&s), 8);
    expect_list(&s, "0-3,8-11");
    s = set_of("5");
    expect_list(&s, "5");
    s = set_of("0,2,4-5,7\n");
    expect_list(&s, "0,2,4-5,7");
    s = set_of("\n");
    cr_assert_eq(CPU_COUNT(&s), 0);
    s = set_of("1023");
    expect_list(&s, "1023");
}

Test(numa, malformed_cpulists_are_refused)
{
    static const char *bad[] = {"a", "0-", "3-1", "0,,1", "0,", "0 1", "-1", "1024", "0-3\n\n", "0:2"};
    cpu_set_t s;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(shardlm_numa_parse_cpulist(bad[i], &s), -1, "'%s' was accepted", bad[i]);
}

/* A fake /sys/devices/system/node: name=cpulist pairs; a NULL list makes
 * the directory without a cpulist file. */
static const char *fake_tree(const char *const *nodes, int n)
{
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/node", tu_tmpdir());
    mkdir(dir, 0755);
    for (int i = 0; i < n; i += 2) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", dir, nodes[i]);
        mkdir(path, 0755);
        if (!nodes[i + 1]) continue;
        snprintf(path, sizeof path, "%s/%s/cpulist", dir, nodes[i]);
        cr_assert_eq(tu_write_file(path, nodes[i + 1], strlen(nodes[i + 1])), 0);
    }
    return dir;
}

Test(numa, reads_nodes_in_order_skipping_memory_only_and_strays)
{
    const char *nodes[] = {"node10", "12-15\n", "node0", "0-3\n", "node2", "\n", "node3", NULL, "nodes", "0\n",
                           "possible", "0-10\n", "node1x", "4\n", "node1", "4-7\n"};
    shardlm_numa_topo t;
    cr_assert_eq(shardlm_numa_read(fake_tree(nodes, 16), &t), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_eq(t.n, 3, "%d nodes with CPUs", t.n);
    cr_assert(t.id[0] == 0 && t.id[1] == 1 && t.id[2] == 10);
    expect_list(&t.cpus[0], "0-3");
    expect_list(&t.cpus[1], "4-7");
    expect_list(&t.cpus[2], "12-15");
}

Test(numa, a_bad_cpulist_names_its_file)
{
    const char *nodes[] = {"node0", "0-3\n", "node1", "4-x\n"};
    shardlm_numa_topo t;
    cr_assert_eq(shardlm_numa_read(fake_tree(nodes, 4), &t), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "node1/cpulist") && strstr(shardlm_err_get(), "4-x"), "%s", shardlm_err_get());
}

Test(numa, no_sysfs_means_no_nodes)
{
    shardlm_numa_topo t;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/absent", tu_tmpdir());
    cr_assert_eq(shardlm_numa_read(dir, &t), SHARDLM_OK);
    cr_assert_eq(t.n, 0);
}

static shardlm_numa_topo two_nodes(void)
{
    const char *nodes[] = {"node0", "0-3\n", "node1", "4-7\n"};
    shardlm_numa_topo t;
    cr_assert_eq(shardlm_numa_read(fake_tree(nodes, 4), &t), SHARDLM_OK);
    return t;
}

static void expect_place(const shardlm_numa_topo *t, const char *allowed, int rank, int ranks, int node,
                         const char *cpus, int shared)
{
    cpu_set_t a = set_of(allowed);
    shardlm_numa_slot s;
    cr_assert_eq(shardlm_numa_place(t, &a, rank, ranks, &s), SHARDLM_OK, "%s", shardlm_err_get());
    char got[256];
    shardlm_numa_format(&s.cpus, got, sizeof got);
    cr_assert(s.node == node && !strcmp(got, cpus) && s.shared == shared,
              "rank %d of %d: node %d CPUs %s shared %d; expected node %d CPUs %s shared %d", rank, ranks, s.node, got,
              s.shared, node, cpus, shared);
}

Test(numa, one_rank_per_node_takes_the_whole_node)
{
    shardlm_numa_topo t = two_nodes();
    expect_place(&t, "0-7", 0, 2, 0, "0-3", 0);
    expect_place(&t, "0-7", 1, 2, 1, "4-7", 0);
    expect_place(&t, "0-7", 0, 1, 0, "0-3", 0);
}

Test(numa, ranks_fill_nodes_in_blocks_without_overlap)
{
    shardlm_numa_topo t = two_nodes();
    static const char *want[] = {"0-1", "2-3", "4-5", "6-7"};
    for (int r = 0; r < 4; r++) expect_place(&t, "0-7", r, 4, r / 2, want[r], 0);
    for (int r = 0; r < 8; r++) {
        char one[8];
        snprintf(one, sizeof one, "%d", r);
        expect_place(&t, "0-7", r, 8, r / 4, one, 0);
    }
    /* three ranks on two nodes: node 0 gets ranks 0-1, node 1 rank 2 */
    expect_place(&t, "0-7", 0, 3, 0, "0-1", 0);
    expect_place(&t, "0-7", 1, 3, 0, "2-3", 0);
    expect_place(&t, "0-7", 2, 3, 1, "4-7", 0);
}

Test(numa, more_ranks_than_cpus_share_evenly)
{
    const char *nodes[] = {"node0", "0-1\n"};
    shardlm_numa_topo t;
    cr_assert_eq(shardlm_numa_read(fake_tree(nodes, 2), &t), SHARDLM_OK);
    static const char *want[] = {"0", "0", "1", "1"};
    for (int r = 0; r < 4; r++) expect_place(&t, "0-1", r, 4, 0, want[r], 1);
}

Test(numa, fewer_ranks_than_nodes_spread_out)
{
    const char *nodes[] = {"node0", "0-1\n", "node1", "2-3\n", "node2", "4-5\n", "node3", "6-7\n"};
    shardlm_numa_topo t;
    cr_assert_eq(shardlm_numa_read(fake_tree(nodes, 8), &t), SHARDLM_OK);
    expect_place(&t, "0-7", 0, 2, 0, "0-1", 0);
    expect_place(&t, "0-7", 1, 2, 2, "4-5", 0);
}

Test(numa, allowed_cpus_are_respected)
{
    shardlm_numa_topo t = two_nodes();
    /* taskset 2-5: node 0 keeps 2-3, node 1 keeps 4-5 */
    expect_place(&t, "2-5", 0, 2, 0, "2-3", 0);
    expect_place(&t, "2-5", 1, 2, 1, "4-5", 0);
    /* only node 1 is allowed: both ranks go there */
    expect_place(&t, "4-7", 0, 2, 1, "4-5", 0);
    expect_place(&t, "4-7", 1, 2, 1, "6-7", 0);
    /* no node shown at all: the allowed CPUs are one node */
    shardlm_numa_topo none = {.n = 0};
    expect_place(&none, "0-3", 1, 2, -1, "2-3", 0);
    cpu_set_t empty;
    CPU_ZERO(&empty);
    shardlm_numa_slot s;
    cr_assert_eq(shardlm_numa_place(&none, &empty, 0, 1, &s), SHARDLM_EINPUT);
}

Test(numa, this_machine_has_a_readable_topology)
{
    shardlm_numa_topo t;
    cr_assert_eq(shardlm_numa_read("/sys/devices/system/node", &t), SHARDLM_OK, "%s", shardlm_err_get());
    cpu_set_t a;
    cr_assert_eq(sched_getaffinity(0, sizeof a, &a), 0);
    shardlm_numa_slot s;
    cr_assert_eq(shardlm_numa_place(&t, &a, 0, 1, &s), SHARDLM_OK);
    cpu_set_t both;
    CPU_AND(&both, &s.cpus, &a);
    cr_assert(CPU_COUNT(&s.cpus) > 0 && CPU_EQUAL(&both, &s.cpus), "rank 0 placed outside the allowed CPUs");
}
