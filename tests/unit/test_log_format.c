/* hr_log with log.format = "json": the key=value line as one JSON object, escaped properly. */
#include "hr_test.h"
#include "hr_test_capture.h"

#include "herald/hr_log.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

static char captured[16384];

/* What fn writes to stderr, in captured; returns its length. */
static size_t
capture(void (*fn)(void))
{
    return hr_test_capture_stderr(fn, captured, sizeof(captured));
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

/* A kv line and members the JSON it converts to must have. */
typedef struct {
    const char *what; /* the behaviour, printed when the case fails */
    const char *line;
    struct {
        const char *name, *value;
    } want[4]; /* up to the first with name NULL */
} kv_case_t;

static const kv_case_t kv_cases[] = {
    {"quoted values keep spaces and lose their quotes",
     "event=publish_failed count=1 error=\"no reply from redis\" sent=1",
     {{"error", "no reply from redis"}, {"sent", "1"}}},
    /* Unescaped quotes inside a quoted value (callers that print raw text): the value ends at
     * the quote before a space or the end. */
    {"quotes and backslashes inside quoted values are escaped for json",
     "event=e error=\"ERR \"bad\" thing\" path=\"C:\\\\dir\\\"x\"",
     {{"error", "ERR \"bad\" thing"}, {"path", "C:\\dir\"x"}}},
    {"quotes and backslashes inside bare values are escaped for json",
     "event=e v=a\"b\\c",
     {{"v", "a\"b\\c"}}},
    {"a raw control byte in a bare value (a caller that did not quote) is escaped",
     "event=e v=x\x1fy",
     {{"v", "x\x1fy"}}},
    {"utf8 is kept and invalid bytes become replacement characters",
     "event=e user=j\xc3\xb6rg bad=a\xff\xc3z trunc=\xe2\x82",
     {{"user", "j\xc3\xb6rg"},
      {"bad", "a\xef\xbf\xbd\xef\xbf\xbdz"},
      {"trunc", "\xef\xbf\xbd\xef\xbf\xbd"}}},
    {"text that is not a pair goes to text",
     "event=script_missing reloading now =x k= v",
     {{"event", "script_missing"}, {"k", ""}, {"text", "reloading now =x v"}}},
    {"an unterminated quote is read as a bare value",
     "event=e a=\"open b=2",
     {{"a", "\"open"}, {"b", "2"}}},
};

HR_TEST(each_kv_case_converts_to_its_members)
{
    for (size_t i = 0; i < sizeof(kv_cases) / sizeof(kv_cases[0]); i++) {
        const kv_case_t *c = &kv_cases[i];
        int ok = 1;
        cJSON *o = convert(c->line);
        if (!HR_CHECK(o != NULL)) {
            ok = 0;
        } else {
            for (size_t k = 0; k < 4 && c->want[k].name != NULL; k++)
                ok &= HR_CHECK_EQ_STR(member(o, c->want[k].name), c->want[k].value);
        }
        if (!ok)
            printf("#   in case: %s\n", c->what);
        cJSON_Delete(o);
    }
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
