/*
 * The gateway's Prometheus metrics (proto/metrics.md, section gateway) and
 * its plain-HTTP routes: /metrics, /healthz (alive) and /readyz
 * (dependencies reachable, not draining).
 */
#ifndef HERALD_GW_METRICS_H
#define HERALD_GW_METRICS_H

#include "herald/hr_metrics.h"

#include <libwebsockets.h>
#include <stdint.h>

/* Indexes of herald_gateway_connects_total{result}. */
enum {
    GW_CONNECT_OK,
    GW_CONNECT_UNAUTHORIZED,
    GW_CONNECT_INVALID_USER,
    GW_CONNECT_DRAINING,
    GW_CONNECT_ERROR,
    GW_CONNECT_FORBIDDEN_ORIGIN,
    GW_CONNECT_RATE_LIMITED,
    GW_CONNECT_UNAVAILABLE /* the revocation cut-offs are not loaded yet */
};
/* Indexes of herald_gateway_frames_in_total{type}. */
enum {
    GW_IN_JOIN,
    GW_IN_LEAVE,
    GW_IN_PUBLISH,
    GW_IN_PRESENCE,
    GW_IN_PING,
    GW_IN_REFRESH,
    GW_IN_INVALID
};
/* Indexes of herald_gateway_frames_refused_total{reason}. */
enum { GW_REFUSED_TOO_BIG, GW_REFUSED_TOO_DEEP };

/** What the routes report, filled by the server at each request or scrape. */
typedef struct {
    int redis_up;           /* both Redis connections READY */
    int revocations_loaded; /* the cut-offs were read once (upgrades are checked against them) */
    int draining;
    const char *node_id;                               /* borrowed */
    uint64_t conns, users, rooms, memberships, queued; /* from the hub; queued: ever */
    uint64_t slow_killed;
    uint64_t queued_now; /* frames in outbound queues now; filled only when want_queued */
    int want_queued;     /* set by the caller: walk every socket for queued_now */
    uint64_t channels;   /* Pub/Sub channels wanted */
    uint64_t reconnects; /* Redis connections re-established */
    size_t receipts_pending;
} gw_status_t;

typedef void (*gw_status_fn)(void *ud, gw_status_t *st);

typedef struct gw_metrics_s {
    hr_metrics_t *reg;         /* owned */
    hr_counter_t *connects;    /* borrowed from reg: by result */
    hr_counter_t *disconnects; /* by close code */
    hr_counter_t *frames_out;
    hr_counter_t *bytes_out;
    hr_counter_t *frames_in;      /* by type */
    hr_counter_t *auth_refusals;  /* by reason */
    hr_counter_t *refreshes;      /* ok, refused */
    hr_counter_t *frames_refused; /* by reason */
    hr_counter_t *revoked_closes;
    hr_counter_t *slow;
    hr_counter_t *reconnects;
    hr_histogram_t *delay;
    hr_gauge_t *conns, *queued, *channels;
    hr_metrics_readiness_t readiness; /* slots borrowed from reg; dep_up: [redis] */
    gw_status_fn status;              /* borrowed */
    void *ud;
    unsigned char *out; /* owned: LWS_PRE + the rendered text, reused */
    size_t outcap;
} gw_metrics_t;

/** A registry with every gateway metric; status is called to sample gauges. */
gw_metrics_t *gw_metrics_create(gw_status_fn status, void *ud);
void gw_metrics_destroy(gw_metrics_t *gm);

/** Counts a socket closed with code (0: the peer went away without a close frame). */
void gw_metrics_disconnect(gw_metrics_t *gm, unsigned code);
/** Counts a refused upgrade by HTTP status (401: also by its token reason). */
void gw_metrics_refused_upgrade(gw_metrics_t *gm, unsigned status, const char *reason);
/** Counts a refresh frame's outcome. */
void gw_metrics_refresh(gw_metrics_t *gm, int ok);
/** Counts a client frame by its type string (NULL or unknown: invalid). */
void gw_metrics_frame_in(gw_metrics_t *gm, const char *type);

/**
 * Observes the delivery delay of a notification frame written at now_ms
 * (wall clock), from its id's UUIDv7 timestamp (= created_at); other frames
 * are ignored.
 */
void gw_metrics_delivered(gw_metrics_t *gm, const char *frame, size_t len, uint64_t now_ms);

/**
 * Answers a plain-HTTP request for uri (/metrics, /healthz, /readyz, else
 * 404). Returns 0, or -1 to close.
 */
int gw_metrics_http(gw_metrics_t *gm, struct lws *wsi, const char *uri);

#endif
