/* engine.c - the lockstep step: rank 0 broadcasts a Step over the control
 * channel and runs the forward pass; workers receive Steps and run the same
 * forward pass until told to shut down. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_runtime.h"

struct shardlm_engine {
    shardlm_model *model;
    shardlm_comm *comm;
    shardlm_ctrl *ctrl;
    shardlm_state *state;
    int timeout_ms;
    uint64_t step_id;
    int max_batch;
    shardlm_pool *pool;
    int32_t *ident; /* blocks 0..n-1 in order: the table of single-sequence steps */
    int lost_rank;  /* rank 0: the worker a failed step was traced to (0: none) */
    int hb_lost_ms; /* rank 0: a worker silent this long between steps is lost (0: off) */
    int block_size; /* positions per KV block: the scheduler takes it from here */
};

/* Rank 0 waits this long after a failed collective for the workers' Fault
 * reports: their collectives time out within milliseconds of rank 0's, so
 * a worker still silent after it has lost its link (issue 5: <= 2 s from
 * the timeout to the error). */
#define ENGINE_FAULT_WAIT_MS 1500

int shardlm_engine_new(shardlm_model *m, shardlm_comm *comm, shardlm_ctrl *ctrl, const shardlm_engine_opts *o,
                       shardlm_engine **out)
{
    shardlm_engine *e = calloc(1, sizeof *e);
    if (!e) return SHARDLM_ENOMEM;
    e->model = m;
    e->comm = comm;
    e->ctrl = ctrl;
    e->timeout_ms = o->timeout_ms;
    e->max_batch = o->max_batch;
    int bs = e->block_size = o->block_size > 0 ? o->block_size : 16;
    int rc = shardlm_state_new_kv(m, o->n_ctx, o->kv_blocks, bs, o->max_batch, (shardlm_dtype)o->kv_type, &e->state);
    if (!rc && o->comm_q8) rc = shardlm_state_set_comm_q8(e->state, shardlm_comm_size(comm), 1);
    if (!rc && o->n_threads > 1) rc = shardlm_pool_new(o->n_threads, o->pin, &e->pool);
    if (!rc && !(e->ident = malloc((size_t)shardlm_state_n_blocks(e->state) * sizeof(int32_t)))) rc = SHARDLM_ENOMEM;
    for (int i = 0; !rc && i < shardlm_state_n_blocks(e->state); i++) e->ident[i] = i;
    if (rc) {
        shardlm_engine_free(e);
        return rc;
    }
    shardlm_state_set_pool(e->state, e->pool);
    *out = e;
    return SHARDLM_OK;
}

void shardlm_engine_free(shardlm_engine *e)
{
    if (!e) return;
    shardlm_state_free(e->state);
    shardlm_pool_free(e->pool);
    free(e->ident);
    free(e);
}

int shardlm_engine_n_ctx(const shardlm_engine *e) { return shardlm_state_n_ctx(e->state); }
int shardlm_engine_kv_blocks(const shardlm_engine *e) { return shardlm_state_n_blocks(e->state); }
int shardlm_engine_block_size(const shardlm_engine *e) { return e->block_size; }
int shardlm_engine_max_batch(const shardlm_engine *e) { return e->max_batch; }
const shardlm_model *shardlm_engine_model(const shardlm_engine *e) { return e->model; }
double shardlm_engine_allreduce_seconds(const shardlm_engine *e) { return shardlm_state_allreduce_seconds(e->state); }
int shardlm_engine_lost_rank(const shardlm_engine *e) { return e && e->lost_rank > 0 ? e->lost_rank : -1; }

/* Rank 0, after a collective failed: its own error only names a neighbour,
 * and every rank's collective fails once one is lost, so the workers'
 * Fault reports (or their silence) decide which rank was lost. */
static void engine_name_lost(shardlm_engine *e)
{
    char cause[512], why[512];
    snprintf(cause, sizeof cause, "%s", shardlm_err_get());
    int lost = shardlm_ctrl_collect_faults(e->ctrl, ENGINE_FAULT_WAIT_MS, why, sizeof why);
    if (lost > 0) e->lost_rank = lost;
    shardlm_err_set("%s; %s", why, cause);
}

/* Worker: a failed step is reported to rank 0 before the worker exits. */
static void engine_report_fault(shardlm_engine *e)
{
    int ms = e->timeout_ms < 1000 ? e->timeout_ms : 1000;
    shardlm_ctrl_send_fault(e->ctrl, shardlm_comm_rank(e->comm), shardlm_comm_fault_peer(e->comm),
                            shardlm_err_get(), ms);
}

/* Sends a batch to the workers as one Step. */
static int engine_send_step(shardlm_engine *e, const shardlm_batch *b)
{
    int n = b->n, ns = b->n_seqs;
    uint32_t want32[n > 0 ? n : 1];
    for (int i = 0; i < n; i++) want32[i] = b->want[i];
    shardlm_ctrl_table tabs[ns > 0 ? ns : 1];
    for (int q = 0; q < ns; q++) tabs[q] = (shardlm_ctrl_table){b->tables[q], (size_t)b->table_len[q]};
    shardlm_ctrl_step st = {++e->step_id, (size_t)n, b->tokens, b->pos, b->seq, want32, (size_t)ns, tabs};
    return shardlm_ctrl_send_step(e->ctrl, &st, e->timeout_ms);
}

int shardlm_engine_step_batch(shardlm_engine *e, const shardlm_batch *b, float *logits)
{
    if (b->n < 1 || b->n > e->max_batch) {
        shardlm_err_set("step of %d tokens is outside 1..%d", b->n, e->max_batch);
        return SHARDLM_EINPUT;
    }
    if (e->ctrl) {
        int rc = engine_send_step(e, b);
        if (rc) return rc;
    }
    int rc = shardlm_model_forward_batch(e->model, e->state, e->comm, b, logits, e->timeout_ms);
    if (e->ctrl && (rc == SHARDLM_ETIMEDOUT || rc == SHARDLM_EPEER)) engine_name_lost(e);
    return rc;
}

int shardlm_engine_step(shardlm_engine *e, const int32_t *tokens, const int32_t *pos, const uint8_t *want, int n,
                        float *logits)
{
    int32_t seq[n > 0 ? n : 1];
    memset(seq, 0, sizeof seq);
    const int32_t *tables[1] = {e->ident};
    int table_len[1] = {shardlm_state_n_blocks(e->state)};
    shardlm_batch b = {n, tokens, pos, seq, want, 1, tables, table_len};
    return shardlm_engine_step_batch(e, &b, logits);
}

int shardlm_engine_heartbeat(shardlm_engine *e)
{
    if (!e->ctrl) return SHARDLM_OK;
    char why[384];
    int lost = shardlm_ctrl_heartbeat(e->ctrl, e->timeout_ms, e->hb_lost_ms, why, sizeof why);
    if (lost <= 0) return SHARDLM_OK;
    e->lost_rank = lost;
    shardlm_err_set("%s", why);
    return SHARDLM_EPEER;
}

void shardlm_engine_set_heartbeat_timeout(shardlm_engine *e, int lost_after_ms) { e->hb_lost_ms = lost_after_ms; }

void shardlm_engine_rebind(shardlm_engine *e, shardlm_comm *comm, shardlm_ctrl *ctrl)
{
    e->comm = comm;
    e->ctrl = ctrl;
    e->step_id = 0; /* the re-formed workers count from the start */
    e->lost_rank = 0;
}

void shardlm_engine_shutdown(shardlm_engine *e, const char *reason)
{
    if (e->ctrl) shardlm_ctrl_send_shutdown(e->ctrl, reason, 0, 1000); /* best effort: a dead worker cannot be told */
}

void shardlm_engine_reform_notice(shardlm_engine *e, const char *reason)
{
    if (e->ctrl) shardlm_ctrl_send_shutdown(e->ctrl, reason, 1, 500);
}

/* Checks a Step's size and order before any rank acts on it (the decoder
 * has made its arrays one length; the forward pass checks positions,
 * sequences and blocks). */
static int worker_check_step(const shardlm_ctrl_step *st, uint64_t expect_id, int max_batch)
{
    size_t n = st->n_tokens;
    if (n == 0 || n > (size_t)max_batch || st->n_tables == 0 || st->n_tables > n) {
        shardlm_err_set("malformed step %llu from rank 0: %zu tokens, %zu positions, %zu sequence ids, %zu logit "
                        "flags, %zu block tables",
                        (unsigned long long)st->step_id, n, n, n, n, st->n_tables);
        return SHARDLM_EPEER;
    }
    if (st->step_id != expect_id) {
        shardlm_err_set("step %llu from rank 0 arrived out of order (expected %llu)",
                        (unsigned long long)st->step_id, (unsigned long long)expect_id);
        return SHARDLM_EPEER;
    }
    return SHARDLM_OK;
}

static int worker_run_step(shardlm_engine *e, const shardlm_ctrl_step *st)
{
    int rc = worker_check_step(st, e->step_id + 1, e->max_batch);
    if (rc) return rc;
    e->step_id = st->step_id;
    int n = (int)st->n_tokens, ns = (int)st->n_tables;
    uint8_t want[n];
    const int32_t *tables[ns];
    int table_len[ns];
    for (int i = 0; i < n; i++) want[i] = st->want_logits[i] != 0;
    for (int q = 0; q < ns; q++) {
        tables[q] = st->tables[q].blocks;
        table_len[q] = (int)st->tables[q].n_blocks;
    }
    shardlm_batch b = {n, st->tokens, st->pos, st->seq, want, ns, tables, table_len};
    return shardlm_model_forward_batch(e->model, e->state, e->comm, &b, NULL, e->timeout_ms);
}

int shardlm_engine_worker_loop(shardlm_engine *e, int idle_timeout_ms)
{
    for (;;) {
        shardlm_ctrl_msg m;
        int rc = shardlm_ctrl_recv(e->ctrl, idle_timeout_ms, &m);
        if (rc) return rc;
        switch (m.kind) {
        case SHARDLM_CTRL_MSG_STEP:
            rc = worker_run_step(e, &m.u.step);
            if (rc) engine_report_fault(e);
            break;
        case SHARDLM_CTRL_MSG_SHUTDOWN:
            if (m.u.shutdown.rejoin) { /* not the end: the worker that can reconnects */
                shardlm_err_set("rank 0 is re-forming the cluster: %s", m.u.shutdown.reason);
                rc = SHARDLM_EPEER;
                break;
            }
            shardlm_ctrl_msg_free(&m);
            return SHARDLM_OK;
        case SHARDLM_CTRL_MSG_HEARTBEAT:
            rc = shardlm_ctrl_send_heartbeat(e->ctrl, e->timeout_ms); /* rank 0 watches for the answer */
            break;
        default:
            shardlm_err_set("unexpected control message %d from rank 0", (int)m.kind);
            rc = SHARDLM_EPEER;
        }
        shardlm_ctrl_msg_free(&m);
        if (rc) return rc;
    }
}
