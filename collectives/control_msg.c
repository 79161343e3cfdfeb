/* control_msg.c - the typed control messages (shardlm_control.h) and their
 * protobuf Envelopes: building one to send, and turning a received,
 * validated one into a shardlm_ctrl_msg whose pointers point into the
 * decoded frame. The bytes on the wire are shardlm.proto's, unchanged. */
#include <stdlib.h>
#include <string.h>

#include "control_internal.h"
#include "shardlm_common.h"

_Static_assert(SHARDLM_CTRL_MSG_STEP == (int)SHARDLM__ENVELOPE__MSG_STEP &&
                   SHARDLM_CTRL_MSG_NCCL_ID == (int)SHARDLM__ENVELOPE__MSG_NCCL_ID &&
                   SHARDLM_CTRL_MSG_HELLO == (int)SHARDLM__ENVELOPE__MSG_HELLO,
               "shardlm_ctrl_kind follows the Envelope's field numbers");

/* The sub-messages an Envelope built from a typed message points at. */
typedef struct {
    Shardlm__Envelope env;
    union {
        Shardlm__Step step;
        Shardlm__Shutdown shutdown;
        Shardlm__Heartbeat heartbeat;
        Shardlm__WeightsBegin begin;
        Shardlm__WeightsChunk chunk;
        Shardlm__WeightsEnd end;
        Shardlm__Fault fault;
        Shardlm__NcclId nccl;
    } m;
    void *arrays; /* Step's tables, WeightsBegin's ranges (malloc'ed) */
} env_build;

static int build_step(env_build *b, const shardlm_ctrl_step *st)
{
    size_t nt = st->n_tables;
    Shardlm__BlockTable *tabs = NULL;
    Shardlm__BlockTable **tabp = NULL;
    if (nt) {
        b->arrays = malloc(nt * (sizeof *tabs + sizeof *tabp));
        if (!b->arrays) return SHARDLM_ENOMEM;
        tabs = b->arrays;
        tabp = (Shardlm__BlockTable **)(tabs + nt);
    }
    for (size_t q = 0; q < nt; q++) {
        shardlm__block_table__init(&tabs[q]);
        tabs[q].n_blocks = st->tables[q].n_blocks;
        tabs[q].blocks = (int32_t *)st->tables[q].blocks;
        tabp[q] = &tabs[q];
    }
    Shardlm__Step *s = &b->m.step;
    shardlm__step__init(s);
    s->step_id = st->step_id;
    s->n_tokens = s->n_pos = s->n_seq = s->n_want_logits = st->n_tokens;
    s->tokens = (int32_t *)st->tokens;
    s->pos = (int32_t *)st->pos;
    s->seq = (int32_t *)st->seq;
    s->want_logits = (uint32_t *)st->want_logits;
    s->n_tables = nt;
    s->tables = tabp;
    b->env.step = s;
    return SHARDLM_OK;
}

static int build_begin(env_build *b, const shardlm_ctrl_weights_begin *wb)
{
    size_t n = wb->n_ranges;
    Shardlm__ByteRange *br = NULL;
    Shardlm__ByteRange **bp = NULL;
    if (n) {
        b->arrays = malloc(n * (sizeof *br + sizeof *bp));
        if (!b->arrays) return SHARDLM_ENOMEM;
        br = b->arrays;
        bp = (Shardlm__ByteRange **)(br + n);
    }
    for (size_t i = 0; i < n; i++) {
        shardlm__byte_range__init(&br[i]);
        br[i].offset = wb->ranges[i].offset;
        br[i].length = wb->ranges[i].length;
        br[i].stride = wb->ranges[i].stride;
        br[i].count = wb->ranges[i].count;
        bp[i] = &br[i];
    }
    Shardlm__WeightsBegin *w = &b->m.begin;
    shardlm__weights_begin__init(w);
    w->file_size = wb->file_size;
    w->total_bytes = wb->total_bytes;
    w->model_fingerprint = wb->fingerprint;
    w->n_ranges = n;
    w->ranges = bp;
    w->use_cache = wb->use_cache != 0;
    b->env.weights_begin = w;
    return SHARDLM_OK;
}

/* Fills b with m's Envelope; release with build_done. */
static int build_env(env_build *b, const shardlm_ctrl_msg *m)
{
    memset(b, 0, sizeof *b);
    shardlm__envelope__init(&b->env);
    b->env.msg_case = (Shardlm__Envelope__MsgCase)m->kind;
    switch (m->kind) {
    case SHARDLM_CTRL_MSG_STEP: return build_step(b, &m->u.step);
    case SHARDLM_CTRL_MSG_WEIGHTS_BEGIN: return build_begin(b, &m->u.weights_begin);
    case SHARDLM_CTRL_MSG_SHUTDOWN:
        shardlm__shutdown__init(&b->m.shutdown);
        b->m.shutdown.reason = (char *)(m->u.shutdown.reason ? m->u.shutdown.reason : "");
        b->m.shutdown.rejoin = m->u.shutdown.rejoin != 0;
        b->env.shutdown = &b->m.shutdown;
        return SHARDLM_OK;
    case SHARDLM_CTRL_MSG_HEARTBEAT:
        shardlm__heartbeat__init(&b->m.heartbeat);
        b->m.heartbeat.now_ns = m->u.heartbeat_ns;
        b->env.heartbeat = &b->m.heartbeat;
        return SHARDLM_OK;
    case SHARDLM_CTRL_MSG_WEIGHTS_CHUNK:
        shardlm__weights_chunk__init(&b->m.chunk);
        b->m.chunk.offset = m->u.weights_chunk.offset;
        b->m.chunk.data.data = (uint8_t *)m->u.weights_chunk.data;
        b->m.chunk.data.len = m->u.weights_chunk.len;
        b->env.weights_chunk = &b->m.chunk;
        return SHARDLM_OK;
    case SHARDLM_CTRL_MSG_WEIGHTS_END:
        shardlm__weights_end__init(&b->m.end);
        b->m.end.checksum = m->u.weights_checksum;
        b->env.weights_end = &b->m.end;
        return SHARDLM_OK;
    case SHARDLM_CTRL_MSG_FAULT:
        shardlm__fault__init(&b->m.fault);
        b->m.fault.rank = (uint32_t)m->u.fault.rank;
        b->m.fault.peer = m->u.fault.peer;
        b->m.fault.error = (char *)(m->u.fault.error ? m->u.fault.error : "");
        b->env.fault = &b->m.fault;
        return SHARDLM_OK;
    case SHARDLM_CTRL_MSG_NCCL_ID:
        shardlm__nccl_id__init(&b->m.nccl);
        b->m.nccl.id.data = (uint8_t *)m->u.nccl_id;
        b->m.nccl.id.len = sizeof m->u.nccl_id;
        b->env.nccl_id = &b->m.nccl;
        return SHARDLM_OK;
    default:
        shardlm_err_set("control message of kind %d cannot be built here", (int)m->kind);
        return SHARDLM_EINPUT;
    }
}

static void build_done(env_build *b) { free(b->arrays); }

/* rank -1: every worker. */
static int send_msg(shardlm_ctrl *c, int rank, const shardlm_ctrl_msg *m, int timeout_ms)
{
    env_build b;
    int rc = build_env(&b, m);
    if (!rc)
        rc = rank < 0 ? shardlm_ctrl_env_broadcast(c, &b.env, timeout_ms)
                      : shardlm_ctrl_env_send(c, rank, &b.env, timeout_ms);
    build_done(&b);
    return rc;
}

int shardlm_ctrl_send_step(shardlm_ctrl *c, const shardlm_ctrl_step *st, int timeout_ms)
{
    shardlm_ctrl_msg m = {.kind = SHARDLM_CTRL_MSG_STEP, .u.step = *st};
    return send_msg(c, -1, &m, timeout_ms);
}

int shardlm_ctrl_send_nccl_id(shardlm_ctrl *c, const uint8_t id[SHARDLM_CTRL_NCCL_ID_BYTES], int timeout_ms)
{
    shardlm_ctrl_msg m = {.kind = SHARDLM_CTRL_MSG_NCCL_ID};
    memcpy(m.u.nccl_id, id, sizeof m.u.nccl_id);
    return send_msg(c, -1, &m, timeout_ms);
}

int shardlm_ctrl_send_weights_begin(shardlm_ctrl *c, int rank, const shardlm_ctrl_weights_begin *b, int timeout_ms)
{
    shardlm_ctrl_msg m = {.kind = SHARDLM_CTRL_MSG_WEIGHTS_BEGIN, .u.weights_begin = *b};
    return send_msg(c, rank, &m, timeout_ms);
}

int shardlm_ctrl_send_weights_chunk(shardlm_ctrl *c, int rank, uint64_t offset, const void *data, size_t len,
                                    int timeout_ms)
{
    shardlm_ctrl_msg m = {.kind = SHARDLM_CTRL_MSG_WEIGHTS_CHUNK, .u.weights_chunk = {offset, data, len}};
    return send_msg(c, rank, &m, timeout_ms);
}

int shardlm_ctrl_send_weights_end(shardlm_ctrl *c, int rank, uint64_t checksum, int timeout_ms)
{
    shardlm_ctrl_msg m = {.kind = SHARDLM_CTRL_MSG_WEIGHTS_END, .u.weights_checksum = checksum};
    return send_msg(c, rank, &m, timeout_ms);
}

int shardlm_ctrl_encode(const shardlm_ctrl_msg *m, uint8_t **out, size_t *len)
{
    env_build b;
    int rc = build_env(&b, m);
    if (!rc) {
        size_t n = shardlm__envelope__get_packed_size(&b.env);
        *out = malloc(n ? n : 1);
        if (!*out) rc = SHARDLM_ENOMEM;
        else *len = shardlm__envelope__pack(&b.env, *out);
    }
    build_done(&b);
    return rc;
}

/* ---- received: a validated Envelope as a typed message ---- */

typedef struct {
    Shardlm__Envelope *env;
    void *arrays;
} msg_priv;

static int view_step(shardlm_ctrl_step *out, const Shardlm__Step *st, void **arrays)
{
    shardlm_ctrl_table *t = calloc(st->n_tables ? st->n_tables : 1, sizeof *t);
    if (!t) return SHARDLM_ENOMEM;
    for (size_t q = 0; q < st->n_tables; q++) t[q] = (shardlm_ctrl_table){st->tables[q]->blocks, st->tables[q]->n_blocks};
    /* shardlm_ctrl_check has made the four arrays one length */
    *out = (shardlm_ctrl_step){st->step_id, st->n_tokens, st->tokens, st->pos, st->seq, st->want_logits,
                               st->n_tables, t};
    *arrays = t;
    return SHARDLM_OK;
}

static int view_begin(shardlm_ctrl_weights_begin *out, const Shardlm__WeightsBegin *b, void **arrays)
{
    shardlm_ctrl_range *r = calloc(b->n_ranges ? b->n_ranges : 1, sizeof *r);
    if (!r) return SHARDLM_ENOMEM;
    for (size_t i = 0; i < b->n_ranges; i++) {
        const Shardlm__ByteRange *x = b->ranges[i];
        r[i] = (shardlm_ctrl_range){x->offset, x->length, x->stride, x->count};
    }
    *out = (shardlm_ctrl_weights_begin){b->file_size, b->total_bytes, b->model_fingerprint, b->n_ranges, r,
                                        b->use_cache};
    *arrays = r;
    return SHARDLM_OK;
}

/* Takes env (validated) over into out, or frees it on failure. */
static int msg_view(Shardlm__Envelope *env, shardlm_ctrl_msg *out)
{
    memset(out, 0, sizeof *out);
    msg_priv *p = calloc(1, sizeof *p);
    int rc = p ? SHARDLM_OK : SHARDLM_ENOMEM;
    out->kind = (shardlm_ctrl_kind)env->msg_case;
    switch (rc ? SHARDLM__ENVELOPE__MSG__NOT_SET : env->msg_case) {
    case SHARDLM__ENVELOPE__MSG_STEP: rc = view_step(&out->u.step, env->step, &p->arrays); break;
    case SHARDLM__ENVELOPE__MSG_WEIGHTS_BEGIN: rc = view_begin(&out->u.weights_begin, env->weights_begin, &p->arrays); break;
    case SHARDLM__ENVELOPE__MSG_SHUTDOWN:
        out->u.shutdown = (shardlm_ctrl_shutdown){env->shutdown->reason, env->shutdown->rejoin != 0};
        break;
    case SHARDLM__ENVELOPE__MSG_HEARTBEAT: out->u.heartbeat_ns = env->heartbeat->now_ns; break;
    case SHARDLM__ENVELOPE__MSG_WEIGHTS_CHUNK:
        out->u.weights_chunk = (shardlm_ctrl_weights_chunk){env->weights_chunk->offset, env->weights_chunk->data.data,
                                                            env->weights_chunk->data.len};
        break;
    case SHARDLM__ENVELOPE__MSG_WEIGHTS_END: out->u.weights_checksum = env->weights_end->checksum; break;
    case SHARDLM__ENVELOPE__MSG_FAULT:
        out->u.fault = (shardlm_ctrl_fault){(int)env->fault->rank, env->fault->peer, env->fault->error};
        break;
    case SHARDLM__ENVELOPE__MSG_NCCL_ID: memcpy(out->u.nccl_id, env->nccl_id->id.data, sizeof out->u.nccl_id); break;
    default: break; /* Hello, HelloAck: the handshake's, no payload here */
    }
    if (rc) {
        if (p) free(p->arrays);
        free(p);
        shardlm__envelope__free_unpacked(env, NULL);
        memset(out, 0, sizeof *out);
        return rc;
    }
    p->env = env;
    out->priv_ = p;
    return SHARDLM_OK;
}

void shardlm_ctrl_msg_free(shardlm_ctrl_msg *m)
{
    if (!m || !m->priv_) return;
    msg_priv *p = m->priv_;
    free(p->arrays);
    shardlm__envelope__free_unpacked(p->env, NULL);
    free(p);
    memset(m, 0, sizeof *m);
}

int shardlm_ctrl_recv(shardlm_ctrl *c, int timeout_ms, shardlm_ctrl_msg *out)
{
    memset(out, 0, sizeof *out);
    Shardlm__Envelope *env = NULL;
    int rc = shardlm_ctrl_env_recv(c, timeout_ms, &env);
    return rc ? rc : msg_view(env, out);
}

int shardlm_ctrl_decode(const uint8_t *p, size_t n, const shardlm_ctrl_limits *lim, shardlm_ctrl_msg *out)
{
    memset(out, 0, sizeof *out);
    Shardlm__Envelope *env = shardlm__envelope__unpack(NULL, n, p);
    if (!env) {
        shardlm_err_set("undecodable control message of %zu bytes", n);
        return SHARDLM_EPEER;
    }
    int rc = shardlm_ctrl_check(env, lim);
    if (rc) {
        shardlm__envelope__free_unpacked(env, NULL);
        return rc;
    }
    return msg_view(env, out);
}
