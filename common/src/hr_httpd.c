#include "hr_httpd_int.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static int hr_httpd_flush(hr_httpd_conn_t *c);

/* ---- small helpers ---- */

static int
hr_httpd_hexval(char d)
{
    if (d >= '0' && d <= '9')
        return d - '0';
    if ((d | 0x20) >= 'a' && (d | 0x20) <= 'f')
        return (d | 0x20) - 'a' + 10;
    return -1;
}

static size_t
hr_httpd_body_limit(const hr_httpd_t *h, const char *path, size_t n)
{
    for (size_t i = 0; i < h->nrules; i++)
        if (strlen(h->rules[i].path) == n && memcmp(h->rules[i].path, path, n) == 0)
            return h->rules[i].max;
    return h->max_body;
}

static void
hr_httpd_set_deadline(hr_httpd_conn_t *c, hr_httpd_dkind_t kind, int ms)
{
    c->deadline_kind = kind;
    c->deadline_ms = kind == HR_HTTPD_D_NONE ? 0 : hr_mono_ms() + (uint64_t)ms;
}

/* ---- connections ---- */

static void
hr_httpd_accept_on(hr_httpd_t *h)
{
    if (h->lfd >= 0 && !h->listening && h->conns < h->max_connections) {
        event_add(h->lev, NULL);
        h->listening = 1;
    }
}

static void
hr_httpd_accept_off(hr_httpd_t *h)
{
    if (h->listening) {
        event_del(h->lev);
        h->listening = 0;
    }
}

void
hr_httpd_conn_free(hr_httpd_conn_t *c)
{
    hr_httpd_t *h = c->srv;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conn_list = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    event_free(c->rev);
    event_free(c->wev);
    if (c->req.ohdr != c->req.ohdr_inl)
        hr_free(c->req.ohdr);
    hr_free(c->in);
    hr_free(c->out);
    hr_free(c->chunk);
    hr_free(c);
}

/* Closes the socket; the memory stays while a request is with the service (its answer frees it). */
static void
hr_httpd_close_fd(hr_httpd_conn_t *c)
{
    if (c->fd < 0)
        return;
    event_del(c->rev);
    event_del(c->wev);
    c->reading = c->writing = 0;
    close(c->fd);
    c->fd = -1;
    hr_httpd_t *h = c->srv;
    if (h->conns-- >= h->max_connections)
        hr_httpd_accept_on(h);
}

/* The connection ends; c must not be used afterwards. */
static void
hr_httpd_drop(hr_httpd_conn_t *c)
{
    hr_httpd_close_fd(c);
    if (c->state != HR_HTTPD_C_BUSY) {
        hr_httpd_conn_free(c);
        return;
    }
    void (*cb)(hr_httpd_req_t *, void *) = c->req.gone_cb;
    c->req.gone_cb = NULL;
    if (cb != NULL)
        cb(&c->req, c->req.gone_arg); /* may answer: c may be gone afterwards */
}

/*
 * Returns 0, or -1 when the connection ended at once (c is gone then).
 * The last answer is out: shut the socket for writing and read what the
 * client still sends until it closes (or HR_HTTPD_LINGER_MS), so that a
 * reset for unread input never destroys the answer on its way.
 */
static int
hr_httpd_linger(hr_httpd_conn_t *c)
{
    if (c->eof || shutdown(c->fd, SHUT_WR) != 0) {
        hr_httpd_drop(c);
        return -1;
    }
    c->state = HR_HTTPD_C_LINGER;
    c->in_pos = c->in_len = 0;
    if (!c->reading) {
        event_add(c->rev, NULL);
        c->reading = 1;
    }
    hr_httpd_set_deadline(c, HR_HTTPD_D_LINGER, HR_HTTPD_LINGER_MS);
    return 0;
}

/* Sends what waits. Returns 0, or -1 when the connection ended (c is gone then). */
static int
hr_httpd_flush(hr_httpd_conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            c->wdeadline_ms = 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->writing) {
                event_add(c->wev, NULL);
                c->writing = 1;
            }
            if (c->wdeadline_ms == 0)
                c->wdeadline_ms = hr_mono_ms() + (uint64_t)c->srv->idle_timeout_ms;
            return 0;
        }
        /* The client is gone. */
        hr_httpd_drop(c);
        return -1;
    }
    c->out_off = c->out_len = 0;
    c->wdeadline_ms = 0;
    if (c->out_cap > HR_HTTPD_OUT_KEEP) {
        hr_free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (c->writing) {
        event_del(c->wev);
        c->writing = 0;
        /* The answer took a while: the connection is idle from now, not from when it was made. */
        if (c->deadline_kind == HR_HTTPD_D_IDLE)
            hr_httpd_set_deadline(c, HR_HTTPD_D_IDLE, c->srv->idle_timeout_ms);
    }
    if (c->close_after && c->state != HR_HTTPD_C_BUSY && c->state != HR_HTTPD_C_LINGER) {
        return hr_httpd_linger(c);
    }
    return 0;
}

/*
 * Refuses what the client sent (a refusal of hr_http_parse), in JSON, and
 * closes the connection once the answer is out. Returns -1 (stop parsing).
 */
static int
hr_httpd_refuse(hr_httpd_conn_t *c, int idx)
{
    const hr_http_refusal_t *r = hr_http_refusal(idx);
    hr_log_debug("request_refused", "status=%d code=%s", r->status, r->code);
    char extra[256];
    size_t el = 0;
    const char *origin = c->srv->cors_origin;
    if (origin[0] != '\0' && strlen(origin) < 128) {
        el += (size_t)snprintf(extra, sizeof(extra), "Access-Control-Allow-Origin%c%s%c", '\0',
                               origin, '\0');
        memcpy(extra + el, "Access-Control-Expose-Headers\0Retry-After\0", 42);
        el += 42;
    }
    char *body = hr_http_error_body(r->code, r->message);
    c->keep = 0;
    c->close_after = 1;
    c->state = HR_HTTPD_C_HEAD;
    hr_httpd_set_deadline(c, HR_HTTPD_D_NONE, 0);
    c->in_pos = c->in_len = 0;
    hr_httpd_format(c, r->status, "application/json", extra, el, body, strlen(body), 1, 0);
    cJSON_free(body);
    return -1;
}

/*
 * HEAD: waits for a whole head, checks it, and sets up its body. Returns 1
 * when a request without a body is complete, 2 when a body follows, 0 when
 * more input is needed, -1 after a refusal.
 */
static int
hr_httpd_take_head(hr_httpd_conn_t *c)
{
    hr_httpd_t *h = c->srv;
    /* Empty lines before a request line are allowed (RFC 9112 2.2). */
    while (c->scan == 0 && c->in_len - c->in_pos >= 2 && c->in[c->in_pos] == '\r' &&
           c->in[c->in_pos + 1] == '\n')
        c->in_pos += 2;
    size_t avail = c->in_len - c->in_pos;
    if (avail == 0)
        return 0;
    if (c->deadline_kind != HR_HTTPD_D_HEAD)
        hr_httpd_set_deadline(c, HR_HTTPD_D_HEAD, h->header_timeout_ms);
    const char *b = c->in + c->in_pos;
    /* A lone CR may start such an empty line: wait for the next byte. */
    if (c->scan == 0 && avail == 1 && b[0] == '\r')
        return 0;
    /*
     * The request line alone tells an HTTP/0.9 or HTTP/2 client, a bad
     * method, a huge URI. Searches resume where the last one stopped
     * (c->scan), so a head sent a byte per packet costs linear time.
     */
    if (!c->line_ok) {
        const char *nl = memchr(b + c->scan, '\n', avail - c->scan);
        if (nl == NULL) {
            c->scan = avail;
            return avail > HR_HTTP_URI_MAX + 64 ? hr_httpd_refuse(c, HR_HTTP_R_URI_LONG) : 0;
        }
        size_t lp = (size_t)(nl - b);
        if (memchr(b, '\0', lp) != NULL)
            return hr_httpd_refuse(c, HR_HTTP_R_CTL);
        if (lp == 0 || b[lp - 1] != '\r')
            return hr_httpd_refuse(c, HR_HTTP_R_BARE_LF);
        int rc = hr_http_line_check(b, lp - 1);
        if (rc != 0)
            return hr_httpd_refuse(c, rc);
        c->line_ok = 1;
        c->scan = lp + 1;
    }
    /*
     * The head ends at the first LF that closes "\r\n\r\n"; an LF after an
     * LF is a bare-LF head that would never end so. Only LFs from c->scan on
     * are new; the three bytes before one are always in the buffer.
     */
    const char *end = NULL;
    for (const char *q = b + c->scan; (q = memchr(q, '\n', avail - (size_t)(q - b))) != NULL; q++) {
        if (q - b >= 3 && q[-1] == '\r' && q[-2] == '\n' && q[-3] == '\r') {
            end = q - 3;
            break;
        }
        if (q > b && q[-1] == '\n')
            return hr_httpd_refuse(c, HR_HTTP_R_BARE_LF);
    }
    if (end == NULL) {
        c->scan = avail;
        return avail > HR_HTTP_HEAD_MAX ? hr_httpd_refuse(c, HR_HTTP_R_HEAD_LARGE) : 0;
    }
    c->scan = 0;
    c->line_ok = 0;
    size_t hlen = (size_t)(end - b) + 4;
    if (hlen > HR_HTTP_HEAD_MAX)
        return hr_httpd_refuse(c, HR_HTTP_R_HEAD_LARGE);
    hr_http_field_t f[HR_HTTP_FIELDS_MAX];
    size_t nf = 0;
    int rc =
        memchr(b, '\0', hlen) != NULL ? HR_HTTP_R_CTL : hr_http_head_parse(b, hlen, &c->h, f, &nf);
    if (rc != 0)
        return hr_httpd_refuse(c, rc);
    c->limit = hr_httpd_body_limit(h, c->h.path, c->h.path_len);
    if (c->h.has_length && c->h.length > c->limit)
        return hr_httpd_refuse(c, HR_HTTP_R_BODY_LARGE);
    c->head_len = hlen;
    c->keep = !c->h.conn_close && (!c->h.http10 || c->h.conn_keepalive);
    hr_httpd_req_t *r = &c->req;
    r->nfields = nf;
    for (size_t i = 0; i < nf; i++) {
        r->fields[i].name = (uint16_t)(f[i].name - b);
        r->fields[i].value = (uint16_t)(f[i].value - b);
    }
    /* In place: the names' colons, the values' ends, the spaces around the target become NULs. */
    char *w = c->in + c->in_pos;
    for (size_t i = 0; i < nf; i++) {
        w[f[i].name - b + f[i].name_len] = '\0';
        w[f[i].value - b + f[i].value_len] = '\0';
    }
    char *sp1 = memchr(w, ' ', hlen);
    char *sp2 = memchr(sp1 + 1, ' ', hlen - (size_t)(sp1 + 1 - w));
    *sp1 = '\0';
    *sp2 = '\0';
    r->path_len = c->h.path_len;
    static const char *const names[] = {"",    "GET",    "HEAD",    "POST",
                                        "PUT", "DELETE", "OPTIONS", "PATCH"};
    r->method = HR_HTTPD_GET;
    for (size_t i = 1; i < HR_ARRAY_LEN(names); i++)
        if (strcmp(w, names[i]) == 0)
            r->method = (hr_httpd_method_t)i;
    int body = c->h.chunked || (c->h.has_length && c->h.length > 0);
    /* curl and others wait for "100 Continue" before sending a larger body. */
    if (body && !c->h.http10 && c->in_len - c->in_pos == hlen) {
        for (size_t i = 0; i < nf; i++)
            if (f[i].name_len == 6 && strncasecmp(f[i].name, "expect", 6) == 0 &&
                f[i].value_len == 12 && strncasecmp(f[i].value, "100-continue", 12) == 0) {
                hr_httpd_reserve(&c->out, &c->out_cap, c->out_len, 32);
                HR_HTTPD_PUTS(c, "HTTP/1.1 100 Continue\r\n\r\n");
            }
    }
    if (c->h.chunked) {
        c->state = HR_HTTPD_C_CHUNKED;
        c->ch = HR_HTTPD_CH_SIZE;
        c->chunk_len = 0;
        c->trailer_len = 0;
    } else if (body) {
        c->state = HR_HTTPD_C_BODY;
        c->body_len = c->h.length;
    } else {
        c->body_len = 0;
        return 1;
    }
    hr_httpd_set_deadline(c, HR_HTTPD_D_BODY, h->idle_timeout_ms);
    return 2;
}

/*
 * CHUNKED: decodes the chunks that are in (after the head) into c->chunk
 * and removes their raw bytes from the input. Returns 1 when the last chunk
 * and its trailer (checked, dropped) are in, 0 when more is needed, -1
 * after a refusal.
 */
static int
hr_httpd_take_chunks(hr_httpd_conn_t *c)
{
    char *raw = c->in + c->in_pos + c->head_len;
    size_t rlen = c->in_len - c->in_pos - c->head_len, used = 0;
    int rc = 0;
    while (rc == 0) {
        const char *p = raw + used;
        size_t avail = rlen - used;
        if (c->ch == HR_HTTPD_CH_DATA) {
            if (avail == 0)
                break;
            size_t n = avail < c->ch_left ? avail : c->ch_left;
            hr_httpd_reserve(&c->chunk, &c->chunk_cap, c->chunk_len, n);
            memcpy(c->chunk + c->chunk_len, p, n);
            c->chunk_len += n;
            used += n;
            c->ch_left -= n;
            if (c->ch_left == 0)
                c->ch = HR_HTTPD_CH_CRLF;
            continue;
        }
        if (c->ch == HR_HTTPD_CH_CRLF) {
            if (avail < 2)
                break;
            if (p[0] != '\r' || p[1] != '\n')
                return hr_httpd_refuse(c, HR_HTTP_R_CHUNK);
            used += 2;
            c->ch = HR_HTTPD_CH_SIZE;
            continue;
        }
        /* A line: a chunk size, or a trailer field. */
        const char *nl = memchr(p, '\n', avail);
        if (nl == NULL) {
            if (avail > HR_HTTPD_CHUNK_LINE)
                return hr_httpd_refuse(c, HR_HTTP_R_CHUNK);
            break;
        }
        size_t n = (size_t)(nl - p) + 1;
        if (n > HR_HTTPD_CHUNK_LINE)
            return hr_httpd_refuse(c, HR_HTTP_R_CHUNK);
        if (n < 2 || p[n - 2] != '\r')
            return hr_httpd_refuse(c, HR_HTTP_R_BARE_LF);
        size_t ll = n - 2;
        if (c->ch == HR_HTTPD_CH_SIZE) {
            size_t i = 0;
            unsigned long long size = 0;
            while (i < ll && i < 16 && hr_httpd_hexval(p[i]) >= 0)
                size = size * 16 + (unsigned)hr_httpd_hexval(p[i++]);
            if (i == 0 || (i < ll && hr_httpd_hexval(p[i]) >= 0))
                return hr_httpd_refuse(c, HR_HTTP_R_CHUNK);
            while (i < ll && (p[i] == ' ' || p[i] == '\t'))
                i++;
            if (i < ll && p[i] != ';')
                return hr_httpd_refuse(c, HR_HTTP_R_CHUNK);
            for (; i < ll; i++)
                if ((unsigned char)p[i] < 0x20 && p[i] != '\t')
                    return hr_httpd_refuse(c, HR_HTTP_R_CTL);
            if (size > c->limit || c->chunk_len + size > c->limit)
                return hr_httpd_refuse(c, HR_HTTP_R_BODY_LARGE);
            used += n;
            c->ch_left = (size_t)size;
            c->ch = size == 0 ? HR_HTTPD_CH_TRAILER : HR_HTTPD_CH_DATA;
            continue;
        }
        /* HR_HTTPD_CH_TRAILER: fields until the empty line, checked and dropped. */
        c->trailer_len += n;
        if (c->trailer_len > HR_HTTP_HEAD_MAX)
            return hr_httpd_refuse(c, HR_HTTP_R_HEAD_LARGE);
        used += n;
        if (ll == 0) {
            rc = 1;
            break;
        }
        size_t k = 0;
        while (k < ll && hr_http_tchar((unsigned char)p[k]))
            k++;
        if (k == 0 || k >= ll || p[k] != ':')
            return hr_httpd_refuse(c, HR_HTTP_R_FIELD);
        for (; k < ll; k++)
            if (((unsigned char)p[k] < 0x20 && p[k] != '\t') || p[k] == 0x7f)
                return hr_httpd_refuse(c, HR_HTTP_R_CTL);
    }
    /* The decoded bytes leave the input: it holds the head and what is not decoded yet. */
    memmove(raw, raw + used, rlen - used);
    c->in_len -= used;
    return rc;
}

/* Hands the complete request to the service. */
static void
hr_httpd_dispatch(hr_httpd_conn_t *c)
{
    hr_httpd_req_t *r = &c->req;
    r->conn = c;
    r->head = c->in + c->in_pos;
    if (c->state == HR_HTTPD_C_CHUNKED) {
        r->body = c->chunk != NULL ? c->chunk : "";
        r->body_len = c->chunk_len;
    } else {
        r->body = c->body_len > 0 ? r->head + c->head_len : "";
        r->body_len = (size_t)c->body_len;
    }
    r->ohdr = r->ohdr_inl;
    r->ohdr_cap = sizeof(r->ohdr_inl);
    r->ohdr_len = 0;
    r->gone_cb = NULL;
    c->state = HR_HTTPD_C_BUSY;
    hr_httpd_set_deadline(c, HR_HTTPD_D_NONE, 0);
    c->srv->cb(r, c->srv->cbarg);
}

/*
 * Parses and dispatches what the input holds, one request at a time, then
 * sends the answers given meanwhile in one send(). Returns 0, or -1 when
 * the connection ended (c is gone then).
 */
int
hr_httpd_process(hr_httpd_conn_t *c)
{
again:
    c->in_process = 1;
    /*
     * While answers wait for a client that does not read them, further
     * pipelined requests wait in the input (which stops being read once
     * full): answers must not pile up in memory without bound.
     */
    while (c->state != HR_HTTPD_C_BUSY && c->state != HR_HTTPD_C_LINGER && !c->close_after &&
           c->out_len - c->out_off < HR_HTTPD_OUT_KEEP) {
        int r;
        if (c->state == HR_HTTPD_C_HEAD)
            r = hr_httpd_take_head(c);
        else if (c->state == HR_HTTPD_C_BODY)
            r = c->in_len - c->in_pos - c->head_len >= c->body_len;
        else
            r = hr_httpd_take_chunks(c);
        if (r == 2)
            continue;
        if (r != 1)
            break;
        hr_httpd_dispatch(c);
    }
    c->in_process = 0;
    int held = c->out_len - c->out_off >= HR_HTTPD_OUT_KEEP; /* requests wait behind answers */
    /* The client sent all it will: what is answered goes out, then the connection closes. */
    if (c->eof && c->state != HR_HTTPD_C_BUSY && !held)
        c->close_after = 1;
    if (c->state == HR_HTTPD_C_HEAD && c->in_len == c->in_pos) {
        c->in_pos = c->in_len = 0;
        if (c->deadline_kind != HR_HTTPD_D_IDLE)
            hr_httpd_set_deadline(c, HR_HTTPD_D_IDLE, c->srv->idle_timeout_ms);
    }
    if (c->out_len > c->out_off) {
        if (hr_httpd_flush(c) != 0) /* and closes, with close_after, once it is out */
            return -1;
        if (c->out_len == 0 && c->state == HR_HTTPD_C_HEAD && !c->close_after &&
            (c->in_len > c->in_pos || c->eof))
            goto again; /* all sent at once: requests held back behind it go on */
        return 0;
    }
    if (c->close_after && c->state != HR_HTTPD_C_BUSY && c->state != HR_HTTPD_C_LINGER) {
        return hr_httpd_linger(c);
    }
    return 0;
}

/* Room for the next read: the unconsumed input moved to the front, the buffer grown as needed. */
static int
hr_httpd_make_room(hr_httpd_conn_t *c)
{
    if (c->state == HR_HTTPD_C_BUSY)
        return c->in_cap > c->in_len; /* the request points into the buffer: no move */
    if (c->in_pos > 0) {
        memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
        c->in_len -= c->in_pos;
        c->in_pos = 0;
    }
    size_t want = c->in_len + HR_HTTPD_READ_MIN;
    if (c->state == HR_HTTPD_C_BODY && c->head_len + c->body_len + HR_HTTPD_READ_MIN > want)
        want = c->head_len + (size_t)c->body_len + HR_HTTPD_READ_MIN;
    if (want > c->srv->max_in)
        want = c->srv->max_in;
    if (c->in_cap < want) {
        size_t n = c->in_cap > 0 ? c->in_cap : HR_HTTPD_IN_INIT;
        while (n < want)
            n *= 2;
        c->in = hr_realloc(c->in, n);
        c->in_cap = n;
    }
    return c->in_cap > c->in_len;
}

static void
hr_httpd_read_cb(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(what);
    hr_httpd_conn_t *c = arg;
    if (c->state == HR_HTTPD_C_LINGER) {
        char sink[4096];
        ssize_t n = recv(fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            hr_httpd_drop(c);
        return;
    }
    if (!hr_httpd_make_room(c)) {
        /*
         * Busy, or answers waiting for the client, with a full buffer of
         * pipelined input: read again once it is answered (or they are out).
         */
        event_del(c->rev);
        c->reading = 0;
        return;
    }
    ssize_t n = recv(fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        hr_httpd_drop(c); /* reset: the client is gone */
        return;
    }
    if (n == 0) {
        c->eof = 1;
        event_del(c->rev);
        c->reading = 0;
    } else {
        c->in_len += (size_t)n;
        if (c->state == HR_HTTPD_C_BODY || c->state == HR_HTTPD_C_CHUNKED)
            hr_httpd_set_deadline(c, HR_HTTPD_D_BODY, c->srv->idle_timeout_ms);
    }
    if (c->state != HR_HTTPD_C_BUSY)
        hr_httpd_process(c);
}

static void
hr_httpd_write_cb(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_httpd_conn_t *c = arg;
    if (hr_httpd_flush(c) != 0 || c->out_len > 0 || c->state != HR_HTTPD_C_HEAD || c->close_after)
        return;
    /* The answers are out: pipelined requests held back behind them go on (hr_httpd_process). */
    if (c->in_len > c->in_pos || c->eof) {
        if (!c->reading && !c->eof) {
            event_add(c->rev, NULL);
            c->reading = 1;
        }
        hr_httpd_process(c);
    }
}

static void
hr_httpd_conn_new(hr_httpd_t *h, int fd)
{
    int one = 1;
    /* An answer is one send(): nothing is gained by waiting for more to coalesce. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    hr_httpd_conn_t *c = hr_calloc(1, sizeof(*c));
    c->srv = h;
    c->fd = fd;
    c->rev = event_new(h->base, fd, EV_READ | EV_PERSIST, hr_httpd_read_cb, c);
    c->wev = event_new(h->base, fd, EV_WRITE | EV_PERSIST, hr_httpd_write_cb, c);
    if (c->rev == NULL || c->wev == NULL)
        abort(); /* event_new fails only without memory */
    c->next = h->conn_list;
    if (c->next != NULL)
        c->next->prev = c;
    h->conn_list = c;
    h->conns++;
    event_add(c->rev, NULL);
    c->reading = 1;
    /* A client that connects and says nothing meets the head deadline. */
    hr_httpd_set_deadline(c, HR_HTTPD_D_HEAD, h->header_timeout_ms);
}

/*
 * The listener is readable. Out of descriptors (or kernel memory) it would
 * stay readable and a retry at once would spin: accepting pauses until the
 * next tick of the resume timer (1 s), clients wait in the backlog. At the
 * connection cap it pauses until a connection closes.
 */
static void
hr_httpd_accept_cb(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(what);
    hr_httpd_t *h = arg;
    for (int i = 0; i < HR_HTTPD_ACCEPTS && h->listening; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK)
                return;
            if (e == EINTR || e == ECONNABORTED)
                continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                hr_httpd_accept_off(h);
                hr_log_warn("accept_paused", "retry_in_ms=1000 error=\"%s\"", strerror(e));
                return;
            }
            hr_log_warn("accept_failed", "error=\"%s\"", strerror(e));
            return;
        }
        hr_httpd_conn_new(h, cfd);
        if (h->conns >= h->max_connections) {
            hr_httpd_accept_off(h);
            hr_log_warn("connection_limit", "conns=%d", h->conns);
        }
    }
}

static void
hr_httpd_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_httpd_accept_on(arg);
}

/* Deadlines: a head that does not arrive, a body or an answer that stalls, an idle connection. */
static void
hr_httpd_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_httpd_t *h = arg;
    uint64_t now = hr_mono_ms();
    hr_httpd_conn_t *next;
    for (hr_httpd_conn_t *c = h->conn_list; c != NULL; c = next) {
        next = c->next;
        if (c->fd < 0)
            continue;
        if (c->wdeadline_ms != 0 && now >= c->wdeadline_ms) {
            hr_httpd_drop(c); /* the client reads nothing of its answer */
            continue;
        }
        if (c->deadline_ms == 0 || now < c->deadline_ms)
            continue;
        /* Not idle while an answer is on its way: the write deadline watches its progress. */
        if (c->deadline_kind == HR_HTTPD_D_IDLE && c->out_len > c->out_off)
            continue;
        switch (c->deadline_kind) {
        case HR_HTTPD_D_HEAD:
        case HR_HTTPD_D_BODY:
            hr_httpd_refuse(c, c->deadline_kind == HR_HTTPD_D_HEAD ? HR_HTTP_R_TIMEOUT
                                                                   : HR_HTTP_R_BODY_TIMEOUT);
            hr_httpd_flush(c);
            break;
        default:
            hr_httpd_drop(c);
            break;
        }
    }
}

/* ---- the server ---- */

static int
hr_httpd_bind(const hr_httpd_opts_t *o, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", o->port);
    int rc = getaddrinfo(o->host, port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", o->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *a = ai; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if ((o->reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
            bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 511) != 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        snprintf(err, errlen, "cannot bind %s:%d: %s", o->host, o->port, strerror(e));
    return fd;
}

hr_httpd_t *
hr_httpd_create(struct event_base *base, const hr_httpd_opts_t *o, char *err, size_t errlen)
{
    int fd = hr_httpd_bind(o, err, errlen);
    if (fd < 0)
        return NULL;
    hr_httpd_t *h = hr_calloc(1, sizeof(*h));
    h->base = base;
    h->lfd = fd;
    h->max_body = o->max_body;
    size_t max_body = o->max_body;
    for (size_t i = 0; i < o->nrules; i++)
        if (o->rules[i].max > max_body)
            max_body = o->rules[i].max;
    h->max_in = HR_HTTP_HEAD_MAX + max_body + HR_HTTPD_CHUNK_LINE + HR_HTTPD_READ_MIN;
    h->nrules = o->nrules;
    h->rules = hr_calloc(o->nrules + 1, sizeof(*h->rules));
    if (o->nrules > 0)
        memcpy(h->rules, o->rules, o->nrules * sizeof(*h->rules));
    h->cors_origin = hr_strdup(o->cors_origin != NULL ? o->cors_origin : "");
    h->header_timeout_ms =
        o->header_timeout_ms > 0 ? o->header_timeout_ms : HR_HTTP_HEADER_TIMEOUT_MS;
    h->idle_timeout_ms =
        o->idle_timeout_ms > 0 ? o->idle_timeout_ms : HR_HTTP_IDLE_TIMEOUT_S * 1000;
    h->max_connections = o->max_connections;
    if (h->max_connections <= 0) {
        /* Leave a quarter of the descriptors (at most 256) to backends, logs and the listener. */
        struct rlimit rl;
        long lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                       ? (long)rl.rlim_cur
                       : 1024;
        long reserve = lim / 4 < 256 ? lim / 4 : 256;
        h->max_connections = (int)(lim - reserve > 1 ? lim - reserve : 1);
    }
    h->cb = o->cb;
    h->cbarg = o->cbarg;
    h->lev = event_new(base, fd, EV_READ | EV_PERSIST, hr_httpd_accept_cb, h);
    h->resume = event_new(base, -1, EV_PERSIST, hr_httpd_resume_cb, h);
    h->sweep = event_new(base, -1, EV_PERSIST, hr_httpd_sweep_cb, h);
    if (h->lev == NULL || h->resume == NULL || h->sweep == NULL)
        abort(); /* event_new fails only without memory */
    struct timeval second = {1, 0}, sweep = {0, HR_HTTPD_SWEEP_MS * 1000};
    evtimer_add(h->resume, &second);
    evtimer_add(h->sweep, &sweep);
    hr_httpd_accept_on(h);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    h->port = o->port;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            h->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            h->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return h;
}

int
hr_httpd_port(const hr_httpd_t *h)
{
    return h->port;
}

int
hr_httpd_connections(const hr_httpd_t *h)
{
    return h->conns;
}

void
hr_httpd_stop_accepting(hr_httpd_t *h)
{
    if (h->lfd < 0)
        return;
    hr_httpd_accept_off(h);
    close(h->lfd);
    h->lfd = -1;
}

void
hr_httpd_destroy(hr_httpd_t *h)
{
    if (h == NULL)
        return;
    hr_httpd_stop_accepting(h);
    while (h->conn_list != NULL) {
        hr_httpd_conn_t *c = h->conn_list;
        hr_httpd_close_fd(c);
        hr_httpd_conn_free(c);
    }
    event_free(h->lev);
    event_free(h->resume);
    event_free(h->sweep);
    hr_free(h->rules);
    hr_free(h->cors_origin);
    hr_free(h);
}
