/* comm_nompi.c - the MPI entry points of a build without MPI: each says so,
 * so `--comm mpi` fails with a message instead of a link error. */
#include <stdlib.h>

#include "shardlm_comm.h"
#include "shardlm_common.h"

int shardlm_comm_mpi_built(void) { return 0; }

static int no_mpi(void)
{
    shardlm_err_set("--comm mpi: this shardlm was built without MPI (install libmpich-dev and rebuild)");
    return SHARDLM_EINPUT;
}

int shardlm_comm_mpi_init(int *rank, int *world, int *local_rank, int *local_size)
{
    (void)rank, (void)world, (void)local_rank, (void)local_size;
    return no_mpi();
}

int shardlm_comm_mpi_create(shardlm_comm **out)
{
    *out = NULL;
    return no_mpi();
}

int shardlm_comm_mpi_bcast_bootstrap(void *buf, size_t bytes, int timeout_ms)
{
    (void)buf, (void)bytes, (void)timeout_ms;
    return no_mpi();
}

const char *shardlm_comm_mpi_version(void) { return ""; }
void shardlm_comm_mpi_finalize(void) {}
