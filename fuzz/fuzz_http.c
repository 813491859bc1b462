/*
 * hr_http's input filter on arbitrary bytes: what every request to ingest and
 * history passes before evhttp sees it (the request-line and head checks of
 * hr_http_parse.c, Content-Length bodies, chunked bodies decoded into a
 * Content-Length one). evbuffers only: no socket, no evhttp.
 *
 * The first input byte seeds how the rest is cut into reads. Checked:
 *   - cut anywhere, a stream is passed the same way as in one read (the
 *     filter resumes its searches; it must not depend on packet boundaries),
 *     apart from which refusal it gives for a stream it refuses;
 *   - what it passed, passed again through a fresh filter, comes out
 *     unchanged (a rewritten chunked request is itself a valid request);
 *   - a head it passes is one hr_http_head_check accepts.
 */
#include "../common/src/hr_http.c"

#include <stdint.h>

#define MAX_BODY 4096 /* small, so the fuzzer reaches 413 */

static struct event_base *base; /* the harness's one fixture */

static const hr_http_body_rule_t rules[] = {{"/notifications", 1024}};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    hr_log_init("fuzz", HR_LOG_ERROR);
    base = event_base_new();
    return base != NULL ? 0 : -1;
}

/* The filter's state of one connection, over a fixture server. */
typedef struct {
    hr_http_t srv;
    hr_http_conn_t *c;
    struct evbuffer *src, *dst;
} pass_t;

static void
pass_open(pass_t *p)
{
    memset(&p->srv, 0, sizeof(p->srv));
    p->srv.base = base;
    p->srv.rules = (hr_http_body_rule_t *)rules;
    p->srv.nrules = 1;
    p->srv.max_body = MAX_BODY;
    p->srv.header_timeout_ms = HR_HTTP_HEADER_TIMEOUT_MS;
    p->c = hr_calloc(1, sizeof(*p->c));
    p->c->deadline = evtimer_new(base, hr_http_conn_deadline, p->c);
    p->c->srv = &p->srv;
    p->src = evbuffer_new();
    p->dst = evbuffer_new();
}

static void
pass_feed(pass_t *p, const uint8_t *d, size_t n)
{
    evbuffer_add(p->src, d, n);
    hr_http_filter_in(p->src, p->dst, -1, BEV_NORMAL, p->c);
}

static void
pass_close(pass_t *p)
{
    p->c->srv = NULL;
    hr_http_conn_free(p->c);
    evbuffer_free(p->src);
    evbuffer_free(p->dst);
}

/* dst up to a refusal ("GET herald:refused?…"), and whether there is one. */
static size_t
passed_len(struct evbuffer *dst, const char **out, int *refused)
{
    size_t n = evbuffer_get_length(dst);
    const char *b = n > 0 ? (const char *)evbuffer_pullup(dst, -1) : "";
    const char *r =
        memmem(b, n, "GET " HR_HTTP_REFUSED_PREFIX, strlen("GET " HR_HTTP_REFUSED_PREFIX));
    *out = b;
    *refused = r != NULL;
    return r != NULL ? (size_t)(r - b) : n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t seed = data[0] * 2654435761u + 1;
    data++, size--;

    pass_t whole, cut;
    pass_open(&whole);
    pass_feed(&whole, data, size);
    pass_open(&cut);
    for (size_t off = 0; off < size;) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 16) % 64;
        if (n > size - off)
            n = size - off;
        pass_feed(&cut, data + off, n);
        off += n;
    }

    const char *a, *b;
    int ra, rb;
    size_t la = passed_len(whole.dst, &a, &ra), lb = passed_len(cut.dst, &b, &rb);
    if (ra != rb || la != lb || memcmp(a, b, la) != 0 || whole.c->state != cut.c->state)
        abort(); /* the stream was read differently because of where reads ended */

    if (!ra && la > 0) {
        /* What passed is a request stream the filter passes unchanged. */
        pass_t again;
        pass_open(&again);
        pass_feed(&again, (const uint8_t *)a, la);
        const char *c;
        int rc;
        size_t lc = passed_len(again.dst, &c, &rc);
        if (rc || lc != la || memcmp(a, c, la) != 0)
            abort();
        /* Its first head is one the head check accepts. */
        const char *end = memmem(a, la, "\r\n\r\n", 4);
        hr_http_head_t h;
        if (end != NULL && hr_http_head_check(a, (size_t)(end - a) + 4, &h) != 0)
            abort();
        pass_close(&again);
    }
    pass_close(&whole);
    pass_close(&cut);
    return 0;
}
