/* weights.c - --weights-from rank0 (see weights.h): rank 0 streams each
 * worker the byte ranges of the GGUF its shard reads; the worker writes them
 * into a sparse cache file, verifies the checksum, and keeps it (with a
 * small .ok sidecar) so a restart with the same model sends nothing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shardlm_common.h"
#include "shardlm_model.h"
#include "weights.h"

#define WEIGHTS_CHUNK (1u << 20)
#define WEIGHTS_MAX_RANGES (1u << 20)
#define SIDECAR_MAGIC "shardlm weights cache 1"
/* Path buffers: the directory, a cache file in it, and names derived from one. */
#define WPATH_DIR 4096
#define WPATH_FILE (WPATH_DIR + 64)
#define WPATH_AUX (WPATH_FILE + 16)

/* ---- walking the pieces of a range list in order ---- */

typedef struct {
    const shardlm_byte_range *r;
    size_t n, i;  /* range */
    uint32_t k;   /* piece within range i */
    uint64_t in;  /* bytes already taken from that piece */
} wcursor;

static int cur_done(const wcursor *c) { return c->i >= c->n; }
static uint64_t cur_offset(const wcursor *c) { return c->r[c->i].offset + c->k * c->r[c->i].stride + c->in; }
static uint64_t cur_left(const wcursor *c) { return c->r[c->i].length - c->in; }

static void cur_advance(wcursor *c, uint64_t n)
{
    c->in += n;
    if (c->in < c->r[c->i].length) return;
    c->in = 0;
    if (++c->k < c->r[c->i].count) return;
    c->k = 0;
    c->i++;
}

/* ---- options and cache files ---- */

const char *shardlm_weights_flags_check(const char *model, const char *from, int worker)
{
    if (from && strcmp(from, "rank0") != 0) return "--weights-from: the only source is 'rank0'";
    if (!worker) return model ? NULL : "-m MODEL is required";
    if (model && from) return "give -m MODEL or --weights-from rank0, not both";
    return model || from ? NULL : "-m MODEL (or --weights-from rank0) is required";
}

int shardlm_weights_cache_dir(const char *dir, char *buf, size_t cap)
{
    const char *env = getenv("SHARDLM_WEIGHTS_CACHE"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int k;
    if (dir && *dir) k = snprintf(buf, cap, "%s", dir);
    else if (env && *env) k = snprintf(buf, cap, "%s", env);
    else if (xdg && *xdg) k = snprintf(buf, cap, "%s/shardlm/weights", xdg);
    else if (home && *home) k = snprintf(buf, cap, "%s/.cache/shardlm/weights", home);
    else {
        shardlm_err_set("no weights cache directory: $HOME is not set; give --weights-cache DIR");
        return SHARDLM_EINPUT;
    }
    if (k < 0 || (size_t)k >= cap || k >= WPATH_DIR) {
        shardlm_err_set("weights cache directory name is too long");
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST) break;
        *p = '/';
    }
    if (mkdir(tmp, 0755) && errno != EEXIST) {
        shardlm_err_set("weights cache directory %s: %s", path, strerror(errno));
        return SHARDLM_ERUNTIME;
    }
    return SHARDLM_OK;
}

typedef struct {
    uint64_t fingerprint, file_size, ranges_hash, checksum;
    shardlm_byte_range *ranges;
    size_t n;
} sidecar;

static int sidecar_write(const char *path, const sidecar *s)
{
    char tmp[WPATH_AUX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        shardlm_err_set("cannot write %s: %s", tmp, strerror(errno));
        return SHARDLM_ERUNTIME;
    }
    fprintf(f, SIDECAR_MAGIC "\nfingerprint %016" PRIx64 "\nfile_size %" PRIu64 "\nranges_hash %016" PRIx64
               "\nchecksum %016" PRIx64 "\nranges %zu\n",
            s->fingerprint, s->file_size, s->ranges_hash, s->checksum, s->n);
    for (size_t i = 0; i < s->n; i++)
        fprintf(f, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu32 "\n", s->ranges[i].offset, s->ranges[i].length,
                s->ranges[i].stride, s->ranges[i].count);
    int bad = fflush(f) || fsync(fileno(f));
    bad |= fclose(f);
    if (bad || rename(tmp, path)) {
        shardlm_err_set("cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return SHARDLM_ERUNTIME;
    }
    return SHARDLM_OK;
}

/* Returns NULL when it reads, else why not. */
static const char *sidecar_read(const char *path, sidecar *s)
{
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "r");
    if (!f) return "cannot open the .ok file";
    char magic[64] = "";
    const char *why = NULL;
    if (!fgets(magic, sizeof magic, f) || strncmp(magic, SIDECAR_MAGIC "\n", sizeof SIDECAR_MAGIC) != 0)
        why = "the .ok file has no '" SIDECAR_MAGIC "' line";
    else if (fscanf(f, " fingerprint %" SCNx64 " file_size %" SCNu64 " ranges_hash %" SCNx64 " checksum %" SCNx64
                       " ranges %zu",
                    &s->fingerprint, &s->file_size, &s->ranges_hash, &s->checksum, &s->n) != 5 ||
             s->n == 0 || s->n > WEIGHTS_MAX_RANGES)
        why = "the .ok file's fields do not parse";
    else if (!(s->ranges = calloc(s->n, sizeof *s->ranges)))
        why = "out of memory";
    for (size_t i = 0; !why && i < s->n; i++) {
        shardlm_byte_range *r = &s->ranges[i];
        if (fscanf(f, " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu32, &r->offset, &r->length, &r->stride,
                   &r->count) != 4)
            why = "the .ok file's ranges do not parse";
    }
    fclose(f);
    if (!why && shardlm_byte_ranges_hash(s->ranges, s->n) != s->ranges_hash) why = "the .ok file's ranges hash differs";
    return why;
}

/* Checks the ranges are in order, disjoint and inside the file, and that
 * they start with the header at 0. NULL when they are, else why not. */
static const char *ranges_check(const shardlm_byte_range *r, size_t n, uint64_t file_size)
{
    if (n == 0 || r[0].offset != 0) return "the ranges do not start with the header at offset 0";
    uint64_t end = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i].count == 0 || r[i].length == 0 || r[i].offset < end || r[i].offset > file_size) return "bad range";
        if (r[i].count > 1 && (r[i].stride < r[i].length || r[i].stride > file_size)) return "bad range stride";
        uint64_t span = (uint64_t)(r[i].count - 1) * r[i].stride; /* both below 2^32 and file_size < 2^50 */
        if (r[i].length > file_size || span > file_size - r[i].offset ||
            r[i].length > file_size - r[i].offset - span)
            return "a range runs past the end of the file";
        end = r[i].offset + span + r[i].length;
    }
    return NULL;
}

/* FNV-1a of the range pieces of a file, in order. */
static int file_checksum(const char *path, const shardlm_byte_range *r, size_t n, uint64_t size, uint64_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return SHARDLM_ERUNTIME;
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return SHARDLM_ERUNTIME;
    uint64_t h = SHARDLM_FNV_INIT;
    for (wcursor c = {r, n, 0, 0, 0}; !cur_done(&c); cur_advance(&c, cur_left(&c)))
        h = shardlm_fnv1a64(h, (const uint8_t *)map + cur_offset(&c), (size_t)cur_left(&c));
    munmap(map, (size_t)size);
    *out = h;
    return SHARDLM_OK;
}

/* NULL when the cached GGUF at path matches its sidecar, else why not. */
static const char *cache_verify(const char *path, const sidecar *s)
{
    struct stat st;
    if (stat(path, &st) != 0) return "the cache file is missing";
    if ((uint64_t)st.st_size != s->file_size) return "the cache file has the wrong size";
    if (ranges_check(s->ranges, s->n, s->file_size)) return "the .ok file's ranges are invalid";
    shardlm_gguf *g = NULL;
    if (shardlm_gguf_open(path, &g)) return "the cache file is not a valid GGUF";
    uint64_t fp = shardlm_gguf_fingerprint(g);
    shardlm_gguf_close(g);
    if (fp != s->fingerprint) return "the cache file's header does not match its fingerprint";
    uint64_t sum = 0;
    if (file_checksum(path, s->ranges, s->n, s->file_size, &sum)) return "the cache file cannot be read";
    if (sum != s->checksum) return "checksum mismatch: its contents have changed";
    return NULL;
}

static void cache_paths(const char *dir, uint64_t fp, int world, int rank, char gguf[WPATH_FILE], char ok[WPATH_AUX])
{
    snprintf(gguf, WPATH_FILE, "%s/%016" PRIx64 "-w%d-r%d.gguf", dir, fp, world, rank);
    snprintf(ok, WPATH_AUX, "%s.ok", gguf);
}

/* The newest .ok sidecar in dir for (world, rank); 0 when there is none. */
static uint64_t cache_newest(const char *dir, int world, int rank)
{
    char suffix[64];
    snprintf(suffix, sizeof suffix, "-w%d-r%d.gguf.ok", world, rank);
    DIR *d = opendir(dir);
    uint64_t best = 0;
    time_t best_t = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name), sl = strlen(suffix);
        uint64_t fp;
        char full[WPATH_FILE + 256];
        struct stat st;
        if (len != 16 + sl || strcmp(e->d_name + 16, suffix) || sscanf(e->d_name, "%16" SCNx64, &fp) != 1) continue;
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        if (stat(full, &st) == 0 && (!best || st.st_mtime > best_t)) {
            best = fp;
            best_t = st.st_mtime;
        }
    }
    if (d) closedir(d);
    return best;
}

int shardlm_weights_probe(const shardlm_weights_opts *o, shardlm_ctrl_weights_req *req)
{
    char dir[WPATH_DIR], gguf[WPATH_FILE], ok[WPATH_AUX];
    *req = (shardlm_ctrl_weights_req){1, 0, 0};
    int rc = shardlm_weights_cache_dir(o->cache_dir, dir, sizeof dir);
    if (rc) return rc;
    uint64_t fp = cache_newest(dir, o->world, o->rank);
    if (!fp) return SHARDLM_OK;
    cache_paths(dir, fp, o->world, o->rank, gguf, ok);
    sidecar s;
    const char *why = sidecar_read(ok, &s);
    if (!why && s.fingerprint != fp) why = "the .ok file names another fingerprint";
    if (!why) why = cache_verify(gguf, &s);
    free(s.ranges);
    if (why) {
        fprintf(stderr, "shardlm: rank %d: cached weights %s are unusable (%s); deleting them and fetching the "
                        "weights from rank 0 again\n", o->rank, gguf, why);
        unlink(ok);
        unlink(gguf);
        return SHARDLM_OK;
    }
    *req = (shardlm_ctrl_weights_req){1, s.fingerprint, s.ranges_hash};
    return SHARDLM_OK;
}

/* ---- worker: receiving ---- */

typedef struct {
    const shardlm_weights_opts *o;
    shardlm_ctrl *c;
    const shardlm_ctrl_weights_begin *b;
    shardlm_byte_range *r;
    size_t n;
    char part[WPATH_AUX];
    int fd;
    uint64_t got, hash;
} wrecv;

/* Writes one chunk's data over the pieces it spans. */
static int recv_chunk(wrecv *w, wcursor *cur, const shardlm_ctrl_weights_chunk *ch)
{
    if (cur_done(cur) || ch->offset != cur_offset(cur) || ch->len > w->b->total_bytes - w->got) {
        shardlm_err_set("rank 0 sent a chunk at offset %" PRIu64 " of %zu bytes where offset %" PRIu64 " was due",
                        ch->offset, ch->len, cur_done(cur) ? w->b->file_size : cur_offset(cur));
        return SHARDLM_EPEER;
    }
    w->hash = shardlm_fnv1a64(w->hash, ch->data, ch->len);
    for (size_t at = 0; at < ch->len;) {
        uint64_t k = cur_left(cur) < ch->len - at ? cur_left(cur) : ch->len - at;
        ssize_t wr = pwrite(w->fd, ch->data + at, (size_t)k, (off_t)cur_offset(cur));
        if (wr != (ssize_t)k) {
            shardlm_err_set("writing %s: %s", w->part, wr < 0 ? strerror(errno) : "short write");
            return SHARDLM_ERUNTIME;
        }
        at += k;
        cur_advance(cur, k);
    }
    w->got += ch->len;
    return SHARDLM_OK;
}

static void show_progress(uint64_t done, uint64_t total, int *last_pct)
{
    int pct = total ? (int)(done * 100 / total) : 100;
    if (pct == *last_pct) return;
    *last_pct = pct;
    shardlm_progress("weights from rank 0", done, total);
}

/* Chunks until total_bytes have come, then WeightsEnd. */
static int recv_stream(wrecv *w)
{
    wcursor cur = {w->r, w->n, 0, 0, 0};
    int last_pct = -1, rc = SHARDLM_OK;
    w->hash = SHARDLM_FNV_INIT;
    while (!rc) {
        shardlm_ctrl_msg m;
        if ((rc = shardlm_ctrl_recv(w->c, w->o->timeout_ms, &m))) break;
        if (m.kind == SHARDLM_CTRL_MSG_WEIGHTS_CHUNK) {
            rc = recv_chunk(w, &cur, &m.u.weights_chunk);
            show_progress(w->got, w->b->total_bytes, &last_pct);
        } else if (m.kind == SHARDLM_CTRL_MSG_WEIGHTS_END) {
            if (w->got != w->b->total_bytes) {
                shardlm_err_set("rank 0 ended the transfer early");
                rc = SHARDLM_EPEER;
            } else if (m.u.weights_checksum != w->hash) {
                shardlm_err_set("checksum mismatch: rank 0 sent %016" PRIx64 ", the bytes received hash to %016" PRIx64,
                                m.u.weights_checksum, w->hash);
                rc = SHARDLM_EPEER;
            }
            shardlm_ctrl_msg_free(&m);
            return rc;
        } else {
            shardlm_err_set("unexpected message %d from rank 0 during the transfer", (int)m.kind);
            rc = SHARDLM_EPEER;
        }
        shardlm_ctrl_msg_free(&m);
    }
    return rc;
}

/* Receives into <path>.part, then fsyncs and renames it to path and writes
 * the sidecar. The partial file is removed on any failure. */
static int recv_into_cache(wrecv *w, const char *path, const char *ok)
{
    double t0 = shardlm_now_s();
    unlink(ok); /* a stale sidecar must never vouch for a half-written file */
    snprintf(w->part, sizeof w->part, "%s.part", path);
    w->fd = open(w->part, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0 || ftruncate(w->fd, (off_t)w->b->file_size)) {
        shardlm_err_set("cannot create the cache file %s: %s", w->part, strerror(errno));
        if (w->fd >= 0) close(w->fd);
        unlink(w->part);
        return SHARDLM_ERUNTIME;
    }
    int rc = recv_stream(w);
    if (!rc && fsync(w->fd)) {
        shardlm_err_set("fsync %s: %s", w->part, strerror(errno));
        rc = SHARDLM_ERUNTIME;
    }
    close(w->fd);
    if (!rc && rename(w->part, path)) {
        shardlm_err_set("cannot rename %s to %s: %s", w->part, path, strerror(errno));
        rc = SHARDLM_ERUNTIME;
    }
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", shardlm_err_get());
        unlink(w->part);
        shardlm_err_set("weights from rank 0 failed after %" PRIu64 " of %" PRIu64 " bytes: %s; removed the partial "
                        "cache file %s", w->got, w->b->total_bytes, why, w->part);
        return rc;
    }
    sidecar s = {w->b->fingerprint, w->b->file_size, shardlm_byte_ranges_hash(w->r, w->n), w->hash, w->r, w->n};
    if ((rc = sidecar_write(ok, &s))) return rc;
    double dt = shardlm_now_s() - t0;
    fprintf(stderr, "shardlm: rank %d: received %.1f MiB of weights from rank 0 in %.2f s (%.1f MiB/s) into %s\n",
            w->o->rank, (double)w->got / 1048576.0, dt, (double)w->got / 1048576.0 / (dt > 0 ? dt : 1e-9), path);
    return SHARDLM_OK;
}

/* Copies and checks WeightsBegin's ranges. */
static int begin_ranges(wrecv *w)
{
    const shardlm_ctrl_weights_begin *b = w->b;
    if (b->n_ranges == 0 || b->n_ranges > WEIGHTS_MAX_RANGES || b->file_size == 0 || b->file_size >> 50) {
        shardlm_err_set("rank 0 sent a WeightsBegin with %zu ranges for a file of %" PRIu64 " bytes", b->n_ranges,
                        b->file_size);
        return SHARDLM_EPEER;
    }
    if (!(w->r = calloc(b->n_ranges, sizeof *w->r))) return SHARDLM_ENOMEM;
    w->n = b->n_ranges;
    for (size_t i = 0; i < w->n; i++) {
        const shardlm_ctrl_range *x = &b->ranges[i];
        w->r[i] = (shardlm_byte_range){x->offset, x->length, x->count > 1 ? x->stride : x->length, x->count};
    }
    const char *bad = ranges_check(w->r, w->n, b->file_size);
    if (!bad && shardlm_byte_ranges_total(w->r, w->n) != b->total_bytes) bad = "total_bytes differs from the ranges";
    if (bad) {
        shardlm_err_set("rank 0 sent invalid weight ranges: %s", bad);
        return SHARDLM_EPEER;
    }
    return SHARDLM_OK;
}

static int recv_begin(shardlm_ctrl *c, const shardlm_weights_opts *o, shardlm_ctrl_msg *m)
{
    int rc = shardlm_ctrl_recv(c, o->begin_timeout_ms, m);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", shardlm_err_get());
        shardlm_err_set("waiting for rank 0 to send this rank's weights: %s", why);
        return rc;
    }
    if (m->kind != SHARDLM_CTRL_MSG_WEIGHTS_BEGIN) {
        shardlm_err_set("rank 0 sent message %d instead of this rank's weights (is rank 0 older than this worker?)",
                        (int)m->kind);
        shardlm_ctrl_msg_free(m);
        return SHARDLM_EPEER;
    }
    return SHARDLM_OK;
}

int shardlm_weights_receive(shardlm_ctrl *c, const shardlm_weights_opts *o, const shardlm_ctrl_weights_req *req,
                            char *path, size_t cap)
{
    char dir[WPATH_DIR], gguf[WPATH_FILE], ok[WPATH_AUX];
    int rc = shardlm_weights_cache_dir(o->cache_dir, dir, sizeof dir);
    shardlm_ctrl_msg m;
    if (!rc) rc = recv_begin(c, o, &m);
    if (rc) return rc;
    wrecv w = {o, c, &m.u.weights_begin, NULL, 0, "", -1, 0, 0};
    cache_paths(dir, w.b->fingerprint, o->world, o->rank, gguf, ok);
    if (w.b->use_cache) {
        if (req->cached_fingerprint != w.b->fingerprint) {
            shardlm_err_set("rank 0 said to use a cached copy %s that this rank does not have", gguf);
            rc = SHARDLM_EPEER;
        } else {
            fprintf(stderr, "shardlm: rank %d: weights from the cache %s (model unchanged, no transfer)\n", o->rank,
                    gguf);
        }
    } else {
        rc = begin_ranges(&w);
        if (!rc) rc = mkdir_p(dir);
        if (!rc) rc = recv_into_cache(&w, gguf, ok);
    }
    free(w.r);
    shardlm_ctrl_msg_free(&m);
    if (!rc && (size_t)snprintf(path, cap, "%s", gguf) >= cap) rc = SHARDLM_ERUNTIME;
    return rc;
}

/* ---- rank 0: serving ---- */

static int send_begin(shardlm_ctrl *c, int rank, const shardlm_gguf *g, const shardlm_byte_range *r, size_t n,
                      int use_cache, int timeout_ms)
{
    shardlm_ctrl_range *cr = calloc(n ? n : 1, sizeof *cr);
    if (!cr) return SHARDLM_ENOMEM;
    for (size_t i = 0; i < n; i++) cr[i] = (shardlm_ctrl_range){r[i].offset, r[i].length, r[i].stride, r[i].count};
    shardlm_ctrl_weights_begin b = {shardlm_gguf_file_size(g), shardlm_byte_ranges_total(r, n),
                                    shardlm_gguf_fingerprint(g), n, cr, use_cache != 0};
    int rc = shardlm_ctrl_send_weights_begin(c, rank, &b, timeout_ms);
    free(cr);
    return rc;
}

/* Fills buf from the file at the cursor: up to cap bytes over several pieces. */
static int fill_chunk(int fd, const char *path, wcursor *cur, uint8_t *buf, size_t cap, size_t *len)
{
    *len = 0;
    while (!cur_done(cur) && *len < cap) {
        uint64_t k = cur_left(cur) < cap - *len ? cur_left(cur) : cap - *len;
        ssize_t rd = pread(fd, buf + *len, (size_t)k, (off_t)cur_offset(cur));
        if (rd != (ssize_t)k) {
            shardlm_err_set("reading %s: %s", path, rd < 0 ? strerror(errno) : "the file got shorter");
            return SHARDLM_ERUNTIME;
        }
        *len += (size_t)k;
        cur_advance(cur, k);
    }
    return SHARDLM_OK;
}

static int send_stream(shardlm_ctrl *c, int rank, int fd, const char *path, const shardlm_byte_range *r, size_t n,
                       int timeout_ms)
{
    uint8_t *buf = malloc(WEIGHTS_CHUNK);
    if (!buf) return SHARDLM_ENOMEM;
    uint64_t h = SHARDLM_FNV_INIT;
    int rc = SHARDLM_OK;
    for (wcursor cur = {r, n, 0, 0, 0}; !rc && !cur_done(&cur);) {
        uint64_t at = cur_offset(&cur);
        size_t len = 0;
        if ((rc = fill_chunk(fd, path, &cur, buf, WEIGHTS_CHUNK, &len))) break;
        h = shardlm_fnv1a64(h, buf, len);
        rc = shardlm_ctrl_send_weights_chunk(c, rank, at, buf, len, timeout_ms);
    }
    free(buf);
    if (rc) return rc;
    return shardlm_ctrl_send_weights_end(c, rank, h, timeout_ms);
}

static int serve_one(shardlm_ctrl *c, int rank, const shardlm_gguf *g, int world, int timeout_ms)
{
    shardlm_ctrl_weights_req q = shardlm_ctrl_weights_request(c, rank);
    shardlm_byte_range *r = NULL;
    size_t n = 0;
    int rc = shardlm_model_shard_ranges(g, world, rank, &r, &n);
    if (rc) return rc;
    int use_cache = q.cached_fingerprint != 0 && q.cached_fingerprint == shardlm_gguf_fingerprint(g) &&
                    q.cached_ranges_hash == shardlm_byte_ranges_hash(r, n);
    const char *path = shardlm_gguf_path(g);
    int fd = use_cache ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    double t0 = shardlm_now_s();
    if (!use_cache && fd < 0) {
        shardlm_err_set("%s: cannot open to send weights: %s", path, strerror(errno));
        rc = SHARDLM_ERUNTIME;
    }
    if (!rc) rc = send_begin(c, rank, g, r, n, use_cache, timeout_ms);
    if (!rc && !use_cache) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        rc = send_stream(c, rank, fd, path, r, n, timeout_ms);
    }
    uint64_t total = shardlm_byte_ranges_total(r, n);
    double dt = shardlm_now_s() - t0;
    if (fd >= 0) close(fd);
    free(r);
    if (rc) {
        char why[512];
        snprintf(why, sizeof why, "%s", shardlm_err_get());
        shardlm_err_set("sending weights to rank %d: %s", rank, why);
    } else if (use_cache) {
        fprintf(stderr, "shardlm: rank %d has these weights cached: nothing sent\n", rank);
    } else {
        fprintf(stderr, "shardlm: sent rank %d its weights: %.1f MiB in %.2f s (%.1f MiB/s)\n", rank,
                (double)total / 1048576.0, dt, (double)total / 1048576.0 / (dt > 0 ? dt : 1e-9));
    }
    return rc;
}

int shardlm_weights_serve(shardlm_ctrl *c, const shardlm_gguf *g, int world, int timeout_ms)
{
    for (int r = 1; r < world; r++) {
        if (!shardlm_ctrl_weights_request(c, r).need_weights) continue;
        int rc = serve_one(c, r, g, world, timeout_ms);
        if (rc) return rc;
    }
    return SHARDLM_OK;
}
