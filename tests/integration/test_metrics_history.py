#!/usr/bin/env python3
"""History's /metrics, /healthz and /readyz against the real binary: promtool
accepts the text, every name proto/metrics.md lists for history (and for
every service) is exported, counters move by exact amounts with traffic,
pool gauges follow the pool, and /readyz follows PostgreSQL while /healthz
stays 200."""
import http.client
import json
import signal
import threading

from herald_metrics import listed_names, parse, promtool_check, scrape
from herald_stack import (Stack, TestRun, bearer, check, http_request, listening_ports, mint_token,
                          wait_until)



def tok(user):
    """The Authorization header of a fresh token for user (proto/auth.md)."""
    return bearer(mint_token(user))


def main():
    t = TestRun()
    stack = Stack(gateways=0, workers=0, services=("worker", "history"),
                  extra_env={"HERALD_HISTORY_PG_POOL_SIZE": 2, "HERALD_HISTORY_PG_QUEUE_WAIT_MS": 0,
                             "HERALD_HISTORY_PG_TIMEOUT_MS": 3000})
    hp = stack.history_port
    try:
        def promtool_accepts():
            promtool_check(scrape(hp))
        t.check("promtool_check_metrics_accepts_the_output", promtool_accepts)

        def every_listed_name():
            names = {k.split("{")[0] for k in parse(scrape(hp))}
            rows = listed_names(["Every service", "history"])
            check(len(rows) >= 13, rows)
            for name, typ in rows:
                want = [name + s for s in ("_bucket", "_sum", "_count")] if typ == "histogram" else [name]
                for w in want:
                    check(w in names, f"{w} ({typ}) missing from /metrics")
            m = parse(scrape(hp))
            for route in ("inbox", "unread_count", "read", "unread", "read_all", "get",
                          "room_messages", "health", "metrics", "other"):
                for code in ("2xx", "3xx", "4xx", "5xx"):
                    key = f'herald_history_requests_total{{route="{route}",code="{code}"}}'
                    check(key in m, f"{key} not exported from the start")
            check(any(k.startswith('herald_build_info{service="history",') for k in m), "build_info")
            check(m['herald_ready{service="history"}'] == 1, "herald_ready")
            for dep in ("redis", "postgres"):
                check(m[f'herald_dependency_up{{service="history",dependency="{dep}"}}'] == 1, dep)
            check(m["herald_history_pool_connections"] == 2, m["herald_history_pool_connections"])
        t.check("every_name_metrics_md_lists_is_exported", every_listed_name)

        def counters_move_exactly():
            req = 'herald_history_requests_total{{route="{}",code="{}"}}'
            a = parse(scrape(hp))
            for _ in range(5):
                s, _ = http_request(hp, "GET", "/notifications/unread-count", headers=tok("mx"))
                check(s == 200, s)
            for _ in range(3):
                s, _ = http_request(hp, "GET", "/notifications")  # no token: 401
                check(s == 401, s)
            for _ in range(2):
                s, _ = http_request(hp, "GET", "/nowhere")
                check(s == 404, s)
            s, _ = http_request(hp, "GET", "/healthz")
            check(s == 200, s)
            s, _ = http_request(hp, "GET", "/readyz")
            check(s == 200, s)
            b = parse(scrape(hp))
            want = {req.format("unread_count", "2xx"): 5, req.format("inbox", "4xx"): 3,
                    req.format("other", "4xx"): 2, req.format("health", "2xx"): 2,
                    req.format("metrics", "2xx"): 1,
                    'herald_history_request_duration_seconds_count{route="unread_count"}': 5,
                    'herald_history_request_duration_seconds_bucket{route="unread_count",le="+Inf"}': 5,
                    "herald_history_postgres_errors_total": 0}
            for k, n in want.items():
                check(b[k] - a[k] == n, f"{k}: {a[k]} -> {b[k]}, want +{n}")
            moved = {k for k in b if k.startswith("herald_history_requests_total") and b[k] != a[k]}
            check(moved == {k for k in want if k.startswith("herald_history_requests_total")}, moved)
        t.check("request_counters_move_by_exact_amounts", counters_move_exactly)

        def pool_gauges_and_query_errors():
            a = parse(scrape(hp))
            results = []

            def one():
                results.append(http_request(hp, "GET", "/notifications", headers=tok("mx"),
                                            timeout=20)[0])
            with stack.lock_table("notifications"):
                threads = [threading.Thread(target=one) for _ in range(3)]
                for th in threads:
                    th.start()
                # Two connections block on the lock, the third request waits for one.
                wait_until(lambda: (lambda m: m["herald_history_pool_busy"] == 2
                                    and m["herald_history_pool_waiting"] == 1)(parse(scrape(hp))),
                           10, "busy 2, waiting 1")
                for th in threads:
                    th.join(30)
            check(sorted(results) == [503, 503, 503], results)  # each ran into statement_timeout
            b = parse(scrape(hp))
            check(b["herald_history_postgres_errors_total"] - a["herald_history_postgres_errors_total"]
                  == 3, a["herald_history_postgres_errors_total"], b["herald_history_postgres_errors_total"])
            key = 'herald_history_requests_total{route="inbox",code="5xx"}'
            check(b[key] - a[key] == 3, key)
            check(b["herald_history_pool_busy"] == 0 and b["herald_history_pool_waiting"] == 0, b)
        t.check("pool_gauges_follow_the_pool_and_failed_queries_are_counted",
                pool_gauges_and_query_errors)

        def readyz_follows_postgres():
            stack.stop_postgres()
            try:
                wait_until(lambda: http_request(hp, "GET", "/readyz")[0] == 503, 15, "readyz 503")
                s, b = http_request(hp, "GET", "/readyz")
                check(s == 503 and b["status"] == "unavailable" and b["down"] == ["postgres"], b)
                s, b = http_request(hp, "GET", "/healthz")
                check(s == 200 and b["status"] == "ok" and b["postgres"] == "down", (s, b))
                m = parse(scrape(hp))
                check(m['herald_ready{service="history"}'] == 0, "herald_ready")
                check(m['herald_dependency_up{service="history",dependency="postgres"}'] == 0, "pg up")
                check(m["herald_history_pool_connections"] == 0, "pool")
            finally:
                stack.start_postgres()
            wait_until(lambda: http_request(hp, "GET", "/readyz")[0] == 200, 15, "readyz 200 again")
            s, b = http_request(hp, "GET", "/readyz")
            check(b == {"status": "ok", "postgres": "up", "redis": "up", "draining": False,
                        "down": []}, b)
            check(parse(scrape(hp))['herald_ready{service="history"}'] == 1, "herald_ready back")
        t.check("readyz_is_503_while_postgres_is_down_healthz_stays_200", readyz_follows_postgres)

        def redis_reported_not_required():
            dep = 'herald_dependency_up{service="history",dependency="redis"}'
            wait_until(lambda: http_request(hp, "GET", "/readyz")[0] == 200, 15, "ready to start")
            stack.stop_redis()
            try:
                wait_until(lambda: parse(scrape(hp))[dep] == 0, 15, "redis down seen")
                s, b = http_request(hp, "GET", "/readyz")
                # History serves without Redis (read marks are stored; only live events are lost).
                check(s == 200 and b["redis"] == "down" and b["down"] == [], (s, b))
                s, b = http_request(hp, "GET", "/healthz")
                check(s == 200 and b["redis"] == "down", (s, b))
            finally:
                stack.start_redis()
            wait_until(lambda: parse(scrape(hp))[dep] == 1, 15, "redis up again")
        t.check("redis_down_shows_in_dependency_up_and_readyz_body", redis_reported_not_required)

        def draining_is_not_ready_but_alive():
            svc = stack.spawn("history_d", "herald-history",
                              {"HERALD_HISTORY_PORT": 0, "HERALD_HISTORY_DRAIN_MS": 20000,
                               "HERALD_HISTORY_PG_POOL_SIZE": 1, "HERALD_HISTORY_PG_TIMEOUT_MS": 20000})
            wait_until(lambda: len(listening_ports(svc.proc.pid)) == 1, 15, "history_d listens")
            dp = listening_ports(svc.proc.pid)[0]
            wait_until(lambda: http_request(dp, "GET", "/readyz")[0] == 200, 15, "history_d ready")
            hc = http.client.HTTPConnection("127.0.0.1", dp, timeout=5)  # open before the drain

            def get(path):
                hc.request("GET", path)
                r = hc.getresponse()
                return r.status, json.loads(r.read())
            check(get("/readyz")[0] == 200, "readyz on the kept connection")
            result = []
            with stack.lock_table("notifications"):
                # A request in flight keeps the draining process alive.
                th = threading.Thread(target=lambda: result.append(
                    http_request(dp, "GET", "/notifications", headers=tok("mx"), timeout=30)[0]))
                th.start()
                wait_until(lambda: stack.waiting_on_lock() >= 1, 10, "a query waits on the lock")
                svc.proc.send_signal(signal.SIGTERM)
                wait_until(lambda: get("/readyz")[0] == 503, 10, "readyz 503 while draining")
                s, b = get("/readyz")
                check(b["status"] == "unavailable" and b["down"] == ["draining"], b)
                s, b = get("/healthz")
                check(s == 200 and b["status"] == "ok" and b["draining"] is True, (s, b))
                hc.close()
            th.join(30)
            check(result == [200], result)
            check(svc.terminate(sent=True) == 0, "history_d exits 0 after the drain")
        t.check("while_draining_readyz_is_503_and_healthz_200", draining_is_not_ready_but_alive)
    finally:
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
