/*
 * The worker's small HTTP listener: GET /metrics, /healthz, /readyz
 * (proto/metrics.md). The worker is a blocking, single-threaded loop, so the
 * listener is an hr_httpd server on the worker's own event_base that the loop
 * runs between steps (wrk_http_poll) and instead of sleeping during backoff
 * (wrk_http_wait). A request waits at most one step: an XREADGROUP BLOCK of
 * worker.block_ms or one commit. No thread, so metrics need no locks and the
 * samplers may use the worker's Redis connection, which is idle whenever
 * the listener runs.
 */
#include "wrk_internal.h"
#include "herald/hr_httpd.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRK_PROBE_MS 1000

static const char *const wrk_tables[WRK_NTABLES] = {"notifications", "room_messages", "receipts"};
static const char *const wrk_deps[] = {"redis", "postgres"};
static const char *const wrk_len_streams[] = {"notifications", "room_messages", "dead_letters"};

static int
wrk_redis_live(const wrk_worker_t *w)
{
    return w->redis != NULL && !w->redis_link.down;
}

static int
wrk_pg_live(const wrk_worker_t *w)
{
    return w->pg != NULL && PQstatus(w->pg) == CONNECTION_OK && !w->pg_link.down &&
           !w->migrate_failed;
}

/* An integer reply, or -1. */
static long long
wrk_int_cmd(wrk_worker_t *w, int argc, const char **argv)
{
    redisReply *r = wrk_redis_cmd(w, argc, argv, NULL);
    if (r == NULL)
        return -1;
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return v;
}

/* The ms part of a stream id "ms-seq". */
static uint64_t
wrk_sid_ms(const char *sid)
{
    return strtoull(sid, NULL, 10);
}

/*
 * The ms of the oldest entry of stream s not yet committed: the oldest
 * pending (delivered, not acked) one, else the first not yet delivered to the
 * group. Sets *pending to the stream's pending count. Returns 0 if there is
 * none or Redis did not answer.
 */
static uint64_t
wrk_oldest_ms(wrk_worker_t *w, int s, long long *pending)
{
    const char *name = wrk_stream_name(s);
    *pending = 0;
    const char *xp[] = {"XPENDING", name, HR_GROUP_WORKERS};
    redisReply *r = wrk_redis_cmd(w, 3, xp, NULL);
    if (r == NULL)
        return 0;
    uint64_t oldest = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER) {
        *pending = r->element[0]->integer;
        if (r->element[1]->type == REDIS_REPLY_STRING)
            oldest = wrk_sid_ms(r->element[1]->str);
    }
    freeReplyObject(r);
    if (oldest != 0 || w->redis == NULL)
        return oldest;

    const char *xi[] = {"XINFO", "GROUPS", name};
    if ((r = wrk_redis_cmd(w, 3, xi, NULL)) == NULL)
        return 0;
    char after[WRK_SID_MAX + 1] = "";
    for (size_t g = 0; r->type == REDIS_REPLY_ARRAY && g < r->elements; g++) {
        const redisReply *f = r->element[g];
        int ours = 0;
        const char *last = NULL;
        for (size_t k = 0; f->type == REDIS_REPLY_ARRAY && k + 1 < f->elements; k += 2) {
            if (f->element[k]->type != REDIS_REPLY_STRING ||
                f->element[k + 1]->type != REDIS_REPLY_STRING)
                continue;
            if (strcmp(f->element[k]->str, "name") == 0)
                ours = strcmp(f->element[k + 1]->str, HR_GROUP_WORKERS) == 0;
            else if (strcmp(f->element[k]->str, "last-delivered-id") == 0)
                last = f->element[k + 1]->str;
        }
        if (ours && last != NULL)
            snprintf(after, sizeof(after), "(%s", last);
    }
    freeReplyObject(r);
    if (after[0] == '\0')
        return 0;
    const char *xr[] = {"XRANGE", name, after, "+", "COUNT", "1"};
    if ((r = wrk_redis_cmd(w, 6, xr, NULL)) == NULL)
        return 0;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements >= 1 &&
        r->element[0]->element[0]->type == REDIS_REPLY_STRING)
        oldest = wrk_sid_ms(r->element[0]->element[0]->str);
    freeReplyObject(r);
    return oldest;
}

/*
 * Sampler run at each render: readiness and links from the worker's state,
 * stream lengths, pending entries and lag from Redis (a few commands per
 * scrape, on the idle connection; skipped while Redis is down, leaving the
 * last values).
 */
static void
wrk_collect(void *arg)
{
    wrk_worker_t *w = arg;
    wrk_metrics_t *m = &w->m;
    hr_gauge_set(&m->readiness.dep_up[0], wrk_redis_live(w));
    hr_gauge_set(&m->readiness.dep_up[1], wrk_pg_live(w));
    hr_gauge_set(m->readiness.ready, wrk_redis_live(w) && wrk_pg_live(w) && !*w->stop);
    if (w->redis == NULL)
        return;
    const char *len_of[] = {HR_STREAM_NOTIFICATIONS, HR_STREAM_ROOM_MESSAGES,
                            HR_STREAM_DEAD_LETTER};
    for (size_t i = 0; i < HR_ARRAY_LEN(len_of) && w->redis != NULL; i++) {
        const char *argv[] = {"XLEN", len_of[i]};
        long long n = wrk_int_cmd(w, 2, argv);
        if (n >= 0)
            hr_gauge_set(&m->stream_len[i], (double)n);
    }
    long long pending = 0;
    uint64_t oldest = 0;
    for (int s = 0; s < WRK_NSTREAMS && w->redis != NULL; s++) {
        long long p = 0;
        uint64_t o = wrk_oldest_ms(w, s, &p);
        pending += p;
        if (o != 0 && (oldest == 0 || o < oldest))
            oldest = o;
    }
    if (w->redis == NULL)
        return;
    hr_gauge_set(m->pending, (double)pending);
    uint64_t now = wrk_redis_now_ms(w);
    hr_gauge_set(m->lag, oldest != 0 && now > oldest ? (double)(now - oldest) / 1000.0 : 0.0);
}

static void
wrk_send_readyz(hr_httpd_req_t *req, wrk_worker_t *w)
{
    int redis = wrk_redis_live(w), pg = wrk_pg_live(w), draining = *w->stop != 0;
    char body[160];
    int n;
    if (redis && pg && !draining) {
        n = snprintf(body, sizeof(body), "{\"status\":\"ready\"}");
        hr_httpd_send_json(req, 200, body, (size_t)n);
        return;
    }
    n = snprintf(body, sizeof(body),
                 "{\"status\":\"not_ready\",\"redis\":\"%s\",\"postgres\":\"%s\","
                 "\"draining\":%s}",
                 redis ? "up" : "down", pg ? "up" : "down", draining ? "true" : "false");
    hr_httpd_send_json(req, 503, body, (size_t)n);
}

static void
wrk_http_cb(hr_httpd_req_t *req, void *arg)
{
    wrk_worker_t *w = arg;
    hr_httpd_method_t cmd = hr_httpd_method(req);
    size_t plen;
    const char *uri = hr_httpd_path(req, &plen);
    if (cmd != HR_HTTPD_GET && cmd != HR_HTTPD_HEAD) {
        hr_httpd_send_error(req, 405, "method_not_allowed", "only GET and HEAD");
        return;
    }
    if (plen == 8 && strncmp(uri, "/metrics", 8) == 0) {
        hr_metrics_send_httpd(req, w->m.reg);
    } else if (plen == 8 && strncmp(uri, "/healthz", 8) == 0) {
        static const char ok[] = "{\"status\":\"ok\"}";
        hr_httpd_send_json(req, 200, ok, sizeof(ok) - 1);
    } else if (plen == 7 && strncmp(uri, "/readyz", 7) == 0) {
        wrk_send_readyz(req, w);
    } else {
        hr_httpd_send_error(req, 404, "not_found", "no such path");
    }
}

static void
wrk_metrics_register(wrk_worker_t *w)
{
    wrk_metrics_t *m = &w->m;
    m->reg = hr_metrics_create();
    hr_metrics_add_process(m->reg, "worker");
    m->readiness = hr_metrics_add_readiness(m->reg, "worker", wrk_deps, HR_ARRAY_LEN(wrk_deps));
    hr_metrics_label_t table = HR_METRICS_LABEL("table", wrk_tables);
    m->rows =
        hr_metrics_counter(m->reg, "herald_worker_rows_inserted_total",
                           "Rows inserted (receipts: applied), duplicates not counted", &table, 1);
    m->batches = hr_metrics_counter(m->reg, "herald_worker_batches_total", "Transactions committed",
                                    NULL, 0);
    m->batch_size = hr_metrics_histogram(
        m->reg, "herald_worker_batch_size", "Stream entries per committed batch",
        hr_metrics_size_buckets, hr_metrics_size_nbuckets, NULL, 0);
    m->commit_seconds = hr_metrics_histogram(
        m->reg, "herald_worker_commit_duration_seconds", "COPY and commit of one batch",
        hr_metrics_latency_buckets, hr_metrics_latency_nbuckets, NULL, 0);
    m->acks = hr_metrics_counter(m->reg, "herald_worker_acks_total", "Entries XACKed after commit",
                                 NULL, 0);
    m->claims = hr_metrics_counter(m->reg, "herald_worker_claims_total",
                                   "Entries claimed from idle consumers", NULL, 0);
    m->dead = hr_metrics_counter(m->reg, "herald_worker_dead_letters_total",
                                 "Entries moved to the dead-letter stream", NULL, 0);
    hr_metrics_label_t stream = HR_METRICS_LABEL("stream", wrk_len_streams);
    m->stream_len =
        hr_metrics_gauge(m->reg, "herald_worker_stream_length", "XLEN, sampled", &stream, 1);
    m->pending =
        hr_metrics_gauge(m->reg, "herald_worker_pending_entries",
                         "Entries delivered to the group and not yet acked, sampled", NULL, 0);
    m->lag =
        hr_metrics_gauge(m->reg, "herald_worker_lag_seconds",
                         "Age of the oldest entry not yet committed (0 when caught up)", NULL, 0);
    hr_metrics_on_collect(m->reg, wrk_collect, w);
}

int
wrk_http_start(wrk_worker_t *w, char *err, size_t errlen)
{
    w->base = event_base_new();
    if (w->base == NULL) {
        snprintf(err, errlen, "event_base_new failed");
        return HR_ERR;
    }
    wrk_metrics_register(w);
    hr_httpd_opts_t o = {0};
    o.host = w->cfg->host;
    o.port = w->cfg->port;
    o.max_body = 1024; /* GET only */
    o.max_connections = 64;
    o.cb = wrk_http_cb;
    o.cbarg = w;
    char herr[256];
    w->http = hr_httpd_create(w->base, &o, herr, sizeof(herr));
    if (w->http == NULL) {
        snprintf(err, errlen, "worker.host/worker.port %s:%d: %s", w->cfg->host, w->cfg->port,
                 herr);
        wrk_err_safe(err);
        return HR_ERR;
    }
    hr_log_info("listening", "host=%s port=%d paths=/metrics,/healthz,/readyz", w->cfg->host,
                hr_httpd_port(w->http));
    return 0;
}

void
wrk_http_poll(wrk_worker_t *w)
{
    if (w->base != NULL)
        event_base_loop(w->base, EVLOOP_NONBLOCK);
}

void
wrk_http_wait(wrk_worker_t *w, uint32_t ms)
{
    if (w->base == NULL)
        return;
    struct timeval tv = {ms / 1000, (long)(ms % 1000) * 1000};
    event_base_loopexit(w->base, &tv);
    event_base_loop(w->base, 0);
}

/*
 * While no batch needs it, nothing would notice that PostgreSQL closed the
 * connection (a restart, a fast shutdown) or that it is back, and /readyz
 * would lie: once a second, read what the server sent (non-blocking; a
 * FATAL and EOF make the connection bad) and reconnect a lost one.
 */
void
wrk_pg_probe(wrk_worker_t *w)
{
    uint64_t now = hr_mono_ms();
    if (now < w->next_probe_ms)
        return;
    w->next_probe_ms = now + WRK_PROBE_MS;
    if (w->pg != NULL) {
        if (PQconsumeInput(w->pg) == 1 && PQstatus(w->pg) == CONNECTION_OK)
            return;
        char err[256];
        snprintf(err, sizeof(err), "connection lost: %s", PQerrorMessage(w->pg));
        wrk_pg_drop(w);
        wrk_link_fail(&w->pg_link, err);
        return;
    }
    if (!w->migrate_failed)
        wrk_pg_ready(w);
}

void
wrk_http_stop(wrk_worker_t *w)
{
    if (w->http != NULL)
        hr_httpd_destroy(w->http);
    w->http = NULL;
    if (w->m.reg != NULL)
        hr_metrics_destroy(w->m.reg);
    w->m.reg = NULL;
    if (w->base != NULL)
        event_base_free(w->base);
    w->base = NULL;
}
