/* fuzz_util.h - what the libFuzzer harnesses share: the readers under test
 * take file paths, so inputs go through one memfd per process; the
 * fixtures they need (a real vocabulary, a model) are found from
 * SHARDLM_SRC / SHARDLM_SHARED or the paths CMake compiled in. */
#ifndef SHARDLM_FUZZ_UTIL_H
#define SHARDLM_FUZZ_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The input as a file: "/proc/self/fd/N" of a memfd rewritten per call. */
static inline const char *fuzz_as_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("shardlm-fuzz", MFD_CLOEXEC);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
        perror("memfd write");
        abort();
    }
    return path;
}

/* dir/rel under $ENV (or the compiled-in default); NULL when ENV is unset and
 * there is no default. */
static inline const char *fuzz_path(char *buf, size_t cap, const char *env, const char *dflt, const char *rel)
{
    const char *d = getenv(env);
    if (!d || !*d) d = dflt;
    if (!d || !*d) return NULL;
    snprintf(buf, cap, "%s/%s", d, rel);
    return buf;
}

#ifndef SHARDLM_FUZZ_SRC_DIR
#define SHARDLM_FUZZ_SRC_DIR ""
#endif
#ifndef SHARDLM_FUZZ_SHARED_DIR
#define SHARDLM_FUZZ_SHARED_DIR ""
#endif

/* A fixture from the source tree (always there: a failure to load it aborts). */
static inline const char *fuzz_src(char *buf, size_t cap, const char *rel)
{
    return fuzz_path(buf, cap, "SHARDLM_SRC", SHARDLM_FUZZ_SRC_DIR, rel);
}

/* A fixture from ../shared: NULL when missing, unless CI=true, where a
 * missing one is fatal (the house rule for tests that need ../shared). */
static inline const char *fuzz_shared(char *buf, size_t cap, const char *rel)
{
    const char *p = fuzz_path(buf, cap, "SHARDLM_SHARED", SHARDLM_FUZZ_SHARED_DIR, rel);
    if (p && access(p, R_OK) == 0) return p;
    const char *ci = getenv("CI");
    if (ci && strcmp(ci, "true") == 0) {
        fprintf(stderr, "fuzz: %s is missing (CI=true: ../shared is required)\n", p ? p : rel);
        abort();
    }
    return NULL;
}

#endif
