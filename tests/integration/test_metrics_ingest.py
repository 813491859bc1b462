#!/usr/bin/env python3
"""Ingest's /metrics, /healthz and /readyz against the real binary and a
private Redis: promtool accepts the text, every name proto/metrics.md lists
for ingest (and for every service) is exported, counters move by exact
amounts with traffic (N accepted POSTs -> accepted +N), and /readyz follows
Redis while /healthz stays 200."""

from herald_metrics import listed_names, parse, promtool_check, scrape
from herald_stack import (INGEST_KEY, Stack, TestRun, check, http_request, post_notification,
                          wait_until)

# Every POST carries the test key (proto/auth.md); ingest without key checks ignores it.
AUTH = {"Authorization": f"Bearer {INGEST_KEY}"}
NOTIFY = "herald:stream:notifications"


def post(port, body, headers=None, path="/notifications"):
    h = dict(AUTH, **(headers or {}))
    if path == "/notifications":
        return post_notification(port, body, h)
    return http_request(port, "POST", path, body, h)


REQ = 'herald_ingest_requests_total{{route="{}",code="{}"}}'
REJ = 'herald_ingest_rejected_total{{error="{}"}}'


def main():
    t = TestRun()
    stack = Stack(gateways=0, workers=0, services=("ingest",))
    ip = stack.ingest_port
    try:
        def promtool_accepts():
            promtool_check(scrape(ip))
        t.check("promtool_check_metrics_accepts_the_output", promtool_accepts)

        def every_listed_name():
            m = parse(scrape(ip))
            names = {k.split("{")[0] for k in m}
            rows = listed_names(["Every service", "ingest"])
            check(len(rows) >= 13, rows)
            for name, typ in rows:
                want = [name + s for s in ("_bucket", "_sum", "_count")] if typ == "histogram" else [name]
                for w in want:
                    check(w in names, f"{w} ({typ}) missing from /metrics")
            for route in ("notifications", "batch", "users", "health", "metrics", "other"):
                for code in ("2xx", "3xx", "4xx", "5xx"):
                    check(REQ.format(route, code) in m, f"{REQ.format(route, code)} not exported from the start")
            for code in ("invalid_json", "missing_field", "unavailable", "idempotency_conflict", "other"):
                check(REJ.format(code) in m, f"{REJ.format(code)} not exported from the start")
            check(any(k.startswith('herald_build_info{service="ingest",') for k in m), "build_info")
            check(m['herald_ready{service="ingest"}'] == 1, "herald_ready")
            check(m['herald_dependency_up{service="ingest",dependency="redis"}'] == 1, "redis up")
            for p in ("process_start_time_seconds", "process_resident_memory_bytes", "process_open_fds"):
                check(m[p] > 0, p, m[p])
        t.check("every_name_metrics_md_lists_is_exported", every_listed_name)

        def counters_move_exactly():
            n = 7
            a = parse(scrape(ip))
            before = stack.entries_added(NOTIFY)
            for i in range(n):
                s, b = post(ip, {"user_id": f"m{i}", "message": "count me"})
                check(s == 202, s, b)
            # A fan-out of 3 and a batch of 2 valid + 1 refused item: 5 more notifications.
            s, b = post(ip, {"user_ids": ["f1", "f2", "f3"], "message": "fan"})
            check(s == 202, s, b)
            s, b = post(ip, {"notifications": [{"user_id": "b1", "message": "x"},
                                               {"user_id": "b2", "message": "y"},
                                               {"user_id": "b3"}]}, path="/notifications/batch")
            check(s == 202 and b["accepted"] == 2, s, b)
            for _ in range(2):
                s, b = post(ip, b"{not json")
                check(s == 400 and b["error"]["code"] == "invalid_json", s, b)
            s, b = post(ip, {"message": "no target"})
            check(s == 400 and b["error"]["code"] == "missing_field", s, b)
            s, _ = http_request(ip, "GET", "/nowhere", headers=AUTH)
            check(s == 404, s)
            s, _ = http_request(ip, "GET", "/notifications", headers=AUTH)
            check(s == 405, s)
            # Refused by the API key check: counted like every other answer.
            s, _ = post_notification(ip, {"user_id": "k", "message": "no key"}, {"Authorization": None})
            check(s == 401, s)
            s, _ = post_notification(ip, {"user_id": "k", "message": "bad key"},
                                     {"Authorization": "Bearer not-a-key"})
            check(s == 401, s)
            # The same Idempotency-Key twice: written once, replayed once.
            key = {"Idempotency-Key": "metrics-replay-1"}
            s1, b1 = post(ip, {"user_id": "idem", "message": "once"}, key)
            s2, b2 = post(ip, {"user_id": "idem", "message": "once"}, key)
            check(s1 == 202 and s2 == 202 and b1 == b2, b1, b2)
            s, b = post(ip, {"user_id": "idem", "message": "other body"}, key)
            check(s == 409, s, b)
            for path in ("/healthz", "/readyz"):
                s, _ = http_request(ip, "GET", path)
                check(s == 200, path, s)
            m = parse(scrape(ip))
            check(stack.entries_added(NOTIFY) - before == n + 5 + 1, "entries written")
            want = {"herald_ingest_notifications_accepted_total": n + 5 + 1,
                    REQ.format("notifications", "2xx"): n + 1 + 2,
                    REQ.format("notifications", "4xx"): 7,  # 2 + 1 + the 405, the 409 and two 401
                    REQ.format("batch", "2xx"): 1,
                    REQ.format("other", "4xx"): 1,
                    REQ.format("health", "2xx"): 2,
                    REQ.format("metrics", "2xx"): 1,
                    REJ.format("invalid_json"): 2,
                    REJ.format("missing_field"): 2,  # one request, one batch item
                    REJ.format("not_found"): 1,
                    REJ.format("method_not_allowed"): 1,
                    REJ.format("idempotency_conflict"): 1,
                    REJ.format("unknown_key"): 2,
                    "herald_ingest_idempotent_replays_total": 1,
                    "herald_ingest_redis_errors_total": 0,
                    'herald_ingest_request_duration_seconds_count{route="notifications"}': n + 10,
                    'herald_ingest_request_duration_seconds_bucket{route="notifications",le="+Inf"}': n + 10}
            for k, d in want.items():
                check(m[k] - a[k] == d, f"{k}: {a[k]} -> {m[k]}, want +{d}")
            moved = {k for k in m if k.startswith(("herald_ingest_requests_total",
                                                   "herald_ingest_rejected_total")) and m[k] != a[k]}
            check(moved == {k for k in want if k.startswith(("herald_ingest_requests_total",
                                                             "herald_ingest_rejected_total"))}, moved)
        t.check("counters_move_by_exact_amounts_n_posts_accepted_plus_n", counters_move_exactly)

        def redis_refusal_is_a_redis_error():
            # A key of the wrong type where the stream should be: XADD fails inside the script.
            stack.redis.cmd("RENAME", NOTIFY, "herald:test:saved")
            stack.redis.cmd("SET", NOTIFY, "not a stream")
            try:
                a = parse(scrape(ip))
                s, b = post(ip, {"user_id": "wrongtype", "message": "refused"})
                check(s == 503 and b["error"]["code"] == "unavailable", s, b)
                m = parse(scrape(ip))
            finally:
                stack.redis.cmd("DEL", NOTIFY)
                stack.redis.cmd("RENAME", "herald:test:saved", NOTIFY)
            for k, d in {"herald_ingest_redis_errors_total": 1, REJ.format("unavailable"): 1,
                         REQ.format("notifications", "5xx"): 1,
                         "herald_ingest_notifications_accepted_total": 0}.items():
                check(m[k] - a[k] == d, f"{k}: {a[k]} -> {m[k]}, want +{d}")
        t.check("a_write_redis_refuses_counts_as_a_redis_error", redis_refusal_is_a_redis_error)

        def readyz_follows_redis():
            ready, dep = 'herald_ready{service="ingest"}', 'herald_dependency_up{service="ingest",dependency="redis"}'
            stack.stop_redis()
            try:
                wait_until(lambda: http_request(ip, "GET", "/readyz")[0] == 503, 15, "readyz 503")
                s, b = http_request(ip, "GET", "/readyz")
                check(s == 503 and b == {"status": "unavailable", "redis": "down", "draining": False}, s, b)
                s, b = http_request(ip, "GET", "/healthz")
                check(s == 200 and b["status"] == "ok" and b["redis"] == "down", s, b)
                a = parse(scrape(ip))
                check(a[ready] == 0 and a[dep] == 0, a[ready], a[dep])
                s, b = post(ip, {"user_id": "down", "message": "while redis is away"})
                check(s == 503 and b["error"]["code"] == "unavailable", s, b)
                m = parse(scrape(ip))
                check(m[REJ.format("unavailable")] - a[REJ.format("unavailable")] == 1, "unavailable counted")
            finally:
                stack.start_redis()
            wait_until(lambda: http_request(ip, "GET", "/readyz")[0] == 200, 15, "readyz 200 again")
            s, b = http_request(ip, "GET", "/readyz")
            check(b == {"status": "ok", "redis": "up", "draining": False}, b)
            m = parse(scrape(ip))
            check(m[ready] == 1 and m[dep] == 1, m[ready], m[dep])
            wait_until(lambda: post(ip, {"user_id": "back", "message": "again"})[0] == 202, 10,
                       "a POST after the restart")
        t.check("readyz_is_503_while_redis_is_down_healthz_stays_200", readyz_follows_redis)
    finally:
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
