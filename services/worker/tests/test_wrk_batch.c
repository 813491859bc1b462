/* wrk_batch: stream entries → rows → COPY text, with no server involved. */
#include "hr_test.h"

#include "wrk_batch.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"

#include <string.h>

/* The HR_CHECK_* macros evaluate their arguments twice: calls go through rc. */
#define ID1 "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
#define TS1 "2026-11-24T01:02:03.456Z"

/* COPY text of s[0..len) as a NUL-terminated heap string (hr_free). */
static char *
escape(const char *s, size_t len)
{
    wrk_buf_t b = {0};
    char *in = hr_test_memdup(s, len);
    wrk_copy_escape(&b, in, len);
    free(in);
    wrk_buf_append(&b, "", 1);
    return b.data;
}

/* An envelope as ingest writes it. */
static char *
envelope(const char *id, const char *user, const char *msg, const char *data, const char *ts)
{
    hr_notification_t n = {0};
    snprintf(n.id, sizeof(n.id), "%s", id);
    snprintf(n.created_at, sizeof(n.created_at), "%s", ts);
    n.user_id = (char *)user;
    n.type = (char *)"default";
    n.message = (char *)msg;
    n.data_json = (char *)data;
    return hr_proto_envelope_encode(&n, NULL);
}

/* Adds an entry with the three fields ingest's script writes. */
static int
add3(wrk_batch_t *b, const char *sid, const char *id, const char *user, const char *payload,
     char *err, size_t errlen)
{
    const char *kv[] = {HR_FIELD_ID, id, HR_FIELD_USER_ID, user, HR_FIELD_PAYLOAD, payload};
    size_t kvlen[6];
    for (int i = 0; i < 6; i++)
        kvlen[i] = strlen(kv[i]);
    err[0] = '\0';
    return wrk_batch_add(b, sid, strlen(sid), kv, kvlen, 6, err, errlen);
}

HR_TEST(copy_escape_escapes_backslash_tab_newline_and_cr)
{
    char *s = escape("a\\b\tc\nd\re", 9);
    HR_CHECK_EQ_STR(s, "a\\\\b\\tc\\nd\\re");
    hr_free(s);
}

HR_TEST(copy_escape_keeps_utf8_and_other_bytes)
{
    const char in[] = "h\xc3\xa9llo \xe2\x82\xac \"q\" \x01 \\N";
    char *s = escape(in, sizeof(in) - 1);
    HR_CHECK_EQ_STR(s, "h\xc3\xa9llo \xe2\x82\xac \"q\" \x01 \\\\N");
    hr_free(s);
}

HR_TEST(copy_escape_of_empty_string_appends_nothing)
{
    char *s = escape("", 0);
    HR_CHECK_EQ_STR(s, "");
    hr_free(s);
}

HR_TEST(copy_row_writes_columns_in_order_and_null_data_as_backslash_n)
{
    hr_notification_t n = {.id = ID1, .created_at = TS1};
    n.user_id = (char *)"u\t1";
    n.type = (char *)"t";
    n.message = (char *)"line1\nline2";
    wrk_buf_t b = {0};
    wrk_copy_row(&b, &n);
    n.data_json = (char *)"{\"k\":\"a\\\\b\"}";
    wrk_copy_row(&b, &n);
    wrk_buf_append(&b, "", 1);
    HR_CHECK_EQ_STR(b.data,
                    ID1 "\tu\\t1\t\\N\tt\tline1\\nline2\t\\N\t" TS1 "\n" ID1
                        "\tu\\t1\t\\N\tt\tline1\\nline2\t{\"k\":\"a\\\\\\\\b\"}\t" TS1 "\n");
    wrk_buf_free(&b);
}

HR_TEST(timestamp_valid_accepts_rfc3339_forms)
{
    HR_CHECK(wrk_timestamp_valid(TS1));
    HR_CHECK(wrk_timestamp_valid("2024-02-29T23:59:59Z"));
    HR_CHECK(wrk_timestamp_valid("2000-02-29T00:00:00.123456+05:30"));
    HR_CHECK(wrk_timestamp_valid("1999-12-31T23:59:60-08:00"));
}

HR_TEST(timestamp_valid_rejects_bad_dates_and_forms)
{
    HR_CHECK(!wrk_timestamp_valid(NULL));
    HR_CHECK(!wrk_timestamp_valid(""));
    HR_CHECK(!wrk_timestamp_valid("2023-02-29T00:00:00Z"));
    HR_CHECK(!wrk_timestamp_valid("1900-02-29T00:00:00Z"));
    HR_CHECK(!wrk_timestamp_valid("2026-13-01T00:00:00Z"));
    HR_CHECK(!wrk_timestamp_valid("2026-04-31T00:00:00Z"));
    HR_CHECK(!wrk_timestamp_valid("2026-11-24T24:00:00Z"));
    HR_CHECK(!wrk_timestamp_valid("2026-11-24T01:02:03"));
    HR_CHECK(!wrk_timestamp_valid("2026-11-24 01:02:03Z"));
    HR_CHECK(!wrk_timestamp_valid("2026-11-24T01:02:03.Z"));
    HR_CHECK(!wrk_timestamp_valid("2026-11-24T01:02:03.1234567Z"));
    HR_CHECK(!wrk_timestamp_valid("2026-11-24T01:02:03ZZ"));
    HR_CHECK(!wrk_timestamp_valid("2026-11-24T01:02:03+1:00"));
    HR_CHECK(!wrk_timestamp_valid("0000-01-01T00:00:00Z"));
    HR_CHECK(!wrk_timestamp_valid("yesterday"));
}

HR_TEST(batch_add_turns_an_ingest_entry_into_a_row)
{
    wrk_batch_t b;
    wrk_batch_init(&b, 4);
    char err[256];
    int rc;
    char *env = envelope(ID1, "alice", "hi", "{\"a\":1}", TS1);
    rc = add3(&b, "1700000000000-0", ID1, "alice", env, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, 0);
    HR_REQUIRE_EQ_INT(b.len, 1);
    HR_CHECK_EQ_INT(b.rows, 1);
    HR_CHECK_EQ_STR(b.entries[0].sid, "1700000000000-0");
    HR_CHECK(b.entries[0].is_row);
    HR_CHECK_EQ_STR(b.entries[0].n.id, ID1);
    HR_CHECK_EQ_STR(b.entries[0].n.user_id, "alice");
    HR_CHECK_EQ_STR(b.entries[0].n.message, "hi");
    HR_CHECK_EQ_STR(b.entries[0].n.data_json, "{\"a\":1}");
    HR_CHECK_EQ_STR(b.entries[0].n.created_at, TS1);
    hr_free(env);
    wrk_batch_free(&b);
}

HR_TEST(batch_add_accepts_uppercase_id_field_and_ignores_unknown_fields)
{
    wrk_batch_t b;
    wrk_batch_init(&b, 4);
    char err[256];
    int rc;
    char *env = envelope(ID1, "alice", "hi", NULL, TS1);
    const char *kv[] = {"future", "x",         HR_FIELD_PAYLOAD,
                        env,      HR_FIELD_ID, "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"};
    size_t kvlen[6];
    for (int i = 0; i < 6; i++)
        kvlen[i] = strlen(kv[i]);
    rc = wrk_batch_add(&b, "1-0", 3, kv, kvlen, 6, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, 0);
    HR_CHECK_EQ_INT(b.rows, 1);
    hr_free(env);
    wrk_batch_free(&b);
}

/* Adds one entry expected to be rejected; checks it is kept (for the ack) but not as a row. */
static void
check_rejected(const char *payload, const char *id, const char *user, const char *why)
{
    wrk_batch_t b;
    wrk_batch_init(&b, 2);
    char err[256];
    int rc = add3(&b, "5-1", id, user, payload, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, HR_DECLINED);
    HR_CHECK_EQ_INT(b.len, 1);
    HR_CHECK_EQ_INT(b.rows, 0);
    HR_CHECK(!b.entries[0].is_row);
    HR_CHECK_EQ_STR(b.entries[0].sid, "5-1");
    HR_CHECK_CONTAINS(err, why);
    wrk_batch_free(&b);
}

HR_TEST(batch_add_rejects_payload_that_is_not_an_envelope)
{
    check_rejected("not json", ID1, "alice", "JSON");
    check_rejected("{\"id\":\"x\"}", ID1, "alice", "id");
    check_rejected("[]", ID1, "alice", "object");
}

HR_TEST(batch_add_rejects_stream_fields_that_disagree_with_the_payload)
{
    char *env = envelope(ID1, "alice", "hi", NULL, TS1);
    check_rejected(env, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "alice", "stream field id");
    check_rejected(env, ID1, "Alice", "stream field user_id");
    hr_free(env);
}

HR_TEST(batch_add_rejects_what_postgres_would_refuse)
{
    char *env = envelope(ID1, "alice", "hi", NULL, "2023-02-29T00:00:00Z");
    check_rejected(env, ID1, "alice", "created_at");
    hr_free(env);
    env = envelope(ID1, "alice", "bad \xff byte", NULL, TS1);
    check_rejected(env, ID1, "alice", "message is not valid UTF-8");
    hr_free(env);
}

HR_TEST(batch_add_rejects_deleted_entry_missing_payload_and_odd_fields)
{
    wrk_batch_t b;
    wrk_batch_init(&b, 4);
    char err[256];
    int rc;
    rc = wrk_batch_add(&b, "1-0", 3, NULL, NULL, 0, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, HR_DECLINED);
    HR_CHECK_CONTAINS(err, "deleted");
    const char *kv[] = {HR_FIELD_ID, ID1, HR_FIELD_USER_ID};
    size_t kvlen[] = {2, 36, 7};
    rc = wrk_batch_add(&b, "2-0", 3, kv, kvlen, 2, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, HR_DECLINED);
    HR_CHECK_CONTAINS(err, "no payload field");
    rc = wrk_batch_add(&b, "3-0", 3, kv, kvlen, 3, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, HR_DECLINED);
    HR_CHECK_CONTAINS(err, "odd");
    HR_CHECK_EQ_INT(b.len, 3);
    HR_CHECK_EQ_INT(b.rows, 0);
    wrk_batch_free(&b);
}

HR_TEST(batch_add_returns_again_when_full_or_sid_too_long)
{
    wrk_batch_t b;
    wrk_batch_init(&b, 1);
    char err[256];
    int rc;
    char *env = envelope(ID1, "alice", "hi", NULL, TS1);
    char longsid[WRK_SID_MAX + 1];
    memset(longsid, '1', sizeof(longsid) - 1);
    longsid[WRK_SID_MAX] = '\0';
    rc = add3(&b, longsid, ID1, "alice", env, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, HR_AGAIN);
    HR_CHECK_EQ_INT(b.len, 0);
    rc = add3(&b, "1-0", ID1, "alice", env, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, 0);
    rc = add3(&b, "2-0", ID1, "alice", env, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, HR_AGAIN);
    HR_CHECK_EQ_INT(b.len, 1);
    hr_free(env);
    wrk_batch_free(&b);
}

HR_TEST(batch_copy_text_holds_only_rows_in_stream_order)
{
    wrk_batch_t b;
    wrk_batch_init(&b, 4);
    char err[256];
    int rc;
    char *e1 = envelope(ID1, "u1", "one", NULL, TS1);
    char *e2 = envelope("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "u2", "two", NULL, TS1);
    rc = add3(&b, "1-0", ID1, "u1", e1, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, 0);
    rc = add3(&b, "1-1", ID1, "u1", "garbage", err, sizeof(err));
    HR_CHECK_EQ_INT(rc, HR_DECLINED);
    rc = add3(&b, "1-2", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "u2", e2, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, 0);
    wrk_buf_t t = {0};
    wrk_batch_copy_text(&b, 0, b.len, &t);
    wrk_buf_append(&t, "", 1);
    HR_CHECK_EQ_STR(t.data,
                    ID1 "\tu1\t\\N\tdefault\tone\t\\N\t" TS1
                        "\n0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c\tu2\t\\N\tdefault\ttwo\t\\N\t" TS1
                        "\n");

    wrk_batch_reject(&b, 0);
    wrk_batch_reject(&b, 0); /* twice: no effect */
    HR_CHECK_EQ_INT(b.rows, 1);
    HR_CHECK_EQ_INT(b.len, 3);
    wrk_batch_copy_text(&b, 0, b.len, &t);
    HR_CHECK(t.len > 36 && memcmp(t.data, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", 36) == 0);
    HR_CHECK_EQ_INT(t.data[t.len - 1], '\n');

    wrk_batch_clear(&b);
    HR_CHECK_EQ_INT(b.len, 0);
    HR_CHECK_EQ_INT(b.rows, 0);
    HR_CHECK_EQ_INT(b.cap, 4);
    wrk_buf_free(&t);
    hr_free(e1);
    hr_free(e2);
    wrk_batch_free(&b);
}

HR_TEST(batch_refuses_nul_in_message_or_data_but_keeps_an_escaped_backslash_u)
{
    wrk_batch_t b;
    wrk_batch_init(&b, 8);
    char err[256];
    /* Written by hand: the encoder would escape the backslash of \u0000. */
    const char *msg_nul =
        "{\"id\":\"" ID1 "\",\"user_id\":\"alice\",\"type\":\"t\","
        "\"message\":\"before\\u0000after\",\"data\":null,\"created_at\":\"" TS1 "\"}";
    const char *data_nul =
        "{\"id\":\"" ID1 "\",\"user_id\":\"alice\",\"type\":\"t\","
        "\"message\":\"m\",\"data\":{\"k\":\"a\\u0000\"},\"created_at\":\"" TS1 "\"}";
    const char *escaped = "{\"id\":\"" ID1 "\",\"user_id\":\"alice\",\"type\":\"t\","
                          "\"message\":\"a\\\\u0000b\",\"data\":{\"k\":\"\\\\\\\\u0000\"},"
                          "\"created_at\":\"" TS1 "\"}";
    int rc = add3(&b, "1-1", ID1, "alice", msg_nul, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, HR_DECLINED);
    HR_CHECK(strstr(err, "NUL") != NULL);
    rc = add3(&b, "1-2", ID1, "alice", data_nul, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, HR_DECLINED);
    HR_CHECK(strstr(err, "NUL") != NULL);
    rc = add3(&b, "1-3", ID1, "alice", escaped, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, 0);
    HR_CHECK_EQ_STR(b.entries[2].n.message, "a\\u0000b");
    HR_CHECK_EQ_INT(b.rows, 1);
    wrk_batch_free(&b);
}

HR_TEST(batch_copy_text_of_a_range_holds_only_its_rows)
{
    wrk_batch_t b;
    wrk_batch_init(&b, 4);
    char err[256];
    char *e1 = envelope(ID1, "alice", "one", NULL, TS1);
    char *e2 = envelope("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "bob", "two", NULL, TS1);
    int rc = add3(&b, "1-1", ID1, "alice", e1, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, 0);
    rc = add3(&b, "1-2", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", "bob", e2, err, sizeof(err));
    HR_CHECK_EQ_INT(rc, 0);
    wrk_buf_t t = {0};
    wrk_batch_copy_text(&b, 1, 2, &t);
    HR_CHECK(t.len > 36 && memcmp(t.data, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c", 36) == 0);
    HR_CHECK_EQ_INT(memchr(t.data, '\n', t.len) == t.data + t.len - 1, 1);
    wrk_buf_free(&t);
    hr_free(e1);
    hr_free(e2);
    wrk_batch_free(&b);
}

int
main(void)
{
    hr_json_init();
    return hr_test_run_all();
}
