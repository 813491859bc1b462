#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Written once by hr_log_init() before any thread or loop starts. */
static struct {
    char service[32];
    hr_log_level_t min;
} hr_logger = {"herald", HR_LOG_INFO};

static const char *const hr_level_names[] = {"debug", "info", "warn", "error"};

void
hr_log_init(const char *service, hr_log_level_t min_level)
{
    snprintf(hr_logger.service, sizeof(hr_logger.service), "%s", service);
    hr_logger.min = min_level;
}

int
hr_log_level_parse(const char *s, hr_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, hr_level_names[i]) == 0) {
            *out = (hr_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

int
hr_log_enabled(hr_log_level_t level)
{
    return level >= hr_logger.min;
}

void
hr_log_write(hr_log_level_t level, const char *event, const char *fmt, ...)
{
    if (level < hr_logger.min)
        return;

    char line[2048];
    char ts[HR_TIME_ISO_LEN];
    hr_time_format_iso(hr_now_ms(), ts);
    int n = snprintf(line, sizeof(line), "ts=%s level=%s svc=%s event=%s", ts,
                     hr_level_names[level], hr_logger.service, event);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(line) - 2 && fmt != NULL && fmt[0] != '\0') {
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n + 1, sizeof(line) - (size_t)n - 2, fmt, ap);
        va_end(ap);
        /* The separator only when there are fields ("%s", "" is how callers log none). */
        if (m > 0) {
            line[n] = ' ';
            n += 1 + m;
        }
    }
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* One write() per line so lines from concurrent processes do not interleave. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
