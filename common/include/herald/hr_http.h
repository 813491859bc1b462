/* The HTTP layer shared by ingest and history: listener, framing checks, JSON answers. */
#ifndef HERALD_HR_HTTP_H
#define HERALD_HR_HTTP_H

#include <event2/event.h>
#include <event2/http.h>
#include <stddef.h>

/* Defaults of the protections every Herald HTTP listener has (hr_http_opts_t). */
#define HR_HTTP_HEADER_TIMEOUT_MS 10000 /* a request head must arrive within this */
#define HR_HTTP_IDLE_TIMEOUT_S 60       /* a keep-alive connection may idle this long */
/** A body limit for one path (exact match); other paths get hr_http_opts_t.max_body. */
typedef struct {
    const char *path; /* borrowed */
    size_t max;
} hr_http_body_rule_t;

typedef struct {
    const char *host; /* borrowed */
    int port;         /* 0 picks one */
    size_t max_body;  /* bodies of paths without a rule; larger is 413 before it is read */
    const hr_http_body_rule_t *rules; /* borrowed, nrules of them */
    size_t nrules;
    const char *cors_origin; /* borrowed; NULL or "": no CORS headers on hr_http's own answers */
    int max_connections;     /* 0: derived from the file limit */
    int header_timeout_ms;   /* 0: HR_HTTP_HEADER_TIMEOUT_MS */
    int reuseport;           /* SO_REUSEPORT: processes with it set share the port */
    void (*cb)(struct evhttp_request *req, void *arg); /* every request that passed the checks */
    void *cbarg;                                       /* borrowed */
} hr_http_opts_t;

typedef struct hr_http_s hr_http_t;

/**
 * Binds an HTTP server whose connections pass through Herald's framing checks
 * before evhttp parses them: the request line, header fields (bare LF, NUL,
 * obs-fold, space before the colon, Host), Content-Length (one value, within
 * the path's limit, checked before the body is read) and chunked bodies
 * (decoded here, handed to evhttp with a Content-Length). Whatever fails is
 * answered in JSON ({"error":…}, CORS headers included) and the connection
 * closed, so evhttp's own HTML error pages never reach a client. It also
 * answers 408 to a head that is not complete within header_timeout_ms, 503
 * past max_connections, and pauses accepting while the process is out of
 * file descriptors instead of spinning. Returns the server (owned by the
 * caller) or NULL with err filled.
 */
hr_http_t *hr_http_create(struct event_base *base, const hr_http_opts_t *opts, char *err,
                          size_t errlen);
/** The port actually bound. */
int hr_http_port(const hr_http_t *h);
/** Open connections (accepted and not yet closed). */
int hr_http_connections(const hr_http_t *h);
/** Closes the listener (idempotent); open connections carry on. */
void hr_http_stop_accepting(hr_http_t *h);
/** Closes every connection and frees the server. */
void hr_http_destroy(hr_http_t *h);

/** Answers with a JSON body (not copied past the call); to HEAD, its headers only. */
void hr_http_send_json(struct evhttp_request *req, int status, const char *json, size_t len);

/** The reason phrase of an HTTP status ("Accepted"). */
const char *hr_http_reason(int status);
/** {"error":{"code":code,"message":message}}: owned by the caller, freed with cJSON_free. */
char *hr_http_error_body(const char *code, const char *message);

/** Answers {"error":{"code":code,"message":message}} with status. */
void hr_http_send_error(struct evhttp_request *req, int status, const char *code,
                        const char *message);

/** Whether the request's Content-Type is application/json (parameters allowed). */
int hr_http_is_json(struct evhttp_request *req);
/** Whether a Content-Type value (NULL: absent) is application/json. */
int hr_http_json_type(const char *content_type);

/**
 * Makes the request body contiguous. Returns a pointer into evhttp's buffer
 * (borrowed, valid until the reply) and its length in *len.
 */
const char *hr_http_body(struct evhttp_request *req, size_t *len);

/** The path of the request URI without the query (owned by caller). */
char *hr_http_path(struct evhttp_request *req);
/** The path of the request URI without the query: borrowed (not NUL-terminated), *len bytes. */
const char *hr_http_path_ref(struct evhttp_request *req, size_t *len);
/** Whether the request's path (without the query) is exactly path. */
int hr_http_path_is(struct evhttp_request *req, const char *path);

/**
 * Graceful stop of an HTTP server: the listener closes at once (open
 * connections get 503 from the service), requests waiting on a backend are
 * counted, and the loop exits when the last one is answered or after
 * drain_ms, whichever comes first.
 */
struct hr_httpd_s;
typedef struct {
    struct event_base *base;  /* borrowed */
    hr_http_t *http;          /* borrowed; NULL when the server is an hr_httpd */
    struct hr_httpd_s *httpd; /* borrowed; NULL when the server is an hr_http */
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
