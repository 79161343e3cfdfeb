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
    int32_t *seq_scratch;
    int max_batch;
    shardlm_pool *pool;
};

int shardlm_engine_new(shardlm_model *m, shardlm_comm *comm, shardlm_ctrl *ctrl, int n_ctx, int max_batch,
                       int timeout_ms, int n_threads, int pin, shardlm_engine **out)
{
    shardlm_engine *e = calloc(1, sizeof *e);
    if (!e) return SHARDLM_ENOMEM;
    e->model = m;
    e->comm = comm;
    e->ctrl = ctrl;
    e->timeout_ms = timeout_ms;
    e->max_batch = max_batch;
    e->seq_scratch = calloc((size_t)max_batch, sizeof(int32_t));
    int rc = e->seq_scratch ? shardlm_state_new(m, n_ctx, max_batch, &e->state) : SHARDLM_ENOMEM;
    if (!rc && n_threads > 1) rc = shardlm_pool_new(n_threads, pin, &e->pool);
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
    free(e->seq_scratch);
    free(e);
}

int shardlm_engine_n_ctx(const shardlm_engine *e) { return shardlm_state_n_ctx(e->state); }

static int engine_send_step(shardlm_engine *e, const int32_t *tokens, const int32_t *pos, const uint8_t *want, int n)
{
    uint32_t want32[n > 0 ? n : 1];
    for (int i = 0; i < n; i++) want32[i] = want[i];
    Shardlm__Step st = SHARDLM__STEP__INIT;
    st.step_id = ++e->step_id;
    st.n_tokens = (size_t)n;
    st.tokens = (int32_t *)tokens;
    st.n_pos = (size_t)n;
    st.pos = (int32_t *)pos;
    st.n_seq = (size_t)n;
    st.seq = e->seq_scratch;
    st.n_want_logits = (size_t)n;
    st.want_logits = want32;
    Shardlm__Envelope env = SHARDLM__ENVELOPE__INIT;
    env.msg_case = SHARDLM__ENVELOPE__MSG_STEP;
    env.step = &st;
    return shardlm_ctrl_broadcast(e->ctrl, &env, e->timeout_ms);
}

int shardlm_engine_step(shardlm_engine *e, const int32_t *tokens, const int32_t *pos, const uint8_t *want, int n,
                        float *logits)
{
    if (n < 1 || n > e->max_batch) {
        shardlm_err_set("step of %d tokens is outside 1..%d", n, e->max_batch);
        return SHARDLM_EINPUT;
    }
    if (e->ctrl) {
        int rc = engine_send_step(e, tokens, pos, want, n);
        if (rc) return rc;
    }
    return shardlm_model_forward(e->model, e->state, e->comm, tokens, pos, want, n, logits, e->timeout_ms);
}

void shardlm_engine_shutdown(shardlm_engine *e, const char *reason)
{
    if (!e->ctrl) return;
    Shardlm__Shutdown sd = SHARDLM__SHUTDOWN__INIT;
    sd.reason = (char *)reason;
    Shardlm__Envelope env = SHARDLM__ENVELOPE__INIT;
    env.msg_case = SHARDLM__ENVELOPE__MSG_SHUTDOWN;
    env.shutdown = &sd;
    shardlm_ctrl_broadcast(e->ctrl, &env, 1000); /* best effort: a dead worker cannot be told */
}

/* Checks that a Step's arrays agree before any rank acts on it. */
static int worker_check_step(const Shardlm__Step *st, uint64_t expect_id, int max_batch)
{
    size_t n = st->n_tokens;
    if (st->n_pos != n || st->n_want_logits != n || n == 0 || n > (size_t)max_batch) {
        shardlm_err_set("malformed step %llu from rank 0: %zu tokens, %zu positions, %zu logit flags",
                        (unsigned long long)st->step_id, n, st->n_pos, st->n_want_logits);
        return SHARDLM_EPEER;
    }
    if (st->step_id != expect_id) {
        shardlm_err_set("step %llu from rank 0 arrived out of order (expected %llu)",
                        (unsigned long long)st->step_id, (unsigned long long)expect_id);
        return SHARDLM_EPEER;
    }
    return SHARDLM_OK;
}

static int worker_run_step(shardlm_engine *e, const Shardlm__Step *st)
{
    int rc = worker_check_step(st, e->step_id + 1, e->max_batch);
    if (rc) return rc;
    e->step_id = st->step_id;
    int n = (int)st->n_tokens;
    uint8_t want[n];
    for (int i = 0; i < n; i++) want[i] = st->want_logits[i] != 0;
    return shardlm_model_forward(e->model, e->state, e->comm, st->tokens, st->pos, want, n, NULL, e->timeout_ms);
}

int shardlm_engine_worker_loop(shardlm_engine *e, int idle_timeout_ms)
{
    for (;;) {
        Shardlm__Envelope *env = NULL;
        int rc = shardlm_ctrl_recv(e->ctrl, idle_timeout_ms, &env);
        if (rc) return rc;
        switch (env->msg_case) {
        case SHARDLM__ENVELOPE__MSG_STEP:
            rc = worker_run_step(e, env->step);
            break;
        case SHARDLM__ENVELOPE__MSG_SHUTDOWN:
            shardlm__envelope__free_unpacked(env, NULL);
            return SHARDLM_OK;
        case SHARDLM__ENVELOPE__MSG_HEARTBEAT:
            break;
        default:
            shardlm_err_set("unexpected control message %d from rank 0", (int)env->msg_case);
            rc = SHARDLM_EPEER;
        }
        shardlm__envelope__free_unpacked(env, NULL);
        if (rc) return rc;
    }
}
