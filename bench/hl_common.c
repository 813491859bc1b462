/* herald-load: time, histogram, fan-out table, pipe I/O, RSS (see hl_common.h). */
#include "hl_common.h"

/* Wall clock in microseconds: the timestamp carried in messages. */
uint64_t
hl_rt_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static unsigned
hl_hist_index(uint64_t v)
{
    if (v < HL_HIST_LIN)
        return (unsigned)v;
    int e = 63 - __builtin_clzll(v);
    if (e > 40)
        return HL_HIST_N - 1;
    unsigned sub = (unsigned)(v >> (e - 6)) & (HL_HIST_SUB - 1);
    return HL_HIST_LIN + (unsigned)(e - 10) * HL_HIST_SUB + sub;
}

static uint64_t
hl_hist_value(unsigned i)
{
    if (i < HL_HIST_LIN)
        return i;
    unsigned e = 10 + (i - HL_HIST_LIN) / HL_HIST_SUB, sub = (i - HL_HIST_LIN) % HL_HIST_SUB;
    uint64_t lo = (uint64_t)(HL_HIST_SUB + sub) << (e - 6);
    return lo + ((uint64_t)1 << (e - 6)) / 2;
}

void
hl_hist_add(hl_hist_t *h, uint64_t v)
{
    h->b[hl_hist_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

void
hl_hist_merge(hl_hist_t *into, const hl_hist_t *h)
{
    for (unsigned i = 0; i < HL_HIST_N; i++)
        into->b[i] += h->b[i];
    into->n += h->n;
    into->sum += h->sum;
    if (h->max > into->max)
        into->max = h->max;
}

/* The value at quantile q (0..1), never above the exact maximum; 0 when empty. */
uint64_t
hl_hist_q(const hl_hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t target = (uint64_t)ceil(q * (double)h->n), acc = 0;
    if (target == 0)
        target = 1;
    for (unsigned i = 0; i < HL_HIST_N; i++) {
        acc += h->b[i];
        if (acc >= target) {
            uint64_t v = hl_hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

void
hl_fantab_init(hl_fantab_t *t, uint32_t expect)
{
    uint32_t cap = 64;
    while (cap < expect * 2u + 16u)
        cap <<= 1;
    t->slot = hr_calloc(cap, sizeof(*t->slot));
    t->cap = cap;
    t->used = 0;
}

/* Adds count receivers with slowest latency max_us to message ts; drops when full. */
void
hl_fantab_add(hl_fantab_t *t, uint64_t ts, uint32_t count, uint32_t max_us)
{
    if (ts == 0 || t->cap == 0)
        return;
    uint32_t i = (uint32_t)((ts * 0x9E3779B97F4A7C15ull) >> 40) & (t->cap - 1);
    for (uint32_t probes = 0; probes < t->cap; probes++, i = (i + 1) & (t->cap - 1)) {
        hl_fan_t *f = &t->slot[i];
        if (f->ts == ts) {
            f->count += count;
            if (max_us > f->max_us)
                f->max_us = max_us;
            return;
        }
        if (f->ts == 0) {
            if (t->used + 1 >= t->cap)
                return;
            f->ts = ts;
            f->count = count;
            f->max_us = max_us;
            t->used++;
            return;
        }
    }
}

int
hl_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int
hl_read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

uint64_t
hl_proc_rss_kib(int pid)
{
    char path[64], line[256];
    if (pid > 0)
        snprintf(path, sizeof(path), "/proc/%d/status", pid);
    else
        snprintf(path, sizeof(path), "/proc/self/status");
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    uint64_t kib = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtoull(line + 6, NULL, 10);
    fclose(f);
    return kib;
}
