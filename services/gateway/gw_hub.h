/*
 * The hub: which sockets exist, which user each belongs to, and which Redis
 * channels this gateway therefore needs. It knows nothing of libwebsockets: a
 * connection is a gw_conn_t embedded in whatever the transport allocates, with
 * two callbacks, so unit tests drive it with fake connections.
 *
 * Each connection has a bounded outbound queue of shared messages. Delivery
 * never blocks and never copies: a message is queued by reference on every
 * recipient, and a connection whose queue is full is killed (slow consumer)
 * instead of letting the gateway's memory grow.
 */
#ifndef HERALD_GW_HUB_H
#define HERALD_GW_HUB_H

#include "gw_msg.h"

#include <stddef.h>
#include <stdint.h>

typedef struct gw_conn_s gw_conn_t;
typedef struct gw_user_s gw_user_t;
typedef struct gw_room_s gw_room_t;
typedef struct gw_member_s gw_member_t;
typedef struct gw_hub_s gw_hub_t;

#define GW_ROOM_MAX 64 /* bytes in a room name */

/** What the transport does for the hub. */
typedef struct {
    /** The queue went from empty to non-empty (or a close was asked): schedule a write. */
    void (*wake)(gw_conn_t *c);
} gw_conn_ops_t;

/* WebSocket close codes the hub decides. */
#define GW_CLOSE_GOING_AWAY 1001
#define GW_CLOSE_POLICY 1008
#define GW_CLOSE_TOO_BIG 1009
#define GW_CLOSE_TRY_AGAIN 1013

struct gw_conn_s {
    const gw_conn_ops_t *ops; /* borrowed, static */
    uint64_t id;              /* unique within the hub */
    gw_user_t *user;          /* borrowed: set by gw_hub_attach */
    gw_conn_t *user_prev;     /* borrowed: the user's list */
    gw_conn_t *user_next;     /* borrowed */
    gw_member_t *rooms;       /* owned list of this connection's memberships */
    uint32_t nrooms;
    gw_msg_t **q; /* owned ring of owned references */
    uint32_t qcap, qhead, qlen;
    uint32_t qbytes;
    uint16_t close_code; /* non-zero once a close is decided */
    char close_reason[30];
};

typedef struct {
    /** First connection of a channel's audience arrived: subscribe it. */
    void (*subscribe)(void *ud, const char *channel, size_t len);
    /** Last one left: unsubscribe. */
    void (*unsubscribe)(void *ud, const char *channel, size_t len);
    /**
     * A user's first local socket joined a room (joined=1), or the user's last
     * local socket left it (joined=0). Presence is kept from these.
     */
    void (*presence)(void *ud, const char *room, const char *user_id, int joined);
    void *ud;
    uint32_t max_rooms;        /* per connection */
    uint32_t queue_max_frames; /* per connection */
    uint32_t queue_max_bytes;  /* per connection */
} gw_hub_opts_t;

typedef struct {
    uint64_t conns, users, rooms, memberships;
    uint64_t frames_queued; /* total references queued */
    uint64_t slow_killed;   /* connections cut for a full queue */
} gw_hub_stats_t;

gw_hub_t *gw_hub_create(const gw_hub_opts_t *opts);
/** Frees the hub; every connection must have been detached. */
void gw_hub_destroy(gw_hub_t *h);

/** Initializes c (zeroes it, sets ops and a fresh id). */
void gw_conn_init(gw_hub_t *h, gw_conn_t *c, const gw_conn_ops_t *ops);
/** Registers c under user_id; subscribes the user's channel on its first connection. */
void gw_hub_attach(gw_hub_t *h, gw_conn_t *c, const char *user_id);
/**
 * Removes c from every index (rooms included) and drops its queue;
 * unsubscribes channels it was the last listener of.
 */
void gw_hub_detach(gw_hub_t *h, gw_conn_t *c);
/** The user id of an attached connection (borrowed), or NULL. */
const char *gw_conn_user_id(const gw_conn_t *c);

/** Whether name is a valid room name: 1-64 of [A-Za-z0-9_.:@-]. */
int gw_room_name_valid(const char *name);
/**
 * Adds c to room. Returns 0, 1 if c already is a member, or HR_DECLINED when c
 * is in max_rooms rooms already. Subscribes the room's channel for its first
 * local member and reports presence for the user's first local socket.
 */
int gw_hub_join(gw_hub_t *h, gw_conn_t *c, const char *room);
/** Removes c from room: 0, or HR_DECLINED if it was not a member. */
int gw_hub_leave(gw_hub_t *h, gw_conn_t *c, const char *room);
/**
 * Removes c from every room allowed(room, ud) refuses (returns 0), each as
 * gw_hub_leave would, and after each such leave calls left(room, ud) (room
 * is valid during the call; left may send to c but not join or leave).
 * Returns how many rooms c left.
 */
size_t gw_hub_leave_unless(gw_hub_t *h, gw_conn_t *c, int (*allowed)(const char *room, void *ud),
                           void (*left)(const char *room, void *ud), void *ud);
/** Whether c is a member of room. */
int gw_conn_in_room(const gw_conn_t *c, const char *room);
/** The attached connection with this id, or NULL. */
gw_conn_t *gw_hub_conn_get(gw_hub_t *h, uint64_t id);
/** Local sockets in a room (0 if unknown). */
uint32_t gw_hub_room_size(gw_hub_t *h, const char *room);
/** Calls fn for every room with a local member (fn must not join or leave). */
void gw_hub_foreach_room(gw_hub_t *h, void (*fn)(const char *room, void *ud), void *ud);
/** Calls fn for every user with a local socket in room (fn must not join or leave). */
void gw_hub_foreach_room_user(gw_hub_t *h, const char *room, void (*fn)(const char *user, void *ud),
                              void *ud);
/** Calls fn for every (room, user) with at least one local socket. */
void gw_hub_foreach_presence(gw_hub_t *h,
                             void (*fn)(const char *room, const char *user_id, void *ud), void *ud);

/**
 * Queues m (a new reference) on c. Returns 0, or HR_DECLINED if c is closing or
 * its queue is full, in which case c is marked to close with 1008.
 */
int gw_conn_send(gw_hub_t *h, gw_conn_t *c, gw_msg_t *m);
/** Takes the oldest queued message (the caller owns the reference), or NULL. */
gw_msg_t *gw_conn_pop(gw_conn_t *c);
/** Asks c to close with code once its queue has been written. */
void gw_conn_close(gw_conn_t *c, uint16_t code, const char *reason);

/**
 * Delivers a payload that arrived on a Redis channel to every local
 * connection listening to it; the payload is copied once. Returns the number
 * of connections it was queued on.
 */
size_t gw_hub_deliver(gw_hub_t *h, const char *channel, size_t chlen, const char *payload,
                      size_t len);
/**
 * Like gw_hub_deliver, but connection `special` (if listening) gets `alt`
 * instead of the shared message: the sender's copy carrying its ref.
 */
size_t gw_hub_deliver_alt(gw_hub_t *h, const char *channel, size_t chlen, const char *payload,
                          size_t len, uint64_t special, gw_msg_t *alt);

/** Calls fn on every attached connection (fn may close but not detach). */
void gw_hub_foreach_conn(gw_hub_t *h, void (*fn)(gw_conn_t *c, void *ud), void *ud);
/**
 * Calls fn on every attached connection of user_id, and on no other (fn may
 * close but not detach): the user index, not a walk. Returns how many.
 */
size_t gw_hub_foreach_user_conn(gw_hub_t *h, const char *user_id,
                                void (*fn)(gw_conn_t *c, void *ud), void *ud);
/** Calls fn on every channel the hub currently needs (for re-subscribing). */
void gw_hub_foreach_channel(gw_hub_t *h, void (*fn)(const char *ch, size_t len, void *ud),
                            void *ud);

gw_hub_stats_t gw_hub_stats(const gw_hub_t *h);

#endif
