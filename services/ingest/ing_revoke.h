/*
 * The revocation routes of ingest (proto/auth.md, "Revocation"):
 *   POST /users/{user_id}/disconnect   closes the user's sockets everywhere
 *   POST /users/{user_id}/revoke       {"issued_before"?}: raises the user's
 *                                      cut-off, then closes older sockets
 * Both are one Lua script: the cut-off (SET, keeping the later value, with a
 * TTL) and the order on herald:control, so a gateway never sees the order
 * without the cut-off.
 */
#ifndef HERALD_ING_REVOKE_H
#define HERALD_ING_REVOKE_H

#include "ing_auth.h"
#include "herald/hr_http.h"
#include "herald/hr_redis.h"

#include "herald/hr_httpd.h"

/* How far ahead of ingest's clock issued_before may be: a caller's clock skew, not a ban. */
#define ING_REVOKE_FUTURE_MAX_S 300
#define ING_REVOKE_BODY_MAX 1024 /* bytes of a revoke or disconnect body */

typedef struct ing_revoke_s ing_revoke_t;

/** The routes over redis (borrowed), counting requests in flight in drain (borrowed). */
ing_revoke_t *ing_revoke_create(hr_redis_async_t *redis, ing_auth_t *auth, ing_metrics_t *metrics,
                                hr_http_drain_t *drain, int ttl_s);
void ing_revoke_destroy(ing_revoke_t *rv);

/**
 * Answers req if its path is /users/{user_id}/disconnect or .../revoke
 * (returns 1), with c the caller ing_auth_identify() found; returns 0 for any
 * other path (nothing answered).
 */
int ing_revoke_route(ing_revoke_t *rv, hr_httpd_req_t *req, const ing_caller_t *c);

#endif
