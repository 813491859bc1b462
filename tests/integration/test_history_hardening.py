"""History under load and faults, against the real binaries, Redis and
PostgreSQL: a user with hundreds of thousands of unread rows (capped count,
read-all in chunks), statement_timeout answered 503, a bounded wait in the
pool queue, /healthz answered from the pool's state while the pool is busy, a
client that half-closes after its request, an empty cursor, and (through a TCP
proxy in front of PostgreSQL) a read-all whose answer is lost after commit and
a query that gets no answer at all."""
import collections
import json
import re
import socket
import subprocess
import threading
import time

from herald_stack import Stack, TestRun, bearer, free_port, http_request, mint_token, wait_until

HEAVY = "heavy"
HEAVY_ROWS = 300000


def tok(user):
    """The Authorization header of a fresh token for user (proto/auth.md)."""
    return bearer(mint_token(user))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def sql_load(stack, user, n, start_ms_ago):
    """n unread notifications with UUIDv7-shaped ids older than anything ingest makes now."""
    stack.psql(f"""
        INSERT INTO notifications (id, user_id, type, message, data, created_at)
        SELECT (lpad(to_hex(ms), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid,
               '{user}', 'bulk', 'bulk ' || g, jsonb_build_object('g', g),
               to_timestamp(ms / 1000.0)
        FROM (SELECT g, (extract(epoch FROM now()) * 1000)::bigint - {start_ms_ago} + g AS ms,
                     md5(g::text || '{user}') AS h
              FROM generate_series(1, {n}) g) s""")


class PgProxy:
    """A TCP relay in front of PostgreSQL that can lose the server's answer to
    one statement (drop: both sides closed, the answer never forwarded) or
    swallow it (stall: the connection stays open, silent), and counts the
    Bind messages of each prepared statement, i.e. how often it was sent."""
    BIND = re.compile(rb"B....\x00([a-z_]+)\x00", re.S)

    def __init__(self, target_port):
        self.target = target_port
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.lock = threading.Lock()
        self.binds = collections.Counter()
        self.arm = None  # (mode, compiled statement-name regex)
        threading.Thread(target=self._accept, daemon=True).start()

    def arm_once(self, mode, name_re):
        with self.lock:
            self.arm = (mode, re.compile(name_re))

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target))
            state = {"mode": None}
            threading.Thread(target=self._up, args=(c, s, state), daemon=True).start()
            threading.Thread(target=self._down, args=(s, c, state), daemon=True).start()

    def _up(self, c, s, state):
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                with self.lock:
                    for name in self.BIND.findall(data):
                        name = name.decode()
                        self.binds[name] += 1
                        if self.arm and self.arm[1].fullmatch(name):
                            state["mode"] = self.arm[0]
                            self.arm = None
                s.sendall(data)
        except OSError:
            pass
        for x in (c, s):
            try:
                x.close()
            except OSError:
                pass

    def _down(self, s, c, state):
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                if state["mode"] == "drop":
                    break
                if state["mode"] == "stall":
                    continue
                c.sendall(data)
        except OSError:
            pass
        for x in (c, s):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.ls.close()


class Subscriber:
    """SUBSCRIBE to one Redis channel on a raw socket; frames as parsed JSON."""

    def __init__(self, port, channel):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        ch = channel.encode()
        self.s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(ch), ch))
        self.buf = b""
        self.next_message()  # the subscribe confirmation

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _value(self):
        line = self._line()
        if line[:1] == b"*":
            return [self._value() for _ in range(int(line[1:]))]
        if line[:1] == b"$":
            n = int(line[1:])
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(65536)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        return line[1:]

    def next_message(self, timeout=5):
        self.s.settimeout(timeout)
        return self._value()

    def frames(self, timeout):
        """Frames received within timeout seconds."""
        out, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                m = self.next_message(max(0.05, deadline - time.monotonic()))
            except socket.timeout:
                break
            if isinstance(m, list) and m[0] == b"message":
                out.append(json.loads(m[2]))
        return out

    def close(self):
        self.s.close()


def lock_notifications(stack, seconds):
    """A session that holds an ACCESS EXCLUSIVE lock on notifications for seconds."""
    p = subprocess.Popen(
        ["psql", "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "postgres", "-d", "herald",
         "-v", "ON_ERROR_STOP=1", "-c",
         f"BEGIN; LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({seconds}); COMMIT;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: stack.psql("SELECT count(*) FROM pg_locks WHERE relation = "
                                  "'notifications'::regclass AND mode = 'AccessExclusiveLock' "
                                  "AND granted") == "1", 5, "lock taken")
    return p


def waiting_backends(stack):
    return int(stack.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                          "'herald-history' AND wait_event_type = 'Lock'"))


def main():
    t = TestRun()
    stack = Stack(gateways=0, services=("worker", "history"),
                  extra_env={"HERALD_HISTORY_PG_POOL_SIZE": 2, "HERALD_HISTORY_PG_QUEUE_MAX": 4,
                             "HERALD_HISTORY_PG_QUEUE_WAIT_MS": 1000})
    hp = stack.history_port
    proxy = PgProxy(stack.pg_port)
    xp = free_port()
    stack.spawn("history_px", "herald-history",
                {"HERALD_HISTORY_PORT": xp, "HERALD_HISTORY_PG_TIMEOUT_MS": 1500,
                 "HERALD_HISTORY_PG_POOL_SIZE": 2,
                 "HERALD_POSTGRES_URL": f"host=127.0.0.1 port={proxy.port} dbname=herald "
                                        "user=postgres"})
    wait_until(lambda: http_request(xp, "GET", "/readyz")[0] == 200, 15, "history_px")
    try:
        def empty_cursor_is_first_page():
            sql_load(stack, "pager", 3, 60000)
            for q in ("cursor=", "before=", "cursor"):
                s, b = http_request(hp, "GET", f"/notifications?{q}", headers=tok("pager"))
                check(s == 200 and len(b["items"]) == 3, (q, s, b))
        t.check("an_empty_cursor_is_the_first_page", empty_cursor_is_first_page)

        def half_close_gets_an_answer():
            for _ in range(5):
                s = socket.create_connection(("127.0.0.1", hp), timeout=5)
                try:
                    s.sendall(b"GET /notifications/unread-count HTTP/1.1\r\n"
                              b"Authorization: %s\r\n"
                              b"Host: x\r\nConnection: close\r\n\r\n" % tok("pager")["Authorization"].encode())
                    s.shutdown(socket.SHUT_WR)
                    data = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                finally:
                    s.close()
                check(data.startswith(b"HTTP/1.1 200"), data[:200])
                check(json.loads(data.split(b"\r\n\r\n", 1)[1]) == {"unread_count": 3}, data)
        t.check("a_client_that_half_closes_still_gets_its_answer", half_close_gets_an_answer)

        def health_from_pool_state_and_queue_deadline():
            locker = lock_notifications(stack, 3)
            try:
                results = {}

                def req(key, timeout=6):
                    try:
                        results[key] = http_request(hp, "GET", "/notifications", headers=tok("pager"),
                                                    timeout=timeout)
                    except OSError as e:
                        results[key] = (0, str(e))
                busy = [threading.Thread(target=req, args=(f"busy{i}",)) for i in range(2)]
                [b.start() for b in busy]
                wait_until(lambda: waiting_backends(stack) == 2, 5, "both connections blocked")
                # The pool is busy: the probe is answered from its state, at once.
                s, b = http_request(hp, "GET", "/healthz", timeout=1)
                check(s == 200 and b["postgres"] == "up", (s, b))
                # A third request queues and gives up after pg_queue_wait_ms, long before the lock.
                req("queued")
                s, b = results["queued"]
                check(s == 503 and "waited" in b["error"]["message"], (s, b))
                [b.join() for b in busy]
                check(all(results[f"busy{i}"][0] == 200 for i in range(2)), results)
            finally:
                locker.wait(10)
        t.check("healthz_answers_from_pool_state_and_queued_requests_have_a_deadline",
                health_from_pool_state_and_queue_deadline)

        def statement_timeout_is_503():
            locker = lock_notifications(stack, 3)
            try:
                s, b = http_request(xp, "GET", "/notifications/unread-count", headers=tok("pager"), timeout=5)
                check(s == 503 and b["error"]["code"] == "unavailable", (s, b))
                check("too long" in b["error"]["message"], b)
            finally:
                locker.wait(10)
        t.check("statement_timeout_answers_503", statement_timeout_is_503)

        def heavy_user():
            sql_load(stack, HEAVY, HEAVY_ROWS, 10 ** 9)
            stack.psql("VACUUM ANALYZE notifications")
            s, b = http_request(xp, "GET", "/notifications/unread-count", headers=tok(HEAVY))
            check(s == 200 and b == {"unread_count": 1000, "unread_capped": True}, (s, b))
            s, b = http_request(xp, "GET", "/notifications?limit=1", headers=tok(HEAVY))
            check(s == 200 and b["unread_count"] == 1000 and b["unread_capped"] is True, (s, b))
            # statement_timeout is 1.5 s on history_px: one UPDATE of every row could not finish.
            t0 = time.monotonic()
            s, b = http_request(xp, "POST", "/notifications/read-all", headers=tok(HEAVY), timeout=120)
            print(f"# read-all of {HEAVY_ROWS} unread rows: {time.monotonic() - t0:.2f} s", flush=True)
            check(s == 200, ("read-all", s, b))
            check(b["updated"] == HEAVY_ROWS and b["unread_count"] == 0, b)
            left = stack.psql(f"SELECT count(*) FROM notifications WHERE user_id = '{HEAVY}' "
                              "AND read_at IS NULL")
            check(left == "0", left)
            s, b = http_request(xp, "GET", "/notifications/unread-count", headers=tok(HEAVY))
            check(s == 200 and b == {"unread_count": 0}, (s, b))
        t.check("a_user_with_300k_unread_gets_a_capped_count_and_a_read_all_that_succeeds",
                heavy_user)

        def read_all_answer_lost_after_commit():
            user = "lost"
            sql_load(stack, user, 50, 120000)
            newest = stack.psql(f"SELECT id FROM notifications WHERE user_id = '{user}' "
                            "ORDER BY id DESC LIMIT 1")
            sub = Subscriber(stack.redis_port, f"herald:user:{user}")
            try:
                proxy.arm_once("drop", r"hist_read_all(_chunk)?")
                s, b = http_request(xp, "POST", "/notifications/read-all", headers=tok(user), timeout=10)
                check(s == 200, (s, b))
                check(b["up_to"] == newest, b)
                frames = sub.frames(2)
                check({"type": "read_all", "up_to": newest} in frames,
                      f"no read_all frame after the lost answer: {frames} (answer {b})")
            finally:
                sub.close()
            left = stack.psql(f"SELECT count(*) FROM notifications WHERE user_id = '{user}' "
                              "AND read_at IS NULL")
            check(left == "0", left)
            check("postgres_connection_lost" in stack.services["history_px"].log_text(),
                  "the proxy did not cut the connection")
        t.check("a_read_all_whose_answer_is_lost_after_commit_still_announces_it",
                read_all_answer_lost_after_commit)

        def silent_server_not_resent():
            before = proxy.binds["hist_unread_count"]
            proxy.arm_once("stall", r"hist_unread_count")
            s, b = http_request(xp, "GET", "/notifications/unread-count", headers=tok("pager"), timeout=10)
            sent = proxy.binds["hist_unread_count"] - before
            check(s == 503 and "too long" in b["error"]["message"], (s, b))
            check(sent == 1, f"the statement was sent {sent} times")
            wait_until(lambda: http_request(xp, "GET", "/notifications/unread-count", headers=tok("pager"))[0]
                       == 200, 10, "history_px answers again")
        t.check("a_query_without_an_answer_is_not_sent_again", silent_server_not_resent)
    finally:
        try:
            t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
        except Exception:  # noqa: BLE001
            pass
        proxy.close()
    t.finish()


if __name__ == "__main__":
    main()
