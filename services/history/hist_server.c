#include "hist_server.h"
#include "hist_auth.h"
#include "hist_metrics.h"
#include "hist_render.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_httpd.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"
#include "herald/hr_redis.h"
#include "herald/hr_time.h"
#include "herald/hr_uuid.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reconnect pacing while PostgreSQL is down. */
#define HIST_PG_BACKOFF_MIN_MS 250
#define HIST_PG_BACKOFF_MAX_MS 2000

/* Requests carry no body we read (but POST /dev/token's); anything bigger is not ours to read. */
#define HIST_BODY_MAX 4096

#define HIST_ALLOW_GET "GET, HEAD, OPTIONS"
#define HIST_ALLOW_POST "POST, OPTIONS"
#define HIST_ALLOW_ANY "GET, HEAD, POST, OPTIONS"

const hr_cfg_field_t hist_config_fields[] = {
    {"history.host", HR_CFG_STR, offsetof(hist_config_t, host), "127.0.0.1", 0, 0},
    {"history.port", HR_CFG_INT, offsetof(hist_config_t, port), "8082", 0, 65535},
    {"history.cors_origin", HR_CFG_STR, offsetof(hist_config_t, cors_origin), "*", 0, 0},
    {"history.pg_pool_size", HR_CFG_INT, offsetof(hist_config_t, pg_pool_size), "4", 1, 64},
    {"history.pg_queue_max", HR_CFG_INT, offsetof(hist_config_t, pg_queue_max), "1024", 0, 1000000},
    {"history.pg_queue_wait_ms", HR_CFG_INT, offsetof(hist_config_t, pg_queue_wait_ms), "2000", 0,
     600000},
    {"history.pg_timeout_ms", HR_CFG_INT, offsetof(hist_config_t, pg_timeout_ms), "5000", 10,
     600000},
    {"history.drain_ms", HR_CFG_INT, offsetof(hist_config_t, drain_ms), "5000", 0, 600000},
    {"history.max_connections", HR_CFG_INT, offsetof(hist_config_t, max_connections), "0", 0,
     1000000},
    {"history.header_timeout_ms", HR_CFG_INT, offsetof(hist_config_t, header_timeout_ms), "10000",
     10, 600000},
    /* A keep-alive connection idle, or a body or an answer stalled, this long is closed. */
    {"history.idle_timeout_ms", HR_CFG_INT, offsetof(hist_config_t, idle_timeout_ms), "60000", 100,
     3600000},
    {"postgres.url", HR_CFG_STR, offsetof(hist_config_t, postgres_url),
     "host=127.0.0.1 port=5432 dbname=herald user=postgres", 0, 0},
    {"redis.url", HR_CFG_STR, offsetof(hist_config_t, redis_url), "redis://127.0.0.1:6379", 0, 0},
    {"redis.timeout_ms", HR_CFG_INT, offsetof(hist_config_t, redis_timeout_ms), "2000", 10, 600000},
    {"log.level", HR_CFG_STR, offsetof(hist_config_t, log_level), "info", 0, 0},
    {"history.dev_user_query", HR_CFG_BOOL, offsetof(hist_config_t, dev_user_query), "false", 0, 0},
    {"history.dev_mint", HR_CFG_BOOL, offsetof(hist_config_t, dev_mint), "false", 0, 0},
};
const size_t hist_config_nfields = HR_ARRAY_LEN(hist_config_fields);

struct hist_server_s {
    struct event_base *base;  /* borrowed */
    const hist_config_t *cfg; /* borrowed */
    hr_httpd_t *http;         /* owned */
    hist_db_t *db;            /* owned */
    hr_redis_async_t *redis;  /* owned: PUBLISH of read/unread events */
    hr_http_drain_t drain;    /* listener, requests in flight, stop */
    hist_metrics_t metrics;   /* registry and slots (owned) */
    hist_auth_t *auth;        /* owned: keys, verifier, development switches */
    int closing;              /* hist_server_destroy runs: answers route nothing */
};

/* ---- routes ---- */

typedef enum {
    HIST_R_NONE,
    HIST_R_HEALTH,
    HIST_R_READY,
    HIST_R_METRICS,
    HIST_R_LIST,
    HIST_R_UNREAD_COUNT,
    HIST_R_READ_ALL,
    HIST_R_GET,
    HIST_R_MARK_READ,
    HIST_R_MARK_UNREAD,
    HIST_R_ROOM_MESSAGES,
    HIST_R_DEV_TOKEN,
} hist_route_t;

/*
 * Which endpoint path names; the raw {id} or {room} segment goes to
 * seg/seglen. /dev/token exists only with dev_mint.
 */
static hist_route_t
hist_route_match(const char *path, int dev_mint, const char **seg, size_t *seglen)
{
    static const char notif[] = "/notifications";
    static const char rooms[] = "/rooms/";
    *seg = NULL;
    *seglen = 0;
    if (strcmp(path, "/healthz") == 0)
        return HIST_R_HEALTH;
    if (strcmp(path, "/readyz") == 0)
        return HIST_R_READY;
    if (strcmp(path, "/metrics") == 0)
        return HIST_R_METRICS;
    if (dev_mint && strcmp(path, "/dev/token") == 0)
        return HIST_R_DEV_TOKEN;
    if (strncmp(path, notif, sizeof(notif) - 1) == 0) {
        const char *p = path + sizeof(notif) - 1;
        if (*p == '\0')
            return HIST_R_LIST;
        if (*p++ != '/')
            return HIST_R_NONE;
        if (strcmp(p, "unread-count") == 0)
            return HIST_R_UNREAD_COUNT;
        if (strcmp(p, "read-all") == 0)
            return HIST_R_READ_ALL;
        size_t n = strcspn(p, "/");
        if (n == 0)
            return HIST_R_NONE;
        *seg = p;
        *seglen = n;
        if (p[n] == '\0')
            return HIST_R_GET;
        if (strcmp(p + n, "/read") == 0)
            return HIST_R_MARK_READ;
        if (strcmp(p + n, "/unread") == 0)
            return HIST_R_MARK_UNREAD;
        return HIST_R_NONE;
    }
    if (strncmp(path, rooms, sizeof(rooms) - 1) == 0) {
        const char *p = path + sizeof(rooms) - 1;
        size_t n = strcspn(p, "/");
        if (n == 0 || strcmp(p + n, "/messages") != 0)
            return HIST_R_NONE;
        *seg = p;
        *seglen = n;
        return HIST_R_ROOM_MESSAGES;
    }
    return HIST_R_NONE;
}

/* The route label of proto/metrics.md. */
static hist_m_route_t
hist_route_label(hist_route_t r)
{
    switch (r) {
    case HIST_R_LIST:
        return HIST_M_INBOX;
    case HIST_R_UNREAD_COUNT:
        return HIST_M_UNREAD_COUNT;
    case HIST_R_MARK_READ:
        return HIST_M_READ;
    case HIST_R_MARK_UNREAD:
        return HIST_M_UNREAD;
    case HIST_R_READ_ALL:
        return HIST_M_READ_ALL;
    case HIST_R_GET:
        return HIST_M_GET;
    case HIST_R_ROOM_MESSAGES:
        return HIST_M_ROOM_MESSAGES;
    case HIST_R_HEALTH:
    case HIST_R_READY:
        return HIST_M_HEALTH;
    case HIST_R_METRICS:
        return HIST_M_METRICS;
    case HIST_R_DEV_TOKEN:
    case HIST_R_NONE:
        break;
    }
    return HIST_M_OTHER;
}

static int
hist_route_is_post(hist_route_t r)
{
    return r == HIST_R_READ_ALL || r == HIST_R_MARK_READ || r == HIST_R_MARK_UNREAD ||
           r == HIST_R_DEV_TOKEN;
}

/* ---- one request waiting on PostgreSQL ---- */

/*
 * A request that waits for Redis or the pool. hr_httpd keeps reading the
 * connection meanwhile: a reset (or an answer that cannot be sent) ends it,
 * and hist_call_gone withdraws a query still queued; a query already running
 * finishes (a write still publishes its event) and its answer is dropped.
 * A FIN is not a hang-up (it may be a half-close, and the client still gets
 * its answer): queued requests of clients that left that way are bounded by
 * pg_queue_wait_ms instead.
 */
typedef struct {
    hist_server_t *srv;  /* borrowed */
    hr_httpd_req_t *req; /* borrowed: valid until answered */
    hist_op_t *op;       /* borrowed: the query in the pool, NULL when done */
    hist_route_t route;
    uint64_t start_us;    /* hr_mono_us when the request arrived */
    hist_params_t params; /* user_id: the token's sub, or the dev ?user_id= */
    int64_t iat;          /* the token's, for its user's revocation cut-off */
    int has_iat;
    char id[HR_UUID_STR_LEN];     /* {id} of the path */
    char room[HIST_ROOM_MAX + 1]; /* {room} of the path */
    char newest[HR_UUID_STR_LEN]; /* read-all: the bound its chunks mark up to; "" before */
    char next[HR_UUID_STR_LEN];   /* read-all: where the next chunk starts (<=) */
    long long updated;            /* read-all: rows its chunks marked so far */
    long long unread_above;       /* read-all: unread rows above the bound (capped) */
} hist_call_t;

static void hist_call_gone(hr_httpd_req_t *req, void *arg);

static hist_call_t *
hist_call_new(hist_server_t *s, hr_httpd_req_t *req, hist_route_t route, uint64_t start_us)
{
    hist_call_t *c = hr_calloc(1, sizeof(*c));
    c->srv = s;
    c->req = req;
    c->route = route;
    c->start_us = start_us;
    hr_httpd_on_gone(req, hist_call_gone, c);
    s->drain.inflight++;
    return c;
}

static void
hist_call_free(hist_call_t *c)
{
    hist_server_t *s = c->srv;
    hr_free(c);
    hr_http_drain_release(&s->drain);
}

/*
 * Counts the answer unless its client is gone (it has nowhere to go, and
 * proto/metrics.md counts it not at all), with counted set: a withdrawn
 * request's 499.
 */
static void
hist_call_count(hist_call_t *c, int status, int counted)
{
    if (counted || !hr_httpd_gone(c->req))
        hist_metrics_answered(&c->srv->metrics, hist_route_label(c->route), status, c->start_us);
}

/* Answers (dropped when the client is gone) and frees the call. */
static void
hist_call_reply(hist_call_t *c, int status, const char *json, size_t len)
{
    hist_call_count(c, status, 0);
    hr_httpd_send_json(c->req, status, json, len);
    hist_call_free(c);
}

static void
hist_call_error(hist_call_t *c, int status, const char *code, const char *message)
{
    hist_call_count(c, status, 0);
    hr_httpd_send_error(c->req, status, code, message);
    hist_call_free(c);
}

/* Answers a query that PostgreSQL could not serve (a hist_db_cb status). */
static void
hist_call_db_error(hist_call_t *c, int status)
{
    /* A wait in the queue is not a query that failed: it never reached PostgreSQL. */
    if (status != HIST_DB_WAITED)
        hr_counter_inc(c->srv->metrics.pg_errors);
    if (status == HR_AGAIN)
        hist_call_error(c, 503, HR_E_UNAVAILABLE, "postgres is not reachable; retry");
    else if (status == HIST_DB_SLOW)
        hist_call_error(c, 503, HR_E_UNAVAILABLE, "the query took too long; retry");
    else if (status == HIST_DB_WAITED)
        hist_call_error(c, 503, HR_E_UNAVAILABLE, "waited too long for a connection; retry");
    else
        hist_call_error(c, 500, HR_E_INTERNAL, "the query failed");
}

/* The client went while its request waits: a query still queued is withdrawn (499). */
static void
hist_call_gone(hr_httpd_req_t *req, void *arg)
{
    HR_UNUSED(req);
    hist_call_t *c = arg;
    int queued = c->op != NULL && hist_db_cancel(c->srv->db, c->op);
    hr_log_debug("client_gone", "route=%d withdrawn=%d", (int)c->route, queued);
    if (queued) {
        c->op = NULL;
        hist_call_count(c, 499, 1);
        hr_httpd_send_error(c->req, 499, HR_E_UNAVAILABLE, "client closed the request");
        hist_call_free(c);
    }
}

static void hist_call_done(int status, const PGresult *r, void *arg);

/* Sends the call's query to the pool; answers 503 itself when it cannot. */
static void
hist_call_submit(hist_call_t *c, hist_q_t q, int nparams, const char *const *params)
{
    int rc = hist_db_submit(c->srv->db, q, nparams, params, hist_call_done, c, &c->op);
    if (rc == HR_AGAIN) {
        hist_call_error(c, 503, HR_E_UNAVAILABLE, "postgres is not reachable; retry");
    } else if (rc == HR_DECLINED) {
        hr_log_warn("queue_full", "stmt=%s", hist_db_q_name(q));
        hist_call_error(c, 503, HR_E_UNAVAILABLE, "too many requests are waiting; retry");
    }
}

/* Serializes root (consumed) and answers 200. */
static void
hist_call_reply_obj(hist_call_t *c, cJSON *root)
{
    char *s = hr_json_print(root);
    cJSON_Delete(root);
    hist_call_reply(c, 200, s, strlen(s));
    hr_free(s);
}

/* ---- live events ---- */

static void
hist_publish_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    char *channel = privdata;
    redisReply *r = reply;
    if (r == NULL)
        hr_log_warn("publish_failed", "channel=%s error=\"redis connection lost\"", channel);
    else if (r->type == REDIS_REPLY_ERROR)
        hr_log_warn("publish_failed", "channel=%s error=\"%s\"", channel, r->str);
    hr_free(channel);
}

/*
 * PUBLISHes a finished WebSocket frame on the user's channel (proto/redis.md),
 * for the gateways to forward as is. Fire and forget: the change is already
 * committed, PostgreSQL is the truth, so a failure is logged and the request
 * still succeeds; clients resynchronize from GET /notifications.
 */
static void
hist_publish(hist_server_t *s, const char *user_id, cJSON *frame)
{
    char *text = hr_json_print(frame);
    char channel[HR_USER_ID_MAX + 32];
    size_t ch_len = hr_proto_user_channel(channel, sizeof(channel), user_id);
    const char *argv[] = {"PUBLISH", channel, text};
    size_t argvlen[] = {7, ch_len, strlen(text)};
    char *priv = hr_strndup(channel, ch_len);
    if (hr_redis_async_argv(s->redis, hist_publish_done, priv, 3, argv, argvlen) != 0) {
        hr_log_warn("publish_failed", "channel=%s error=\"redis is not reachable\"", priv);
        hr_free(priv);
    }
    hr_free(text);
}

/* {"type":"read"|"unread","ids":[id]} */
static void
hist_publish_mark(hist_server_t *s, const char *user_id, const char *type, const char *id)
{
    cJSON *f = cJSON_CreateObject();
    cJSON_AddStringToObject(f, "type", type);
    cJSON *ids = cJSON_AddArrayToObject(f, "ids");
    cJSON_AddItemToArray(ids, cJSON_CreateString(id));
    hist_publish(s, user_id, f);
    cJSON_Delete(f);
}

/* ---- query results ---- */

/*
 * Read-all as a series of short statements, so a user with a million unread
 * rows neither hits statement_timeout (a single UPDATE could never succeed)
 * nor holds a pool connection for seconds: the bound (the newest unread id up
 * to up_to, and the unread count above it), then chunks of
 * HIST_READ_ALL_CHUNK, each its own transaction and back in the queue behind
 * other users' requests, each starting where the last one ended, until one
 * comes back short. Every chunk is
 * idempotent; one re-sent after a lost connection may report 0 for rows it
 * had already marked, so updated can undercount then, but the read_all frame
 * does not depend on it: once the chunks are done, everything up to the
 * bound is read, whoever marked it.
 */
static void
hist_read_all_step(hist_call_t *c, const PGresult *r)
{
    hist_server_t *s = c->srv;
    if (c->newest[0] == '\0') {
        if (PQgetisnull(r, 0, HIST_ACOL_NEWEST)) {
            cJSON *root = cJSON_CreateObject();
            cJSON_AddNumberToObject(root, "updated", 0);
            cJSON_AddNullToObject(root, "up_to");
            hist_add_unread(root, hist_int(r, 0, HIST_ACOL_UNREAD));
            hist_call_reply_obj(c, root);
            return;
        }
        snprintf(c->newest, sizeof(c->newest), "%s", PQgetvalue(r, 0, HIST_ACOL_NEWEST));
        c->unread_above = hist_int(r, 0, HIST_ACOL_UNREAD);
        snprintf(c->next, sizeof(c->next), "%s", c->newest);
    } else {
        long long n = hist_int(r, 0, HIST_KCOL_MARKED);
        c->updated += n;
        if (!PQgetisnull(r, 0, HIST_KCOL_OLDEST))
            snprintf(c->next, sizeof(c->next), "%s", PQgetvalue(r, 0, HIST_KCOL_OLDEST));
        if (n < HIST_READ_ALL_CHUNK || PQgetisnull(r, 0, HIST_KCOL_OLDEST)) {
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "type", "read_all");
            cJSON_AddStringToObject(f, "up_to", c->newest);
            hist_publish(s, c->params.user_id, f);
            cJSON_Delete(f);
            cJSON *root = cJSON_CreateObject();
            cJSON_AddNumberToObject(root, "updated", (double)c->updated);
            cJSON_AddStringToObject(root, "up_to", c->newest);
            hist_add_unread(root, c->unread_above);
            hist_call_reply_obj(c, root);
            return;
        }
    }
    const char *params[] = {c->params.user_id, c->next};
    hist_call_submit(c, HIST_Q_READ_ALL_CHUNK, 2, params);
}

static void
hist_call_done(int status, const PGresult *r, void *arg)
{
    hist_call_t *c = arg;
    hist_server_t *s = c->srv;
    c->op = NULL;
    if (status != 0) {
        hist_call_db_error(c, status);
        return;
    }
    cJSON *root = NULL;
    switch (c->route) {
    case HIST_R_LIST:
        root = hist_page_json(r, c->params.limit, 0);
        if (root != NULL)
            hist_add_unread(root, PQntuples(r) > 0 ? hist_int(r, 0, HIST_COL_UNREAD) : 0);
        break;
    case HIST_R_ROOM_MESSAGES:
        root = hist_page_json(r, c->params.limit, 1);
        break;
    case HIST_R_UNREAD_COUNT:
        root = cJSON_CreateObject();
        hist_add_unread(root, hist_int(r, 0, 0));
        break;
    case HIST_R_GET:
        if (PQntuples(r) == 0) {
            hist_call_error(c, 404, HR_E_NOT_FOUND, "no such notification for this user");
            return;
        }
        root = hist_item_json(r, 0);
        break;
    case HIST_R_MARK_READ:
    case HIST_R_MARK_UNREAD: {
        if (PQntuples(r) == 0) {
            hist_call_error(c, 404, HR_E_NOT_FOUND, "no such notification for this user");
            return;
        }
        hist_publish_mark(s, c->params.user_id, c->route == HIST_R_MARK_READ ? "read" : "unread",
                          c->id);
        cJSON *item = hist_item_json(r, 0);
        if (item != NULL) {
            root = cJSON_CreateObject();
            cJSON_AddItemToObject(root, "notification", item);
            hist_add_unread(root, hist_int(r, 0, HIST_COL_UNREAD));
        }
        break;
    }
    case HIST_R_READ_ALL:
        hist_read_all_step(c, r);
        return;
    default:
        break;
    }
    if (root == NULL) {
        hist_call_error(c, 500, HR_E_INTERNAL, "a stored row could not be read");
        return;
    }
    hist_call_reply_obj(c, root);
}

/* ---- handlers ---- */

static int
hist_send_refusal(hr_httpd_req_t *req, const hr_proto_err_t *e)
{
    hr_log_debug("request_refused", "code=%s", e->code);
    hr_httpd_send_error(req, e->status, e->code, e->message);
    return e->status;
}

/*
 * Sends the query of the call's route (its parameters are checked and the
 * user is known). Every answer goes through the call.
 */
static void
hist_call_start(hist_call_t *c)
{
    char limit[16];
    snprintf(limit, sizeof(limit), "%d", c->params.limit + 1);
    const char *cursor = c->params.cursor[0] != '\0' ? c->params.cursor : NULL;
    const char *uid = c->params.user_id;

    switch (c->route) {
    case HIST_R_LIST: {
        static const hist_q_t by_status[] = {
            [HIST_STATUS_ALL] = HIST_Q_LIST_ALL,
            [HIST_STATUS_UNREAD] = HIST_Q_LIST_UNREAD,
            [HIST_STATUS_READ] = HIST_Q_LIST_READ,
        };
        const char *params[] = {uid, cursor, limit};
        hist_call_submit(c, by_status[c->params.status], 3, params);
        return;
    }
    case HIST_R_ROOM_MESSAGES: {
        const char *params[] = {c->room, cursor, limit};
        hist_call_submit(c, HIST_Q_ROOM_MESSAGES, 3, params);
        return;
    }
    case HIST_R_UNREAD_COUNT: {
        const char *params[] = {uid};
        hist_call_submit(c, HIST_Q_UNREAD_COUNT, 1, params);
        return;
    }
    case HIST_R_GET:
    case HIST_R_MARK_READ:
    case HIST_R_MARK_UNREAD: {
        const char *params[] = {c->id, uid};
        hist_q_t q = c->route == HIST_R_GET         ? HIST_Q_GET
                     : c->route == HIST_R_MARK_READ ? HIST_Q_MARK_READ
                                                    : HIST_Q_MARK_UNREAD;
        hist_call_submit(c, q, 2, params);
        return;
    }
    case HIST_R_READ_ALL: {
        const char *params[] = {uid, c->params.up_to[0] != '\0' ? c->params.up_to : NULL};
        hist_call_submit(c, HIST_Q_READ_ALL_BOUND, 2, params);
        return;
    }
    default:
        break;
    }
    hist_call_error(c, 404, HR_E_NOT_FOUND, "no such endpoint");
}

/*
 * The user's revocation cut-off arrived: a token issued before it is 401
 * revoked; no answer (Redis gone, watchdog) is 503, since a revocation must
 * not be skipped; else the query goes out.
 */
static void
hist_cutoff_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    hist_call_t *c = privdata;
    redisReply *r = reply;
    if (r == NULL) {
        hist_call_error(c, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
        return;
    }
    int64_t cutoff;
    if (hist_auth_cutoff_parse(r, &cutoff) != 0) {
        hr_log_error("cutoff_unreadable", "type=%d", r->type);
        hist_call_error(c, 500, HR_E_INTERNAL, "the revocation cut-off could not be read");
        return;
    }
    if (hr_httpd_gone(c->req)) { /* the client left while we waited: no query for it */
        hist_call_error(c, 499, HR_E_UNAVAILABLE, "client closed the request");
        return;
    }
    hr_token_claims_t claims = {.iat = c->iat, .has_iat = c->has_iat};
    if (hr_token_check_cutoff(&claims, cutoff) != 0) {
        hr_log_debug("request_refused", "code=%s reason=revoked", HR_E_UNAUTHORIZED);
        hist_call_count(c, 401, 0);
        hist_auth_send_unauthorized(c->req, HR_TOKEN_REVOKED,
                                    "the token was issued before the user's revocation cut-off");
        hist_call_free(c);
        return;
    }
    hist_call_start(c);
}

/* Asks Redis for the user's cut-off (GET herald:revoked:{<user>}); 503 at once when down. */
static void
hist_call_check_cutoff(hist_call_t *c)
{
    char key[HR_USER_ID_MAX + 32];
    size_t kl = hist_auth_revoked_key(key, sizeof(key), c->params.user_id);
    const char *argv[] = {"GET", key};
    size_t argvlen[] = {3, kl};
    if (kl == 0 || hr_redis_async_argv(c->srv->redis, hist_cutoff_done, c, 2, argv, argvlen) != 0) {
        hist_call_error(c, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
    }
}

/*
 * Who asks (proto/auth.md, "History"): a bearer token, whose sub is the
 * user; without one, with history.dev_user_query, the ?user_id= (and any
 * room; a bad query string then gets its 400). Fills *claims (has_token 1)
 * or leaves it zeroed. Returns 0, or the status of the refusal it sent.
 */
static int
hist_authenticate(hist_server_t *s, hr_httpd_req_t *req, hist_route_t route, const hist_params_t *p,
                  int query_bad, hr_token_claims_t *claims, int *has_token)
{
    char err[256];
    *has_token = 0;
    int rc = hist_auth_verify(s->auth, req, (int64_t)hr_now_ms() / 1000, claims, err, sizeof(err));
    if (rc == HIST_AUTH_MISSING && hist_auth_dev_user_query(s->auth) &&
        (query_bad || p->user_id[0] != '\0' || route == HIST_R_ROOM_MESSAGES))
        return 0;
    if (rc != 0) {
        hr_log_debug("request_refused", "code=%s reason=%s", HR_E_UNAUTHORIZED,
                     hist_auth_reason(rc));
        hist_auth_send_unauthorized(req, rc, err);
        return 401;
    }
    *has_token = 1;
    if (!query_bad && p->user_id[0] != '\0' && strcmp(p->user_id, claims->sub) != 0) {
        hr_token_claims_free(claims);
        hr_log_debug("request_refused", "code=%s", HR_E_FORBIDDEN);
        hr_httpd_send_error(req, 403, HR_E_FORBIDDEN, "user_id differs from the token's user");
        return 403;
    }
    return 0;
}

/*
 * Validates what the route needs (the caller, the path's id or room), then
 * looks up the caller's cut-off or sends the query. Every answer after this
 * point goes through the call (and is counted there): returns 0 then, else
 * the status of the refusal it sent.
 */
static int
hist_handle(hist_server_t *s, hr_httpd_req_t *req, hist_route_t route, const char *seg,
            size_t seglen, uint64_t start_us)
{
    hist_params_t p;
    hr_proto_err_t e;
    /* The query: after the path's '?', up to a '#' (the split evhttp made). */
    const char *uri = hr_httpd_uri(req), *query = NULL;
    char *qcopy = NULL;
    size_t pl = strcspn(uri, "?#");
    if (uri[pl] == '?') {
        query = uri + pl + 1;
        size_t ql = strcspn(query, "#");
        if (query[ql] != '\0')
            query = qcopy = hr_strndup(query, ql);
    }
    int qrc = hist_params_parse(query, &p, &e);
    hr_free(qcopy);
    hr_token_claims_t claims = {0};
    int has_token;
    /* Credentials first: a caller without them learns nothing from 400s. */
    int st = hist_authenticate(s, req, route, &p, qrc != 0, &claims, &has_token);
    if (st != 0)
        return st;
    if (qrc != 0) {
        hr_token_claims_free(&claims);
        return hist_send_refusal(req, &e);
    }
    if (has_token)
        snprintf(p.user_id, sizeof(p.user_id), "%s", claims.sub);
    char id[HR_UUID_STR_LEN] = "";
    char room[HIST_ROOM_MAX + 1] = "";
    if (route == HIST_R_GET || route == HIST_R_MARK_READ || route == HIST_R_MARK_UNREAD) {
        char raw[HR_UUID_STR_LEN + 1];
        int n = hist_unescape(seg, seglen, raw, sizeof(raw), 0);
        if (n < 0 || hist_id_normalize(raw, id) != 0) {
            hr_token_claims_free(&claims);
            hist_fail(&e, HR_E_INVALID_FIELD, "the notification id in the path must be a UUID");
            return hist_send_refusal(req, &e);
        }
    } else if (route == HIST_R_ROOM_MESSAGES) {
        int n = hist_unescape(seg, seglen, room, sizeof(room), 0);
        if (n < 0 || !hist_room_valid(room)) {
            hr_token_claims_free(&claims);
            hist_fail(&e, HR_E_INVALID_FIELD, "room must be 1-%d characters of A-Za-z0-9_.:@-",
                      HIST_ROOM_MAX);
            return hist_send_refusal(req, &e);
        }
        if (has_token && !hr_token_room_allowed(&claims, room)) {
            hr_token_claims_free(&claims);
            hr_log_debug("request_refused", "code=%s", HR_E_FORBIDDEN);
            hr_httpd_send_error(req, 403, HR_E_FORBIDDEN,
                                "the token's rooms claim does not allow this room");
            return 403;
        }
    }

    hist_call_t *c = hist_call_new(s, req, route, start_us);
    c->params = p;
    c->iat = claims.iat;
    c->has_iat = claims.has_iat;
    hr_token_claims_free(&claims);
    memcpy(c->id, id, sizeof(c->id));
    memcpy(c->room, room, sizeof(c->room));
    if (has_token)
        hist_call_check_cutoff(c);
    else
        hist_call_start(c);
    return 0;
}

/* POST /dev/token (history.dev_mint): a token for any user, signed with the first HS256 key. */
static int
hist_handle_dev_token(hist_server_t *s, hr_httpd_req_t *req)
{
    if (!hr_http_json_type(hr_httpd_header(req, "Content-Type"))) {
        hr_httpd_send_error(req, 415, HR_E_UNSUPPORTED_MEDIA,
                            "Content-Type must be application/json");
        return 415;
    }
    size_t len;
    const char *body = hr_httpd_body(req, &len);
    hr_proto_err_t e;
    char *out = NULL;
    if (hist_auth_mint(s->auth, body, len, (int64_t)hr_now_ms() / 1000, &out, &e) != 0)
        return hist_send_refusal(req, &e);
    hr_httpd_send_json(req, 200, out, strlen(out));
    hr_free(out);
    return 200;
}

/*
 * Liveness: 200 while the process runs, draining or not, with the state of
 * each dependency for people reading it. Whether the instance should get
 * traffic is /readyz's answer.
 */
static int
hist_handle_health(hist_server_t *s, hr_httpd_req_t *req)
{
    int pg = hist_db_alive(s->db) > 0;
    int redis = hr_redis_async_ready(s->redis);
    char body[160];
    int n =
        snprintf(body, sizeof(body),
                 "{\"status\":\"ok\",\"postgres\":\"%s\",\"redis\":\"%s\",\"draining\":%s}",
                 pg ? "up" : "down", redis ? "up" : "down", s->drain.draining ? "true" : "false");
    hr_httpd_send_json(req, 200, body, (size_t)n);
    return 200;
}

/*
 * Readiness from the pool's state, never through its queue: under load the
 * queue is full of real work, and a probe that waits there (or is refused
 * with 503) gets a busy, healthy instance taken out. Ready while at least one
 * PostgreSQL connection is open and not draining; else 503 naming what is
 * down. Redis is reported but not required (hist_metrics_ready).
 */
static int
hist_handle_ready(hist_server_t *s, hr_httpd_req_t *req)
{
    int pg = hist_db_alive(s->db) > 0;
    int redis = hr_redis_async_ready(s->redis);
    int ok = hist_metrics_ready(&s->metrics.src);
    char down[64] = "";
    int dn = 0;
    if (!pg)
        dn += snprintf(down + dn, sizeof(down) - (size_t)dn, "%s\"postgres\"", dn ? "," : "");
    if (s->drain.draining)
        snprintf(down + dn, sizeof(down) - (size_t)dn, "%s\"draining\"", dn ? "," : "");
    char body[256];
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"%s\",\"postgres\":\"%s\",\"redis\":\"%s\",\"draining\":%s,"
                     "\"down\":[%s]}",
                     ok ? "ok" : "unavailable", pg ? "up" : "down", redis ? "up" : "down",
                     s->drain.draining ? "true" : "false", down);
    if (!ok)
        hr_httpd_add_header(req, "Retry-After", "1");
    hr_httpd_send_json(req, ok ? 200 : 503, body, (size_t)n);
    return ok ? 200 : 503;
}

/* CORS preflight: nothing to send but what the browser may do next. */
static void
hist_handle_preflight(hist_server_t *s, hr_httpd_req_t *req, const char *allow)
{
    if (s->cfg->cors_origin[0] != '\0') {
        hr_httpd_add_header(req, "Access-Control-Allow-Methods", allow);
        hr_httpd_add_header(req, "Access-Control-Allow-Headers", "Authorization, Content-Type");
        hr_httpd_add_header(req, "Access-Control-Max-Age", "600");
    }
    hr_httpd_add_header(req, "Allow", allow);
    hr_httpd_send(req, 204, NULL, "", 0);
}

static void
hist_route(hr_httpd_req_t *req, void *arg)
{
    hist_server_t *s = arg;
    hr_httpd_method_t m = hr_httpd_method(req);
    /* The path: the target up to '?' or '#' (as evhttp split it), copied for its NUL. */
    const char *uri = hr_httpd_uri(req);
    size_t plen = strcspn(uri, "?#");
    char path[HR_HTTP_URI_MAX + 1];
    memcpy(path, uri, plen);
    path[plen] = '\0';
    const char *seg;
    size_t seglen;
    uint64_t start_us = hr_mono_us();
    hist_route_t route = hist_route_match(path, hist_auth_dev_mint(s->auth), &seg, &seglen);
    int status = 0; /* what was answered here; 0: a call answers (and counts) later */

    /* On every answer, errors included, so a browser can read why it failed. */
    if (s->cfg->cors_origin[0] != '\0') {
        hr_httpd_add_header(req, "Access-Control-Allow-Origin", s->cfg->cors_origin);
        /* A page reads why it was refused (401) and when to retry (503). */
        hr_httpd_add_header(req, "Access-Control-Expose-Headers", "Retry-After, WWW-Authenticate");
        if (strcmp(s->cfg->cors_origin, "*") != 0)
            hr_httpd_add_header(req, "Vary", "Origin");
    }

    int post = hist_route_is_post(route);
    const char *allow = post ? HIST_ALLOW_POST : HIST_ALLOW_GET;
    if (s->closing) {
        /*
         * A pipelined request that an answer given during hist_server_destroy
         * released: the pool and Redis are going, so nothing may reach them.
         */
        hr_httpd_send_error(req, 503, HR_E_UNAVAILABLE, "shutting down; retry");
        return;
    } else if (m == HR_HTTPD_OPTIONS) {
        /* Unknown paths too: a failed preflight would hide the JSON 404 from the page. */
        hist_handle_preflight(s, req, route == HIST_R_NONE ? HIST_ALLOW_ANY : allow);
        status = 204;
    } else if (route == HIST_R_NONE) {
        hr_httpd_send_error(req, 404, HR_E_NOT_FOUND, "no such endpoint");
        status = 404;
    } else if (post ? m != HR_HTTPD_POST : (m != HR_HTTPD_GET && m != HR_HTTPD_HEAD)) {
        hr_httpd_add_header(req, "Allow", allow);
        hr_httpd_send_error(req, 405, HR_E_METHOD, post ? "use POST" : "use GET");
        status = 405;
    } else if (route == HIST_R_HEALTH) {
        status = hist_handle_health(s, req);
    } else if (route == HIST_R_READY) {
        status = hist_handle_ready(s, req);
    } else if (route == HIST_R_METRICS) {
        /* Counted before the render, so a scrape sees itself: requests_total moves by exact
         * amounts. */
        hist_metrics_answered(&s->metrics, HIST_M_METRICS, 200, start_us);
        hr_metrics_send_httpd(req, s->metrics.reg);
    } else if (s->drain.draining) {
        hr_httpd_send_error(req, 503, HR_E_UNAVAILABLE, "shutting down; retry");
        status = 503;
    } else if (route == HIST_R_DEV_TOKEN) {
        status = hist_handle_dev_token(s, req);
    } else {
        status = hist_handle(s, req, route, seg, seglen, start_us);
    }
    if (status != 0)
        hist_metrics_answered(&s->metrics, hist_route_label(route), status, start_us);
}

/* ---- lifecycle ---- */

hist_server_t *
hist_server_create(struct event_base *base, const hist_config_t *cfg, char *err, size_t errlen)
{
    hist_server_t *s = hr_calloc(1, sizeof(*s));
    s->base = base;
    s->cfg = cfg;
    hist_auth_opts_t ao = {.config_path = cfg->config_path,
                           .dev_user_query = cfg->dev_user_query,
                           .dev_mint = cfg->dev_mint};
    if (hist_auth_create(&ao, &s->auth, err, errlen) != 0) {
        hr_free(s);
        return NULL;
    }

    hist_db_opts_t dbo = {.conninfo = cfg->postgres_url,
                          .pool_size = cfg->pg_pool_size,
                          .queue_max = cfg->pg_queue_max,
                          .queue_wait_ms = cfg->pg_queue_wait_ms,
                          .query_timeout_ms = cfg->pg_timeout_ms,
                          .backoff_min_ms = HIST_PG_BACKOFF_MIN_MS,
                          .backoff_max_ms = HIST_PG_BACKOFF_MAX_MS};
    s->db = hist_db_create(base, &dbo, err, errlen);
    if (s->db == NULL) {
        hist_auth_destroy(s->auth);
        hr_free(s);
        return NULL;
    }
    hr_redis_async_opts_t ro = {
        .url = cfg->redis_url, .name = "publish", .command_timeout_ms = cfg->redis_timeout_ms};
    s->redis = hr_redis_async_create(&hr_loop_ops_libevent, base, &ro, err, errlen);
    if (s->redis == NULL) {
        hist_db_destroy(s->db);
        hist_auth_destroy(s->auth);
        hr_free(s);
        return NULL;
    }
    static const hr_http_body_rule_t rules[] = {{"/dev/token", HIST_MINT_BODY_MAX}};
    hr_httpd_opts_t ho = {.host = cfg->host,
                          .port = cfg->port,
                          .max_body = HIST_BODY_MAX,
                          .rules = rules,
                          .nrules = HR_ARRAY_LEN(rules),
                          .cors_origin = cfg->cors_origin,
                          .max_connections = cfg->max_connections,
                          .header_timeout_ms = cfg->header_timeout_ms,
                          .idle_timeout_ms = cfg->idle_timeout_ms,
                          .cb = hist_route,
                          .cbarg = s};
    s->http = hr_httpd_create(base, &ho, err, errlen);
    if (s->http == NULL) {
        hr_redis_async_destroy(s->redis);
        hist_db_destroy(s->db);
        hist_auth_destroy(s->auth);
        hr_free(s);
        return NULL;
    }
    s->drain.base = base;
    s->drain.httpd = s->http;
    hist_metrics_src_t src = {.db = s->db, .redis = s->redis, .draining = &s->drain.draining};
    hist_metrics_init(&s->metrics, &src);
    return s;
}

int
hist_server_port(const hist_server_t *s)
{
    return hr_httpd_port(s->http);
}

void
hist_server_drain(hist_server_t *s)
{
    hr_http_drain_begin(&s->drain, s->cfg->drain_ms);
}

/*
 * The pool goes first: it answers every request still waiting (503), while
 * the server and Redis still exist; then Redis (pending PUBLISHes and
 * cut-off lookups get their callback), then the server, once every request
 * is answered. A pipelined request those answers release is refused at once
 * (closing).
 */
void
hist_server_destroy(hist_server_t *s)
{
    if (s == NULL)
        return;
    s->closing = 1;
    hist_db_destroy(s->db);
    hr_redis_async_destroy(s->redis);
    hr_http_drain_clear(&s->drain);
    hr_httpd_destroy(s->http);
    hist_metrics_fini(&s->metrics);
    hist_auth_destroy(s->auth);
    hr_free(s);
}
