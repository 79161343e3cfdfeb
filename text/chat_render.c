/* chat_render.c - rendering entry points: binds the variables the way
 * transformers.js's apply_chat_template passes them to @huggingface/jinja
 * (the globals, then bos_token/eos_token, add_generation_prompt false
 * unless given, then every member of the caller's JSON object: messages,
 * tools, documents, chat_template_kwargs...), renders, and returns the
 * text; also the load-time scan for constructs the engine lacks. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat_internal.h"
#include "shardlm_common.h"

/* ---- the load-time scan ---- */

typedef struct {
    shardlm_chat_template *t;
    chat_str defined[256]; /* macro and set names: callable or not, they are the template's own */
    size_t n_defined;
} scan;

static void collect_names(scan *s, const chat_node *x)
{
    if (!x) return;
    if ((x->kind == ND_MACRO || x->kind == ND_SET) && s->n_defined < 256) {
        if (x->kind == ND_MACRO) s->defined[s->n_defined++] = x->s;
        else if (x->a->kind == ND_NAME) s->defined[s->n_defined++] = x->a->s;
    }
    if (x->kind == ND_FOR && x->a->kind == ND_NAME && s->n_defined < 256) s->defined[s->n_defined++] = x->a->s;
    const chat_node *kids[] = {x->a, x->b, x->c, x->d, x->e};
    for (int i = 0; i < 5; i++) collect_names(s, kids[i]);
    for (size_t i = 0; i < x->n_kids; i++) {
        collect_names(s, x->kids[i]);
        if (x->vals) collect_names(s, x->vals[i]);
    }
}

static void note(scan *s, uint32_t off, const char *what, chat_str name)
{
    if (s->t->unsupported[0]) return;
    int line = 1, col = 1;
    uint32_t o = s->t->map ? s->t->map[off < s->t->map_n ? off : s->t->map_n] : off;
    for (uint32_t i = 0; i < o && s->t->src[i]; i++) {
        if (s->t->src[i] == '\n') line++, col = 1;
        else col++;
    }
    snprintf(s->t->unsupported, sizeof s->t->unsupported, "unsupported %s '%.*s' at %s:%d:%d", what,
             (int)(name.n > 80 ? 80 : name.n), name.p, s->t->origin, line, col);
}

static int known_global(const scan *s, chat_str name)
{
    static const char *const g[] = {"namespace", "raise_exception", "range", "strftime_now", "caller", NULL};
    for (int i = 0; g[i]; i++)
        if (chat_str_eq(name, g[i])) return 1;
    for (size_t i = 0; i < s->n_defined; i++)
        if (chat_str_same(s->defined[i], name)) return 1;
    return 0;
}

static void check(scan *s, const chat_node *x)
{
    if (!x) return;
    const chat_node *f = x->kind == ND_FILTER ? x->b : x->kind == ND_FILTER_BLOCK ? x->a : NULL;
    if (f && f->kind == ND_CALL) f = f->a;
    if (f && !chat_known_filter(f->s)) note(s, f->off, "filter", f->s);
    if (x->kind == ND_TEST && !chat_known_test(x->s)) note(s, x->off, "test", x->s);
    if (x->kind == ND_CALL && x->a->kind == ND_NAME && !known_global(s, x->a->s))
        note(s, x->a->off, "function", x->a->s);
    if (f && f != (x->kind == ND_FILTER ? x->b : x->a)) { /* a filter call: its arguments, not its name */
        const chat_node *call = x->kind == ND_FILTER ? x->b : x->a;
        for (size_t i = 0; i < call->n_kids; i++) check(s, call->kids[i]);
        check(s, x->kind == ND_FILTER ? x->a : x->b);
        return;
    }
    const chat_node *kids[] = {x->a, x->b, x->c, x->d, x->e};
    for (int i = 0; i < 5; i++) check(s, kids[i]);
    for (size_t i = 0; i < x->n_kids; i++) {
        check(s, x->kids[i]);
        if (x->vals) check(s, x->vals[i]);
    }
}

void chat_scan_unsupported(shardlm_chat_template *t, const chat_node *root)
{
    scan s = {.t = t};
    t->unsupported[0] = 0;
    collect_names(&s, root);
    check(&s, root);
}

const char *shardlm_chat_template_unsupported(const shardlm_chat_template *t)
{
    return t->unsupported[0] ? t->unsupported : NULL;
}

/* ---- rendering ---- */

typedef struct {
    chat_arena arena;
    chat_err e;
    chat_ctx r;
    char origin[4300];
} render_state;

typedef struct {
    const char *json;
    size_t len;
    const shardlm_chat_message *msgs;
    size_t n_msgs;
    int add_generation_prompt;
} render_input;

static chat_val messages_value(chat_ctx *r, const shardlm_chat_message *m, size_t n)
{
    chat_list *l = chat_list_new(r, n);
    for (size_t i = 0; i < n; i++) {
        chat_dict *d = chat_dict_new(r);
        const char *role = m[i].role ? m[i].role : "";
        chat_dict_put(r, d, (chat_str){"role", 4}, chat_v_strz(role));
        chat_dict_put(r, d, (chat_str){"content", 7}, m[i].content ? chat_v_strz(m[i].content) : chat_v_null());
        l->v[i] = chat_v_dict(d);
    }
    return chat_v_list(l);
}

static void bind(chat_ctx *r, const shardlm_chat_template *t, const render_input *in, chat_env *env)
{
    chat_bind_globals(r, env);
    chat_env_set(r, env, (chat_str){"bos_token", 9}, chat_v_strz(t->bos));
    chat_env_set(r, env, (chat_str){"eos_token", 9}, chat_v_strz(t->eos));
    chat_env_set(r, env, (chat_str){"add_generation_prompt", 21}, chat_v_bool(in->add_generation_prompt));
    if (!in->json) {
        chat_env_set(r, env, (chat_str){"messages", 8}, messages_value(r, in->msgs, in->n_msgs));
        return;
    }
    chat_val vars = chat_v_undef();
    char why[128];
    int bad = chat_json_parse(r, in->json, in->len, &vars, why, sizeof why);
    if (bad || vars.kind != CV_OBJECT) {
        r->e->raised = 1;
        chat_fail(r->e, 0, "template variables: %s", bad ? why : "not a JSON object");
    }
    for (size_t i = 0; i < vars.d->n; i++) chat_env_set(r, env, vars.d->k[i], vars.d->v[i]);
}

static int render(const shardlm_chat_template *t, const render_input *in, const shardlm_chat_render_opts *o,
                  char **out, size_t *out_len)
{
    *out = NULL;
    if (out_len) *out_len = 0;
    /* on the heap: longjmp comes back here, and locals changed since setjmp
     * would be indeterminate */
    render_state *st = calloc(1, sizeof *st);
    if (!st) {
        shardlm_err_set("chat template: out of memory");
        return SHARDLM_ENOMEM;
    }
    snprintf(st->origin, sizeof st->origin, "chat template %s", t->origin);
    st->arena.limit = t->lim.max_memory;
    st->e = (chat_err){.origin = st->origin, .src = t->src, .map = t->map, .map_n = t->map_n, .arena = &st->arena};
    st->r = (chat_ctx){.e = &st->e, .lim = t->lim, .now = o && o->now ? o->now : (int64_t)time(NULL)};
    int status = SHARDLM_OK;
    if (setjmp(st->e.jb)) {
        status = st->e.status;
        if (st->r.pending_json) cJSON_Delete(st->r.pending_json);
    } else {
        chat_env *env = chat_env_new(&st->r, NULL);
        bind(&st->r, t, in, env);
        chat_str s = chat_render_body(&st->r, t->root, chat_env_new(&st->r, env));
        if (!(*out = malloc(s.n + 1))) {
            shardlm_err_set("chat template: out of memory");
            status = SHARDLM_ENOMEM;
        } else {
            memcpy(*out, s.p, s.n);
            (*out)[s.n] = 0;
            if (out_len) *out_len = s.n;
        }
    }
    chat_arena_free(&st->arena);
    free(st);
    return status;
}

int shardlm_chat_render(const shardlm_chat_template *t, const shardlm_chat_message *msgs, size_t n,
                        int add_generation_prompt, char **out, size_t *out_len)
{
    render_input in = {.msgs = msgs, .n_msgs = n, .add_generation_prompt = add_generation_prompt};
    return render(t, &in, NULL, out, out_len);
}

int shardlm_chat_render_json(const shardlm_chat_template *t, const char *vars, size_t len,
                             const shardlm_chat_render_opts *o, char **out, size_t *out_len)
{
    render_input in = {.json = vars ? vars : "{}", .len = vars ? len : 2};
    return render(t, &in, o, out, out_len);
}
