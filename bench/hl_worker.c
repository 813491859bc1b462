/* herald-load: one worker process's connections, publisher and poster (see hl_common.h). */
#include "hl_common.h"

/* ---- worker: connections ------------------------------------------------ */

enum { CS_NEW = 0, CS_CONNECTING, CS_HANDSHAKE, CS_OPEN, CS_READY, CS_DEAD };
enum { F_WELCOMED = 1, F_JOIN_SENT = 2, F_WOUT = 4 };

typedef struct {
    int fd;
    uint32_t idx; /* global connection number: user id and source address */
    uint8_t state;
    uint8_t flags;
    uint16_t pad;
    uint32_t t_ms; /* worker-relative time of the last state change, for timeouts */
    uint32_t rlen, wlen, flen;
    uint8_t *rbuf; /* owned; incomplete frame carried to the next read, usually NULL */
    uint8_t *wbuf; /* owned; bytes the socket did not take, usually NULL */
    uint8_t *frag; /* owned; fragmented text message being reassembled, usually NULL */
} hl_conn_t;

_Static_assert(sizeof(hl_conn_t) <= 56, "keep the per-connection struct small");

typedef struct {
    int fd; /* -1: not connected */
    int busy;
    uint32_t user;     /* target of the request in flight */
    uint64_t sent_us;  /* monotonic, when it was written */
    uint64_t sched_us; /* monotonic, when it was due */
    uint32_t rlen;
    char rbuf[4096];
} hl_http_t;

#define TAG_WS 0ull
#define TAG_HTTP 1ull
#define TAG_CMD 2ull
#define TAG(kind, i) (((uint64_t)(kind) << 32) | (uint32_t)(i))

typedef struct {
    int id;
    uint32_t first, count; /* global connection numbers [first, first+count) */
    hl_conn_t *conns;      /* owned */
    int ep, cmd_fd, rep_fd;
    uint8_t *rx; /* owned, HL_RXCAP */
    uint64_t t0_us;
    double rate;
    uint32_t next_start, inflight;
    int connected_reported, stop;
    uint32_t xs; /* xorshift state for masking keys */
    /* publish (worker 0) */
    int publishing;
    uint32_t pub_next;
    uint64_t pub_t0, pub_t0_rt, pub_last_ts;
    /* notify (worker 0) */
    int notifying;
    uint32_t notify_next, notify_done, notify_users;
    uint64_t notify_t0, notify_t0_rt;
    hl_http_t *http; /* owned, notify_conns entries */
    hl_fantab_t fan;
    hl_report_t rep;
} hl_worker_t;

static hl_worker_t W;

static uint32_t
hl_now_ms(void)
{
    return (uint32_t)((hr_mono_us() - W.t0_us) / 1000u);
}

static uint32_t
hl_rand(void)
{
    uint32_t x = W.xs;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return W.xs = x;
}

static void
hl_epoll_set(hl_conn_t *c, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u64 = TAG(TAG_WS, c - W.conns)};
    epoll_ctl(W.ep, op, c->fd, &ev);
}

/* Leaves the set-up phase: counts c as settled (ready, failed or given up). */
static void
hl_settle(hl_conn_t *c)
{
    if (c->state < CS_READY && W.inflight > 0)
        W.inflight--;
}

/* Closes c for good. A connection that never got its welcome is a failure; one
 * that did is a drop. */
static void
hl_conn_kill(hl_conn_t *c)
{
    if (c->state == CS_DEAD || c->state == CS_NEW)
        return;
    hl_settle(c);
    if (c->flags & F_WELCOMED)
        W.rep.dropped++;
    else
        W.rep.conn_failed++;
    close(c->fd);
    c->fd = -1;
    hr_free(c->rbuf);
    hr_free(c->wbuf);
    hr_free(c->frag);
    c->rbuf = c->wbuf = c->frag = NULL;
    c->rlen = c->wlen = c->flen = 0;
    c->state = CS_DEAD;
}

/* Writes or queues bytes; kills c on a hard error. */
static void
hl_conn_write(hl_conn_t *c, const void *data, size_t n)
{
    if (c->state == CS_DEAD)
        return;
    if (c->wbuf == NULL) {
        ssize_t w = send(c->fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w == (ssize_t)n)
            return;
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                W.rep.last_errno = errno;
                hl_conn_kill(c);
                return;
            }
            w = 0;
        }
        data = (const uint8_t *)data + w;
        n -= (size_t)w;
    }
    c->wbuf = hr_realloc(c->wbuf, c->wlen + n);
    memcpy(c->wbuf + c->wlen, data, n);
    c->wlen += (uint32_t)n;
    if (!(c->flags & F_WOUT)) {
        c->flags |= F_WOUT;
        hl_epoll_set(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
    }
}

/* Sends one masked frame (client frames must be masked, RFC 6455 5.3). */
static void
hl_conn_send_frame(hl_conn_t *c, int opcode, const void *payload, size_t n)
{
    uint8_t buf[14 + HL_MAX_TX];
    if (n > HL_MAX_TX)
        n = HL_MAX_TX;
    size_t h = 0;
    buf[h++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        buf[h++] = (uint8_t)(0x80 | n);
    } else {
        buf[h++] = 0x80 | 126;
        buf[h++] = (uint8_t)(n >> 8);
        buf[h++] = (uint8_t)n;
    }
    uint32_t key = hl_rand();
    uint8_t *mask = buf + h;
    memcpy(mask, &key, 4);
    h += 4;
    const uint8_t *p = payload;
    for (size_t i = 0; i < n; i++)
        buf[h + i] = p[i] ^ mask[i & 3];
    hl_conn_write(c, buf, h + n);
}

/* Finds the string value of "key" (a quoted name) in p[0..n) by a flat scan;
 * 0 with v and vl set, or -1. Good enough for the gateway's compact JSON. */
static int
hl_json_str(const uint8_t *p, size_t n, const char *key, const uint8_t **v, size_t *vl)
{
    size_t kl = strlen(key);
    const uint8_t *end = p + n, *q = p;
    while (q < end) {
        const uint8_t *k = memmem(q, (size_t)(end - q), key, kl);
        if (k == NULL)
            return -1;
        const uint8_t *s = k + kl;
        while (s < end && *s == ' ')
            s++;
        if (s < end && *s == ':') {
            s++;
            while (s < end && *s == ' ')
                s++;
            if (s < end && *s == '"') {
                s++;
                const uint8_t *e = memchr(s, '"', (size_t)(end - s));
                if (e == NULL)
                    return -1;
                *v = s;
                *vl = (size_t)(e - s);
                return 0;
            }
        }
        q = k + kl;
    }
    return -1;
}

static int
hl_eq(const uint8_t *v, size_t vl, const char *s)
{
    return vl == strlen(s) && memcmp(v, s, vl) == 0;
}

static uint64_t
hl_parse_u64(const uint8_t *v, size_t vl)
{
    uint64_t x = 0;
    for (size_t i = 0; i < vl && v[i] >= '0' && v[i] <= '9'; i++)
        x = x * 10 + (uint64_t)(v[i] - '0');
    return x;
}

static void
hl_copy_code(char *dst, size_t cap, const uint8_t *v, size_t vl)
{
    if (vl >= cap)
        vl = cap - 1;
    memcpy(dst, v, vl);
    dst[vl] = '\0';
}

static uint32_t
hl_user_of(uint32_t idx)
{
    return O.users ? idx % O.users : idx;
}

/* How many of the --conns sockets belong to notification target user k
 * (connection i is user i % notify_users): the frames one POST to k owes. */
static uint32_t
hl_sockets_of(uint32_t k)
{
    uint32_t u = W.notify_users;
    return k < O.conns ? (O.conns - k + u - 1) / u : 0;
}

static void
hl_send_join(hl_conn_t *c)
{
    char msg[512];
    int n = snprintf(msg, sizeof(msg), "{\"type\":\"join\",\"room\":\"%s\",\"ref\":\"j\"}", O.room);
    hl_conn_send_frame(c, 0x1, msg, (size_t)n);
    c->flags |= F_JOIN_SENT;
    c->t_ms = hl_now_ms();
}

static void
hl_join_done(hl_conn_t *c)
{
    hl_settle(c);
    c->state = CS_READY;
}

/* One complete text message from the server. */
static void
hl_on_text(hl_conn_t *c, const uint8_t *p, size_t n)
{
    const uint8_t *type, *v;
    size_t tl, vl;
    W.rep.frames_rx++;
    if (hl_json_str(p, n, "\"type\"", &type, &tl) != 0)
        return;
    int join_pending = (c->flags & F_JOIN_SENT) && c->state == CS_OPEN;
    int is_join_ref = hl_json_str(p, n, "\"ref\"", &v, &vl) == 0 && hl_eq(v, vl, "j");

    if (hl_eq(type, tl, "message")) {
        if (hl_json_str(p, n, "\"message\"", &v, &vl) != 0)
            return;
        uint64_t ts = hl_parse_u64(v, vl), now = hl_rt_us();
        uint64_t lat = now > ts ? now - ts : 0;
        hl_hist_add(&W.rep.h_chat, lat);
        W.rep.chat_rx++;
        if (W.rep.chat_first_rx_us == 0)
            W.rep.chat_first_rx_us = now;
        W.rep.chat_last_rx_us = now;
        hl_fantab_add(&W.fan, ts, 1, lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat);
    } else if (hl_eq(type, tl, "notification")) {
        if (hl_json_str(p, n, "\"message\"", &v, &vl) != 0)
            return;
        uint64_t ts = hl_parse_u64(v, vl), now = hl_rt_us();
        hl_hist_add(&W.rep.h_notify, now > ts ? now - ts : 0);
        W.rep.notify_rx++;
        W.rep.notify_last_rx_us = now;
    } else if (hl_eq(type, tl, "welcome")) {
        if (c->flags & F_WELCOMED)
            return;
        c->flags |= F_WELCOMED;
        W.rep.conn_ok++;
        if (O.room != NULL) {
            hl_send_join(c);
        } else {
            hl_settle(c);
            c->state = CS_READY;
        }
    } else if (hl_eq(type, tl, "error")) {
        W.rep.errors_rx++;
        const uint8_t *code = (const uint8_t *)"";
        size_t cl = 0;
        hl_json_str(p, n, "\"code\"", &code, &cl);
        hl_copy_code(W.rep.last_err_code, sizeof(W.rep.last_err_code), code, cl);
        const uint8_t *r;
        size_t rl;
        if (hl_json_str(p, n, "\"ref\"", &r, &rl) == 0 && rl > 0 && r[0] == 'p')
            W.rep.pub_errors++;
        if (join_pending && is_join_ref) {
            W.rep.join_failed++;
            hl_copy_code(W.rep.join_err_code, sizeof(W.rep.join_err_code), code, cl);
            hl_join_done(c);
        }
    } else if (join_pending) {
        /* The answer to our join carries ref "j"; should the gateway not echo
         * ref, a joined event naming our own user is the next best sign. */
        char me[32];
        int ml = snprintf(me, sizeof(me), "\"u%u\"", hl_user_of(c->idx));
        if (is_join_ref || (hl_eq(type, tl, "joined") && memmem(p, n, me, (size_t)ml) != NULL)) {
            W.rep.join_ok++;
            hl_join_done(c);
        }
    }
}

static void
hl_on_frame(hl_conn_t *c, int opcode, int fin, uint8_t *p, size_t n)
{
    switch (opcode) {
    case 0x1:
        if (fin) {
            hl_on_text(c, p, n);
        } else {
            hr_free(c->frag);
            c->frag = hr_malloc(n ? n : 1);
            memcpy(c->frag, p, n);
            c->flen = (uint32_t)n;
        }
        break;
    case 0x0:
        if (c->frag == NULL)
            break;
        c->frag = hr_realloc(c->frag, c->flen + n + 1);
        memcpy(c->frag + c->flen, p, n);
        c->flen += (uint32_t)n;
        if (fin) {
            uint8_t *f = c->frag;
            c->frag = NULL;
            hl_on_text(c, f, c->flen);
            c->flen = 0;
            hr_free(f);
        }
        break;
    case 0x2:
        W.rep.frames_rx++;
        break;
    case 0x8: {
        int code = n >= 2 ? (p[0] << 8 | p[1]) : 1005;
        W.rep.last_close_code = code;
        uint8_t echo[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        hl_conn_send_frame(c, 0x8, echo, code == 1005 ? 0 : 2);
        hl_conn_kill(c);
        break;
    }
    case 0x9:
        W.rep.pings_rx++;
        hl_conn_send_frame(c, 0xA, p, n);
        break;
    default:
        break;
    }
}

/* Parses the upgrade answer and then frames in buf[0..len); returns bytes
 * consumed, or SIZE_MAX when c was closed. */
static size_t
hl_conn_process(hl_conn_t *c, uint8_t *buf, size_t len)
{
    size_t off = 0;
    if (c->state == CS_HANDSHAKE) {
        uint8_t *e = memmem(buf, len, "\r\n\r\n", 4);
        if (e == NULL) {
            if (len > 8192) {
                hl_conn_kill(c);
                return SIZE_MAX;
            }
            return 0;
        }
        if (len < 13 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
            hl_conn_kill(c);
            return SIZE_MAX;
        }
        c->state = CS_OPEN;
        c->t_ms = hl_now_ms();
        off = (size_t)(e - buf) + 4;
    }
    while (len - off >= 2) {
        uint8_t *f = buf + off;
        size_t avail = len - off, h = 2;
        uint64_t pl = f[1] & 0x7f;
        if (pl == 126) {
            if (avail < 4)
                break;
            pl = (uint64_t)f[2] << 8 | f[3];
            h = 4;
        } else if (pl == 127) {
            if (avail < 10)
                break;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | f[2 + i];
            h = 10;
        }
        int masked = f[1] & 0x80;
        if (masked)
            h += 4;
        if (pl > HL_RXCAP - 16) {
            hl_conn_kill(c);
            return SIZE_MAX;
        }
        if (avail < h + pl)
            break;
        uint8_t *p = f + h;
        if (masked)
            for (uint64_t i = 0; i < pl; i++)
                p[i] ^= f[h - 4 + (i & 3)];
        hl_on_frame(c, f[0] & 0x0f, f[0] >> 7, p, (size_t)pl);
        if (c->state == CS_DEAD)
            return SIZE_MAX;
        off += h + (size_t)pl;
    }
    return off;
}

static void
hl_conn_readable(hl_conn_t *c)
{
    for (int round = 0; round < 8; round++) {
        size_t have = 0;
        if (c->rbuf != NULL) {
            memcpy(W.rx, c->rbuf, c->rlen);
            have = c->rlen;
            hr_free(c->rbuf);
            c->rbuf = NULL;
            c->rlen = 0;
        }
        size_t room = HL_RXCAP - have;
        ssize_t r = recv(c->fd, W.rx + have, room, MSG_DONTWAIT);
        if (r <= 0) {
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                if (have > 0) {
                    c->rbuf = hr_malloc(have);
                    memcpy(c->rbuf, W.rx, have);
                    c->rlen = (uint32_t)have;
                }
                return;
            }
            if (r < 0)
                W.rep.last_errno = errno;
            hl_conn_kill(c);
            return;
        }
        W.rep.bytes_rx += (uint64_t)r;
        size_t total = have + (size_t)r;
        size_t used = hl_conn_process(c, W.rx, total);
        if (used == SIZE_MAX)
            return;
        if (used < total) {
            c->rlen = (uint32_t)(total - used);
            c->rbuf = hr_malloc(c->rlen);
            memcpy(c->rbuf, W.rx + used, c->rlen);
        }
        if ((size_t)r < room)
            return;
    }
}

static void
hl_conn_writable(hl_conn_t *c)
{
    if (c->state == CS_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err != 0) {
            W.rep.last_errno = err;
            hl_conn_kill(c);
            return;
        }
        char req[512];
        int port = O.ports[c->idx % (uint32_t)O.nports];
        int n = snprintf(req, sizeof(req),
                         "GET /ws?user_id=u%u HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n",
                         hl_user_of(c->idx), O.host, port);
        c->state = CS_HANDSHAKE;
        c->t_ms = hl_now_ms();
        hl_epoll_set(c, EPOLL_CTL_MOD, EPOLLIN);
        hl_conn_write(c, req, (size_t)n);
        return;
    }
    if (c->wbuf != NULL) {
        ssize_t w = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            W.rep.last_errno = errno;
            hl_conn_kill(c);
            return;
        }
        if ((uint32_t)w < c->wlen) {
            memmove(c->wbuf, c->wbuf + w, c->wlen - (uint32_t)w);
            c->wlen -= (uint32_t)w;
            return;
        }
        hr_free(c->wbuf);
        c->wbuf = NULL;
        c->wlen = 0;
    }
    c->flags &= (uint8_t)~F_WOUT;
    hl_epoll_set(c, EPOLL_CTL_MOD, EPOLLIN);
}

static void
hl_conn_start(hl_conn_t *c)
{
    W.inflight++;
    c->t_ms = hl_now_ms();
    c->state = CS_CONNECTING;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        W.rep.last_errno = errno;
        hl_settle(c);
        W.rep.conn_failed++;
        c->state = CS_DEAD;
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (O.src_from > 0) {
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in src = {.sin_family = AF_INET};
        uint32_t span = (uint32_t)(O.src_to - O.src_from + 1);
        src.sin_addr.s_addr = htonl(0x7f000000u | ((uint32_t)O.src_from + c->idx % span));
        if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
            W.rep.last_errno = errno;
            hl_conn_kill(c);
            return;
        }
    }
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)O.ports[c->idx % (uint32_t)O.nports])};
    inet_pton(AF_INET, O.host, &dst.sin_addr);
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS) {
        W.rep.last_errno = errno;
        hl_conn_kill(c);
        return;
    }
    hl_epoll_set(c, EPOLL_CTL_ADD, EPOLLOUT);
}

/* Gives up on connections stuck in set-up. */
static void
hl_check_timeouts(void)
{
    uint32_t now = hl_now_ms();
    uint32_t hs = (uint32_t)(O.handshake_timeout_s * 1000),
             js = (uint32_t)(O.join_timeout_s * 1000);
    for (uint32_t i = 0; i < W.next_start; i++) {
        hl_conn_t *c = &W.conns[i];
        if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE ||
            (c->state == CS_OPEN && !(c->flags & F_WELCOMED))) {
            if (now - c->t_ms > hs) {
                W.rep.conn_timeouts++;
                hl_conn_kill(c);
            }
        } else if (c->state == CS_OPEN && now - c->t_ms > js) {
            W.rep.join_unacked++;
            hl_join_done(c);
        }
    }
}

/* ---- worker: publisher ---------------------------------------------------- */

static hl_conn_t *
hl_publisher(void)
{
    for (uint32_t i = 0; i < W.count; i++)
        if (W.conns[i].state == CS_READY)
            return &W.conns[i];
    return NULL;
}

static void
hl_publish_due(void)
{
    uint64_t now = hr_mono_us();
    while (W.pub_next < O.publish) {
        uint64_t due = W.pub_t0 + (uint64_t)((double)W.pub_next * 1e6 / O.pub_rate);
        if (now < due)
            return;
        hl_conn_t *c = hl_publisher();
        if (c == NULL) {
            W.pub_next = O.publish;
            break;
        }
        /* The scheduled time, on the wall clock the receivers compare with. */
        uint64_t ts = W.pub_t0_rt + (due - W.pub_t0);
        if (ts <= W.pub_last_ts)
            ts = W.pub_last_ts + 1; /* the timestamp is the message's key */
        W.pub_last_ts = ts;
        char msg[512];
        int n = snprintf(msg, sizeof(msg),
                         "{\"type\":\"publish\",\"room\":\"%s\",\"message\":\"%" PRIu64
                         "\",\"ref\":\"p%u\"}",
                         O.room, ts, W.pub_next);
        hl_conn_send_frame(c, 0x1, msg, (size_t)n);
        if (W.rep.pub_first_us == 0)
            W.rep.pub_first_us = ts;
        W.rep.pub_last_us = ts;
        W.rep.pub_sent++;
        W.pub_next++;
    }
    W.publishing = 0;
    W.rep.kind = HL_REP_PHASE_DONE;
    hl_write_all(W.rep_fd, &W.rep, sizeof(W.rep));
}

/* ---- worker: notification poster: keep-alive HTTP/1.1, one request in flight per socket ---- */

static int
hl_http_connect(hl_http_t *h, int i)
{
    h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (h->fd < 0)
        return -1;
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.notify_port)};
    inet_pton(AF_INET, O.notify_host, &dst.sin_addr);
    if (connect(h->fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
        W.rep.last_errno = errno;
        close(h->fd);
        h->fd = -1;
        return -1;
    }
    int one = 1;
    setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG(TAG_HTTP, i)};
    epoll_ctl(W.ep, EPOLL_CTL_ADD, h->fd, &ev);
    h->busy = 0;
    h->rlen = 0;
    return 0;
}

static void
hl_http_close(hl_http_t *h)
{
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
    if (h->busy) {
        h->busy = 0;
        W.rep.notify_failed++;
        W.notify_done++;
    }
}

static void
hl_notify_finish_check(void)
{
    if (W.notifying && W.notify_next >= O.notify_count && W.notify_done >= O.notify_count) {
        W.notifying = 0;
        W.rep.kind = HL_REP_PHASE_DONE;
        hl_write_all(W.rep_fd, &W.rep, sizeof(W.rep));
    }
}

static void
hl_http_readable(hl_http_t *h)
{
    ssize_t r = recv(h->fd, h->rbuf + h->rlen, sizeof(h->rbuf) - 1 - h->rlen, MSG_DONTWAIT);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        hl_http_close(h);
        return;
    }
    h->rlen += (uint32_t)r;
    h->rbuf[h->rlen] = '\0';
    char *e = strstr(h->rbuf, "\r\n\r\n");
    if (e == NULL) {
        if (h->rlen >= sizeof(h->rbuf) - 1)
            hl_http_close(h);
        return;
    }
    size_t hl = (size_t)(e - h->rbuf) + 4, clen = 0;
    for (char *l = strstr(h->rbuf, "\r\n"); l != NULL && l < e; l = strstr(l + 2, "\r\n"))
        if (strncasecmp(l + 2, "content-length:", 15) == 0)
            clen = strtoul(l + 17, NULL, 10);
    if (h->rlen < hl + clen)
        return;
    int status = 0;
    if (strncmp(h->rbuf, "HTTP/1.", 7) == 0)
        status = atoi(h->rbuf + 9);
    W.rep.notify_last_status = status;
    uint64_t now = hr_mono_us();
    if (status == 202) {
        W.rep.notify_ok++;
        W.rep.notify_last_ok_us = hl_rt_us();
        W.rep.notify_rx_expected += hl_sockets_of(h->user);
        hl_hist_add(&W.rep.h_post, now - h->sched_us);
        hl_hist_add(&W.rep.h_post_svc, now - h->sent_us);
    } else {
        W.rep.notify_failed++;
    }
    h->busy = 0;
    W.notify_done++;
    int closing = strcasestr(h->rbuf, "connection: close") != NULL;
    h->rlen = 0;
    if (closing) {
        hl_http_close(h);
        hl_http_connect(h, (int)(h - W.http));
    }
    hl_notify_finish_check();
}

static void
hl_notify_due(void)
{
    uint64_t now = hr_mono_us();
    static int rr;
    while (W.notify_next < O.notify_count) {
        uint64_t due = W.notify_t0 + (uint64_t)((double)W.notify_next * 1e6 / O.notify_rate);
        if (now < due)
            break;
        hl_http_t *h = NULL;
        for (int k = 0; k < O.notify_conns && h == NULL; k++) {
            hl_http_t *x = &W.http[(rr + k) % O.notify_conns];
            if (x->fd < 0)
                hl_http_connect(x, (int)(x - W.http));
            if (x->fd >= 0 && !x->busy)
                h = x;
        }
        if (h == NULL)
            break; /* every socket has a request in flight: we are behind schedule */
        rr = (int)(h - W.http) + 1;
        if (now - due > W.rep.notify_max_lag_us)
            W.rep.notify_max_lag_us = now - due;
        hl_hist_add(&W.rep.h_send_lag, now - due);
        uint64_t ts = W.notify_t0_rt + (due - W.notify_t0); /* scheduled, wall clock */
        char body[256], req[768];
        h->user = W.notify_next % W.notify_users;
        int bl = snprintf(body, sizeof(body),
                          "{\"user_id\":\"u%u\",\"type\":\"bench\",\"message\":\"%" PRIu64 "\"}",
                          h->user, ts);
        int rl = snprintf(req, sizeof(req),
                          "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          O.notify_path, O.notify_host, O.notify_port, bl, body);
        h->sent_us = hr_mono_us();
        h->sched_us = due;
        h->busy = 1;
        W.notify_next++;
        W.rep.notify_sent++;
        if (W.rep.notify_first_us == 0)
            W.rep.notify_first_us = ts;
        W.rep.notify_last_us = ts;
        if (send(h->fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) {
            W.rep.last_errno = errno;
            hl_http_close(h);
        }
    }
    hl_notify_finish_check();
}

/* ---- worker: main loop -------------------------------------------------- */

static void
hl_on_command(void)
{
    char cmd;
    ssize_t r = read(W.cmd_fd, &cmd, 1);
    if (r <= 0) {
        W.stop = 1; /* the parent is gone */
        return;
    }
    if (cmd == 'P' && O.publish > 0 && O.room != NULL) {
        W.publishing = 1;
        W.pub_t0 = hr_mono_us();
        W.pub_t0_rt = hl_rt_us();
    } else if (cmd == 'N' && O.notify_count > 0) {
        W.notifying = 1;
        W.notify_t0 = hr_mono_us();
        W.notify_t0_rt = hl_rt_us();
        W.http = hr_calloc((size_t)O.notify_conns, sizeof(*W.http));
        for (int i = 0; i < O.notify_conns; i++) {
            W.http[i].fd = -1;
            hl_http_connect(&W.http[i], i);
        }
    } else if (cmd == 'S') {
        W.stop = 1;
    } else if (cmd == 'Q') {
        uint32_t kind = W.rep.kind;
        W.rep.kind = HL_REP_PROGRESS;
        hl_write_all(W.rep_fd, &W.rep, sizeof(W.rep));
        W.rep.kind = kind;
    } else if (cmd == 'P' || cmd == 'N') {
        W.rep.kind = HL_REP_PHASE_DONE;
        hl_write_all(W.rep_fd, &W.rep, sizeof(W.rep));
    }
}

int
hl_worker_run(int id, uint32_t first, uint32_t count, int cmd_fd, int rep_fd)
{
    memset(&W, 0, sizeof(W));
    W.id = id;
    W.first = first;
    W.count = count;
    W.cmd_fd = cmd_fd;
    W.rep_fd = rep_fd;
    W.rep.worker = (uint32_t)id;
    W.rate = O.rate / O.procs;
    W.xs = 0x9e3779b9u ^ (uint32_t)getpid() ^ (uint32_t)hr_mono_us();
    if (W.xs == 0)
        W.xs = 1;
    W.conns = hr_calloc(count ? count : 1, sizeof(hl_conn_t));
    for (uint32_t i = 0; i < count; i++) {
        W.conns[i].fd = -1;
        W.conns[i].idx = first + i;
    }
    W.rx = hr_malloc(HL_RXCAP);
    W.notify_users = O.users ? (O.users < O.conns ? O.users : O.conns) : O.conns;
    if (W.notify_users == 0)
        W.notify_users = 1;
    if (O.publish > 0)
        hl_fantab_init(&W.fan, O.publish);
    /* The default 50 us timer slack would make every paced send late by up
     * to that much, and count it as the system's latency. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    W.ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG(TAG_CMD, 0)};
    epoll_ctl(W.ep, EPOLL_CTL_ADD, cmd_fd, &ev);

    struct epoll_event evs[1024];
    W.t0_us = hr_mono_us();
    uint64_t last_check = 0;
    while (!W.stop) {
        uint64_t now = hr_mono_us();
        if (W.next_start < W.count) {
            uint64_t allowed = (uint64_t)((double)(now - W.t0_us) / 1e6 * W.rate) + 1;
            while (W.next_start < W.count && W.next_start < allowed && W.inflight < O.inflight_max)
                hl_conn_start(&W.conns[W.next_start++]);
        }
        if (W.publishing)
            hl_publish_due();
        if (W.notifying)
            hl_notify_due();
        if (now - last_check > 200000) {
            last_check = now;
            if (W.inflight > 0)
                hl_check_timeouts();
        }
        if (!W.connected_reported && W.next_start == W.count && W.inflight == 0) {
            W.connected_reported = 1;
            W.rep.connect_us = hr_mono_us() - W.t0_us;
            W.rep.self_rss_kib = hl_proc_rss_kib(0);
            W.rep.kind = HL_REP_CONNECTED;
            hl_write_all(W.rep_fd, &W.rep, sizeof(W.rep));
        }
        /* Sleep until the next scheduled send, to the microsecond: a
         * millisecond tick would send in bursts of rate/1000 and count the
         * tick's wait as latency of the system under test. */
        int busy = W.next_start < W.count || W.publishing || W.notifying;
        uint64_t wait_us = busy ? 1000 : 100000, due = UINT64_MAX;
        if (W.notifying && W.notify_next < O.notify_count)
            due = W.notify_t0 + (uint64_t)((double)W.notify_next * 1e6 / O.notify_rate);
        if (W.publishing && W.pub_next < O.publish) {
            uint64_t d = W.pub_t0 + (uint64_t)((double)W.pub_next * 1e6 / O.pub_rate);
            if (d < due)
                due = d;
        }
        /* A send due before this turn began was held back (every socket has
         * a request in flight): wait for an answer, do not spin. */
        uint64_t t = hr_mono_us();
        if (due != UINT64_MAX && due > now)
            wait_us = due > t ? (due - t < wait_us ? due - t : wait_us) : 0;
        struct timespec wt = {.tv_sec = (time_t)(wait_us / 1000000),
                              .tv_nsec = (long)(wait_us % 1000000) * 1000};
        int n = epoll_pwait2(W.ep, evs, 1024, &wt, NULL);
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64 >> 32;
            uint32_t idx = (uint32_t)evs[i].data.u64;
            if (tag == TAG_CMD) {
                hl_on_command();
            } else if (tag == TAG_HTTP) {
                hl_http_t *h = &W.http[idx];
                if (h->fd >= 0)
                    hl_http_readable(h);
                hl_notify_finish_check();
            } else {
                hl_conn_t *c = &W.conns[idx];
                if (c->state == CS_DEAD)
                    continue;
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    if (c->state == CS_CONNECTING || (c->flags & F_WOUT))
                        hl_conn_writable(c);
                if (c->state != CS_DEAD && c->state != CS_CONNECTING &&
                    (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                    hl_conn_readable(c);
            }
        }
    }

    W.rep.kind = HL_REP_RESULT;
    hl_fan_t *fans = hr_malloc(sizeof(hl_fan_t) * (W.fan.used ? W.fan.used : 1));
    uint32_t nf = 0;
    for (uint32_t i = 0; i < W.fan.cap; i++)
        if (W.fan.slot[i].ts != 0)
            fans[nf++] = W.fan.slot[i];
    W.rep.nfan = nf;
    hl_write_all(W.rep_fd, &W.rep, sizeof(W.rep));
    hl_write_all(W.rep_fd, fans, sizeof(hl_fan_t) * nf);
    return 0;
}
