/*
 * A sample registry with every family kind, labels and the process metrics,
 * for checks that need real rendered text (tests/integration/test_deploy_files.py):
 *
 *   metrics_demo           prints it once (piped to `promtool check metrics`)
 *   metrics_demo --serve   serves it on a free loopback port (printed as
 *                          "port=N") through hr_metrics_send_httpd: GET
 *                          /metrics, and GET /hit counts one request; a real
 *                          Prometheus scrapes it. SIGTERM stops it.
 */
#include "herald/hr_httpd.h"
#include "herald/hr_metrics.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    hr_metrics_t *m;     /* borrowed */
    hr_counter_t *req;   /* borrowed from m */
    hr_histogram_t *dur; /* borrowed from m */
} demo_t;

static void
demo_route(hr_httpd_req_t *req, void *arg)
{
    demo_t *d = arg;
    const char *uri = hr_httpd_uri(req);
    if (strcmp(uri, "/metrics") == 0) {
        hr_metrics_send_httpd(req, d->m);
    } else if (strcmp(uri, "/hit") == 0) {
        hr_counter_inc(&d->req[0]);
        hr_histogram_observe(&d->dur[0], 0.002);
        hr_httpd_send(req, 200, NULL, "", 0);
    } else {
        hr_httpd_send_error(req, 404, "not_found", "no such path");
    }
}

static void
demo_stop(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    event_base_loopexit(arg, NULL);
}

static int
demo_serve(demo_t *d)
{
    struct event_base *base = event_base_new();
    char err[256];
    hr_httpd_opts_t ho = {.host = "127.0.0.1", .max_body = 4096, .cb = demo_route, .cbarg = d};
    hr_httpd_t *http = hr_httpd_create(base, &ho, err, sizeof(err));
    if (http == NULL) {
        fprintf(stderr, "metrics_demo: %s\n", err);
        event_base_free(base);
        return 1;
    }
    struct event *term = evsignal_new(base, SIGTERM, demo_stop, base);
    event_add(term, NULL);
    printf("port=%d\n", hr_httpd_port(http));
    fflush(stdout);
    event_base_dispatch(base);
    event_free(term);
    hr_httpd_destroy(http);
    event_base_free(base);
    return 0;
}

int
main(int argc, char **argv)
{
    static const char *const routes[] = {"post", "batch"};
    static const char *const statuses[] = {"2xx", "4xx", "5xx"};
    hr_metrics_label_t rl[] = {HR_METRICS_LABEL("route", routes),
                               HR_METRICS_LABEL("code", statuses)};
    hr_metrics_t *m = hr_metrics_create();
    hr_metrics_add_process(m, "demo");
    demo_t d = {.m = m};
    d.req = hr_metrics_counter(m, "herald_demo_requests_total",
                               "HTTP requests by route and status class.", rl, 2);
    hr_gauge_t *conn =
        hr_metrics_gauge(m, "herald_demo_connections", "Open \"demo\" sockets\\now.", NULL, 0);
    d.dur = hr_metrics_histogram(m, "herald_demo_request_duration_seconds",
                                 "Request duration in seconds.", hr_metrics_latency_buckets,
                                 hr_metrics_latency_nbuckets, rl, 1);
    hr_histogram_t *size =
        hr_metrics_histogram(m, "herald_demo_batch_size", "Entries per batch.",
                             hr_metrics_size_buckets, hr_metrics_size_nbuckets, NULL, 0);
    hr_counter_add(&d.req[1], 3);
    hr_gauge_set(conn, 12);
    hr_histogram_observe(&d.dur[0], 0.003);
    hr_histogram_observe(&d.dur[1], 42);
    hr_histogram_observe(size, 700);

    int rc;
    if (argc > 1 && strcmp(argv[1], "--serve") == 0) {
        rc = demo_serve(&d);
    } else {
        size_t len;
        const char *text = hr_metrics_render(m, &len);
        rc = fwrite(text, 1, len, stdout) == len ? 0 : 1;
    }
    hr_metrics_destroy(m);
    return rc;
}
