/* fuzz_gguf.c - libFuzzer harness for the GGUF reader (gguf/): any bytes
 * as a file; when it opens, every metadata value, string array element and
 * tensor byte range is touched, and the readers built on it (hparams,
 * tokenizer, chat template) run on it. Only clean errors are allowed. */
#include "fuzz_util.h"

#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_model.h"
#include "shardlm_text.h"

static void walk_kv(const shardlm_gguf *g)
{
    uint64_t n = shardlm_gguf_n_kv(g);
    for (uint64_t i = 0; i < n; i++) {
        char val[256], key[128];
        shardlm_gguf_kv_format(g, i, val, sizeof val);
        shardlm_gguf_str k = shardlm_gguf_kv_key(g, i);
        if (k.len >= sizeof key || memchr(k.ptr, 0, k.len)) continue;
        memcpy(key, k.ptr, k.len);
        key[k.len] = 0;
        uint64_t u;
        int64_t s;
        double d;
        int b;
        shardlm_gguf_str str;
        shardlm_gguf_get_u64(g, key, &u);
        shardlm_gguf_get_i64(g, key, &s);
        shardlm_gguf_get_f64(g, key, &d);
        shardlm_gguf_get_bool(g, key, &b);
        shardlm_gguf_get_str(g, key, &str);
        shardlm_gguf_vtype elem;
        uint64_t na = 0;
        const void *data;
        if (shardlm_gguf_get_arr(g, key, &elem, &na, &data) != SHARDLM_OK) continue;
        for (uint64_t j = 0; j < na && j < 64; j++) {
            if (elem == SHARDLM_GGUF_STRING) {
                if (shardlm_gguf_arr_str(g, key, j, &str) == SHARDLM_OK && str.len) (void)*(volatile const char *)(str.ptr + str.len - 1);
            } else {
                shardlm_gguf_arr_f64(g, key, j, &d);
            }
        }
    }
}

static void walk_tensors(const shardlm_gguf *g)
{
    uint64_t n = shardlm_gguf_n_tensors(g);
    for (uint64_t i = 0; i < n; i++) {
        const shardlm_gguf_tensor *t = shardlm_gguf_tensor_at(g, i);
        if (shardlm_gguf_find_tensor(g, t->name) == NULL) abort(); /* a listed tensor must be found by name */
        if (t->nbytes) {
            (void)*(volatile const uint8_t *)t->data;
            (void)*(volatile const uint8_t *)(t->data + t->nbytes - 1);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    shardlm_gguf *g = NULL;
    if (shardlm_gguf_open(fuzz_as_file(data, size), &g) != SHARDLM_OK) return 0;
    (void)shardlm_gguf_fingerprint(g);
    walk_kv(g);
    walk_tensors(g);
    shardlm_hparams hp;
    if (shardlm_hparams_read(g, &hp) == SHARDLM_OK) {
        shardlm_shard_plan p;
        shardlm_plan_make(&hp, 2, 1, 32, &p);
    }
    shardlm_tokenizer *tok = NULL;
    if (shardlm_tokenizer_from_gguf(g, &tok) == SHARDLM_OK) {
        int32_t ids[64];
        size_t n = 0;
        static const char text[] = "Once upon a time, <s> \xe2\x96\x81there</s>\n";
        shardlm_tokenizer_encode_special(tok, text, sizeof text - 1, SHARDLM_TOK_ADD_BOS, ids, 64, &n);
        shardlm_tokenizer_free(tok);
    }
    shardlm_chat_template *tpl = NULL;
    if (shardlm_chat_template_from_gguf(g, &tpl) == SHARDLM_OK) shardlm_chat_template_free(tpl);
    shardlm_gguf_close(g);
    return 0;
}
