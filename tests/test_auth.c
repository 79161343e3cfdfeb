/* test_auth.c - HMAC-SHA256 against RFC 4231 and the cluster-token
 * handshake over socket pairs: same token, wrong token, garbage bytes. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shardlm_auth.h"
#include "shardlm_common.h"

static void hex(const uint8_t *m, char *out)
{
    for (int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", m[i]);
}

Test(auth, rfc4231_vectors)
{
    uint8_t k1[20], m[32];
    char h[65];
    memset(k1, 0x0b, sizeof k1);
    cr_assert_eq(shardlm_auth_hmac(k1, 20, (const uint8_t *)"Hi There", 8, m), 0);
    hex(m, h);
    cr_assert_str_eq(h, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    const char *d2 = "what do ya want for nothing?";
    cr_assert_eq(shardlm_auth_hmac((const uint8_t *)"Jefe", 4, (const uint8_t *)d2, strlen(d2), m), 0);
    hex(m, h);
    cr_assert_str_eq(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

typedef struct {
    int fd, rc;
    const char *token;
} side;

static void *server_side(void *p)
{
    side *s = p;
    int srv = 1;
    const char *w = "test client";
    s->rc = shardlm_auth_handshake(&s->fd, &srv, 1, shardlm_now_ns() + 3000000000ull, &w);
    return NULL;
}

static int run_pair(const char *client_bytes, size_t n)
{
    int fds[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    side s = {fds[1], 99, NULL};
    pthread_t t;
    pthread_create(&t, NULL, server_side, &s);
    if (client_bytes) {
        cr_assert_eq(write(fds[0], client_bytes, n), (ssize_t)n);
        shutdown(fds[0], SHUT_WR);
    } else {
        int cli = 0;
        const char *w = "test server";
        cr_assert_eq(shardlm_auth_handshake(&fds[0], &cli, 1, shardlm_now_ns() + 3000000000ull, &w), 0);
    }
    pthread_join(t, NULL);
    close(fds[0]);
    close(fds[1]);
    return s.rc;
}

Test(auth, same_token_and_garbage)
{
    cr_assert_eq(shardlm_auth_set_token("s3cret"), 0);
    cr_assert_eq(run_pair(NULL, 0), 0);
    cr_assert_neq(run_pair("GET / HTTP/1.1\r\n\r\n", 18), 0);
    char fake[4 + 32 + 32];
    memcpy(fake, "SLMA", 4);
    memset(fake + 4, 7, sizeof fake - 4); /* a nonce and a made-up proof */
    cr_assert_neq(run_pair(fake, sizeof fake), 0);
    cr_assert_eq(shardlm_auth_equal("abc", "abc"), 1);
    cr_assert_eq(shardlm_auth_equal("abc", "abd"), 0);
    cr_assert_eq(shardlm_auth_equal("abc", "abcd"), 0);
    shardlm_auth_set_token(NULL);
}
