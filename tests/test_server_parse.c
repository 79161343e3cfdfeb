/* test_server_parse.c - the server's request layer without a model: request
 * JSON -> scheduler request fields and sampling parameters, and every
 * validation error -> HTTP status and OpenAI's exact error JSON; then the
 * prompt -> token ids step with the stories260K tokenizer. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "server_parse.h"
#include "shardlm_text.h"
#include "shardlm_common.h"
#include "shardlm_gguf.h"
#include "test_util.h"

#define VOCAB 512

static int parse(shardlm_api_kind k, const char *body, shardlm_server_req *r, shardlm_server_err *e)
{
    return shardlm_server_parse(k, body, strlen(body), VOCAB, r, e);
}

Test(server_parse, completion_fields)
{
    shardlm_server_req r;
    shardlm_server_err e;
    const char *body = "{\"model\":\"x\",\"prompt\":\"Once upon\",\"max_tokens\":7,\"temperature\":0.5,"
                       "\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,\"repetition_penalty\":1.1,"
                       "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"logit_bias\":{\"13\":-100,\"7\":2.5},"
                       "\"seed\":42,\"n\":3,\"stop\":[\"\\n\",\"The end\"],\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true},\"logprobs\":2,\"user\":\"ignored\"}";
    cr_assert_eq(parse(SHARDLM_API_COMPLETIONS, body, &r, &e), SHARDLM_OK, "%s", e.message);
    cr_assert_str_eq(r.prompt_text, "Once upon");
    cr_assert_eq(r.max_tokens, 7);
    cr_assert_float_eq(r.params.temperature, 0.5f, 1e-6);
    cr_assert_float_eq(r.params.top_p, 0.9f, 1e-6);
    cr_assert_eq(r.params.top_k, 40);
    cr_assert_float_eq(r.params.min_p, 0.05f, 1e-6);
    cr_assert_float_eq(r.params.repetition_penalty, 1.1f, 1e-6);
    cr_assert_float_eq(r.params.presence_penalty, 0.5f, 1e-6);
    cr_assert_float_eq(r.params.frequency_penalty, -0.5f, 1e-6);
    cr_assert_eq(r.params.n_logit_bias, 2);
    cr_assert_eq(r.params.logit_bias, r.bias);
    cr_assert_eq(r.bias[0].token, 13);
    cr_assert_float_eq(r.bias[0].bias, -100.0f, 1e-6);
    cr_assert_eq(r.bias[1].token, 7);
    cr_assert(r.params.has_seed);
    cr_assert_eq(r.params.seed, 42u);
    cr_assert_eq(r.n, 3);
    cr_assert_eq(r.n_stop, 2);
    cr_assert_str_eq(r.stop[1], "The end");
    cr_assert(r.stream && r.include_usage);
    cr_assert(r.params.logprobs);
    cr_assert_eq(r.params.top_logprobs, 2);
    shardlm_server_req_free(&r);
}

Test(server_parse, completion_defaults_and_token_prompt)
{
    shardlm_server_req r;
    shardlm_server_err e;
    cr_assert_eq(parse(SHARDLM_API_COMPLETIONS, "{\"prompt\":[1,403,407]}", &r, &e), SHARDLM_OK);
    cr_assert_eq(r.n_prompt_ids, 3);
    cr_assert_eq(r.prompt_ids[1], 403);
    cr_assert_eq(r.max_tokens, 16, "OpenAI's default for completions");
    cr_assert_eq(r.n, 1);
    cr_assert_float_eq(r.params.temperature, 1.0f, 1e-6);
    cr_assert(!r.params.has_seed && !r.params.logprobs && !r.stream && !r.echo);
    shardlm_server_req_free(&r);
    /* one prompt wrapped in an array */
    cr_assert_eq(parse(SHARDLM_API_COMPLETIONS, "{\"prompt\":[\"hi\"],\"stop\":\"x\",\"echo\":true}", &r, &e),
                 SHARDLM_OK);
    cr_assert_str_eq(r.prompt_text, "hi");
    cr_assert_eq(r.n_stop, 1);
    cr_assert(r.echo);
    shardlm_server_req_free(&r);
}

Test(server_parse, chat_fields)
{
    shardlm_server_req r;
    shardlm_server_err e;
    const char *body = "{\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \"},"
                       "{\"type\":\"text\",\"text\":\"there\"}]},{\"role\":\"assistant\",\"content\":null}],"
                       "\"logprobs\":true,\"top_logprobs\":3,\"max_completion_tokens\":5,\"top_k\":-1}";
    cr_assert_eq(parse(SHARDLM_API_CHAT, body, &r, &e), SHARDLM_OK, "%s", e.message);
    cr_assert_eq(r.n_msgs, 3);
    cr_assert_str_eq(r.msgs[0].role, "system");
    cr_assert_str_eq(r.msgs[1].content, "Hi there");
    cr_assert_null(r.msgs[2].content);
    cr_assert(r.params.logprobs);
    cr_assert_eq(r.params.top_logprobs, 3);
    cr_assert_eq(r.max_tokens, 5);
    cr_assert_eq(r.params.top_k, 0);
    shardlm_server_req_free(&r);
    cr_assert_eq(parse(SHARDLM_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", &r, &e),
                 SHARDLM_OK);
    cr_assert_eq(r.max_tokens, 0, "chat: until EOS or the context by default");
    shardlm_server_req_free(&r);
}

/* A bad request: the status and the whole error body, byte for byte. */
typedef struct {
    shardlm_api_kind kind;
    const char *body;
    const char *json;
} bad_case;

#define C SHARDLM_API_COMPLETIONS
#define CH SHARDLM_API_CHAT
#define ERR(msg, param) "{\"error\":{\"message\":\"" msg "\",\"type\":\"invalid_request_error\",\"param\":" param ",\"code\":null}}"

static const bad_case bad_cases[] = {
    {C, "{\"prompt\":\"x\"", ERR("the body is not valid JSON", "null")},
    {C, "[1,2]", ERR("the body must be a JSON object", "null")},
    {C, "{\"max_tokens\":3}", ERR("prompt is required", "\"prompt\"")},
    {C, "{\"prompt\":42}", ERR("prompt must be a string or an array of token ids", "\"prompt\"")},
    {C, "{\"prompt\":[]}", ERR("prompt must not be empty", "\"prompt\"")},
    {C, "{\"prompt\":[1,99999]}", ERR("prompt token ids must be integers in [0, 512)", "\"prompt\"")},
    {C, "{\"prompt\":[\"a\",\"b\"]}",
     ERR("prompt: one prompt per request is supported (send one request per prompt)", "\"prompt\"")},
    {C, "{\"prompt\":\"x\",\"max_tokens\":-1}", ERR("max_tokens must be in [1, 1000000000], got -1", "\"max_tokens\"")},
    {C, "{\"prompt\":\"x\",\"max_tokens\":2.5}", ERR("max_tokens must be an integer", "\"max_tokens\"")},
    {C, "{\"prompt\":\"x\",\"max_tokens\":\"10\"}", ERR("max_tokens must be an integer", "\"max_tokens\"")},
    {C, "{\"prompt\":\"x\",\"temperature\":1e999}", ERR("temperature must be a finite number", "\"temperature\"")},
    {C, "{\"prompt\":\"x\",\"temperature\":-0.5}", ERR("temperature must be in [0, 2], got -0.5", "\"temperature\"")},
    {C, "{\"prompt\":\"x\",\"temperature\":\"hot\"}", ERR("temperature must be a number", "\"temperature\"")},
    {C, "{\"prompt\":\"x\",\"top_p\":0}", ERR("top_p must be in (0, 1], got 0", "\"top_p\"")},
    {C, "{\"prompt\":\"x\",\"top_p\":1.5}", ERR("top_p must be in (0, 1], got 1.5", "\"top_p\"")},
    {C, "{\"prompt\":\"x\",\"n\":0}", ERR("n must be in [1, 16], got 0", "\"n\"")},
    {C, "{\"prompt\":\"x\",\"n\":17}", ERR("n must be in [1, 16], got 17", "\"n\"")},
    {C, "{\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", ERR("stop takes at most 4 strings", "\"stop\"")},
    {C, "{\"prompt\":\"x\",\"stop\":[\"a\",7]}", ERR("stop must be a string or an array of strings", "\"stop\"")},
    {C, "{\"prompt\":\"x\",\"stop\":\"\"}", ERR("stop must not be an empty string", "\"stop\"")},
    {C, "{\"prompt\":\"x\",\"presence_penalty\":3}",
     ERR("presence_penalty must be in [-2, 2], got 3", "\"presence_penalty\"")},
    {C, "{\"prompt\":\"x\",\"frequency_penalty\":-2.5}",
     ERR("frequency_penalty must be in [-2, 2], got -2.5", "\"frequency_penalty\"")},
    {C, "{\"prompt\":\"x\",\"min_p\":2}", ERR("min_p must be in [0, 1], got 2", "\"min_p\"")},
    {C, "{\"prompt\":\"x\",\"top_k\":-2}", ERR("top_k must be in [-1, 1000000000], got -2", "\"top_k\"")},
    {C, "{\"prompt\":\"x\",\"logit_bias\":{\"abc\":1}}",
     ERR("logit_bias key 'abc' is not a token id in [0, 512)", "\"logit_bias\"")},
    {C, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":101}}",
     ERR("logit_bias values must be numbers in [-100, 100]", "\"logit_bias\"")},
    {C, "{\"prompt\":\"x\",\"logit_bias\":[1]}", ERR("logit_bias must be an object of token id -> bias", "\"logit_bias\"")},
    {C, "{\"prompt\":\"x\",\"stream\":\"yes\"}", ERR("stream must be a boolean", "\"stream\"")},
    {C, "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":true}}",
     ERR("stream_options is only allowed when stream is true", "\"stream_options\"")},
    {C, "{\"prompt\":\"x\",\"logprobs\":21}", ERR("logprobs must be in [0, 20], got 21", "\"logprobs\"")},
    {C, "{\"prompt\":\"x\",\"seed\":1.5}", ERR("seed must be an integer", "\"seed\"")},
    {C, "{\"prompt\":\"x\",\"model\":5}", ERR("model must be a string", "\"model\"")},
    {CH, "{\"messages\":[]}", ERR("messages must not be empty", "\"messages\"")},
    {CH, "{\"messages\":{}}", ERR("messages must be an array", "\"messages\"")},
    {CH, "{}", ERR("messages is required", "\"messages\"")},
    {CH, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}",
     ERR("messages[0].role 'wizard' is not one of system, developer, user, assistant, tool", "\"messages[0].role\"")},
    {CH, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"content\":\"y\"}]}",
     ERR("messages[1].role must be a string", "\"messages[1].role\"")},
    {CH, "{\"messages\":[{\"role\":\"user\"}]}",
     ERR("messages[0].content is required for this role", "\"messages[0].content\"")},
    {CH, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
     ERR("messages[0].content: only parts of type \\\"text\\\" are supported", "\"messages[0].content\"")},
    {CH, "{\"messages\":[\"hi\"]}", ERR("messages[0] must be an object", "\"messages[0]\"")},
    {CH, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}",
     ERR("top_logprobs needs logprobs to be true", "\"top_logprobs\"")},
    {CH, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":1}",
     ERR("logprobs must be a boolean", "\"logprobs\"")},
    {CH, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_completion_tokens\":0}",
     ERR("max_completion_tokens must be in [1, 1000000000], got 0", "\"max_completion_tokens\"")},
};

Test(server_parse, bad_requests_give_400_and_openai_error_json)
{
    size_t n = sizeof bad_cases / sizeof bad_cases[0];
    cr_assert_geq(n, 15);
    for (size_t i = 0; i < n; i++) {
        shardlm_server_req r;
        shardlm_server_err e;
        int rc = parse(bad_cases[i].kind, bad_cases[i].body, &r, &e);
        cr_assert_eq(rc, SHARDLM_EINPUT, "case %zu (%s) was accepted", i, bad_cases[i].body);
        cr_assert_eq(e.status, 400, "case %zu", i);
        char *json = shardlm_server_err_json(&e);
        cr_assert_str_eq(json, bad_cases[i].json, "case %zu (%s)", i, bad_cases[i].body);
        free(json);
        shardlm_server_req_free(&r);
    }
}

Test(server_parse, other_statuses_have_their_type_and_code)
{
    shardlm_server_err e;
    shardlm_server_err_set(&e, 429, "rate_limit_error", "rate_limit_exceeded", NULL, "queue %d", 5);
    char *json = shardlm_server_err_json(&e);
    cr_assert_str_eq(json, "{\"error\":{\"message\":\"queue 5\",\"type\":\"rate_limit_error\",\"param\":null,"
                           "\"code\":\"rate_limit_exceeded\"}}");
    free(json);
}

/* ---- prompt -> token ids (needs the stories260K tokenizer) ---- */

typedef struct {
    shardlm_tokenizer *tok;
    shardlm_chat_template *tpl;
} tok_fix;

static tok_fix load_tok(void)
{
    tok_fix f = {0};
    const char *path = tu_shared("models/stories260K.gguf");
    shardlm_gguf *g = NULL;
    cr_assert_eq(shardlm_gguf_open(path, &g), SHARDLM_OK);
    cr_assert_eq(shardlm_tokenizer_from_gguf(g, &f.tok), SHARDLM_OK);
    cr_assert_eq(shardlm_chat_template_from_gguf(g, &f.tpl), SHARDLM_OK);
    shardlm_gguf_close(g);
    return f;
}

Test(server_parse, text_prompt_is_encoded_with_bos)
{
    tok_fix f = load_tok();
    shardlm_server_req r;
    shardlm_server_err e;
    cr_assert_eq(parse(C, "{\"prompt\":\"Once upon a time\"}", &r, &e), SHARDLM_OK);
    int32_t *ids = NULL;
    int n = 0;
    cr_assert_eq(shardlm_server_prompt_ids(&r, f.tok, f.tpl, &ids, &n, &e), SHARDLM_OK);
    int32_t want[] = {1, 403, 407, 261, 378}; /* stories260K.runc-prompt.ids.txt */
    cr_assert_eq(n, 5);
    cr_assert_arr_eq(ids, want, sizeof want);
    free(ids);
    shardlm_server_req_free(&r);
    shardlm_tokenizer_free(f.tok);
    shardlm_chat_template_free(f.tpl);
}

Test(server_parse, chat_is_rendered_then_encoded)
{
    tok_fix f = load_tok();
    shardlm_server_req r;
    shardlm_server_err e;
    cr_assert_eq(parse(CH, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}", &r, &e), SHARDLM_OK);
    int32_t *ids = NULL, *want = NULL;
    int n = 0, n_want = 0;
    cr_assert_eq(shardlm_server_prompt_ids(&r, f.tok, f.tpl, &ids, &n, &e), SHARDLM_OK);
    shardlm_server_req_free(&r);
    /* the built-in template: "User: Hi\nAssistant:" */
    cr_assert_eq(parse(C, "{\"prompt\":\"User: Hi\\nAssistant:\"}", &r, &e), SHARDLM_OK);
    cr_assert_eq(shardlm_server_prompt_ids(&r, f.tok, f.tpl, &want, &n_want, &e), SHARDLM_OK);
    cr_assert_eq(n, n_want);
    cr_assert_arr_eq(ids, want, (size_t)n * sizeof(int32_t));
    free(ids);
    free(want);
    shardlm_server_req_free(&r);
    shardlm_tokenizer_free(f.tok);
    shardlm_chat_template_free(f.tpl);
}

Test(server_parse, template_raise_exception_is_a_400_with_its_message)
{
    tok_fix f = load_tok();
    const char *src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with "
                      "the user') }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}";
    shardlm_chat_template *tpl = NULL;
    cr_assert_eq(shardlm_chat_template_new(src, strlen(src), "test", &tpl), SHARDLM_OK);
    shardlm_server_req r;
    shardlm_server_err e;
    cr_assert_eq(parse(CH, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"x\"}]}", &r, &e), SHARDLM_OK);
    int32_t *ids = NULL;
    int n = 0;
    cr_assert_eq(shardlm_server_prompt_ids(&r, f.tok, tpl, &ids, &n, &e), SHARDLM_EINPUT);
    cr_assert_eq(e.status, 400);
    cr_assert_str_eq(e.message, "Conversation must start with the user");
    cr_assert_str_eq(e.param, "messages");
    cr_assert_null(ids);
    shardlm_server_req_free(&r);
    shardlm_chat_template_free(tpl);
    shardlm_tokenizer_free(f.tok);
    shardlm_chat_template_free(f.tpl);
}

/* ---- response_format and grammar (server_format.c) ---- */

Test(server_parse, response_format_and_grammar_compile_a_grammar)
{
    static const char *const ok[] = {
        "{\"prompt\":\"x\",\"response_format\":{\"type\":\"text\"}}",
        "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_object\"}}",
        "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"r-1_x\","
        "\"description\":\"d\",\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":"
        "\"integer\"}},\"required\":[\"a\"],\"additionalProperties\":false}}}}",
        "{\"prompt\":\"x\",\"grammar\":\"root ::= [a-z]+\"}",
        "{\"prompt\":\"x\",\"response_format\":{\"type\":\"text\"},\"grammar\":\"root ::= \\\"y\\\"\"}",
    };
    static const int constrained[] = {0, 1, 1, 1, 1};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        shardlm_server_req r;
        shardlm_server_err e;
        cr_assert_eq(parse(C, ok[i], &r, &e), SHARDLM_OK, "%s: %s", ok[i], e.message);
        cr_expect_eq(r.grammar != NULL, constrained[i], "%s", ok[i]);
        shardlm_server_req_free(&r);
    }
    shardlm_server_req r;
    shardlm_server_err e;
    cr_assert_eq(parse(CH, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":"
                           "\"json_object\"}}", &r, &e), SHARDLM_OK);
    shardlm_grammar_state *s;
    cr_assert_eq(shardlm_grammar_state_new(r.grammar, 0, &s), 0);
    cr_expect_eq(shardlm_grammar_accept_bytes(s, "{\"k\": [1]}", 10), 0);
    cr_expect(shardlm_grammar_must_end(s), "json_object: one object, then the end");
    shardlm_grammar_state_free(s);
    shardlm_server_req_free(&r);
}

#define RF "{\"prompt\":\"x\",\"response_format\":"
#define JS RF "{\"type\":\"json_schema\",\"json_schema\":"
static const bad_case format_cases[] = {
    {C, RF "\"json\"}", ERR("response_format must be an object", "\"response_format\"")},
    {C, RF "{\"type\":\"xml\"}}",
     ERR("response_format.type must be one of text, json_object, json_schema", "\"response_format\"")},
    {C, RF "{}}", ERR("response_format.type must be one of text, json_object, json_schema", "\"response_format\"")},
    {C, RF "{\"type\":\"json_object\",\"schema\":{}}}",
     ERR("response_format.schema is not supported", "\"response_format\"")},
    {C, RF "{\"type\":\"json_schema\"}}",
     ERR("response_format.json_schema must be an object with name and schema", "\"response_format\"")},
    {C, JS "{\"schema\":{}}}}",
     ERR("response_format.json_schema.name must be 1 to 64 letters, digits, '_' or '-'", "\"response_format\"")},
    {C, JS "{\"name\":\"a b\",\"schema\":{}}}}",
     ERR("response_format.json_schema.name must be 1 to 64 letters, digits, '_' or '-'", "\"response_format\"")},
    {C, JS "{\"name\":\"n\"}}}",
     ERR("response_format.json_schema.schema must be a JSON Schema object", "\"response_format\"")},
    {C, JS "{\"name\":\"n\",\"schema\":{},\"strict\":\"yes\"}}}",
     ERR("response_format.json_schema.strict must be a boolean", "\"response_format\"")},
    {C, JS "{\"name\":\"n\",\"schema\":{},\"extra\":1}}}",
     ERR("response_format.json_schema.extra is not supported", "\"response_format\"")},
    {C, JS "{\"name\":\"n\",\"schema\":{\"type\":\"array\",\"uniqueItems\":true}}}}",
     ERR("response_format.json_schema.schema: \\\"uniqueItems\\\": true at # is not supported",
         "\"response_format\"")},
    {CH, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_schema\","
         "\"json_schema\":{\"name\":\"n\",\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":"
         "\"string\",\"format\":\"uri\"}}}}}}",
     ERR("response_format.json_schema.schema: \\\"format\\\": \\\"uri\\\" at #/properties/a is not supported "
         "(date, time, date-time, uuid, ipv4 and email are)", "\"response_format\"")},
    {C, "{\"prompt\":\"x\",\"grammar\":42}", ERR("grammar must be a string (GBNF)", "\"grammar\"")},
    {C, "{\"prompt\":\"x\",\"grammar\":\"root ::= \\\"a\\\"\\nx ::= [b\"}",
     ERR("grammar: line 2 column 7: unterminated character class", "\"grammar\"")},
    {C, "{\"prompt\":\"x\",\"grammar\":\"\"}", ERR("grammar: line 1 column 1: the grammar has no rule named 'root'",
                                                "\"grammar\"")},
    {C, RF "{\"type\":\"json_object\"},\"grammar\":\"root ::= \\\"a\\\"\"}",
     ERR("grammar cannot be combined with a response_format of type json_object or json_schema", "\"grammar\"")},
};

Test(server_parse, bad_response_format_and_grammar_give_400)
{
    for (size_t i = 0; i < sizeof format_cases / sizeof format_cases[0]; i++) {
        shardlm_server_req r;
        shardlm_server_err e;
        cr_assert_eq(parse(format_cases[i].kind, format_cases[i].body, &r, &e), SHARDLM_EINPUT, "case %zu (%s)", i,
                     format_cases[i].body);
        cr_assert_eq(e.status, 400);
        char *json = shardlm_server_err_json(&e);
        cr_expect_str_eq(json, format_cases[i].json, "case %zu (%s)\n  got %s", i, format_cases[i].body, json);
        free(json);
        shardlm_server_req_free(&r);
    }
}

/* ---- what a chat template is given, and the text endpoints ---- */

Test(server_parse, chat_vars_carry_tools_calls_and_kwargs)
{
    shardlm_server_req r;
    shardlm_server_err e;
    const char *body =
        "{\"messages\":[{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\","
        "\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\": 1}\"}}]},{\"role\":\"tool\","
        "\"tool_call_id\":\"c1\",\"content\":\"2\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
        "\"add_generation_prompt\":false,\"chat_template_kwargs\":{\"enable_thinking\":false}}";
    cr_assert_eq(parse(CH, body, &r, &e), SHARDLM_OK, "%s", e.message);
    cr_assert_str_eq(r.chat_vars,
                     "{\"messages\":[{\"role\":\"system\",\"content\":\"ab\"},{\"role\":\"assistant\",\"content\":null,"
                     "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
                     "{\"x\":1}}}]},{\"role\":\"tool\",\"content\":\"2\",\"tool_call_id\":\"c1\"}],\"tools\":[{\"type\":"
                     "\"function\",\"function\":{\"name\":\"f\"}}],\"add_generation_prompt\":false,\"enable_thinking\":false}");
    shardlm_server_req_free(&r);
    cr_assert_eq(parse(CH, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}", &r, &e), SHARDLM_EINPUT);
    cr_assert_str_eq(e.param, "tools");
    shardlm_server_req_free(&r);
    cr_assert_eq(parse(CH, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":1}", &r, &e),
                 SHARDLM_EINPUT);
    cr_assert_str_eq(e.message, "chat_template_kwargs must be an object");
    shardlm_server_req_free(&r);
    cr_assert_eq(parse(CH, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{}}]}]}",
                       &r, &e), SHARDLM_EINPUT);
    cr_assert_str_eq(e.param, "messages[0].tool_calls");
    shardlm_server_req_free(&r);
}

static char *ask(const char *which, const char *body, const tok_fix *f, shardlm_server_err *e)
{
    memset(e, 0, sizeof *e);
    size_t n = strlen(body);
    if (!strcmp(which, "apply")) return shardlm_server_apply_template(body, n, f->tok, f->tpl, e);
    if (!strcmp(which, "tok")) return shardlm_server_tokenize(body, n, f->tok, f->tpl, 2048, e);
    return shardlm_server_detokenize(body, n, f->tok, e);
}

static void expect_answer(const char *which, const char *body, const tok_fix *f, const char *want)
{
    shardlm_server_err e;
    char *out = ask(which, body, f, &e);
    cr_assert_not_null(out, "%s: %s", body, e.message);
    cr_expect_str_eq(out, want, "for %s", body);
    free(out);
}

static void expect_refusal(const char *which, const char *body, const tok_fix *f, const char *param, const char *msg)
{
    shardlm_server_err e;
    char *out = ask(which, body, f, &e);
    cr_assert_null(out, "%s answered %s", body, out);
    cr_expect_eq(e.status, 400);
    cr_expect_str_eq(e.param, param, "for %s", body);
    cr_expect_str_eq(e.message, msg, "for %s", body);
}

Test(server_parse, apply_template_tokenize_detokenize)
{
    tok_fix f = load_tok();
    expect_answer("apply", "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}", &f,
                  "{\"prompt\":\"User: Hi\\nAssistant:\"}");
    expect_answer("apply", "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"add_generation_prompt\":false}", &f,
                  "{\"prompt\":\"User: Hi\\n\"}");
    expect_refusal("apply", "{\"messages\":[]}", &f, "messages", "messages must not be empty");
    /* llama.cpp's shape; stories260K.runc-prompt.ids.txt */
    expect_answer("tok", "{\"content\":\"Once upon a time\"}", &f, "{\"tokens\":[403,407,261,378]}");
    expect_answer("tok", "{\"content\":\"Once upon\",\"add_special\":true,\"with_pieces\":true}", &f,
                  "{\"tokens\":[{\"id\":1,\"piece\":\"\"},{\"id\":403,\"piece\":\" Once\"},{\"id\":407,\"piece\":\" upon\"}]}");
    /* vLLM's shapes: a prompt (BOS by default), or messages as chat feeds them */
    expect_answer("tok", "{\"prompt\":\"Once upon\"}", &f,
                  "{\"tokens\":[1,403,407],\"count\":3,\"max_model_len\":2048,\"token_strs\":null}");
    shardlm_server_err e;
    char *chat = ask("tok", "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}", &f, &e);
    char *plain = ask("tok", "{\"prompt\":\"User: Hi\\nAssistant:\"}", &f, &e);
    cr_assert(chat && plain);
    cr_expect_str_eq(chat, plain);
    free(chat);
    free(plain);
    expect_refusal("tok", "{\"content\":5}", &f, "content", "content must be a string");
    expect_refusal("tok", "{}", &f, "content", "content is required (or vLLM's prompt or messages)");
    expect_refusal("tok", "{\"content\":\"x\",\"add_special\":\"yes\"}", &f, "add_special", "add_special must be a boolean");
    expect_answer("detok", "{\"tokens\":[1,403,407]}", &f, "{\"content\":\"Once upon\",\"prompt\":\"Once upon\"}");
    expect_refusal("detok", "{\"tokens\":[1,99999]}", &f, "tokens", "tokens[1] is not a token id in [0, 512)");
    expect_refusal("detok", "{\"tokens\":\"x\"}", &f, "tokens", "tokens must be an array of token ids");
    expect_refusal("detok", "[]", &f, "", "the body must be a JSON object");
    shardlm_tokenizer_free(f.tok);
    shardlm_chat_template_free(f.tpl);
}

/* A template that needs string content renders a tool-calling turn sent
 * with content null (OpenAI's form); one that renders null keeps it. */
Test(server_parse, null_content_is_retried_as_empty)
{
    tok_fix f = load_tok();
    const char *src = "{% for m in messages %}{{ m.role }}:{{ 'x' in m.content }};{% endfor %}";
    shardlm_chat_template *tpl = NULL;
    cr_assert_eq(shardlm_chat_template_new(src, strlen(src), "t", &tpl), SHARDLM_OK);
    shardlm_server_req r;
    shardlm_server_err e;
    cr_assert_eq(parse(CH, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\",\"content\":null,"
                           "\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}", &r, &e), SHARDLM_OK);
    char *text = NULL;
    cr_assert_eq(shardlm_server_render_chat(&r, tpl, &text, NULL, &e), SHARDLM_OK, "%s", e.message);
    cr_expect_str_eq(text, "user:true;assistant:false;");
    free(text);
    shardlm_chat_template_free(tpl);
    src = "{{ messages[1].content is none }}";
    cr_assert_eq(shardlm_chat_template_new(src, strlen(src), "t", &tpl), SHARDLM_OK);
    cr_assert_eq(shardlm_server_render_chat(&r, tpl, &text, NULL, &e), SHARDLM_OK, "%s", e.message);
    cr_expect_str_eq(text, "true");
    free(text);
    shardlm_chat_template_free(tpl);
    shardlm_server_req_free(&r);
    shardlm_tokenizer_free(f.tok);
    shardlm_chat_template_free(f.tpl);
}
