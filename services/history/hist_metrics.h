/*
 * History's Prometheus metrics (proto/metrics.md, "history"): the registry,
 * its slots, and the samplers of pool and dependency state. Counters are
 * bumped by hist_server where a request is answered or a query fails.
 */
#ifndef HERALD_HIST_METRICS_H
#define HERALD_HIST_METRICS_H

#include "hist_db.h"
#include "herald/hr_metrics.h"
#include "herald/hr_redis.h"

#include <stdint.h>

/* Values of the route label, in the order of hist_metrics_routes. */
typedef enum {
    HIST_M_INBOX,
    HIST_M_UNREAD_COUNT,
    HIST_M_READ,
    HIST_M_UNREAD,
    HIST_M_READ_ALL,
    HIST_M_GET,
    HIST_M_ROOM_MESSAGES,
    HIST_M_HEALTH,
    HIST_M_METRICS,
    HIST_M_OTHER,
    HIST_M_NROUTES
} hist_m_route_t;

/* What the samplers read at render time. */
typedef struct {
    const hist_db_t *db;           /* borrowed */
    const hr_redis_async_t *redis; /* borrowed */
    const int *draining;           /* borrowed: the server's drain flag */
} hist_metrics_src_t;

typedef struct {
    hr_metrics_t *reg;                /* owned */
    hr_counter_t *requests;           /* borrowed from reg: route x code */
    hr_histogram_t *duration;         /* borrowed from reg: route */
    hr_gauge_t *pool_conns;           /* borrowed from reg */
    hr_gauge_t *pool_busy;            /* borrowed from reg */
    hr_gauge_t *pool_waiting;         /* borrowed from reg */
    hr_counter_t *pg_errors;          /* borrowed from reg */
    hr_metrics_readiness_t readiness; /* slots borrowed from reg; dep_up: [redis, postgres] */
    hist_metrics_src_t src;
} hist_metrics_t;

/** Registers every family; src is copied. */
void hist_metrics_init(hist_metrics_t *m, const hist_metrics_src_t *src);
void hist_metrics_fini(hist_metrics_t *m);

/** Whether the service can serve: a PostgreSQL connection open and not draining. */
int hist_metrics_ready(const hist_metrics_src_t *src);

/** Counts one answered request: status and time since start_us (hr_mono_us). */
void hist_metrics_answered(hist_metrics_t *m, hist_m_route_t route, int status, uint64_t start_us);

#endif
