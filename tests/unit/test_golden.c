/*
 * the files in proto/testdata/ against the C encoders and decoders. Each golden file
 * holds one JSON text and a final newline; where the encoder is deterministic
 * its output must equal the file byte for byte (without that newline).
 */
#include "hr_test.h"

#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"
#include "herald/hr_uuid.h"

#include <stdio.h>
#include <string.h>

#ifndef HERALD_SOURCE_DIR
#error "HERALD_SOURCE_DIR must name the source tree"
#endif

/* The id and timestamp the envelope goldens were written with. */
#define GOLDEN_ID "01935bb0-a4c0-7a3b-8c4d-5e6f708192a3"
#define GOLDEN_AT "2024-11-24T01:02:03.456Z"

/*
 * Reads proto/testdata/name into an exact-size heap buffer without its final
 * newline. Returns it (free()) and its length, or NULL after recording a failure.
 */
static char *
golden(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/proto/testdata/%s", HERALD_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        HR_FAIL("cannot open %s", path);
        return NULL;
    }
    char tmp[1 << 16];
    size_t n = fread(tmp, 1, sizeof(tmp), f);
    fclose(f);
    if (n == 0 || n == sizeof(tmp) || tmp[n - 1] != '\n') {
        HR_FAIL("%s: empty, too big, or no final newline", path);
        return NULL;
    }
    *len = n - 1;
    return hr_test_memdup(tmp, n - 1);
}

static int
parse_golden_request(const char *name, hr_notification_t *n, hr_proto_err_t *e)
{
    size_t len;
    char *body = golden(name, &len);
    if (body == NULL)
        return HR_ERR;
    memset(n, 0, sizeof(*n));
    int rc = hr_proto_parse_request(body, len, n, e);
    free(body);
    return rc;
}

/* Checks that encoding n with the golden id and timestamp gives the file's bytes. */
static void
check_encodes_to(hr_notification_t *n, const char *name)
{
    snprintf(n->id, sizeof(n->id), "%s", GOLDEN_ID);
    snprintf(n->created_at, sizeof(n->created_at), "%s", GOLDEN_AT);
    size_t want_len, got_len;
    char *want = golden(name, &want_len);
    char *got = hr_proto_envelope_encode(n, &got_len);
    if (want != NULL)
        HR_CHECK_EQ_MEM(got, got_len, want, want_len);
    hr_free(got);
    free(want);
}

HR_TEST(request_minimal_golden_parses_with_default_type_and_no_data)
{
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(parse_golden_request("notification_request_minimal.json", &n, &e), 0);
    HR_CHECK_EQ_STR(n.user_id, "alice");
    HR_CHECK_EQ_STR(n.message, "Hello, Alice!");
    HR_CHECK_EQ_STR(n.type, "default");
    HR_CHECK(n.data_json == NULL);
    hr_notification_clear(&n);
}

HR_TEST(request_minimal_golden_encodes_to_envelope_minimal_golden)
{
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(parse_golden_request("notification_request_minimal.json", &n, &e), 0);
    check_encodes_to(&n, "envelope_minimal.json");
    hr_notification_clear(&n);
}

HR_TEST(request_full_golden_encodes_to_envelope_golden)
{
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(parse_golden_request("notification_request_full.json", &n, &e), 0);
    HR_CHECK_EQ_STR(n.type, "order.shipped");
    HR_CHECK_EQ_STR(n.message, "Your order #1234 has shipped \xf0\x9f\x93\xa6");
    check_encodes_to(&n, "envelope.json");
    hr_notification_clear(&n);
}

HR_TEST(envelope_goldens_decode_and_reencode_byte_for_byte)
{
    static const char *const names[] = {"envelope.json", "envelope_minimal.json"};
    for (size_t i = 0; i < HR_ARRAY_LEN(names); i++) {
        size_t len;
        char *text = golden(names[i], &len);
        if (text == NULL)
            continue;
        hr_notification_t n;
        char err[128];
        if (HR_CHECK_EQ_INT(hr_proto_envelope_decode(text, len, &n, err, sizeof(err)), 0)) {
            HR_CHECK_EQ_STR(n.id, GOLDEN_ID);
            HR_CHECK_EQ_STR(n.created_at, GOLDEN_AT);
            size_t out_len;
            char *out = hr_proto_envelope_encode(&n, &out_len);
            HR_CHECK_EQ_MEM(out, out_len, text, len);
            hr_free(out);
        } else {
            HR_FAIL("%s: %s", names[i], err);
        }
        hr_notification_clear(&n);
        free(text);
    }
}

HR_TEST(frame_golden_is_the_frame_of_the_envelope_golden)
{
    size_t env_len, want_len, got_len;
    char *env = golden("envelope.json", &env_len);
    char *want = golden("frame_notification.json", &want_len);
    if (env != NULL && want != NULL) {
        char *got = hr_proto_frame_notification(env, env_len, &got_len);
        HR_CHECK_EQ_MEM(got, got_len, want, want_len);
        hr_free(got);
    }
    free(env);
    free(want);
}

HR_TEST(missing_user_id_golden_is_refused_as_the_error_golden)
{
    hr_notification_t n;
    hr_proto_err_t e;
    HR_REQUIRE_EQ_INT(parse_golden_request("notification_request_missing_user_id.json", &n, &e),
                      HR_DECLINED);
    HR_CHECK_EQ_INT(e.status, 400);

    size_t len;
    char *text = golden("error_missing_field.json", &len);
    HR_REQUIRE(text != NULL);
    cJSON *o;
    char err[128];
    if (HR_CHECK_EQ_INT(hr_json_parse_object(text, len, &o, err, sizeof(err)), 0)) {
        const cJSON *eo = cJSON_GetObjectItemCaseSensitive(o, "error");
        HR_CHECK_EQ_INT(cJSON_GetArraySize(o), 1);
        HR_CHECK_EQ_INT(cJSON_GetArraySize(eo), 2);
        HR_CHECK_EQ_STR(hr_json_get_str(eo, "code"), e.code);
        HR_CHECK_EQ_STR(hr_json_get_str(eo, "message"), e.message);
        cJSON_Delete(o);
    }
    free(text);
}

/* The id's own timestamp, as created_at must show it. */
static void
check_id_matches_created_at(const cJSON *item)
{
    const char *id = hr_json_get_str(item, "id");
    const char *at = hr_json_get_str(item, "created_at");
    uint8_t u[16];
    char iso[HR_TIME_ISO_LEN];
    if (!HR_CHECK(id != NULL && at != NULL) || !HR_CHECK_EQ_INT(hr_uuid_parse(id, u), 0))
        return;
    HR_CHECK_EQ_INT(u[6] >> 4, 7);
    hr_time_format_iso(hr_uuid7_ms(u), iso);
    HR_CHECK_EQ_STR(at, iso);
}

HR_TEST(golden_ids_are_v7_and_match_their_created_at)
{
    static const char *const names[] = {"envelope.json", "envelope_minimal.json"};
    for (size_t i = 0; i < HR_ARRAY_LEN(names); i++) {
        size_t len;
        char *text = golden(names[i], &len);
        cJSON *o;
        char err[128];
        if (text != NULL &&
            HR_CHECK_EQ_INT(hr_json_parse_object(text, len, &o, err, sizeof(err)), 0)) {
            check_id_matches_created_at(o);
            cJSON_Delete(o);
        }
        free(text);
    }
}

HR_TEST(history_golden_items_are_envelopes_plus_delivery_state_newest_first)
{
    static const char *const keys[] = {"id",   "user_id",    "type",         "message",
                                       "data", "created_at", "delivered_at", "read_at"};
    size_t len, env_len;
    char *text = golden("history_response.json", &len);
    char *env = golden("envelope.json", &env_len);
    cJSON *o = NULL;
    char err[128];
    if (text == NULL || env == NULL ||
        !HR_CHECK_EQ_INT(hr_json_parse_object(text, len, &o, err, sizeof(err)), 0))
        goto done;

    /* {"items":[…],"next_cursor":…,"unread_count":N} (proto/openapi.yaml). */
    HR_CHECK_EQ_INT(cJSON_GetArraySize(o), 3);
    const cJSON *cursor = cJSON_GetObjectItemCaseSensitive(o, "next_cursor");
    HR_CHECK(cJSON_IsNull(cursor) || cJSON_IsString(cursor));
    HR_CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "unread_count")));
    cJSON *items = cJSON_GetObjectItemCaseSensitive(o, "items");
    if (!HR_CHECK(cJSON_IsArray(items)) || !HR_CHECK_CMP_INT(cJSON_GetArraySize(items), >=, 2))
        goto done;

    const char *prev_id = NULL;
    cJSON *item;
    cJSON_ArrayForEach(item, items)
    {
        size_t k = 0;
        const cJSON *f;
        cJSON_ArrayForEach(f, item)
        {
            if (!HR_CHECK(k < HR_ARRAY_LEN(keys)) || !HR_CHECK_EQ_STR(f->string, keys[k]))
                break;
            k++;
        }
        HR_CHECK_EQ_INT(k, HR_ARRAY_LEN(keys));
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(item, "delivered_at");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(item, "read_at");
        HR_CHECK(cJSON_IsNull(d) || cJSON_IsString(d));
        HR_CHECK(cJSON_IsNull(r) || cJSON_IsString(r));
        check_id_matches_created_at(item);
        const char *id = hr_json_get_str(item, "id");
        if (prev_id != NULL && id != NULL)
            HR_CHECK(strcmp(prev_id, id) > 0);
        prev_id = id;
    }

    /* The first item without its delivery state is the envelope golden. */
    item = cJSON_GetArrayItem(items, 0);
    cJSON_DeleteItemFromObjectCaseSensitive(item, "delivered_at");
    cJSON_DeleteItemFromObjectCaseSensitive(item, "read_at");
    char *s = hr_json_print(item);
    HR_CHECK_EQ_MEM(s, strlen(s), env, env_len);
    hr_free(s);
done:
    cJSON_Delete(o);
    free(text);
    free(env);
}

HR_TEST(every_golden_is_one_valid_utf8_json_object)
{
    static const char *const names[] = {"notification_request_minimal.json",
                                        "notification_request_full.json",
                                        "notification_request_missing_user_id.json",
                                        "envelope.json",
                                        "envelope_minimal.json",
                                        "frame_notification.json",
                                        "error_missing_field.json",
                                        "history_response.json"};
    for (size_t i = 0; i < HR_ARRAY_LEN(names); i++) {
        size_t len;
        char *text = golden(names[i], &len);
        if (text == NULL)
            continue;
        cJSON *o;
        char err[128];
        if (!HR_CHECK(hr_utf8_valid(text, len)))
            HR_FAIL("%s is not UTF-8", names[i]);
        if (HR_CHECK_EQ_INT(hr_json_parse_object(text, len, &o, err, sizeof(err)), 0))
            cJSON_Delete(o);
        else
            HR_FAIL("%s: %s", names[i], err);
        free(text);
    }
}

/* Reads the whole of path into a NUL-terminated heap buffer (free()), or NULL. */
static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = hr_malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap)
            buf = hr_realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

HR_TEST(openapi_error_codes_are_exactly_those_of_hr_proto)
{
    static const char *const codes[] = {HR_E_INVALID_JSON,
                                        HR_E_INVALID_FIELD,
                                        HR_E_MISSING_FIELD,
                                        HR_E_UNKNOWN_FIELD,
                                        HR_E_BODY_TOO_LARGE,
                                        HR_E_UNSUPPORTED_MEDIA,
                                        HR_E_NOT_FOUND,
                                        HR_E_METHOD,
                                        HR_E_UNAVAILABLE,
                                        HR_E_INTERNAL,
                                        HR_E_IDEMPOTENCY_CONFLICT,
                                        HR_E_BAD_REQUEST,
                                        HR_E_URI_TOO_LONG,
                                        HR_E_HEADER_TOO_LARGE,
                                        HR_E_REQUEST_TIMEOUT,
                                        HR_E_NOT_IMPLEMENTED,
                                        HR_E_VERSION,
                                        HR_E_OUTCOME_UNKNOWN,
                                        HR_E_TOO_DEEP,
                                        HR_E_UNKNOWN_KEY,
                                        HR_E_OUT_OF_SCOPE,
                                        HR_E_OVER_RATE,
                                        HR_E_UNAUTHORIZED,
                                        HR_E_FORBIDDEN};
    char path[1024];
    snprintf(path, sizeof(path), "%s/proto/openapi.yaml", HERALD_SOURCE_DIR);
    char *doc = slurp(path);
    HR_REQUIRE(doc != NULL);

    /* The enum list of the ErrorCode schema: "- code" lines after "enum:". */
    const char *p = strstr(doc, "\n    ErrorCode:\n");
    p = p != NULL ? strstr(p, "enum:\n") : NULL;
    if (HR_CHECK(p != NULL)) {
        p += strlen("enum:\n");
        unsigned seen = 0;
        for (;;) {
            while (*p == ' ')
                p++;
            if (p[0] != '-' || p[1] != ' ')
                break;
            p += 2;
            size_t n = strcspn(p, "\n");
            int known = 0;
            for (size_t i = 0; i < HR_ARRAY_LEN(codes); i++) {
                if (strlen(codes[i]) == n && memcmp(codes[i], p, n) == 0) {
                    known = 1;
                    seen |= 1u << i;
                }
            }
            if (!HR_CHECK(known))
                HR_FAIL("openapi lists %.*s, which hr_proto.h does not define", (int)n, p);
            p += n + (p[n] == '\n');
        }
        for (size_t i = 0; i < HR_ARRAY_LEN(codes); i++)
            if (!(seen & 1u << i))
                HR_FAIL("openapi does not list %s", codes[i]);
    }
    free(doc);
}

int
main(void)
{
    hr_json_init();
    return hr_test_run_all();
}
