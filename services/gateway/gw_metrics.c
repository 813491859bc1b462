#include "gw_metrics.h"
#include "gw_http.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"

#include <stdio.h>
#include <string.h>

static const char *const gw_connect_results[] = {"ok",           "unauthorized", "invalid_user",
                                                 "draining",     "error",        "forbidden_origin",
                                                 "rate_limited", "unavailable"};
static const char *const gw_close_codes[] = {"1000", "1001", "1003", "1006", "1007", "1008",
                                             "1009", "1011", "4000", "4001", "4003", "other"};
static const unsigned gw_close_values[] = {1000, 1001, 1003, 1006, 1007, 1008,
                                           1009, 1011, 4000, 4001, 4003};
static const char *const gw_frame_types[] = {"join", "leave",   "publish", "presence",
                                             "ping", "refresh", "invalid"};
/* hr_token_reason()'s names plus the gateway's "missing"; "other" catches the rest. */
static const char *const gw_auth_reasons[] = {
    "missing", "malformed", "unknown_kid", "wrong_alg", "bad_signature", "expired", "not_yet_valid",
    "bad_sub", "bad_iss",   "bad_aud",     "revoked",   "sub_changed",   "other"};
static const char *const gw_refresh_results[] = {"ok", "refused"};
static const char *const gw_refused_reasons[] = {"too_big", "too_deep"};
static const char *const gw_dependencies[] = {"redis"};

static void
gw_metrics_collect(void *arg)
{
    gw_metrics_t *gm = arg;
    gw_status_t st = {.want_queued = 1};
    gm->status(gm->ud, &st);
    hr_gauge_set(gm->conns, (double)st.conns);
    hr_gauge_set(gm->queued, (double)st.queued_now);
    hr_gauge_set(gm->channels, (double)st.channels);
    /* The hub counts the cuts where it decides them; mirrored here at scrape. */
    gm->slow->value = st.slow_killed;
    gm->reconnects->value = st.reconnects;
    hr_gauge_set(&gm->readiness.dep_up[0], st.redis_up ? 1 : 0);
    hr_gauge_set(gm->readiness.ready, st.redis_up && st.revocations_loaded && !st.draining ? 1 : 0);
}

gw_metrics_t *
gw_metrics_create(gw_status_fn status, void *ud)
{
    gw_metrics_t *gm = hr_calloc(1, sizeof(*gm));
    gm->status = status;
    gm->ud = ud;
    hr_metrics_t *m = hr_metrics_create();
    gm->reg = m;
    hr_metrics_add_process(m, "gateway");
    hr_metrics_label_t result = HR_METRICS_LABEL("result", gw_connect_results);
    hr_metrics_label_t code = HR_METRICS_LABEL("code", gw_close_codes);
    hr_metrics_label_t type = HR_METRICS_LABEL("type", gw_frame_types);
    hr_metrics_label_t reason = HR_METRICS_LABEL("reason", gw_auth_reasons);
    hr_metrics_label_t rresult = HR_METRICS_LABEL("result", gw_refresh_results);
    hr_metrics_label_t fr = HR_METRICS_LABEL("reason", gw_refused_reasons);
    gm->readiness =
        hr_metrics_add_readiness(m, "gateway", gw_dependencies, HR_ARRAY_LEN(gw_dependencies));
    gm->conns = hr_metrics_gauge(m, "herald_gateway_connections", "Open WebSockets.", NULL, 0);
    gm->connects = hr_metrics_counter(m, "herald_gateway_connects_total",
                                      "WebSocket upgrade attempts by outcome.", &result, 1);
    gm->disconnects = hr_metrics_counter(m, "herald_gateway_disconnects_total",
                                         "Closed sockets by close code.", &code, 1);
    gm->frames_out = hr_metrics_counter(m, "herald_gateway_frames_out_total",
                                        "Frames written to clients.", NULL, 0);
    gm->bytes_out = hr_metrics_counter(m, "herald_gateway_bytes_out_total",
                                       "Payload bytes written to clients.", NULL, 0);
    gm->frames_in =
        hr_metrics_counter(m, "herald_gateway_frames_in_total", "Client frames by type.", &type, 1);
    gm->auth_refusals =
        hr_metrics_counter(m, "herald_gateway_auth_refusals_total",
                           "Upgrades refused 401 by the token check, by reason.", &reason, 1);
    gm->refreshes = hr_metrics_counter(m, "herald_gateway_refreshes_total",
                                       "Refresh frames by outcome.", &rresult, 1);
    gm->frames_refused = hr_metrics_counter(
        m, "herald_gateway_frames_refused_total",
        "Client frames refused unread: too big (close 1009) or nested too deep.", &fr, 1);
    gm->revoked_closes =
        hr_metrics_counter(m, "herald_gateway_revoked_closes_total",
                           "Sockets closed (4003) by a disconnect or revocation order.", NULL, 0);
    gm->slow =
        hr_metrics_counter(m, "herald_gateway_slow_consumers_total",
                           "Sockets closed because their outbound queue overflowed.", NULL, 0);
    gm->queued = hr_metrics_gauge(m, "herald_gateway_queued_frames",
                                  "Frames waiting in all outbound queues.", NULL, 0);
    gm->channels = hr_metrics_gauge(m, "herald_gateway_channels",
                                    "Redis Pub/Sub channels subscribed (users + rooms).", NULL, 0);
    gm->reconnects = hr_metrics_counter(m, "herald_gateway_redis_reconnects_total",
                                        "Redis connections re-established after a loss.", NULL, 0);
    gm->delay =
        hr_metrics_histogram(m, "herald_gateway_delivery_delay_seconds",
                             "A notification's created_at to its write to the socket, seconds.",
                             hr_metrics_latency_buckets, hr_metrics_latency_nbuckets, NULL, 0);
    hr_metrics_on_collect(m, gw_metrics_collect, gm);
    return gm;
}

void
gw_metrics_destroy(gw_metrics_t *gm)
{
    if (gm == NULL)
        return;
    hr_metrics_destroy(gm->reg);
    hr_free(gm->out);
    hr_free(gm);
}

void
gw_metrics_disconnect(gw_metrics_t *gm, unsigned code)
{
    size_t i;
    if (code == 0)
        code = 1006;
    for (i = 0; i < HR_ARRAY_LEN(gw_close_values); i++)
        if (gw_close_values[i] == code)
            break;
    hr_counter_inc(&gm->disconnects[i]);
}

void
gw_metrics_refused_upgrade(gw_metrics_t *gm, unsigned status, const char *reason)
{
    size_t r = status == 401   ? GW_CONNECT_UNAUTHORIZED
               : status == 403 ? GW_CONNECT_FORBIDDEN_ORIGIN
               : status == 429 ? GW_CONNECT_RATE_LIMITED
                               : GW_CONNECT_ERROR;
    hr_counter_inc(&gm->connects[r]);
    if (status != 401)
        return;
    size_t i = HR_ARRAY_LEN(gw_auth_reasons) - 1;
    for (size_t k = 0; reason != NULL && k + 1 < HR_ARRAY_LEN(gw_auth_reasons); k++)
        if (strcmp(reason, gw_auth_reasons[k]) == 0)
            i = k;
    hr_counter_inc(&gm->auth_refusals[i]);
}

void
gw_metrics_refresh(gw_metrics_t *gm, int ok)
{
    hr_counter_inc(&gm->refreshes[ok ? 0 : 1]);
}

void
gw_metrics_frame_in(gw_metrics_t *gm, const char *type)
{
    size_t i = GW_IN_INVALID;
    for (size_t k = 0; type != NULL && k < GW_IN_INVALID; k++)
        if (strcmp(type, gw_frame_types[k]) == 0)
            i = k;
    hr_counter_inc(&gm->frames_in[i]);
}

void
gw_metrics_delivered(gw_metrics_t *gm, const char *frame, size_t len, uint64_t now_ms)
{
    static const char head[] = "{\"type\":\"notification\",\"notification\":{\"id\":\"";
    size_t hl = sizeof(head) - 1;
    if (len < hl + 36 || memcmp(frame, head, hl) != 0)
        return;
    /* A UUIDv7's first 48 bits are its Unix milliseconds: created_at, without parsing JSON. */
    const char *id = frame + hl;
    uint64_t ms = 0;
    for (size_t i = 0; i < 13; i++) {
        char c = id[i];
        if (i == 8) {
            if (c != '-')
                return;
            continue;
        }
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return;
        ms = ms << 4 | (uint64_t)v;
    }
    hr_histogram_observe(gm->delay, now_ms > ms ? (double)(now_ms - ms) / 1000.0 : 0.0);
}

/* 200 with the rendered registry, through a buffer kept for the next scrape. */
static int
gw_metrics_send(gw_metrics_t *gm, struct lws *wsi)
{
    size_t len;
    const char *text = hr_metrics_render(gm->reg, &len);
    if (gm->outcap < LWS_PRE + len) {
        gm->outcap = (LWS_PRE + len) * 2;
        gm->out = hr_realloc(gm->out, gm->outcap);
    }
    memcpy(gm->out + LWS_PRE, text, len);
    unsigned char hdr[LWS_PRE + 256], *start = hdr + LWS_PRE, *p = start,
                                      *end = hdr + sizeof(hdr) - 1;
    if (lws_add_http_common_headers(wsi, 200, HR_METRICS_CONTENT_TYPE, (lws_filepos_t)len, &p,
                                    end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    /* lws keeps what the kernel does not take and writes it before anything else. */
    if (lws_write(wsi, gm->out + LWS_PRE, len, LWS_WRITE_HTTP_FINAL) != (int)len)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

int
gw_metrics_http(gw_metrics_t *gm, struct lws *wsi, const char *uri)
{
    if (uri != NULL && strcmp(uri, "/metrics") == 0)
        return gw_metrics_send(gm, wsi);
    int health = uri != NULL && strcmp(uri, "/healthz") == 0;
    if (health || (uri != NULL && strcmp(uri, "/readyz") == 0)) {
        gw_status_t st = {0};
        gm->status(gm->ud, &st);
        /* Ready also needs the cut-offs: until then upgrades are refused (503). */
        int ready = st.redis_up && st.revocations_loaded && !st.draining;
        char body[480];
        /* /healthz: alive, always 200; the counts are for operators and tests. */
        snprintf(body, sizeof(body),
                 "{\"status\":\"%s\",\"redis\":\"%s\",\"draining\":%s,\"node\":\"%s\","
                 "\"connections\":%llu,\"users\":%llu,\"rooms\":%llu,"
                 "\"memberships\":%llu,\"frames_queued\":%llu,\"slow_consumers_closed\":%llu,"
                 "\"receipts_pending\":%zu,\"revocations_loaded\":%s}",
                 health  ? "ok"
                 : ready ? "ready"
                         : "unavailable",
                 st.redis_up ? "up" : "down", st.draining ? "true" : "false", st.node_id,
                 (unsigned long long)st.conns, (unsigned long long)st.users,
                 (unsigned long long)st.rooms, (unsigned long long)st.memberships,
                 (unsigned long long)st.queued, (unsigned long long)st.slow_killed,
                 st.receipts_pending, st.revocations_loaded ? "true" : "false");
        return gw_http_reply(wsi, health || ready ? 200 : 503, body);
    }
    return gw_http_reply(wsi, 404,
                         "{\"error\":{\"code\":\"not_found\",\"message\":\"WebSocket "
                         "endpoint is /ws\"}}");
}
