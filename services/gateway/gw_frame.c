#include "gw_frame.h"
#include "gw_hub.h"
#include "hr_proto.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"

#include <stdio.h>
#include <string.h>

static int
gw_frame_fail(gw_frame_t *f, const char *code, const char *why)
{
    f->code = code;
    f->why = why;
    return HR_DECLINED;
}

int
gw_frame_parse(const char *buf, size_t len, int max_depth, gw_frame_t *f)
{
    memset(f, 0, sizeof(*f));
    /* cJSON would end a string at a NUL: "ok\u0000bad room!" would join "ok". */
    if (memchr(buf, '\0', len) != NULL || hr_json_has_nul_escape(buf, len))
        return gw_frame_fail(f, "invalid_json", "\\u0000 is not allowed in strings");
    /* cJSON recurses per level: a deep frame costs stack and time before it is refused. */
    if (hr_json_deeper_than(buf, len, max_depth)) {
        snprintf(f->err, sizeof(f->err), "JSON nested deeper than %d levels", max_depth);
        return gw_frame_fail(f, HR_E_TOO_DEEP, f->err);
    }
    if (hr_json_parse_object(buf, len, &f->root, f->err, sizeof(f->err)) != 0)
        return gw_frame_fail(f, "invalid_json", f->err);
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(f->root, "ref");
    f->type = hr_json_get_str(f->root, "type");
    if (ref != NULL && !cJSON_IsString(ref) && !cJSON_IsNumber(ref))
        return gw_frame_fail(f, "invalid_field", "ref must be a string or a number");
    f->ref = ref;
    return 0;
}

/* The fields of a room frame (f->kind set): room, and what publish and presence add. */
static int
gw_frame_check_room(gw_frame_t *f)
{
    const cJSON *jroom = cJSON_GetObjectItemCaseSensitive(f->root, "room");
    if (jroom == NULL)
        return gw_frame_fail(f, "missing_field", "room is required");
    if (!cJSON_IsString(jroom) || !gw_room_name_valid(jroom->valuestring))
        return gw_frame_fail(f, "invalid_room", "room must be 1-64 characters of A-Za-z0-9_.:@-");
    f->room = jroom->valuestring;
    if (f->kind == GW_FRAME_PRESENCE) {
        /* Optional: the `cursor` of the previous page (proto/ws.md). */
        const cJSON *jcur = cJSON_GetObjectItemCaseSensitive(f->root, "cursor");
        const char *cursor = cJSON_IsString(jcur) ? jcur->valuestring : NULL;
        if (jcur != NULL && !cJSON_IsNull(jcur) &&
            (cursor == NULL || !gw_frame_cursor_valid(cursor)))
            return gw_frame_fail(f, "invalid_field", "cursor must be one a presence answer gave");
        f->cursor = cursor;
    } else if (f->kind == GW_FRAME_PUBLISH) {
        const cJSON *jmsg = cJSON_GetObjectItemCaseSensitive(f->root, "message");
        /* Optional: makes a retry after `outcome_unknown` safe (gw_rooms_publish). */
        const cJSON *jkey = cJSON_GetObjectItemCaseSensitive(f->root, "idempotency_key");
        if (jmsg == NULL)
            return gw_frame_fail(f, "missing_field", "message is required");
        if (!cJSON_IsString(jmsg) || jmsg->valuestring[0] == '\0' ||
            strlen(jmsg->valuestring) > HR_MESSAGE_MAX)
            return gw_frame_fail(f, "invalid_field", "message must be a string of 1-4096 bytes");
        if (jkey != NULL && (!cJSON_IsString(jkey) ||
                             !hr_proto_token_valid(jkey->valuestring, strlen(jkey->valuestring),
                                                   HR_CHAT_IDEM_KEY_MAX)))
            return gw_frame_fail(f, "invalid_field",
                                 "idempotency_key must be 1-64 visible ASCII characters");
        f->message = jmsg->valuestring;
        f->idem_key = jkey != NULL ? jkey->valuestring : NULL;
    }
    return 0;
}

int
gw_frame_check(gw_frame_t *f)
{
    static const struct {
        const char *type;
        gw_frame_kind_t kind;
    } kinds[] = {
        {"ping", GW_FRAME_PING},         {"join", GW_FRAME_JOIN},
        {"leave", GW_FRAME_LEAVE},       {"publish", GW_FRAME_PUBLISH},
        {"presence", GW_FRAME_PRESENCE}, {HR_FRAME_REFRESH, GW_FRAME_REFRESH},
    };
    f->kind = GW_FRAME_UNKNOWN;
    if (f->type == NULL)
        return gw_frame_fail(f, "missing_field", "type is required");
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(f->type, kinds[i].type) == 0)
            f->kind = kinds[i].kind;
    if (f->kind == GW_FRAME_UNKNOWN)
        return gw_frame_fail(f, "unknown_type", "unknown message type");
    if (f->kind == GW_FRAME_PING)
        return 0;
    if (f->kind == GW_FRAME_REFRESH) {
        const cJSON *jtok = cJSON_GetObjectItemCaseSensitive(f->root, "token");
        if (jtok == NULL)
            return gw_frame_fail(f, "missing_field", "token is required");
        if (!cJSON_IsString(jtok))
            return gw_frame_fail(f, "invalid_field", "token must be a string");
        f->token = jtok->valuestring;
        return 0;
    }
    return gw_frame_check_room(f);
}

void
gw_frame_clear(gw_frame_t *f)
{
    cJSON_Delete(f->root);
    f->root = NULL;
}

int
gw_frame_cursor_valid(const char *cursor)
{
    size_t n = strspn(cursor, "0123456789");
    return n > 0 && n <= 20 && cursor[n] == '\0';
}
