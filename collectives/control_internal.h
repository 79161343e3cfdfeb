/* control_internal.h - the protobuf side of the control channel, shared by
 * control.c (framing, handshake, faults, heartbeats), control_msg.c (the
 * typed messages) and control_check.c (validation). Nothing outside
 * collectives/ includes it: shardlm_control.h is the public face. */
#ifndef SHARDLM_CONTROL_INTERNAL_H
#define SHARDLM_CONTROL_INTERNAL_H

#include "shardlm.pb-c.h"
#include "shardlm_control.h"

/* Rank 0: one Envelope to every worker, or to worker `rank` only. */
int shardlm_ctrl_env_broadcast(shardlm_ctrl *c, const Shardlm__Envelope *env, int timeout_ms);
int shardlm_ctrl_env_send(shardlm_ctrl *c, int rank, const Shardlm__Envelope *env, int timeout_ms);
/* Worker: the next Envelope from rank 0, validated with the world's limits
 * (free it with shardlm__envelope__free_unpacked(env, NULL)). */
int shardlm_ctrl_env_recv(shardlm_ctrl *c, int timeout_ms, Shardlm__Envelope **env);

/* Validates one decoded Envelope before use (control_check.c). */
int shardlm_ctrl_check(const Shardlm__Envelope *env, const shardlm_ctrl_limits *lim);

#endif
