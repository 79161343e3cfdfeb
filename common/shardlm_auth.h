/* shardlm_auth.h - the cluster token and the mutual HMAC-SHA256
 * challenge-response that every rank-to-rank connection runs before any
 * other byte; also constant-time compares for HTTP API keys. */
#ifndef SHARDLM_AUTH_H
#define SHARDLM_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define SHARDLM_AUTH_MAC_BYTES 32
#define SHARDLM_AUTH_NONCE_BYTES 32
#define SHARDLM_AUTH_MAX_TOKEN 4096

/* HMAC-SHA256 of msg under a key of any length (RFC 2104). */
int shardlm_auth_hmac(const uint8_t *key, size_t klen, const uint8_t *msg, size_t mlen,
                      uint8_t out[SHARDLM_AUTH_MAC_BYTES]);

/* Constant-time equality of two strings (length leaks, content does not). */
int shardlm_auth_equal(const char *a, const char *b);

/* The process-wide cluster token. set: NULL or "" clears it. load_file
 * reads FILE (trailing newline dropped). from_env: SHARDLM_CLUSTER_TOKEN,
 * else the file in SHARDLM_CLUSTER_TOKEN_FILE, when no token is set yet. */
int shardlm_auth_set_token(const char *token);
int shardlm_auth_load_file(const char *path);
int shardlm_auth_from_env(void);
int shardlm_auth_enabled(void);

/* Reads a small secret file (token, API key) into out. */
int shardlm_auth_read_secret(const char *path, char *out, size_t cap);

/* Mutual challenge-response on n connected sockets at once (blocking or
 * not): each side sends a fresh nonce, then its proof over both nonces and
 * its role, then checks the other's proof. is_server[i] says which role this
 * side plays on fds[i]. Running every socket of a rank through one call lets
 * a ring authenticate its two hops without a cyclic wait. Without a token it
 * returns SHARDLM_OK and sends nothing. A refusal names who[i]. */
int shardlm_auth_handshake(const int *fds, const int *is_server, int n, uint64_t deadline_ns,
                           const char *const *who);

/* The same handshake in steps, for an event loop (the ring's set-up): begin
 * writes this side's hello (magic and a fresh nonce) to send; answer takes
 * the peer's hello and writes this side's proof to send; check verifies the
 * peer's proof. A failure names who, as the blocking call does. Only with a
 * token set (shardlm_auth_enabled). */
#define SHARDLM_AUTH_HELLO_BYTES (4 + SHARDLM_AUTH_NONCE_BYTES)
typedef struct {
    uint8_t mine[SHARDLM_AUTH_NONCE_BYTES], theirs[SHARDLM_AUTH_NONCE_BYTES];
    int server;
} shardlm_auth_steps;
int shardlm_auth_begin(shardlm_auth_steps *st, int is_server, uint8_t hello[SHARDLM_AUTH_HELLO_BYTES]);
int shardlm_auth_answer(shardlm_auth_steps *st, const uint8_t hello[SHARDLM_AUTH_HELLO_BYTES],
                        uint8_t proof[SHARDLM_AUTH_MAC_BYTES], const char *who);
int shardlm_auth_check(const shardlm_auth_steps *st, const uint8_t proof[SHARDLM_AUTH_MAC_BYTES], const char *who);

/* A one-way proof for a channel that has no room for a round trip: the
 * verifier sends a fresh nonce over a connection already authenticated by
 * the handshake above, and the prover answers on the other channel with
 * HMAC(token, label, purpose, nonce). The shared-memory hand-over uses it
 * on its unix socket. check: SHARDLM_OK, or SHARDLM_EPEER ("wrong cluster
 * token"), compared in constant time. Without a token, prove writes zeros
 * and check accepts anything. */
int shardlm_auth_nonce_proof(const char *purpose, const uint8_t nonce[SHARDLM_AUTH_NONCE_BYTES],
                             uint8_t out[SHARDLM_AUTH_MAC_BYTES]);
int shardlm_auth_nonce_check(const char *purpose, const uint8_t nonce[SHARDLM_AUTH_NONCE_BYTES],
                             const uint8_t proof[SHARDLM_AUTH_MAC_BYTES]);
/* Fresh random bytes for a nonce; SHARDLM_ERUNTIME when there are none. */
int shardlm_auth_nonce(uint8_t out[SHARDLM_AUTH_NONCE_BYTES]);

#endif
