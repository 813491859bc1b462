#include "hist_server.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_http.h"
#include "herald/hr_json.h"
#include "herald/hr_log.h"

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reconnect pacing while PostgreSQL is down. */
#define HIST_PG_BACKOFF_MIN_MS 250
#define HIST_PG_BACKOFF_MAX_MS 5000

/* Requests carry no body; anything bigger than this is not ours to read. */
#define HIST_BODY_MAX 4096

#define HIST_ALLOW "GET, HEAD, OPTIONS"

const hr_cfg_field_t hist_config_fields[] = {
    {"history.host", HR_CFG_STR, offsetof(hist_config_t, host), "127.0.0.1", 0, 0},
    {"history.port", HR_CFG_INT, offsetof(hist_config_t, port), "8082", 0, 65535},
    {"history.cors_origin", HR_CFG_STR, offsetof(hist_config_t, cors_origin), "*", 0, 0},
    {"postgres.url", HR_CFG_STR, offsetof(hist_config_t, postgres_url),
     "host=127.0.0.1 port=5432 dbname=herald user=postgres", 0, 0},
    {"log.level", HR_CFG_STR, offsetof(hist_config_t, log_level), "info", 0, 0},
};
const size_t hist_config_nfields = HR_ARRAY_LEN(hist_config_fields);

struct hist_server_s {
    struct event_base *base;              /* borrowed */
    const hist_config_t *cfg;             /* borrowed */
    struct evhttp *http;                  /* owned */
    struct evhttp_bound_socket *listener; /* owned by http */
    int port;
    hist_db_t *db; /* owned */
};

/* ---- query string ---- */

static int
hist_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Decodes s[0..n) of a query string (%XX escapes, '+' as space) into out,
 * NUL-terminated. Returns the decoded length, or -1 when an escape is
 * malformed, decodes to a NUL byte, or the result does not fit in cap.
 */
static int
hist_query_unescape(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < n ? hist_hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hist_hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return (int)o;
}

static int
hist_fail(hr_proto_err_t *e, const char *code, const char *fmt, ...)
{
    va_list ap;
    e->status = 400;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return HR_DECLINED;
}

/* The rule ingest applies to user_id: 1..HR_USER_ID_MAX bytes of UTF-8, no control characters. */
static int
hist_valid_user_id(const char *s, size_t n)
{
    if (n == 0 || n > HR_USER_ID_MAX || !hr_utf8_valid(s, n))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

int
hist_list_query_parse(const char *query, hist_list_query_t *q, hr_proto_err_t *e)
{
    memset(q, 0, sizeof(*q));
    q->limit = HIST_LIMIT_DEFAULT;
    int have_user = 0, have_limit = 0;

    for (const char *p = query != NULL ? query : ""; *p != '\0';) {
        size_t seg = strcspn(p, "&");
        const char *eq = memchr(p, '=', seg);
        size_t klen = eq != NULL ? (size_t)(eq - p) : seg;
        const char *v = eq != NULL ? eq + 1 : p + seg;
        size_t vlen = eq != NULL ? seg - klen - 1 : 0;
        char key[16];
        int kl = hist_query_unescape(p, klen, key, sizeof(key));

        if (kl > 0 && strcmp(key, "user_id") == 0) {
            if (have_user++)
                return hist_fail(e, HR_E_INVALID_FIELD, "user_id must be given once");
            int n = hist_query_unescape(v, vlen, q->user_id, sizeof(q->user_id));
            if (n < 0 || !hist_valid_user_id(q->user_id, (size_t)n))
                return hist_fail(e, HR_E_INVALID_FIELD,
                                 "user_id must be 1-%d bytes of UTF-8 without control characters",
                                 HR_USER_ID_MAX);
        } else if (kl > 0 && strcmp(key, "limit") == 0) {
            if (have_limit++)
                return hist_fail(e, HR_E_INVALID_FIELD, "limit must be given once");
            char num[8];
            int n = hist_query_unescape(v, vlen, num, sizeof(num));
            int ok = n > 0;
            for (int i = 0; ok && i < n; i++)
                ok = num[i] >= '0' && num[i] <= '9';
            long l = ok ? strtol(num, NULL, 10) : 0;
            if (l < 1 || l > HIST_LIMIT_MAX)
                return hist_fail(e, HR_E_INVALID_FIELD, "limit must be an integer from 1 to %d",
                                 HIST_LIMIT_MAX);
            q->limit = (int)l;
        }
        p += seg;
        if (*p == '&')
            p++;
    }
    if (!have_user)
        return hist_fail(e, HR_E_MISSING_FIELD, "user_id is required");
    return 0;
}

/* ---- responses ---- */

static void
hist_add_time(cJSON *o, const char *key, const char *iso)
{
    if (iso[0] != '\0')
        cJSON_AddStringToObject(o, key, iso);
    else
        cJSON_AddNullToObject(o, key);
}

/*
 * {"items":[envelope + delivered_at + read_at, ...]} in page order. data is
 * jsonb's own text, valid JSON by construction, so it goes in raw. Returns the
 * text (owned by caller, hr_free) and its length in *len.
 */
static char *
hist_page_encode(const hist_page_t *page, size_t *len)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(root, "items");
    for (size_t i = 0; i < page->n; i++) {
        const hist_item_t *it = &page->items[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", it->id);
        cJSON_AddStringToObject(o, "user_id", it->user_id);
        cJSON_AddStringToObject(o, "type", it->type);
        cJSON_AddStringToObject(o, "message", it->message);
        if (it->data_json != NULL)
            cJSON_AddRawToObject(o, "data", it->data_json);
        else
            cJSON_AddNullToObject(o, "data");
        cJSON_AddStringToObject(o, "created_at", it->created_at);
        hist_add_time(o, "delivered_at", it->delivered_at);
        hist_add_time(o, "read_at", it->read_at);
        cJSON_AddItemToArray(items, o);
    }
    char *s = hr_json_print(root);
    cJSON_Delete(root);
    *len = strlen(s);
    return s;
}

/* Answers a query that PostgreSQL could not serve; status is HR_AGAIN or HR_ERR. */
static void
hist_send_db_error(struct evhttp_request *req, int status)
{
    if (status == HR_AGAIN)
        hr_http_send_error(req, 503, HR_E_UNAVAILABLE, "postgres is not reachable; retry");
    else
        hr_http_send_error(req, 500, HR_E_INTERNAL, "the query failed");
}

/*
 * The request is borrowed: while hist_db answers synchronously it cannot go
 * away. An asynchronous hist_db must hold it across the wait (and learn of a
 * client that hangs up) before answering here.
 */
static void
hist_list_done(int status, const hist_page_t *page, void *arg)
{
    struct evhttp_request *req = arg;
    if (status != 0) {
        hist_send_db_error(req, status);
        return;
    }
    size_t len;
    char *body = hist_page_encode(page, &len);
    hr_http_send_json(req, 200, body, len);
    hr_free(body);
}

static void
hist_handle_list(hist_server_t *s, struct evhttp_request *req)
{
    hist_list_query_t q;
    hr_proto_err_t e;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    if (hist_list_query_parse(query, &q, &e) != 0) {
        hr_log_debug("request_refused", "code=%s", e.code);
        hr_http_send_error(req, e.status, e.code, e.message);
        return;
    }
    hist_db_list(s->db, &q, hist_list_done, req);
}

static void
hist_health_done(int status, void *arg)
{
    struct evhttp_request *req = arg;
    int ok = status == 0;
    char body[96];
    int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"postgres\":\"%s\"}",
                     ok ? "ok" : "unavailable", ok ? "up" : "down");
    hr_http_send_json(req, ok ? 200 : 503, body, (size_t)n);
}

/* CORS preflight: nothing to send but what the browser may do next. */
static void
hist_handle_preflight(hist_server_t *s, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (s->cfg->cors_origin[0] != '\0') {
        evhttp_add_header(h, "Access-Control-Allow-Methods", HIST_ALLOW);
        evhttp_add_header(h, "Access-Control-Allow-Headers", "Authorization, Content-Type");
        evhttp_add_header(h, "Access-Control-Max-Age", "600");
    }
    evhttp_add_header(h, "Allow", HIST_ALLOW);
    evhttp_send_reply(req, 204, "No Content", NULL);
}

static void
hist_route(struct evhttp_request *req, void *arg)
{
    hist_server_t *s = arg;
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    char *path = hr_http_path(req);
    int list = strcmp(path, "/notifications") == 0;
    int health = strcmp(path, "/healthz") == 0;
    hr_free(path);

    /* On every answer, errors included, so a browser can read why it failed. */
    if (s->cfg->cors_origin[0] != '\0')
        evhttp_add_header(evhttp_request_get_output_headers(req), "Access-Control-Allow-Origin",
                          s->cfg->cors_origin);

    if (!list && !health) {
        hr_http_send_error(req, 404, HR_E_NOT_FOUND, "no such endpoint");
    } else if (m == EVHTTP_REQ_OPTIONS) {
        hist_handle_preflight(s, req);
    } else if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", HIST_ALLOW);
        hr_http_send_error(req, 405, HR_E_METHOD, "use GET");
    } else if (list) {
        hist_handle_list(s, req);
    } else {
        hist_db_ping(s->db, hist_health_done, req);
    }
}

/* ---- lifecycle ---- */

hist_server_t *
hist_server_create(struct event_base *base, const hist_config_t *cfg, char *err, size_t errlen)
{
    hist_server_t *s = hr_calloc(1, sizeof(*s));
    s->base = base;
    s->cfg = cfg;

    hist_db_opts_t dbo = {.conninfo = cfg->postgres_url,
                          .backoff_min_ms = HIST_PG_BACKOFF_MIN_MS,
                          .backoff_max_ms = HIST_PG_BACKOFF_MAX_MS};
    s->db = hist_db_create(&dbo, err, errlen);
    if (s->db == NULL) {
        hr_free(s);
        return NULL;
    }
    s->http = hr_http_listen(base, cfg->host, cfg->port, HIST_BODY_MAX, &s->port, &s->listener, err,
                             errlen);
    if (s->http == NULL) {
        hist_db_destroy(s->db);
        hr_free(s);
        return NULL;
    }
    evhttp_set_gencb(s->http, hist_route, s);
    return s;
}

int
hist_server_port(const hist_server_t *s)
{
    return s->port;
}

/*
 * Requests are answered before the loop runs anything else (hist_db is
 * synchronous), so none is in flight when a signal is handled: close the
 * listener and stop. An asynchronous hist_db will need ingest's wait for
 * requests in flight.
 */
void
hist_server_drain(hist_server_t *s)
{
    hr_log_info("draining", "%s", "");
    if (s->listener != NULL) {
        evhttp_del_accept_socket(s->http, s->listener);
        s->listener = NULL;
    }
    event_base_loopexit(s->base, NULL);
}

void
hist_server_destroy(hist_server_t *s)
{
    if (s == NULL)
        return;
    evhttp_free(s->http);
    hist_db_destroy(s->db);
    hr_free(s);
}
