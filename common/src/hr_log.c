#include "herald/hr_log.h"
#include "herald/hr_json.h"
#include "herald/hr_time.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Written once by hr_log_init() / hr_log_set_format() before any thread or loop starts. */
static struct {
    char service[32];
    hr_log_level_t min;
    hr_log_format_t format;
} hr_logger = {"herald", HR_LOG_INFO, HR_LOG_KV};

static const char *const hr_level_names[] = {"debug", "info", "warn", "error"};

#define HR_LOG_LINE_MAX 2048
_Static_assert(HR_LOG_LINE_CAP >= HR_LOG_LINE_MAX, "a kv line fits in HR_LOG_LINE_CAP");

void
hr_log_init(const char *service, hr_log_level_t min_level)
{
    snprintf(hr_logger.service, sizeof(hr_logger.service), "%s", service);
    hr_logger.min = min_level;
}

void
hr_log_set_format(hr_log_format_t format)
{
    hr_logger.format = format;
}

int
hr_log_level_parse(const char *s, hr_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, hr_level_names[i]) == 0) {
            *out = (hr_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

int
hr_log_format_parse(const char *s, hr_log_format_t *out)
{
    if (strcasecmp(s, "kv") == 0)
        *out = HR_LOG_KV;
    else if (strcasecmp(s, "json") == 0)
        *out = HR_LOG_JSON;
    else
        return -1;
    return 0;
}

int
hr_log_enabled(hr_log_level_t level)
{
    return level >= hr_logger.min;
}

const char *
hr_log_quote(char *dst, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    if (cap == 0)
        return dst;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            if (n + 3 > cap)
                break;
            dst[n++] = '\\';
            dst[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            if (n + 5 > cap)
                break;
            dst[n++] = '\\';
            dst[n++] = 'x';
            dst[n++] = hex[c >> 4];
            dst[n++] = hex[c & 15];
        } else {
            if (n + 2 > cap)
                break;
            dst[n++] = (char)c;
        }
    }
    dst[n] = '\0';
    return dst;
}

/* ---- key=value → JSON ---- */

typedef struct {
    char *p;
    size_t len, cap; /* cap excludes the NUL */
    int full;        /* a put did not fit (and wrote nothing) */
} hr_log_out_t;

static void
hr_log_put(hr_log_out_t *o, const char *s, size_t n)
{
    if (o->full || o->len + n > o->cap) {
        o->full = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static int
hr_log_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The length of the UTF-8 sequence at s (n bytes left) when it is well formed, else 0. */
static size_t
hr_log_utf8_len(const unsigned char *s, size_t n)
{
    size_t l = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 0;
    if (l == 0 || l > n || !hr_utf8_valid((const char *)s, l))
        return 0;
    return l;
}

/*
 * Appends v (n bytes) as a JSON string. With unq, v is a quoted log value's
 * inside: \" \\ and \xHH are undone first.
 */
static void
hr_log_json_str(hr_log_out_t *o, const char *v, size_t n, int unq)
{
    static const char hex[] = "0123456789abcdef";
    hr_log_put(o, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)v[i];
        size_t step = 1;
        if (unq && c == '\\' && i + 1 < n && (v[i + 1] == '"' || v[i + 1] == '\\')) {
            c = (unsigned char)v[i + 1];
            step = 2;
        } else if (unq && c == '\\' && i + 3 < n && v[i + 1] == 'x' &&
                   hr_log_hexval(v[i + 2]) >= 0 && hr_log_hexval(v[i + 3]) >= 0) {
            c = (unsigned char)(hr_log_hexval(v[i + 2]) * 16 + hr_log_hexval(v[i + 3]));
            step = 4;
        }
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            hr_log_put(o, e, 2);
        } else if (c == '\n') {
            hr_log_put(o, "\\n", 2);
        } else if (c == '\t') {
            hr_log_put(o, "\\t", 2);
        } else if (c == '\r') {
            hr_log_put(o, "\\r", 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            hr_log_put(o, e, 6);
        } else if (c < 0x80) {
            hr_log_put(o, (const char *)&c, 1);
        } else {
            size_t l = step == 1 ? hr_log_utf8_len((const unsigned char *)v + i, n - i) : 0;
            if (l > 0) {
                hr_log_put(o, v + i, l);
                step = l;
            } else {
                hr_log_put(o, "\\ufffd", 6);
            }
        }
        i += step;
    }
    hr_log_put(o, "\"", 1);
}

static int
hr_log_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/*
 * The end of a quoted value starting at s[0] == '"' (n bytes): the index of
 * the closing quote, the first unescaped '"' at the end or before " key=".
 * 0 when there is none (the value is then read as bare text).
 */
static size_t
hr_log_quoted_end(const char *s, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n && (s[i + 1] == '"' || s[i + 1] == '\\')) {
            i++;
            continue;
        }
        if (s[i] != '"')
            continue;
        if (i + 1 == n)
            return i;
        /* A quote closes before " key=" only: raw quotes inside a value stay in it. */
        size_t k = i + 2;
        while (i + 1 < n && s[i + 1] == ' ' && k < n && hr_log_key_char(s[k]))
            k++;
        if (s[i + 1] == ' ' && k > i + 2 && k < n && s[k] == '=')
            return i;
    }
    return 0;
}

/*
 * Adds member key (klen bytes, safe characters) = v, leaving room for the
 * closing "truncated" member; 0, or -1 (nothing added) when it does not fit.
 */
static int
hr_log_member(hr_log_out_t *o, int *first, const char *key, size_t klen, const char *v, size_t n,
              int unq)
{
    static const size_t tail = sizeof(",\"truncated\":\"true\"}") - 1;
    size_t at = o->len, cap = o->cap;
    o->cap = cap > tail ? cap - tail : 0;
    if (!*first)
        hr_log_put(o, ",", 1);
    hr_log_put(o, "\"", 1);
    hr_log_put(o, key, klen);
    hr_log_put(o, "\":", 2);
    hr_log_json_str(o, v, n, unq);
    o->cap = cap;
    if (o->full) {
        o->full = 0;
        o->len = at;
        return -1;
    }
    *first = 0;
    return 0;
}

size_t
hr_log_kv_to_json(const char *line, size_t len, char *out, size_t cap)
{
    if (cap < 32) {
        if (cap > 0)
            out[0] = '\0';
        return 0;
    }
    hr_log_out_t o = {out, 0, cap - 1, 0};
    int first = 1, truncated = 0;
    hr_log_put(&o, "{", 1);
    /* Text that is not key=value, joined by single spaces, for "text". */
    const char *text[64];
    size_t textlen[64], ntext = 0;
    size_t i = 0;
    while (i < len && !truncated) {
        while (i < len && line[i] == ' ')
            i++;
        if (i == len)
            break;
        size_t k = i;
        while (k < len && hr_log_key_char(line[k]))
            k++;
        if (k > i && k < len && line[k] == '=') {
            const char *key = line + i;
            size_t klen = k - i;
            if (klen == 3 && memcmp(key, "svc", 3) == 0)
                key = "service", klen = 7;
            const char *v = line + k + 1;
            size_t rest = len - k - 1, vlen = 0, adv;
            int unq = 0;
            size_t q = rest > 0 && v[0] == '"' ? hr_log_quoted_end(v, rest) : 0;
            if (q > 0) {
                unq = 1;
                vlen = q - 1;
                adv = q + 1;
                v++;
            } else {
                while (vlen < rest && v[vlen] != ' ')
                    vlen++;
                adv = vlen;
            }
            if (hr_log_member(&o, &first, key, klen, v, vlen, unq) != 0)
                truncated = 1;
            i = k + 1 + adv;
        } else {
            size_t e = i;
            while (e < len && line[e] != ' ')
                e++;
            if (ntext < sizeof(text) / sizeof(text[0])) {
                text[ntext] = line + i;
                textlen[ntext++] = e - i;
            }
            i = e;
        }
    }
    if (ntext > 0 && !truncated) {
        /* The pieces lie in line in order; one member spanning them would take the pairs too. */
        char joined[HR_LOG_LINE_MAX];
        size_t jl = 0;
        for (size_t t = 0; t < ntext && jl + textlen[t] + 1 < sizeof(joined); t++) {
            if (t > 0)
                joined[jl++] = ' ';
            memcpy(joined + jl, text[t], textlen[t]);
            jl += textlen[t];
        }
        if (hr_log_member(&o, &first, "text", 4, joined, jl, 0) != 0)
            truncated = 1;
    }
    if (truncated) {
        if (!first)
            hr_log_put(&o, ",", 1);
        hr_log_put(&o, "\"truncated\":\"true\"", 18);
    }
    hr_log_put(&o, "}", 1);
    out[o.len] = '\0';
    return o.len;
}

/* hr_log_format() with a va_list. */
static size_t
hr_log_vformat(char *out, size_t cap, hr_log_level_t level, const char *event, const char *fmt,
               va_list ap)
{
    char line[HR_LOG_LINE_MAX];
    char ts[HR_TIME_ISO_LEN];
    if (cap < 2)
        return 0;
    hr_time_format_iso(hr_now_ms(), ts);
    int n = snprintf(line, sizeof(line), "ts=%s level=%s svc=%s event=%s", ts,
                     hr_level_names[level], hr_logger.service, event);
    if (n < 0)
        return 0;
    if ((size_t)n < sizeof(line) - 2 && fmt != NULL && fmt[0] != '\0') {
        int m = vsnprintf(line + n + 1, sizeof(line) - (size_t)n - 2, fmt, ap);
        /* The separator only when there are fields ("%s", "" is how callers log none). */
        if (m > 0) {
            line[n] = ' ';
            n += 1 + m;
        }
    }
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    size_t len;
    if (hr_logger.format == HR_LOG_JSON) {
        len = hr_log_kv_to_json(line, (size_t)n, out, cap - 1);
    } else {
        len = (size_t)n < cap - 1 ? (size_t)n : cap - 1;
        memcpy(out, line, len);
    }
    out[len++] = '\n';
    return len;
}

size_t
hr_log_format(char *out, size_t cap, hr_log_level_t level, const char *event, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = hr_log_vformat(out, cap, level, event, fmt, ap);
    va_end(ap);
    return n;
}

void
hr_log_write(hr_log_level_t level, const char *event, const char *fmt, ...)
{
    if (level < hr_logger.min)
        return;
    char out[HR_LOG_LINE_CAP];
    va_list ap;
    va_start(ap, fmt);
    size_t n = hr_log_vformat(out, sizeof(out), level, event, fmt, ap);
    va_end(ap);
    /* One write() per line so lines from concurrent processes do not interleave. */
    ssize_t w = write(STDERR_FILENO, out, n);
    (void)w;
}
