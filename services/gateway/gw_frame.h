/*
 * A client's frame, parsed and checked against proto/ws.md: the pure half of
 * the gateway's frame handler. No socket, no Redis, no hub: gw_server.c acts
 * on what it yields, and fuzz/fuzz_gateway.c feeds it arbitrary bytes.
 *
 * Two steps, because the command rate limit sits between them:
 * gw_frame_parse (the frame is a JSON object with a usable ref) and
 * gw_frame_check (its type and the fields that type needs).
 */
#ifndef HERALD_GW_FRAME_H
#define HERALD_GW_FRAME_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef enum {
    GW_FRAME_UNKNOWN, /* no type, or not one of proto/ws.md's */
    GW_FRAME_PING,
    GW_FRAME_JOIN,
    GW_FRAME_LEAVE,
    GW_FRAME_PUBLISH,
    GW_FRAME_PRESENCE,
    GW_FRAME_REFRESH,
} gw_frame_kind_t;

typedef struct {
    cJSON *root;      /* owned: NULL when the bytes are not a JSON object */
    const cJSON *ref; /* borrowed from root: the client's ref, or NULL */
    const char *type; /* borrowed from root, or NULL */
    gw_frame_kind_t kind;
    const char *room;     /* borrowed: join, leave, publish, presence */
    const char *message;  /* borrowed: publish */
    const char *idem_key; /* borrowed: publish, or NULL */
    const char *cursor;   /* borrowed: presence, or NULL (first page) */
    const char *token;    /* borrowed: refresh */
    /* The refusal, for an error frame: */
    const char *code; /* borrowed: static, NULL while the frame is fine */
    const char *why;  /* borrowed: static, or f->err */
    char err[128];
} gw_frame_t;

/**
 * Parses buf[0..len) into f. Returns 0, or HR_DECLINED with f->code set:
 * invalid_json (f->root NULL: not a JSON object, or a NUL in a string),
 * json_too_deep (f->root NULL: arrays and objects nested deeper than max_depth)
 * or an unusable ref (f->root set, f->ref NULL). Either way gw_frame_clear(f) after.
 */
int gw_frame_parse(const char *buf, size_t len, int max_depth, gw_frame_t *f);
/**
 * Checks a parsed frame's type and fields: sets f->kind, then the fields.
 * Returns 0, or HR_DECLINED with f->code set (missing_field, unknown_type,
 * invalid_room, invalid_field).
 */
int gw_frame_check(gw_frame_t *f);
/** Frees what gw_frame_parse kept. */
void gw_frame_clear(gw_frame_t *f);

/** Whether cursor can be a presence cursor: 1-20 decimal digits. */
int gw_frame_cursor_valid(const char *cursor);

#endif
