#include "gw_rooms.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_dict.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"
#include "herald/hr_uuid.h"

#include <stdio.h>
#include <string.h>

/*
 * KEYS[1] room-messages stream, KEYS[2] room channel, KEYS[3] the sender's
 * idempotency key (hr_proto_chat_idem_key) or "" when the client sent none
 * ARGV[1] id, ARGV[2] room, ARGV[3] payload JSON, ARGV[4] message frame,
 * ARGV[5] message text (only with a key), ARGV[6] created_at, ARGV[7] key TTL s
 * Reply: {0, stream entry id} published; {1, "<id><created_at>"} of the
 * message this key already published (nothing written: a retry); {2, ""} the
 * key was used for another text. The key stores sha1hex(text) .. id ..
 * created_at, set in the same script as the XADD, so "published" and
 * "recorded" cannot disagree.
 */
static const char gw_lua_chat[] =
    "if KEYS[3] ~= '' then\n"
    "  local prev = redis.call('GET', KEYS[3])\n"
    "  if prev then\n"
    "    if string.sub(prev, 1, 40) ~= redis.sha1hex(ARGV[5]) then return {2, ''} end\n"
    "    return {1, string.sub(prev, 41)}\n"
    "  end\n"
    "end\n"
    "local sid = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'room', ARGV[2], 'payload', "
    "ARGV[3])\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[4])\n"
    "if KEYS[3] ~= '' then\n"
    "  redis.call('SET', KEYS[3], redis.sha1hex(ARGV[5]) .. ARGV[1] .. ARGV[6], 'EX', ARGV[7])\n"
    "end\n"
    "return {0, sid}\n";

/*
 * KEYS[1] herald:presence:{<room>} (user → expiry ms), KEYS[2]
 * herald:presence:{<room>}:<user> (gateway → expiry ms), KEYS[3] room channel
 * ARGV[1] gateway, ARGV[2] user, ARGV[3] now ms, ARGV[4] expiry ms,
 * ARGV[5] ttl s, ARGV[6] joined frame, ARGV[7] largest room that gets events
 * Reply: 1 if the user was not present in the room before. Expired entries
 * (a killed gateway's users) are pruned first, so they count neither as
 * present nor toward the room's size. The event is published only in rooms
 * of at most ARGV[7] users, the joiner included: in a big room every join
 * would be a frame to every member.
 */
static const char gw_lua_join[] = "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])\n"
                                  "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])\n"
                                  "local old = redis.call('ZSCORE', KEYS[1], ARGV[2])\n"
                                  "redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])\n"
                                  "redis.call('EXPIRE', KEYS[2], ARGV[5])\n"
                                  "redis.call('ZADD', KEYS[1], 'GT', ARGV[4], ARGV[2])\n"
                                  "redis.call('EXPIRE', KEYS[1], ARGV[5])\n"
                                  "if old then return 0 end\n"
                                  "if redis.call('ZCARD', KEYS[1]) <= tonumber(ARGV[7]) then\n"
                                  "  redis.call('PUBLISH', KEYS[3], ARGV[6])\n"
                                  "end\n"
                                  "return 1\n";

/*
 * KEYS as for join; ARGV[1] gateway, ARGV[2] user, ARGV[3] now ms, ARGV[4] left frame,
 * ARGV[5] largest room that gets events
 * Reply: 1 if the user has left the room on every gateway. The room's size
 * is counted with the leaver, as join counts it with the joiner, so a room
 * that saw a user's `joined` sees its `left`.
 */
static const char gw_lua_leave[] =
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])\n"
    "if redis.call('ZCARD', KEYS[2]) ~= 0 then return 0 end\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])\n"
    "if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end\n"
    "if redis.call('ZCARD', KEYS[1]) + 1 <= tonumber(ARGV[5]) then\n"
    "  redis.call('PUBLISH', KEYS[3], ARGV[4])\n"
    "end\n"
    "return 1\n";

/*
 * KEYS[1] herald:presence:{<room>}; ARGV[1] now ms, ARGV[2] cursor ("0" to
 * start), ARGV[3] page size
 * Reply: {next cursor ("0" when done), user, …}. Expired users are removed
 * first. ZSCAN in steps of 20 until a page is full: each answer costs
 * O(page), not O(room), and stays far below a socket's queue limit. ZSCAN
 * may list a user on two pages (SCAN's guarantee: every user present for the
 * whole walk is listed at least once).
 */
static const char gw_lua_presence[] =
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])\n"
    "local now, page, cur, out = tonumber(ARGV[1]), tonumber(ARGV[3]), ARGV[2], {''}\n"
    "repeat\n"
    "  local r = redis.call('ZSCAN', KEYS[1], cur, 'COUNT', 20)\n"
    "  cur = r[1]\n"
    "  for i = 1, #r[2], 2 do\n"
    "    if tonumber(r[2][i + 1]) > now then out[#out + 1] = r[2][i] end\n"
    "  end\n"
    "until cur == '0' or #out > page\n"
    "out[1] = cur\n"
    "return out\n";

#define GW_PENDING_MAX_AGE_MS 10000

/* A published chat message whose sender waits for its own copy with its ref. */
typedef struct {
    uint64_t conn_id;
    char *ref; /* owned: JSON text, NULL if the client sent none */
    uint64_t born_ms;
    char id[HR_UUID_STR_LEN];
} gw_pending_t;

struct gw_rooms_s {
    gw_rooms_opts_t o;
    char *node_id; /* owned */
    hr_uuid_gen_t uuid;
    hr_dict_t *pending;  /* message id → gw_pending_t (owned) */
    uv_timer_t *refresh; /* owned (closed through uv) */
};

static void
gw_pending_free(void *p)
{
    gw_pending_t *pd = p;
    if (pd == NULL)
        return;
    hr_free(pd->ref);
    hr_free(pd);
}

static void
gw_rooms_send(gw_rooms_t *r, uint64_t conn_id, cJSON *o)
{
    gw_conn_t *c = gw_hub_conn_get(r->o.hub, conn_id);
    if (c != NULL) {
        gw_msg_t *m = gw_msg_from_json(o);
        gw_conn_send(r->o.hub, c, m);
        gw_msg_release(m);
    }
    cJSON_Delete(o);
}

static void
gw_rooms_send_error(gw_rooms_t *r, uint64_t conn_id, const char *code, const char *message,
                    const char *ref_json)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "error");
    cJSON_AddStringToObject(o, "code", code);
    cJSON_AddStringToObject(o, "message", message);
    if (ref_json != NULL)
        cJSON_AddRawToObject(o, "ref", ref_json);
    gw_rooms_send(r, conn_id, o);
}

/* ---- chat ---- */

/* One publish waiting for its script's reply. */
typedef struct {
    gw_rooms_t *r;
    char id[HR_UUID_STR_LEN];
    int keyed;     /* the client sent an idempotency key */
    char *room;    /* owned; set only when keyed (to rebuild a retried message) */
    char *from;    /* owned; likewise */
    char *message; /* owned; likewise */
} gw_chat_q_t;

static void
gw_chat_q_free(gw_chat_q_t *q)
{
    hr_free(q->room);
    hr_free(q->from);
    hr_free(q->message);
    hr_free(q);
}

/* The stored payload {"id","room","from","message","created_at"}; owned by the caller. */
static char *
gw_rooms_payload(const char *id, const char *room, const char *from, const char *message,
                 const char *created)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "room", room);
    cJSON_AddStringToObject(o, "from", from);
    cJSON_AddStringToObject(o, "message", message);
    cJSON_AddStringToObject(o, "created_at", created);
    char *payload = hr_json_print(o);
    cJSON_Delete(o);
    return payload;
}

/*
 * A retry of a message this key already published: the sender gets that
 * message again (same id and created_at, so the same frame) with its ref and
 * "duplicate":true; the room is not sent anything.
 */
static void
gw_rooms_answer_duplicate(gw_rooms_t *r, gw_pending_t *pd, gw_chat_q_t *q, const redisReply *prev)
{
    if (prev->type != REDIS_REPLY_STRING || prev->len < HR_UUID_STR_LEN - 1 ||
        prev->len - (HR_UUID_STR_LEN - 1) >= HR_TIME_ISO_LEN) {
        gw_rooms_send_error(r, pd->conn_id, "internal", "unreadable idempotency record", pd->ref);
        return;
    }
    char id[HR_UUID_STR_LEN], created[HR_TIME_ISO_LEN];
    memcpy(id, prev->str, HR_UUID_STR_LEN - 1);
    id[HR_UUID_STR_LEN - 1] = '\0';
    size_t cl = prev->len - (HR_UUID_STR_LEN - 1);
    memcpy(created, prev->str + HR_UUID_STR_LEN - 1, cl);
    created[cl] = '\0';
    char *payload = gw_rooms_payload(id, q->room, q->from, q->message, created);
    size_t pl = strlen(payload), rl = pd->ref ? strlen(pd->ref) : 0;
    char *frame = hr_malloc(pl + rl + 64);
    /* The room's frame ({"type":"message",…}) with the ref and the flag before its brace. */
    int fl =
        snprintf(frame, pl + rl + 64, "{\"type\":\"message\",%.*s%s%s,\"duplicate\":true}",
                 (int)(pl - 2), payload + 1, pd->ref ? ",\"ref\":" : "", pd->ref ? pd->ref : "");
    hr_free(payload);
    gw_conn_t *c = gw_hub_conn_get(r->o.hub, pd->conn_id);
    if (c != NULL) {
        gw_msg_t *m = gw_msg_create(frame, (size_t)fl);
        gw_conn_send(r->o.hub, c, m);
        gw_msg_release(m);
    }
    hr_free(frame);
}

static void
gw_rooms_chat_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    gw_chat_q_t *q = privdata;
    gw_rooms_t *r = q->r;
    redisReply *rep = reply;
    long long outcome = 0;
    if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER)
        outcome = rep->element[0]->integer;
    else if (rep != NULL && rep->type != REDIS_REPLY_ERROR)
        outcome = -1;
    if (rep != NULL && rep->type == REDIS_REPLY_ARRAY && outcome == 0) {
        /* Published: the room's copy brings the sender its ref (gw_rooms_deliver). */
        gw_chat_q_free(q);
        return;
    }
    gw_pending_t *pd = hr_dict_del(r->pending, q->id, strlen(q->id));
    if (rep == NULL) {
        /* The watchdog or a lost connection: the script may have run or not. */
        hr_log_warn("chat_publish_unknown", "id=%s error=\"redis connection lost\"", q->id);
        if (pd != NULL)
            gw_rooms_send_error(r, pd->conn_id, "outcome_unknown",
                                q->keyed ? "redis did not answer: the message may have been "
                                           "published; retry with the same idempotency_key"
                                         : "redis did not answer: the message may have been "
                                           "published; a retry may duplicate it",
                                pd->ref);
    } else if (rep->type == REDIS_REPLY_ERROR || outcome < 0) {
        hr_log_warn("chat_publish_failed", "id=%s error=\"%s\"", q->id,
                    rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
        if (pd != NULL)
            gw_rooms_send_error(r, pd->conn_id, "unavailable",
                                "message not sent: redis refused it, retry", pd->ref);
    } else if (pd != NULL && outcome == 1) {
        gw_rooms_answer_duplicate(r, pd, q, rep->element[1]);
    } else if (pd != NULL) {
        gw_rooms_send_error(r, pd->conn_id, "idempotency_conflict",
                            "this idempotency_key was used for another message", pd->ref);
    }
    gw_pending_free(pd);
    gw_chat_q_free(q);
}

int
gw_rooms_publish(gw_rooms_t *r, gw_conn_t *c, const char *room, const char *message,
                 const char *idem_key, const cJSON *ref)
{
    if (!hr_redis_async_ready(r->o.redis))
        return HR_AGAIN;

    uint8_t u[16];
    char id[HR_UUID_STR_LEN], created[HR_TIME_ISO_LEN];
    hr_uuid7_next(&r->uuid, hr_now_ms(), u);
    hr_uuid_format(u, id);
    hr_time_format_iso(hr_uuid7_ms(u), created);

    const char *from = gw_conn_user_id(c);
    char *payload = gw_rooms_payload(id, room, from, message, created);
    /* The frame is the payload with "type" first: {"type":"message","id":…}. */
    size_t pl = strlen(payload);
    char *frame = hr_malloc(pl + 32);
    int fl = snprintf(frame, pl + 32, "{\"type\":\"message\",%s", payload + 1);

    char stream_key[] = HR_STREAM_ROOM_MESSAGES;
    char ch[GW_ROOM_MAX + 32];
    char ikey[GW_ROOM_MAX + HR_USER_ID_MAX + HR_CHAT_IDEM_KEY_MAX + 48] = "";
    size_t chl = hr_proto_room_channel(ch, sizeof(ch), room);
    size_t ikl = idem_key ? hr_proto_chat_idem_key(ikey, sizeof(ikey), room, from, idem_key) : 0;
    char sttl[16];
    snprintf(sttl, sizeof(sttl), "%d", HR_CHAT_IDEM_TTL_S);
    const char *argv[] = {"EVAL", gw_lua_chat, "3",   stream_key,         ch,      ikey, id,
                          room,   payload,     frame, ikl ? message : "", created, sttl};
    size_t argvlen[] = {4,
                        sizeof(gw_lua_chat) - 1,
                        1,
                        strlen(stream_key),
                        chl,
                        ikl,
                        strlen(id),
                        strlen(room),
                        pl,
                        (size_t)fl,
                        ikl ? strlen(message) : 0,
                        strlen(created),
                        strlen(sttl)};

    gw_chat_q_t *q = hr_calloc(1, sizeof(*q));
    q->r = r;
    memcpy(q->id, id, sizeof(q->id));
    if (ikl > 0) {
        q->keyed = 1;
        q->room = hr_strdup(room);
        q->from = hr_strdup(from);
        q->message = hr_strdup(message);
    }
    int rc = hr_redis_async_argv(r->o.redis, gw_rooms_chat_done, q, 13, argv, argvlen);
    hr_free(payload);
    hr_free(frame);
    if (rc != 0) {
        gw_chat_q_free(q);
        return HR_AGAIN;
    }
    gw_pending_t *pd = hr_calloc(1, sizeof(*pd));
    pd->conn_id = c->id;
    pd->ref = ref ? hr_json_print(ref) : NULL;
    pd->born_ms = hr_mono_ms();
    memcpy(pd->id, id, sizeof(pd->id));
    hr_dict_set(r->pending, pd->id, strlen(pd->id), pd);
    return 0;
}

void
gw_rooms_deliver(gw_rooms_t *r, const char *channel, size_t chlen, const char *payload, size_t len)
{
    static const char head[] = "{\"type\":\"message\",\"id\":\"";
    size_t hl = sizeof(head) - 1;
    gw_pending_t *pd = NULL;
    if (len > hl + 36 && memcmp(payload, head, hl) == 0 && hr_dict_size(r->pending) > 0)
        pd = hr_dict_del(r->pending, payload + hl, 36);
    if (pd == NULL) {
        gw_hub_deliver(r->o.hub, channel, chlen, payload, len);
        return;
    }
    /* The sender's copy: the same frame with its ref before the closing brace. */
    gw_msg_t *alt = NULL;
    if (pd->ref != NULL && payload[len - 1] == '}') {
        size_t rl = strlen(pd->ref);
        char *buf = hr_malloc(len + rl + 16);
        memcpy(buf, payload, len - 1);
        int n = snprintf(buf + len - 1, rl + 16, ",\"ref\":%s}", pd->ref);
        alt = gw_msg_create(buf, len - 1 + (size_t)n);
        hr_free(buf);
    }
    gw_hub_deliver_alt(r->o.hub, channel, chlen, payload, len, pd->conn_id, alt);
    if (alt)
        gw_msg_release(alt);
    gw_pending_free(pd);
}

/* ---- presence ---- */

static void
gw_rooms_ignore_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    HR_UNUSED(privdata);
    redisReply *rep = reply;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
        hr_log_warn("presence_script_failed", "error=\"%s\"", rep->str);
}

static void
gw_rooms_presence_send(gw_rooms_t *r, const char *room, const char *user, int joined)
{
    char k1[GW_ROOM_MAX + 32], k2[GW_ROOM_MAX + HR_USER_ID_MAX + 32], ch[GW_ROOM_MAX + 32];
    size_t l1 = hr_proto_presence_key(k1, sizeof(k1), room, NULL);
    size_t l2 = hr_proto_presence_key(k2, sizeof(k2), room, user);
    size_t lc = hr_proto_room_channel(ch, sizeof(ch), room);
    if (l1 == 0 || l2 == 0 || lc == 0)
        return;

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", joined ? "joined" : "left");
    cJSON_AddStringToObject(o, "room", room);
    cJSON_AddStringToObject(o, "user_id", user);
    char *frame = hr_json_print(o);
    cJSON_Delete(o);

    uint64_t now = hr_now_ms();
    char snow[24], sexp[24], sttl[16];
    snprintf(snow, sizeof(snow), "%llu", (unsigned long long)now);
    snprintf(sexp, sizeof(sexp), "%llu",
             (unsigned long long)(now + (uint64_t)r->o.presence_ttl_s * 1000));
    snprintf(sttl, sizeof(sttl), "%d", r->o.presence_ttl_s * 2);
    char smax[16];
    snprintf(smax, sizeof(smax), "%d", r->o.presence_events_max);
    if (joined) {
        const char *argv[] = {"EVAL", gw_lua_join, "3",  k1,   k2,    ch,  r->node_id,
                              user,   snow,        sexp, sttl, frame, smax};
        size_t argvlen[13];
        for (int i = 0; i < 13; i++)
            argvlen[i] = strlen(argv[i]);
        argvlen[3] = l1, argvlen[4] = l2, argvlen[5] = lc;
        hr_redis_async_argv(r->o.redis, gw_rooms_ignore_reply, NULL, 13, argv, argvlen);
    } else {
        const char *argv[] = {"EVAL",     gw_lua_leave, "3",  k1,    k2,  ch,
                              r->node_id, user,         snow, frame, smax};
        size_t argvlen[11];
        for (int i = 0; i < 11; i++)
            argvlen[i] = strlen(argv[i]);
        argvlen[3] = l1, argvlen[4] = l2, argvlen[5] = lc;
        hr_redis_async_argv(r->o.redis, gw_rooms_ignore_reply, NULL, 11, argv, argvlen);
    }
    hr_free(frame);
}

void
gw_rooms_presence_changed(gw_rooms_t *r, const char *room, const char *user_id, int joined)
{
    /* Redis down: the refresh after reconnect re-asserts what is still true. */
    if (hr_redis_async_ready(r->o.redis))
        gw_rooms_presence_send(r, room, user_id, joined);
}

typedef struct {
    gw_rooms_t *r;
    uint64_t conn_id;
    char *ref;  /* owned JSON text or NULL */
    char *room; /* owned */
} gw_presence_q_t;

static void
gw_rooms_presence_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    gw_presence_q_t *q = privdata;
    redisReply *rep = reply;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
        rep->element[0]->type != REDIS_REPLY_STRING) {
        if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
            hr_log_warn("presence_query_failed", "error=\"%s\"", rep->str);
        gw_rooms_send_error(q->r, q->conn_id, "unavailable", "presence unavailable, retry", q->ref);
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "presence");
        cJSON_AddStringToObject(o, "room", q->room);
        cJSON *users = cJSON_AddArrayToObject(o, "users");
        for (size_t i = 1; i < rep->elements; i++)
            if (rep->element[i]->type == REDIS_REPLY_STRING)
                cJSON_AddItemToArray(users, cJSON_CreateString(rep->element[i]->str));
        const char *next = rep->element[0]->str;
        if (strcmp(next, "0") == 0)
            cJSON_AddNullToObject(o, "cursor");
        else
            cJSON_AddStringToObject(o, "cursor", next);
        if (q->ref != NULL)
            cJSON_AddRawToObject(o, "ref", q->ref);
        gw_rooms_send(q->r, q->conn_id, o);
    }
    hr_free(q->ref);
    hr_free(q->room);
    hr_free(q);
}

int
gw_rooms_cursor_valid(const char *cursor)
{
    size_t n = strspn(cursor, "0123456789");
    return n > 0 && n <= 20 && cursor[n] == '\0';
}

int
gw_rooms_presence_query(gw_rooms_t *r, gw_conn_t *c, const char *room, const char *cursor,
                        const cJSON *ref)
{
    char k1[GW_ROOM_MAX + 32], snow[24], spage[16];
    hr_proto_presence_key(k1, sizeof(k1), room, NULL);
    snprintf(snow, sizeof(snow), "%llu", (unsigned long long)hr_now_ms());
    snprintf(spage, sizeof(spage), "%d", HR_PRESENCE_PAGE);
    const char *argv[] = {"EVAL", gw_lua_presence, "1", k1, snow, cursor ? cursor : "0", spage};
    size_t argvlen[7];
    for (int i = 0; i < 7; i++)
        argvlen[i] = strlen(argv[i]);
    gw_presence_q_t *q = hr_calloc(1, sizeof(*q));
    q->r = r;
    q->conn_id = c->id;
    q->ref = ref ? hr_json_print(ref) : NULL;
    q->room = hr_strdup(room);
    if (hr_redis_async_argv(r->o.redis, gw_rooms_presence_done, q, 7, argv, argvlen) != 0) {
        hr_free(q->ref);
        hr_free(q->room);
        hr_free(q);
        return HR_AGAIN;
    }
    return 0;
}

/* ---- periodic refresh ---- */

static void
gw_rooms_refresh_one(const char *room, const char *user, void *ud)
{
    gw_rooms_presence_send(ud, room, user, 1);
}

typedef struct {
    uint64_t now;
    char **old; /* owned list of expired pending ids */
    size_t nold;
} gw_sweep_t;

static int
gw_rooms_sweep_one(const char *key, size_t klen, void *val, void *ud)
{
    gw_sweep_t *sw = ud;
    gw_pending_t *pd = val;
    if (sw->now - pd->born_ms > GW_PENDING_MAX_AGE_MS) {
        sw->old = hr_realloc(sw->old, (sw->nold + 1) * sizeof(char *));
        sw->old[sw->nold++] = hr_strndup(key, klen);
    }
    return 0;
}

void
gw_rooms_on_ready(gw_rooms_t *r)
{
    gw_hub_foreach_presence(r->o.hub, gw_rooms_refresh_one, r);
}

static void
gw_rooms_refresh_fire(uv_timer_t *t)
{
    gw_rooms_t *r = t->data;
    if (hr_redis_async_ready(r->o.redis))
        gw_hub_foreach_presence(r->o.hub, gw_rooms_refresh_one, r);
    /* Chat messages whose copy never came back (subscription lost) are forgotten. */
    gw_sweep_t sw = {hr_mono_ms(), NULL, 0};
    hr_dict_foreach(r->pending, gw_rooms_sweep_one, &sw);
    for (size_t i = 0; i < sw.nold; i++) {
        gw_pending_free(hr_dict_del(r->pending, sw.old[i], strlen(sw.old[i])));
        hr_free(sw.old[i]);
    }
    hr_free(sw.old);
}

gw_rooms_t *
gw_rooms_create(const gw_rooms_opts_t *o)
{
    gw_rooms_t *r = hr_calloc(1, sizeof(*r));
    r->o = *o;
    if (r->o.presence_ttl_s < 3)
        r->o.presence_ttl_s = 3;
    r->node_id = hr_strdup(o->node_id);
    r->o.node_id = r->node_id;
    hr_uuid_gen_init(&r->uuid);
    r->pending = hr_dict_create();
    r->refresh = hr_malloc(sizeof(uv_timer_t));
    uv_timer_init(o->loop, r->refresh);
    r->refresh->data = r;
    uint64_t every = (uint64_t)r->o.presence_ttl_s * 1000 / 3;
    uv_timer_start(r->refresh, gw_rooms_refresh_fire, every, every);
    return r;
}

static void
gw_rooms_timer_closed(uv_handle_t *h)
{
    hr_free(h);
}

void
gw_rooms_destroy(gw_rooms_t *r)
{
    if (r == NULL)
        return;
    uv_timer_stop(r->refresh);
    uv_close((uv_handle_t *)r->refresh, gw_rooms_timer_closed);
    hr_dict_destroy(r->pending, gw_pending_free);
    hr_free(r->node_id);
    hr_free(r);
}
