/*
 * The framing checks of hr_http, pure (no I/O): a request line and head
 * checked against RFC 9110/9112 strictly (hr_httpd's framing checks).
 */
#ifndef HERALD_HR_HTTP_PARSE_H
#define HERALD_HR_HTTP_PARSE_H

#include <stddef.h>

#define HR_HTTP_HEAD_MAX (32 * 1024) /* request line and header fields: 431 beyond */
#define HR_HTTP_URI_MAX 8192         /* request target: 414 beyond */
#define HR_HTTP_FIELDS_MAX 100       /* header fields per request: 431 beyond */

/* Why a request is refused: an index into hr_http_refusal(). */
enum {
    HR_HTTP_R_NONE,
    HR_HTTP_R_LINE,
    HR_HTTP_R_VERSION,
    HR_HTTP_R_METHOD_UNKNOWN,
    HR_HTTP_R_METHOD,
    HR_HTTP_R_TARGET,
    HR_HTTP_R_URI_LONG,
    HR_HTTP_R_HEAD_LARGE,
    HR_HTTP_R_BARE_LF,
    HR_HTTP_R_CTL,
    HR_HTTP_R_FIELD,
    HR_HTTP_R_FOLD,
    HR_HTTP_R_LENGTH,
    HR_HTTP_R_LENGTHS,
    HR_HTTP_R_CODING,
    HR_HTTP_R_TE_AND_LENGTH,
    HR_HTTP_R_TE_HTTP10,
    HR_HTTP_R_HOST,
    HR_HTTP_R_HOSTS,
    HR_HTTP_R_BODY_LARGE,
    HR_HTTP_R_CHUNK,
    HR_HTTP_R_TIMEOUT,
    HR_HTTP_R_BODY_TIMEOUT,
    HR_HTTP_R_COUNT
};

/** Why hr_http_head_check refused a request head: HTTP status, stable code, message. */
typedef struct {
    int status;
    const char *code;    /* borrowed: static */
    const char *message; /* borrowed: static */
} hr_http_refusal_t;

/** What hr_http_head_check learned from an accepted head. */
typedef struct {
    const char *path; /* borrowed: into the head, up to '?', '#' or the space */
    size_t path_len;
    int has_length; /* a Content-Length was given */
    unsigned long long length;
    int chunked;        /* Transfer-Encoding: chunked */
    int http10;         /* HTTP/1.0 (else 1.1) */
    int conn_close;     /* Connection: close */
    int conn_keepalive; /* Connection: keep-alive */
} hr_http_head_t;

/** One header field of a head: borrowed, value trimmed of surrounding blanks. */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} hr_http_field_t;

/**
 * Checks a complete request head buf[0..len) (request line through the empty
 * line, CRLF line ends). Returns 0 with *out filled, or a refusal index > 0
 * (hr_http_refusal()).
 */
int hr_http_head_check(const char *buf, size_t len, hr_http_head_t *out);
/**
 * hr_http_head_check that also records every header field, in order, into
 * fields (room for HR_HTTP_FIELDS_MAX) and their number into *nfields.
 */
int hr_http_head_parse(const char *buf, size_t len, hr_http_head_t *out, hr_http_field_t *fields,
                       size_t *nfields);
/** Checks just the request line (without its CRLF); 0 or a refusal index. */
int hr_http_line_check(const char *line, size_t len);
/** The refusal behind an index returned above (a static row). */
const hr_http_refusal_t *hr_http_refusal(int idx);

/** Whether c is an RFC 9110 tchar (a header name or method character). */
int hr_http_tchar(unsigned char c);

#endif
