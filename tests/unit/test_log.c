/* hr_log: one key=value line per event on stderr, filtered by level. */
#include "hr_test.h"
#include "hr_test_capture.h"

#include "herald/hr_log.h"

#include <stdio.h>
#include <string.h>

static char captured[8192];

/* What fn writes to stderr, in captured; returns its length. */
static size_t
capture(void (*fn)(void))
{
    return hr_test_capture_stderr(fn, captured, sizeof(captured));
}

static void
log_one_info(void)
{
    hr_log_info("listen", "port=%d host=%s", 8080, "127.0.0.1");
}

static void
log_each_level(void)
{
    hr_log_debug("d", "k=%d", 1);
    hr_log_info("i", "k=%d", 2);
    hr_log_warn("w", "k=%d", 3);
    hr_log_error("e", "k=%d", 4);
}

static void
log_huge(void)
{
    static char big[5000];
    memset(big, 'v', sizeof(big) - 1);
    hr_log_error("huge", "value=%s", big);
}

static void
log_no_fields(void)
{
    hr_log_warn("bare", "%s", "");
}

HR_TEST(level_names_parse_in_any_case)
{
    hr_log_level_t l;
    HR_CHECK_EQ_INT(hr_log_level_parse("debug", &l), 0);
    HR_CHECK_EQ_INT(l, HR_LOG_DEBUG);
    HR_CHECK_EQ_INT(hr_log_level_parse("INFO", &l), 0);
    HR_CHECK_EQ_INT(l, HR_LOG_INFO);
    HR_CHECK_EQ_INT(hr_log_level_parse("Warn", &l), 0);
    HR_CHECK_EQ_INT(l, HR_LOG_WARN);
    HR_CHECK_EQ_INT(hr_log_level_parse("error", &l), 0);
    HR_CHECK_EQ_INT(l, HR_LOG_ERROR);
    HR_CHECK_EQ_INT(hr_log_level_parse("verbose", &l), -1);
    HR_CHECK_EQ_INT(hr_log_level_parse("", &l), -1);
}

HR_TEST(line_has_ts_level_svc_event_then_fields)
{
    hr_log_init("ingest", HR_LOG_INFO);
    size_t n = capture(log_one_info);
    HR_REQUIRE(n > 0);
    HR_CHECK(strncmp(captured, "ts=", 3) == 0);
    /* ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
    HR_CHECK_EQ_INT(captured[3 + 10], 'T');
    HR_CHECK_EQ_INT(captured[3 + 23], 'Z');
    HR_CHECK_EQ_STR(captured + 3 + 24,
                    " level=info svc=ingest event=listen port=8080 host=127.0.0.1\n");
}

HR_TEST(lines_below_the_minimum_level_are_dropped)
{
    hr_log_init("gateway", HR_LOG_WARN);
    HR_CHECK(!hr_log_enabled(HR_LOG_INFO));
    HR_CHECK(hr_log_enabled(HR_LOG_WARN));
    capture(log_each_level);
    HR_CHECK(strstr(captured, "event=d ") == NULL);
    HR_CHECK(strstr(captured, "event=i ") == NULL);
    HR_CHECK_CONTAINS(captured, "level=warn svc=gateway event=w k=3\n");
    HR_CHECK_CONTAINS(captured, "level=error svc=gateway event=e k=4\n");

    hr_log_init("gateway", HR_LOG_DEBUG);
    capture(log_each_level);
    HR_CHECK_CONTAINS(captured, "level=debug svc=gateway event=d k=1\n");
}

HR_TEST(event_without_fields_ends_after_the_event)
{
    hr_log_init("worker", HR_LOG_INFO);
    capture(log_no_fields);
    HR_CHECK_CONTAINS(captured, " event=bare\n");
}

HR_TEST(long_line_is_cut_to_one_line_of_at_most_2047_bytes)
{
    hr_log_init("worker", HR_LOG_INFO);
    size_t n = capture(log_huge);
    HR_CHECK_CMP_INT(n, <=, 2047);
    HR_CHECK_CMP_INT(n, >, 1000);
    HR_CHECK_EQ_INT(captured[n - 1], '\n');
    HR_CHECK(memchr(captured, '\n', n - 1) == NULL);
    HR_CHECK(memchr(captured, '\0', n) == NULL);
}

HR_TEST(service_name_is_cut_to_fit)
{
    hr_log_init("a-service-name-much-longer-than-thirty-two-bytes", HR_LOG_INFO);
    capture(log_one_info);
    HR_CHECK_CONTAINS(captured, " svc=a-service-name-much-longer-than event=listen");
}

HR_TEST_MAIN()
