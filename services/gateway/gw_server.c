#include "gw_server.h"
#include "gw_admit.h"
#include "gw_frame.h"
#include "gw_http.h"
#include "gw_hub.h"
#include "gw_listen.h"
#include "gw_metrics.h"
#include "gw_msg.h"
#include "gw_pubsub.h"
#include "gw_receipts.h"
#include "gw_rooms.h"
#include "gw_wait.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

_Static_assert(GW_MSG_HEADROOM >= LWS_PRE, "gw_msg headroom must cover LWS_PRE");

/* Close codes the transport decides (proto/ws.md); the hub's are in gw_hub.h. */
#define GW_CLOSE_IDLE 4000 /* silent for gateway.idle_timeout_s */

struct gw_server_s {
    uv_loop_t *loop;        /* borrowed */
    const gw_config_t *cfg; /* borrowed */
    char node_id[64];
    struct lws_context *context; /* owned; NULL once destroyed */
    lws_retry_bo_t retry;        /* all zero: lws keeps no per-socket timers (below) */
    uv_timer_t *keepalive;       /* owned (closed through uv) */
    gw_hub_t *hub;               /* owned */
    gw_pubsub_t *pubsub;         /* owned */
    hr_redis_async_t *redis;     /* owned: commands (chat, presence) */
    gw_rooms_t *rooms;           /* owned */
    gw_receipts_t *receipts;     /* owned */
    gw_listen_t *listen;         /* owned; NULL once closed */
    struct lws_vhost *vhost;     /* borrowed from the context */
    uv_timer_t *drain_timer;     /* owned (closed through uv) */
    gw_waiters_t *waiting;       /* owned: sessions holding an answer until a channel is live */
    gw_admit_t *admit;           /* owned: sockets per user and per client address */
    gw_metrics_t *metrics;       /* owned */
    uint64_t command_readies;    /* times the command connection became READY */
    int draining;
    int stopped;
};

/* Per-socket state, allocated and zeroed by lws (per_session_data_size). */
typedef struct gw_session_s gw_session_t;
struct gw_session_s {
    gw_conn_t conn;
    struct lws *wsi;    /* borrowed */
    char *rx;           /* owned: a message arriving in fragments */
    gw_waiter_t wait;   /* on s->waiting while wait_msg is held */
    gw_msg_t *wait_msg; /* owned: welcome/joined held until wait.ch is live, or NULL */
    double tokens;      /* publish rate limit: token bucket */
    double cmd_tokens;  /* command rate limit: token bucket */
    uint64_t cmd_ms;
    char *ip;            /* owned: the client address, once counted in s->admit (with the user) */
    uint8_t established; /* lws may write to it */
    uint8_t in_callback; /* inside an lws callback for this socket */
    uint8_t write_failed;
    uint8_t ping_due;    /* send a PING at the next WRITEABLE */
    uint8_t killed;      /* cut after close_timeout_s */
    uint16_t peer_close; /* the close code the client sent, or 0 */
    uint32_t last_rx_s;  /* monotonic seconds of the last frame or PONG received */
    uint32_t close_s;    /* monotonic seconds when its close was decided, or 0 */
    uint64_t tokens_ms;
    size_t rxlen;
    int attached;
};

#define gw_session_of(c) ((gw_session_t *)((char *)(c)-offsetof(gw_session_t, conn)))

static void gw_server_stop(gw_server_t *s);

static void gw_session_write(gw_server_t *s, gw_session_t *ss, gw_msg_t *m, int n);

/*
 * A frame queued on an idle socket is written at once: waiting for a
 * WRITEABLE callback would cost two epoll_ctl calls per frame, which
 * dominates a large fan-out. If the kernel takes only part of it, lws keeps
 * the rest (lws_partial_buffered) and later frames wait for WRITEABLE.
 * (lws_send_pipe_choked would cost a poll() per frame.)
 */
static void
gw_session_wake(gw_conn_t *c)
{
    gw_session_t *ss = gw_session_of(c);
    if (c->close_code != 0 && ss->close_s == 0) {
        uint32_t now = (uint32_t)(hr_mono_ms() / 1000);
        ss->close_s = now != 0 ? now : 1;
    }
    if (c->qlen == 1 && c->close_code == 0 && ss->established && !ss->in_callback &&
        !lws_partial_buffered(ss->wsi)) {
        gw_server_t *s = lws_context_user(lws_get_context(ss->wsi));
        gw_msg_t *m = gw_conn_pop(c);
        int n = lws_write(ss->wsi, gw_msg_payload(m), m->len, LWS_WRITE_TEXT);
        gw_session_write(s, ss, m, n);
        if (n >= 0)
            return;
    }
    lws_callback_on_writable(ss->wsi);
}

static const gw_conn_ops_t gw_session_ops = {.wake = gw_session_wake};

/* ---- answers held until a subscription is live ---- */

/*
 * welcome and joined promise delivery: a notification or chat message
 * published once the client has them must arrive. So when the user's or
 * room's channel is not subscribed yet (first local socket, or a re-join
 * while the UNSUBSCRIBE is in flight), the answer m (a reference taken) waits
 * for Redis to confirm the SUBSCRIBE, and the socket reads nothing meanwhile,
 * so a publish sent right after a join is handled after it too.
 */
static void
gw_session_wait(gw_server_t *s, gw_session_t *ss, const char *ch, size_t len, gw_msg_t *m)
{
    ss->wait_msg = m;
    gw_waiters_add(s->waiting, &ss->wait, ch, len);
    lws_rx_flow_control(ss->wsi, 0);
}

/* Ends ss's wait: its answer is sent (send) or dropped (the socket closes). */
static void
gw_session_unwait(gw_server_t *s, gw_session_t *ss, int send)
{
    if (ss->wait_msg == NULL)
        return;
    gw_waiters_remove(s->waiting, &ss->wait);
    if (send) {
        gw_conn_send(s->hub, &ss->conn, ss->wait_msg);
        lws_rx_flow_control(ss->wsi, 1);
    }
    gw_msg_release(ss->wait_msg);
    ss->wait_msg = NULL;
}

#define gw_session_of_wait(w) ((gw_session_t *)((char *)(w)-offsetof(gw_session_t, wait)))

/* Sends m (a reference taken) now if channel ch is live, else once it is. */
static void
gw_send_when_live(gw_server_t *s, gw_session_t *ss, const char *ch, size_t len, gw_msg_t *m)
{
    /* Redis down: nothing can be delivered anyway; answer as before. */
    if (len > 0 && ss->wait_msg == NULL && s->pubsub != NULL && gw_pubsub_ready(s->pubsub) &&
        !gw_pubsub_live(s->pubsub, ch, len)) {
        gw_session_wait(s, ss, ch, len, m);
        return;
    }
    gw_conn_send(s->hub, &ss->conn, m);
    gw_msg_release(m);
}

/* gw_pubsub_live_fn: channel ch is live (or, NULL, the connection was lost). */
static void
gw_on_channel_live(void *ud, const char *ch, size_t len)
{
    gw_server_t *s = ud;
    if (ch != NULL) {
        gw_waiter_t *w;
        while ((w = gw_waiters_first(s->waiting, ch, len)) != NULL)
            gw_session_unwait(s, gw_session_of_wait(w), 1);
        return;
    }
    /* Lost: the waiters are answered as if Redis had been down when they asked. */
    size_t n;
    gw_waiter_t **all = gw_waiters_all(s->waiting, &n);
    for (size_t i = 0; i < n; i++)
        gw_session_unwait(s, gw_session_of_wait(all[i]), 1);
    hr_free(all);
}

/* ---- hub ↔ pubsub wiring ---- */

/* Sockets still closing at stop detach after the subscriber is gone: nothing to do then. */
static void
gw_hub_subscribe(void *ud, const char *ch, size_t len)
{
    gw_server_t *s = ud;
    if (s->pubsub != NULL)
        gw_pubsub_want(s->pubsub, ch, len);
}

static void
gw_hub_unsubscribe(void *ud, const char *ch, size_t len)
{
    gw_server_t *s = ud;
    if (s->pubsub != NULL)
        gw_pubsub_unwant(s->pubsub, ch, len);
}

static void
gw_hub_presence(void *ud, const char *room, const char *user, int joined)
{
    gw_server_t *s = ud;
    if (s->rooms != NULL)
        gw_rooms_presence_changed(s->rooms, room, user, joined);
}

static void
gw_on_redis_message(void *ud, const char *ch, size_t chlen, const char *payload, size_t len)
{
    gw_server_t *s = ud;
    /* Payloads are finished frames (proto/redis.md): forwarded as they are. */
    size_t rp = strlen(HR_CHANNEL_ROOM_PREFIX);
    if (chlen > rp && memcmp(ch, HR_CHANNEL_ROOM_PREFIX, rp) == 0)
        gw_rooms_deliver(s->rooms, ch, chlen, payload, len);
    else
        gw_hub_deliver(s->hub, ch, chlen, payload, len);
}

static void
gw_on_command_state(hr_redis_async_t *r, int ready, void *ud)
{
    HR_UNUSED(r);
    gw_server_t *s = ud;
    if (ready)
        s->command_readies++;
    if (ready && s->rooms != NULL)
        gw_rooms_on_ready(s->rooms);
}

static void
gw_count_queued(gw_conn_t *c, void *ud)
{
    *(uint64_t *)ud += c->qlen;
}

/* gw_status_fn: what /healthz, /readyz and the metrics' gauges report. */
static void
gw_server_status(void *ud, gw_status_t *st)
{
    gw_server_t *s = ud;
    gw_hub_stats_t hs = gw_hub_stats(s->hub);
    /* Both connections: subscriptions (delivery) and commands (chat, presence). */
    st->redis_up = s->pubsub != NULL && gw_pubsub_ready(s->pubsub) && s->redis != NULL &&
                   hr_redis_async_ready(s->redis);
    st->draining = s->draining;
    st->node_id = s->node_id;
    st->conns = hs.conns;
    st->users = hs.users;
    st->rooms = hs.rooms;
    st->memberships = hs.memberships;
    st->queued = hs.frames_queued;
    st->slow_killed = hs.slow_killed;
    st->channels = s->pubsub != NULL ? gw_pubsub_count(s->pubsub) : 0;
    st->reconnects = (s->pubsub != NULL ? gw_pubsub_reconnects(s->pubsub) : 0) +
                     (s->command_readies > 1 ? s->command_readies - 1 : 0);
    st->receipts_pending = s->receipts ? gw_receipts_pending(s->receipts) : 0;
    if (st->want_queued)
        gw_hub_foreach_conn(s->hub, gw_count_queued, &st->queued_now);
}

/* ---- frames to one socket ---- */

static void
gw_send_error(gw_server_t *s, gw_session_t *ss, const char *code, const char *message,
              const cJSON *ref)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "error");
    cJSON_AddStringToObject(o, "code", code);
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

static void
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
gw_handle_room_frame(gw_server_t *s, gw_session_t *ss, const gw_frame_t *f)
{
    const char *room = f->room;
    const cJSON *ref = f->ref;

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

/* Parsing and field checks are gw_frame's (pure, fuzzed); this acts on the result. */
static void
gw_handle_client_frame(gw_server_t *s, gw_session_t *ss, const char *buf, size_t len)
{
    gw_frame_t f;
    int rc = gw_frame_parse(buf, len, &f);
    gw_metrics_frame_in(s->metrics, f.type);
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
    } else {
        gw_handle_room_frame(s, ss, &f);
    }
    gw_frame_clear(&f);
}

/* ---- libwebsockets ---- */

/*
 * The client's address: the peer's, or behind a proxy (gateway.forwarded_for)
 * the last X-Forwarded-For entry, which the proxy itself appended.
 */
static void
gw_session_peer(gw_server_t *s, struct lws *wsi, char *buf, size_t cap)
{
    char xff[256];
    buf[0] = '\0';
    if (s->cfg->forwarded_for &&
        lws_hdr_copy(wsi, xff, sizeof(xff), WSI_TOKEN_X_FORWARDED_FOR) > 0) {
        const char *last = strrchr(xff, ',');
        last = last != NULL ? last + 1 : xff;
        last += strspn(last, " \t");
        snprintf(buf, cap, "%.*s", (int)strcspn(last, " \t"), last);
    }
    if (buf[0] == '\0')
        lws_get_peer_simple(wsi, buf, cap);
}

/* Counts the socket in s->admit, or refuses it: 0, or HR_DECLINED. */
static int
gw_session_admit(gw_server_t *s, gw_session_t *ss, const char *user)
{
    char ip[64];
    const char *why;
    gw_session_peer(s, ss->wsi, ip, sizeof(ip));
    if (gw_admit_take(s->admit, user, ip, &why) != 0) {
        hr_log_info("socket_refused", "ip=%s reason=\"%s\"", ip, why);
        gw_send_error(s, ss, "too_many_connections", why, NULL);
        gw_conn_close(&ss->conn, GW_CLOSE_POLICY, "too many connections");
        return HR_DECLINED;
    }
    ss->ip = hr_strdup(ip);
    return 0;
}

static int
gw_session_established(gw_server_t *s, gw_session_t *ss, struct lws *wsi)
{
    char arg[HR_USER_ID_MAX + 16];
    ss->wsi = wsi;
    gw_conn_init(s->hub, &ss->conn, &gw_session_ops);

    /* lws copies "user_id=<value>" into arg, url-decoded, and points past the name. */
    const char *user = lws_get_urlarg_by_name(wsi, "user_id=", arg, sizeof(arg));
    if (!s->cfg->dev_user_query) {
        hr_counter_inc(&s->metrics->connects[GW_CONNECT_UNAUTHORIZED]);
        gw_send_error(s, ss, "unauthorized", "no credentials accepted by this gateway", NULL);
        gw_conn_close(&ss->conn, GW_CLOSE_POLICY, "unauthorized");
        return 0;
    }
    /* Bytes that are not UTF-8 would reach every browser in the user's rooms and fail them. */
    if (user == NULL || !hr_proto_id_valid(user, strlen(user))) {
        hr_counter_inc(&s->metrics->connects[GW_CONNECT_INVALID_USER]);
        gw_send_error(s, ss, "invalid_user", "user_id query parameter missing or invalid", NULL);
        gw_conn_close(&ss->conn, GW_CLOSE_POLICY, "invalid user_id");
        return 0;
    }
    if (gw_session_admit(s, ss, user) != 0) {
        hr_counter_inc(&s->metrics->connects[GW_CONNECT_ERROR]);
        return 0;
    }
    hr_counter_inc(&s->metrics->connects[GW_CONNECT_OK]);
    gw_hub_attach(s->hub, &ss->conn, user);
    ss->attached = 1;

    cJSON *o = cJSON_CreateObject();
    char cid[96];
    snprintf(cid, sizeof(cid), "%s-%llu", s->node_id, (unsigned long long)ss->conn.id);
    cJSON_AddStringToObject(o, "type", "welcome");
    cJSON_AddStringToObject(o, "connection_id", cid);
    cJSON_AddStringToObject(o, "user_id", user);
    char *txt = hr_json_print(o);
    cJSON_Delete(o);
    gw_msg_t *m = gw_msg_create(txt, strlen(txt));
    hr_free(txt);
    char ch[HR_USER_ID_MAX + 32];
    size_t chlen = hr_proto_user_channel(ch, sizeof(ch), user);
    gw_send_when_live(s, ss, ch, chlen, m);
    hr_log_debug("ws_open", "conn=%s user=%s", cid, user);
    return 0;
}

static int
gw_session_receive(gw_server_t *s, gw_session_t *ss, struct lws *wsi, const char *in, size_t len)
{
    if (ss->conn.close_code != 0)
        return 0;
    if (lws_frame_is_binary(wsi)) {
        gw_send_error(s, ss, "binary_unsupported", "only JSON text frames are accepted", NULL);
        gw_conn_close(&ss->conn, 1003, "binary frames unsupported");
        return 0;
    }
    int first = lws_is_first_fragment(wsi), final = lws_is_final_fragment(wsi);
    if (first && final && ss->rx == NULL) {
        if (len > (size_t)s->cfg->max_frame)
            goto too_big;
        gw_handle_client_frame(s, ss, in, len);
        return 0;
    }
    /* Fragmented (or larger than lws's rx buffer): collect up to max_frame. */
    if (ss->rxlen + len > (size_t)s->cfg->max_frame)
        goto too_big;
    ss->rx = hr_realloc(ss->rx, ss->rxlen + len + 1);
    memcpy(ss->rx + ss->rxlen, in, len);
    ss->rxlen += len;
    if (final) {
        gw_handle_client_frame(s, ss, ss->rx, ss->rxlen);
        hr_free(ss->rx);
        ss->rx = NULL;
        ss->rxlen = 0;
    }
    return 0;
too_big:
    hr_free(ss->rx);
    ss->rx = NULL;
    ss->rxlen = 0;
    hr_log_info("frame_too_big", "conn=%llu max=%d", (unsigned long long)ss->conn.id,
                s->cfg->max_frame);
    gw_conn_close(&ss->conn, GW_CLOSE_TOO_BIG, "frame too big");
    return 0;
}

/* After lws_write of m (result n): receipt, release, remember a failure. */
static void
gw_session_write(gw_server_t *s, gw_session_t *ss, gw_msg_t *m, int n)
{
    if (n >= 0 && !m->noted && s->receipts != NULL) {
        /* One receipt per notification per gateway: the first socket written. */
        m->noted = 1;
        gw_metrics_delivered(s->metrics, (const char *)gw_msg_payload(m), m->len, hr_now_ms());
        gw_receipts_note(s->receipts, (const char *)gw_msg_payload(m), m->len,
                         gw_conn_user_id(&ss->conn));
    }
    if (n >= 0) {
        hr_counter_inc(s->metrics->frames_out);
        hr_counter_add(s->metrics->bytes_out, m->len);
    }
    gw_msg_release(m);
    if (n < 0)
        ss->write_failed = 1;
}

#define GW_WRITES_PER_CALLBACK 16

/*
 * Writes queued frames until lws buffers a partial write or a small batch is
 * done (so one backlogged socket does not starve the others), then closes if
 * a close was decided and everything before it went out.
 */
static int
gw_session_writeable(gw_server_t *s, gw_session_t *ss, struct lws *wsi)
{
    if (ss->write_failed)
        return -1;
    if (ss->ping_due && ss->conn.close_code == 0) {
        unsigned char ping[LWS_PRE];
        ss->ping_due = 0;
        if (lws_write(wsi, ping + LWS_PRE, 0, LWS_WRITE_PING) < 0)
            return -1;
        if (lws_partial_buffered(wsi)) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    for (int i = 0; i < GW_WRITES_PER_CALLBACK; i++) {
        gw_msg_t *m = gw_conn_pop(&ss->conn);
        if (m == NULL)
            break;
        int n = lws_write(wsi, gw_msg_payload(m), m->len, LWS_WRITE_TEXT);
        gw_session_write(s, ss, m, n);
        if (n < 0)
            return -1;
        if (lws_partial_buffered(wsi))
            break;
    }
    if (ss->conn.qlen > 0) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (ss->conn.close_code != 0) {
        if (lws_partial_buffered(wsi)) {
            lws_callback_on_writable(wsi);
            return 0;
        }
        /*
         * lws 4.1 drops a reason set by lws_close_reason() when the close
         * starts from SERVER_WRITEABLE, so the close frame is written here
         * (opcode 4 is lws's private LWS_WRITE_CLOSE) before hanging up.
         */
        unsigned char frame[LWS_PRE + 2 + sizeof(ss->conn.close_reason)];
        size_t rl = strlen(ss->conn.close_reason);
        frame[LWS_PRE] = (unsigned char)(ss->conn.close_code >> 8);
        frame[LWS_PRE + 1] = (unsigned char)(ss->conn.close_code & 0xff);
        memcpy(frame + LWS_PRE + 2, ss->conn.close_reason, rl);
        lws_write(wsi, frame + LWS_PRE, 2 + rl, (enum lws_write_protocol)4);
        return -1;
    }
    return 0;
}

static void
gw_session_closed(gw_server_t *s, gw_session_t *ss)
{
    if (ss->wsi != NULL)
        gw_metrics_disconnect(s->metrics,
                              ss->conn.close_code ? ss->conn.close_code : ss->peer_close);
    gw_session_unwait(s, ss, 0);
    if (ss->ip != NULL) {
        gw_admit_release(s->admit, gw_conn_user_id(&ss->conn), ss->ip);
        hr_free(ss->ip);
        ss->ip = NULL;
    }
    if (ss->attached) {
        gw_hub_detach(s->hub, &ss->conn);
        ss->attached = 0;
    } else {
        while (ss->conn.qlen > 0)
            gw_msg_release(gw_conn_pop(&ss->conn));
        hr_free(ss->conn.q);
        ss->conn.q = NULL;
    }
    hr_free(ss->rx);
    ss->rx = NULL;
    if (s->draining && gw_hub_stats(s->hub).conns == 0)
        gw_server_stop(s);
}

static int
gw_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    gw_server_t *s = ctx ? lws_context_user(ctx) : NULL;
    gw_session_t *ss = user;

    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        return gw_metrics_http(s->metrics, wsi, in);
    }
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        /* An upgrade refused gets an HTTP answer, not a bare TCP close. */
        char uri[64];
        if (s->draining) {
            hr_counter_inc(&s->metrics->connects[GW_CONNECT_DRAINING]);
            gw_http_refuse(wsi, 503,
                           "{\"error\":{\"code\":\"unavailable\",\"message\":\"gateway "
                           "draining, reconnect\"}}");
            return -1;
        }
        if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0 ||
            strcmp(uri, "/ws") != 0) {
            gw_http_refuse(wsi, 404,
                           "{\"error\":{\"code\":\"not_found\",\"message\":\"WebSocket "
                           "endpoint is /ws\"}}");
            return -1;
        }
        return 0;
    }
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: {
        /*
         * RFC 6455 5.5.1/7.4: a 1-byte close payload or a code past 4999 is
         * a protocol error, answered 1002 (lws fixes the codes below 3000
         * itself but would echo these).
         */
        const unsigned char *p = in;
        if (len >= 2)
            ss->peer_close = (uint16_t)((unsigned)p[0] << 8 | p[1]);
        if (len == 1 || (len >= 2 && ((unsigned)p[0] << 8 | p[1]) >= 5000)) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_PROTOCOL_ERR, (unsigned char *)"bad close", 9);
            return -1;
        }
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED: {
        /* Frames queued during the callback wait for WRITEABLE, as lws expects. */
        ss->in_callback = 1;
        int rc = gw_session_established(s, ss, wsi);
        ss->last_rx_s = (uint32_t)(hr_mono_ms() / 1000);
        ss->in_callback = 0;
        ss->established = 1;
        return rc;
    }
    case LWS_CALLBACK_RECEIVE_PONG:
        ss->last_rx_s = (uint32_t)(hr_mono_ms() / 1000);
        return 0;
    case LWS_CALLBACK_RECEIVE: {
        ss->last_rx_s = (uint32_t)(hr_mono_ms() / 1000);
        ss->in_callback = 1;
        int rc = gw_session_receive(s, ss, wsi, in, len);
        ss->in_callback = 0;
        return rc;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        ss->in_callback = 1;
        int rc = gw_session_writeable(s, ss, wsi);
        ss->in_callback = 0;
        return rc;
    }
    case LWS_CALLBACK_CLOSED:
        ss->established = 0;
        gw_session_closed(s, ss);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols gw_protocols[] = {
    {"herald", gw_callback, sizeof(gw_session_t), 1024, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void
gw_lws_log(int level, const char *line)
{
    size_t n = strcspn(line, "\n");
    hr_log_write(level == LLL_ERR ? HR_LOG_ERROR : HR_LOG_WARN, "lws", "msg=\"%.*s\"", (int)n,
                 line);
}

/*
 * A socket whose close was decided but whose last frames cannot be written
 * (the client stopped reading: no WRITEABLE will come) is cut after
 * close_timeout_s, with a reset so the kernel drops its send buffer too.
 */
static void
gw_session_kill(gw_server_t *s, gw_session_t *ss, uint32_t now)
{
    if (ss->killed || now - ss->close_s < (uint32_t)s->cfg->close_timeout_s)
        return;
    ss->killed = 1;
    hr_log_info("close_timeout", "conn=%llu code=%u", (unsigned long long)ss->conn.id,
                ss->conn.close_code);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(lws_get_socket_fd(ss->wsi), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    lws_set_timeout(ss->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
}

/*
 * Keepalive for every socket in one pass: a socket silent for ping_interval
 * gets a PING, one silent for idle_timeout is closed (4000), one stuck in its
 * close is cut. Costs O(sockets) per pass, against lws 4.1's O(sockets) per
 * PONG.
 */
static void
gw_keepalive_one(gw_conn_t *c, void *ud)
{
    gw_server_t *s = ud;
    gw_session_t *ss = gw_session_of(c);
    uint32_t now = (uint32_t)(hr_mono_ms() / 1000);
    uint32_t idle = now - ss->last_rx_s;
    if (!ss->established)
        return;
    if (c->close_code != 0) {
        gw_session_kill(s, ss, now);
        return;
    }
    if (idle >= (uint32_t)s->cfg->idle_timeout_s) {
        hr_log_debug("idle_timeout", "conn=%llu idle_s=%u", (unsigned long long)c->id, idle);
        gw_conn_close(c, GW_CLOSE_IDLE, "idle timeout");
    } else if (idle >= (uint32_t)s->cfg->ping_interval_s) {
        ss->ping_due = 1;
        lws_callback_on_writable(ss->wsi);
    }
}

static void
gw_keepalive_sweep(uv_timer_t *t)
{
    gw_server_t *s = t->data;
    gw_hub_foreach_conn(s->hub, gw_keepalive_one, s);
}

static void
gw_handle_closed(uv_handle_t *h)
{
    hr_free(h);
}

/* gw_listen_fn: lws takes the socket (and closes it); a refused one is the listener's. */
static int
gw_server_accept(void *ud, int fd)
{
    gw_server_t *s = ud;
    return s->draining || lws_adopt_socket_vhost(s->vhost, fd) == NULL ? HR_DECLINED : 0;
}

/* Stops accepting: the kernel then sends new clients to sibling processes. */
static void
gw_listen_close(gw_server_t *s)
{
    gw_listen_destroy(s->listen);
    s->listen = NULL;
}

gw_server_t *
gw_server_create(uv_loop_t *loop, const gw_config_t *cfg, char *err, size_t errlen)
{
    gw_server_t *s = hr_calloc(1, sizeof(*s));
    s->loop = loop;
    s->cfg = cfg;
    int port = 0;
    s->listen = gw_listen_create(loop, cfg->host, cfg->port, cfg->reuseport, &port, err, errlen);
    if (s->listen == NULL) {
        hr_free(s);
        return NULL;
    }
    if (cfg->node_id != NULL && cfg->node_id[0] != '\0') {
        snprintf(s->node_id, sizeof(s->node_id), "%s", cfg->node_id);
    } else {
        char host[40] = "gw";
        gethostname(host, sizeof(host) - 1);
        snprintf(s->node_id, sizeof(s->node_id), "%s-%d", host, (int)getpid());
    }

    gw_hub_opts_t ho = {.subscribe = gw_hub_subscribe,
                        .unsubscribe = gw_hub_unsubscribe,
                        .presence = gw_hub_presence,
                        .ud = s,
                        .max_rooms = (uint32_t)cfg->max_rooms,
                        .queue_max_frames = (uint32_t)cfg->queue_max_frames,
                        .queue_max_bytes = (uint32_t)cfg->queue_max_bytes};
    s->hub = gw_hub_create(&ho);
    s->waiting = gw_waiters_create();
    s->admit = gw_admit_create(cfg->max_sockets_per_user, cfg->max_sockets_per_ip);
    s->metrics = gw_metrics_create(gw_server_status, s);

    char control[128];
    snprintf(control, sizeof(control), "%s%s", HR_CHANNEL_GATEWAY_PREFIX, s->node_id);
    s->pubsub = gw_pubsub_create(loop, cfg->redis_url, control, gw_on_redis_message,
                                 gw_on_channel_live, s, err, errlen);
    if (s->pubsub == NULL) {
        gw_hub_destroy(s->hub);
        gw_waiters_destroy(s->waiting);
        gw_admit_destroy(s->admit);
        gw_metrics_destroy(s->metrics);
        gw_listen_destroy(s->listen);
        hr_free(s);
        return NULL;
    }

    hr_redis_async_opts_t ro = {.url = cfg->redis_url,
                                .name = "command",
                                .command_timeout_ms = 2000,
                                .on_state = gw_on_command_state,
                                .ud = s};
    s->redis = hr_redis_async_create(&gw_loop_ops_libuv, loop, &ro, err, errlen);
    gw_rooms_opts_t rmo = {.loop = loop,
                           .redis = s->redis,
                           .hub = s->hub,
                           .node_id = s->node_id,
                           .presence_ttl_s = cfg->presence_ttl_s,
                           .presence_events_max = cfg->presence_events_max};
    s->rooms = gw_rooms_create(&rmo);
    s->receipts = gw_receipts_create(loop, s->redis);

    lws_set_log_level(LLL_ERR | LLL_WARN, gw_lws_log);
    /*
     * lws 4.1 keeps every socket's ping timer in one sorted list, so each
     * reschedule walks all sockets: at 10k sockets per process that is most
     * of the CPU. Keepalive is therefore ours (gw_keepalive_sweep) and lws
     * gets a policy that arms no timer.
     */
    memset(&s->retry, 0, sizeof(s->retry));

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    void *loops[1] = {loop};
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER;
    info.protocols = gw_protocols;
    info.foreign_loops = loops;
    info.user = s;
    info.pcontext = &s->context;
    info.retry_and_idle_policy = &s->retry;
    info.timeout_secs = 10;
    /* Room for a long query, so an oversized user_id gets invalid_user, not a bare close. */
    info.max_http_header_data = 8192;
    info.options =
        LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6;
    s->context = lws_create_context(&info);
    s->vhost = s->context ? lws_get_vhost_by_name(s->context, "default") : NULL;
    if (s->vhost == NULL) {
        snprintf(err, errlen, "cannot create the lws context");
        if (s->context)
            lws_context_destroy(s->context);
        gw_receipts_destroy(s->receipts);
        hr_redis_async_destroy(s->redis);
        gw_rooms_destroy(s->rooms);
        gw_pubsub_destroy(s->pubsub);
        gw_hub_destroy(s->hub);
        gw_waiters_destroy(s->waiting);
        gw_admit_destroy(s->admit);
        gw_metrics_destroy(s->metrics);
        gw_listen_destroy(s->listen);
        hr_free(s);
        return NULL;
    }
    gw_listen_start(s->listen, gw_server_accept, s);
    s->keepalive = hr_malloc(sizeof(uv_timer_t));
    uv_timer_init(loop, s->keepalive);
    s->keepalive->data = s;
    /* Often enough for both the keepalive and the cut of stuck closes. */
    int period_s =
        cfg->ping_interval_s < cfg->close_timeout_s ? cfg->ping_interval_s : cfg->close_timeout_s;
    uint64_t every = (uint64_t)period_s * 1000 / 2;
    uv_timer_start(s->keepalive, gw_keepalive_sweep, every, every);
    hr_log_info("listening", "addr=%s:%d node=%s reuseport=%d dev_user_query=%d", cfg->host, port,
                s->node_id, cfg->reuseport, cfg->dev_user_query);
    return s;
}

static void
gw_drain_timer_closed(uv_handle_t *h)
{
    hr_free(h);
}

/* Closes what the server holds on the loop, then makes uv_run() return. */
static void
gw_server_stop(gw_server_t *s)
{
    if (s->stopped)
        return;
    s->stopped = 1;
    gw_listen_close(s);
    if (s->keepalive != NULL) {
        uv_timer_stop(s->keepalive);
        uv_close((uv_handle_t *)s->keepalive, gw_handle_closed);
        s->keepalive = NULL;
    }
    hr_log_info("stopping", "connections=%llu", (unsigned long long)gw_hub_stats(s->hub).conns);
    if (s->drain_timer != NULL) {
        uv_timer_stop(s->drain_timer);
        uv_close((uv_handle_t *)s->drain_timer, gw_drain_timer_closed);
        s->drain_timer = NULL;
    }
    /*
     * Sockets first: lws fires CLOSED for every socket still open (a drain
     * that timed out), and their detach needs the subscriber and rooms (the
     * presence they leave). On a foreign loop this starts closing lws's
     * handles; lws finishes by itself as their close callbacks run, and
     * uv_run() returns once nothing is left on the loop.
     */
    if (s->context != NULL)
        lws_context_destroy(s->context);
    gw_pubsub_destroy(s->pubsub);
    s->pubsub = NULL;
    /* Last receipts and presence out, then pending replies fail (they reach sockets through the
     * hub). */
    gw_receipts_destroy(s->receipts);
    s->receipts = NULL;
    hr_redis_async_destroy(s->redis);
    s->redis = NULL;
    gw_rooms_destroy(s->rooms);
    s->rooms = NULL;
}

static void
gw_drain_timeout(uv_timer_t *t)
{
    gw_server_t *s = t->data;
    hr_log_warn("drain_timeout", "connections=%llu",
                (unsigned long long)gw_hub_stats(s->hub).conns);
    gw_server_stop(s);
}

static void
gw_close_going_away(gw_conn_t *c, void *ud)
{
    HR_UNUSED(ud);
    gw_conn_close(c, GW_CLOSE_GOING_AWAY, "server draining");
}

void
gw_server_drain(gw_server_t *s)
{
    if (s->draining)
        return;
    s->draining = 1;
    gw_listen_close(s);
    uint64_t conns = gw_hub_stats(s->hub).conns;
    hr_log_info("draining", "connections=%llu drain_ms=%d", (unsigned long long)conns,
                s->cfg->drain_ms);
    if (conns == 0) {
        gw_server_stop(s);
        return;
    }
    gw_hub_foreach_conn(s->hub, gw_close_going_away, NULL);
    s->drain_timer = hr_malloc(sizeof(uv_timer_t));
    uv_timer_init(s->loop, s->drain_timer);
    s->drain_timer->data = s;
    uv_timer_start(s->drain_timer, gw_drain_timeout, (uint64_t)s->cfg->drain_ms, 0);
}

void
gw_server_destroy(gw_server_t *s)
{
    if (s == NULL)
        return;
    if (s->context != NULL)
        lws_context_destroy(s->context);
    gw_listen_destroy(s->listen);
    gw_pubsub_destroy(s->pubsub);
    gw_receipts_destroy(s->receipts);
    hr_redis_async_destroy(s->redis);
    gw_rooms_destroy(s->rooms);
    gw_hub_destroy(s->hub);
    gw_waiters_destroy(s->waiting);
    gw_admit_destroy(s->admit);
    gw_metrics_destroy(s->metrics);
    hr_free(s);
}
