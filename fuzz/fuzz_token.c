/*
 * hr_token_verify on arbitrary bytes. The first byte picks the mode:
 * even, the rest is a token as a client would send it; odd, the rest is
 * "<header JSON>\n<claims JSON>", which the harness signs with the HS256 key
 * so the claims checker behind the signature is reached too.
 */
#include "herald/hr_alloc.h"
#include "herald/hr_json.h"
#include "herald/hr_token.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SECRET "fuzz-secret-fuzz-secret-fuzz-secret!"

static hr_token_verifier_t *verifier; /* the harness's one fixture */

static void
write_pub(EVP_PKEY *k, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || k == NULL || PEM_write_PUBKEY(f, k) != 1)
        abort();
    fclose(f);
    EVP_PKEY_free(k);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char dir[] = "/tmp/fuzz_token.XXXXXX", rsa[64], ec[64];
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(rsa, sizeof(rsa), "%s/rsa.pem", dir);
    snprintf(ec, sizeof(ec), "%s/ec.pem", dir);
    write_pub(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048), rsa);
    write_pub(EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"), ec);
    hr_token_key_config_t keys[] = {
        {.kid = "hs1", .alg = "HS256", .secret = SECRET},
        {.kid = "rs1", .alg = "RS256", .public_key_file = rsa},
        {.kid = "es1", .alg = "ES256", .public_key_file = ec},
    };
    hr_token_config_t cfg = {
        .keys = keys, .nkeys = 3, .leeway_s = 30, .issuer = "iss", .audience = "aud"};
    char err[256];
    if (hr_token_verifier_create(&cfg, &verifier, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_token: %s\n", err);
        abort();
    }
    unlink(rsa);
    unlink(ec);
    rmdir(dir);
    return 0;
}

static size_t
b64url(const uint8_t *p, size_t n, char *o)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            o[k++] = a[acc >> bits & 63];
        }
    }
    if (bits > 0)
        o[k++] = a[acc << (6 - bits) & 63];
    return k;
}

static void
verify(const char *tok, size_t len)
{
    hr_token_claims_t c;
    char err[256];
    int rc = hr_token_verify(verifier, tok, len, 1700000000, &c, err, sizeof(err));
    if (rc == 0) {
        /* A verified token's claims obey the rules the services rely on. */
        if (!hr_token_user_id_valid(c.sub, strlen(c.sub)))
            abort();
        for (size_t i = 0; i < c.nrooms; i++) {
            if (!hr_room_pattern_valid(c.rooms[i]))
                abort();
        }
        hr_token_room_allowed(&c, "lobby");
        hr_token_check_cutoff(&c, 1600000000);
        hr_token_claims_free(&c);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 2 * HR_TOKEN_MAX)
        return 0;
    if ((data[0] & 1) == 0) {
        char *tok = hr_malloc(size - 1 + 1);
        memcpy(tok, data + 1, size - 1);
        verify(tok, size - 1);
        hr_free(tok);
        return 0;
    }
    const uint8_t *nl = memchr(data + 1, '\n', size - 1);
    if (nl == NULL)
        return 0;
    size_t hl = (size_t)(nl - data - 1), cl = size - 1 - hl - 1;
    char *tok = hr_malloc((hl + cl) * 4 / 3 + 64);
    size_t k = b64url(data + 1, hl, tok);
    tok[k++] = '.';
    k += b64url(nl + 1, cl, tok + k);
    unsigned char mac[32];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)tok, k, mac, &ml);
    tok[k++] = '.';
    k += b64url(mac, ml, tok + k);
    verify(tok, k);
    hr_free(tok);
    return 0;
}
