"""The HTTP server shared by ingest and history (common/src/hr_httpd.c) against
the real binaries over raw sockets: every refusal is JSON (never an HTML page),
ambiguous framing is refused, a body over the limit is refused before it is
sent, HEAD answers keep a keep-alive connection in step, a slow head is cut at
the header deadline, a connection cap holds, and running out of descriptors
neither spins nor floods the log."""
import json
import socket

from herald_http import (check_accept_pauses, check_connection_cap, check_json_refusal,
                         check_slow_head_cut, connect, exchange, read_response)
from herald_stack import INGEST_KEY, Service, Stack, TestRun, free_port, http_request, ingest_request, wait_until

HEADER_TIMEOUT_MS = 1000


def check(cond, what):
    if not cond:
        raise AssertionError(what)












def main():
    t = TestRun()
    stack = Stack(gateways=0, services=("ingest", "worker", "history"),
                  extra_env={"HERALD_HISTORY_HEADER_TIMEOUT_MS": HEADER_TIMEOUT_MS})
    ip, hp = stack.ingest_port, stack.history_port
    try:
        def evhttp_pages_are_json():
            big_head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 70000 + b"\r\n\r\n"
            for port in (ip, hp):
                check_json_refusal(port, big_head, 431, "header_too_large")
                check_json_refusal(port, b"GET /" + b"u" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                                   414, "uri_too_long")
                check_json_refusal(port, b"POST /notifications HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: abc\r\n\r\n", 400, "bad_request")
                check_json_refusal(port, b"GET /healthz\r\n", 400, "bad_request")  # HTTP/0.9
                check_json_refusal(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505,
                                   "http_version_not_supported")
                check_json_refusal(port, b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405)
                check_json_refusal(port, b"CONNECT a:443 HTTP/1.1\r\nHost: x\r\n\r\n", 405)
                check_json_refusal(port, b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 501)
                check_json_refusal(port, b"POST /notifications HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: application/json\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_request")
        t.check("evhttp_error_pages_are_json_refusals_on_both_services", evhttp_pages_are_json)

        def body_limit_checked_before_the_body():
            # Only the head is sent: the answer must come without waiting for 100 KB or 10 GB.
            for cl in (100000, 10 ** 10):
                check_json_refusal(ip, b"POST /notifications HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: application/json\r\n"
                                   b"Content-Length: %d\r\n\r\n" % cl, 413, "body_too_large")
            # The batch endpoint takes more than 64 KiB: the same length is not refused there.
            s = connect(ip)
            try:
                s.sendall(b"POST /notifications/batch HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                s.settimeout(0.5)
                try:
                    early = s.recv(100)
                except socket.timeout:
                    early = None
                check(early is None, f"batch answered before its body: {early!r}")
            finally:
                s.close()
        t.check("content_length_over_the_limit_is_413_before_the_body", body_limit_checked_before_the_body)

        def chunked_post_still_works():
            body = json.dumps({"user_id": "chunky", "message": "in chunks"}).encode()
            a, b = body[:10], body[10:]
            data = (b"POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Authorization: Bearer " + INGEST_KEY.encode() + b"\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                    + b"%x\r\n" % len(a) + a + b"\r\n" + b"%x;ext=1\r\n" % len(b) + b + b"\r\n"
                    + b"0\r\nX-Trailer: t\r\n\r\n")
            s = connect(ip)
            try:
                s.sendall(data + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                st, h, resp, rest = read_response(s)
                check(st == 202, (st, resp))
                st, h, resp, rest = read_response(s, rest)
                check(st == 200 and json.loads(resp)["status"] == "ok", (st, resp))
            finally:
                s.close()
            # Chunks that add up to more than the endpoint takes.
            piece = b"a" * 40000
            check_json_refusal(ip, b"POST /notifications HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                               + (b"%x\r\n" % len(piece) + piece + b"\r\n") * 2, 413, "body_too_large")
        t.check("chunked_bodies_are_decoded_and_bounded", chunked_post_still_works)

        def lax_framing_refused():
            for port in (ip, hp):
                check_json_refusal(port, b"POST /notifications HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: application/json\r\nContent-Length: 2\r\n"
                                   b"Content-Length: 40\r\n\r\n{}", 400, "bad_request")
                check_json_refusal(port, b"POST /notifications HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: application/json\r\n"
                                   b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, "bad_request")
                check_json_refusal(port, b"GET /healthz HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400,
                                   "bad_request")
                check_json_refusal(port, b"GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request")
                check_json_refusal(port, b"GET /healthz HTTP/1.1\nHost: x\n\n", 400, "bad_request")
                check_json_refusal(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
                                   400, "bad_request")
        t.check("lax_framing_is_refused", lax_framing_refused)

        def head_keeps_keepalive_in_step():
            for port, path in ((hp, "/notifications?user_id=a"), (ip, "/healthz"),
                               (hp, "/nowhere")):
                s = connect(port)
                try:
                    s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    st, h, body, rest = read_response(s, head_only=True)
                    check("content-length" in h and int(h["content-length"]) > 0, (path, h))
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    st2, h2, body2, rest2 = read_response(s, rest)
                    check(st2 == 200 and json.loads(body2)["status"] == "ok",
                          f"{path}: the next answer on the connection: {st2} {body2[:100]!r}")
                finally:
                    s.close()
        t.check("head_answers_have_a_length_and_no_body", head_keeps_keepalive_in_step)

        def refusals_carry_cors_and_preflight_any_path():
            h, _ = check_json_refusal(hp, b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405)
            check(h.get("access-control-allow-origin") == "*", h)
            st, h, body, closed = exchange(hp, b"OPTIONS /no/such/path HTTP/1.1\r\nHost: x\r\n"
                                               b"Origin: http://a\r\n"
                                               b"Access-Control-Request-Method: GET\r\n\r\n",
                                          want_close=False)
            check(st == 204, (st, body))
            check(h.get("access-control-allow-origin") == "*", h)
            check("GET" in h.get("access-control-allow-methods", ""), h)
            s, b = http_request(hp, "GET", "/no/such/path")
            check(s == 404 and b["error"]["code"] == "not_found", (s, b))
        t.check("cors_on_refusals_and_preflight_on_unknown_paths", refusals_carry_cors_and_preflight_any_path)

        def duplicate_keys_refused():
            body = b'{"user_id":"alice","message":"hi","user_id":"bob"}'
            s, b = ingest_request(ip, "POST", "/notifications", body)
            check(s == 400 and b["error"]["code"] == "invalid_json", (s, b))
            check("twice" in b["error"]["message"], b)
        t.check("duplicate_json_keys_are_refused", duplicate_keys_refused)

        def slowloris_cut_at_header_deadline():
            check_slow_head_cut(hp, limit_s=10)
        t.check("a_head_sent_a_byte_at_a_time_is_cut_at_the_deadline", slowloris_cut_at_header_deadline)

        def head_in_single_bytes_is_served():
            # A prompt client whose head arrives one byte per packet (a terminator split
            # across packets included) is served, on both services, twice on one connection.
            for port in (ip, hp):
                s = connect(port)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    rest = b""
                    for _ in range(2):
                        for b in b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n":
                            s.sendall(bytes([b]))
                        st, h, body, rest = read_response(s, rest)
                        check(st == 200, (port, st, body))
                finally:
                    s.close()
        t.check("a_head_arriving_a_byte_per_packet_is_served", head_in_single_bytes_is_served)

        def connection_cap_holds():
            port = free_port()
            svc = stack.spawn("history_cap", "herald-history",
                              {"HERALD_HISTORY_PORT": port, "HERALD_HISTORY_MAX_CONNECTIONS": 3,
                               "HERALD_HISTORY_HEADER_TIMEOUT_MS": 60000})
            wait_until(lambda: http_request(port, "GET", "/healthz")[0] == 200, 15, "history_cap")
            check_connection_cap(port, svc, 3)
        t.check("connections_over_the_cap_wait_until_one_closes", connection_cap_holds)

        def out_of_descriptors_pauses_accept():
            port = free_port()
            env = dict(stack.env)
            env.update({"HERALD_HISTORY_PORT": str(port), "HERALD_HISTORY_MAX_CONNECTIONS": "100000",
                        "HERALD_HISTORY_PG_POOL_SIZE": "1"})
            svc = Service("history_fd", ["prlimit", "--nofile=40:40", stack.binary("herald-history")],
                          env, stack.tmp)
            stack.services["history_fd"] = svc
            wait_until(lambda: http_request(port, "GET", "/readyz")[0] == 200, 15, "history_fd")
            check_accept_pauses(port, svc, "history")
        t.check("out_of_descriptors_pauses_accept_without_spinning", out_of_descriptors_pauses_accept)
    finally:
        try:
            t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
        except Exception:  # noqa: BLE001
            pass
    t.finish()


if __name__ == "__main__":
    main()
