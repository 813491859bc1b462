/*
 * Ingest API keys (proto/auth.md): the config holds the SHA-256 of each key,
 * its name, optionally the targets it may notify (users, room patterns) and
 * its rate (a token bucket per key). A presented key is hashed and compared
 * in constant time against every configured hash. Time is the caller's
 * (milliseconds, any monotonic origin), so the arithmetic is testable.
 */
#ifndef HERALD_HR_APIKEY_H
#define HERALD_HR_APIKEY_H

#include <stddef.h>
#include <stdint.h>

/* Results of hr_apikeys_check(); the HTTP status is in the comment. */
#define HR_APIKEY_UNKNOWN (-121)      /* 401: no key, or not a configured one */
#define HR_APIKEY_OUT_OF_SCOPE (-122) /* 403: a target the key may not notify */
#define HR_APIKEY_OVER_RATE (-123)    /* 429: bucket empty; Retry-After given */

#define HR_APIKEY_MAX 256 /* longest key accepted, bytes */
#define HR_APIKEY_NAME_MAX 64

/* One key of the configuration; strings owned by the config. */
typedef struct {
    char *name;   /* owned: appears in logs of what the key sent */
    char *sha256; /* owned: 64 hex digits of SHA-256(key) */
    char **users; /* owned: user ids or "*"; NULL with rooms NULL = any target */
    size_t nusers;
    char **rooms; /* owned: room names or prefix:* patterns */
    size_t nrooms;
    int scoped; /* users or rooms was given: only listed targets */
    int rate;   /* requests per second; 0 = unlimited */
    int burst;  /* bucket size; 0 = rate */
} hr_apikey_config_t;

typedef struct hr_apikeys_s hr_apikeys_t;
typedef struct hr_apikey_s hr_apikey_t;

/** The outcome of one check. */
typedef struct {
    const hr_apikey_t *key; /* borrowed: set unless HR_APIKEY_UNKNOWN */
    const char *name;       /* borrowed: the key's name, or NULL */
    int retry_after_s;      /* HR_APIKEY_OVER_RATE: seconds until a request fits */
} hr_apikey_result_t;

/**
 * Reads auth.ingest_keys of the libconfig file at path into *out (an array
 * of *n, hr_apikey_config_free). Returns 0 (no section: *n = 0), or HR_ERR.
 */
int hr_apikey_config_load(const char *path, hr_apikey_config_t **out, size_t *n, char *err,
                          size_t errlen);
/** Frees an array hr_apikey_config_load() returned. */
void hr_apikey_config_free(hr_apikey_config_t *cfg, size_t n);

/**
 * Builds the key table (cfg copied). Returns 0 and *out, or HR_ERR with err
 * (bad hex, duplicate hash or name, bad pattern, negative rate).
 */
int hr_apikeys_create(const hr_apikey_config_t *cfg, size_t n, hr_apikeys_t **out, char *err,
                      size_t errlen);
/** Frees ks (NULL is fine). */
void hr_apikeys_destroy(hr_apikeys_t *ks);

/**
 * The key whose hash is SHA-256(key[0..len)), found by a constant-time
 * comparison with every configured hash (time independent of which key, if
 * any, matches). Returns it, or NULL. A key that matched is remembered, so
 * that later lookups of it compare bytes (again with every entry, in
 * constant time) instead of hashing.
 */
const hr_apikey_t *hr_apikeys_lookup(hr_apikeys_t *ks, const char *key, size_t len);

/** Whether k may notify user (exact id, or "*"). */
int hr_apikey_allows_user(const hr_apikey_t *k, const char *user);
/** Whether k may notify room (names and prefix:* patterns). */
int hr_apikey_allows_room(const hr_apikey_t *k, const char *room);
/** The key's configured name (borrowed). */
const char *hr_apikey_name(const hr_apikey_t *k);

/**
 * Takes one request from k's bucket at now_ms. Returns 0, or
 * HR_APIKEY_OVER_RATE with *retry_after_s (>= 1) the whole seconds until the
 * bucket holds a request again.
 */
int hr_apikey_take(hr_apikeys_t *ks, const hr_apikey_t *k, uint64_t now_ms, int *retry_after_s);

/**
 * What ingest does per request: lookup (HR_APIKEY_UNKNOWN), every target in
 * scope (users[0..nusers) and room, either may be empty/NULL;
 * HR_APIKEY_OUT_OF_SCOPE, which takes nothing from the bucket), then one
 * request from the bucket (HR_APIKEY_OVER_RATE). Returns 0 with res filled.
 */
int hr_apikeys_check(hr_apikeys_t *ks, const char *key, size_t len, const char *const *users,
                     size_t nusers, const char *room, uint64_t now_ms, hr_apikey_result_t *res);

/** The stable reason of an HR_APIKEY_* code ("unknown_key", "out_of_scope", "over_rate"). */
const char *hr_apikey_reason(int code);

/** Writes the lowercase hex SHA-256 of key[0..len) (64 digits and a NUL) to hex. */
void hr_apikey_hash_hex(const char *key, size_t len, char hex[65]);
#endif
