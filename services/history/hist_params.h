/*
 * The query strings and path segments of history's endpoints: pure parsing,
 * no I/O (unit-tested in tests/test_hist_params.c).
 */
#ifndef HERALD_HIST_PARAMS_H
#define HERALD_HIST_PARAMS_H

#include "hr_proto.h"
#include "herald/hr_uuid.h"

#include <stddef.h>

/* Page size of GET /notifications and GET /rooms/{room}/messages (proto/openapi.yaml). */
#define HIST_LIMIT_DEFAULT 20
#define HIST_LIMIT_MAX 100
/* A room name: 1..HIST_ROOM_MAX characters of A-Za-z0-9_.:@- (proto/ws.md). */
#define HIST_ROOM_MAX 64
/* An opaque page cursor: base64url (no padding) of the 16 bytes of the last id. */
#define HIST_CURSOR_LEN 22

typedef enum { HIST_STATUS_ALL, HIST_STATUS_UNREAD, HIST_STATUS_READ } hist_status_t;

/** Query-string parameters, validated; which ones an endpoint reads is its business. */
typedef struct {
    char user_id[HR_USER_ID_MAX + 1]; /* "" when absent */
    int limit;                        /* HIST_LIMIT_DEFAULT when absent */
    char cursor[HR_UUID_STR_LEN];     /* decoded id of cursor= or before=; "" when absent */
    hist_status_t status;
    char up_to[HR_UUID_STR_LEN]; /* normalized id; "" when absent */
} hist_params_t;

/**
 * Parses a query string (NULL when there is none). Known keys: user_id,
 * limit, cursor (or before), status, up_to; each at most once; others are
 * ignored. Returns 0 with p filled, or HR_DECLINED with e filled (400).
 */
int hist_params_parse(const char *query, hist_params_t *p, hr_proto_err_t *e);

/** Writes the cursor naming id (a UUID's text) into out; 0 or HR_DECLINED. */
int hist_cursor_encode(const char *id, char out[HIST_CURSOR_LEN + 1]);
/** Decodes a cursor into the id's text; 0 or HR_DECLINED when malformed. */
int hist_cursor_decode(const char *s, size_t n, char out[HR_UUID_STR_LEN]);

/**
 * Decodes s[0..n) (%XX escapes; '+' as space when plus_space) into out,
 * NUL-terminated. Returns the decoded length, or -1 when an escape is
 * malformed, a NUL byte is sent or decoded, or the result does not fit in cap.
 */
int hist_unescape(const char *s, size_t n, char *out, size_t cap, int plus_space);
/** Fills e as a 400 with code and a formatted message; returns HR_DECLINED. */
int hist_fail(hr_proto_err_t *e, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** The gateway's rule for room names (proto/ws.md). */
int hist_room_valid(const char *s);
/** Parses a UUID's text (either case) into its lowercase form; 0 or HR_DECLINED. */
int hist_id_normalize(const char *s, char out[HR_UUID_STR_LEN]);

#endif
