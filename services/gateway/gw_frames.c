/* What a socket sends (client frames, proto/ws.md) and the answers it gets. */
#include "gw_session.h"
#include "gw_frame.h"
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

/*
 * {"type":type,"room":room,"user_id":me,"reason":reason,"ref":ref}: the
 * direct answer to join/leave (reason NULL), or a leave the server decided.
 */
static gw_msg_t *
gw_room_ack(gw_session_t *ss, const char *type, const char *room, const char *reason,
            const cJSON *ref)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "room", room);
    cJSON_AddStringToObject(o, "user_id", gw_conn_user_id(&ss->conn));
    if (reason != NULL)
        cJSON_AddStringToObject(o, "reason", reason);
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
    gw_msg_t *m = gw_room_ack(ss, type, room, NULL, ref);
    gw_conn_send(s->hub, &ss->conn, m);
    gw_msg_release(m);
}

/* joined, once the room's channel is live. */
static void
gw_send_joined(gw_server_t *s, gw_session_t *ss, const char *room, const cJSON *ref)
{
    char ch[HR_ROOM_MAX + 32];
    size_t len = hr_proto_room_channel(ch, sizeof(ch), room);
    gw_send_when_live(s, ss, ch, len, gw_room_ack(ss, "joined", room, NULL, ref));
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
gw_handle_room_frame(gw_server_t *s, gw_session_t *ss, const gw_frame_t *f)
{
    const char *room = f->room;
    const cJSON *ref = f->ref;
    if ((f->kind == GW_FRAME_JOIN || f->kind == GW_FRAME_PUBLISH) &&
        !gw_identity_room_allowed(&ss->id, room)) {
        gw_send_error(s, ss, HR_E_FORBIDDEN, "the token's rooms claim does not allow this room",
                      ref);
        return;
    }

    if (f->kind == GW_FRAME_JOIN) {
        int rc = gw_hub_join(s->hub, &ss->conn, room);
        if (rc == HR_DECLINED) {
            gw_send_error(s, ss, "too_many_rooms", "this socket is in too many rooms", ref);
            return;
        }
        gw_send_joined(s, ss, room, ref);
    } else if (f->kind == GW_FRAME_LEAVE) {
        if (gw_hub_leave(s->hub, &ss->conn, room) != 0) {
            gw_send_error(s, ss, "not_member", "not a member of this room", ref);
            return;
        }
        gw_send_room_ack(s, ss, "left", room, ref);
    } else if (f->kind == GW_FRAME_PRESENCE) {
        if (gw_rooms_presence_query(s->rooms, &ss->conn, room, f->cursor, ref) != 0)
            gw_send_error(s, ss, "unavailable", "presence unavailable, retry", ref);
    } else { /* publish */
        if (!gw_conn_in_room(&ss->conn, room)) {
            gw_send_error(s, ss, "not_member", "join the room before publishing to it", ref);
        } else if (!gw_session_take_token(s, ss)) {
            gw_send_error(s, ss, "rate_limited", "publishing too fast; slow down", ref);
        } else if (gw_rooms_publish(s->rooms, &ss->conn, room, f->message, f->idem_key, ref) != 0) {
            gw_send_error(s, ss, "unavailable", "message not sent: redis unavailable, retry", ref);
        }
    }
}

typedef struct {
    gw_server_t *s;
    gw_session_t *ss;
} gw_refresh_rooms_t;

static int
gw_refresh_room_allowed(const char *room, void *ud)
{
    gw_refresh_rooms_t *rr = ud;
    return gw_identity_room_allowed(&rr->ss->id, room);
}

/* {"type":"left","room":…,"user_id":…,"reason":"forbidden"}: no ref, it answers no leave. */
static void
gw_refresh_room_left(const char *room, void *ud)
{
    gw_refresh_rooms_t *rr = ud;
    gw_msg_t *m = gw_room_ack(rr->ss, "left", room, HR_E_FORBIDDEN, NULL);
    gw_conn_send(rr->s->hub, &rr->ss->conn, m);
    gw_msg_release(m);
}

/*
 * {"type":"refresh","token":…}: a valid token for the same user replaces the
 * socket's (its exp and rooms apply from now on); a refused one leaves the
 * socket as it was. Access ends with the claim: every joined room the new
 * rooms claim does not allow is left as a `leave` would (membership,
 * presence, the room's `left` event), each told with a `left` frame before
 * the `refreshed` answer (proto/ws.md, "Token lifetime and rooms").
 */
static void
gw_handle_refresh(gw_server_t *s, gw_session_t *ss, const char *token, const cJSON *ref)
{
    hr_token_claims_t next;
    int rc = gw_auth_refresh(s->auth, &ss->id, token, strlen(token), (int64_t)(hr_now_ms() / 1000),
                             gw_cutoff_of, s, &next);
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
    gw_refresh_rooms_t rr = {s, ss};
    size_t left =
        gw_hub_leave_unless(s->hub, &ss->conn, gw_refresh_room_allowed, gw_refresh_room_left, &rr);
    if (left > 0)
        hr_log_info("refresh_left_rooms", "conn=%llu user=%s rooms=%zu",
                    (unsigned long long)ss->conn.id, gw_conn_user_id(&ss->conn), left);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", HR_FRAME_REFRESHED);
    cJSON_AddNumberToObject(o, "exp", (double)next.exp);
    if (ref != NULL)
        cJSON_AddItemToObject(o, "ref", cJSON_Duplicate(ref, 1));
    gw_send_json(s, ss, o);
}

/* Parsing and field checks are gw_frame's (pure, fuzzed: fuzz/fuzz_gateway.c); this acts on them.
 */
void
gw_handle_client_frame(gw_server_t *s, gw_session_t *ss, const char *buf, size_t len)
{
    gw_frame_t f;
    int rc = gw_frame_parse(buf, len, s->cfg->max_json_depth, &f);
    gw_metrics_frame_in(s->metrics, f.type);
    if (rc != 0 && strcmp(f.code, HR_E_TOO_DEEP) == 0)
        hr_counter_inc(&s->metrics->frames_refused[GW_REFUSED_TOO_DEEP]);
    /* Every frame costs: join/leave fan out events, presence reads a whole set. */
    int limited =
        f.root != NULL && !gw_bucket_take(&ss->cmd_tokens, &ss->cmd_ms, s->cfg->command_rate);
    if (rc != 0) {
        gw_send_error(s, ss, f.code, f.why, NULL);
    } else if (limited) {
        gw_send_error(s, ss, "rate_limited", "too many commands; slow down", f.ref);
    } else if (gw_frame_check(&f) != 0) {
        gw_send_error(s, ss, f.code, f.why, f.ref);
    } else if (f.kind == GW_FRAME_PING) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "pong");
        if (f.ref != NULL)
            cJSON_AddItemToObject(o, "ref", cJSON_Duplicate(f.ref, 1));
        gw_send_json(s, ss, o);
    } else if (f.kind == GW_FRAME_REFRESH) {
        gw_handle_refresh(s, ss, f.token, f.ref);
    } else {
        gw_handle_room_frame(s, ss, &f);
    }
    gw_frame_clear(&f);
}
