/* test_comm_open.c - the transports' registry (collectives/comm_open.c):
 * names resolve to their transport, world size 1 is always the local one,
 * an unknown name is refused naming what the build has, a transport's own
 * errors pass through, and the launcher's registration adds ring and nccl. */
#include <criterion/criterion.h>
#include <string.h>

#include "node.h"
#include "shardlm_comm.h"
#include "shardlm_common.h"
#include "shardlm_nccl.h"
#include "shardlm_ring.h"

static int fake_opened;
static int fake_open(const shardlm_comm_open_opts *o, shardlm_comm **out)
{
    fake_opened = o->rank * 100 + o->world_size;
    *out = NULL;
    shardlm_err_set("fake transport: rank %d of %d refused", o->rank, o->world_size);
    return SHARDLM_EPEER;
}

Test(comm_open, world_size_1_is_local_whatever_the_kind)
{
    shardlm_comm *c = NULL;
    shardlm_comm_open_opts o = {0, 1, 1000, NULL};
    cr_assert_eq(shardlm_comm_open("mpi", &o, &c), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_str_eq(shardlm_comm_name(c), "local");
    cr_assert_eq(shardlm_comm_size(c), 1);
    shardlm_comm_destroy(c);
    cr_assert_eq(shardlm_comm_open("no-such", &o, &c), SHARDLM_OK);
    cr_assert_str_eq(shardlm_comm_name(c), "local");
    shardlm_comm_destroy(c);
}

Test(comm_open, unknown_name_lists_the_transports)
{
    shardlm_comm *c = (shardlm_comm *)1;
    shardlm_comm_open_opts o = {1, 2, 1000, NULL};
    cr_assert_eq(shardlm_comm_open("carrier-pigeon", &o, &c), SHARDLM_EINPUT);
    cr_assert_null(c);
    cr_assert(strstr(shardlm_err_get(), "'carrier-pigeon'") && strstr(shardlm_err_get(), "local, mpi"),
              "error: %s", shardlm_err_get());
    cr_assert_null(shardlm_comm_transport_find("ring"), "ring is registered by the launcher, not collectives");
}

Test(comm_open, launcher_registers_ring_and_nccl)
{
    shardlm_node_transports();
    shardlm_node_transports(); /* idempotent: one entry per name */
    char names[256];
    shardlm_comm_transport_names(names, sizeof names);
    cr_assert_str_eq(names, "local, mpi, ring, nccl");
    cr_assert_eq(shardlm_comm_transport_find("ring"), &shardlm_ring_comm_transport);
    cr_assert_str_eq(shardlm_comm_transport_find("nccl")->home, shardlm_nccl_built() ? "nccl/nccl.c" : "nccl/nccl_stub.c");
    /* each transport checks its own settings */
    shardlm_comm *c = NULL;
    shardlm_comm_open_opts o = {1, 2, 1000, NULL};
    cr_assert_eq(shardlm_comm_open("ring", &o, &c), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "RING_CONFIG"), "error: %s", shardlm_err_get());
    cr_assert_eq(shardlm_comm_open("nccl", &o, &c), SHARDLM_EINPUT);
    cr_assert(strstr(shardlm_err_get(), "unique id"), "error: %s", shardlm_err_get());
}

Test(comm_open, a_new_transport_is_opened_by_name)
{
    static const shardlm_comm_transport fake = {"fake", "tests/test_comm_open.c", fake_open};
    cr_assert_eq(shardlm_comm_register(&fake), SHARDLM_OK);
    cr_assert_eq(shardlm_comm_transport_find("fake"), &fake);
    shardlm_comm *c = NULL;
    shardlm_comm_open_opts o = {3, 4, 1000, NULL};
    cr_assert_eq(shardlm_comm_open("fake", &o, &c), SHARDLM_EPEER);
    cr_assert_eq(fake_opened, 304);
    cr_assert_str_eq(shardlm_err_get(), "fake transport: rank 3 of 4 refused");
    static const shardlm_comm_transport nameless = {NULL, "x", fake_open};
    cr_assert_eq(shardlm_comm_register(&nameless), SHARDLM_EINPUT);
}
