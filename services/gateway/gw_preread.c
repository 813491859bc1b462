#include "gw_preread.h"
#include "gw_auth.h"
#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <errno.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define GW_PREREAD_SWEEP_MS 1000
#define GW_PREREAD_FIRST 2048 /* first buffer for a head */

typedef struct gw_pending_s gw_pending_t;
struct gw_pending_s {
    uv_poll_t poll;  /* first: the handle's memory is the struct's */
    gw_preread_t *p; /* borrowed */
    int fd;          /* owned until handed over; -1 after */
    char *buf;       /* owned: grows up to p->max_head */
    size_t len, cap;
    uint64_t start_ms;
    gw_pending_t *prev, *next; /* borrowed: p's list */
};

struct gw_preread_s {
    uv_loop_t *loop;   /* borrowed */
    uv_timer_t *sweep; /* owned (closed through uv) */
    size_t max_head;
    int timeout_ms;
    gw_preread_fn done;
    void *ud; /* borrowed */
    gw_pending_t *head;
    size_t pending;
};

/* ---- the rewrite (pure) ---- */

typedef struct {
    char *out;
    size_t cap, len;
    int overflow;
} gw_out_t;

static void
gw_put(gw_out_t *o, const char *s, size_t n)
{
    if (o->overflow || o->len + n > o->cap) {
        o->overflow = 1;
        return;
    }
    memcpy(o->out + o->len, s, n);
    o->len += n;
}

static int
gw_name_is(const char *p, size_t n, const char *name)
{
    return n == strlen(name) && strncasecmp(p, name, n) == 0;
}

size_t
gw_preread_rewrite(const char *in, size_t hl, char *out, size_t cap)
{
    static const char proto[] = "Sec-WebSocket-Protocol";
    const size_t hname = strlen(GW_AUTH_TOKEN_HEADER) - 1; /* without the ':' */
    const size_t tp = strlen(HR_WS_TOKEN_SUBPROTOCOL);
    const char *end = in + hl, *p = memmem(in, hl, "\r\n", 2);
    if (p == NULL)
        return 0;
    gw_out_t o = {out, cap, 0, 0};
    const char *tok = NULL;
    size_t toklen = 0;
    int changed = 0;
    gw_put(&o, in, (size_t)(p - in) + 2); /* the request line */
    for (p += 2; p < end;) {
        const char *le = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (le == NULL || le == p)
            break; /* the blank line: end of the head */
        size_t ll = (size_t)(le - p);
        const char *colon = memchr(p, ':', ll);
        size_t nl = colon != NULL ? (size_t)(colon - p) : ll;
        if (colon != NULL && gw_name_is(p, nl, proto)) {
            size_t mark = o.len;
            int kept = 0;
            gw_put(&o, proto, sizeof(proto) - 1);
            gw_put(&o, ": ", 2);
            for (const char *v = colon + 1; v < le;) {
                const char *c = memchr(v, ',', (size_t)(le - v));
                if (c == NULL)
                    c = le;
                const char *e = v, *ee = c;
                while (e < ee && (*e == ' ' || *e == '\t'))
                    e++;
                while (ee > e && (ee[-1] == ' ' || ee[-1] == '\t'))
                    ee--;
                size_t el = (size_t)(ee - e);
                if (el >= tp && memcmp(e, HR_WS_TOKEN_SUBPROTOCOL, tp) == 0) {
                    if (tok == NULL) {
                        tok = e + tp;
                        toklen = el - tp;
                    }
                    changed = 1;
                } else if (el > 0) {
                    if (kept++ > 0)
                        gw_put(&o, ", ", 2);
                    gw_put(&o, e, el);
                }
                v = c + 1;
            }
            if (kept == 0)
                o.len = mark; /* only a token was offered: no protocol left to name */
            else
                gw_put(&o, "\r\n", 2);
        } else if (colon != NULL && nl == hname && strncasecmp(p, GW_AUTH_TOKEN_HEADER, nl) == 0) {
            changed = 1; /* only the rewrite may set it */
        } else {
            gw_put(&o, p, ll + 2);
        }
        p = le + 2;
    }
    if (!changed)
        return 0;
    if (tok != NULL) {
        gw_put(&o, GW_AUTH_TOKEN_HEADER, hname + 1);
        gw_put(&o, " ", 1);
        gw_put(&o, tok, toklen);
        gw_put(&o, "\r\n", 2);
    }
    gw_put(&o, "\r\n", 2);
    return o.overflow ? 0 : o.len;
}

/* ---- reading the head ---- */

static void
gw_pending_closed(uv_handle_t *h)
{
    gw_pending_t *c = (gw_pending_t *)h;
    hr_free(c->buf);
    hr_free(c);
}

/* Unlinks c and closes its poll handle (before lws watches the same fd). */
static void
gw_pending_end(gw_pending_t *c)
{
    gw_preread_t *p = c->p;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        p->head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    p->pending--;
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, gw_pending_closed);
}

static void
gw_pending_drop(gw_pending_t *c)
{
    close(c->fd);
    c->fd = -1;
    gw_pending_end(c);
}

/* The head is complete (or as long as allowed): rewrite it and hand the socket over. */
static void
gw_pending_hand_over(gw_pending_t *c, size_t head_len)
{
    gw_preread_t *p = c->p;
    int fd = c->fd;
    c->fd = -1;
    gw_pending_end(c);
    char *rw = NULL;
    size_t n = 0;
    if (head_len > 0) {
        size_t cap = head_len + 64 + strlen(GW_AUTH_TOKEN_HEADER);
        rw = hr_malloc(cap + (c->len - head_len));
        n = gw_preread_rewrite(c->buf, head_len, rw, cap);
        if (n > 0) {
            memcpy(rw + n, c->buf + head_len, c->len - head_len);
            n += c->len - head_len;
        }
    }
    if (n > 0)
        p->done(p->ud, fd, rw, n);
    else
        p->done(p->ud, fd, c->buf, c->len);
    hr_free(rw);
}

static void
gw_pending_readable(uv_poll_t *h, int status, int events)
{
    HR_UNUSED(events);
    gw_pending_t *c = (gw_pending_t *)h;
    if (status != 0) {
        gw_pending_drop(c);
        return;
    }
    for (;;) {
        if (c->len == c->cap && c->cap < c->p->max_head) {
            c->cap = c->cap * 2 < c->p->max_head ? c->cap * 2 : c->p->max_head;
            c->buf = hr_realloc(c->buf, c->cap);
        }
        if (c->len == c->cap) {
            gw_pending_hand_over(c, 0); /* too long: lws refuses it */
            return;
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            gw_pending_drop(c);
            return;
        }
        /* The blank line may straddle the previous read. */
        size_t from = c->len > 3 ? c->len - 3 : 0;
        c->len += (size_t)n;
        const char *e = memmem(c->buf + from, c->len - from, "\r\n\r\n", 4);
        if (e != NULL) {
            gw_pending_hand_over(c, (size_t)(e - c->buf) + 4);
            return;
        }
    }
}

static void
gw_preread_sweep(uv_timer_t *t)
{
    gw_preread_t *p = t->data;
    uint64_t now = hr_mono_ms();
    for (gw_pending_t *c = p->head, *next; c != NULL; c = next) {
        next = c->next;
        if (now - c->start_ms >= (uint64_t)p->timeout_ms)
            gw_pending_drop(c);
    }
}

gw_preread_t *
gw_preread_create(uv_loop_t *loop, size_t max_head, int timeout_ms, gw_preread_fn done, void *ud)
{
    gw_preread_t *p = hr_calloc(1, sizeof(*p));
    p->loop = loop;
    p->max_head = max_head;
    p->timeout_ms = timeout_ms;
    p->done = done;
    p->ud = ud;
    p->sweep = hr_malloc(sizeof(uv_timer_t));
    uv_timer_init(loop, p->sweep);
    p->sweep->data = p;
    uv_timer_start(p->sweep, gw_preread_sweep, GW_PREREAD_SWEEP_MS, GW_PREREAD_SWEEP_MS);
    return p;
}

static void
gw_preread_timer_closed(uv_handle_t *h)
{
    hr_free(h);
}

void
gw_preread_destroy(gw_preread_t *p)
{
    if (p == NULL)
        return;
    while (p->head != NULL)
        gw_pending_drop(p->head);
    uv_timer_stop(p->sweep);
    uv_close((uv_handle_t *)p->sweep, gw_preread_timer_closed);
    hr_free(p);
}

int
gw_preread_start(gw_preread_t *p, int fd)
{
    gw_pending_t *c = hr_calloc(1, sizeof(*c));
    if (uv_poll_init(p->loop, &c->poll, fd) != 0) {
        hr_free(c);
        return HR_ERR;
    }
    c->p = p;
    c->fd = fd;
    /* Most heads fit; a long token grows it (a socket that sends nothing costs little). */
    c->cap = p->max_head < GW_PREREAD_FIRST ? p->max_head : GW_PREREAD_FIRST;
    c->buf = hr_malloc(c->cap);
    c->start_ms = hr_mono_ms();
    c->next = p->head;
    if (p->head != NULL)
        p->head->prev = c;
    p->head = c;
    p->pending++;
    uv_poll_start(&c->poll, UV_READABLE, gw_pending_readable);
    return 0;
}

size_t
gw_preread_pending(const gw_preread_t *p)
{
    return p->pending;
}
