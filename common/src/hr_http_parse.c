#include "herald/hr_http_parse.h"
#include "herald/hr_core.h"
#include "hr_proto.h"

#include <string.h>
#include <strings.h>

/* ---- refusals: what a request that fails the framing checks is told ---- */

static const hr_http_refusal_t hr_http_refusals[HR_HTTP_R_COUNT] = {
    [HR_HTTP_R_NONE] = {500, HR_E_INTERNAL, "no refusal"},
    [HR_HTTP_R_LINE] = {400, HR_E_BAD_REQUEST,
                        "the request line must be: method SP target SP HTTP/1.x"},
    [HR_HTTP_R_VERSION] = {505, HR_E_VERSION, "only HTTP/1.0 and HTTP/1.1 are served"},
    [HR_HTTP_R_METHOD_UNKNOWN] = {501, HR_E_NOT_IMPLEMENTED, "unknown method"},
    [HR_HTTP_R_METHOD] = {405, HR_E_METHOD, "TRACE and CONNECT are not served"},
    [HR_HTTP_R_TARGET] = {400, HR_E_BAD_REQUEST,
                          "the request target must be a path of visible ASCII"},
    [HR_HTTP_R_URI_LONG] = {414, HR_E_URI_TOO_LONG, "the request target is longer than 8192 bytes"},
    [HR_HTTP_R_HEAD_LARGE] = {431, HR_E_HEADER_TOO_LARGE,
                              "the request head is larger than 32 KiB or has more than 100 fields"},
    [HR_HTTP_R_BARE_LF] = {400, HR_E_BAD_REQUEST, "lines must end with CRLF"},
    [HR_HTTP_R_CTL] = {400, HR_E_BAD_REQUEST, "the request head holds a control character"},
    [HR_HTTP_R_FIELD] = {400, HR_E_BAD_REQUEST,
                         "a header field must be name \":\" value, with no space before the colon"},
    [HR_HTTP_R_FOLD] = {400, HR_E_BAD_REQUEST, "folded header lines are not accepted"},
    [HR_HTTP_R_LENGTH] = {400, HR_E_BAD_REQUEST, "Content-Length must be a decimal number"},
    [HR_HTTP_R_LENGTHS] = {400, HR_E_BAD_REQUEST, "Content-Length is given with different values"},
    [HR_HTTP_R_CODING] = {501, HR_E_NOT_IMPLEMENTED, "the only transfer coding served is chunked"},
    [HR_HTTP_R_TE_AND_LENGTH] = {400, HR_E_BAD_REQUEST,
                                 "Transfer-Encoding and Content-Length together"},
    [HR_HTTP_R_TE_HTTP10] = {400, HR_E_BAD_REQUEST, "Transfer-Encoding in an HTTP/1.0 request"},
    [HR_HTTP_R_HOST] = {400, HR_E_BAD_REQUEST, "an HTTP/1.1 request needs a Host header"},
    [HR_HTTP_R_HOSTS] = {400, HR_E_BAD_REQUEST, "Host is given more than once"},
    [HR_HTTP_R_BODY_LARGE] = {413, HR_E_BODY_TOO_LARGE,
                              "the body is larger than this endpoint takes"},
    [HR_HTTP_R_CHUNK] = {400, HR_E_BAD_REQUEST, "malformed chunked body"},
    [HR_HTTP_R_TIMEOUT] = {408, HR_E_REQUEST_TIMEOUT, "the request head did not arrive in time"},
    [HR_HTTP_R_BODY_TIMEOUT] = {408, HR_E_REQUEST_TIMEOUT, "the request body stopped arriving"},
};

const hr_http_refusal_t *
hr_http_refusal(int idx)
{
    return idx > 0 && idx < HR_HTTP_R_COUNT ? &hr_http_refusals[idx] : &hr_http_refusals[0];
}

/* Character classes of header bytes, so the field loops test one table entry per byte. */
enum { HR_HTTP_TCHAR = 1, HR_HTTP_CTL = 2 };
static const unsigned char hr_http_class[256] = {
    /* CTL: below 0x20 but HTAB, and DEL */
    [0x00 ... 0x08] = HR_HTTP_CTL,
    [0x0a ... 0x1f] = HR_HTTP_CTL,
    [0x7f] = HR_HTTP_CTL,
    /* tchar: ALPHA, DIGIT and "!#$%&'*+-.^_`|~" (RFC 9110 5.6.2) */
    ['0' ... '9'] = HR_HTTP_TCHAR,
    ['A' ... 'Z'] = HR_HTTP_TCHAR,
    ['a' ... 'z'] = HR_HTTP_TCHAR,
    ['!'] = HR_HTTP_TCHAR,
    ['#'] = HR_HTTP_TCHAR,
    ['$'] = HR_HTTP_TCHAR,
    ['%'] = HR_HTTP_TCHAR,
    ['&'] = HR_HTTP_TCHAR,
    ['\''] = HR_HTTP_TCHAR,
    ['*'] = HR_HTTP_TCHAR,
    ['+'] = HR_HTTP_TCHAR,
    ['-'] = HR_HTTP_TCHAR,
    ['.'] = HR_HTTP_TCHAR,
    ['^'] = HR_HTTP_TCHAR,
    ['_'] = HR_HTTP_TCHAR,
    ['`'] = HR_HTTP_TCHAR,
    ['|'] = HR_HTTP_TCHAR,
    ['~'] = HR_HTTP_TCHAR,
};

int
hr_http_tchar(unsigned char c)
{
    /* Letters in either case, digits, and "!#$%&'*+-.^_`|~": no strchr per header byte. */
    if (((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || (c >= '0' && c <= '9'))
        return 1;
    switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
        return 1;
    default:
        return 0;
    }
}

int
hr_http_line_check(const char *line, size_t len)
{
    static const char *const served[] = {"GET",    "HEAD",    "POST", "PUT",
                                         "DELETE", "OPTIONS", "PATCH"};
    const char *sp1 = memchr(line, ' ', len);
    if (sp1 == NULL)
        return HR_HTTP_R_LINE; /* HTTP/0.9 "GET /" or garbage */
    const char *rest = sp1 + 1;
    size_t rlen = len - (size_t)(rest - line);
    const char *sp2 = memchr(rest, ' ', rlen);
    size_t mlen = (size_t)(sp1 - line);
    if (sp2 == NULL) {
        return rlen > HR_HTTP_URI_MAX ? HR_HTTP_R_URI_LONG : HR_HTTP_R_LINE;
    }
    size_t tlen = (size_t)(sp2 - rest);
    const char *ver = sp2 + 1;
    size_t vlen = len - (size_t)(ver - line);
    /* The version first: an HTTP/2 preface ("PRI * HTTP/2.0") is a version question. */
    if (vlen == 8 && memcmp(ver, "HTTP/", 5) == 0 && ver[5] >= '0' && ver[5] <= '9' &&
        ver[6] == '.' && ver[7] >= '0' && ver[7] <= '9') {
        if (!(ver[5] == '1' && (ver[7] == '0' || ver[7] == '1')))
            return HR_HTTP_R_VERSION;
    } else {
        return HR_HTTP_R_LINE;
    }
    if (mlen == 0 || mlen > 32)
        return HR_HTTP_R_LINE;
    for (size_t i = 0; i < mlen; i++)
        if (!hr_http_tchar((unsigned char)line[i]))
            return HR_HTTP_R_LINE;
    int known = 0;
    for (size_t i = 0; i < HR_ARRAY_LEN(served) && !known; i++)
        known = strlen(served[i]) == mlen && memcmp(line, served[i], mlen) == 0;
    if (!known) {
        if ((mlen == 5 && memcmp(line, "TRACE", 5) == 0) ||
            (mlen == 7 && memcmp(line, "CONNECT", 7) == 0))
            return HR_HTTP_R_METHOD;
        return HR_HTTP_R_METHOD_UNKNOWN;
    }
    if (tlen > HR_HTTP_URI_MAX)
        return HR_HTTP_R_URI_LONG;
    /* origin-form only ("*" for OPTIONS): a path of visible ASCII. */
    if (tlen == 0 || (rest[0] != '/' && !(tlen == 1 && rest[0] == '*' && mlen == 7)))
        return HR_HTTP_R_TARGET;
    for (size_t i = 0; i < tlen; i++) {
        unsigned char c = (unsigned char)rest[i];
        if (c <= 0x20 || c >= 0x7f)
            return HR_HTTP_R_TARGET;
    }
    return 0;
}

/* Whether name[0..n) is the header field name want (lowercase), in any case. */
static int
hr_http_name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* Notes the tokens of a Connection value that change how the connection ends. */
static void
hr_http_connection_tokens(const char *v, size_t n, hr_http_head_t *out)
{
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (i - s == 5 && strncasecmp(v + s, "close", 5) == 0)
            out->conn_close = 1;
        else if (i - s == 10 && strncasecmp(v + s, "keep-alive", 10) == 0)
            out->conn_keepalive = 1;
    }
}

int
hr_http_head_check(const char *buf, size_t len, hr_http_head_t *out)
{
    return hr_http_head_parse(buf, len, out, NULL, NULL);
}

int
hr_http_head_parse(const char *buf, size_t len, hr_http_head_t *out, hr_http_field_t *fields,
                   size_t *nfields)
{
    memset(out, 0, sizeof(*out));
    if (nfields != NULL)
        *nfields = 0;
    if (len > HR_HTTP_HEAD_MAX)
        return HR_HTTP_R_HEAD_LARGE;
    const char *end = buf + len;
    /*
     * Every LF after a CR, every CR before an LF: checked line by line below
     * (a line ends at its first CR, which must be followed by LF; an LF
     * inside a line is bare), so the head is read once.
     */
    const char *eol = memchr(buf, '\r', len);
    if (eol == NULL)
        return memchr(buf, '\n', len) != NULL ? HR_HTTP_R_BARE_LF : HR_HTTP_R_LINE;
    if (eol + 1 >= end || eol[1] != '\n' || memchr(buf, '\n', (size_t)(eol - buf)) != NULL)
        return HR_HTTP_R_BARE_LF;
    int rc = hr_http_line_check(buf, (size_t)(eol - buf));
    if (rc != 0)
        return rc;
    const char *target = memchr(buf, ' ', (size_t)(eol - buf)) + 1;
    out->path = target;
    while (target[out->path_len] != '?' && target[out->path_len] != '#' &&
           target[out->path_len] != ' ')
        out->path_len++;
    int http10 = eol[-1] == '0';
    out->http10 = http10;

    int hosts = 0, codings = 0, nf = 0;
    for (const char *p = eol + 2; p < end;) {
        const char *e = memchr(p, '\r', (size_t)(end - p));
        if (e == NULL || e + 1 >= end || e[1] != '\n')
            return HR_HTTP_R_BARE_LF;
        if (e == p) {
            /* The empty line: what a caller passes beyond it is checked as before. */
            for (const char *q = e + 2; q < end; q++)
                if ((*q == '\n' && q[-1] != '\r') || (*q == '\r' && (q + 1 >= end || q[1] != '\n')))
                    return HR_HTTP_R_BARE_LF;
            break;
        }
        if (++nf > HR_HTTP_FIELDS_MAX)
            return HR_HTTP_R_HEAD_LARGE;
        if (*p == ' ' || *p == '\t')
            return HR_HTTP_R_FOLD;
        const char *colon = p;
        while (colon < e && (hr_http_class[(unsigned char)*colon] & HR_HTTP_TCHAR))
            colon++;
        if (colon < e && *colon == '\n')
            return HR_HTTP_R_BARE_LF;
        if (colon == p || colon >= e || *colon != ':')
            return HR_HTTP_R_FIELD;
        const char *v = colon + 1, *ve = e;
        for (const char *q = v; q < ve; q++) {
            if (hr_http_class[(unsigned char)*q] & HR_HTTP_CTL)
                return *q == '\n' ? HR_HTTP_R_BARE_LF : HR_HTTP_R_CTL;
        }
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t nlen = (size_t)(colon - p), vlen = (size_t)(ve - v);
        if (fields != NULL)
            fields[(*nfields)++] = (hr_http_field_t){p, nlen, v, vlen};
        if (hr_http_name_is(p, nlen, "content-length")) {
            /* "42" or a list of equal values ("42, 42"): anything else is ambiguous framing. */
            for (const char *q = v; q < ve;) {
                const char *d = q;
                unsigned long long n = 0;
                while (q < ve && *q >= '0' && *q <= '9') {
                    if (n > (1ULL << 50))
                        return HR_HTTP_R_LENGTH;
                    n = n * 10 + (unsigned)(*q++ - '0');
                }
                if (q == d)
                    return HR_HTTP_R_LENGTH;
                if (out->has_length && out->length != n)
                    return HR_HTTP_R_LENGTHS;
                out->has_length = 1;
                out->length = n;
                while (q < ve && (*q == ' ' || *q == '\t'))
                    q++;
                if (q < ve && *q++ != ',')
                    return HR_HTTP_R_LENGTH;
                while (q < ve && (*q == ' ' || *q == '\t'))
                    q++;
            }
            if (!out->has_length)
                return HR_HTTP_R_LENGTH;
        } else if (hr_http_name_is(p, nlen, "transfer-encoding")) {
            if (codings++ > 0 || !(vlen == 7 && strncasecmp(v, "chunked", 7) == 0))
                return HR_HTTP_R_CODING;
            out->chunked = 1;
        } else if (hr_http_name_is(p, nlen, "host")) {
            hosts++;
        } else if (hr_http_name_is(p, nlen, "connection")) {
            hr_http_connection_tokens(v, vlen, out);
        }
        p = e + 2;
    }
    if (out->chunked && out->has_length)
        return HR_HTTP_R_TE_AND_LENGTH;
    if (out->chunked && http10)
        return HR_HTTP_R_TE_HTTP10;
    if (hosts > 1)
        return HR_HTTP_R_HOSTS;
    if (hosts == 0 && !http10)
        return HR_HTTP_R_HOST;
    return 0;
}
