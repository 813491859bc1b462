/*
 * Prints a sample registry in the text format, with every family kind,
 * labels, and the process metrics, so promtool can check what hr_metrics
 * renders (tests/integration/test_deploy_files.py pipes it to
 * `promtool check metrics`).
 */
#include "herald/hr_metrics.h"

#include <stdio.h>

int
main(void)
{
    static const char *const routes[] = {"post", "batch"};
    static const char *const statuses[] = {"2xx", "4xx", "5xx"};
    hr_metrics_label_t rl[] = {HR_METRICS_LABEL("route", routes),
                               HR_METRICS_LABEL("status", statuses)};
    hr_metrics_t *m = hr_metrics_create();
    hr_metrics_add_process(m, "demo");
    hr_counter_t *req = hr_metrics_counter(m, "herald_demo_requests_total",
                                           "HTTP requests by route and status class.", rl, 2);
    hr_gauge_t *conn =
        hr_metrics_gauge(m, "herald_demo_connections", "Open \"demo\" sockets\\now.", NULL, 0);
    hr_histogram_t *dur = hr_metrics_histogram(
        m, "herald_demo_request_duration_seconds", "Request duration in seconds.",
        hr_metrics_latency_buckets, hr_metrics_latency_nbuckets, rl, 1);
    hr_histogram_t *size =
        hr_metrics_histogram(m, "herald_demo_batch_size", "Entries per batch.",
                             hr_metrics_size_buckets, hr_metrics_size_nbuckets, NULL, 0);
    hr_counter_add(&req[1], 3);
    hr_gauge_set(conn, 12);
    hr_histogram_observe(&dur[0], 0.003);
    hr_histogram_observe(&dur[1], 42);
    hr_histogram_observe(size, 700);
    size_t len;
    const char *text = hr_metrics_render(m, &len);
    int rc = fwrite(text, 1, len, stdout) == len ? 0 : 1;
    hr_metrics_destroy(m);
    return rc;
}
