/* hr_uuid: UUIDv7 generation, ordering, text form. */
#include "hr_test.h"

#include "herald/hr_core.h"
#include "herald/hr_uuid.h"

#include <string.h>

#define T0 UINT64_C(1732410123456) /* 2024-11-24T01:02:03.456Z */

static unsigned
seq_of(const uint8_t u[16])
{
    return (unsigned)(u[6] & 0x0f) << 8 | u[7];
}

HR_TEST(version_is_7_and_variant_is_10)
{
    hr_uuid_gen_t g;
    uint8_t u[16];
    hr_uuid_gen_init(&g);
    int bad = 0;
    for (int i = 0; i < 10000; i++) {
        hr_uuid7_next(&g, T0 + (uint64_t)(i / 7), u);
        if ((u[6] >> 4) != 7 || (u[8] & 0xc0) != 0x80)
            bad++;
    }
    HR_CHECK_EQ_INT(bad, 0);
}

HR_TEST(ms_returns_the_timestamp_of_a_fresh_id)
{
    hr_uuid_gen_t g;
    uint8_t u[16];
    hr_uuid_gen_init(&g);
    hr_uuid7_next(&g, T0, u);
    HR_CHECK_EQ_UINT(hr_uuid7_ms(u), T0);
    hr_uuid7_next(&g, T0 + 5, u);
    HR_CHECK_EQ_UINT(hr_uuid7_ms(u), T0 + 5);
    /* The largest 48-bit timestamp survives the trip. */
    hr_uuid7_next(&g, UINT64_C(0xffffffffffff), u);
    HR_CHECK_EQ_UINT(hr_uuid7_ms(u), UINT64_C(0xffffffffffff));
}

HR_TEST(ms_reads_the_rfc_9562_example)
{
    /* RFC 9562 appendix A.6: 017F22E2-79B0-7CC3-98C4-DC0C0C07398F, 2022-02-22 19:22:22 UTC. */
    uint8_t u[16];
    HR_REQUIRE_EQ_INT(hr_uuid_parse("017F22E2-79B0-7CC3-98C4-DC0C0C07398F", u), 0);
    HR_CHECK_EQ_UINT(hr_uuid7_ms(u), UINT64_C(1645557742000));
}

/* Generates n ids with clock(i) and checks each sorts after the previous, as bytes and as text. */
static void
check_strictly_increasing(int n, uint64_t (*clock)(int))
{
    hr_uuid_gen_t g;
    uint8_t prev[16], cur[16];
    char prev_s[HR_UUID_STR_LEN], cur_s[HR_UUID_STR_LEN];
    int bytes_bad = 0, text_bad = 0, ms_back = 0;

    hr_uuid_gen_init(&g);
    hr_uuid7_next(&g, clock(0), prev);
    hr_uuid_format(prev, prev_s);
    for (int i = 1; i < n; i++) {
        hr_uuid7_next(&g, clock(i), cur);
        hr_uuid_format(cur, cur_s);
        if (memcmp(prev, cur, 16) >= 0)
            bytes_bad++;
        if (strcmp(prev_s, cur_s) >= 0)
            text_bad++;
        if (hr_uuid7_ms(cur) < hr_uuid7_ms(prev))
            ms_back++;
        memcpy(prev, cur, 16);
        memcpy(prev_s, cur_s, sizeof(prev_s));
    }
    HR_CHECK_EQ_INT(bytes_bad, 0);
    HR_CHECK_EQ_INT(text_bad, 0);
    HR_CHECK_EQ_INT(ms_back, 0);
}

static uint64_t
clock_frozen(int i)
{
    HR_UNUSED(i);
    return T0;
}

static uint64_t
clock_backwards(int i)
{
    /* Steps back 1 s every 1000 ids, as after an NTP correction. */
    return T0 - (uint64_t)(i / 1000) * 1000;
}

static uint64_t
clock_jittery(int i)
{
    /* Forward overall, with a one-ms step back every third id. */
    return T0 + (uint64_t)(i / 3) - (uint64_t)(i % 3 == 2);
}

HR_TEST(ids_strictly_increase_across_100k_in_the_same_ms)
{
    check_strictly_increasing(100000, clock_frozen);
}

HR_TEST(ids_strictly_increase_when_the_clock_goes_backwards)
{
    check_strictly_increasing(100000, clock_backwards);
}

HR_TEST(ids_strictly_increase_when_the_clock_jitters)
{
    check_strictly_increasing(100000, clock_jittery);
}

HR_TEST(a_step_back_keeps_the_last_timestamp)
{
    hr_uuid_gen_t g;
    uint8_t a[16], b[16];
    hr_uuid_gen_init(&g);
    hr_uuid7_next(&g, T0, a);
    hr_uuid7_next(&g, T0 - 60000, b);
    HR_CHECK_EQ_UINT(hr_uuid7_ms(b), T0);
    HR_CHECK_EQ_UINT(seq_of(b), seq_of(a) + 1);
}

HR_TEST(counter_starts_low_in_a_new_ms)
{
    hr_uuid_gen_t g;
    uint8_t u[16];
    hr_uuid_gen_init(&g);
    unsigned max_start = 0;
    for (int i = 0; i < 2000; i++) {
        hr_uuid7_next(&g, T0 + (uint64_t)i, u);
        if (seq_of(u) > max_start)
            max_start = seq_of(u);
    }
    /* Leaves at least 3584 ids of room in every millisecond. */
    HR_CHECK_CMP_INT(max_start, <=, 0x1ff);
}

HR_TEST(counter_overflow_borrows_the_next_ms)
{
    hr_uuid_gen_t g;
    uint8_t u[16], prev[16];
    hr_uuid_gen_init(&g);
    hr_uuid7_next(&g, T0, u);
    unsigned first_seq = seq_of(u);
    int in_t0 = 1;
    for (;;) {
        memcpy(prev, u, 16);
        hr_uuid7_next(&g, T0, u);
        if (hr_uuid7_ms(u) != T0)
            break;
        in_t0++;
        if (in_t0 > 5000)
            break;
    }
    /* Every counter value from the start to 0xfff was used, then the ms moved on. */
    HR_CHECK_EQ_INT(in_t0, 0x1000 - (int)first_seq);
    HR_CHECK_EQ_UINT(seq_of(prev), 0xfff);
    HR_CHECK_EQ_UINT(hr_uuid7_ms(u), T0 + 1);
    HR_CHECK_EQ_UINT(seq_of(u), 0);
    HR_CHECK(memcmp(prev, u, 16) < 0);

    /* When the real clock reaches the borrowed ms, counting goes on instead of restarting. */
    memcpy(prev, u, 16);
    hr_uuid7_next(&g, T0 + 1, u);
    HR_CHECK_EQ_UINT(hr_uuid7_ms(u), T0 + 1);
    HR_CHECK_EQ_UINT(seq_of(u), 1);
    HR_CHECK(memcmp(prev, u, 16) < 0);

    /* A later ms is taken as is. */
    hr_uuid7_next(&g, T0 + 10, u);
    HR_CHECK_EQ_UINT(hr_uuid7_ms(u), T0 + 10);
}

HR_TEST(ids_in_the_same_ms_differ_in_their_random_bits)
{
    hr_uuid_gen_t g1, g2;
    uint8_t a[16], b[16];
    hr_uuid_gen_init(&g1);
    hr_uuid_gen_init(&g2);
    int same = 0;
    for (int i = 0; i < 1000; i++) {
        hr_uuid7_next(&g1, T0 + (uint64_t)i, a);
        hr_uuid7_next(&g2, T0 + (uint64_t)i, b);
        if (memcmp(a + 8, b + 8, 8) == 0)
            same++;
    }
    HR_CHECK_EQ_INT(same, 0);
}

HR_TEST(format_is_lowercase_8_4_4_4_12)
{
    static const uint8_t u[16] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
                                  0x09, 0x0a, 0x0b, 0x0c, 0xcd, 0xef, 0xab, 0xff};
    char s[HR_UUID_STR_LEN];
    memset(s, 'x', sizeof(s));
    hr_uuid_format(u, s);
    HR_CHECK_EQ_STR(s, "01020304-0506-0708-090a-0b0ccdefabff");
}

HR_TEST(format_then_parse_round_trips)
{
    hr_uuid_gen_t g;
    uint8_t u[16], back[16];
    char s[HR_UUID_STR_LEN];
    hr_uuid_gen_init(&g);
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
        hr_uuid7_next(&g, T0 + (uint64_t)i, u);
        hr_uuid_format(u, s);
        if (hr_uuid_parse(s, back) != 0 || memcmp(u, back, 16) != 0)
            bad++;
    }
    HR_CHECK_EQ_INT(bad, 0);
}

HR_TEST(parse_accepts_uppercase)
{
    uint8_t u[16];
    char s[HR_UUID_STR_LEN];
    HR_REQUIRE_EQ_INT(hr_uuid_parse("0193A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", u), 0);
    hr_uuid_format(u, s);
    HR_CHECK_EQ_STR(s, "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
}

HR_TEST(parse_rejects_malformed_text)
{
    static const char *const bad[] = {
        "",
        "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5",   /* 35 characters */
        "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b0", /* 37 characters */
        "0193a1b2c3d47e5f8a9b0c1d2e3f4a5b",      /* no dashes */
        "0193a1b2-c3d47-e5f-8a9b-0c1d2e3f4a5b",  /* dash misplaced */
        "0193a1b2-c3d4-7e5f-8a9b_0c1d2e3f4a5b",  /* underscore for a dash */
        "0193a1g2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",  /* not hex */
        "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5 ",  /* trailing space */
        " 193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",  /* leading space */
        "{193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5}",  /* braces */
        "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a-b",  /* dash in a hex group */
    };
    uint8_t u[16];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        if (!HR_CHECK_EQ_INT(hr_uuid_parse(bad[i], u), HR_DECLINED))
            HR_FAIL("accepted \"%s\"", bad[i]);
    }
    HR_CHECK_EQ_INT(hr_uuid_parse(NULL, u), HR_DECLINED);
}

HR_TEST_MAIN()
