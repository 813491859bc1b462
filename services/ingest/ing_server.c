#include "ing_server.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_http.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"
#include "herald/hr_redis.h"
#include "herald/hr_time.h"
#include "herald/hr_uuid.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <string.h>

/*
 * redis.timeout_ms: a write without a reply this long drops the connection
 * and answers 503 outcome_unknown. 10 s, above Redis's own stalls (an AOF
 * fsync that blocks writes for 2 s, a fork or a big key's expiry), so a
 * stall answers late rather than "maybe stored".
 */
const hr_cfg_field_t ing_config_fields[] = {
    {"ingest.host", HR_CFG_STR, offsetof(ing_config_t, host), "127.0.0.1", 0, 0},
    {"ingest.port", HR_CFG_INT, offsetof(ing_config_t, port), "8080", 0, 65535},
    {"ingest.drain_ms", HR_CFG_INT, offsetof(ing_config_t, drain_ms), "5000", 0, 600000},
    {"redis.url", HR_CFG_STR, offsetof(ing_config_t, redis_url), "redis://127.0.0.1:6379", 0, 0},
    {"redis.timeout_ms", HR_CFG_INT, offsetof(ing_config_t, redis_timeout_ms), "10000", 10, 600000},
    {"log.level", HR_CFG_STR, offsetof(ing_config_t, log_level), "info", 0, 0},
};
const size_t ing_config_nfields = HR_ARRAY_LEN(ing_config_fields);

/*
 * The one write of ingest, for a single notification, a fan-out and a batch
 * alike, atomic so that the live path, the durable path and the idempotency
 * record never disagree: all of it happens or none.
 *
 * KEYS[1] notifications stream
 * KEYS[2] idempotency key, or "" when the request carries no Idempotency-Key
 * ARGV[1] what the key protects: "<path>\n<body>" (hashed here), or ""
 * ARGV[2] the answer to store and replay (JSON)
 * ARGV[3] the key's TTL in seconds
 * ARGV[4] n, the number of notifications, then n groups of six:
 *         id, target field ("user_id" or "room"), target, envelope JSON,
 *         Pub/Sub channel, WebSocket frame
 * Reply: {0, ""} written; {1, answer} a replay of the key's first answer
 * (nothing written); {2, ""} the key was used with another body (nothing
 * written).
 */
static const char ing_lua_notify[] =
    "local idem = KEYS[2]\n"
    "local h\n"
    "if idem ~= '' then\n"
    "  h = redis.sha1hex(ARGV[1])\n"
    "  local v = redis.call('GET', idem)\n"
    "  if v then\n"
    "    if string.sub(v, 1, 40) == h then return {1, string.sub(v, 41)} end\n"
    "    return {2, ''}\n"
    "  end\n"
    "end\n"
    "local n = tonumber(ARGV[4])\n"
    "for i = 0, n - 1 do\n"
    "  local b = 5 + i * 6\n"
    "  redis.call('XADD', KEYS[1], '*', '" HR_FIELD_ID "', ARGV[b], ARGV[b + 1], ARGV[b + 2], "
    "'" HR_FIELD_PAYLOAD "', ARGV[b + 3])\n"
    "  redis.call('PUBLISH', ARGV[b + 4], ARGV[b + 5])\n"
    "end\n"
    "if idem ~= '' then redis.call('SET', idem, h .. ARGV[2], 'EX', ARGV[3]) end\n"
    "return {0, ''}\n";

#define ING_ARGS_FIXED 8 /* EVAL script numkeys KEYS[1] KEYS[2] ARGV[1..3] ... n */
#define ING_ARGS_PER 6

struct ing_server_s {
    struct event_base *base; /* borrowed */
    const ing_config_t *cfg; /* borrowed */
    struct evhttp *http;     /* owned */
    int port;
    hr_redis_async_t *redis; /* owned */
    hr_uuid_gen_t uuid;
    hr_http_drain_t drain; /* listener, requests in flight, stop */
    char script_sha[41];   /* SHA1 of ing_lua_notify once Redis has it; "" before */
};

/* The notifications of one request, ready for the script; strings owned. */
typedef struct {
    const char **argv; /* owned array; the strings below are owned by the slots */
    size_t *argvlen;   /* owned */
    char **owned;      /* owned: strings to free after sending */
    size_t argc, cap, nowned, count;
} ing_write_t;

/*
 * One accepted request waiting for its Redis reply; freed in the reply
 * callback. It keeps the command so that a NOSCRIPT answer (nothing was
 * written) can be sent again as EVAL.
 */
typedef struct {
    ing_server_t *srv;          /* borrowed */
    struct evhttp_request *req; /* borrowed: evhttp keeps it until we reply */
    char *answer;               /* owned: the 202 body */
    char *protected;            /* owned: path + body the key protects, or NULL */
    char *idem;                 /* owned: the idempotency key's name, "" for none */
    char ttl[16], count[24], sha[41];
    ing_write_t w;     /* owned: the notifications' arguments */
    const char **argv; /* owned array; strings borrowed from the fields above */
    size_t *argvlen;   /* owned */
    size_t argc;
    int resent; /* already sent again as EVAL after NOSCRIPT */
} ing_pending_t;

static void ing_write_free(ing_write_t *w);

static void
ing_pending_free(ing_pending_t *p)
{
    ing_write_free(&p->w);
    hr_free(p->argv);
    hr_free(p->argvlen);
    hr_free(p->answer);
    hr_free(p->protected);
    hr_free(p->idem);
    hr_free(p);
}

static void
ing_write_push(ing_write_t *w, const char *s, size_t len, int own)
{
    if (w->argc == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 64;
        w->argv = hr_realloc(w->argv, w->cap * sizeof(*w->argv));
        w->argvlen = hr_realloc(w->argvlen, w->cap * sizeof(*w->argvlen));
        w->owned = hr_realloc(w->owned, w->cap * sizeof(*w->owned));
    }
    w->argv[w->argc] = s;
    w->argvlen[w->argc++] = len;
    if (own)
        w->owned[w->nowned++] = (char *)s;
}

static void
ing_write_free(ing_write_t *w)
{
    for (size_t i = 0; i < w->nowned; i++)
        hr_free(w->owned[i]);
    hr_free(w->argv);
    hr_free(w->argvlen);
    hr_free(w->owned);
}

/*
 * Adds one notification n (with id assigned) to the write: its stream fields,
 * channel and frame.
 */
static void
ing_write_add(ing_write_t *w, const hr_notification_t *n)
{
    size_t env_len, frame_len;
    char *env = hr_proto_envelope_encode(n, &env_len);
    char *frame = hr_proto_frame_notification(env, env_len, &frame_len);
    char channel[HR_USER_ID_MAX + HR_ROOM_MAX + 32];
    size_t ch_len = n->room != NULL ? hr_proto_room_channel(channel, sizeof(channel), n->room)
                                    : hr_proto_user_channel(channel, sizeof(channel), n->user_id);
    const char *field = n->room != NULL ? HR_FIELD_ROOM : HR_FIELD_USER_ID;
    const char *target = n->room != NULL ? n->room : n->user_id;
    ing_write_push(w, hr_strdup(n->id), strlen(n->id), 1);
    ing_write_push(w, field, strlen(field), 0);
    ing_write_push(w, hr_strdup(target), strlen(target), 1);
    ing_write_push(w, env, env_len, 1);
    ing_write_push(w, hr_strndup(channel, ch_len), ch_len, 1);
    ing_write_push(w, frame, frame_len, 1);
    w->count++;
}

/*
 * Gives every notification of the parsed request r its id, adds them to the
 * write and returns its answer: {"id","created_at"} for one user or a room,
 * {"items":[{"user_id","id","created_at"},...]} for a fan-out.
 */
static cJSON *
ing_expand(ing_server_t *s, hr_proto_request_t *r, ing_write_t *w)
{
    hr_notification_t *n = &r->n;
    cJSON *a = cJSON_CreateObject();
    if (r->user_ids == NULL) {
        hr_proto_assign_id(n, &s->uuid, hr_now_ms());
        ing_write_add(w, n);
        cJSON_AddStringToObject(a, "id", n->id);
        cJSON_AddStringToObject(a, "created_at", n->created_at);
        return a;
    }
    cJSON *items = cJSON_AddArrayToObject(a, "items");
    for (size_t i = 0; i < r->nusers; i++) {
        n->user_id = r->user_ids[i];
        hr_proto_assign_id(n, &s->uuid, hr_now_ms());
        ing_write_add(w, n);
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "user_id", n->user_id);
        cJSON_AddStringToObject(it, "id", n->id);
        cJSON_AddStringToObject(it, "created_at", n->created_at);
        cJSON_AddItemToArray(items, it);
    }
    n->user_id = NULL; /* borrowed from user_ids */
    return a;
}

static void
ing_script_loaded(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    ing_server_t *s = privdata;
    redisReply *r = reply;
    if (r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40)
        memcpy(s->script_sha, r->str, 41);
    else
        hr_log_warn("script_load_failed", "error=\"%s\"", r ? r->str : "connection lost");
}

/* SCRIPT LOAD on every (re)connect; until it answers, requests use EVAL. */
static void
ing_load_script(ing_server_t *s)
{
    const char *argv[] = {"SCRIPT", "LOAD", ing_lua_notify};
    size_t argvlen[] = {6, 4, sizeof(ing_lua_notify) - 1};
    hr_redis_async_argv(s->redis, ing_script_loaded, s, 3, argv, argvlen);
}

static void
ing_redis_state(hr_redis_async_t *r, int ready, void *ud)
{
    HR_UNUSED(r);
    ing_server_t *s = ud;
    s->script_sha[0] = '\0';
    if (ready)
        ing_load_script(s);
}

static void
ing_notify_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    ing_pending_t *p = privdata;
    ing_server_t *s = p->srv;
    redisReply *r = reply;

    if (r == NULL && hr_redis_async_lost_unsent(s->redis)) {
        /* The command never reached Redis whole: nothing was stored. */
        hr_log_warn("publish_failed", "count=%zu sent=0 error=\"redis connection lost\"",
                    p->w.count);
        hr_http_send_error(p->req, 503, HR_E_UNAVAILABLE,
                           "redis connection lost before the write was sent; nothing was stored: "
                           "retry");
    } else if (r == NULL) {
        /* Sent, no answer (stall past redis.timeout_ms, or the connection dropped). */
        hr_log_warn("publish_failed", "count=%zu sent=1 error=\"no reply from redis\"", p->w.count);
        hr_http_send_error(p->req, 503, HR_E_OUTCOME_UNKNOWN,
                           "redis did not answer; the notification may be stored: retry with the "
                           "same Idempotency-Key (a retry without one may store it twice)");
    } else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && !p->resent) {
        /*
         * The script cache was flushed (SCRIPT FLUSH, a restart, a failover):
         * nothing was written, so send the same command again with the
         * script's text, and load it again once for the requests to come.
         */
        if (s->script_sha[0] != '\0') {
            hr_log_warn("script_missing", "%s", "reloading");
            s->script_sha[0] = '\0';
            ing_load_script(s);
        }
        p->resent = 1;
        p->argv[0] = "EVAL";
        p->argvlen[0] = 4;
        p->argv[1] = ing_lua_notify;
        p->argvlen[1] = sizeof(ing_lua_notify) - 1;
        if (hr_redis_async_argv(s->redis, ing_notify_done, p, (int)p->argc, p->argv, p->argvlen) ==
            0)
            return;
        hr_http_send_error(p->req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
    } else if (r->type == REDIS_REPLY_ERROR) {
        hr_log_error("publish_failed", "count=%zu error=\"%s\"", p->w.count, r->str);
        hr_http_send_error(p->req, 503, HR_E_UNAVAILABLE, "redis refused the write; retry");
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_INTEGER) {
        hr_log_error("publish_failed", "count=%zu error=\"unexpected script reply\"", p->w.count);
        hr_http_send_error(p->req, 500, HR_E_INTERNAL, "unexpected reply from redis");
    } else if (r->element[0]->integer == 1 && r->element[1]->type == REDIS_REPLY_STRING) {
        hr_log_debug("idempotent_replay", "len=%zu", r->element[1]->len);
        hr_http_send_json(p->req, 202, r->element[1]->str, r->element[1]->len);
    } else if (r->element[0]->integer == 2) {
        hr_http_send_error(p->req, 409, HR_E_IDEMPOTENCY_CONFLICT,
                           "this Idempotency-Key was used with a different request body");
    } else {
        hr_http_send_json(p->req, 202, p->answer, strlen(p->answer));
    }
    ing_pending_free(p);
    hr_http_drain_release(&s->drain);
}

/*
 * Reads Idempotency-Key and X-Herald-Client into the idempotency key name
 * (owned, "" without Idempotency-Key). Returns 0, or HR_DECLINED after
 * answering 400.
 */
static int
ing_idempotency_key(struct evhttp_request *req, char **out)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *key = evhttp_find_header(h, HR_HEADER_IDEMPOTENCY_KEY);
    const char *client = evhttp_find_header(h, HR_HEADER_CLIENT);
    *out = NULL;
    if (client != NULL && !hr_proto_token_valid(client, strlen(client), HR_CLIENT_MAX)) {
        hr_http_send_error(req, 400, HR_E_INVALID_FIELD,
                           HR_HEADER_CLIENT " must be 1-128 visible ASCII characters");
        return HR_DECLINED;
    }
    if (key == NULL) {
        *out = hr_strdup("");
        return 0;
    }
    if (!hr_proto_token_valid(key, strlen(key), HR_IDEMPOTENCY_KEY_MAX)) {
        hr_http_send_error(req, 400, HR_E_INVALID_FIELD,
                           HR_HEADER_IDEMPOTENCY_KEY " must be 1-255 visible ASCII characters");
        return HR_DECLINED;
    }
    const char *scope = client != NULL ? client : HR_CLIENT_DEFAULT;
    size_t cap = strlen(HR_KEY_IDEMPOTENCY_PREFIX) + strlen(scope) + strlen(key) + 32;
    *out = hr_malloc(cap);
    /* The scope's length first: "a:b" + "c" and "a" + "b:c" stay two keys. */
    snprintf(*out, cap, "%s%zu:%s:%s", HR_KEY_IDEMPOTENCY_PREFIX, strlen(scope), scope, key);
    return 0;
}

/*
 * Sends the write w (taken: emptied) with answer a (consumed) for req. The
 * idempotency key (borrowed, "" for none) protects path + body.
 */
static void
ing_send(ing_server_t *s, struct evhttp_request *req, ing_write_t *w, cJSON *a, const char *idem,
         const char *path, const char *body, size_t len)
{
    char *answer = hr_json_print(a);
    cJSON_Delete(a);
    if (s->drain.draining || !hr_redis_async_ready(s->redis)) {
        hr_free(answer);
        hr_http_send_error(req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
        return;
    }
    ing_pending_t *p = hr_calloc(1, sizeof(*p));
    p->srv = s;
    p->req = req;
    p->answer = answer;
    p->idem = hr_strdup(idem);
    p->w = *w;
    memset(w, 0, sizeof(*w));
    size_t plen = 0;
    if (idem[0] != '\0') {
        size_t pl = strlen(path);
        plen = pl + 1 + len;
        p->protected = hr_malloc(plen + 1);
        memcpy(p->protected, path, pl);
        p->protected[pl] = '\n';
        memcpy(p->protected + pl + 1, body, len);
    }
    snprintf(p->ttl, sizeof(p->ttl), "%d", HR_IDEMPOTENCY_TTL_S);
    snprintf(p->count, sizeof(p->count), "%zu", p->w.count);
    /* EVALSHA once the script is loaded: 40 bytes instead of the script per request. */
    int sha = s->script_sha[0] != '\0';
    if (sha)
        memcpy(p->sha, s->script_sha, sizeof(p->sha));
    const char *head[ING_ARGS_FIXED + 1] = {sha ? "EVALSHA" : "EVAL",
                                            sha ? p->sha : ing_lua_notify,
                                            "2",
                                            HR_STREAM_NOTIFICATIONS,
                                            p->idem,
                                            p->protected ? p->protected : "",
                                            answer,
                                            p->ttl,
                                            p->count};
    size_t headlen[ING_ARGS_FIXED + 1] = {sha ? 7 : 4,
                                          sha ? 40 : sizeof(ing_lua_notify) - 1,
                                          1,
                                          strlen(HR_STREAM_NOTIFICATIONS),
                                          strlen(idem),
                                          plen,
                                          strlen(answer),
                                          strlen(p->ttl),
                                          strlen(p->count)};
    p->argc = ING_ARGS_FIXED + 1 + p->w.argc;
    p->argv = hr_malloc(p->argc * sizeof(*p->argv));
    p->argvlen = hr_malloc(p->argc * sizeof(*p->argvlen));
    memcpy(p->argv, head, sizeof(head));
    memcpy(p->argvlen, headlen, sizeof(headlen));
    memcpy(p->argv + ING_ARGS_FIXED + 1, p->w.argv, p->w.argc * sizeof(*p->argv));
    memcpy(p->argvlen + ING_ARGS_FIXED + 1, p->w.argvlen, p->w.argc * sizeof(*p->argvlen));
    if (hr_redis_async_argv(s->redis, ing_notify_done, p, (int)p->argc, p->argv, p->argvlen) != 0) {
        ing_pending_free(p);
        hr_http_send_error(req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
        return;
    }
    s->drain.inflight++;
}

/* Content-Type, body and idempotency headers; 0 or HR_DECLINED (answered). */
static int
ing_preamble(struct evhttp_request *req, const char **body, size_t *len, char **idem)
{
    if (!hr_http_is_json(req)) {
        hr_http_send_error(req, 415, HR_E_UNSUPPORTED_MEDIA,
                           "Content-Type must be application/json");
        return HR_DECLINED;
    }
    *body = hr_http_body(req, len);
    return ing_idempotency_key(req, idem);
}

static void
ing_handle_post(ing_server_t *s, struct evhttp_request *req)
{
    hr_proto_err_t e;
    hr_proto_request_t r;
    const char *body;
    size_t len;
    char *idem;

    if (ing_preamble(req, &body, &len, &idem) != 0)
        return;
    if (hr_proto_parse_targets(body, len, HR_BODY_MAX, &r, &e) != 0) {
        hr_log_debug("request_refused", "code=%s", e.code);
        hr_http_send_error(req, e.status, e.code, e.message);
        hr_free(idem);
        return;
    }
    if (s->drain.draining || !hr_redis_async_ready(s->redis)) {
        hr_proto_request_clear(&r);
        hr_free(idem);
        hr_http_send_error(req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
        return;
    }
    ing_write_t w = {0};
    cJSON *a = ing_expand(s, &r, &w);
    ing_send(s, req, &w, a, idem, "/notifications", body, len);
    ing_write_free(&w);
    hr_proto_request_clear(&r);
    hr_free(idem);
}

static cJSON *
ing_item_error(const hr_proto_err_t *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(err, "code", e->code);
    cJSON_AddStringToObject(err, "message", e->message);
    return o;
}

/*
 * POST /notifications/batch: every item is validated on its own; the valid
 * ones are written in one script call. 202 with per-item results when at
 * least one was accepted, 400 with the same results when none was.
 */
static void
ing_handle_batch(ing_server_t *s, struct evhttp_request *req)
{
    hr_proto_err_t e;
    const char *body;
    size_t len, n;
    char *idem, **items;
    size_t *lens;

    if (ing_preamble(req, &body, &len, &idem) != 0)
        return;
    if (hr_proto_parse_batch(body, len, &items, &lens, &n, &e) != 0) {
        hr_http_send_error(req, e.status, e.code, e.message);
        hr_free(idem);
        return;
    }
    hr_proto_request_t *reqs = hr_calloc(n, sizeof(*reqs));
    int *ok = hr_calloc(n, sizeof(*ok));
    hr_proto_err_t *errs = hr_calloc(n, sizeof(*errs));
    cJSON *a = cJSON_CreateObject();
    cJSON *results = cJSON_CreateArray();
    size_t accepted = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        if (hr_proto_parse_targets(items[i], lens[i], HR_BODY_MAX, &reqs[i], &errs[i]) == 0) {
            ok[i] = 1;
            accepted++;
            total += reqs[i].user_ids != NULL ? reqs[i].nusers : 1;
        }
    }
    if (total > HR_FANOUT_MAX) {
        hr_http_send_error(req, 400, HR_E_INVALID_FIELD,
                           "the batch expands to more than 1000 notifications");
    } else if (accepted > 0 && (s->drain.draining || !hr_redis_async_ready(s->redis))) {
        hr_http_send_error(req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
    } else {
        ing_write_t w = {0};
        for (size_t i = 0; i < n; i++) {
            if (ok[i]) {
                cJSON_AddItemToArray(results, ing_expand(s, &reqs[i], &w));
            } else {
                cJSON_AddItemToArray(results, ing_item_error(&errs[i]));
            }
        }
        cJSON_AddNumberToObject(a, "accepted", (double)accepted);
        cJSON_AddNumberToObject(a, "rejected", (double)(n - accepted));
        cJSON_AddItemToObject(a, "results", results);
        results = NULL;
        if (accepted > 0) {
            ing_send(s, req, &w, a, idem, "/notifications/batch", body, len);
            a = NULL;
        } else {
            cJSON *err = cJSON_AddObjectToObject(a, "error");
            cJSON_AddStringToObject(err, "code", HR_E_INVALID_FIELD);
            cJSON_AddStringToObject(err, "message", "no notification of the batch is valid");
            char *out = hr_json_print(a);
            hr_http_send_json(req, 400, out, strlen(out));
            hr_free(out);
        }
        ing_write_free(&w);
    }
    cJSON_Delete(results);
    cJSON_Delete(a);
    for (size_t i = 0; i < n; i++)
        if (ok[i])
            hr_proto_request_clear(&reqs[i]);
    hr_free(reqs);
    hr_free(ok);
    hr_free(errs);
    hr_proto_batch_free(items, lens, n);
    hr_free(idem);
}

static void
ing_handle_health(ing_server_t *s, struct evhttp_request *req)
{
    int ok = hr_redis_async_ready(s->redis) && !s->drain.draining;
    char body[128];
    int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"redis\":\"%s\"}",
                     ok ? "ok" : "unavailable", hr_redis_async_ready(s->redis) ? "up" : "down");
    hr_http_send_json(req, ok ? 200 : 503, body, (size_t)n);
}

static void
ing_route(struct evhttp_request *req, void *arg)
{
    ing_server_t *s = arg;
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    char *path = hr_http_path(req);

    if (strcmp(path, "/notifications") == 0) {
        if (m == EVHTTP_REQ_POST)
            ing_handle_post(s, req);
        else
            hr_http_send_error(req, 405, HR_E_METHOD, "use POST");
    } else if (strcmp(path, "/notifications/batch") == 0) {
        if (m == EVHTTP_REQ_POST)
            ing_handle_batch(s, req);
        else
            hr_http_send_error(req, 405, HR_E_METHOD, "use POST");
    } else if (strcmp(path, "/healthz") == 0) {
        if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD)
            ing_handle_health(s, req);
        else
            hr_http_send_error(req, 405, HR_E_METHOD, "use GET");
    } else {
        hr_http_send_error(req, 404, HR_E_NOT_FOUND, "no such endpoint");
    }
    hr_free(path);
}

ing_server_t *
ing_server_create(struct event_base *base, const ing_config_t *cfg, char *err, size_t errlen)
{
    ing_server_t *s = hr_calloc(1, sizeof(*s));
    s->base = base;
    s->cfg = cfg;
    hr_uuid_gen_init(&s->uuid);

    hr_redis_async_opts_t ro = {.url = cfg->redis_url,
                                .name = "ingest",
                                .command_timeout_ms = cfg->redis_timeout_ms,
                                .on_state = ing_redis_state,
                                .ud = s};
    s->redis = hr_redis_async_create(&hr_loop_ops_libevent, base, &ro, err, errlen);
    if (s->redis == NULL) {
        hr_free(s);
        return NULL;
    }
    s->http = hr_http_listen(base, cfg->host, cfg->port, HR_BATCH_BODY_MAX, &s->port,
                             &s->drain.listener, err, errlen);
    if (s->http == NULL) {
        hr_redis_async_destroy(s->redis);
        hr_free(s);
        return NULL;
    }
    evhttp_set_gencb(s->http, ing_route, s);
    s->drain.base = base;
    s->drain.http = s->http;
    return s;
}

int
ing_server_port(const ing_server_t *s)
{
    return s->port;
}

void
ing_server_drain(ing_server_t *s)
{
    hr_http_drain_begin(&s->drain, s->cfg->drain_ms);
}

void
ing_server_destroy(ing_server_t *s)
{
    if (s == NULL)
        return;
    hr_http_drain_clear(&s->drain);
    hr_redis_async_destroy(s->redis);
    evhttp_free(s->http);
    hr_free(s);
}
