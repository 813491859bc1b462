"""Pipeline promises of proto/redis.md that no other test drove end to end:
a `room` notification reaches the sockets in the room (on both gateways) and
stays out of per-user history; receipts written by real gateways reach
notifications.delivered_at through the worker, the earliest receipt winning;
a receipt whose row never appears is dead-lettered after receipt_max_age_ms;
`herald-worker --replay-dead-letter --count N` moves back exactly the N oldest."""
import json
import signal
import subprocess
import time

from herald_promises import Checks, check, pending, request, uuid7, xrange
from herald_stack import SANITIZER_MARKS, Stack, TestRun, bearer, mint_token, post_notification, wait_until
from herald_ws import WsClient, user_path

RECEIPTS = "herald:stream:receipts"
DEAD = "herald:stream:dead"
MAX_AGE_MS = 3000

# Checks known to fail against the current code (name → why); printed as skipped.
EXPECTED_FAILURES = {}


def ms_of(stack, nid):
    """delivered_at of a row in ms since the epoch ('' when NULL)."""
    return stack.psql(f"SELECT round(extract(epoch FROM delivered_at) * 1000)::bigint "
                      f"FROM notifications WHERE id = '{nid}'")


def main():
    t = TestRun()
    run = Checks(t, EXPECTED_FAILURES)
    stack = Stack(gateways=2, workers=1, extra_env={
        "HERALD_WORKER_RECEIPT_RETRY_MS": 300,
        "HERALD_WORKER_RECEIPT_MAX_AGE_MS": MAX_AGE_MS,
    })
    r = stack.redis
    opened = []

    def ws(gw, user):
        c = WsClient("127.0.0.1", stack.gateway_ports[gw], user_path(user))
        opened.append(c)
        check(c.recv_type("welcome")["user_id"] == user, "welcome")
        return c

    def join(c, room):
        c.send_json({"type": "join", "room": room, "ref": room})
        check(c.recv_type("joined").get("ref") == room, "joined")

    def receipts_for(nid):
        return [f for _, f in xrange(r, RECEIPTS) if f["id"] == nid]

    try:
        def room_notification():
            alice, bob, carol = ws(0, "alice"), ws(1, "bob"), ws(0, "carol")
            join(alice, "news")
            join(bob, "news")
            wait_until(lambda: r.cmd("PUBSUB", "NUMSUB", "herald:room:news")[1] == 2, 5,
                       "both gateways subscribed to the room")
            s, own = post_notification(stack.ingest_port, {"user_id": "alice", "message": "mine"})
            check(s == 202, "alice's own notification", s, own)
            check(alice.recv_type("notification")["notification"]["id"] == own["id"], "own first")
            s, a = post_notification(stack.ingest_port,
                                     {"room": "news", "message": "extra", "type": "bulletin"})
            check(s == 202 and len(a["id"]) == 36 and set(a) == {"id", "created_at"}, "room 202", s, a)
            for c in (alice, bob):
                n = c.recv_type("notification")["notification"]
                check(n["id"] == a["id"] and n["room"] == "news" and "user_id" not in n
                      and n["message"] == "extra" and n["type"] == "bulletin", "room frame", n)
            # carol is not in the room: her next notification is her own.
            s, mine = post_notification(stack.ingest_port, {"user_id": "carol", "message": "hers"})
            n = carol.recv_type("notification")["notification"]
            check(n["id"] == mine["id"], "the room notification did not reach carol", n)
            wait_until(lambda: stack.psql(f"SELECT count(*) FROM notifications WHERE id IN "
                                          f"('{a['id']}', '{own['id']}', '{mine['id']}')") == "3",
                       10, "the three rows stored")
            row = stack.psql(f"SELECT room, user_id IS NULL, type FROM notifications WHERE id = '{a['id']}'")
            check(row == "news|t|bulletin", "one row with room set and no user", row)
            check(stack.psql(f"SELECT count(*) FROM notifications WHERE room = 'news'") == "1",
                  "stored once, not per member")
            for user in ("alice", "bob", "news"):
                s, body = request(stack.history_port, "GET", "/notifications",
                                  headers=bearer(mint_token(user)))[::2]
                ids = [i["id"] for i in body["items"]]
                check(s == 200 and a["id"] not in ids, "not in per-user history", user, ids)
                check(body["unread_count"] == (1 if user == "alice" else 0), "badge", user, body)
                if user == "news":
                    check(ids == [], "a user named like the room sees nothing", ids)
        run("room_notification_reaches_room_sockets_and_stays_out_of_user_history", room_notification)

        def earliest_receipt_wins():
            worker = stack.services["worker1"]
            rc = worker.terminate()
            check(rc == 0, "worker stopped cleanly", rc)
            d1, d2 = ws(0, "dave"), ws(1, "dave")
            gw2 = stack.services["gateway2"].proc
            gw2.send_signal(signal.SIGSTOP)  # gateway2 delivers later
            try:
                s, a = post_notification(stack.ingest_port, {"user_id": "dave", "message": "twice"})
                check(s == 202, "accepted", s, a)
                check(d1.recv_type("notification")["notification"]["id"] == a["id"], "gw1 delivered")
                first = wait_until(lambda: receipts_for(a["id"]), 5, "gateway1's receipt")
                t1 = int(first[0]["delivered_at"])
                wait_until(lambda: time.time() * 1000 > t1 + 5, 1, "the clock to pass t1")
            finally:
                gw2.send_signal(signal.SIGCONT)
            check(d2.recv_type("notification")["notification"]["id"] == a["id"], "gw2 delivered")
            both = wait_until(lambda: (lambda x: x if len(x) == 2 else None)(receipts_for(a["id"])), 5,
                              "gateway2's receipt")
            times = sorted(int(f["delivered_at"]) for f in both)
            check(times[0] == t1 and times[1] > t1, "two receipts, gateway1's earlier", times)
            # Row and both receipts wait in the streams; the worker takes them together.
            worker.start()
            wait_until(lambda: ms_of(stack, a["id"]) != "", 15, "delivered_at set")
            check(ms_of(stack, a["id"]) == str(t1), "delivered_at is the earliest receipt",
                  ms_of(stack, a["id"]), times)
            wait_until(lambda: pending(r, RECEIPTS) == 0, 10, "receipts acked")
        run("receipts_from_two_gateways_set_delivered_at_to_the_earliest", earliest_receipt_wins)

        ghosts = []

        def receipt_without_row_is_dead_lettered():
            erin = ws(0, "erin")
            for i in range(3):
                nid = uuid7()
                ghosts.append(nid)
                frame = json.dumps({"type": "notification", "notification": {
                    "id": nid, "user_id": "erin", "type": "default", "message": f"ghost {i}",
                    "data": None, "created_at": "2026-01-01T00:00:00.000Z"}}, separators=(",", ":"))
                r.cmd("PUBLISH", "herald:user:erin", frame)
                check(erin.recv_type("notification")["notification"]["id"] == nid, "delivered", i)
                wait_until(lambda: receipts_for(nid), 5, "its receipt")
            dead = wait_until(lambda: (lambda d: d if len(d) == 3 else None)(
                [f for _, f in xrange(r, DEAD) if f.get("dead_stream") == RECEIPTS]),
                MAX_AGE_MS / 1000 + 15, "three dead receipts")
            check(sorted(f["id"] for f in dead) == sorted(ghosts), "the ghost ids", dead)
            for f in dead:
                check(f["user_id"] == "erin" and f["delivered_at"].isdigit() and f["dead_reason"]
                      and f["dead_consumer"] == "worker1", "original fields and reason kept", f)
                age = int(f["dead_at"]) - int(f["dead_sid"].split("-")[0])
                check(age >= MAX_AGE_MS, "not before receipt_max_age_ms", age, f)
            wait_until(lambda: pending(r, RECEIPTS) == 0, 10, "nothing left pending")
        run("receipt_without_row_is_dead_lettered_after_receipt_max_age", receipt_without_row_is_dead_lettered)

        def replay_count():
            check(len(ghosts) == 3, "needs the dead receipts of the previous check")
            dead = xrange(r, DEAD)
            order = [f["id"] for _, f in dead]
            check(sorted(order) == sorted(ghosts), "only the ghosts are dead letters", order)
            at = {f["id"]: f["delivered_at"] for _, f in dead}
            # The cause is fixed: the rows now exist.
            for nid in ghosts:
                stack.psql(f"INSERT INTO notifications (id, user_id, type, message, created_at) "
                           f"VALUES ('{nid}', 'erin', 'default', 'ghost', now())")

            def replay(*extra):
                out = subprocess.run([stack.binary("herald-worker"), "--replay-dead-letter", *extra],
                                     env=stack.env, capture_output=True, text=True, timeout=30)
                text = out.stdout + out.stderr
                check(out.returncode == 0 and not any(m in text for m in SANITIZER_MARKS),
                      "replay exits 0", out.returncode, text[-2000:])

            replay("--count", "2")
            left = [f["id"] for _, f in xrange(r, DEAD)]
            check(left == order[2:], "the two oldest left the dead-letter stream", left, order)
            for nid in order[:2]:
                wait_until(lambda: ms_of(stack, nid) != "", 10, "a replayed receipt applied")
                check(ms_of(stack, nid) == at[nid], "with its original delivered_at", nid)
            wait_until(lambda: pending(r, RECEIPTS) == 0, 10, "replayed receipts acked")
            check(ms_of(stack, order[2]) == "", "the third is still waiting in the dead letters")
            replay()
            check(r.cmd("XLEN", DEAD) == 0, "the rest replayed")
            wait_until(lambda: ms_of(stack, order[2]) == at[order[2]], 10, "the last receipt applied")
        run("replay_dead_letter_count_moves_back_exactly_the_oldest_n", replay_count)
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
