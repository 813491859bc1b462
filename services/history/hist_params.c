#include "hist_params.h"
#include "herald/hr_core.h"
#include "herald/hr_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- query string and path ---- */

/*
 * Decodes s[0..n) (%XX escapes; '+' as space when plus_space, as in a query
 * string) into out, NUL-terminated. Returns the decoded length, or -1 when an
 * escape is malformed, a NUL byte is sent or decoded, or the result does not
 * fit in cap.
 */
int
hist_unescape(const char *s, size_t n, char *out, size_t cap, int plus_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+' && plus_space) {
            c = ' ';
        } else if (c == '\0') {
            return -1; /* a raw NUL would end the text early (fuzz_history) */
        } else if (c == '%') {
            int hi = i + 2 < n ? hr_hex_val(s[i + 1]) : -1;
            int lo = i + 2 < n ? hr_hex_val(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return (int)o;
}

int
hist_fail(hr_proto_err_t *e, const char *code, const char *fmt, ...)
{
    va_list ap;
    e->status = 400;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return HR_DECLINED;
}

/* The rule ingest applies to user_id: UTF-8, no control characters. */
static int
hist_valid_name(const char *s, size_t n, size_t max)
{
    if (n == 0 || n > max || !hr_utf8_valid(s, n))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

/* The gateway's rule for room names (proto/ws.md): 1..HIST_ROOM_MAX of A-Za-z0-9_.:@- . */
int
hist_room_valid(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= HIST_ROOM_MAX &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@-") == n;
}

/* Parses a UUID's text (either case) into its lowercase form; 0 or HR_DECLINED. */
int
hist_id_normalize(const char *s, char out[HR_UUID_STR_LEN])
{
    uint8_t u[16];
    if (strlen(s) != HR_UUID_STR_LEN - 1 || hr_uuid_parse(s, u) != 0)
        return HR_DECLINED;
    hr_uuid_format(u, out);
    return 0;
}

static const char hist_b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int
hist_cursor_encode(const char *id, char out[HIST_CURSOR_LEN + 1])
{
    uint8_t u[18] = {0};
    if (hr_uuid_parse(id, u) != 0)
        return HR_DECLINED;
    size_t o = 0;
    for (size_t i = 0; i < 16; i += 3) {
        uint32_t v = (uint32_t)u[i] << 16 | (uint32_t)u[i + 1] << 8 | u[i + 2];
        for (int k = 3; k >= 0 && o < HIST_CURSOR_LEN; k--)
            out[o++] = hist_b64url[(v >> (6 * k)) & 63];
    }
    out[o] = '\0';
    return 0;
}

int
hist_cursor_decode(const char *s, size_t n, char out[HR_UUID_STR_LEN])
{
    if (n != HIST_CURSOR_LEN)
        return HR_DECLINED;
    uint8_t u[18] = {0};
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = s[i] != '\0' ? strchr(hist_b64url, s[i]) : NULL;
        if (p == NULL)
            return HR_DECLINED;
        acc = acc << 6 | (uint32_t)(p - hist_b64url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            u[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* 22 characters carry 132 bits: the 4 left over must be zero (one spelling per cursor). */
    if (o != 16 || acc != 0)
        return HR_DECLINED;
    hr_uuid_format(u, out);
    return 0;
}

/* The integer 1..HIST_LIMIT_MAX in v[0..n); 0 if it is not one. */
static int
hist_parse_limit(const char *v, size_t n)
{
    char num[8];
    int len = hist_unescape(v, n, num, sizeof(num), 1);
    if (len <= 0)
        return 0;
    for (int i = 0; i < len; i++)
        if (num[i] < '0' || num[i] > '9')
            return 0;
    long l = strtol(num, NULL, 10);
    return l >= 1 && l <= HIST_LIMIT_MAX ? (int)l : 0;
}

int
hist_params_parse(const char *query, hist_params_t *q, hr_proto_err_t *e)
{
    memset(q, 0, sizeof(*q));
    q->limit = HIST_LIMIT_DEFAULT;
    q->status = HIST_STATUS_ALL;
    int have_user = 0, have_limit = 0, have_cursor = 0, have_status = 0, have_up_to = 0;

    for (const char *p = query != NULL ? query : ""; *p != '\0';) {
        size_t seg = strcspn(p, "&");
        const char *eq = memchr(p, '=', seg);
        size_t klen = eq != NULL ? (size_t)(eq - p) : seg;
        const char *v = eq != NULL ? eq + 1 : p + seg;
        size_t vlen = eq != NULL ? seg - klen - 1 : 0;
        char key[16];
        int kl = hist_unescape(p, klen, key, sizeof(key), 1);

        if (kl > 0 && strcmp(key, "user_id") == 0) {
            if (have_user++)
                return hist_fail(e, HR_E_INVALID_FIELD, "user_id must be given once");
            int n = hist_unescape(v, vlen, q->user_id, sizeof(q->user_id), 1);
            if (n < 0 || !hist_valid_name(q->user_id, (size_t)n, HR_USER_ID_MAX))
                return hist_fail(e, HR_E_INVALID_FIELD,
                                 "user_id must be 1-%d bytes of UTF-8 without control characters",
                                 HR_USER_ID_MAX);
        } else if (kl > 0 && strcmp(key, "limit") == 0) {
            if (have_limit++)
                return hist_fail(e, HR_E_INVALID_FIELD, "limit must be given once");
            q->limit = hist_parse_limit(v, vlen);
            if (q->limit == 0)
                return hist_fail(e, HR_E_INVALID_FIELD, "limit must be an integer from 1 to %d",
                                 HIST_LIMIT_MAX);
        } else if (kl > 0 && (strcmp(key, "cursor") == 0 || strcmp(key, "before") == 0)) {
            if (have_cursor++)
                return hist_fail(e, HR_E_INVALID_FIELD, "%s must be given once", key);
            char raw[HIST_CURSOR_LEN + 2];
            int n = hist_unescape(v, vlen, raw, sizeof(raw), 1);
            /* An empty value means "first page", as a client echoing a null cursor sends. */
            if (n != 0 && (n < 0 || hist_cursor_decode(raw, (size_t)n, q->cursor) != 0))
                return hist_fail(e, HR_E_INVALID_FIELD,
                                 "%s must be a next_cursor returned by a previous page", key);
        } else if (kl > 0 && strcmp(key, "status") == 0) {
            if (have_status++)
                return hist_fail(e, HR_E_INVALID_FIELD, "status must be given once");
            char st[8];
            int n = hist_unescape(v, vlen, st, sizeof(st), 1);
            if (n > 0 && strcmp(st, "all") == 0)
                q->status = HIST_STATUS_ALL;
            else if (n > 0 && strcmp(st, "unread") == 0)
                q->status = HIST_STATUS_UNREAD;
            else if (n > 0 && strcmp(st, "read") == 0)
                q->status = HIST_STATUS_READ;
            else
                return hist_fail(e, HR_E_INVALID_FIELD, "status must be unread, read or all");
        } else if (kl > 0 && strcmp(key, "up_to") == 0) {
            if (have_up_to++)
                return hist_fail(e, HR_E_INVALID_FIELD, "up_to must be given once");
            char raw[HR_UUID_STR_LEN + 1];
            int n = hist_unescape(v, vlen, raw, sizeof(raw), 1);
            if (n < 0 || hist_id_normalize(raw, q->up_to) != 0)
                return hist_fail(e, HR_E_INVALID_FIELD, "up_to must be a notification id");
        }
        p += seg;
        if (*p == '&')
            p++;
    }
    return 0;
}
