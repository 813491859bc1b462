/* hr_redis: redis:// URL parsing and reconnect backoff (no server needed). */
#include "hr_test.h"

#include "herald/hr_core.h"
#include "herald/hr_redis.h"

#include <string.h>

static int
parse(const char *url, hr_redis_addr_t *a, char *err, size_t errlen)
{
    err[0] = '\0';
    return hr_redis_addr_parse(url, a, err, errlen);
}

HR_TEST(host_only_gets_port_6379_db_0_and_no_password)
{
    hr_redis_addr_t a;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("redis://cache.internal", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.host, "cache.internal");
    HR_CHECK_EQ_INT(a.port, 6379);
    HR_CHECK_EQ_INT(a.db, 0);
    HR_CHECK(a.password == NULL);
    hr_redis_addr_clear(&a);
    HR_CHECK(a.host == NULL && a.password == NULL);
}

HR_TEST(host_port_and_db_are_read)
{
    hr_redis_addr_t a;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("redis://127.0.0.1:6380/2", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.host, "127.0.0.1");
    HR_CHECK_EQ_INT(a.port, 6380);
    HR_CHECK_EQ_INT(a.db, 2);
    HR_CHECK(a.password == NULL);
    hr_redis_addr_clear(&a);

    HR_REQUIRE_EQ_INT(parse("redis://h:1/2", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.host, "h");
    HR_CHECK_EQ_INT(a.port, 1);
    HR_CHECK_EQ_INT(a.db, 2);
    hr_redis_addr_clear(&a);

    HR_REQUIRE_EQ_INT(parse("redis://h:65535", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_INT(a.port, 65535);
    hr_redis_addr_clear(&a);
}

HR_TEST(db_without_port_and_empty_db_path)
{
    hr_redis_addr_t a;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("redis://h/5", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.host, "h");
    HR_CHECK_EQ_INT(a.port, 6379);
    HR_CHECK_EQ_INT(a.db, 5);
    hr_redis_addr_clear(&a);

    HR_REQUIRE_EQ_INT(parse("redis://h:7000/", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_INT(a.port, 7000);
    HR_CHECK_EQ_INT(a.db, 0);
    hr_redis_addr_clear(&a);
}

HR_TEST(password_only_userinfo_sets_the_password)
{
    hr_redis_addr_t a;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("redis://:s3cret@h:6390/1", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.password, "s3cret");
    HR_CHECK_EQ_STR(a.host, "h");
    HR_CHECK_EQ_INT(a.port, 6390);
    HR_CHECK_EQ_INT(a.db, 1);
    hr_redis_addr_clear(&a);
}

HR_TEST(user_and_password_userinfo_keeps_only_the_password)
{
    hr_redis_addr_t a;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("redis://default:pw:with:colons@h", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.password, "pw:with:colons");
    HR_CHECK_EQ_STR(a.host, "h");
    hr_redis_addr_clear(&a);
}

HR_TEST(empty_password_means_none)
{
    hr_redis_addr_t a;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("redis://:@h", &a, err, sizeof(err)), 0);
    HR_CHECK(a.password == NULL);
    HR_CHECK_EQ_STR(a.host, "h");
    hr_redis_addr_clear(&a);
}

HR_TEST(bad_scheme_is_refused)
{
    static const char *const bad[] = {"",          "h:6379",  "http://h",      "rediss://h",
                                      "redis:/h",  "redis:h", "unix:///tmp/r", "redis//h",
                                      " redis://h"};
    hr_redis_addr_t a;
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        if (!HR_CHECK_EQ_INT(parse(bad[i], &a, err, sizeof(err)), HR_DECLINED)) {
            HR_FAIL("accepted \"%s\"", bad[i]);
            hr_redis_addr_clear(&a);
            continue;
        }
        HR_CHECK_CONTAINS(err, "redis://");
        HR_CHECK(a.host == NULL && a.password == NULL);
    }
    HR_CHECK_EQ_INT(parse(NULL, &a, err, sizeof(err)), HR_DECLINED);
}

HR_TEST(missing_host_is_refused)
{
    static const char *const bad[] = {"redis://", "redis://:6379", "redis:///0", "redis://:pw@",
                                      "redis://:pw@:6379"};
    hr_redis_addr_t a;
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        if (!HR_CHECK_EQ_INT(parse(bad[i], &a, err, sizeof(err)), HR_DECLINED)) {
            HR_FAIL("accepted \"%s\"", bad[i]);
            hr_redis_addr_clear(&a);
            continue;
        }
        HR_CHECK_CONTAINS(err, "host");
        HR_CHECK(a.host == NULL && a.password == NULL);
    }
}

HR_TEST(bad_port_is_refused)
{
    static const char *const bad[] = {
        "redis://h:",     "redis://h:0",   "redis://h:65536", "redis://h:-1",
        "redis://h:abc",  "redis://h:12x", "redis://h:80:81", "redis://h:99999999999999999999",
        "redis://:pw@h:0"};
    hr_redis_addr_t a;
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        if (!HR_CHECK_EQ_INT(parse(bad[i], &a, err, sizeof(err)), HR_DECLINED)) {
            HR_FAIL("accepted \"%s\"", bad[i]);
            hr_redis_addr_clear(&a);
            continue;
        }
        HR_CHECK_CONTAINS(err, "port");
        /* What was parsed before the error is released. */
        HR_CHECK(a.host == NULL && a.password == NULL);
    }
}

HR_TEST(bad_db_is_refused)
{
    static const char *const bad[] = {"redis://h/x",
                                      "redis://h/-1",
                                      "redis://h/1/2",
                                      "redis://h/1x",
                                      "redis://h:6379/99999999999999999999",
                                      "redis://:pw@h/z"};
    hr_redis_addr_t a;
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        if (!HR_CHECK_EQ_INT(parse(bad[i], &a, err, sizeof(err)), HR_DECLINED)) {
            HR_FAIL("accepted \"%s\"", bad[i]);
            hr_redis_addr_clear(&a);
            continue;
        }
        HR_CHECK_CONTAINS(err, "database");
        HR_CHECK(a.host == NULL && a.password == NULL);
    }
}

HR_TEST(password_with_at_sign_ends_at_the_last_at)
{
    hr_redis_addr_t a;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("redis://:p@ss@word@cache:6390/3", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.password, "p@ss@word");
    HR_CHECK_EQ_STR(a.host, "cache");
    HR_CHECK_EQ_INT(a.port, 6390);
    HR_CHECK_EQ_INT(a.db, 3);
    hr_redis_addr_clear(&a);

    /* '/' and ':' inside the password do not end it either. */
    HR_REQUIRE_EQ_INT(parse("redis://user:a/b:c@h", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.password, "a/b:c");
    HR_CHECK_EQ_STR(a.host, "h");
    HR_CHECK_EQ_INT(a.port, 6379);
    hr_redis_addr_clear(&a);
}

HR_TEST(password_is_percent_decoded)
{
    hr_redis_addr_t a;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("redis://:p%40ss%3Aw%2fd%25@h", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.password, "p@ss:w/d%");
    HR_CHECK_EQ_STR(a.host, "h");
    hr_redis_addr_clear(&a);

    HR_REQUIRE_EQ_INT(parse("redis://:%e2%82%ac@h", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.password, "\xe2\x82\xac");
    hr_redis_addr_clear(&a);
}

HR_TEST(bad_percent_escape_or_nul_in_password_is_refused)
{
    static const char *const bad[] = {"redis://:pw%@h", "redis://:pw%4@h", "redis://:pw%zz@h",
                                      "redis://:%00@h", "redis://:a%0@h",  "redis://:%g1@h"};
    hr_redis_addr_t a;
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        if (!HR_CHECK_EQ_INT(parse(bad[i], &a, err, sizeof(err)), HR_DECLINED)) {
            HR_FAIL("accepted \"%s\"", bad[i]);
            hr_redis_addr_clear(&a);
            continue;
        }
        HR_CHECK_CONTAINS(err, "password");
        HR_CHECK(a.host == NULL && a.password == NULL);
    }
}

HR_TEST(ipv6_literal_host_in_brackets)
{
    hr_redis_addr_t a;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("redis://[::1]:6390/2", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.host, "::1");
    HR_CHECK_EQ_INT(a.port, 6390);
    HR_CHECK_EQ_INT(a.db, 2);
    hr_redis_addr_clear(&a);

    HR_REQUIRE_EQ_INT(parse("redis://:pw@[fe80::1:2]", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.host, "fe80::1:2");
    HR_CHECK_EQ_STR(a.password, "pw");
    HR_CHECK_EQ_INT(a.port, 6379);
    hr_redis_addr_clear(&a);

    HR_REQUIRE_EQ_INT(parse("redis://[::ffff:127.0.0.1]/4", &a, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(a.host, "::ffff:127.0.0.1");
    HR_CHECK_EQ_INT(a.db, 4);
    hr_redis_addr_clear(&a);
}

HR_TEST(bad_ipv6_literal_is_refused)
{
    static const char *const bad[] = {"redis://[::1",     "redis://[]:6379", "redis://[::1]x",
                                      "redis://[::1]]:1", "redis://[h::1 ]", "redis://[::1]:0"};
    hr_redis_addr_t a;
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        if (!HR_CHECK_EQ_INT(parse(bad[i], &a, err, sizeof(err)), HR_DECLINED)) {
            HR_FAIL("accepted \"%s\"", bad[i]);
            hr_redis_addr_clear(&a);
            continue;
        }
        HR_CHECK(err[0] != '\0');
        HR_CHECK(a.host == NULL && a.password == NULL);
    }
}

HR_TEST(signed_port_or_db_is_refused)
{
    static const char *const bad[] = {"redis://h:+80", "redis://h/+1", "redis://h/ 1",
                                      "redis://h: 80"};
    hr_redis_addr_t a;
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        if (!HR_CHECK_EQ_INT(parse(bad[i], &a, err, sizeof(err)), HR_DECLINED)) {
            HR_FAIL("accepted \"%s\"", bad[i]);
            hr_redis_addr_clear(&a);
        }
    }
}

HR_TEST(clear_twice_is_harmless)
{
    hr_redis_addr_t a;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("redis://:pw@h", &a, err, sizeof(err)), 0);
    hr_redis_addr_clear(&a);
    hr_redis_addr_clear(&a);
    HR_CHECK(a.host == NULL);
}

/* ---- backoff ---- */

/* The ±25% band around the current base delay that hr_backoff_next() promises. */
static int
within_jitter(uint32_t d, uint32_t cur)
{
    return d >= cur - cur / 4 && d <= cur + (cur + 3) / 4;
}

HR_TEST(backoff_doubles_from_min_until_max)
{
    hr_backoff_t b;
    static const uint32_t want[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
    hr_backoff_init(&b, 100, 5000);
    for (size_t i = 0; i < HR_ARRAY_LEN(want); i++) {
        uint32_t d = hr_backoff_next(&b);
        HR_CHECK_EQ_UINT(b.cur_ms, want[i]);
        if (!HR_CHECK(within_jitter(d, want[i])))
            HR_FAIL("step %zu: delay %u outside 25%% of %u", i, d, want[i]);
    }
}

HR_TEST(backoff_jitter_stays_within_25_percent_and_varies)
{
    hr_backoff_t b;
    hr_backoff_init(&b, 1000, 1000);
    uint32_t lo = UINT32_MAX, hi = 0;
    int outside = 0;
    for (int i = 0; i < 2000; i++) {
        uint32_t d = hr_backoff_next(&b);
        if (!within_jitter(d, 1000))
            outside++;
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    HR_CHECK_EQ_INT(outside, 0);
    HR_CHECK_CMP_UINT(lo, >=, 750);
    HR_CHECK_CMP_UINT(hi, <=, 1250);
    /* 2000 draws from 501 values: the spread is wide, or there is no jitter at all. */
    HR_CHECK_CMP_UINT(hi - lo, >, 250);
}

HR_TEST(backoff_jitter_holds_for_small_delays)
{
    hr_backoff_t b;
    hr_backoff_init(&b, 1, 8);
    for (int round = 0; round < 200; round++) {
        hr_backoff_reset(&b);
        for (int i = 0; i < 5; i++) {
            uint32_t d = hr_backoff_next(&b);
            if (!HR_CHECK(within_jitter(d, b.cur_ms)))
                return;
        }
    }
}

HR_TEST(backoff_reset_starts_again_from_min)
{
    hr_backoff_t b;
    hr_backoff_init(&b, 50, 10000);
    for (int i = 0; i < 10; i++)
        hr_backoff_next(&b);
    HR_CHECK_EQ_UINT(b.cur_ms, 10000);
    hr_backoff_reset(&b);
    uint32_t d = hr_backoff_next(&b);
    HR_CHECK_EQ_UINT(b.cur_ms, 50);
    HR_CHECK(within_jitter(d, 50));
}

HR_TEST(backoff_with_min_equal_to_max_is_constant)
{
    hr_backoff_t b;
    hr_backoff_init(&b, 300, 300);
    for (int i = 0; i < 20; i++) {
        uint32_t d = hr_backoff_next(&b);
        HR_CHECK_EQ_UINT(b.cur_ms, 300);
        HR_CHECK(within_jitter(d, 300));
    }
}

HR_TEST_MAIN()
