/*
 * The wire contract in C. Every Redis key, channel, stream field and frame type
 * named here is documented in proto/redis.md and proto/ws.md; no other file
 * spells these names.
 */
#ifndef HERALD_HR_PROTO_H
#define HERALD_HR_PROTO_H

#include "herald/hr_time.h"
#include "herald/hr_uuid.h"

#include <stddef.h>

/* Redis names (proto/redis.md). */
#define HR_STREAM_NOTIFICATIONS "herald:stream:notifications"
#define HR_GROUP_WORKERS "herald-workers"
#define HR_CHANNEL_USER_PREFIX "herald:user:"
#define HR_CHANNEL_ROOM_PREFIX "herald:room:"
#define HR_CHANNEL_GATEWAY_PREFIX "herald:gateway:"
#define HR_KEY_PRESENCE_PREFIX "herald:presence:" /* + room [+ ":" + user] */
#define HR_STREAM_RECEIPTS "herald:stream:receipts"
#define HR_STREAM_ROOM_MESSAGES "herald:stream:room_messages"
#define HR_STREAM_DEAD_LETTER "herald:stream:dead"
#define HR_FIELD_ID "id"
#define HR_FIELD_USER_ID "user_id"
#define HR_FIELD_PAYLOAD "payload"
#define HR_FIELD_ROOM "room"
#define HR_FIELD_DELIVERED_AT "delivered_at" /* ms since the epoch, decimal */

/* Limits of POST /notifications (proto/openapi.yaml). */
#define HR_USER_ID_MAX 128
#define HR_TYPE_MAX 64
#define HR_MESSAGE_MAX 4096
#define HR_BODY_MAX (64 * 1024)
#define HR_TYPE_DEFAULT "default"

/* Stable error codes of the REST API. */
#define HR_E_INVALID_JSON "invalid_json"
#define HR_E_INVALID_FIELD "invalid_field"
#define HR_E_MISSING_FIELD "missing_field"
#define HR_E_UNKNOWN_FIELD "unknown_field"
#define HR_E_BODY_TOO_LARGE "body_too_large"
#define HR_E_UNSUPPORTED_MEDIA "unsupported_media_type"
#define HR_E_NOT_FOUND "not_found"
#define HR_E_METHOD "method_not_allowed"
#define HR_E_UNAVAILABLE "unavailable"
#define HR_E_INTERNAL "internal"

/** Why a request was refused: HTTP status, stable code, human message. */
typedef struct {
    int status;
    const char *code; /* borrowed: one of HR_E_* */
    char message[256];
} hr_proto_err_t;

/** One notification, as carried everywhere (the envelope). */
typedef struct {
    char id[HR_UUID_STR_LEN];         /* UUIDv7 text */
    char created_at[HR_TIME_ISO_LEN]; /* RFC 3339 UTC, ms */
    char *user_id;                    /* owned */
    char *type;                       /* owned */
    char *message;                    /* owned */
    char *data_json;                  /* owned: a JSON object's text, or NULL */
} hr_notification_t;

/** Frees the owned strings of n (not n itself). */
void hr_notification_clear(hr_notification_t *n);

/**
 * Validates the body of POST /notifications and fills n's user_id, type,
 * message and data_json (id and created_at are left to the caller).
 * Returns 0 or HR_DECLINED with e filled (400/413).
 */
int hr_proto_parse_request(const char *body, size_t len, hr_notification_t *n, hr_proto_err_t *e);

/** Gives n a fresh UUIDv7 id and the matching created_at. */
void hr_proto_assign_id(hr_notification_t *n, hr_uuid_gen_t *gen, uint64_t now_ms);

/** The envelope JSON {"id","user_id","type","message","data","created_at"}; owned by caller. */
char *hr_proto_envelope_encode(const hr_notification_t *n, size_t *len);

/**
 * Parses an envelope as stored in the stream (worker side). Returns 0, or
 * HR_DECLINED with err filled when any field is missing or malformed.
 */
int hr_proto_envelope_decode(const char *json, size_t len, hr_notification_t *n, char *err,
                             size_t errlen);

/** The WebSocket frame {"type":"notification","notification":<envelope>}; owned by caller. */
char *hr_proto_frame_notification(const char *envelope, size_t len, size_t *outlen);

/**
 * Writes the Pub/Sub channel of a user ("herald:user:<id>"); returns its length,
 * or 0 (and an empty buf) when it does not fit in cap.
 */
size_t hr_proto_user_channel(char *buf, size_t cap, const char *user_id);

#endif
