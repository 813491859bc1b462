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

/* A URL hr_redis_addr_parse accepts and all it must read from it. */
typedef struct {
    const char *url;
    const char *host;
    int port, db;
    const char *password; /* NULL: none */
} url_ok_t;

static const url_ok_t accepted[] = {
    /* Host only: port 6379, db 0 and no password. */
    {"redis://cache.internal", "cache.internal", 6379, 0, NULL},
    /* Host, port and db are read. */
    {"redis://127.0.0.1:6380/2", "127.0.0.1", 6380, 2, NULL},
    {"redis://h:1/2", "h", 1, 2, NULL},
    {"redis://h:65535", "h", 65535, 0, NULL},
    /* A db without a port, an empty db path. */
    {"redis://h/5", "h", 6379, 5, NULL},
    {"redis://h:7000/", "h", 7000, 0, NULL},
    /* Password-only userinfo sets the password; with a user, only the password is kept. */
    {"redis://:s3cret@h:6390/1", "h", 6390, 1, "s3cret"},
    {"redis://default:pw:with:colons@h", "h", 6379, 0, "pw:with:colons"},
    /* An empty password means none. */
    {"redis://:@h", "h", 6379, 0, NULL},
    /* The password ends at the last '@'; '/' and ':' inside it do not end it either. */
    {"redis://:p@ss@word@cache:6390/3", "cache", 6390, 3, "p@ss@word"},
    {"redis://user:a/b:c@h", "h", 6379, 0, "a/b:c"},
    /* The password is percent-decoded. */
    {"redis://:p%40ss%3Aw%2fd%25@h", "h", 6379, 0, "p@ss:w/d%"},
    {"redis://:%e2%82%ac@h", "h", 6379, 0, "\xe2\x82\xac"},
    /* An IPv6 literal host in brackets. */
    {"redis://[::1]:6390/2", "::1", 6390, 2, NULL},
    {"redis://:pw@[fe80::1:2]", "fe80::1:2", 6379, 0, "pw"},
    {"redis://[::ffff:127.0.0.1]/4", "::ffff:127.0.0.1", 6379, 4, NULL},
};

HR_TEST(accepted_urls_give_their_host_port_db_and_password)
{
    for (size_t i = 0; i < HR_ARRAY_LEN(accepted); i++) {
        const url_ok_t *c = &accepted[i];
        hr_redis_addr_t a;
        char err[128];
        if (!HR_CHECK_EQ_INT(parse(c->url, &a, err, sizeof(err)), 0)) {
            HR_FAIL("refused \"%s\": %s", c->url, err);
            continue;
        }
        int ok = HR_CHECK_EQ_STR(a.host, c->host);
        ok &= HR_CHECK_EQ_INT(a.port, c->port);
        ok &= HR_CHECK_EQ_INT(a.db, c->db);
        ok &= HR_CHECK_EQ_STR(a.password, c->password);
        if (!ok)
            HR_FAIL("in \"%s\"", c->url);
        hr_redis_addr_clear(&a);
        HR_CHECK(a.host == NULL && a.password == NULL);
    }
}

/* A URL hr_redis_addr_parse refuses and what its error message must name. */
typedef struct {
    const char *url;
    const char *err_has; /* NULL: any message */
} url_bad_t;

static const url_bad_t refused[] = {
    /* Not redis://. */
    {"", "redis://"},
    {"h:6379", "redis://"},
    {"http://h", "redis://"},
    {"rediss://h", "redis://"},
    {"redis:/h", "redis://"},
    {"redis:h", "redis://"},
    {"unix:///tmp/r", "redis://"},
    {"redis//h", "redis://"},
    {" redis://h", "redis://"},
    /* No host. */
    {"redis://", "host"},
    {"redis://:6379", "host"},
    {"redis:///0", "host"},
    {"redis://:pw@", "host"},
    {"redis://:pw@:6379", "host"},
    /* A bad port. */
    {"redis://h:", "port"},
    {"redis://h:0", "port"},
    {"redis://h:65536", "port"},
    {"redis://h:-1", "port"},
    {"redis://h:abc", "port"},
    {"redis://h:12x", "port"},
    {"redis://h:80:81", "port"},
    {"redis://h:99999999999999999999", "port"},
    {"redis://:pw@h:0", "port"},
    /* A bad db. */
    {"redis://h/x", "database"},
    {"redis://h/-1", "database"},
    {"redis://h/1/2", "database"},
    {"redis://h/1x", "database"},
    {"redis://h:6379/99999999999999999999", "database"},
    {"redis://:pw@h/z", "database"},
    /* A bad percent escape, or a NUL, in the password. */
    {"redis://:pw%@h", "password"},
    {"redis://:pw%4@h", "password"},
    {"redis://:pw%zz@h", "password"},
    {"redis://:%00@h", "password"},
    {"redis://:a%0@h", "password"},
    {"redis://:%g1@h", "password"},
    /* A bad IPv6 literal. */
    {"redis://[::1", NULL},
    {"redis://[]:6379", NULL},
    {"redis://[::1]x", NULL},
    {"redis://[::1]]:1", NULL},
    {"redis://[h::1 ]", NULL},
    {"redis://[::1]:0", NULL},
    /* A signed port or db. */
    {"redis://h:+80", NULL},
    {"redis://h/+1", NULL},
    {"redis://h/ 1", NULL},
    {"redis://h: 80", NULL},
};

HR_TEST(refused_urls_say_why_and_hold_nothing)
{
    for (size_t i = 0; i < HR_ARRAY_LEN(refused); i++) {
        const url_bad_t *c = &refused[i];
        hr_redis_addr_t a;
        char err[128];
        if (!HR_CHECK_EQ_INT(parse(c->url, &a, err, sizeof(err)), HR_DECLINED)) {
            HR_FAIL("accepted \"%s\"", c->url);
            hr_redis_addr_clear(&a);
            continue;
        }
        int ok = c->err_has != NULL ? HR_CHECK_CONTAINS(err, c->err_has) : HR_CHECK(err[0] != '\0');
        /* What was parsed before the error is released. */
        ok &= HR_CHECK(a.host == NULL && a.password == NULL);
        if (!ok)
            HR_FAIL("in \"%s\"", c->url);
    }
    hr_redis_addr_t a;
    char err[128];
    HR_CHECK_EQ_INT(parse(NULL, &a, err, sizeof(err)), HR_DECLINED);
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
