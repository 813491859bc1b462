#include "hr_proto.h"
#include "hr_proto_body.h"
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
    hr_free(n->room);
    hr_free(n->type);
    hr_free(n->message);
    hr_free(n->data_json);
    n->user_id = n->room = n->type = n->message = n->data_json = NULL;
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

enum { HR_PROTO_TEXT_OK, HR_PROTO_TEXT_NOT_UTF8, HR_PROTO_TEXT_NUL_ESCAPE };

/*
 * hr_utf8_valid() and hr_json_has_nul_escape() in one pass over the body:
 * ASCII is checked here, each multi-byte sequence by hr_utf8_valid(). Not
 * UTF-8 wins over a \u0000 escape, as when the two ran one after the other.
 */
static int
hr_proto_text_check(const char *body, size_t len)
{
    const unsigned char *s = (const unsigned char *)body;
    int nul = 0;
    for (size_t i = 0; i < len;) {
        unsigned c = s[i];
        if (c >= 0x80) {
            size_t n = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
            if (n == 0 || n > len - i || !hr_utf8_valid(body + i, n))
                return HR_PROTO_TEXT_NOT_UTF8;
            i += n;
            continue;
        }
        if (c == 0)
            return HR_PROTO_TEXT_NOT_UTF8;
        if (c == '\\' && i + 6 <= len) {
            /* An escaped backslash is not the start of an escape: skip both. */
            if (s[i + 1] == '\\') {
                i += 2;
                continue;
            }
            if (memcmp(body + i + 1, "u0000", 5) == 0)
                nul = 1;
        }
        i++;
    }
    return nul ? HR_PROTO_TEXT_NUL_ESCAPE : HR_PROTO_TEXT_OK;
}

/*
 * The tree parser of a notification body, once UTF-8 and NUL escapes are
 * checked: the reference, and the one that words every error.
 */
static int
hr_proto_parse_tree(const char *body, size_t len, int targets, hr_proto_request_t *r,
                    hr_proto_err_t *e)
{
    char err[128];
    cJSON *root;

    if (hr_json_parse_object(body, len, &root, err, sizeof(err)) != 0)
        return hr_proto_fail(e, 400, HR_E_INVALID_JSON, "%s", err);

    int rc = HR_DECLINED;
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        const char *k = it->string;
        if (strcmp(k, "user_id") && strcmp(k, "message") && strcmp(k, "type") &&
            strcmp(k, "data") && (!targets || (strcmp(k, "user_ids") && strcmp(k, "room")))) {
            hr_proto_fail(e, 400, HR_E_UNKNOWN_FIELD, "unknown field \"%.64s\"", k);
            goto done;
        }
    }

    const cJSON *uid = cJSON_GetObjectItemCaseSensitive(root, "user_id");
    const cJSON *uids = targets ? cJSON_GetObjectItemCaseSensitive(root, "user_ids") : NULL;
    const cJSON *room = targets ? cJSON_GetObjectItemCaseSensitive(root, "room") : NULL;
    int ntargets = (uid != NULL) + (uids != NULL) + (room != NULL);
    if (ntargets == 0) {
        hr_proto_fail(e, 400, HR_E_MISSING_FIELD,
                      targets ? "one of user_id, user_ids or room is required"
                              : "user_id is required");
        goto done;
    }
    if (ntargets > 1) {
        hr_proto_fail(e, 400, HR_E_INVALID_FIELD, "give only one of user_id, user_ids or room");
        goto done;
    }
    if (uid != NULL &&
        (!cJSON_IsString(uid) || !hr_proto_valid_name(uid->valuestring, HR_USER_ID_MAX))) {
        hr_proto_fail(e, 400, HR_E_INVALID_FIELD,
                      "user_id must be a string of 1-%d characters without control characters",
                      HR_USER_ID_MAX);
        goto done;
    }
    if (room != NULL && (!cJSON_IsString(room) || !hr_proto_room_valid(room->valuestring))) {
        hr_proto_fail(e, 400, HR_E_INVALID_FIELD, "room must be 1-%d characters of A-Za-z0-9_.:@-",
                      HR_ROOM_MAX);
        goto done;
    }
    if (uids != NULL) {
        int n = cJSON_IsArray(uids) ? cJSON_GetArraySize(uids) : -1;
        if (n < 1 || n > HR_FANOUT_MAX) {
            hr_proto_fail(e, 400, HR_E_INVALID_FIELD, "user_ids must be an array of 1-%d user ids",
                          HR_FANOUT_MAX);
            goto done;
        }
        const cJSON *u;
        int i = 0;
        cJSON_ArrayForEach(u, uids)
        {
            if (!cJSON_IsString(u) || !hr_proto_valid_name(u->valuestring, HR_USER_ID_MAX)) {
                hr_proto_fail(e, 400, HR_E_INVALID_FIELD,
                              "user_ids[%d] must be a string of 1-%d characters without control "
                              "characters",
                              i, HR_USER_ID_MAX);
                goto done;
            }
            const cJSON *v = uids->child;
            for (int j = 0; j < i; j++, v = v->next) {
                if (strcmp(v->valuestring, u->valuestring) == 0) {
                    hr_proto_fail(e, 400, HR_E_INVALID_FIELD, "user_ids[%d] repeats user_ids[%d]",
                                  i, j);
                    goto done;
                }
            }
            i++;
        }
    }

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

    /* The strings stay in the tree, which r now owns: no copies. */
    hr_notification_t *n = &r->n;
    if (uid != NULL)
        n->user_id = uid->valuestring;
    if (room != NULL)
        n->room = room->valuestring;
    if (uids != NULL) {
        r->nusers = (size_t)cJSON_GetArraySize(uids);
        r->user_ids = hr_calloc(r->nusers, sizeof(*r->user_ids));
        size_t i = 0;
        const cJSON *u;
        cJSON_ArrayForEach(u, uids) r->user_ids[i++] = u->valuestring;
    }
    n->message = (char *)message;
    n->type = (char *)type;
    n->data_json = data_json;
    r->tree = root;
    return 0;
done:
    cJSON_Delete(root);
    return rc;
}

/*
 * The common parser of a notification body. With targets, "user_ids" and
 * "room" are accepted besides "user_id" (exactly one of them); without, only
 * "user_id", as POST /notifications has always answered. A valid body takes
 * the one-pass parser (hr_proto_body.c); the rest the tree parser.
 */
static int
hr_proto_parse(const char *body, size_t len, size_t max, int targets, hr_proto_request_t *r,
               hr_proto_err_t *e)
{
    if (len > max)
        return hr_proto_fail(e, 413, HR_E_BODY_TOO_LARGE, "body is larger than %zu bytes", max);
    /* The one-pass parser checks UTF-8 and NUL itself; what it declines is checked in full. */
    if (hr_proto_body_scan(body, len, targets, r) == 0)
        return 0;
    int text = hr_proto_text_check(body, len);
    if (text == HR_PROTO_TEXT_NOT_UTF8)
        return hr_proto_fail(e, 400, HR_E_INVALID_JSON, "body is not valid UTF-8");
    if (text == HR_PROTO_TEXT_NUL_ESCAPE)
        return hr_proto_fail(e, 400, HR_E_INVALID_JSON, "\\u0000 is not allowed in strings");
    return hr_proto_parse_tree(body, len, targets, r, e);
}

int
hr_proto_parse_request(const char *body, size_t len, hr_notification_t *n, hr_proto_err_t *e)
{
    hr_proto_request_t r;
    memset(&r, 0, sizeof(r));
    int rc = hr_proto_parse(body, len, HR_BODY_MAX, 0, &r, e);
    if (rc != 0)
        return rc;
    /* n owns its strings: copy them out of the request. */
    memcpy(n, &r.n, sizeof(*n));
    n->user_id = hr_strdup(r.n.user_id);
    n->type = hr_strdup(r.n.type);
    n->message = hr_strdup(r.n.message);
    n->data_json = r.n.data_json != NULL ? hr_strdup(r.n.data_json) : NULL;
    hr_proto_request_clear(&r);
    return 0;
}

int
hr_proto_parse_targets(const char *body, size_t len, size_t max, hr_proto_request_t *r,
                       hr_proto_err_t *e)
{
    memset(r, 0, sizeof(*r));
    return hr_proto_parse(body, len, max, 1, r, e);
}

void
hr_proto_request_clear(hr_proto_request_t *r)
{
    if (r->strings == NULL)
        hr_free(r->n.data_json);
    r->n.user_id = r->n.room = r->n.type = r->n.message = r->n.data_json = NULL;
    hr_free(r->user_ids);
    r->user_ids = NULL;
    r->nusers = 0;
    cJSON_Delete(r->tree);
    r->tree = NULL;
    hr_free(r->strings);
    r->strings = NULL;
}

/*
 * Splits compact JSON array text (as hr_json_member_text returns it: no white
 * space outside strings, already validated) into its elements.
 */
static size_t
hr_proto_split_array(const char *a, size_t len, char ***items, size_t **lens)
{
    size_t n = 0, cap = 0;
    int depth = 0, in_str = 0;
    const char *start = NULL;
    for (size_t i = 0; i < len; i++) {
        char c = a[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (depth == 1 && start == NULL && c != ']' && c != ',')
            start = a + i;
        if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}' || c == ',') {
            if ((c == ',' && depth == 1) || (c == ']' && depth == 1)) {
                if (start != NULL) {
                    if (n == cap) {
                        cap = cap ? cap * 2 : 16;
                        *items = hr_realloc(*items, cap * sizeof(**items));
                        *lens = hr_realloc(*lens, cap * sizeof(**lens));
                    }
                    (*lens)[n] = (size_t)(a + i - start);
                    (*items)[n] = hr_strndup(start, (*lens)[n]);
                    n++;
                }
                start = NULL;
            }
            if (c != ',')
                depth--;
        }
    }
    return n;
}

int
hr_proto_parse_batch(const char *body, size_t len, char ***items, size_t **lens, size_t *n,
                     hr_proto_err_t *e)
{
    char err[128];
    cJSON *root;
    *items = NULL;
    *lens = NULL;
    *n = 0;
    if (len > HR_BATCH_BODY_MAX)
        return hr_proto_fail(e, 413, HR_E_BODY_TOO_LARGE, "body is larger than %d bytes",
                             HR_BATCH_BODY_MAX);
    if (!hr_utf8_valid(body, len))
        return hr_proto_fail(e, 400, HR_E_INVALID_JSON, "body is not valid UTF-8");
    if (hr_json_parse_object(body, len, &root, err, sizeof(err)) != 0)
        return hr_proto_fail(e, 400, HR_E_INVALID_JSON, "%s", err);

    int rc = HR_DECLINED;
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        if (strcmp(it->string, "notifications") != 0) {
            hr_proto_fail(e, 400, HR_E_UNKNOWN_FIELD, "unknown field \"%.64s\"", it->string);
            goto done;
        }
    }
    it = cJSON_GetObjectItemCaseSensitive(root, "notifications");
    if (it == NULL) {
        hr_proto_fail(e, 400, HR_E_MISSING_FIELD, "notifications is required");
        goto done;
    }
    int count = cJSON_IsArray(it) ? cJSON_GetArraySize(it) : -1;
    if (count < 1 || count > HR_FANOUT_MAX) {
        hr_proto_fail(e, 400, HR_E_INVALID_FIELD, "notifications must be an array of 1-%d objects",
                      HR_FANOUT_MAX);
        goto done;
    }
    const cJSON *x;
    int i = 0;
    cJSON_ArrayForEach(x, it)
    {
        if (!cJSON_IsObject(x)) {
            hr_proto_fail(e, 400, HR_E_INVALID_FIELD, "notifications[%d] is not an object", i);
            goto done;
        }
        i++;
    }
    char *text = hr_json_member_text(body, len, "notifications");
    *n = hr_proto_split_array(text, strlen(text), items, lens);
    hr_free(text);
    if (*n != (size_t)count) {
        hr_proto_batch_free(*items, *lens, *n);
        *items = NULL;
        *lens = NULL;
        *n = 0;
        hr_proto_fail(e, 400, HR_E_INVALID_JSON, "notifications could not be split");
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(root);
    return rc;
}

void
hr_proto_batch_free(char **items, size_t *lens, size_t n)
{
    for (size_t i = 0; i < n; i++)
        hr_free(items[i]);
    hr_free(items);
    hr_free(lens);
}

int
hr_proto_room_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > HR_ROOM_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '@' || c == '-'))
            return 0;
    }
    return 1;
}

int
hr_proto_token_valid(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return 0;
    }
    return 1;
}

/*
 * Whether JSON text holds a NUL character: a raw 0 byte or a \u0000 escape
 * (a 'u' after an odd run of backslashes). cJSON decodes the escape into a
 * C string that silently ends there, and PostgreSQL text and jsonb refuse
 * it, so envelopes holding one are refused whole.
 */
int
hr_proto_json_has_nul(const char *json, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (json[i] == '\0')
            return 1;
        if (json[i] != '\\')
            continue;
        size_t run = 0;
        while (i < len && json[i] == '\\') {
            run++;
            i++;
        }
        if (run % 2 == 1 && len - i >= 5 && memcmp(json + i, "u0000", 5) == 0)
            return 1;
        i--; /* the loop's i++ looks at the character after the run */
    }
    return 0;
}

int
hr_proto_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > HR_USER_ID_MAX || !hr_utf8_valid(s, len))
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

int
hr_proto_room_message_decode(const char *json, size_t len, hr_notification_t *n, char *err,
                             size_t errlen)
{
    cJSON *root;
    uint8_t u[16];

    memset(n, 0, sizeof(*n));
    if (hr_proto_json_has_nul(json, len)) {
        snprintf(err, errlen, "room message holds a NUL character (\\u0000)");
        return HR_DECLINED;
    }
    if (hr_json_parse_object(json, len, &root, err, errlen) != 0)
        return HR_DECLINED;
    const char *id = hr_json_get_str(root, "id");
    const char *room = hr_json_get_str(root, "room");
    const char *from = hr_json_get_str(root, "from");
    const char *message = hr_json_get_str(root, "message");
    const char *created_at = hr_json_get_str(root, "created_at");
    int rc = HR_DECLINED;
    if (id == NULL || hr_uuid_parse(id, u) != 0) {
        snprintf(err, errlen, "room message id missing or not a UUID");
    } else if (room == NULL || !hr_proto_room_valid(room)) {
        snprintf(err, errlen, "room message room missing or invalid");
    } else if (from == NULL || !hr_proto_valid_name(from, HR_USER_ID_MAX)) {
        snprintf(err, errlen, "room message from missing or invalid");
    } else if (message == NULL || created_at == NULL || strlen(created_at) >= HR_TIME_ISO_LEN) {
        snprintf(err, errlen, "room message message or created_at missing");
    } else {
        hr_uuid_format(u, n->id);
        snprintf(n->created_at, sizeof(n->created_at), "%s", created_at);
        n->room = hr_strdup(room);
        n->user_id = hr_strdup(from);
        n->message = hr_strdup(message);
        rc = 0;
    }
    cJSON_Delete(root);
    return rc;
}

size_t
hr_proto_room_channel(char *buf, size_t cap, const char *room)
{
    int n = snprintf(buf, cap, "%s%s", HR_CHANNEL_ROOM_PREFIX, room);
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
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
    if (n->room != NULL)
        cJSON_AddStringToObject(o, "room", n->room);
    else
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
    if (hr_proto_json_has_nul(json, len)) {
        snprintf(err, errlen, "envelope holds a NUL character (\\u0000)");
        return HR_DECLINED;
    }
    if (hr_json_parse_object(json, len, &root, err, errlen) != 0)
        return HR_DECLINED;

    const char *id = hr_json_get_str(root, "id");
    const char *user_id = hr_json_get_str(root, "user_id");
    const char *room = hr_json_get_str(root, "room");
    const char *type = hr_json_get_str(root, "type");
    const char *message = hr_json_get_str(root, "message");
    const char *created_at = hr_json_get_str(root, "created_at");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(root, "data");

    int rc = HR_DECLINED;
    if (id == NULL || hr_uuid_parse(id, u) != 0) {
        snprintf(err, errlen, "envelope id missing or not a UUID");
    } else if (room != NULL ? (user_id != NULL || !hr_proto_room_valid(room))
                            : (user_id == NULL || !hr_proto_valid_name(user_id, HR_USER_ID_MAX))) {
        snprintf(err, errlen, "envelope user_id (or room) missing or invalid");
    } else if (type == NULL || message == NULL || created_at == NULL ||
               strlen(created_at) >= HR_TIME_ISO_LEN) {
        snprintf(err, errlen, "envelope type, message or created_at missing");
    } else if (data != NULL && !cJSON_IsNull(data) && !cJSON_IsObject(data)) {
        snprintf(err, errlen, "envelope data is not an object");
    } else {
        hr_uuid_format(u, n->id);
        snprintf(n->created_at, sizeof(n->created_at), "%s", created_at);
        n->user_id = hr_strdup(user_id);
        n->room = hr_strdup(room);
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

/* snprintf into buf, or 0 and an empty buf when it does not fit: a cut key is another key. */
static size_t
hr_proto_key_fit(char *buf, size_t cap, int n)
{
    if (n < 0 || (size_t)n >= cap) {
        if (cap > 0)
            buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}

size_t
hr_proto_presence_key(char *buf, size_t cap, const char *room, const char *user)
{
    int n = user == NULL ? snprintf(buf, cap, "%s{%s}", HR_KEY_PRESENCE_PREFIX, room)
                         : snprintf(buf, cap, "%s{%s}:%s", HR_KEY_PRESENCE_PREFIX, room, user);
    return hr_proto_key_fit(buf, cap, n);
}

size_t
hr_proto_chat_idem_key(char *buf, size_t cap, const char *room, const char *user, const char *key)
{
    int n = snprintf(buf, cap, "%s{%s}:%zu:%s:%s", HR_KEY_CHAT_IDEM_PREFIX, room, strlen(user),
                     user, key);
    return hr_proto_key_fit(buf, cap, n);
}
