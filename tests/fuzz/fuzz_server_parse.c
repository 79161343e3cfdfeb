/* fuzz_server_parse.c - libFuzzer harness for the HTTP request layer
 * (runtime/server_parse.c and friends): the body of a completions or chat
 * request, /apply-template, /tokenize or /detokenize, parsed and turned
 * into prompt ids exactly as the server does, without serving. Byte 0
 * picks the endpoint and the chat template; the rest is the body. The
 * tokenizer is stories260K's (assets/, in the source tree). */
#include "fuzz_util.h"

#include "server_parse.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "shardlm_text.h"
#include "toolcall.h"

static shardlm_tokenizer *tok;
static shardlm_chat_template *tpls[3]; /* the built-in default, Llama 3 (no tools), Qwen2 ChatML */

static shardlm_chat_template *load_tpl(const char *rel, shardlm_gguf *g)
{
    char p[4096];
    shardlm_chat_template *t = NULL;
    if (!fuzz_src(p, sizeof p, rel) || shardlm_chat_template_from_file(p, g, &t)) {
        fprintf(stderr, "fuzz_server_parse: %s: %s\n", rel, shardlm_err_get());
        abort();
    }
    return t;
}

static void setup(void)
{
    char p[4096];
    shardlm_gguf *g = NULL;
    if (!fuzz_src(p, sizeof p, "assets/stories260K.gguf") || shardlm_gguf_open(p, &g) ||
        shardlm_tokenizer_from_gguf(g, &tok) || shardlm_chat_template_from_gguf(g, &tpls[0])) {
        fprintf(stderr, "fuzz_server_parse: cannot load assets/stories260K.gguf (set SHARDLM_SRC): %s\n",
                shardlm_err_get());
        abort();
    }
    tpls[1] = load_tpl("tests/data/chat_templates/llama3-instruct.jinja", g);
    tpls[2] = load_tpl("tests/data/chat_templates/qwen2-chatml.jinja", g);
    shardlm_gguf_close(g);
    shardlm_chat_limits lim = {1 << 20, 64 << 20, 100000}; /* a runaway body is refused, fast */
    for (int i = 0; i < 3; i++) shardlm_chat_template_set_limits(tpls[i], lim);
}

/* What srv_call_handle does before it queues a request. */
static void completion(shardlm_api_kind kind, int loose, const char *body, size_t len, shardlm_chat_template *tpl)
{
    shardlm_server_req r;
    shardlm_server_err e;
    int32_t *ids = NULL;
    int n = 0;
    int nv = shardlm_tokenizer_n_vocab(tok);
    int rc = loose ? shardlm_server_parse_loose(kind, body, len, nv, &r, &e)
                   : shardlm_server_parse(kind, body, len, nv, &r, &e);
    if (!rc) rc = shardlm_server_tools_setup(&r, shardlm_toolfmt_detect(tpl), tok, &e);
    if (!rc) rc = shardlm_server_prompt_ids(&r, tok, tpl, &ids, &n, &e);
    if (!rc)
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= nv) abort(); /* every prompt id must be in the vocabulary */
    if (rc) {
        if (e.status < 400 || e.status > 599) abort(); /* a refusal is a 4xx or 5xx */
        free(shardlm_server_err_json(&e));
    }
    free(ids);
    shardlm_server_req_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tok) setup();
    if (size < 1) return 0;
    unsigned sel = data[0];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    shardlm_chat_template *tpl = tpls[(sel >> 4) % 3];
    shardlm_server_err e;
    char *out = NULL;
    switch (sel & 7) {
    case 0: completion(SHARDLM_API_COMPLETIONS, 0, body, len, tpl); break;
    case 1: completion(SHARDLM_API_CHAT, 0, body, len, tpl); break;
    case 2: completion(SHARDLM_API_CHAT, 1, body, len, tpl); break;
    case 3: out = shardlm_server_apply_template(body, len, tok, tpl, &e); break;
    case 4: out = shardlm_server_tokenize(body, len, tok, tpl, 256, &e); break;
    case 5: out = shardlm_server_detokenize(body, len, tok, &e); break;
    default: completion(SHARDLM_API_COMPLETIONS, 1, body, len, tpl); break;
    }
    free(out);
    return 0;
}
