#include "herald/hr_http.h"
#include "herald/hr_http_parse.h"
#include "herald/hr_httpd.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>

const char *
hr_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* ---- the listener and its connections ---- */

struct hr_http_s {
    struct event_base *base;          /* borrowed */
    struct evhttp *http;              /* owned */
    struct evhttp_bound_socket *sock; /* owned by http; NULL once closed */
    struct event *resume;             /* owned: re-enables accept after a pause (1 s, persistent) */
    hr_http_body_rule_t *rules;       /* owned array (paths borrowed) */
    size_t nrules;
    size_t max_body;
    char *cors_origin; /* owned; "" for none */
    int max_connections;
    int header_timeout_ms;
    int conns;
    struct hr_http_conn_s *conn_list; /* borrowed: each owned by its bufferevent */
    int port;
    void (*cb)(struct evhttp_request *, void *);
    void *cbarg; /* borrowed */
};

typedef enum {
    HR_HTTP_C_HEAD,    /* waiting for (the rest of) a request head */
    HR_HTTP_C_BODY,    /* passing body_left bytes of a Content-Length body */
    HR_HTTP_C_CHUNKED, /* decoding a chunked body before evhttp sees the request */
    HR_HTTP_C_REFUSED, /* a refusal was handed to evhttp: the rest is dropped */
} hr_http_cstate_t;

typedef enum {
    HR_HTTP_CH_SIZE,
    HR_HTTP_CH_DATA,
    HR_HTTP_CH_CRLF,
    HR_HTTP_CH_TRAILER
} hr_http_chstate_t;

/* One connection's framing state: the context of its input filter, freed with it. */
typedef struct hr_http_conn_s hr_http_conn_t;
struct hr_http_conn_s {
    hr_http_t *srv;              /* borrowed; NULL once the server is destroyed */
    hr_http_conn_t *prev, *next; /* the server's list of open connections */
    struct bufferevent *bev;     /* borrowed: the filter, which owns this */
    struct event *deadline;      /* owned: the head deadline */
    struct event *flush;         /* owned: pushes evhttp's output through the filter */
    struct event *wr;            /* owned: waits for the socket to take the rest of it */
    hr_http_cstate_t state;
    unsigned long long body_left; /* HR_HTTP_C_BODY */
    size_t limit;                 /* body limit of the current request */
    struct evbuffer *head;        /* owned: HR_HTTP_C_CHUNKED, the head minus Transfer-Encoding */
    struct evbuffer *body;        /* owned: HR_HTTP_C_CHUNKED, the decoded body */
    size_t scan; /* HR_HTTP_C_HEAD: bytes of src already searched for the head's end */
    int line_ok; /* HR_HTTP_C_HEAD: the request line was found and checked */
    hr_http_chstate_t ch;
    size_t ch_left, trailer_len;
};

/* The request a refusal is handed to evhttp as: a target no client can send (not "/…"). */
#define HR_HTTP_REFUSED_PREFIX "herald:refused?"

static size_t
hr_http_body_limit(const hr_http_t *h, const char *path, size_t n)
{
    for (size_t i = 0; i < h->nrules; i++)
        if (strlen(h->rules[i].path) == n && memcmp(h->rules[i].path, path, n) == 0)
            return h->rules[i].max;
    return h->max_body;
}

/*
 * Hands evhttp a request of our own in place of what the client sent, so the
 * refusal is answered and the connection closed by evhttp's usual path
 * (libevent 2.1 has no error callback and no way to end a connection from
 * outside). What the client sends afterwards is dropped.
 */
static void
hr_http_refuse(hr_http_conn_t *c, int idx, struct evbuffer *dst)
{
    hr_log_debug("request_refused", "status=%d code=%s", hr_http_refusal(idx)->status,
                 hr_http_refusal(idx)->code);
    evbuffer_add_printf(dst,
                        "GET " HR_HTTP_REFUSED_PREFIX "%d HTTP/1.1\r\nHost: herald\r\n"
                        "Connection: close\r\n\r\n",
                        idx);
    c->state = HR_HTTP_C_REFUSED;
    event_del(c->deadline);
}

/*
 * Decodes what src holds of a chunked body into c->body. Returns 1 when the
 * last chunk and its trailer (dropped) are in, 0 when more is needed, or a
 * refusal index negated.
 */
static int
hr_http_chunks(hr_http_conn_t *c, struct evbuffer *src)
{
    for (;;) {
        size_t avail = evbuffer_get_length(src);
        if (c->ch == HR_HTTP_CH_DATA) {
            if (avail == 0)
                return 0;
            size_t n = avail < c->ch_left ? avail : c->ch_left;
            evbuffer_remove_buffer(src, c->body, n);
            c->ch_left -= n;
            if (c->ch_left == 0)
                c->ch = HR_HTTP_CH_CRLF;
            continue;
        }
        if (c->ch == HR_HTTP_CH_CRLF) {
            if (avail < 2)
                return 0;
            const char *b = (const char *)evbuffer_pullup(src, 2);
            if (b[0] != '\r' || b[1] != '\n')
                return -HR_HTTP_R_CHUNK;
            evbuffer_drain(src, 2);
            c->ch = HR_HTTP_CH_SIZE;
            continue;
        }
        /* A line: a chunk size, or a trailer field. */
        struct evbuffer_ptr nl = evbuffer_search(src, "\n", 1, NULL);
        if (nl.pos < 0)
            return avail > 1024 ? -HR_HTTP_R_CHUNK : 0;
        size_t n = (size_t)nl.pos + 1;
        if (n > 1024)
            return -HR_HTTP_R_CHUNK;
        const char *line = (const char *)evbuffer_pullup(src, (ev_ssize_t)n);
        if (n < 2 || line[n - 2] != '\r')
            return -HR_HTTP_R_BARE_LF;
        size_t ll = n - 2;
        if (c->ch == HR_HTTP_CH_SIZE) {
            size_t i = 0;
            unsigned long long size = 0;
            while (i < ll && isxdigit((unsigned char)line[i]) && i < 16) {
                char d = line[i++];
                size = size * 16 + (unsigned)(d <= '9' ? d - '0' : (d | 0x20) - 'a' + 10);
            }
            if (i == 0 || (i < ll && isxdigit((unsigned char)line[i])))
                return -HR_HTTP_R_CHUNK;
            while (i < ll && (line[i] == ' ' || line[i] == '\t'))
                i++;
            if (i < ll && line[i] != ';')
                return -HR_HTTP_R_CHUNK;
            for (; i < ll; i++)
                if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
                    return -HR_HTTP_R_CTL;
            evbuffer_drain(src, n);
            if (size > c->limit || evbuffer_get_length(c->body) + size > c->limit)
                return -HR_HTTP_R_BODY_LARGE;
            c->ch_left = (size_t)size;
            c->ch = size == 0 ? HR_HTTP_CH_TRAILER : HR_HTTP_CH_DATA;
            continue;
        }
        /* HR_HTTP_CH_TRAILER: fields until the empty line, checked and dropped. */
        c->trailer_len += n;
        if (c->trailer_len > HR_HTTP_HEAD_MAX)
            return -HR_HTTP_R_HEAD_LARGE;
        if (ll == 0) {
            evbuffer_drain(src, n);
            return 1;
        }
        size_t k = 0;
        while (k < ll && hr_http_tchar((unsigned char)line[k]))
            k++;
        if (k == 0 || k >= ll || line[k] != ':')
            return -HR_HTTP_R_FIELD;
        for (; k < ll; k++)
            if (((unsigned char)line[k] < 0x20 && line[k] != '\t') || line[k] == 0x7f)
                return -HR_HTTP_R_CTL;
        evbuffer_drain(src, n);
    }
}

/*
 * HR_HTTP_C_HEAD: waits for a whole head in src, checks it, and passes it to
 * dst (or, chunked, keeps it until the body is in). Returns 1 when something
 * was passed or refused, 2 when a chunked body follows, 0 when more is needed.
 */
static int
hr_http_take_head(hr_http_conn_t *c, struct evbuffer *src, struct evbuffer *dst)
{
    /* Empty lines before a request line are allowed (RFC 9112 2.2). */
    while (c->scan == 0 && evbuffer_get_length(src) >= 2 &&
           memcmp(evbuffer_pullup(src, 2), "\r\n", 2) == 0)
        evbuffer_drain(src, 2);
    size_t avail = evbuffer_get_length(src);
    if (avail == 0)
        return 0;
    /* A lone CR may start such an empty line: wait for the next byte. */
    int lone_cr = c->scan == 0 && avail == 1 && *evbuffer_pullup(src, 1) == '\r';
    if (!evtimer_pending(c->deadline, NULL)) {
        int ms = c->srv->header_timeout_ms;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        evtimer_add(c->deadline, &tv);
    }
    /*
     * The request line alone tells an HTTP/0.9 or HTTP/2 client, a bad
     * method, a huge URI. Searches resume where the last call stopped
     * (c->scan), so a head sent a byte per packet costs linear time.
     */
    if (lone_cr)
        return 0;
    struct evbuffer_ptr from;
    if (!c->line_ok) {
        evbuffer_ptr_set(src, &from, c->scan, EVBUFFER_PTR_SET);
        struct evbuffer_ptr nl = evbuffer_search(src, "\n", 1, &from);
        if (nl.pos < 0) {
            c->scan = avail;
            if (avail > HR_HTTP_URI_MAX + 64) {
                hr_http_refuse(c, HR_HTTP_R_URI_LONG, dst);
                return 1;
            }
            return 0;
        }
        const char *line = (const char *)evbuffer_pullup(src, nl.pos + 1);
        if (memchr(line, '\0', (size_t)nl.pos) != NULL) {
            hr_http_refuse(c, HR_HTTP_R_CTL, dst);
            return 1;
        }
        if (nl.pos == 0 || line[nl.pos - 1] != '\r') {
            hr_http_refuse(c, HR_HTTP_R_BARE_LF, dst);
            return 1;
        }
        int rc = hr_http_line_check(line, (size_t)nl.pos - 1);
        if (rc != 0) {
            hr_http_refuse(c, rc, dst);
            return 1;
        }
        c->line_ok = 1;
        c->scan = (size_t)nl.pos + 1;
    }
    evbuffer_ptr_set(src, &from, c->scan >= 3 ? c->scan - 3 : 0, EVBUFFER_PTR_SET);
    struct evbuffer_ptr end = evbuffer_search(src, "\r\n\r\n", 4, &from);
    if (end.pos < 0) {
        /* A bare-LF head would never end with CRLFCRLF: refuse it now, not at the deadline. */
        evbuffer_ptr_set(src, &from, c->scan >= 1 ? c->scan - 1 : 0, EVBUFFER_PTR_SET);
        struct evbuffer_ptr lf2 = evbuffer_search(src, "\n\n", 2, &from);
        if (lf2.pos >= 0) {
            hr_http_refuse(c, HR_HTTP_R_BARE_LF, dst);
            return 1;
        }
        c->scan = avail;
        if (avail > HR_HTTP_HEAD_MAX) {
            hr_http_refuse(c, HR_HTTP_R_HEAD_LARGE, dst);
            return 1;
        }
        return 0;
    }
    c->scan = 0;
    c->line_ok = 0;
    size_t hlen = (size_t)end.pos + 4;
    if (hlen > HR_HTTP_HEAD_MAX) {
        hr_http_refuse(c, HR_HTTP_R_HEAD_LARGE, dst);
        return 1;
    }
    const char *head = (const char *)evbuffer_pullup(src, (ev_ssize_t)hlen);
    hr_http_head_t h;
    int rc = memchr(head, '\0', hlen) != NULL ? HR_HTTP_R_CTL : hr_http_head_check(head, hlen, &h);
    if (rc != 0) {
        hr_http_refuse(c, rc, dst);
        return 1;
    }
    c->limit = hr_http_body_limit(c->srv, h.path, h.path_len);
    if (h.has_length && h.length > c->limit) {
        hr_http_refuse(c, HR_HTTP_R_BODY_LARGE, dst);
        return 1;
    }
    event_del(c->deadline);
    if (h.chunked) {
        /* Keep the head without its Transfer-Encoding and final CRLF; the length follows. */
        c->head = evbuffer_new();
        c->body = evbuffer_new();
        c->ch = HR_HTTP_CH_SIZE;
        c->trailer_len = 0;
        const char *p = head, *stop = head + hlen - 2;
        while (p < stop) {
            const char *e = memchr(p, '\r', (size_t)(stop - p)) + 2;
            if (!(strncasecmp(p, "transfer-encoding", 17) == 0 && (p[17] == ':' || p[17] == ' ')))
                evbuffer_add(c->head, p, (size_t)(e - p));
            p = e;
        }
        evbuffer_drain(src, hlen);
        c->state = HR_HTTP_C_CHUNKED;
        return 2;
    }
    evbuffer_remove_buffer(src, dst, hlen);
    if (h.has_length && h.length > 0) {
        c->state = HR_HTTP_C_BODY;
        c->body_left = h.length;
    }
    return 1;
}

/* The input filter of every connection: bytes reach evhttp only once they passed the checks. */
static enum bufferevent_filter_result
hr_http_filter_in(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
                  enum bufferevent_flush_mode mode, void *arg)
{
    HR_UNUSED(limit);
    HR_UNUSED(mode);
    hr_http_conn_t *c = arg;
    int passed = 0;
    for (;;) {
        size_t avail = evbuffer_get_length(src);
        if (c->state == HR_HTTP_C_REFUSED) {
            evbuffer_drain(src, avail);
            break;
        }
        if (avail == 0)
            break;
        if (c->state == HR_HTTP_C_BODY) {
            size_t n = avail < c->body_left ? avail : (size_t)c->body_left;
            evbuffer_remove_buffer(src, dst, n);
            c->body_left -= n;
            passed = 1;
            if (c->body_left == 0)
                c->state = HR_HTTP_C_HEAD;
            continue;
        }
        if (c->state == HR_HTTP_C_CHUNKED) {
            int r = hr_http_chunks(c, src);
            if (r == 0)
                break;
            if (r < 0) {
                hr_http_refuse(c, -r, dst);
            } else {
                evbuffer_add_printf(c->head, "Content-Length: %zu\r\n\r\n",
                                    evbuffer_get_length(c->body));
                evbuffer_add_buffer(dst, c->head);
                evbuffer_add_buffer(dst, c->body);
                c->state = HR_HTTP_C_HEAD;
            }
            evbuffer_free(c->head);
            evbuffer_free(c->body);
            c->head = c->body = NULL;
            passed = 1;
            continue;
        }
        int r = hr_http_take_head(c, src, dst);
        if (r == 0)
            break;
        passed |= r == 1;
    }
    return passed ? BEV_OK : BEV_NEED_MORE;
}

/* The head deadline passed: refuse from outside the filter. */
static void
hr_http_conn_deadline(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_http_conn_t *c = arg;
    bufferevent_data_cb readcb = NULL;
    bufferevent_getcb(c->bev, &readcb, NULL, NULL, NULL);
    /* No read callback: evhttp has freed the connection, its finalization is pending. */
    if (c->state != HR_HTTP_C_HEAD || readcb == NULL)
        return;
    hr_http_refuse(c, HR_HTTP_R_TIMEOUT, bufferevent_get_input(c->bev));
    /* evhttp reads only in its reading states; otherwise it finds the request when it resumes. */
    if (bufferevent_get_enabled(c->bev) & EV_READ)
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

/* Accepting again, unless stopped or at the cap. */
static void
hr_http_accept_on(hr_http_t *h)
{
    if (h->sock != NULL && h->conns < h->max_connections)
        evconnlistener_enable(evhttp_bound_socket_get_listener(h->sock));
}

/*
 * The filter's context is freed when libevent finalizes the bufferevent,
 * which may be a loop turn after evhttp let it go, or during
 * event_base_free after the server is gone: hence the list and the NULL srv.
 */
static void
hr_http_conn_free(void *arg)
{
    hr_http_conn_t *c = arg;
    hr_http_t *h = c->srv;
    if (h != NULL) {
        if (c->prev != NULL)
            c->prev->next = c->next;
        else
            h->conn_list = c->next;
        if (c->next != NULL)
            c->next->prev = c->prev;
        if (h->conns-- >= h->max_connections)
            hr_http_accept_on(h);
    }
    if (c->deadline != NULL)
        event_free(c->deadline);
    if (c->flush != NULL)
        event_free(c->flush);
    if (c->wr != NULL)
        event_free(c->wr);
    if (c->head != NULL)
        evbuffer_free(c->head);
    if (c->body != NULL)
        evbuffer_free(c->body);
    hr_free(c);
}

/*
 * The output side. evhttp counts an answer as sent once it left the filter's
 * output, and on "Connection: close" then shuts the socket down at once: an
 * answer still queued below the filter would be lost. So the output filter
 * writes to the socket itself, and reports the output done only once the
 * kernel has all of it; what does not fit waits for the socket to be
 * writable (c->wr). And evhttp adds its answer before it enables writing,
 * when the filter does not look at its output: c->flush pushes it on the next
 * loop turn.
 */
static void hr_http_flush_cb(evutil_socket_t fd, short what, void *arg);

static enum bufferevent_filter_result
hr_http_filter_out(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
                   enum bufferevent_flush_mode mode, void *arg)
{
    HR_UNUSED(dst);
    HR_UNUSED(limit);
    HR_UNUSED(mode);
    hr_http_conn_t *c = arg;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    while (evbuffer_get_length(src) > 0) {
        int n = evbuffer_write(src, fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            break;
        /* The client is gone: nothing more will reach it; evhttp learns on its next read. */
        evbuffer_drain(src, evbuffer_get_length(src));
        return BEV_OK;
    }
    if (evbuffer_get_length(src) == 0)
        return BEV_OK;
    if (c->wr == NULL)
        c->wr = event_new(bufferevent_get_base(c->bev), fd, EV_WRITE, hr_http_flush_cb, c);
    event_add(c->wr, NULL);
    return BEV_NEED_MORE;
}

static void
hr_http_out_added(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    HR_UNUSED(b);
    hr_http_conn_t *c = arg;
    if (info->n_added > 0 && c->flush != NULL)
        event_active(c->flush, EV_TIMEOUT, 1);
}

static void
hr_http_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_http_conn_t *c = arg;
    bufferevent_data_cb writecb = NULL;
    bufferevent_getcb(c->bev, NULL, &writecb, NULL, NULL);
    /* No write callback: evhttp has freed the connection, its finalization is pending. */
    if (writecb != NULL && evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
        bufferevent_flush(c->bev, EV_WRITE, BEV_NORMAL);
}

/*
 * evhttp's bufferevent for a new connection: a socket under our input
 * filter. At the cap the listener stops: further clients wait in the
 * kernel's backlog, no descriptor is taken, until a connection closes.
 */
static struct bufferevent *
hr_http_conn_new(struct event_base *base, void *arg)
{
    hr_http_t *h = arg;
    struct bufferevent *sock = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (sock == NULL)
        return NULL;
    hr_http_conn_t *c = hr_calloc(1, sizeof(*c));
    c->srv = h;
    c->deadline = evtimer_new(base, hr_http_conn_deadline, c);
    c->flush = event_new(base, -1, 0, hr_http_flush_cb, c);
    c->bev = bufferevent_filter_new(sock, hr_http_filter_in, hr_http_filter_out,
                                    BEV_OPT_CLOSE_ON_FREE, hr_http_conn_free, c);
    if (c->bev == NULL) {
        event_free(c->deadline);
        event_free(c->flush);
        hr_free(c);
        bufferevent_free(sock);
        return NULL;
    }
    evbuffer_add_cb(bufferevent_get_output(c->bev), hr_http_out_added, c);
    c->next = h->conn_list;
    if (c->next != NULL)
        c->next->prev = c;
    h->conn_list = c;
    if (++h->conns >= h->max_connections && h->sock != NULL) {
        evconnlistener_disable(evhttp_bound_socket_get_listener(h->sock));
        hr_log_warn("connection_limit", "conns=%d", h->conns);
    }
    int ms = h->header_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->deadline, &tv);
    return c->bev;
}

/* What hr_http answers itself, then every other request to the service. */
static void
hr_http_dispatch(struct evhttp_request *req, void *arg)
{
    hr_http_t *h = arg;
    const char *uri = evhttp_request_get_uri(req);
    if (strncmp(uri, HR_HTTP_REFUSED_PREFIX, strlen(HR_HTTP_REFUSED_PREFIX)) != 0) {
        h->cb(req, h->cbarg);
        return;
    }
    const hr_http_refusal_t *r = hr_http_refusal(atoi(uri + strlen(HR_HTTP_REFUSED_PREFIX)));
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    if (h->cors_origin[0] != '\0') {
        evhttp_add_header(out, "Access-Control-Allow-Origin", h->cors_origin);
        evhttp_add_header(out, "Access-Control-Expose-Headers", "Retry-After");
    }
    evhttp_add_header(out, "Connection", "close");
    hr_http_send_error(req, r->status, r->code, r->message);
}

/* Once a second: accept again after a pause for want of descriptors. */
static void
hr_http_resume(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_http_accept_on(arg);
}

/*
 * accept() failed. Out of descriptors (or kernel memory) the listening socket
 * stays readable and libevent would retry at once, forever, logging each
 * time: stop accepting until the next tick of the resume timer (1 s); clients
 * wait in the backlog meanwhile. libevent hands this callback evhttp's
 * pointer, not ours, hence the timer rather than a backoff kept here.
 */
static void
hr_http_accept_error(struct evconnlistener *l, void *arg)
{
    HR_UNUSED(arg);
    int e = errno;
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        evconnlistener_disable(l);
        hr_log_warn("accept_paused", "retry_in_ms=1000 error=\"%s\"", strerror(e));
        return;
    }
    hr_log_warn("accept_failed", "error=\"%s\"", strerror(e));
}

/*
 * The listening socket, made here rather than by evhttp_bind_socket so that
 * it can carry SO_REUSEPORT: several processes then share one port and the
 * kernel spreads connections among them. Returns evhttp's handle or NULL
 * with err filled.
 */
static struct evhttp_bound_socket *
hr_http_bind(struct event_base *base, struct evhttp *http, const hr_http_opts_t *o, char *err,
             size_t errlen)
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
        return NULL;
    }
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE;
    if (o->reuseport)
        flags |= LEV_OPT_REUSEABLE_PORT;
    struct evconnlistener *l = NULL;
    int e = 0;
    for (struct addrinfo *a = ai; a != NULL && l == NULL; a = a->ai_next) {
        /* The backlog evhttp_bind_socket uses. */
        l = evconnlistener_new_bind(base, NULL, NULL, flags, 128, a->ai_addr, (int)a->ai_addrlen);
        e = errno;
    }
    freeaddrinfo(ai);
    if (l == NULL) {
        snprintf(err, errlen, "cannot bind %s:%d: %s", o->host, o->port, strerror(e));
        return NULL;
    }
    struct evhttp_bound_socket *sock = evhttp_bind_listener(http, l);
    if (sock == NULL) {
        evconnlistener_free(l);
        snprintf(err, errlen, "cannot listen on %s:%d", o->host, o->port);
    }
    return sock;
}

hr_http_t *
hr_http_create(struct event_base *base, const hr_http_opts_t *o, char *err, size_t errlen)
{
    struct evhttp *http = evhttp_new(base);
    if (http == NULL) {
        snprintf(err, errlen, "evhttp_new failed");
        return NULL;
    }
    /* evhttp's own limits sit above ours: what passes our checks never meets them. */
    size_t max_body = o->max_body;
    for (size_t i = 0; i < o->nrules; i++)
        if (o->rules[i].max > max_body)
            max_body = o->rules[i].max;
    evhttp_set_max_body_size(http, (ev_ssize_t)(max_body * 4));
    evhttp_set_max_headers_size(http, HR_HTTP_HEAD_MAX * 2);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                         EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_HEAD |
                                         EVHTTP_REQ_PATCH);
    evhttp_set_timeout(http, HR_HTTP_IDLE_TIMEOUT_S);
    struct evhttp_bound_socket *sock = hr_http_bind(base, http, o, err, errlen);
    if (sock == NULL) {
        evhttp_free(http);
        return NULL;
    }
    hr_http_t *h = hr_calloc(1, sizeof(*h));
    h->base = base;
    h->http = http;
    h->sock = sock;
    h->max_body = o->max_body;
    h->nrules = o->nrules;
    h->rules = hr_calloc(o->nrules + 1, sizeof(*h->rules));
    if (o->nrules > 0)
        memcpy(h->rules, o->rules, o->nrules * sizeof(*h->rules));
    h->cors_origin = hr_strdup(o->cors_origin != NULL ? o->cors_origin : "");
    h->header_timeout_ms =
        o->header_timeout_ms > 0 ? o->header_timeout_ms : HR_HTTP_HEADER_TIMEOUT_MS;
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
    h->resume = event_new(base, -1, EV_PERSIST, hr_http_resume, h);
    struct timeval second = {1, 0};
    evtimer_add(h->resume, &second);
    evhttp_set_bevcb(http, hr_http_conn_new, h);
    evhttp_set_gencb(http, hr_http_dispatch, h);
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(sock), hr_http_accept_error);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    h->port = o->port;
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            h->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            h->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return h;
}

int
hr_http_port(const hr_http_t *h)
{
    return h->port;
}

int
hr_http_connections(const hr_http_t *h)
{
    return h->conns;
}

void
hr_http_stop_accepting(hr_http_t *h)
{
    if (h->sock == NULL)
        return;
    evhttp_del_accept_socket(h->http, h->sock);
    h->sock = NULL;
}

void
hr_http_destroy(hr_http_t *h)
{
    if (h == NULL)
        return;
    evhttp_free(h->http);
    for (hr_http_conn_t *c = h->conn_list; c != NULL; c = c->next) {
        c->srv = NULL;
        event_free(c->deadline);
        event_free(c->flush);
        if (c->wr != NULL)
            event_free(c->wr);
        c->deadline = c->flush = c->wr = NULL;
    }
    event_free(h->resume);
    hr_free(h->rules);
    hr_free(h->cors_origin);
    hr_free(h);
}
/* Writes v in decimal at p (room for 20 digits); returns the length. */
static size_t
hr_http_utoa(char *p, size_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    p[n] = '\0';
    return n;
}

/*
 * Date and Content-Length are set here, so evhttp does not format them with
 * gmtime and printf for every answer (a fifth of its reply cost).
 */
void
hr_http_send_json(struct evhttp_request *req, int status, const char *json, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char date[HR_TIME_HTTP_LEN], n[24];
    evhttp_add_header(h, "Content-Type", "application/json");
    hr_time_format_http(hr_now_ms() / 1000, date);
    evhttp_add_header(h, "Date", date);
    /* The body and its newline; HEAD gets the length the GET would have, and no body. */
    hr_http_utoa(n, len + 1);
    evhttp_add_header(h, "Content-Length", n);
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
        struct evbuffer *b = evhttp_request_get_output_buffer(req);
        evbuffer_add(b, json, len);
        evbuffer_add(b, "\n", 1);
    }
    evhttp_send_reply(req, status, hr_http_reason(status), NULL);
}

char *
hr_http_error_body(const char *code, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "code", code);
    cJSON_AddStringToObject(e, "message", message);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s; /* cJSON allocates through hr_malloc (hr_json_init): never NULL */
}

void
hr_http_send_error(struct evhttp_request *req, int status, const char *code, const char *message)
{
    char *s = hr_http_error_body(code, message);
    if (status == 503)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    hr_http_send_json(req, status, s, strlen(s));
    cJSON_free(s);
}

int
hr_http_is_json(struct evhttp_request *req)
{
    return hr_http_json_type(
        evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type"));
}

int
hr_http_json_type(const char *ct)
{
    if (ct == NULL)
        return 0;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

const char *
hr_http_body(struct evhttp_request *req, size_t *len)
{
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    *len = evbuffer_get_length(b);
    if (*len == 0)
        return "";
    return (const char *)evbuffer_pullup(b, -1);
}

char *
hr_http_path(struct evhttp_request *req)
{
    size_t n;
    const char *p = hr_http_path_ref(req, &n);
    return hr_strndup(p, n);
}

const char *
hr_http_path_ref(struct evhttp_request *req, size_t *len)
{
    const char *uri = evhttp_request_get_uri(req);
    *len = strcspn(uri, "?#");
    return uri;
}

int
hr_http_path_is(struct evhttp_request *req, const char *path)
{
    size_t n, pl = strlen(path);
    const char *p = hr_http_path_ref(req, &n);
    return n == pl && memcmp(p, path, n) == 0;
}

static void
hr_http_drain_maybe_done(hr_http_drain_t *d)
{
    if (d->draining && d->inflight == 0)
        event_base_loopexit(d->base, NULL);
}

static void
hr_http_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_http_drain_t *d = arg;
    hr_log_warn("drain_timeout", "inflight=%u", d->inflight);
    event_base_loopexit(d->base, NULL);
}

void
hr_http_drain_begin(hr_http_drain_t *d, int drain_ms)
{
    if (d->draining)
        return;
    d->draining = 1;
    hr_log_info("draining", "inflight=%u", d->inflight);
    if (d->http != NULL)
        hr_http_stop_accepting(d->http);
    if (d->httpd != NULL)
        hr_httpd_stop_accepting(d->httpd);
    d->timer = evtimer_new(d->base, hr_http_drain_timeout, d);
    struct timeval tv = {drain_ms / 1000, (drain_ms % 1000) * 1000};
    evtimer_add(d->timer, &tv);
    hr_http_drain_maybe_done(d);
}

void
hr_http_drain_release(hr_http_drain_t *d)
{
    if (d->inflight > 0)
        d->inflight--;
    hr_http_drain_maybe_done(d);
}

void
hr_http_drain_clear(hr_http_drain_t *d)
{
    if (d->timer != NULL)
        event_free(d->timer);
    d->timer = NULL;
}
