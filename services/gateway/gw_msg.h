/*
 * A frame serialized once and shared by reference among every socket it goes
 * to. Headroom in front of the payload is what libwebsockets needs (LWS_PRE)
 * to write its frame header in place, so no socket ever copies the payload.
 */
#ifndef HERALD_GW_MSG_H
#define HERALD_GW_MSG_H

#include <stddef.h>
#include <stdint.h>

#define GW_MSG_HEADROOM 16 /* == LWS_PRE in lws 4.1; checked in gw_ws.c */

typedef struct {
    uint32_t refs;
    uint32_t len;         /* payload bytes */
    uint32_t noted;       /* delivery receipt already considered (gw_receipts) */
    unsigned char data[]; /* GW_MSG_HEADROOM + payload + NUL */
} gw_msg_t;

/** A message holding a copy of payload, with one reference (the caller's). */
gw_msg_t *gw_msg_create(const void *payload, size_t len);
/** printf-style message, with one reference. */
gw_msg_t *gw_msg_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
struct cJSON;
/** The compact serialization of a JSON value, with one reference. */
gw_msg_t *gw_msg_from_json(const struct cJSON *item);
/** Adds a reference. */
static inline gw_msg_t *
gw_msg_retain(gw_msg_t *m)
{
    m->refs++;
    return m;
}
/** Drops a reference; frees at the last. */
void gw_msg_release(gw_msg_t *m);
/** The payload (after the headroom). */
static inline unsigned char *
gw_msg_payload(gw_msg_t *m)
{
    return m->data + GW_MSG_HEADROOM;
}

#endif
