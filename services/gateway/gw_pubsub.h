/*
 * The gateway's Redis subscriber: one SUBSCRIBE connection (hiredis on the
 * libuv loop) that holds exactly the channels the hub asks for, re-subscribes
 * all of them after a reconnect, and hands each message to a callback.
 *
 * Two hiredis 0.14 pitfalls shape it: a SUBSCRIBE pipelined behind an
 * UNSUBSCRIBE of the same channel loses its callback, and a context whose
 * subscription count drops to zero asserts on the next subscribe reply. So a
 * channel being unsubscribed is re-subscribed only after the UNSUBSCRIBE reply,
 * and the connection always holds one control channel of its own.
 */
#ifndef HERALD_GW_PUBSUB_H
#define HERALD_GW_PUBSUB_H

#include "herald/hr_redis.h"

#include <stddef.h>
#include <uv.h>

typedef struct gw_pubsub_s gw_pubsub_t;

typedef void (*gw_pubsub_msg_fn)(void *ud, const char *channel, size_t chlen, const char *payload,
                                 size_t len);
/**
 * A wanted channel's SUBSCRIBE was confirmed: messages published from now on
 * arrive. channel NULL: the connection was lost, no channel is live.
 */
typedef void (*gw_pubsub_live_fn)(void *ud, const char *channel, size_t chlen);

/** libuv implementation of hr_loop_ops_t; loop is a uv_loop_t *. */
extern const hr_loop_ops_t gw_loop_ops_libuv;

/**
 * Connects to redis_url and keeps the ncontrol channels of control subscribed
 * for its life (one SUBSCRIBE per connect; on_live reports each of them too).
 * Returns NULL with err filled if the URL is bad.
 */
gw_pubsub_t *gw_pubsub_create(uv_loop_t *loop, const char *redis_url, const char *const *control,
                              size_t ncontrol, gw_pubsub_msg_fn on_msg, gw_pubsub_live_fn on_live,
                              void *ud, char *err, size_t errlen);
void gw_pubsub_destroy(gw_pubsub_t *p);
/** Wants messages of channel (idempotent). */
void gw_pubsub_want(gw_pubsub_t *p, const char *channel, size_t len);
/** No longer wants channel. */
void gw_pubsub_unwant(gw_pubsub_t *p, const char *channel, size_t len);
/** Whether channel is wanted and Redis confirmed its subscription. */
int gw_pubsub_live(const gw_pubsub_t *p, const char *channel, size_t len);
/** Whether the connection is up. */
int gw_pubsub_ready(const gw_pubsub_t *p);
/** Times the connection became READY again after a loss. */
uint64_t gw_pubsub_reconnects(const gw_pubsub_t *p);
/** Channels currently wanted (excluding the control channels). */
size_t gw_pubsub_count(const gw_pubsub_t *p);

#endif
