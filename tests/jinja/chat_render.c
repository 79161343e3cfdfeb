/* chat_render.c - renders every case of the chat-template fixtures with
 * shardlm's engine and prints the same JSON as render.mjs (the reference),
 * so run.sh can compare them byte for byte.
 *   chat_render TEMPLATE_DIR FIXTURE.json... */
#include <cjson/cJSON.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"
#include "shardlm_text.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) free(s), s = NULL;
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

static const char *str_of(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static int fixture(const char *dir, const char *file, cJSON *out)
{
    char *text = slurp(file), path[4096], name[512];
    cJSON *fx = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!fx) return fprintf(stderr, "chat_render: %s: cannot read or parse\n", file), 1;
    snprintf(path, sizeof path, "%s/%s", dir, str_of(fx, "template"));
    /* a template that does not load fails each of its cases (as the
     * reference's parse error does); compare.mjs judges */
    shardlm_chat_template *t = NULL;
    char why[1024] = "";
    if (shardlm_chat_template_from_file(path, NULL, &t) ||
        shardlm_chat_template_set_tokens(t, str_of(fx, "bos_token"), str_of(fx, "eos_token")))
        snprintf(why, sizeof why, "%s", shardlm_err_get());
    const cJSON *now = cJSON_GetObjectItemCaseSensitive(fx, "now");
    shardlm_chat_render_opts o = {.now = cJSON_IsNumber(now) ? (int64_t)now->valuedouble : 0};
    char *base = strdup(file), *b = basename(base), *dot = strrchr(b, '.');
    if (dot) *dot = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(fx, "cases")) {
        char *vars = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(c, "vars"));
        char *res = NULL;
        size_t len = 0;
        int rc = t ? shardlm_chat_render_json(t, vars, strlen(vars), &o, &res, &len) : SHARDLM_EINPUT;
        snprintf(name, sizeof name, "%s/%s", b, str_of(c, "name"));
        cJSON *r = cJSON_AddObjectToObject(out, name);
        if (rc) cJSON_AddStringToObject(r, "error", t ? shardlm_err_get() : why);
        else cJSON_AddStringToObject(r, "text", res);
        if (!rc && strlen(res) != len) cJSON_AddStringToObject(r, "note", "output contains a NUL byte");
        free(res);
        free(vars);
    }
    free(base);
    shardlm_chat_template_free(t);
    cJSON_Delete(fx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) return fprintf(stderr, "usage: chat_render TEMPLATE_DIR FIXTURE.json...\n"), 2;
    cJSON *out = cJSON_CreateObject();
    int bad = 0;
    for (int i = 2; i < argc; i++) bad |= fixture(argv[1], argv[i], out);
    char *s = cJSON_Print(out);
    printf("%s\n", s);
    free(s);
    cJSON_Delete(out);
    return bad ? 2 : 0;
}
