/* evhttp helpers shared by ingest and history: JSON answers and errors. */
#ifndef HERALD_HR_HTTP_H
#define HERALD_HR_HTTP_H

#include <event2/event.h>
#include <event2/http.h>
#include <stddef.h>

/**
 * Binds an evhttp server on host:port (port 0 picks one) with evhttp's own
 * limits set above Herald's, so our JSON errors are the ones clients see.
 * *bound gets the port actually bound, *sock (if not NULL) the listener. Returns the server (owned
 * by caller) or NULL with err filled.
 */
struct evhttp *hr_http_listen(struct event_base *base, const char *host, int port, size_t max_body,
                              int *bound, struct evhttp_bound_socket **sock, char *err,
                              size_t errlen);

/** Answers with a JSON body (not copied past the call). */
void hr_http_send_json(struct evhttp_request *req, int status, const char *json, size_t len);

/** Answers {"error":{"code":code,"message":message}} with status. */
void hr_http_send_error(struct evhttp_request *req, int status, const char *code,
                        const char *message);

/** Whether the request's Content-Type is application/json (parameters allowed). */
int hr_http_is_json(struct evhttp_request *req);

/**
 * Makes the request body contiguous. Returns a pointer into evhttp's buffer
 * (borrowed, valid until the reply) and its length in *len.
 */
const char *hr_http_body(struct evhttp_request *req, size_t *len);

/** The path of the request URI without the query (owned by caller). */
char *hr_http_path(struct evhttp_request *req);

/**
 * Graceful stop of an evhttp server: the listener closes at once (open
 * connections get 503 from the service), requests waiting on a backend are
 * counted, and the loop exits when the last one is answered or after
 * drain_ms, whichever comes first.
 */
typedef struct {
    struct event_base *base;              /* borrowed */
    struct evhttp *http;                  /* borrowed */
    struct evhttp_bound_socket *listener; /* owned by http; NULL once closed */
    struct event *timer;                  /* owned */
    unsigned inflight;                    /* requests waiting on Redis or PostgreSQL */
    int draining;
} hr_http_drain_t;

/** Starts draining (idempotent). */
void hr_http_drain_begin(hr_http_drain_t *d, int drain_ms);
/** One request in flight was answered. */
void hr_http_drain_release(hr_http_drain_t *d);
/** Frees the timer. */
void hr_http_drain_clear(hr_http_drain_t *d);

#endif
