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
#define HR_KEY_PRESENCE_PREFIX "herald:presence:"  /* hr_proto_presence_key() */
#define HR_KEY_CHAT_IDEM_PREFIX "herald:chatidem:" /* hr_proto_chat_idem_key() */
#define HR_STREAM_RECEIPTS "herald:stream:receipts"
#define HR_STREAM_ROOM_MESSAGES "herald:stream:room_messages"
#define HR_STREAM_DEAD_LETTER "herald:stream:dead"
#define HR_FIELD_ID "id"
#define HR_FIELD_USER_ID "user_id"
#define HR_FIELD_PAYLOAD "payload"
#define HR_FIELD_ROOM "room"
#define HR_FIELD_DELIVERED_AT "delivered_at" /* ms since the epoch, decimal */

/*
 * Dead letters (proto/redis.md): an entry the worker could not store is
 * XADDed to HR_STREAM_DEAD_LETTER with these fields, then its original
 * field/value pairs unchanged (more than HR_DEAD_INLINE_MAX items: one
 * HR_FIELD_DEAD_FIELDS value instead), and acked on its own stream after.
 */
#define HR_FIELD_DEAD_STREAM "dead_stream"         /* the stream it came from */
#define HR_FIELD_DEAD_SID "dead_sid"               /* its entry id there */
#define HR_FIELD_DEAD_REASON "dead_reason"         /* why, for humans */
#define HR_FIELD_DEAD_DELIVERIES "dead_deliveries" /* delivery count when given up */
#define HR_FIELD_DEAD_CONSUMER "dead_consumer"     /* the worker that gave up */
#define HR_FIELD_DEAD_AT "dead_at"                 /* ms since the epoch, decimal */
#define HR_DEAD_LETTER_MAXLEN "1000000"            /* XADD MAXLEN ~ bound */
/* The original items as netstrings, "<len>:<bytes>," each, back to back. */
#define HR_FIELD_DEAD_FIELDS "dead_fields"
/*
 * Hash of failed store attempts (proto/redis.md): field "<stream>/<entry id>"
 * of an entry delivered more than once, value the attempts made while
 * PostgreSQL was reachable. Deleted when the entry is acked.
 */
#define HR_KEY_WORKER_ATTEMPTS "herald:worker:attempts"
#define HR_DEAD_INLINE_MAX 64 /* items copied as fields; more go in HR_FIELD_DEAD_FIELDS */

/*
 * Idempotency (proto/redis.md): HR_KEY_IDEMPOTENCY_PREFIX + <len(scope)> + ":"
 * + scope + ":" + key holds sha1hex(path "\n" body) followed by the answer.
 */
#define HR_KEY_IDEMPOTENCY_PREFIX "herald:idem:"
#define HR_IDEMPOTENCY_TTL_S 86400
#define HR_IDEMPOTENCY_KEY_MAX 255
#define HR_CLIENT_MAX 128
#define HR_CLIENT_DEFAULT "default" /* scope when X-Herald-Client is absent */
#define HR_HEADER_IDEMPOTENCY_KEY "Idempotency-Key"
#define HR_HEADER_CLIENT "X-Herald-Client"

/* Limits of POST /notifications (proto/openapi.yaml). */
#define HR_USER_ID_MAX 128
#define HR_TYPE_MAX 64
#define HR_MESSAGE_MAX 4096
#define HR_BODY_MAX (64 * 1024)
#define HR_TYPE_DEFAULT "default"
#define HR_ROOM_MAX 64                  /* A-Za-z0-9_.:@- as in proto/ws.md */
#define HR_FANOUT_MAX 1000              /* notifications one request may create */
#define HR_BATCH_BODY_MAX (1024 * 1024) /* POST /notifications/batch */

/* Stable error codes of the REST API. */
#define HR_E_INVALID_JSON "invalid_json"
#define HR_E_INVALID_FIELD "invalid_field"
#define HR_E_MISSING_FIELD "missing_field"
#define HR_E_UNKNOWN_FIELD "unknown_field"
#define HR_E_BODY_TOO_LARGE "body_too_large"
#define HR_E_UNSUPPORTED_MEDIA "unsupported_media_type"
#define HR_E_NOT_FOUND "not_found"
#define HR_E_METHOD "method_not_allowed"
#define HR_E_UNAVAILABLE "unavailable"         /* 503: nothing was done, retry */
#define HR_E_OUTCOME_UNKNOWN "outcome_unknown" /* 503: may be done: retry with Idempotency-Key */
#define HR_E_INTERNAL "internal"
#define HR_E_IDEMPOTENCY_CONFLICT "idempotency_conflict"
/* HTTP framing, answered by common/src/hr_http.c before any endpoint. */
#define HR_E_BAD_REQUEST "bad_request"
#define HR_E_URI_TOO_LONG "uri_too_long"
#define HR_E_HEADER_TOO_LARGE "header_too_large"
#define HR_E_REQUEST_TIMEOUT "request_timeout"
#define HR_E_NOT_IMPLEMENTED "not_implemented"
#define HR_E_VERSION "http_version_not_supported"

/* Identity and access (proto/auth.md). */
#define HR_E_UNAUTHORIZED "unauthorized" /* 401: no usable token; "reason" says why */
#define HR_E_FORBIDDEN "forbidden"       /* 403: another user_id, a room outside the claim */

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
    char *user_id;                    /* owned; NULL for a room notification */
    char *room;                       /* owned; set only for a room notification */
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

/**
 * A validated POST body with its targets: exactly one of n.user_id (one
 * user), user_ids (fan-out: one notification per user) or n.room (one
 * notification published to the room).
 */
typedef struct {
    /*
     * type, message, and user_id or room are borrowed from tree (or type is
     * HR_TYPE_DEFAULT); data_json is owned. So parsing copies no string.
     */
    hr_notification_t n;
    char **user_ids; /* owned array of strings borrowed from tree, or NULL */
    size_t nusers;
    struct cJSON *tree; /* owned: the parsed body */
} hr_proto_request_t;

/** Frees what hr_proto_parse_targets() stored in r. */
void hr_proto_request_clear(hr_proto_request_t *r);

/**
 * Like hr_proto_parse_request() but also accepts "user_ids" (1..HR_FANOUT_MAX
 * distinct user ids) or "room" instead of "user_id"; exactly one of the three.
 * max is the body limit (HR_BODY_MAX for a request, or the item's share of a
 * batch). Returns 0 or HR_DECLINED with e filled.
 */
int hr_proto_parse_targets(const char *body, size_t len, size_t max, hr_proto_request_t *r,
                           hr_proto_err_t *e);

/**
 * Splits the body of POST /notifications/batch, {"notifications":[...]}, into
 * the compact text of each item (items[i], lens[i]; the array and strings are
 * owned by the caller: hr_proto_batch_free). 1..HR_FANOUT_MAX items, each a
 * JSON object. Returns 0 or HR_DECLINED with e filled (400/413).
 */
int hr_proto_parse_batch(const char *body, size_t len, char ***items, size_t **lens, size_t *n,
                         hr_proto_err_t *e);
/** Frees what hr_proto_parse_batch() returned. */
void hr_proto_batch_free(char **items, size_t *lens, size_t n);

/** Whether s is a room name: 1..HR_ROOM_MAX of A-Za-z0-9_.:@- . */
int hr_proto_room_valid(const char *s);

/** Whether s (len bytes) may be an Idempotency-Key or X-Herald-Client: visible ASCII. */
int hr_proto_token_valid(const char *s, size_t len, size_t max);

/**
 * The identity rule, wherever a user id enters Herald (a query, a body, a
 * token's sub): 1..HR_USER_ID_MAX bytes of valid UTF-8 without control
 * characters (so no NUL, which C strings and cJSON would truncate at).
 */
int hr_proto_id_valid(const char *s, size_t len);

/**
 * Parses a room message payload as the gateway writes it to
 * HR_STREAM_ROOM_MESSAGES, {"id","room","from","message","created_at"}, into
 * n (id, room, user_id = from, message, created_at). Returns 0, or
 * HR_DECLINED with err filled.
 */
int hr_proto_room_message_decode(const char *json, size_t len, hr_notification_t *n, char *err,
                                 size_t errlen);

/** Writes the Pub/Sub channel of a room like hr_proto_user_channel(). */
size_t hr_proto_room_channel(char *buf, size_t cap, const char *room);

/** Gives n a fresh UUIDv7 id and the matching created_at. */
void hr_proto_assign_id(hr_notification_t *n, hr_uuid_gen_t *gen, uint64_t now_ms);

/**
 * The envelope JSON {"id","user_id","type","message","data","created_at"}, or
 * with "room" in place of "user_id" for a room notification; owned by caller.
 */
char *hr_proto_envelope_encode(const hr_notification_t *n, size_t *len);

/** Whether JSON text holds a NUL character (a 0 byte or a \u0000 escape). */
int hr_proto_json_has_nul(const char *json, size_t len);

/**
 * Parses an envelope as stored in the stream (worker side). Returns 0, or
 * HR_DECLINED with err filled when any field is missing or malformed, or the
 * text holds a NUL character (PostgreSQL cannot store it).
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

/*
 * Presence keys (proto/redis.md): "herald:presence:{<room>}" is the room's set
 * (user -> expiry), "herald:presence:{<room>}:<user>" the set of gateways
 * holding that user in the room. Room names have no braces, so the first "}"
 * ends the room and no (room, user) pair can spell another's key; {<room>} is
 * also the Redis Cluster hash tag, so the keys of one presence script share a
 * slot.
 */
#define HR_PRESENCE_PAGE 100 /* users a presence answer lists before it is cut into pages */

/**
 * Writes the presence key of room (user NULL) or of (room, user); returns its
 * length, or 0 (and an empty buf) when it does not fit in cap.
 */
size_t hr_proto_presence_key(char *buf, size_t cap, const char *room, const char *user);

/*
 * Chat idempotency (proto/redis.md, proto/ws.md): a `publish` carrying
 * `idempotency_key` is recorded under
 * "herald:chatidem:{<room>}:<len(user)>:<user>:<key>" for HR_CHAT_IDEM_TTL_S,
 * so a retry after an unknown outcome is not published twice.
 */
#define HR_CHAT_IDEM_TTL_S 600
#define HR_CHAT_IDEM_KEY_MAX 64

/** Writes the chat idempotency key like hr_proto_presence_key(). */
size_t hr_proto_chat_idem_key(char *buf, size_t cap, const char *room, const char *user,
                              const char *key);

#endif
