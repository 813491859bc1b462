/* hr_log with log.format = "json": the key=value line as one JSON object, escaped properly. */
#include "hr_test.h"

#include "herald/hr_log.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char captured[16384];

/* Runs fn with stderr sent to a temp file; leaves what it wrote in captured. */
static size_t
capture(void (*fn)(void))
{
    FILE *tmp = tmpfile();
    if (!HR_CHECK(tmp != NULL))
        return 0;
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(captured, 1, sizeof(captured) - 1, tmp);
    captured[n] = '\0';
    fclose(tmp);
    return n;
}

static char json[8192];

/* Converts a kv line; the result must parse as a JSON object (owned by the caller). */
static cJSON *
convert(const char *line)
{
    size_t n = hr_log_kv_to_json(line, strlen(line), json, sizeof(json));
    HR_CHECK_EQ_UINT(n, strlen(json));
    cJSON *o = cJSON_Parse(json);
    if (!HR_CHECK(o != NULL && cJSON_IsObject(o)))
        fprintf(stderr, "# not a JSON object: %s\n", json);
    return o;
}

static const char *
member(const cJSON *o, const char *name)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(m) ? m->valuestring : NULL;
}

HR_TEST(format_names_parse)
{
    hr_log_format_t f;
    HR_CHECK_EQ_INT(hr_log_format_parse("json", &f), 0);
    HR_CHECK_EQ_INT(f, HR_LOG_JSON);
    HR_CHECK_EQ_INT(hr_log_format_parse("KV", &f), 0);
    HR_CHECK_EQ_INT(f, HR_LOG_KV);
    HR_CHECK_EQ_INT(hr_log_format_parse("logfmt", &f), -1);
    HR_CHECK_EQ_INT(hr_log_format_parse("", &f), -1);
}

HR_TEST(pairs_become_string_members_in_order)
{
    const char *line = "ts=2026-11-24T01:02:03.456Z level=info svc=ingest event=listen "
                       "addr=127.0.0.1:8080 reuseport=0";
    hr_log_kv_to_json(line, strlen(line), json, sizeof(json));
    HR_CHECK_EQ_STR(json, "{\"ts\":\"2026-11-24T01:02:03.456Z\",\"level\":\"info\","
                          "\"service\":\"ingest\",\"event\":\"listen\","
                          "\"addr\":\"127.0.0.1:8080\",\"reuseport\":\"0\"}");
}

HR_TEST(quoted_values_keep_spaces_and_lose_their_quotes)
{
    cJSON *o = convert("event=publish_failed count=1 error=\"no reply from redis\" sent=1");
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_STR(member(o, "error"), "no reply from redis");
    HR_CHECK_EQ_STR(member(o, "sent"), "1");
    cJSON_Delete(o);
}

HR_TEST(quotes_and_backslashes_inside_values_are_escaped_for_json)
{
    /* Unescaped quotes inside a quoted value (callers that print raw text): the value ends at
     * the quote before a space or the end. */
    cJSON *o = convert("event=e error=\"ERR \"bad\" thing\" path=\"C:\\\\dir\\\"x\"");
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_STR(member(o, "error"), "ERR \"bad\" thing");
    HR_CHECK_EQ_STR(member(o, "path"), "C:\\dir\"x");
    cJSON_Delete(o);

    o = convert("event=e v=a\"b\\c");
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_STR(member(o, "v"), "a\"b\\c");
    cJSON_Delete(o);
}

HR_TEST(control_bytes_and_hex_escapes_become_json_escapes)
{
    char q[128];
    const char raw[] = "a\nb\tc\x01\"d\\";
    hr_log_quote(q, sizeof(q), raw, sizeof(raw) - 1);
    HR_CHECK_EQ_STR(q, "a\\x0ab\\x09c\\x01\\\"d\\\\");
    char line[256];
    snprintf(line, sizeof(line), "event=e msg=\"%s\"", q);
    hr_log_kv_to_json(line, strlen(line), json, sizeof(json));
    HR_CHECK_EQ_STR(json, "{\"event\":\"e\",\"msg\":\"a\\nb\\tc\\u0001\\\"d\\\\\"}");
    cJSON *o = convert(line);
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_STR(member(o, "msg"), raw);
    cJSON_Delete(o);

    /* A raw control byte in a bare value (a caller that did not quote). */
    o = convert("event=e v=x\x1fy");
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_STR(member(o, "v"), "x\x1fy");
    cJSON_Delete(o);
}

HR_TEST(utf8_is_kept_and_invalid_bytes_become_replacement_characters)
{
    cJSON *o = convert("event=e user=j\xc3\xb6rg bad=a\xff\xc3z trunc=\xe2\x82");
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_STR(member(o, "user"), "j\xc3\xb6rg");
    HR_CHECK_EQ_STR(member(o, "bad"), "a\xef\xbf\xbd\xef\xbf\xbdz");
    HR_CHECK_EQ_STR(member(o, "trunc"), "\xef\xbf\xbd\xef\xbf\xbd");
    cJSON_Delete(o);
}

HR_TEST(text_that_is_not_a_pair_goes_to_text)
{
    cJSON *o = convert("event=script_missing reloading now =x k= v");
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_STR(member(o, "event"), "script_missing");
    HR_CHECK_EQ_STR(member(o, "k"), "");
    HR_CHECK_EQ_STR(member(o, "text"), "reloading now =x v");
    cJSON_Delete(o);
}

HR_TEST(unterminated_quote_is_read_as_a_bare_value)
{
    cJSON *o = convert("event=e a=\"open b=2");
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_STR(member(o, "a"), "\"open");
    HR_CHECK_EQ_STR(member(o, "b"), "2");
    cJSON_Delete(o);
}

HR_TEST(output_too_small_drops_members_and_stays_valid_json)
{
    char big[3000];
    memset(big, '\x01', sizeof(big) - 1); /* each byte needs 6 in JSON */
    big[sizeof(big) - 1] = '\0';
    char line[3100];
    snprintf(line, sizeof(line), "event=huge v=%s", big);
    char small[600];
    size_t n = hr_log_kv_to_json(line, strlen(line), small, sizeof(small));
    HR_CHECK_CMP_UINT(n, <, sizeof(small));
    cJSON *o = cJSON_Parse(small);
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_STR(member(o, "event"), "huge");
    HR_CHECK(member(o, "v") == NULL);
    HR_CHECK_EQ_STR(member(o, "truncated"), "true");
    cJSON_Delete(o);
}

static void
log_json_line(void)
{
    hr_log_info("publish_failed", "count=%d error=\"%s\" note=%s", 2, "redis \\\"said\\\" no",
                "tab\there");
}

static void
log_json_huge(void)
{
    static char v[5000];
    memset(v, 'v', sizeof(v) - 1);
    hr_log_error("huge", "value=%s", v);
}

HR_TEST(json_format_writes_one_object_per_line)
{
    hr_log_init("ingest", HR_LOG_INFO);
    hr_log_set_format(HR_LOG_JSON);
    size_t n = capture(log_json_line);
    HR_REQUIRE(n > 0);
    HR_CHECK_EQ_INT(captured[n - 1], '\n');
    HR_CHECK(memchr(captured, '\n', n - 1) == NULL);
    captured[n - 1] = '\0';
    cJSON *o = cJSON_Parse(captured);
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_INT(strlen(member(o, "ts")), 24);
    HR_CHECK_EQ_STR(member(o, "level"), "info");
    HR_CHECK_EQ_STR(member(o, "service"), "ingest");
    HR_CHECK_EQ_STR(member(o, "event"), "publish_failed");
    HR_CHECK_EQ_STR(member(o, "count"), "2");
    HR_CHECK_EQ_STR(member(o, "error"), "redis \"said\" no");
    HR_CHECK_EQ_STR(member(o, "note"), "tab\there");
    cJSON_Delete(o);

    /* A line cut at the kv limit is still one complete object. */
    n = capture(log_json_huge);
    HR_REQUIRE(n > 1000);
    HR_CHECK(memchr(captured, '\n', n - 1) == NULL);
    captured[n - 1] = '\0';
    o = cJSON_Parse(captured);
    HR_REQUIRE(o != NULL);
    HR_CHECK_EQ_STR(member(o, "event"), "huge");
    cJSON_Delete(o);

    hr_log_set_format(HR_LOG_KV);
    capture(log_json_line);
    HR_CHECK(strncmp(captured, "ts=", 3) == 0);
}

HR_TEST_MAIN()
