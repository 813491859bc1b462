#include "herald/hr_redis.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_log.h"
#include "herald/hr_time.h"

#include <event2/event.h>
#include <hiredis/sds.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Percent-decodes s[0..len) (RFC 3986) into a new string; NULL when a %XX is
 * malformed or decodes to NUL (a password goes to AUTH as a C string).
 */
static char *
hr_pct_decode(const char *s, size_t len)
{
    char *out = hr_malloc(len + 1), *o = out;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        int hi = i + 1 < len ? hr_hex_val(s[i + 1]) : -1;
        int lo = i + 2 < len ? hr_hex_val(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            hr_free(out);
            return NULL;
        }
        *o++ = (char)(hi * 16 + lo);
        i += 2;
    }
    *o = '\0';
    return out;
}

static int
hr_addr_fail(hr_redis_addr_t *out, char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "redis url %s", what);
    hr_redis_addr_clear(out);
    return HR_DECLINED;
}

/*
 * redis://[[user]:password@]host[:port][/db]. The userinfo ends at the LAST
 * '@' (a password may hold '@', '/' or ':'; the host and db cannot) and is
 * percent-decoded; host is a name, an IPv4 address or a bracketed IPv6
 * literal ([::1]).
 */
int
hr_redis_addr_parse(const char *url, hr_redis_addr_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    const char *p = url;
    if (url == NULL || strncmp(p, "redis://", 8) != 0) {
        snprintf(err, errlen, "redis url must start with redis://, got \"%s\"",
                 url ? url : "(null)");
        return HR_DECLINED;
    }
    p += 8;
    const char *at = strrchr(p, '@');
    if (at != NULL) {
        /* [user]:password@ — Redis 6 ACL users are not used: password only. */
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if (at > pw) {
            out->password = hr_pct_decode(pw, (size_t)(at - pw));
            if (out->password == NULL)
                return hr_addr_fail(out, err, errlen, "has a bad %-escape in its password");
        }
        p = at + 1;
    }
    size_t hl;
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (close == NULL || close == p + 1)
            return hr_addr_fail(out, err, errlen, "has a bad IPv6 host (want [addr])");
        if (strspn(p + 1, "0123456789abcdefABCDEF:.") != (size_t)(close - p - 1))
            return hr_addr_fail(out, err, errlen, "has a bad IPv6 host (want [addr])");
        out->host = hr_strndup(p + 1, (size_t)(close - p - 1));
        p = close + 1;
        if (*p != '\0' && *p != ':' && *p != '/')
            return hr_addr_fail(out, err, errlen, "has junk after its IPv6 host");
    } else {
        hl = strcspn(p, ":/");
        if (hl == 0)
            return hr_addr_fail(out, err, errlen, "has no host");
        out->host = hr_strndup(p, hl);
        p += hl;
    }
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (p[1] < '0' || p[1] > '9' || v <= 0 || v > 65535 || (*end != '\0' && *end != '/'))
            return hr_addr_fail(out, err, errlen, "has a bad port");
        out->port = (int)v;
        p = end;
    }
    if (*p == '/' && p[1] != '\0') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || p[1] < '0' || p[1] > '9' || *end != '\0' || v < 0 || v > 1000)
            return hr_addr_fail(out, err, errlen, "has a bad database number");
        out->db = (int)v;
    }
    return 0;
}

void
hr_redis_addr_clear(hr_redis_addr_t *a)
{
    hr_free(a->host);
    hr_free(a->password);
    a->host = a->password = NULL;
}

redisContext *
hr_redis_connect_sync(const hr_redis_addr_t *a, int timeout_ms, char *err, size_t errlen)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(a->host, a->port, tv);
    if (c == NULL || c->err) {
        snprintf(err, errlen, "connect %s:%d: %s", a->host, a->port,
                 c ? c->errstr : "cannot allocate context");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisEnableKeepAlive(c);
    redisReply *r;
    if (a->password != NULL) {
        r = redisCommand(c, "AUTH %s", a->password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "AUTH: %s", r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    if (a->db != 0) {
        r = redisCommand(c, "SELECT %d", a->db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "SELECT: %s", r ? r->str : c->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    return c;
fail:
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return NULL;
}

/* ---- libevent loop ops ---- */

typedef struct {
    struct event *ev; /* owned */
    void (*cb)(void *);
    void *arg;
} hr_ev_timer_t;

/*
 * hiredis on libevent with fewer epoll_ctl than hiredis's own adapter (whose
 * events are not persistent, so every read re-arms the fd, and every
 * command arms EV_WRITE for a later loop turn): the read event is
 * persistent, and once connected a command's bytes are written by a
 * "flush" event activated at once, which libevent runs later in the same
 * loop turn. Every command queued in that turn goes out in one write(2),
 * without arming EV_WRITE; EV_WRITE is armed only when the socket does not
 * take everything.
 */
typedef struct {
    redisAsyncContext *ac; /* borrowed: this struct lives as long as it */
    struct event *rev;     /* owned: EV_READ | EV_PERSIST */
    struct event *wev;     /* owned: EV_WRITE | EV_PERSIST */
    struct event *flush;   /* owned: activated by hand */
    int reading, writing, flushing, in_flush;
    int *freed; /* set while a flush writes: hiredis may free the context (and this) */
} hr_ev_redis_t;

static void
hr_evr_read(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_ev_redis_t *e = arg;
    redisAsyncHandleRead(e->ac);
}

static void
hr_evr_write(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_ev_redis_t *e = arg;
    redisAsyncHandleWrite(e->ac);
}

static void
hr_evr_flush(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_ev_redis_t *e = arg;
    e->flushing = 0;
    if (e->writing)
        return;
    /* Writes, then calls delWrite when all went out or addWrite (EV_WRITE) for the rest. */
    int freed = 0;
    e->freed = &freed;
    e->in_flush = 1;
    redisAsyncHandleWrite(e->ac);
    if (freed)
        return;
    e->in_flush = 0;
    e->freed = NULL;
}

static void
hr_evr_add_read(void *privdata)
{
    hr_ev_redis_t *e = privdata;
    if (!e->reading) {
        e->reading = 1;
        event_add(e->rev, NULL);
    }
}

static void
hr_evr_del_read(void *privdata)
{
    hr_ev_redis_t *e = privdata;
    if (e->reading) {
        e->reading = 0;
        event_del(e->rev);
    }
}

static void
hr_evr_add_write(void *privdata)
{
    hr_ev_redis_t *e = privdata;
    if (e->writing || e->flushing)
        return;
    /* Connected: write later this turn, together with the rest of the turn's commands. */
    if ((e->ac->c.flags & REDIS_CONNECTED) && !e->in_flush) {
        e->flushing = 1;
        event_active(e->flush, EV_WRITE, 0);
        return;
    }
    e->writing = 1;
    event_add(e->wev, NULL);
}

static void
hr_evr_del_write(void *privdata)
{
    hr_ev_redis_t *e = privdata;
    if (e->writing) {
        e->writing = 0;
        event_del(e->wev);
    }
}

static void
hr_evr_cleanup(void *privdata)
{
    hr_ev_redis_t *e = privdata;
    if (e->freed != NULL)
        *e->freed = 1;
    event_free(e->rev);
    event_free(e->wev);
    event_free(e->flush);
    hr_free(e);
}

static int
hr_ev_attach(redisAsyncContext *ac, void *loop)
{
    if (ac->ev.data != NULL)
        return HR_ERR;
    hr_ev_redis_t *e = hr_calloc(1, sizeof(*e));
    struct event_base *base = loop;
    e->ac = ac;
    e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, hr_evr_read, e);
    e->wev = event_new(base, ac->c.fd, EV_WRITE | EV_PERSIST, hr_evr_write, e);
    e->flush = event_new(base, -1, 0, hr_evr_flush, e);
    if (e->rev == NULL || e->wev == NULL || e->flush == NULL) {
        fprintf(stderr, "herald: event_new failed\n");
        abort();
    }
    ac->ev.addRead = hr_evr_add_read;
    ac->ev.delRead = hr_evr_del_read;
    ac->ev.addWrite = hr_evr_add_write;
    ac->ev.delWrite = hr_evr_del_write;
    ac->ev.cleanup = hr_evr_cleanup;
    ac->ev.data = e;
    /* As hiredis's adapter: both armed while the non-blocking connect completes. */
    hr_evr_add_read(e);
    hr_evr_add_write(e);
    return 0;
}

static void
hr_ev_timer_fire(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    hr_ev_timer_t *t = arg;
    t->cb(t->arg);
}

static void *
hr_ev_timer_new(void *loop, void (*cb)(void *), void *arg)
{
    hr_ev_timer_t *t = hr_calloc(1, sizeof(*t));
    t->cb = cb;
    t->arg = arg;
    t->ev = evtimer_new((struct event_base *)loop, hr_ev_timer_fire, t);
    if (t->ev == NULL) {
        fprintf(stderr, "herald: evtimer_new failed\n");
        abort();
    }
    return t;
}

static void
hr_ev_timer_arm(void *timer, uint64_t ms)
{
    hr_ev_timer_t *t = timer;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(t->ev, &tv);
}

static void
hr_ev_timer_free(void *timer)
{
    hr_ev_timer_t *t = timer;
    if (t == NULL)
        return;
    event_free(t->ev);
    hr_free(t);
}

const hr_loop_ops_t hr_loop_ops_libevent = {
    .attach = hr_ev_attach,
    .timer_new = hr_ev_timer_new,
    .timer_arm = hr_ev_timer_arm,
    .timer_free = hr_ev_timer_free,
};

/* ---- async connection ---- */

typedef enum { HR_RS_DISCONNECTED, HR_RS_CONNECTING, HR_RS_READY } hr_redis_state_t;

#define HR_WATCHDOG_MS 250

struct hr_redis_async_s {
    const hr_loop_ops_t *ops; /* borrowed, static */
    void *loop;               /* borrowed */
    hr_redis_addr_t addr;     /* owned */
    char *name;               /* owned */
    int command_timeout_ms;
    hr_redis_state_fn on_state;
    void *ud; /* borrowed */

    redisAsyncContext *ac; /* owned by hiredis; NULL when disconnected */
    hr_redis_state_t state;
    hr_backoff_t backoff;
    void *reconnect_timer; /* owned */
    void *watchdog_timer;  /* owned */
    unsigned inflight;     /* commands awaiting a reply */
    uint64_t last_progress_ms;
    uint64_t watchdog_due_ms; /* when the watchdog should fire next */
    /*
     * Bytes appended to this context's output buffer; minus what the buffer
     * still holds, it is what reached the socket, so a command lost with
     * the connection can tell "never sent" from "sent, outcome unknown".
     */
    uint64_t appended;
    int lost_unsent; /* during a NULL-reply callback: the command never left */
    int destroying;
};

/* What each tracked command carries, so the inflight count stays true. */
typedef struct {
    hr_redis_async_t *r; /* borrowed */
    redisCallbackFn *cb;
    void *priv;
    uint64_t end; /* r->appended once this command's bytes were added */
} hr_redis_cmd_t;

static void hr_redis_async_connect(hr_redis_async_t *r);

static void
hr_redis_schedule_reconnect(hr_redis_async_t *r)
{
    if (r->destroying)
        return;
    uint32_t ms = hr_backoff_next(&r->backoff);
    r->ops->timer_arm(r->reconnect_timer, ms);
}

#define HR_CONNECT_TIMEOUT_MS 3000

/*
 * One timer serves two purposes: the backoff delay before a connect attempt
 * and the deadline of the attempt itself (hiredis has no connect timeout).
 */
static void
hr_redis_reconnect_fire(void *arg)
{
    hr_redis_async_t *r = arg;
    if (r->state == HR_RS_CONNECTING && r->ac != NULL) {
        hr_log_warn("redis_connect_timeout", "conn=%s addr=%s:%d timeout_ms=%d", r->name,
                    r->addr.host, r->addr.port, HR_CONNECT_TIMEOUT_MS);
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        r->state = HR_RS_DISCONNECTED;
        ac->data = NULL;
        redisAsyncFree(ac);
        hr_redis_schedule_reconnect(r);
        return;
    }
    hr_redis_async_connect(r);
}

static void
hr_redis_watchdog_arm(hr_redis_async_t *r)
{
    r->watchdog_due_ms = hr_mono_ms() + HR_WATCHDOG_MS;
    r->ops->timer_arm(r->watchdog_timer, HR_WATCHDOG_MS);
}

/*
 * Closes a READY connection whose oldest awaited reply is later than
 * command_timeout_ms. Only time the loop was running counts: a watchdog
 * that fires late says the process was busy (a gateway fanning out a
 * backlog in one callback) or stopped, and a reply that came meanwhile
 * waits unread in the socket. libuv runs timers before it polls, so without
 * this the busy process would take its own delay for a Redis stall, close
 * the connection and fail commands Redis had answered.
 */
static void
hr_redis_watchdog_fire(void *arg)
{
    hr_redis_async_t *r = arg;
    uint64_t now = hr_mono_ms();
    if (now > r->watchdog_due_ms + HR_WATCHDOG_MS) {
        uint64_t late = now - r->watchdog_due_ms;
        r->last_progress_ms = r->last_progress_ms + late < now ? r->last_progress_ms + late : now;
    }
    if (r->state == HR_RS_READY && r->inflight > 0 &&
        now - r->last_progress_ms > (uint64_t)r->command_timeout_ms) {
        hr_log_warn("redis_timeout", "conn=%s inflight=%u timeout_ms=%d", r->name, r->inflight,
                    r->command_timeout_ms);
        /* Frees the context: pending callbacks get NULL, then on_disconnect runs. */
        redisAsyncFree(r->ac);
    }
    if (!r->destroying)
        hr_redis_watchdog_arm(r);
}

static void
hr_redis_cmd_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    hr_redis_cmd_t *cmd = privdata;
    hr_redis_async_t *r = cmd->r;
    if (r->inflight > 0)
        r->inflight--;
    r->last_progress_ms = hr_mono_ms();
    /* With the context going away its output buffer still holds what was never written. */
    /* Redis runs only a command it has read whole: one not all written cannot have run. */
    r->lost_unsent = reply == NULL && r->appended - sdslen(ac->c.obuf) < cmd->end;
    if (cmd->cb != NULL)
        cmd->cb(ac, reply, cmd->priv);
    r->lost_unsent = 0;
    hr_free(cmd);
}

/* The handshake's steps: AUTH and SELECT must succeed; PING's reply marks READY. */
static const char hr_step_auth[] = "AUTH", hr_step_select[] = "SELECT", hr_step_ping[] = "PING";

/*
 * One callback for the three handshake replies; privdata names the step.
 * Only PING's reply makes the connection READY (AUTH and SELECT answering
 * +OK must not: READY would fire once per step). A refused step is logged
 * once and drops the connection, which then reconnects with backoff: a
 * wrong password or a database the server does not have keeps the
 * connection down (and /healthz at 503) instead of writing elsewhere.
 */
static void
hr_redis_handshake_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    const char *step = privdata;
    hr_redis_async_t *r = ac->data;
    redisReply *rep = reply;
    if (r == NULL || r->ac != ac || r->state != HR_RS_CONNECTING)
        return;
    if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
        hr_log_error("redis_handshake_failed", "conn=%s addr=%s:%d step=%s error=\"%s\"", r->name,
                     r->addr.host, r->addr.port, step, rep ? rep->str : "connection lost");
        /* Later steps' replies then come as NULL and find the state DISCONNECTED. */
        r->state = HR_RS_DISCONNECTED;
        if (rep != NULL)
            redisAsyncDisconnect(ac);
        return;
    }
    if (step != hr_step_ping)
        return;
    r->state = HR_RS_READY;
    r->last_progress_ms = hr_mono_ms();
    hr_backoff_reset(&r->backoff);
    hr_log_info("redis_ready", "conn=%s addr=%s:%d db=%d", r->name, r->addr.host, r->addr.port,
                r->addr.db);
    if (r->on_state)
        r->on_state(r, 1, r->ud);
}

static void
hr_redis_on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    hr_redis_async_t *r = ac->data;
    if (r == NULL)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        hr_log_warn("redis_connect_failed", "conn=%s addr=%s:%d error=\"%s\"", r->name,
                    r->addr.host, r->addr.port, ac->errstr);
        r->ac = NULL;
        r->state = HR_RS_DISCONNECTED;
        hr_redis_schedule_reconnect(r);
        return;
    }
    redisEnableKeepAlive(&ac->c);
    /* AUTH and SELECT are pipelined ahead of a PING whose reply marks READY. */
    size_t before = sdslen(ac->c.obuf);
    if (r->addr.password != NULL)
        redisAsyncCommand(ac, hr_redis_handshake_done, (void *)hr_step_auth, "AUTH %s",
                          r->addr.password);
    if (r->addr.db != 0)
        redisAsyncCommand(ac, hr_redis_handshake_done, (void *)hr_step_select, "SELECT %d",
                          r->addr.db);
    redisAsyncCommand(ac, hr_redis_handshake_done, (void *)hr_step_ping, "PING");
    r->appended = sdslen(ac->c.obuf) - before;
}

static void
hr_redis_on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    hr_redis_async_t *r = ac->data;
    if (r == NULL)
        return;
    int was_ready = r->state == HR_RS_READY;
    r->ac = NULL;
    r->state = HR_RS_DISCONNECTED;
    r->inflight = 0;
    if (r->destroying)
        return;
    hr_log_warn("redis_disconnected", "conn=%s status=%d error=\"%s\"", r->name, status,
                ac->errstr[0] ? ac->errstr : "closed");
    if (was_ready && r->on_state)
        r->on_state(r, 0, r->ud);
    hr_redis_schedule_reconnect(r);
}

static void
hr_redis_async_connect(hr_redis_async_t *r)
{
    if (r->destroying || r->ac != NULL)
        return;
    redisAsyncContext *ac = redisAsyncConnect(r->addr.host, r->addr.port);
    if (ac == NULL || ac->err) {
        hr_log_warn("redis_connect_failed", "conn=%s addr=%s:%d error=\"%s\"", r->name,
                    r->addr.host, r->addr.port, ac ? ac->errstr : "no context");
        if (ac)
            redisAsyncFree(ac);
        hr_redis_schedule_reconnect(r);
        return;
    }
    ac->data = r;
    if (r->ops->attach(ac, r->loop) != 0) {
        hr_log_error("redis_attach_failed", "conn=%s", r->name);
        redisAsyncFree(ac);
        hr_redis_schedule_reconnect(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, hr_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, hr_redis_on_disconnect);
    r->ac = ac;
    r->state = HR_RS_CONNECTING;
    r->ops->timer_arm(r->reconnect_timer, HR_CONNECT_TIMEOUT_MS);
}

hr_redis_async_t *
hr_redis_async_create(const hr_loop_ops_t *ops, void *loop, const hr_redis_async_opts_t *opts,
                      char *err, size_t errlen)
{
    hr_redis_async_t *r = hr_calloc(1, sizeof(*r));
    if (hr_redis_addr_parse(opts->url, &r->addr, err, errlen) != 0) {
        hr_free(r);
        return NULL;
    }
    r->ops = ops;
    r->loop = loop;
    r->name = hr_strdup(opts->name ? opts->name : "redis");
    r->command_timeout_ms = opts->command_timeout_ms;
    r->on_state = opts->on_state;
    r->ud = opts->ud;
    hr_backoff_init(&r->backoff, 100, 5000);
    r->reconnect_timer = ops->timer_new(loop, hr_redis_reconnect_fire, r);
    if (r->command_timeout_ms > 0) {
        r->watchdog_timer = ops->timer_new(loop, hr_redis_watchdog_fire, r);
        hr_redis_watchdog_arm(r);
    }
    hr_redis_async_connect(r);
    return r;
}

void
hr_redis_async_destroy(hr_redis_async_t *r)
{
    if (r == NULL)
        return;
    r->destroying = 1;
    if (r->ac != NULL) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac);
    }
    r->ops->timer_free(r->reconnect_timer);
    if (r->watchdog_timer)
        r->ops->timer_free(r->watchdog_timer);
    hr_redis_addr_clear(&r->addr);
    hr_free(r->name);
    hr_free(r);
}

int
hr_redis_async_ready(const hr_redis_async_t *r)
{
    return r->state == HR_RS_READY;
}

unsigned
hr_redis_async_inflight(const hr_redis_async_t *r)
{
    return r->inflight;
}

/*
 * Queues one command, given either as argv (hiredis formats it) or already
 * in RESP (cmd, len), with the byte accounting that tells a lost command's
 * "never sent" from "sent".
 */
static int
hr_redis_async_send(hr_redis_async_t *r, redisCallbackFn *cb, void *priv, int argc,
                    const char **argv, const size_t *argvlen, const char *cmd, size_t len)
{
    if (r->state != HR_RS_READY)
        return HR_AGAIN;
    hr_redis_cmd_t *c = hr_malloc(sizeof(*c));
    c->r = r;
    c->cb = cb;
    c->priv = priv;
    size_t before = sdslen(r->ac->c.obuf);
    int rc = cmd != NULL ? redisAsyncFormattedCommand(r->ac, hr_redis_cmd_done, c, cmd, len)
                         : redisAsyncCommandArgv(r->ac, hr_redis_cmd_done, c, argc, argv, argvlen);
    if (rc != REDIS_OK) {
        hr_free(c);
        return HR_AGAIN;
    }
    r->appended += sdslen(r->ac->c.obuf) - before;
    c->end = r->appended;
    if (r->inflight++ == 0)
        r->last_progress_ms = hr_mono_ms();
    return 0;
}

int
hr_redis_async_argv(hr_redis_async_t *r, redisCallbackFn *cb, void *priv, int argc,
                    const char **argv, const size_t *argvlen)
{
    return hr_redis_async_send(r, cb, priv, argc, argv, argvlen, NULL, 0);
}

int
hr_redis_async_formatted(hr_redis_async_t *r, redisCallbackFn *cb, void *priv, const char *cmd,
                         size_t len)
{
    return hr_redis_async_send(r, cb, priv, 0, NULL, NULL, cmd, len);
}

int
hr_redis_async_subscribe_argv(hr_redis_async_t *r, redisCallbackFn *cb, void *priv, int argc,
                              const char **argv, const size_t *argvlen)
{
    if (r->state != HR_RS_READY)
        return HR_AGAIN;
    size_t before = sdslen(r->ac->c.obuf);
    if (redisAsyncCommandArgv(r->ac, cb, priv, argc, argv, argvlen) != REDIS_OK)
        return HR_AGAIN;
    r->appended += sdslen(r->ac->c.obuf) - before;
    return 0;
}

int
hr_redis_async_lost_unsent(const hr_redis_async_t *r)
{
    return r->lost_unsent;
}

int
hr_redis_async_flush(hr_redis_async_t *r)
{
    if (r->ac == NULL || r->state != HR_RS_READY)
        return HR_AGAIN;
    int done = 0;
    /* A few rounds: the socket is non-blocking, and a full buffer is not worth a stall. */
    for (int i = 0; i < 16 && !done; i++) {
        if (redisBufferWrite(&r->ac->c, &done) != REDIS_OK)
            return HR_ERR;
    }
    return done ? 0 : HR_AGAIN;
}
