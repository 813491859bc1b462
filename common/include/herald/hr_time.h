/* Clocks and timestamp formatting. */
#ifndef HERALD_HR_TIME_H
#define HERALD_HR_TIME_H

#include <stddef.h>
#include <stdint.h>

#define HR_TIME_ISO_LEN 25 /* "2026-11-24T01:02:03.456Z" + NUL */

/** Wall clock, milliseconds since the Unix epoch. */
uint64_t hr_now_ms(void);
/** Monotonic clock in milliseconds, for timeouts and intervals. */
uint64_t hr_mono_ms(void);
/** Monotonic clock in microseconds, for latency measurements. */
uint64_t hr_mono_us(void);
/** Formats ms since epoch as RFC 3339 UTC with milliseconds into out. */
void hr_time_format_iso(uint64_t ms, char out[HR_TIME_ISO_LEN]);

#define HR_TIME_HTTP_LEN 30 /* "Tue, 01 Dec 2026 21:10:36 GMT" + NUL */
/** Formats secs since epoch as an HTTP date (RFC 9110 IMF-fixdate) into out. */
void hr_time_format_http(uint64_t secs, char out[HR_TIME_HTTP_LEN]);

#endif
