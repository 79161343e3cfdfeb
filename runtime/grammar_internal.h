/* grammar_internal.h - what the grammar files share: the compiled form
 * (grammar_parse.c builds it), the pushdown machine with its interned
 * stacks, states and cached byte transitions (grammar.c), used by the
 * token mask (grammar_mask.c).
 *
 * Compiled form: every alternative of every rule is a run of elements in
 * one flat array, ended by GE_END. An element is a character class
 * (GE_CHAR) or a rule reference (GE_RULE). Repetitions and groups were
 * turned into generated rules by the parser.
 *
 * Machine: a stack is a persistent list of positions (interned nodes
 * sharing their tails): the top is a GE_CHAR position, the ones below are
 * where to continue when the rule above ends. Node 0 is the empty stack (the
 * grammar is complete). A state is a sorted set of stacks plus a pending
 * partial UTF-8 character; states are interned, so two ways into the same
 * state get the same id, and (state, byte) -> state is cached. The caches
 * are flushed when they outgrow GR_CACHE_BYTES; sequences keep an explicit
 * copy of their state to re-enter it afterwards. */
#ifndef SHARDLM_GRAMMAR_INTERNAL_H
#define SHARDLM_GRAMMAR_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "grammar.h"

enum { GE_END = 0, GE_CHAR = 1, GE_RULE = 2 };
#define GE_TYPE(e) ((e) & 3u)
#define GE_VAL(e) ((e) >> 2)
#define GE_MAKE(t, v) ((uint32_t)(t) | ((uint32_t)(v) << 2))

#define GR_MAX_CP 0x10FFFFu
#define GR_MAX_DEPTH 4096            /* stack nodes: nesting deeper than this is cut off */
#define GR_MAX_STACKS 4096           /* stacks in one state */
#define GR_MAX_EXPAND 200000         /* expansion steps for one transition */
#define GR_CACHE_BYTES (48u << 20)   /* machine caches before a flush */
#define GR_DEAD (-1)
#define GR_UNKNOWN (-2)
#define GR_DENSE_AFTER 24 /* lookups from a state before it gets a dense table */

typedef struct {
    uint32_t lo, hi;
} gr_range;

typedef struct {
    uint32_t first, n;  /* ranges [first, first + n), sorted, disjoint */
    uint64_t ascii[2];  /* members below 128 */
} gr_class;

/* A growable array of uint32 (the machine's pools). */
typedef struct {
    uint32_t *v;
    size_t n, cap;
} gr_u32s;

typedef struct {
    /* stack nodes */
    gr_u32s node_pos, node_parent, node_depth;
    uint32_t *node_tab; /* open addressing: node ids, 0 empty */
    size_t node_tab_cap;
    /* states */
    gr_u32s st_off, st_n, st_utf8, st_flags, st_pool;
    uint64_t *st_loop;  /* 2 words per state: ASCII bytes that lead back to the same state */
    size_t st_loop_cap;
    uint32_t *st_tab;   /* open addressing: state id + 1, 0 empty */
    size_t st_tab_cap;
    /* transitions */
    uint64_t *tr_key;   /* state << 8 | byte, UINT64_MAX empty */
    int32_t *tr_val;
    size_t tr_cap, tr_n;
    int32_t **dense;    /* per state: 256 next states (GR_UNKNOWN: not yet), once it is hot */
    uint16_t *hits;     /* per state: lookups, until it gets a dense table */
    size_t dense_cap, n_dense;
    uint32_t epoch;     /* bumped by a flush */
    /* scratch for building a state */
    gr_u32s scratch;
    size_t work;        /* expansion steps of the current transition */
    int overflow;       /* the current transition exceeded a limit */
    int oom;            /* an allocation failed (sticky until the next flush) */
} gr_machine;

/* State flags. */
#define GRS_ACCEPT 1u   /* holds the empty stack and no partial character */
#define GRS_ONLY 2u     /* holds nothing else */
#define GRS_LOOP 4u     /* st_loop is computed */
#define GRS_LOOP_HI 8u  /* every non-ASCII character leads back to the same state */
#define GRS_CAND 16u    /* some byte was seen to lead back to the same state */

/* A mask cached for one state (grammar_mask.c). */
typedef struct {
    uint32_t epoch;
    int32_t sid;
    uint64_t vocab; /* the vocab's uid; 0 while being computed */
    uint64_t *bits; /* in the vocab's trie order */
    size_t words;
    int count;
    uint64_t used;  /* LRU clock */
} gr_mask_entry;

#define GR_MASK_CACHE 16

struct shardlm_grammar {
    _Atomic int refs;
    uint32_t *el;
    uint32_t n_el;
    uint32_t *alt;      /* start of each alternative in el */
    uint32_t *rule_alt; /* n_rules + 1 offsets into alt */
    uint32_t n_rules, root;
    gr_class *cls;
    uint32_t n_cls;
    gr_range *ranges;
    uint32_t n_ranges;
    gr_machine m;
    uint32_t *start;    /* explicit copy of the start state */
    size_t n_start;
    gr_mask_entry masks[GR_MASK_CACHE];
    uint64_t mask_clock;
};

struct shardlm_grammar_state {
    shardlm_grammar *g;
    uint32_t epoch;
    int32_t sid;        /* valid while epoch == g->m.epoch */
    uint32_t *copy;     /* explicit form: utf8, n_stacks, then per stack: depth, positions top first */
    size_t n_copy, cap_copy;
    int lead;           /* the next token is the first after BOS */
    int ended;          /* an end-of-generation token was accepted */
    int dead_end;       /* the last mask allowed no token but the end ones */
};

static inline int gr_u32_push(gr_u32s *a, uint32_t x)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        void *v = realloc(a->v, cap * sizeof *a->v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

/* grammar_parse.c */
void gr_free_compiled(shardlm_grammar *g);

/* grammar.c */
int gr_class_has(const shardlm_grammar *g, uint32_t cls, uint32_t cp);
/* Whether the class holds any code point in [lo, hi]. */
int gr_class_meets(const shardlm_grammar *g, uint32_t cls, uint32_t lo, uint32_t hi);
int gr_machine_init(shardlm_grammar *g);
void gr_machine_free(gr_machine *m);
/* The state after one byte, or GR_DEAD. May grow the caches (never flushes). */
int32_t gr_step(shardlm_grammar *g, int32_t sid, uint8_t b);
/* The state id of s, re-entered after a flush; flushes first when the
 * caches are over budget. -1 when out of memory. */
int32_t gr_state_sid(shardlm_grammar_state *s);
/* Sets s to sid (and its explicit copy). */
int gr_state_set(shardlm_grammar_state *s, int32_t sid);
uint32_t gr_flags(const shardlm_grammar *g, int32_t sid);
static inline void gr_mark_candidate(shardlm_grammar *g, int32_t sid)
{
    g->m.st_flags.v[sid] |= GRS_CAND;
}
/* Computes GRS_LOOP info for sid when missing; returns the flags. */
uint32_t gr_loop_info(shardlm_grammar *g, int32_t sid);
static inline const uint64_t *gr_loop_ascii(const shardlm_grammar *g, int32_t sid)
{
    return g->m.st_loop + 2 * (size_t)sid;
}
size_t gr_machine_bytes(const gr_machine *m);

#endif
