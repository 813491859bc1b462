/*
 * proto/hr_proto.c: validation of POST /notifications, the envelope, the
 * WebSocket frame and channel names. Includes the .c to reach
 * hr_proto_valid_name.
 */
#include "hr_test.h"

#include "proto/hr_proto.c"

#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"

#include <string.h>

#define T0 UINT64_C(1732410123456) /* 2024-11-24T01:02:03.456Z */

/* Validates len bytes of body from an exact-size heap copy (ASan sees over-reads). */
static int
parse_n(const char *body, size_t len, hr_notification_t *n, hr_proto_err_t *e)
{
    char *buf = hr_test_memdup(body, len);
    memset(n, 0, sizeof(*n));
    memset(e, 0, sizeof(*e));
    int rc = hr_proto_parse_request(buf, len, n, e);
    free(buf);
    return rc;
}

static int
parse(const char *body, hr_notification_t *n, hr_proto_err_t *e)
{
    return parse_n(body, strlen(body), n, e);
}

/* Checks that body is refused with status and code, and that nothing was allocated. */
static void
check_refused_n(const char *body, size_t len, int status, const char *code, const char *file,
                int line)
{
    hr_notification_t n;
    hr_proto_err_t e;
    int rc = parse_n(body, len, &n, &e);
    if (rc != HR_DECLINED) {
        hr_test_fail_(file, line, "refused", "accepted %.80s", body);
        hr_notification_clear(&n);
        return;
    }
    if (e.status != status || e.code == NULL || strcmp(e.code, code) != 0)
        hr_test_fail_(file, line, "refused", "%.80s: got %d %s, want %d %s", body, e.status,
                      e.code ? e.code : "(null)", status, code);
    if (e.message[0] == '\0')
        hr_test_fail_(file, line, "refused", "%.80s: empty message", body);
    if (n.user_id || n.message || n.type || n.data_json)
        hr_test_fail_(file, line, "refused", "%.80s: fields filled on refusal", body);
}

#define REFUSED(body, status, code)                                                                \
    check_refused_n((body), strlen(body), (status), (code), __FILE__, __LINE__)
#define REFUSED_N(body, len, status, code)                                                         \
    check_refused_n((body), (len), (status), (code), __FILE__, __LINE__)

/* A string of n copies of c (owned by caller). */
static char *
repeat(char c, size_t n)
{
    char *s = hr_malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* {"user_id":<user>,"message":<msg>} with both inserted verbatim (owned by caller). */
static char *
body_with(const char *user_json, const char *message_json)
{
    size_t cap = strlen(user_json) + strlen(message_json) + 64;
    char *b = hr_malloc(cap);
    snprintf(b, cap, "{\"user_id\":%s,\"message\":%s}", user_json, message_json);
    return b;
}

/* ---- accepted bodies ---- */

HR_TEST(minimal_request_gets_default_type_and_no_data)
{
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(parse("{\"user_id\":\"alice\",\"message\":\"hello\"}", &n, &e), 0);
    HR_CHECK_EQ_STR(n.user_id, "alice");
    HR_CHECK_EQ_STR(n.message, "hello");
    HR_CHECK_EQ_STR(n.type, HR_TYPE_DEFAULT);
    HR_CHECK(n.data_json == NULL);
    hr_notification_clear(&n);
    HR_CHECK(n.user_id == NULL && n.message == NULL && n.type == NULL);
}

HR_TEST(request_with_type_and_data_keeps_both)
{
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(parse("{\"user_id\":\"u-1\",\"type\":\"order.shipped\",\"message\":\"m\","
                            "\"data\":{ \"order\" : 12, \"tags\" : [\"a\", \"b\"], \"x\": null }}",
                            &n, &e),
                      0);
    HR_CHECK_EQ_STR(n.type, "order.shipped");
    HR_CHECK_EQ_STR(n.data_json, "{\"order\":12,\"tags\":[\"a\",\"b\"],\"x\":null}");
    hr_notification_clear(&n);
}

HR_TEST(null_data_and_null_type_mean_absent)
{
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(
        parse("{\"user_id\":\"a\",\"message\":\"m\",\"data\":null,\"type\":null}", &n, &e), 0);
    HR_CHECK(n.data_json == NULL);
    HR_CHECK_EQ_STR(n.type, HR_TYPE_DEFAULT);
    hr_notification_clear(&n);
}

HR_TEST(empty_data_object_is_kept)
{
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(parse("{\"data\":{},\"message\":\"m\",\"user_id\":\"a\"}", &n, &e), 0);
    HR_CHECK_EQ_STR(n.data_json, "{}");
    hr_notification_clear(&n);
}

HR_TEST(escapes_and_utf8_in_strings_are_decoded)
{
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(parse("{\"user_id\":\"j\\u00fcrgen\",\"message\":\"a\\\"b\\\\c\\n"
                            "\\ud83d\\ude00 \xc3\xa9\"}",
                            &n, &e),
                      0);
    HR_CHECK_EQ_STR(n.user_id, "j\xc3\xbcrgen");
    HR_CHECK_EQ_STR(n.message, "a\"b\\c\n\xf0\x9f\x98\x80 \xc3\xa9");
    hr_notification_clear(&n);
}

HR_TEST(escaped_backslash_before_u0000_is_plain_text)
{
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(parse("{\"user_id\":\"a\",\"message\":\"\\\\u0000\"}", &n, &e), 0);
    HR_CHECK_EQ_STR(n.message, "\\u0000");
    hr_notification_clear(&n);
}

HR_TEST(user_id_of_128_characters_is_accepted)
{
    hr_notification_t n;
    hr_proto_err_t e;
    char *id = repeat('u', HR_USER_ID_MAX);
    char quoted[HR_USER_ID_MAX + 3];
    snprintf(quoted, sizeof(quoted), "\"%s\"", id);
    char *body = body_with(quoted, "\"m\"");
    HR_CHECK_EQ_INT(parse(body, &n, &e), 0);
    HR_CHECK_EQ_STR(n.user_id, id);
    hr_notification_clear(&n);
    hr_free(body);
    hr_free(id);
}

HR_TEST(message_of_4096_bytes_is_accepted)
{
    hr_notification_t n;
    hr_proto_err_t e;
    char *m = repeat('m', HR_MESSAGE_MAX);
    char *q = hr_malloc(HR_MESSAGE_MAX + 3);
    snprintf(q, HR_MESSAGE_MAX + 3, "\"%s\"", m);
    char *body = body_with("\"a\"", q);
    HR_CHECK_EQ_INT(parse(body, &n, &e), 0);
    HR_CHECK_EQ_INT(strlen(n.message ? n.message : ""), HR_MESSAGE_MAX);
    hr_notification_clear(&n);
    hr_free(body);
    hr_free(q);
    hr_free(m);
}

HR_TEST(message_limit_counts_bytes_not_characters)
{
    hr_notification_t n;
    hr_proto_err_t e;
    /* 1024 four-byte characters: exactly 4096 bytes. */
    char *body = hr_malloc(64 + HR_MESSAGE_MAX + 8);
    size_t k = (size_t)sprintf(body, "{\"user_id\":\"a\",\"message\":\"");
    for (int i = 0; i < HR_MESSAGE_MAX / 4; i++) {
        memcpy(body + k, "\xf0\x9f\x93\xa6", 4);
        k += 4;
    }
    strcpy(body + k, "\"}");
    HR_CHECK_EQ_INT(parse(body, &n, &e), 0);
    hr_notification_clear(&n);

    /* One more byte (a two-byte character replacing a four-byte one, plus three). */
    memcpy(body + k - 4, "\xc3\xa9xyz", 5);
    strcpy(body + k + 1, "\"}");
    REFUSED(body, 400, HR_E_INVALID_FIELD);
    hr_free(body);
}

HR_TEST(type_of_64_characters_is_accepted)
{
    hr_notification_t n;
    hr_proto_err_t e;
    char *t = repeat('t', HR_TYPE_MAX);
    char body[256];
    snprintf(body, sizeof(body), "{\"user_id\":\"a\",\"message\":\"m\",\"type\":\"%s\"}", t);
    HR_CHECK_EQ_INT(parse(body, &n, &e), 0);
    HR_CHECK_EQ_STR(n.type, t);
    hr_notification_clear(&n);
    hr_free(t);
}

HR_TEST(body_of_exactly_64_kib_is_accepted)
{
    hr_notification_t n;
    hr_proto_err_t e;
    const char head[] = "{\"user_id\":\"a\",\"message\":\"m\",\"data\":{\"pad\":\"";
    const char tail[] = "\"}}";
    char *body = repeat('p', HR_BODY_MAX);
    memcpy(body, head, sizeof(head) - 1);
    memcpy(body + HR_BODY_MAX - (sizeof(tail) - 1), tail, sizeof(tail) - 1);
    HR_CHECK_EQ_INT(parse_n(body, HR_BODY_MAX, &n, &e), 0);
    hr_notification_clear(&n);
    hr_free(body);
}

/* ---- refused bodies: exact status and code ---- */

HR_TEST(not_json_is_400_invalid_json)
{
    REFUSED("", 400, HR_E_INVALID_JSON);
    REFUSED("hello", 400, HR_E_INVALID_JSON);
    REFUSED("user_id=a&message=b", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\"", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\",}", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":'a',\"message\":\"m\"}", 400, HR_E_INVALID_JSON);
}

HR_TEST(json_that_is_not_an_object_is_400_invalid_json)
{
    REFUSED("[]", 400, HR_E_INVALID_JSON);
    REFUSED("[{\"user_id\":\"a\",\"message\":\"m\"}]", 400, HR_E_INVALID_JSON);
    REFUSED("\"text\"", 400, HR_E_INVALID_JSON);
    REFUSED("42", 400, HR_E_INVALID_JSON);
    REFUSED("null", 400, HR_E_INVALID_JSON);
}

HR_TEST(trailing_garbage_is_400_invalid_json)
{
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\"}x", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\"}{}", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\"} \n ]", 400, HR_E_INVALID_JSON);
}

HR_TEST(missing_user_id_or_message_is_400_missing_field)
{
    hr_notification_t n;
    hr_proto_err_t e;
    REFUSED("{}", 400, HR_E_MISSING_FIELD);
    REFUSED("{\"message\":\"m\"}", 400, HR_E_MISSING_FIELD);
    REFUSED("{\"user_id\":\"a\"}", 400, HR_E_MISSING_FIELD);
    REFUSED("{\"user_id\":\"a\",\"type\":\"t\",\"data\":{}}", 400, HR_E_MISSING_FIELD);
    parse("{\"message\":\"m\"}", &n, &e);
    HR_CHECK_CONTAINS(e.message, "user_id");
    parse("{\"user_id\":\"a\"}", &n, &e);
    HR_CHECK_CONTAINS(e.message, "message");
}

HR_TEST(bad_user_id_is_400_invalid_field)
{
    hr_notification_t n;
    hr_proto_err_t e;
    char *long_id = repeat('u', HR_USER_ID_MAX + 1);
    char quoted[HR_USER_ID_MAX + 8];
    snprintf(quoted, sizeof(quoted), "\"%s\"", long_id);
    static const char *const bad[] = {"\"\"",
                                      "42",
                                      "null",
                                      "true",
                                      "{}",
                                      "[\"a\"]",
                                      "\"a\\u0001b\"",
                                      "\"a\\nb\"",
                                      "\"a\\tb\"",
                                      "\"a\\u001fb\"",
                                      "\"a\\u007fb\"",
                                      "\"\\r\""};
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        char *body = body_with(bad[i], "\"m\"");
        REFUSED(body, 400, HR_E_INVALID_FIELD);
        hr_free(body);
    }
    char *body = body_with(quoted, "\"m\"");
    REFUSED(body, 400, HR_E_INVALID_FIELD);
    parse(body, &n, &e);
    HR_CHECK_CONTAINS(e.message, "user_id");
    hr_free(body);
    hr_free(long_id);
}

HR_TEST(bad_message_is_400_invalid_field)
{
    hr_notification_t n;
    hr_proto_err_t e;
    static const char *const bad[] = {"\"\"", "1", "null", "[]", "{}", "false"};
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        char *body = body_with("\"a\"", bad[i]);
        REFUSED(body, 400, HR_E_INVALID_FIELD);
        hr_free(body);
    }
    char *m = repeat('m', HR_MESSAGE_MAX + 1);
    char *q = hr_malloc(HR_MESSAGE_MAX + 4);
    snprintf(q, HR_MESSAGE_MAX + 4, "\"%s\"", m);
    char *body = body_with("\"a\"", q);
    REFUSED(body, 400, HR_E_INVALID_FIELD);
    parse(body, &n, &e);
    HR_CHECK_CONTAINS(e.message, "message");
    hr_free(body);
    hr_free(q);
    hr_free(m);
}

HR_TEST(bad_type_is_400_invalid_field)
{
    char *t = repeat('t', HR_TYPE_MAX + 1);
    char body[256];
    snprintf(body, sizeof(body), "{\"user_id\":\"a\",\"message\":\"m\",\"type\":\"%s\"}", t);
    REFUSED(body, 400, HR_E_INVALID_FIELD);
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\",\"type\":\"\"}", 400, HR_E_INVALID_FIELD);
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\",\"type\":7}", 400, HR_E_INVALID_FIELD);
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\",\"type\":\"a\\nb\"}", 400, HR_E_INVALID_FIELD);
    hr_free(t);
}

HR_TEST(data_that_is_not_an_object_is_400_invalid_field)
{
    hr_notification_t n;
    hr_proto_err_t e;
    static const char *const bad[] = {"[]", "[1]", "\"x\"", "1", "true", "false"};
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"user_id\":\"a\",\"message\":\"m\",\"data\":%s}", bad[i]);
        REFUSED(body, 400, HR_E_INVALID_FIELD);
    }
    parse("{\"user_id\":\"a\",\"message\":\"m\",\"data\":[]}", &n, &e);
    HR_CHECK_CONTAINS(e.message, "data");
}

HR_TEST(unknown_field_is_400_unknown_field_naming_it)
{
    hr_notification_t n;
    hr_proto_err_t e;
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\",\"priority\":1}", 400, HR_E_UNKNOWN_FIELD);
    REFUSED("{\"User_id\":\"a\",\"message\":\"m\"}", 400, HR_E_UNKNOWN_FIELD);
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\",\"\":1}", 400, HR_E_UNKNOWN_FIELD);
    parse("{\"user_id\":\"a\",\"message\":\"m\",\"priority\":1}", &n, &e);
    HR_CHECK_CONTAINS(e.message, "priority");
}

HR_TEST(invalid_utf8_is_400_invalid_json)
{
    REFUSED("{\"user_id\":\"a\",\"message\":\"\xff\"}", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"a\",\"message\":\"\xc0\xaf\"}", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"a\",\"message\":\"\xed\xa0\x80\"}", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"\xe2\x82\",\"message\":\"m\"}", 400, HR_E_INVALID_JSON);
}

HR_TEST(lone_surrogate_escape_is_400_invalid_json)
{
    REFUSED("{\"user_id\":\"a\",\"message\":\"\\ud800\"}", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"a\",\"message\":\"\\udc00x\"}", 400, HR_E_INVALID_JSON);
}

HR_TEST(nul_escape_is_400_invalid_json)
{
    REFUSED("{\"user_id\":\"a\",\"message\":\"x\\u0000y\"}", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"a\\u0000\",\"message\":\"m\"}", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"a\",\"message\":\"m\",\"data\":{\"k\\u0000\":1}}", 400,
            HR_E_INVALID_JSON);
}

HR_TEST(raw_nul_byte_is_400_invalid_json)
{
    static const char body[] = "{\"user_id\":\"a\",\"message\":\"x\0y\"}";
    REFUSED_N(body, sizeof(body) - 1, 400, HR_E_INVALID_JSON);
}

HR_TEST(raw_control_character_in_a_string_is_400_invalid_json)
{
    /* RFC 8259 section 7: U+0000-U+001F must be escaped; a raw one is not JSON. */
    REFUSED("{\"user_id\":\"a\",\"message\":\"line1\nline2\"}", 400, HR_E_INVALID_JSON);
    REFUSED("{\"user_id\":\"a\tb\",\"message\":\"m\"}", 400, HR_E_INVALID_JSON);
}

HR_TEST(body_over_64_kib_is_413_body_too_large)
{
    const char head[] = "{\"user_id\":\"a\",\"message\":\"m\",\"data\":{\"pad\":\"";
    const char tail[] = "\"}}";
    size_t len = HR_BODY_MAX + 1;
    char *body = repeat('p', len);
    memcpy(body, head, sizeof(head) - 1);
    memcpy(body + len - (sizeof(tail) - 1), tail, sizeof(tail) - 1);
    REFUSED_N(body, len, 413, HR_E_BODY_TOO_LARGE);
    hr_free(body);

    /* Size is judged before content: a huge body of garbage is still 413. */
    char *junk = repeat('\xff', 4 * HR_BODY_MAX);
    REFUSED_N(junk, 4 * HR_BODY_MAX, 413, HR_E_BODY_TOO_LARGE);
    hr_free(junk);
}

/* ---- data is carried as sent ---- */

HR_TEST(data_numbers_are_carried_exactly_as_sent)
{
    /*
     * Snowflake ids and 2^53 itself: a reprint through double rounds them
     * (cJSON prints 9007199254740992 as 9.00719925474099e+15).
     */
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(parse("{\"user_id\":\"a\",\"message\":\"m\",\"data\":"
                            "{\"ts_us\":1732410123456789,\"max\":9007199254740992,"
                            "\"big\":9999999999999998,\"id\":1234567890123456789}}",
                            &n, &e),
                      0);
    HR_CHECK_EQ_STR(n.data_json, "{\"ts_us\":1732410123456789,\"max\":9007199254740992,"
                                 "\"big\":9999999999999998,\"id\":1234567890123456789}");
    hr_notification_clear(&n);
}

/* ---- names ---- */

HR_TEST(valid_name_bounds_length_and_refuses_ascii_controls)
{
    HR_CHECK_EQ_INT(hr_proto_valid_name("a", 4), 1);
    HR_CHECK_EQ_INT(hr_proto_valid_name("abcd", 4), 1);
    HR_CHECK_EQ_INT(hr_proto_valid_name("abcde", 4), 0);
    HR_CHECK_EQ_INT(hr_proto_valid_name("", 4), 0);
    HR_CHECK_EQ_INT(hr_proto_valid_name("a b", 4), 1);
    HR_CHECK_EQ_INT(hr_proto_valid_name("a\x1f", 4), 0);
    HR_CHECK_EQ_INT(hr_proto_valid_name("a\x7f", 4), 0);
    HR_CHECK_EQ_INT(hr_proto_valid_name("\xc3\xa9", 4), 1);
}

/* ---- ids ---- */

HR_TEST(assign_id_gives_a_v7_id_and_its_own_timestamp)
{
    hr_notification_t n = {0};
    hr_uuid_gen_t g;
    uint8_t u[16];
    hr_uuid_gen_init(&g);
    hr_proto_assign_id(&n, &g, T0);
    HR_REQUIRE_EQ_INT(hr_uuid_parse(n.id, u), 0);
    HR_CHECK_EQ_INT(u[6] >> 4, 7);
    HR_CHECK_EQ_UINT(hr_uuid7_ms(u), T0);
    HR_CHECK_EQ_STR(n.created_at, "2024-11-24T01:02:03.456Z");
}

HR_TEST(assign_id_created_at_follows_a_borrowed_ms)
{
    hr_notification_t n = {0};
    hr_uuid_gen_t g;
    uint8_t u[16];
    hr_uuid_gen_init(&g);
    for (int i = 0; i < 5000; i++)
        hr_proto_assign_id(&n, &g, T0);
    HR_REQUIRE_EQ_INT(hr_uuid_parse(n.id, u), 0);
    char iso[HR_TIME_ISO_LEN];
    hr_time_format_iso(hr_uuid7_ms(u), iso);
    HR_CHECK_EQ_STR(n.created_at, iso);
    HR_CHECK_EQ_STR(n.created_at, "2024-11-24T01:02:03.457Z");
}

/* ---- envelope ---- */

static void
fill(hr_notification_t *n, const char *user, const char *type, const char *msg, const char *data)
{
    memset(n, 0, sizeof(*n));
    snprintf(n->id, sizeof(n->id), "%s", "01935b5e-a5c0-7a3b-8c4d-5e6f708192a3");
    snprintf(n->created_at, sizeof(n->created_at), "%s", "2024-11-24T01:02:03.456Z");
    n->user_id = hr_strdup(user);
    n->type = hr_strdup(type);
    n->message = hr_strdup(msg);
    n->data_json = hr_strdup(data);
}

HR_TEST(envelope_has_fields_in_contract_order)
{
    hr_notification_t n;
    fill(&n, "alice", "default", "hi", NULL);
    size_t len = 0;
    char *s = hr_proto_envelope_encode(&n, &len);
    HR_CHECK_EQ_STR(s, "{\"id\":\"01935b5e-a5c0-7a3b-8c4d-5e6f708192a3\",\"user_id\":\"alice\","
                       "\"type\":\"default\",\"message\":\"hi\",\"data\":null,"
                       "\"created_at\":\"2024-11-24T01:02:03.456Z\"}");
    HR_CHECK_EQ_INT(len, strlen(s));
    hr_free(s);
    hr_notification_clear(&n);
}

HR_TEST(envelope_encode_then_decode_round_trips)
{
    static const struct {
        const char *user, *type, *msg, *data;
    } cases[] = {
        {"alice", "default", "hello", NULL},
        {"u:42/\xc3\xa9", "order.shipped",
         "Your order \"#1234\"\nhas\tshipped \\o/ \xf0\x9f\x93\xa6",
         "{\"order\":1234,\"tags\":[\"a\",\"b\"],\"nested\":{\"ok\":true,\"n\":null}}"},
        {"b", "t", "\x7f", "{}"},
    };
    for (size_t i = 0; i < HR_ARRAY_LEN(cases); i++) {
        hr_notification_t n, back;
        char err[128] = "";
        fill(&n, cases[i].user, cases[i].type, cases[i].msg, cases[i].data);
        size_t len;
        char *s = hr_proto_envelope_encode(&n, &len);
        char *copy = hr_test_memdup(s, len);
        if (HR_CHECK_EQ_INT(hr_proto_envelope_decode(copy, len, &back, err, sizeof(err)), 0)) {
            HR_CHECK_EQ_STR(back.id, n.id);
            HR_CHECK_EQ_STR(back.created_at, n.created_at);
            HR_CHECK_EQ_STR(back.user_id, n.user_id);
            HR_CHECK_EQ_STR(back.type, n.type);
            HR_CHECK_EQ_STR(back.message, n.message);
            HR_CHECK_EQ_STR(back.data_json, n.data_json);
            /* And re-encoding gives the same bytes. */
            size_t len2;
            char *s2 = hr_proto_envelope_encode(&back, &len2);
            HR_CHECK_EQ_MEM(s2, len2, s, len);
            hr_free(s2);
        } else {
            HR_FAIL("decode: %s", err);
        }
        hr_notification_clear(&back);
        hr_notification_clear(&n);
        free(copy);
        hr_free(s);
    }
}

HR_TEST(envelope_round_trip_keeps_large_integers_in_data)
{
    hr_notification_t n, back;
    char err[128] = "";
    const char *data = "{\"max\":9007199254740992,\"id\":1234567890123456789}";
    fill(&n, "a", "t", "m", data);
    size_t len;
    char *s = hr_proto_envelope_encode(&n, &len);
    if (HR_CHECK_EQ_INT(hr_proto_envelope_decode(s, len, &back, err, sizeof(err)), 0))
        HR_CHECK_EQ_STR(back.data_json, data);
    hr_notification_clear(&back);
    hr_notification_clear(&n);
    hr_free(s);
}

HR_TEST(envelope_decode_normalizes_id_to_lowercase_and_ignores_extra_fields)
{
    hr_notification_t n;
    char err[128];
    const char *env =
        "{\"id\":\"0193A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B\",\"user_id\":\"a\","
        "\"type\":\"t\",\"message\":\"m\",\"created_at\":\"2024-11-24T01:02:03.456Z\","
        "\"future\":1}";
    HR_REQUIRE_EQ_INT(hr_proto_envelope_decode(env, strlen(env), &n, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(n.id, "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
    HR_CHECK(n.data_json == NULL);
    hr_notification_clear(&n);
}

HR_TEST(envelope_decode_refuses_missing_or_malformed_fields)
{
#define ID "\"id\":\"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\""
#define AT "\"created_at\":\"2024-11-24T01:02:03.456Z\""
    static const char *const bad[] = {
        "",
        "[]",
        "{\"user_id\":\"a\",\"type\":\"t\",\"message\":\"m\"," AT "}",
        "{\"id\":\"nope\",\"user_id\":\"a\",\"type\":\"t\",\"message\":\"m\"," AT "}",
        "{\"id\":7,\"user_id\":\"a\",\"type\":\"t\",\"message\":\"m\"," AT "}",
        "{" ID ",\"type\":\"t\",\"message\":\"m\"," AT "}",
        "{" ID ",\"user_id\":\"\",\"type\":\"t\",\"message\":\"m\"," AT "}",
        "{" ID ",\"user_id\":\"a\\n\",\"type\":\"t\",\"message\":\"m\"," AT "}",
        "{" ID ",\"user_id\":\"a\",\"message\":\"m\"," AT "}",
        "{" ID ",\"user_id\":\"a\",\"type\":\"t\"," AT "}",
        "{" ID ",\"user_id\":\"a\",\"type\":\"t\",\"message\":\"m\"}",
        "{" ID ",\"user_id\":\"a\",\"type\":\"t\",\"message\":\"m\","
        "\"created_at\":\"2024-11-24T01:02:03.456789Z\"}",
        "{" ID ",\"user_id\":\"a\",\"type\":\"t\",\"message\":\"m\"," AT ",\"data\":[1]}",
        "{" ID ",\"user_id\":\"a\",\"type\":\"t\",\"message\":\"m\"," AT ",\"data\":\"{}\"}",
    };
#undef ID
#undef AT
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        hr_notification_t n;
        char err[128] = "";
        char *copy = hr_test_memdup(bad[i], strlen(bad[i]));
        if (!HR_CHECK_EQ_INT(hr_proto_envelope_decode(copy, strlen(bad[i]), &n, err, sizeof(err)),
                             HR_DECLINED))
            HR_FAIL("accepted %s", bad[i]);
        HR_CHECK(err[0] != '\0');
        HR_CHECK(n.user_id == NULL && n.type == NULL && n.message == NULL && n.data_json == NULL);
        hr_notification_clear(&n);
        free(copy);
    }
}

/* ---- frame and channel ---- */

HR_TEST(frame_wraps_the_envelope_verbatim)
{
    const char env[] = "{\"id\":\"x\",\"data\":null}";
    size_t len = 0;
    char *f = hr_proto_frame_notification(env, sizeof(env) - 1, &len);
    const char want[] = "{\"type\":\"notification\",\"notification\":{\"id\":\"x\",\"data\":null}}";
    HR_CHECK_EQ_MEM(f, len, want, sizeof(want) - 1);
    HR_CHECK_EQ_INT(f[len], '\0');
    hr_free(f);

    /* Only len bytes of the envelope are used, and outlen may be NULL. */
    f = hr_proto_frame_notification("{}GARBAGE", 2, NULL);
    HR_CHECK_EQ_STR(f, "{\"type\":\"notification\",\"notification\":{}}");
    hr_free(f);
}

HR_TEST(frame_of_an_encoded_envelope_is_valid_json)
{
    hr_notification_t n;
    fill(&n, "alice", "t", "m\"", "{\"k\":[1]}");
    size_t elen, flen;
    char *env = hr_proto_envelope_encode(&n, &elen);
    char *f = hr_proto_frame_notification(env, elen, &flen);
    cJSON *o;
    char err[128];
    HR_REQUIRE_EQ_INT(hr_json_parse_object(f, flen, &o, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(hr_json_get_str(o, "type"), "notification");
    const cJSON *inner = cJSON_GetObjectItemCaseSensitive(o, "notification");
    HR_CHECK_EQ_STR(hr_json_get_str(inner, "user_id"), "alice");
    cJSON_Delete(o);
    hr_free(f);
    hr_free(env);
    hr_notification_clear(&n);
}

HR_TEST(user_channel_is_prefix_plus_user_id)
{
    char buf[HR_USER_ID_MAX + 32];
    size_t n = hr_proto_user_channel(buf, sizeof(buf), "alice");
    HR_CHECK_EQ_STR(buf, "herald:user:alice");
    HR_CHECK_EQ_INT(n, strlen("herald:user:alice"));

    /* Exactly enough room, NUL included. */
    char exact[sizeof("herald:user:alice")];
    n = hr_proto_user_channel(exact, sizeof(exact), "alice");
    HR_CHECK_EQ_STR(exact, "herald:user:alice");
    HR_CHECK_EQ_INT(n, sizeof(exact) - 1);

    char *id = repeat('u', HR_USER_ID_MAX);
    n = hr_proto_user_channel(buf, sizeof(buf), id);
    HR_CHECK_EQ_INT(n, strlen(HR_CHANNEL_USER_PREFIX) + HR_USER_ID_MAX);
    HR_CHECK_EQ_INT(strlen(buf), n);
    hr_free(id);
}

HR_TEST(user_channel_that_does_not_fit_returns_0)
{
    /*
     * A cut channel name is another user's channel ("herald:user:al" for "alice"),
     * and a length past the buffer makes the caller read beyond it: either is
     * worse than an error.
     */
    char buf[16];
    volatile size_t cap = sizeof(buf); /* opaque to the compiler's truncation warning */
    size_t n = hr_proto_user_channel(buf, cap, "alice");
    HR_CHECK_EQ_INT(n, 0);
    HR_CHECK_CMP_INT(n, <, sizeof(buf));
}

int
main(void)
{
    hr_json_init();
    return hr_test_run_all();
}
