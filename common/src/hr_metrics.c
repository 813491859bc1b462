#include "herald/hr_metrics.h"
#include "herald/hr_httpd.h"

#include "herald/hr_alloc.h"
#include "herald/hr_time.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef HERALD_VERSION
#define HERALD_VERSION "0.0.0-dev"
#endif

const double hr_metrics_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t hr_metrics_latency_nbuckets = HR_ARRAY_LEN(hr_metrics_latency_buckets);
const double hr_metrics_size_buckets[] = {1, 10, 50, 100, 500, 1000, 2500, 5000, 10000};
const size_t hr_metrics_size_nbuckets = HR_ARRAY_LEN(hr_metrics_size_buckets);

typedef enum { HR_METRIC_COUNTER, HR_METRIC_GAUGE, HR_METRIC_HISTOGRAM } hr_metric_kind_t;

typedef struct hr_metric_family_s {
    hr_metric_kind_t kind;
    const char *name; /* borrowed */
    const char *help; /* borrowed */
    hr_metrics_label_t labels[HR_METRICS_MAX_LABELS];
    size_t nlabels;
    size_t nslots;
    void *slots;                     /* owned: nslots hr_counter_t / hr_gauge_t / hr_histogram_t */
    uint64_t *buckets;               /* owned: histograms, nslots * (nbounds + 1) */
    struct hr_metric_family_s *next; /* owned: the next family in registration order */
} hr_metric_family_t;

typedef struct {
    hr_metrics_collect_fn fn;
    void *arg; /* borrowed */
} hr_metrics_collector_t;

/* Process gauges sampled at each render. */
typedef struct {
    const char *service_values[1]; /* borrowed strings */
    const char *version_values[1];
    hr_gauge_t *rss, *fds, *max_fds; /* borrowed from their families */
    long page_size, clk_tck;
} hr_metrics_process_t;

struct hr_metrics_s {
    hr_metric_family_t *head;           /* owned list */
    hr_metric_family_t *tail;           /* borrowed */
    hr_metrics_collector_t *collectors; /* owned */
    size_t ncollectors, collectors_cap;
    char *buf; /* owned: the last render */
    size_t len, cap;
    hr_metrics_process_t *process; /* owned, NULL until hr_metrics_add_process */
    const char *ready_service[1];  /* borrowed string: herald_ready's service label value */
};

static void
hr_metrics_fatal(const char *name, const char *why)
{
    fprintf(stderr, "herald: metric %s: %s\n", name ? name : "(null)", why);
    fflush(stderr);
    abort();
}

/* Prometheus names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names without ':' and not __reserved. */
static int
hr_metrics_valid_name(const char *s, int label)
{
    if (s == NULL || *s == '\0')
        return 0;
    if (label && s[0] == '_' && s[1] == '_')
        return 0;
    for (const char *p = s; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                    (!label && *p == ':');
        int digit = *p >= '0' && *p <= '9';
        if (!alpha && !(digit && p != s))
            return 0;
    }
    return 1;
}

static int
hr_metrics_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* Checks a registration and appends a new family holding nslots slots of slot_size bytes. */
static hr_metric_family_t *
hr_metrics_add(hr_metrics_t *m, hr_metric_kind_t kind, const char *name, const char *help,
               const hr_metrics_label_t *labels, size_t nlabels, size_t slot_size)
{
    if (!hr_metrics_valid_name(name, 0))
        hr_metrics_fatal(name, "invalid name");
    if (help == NULL)
        hr_metrics_fatal(name, "no help text");
    if (kind == HR_METRIC_COUNTER && !hr_metrics_ends_with(name, "_total"))
        hr_metrics_fatal(name, "a counter's name ends in _total");
    if (kind != HR_METRIC_COUNTER && hr_metrics_ends_with(name, "_total"))
        hr_metrics_fatal(name, "only counters end in _total");
    if (nlabels > HR_METRICS_MAX_LABELS)
        hr_metrics_fatal(name, "too many labels");
    for (hr_metric_family_t *f = m->head; f; f = f->next) {
        if (strcmp(f->name, name) == 0)
            hr_metrics_fatal(name, "registered twice");
    }
    size_t nslots = 1;
    for (size_t i = 0; i < nlabels; i++) {
        /* le is the bucket label of histograms; refused everywhere for simplicity. */
        if (!hr_metrics_valid_name(labels[i].name, 1) || strcmp(labels[i].name, "le") == 0)
            hr_metrics_fatal(name, "invalid label name");
        if (labels[i].nvalues == 0 || labels[i].values == NULL)
            hr_metrics_fatal(name, "a label without values");
        for (size_t j = 0; j < labels[i].nvalues; j++) {
            if (labels[i].values[j] == NULL)
                hr_metrics_fatal(name, "a NULL label value");
        }
        nslots *= labels[i].nvalues;
    }
    hr_metric_family_t *f = hr_calloc(1, sizeof(*f));
    f->kind = kind;
    f->name = name;
    f->help = help;
    f->nlabels = nlabels;
    for (size_t i = 0; i < nlabels; i++)
        f->labels[i] = labels[i];
    f->nslots = nslots;
    f->slots = hr_calloc(nslots, slot_size);
    if (m->tail)
        m->tail->next = f;
    else
        m->head = f;
    m->tail = f;
    return f;
}

hr_metrics_t *
hr_metrics_create(void)
{
    return hr_calloc(1, sizeof(hr_metrics_t));
}

void
hr_metrics_destroy(hr_metrics_t *m)
{
    if (m == NULL)
        return;
    hr_metric_family_t *f = m->head;
    while (f) {
        hr_metric_family_t *next = f->next;
        hr_free(f->slots);
        hr_free(f->buckets);
        hr_free(f);
        f = next;
    }
    hr_free(m->collectors);
    hr_free(m->buf);
    hr_free(m->process);
    hr_free(m);
}

hr_counter_t *
hr_metrics_counter(hr_metrics_t *m, const char *name, const char *help,
                   const hr_metrics_label_t *labels, size_t nlabels)
{
    return hr_metrics_add(m, HR_METRIC_COUNTER, name, help, labels, nlabels, sizeof(hr_counter_t))
        ->slots;
}

hr_gauge_t *
hr_metrics_gauge(hr_metrics_t *m, const char *name, const char *help,
                 const hr_metrics_label_t *labels, size_t nlabels)
{
    return hr_metrics_add(m, HR_METRIC_GAUGE, name, help, labels, nlabels, sizeof(hr_gauge_t))
        ->slots;
}

hr_histogram_t *
hr_metrics_histogram(hr_metrics_t *m, const char *name, const char *help, const double *bounds,
                     size_t nbounds, const hr_metrics_label_t *labels, size_t nlabels)
{
    if (bounds == NULL || nbounds == 0)
        hr_metrics_fatal(name, "a histogram without buckets");
    for (size_t i = 0; i < nbounds; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            hr_metrics_fatal(name, "bucket bounds must be finite and ascending");
    }
    hr_metric_family_t *f =
        hr_metrics_add(m, HR_METRIC_HISTOGRAM, name, help, labels, nlabels, sizeof(hr_histogram_t));
    f->buckets = hr_calloc(f->nslots * (nbounds + 1), sizeof(uint64_t));
    hr_histogram_t *h = f->slots;
    for (size_t s = 0; s < f->nslots; s++) {
        h[s].bounds = bounds;
        h[s].nbounds = nbounds;
        h[s].buckets = f->buckets + s * (nbounds + 1);
    }
    return h;
}

void
hr_metrics_on_collect(hr_metrics_t *m, hr_metrics_collect_fn fn, void *arg)
{
    if (m->ncollectors == m->collectors_cap) {
        m->collectors_cap = m->collectors_cap ? m->collectors_cap * 2 : 4;
        m->collectors = hr_realloc(m->collectors, m->collectors_cap * sizeof(*m->collectors));
    }
    m->collectors[m->ncollectors++] = (hr_metrics_collector_t){fn, arg};
}

void
hr_histogram_observe(hr_histogram_t *h, double v)
{
    if (isnan(v))
        return;
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum += v;
}

/* ---- rendering ---- */

static void
hr_metrics_reserve(hr_metrics_t *m, size_t more)
{
    if (m->len + more + 1 <= m->cap)
        return;
    size_t cap = m->cap ? m->cap : 4096;
    while (cap < m->len + more + 1)
        cap *= 2;
    m->buf = hr_realloc(m->buf, cap);
    m->cap = cap;
}

static void
hr_metrics_put(hr_metrics_t *m, const char *s, size_t n)
{
    hr_metrics_reserve(m, n);
    memcpy(m->buf + m->len, s, n);
    m->len += n;
    m->buf[m->len] = '\0';
}

static void
hr_metrics_puts(hr_metrics_t *m, const char *s)
{
    hr_metrics_put(m, s, strlen(s));
}

/* Appends s escaped for a HELP line (\ and newline) or a label value (also "). */
static void
hr_metrics_put_escaped(hr_metrics_t *m, const char *s, int quote)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            hr_metrics_put(m, "\\\\", 2);
        else if (*p == '\n')
            hr_metrics_put(m, "\\n", 2);
        else if (*p == '"' && quote)
            hr_metrics_put(m, "\\\"", 2);
        else
            hr_metrics_put(m, p, 1);
    }
}

/* Shortest "%g" text that reads back as v; Prometheus spells infinities +Inf/-Inf. */
static void
hr_metrics_put_double(hr_metrics_t *m, double v)
{
    char tmp[40];
    if (isnan(v)) {
        hr_metrics_puts(m, "NaN");
        return;
    }
    if (isinf(v)) {
        hr_metrics_puts(m, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    snprintf(tmp, sizeof(tmp), "%.15g", v);
    if (strtod(tmp, NULL) != v)
        snprintf(tmp, sizeof(tmp), "%.17g", v);
    hr_metrics_puts(m, tmp);
}

static void
hr_metrics_put_u64(hr_metrics_t *m, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
    hr_metrics_put(m, tmp, (size_t)n);
}

/*
 * Appends "{a="x",b="y"" for slot s (row-major over the family's labels),
 * plus le="bound" when le is not NULL, and closes the brace. Nothing at all
 * for an unlabelled sample without le.
 */
static void
hr_metrics_put_labels(hr_metrics_t *m, const hr_metric_family_t *f, size_t s, const char *le)
{
    if (f->nlabels == 0 && le == NULL)
        return;
    size_t idx[HR_METRICS_MAX_LABELS];
    for (size_t k = f->nlabels; k-- > 0;) {
        idx[k] = s % f->labels[k].nvalues;
        s /= f->labels[k].nvalues;
    }
    hr_metrics_put(m, "{", 1);
    for (size_t k = 0; k < f->nlabels; k++) {
        if (k > 0)
            hr_metrics_put(m, ",", 1);
        hr_metrics_puts(m, f->labels[k].name);
        hr_metrics_put(m, "=\"", 2);
        hr_metrics_put_escaped(m, f->labels[k].values[idx[k]], 1);
        hr_metrics_put(m, "\"", 1);
    }
    if (le) {
        if (f->nlabels > 0)
            hr_metrics_put(m, ",", 1);
        hr_metrics_put(m, "le=\"", 4);
        hr_metrics_puts(m, le);
        hr_metrics_put(m, "\"", 1);
    }
    hr_metrics_put(m, "}", 1);
}

static void
hr_metrics_render_histogram(hr_metrics_t *m, const hr_metric_family_t *f)
{
    const hr_histogram_t *hs = f->slots;
    for (size_t s = 0; s < f->nslots; s++) {
        const hr_histogram_t *h = &hs[s];
        uint64_t cum = 0;
        for (size_t i = 0; i <= h->nbounds; i++) {
            char le[40];
            if (i < h->nbounds) {
                snprintf(le, sizeof(le), "%.15g", h->bounds[i]);
                if (strtod(le, NULL) != h->bounds[i])
                    snprintf(le, sizeof(le), "%.17g", h->bounds[i]);
            } else {
                memcpy(le, "+Inf", 5);
            }
            cum += h->buckets[i];
            hr_metrics_puts(m, f->name);
            hr_metrics_puts(m, "_bucket");
            hr_metrics_put_labels(m, f, s, le);
            hr_metrics_put(m, " ", 1);
            hr_metrics_put_u64(m, cum);
            hr_metrics_put(m, "\n", 1);
        }
        hr_metrics_puts(m, f->name);
        hr_metrics_puts(m, "_sum");
        hr_metrics_put_labels(m, f, s, NULL);
        hr_metrics_put(m, " ", 1);
        hr_metrics_put_double(m, h->sum);
        hr_metrics_put(m, "\n", 1);
        hr_metrics_puts(m, f->name);
        hr_metrics_puts(m, "_count");
        hr_metrics_put_labels(m, f, s, NULL);
        hr_metrics_put(m, " ", 1);
        hr_metrics_put_u64(m, h->count);
        hr_metrics_put(m, "\n", 1);
    }
}

const char *
hr_metrics_render(hr_metrics_t *m, size_t *len)
{
    static const char *const kinds[] = {"counter", "gauge", "histogram"};
    for (size_t i = 0; i < m->ncollectors; i++)
        m->collectors[i].fn(m->collectors[i].arg);
    m->len = 0;
    hr_metrics_reserve(m, 0);
    m->buf[0] = '\0';
    for (const hr_metric_family_t *f = m->head; f; f = f->next) {
        hr_metrics_puts(m, "# HELP ");
        hr_metrics_puts(m, f->name);
        hr_metrics_put(m, " ", 1);
        hr_metrics_put_escaped(m, f->help, 0);
        hr_metrics_puts(m, "\n# TYPE ");
        hr_metrics_puts(m, f->name);
        hr_metrics_put(m, " ", 1);
        hr_metrics_puts(m, kinds[f->kind]);
        hr_metrics_put(m, "\n", 1);
        if (f->kind == HR_METRIC_HISTOGRAM) {
            hr_metrics_render_histogram(m, f);
            continue;
        }
        for (size_t s = 0; s < f->nslots; s++) {
            hr_metrics_puts(m, f->name);
            hr_metrics_put_labels(m, f, s, NULL);
            hr_metrics_put(m, " ", 1);
            if (f->kind == HR_METRIC_COUNTER)
                hr_metrics_put_u64(m, ((const hr_counter_t *)f->slots)[s].value);
            else
                hr_metrics_put_double(m, ((const hr_gauge_t *)f->slots)[s].value);
            hr_metrics_put(m, "\n", 1);
        }
    }
    *len = m->len;
    return m->buf;
}

void
hr_metrics_send_httpd(hr_httpd_req_t *req, hr_metrics_t *m)
{
    size_t len;
    const char *text = hr_metrics_render(m, &len);
    hr_httpd_add_header(req, "Cache-Control", "no-store");
    hr_httpd_send(req, 200, HR_METRICS_CONTENT_TYPE, text, len);
}

/* ---- process metrics ---- */

const char *
hr_metrics_version(void)
{
    return HERALD_VERSION;
}

/* Reads up to cap-1 bytes of a small /proc file; returns the length or -1. */
static ssize_t
hr_metrics_read_proc(const char *path, char *buf, size_t cap)
{
    FILE *fp = fopen(path, "re");
    if (fp == NULL)
        return -1;
    size_t n = fread(buf, 1, cap - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    return (ssize_t)n;
}

/*
 * Field 22 of /proc/self/stat: the start time in clock ticks after boot. The
 * command name in parentheses may hold spaces, so fields are counted after
 * its closing parenthesis.
 */
static int
hr_metrics_start_ticks(unsigned long long *start_ticks)
{
    char buf[1024];
    if (hr_metrics_read_proc("/proc/self/stat", buf, sizeof(buf)) <= 0)
        return HR_ERR;
    const char *p = strrchr(buf, ')');
    if (p == NULL)
        return HR_ERR;
    p++;
    /* After ")": field 3 (state) onwards. */
    for (int field = 3; field <= 22; field++) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            return HR_ERR;
        if (field == 22) {
            *start_ticks = strtoull(p, NULL, 10);
            return HR_OK;
        }
        while (*p && *p != ' ')
            p++;
    }
    return HR_ERR;
}

/* Boot time (seconds since the epoch) from the btime line of /proc/stat. */
static double
hr_metrics_boot_time(void)
{
    char buf[8192];
    if (hr_metrics_read_proc("/proc/stat", buf, sizeof(buf)) <= 0)
        return -1;
    const char *p = strstr(buf, "\nbtime ");
    return p ? strtod(p + 7, NULL) : -1;
}

static void
hr_metrics_collect_process(void *arg)
{
    hr_metrics_process_t *p = arg;
    char buf[256];
    unsigned long long size_pages, rss_pages;
    if (hr_metrics_read_proc("/proc/self/statm", buf, sizeof(buf)) > 0 &&
        sscanf(buf, "%llu %llu", &size_pages, &rss_pages) == 2)
        hr_gauge_set(p->rss, (double)rss_pages * (double)p->page_size);
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] != '.')
                n++;
        }
        closedir(d);
        hr_gauge_set(p->fds, (double)(n - 1)); /* not the directory's own descriptor */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        hr_gauge_set(p->max_fds, rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
}

void
hr_metrics_add_process(hr_metrics_t *m, const char *service)
{
    if (m->process)
        hr_metrics_fatal("process_*", "registered twice");
    hr_metrics_process_t *p = hr_calloc(1, sizeof(*p));
    m->process = p;
    p->service_values[0] = service;
    p->version_values[0] = HERALD_VERSION;
    p->page_size = sysconf(_SC_PAGESIZE);
    p->clk_tck = sysconf(_SC_CLK_TCK);
    if (p->page_size <= 0)
        p->page_size = 4096;
    if (p->clk_tck <= 0)
        p->clk_tck = 100;

    hr_metrics_label_t info[] = {HR_METRICS_LABEL("service", p->service_values),
                                 HR_METRICS_LABEL("version", p->version_values)};
    hr_gauge_set(hr_metrics_gauge(m, "herald_build_info",
                                  "Always 1; the labels name the service and its version.", info,
                                  HR_ARRAY_LEN(info)),
                 1);

    double start_s = (double)hr_now_ms() / 1000.0;
    unsigned long long start_ticks;
    double boot = hr_metrics_boot_time();
    if (boot > 0 && hr_metrics_start_ticks(&start_ticks) == HR_OK)
        start_s = boot + (double)start_ticks / (double)p->clk_tck;
    hr_gauge_set(hr_metrics_gauge(m, "process_start_time_seconds",
                                  "Start time of the process since the Unix epoch, in seconds.",
                                  NULL, 0),
                 start_s);
    p->rss = hr_metrics_gauge(m, "process_resident_memory_bytes", "Resident memory size in bytes.",
                              NULL, 0);
    p->fds = hr_metrics_gauge(m, "process_open_fds", "Number of open file descriptors.", NULL, 0);
    p->max_fds =
        hr_metrics_gauge(m, "process_max_fds", "Maximum number of open file descriptors.", NULL, 0);
    hr_metrics_on_collect(m, hr_metrics_collect_process, p);
}

/* ---- readiness ---- */

hr_metrics_readiness_t
hr_metrics_add_readiness(hr_metrics_t *m, const char *service, const char *const *deps,
                         size_t ndeps)
{
    m->ready_service[0] = service;
    hr_metrics_label_t l[] = {HR_METRICS_LABEL("service", m->ready_service),
                              HR_METRICS_LABEL_N("dependency", deps, ndeps)};
    hr_metrics_readiness_t r;
    r.ready = hr_metrics_gauge(m, "herald_ready", "1 when /readyz answers 200", l, 1);
    r.dep_up =
        hr_metrics_gauge(m, "herald_dependency_up",
                         "1 while the connection to the dependency is ready", l, HR_ARRAY_LEN(l));
    return r;
}
