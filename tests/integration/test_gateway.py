"""The gateway against real Redis and real gateway processes: rooms and chat
across gateways, presence (and its cleanup after kill -9), slow consumers cut
off without hurting others, bad input, keepalive, Redis restart, drain."""
import time

from herald_stack import (Stack, TestRun, check, http_request, listening_ports, post_notification,
                          wait_until)
from herald_ws import WsClient, user_path

PRESENCE_TTL = 6


def expect_close(client, code, timeout=5.0):
    return client.expect_close(code, timeout)


def healthz(port):
    status, body = http_request(port, "GET", "/healthz")
    check(isinstance(body, dict), "healthz body", body)
    return body


def numsub(stack, channel):
    return stack.redis.cmd("PUBSUB", "NUMSUB", channel)[1]


def main():
    t = TestRun()
    stack = Stack(gateways=2, services=("ingest", "gateway"), extra_env={
        "HERALD_GATEWAY_PRESENCE_TTL_S": PRESENCE_TTL,
        "HERALD_GATEWAY_QUEUE_MAX_BYTES": 262144,
        "HERALD_GATEWAY_QUEUE_MAX_FRAMES": 256,
        "HERALD_GATEWAY_MAX_ROOMS": 3,
        "HERALD_GATEWAY_PUBLISH_RATE": 5,
        "HERALD_GATEWAY_DRAIN_MS": 3000,
    })
    opened = []

    def ws(gw, user):
        c = WsClient("127.0.0.1", stack.gateway_ports[gw], user_path(user))
        opened.append(c)
        check(c.recv_type("welcome")["user_id"] == user)
        return c

    try:
        alice = ws(0, "alice")
        bob = ws(1, "bob")

        def chat_both_ways():
            alice.send_json({"type": "join", "room": "lobby", "ref": 1})
            check(alice.recv_type("joined") == {"type": "joined", "room": "lobby",
                                                 "user_id": "alice", "ref": 1})
            bob.send_json({"type": "join", "room": "lobby", "ref": 2})
            check(bob.recv_type("joined")["ref"] == 2)
            wait_until(lambda: numsub(stack, "herald:room:lobby") == 2, 5, "both subscribed")
            alice.send_json({"type": "publish", "room": "lobby", "message": "hi bob", "ref": "a1"})
            got_b = bob.recv_type("message")
            check(got_b["from"] == "alice" and got_b["message"] == "hi bob", got_b)
            check("ref" not in got_b, got_b)
            got_a = alice.recv_type("message")
            check(got_a["id"] == got_b["id"] and got_a["ref"] == "a1", got_a)
            bob.send_json({"type": "publish", "room": "lobby", "message": "hi alice"})
            got = alice.recv_type("message")
            check(got["from"] == "bob" and got["message"] == "hi alice", got)
            bob.recv_type("message")
        t.check("two_clients_on_two_gateways_chat_both_ways", chat_both_ways)

        def receipts_are_recorded():
            status, body = post_notification(stack.ingest_port, {"user_id": "alice",
                                                                 "message": "receipt me"})
            check(status == 202)
            check(alice.recv_type("notification")["notification"]["id"] == body["id"])

            def found():
                for _, fields in stack.redis.cmd("XRANGE", "herald:stream:receipts", "-", "+"):
                    f = dict(zip(fields[::2], fields[1::2]))
                    if f["id"] == body["id"]:
                        return f
            f = wait_until(found, 2, "receipt in the stream")
            check(f["user_id"] == "alice" and abs(int(f["delivered_at"]) - time.time() * 1000) < 5000)
        t.check("written_notification_leaves_a_delivery_receipt", receipts_are_recorded)

        def order_is_the_same_everywhere():
            # Two senders interleave; both receivers must see one order.
            stack.redis.cmd("PING")
            for i in range(4):
                (alice if i % 2 else bob).send_json(
                    {"type": "publish", "room": "lobby", "message": f"n{i}"})
            seq_a = [alice.recv_type("message")["id"] for _ in range(4)]
            seq_b = [bob.recv_type("message")["id"] for _ in range(4)]
            check(seq_a == seq_b, (seq_a, seq_b))
        t.check("room_messages_arrive_in_one_order_on_every_gateway", order_is_the_same_everywhere)

        def messages_are_kept_in_stream():
            n = stack.redis.cmd("XLEN", "herald:stream:room_messages")
            check(n >= 6, n)
            entry = stack.redis.cmd("XRANGE", "herald:stream:room_messages", "-", "+", "COUNT", 1)[0]
            fields = dict(zip(entry[1][::2], entry[1][1::2]))
            check(fields["room"] == "lobby" and '"from":"alice"' in fields["payload"], fields)
        t.check("chat_messages_are_appended_to_the_room_stream", messages_are_kept_in_stream)

        def presence_lists_both():
            alice.send_json({"type": "presence", "room": "lobby", "ref": 9})
            p = alice.recv_type("presence")
            check(sorted(p["users"]) == ["alice", "bob"] and p["ref"] == 9, p)
        t.check("presence_lists_users_of_both_gateways", presence_lists_both)

        def leave_sends_left():
            carol = ws(1, "carol")
            carol.send_json({"type": "join", "room": "lobby"})
            carol.recv_type("joined")
            joined = alice.recv_type("joined")
            check(joined["user_id"] == "carol", joined)
            carol.send_json({"type": "leave", "room": "lobby", "ref": "x"})
            check(carol.recv_type("left")["ref"] == "x")
            left = alice.recv_type("left")
            check(left == {"type": "left", "room": "lobby", "user_id": "carol"}, left)
            carol.close()
        t.check("join_and_leave_events_reach_the_room", leave_sends_left)

        def channels_follow_local_sockets():
            d1 = ws(0, "dora")
            d2 = ws(0, "dora")
            wait_until(lambda: numsub(stack, "herald:user:dora") == 1, 5, "dora subscribed once")
            d1.send_json({"type": "join", "room": "tmp-room"})
            d1.recv_type("joined")
            wait_until(lambda: numsub(stack, "herald:room:tmp-room") == 1, 5, "room subscribed")
            d1.send_json({"type": "leave", "room": "tmp-room"})
            d1.recv_type("left")
            wait_until(lambda: numsub(stack, "herald:room:tmp-room") == 0, 5, "room unsubscribed")
            conns = healthz(stack.gateway_ports[0])["connections"]
            d1.close_handshake()
            wait_until(lambda: healthz(stack.gateway_ports[0])["connections"] == conns - 1, 5,
                       "the gateway to drop d1")
            check(numsub(stack, "herald:user:dora") == 1, "still one socket of dora")
            # ... and still delivering to it.
            status, body = post_notification(stack.ingest_port, {"user_id": "dora", "message": "d2"})
            check(status == 202, (status, body))
            check(d2.recv_type("notification")["notification"]["id"] == body["id"])
            d2.close()
            wait_until(lambda: numsub(stack, "herald:user:dora") == 0, 5, "dora unsubscribed")
        t.check("channels_are_subscribed_once_and_released_after_the_last_socket",
                channels_follow_local_sockets)

        def bad_input():
            c = ws(0, "mallory")
            cases = [
                ({"type": "join"}, "missing_field"),
                ({"type": "join", "room": "bad room!"}, "invalid_room"),
                ({"type": "publish", "room": "lobby", "message": "x"}, "not_member"),
                ({"type": "fly"}, "unknown_type"),
                ({"ref": 5}, "missing_field"),
                ({"type": "leave", "room": "never"}, "not_member"),
            ]
            for frame, code in cases:
                c.send_json(frame)
                err = c.recv_type("error")
                check(err["code"] == code, (frame, err))
            for i in range(3):
                c.send_json({"type": "join", "room": f"r{i}"})
                c.recv_type("joined")
            c.send_json({"type": "join", "room": "r3", "ref": "too"})
            err = c.recv_type("error")
            check(err["code"] == "too_many_rooms" and err["ref"] == "too", err)
            # Publishing faster than the per-socket rate (5/s, bursts of 10).
            codes = []
            for i in range(15):
                c.send_json({"type": "publish", "room": "r0", "message": f"spam{i}", "ref": i})
            for _ in range(15):
                m = c.recv_json()
                while m["type"] not in ("message", "error"):
                    m = c.recv_json()
                codes.append(m.get("code", "ok"))
            check("rate_limited" in codes and codes.count("ok") >= 9, codes)
            c.send_frame(0x2, b"\x00\x01")
            expect_close(c, 1003)
            big = ws(0, "mallory")
            big.send_text('{"type":"ping","pad":"' + "x" * 20000 + '"}')
            expect_close(big, 1009)
        t.check("bad_frames_get_error_codes_or_close_codes", bad_input)

        def slow_consumer_cut_off():
            slow = WsClient("127.0.0.1", stack.gateway_ports[0], user_path("slowpoke"))
            opened.append(slow)
            slow.recv_type("welcome")
            fast = ws(0, "speedy")
            # Both watch the same flood; only the one that reads may stay.
            for c in (slow, fast):
                c.send_json({"type": "join", "room": "flood"})
            fast.recv_type("joined")
            wait_until(lambda: numsub(stack, "herald:room:flood") == 1, 5, "flood subscribed")
            payload = "y" * 4000
            sent = 0
            deadline = time.monotonic() + 20
            got = 0
            cut = False
            while time.monotonic() < deadline and not cut:
                for _ in range(20):
                    stack.redis.cmd("PUBLISH", "herald:room:flood",
                                    '{"type":"message","id":"x","room":"flood","message":"%s"}' % payload)
                    sent += 1
                while got < sent:
                    fast.recv_frame(5)
                    got += 1
                cut = healthz(stack.gateway_ports[0])["slow_consumers_closed"] == 1
            check(cut, f"slow consumer not cut after {sent} frames")
            check(got == sent)
            # The slow client sees its close (1008) after the frames it had buffered.
            slow.sock.settimeout(10)
            expect_close(slow, 1008, timeout=30)
            fast.send_json({"type": "ping", "ref": "still"})
            check(fast.recv_type("pong")["ref"] == "still")
        t.check("client_that_stops_reading_is_cut_while_reader_keeps_receiving",
                slow_consumer_cut_off)

        def redis_restart():
            stack.stop_redis()
            for port in stack.gateway_ports:
                wait_until(lambda: healthz(port)["redis"] == "down", 10, "the gateway to see Redis gone")
            stack.start_redis()
            wait_until(lambda: numsub(stack, "herald:user:alice") == 1, 15, "alice resubscribed")
            wait_until(lambda: numsub(stack, "herald:room:lobby") == 2, 15, "lobby resubscribed")
            wait_until(lambda: http_request(stack.ingest_port, "GET", "/readyz")[0] == 200, 15,
                       "ingest reconnected")
            for port in stack.gateway_ports:
                wait_until(lambda: http_request(port, "GET", "/readyz")[0] == 200, 15,
                           "gateway reconnected (subscriber and command connections)")
            status, body = post_notification(stack.ingest_port, {"user_id": "alice",
                                                                 "message": "back"})
            check(status == 202, (status, body))
            n = alice.recv_type("notification", timeout=3)
            check(n["notification"]["message"] == "back")
            bob.send_json({"type": "publish", "room": "lobby", "message": "after restart"})
            check(alice.recv_type("message")["message"] == "after restart")
        t.check("redis_restart_keeps_sockets_and_delivery_resumes", redis_restart)

        def presence_after_kill9():
            dave = ws(0, "dave")
            dave.send_json({"type": "join", "room": "lobby"})
            dave.recv_type("joined")
            # dave's presence is written by gateway 1 asynchronously: wait for it.
            def dave_present():
                bob.send_json({"type": "presence", "room": "lobby"})
                return "dave" in bob.recv_type("presence")["users"]
            wait_until(dave_present, 5, "dave in presence", interval=0.1)
            stack.services["gateway1"].kill9()
            t0 = time.monotonic()

            def gone():
                bob.send_json({"type": "presence", "room": "lobby"})
                users = bob.recv_type("presence")["users"]
                return "dave" not in users and "alice" not in users
            wait_until(gone, PRESENCE_TTL + 10, "gateway1's users to leave presence", interval=0.5)
            print(f"# presence cleared {time.monotonic() - t0:.1f}s after the kill (TTL {PRESENCE_TTL}s)",
                  flush=True)
        t.check("kill9_of_a_gateway_removes_its_users_from_presence", presence_after_kill9)

        def sigterm_drains():
            svc = stack.services["gateway2"]
            status, body = post_notification(stack.ingest_port, {"user_id": "bob",
                                                                 "message": "last one"})
            check(status == 202)
            check(bob.recv_type("notification")["notification"]["id"] == body["id"])
            svc.proc.send_signal(15)
            expect_close(bob, 1001)
            check(svc.wait(10) == 0, "gateway2 exit after SIGTERM")
            # The delivery receipt written just before the stop reached Redis.
            ids = [dict(zip(f[::2], f[1::2]))["id"]
                   for _, f in stack.redis.cmd("XRANGE", "herald:stream:receipts", "-", "+")]
            check(body["id"] in ids)
        t.check("sigterm_closes_every_socket_with_1001_and_exits", sigterm_drains)
    finally:
        for c in opened:
            try:
                c.close()
            except OSError:
                pass
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)

    # Keepalive on its own gateway: its short idle timeout would close the
    # sockets above while the test is busy elsewhere.
    stack = Stack(gateways=1, services=("gateway",), extra_env={
        "HERALD_GATEWAY_PING_INTERVAL_S": 1, "HERALD_GATEWAY_IDLE_TIMEOUT_S": 3})
    try:
        def silent_socket_is_closed():
            # A client that completes the handshake and then never answers a
            # PING: PINGs after ping_interval (1 s), then the idle close
            # (4000 "idle timeout", proto/ws.md) after idle_timeout (3 s), then EOF.
            c = WsClient("127.0.0.1", stack.gateway_ports[0], user_path("mute"), auto_pong=False)
            opened.append(c)
            reason = c.expect_close(4000, timeout=20)
            check(c.pings_received >= 1, "no PING before the close", c.pings_received)
            check("idle" in reason, "close reason", reason)
            c.expect_eof(timeout=10)
        t.check("server_pings_and_closes_silent_sockets", silent_socket_is_closed)

    finally:
        t.check("keepalive_gateway_exits_cleanly", stack.stop)

    # Two gateway processes sharing one port (SO_REUSEPORT): the first binds
    # port 0, the second joins the port it got.
    stack = Stack(gateways=0, services=("gateway",))
    try:
        shared = {"HERALD_GATEWAY_REUSEPORT": "true", "HERALD_GATEWAY_DEV_USER_QUERY": "true"}
        port = stack.spawn_listening("shared1", "herald-gateway", "HERALD_GATEWAY_PORT",
                                     dict(shared, HERALD_GATEWAY_NODE_ID="s1"))
        stack.spawn("shared2", "herald-gateway", dict(shared, HERALD_GATEWAY_PORT=port,
                                                      HERALD_GATEWAY_NODE_ID="s2"))
        wait_until(lambda: listening_ports(stack.services["shared2"].proc.pid) == [port], 10,
                   "the second gateway listening on the shared port")

        def spread_over_both():
            nodes = set()
            for i in range(40):
                c = WsClient("127.0.0.1", port, user_path(f"s{i}"))
                opened.append(c)
                nodes.add(c.recv_type("welcome")["connection_id"].split("-")[0])
            check(nodes == {"s1", "s2"}, nodes)
        t.check("two_gateways_share_one_port_with_so_reuseport", spread_over_both)

        def drained_one_leaves_the_port_to_the_other():
            stack.services["shared1"].proc.send_signal(15)
            check(stack.services["shared1"].wait(10) == 0, "shared1 exit after SIGTERM")
            for i in range(10):
                c = WsClient("127.0.0.1", port, user_path(f"after{i}"))
                opened.append(c)
                check(c.recv_type("welcome")["connection_id"].startswith("s2-"))
        t.check("after_sigterm_new_sockets_go_to_the_sibling", drained_one_leaves_the_port_to_the_other)
    finally:
        for c in opened:
            try:
                c.close()
            except OSError:
                pass
        t.check("shared_port_gateways_exit_cleanly", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
