/* transport.c - the nccl entry of the collectives' transport registry, the
 * same in a build with NCCL and in one without (where creating the
 * communicator says why it cannot). */
#include "shardlm_common.h"
#include "shardlm_nccl.h"

static int nccl_open(const shardlm_comm_open_opts *o, shardlm_comm **out)
{
    const shardlm_nccl_open_config *nc = o->config;
    if (!nc || !nc->id) {
        shardlm_err_set("rank %d: the nccl transport needs rank 0's unique id", o->rank);
        return SHARDLM_EINPUT;
    }
    return shardlm_nccl_comm_create(o->rank, o->world_size, nc->id, nc->device, o->timeout_ms, out);
}

#ifdef SHARDLM_HAVE_NCCL
#define NCCL_HOME "nccl/nccl.c"
#else
#define NCCL_HOME "nccl/nccl_stub.c"
#endif

const shardlm_comm_transport shardlm_nccl_comm_transport = {"nccl", NCCL_HOME, nccl_open};
