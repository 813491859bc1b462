/*
 * Rooms across gateways: chat messages and presence, kept in Redis so every
 * gateway sees the same room.
 *
 * Chat: a client's `publish` becomes one atomic script that appends the
 * message to the room-messages stream (the worker stores it) and PUBLISHes
 * the finished `message` frame on herald:room:<room>; every gateway with
 * members forwards it, so all members everywhere see one order per room.
 * The sender's own copy carries its `ref`.
 *
 * Presence: per room a sorted set user → expiry, and per (room, user) a
 * sorted set gateway → expiry, refreshed by each gateway every ttl/3, so a
 * killed gateway's users vanish within ttl. Join/leave scripts publish
 * `joined`/`left` only when a user appears in or disappears from the room
 * across all gateways.
 */
#ifndef HERALD_GW_ROOMS_H
#define HERALD_GW_ROOMS_H

#include "gw_hub.h"
#include "herald/hr_redis.h"

#include <cjson/cJSON.h>
#include <uv.h>

typedef struct gw_rooms_s gw_rooms_t;

typedef struct {
    uv_loop_t *loop;         /* borrowed */
    hr_redis_async_t *redis; /* borrowed: the gateway's command connection */
    gw_hub_t *hub;           /* borrowed */
    const char *node_id;
    int presence_ttl_s;      /* a silent gateway's members vanish after this */
    int presence_events_max; /* rooms larger than this get no joined/left events */
} gw_rooms_opts_t;

gw_rooms_t *gw_rooms_create(const gw_rooms_opts_t *o);
void gw_rooms_destroy(gw_rooms_t *r);

/** The command connection became READY: re-assert this gateway's presence. */
void gw_rooms_on_ready(gw_rooms_t *r);

/**
 * Publishes message from c (a member of room). idem_key (NULL or 1..
 * HR_CHAT_IDEM_KEY_MAX visible ASCII) makes a retry with the same key, user
 * and room answer the first message instead of publishing again. Returns 0,
 * or HR_AGAIN when Redis is unreachable (nothing was sent).
 */
int gw_rooms_publish(gw_rooms_t *r, gw_conn_t *c, const char *room, const char *message,
                     const char *idem_key, const cJSON *ref);
/** Hub hook: a user's first local socket joined / last one left room. */
void gw_rooms_presence_changed(gw_rooms_t *r, const char *room, const char *user_id, int joined);
/**
 * Answers c with one page (about HR_PRESENCE_PAGE) of the room's users across
 * all gateways, from cursor (NULL: the first page; else one a previous answer
 * gave, see gw_rooms_cursor_valid). HR_AGAIN if Redis is down.
 */
int gw_rooms_presence_query(gw_rooms_t *r, gw_conn_t *c, const char *room, const char *cursor,
                            const cJSON *ref);
/** Whether cursor can be a presence cursor: 1-20 decimal digits. */
int gw_rooms_cursor_valid(const char *cursor);
/** Delivers a frame that arrived on a room channel (the sender's copy gets its ref). */
void gw_rooms_deliver(gw_rooms_t *r, const char *channel, size_t chlen, const char *payload,
                      size_t len);

#endif
