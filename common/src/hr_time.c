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

void
hr_time_format_iso(uint64_t ms, char out[HR_TIME_ISO_LEN])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char tmp[64];
    snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
    memcpy(out, tmp, HR_TIME_ISO_LEN - 1);
    out[HR_TIME_ISO_LEN - 1] = '\0';
}
