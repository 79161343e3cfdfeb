/* weights.h - --weights-from rank0: workers without the model file get the
 * bytes of their shard from rank 0 over the control channel and keep them in
 * a sparse cache file named by model fingerprint, world size and rank, so a
 * restart sends nothing. Internal to the launcher.
 *
 * Protocol (after the control handshake, per worker whose Hello has
 * need_weights): WeightsBegin{file_size, total_bytes, fingerprint, ranges,
 * use_cache}; unless use_cache, WeightsChunk{offset, data} messages of at
 * most 1 MiB carrying the range pieces in order (a chunk's data may run over
 * several pieces; offset is the file offset of its first byte), then
 * WeightsEnd{FNV-1a 64 of all those bytes in order}. Rank 0 sets use_cache
 * when the worker's Hello names a verified cached copy with rank 0's
 * fingerprint and the same ranges hash. */
#ifndef SHARDLM_WEIGHTS_H
#define SHARDLM_WEIGHTS_H

#include <stddef.h>

#include "shardlm_control.h"
#include "shardlm_gguf.h"

typedef struct {
    const char *cache_dir; /* NULL: $SHARDLM_WEIGHTS_CACHE, $XDG_CACHE_HOME/shardlm/weights, ~/.cache/... */
    int world, rank;
    int timeout_ms;       /* each message once the transfer has started */
    int begin_timeout_ms; /* waiting for rank 0 to reach this worker (it serves workers one by one) */
} shardlm_weights_opts;

/* Checks -m and --weights-from for a worker (worker != 0: exactly one of
 * them) or for generate/serve (--weights-from only says what the local
 * workers do). NULL when they are fine, else the message to print. */
const char *shardlm_weights_flags_check(const char *model, const char *from, int worker);

/* The cache directory o names or the default; SHARDLM_EINPUT when there is
 * no default ($HOME unset). */
int shardlm_weights_cache_dir(const char *dir, char *buf, size_t cap);

/* Worker, before the handshake: the newest cached copy for (world, rank)
 * that verifies (file size, header fingerprint, checksum of its ranges) goes
 * into *req; a copy that does not is deleted, with a line on stderr naming
 * it. req->need_weights is set either way. */
int shardlm_weights_probe(const shardlm_weights_opts *o, shardlm_ctrl_weights_req *req);

/* Worker, after the handshake: receives its weights into the cache (or is
 * told its cached copy is current) and writes the path of the GGUF file to
 * open into path. On failure the partial file is deleted and the error text
 * names rank 0 and the cache file. */
int shardlm_weights_receive(shardlm_ctrl *c, const shardlm_weights_opts *o, const shardlm_ctrl_weights_req *req,
                            char *path, size_t cap);

/* Rank 0, after accept_all: sends every worker that asked its shard's bytes
 * of g (read from g's file), one worker at a time. */
int shardlm_weights_serve(shardlm_ctrl *c, const shardlm_gguf *g, int world, int timeout_ms);

#endif
