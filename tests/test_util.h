/* test_util.h - helpers shared by the Criterion tests: locating ../shared
 * (missing is a failure when CI=true, a skip otherwise) and running the
 * shardlm binary with a time limit while capturing its output. */
#ifndef SHARDLM_TEST_UTIL_H
#define SHARDLM_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Full path of a file under the shared models directory, or NULL after
 * skipping (outside CI) or failing (CI=true) the current test. */
const char *tu_shared(const char *rel);

/* Path of the shardlm binary under test. */
const char *tu_bin(void);

/* A fresh scratch directory for this test; removed at exit. */
const char *tu_tmpdir(void);

typedef struct {
    int exit_code; /* exit status, or 128 + signal, or -1 on timeout */
    char *out;     /* NUL-terminated stdout, owned */
    char *err;     /* NUL-terminated stderr, owned */
    size_t out_len;
} tu_result;

/* Runs argv (argv[0] is a path) with stdin from /dev/null (or stdin_text),
 * killing it after timeout_s seconds. */
tu_result tu_run(char *const argv[], const char *stdin_text, int timeout_s);
void tu_result_free(tu_result *r);

/* Runs argv (60 s limit) and asserts its exit code and that stderr holds
 * phrase. */
void tu_expect_exit(char *const argv[], int code, const char *phrase);

/* Starts argv (argv[0] a path) in the background in its own process
 * group: stdin from /dev/null, stdout to out_path, stderr to err_path (the
 * same path sends both to one file; NULL means /dev/null). env lists
 * "NAME=VALUE" to set or "NAME" to unset in the child (NULL-terminated, may
 * be NULL). */
pid_t tu_spawn(char *const argv[], const char *const env[], const char *out_path, const char *err_path);
/* Exit code, 128 + signal, or -1 after timeout_s (the group is killed). */
int tu_wait(pid_t pid, int timeout_s);

/* The kernel ISAs tests loop over; shardlm_kernels_force_isa refuses the
 * ones this CPU lacks, and the test skips those. */
extern const char *const tu_isas[];
#define TU_N_ISAS 5
/* A xorshift64 stream of floats uniform in [-1, 1). Criterion runs each
 * test in a fresh process, so every test starts from the same seed. */
float tu_frand(void);

/* Reaps pids[0..n-1] within limit_ms (SIGKILLing and failing the test for
 * the rest), storing wait statuses and, when exit_ms is not NULL, each exit
 * time in ms since t0_ns. Reaped entries are zeroed. */
void tu_reap_all(pid_t *pids, int n, int *st, double *exit_ms, uint64_t t0_ns, int limit_ms);
/* Fails the test when this process still has a child. */
void tu_assert_no_children(void);
/* Sleeps ms milliseconds. */
void tu_nap_ms(int ms);

/* Reads a whole file; returns NULL when it cannot. */
char *tu_read_file(const char *path, size_t *len);
/* Writes a file; returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t len);

/* Copies the GGUF at in to out with tokens ids[i] renamed pieces[i] and
 * made control tokens (token_type 3), e.g. to give a small model a
 * "[TOOL_CALLS]" token. Asserts on failure. */
void tu_gguf_with_control_tokens(const char *in, const char *out, const int32_t *ids, const char *const *pieces,
                                 int n);

#endif
