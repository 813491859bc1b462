/* hr_json: bounded object parsing, UTF-8 validation, the \u0000 check. */
#include "hr_test.h"

#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"

#include <stdio.h>
#include <string.h>

/* Parses text from an exact-size heap copy, so reading past len is an ASan report. */
static int
parse(const char *text, cJSON **out, char *err, size_t errlen)
{
    size_t len = strlen(text);
    char *buf = hr_test_memdup(text, len);
    err[0] = '\0';
    int rc = hr_json_parse_object(buf, len, out, err, errlen);
    free(buf);
    return rc;
}

static int
utf8(const char *bytes, size_t len)
{
    char *buf = hr_test_memdup(bytes, len);
    int ok = hr_utf8_valid(buf, len);
    free(buf);
    return ok;
}

#define UTF8_OK(lit) HR_CHECK_EQ_INT(utf8(lit, sizeof(lit) - 1), 1)
#define UTF8_BAD(lit) HR_CHECK_EQ_INT(utf8(lit, sizeof(lit) - 1), 0)

static int
nul_escape(const char *text)
{
    size_t len = strlen(text);
    char *buf = hr_test_memdup(text, len);
    int r = hr_json_has_nul_escape(buf, len);
    free(buf);
    return r;
}

HR_TEST(parse_object_accepts_an_object_with_surrounding_whitespace)
{
    cJSON *o;
    char err[128];
    HR_REQUIRE_EQ_INT(parse(" \t\r\n{\"a\":1,\"b\":\"x\"} \n", &o, err, sizeof(err)), 0);
    HR_CHECK(cJSON_IsObject(o));
    HR_CHECK_EQ_STR(hr_json_get_str(o, "b"), "x");
    cJSON_Delete(o);
}

HR_TEST(parse_object_refuses_non_objects)
{
    static const char *const bad[] = {"[]", "[{\"a\":1}]", "\"s\"", "1", "true", "null"};
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        cJSON *o = (cJSON *)1;
        HR_CHECK_EQ_INT(parse(bad[i], &o, err, sizeof(err)), HR_DECLINED);
        HR_CHECK(o == NULL);
        HR_CHECK_CONTAINS(err, "object");
    }
}

HR_TEST(parse_object_refuses_malformed_json)
{
    static const char *const bad[] = {
        "",      "{",           "}",          "{\"a\":}",     "{\"a\":1,}",  "{'a':1}",
        "{a:1}", "{\"a\":tru}", "{\"a\":.5}", "{\"a\":0x10}", "{\"a\":NaN}", "{\"a\":\"\\x\"}",
        "   "};
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        cJSON *o = (cJSON *)1;
        if (!HR_CHECK_EQ_INT(parse(bad[i], &o, err, sizeof(err)), HR_DECLINED))
            HR_FAIL("accepted %s", bad[i]);
        HR_CHECK(o == NULL);
        HR_CHECK(err[0] != '\0');
    }
}

HR_TEST(parse_object_refuses_trailing_data)
{
    static const char *const bad[] = {"{}x", "{} {}", "{\"a\":1}}", "{\"a\":1}\n,", "{}\x01"};
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        cJSON *o = (cJSON *)1;
        HR_CHECK_EQ_INT(parse(bad[i], &o, err, sizeof(err)), HR_DECLINED);
        HR_CHECK(o == NULL);
    }
    cJSON *o;
    HR_CHECK_EQ_INT(parse("{}x", &o, err, sizeof(err)), HR_DECLINED);
    HR_CHECK_CONTAINS(err, "byte 2");
}

HR_TEST(parse_object_reads_only_len_bytes)
{
    cJSON *o;
    char err[128];
    const char text[] = "{\"a\":1}GARBAGE";
    HR_REQUIRE_EQ_INT(hr_json_parse_object(text, 7, &o, err, sizeof(err)), 0);
    cJSON_Delete(o);
}

HR_TEST(parse_object_survives_deep_nesting)
{
    /* cJSON stops at 1000 levels; deeper input is refused, not a stack overflow. */
    size_t depth = 5000, len = 6 + 2 * depth;
    char *text = hr_malloc(len + 1);
    size_t n = 0;
    memcpy(text + n, "{\"a\":", 5);
    n += 5;
    for (size_t i = 0; i < depth; i++)
        text[n++] = '[';
    for (size_t i = 0; i < depth; i++)
        text[n++] = ']';
    text[n++] = '}';
    text[n] = '\0';
    cJSON *o;
    char err[128];
    HR_CHECK_EQ_INT(parse(text, &o, err, sizeof(err)), HR_DECLINED);
    hr_free(text);
}

/*
 * RFC 8259 section 7: control characters U+0000-U+001F must be escaped in
 * strings. A raw one means the body is not JSON.
 */
HR_TEST(parse_object_refuses_raw_control_characters_in_strings)
{
    static const char *const bad[] = {"{\"a\":\"x\ty\"}", "{\"a\":\"x\ny\"}", "{\"a\":\"\x01\"}",
                                      "{\"a\x1f\":1}"};
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        cJSON *o = NULL;
        if (!HR_CHECK_EQ_INT(parse(bad[i], &o, err, sizeof(err)), HR_DECLINED)) {
            HR_FAIL("accepted string with raw byte 0x%02x",
                    (unsigned)strpbrk(bad[i], "\t\n\x01\x1f")[0]);
            cJSON_Delete(o);
        }
    }
}

/* RFC 8259 section 6: no leading zeros, digits required after '.' and in the exponent. */
HR_TEST(parse_object_refuses_numbers_outside_the_json_grammar)
{
    static const char *const bad[] = {"{\"a\":01}", "{\"a\":-01}", "{\"a\":1.}", "{\"a\":1.e5}"};
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        cJSON *o = NULL;
        if (!HR_CHECK_EQ_INT(parse(bad[i], &o, err, sizeof(err)), HR_DECLINED)) {
            HR_FAIL("accepted %s", bad[i]);
            cJSON_Delete(o);
        }
    }
}

HR_TEST(parse_object_accepts_every_json_number_form)
{
    cJSON *o;
    char err[128];
    HR_CHECK_EQ_INT(
        parse("{\"a\":[0,-0,1,-1,0.5,-0.5,1e5,1E5,1e+5,1e-5,1.5E-5,10]}", &o, err, sizeof(err)), 0);
    cJSON_Delete(o);
}

HR_TEST(parse_object_refuses_a_member_named_twice_at_any_depth)
{
    static const char *const bad[] = {
        "{\"user_id\":\"alice\",\"user_id\":\"bob\"}",
        "{\"a\":1,\"b\":2,\"a\":1}",
        /* an escape spells the same name */
        "{\"user_id\":\"alice\",\"user\\u005fid\":\"bob\"}",
        "{\"data\":{\"k\":1,\"k\":2}}",
        "{\"data\":[{\"x\":{\"k\":1,\"k\":2}}]}",
    };
    char err[128];
    for (size_t i = 0; i < HR_ARRAY_LEN(bad); i++) {
        cJSON *o = (cJSON *)1;
        HR_CHECK_EQ_INT(parse(bad[i], &o, err, sizeof(err)), HR_DECLINED);
        HR_CHECK(o == NULL);
        HR_CHECK_CONTAINS(err, "twice");
    }
}

HR_TEST(parse_object_finds_a_duplicate_among_many_members)
{
    char text[40000];
    size_t n = 0;
    n += (size_t)snprintf(text + n, sizeof(text) - n, "{");
    for (int i = 0; i < 2000; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "\"k%d\":%d,", i, i);
    snprintf(text + n, sizeof(text) - n, "\"k1999\":0}");
    cJSON *o;
    char err[128];
    HR_CHECK_EQ_INT(parse(text, &o, err, sizeof(err)), HR_DECLINED);
    /* The same names, each once: accepted. */
    text[n - 1] = '}';
    text[n] = '\0';
    HR_REQUIRE_EQ_INT(parse(text, &o, err, sizeof(err)), 0);
    cJSON_Delete(o);
    /* Equal names in different objects are not duplicates. */
    HR_REQUIRE_EQ_INT(parse("{\"a\":{\"a\":1},\"b\":[{\"a\":1},{\"a\":2}]}", &o, err, sizeof(err)),
                      0);
    cJSON_Delete(o);
}

HR_TEST(get_str_returns_strings_only)
{
    cJSON *o;
    char err[128];
    HR_REQUIRE_EQ_INT(parse("{\"s\":\"v\",\"n\":1,\"z\":null,\"o\":{}}", &o, err, sizeof(err)), 0);
    HR_CHECK_EQ_STR(hr_json_get_str(o, "s"), "v");
    HR_CHECK(hr_json_get_str(o, "n") == NULL);
    HR_CHECK(hr_json_get_str(o, "z") == NULL);
    HR_CHECK(hr_json_get_str(o, "o") == NULL);
    HR_CHECK(hr_json_get_str(o, "missing") == NULL);
    HR_CHECK(hr_json_get_str(o, "S") == NULL); /* keys are case-sensitive */
    cJSON_Delete(o);
}

HR_TEST(print_is_compact_and_keeps_member_order)
{
    cJSON *o;
    char err[128];
    HR_REQUIRE_EQ_INT(
        parse("{ \"b\" : [ 1 , 2 ] ,\n \"a\" : { \"c\" : \"\\u00e9\\n\" } }", &o, err, sizeof(err)),
        0);
    char *s = hr_json_print(o);
    HR_CHECK_EQ_STR(s, "{\"b\":[1,2],\"a\":{\"c\":\"\xc3\xa9\\n\"}}");
    hr_free(s);
    cJSON_Delete(o);
}

HR_TEST(utf8_accepts_ascii_and_well_formed_sequences)
{
    UTF8_OK("");
    UTF8_OK("hello");
    UTF8_OK("\x7f");
    UTF8_OK("\xc2\x80");         /* U+0080, smallest 2-byte */
    UTF8_OK("\xdf\xbf");         /* U+07FF */
    UTF8_OK("\xe0\xa0\x80");     /* U+0800, smallest 3-byte */
    UTF8_OK("\xed\x9f\xbf");     /* U+D7FF, just below the surrogates */
    UTF8_OK("\xee\x80\x80");     /* U+E000, just above */
    UTF8_OK("\xef\xbf\xbf");     /* U+FFFF */
    UTF8_OK("\xf0\x90\x80\x80"); /* U+10000, smallest 4-byte */
    UTF8_OK("\xf0\x9f\x93\xa6"); /* U+1F4E6 package */
    UTF8_OK("\xf4\x8f\xbf\xbf"); /* U+10FFFF, the last code point */
    UTF8_OK("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
}

HR_TEST(utf8_refuses_overlong_encodings)
{
    UTF8_BAD("\xc0\x80");         /* NUL in 2 bytes */
    UTF8_BAD("\xc0\xaf");         /* '/' in 2 bytes */
    UTF8_BAD("\xc1\xbf");         /* U+007F in 2 bytes */
    UTF8_BAD("\xe0\x80\x80");     /* NUL in 3 bytes */
    UTF8_BAD("\xe0\x9f\xbf");     /* U+07FF in 3 bytes */
    UTF8_BAD("\xf0\x80\x80\x80"); /* NUL in 4 bytes */
    UTF8_BAD("\xf0\x8f\xbf\xbf"); /* U+FFFF in 4 bytes */
}

HR_TEST(utf8_refuses_surrogates)
{
    UTF8_BAD("\xed\xa0\x80");             /* U+D800 */
    UTF8_BAD("\xed\xbf\xbf");             /* U+DFFF */
    UTF8_BAD("\xed\xa0\xbd\xed\xb8\x80"); /* CESU-8 pair for U+1F600 */
}

HR_TEST(utf8_refuses_code_points_above_10ffff_and_invalid_lead_bytes)
{
    UTF8_BAD("\xf4\x90\x80\x80"); /* U+110000 */
    UTF8_BAD("\xf5\x80\x80\x80");
    UTF8_BAD("\xf7\xbf\xbf\xbf");
    UTF8_BAD("\xf8\x88\x80\x80\x80"); /* old 5-byte form */
    UTF8_BAD("\xfc\x84\x80\x80\x80\x80");
    UTF8_BAD("\xfe");
    UTF8_BAD("\xff");
}

HR_TEST(utf8_refuses_stray_and_missing_continuation_bytes)
{
    UTF8_BAD("\x80");
    UTF8_BAD("\xbf");
    UTF8_BAD("a\x80z");
    UTF8_BAD("\xc3\x28"); /* second byte not a continuation */
    UTF8_BAD("\xe2\x28\xa1");
    UTF8_BAD("\xe2\x82\x28");
    UTF8_BAD("\xf0\x28\x8c\xbc");
    UTF8_BAD("\xc3\xa9\xa9"); /* one continuation too many */
}

HR_TEST(utf8_refuses_sequences_truncated_by_the_end_of_input)
{
    UTF8_BAD("\xc3");
    UTF8_BAD("\xe2\x82");
    UTF8_BAD("\xf0\x9f\x98");
    UTF8_BAD("ok\xf0\x9f");
    /* A sequence cut by len, even with the rest of it in memory. */
    const char s[] = "\xe2\x82\xac";
    char *buf = hr_test_memdup(s, 3);
    HR_CHECK_EQ_INT(hr_utf8_valid(buf, 2), 0);
    HR_CHECK_EQ_INT(hr_utf8_valid(buf, 3), 1);
    HR_CHECK_EQ_INT(hr_utf8_valid(buf, 0), 1);
    free(buf);
}

HR_TEST(utf8_refuses_nul_bytes)
{
    UTF8_BAD("\0");
    UTF8_BAD("a\0b");
}

HR_TEST(nul_escape_is_found_anywhere)
{
    HR_CHECK_EQ_INT(nul_escape("\\u0000"), 1);
    HR_CHECK_EQ_INT(nul_escape("{\"a\":\"x\\u0000\"}"), 1);
    HR_CHECK_EQ_INT(nul_escape("{\"a\\u0000\":1}"), 1);
    HR_CHECK_EQ_INT(nul_escape("{\"a\":\"\\\\\\u0000\"}"), 1); /* \\ then \u0000 */
    HR_CHECK_EQ_INT(nul_escape("{\"a\":\"\\u0001\\u00001\"}"), 1);
}

HR_TEST(nul_escape_ignores_escaped_backslashes_and_other_escapes)
{
    HR_CHECK_EQ_INT(nul_escape(""), 0);
    HR_CHECK_EQ_INT(nul_escape("{\"a\":\"\\\\u0000\"}"), 0);     /* text \u0000, not NUL */
    HR_CHECK_EQ_INT(nul_escape("{\"a\":\"\\\\\\\\u0000\"}"), 0); /* \\\\ then u0000 */
    HR_CHECK_EQ_INT(nul_escape("{\"a\":\"\\u0001\"}"), 0);
    HR_CHECK_EQ_INT(nul_escape("{\"a\":\"\\u1000\"}"), 0);
    HR_CHECK_EQ_INT(nul_escape("\\u000"), 0); /* cut short */
}

int
main(void)
{
    hr_json_init();
    return hr_test_run_all();
}
