/* auth.c - cluster-token authentication of rank-to-rank sockets with a
 * mutual HMAC-SHA256 challenge-response (OpenSSL's libcrypto). The token never goes
 * on the wire: each side proves it knows it by a MAC over both sides' fresh
 * nonces and its own role, so a recorded proof is useless on the next
 * connection and a proof cannot be reflected back at its sender. */
#include "shardlm_auth.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "shardlm_common.h"

#define AUTH_MAGIC "SLMA"
#define AUTH_LABEL "shardlm-cluster-auth-v1"
#define AUTH_HELLO_BYTES (4 + SHARDLM_AUTH_NONCE_BYTES)

static char g_token[SHARDLM_AUTH_MAX_TOKEN + 1];
static size_t g_token_len;

int shardlm_auth_hmac(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen,
                      uint8_t out[SHARDLM_AUTH_MAC_BYTES])
{
    static const uint8_t empty[1];
    unsigned int len = 0;
    if (klen > INT_MAX) return SHARDLM_EINPUT;
    if (!HMAC(EVP_sha256(), klen ? key : empty, (int)klen, mlen ? msg : empty, mlen, out, &len) ||
        len != SHARDLM_AUTH_MAC_BYTES)
        return SHARDLM_ERUNTIME;
    return SHARDLM_OK;
}

int shardlm_auth_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    /* compare MACs of both: equal lengths are then not required, and the
     * time does not depend on where the strings differ */
    uint8_t ma[SHARDLM_AUTH_MAC_BYTES], mb[SHARDLM_AUTH_MAC_BYTES];
    static const uint8_t k[] = "shardlm-compare";
    if (shardlm_auth_hmac(k, sizeof k, (const uint8_t *)a, la, ma) ||
        shardlm_auth_hmac(k, sizeof k, (const uint8_t *)b, lb, mb))
        return 0;
    return CRYPTO_memcmp(ma, mb, sizeof ma) == 0 && la == lb;
}

int shardlm_auth_set_token(const char *token)
{
    size_t n = token ? strlen(token) : 0;
    if (n > SHARDLM_AUTH_MAX_TOKEN) {
        shardlm_err_set("cluster token: %zu bytes is over the %d-byte limit", n, SHARDLM_AUTH_MAX_TOKEN);
        return SHARDLM_EINPUT;
    }
    OPENSSL_cleanse(g_token, sizeof g_token);
    if (n) memcpy(g_token, token, n);
    g_token_len = n;
    return SHARDLM_OK;
}

int shardlm_auth_enabled(void) { return g_token_len > 0; }

int shardlm_auth_read_secret(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        shardlm_err_set("cannot read secret file %s: %s", path, strerror(errno));
        return SHARDLM_EINPUT;
    }
    size_t n = fread(out, 1, cap, f);
    int big = n == cap;
    fclose(f);
    if (big) {
        shardlm_err_set("secret file %s is over %zu bytes", path, cap - 1);
        return SHARDLM_EINPUT;
    }
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ')) n--;
    out[n] = 0;
    if (!n || strlen(out) != n) {
        shardlm_err_set("secret file %s is empty or holds a NUL byte", path);
        return SHARDLM_EINPUT;
    }
    return SHARDLM_OK;
}

int shardlm_auth_load_file(const char *path)
{
    char buf[SHARDLM_AUTH_MAX_TOKEN + 2];
    int rc = shardlm_auth_read_secret(path, buf, sizeof buf);
    if (!rc) rc = shardlm_auth_set_token(buf);
    OPENSSL_cleanse(buf, sizeof buf);
    return rc;
}

int shardlm_auth_from_env(void)
{
    if (g_token_len) return SHARDLM_OK;
    const char *t = getenv("SHARDLM_CLUSTER_TOKEN");
    if (t && *t) return shardlm_auth_set_token(t);
    const char *f = getenv("SHARDLM_CLUSTER_TOKEN_FILE");
    if (f && *f) return shardlm_auth_load_file(f);
    return SHARDLM_OK;
}

/* ---- the handshake ---- */

static int auth_io(int fd, void *p, size_t n, int writing, uint64_t deadline, const char *who)
{
    int rc = shardlm_io_full(fd, p, n, writing, deadline);
    if (rc == SHARDLM_ETIMEDOUT)
        shardlm_err_set("cluster authentication with %s: timed out", who);
    else if (rc)
        shardlm_err_set("cluster authentication with %s refused: the peer closed the connection (%s; "
                        "does it have the same cluster token?)", who, errno ? strerror(errno) : "closed");
    return rc;
}

/* MAC over label, the prover's role and both nonces, client's first. */
static void auth_proof(int server_role, const uint8_t *nc, const uint8_t *ns, uint8_t out[SHARDLM_AUTH_MAC_BYTES])
{
    uint8_t m[sizeof AUTH_LABEL + 1 + 2 * SHARDLM_AUTH_NONCE_BYTES];
    memcpy(m, AUTH_LABEL, sizeof AUTH_LABEL);
    m[sizeof AUTH_LABEL] = server_role ? 'S' : 'C';
    memcpy(m + sizeof AUTH_LABEL + 1, nc, SHARDLM_AUTH_NONCE_BYTES);
    memcpy(m + sizeof AUTH_LABEL + 1 + SHARDLM_AUTH_NONCE_BYTES, ns, SHARDLM_AUTH_NONCE_BYTES);
    shardlm_auth_hmac((const uint8_t *)g_token, g_token_len, m, sizeof m, out);
}

typedef struct {
    uint8_t mine[SHARDLM_AUTH_NONCE_BYTES], theirs[SHARDLM_AUTH_NONCE_BYTES];
} auth_nonces;

static int auth_read_hello(int fd, uint64_t deadline, const char *who, uint8_t *nonce)
{
    uint8_t magic[4];
    int rc = auth_io(fd, magic, 4, 0, deadline, who);
    if (rc) return rc;
    if (memcmp(magic, AUTH_MAGIC, 4) != 0) {
        shardlm_err_set("cluster authentication with %s refused: it sent no cluster-token handshake (no token "
                        "configured there, or not a shardlm rank)", who);
        return SHARDLM_EPEER;
    }
    return auth_io(fd, nonce, SHARDLM_AUTH_NONCE_BYTES, 0, deadline, who);
}

int shardlm_auth_handshake(const int *fds, const int *is_server, int n, uint64_t deadline_ns,
                           const char *const *who)
{
    if (!g_token_len) return SHARDLM_OK;
    auth_nonces *nn = calloc((size_t)n, sizeof *nn);
    if (!nn) return SHARDLM_ENOMEM;
    int rc = SHARDLM_OK;
    for (int i = 0; i < n && !rc; i++) { /* phase 1: every hello out before any read */
        uint8_t h[AUTH_HELLO_BYTES];
        if (RAND_bytes(nn[i].mine, SHARDLM_AUTH_NONCE_BYTES) != 1) {
            shardlm_err_set("cluster authentication: no random bytes for a nonce");
            rc = SHARDLM_ERUNTIME;
            break;
        }
        memcpy(h, AUTH_MAGIC, 4);
        memcpy(h + 4, nn[i].mine, SHARDLM_AUTH_NONCE_BYTES);
        rc = auth_io(fds[i], h, sizeof h, 1, deadline_ns, who[i]);
    }
    for (int i = 0; i < n && !rc; i++) rc = auth_read_hello(fds[i], deadline_ns, who[i], nn[i].theirs);
    for (int i = 0; i < n && !rc; i++) {
        uint8_t p[SHARDLM_AUTH_MAC_BYTES];
        const uint8_t *nc = is_server[i] ? nn[i].theirs : nn[i].mine, *ns = is_server[i] ? nn[i].mine : nn[i].theirs;
        auth_proof(is_server[i], nc, ns, p);
        rc = auth_io(fds[i], p, sizeof p, 1, deadline_ns, who[i]);
    }
    for (int i = 0; i < n && !rc; i++) {
        uint8_t got[SHARDLM_AUTH_MAC_BYTES], want[SHARDLM_AUTH_MAC_BYTES];
        const uint8_t *nc = is_server[i] ? nn[i].theirs : nn[i].mine, *ns = is_server[i] ? nn[i].mine : nn[i].theirs;
        rc = auth_io(fds[i], got, sizeof got, 0, deadline_ns, who[i]);
        if (rc) break;
        auth_proof(!is_server[i], nc, ns, want);
        if (CRYPTO_memcmp(got, want, sizeof got) != 0) {
            shardlm_err_set("cluster authentication with %s refused: wrong cluster token", who[i]);
            rc = SHARDLM_EPEER;
        }
    }
    OPENSSL_cleanse(nn, (size_t)n * sizeof *nn);
    free(nn);
    return rc;
}

/* ---- one-way proofs over a nonce sent on an authenticated channel ---- */

int shardlm_auth_nonce(uint8_t out[SHARDLM_AUTH_NONCE_BYTES])
{
    if (RAND_bytes(out, SHARDLM_AUTH_NONCE_BYTES) == 1) return SHARDLM_OK;
    shardlm_err_set("cluster authentication: no random bytes for a nonce");
    return SHARDLM_ERUNTIME;
}

int shardlm_auth_nonce_proof(const char *purpose, const uint8_t nonce[SHARDLM_AUTH_NONCE_BYTES],
                             uint8_t out[SHARDLM_AUTH_MAC_BYTES])
{
    memset(out, 0, SHARDLM_AUTH_MAC_BYTES);
    if (!g_token_len) return SHARDLM_OK;
    uint8_t m[sizeof AUTH_LABEL + 64 + SHARDLM_AUTH_NONCE_BYTES];
    size_t pl = strnlen(purpose, 63);
    memcpy(m, AUTH_LABEL, sizeof AUTH_LABEL); /* with its NUL: label and purpose cannot run together */
    memcpy(m + sizeof AUTH_LABEL, purpose, pl);
    m[sizeof AUTH_LABEL + pl] = 0;
    memcpy(m + sizeof AUTH_LABEL + pl + 1, nonce, SHARDLM_AUTH_NONCE_BYTES);
    return shardlm_auth_hmac((const uint8_t *)g_token, g_token_len, m, sizeof AUTH_LABEL + pl + 1 +
                             SHARDLM_AUTH_NONCE_BYTES, out);
}

int shardlm_auth_nonce_check(const char *purpose, const uint8_t nonce[SHARDLM_AUTH_NONCE_BYTES],
                             const uint8_t proof[SHARDLM_AUTH_MAC_BYTES])
{
    if (!g_token_len) return SHARDLM_OK;
    uint8_t want[SHARDLM_AUTH_MAC_BYTES];
    int rc = shardlm_auth_nonce_proof(purpose, nonce, want);
    if (rc) return rc;
    if (CRYPTO_memcmp(want, proof, sizeof want) != 0) {
        shardlm_err_set("wrong cluster token");
        return SHARDLM_EPEER;
    }
    return SHARDLM_OK;
}

/* ---- the handshake in steps, for an event loop ---- */

int shardlm_auth_begin(shardlm_auth_steps *st, int is_server, uint8_t hello[SHARDLM_AUTH_HELLO_BYTES])
{
    memset(st, 0, sizeof *st);
    st->server = is_server;
    int rc = shardlm_auth_nonce(st->mine);
    if (rc) return rc;
    memcpy(hello, AUTH_MAGIC, 4);
    memcpy(hello + 4, st->mine, SHARDLM_AUTH_NONCE_BYTES);
    return SHARDLM_OK;
}

int shardlm_auth_answer(shardlm_auth_steps *st, const uint8_t hello[SHARDLM_AUTH_HELLO_BYTES],
                        uint8_t proof[SHARDLM_AUTH_MAC_BYTES], const char *who)
{
    if (memcmp(hello, AUTH_MAGIC, 4) != 0) {
        shardlm_err_set("cluster authentication with %s refused: it sent no cluster-token handshake (no token "
                        "configured there, or not a shardlm rank)", who);
        return SHARDLM_EPEER;
    }
    memcpy(st->theirs, hello + 4, SHARDLM_AUTH_NONCE_BYTES);
    const uint8_t *nc = st->server ? st->theirs : st->mine, *ns = st->server ? st->mine : st->theirs;
    auth_proof(st->server, nc, ns, proof);
    return SHARDLM_OK;
}

int shardlm_auth_check(const shardlm_auth_steps *st, const uint8_t proof[SHARDLM_AUTH_MAC_BYTES], const char *who)
{
    uint8_t want[SHARDLM_AUTH_MAC_BYTES];
    const uint8_t *nc = st->server ? st->theirs : st->mine, *ns = st->server ? st->mine : st->theirs;
    auth_proof(!st->server, nc, ns, want);
    if (CRYPTO_memcmp(proof, want, sizeof want) != 0) {
        shardlm_err_set("cluster authentication with %s refused: wrong cluster token", who);
        return SHARDLM_EPEER;
    }
    return SHARDLM_OK;
}
