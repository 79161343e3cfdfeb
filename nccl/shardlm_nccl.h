/* shardlm_nccl.h - the NCCL transport of the collective API
 * (collectives/shardlm_comm.h), name "nccl": one rank per GPU.
 *
 * Bootstrap: rank 0 makes a unique id (shardlm_nccl_unique_id) and sends it
 * to every rank before any communicator exists (the control channel's
 * NcclId message, or shardlm_comm_mpi_bcast_bootstrap under mpirun); then
 * every rank calls shardlm_nccl_comm_create with the same id.
 *
 * Nothing blocks without a deadline: init is non-blocking and polled, and
 * every collective polls its stream and NCCL's async error until it is done
 * or timeout_ms passes. On a timeout or an NCCL error the communicator is
 * aborted (ncclCommAbort) and the call returns SHARDLM_ETIMEDOUT or
 * SHARDLM_EPEER naming this rank and the operation; later calls fail at once.
 *
 * Buffers may be host or device memory (cudaPointerGetAttributes decides):
 * host buffers are staged through a device scratch that grows on demand,
 * so the forward pass passes device pointers and the launcher host ones.
 * A device buffer must be ready when the call is made (the caller
 * synchronises the stream that wrote it); results are ready on return. */
#ifndef SHARDLM_NCCL_H
#define SHARDLM_NCCL_H

#include <stdint.h>

#include "shardlm_comm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHARDLM_NCCL_ID_BYTES 128

/* 1 when this shardlm was compiled with NCCL. */
int shardlm_nccl_built(void);
/* The NCCL library's version, "2.28.9" (or "" without NCCL). */
const char *shardlm_nccl_version(void);
/* Rank 0: a new unique id for one communicator. */
int shardlm_nccl_unique_id(uint8_t id[SHARDLM_NCCL_ID_BYTES]);
/* Joins the communicator of `world` ranks named by id as `rank`, on CUDA
 * device `device`; gives up after timeout_ms (all ranks must join). */
int shardlm_nccl_comm_create(int rank, int world, const uint8_t id[SHARDLM_NCCL_ID_BYTES], int device, int timeout_ms,
                             shardlm_comm **out);

/* NCCL in the transports' registry (shardlm_comm_open "nccl"): its config
 * is a shardlm_nccl_open_config (the id every rank got from rank 0, and
 * this rank's device); timeout_ms bounds the join. */
typedef struct {
    const uint8_t *id;
    int device;
} shardlm_nccl_open_config;
extern const shardlm_comm_transport shardlm_nccl_comm_transport;

#ifdef __cplusplus
}
#endif

#endif
