#include "herald/hr_token.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"
#include "hr_proto.h"

#include <errno.h>
#include <jwt.h>
#include <libconfig.h>
#include <math.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One key as the verifier holds it: the algorithm is the key's, not the token's. */
typedef struct {
    char *kid; /* owned */
    hr_token_alg_t alg;
    unsigned char *key; /* owned: secret bytes, or PEM text with a NUL after it */
    int key_len;
} hr_token_key_t;

struct hr_token_verifier_s {
    hr_token_key_t *keys; /* owned array */
    size_t nkeys;
    int leeway_s;
    char *issuer;   /* owned; NULL = not checked */
    char *audience; /* owned; NULL = not checked */
};

__attribute__((format(printf, 4, 5))) static int
hr_token_fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *
hr_token_reason(int code)
{
    switch (code) {
    case 0:
        return "ok";
    case HR_TOKEN_MALFORMED:
        return "malformed";
    case HR_TOKEN_UNKNOWN_KID:
        return "unknown_kid";
    case HR_TOKEN_WRONG_ALG:
        return "wrong_alg";
    case HR_TOKEN_BAD_SIGNATURE:
        return "bad_signature";
    case HR_TOKEN_EXPIRED:
        return "expired";
    case HR_TOKEN_NOT_YET_VALID:
        return "not_yet_valid";
    case HR_TOKEN_BAD_SUB:
        return "bad_sub";
    case HR_TOKEN_BAD_ISS:
        return "bad_iss";
    case HR_TOKEN_BAD_AUD:
        return "bad_aud";
    case HR_TOKEN_REVOKED:
        return "revoked";
    case HR_TOKEN_SUB_CHANGED:
        return "sub_changed";
    default:
        return "error";
    }
}

static const char *
hr_token_alg_name(hr_token_alg_t alg)
{
    switch (alg) {
    case HR_TOKEN_HS256:
        return "HS256";
    case HR_TOKEN_RS256:
        return "RS256";
    case HR_TOKEN_ES256:
        return "ES256";
    }
    return "?";
}

static int
hr_token_alg_parse(const char *s, hr_token_alg_t *alg)
{
    if (s == NULL)
        return HR_ERR;
    if (strcmp(s, "HS256") == 0)
        *alg = HR_TOKEN_HS256;
    else if (strcmp(s, "RS256") == 0)
        *alg = HR_TOKEN_RS256;
    else if (strcmp(s, "ES256") == 0)
        *alg = HR_TOKEN_ES256;
    else
        return HR_ERR;
    return 0;
}

static jwt_alg_t
hr_token_alg_jwt(hr_token_alg_t alg)
{
    return alg == HR_TOKEN_HS256   ? JWT_ALG_HS256
           : alg == HR_TOKEN_RS256 ? JWT_ALG_RS256
                                   : JWT_ALG_ES256;
}

int
hr_token_user_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > HR_TOKEN_SUB_MAX || !hr_utf8_valid(s, len))
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
        /* U+0080..U+009F (C1 controls) are C2 80..C2 9F in UTF-8. */
        if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] <= 0x9f)
            return 0;
    }
    return 1;
}

int
hr_room_pattern_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 1 && s[0] == '*')
        return 1;
    if (n >= 3 && s[n - 1] == '*' && s[n - 2] == ':') {
        char prefix[HR_ROOM_MAX + 1];
        if (n - 1 > HR_ROOM_MAX)
            return 0;
        memcpy(prefix, s, n - 1);
        prefix[n - 1] = '\0';
        return hr_proto_room_valid(prefix);
    }
    return hr_proto_room_valid(s);
}

int
hr_room_pattern_match(const char *pattern, const char *room)
{
    size_t n = strlen(pattern);
    if (!hr_proto_room_valid(room))
        return 0;
    if (n == 1 && pattern[0] == '*')
        return 1;
    if (n >= 2 && pattern[n - 1] == '*')
        return strncmp(room, pattern, n - 1) == 0 && strlen(room) > n - 1;
    return strcmp(pattern, room) == 0;
}

int
hr_token_room_allowed(const hr_token_claims_t *claims, const char *room)
{
    if (!claims->has_rooms)
        return 0;
    for (size_t i = 0; i < claims->nrooms; i++) {
        if (hr_room_pattern_match(claims->rooms[i], room))
            return 1;
    }
    return 0;
}

void
hr_token_claims_free(hr_token_claims_t *claims)
{
    for (size_t i = 0; i < claims->nrooms; i++)
        hr_free(claims->rooms[i]);
    hr_free(claims->rooms);
    claims->rooms = NULL;
    claims->nrooms = 0;
    claims->has_rooms = 0;
}

/* ---- configuration ---- */

void
hr_token_config_free(hr_token_config_t *cfg)
{
    for (size_t i = 0; i < cfg->nkeys; i++) {
        hr_free(cfg->keys[i].kid);
        hr_free(cfg->keys[i].alg);
        if (cfg->keys[i].secret != NULL)
            memset(cfg->keys[i].secret, 0, strlen(cfg->keys[i].secret));
        hr_free(cfg->keys[i].secret);
        hr_free(cfg->keys[i].public_key_file);
    }
    hr_free(cfg->keys);
    hr_free(cfg->issuer);
    hr_free(cfg->audience);
    memset(cfg, 0, sizeof(*cfg));
}

/* Reads a whole small file (a PEM or a secret) into *out with a NUL after it. */
static int
hr_token_read_file(const char *path, char **out, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return hr_token_fail(HR_ERR, err, errlen, "%s: %s", path, strerror(errno));
    size_t cap = 16384, n = 0;
    char *buf = hr_malloc(cap + 1);
    n = fread(buf, 1, cap + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > cap) {
        hr_free(buf);
        return hr_token_fail(HR_ERR, err, errlen, "%s: %s", path,
                             bad ? "read error" : "larger than 16 KiB");
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static char *
hr_token_cfg_str(const config_setting_t *g, const char *name)
{
    const char *s = NULL;
    if (config_setting_lookup_string(g, name, &s) != CONFIG_TRUE || s[0] == '\0')
        return NULL;
    return hr_strdup(s);
}

int
hr_token_config_load(const char *path, hr_token_config_t *cfg, char *err, size_t errlen)
{
    config_t c;
    int rc = HR_ERR;

    memset(cfg, 0, sizeof(*cfg));
    cfg->leeway_s = 30;
    config_init(&c);
    if (config_read_file(&c, path) != CONFIG_TRUE) {
        if (config_error_type(&c) == CONFIG_ERR_FILE_IO)
            hr_token_fail(HR_ERR, err, errlen, "%s: cannot read", path);
        else
            hr_token_fail(HR_ERR, err, errlen, "%s:%d: %s", path, config_error_line(&c),
                          config_error_text(&c));
        goto done;
    }
    const config_setting_t *auth = config_lookup(&c, "auth");
    if (auth == NULL) {
        rc = 0; /* no auth section: no keys */
        goto done;
    }
    int leeway;
    if (config_setting_lookup_int(auth, "leeway_s", &leeway) == CONFIG_TRUE) {
        if (leeway < 0 || leeway > 3600) {
            hr_token_fail(HR_ERR, err, errlen, "%s: auth.leeway_s must be 0-3600", path);
            goto done;
        }
        cfg->leeway_s = leeway;
    }
    cfg->issuer = hr_token_cfg_str(auth, "issuer");
    cfg->audience = hr_token_cfg_str(auth, "audience");
    const config_setting_t *keys = config_setting_get_member(auth, "keys");
    if (keys == NULL) {
        rc = 0;
        goto done;
    }
    if (!config_setting_is_aggregate(keys)) {
        hr_token_fail(HR_ERR, err, errlen, "%s: auth.keys must be a list of groups", path);
        goto done;
    }
    int n = config_setting_length(keys);
    cfg->keys = hr_calloc(n > 0 ? (size_t)n : 1, sizeof(*cfg->keys));
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = config_setting_get_elem(keys, (unsigned)i);
        hr_token_key_config_t *k = &cfg->keys[cfg->nkeys++];
        if (!config_setting_is_group(g)) {
            hr_token_fail(HR_ERR, err, errlen, "%s: auth.keys[%d] must be a group", path, i);
            goto done;
        }
        k->kid = hr_token_cfg_str(g, "kid");
        k->alg = hr_token_cfg_str(g, "alg");
        k->secret = hr_token_cfg_str(g, "secret");
        k->public_key_file = hr_token_cfg_str(g, "public_key_file");
        char *secret_file = hr_token_cfg_str(g, "secret_file");
        if (secret_file != NULL) {
            size_t len;
            char *s;
            int r = k->secret != NULL
                        ? hr_token_fail(HR_ERR, err, errlen,
                                        "auth.keys[%d]: secret and secret_file both set", i)
                        : hr_token_read_file(secret_file, &s, &len, err, errlen);
            hr_free(secret_file);
            if (r != 0)
                goto done;
            while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
                s[--len] = '\0';
            k->secret = s;
        }
    }
    rc = 0;
done:
    config_destroy(&c);
    if (rc != 0)
        hr_token_config_free(cfg);
    return rc;
}

/* Reads and checks a public key PEM: RSA >= 2048 bits for RS256, P-256 for ES256. */
static int
hr_token_load_pem(hr_token_key_t *k, const char *path, char *err, size_t errlen)
{
    char *pem;
    size_t len;
    if (hr_token_read_file(path, &pem, &len, err, errlen) != 0)
        return HR_ERR;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pk = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    const char *why = NULL;
    if (pk == NULL) {
        why = "not a PEM public key (BEGIN PUBLIC KEY)";
    } else if (k->alg == HR_TOKEN_RS256) {
        if (EVP_PKEY_base_id(pk) != EVP_PKEY_RSA || EVP_PKEY_get_bits(pk) < 2048)
            why = "RS256 needs an RSA public key of at least 2048 bits";
    } else {
        char curve[64] = "";
        size_t cl = 0;
        if (EVP_PKEY_base_id(pk) != EVP_PKEY_EC ||
            EVP_PKEY_get_utf8_string_param(pk, "group", curve, sizeof(curve), &cl) != 1 ||
            strcmp(curve, "prime256v1") != 0)
            why = "ES256 needs an EC public key on P-256 (prime256v1)";
    }
    EVP_PKEY_free(pk);
    if (why != NULL) {
        hr_free(pem);
        return hr_token_fail(HR_ERR, err, errlen, "%s: %s", path, why);
    }
    k->key = (unsigned char *)pem;
    k->key_len = (int)len;
    return 0;
}

void
hr_token_verifier_destroy(hr_token_verifier_t *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->nkeys; i++) {
        hr_free(v->keys[i].kid);
        if (v->keys[i].key != NULL)
            memset(v->keys[i].key, 0, (size_t)v->keys[i].key_len);
        hr_free(v->keys[i].key);
    }
    hr_free(v->keys);
    hr_free(v->issuer);
    hr_free(v->audience);
    hr_free(v);
}

int
hr_token_verifier_create(const hr_token_config_t *cfg, hr_token_verifier_t **out, char *err,
                         size_t errlen)
{
    hr_token_verifier_t *v = hr_calloc(1, sizeof(*v));
    v->keys = hr_calloc(cfg->nkeys > 0 ? cfg->nkeys : 1, sizeof(*v->keys));
    v->leeway_s = cfg->leeway_s < 0 ? 0 : cfg->leeway_s;
    v->issuer = cfg->issuer != NULL && cfg->issuer[0] != '\0' ? hr_strdup(cfg->issuer) : NULL;
    v->audience =
        cfg->audience != NULL && cfg->audience[0] != '\0' ? hr_strdup(cfg->audience) : NULL;
    for (size_t i = 0; i < cfg->nkeys; i++) {
        const hr_token_key_config_t *kc = &cfg->keys[i];
        hr_token_key_t *k = &v->keys[v->nkeys];
        if (kc->kid == NULL || !hr_proto_token_valid(kc->kid, strlen(kc->kid), 64)) {
            hr_token_fail(HR_ERR, err, errlen,
                          "auth.keys[%zu]: kid must be 1-64 visible ASCII characters", i);
            goto fail;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->keys[j].kid, kc->kid) == 0) {
                hr_token_fail(HR_ERR, err, errlen, "auth.keys[%zu]: kid \"%s\" appears twice", i,
                              kc->kid);
                goto fail;
            }
        }
        if (hr_token_alg_parse(kc->alg, &k->alg) != 0) {
            hr_token_fail(HR_ERR, err, errlen,
                          "auth.keys[%zu] (kid %s): alg must be HS256, RS256 or ES256", i, kc->kid);
            goto fail;
        }
        if (k->alg == HR_TOKEN_HS256) {
            size_t sl = kc->secret != NULL ? strlen(kc->secret) : 0;
            if (sl < HR_TOKEN_SECRET_MIN || kc->public_key_file != NULL) {
                hr_token_fail(HR_ERR, err, errlen,
                              "auth.keys[%zu] (kid %s): HS256 needs a secret of at least %d "
                              "bytes and no public_key_file",
                              i, kc->kid, HR_TOKEN_SECRET_MIN);
                goto fail;
            }
            k->key = (unsigned char *)hr_strndup(kc->secret, sl);
            k->key_len = (int)sl;
        } else {
            if (kc->public_key_file == NULL || kc->secret != NULL) {
                hr_token_fail(HR_ERR, err, errlen,
                              "auth.keys[%zu] (kid %s): %s needs public_key_file and no secret", i,
                              kc->kid, hr_token_alg_name(k->alg));
                goto fail;
            }
            if (hr_token_load_pem(k, kc->public_key_file, err, errlen) != 0)
                goto fail;
        }
        k->kid = hr_strdup(kc->kid);
        v->nkeys++;
    }
    *out = v;
    return 0;
fail:
    hr_token_verifier_destroy(v);
    return HR_ERR;
}

/* ---- verification ---- */

static int
hr_b64url_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/*
 * Decodes unpadded base64url s[0..n) into a new buffer (hr_free) with a NUL
 * after it. Returns its length, or -1 for a bad character or length, or
 * non-zero bits left over (a second spelling of the same bytes).
 */
static long
hr_b64url_decode(const char *s, size_t n, char **out)
{
    if (n % 4 == 1)
        return -1;
    char *buf = hr_malloc(n / 4 * 3 + 3);
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = hr_b64url_val((unsigned char)s[i]);
        if (v < 0) {
            hr_free(buf);
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (char)(acc >> bits & 0xff);
        }
    }
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
        hr_free(buf);
        return -1;
    }
    buf[o] = '\0';
    *out = buf;
    return (long)o;
}

/* Decodes one part as a JSON object with no \u0000 (which cJSON would cut at). */
static int
hr_token_part_json(const char *s, size_t n, const char *what, cJSON **out, char **text,
                   size_t *tlen, char *err, size_t errlen)
{
    char *raw, e[128];
    long len = hr_b64url_decode(s, n, &raw);
    if (len < 0)
        return hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "token %s is not base64url", what);
    if (hr_json_parse_object(raw, (size_t)len, out, e, sizeof(e)) != 0) {
        hr_free(raw);
        return hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "token %s is not a JSON object",
                             what);
    }
    *text = raw;
    *tlen = (size_t)len;
    return 0;
}

static const hr_token_key_t *
hr_token_find_key(const hr_token_verifier_t *v, const char *kid)
{
    for (size_t i = 0; i < v->nkeys; i++) {
        if (strcmp(v->keys[i].kid, kid) == 0)
            return &v->keys[i];
    }
    return NULL;
}

/* A NumericDate claim: absent (0), or a finite number in range (1, *out set), or -1. */
static int
hr_token_numeric_date(const cJSON *obj, const char *name, int64_t *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (it == NULL)
        return 0;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < -1e15 ||
        it->valuedouble > 1e15)
        return -1;
    *out = (int64_t)floor(it->valuedouble);
    return 1;
}

/* Checks every claim of a payload whose signature verified. */
static int
hr_token_claims(const hr_token_verifier_t *v, const cJSON *p, int64_t now, hr_token_claims_t *c,
                char *err, size_t errlen)
{
    int64_t exp = 0, nbf = 0, iat = 0;
    int r = hr_token_numeric_date(p, "exp", &exp);
    if (r <= 0)
        return hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "exp %s",
                             r == 0 ? "is missing" : "is not a number of seconds");
    if (now >= exp + v->leeway_s)
        return hr_token_fail(HR_TOKEN_EXPIRED, err, errlen, "token expired %lld s ago",
                             (long long)(now - exp));
    r = hr_token_numeric_date(p, "nbf", &nbf);
    if (r < 0)
        return hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "nbf is not a number of seconds");
    if (r > 0 && now + v->leeway_s < nbf)
        return hr_token_fail(HR_TOKEN_NOT_YET_VALID, err, errlen, "token valid only in %lld s",
                             (long long)(nbf - now));
    int has_iat = hr_token_numeric_date(p, "iat", &iat);
    if (has_iat < 0)
        return hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "iat is not a number of seconds");
    if (v->issuer != NULL) {
        const char *iss = hr_json_get_str(p, "iss");
        if (iss == NULL || strcmp(iss, v->issuer) != 0)
            return hr_token_fail(HR_TOKEN_BAD_ISS, err, errlen, "iss is not the expected issuer");
    }
    if (v->audience != NULL) {
        const cJSON *aud = cJSON_GetObjectItemCaseSensitive(p, "aud"), *a;
        int ok = cJSON_IsString(aud) && strcmp(aud->valuestring, v->audience) == 0;
        if (cJSON_IsArray(aud)) {
            cJSON_ArrayForEach(a, aud)
            {
                if (cJSON_IsString(a) && strcmp(a->valuestring, v->audience) == 0)
                    ok = 1;
            }
        }
        if (!ok)
            return hr_token_fail(HR_TOKEN_BAD_AUD, err, errlen,
                                 "aud does not include the expected audience");
    }
    const char *sub = hr_json_get_str(p, "sub");
    if (sub == NULL || !hr_token_user_id_valid(sub, strlen(sub)))
        return hr_token_fail(HR_TOKEN_BAD_SUB, err, errlen,
                             "sub must be a user id: 1-%d bytes of UTF-8 without control "
                             "characters",
                             HR_TOKEN_SUB_MAX);

    const cJSON *rooms = cJSON_GetObjectItemCaseSensitive(p, "rooms"), *it;
    memset(c, 0, sizeof(*c));
    if (rooms != NULL) {
        int n = cJSON_IsArray(rooms) ? cJSON_GetArraySize(rooms) : -1;
        if (n < 0 || n > HR_TOKEN_ROOMS_MAX)
            return hr_token_fail(HR_TOKEN_MALFORMED, err, errlen,
                                 "rooms must be an array of at most %d room names or patterns",
                                 HR_TOKEN_ROOMS_MAX);
        c->rooms = hr_calloc(n > 0 ? (size_t)n : 1, sizeof(char *));
        c->has_rooms = 1;
        cJSON_ArrayForEach(it, rooms)
        {
            if (!cJSON_IsString(it) || !hr_room_pattern_valid(it->valuestring)) {
                int i = (int)c->nrooms;
                hr_token_claims_free(c);
                return hr_token_fail(HR_TOKEN_MALFORMED, err, errlen,
                                     "rooms[%d] is not a room name or a prefix:* pattern", i);
            }
            c->rooms[c->nrooms++] = hr_strdup(it->valuestring);
        }
    }
    memcpy(c->sub, sub, strlen(sub) + 1);
    c->exp = exp;
    c->iat = has_iat ? iat : 0;
    c->has_iat = has_iat;
    return 0;
}

int
hr_token_verify(const hr_token_verifier_t *v, const char *token, size_t len, int64_t now,
                hr_token_claims_t *claims, char *err, size_t errlen)
{
    const char *dot1 = NULL, *dot2 = NULL;
    cJSON *h = NULL, *p = NULL;
    char *htext = NULL, *ptext = NULL, *copy = NULL;
    size_t hlen = 0, plen = 0; /* set on every path that reads them; -O2 cannot tell */
    jwt_t *jwt = NULL;
    int rc;

    if (len == 0 || len > HR_TOKEN_MAX)
        return hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "token must be 1-%d bytes",
                             HR_TOKEN_MAX);
    for (size_t i = 0; i < len; i++) {
        if (token[i] != '.')
            continue;
        if (dot1 == NULL)
            dot1 = token + i;
        else if (dot2 == NULL)
            dot2 = token + i;
        else
            return hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "token has more than 3 parts");
    }
    if (dot2 == NULL)
        return hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "token is not header.claims.sig");
    rc =
        hr_token_part_json(token, (size_t)(dot1 - token), "header", &h, &htext, &hlen, err, errlen);
    if (rc != 0)
        goto done;
    rc = hr_token_part_json(dot1 + 1, (size_t)(dot2 - dot1 - 1), "claims", &p, &ptext, &plen, err,
                            errlen);
    if (rc != 0)
        goto done;
    /* The signature part must be base64url too, or libjwt may read past it. */
    char *sig;
    long siglen = hr_b64url_decode(dot2 + 1, len - (size_t)(dot2 + 1 - token), &sig);
    if (siglen < 0) {
        rc = hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "token signature is not base64url");
        goto done;
    }
    hr_free(sig);

    const char *alg = hr_json_get_str(h, "alg"), *kid = hr_json_get_str(h, "kid");
    const char *typ = hr_json_get_str(h, "typ");
    if (alg == NULL || hr_json_has_nul_escape(htext, hlen) ||
        cJSON_GetObjectItemCaseSensitive(h, "crit") != NULL ||
        (cJSON_GetObjectItemCaseSensitive(h, "typ") != NULL &&
         (typ == NULL || strcasecmp(typ, "JWT") != 0))) {
        rc = hr_token_fail(HR_TOKEN_MALFORMED, err, errlen,
                           "token header needs alg, typ JWT if any, and no crit");
        goto done;
    }
    if (kid == NULL) {
        rc = hr_token_fail(HR_TOKEN_UNKNOWN_KID, err, errlen, "token header has no kid");
        goto done;
    }
    const hr_token_key_t *k = hr_token_find_key(v, kid);
    if (k == NULL) {
        rc = hr_token_fail(HR_TOKEN_UNKNOWN_KID, err, errlen, "no key has the token's kid");
        goto done;
    }
    if (strcmp(alg, hr_token_alg_name(k->alg)) != 0) {
        rc = hr_token_fail(HR_TOKEN_WRONG_ALG, err, errlen,
                           "token alg is not %s, the algorithm of its key",
                           hr_token_alg_name(k->alg));
        goto done;
    }
    /*
     * libjwt's JSON parser (jansson) refuses \u0000, so such a token can never
     * verify; say why now. cJSON would cut the string there: a sub spelled
     * "alice\u0000x" must not pass as "alice".
     */
    if (hr_json_has_nul_escape(ptext, plen)) {
        char *subtext = hr_json_member_text(ptext, plen, "sub");
        int in_sub = subtext != NULL && hr_json_has_nul_escape(subtext, strlen(subtext));
        hr_free(subtext);
        rc = in_sub ? hr_token_fail(HR_TOKEN_BAD_SUB, err, errlen, "sub contains \\u0000")
                    : hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "claims contain \\u0000");
        goto done;
    }
    copy = hr_strndup(token, len);
    if (jwt_decode(&jwt, copy, k->key, k->key_len) != 0) {
        jwt = NULL;
        rc = hr_token_fail(HR_TOKEN_BAD_SIGNATURE, err, errlen, "token signature does not verify");
        goto done;
    }
    /* libjwt parses the header itself; it must have used the algorithm and key we chose. */
    const char *jkid = jwt_get_header(jwt, "kid");
    if (jwt_get_alg(jwt) != hr_token_alg_jwt(k->alg)) {
        rc = hr_token_fail(HR_TOKEN_WRONG_ALG, err, errlen, "token header names two algorithms");
        goto done;
    }
    if (jkid == NULL || strcmp(jkid, kid) != 0) {
        rc = hr_token_fail(HR_TOKEN_MALFORMED, err, errlen, "token header names two kids");
        goto done;
    }
    rc = hr_token_claims(v, p, now, claims, err, errlen);
done:
    if (jwt != NULL)
        jwt_free(jwt);
    cJSON_Delete(h);
    cJSON_Delete(p);
    hr_free(htext);
    hr_free(ptext);
    hr_free(copy);
    return rc;
}

int
hr_token_verify_refresh(const hr_token_verifier_t *v, const hr_token_claims_t *cur,
                        const char *token, size_t len, int64_t now, hr_token_claims_t *next,
                        char *err, size_t errlen)
{
    int rc = hr_token_verify(v, token, len, now, next, err, errlen);
    if (rc != 0)
        return rc;
    if (strcmp(next->sub, cur->sub) != 0) {
        hr_token_claims_free(next);
        return hr_token_fail(HR_TOKEN_SUB_CHANGED, err, errlen,
                             "refresh token is for another user");
    }
    return 0;
}

int
hr_token_check_cutoff(const hr_token_claims_t *claims, int64_t cutoff)
{
    if (cutoff <= 0)
        return 0;
    int64_t iat = claims->has_iat ? claims->iat : 0;
    return iat < cutoff ? HR_TOKEN_REVOKED : 0;
}

/* ---- minting (herald-token, the dev mint endpoint) ---- */

int
hr_token_mint_hs256(const hr_token_config_t *cfg, const char *kid, const char *sub,
                    const char *const *rooms, size_t nrooms, int64_t now, int64_t ttl_s, char **out,
                    char *err, size_t errlen)
{
    const hr_token_key_config_t *k = NULL;
    for (size_t i = 0; i < cfg->nkeys && k == NULL; i++) {
        const hr_token_key_config_t *c = &cfg->keys[i];
        if (c->alg != NULL && strcmp(c->alg, "HS256") == 0 &&
            (kid == NULL || (c->kid != NULL && strcmp(c->kid, kid) == 0)))
            k = c;
    }
    if (k == NULL || k->kid == NULL)
        return hr_token_fail(HR_ERR, err, errlen, "no HS256 key%s%s in auth.keys",
                             kid != NULL ? " with kid " : "", kid != NULL ? kid : "");
    if (k->secret == NULL || strlen(k->secret) < HR_TOKEN_SECRET_MIN)
        return hr_token_fail(HR_ERR, err, errlen, "key %s: secret shorter than %d bytes", k->kid,
                             HR_TOKEN_SECRET_MIN);
    if (!hr_token_user_id_valid(sub, strlen(sub)))
        return hr_token_fail(HR_ERR, err, errlen,
                             "user id must be 1-%d bytes of UTF-8 without control characters",
                             HR_TOKEN_SUB_MAX);
    if (ttl_s <= 0)
        return hr_token_fail(HR_ERR, err, errlen, "ttl must be positive");
    if (nrooms > HR_TOKEN_ROOMS_MAX)
        return hr_token_fail(HR_ERR, err, errlen, "at most %d rooms", HR_TOKEN_ROOMS_MAX);
    for (size_t i = 0; i < nrooms; i++) {
        if (!hr_room_pattern_valid(rooms[i]))
            return hr_token_fail(HR_ERR, err, errlen,
                                 "\"%s\" is not a room name or a prefix:* pattern", rooms[i]);
    }

    jwt_t *jwt = NULL;
    char *text = NULL, *json = NULL;
    int rc = HR_ERR;
    if (jwt_new(&jwt) != 0)
        return hr_token_fail(HR_ERR, err, errlen, "libjwt: out of memory");
    if (jwt_add_header(jwt, "kid", k->kid) != 0 || jwt_add_grant(jwt, "sub", sub) != 0 ||
        jwt_add_grant_int(jwt, "iat", (long)now) != 0 ||
        jwt_add_grant_int(jwt, "exp", (long)(now + ttl_s)) != 0 ||
        (cfg->issuer != NULL && cfg->issuer[0] != '\0' &&
         jwt_add_grant(jwt, "iss", cfg->issuer) != 0) ||
        (cfg->audience != NULL && cfg->audience[0] != '\0' &&
         jwt_add_grant(jwt, "aud", cfg->audience) != 0)) {
        hr_token_fail(HR_ERR, err, errlen, "libjwt refused a claim");
        goto done;
    }
    if (rooms != NULL) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "rooms", cJSON_CreateStringArray(rooms, (int)nrooms));
        json = hr_json_print(o);
        cJSON_Delete(o);
        if (jwt_add_grants_json(jwt, json) != 0) {
            hr_token_fail(HR_ERR, err, errlen, "libjwt refused the rooms claim");
            goto done;
        }
    }
    if (jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)k->secret, (int)strlen(k->secret)) !=
            0 ||
        (text = jwt_encode_str(jwt)) == NULL) {
        hr_token_fail(HR_ERR, err, errlen, "libjwt could not sign");
        goto done;
    }
    *out = hr_strdup(text);
    free(text); /* libjwt's allocation */
    rc = 0;
done:
    hr_free(json);
    jwt_free(jwt);
    return rc;
}
