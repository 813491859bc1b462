"""History on hr_httpd (its own HTTP/1.1 server since it left evhttp), over
raw sockets against the real binary, Redis and PostgreSQL: what evhttp did
for history and the move must keep. A CORS preflight is 204 without a
Content-Length (RFC 9110 8.6) and the keep-alive connection stays in step;
a configured origin is echoed with Vary: Origin, also on the server's own
refusals; "" sends no CORS headers at all; requests pipelined behind one that
waits on PostgreSQL are answered in order; history.idle_timeout_ms closes
an idle keep-alive connection; and a request pipelined behind one that a
stop cut short (Redis frozen, drain_ms over) is refused, not routed into a
pool that is gone."""
import json
import signal
import socket

from herald_http import connect, exchange, read_response
from herald_stack import Stack, TestRun, bearer, check, mint_token, wait_until








def history_read_all(pid, port, client_port):
    """Whether history's end of the connection from client_port has nothing unread."""
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            cols = row.split()
            local, remote, queues = cols[1], cols[2], cols[4]
            if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == client_port:
                return int(queues.split(":")[1], 16) == 0
    return False


def main():
    t = TestRun()
    stack = Stack(gateways=0, services=("worker", "history"))
    hp = stack.history_port
    auth = bearer(mint_token("piper"))["Authorization"]
    try:
        def preflight_has_no_length_and_keeps_the_connection():
            s = connect(hp)
            try:
                s.sendall(b"OPTIONS /notifications/x/read HTTP/1.1\r\nHost: x\r\n"
                          b"Origin: http://a\r\nAccess-Control-Request-Method: POST\r\n\r\n")
                st, h, body, rest = read_response(s)
                check(st == 204, st, body)
                check("content-length" not in h, "a 204 with a Content-Length:", h)
                check("POST" in h.get("access-control-allow-methods", ""), h)
                check(h.get("allow") == "POST, OPTIONS", h)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                st, h, body, rest = read_response(s, rest)
                check(st == 200 and json.loads(body)["status"] == "ok", st, body)
            finally:
                s.close()
        t.check("a_preflight_is_204_without_a_length_and_the_connection_stays_in_step",
                preflight_has_no_length_and_keeps_the_connection)

        def pipelined_behind_a_query_in_order():
            # The first waits for Redis (the cut-off) and PostgreSQL; the two behind it
            # are answered after it, in order, on the same connection.
            s = connect(hp)
            try:
                s.sendall(b"GET /notifications/unread-count HTTP/1.1\r\nHost: x\r\n"
                          b"Authorization: " + auth.encode() + b"\r\n\r\n"
                          b"GET /no/such HTTP/1.1\r\nHost: x\r\n\r\n"
                          b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                st, h, body, rest = read_response(s)
                check(st == 200 and json.loads(body) == {"unread_count": 0}, st, body)
                st, h, body, rest = read_response(s, rest)
                check(st == 404 and json.loads(body)["error"]["code"] == "not_found", st, body)
                st, h, body, rest = read_response(s, rest)
                check(st == 200 and json.loads(body)["status"] == "ok", st, body)
            finally:
                s.close()
        t.check("requests_pipelined_behind_a_query_are_answered_in_order",
                pipelined_behind_a_query_in_order)

        def origin_echoed_with_vary():
            port = stack.spawn_listening("history_origin", "herald-history", "HERALD_HISTORY_PORT",
                                         {"HERALD_HISTORY_CORS_ORIGIN": "http://app.example"})
            wait_until(lambda: exchange(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", want_close=False)[0] == 200,
                       15, "history_origin ready")
            st, h, body, _ = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", want_close=False)
            check(st == 200 and h.get("access-control-allow-origin") == "http://app.example", h)
            check(h.get("vary") == "Origin", h)
            check("WWW-Authenticate" in h.get("access-control-expose-headers", ""), h)
            # A refusal of the server itself, before any route.
            st, h, body, _ = exchange(port, b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", want_close=False)
            check(st == 405 and h.get("access-control-allow-origin") == "http://app.example", st, h)
        t.check("a_configured_origin_is_echoed_with_vary_also_on_refusals", origin_echoed_with_vary)

        def no_origin_no_cors():
            port = stack.spawn_listening("history_nocors", "herald-history", "HERALD_HISTORY_PORT",
                                         {"HERALD_HISTORY_CORS_ORIGIN": ""})
            wait_until(lambda: exchange(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", want_close=False)[0] == 200,
                       15, "history_nocors ready")
            for data in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                         b"OPTIONS /notifications HTTP/1.1\r\nHost: x\r\n\r\n",
                         b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n"):
                st, h, body, _ = exchange(port, data, want_close=False)
                check(not any(k.startswith("access-control-") for k in h), data[:20], st, h)
        t.check("an_empty_cors_origin_sends_no_cors_headers", no_origin_no_cors)

        def idle_keepalive_closed():
            port = stack.spawn_listening("history_idle", "herald-history", "HERALD_HISTORY_PORT",
                                         {"HERALD_HISTORY_IDLE_TIMEOUT_MS": 300})
            wait_until(lambda: exchange(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", want_close=False)[0] == 200,
                       15, "history_idle ready")
            s = connect(port, timeout=10)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                st, h, body, rest = read_response(s)
                check(st == 200 and "connection" not in h, st, h)
                # The server closes the idle connection (the default would keep it 60 s).
                try:
                    more = s.recv(65536)
                except socket.timeout:
                    more = None
                check(more == b"", "the idle connection was not closed:", more)
            finally:
                s.close()
        t.check("history_idle_timeout_ms_closes_an_idle_keepalive_connection", idle_keepalive_closed)

        def pipelined_behind_a_stop_is_refused():
            port = stack.spawn_listening("history_term", "herald-history", "HERALD_HISTORY_PORT",
                                         {"HERALD_HISTORY_DRAIN_MS": 300})
            svc = stack.services["history_term"]
            wait_until(lambda: exchange(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", want_close=False)[0] == 200,
                       15, "history_term ready")
            s = connect(port, timeout=10)
            stack.redis_proc.send_signal(signal.SIGSTOP)
            try:
                # The first waits for its cut-off in a Redis that does not answer.
                s.sendall(b"GET /notifications/unread-count HTTP/1.1\r\nHost: x\r\n"
                          b"Authorization: " + auth.encode() + b"\r\n\r\n"
                          b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                wait_until(lambda: history_read_all(svc.proc.pid, port, s.getsockname()[1]), 5,
                           "history to read both requests")
                # Drain ends after 300 ms with the first still waiting: the stop answers it
                # (503), which releases the second into a server whose pool is gone.
                rc = svc.terminate()
                check(rc == 0, "history_term exit:", rc)
                st, h, body, rest = read_response(s)
                check(st == 503, st, body)
                st, h, body, rest = read_response(s, rest)
                check(st == 503 and json.loads(body)["error"]["code"] == "unavailable", st, body)
            finally:
                stack.redis_proc.send_signal(signal.SIGCONT)
                s.close()
        t.check("a_request_pipelined_behind_one_a_stop_cut_short_is_refused",
                pipelined_behind_a_stop_is_refused)
    finally:
        try:
            t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
        except Exception:  # noqa: BLE001
            pass
    t.finish()


if __name__ == "__main__":
    main()
