/* json_schema_internal.h - what the JSON Schema -> GBNF files share: a
 * string builder, the compiler's context, and the generators for strings,
 * numbers and the shared primitive rules (json_schema_prim.c), for
 * patterns (json_regex.c), used by json_schema.c. */
#ifndef SHARDLM_JSON_SCHEMA_INTERNAL_H
#define SHARDLM_JSON_SCHEMA_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#define JS_NAME_MAX 160
#define JS_PATH_MAX 512
#define JS_MAX_DEPTH 64     /* schema nesting, $ref hops included */
#define JS_MAX_BOUND 10000  /* minLength/maxLength/minItems/maxItems */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} js_sb;

void js_sb_add(js_sb *b, const char *s);
void js_sb_addn(js_sb *b, const char *s, size_t n);
void js_sb_fmt(js_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A GBNF literal ("..." with escapes) of n bytes. */
void js_sb_lit(js_sb *b, const char *s, size_t n);

/* Shared primitive rules, emitted once at the end when used. */
enum {
    JP_WS = 1u << 0, JP_CHAR = 1u << 1, JP_STRING = 1u << 2, JP_INTEGER = 1u << 3, JP_NUMBER = 1u << 4,
    JP_BOOLEAN = 1u << 5, JP_NULL = 1u << 6, JP_VALUE = 1u << 7, JP_OBJECT = 1u << 8, JP_ARRAY = 1u << 9,
    JP_HEX = 1u << 10, JP_DATE = 1u << 11, JP_TIME = 1u << 12, JP_FRAC = 1u << 13,
};

typedef struct {
    char ptr[JS_PATH_MAX]; /* the $ref's pointer */
    char rule[JS_NAME_MAX];
} js_ref;

typedef struct {
    const cJSON *root;
    const char *name;  /* every rule's prefix */
    js_sb out;         /* finished rules */
    char *why;
    size_t cap;
    int failed;
    unsigned next_id;
    unsigned used;     /* JP_* */
    js_ref *refs;
    size_t n_refs, cap_refs;
} js_ctx;

/* Records the first error (SHARDLM_EINPUT) as "why"; printf-style. */
int js_fail(js_ctx *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A fresh rule name "NAME-hint-N" into out (JS_NAME_MAX). */
void js_new_name(js_ctx *j, const char *hint, char *out);
/* The name of a primitive rule (marks it used). */
const char *js_prim(js_ctx *j, unsigned which, char *buf);
/* Appends the primitive rules used so far. */
void js_emit_prims(js_ctx *j);

/* Strings: minLength/maxLength/format/pattern of the schema at path. The
 * expression (a GBNF sequence for the whole string, quotes included) goes
 * to e. */
int js_string_expr(js_ctx *j, const cJSON *s, const char *path, js_sb *e);
/* Integers and numbers with their bounds. */
int js_integer_expr(js_ctx *j, const cJSON *s, const char *path, js_sb *e);
int js_number_expr(js_ctx *j, const cJSON *s, const char *path, js_sb *e);

/* json_regex.c: an ECMAScript pattern -> a GBNF sequence for the content
 * of a JSON string (between the quotes) holding a match. */
int js_regex_expr(js_ctx *j, const char *pattern, const char *path, js_sb *e);

#endif
