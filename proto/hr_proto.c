#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int
hr_proto_fail(hr_proto_err_t *e, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    e->status = status;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return HR_DECLINED;
}

void
hr_notification_clear(hr_notification_t *n)
{
    hr_free(n->user_id);
    hr_free(n->type);
    hr_free(n->message);
    hr_free(n->data_json);
    n->user_id = n->type = n->message = n->data_json = NULL;
}

/* A user id or type: printable, no control characters, 1..max bytes. */
static int
hr_proto_valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

int
hr_proto_parse_request(const char *body, size_t len, hr_notification_t *n, hr_proto_err_t *e)
{
    char err[128];
    cJSON *root;

    if (len > HR_BODY_MAX)
        return hr_proto_fail(e, 413, HR_E_BODY_TOO_LARGE, "body is larger than %d bytes",
                             HR_BODY_MAX);
    if (!hr_utf8_valid(body, len))
        return hr_proto_fail(e, 400, HR_E_INVALID_JSON, "body is not valid UTF-8");
    if (hr_json_has_nul_escape(body, len))
        return hr_proto_fail(e, 400, HR_E_INVALID_JSON, "\\u0000 is not allowed in strings");
    if (hr_json_parse_object(body, len, &root, err, sizeof(err)) != 0)
        return hr_proto_fail(e, 400, HR_E_INVALID_JSON, "%s", err);

    int rc = HR_DECLINED;
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        const char *k = it->string;
        if (strcmp(k, "user_id") && strcmp(k, "message") && strcmp(k, "type") &&
            strcmp(k, "data")) {
            hr_proto_fail(e, 400, HR_E_UNKNOWN_FIELD, "unknown field \"%.64s\"", k);
            goto done;
        }
    }

    it = cJSON_GetObjectItemCaseSensitive(root, "user_id");
    if (it == NULL) {
        hr_proto_fail(e, 400, HR_E_MISSING_FIELD, "user_id is required");
        goto done;
    }
    if (!cJSON_IsString(it) || !hr_proto_valid_name(it->valuestring, HR_USER_ID_MAX)) {
        hr_proto_fail(e, 400, HR_E_INVALID_FIELD,
                      "user_id must be a string of 1-%d characters without control characters",
                      HR_USER_ID_MAX);
        goto done;
    }
    const char *user_id = it->valuestring;

    it = cJSON_GetObjectItemCaseSensitive(root, "message");
    if (it == NULL) {
        hr_proto_fail(e, 400, HR_E_MISSING_FIELD, "message is required");
        goto done;
    }
    if (!cJSON_IsString(it) || it->valuestring[0] == '\0' ||
        strlen(it->valuestring) > HR_MESSAGE_MAX) {
        hr_proto_fail(e, 400, HR_E_INVALID_FIELD, "message must be a string of 1-%d bytes",
                      HR_MESSAGE_MAX);
        goto done;
    }
    const char *message = it->valuestring;

    const char *type = HR_TYPE_DEFAULT;
    it = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsString(it) || !hr_proto_valid_name(it->valuestring, HR_TYPE_MAX)) {
            hr_proto_fail(e, 400, HR_E_INVALID_FIELD,
                          "type must be a string of 1-%d characters without control characters",
                          HR_TYPE_MAX);
            goto done;
        }
        type = it->valuestring;
    }

    char *data_json = NULL;
    it = cJSON_GetObjectItemCaseSensitive(root, "data");
    if (it != NULL && !cJSON_IsNull(it)) {
        if (!cJSON_IsObject(it)) {
            hr_proto_fail(e, 400, HR_E_INVALID_FIELD, "data must be a JSON object");
            goto done;
        }
        /* The text as sent: a reprint through cJSON's doubles rounds long integers. */
        data_json = hr_json_member_text(body, len, "data");
    }

    n->user_id = hr_strdup(user_id);
    n->message = hr_strdup(message);
    n->type = hr_strdup(type);
    n->data_json = data_json;
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

void
hr_proto_assign_id(hr_notification_t *n, hr_uuid_gen_t *gen, uint64_t now_ms)
{
    uint8_t u[16];
    hr_uuid7_next(gen, now_ms, u);
    hr_uuid_format(u, n->id);
    /* created_at is the id's own timestamp, so the two never disagree. */
    hr_time_format_iso(hr_uuid7_ms(u), n->created_at);
}

char *
hr_proto_envelope_encode(const hr_notification_t *n, size_t *len)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", n->id);
    cJSON_AddStringToObject(o, "user_id", n->user_id);
    cJSON_AddStringToObject(o, "type", n->type);
    cJSON_AddStringToObject(o, "message", n->message);
    if (n->data_json != NULL)
        cJSON_AddRawToObject(o, "data", n->data_json);
    else
        cJSON_AddNullToObject(o, "data");
    cJSON_AddStringToObject(o, "created_at", n->created_at);
    char *s = hr_json_print(o);
    cJSON_Delete(o);
    if (len != NULL)
        *len = strlen(s);
    return s;
}

int
hr_proto_envelope_decode(const char *json, size_t len, hr_notification_t *n, char *err,
                         size_t errlen)
{
    cJSON *root;
    uint8_t u[16];

    memset(n, 0, sizeof(*n));
    if (hr_json_parse_object(json, len, &root, err, errlen) != 0)
        return HR_DECLINED;

    const char *id = hr_json_get_str(root, "id");
    const char *user_id = hr_json_get_str(root, "user_id");
    const char *type = hr_json_get_str(root, "type");
    const char *message = hr_json_get_str(root, "message");
    const char *created_at = hr_json_get_str(root, "created_at");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");

    int rc = HR_DECLINED;
    if (id == NULL || hr_uuid_parse(id, u) != 0) {
        snprintf(err, errlen, "envelope id missing or not a UUID");
    } else if (user_id == NULL || !hr_proto_valid_name(user_id, HR_USER_ID_MAX)) {
        snprintf(err, errlen, "envelope user_id missing or invalid");
    } else if (type == NULL || message == NULL || created_at == NULL ||
               strlen(created_at) >= HR_TIME_ISO_LEN) {
        snprintf(err, errlen, "envelope type, message or created_at missing");
    } else if (data != NULL && !cJSON_IsNull(data) && !cJSON_IsObject(data)) {
        snprintf(err, errlen, "envelope data is not an object");
    } else {
        hr_uuid_format(u, n->id);
        snprintf(n->created_at, sizeof(n->created_at), "%s", created_at);
        n->user_id = hr_strdup(user_id);
        n->type = hr_strdup(type);
        n->message = hr_strdup(message);
        n->data_json = cJSON_IsObject(data) ? hr_json_member_text(json, len, "data") : NULL;
        rc = 0;
    }
    cJSON_Delete(root);
    return rc;
}

char *
hr_proto_frame_notification(const char *envelope, size_t len, size_t *outlen)
{
    static const char head[] = "{\"type\":\"notification\",\"notification\":";
    size_t hl = sizeof(head) - 1;
    char *f = hr_malloc(hl + len + 2);
    memcpy(f, head, hl);
    memcpy(f + hl, envelope, len);
    f[hl + len] = '}';
    f[hl + len + 1] = '\0';
    if (outlen != NULL)
        *outlen = hl + len + 1;
    return f;
}

size_t
hr_proto_user_channel(char *buf, size_t cap, const char *user_id)
{
    int n = snprintf(buf, cap, "%s%s", HR_CHANNEL_USER_PREFIX, user_id);
    /* A cut name is another user's channel: refuse rather than truncate. */
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}
