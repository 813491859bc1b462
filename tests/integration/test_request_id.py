#!/usr/bin/env python3
"""X-Request-Id through the pipeline (proto/redis.md, request_id): ingest
takes the caller's id when it is 1-128 visible ASCII characters, else makes
a UUID; echoes it in the response, writes it in its access log line and in
every stream entry of the request; the worker keeps it out of the table and
puts it in its log lines about an entry (rejected, dead-lettered)."""
import http.client
import json
import re

from herald_stack import INGEST_KEY, Stack, TestRun, check, wait_until

NOTIFY = "herald:stream:notifications"
DEAD = "herald:stream:dead"
AUTH = {"Authorization": f"Bearer {INGEST_KEY}"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def post(port, body, headers=None, path="/notifications"):
    """(status, response headers (lower-case names), parsed body) of a POST with the test key."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h = dict({"Content-Type": "application/json"}, **AUTH)
        conn.putrequest("POST", path)
        for k, v in dict(h, **(headers or {})).items():
            conn.putheader(k, v)  # bytes values go out as they are
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        r = conn.getresponse()
        raw = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(raw) if raw else None
    finally:
        conn.close()


def entry_fields(stack, nid):
    for _, f in stack.redis.cmd("XRANGE", NOTIFY, "-", "+"):
        d = dict(zip(f[::2], f[1::2]))
        if d.get("id") == nid:
            return d
    return None


def main():
    t = TestRun()
    stack = Stack(gateways=0, workers=1, services=("ingest", "worker"))
    ip = stack.ingest_port
    ingest, worker = stack.services["ingest"], stack.services["worker1"]
    try:
        def callers_id_is_echoed_logged_and_stored():
            rid = "trace-4bf92f3577b34da6.a3ce929d0e0e4736:01"
            s, h, b = post(ip, {"user_id": "rid1", "message": "traced"}, {"X-Request-Id": rid})
            check(s == 202, s, b)
            check(h.get("x-request-id") == rid, h)
            f = entry_fields(stack, b["id"])
            check(f is not None and f["request_id"] == rid, f)
            wait_until(lambda: f'request_id="{rid}"' in ingest.log_text(), 5, "the access log line")
            line = [ln for ln in ingest.log_text().splitlines() if f'request_id="{rid}"' in ln][0]
            check("event=request method=POST path=\"/notifications\" status=202" in line, line)
            # The worker stores the row and leaves the id out of the table.
            wait_until(lambda: stack.psql(f"SELECT count(*) FROM notifications WHERE id = '{b['id']}'")
                       == "1", 15, "the row stored")
            cols = stack.psql("SELECT string_agg(column_name, ',') FROM information_schema.columns "
                              "WHERE table_name = 'notifications'")
            check("request_id" not in cols, cols)
        t.check("callers_request_id_is_echoed_logged_and_in_the_stream_entry",
                callers_id_is_echoed_logged_and_stored)

        def generated_when_absent_or_invalid():
            seen = set()
            for hdr in (None, "", "x" * 129, "has space", "caf\xc3\xa9".encode("latin-1")):
                headers = {} if hdr is None else {"X-Request-Id": hdr}
                s, h, b = post(ip, {"user_id": "rid2", "message": "generated"}, headers)
                check(s == 202, hdr, s, b)
                got = h.get("x-request-id", "")
                check(UUID.match(got), f"{hdr!r}: a generated UUID v7, got {got!r}")
                check(entry_fields(stack, b["id"])["request_id"] == got, hdr)
                seen.add(got)
            check(len(seen) == 5, "one new id per request", seen)
            # The longest valid one and punctuation are kept as they are.
            for rid in ("y" * 128, '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'):
                s, h, b = post(ip, {"user_id": "rid2", "message": "kept"}, {"X-Request-Id": rid})
                check(s == 202 and h.get("x-request-id") == rid, rid, h)
                check(entry_fields(stack, b["id"])["request_id"] == rid, rid)
        t.check("request_id_is_a_new_uuid_when_absent_or_not_1_to_128_visible_ascii",
                generated_when_absent_or_invalid)

        def every_entry_of_a_request_carries_it():
            rid = "fanout-and-batch"
            s, h, b = post(ip, {"user_ids": ["ra", "rb", "rc"], "message": "fan"}, {"X-Request-Id": rid})
            check(s == 202 and len(b["items"]) == 3, s, b)
            for it in b["items"]:
                check(entry_fields(stack, it["id"])["request_id"] == rid, it)
            s, h, b = post(ip, {"notifications": [{"user_id": "rd", "message": "1"},
                                                  {"room": "lobby", "message": "2"}]},
                           {"X-Request-Id": rid + "-batch"}, path="/notifications/batch")
            check(s == 202 and b["accepted"] == 2, s, b)
            for r in b["results"]:
                check(entry_fields(stack, r["id"])["request_id"] == rid + "-batch", r)
            # Errors carry it too (nothing is stored for them).
            s, h, b = post(ip, b"{broken", {"X-Request-Id": "refused-1"})
            check(s == 400 and h.get("x-request-id") == "refused-1", s, h)
            wait_until(lambda: 'status=400 duration_us=' in ingest.log_text()
                       and 'request_id="refused-1"' in ingest.log_text(), 5, "the 400 logged")
        t.check("every_entry_of_a_fanout_or_batch_carries_the_request_id",
                every_entry_of_a_request_carries_it)

        def dead_lettered_entry_logs_its_request_id():
            # PostgreSQL refuses this one row: the worker isolates it and dead-letters it.
            stack.psql("ALTER TABLE notifications ADD CONSTRAINT herald_test_no_poison "
                       "CHECK (message <> 'poison for the worker')")
            rid = "dead-letter-trace-7"
            s, h, b = post(ip, {"user_id": "rid3", "message": "poison for the worker"},
                           {"X-Request-Id": rid})
            check(s == 202, s, b)
            nid = b["id"]
            sid = [e[0] for e in stack.redis.cmd("XRANGE", NOTIFY, "-", "+")
                   if dict(zip(e[1][::2], e[1][1::2])).get("id") == nid][0]

            def dead():
                return [dict(zip(f[::2], f[1::2])) for _, f in stack.redis.cmd("XRANGE", DEAD, "-", "+")
                        if dict(zip(f[::2], f[1::2])).get("dead_sid") == sid]
            wait_until(dead, 20, "the dead letter")
            check(dead()[0]["request_id"] == rid, dead())
            log = worker.log_text().splitlines()
            rejected = [ln for ln in log if "event=entry_rejected" in ln and f"sid={sid}" in ln]
            check(len(rejected) == 1 and f'request_id="{rid}"' in rejected[0], rejected)
            moved = [ln for ln in log if "event=entry_dead_lettered" in ln and f"sid={sid}" in ln]
            check(len(moved) == 1 and f'request_id="{rid}"' in moved[0], moved)

            # An entry the worker cannot decode logs the id it carries, and "-" without one.
            bad = stack.redis.cmd("XADD", NOTIFY, "*", "id", "x", "payload", "{garbage",
                                  "request_id", 'odd "id" here')
            bare = stack.redis.cmd("XADD", NOTIFY, "*", "id", "y", "payload", "{garbage")
            wait_until(lambda: f"sid={bare}" in worker.log_text(), 20, "the garbage entries rejected")
            log = worker.log_text().splitlines()
            line = [ln for ln in log if "event=entry_rejected" in ln and f"sid={bad}" in ln]
            check(len(line) == 1 and 'request_id="odd \\"id\\" here"' in line[0], line)
            line = [ln for ln in log if "event=entry_rejected" in ln and f"sid={bare}" in ln]
            check(len(line) == 1 and 'request_id="-"' in line[0], line)
        t.check("a_dead_lettered_entry_logs_its_request_id_in_the_worker",
                dead_lettered_entry_logs_its_request_id)
    finally:
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
