"""A real Prometheus server (Debian's prometheus package, on a private port
with its data in a temp dir, stopped by pid) scrapes a running stack's
services, the way deploy/prometheus/prometheus.yml does in compose (one job
per service, the alert rules of deploy/prometheus/alerts.yml loaded), and
the Herald metrics are read back through Prometheus's HTTP API
(/api/v1/query) after traffic: the rows the worker inserted, the frames the
gateways wrote and the requests history answered, each equal to what the
service itself says on /metrics."""
import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse

from herald_stack import (INGEST_KEY, SRC_DIR, Stack, TestRun, bearer, check, check_eq,
                          free_port, http_request, listening_ports, log, mint_token, register_dir,
                          register_pid, wait_until)
from herald_ws import WsClient

ALERTS = os.path.join(SRC_DIR, "deploy", "prometheus", "alerts.yml")
N = 7  # notifications sent


def scrape_text(port):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def sample(text, name, labels=""):
    """The value of one series in exposition text (labels: the exact {…} text), or None."""
    want = name + labels + " "
    for line in text.splitlines():
        if line.startswith(want):
            return float(line[len(want):].split()[0])
    return None


class Prometheus:
    def __init__(self, tmp, jobs):
        """jobs: job name -> list of 127.0.0.1 ports."""
        self.tmp = tmp
        self.port = None
        shutil.copy(ALERTS, os.path.join(tmp, "alerts.yml"))
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            f.write("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                    "rule_files: [alerts.yml]\nscrape_configs:\n")
            for job, ports in jobs.items():
                targets = json.dumps([f"127.0.0.1:{p}" for p in ports])
                f.write(f"  - job_name: {job}\n    static_configs: [{{targets: {targets}}}]\n")
        self.log = open(os.path.join(tmp, "prometheus.log"), "w")
        self.proc = None
        for attempt in range(5):  # the port is chosen before prometheus binds it
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={tmp}/prometheus.yml",
                 f"--storage.tsdb.path={tmp}/data", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=self.log, stderr=subprocess.STDOUT)
            register_pid(self.proc.pid)
            try:
                wait_until(lambda: self.proc.poll() is not None or
                           self.port in listening_ports(self.proc.pid), 30, "prometheus to listen")
            except AssertionError:
                self.stop()
                raise
            if self.proc.poll() is None:
                break
            self.proc.wait()
            check(attempt < 4, "prometheus did not start", self.log_text()[-2000:])
        wait_until(lambda: self.get("/-/ready")[0] == 200, 30, "prometheus ready")

    def get(self, path):
        return http_request(self.port, "GET", path)

    def query(self, expr):
        """The result vector of an instant query ([] if none)."""
        s, body = self.get("/api/v1/query?query=" + urllib.parse.quote(expr))
        check(s == 200 and body["status"] == "success", "query", expr, s, body)
        return body["data"]["result"]

    def value(self, expr):
        r = self.query(expr)
        return float(r[0]["value"][1]) if len(r) == 1 else None

    def targets(self):
        return self.get("/api/v1/targets")[1]["data"]["activeTargets"]

    def log_text(self):
        self.log.flush()
        with open(os.path.join(self.tmp, "prometheus.log"), errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def prometheus_reads_herald_metrics_back():
    tmp = tempfile.mkdtemp(prefix="herald-prom-")
    register_dir(tmp)
    stack = Stack(gateways=2, workers=1)
    prom = None
    socks = []
    try:
        worker_ports = wait_until(lambda: listening_ports(stack.services["worker1"].proc.pid), 15,
                                  "the worker's /metrics listener")
        check(len(worker_ports) == 1, "the worker's /metrics port", worker_ports)
        jobs = {"herald-gateway": stack.gateway_ports, "herald-history": [stack.history_port],
                "herald-worker": worker_ports}
        # Ingest's /metrics arrives with the "ops" branch: scraped once it answers.
        ingest_has_metrics = scrape_text(stack.ingest_port)[0] == 200
        if ingest_has_metrics:
            jobs["herald-ingest"] = [stack.ingest_port]
        else:
            log("ingest has no /metrics in this tree: not scraped")
        prom = Prometheus(tmp, jobs)

        token = mint_token("alice", rooms=["lobby"])
        for port in stack.gateway_ports:  # one socket on each gateway
            c = WsClient("127.0.0.1", port, "/ws?user_id=alice&token=" + token)
            socks.append(c)
            check_eq(c.recv_type("welcome")["user_id"], "alice", "welcome")
        ids = []
        for i in range(N):
            s, body = http_request(stack.ingest_port, "POST", "/notifications",
                                   {"user_id": "alice", "message": f"scrape {i}"}, bearer(INGEST_KEY))
            check_eq(s, 202, "POST", body)
            ids.append(body["id"])
        for c in socks:
            got = [c.recv_type("notification")["notification"]["id"] for _ in range(N)]
            check_eq(got, ids, "every socket got every notification")
        wait_until(lambda: stack.psql("SELECT count(*) FROM notifications") == str(N), 20,
                   "the worker to insert them")
        s, body = http_request(stack.history_port, "GET", "/notifications?user_id=alice",
                               headers=bearer(token))
        check_eq(s, 200, "inbox", body)
        check_eq(len(body["items"]), N, "inbox items")

        # What each service says itself, now that the traffic is over.
        frames = 0
        for port in stack.gateway_ports:
            st, text = scrape_text(port)
            v = sample(text, "herald_gateway_frames_out_total")
            check(st == 200 and v is not None and v >= N + 1, "gateway frames out", port, v)
            frames += v
        st, text = scrape_text(worker_ports[0])
        check_eq(sample(text, "herald_worker_rows_inserted_total", '{table="notifications"}'), N,
                 "the worker's own count")

        def prom_has(expr, want):
            def same():
                v = prom.value(expr)
                return v if v == want else None
            try:
                return wait_until(same, 30, f"Prometheus to read {expr} = {want}")
            except AssertionError as e:
                raise AssertionError(f"{e}; query gives {prom.query(expr)}; "
                                     f"targets {prom.targets()}") from None

        prom_has('herald_worker_rows_inserted_total{job="herald-worker",table="notifications"}', N)
        prom_has('sum(herald_gateway_frames_out_total{job="herald-gateway"})', frames)
        prom_has('count(herald_build_info{job="herald-gateway",service="gateway"})', 2)
        # The inbox read above counts once a scrape of history has come after it.
        def inbox_counted():
            inbox = prom.query('herald_history_requests_total{job="herald-history",route="inbox"}')
            return inbox if inbox and sum(float(r["value"][1]) for r in inbox) >= 1 else None
        wait_until(inbox_counted, 30, "Prometheus to count history's inbox request")
        if ingest_has_metrics:
            prom_has('herald_ingest_notifications_accepted_total{job="herald-ingest"}', N)

        # Every target is up with no scrape error, and the alert rules load.
        active = prom.targets()
        check_eq(len(active), sum(len(p) for p in jobs.values()), "targets", active)
        bad = [(t["labels"], t["health"], t["lastError"]) for t in active
               if t["health"] != "up" or t["lastError"]]
        check(not bad, "every target is up", bad)
        groups = prom.get("/api/v1/rules")[1]["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        check(len(rules) >= 6 and all(r["health"] == "ok" for r in rules),
              "alerts.yml loaded and evaluated", [(r["name"], r["health"]) for r in rules])
    finally:
        for c in socks:
            c.close()
        if prom is not None:
            prom.stop()
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    t = TestRun()
    if shutil.which("prometheus") is None:
        log("prometheus is missing: run scripts/deps.sh test")
    t.check("prometheus_scrapes_the_stack_and_reads_herald_metrics_back",
            prometheus_reads_herald_metrics_back)
    t.finish()


if __name__ == "__main__":
    main()
