/* nccl_stub.c - the NCCL entry points of a build without NCCL (or without
 * CUDA): each says so, so `--comm nccl` fails with a message. */
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_nccl.h"

#ifdef SHARDLM_NCCL_STUB_NO_CUDA
#define SHARDLM_NCCL_WHY "CUDA"
#else
#define SHARDLM_NCCL_WHY "NCCL"
#endif

static int no_nccl(void)
{
    shardlm_err_set("--comm nccl: this shardlm was built without %s (install the CUDA toolkit and NCCL and "
                    "rebuild)", SHARDLM_NCCL_WHY);
    return SHARDLM_EINPUT;
}

int shardlm_nccl_built(void) { return 0; }
const char *shardlm_nccl_version(void) { return ""; }

int shardlm_nccl_unique_id(uint8_t id[SHARDLM_NCCL_ID_BYTES])
{
    memset(id, 0, SHARDLM_NCCL_ID_BYTES);
    return no_nccl();
}

int shardlm_nccl_comm_create(int rank, int world, const uint8_t id[SHARDLM_NCCL_ID_BYTES], int device, int timeout_ms,
                             shardlm_comm **out)
{
    (void)rank, (void)world, (void)id, (void)device, (void)timeout_ms;
    *out = NULL;
    return no_nccl();
}
