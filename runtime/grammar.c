/* grammar.c - the pushdown machine over a compiled grammar (the layout is
 * in grammar_internal.h): interned stack nodes and states, the byte step
 * with its cache, partial UTF-8 characters, and a sequence's state with
 * the explicit copy that survives a cache flush.
 *
 * A byte either completes a character, which advances every stack whose top
 * class holds it (and expands what follows until each stack again has a
 * character on top), or starts/continues one, which keeps only the stacks
 * whose top class meets the code points still possible. So the machine
 * never lets through malformed UTF-8, and a dead end shows at the first
 * byte that causes it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"
#include "shardlm_common.h"

/* ---- hashing ---- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t node_hash(uint32_t pos, uint32_t parent)
{
    return mix64((uint64_t)pos << 32 | parent);
}

static uint64_t state_hash(uint32_t utf8, const uint32_t *v, uint32_t n)
{
    uint64_t h = mix64(utf8 ^ ((uint64_t)n << 40));
    for (uint32_t i = 0; i < n; i++) h = mix64(h ^ v[i]);
    return h;
}

/* ---- character classes ---- */

int gr_class_has(const shardlm_grammar *g, uint32_t cls, uint32_t cp)
{
    const gr_class *c = &g->cls[cls];
    if (cp < 128) return (int)(c->ascii[cp >> 6] >> (cp & 63) & 1);
    return gr_class_meets(g, cls, cp, cp);
}

int gr_class_meets(const shardlm_grammar *g, uint32_t cls, uint32_t lo, uint32_t hi)
{
    const gr_class *c = &g->cls[cls];
    const gr_range *r = g->ranges + c->first;
    size_t a = 0, b = c->n; /* the first range with r.hi >= lo */
    while (a < b) {
        size_t m = (a + b) / 2;
        if (r[m].hi < lo) a = m + 1;
        else b = m;
    }
    return a < c->n && r[a].lo <= hi;
}

/* ---- stack nodes ---- */

static int node_tab_grow(gr_machine *m)
{
    size_t cap = m->node_tab_cap ? m->node_tab_cap * 2 : 1024;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t) return -1;
    for (size_t id = 1; id < m->node_pos.n; id++) {
        size_t j = node_hash(m->node_pos.v[id], m->node_parent.v[id]) & (cap - 1);
        while (t[j]) j = (j + 1) & (cap - 1);
        t[j] = (uint32_t)id;
    }
    free(m->node_tab);
    m->node_tab = t;
    m->node_tab_cap = cap;
    return 0;
}

/* The node (pos, parent); 0 is never returned (it is the empty stack).
 * -1: deeper than GR_MAX_DEPTH, or out of memory (m->oom). */
static int64_t node_intern(gr_machine *m, uint32_t pos, uint32_t parent)
{
    uint32_t depth = parent ? m->node_depth.v[parent] + 1 : 1;
    if (depth > GR_MAX_DEPTH) return -1;
    if ((m->node_pos.n + 1) * 2 > m->node_tab_cap && node_tab_grow(m)) {
        m->oom = 1;
        return -1;
    }
    size_t mask = m->node_tab_cap - 1, j = node_hash(pos, parent) & mask;
    for (; m->node_tab[j]; j = (j + 1) & mask) {
        uint32_t id = m->node_tab[j];
        if (m->node_pos.v[id] == pos && m->node_parent.v[id] == parent) return id;
    }
    uint32_t id = (uint32_t)m->node_pos.n;
    if (gr_u32_push(&m->node_pos, pos) || gr_u32_push(&m->node_parent, parent) ||
        gr_u32_push(&m->node_depth, depth)) {
        m->oom = 1;
        return -1;
    }
    m->node_tab[j] = id;
    return id;
}

/* ---- states ---- */

static int st_tab_grow(gr_machine *m)
{
    size_t cap = m->st_tab_cap ? m->st_tab_cap * 2 : 256;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t) return -1;
    for (size_t id = 0; id < m->st_n.n; id++) {
        size_t j = state_hash(m->st_utf8.v[id], m->st_pool.v + m->st_off.v[id], m->st_n.v[id]) & (cap - 1);
        while (t[j]) j = (j + 1) & (cap - 1);
        t[j] = (uint32_t)id + 1;
    }
    free(m->st_tab);
    m->st_tab = t;
    m->st_tab_cap = cap;
    return 0;
}

static int32_t state_intern(gr_machine *m, uint32_t utf8, const uint32_t *v, uint32_t n)
{
    if ((m->st_n.n + 1) * 2 > m->st_tab_cap && st_tab_grow(m)) goto oom;
    size_t mask = m->st_tab_cap - 1, j = state_hash(utf8, v, n) & mask;
    for (; m->st_tab[j]; j = (j + 1) & mask) {
        uint32_t id = m->st_tab[j] - 1;
        if (m->st_utf8.v[id] == utf8 && m->st_n.v[id] == n &&
            !memcmp(m->st_pool.v + m->st_off.v[id], v, n * sizeof *v))
            return (int32_t)id;
    }
    uint32_t id = (uint32_t)m->st_n.n;
    if (m->st_loop_cap < 2 * (size_t)(id + 1)) {
        size_t cap = m->st_loop_cap ? m->st_loop_cap * 2 : 512;
        uint64_t *l = realloc(m->st_loop, cap * sizeof *l);
        if (!l) goto oom;
        m->st_loop = l;
        m->st_loop_cap = cap;
    }
    uint32_t flags = utf8 == 0 && n && v[0] == 0 ? GRS_ACCEPT : 0;
    if (flags && n == 1) flags |= GRS_ONLY;
    if (gr_u32_push(&m->st_off, (uint32_t)m->st_pool.n)) goto oom;
    for (uint32_t i = 0; i < n; i++)
        if (gr_u32_push(&m->st_pool, v[i])) goto oom;
    if (gr_u32_push(&m->st_n, n) || gr_u32_push(&m->st_utf8, utf8) || gr_u32_push(&m->st_flags, flags)) goto oom;
    m->st_loop[2 * id] = m->st_loop[2 * id + 1] = 0;
    m->st_tab[j] = id + 1;
    return (int32_t)id;
oom: /* the arrays may now disagree: nothing runs until the next flush */
    m->oom = 1;
    return GR_DEAD;
}

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Interns the stacks gathered in scratch (any order, duplicates allowed). */
static int32_t finish_state(gr_machine *m, uint32_t utf8)
{
    gr_u32s *s = &m->scratch;
    if (m->overflow || m->oom || !s->n) return GR_DEAD;
    if (s->n <= 16) { /* the usual handful: insertion sort beats qsort's overhead */
        for (size_t i = 1; i < s->n; i++) {
            uint32_t x = s->v[i];
            size_t k = i;
            for (; k > 0 && s->v[k - 1] > x; k--) s->v[k] = s->v[k - 1];
            s->v[k] = x;
        }
    } else {
        qsort(s->v, s->n, sizeof *s->v, u32_cmp);
    }
    size_t k = 1;
    for (size_t i = 1; i < s->n; i++)
        if (s->v[i] != s->v[k - 1]) s->v[k++] = s->v[i];
    if (k > GR_MAX_STACKS) return GR_DEAD;
    return state_intern(m, utf8, s->v, (uint32_t)k);
}

/* ---- expansion ---- */

/* Adds to scratch every stack that continues at pos, then parent, with a
 * character on top (the empty stack when everything is done). */
static void expand(shardlm_grammar *g, uint32_t pos, uint32_t parent)
{
    gr_machine *m = &g->m;
    for (;;) {
        if (++m->work > GR_MAX_EXPAND) {
            m->overflow = 1;
            return;
        }
        uint32_t e = g->el[pos];
        if (GE_TYPE(e) == GE_END) {
            if (!parent) {
                if (gr_u32_push(&m->scratch, 0)) m->oom = 1;
                return;
            }
            pos = m->node_pos.v[parent];
            parent = m->node_parent.v[parent];
            continue;
        }
        if (GE_TYPE(e) == GE_CHAR) {
            int64_t id = node_intern(m, pos, parent);
            if (id > 0 && gr_u32_push(&m->scratch, (uint32_t)id)) m->oom = 1;
            return;
        }
        uint32_t ret = parent, r = GE_VAL(e);
        if (GE_TYPE(g->el[pos + 1]) != GE_END) { /* not a tail call: remember where to go on */
            int64_t id = node_intern(m, pos + 1, parent);
            if (id < 0) return;
            ret = (uint32_t)id;
        }
        for (uint32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1] && !m->overflow; a++) expand(g, g->alt[a], ret);
        return;
    }
}

static void scratch_reset(gr_machine *m)
{
    m->scratch.n = 0;
    m->work = 0;
    m->overflow = 0;
}

/* The state after the whole character cp. */
static int32_t advance(shardlm_grammar *g, int32_t sid, uint32_t cp)
{
    gr_machine *m = &g->m;
    scratch_reset(m);
    uint32_t off = m->st_off.v[sid], n = m->st_n.v[sid];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t t = m->st_pool.v[off + i];
        if (!t) continue; /* the empty stack consumes nothing */
        uint32_t pos = m->node_pos.v[t];
        if (gr_class_has(g, GE_VAL(g->el[pos]), cp)) expand(g, pos + 1, m->node_parent.v[t]);
    }
    return finish_state(m, 0);
}

/* A partial character: utf8 packs acc << 8 | len << 2 | need (need >= 1,
 * so a partial state never packs to 0). */
static uint32_t utf8_pack(uint32_t acc, uint32_t len, uint32_t need)
{
    return acc << 8 | len << 2 | need;
}

/* Keeps the stacks of sid whose top class meets the code points a
 * character that starts with these bits can still be. */
static int32_t narrow(shardlm_grammar *g, int32_t sid, uint32_t acc, uint32_t len, uint32_t need)
{
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000}, max[5] = {0, 0, 0x7FF, 0xFFFF, GR_MAX_CP};
    uint32_t lo = acc << (6 * need), hi = lo | ((1u << (6 * need)) - 1);
    if (lo < min[len]) lo = min[len];
    if (hi > max[len]) hi = max[len];
    if (lo > hi) return GR_DEAD;
    /* the part outside the surrogates, as one or two intervals */
    uint32_t a_lo = lo, a_hi = hi < 0xD800 ? hi : 0xD7FF, b_lo = lo > 0xDFFF ? lo : 0xE000, b_hi = hi;
    int has_a = a_lo <= a_hi && a_lo < 0xD800, has_b = b_lo <= b_hi;
    if (!has_a && !has_b) return GR_DEAD;
    gr_machine *m = &g->m;
    scratch_reset(m);
    uint32_t off = m->st_off.v[sid], n = m->st_n.v[sid];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t t = m->st_pool.v[off + i];
        if (!t) continue;
        uint32_t cls = GE_VAL(g->el[m->node_pos.v[t]]);
        if ((has_a && gr_class_meets(g, cls, a_lo, a_hi)) || (has_b && gr_class_meets(g, cls, b_lo, b_hi)))
            if (gr_u32_push(&m->scratch, t)) m->oom = 1;
    }
    return finish_state(m, utf8_pack(acc, len, need));
}

static int32_t step_uncached(shardlm_grammar *g, int32_t sid, uint8_t b)
{
    uint32_t u = g->m.st_utf8.v[sid];
    if (!u) {
        if (b < 0x80) return advance(g, sid, b);
        uint32_t len = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
        if (!len) return GR_DEAD;
        return narrow(g, sid, b & (0x7Fu >> len), len, len - 1);
    }
    if ((b & 0xC0) != 0x80) return GR_DEAD;
    uint32_t acc = (u >> 8) << 6 | (b & 0x3Fu), len = (u >> 2) & 7, need = (u & 3) - 1;
    if (need) return narrow(g, sid, acc, len, need);
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (acc < min[len] || acc > GR_MAX_CP || (acc >= 0xD800 && acc <= 0xDFFF)) return GR_DEAD;
    return advance(g, sid, acc);
}

/* ---- the transition cache ---- */

static int tr_grow(gr_machine *m)
{
    size_t cap = m->tr_cap ? m->tr_cap * 2 : 4096;
    uint64_t *k = malloc(cap * sizeof *k);
    int32_t *v = malloc(cap * sizeof *v);
    if (!k || !v) {
        free(k);
        free(v);
        return -1;
    }
    memset(k, 0xff, cap * sizeof *k);
    for (size_t i = 0; i < m->tr_cap; i++) {
        if (m->tr_key[i] == UINT64_MAX) continue;
        size_t j = mix64(m->tr_key[i]) & (cap - 1);
        while (k[j] != UINT64_MAX) j = (j + 1) & (cap - 1);
        k[j] = m->tr_key[i];
        v[j] = m->tr_val[i];
    }
    free(m->tr_key);
    free(m->tr_val);
    m->tr_key = k;
    m->tr_val = v;
    m->tr_cap = cap;
    return 0;
}

/* A hot state's transitions move from the hash table to a dense array
 * (the trie walk asks the same few states over and over). */
static void dense_note(gr_machine *m, int32_t sid)
{
    if ((size_t)sid >= m->dense_cap) {
        size_t cap = m->dense_cap ? m->dense_cap * 2 : 1024;
        while (cap <= (size_t)sid) cap *= 2;
        int32_t **d = realloc(m->dense, cap * sizeof *d);
        uint16_t *h = d ? realloc(m->hits, cap * sizeof *h) : NULL;
        if (d) m->dense = d;
        if (!h) return; /* no room: it simply stays in the hash table */
        m->hits = h;
        memset(m->dense + m->dense_cap, 0, (cap - m->dense_cap) * sizeof *d);
        memset(m->hits + m->dense_cap, 0, (cap - m->dense_cap) * sizeof *h);
        m->dense_cap = cap;
    }
    if (m->dense[sid] || ++m->hits[sid] < GR_DENSE_AFTER) return;
    int32_t *t = malloc(256 * sizeof *t);
    if (!t) return;
    for (int i = 0; i < 256; i++) t[i] = GR_UNKNOWN;
    m->dense[sid] = t;
    m->n_dense++;
}

int32_t gr_step(shardlm_grammar *g, int32_t sid, uint8_t b)
{
    gr_machine *m = &g->m;
    if (m->oom) return GR_DEAD;
    int32_t *d = (size_t)sid < m->dense_cap ? m->dense[sid] : NULL;
    if (d && d[b] != GR_UNKNOWN) return d[b];
    uint64_t key = (uint64_t)(uint32_t)sid << 8 | b;
    if (m->tr_cap) {
        size_t mask = m->tr_cap - 1, j = mix64(key) & mask;
        for (; m->tr_key[j] != UINT64_MAX; j = (j + 1) & mask)
            if (m->tr_key[j] == key) {
                if (d) d[b] = m->tr_val[j];
                else dense_note(m, sid);
                return m->tr_val[j];
            }
    }
    int32_t next = step_uncached(g, sid, b);
    if (m->oom) return GR_DEAD; /* not cached: a later try may have memory */
    if (d) d[b] = next;
    if ((m->tr_n + 1) * 2 > m->tr_cap && tr_grow(m)) {
        m->oom = 1;
        return next;
    }
    size_t mask = m->tr_cap - 1, j = mix64(key) & mask;
    while (m->tr_key[j] != UINT64_MAX) j = (j + 1) & mask;
    m->tr_key[j] = key;
    m->tr_val[j] = next;
    m->tr_n++;
    return next;
}

uint32_t gr_flags(const shardlm_grammar *g, int32_t sid)
{
    return g->m.st_flags.v[sid];
}

/* ---- loops: what leads a state back to itself ---- */

static int loops_on_high(shardlm_grammar *g, int32_t sid)
{
    gr_machine *m = &g->m;
    uint32_t cuts[258];
    size_t nc = 0;
    cuts[nc++] = 0x80;
    uint32_t off = m->st_off.v[sid], n = m->st_n.v[sid];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t t = m->st_pool.v[off + i];
        if (!t) continue;
        const gr_class *c = &g->cls[GE_VAL(g->el[m->node_pos.v[t]])];
        for (uint32_t k = 0; k < c->n; k++) {
            gr_range r = g->ranges[c->first + k];
            if (r.hi < 0x80) continue;
            if (nc + 2 > sizeof cuts / sizeof cuts[0]) return 0;
            if (r.lo > 0x80) cuts[nc++] = r.lo;
            if (r.hi < GR_MAX_CP) cuts[nc++] = r.hi + 1;
        }
    }
    qsort(cuts, nc, sizeof *cuts, u32_cmp);
    /* state ids can move the pool: re-read nothing from it below */
    for (size_t i = 0; i < nc; i++) {
        if (i && cuts[i] == cuts[i - 1]) continue;
        uint32_t cp = cuts[i], end = i + 1 < nc ? cuts[i + 1] - 1 : GR_MAX_CP;
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xE000;
        if (cp > end) continue;
        if (advance(g, sid, cp) != sid) return 0;
    }
    return 1;
}

uint32_t gr_loop_info(shardlm_grammar *g, int32_t sid)
{
    gr_machine *m = &g->m;
    uint32_t f = m->st_flags.v[sid];
    if (f & GRS_LOOP) return f;
    uint64_t w[2] = {0, 0};
    int high = 0;
    if (!m->st_utf8.v[sid]) {
        for (uint32_t b = 0; b < 128; b++)
            if (gr_step(g, sid, (uint8_t)b) == sid) w[b >> 6] |= 1ull << (b & 63);
        high = loops_on_high(g, sid);
    }
    if (m->oom) return f;
    m->st_loop[2 * sid] = w[0];
    m->st_loop[2 * sid + 1] = w[1];
    f |= GRS_LOOP | (high ? GRS_LOOP_HI : 0);
    m->st_flags.v[sid] = f;
    return f;
}

/* ---- the machine's life ---- */

size_t gr_machine_bytes(const gr_machine *m)
{
    return (m->node_pos.cap * 3 + m->st_off.cap * 4 + m->st_pool.cap + m->node_tab_cap + m->st_tab_cap) * 4 +
           m->st_loop_cap * 8 + m->tr_cap * 12 + m->dense_cap * 10 + m->n_dense * 1024;
}

static void machine_clear(gr_machine *m)
{
    m->node_pos.n = m->node_parent.n = m->node_depth.n = 1; /* node 0: the empty stack */
    m->st_off.n = m->st_n.n = m->st_utf8.n = m->st_flags.n = m->st_pool.n = 0;
    if (m->node_tab) memset(m->node_tab, 0, m->node_tab_cap * sizeof *m->node_tab);
    if (m->st_tab) memset(m->st_tab, 0, m->st_tab_cap * sizeof *m->st_tab);
    if (m->tr_key) memset(m->tr_key, 0xff, m->tr_cap * sizeof *m->tr_key);
    m->tr_n = 0;
    for (size_t i = 0; i < m->dense_cap; i++) {
        free(m->dense[i]);
        m->dense[i] = NULL;
        m->hits[i] = 0;
    }
    m->n_dense = 0;
    m->oom = 0;
    m->epoch++;
}

void gr_machine_free(gr_machine *m)
{
    free(m->node_pos.v);
    free(m->node_parent.v);
    free(m->node_depth.v);
    free(m->node_tab);
    free(m->st_off.v);
    free(m->st_n.v);
    free(m->st_utf8.v);
    free(m->st_flags.v);
    free(m->st_pool.v);
    free(m->st_loop);
    free(m->st_tab);
    free(m->tr_key);
    free(m->tr_val);
    for (size_t i = 0; i < m->dense_cap; i++) free(m->dense[i]);
    free(m->dense);
    free(m->hits);
    free(m->scratch.v);
    memset(m, 0, sizeof *m);
}

/* ---- a sequence's state and its explicit copy ---- */

static int copy_push(shardlm_grammar_state *s, uint32_t x)
{
    if (s->n_copy == s->cap_copy) {
        size_t cap = s->cap_copy ? s->cap_copy * 2 : 64;
        uint32_t *v = realloc(s->copy, cap * sizeof *v);
        if (!v) return -1;
        s->copy = v;
        s->cap_copy = cap;
    }
    s->copy[s->n_copy++] = x;
    return 0;
}

int gr_state_set(shardlm_grammar_state *s, int32_t sid)
{
    gr_machine *m = &s->g->m;
    s->sid = sid;
    s->epoch = m->epoch;
    s->n_copy = 0;
    uint32_t off = m->st_off.v[sid], n = m->st_n.v[sid];
    if (copy_push(s, m->st_utf8.v[sid]) || copy_push(s, n)) return SHARDLM_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t t = m->st_pool.v[off + i];
        if (copy_push(s, t ? m->node_depth.v[t] : 0)) return SHARDLM_ENOMEM;
        for (; t; t = m->node_parent.v[t])
            if (copy_push(s, m->node_pos.v[t])) return SHARDLM_ENOMEM;
    }
    return SHARDLM_OK;
}

/* Re-enters the state from its explicit copy. */
static int32_t state_import(shardlm_grammar *g, const uint32_t *c, size_t n_copy)
{
    gr_machine *m = &g->m;
    if (n_copy < 2) return GR_DEAD;
    uint32_t utf8 = c[0], n = c[1];
    size_t k = 2;
    scratch_reset(m);
    for (uint32_t i = 0; i < n && k < n_copy; i++) {
        uint32_t depth = c[k++], parent = 0;
        for (uint32_t d = depth; d > 0; d--) {
            int64_t id = node_intern(m, c[k + d - 1], parent);
            if (id < 0) return GR_DEAD;
            parent = (uint32_t)id;
        }
        k += depth;
        if (gr_u32_push(&m->scratch, parent)) m->oom = 1;
    }
    return finish_state(m, utf8);
}

int32_t gr_state_sid(shardlm_grammar_state *s)
{
    shardlm_grammar *g = s->g;
    if (s->epoch == g->m.epoch && s->sid >= 0 && !g->m.oom && gr_machine_bytes(&g->m) <= GR_CACHE_BYTES)
        return s->sid;
    if (gr_machine_bytes(&g->m) > GR_CACHE_BYTES || g->m.oom) machine_clear(&g->m);
    int32_t sid = state_import(g, s->copy, s->n_copy);
    if (sid < 0) {
        shardlm_err_set("out of memory in the grammar machine");
        return -1;
    }
    s->sid = sid;
    s->epoch = g->m.epoch;
    return sid;
}

int gr_machine_init(shardlm_grammar *g)
{
    gr_machine *m = &g->m;
    if (gr_u32_push(&m->node_pos, 0) || gr_u32_push(&m->node_parent, 0) || gr_u32_push(&m->node_depth, 0))
        return SHARDLM_ENOMEM;
    m->epoch = 1;
    scratch_reset(m);
    for (uint32_t a = g->rule_alt[g->root]; a < g->rule_alt[g->root + 1]; a++) expand(g, g->alt[a], 0);
    int32_t sid = finish_state(m, 0);
    if (sid < 0) return m->oom ? SHARDLM_ENOMEM : SHARDLM_EINPUT;
    shardlm_grammar_state tmp = {.g = g};
    if (gr_state_set(&tmp, sid)) {
        free(tmp.copy);
        return SHARDLM_ENOMEM;
    }
    g->start = tmp.copy;
    g->n_start = tmp.n_copy;
    return SHARDLM_OK;
}

/* ---- public: grammars and states ---- */

shardlm_grammar *shardlm_grammar_ref(shardlm_grammar *g)
{
    if (g) atomic_fetch_add(&g->refs, 1);
    return g;
}

void shardlm_grammar_unref(shardlm_grammar *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1) return;
    gr_machine_free(&g->m);
    gr_free_compiled(g);
    for (int i = 0; i < GR_MASK_CACHE; i++) free(g->masks[i].bits);
    free(g->start);
    free(g);
}

int shardlm_grammar_state_new(shardlm_grammar *g, int lead, shardlm_grammar_state **out)
{
    *out = NULL;
    shardlm_grammar_state *s = calloc(1, sizeof *s);
    if (!s || !(s->copy = malloc(g->n_start * sizeof *s->copy))) {
        free(s);
        return SHARDLM_ENOMEM;
    }
    memcpy(s->copy, g->start, g->n_start * sizeof *s->copy);
    s->n_copy = s->cap_copy = g->n_start;
    s->g = shardlm_grammar_ref(g);
    s->sid = -1;
    s->lead = lead;
    *out = s;
    return SHARDLM_OK;
}

int shardlm_grammar_state_copy(const shardlm_grammar_state *s, shardlm_grammar_state **out)
{
    *out = NULL;
    shardlm_grammar_state *c = malloc(sizeof *c);
    if (!c) return SHARDLM_ENOMEM;
    *c = *s;
    if (!(c->copy = malloc((s->n_copy ? s->n_copy : 1) * sizeof *c->copy))) {
        free(c);
        return SHARDLM_ENOMEM;
    }
    memcpy(c->copy, s->copy, s->n_copy * sizeof *c->copy);
    c->cap_copy = s->n_copy ? s->n_copy : 1;
    shardlm_grammar_ref(c->g);
    *out = c;
    return SHARDLM_OK;
}

void shardlm_grammar_state_free(shardlm_grammar_state *s)
{
    if (!s) return;
    shardlm_grammar_unref(s->g);
    free(s->copy);
    free(s);
}

int shardlm_grammar_accept_bytes(shardlm_grammar_state *s, const void *bytes, size_t n)
{
    if (s->ended) return SHARDLM_EINPUT;
    int32_t sid = gr_state_sid(s);
    if (sid < 0) return SHARDLM_ENOMEM;
    const uint8_t *b = bytes;
    for (size_t i = 0; i < n && sid >= 0; i++) sid = gr_step(s->g, sid, b[i]);
    if (s->g->m.oom) return SHARDLM_ENOMEM;
    if (sid < 0) return SHARDLM_EINPUT;
    return gr_state_set(s, sid);
}

int shardlm_grammar_can_end(shardlm_grammar_state *s)
{
    if (s->ended) return 1;
    int32_t sid = gr_state_sid(s);
    return sid >= 0 && (gr_flags(s->g, sid) & GRS_ACCEPT);
}

int shardlm_grammar_must_end(shardlm_grammar_state *s)
{
    if (s->ended) return 1;
    int32_t sid = gr_state_sid(s);
    return sid >= 0 && (gr_flags(s->g, sid) & GRS_ONLY);
}
