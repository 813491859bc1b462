/*
 * hr_httpd (ingest's HTTP/1.1 server) on arbitrary client bytes: a real
 * hr_httpd_conn_t over a socketpair, without a listener or an event loop.
 * The harness plays libevent: it writes the input into the client end and
 * calls the connection's read callback while it has read interest (and the
 * write callback while output waits), and reads the answers back from the
 * client end. The service callback answers some requests at once and keeps
 * others, answered by the harness between feeds.
 *
 * The first input byte seeds the cut points and the service's choices (the
 * choices depend only on the request's number, so every run makes the same
 * ones). The stream runs three times: in one piece, cut into pieces, and cut
 * with the client vanishing part way and deadlines forced to pass. Checked:
 *   - no crash, no ASan/UBSan report, no leak (the third run included);
 *   - answers come back in request order (each carries its request's number);
 *   - answers waiting for a client that does not read stop further requests
 *     from being parsed (what waits stays within HR_HTTPD_OUT_KEEP and one answer);
 *   - the answer stream in pieces equals the one-piece stream, apart from the
 *     Date values, 100 Continue (sent only when the body is not in yet) and
 *     which refusal a refused stream gets;
 *   - every head the service sees, rebuilt from what hr_httpd hands it
 *     (method, target, fields), passes hr_http_head_check with the same
 *     framing, and a Content-Length body is as long as it says.
 */
#include "../common/src/hr_httpd.c"
#include "../common/src/hr_httpd_req.c"

#include <fcntl.h>
#include <stdint.h>
#include <sys/ioctl.h>

#define MAX_BODY 2048     /* small, so the fuzzer reaches 413 */
#define OUT_MAX (1 << 22) /* far more answer than any input can ask for */
#define OUT_ONE 4096      /* more than any one answer (100 Continue included) */
#define REQ_MAX 4096      /* requests of one run whose method is remembered */

static struct event_base *base; /* the harness's one fixture */

/* The harness's own bookkeeping: no coverage feedback from it (it only slows the run). */
#define HARNESS_ONLY __attribute__((no_sanitize("coverage")))

static const hr_http_body_rule_t rules[] = {{"/n", 256}, {"/notifications/batch", 8192}};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    hr_log_init("fuzz", HR_LOG_ERROR);
    base = event_base_new();
    return base != NULL ? 0 : -1;
}

static uint32_t
mix(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* One run: the server, its one connection and the client end. */
typedef struct {
    hr_httpd_t srv;
    int peer;             /* the client's end of the socketpair, -1 once closed */
    uint32_t seed;        /* the service's choices */
    int nreq;             /* requests the service saw */
    hr_httpd_req_t *kept; /* borrowed: a request the service answers later */
    uint64_t kept_sum;    /* what the kept request said, when it came */
    int deaf;             /* the client never reads its answers */
    char *out;            /* owned: what the client read */
    size_t out_len, out_cap;
    unsigned char head[REQ_MAX]; /* request n was a HEAD (its answer has no body) */
} run_t;

static void
run_read_peer(run_t *u)
{
    if (u->peer < 0 || u->deaf)
        return;
    for (;;) {
        hr_httpd_reserve(&u->out, &u->out_cap, u->out_len, 4096);
        if (u->out_cap > OUT_MAX)
            abort();
        ssize_t n = recv(u->peer, u->out + u->out_len, u->out_cap - u->out_len, 0);
        if (n <= 0)
            return;
        u->out_len += (size_t)n;
    }
}

/* The answer: a status and body chosen by the request's number, which it carries (X-Seq). */
static void
run_answer(run_t *u, hr_httpd_req_t *r, int n)
{
    uint32_t x = mix(u->seed ^ (uint32_t)n * 0x9e3779b9U);
    char seq[16];
    snprintf(seq, sizeof(seq), "%d", n);
    hr_httpd_add_header(r, "X-Seq", seq);
    if (x & 0x10) {
        /* Past the request's inline room for answer headers. */
        char big[300];
        memset(big, 'v', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        hr_httpd_add_header(r, "X-Big", big);
    }
    if (hr_httpd_out_header(r, "X-Seq") == NULL)
        abort();
    static const int statuses[] = {200, 202, 400, 404, 503};
    int st = statuses[(x >> 8) % HR_ARRAY_LEN(statuses)];
    if (st == 503 || st == 400) {
        hr_httpd_send_error(r, st, "nope", "refused by the service");
        return;
    }
    char body[1200];
    size_t len = (size_t)snprintf(body, sizeof(body), "{\"n\":%d,\"x\":%u}", n, x % 1000);
    if (x & 0x40) {
        /* Sometimes a larger body, so unread answers soon exceed what may wait. */
        size_t pad = (x >> 12) % 1024;
        memset(body + len, ' ', pad);
        len += pad;
    }
    if (x & 0x20)
        hr_httpd_send(r, st, "text/plain", body, len);
    else
        hr_httpd_send_json(r, st, body, len);
}

/* Rebuilds the head the service was given and checks it as a client's head. */
static void
check_head(hr_httpd_req_t *r)
{
    hr_httpd_conn_t *c = r->conn;
    size_t cap = 64 + strlen(hr_httpd_uri(r)), len = 0;
    for (size_t i = 0; i < hr_httpd_nheaders(r); i++) {
        const char *name, *value;
        hr_httpd_header_at(r, i, &name, &value);
        cap += strlen(name) + strlen(value) + 4;
    }
    char *h = hr_malloc(cap);
    len += (size_t)snprintf(h, cap, "%s %s HTTP/1.%c\r\n", hr_httpd_method_name(r), hr_httpd_uri(r),
                            c->h.http10 ? '0' : '1');
    for (size_t i = 0; i < hr_httpd_nheaders(r); i++) {
        const char *name, *value;
        hr_httpd_header_at(r, i, &name, &value);
        len += (size_t)snprintf(h + len, cap - len, "%s: %s\r\n", name, value);
    }
    len += (size_t)snprintf(h + len, cap - len, "\r\n");
    hr_http_head_t hh;
    if (hr_http_head_check(h, len, &hh) != 0)
        abort(); /* the service was handed a head the checks refuse */
    if (hh.has_length != c->h.has_length || hh.length != c->h.length ||
        hh.chunked != c->h.chunked || hh.http10 != c->h.http10 ||
        hh.conn_close != c->h.conn_close || hh.conn_keepalive != c->h.conn_keepalive)
        abort(); /* rebuilt from what the service sees, the head frames differently */
    size_t pl;
    const char *p = hr_httpd_path(r, &pl);
    if (pl != hh.path_len || memcmp(p, hh.path, pl) != 0)
        abort();
    size_t bl;
    hr_httpd_body(r, &bl);
    if (c->h.has_length && bl != c->h.length)
        abort();
    hr_free(h);
}

HARNESS_ONLY
static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return (h ^ 0xff) * 0x100000001b3ULL; /* a separator: fields do not run together */
}

/* A digest of all a request tells the service: it must not change until the answer. */
static uint64_t
req_sum(const hr_httpd_req_t *r)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(h, hr_httpd_method_name(r), strlen(hr_httpd_method_name(r)));
    h = fnv(h, hr_httpd_uri(r), strlen(hr_httpd_uri(r)));
    for (size_t i = 0; i < hr_httpd_nheaders(r); i++) {
        const char *name, *value;
        hr_httpd_header_at(r, i, &name, &value);
        h = fnv(h, name, strlen(name));
        h = fnv(h, value, strlen(value));
    }
    size_t bl;
    const char *b = hr_httpd_body(r, &bl);
    return fnv(h, b, bl);
}

/* The service answers the request it kept, which is as it came. */
static void
run_answer_kept(run_t *u)
{
    hr_httpd_req_t *r = u->kept;
    u->kept = NULL;
    if (req_sum(r) != u->kept_sum)
        abort(); /* the request changed under the service before its answer */
    run_answer(u, r, u->nreq - 1);
}

static void
service_cb(hr_httpd_req_t *r, void *arg)
{
    run_t *u = arg;
    if (u->kept != NULL)
        abort(); /* a second request of the connection while one is with the service */
    check_head(r);
    int n = u->nreq++;
    if (n < REQ_MAX)
        u->head[n] = hr_httpd_method(r) == HR_HTTPD_HEAD;
    if (mix(u->seed + (uint32_t)n) & 1)
        run_answer(u, r, n);
    else {
        u->kept = r;
        u->kept_sum = req_sum(r);
    }
}

static hr_httpd_conn_t *
run_conn(run_t *u)
{
    return u->srv.conn_list;
}

static void
run_open(run_t *u, uint32_t seed)
{
    memset(u, 0, sizeof(*u));
    hr_httpd_t *h = &u->srv;
    h->base = base;
    h->lfd = -1;
    h->rules = (hr_http_body_rule_t *)rules;
    h->nrules = HR_ARRAY_LEN(rules);
    h->max_body = MAX_BODY;
    h->max_in = HR_HTTP_HEAD_MAX + 8192 + HR_HTTPD_CHUNK_LINE + HR_HTTPD_READ_MIN;
    h->cors_origin = (char *)((seed & 1) ? "https://a.example" : "");
    h->header_timeout_ms = 10000;
    h->idle_timeout_ms = 10000;
    h->max_connections = 1000;
    h->cb = service_cb;
    h->cbarg = u;
    u->seed = seed;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    u->peer = sv[1];
    hr_httpd_conn_new(h, sv[0]);
}

/* Plays the event loop until nothing more happens: reads, writes, the kept answer. */
static void
run_pump(run_t *u, int answer_kept)
{
    for (int guard = 0; guard < 100000; guard++) {
        hr_httpd_conn_t *c = run_conn(u);
        run_read_peer(u);
        if (c == NULL)
            return;
        /* Answers a client does not read stop further requests: what waits stays bounded. */
        if (c->out_len - c->out_off > HR_HTTPD_OUT_KEEP + OUT_ONE)
            abort();
        if (c->fd >= 0 && c->writing) {
            size_t before = c->out_off;
            hr_httpd_write_cb(c->fd, EV_WRITE, c);
            if (run_conn(u) == NULL || c->out_off != before)
                continue;
        }
        if (c->fd >= 0 && c->reading) {
            int avail = 0;
            ioctl(c->fd, FIONREAD, &avail);
            int hup = u->peer < 0;
            if (!hup) {
                /* The client's end shut for writing: a read returns 0 (once, then reading stops).
                 */
                char b;
                ssize_t n = recv(c->fd, &b, 1, MSG_PEEK);
                hup = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
            }
            if (avail > 0 || hup) {
                size_t in_len = c->in_len;
                int state = c->state, eof = c->eof;
                hr_httpd_read_cb(c->fd, EV_READ, c);
                if (run_conn(u) == NULL)
                    continue;
                int left = 0;
                if (c->fd >= 0)
                    ioctl(c->fd, FIONREAD, &left);
                if (c->in_len != in_len || (int)c->state != state || !c->reading || c->eof != eof ||
                    left != avail)
                    continue;
            }
        }
        if (answer_kept && u->kept != NULL) {
            run_answer_kept(u);
            continue;
        }
        return;
    }
    abort(); /* the connection never settles */
}

/* Sends d to the server and plays the loop; answer_kept: the service answers a kept request. */
static void
run_feed(run_t *u, const uint8_t *d, size_t n, int answer_kept)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = u->peer >= 0 ? send(u->peer, d + off, n - off, MSG_NOSIGNAL) : -1;
        if (w <= 0) {
            /* The server stopped reading (busy or closed): let it move, or give up. */
            hr_httpd_conn_t *c = run_conn(u);
            if (c == NULL || c->fd < 0 || u->peer < 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
                return;
            size_t before = c->in_len;
            run_pump(u, 1);
            if (run_conn(u) == c && c->in_len == before && u->kept == NULL && !c->reading)
                return;
            continue;
        }
        off += (size_t)w;
        run_pump(u, answer_kept);
    }
}

/* The end of the stream: the client shuts its end, every kept request is answered. */
static void
run_close(run_t *u)
{
    if (u->peer >= 0)
        shutdown(u->peer, SHUT_WR);
    run_pump(u, 1);
    hr_httpd_conn_t *c = run_conn(u);
    if (c != NULL) {
        /* Still open (lingering, or output the client never read): the server's teardown. */
        if (u->kept != NULL)
            run_answer_kept(u);
        c = run_conn(u);
        if (c != NULL) {
            hr_httpd_close_fd(c);
            hr_httpd_conn_free(c);
        }
    }
    if (u->kept != NULL)
        abort();
    if (u->peer >= 0) {
        run_read_peer(u);
        close(u->peer);
        u->peer = -1;
    }
    if (u->srv.conns != 0)
        abort(); /* the count of open sockets drifted */
}

/* The answers with Date values and 100 Continue removed. */
HARNESS_ONLY
static size_t
normalize(const char *in, size_t n, char *out)
{
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        /* The service's bodies never hold it: it is an interim answer wherever it is. */
        if (in[i] == 'H' && n - i >= sizeof(cont) - 1 &&
            memcmp(in + i, cont, sizeof(cont) - 1) == 0) {
            i += sizeof(cont) - 1;
            continue;
        }
        if (in[i] == '\r' && n - i >= 8 && memcmp(in + i, "\r\nDate: ", 8) == 0) {
            const char *e = memmem(in + i + 2, n - i - 2, "\r\n", 2);
            memcpy(out + o, "\r\nDate:", 7);
            o += 7;
            i = e != NULL ? (size_t)(e - in) : n;
            continue;
        }
        out[o++] = in[i++];
    }
    return o;
}

/*
 * The answers the service gave (each with X-Seq) in order, up to the first
 * answer without one (a refusal of the server). Returns the length of that
 * prefix; *refused: whether a refusal follows.
 */
HARNESS_ONLY
static size_t
served_prefix(const char *s, size_t n, const run_t *u, int *refused)
{
    size_t at = 0;
    int want = 0;
    *refused = 0;
    while (at < n) {
        const char *end = memmem(s + at, n - at, "\r\n\r\n", 4);
        if (end == NULL)
            abort(); /* a torn answer head */
        size_t hl = (size_t)(end - (s + at)) + 4;
        const char *cl = memmem(s + at, hl, "\r\nContent-Length: ", 18);
        if (cl == NULL)
            abort();
        size_t blen = strtoul(cl + 18, NULL, 10);
        const char *sq = memmem(s + at, hl, "\r\nX-Seq: ", 9);
        if (sq == NULL) {
            if (memmem(s + at, hl, "Connection: close", 17) == NULL)
                abort(); /* a refusal that keeps the connection */
            *refused = 1;
            if (at + hl + blen != n)
                abort(); /* something after the refusal */
            return at;
        }
        int seq = atoi(sq + 9);
        if (seq != want++)
            abort(); /* answers out of request order */
        int head_only = seq < REQ_MAX ? u->head[seq] : 0;
        at += hl + (head_only ? 0 : blen);
        if (at > n)
            abort(); /* a torn answer body */
    }
    if (want != u->nreq)
        abort(); /* a request the service saw has no answer */
    return at;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t seed = mix(data[0] * 2654435761u + 1);
    data++, size--;

    run_t whole, cut, gone;
    run_open(&whole, seed);
    run_feed(&whole, data, size, 0);
    run_close(&whole);

    run_open(&cut, seed);
    uint32_t s = seed;
    for (size_t off = 0; off < size;) {
        s = s * 1103515245u + 12345u;
        size_t n = 1 + (s >> 16) % ((s & 0x700) == 0 ? 8 : 400);
        if (n > size - off)
            n = size - off;
        run_feed(&cut, data + off, n, (s & 0x200) != 0);
        off += n;
    }
    run_close(&cut);

    char *na = hr_malloc(whole.out_len + 1), *nb = hr_malloc(cut.out_len + 1);
    size_t la = normalize(whole.out, whole.out_len, na);
    size_t lb = normalize(cut.out, cut.out_len, nb);
    int ra, rb;
    size_t pa = served_prefix(na, la, &whole, &ra);
    size_t pb = served_prefix(nb, lb, &cut, &rb);
    if (getenv("FUZZ_HTTPD_SHOW") != NULL) /* to see what a run answered */
        fprintf(stderr, "--- %d requests, one piece:\n%.*s\n--- %d requests, cut:\n%.*s\n",
                whole.nreq, (int)la, na, cut.nreq, (int)lb, nb);
    if (ra != rb || pa != pb || memcmp(na, nb, pa) != 0)
        abort(); /* the stream was answered differently because of where reads ended */
    if (!ra && (la != lb || memcmp(na, nb, la) != 0))
        abort();
    hr_free(na);
    hr_free(nb);

    /* Cut again; part way the deadlines pass, or the client vanishes without reading. */
    run_open(&gone, seed ^ 0x5bd1e995U);
    gone.deaf = (seed & 0x18) == 0; /* its close then resets the connection (unread answers) */
    if (gone.deaf) {
        /* A small socket buffer: answers soon wait for the client in the server. */
        int small = 4096;
        setsockopt(run_conn(&gone)->fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    }
    size_t stop = size > 0 ? mix(seed) % (size + 1) : 0;
    s = seed;
    for (size_t off = 0; off < size;) {
        s = s * 1103515245u + 12345u;
        size_t n = 1 + (s >> 16) % 100;
        if (n > size - off)
            n = size - off;
        run_feed(&gone, data + off, n, (s & 0x200) != 0);
        off += n;
        if (off >= stop) {
            hr_httpd_conn_t *c = run_conn(&gone);
            if ((seed & 6) == 0 && c != NULL) {
                if (c->deadline_ms != 0)
                    c->deadline_ms = 1;
                if (c->wdeadline_ms != 0)
                    c->wdeadline_ms = 1;
                hr_httpd_sweep_cb(-1, 0, &gone.srv);
                run_pump(&gone, 0);
            } else if (gone.peer >= 0) {
                close(gone.peer); /* unread answers: the server's next read is a reset */
                gone.peer = -1;
                run_pump(&gone, 0);
            }
            stop = SIZE_MAX;
        }
    }
    run_close(&gone);

    hr_free(whole.out);
    hr_free(cut.out);
    hr_free(gone.out);
    return 0;
}
