#include "herald/hr_apikey.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_token.h"

#include <libconfig.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define HR_BUCKET_UNIT 1000 /* one request, in the bucket's milli-requests */

struct hr_apikey_s {
    char *name;            /* owned */
    unsigned char sha[32]; /* SHA-256 of the key */
    char **users;          /* owned */
    size_t nusers;
    char **rooms; /* owned */
    size_t nrooms;
    int scoped;
    int64_t rate;  /* requests per second; 0 = unlimited */
    int64_t cap;   /* bucket size in milli-requests */
    int64_t level; /* milli-requests in the bucket */
    uint64_t last; /* ms of the last refill */
    int started;   /* last is set */
    /*
     * The key itself once a request presented it and its hash matched:
     * later requests with it are compared byte for byte (constant time)
     * instead of hashed. It is in the request's buffer anyway; never logged.
     */
    char *seen;      /* owned: HR_APIKEY_MAX bytes; the key once matched */
    size_t seen_len; /* 0 until then */
};

struct hr_apikeys_s {
    struct hr_apikey_s *keys; /* owned array */
    size_t n;
    /*
     * SHA-256 fetched once and one context reused: EVP_Digest fetches the
     * algorithm and allocates a context per call, three quarters of the cost
     * of hashing a key (once per request in ingest).
     */
    EVP_MD *md;      /* owned */
    EVP_MD_CTX *ctx; /* owned */
};

__attribute__((format(printf, 3, 4))) static int
hr_apikey_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return HR_ERR;
}

const char *
hr_apikey_reason(int code)
{
    switch (code) {
    case 0:
        return "ok";
    case HR_APIKEY_UNKNOWN:
        return "unknown_key";
    case HR_APIKEY_OUT_OF_SCOPE:
        return "out_of_scope";
    case HR_APIKEY_OVER_RATE:
        return "over_rate";
    default:
        return "error";
    }
}

static void
hr_apikey_sha256(const char *key, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    if (EVP_Digest(key, len, out, &n, EVP_sha256(), NULL) != 1 || n != 32) {
        /* Only a broken libcrypto fails here; never let it match anything. */
        memset(out, 0, 32);
        out[0] = 1;
    }
}

void
hr_apikey_hash_hex(const char *key, size_t len, char hex[65])
{
    static const char d[] = "0123456789abcdef";
    unsigned char sha[32];
    hr_apikey_sha256(key, len, sha);
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = d[sha[i] >> 4];
        hex[2 * i + 1] = d[sha[i] & 15];
    }
    hex[64] = '\0';
}

static int
hr_apikey_parse_hex(const char *s, unsigned char out[32])
{
    if (s == NULL || strlen(s) != 64)
        return HR_ERR;
    for (int i = 0; i < 32; i++) {
        int hi = hr_hex_val(s[2 * i]), lo = hr_hex_val(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return HR_ERR;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static char **
hr_apikey_strv_dup(char *const *v, size_t n)
{
    char **o = hr_calloc(n > 0 ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        o[i] = hr_strdup(v[i]);
    return o;
}

static void
hr_apikey_strv_free(char **v, size_t n)
{
    for (size_t i = 0; v != NULL && i < n; i++)
        hr_free(v[i]);
    hr_free(v);
}

void
hr_apikeys_destroy(hr_apikeys_t *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++) {
        hr_free(ks->keys[i].name);
        if (ks->keys[i].seen != NULL)
            OPENSSL_cleanse(ks->keys[i].seen, HR_APIKEY_MAX);
        hr_free(ks->keys[i].seen);
        hr_apikey_strv_free(ks->keys[i].users, ks->keys[i].nusers);
        hr_apikey_strv_free(ks->keys[i].rooms, ks->keys[i].nrooms);
    }
    hr_free(ks->keys);
    EVP_MD_CTX_free(ks->ctx);
    EVP_MD_free(ks->md);
    hr_free(ks);
}

int
hr_apikeys_create(const hr_apikey_config_t *cfg, size_t n, hr_apikeys_t **out, char *err,
                  size_t errlen)
{
    hr_apikeys_t *ks = hr_calloc(1, sizeof(*ks));
    ks->keys = hr_calloc(n > 0 ? n : 1, sizeof(*ks->keys));
    for (size_t i = 0; i < n; i++) {
        const hr_apikey_config_t *c = &cfg[i];
        struct hr_apikey_s *k = &ks->keys[i];
        if (c->name == NULL || c->name[0] == '\0' || strlen(c->name) > HR_APIKEY_NAME_MAX ||
            strspn(c->name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                strlen(c->name)) {
            hr_apikey_fail(err, errlen, "auth.ingest_keys[%zu]: name must be 1-%d of A-Za-z0-9_.-",
                           i, HR_APIKEY_NAME_MAX);
            goto fail;
        }
        if (hr_apikey_parse_hex(c->sha256, k->sha) != 0) {
            hr_apikey_fail(err, errlen, "auth.ingest_keys[%zu] (%s): sha256 must be 64 hex digits",
                           i, c->name);
            goto fail;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(ks->keys[j].name, c->name) == 0 ||
                memcmp(ks->keys[j].sha, k->sha, 32) == 0) {
                hr_apikey_fail(err, errlen,
                               "auth.ingest_keys[%zu] (%s): same name or hash as [%zu]", i, c->name,
                               j);
                goto fail;
            }
        }
        for (size_t j = 0; j < c->nusers; j++) {
            const char *u = c->users[j];
            if (strcmp(u, "*") != 0 && !hr_token_user_id_valid(u, strlen(u))) {
                hr_apikey_fail(err, errlen,
                               "auth.ingest_keys[%zu] (%s): users[%zu] is not "
                               "a user id or \"*\"",
                               i, c->name, j);
                goto fail;
            }
        }
        for (size_t j = 0; j < c->nrooms; j++) {
            if (!hr_room_pattern_valid(c->rooms[j])) {
                hr_apikey_fail(err, errlen,
                               "auth.ingest_keys[%zu] (%s): rooms[%zu] is not "
                               "a room name or prefix:* pattern",
                               i, c->name, j);
                goto fail;
            }
        }
        if (c->rate < 0 || c->burst < 0 || c->rate > 1000000 || c->burst > 1000000) {
            hr_apikey_fail(err, errlen,
                           "auth.ingest_keys[%zu] (%s): rate and burst must be 0-1000000", i,
                           c->name);
            goto fail;
        }
        k->name = hr_strdup(c->name);
        k->seen = hr_calloc(1, HR_APIKEY_MAX);
        k->users = hr_apikey_strv_dup(c->users, c->nusers);
        k->nusers = c->nusers;
        k->rooms = hr_apikey_strv_dup(c->rooms, c->nrooms);
        k->nrooms = c->nrooms;
        k->scoped = c->scoped || c->nusers > 0 || c->nrooms > 0;
        k->rate = c->rate;
        k->cap = (int64_t)(c->burst > 0 ? c->burst : c->rate > 0 ? c->rate : 1) * HR_BUCKET_UNIT;
        k->level = k->cap;
        ks->n++;
    }
    ks->md = EVP_MD_fetch(NULL, "SHA256", NULL);
    ks->ctx = EVP_MD_CTX_new();
    if (ks->md == NULL || ks->ctx == NULL) {
        hr_apikeys_destroy(ks);
        return hr_apikey_fail(err, errlen, "libcrypto has no SHA-256");
    }
    *out = ks;
    return 0;
fail:
    hr_apikeys_destroy(ks);
    return HR_ERR;
}

const hr_apikey_t *
hr_apikeys_lookup(hr_apikeys_t *ks, const char *key, size_t len)
{
    unsigned char sha[32];
    struct hr_apikey_s *found = NULL;
    if (key == NULL || len == 0 || len > HR_APIKEY_MAX)
        return NULL;
    /*
     * Every entry is compared, len bytes each, whatever matched before, so
     * the time depends on the length presented only, never on which key.
     */
    for (size_t i = 0; i < ks->n; i++) {
        const struct hr_apikey_s *k = &ks->keys[i];
        int same = CRYPTO_memcmp(k->seen, key, len) == 0;
        found = (same & (k->seen_len == len)) ? &ks->keys[i] : found;
    }
    if (found != NULL)
        return found;
    unsigned int n = 32;
    if (EVP_DigestInit_ex2(ks->ctx, ks->md, NULL) != 1 ||
        EVP_DigestUpdate(ks->ctx, key, len) != 1 || EVP_DigestFinal_ex(ks->ctx, sha, &n) != 1 ||
        n != 32)
        return NULL; /* only a broken libcrypto fails here */
    for (size_t i = 0; i < ks->n; i++) {
        int eq = CRYPTO_memcmp(sha, ks->keys[i].sha, 32) == 0;
        found = eq ? &ks->keys[i] : found;
    }
    if (found != NULL && found->seen_len == 0) {
        memcpy(found->seen, key, len);
        found->seen_len = len;
    }
    return found;
}

const char *
hr_apikey_name(const hr_apikey_t *k)
{
    return k->name;
}

int
hr_apikey_allows_user(const hr_apikey_t *k, const char *user)
{
    if (!k->scoped)
        return 1;
    for (size_t i = 0; i < k->nusers; i++) {
        if (strcmp(k->users[i], "*") == 0 || strcmp(k->users[i], user) == 0)
            return 1;
    }
    return 0;
}

int
hr_apikey_allows_room(const hr_apikey_t *k, const char *room)
{
    if (!k->scoped)
        return 1;
    for (size_t i = 0; i < k->nrooms; i++) {
        if (hr_room_pattern_match(k->rooms[i], room))
            return 1;
    }
    return 0;
}

int
hr_apikey_take(hr_apikeys_t *ks, const hr_apikey_t *ck, uint64_t now_ms, int *retry_after_s)
{
    struct hr_apikey_s *k = &ks->keys[ck - ks->keys];
    if (k->rate == 0)
        return 0;
    if (!k->started) {
        k->started = 1;
        k->last = now_ms;
    }
    if (now_ms > k->last) {
        uint64_t elapsed = now_ms - k->last;
        /* rate req/s is rate milli-requests per ms; clamp before multiplying. */
        if (elapsed >= (uint64_t)(k->cap / k->rate + 1))
            k->level = k->cap;
        else
            k->level = k->level + (int64_t)elapsed * k->rate > k->cap
                           ? k->cap
                           : k->level + (int64_t)elapsed * k->rate;
        k->last = now_ms;
    }
    /* A clock going back refills nothing and keeps last, so it cannot be gamed. */
    if (k->level >= HR_BUCKET_UNIT) {
        k->level -= HR_BUCKET_UNIT;
        return 0;
    }
    int64_t need = HR_BUCKET_UNIT - k->level;
    int64_t ms = (need + k->rate - 1) / k->rate;
    int64_t s = (ms + 999) / 1000;
    if (retry_after_s != NULL)
        *retry_after_s = s < 1 ? 1 : (int)s;
    return HR_APIKEY_OVER_RATE;
}

int
hr_apikeys_check(hr_apikeys_t *ks, const char *key, size_t len, const char *const *users,
                 size_t nusers, const char *room, uint64_t now_ms, hr_apikey_result_t *res)
{
    memset(res, 0, sizeof(*res));
    const hr_apikey_t *k = hr_apikeys_lookup(ks, key, len);
    if (k == NULL)
        return HR_APIKEY_UNKNOWN;
    res->key = k;
    res->name = k->name;
    for (size_t i = 0; i < nusers; i++) {
        if (!hr_apikey_allows_user(k, users[i]))
            return HR_APIKEY_OUT_OF_SCOPE;
    }
    if (room != NULL && !hr_apikey_allows_room(k, room))
        return HR_APIKEY_OUT_OF_SCOPE;
    return hr_apikey_take(ks, k, now_ms, &res->retry_after_s);
}

/* ---- configuration ---- */

void
hr_apikey_config_free(hr_apikey_config_t *cfg, size_t n)
{
    for (size_t i = 0; cfg != NULL && i < n; i++) {
        hr_free(cfg[i].name);
        hr_free(cfg[i].sha256);
        hr_apikey_strv_free(cfg[i].users, cfg[i].nusers);
        hr_apikey_strv_free(cfg[i].rooms, cfg[i].nrooms);
    }
    hr_free(cfg);
}

/* A list of strings member, or none; -1 if it is there but not an array of strings. */
static int
hr_apikey_cfg_strv(const config_setting_t *g, const char *name, char ***out, size_t *n)
{
    const config_setting_t *a = config_setting_get_member(g, name);
    *out = NULL;
    *n = 0;
    if (a == NULL)
        return 0;
    if (!config_setting_is_array(a) && !config_setting_is_list(a))
        return -1;
    int len = config_setting_length(a);
    *out = hr_calloc(len > 0 ? (size_t)len : 1, sizeof(char *));
    for (int i = 0; i < len; i++) {
        const char *s = config_setting_get_string_elem(a, i);
        if (s == NULL)
            return -1;
        (*out)[(*n)++] = hr_strdup(s);
    }
    return 1;
}

int
hr_apikey_config_load(const char *path, hr_apikey_config_t **out, size_t *n, char *err,
                      size_t errlen)
{
    config_t c;
    hr_apikey_config_t *cfg = NULL;
    size_t count = 0;
    int rc = HR_ERR;

    *out = NULL;
    *n = 0;
    config_init(&c);
    if (config_read_file(&c, path) != CONFIG_TRUE) {
        if (config_error_type(&c) == CONFIG_ERR_FILE_IO)
            hr_apikey_fail(err, errlen, "%s: cannot read", path);
        else
            hr_apikey_fail(err, errlen, "%s:%d: %s", path, config_error_line(&c),
                           config_error_text(&c));
        goto done;
    }
    const config_setting_t *keys = config_lookup(&c, "auth.ingest_keys");
    if (keys == NULL) {
        rc = 0;
        goto done;
    }
    if (!config_setting_is_aggregate(keys)) {
        hr_apikey_fail(err, errlen, "%s: auth.ingest_keys must be a list of groups", path);
        goto done;
    }
    int len = config_setting_length(keys);
    cfg = hr_calloc(len > 0 ? (size_t)len : 1, sizeof(*cfg));
    for (int i = 0; i < len; i++) {
        const config_setting_t *g = config_setting_get_elem(keys, (unsigned)i);
        hr_apikey_config_t *k = &cfg[count++];
        const char *s;
        if (!config_setting_is_group(g)) {
            hr_apikey_fail(err, errlen, "%s: auth.ingest_keys[%d] must be a group", path, i);
            goto done;
        }
        if (config_setting_lookup_string(g, "name", &s) == CONFIG_TRUE)
            k->name = hr_strdup(s);
        if (config_setting_lookup_string(g, "sha256", &s) == CONFIG_TRUE)
            k->sha256 = hr_strdup(s);
        config_setting_lookup_int(g, "rate", &k->rate);
        config_setting_lookup_int(g, "burst", &k->burst);
        int u = hr_apikey_cfg_strv(g, "users", &k->users, &k->nusers);
        int r = hr_apikey_cfg_strv(g, "rooms", &k->rooms, &k->nrooms);
        if (u < 0 || r < 0) {
            hr_apikey_fail(err, errlen,
                           "%s: auth.ingest_keys[%d]: users and rooms must be "
                           "arrays of strings",
                           path, i);
            goto done;
        }
        k->scoped = u > 0 || r > 0;
    }
    rc = 0;
done:
    config_destroy(&c);
    if (rc != 0) {
        hr_apikey_config_free(cfg, count);
    } else {
        *out = cfg;
        *n = count;
    }
    return rc;
}
