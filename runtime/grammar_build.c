/* grammar_build.c - the second half of the GBNF compiler: checks the parsed
 * rules (undefined names, left recursion, repetitions of what can match
 * empty text) and flattens them into the compiled grammar's element array
 * (grammar_internal.h). grammar_parse.c turns the text into those rules. */
#include <stdlib.h>
#include <string.h>

#include "grammar_parse.h"
#include "shardlm_common.h"

/* ---- checks ---- */

static void compute_nullable(gp *p)
{
    for (int changed = 1; changed;) {
        changed = 0;
        for (size_t r = 0; r < p->n_rules; r++) {
            if (p->rules[r].nullable) continue;
            const gr_u32s *e = &p->rules[r].elems;
            int all = 1, found = 0;
            for (size_t i = 0; i < e->n && !found; i++) {
                uint32_t x = e->v[i];
                if (GE_TYPE(x) == GE_END) found = all, all = 1;
                else if (GE_TYPE(x) == GE_CHAR || !p->rules[GE_VAL(x)].nullable) all = 0;
            }
            if (found) p->rules[r].nullable = changed = 1;
        }
    }
}

/* Depth-first search over "can call before consuming anything"; 1 when a
 * cycle goes through r (the rule reported is in *bad). */
static int left_cycle(gp *p, uint32_t r, uint8_t *color, uint32_t *bad)
{
    color[r] = 1;
    const gr_u32s *e = &p->rules[r].elems;
    int head = 1;
    for (size_t i = 0; i < e->n; i++) {
        uint32_t x = e->v[i];
        if (GE_TYPE(x) == GE_END) {
            head = 1;
            continue;
        }
        if (!head) continue;
        if (GE_TYPE(x) == GE_CHAR) {
            head = 0;
            continue;
        }
        uint32_t s = GE_VAL(x);
        if (color[s] == 1 || (color[s] == 0 && left_cycle(p, s, color, bad))) {
            if (color[s] == 1 && *bad == UINT32_MAX) *bad = s;
            return 1;
        }
        head = p->rules[s].nullable;
    }
    color[r] = 2;
    return 0;
}

int gp_check_rules(gp *p)
{
    for (size_t r = 0; r < p->n_rules; r++)
        if (p->rules[r].kind == RK_USER && !p->rules[r].defined)
            return gp_fail(p, p->rules[r].ref_at, "undefined rule '%s'", p->rules[r].name);
    compute_nullable(p);
    uint8_t *color = calloc(p->n_rules ? p->n_rules : 1, 1);
    if (!color) return gp_oom(p);
    uint32_t bad = UINT32_MAX;
    int cyc = 0;
    for (size_t r = 0; r < p->n_rules && !cyc; r++)
        if (!color[r]) cyc = left_cycle(p, (uint32_t)r, color, &bad);
    free(color);
    if (!cyc) return SHARDLM_OK;
    const prule *b = &p->rules[bad];
    if (b->kind == RK_STAR) return gp_fail(p, b->def_at, "the repeated expression can match empty text");
    if (b->kind == RK_USER)
        return gp_fail(p, b->def_at, "rule '%s' is left-recursive (it can reach itself before matching any text)",
                    b->name);
    return gp_fail(p, b->def_at, "this group is left-recursive (it can reach itself before matching any text)");
}

/* ---- flattening ---- */

int gp_flatten(gp *p, shardlm_grammar *g)
{
    size_t n_el = 0, n_alt = 0;
    for (size_t r = 0; r < p->n_rules; r++) {
        n_el += p->rules[r].elems.n;
        for (size_t i = 0; i < p->rules[r].elems.n; i++) n_alt += p->rules[r].elems.v[i] == GE_END;
    }
    g->el = malloc((n_el + 1) * sizeof *g->el);
    g->alt = malloc((n_alt + 1) * sizeof *g->alt);
    g->rule_alt = malloc((p->n_rules + 1) * sizeof *g->rule_alt);
    if (!g->el || !g->alt || !g->rule_alt) return gp_oom(p);
    size_t k = 0, a = 0;
    for (size_t r = 0; r < p->n_rules; r++) {
        g->rule_alt[r] = (uint32_t)a;
        const gr_u32s *e = &p->rules[r].elems;
        int start = 1;
        for (size_t i = 0; i < e->n; i++) {
            if (start) g->alt[a++] = (uint32_t)k;
            g->el[k++] = e->v[i];
            start = e->v[i] == GE_END;
        }
    }
    g->rule_alt[p->n_rules] = (uint32_t)a;
    g->el[k] = GE_END;
    g->n_el = (uint32_t)k;
    g->n_rules = (uint32_t)p->n_rules;
    g->cls = p->cls;
    g->n_cls = (uint32_t)p->n_cls;
    g->ranges = p->ranges;
    g->n_ranges = (uint32_t)p->n_ranges;
    p->cls = NULL;
    p->ranges = NULL;
    return SHARDLM_OK;
}
