/* test_chat.c - chat templates: the 71 fixtures over ../shared's 12 real
 * templates pinned to tests/data/chat_fixtures/reference.json (what
 * @huggingface/jinja renders; tests/jinja/run.sh re-checks it with npm),
 * older templates (tests/data/
 * chat_templates) rendered to the exact text transformers'
 * apply_chat_template gives, the Jinja features one by one, errors at load
 * (with line and column) and at render (raise_exception), the built-in
 * default for a GGUF without a template, and the runaway guards. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

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

/* Jinja features one at a time; the expected text is what @huggingface/jinja
 * 0.5.13 renders for FULL with add_generation_prompt true, bos "<s>", eos
 * "</s>" and the clock at 2024-07-26 13:05 UTC (checked with node when the
 * table was written). */
static const struct {
    const char *src, *want;
} FEATURES[] = {
    {"{% for m in messages %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }};{% endfor %}",
     "01truefalse44;12falsefalse43;23falsefalse42;34falsetrue41;"},
    {"{% set ns = namespace(n=0, seen=false) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.n = ns.n + 1 %}{% endif %}{% endfor %}{{ ns.n }} {{ ns.seen }} {{ ns }}",
     "2 false {\"n\": 2, \"seen\": false}"},
    {"{% set x = 1 %}{% for m in messages %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}{% if true %}{% set y = 3 %}{% endif %}{{ y }}",
     "222213"},
    {"{{ messages[1:] | length }} {{ messages[-1].content }} {{ (messages[::-1] | first).role }} {{ 'abcdef'[1:4] }} {{ 'abc'[::-1] }} {{ 'abc'[5] }}|",
     "3 What is 2+2? user bcd cba |"},
    {"{{ '  a b  ' | trim }}|{{ 'MiXed' | upper }}|{{ 'MiXed' | lower }}|{{ 'hello wORLD-x' | title }}|{{ 'hELLO' | capitalize }}",
     "a b|MIXED|mixed|Hello WORLD-X|HELLO"},
    {"{{ missing | default('dflt') }} {{ '' | default('e', true) }} {{ none }} {{ true }} {{ missing }}. {{ missing.attr.deeper }}|{{ none.x }}|",
     "dflt e  true . ||"},
    {"{{ 'a\"b\\n\xc3\xa9""' | tojson }} {{ [1, 'x', none, true, 1.5] | tojson }} {{ {'k': 'v', 'n': {'a': []}} | tojson(indent=2) }} {{ {'b': 1, 'a': 2} | tojson(sort_keys=true, separators=[',', ':']) }} {{ '\xc3\xa9""' | tojson(ensure_ascii=true) }}",
     "\"a\\\"b\\n\xc3\xa9""\" [1, \"x\", null, true, 1.5] {\n  \"k\": \"v\",\n  \"n\": {\n    \"a\": []\n  }\n} {\"a\":2,\"b\":1} \"\\u00e9\""},
    {"{{ x is defined }} {{ messages is defined }} {{ none is none }} {{ 'a' is string }} {{ 3 is number }} {{ 3 is odd }} {{ messages[0] is mapping }} {{ 1 is not string }} {{ 'abc' is iterable }} {{ messages[0] is iterable }} {{ 'ab' is lower }}",
     "false true true true true true true true true false true"},
    {"{{ 'ell' in 'hello' }} {{ 'zz' not in 'hello' }} {{ 'role' in messages[0] }} {{ 2 in [1, 2] }} {{ 'x' in undefinedthing }} {{ messages[0] in messages }}",
     "true true true true false true"},
    {"{{ 'a' ~ 1 ~ 1.0 ~ true }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 2 * 3 - 1 }} {{ 7 / 2 }} {{ 6 / 2 }} {{ 2 ** 10 }} {{ [1] + [2] }} {{ 'a' + 1 }} {{ 0.1 + 0.2 }} {{ 1.0 }} {{ -1 | abs }}",
     "a11true 1 -1 3 -4 5 3.5 3.0 1024 [1, 2] a1 0.30000000000000004 1.0 1"},
    {"{{ '  x  '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith(['x', 'lo']) }}|{{ 'aXa'.replace('a', 'b') }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'h\xc3\xa9""llo'.upper() }}|{{ 'abc'.length }}",
     "x|[\"a\", \"b\", \"\", \"c\"]|[\"a\", \"b\"]|[\"a\", \"b c\"]|true|true|bXb|bba|H\xc3\x89""LLO|3"},
    {"{{ 'yes' if messages else 'no' }}|{{ 'a' if false }}|{{ messages[0].get('nope', 'dd') }}|{{ messages[0].get('nope') }}|{{ {'a': 1}['a'] }}|{{ {'a': 1}.items() | list }}|{{ {'a': 1, 'b': 2}.keys() }}|{{ {'a': 1}.values() }}",
     "yes||dd||1|[[\"a\", 1]]|[\"a\", \"b\"]|[1]"},
    {"{% for x in [] %}x{% else %}empty{% endfor %}|{% for n in [1, 2, 3, 4] %}{{ n }}{% if n == 2 %}{% continue %}{% endif %}{% if n == 4 %}{% break %}{% endif %}{% endfor %}|{% for n in range(5) if n is even %}{{ n }}{% endfor %}|{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}|{% for k in {'x': 1} %}{{ k }}{% endfor %}",
     "empty|13|024|a=1;b=2;|x"},
    {"a  {{- 'b' -}}  c\n  {%- if true -%}  d  {%- endif %}\n{# comment #}\n   {% if true %}\n  e\n   {% endif %}\nf\n",
     "abcd  e\nf"},
    {"{{ [1, 'two', none, true, {'k': 'v'}] }} {{ {'k': \"it's\"} }} {{ messages | length }} {{ 'h\xc3\xa9""llo\xf0\x9f\x98\x80""' | length }} {{ [3, 4] | last }} {{ ['a', 'b'] | join('-') }} {{ [1, none, 'x'] | join }}",
     "[1, \"two\", null, true, {\"k\": \"v\"}] {\"k\": \"it's\"} 4 7 4 a-b 1x"},
    {"{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(name='Cy', punct='.') }}",
     "Hi Ann! Hi Bob? Hi Cy."},
    {"{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}bold {{ messages | length }}{% endcall %}|{% macro rec(n) %}{% if n > 0 %}{{ n }}{{ rec(n - 1) }}{% endif %}{% endmacro %}{{ rec(3) }}",
     "<b>bold 4</b>|321"},
    {"{% filter upper %}shout {{ 'it' }}{% endfilter %}|{% set block %}inner {{ 1 + 1 }}{% endset %}{{ block }}|{% set a, b = [1, 2] %}{{ a }}{{ b }}",
     "SHOUT IT|inner 2|12"},
    {"{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(', ') }}|{{ messages | rejectattr('role', 'equalto', 'user') | list | length }}|{{ messages | map(attribute='nope', default='-') | join }}|{{ [3, 1, 2] | sort }}|{{ ['b', 'A', 'c'] | sort(reverse=true) }}|{{ messages | sort(attribute='role') | map(attribute='role') | join(',') }}",
     "Hello!, What is 2+2?|2|----|[1, 2, 3]|[\"c\", \"b\", \"A\"]|assistant,system,user,user"},
    {"{{ [1, 2, 2, 3, 1] | unique }}|{{ [1, 2] | reverse }}|{{ '42' | int + 1 }}|{{ '3.5' | float }}|{{ 'x' | int }}|{{ 3.9 | int }}|{{ 5 | float }}|{{ true | int }}|{{ 42 | string }}|{{ [1] | string }}",
     "[1, 2, 3]|[2, 1]|43|3.5|0|3|5.0|1|42|[1]"},
    {"{{ 'one\ntwo\n\nthree' | indent }}|{{ 'one\ntwo' | indent(2, true) }}|{{ 'a-b' | replace('-', '+') }}|{{ {'b': 2, 'a': 1} | dictsort }}|{{ {'b': 2, 'a': 1} | items }}|{{ 'x' | safe }}",
     "one\n    two\n\n    three|  one\n  two|a+b|[[\"a\", 1], [\"b\", 2]]|[[\"b\", 2], [\"a\", 1]]|x"},
    {"{{ strftime_now('%Y-%m-%d %H:%M %b %B %% %A') }}|{{ range(3) }}|{{ range(1, 7, 2) }}|{{ range(3, 0, -1) }}",
     "2024-07-26 13:05 Jul July % %A|[0, 1, 2]|[1, 3, 5]|[3, 2, 1]"},
    {"{{ 'x' if 1 == 1.0 }}{{ 'y' if '1' == 1 }}{{ 'z' if none == undefinedvar }}{{ 'w' if [] == [] }}|{{ not none }}{{ not 'a' }}|{{ 1 < 2 and 2 < 3 or false }}|{{ 0 or 'fallback' }}|{{ '' and 'x' }}|",
     "xyz|truefalse|true|fallback||"},
    {"{{ '\\x41\\u00e9\\t|' }}{{ \"it's\" }}{{ 'con' 'cat' }}|{{ -2 + 1 }}|{{ +3 }}|{{ 1 - -1 }}",
     "A\xc3\xa9""\t|it'sconcat|-1|3|2"},
};

static const char FULL_VARS[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"You are a helpful assistant.\"}, "
    "{\"role\": \"user\", \"content\": \"Hello!\"}, {\"role\": \"assistant\", \"content\": \"  Hi there.  \"}, "
    "{\"role\": \"user\", \"content\": \"What is 2+2?\"}], \"add_generation_prompt\": true}";

static void utc(void)
{
    setenv("TZ", "UTC", 1);
    tzset();
}

Test(chat, jinja_features_as_the_reference_renders_them)
{
    utc();
    shardlm_chat_render_opts o = {.now = 1721999100};
    for (size_t i = 0; i < sizeof FEATURES / sizeof FEATURES[0]; i++) {
        cr_log_info("case %zu: %s", i, FEATURES[i].src);
        shardlm_chat_template *t = loadz(FEATURES[i].src);
        cr_assert_eq(shardlm_chat_template_set_tokens(t, "<s>", "</s>"), SHARDLM_OK);
        char *out = NULL;
        size_t len = 0;
        int rc = shardlm_chat_render_json(t, FULL_VARS, strlen(FULL_VARS), &o, &out, &len);
        cr_assert_eq(rc, SHARDLM_OK, "case %zu: %s", i, shardlm_err_get());
        cr_expect_str_eq(out, FEATURES[i].want, "case %zu\n got: [%s]\nwant: [%s]", i, out, FEATURES[i].want);
        free(out);
        shardlm_chat_template_free(t);
    }
}

Test(chat, none_content_and_empty_output)
{
    shardlm_chat_template *t = loadz("{{ messages[0].content is none }}{{ messages[0].content }}|{{ none }}");
    const shardlm_chat_message m[] = {{"assistant", NULL}};
    expect_render(t, m, 1, 1, "true|");
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
    expect_load_error("{% for m in messages %}\n{{ m.content }\n{% endfor %}", "t.jinja:2:14: expected '}}', found '}'");
    expect_load_error("ab\n{% include 'x' %}", "t.jinja:2:4: unsupported statement 'include'");
    expect_load_error("{% for m in messages %}\n{{ m }}", "t.jinja:1:4: '{% endfor %}' is missing for this block");
    expect_load_error("{% if a %}{% endfor %}", "t.jinja:1:14: unexpected '{% endfor %}'");
    expect_load_error("{# never closed", "t.jinja:1:1: missing end of comment tag ('#}')");
    expect_load_error("{{ 'abc }}", "t.jinja:1:11: unexpected end of input");
    expect_load_error("{{ 'a\\q' }}", "t.jinja:1:6: unexpected escaped character 'q'");
    expect_load_error("{% for k, 1 in d %}{% endfor %}", "t.jinja:1:11: expected a loop variable");
    expect_load_error("{% for m in x recursive %}{% endfor %}", "t.jinja:1:15: unsupported: recursive loops");
    /* positions are the source's, though trim_blocks removed newlines before them */
    expect_load_error("{% if a %}\n{% if b %}\n{{ 1 + }}{% endif %}{% endif %}",
                      "t.jinja:3:8: expected an expression, found '}}'");
}

Test(chat, unsupported_filters_load_and_fail_only_when_reached)
{
    shardlm_chat_template *t = loadz("ok{% if messages | length > 9 %}\n{{ x | bogus }}{% endif %}");
    cr_expect_str_eq(shardlm_chat_template_unsupported(t), "unsupported filter 'bogus' at t.jinja:2:8");
    expect_render(t, FULL, 4, 1, "ok");
    shardlm_chat_template_free(t);
    t = loadz("{{ x | bogus }}");
    expect_error(t, FULL, 4, "chat template t.jinja:1:8: unsupported filter 'bogus'");
    shardlm_chat_template_free(t);
    t = loadz("{{ cycler('a') }}{{ x is divisibleby(3) }}");
    cr_expect_str_eq(shardlm_chat_template_unsupported(t), "unsupported function 'cycler' at t.jinja:1:4");
    shardlm_chat_template_free(t);
    t = loadz("{% macro m() %}{% endmacro %}{{ m() }}{{ 4 is divisibleby(2) }}{{ [1] | reject('odd') | list }}");
    cr_expect_null(shardlm_chat_template_unsupported(t));
    expect_render(t, FULL, 4, 1, "true[]");
    shardlm_chat_template_free(t);
}

Test(chat, render_errors)
{
    shardlm_chat_template *t = loadz("{{ raise_exception('boom: ' ~ messages | length) }}");
    expect_error(t, FULL, 4, "boom: 4");
    shardlm_chat_template_free(t);
    t = loadz("x\n{{ messages[0].content - 1 }}");
    expect_error(t, FULL, 4, "chat template t.jinja:2:24: unknown operator \"-\" between StringValue and IntegerValue");
    shardlm_chat_template_free(t);
    t = loadz("{{ nothing.here + 1 }}");
    expect_error(t, FULL, 4, "chat template t.jinja:1:17: cannot perform operation + on undefined values");
    shardlm_chat_template_free(t);
    t = loadz("{% set d = {'a': 1} %}{% set d.a = 2 %}");
    expect_error(t, FULL, 4, "chat template t.jinja:1:26: cannot assign attribute on non-namespace object");
    shardlm_chat_template_free(t);
    t = loadz("{{ none ~ 'x' }}");
    expect_error(t, FULL, 4, "chat template t.jinja:1:9: cannot perform operation ~ on none");
    shardlm_chat_template_free(t);
    t = loadz("{% break %}");
    expect_error(t, FULL, 4, "chat template t.jinja:1:1: 'break' outside a loop");
    shardlm_chat_template_free(t);
    char *out = NULL;
    t = loadz("x");
    cr_assert_eq(shardlm_chat_render_json(t, "[1]", 3, NULL, &out, NULL), SHARDLM_EINPUT);
    cr_expect_str_eq(shardlm_err_get(), "template variables: not a JSON object");
    cr_assert_eq(shardlm_chat_render_json(t, "{\"a\":", 5, NULL, &out, NULL), SHARDLM_EINPUT);
    cr_expect_str_eq(shardlm_err_get(), "template variables: not valid JSON");
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
    cr_assert_eq(tu_write_file(file, "ok\n{% include 'x' %}", 20), 0);
    cr_assert_eq(shardlm_chat_template_from_file(file, g, &t), SHARDLM_EINPUT);
    char want[700];
    snprintf(want, sizeof want, "%s:2:4: unsupported statement 'include'", file);
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
    shardlm_chat_template *lt = loadz("{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}");
    shardlm_chat_template_set_limits(lt, lim);
    char *lout = NULL;
    cr_assert_eq(shardlm_chat_render(lt, FULL, 4, 1, &lout, NULL), SHARDLM_EINPUT);
    cr_expect(strstr(shardlm_err_get(), "loops ran more than 10000 iterations") != NULL, "%s", shardlm_err_get());
    shardlm_chat_template_free(lt);
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

static cJSON *read_json(const char *path)
{
    size_t len;
    char *s = tu_read_file(path, &len);
    cr_assert_not_null(s, "cannot read %s", path);
    cJSON *j = cJSON_ParseWithLength(s, len);
    free(s);
    cr_assert_not_null(j, "%s is not JSON", path);
    return j;
}

/* Every fixture case renders what reference.json (the npm reference's
 * output) holds: the same text, or an error where it fails (the same text
 * for raise_exception), or the fixture's "jinja2" text where the reference
 * cannot render but Jinja2 can. */
Test(chat, fixtures_match_the_committed_reference)
{
    static const char *const names[] = {"llama-3.1", "llama-3.2", "qwen2.5", "qwen3", "mistral-nemo",
                                        "mistral-small-3.2", "smollm3", "phi-3.5", "gemma-2",
                                        "deepseek-r1-distill", "hermes-3-tool-use", "granite-3.3"};
    char path[4096];
    const char *src = getenv("SHARDLM_SRC");
    utc();
    snprintf(path, sizeof path, "%s/tests/data/chat_fixtures/reference.json", src ? src : "..");
    cJSON *ref = read_json(path);
    int cases = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/tests/data/chat_fixtures/%s.json", src ? src : "..", names[i]);
        cJSON *fx = read_json(path);
        const char *tname = cJSON_GetObjectItem(fx, "template")->valuestring;
        snprintf(path, sizeof path, "models/templates/%s", tname);
        shardlm_chat_template *t = NULL;
        cr_assert_eq(shardlm_chat_template_from_file(tu_shared(path), NULL, &t), SHARDLM_OK, "%s", shardlm_err_get());
        cr_assert_null(shardlm_chat_template_unsupported(t), "%s", shardlm_chat_template_unsupported(t));
        cr_assert_eq(shardlm_chat_template_set_tokens(t, cJSON_GetObjectItem(fx, "bos_token")->valuestring,
                                                      cJSON_GetObjectItem(fx, "eos_token")->valuestring), SHARDLM_OK);
        shardlm_chat_render_opts o = {.now = (int64_t)cJSON_GetObjectItem(fx, "now")->valuedouble};
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(fx, "cases")) {
            char key[256], *vars = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "vars")), *out = NULL;
            snprintf(key, sizeof key, "%s/%s", names[i], cJSON_GetObjectItem(c, "name")->valuestring);
            const cJSON *want = cJSON_GetObjectItem(ref, key), *j2 = cJSON_GetObjectItem(c, "jinja2");
            cr_assert_not_null(want, "%s is not in reference.json", key);
            int rc = shardlm_chat_render_json(t, vars, strlen(vars), &o, &out, NULL);
            const cJSON *text = cJSON_GetObjectItem(want, "text"), *err = cJSON_GetObjectItem(want, "error");
            if (j2) {
                cr_expect_eq(rc, SHARDLM_OK, "%s: %s", key, shardlm_err_get());
                if (!rc) cr_expect_str_eq(out, j2->valuestring, "%s", key);
            } else if (text) {
                cr_expect_eq(rc, SHARDLM_OK, "%s: %s", key, shardlm_err_get());
                if (!rc) cr_expect_str_eq(out, text->valuestring, "%s", key);
            } else {
                cr_expect_eq(rc, SHARDLM_EINPUT, "%s renders, the reference fails (%s)", key, err->valuestring);
                if (cJSON_IsTrue(cJSON_GetObjectItem(c, "error_is_raise")))
                    cr_expect_str_eq(shardlm_err_get(), err->valuestring, "%s", key);
            }
            free(out);
            free(vars);
            cases++;
        }
        shardlm_chat_template_free(t);
        cJSON_Delete(fx);
    }
    cr_expect_eq(cases, cJSON_GetArraySize(ref), "reference.json has cases no fixture names");
    cJSON_Delete(ref);
}
