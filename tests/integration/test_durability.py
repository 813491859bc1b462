"""Durable pipeline, end to end through the real binaries: every notification
ingest answered 202 for ends as exactly one PostgreSQL row, whatever crashes in
between (kill -9 of a worker, a PostgreSQL restart, SIGTERM, answers lost on
the way back to the client), with idempotent retries, batch and fan-out
ingest, dead letters, delivery receipts, room messages, stream trimming and
consumer clean-up. Uses herald_stack.py (private redis-server and PostgreSQL)."""
import http.client
import json
import os
import socket
import subprocess
import threading
import time

from herald_stack import CheckedThread, Redis, Stack, TestRun, check, ingest_headers, ingest_request, wait_until

NOTIFY = "herald:stream:notifications"
RECEIPTS = "herald:stream:receipts"
ROOMS = "herald:stream:room_messages"
DEAD = "herald:stream:dead"
GROUP = "herald-workers"
LOAD = 20000


def uuid7(ms=None):
    ms = int(time.time() * 1000) if ms is None else ms
    r = int.from_bytes(os.urandom(10), "big")
    u = (ms << 80) | (0x7 << 76) | ((r >> 64) & 0xFFF) << 64 | (0b10 << 62) | (r & ((1 << 62) - 1))
    h = "%032x" % u
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%03dZ" % (ms % 1000)


def envelope(nid, user, msg):
    ms = int(time.time() * 1000)
    return json.dumps({"id": nid, "user_id": user, "type": "default", "message": msg,
                       "data": None, "created_at": iso(ms)}, separators=(",", ":"))


def count(stack, where):
    return int(stack.psql(f"SELECT count(*) FROM notifications WHERE {where}"))


def pending(stack, stream=NOTIFY):
    return stack.redis.cmd("XPENDING", stream, GROUP)[0]


def dead_letters(stack):
    out = []
    for sid, fields in stack.redis.cmd("XRANGE", DEAD, "-", "+"):
        out.append((sid, dict(zip(fields[::2], fields[1::2]))))
    return out


class Poster:
    """One keep-alive HTTP connection; post() retries with the same
    Idempotency-Key until it gets its answer."""

    def __init__(self, port):
        self.port = port
        self.conn = None

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, body, key, drop_first=False, path="/notifications"):
        data = json.dumps(body).encode()
        headers = ingest_headers({"Content-Type": "application/json", "Idempotency-Key": key})
        if drop_first:
            # The request reaches ingest but the client never reads the answer.
            c = self._conn()
            c.request("POST", path, body=data, headers=headers)
            c.sock.shutdown(socket.SHUT_RDWR)
            self.close()
        for attempt in range(50):
            try:
                c = self._conn()
                c.request("POST", path, body=data, headers=headers)
                resp = c.getresponse()
                raw = resp.read()
                if resp.status == 202:
                    return json.loads(raw)
                if resp.status != 503:
                    raise AssertionError(f"POST {key}: {resp.status} {raw[:200]!r}")
            except (OSError, http.client.HTTPException):
                self.close()
            time.sleep(0.05 * (attempt + 1))
        raise AssertionError(f"POST {key}: no answer after retries")


def post_many(port, n, prefix, threads=8, progress=None, drop_every=10):
    """n notifications over threads keep-alive connections; every drop_every-th
    has its first answer dropped and is retried with its key. Returns the ids
    answered."""
    ids = [None] * n
    errors = []
    lock = threading.Lock()

    def run(t):
        p = Poster(port)
        try:
            for i in range(t, n, threads):
                body = {"user_id": f"{prefix}{i % 97}", "message": f"{prefix} {i}"}
                ans = p.post(body, f"{prefix}-{i}", drop_first=drop_every and i % drop_every == 0)
                ids[i] = ans["id"]
                if progress is not None:
                    with lock:
                        progress[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            p.close()

    ts = [CheckedThread(run, t) for t in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    if errors:
        raise errors[0]
    return ids


def main():
    t = TestRun()
    stack = Stack(services=("ingest", "worker"), workers=2, extra_env={
        "HERALD_WORKER_CLAIM_IDLE_MS": 1500,
        "HERALD_WORKER_MAINTENANCE_MS": 300,
        "HERALD_WORKER_RECEIPT_RETRY_MS": 300,
        "HERALD_WORKER_CONSUMER_GC_MS": 1500,
        "HERALD_WORKER_MAX_DELIVERIES": 5,
    })
    port = stack.ingest_port
    w1, w2 = stack.services["worker1"], stack.services["worker2"]
    try:
        def migrations_concurrent():
            stack.psql("CREATE DATABASE herald_m", db="postgres")
            env = dict(stack.env)
            env["HERALD_POSTGRES_URL"] = (f"host=127.0.0.1 port={stack.pg_port} dbname=herald_m"
                                          " user=postgres")
            procs = [subprocess.Popen([stack.binary("herald-worker"), "--migrate"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                     for _ in range(3)]
            outs = [p.communicate(timeout=60)[0].decode() for p in procs]
            check(all(p.returncode == 0 for p in procs), outs)
            files = sorted(f for f in os.listdir(os.path.join(stack.env["HERALD_WORKER_MIGRATIONS_DIR"]))
                           if f.endswith(".sql"))
            got = stack.psql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations",
                             db="herald_m")
            check(got == ",".join(files), (got, files))
            applied = sum(o.count("event=migration_applied") for o in outs)
            check(applied == len(files), outs)
        t.check("three_concurrent_migrate_apply_each_file_once", migrations_concurrent)

        def idempotent_retry():
            body = {"user_id": "idem", "message": "once"}
            h = {"Idempotency-Key": "k-1"}
            added = stack.entries_added(NOTIFY)
            s1, a1 = ingest_request(port, "POST", "/notifications", body, h)
            s2, a2 = ingest_request(port, "POST", "/notifications", body, h)
            check(s1 == 202 and s2 == 202 and a1 == a2, (s1, a1, s2, a2))
            check(stack.entries_added(NOTIFY) == added + 1, "the replay wrote another entry")
            s3, a3 = ingest_request(port, "POST", "/notifications", {"user_id": "idem", "message": "x"}, h)
            check(s3 == 409 and a3["error"]["code"] == "idempotency_conflict", (s3, a3))
            # Another client's scope: the same key is a new request.
            s4, a4 = ingest_request(port, "POST", "/notifications", body,
                                    {"Idempotency-Key": "k-1", "X-Herald-Client": "other"})
            check(s4 == 202 and a4["id"] != a1["id"], a4)
            ttl = stack.redis.cmd("TTL", "herald:idem:12:test/default:k-1")  # <API key name>/<client>
            check(86000 < ttl <= 86400, ttl)
            s5, a5 = ingest_request(port, "POST", "/notifications", body, {"Idempotency-Key": "bad key"})
            check(s5 == 400 and a5["error"]["code"] == "invalid_field", a5)
            wait_until(lambda: count(stack, "user_id = 'idem'") == 2, 10, "2 idem rows")
            check(count(stack, f"id = '{a1['id']}'") == 1)
        t.check("idempotency_key_replays_first_answer_and_409s_other_body", idempotent_retry)

        def batch_and_fanout():
            sub = Redis(stack.redis_port)
            sub.cmd("SUBSCRIBE", "herald:room:lobby")
            body = {"notifications": [
                {"user_id": "b1", "message": "one"},
                {"user_ids": ["f1", "f2", "f3"], "message": "fan", "type": "t"},
                {"user_id": "b2"},
                {"room": "lobby", "message": "to the room", "data": {"n": 12345678901234567890}},
            ]}
            h = {"Idempotency-Key": "batch-1"}
            s, a = ingest_request(port, "POST", "/notifications/batch", body, h)
            check(s == 202, (s, a))
            check(a["accepted"] == 3 and a["rejected"] == 1, a)
            r = a["results"]
            check(len(r[0]["id"]) == 36 and [x["user_id"] for x in r[1]["items"]] == ["f1", "f2", "f3"], a)
            check(r[2]["error"]["code"] == "missing_field", a)
            check(len({x["id"] for x in r[1]["items"]}) == 3)
            s2, a2 = ingest_request(port, "POST", "/notifications/batch", body, h)
            check(s2 == 202 and a2 == a, a2)
            msg = sub._read()
            check(msg[0] == "message" and msg[1] == "herald:room:lobby", msg)
            frame = json.loads(msg[2])
            check(frame["type"] == "notification" and frame["notification"]["room"] == "lobby", frame)
            sub.close()
            wait_until(lambda: count(stack, "user_id IN ('b1','f1','f2','f3') OR room = 'lobby'") == 5,
                       10, "5 batch rows")
            row = stack.psql(f"SELECT room, user_id IS NULL, data::text FROM notifications "
                             f"WHERE id = '{r[3]['id']}'")
            check(row == 'lobby|t|{"n": 12345678901234567890}', row)
            s, a = ingest_request(port, "POST", "/notifications/batch", {"notifications": [{"x": 1}]})
            check(s == 400 and a["error"]["code"] == "invalid_field" and a["rejected"] == 1, a)
            added = stack.entries_added(NOTIFY)
            s, a = ingest_request(port, "POST", "/notifications/batch",
                                  {"notifications": [{"user_id": "u", "message": "m"}] * 1001})
            check(s == 400 and a["error"]["code"] == "invalid_field", (s, a))
            check("1000" in a["error"]["message"], "message names the limit", a)
            check(stack.entries_added(NOTIFY) == added, "a refused batch wrote entries")
            s, a = ingest_request(port, "POST", "/notifications/batch",
                                  {"notifications": [{"user_id": f"lim{i}", "message": "m"} for i in range(1000)]})
            check(s == 202 and a["accepted"] == 1000 and a["rejected"] == 0, (s, str(a)[:200]))
            check(stack.entries_added(NOTIFY) == added + 1000, "1000 items, 1000 entries")
            wait_until(lambda: count(stack, "user_id LIKE 'lim%'") == 1000, 20, "the 1000 rows")
            s, a = ingest_request(port, "POST", "/notifications",
                                  {"user_ids": ["a", "a"], "message": "dup"})
            check(s == 400 and a["error"]["code"] == "invalid_field", a)
        t.check("batch_fanout_and_room_in_one_call_with_per_item_results", batch_and_fanout)

        def load_with_crashes():
            base = count(stack, "true")
            progress = [0]
            result = {}

            def load():
                try:
                    result["ids"] = post_many(port, LOAD, "load", progress=progress)
                except Exception as e:  # noqa: BLE001
                    result["error"] = e
            th = CheckedThread(load)
            t0 = time.monotonic()
            th.start()
            wait_until(lambda: progress[0] >= LOAD // 5, 60, "20% posted")
            w1.kill9()
            w1.start()
            wait_until(lambda: progress[0] >= LOAD * 2 // 5, 60, "40% posted")
            stack.stop_postgres()
            # PostgreSQL stays down while ingest accepts 500 more (they pile up in the stream).
            down_at = progress[0]
            wait_until(lambda: progress[0] >= down_at + 500, 60, "500 posts during the outage")
            stack.start_postgres()
            wait_until(lambda: progress[0] >= LOAD * 3 // 5, 60, "60% posted")
            w1.kill9()
            w1.start()
            th.join()
            if "error" in result:
                raise result["error"]
            posted_s = time.monotonic() - t0
            wait_until(lambda: count(stack, "user_id LIKE 'load%'") >= LOAD, 60, f"{LOAD} rows")
            total, distinct = stack.psql("SELECT count(*), count(DISTINCT id) FROM notifications "
                                         "WHERE user_id LIKE 'load%'").split("|")
            check(int(total) == LOAD and int(distinct) == LOAD, (total, distinct))
            ids = result["ids"]
            check(len(set(ids)) == LOAD)
            stack.psql("CREATE TABLE want (id uuid)")
            subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "postgres",
                            "-d", "herald", "-v", "ON_ERROR_STOP=1", "-c", "COPY want FROM STDIN"],
                           input="\n".join(ids) + "\n", text=True, check=True, capture_output=True)
            missing = stack.psql("SELECT count(*) FROM want w WHERE NOT EXISTS "
                                 "(SELECT 1 FROM notifications n WHERE n.id = w.id)")
            check(missing == "0", f"{missing} answered ids have no row")
            check(count(stack, "true") == base + LOAD)
            print(f"# {LOAD} posted in {posted_s:.1f}s with 2 kill -9 and a PostgreSQL restart",
                  flush=True)
        t.check("20000_posts_through_two_kill9_and_postgres_restart_give_exactly_20000_rows",
                load_with_crashes)

        def nothing_pending():
            wait_until(lambda: all(pending(stack, s) == 0 for s in (NOTIFY, RECEIPTS, ROOMS)), 15,
                       "empty pending lists")
        t.check("group_pending_lists_are_empty", nothing_pending)

        def poison_goes_to_dead_letter():
            bad = stack.redis.cmd("XADD", NOTIFY, "*", "id", "x", "payload", "{garbage")
            wait_until(lambda: any(f.get("dead_sid") == bad for _, f in dead_letters(stack)), 10,
                       "dead letter of the garbage entry")
            f = [f for _, f in dead_letters(stack) if f.get("dead_sid") == bad][0]
            check(f["dead_stream"] == NOTIFY and f["payload"] == "{garbage" and f["dead_reason"], f)
            wait_until(lambda: pending(stack) == 0, 5, "garbage acked")
        t.check("undecodable_entry_is_dead_lettered_with_reason_and_fields", poison_goes_to_dead_letter)

        def redelivered_entry_is_dead_lettered_then_replayed():
            nid = uuid7()
            check(w2.terminate() == 0, "worker2 exit after SIGTERM")
            check(w1.terminate() == 0, "worker1 exit after SIGTERM")
            sid = stack.redis.cmd("XADD", NOTIFY, "*", "id", nid, "user_id", "poison",
                                  "payload", envelope(nid, "poison", "crashes workers"))
            stack.redis.cmd("XREADGROUP", "GROUP", GROUP, "ghost", "COUNT", "1", "STREAMS", NOTIFY, ">")
            # As if five workers had died holding it.
            stack.redis.cmd("XCLAIM", NOTIFY, GROUP, "ghost", "0", sid, "RETRYCOUNT", "9")
            # Only store attempts count towards poison (issue 9 item 2), not deliveries.
            stack.redis.cmd("HSET", "herald:worker:attempts", f"{NOTIFY}/{sid}", "9")
            w1.start()
            w2.start()
            wait_until(lambda: any(f.get("dead_sid") == sid for _, f in dead_letters(stack)), 15,
                       "dead letter of the redelivered entry")
            check(count(stack, f"id = '{nid}'") == 0)
            out = subprocess.run([stack.binary("herald-worker"), "--replay-dead-letter"], env=stack.env,
                                 capture_output=True, text=True, timeout=30)
            check(out.returncode == 0, out.stdout + out.stderr)
            check("event=replay_done replayed=" in out.stderr + out.stdout)
            wait_until(lambda: count(stack, f"id = '{nid}'") == 1, 10, "replayed row")
            check(not any(f.get("dead_sid") == sid for _, f in dead_letters(stack)))
        t.check("entry_delivered_too_often_is_dead_lettered_and_replay_mode_stores_it",
                redelivered_entry_is_dead_lettered_then_replayed)

        def receipts():
            s, a = ingest_request(port, "POST", "/notifications", {"user_id": "rc", "message": "m"})
            check(s == 202)
            wait_until(lambda: count(stack, f"id = '{a['id']}'") == 1, 10, "row")
            stack.redis.cmd("XADD", RECEIPTS, "*", "id", a["id"], "user_id", "rc",
                            "delivered_at", "1700000000123")
            # A receipt for a notification whose row does not exist yet.
            early = uuid7()
            stack.redis.cmd("XADD", RECEIPTS, "*", "id", early, "user_id", "rc", "delivered_at",
                            "1700000000456")
            wait_until(lambda: stack.psql(f"SELECT (extract(epoch FROM delivered_at) * 1000)::bigint "
                                          f"FROM notifications WHERE id = '{a['id']}'") == "1700000000123",
                       10, "delivered_at set")
            # The early receipt was tried and kept: pending, delivered more than once.
            def retried():
                p = stack.redis.cmd("XPENDING", RECEIPTS, GROUP, "-", "+", 10)
                return len(p) == 1 and int(p[0][3]) >= 2
            wait_until(retried, 10, "the early receipt retried and still pending")
            check(pending(stack, RECEIPTS) == 1, "early receipt left pending")
            stack.redis.cmd("XADD", NOTIFY, "*", "id", early, "user_id", "rc",
                            "payload", envelope(early, "rc", "late row"))
            wait_until(lambda: stack.psql(f"SELECT (extract(epoch FROM delivered_at) * 1000)::bigint "
                                          f"FROM notifications WHERE id = '{early}'") == "1700000000456",
                       10, "early receipt applied")
            wait_until(lambda: pending(stack, RECEIPTS) == 0, 5, "receipts acked")
        t.check("receipts_set_delivered_at_even_when_they_arrive_before_the_row", receipts)

        def room_messages():
            mid = uuid7()
            payload = json.dumps({"id": mid, "room": "lobby", "from": "carol", "message": "hi\tall",
                                  "created_at": iso(int(time.time() * 1000))})
            stack.redis.cmd("XADD", ROOMS, "*", "id", mid, "room", "lobby", "payload", payload)
            stack.redis.cmd("XADD", ROOMS, "*", "id", mid, "room", "lobby", "payload", payload)
            wait_until(lambda: stack.psql(f"SELECT room, user_id, message FROM room_messages "
                                          f"WHERE id = '{mid}'") == "lobby|carol|hi\tall", 10, "room row")
            wait_until(lambda: pending(stack, ROOMS) == 0, 5, "room messages acked")
        t.check("room_messages_are_stored_once", room_messages)

        def trimmed_and_consumers_removed():
            stack.redis.cmd("XREADGROUP", "GROUP", GROUP, "gone", "COUNT", "1", "STREAMS", RECEIPTS, ">")
            wait_until(lambda: stack.redis.cmd("XLEN", NOTIFY) < 200, 10, "notifications stream trimmed")

            def names():
                return {dict(zip(c[::2], c[1::2]))["name"]
                        for c in stack.redis.cmd("XINFO", "CONSUMERS", NOTIFY, GROUP)}
            wait_until(lambda: "ghost" not in names() and "gone" not in {
                dict(zip(c[::2], c[1::2]))["name"]
                for c in stack.redis.cmd("XINFO", "CONSUMERS", RECEIPTS, GROUP)}, 10, "ghosts removed")
            # A live worker blocked on an empty stream looks idle too and may be removed
            # (it has nothing pending); its next read re-creates it: nothing is lost.
        t.check("streams_trimmed_below_pending_and_gone_consumers_removed",
                trimmed_and_consumers_removed)

        def sigterm_mid_load():
            before = count(stack, "user_id LIKE 'term%'")
            check(before == 0)
            progress = [0]
            result = {}

            def load():
                try:
                    result["ids"] = post_many(port, 3000, "term", threads=4, progress=progress,
                                              drop_every=0)
                except Exception as e:  # noqa: BLE001
                    result["error"] = e
            th = CheckedThread(load)
            th.start()
            wait_until(lambda: progress[0] >= 1000, 30, "1000 posted")
            check(w2.terminate() == 0, "worker2 exit after SIGTERM")
            # State, not log text: a clean stop leaves nothing pending for its consumer.
            left = stack.pending_of(NOTIFY, GROUP, "worker2")
            check(left == [], f"SIGTERM left {len(left)} entries pending for worker2")
            w2.start()
            th.join()
            if "error" in result:
                raise result["error"]
            wait_until(lambda: count(stack, "user_id LIKE 'term%'") >= 3000, 30, "3000 rows")
            check(stack.psql("SELECT count(*), count(DISTINCT id) FROM notifications "
                              "WHERE user_id LIKE 'term%'") == "3000|3000")
            wait_until(lambda: pending(stack) == 0, 10, "nothing pending")
        t.check("sigterm_mid_load_loses_nothing", sigterm_mid_load)
    finally:
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
