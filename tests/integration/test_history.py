"""History against real binaries, Redis and PostgreSQL: keyset paging with no
gap or duplicate while notifications keep arriving, unread filter and counts
after concurrent marks, read-all, ownership (404), mark-read events reaching
every socket of the user through the gateways, room history, CORS, a slow
query that does not stall the pool, a bounded wait queue, PostgreSQL restarted
under the service, Redis down (503 for a token: its cut-off is unknown; a
committed mark still answers 200), and the dev_user_query switch. Every
request carries a real token (proto/auth.md); test_history_auth covers the
refusals."""
import http.client
import json
import socket
import struct
import subprocess
import threading
import time

from herald_stack import (CheckedThread, Stack, TestRun, bearer, check, http_request, mint_token,
                          post_notification, run_threads, tcp_states, wait_until)
from herald_ws import WsClient, user_path

PAGER = "pager"
QUEUE_MAX = 16


def req_h(port, method, path, headers=None, timeout=5):
    """Like http_request, also returning the response headers (lowercase keys)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, hdrs, (json.loads(raw) if raw else None)
    finally:
        conn.close()


def tok(user, rooms=None):
    """The Authorization header of a fresh token for user (proto/auth.md)."""
    return bearer(mint_token(user, rooms=rooms))


# A reader whose token reaches every room.
LOBBY = tok("reader", rooms=["*"])


def page_all(port, user, query="", limit=20, on_page=None):
    """Follows next_cursor to the end of user's inbox; returns the ids in order."""
    ids, cursor, pages = [], None, 0
    while True:
        path = f"/notifications?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        status, body = http_request(port, "GET", path, headers=tok(user))
        check(status == 200, (status, body))
        check(len(body["items"]) <= limit, body)
        ids += [i["id"] for i in body["items"]]
        pages += 1
        if on_page:
            on_page(pages)
        cursor = body["next_cursor"]
        if cursor is None:
            return ids
        check(body["items"], "a next_cursor after an empty page")


def sql_load(stack, user, n, start_ms_ago):
    """n notifications with UUIDv7-shaped ids built from timestamps (older than
    anything ingest makes now), via one INSERT … SELECT generate_series."""
    stack.psql(f"""
        INSERT INTO notifications (id, user_id, type, message, data, created_at)
        SELECT (lpad(to_hex(ms), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
               '{user}', 'bulk', 'bulk ' || g, jsonb_build_object('g', g),
               to_timestamp(ms / 1000.0)
        FROM (SELECT g, (extract(epoch FROM now()) * 1000)::bigint - {start_ms_ago} + g AS ms,
                     md5(g::text || '{user}') AS h
              FROM generate_series(1, {n}) g) s""")


def main():
    t = TestRun()
    stack = Stack(gateways=2, extra_env={"HERALD_HISTORY_PG_QUEUE_MAX": QUEUE_MAX,
                                         "HERALD_HISTORY_PG_POOL_SIZE": 4,
                                         "HERALD_HISTORY_PG_QUEUE_WAIT_MS": 0})
    hp = stack.history_port
    clients = []
    st = {}
    try:
        def load_1000():
            sql_load(stack, PAGER, 800, 3_600_000)
            ids, lock = [], threading.Lock()

            def poster(k):
                for i in range(50):
                    s, b = post_notification(stack.ingest_port, {"user_id": PAGER,
                                                                 "message": f"live {k}.{i}"})
                    check(s == 202, (s, b))
                    with lock:
                        ids.append(b["id"])
            run_threads(poster, [(k,) for k in range(4)])
            check(len(ids) == 200)
            wait_until(lambda: stack.psql(
                f"SELECT count(*) FROM notifications WHERE user_id = '{PAGER}'") == "1000",
                15, "1000 rows stored")
            st["ingested"] = ids
        t.check("load_800_by_sql_and_200_through_ingest_and_worker", load_1000)

        def paging_while_new_arrive():
            stop = threading.Event()
            posted = []

            def trickle():
                while not stop.is_set():
                    s, b = post_notification(stack.ingest_port, {"user_id": PAGER,
                                                                 "message": "during paging"})
                    if s == 202:
                        posted.append(b["id"])
                    time.sleep(0.005)
            th = CheckedThread(trickle)
            started = []

            def on_page(n):
                if n == 1:
                    th.start()
                    started.append(1)
            try:
                ids = page_all(hp, PAGER, "", 20, on_page)
            finally:
                stop.set()
                if started:
                    th.join()
            check(len(ids) == len(set(ids)), "duplicate across pages")
            check(ids == sorted(ids, reverse=True), "not newest first")
            want = stack.psql(f"SELECT id FROM notifications WHERE user_id = '{PAGER}' "
                              f"AND id <= '{ids[0]}' ORDER BY id DESC").split("\n")
            check(ids == want, (len(ids), len(want)))
            check(len(ids) >= 1000, len(ids))
            check(set(st["ingested"]) <= set(ids))
            check(posted, "nothing arrived during paging")
            wait_until(lambda: stack.psql("SELECT count(*) FROM notifications WHERE id IN "
                                          f"({','.join(repr(p) for p in posted)})")
                       == str(len(posted)), 10, "trickle stored")
            # The new ones sit above the first page: a fresh first page starts with them.
            s, body = http_request(hp, "GET", "/notifications?limit=1", headers=tok(PAGER))
            check(body["items"][0]["id"] == max(posted), body)
            st["total"] = int(stack.psql(
                f"SELECT count(*) FROM notifications WHERE user_id = '{PAGER}'"))
            s, body = http_request(hp, "GET", "/notifications", headers=tok(PAGER))
            # Counts stop at 1000 (proto/openapi.yaml: unread_capped).
            check(body["unread_count"] == min(st["total"], 1000), body)
            check(body.get("unread_capped", False) == (st["total"] > 1000), body)
            check(len(body["items"]) == 20, len(body["items"]))
        t.check("paging_20_at_a_time_has_no_gap_or_duplicate_while_new_ones_arrive",
                paging_while_new_arrive)

        def concurrent_marks():
            all_ids = page_all(hp, PAGER, "", 100)
            marked = all_ids[5:405:4]  # 100 ids spread over the inbox
            errors = []

            def marker(k):
                # Every id is marked by two threads at once: idempotent.
                for i, nid in enumerate(marked):
                    if i % 4 in (k % 4, (k + 1) % 4):
                        s, b = http_request(hp, "POST", f"/notifications/{nid}/read", headers=tok(PAGER))
                        if s != 200 or b["notification"]["read_at"] is None:
                            errors.append((s, b))
            run_threads(marker, [(k,) for k in range(8)])
            check(not errors, errors[:3])
            total = st["total"]
            s, b = http_request(hp, "GET", "/notifications/unread-count", headers=tok(PAGER))
            check(s == 200 and b == {"unread_count": total - 100}, (b, total))
            unread = page_all(hp, PAGER, "&status=unread", 50)
            check(len(unread) == total - 100 and not set(unread) & set(marked))
            read = page_all(hp, PAGER, "&status=read", 20)
            check(read == sorted(marked, reverse=True), len(read))
            s, b = http_request(hp, "GET", "/notifications?status=read&limit=5", headers=tok(PAGER))
            check(b["unread_count"] == total - 100 and len(b["items"]) == 5, b)
            check(all(i["read_at"] for i in b["items"]))
            # Back to unread: counted again, in the response and after.
            s, b = http_request(hp, "POST", f"/notifications/{marked[0]}/unread", headers=tok(PAGER))
            check(s == 200 and b["notification"]["read_at"] is None, b)
            check(b["unread_count"] == total - 99, b)
            s, b = http_request(hp, "GET", f"/notifications/{marked[0]}", headers=tok(PAGER))
            check(s == 200 and b["id"] == marked[0] and b["read_at"] is None, b)
            st["all_ids"] = all_ids
        t.check("unread_filter_and_counts_right_after_concurrent_mark_read", concurrent_marks)

        def read_all():
            all_ids = st["all_ids"]
            bound = all_ids[500]  # everything from the 501st newest down
            s, b = http_request(hp, "POST", f"/notifications/read-all?up_to={bound}", headers=tok(PAGER))
            check(s == 200, (s, b))
            left = int(stack.psql(f"SELECT count(*) FROM notifications WHERE user_id = '{PAGER}' "
                                  "AND read_at IS NULL"))
            check(b["unread_count"] == left and left > 0, (b, left))
            check(b["up_to"] <= bound and b["updated"] > 0, b)
            check(stack.psql(f"SELECT count(*) FROM notifications WHERE user_id = '{PAGER}' "
                              f"AND read_at IS NULL AND id <= '{bound}'") == "0")
            s, b = http_request(hp, "POST", "/notifications/read-all", headers=tok(PAGER))
            check(s == 200 and b["updated"] == left and b["unread_count"] == 0, b)
            check(b["up_to"] == max(all_ids), b)
            s, b = http_request(hp, "POST", "/notifications/read-all", headers=tok(PAGER))
            check(b == {"updated": 0, "up_to": None, "unread_count": 0}, b)
            s, b = http_request(hp, "GET", "/notifications?status=unread", headers=tok(PAGER))
            check(b == {"items": [], "next_cursor": None, "unread_count": 0}, b)
        t.check("read_all_up_to_an_id_then_everything", read_all)

        def ownership_and_bad_params():
            nid = st["all_ids"][0]
            for method, path, user in (("GET", f"/notifications/{nid}", "mallory"),
                                       ("POST", f"/notifications/{nid}/read", "mallory"),
                                       ("POST", f"/notifications/{nid}/unread", "mallory"),
                                       ("GET", "/notifications/01a20b48-fa36-709d-a4df-f163cb8927a6",
                                        PAGER)):
                s, b = http_request(hp, method, path, headers=tok(user))
                check(s == 404 and b["error"]["code"] == "not_found", (path, s, b))
            check(stack.psql(f"SELECT read_at IS NULL FROM notifications WHERE id = '{nid}'") == "f")
            bad = [("GET", "/notifications?limit=0", "invalid_field"),
                   ("GET", "/notifications?limit=101", "invalid_field"),
                   ("GET", "/notifications?limit=x", "invalid_field"),
                   ("GET", "/notifications?status=new", "invalid_field"),
                   ("GET", "/notifications?cursor=AAAA", "invalid_field"),
                   ("GET", "/notifications?cursor=" + "!" * 22, "invalid_field"),
                   ("GET", "/notifications?cursor=AaILSPo2cJyPuCaRKjSvPh", "invalid_field"),
                   ("GET", f"/notifications?user_id={PAGER}&user_id={PAGER}", "invalid_field"),
                   ("GET", "/notifications/not-a-uuid", "invalid_field"),
                   ("POST", "/notifications/read-all?up_to=zz", "invalid_field"),
                   ("GET", "/rooms/lobby/messages?before=zz", "invalid_field"),
                   ("GET", "/rooms/no%20spaces/messages", "invalid_field"),
                   ("GET", "/rooms/" + "r" * 65 + "/messages", "invalid_field")]
            for method, path, code in bad:
                s, b = http_request(hp, method, path, headers=tok(PAGER, rooms=["*"]))
                check(s == 400 and b["error"]["code"] == code, (path, s, b))
            s, b = http_request(hp, "GET", f"/notifications/{nid}/read", headers=tok(PAGER))
            check(s == 405 and b["error"]["code"] == "method_not_allowed", b)
            s, b = http_request(hp, "POST", "/notifications", headers=tok(PAGER))
            check(s == 405, b)
            s, b = http_request(hp, "GET", "/notifications/a/b/c", headers=tok(PAGER))
            check(s == 404 and b["error"]["code"] == "not_found", b)
        t.check("another_users_id_gives_404_and_bad_params_400", ownership_and_bad_params)

        def live_sync():
            gw1, gw2 = stack.gateway_ports
            a1 = WsClient("127.0.0.1", gw1, user_path("alice"))
            a2 = WsClient("127.0.0.1", gw2, user_path("alice"))
            clients.extend([a1, a2])
            for c in (a1, a2):
                check(c.recv_type("welcome")["user_id"] == "alice")
            wait_until(lambda: stack.redis.cmd("PUBSUB", "NUMSUB", "herald:user:alice")[1] == 2,
                       5, "both gateways subscribed to alice")
            s, b = post_notification(stack.ingest_port, {"user_id": "alice", "message": "hi"})
            nid = b["id"]
            for c in (a1, a2):
                check(c.recv_type("notification")["notification"]["id"] == nid)
            wait_until(lambda: stack.psql(f"SELECT count(*) FROM notifications WHERE id = '{nid}'")
                       == "1", 5, "stored")

            def next_frame(c):
                op, payload = c.recv_frame(2.0)
                return payload.decode()
            # Tab 1 marks it read: both tabs (two gateways) get the same finished frame.
            s, b = http_request(hp, "POST", f"/notifications/{nid}/read", headers=tok("alice"))
            check(s == 200 and b["unread_count"] == 0, b)
            for c in (a1, a2):
                check(next_frame(c) == '{"type":"read","ids":["%s"]}' % nid)
            s, b = http_request(hp, "POST", f"/notifications/{nid}/unread", headers=tok("alice"))
            check(s == 200 and b["unread_count"] == 1, b)
            for c in (a1, a2):
                check(next_frame(c) == '{"type":"unread","ids":["%s"]}' % nid)
            s, b = http_request(hp, "POST", "/notifications/read-all", headers=tok("alice"))
            check(s == 200 and b["up_to"] == nid, b)
            for c in (a1, a2):
                check(next_frame(c) == '{"type":"read_all","up_to":"%s"}' % nid)
            # Another user's mark is not alice's business.
            s, b = http_request(hp, "POST", f"/notifications/{nid}/read", headers=tok("bob"))
            check(s == 404)
            a1.expect_nothing(0.3)
        t.check("mark_read_reaches_both_sockets_of_the_user_on_two_gateways", live_sync)

        def rooms():
            # "*" reaches every room; test_history_auth covers the claim's refusals.
            stack.psql("""
                INSERT INTO room_messages (id, room, user_id, message, created_at)
                SELECT (lpad(to_hex(ms), 12, '0') || '7000' || '8' || lpad(to_hex(g), 15, '0'))::uuid,
                       'lobby', 'u' || (g % 3), 'msg ' || g, to_timestamp(ms / 1000.0)
                FROM (SELECT g, 1700000000000 + g * 1000 AS ms FROM generate_series(1, 45) g) s;
                INSERT INTO room_messages (id, room, user_id, message, created_at)
                VALUES ('01a20b48-fa36-709d-a4df-f163cb8927a6', 'other.room', 'z', 'x', now())""")
            s, b = http_request(hp, "GET", "/rooms/lobby/messages", headers=LOBBY)
            check(s == 200 and len(b["items"]) == 20 and b["next_cursor"], b)
            first = b["items"][0]
            check(first == {"id": first["id"], "room": "lobby", "from": "u0", "message": "msg 45",
                             "created_at": "2023-11-14T22:14:05.000Z"}, first)
            msgs = [i["message"] for i in b["items"]]
            s, b = http_request(hp, "GET", f"/rooms/lobby/messages?limit=20&before={b['next_cursor']}",
                                headers=LOBBY)
            msgs += [i["message"] for i in b["items"]]
            s, b = http_request(hp, "GET", f"/rooms/lobby/messages?limit=20&before={b['next_cursor']}",
                                headers=LOBBY)
            msgs += [i["message"] for i in b["items"]]
            check(b["next_cursor"] is None and msgs == [f"msg {g}" for g in range(45, 0, -1)], msgs)
            s, b = http_request(hp, "GET", "/rooms/other.room/messages?limit=5", headers=LOBBY)
            check([i["from"] for i in b["items"]] == ["z"] and b["next_cursor"] is None, b)
            s, b = http_request(hp, "GET", "/rooms/empty/messages", headers=LOBBY)
            check(b == {"items": [], "next_cursor": None}, b)
        t.check("room_history_newest_first_with_cursor", rooms)

        def cors():
            s, h, _ = req_h(hp, "OPTIONS", "/notifications/x/read",
                            {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
            check(s == 204, s)
            check("POST" in h["access-control-allow-methods"], h)
            check("Content-Type" in h["access-control-allow-headers"], h)
            check("Authorization" in h["access-control-allow-headers"], h)
            check(h["access-control-allow-origin"] == "*", h)
            s, h, _ = req_h(hp, "GET", "/notifications/unread-count", headers=tok(PAGER))
            check(s == 200 and h["access-control-allow-origin"] == "*", h)
            s, h, _ = req_h(hp, "OPTIONS", "/notifications")
            check("GET" in h["access-control-allow-methods"], h)
        t.check("cors_preflight_allows_the_posts", cors)

        def slow_query_does_not_stall_pool():
            # A session holds an exclusive lock on notifications for 3 s.
            locker = subprocess.Popen(
                ["psql", "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "postgres", "-d",
                 "herald", "-v", "ON_ERROR_STOP=1", "-c",
                 "BEGIN; LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE; "
                 "SELECT pg_sleep(4); COMMIT;"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_until(lambda: stack.psql("SELECT count(*) FROM pg_locks WHERE "
                                              "relation = 'notifications'::regclass AND "
                                              "mode = 'AccessExclusiveLock' AND granted") == "1",
                           5, "lock taken")
                # Three inbox reads block on the lock; their clients give up and hang up.
                gave_up = []

                def impatient():
                    # Gives up after 0.4 s and resets the connection: a FIN alone may be a
                    # half-close that still wants the answer (test_history_hardening).
                    s = socket.create_connection(("127.0.0.1", hp), timeout=0.4)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    try:
                        s.sendall(f"GET /notifications HTTP/1.1\r\n"
                                  f"Authorization: {tok(PAGER)['Authorization']}\r\n"
                                  "Host: x\r\n\r\n".encode())
                        s.recv(1)
                    except OSError:
                        gave_up.append(1)
                    finally:
                        s.close()
                ths = [CheckedThread(impatient) for _ in range(3)]
                [th.start() for th in ths]
                # The three hold pool connections, each waiting on the lock.
                wait_until(lambda: stack.waiting_on_lock() >= 3, 5, "three queries waiting on the lock")
                s, b = http_request(hp, "GET", "/rooms/lobby/messages?limit=1", headers=LOBBY,
                                    timeout=10)
                check(s == 200 and len(b["items"]) == 1, b)
                # Answered while the lock still blocks those three: no timing, an order.
                check(stack.waiting_on_lock() >= 3, "the room read waited for the blocked ones")
                [th.join() for th in ths]
                check(len(gave_up) == 3, gave_up)
                # Twelve more: one takes the last connection, eleven queue; their clients
                # hang up too, which withdraws the eleven from the queue.
                gave_up.clear()
                ths = [CheckedThread(impatient) for _ in range(12)]
                [th.start() for th in ths]
                [th.join() for th in ths]
                check(len(gave_up) == 12, gave_up)
                # History has seen all those clients go once it closed its ends
                # (no socket left in CLOSE_WAIT), which withdraws them from the queue.
                hpid = stack.services["history"].proc.pid
                wait_until(lambda: "CLOSE_WAIT" not in tcp_states(hpid), 5,
                           "history to close the connections its clients left")
                # Pool busy, queue empty again: exactly QUEUE_MAX wait, the rest get 503 at once.
                results = []

                def patient():
                    try:
                        s, h, b = req_h(hp, "GET", "/notifications/unread-count", headers=tok(PAGER),
                                        timeout=10)
                        results.append((s, h.get("retry-after"), b))
                    except OSError as e:
                        results.append((0, None, str(e)))
                ths = [CheckedThread(patient) for _ in range(40)]
                [th.start() for th in ths]
                [th.join() for th in ths]
                ok = [r for r in results if r[0] == 200]
                full = [r for r in results if r[0] == 503]
                check(len(ok) + len(full) == 40, results)
                check(full and all(r[1] == "1" for r in full), full[:2])
                check("too many" in full[0][2]["error"]["message"], full[0])
                check(len(ok) == QUEUE_MAX, (len(ok), len(full)))
                check(all(r[2] == {"unread_count": 0} for r in ok), ok[:2])
            finally:
                locker.wait(10)
            s, b = http_request(hp, "GET", "/notifications?limit=1", headers=tok(PAGER))
            check(s == 200 and len(b["items"]) == 1, b)
        t.check("slow_query_holds_one_connection_clients_may_leave_queue_is_bounded",
                slow_query_does_not_stall_pool)

        def postgres_restart():
            stack.stop_postgres()
            s, h, b = req_h(hp, "GET", "/notifications", headers=tok(PAGER))
            check(s == 503 and b["error"]["code"] == "unavailable", (s, b))
            check(h.get("retry-after") == "1", h)
            s, h, b = req_h(hp, "GET", "/readyz")
            check(s == 503 and "postgres" in b["down"], (s, b))
            stack.start_postgres()
            wait_until(lambda: http_request(hp, "GET", "/notifications", headers=tok(PAGER))[0] == 200,
                       10, "history answers again")
            nid = st["all_ids"][1]
            s, b = http_request(hp, "POST", f"/notifications/{nid}/unread", headers=tok(PAGER))
            check(s == 200 and b["unread_count"] == 1, b)
            s, b = http_request(hp, "GET", "/healthz")
            check(s == 200 and b["postgres"] == "up", b)
        t.check("postgres_restart_gives_503_then_recovers_by_itself", postgres_restart)

        def dev_user_query():
            # history.dev_user_query (development only): ?user_id= without a token, warned at start.
            dp = stack.spawn_listening("history_dev", "herald-history", "HERALD_HISTORY_PORT",
                                       {"HERALD_HISTORY_DEV_USER_QUERY": "true"})
            wait_until(lambda: http_request(dp, "GET", "/readyz")[0] == 200, 15, "dev history ready")
            log = stack.services["history_dev"].log_text()
            check("warn" in log and "dev_user_query" in log, log[-2000:])
            check("dev_user_query" not in stack.services["history"].log_text())
            st["dp"] = dp
            s, b = http_request(dp, "GET", f"/notifications?user_id={PAGER}&limit=1")
            check(s == 200 and len(b["items"]) == 1, (s, b))
            nid = st["all_ids"][2]
            s, b = http_request(dp, "POST", f"/notifications/{nid}/unread?user_id={PAGER}")
            check(s == 200 and b["notification"]["read_at"] is None, (s, b))
            s, b = http_request(dp, "GET", "/rooms/lobby/messages?limit=1")
            check(s == 200 and len(b["items"]) == 1, (s, b))
            s, b = http_request(dp, "GET", f"/notifications?user_id={PAGER}&limit=0")
            check(s == 400 and b["error"]["code"] == "invalid_field", (s, b))
            # Neither a token nor a user_id: still 401.
            s, b = http_request(dp, "GET", "/notifications")
            check(s == 401 and b["error"]["reason"] == "missing", (s, b))
            # A token still rules where one is given.
            s, b = http_request(dp, "GET", "/notifications?user_id=other", headers=tok(PAGER))
            check(s == 403 and b["error"]["code"] == "forbidden", (s, b))
            s, b = http_request(dp, "GET", "/notifications", headers=bearer("x.y.z"))
            check(s == 401, (s, b))
            # Without the switch, the same request is refused.
            s, b = http_request(hp, "GET", f"/notifications?user_id={PAGER}&limit=1")
            check(s == 401 and b["error"]["reason"] == "missing", (s, b))
        t.check("dev_user_query_accepts_user_id_without_a_token_and_warns_at_start", dev_user_query)

        def redis_down():
            stack.stop_redis()
            nid = st["all_ids"][1]
            # With a token the cut-off cannot be read: 503, nothing marked.
            s, b = http_request(hp, "POST", f"/notifications/{nid}/read", headers=tok(PAGER))
            check(s == 503 and b["error"]["code"] == "unavailable", (s, b))
            check(stack.psql("SELECT read_at IS NULL FROM notifications "
                              f"WHERE id = '{nid}'") == "t")
            # A dev user has no token to revoke: the mark commits, its event is lost (logged).
            s, b = http_request(st["dp"], "POST", f"/notifications/{nid}/read?user_id={PAGER}")
            check(s == 200 and b["notification"]["read_at"], (s, b))
            check(stack.psql("SELECT read_at IS NOT NULL FROM notifications "
                              f"WHERE id = '{nid}'") == "t")
            s, b = http_request(hp, "GET", "/healthz")
            check(s == 200 and b["redis"] == "down", b)
            # The failed publish is logged (a secondary signal; the state above is the check).
            wait_until(lambda: "publish_failed" in stack.services["history_dev"].log_text(), 10,
                       "warning logged")
        t.check("redis_down_refuses_token_requests_503_and_a_committed_mark_still_answers_200",
                redis_down)
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
