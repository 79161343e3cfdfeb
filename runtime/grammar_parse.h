/* grammar_parse.h - the GBNF compiler's working state, shared by its two
 * halves: grammar_parse.c (text -> rules) and grammar_build.c (checks and
 * flattening into the compiled grammar). Private to those files. */
#ifndef SHARDLM_GRAMMAR_PARSE_H
#define SHARDLM_GRAMMAR_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "grammar_internal.h"

#define GP_MAX_ELEMS (1u << 20)
#define GP_MAX_REPEAT 10000
#define GP_MAX_NEST 200

enum { RK_USER = 0, RK_GROUP, RK_STAR, RK_OPT };

typedef struct {
    char *name;      /* NULL for generated rules */
    int defined, kind, nullable;
    size_t def_at;   /* the definition, or the construct a generated rule comes from */
    size_t ref_at;   /* the first reference */
    gr_u32s elems;   /* every alternative, each ended by GE_END */
} prule;

typedef struct {
    const char *src;
    size_t len, pos;
    char *why;
    size_t cap;
    int failed;
    prule *rules;
    size_t n_rules, cap_rules;
    uint32_t *names;  /* open addressing over named rules: id + 1, 0 empty */
    size_t names_cap, n_named;
    gr_range *ranges;
    size_t n_ranges, cap_ranges;
    gr_class *cls;
    size_t n_cls, cap_cls;
    uint32_t *cls_tab; /* open addressing: class id + 1 */
    size_t cls_tab_cap;
    size_t n_elems;
    int depth;
} gp;

/* Records the first error, naming the line and column of byte at; returns SHARDLM_EINPUT. */
int gp_fail(gp *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int gp_oom(gp *p);
/* Undefined names, left recursion and empty repetitions: each would make the machine loop. */
int gp_check_rules(gp *p);
/* The rules as one element array in g. */
int gp_flatten(gp *p, shardlm_grammar *g);

#endif
