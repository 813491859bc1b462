/*
 * ing_write: the envelope and JSON strings ingest writes by hand must be the
 * bytes cJSON (hr_proto_envelope_encode) writes: the worker decodes them and
 * the gateway forwards them as they are. And the argument table must survive
 * growing past its inline storage.
 */
#include "hr_test.h"

#include "herald/hr_alloc.h"
#include "herald/hr_json.h"
#include "hr_proto.h"
#include "ing_write.h"

#include <hiredis/hiredis.h>

#include <stdio.h>
#include <string.h>

/* Whether ing_envelope(n) equals hr_proto_envelope_encode(n); reports the difference. */
static int
same_envelope(const hr_notification_t *n)
{
    char inl[64];
    ing_buf_t b;
    ing_buf_init(&b, inl, sizeof(inl));
    ing_envelope(&b, n);
    size_t want_len;
    char *want = hr_proto_envelope_encode(n, &want_len);
    int ok = b.len == want_len && memcmp(b.p, want, want_len) == 0;
    if (!ok)
        HR_FAIL("envelope differs:\n#   got:  %.*s\n#   want: %s", (int)b.len, b.p, want);
    hr_free(want);
    ing_buf_free(&b);
    return ok;
}

static hr_notification_t
sample(char *user, char *type, char *message, char *data)
{
    hr_notification_t n;
    memset(&n, 0, sizeof(n));
    strcpy(n.id, "01890a5d-ac96-774b-bcce-b302099a8057");
    strcpy(n.created_at, "2023-06-29T10:00:00.123Z");
    n.user_id = user;
    n.type = type;
    n.message = message;
    n.data_json = data;
    return n;
}

HR_TEST(envelope_matches_cjson_for_plain_fields)
{
    hr_notification_t n = sample("alice", "comment", "hello", "{\"post\":42}");
    HR_CHECK(same_envelope(&n));
    n.data_json = NULL;
    HR_CHECK(same_envelope(&n));
    n.user_id = NULL;
    n.room = "lobby:1";
    HR_CHECK(same_envelope(&n));
}

HR_TEST(envelope_matches_cjson_for_every_byte_in_every_string_field)
{
    for (int c = 1; c < 256; c++) {
        char s[8];
        snprintf(s, sizeof(s), "a%cb", c);
        hr_notification_t n = sample(s, "t", "m", NULL);
        if (!same_envelope(&n))
            HR_FAIL("user_id with byte 0x%02x", c);
        n = sample("u", s, "m", NULL);
        if (!same_envelope(&n))
            HR_FAIL("type with byte 0x%02x", c);
        n = sample("u", "t", s, "{}");
        if (!same_envelope(&n))
            HR_FAIL("message with byte 0x%02x", c);
    }
}

HR_TEST(envelope_matches_cjson_for_escapes_utf8_and_a_long_message)
{
    char big[5000];
    for (size_t i = 0; i < sizeof(big) - 1; i++)
        big[i] = "ab\"\\\n\x01\xc3\xa9/"[i % 10];
    big[sizeof(big) - 1] = '\0';
    hr_notification_t n = sample("\xe2\x82\xac user", "t\t1", big, "{\"a\":[1,2,{\"b\":null}]}");
    HR_CHECK(same_envelope(&n));
    n = sample("u", "t", "", NULL); /* empty strings are quoted too */
    HR_CHECK(same_envelope(&n));
}

HR_TEST(json_str_matches_cjson)
{
    static const char *const in[] = {"",           "plain",    "q\"b\\s/",
                                     "\b\f\n\r\t", "\x1f\x7f", "\xf0\x9f\x98\x80"};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        char inl[4];
        ing_buf_t b;
        ing_buf_init(&b, inl, sizeof(inl));
        ing_json_str(&b, in[i]);
        cJSON *s = cJSON_CreateString(in[i]);
        char *want = hr_json_print(s);
        HR_CHECK(b.len == strlen(want) && memcmp(b.p, want, b.len) == 0);
        cJSON_Delete(s);
        hr_free(want);
        ing_buf_free(&b);
    }
}

HR_TEST(args_grow_past_inline_storage_and_keep_every_value)
{
    ing_args_t a;
    ing_args_init(&a);
    size_t fixed = ing_args_open(&a); /* a reserved slot set at the end */
    char v[64];
    for (int i = 0; i < 500; i++) {
        int n = snprintf(v, sizeof(v), "value-%d-%0*d", i, i % 40, 7);
        ing_args_push(&a, v, (size_t)n);
    }
    size_t opened = ing_args_open(&a);
    for (int i = 0; i < 300; i++)
        ing_buf_add(&a.bytes, "xyz", 3);
    ing_args_close(&a, opened);
    ing_args_set(&a, fixed, "first", 5);
    ing_args_finish(&a);
    HR_REQUIRE_EQ_INT((int)a.n, 502);
    HR_CHECK(a.argvlen[0] == 5 && memcmp(a.argv[0], "first", 5) == 0);
    for (int i = 0; i < 500; i++) {
        int n = snprintf(v, sizeof(v), "value-%d-%0*d", i, i % 40, 7);
        if (!HR_CHECK(a.argvlen[i + 1] == (size_t)n && memcmp(a.argv[i + 1], v, (size_t)n) == 0)) {
            HR_FAIL("argument %d", i + 1);
            break;
        }
    }
    HR_CHECK(a.argvlen[501] == 900 && memcmp(a.argv[501], "xyzxyz", 6) == 0);
    ing_args_free(&a);
}

HR_TEST(args_within_inline_storage_allocate_nothing_visible)
{
    ing_args_t a;
    ing_args_init(&a);
    for (int i = 0; i < ING_ARGS_INLINE; i++)
        ing_args_push(&a, "x", 1);
    ing_args_finish(&a);
    HR_CHECK((void *)a.argv == (void *)a.arg_inl && a.len == a.len_inl && a.bytes.p == a.bytes_inl);
    HR_CHECK(a.argvlen[ING_ARGS_INLINE - 1] == 1 && a.argv[ING_ARGS_INLINE - 1][0] == 'x');
    ing_args_free(&a);
}

HR_TEST(resp_format_matches_hiredis)
{
    static char big[70000];
    memset(big, 'z', sizeof(big));
    const char *argv[] = {"EVALSHA", "", "2", "a\r\nb", big, "x"};
    size_t argvlen[] = {7, 0, 1, 4, sizeof(big), 1};
    for (size_t argc = 0; argc <= 6; argc++) {
        char inl[16];
        ing_buf_t b;
        ing_buf_init(&b, inl, sizeof(inl));
        ing_resp_format(&b, argc, argv, argvlen);
        char *want = NULL;
        int wl = redisFormatCommandArgv(&want, (int)argc, argv, argvlen);
        if (!HR_CHECK(wl >= 0 && b.len == (size_t)wl && memcmp(b.p, want, b.len) == 0))
            HR_FAIL("argc %zu", argc);
        redisFreeCommand(want);
        ing_buf_free(&b);
    }
}

HR_TEST_MAIN()
