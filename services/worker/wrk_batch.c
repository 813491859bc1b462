#include "wrk_batch.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

void
wrk_buf_reserve(wrk_buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra)
        cap *= 2;
    b->data = hr_realloc(b->data, cap);
    b->cap = cap;
}

void
wrk_buf_append(wrk_buf_t *b, const void *p, size_t n)
{
    wrk_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void
wrk_buf_free(wrk_buf_t *b)
{
    hr_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void
wrk_copy_escape(wrk_buf_t *out, const char *s, size_t len)
{
    /* Worst case every byte doubles; reserving once keeps the loop branch-light. */
    wrk_buf_reserve(out, 2 * len);
    char *d = out->data + out->len;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        switch (c) {
        case '\\':
            *d++ = '\\';
            *d++ = '\\';
            break;
        case '\t':
            *d++ = '\\';
            *d++ = 't';
            break;
        case '\n':
            *d++ = '\\';
            *d++ = 'n';
            break;
        case '\r':
            *d++ = '\\';
            *d++ = 'r';
            break;
        default:
            *d++ = c;
        }
    }
    out->len = (size_t)(d - out->data);
}

static void
wrk_copy_field(wrk_buf_t *out, const char *s, char sep)
{
    wrk_copy_escape(out, s, strlen(s));
    wrk_buf_append(out, &sep, 1);
}

void
wrk_copy_row(wrk_buf_t *out, const hr_notification_t *n)
{
    /* Order must match WRK_COPY_COLUMNS. */
    wrk_copy_field(out, n->id, '\t');
    if (n->user_id != NULL)
        wrk_copy_field(out, n->user_id, '\t');
    else
        wrk_buf_append(out, "\\N\t", 3);
    if (n->room != NULL)
        wrk_copy_field(out, n->room, '\t');
    else
        wrk_buf_append(out, "\\N\t", 3);
    wrk_copy_field(out, n->type, '\t');
    wrk_copy_field(out, n->message, '\t');
    if (n->data_json != NULL)
        wrk_copy_field(out, n->data_json, '\t');
    else
        wrk_buf_append(out, "\\N\t", 3);
    wrk_copy_field(out, n->created_at, '\n');
}

/* Reads exactly n digits at *p into *v and advances; 0 if a non-digit is met. */
static int
wrk_digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return 0;
        *v = *v * 10 + (c - '0');
    }
    *p += n;
    return 1;
}

int
wrk_timestamp_valid(const char *s)
{
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, se, v;
    const char *p = s;

    if (s == NULL)
        return 0;
    if (!wrk_digits(&p, 4, &y) || *p++ != '-' || !wrk_digits(&p, 2, &mo) || *p++ != '-' ||
        !wrk_digits(&p, 2, &d) || *p++ != 'T' || !wrk_digits(&p, 2, &h) || *p++ != ':' ||
        !wrk_digits(&p, 2, &mi) || *p++ != ':' || !wrk_digits(&p, 2, &se))
        return 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60)
        return 0;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return 0;
    if (*p == '.') {
        int nd = 0;
        for (p++; *p >= '0' && *p <= '9'; p++)
            nd++;
        if (nd < 1 || nd > 6)
            return 0;
    }
    if (*p == 'Z')
        return p[1] == '\0';
    if (*p != '+' && *p != '-')
        return 0;
    p++;
    if (!wrk_digits(&p, 2, &v) || v > 15 || *p++ != ':' || !wrk_digits(&p, 2, &v) || v > 59)
        return 0;
    return *p == '\0';
}

void
wrk_batch_init(wrk_batch_t *b, size_t cap)
{
    memset(b, 0, sizeof(*b));
    b->entries = hr_calloc(cap ? cap : 1, sizeof(*b->entries));
    b->cap = cap ? cap : 1;
}

const char *
wrk_stream_name(int i)
{
    static const char *const names[WRK_NSTREAMS] = {HR_STREAM_NOTIFICATIONS, HR_STREAM_RECEIPTS,
                                                    HR_STREAM_ROOM_MESSAGES};
    return names[i];
}

/* Frees what entry e owns and zeroes it. */
static void
wrk_entry_clear(wrk_entry_t *e)
{
    hr_notification_clear(&e->n);
    hr_free(e->reason);
    hr_free(e->raw);
    hr_free(e->rawlen);
    memset(e, 0, sizeof(*e));
}

void
wrk_batch_clear(wrk_batch_t *b)
{
    for (size_t i = 0; i < b->len; i++)
        wrk_entry_clear(&b->entries[i]);
    b->len = 0;
    b->rows = 0;
    memset(b->nrows, 0, sizeof(b->nrows));
    b->committed = 0;
}

void
wrk_batch_free(wrk_batch_t *b)
{
    wrk_batch_clear(b);
    hr_free(b->entries);
    memset(b, 0, sizeof(*b));
}

/* The value of field name among kv pairs, or NULL; the first occurrence wins. */
static const char *
wrk_field(const char *const *kv, const size_t *kvlen, size_t nkv, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i + 1 < nkv; i += 2) {
        if (kvlen[i] == nl && memcmp(kv[i], name, nl) == 0) {
            *len = kvlen[i + 1];
            return kv[i + 1];
        }
    }
    return NULL;
}

/*
 * Checks an optional stream field against the envelope's value of it; nocase
 * for UUIDs, whose text the decoder normalizes to lowercase.
 */
static int
wrk_field_agrees(const char *const *kv, const size_t *kvlen, size_t nkv, const char *name,
                 const char *want, int nocase, char *err, size_t errlen)
{
    size_t len;
    const char *v = wrk_field(kv, kvlen, nkv, name, &len);
    if (v == NULL ||
        (len == strlen(want) && (nocase ? strncasecmp(v, want, len) : memcmp(v, want, len)) == 0))
        return 1;
    snprintf(err, errlen, "stream field %s \"%.*s\" disagrees with the payload's \"%s\"", name,
             (int)(len > 64 ? 64 : len), v, want);
    return 0;
}

/* Rejects what PostgreSQL would refuse, so one entry cannot fail a whole COPY. */
static int
wrk_row_valid(const hr_notification_t *n, char *err, size_t errlen)
{
    if (!wrk_timestamp_valid(n->created_at)) {
        snprintf(err, errlen, "envelope created_at \"%s\" is not an RFC 3339 timestamp",
                 n->created_at);
        return 0;
    }
    /* jsonb refuses \u0000 (22P05): data is kept as the envelope's raw text. */
    if (n->data_json != NULL && hr_proto_json_has_nul(n->data_json, strlen(n->data_json))) {
        snprintf(err, errlen, "envelope data holds a NUL character (\\u0000)");
        return 0;
    }
    const char *names[] = {"user_id", "room", "type", "message", "data"};
    const char *vals[] = {n->user_id, n->room, n->type, n->message, n->data_json};
    for (size_t i = 0; i < HR_ARRAY_LEN(vals); i++) {
        if (vals[i] != NULL && !hr_utf8_valid(vals[i], strlen(vals[i]))) {
            snprintf(err, errlen, "envelope %s is not valid UTF-8", names[i]);
            return 0;
        }
    }
    return 1;
}

/* A receipt: id a UUID, delivered_at decimal ms, user_id optional. */
static int
wrk_receipt_decode(wrk_entry_t *e, const char *const *kv, const size_t *kvlen, size_t nkv,
                   char *err, size_t errlen)
{
    size_t len;
    uint8_t u[16];
    char buf[64];
    const char *id = wrk_field(kv, kvlen, nkv, HR_FIELD_ID, &len);
    if (id == NULL || len >= sizeof(buf)) {
        snprintf(err, errlen, "receipt has no valid %s field", HR_FIELD_ID);
        return HR_DECLINED;
    }
    memcpy(buf, id, len);
    buf[len] = '\0';
    if (hr_uuid_parse(buf, u) != 0) {
        snprintf(err, errlen, "receipt %s is not a UUID", HR_FIELD_ID);
        return HR_DECLINED;
    }
    const char *at = wrk_field(kv, kvlen, nkv, HR_FIELD_DELIVERED_AT, &len);
    uint64_t ms = 0;
    if (at == NULL || len == 0 || len > 15) {
        snprintf(err, errlen, "receipt has no valid %s field", HR_FIELD_DELIVERED_AT);
        return HR_DECLINED;
    }
    for (size_t i = 0; i < len; i++) {
        if (at[i] < '0' || at[i] > '9') {
            snprintf(err, errlen, "receipt %s is not decimal milliseconds", HR_FIELD_DELIVERED_AT);
            return HR_DECLINED;
        }
        ms = ms * 10 + (uint64_t)(at[i] - '0');
    }
    const char *user = wrk_field(kv, kvlen, nkv, HR_FIELD_USER_ID, &len);
    hr_uuid_format(u, e->n.id);
    e->n.user_id = user != NULL ? hr_strndup(user, len) : NULL;
    e->delivered_ms = ms;
    return 0;
}

/* A room message: the payload as the gateway writes it, checked like a notification. */
static int
wrk_room_decode(wrk_entry_t *e, const char *const *kv, const size_t *kvlen, size_t nkv, char *err,
                size_t errlen)
{
    size_t plen;
    const char *payload = wrk_field(kv, kvlen, nkv, HR_FIELD_PAYLOAD, &plen);
    if (payload == NULL) {
        snprintf(err, errlen, "entry has no %s field", HR_FIELD_PAYLOAD);
        return HR_DECLINED;
    }
    hr_notification_t n;
    char why[256];
    if (hr_proto_room_message_decode(payload, plen, &n, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s", why);
        return HR_DECLINED;
    }
    if (!wrk_field_agrees(kv, kvlen, nkv, HR_FIELD_ID, n.id, 1, err, errlen) ||
        !wrk_field_agrees(kv, kvlen, nkv, HR_FIELD_ROOM, n.room, 0, err, errlen) ||
        !wrk_row_valid(&n, err, errlen)) {
        hr_notification_clear(&n);
        return HR_DECLINED;
    }
    e->n = n;
    return 0;
}

/* A notification: the envelope in payload, agreeing with id and user_id/room. */
static int
wrk_notification_decode(wrk_entry_t *e, const char *const *kv, const size_t *kvlen, size_t nkv,
                        char *err, size_t errlen)
{
    size_t plen;
    const char *payload = wrk_field(kv, kvlen, nkv, HR_FIELD_PAYLOAD, &plen);
    if (payload == NULL) {
        snprintf(err, errlen, "entry has no %s field", HR_FIELD_PAYLOAD);
        return HR_DECLINED;
    }
    hr_notification_t n;
    char why[256];
    if (hr_proto_envelope_decode(payload, plen, &n, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s", why);
        return HR_DECLINED;
    }
    if (!wrk_field_agrees(kv, kvlen, nkv, HR_FIELD_ID, n.id, 1, err, errlen) ||
        (n.user_id != NULL &&
         !wrk_field_agrees(kv, kvlen, nkv, HR_FIELD_USER_ID, n.user_id, 0, err, errlen)) ||
        (n.room != NULL &&
         !wrk_field_agrees(kv, kvlen, nkv, HR_FIELD_ROOM, n.room, 0, err, errlen)) ||
        !wrk_row_valid(&n, err, errlen)) {
        hr_notification_clear(&n);
        return HR_DECLINED;
    }
    e->n = n;
    return 0;
}

int
wrk_batch_add_entry(wrk_batch_t *b, int stream, const char *sid, size_t sidlen,
                    const char *const *kv, const size_t *kvlen, size_t nkv, char *err,
                    size_t errlen)
{
    if (b->len == b->cap || sidlen == 0 || sidlen >= WRK_SID_MAX)
        return HR_AGAIN;

    wrk_entry_t *e = &b->entries[b->len++];
    memset(e, 0, sizeof(*e));
    memcpy(e->sid, sid, sidlen);
    e->sid[sidlen] = '\0';
    e->stream = stream;
    e->deliveries = 1;

    int rc;
    if (kv == NULL) {
        snprintf(err, errlen, "entry was deleted from the stream before it was acked");
        rc = HR_DECLINED;
    } else {
        size_t total = 0;
        for (size_t i = 0; i < nkv; i++)
            total += kvlen[i];
        e->raw = hr_malloc(total + 1);
        e->rawlen = hr_malloc((nkv ? nkv : 1) * sizeof(*e->rawlen));
        e->nraw = nkv;
        for (size_t i = 0, off = 0; i < nkv; off += kvlen[i], i++) {
            memcpy(e->raw + off, kv[i], kvlen[i]);
            e->rawlen[i] = kvlen[i];
        }
        if (nkv % 2 != 0) {
            snprintf(err, errlen, "entry has an odd number of field/value items (%zu)", nkv);
            rc = HR_DECLINED;
        } else if (stream == WRK_S_RECEIPT) {
            rc = wrk_receipt_decode(e, kv, kvlen, nkv, err, errlen);
        } else if (stream == WRK_S_ROOM) {
            rc = wrk_room_decode(e, kv, kvlen, nkv, err, errlen);
        } else {
            rc = wrk_notification_decode(e, kv, kvlen, nkv, err, errlen);
        }
    }
    if (rc != 0) {
        e->reason = hr_strdup(err);
        return HR_DECLINED;
    }
    e->is_row = 1;
    b->rows++;
    b->nrows[stream]++;
    return 0;
}

const char *
wrk_entry_field(const wrk_entry_t *e, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    const char *p = e->raw;
    for (size_t i = 0; p != NULL && i + 1 < e->nraw; i += 2) {
        const char *v = p + e->rawlen[i];
        if (e->rawlen[i] == nl && memcmp(p, name, nl) == 0) {
            *len = e->rawlen[i + 1];
            return v;
        }
        p = v + e->rawlen[i + 1];
    }
    return NULL;
}

int
wrk_batch_add(wrk_batch_t *b, const char *sid, size_t sidlen, const char *const *kv,
              const size_t *kvlen, size_t nkv, char *err, size_t errlen)
{
    return wrk_batch_add_entry(b, WRK_S_NOTIFY, sid, sidlen, kv, kvlen, nkv, err, errlen);
}

void
wrk_batch_reject(wrk_batch_t *b, size_t i)
{
    wrk_entry_t *e = &b->entries[i];
    if (!e->is_row)
        return;
    hr_notification_clear(&e->n);
    e->is_row = 0;
    b->rows--;
    b->nrows[e->stream]--;
}

void
wrk_batch_reject_reason(wrk_batch_t *b, size_t i, const char *reason)
{
    wrk_batch_reject(b, i);
    hr_free(b->entries[i].reason);
    b->entries[i].reason = hr_strdup(reason);
}

void
wrk_batch_copy_text(const wrk_batch_t *b, size_t lo, size_t hi, wrk_buf_t *out)
{
    out->len = 0;
    for (size_t i = lo; i < hi && i < b->len; i++) {
        if (b->entries[i].is_row && b->entries[i].stream == WRK_S_NOTIFY)
            wrk_copy_row(out, &b->entries[i].n);
    }
}

void
wrk_batch_copy_rooms(const wrk_batch_t *b, size_t lo, size_t hi, wrk_buf_t *out)
{
    out->len = 0;
    for (size_t i = lo; i < hi && i < b->len; i++) {
        const wrk_entry_t *e = &b->entries[i];
        if (!e->is_row || e->stream != WRK_S_ROOM)
            continue;
        /* Order must match WRK_ROOM_COLUMNS. */
        wrk_copy_field(out, e->n.id, '\t');
        wrk_copy_field(out, e->n.room, '\t');
        wrk_copy_field(out, e->n.user_id, '\t');
        wrk_copy_field(out, e->n.message, '\t');
        wrk_copy_field(out, e->n.created_at, '\n');
    }
}
