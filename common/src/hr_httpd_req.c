/* hr_httpd: what the service sees of a request, and its answer (hr_httpd_int.h). */
#include "hr_httpd_int.h"
#include "herald/hr_core.h"

#include <cjson/cJSON.h>
#include <strings.h>

/* ---- small helpers ---- */

static size_t
hr_httpd_utoa(char *p, unsigned long long v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

static const char *
hr_httpd_date(hr_httpd_t *h)
{
    uint64_t s = hr_now_ms() / 1000;
    if (s != h->date_s) {
        hr_time_format_http(s, h->date);
        h->date_s = s;
    }
    return h->date;
}

void
hr_httpd_format(hr_httpd_conn_t *c, int status, const char *ctype, const char *extra,
                size_t extra_len, const char *body, size_t len, int nl, int head_only)
{
    const char *reason = hr_http_reason(status);
    size_t need = 160 + strlen(reason) + (ctype != NULL ? strlen(ctype) : 0) + extra_len * 2 +
                  (head_only ? 0 : len + 1);
    hr_httpd_reserve(&c->out, &c->out_cap, c->out_len, need);
    char num[24];
    HR_HTTPD_PUTS(c, "HTTP/1.1 ");
    hr_httpd_put(c, num, hr_httpd_utoa(num, (unsigned)status));
    HR_HTTPD_PUTS(c, " ");
    hr_httpd_put(c, reason, strlen(reason));
    HR_HTTPD_PUTS(c, "\r\nDate: ");
    hr_httpd_put(c, hr_httpd_date(c->srv), HR_TIME_HTTP_LEN - 1);
    if (ctype != NULL) {
        HR_HTTPD_PUTS(c, "\r\nContent-Type: ");
        hr_httpd_put(c, ctype, strlen(ctype));
    }
    /* 204 and 304 have no body and no length (RFC 9110 8.6; evhttp sent none either). */
    int bodiless = status == 204 || status == 304;
    if (!bodiless) {
        HR_HTTPD_PUTS(c, "\r\nContent-Length: ");
        hr_httpd_put(c, num, hr_httpd_utoa(num, len + (nl ? 1 : 0)));
    }
    if (!c->keep)
        HR_HTTPD_PUTS(c, "\r\nConnection: close");
    else if (c->h.http10)
        HR_HTTPD_PUTS(c, "\r\nConnection: keep-alive");
    for (size_t i = 0; i < extra_len;) {
        size_t nl = strlen(extra + i);
        size_t vl = strlen(extra + i + nl + 1);
        HR_HTTPD_PUTS(c, "\r\n");
        hr_httpd_put(c, extra + i, nl);
        HR_HTTPD_PUTS(c, ": ");
        hr_httpd_put(c, extra + i + nl + 1, vl);
        i += nl + vl + 2;
    }
    HR_HTTPD_PUTS(c, "\r\n\r\n");
    if (!head_only && !bodiless) {
        hr_httpd_put(c, body, len);
        if (nl)
            HR_HTTPD_PUTS(c, "\n");
    }
}

/* ---- requests ---- */

hr_httpd_method_t
hr_httpd_method(const hr_httpd_req_t *r)
{
    return r->method;
}

const char *
hr_httpd_method_name(const hr_httpd_req_t *r)
{
    return r->head; /* the method, NUL-terminated in place */
}

const char *
hr_httpd_uri(const hr_httpd_req_t *r)
{
    return r->head + strlen(r->head) + 1;
}

const char *
hr_httpd_path(const hr_httpd_req_t *r, size_t *len)
{
    *len = r->path_len;
    return hr_httpd_uri(r);
}

int
hr_httpd_path_is(const hr_httpd_req_t *r, const char *path)
{
    size_t n = strlen(path);
    return r->path_len == n && memcmp(hr_httpd_uri(r), path, n) == 0;
}

const char *
hr_httpd_header(const hr_httpd_req_t *r, const char *name)
{
    for (size_t i = 0; i < r->nfields; i++)
        if (strcasecmp(r->head + r->fields[i].name, name) == 0)
            return r->head + r->fields[i].value;
    return NULL;
}

size_t
hr_httpd_nheaders(const hr_httpd_req_t *r)
{
    return r->nfields;
}

void
hr_httpd_header_at(const hr_httpd_req_t *r, size_t i, const char **name, const char **value)
{
    *name = r->head + r->fields[i].name;
    *value = r->head + r->fields[i].value;
}

const char *
hr_httpd_body(const hr_httpd_req_t *r, size_t *len)
{
    *len = r->body_len;
    return r->body;
}

int
hr_httpd_gone(const hr_httpd_req_t *r)
{
    return r->conn->fd < 0;
}

void
hr_httpd_on_gone(hr_httpd_req_t *r, void (*cb)(hr_httpd_req_t *r, void *arg), void *arg)
{
    r->gone_cb = cb;
    r->gone_arg = arg;
}

void
hr_httpd_add_header(hr_httpd_req_t *r, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value), need = nl + vl + 2;
    if (r->ohdr_cap - r->ohdr_len < need) {
        size_t cap = r->ohdr_cap * 2;
        while (cap - r->ohdr_len < need)
            cap *= 2;
        char *p = hr_malloc(cap);
        memcpy(p, r->ohdr, r->ohdr_len);
        if (r->ohdr != r->ohdr_inl)
            hr_free(r->ohdr);
        r->ohdr = p;
        r->ohdr_cap = cap;
    }
    memcpy(r->ohdr + r->ohdr_len, name, nl + 1);
    memcpy(r->ohdr + r->ohdr_len + nl + 1, value, vl + 1);
    r->ohdr_len += need;
}

const char *
hr_httpd_out_header(const hr_httpd_req_t *r, const char *name)
{
    for (size_t i = 0; i < r->ohdr_len;) {
        const char *n = r->ohdr + i, *v = n + strlen(n) + 1;
        if (strcasecmp(n, name) == 0)
            return v;
        i += (size_t)(v - n) + strlen(v) + 1;
    }
    return NULL;
}

/* Answers r: its head, and unless HEAD its body (plus a newline with nl). */
static void
hr_httpd_answer(hr_httpd_req_t *r, int status, const char *ctype, const char *body, size_t len,
                int nl)
{
    hr_httpd_conn_t *c = r->conn;
    r->gone_cb = NULL;
    if (c->fd < 0) {
        /* The client went while the service worked: the connection was kept for this. */
        hr_httpd_conn_free(c);
        return;
    }
    hr_httpd_format(c, status, ctype, r->ohdr, r->ohdr_len, body, len, nl,
                    r->method == HR_HTTPD_HEAD);
    if (r->ohdr != r->ohdr_inl)
        hr_free(r->ohdr);
    r->ohdr = r->ohdr_inl;
    r->ohdr_len = 0;
    /* The request's bytes leave the input (a chunked body's raw bytes left while decoding). */
    c->in_pos += c->head_len + (c->h.chunked ? 0 : (size_t)c->body_len);
    c->chunk_len = 0;
    c->state = HR_HTTPD_C_HEAD;
    if (!c->keep)
        c->close_after = 1;
    if (c->in_process)
        return; /* hr_httpd_process sends it, with the answers of further pipelined requests */
    if (!c->reading && !c->eof && !c->close_after) {
        event_add(c->rev, NULL);
        c->reading = 1;
    }
    hr_httpd_process(c);
}

void
hr_httpd_send(hr_httpd_req_t *r, int status, const char *ctype, const char *body, size_t len)
{
    hr_httpd_answer(r, status, ctype, body, len, 0);
}

void
hr_httpd_send_json(hr_httpd_req_t *r, int status, const char *json, size_t len)
{
    hr_httpd_answer(r, status, "application/json", json, len, 1);
}

void
hr_httpd_send_error(hr_httpd_req_t *r, int status, const char *code, const char *message)
{
    char *s = hr_http_error_body(code, message);
    if (status == 503)
        hr_httpd_add_header(r, "Retry-After", "1");
    hr_httpd_send_json(r, status, s, strlen(s));
    cJSON_free(s);
}
