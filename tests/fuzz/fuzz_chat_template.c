/* fuzz_chat_template.c - libFuzzer harness for the chat-template engine
 * (text/chat*.c): the input is a template's source, then a NUL byte and the
 * template variables as JSON (messages, tools, add_generation_prompt, ...);
 * without a NUL, the source is rendered with a fixed conversation. Renders
 * run under small limits, so a runaway template is a clean error, not a
 * hang; the output must be as long as the renderer says. */
#include "fuzz_util.h"

#include "shardlm_common.h"
#include "shardlm_text.h"

static const char default_vars[] =
    "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi <b>!\"},"
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
    "\"arguments\":{\"x\":1}}}]},{\"role\":\"tool\",\"content\":\"42\"}],\"tools\":[{\"type\":\"function\","
    "\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],\"add_generation_prompt\":true}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *src = (const char *)data;
    const uint8_t *nul = memchr(data, 0, size);
    size_t src_len = nul ? (size_t)(nul - data) : size;
    const char *vars = nul ? (const char *)nul + 1 : default_vars;
    size_t vars_len = nul ? size - src_len - 1 : sizeof default_vars - 1;
    shardlm_chat_template *t = NULL;
    if (shardlm_chat_template_new(src, src_len, "fuzz", &t) != SHARDLM_OK) return 0;
    shardlm_chat_template_set_tokens(t, "<s>", "</s>");
    shardlm_chat_limits lim = {1 << 20, 64 << 20, 100000};
    shardlm_chat_template_set_limits(t, lim);
    (void)shardlm_chat_template_unsupported(t);
    shardlm_chat_render_opts o = {1721999100};
    char *out = NULL;
    size_t n = 0;
    if (shardlm_chat_render_json(t, vars, vars_len, &o, &out, &n) == SHARDLM_OK) {
        if (!out || strlen(out) > n || n > lim.max_output) abort(); /* NUL-terminated, n bytes, within the limit */
        free(out);
    }
    static const shardlm_chat_message msgs[] = {{"system", "S"}, {"user", "U"}, {"assistant", NULL}, {"user", "V"}};
    out = NULL;
    if (shardlm_chat_render(t, msgs, 4, 1, &out, &n) == SHARDLM_OK) free(out);
    shardlm_chat_template_free(t);
    return 0;
}
