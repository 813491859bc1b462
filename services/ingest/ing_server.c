#include "ing_server.h"
#include "hr_proto.h"
#include "ing_auth.h"
#include "ing_revoke.h"
#include "ing_metrics.h"
#include "ing_write.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_httpd.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"
#include "herald/hr_redis.h"
#include "herald/hr_sha1.h"
#include "herald/hr_time.h"
#include "herald/hr_uuid.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ING_STR2(x) #x
#define ING_STR(x) ING_STR2(x)

/*
 * redis.timeout_ms: a write without a reply this long drops the connection
 * and answers 503 outcome_unknown. 10 s, above Redis's own stalls (an AOF
 * fsync that blocks writes for 2 s, a fork or a big key's expiry), so a
 * stall answers late rather than "maybe stored".
 */
const hr_cfg_field_t ing_config_fields[] = {
    {"ingest.host", HR_CFG_STR, offsetof(ing_config_t, host), "127.0.0.1", 0, 0},
    {"ingest.port", HR_CFG_INT, offsetof(ing_config_t, port), "8080", 0, 65535},
    {"ingest.reuseport", HR_CFG_BOOL, offsetof(ing_config_t, reuseport), "false", 0, 0},
    {"ingest.drain_ms", HR_CFG_INT, offsetof(ing_config_t, drain_ms), "5000", 0, 600000},
    /* 0: from the file limit (a quarter of it, at most 256, left to everything else). */
    {"ingest.max_connections", HR_CFG_INT, offsetof(ing_config_t, max_connections), "0", 0,
     10000000},
    {"ingest.header_timeout_ms", HR_CFG_INT, offsetof(ing_config_t, header_timeout_ms),
     ING_STR(HR_HTTP_HEADER_TIMEOUT_MS), 100, 600000},
    /* A keep-alive connection idle, or a body or an answer stalled, this long is closed. */
    {"ingest.idle_timeout_ms", HR_CFG_INT, offsetof(ing_config_t, idle_timeout_ms), "60000", 100,
     3600000},
    {"redis.url", HR_CFG_STR, offsetof(ing_config_t, redis_url), "redis://127.0.0.1:6379", 0, 0},
    {"redis.timeout_ms", HR_CFG_INT, offsetof(ing_config_t, redis_timeout_ms), "10000", 10, 600000},
    {"log.level", HR_CFG_STR, offsetof(ing_config_t, log_level), "info", 0, 0},
    /* Development only: no Authorization header = the caller "anonymous" (proto/auth.md). */
    {"ingest.allow_anonymous", HR_CFG_BOOL, offsetof(ing_config_t, allow_anonymous), "false", 0, 0},
    {"auth.revocation_ttl_s", HR_CFG_INT, offsetof(ing_config_t, revocation_ttl_s),
     ING_STR(HR_REVOCATION_TTL_S), 60, 315360000},
    /* One info line per answered request (event=request); false saves a write() each. */
    {"ingest.access_log", HR_CFG_BOOL, offsetof(ing_config_t, access_log), "true", 0, 0},
};
const size_t ing_config_nfields = HR_ARRAY_LEN(ing_config_fields);

/*
 * The one write of ingest, for a single notification, a fan-out and a batch
 * alike, atomic so that the live path, the durable path and the idempotency
 * record never disagree: all of it happens or none. The Pub/Sub channel and
 * the WebSocket frame are built here from the target and the envelope, so
 * each envelope crosses the wire once.
 *
 * KEYS[1] notifications stream
 * KEYS[2] idempotency key, or "" when the request carries no Idempotency-Key
 * ARGV[1] sha1hex("<path>\n<body>") the key protects (hashed by ingest), or ""
 * ARGV[2] the answer to store and replay (JSON), or "" without an idempotency key
 * ARGV[3] the key's TTL in seconds
 * ARGV[4] n, the number of notifications
 * ARGV[5] the request id (X-Request-Id), stored in each entry; then n groups of four:
 *         id, target field ("user_id" or "room"), target, envelope JSON
 * Reply: 0 written (a plain integer: one reply object for the common
 * case); {1, answer} a replay of the key's first answer (nothing written);
 * 2 the key was used with another body (nothing written).
 *
 * ING_FRAME_HEAD is replaced at startup by the frame's head as
 * hr_proto_frame_notification() writes it, so the frame has one definition.
 */
static const char ing_lua_template[] =
    "local idem = KEYS[2]\n"
    "if idem ~= '' then\n"
    "  local v = redis.call('GET', idem)\n"
    "  if v then\n"
    "    if string.sub(v, 1, 40) == ARGV[1] then return {1, string.sub(v, 41)} end\n"
    "    return 2\n"
    "  end\n"
    "end\n"
    "local n = tonumber(ARGV[4])\n"
    "for i = 0, n - 1 do\n"
    "  local b = 6 + i * 4\n"
    "  local field, target, env = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]\n"
    "  redis.call('XADD', KEYS[1], '*', '" HR_FIELD_ID "', ARGV[b], field, target, "
    "'" HR_FIELD_PAYLOAD "', env, '" HR_FIELD_REQUEST_ID "', ARGV[5])\n"
    "  local ch = (field == '" HR_FIELD_ROOM "' and '" HR_CHANNEL_ROOM_PREFIX
    "' or '" HR_CHANNEL_USER_PREFIX "') .. target\n"
    "  redis.call('PUBLISH', ch, 'ING_FRAME_HEAD' .. env .. 'ING_FRAME_TAIL')\n"
    "end\n"
    "if idem ~= '' then redis.call('SET', idem, ARGV[1] .. ARGV[2], 'EX', ARGV[3]) end\n"
    "return 0\n";

/* EVAL script numkeys KEYS[1] KEYS[2] ARGV[1..5] */
enum {
    ING_ARG_CMD,
    ING_ARG_SCRIPT,
    ING_ARG_NUMKEYS,
    ING_ARG_STREAM,
    ING_ARG_IDEM,
    ING_ARG_HASH,
    ING_ARG_ANSWER,
    ING_ARG_TTL,
    ING_ARG_COUNT,
    ING_ARG_REQUEST_ID,
    ING_ARGS_FIXED
};

struct ing_server_s {
    struct event_base *base; /* borrowed */
    const ing_config_t *cfg; /* borrowed */
    hr_httpd_t *http;        /* owned */
    hr_redis_async_t *redis; /* owned */
    hr_uuid_gen_t uuid;
    hr_http_drain_t drain; /* listener, requests in flight, stop */
    char *script;          /* owned: ing_lua_template with the frame filled in */
    size_t script_len;
    char script_sha[41];   /* SHA1 of script once Redis has it; "" before */
    ing_auth_t *auth;      /* owned: API keys, scopes, rates */
    ing_revoke_t *revoke;  /* owned: /users/{id}/disconnect and /revoke */
    ing_metrics_t metrics; /* registry, request ids, access log (owned) */
};

/*
 * One accepted request, from parsing to its Redis reply; freed in the reply
 * callback. It keeps the command so that a NOSCRIPT answer (nothing was
 * written) can be sent again as EVAL. Its buffers start inside it, so a
 * single notification costs no allocation beyond this struct.
 */
typedef struct {
    ing_server_t *srv;   /* borrowed */
    hr_httpd_req_t *req; /* borrowed: valid until answered */
    ing_args_t args;     /* owned: the command */
    ing_buf_t answer;    /* owned: the 202 body */
    char answer_inl[88]; /* {"id":…,"created_at":…} is 85 bytes */
    uint32_t count;      /* notifications written (at most HR_FANOUT_MAX) */
    int resent;          /* already sent again as EVAL after NOSCRIPT */
    uint64_t start_us;   /* hr_mono_us when the request arrived */
    const char *key;     /* borrowed: the caller's key name (ing_auth) */
} ing_pending_t;

/* glibc serves requests up to 1008 bytes from its small bins without consolidating. */
_Static_assert(sizeof(ing_pending_t) <= 1008, "a pending request must stay a small chunk");

static ing_pending_t *
ing_pending_new(ing_server_t *s, hr_httpd_req_t *req)
{
    ing_pending_t *p = hr_malloc(sizeof(*p));
    p->srv = s;
    p->req = req;
    ing_args_init(&p->args);
    ing_buf_init(&p->answer, p->answer_inl, sizeof(p->answer_inl));
    p->count = 0;
    p->resent = 0;
    p->start_us = s->metrics.route_start_us;
    p->key = s->metrics.key;
    for (int i = 0; i < ING_ARGS_FIXED; i++)
        ing_args_open(&p->args); /* filled by ing_send() */
    return p;
}

static void
ing_pending_free(ing_pending_t *p)
{
    ing_args_free(&p->args);
    ing_buf_free(&p->answer);
    hr_free(p);
}

/* Adds notification n (id assigned) to the command: id, field, target, envelope. */
static void
ing_add(ing_pending_t *p, const hr_notification_t *n)
{
    const char *field = n->room != NULL ? HR_FIELD_ROOM : HR_FIELD_USER_ID;
    const char *target = n->room != NULL ? n->room : n->user_id;
    ing_args_push(&p->args, n->id, strlen(n->id));
    ing_args_push(&p->args, field, strlen(field));
    ing_args_push(&p->args, target, strlen(target));
    size_t i = ing_args_open(&p->args);
    ing_envelope(&p->args.bytes, n);
    ing_args_close(&p->args, i);
    p->count++;
}

/*
 * Gives every notification of the parsed request r its id, adds them to the
 * command and appends its answer to p->answer: {"id","created_at"} for one
 * user or a room, {"items":[{"user_id","id","created_at"},...]} for a fan-out.
 */
static void
ing_expand(ing_server_t *s, hr_proto_request_t *r, ing_pending_t *p)
{
    hr_notification_t *n = &r->n;
    ing_buf_t *a = &p->answer;
    if (r->user_ids == NULL) {
        hr_proto_assign_id(n, &s->uuid, hr_now_ms());
        ing_add(p, n);
        ing_buf_adds(a, "{\"id\":\"");
        ing_buf_adds(a, n->id);
        ing_buf_adds(a, "\",\"created_at\":\"");
        ing_buf_adds(a, n->created_at);
        ing_buf_adds(a, "\"}");
        return;
    }
    ing_buf_adds(a, "{\"items\":[");
    for (size_t i = 0; i < r->nusers; i++) {
        n->user_id = r->user_ids[i];
        hr_proto_assign_id(n, &s->uuid, hr_now_ms());
        ing_add(p, n);
        ing_buf_adds(a, i == 0 ? "{\"user_id\":" : ",{\"user_id\":");
        ing_json_str(a, n->user_id);
        ing_buf_adds(a, ",\"id\":\"");
        ing_buf_adds(a, n->id);
        ing_buf_adds(a, "\",\"created_at\":\"");
        ing_buf_adds(a, n->created_at);
        ing_buf_adds(a, "\"}");
    }
    ing_buf_adds(a, "]}");
    n->user_id = NULL; /* borrowed from user_ids */
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
    const char *argv[] = {"SCRIPT", "LOAD", s->script};
    size_t argvlen[] = {6, 4, s->script_len};
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

/*
 * Answers the request of p after its Redis reply, counted (ing_metrics).
 * Every 5xx here is the write failing in Redis (lost, unanswered, refused).
 */
static void
ing_reply_error(ing_pending_t *p, int status, const char *code, const char *message)
{
    if (status >= 500)
        hr_counter_inc(p->srv->metrics.redis_errors);
    p->srv->metrics.key = p->key;
    ing_metrics_send_error(&p->srv->metrics, p->req, p->start_us, status, code, message);
}

static void
ing_reply_json(ing_pending_t *p, int status, const char *json, size_t len)
{
    p->srv->metrics.key = p->key;
    ing_metrics_send_json(&p->srv->metrics, p->req, p->start_us, status, json, len);
}

/* Refuses the request being routed, counted by its error code (ing_metrics). */
static void
ing_refuse(ing_server_t *s, hr_httpd_req_t *req, int status, const char *code, const char *message)
{
    ing_metrics_send_error(&s->metrics, req, s->metrics.route_start_us, status, code, message);
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
        hr_log_warn("publish_failed", "count=%u sent=0 error=\"redis connection lost\"",
                    (unsigned)p->count);
        ing_reply_error(p, 503, HR_E_UNAVAILABLE,
                        "redis connection lost before the write was sent; nothing was stored: "
                        "retry");
    } else if (r == NULL) {
        /* Sent, no answer (stall past redis.timeout_ms, or the connection dropped). */
        hr_log_warn("publish_failed", "count=%u sent=1 error=\"no reply from redis\"",
                    (unsigned)p->count);
        ing_reply_error(p, 503, HR_E_OUTCOME_UNKNOWN,
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
        p->args.argv[ING_ARG_CMD] = "EVAL";
        p->args.argvlen[ING_ARG_CMD] = 4;
        p->args.argv[ING_ARG_SCRIPT] = s->script;
        p->args.argvlen[ING_ARG_SCRIPT] = s->script_len;
        if (hr_redis_async_argv(s->redis, ing_notify_done, p, (int)p->args.n, p->args.argv,
                                p->args.argvlen) == 0)
            return;
        ing_reply_error(p, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
    } else if (r->type == REDIS_REPLY_ERROR) {
        hr_log_error("publish_failed", "count=%u error=\"%s\"", (unsigned)p->count, r->str);
        ing_reply_error(p, 503, HR_E_UNAVAILABLE, "redis refused the write; retry");
    } else if (r->type == REDIS_REPLY_INTEGER && r->integer == 0) {
        hr_counter_add(s->metrics.accepted, p->count);
        ing_reply_json(p, 202, p->answer.p, p->answer.len);
    } else if (r->type == REDIS_REPLY_INTEGER && r->integer == 2) {
        ing_reply_error(p, 409, HR_E_IDEMPOTENCY_CONFLICT,
                        "this Idempotency-Key was used with a different request body");
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
               r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1 &&
               r->element[1]->type == REDIS_REPLY_STRING) {
        hr_log_debug("idempotent_replay", "len=%zu", r->element[1]->len);
        hr_counter_inc(s->metrics.replays);
        ing_reply_json(p, 202, r->element[1]->str, r->element[1]->len);
    } else {
        hr_log_error("publish_failed", "count=%u error=\"unexpected script reply\"",
                     (unsigned)p->count);
        ing_reply_error(p, 500, HR_E_INTERNAL, "unexpected reply from redis");
    }
    ing_pending_free(p);
    hr_http_drain_release(&s->drain);
}

/*
 * Checks Idempotency-Key and X-Herald-Client (NULL: absent) and writes the idempotency key name
 * (argument ING_ARG_IDEM of p, "" without Idempotency-Key), scoped to the caller's API key
 * name. Returns 0, or HR_DECLINED after answering 400.
 */
static int
ing_idempotency_key(hr_httpd_req_t *req, ing_pending_t *p, const char *key, const char *client,
                    const char *caller, int *keyed)
{
    *keyed = 0;
    if (client != NULL && !hr_proto_token_valid(client, strlen(client), HR_CLIENT_MAX)) {
        ing_refuse(p->srv, req, 400, HR_E_INVALID_FIELD,
                   HR_HEADER_CLIENT " must be 1-128 visible ASCII characters");
        return HR_DECLINED;
    }
    if (key == NULL)
        return 0;
    if (!hr_proto_token_valid(key, strlen(key), HR_IDEMPOTENCY_KEY_MAX)) {
        ing_refuse(p->srv, req, 400, HR_E_INVALID_FIELD,
                   HR_HEADER_IDEMPOTENCY_KEY " must be 1-255 visible ASCII characters");
        return HR_DECLINED;
    }
    const char *scope = client != NULL ? client : HR_CLIENT_DEFAULT;
    char head[32];
    /*
     * The scope is "<key name>/<client>" (names have no "/"), so two API keys
     * never share a record; its length first: "a:b" + "c" and "a" + "b:c"
     * stay two keys.
     */
    int hl = snprintf(head, sizeof(head), "%zu:", strlen(caller) + 1 + strlen(scope));
    ing_buf_t *b = &p->args.bytes;
    p->args.arg[ING_ARG_IDEM].off = b->len;
    ing_buf_adds(b, HR_KEY_IDEMPOTENCY_PREFIX);
    ing_buf_add(b, head, (size_t)hl);
    ing_buf_adds(b, caller);
    ing_buf_add(b, "/", 1);
    ing_buf_adds(b, scope);
    ing_buf_add(b, ":", 1);
    ing_buf_adds(b, key);
    p->args.len[ING_ARG_IDEM] = b->len - p->args.arg[ING_ARG_IDEM].off;
    *keyed = 1;
    return 0;
}

/*
 * Sends p (taken) for its request. With keyed, the idempotency key protects
 * path + body: their SHA-1 goes to the script.
 */
static void
ing_send(ing_server_t *s, ing_pending_t *p, int keyed, const char *path, const char *body,
         size_t len)
{
    hr_httpd_req_t *req = p->req;
    if (s->drain.draining || !hr_redis_async_ready(s->redis)) {
        ing_pending_free(p);
        ing_refuse(s, req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
        return;
    }
    ing_args_t *a = &p->args;
    if (keyed) {
        hr_sha1_t c;
        uint8_t d[HR_SHA1_LEN];
        char hex[HR_SHA1_HEX_LEN];
        hr_sha1_init(&c);
        hr_sha1_update(&c, path, strlen(path));
        hr_sha1_update(&c, "\n", 1);
        hr_sha1_update(&c, body, len);
        hr_sha1_final(&c, d);
        hr_sha1_hex(d, hex);
        ing_args_set(a, ING_ARG_HASH, hex, 40);
    }
    char count[24];
    ing_args_set(a, ING_ARG_COUNT, count, ing_u64(count, p->count));
    /* The answer is stored only under an Idempotency-Key: without one it need not travel. */
    ing_args_set(a, ING_ARG_ANSWER, keyed ? p->answer.p : "", keyed ? p->answer.len : 0);
    const char *rid = ing_metrics_request_id(req);
    ing_args_set(a, ING_ARG_REQUEST_ID, rid, strlen(rid));
    ing_args_finish(a);
    /* EVALSHA once the script is loaded: 40 bytes instead of the script per request. */
    int sha = s->script_sha[0] != '\0';
    a->argv[ING_ARG_CMD] = sha ? "EVALSHA" : "EVAL";
    a->argvlen[ING_ARG_CMD] = sha ? 7 : 4;
    a->argv[ING_ARG_SCRIPT] = sha ? s->script_sha : s->script;
    a->argvlen[ING_ARG_SCRIPT] = sha ? 40 : s->script_len;
    a->argv[ING_ARG_NUMKEYS] = "2";
    a->argvlen[ING_ARG_NUMKEYS] = 1;
    a->argv[ING_ARG_STREAM] = HR_STREAM_NOTIFICATIONS;
    a->argvlen[ING_ARG_STREAM] = sizeof(HR_STREAM_NOTIFICATIONS) - 1;
    a->argv[ING_ARG_TTL] = ING_STR(HR_IDEMPOTENCY_TTL_S);
    a->argvlen[ING_ARG_TTL] = sizeof(ING_STR(HR_IDEMPOTENCY_TTL_S)) - 1;
    /* Formatted here in one pass: hiredis's own formatting is a printf per argument. */
    char stack[2048];
    ing_buf_t resp;
    ing_buf_init(&resp, stack, sizeof(stack));
    ing_resp_format(&resp, a->n, a->argv, a->argvlen);
    int rc = hr_redis_async_formatted(s->redis, ing_notify_done, p, resp.p, resp.len);
    ing_buf_free(&resp);
    if (rc != 0) {
        ing_pending_free(p);
        ing_refuse(s, req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
        return;
    }
    s->drain.inflight++;
}

/*
 * Content-Type, body and idempotency headers; returns the request's pending
 * state, or NULL after answering.
 */
static ing_pending_t *
ing_preamble(ing_server_t *s, hr_httpd_req_t *req, const ing_caller_t *c, const char **body,
             size_t *len, int *keyed)
{
    /* The three headers ingest reads, in one pass (the first of each, as hr_httpd_header). */
    const char *ct = NULL, *key = NULL, *client = NULL;
    for (size_t i = 0, n = hr_httpd_nheaders(req); i < n; i++) {
        const char *hn, *hv;
        hr_httpd_header_at(req, i, &hn, &hv);
        const char **slot = NULL, *name = NULL;
        switch (hn[0] | 0x20) {
        case 'c':
            slot = &ct, name = "Content-Type";
            break;
        case 'i':
            slot = &key, name = HR_HEADER_IDEMPOTENCY_KEY;
            break;
        case 'x':
            slot = &client, name = HR_HEADER_CLIENT;
            break;
        }
        if (slot != NULL && *slot == NULL && strcasecmp(hn, name) == 0)
            *slot = hv;
    }
    if (!hr_http_json_type(ct)) {
        ing_refuse(s, req, 415, HR_E_UNSUPPORTED_MEDIA, "Content-Type must be application/json");
        return NULL;
    }
    *body = hr_httpd_body(req, len);
    ing_pending_t *p = ing_pending_new(s, req);
    if (ing_idempotency_key(req, p, key, client, c->name, keyed) != 0) {
        ing_pending_free(p);
        return NULL;
    }
    return p;
}

/* 400 json_too_deep when body nests deeper than max; returns HR_DECLINED then. */
static int
ing_depth_check(hr_httpd_req_t *req, const char *body, size_t len, int max)
{
    if (!hr_json_deeper_than(body, len, max))
        return 0;
    char msg[96];
    snprintf(msg, sizeof(msg), "objects and arrays nest more than %d deep", HR_JSON_DEPTH_MAX);
    hr_httpd_send_error(req, 400, HR_E_TOO_DEEP, msg);
    return HR_DECLINED;
}

static void
ing_handle_post(ing_server_t *s, hr_httpd_req_t *req, const ing_caller_t *c)
{
    hr_proto_err_t e;
    hr_proto_request_t r;
    const char *body;
    size_t len;
    int keyed;

    ing_pending_t *p = ing_preamble(s, req, c, &body, &len, &keyed);
    if (p == NULL)
        return;
    int rc = hr_proto_parse_targets(body, len, HR_BODY_MAX, &r, &e);
    /*
     * The one-pass scanner (r.strings set) accepts no body nested deeper
     * than HR_JSON_DEPTH_MAX: only the others need the depth pass, and it
     * comes first among their refusals.
     */
    if (r.strings == NULL && ing_depth_check(req, body, len, HR_JSON_DEPTH_MAX) != 0) {
        hr_proto_request_clear(&r);
        ing_pending_free(p);
        return;
    }
    if (rc != 0) {
        hr_log_debug("request_refused", "code=%s", e.code);
        ing_pending_free(p);
        ing_refuse(s, req, e.status, e.code, e.message);
        return;
    }
    if (ing_auth_check_request(s->auth, req, c, &r) != 0) {
        hr_proto_request_clear(&r);
        ing_pending_free(p);
        return;
    }
    if (s->drain.draining || !hr_redis_async_ready(s->redis)) {
        hr_proto_request_clear(&r);
        ing_pending_free(p);
        ing_refuse(s, req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
        return;
    }
    ing_expand(s, &r, p);
    hr_proto_request_clear(&r);
    ing_send(s, p, keyed, "/notifications", body, len);
}

static void
ing_item_error(ing_buf_t *a, const hr_proto_err_t *e)
{
    ing_buf_adds(a, "{\"error\":{\"code\":");
    ing_json_str(a, e->code);
    ing_buf_adds(a, ",\"message\":");
    ing_json_str(a, e->message);
    ing_buf_adds(a, "}}");
}

/*
 * POST /notifications/batch: every item is validated on its own; the valid
 * ones are written in one script call. 202 with per-item results when at
 * least one was accepted, 400 with the same results when none was.
 */
static void
ing_handle_batch(ing_server_t *s, hr_httpd_req_t *req, const ing_caller_t *c)
{
    hr_proto_err_t e;
    const char *body;
    size_t len, n;
    char **items;
    size_t *lens;
    int keyed;

    ing_pending_t *p = ing_preamble(s, req, c, &body, &len, &keyed);
    if (p == NULL)
        return;
    /* {"notifications":[item]}: two levels above each item's own. */
    if (ing_depth_check(req, body, len, HR_JSON_DEPTH_MAX + 2) != 0) {
        ing_pending_free(p);
        return;
    }
    if (hr_proto_parse_batch(body, len, &items, &lens, &n, &e) != 0) {
        ing_pending_free(p);
        ing_refuse(s, req, e.status, e.code, e.message);
        return;
    }
    hr_proto_request_t *reqs = hr_calloc(n, sizeof(*reqs));
    int *ok = hr_calloc(n, sizeof(*ok));
    hr_proto_err_t *errs = hr_calloc(n, sizeof(*errs));
    size_t accepted = 0, total = 0, outside = n;
    for (size_t i = 0; i < n; i++) {
        if (hr_proto_parse_targets(items[i], lens[i], HR_BODY_MAX, &reqs[i], &errs[i]) == 0) {
            ok[i] = 1;
            accepted++;
            total += reqs[i].user_ids != NULL ? reqs[i].nusers : 1;
            if (outside == n && !ing_auth_allows_request(c, &reqs[i]))
                outside = i;
        }
    }
    if (outside < n) {
        /* One item outside the key's scope refuses the whole batch: nothing is written. */
        char what[64];
        snprintf(what, sizeof(what), "the targets of notifications[%zu]", outside);
        ing_pending_free(p);
        ing_auth_send_out_of_scope(s->auth, req, c, what);
    } else if (total > HR_FANOUT_MAX) {
        ing_pending_free(p);
        ing_refuse(s, req, 400, HR_E_INVALID_FIELD,
                   "the batch expands to more than 1000 notifications");
    } else if (accepted > 0 && ing_auth_admit(s->auth, req, c) != 0) {
        ing_pending_free(p);
    } else if (accepted > 0 && (s->drain.draining || !hr_redis_async_ready(s->redis))) {
        ing_pending_free(p);
        ing_refuse(s, req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
    } else {
        ing_buf_t *a = &p->answer;
        char head[96];
        int hl = snprintf(head, sizeof(head), "{\"accepted\":%zu,\"rejected\":%zu,\"results\":[",
                          accepted, n - accepted);
        ing_buf_add(a, head, (size_t)hl);
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                ing_buf_add(a, ",", 1);
            if (ok[i]) {
                ing_expand(s, &reqs[i], p);
            } else {
                ing_item_error(a, &errs[i]);
                ing_metrics_rejected(&s->metrics, errs[i].code);
            }
        }
        ing_buf_add(a, "]", 1);
        if (accepted > 0) {
            ing_buf_add(a, "}", 1);
            ing_send(s, p, keyed, "/notifications/batch", body, len);
        } else {
            ing_buf_adds(a, ",\"error\":{\"code\":\"" HR_E_INVALID_FIELD
                            "\",\"message\":\"no notification of the batch is valid\"}}");
            ing_metrics_send_json(&s->metrics, req, s->metrics.route_start_us, 400, a->p, a->len);
            ing_pending_free(p);
        }
    }
    for (size_t i = 0; i < n; i++)
        if (ok[i])
            hr_proto_request_clear(&reqs[i]);
    hr_free(reqs);
    hr_free(ok);
    hr_free(errs);
    hr_proto_batch_free(items, lens, n);
}

static void
ing_route(hr_httpd_req_t *req, void *arg)
{
    ing_server_t *s = arg;
    hr_httpd_method_t m = hr_httpd_method(req);
    ing_caller_t caller = {0};
    ing_metrics_begin(&s->metrics, req);

    /* Every route but the probes needs an API key (401 first, proto/auth.md). */
    if (!ing_auth_open_path(req) && ing_auth_identify(s->auth, req, &caller) != 0)
        return;
    s->metrics.key = caller.name;
    if (hr_httpd_path_is(req, "/notifications")) {
        if (m == HR_HTTPD_POST)
            ing_handle_post(s, req, &caller);
        else
            ing_refuse(s, req, 405, HR_E_METHOD, "use POST");
    } else if (hr_httpd_path_is(req, "/notifications/batch")) {
        if (m == HR_HTTPD_POST)
            ing_handle_batch(s, req, &caller);
        else
            ing_refuse(s, req, 405, HR_E_METHOD, "use POST");
    } else if (ing_revoke_route(s->revoke, req, &caller)) {
        /* answered */
    } else if (ing_metrics_handle(&s->metrics, req) != 0) {
        ing_refuse(s, req, 404, HR_E_NOT_FOUND, "no such endpoint");
    }
}

/*
 * The script text: ing_lua_template with the frame's head and tail as
 * hr_proto_frame_notification() writes them around an envelope. Owned by
 * the caller.
 */
static char *
ing_script_build(size_t *len)
{
    size_t fl;
    char *frame = hr_proto_frame_notification("", 0, &fl);
    /* The frame is head + envelope + "}"; both parts go into single-quoted Lua strings. */
    if (fl == 0 || frame[fl - 1] != '}' || strpbrk(frame, "'\\") != NULL) {
        fprintf(stderr, "herald: unexpected notification frame \"%s\"\n", frame);
        abort();
    }
    const char *mark_head = "ING_FRAME_HEAD", *mark_tail = "ING_FRAME_TAIL";
    const char *h = strstr(ing_lua_template, mark_head);
    const char *t = strstr(ing_lua_template, mark_tail);
    size_t hl = strlen(mark_head), tl = strlen(mark_tail);
    char *out = hr_malloc(sizeof(ing_lua_template) + fl);
    size_t n = 0;
    memcpy(out, ing_lua_template, (size_t)(h - ing_lua_template));
    n += (size_t)(h - ing_lua_template);
    memcpy(out + n, frame, fl - 1);
    n += fl - 1;
    memcpy(out + n, h + hl, (size_t)(t - h - hl));
    n += (size_t)(t - h - hl);
    out[n++] = '}';
    strcpy(out + n, t + tl);
    n += strlen(t + tl);
    hr_free(frame);
    *len = n;
    return out;
}

ing_server_t *
ing_server_create(struct event_base *base, const ing_config_t *cfg, char *err, size_t errlen)
{
    ing_server_t *s = hr_calloc(1, sizeof(*s));
    s->base = base;
    s->cfg = cfg;
    hr_uuid_gen_init(&s->uuid);
    if (ing_auth_create(cfg->config_path, cfg->allow_anonymous, &s->metrics, &s->auth, err,
                        errlen) != 0) {
        hr_free(s);
        return NULL;
    }
    s->script = ing_script_build(&s->script_len);

    hr_redis_async_opts_t ro = {.url = cfg->redis_url,
                                .name = "ingest",
                                .command_timeout_ms = cfg->redis_timeout_ms,
                                .on_state = ing_redis_state,
                                .ud = s};
    s->redis = hr_redis_async_create(&hr_loop_ops_libevent, base, &ro, err, errlen);
    if (s->redis == NULL) {
        ing_auth_destroy(s->auth);
        hr_free(s->script);
        hr_free(s);
        return NULL;
    }
    static const hr_http_body_rule_t bodies[] = {{"/notifications", HR_BODY_MAX}};
    hr_httpd_opts_t ho = {.host = cfg->host,
                          .port = cfg->port,
                          .max_body = HR_BATCH_BODY_MAX,
                          .reuseport = cfg->reuseport,
                          .rules = bodies,
                          .nrules = HR_ARRAY_LEN(bodies),
                          .max_connections = cfg->max_connections,
                          .header_timeout_ms = cfg->header_timeout_ms,
                          .idle_timeout_ms = cfg->idle_timeout_ms,
                          .cb = ing_route,
                          .cbarg = s};
    s->http = hr_httpd_create(base, &ho, err, errlen);
    if (s->http == NULL) {
        hr_redis_async_destroy(s->redis);
        ing_auth_destroy(s->auth);
        hr_free(s->script);
        hr_free(s);
        return NULL;
    }
    s->drain.base = base;
    s->drain.httpd = s->http;
    s->revoke = ing_revoke_create(s->redis, s->auth, &s->metrics, &s->drain, cfg->revocation_ttl_s);
    ing_metrics_src_t src = {.redis = s->redis, .draining = &s->drain.draining};
    ing_metrics_init(&s->metrics, base, &src, &s->uuid, cfg->access_log);
    return s;
}

int
ing_server_port(const ing_server_t *s)
{
    return hr_httpd_port(s->http);
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
    ing_metrics_fini(&s->metrics);
    hr_redis_async_destroy(s->redis);
    hr_httpd_destroy(s->http);
    ing_revoke_destroy(s->revoke);
    ing_auth_destroy(s->auth); /* last: answered requests log the key name it holds */
    hr_free(s->script);
    hr_free(s);
}
