/*
 * History's request parsing on arbitrary bytes (services/history/hist_params.c):
 * the query string (hist_params_parse), the page cursor decoder
 * (cursor= / before=), and a path segment as hist_server.c decodes it
 * (a notification id or a room name).
 *
 * Checked: a refusal is a 400 with a code and a message; what is accepted
 * obeys proto/openapi.yaml (limit 1-100, a cursor names a lowercase UUID and
 * encodes back to the very spelling that was sent: one spelling per cursor;
 * up_to and path ids are normalized UUIDs; rooms follow the gateway's rule).
 */
#include "hist_params.h"
#include "herald/hr_alloc.h"
#include "herald/hr_json.h"
#include "herald/hr_uuid.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A UUID's text as hist_id_normalize writes it: 36 characters, lowercase, normalized. */
static void
check_id(const char *id)
{
    char again[HR_UUID_STR_LEN];
    if (strlen(id) != HR_UUID_STR_LEN - 1 || hist_id_normalize(id, again) != 0 ||
        strcmp(id, again) != 0)
        abort();
}

static void
check_query(const char *q)
{
    hist_params_t p;
    hr_proto_err_t e;
    memset(&e, 0, sizeof(e));
    if (hist_params_parse(q, &p, &e) != 0) {
        if (e.status != 400 || e.code == NULL || e.message[0] == '\0')
            abort();
        return;
    }
    if (p.limit < 1 || p.limit > HIST_LIMIT_MAX)
        abort();
    if (p.status != HIST_STATUS_ALL && p.status != HIST_STATUS_UNREAD &&
        p.status != HIST_STATUS_READ)
        abort();
    if (strlen(p.user_id) > HR_USER_ID_MAX || !hr_utf8_valid(p.user_id, strlen(p.user_id)))
        abort();
    if (p.cursor[0] != '\0') {
        check_id(p.cursor);
        char c[HIST_CURSOR_LEN + 1], back[HR_UUID_STR_LEN];
        if (hist_cursor_encode(p.cursor, c) != 0 || hist_cursor_decode(c, strlen(c), back) != 0 ||
            strcmp(back, p.cursor) != 0)
            abort();
    }
    if (p.up_to[0] != '\0')
        check_id(p.up_to);
}

static void
check_cursor(const char *s, size_t n)
{
    char id[HR_UUID_STR_LEN], again[HIST_CURSOR_LEN + 1];
    if (hist_cursor_decode(s, n, id) != 0)
        return;
    check_id(id);
    if (hist_cursor_encode(id, again) != 0 || n != HIST_CURSOR_LEN || memcmp(again, s, n) != 0)
        abort(); /* two spellings of one cursor */
}

static void
check_segment(const char *s, size_t n)
{
    char raw[HR_UUID_STR_LEN + 1], id[HR_UUID_STR_LEN], room[HIST_ROOM_MAX + 1];
    int k = hist_unescape(s, n, raw, sizeof(raw), 0);
    if (k >= 0) {
        if ((size_t)k != strlen(raw) || (size_t)k > n)
            abort(); /* a NUL got through, or decoding grew the text */
        if (hist_id_normalize(raw, id) == 0)
            check_id(id);
    }
    k = hist_unescape(s, n, room, sizeof(room), 0);
    if (k >= 0 && hist_room_valid(room) && (k < 1 || k > HIST_ROOM_MAX))
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* evhttp hands history a NUL-terminated query; the cursor and path are (ptr, len). */
    char *buf = hr_malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    check_query(buf);
    check_cursor(buf, size);
    check_segment(buf, size);
    hr_free(buf);
    return 0;
}
