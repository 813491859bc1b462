#include "gw_rooms.h"
#include "gw_frame.h"
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

/*
 * The periodic refresh of one room, batched: KEYS[1] herald:presence:{<room>},
 * KEYS[2] room channel, KEYS[2 + i] herald:presence:{<room>}:<user i>
 * ARGV[1] gateway, ARGV[2] now ms, ARGV[3] expiry ms, ARGV[4] key ttl s,
 * ARGV[5] largest room that gets events, ARGV[6] the joined frame up to the
 * user id ({"type":"joined","room":"<room>","user_id":), ARGV[6 + i] user i
 * Reply: how many of the users were not present (expired, or lost with a
 * Redis restart): they get their `joined` as in the join script. Expired
 * entries are pruned first.
 */
static const char gw_lua_refresh[] =
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])\n"
    "local fresh = {}\n"
    "for i = 7, #ARGV do\n"
    "  local k = KEYS[i - 4]\n"
    "  redis.call('ZADD', k, ARGV[3], ARGV[1])\n"
    "  redis.call('EXPIRE', k, ARGV[4])\n"
    "  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then fresh[#fresh + 1] = ARGV[i] end\n"
    "  redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[i])\n"
    "end\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[4])\n"
    "if #fresh > 0 and redis.call('ZCARD', KEYS[1]) <= tonumber(ARGV[5]) then\n"
    "  for _, u in ipairs(fresh) do\n"
    "    redis.call('PUBLISH', KEYS[2], ARGV[6] .. cjson.encode(u) .. '}')\n"
    "  end\n"
    "end\n"
    "return #fresh\n";

/* The scripts, loaded with SCRIPT LOAD on every READY and called by EVALSHA. */
typedef enum {
    GW_LUA_CHAT,
    GW_LUA_JOIN,
    GW_LUA_LEAVE,
    GW_LUA_REFRESH,
    GW_LUA_PRESENCE,
    GW_LUA_N
} gw_lua_id_t;

static const struct {
    const char *text;
    size_t len;
    const char *name;
} gw_lua[GW_LUA_N] = {
    [GW_LUA_CHAT] = {gw_lua_chat, sizeof(gw_lua_chat) - 1, "chat"},
    [GW_LUA_JOIN] = {gw_lua_join, sizeof(gw_lua_join) - 1, "join"},
    [GW_LUA_LEAVE] = {gw_lua_leave, sizeof(gw_lua_leave) - 1, "leave"},
    [GW_LUA_REFRESH] = {gw_lua_refresh, sizeof(gw_lua_refresh) - 1, "refresh"},
    [GW_LUA_PRESENCE] = {gw_lua_presence, sizeof(gw_lua_presence) - 1, "presence"},
};

/*
 * The refresh is spread over the period (presence_ttl_s / 3) in slices: a
 * room is refreshed in the slice its name hashes to, so 10k rooms do not all
 * go out in one loop turn. A room's users go in batches of at most
 * GW_REFRESH_BATCH per script call.
 */
#define GW_REFRESH_SLICES 10
#define GW_REFRESH_BATCH 256

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
    hr_dict_t *pending;     /* message id → gw_pending_t (owned) */
    uv_timer_t *refresh;    /* owned (closed through uv) */
    uint32_t slice;         /* the refresh slice the next tick serves */
    char sha[GW_LUA_N][41]; /* SCRIPT LOAD's answers; "" until then (EVAL is used) */
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

/* ---- scripts: EVALSHA, EVAL until loaded or after NOSCRIPT ---- */

/* A call sent as EVALSHA: its arguments are kept to resend it as EVAL on NOSCRIPT. */
typedef struct {
    gw_rooms_t *r;
    gw_lua_id_t id;
    redisCallbackFn *cb;
    void *priv;
    int nargs;
    const char **args; /* point into this block, after the struct */
    size_t *lens;
} gw_eval_t;

static int gw_rooms_eval_send(gw_rooms_t *r, gw_lua_id_t id, int sha, int nargs,
                              const char *const *args, const size_t *lens, redisCallbackFn *cb,
                              void *priv);

typedef struct {
    gw_rooms_t *r;
    gw_lua_id_t id;
} gw_load_t;

static void
gw_rooms_loaded(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    gw_load_t *l = privdata;
    redisReply *rep = reply;
    if (rep != NULL && rep->type == REDIS_REPLY_STRING && rep->len == 40)
        memcpy(l->r->sha[l->id], rep->str, 41);
    else if (rep != NULL)
        hr_log_warn("script_load_failed", "script=%s error=\"%s\"", gw_lua[l->id].name,
                    rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
    hr_free(l);
}

static void
gw_rooms_load(gw_rooms_t *r, gw_lua_id_t id)
{
    const char *argv[] = {"SCRIPT", "LOAD", gw_lua[id].text};
    size_t argvlen[] = {6, 4, gw_lua[id].len};
    gw_load_t *l = hr_malloc(sizeof(*l));
    l->r = r;
    l->id = id;
    if (hr_redis_async_argv(r->o.redis, gw_rooms_loaded, l, 3, argv, argvlen) != 0)
        hr_free(l);
}

static void
gw_rooms_eval_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    gw_eval_t *e = privdata;
    redisReply *rep = reply;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        /* The script cache was flushed (SCRIPT FLUSH, a restart): resend as EVAL, reload. */
        gw_rooms_t *r = e->r;
        hr_log_warn("script_missing", "script=%s", gw_lua[e->id].name);
        if (r->sha[e->id][0] != '\0') {
            r->sha[e->id][0] = '\0';
            gw_rooms_load(r, e->id);
        }
        if (gw_rooms_eval_send(r, e->id, 0, e->nargs, e->args, e->lens, e->cb, e->priv) != 0)
            e->cb(ac, NULL, e->priv);
    } else {
        e->cb(ac, reply, e->priv);
    }
    hr_free(e);
}

/*
 * Sends script id with args (numkeys, the keys, then its ARGV), as EVALSHA
 * when sha is set, else EVAL. Returns 0, or HR_AGAIN when not sent (cb is
 * not called).
 */
static int
gw_rooms_eval_send(gw_rooms_t *r, gw_lua_id_t id, int sha, int nargs, const char *const *args,
                   const size_t *lens, redisCallbackFn *cb, void *priv)
{
    const char **argv = hr_malloc((size_t)(nargs + 2) * sizeof(*argv));
    size_t *argvlen = hr_malloc((size_t)(nargs + 2) * sizeof(*argvlen));
    argv[0] = sha ? "EVALSHA" : "EVAL";
    argvlen[0] = strlen(argv[0]);
    argv[1] = sha ? r->sha[id] : gw_lua[id].text;
    argvlen[1] = sha ? 40 : gw_lua[id].len;
    memcpy(argv + 2, args, (size_t)nargs * sizeof(*argv));
    memcpy(argvlen + 2, lens, (size_t)nargs * sizeof(*argvlen));
    gw_eval_t *e = NULL;
    if (sha) {
        size_t bytes = 0;
        for (int i = 0; i < nargs; i++)
            bytes += lens[i];
        size_t arrays = (size_t)nargs * (sizeof(char *) + sizeof(size_t));
        e = hr_malloc(sizeof(*e) + arrays + bytes);
        *e = (gw_eval_t){r, id, cb, priv, nargs, NULL, NULL};
        e->lens = (size_t *)(void *)(e + 1);
        e->args = (const char **)(void *)(e->lens + nargs);
        char *p = (char *)(e->args + nargs);
        for (int i = 0; i < nargs; i++) {
            memcpy(p, args[i], lens[i]);
            e->args[i] = p;
            e->lens[i] = lens[i];
            p += lens[i];
        }
    }
    int rc = sha ? hr_redis_async_argv(r->o.redis, gw_rooms_eval_done, e, nargs + 2, argv, argvlen)
                 : hr_redis_async_argv(r->o.redis, cb, priv, nargs + 2, argv, argvlen);
    hr_free(argv);
    hr_free(argvlen);
    if (rc != 0) {
        hr_free(e);
        return HR_AGAIN;
    }
    return 0;
}

/* Runs script id: 40 bytes of sha instead of the script's text once it is loaded. */
static int
gw_rooms_eval(gw_rooms_t *r, gw_lua_id_t id, int nargs, const char *const *args, const size_t *lens,
              redisCallbackFn *cb, void *priv)
{
    return gw_rooms_eval_send(r, id, r->sha[id][0] != '\0', nargs, args, lens, cb, priv);
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
    const char *args[] = {"3",   stream_key,         ch,      ikey, id, room, payload,
                          frame, ikl ? message : "", created, sttl};
    size_t lens[] = {1,
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
    int rc = gw_rooms_eval(r, GW_LUA_CHAT, 11, args, lens, gw_rooms_chat_done, q);
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
    if (hr_proto_presence_key(k1, sizeof(k1), room, NULL) == 0 ||
        hr_proto_presence_key(k2, sizeof(k2), room, user) == 0 ||
        hr_proto_room_channel(ch, sizeof(ch), room) == 0)
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
        const char *args[] = {"3", k1, k2, ch, r->node_id, user, snow, sexp, sttl, frame, smax};
        size_t lens[11];
        for (int i = 0; i < 11; i++)
            lens[i] = strlen(args[i]);
        gw_rooms_eval(r, GW_LUA_JOIN, 11, args, lens, gw_rooms_ignore_reply, NULL);
    } else {
        const char *args[] = {"3", k1, k2, ch, r->node_id, user, snow, frame, smax};
        size_t lens[9];
        for (int i = 0; i < 9; i++)
            lens[i] = strlen(args[i]);
        gw_rooms_eval(r, GW_LUA_LEAVE, 9, args, lens, gw_rooms_ignore_reply, NULL);
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
    return gw_frame_cursor_valid(cursor); /* the rule lives with the other frame checks */
}

int
gw_rooms_presence_query(gw_rooms_t *r, gw_conn_t *c, const char *room, const char *cursor,
                        const cJSON *ref)
{
    char k1[GW_ROOM_MAX + 32], snow[24], spage[16];
    hr_proto_presence_key(k1, sizeof(k1), room, NULL);
    snprintf(snow, sizeof(snow), "%llu", (unsigned long long)hr_now_ms());
    snprintf(spage, sizeof(spage), "%d", HR_PRESENCE_PAGE);
    const char *args[] = {"1", k1, snow, cursor ? cursor : "0", spage};
    size_t lens[5];
    for (int i = 0; i < 5; i++)
        lens[i] = strlen(args[i]);
    gw_presence_q_t *q = hr_calloc(1, sizeof(*q));
    q->r = r;
    q->conn_id = c->id;
    q->ref = ref ? hr_json_print(ref) : NULL;
    q->room = hr_strdup(room);
    if (gw_rooms_eval(r, GW_LUA_PRESENCE, 5, args, lens, gw_rooms_presence_done, q) != 0) {
        hr_free(q->ref);
        hr_free(q->room);
        hr_free(q);
        return HR_AGAIN;
    }
    return 0;
}

/* ---- periodic refresh ---- */

/* One room's users, borrowed from the hub for the length of one refresh. */
typedef struct {
    const char **users; /* owned array of borrowed names */
    size_t n, cap;
} gw_userlist_t;

static void
gw_rooms_collect_user(const char *user, void *ud)
{
    gw_userlist_t *l = ud;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->users = hr_realloc(l->users, l->cap * sizeof(*l->users));
    }
    l->users[l->n++] = user;
}

/* One refresh script for up to GW_REFRESH_BATCH users of room. */
static void
gw_rooms_refresh_batch(gw_rooms_t *r, const char *room, const char *const *users, size_t n,
                       const char *snow, const char *sexp, const char *sttl, const char *smax)
{
    enum { KCAP = GW_ROOM_MAX + HR_USER_ID_MAX + 32 };
    char k1[GW_ROOM_MAX + 32], ch[GW_ROOM_MAX + 32], head[GW_ROOM_MAX + 64], snk[16];
    hr_proto_presence_key(k1, sizeof(k1), room, NULL);
    hr_proto_room_channel(ch, sizeof(ch), room);
    snprintf(head, sizeof(head), "{\"type\":\"joined\",\"room\":\"%s\",\"user_id\":", room);
    char *keys = hr_malloc(n * KCAP);
    const char **kept = hr_malloc(n * sizeof(*kept));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        /* A name whose key does not fit (longer than any valid user id) is skipped. */
        if (hr_proto_presence_key(keys + m * KCAP, KCAP, room, users[i]) != 0)
            kept[m++] = users[i];
    }
    snprintf(snk, sizeof(snk), "%zu", m + 2);
    int nargs = (int)(1 + 2 + m + 6 + m);
    const char **args = hr_malloc((size_t)nargs * sizeof(*args));
    size_t *lens = hr_malloc((size_t)nargs * sizeof(*lens));
    int a = 0;
    args[a++] = snk;
    args[a++] = k1;
    args[a++] = ch;
    for (size_t i = 0; i < m; i++)
        args[a++] = keys + i * KCAP;
    args[a++] = r->node_id;
    args[a++] = snow;
    args[a++] = sexp;
    args[a++] = sttl;
    args[a++] = smax;
    args[a++] = head;
    for (size_t i = 0; i < m; i++)
        args[a++] = kept[i];
    for (int i = 0; i < nargs; i++)
        lens[i] = strlen(args[i]);
    if (m > 0)
        gw_rooms_eval(r, GW_LUA_REFRESH, nargs, args, lens, gw_rooms_ignore_reply, NULL);
    hr_free(kept);
    hr_free(keys);
    hr_free(lens);
    hr_free(args);
}

/* Re-asserts every (room, user) this gateway holds in room. */
static void
gw_rooms_refresh_room(gw_rooms_t *r, const char *room)
{
    gw_userlist_t l = {NULL, 0, 0};
    gw_hub_foreach_room_user(r->o.hub, room, gw_rooms_collect_user, &l);
    uint64_t now = hr_now_ms();
    char snow[24], sexp[24], sttl[16], smax[16];
    snprintf(snow, sizeof(snow), "%llu", (unsigned long long)now);
    snprintf(sexp, sizeof(sexp), "%llu",
             (unsigned long long)(now + (uint64_t)r->o.presence_ttl_s * 1000));
    snprintf(sttl, sizeof(sttl), "%d", r->o.presence_ttl_s * 2);
    snprintf(smax, sizeof(smax), "%d", r->o.presence_events_max);
    for (size_t i = 0; i < l.n; i += GW_REFRESH_BATCH) {
        size_t n = l.n - i < GW_REFRESH_BATCH ? l.n - i : GW_REFRESH_BATCH;
        gw_rooms_refresh_batch(r, room, l.users + i, n, snow, sexp, sttl, smax);
    }
    hr_free(l.users);
}

/* The refresh slice of a room: FNV-1a of its name. */
static uint32_t
gw_rooms_slice_of(const char *room)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)room; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % GW_REFRESH_SLICES;
}

typedef struct {
    gw_rooms_t *r;
    int all; /* every room, whatever its slice */
} gw_refresh_iter_t;

static void
gw_rooms_refresh_if_due(const char *room, void *ud)
{
    gw_refresh_iter_t *it = ud;
    if (it->all || gw_rooms_slice_of(room) == it->r->slice)
        gw_rooms_refresh_room(it->r, room);
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
    /* Scripts load first; calls until their answers use EVAL (Redis may have restarted). */
    for (int i = 0; i < GW_LUA_N; i++) {
        r->sha[i][0] = '\0';
        gw_rooms_load(r, (gw_lua_id_t)i);
    }
    /* Everything at once: after an outage presence must come back within one round trip. */
    gw_refresh_iter_t it = {r, 1};
    gw_hub_foreach_room(r->o.hub, gw_rooms_refresh_if_due, &it);
}

static void
gw_rooms_refresh_fire(uv_timer_t *t)
{
    gw_rooms_t *r = t->data;
    gw_refresh_iter_t it = {r, 0};
    if (hr_redis_async_ready(r->o.redis))
        gw_hub_foreach_room(r->o.hub, gw_rooms_refresh_if_due, &it);
    r->slice = (r->slice + 1) % GW_REFRESH_SLICES;
    if (r->slice != 0)
        return;
    /* Once per period: chat messages whose copy never came back (subscription lost). */
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
    /* Each room every presence_ttl_s / 3, in GW_REFRESH_SLICES ticks. */
    uint64_t every = (uint64_t)r->o.presence_ttl_s * 1000 / 3 / GW_REFRESH_SLICES;
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
