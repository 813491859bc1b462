/*
 * The worker's pure half: turning stream entries into rows and rows into
 * PostgreSQL COPY text. No I/O here, so unit tests link it without a Redis or
 * a PostgreSQL.
 *
 * A batch holds every entry read in one XREADGROUP/XAUTOCLAIM reply, in stream
 * order. Each entry is either a row (decoded, validated, to be inserted) or
 * rejected (logged by the caller, acked with the batch so it never blocks the
 * stream). Every entry of a batch, row or rejected, is acked once the batch's
 * rows are committed.
 */
#ifndef HERALD_WRK_BATCH_H
#define HERALD_WRK_BATCH_H

#include "hr_proto.h"

#include <stddef.h>
#include <stdint.h>

/* A stream entry id is two uint64 in decimal joined by '-': at most 41 bytes. */
#define WRK_SID_MAX 48

/** A growable byte buffer; data is owned, not NUL-terminated. */
typedef struct {
    char *data; /* owned */
    size_t len, cap;
} wrk_buf_t;

/** Makes room for extra more bytes. */
void wrk_buf_reserve(wrk_buf_t *b, size_t extra);
/** Appends n bytes. */
void wrk_buf_append(wrk_buf_t *b, const void *p, size_t n);
/** Frees the data and zeroes the buffer. */
void wrk_buf_free(wrk_buf_t *b);

/**
 * Appends s[0..len) to out escaped for COPY ... FROM STDIN text format:
 * backslash, tab, newline and carriage return become \\, \t, \n, \r. Every
 * other byte is copied as is (the caller guarantees valid UTF-8, no NUL).
 */
void wrk_copy_escape(wrk_buf_t *out, const char *s, size_t len);

/**
 * Appends one COPY text line for n, columns in the order of WRK_COPY_COLUMNS,
 * a NULL data_json written as \N, ended by a newline.
 */
void wrk_copy_row(wrk_buf_t *out, const hr_notification_t *n);

/** The column list every COPY line follows (room is NULL for a user's notification). */
#define WRK_COPY_COLUMNS "id, user_id, room, type, message, data, created_at"
/** The column list of room message COPY lines. */
#define WRK_ROOM_COLUMNS "id, room, user_id, message, created_at"

/** The streams the worker reads, in this order (index = wrk_entry_t.stream). */
enum { WRK_S_NOTIFY = 0, WRK_S_RECEIPT = 1, WRK_S_ROOM = 2, WRK_NSTREAMS = 3 };
/** The stream name of index i (HR_STREAM_*). */
const char *wrk_stream_name(int i);

/**
 * Whether s is a timestamp PostgreSQL's timestamptz accepts without
 * ambiguity: YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM), with a real
 * calendar date. Checked before COPY so one bad envelope cannot fail the
 * whole transaction over and over.
 */
int wrk_timestamp_valid(const char *s);

typedef struct {
    char sid[WRK_SID_MAX]; /* stream entry id, acked after commit */
    int stream;            /* WRK_S_* */
    int is_row;            /* 1: n holds a row to insert (or a receipt to apply); 0: rejected */
    int no_ack;            /* leave pending (a receipt whose row is not there yet) */
    int dead_done;         /* its dead letter is written: an ack retry skips it */
    int counted;           /* one store attempt counted in HR_KEY_WORKER_ATTEMPTS */
    unsigned attempts;     /* that count, when counted */
    unsigned deliveries;   /* from XPENDING when known, else 1 */
    uint64_t delivered_ms; /* a receipt's delivered_at */
    hr_notification_t n;   /* owned strings when is_row (receipt: id, user_id) */
    char *reason;          /* owned: why it goes to the dead-letter stream, or NULL */
    char *raw;             /* owned: the original field/value texts, back to back */
    size_t *rawlen;        /* owned: their lengths */
    size_t nraw;
} wrk_entry_t;

typedef struct {
    wrk_entry_t *entries; /* owned, cap slots */
    size_t len, cap;
    size_t rows;                /* entries with is_row */
    size_t nrows[WRK_NSTREAMS]; /* of those, per stream */
    int committed;              /* the rows are in PostgreSQL; only the ack is left */
} wrk_batch_t;

/** Prepares an empty batch that holds up to cap entries. */
void wrk_batch_init(wrk_batch_t *b, size_t cap);
/** Empties the batch (frees the rows' strings), keeping its capacity. */
void wrk_batch_clear(wrk_batch_t *b);
/** Frees everything wrk_batch_init() and wrk_batch_add() allocated. */
void wrk_batch_free(wrk_batch_t *b);

/**
 * Adds one stream entry: its id sid and its field/value pairs kv[0..nkv)
 * (kv[0] a field name, kv[1] its value, ...; lengths in kvlen). kv NULL means
 * the entry is still pending but was deleted from the stream.
 *
 * The entry needs HR_FIELD_PAYLOAD holding an envelope hr_proto_envelope_decode
 * accepts, whose created_at passes wrk_timestamp_valid and whose strings are
 * valid UTF-8; HR_FIELD_ID and HR_FIELD_USER_ID, when present, must agree with
 * the envelope. Other fields are ignored (forward compatibility).
 *
 * Returns 0 when the entry became a row, HR_DECLINED with err filled when it
 * was recorded as rejected (it is still acked with the batch), HR_AGAIN when
 * the batch is full or sid is too long (nothing recorded).
 */
int wrk_batch_add(wrk_batch_t *b, const char *sid, size_t sidlen, const char *const *kv,
                  const size_t *kvlen, size_t nkv, char *err, size_t errlen);

/**
 * wrk_batch_add() for an entry of stream (WRK_S_*): a notification, a
 * delivery receipt (HR_FIELD_ID a UUID, HR_FIELD_DELIVERED_AT decimal ms,
 * HR_FIELD_USER_ID optional) or a room message (HR_FIELD_PAYLOAD as
 * hr_proto_room_message_decode accepts). The original fields are kept for a
 * dead letter; a rejected entry gets its reason. Same returns.
 */
int wrk_batch_add_entry(wrk_batch_t *b, int stream, const char *sid, size_t sidlen,
                        const char *const *kv, const size_t *kvlen, size_t nkv, char *err,
                        size_t errlen);

/**
 * The value of field name among e's original fields (borrowed, *len bytes,
 * not NUL-terminated), or NULL. Only fields at even positions are names.
 */
const char *wrk_entry_field(const wrk_entry_t *e, const char *name, size_t *len);

/** Marks entry i rejected after the fact (PostgreSQL refused its row). */
void wrk_batch_reject(wrk_batch_t *b, size_t i);
/** Like wrk_batch_reject() and records why (copied) for its dead letter. */
void wrk_batch_reject_reason(wrk_batch_t *b, size_t i, const char *reason);

/** Replaces out's content with the COPY text of the notification rows of entries [lo, hi), in
 * order. */
void wrk_batch_copy_text(const wrk_batch_t *b, size_t lo, size_t hi, wrk_buf_t *out);
/** Replaces out's content with the COPY text (WRK_ROOM_COLUMNS) of the room messages of [lo, hi).
 */
void wrk_batch_copy_rooms(const wrk_batch_t *b, size_t lo, size_t hi, wrk_buf_t *out);

#endif
