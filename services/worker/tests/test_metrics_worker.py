"""herald-worker's small HTTP listener (proto/metrics.md): /metrics passes
`promtool check metrics` and lists every name metrics.md gives the worker,
its counters move by exact amounts with traffic, the lag and pending gauges
follow an entry held back by a PostgreSQL outage, and /readyz turns 503 with
PostgreSQL or Redis stopped (and 200 once back) while /healthz stays 200.
Real binaries against a private Redis and PostgreSQL (herald_stack.py)."""
import http.client
import os
import re
import subprocess

from herald_stack import (SRC_DIR, CheckFailed, Stack, TestRun, check, check_eq, http_get,
                          listening_ports, post_notification, wait_until)

NOTIFY = "herald:stream:notifications"


def worker_port(stack):
    svc = stack.services["worker1"]

    def bound():
        ports = listening_ports(svc.proc.pid)
        return ports[0] if len(ports) == 1 else None
    return wait_until(bound, 15, "the worker to listen")


def scrape(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        check_eq(resp.status, 200, "GET /metrics status")
        check(resp.getheader("Content-Type", "").startswith("text/plain; version=0.0.4"),
              "Content-Type", resp.getheader("Content-Type"))
        return body
    finally:
        conn.close()


def series(text):
    """{'name{labels}': value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def value(port, key):
    s = series(scrape(port))
    check(key in s, "series missing:", key)
    return s[key]


def documented_names():
    """The metric names proto/metrics.md lists for every service and for the worker."""
    with open(os.path.join(SRC_DIR, "proto", "metrics.md")) as f:
        text = f.read()
    names = []
    for section in ("Every service", "worker"):
        m = re.search(r"^## " + section + r"\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        check(m is not None, "metrics.md has no section", section)
        names += re.findall(r"^\| `([a-z_]+)` \|", m.group(1), re.M)
    return names


def main():
    t = TestRun()
    stack = Stack(services=("ingest", "worker"))
    try:
        port = worker_port(stack)
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, "worker ready")

        def passes_promtool_and_lists_every_documented_name():
            text = scrape(port)
            out = subprocess.run(["promtool", "check", "metrics"], input=text,
                                 capture_output=True, text=True)
            check(out.returncode == 0, "promtool check metrics:", out.stdout, out.stderr)
            present = {re.sub(r"(_bucket|_sum|_count)$", "", k.split("{")[0])
                       for k in series(text)} | {k.split("{")[0] for k in series(text)}
            names = documented_names()
            check(len(names) > 10, "names parsed from metrics.md", names)
            missing = [n for n in names if n not in present]
            check(not missing, "not exported:", missing)
            s = series(text)
            for table in ("notifications", "room_messages", "receipts"):
                check(f'herald_worker_rows_inserted_total{{table="{table}"}}' in s, "table", table)
            for stream in ("notifications", "room_messages", "dead_letters"):
                check(f'herald_worker_stream_length{{stream="{stream}"}}' in s, "stream", stream)
            check_eq(s['herald_ready{service="worker"}'], 1.0, "herald_ready")
            check_eq(s['herald_dependency_up{service="worker",dependency="redis"}'], 1.0, "redis up")
            check_eq(s['herald_dependency_up{service="worker",dependency="postgres"}'], 1.0, "pg up")
            status, body = http_get(port, "/nope")
            check_eq(status, 404, "unknown path")
            check_eq(body["error"]["code"], "not_found", "404 body")
        t.check("metrics_pass_promtool_and_list_every_documented_name",
                passes_promtool_and_lists_every_documented_name)

        def counters_move_by_exact_amounts():
            n = 7
            before = series(scrape(port))
            for i in range(n):
                status, body = post_notification(stack.ingest_port,
                                                 {"user_id": f"metrics-{i}", "message": f"m{i}"})
                check_eq(status, 202, "POST", body)
            rows = 'herald_worker_rows_inserted_total{table="notifications"}'
            acks = "herald_worker_acks_total"
            want_rows, want_acks = before[rows] + n, before[acks] + n
            wait_until(lambda: (lambda s: s[rows] == want_rows and s[acks] == want_acks)(
                series(scrape(port))), 30, "rows and acks to move by N")
            after = series(scrape(port))
            check_eq(after[rows], want_rows, "rows inserted +N")
            check_eq(after[acks], want_acks, "acks +N")
            batches = after["herald_worker_batches_total"] - before["herald_worker_batches_total"]
            check(1 <= batches <= n, "batches moved", batches)
            check_eq(after["herald_worker_batch_size_count"] - before["herald_worker_batch_size_count"],
                     batches, "one batch size per batch")
            check_eq(after["herald_worker_batch_size_sum"] - before["herald_worker_batch_size_sum"],
                     float(n), "batch sizes sum to N")
            check_eq(after["herald_worker_commit_duration_seconds_count"]
                     - before["herald_worker_commit_duration_seconds_count"], batches,
                     "one commit duration per batch")
            xlen = int(stack.redis.cmd("XLEN", NOTIFY))
            check_eq(after['herald_worker_stream_length{stream="notifications"}'], float(xlen),
                     "stream length is XLEN")
            check_eq(after["herald_worker_pending_entries"], 0.0, "nothing pending")
            check_eq(after["herald_worker_lag_seconds"], 0.0, "caught up: lag 0")
        t.check("counters_move_by_exact_amounts", counters_move_by_exact_amounts)

        def postgres_down_is_not_ready_and_shows_lag():
            rows = 'herald_worker_rows_inserted_total{table="notifications"}'
            before = value(port, rows)
            stack.stop_postgres()
            try:
                wait_until(lambda: http_get(port, "/readyz")[0] == 503, 15, "readyz 503")
                status, body = http_get(port, "/readyz")
                check_eq(body.get("postgres"), "down", "readyz names postgres", body)
                check_eq(body.get("redis"), "up", "readyz: redis still up", body)
                check_eq(http_get(port, "/healthz")[0], 200, "healthz while postgres is down")
                check_eq(value(port, 'herald_dependency_up{service="worker",dependency="postgres"}'),
                         0.0, "postgres down in metrics")
                check_eq(value(port, 'herald_ready{service="worker"}'), 0.0, "herald_ready 0")
                status, body = post_notification(stack.ingest_port,
                                                 {"user_id": "metrics-held", "message": "held"})
                check_eq(status, 202, "POST while postgres is down", body)
                # Held back: delivered to the worker, not committed, so it ages.
                wait_until(lambda: value(port, "herald_worker_pending_entries") == 1.0, 15,
                           "the entry to be pending")
                wait_until(lambda: value(port, "herald_worker_lag_seconds") > 0, 15,
                           "lag to grow above 0")
                check_eq(http_get(port, "/healthz")[0], 200, "healthz still 200")
            finally:
                stack.start_postgres()
            wait_until(lambda: http_get(port, "/readyz")[0] == 200, 30, "readyz 200 again")
            wait_until(lambda: value(port, rows) == before + 1, 30, "the held entry to be stored")
            wait_until(lambda: value(port, "herald_worker_lag_seconds") == 0.0, 15, "lag back to 0")
        t.check("postgres_down_is_not_ready_and_shows_lag", postgres_down_is_not_ready_and_shows_lag)

        def redis_down_is_not_ready_until_restarted():
            stack.stop_redis()
            try:
                wait_until(lambda: http_get(port, "/readyz")[0] == 503, 15, "readyz 503")
                status, body = http_get(port, "/readyz")
                check_eq(body.get("redis"), "down", "readyz names redis", body)
                check_eq(http_get(port, "/healthz")[0], 200, "healthz while redis is down")
                check_eq(value(port, 'herald_dependency_up{service="worker",dependency="redis"}'),
                         0.0, "redis down in metrics")
            finally:
                stack.start_redis()
            wait_until(lambda: http_get(port, "/readyz")[0] == 200, 30, "readyz 200 again")
            check_eq(value(port, 'herald_dependency_up{service="worker",dependency="redis"}'), 1.0,
                     "redis up again")
        t.check("redis_down_is_not_ready_until_restarted", redis_down_is_not_ready_until_restarted)
    finally:
        try:
            stack.stop()
        except CheckFailed as e:
            t.check("services_exit_cleanly", lambda: (_ for _ in ()).throw(e))
    t.finish()


if __name__ == "__main__":
    main()
