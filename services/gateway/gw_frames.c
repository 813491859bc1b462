/* What a socket sends (client frames, proto/ws.md) and the answers it gets. */
#include "gw_session.h"
#include "gw_http.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <stdio.h>
#include <string.h>

/* ---- frames to one socket ---- */

/* An error frame; reason (NULL: none) says which token check failed. */
void
gw_send_error_reason(gw_server_t *s, gw_session_t *ss, const char *code, const char *reason,
                     const char *message, const cJSON *ref)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "error");
    cJSON_AddStringToObject(o, "code", code);
    if (reason != NULL)
        cJSON_AddStringToObject(o, "reason", reason);
    cJSON_AddStringToObject(o, "message", message);
    if (ref != NULL)
        cJSON_AddItemToObject(o, "ref", cJSON_Duplicate(ref, 1));
    char *txt = hr_json_print(o);
    cJSON_Delete(o);
    gw_msg_t *m = gw_msg_create(txt, strlen(txt));
    hr_free(txt);
    gw_conn_send(s->hub, &ss->conn, m);
    gw_msg_release(m);
}

void
gw_send_error(gw_server_t *s, gw_session_t *ss, const char *code, const char *message,
              const cJSON *ref)
{
    gw_send_error_reason(s, ss, code, NULL, message, ref);
}

void
gw_send_json(gw_server_t *s, gw_session_t *ss, cJSON *o)
{
    gw_msg_t *m = gw_msg_from_json(o);
    cJSON_Delete(o);
    gw_conn_send(s->hub, &ss->conn, m);
    gw_msg_release(m);
}

/* {"type":type,"room":room,"user_id":me,"ref":ref}: the direct answer to join/leave. */
static gw_msg_t *
gw_room_ack(gw_session_t *ss, const char *type, const char *room, const cJSON *ref)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "room", room);
    cJSON_AddStringToObject(o, "user_id", gw_conn_user_id(&ss->conn));
    if (ref != NULL)
        cJSON_AddItemToObject(o, "ref", cJSON_Duplicate(ref, 1));
    gw_msg_t *m = gw_msg_from_json(o);
    cJSON_Delete(o);
    return m;
}

static void
gw_send_room_ack(gw_server_t *s, gw_session_t *ss, const char *type, const char *room,
                 const cJSON *ref)
{
    gw_msg_t *m = gw_room_ack(ss, type, room, ref);
    gw_conn_send(s->hub, &ss->conn, m);
    gw_msg_release(m);
}

/* joined, once the room's channel is live. */
static void
gw_send_joined(gw_server_t *s, gw_session_t *ss, const char *room, const cJSON *ref)
{
    char ch[HR_ROOM_MAX + 32];
    size_t len = hr_proto_room_channel(ch, sizeof(ch), room);
    gw_send_when_live(s, ss, ch, len, gw_room_ack(ss, "joined", room, ref));
}

/* Token bucket: rate per second, bursts of twice that. Returns 1 if a token was taken. */
static int
gw_bucket_take(double *tokens, uint64_t *ms, int rate)
{
    uint64_t now = hr_mono_ms();
    double cap = 2.0 * rate;
    if (*ms == 0) {
        *tokens = cap;
    } else {
        *tokens += (double)(now - *ms) * rate / 1000.0;
        if (*tokens > cap)
            *tokens = cap;
    }
    *ms = now;
    if (*tokens < 1.0)
        return 0;
    *tokens -= 1.0;
    return 1;
}

static int
gw_session_take_token(gw_server_t *s, gw_session_t *ss)
{
    return gw_bucket_take(&ss->tokens, &ss->tokens_ms, s->cfg->publish_rate);
}

static void
gw_handle_room_frame(gw_server_t *s, gw_session_t *ss, const char *type, const cJSON *root,
                     const cJSON *ref)
{
    const cJSON *jroom = cJSON_GetObjectItemCaseSensitive(root, "room");
    if (jroom == NULL) {
        gw_send_error(s, ss, "missing_field", "room is required", ref);
        return;
    }
    if (!cJSON_IsString(jroom) || !gw_room_name_valid(jroom->valuestring)) {
        gw_send_error(s, ss, "invalid_room", "room must be 1-64 characters of A-Za-z0-9_.:@-", ref);
        return;
    }
    const char *room = jroom->valuestring;
    if ((strcmp(type, "join") == 0 || strcmp(type, "publish") == 0) &&
        !gw_identity_room_allowed(&ss->id, room)) {
        gw_send_error(s, ss, HR_E_FORBIDDEN, "the token's rooms claim does not allow this room",
                      ref);
        return;
    }

    if (strcmp(type, "join") == 0) {
        int rc = gw_hub_join(s->hub, &ss->conn, room);
        if (rc == HR_DECLINED) {
            gw_send_error(s, ss, "too_many_rooms", "this socket is in too many rooms", ref);
            return;
        }
        gw_send_joined(s, ss, room, ref);
    } else if (strcmp(type, "leave") == 0) {
        if (gw_hub_leave(s->hub, &ss->conn, room) != 0) {
            gw_send_error(s, ss, "not_member", "not a member of this room", ref);
            return;
        }
        gw_send_room_ack(s, ss, "left", room, ref);
    } else if (strcmp(type, "presence") == 0) {
        /* Optional: the `cursor` of the previous page (proto/ws.md). */
        const cJSON *jcur = cJSON_GetObjectItemCaseSensitive(root, "cursor");
        const char *cursor = cJSON_IsString(jcur) ? jcur->valuestring : NULL;
        if (jcur != NULL && !cJSON_IsNull(jcur) &&
            (cursor == NULL || !gw_rooms_cursor_valid(cursor)))
            gw_send_error(s, ss, "invalid_field", "cursor must be one a presence answer gave", ref);
        else if (gw_rooms_presence_query(s->rooms, &ss->conn, room, cursor, ref) != 0)
            gw_send_error(s, ss, "unavailable", "presence unavailable, retry", ref);
    } else { /* publish */
        const cJSON *jmsg = cJSON_GetObjectItemCaseSensitive(root, "message");
        /* Optional: makes a retry after `outcome_unknown` safe (gw_rooms_publish). */
        const cJSON *jkey = cJSON_GetObjectItemCaseSensitive(root, "idempotency_key");
        if (jmsg == NULL) {
            gw_send_error(s, ss, "missing_field", "message is required", ref);
        } else if (!cJSON_IsString(jmsg) || jmsg->valuestring[0] == '\0' ||
                   strlen(jmsg->valuestring) > HR_MESSAGE_MAX) {
            gw_send_error(s, ss, "invalid_field", "message must be a string of 1-4096 bytes", ref);
        } else if (jkey != NULL &&
                   (!cJSON_IsString(jkey) ||
                    !hr_proto_token_valid(jkey->valuestring, strlen(jkey->valuestring),
                                          HR_CHAT_IDEM_KEY_MAX))) {
            gw_send_error(s, ss, "invalid_field",
                          "idempotency_key must be 1-64 visible ASCII characters", ref);
        } else if (!gw_conn_in_room(&ss->conn, room)) {
            gw_send_error(s, ss, "not_member", "join the room before publishing to it", ref);
        } else if (!gw_session_take_token(s, ss)) {
            gw_send_error(s, ss, "rate_limited", "publishing too fast; slow down", ref);
        } else if (gw_rooms_publish(s->rooms, &ss->conn, room, jmsg->valuestring,
                                    jkey ? jkey->valuestring : NULL, ref) != 0) {
            gw_send_error(s, ss, "unavailable", "message not sent: redis unavailable, retry", ref);
        }
    }
}

/*
 * {"type":"refresh","token":…}: a valid token for the same user replaces the
 * socket's (its exp and rooms apply from now on); a refused one leaves the
 * socket as it was.
 */
static void
gw_handle_refresh(gw_server_t *s, gw_session_t *ss, const cJSON *root, const cJSON *ref)
{
    const cJSON *jtok = cJSON_GetObjectItemCaseSensitive(root, "token");
    if (jtok == NULL) {
        gw_send_error(s, ss, "missing_field", "token is required", ref);
        return;
    }
    if (!cJSON_IsString(jtok)) {
        gw_send_error(s, ss, "invalid_field", "token must be a string", ref);
        return;
    }
    hr_token_claims_t next;
    int rc = gw_auth_refresh(s->auth, &ss->id, jtok->valuestring, strlen(jtok->valuestring),
                             (int64_t)(hr_now_ms() / 1000), gw_cutoff_of, s, &next);
    if (rc != 0) {
        gw_metrics_refresh(s->metrics, 0);
        char msg[96];
        snprintf(msg, sizeof(msg), "refresh refused: %s; the current token still applies",
                 gw_auth_reason(rc));
        gw_send_error_reason(s, ss, HR_E_UNAUTHORIZED, gw_auth_reason(rc), msg, ref);
        return;
    }
    gw_metrics_refresh(s->metrics, 1);
    gw_identity_t id = {.has_token = 1, .claims = next};
    gw_identity_clear(&ss->id);
    ss->id = id;
    gw_auth_expiry_arm(s->loop, &ss->expiry, &ss->id, gw_auth_leeway_s(s->auth), gw_session_expired,
                       ss);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", HR_FRAME_REFRESHED);
    cJSON_AddNumberToObject(o, "exp", (double)next.exp);
    if (ref != NULL)
        cJSON_AddItemToObject(o, "ref", cJSON_Duplicate(ref, 1));
    gw_send_json(s, ss, o);
}

/* Deepest nesting of arrays and objects in a JSON text (strings skipped), up to limit + 1. */
static int
gw_json_depth(const char *buf, size_t len, int limit)
{
    int depth = 0, max = 0, in_str = 0;
    for (size_t i = 0; i < len && max <= limit; i++) {
        char c = buf[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return max;
}

void
gw_handle_client_frame(gw_server_t *s, gw_session_t *ss, const char *buf, size_t len)
{
    cJSON *root;
    char err[128];
    /* cJSON would end a string at a NUL: "ok\u0000bad room!" would join "ok". */
    if (memchr(buf, '\0', len) != NULL || hr_json_has_nul_escape(buf, len)) {
        gw_metrics_frame_in(s->metrics, NULL);
        gw_send_error(s, ss, "invalid_json", "\\u0000 is not allowed in strings", NULL);
        return;
    }
    /* cJSON recurses per level: a deep frame costs stack and time before it is refused. */
    if (gw_json_depth(buf, len, s->cfg->max_json_depth) > s->cfg->max_json_depth) {
        gw_metrics_frame_in(s->metrics, NULL);
        hr_counter_inc(&s->metrics->frames_refused[GW_REFUSED_TOO_DEEP]);
        snprintf(err, sizeof(err), "JSON nested deeper than %d levels", s->cfg->max_json_depth);
        gw_send_error(s, ss, HR_E_TOO_DEEP, err, NULL);
        return;
    }
    if (hr_json_parse_object(buf, len, &root, err, sizeof(err)) != 0) {
        gw_metrics_frame_in(s->metrics, NULL);
        gw_send_error(s, ss, "invalid_json", err, NULL);
        return;
    }
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(root, "ref");
    const char *type = hr_json_get_str(root, "type");
    gw_metrics_frame_in(s->metrics, type);
    /* Every frame costs: join/leave fan out events, presence reads a whole set. */
    int limited = !gw_bucket_take(&ss->cmd_tokens, &ss->cmd_ms, s->cfg->command_rate);
    if (ref != NULL && !cJSON_IsString(ref) && !cJSON_IsNumber(ref)) {
        gw_send_error(s, ss, "invalid_field", "ref must be a string or a number", NULL);
    } else if (limited) {
        gw_send_error(s, ss, "rate_limited", "too many commands; slow down", ref);
    } else if (type == NULL) {
        gw_send_error(s, ss, "missing_field", "type is required", ref);
    } else if (strcmp(type, "ping") == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "pong");
        if (ref != NULL)
            cJSON_AddItemToObject(o, "ref", cJSON_Duplicate(ref, 1));
        gw_send_json(s, ss, o);
    } else if (strcmp(type, "join") == 0 || strcmp(type, "leave") == 0 ||
               strcmp(type, "publish") == 0 || strcmp(type, "presence") == 0) {
        gw_handle_room_frame(s, ss, type, root, ref);
    } else if (strcmp(type, HR_FRAME_REFRESH) == 0) {
        gw_handle_refresh(s, ss, root, ref);
    } else {
        gw_send_error(s, ss, "unknown_type", "unknown message type", ref);
    }
    cJSON_Delete(root);
}
