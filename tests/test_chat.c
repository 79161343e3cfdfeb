/* test_chat.c - chat templates: real models' templates (tests/data/
 * chat_templates) rendered to the exact text transformers'
 * apply_chat_template gives, the Jinja features one by one, errors at load
 * (with line and column) and at render (raise_exception), the built-in
 * default for a GGUF without a template, and the runaway guards. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_text.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "test_util.h"

static const shardlm_chat_message FULL[] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello!"},
    {"assistant", "  Hi there.  "},
    {"user", "What is 2+2?"},
};
#define NOSYS (FULL + 1)

static char *fixture(const char *name, size_t *len)
{
    char path[4096];
    const char *src = getenv("SHARDLM_SRC");
    snprintf(path, sizeof path, "%s/tests/data/chat_templates/%s.jinja", src ? src : "..", name);
    char *s = tu_read_file(path, len);
    cr_assert_not_null(s, "cannot read %s", path);
    return s;
}

static shardlm_chat_template *load(const char *src, size_t len)
{
    shardlm_chat_template *t = NULL;
    int rc = shardlm_chat_template_new(src, len, "t.jinja", &t);
    cr_assert_eq(rc, SHARDLM_OK, "load: %s", shardlm_err_get());
    cr_assert_not_null(t);
    return t;
}

static shardlm_chat_template *loadz(const char *src) { return load(src, strlen(src)); }

static shardlm_chat_template *load_fixture(const char *name, const char *bos, const char *eos)
{
    size_t len;
    char *src = fixture(name, &len);
    shardlm_chat_template *t = NULL;
    int rc = shardlm_chat_template_new(src, len, name, &t);
    free(src);
    cr_assert_eq(rc, SHARDLM_OK, "%s: %s", name, shardlm_err_get());
    cr_assert_eq(shardlm_chat_template_set_tokens(t, bos, eos), SHARDLM_OK);
    return t;
}

static void expect_render(const shardlm_chat_template *t, const shardlm_chat_message *m, size_t n, int gen,
                          const char *want)
{
    char *out = NULL;
    size_t len = 0;
    int rc = shardlm_chat_render(t, m, n, gen, &out, &len);
    cr_assert_eq(rc, SHARDLM_OK, "render: %s", shardlm_err_get());
    cr_assert_eq(len, strlen(out));
    cr_expect_str_eq(out, want, "gen=%d\n got: [%s]\nwant: [%s]", gen, out, want);
    free(out);
}

static void expect_error(const shardlm_chat_template *t, const shardlm_chat_message *m, size_t n, const char *want)
{
    char *out = (char *)"unchanged";
    int rc = shardlm_chat_render(t, m, n, 1, &out, NULL);
    cr_assert_eq(rc, SHARDLM_EINPUT, "rc %d", rc);
    cr_assert_null(out);
    cr_expect_str_eq(shardlm_err_get(), want);
}

/* A template and what it renders for FULL (system, user, assistant, user). */
typedef struct {
    const char *name, *bos, *eos;
    const char *full_gen, *full_nogen; /* NULL: FULL is refused with err */
    const char *nosys_gen, *nosys_nogen;
    const char *err;
} fixture_case;

static const fixture_case FIXTURES[] = {
    {"llama2-chat", "<s>", "</s>",
     "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]",
     "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]",
     "<s>[INST] Hello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]",
     "<s>[INST] Hello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]", NULL},
    {"llama3-instruct", "<|begin_of_text|>", "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
     "Hi there.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
     "Hi there.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
     "What is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
     "What is 2+2?<|eot_id|>", NULL},
    {"qwen2-chatml", "", "<|im_end|>",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
     "<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
     "<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
     /* no system message: the template's default one */
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
     "<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n"
     "<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n", NULL},
    {"mistral-instruct", "<s>", "</s>", NULL, NULL,
     "<s>[INST] Hello! [/INST]  Hi there.  </s>[INST] What is 2+2? [/INST]",
     "<s>[INST] Hello! [/INST]  Hi there.  </s>[INST] What is 2+2? [/INST]",
     "Conversation roles must alternate user/assistant/user/assistant/..."},
    {"gemma-it", "<bos>", "<eos>", NULL, NULL,
     "<bos><start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\nHi there.<end_of_turn>\n"
     "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
     "<bos><start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\nHi there.<end_of_turn>\n"
     "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n",
     "System role not supported"},
    {"phi3.5-mini", "<s>", "<|endoftext|>",
     "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello!<|end|>\n<|assistant|>\n  Hi there.  <|end|>\n"
     "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n",
     "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello!<|end|>\n<|assistant|>\n  Hi there.  <|end|>\n"
     "<|user|>\nWhat is 2+2?<|end|>\n<|endoftext|>",
     "<|user|>\nHello!<|end|>\n<|assistant|>\n  Hi there.  <|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n",
     "<|user|>\nHello!<|end|>\n<|assistant|>\n  Hi there.  <|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|endoftext|>", NULL},
    {"zephyr", "<s>", "</s>",
     "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello!</s>\n<|assistant|>\n  Hi there.  </s>\n"
     "<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n",
     "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello!</s>\n<|assistant|>\n  Hi there.  </s>\n"
     "<|user|>\nWhat is 2+2?</s>\n",
     "<|user|>\nHello!</s>\n<|assistant|>\n  Hi there.  </s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n",
     "<|user|>\nHello!</s>\n<|assistant|>\n  Hi there.  </s>\n<|user|>\nWhat is 2+2?</s>\n", NULL},
    {"deepseek-coder-instruct", "<｜begin▁of▁sentence｜>", "<|EOT|>",
     "<｜begin▁of▁sentence｜>You are a helpful assistant.### Instruction:\nHello!\n### Response:\n  Hi there.  \n"
     "<|EOT|>\n### Instruction:\nWhat is 2+2?\n### Response:\n",
     "<｜begin▁of▁sentence｜>You are a helpful assistant.### Instruction:\nHello!\n### Response:\n  Hi there.  \n"
     "<|EOT|>\n### Instruction:\nWhat is 2+2?\n",
     "<｜begin▁of▁sentence｜>You are an AI programming assistant, utilizing the Deepseek Coder model, developed by "
     "Deepseek Company, and you only answer questions related to computer science. For politically sensitive "
     "questions, security and privacy issues, and other non-computer science questions, you will refuse to answer\n"
     "### Instruction:\nHello!\n### Response:\n  Hi there.  \n<|EOT|>\n### Instruction:\nWhat is 2+2?\n### Response:\n",
     "<｜begin▁of▁sentence｜>You are an AI programming assistant, utilizing the Deepseek Coder model, developed by "
     "Deepseek Company, and you only answer questions related to computer science. For politically sensitive "
     "questions, security and privacy issues, and other non-computer science questions, you will refuse to answer\n"
     "### Instruction:\nHello!\n### Response:\n  Hi there.  \n<|EOT|>\n### Instruction:\nWhat is 2+2?\n", NULL},
};

Test(chat, real_templates_render_exactly)
{
    for (size_t i = 0; i < sizeof FIXTURES / sizeof FIXTURES[0]; i++) {
        const fixture_case *c = &FIXTURES[i];
        cr_log_info("template %s", c->name);
        shardlm_chat_template *t = load_fixture(c->name, c->bos, c->eos);
        if (c->full_gen) {
            expect_render(t, FULL, 4, 1, c->full_gen);
            expect_render(t, FULL, 4, 0, c->full_nogen);
        } else {
            expect_error(t, FULL, 4, c->err);
        }
        expect_render(t, NOSYS, 3, 1, c->nosys_gen);
        expect_render(t, NOSYS, 3, 0, c->nosys_nogen);
        shardlm_chat_template_free(t);
    }
}

Test(chat, llama2_alternation_violation)
{
    shardlm_chat_template *t = load_fixture("llama2-chat", "<s>", "</s>");
    const shardlm_chat_message two_users[] = {{"user", "a"}, {"user", "b"}};
    expect_error(t, two_users, 2, "Conversation roles must alternate user/assistant/user/assistant/...");
    shardlm_chat_template_free(t);
}

Test(chat, mistral_other_roles)
{
    shardlm_chat_template *t = load_fixture("mistral-instruct", "<s>", "</s>");
    const shardlm_chat_message m[] = {{"user", "a"}, {"tool", "b"}};
    expect_error(t, m, 2, "Only user and assistant roles are supported!");
    shardlm_chat_template_free(t);
}

/* Jinja features one at a time; expected text as Jinja 3.1 renders it with
 * transformers' settings, for FULL with add_generation_prompt true. */
static const struct {
    const char *src, *want;
} FEATURES[] = {
    {"{% for m in messages %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }};{% endfor %}",
     "01TrueFalse44;12FalseFalse43;23FalseFalse42;34FalseTrue41;"},
    {"{% set ns = namespace(n=0, seen=false) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.n }} {{ ns.seen }}",
     "2 False"},
    {"{% set x = 1 %}{% for m in messages %}{% set x = 2 %}{% endfor %}{{ x }}{% if true %}{% set y = 3 %}{% endif %}{{ y }}",
     "13"},
    {"{{ messages[1:] | length }} {{ messages[-1].content }} {{ (messages[::-1] | first).role }} {{ 'abcdef'[1:4] }} {{ 'abc'[::-1] }}",
     "3 What is 2+2? user bcd cba"},
    {"{{ '  a b  ' | trim }}|{{ 'MiXed' | upper }}|{{ 'MiXed' | lower }}|{{ 'hello world-x' | title }}|{{ 'hello' | capitalize }}",
     "a b|MIXED|mixed|Hello World-X|Hello"},
    {"{{ missing | default('dflt') }} {{ '' | default('e', true) }} {{ none }} {{ true }} {{ missing }}.",
     "dflt e None True ."},
    {"{{ 'a\"b\\n' | tojson }} {{ [1, 'x', none, true] | tojson }} {{ {'k': 'v'} | tojson }}",
     "\"a\\\"b\\n\" [1, \"x\", null, true] {\"k\": \"v\"}"},
    {"{{ x is defined }} {{ messages is defined }} {{ none is none }} {{ 'a' is string }} {{ 3 is number }} {{ 3 is odd }} {{ messages[0] is mapping }} {{ 1 is not string }}",
     "False True True True True True True True"},
    {"{{ 'ell' in 'hello' }} {{ 'zz' not in 'hello' }} {{ 'role' in messages[0] }} {{ 2 in [1, 2] }}",
     "True True True True"},
    {"{{ 'a' ~ 1 ~ none }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 2 * 3 - 1 }} {{ 'ab' * 3 }} {{ [1] + [2] }}",
     "a1None 1 2 3 -4 5 ababab [1, 2]"},
    {"{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith('x') }}|{{ \"o'neil mc-d\".title() }}|{{ 'aXa'.replace('a', 'b') }}",
     "x|hi|['a', 'b', '', 'c']|['a', 'b']|True|False|O'Neil Mc-D|bXb"},
    {"{{ 'yes' if messages else 'no' }}|{{ 'a' if false }}|{{ messages[0].get('nope', 'dd') }}|{{ {'a': 1}['a'] }}",
     "yes||dd|1"},
    {"{% for x in [] %}x{% else %}empty{% endfor %}|{% for n in [1, 2, 3, 4] %}{% if n == 2 %}{% continue %}{% endif %}{% if n == 4 %}{% break %}{% endif %}{{ n }}{% endfor %}|{% for n in range(5) if n is even %}{{ n }}{% endfor %}",
     "empty|13|024"},
    {"a  {{- 'b' -}}  c\n  {%- if true -%}  d  {%- endif %}\n{# comment #}\n   {% if true %}\n  e\n   {% endif %}\nf\n",
     "abcd  e\nf"},
    {"{{ [1, 'two', none, true] }} {{ {'k': \"it's\"} }} {{ messages | length }} {{ 'héllo' | length }} {{ [3, 4] | last }} {{ ['a', 'b'] | join('-') }}",
     "[1, 'two', None, True] {'k': \"it's\"} 4 5 4 a-b"},
    {"{% if 1 < 2 and not (2 <= 1) or false %}ok{% elif x %}no{% else %}no{% endif %}{{ 'abc' < 'abd' }}{{ 1 == 1 }}{{ 1 != true }}",
     "okTrueTrueFalse"},
    {"{% for c in 'h\xc3\xa9!' %}[{{ c }}]{% endfor %}{{ 'h\xc3\xa9llo'[1:3] }}|{{ 'h\xc3\xa9llo'[::2] }}|{{ 'h\xc3\xa9llo'[-2:] }}",
     "[h][\xc3\xa9][!]\xc3\xa9l|hlo|lo"},
};

Test(chat, jinja_features)
{
    for (size_t i = 0; i < sizeof FEATURES / sizeof FEATURES[0]; i++) {
        cr_log_info("case %zu: %s", i, FEATURES[i].src);
        shardlm_chat_template *t = loadz(FEATURES[i].src);
        expect_render(t, FULL, 4, 1, FEATURES[i].want);
        shardlm_chat_template_free(t);
    }
}

Test(chat, none_content_and_empty_output)
{
    shardlm_chat_template *t = loadz("{{ messages[0].content is none }}{{ messages[0].content }}");
    const shardlm_chat_message m[] = {{"assistant", NULL}};
    expect_render(t, m, 1, 1, "TrueNone");
    shardlm_chat_template_free(t);
    t = loadz("{% if false %}x{% endif %}");
    expect_render(t, m, 1, 1, "");
    shardlm_chat_template_free(t);
}

static void expect_load_error(const char *src, const char *want)
{
    shardlm_chat_template *t = (shardlm_chat_template *)1;
    int rc = shardlm_chat_template_new(src, strlen(src), "t.jinja", &t);
    cr_assert_eq(rc, SHARDLM_EINPUT, "accepted: %s", src);
    cr_assert_null(t);
    cr_expect_str_eq(shardlm_err_get(), want, "for %s", src);
}

Test(chat, load_errors_name_origin_line_and_column)
{
    expect_load_error("{% if x %}\n  {{ 1 + }}\n{% endif %}", "t.jinja:2:10: expected an expression, found '}}'");
    expect_load_error("{% for m in messages %}\n{{ m.content }\n{% endfor %}",
                      "t.jinja:2:1: unterminated tag (no closing '}}')");
    expect_load_error("{{ messages | selectattr('role') }}", "t.jinja:1:13: unsupported filter 'selectattr'");
    expect_load_error("ab\n{% macro f() %}{% endmacro %}", "t.jinja:2:4: unsupported statement 'macro'");
    expect_load_error("{% for m in messages %}\n{{ m }}", "t.jinja:1:4: '{% endfor %}' is missing for this block");
    expect_load_error("{% if a %}{% endfor %}", "t.jinja:1:14: unexpected 'endfor'");
    expect_load_error("{{ x is divisibleby(3) }}", "t.jinja:1:9: unsupported test 'divisibleby'");
    expect_load_error("{{ cycler('a') }}", "t.jinja:1:4: unsupported function 'cycler'");
    expect_load_error("{{ d.items() }}", "t.jinja:1:5: unsupported method '.items()'");
    expect_load_error("{% for k, v in d %}{% endfor %}", "t.jinja:1:9: unsupported: more than one loop variable");
    expect_load_error("{{ 1.5 }}", "t.jinja:1:4: unsupported float literal");
    expect_load_error("{% break %}", "t.jinja:1:4: 'break' outside a loop");
    expect_load_error("{# never closed", "t.jinja:1:1: unterminated comment (no closing '#}')");
    expect_load_error("{{ 'abc }}", "t.jinja:1:4: unterminated string literal");
}

Test(chat, render_errors)
{
    shardlm_chat_template *t = loadz("{{ raise_exception('boom: ' ~ messages | length) }}");
    expect_error(t, FULL, 4, "boom: 4");
    shardlm_chat_template_free(t);
    t = loadz("x\n{{ messages[0].content + 1 }}");
    expect_error(t, FULL, 4, "chat template t.jinja:2:24: unsupported operand types for +: 'str' and 'int'");
    shardlm_chat_template_free(t);
    t = loadz("{{ nothing.here }}");
    expect_error(t, FULL, 4, "chat template t.jinja:1:11: 'nothing' is undefined");
    shardlm_chat_template_free(t);
    t = loadz("{% set d = {'a': 1} %}{% set d.a = 2 %}");
    expect_error(t, FULL, 4, "chat template t.jinja:1:26: cannot assign attribute on non-namespace object 'd'");
    shardlm_chat_template_free(t);
}

Test(chat, builtin_default_for_a_gguf_without_template)
{
    shardlm_gguf *g = NULL;
    const char *path = tu_shared("models/stories260K.gguf");
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_chat_template *t = NULL;
    cr_assert_eq(shardlm_chat_template_from_gguf(g, &t), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_gguf_close(g); /* the template must not depend on the mapping */
    cr_assert(shardlm_chat_template_is_default(t));
    cr_expect_str_eq(shardlm_chat_template_origin(t), "built-in default chat template");
    expect_render(t, FULL, 4, 1,
                  "You are a helpful assistant.\n\nUser: Hello!\nAssistant:   Hi there.  \nUser: What is 2+2?\nAssistant:");
    expect_render(t, FULL, 4, 0,
                  "You are a helpful assistant.\n\nUser: Hello!\nAssistant:   Hi there.  \nUser: What is 2+2?\n");
    const shardlm_chat_message tool[] = {{"tool", "42"}};
    expect_render(t, tool, 1, 0, "Tool: 42\n");
    shardlm_chat_template_free(t);
}

/* A GGUF carrying a template: bos/eos come from its vocabulary. */
Test(chat, template_and_tokens_from_gguf)
{
    size_t len;
    char *src = fixture("llama2-chat", &len);
    char path[512];
    snprintf(path, sizeof path, "%s/chat.gguf", tu_tmpdir());
    shardlm_gguf_writer *w = shardlm_gguf_writer_new(32);
    const char *tokens[] = {"<unk>", "<s>", "</s>", "x"};
    shardlm_gguf_writer_str(w, "general.architecture", "llama");
    shardlm_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", tokens, 4);
    shardlm_gguf_writer_u32(w, "tokenizer.ggml.bos_token_id", 1);
    shardlm_gguf_writer_u32(w, "tokenizer.ggml.eos_token_id", 2);
    shardlm_gguf_writer_str(w, "tokenizer.chat_template", src);
    cr_assert_eq(shardlm_gguf_writer_write(w, path, NULL, NULL), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_gguf_writer_free(w);
    free(src);
    shardlm_gguf *g = NULL;
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK, "%s", shardlm_err_get());
    shardlm_chat_template *t = NULL;
    cr_assert_eq(shardlm_chat_template_from_gguf(g, &t), SHARDLM_OK, "%s", shardlm_err_get());
    cr_assert_not(shardlm_chat_template_is_default(t));
    expect_render(t, NOSYS, 3, 1, "<s>[INST] Hello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]");
    shardlm_chat_template_free(t);

    /* --chat-template FILE overrides it; errors name the file */
    char file[600];
    snprintf(file, sizeof file, "%s/bad.jinja", tu_tmpdir());
    cr_assert_eq(tu_write_file(file, "ok\n{{ x | bogus }}", 18), 0);
    cr_assert_eq(shardlm_chat_template_from_file(file, g, &t), SHARDLM_EINPUT);
    char want[700];
    snprintf(want, sizeof want, "%s:2:6: unsupported filter 'bogus'", file);
    cr_expect_str_eq(shardlm_err_get(), want);
    cr_assert_eq(tu_write_file(file, "{{ bos_token }}|{{ eos_token }}\n", 32), 0);
    cr_assert_eq(shardlm_chat_template_from_file(file, g, &t), SHARDLM_OK, "%s", shardlm_err_get());
    expect_render(t, FULL, 4, 1, "<s>|</s>");
    shardlm_chat_template_free(t);
    shardlm_gguf_close(g);
}

static void expect_limit(const char *src, shardlm_chat_limits lim, const char *want)
{
    shardlm_chat_template *t = loadz(src);
    shardlm_chat_template_set_limits(t, lim);
    expect_error(t, FULL, 4, want);
    shardlm_chat_template_free(t);
}

Test(chat, runaway_guards)
{
    shardlm_chat_limits lim = shardlm_chat_default_limits();
    lim.max_iterations = 10000;
    expect_limit("{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}", lim,
                 "chat template t.jinja:1:30: loops ran more than 10000 iterations");
    lim = shardlm_chat_default_limits();
    lim.max_output = 500;
    expect_limit("{% for i in range(100) %}0123456789{% endfor %}", lim,
                 "chat template t.jinja:1:26: rendered text exceeds the output limit of 500 bytes");
    lim = shardlm_chat_default_limits();
    lim.max_memory = 1 << 20;
    expect_limit("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                 lim, "chat template t.jinja:1:1: scratch memory limit of 1048576 bytes exceeded");

    /* nesting is refused at load, before it can exhaust the stack */
    char deep[1200];
    size_t n = 0;
    n += (size_t)sprintf(deep + n, "{{ ");
    for (int i = 0; i < 300; i++) deep[n++] = '(';
    deep[n++] = '1';
    for (int i = 0; i < 300; i++) deep[n++] = ')';
    n += (size_t)sprintf(deep + n, " }}");
    shardlm_chat_template *t = (shardlm_chat_template *)1;
    cr_assert_eq(shardlm_chat_template_new(deep, n, "t.jinja", &t), SHARDLM_EINPUT);
    cr_expect(strstr(shardlm_err_get(), "nesting deeper than 128 levels") != NULL, "%s", shardlm_err_get());
}
