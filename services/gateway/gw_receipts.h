/*
 * Delivery receipts: when a notification frame has been written to a socket,
 * the gateway appends {id, user_id, delivered_at} to the receipts stream for
 * the worker to set notifications.delivered_at. Receipts are batched per
 * 20 ms into one script call so a fan-out costs one Redis round trip.
 */
#ifndef HERALD_GW_RECEIPTS_H
#define HERALD_GW_RECEIPTS_H

#include "herald/hr_redis.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct gw_receipts_s gw_receipts_t;

/** redis is the gateway's command connection (borrowed). */
gw_receipts_t *gw_receipts_create(uv_loop_t *loop, hr_redis_async_t *redis);
/** Sends what is buffered (best effort) and frees. */
void gw_receipts_destroy(gw_receipts_t *r);

/**
 * If frame is a notification frame, records its delivery to user_id now.
 * Returns 1 if it was one.
 */
int gw_receipts_note(gw_receipts_t *r, const char *frame, size_t len, const char *user_id);
/** Receipts buffered, waiting for Redis. */
size_t gw_receipts_pending(const gw_receipts_t *r);

#endif
