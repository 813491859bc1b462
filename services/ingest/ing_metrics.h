/*
 * Ingest's operability (proto/metrics.md, "ingest"): the Prometheus
 * registry and its slots, /metrics, /healthz (alive) and /readyz (Redis
 * READY and not draining), the request id of every request (X-Request-Id,
 * proto/redis.md) and the access log line. ing_server calls it at three
 * points: when a request arrives (ing_metrics_begin), where an error is
 * answered (ing_metrics_send_error) and once a request is answered
 * (ing_metrics_answered). Nothing here allocates per request: the slots are
 * registered once, the request id lives in the response's headers.
 */
#ifndef HERALD_ING_METRICS_H
#define HERALD_ING_METRICS_H

#include "herald/hr_metrics.h"
#include "herald/hr_redis.h"
#include "herald/hr_uuid.h"

#include <event2/event.h>
#include "herald/hr_httpd.h"
#include <stdint.h>

/* Values of the route label, in the order of ing_metrics_routes. */
typedef enum {
    ING_M_NOTIFICATIONS,
    ING_M_BATCH,
    ING_M_USERS, /* /users/{id}/… (revocation) */
    ING_M_HEALTH,
    ING_M_METRICS,
    ING_M_OTHER,
    ING_M_NROUTES
} ing_m_route_t;

/* What the samplers and /readyz read. */
typedef struct {
    const hr_redis_async_t *redis; /* borrowed */
    const int *draining;           /* borrowed: the server's drain flag */
} ing_metrics_src_t;

typedef struct {
    hr_metrics_t *reg;                /* owned */
    hr_counter_t *requests;           /* borrowed from reg: route x code */
    hr_histogram_t *duration;         /* borrowed from reg: route */
    hr_counter_t *accepted;           /* borrowed from reg */
    hr_counter_t *rejected;           /* borrowed from reg: error */
    hr_counter_t *replays;            /* borrowed from reg */
    hr_counter_t *redis_errors;       /* borrowed from reg */
    hr_metrics_readiness_t readiness; /* slots borrowed from reg; dep_up: [redis] */
    hr_uuid_gen_t *uuid;              /* borrowed: the server's generator, for request ids */
    ing_metrics_src_t src;
    uint64_t route_start_us; /* hr_mono_us when the request being routed arrived */
    const char *key;         /* borrowed: the API key name of the request being answered, or NULL */
    int access_log;          /* ingest.access_log: one info line per answered request */
    /*
     * Access log lines of one loop turn, written at its end in one write():
     * a write() per request costs a good part of ingest's throughput.
     */
    char *logbuf; /* owned: ING_LOGBUF bytes */
    size_t loglen;
    struct event *flush; /* owned: writes logbuf on the next loop turn */
} ing_metrics_t;

/** Registers every family; src is copied, base and uuid borrowed. */
void ing_metrics_init(ing_metrics_t *m, struct event_base *base, const ing_metrics_src_t *src,
                      hr_uuid_gen_t *uuid, int access_log);
/** Writes the access log lines still buffered and frees everything. */
void ing_metrics_fini(ing_metrics_t *m);

/** Whether ingest can take writes: Redis READY and not draining (/readyz). */
int ing_metrics_ready(const ing_metrics_t *m);

/** The route label of a request's path. */
ing_m_route_t ing_metrics_route(hr_httpd_req_t *req);

/**
 * A request arrived: notes the time (route_start_us, the start of the
 * answers sent while it is routed) and sets its X-Request-Id response header, the caller's
 * X-Request-Id when it is 1..HR_REQUEST_ID_MAX visible ASCII characters,
 * else a new UUID. Returns it (borrowed from the response headers).
 */
const char *ing_metrics_begin(ing_metrics_t *m, hr_httpd_req_t *req);

/** The request id ing_metrics_begin() set (borrowed), "-" when there is none. */
const char *ing_metrics_request_id(hr_httpd_req_t *req);

/** Counts an error answer (rejected_total{error=code}, then as answered) and sends it. */
void ing_metrics_send_error(ing_metrics_t *m, hr_httpd_req_t *req, uint64_t start_us, int status,
                            const char *code, const char *message);
/** Counts an answer as answered and sends it (hr_httpd_send_json). */
void ing_metrics_send_json(ing_metrics_t *m, hr_httpd_req_t *req, uint64_t start_us, int status,
                           const char *json, size_t len);

/** Counts one refused item of a batch whose answer carries its error code. */
void ing_metrics_rejected(ing_metrics_t *m, const char *code);

/**
 * Counts an answered request (requests_total, duration since start_us in
 * hr_mono_us) and writes its access log line. Called just before the
 * answer is sent (req is still valid then, also for a client that left).
 */
void ing_metrics_answered(ing_metrics_t *m, hr_httpd_req_t *req, int status, uint64_t start_us);

/**
 * Answers /healthz (200 while the process runs), /readyz (200 when
 * ing_metrics_ready, else 503) and /metrics for GET and HEAD; other
 * methods get 405. Returns 0, or HR_DECLINED when req is none of them.
 */
int ing_metrics_handle(ing_metrics_t *m, hr_httpd_req_t *req);

#endif
