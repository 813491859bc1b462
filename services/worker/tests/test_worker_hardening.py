"""herald-worker's exactly-once-rows contract under the faults of issue 9:
dead letters of huge entries, PostgreSQL down across restarts, lasting
PostgreSQL errors, a receipts backlog, rejected entries held through a Redis
restart, HOT receipt updates. Real binaries against a private Redis and
PostgreSQL (tests/integration/herald_stack.py)."""
import json
import os
import shutil
import socket
import subprocess
import threading
import time

from herald_stack import Stack, TestRun, wait_until

NOTIFY = "herald:stream:notifications"
RECEIPTS = "herald:stream:receipts"
DEAD = "herald:stream:dead"
GROUP = "herald-workers"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def uuid7(ms, seq):
    r = int.from_bytes(os.urandom(8), "big")
    u = (ms << 80) | (0x7 << 76) | ((seq & 0xFFF) << 64) | (0b10 << 62) | (r >> 2)
    h = "%032x" % u
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def envelope(prefix, i, message=None):
    ms = int(time.time() * 1000)
    nid = uuid7(ms, i)
    created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%03dZ" % (ms % 1000)
    env = {"id": nid, "user_id": f"{prefix}{i % 50}", "type": "default",
           "message": message if message is not None else f"{prefix} {i}", "data": None,
           "created_at": created}
    return nid, env["user_id"], json.dumps(env, separators=(",", ":"))


def resp(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


def pipeline(redis, cmds, chunk=1000):
    """Sends commands in pipelined chunks; returns the replies."""
    redis.cmd("PING")
    replies = []
    for at in range(0, len(cmds), chunk):
        part = cmds[at:at + chunk]
        redis.sock.sendall(b"".join(resp(*c) for c in part))
        replies.extend(redis._read() for _ in part)
    return replies


def add_notifications(redis, items):
    return pipeline(redis, [("XADD", NOTIFY, "*", "id", nid, "user_id", user, "payload", payload)
                            for nid, user, payload in items])


def count_rows(stack, where="true"):
    return int(stack.psql(f"SELECT count(*) FROM notifications WHERE {where}"))


def pending(stack, stream=NOTIFY):
    return stack.redis.cmd("XPENDING", stream, GROUP)[0]


def dead_letters(stack):
    out = []
    for sid, fields in stack.redis.cmd("XRANGE", DEAD, "-", "+"):
        out.append((sid, dict(zip(fields[::2], fields[1::2]))))
    return out


def dead_of(stack, sid):
    return [f for _, f in dead_letters(stack) if f.get("dead_sid") == sid]


def netstrings(s):
    items, at = [], 0
    while at < len(s):
        colon = s.index(":", at)
        n = int(s[at:colon])
        items.append(s[colon + 1:colon + 1 + n])
        check(s[colon + 1 + n] == ",", f"netstring ends with ',' at {colon + 1 + n}")
        at = colon + n + 2
    return items


class Monitor:
    """Redis MONITOR on its own connection: every command the server runs, in order."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.sock.makefile("rb")
        self.sock.sendall(resp("MONITOR"))
        check(self.f.readline().strip() == b"+OK", "MONITOR started")
        self.lines = []
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for line in self.f:
                self.lines.append(line.decode(errors="replace"))
        except (OSError, ValueError):
            pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# migrations/004_room_notifications.sql as first released (one transaction, CHECK validated, index built).
OLD_004 = """-- Herald schema, version 4: notifications addressed to a room.
-- POST /notifications with "room" instead of "user_id" stores ONE row for the
-- room (room set, user_id NULL); the live frame goes to the room's members of
-- the moment (proto/redis.md). Exactly one of user_id and room is set.

ALTER TABLE notifications ADD COLUMN room text;
ALTER TABLE notifications ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE notifications ADD CONSTRAINT notifications_one_target
    CHECK ((user_id IS NULL) <> (room IS NULL));

-- A room's notifications newest first; user rows are not indexed here.
CREATE INDEX notifications_room_id_idx ON notifications (room, id DESC) WHERE room IS NOT NULL;
"""


def main():
    t = TestRun()
    stack = Stack(services=("worker",), workers=1,
                  extra_env={"HERALD_LOG_LEVEL": "debug", "HERALD_WORKER_MAX_DELIVERIES": 2})
    worker = stack.services["worker1"]
    try:
        def huge_poison_entry_is_dead_lettered_whole():
            # 8,200 items and no payload: rejected; the dead letter must hold every item.
            args = []
            for i in range(4100):
                args += [f"f{i}", f"v{i}"]
            sid = stack.redis.cmd("XADD", NOTIFY, "*", *args)
            wait_until(lambda: dead_of(stack, sid), 15, "the dead letter of the huge entry")
            f = dead_of(stack, sid)[0]
            check(f["dead_stream"] == NOTIFY and "payload" in f["dead_reason"], f"meta fields: {f.keys()}")
            check(netstrings(f["dead_fields"]) == args, "dead_fields holds the 8,200 original items in order")
            wait_until(lambda: pending(stack) == 0, 5, "nothing pending")
            check("too many results to unpack" not in worker.log_text(), "no unpack failure")
        t.check("worker_dead_letters_an_entry_with_thousands_of_fields_without_losing_it",
                huge_poison_entry_is_dead_lettered_whole)

        def small_poison_entry_keeps_inline_fields():
            sid = stack.redis.cmd("XADD", NOTIFY, "*", "id", "x", "user_id", "y", "payload", "{garbage")
            wait_until(lambda: dead_of(stack, sid), 15, "the dead letter")
            f = dead_of(stack, sid)[0]
            check(f["payload"] == "{garbage" and "dead_fields" not in f, f"inline fields: {f}")
        t.check("worker_dead_letter_of_a_small_entry_keeps_its_fields_inline",
                small_poison_entry_keeps_inline_fields)

        def postgres_down_across_restarts_is_not_poison():
            nid, user, payload = envelope("pgdown", 1)
            stack.stop_postgres()
            try:
                sid = add_notifications(stack.redis, [(nid, user, payload)])[0]
                wait_until(lambda: pending(stack) == 1, 10, "the entry read and held")
                # Each restart re-reads it: its delivery count passes max_deliveries=2.
                for _ in range(3):
                    check(worker.terminate() == 0, "worker exits 0 while postgres is down")
                    rereads = worker.log_text().count("event=pending_reread")
                    worker.start()
                    wait_until(lambda: worker.log_text().count("event=pending_reread") > rereads
                               or dead_of(stack, sid), 10, "the restarted worker re-read it")
                    check(not dead_of(stack, sid), "a healthy entry was dead-lettered while postgres was down")
                deliveries = stack.redis.cmd("XPENDING", NOTIFY, GROUP, "-", "+", 1)[0][3]
                check(deliveries > 2, f"delivered {deliveries} times, more than max_deliveries")
            finally:
                stack.start_postgres()
            wait_until(lambda: count_rows(stack, f"id = '{nid}'") == 1, 20, "the row stored once postgres is back")
            wait_until(lambda: pending(stack) == 0, 5, "nothing pending")
            check(not dead_of(stack, sid), "not dead-lettered")
            check(stack.redis.cmd("HLEN", "herald:worker:attempts") == 0, "attempt counts cleaned up")
        t.check("worker_restarted_while_postgres_is_down_dead_letters_nothing_and_stores_once_back",
                postgres_down_across_restarts_is_not_poison)

        def statement_timeout_isolates_the_culprit():
            # One row whose insert outlasts statement_timeout: the batch holding it can never
            # commit whole. The rest must be stored and the culprit dead-lettered.
            stack.psql("CREATE FUNCTION herald_slow() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN IF NEW.message = 'slow' THEN PERFORM pg_sleep(3); END IF; "
                       "RETURN NEW; END $$")
            stack.psql("CREATE TRIGGER herald_slow BEFORE INSERT ON notifications "
                       "FOR EACH ROW EXECUTE FUNCTION herald_slow()")
            stack.psql("ALTER DATABASE herald SET statement_timeout = '400ms'")
            try:
                check(worker.terminate() == 0, "worker stops")
                items = [envelope("slow", i, "slow" if i == 1500 else None) for i in range(3000)]
                sids = add_notifications(stack.redis, items)
                worker.start()  # a new session: it gets the statement_timeout
                wait_until(lambda: count_rows(stack, "user_id LIKE 'slow%'") == 2999, 60,
                           "the 2,999 other rows stored")
                wait_until(lambda: dead_of(stack, sids[1500]), 10, "the culprit dead-lettered")
                f = dead_of(stack, sids[1500])[0]
                check("57014" in f["dead_reason"], f"reason names the statement timeout: {f['dead_reason']}")
                wait_until(lambda: pending(stack) == 0, 10, "nothing pending")
                check(count_rows(stack, f"id = '{items[1500][0]}'") == 0, "the culprit has no row")
                check("event=store_failed" in worker.log_text() and "level=error" in worker.log_text(),
                      "the refusal is logged at error level")
            finally:
                stack.psql("DROP TRIGGER herald_slow ON notifications")
                stack.psql("ALTER DATABASE herald RESET statement_timeout")
        t.check("worker_statement_timeout_isolates_the_culprit_and_stores_the_rest",
                statement_timeout_isolates_the_culprit)

        def one_bad_row_is_found_by_bisection():
            # Every INSERT statement on notifications bumps a sequence (not rolled back).
            stack.psql("CREATE SEQUENCE herald_inserts")
            stack.psql("CREATE FUNCTION herald_count() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$ BEGIN PERFORM nextval('herald_inserts'); RETURN NULL; END $$")
            stack.psql("CREATE TRIGGER herald_count BEFORE INSERT ON notifications "
                       "FOR EACH STATEMENT EXECUTE FUNCTION herald_count()")
            stack.psql("ALTER TABLE notifications ADD CONSTRAINT herald_no_bad CHECK (message <> 'bad')")
            try:
                check(worker.terminate() == 0, "worker stops")
                items = [envelope("bis", i, "bad" if i == 2000 else None) for i in range(3000)]
                sids = add_notifications(stack.redis, items)
                before = int(stack.psql("SELECT last_value FROM herald_inserts"))
                worker.start()
                wait_until(lambda: count_rows(stack, "user_id LIKE 'bis%'") == 2999, 60, "2,999 rows")
                wait_until(lambda: dead_of(stack, sids[2000]), 10, "the bad row dead-lettered")
                check("23514" in dead_of(stack, sids[2000])[0]["dead_reason"], "reason: the CHECK")
                statements = int(stack.psql("SELECT last_value FROM herald_inserts")) - before
                # Bisection: about 2 log2(3000) ~ 24 statements; row by row it was ~3,000.
                check(statements < 100, f"{statements} INSERT statements for one bad row in 3,000")
            finally:
                stack.psql("ALTER TABLE notifications DROP CONSTRAINT herald_no_bad")
                stack.psql("DROP TRIGGER herald_count ON notifications")
        t.check("worker_finds_one_bad_row_by_bisection_not_row_by_row", one_bad_row_is_found_by_bisection)

        def nul_in_message_is_refused_not_truncated():
            nid = uuid7(int(time.time() * 1000), 7)
            created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
            payload = ('{"id":"%s","user_id":"nul","type":"t","message":"visible\\u0000hidden",'
                       '"data":null,"created_at":"%s"}' % (nid, created))
            sid = add_notifications(stack.redis, [(nid, "nul", payload)])[0]
            wait_until(lambda: dead_of(stack, sid), 10, "the dead letter")
            check("NUL" in dead_of(stack, sid)[0]["dead_reason"], "reason names the NUL")
            check(count_rows(stack, f"id = '{nid}'") == 0, "no truncated row stored")
        t.check("worker_refuses_a_nul_in_message_instead_of_storing_it_truncated",
                nul_in_message_is_refused_not_truncated)

        def receipts_backlog_does_not_starve_new_entries():
            # 60,000 receipts whose rows never come, left by a consumer gone for good: each
            # is claimed for a retry once idle receipt_retry_ms (2 s). A new notification
            # must be read and stored in the first steps, not after a pass over the backlog.
            check(worker.terminate() == 0, "worker stops")
            ms = int(time.time() * 1000)
            rids = [uuid7(ms, i) for i in range(60000)]
            pipeline(stack.redis, [("XADD", RECEIPTS, "*", "id", r, "delivered_at", ms) for r in rids])
            # The worker created the group at its start: a ghost consumer takes them all.
            got = stack.redis.cmd("XREADGROUP", "GROUP", GROUP, "ghost", "COUNT", 60000,
                                  "STREAMS", RECEIPTS, ">")
            last = got[0][1][-1][0]
            check(len(got[0][1]) == 60000, "the ghost holds 60,000 receipts")
            wait_until(lambda: stack.redis.cmd("XPENDING", RECEIPTS, GROUP, "IDLE", 2100, last, last, 1),
                       10, "the whole backlog idle past receipt_retry_ms")
            nid, user, payload = envelope("fresh", 1)
            sid = add_notifications(stack.redis, [(nid, user, payload)])[0]
            mon = Monitor(stack.redis_port)
            try:
                worker.start()
                wait_until(lambda: count_rows(stack, f"id = '{nid}'") == 1, 60, "the new row")
                wait_until(lambda: any('"XACK" "%s"' % NOTIFY in l and sid in l for l in mon.lines), 10,
                           "its ack")
            finally:
                mon.close()
            lines = list(mon.lines)
            acked = next(i for i, l in enumerate(lines) if '"XACK" "%s"' % NOTIFY in l and sid in l)
            claims = sum(1 for l in lines[:acked] if '"XAUTOCLAIM" "%s"' % RECEIPTS in l)
            claimed_before = stack.redis.cmd("XPENDING", RECEIPTS, GROUP)[0]
            check(claims <= 3, f"{claims} receipt claims ran before the new entry was acked")
            check(claimed_before > 0, "the backlog is still waiting")
            # Drop the backlog so later checks start clean: no batch of it in flight either.
            check(worker.terminate() == 0, "worker stops")
            stack.redis.cmd("DEL", RECEIPTS)
            worker.start()
        t.check("worker_stores_new_entries_while_a_large_receipts_backlog_waits",
                receipts_backlog_does_not_starve_new_entries)

        def rejected_entry_survives_redis_restart():
            # PostgreSQL down: the worker holds a batch of one row and one malformed entry.
            # Redis restarts empty (no AOF): the group and its pending list are gone.
            nid, user, payload = envelope("rst", 1)
            stack.stop_postgres()
            try:
                r = stack.redis
                r.cmd("MULTI")
                r.cmd("XADD", NOTIFY, "*", "id", nid, "user_id", user, "payload", payload)
                r.cmd("XADD", NOTIFY, "*", "id", "x", "user_id", "y", "payload", "{restart")
                sids = r.cmd("EXEC")
                wait_until(lambda: pending(stack) == 2, 10, "the batch held")
                stack.stop_redis()
                stack.start_redis()
                wait_until(lambda: stack.redis.cmd("EXISTS", NOTIFY) == 1, 15, "the worker back on the new Redis")
            finally:
                stack.start_postgres()
            wait_until(lambda: count_rows(stack, f"id = '{nid}'") == 1, 20, "the row stored")
            wait_until(lambda: dead_of(stack, sids[1]), 10, "the malformed entry dead-lettered on the new server")
            check(dead_of(stack, sids[1])[0]["payload"] == "{restart", "with its fields")
        t.check("worker_dead_letters_rejected_entries_held_through_a_redis_restart",
                rejected_entry_survives_redis_restart)

        def receipt_updates_are_hot():
            def stats():
                upd, hot = stack.psql("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                                      "WHERE relname = 'notifications'").split("|")
                return int(upd), int(hot)
            items = [envelope("hot", i) for i in range(5000)]
            add_notifications(stack.redis, items)
            wait_until(lambda: count_rows(stack, "user_id LIKE 'hot%'") == 5000, 30, "5,000 rows")
            upd0, hot0 = stats()
            ms = int(time.time() * 1000)
            pipeline(stack.redis, [("XADD", RECEIPTS, "*", "id", nid, "user_id", user, "delivered_at", ms)
                                   for nid, user, _ in items])
            wait_until(lambda: count_rows(stack, "user_id LIKE 'hot%' AND delivered_at IS NOT NULL") == 5000,
                       30, "5,000 receipts applied")
            # Statistics reach the view when the worker's session reports them (up to ~10 s idle).
            wait_until(lambda: stats()[0] - upd0 >= 5000, 30, "the updates counted")
            upd, hot = stats()
            ratio = (hot - hot0) / (upd - upd0)
            print(f"# hot ratio {ratio:.3f}", flush=True)
            check(ratio >= 0.7, f"{hot - hot0} of {upd - upd0} receipt updates were HOT ({ratio:.0%})")
        t.check("worker_receipt_updates_are_mostly_hot", receipt_updates_are_hot)

        mig_src = os.path.join(os.environ.get("HERALD_SOURCE_DIR", "."), "migrations")

        def migrations_dir(name, files):
            d = os.path.join(stack.tmp, name)
            os.makedirs(d, exist_ok=True)
            for f in files:
                shutil.copy(os.path.join(mig_src, f), d)
            return d

        def db_url(db):
            return f"host=127.0.0.1 port={stack.pg_port} dbname={db} user=postgres"

        def migrate(db, d):
            env = dict(stack.env, HERALD_POSTGRES_URL=db_url(db), HERALD_WORKER_MIGRATIONS_DIR=d)
            return subprocess.run([stack.binary("herald-worker"), "--migrate"], env=env,
                                  capture_output=True, text=True)

        def spawn_migrator(key, db, d):
            # Redis db 1: this worker never takes entries meant for worker1.
            return stack.spawn(key, "herald-worker", {
                "HERALD_POSTGRES_URL": db_url(db), "HERALD_WORKER_MIGRATIONS_DIR": d,
                "HERALD_REDIS_URL": f"redis://127.0.0.1:{stack.redis_port}/1",
                "HERALD_WORKER_CONSUMER": key})

        all_files = sorted(f for f in os.listdir(mig_src) if f.endswith(".sql"))

        def failing_migration_is_retried():
            stack.psql("CREATE DATABASE herald_mfail", db="postgres")
            d = migrations_dir("mig_fail", all_files)
            broken = os.path.join(d, "900_broken.sql")
            with open(broken, "w") as f:
                f.write("SELECT 1 / 0;\n")
            m = spawn_migrator("migrator_fail", "herald_mfail", d)
            wait_until(lambda: m.log_text().count("event=migration_failed") >= 2 or m.proc.poll() is not None,
                       20, "the migration failing twice")
            check(m.proc.poll() is None, "the worker keeps running after a migration error")
            check("action=retry_with_backoff" in m.log_text(), "logged as retried")
            with open(broken, "w") as f:
                f.write("SELECT 1;\n")
            wait_until(lambda: "event=migrated" in m.log_text(), 20, "the fixed migration applied")
            check(m.terminate() == 0, "clean exit")
        t.check("worker_retries_a_migration_that_fails_on_a_live_connection", failing_migration_is_retried)

        def migration_does_not_lock_out_readers():
            # A database at version 3 with rows, and a transaction holding a read lock on them.
            stack.psql("CREATE DATABASE herald_m3", db="postgres")
            out = migrate("herald_m3", migrations_dir("mig3", all_files[:3]))
            check(out.returncode == 0, f"migrated to 3: {out.stdout}{out.stderr}")
            stack.psql("INSERT INTO notifications (id, user_id, type, message, created_at) "
                       "SELECT gen_random_uuid(), 'u' || i, 't', 'm', now() FROM generate_series(1, 1000) i",
                       db="herald_m3")
            env = dict(os.environ, PGAPPNAME="herald_long_tx")
            long_tx = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "postgres",
                                        "-d", "herald_m3", "-At"], env=env, stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL)
            try:
                long_tx.stdin.write(b"BEGIN;\nSELECT count(*) FROM notifications;\n")
                long_tx.stdin.flush()
                wait_until(lambda: stack.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                              "'herald_long_tx' AND state = 'idle in transaction'",
                                              db="postgres") == "1", 10, "the long transaction open")
                m = spawn_migrator("migrator_lock", "herald_m3", migrations_dir("mig_all", all_files))
                wait_until(lambda: "event=migration_failed" in m.log_text(), 30,
                           "004 giving up on its lock (lock_timeout)")
                check(m.proc.poll() is None, "still running, retrying")
                # A reader queued behind a waiting ALTER would wait as long as the ALTER does.
                env = dict(os.environ, PGOPTIONS="-c statement_timeout=20000")
                reader = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "postgres",
                                         "-d", "herald_m3", "-At", "-c", "SELECT count(*) FROM notifications"],
                                        env=env, capture_output=True, text=True)
                check(reader.returncode == 0 and reader.stdout.strip() == "1000",
                      f"a reader gets in while the migration waits: {reader.stderr}")
            finally:
                long_tx.stdin.write(b"COMMIT;\n")
                long_tx.stdin.close()
                long_tx.wait(10)
            wait_until(lambda: "event=migrated" in m.log_text(), 30, "the migrations done once the lock is free")
            got = stack.psql("SELECT string_agg(version, ',' ORDER BY version) FROM schema_migrations",
                             db="herald_m3")
            check(got == ",".join(all_files), f"every file applied: {got}")
            check(stack.psql("SELECT convalidated FROM pg_constraint WHERE conname = 'notifications_one_target'",
                             db="herald_m3") == "t", "the CHECK validated")
            check(stack.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                             "'notifications_room_id_idx'::regclass", db="herald_m3") == "t", "the index valid")
            check(m.terminate() == 0, "clean exit")
        t.check("migrations_give_up_a_lock_behind_a_long_transaction_and_retry_without_blocking_readers",
                migration_does_not_lock_out_readers)

        def migrated_with_the_old_004_ends_the_same():
            stack.psql("CREATE DATABASE herald_m4", db="postgres")
            d = migrations_dir("mig_old4", all_files[:3])
            with open(os.path.join(d, "004_room_notifications.sql"), "w") as f:
                f.write(OLD_004)
            out = migrate("herald_m4", d)
            check(out.returncode == 0, f"migrated with the old 004: {out.stdout}{out.stderr}")
            out = migrate("herald_m4", migrations_dir("mig_all", all_files))
            check(out.returncode == 0, f"the rest applied on top: {out.stdout}{out.stderr}")
            check(out.stdout.count("event=migration_applied") + out.stderr.count("event=migration_applied")
                  == len(all_files) - 4, f"only the files after 004: {out.stdout}{out.stderr}")
            check(stack.psql("SELECT indisvalid FROM pg_index WHERE indexrelid = "
                             "'notifications_room_id_idx'::regclass", db="herald_m4") == "t", "the index valid")
        t.check("a_database_migrated_with_the_first_004_takes_the_new_files", migrated_with_the_old_004_ends_the_same)

        def attempts_past_the_limit_dead_letter_then_replay_stores():
            # As if workers had crashed storing it: its attempts count is past max_deliveries=2.
            nid, user, payload = envelope("crash", 1)
            check(worker.terminate() == 0, "worker stops")
            sid = add_notifications(stack.redis, [(nid, user, payload)])[0]
            stack.redis.cmd("XREADGROUP", "GROUP", GROUP, "worker1", "COUNT", 1, "STREAMS", NOTIFY, ">")
            stack.redis.cmd("XCLAIM", NOTIFY, GROUP, "worker1", 0, sid, "RETRYCOUNT", 3)
            stack.redis.cmd("HSET", "herald:worker:attempts", f"{NOTIFY}/{sid}", 2)
            worker.start()
            wait_until(lambda: dead_of(stack, sid), 15, "the dead letter")
            check("store attempts failed" in dead_of(stack, sid)[0]["dead_reason"], "reason: attempts")
            check(count_rows(stack, f"id = '{nid}'") == 0, "no row")
            check(stack.redis.cmd("HLEN", "herald:worker:attempts") == 0, "its count deleted")
            out = subprocess.run([stack.binary("herald-worker"), "--replay-dead-letter"], env=stack.env,
                                 capture_output=True, text=True, timeout=30)
            check(out.returncode == 0 and "event=replay_done replayed=" in out.stdout + out.stderr,
                  out.stdout + out.stderr)
            wait_until(lambda: count_rows(stack, f"id = '{nid}'") == 1, 15, "the replayed row")
            check(not dead_of(stack, sid), "the dead letter is gone")
        t.check("worker_dead_letters_an_entry_past_max_store_attempts_and_replay_stores_it",
                attempts_past_the_limit_dead_letter_then_replay_stores)
    finally:
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
