/*
 * What Herald's HTTP services (ingest, history, the worker's listener) share
 * around their server, hr_httpd: limits, reason phrases, the JSON error body,
 * the Content-Type test and the graceful stop.
 */
#ifndef HERALD_HR_HTTP_H
#define HERALD_HR_HTTP_H

#include <event2/event.h>
#include <stddef.h>

/* Defaults of the protections every Herald HTTP listener has (hr_httpd_opts_t). */
#define HR_HTTP_HEADER_TIMEOUT_MS 10000 /* a request head must arrive within this */
#define HR_HTTP_IDLE_TIMEOUT_S 60       /* a keep-alive connection may idle this long */
/** A body limit for one path (exact match); other paths get the server's max_body. */
typedef struct {
    const char *path; /* borrowed */
    size_t max;
} hr_http_body_rule_t;

/** The reason phrase of an HTTP status ("Accepted"). */
const char *hr_http_reason(int status);
/** {"error":{"code":code,"message":message}}: owned by the caller, freed with cJSON_free. */
char *hr_http_error_body(const char *code, const char *message);

/** Whether a Content-Type value (NULL: absent) is application/json (parameters allowed). */
int hr_http_json_type(const char *content_type);

/**
 * Graceful stop of an HTTP server: the listener closes at once (open
 * connections get 503 from the service), requests waiting on a backend are
 * counted, and the loop exits when the last one is answered or after
 * drain_ms, whichever comes first.
 */
struct hr_httpd_s;
typedef struct {
    struct event_base *base;  /* borrowed */
    struct hr_httpd_s *httpd; /* borrowed */
    struct event *timer;      /* owned */
    unsigned inflight;        /* requests waiting on Redis or PostgreSQL */
    int draining;
} hr_http_drain_t;

/** Starts draining (idempotent). */
void hr_http_drain_begin(hr_http_drain_t *d, int drain_ms);
/** One request in flight was answered. */
void hr_http_drain_release(hr_http_drain_t *d);
/** Frees the timer. */
void hr_http_drain_clear(hr_http_drain_t *d);

#endif
