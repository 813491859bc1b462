/*
 * The gateway's mirror of the revocation cut-offs (proto/auth.md,
 * "Revocation"): user → "tokens issued before T are refused", read from the
 * keys herald:revoked:{<user>} and kept current by the disconnect orders on
 * herald:control. The order of a (re)sync matters: the control channel is
 * subscribed first (the server tells gw_revoke_control_live), then every key
 * is read by SCAN + MGET on the command connection, so an order published
 * during the scan is not lost. Until the first sync has finished the mirror
 * is not loaded and upgrades are refused (503): a cut-off must not be
 * skipped. Entries expire locally after auth.revocation_ttl_s, the keys' TTL.
 */
#ifndef HERALD_GW_REVOKE_H
#define HERALD_GW_REVOKE_H

#include "herald/hr_redis.h"

#include <stddef.h>
#include <stdint.h>

typedef struct gw_revoke_s gw_revoke_t;

/**
 * Close the sockets of user: all of them when has_cutoff is 0, else those
 * whose token was issued before issued_before.
 */
typedef void (*gw_revoke_close_fn)(void *ud, const char *user, int has_cutoff,
                                   int64_t issued_before);

/** A mirror reading through redis (borrowed; the command connection). */
gw_revoke_t *gw_revoke_create(hr_redis_async_t *redis, int ttl_s, gw_revoke_close_fn close_fn,
                              void *ud);
/** Frees r; call after redis is destroyed (its callbacks then have run). */
void gw_revoke_destroy(gw_revoke_t *r);

/** herald:control is subscribed (live=1) or lost (0): a sync starts when both links are up. */
void gw_revoke_control_live(gw_revoke_t *r, int live);
/** The command connection became READY: sync again (keys may have changed while it was down). */
void gw_revoke_command_ready(gw_revoke_t *r);
/** A message on herald:control (payload, len bytes). */
void gw_revoke_message(gw_revoke_t *r, const char *payload, size_t len);

/** The user's cut-off in seconds, 0 if none. */
int64_t gw_revoke_cutoff(gw_revoke_t *r, const char *user);
/** Whether a sync has completed once. */
int gw_revoke_loaded(const gw_revoke_t *r);
/** Users with a cut-off in the mirror. */
size_t gw_revoke_count(const gw_revoke_t *r);
/** Drops expired entries (bounds memory); call now and then. */
void gw_revoke_sweep(gw_revoke_t *r);

#endif
