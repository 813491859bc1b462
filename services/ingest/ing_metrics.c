#include "ing_metrics.h"
#include "hr_proto.h"
#include "herald/hr_core.h"
#include "herald/hr_httpd.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include "herald/hr_alloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Room for the access lines of one loop turn; a fuller buffer is written at once. */
#define ING_LOGBUF (64 * 1024)

static const char *const ing_metrics_routes[] = {"notifications", "batch",   "users",
                                                 "health",        "metrics", "other"};
static const char *const ing_metrics_codes[] = {"2xx", "3xx", "4xx", "5xx"};
static const char *const ing_metrics_deps[] = {"redis"};
/* The error codes ingest answers (proto/openapi.yaml ErrorCode, ingest's and proto/auth.md's). */
static const char *const ing_metrics_errors[] = {
    HR_E_INVALID_JSON,   HR_E_INVALID_FIELD,     HR_E_MISSING_FIELD, HR_E_UNKNOWN_FIELD,
    HR_E_BODY_TOO_LARGE, HR_E_UNSUPPORTED_MEDIA, HR_E_NOT_FOUND,     HR_E_METHOD,
    HR_E_UNAVAILABLE,    HR_E_OUTCOME_UNKNOWN,   HR_E_INTERNAL,      HR_E_IDEMPOTENCY_CONFLICT,
    "unknown_key",       "out_of_scope",         "over_rate",        "other"};

_Static_assert(HR_ARRAY_LEN(ing_metrics_routes) == ING_M_NROUTES, "route label values");

int
ing_metrics_ready(const ing_metrics_t *m)
{
    return hr_redis_async_ready(m->src.redis) && !*m->src.draining;
}

static void
ing_metrics_collect(void *arg)
{
    ing_metrics_t *m = arg;
    hr_gauge_set(&m->readiness.dep_up[0], hr_redis_async_ready(m->src.redis) ? 1 : 0);
    hr_gauge_set(m->readiness.ready, ing_metrics_ready(m) ? 1 : 0);
}

/* Writes the buffered access lines (whole lines: a line never spans two writes). */
static void
ing_log_flush(ing_metrics_t *m)
{
    size_t off = 0;
    while (off < m->loglen) {
        ssize_t w = write(STDERR_FILENO, m->logbuf + off, m->loglen - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* stderr is gone: the lines are dropped, as hr_log_write's would be */
        off += (size_t)w;
    }
    m->loglen = 0;
}

static void
ing_log_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    ing_log_flush(arg);
}

void
ing_metrics_init(ing_metrics_t *m, struct event_base *base, const ing_metrics_src_t *src,
                 hr_uuid_gen_t *uuid, int access_log)
{
    m->logbuf = hr_malloc(ING_LOGBUF);
    m->loglen = 0;
    m->flush = event_new(base, -1, 0, ing_log_flush_cb, m);
    if (m->flush == NULL) {
        fprintf(stderr, "herald: event_new failed\n");
        abort();
    }
    m->src = *src;
    m->uuid = uuid;
    m->access_log = access_log;
    m->reg = hr_metrics_create();
    hr_metrics_t *r = m->reg;
    hr_metrics_add_process(r, "ingest");
    hr_metrics_label_t rc[] = {HR_METRICS_LABEL("route", ing_metrics_routes),
                               HR_METRICS_LABEL("code", ing_metrics_codes)};
    m->requests =
        hr_metrics_counter(r, "herald_ingest_requests_total", "HTTP requests answered", rc, 2);
    m->duration = hr_metrics_histogram(
        r, "herald_ingest_request_duration_seconds", "Request received to answer sent",
        hr_metrics_latency_buckets, hr_metrics_latency_nbuckets, rc, 1);
    m->accepted =
        hr_metrics_counter(r, "herald_ingest_notifications_accepted_total",
                           "Notifications written (a fan-out or batch counts each)", NULL, 0);
    hr_metrics_label_t el = HR_METRICS_LABEL("error", ing_metrics_errors);
    m->rejected = hr_metrics_counter(r, "herald_ingest_rejected_total",
                                     "Requests and batch items refused, by error code", &el, 1);
    m->replays = hr_metrics_counter(r, "herald_ingest_idempotent_replays_total",
                                    "Requests answered from an earlier Idempotency-Key", NULL, 0);
    m->redis_errors = hr_metrics_counter(r, "herald_ingest_redis_errors_total",
                                         "Writes Redis refused, lost or did not answer", NULL, 0);
    m->readiness =
        hr_metrics_add_readiness(r, "ingest", ing_metrics_deps, HR_ARRAY_LEN(ing_metrics_deps));
    hr_metrics_on_collect(r, ing_metrics_collect, m);
}

void
ing_metrics_fini(ing_metrics_t *m)
{
    ing_log_flush(m);
    event_free(m->flush);
    hr_free(m->logbuf);
    hr_metrics_destroy(m->reg);
    m->reg = NULL;
}

/* Whether the path (len bytes) is p exactly. */
static int
ing_path_eq(const char *path, size_t len, const char *p)
{
    return strlen(p) == len && memcmp(path, p, len) == 0;
}

ing_m_route_t
ing_metrics_route(hr_httpd_req_t *req)
{
    size_t len;
    const char *path = hr_httpd_path(req, &len);
    if (path == NULL)
        return ING_M_OTHER;
    if (ing_path_eq(path, len, "/notifications"))
        return ING_M_NOTIFICATIONS;
    if (ing_path_eq(path, len, "/notifications/batch"))
        return ING_M_BATCH;
    if (len > 7 && memcmp(path, "/users/", 7) == 0)
        return ING_M_USERS;
    if (ing_path_eq(path, len, "/healthz") || ing_path_eq(path, len, "/readyz"))
        return ING_M_HEALTH;
    if (ing_path_eq(path, len, "/metrics"))
        return ING_M_METRICS;
    return ING_M_OTHER;
}

const char *
ing_metrics_begin(ing_metrics_t *m, hr_httpd_req_t *req)
{
    const char *given = hr_httpd_header(req, HR_HEADER_REQUEST_ID);
    char id[HR_UUID_STR_LEN];
    if (given == NULL || !hr_proto_token_valid(given, strlen(given), HR_REQUEST_ID_MAX)) {
        uint8_t u[16];
        hr_uuid7_next(m->uuid, hr_now_ms(), u);
        hr_uuid_format(u, id);
        given = id;
    }
    m->route_start_us = hr_mono_us();
    m->key = NULL;
    hr_httpd_add_header(req, HR_HEADER_REQUEST_ID, given);
    return hr_httpd_out_header(req, HR_HEADER_REQUEST_ID);
}

const char *
ing_metrics_request_id(hr_httpd_req_t *req)
{
    const char *id = hr_httpd_out_header(req, HR_HEADER_REQUEST_ID);
    return id != NULL ? id : "-";
}

void
ing_metrics_rejected(ing_metrics_t *m, const char *code)
{
    size_t n = HR_ARRAY_LEN(ing_metrics_errors), i = 0;
    while (i < n - 1 && strcmp(ing_metrics_errors[i], code) != 0)
        i++;
    hr_counter_inc(&m->rejected[i]);
}

void
ing_metrics_answered(ing_metrics_t *m, hr_httpd_req_t *req, int status, uint64_t start_us)
{
    ing_m_route_t route = ing_metrics_route(req);
    /* 1xx is never sent; anything outside 2xx-5xx would be a bug, counted as 5xx. */
    int cls = status >= 200 && status < 600 ? status / 100 - 2 : 3;
    hr_counter_inc(&m->requests[(size_t)route * HR_ARRAY_LEN(ing_metrics_codes) + (size_t)cls]);
    uint64_t us = hr_mono_us() - start_us;
    hr_histogram_observe(&m->duration[route], (double)us / 1e6);
    /* Probes and scrapes come every few seconds from machines: debug, not info. */
    hr_log_level_t level =
        route == ING_M_HEALTH || route == ING_M_METRICS ? HR_LOG_DEBUG : HR_LOG_INFO;
    if (!m->access_log || !hr_log_enabled(level))
        return;
    size_t plen;
    const char *path = hr_httpd_path(req, &plen);
    char qpath[256], qid[2 * HR_REQUEST_ID_MAX + 1];
    hr_log_quote(qpath, sizeof(qpath), path != NULL ? path : "", path != NULL ? plen : 0);
    const char *id = ing_metrics_request_id(req);
    hr_log_quote(qid, sizeof(qid), id, strlen(id));
    if (ING_LOGBUF - m->loglen < HR_LOG_LINE_CAP)
        ing_log_flush(m);
    if (m->loglen == 0)
        event_active(m->flush, EV_TIMEOUT, 1);
    m->loglen +=
        hr_log_format(m->logbuf + m->loglen, ING_LOGBUF - m->loglen, level, "request",
                      "method=%s path=\"%s\" status=%d duration_us=%llu request_id=\"%s\" key=%s",
                      hr_httpd_method_name(req), qpath, status, (unsigned long long)us, qid,
                      m->key != NULL ? m->key : "-");
}

void
ing_metrics_send_error(ing_metrics_t *m, hr_httpd_req_t *req, uint64_t start_us, int status,
                       const char *code, const char *message)
{
    ing_metrics_rejected(m, code);
    ing_metrics_answered(m, req, status, start_us);
    hr_httpd_send_error(req, status, code, message);
}

void
ing_metrics_send_json(ing_metrics_t *m, hr_httpd_req_t *req, uint64_t start_us, int status,
                      const char *json, size_t len)
{
    ing_metrics_answered(m, req, status, start_us);
    hr_httpd_send_json(req, status, json, len);
}

/* /healthz: 200 while the process runs; /readyz (ready_probe): 503 unless ing_metrics_ready. */
static void
ing_send_health(ing_metrics_t *m, hr_httpd_req_t *req, int ready_probe)
{
    int redis = hr_redis_async_ready(m->src.redis), draining = *m->src.draining != 0;
    int ok = !ready_probe || ing_metrics_ready(m);
    char body[128];
    int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"redis\":\"%s\",\"draining\":%s}",
                     ok ? "ok" : "unavailable", redis ? "up" : "down", draining ? "true" : "false");
    int status = ok ? 200 : 503;
    if (!ok)
        hr_httpd_add_header(req, "Retry-After", "1");
    ing_metrics_send_json(m, req, m->route_start_us, status, body, (size_t)n);
}

int
ing_metrics_handle(ing_metrics_t *m, hr_httpd_req_t *req)
{
    size_t len;
    const char *path = hr_httpd_path(req, &len);
    int which = path == NULL                         ? 0
                : ing_path_eq(path, len, "/healthz") ? 1
                : ing_path_eq(path, len, "/readyz")  ? 2
                : ing_path_eq(path, len, "/metrics") ? 3
                                                     : 0;
    if (which == 0)
        return HR_DECLINED;
    hr_httpd_method_t c = hr_httpd_method(req);
    if (c != HR_HTTPD_GET && c != HR_HTTPD_HEAD) {
        ing_metrics_send_error(m, req, m->route_start_us, 405, HR_E_METHOD, "use GET");
    } else if (which == 3) {
        /* Counted before the render, so a scrape includes itself. */
        ing_metrics_answered(m, req, 200, m->route_start_us);
        hr_metrics_send_httpd(req, m->reg);
    } else {
        ing_send_health(m, req, which == 2);
    }
    return 0;
}
