#include "herald/hr_http.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>

static const char *
hr_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

struct evhttp *
hr_http_listen(struct event_base *base, const char *host, int port, size_t max_body, int *bound,
               struct evhttp_bound_socket **sock, char *err, size_t errlen)
{
    struct evhttp *http = evhttp_new(base);
    if (http == NULL) {
        snprintf(err, errlen, "evhttp_new failed");
        return NULL;
    }
    /* evhttp's own limits sit above ours so our handlers decide and answer in JSON. */
    evhttp_set_max_body_size(http, (ev_ssize_t)(max_body * 4));
    evhttp_set_max_headers_size(http, 64 * 1024);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                         EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PATCH);
    evhttp_set_timeout(http, 60);
    struct evhttp_bound_socket *h = evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port);
    if (h == NULL) {
        snprintf(err, errlen, "cannot bind %s:%d", host, port);
        evhttp_free(http);
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    *bound = port;
    if (sock != NULL)
        *sock = h;
    if (getsockname(evhttp_bound_socket_get_fd(h), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            *bound = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            *bound = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return http;
}

void
hr_http_send_json(struct evhttp_request *req, int status, const char *json, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, json, len);
    evbuffer_add(b, "\n", 1);
    evhttp_send_reply(req, status, hr_http_reason(status), b);
    evbuffer_free(b);
}

void
hr_http_send_error(struct evhttp_request *req, int status, const char *code, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", message);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (status == 503)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    hr_http_send_json(req, status, s, strlen(s));
    cJSON_free(s);
}

int
hr_http_is_json(struct evhttp_request *req)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (ct == NULL)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

const char *
hr_http_body(struct evhttp_request *req, size_t *len)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    *len = evbuffer_get_length(b);
    if (*len == 0)
        return "";
    return (const char *)evbuffer_pullup(b, -1);
}

char *
hr_http_path(struct evhttp_request *req)
{
    const char *uri = evhttp_request_get_uri(req);
    size_t n = strcspn(uri, "?#");
    return hr_strndup(uri, n);
}

static void
hr_http_drain_maybe_done(hr_http_drain_t *d)
{
    if (d->draining && d->inflight == 0)
        event_base_loopexit(d->base, NULL);
}

static void
hr_http_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_http_drain_t *d = arg;
    hr_log_warn("drain_timeout", "inflight=%u", d->inflight);
    event_base_loopexit(d->base, NULL);
}

void
hr_http_drain_begin(hr_http_drain_t *d, int drain_ms)
{
    if (d->draining)
        return;
    d->draining = 1;
    hr_log_info("draining", "inflight=%u", d->inflight);
    if (d->listener != NULL) {
        evhttp_del_accept_socket(d->http, d->listener);
        d->listener = NULL;
    }
    d->timer = evtimer_new(d->base, hr_http_drain_timeout, d);
    struct timeval tv = {drain_ms / 1000, (drain_ms % 1000) * 1000};
    evtimer_add(d->timer, &tv);
    hr_http_drain_maybe_done(d);
}

void
hr_http_drain_release(hr_http_drain_t *d)
{
    if (d->inflight > 0)
        d->inflight--;
    hr_http_drain_maybe_done(d);
}

void
hr_http_drain_clear(hr_http_drain_t *d)
{
    if (d->timer != NULL)
        event_free(d->timer);
    d->timer = NULL;
}
