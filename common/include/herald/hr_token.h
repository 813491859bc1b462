/*
 * Signed tokens (JWT, proto/auth.md) for the gateway's upgrade and the
 * history API: a verifier holds several keys picked by the token's "kid",
 * each bound to one algorithm (HS256 shared secret, RS256 or ES256 public
 * key), and checks signature, exp/nbf with leeway, iss/aud when configured,
 * sub by the user id rule and the optional "rooms" claim. Signatures are
 * checked by libjwt; the algorithm is chosen by the key, never by the token.
 * Nothing here logs, and no error text quotes the token.
 */
#ifndef HERALD_HR_TOKEN_H
#define HERALD_HR_TOKEN_H

#include <stddef.h>
#include <stdint.h>

/* Refusals of hr_token_verify() and friends; hr_token_reason() names them. */
#define HR_TOKEN_MALFORMED (-101)     /* not three base64url JSON parts, bad claim types */
#define HR_TOKEN_UNKNOWN_KID (-102)   /* no "kid", or no key with that id */
#define HR_TOKEN_WRONG_ALG (-103)     /* "alg" is none or not the key's algorithm */
#define HR_TOKEN_BAD_SIGNATURE (-104) /* the signature does not verify */
#define HR_TOKEN_EXPIRED (-105)       /* now >= exp + leeway */
#define HR_TOKEN_NOT_YET_VALID (-106) /* now + leeway < nbf */
#define HR_TOKEN_BAD_SUB (-107)       /* sub missing or not a user id */
#define HR_TOKEN_BAD_ISS (-108)       /* iss differs from the configured issuer */
#define HR_TOKEN_BAD_AUD (-109)       /* aud lacks the configured audience */
#define HR_TOKEN_REVOKED (-110)       /* iat before the user's cut-off */
#define HR_TOKEN_SUB_CHANGED (-111)   /* a refresh token for another user */

#define HR_TOKEN_MAX 8192      /* longest token accepted, bytes */
#define HR_TOKEN_SUB_MAX 128   /* = HR_USER_ID_MAX */
#define HR_TOKEN_ROOMS_MAX 256 /* entries of the rooms claim */
#define HR_TOKEN_SECRET_MIN 32 /* HS256 secrets shorter than the hash are refused */

typedef enum { HR_TOKEN_HS256 = 1, HR_TOKEN_RS256, HR_TOKEN_ES256 } hr_token_alg_t;

/* One key of the configuration; every string owned by the config. */
typedef struct {
    char *kid;             /* owned: the token header's "kid" */
    char *alg;             /* owned: "HS256", "RS256" or "ES256" */
    char *secret;          /* owned: HS256 shared secret (>= 32 bytes), else NULL */
    char *public_key_file; /* owned: RS256/ES256 PEM (SubjectPublicKeyInfo), else NULL */
} hr_token_key_config_t;

/* What a service fills from its config (or hr_token_config_load()). */
typedef struct {
    hr_token_key_config_t *keys; /* owned array */
    size_t nkeys;
    int leeway_s;   /* slack for exp and nbf (clock skew), >= 0 */
    char *issuer;   /* owned; NULL or "" = iss not checked */
    char *audience; /* owned; NULL or "" = aud not checked */
} hr_token_config_t;

/* The claims of a verified token. */
typedef struct {
    char sub[HR_TOKEN_SUB_MAX + 1]; /* the user id */
    int64_t exp;                    /* seconds since the epoch */
    int64_t iat;                    /* 0 when absent */
    int has_iat;
    int has_rooms; /* 0: no rooms claim, so no room is allowed */
    char **rooms;  /* owned array of owned names or prefix:* patterns */
    size_t nrooms;
} hr_token_claims_t;

typedef struct hr_token_verifier_s hr_token_verifier_t;

/**
 * Reads the "auth" section of the libconfig file at path (keys, leeway_s,
 * issuer, audience; proto/auth.md) into cfg. Returns 0, or HR_ERR with err.
 */
int hr_token_config_load(const char *path, hr_token_config_t *cfg, char *err, size_t errlen);
/** Frees what cfg owns (either filler); cfg may then be reused. */
void hr_token_config_free(hr_token_config_t *cfg);

/**
 * Builds a verifier from cfg (copied; PEM files read now and checked to be
 * an RSA key of >= 2048 bits for RS256 or a P-256 key for ES256). Returns 0
 * and *out, or HR_ERR with err (duplicate kid, short secret, unreadable key).
 */
int hr_token_verifier_create(const hr_token_config_t *cfg, hr_token_verifier_t **out, char *err,
                             size_t errlen);
/** Frees v (NULL is fine). */
void hr_token_verifier_destroy(hr_token_verifier_t *v);

/**
 * Verifies token (len bytes, need not be NUL-terminated) at time now (seconds
 * since the epoch) and fills claims. Returns 0, or one of HR_TOKEN_* with err
 * saying why (never the token's text). claims need hr_token_claims_free()
 * only after a 0.
 */
int hr_token_verify(const hr_token_verifier_t *v, const char *token, size_t len, int64_t now,
                    hr_token_claims_t *claims, char *err, size_t errlen);

/**
 * Verifies a refresh token like hr_token_verify() and requires its sub to be
 * cur's. Returns 0 with next filled, HR_TOKEN_SUB_CHANGED, or a verify code.
 */
int hr_token_verify_refresh(const hr_token_verifier_t *v, const hr_token_claims_t *cur,
                            const char *token, size_t len, int64_t now, hr_token_claims_t *next,
                            char *err, size_t errlen);

/**
 * The revocation cut-off (proto/auth.md): a token issued before cutoff
 * (seconds; <= 0 = none) is refused. A token without iat counts as issued at
 * 0, so any cut-off refuses it. Returns 0 or HR_TOKEN_REVOKED.
 */
int hr_token_check_cutoff(const hr_token_claims_t *claims, int64_t cutoff);

/** Whether the claims let the user join and publish to room (exact or prefix:* match). */
int hr_token_room_allowed(const hr_token_claims_t *claims, const char *room);

/** Frees what claims own. */
void hr_token_claims_free(hr_token_claims_t *claims);

/** The stable reason of an HR_TOKEN_* code ("expired", "bad_signature"...). */
const char *hr_token_reason(int code);

/**
 * Mints an HS256 token signed with the key kid of cfg: sub, iat = now,
 * exp = now + ttl_s, the rooms (NULL = no claim) and iss/aud when cfg has
 * them. Returns 0 and *out (hr_free), or HR_ERR with err.
 */
int hr_token_mint_hs256(const hr_token_config_t *cfg, const char *kid, const char *sub,
                        const char *const *rooms, size_t nrooms, int64_t now, int64_t ttl_s,
                        char **out, char *err, size_t errlen);

/** Whether s is a room name or a room pattern: "*" or "<room chars>:*". */
int hr_room_pattern_valid(const char *s);
/** Whether room matches pattern (exact, "*", or "<prefix>:*" with a non-empty rest). */
int hr_room_pattern_match(const char *pattern, const char *room);
/** The user id rule: 1..128 bytes of UTF-8, no control characters (C0, DEL, C1). */
int hr_token_user_id_valid(const char *s, size_t len);
#endif
