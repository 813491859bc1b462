"""Ingest's own HTTP/1.1 front end (common/src/hr_httpd.c) over raw sockets
against the real binary and a private redis-server: pipelined requests are
answered in order, a client that half-closes still gets its answer, HTTP/1.0
and Connection: close end the connection, Expect: 100-continue is answered, a
stalled body or a slow head gets 408, an idle keep-alive connection is closed,
the connection cap and running out of descriptors hold, clients that vanish
while their POST is with Redis lose no accepted write, and a batch body near
1 MiB sent in pieces is read whole."""
import json
import socket
import struct
import threading
import time

from herald_http import (check_accept_pauses, check_connection_cap, check_slow_head_cut, closes,
                         connect, read_head, read_response)
from herald_stack import (INGEST_KEY, DebugStack, Redis, Service, TestRun, _tcp_rows, http_request,
                          listening_ports, wait_until)

STREAM = "herald:stream:notifications"
SHORT_MS = 1000  # header and idle timeouts of the ingest spawned for the deadline checks


def check(cond, what):
    """An explicit check (bare assert vanishes under PYTHONOPTIMIZE)."""
    if not cond:
        raise AssertionError(what)










def post_bytes(message, user="pipe", path="/notifications", extra=b"", body=None):
    if body is None:
        body = json.dumps({"user_id": user, "message": message}).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {INGEST_KEY}\r\nContent-Length: {len(body)}\r\n").encode() \
        + extra + b"\r\n" + body


def stored_messages(redis):
    """The message of every notification in the stream, in stream order."""
    out = []
    for _sid, fields in redis.cmd("XRANGE", STREAM, "-", "+") or []:
        f = dict(zip(fields[::2], fields[1::2]))
        out.append(json.loads(f["payload"])["message"])
    return out


def stored_ids(redis):
    out = set()
    for _sid, fields in redis.cmd("XRANGE", STREAM, "-", "+") or []:
        f = dict(zip(fields[::2], fields[1::2]))
        out.add(json.loads(f["payload"])["id"])
    return out


def count_answers(s, pat=b"HTTP/1.1 200 "):
    """Reads s until the server closes it; returns how many answers start with pat."""
    n, carry = 0, b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            return n
        data = carry + chunk  # carry is shorter than pat: no match is counted twice
        n += data.count(pat)
        carry = data[-(len(pat) - 1):]


def spawn_ingest(stack, key, env):
    port = stack.spawn_listening(key, "herald-ingest", "HERALD_INGEST_PORT", env)
    wait_until(lambda: http_request(port, "GET", "/readyz")[0] == 200, 15, f"{key} ready")
    return port, stack.services[key]


def server_unread(pid, client_ports):
    """Bytes the server's sockets for these client ports hold unread (rx_queue)."""
    total = 0
    for cols in _tcp_rows(pid):
        remote = int(cols[2].rsplit(":", 1)[1], 16)
        if remote in client_ports:
            total += int(cols[4].split(":")[1], 16)
    return total


def main():
    t = TestRun()
    stack = DebugStack(gateways=0, services=("ingest",))
    ip = stack.ingest_port
    r = stack.redis
    try:
        def pipelined_requests_answered_in_order():
            tag = f"p{time.monotonic_ns()}"
            s = connect(ip)
            try:
                s.sendall(post_bytes(tag + "-1") + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                          + post_bytes(tag + "-2"))
                st1, _, b1, rest = read_response(s)
                st2, _, b2, rest = read_response(s, rest)
                st3, _, b3, rest = read_response(s, rest)
            finally:
                s.close()
            check((st1, st2, st3) == (202, 200, 202), (st1, st2, st3, b1, b2, b3))
            check(json.loads(b2)["status"] == "ok", b2)
            id1, id3 = json.loads(b1)["id"], json.loads(b3)["id"]
            check(id1 != id3, (b1, b3))
            msgs = stored_messages(r)
            check(msgs.count(tag + "-1") == 1 and msgs.count(tag + "-2") == 1, msgs[-5:])
            check(msgs.index(tag + "-1") < msgs.index(tag + "-2"), "stored out of order")
            check({id1, id3} <= stored_ids(r), "the answered ids are not the stored ones")
        t.check("pipelined_requests_get_their_answers_in_order_on_one_connection",
                pipelined_requests_answered_in_order)

        def half_closed_client_gets_its_answer():
            tag = f"h{time.monotonic_ns()}"
            s = connect(ip)
            try:
                s.sendall(post_bytes(tag))
                s.shutdown(socket.SHUT_WR)
                st, h, body, rest = read_response(s)
                check(st == 202, (st, body))
                check(closes(s, rest), "the connection stays open after the answer to a half-closed client")
            finally:
                s.close()
            check(stored_messages(r).count(tag) == 1, "the half-closed client's notification is not stored")
        t.check("a_client_that_half_closes_still_gets_its_202", half_closed_client_gets_its_answer)

        def http10_and_connection_close():
            s = connect(ip)
            try:
                s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                st, h, body, rest = read_response(s)
                check(st == 200 and json.loads(body)["status"] == "ok", (st, body))
                check(h.get("connection", "").lower() != "keep-alive", h)
                check(closes(s, rest), "HTTP/1.0 without keep-alive: the connection stays open")
            finally:
                s.close()
            s = connect(ip)
            try:
                s.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                st, h, body, rest = read_response(s)
                check(st == 200, (st, body))
                check(h.get("connection", "").lower() == "keep-alive", h)
                s.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                st, h, body, rest = read_response(s, rest)
                check(st == 200 and json.loads(body)["status"] == "ok", (st, body))
            finally:
                s.close()
            s = connect(ip)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                st, h, body, rest = read_response(s)
                check(st == 200, (st, body))
                check(h.get("connection", "").lower() == "close", h)
                check(closes(s, rest), "Connection: close: the connection stays open")
            finally:
                s.close()
        t.check("http10_closes_unless_keep_alive_and_connection_close_closes",
                http10_and_connection_close)

        def expect_100_continue():
            tag = f"e{time.monotonic_ns()}"
            body = json.dumps({"user_id": "cont", "message": tag}).encode()
            whole = post_bytes(tag, extra=b"Expect: 100-continue\r\n", body=body)
            s = connect(ip)
            try:
                s.sendall(whole[:-len(body)])
                line, h, rest = read_head(s)
                check(line == "HTTP/1.1 100 Continue", f"first answer {line!r}, wanted 100 Continue")
                check(rest == b"", f"more than 100 Continue before the body: {rest!r}")
                s.sendall(body)
                st, h, resp, rest = read_response(s, rest)
                check(st == 202, (st, resp))
            finally:
                s.close()
            check(stored_messages(r).count(tag) == 1, "the notification sent after 100 Continue is not stored")
        t.check("expect_100_continue_is_answered_before_the_body", expect_100_continue)

        def pipelining_client_that_never_reads_is_held_back():
            # Answers to a client that sends pipelined requests without reading them must
            # not pile up in ingest's memory: it stops reading until they are out.
            one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            block = one * 2000
            limit = 48 * 1024 * 1024
            s = connect(ip, timeout=5)
            try:
                sent, stalled = 0, False
                while sent < limit:
                    try:
                        sent += s.send(block[sent % len(block):])
                    except socket.timeout:
                        stalled = True
                        break
                print(f"# ingest stopped reading after {sent} bytes of pipelined requests", flush=True)
                check(stalled, f"ingest read {sent} bytes of pipelined requests nobody read answers to")
                whole = sent // len(one)
                tail = one[sent % len(one):] if sent % len(one) else b""
                last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                writer = threading.Thread(target=lambda: s.sendall(tail + last))
                writer.start()
                s.settimeout(30)
                n = count_answers(s)
                writer.join()
                check(n == whole + (1 if tail else 0) + 1,
                      f"{n} answers to {whole + (1 if tail else 0) + 1} pipelined requests")
            finally:
                s.close()
        t.check("a_pipelining_client_that_does_not_read_is_held_back_not_buffered",
                pipelining_client_that_never_reads_is_held_back)

        def pipelined_then_half_closed_all_answered():
            # Many pipelined requests, then SHUT_WR, read only once ingest has read them all:
            # answers held back behind unread ones still come, every one, before the close.
            one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            n_req = 30000
            s = connect(ip, timeout=30)
            try:
                sender = threading.Thread(target=lambda: (s.sendall(one * n_req), s.shutdown(socket.SHUT_WR)))
                sender.start()
                pid = stack.services["ingest"].proc.pid
                port = s.getsockname()[1]
                try:
                    wait_until(lambda: not sender.is_alive() and server_unread(pid, {port}) == 0, 15,
                               "ingest to read the pipelined requests")
                except AssertionError:
                    pass  # its input filled first: the answers below still must all come
                n = count_answers(s)
                sender.join()
                check(n == n_req, f"{n} answers to {n_req} pipelined requests sent before a half-close")
            finally:
                s.close()
        t.check("pipelined_requests_then_a_half_close_all_get_answers", pipelined_then_half_closed_all_answered)

        short_port, short_svc = spawn_ingest(stack, "ingest_short", {
            "HERALD_INGEST_IDLE_TIMEOUT_MS": SHORT_MS, "HERALD_INGEST_HEADER_TIMEOUT_MS": SHORT_MS})

        def stalled_body_gets_408():
            s = connect(short_port, timeout=10)
            try:
                s.sendall(b"POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Authorization: Bearer " + INGEST_KEY.encode() + b"\r\n"
                          b"Content-Length: 100\r\n\r\n" + b'{"user_id"')
                t0 = time.monotonic()
                st, h, body, rest = read_response(s)
                print(f"# stalled body answered after {time.monotonic() - t0:.2f} s", flush=True)
                check(st == 408, (st, body))
                check(h.get("content-type") == "application/json", h)
                check(json.loads(body)["error"]["code"] == "request_timeout", body)
                check(h.get("connection", "").lower() == "close", h)
            finally:
                s.close()
        t.check("a_stalled_body_gets_408_request_timeout", stalled_body_gets_408)

        def slowloris_head_gets_408():
            check_slow_head_cut(short_port)
        t.check("a_head_sent_a_byte_every_200ms_gets_408_at_the_header_deadline",
                slowloris_head_gets_408)

        def idle_keepalive_closed():
            s = connect(short_port, timeout=10)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                st, h, body, rest = read_response(s)
                check(st == 200, (st, body))
                check(closes(s, rest, within=10), "an idle keep-alive connection is still open after 10 s")
            finally:
                s.close()
        t.check("an_idle_keep_alive_connection_is_closed_after_the_idle_timeout", idle_keepalive_closed)

        def connection_cap_holds():
            port, svc = spawn_ingest(stack, "ingest_cap", {"HERALD_INGEST_MAX_CONNECTIONS": 3})
            check_connection_cap(port, svc, 3)
        t.check("ingest_connections_over_the_cap_wait_until_one_closes", connection_cap_holds)

        def out_of_descriptors_pauses_accept():
            env = dict(stack.env)
            env.update({"HERALD_INGEST_PORT": "0", "HERALD_INGEST_MAX_CONNECTIONS": "100000"})
            svc = Service("ingest_fd", ["prlimit", "--nofile=40:40", stack.binary("herald-ingest")],
                          env, stack.tmp)
            stack.services["ingest_fd"] = svc
            ports = wait_until(lambda: listening_ports(svc.proc.pid), 15, "ingest_fd to listen")
            port = ports[0]
            wait_until(lambda: http_request(port, "GET", "/readyz")[0] == 200, 15, "ingest_fd ready")
            check_accept_pauses(port, svc, "ingest")
        t.check("ingest_out_of_descriptors_pauses_accept_without_spinning", out_of_descriptors_pauses_accept)

        def vanishing_clients_lose_no_accepted_write():
            tag = f"v{time.monotonic_ns()}"
            sent = 0
            answered = []
            # Clients that close (FIN) or reset (SO_LINGER 0) at once after a whole POST.
            for i in range(150):
                s = connect(ip)
                if i % 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(post_bytes(f"{tag}-q{i}"))
                s.close()
                sent += 1
                if i % 10 == 0:
                    st, b = http_request(ip, "POST", "/notifications",
                                         {"user_id": "v", "message": f"{tag}-a{i}"},
                                         {"Authorization": f"Bearer {INGEST_KEY}"})
                    check(st == 202, (st, b))
                    answered.append(b["id"])
            # Resets that certainly arrive while the POST is with Redis: Redis sleeps, the
            # server has read every byte (its receive queues are empty), then the clients reset.
            sleeper = stack.stall_redis(2)
            held = []
            try:
                for i in range(20):
                    s = connect(ip)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.sendall(post_bytes(f"{tag}-r{i}"))
                    held.append(s)
                ports = {s.getsockname()[1] for s in held}
                pid = stack.services["ingest"].proc.pid
                wait_until(lambda: server_unread(pid, ports) == 0 and
                           sum(1 for c in _tcp_rows(pid) if int(c[2].rsplit(":", 1)[1], 16) in ports) == 20,
                           5, "ingest to read the stalled POSTs")
            finally:
                for s in held:
                    s.close()
            sleeper.join()
            reset_sent = len(held)
            check(http_request(ip, "GET", "/healthz")[0] == 200, "ingest stopped serving")

            def stored(prefix):
                return [m for m in stored_messages(r) if m.startswith(f"{tag}-{prefix}")]

            def fin_stored():
                return sum(1 for m in stored("q") if int(m.rsplit("q", 1)[1]) % 2 == 0)
            # Provable: every POST the server read whole is written (the FIN clients' and
            # the reset-while-with-Redis ones); a reset POST may be dropped unread, never twice.
            try:
                wait_until(lambda: fin_stored() == 75 and len(stored("r")) == reset_sent, 10,
                           "every POST read whole stored")
            except AssertionError:
                pass
            got = len(stored("q")) + len(stored("r"))
            print(f"# {got} of {sent + reset_sent} POSTs of vanished clients stored", flush=True)
            check(len(stored("r")) == reset_sent,
                  f"{len(stored('r'))} of {reset_sent} POSTs read before their reset stored")
            check(len(set(stored("q") + stored("r"))) == got, "a notification stored twice")
            fin = fin_stored()
            fin = sum(1 for m in stored_messages(r) if m.startswith(tag + "-q") and int(m.split("q")[-1]) % 2 == 0)
            check(fin == 75, f"{fin} of 75 POSTs of clients that closed (FIN) stored")
            check(set(answered) <= stored_ids(r), "a 202'd notification is missing")
        t.check("clients_vanishing_while_their_post_is_with_redis_lose_no_accepted_write",
                vanishing_clients_lose_no_accepted_write)

        def big_batch_in_pieces():
            tag = f"b{time.monotonic_ns()}"
            one = {"user_id": "u0000", "message": f"{tag}-0000-" + "x" * 4000}
            n_items = (1024 * 1024 - 1000) // (len(json.dumps(one)) + 2)
            items = [{"user_id": f"u{i:04d}", "message": f"{tag}-{i:04d}-" + "x" * 4000}
                     for i in range(n_items)]
            body = json.dumps({"notifications": items}).encode()
            check(len(body) > 1000000, len(body))
            data = post_bytes("", path="/notifications/batch", body=body)
            s = connect(ip, timeout=15)
            try:
                pieces = 8
                step = len(data) // pieces + 1
                for k in range(0, len(data), step):
                    s.sendall(data[k:k + step])
                    time.sleep(0.05)  # pauses between pieces: the server reads each on its own
                st, h, resp, rest = read_response(s)
            finally:
                s.close()
            check(st == 202, (st, resp[:300]))
            a = json.loads(resp)
            check(a["accepted"] == len(items) and a["rejected"] == 0, {k: a[k] for k in ("accepted", "rejected")})
            n = sum(1 for m in stored_messages(r) if m.startswith(tag + "-"))
            check(n == len(items), f"{n} of {len(items)} batch items stored")
            print(f"# batch body of {len(body)} bytes, {len(items)} items", flush=True)
        t.check("a_batch_body_near_1mib_sent_in_pieces_is_accepted", big_batch_in_pieces)
    finally:
        try:
            t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
        except Exception:  # noqa: BLE001
            pass
    t.finish()


if __name__ == "__main__":
    main()
