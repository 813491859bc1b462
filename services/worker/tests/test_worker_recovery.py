"""herald-worker against a real Redis and PostgreSQL, through the failures it
exists to survive: kill -9 mid-stream, PostgreSQL restarting, malformed
entries, a consumer that died holding entries, SIGTERM. Every check ends with
the same invariant: each accepted entry is one row (no loss, no duplicate) and
nothing is left pending. Uses tests/integration/herald_stack.py."""
import hashlib
import json
import os
import time

from herald_stack import Stack, TestRun, check, wait_until

STREAM = "herald:stream:notifications"
GROUP = "herald-workers"


def uuid7(ms, seq):
    r = int.from_bytes(os.urandom(8), "big")
    u = (ms << 80) | (0x7 << 76) | ((seq & 0xFFF) << 64) | (0b10 << 62) | (r >> 2)
    h = "%032x" % u
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def entries(n, prefix):
    """n entries shaped as ingest's script writes them: id, user_id, payload."""
    base = int(time.time() * 1000)
    out = []
    for i in range(n):
        ms = base + i // 4096
        nid = uuid7(ms, i)
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%03dZ" % (ms % 1000)
        msg = f"{prefix} {i}" if i % 7 else f"{prefix} tab\there\nnewline \\ back\\slash \r é {i}"
        env = {"id": nid, "user_id": f"{prefix}{i % 50}", "type": "default", "message": msg,
               "data": None if i % 3 else {"i": i, "s": "a\tb\\c"}, "created_at": created}
        out.append((nid, env["user_id"], json.dumps(env, separators=(",", ":"), ensure_ascii=False)))
    return out


def xadd_many(redis, items, chunk=1000):
    """Pipelined XADDs (one round trip per chunk)."""
    redis.cmd("PING")
    for at in range(0, len(items), chunk):
        part = items[at:at + chunk]
        buf = []
        for nid, user, payload in part:
            args = ["XADD", STREAM, "*", "id", nid, "user_id", user, "payload", payload]
            buf.append(f"*{len(args)}\r\n".encode())
            for a in args:
                b = a.encode()
                buf.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        redis.sock.sendall(b"".join(buf))
        for _ in part:
            redis._read()


def rows(stack):
    total, distinct = stack.psql("SELECT count(*), count(DISTINCT id) FROM notifications").split("|")
    return int(total), int(distinct)


def pending(stack):
    return stack.redis.cmd("XPENDING", STREAM, GROUP)[0]


def wait_all_stored(stack, n, timeout=30):
    wait_until(lambda: rows(stack)[0] >= n, timeout, f"{n} rows")
    wait_until(lambda: pending(stack) == 0, 5, "nothing pending")
    total, distinct = rows(stack)
    check(total == n and distinct == n, (total, distinct, n))


def main():
    t = TestRun()
    stack = Stack(services=("worker",), workers=1,
                  extra_env={"HERALD_WORKER_CLAIM_IDLE_MS": 1000, "HERALD_LOG_LEVEL": "debug"})
    worker = stack.services["worker1"]
    expected = 0
    try:
        def stores_every_entry_once():
            nonlocal expected
            items = entries(5000, "a")
            xadd_many(stack.redis, items)
            expected += len(items)
            wait_all_stored(stack, expected)
            # Item 0 carries tab, newline, CR, backslashes and UTF-8: compare bytes by md5
            # (psql output through text mode would turn the CR into a newline).
            nid, user, payload = items[0]
            want = json.loads(payload)
            got = stack.psql(f"SELECT user_id, md5(message), data = '{json.dumps(want['data'])}'::jsonb,"
                             f" created_at = '{want['created_at']}'::timestamptz"
                             f" FROM notifications WHERE id = '{nid}'")
            md5 = hashlib.md5(want["message"].encode()).hexdigest()
            check(got == f"{want['user_id']}|{md5}|t|t", (got, want))
        t.check("worker_stores_every_entry_once_and_acks_after_commit", stores_every_entry_once)

        def survives_kill9():
            nonlocal expected
            items = entries(60000, "b")
            xadd_many(stack.redis, items)
            expected += len(items)
            # The kill must catch the worker holding entries (read, not acked),
            # or the test shows nothing: kill again if it was between batches.
            held = []
            for attempt in range(10):
                done = rows(stack)[0]
                wait_until(lambda: rows(stack)[0] > done + 2000, 30, "progress")
                worker.kill9()
                held = stack.pending_of(STREAM, GROUP, "worker1")
                worker.start()  # same consumer name: re-reads its own pending entries first
                if held:
                    break
            check(held, "no kill caught the worker with entries pending")
            print(f"# killed with {len(held)} entries pending", flush=True)
            wait_all_stored(stack, expected)
            check(stack.pending_of(STREAM, GROUP, "worker1") == [], "pending after the restart")
        t.check("worker_killed_mid_batch_restarts_without_loss_or_duplicate", survives_kill9)

        def catches_up_after_postgres_restart():
            nonlocal expected
            stack.stop_postgres()
            try:
                items = entries(3000, "c")
                xadd_many(stack.redis, items)
                expected += len(items)
                # The worker reads a batch, cannot commit it, and keeps it unacked.
                wait_until(lambda: pending(stack) > 0, 10, "a batch held pending")
                # Once it has seen the outage (the log is only the sync point), the
                # batch is still pending and nothing is acked while PostgreSQL is down.
                wait_until(lambda: "event=unavailable dep=postgres" in worker.log_text(), 15,
                           "the worker to notice the outage")
                check(pending(stack) > 0, "entries acked while PostgreSQL was down")
            finally:
                stack.start_postgres()
            wait_all_stored(stack, expected)
            log = worker.log_text()
            check(log.count("event=unavailable dep=postgres") == 1, "outage logged once")
            check("event=recovered dep=postgres" in log)
        t.check("worker_catches_up_after_postgres_restart_logging_once", catches_up_after_postgres_restart)

        def rejects_malformed_entries():
            nonlocal expected
            bad = stack.redis.cmd("XADD", STREAM, "*", "id", "x", "user_id", "y", "payload", "{oops")
            nopayload = stack.redis.cmd("XADD", STREAM, "*", "id", "x", "user_id", "y")
            items = entries(10, "d")
            xadd_many(stack.redis, items)
            expected += len(items)
            wait_all_stored(stack, expected)
            # State: both are acked (wait_all_stored saw nothing pending) and were
            # dead-lettered with their stream ids; no row came from them.
            dead = {dict(zip(f[::2], f[1::2])).get("dead_sid")
                    for _, f in stack.redis.cmd("XRANGE", "herald:stream:dead", "-", "+")}
            check(bad in dead and nopayload in dead, "malformed entries not dead-lettered", bad, nopayload, dead)
            check(stack.psql("SELECT count(*) FROM notifications WHERE user_id = 'y'") == "0")
        t.check("worker_logs_and_acks_malformed_entries", rejects_malformed_entries)

        def claims_from_dead_consumer():
            nonlocal expected
            items = entries(1500, "e")
            check(worker.terminate() == 0, "worker exit after SIGTERM")
            xadd_many(stack.redis, items)
            expected += len(items)
            # A consumer reads entries and dies without acking them.
            got = stack.redis.cmd("XREADGROUP", "GROUP", GROUP, "ghost", "COUNT", "700", "STREAMS", STREAM, ">")
            ghost_ids = [fields[1] for _, fields in got[0][1]]
            check(len(ghost_ids) == 700 and len(stack.pending_of(STREAM, GROUP, "ghost")) == 700)
            worker.start()
            wait_all_stored(stack, expected)
            check(stack.pending_of(STREAM, GROUP, "ghost") == [], "the ghost's entries were not claimed")
            stored = stack.psql("SELECT count(*) FROM notifications WHERE id IN (%s)"
                                % ",".join(f"'{i}'" for i in ghost_ids))
            check(stored == "700", "the ghost's entries stored", stored)
        t.check("worker_claims_entries_a_dead_consumer_left_pending", claims_from_dead_consumer)

        def sigterm_finishes_batch():
            nonlocal expected
            items = entries(30000, "f")
            xadd_many(stack.redis, items)
            expected += len(items)
            wait_until(lambda: rows(stack)[0] > expected - len(items), 10, "progress")
            check(worker.terminate() == 0)
            check(pending(stack) == 0, "SIGTERM left a batch pending")
            worker.start()
            wait_all_stored(stack, expected)
        t.check("worker_on_sigterm_commits_and_acks_batch_in_flight", sigterm_finishes_batch)
    finally:
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
