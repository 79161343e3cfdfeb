/* node_flags.c - the node's flags (launcher/flags.h) into shardlm_node_opts,
 * one place for every command that brings a rank up. */
#include <stdio.h>
#include <string.h>

#include "flags.h"
#include "node.h"
#include "shardlm_common.h"

/* --device: cpu, cuda or cuda:K with K a device number. */
static int node_flag_device_ok(const char *s)
{
    if (!strcmp(s, "cpu") || !strcmp(s, "cuda")) return 1;
    if (strncmp(s, "cuda:", 5) || !s[5]) return 0;
    return strspn(s + 5, "0123456789") == strlen(s + 5);
}

int shardlm_node_flag(shardlm_node_opts *n, const shardlm_flag_value *v, const char *who)
{
    switch (v->flag->id) {
    case F_MODEL: n->model_path = v->str; return 0;
    case F_CTX: n->n_ctx = (int)v->i; return 0;
    case F_TIMEOUT: n->timeout_ms = (int)v->i; return 0;
    case F_CONNECT_TIMEOUT: n->connect_timeout_ms = (int)v->i; return 0;
    case F_THREADS: n->n_threads = (int)v->i; return 0;
    case F_PIN: n->pin_threads = 1; return 0;
    case F_ISQ: n->isq = shardlm_dtype_parse(v->str); return 0;
    case F_KV_TYPE: n->kv_type = shardlm_node_kv_type_parse(v->str); return 0;
    case F_COMM_DTYPE: n->comm_q8 = v->i == 1; return 0;
    case F_COMM: n->comm = v->str; return 0;
    case F_RING_TRANSPORT: n->ring_transport = v->str; return 0;
    case F_NUMA: n->numa = 1; return 0;
    case F_WEIGHTS_FROM: n->weights_from = v->str; return 0;
    case F_WEIGHTS_CACHE: n->weights_cache = v->str; return 0;
    case F_RING_CONFIG: n->ring_config = v->str; return 0;
    case F_READY_FILE: n->ready_file = v->str; return 0;
    case F_DEVICE:
        if (!node_flag_device_ok(v->str)) {
            fprintf(stderr, "shardlm %s: invalid value '%s' for --device (cpu, cuda or cuda:K)\n", who, v->str);
            return -1;
        }
        n->device = v->str;
        return 0;
    default:
        fprintf(stderr, "shardlm %s: --%s is in the flag table but not handled here\n", who, v->flag->name);
        return -1;
    }
}
