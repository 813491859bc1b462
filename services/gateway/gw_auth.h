/*
 * Who may open a socket and for how long (proto/auth.md, "Gateway"): the
 * upgrade check (address rate, Origin allow-list, the user token from
 * ?token= or the herald.token.<jwt> subprotocol, the revocation cut-off),
 * the refresh of a socket's token, and the timer that closes a socket when
 * its token expires. Tokens are checked by hr_token; nothing here logs a
 * token.
 */
#ifndef HERALD_GW_AUTH_H
#define HERALD_GW_AUTH_H

#include "gw_server.h"
#include "herald/hr_token.h"

#include <libwebsockets.h>
#include <stdint.h>
#include <uv.h>

/*
 * The request header that carries a subprotocol token to lws's callbacks:
 * gw_preread moves herald.token.<jwt> out of Sec-WebSocket-Protocol into it
 * (lws 4.1 cannot select a protocol from a list longer than 127 bytes) and
 * drops any copy the client sent itself.
 */
#define GW_AUTH_TOKEN_HEADER "x-herald-subprotocol-token:"

/* Bytes an upgrade request's headers may take (lws max_http_header_data, gw_preread). */
#define GW_AUTH_HEAD_MAX 16384

/* Refusal reasons beyond hr_token's (their reason string in proto/ws.md). */
#define GW_AUTH_MISSING (-120) /* "missing": no token and no dev user_id */

typedef struct gw_auth_s gw_auth_t;

/** The revocation cut-off of a user (seconds; 0 = none), from gw_revoke. */
typedef int64_t (*gw_cutoff_fn)(void *ud, const char *user);

/** An upgrade refused: what the HTTP answer says. */
typedef struct {
    unsigned status;    /* 401, 403, 429, 503 */
    const char *code;   /* HR_E_* */
    const char *reason; /* 401: the token's reason; else NULL */
    char message[128];
    int retry_after_s; /* 429: seconds */
} gw_refusal_t;

/*
 * What an accepted upgrade is: a token's claims, or a dev ?user_id= socket
 * (has_token 0: claims.sub holds the query's user id, nothing else is set).
 */
typedef struct {
    int has_token;
    hr_token_claims_t claims; /* rooms owned when has_token */
} gw_identity_t;

/**
 * Loads the auth section and gateway.allowed_origins from cfg->config_path
 * (env HERALD_GATEWAY_ALLOWED_ORIGINS, comma-separated, overrides the list)
 * and logs a warning for each development switch. NULL with err on a bad
 * section.
 */
gw_auth_t *gw_auth_create(const gw_config_t *cfg, char *err, size_t errlen);
void gw_auth_destroy(gw_auth_t *a);

/**
 * Checks the upgrade on wsi from client address ip at now (seconds): rate,
 * Origin, credentials, cut-off. Returns 0 with id filled, or HR_DECLINED
 * with r filled (nothing to free).
 */
int gw_auth_upgrade(gw_auth_t *a, struct lws *wsi, const char *ip, int64_t now, gw_cutoff_fn cutoff,
                    void *ud, gw_identity_t *id, gw_refusal_t *r);

/**
 * Checks a refresh token (len bytes) for the socket whose identity is cur:
 * 0 with next filled (the caller frees cur's claims and keeps next), or an
 * HR_TOKEN_* code (hr_token_reason() names it).
 */
int gw_auth_refresh(const gw_auth_t *a, const gw_identity_t *cur, const char *token, size_t len,
                    int64_t now, gw_cutoff_fn cutoff, void *ud, hr_token_claims_t *next);

/** The leeway after exp during which a token still works, seconds. */
int gw_auth_leeway_s(const gw_auth_t *a);

/** The reason string of an HR_TOKEN_* or GW_AUTH_* code. */
const char *gw_auth_reason(int code);

/** Drops address buckets that are full again (bounds their memory); call now and then. */
void gw_auth_sweep(gw_auth_t *a, uint64_t now_ms);

/** Frees what id owns and zeroes it. */
void gw_identity_clear(gw_identity_t *id);
/** The user id of id (borrowed). */
const char *gw_identity_user(const gw_identity_t *id);
/** Whether id may join or publish to room (dev sockets: every room). */
int gw_identity_room_allowed(const gw_identity_t *id, const char *room);
/** Whether a cut-off (issued_before, seconds) covers id's token (dev sockets: iat 0). */
int gw_identity_revoked_by(const gw_identity_t *id, int64_t issued_before);

/**
 * (Re)arms *t (created on loop at first use, data = data) to call cb at
 * exp + leeway_s (wall clock seconds); dev sockets (no exp) get no timer.
 */
void gw_auth_expiry_arm(uv_loop_t *loop, uv_timer_t **t, const gw_identity_t *id, int leeway_s,
                        uv_timer_cb cb, void *data);
/** Stops and frees *t (through uv), sets it NULL. */
void gw_auth_expiry_stop(uv_timer_t **t);

#endif
