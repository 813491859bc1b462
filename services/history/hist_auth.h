/*
 * Who is asking history (proto/auth.md, "Where each service checks →
 * History"): the Authorization: Bearer <jwt> of a request checked by
 * hr_token, the answers of a refusal (401 with WWW-Authenticate, 403), the
 * revocation cut-off key and its reply, the development switch that accepts
 * ?user_id= without a token, and POST /dev/token (history.dev_mint). No I/O
 * but the answers it sends; the Redis lookup is the caller's.
 */
#ifndef HERALD_HIST_AUTH_H
#define HERALD_HIST_AUTH_H

#include "hr_proto.h"
#include "herald/hr_httpd.h"
#include "herald/hr_token.h"

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#define HIST_AUTH_MISSING (-120) /* "missing": no Authorization header (and no dev user) */

/* POST /dev/token: ttl_s bounds and default (seconds). */
#define HIST_MINT_TTL_DEFAULT 3600
#define HIST_MINT_TTL_MIN 1
#define HIST_MINT_TTL_MAX 86400
/* Its body: 256 rooms of up to 66 bytes each, quoted, fit. */
#define HIST_MINT_BODY_MAX (32 * 1024)

typedef struct hist_auth_s hist_auth_t;

typedef struct {
    const char *config_path; /* borrowed: the file whose auth section holds the keys; NULL: none */
    int dev_user_query;      /* accept ?user_id= without a token (development only) */
    int dev_mint;            /* serve POST /dev/token (development only) */
} hist_auth_opts_t;

/**
 * Loads the auth section and builds the verifier; logs a warning for each
 * development switch that is on and for a section without keys. dev_mint
 * needs an HS256 key. Returns 0 and *out, or HR_ERR with err.
 */
int hist_auth_create(const hist_auth_opts_t *o, hist_auth_t **out, char *err, size_t errlen);
/** Frees a (NULL is fine). */
void hist_auth_destroy(hist_auth_t *a);
/** Whether ?user_id= without a token is accepted. */
int hist_auth_dev_user_query(const hist_auth_t *a);
/** Whether POST /dev/token exists. */
int hist_auth_dev_mint(const hist_auth_t *a);

/**
 * Checks the request's Authorization header at time now: exactly one, the
 * scheme Bearer (any case), then a token hr_token_verify() accepts. Returns
 * 0 with claims filled (hr_token_claims_free), HIST_AUTH_MISSING when there
 * is no such header, or an HR_TOKEN_* refusal with err saying why (never the
 * token).
 */
int hist_auth_verify(const hist_auth_t *a, hr_httpd_req_t *req, int64_t now,
                     hr_token_claims_t *claims, char *err, size_t errlen);
/** hist_auth_verify of a request whose Authorization values are values[0..n) (no server). */
int hist_auth_verify_values(const hist_auth_t *a, const char *const *values, size_t n, int64_t now,
                            hr_token_claims_t *claims, char *err, size_t errlen);

/** The stable reason of a hist_auth_verify() refusal ("missing", "expired"...). */
const char *hist_auth_reason(int code);

/**
 * Answers 401 {"error":{"code":"unauthorized","reason":<reason of code>,
 * "message":message}} with WWW-Authenticate: Bearer (and error="invalid_token"
 * when a token was presented).
 */
void hist_auth_send_unauthorized(hr_httpd_req_t *req, int code, const char *message);

/** Writes herald:revoked:{<user>} (proto/auth.md) into buf; returns its length, 0 if it does not
 * fit. */
size_t hist_auth_revoked_key(char *buf, size_t cap, const char *user);

/**
 * Reads a GET of the cut-off key: nil is no cut-off (0), a decimal string or
 * integer is the cut-off in seconds. Returns 0 with *cutoff, or HR_ERR for
 * any other reply (an error, or a value that is not a whole number).
 */
int hist_auth_cutoff_parse(const redisReply *r, int64_t *cutoff);

/**
 * POST /dev/token: validates the JSON body {"user_id", "rooms"?, "ttl_s"?}
 * (user id rule, room names or patterns, HIST_MINT_TTL_MIN..MAX) and mints
 * a token with the first HS256 key at time now. Returns 0 with *out, the
 * answer {"token","expires_at"} (hr_free), or HR_DECLINED with e filled (400).
 */
int hist_auth_mint(const hist_auth_t *a, const char *body, size_t len, int64_t now, char **out,
                   hr_proto_err_t *e);

#endif
