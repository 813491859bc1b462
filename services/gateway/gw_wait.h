/*
 * Sockets waiting for a channel's subscription to be live, indexed by
 * channel: an intrusive link the caller embeds, so adding, removing and
 * finding the waiters of one channel are O(1) whatever else waits.
 */
#ifndef HERALD_GW_WAIT_H
#define HERALD_GW_WAIT_H

#include <stddef.h>

typedef struct gw_waiter_s gw_waiter_t;
struct gw_waiter_s {
    char *ch; /* owned: the channel waited for; NULL when not waiting */
    size_t len;
    gw_waiter_t *prev; /* borrowed: the others waiting for ch */
    gw_waiter_t *next; /* borrowed */
};

typedef struct gw_waiters_s gw_waiters_t;

gw_waiters_t *gw_waiters_create(void);
/** Frees the index; every waiter must have been removed. */
void gw_waiters_destroy(gw_waiters_t *w);
/** x (zeroed or removed) waits for channel ch. */
void gw_waiters_add(gw_waiters_t *w, gw_waiter_t *x, const char *ch, size_t len);
/** x no longer waits (no-op if it does not). */
void gw_waiters_remove(gw_waiters_t *w, gw_waiter_t *x);
/** A waiter for ch, or NULL. */
gw_waiter_t *gw_waiters_first(gw_waiters_t *w, const char *ch, size_t len);
/** Every waiter (an owned array of *n borrowed pointers, NULL if none). */
gw_waiter_t **gw_waiters_all(gw_waiters_t *w, size_t *n);

#endif
