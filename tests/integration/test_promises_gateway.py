"""Gateway promises of proto/ws.md and proto/redis.md that no other test drove:
dev_user_query=false refuses every socket, invalid_field and close 1007,
presence_events_max, presence keys expiring without refresh, `unavailable`
while Redis is down, /readyz 503 while draining."""
import http.client
import json
import signal
import time

from herald_promises import CheckFailed, Checks, check, expect_close, request
from herald_stack import Stack, TestRun, free_port, wait_until
from herald_ws import WsClient, WsClosed, WsRefused, user_path

PRESENCE_TTL = 3  # the gateway's minimum; keys expire after twice that
EVENTS_MAX = 2

# Checks known to fail against the current code (name → why); printed as skipped.
EXPECTED_FAILURES = {}


def healthz(port):
    return request(port, "GET", "/healthz")


def readyz(port):
    return request(port, "GET", "/readyz")


def main():
    t = TestRun()
    run = Checks(t, EXPECTED_FAILURES)
    stack = Stack(gateways=2, services=("gateway",), extra_env={
        "HERALD_GATEWAY_PRESENCE_TTL_S": PRESENCE_TTL,
        "HERALD_GATEWAY_PRESENCE_EVENTS_MAX": EVENTS_MAX,
        "HERALD_GATEWAY_DRAIN_MS": 10000,
        "HERALD_GATEWAY_QUEUE_MAX_BYTES": 64 << 20,  # room for the drain check's backlog
        "HERALD_GATEWAY_QUEUE_MAX_FRAMES": 4096,
    })
    r = stack.redis
    opened = []

    def ws(gw, user, port=None):
        c = WsClient("127.0.0.1", port or stack.gateway_ports[gw], user_path(user))
        opened.append(c)
        check(c.recv_type("welcome")["user_id"] == user, "welcome names the user")
        return c

    def join(c, room, ref):
        c.send_json({"type": "join", "room": room, "ref": ref})
        got = c.recv_type("joined")
        check(got.get("ref") == ref, "joined answers the join", got)

    try:
        def no_dev_user_query_means_unauthorized():
            port = free_port()
            svc = stack.spawn("gateway_noauth", "herald-gateway", {
                "HERALD_GATEWAY_PORT": port, "HERALD_GATEWAY_DEV_USER_QUERY": "false",
                "HERALD_GATEWAY_NODE_ID": "noauth"})
            wait_until(lambda: readyz(port)[0] == 200, 15, "gateway without dev_user_query")
            for path in ("/ws?user_id=alice", "/ws"):
                try:
                    c = WsClient("127.0.0.1", port, path)
                    opened.append(c)
                    check(False, "upgrade without a token accepted", path)
                except WsRefused as e:
                    err = e.json()["error"]
                    check(e.status == 401 and err["code"] == "unauthorized" and
                          err["reason"] == "missing", "401 unauthorized before the upgrade", path,
                          e.body)
            # No session was attached: nothing subscribed, nothing counted.
            status, _, body = healthz(port)
            check(status == 200 and body["connections"] == 0 and body["users"] == 0,
                  "no connection kept", body)
            check(r.cmd("PUBSUB", "NUMSUB", "herald:user:alice")[1] == 0,
                  "alice's channel is not subscribed")
            check(svc.proc.poll() is None, "gateway still running")
        run("dev_user_query_false_refuses_user_id_with_401_before_the_upgrade",
            no_dev_user_query_means_unauthorized)

        def invalid_fields_then_1007():
            c = ws(0, "fields")
            join(c, "lobby", "j")
            cases = [
                ({"type": "ping", "ref": {"nested": 1}}, None),
                ({"type": "ping", "ref": [1]}, None),
                ({"type": "publish", "room": "lobby", "message": 5, "ref": "m1"}, "m1"),
                ({"type": "publish", "room": "lobby", "message": "", "ref": "m2"}, "m2"),
                ({"type": "publish", "room": "lobby", "message": "x" * 4097, "ref": "m3"}, "m3"),
                # 2049 two-byte characters: 4098 bytes, the limit counts bytes.
                ({"type": "publish", "room": "lobby", "message": "\u00e9" * 2049, "ref": 4}, 4),
            ]
            for frame, ref in cases:
                c.send_json(frame)
                err = c.recv_type("error")
                check(err["code"] == "invalid_field", "invalid_field", frame, err)
                check(err.get("ref") == ref, "ref echoed when valid", frame, err)
            # At the limit it is accepted: 4096 bytes of two-byte characters.
            c.send_json({"type": "publish", "room": "lobby", "message": "\u00e9" * 2048, "ref": "ok"})
            m = c.recv_type("message")
            check(m.get("ref") == "ok" and m["message"] == "\u00e9" * 2048, "4096-byte message", m)
            check(r.cmd("XLEN", "herald:stream:room_messages") == 1,
                  "only the valid message was appended")
            c.send_json({"type": "ping", "ref": "still"})
            check(c.recv_type("pong") == {"type": "pong", "ref": "still"}, "socket usable")
            # A text frame that is not UTF-8.
            c.send_frame(0x1, b'{"type":"ping","ref":"\xff\xfe"}')
            expect_close(c, 1007)
        run("invalid_field_errors_keep_the_socket_and_bad_utf8_closes_1007",
            invalid_fields_then_1007)

        def events_only_in_small_rooms():
            a = ws(0, "ev_a")
            b = ws(1, "ev_b")
            c = ws(1, "ev_c")

            def next_for_a():
                # a may or may not hear its own arrival (its subscription races the event).
                while True:
                    m = a.recv_json()
                    if m != {"type": "joined", "room": "big", "user_id": "ev_a"}:
                        return m

            join(a, "big", 1)
            join(b, "big", 2)
            # Room of 2 (= presence_events_max): a hears b arrive.
            got = next_for_a()
            check(got == {"type": "joined", "room": "big", "user_id": "ev_b"},
                  "joined event in a small room", got)
            join(c, "big", 3)  # 3 users: no event
            # Frames of one room channel arrive in order: if c's join had been
            # published, a would see it before b's message.
            b.send_json({"type": "publish", "room": "big", "message": "after c", "ref": "s1"})
            nxt = next_for_a()
            check(nxt.get("type") == "message" and nxt["message"] == "after c",
                  "no joined event once the room is larger than presence_events_max", nxt)
            members = r.cmd("ZRANGE", "herald:presence:{big}", 0, -1)
            check(sorted(members) == ["ev_a", "ev_b", "ev_c"], "all three present", members)
            c.send_json({"type": "leave", "room": "big", "ref": "l3"})
            check(c.recv_type("left").get("ref") == "l3", "c's leave answered")
            wait_until(lambda: "ev_c" not in r.cmd("ZRANGE", "herald:presence:{big}", 0, -1), 5,
                       "c gone from presence")
            b.send_json({"type": "publish", "room": "big", "message": "after c left", "ref": "s2"})
            nxt = next_for_a()
            check(nxt.get("type") == "message" and nxt["message"] == "after c left",
                  "no left event when a room of 3 shrinks", nxt)
            b.send_json({"type": "leave", "room": "big", "ref": "l2"})
            got = next_for_a()
            check(got == {"type": "left", "room": "big", "user_id": "ev_b"},
                  "left event once the room is small again", got)
        run("joined_and_left_events_stop_above_presence_events_max", events_only_in_small_rooms)

        def presence_keys_expire_without_refresh():
            c = ws(1, "ghost")
            join(c, "expiring", "e")
            keys = ["herald:presence:{expiring}", "herald:presence:{expiring}:ghost"]
            for k in keys:
                ttl = r.cmd("PTTL", k)
                check(0 < ttl <= 2 * PRESENCE_TTL * 1000, "key expires within 2 x presence_ttl_s", k, ttl)
            # The live gateway refreshes them (every presence_ttl_s / 3).
            full = 2 * PRESENCE_TTL * 1000
            wait_until(lambda: 0 < r.cmd("PTTL", keys[1]) < full - 300, 10, "the expiry to run down")
            wait_until(lambda: r.cmd("PTTL", keys[1]) > full - 150, 10, "a refresh of the expiry")
            gw = stack.services["gateway2"].proc
            gw.send_signal(signal.SIGSTOP)  # no refresh, no goodbye
            try:
                wait_until(lambda: r.cmd("EXISTS", *keys) == 0, 2 * PRESENCE_TTL + 10,
                           "both presence keys to expire")
            finally:
                gw.send_signal(signal.SIGCONT)
            wait_until(lambda: readyz(stack.gateway_ports[1])[0] == 200, 10, "gateway2 back")
            c.send_json({"type": "ping", "ref": "back"})
            check(c.recv_type("pong")["ref"] == "back", "socket survives")
        run("presence_keys_expire_after_twice_the_ttl_without_refresh",
            presence_keys_expire_without_refresh)

        def unavailable_while_redis_down():
            c = ws(0, "outage")
            join(c, "dark", "d")
            stack.stop_redis()
            try:
                wait_until(lambda: readyz(stack.gateway_ports[0])[0] == 503, 10, "gateway sees redis down")
                status, _, body = readyz(stack.gateway_ports[0])
                check(body["redis"] == "down" and body["status"] == "unavailable", "healthz body", body)
                c.send_json({"type": "publish", "room": "dark", "message": "lost?", "ref": "p"})
                err = c.recv_type("error")
                check(err["code"] == "unavailable" and err.get("ref") == "p", "publish unavailable", err)
                c.send_json({"type": "presence", "room": "dark", "ref": "q"})
                err = c.recv_type("error")
                check(err["code"] == "unavailable" and err.get("ref") == "q", "presence unavailable", err)
            finally:
                stack.start_redis()
                # Also when a check above failed: the next checks need the gateways back.
                for port in stack.gateway_ports:
                    wait_until(lambda: readyz(port)[0] == 200, 15, f"gateway :{port} recovered")
            # The error said retry; the retry goes through, and the refused
            # message never shows up before it.
            c.send_json({"type": "publish", "room": "dark", "message": "now", "ref": "p2"})
            m = c.recv_type("message")
            check(m.get("ref") == "p2", "retry delivered", m)
        run("publish_and_presence_answer_unavailable_while_redis_is_down", unavailable_while_redis_down)

        def healthz_503_while_draining():
            # Draining lasts while a socket still has frames to write: a client
            # that does not read, with a backlog bigger than the kernel buffers.
            port = stack.gateway_ports[1]
            stubborn = ws(1, "stubborn")
            pad = "p" * 16000
            for i in range(2000):
                r.cmd("PUBLISH", "herald:user:stubborn", f'{{"type":"bulk","i":{i},"pad":"{pad}"}}')
            wait_until(lambda: healthz(port)[2]["frames_queued"] > 0, 10, "a backlog on the socket")
            svc = stack.services["gateway2"]
            hc = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                status, _, body = request(port, "GET", "/readyz", conn=hc)
                check(status == 200 and body["status"] == "ready", "ready before", body)
                svc.proc.send_signal(signal.SIGTERM)
                # The listener is closed at once; the keep-alive connection stays.
                answer = wait_until(lambda: (lambda a: a if a[0] == 503 else None)(
                    request(port, "GET", "/readyz", conn=hc)), 5, "503 on /readyz")
                check(answer[2]["status"] == "unavailable" and answer[2]["redis"] == "up",
                      "draining, Redis itself up", answer)
                check(svc.proc.poll() is None, "gateway was still draining when asked")
            finally:
                hc.close()
            # Reading the backlog lets the drain finish: the queued frames, then
            # 1001 (frames that reached the gateway after SIGTERM are dropped).
            n = 0
            try:
                while True:
                    stubborn.recv_frame(10)
                    n += 1
            except WsClosed as e:
                check(e.code == 1001, "drain closes with 1001", e.code)
            check(0 < n <= 2000, "the backlog arrives before the close", n)
            check(svc.proc.wait(15) == 0, "drained gateway exits 0")
        run("gateway_healthz_is_503_while_draining", healthz_503_while_draining)
    finally:
        for c in opened:
            try:
                c.close()
            except OSError:
                pass
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
