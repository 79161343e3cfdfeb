/* control_check.c - validation of every decoded control message before any
 * rank acts on it: counts, sizes and ranks against what the receiver knows
 * (shardlm_ctrl_limits; a zero limit is one the receiver does not know yet).
 * recv_env and shardlm_ctrl_decode run it on each frame;
 * tests/fuzz/fuzz_control.c drives it with arbitrary bytes. */
#include <stdio.h>
#include <string.h>

#include "shardlm_common.h"
#include "control_internal.h"

#define CHECK_MAX_WORLD 1024
#define CHECK_MAX_TEXT 4096   /* error and reason strings */
#define CHECK_MAX_BACKEND 64
#define CHECK_MAX_RANGES (1u << 20)

static int bad(const char *what, const char *fmt, unsigned long long v, unsigned long long lim)
{
    shardlm_err_set("control message %s: %s (%llu, limit %llu)", what, fmt, v, lim);
    return SHARDLM_EPEER;
}

static size_t str_len(const char *s) { return s ? strlen(s) : 0; }

/* world_size and rank against rank 0's own are the handshake's to refuse
 * (control.c names the difference); here only what no rank could accept. */
static int check_hello(const Shardlm__Hello *h)
{
    if (str_len(h->backend) > CHECK_MAX_BACKEND)
        return bad("Hello", "backend name is too long", str_len(h->backend), CHECK_MAX_BACKEND);
    return SHARDLM_OK;
}

static int check_ack(const Shardlm__HelloAck *a)
{
    if (str_len(a->error) > CHECK_MAX_TEXT) return bad("HelloAck", "error text is too long", str_len(a->error), CHECK_MAX_TEXT);
    if (!a->ok) return SHARDLM_OK;
    if (a->n_ctx < 1 || a->n_ctx > (1u << 24)) return bad("HelloAck", "n_ctx is outside 1..2^24", a->n_ctx, 1u << 24);
    if (a->max_batch < 1 || a->max_batch > (1u << 16))
        return bad("HelloAck", "max_batch is outside 1..65536", a->max_batch, 1u << 16);
    if (a->block_size > (1u << 16)) return bad("HelloAck", "block_size is over 65536", a->block_size, 1u << 16);
    if (a->kv_blocks > (1u << 24)) return bad("HelloAck", "kv_blocks is over 2^24", a->kv_blocks, 1u << 24);
    if (a->isq < -1) return bad("HelloAck", "isq is below -1", (unsigned long long)(long long)a->isq, 0);
    if (a->kv_type < 0) return bad("HelloAck", "kv_type is negative", (unsigned long long)(long long)a->kv_type, 0);
    return SHARDLM_OK;
}

static int check_ids(const int32_t *v, size_t n, int32_t lim, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0 || (lim > 0 && v[i] >= lim)) {
            char w[64];
            snprintf(w, sizeof w, "Step %s[%zu]", what, i);
            return bad(w, "is out of range", (unsigned long long)(uint32_t)v[i], (unsigned long long)lim);
        }
    return SHARDLM_OK;
}

static int check_step(const Shardlm__Step *st, const shardlm_ctrl_limits *l)
{
    size_t n = st->n_tokens;
    if (n == 0 || st->n_pos != n || st->n_seq != n || st->n_want_logits != n)
        return bad("Step", "tokens, pos, seq and want_logits differ in length (or are empty)", n, st->n_pos);
    if (l->max_batch > 0 && n > (size_t)l->max_batch) return bad("Step", "more tokens than max_batch", n, l->max_batch);
    if (st->n_tables == 0 || st->n_tables > n) return bad("Step", "block tables are not 1..tokens", st->n_tables, n);
    int rc = check_ids(st->tokens, n, l->n_vocab, "tokens");
    if (!rc) rc = check_ids(st->pos, n, l->n_ctx, "pos");
    if (!rc) rc = check_ids(st->seq, n, (int32_t)st->n_tables, "seq");
    for (size_t i = 0; !rc && i < n; i++)
        if (st->want_logits[i] > 1) rc = bad("Step", "want_logits is not 0 or 1", st->want_logits[i], 1);
    for (size_t q = 0; !rc && q < st->n_tables; q++) {
        const Shardlm__BlockTable *t = st->tables[q];
        if (!t) return bad("Step", "a block table is missing", q, st->n_tables);
        if (l->kv_blocks > 0 && t->n_blocks > (size_t)l->kv_blocks)
            return bad("Step", "a block table is longer than the KV pool", t->n_blocks, l->kv_blocks);
        rc = check_ids(t->blocks, t->n_blocks, l->kv_blocks, "tables.blocks");
    }
    return rc;
}

static int check_begin(const Shardlm__WeightsBegin *b)
{
    if (b->n_ranges > CHECK_MAX_RANGES) return bad("WeightsBegin", "too many ranges", b->n_ranges, CHECK_MAX_RANGES);
    for (size_t i = 0; i < b->n_ranges; i++)
        if (!b->ranges[i]) return bad("WeightsBegin", "a range is missing", i, b->n_ranges);
    return SHARDLM_OK;
}

static int check_fault(const Shardlm__Fault *f, const shardlm_ctrl_limits *l)
{
    if (str_len(f->error) > CHECK_MAX_TEXT) return bad("Fault", "error text is too long", str_len(f->error), CHECK_MAX_TEXT);
    int world = l->world > 0 ? l->world : CHECK_MAX_WORLD;
    if (f->rank >= (uint32_t)world) return bad("Fault", "rank is outside the world", f->rank, (unsigned)world);
    if (f->peer < -1 || f->peer >= world)
        return bad("Fault", "peer is outside -1..world-1", (unsigned long long)(long long)f->peer, (unsigned)world);
    return SHARDLM_OK;
}

/* A heartbeat only proves the sender is alive; its clock is not trusted
 * (ranks' clocks differ), but a zero stamp is no sender's: every rank
 * stamps it with its monotonic clock, which is past 0 once running. */
static int check_heartbeat(const Shardlm__Heartbeat *h)
{
    if (h->now_ns == 0) return bad("Heartbeat", "now_ns is 0 (not stamped)", 0, 1);
    return SHARDLM_OK;
}

int shardlm_ctrl_check(const Shardlm__Envelope *env, const shardlm_ctrl_limits *l)
{
    static const shardlm_ctrl_limits none;
    if (!l) l = &none;
    switch (env->msg_case) {
    case SHARDLM__ENVELOPE__MSG_HELLO: return check_hello(env->hello);
    case SHARDLM__ENVELOPE__MSG_HELLO_ACK: return check_ack(env->hello_ack);
    case SHARDLM__ENVELOPE__MSG_STEP: return check_step(env->step, l);
    case SHARDLM__ENVELOPE__MSG_SHUTDOWN:
        if (str_len(env->shutdown->reason) > CHECK_MAX_TEXT)
            return bad("Shutdown", "reason is too long", str_len(env->shutdown->reason), CHECK_MAX_TEXT);
        /* rejoin decides whether a worker reconnects or exits: nothing but 0 or 1 */
        if (env->shutdown->rejoin > 1) return bad("Shutdown", "rejoin is not 0 or 1", env->shutdown->rejoin, 1);
        return SHARDLM_OK;
    case SHARDLM__ENVELOPE__MSG_HEARTBEAT: return check_heartbeat(env->heartbeat);
    case SHARDLM__ENVELOPE__MSG_WEIGHTS_BEGIN: return check_begin(env->weights_begin);
    case SHARDLM__ENVELOPE__MSG_WEIGHTS_CHUNK: return SHARDLM_OK; /* bounded by the frame; weights.c checks offsets */
    case SHARDLM__ENVELOPE__MSG_WEIGHTS_END: return SHARDLM_OK;
    case SHARDLM__ENVELOPE__MSG_FAULT: return check_fault(env->fault, l);
    case SHARDLM__ENVELOPE__MSG_NCCL_ID:
        if (env->nccl_id->id.len != 128) return bad("NcclId", "id is not 128 bytes", env->nccl_id->id.len, 128);
        return SHARDLM_OK;
    default:
        shardlm_err_set("control message of unknown kind %d", (int)env->msg_case);
        return SHARDLM_EPEER;
    }
}
