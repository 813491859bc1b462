/*
 * Herald's own HTTP/1.1 server, on a libevent loop: the front end of
 * ingest, history and the worker's listener. It replaced evhttp, whose
 * per-request costs (two epoll_ctl, an ioctl, a printf per header, a dozen
 * allocations) were most of an ingest POST.
 *
 * Each connection keeps its read interest for its whole life and reads
 * into one flat buffer; a request is parsed in place (header values and
 * the target are NUL-terminated inside that buffer), handed to the
 * service, and answered with a single send() of head and body. One request
 * per connection is with the service at a time, so answers leave in order;
 * pipelined requests wait in the buffer, and the answers of requests
 * answered at once go out in one send().
 *
 * The framing checks are hr_http_parse's: every refusal is JSON ({"error":…}, CORS headers
 * included) with Connection: close. A head must arrive within header_timeout_ms, a body or an
 * answer the client reads must make progress within idle_timeout_ms, connections past
 * max_connections wait in the kernel's backlog, and accept pauses for a second when the process
 * runs out of descriptors.
 */
#ifndef HERALD_HR_HTTPD_H
#define HERALD_HR_HTTPD_H

#include "herald/hr_http.h"
#include "herald/hr_http_parse.h"

#include <event2/event.h>
#include <stddef.h>

typedef enum {
    HR_HTTPD_GET = 1,
    HR_HTTPD_HEAD,
    HR_HTTPD_POST,
    HR_HTTPD_PUT,
    HR_HTTPD_DELETE,
    HR_HTTPD_OPTIONS,
    HR_HTTPD_PATCH,
} hr_httpd_method_t;

typedef struct hr_httpd_s hr_httpd_t;
typedef struct hr_httpd_req_s hr_httpd_req_t;

typedef struct {
    const char *host;                 /* borrowed */
    int port;                         /* 0 picks one */
    size_t max_body;                  /* bodies of paths without a rule: 413 before it is read */
    const hr_http_body_rule_t *rules; /* borrowed, nrules of them (copied) */
    size_t nrules;
    const char *cors_origin; /* borrowed; NULL or "": no CORS headers on the server's refusals */
    int max_connections;     /* 0: derived from the file limit */
    int header_timeout_ms;   /* 0: HR_HTTP_HEADER_TIMEOUT_MS */
    int idle_timeout_ms;     /* 0: HR_HTTP_IDLE_TIMEOUT_S */
    int reuseport;           /* SO_REUSEPORT: processes with it set share the port */
    void (*cb)(hr_httpd_req_t *req, void *arg); /* every request that passed the checks */
    void *cbarg;                                /* borrowed */
} hr_httpd_opts_t;

/** Binds the server; returns it (owned by the caller) or NULL with err filled. */
hr_httpd_t *hr_httpd_create(struct event_base *base, const hr_httpd_opts_t *opts, char *err,
                            size_t errlen);
/** The port actually bound. */
int hr_httpd_port(const hr_httpd_t *h);
/** Open connections. */
int hr_httpd_connections(const hr_httpd_t *h);
/** Closes the listener (idempotent); open connections carry on. */
void hr_httpd_stop_accepting(hr_httpd_t *h);
/**
 * Closes every connection and frees the server. A request still with the
 * service must have been answered before (its memory goes with the server).
 */
void hr_httpd_destroy(hr_httpd_t *h);

/*
 * A request, valid from the callback until it is answered (hr_httpd_send
 * or one of its wrappers). Every request must be answered once, also when
 * the client has gone meanwhile (the answer is then dropped).
 */
hr_httpd_method_t hr_httpd_method(const hr_httpd_req_t *r);
/** The method's name ("POST"). */
const char *hr_httpd_method_name(const hr_httpd_req_t *r);
/** The request target as sent, query included (NUL-terminated, borrowed). */
const char *hr_httpd_uri(const hr_httpd_req_t *r);
/** The target's path, without the query: borrowed, not NUL-terminated, *len bytes. */
const char *hr_httpd_path(const hr_httpd_req_t *r, size_t *len);
/** Whether the path (without the query) is exactly path. */
int hr_httpd_path_is(const hr_httpd_req_t *r, const char *path);
/** The value of the first header field called name (any case), NUL-terminated; NULL if absent. */
const char *hr_httpd_header(const hr_httpd_req_t *r, const char *name);
/** The number of header fields, and field i's name and value (both NUL-terminated, borrowed). */
size_t hr_httpd_nheaders(const hr_httpd_req_t *r);
void hr_httpd_header_at(const hr_httpd_req_t *r, size_t i, const char **name, const char **value);
/** The body (borrowed; "" when there is none) and its length. */
const char *hr_httpd_body(const hr_httpd_req_t *r, size_t *len);
/** Whether the client has gone (its answer will be dropped). */
int hr_httpd_gone(const hr_httpd_req_t *r);
/**
 * Calls cb(r, arg) once if the connection ends (a reset, a failed send, a
 * stalled answer) while r is with the service, so that work it waits for
 * can be withdrawn. r stays valid and must still be answered, in cb or
 * later (the answer is dropped). Forgotten when r is answered. cb may run
 * inside an hr_httpd_send* (the one whose answer released r, pipelined);
 * it may answer r, but no other request.
 */
void hr_httpd_on_gone(hr_httpd_req_t *r, void (*cb)(hr_httpd_req_t *r, void *arg), void *arg);

/** Adds a header field to the answer (both copied). */
void hr_httpd_add_header(hr_httpd_req_t *r, const char *name, const char *value);
/** The value of an answer header added before (borrowed until the answer), or NULL. */
const char *hr_httpd_out_header(const hr_httpd_req_t *r, const char *name);

/**
 * Answers: status, Content-Type ctype (NULL: none), the body (copied); to
 * HEAD, the head only, with the length a GET would have. The request is
 * gone afterwards.
 */
void hr_httpd_send(hr_httpd_req_t *r, int status, const char *ctype, const char *body, size_t len);
/** Answers application/json: the body and a newline. */
void hr_httpd_send_json(hr_httpd_req_t *r, int status, const char *json, size_t len);
/** Answers {"error":{"code":code,"message":message}} (503 with Retry-After: 1). */
void hr_httpd_send_error(hr_httpd_req_t *r, int status, const char *code, const char *message);

#endif
