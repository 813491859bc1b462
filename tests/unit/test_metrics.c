/* hr_metrics: registry, fixed label slots, histograms and the 0.0.4 text format. */
#include "hr_test.h"

#include "herald/hr_metrics.h"
#include "herald/hr_time.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { ROUTE_POST, ROUTE_BATCH };
static const char *const routes[] = {"post", "batch"};
enum { STATUS_2XX, STATUS_4XX, STATUS_5XX };
static const char *const statuses[] = {"2xx", "4xx", "5xx"};

HR_TEST(a_small_registry_renders_exactly)
{
    hr_metrics_t *m = hr_metrics_create();
    hr_counter_t *accepted =
        hr_metrics_counter(m, "herald_ingest_accepted_total", "Notifications accepted.", NULL, 0);
    hr_metrics_label_t rl[] = {HR_METRICS_LABEL("route", routes),
                               HR_METRICS_LABEL("status", statuses)};
    hr_counter_t *requests =
        hr_metrics_counter(m, "herald_ingest_requests_total", "HTTP requests.", rl, 2);
    hr_gauge_t *open = hr_metrics_gauge(m, "herald_gateway_connections", "Open sockets.", NULL, 0);
    static const double bounds[] = {0.005, 0.1, 1};
    hr_histogram_t *dur = hr_metrics_histogram(m, "herald_ingest_request_duration_seconds",
                                               "Request time.", bounds, 3, rl, 1);

    hr_counter_add(accepted, 41);
    hr_counter_inc(accepted);
    hr_counter_inc(&requests[ROUTE_POST * 3 + STATUS_2XX]);
    hr_counter_add(&requests[ROUTE_BATCH * 3 + STATUS_5XX], 7);
    hr_gauge_set(open, 3);
    hr_gauge_add(open, -1.5);
    hr_histogram_observe(&dur[ROUTE_POST], 0.005); /* on a bound: counts in that bucket */
    hr_histogram_observe(&dur[ROUTE_POST], 0.05);
    hr_histogram_observe(&dur[ROUTE_POST], 2.5); /* past the last bound: +Inf only */
    hr_histogram_observe(&dur[ROUTE_POST], NAN); /* ignored */
    hr_histogram_observe(&dur[ROUTE_BATCH], 0.25);

    size_t len;
    const char *text = hr_metrics_render(m, &len);
    HR_CHECK_EQ_STR(
        text, "# HELP herald_ingest_accepted_total Notifications accepted.\n"
              "# TYPE herald_ingest_accepted_total counter\n"
              "herald_ingest_accepted_total 42\n"
              "# HELP herald_ingest_requests_total HTTP requests.\n"
              "# TYPE herald_ingest_requests_total counter\n"
              "herald_ingest_requests_total{route=\"post\",status=\"2xx\"} 1\n"
              "herald_ingest_requests_total{route=\"post\",status=\"4xx\"} 0\n"
              "herald_ingest_requests_total{route=\"post\",status=\"5xx\"} 0\n"
              "herald_ingest_requests_total{route=\"batch\",status=\"2xx\"} 0\n"
              "herald_ingest_requests_total{route=\"batch\",status=\"4xx\"} 0\n"
              "herald_ingest_requests_total{route=\"batch\",status=\"5xx\"} 7\n"
              "# HELP herald_gateway_connections Open sockets.\n"
              "# TYPE herald_gateway_connections gauge\n"
              "herald_gateway_connections 1.5\n"
              "# HELP herald_ingest_request_duration_seconds Request time.\n"
              "# TYPE herald_ingest_request_duration_seconds histogram\n"
              "herald_ingest_request_duration_seconds_bucket{route=\"post\",le=\"0.005\"} 1\n"
              "herald_ingest_request_duration_seconds_bucket{route=\"post\",le=\"0.1\"} 2\n"
              "herald_ingest_request_duration_seconds_bucket{route=\"post\",le=\"1\"} 2\n"
              "herald_ingest_request_duration_seconds_bucket{route=\"post\",le=\"+Inf\"} 3\n"
              "herald_ingest_request_duration_seconds_sum{route=\"post\"} 2.555\n"
              "herald_ingest_request_duration_seconds_count{route=\"post\"} 3\n"
              "herald_ingest_request_duration_seconds_bucket{route=\"batch\",le=\"0.005\"} 0\n"
              "herald_ingest_request_duration_seconds_bucket{route=\"batch\",le=\"0.1\"} 0\n"
              "herald_ingest_request_duration_seconds_bucket{route=\"batch\",le=\"1\"} 1\n"
              "herald_ingest_request_duration_seconds_bucket{route=\"batch\",le=\"+Inf\"} 1\n"
              "herald_ingest_request_duration_seconds_sum{route=\"batch\"} 0.25\n"
              "herald_ingest_request_duration_seconds_count{route=\"batch\"} 1\n");
    HR_CHECK_CMP_UINT(len, ==, strlen(text));
    hr_metrics_destroy(m);
}

HR_TEST(help_and_label_values_are_escaped)
{
    hr_metrics_t *m = hr_metrics_create();
    static const char *const odd[] = {"a\"b\\c\nd"};
    hr_metrics_label_t l[] = {HR_METRICS_LABEL("v", odd)};
    hr_metrics_gauge(m, "x", "line one\nback\\slash \"quoted\"", l, 1);
    size_t len;
    HR_CHECK_EQ_STR(hr_metrics_render(m, &len), "# HELP x line one\\nback\\\\slash \"quoted\"\n"
                                                "# TYPE x gauge\n"
                                                "x{v=\"a\\\"b\\\\c\\nd\"} 0\n");
    hr_metrics_destroy(m);
}

HR_TEST(gauge_values_keep_full_precision_and_spell_infinity)
{
    hr_metrics_t *m = hr_metrics_create();
    static const char *const which[] = {"a", "b", "c", "d"};
    hr_metrics_label_t l[] = {HR_METRICS_LABEL("w", which)};
    hr_gauge_t *g = hr_metrics_gauge(m, "g", "h", l, 1);
    hr_gauge_set(&g[0], 1764622240.123);
    hr_gauge_set(&g[1], 0.1 + 0.2); /* needs 17 digits to read back */
    hr_gauge_set(&g[2], INFINITY);
    hr_gauge_set(&g[3], -INFINITY);
    size_t len;
    const char *text = hr_metrics_render(m, &len);
    HR_CHECK(strstr(text, "g{w=\"a\"} 1764622240.123\n") != NULL);
    HR_CHECK(strstr(text, "g{w=\"b\"} 0.30000000000000004\n") != NULL);
    HR_CHECK(strstr(text, "g{w=\"c\"} +Inf\n") != NULL);
    HR_CHECK(strstr(text, "g{w=\"d\"} -Inf\n") != NULL);
    hr_metrics_destroy(m);
}

HR_TEST(a_second_render_reflects_new_values_and_reuses_the_buffer)
{
    hr_metrics_t *m = hr_metrics_create();
    hr_counter_t *c = hr_metrics_counter(m, "c_total", "h", NULL, 0);
    size_t len1, len2;
    const char *a = hr_metrics_render(m, &len1);
    HR_CHECK(strstr(a, "c_total 0\n") != NULL);
    hr_counter_add(c, 5);
    const char *b = hr_metrics_render(m, &len2);
    HR_CHECK(a == b);
    HR_CHECK(strstr(b, "c_total 5\n") != NULL);
    HR_CHECK_CMP_UINT(len1, ==, len2);
    hr_metrics_destroy(m);
}

static void
bump(void *arg)
{
    hr_gauge_add(arg, 1);
}

HR_TEST(samplers_run_before_each_render)
{
    hr_metrics_t *m = hr_metrics_create();
    hr_gauge_t *g = hr_metrics_gauge(m, "sampled", "h", NULL, 0);
    hr_metrics_on_collect(m, bump, g);
    size_t len;
    HR_CHECK(strstr(hr_metrics_render(m, &len), "sampled 1\n") != NULL);
    HR_CHECK(strstr(hr_metrics_render(m, &len), "sampled 2\n") != NULL);
    hr_metrics_destroy(m);
}

HR_TEST(a_large_registry_grows_the_buffer)
{
    hr_metrics_t *m = hr_metrics_create();
    static const char *const many[] = {"v00", "v01", "v02", "v03", "v04", "v05", "v06", "v07",
                                       "v08", "v09", "v10", "v11", "v12", "v13", "v14", "v15"};
    hr_metrics_label_t l[] = {HR_METRICS_LABEL("a", many), HR_METRICS_LABEL("b", many),
                              HR_METRICS_LABEL("c", many)};
    hr_counter_t *c = hr_metrics_counter(m, "big_total", "h", l, 3);
    hr_counter_inc(&c[(15 * 16 + 14) * 16 + 13]);
    size_t len;
    const char *text = hr_metrics_render(m, &len);
    HR_CHECK_CMP_UINT(len, >, 4096 * 16);
    HR_CHECK(strstr(text, "big_total{a=\"v15\",b=\"v14\",c=\"v13\"} 1\n") != NULL);
    HR_CHECK(strstr(text, "big_total{a=\"v15\",b=\"v15\",c=\"v15\"} 0\n") != NULL);
    hr_metrics_destroy(m);
}

/* The value of an unlabelled sample "name value" in text, or NAN. */
static double
sample(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : NAN;
}

HR_TEST(process_metrics_describe_this_process)
{
    hr_metrics_t *m = hr_metrics_create();
    hr_metrics_add_process(m, "ingest");
    size_t len;
    const char *text = hr_metrics_render(m, &len);
    char info[128];
    snprintf(info, sizeof(info), "\nherald_build_info{service=\"ingest\",version=\"%s\"} 1\n",
             hr_metrics_version());
    HR_CHECK(strstr(text, info) != NULL);
    HR_CHECK(strstr(text, "# TYPE process_resident_memory_bytes gauge\n") != NULL);

    double now = (double)hr_now_ms() / 1000.0;
    double start = sample(text, "process_start_time_seconds");
    HR_CHECK(start > now - 3600 && start <= now + 1);
    HR_CHECK(sample(text, "process_resident_memory_bytes") > 1024 * 1024);
    HR_CHECK(sample(text, "process_max_fds") >= 3);

    /* Two more descriptors show up at the next scrape. */
    double fds = sample(text, "process_open_fds");
    HR_CHECK(fds >= 3);
    int a = open("/dev/null", O_RDONLY), b = open("/dev/null", O_RDONLY);
    HR_REQUIRE(a >= 0 && b >= 0);
    text = hr_metrics_render(m, &len);
    HR_CHECK(sample(text, "process_open_fds") == fds + 2);
    close(a);
    close(b);
    hr_metrics_destroy(m);
}

HR_TEST(readiness_registers_ready_and_one_dependency_slot_each)
{
    hr_metrics_t *m = hr_metrics_create();
    static const char *const deps[] = {"redis", "postgres"};
    hr_metrics_readiness_t r = hr_metrics_add_readiness(m, "history", deps, 2);
    hr_gauge_set(r.ready, 1);
    hr_gauge_set(&r.dep_up[1], 1);
    size_t len;
    HR_CHECK_EQ_STR(
        hr_metrics_render(m, &len),
        "# HELP herald_ready 1 when /readyz answers 200\n"
        "# TYPE herald_ready gauge\n"
        "herald_ready{service=\"history\"} 1\n"
        "# HELP herald_dependency_up 1 while the connection to the dependency is ready\n"
        "# TYPE herald_dependency_up gauge\n"
        "herald_dependency_up{service=\"history\",dependency=\"redis\"} 0\n"
        "herald_dependency_up{service=\"history\",dependency=\"postgres\"} 1\n");
    hr_metrics_destroy(m);

    /* A service with one dependency gets one slot. */
    m = hr_metrics_create();
    r = hr_metrics_add_readiness(m, "gateway", deps, 1);
    hr_gauge_set(&r.dep_up[0], 1);
    HR_CHECK_EQ_STR(hr_metrics_render(m, &len),
                    "# HELP herald_ready 1 when /readyz answers 200\n"
                    "# TYPE herald_ready gauge\n"
                    "herald_ready{service=\"gateway\"} 0\n"
                    "# HELP herald_dependency_up 1 while the connection to the dependency is "
                    "ready\n"
                    "# TYPE herald_dependency_up gauge\n"
                    "herald_dependency_up{service=\"gateway\",dependency=\"redis\"} 1\n");
    hr_metrics_destroy(m);
}

/* Runs fn in a child; whether it died of SIGABRT (a refused registration). */
static int
aborts(void (*fn)(hr_metrics_t *))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (freopen("/dev/null", "w", stderr) == NULL)
            _exit(2);
        hr_metrics_t *m = hr_metrics_create();
        fn(m);
        hr_metrics_destroy(m);
        _exit(0);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return 0;
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void
counter_without_total(hr_metrics_t *m)
{
    hr_metrics_counter(m, "herald_requests", "h", NULL, 0);
}

static void
gauge_with_total(hr_metrics_t *m)
{
    hr_metrics_gauge(m, "herald_open_total", "h", NULL, 0);
}

static void
registered_twice(hr_metrics_t *m)
{
    hr_metrics_gauge(m, "herald_x", "h", NULL, 0);
    hr_metrics_gauge(m, "herald_x", "h", NULL, 0);
}

static void
bad_name(hr_metrics_t *m)
{
    hr_metrics_gauge(m, "herald-x", "h", NULL, 0);
}

static void
bad_label(hr_metrics_t *m)
{
    static const char *const v[] = {"a"};
    hr_metrics_label_t l[] = {HR_METRICS_LABEL("le", v)};
    hr_metrics_gauge(m, "herald_y", "h", l, 1);
}

static void
descending_buckets(hr_metrics_t *m)
{
    static const double b[] = {1, 0.5};
    hr_metrics_histogram(m, "herald_z_seconds", "h", b, 2, NULL, 0);
}

static void
well_formed(hr_metrics_t *m)
{
    static const double b[] = {0.5, 1};
    hr_metrics_counter(m, "herald_ok_total", "h", NULL, 0);
    hr_metrics_histogram(m, "herald_ok_seconds", "h", b, 2, NULL, 0);
}

HR_TEST(malformed_registrations_abort)
{
    HR_CHECK(aborts(counter_without_total));
    HR_CHECK(aborts(gauge_with_total));
    HR_CHECK(aborts(registered_twice));
    HR_CHECK(aborts(bad_name));
    HR_CHECK(aborts(bad_label));
    HR_CHECK(aborts(descending_buckets));
    HR_CHECK(!aborts(well_formed));
}

HR_TEST_MAIN()
