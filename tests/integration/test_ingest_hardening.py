"""Ingest against a misbehaving or unusual Redis, through the real binary and a
private redis-server: a Redis URL whose SELECT fails, passwords with '@' and
percent-escapes, an IPv6 literal, a password-protected server (one READY per
connect), a script cache flushed under load, and a Redis stall."""
import hashlib
import json
import re
import socket
import threading

from herald_stack import (DebugStack, Redis, Stack, TestRun, free_port, http_get, ingest_request,
                          post_notification, wait_until)

STREAM = "herald:stream:notifications"


def check(cond, msg):
    """An explicit check (bare assert vanishes under PYTHONOPTIMIZE)."""
    if not cond:
        raise AssertionError(msg)


def spawn_ingest(stack, key, env=None, ready=True):
    port = free_port()
    e = {"HERALD_INGEST_PORT": port}
    e.update(env or {})
    svc = stack.spawn(key, "herald-ingest", e)
    if ready:
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, f"{key} readyz 200")
    return port, svc


def commandstat(redis, name):
    """calls= of one command in INFO commandstats (0 if never called)."""
    info = redis.cmd("INFO", "commandstats")
    m = re.search(r"^cmdstat_" + re.escape(name) + r":calls=(\d+)", info, re.M)
    return int(m.group(1)) if m else 0


def stream_messages(redis, key=STREAM):
    """Every notification message in the stream (decoded from its payload)."""
    out = []
    for _sid, fields in redis.cmd("XRANGE", key, "-", "+") or []:
        f = dict(zip(fields[::2], fields[1::2]))
        out.append(json.loads(f["payload"])["message"])
    return out


def test_redis_url(t):
    stack = Stack(services=())
    try:
        r = stack.redis
        base = f"127.0.0.1:{stack.redis_port}"

        def failed_select_keeps_ingest_down():
            # The server has 16 databases: SELECT 20 fails. Ingest must not write to db 0.
            port, svc = spawn_ingest(stack, "ingest_db20",
                                     {"HERALD_REDIS_URL": f"redis://{base}/20"}, ready=False)
            wait_until(lambda: svc.log_text().count("redis_handshake_failed") >= 2, 15,
                       "two failed handshakes (the first and a reconnect)")
            log = svc.log_text()
            check("step=SELECT" in log, log[-2000:])
            check("redis_ready" not in log, log[-2000:])
            status, body = http_get(port, "/readyz")
            check(status == 503, (status, body))
            status, body = post_notification(port, {"user_id": "u", "message": "db20"})
            check(status == 503 and body["error"]["code"] == "unavailable", (status, body))
            check(r.cmd("XLEN", STREAM) == 0, "something was written to db 0")
            svc.terminate()
            del stack.services["ingest_db20"]
        t.check("redis_url_with_a_database_the_server_lacks_fails_the_connect",
                failed_select_keeps_ingest_down)

        def db_in_url_is_used():
            port, svc = spawn_ingest(stack, "ingest_db3", {"HERALD_REDIS_URL": f"redis://{base}/3"})
            status, body = post_notification(port, {"user_id": "u", "message": "db3"})
            check(status == 202, (status, body))
            check(r.cmd("XLEN", STREAM) == 0, "written to db 0")
            r.cmd("SELECT", "3")
            try:
                check(stream_messages(r) == ["db3"], stream_messages(r))
            finally:
                r.cmd("SELECT", "0")
            svc.terminate()
            del stack.services["ingest_db3"]
        t.check("redis_url_database_is_selected", db_in_url_is_used)

        # A password with '@', '/' and ':' in it, and an IPv6 listener.
        password = "p@ss/w:rd"
        r.cmd("CONFIG", "SET", "bind", "127.0.0.1 ::1")
        r.cmd("CONFIG", "SET", "requirepass", password)  # this connection stays authenticated

        def raw_at_sign_password_over_ipv6():
            url = f"redis://:{password}@[::1]:{stack.redis_port}"
            port, svc = spawn_ingest(stack, "ingest_v6", {"HERALD_REDIS_URL": url})
            status, body = post_notification(port, {"user_id": "u", "message": "v6"})
            check(status == 202, (status, body))
            check("v6" in stream_messages(r), stream_messages(r))
            svc.terminate()
            del stack.services["ingest_v6"]
        t.check("password_with_at_sign_and_ipv6_literal_connect", raw_at_sign_password_over_ipv6)

        def percent_encoded_password():
            url = f"redis://user:p%40ss%2Fw%3Ard@{base}"
            port, svc = spawn_ingest(stack, "ingest_pct", {"HERALD_REDIS_URL": url})
            status, body = post_notification(port, {"user_id": "u", "message": "pct"})
            check(status == 202, (status, body))
            check("pct" in stream_messages(r), stream_messages(r))
            svc.terminate()
            del stack.services["ingest_pct"]
        t.check("percent_encoded_password_is_decoded", percent_encoded_password)

        def one_ready_per_connect_with_a_password():
            # AUTH, then PING: only PING's reply may mark READY, so one SCRIPT LOAD per connect.
            r.cmd("CONFIG", "RESETSTAT")
            url = f"redis://:p%40ss%2Fw%3Ard@{base}"
            port, svc = spawn_ingest(stack, "ingest_auth", {"HERALD_REDIS_URL": url})
            status, body = post_notification(port, {"user_id": "u", "message": "auth"})
            check(status == 202, (status, body))
            check(commandstat(r, "auth") == 1, r.cmd("INFO", "commandstats"))
            check(commandstat(r, "script|load") == 1, r.cmd("INFO", "commandstats"))
            check(svc.log_text().count("redis_ready") == 1, svc.log_text()[-2000:])
            # Again after a reconnect: still one per connect.
            r.cmd("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            wait_until(lambda: commandstat(r, "auth") == 2, 15, "ingest to reconnect")
            wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, "ingest ready again")
            wait_until(lambda: post_notification(port, {"user_id": "u", "message": "again"})[0]
                       == 202, 15, "a post after the reconnect")
            check(commandstat(r, "script|load") == 2, r.cmd("INFO", "commandstats"))
            check(svc.log_text().count("redis_ready") == 2, svc.log_text()[-2000:])
        t.check("password_protected_redis_fires_ready_once_and_loads_the_script_once",
                one_ready_per_connect_with_a_password)

        def gateway_subscribes_once_with_a_password():
            # The gateway's subscriber connection shares hr_redis: one SUBSCRIBE of its
            # control channel per connect, not one per handshake reply.
            r.cmd("CONFIG", "RESETSTAT")
            port = free_port()
            svc = stack.spawn("gateway_auth", "herald-gateway", {
                "HERALD_GATEWAY_PORT": port, "HERALD_GATEWAY_NODE_ID": "gwauth",
                "HERALD_REDIS_URL": f"redis://:p%40ss%2Fw%3Ard@{base}"})
            wait_until(lambda: http_get(port, "/healthz")[0] == 200, 15, "gateway healthz 200")
            wait_until(lambda: r.cmd("PUBSUB", "NUMSUB", "herald:gateway:gwauth")[1] == 1, 5,
                       "control channel subscribed")
            check(commandstat(r, "subscribe") == 1, r.cmd("INFO", "commandstats"))
            check(svc.log_text().count("redis_ready") == 2, svc.log_text()[-2000:])  # 2 connections
        t.check("password_protected_redis_gateway_subscribes_its_channel_once",
                gateway_subscribes_once_with_a_password)

        def wrong_password_keeps_ingest_down():
            url = f"redis://:wrong@{base}"
            port, svc = spawn_ingest(stack, "ingest_badpw", {"HERALD_REDIS_URL": url},
                                     ready=False)
            wait_until(lambda: "redis_handshake_failed" in svc.log_text(), 15, "AUTH refused")
            check("step=AUTH" in svc.log_text(), svc.log_text()[-2000:])
            check(http_get(port, "/readyz")[0] == 503, "readyz up with a wrong password")
        t.check("wrong_password_is_logged_and_keeps_healthz_503", wrong_password_keeps_ingest_down)
    finally:
        stack.stop()


def post_many(port, n_threads, per_thread, make_body, headers_for=None):
    """Posts from n_threads threads; returns [(status, body, request body)]."""
    results = []
    lock = threading.Lock()

    def run(tid):
        for i in range(per_thread):
            body = make_body(tid, i)
            h = headers_for(tid, i) if headers_for else None
            try:
                st, rb = post_notification(port, body, h)
            except OSError as e:
                st, rb = None, repr(e)
            with lock:
                results.append((st, rb, body))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
    for th in threads:
        th.start()
    return threads, results, lock


def test_script_flush(t):
    stack = Stack(services=("ingest",))
    try:
        r = stack.redis
        port = stack.ingest_port

        def flush_between_two_posts():
            status, body = post_notification(port, {"user_id": "u", "message": "before"})
            check(status == 202, (status, body))
            r.cmd("SCRIPT", "FLUSH")
            status, body = post_notification(port, {"user_id": "u", "message": "after"})
            check(status == 202, (status, body))
            check(stream_messages(r)[-2:] == ["before", "after"], stream_messages(r))
            # Keyed and batch requests go through the same script.
            r.cmd("SCRIPT", "FLUSH")
            h = {"Idempotency-Key": "flush-1"}
            b = {"notifications": [{"user_id": "a", "message": "b1"}, {"room": "r", "message": "b2"}]}
            s1, a1 = ingest_request(port, "POST", "/notifications/batch", b, h)
            check(s1 == 202, (s1, a1))
            r.cmd("SCRIPT", "FLUSH")
            s2, a2 = ingest_request(port, "POST", "/notifications/batch", b, h)
            check(s2 == 202 and a2 == a1, (s2, a2, a1))
            check(stream_messages(r).count("b1") == 1, stream_messages(r))
        t.check("script_flush_between_two_posts_answers_202_and_writes_once",
                flush_between_two_posts)

        def flush_under_load():
            r.cmd("DEL", STREAM)
            threads, results, lock = post_many(
                port, 8, 60, lambda k, i: {"user_id": f"u{k}", "message": f"m{k}-{i}"})
            flushes = 0
            done_at_flush = 0
            while any(th.is_alive() for th in threads):
                with lock:
                    done = len(results)
                if done >= done_at_flush + 40:  # a flush every 40 answers
                    r.cmd("SCRIPT", "FLUSH")
                    flushes += 1
                    done_at_flush = done
            for th in threads:
                th.join()
            check(flushes >= 5, f"only {flushes} flushes")
            bad = [(st, rb) for st, rb, _ in results if st != 202]
            check(not bad, f"{len(bad)} of {len(results)} not 202, e.g. {bad[:3]}")
            msgs = stream_messages(r)
            check(sorted(msgs) == sorted(b["message"] for _, _, b in results),
                  f"{len(msgs)} stored for {len(results)} accepted")
        t.check("script_flush_under_load_every_post_answers_202_and_is_stored_once",
                flush_under_load)
    finally:
        stack.stop()


def client_ids(redis):
    """Ids of the clients connected to redis other than the asking one."""
    out = []
    for line in redis.cmd("CLIENT", "LIST").splitlines():
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if "cmd=client|list" not in line:
            out.append(f["id"])
    return out


def test_redis_stall(t):
    # Default timeout: a 3 s stall is answered late, not with 503.
    stack = DebugStack(services=("ingest",))
    try:
        r = stack.redis

        def stall_of_three_seconds_answers_202():
            sleeper = stack.stall_redis(3)
            threads, results, _ = post_many(
                stack.ingest_port, 4, 3, lambda k, i: {"user_id": "u", "message": f"s{k}-{i}"})
            for th in threads + [sleeper]:
                th.join()
            bad = [(st, rb) for st, rb, _ in results if st != 202]
            check(not bad, f"{len(bad)} of {len(results)} not 202 after a 3 s stall: {bad[:2]}")
            check(len(stream_messages(r)) == 12, stream_messages(r))
        t.check("redis_stall_of_3s_with_default_timeout_answers_202", stall_of_three_seconds_answers_202)
    finally:
        stack.stop()

    # A short timeout: requests sent before the watchdog fired get outcome_unknown
    # (they may be stored); only requests never sent may say "unavailable".
    stack = DebugStack(services=("ingest",), extra_env={"HERALD_REDIS_TIMEOUT_MS": "1500"})
    try:
        r = stack.redis
        port = stack.ingest_port
        before = set(client_ids(r))
        pad = "x" * 50000
        n_items = 8

        def make(k, i):
            # Threads 0-7 send small batches (they reach Redis first and are surely
            # sent); the others big ones, to fill the socket buffers so that some
            # commands are still unsent when the connection is dropped.
            return json.dumps({"notifications": [
                {"user_id": f"u{k}", "message": f"t{k}-{i}-{j}",
                 "data": {"pad": pad if k >= 8 else "p"}} for j in range(n_items)]}).encode()

        def key(k, i):
            return {"Idempotency-Key": f"stall-{k}-{i}"}

        def batch_post(k, i, body):
            return ingest_request(port, "POST", "/notifications/batch", body, key(k, i), timeout=30)

        def answers_tell_sent_from_unsent():
            bodies = {(k, i): make(k, i) for k in range(24) for i in range(2)}
            results = []
            lock = threading.Lock()
            go = threading.Event()

            def run(k):
                go.wait()
                for i in range(2):
                    st, body = batch_post(k, i, bodies[(k, i)])
                    with lock:
                        results.append((k, i, st, body))
            threads = [threading.Thread(target=run, args=(k,)) for k in range(24)]
            for th in threads:
                th.start()
            sleeper = stack.stall_redis(4)  # below the harness client's 5 s socket timeout
            go.set()
            # The stall outlasts redis.timeout_ms (1.5 s): the watchdog drops the connection.
            wait_until(lambda: "redis_timeout" in stack.services["ingest"].log_text(), 10,
                       "the watchdog to fire")
            for th in threads + [sleeper]:
                th.join()
            # The dropped connection's buffered commands run once Redis wakes; it
            # closes that connection after reading them all.
            wait_until(lambda: not (before & set(client_ids(r))), 20, "old connection gone")
            wait_until(lambda: http_get(port, "/readyz")[0] == 200, 20, "ingest reconnected")
            stored = stream_messages(r)
            codes = {}
            for k, i, st, body in results:
                code = body["error"]["code"] if st != 202 else "202"
                codes[code] = codes.get(code, 0) + 1
                msgs = [f"t{k}-{i}-{j}" for j in range(n_items)]
                if code == "unavailable":
                    leaked = [m for m in msgs if m in stored]
                    check(not leaked, f"answered 'unavailable' (not stored) but stored: {leaked}")
                else:
                    check(code in ("202", "outcome_unknown"), (st, body))
            log = stack.services["ingest"].log_text()
            print(f"# answers during the stall: {codes}; lost with the connection: "
                  f"{log.count('sent=0')} never sent, {log.count('sent=1')} sent", flush=True)
            check(codes.get("outcome_unknown", 0) > 0, codes)
            # Retrying everything with the same keys stores each notification once.
            for k, i, st, body in results:
                if st != 202:
                    st2, body2 = batch_post(k, i, bodies[(k, i)])
                    check(st2 == 202, (st2, body2))
            stored = stream_messages(r)
            for k, i, _, _ in results:
                for j in range(n_items):
                    n = stored.count(f"t{k}-{i}-{j}")
                    check(n == 1, f"t{k}-{i}-{j} stored {n} times")
        t.check("redis_stall_past_timeout_answers_outcome_unknown_for_sent_writes",
                answers_tell_sent_from_unsent)
    finally:
        stack.stop()


class Subscriber:
    """A raw RESP SUBSCRIBE connection that returns published payloads as bytes."""

    def __init__(self, port, *channels):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.sock.makefile("rb")
        out = [f"*{len(channels) + 1}\r\n$9\r\nSUBSCRIBE\r\n".encode()]
        for c in channels:
            b = c.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        for _ in channels:
            self._array()

    def _array(self):
        n = int(self.f.readline()[1:])
        items = []
        for _ in range(n):
            line = self.f.readline()
            if line[:1] == b":":
                items.append(int(line[1:]))
            else:
                size = int(line[1:])
                items.append(self.f.read(size + 2)[:-2])
        return items

    def message(self):
        kind, channel, payload = self._array()
        check(kind == b"message", kind)
        return channel.decode(), payload

    def close(self):
        self.sock.close()


def raw_stream(redis_port):
    """Stream entries as {field: bytes}, read over a raw connection (no decoding)."""
    s = socket.create_connection(("127.0.0.1", redis_port), timeout=5)
    f = s.makefile("rb")
    s.sendall(b"*4\r\n$6\r\nXRANGE\r\n$%d\r\n%s\r\n$1\r\n-\r\n$1\r\n+\r\n"
              % (len(STREAM), STREAM.encode()))

    def read():
        line = f.readline()
        if line[:1] == b"*":
            return [read() for _ in range(int(line[1:]))]
        return f.read(int(line[1:]) + 2)[:-2]
    entries = [dict(zip(e[1][::2], e[1][1::2])) for e in read()]
    s.close()
    return entries


def test_wire_contract(t):
    stack = Stack(services=("ingest",))
    try:
        r = stack.redis
        port = stack.ingest_port

        def frame_and_entry_keep_their_shape():
            sub = Subscriber(stack.redis_port, "herald:user:al\u00e9x", "herald:room:lobby")
            try:
                raw = ('{"user_id":"al\u00e9x","type":"t\\"q","message":"h\u00e9\\n\\u0001<>",'
                       '"data": {"k": [1, 2.50, "x"], "big": 12345678901234567890}}').encode()
                body = json.loads(raw)
                st, a = post_notification(port, raw)
                check(st == 202, (st, a))
                channel, frame = sub.message()
                st, b = post_notification(port, {"room": "lobby", "message": "to the room"})
                check(st == 202, (st, b))
                rchannel, rframe = sub.message()
            finally:
                sub.close()
            e1, e2 = raw_stream(stack.redis_port)[-2:]
            check(set(e1) == {b"id", b"user_id", b"payload", b"request_id"}, e1)
            check(set(e2) == {b"id", b"room", b"payload", b"request_id"}, e2)
            check(e1[b"id"].decode() == a["id"] and e1[b"user_id"] == "al\u00e9x".encode(), e1)
            check(e2[b"room"] == b"lobby", e2)
            head = b'{"type":"notification","notification":'
            check(channel == "herald:user:al\u00e9x" and frame == head + e1[b"payload"] + b"}",
                  (channel, frame))
            check(rchannel == "herald:room:lobby" and rframe == head + e2[b"payload"] + b"}",
                  (rchannel, rframe))
            env = json.loads(e1[b"payload"])
            check(list(env) == ["id", "user_id", "type", "message", "data", "created_at"], env)
            check(env["message"] == body["message"] and env["type"] == body["type"], env)
            # data is kept as sent, digits included.
            check(b'"data":{"k":[1,2.50,"x"],"big":12345678901234567890},' in e1[b"payload"], e1)
            check(env["created_at"] == a["created_at"], (env, a))
        t.check("published_frame_and_stream_entry_keep_their_wire_shape",
                frame_and_entry_keep_their_shape)

        def idempotency_record_is_sha1_of_path_and_body_then_answer():
            raw = b'{"user_ids":["a","b"],"message":"fan"}'
            h = {"Idempotency-Key": "rec-1", "X-Herald-Client": "c:1"}
            st, a = ingest_request(port, "POST", "/notifications", raw, h)
            check(st == 202 and len(a["items"]) == 2, (st, a))
            v = r.cmd("GET", "herald:idem:8:test/c:1:rec-1")  # scope: <API key name>/<client>
            want = hashlib.sha1(b"/notifications\n" + raw).hexdigest()
            check(v[:40] == want, (v[:40], want))
            check(json.loads(v[40:]) == a, (v, a))
            st2, a2 = ingest_request(port, "POST", "/notifications", raw, h)
            check(st2 == 202 and a2 == a, (st2, a2))
            st3, a3 = ingest_request(port, "POST", "/notifications", raw + b" ", h)
            check(st3 == 409 and a3["error"]["code"] == "idempotency_conflict", (st3, a3))
        t.check("idempotency_record_is_sha1_of_path_and_body_then_the_answer",
                idempotency_record_is_sha1_of_path_and_body_then_answer)
    finally:
        stack.stop()


def main():
    t = TestRun()
    test_wire_contract(t)
    test_redis_url(t)
    test_script_flush(t)
    test_redis_stall(t)
    t.finish()


if __name__ == "__main__":
    main()
