/*
 * hr_token: JWT verification. Tokens are forged here with OpenSSL directly
 * (HMAC, RSA and ECDSA signatures in the JOSE format), independently of
 * libjwt, so any header or claim can be written and interoperability with
 * other signers is what is tested; RSA and EC keys are generated per run.
 */
#include "hr_test.h"

#include "common/src/hr_token.c"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <unistd.h>

#define NOW 1700000000LL
#define SECRET "0123456789abcdef0123456789abcdef-hs"
#define SECRET2 "another-secret-another-secret-another"

typedef struct {
    char dir[64];
    char rsa_pub[96], ec_pub[96], rsa1024_pub[96];
    EVP_PKEY *rsa, *rsa_other, *ec, *ec_other;
    char *rsa_pem; /* the RS256 public key as text: the "secret" of a key confusion */
} fixture_t;

static void
write_pub(EVP_PKEY *k, const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || PEM_write_PUBKEY(f, k) != 1)
        abort();
    fclose(f);
}

static char fixture_dir[64];

static void
fixture_cleanup(void)
{
    const char *names[] = {"rsa.pem", "ec.pem", "rsa1024.pem", "herald.conf", "secret"};
    char p[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(names); i++) {
        snprintf(p, sizeof(p), "%s/%s", fixture_dir, names[i]);
        unlink(p);
    }
    rmdir(fixture_dir);
}

/* Keys are generated once per executable (RSA takes a while). */
static fixture_t *
fx(void)
{
    static fixture_t f;
    static int ready;
    if (ready)
        return &f;
    snprintf(f.dir, sizeof(f.dir), "/tmp/test_token.XXXXXX");
    if (mkdtemp(f.dir) == NULL)
        abort();
    memcpy(fixture_dir, f.dir, sizeof(fixture_dir));
    atexit(fixture_cleanup);
    f.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    f.rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    f.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    f.ec_other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    if (!f.rsa || !f.rsa_other || !f.ec || !f.ec_other || !small)
        abort();
    snprintf(f.rsa_pub, sizeof(f.rsa_pub), "%s/rsa.pem", f.dir);
    snprintf(f.ec_pub, sizeof(f.ec_pub), "%s/ec.pem", f.dir);
    snprintf(f.rsa1024_pub, sizeof(f.rsa1024_pub), "%s/rsa1024.pem", f.dir);
    write_pub(f.rsa, f.rsa_pub);
    write_pub(f.ec, f.ec_pub);
    write_pub(small, f.rsa1024_pub);
    EVP_PKEY_free(small);
    size_t n;
    if (hr_token_read_file(f.rsa_pub, &f.rsa_pem, &n, NULL, 0) != 0)
        abort();
    ready = 1;
    return &f;
}

static char *
b64url(const unsigned char *p, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *o = hr_malloc(n * 4 / 3 + 4), *q = o;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = acc << 8 | p[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            *q++ = a[acc >> bits & 63];
        }
    }
    if (bits > 0)
        *q++ = a[acc << (6 - bits) & 63];
    *q = '\0';
    return o;
}

typedef enum { SIG_NONE, SIG_HS, SIG_RS, SIG_ES, SIG_ES_DER } sig_t;

/* header.claims.signature, signed as asked; key is the HMAC secret or an EVP_PKEY. */
static char *
forge(const char *header, const char *claims, sig_t how, const void *key)
{
    char *h = b64url((const unsigned char *)header, strlen(header));
    char *c = b64url((const unsigned char *)claims, strlen(claims));
    size_t il = strlen(h) + 1 + strlen(c);
    char *input = hr_malloc(il + 1);
    snprintf(input, il + 1, "%s.%s", h, c);
    unsigned char sig[1024];
    size_t sl = 0;
    if (how == SIG_HS) {
        unsigned int l = 0;
        HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)input, il, sig, &l);
        sl = l;
    } else if (how != SIG_NONE) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char der[512];
        size_t dl = sizeof(der);
        if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, (EVP_PKEY *)key) != 1 ||
            EVP_DigestSign(md, der, &dl, (const unsigned char *)input, il) != 1)
            abort();
        EVP_MD_CTX_free(md);
        if (how == SIG_ES) {
            /* JOSE wants R || S, 32 bytes each, not the DER sequence OpenSSL writes. */
            const unsigned char *pp = der;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &pp, (long)dl);
            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            ECDSA_SIG_free(es);
            sl = 64;
        } else {
            memcpy(sig, der, dl);
            sl = dl;
        }
    }
    char *s = b64url(sig, sl);
    size_t tl = il + 1 + strlen(s);
    char *tok = hr_malloc(tl + 1);
    snprintf(tok, tl + 1, "%s.%s", input, s);
    hr_free(h);
    hr_free(c);
    hr_free(input);
    hr_free(s);
    return tok;
}

static hr_token_verifier_t *
verifier(int leeway, const char *iss, const char *aud)
{
    fixture_t *f = fx();
    hr_token_key_config_t keys[] = {
        {.kid = "hs1", .alg = "HS256", .secret = SECRET},
        {.kid = "hs2", .alg = "HS256", .secret = SECRET2},
        {.kid = "rs1", .alg = "RS256", .public_key_file = f->rsa_pub},
        {.kid = "es1", .alg = "ES256", .public_key_file = f->ec_pub},
    };
    hr_token_config_t cfg = {.keys = keys,
                             .nkeys = HR_ARRAY_LEN(keys),
                             .leeway_s = leeway,
                             .issuer = (char *)iss,
                             .audience = (char *)aud};
    hr_token_verifier_t *v = NULL;
    char err[256] = "";
    if (hr_token_verifier_create(&cfg, &v, err, sizeof(err)) != 0) {
        HR_FAIL("verifier_create: %s", err);
        abort();
    }
    return v;
}

/* Verifies tok with v and checks the code; the error text never quotes the token. */
static int
check_verify(hr_token_verifier_t *v, const char *tok, int64_t now, int want)
{
    hr_token_claims_t c;
    char err[256] = "";
    int rc = hr_token_verify(v, tok, strlen(tok), now, &c, err, sizeof(err));
    int ok = HR_CHECK_EQ_INT(rc, want);
    if (!ok)
        fprintf(stderr, "#   (%s: %s) err=%s\n", hr_token_reason(rc), hr_token_reason(want), err);
    if (rc == 0)
        hr_token_claims_free(&c);
    else
        ok &= HR_CHECK(err[0] != '\0');
    const char *dot = strchr(tok, '.');
    if (dot != NULL && strlen(dot) > 8)
        ok &= HR_CHECK(strstr(err, dot + 1) == NULL && strstr(err, "SECRETSUB") == NULL);
    return ok;
}

#define HDR_HS1 "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"hs1\"}"
#define CLAIMS_OK "{\"sub\":\"alice\",\"exp\":1700000600,\"iat\":1700000000}"

static void
check_forged(const char *header, const char *claims, sig_t how, const void *key, int want)
{
    hr_token_verifier_t *v = verifier(30, NULL, NULL);
    char *tok = forge(header, claims, how, key);
    check_verify(v, tok, NOW, want);
    hr_free(tok);
    hr_token_verifier_destroy(v);
}

HR_TEST(hs256_token_verifies_and_fills_claims)
{
    hr_token_verifier_t *v = verifier(30, NULL, NULL);
    char *tok =
        forge(HDR_HS1,
              "{\"sub\":\"alice\",\"exp\":1700000600,\"iat\":1699999990,\"rooms\":[\"lobby\","
              "\"team:*\"]}",
              SIG_HS, SECRET);
    hr_token_claims_t c;
    char err[256] = "";
    HR_REQUIRE_EQ_INT(hr_token_verify(v, tok, strlen(tok), NOW, &c, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(c.sub, "alice");
    HR_CHECK_EQ_INT(c.exp, 1700000600);
    HR_CHECK_EQ_INT(c.iat, 1699999990);
    HR_CHECK(c.has_iat && c.has_rooms);
    HR_CHECK_EQ_UINT(c.nrooms, 2);
    HR_CHECK(hr_token_room_allowed(&c, "lobby"));
    HR_CHECK(hr_token_room_allowed(&c, "team:red"));
    HR_CHECK(!hr_token_room_allowed(&c, "orders"));
    hr_token_claims_free(&c);
    hr_free(tok);
    hr_token_verifier_destroy(v);
}

HR_TEST(each_key_is_picked_by_kid_so_secrets_rotate)
{
    check_forged("{\"alg\":\"HS256\",\"kid\":\"hs2\"}", CLAIMS_OK, SIG_HS, SECRET2, 0);
    /* hs2's secret under hs1's kid is a forgery. */
    check_forged(HDR_HS1, CLAIMS_OK, SIG_HS, SECRET2, HR_TOKEN_BAD_SIGNATURE);
}

HR_TEST(rs256_and_es256_tokens_verify_with_public_key_files)
{
    check_forged("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"rs1\"}", CLAIMS_OK, SIG_RS,
                 fx()->rsa, 0);
    check_forged("{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"es1\"}", CLAIMS_OK, SIG_ES, fx()->ec,
                 0);
}

HR_TEST(signatures_by_other_keys_or_of_other_bytes_are_bad_signature)
{
    check_forged("{\"alg\":\"RS256\",\"kid\":\"rs1\"}", CLAIMS_OK, SIG_RS, fx()->rsa_other,
                 HR_TOKEN_BAD_SIGNATURE);
    check_forged("{\"alg\":\"ES256\",\"kid\":\"es1\"}", CLAIMS_OK, SIG_ES, fx()->ec_other,
                 HR_TOKEN_BAD_SIGNATURE);
    /* A DER-encoded ECDSA signature is not the JOSE form. */
    check_forged("{\"alg\":\"ES256\",\"kid\":\"es1\"}", CLAIMS_OK, SIG_ES_DER, fx()->ec,
                 HR_TOKEN_BAD_SIGNATURE);
    check_forged(HDR_HS1, CLAIMS_OK, SIG_HS, "0123456789abcdef0123456789abcdef-hx",
                 HR_TOKEN_BAD_SIGNATURE);
    check_forged(HDR_HS1, CLAIMS_OK, SIG_NONE, NULL, HR_TOKEN_BAD_SIGNATURE);

    /* Claims swapped under a valid signature. */
    hr_token_verifier_t *v = verifier(30, NULL, NULL);
    char *good = forge(HDR_HS1, CLAIMS_OK, SIG_HS, SECRET);
    char *evil = forge(HDR_HS1, "{\"sub\":\"bob\",\"exp\":1700000600}", SIG_HS, SECRET);
    char *g1 = strchr(good, '.'), *g2 = strchr(g1 + 1, '.');
    char *e1 = strchr(evil, '.'), *e2 = strchr(e1 + 1, '.');
    char spliced[2048];
    snprintf(spliced, sizeof(spliced), "%.*s%.*s%s", (int)(g1 - good), good, (int)(e2 - e1), e1,
             g2);
    check_verify(v, spliced, NOW, HR_TOKEN_BAD_SIGNATURE);
    hr_free(good);
    hr_free(evil);
    hr_token_verifier_destroy(v);
}

HR_TEST(alg_none_is_refused_as_wrong_alg)
{
    check_forged("{\"alg\":\"none\",\"kid\":\"hs1\"}", CLAIMS_OK, SIG_NONE, NULL,
                 HR_TOKEN_WRONG_ALG);
    check_forged("{\"alg\":\"None\",\"kid\":\"rs1\"}", CLAIMS_OK, SIG_NONE, NULL,
                 HR_TOKEN_WRONG_ALG);
    check_forged("{\"alg\":\"NONE\",\"kid\":\"es1\"}", CLAIMS_OK, SIG_HS, SECRET,
                 HR_TOKEN_WRONG_ALG);
}

HR_TEST(hs256_presented_to_an_rs256_key_is_wrong_alg)
{
    /* The classic confusion: HMAC keyed with the public PEM, which libjwt alone accepts. */
    check_forged("{\"alg\":\"HS256\",\"kid\":\"rs1\"}", CLAIMS_OK, SIG_HS, fx()->rsa_pem,
                 HR_TOKEN_WRONG_ALG);
    check_forged("{\"alg\":\"ES256\",\"kid\":\"rs1\"}", CLAIMS_OK, SIG_ES, fx()->ec,
                 HR_TOKEN_WRONG_ALG);
    check_forged("{\"alg\":\"RS256\",\"kid\":\"hs1\"}", CLAIMS_OK, SIG_RS, fx()->rsa,
                 HR_TOKEN_WRONG_ALG);
    check_forged("{\"alg\":\"HS512\",\"kid\":\"hs1\"}", CLAIMS_OK, SIG_HS, SECRET,
                 HR_TOKEN_WRONG_ALG);
}

HR_TEST(a_header_naming_a_member_twice_is_refused)
{
    /* cJSON reads the first member, libjwt's jansson the last: neither view may win. */
    hr_token_verifier_t *v = verifier(30, NULL, NULL);
    const char *headers[] = {"{\"alg\":\"HS256\",\"kid\":\"hs1\",\"alg\":\"none\"}",
                             "{\"alg\":\"HS256\",\"kid\":\"hs1\",\"kid\":\"hs2\"}",
                             "{\"alg\":\"HS256\",\"kid\":\"hs1\",\"alg\":\"HS384\"}"};
    for (size_t i = 0; i < HR_ARRAY_LEN(headers); i++) {
        char *tok = forge(headers[i], CLAIMS_OK, SIG_HS, SECRET);
        hr_token_claims_t c;
        char err[256] = "";
        int rc = hr_token_verify(v, tok, strlen(tok), NOW, &c, err, sizeof(err));
        if (!HR_CHECK(rc != 0))
            hr_token_claims_free(&c);
        fprintf(stderr, "#   header %zu: %s (%s)\n", i, hr_token_reason(rc), err);
        hr_free(tok);
    }
    hr_token_verifier_destroy(v);
}

HR_TEST(a_missing_or_unknown_kid_is_unknown_kid)
{
    check_forged("{\"alg\":\"HS256\",\"kid\":\"hs9\"}", CLAIMS_OK, SIG_HS, SECRET,
                 HR_TOKEN_UNKNOWN_KID);
    check_forged("{\"alg\":\"HS256\"}", CLAIMS_OK, SIG_HS, SECRET, HR_TOKEN_UNKNOWN_KID);
    check_forged("{\"alg\":\"HS256\",\"kid\":7}", CLAIMS_OK, SIG_HS, SECRET, HR_TOKEN_UNKNOWN_KID);
}

HR_TEST(malformed_tokens_are_malformed)
{
    hr_token_verifier_t *v = verifier(30, NULL, NULL);
    const char *bad[] = {"",
                         "abc",
                         "a.b",
                         "a.b.c.d",
                         "!!!.e30.",
                         "e30.e30.",
                         "W10.e30.",
                         "eyJhbGciOiJIUzI1NiIsImtpZCI6ImhzMSJ9.e30=.AAAA",
                         "eyJhbGciOiJIUzI1NiIsImtpZCI6ImhzMSJ9.e30.A"};
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++)
        check_verify(v, bad[i], NOW, HR_TOKEN_MALFORMED);
    /* Non-zero leftover bits: "e31" is a second spelling of "{}". */
    check_verify(v, "eyJhbGciOiJIUzI1NiIsImtpZCI6ImhzMSJ9.e31.AAAA", NOW, HR_TOKEN_MALFORMED);
    char *longtok = hr_malloc(HR_TOKEN_MAX + 2);
    memset(longtok, 'A', HR_TOKEN_MAX + 1);
    longtok[HR_TOKEN_MAX + 1] = '\0';
    check_verify(v, longtok, NOW, HR_TOKEN_MALFORMED);
    hr_free(longtok);
    /* The length is the caller's: a NUL inside the counted bytes is not base64url. */
    hr_token_claims_t c;
    HR_CHECK_EQ_INT(hr_token_verify(v, "e30\0.e30.", 9, NOW, &c, NULL, 0), HR_TOKEN_MALFORMED);
    hr_token_verifier_destroy(v);

    check_forged("{\"alg\":\"HS256\",\"kid\":\"hs1\",\"typ\":\"JWS\"}", CLAIMS_OK, SIG_HS, SECRET,
                 HR_TOKEN_MALFORMED);
    check_forged("{\"alg\":\"HS256\",\"kid\":\"hs1\",\"crit\":[\"b64\"]}", CLAIMS_OK, SIG_HS,
                 SECRET, HR_TOKEN_MALFORMED);
    check_forged("{\"alg\":\"HS256\",\"kid\":\"hs1\\u0000x\"}", CLAIMS_OK, SIG_HS, SECRET,
                 HR_TOKEN_MALFORMED);
    check_forged(HDR_HS1, "[1]", SIG_HS, SECRET, HR_TOKEN_MALFORMED);
    check_forged(HDR_HS1, "{\"sub\":\"alice\"}", SIG_HS, SECRET, HR_TOKEN_MALFORMED);
    check_forged(HDR_HS1, "{\"sub\":\"alice\",\"exp\":\"1700000600\"}", SIG_HS, SECRET,
                 HR_TOKEN_MALFORMED);
    check_forged(HDR_HS1, "{\"sub\":\"alice\",\"exp\":1700000600,\"nbf\":true}", SIG_HS, SECRET,
                 HR_TOKEN_MALFORMED);
    check_forged(HDR_HS1, "{\"sub\":\"alice\",\"exp\":1e300}", SIG_HS, SECRET, HR_TOKEN_MALFORMED);
    check_forged(HDR_HS1, "{\"sub\":\"alice\",\"exp\":1700000600,\"rooms\":\"lobby\"}", SIG_HS,
                 SECRET, HR_TOKEN_MALFORMED);
    check_forged(HDR_HS1, "{\"sub\":\"alice\",\"exp\":1700000600,\"rooms\":[\"a*b\"]}", SIG_HS,
                 SECRET, HR_TOKEN_MALFORMED);
    check_forged(HDR_HS1, "{\"sub\":\"alice\",\"exp\":1700000600,\"rooms\":[\"team*\"]}", SIG_HS,
                 SECRET, HR_TOKEN_MALFORMED);
    check_forged(HDR_HS1, "{\"sub\":\"alice\",\"exp\":1700000600,\"rooms\":[\"ok\",3]}", SIG_HS,
                 SECRET, HR_TOKEN_MALFORMED);
    check_forged(HDR_HS1, "{\"sub\":\"alice\",\"exp\":1700000600,\"x\":\"\\u0000\"}", SIG_HS,
                 SECRET, HR_TOKEN_MALFORMED);
}

HR_TEST(exp_is_enforced_with_the_leeway)
{
    hr_token_verifier_t *v = verifier(30, NULL, NULL);
    char *tok = forge(HDR_HS1, "{\"sub\":\"SECRETSUB\",\"exp\":1700000000}", SIG_HS, SECRET);
    check_verify(v, tok, NOW + 29, 0);
    check_verify(v, tok, NOW + 30, HR_TOKEN_EXPIRED);
    check_verify(v, tok, NOW + 86400, HR_TOKEN_EXPIRED);
    hr_token_verifier_destroy(v);
    v = verifier(0, NULL, NULL);
    check_verify(v, tok, NOW - 1, 0);
    check_verify(v, tok, NOW, HR_TOKEN_EXPIRED);
    hr_token_verifier_destroy(v);
    hr_free(tok);
}

HR_TEST(nbf_is_enforced_with_the_leeway)
{
    hr_token_verifier_t *v = verifier(30, NULL, NULL);
    char *tok =
        forge(HDR_HS1, "{\"sub\":\"alice\",\"exp\":1800000000,\"nbf\":1700000100}", SIG_HS, SECRET);
    check_verify(v, tok, NOW + 69, HR_TOKEN_NOT_YET_VALID);
    check_verify(v, tok, NOW + 70, 0);
    check_verify(v, tok, NOW + 100, 0);
    hr_free(tok);
    hr_token_verifier_destroy(v);
}

HR_TEST(iss_and_aud_are_checked_only_when_configured)
{
    hr_token_verifier_t *any = verifier(30, NULL, "");
    hr_token_verifier_t *v = verifier(30, "https://auth.example", "herald");
    struct {
        const char *claims;
        int want;
    } cases[] = {
        {"{\"sub\":\"a\",\"exp\":1700000600,\"iss\":\"https://auth.example\",\"aud\":\"herald\"}",
         0},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"iss\":\"https://auth.example\",\"aud\":[\"x\","
         "\"herald\"]}",
         0},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"aud\":\"herald\"}", HR_TOKEN_BAD_ISS},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"iss\":\"https://evil.example\",\"aud\":\"herald\"}",
         HR_TOKEN_BAD_ISS},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"iss\":\"https://auth.example\"}", HR_TOKEN_BAD_AUD},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"iss\":\"https://auth.example\",\"aud\":\"other\"}",
         HR_TOKEN_BAD_AUD},
        {"{\"sub\":\"a\",\"exp\":1700000600,\"iss\":\"https://auth.example\",\"aud\":[\"other\","
         "7]}",
         HR_TOKEN_BAD_AUD},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(cases); i++) {
        char *tok = forge(HDR_HS1, cases[i].claims, SIG_HS, SECRET);
        check_verify(v, tok, NOW, cases[i].want);
        check_verify(any, tok, NOW, 0);
        hr_free(tok);
    }
    hr_token_verifier_destroy(v);
    hr_token_verifier_destroy(any);
}

HR_TEST(sub_must_follow_the_user_id_rule)
{
    char longsub[200], claims[300];
    memset(longsub, 'u', 129);
    longsub[129] = '\0';
    const char *bad[] = {"{\"exp\":1700000600}",
                         "{\"sub\":\"\",\"exp\":1700000600}",
                         "{\"sub\":7,\"exp\":1700000600}",
                         "{\"sub\":\"ali\\u0000ce\",\"exp\":1700000600}",
                         "{\"sub\":\"ali\\u0001ce\",\"exp\":1700000600}",
                         "{\"sub\":\"ali\\nce\",\"exp\":1700000600}",
                         "{\"sub\":\"ali\\u007fce\",\"exp\":1700000600}",
                         "{\"sub\":\"ali\\u0085ce\",\"exp\":1700000600}",
                         claims};
    snprintf(claims, sizeof(claims), "{\"sub\":\"%s\",\"exp\":1700000600}", longsub);
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++)
        check_forged(HDR_HS1, bad[i], SIG_HS, SECRET, HR_TOKEN_BAD_SUB);
    longsub[128] = '\0';
    snprintf(claims, sizeof(claims), "{\"sub\":\"%s\",\"exp\":1700000600}", longsub);
    check_forged(HDR_HS1, claims, SIG_HS, SECRET, 0);
    check_forged(HDR_HS1, "{\"sub\":\"\\u00e9lise \\ud83d\\ude00\",\"exp\":1700000600}", SIG_HS,
                 SECRET, 0);
    HR_CHECK(!hr_token_user_id_valid("\xff", 1));
    HR_CHECK(!hr_token_user_id_valid("a\xc2\x9f", 3));
    HR_CHECK(hr_token_user_id_valid("a\xc2\xa0", 3));
}

HR_TEST(room_patterns_match_exact_names_and_prefixes)
{
    HR_CHECK(hr_room_pattern_valid("lobby"));
    HR_CHECK(hr_room_pattern_valid("team:*"));
    HR_CHECK(hr_room_pattern_valid("*"));
    HR_CHECK(!hr_room_pattern_valid(":*"));
    HR_CHECK(!hr_room_pattern_valid("team*"));
    HR_CHECK(!hr_room_pattern_valid("a*:b"));
    HR_CHECK(!hr_room_pattern_valid("**"));
    HR_CHECK(!hr_room_pattern_valid(""));
    HR_CHECK(!hr_room_pattern_valid("sp ace"));

    HR_CHECK(hr_room_pattern_match("team:*", "team:red"));
    HR_CHECK(hr_room_pattern_match("team:*", "team:red:x"));
    HR_CHECK(!hr_room_pattern_match("team:*", "team:"));
    HR_CHECK(!hr_room_pattern_match("team:*", "team"));
    HR_CHECK(!hr_room_pattern_match("team:*", "teamx:red"));
    HR_CHECK(!hr_room_pattern_match("team:*", "x:team:red"));
    HR_CHECK(hr_room_pattern_match("lobby", "lobby"));
    HR_CHECK(!hr_room_pattern_match("lobby", "lobby2"));
    HR_CHECK(hr_room_pattern_match("*", "anything"));
    HR_CHECK(!hr_room_pattern_match("*", "not valid"));

    char *rooms[] = {"lobby", "team:*"};
    hr_token_claims_t c = {.has_rooms = 1, .rooms = rooms, .nrooms = 2};
    HR_CHECK(hr_token_room_allowed(&c, "team:blue"));
    HR_CHECK(!hr_token_room_allowed(&c, "orders:1"));
    hr_token_claims_t none = {.has_rooms = 0};
    HR_CHECK(!hr_token_room_allowed(&none, "lobby"));
    hr_token_claims_t empty = {.has_rooms = 1};
    HR_CHECK(!hr_token_room_allowed(&empty, "lobby"));
}

HR_TEST(refresh_keeps_the_same_sub)
{
    hr_token_verifier_t *v = verifier(30, NULL, NULL);
    char *first = forge(HDR_HS1, CLAIMS_OK, SIG_HS, SECRET);
    char *same = forge(HDR_HS1, "{\"sub\":\"alice\",\"exp\":1700003600}", SIG_HS, SECRET);
    char *other = forge(HDR_HS1, "{\"sub\":\"bob\",\"exp\":1700003600}", SIG_HS, SECRET);
    char *old = forge(HDR_HS1, "{\"sub\":\"alice\",\"exp\":1600000000}", SIG_HS, SECRET);
    hr_token_claims_t cur, next;
    char err[256];
    HR_REQUIRE_EQ_INT(hr_token_verify(v, first, strlen(first), NOW, &cur, err, sizeof(err)), 0);
    HR_CHECK_EQ_INT(
        hr_token_verify_refresh(v, &cur, same, strlen(same), NOW, &next, err, sizeof(err)), 0);
    HR_CHECK_EQ_INT(next.exp, 1700003600);
    hr_token_claims_free(&next);
    HR_CHECK_EQ_INT(
        hr_token_verify_refresh(v, &cur, other, strlen(other), NOW, &next, err, sizeof(err)),
        HR_TOKEN_SUB_CHANGED);
    HR_CHECK_EQ_INT(
        hr_token_verify_refresh(v, &cur, old, strlen(old), NOW, &next, err, sizeof(err)),
        HR_TOKEN_EXPIRED);
    hr_token_claims_free(&cur);
    hr_free(first);
    hr_free(same);
    hr_free(other);
    hr_free(old);
    hr_token_verifier_destroy(v);
}

HR_TEST(iat_cutoff_refuses_tokens_issued_before_it)
{
    hr_token_claims_t c = {.iat = 1000, .has_iat = 1};
    HR_CHECK_EQ_INT(hr_token_check_cutoff(&c, 0), 0);
    HR_CHECK_EQ_INT(hr_token_check_cutoff(&c, 999), 0);
    HR_CHECK_EQ_INT(hr_token_check_cutoff(&c, 1000), 0);
    HR_CHECK_EQ_INT(hr_token_check_cutoff(&c, 1001), HR_TOKEN_REVOKED);
    hr_token_claims_t no_iat = {.has_iat = 0};
    HR_CHECK_EQ_INT(hr_token_check_cutoff(&no_iat, 0), 0);
    HR_CHECK_EQ_INT(hr_token_check_cutoff(&no_iat, 1), HR_TOKEN_REVOKED);
}

HR_TEST(every_refusal_has_its_own_reason)
{
    int codes[] = {HR_TOKEN_MALFORMED,     HR_TOKEN_UNKNOWN_KID, HR_TOKEN_WRONG_ALG,
                   HR_TOKEN_BAD_SIGNATURE, HR_TOKEN_EXPIRED,     HR_TOKEN_NOT_YET_VALID,
                   HR_TOKEN_BAD_SUB,       HR_TOKEN_BAD_ISS,     HR_TOKEN_BAD_AUD,
                   HR_TOKEN_REVOKED,       HR_TOKEN_SUB_CHANGED};
    for (size_t i = 0; i < HR_ARRAY_LEN(codes); i++) {
        HR_CHECK(codes[i] < 0);
        HR_CHECK(strcmp(hr_token_reason(codes[i]), "error") != 0);
        for (size_t j = 0; j < i; j++)
            HR_CHECK(strcmp(hr_token_reason(codes[i]), hr_token_reason(codes[j])) != 0);
    }
    HR_CHECK_EQ_STR(hr_token_reason(HR_TOKEN_EXPIRED), "expired");
    HR_CHECK_EQ_STR(hr_token_reason(HR_TOKEN_BAD_SIGNATURE), "bad_signature");
}

HR_TEST(minted_tokens_verify_with_their_rooms)
{
    hr_token_key_config_t keys[] = {{.kid = "hs1", .alg = "HS256", .secret = SECRET}};
    hr_token_config_t cfg = {.keys = keys, .nkeys = 1, .leeway_s = 30};
    const char *rooms[] = {"lobby", "team:*"};
    char *tok = NULL, err[256] = "";
    HR_REQUIRE_EQ_INT(
        hr_token_mint_hs256(&cfg, NULL, "alice", rooms, 2, NOW, 3600, &tok, err, sizeof(err)), 0);
    hr_token_verifier_t *v = verifier(30, NULL, NULL);
    hr_token_claims_t c;
    HR_REQUIRE_EQ_INT(hr_token_verify(v, tok, strlen(tok), NOW + 10, &c, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(c.sub, "alice");
    HR_CHECK_EQ_INT(c.exp, NOW + 3600);
    HR_CHECK_EQ_INT(c.iat, NOW);
    HR_CHECK(hr_token_room_allowed(&c, "team:x") && !hr_token_room_allowed(&c, "orders"));
    hr_token_claims_free(&c);
    check_verify(v, tok, NOW + 3630, HR_TOKEN_EXPIRED);
    hr_free(tok);

    HR_CHECK_EQ_INT(
        hr_token_mint_hs256(&cfg, NULL, "alice", NULL, 0, NOW, 60, &tok, err, sizeof(err)), 0);
    HR_REQUIRE_EQ_INT(hr_token_verify(v, tok, strlen(tok), NOW, &c, err, sizeof(err)), 0);
    HR_CHECK(!c.has_rooms);
    hr_token_claims_free(&c);
    hr_free(tok);

    const char *badrooms[] = {"team*"};
    HR_CHECK_EQ_INT(
        hr_token_mint_hs256(&cfg, NULL, "alice", badrooms, 1, NOW, 60, &tok, err, sizeof(err)),
        HR_ERR);
    HR_CHECK_EQ_INT(hr_token_mint_hs256(&cfg, NULL, "", NULL, 0, NOW, 60, &tok, err, sizeof(err)),
                    HR_ERR);
    HR_CHECK_EQ_INT(
        hr_token_mint_hs256(&cfg, "nope", "alice", NULL, 0, NOW, 60, &tok, err, sizeof(err)),
        HR_ERR);
    hr_token_verifier_destroy(v);
}

static int
create_with(hr_token_key_config_t *k, char *err, size_t errlen)
{
    hr_token_config_t cfg = {.keys = k, .nkeys = 1};
    hr_token_verifier_t *v = NULL;
    int rc = hr_token_verifier_create(&cfg, &v, err, errlen);
    hr_token_verifier_destroy(v);
    return rc;
}

HR_TEST(verifier_refuses_weak_or_mismatched_keys)
{
    fixture_t *f = fx();
    char err[256];
    hr_token_key_config_t k[] = {
        {.kid = "a", .alg = "HS256", .secret = "short"},
        {.kid = "a", .alg = "RS256", .public_key_file = f->ec_pub},
        {.kid = "a", .alg = "ES256", .public_key_file = f->rsa_pub},
        {.kid = "a", .alg = "RS256", .public_key_file = f->rsa1024_pub},
        {.kid = "a", .alg = "RS256", .public_key_file = "/nonexistent.pem"},
        {.kid = "a", .alg = "none", .secret = SECRET},
        {.kid = "", .alg = "HS256", .secret = SECRET},
        {.kid = "a", .alg = "RS256", .secret = SECRET},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(k); i++) {
        err[0] = '\0';
        if (!HR_CHECK_EQ_INT(create_with(&k[i], err, sizeof(err)), HR_ERR))
            fprintf(stderr, "#   case %zu\n", i);
        HR_CHECK(err[0] != '\0');
    }
    hr_token_key_config_t dup[] = {{.kid = "a", .alg = "HS256", .secret = SECRET},
                                   {.kid = "a", .alg = "HS256", .secret = SECRET2}};
    hr_token_config_t cfg = {.keys = dup, .nkeys = 2};
    hr_token_verifier_t *v = NULL;
    HR_CHECK_EQ_INT(hr_token_verifier_create(&cfg, &v, err, sizeof(err)), HR_ERR);
    HR_CHECK_CONTAINS(err, "twice");
}

HR_TEST(config_file_auth_section_loads_keys)
{
    fixture_t *f = fx();
    char path[512], secret_path[512];
    snprintf(path, sizeof(path), "%s/herald.conf", f->dir);
    snprintf(secret_path, sizeof(secret_path), "%s/secret", f->dir);
    FILE *s = fopen(secret_path, "w");
    fprintf(s, "%s\n", SECRET2);
    fclose(s);
    FILE *c = fopen(path, "w");
    fprintf(c,
            "log: { level = \"info\"; };\n"
            "auth: {\n  leeway_s = 5;\n  issuer = \"iss1\";\n  audience = \"\";\n"
            "  keys = (\n    { kid = \"hs1\"; alg = \"HS256\"; secret = \"%s\"; },\n"
            "    { kid = \"hs2\"; alg = \"HS256\"; secret_file = \"%s\"; },\n"
            "    { kid = \"rs1\"; alg = \"RS256\"; public_key_file = \"%s\"; }\n  );\n};\n",
            SECRET, secret_path, f->rsa_pub);
    fclose(c);
    hr_token_config_t cfg;
    char err[256] = "";
    HR_REQUIRE_EQ_INT(hr_token_config_load(path, &cfg, err, sizeof(err)), 0);
    HR_CHECK_EQ_UINT(cfg.nkeys, 3);
    HR_CHECK_EQ_INT(cfg.leeway_s, 5);
    HR_CHECK_EQ_STR(cfg.issuer, "iss1");
    HR_CHECK(cfg.audience == NULL);
    HR_CHECK_EQ_STR(cfg.keys[1].secret, SECRET2);
    hr_token_verifier_t *v = NULL;
    HR_REQUIRE_EQ_INT(hr_token_verifier_create(&cfg, &v, err, sizeof(err)), 0);
    char *tok = forge("{\"alg\":\"HS256\",\"kid\":\"hs2\"}",
                      "{\"sub\":\"a\",\"exp\":1700000600,\"iss\":\"iss1\"}", SIG_HS, SECRET2);
    check_verify(v, tok, NOW, 0);
    hr_free(tok);
    hr_token_verifier_destroy(v);
    hr_token_config_free(&cfg);

    c = fopen(path, "w");
    fprintf(c, "auth: { leeway_s = 99999; };\n");
    fclose(c);
    HR_CHECK_EQ_INT(hr_token_config_load(path, &cfg, err, sizeof(err)), HR_ERR);
    c = fopen(path, "w");
    fprintf(c, "auth: { keys = ( 1, 2 ); };\n");
    fclose(c);
    HR_CHECK_EQ_INT(hr_token_config_load(path, &cfg, err, sizeof(err)), HR_ERR);
    HR_CHECK_EQ_INT(hr_token_config_load("/nonexistent/x.conf", &cfg, err, sizeof(err)), HR_ERR);
}

HR_TEST(example_config_auth_section_is_valid)
{
    hr_token_config_t cfg;
    hr_token_verifier_t *v = NULL;
    char err[256] = "";
    HR_REQUIRE_EQ_INT(hr_token_config_load(HERALD_SOURCE_DIR "/deploy/herald.conf.example", &cfg,
                                           err, sizeof(err)),
                      0);
    HR_CHECK(cfg.nkeys >= 1);
    HR_CHECK_EQ_INT(hr_token_verifier_create(&cfg, &v, err, sizeof(err)), 0);
    hr_token_verifier_destroy(v);
    hr_token_config_free(&cfg);
}

HR_TEST_MAIN()
