#include "herald/hr_time.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t
hr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
hr_mono_ms(void)
{
    return hr_mono_us() / 1000;
}

uint64_t
hr_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/*
 * Days since 1970-01-01 to a civil date (H. Hinnant's days_from_civil,
 * inverted), for days >= 0: no gmtime_r, no locale, no printf.
 */
static void
hr_time_civil(uint64_t days, unsigned *y, unsigned *m, unsigned *d)
{
    uint64_t z = days + 719468;
    uint64_t era = z / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (unsigned)(yoe + era * 400) + (*m <= 2);
}

static char *
hr_time_digits(char *p, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + n;
}

/* Called for every notification and log line: written digit by digit. */
void
hr_time_format_iso(uint64_t ms, char out[HR_TIME_ISO_LEN])
{
    uint64_t secs = ms / 1000;
    unsigned y, mo, d;
    hr_time_civil(secs / 86400, &y, &mo, &d);
    if (y > 9999) {
        /* Past the four-digit years RFC 3339 has: the old cut form, never seen in practice. */
        time_t t = (time_t)secs;
        struct tm tm;
        gmtime_r(&t, &tm);
        char tmp[64];
        snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (unsigned)(ms % 1000));
        memcpy(out, tmp, HR_TIME_ISO_LEN - 1);
        out[HR_TIME_ISO_LEN - 1] = '\0';
        return;
    }
    unsigned sod = (unsigned)(secs % 86400);
    char *p = hr_time_digits(out, y, 4);
    *p++ = '-';
    p = hr_time_digits(p, mo, 2);
    *p++ = '-';
    p = hr_time_digits(p, d, 2);
    *p++ = 'T';
    p = hr_time_digits(p, sod / 3600, 2);
    *p++ = ':';
    p = hr_time_digits(p, sod / 60 % 60, 2);
    *p++ = ':';
    p = hr_time_digits(p, sod % 60, 2);
    *p++ = '.';
    p = hr_time_digits(p, (unsigned)(ms % 1000), 3);
    *p++ = 'Z';
    *p = '\0';
}

void
hr_time_format_http(uint64_t secs, char out[HR_TIME_HTTP_LEN])
{
    static const char wday[7][4] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
    static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    uint64_t days = secs / 86400;
    unsigned y, mo, d, sod = (unsigned)(secs % 86400);
    hr_time_civil(days, &y, &mo, &d);
    char *p = out;
    memcpy(p, wday[days % 7], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    p = hr_time_digits(p, d, 2);
    *p++ = ' ';
    memcpy(p, mon[mo - 1], 3);
    p += 3;
    *p++ = ' ';
    p = hr_time_digits(p, y % 10000, 4);
    *p++ = ' ';
    p = hr_time_digits(p, sod / 3600, 2);
    *p++ = ':';
    p = hr_time_digits(p, sod / 60 % 60, 2);
    *p++ = ':';
    p = hr_time_digits(p, sod % 60, 2);
    memcpy(p, " GMT", 5);
}
