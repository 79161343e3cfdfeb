/* server_format.c - the request fields that constrain the output:
 * response_format ({"type": "text" | "json_object" | "json_schema"}) and
 * llama.cpp's "grammar" (GBNF text). Both compile here, on the HTTP thread,
 * into one shardlm_grammar that every choice of the request shares; any
 * problem (an unknown field, a schema keyword the compiler refuses, a GBNF
 * syntax error with its line and column) is a 400 before the engine sees
 * the request. */
#include <stdio.h>
#include <string.h>

#include "grammar.h"
#include "server_parse.h"
#include "shardlm_common.h"

#define INVALID "invalid_request_error"

static int unknown_keys(const cJSON *o, const char *const *allowed, const char *where, shardlm_server_err *e)
{
    const cJSON *k;
    cJSON_ArrayForEach(k, o) {
        int ok = 0;
        for (int i = 0; allowed[i]; i++) ok |= !strcmp(k->string, allowed[i]);
        if (!ok)
            return shardlm_server_err_set(e, 400, INVALID, NULL, "response_format", "%s.%.64s is not supported",
                                          where, k->string);
    }
    return SHARDLM_OK;
}

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

static int schema_grammar(const cJSON *schema, shardlm_server_req *r, shardlm_server_err *e)
{
    char why[512];
    int rc = shardlm_json_schema_grammar(schema, &r->grammar, why, sizeof why);
    if (rc == SHARDLM_EINPUT)
        return shardlm_server_err_set(e, 400, INVALID, NULL, "response_format", "response_format.json_schema.schema: %s",
                                      why);
    return rc;
}

static int parse_json_schema(const cJSON *rf, shardlm_server_req *r, shardlm_server_err *e)
{
    static const char *const keys[] = {"name", "description", "schema", "strict", NULL};
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");
    if (!cJSON_IsObject(js))
        return shardlm_server_err_set(e, 400, INVALID, NULL, "response_format",
                                      "response_format.json_schema must be an object with name and schema");
    if (unknown_keys(js, keys, "response_format.json_schema", e)) return SHARDLM_EINPUT;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(js, "name");
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(js, "description");
    const cJSON *strict = cJSON_GetObjectItemCaseSensitive(js, "strict");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(js, "schema");
    if (!cJSON_IsString(name) || !valid_name(name->valuestring))
        return shardlm_server_err_set(e, 400, INVALID, NULL, "response_format",
                                      "response_format.json_schema.name must be 1 to 64 letters, digits, '_' or '-'");
    if (desc && !cJSON_IsString(desc) && !cJSON_IsNull(desc))
        return shardlm_server_err_set(e, 400, INVALID, NULL, "response_format",
                                      "response_format.json_schema.description must be a string");
    if (strict && !cJSON_IsBool(strict) && !cJSON_IsNull(strict))
        return shardlm_server_err_set(e, 400, INVALID, NULL, "response_format",
                                      "response_format.json_schema.strict must be a boolean");
    if (!schema || (!cJSON_IsObject(schema) && !cJSON_IsBool(schema)))
        return shardlm_server_err_set(e, 400, INVALID, NULL, "response_format",
                                      "response_format.json_schema.schema must be a JSON Schema object");
    return schema_grammar(schema, r, e);
}

/* response_format: leaves r->grammar NULL for "text". */
static int parse_response_format(const cJSON *rf, shardlm_server_req *r, shardlm_server_err *e, int *constrained)
{
    static const char *const plain[] = {"type", NULL}, *const with_schema[] = {"type", "json_schema", NULL};
    if (!cJSON_IsObject(rf))
        return shardlm_server_err_set(e, 400, INVALID, NULL, "response_format", "response_format must be an object");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rf, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    if (strcmp(t, "text") && strcmp(t, "json_object") && strcmp(t, "json_schema"))
        return shardlm_server_err_set(e, 400, INVALID, NULL, "response_format",
                                      "response_format.type must be one of text, json_object, json_schema");
    int schema = !strcmp(t, "json_schema");
    if (unknown_keys(rf, schema ? with_schema : plain, "response_format", e)) return SHARDLM_EINPUT;
    *constrained = strcmp(t, "text") != 0;
    if (!strcmp(t, "json_object")) return schema_grammar(NULL, r, e);
    return schema ? parse_json_schema(rf, r, e) : SHARDLM_OK;
}

int shardlm_server_parse_format(const cJSON *o, shardlm_server_req *r, shardlm_server_err *e)
{
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(o, "response_format");
    const cJSON *gr = cJSON_GetObjectItemCaseSensitive(o, "grammar");
    int constrained = 0, rc;
    if (gr && !cJSON_IsNull(gr) && !cJSON_IsString(gr))
        return shardlm_server_err_set(e, 400, INVALID, NULL, "grammar", "grammar must be a string (GBNF)");
    if (rf && !cJSON_IsNull(rf) && (rc = parse_response_format(rf, r, e, &constrained))) return rc;
    if (!cJSON_IsString(gr)) return SHARDLM_OK;
    if (constrained)
        return shardlm_server_err_set(e, 400, INVALID, NULL, "grammar",
                                      "grammar cannot be combined with a response_format of type json_object or "
                                      "json_schema");
    char why[512];
    rc = shardlm_grammar_compile(gr->valuestring, strlen(gr->valuestring), &r->grammar, why, sizeof why);
    if (rc == SHARDLM_EINPUT) return shardlm_server_err_set(e, 400, INVALID, NULL, "grammar", "grammar: %s", why);
    return rc;
}
