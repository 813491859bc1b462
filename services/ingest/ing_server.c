#include "ing_server.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_http.h"
#include "herald/hr_log.h"
#include "herald/hr_redis.h"
#include "herald/hr_time.h"
#include "herald/hr_uuid.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <string.h>

const hr_cfg_field_t ing_config_fields[] = {
    {"ingest.host", HR_CFG_STR, offsetof(ing_config_t, host), "127.0.0.1", 0, 0},
    {"ingest.port", HR_CFG_INT, offsetof(ing_config_t, port), "8080", 0, 65535},
    {"ingest.drain_ms", HR_CFG_INT, offsetof(ing_config_t, drain_ms), "5000", 0, 600000},
    {"redis.url", HR_CFG_STR, offsetof(ing_config_t, redis_url), "redis://127.0.0.1:6379", 0, 0},
    {"redis.timeout_ms", HR_CFG_INT, offsetof(ing_config_t, redis_timeout_ms), "2000", 10, 600000},
    {"log.level", HR_CFG_STR, offsetof(ing_config_t, log_level), "info", 0, 0},
};
const size_t ing_config_nfields = HR_ARRAY_LEN(ing_config_fields);

/*
 * KEYS[1] notifications stream, KEYS[2] the user's channel
 * ARGV[1] id, ARGV[2] user_id, ARGV[3] envelope JSON, ARGV[4] WebSocket frame
 * Reply: the stream entry id. Atomic, so the live and durable paths never
 * disagree: either both happen or neither does.
 */
static const char ing_lua_notify[] =
    "local sid = redis.call('XADD', KEYS[1], '*', '" HR_FIELD_ID "', ARGV[1], '" HR_FIELD_USER_ID
    "', ARGV[2], '" HR_FIELD_PAYLOAD "', ARGV[3])\n"
    "redis.call('PUBLISH', KEYS[2], ARGV[4])\n"
    "return sid\n";

struct ing_server_s {
    struct event_base *base;              /* borrowed */
    const ing_config_t *cfg;              /* borrowed */
    struct evhttp *http;                  /* owned */
    struct evhttp_bound_socket *listener; /* owned by http */
    int port;
    hr_redis_async_t *redis; /* owned */
    hr_uuid_gen_t uuid;
    unsigned inflight; /* requests waiting for Redis */
    int draining;
    struct event *drain_timer; /* owned */
};

/* One accepted POST waiting for its Redis reply; freed in the reply callback. */
typedef struct {
    ing_server_t *srv;          /* borrowed */
    struct evhttp_request *req; /* borrowed: evhttp keeps it until we reply */
    char id[HR_UUID_STR_LEN];
    char created_at[HR_TIME_ISO_LEN];
} ing_pending_t;

static void
ing_maybe_finish_drain(ing_server_t *s)
{
    if (s->draining && s->inflight == 0)
        event_base_loopexit(s->base, NULL);
}

static void
ing_notify_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    HR_UNUSED(ac);
    ing_pending_t *p = privdata;
    ing_server_t *s = p->srv;
    redisReply *r = reply;

    if (r == NULL) {
        hr_log_warn("publish_failed", "id=%s error=\"redis connection lost\"", p->id);
        hr_http_send_error(p->req, 503, HR_E_UNAVAILABLE,
                           "redis connection lost; the notification may not be stored, retry");
    } else if (r->type == REDIS_REPLY_ERROR) {
        hr_log_error("publish_failed", "id=%s error=\"%s\"", p->id, r->str);
        hr_http_send_error(p->req, 503, HR_E_UNAVAILABLE, "redis refused the write; retry");
    } else {
        char body[160];
        int n = snprintf(body, sizeof(body), "{\"id\":\"%s\",\"created_at\":\"%s\"}", p->id,
                         p->created_at);
        hr_http_send_json(p->req, 202, body, (size_t)n);
    }
    hr_free(p);
    s->inflight--;
    ing_maybe_finish_drain(s);
}

static void
ing_handle_post(ing_server_t *s, struct evhttp_request *req)
{
    hr_proto_err_t e;
    hr_notification_t n = {0};

    if (!hr_http_is_json(req)) {
        hr_http_send_error(req, 415, HR_E_UNSUPPORTED_MEDIA,
                           "Content-Type must be application/json");
        return;
    }
    size_t len;
    const char *body = hr_http_body(req, &len);
    if (hr_proto_parse_request(body, len, &n, &e) != 0) {
        hr_log_debug("request_refused", "code=%s", e.code);
        hr_http_send_error(req, e.status, e.code, e.message);
        return;
    }
    if (s->draining || !hr_redis_async_ready(s->redis)) {
        hr_notification_clear(&n);
        hr_http_send_error(req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
        return;
    }

    hr_proto_assign_id(&n, &s->uuid, hr_now_ms());
    size_t env_len, frame_len;
    char *env = hr_proto_envelope_encode(&n, &env_len);
    char *frame = hr_proto_frame_notification(env, env_len, &frame_len);
    char channel[HR_USER_ID_MAX + 32];
    size_t ch_len = hr_proto_user_channel(channel, sizeof(channel), n.user_id);

    const char *argv[] = {
        "EVAL", ing_lua_notify, "2", HR_STREAM_NOTIFICATIONS, channel, n.id, n.user_id, env, frame};
    size_t argvlen[] = {4,
                        sizeof(ing_lua_notify) - 1,
                        1,
                        strlen(HR_STREAM_NOTIFICATIONS),
                        ch_len,
                        strlen(n.id),
                        strlen(n.user_id),
                        env_len,
                        frame_len};

    ing_pending_t *p = hr_malloc(sizeof(*p));
    p->srv = s;
    p->req = req;
    memcpy(p->id, n.id, sizeof(p->id));
    memcpy(p->created_at, n.created_at, sizeof(p->created_at));
    int rc =
        hr_redis_async_argv(s->redis, ing_notify_done, p, (int)HR_ARRAY_LEN(argv), argv, argvlen);
    hr_free(env);
    hr_free(frame);
    hr_notification_clear(&n);
    if (rc != 0) {
        hr_free(p);
        hr_http_send_error(req, 503, HR_E_UNAVAILABLE, "redis is not reachable; retry");
        return;
    }
    s->inflight++;
}

static void
ing_handle_health(ing_server_t *s, struct evhttp_request *req)
{
    int ok = hr_redis_async_ready(s->redis) && !s->draining;
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

    hr_redis_async_opts_t ro = {
        .url = cfg->redis_url, .name = "ingest", .command_timeout_ms = cfg->redis_timeout_ms};
    s->redis = hr_redis_async_create(&hr_loop_ops_libevent, base, &ro, err, errlen);
    if (s->redis == NULL) {
        hr_free(s);
        return NULL;
    }
    s->http = hr_http_listen(base, cfg->host, cfg->port, HR_BODY_MAX, &s->port, &s->listener, err,
                             errlen);
    if (s->http == NULL) {
        hr_redis_async_destroy(s->redis);
        hr_free(s);
        return NULL;
    }
    evhttp_set_gencb(s->http, ing_route, s);
    return s;
}

int
ing_server_port(const ing_server_t *s)
{
    return s->port;
}

static void
ing_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    ing_server_t *s = arg;
    hr_log_warn("drain_timeout", "inflight=%u", s->inflight);
    event_base_loopexit(s->base, NULL);
}

void
ing_server_drain(ing_server_t *s)
{
    if (s->draining)
        return;
    s->draining = 1;
    hr_log_info("draining", "inflight=%u", s->inflight);
    /* Closing the listener stops new connections; open ones get 503 from now on. */
    if (s->listener != NULL) {
        evhttp_del_accept_socket(s->http, s->listener);
        s->listener = NULL;
    }
    s->drain_timer = evtimer_new(s->base, ing_drain_timeout, s);
    struct timeval tv = {s->cfg->drain_ms / 1000, (s->cfg->drain_ms % 1000) * 1000};
    evtimer_add(s->drain_timer, &tv);
    ing_maybe_finish_drain(s);
}

void
ing_server_destroy(ing_server_t *s)
{
    if (s == NULL)
        return;
    if (s->drain_timer)
        event_free(s->drain_timer);
    hr_redis_async_destroy(s->redis);
    evhttp_free(s->http);
    hr_free(s);
}
