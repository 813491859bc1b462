/*
 * hr_http_parse's head checks, and hr_httpd's requests and JSON answers
 * through a real server and an evhttp client on a loopback ephemeral port.
 */
#include "hr_test.h"

#include "hr_proto.h"
#include "herald/hr_alloc.h"
#include "herald/hr_core.h"
#include "herald/hr_http.h"
#include "herald/hr_httpd.h"
#include "herald/hr_http_parse.h"
#include "herald/hr_json.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether a request with the given Content-Type (NULL: none) is JSON. */
static int
is_json_with(const char *content_type)
{
    return hr_http_json_type(content_type);
}

HR_TEST(is_json_accepts_application_json_with_parameters_in_any_case)
{
    HR_CHECK_EQ_INT(is_json_with("application/json"), 1);
    HR_CHECK_EQ_INT(is_json_with("application/json; charset=utf-8"), 1);
    HR_CHECK_EQ_INT(is_json_with("application/json;charset=UTF-8"), 1);
    HR_CHECK_EQ_INT(is_json_with("Application/JSON"), 1);
    HR_CHECK_EQ_INT(is_json_with(" application/json"), 1);
}

HR_TEST(is_json_refuses_other_or_missing_types)
{
    HR_CHECK_EQ_INT(is_json_with(NULL), 0);
    HR_CHECK_EQ_INT(is_json_with(""), 0);
    HR_CHECK_EQ_INT(is_json_with("text/plain"), 0);
    HR_CHECK_EQ_INT(is_json_with("application/x-www-form-urlencoded"), 0);
    HR_CHECK_EQ_INT(is_json_with("application/jsonx"), 0);
    HR_CHECK_EQ_INT(is_json_with("application/json-patch+json"), 0);
    HR_CHECK_EQ_INT(is_json_with("application/jso"), 0);
    HR_CHECK_EQ_INT(is_json_with("text/application/json"), 0);
}

/* ---- through a real server ---- */

typedef struct {
    struct event_base *base;
    /* what the server saw */
    char path[256];
    int saw_json;
    char body[256];
    size_t body_len;
    /* what the client got */
    int status;
    char reply[1024];
    size_t reply_len;
    char content_type[128];
    char retry_after[32];
    int done;
} ctx_t;

static void
server_cb(hr_httpd_req_t *req, void *arg)
{
    ctx_t *c = arg;
    size_t plen;
    const char *path = hr_httpd_path(req, &plen);
    snprintf(c->path, sizeof(c->path), "%.*s", (int)plen, path);
    c->saw_json = hr_http_json_type(hr_httpd_header(req, "Content-Type"));
    size_t len;
    const char *body = hr_httpd_body(req, &len);
    c->body_len = len < sizeof(c->body) ? len : sizeof(c->body);
    memcpy(c->body, body, c->body_len);

    if (hr_httpd_path_is(req, "/json")) {
        hr_httpd_send_json(req, 202, "{\"id\":\"x\"}", 10);
    } else if (hr_httpd_path_is(req, "/missing")) {
        hr_notification_t n = {0};
        hr_proto_err_t e;
        if (hr_proto_parse_request(body, len, &n, &e) == 0) {
            hr_notification_clear(&n);
            hr_httpd_send_json(req, 202, "{}", 2);
        } else {
            hr_httpd_send_error(req, e.status, e.code, e.message);
        }
    } else if (hr_httpd_path_is(req, "/unavailable")) {
        hr_httpd_send_error(req, 503, HR_E_UNAVAILABLE, "redis is \"down\"\n");
    } else {
        hr_httpd_send_error(req, 404, HR_E_NOT_FOUND, "no such endpoint");
    }
}

static void
client_cb(struct evhttp_request *req, void *arg)
{
    ctx_t *c = arg;
    c->done = 1;
    if (req != NULL) {
        c->status = evhttp_request_get_response_code(req);
        struct evbuffer *b = evhttp_request_get_input_buffer(req);
        c->reply_len =
            evbuffer_remove(b, c->reply, sizeof(c->reply) - 1) > 0 ? strlen(c->reply) : 0;
        struct evkeyvalq *h = evhttp_request_get_input_headers(req);
        const char *ct = evhttp_find_header(h, "Content-Type");
        const char *ra = evhttp_find_header(h, "Retry-After");
        snprintf(c->content_type, sizeof(c->content_type), "%s", ct ? ct : "");
        snprintf(c->retry_after, sizeof(c->retry_after), "%s", ra ? ra : "");
    }
    event_base_loopexit(c->base, NULL);
}

/*
 * Starts a server on 127.0.0.1:0, sends one request, runs the loop until the
 * reply (or 5 s). Fills c; returns 0 or HR_ERR.
 */
static int
round_trip(ctx_t *c, enum evhttp_cmd_type method, const char *uri, const char *content_type,
           const char *body)
{
    memset(c, 0, sizeof(*c));
    c->base = event_base_new();
    char err[128];
    hr_httpd_opts_t o = {.host = "127.0.0.1", .max_body = HR_BODY_MAX, .cb = server_cb, .cbarg = c};
    hr_httpd_t *http = hr_httpd_create(c->base, &o, err, sizeof(err));
    if (!HR_CHECK(http != NULL)) {
        HR_FAIL("listen: %s", err);
        event_base_free(c->base);
        return HR_ERR;
    }
    int port = hr_httpd_port(http);
    HR_CHECK_CMP_INT(port, >, 0);

    struct evhttp_connection *conn =
        evhttp_connection_base_new(c->base, NULL, "127.0.0.1", (ev_uint16_t)port);
    struct evhttp_request *req = evhttp_request_new(client_cb, c);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", "127.0.0.1");
    if (content_type != NULL)
        evhttp_add_header(h, "Content-Type", content_type);
    if (body != NULL)
        evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    evhttp_make_request(conn, req, method, uri);

    struct timeval five = {5, 0};
    event_base_loopexit(c->base, &five);
    event_base_dispatch(c->base);
    HR_CHECK(c->done);

    evhttp_connection_free(conn);
    hr_httpd_destroy(http);
    event_base_free(c->base);
    return c->done ? 0 : HR_ERR;
}

HR_TEST(listen_on_port_0_reports_the_bound_port)
{
    struct event_base *base = event_base_new();
    char err[128];
    hr_httpd_opts_t o = {.host = "127.0.0.1", .max_body = HR_BODY_MAX, .cb = server_cb};
    hr_httpd_t *http = hr_httpd_create(base, &o, err, sizeof(err));
    HR_REQUIRE(http != NULL);
    int port = hr_httpd_port(http);
    HR_CHECK_CMP_INT(port, >, 0);
    HR_CHECK_CMP_INT(port, <=, 65535);

    /* The same port again is taken: an error naming it, not a crash. */
    o.port = port;
    hr_httpd_t *again = hr_httpd_create(base, &o, err, sizeof(err));
    HR_CHECK(again == NULL);
    char want[32];
    snprintf(want, sizeof(want), "%d", port);
    HR_CHECK_CONTAINS(err, want);
    hr_httpd_destroy(again);
    hr_httpd_destroy(http);
    event_base_free(base);
}

/* hr_http_head_check on a literal head; returns the refusal's status, or 0. */
static int
head_status(const char *head)
{
    size_t len = strlen(head);
    char *buf = hr_test_memdup(head, len);
    hr_http_head_t h;
    int idx = hr_http_head_check(buf, len, &h);
    free(buf);
    return idx == 0 ? 0 : hr_http_refusal(idx)->status;
}

HR_TEST(head_check_accepts_plain_requests)
{
    HR_CHECK_EQ_INT(head_status("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    HR_CHECK_EQ_INT(head_status("GET / HTTP/1.0\r\n\r\n"), 0);
    HR_CHECK_EQ_INT(head_status("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    HR_CHECK_EQ_INT(
        head_status("POST /n?a=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 42, 42\r\n\r\n"), 0);
    const char *t = "POST /n/batch?x HTTP/1.1\r\nhost:x\r\nTransfer-Encoding:  Chunked \r\n\r\n";
    hr_http_head_t h;
    HR_REQUIRE_EQ_INT(hr_http_head_check(t, strlen(t), &h), 0);
    HR_CHECK(h.chunked);
    HR_CHECK_EQ_MEM(h.path, h.path_len, "/n/batch", 8);
}

HR_TEST(head_check_refuses_ambiguous_framing)
{
    /* Two lengths, a spaced or unknown coding, both framings at once. */
    HR_CHECK_EQ_INT(head_status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                                "Content-Length: 2\r\n\r\n"),
                    400);
    HR_CHECK_EQ_INT(head_status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\n"), 400);
    HR_CHECK_EQ_INT(head_status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n"), 400);
    HR_CHECK_EQ_INT(
        head_status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        400);
    HR_CHECK_EQ_INT(
        head_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"), 400);
    HR_CHECK_EQ_INT(
        head_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
    HR_CHECK_EQ_INT(head_status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                "Content-Length: 3\r\n\r\n"),
                    400);
    HR_CHECK_EQ_INT(head_status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
}

HR_TEST(head_check_refuses_bad_lines_hosts_and_characters)
{
    HR_CHECK_EQ_INT(head_status("GET / HTTP/1.1\r\n\r\n"), 400);                       /* no Host */
    HR_CHECK_EQ_INT(head_status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400); /* two */
    HR_CHECK_EQ_INT(head_status("GET / HTTP/1.1\nHost: x\n\n"), 400);                  /* bare LF */
    HR_CHECK_EQ_INT(head_status("GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n"), 400);         /* bare CR */
    HR_CHECK_EQ_INT(head_status("GET / HTTP/1.1\r\nHost: x\x01\r\n\r\n"), 400);
    HR_CHECK_EQ_INT(head_status("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"), 400);
    HR_CHECK_EQ_INT(head_status("GET / HTTP/1.1\r\nNo-Colon\r\nHost: x\r\n\r\n"), 400);
    HR_CHECK_EQ_INT(head_status("GET /\r\n\r\n"), 400); /* HTTP/0.9 */
    HR_CHECK_EQ_INT(head_status("PRI * HTTP/2.0\r\n\r\n"), 505);
    HR_CHECK_EQ_INT(head_status("TRACE / HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
    HR_CHECK_EQ_INT(head_status("CONNECT a:1 HTTP/1.1\r\nHost: x\r\n\r\n"), 405);
    HR_CHECK_EQ_INT(head_status("BREW / HTTP/1.1\r\nHost: x\r\n\r\n"), 501);
    HR_CHECK_EQ_INT(head_status("GET http://a/ HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    HR_CHECK_EQ_INT(head_status("GET /\x80 HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    HR_CHECK_EQ_INT(head_status("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    /* A NUL inside Host (after "x") cuts nothing short: the length is what counts. */
    static const char nul[] = "GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n";
    hr_http_head_t h;
    HR_CHECK_CMP_INT(hr_http_head_check(nul, sizeof(nul) - 1, &h), >, 0);

    char big[HR_HTTP_URI_MAX + 64];
    snprintf(big, sizeof(big), "GET /%0*d HTTP/1.1\r\nHost: x\r\n\r\n", HR_HTTP_URI_MAX, 0);
    HR_CHECK_EQ_INT(head_status(big), 414);
}

/* hr_http_head_parse's refusal index for a literal head. */
static int
head_idx(const char *head)
{
    hr_http_head_t h;
    return hr_http_head_check(head, strlen(head), &h);
}

HR_TEST(head_check_names_every_bare_lf_and_lone_cr)
{
    /* Wherever it sits: the request line, a name, a value, after the last field. */
    HR_CHECK_EQ_INT(head_idx("GET /\n HTTP/1.1\r\nHost: x\r\n\r\n"), HR_HTTP_R_BARE_LF);
    HR_CHECK_EQ_INT(head_idx("GET / HTTP/1.1\r\nHo\nst: x\r\n\r\n"), HR_HTTP_R_BARE_LF);
    HR_CHECK_EQ_INT(head_idx("GET / HTTP/1.1\r\nHost: x\ny\r\n\r\n"), HR_HTTP_R_BARE_LF);
    HR_CHECK_EQ_INT(head_idx("GET / HTTP/1.1\r\nHost: x\r\n\nX: y\r\n\r\n"), HR_HTTP_R_BARE_LF);
    HR_CHECK_EQ_INT(head_idx("GET / HTTP/1.1\rHost: x\r\n\r\n"), HR_HTTP_R_BARE_LF);
    HR_CHECK_EQ_INT(head_idx("GET / HTTP/1.1\r\nHost: x\r\r\n\r\n"), HR_HTTP_R_BARE_LF);
    HR_CHECK_EQ_INT(head_idx("GET / HTTP/1.1\r\nHost: x\r\n\r\n\n"), HR_HTTP_R_BARE_LF);
    HR_CHECK_EQ_INT(head_idx("GET / HTTP/1.1\r\nHost: x\r\n\r"), HR_HTTP_R_BARE_LF);
    HR_CHECK_EQ_INT(head_idx("GET / HTTP/1.1\nHost: x\n\n"), HR_HTTP_R_BARE_LF);
    /* Other control characters are CTL, not line ends. */
    HR_CHECK_EQ_INT(head_idx("GET / HTTP/1.1\r\nHost: x\x7f\r\n\r\n"), HR_HTTP_R_CTL);
    HR_CHECK_EQ_INT(head_idx("GET / HTTP/1.1\r\nHost: x\ty\r\n\r\n"), 0);
}

HR_TEST(head_parse_records_fields_version_and_connection_tokens)
{
    const char *t =
        "POST /n HTTP/1.1\r\nHost: x\r\nX-A:  one two \r\nConnection: Upgrade, CLOSE\r\n"
        "Empty:\r\n\r\n";
    hr_http_head_t h;
    hr_http_field_t f[HR_HTTP_FIELDS_MAX];
    size_t n = 99;
    HR_REQUIRE_EQ_INT(hr_http_head_parse(t, strlen(t), &h, f, &n), 0);
    HR_REQUIRE_EQ_INT((int)n, 4);
    HR_CHECK_EQ_MEM(f[1].name, f[1].name_len, "X-A", 3);
    HR_CHECK_EQ_MEM(f[1].value, f[1].value_len, "one two", 7); /* blanks around trimmed */
    HR_CHECK_EQ_INT((int)f[3].value_len, 0);
    HR_CHECK(h.conn_close && !h.conn_keepalive && !h.http10);
    const char *k = "GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n";
    HR_REQUIRE_EQ_INT(hr_http_head_parse(k, strlen(k), &h, f, &n), 0);
    HR_CHECK(h.http10 && h.conn_keepalive && !h.conn_close);
    /* "close" inside another token is not the token. */
    const char *c = "GET / HTTP/1.1\r\nHost: x\r\nConnection: closed, xclose\r\n\r\n";
    HR_REQUIRE_EQ_INT(hr_http_head_parse(c, strlen(c), &h, NULL, NULL), 0);
    HR_CHECK(!h.conn_close);
}

HR_TEST(send_json_sets_status_content_type_and_a_final_newline)
{
    ctx_t c;
    HR_REQUIRE_EQ_INT(round_trip(&c, EVHTTP_REQ_GET, "/json?x=1#frag", NULL, NULL), 0);
    HR_CHECK_EQ_INT(c.status, 202);
    HR_CHECK_EQ_STR(c.content_type, "application/json");
    HR_CHECK_EQ_STR(c.reply, "{\"id\":\"x\"}\n");
    HR_CHECK_EQ_STR(c.path, "/json");
    HR_CHECK_EQ_INT(c.saw_json, 0);
}

HR_TEST(send_error_body_matches_the_error_golden)
{
    ctx_t c;
    HR_REQUIRE_EQ_INT(round_trip(&c, EVHTTP_REQ_POST, "/missing", "application/json; charset=utf-8",
                                 "{\"type\":\"alert\",\"message\":\"Hello\"}"),
                      0);
    HR_CHECK_EQ_INT(c.saw_json, 1);
    HR_CHECK_EQ_MEM(c.body, c.body_len, "{\"type\":\"alert\",\"message\":\"Hello\"}", 34);
    HR_CHECK_EQ_INT(c.status, 400);
    HR_CHECK_EQ_STR(c.content_type, "application/json");
    HR_CHECK_EQ_STR(c.retry_after, "");

    char path[1024], want[256];
    snprintf(path, sizeof(path), "%s/proto/testdata/error_missing_field.json", HERALD_SOURCE_DIR);
    FILE *f = fopen(path, "rb");
    HR_REQUIRE(f != NULL);
    size_t n = fread(want, 1, sizeof(want) - 1, f);
    fclose(f);
    HR_CHECK_EQ_MEM(c.reply, c.reply_len, want, n);
}

HR_TEST(send_error_503_adds_retry_after_and_escapes_the_message)
{
    ctx_t c;
    HR_REQUIRE_EQ_INT(round_trip(&c, EVHTTP_REQ_GET, "/unavailable", NULL, NULL), 0);
    HR_CHECK_EQ_INT(c.status, 503);
    HR_CHECK_EQ_STR(c.retry_after, "1");
    HR_CHECK_EQ_STR(
        c.reply,
        "{\"error\":{\"code\":\"unavailable\",\"message\":\"redis is \\\"down\\\"\\n\"}}\n");
}

HR_TEST(path_drops_the_query)
{
    ctx_t c;
    HR_REQUIRE_EQ_INT(
        round_trip(&c, EVHTTP_REQ_GET, "/notifications?user_id=alice&limit=5", NULL, NULL), 0);
    HR_CHECK_EQ_STR(c.path, "/notifications");
    HR_CHECK_EQ_INT(c.status, 404);
    HR_CHECK_EQ_STR(c.reply,
                    "{\"error\":{\"code\":\"not_found\",\"message\":\"no such endpoint\"}}\n");
}

/* ---- a large answer read slowly ---- */

#define BIG_ANSWER (48u << 20) /* well past what the kernel buffers on loopback */

typedef struct {
    struct event_base *base;
    int fd;     /* the client's socket */
    size_t got; /* bytes the client read */
    int closed; /* the server closed before the whole answer */
    char *big;  /* the answer's body */
} slow_t;

static void
big_cb(hr_httpd_req_t *req, void *arg)
{
    slow_t *s = arg;
    hr_httpd_send(req, 200, "application/octet-stream", s->big, BIG_ANSWER);
}

/* Every 50 ms the client reads up to 256 KiB: steady progress, over longer than the idle timeout.
 */
static void
slow_tick(evutil_socket_t fd, short what, void *arg)
{
    HR_UNUSED(fd);
    HR_UNUSED(what);
    slow_t *s = arg;
    char buf[65536];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            s->got += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            /* Closed once idle after the whole answer is fine; before it, not. */
            s->closed = s->got <= BIG_ANSWER;
            event_base_loopexit(s->base, NULL);
        }
        return;
    }
    if (s->got > BIG_ANSWER)
        event_base_loopexit(s->base, NULL); /* head and body: done */
}

HR_TEST(an_answer_read_slowly_is_not_cut_by_the_idle_timeout)
{
    slow_t s = {0};
    s.base = event_base_new();
    s.big = malloc(BIG_ANSWER);
    HR_REQUIRE(s.big != NULL);
    memset(s.big, 'x', BIG_ANSWER);
    char err[128];
    hr_httpd_opts_t o = {
        .host = "127.0.0.1", .max_body = 1024, .idle_timeout_ms = 1000, .cb = big_cb, .cbarg = &s};
    hr_httpd_t *http = hr_httpd_create(s.base, &o, err, sizeof(err));
    HR_REQUIRE(http != NULL);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)hr_httpd_port(http))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s.fd = socket(AF_INET, SOCK_STREAM, 0);
    HR_REQUIRE_EQ_INT(connect(s.fd, (struct sockaddr *)&a, sizeof(a)), 0);
    static const char get[] = "GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
    HR_REQUIRE_EQ_INT((int)send(s.fd, get, sizeof(get) - 1, 0), (int)sizeof(get) - 1);
    struct event *tick = event_new(s.base, -1, EV_PERSIST, slow_tick, &s);
    struct timeval every = {0, 50000}, limit = {30, 0};
    event_add(tick, &every);
    event_base_loopexit(s.base, &limit);
    event_base_dispatch(s.base);
    HR_CHECK(!s.closed);
    HR_CHECK_CMP_INT((long long)s.got, >, (long long)BIG_ANSWER);
    event_free(tick);
    close(s.fd);
    hr_httpd_destroy(http);
    event_base_free(s.base);
    free(s.big);
}

int
main(void)
{
    hr_json_init();
    return hr_test_run_all();
}
