"""End to end through real binaries, real Redis and real PostgreSQL: a POST
reaches every socket of its user on every gateway and nobody else, lands as one
row, is served by history; bad input gets the documented errors; Redis down
gives 503."""
import time

from herald_stack import (CheckedThread, Stack, TestRun, bearer, check, http_request, ingest_request,
                          mint_token, post_notification, wait_until)
from herald_ws import WsClient, WsClosed, WsRefused, user_path


def main():
    t = TestRun()
    stack = Stack(gateways=2)
    clients = []
    try:
        gw1, gw2 = stack.gateway_ports
        alice1 = WsClient("127.0.0.1", gw1, user_path("alice"))
        alice2 = WsClient("127.0.0.1", gw2, user_path("alice"))
        bob = WsClient("127.0.0.1", gw1, user_path("bob"))
        clients += [alice1, alice2, bob]

        def welcome_names_the_user():
            for c, user in ((alice1, "alice"), (alice2, "alice"), (bob, "bob")):
                w = c.recv_json()
                check(w["type"] == "welcome" and w["user_id"] == user, w)
                check(w["connection_id"])
        t.check("welcome_frame_names_user_and_connection", welcome_names_the_user)

        # The SUBSCRIBE is asynchronous: wait until both gateways hold alice's channel.
        wait_until(lambda: stack.redis.cmd("PUBSUB", "NUMSUB", "herald:user:alice")[1] == 2,
                   5, "both gateways subscribed to alice")

        state = {}

        def post_is_accepted():
            state["t0"] = time.monotonic()  # before the POST: delivery time includes ingest
            status, body = post_notification(stack.ingest_port, {
                "user_id": "alice", "message": "hello alice", "type": "comment",
                "data": {"post": 42}})
            check(status == 202, (status, body))
            check(len(body["id"]) == 36 and body["id"][14] == "7", body)
            check(body["created_at"].endswith("Z"), body)
            state["id"] = body["id"]
        t.check("post_notification_answers_202_with_uuidv7", post_is_accepted)

        def both_alice_sockets_get_it():
            # No timing assertion (speed is bench/'s business): the frame must
            # come, and the time since before the POST is reported.
            for c in (alice1, alice2):
                frame = c.recv_type("notification", timeout=10)
                n = frame["notification"]
                check(n["id"] == state["id"], frame)
                check(n["user_id"] == "alice" and n["message"] == "hello alice", frame)
                check(n["type"] == "comment" and n["data"] == {"post": 42}, frame)
            print(f"# POST -> both sockets: {(time.monotonic() - state['t0']) * 1000:.0f} ms", flush=True)
        t.check("both_alice_sockets_on_two_gateways_receive_it", both_alice_sockets_get_it)

        def bob_gets_only_his_own():
            # A barrier instead of a quiet period: bob's next frame must be a
            # notification to bob posted after alice's, so alice's never came.
            status, body = post_notification(stack.ingest_port, {"user_id": "bob", "message": "for bob"})
            check(status == 202, (status, body))
            state["bob_id"] = body["id"]
            frame = bob.recv_json(timeout=10)
            check(frame.get("type") == "notification" and frame["notification"]["id"] == body["id"],
                  "bob's first frame after alice's notification is not his own:", frame)
        t.check("bob_receives_only_his_own_notification", bob_gets_only_his_own)

        def row_in_postgres():
            rows = wait_until(lambda: stack.psql(
                f"SELECT user_id, type, message, data::text FROM notifications "
                f"WHERE id = '{state['id']}'"), 10, "row in postgres")
            check(rows == 'alice|comment|hello alice|{"post": 42}', rows)
            wait_until(lambda: stack.psql("SELECT count(*) FROM notifications") == "2", 10, "bob's row")
        t.check("row_is_in_postgres", row_in_postgres)

        def history_returns_it():
            status, body = http_request(stack.history_port, "GET", "/notifications",
                                        headers=bearer(mint_token("alice")))
            check(status == 200, (status, body))
            items = body["items"]
            check([i["id"] for i in items] == [state["id"]], body)
            check(items[0]["message"] == "hello alice" and items[0]["read_at"] is None)
            status, body = http_request(stack.history_port, "GET", "/notifications",
                                        headers=bearer(mint_token("bob")))
            check(status == 200 and [i["id"] for i in body["items"]] == [state["bob_id"]], body)
        t.check("history_returns_the_notification_to_its_user_only", history_returns_it)

        def acked_after_commit():
            # While the table is locked the worker's INSERT waits inside its
            # transaction: the entry must still be pending then (not acked
            # before the commit), and acked once the row is committed.
            stream, group = "herald:stream:notifications", "herald-workers"
            wait_until(lambda: stack.redis.cmd("XPENDING", stream, group)[0] == 0, 10, "pending empty")
            with stack.lock_table("notifications"):
                status, body = post_notification(stack.ingest_port, {"user_id": "carol", "message": "c"})
                check(status == 202, (status, body))
                wait_until(lambda: stack.waiting_on_lock() >= 1, 10, "the worker's write to wait for the lock")
                pend = stack.redis.cmd("XPENDING", stream, group)
                check(pend[0] == 1, "entry acked while its row was not committed:", pend)
            wait_until(lambda: stack.psql(f"SELECT count(*) FROM notifications WHERE id = '{body['id']}'")
                       == "1", 10, "row committed after the lock")
            wait_until(lambda: stack.redis.cmd("XPENDING", stream, group)[0] == 0, 10, "entry acked")
            state["accepted"] = 3
        t.check("worker_acks_only_after_commit", acked_after_commit)

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
            added = stack.entries_added("herald:stream:notifications")
            for body, headers, want_status, want_code in cases:
                status, resp = ingest_request(port, "POST", "/notifications", body, headers)
                check(status == want_status, (body[:60], status, resp))
                check(resp["error"]["code"] == want_code, (body[:60], resp))
                check(resp["error"]["message"], resp)
            status, resp = ingest_request(port, "GET", "/nope")
            check(status == 404 and resp["error"]["code"] == "not_found", resp)
            status, resp = ingest_request(port, "GET", "/notifications")
            check(status == 405 and resp["error"]["code"] == "method_not_allowed", resp)
            # Nothing refused was written (and so reached nobody; the pong
            # check below also shows alice1's next frame is no notification).
            check(stack.entries_added("herald:stream:notifications") == added,
                  "a refused POST was written to the stream")
            check(added == state["accepted"], "entries", added, "accepted", state["accepted"])
        t.check("bad_bodies_get_documented_4xx_codes", bad_bodies)

        def ws_ping_and_bad_frames():
            alice1.send_json({"type": "ping", "ref": "r1"})
            check(alice1.recv_json() == {"type": "pong", "ref": "r1"})
            alice1.send_text("{oops")
            err = alice1.recv_json()
            check(err["type"] == "error" and err["code"] == "invalid_json", err)
            try:  # no token: refused before the upgrade (proto/ws.md)
                WsClient("127.0.0.1", gw1, "/ws")
                raise AssertionError("socket without a token was accepted")
            except WsRefused as e:
                check(e.status == 401 and e.json()["error"]["code"] == "unauthorized", e.body)
        t.check("gateway_answers_ping_and_rejects_bad_frames", ws_ping_and_bad_frames)

        def redis_down_gives_503():
            stack.stop_redis()
            status, resp = post_notification(stack.ingest_port, {"user_id": "alice",
                                                                 "message": "lost?"})
            check(status == 503, (status, resp))
            check(resp["error"]["code"] == "unavailable", resp)
            status, _ = http_request(stack.ingest_port, "GET", "/readyz")
            check(status == 503)
        t.check("ingest_answers_503_with_redis_stopped", redis_down_gives_503)

        def nothing_extra_stored():
            # Every accepted entry was acked above; nothing else was written.
            check(stack.psql("SELECT count(*) FROM notifications") == str(state["accepted"]))
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
