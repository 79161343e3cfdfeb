/* config.c - RING_CONFIG files (mistral.rs field names): loading with exact,
 * one-line error messages "PATH: field 'NAME': problem", validation of a
 * config held in memory, and writing one (used by the local launcher).
 * Unknown fields are rejected: a misspelt optional field such as "rigth_ip"
 * would otherwise silently fall back to its default. */
#include "shardlm_ring.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shardlm_common.h"

#define RING_CFG_MAX_BYTES (1 << 20)
#define RING_MAX_WORLD 1024

static const char *const ring_cfg_fields[] = {
    "master_ip", "master_port", "port", "right_port", "right_ip", "rank", "world_size",
};

static char *ring_cfg_slurp(const char *path, int *rc)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        shardlm_err_set("%s: cannot open: %s", path, strerror(errno));
        *rc = SHARDLM_EINPUT;
        return NULL;
    }
    char *buf = malloc(RING_CFG_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, RING_CFG_MAX_BYTES + 1, f) : 0;
    int bad = !buf || ferror(f);
    fclose(f);
    if (bad || n > RING_CFG_MAX_BYTES) {
        shardlm_err_set("%s: %s", path, !buf ? "out of memory" : bad ? "cannot read" : "larger than 1 MiB");
        free(buf);
        *rc = SHARDLM_EINPUT;
        return NULL;
    }
    buf[n] = 0;
    if (strlen(buf) != n) {
        shardlm_err_set("%s: contains a NUL byte; not a JSON text file", path);
        free(buf);
        *rc = SHARDLM_EINPUT;
        return NULL;
    }
    return buf;
}

static const char *ring_cfg_type_name(const cJSON *v)
{
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an unknown value";
}

/* Line and column (1-based) of byte offset `off` in text. */
static void ring_cfg_where(const char *text, size_t off, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < off && text[i]; i++) {
        if (text[i] == '\n') {
            ++*line;
            *col = 1;
        } else {
            ++*col;
        }
    }
}

static int ring_cfg_int(const cJSON *root, const char *path, const char *name, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v) {
        shardlm_err_set("%s: field '%s': missing (required)", path, name);
        return SHARDLM_EINPUT;
    }
    if (!cJSON_IsNumber(v)) {
        shardlm_err_set("%s: field '%s': expected an integer, got %s", path, name, ring_cfg_type_name(v));
        return SHARDLM_EINPUT;
    }
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d)) {
        shardlm_err_set("%s: field '%s': expected an integer, got %g", path, name, d);
        return SHARDLM_EINPUT;
    }
    if (d < -2147483648.0 || d > 2147483647.0) {
        shardlm_err_set("%s: field '%s': %.0f is out of range", path, name, d);
        return SHARDLM_EINPUT;
    }
    *out = (int)d;
    return SHARDLM_OK;
}

static int ring_cfg_host(const cJSON *root, const char *path, const char *name, char *out, size_t cap,
                         const char *dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v && dflt) {
        snprintf(out, cap, "%s", dflt);
        return SHARDLM_OK;
    }
    if (!v) {
        shardlm_err_set("%s: field '%s': missing (required)", path, name);
        return SHARDLM_EINPUT;
    }
    if (!cJSON_IsString(v)) {
        shardlm_err_set("%s: field '%s': expected a string, got %s", path, name, ring_cfg_type_name(v));
        return SHARDLM_EINPUT;
    }
    size_t len = strlen(v->valuestring);
    if (len >= cap) {
        shardlm_err_set("%s: field '%s': host is %zu bytes long (at most %zu)", path, name, len, cap - 1);
        return SHARDLM_EINPUT;
    }
    memcpy(out, v->valuestring, len + 1);
    return SHARDLM_OK;
}

static int ring_cfg_known(const char *name)
{
    for (size_t i = 0; i < sizeof ring_cfg_fields / sizeof ring_cfg_fields[0]; i++)
        if (!strcmp(name, ring_cfg_fields[i])) return 1;
    return 0;
}

static int ring_cfg_from_json(const cJSON *root, const char *path, shardlm_ring_config *cfg)
{
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!ring_cfg_known(it->string)) {
            shardlm_err_set("%s: field '%s': unknown field (expected master_ip, master_port, port, "
                            "right_port, right_ip, rank, world_size)", path, it->string);
            return SHARDLM_EINPUT;
        }
    }
    memset(cfg, 0, sizeof *cfg);
    int rc;
    if ((rc = ring_cfg_host(root, path, "master_ip", cfg->master_ip, sizeof cfg->master_ip, NULL)) ||
        (rc = ring_cfg_int(root, path, "master_port", &cfg->master_port)) ||
        (rc = ring_cfg_int(root, path, "port", &cfg->port)) ||
        (rc = ring_cfg_int(root, path, "right_port", &cfg->right_port)) ||
        (rc = ring_cfg_host(root, path, "right_ip", cfg->right_ip, sizeof cfg->right_ip, "127.0.0.1")) ||
        (rc = ring_cfg_int(root, path, "rank", &cfg->rank)) ||
        (rc = ring_cfg_int(root, path, "world_size", &cfg->world_size)))
        return rc;
    return SHARDLM_OK;
}

int shardlm_ring_config_load(const char *path, shardlm_ring_config *cfg)
{
    int rc = SHARDLM_OK;
    char *text = ring_cfg_slurp(path, &rc);
    if (!text) return rc;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        int line, col;
        size_t off = end ? (size_t)(end - text) : 0;
        ring_cfg_where(text, off, &line, &col);
        shardlm_err_set("%s: malformed JSON near line %d, column %d", path, line, col);
        free(text);
        return SHARDLM_EINPUT;
    }
    if (!cJSON_IsObject(root)) {
        shardlm_err_set("%s: expected a JSON object at the top level, got %s", path, ring_cfg_type_name(root));
        rc = SHARDLM_EINPUT;
    } else {
        rc = ring_cfg_from_json(root, path, cfg);
    }
    cJSON_Delete(root);
    free(text);
    return rc ? rc : shardlm_ring_config_validate(cfg, path);
}

/* An address that reaches this machine, where port == right_port would make
 * a rank connect to its own listener. */
static int ring_cfg_is_loopback(const char *host)
{
    return !strncmp(host, "127.", 4) || !strcmp(host, "localhost") || !strcmp(host, "::1") ||
           !strcmp(host, "0.0.0.0");
}

static int ring_cfg_check_host(const char *h, size_t cap, const char *origin, const char *name)
{
    size_t len = strnlen(h, cap);
    if (len == 0) {
        shardlm_err_set("%s: field '%s': empty host", origin, name);
        return SHARDLM_EINPUT;
    }
    if (len == cap) {
        shardlm_err_set("%s: field '%s': host is too long (at most %zu bytes)", origin, name, cap - 1);
        return SHARDLM_EINPUT;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (ch <= ' ' || ch == 0x7f) {
            shardlm_err_set("%s: field '%s': host \"%s\" contains a space or control character", origin, name, h);
            return SHARDLM_EINPUT;
        }
    }
    return SHARDLM_OK;
}

static int ring_cfg_check_port(int port, const char *origin, const char *name)
{
    if (port < 1 || port > 65535) {
        shardlm_err_set("%s: field '%s': port %d is outside 1..65535", origin, name, port);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

int shardlm_ring_config_validate(const shardlm_ring_config *cfg, const char *origin)
{
    int rc;
    if ((rc = ring_cfg_check_host(cfg->master_ip, sizeof cfg->master_ip, origin, "master_ip")) ||
        (rc = ring_cfg_check_host(cfg->right_ip, sizeof cfg->right_ip, origin, "right_ip")) ||
        (rc = ring_cfg_check_port(cfg->master_port, origin, "master_port")) ||
        (rc = ring_cfg_check_port(cfg->port, origin, "port")) ||
        (rc = ring_cfg_check_port(cfg->right_port, origin, "right_port")))
        return rc;
    int w = cfg->world_size;
    if (w < 1 || w > RING_MAX_WORLD || (w & (w - 1))) {
        shardlm_err_set("%s: field 'world_size': %d is not a power of two in 1..%d", origin, w, RING_MAX_WORLD);
        return SHARDLM_EINPUT;
    }
    if (cfg->rank < 0 || cfg->rank >= w) {
        shardlm_err_set("%s: field 'rank': %d is outside 0..%d (world_size %d)", origin, cfg->rank, w - 1, w);
        return SHARDLM_EINPUT;
    }
    if (w > 1 && cfg->port == cfg->right_port && ring_cfg_is_loopback(cfg->right_ip)) {
        shardlm_err_set("%s: field 'right_port': %d equals 'port' while right_ip %s is this machine; "
                        "the rank would connect to itself", origin, cfg->right_port, cfg->right_ip);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

int shardlm_ring_config_write(const char *path, const shardlm_ring_config *cfg)
{
    int rc = shardlm_ring_config_validate(cfg, path);
    if (rc) return rc;
    cJSON *o = cJSON_CreateObject();
    if (!o) goto oom;
    int ok = cJSON_AddStringToObject(o, "master_ip", cfg->master_ip) &&
             cJSON_AddNumberToObject(o, "master_port", cfg->master_port) &&
             cJSON_AddNumberToObject(o, "port", cfg->port) &&
             cJSON_AddNumberToObject(o, "right_port", cfg->right_port) &&
             cJSON_AddStringToObject(o, "right_ip", cfg->right_ip) &&
             cJSON_AddNumberToObject(o, "rank", cfg->rank) &&
             cJSON_AddNumberToObject(o, "world_size", cfg->world_size);
    char *text = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!text) goto oom;
    FILE *f = fopen(path, "w");
    if (!f) {
        shardlm_err_set("%s: cannot create: %s", path, strerror(errno));
        cJSON_free(text);
        return SHARDLM_ERUNTIME;
    }
    int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF;
    bad |= fclose(f) != 0;
    cJSON_free(text);
    if (bad) {
        shardlm_err_set("%s: write failed: %s", path, strerror(errno));
        return SHARDLM_ERUNTIME;
    }
    return SHARDLM_OK;
oom:
    shardlm_err_set("%s: out of memory building the config", path);
    return SHARDLM_ENOMEM;
}
