/* hr_time: clocks and RFC 3339 formatting. */
#include "hr_test.h"

#include "herald/hr_time.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void
check_iso(uint64_t ms, const char *want)
{
    char out[HR_TIME_ISO_LEN];
    memset(out, 'x', sizeof(out));
    hr_time_format_iso(ms, out);
    HR_CHECK_EQ_STR(out, want);
}

HR_TEST(iso_format_of_the_epoch)
{
    check_iso(0, "1970-01-01T00:00:00.000Z");
}

HR_TEST(iso_format_pads_milliseconds)
{
    check_iso(1, "1970-01-01T00:00:00.001Z");
    check_iso(999, "1970-01-01T00:00:00.999Z");
    check_iso(1000, "1970-01-01T00:00:01.000Z");
    check_iso(UINT64_C(1732410123456), "2024-11-24T01:02:03.456Z");
    check_iso(UINT64_C(1732410123050), "2024-11-24T01:02:03.050Z");
}

HR_TEST(iso_format_handles_leap_days_and_year_ends)
{
    check_iso(UINT64_C(1709251199999), "2024-02-29T23:59:59.999Z");
    check_iso(UINT64_C(1735689599999), "2024-12-31T23:59:59.999Z");
    check_iso(UINT64_C(1735689600000), "2025-01-01T00:00:00.000Z");
    check_iso(UINT64_C(253402300799999), "9999-12-31T23:59:59.999Z");
}

HR_TEST(iso_format_is_always_24_characters)
{
    char out[HR_TIME_ISO_LEN];
    for (uint64_t ms = 0; ms < UINT64_C(253402300799999); ms = ms * 3 + 7777) {
        hr_time_format_iso(ms, out);
        if (!HR_CHECK_EQ_INT(strlen(out), HR_TIME_ISO_LEN - 1))
            return;
    }
}

HR_TEST(iso_and_http_formats_agree_with_gmtime)
{
    char out[HR_TIME_ISO_LEN], http[HR_TIME_HTTP_LEN], want[64];
    for (uint64_t ms = 0; ms < UINT64_C(253402300799999); ms = ms * 3 + 86399999) {
        time_t t = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        hr_time_format_iso(ms, out);
        snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (unsigned)(ms % 1000));
        if (!HR_CHECK_EQ_STR(out, want))
            return;
        hr_time_format_http(ms / 1000, http);
        strftime(want, sizeof(want), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        if (!HR_CHECK_EQ_STR(http, want))
            return;
    }
}

HR_TEST(now_ms_follows_the_wall_clock)
{
    uint64_t before = (uint64_t)time(NULL) * 1000;
    uint64_t now = hr_now_ms();
    uint64_t after = (uint64_t)time(NULL) * 1000 + 1000;
    HR_CHECK_CMP_UINT(now, >=, before);
    HR_CHECK_CMP_UINT(now, <, after);
}

HR_TEST(monotonic_clocks_never_go_back_and_agree)
{
    uint64_t prev_us = hr_mono_us(), prev_ms = hr_mono_ms();
    int back = 0;
    for (int i = 0; i < 100000; i++) {
        uint64_t us = hr_mono_us(), ms = hr_mono_ms();
        if (us < prev_us || ms < prev_ms)
            back++;
        prev_us = us;
        prev_ms = ms;
    }
    HR_CHECK_EQ_INT(back, 0);
    uint64_t ms = hr_mono_ms(), us = hr_mono_us();
    HR_CHECK_CMP_UINT(us / 1000, >=, ms);
    HR_CHECK_CMP_UINT(us / 1000, <=, ms + 1000);
}

HR_TEST_MAIN()
