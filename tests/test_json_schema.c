/* test_json_schema.c - JSON Schema -> grammar, keyword by keyword: the
 * documents each schema's grammar accepts and refuses (every refusal here
 * is a document the schema itself rejects, or one outside the bounded
 * forms the grammar writes, such as whitespace runs and number lengths),
 * and every unsupported keyword refused by name with its exact message. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/grammar.h"
#include "shardlm_common.h"

static shardlm_grammar *schema_grammar(const char *schema)
{
    cJSON *s = cJSON_Parse(schema);
    cr_assert_not_null(s, "bad test JSON: %s", schema);
    char why[512];
    shardlm_grammar *g = NULL;
    int rc = shardlm_json_schema_grammar(s, &g, why, sizeof why);
    cJSON_Delete(s);
    cr_assert_eq(rc, SHARDLM_OK, "%s: %s", schema, why);
    return g;
}

static int accepts(shardlm_grammar *g, const char *doc)
{
    shardlm_grammar_state *st;
    cr_assert_eq(shardlm_grammar_state_new(g, 0, &st), 0);
    int ok = shardlm_grammar_accept_bytes(st, doc, strlen(doc)) == SHARDLM_OK && shardlm_grammar_can_end(st);
    shardlm_grammar_state_free(st);
    return ok;
}

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static void expect(const char *schema, const char *const *yes, const char *const *no)
{
    shardlm_grammar *g = schema_grammar(schema);
    for (int i = 0; yes[i]; i++) cr_expect(accepts(g, yes[i]), "%s\n  should accept %s", schema, yes[i]);
    for (int i = 0; no[i]; i++) cr_expect(!accepts(g, no[i]), "%s\n  should refuse %s", schema, no[i]);
    shardlm_grammar_unref(g);
}

static void refused(const char *schema, const char *want)
{
    cJSON *s = cJSON_Parse(schema);
    cr_assert_not_null(s, "bad test JSON: %s", schema);
    char why[512] = "";
    shardlm_grammar *g = NULL;
    cr_expect_eq(shardlm_json_schema_grammar(s, &g, why, sizeof why), SHARDLM_EINPUT, "%s", schema);
    cr_expect_null(g);
    cr_expect_str_eq(why, want, "%s\n  got: %s", schema, why);
    cJSON_Delete(s);
}

Test(json_schema, primitive_types)
{
    expect("{\"type\":\"string\"}", L("\"\"", "\"a b\"", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\"", "\"\xc3\xa9\""),
           L("\"a", "\"\n\"", "\"\\x\"", "\"\\ud800\"", "1", "null"));
    expect("{\"type\":\"integer\"}", L("0", "-7", "1234567890123456"), L("01", "1.0", "1e3", "12345678901234567", "-"));
    expect("{\"type\":\"number\"}", L("0", "-1.5", "2.25e-10", "1E+99", "3"), L(".5", "1.", "1e", "1e100", "+1"));
    expect("{\"type\":\"boolean\"}", L("true", "false"), L("True", "1"));
    expect("{\"type\":\"null\"}", L("null"), L("nil", ""));
    expect("{\"type\":[\"string\",\"null\"]}", L("\"x\"", "null"), L("1"));
    expect("true", L("{\"a\":[1,\"x\",null,true,{}]}", "[]", "\"s\"", "-2.5"), L("", "[1,]", "{\"a\"}"));
    expect("{}", L("{}", "7"), L("{,}"));
}

Test(json_schema, objects_strict_order_and_required)
{
    const char *s = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"string\"},"
                    "\"c\":{\"type\":\"boolean\"}},\"required\":[\"b\"],\"additionalProperties\":false}";
    expect(s, L("{\"b\":\"x\"}", "{\"a\":1,\"b\":\"x\"}", "{\"b\":\"x\",\"c\":true}", "{\"a\":1,\"b\":\"\",\"c\":false}",
                "{ \"a\" : 1 ,\n  \"b\":\"x\" }"),
           L("{}", "{\"a\":1}", "{\"b\":\"x\",\"a\":1}", "{\"b\":\"x\",\"d\":1}", "{\"b\":\"x\",}", "{\"b\":1}"));
    /* every property optional: the empty object too */
    expect("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"null\"},\"b\":{\"type\":\"null\"}}}",
           L("{}", "{\"a\":null}", "{\"b\":null}", "{\"a\":null,\"b\":null}"), L("{,}", "{\"b\":null,\"a\":null}"));
    /* required without a property schema: any value */
    expect("{\"type\":\"object\",\"required\":[\"x\"]}", L("{\"x\":[1]}"), L("{}"));
    /* property names are written JSON-escaped */
    expect("{\"type\":\"object\",\"properties\":{\"q\\\"\\u00e9\":{\"const\":1}},\"required\":[\"q\\\"\\u00e9\"]}",
           L("{\"q\\\"\xc3\xa9\":1}"), L("{\"q\\\"\\u00e9\":1}"));
    expect("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}", L("{}", "{\"x\":1,\"y\":-2}"),
           L("{\"x\":\"1\"}"));
    expect("{\"type\":\"object\",\"additionalProperties\":false}", L("{}"), L("{\"x\":1}"));
    expect("{\"type\":\"object\"}", L("{}", "{\"k\":{\"n\":[null]}}"), L("[]", "{\"k\"}"));
}

Test(json_schema, whitespace_is_bounded)
{
    expect("{\"type\":\"array\",\"items\":{\"type\":\"integer\"}}",
           L("[1, 2]", "[\n  1,\n  2\n]", "[1,\n\t\t2]", "[1,\n                    2]"),
           L("[1,  2]", "[ 1]x", "[1,\n                     2]", " [1]", "[1] "));
}

Test(json_schema, arrays)
{
    expect("{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\"]},\"minItems\":1,\"maxItems\":3}",
           L("[\"a\"]", "[\"a\",\"b\",\"a\"]"), L("[]", "[\"a\",\"b\",\"a\",\"b\"]", "[\"c\"]"));
    expect("{\"type\":\"array\",\"minItems\":2}", L("[1,\"x\"]", "[1,2,3,4]"), L("[1]"));
    expect("{\"type\":\"array\",\"maxItems\":0}", L("[]"), L("[1]"));
    expect("{\"type\":\"array\",\"items\":false}", L("[]"), L("[null]"));
    expect("{\"type\":\"array\",\"uniqueItems\":false}", L("[1,1]"), L("{}"));
}

Test(json_schema, enum_const_anyof_oneof)
{
    expect("{\"enum\":[\"red\",1.5,null,{\"a\":[1]},true]}", L("\"red\"", "1.5", "null", "{\"a\":[1]}", "true"),
           L("\"blue\"", "1.50", "{\"a\": [1]}", "false"));
    expect("{\"type\":\"string\",\"enum\":[\"x\",2]}", L("\"x\""), L("2"));
    expect("{\"const\":\"only\"}", L("\"only\""), L("\"other\""));
    expect("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\",\"maxLength\":1}]}", L("5", "\"a\""),
           L("\"ab\"", "null"));
    expect("{\"oneOf\":[{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"a\"},\"x\":{\"type\":\"integer\"}},"
           "\"required\":[\"kind\",\"x\"]},{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"b\"}},"
           "\"required\":[\"kind\"]}]}",
           L("{\"kind\":\"a\",\"x\":1}", "{\"kind\":\"b\"}"), L("{\"kind\":\"c\"}", "{\"kind\":\"b\",\"x\":1}"));
    expect("{\"oneOf\":[{\"enum\":[1,2]},{\"enum\":[3]}]}", L("1", "3"), L("4"));
}

Test(json_schema, refs_and_recursion)
{
    const char *tree = "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":\"integer\"},"
                       "\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"},\"maxItems\":2}},"
                       "\"required\":[\"v\",\"kids\"]}},\"$ref\":\"#/$defs/node\"}";
    expect(tree, L("{\"v\":1,\"kids\":[]}", "{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"v\":3,\"kids\":[]}]}]}"),
           L("{\"v\":1}", "{\"v\":1,\"kids\":[{}]}"));
    expect("{\"definitions\":{\"n\":{\"type\":\"null\"}},\"type\":\"array\",\"items\":{\"$ref\":\"#/definitions/n\"}}",
           L("[null,null]"), L("[1]"));
    expect("{\"type\":\"object\",\"properties\":{\"self\":{\"anyOf\":[{\"$ref\":\"#\"},{\"type\":\"null\"}]}},"
           "\"required\":[\"self\"]}",
           L("{\"self\":null}", "{\"self\":{\"self\":null}}"), L("{\"self\":{}}"));
    expect("{\"properties\":{\"a~b/c\":{\"type\":\"integer\"}},\"type\":\"object\",\"required\":[\"a~b/c\"],"
           "\"additionalProperties\":false,\"$defs\":{\"x\":{\"$ref\":\"#/properties/a~0b~1c\"}}}",
           L("{\"a~b/c\":1}"), L("{}"));
}

Test(json_schema, string_lengths_formats_patterns)
{
    expect("{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", L("\"ab\"", "\"\xc3\xa9\xc3\xa9\xc3\xa9\"", "\"a\\nb\""),
           L("\"a\"", "\"abcd\""));
    expect("{\"type\":\"string\",\"format\":\"date\"}", L("\"2024-02-29\"", "\"2000-02-29\"", "\"1999-12-31\""),
           L("\"2023-02-29\"", "\"1900-02-29\"", "\"2023-04-31\"", "\"2023-13-01\"", "\"2023-1-01\""));
    expect("{\"type\":\"string\",\"format\":\"date-time\"}", L("\"2024-05-01T23:59:59Z\"", "\"2024-05-01T00:00:00.5+02:00\""),
           L("\"2024-05-01T24:00:00Z\"", "\"2024-05-01 10:00:00Z\"", "\"2024-05-01T10:00:00\""));
    expect("{\"type\":\"string\",\"format\":\"time\"}", L("\"10:20:30Z\""), L("\"10:60:00Z\""));
    expect("{\"type\":\"string\",\"format\":\"uuid\"}", L("\"123e4567-e89b-12d3-a456-426614174000\""),
           L("\"123e4567e89b12d3a456426614174000\""));
    expect("{\"type\":\"string\",\"format\":\"ipv4\"}", L("\"192.168.0.1\"", "\"255.255.255.255\"", "\"0.0.0.0\""),
           L("\"256.1.1.1\"", "\"01.1.1.1\"", "\"1.1.1\""));
    expect("{\"type\":\"string\",\"format\":\"email\"}", L("\"a.b+c@example.com\""), L("\"a@b\"", "\"@x.com\""));
    expect("{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-\\\\d{3,4}$\"}", L("\"AB-123\"", "\"XY-0000\""),
           L("\"AB-12\"", "\"ab-123\"", "\" AB-123\"", "\"AB-12345\""));
    expect("{\"type\":\"string\",\"pattern\":\"cat|dog\"}", L("\"a cat\"", "\"dogs\"", "\"cat\""), L("\"cow\""));
    expect("{\"type\":\"string\",\"pattern\":\"^(?:a|bc)+\\\\.$\"}", L("\"abca.\"", "\"bc.\""), L("\"b.\"", "\".\""));
    expect("{\"type\":\"string\",\"pattern\":\"^[^\\\\s\\\"]*$\"}", L("\"abc\"", "\"\""), L("\"a b\"", "\"a\\\"\""));
    expect("{\"type\":\"string\",\"pattern\":\"^a.c$\"}", L("\"abc\"", "\"a\\\"c\"", "\"a\xc3\xa9" "c\""),
           L("\"a\\nc\"", "\"ac\""));
    expect("{\"type\":\"string\",\"pattern\":\"^\\\\w+\\\\\\\\$\"}", L("\"ab_1\\\\\""), L("\"ab\""));
}

Test(json_schema, integer_and_number_bounds)
{
    expect("{\"type\":\"integer\",\"minimum\":0,\"maximum\":255}", L("0", "9", "10", "99", "100", "199", "250", "255"),
           L("-1", "256", "300", "1000", "00"));
    expect("{\"type\":\"integer\",\"minimum\":-20,\"exclusiveMaximum\":7}", L("-20", "-9", "0", "6"),
           L("-21", "7", "-0x"));
    expect("{\"type\":\"integer\",\"exclusiveMinimum\":99}", L("100", "123456789"), L("99", "0", "-5"));
    expect("{\"type\":\"integer\",\"maximum\":-3}", L("-3", "-100"), L("-2", "0", "5"));
    expect("{\"type\":\"integer\",\"minimum\":2.5,\"maximum\":4.9}", L("3", "4"), L("2", "5"));
    expect("{\"type\":\"number\",\"minimum\":0,\"maximum\":1}", L("0", "0.5", "1", "1.000", "0.999"),
           L("1.5", "-0.1", "1.01", "2", "1e-3"));
    expect("{\"type\":\"number\",\"minimum\":-1,\"maximum\":2}", L("-1", "-0.5", "1.25", "2.0"), L("-1.5", "2.5"));
    expect("{\"type\":\"number\",\"minimum\":10}", L("10", "10.5", "9999"), L("9.99", "-10"));
}

Test(json_schema, types_inferred_from_keywords)
{
    expect("{\"maxLength\":2}", L("\"ab\""), L("\"abc\"", "1"));
    expect("{\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]}", L("{\"a\":1}"), L("{}", "1"));
}

Test(json_schema, annotations_are_accepted)
{
    expect("{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":\"x\",\"title\":\"t\","
           "\"description\":\"d\",\"$comment\":\"c\",\"examples\":[1],\"default\":1,\"deprecated\":false,"
           "\"readOnly\":true,\"writeOnly\":false,\"type\":\"integer\"}",
           L("1"), L("\"1\""));
}

Test(json_schema, unsupported_keywords_are_refused_by_name)
{
    refused("{\"type\":\"object\",\"patternProperties\":{}}", "\"patternProperties\" at # is not supported");
    refused("{\"type\":\"object\",\"properties\":{\"t\":{\"type\":\"array\",\"uniqueItems\":true}}}",
            "\"uniqueItems\": true at #/properties/t is not supported");
    refused("{\"allOf\":[{}]}", "\"allOf\" at # is not supported");
    refused("{\"not\":{}}", "\"not\" at # is not supported");
    refused("{\"if\":{},\"then\":{}}", "\"if\" at # is not supported");
    refused("{\"type\":\"object\",\"minProperties\":1}", "\"minProperties\" at # is not supported");
    refused("{\"type\":\"array\",\"prefixItems\":[{}]}", "\"prefixItems\" at # is not supported");
    refused("{\"type\":\"array\",\"contains\":{}}", "\"contains\" at # is not supported");
    refused("{\"type\":\"array\",\"items\":[{}]}", "\"items\" as an array (a tuple) at # is not supported");
    refused("{\"type\":\"number\",\"multipleOf\":2}", "\"multipleOf\" at # is not supported");
    refused("{\"type\":\"number\",\"minimum\":0.5}",
            "\"minimum\": 0.5 at # is not supported for numbers (integer-valued minimum and maximum are)");
    refused("{\"type\":\"number\",\"exclusiveMinimum\":0}",
            "\"exclusiveMinimum\": 0 at # is not supported for numbers (integer-valued minimum and maximum are)");
    refused("{\"type\":\"string\",\"format\":\"uri\"}",
            "\"format\": \"uri\" at # is not supported (date, time, date-time, uuid, ipv4 and email are)");
    refused("{\"type\":\"string\",\"pattern\":\"a\",\"maxLength\":3}",
            "\"pattern\" together with \"maxLength\" at # is not supported");
    refused("{\"type\":\"string\",\"pattern\":\"(?=a)\"}", "\"pattern\" at #: a lookahead or lookbehind is not supported");
    refused("{\"type\":\"string\",\"pattern\":\"(a)\\\\1\"}", "\"pattern\" at #: a back reference is not supported");
    refused("{\"type\":\"string\",\"pattern\":\"\\\\bx\"}", "\"pattern\" at #: the word boundary \\b is not supported");
    refused("{\"type\":\"string\",\"pattern\":\"\\\\p{L}\"}",
            "\"pattern\" at #: a Unicode property escape (\\p{...}) is not supported");
    refused("{\"type\":\"string\",\"pattern\":\"a^b\"}",
            "\"pattern\" at #: '^' or '$' other than at the very start or end of the pattern is not supported");
    refused("{\"type\":\"string\",\"pattern\":\"^a|b$\"}",
            "\"pattern\" at #: '^' or '$' next to a top-level '|' (put the alternatives in a group) is not supported");
    refused("{\"type\":\"string\",\"pattern\":\"(a*)*\"}",
            "\"pattern\" at #: an unbounded repetition of something that can match empty text is not supported");
    refused("{\"$ref\":\"http://example.com/s.json\"}",
            "\"$ref\": \"http://example.com/s.json\" at # refers to another document, which is not supported");
    refused("{\"$ref\":\"#/$defs/missing\"}", "\"$ref\": \"#/$defs/missing\" at # does not resolve");
    refused("{\"$ref\":\"#\"}", "the schema reaches itself through \"$ref\" before any JSON text");
    refused("{\"$defs\":{\"a\":{\"type\":\"null\"}},\"$ref\":\"#/$defs/a\",\"maxLength\":1}",
            "\"maxLength\" next to \"$ref\" at # is not supported");
    refused("{\"enum\":[\"a\"],\"maxLength\":1}", "\"maxLength\" next to \"enum\" at # is not supported");
    refused("{\"type\":\"integer\",\"enum\":[\"a\"]}", "\"enum\" at # has no value of the schema's \"type\"");
    refused("{\"oneOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}",
            "\"oneOf\" at #: branches 0 and 1 may both match, so a document could fail oneOf (use anyOf, or tell them "
            "apart by type, const or enum)");
    refused("{\"type\":\"strnig\"}",
            "\"type\" at # must be one of object, array, string, integer, number, boolean, null (or a list of them)");
    refused("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\",\"maxLength\":20000}}}",
            "\"maxLength\" at #/properties/a is 20000; at most 10000 is supported");
    refused("{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "\"minItems\" at # is greater than \"maxItems\"");
    refused("{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "the bounds at # admit no value");
    refused("{\"type\":\"object\",\"properties\":{\"x\":false},\"required\":[\"x\"]}",
            "the schema false at #/properties/x matches nothing");
    refused("{\"properties\":{\"a\":{\"$id\":\"y\"}}}", "\"$id\" at #/properties/a is not supported (only at the root)");
    refused("{\"nullable\":true}", "\"nullable\" at # is not supported");
}

Test(json_schema, rules_embed_under_a_name)
{
    /* tool calling composes several schemas in one grammar */
    cJSON *a = cJSON_Parse("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}");
    cJSON *b = cJSON_Parse("{\"type\":\"integer\"}");
    char *buf = strdup("root ::= \"<call>\" ( weather | count ) \"</call>\"\n"), why[256];
    size_t len = strlen(buf);
    cr_assert_eq(shardlm_json_schema_gbnf(a, "weather", &buf, &len, why, sizeof why), 0, "%s", why);
    cr_assert_eq(shardlm_json_schema_gbnf(b, "count", &buf, &len, why, sizeof why), 0, "%s", why);
    shardlm_grammar *g;
    cr_assert_eq(shardlm_grammar_compile(buf, len, &g, why, sizeof why), 0, "%s\n%s", why, buf);
    cr_expect(accepts(g, "<call>{\"city\":\"Oslo\"}</call>"));
    cr_expect(accepts(g, "<call>42</call>"));
    cr_expect(!accepts(g, "<call>{}</call>"));
    shardlm_grammar_unref(g);
    free(buf);
    cJSON_Delete(a);
    cJSON_Delete(b);
}
