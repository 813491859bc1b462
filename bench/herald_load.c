/*
 * herald-load: load client for herald-gateway (and herald-ingest).
 *
 * Opens many WebSocket connections on raw non-blocking sockets and one epoll
 * per process: a minimal RFC 6455 client (HTTP upgrade, masked client frames,
 * unmasked server frames with 16/64-bit lengths, PONG for every PING, close
 * handshake, continuation frames). Optionally joins a room, publishes chat
 * messages whose text is the send time, or POSTs notifications to ingest whose
 * message is the send time; every receiver computes latency = now - that time
 * (CLOCK_REALTIME microseconds: every process is on this one box).
 *
 * A process may hold at most 20,000 files, so the work is split over --procs
 * forked workers, each owning a contiguous slice of the connection numbers.
 * Workers talk to the parent over two pipes each: one byte commands down
 * ('P' publish, 'N' notify, 'S' stop), fixed hl_report_t records up. The
 * parent samples gateway RSS, sequences the phases and prints one block of
 * key=value lines on stdout; progress goes to stderr.
 *
 * Memory: a connection is a 48-byte struct. Reads go through one shared
 * per-process buffer; only an incomplete frame left at the end of a read is
 * copied to a per-connection heap buffer (freed once consumed), likewise for
 * unsent bytes. An idle connection owns no heap memory.
 */
#include "herald/hr_alloc.h"
#include "herald/hr_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HL_MAX_PORTS 32
#define HL_MAX_PIDS 64
#define HL_MAX_PROCS 64
#define HL_RXCAP (1u << 20) /* shared read buffer per process; also the largest frame */
#define HL_MAX_TX 4096      /* largest client frame payload this tool sends */

/* ---- options ------------------------------------------------------------ */

typedef struct {
    char host[64];
    int ports[HL_MAX_PORTS];
    int nports;
    uint32_t conns;
    int procs;
    int src_from, src_to; /* 0: let the kernel pick the source address */
    uint32_t users;       /* 0: one user per connection */
    const char *room;     /* borrowed from argv */
    double rate;          /* new connections per second, all workers together */
    double hold_s;
    uint32_t publish;
    double pub_rate;
    int gw_pids[HL_MAX_PIDS];
    int ngw_pids;
    const char *notify_url; /* borrowed from argv */
    char notify_host[64];
    int notify_port;
    char notify_path[128];
    double notify_rate;
    uint32_t notify_count;
    int notify_conns;
    double drain_s;
    double handshake_timeout_s;
    double join_timeout_s;
    uint32_t inflight_max; /* connections being set up at once, per worker */
    double phase_timeout_s;
} hl_opts_t;

static hl_opts_t O;

/* ---- time ------------------------------------------------------------- */

/* Wall clock in microseconds: the timestamp carried in messages. */
static uint64_t
hl_rt_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- latency histogram: 1 us buckets below 1024 us, then 64 per octave (1.6 %) --- */

#define HL_HIST_LIN 1024
#define HL_HIST_SUB 64
#define HL_HIST_N (HL_HIST_LIN + 31 * HL_HIST_SUB)

typedef struct {
    uint64_t n, max, sum;
    uint64_t b[HL_HIST_N];
} hl_hist_t;

static unsigned
hl_hist_index(uint64_t v)
{
    if (v < HL_HIST_LIN)
        return (unsigned)v;
    int e = 63 - __builtin_clzll(v);
    if (e > 40)
        return HL_HIST_N - 1;
    unsigned sub = (unsigned)(v >> (e - 6)) & (HL_HIST_SUB - 1);
    return HL_HIST_LIN + (unsigned)(e - 10) * HL_HIST_SUB + sub;
}

static uint64_t
hl_hist_value(unsigned i)
{
    if (i < HL_HIST_LIN)
        return i;
    unsigned e = 10 + (i - HL_HIST_LIN) / HL_HIST_SUB, sub = (i - HL_HIST_LIN) % HL_HIST_SUB;
    uint64_t lo = (uint64_t)(HL_HIST_SUB + sub) << (e - 6);
    return lo + ((uint64_t)1 << (e - 6)) / 2;
}

static void
hl_hist_add(hl_hist_t *h, uint64_t v)
{
    h->b[hl_hist_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

static void
hl_hist_merge(hl_hist_t *into, const hl_hist_t *h)
{
    for (unsigned i = 0; i < HL_HIST_N; i++)
        into->b[i] += h->b[i];
    into->n += h->n;
    into->sum += h->sum;
    if (h->max > into->max)
        into->max = h->max;
}

/* The value at quantile q (0..1), never above the exact maximum; 0 when empty. */
static uint64_t
hl_hist_q(const hl_hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t target = (uint64_t)ceil(q * (double)h->n), acc = 0;
    if (target == 0)
        target = 1;
    for (unsigned i = 0; i < HL_HIST_N; i++) {
        acc += h->b[i];
        if (acc >= target) {
            uint64_t v = hl_hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- fan-out table: per published message, receivers and slowest latency --- */

typedef struct {
    uint64_t ts; /* send timestamp = message key; 0 = empty slot */
    uint32_t count;
    uint32_t max_us;
} hl_fan_t;

typedef struct {
    hl_fan_t *slot; /* owned */
    uint32_t cap;   /* power of two */
    uint32_t used;
} hl_fantab_t;

static void
hl_fantab_init(hl_fantab_t *t, uint32_t expect)
{
    uint32_t cap = 64;
    while (cap < expect * 2u + 16u)
        cap <<= 1;
    t->slot = hr_calloc(cap, sizeof(*t->slot));
    t->cap = cap;
    t->used = 0;
}

/* Adds count receivers with slowest latency max_us to message ts; drops when full. */
static void
hl_fantab_add(hl_fantab_t *t, uint64_t ts, uint32_t count, uint32_t max_us)
{
    if (ts == 0 || t->cap == 0)
        return;
    uint32_t i = (uint32_t)((ts * 0x9E3779B97F4A7C15ull) >> 40) & (t->cap - 1);
    for (uint32_t probes = 0; probes < t->cap; probes++, i = (i + 1) & (t->cap - 1)) {
        hl_fan_t *f = &t->slot[i];
        if (f->ts == ts) {
            f->count += count;
            if (max_us > f->max_us)
                f->max_us = max_us;
            return;
        }
        if (f->ts == 0) {
            if (t->used + 1 >= t->cap)
                return;
            f->ts = ts;
            f->count = count;
            f->max_us = max_us;
            t->used++;
            return;
        }
    }
}

/* ---- reports, worker → parent ------------------------------------------ */

enum { HL_REP_CONNECTED = 1, HL_REP_PHASE_DONE = 2, HL_REP_RESULT = 3, HL_REP_PROGRESS = 4 };

typedef struct {
    uint32_t kind;
    uint32_t worker;
    uint32_t nfan; /* hl_fan_t records that follow (RESULT only) */
    int32_t last_close_code;
    int32_t last_errno;
    int32_t notify_last_status;
    uint64_t conn_ok, conn_failed, conn_timeouts, dropped;
    uint64_t join_ok, join_failed, join_unacked;
    uint64_t connect_us;   /* connect phase duration */
    uint64_t self_rss_kib; /* this worker at the end of the connect phase */
    uint64_t frames_rx, bytes_rx, pings_rx, errors_rx;
    uint64_t chat_rx, chat_first_rx_us, chat_last_rx_us;
    uint64_t pub_sent, pub_errors, pub_first_us, pub_last_us;
    uint64_t notify_sent, notify_ok, notify_failed, notify_first_us, notify_last_us;
    uint64_t notify_rx, notify_last_rx_us, notify_max_lag_us;
    uint64_t notify_last_ok_us;  /* wall clock of the last 202 */
    uint64_t notify_rx_expected; /* frames the accepted POSTs owe: sockets of each target user */
    char join_err_code[32];
    char last_err_code[32];
    /* Latencies start at the scheduled send time, not the actual one: a send
     * delayed because the sockets were all busy counts its wait (no
     * coordinated omission). */
    hl_hist_t h_chat;     /* publish scheduled → each receiver */
    hl_hist_t h_notify;   /* POST scheduled → each socket */
    hl_hist_t h_post;     /* POST scheduled → HTTP 202 (other answers are not in it) */
    hl_hist_t h_post_svc; /* POST written → HTTP 202: the server's part alone */
} hl_report_t;

static int
hl_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
hl_read_all(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

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

static uint64_t
hl_proc_rss_kib(int pid)
{
    char path[64], line[256];
    if (pid > 0)
        snprintf(path, sizeof(path), "/proc/%d/status", pid);
    else
        snprintf(path, sizeof(path), "/proc/self/status");
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    uint64_t kib = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtoull(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

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

static int
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
        int busy = W.next_start < W.count || W.publishing || W.notifying;
        int n = epoll_wait(W.ep, evs, 1024, busy ? 1 : 100);
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

/* ---- parent ------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    int cmd_fd, rep_fd;
    int connected, phase_done, progress, done, dead;
    hl_report_t rep; /* latest */
    hl_fan_t *fans;  /* owned, from the RESULT */
} hl_child_t;

static hl_child_t *C;
static int NC;

static void
hl_on_signal(int sig)
{
    for (int i = 0; i < NC; i++)
        if (C[i].pid > 0)
            kill(C[i].pid, SIGKILL);
    _exit(128 + sig);
}

static void
hl_msleep(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Reads reports until every child has reached `kind` (or is gone) or timeout_s
 * passed; 0 when all reached it. */
static int
hl_wait_all(uint32_t kind, int only, double timeout_s)
{
    uint64_t deadline = hr_mono_us() + (uint64_t)(timeout_s * 1e6);
    hl_report_t *tmp = hr_malloc(sizeof(*tmp));
    int rc = -1;
    for (;;) {
        int pending = 0;
        struct pollfd pfd[HL_MAX_PROCS];
        int map[HL_MAX_PROCS], np = 0;
        for (int i = 0; i < NC; i++) {
            if (only >= 0 && i != only)
                continue;
            int reached = kind == HL_REP_CONNECTED    ? C[i].connected
                          : kind == HL_REP_PHASE_DONE ? C[i].phase_done
                          : kind == HL_REP_PROGRESS   ? C[i].progress
                                                      : C[i].done;
            if (reached || C[i].dead)
                continue;
            pending++;
            pfd[np].fd = C[i].rep_fd;
            pfd[np].events = POLLIN;
            map[np++] = i;
        }
        if (pending == 0) {
            rc = 0;
            break;
        }
        uint64_t now = hr_mono_us();
        if (now >= deadline)
            break;
        int n = poll(pfd, (nfds_t)np, (int)((deadline - now) / 1000) + 1);
        if (n < 0 && errno != EINTR)
            break;
        for (int k = 0; k < np && n > 0; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            hl_child_t *ch = &C[map[k]];
            if (hl_read_all(ch->rep_fd, tmp, sizeof(*tmp)) != 0) {
                fprintf(stderr, "herald-load: worker %d exited early\n", map[k]);
                ch->dead = 1;
                continue;
            }
            ch->rep = *tmp;
            if (tmp->kind == HL_REP_CONNECTED)
                ch->connected = 1;
            else if (tmp->kind == HL_REP_PHASE_DONE)
                ch->phase_done = 1;
            else if (tmp->kind == HL_REP_PROGRESS)
                ch->progress = 1;
            else if (tmp->kind == HL_REP_RESULT) {
                ch->done = 1;
                ch->fans = hr_malloc(sizeof(hl_fan_t) * (tmp->nfan ? tmp->nfan : 1));
                if (hl_read_all(ch->rep_fd, ch->fans, sizeof(hl_fan_t) * tmp->nfan) != 0)
                    ch->rep.nfan = 0;
            }
        }
    }
    hr_free(tmp);
    return rc;
}

static uint64_t
hl_gateway_rss(void)
{
    uint64_t sum = 0;
    for (int i = 0; i < O.ngw_pids; i++)
        sum += hl_proc_rss_kib(O.gw_pids[i]);
    return sum;
}

static void
hl_send_cmd(int i, char cmd)
{
    if (!C[i].dead && hl_write_all(C[i].cmd_fd, &cmd, 1) != 0)
        C[i].dead = 1;
}

/* Waits, at most --drain seconds, for deliveries to finish: until expect
 * chat+notification frames arrived (0: unknown) or none arrived for a second. */
static void
hl_drain(uint64_t expect)
{
    uint64_t start = hr_mono_us(), last_change = start, last = UINT64_MAX;
    while (hr_mono_us() - start < (uint64_t)(O.drain_s * 1e6)) {
        hl_msleep(0.25);
        for (int i = 0; i < NC; i++) {
            C[i].progress = 0;
            hl_send_cmd(i, 'Q');
        }
        hl_wait_all(HL_REP_PROGRESS, -1, 10);
        uint64_t got = 0, now = hr_mono_us();
        for (int i = 0; i < NC; i++)
            got += C[i].rep.chat_rx + C[i].rep.notify_rx;
        if (expect > 0 && got >= expect)
            break;
        if (got != last) {
            last = got;
            last_change = now;
        } else if (now - last_change >= 1000000) {
            break;
        }
    }
}

/* What a run missed, for run_ok / failures= and the exit status. */
typedef struct {
    int n;
    char text[1024];
} hl_failures_t;

static void __attribute__((format(printf, 2, 3))) hl_fail(hl_failures_t *f, const char *fmt, ...)
{
    size_t at = strlen(f->text);
    if (f->n++ > 0 && at + 2 < sizeof(f->text)) {
        memcpy(f->text + at, "; ", 3);
        at += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->text + at, sizeof(f->text) - at, fmt, ap);
    va_end(ap);
}

/* p50/p99/max and the sample count; "n/a" for an empty histogram (a run
 * that measured nothing must not read as 0 us). */
static void
hl_print_hist(const char *prefix, const hl_hist_t *h)
{
    printf("%s_samples=%" PRIu64 "\n", prefix, h->n);
    if (h->n == 0) {
        printf("%s_p50=n/a\n%s_p99=n/a\n%s_max=n/a\n", prefix, prefix, prefix);
        return;
    }
    printf("%s_p50=%" PRIu64 "\n%s_p99=%" PRIu64 "\n%s_max=%" PRIu64 "\n", prefix,
           hl_hist_q(h, 0.50), prefix, hl_hist_q(h, 0.99), prefix, h->max);
}

static int
hl_parse_list(const char *s, int *out, int cap)
{
    int n = 0;
    char *dup = hr_strdup(s), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t != NULL && n < cap; t = strtok_r(NULL, ",", &save))
        out[n++] = atoi(t);
    hr_free(dup);
    return n;
}

static int
hl_parse_url(const char *url)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7, *colon = strchr(h, ':'), *slash = strchr(h, '/');
    if (slash == NULL)
        slash = h + strlen(h);
    const char *hend = colon != NULL && colon < slash ? colon : slash;
    if ((size_t)(hend - h) >= sizeof(O.notify_host))
        return -1;
    memcpy(O.notify_host, h, (size_t)(hend - h));
    O.notify_host[hend - h] = '\0';
    if (strcmp(O.notify_host, "localhost") == 0)
        strcpy(O.notify_host, "127.0.0.1");
    O.notify_port = hend == colon ? atoi(colon + 1) : 80;
    snprintf(O.notify_path, sizeof(O.notify_path), "%s", *slash ? slash : "/");
    return 0;
}

static void
hl_usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [options]\n"
            "  --host A             gateway address (127.0.0.1)\n"
            "  --port P | --ports P1,P2,...   gateway port(s), round robin (8081)\n"
            "  --conns N            WebSocket connections (1000)\n"
            "  --procs K            worker processes, N/K connections each (1)\n"
            "  --src-from X --src-to Y   bind sockets to 127.0.0.X..Y round robin\n"
            "  --users U            user ids u<i %% U> (default: one per connection)\n"
            "  --room NAME          join NAME after the welcome\n"
            "  --rate R             new connections per second (5000)\n"
            "  --hold S             seconds to hold once connected (2)\n"
            "  --publish M --pub-rate R   publish M messages to the room at R/s (10)\n"
            "  --notify-url URL --notify-rate R --notify-count C [--notify-conns H]\n"
            "                       POST C notifications at R/s over H keep-alive sockets (8)\n"
            "  --gateway-pids P1,P2 sample VmRSS of these processes\n"
            "  --drain S            at most S seconds to wait for deliveries after the last send;\n"
            "                       stops early once all arrived or none for 1 s (30)\n"
            "  --handshake-timeout S (10)  --join-timeout S (10)  --inflight N (1000)\n"
            "exit: 0 every connection, request and expected frame made it; 1 bad options or\n"
            "      nothing connected; 2 the run missed something (see failures=); 3 the gateway\n"
            "      refused join (unknown_type)\n",
            argv0);
}

int
main(int argc, char **argv)
{
    snprintf(O.host, sizeof(O.host), "127.0.0.1");
    O.ports[0] = 8081;
    O.nports = 1;
    O.conns = 1000;
    O.procs = 1;
    O.rate = 5000;
    O.hold_s = 2;
    O.pub_rate = 10;
    O.notify_rate = 1000;
    O.notify_conns = 8;
    O.drain_s = 30;
    O.handshake_timeout_s = 10;
    O.join_timeout_s = 10;
    O.inflight_max = 1000;

    enum {
        OPT_HOST = 256,
        OPT_PORT,
        OPT_PORTS,
        OPT_CONNS,
        OPT_PROCS,
        OPT_SRC_FROM,
        OPT_SRC_TO,
        OPT_USERS,
        OPT_ROOM,
        OPT_RATE,
        OPT_HOLD,
        OPT_PUBLISH,
        OPT_PUB_RATE,
        OPT_GW_PIDS,
        OPT_NOTIFY_URL,
        OPT_NOTIFY_RATE,
        OPT_NOTIFY_COUNT,
        OPT_NOTIFY_CONNS,
        OPT_DRAIN,
        OPT_HS_TIMEOUT,
        OPT_JOIN_TIMEOUT,
        OPT_INFLIGHT
    };
    static const struct option longopts[] = {
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"ports", required_argument, NULL, OPT_PORTS},
        {"conns", required_argument, NULL, OPT_CONNS},
        {"procs", required_argument, NULL, OPT_PROCS},
        {"src-from", required_argument, NULL, OPT_SRC_FROM},
        {"src-to", required_argument, NULL, OPT_SRC_TO},
        {"users", required_argument, NULL, OPT_USERS},
        {"room", required_argument, NULL, OPT_ROOM},
        {"rate", required_argument, NULL, OPT_RATE},
        {"hold", required_argument, NULL, OPT_HOLD},
        {"publish", required_argument, NULL, OPT_PUBLISH},
        {"pub-rate", required_argument, NULL, OPT_PUB_RATE},
        {"gateway-pids", required_argument, NULL, OPT_GW_PIDS},
        {"notify-url", required_argument, NULL, OPT_NOTIFY_URL},
        {"notify-rate", required_argument, NULL, OPT_NOTIFY_RATE},
        {"notify-count", required_argument, NULL, OPT_NOTIFY_COUNT},
        {"notify-conns", required_argument, NULL, OPT_NOTIFY_CONNS},
        {"drain", required_argument, NULL, OPT_DRAIN},
        {"handshake-timeout", required_argument, NULL, OPT_HS_TIMEOUT},
        {"join-timeout", required_argument, NULL, OPT_JOIN_TIMEOUT},
        {"inflight", required_argument, NULL, OPT_INFLIGHT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_HOST:
            snprintf(O.host, sizeof(O.host), "%s", optarg);
            break;
        case OPT_PORT:
            O.ports[0] = atoi(optarg);
            O.nports = 1;
            break;
        case OPT_PORTS:
            O.nports = hl_parse_list(optarg, O.ports, HL_MAX_PORTS);
            break;
        case OPT_CONNS:
            O.conns = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case OPT_PROCS:
            O.procs = atoi(optarg);
            break;
        case OPT_SRC_FROM:
            O.src_from = atoi(optarg);
            break;
        case OPT_SRC_TO:
            O.src_to = atoi(optarg);
            break;
        case OPT_USERS:
            O.users = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case OPT_ROOM:
            O.room = optarg;
            break;
        case OPT_RATE:
            O.rate = atof(optarg);
            break;
        case OPT_HOLD:
            O.hold_s = atof(optarg);
            break;
        case OPT_PUBLISH:
            O.publish = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case OPT_PUB_RATE:
            O.pub_rate = atof(optarg);
            break;
        case OPT_GW_PIDS:
            O.ngw_pids = hl_parse_list(optarg, O.gw_pids, HL_MAX_PIDS);
            break;
        case OPT_NOTIFY_URL:
            O.notify_url = optarg;
            break;
        case OPT_NOTIFY_RATE:
            O.notify_rate = atof(optarg);
            break;
        case OPT_NOTIFY_COUNT:
            O.notify_count = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case OPT_NOTIFY_CONNS:
            O.notify_conns = atoi(optarg);
            break;
        case OPT_DRAIN:
            O.drain_s = atof(optarg);
            break;
        case OPT_HS_TIMEOUT:
            O.handshake_timeout_s = atof(optarg);
            break;
        case OPT_JOIN_TIMEOUT:
            O.join_timeout_s = atof(optarg);
            break;
        case OPT_INFLIGHT:
            O.inflight_max = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'h':
            hl_usage(argv[0]);
            return 0;
        default:
            hl_usage(argv[0]);
            return 1;
        }
    }
    if (O.procs < 1 || O.procs > HL_MAX_PROCS || O.nports < 1 || O.rate <= 0 || O.pub_rate <= 0 ||
        O.notify_rate <= 0 || O.notify_conns < 1 || O.notify_conns > 1000 || O.inflight_max < 1) {
        fprintf(stderr, "herald-load: invalid option value\n");
        return 1;
    }
    if (O.src_from > 0 && (O.src_to < O.src_from || O.src_to > 254)) {
        fprintf(stderr, "herald-load: --src-to must be in [--src-from, 254]\n");
        return 1;
    }
    if (O.room != NULL && strpbrk(O.room, "\"\\") != NULL) {
        fprintf(stderr, "herald-load: --room must not contain quotes or backslashes\n");
        return 1;
    }
    if (O.notify_url != NULL && hl_parse_url(O.notify_url) != 0) {
        fprintf(stderr, "herald-load: --notify-url must be http://host:port/path\n");
        return 1;
    }
    if (O.notify_url == NULL)
        O.notify_count = 0;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    uint32_t per = (O.conns + (uint32_t)O.procs - 1) / (uint32_t)O.procs;
    if ((rlim_t)per + (rlim_t)O.notify_conns + 32 > rl.rlim_cur) {
        fprintf(stderr,
                "herald-load: %u connections per process exceed the open file limit %lu: "
                "raise --procs\n",
                per, (unsigned long)rl.rlim_cur);
        return 1;
    }
    O.phase_timeout_s =
        (double)O.conns / O.rate + O.handshake_timeout_s + (O.room ? O.join_timeout_s : 0) + 60;
    signal(SIGPIPE, SIG_IGN);

    uint64_t rss_before = hl_gateway_rss();
    NC = O.procs;
    C = hr_calloc((size_t)NC, sizeof(*C));
    signal(SIGINT, hl_on_signal);
    signal(SIGTERM, hl_on_signal);
    for (int i = 0; i < NC; i++) {
        int down[2], up[2];
        if (pipe2(down, O_CLOEXEC) != 0 || pipe2(up, O_CLOEXEC) != 0) {
            perror("pipe");
            hl_on_signal(SIGTERM);
        }
        uint32_t first = (uint32_t)((uint64_t)O.conns * (uint64_t)i / (uint64_t)NC);
        uint32_t last = (uint32_t)((uint64_t)O.conns * (uint64_t)(i + 1) / (uint64_t)NC);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            hl_on_signal(SIGTERM);
        }
        if (pid == 0) {
            signal(SIGINT, SIG_DFL);
            signal(SIGTERM, SIG_DFL);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            for (int j = 0; j < i; j++) {
                close(C[j].cmd_fd);
                close(C[j].rep_fd);
            }
            close(down[1]);
            close(up[0]);
            _exit(hl_worker_run(i, first, last - first, down[0], up[1]));
        }
        close(down[0]);
        close(up[1]);
        C[i].pid = pid;
        C[i].cmd_fd = down[1];
        C[i].rep_fd = up[0];
    }

    fprintf(stderr, "herald-load: connecting %u sockets with %d processes at %.0f/s\n", O.conns, NC,
            O.rate);
    uint64_t t_conn = hr_mono_us();
    if (hl_wait_all(HL_REP_CONNECTED, -1, O.phase_timeout_s) != 0)
        fprintf(stderr, "herald-load: connect phase timed out\n");
    double connect_s = (double)(hr_mono_us() - t_conn) / 1e6;
    uint64_t ok = 0, failed = 0, join_ok = 0, join_failed = 0, join_unacked = 0;
    char join_err[32] = "";
    for (int i = 0; i < NC; i++) {
        ok += C[i].rep.conn_ok;
        failed += C[i].rep.conn_failed;
        join_ok += C[i].rep.join_ok;
        join_failed += C[i].rep.join_failed;
        join_unacked += C[i].rep.join_unacked;
        if (C[i].rep.join_err_code[0])
            memcpy(join_err, C[i].rep.join_err_code, sizeof(join_err));
    }
    fprintf(stderr,
            "herald-load: connected ok=%" PRIu64 " failed=%" PRIu64 " in %.1fs; joined ok=%" PRIu64
            " failed=%" PRIu64 " unacked=%" PRIu64 "\n",
            ok, failed, connect_s, join_ok, join_failed, join_unacked);
    hl_msleep(1.0); /* let the gateways finish their per-socket work before sampling */
    uint64_t rss_after = hl_gateway_rss();
    char rss_each[HL_MAX_PIDS * 12] = "";
    for (int i = 0, off = 0; i < O.ngw_pids && off < (int)sizeof(rss_each) - 12; i++)
        off += snprintf(rss_each + off, sizeof(rss_each) - (size_t)off, "%s%" PRIu64, i ? "," : "",
                        hl_proc_rss_kib(O.gw_pids[i]));
    hl_msleep(O.hold_s > 1.0 ? O.hold_s - 1.0 : 0);

    int join_unsupported = O.room != NULL && join_ok == 0 && join_unacked == 0 && join_failed > 0 &&
                           strcmp(join_err, "unknown_type") == 0;
    double phase_s = 0;
    int phase_timeouts = 0;
    uint64_t chat_expect = 0;
    if (O.publish > 0 && O.room != NULL && !join_unsupported) {
        fprintf(stderr, "herald-load: publishing %u messages at %.1f/s\n", O.publish, O.pub_rate);
        hl_send_cmd(0, 'P');
        uint64_t t = hr_mono_us();
        if (hl_wait_all(HL_REP_PHASE_DONE, 0, O.publish / O.pub_rate + 60) != 0)
            phase_timeouts++;
        phase_s = (double)(hr_mono_us() - t) / 1e6;
        chat_expect = C[0].rep.pub_sent * (join_ok + join_unacked);
        hl_drain(chat_expect);
    }
    if (O.notify_count > 0) {
        C[0].phase_done = 0;
        fprintf(stderr, "herald-load: posting %u notifications at %.0f/s\n", O.notify_count,
                O.notify_rate);
        hl_send_cmd(0, 'N');
        uint64_t t = hr_mono_us();
        if (hl_wait_all(HL_REP_PHASE_DONE, 0, O.notify_count / O.notify_rate + 60) != 0)
            phase_timeouts++;
        phase_s = (double)(hr_mono_us() - t) / 1e6;
        hl_drain(chat_expect + C[0].rep.notify_rx_expected);
    }
    for (int i = 0; i < NC; i++)
        hl_send_cmd(i, 'S');
    int unreported = hl_wait_all(HL_REP_RESULT, -1, 30) != 0;
    if (unreported)
        fprintf(stderr, "herald-load: some workers did not report\n");
    for (int i = 0; i < NC; i++) {
        int st;
        if (!C[i].done)
            kill(C[i].pid, SIGKILL);
        waitpid(C[i].pid, &st, 0);
        C[i].pid = 0;
    }

    /* Aggregate. */
    hl_report_t *T = hr_calloc(1, sizeof(*T));
    uint64_t chat_last = 0, notify_last_rx = 0, pub_first = UINT64_MAX, notify_first = UINT64_MAX,
             notify_last = 0, load_rss = 0;
    for (int i = 0; i < NC; i++) {
        hl_report_t *r = &C[i].rep;
        T->conn_ok += r->conn_ok;
        T->conn_failed += r->conn_failed;
        T->conn_timeouts += r->conn_timeouts;
        T->dropped += r->dropped;
        T->frames_rx += r->frames_rx;
        T->bytes_rx += r->bytes_rx;
        T->pings_rx += r->pings_rx;
        T->errors_rx += r->errors_rx;
        T->chat_rx += r->chat_rx;
        T->pub_sent += r->pub_sent;
        T->pub_errors += r->pub_errors;
        T->notify_sent += r->notify_sent;
        T->notify_ok += r->notify_ok;
        T->notify_failed += r->notify_failed;
        T->notify_rx += r->notify_rx;
        T->notify_rx_expected += r->notify_rx_expected;
        if (r->notify_last_ok_us > T->notify_last_ok_us)
            T->notify_last_ok_us = r->notify_last_ok_us;
        if (r->notify_max_lag_us > T->notify_max_lag_us)
            T->notify_max_lag_us = r->notify_max_lag_us;
        if (r->chat_last_rx_us > chat_last)
            chat_last = r->chat_last_rx_us;
        if (r->notify_last_rx_us > notify_last_rx)
            notify_last_rx = r->notify_last_rx_us;
        if (r->pub_first_us && r->pub_first_us < pub_first)
            pub_first = r->pub_first_us;
        if (r->notify_first_us && r->notify_first_us < notify_first)
            notify_first = r->notify_first_us;
        if (r->notify_last_us > notify_last)
            notify_last = r->notify_last_us;
        load_rss += r->self_rss_kib;
        if (r->last_close_code)
            T->last_close_code = r->last_close_code;
        if (r->last_errno)
            T->last_errno = r->last_errno;
        if (r->notify_last_status)
            T->notify_last_status = r->notify_last_status;
        if (r->last_err_code[0])
            memcpy(T->last_err_code, r->last_err_code, sizeof(T->last_err_code));
        hl_hist_merge(&T->h_chat, &r->h_chat);
        hl_hist_merge(&T->h_notify, &r->h_notify);
        hl_hist_merge(&T->h_post, &r->h_post);
        hl_hist_merge(&T->h_post_svc, &r->h_post_svc);
    }

    hl_failures_t F = {0};
    if (T->conn_ok < O.conns)
        hl_fail(&F,
                "%" PRIu64 " of %u connections not established (%" PRIu64 " failed, %" PRIu64
                " timed out)",
                O.conns - T->conn_ok, O.conns, T->conn_failed, T->conn_timeouts);
    if (T->dropped > 0)
        hl_fail(&F, "%" PRIu64 " connections dropped by the server", T->dropped);
    if (O.room != NULL && !join_unsupported && (join_failed > 0 || join_unacked > 0))
        hl_fail(&F, "%" PRIu64 " joins failed, %" PRIu64 " unanswered", join_failed, join_unacked);
    if (phase_timeouts > 0)
        hl_fail(&F, "%d send phase(s) timed out", phase_timeouts);
    if (unreported)
        hl_fail(&F, "some workers did not report");
    printf("connections_target=%u\n", O.conns);
    printf("connections_ok=%" PRIu64 "\n", T->conn_ok);
    printf("connections_failed=%" PRIu64 "\n", T->conn_failed);
    printf("connections_timed_out=%" PRIu64 "\n", T->conn_timeouts);
    printf("connections_dropped=%" PRIu64 "\n", T->dropped);
    printf("connect_seconds=%.2f\n", connect_s);
    if (T->last_errno)
        printf("last_socket_error=\"%s\"\n", strerror(T->last_errno));
    if (T->last_close_code)
        printf("last_close_code=%d\n", T->last_close_code);
    printf("load_rss_kib=%" PRIu64 "\n", load_rss);
    if (O.ngw_pids > 0) {
        printf("gateway_processes=%d\n", O.ngw_pids);
        printf("gateway_rss_kib_before=%" PRIu64 "\n", rss_before);
        printf("gateway_rss_kib_after=%" PRIu64 "\n", rss_after);
        printf("gateway_rss_kib_after_each=%s\n", rss_each);
        printf("rss_per_conn_bytes=%" PRIu64 "\n",
               T->conn_ok
                   ? (rss_after > rss_before ? (rss_after - rss_before) * 1024 / T->conn_ok : 0)
                   : 0);
    }
    printf("frames_received=%" PRIu64 "\n", T->frames_rx);
    printf("server_pings_received=%" PRIu64 "\n", T->pings_rx);
    printf("error_frames_received=%" PRIu64 "\n", T->errors_rx);
    if (T->last_err_code[0])
        printf("last_error_code=%s\n", T->last_err_code);
    if (O.room != NULL) {
        printf("join_ok=%" PRIu64 "\njoin_failed=%" PRIu64 "\njoin_unacked=%" PRIu64 "\n", join_ok,
               join_failed, join_unacked);
        if (join_err[0])
            printf("join_error=%s\n", join_err);
    }
    if (join_unsupported) {
        printf("publish_skipped=\"gateway answered join with error unknown_type\"\n");
    } else if (O.publish > 0 && O.room != NULL) {
        uint64_t members = join_ok + join_unacked;
        hl_fantab_t all;
        hl_fantab_init(&all, O.publish);
        for (int i = 0; i < NC; i++)
            for (uint32_t k = 0; k < C[i].rep.nfan; k++)
                hl_fantab_add(&all, C[i].fans[k].ts, C[i].fans[k].count, C[i].fans[k].max_us);
        hl_hist_t *h_all = hr_calloc(1, sizeof(*h_all));
        uint64_t complete = 0, seen = 0;
        for (uint32_t k = 0; k < all.cap; k++) {
            if (all.slot[k].ts == 0)
                continue;
            seen++;
            if (all.slot[k].count >= members) {
                complete++;
                hl_hist_add(h_all, all.slot[k].max_us);
            }
        }
        double span = chat_last > pub_first && pub_first != UINT64_MAX
                          ? (double)(chat_last - pub_first) / 1e6
                          : 0;
        printf("room_members=%" PRIu64 "\n", members);
        printf("publish_sent=%" PRIu64 "\n", T->pub_sent);
        printf("publish_errors=%" PRIu64 "\n", T->pub_errors);
        printf("publish_seconds=%.2f\n", phase_s);
        printf("messages_seen=%" PRIu64 "\n", seen);
        printf("messages_delivered_to_all=%" PRIu64 "\n", complete);
        /* A publish answered with an error (rate_limited, ...) owes no frames. */
        uint64_t owed =
            (T->pub_sent - (T->pub_errors < T->pub_sent ? T->pub_errors : T->pub_sent)) * members;
        printf("chat_frames_received=%" PRIu64 "\n", T->chat_rx);
        printf("chat_frames_expected=%" PRIu64 "\n", owed);
        printf("chat_frames_lost=%" PRIu64 "\n", owed > T->chat_rx ? owed - T->chat_rx : 0);
        if (T->pub_sent < O.publish)
            hl_fail(&F, "published %" PRIu64 " of %u", T->pub_sent, O.publish);
        if (T->pub_errors > 0)
            hl_fail(&F, "%" PRIu64 " publishes answered with an error", T->pub_errors);
        if (T->chat_rx < owed)
            hl_fail(&F, "%" PRIu64 " chat frames lost", owed - T->chat_rx);
        if (complete < T->pub_sent)
            hl_fail(&F, "%" PRIu64 " messages did not reach every member", T->pub_sent - complete);
        printf("frames_per_sec=%.0f\n", span > 0 ? (double)T->chat_rx / span : 0);
        hl_print_hist("latency_us", &T->h_chat);
        hl_print_hist("all_delivered_us", h_all);
        hr_free(h_all);
        hr_free(all.slot);
    }
    if (O.notify_count > 0) {
        double span = notify_last > notify_first && notify_first != UINT64_MAX
                          ? (double)(notify_last - notify_first) / 1e6
                          : 0;
        double rx_span = notify_last_rx > notify_first && notify_first != UINT64_MAX
                             ? (double)(notify_last_rx - notify_first) / 1e6
                             : 0;
        /* Accepted per second, from the first send to the last 202. */
        double ok_span = T->notify_last_ok_us > notify_first && notify_first != UINT64_MAX
                             ? (double)(T->notify_last_ok_us - notify_first) / 1e6
                             : 0;
        printf("notify_target=%u\n", O.notify_count);
        printf("notify_sent=%" PRIu64 "\n", T->notify_sent);
        printf("notify_accepted=%" PRIu64 "\n", T->notify_ok);
        printf("notify_failed=%" PRIu64 "\n", T->notify_failed);
        if (T->notify_last_status)
            printf("notify_last_status=%d\n", T->notify_last_status);
        printf("notify_rate_sent=%.0f\n", span > 0 ? (double)(T->notify_sent - 1) / span : 0);
        printf("notify_rate_achieved=%.0f\n", ok_span > 0 ? (double)T->notify_ok / ok_span : 0);
        printf("notify_max_lag_us=%" PRIu64 "\n", T->notify_max_lag_us);
        hl_print_hist("notify_post_rtt_us", &T->h_post);
        hl_print_hist("notify_post_service_us", &T->h_post_svc);
        printf("notify_frames_received=%" PRIu64 "\n", T->notify_rx);
        printf("notify_frames_expected=%" PRIu64 "\n", T->notify_rx_expected);
        printf("notify_frames_lost=%" PRIu64 "\n",
               T->notify_rx_expected > T->notify_rx ? T->notify_rx_expected - T->notify_rx : 0);
        printf("notify_frames_per_sec=%.0f\n", rx_span > 0 ? (double)T->notify_rx / rx_span : 0);
        hl_print_hist("notify_latency_us", &T->h_notify);
        if (T->notify_ok < O.notify_count)
            hl_fail(&F,
                    "%" PRIu64 " of %u POSTs not accepted (%" PRIu64 " answered otherwise, %" PRIu64
                    " not sent)",
                    O.notify_count - T->notify_ok, O.notify_count, T->notify_failed,
                    O.notify_count - T->notify_sent);
        if (T->notify_rx < T->notify_rx_expected)
            hl_fail(&F, "%" PRIu64 " notification frames lost",
                    T->notify_rx_expected - T->notify_rx);
    }
    if (join_unsupported)
        hl_fail(&F, "join refused with unknown_type");
    printf("run_ok=%d\n", F.n == 0);
    if (F.n > 0)
        printf("failures=\"%s\"\n", F.text);
    fflush(stdout);
    for (int i = 0; i < NC; i++)
        hr_free(C[i].fans);
    /* 3: rooms unsupported; 2: the run missed something it expected (a
     * connection, a request, a frame): its numbers describe a failed run. */
    int rc = join_unsupported ? 3 : T->conn_ok == 0 ? 1 : F.n > 0 ? 2 : 0;
    if (F.n > 0)
        fprintf(stderr, "herald-load: FAILED: %s\n", F.text);
    hr_free(T);
    hr_free(C);
    return rc;
}
