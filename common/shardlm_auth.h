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

#endif
