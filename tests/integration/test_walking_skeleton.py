"""End to end through real binaries, real Redis and real PostgreSQL: a POST
reaches every socket of its user on every gateway and nobody else, lands as one
row, is served by history; bad input gets the documented errors; Redis down
gives 503."""
import time

from herald_stack import Stack, TestRun, http_request, post_notification, wait_until
from herald_ws import WsClient, WsClosed


def main():
    t = TestRun()
    stack = Stack(gateways=2)
    clients = []
    try:
        gw1, gw2 = stack.gateway_ports
        alice1 = WsClient("127.0.0.1", gw1, "/ws?user_id=alice")
        alice2 = WsClient("127.0.0.1", gw2, "/ws?user_id=alice")
        bob = WsClient("127.0.0.1", gw1, "/ws?user_id=bob")
        clients += [alice1, alice2, bob]

        def welcome_names_the_user():
            for c, user in ((alice1, "alice"), (alice2, "alice"), (bob, "bob")):
                w = c.recv_json()
                assert w["type"] == "welcome" and w["user_id"] == user, w
                assert w["connection_id"]
        t.check("welcome_frame_names_user_and_connection", welcome_names_the_user)

        # The SUBSCRIBE is asynchronous: wait until both gateways hold alice's channel.
        wait_until(lambda: stack.redis.cmd("PUBSUB", "NUMSUB", "herald:user:alice")[1] == 2,
                   5, "both gateways subscribed to alice")

        state = {}

        def post_is_accepted():
            status, body = post_notification(stack.ingest_port, {
                "user_id": "alice", "message": "hello alice", "type": "comment",
                "data": {"post": 42}})
            assert status == 202, (status, body)
            assert len(body["id"]) == 36 and body["id"][14] == "7", body
            assert body["created_at"].endswith("Z"), body
            state["id"] = body["id"]
            state["t0"] = time.monotonic()
        t.check("post_notification_answers_202_with_uuidv7", post_is_accepted)

        def both_alice_sockets_get_it():
            for c in (alice1, alice2):
                frame = c.recv_type("notification", timeout=1.0)
                n = frame["notification"]
                assert n["id"] == state["id"], frame
                assert n["user_id"] == "alice" and n["message"] == "hello alice", frame
                assert n["type"] == "comment" and n["data"] == {"post": 42}, frame
            assert time.monotonic() - state["t0"] < 1.0
        t.check("both_alice_sockets_on_two_gateways_receive_within_1s", both_alice_sockets_get_it)

        t.check("bob_receives_nothing", lambda: bob.expect_nothing(0.5))

        def row_in_postgres():
            rows = wait_until(lambda: stack.psql(
                f"SELECT user_id, type, message, data::text FROM notifications "
                f"WHERE id = '{state['id']}'"), 2, "row in postgres")
            assert rows == 'alice|comment|hello alice|{"post": 42}', rows
            assert stack.psql("SELECT count(*) FROM notifications") == "1"
        t.check("row_is_in_postgres_within_2s", row_in_postgres)

        def history_returns_it():
            status, body = http_request(stack.history_port, "GET", "/notifications?user_id=alice")
            assert status == 200, (status, body)
            items = body["items"]
            assert [i["id"] for i in items] == [state["id"]], body
            assert items[0]["message"] == "hello alice" and items[0]["read_at"] is None
            status, body = http_request(stack.history_port, "GET", "/notifications?user_id=bob")
            assert status == 200 and body["items"] == [], body
        t.check("history_returns_the_notification_to_its_user_only", history_returns_it)

        def acked_after_commit():
            wait_until(lambda: stack.redis.cmd("XPENDING", "herald:stream:notifications",
                                               "herald-workers")[0] == 0, 2, "pending empty")
        t.check("worker_leaves_nothing_pending", acked_after_commit)

        def bad_bodies():
            port = stack.ingest_port
            cases = [
                (b"{not json", {}, 400, "invalid_json"),
                (b"[1,2]", {}, 400, "invalid_json"),
                (b'{"message":"x"}', {}, 400, "missing_field"),
                (b'{"user_id":"alice"}', {}, 400, "missing_field"),
                (b'{"user_id":"","message":"x"}', {}, 400, "invalid_field"),
                (('{"user_id":"%s","message":"x"}' % ("u" * 129)).encode(), {}, 400, "invalid_field"),
                (('{"user_id":"a","message":"%s"}' % ("m" * 4097)).encode(), {}, 400, "invalid_field"),
                (b'{"user_id":"a","message":"x","data":[1]}', {}, 400, "invalid_field"),
                (b'{"user_id":"a","message":"x","colour":"red"}', {}, 400, "unknown_field"),
                (b'{"user_id":"a","message":"x"}', {"Content-Type": "text/plain"}, 415,
                 "unsupported_media_type"),
                (b'{"user_id":"a","message":"' + b"x" * 70000 + b'"}', {}, 413, "body_too_large"),
            ]
            for body, headers, want_status, want_code in cases:
                status, resp = http_request(port, "POST", "/notifications", body, headers)
                assert status == want_status, (body[:60], status, resp)
                assert resp["error"]["code"] == want_code, (body[:60], resp)
                assert resp["error"]["message"], resp
            status, resp = http_request(port, "GET", "/nope")
            assert status == 404 and resp["error"]["code"] == "not_found", resp
            status, resp = http_request(port, "GET", "/notifications")
            assert status == 405 and resp["error"]["code"] == "method_not_allowed", resp
            # Nothing refused reached anyone.
            alice1.expect_nothing(0.3)
        t.check("bad_bodies_get_documented_4xx_codes", bad_bodies)

        def ws_ping_and_bad_frames():
            alice1.send_json({"type": "ping", "ref": "r1"})
            assert alice1.recv_json() == {"type": "pong", "ref": "r1"}
            alice1.send_text("{oops")
            err = alice1.recv_json()
            assert err["type"] == "error" and err["code"] == "invalid_json", err
            c = WsClient("127.0.0.1", gw1, "/ws")
            assert c.recv_json()["code"] == "invalid_user"
            try:
                c.recv_json()
                raise AssertionError("socket without user_id was not closed")
            except WsClosed as e:
                assert e.code == 1008, e
        t.check("gateway_answers_ping_and_rejects_bad_frames", ws_ping_and_bad_frames)

        def redis_down_gives_503():
            stack.stop_redis()
            status, resp = post_notification(stack.ingest_port, {"user_id": "alice",
                                                                 "message": "lost?"})
            assert status == 503, (status, resp)
            assert resp["error"]["code"] == "unavailable", resp
            status, _ = http_request(stack.ingest_port, "GET", "/healthz")
            assert status == 503
        t.check("ingest_answers_503_with_redis_stopped", redis_down_gives_503)

        def nothing_extra_stored():
            time.sleep(0.3)
            assert stack.psql("SELECT count(*) FROM notifications") == "1"
        t.check("refused_posts_store_nothing", nothing_extra_stored)
    finally:
        for c in clients:
            c.close()
        try:
            t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
        except Exception:  # noqa: BLE001
            pass
    t.finish()


if __name__ == "__main__":
    main()
