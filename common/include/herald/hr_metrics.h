/*
 * Prometheus metrics: a registry owned by the service (no globals) of
 * counter, gauge and histogram families, rendered for GET /metrics in the
 * text exposition format 0.0.4.
 *
 * Labels come from small fixed sets declared at registration: a family with
 * route{post,batch} x status{2xx,4xx,5xx} gets its 6 slots allocated once and
 * the caller indexes them with its own enums (row-major: the last label
 * varies fastest), so nothing is allocated or looked up per request and an
 * increment is a plain add on the loop thread. The registry is not
 * thread-safe, like the rest of a service. Every slot is rendered, zeros
 * included, so rate() has a starting point.
 *
 * Names, help texts and label values are borrowed: string literals, or
 * strings that outlive the registry. A malformed registration (bad name, a
 * counter without _total, a duplicate) is a programming error and aborts
 * with a message, like running out of memory.
 */
#ifndef HERALD_HR_METRICS_H
#define HERALD_HR_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "herald/hr_core.h"

#define HR_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define HR_METRICS_MAX_LABELS 3

typedef struct hr_metrics_s hr_metrics_t;

/** One counter slot: only goes up. */
typedef struct {
    uint64_t value;
} hr_counter_t;

/** One gauge slot: set, or moved up and down. */
typedef struct {
    double value;
} hr_gauge_t;

/** One histogram slot with the family's fixed buckets. */
typedef struct {
    const double *bounds; /* borrowed: the family's upper bounds, ascending */
    size_t nbounds;
    uint64_t *buckets; /* borrowed from the registry: nbounds + 1 counts, not cumulative */
    uint64_t count;
    double sum;
} hr_histogram_t;

/** A label dimension: its name and every value it may take, in the caller's enum order. */
typedef struct {
    const char *name;          /* borrowed */
    const char *const *values; /* borrowed */
    size_t nvalues;
} hr_metrics_label_t;

#define HR_METRICS_LABEL(name, values) HR_METRICS_LABEL_N((name), (values), HR_ARRAY_LEN(values))
/** A label dimension from a pointer and a count, for values that are not an array in scope. */
#define HR_METRICS_LABEL_N(name, values, nvalues)                                                  \
    ((hr_metrics_label_t){(name), (values), (nvalues)})

/** Called at the start of each render to sample gauges (queue lengths, pool state). */
typedef void (*hr_metrics_collect_fn)(void *arg);

/** Request latencies in seconds, 0.5 ms .. 10 s. */
extern const double hr_metrics_latency_buckets[];
extern const size_t hr_metrics_latency_nbuckets;
/** Counts (batch sizes), 1 .. 10000. */
extern const double hr_metrics_size_buckets[];
extern const size_t hr_metrics_size_nbuckets;

/** An empty registry (owned by caller). */
hr_metrics_t *hr_metrics_create(void);
/** Frees the registry and every slot it handed out. */
void hr_metrics_destroy(hr_metrics_t *m);

/**
 * Registers a counter family (name ends in _total) and returns its slots
 * (borrowed, valid until destroy): one per combination of label values,
 * a single slot when nlabels is 0.
 */
hr_counter_t *hr_metrics_counter(hr_metrics_t *m, const char *name, const char *help,
                                 const hr_metrics_label_t *labels, size_t nlabels);
/** Registers a gauge family; slots as for counters. */
hr_gauge_t *hr_metrics_gauge(hr_metrics_t *m, const char *name, const char *help,
                             const hr_metrics_label_t *labels, size_t nlabels);
/** Registers a histogram family with ascending finite upper bounds (+Inf is implied). */
hr_histogram_t *hr_metrics_histogram(hr_metrics_t *m, const char *name, const char *help,
                                     const double *bounds, size_t nbounds,
                                     const hr_metrics_label_t *labels, size_t nlabels);
/** Adds a sampler run before each render, in registration order. */
void hr_metrics_on_collect(hr_metrics_t *m, hr_metrics_collect_fn fn, void *arg);

/**
 * Registers what every service exports: herald_build_info{service,version} 1,
 * process_start_time_seconds, process_resident_memory_bytes (/proc/self/statm),
 * process_open_fds (/proc/self/fd) and process_max_fds, sampled at each
 * render. service is borrowed.
 */
void hr_metrics_add_process(hr_metrics_t *m, const char *service);

/** The slots a service sets to report its readiness (hr_metrics_add_readiness). */
typedef struct {
    hr_gauge_t *ready;  /* borrowed from the registry: herald_ready{service}, one slot */
    hr_gauge_t *dep_up; /* borrowed from the registry: herald_dependency_up, a slot a dependency */
} hr_metrics_readiness_t;

/**
 * Registers what every service exports about its readiness (proto/metrics.md,
 * "Every service"): herald_ready{service} and
 * herald_dependency_up{service,dependency}, the dependency label taking the
 * ndeps values of deps, so dep_up[i] is deps[i]'s slot. A service lists only
 * the dependencies it uses ("redis", "postgres"). service and deps are
 * borrowed.
 */
hr_metrics_readiness_t hr_metrics_add_readiness(hr_metrics_t *m, const char *service,
                                                const char *const *deps, size_t ndeps);

/** The version compiled into herald_build_info. */
const char *hr_metrics_version(void);

static inline void
hr_counter_inc(hr_counter_t *c)
{
    c->value++;
}

static inline void
hr_counter_add(hr_counter_t *c, uint64_t n)
{
    c->value += n;
}

static inline void
hr_gauge_set(hr_gauge_t *g, double v)
{
    g->value = v;
}

static inline void
hr_gauge_add(hr_gauge_t *g, double d)
{
    g->value += d;
}

/** Counts one observation (seconds, bytes, items); NaN is ignored. */
void hr_histogram_observe(hr_histogram_t *h, double v);

/**
 * Runs the samplers and renders every family in registration order. Returns
 * the text (borrowed: the registry's buffer, reused by the next render) and
 * its length in *len.
 */
const char *hr_metrics_render(hr_metrics_t *m, size_t *len);

struct hr_httpd_req_s;
/** Answers an hr_httpd request with 200 and the rendered registry (not cached). */
void hr_metrics_send_httpd(struct hr_httpd_req_s *req, hr_metrics_t *m);

#endif
