/*
 * What Herald's HTTP services share around hr_httpd: reason phrases, the
 * JSON error body, the Content-Type test and the graceful stop.
 */
#include "herald/hr_http.h"
#include "herald/hr_core.h"
#include "herald/hr_httpd.h"
#include "herald/hr_log.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <strings.h>

const char *
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
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

char *
hr_http_error_body(const char *code, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", message);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s; /* cJSON allocates through hr_malloc (hr_json_init): never NULL */
}

int
hr_http_json_type(const char *ct)
{
    if (ct == NULL)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
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
    hr_httpd_stop_accepting(d->httpd);
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
