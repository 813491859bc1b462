#include "hist_metrics.h"
#include "herald/hr_core.h"
#include "herald/hr_time.h"

static const char *const hist_metrics_routes[] = {
    "inbox", "unread_count",  "read",   "unread",  "read_all",
    "get",   "room_messages", "health", "metrics", "other",
};
static const char *const hist_metrics_codes[] = {"2xx", "3xx", "4xx", "5xx"};
static const char *const hist_metrics_deps[] = {"redis", "postgres"};

_Static_assert(HR_ARRAY_LEN(hist_metrics_routes) == HIST_M_NROUTES, "route label values");

/*
 * Redis is not a condition: history serves every request without it (read
 * marks are stored, only the live event to open tabs is lost), so a Redis
 * outage must not take every history instance out of rotation.
 */
int
hist_metrics_ready(const hist_metrics_src_t *src)
{
    return hist_db_alive(src->db) > 0 && !*src->draining;
}

/* Pool and dependency state are read at render time: cheaper than tracking every change. */
static void
hist_metrics_collect(void *arg)
{
    hist_metrics_t *m = arg;
    hist_db_stats_t st;
    hist_db_stats(m->src.db, &st);
    hr_gauge_set(m->pool_conns, st.open);
    hr_gauge_set(m->pool_busy, st.busy);
    hr_gauge_set(m->pool_waiting, st.waiting);
    hr_gauge_set(&m->readiness.dep_up[0], hr_redis_async_ready(m->src.redis) ? 1 : 0);
    hr_gauge_set(&m->readiness.dep_up[1], st.open > 0 ? 1 : 0);
    hr_gauge_set(m->readiness.ready, hist_metrics_ready(&m->src) ? 1 : 0);
}

void
hist_metrics_init(hist_metrics_t *m, const hist_metrics_src_t *src)
{
    m->src = *src;
    m->reg = hr_metrics_create();
    hr_metrics_t *r = m->reg;
    hr_metrics_add_process(r, "history");
    hr_metrics_label_t rc[] = {HR_METRICS_LABEL("route", hist_metrics_routes),
                               HR_METRICS_LABEL("code", hist_metrics_codes)};
    m->requests =
        hr_metrics_counter(r, "herald_history_requests_total", "HTTP requests answered", rc, 2);
    m->duration = hr_metrics_histogram(
        r, "herald_history_request_duration_seconds", "Request received to answer sent",
        hr_metrics_latency_buckets, hr_metrics_latency_nbuckets, rc, 1);
    m->pool_conns = hr_metrics_gauge(r, "herald_history_pool_connections",
                                     "PostgreSQL connections open in the pool", NULL, 0);
    m->pool_busy = hr_metrics_gauge(r, "herald_history_pool_busy",
                                    "Pool connections running a query", NULL, 0);
    m->pool_waiting = hr_metrics_gauge(r, "herald_history_pool_waiting",
                                       "Requests waiting for a pool connection", NULL, 0);
    m->pg_errors =
        hr_metrics_counter(r, "herald_history_postgres_errors_total",
                           "Queries that failed (errors, timeouts, lost connections)", NULL, 0);
    m->readiness =
        hr_metrics_add_readiness(r, "history", hist_metrics_deps, HR_ARRAY_LEN(hist_metrics_deps));
    hr_metrics_on_collect(r, hist_metrics_collect, m);
}

void
hist_metrics_fini(hist_metrics_t *m)
{
    hr_metrics_destroy(m->reg);
    m->reg = NULL;
}

void
hist_metrics_answered(hist_metrics_t *m, hist_m_route_t route, int status, uint64_t start_us)
{
    if ((unsigned)route >= HIST_M_NROUTES)
        route = HIST_M_OTHER;
    /* 1xx is never sent; anything outside 2xx-5xx would be a bug, counted as 5xx. */
    int cls = status >= 200 && status < 600 ? status / 100 - 2 : 3;
    hr_counter_inc(&m->requests[(size_t)route * HR_ARRAY_LEN(hist_metrics_codes) + (size_t)cls]);
    hr_histogram_observe(&m->duration[route], (double)(hr_mono_us() - start_us) / 1e6);
}
