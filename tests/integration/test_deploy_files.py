"""The shipped deployment files work: hr_metrics' text passes `promtool check
metrics`; deploy/nginx.conf passes `nginx -t` and, run for real in front of
the real binaries, carries WebSocket, POST and history through its one port;
the Prometheus config and alert rules pass promtool (and the rule tests fire
each alert); every Grafana expression is valid PromQL; the compose file
passes `docker-compose config` with the topology issue 12 asks for; every
metric name the dashboard and the alerts use is listed in proto/metrics.md;
the container health check follows /readyz; a real Prometheus server scrapes
hr_metrics over HTTP."""
import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.parse

from herald_stack import (BIN_DIR, SRC_DIR, Stack, TestRun, bearer, free_port, http_request, ingest_headers,
                          log, mint_token, wait_until)
from herald_ws import WsClient, user_path

DEPLOY = os.path.join(SRC_DIR, "deploy")
PROM = os.path.join(DEPLOY, "prometheus")
DASHBOARD = os.path.join(DEPLOY, "grafana", "dashboards", "herald.json")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


def check_ok(out, what):
    check(out.returncode == 0, f"{what}: exit {out.returncode}\n{out.stdout}{out.stderr}")


def read(path):
    with open(path) as f:
        return f.read()


# -- metrics text --------------------------------------------------------------
def metrics_text_passes_promtool():
    demo = run([os.path.join(BIN_DIR, "tests", "unit", "metrics_demo")])
    check_ok(demo, "metrics_demo")
    for needle in ("herald_build_info{service=\"demo\",version=", "process_open_fds ",
                   "_bucket{route=\"post\",le=\"+Inf\"} 1\n", "herald_demo_batch_size_count 1\n"):
        check(needle in demo.stdout, f"{needle!r} not in the rendered text")
    with tempfile.NamedTemporaryFile("w", suffix=".prom", delete=False) as f:
        f.write(demo.stdout)
    try:
        with open(f.name) as inp:
            check_ok(run(["promtool", "check", "metrics"], stdin=inp), "promtool check metrics")
    finally:
        os.unlink(f.name)
    # The check has teeth: promtool refuses a counter without _total.
    bad = run(["promtool", "check", "metrics"],
              input="# HELP x_count x\n# TYPE x_count counter\nx_count 1\n")
    check(bad.returncode != 0, "promtool accepted a counter without _total")


def prometheus_scrapes_hr_metrics_over_http():
    """A real Prometheus server scrapes metrics_demo --serve (hr_metrics_send_evhttp)
    and reads the counter back through its HTTP API."""
    tmp = tempfile.mkdtemp(prefix="herald-prom-")
    demo = subprocess.Popen([os.path.join(BIN_DIR, "tests", "unit", "metrics_demo"), "--serve"],
                            stdout=subprocess.PIPE, text=True)
    prom = None
    try:
        line = demo.stdout.readline()
        check(line.startswith("port="), f"metrics_demo --serve said {line!r}")
        port = int(line.strip().split("=")[1])
        for _ in range(5):
            check(http_request(port, "GET", "/hit")[0] == 200, "GET /hit")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        check(resp.status == 200, f"/metrics answered {resp.status}")
        check(resp.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8",
              f"Content-Type {resp.getheader('Content-Type')!r}")
        check('herald_demo_requests_total{route="post",code="2xx"} 5\n' in text, text[:2000])

        prom_port = free_port()
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            f.write("global: {scrape_interval: 1s}\n"
                    "scrape_configs:\n"
                    f"  - job_name: demo\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
        prom_log = open(os.path.join(tmp, "prometheus.log"), "w")
        prom = subprocess.Popen(["prometheus", f"--config.file={tmp}/prometheus.yml",
                                 f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=prom_log, stderr=subprocess.STDOUT)

        def query(expr):
            s, body = http_request(prom_port, "GET",
                                   "/api/v1/query?query=" + urllib.parse.quote(expr))
            if s != 200 or body["status"] != "success" or not body["data"]["result"]:
                return None
            return body["data"]["result"]
        try:
            result = wait_until(
                lambda: query('herald_demo_requests_total{route="post",code="2xx"}'), 30,
                "Prometheus to scrape the demo")
        except AssertionError as e:
            raise AssertionError(f"{e}; targets: {http_request(prom_port, 'GET', '/api/v1/targets')}")
        check(result[0]["value"][1] == "5", f"Prometheus read {result}")
        info = query('herald_build_info{service="demo"}')
        check(info and info[0]["value"][1] == "1", f"build info through Prometheus: {info}")
        s, targets = http_request(prom_port, "GET", "/api/v1/targets")
        active = targets["data"]["activeTargets"]
        check(len(active) == 1 and active[0]["health"] == "up" and not active[0]["lastError"],
              f"scrape target: {active}")
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=20)
        demo.terminate()
        rc = demo.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    check(rc == 0, f"metrics_demo --serve exited {rc}")


# -- nginx ---------------------------------------------------------------------
def nginx_local_conf(outdir, port, gateways, ingests, histories, demo_root):
    env = dict(os.environ, NGINX_PORT=str(port), GATEWAYS=" ".join(gateways),
               INGESTS=" ".join(ingests), HISTORIES=" ".join(histories), DEMO_ROOT=demo_root)
    check_ok(run([os.path.join(DEPLOY, "nginx-local.sh"), outdir], env=env), "nginx-local.sh")
    os.chmod(outdir, 0o755)  # nginx's workers drop root


def nginx_test(prefix):
    return run(["nginx", "-t", "-q", "-p", prefix + "/", "-c", os.path.join(prefix, "nginx.conf"),
                "-e", "stderr"])


def nginx_conf_passes_nginx_t():
    d = tempfile.mkdtemp(prefix="herald-nginx-")
    try:
        nginx_local_conf(d, free_port(), ["127.0.0.1:1", "127.0.0.1:2"], ["127.0.0.1:3"],
                         ["127.0.0.1:4"], d)
        check_ok(nginx_test(d), "nginx -t (local upstreams)")
        # The compose include, with the service names (unresolvable here) on loopback.
        compose = read(os.path.join(DEPLOY, "nginx", "upstreams-compose.conf"))
        for name in ("gateway", "ingest", "history"):
            check(f"server {name}:" in compose, f"compose upstreams lack {name}")
        compose = re.sub(r"server (gateway|ingest|history):", "server 127.0.0.1:", compose)
        with open(os.path.join(d, "herald-upstreams.conf"), "w") as f:
            f.write(compose)
        check_ok(nginx_test(d), "nginx -t (compose upstreams)")
        # And it can fail: a missing include is an error.
        os.unlink(os.path.join(d, "herald-upstreams.conf"))
        check(nginx_test(d).returncode != 0, "nginx -t passed without its include")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", text)
    check(m, f"unparsed duration {text!r}")
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, None: n, "m": n * 60}[m.group(2)]


def config_value(text, section, key):
    block = re.search(section + r":\s*\{(.*?)\};", text, re.S)
    check(block, f"no {section} block")
    m = re.search(r"^\s*" + key + r"\s*=\s*(\d+)\s*;", block.group(1), re.M)
    check(m, f"no {section}.{key}")
    return int(m.group(1))


def nginx_ws_timeouts_exceed_gateway_ping_and_idle():
    example = read(os.path.join(DEPLOY, "herald.conf.example"))
    ping = config_value(example, "gateway", "ping_interval_s")
    idle = config_value(example, "gateway", "idle_timeout_s")
    conf = read(os.path.join(DEPLOY, "nginx.conf"))
    ws = re.search(r"location = /ws \{(.*?)\n        \}", conf, re.S)
    check(ws, "no location = /ws in nginx.conf")
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        m = re.search(directive + r"\s+(\S+);", ws.group(1))
        check(m, f"/ws has no {directive}")
        t = seconds(m.group(1))
        check(t > ping and t > idle, f"/ws {directive} {t}s is not above ping {ping}s / idle {idle}s")
    # A location with its own proxy_set_header inherits none of the server's.
    for header in ("Upgrade", "Connection", "Host", "X-Forwarded-For", "X-Request-Id"):
        check(re.search(r"proxy_set_header " + header + r" ", ws.group(1)), f"/ws does not set {header}")


def nginx_serves_ws_post_and_history_on_one_port():
    demo = tempfile.mkdtemp(prefix="herald-demo-")
    with open(os.path.join(demo, "index.html"), "w") as f:
        f.write("<!doctype html><title>herald demo</title>\n")
    os.chmod(demo, 0o755)
    os.chmod(os.path.join(demo, "index.html"), 0o644)
    d = tempfile.mkdtemp(prefix="herald-nginx-")
    stack = Stack(gateways=2)
    nginx = None
    ws = []
    try:
        port = free_port()
        nginx_local_conf(d, port, [f"127.0.0.1:{p}" for p in stack.gateway_ports],
                         [f"127.0.0.1:{stack.ingest_port}"], [f"127.0.0.1:{stack.history_port}"],
                         demo)
        nginx_log = open(os.path.join(d, "nginx.log"), "w")
        nginx = subprocess.Popen(["nginx", "-p", d + "/", "-c", os.path.join(d, "nginx.conf"),
                                  "-e", "stderr", "-g", "daemon off;"],
                                 stdout=nginx_log, stderr=subprocess.STDOUT)
        wait_until(lambda: http_request(port, "GET", "/healthz")[0] == 200, 10, "nginx")

        # Two sockets through the one port land on both gateways (least_conn).
        for _ in range(2):
            c = WsClient("127.0.0.1", port, user_path("alice"))
            ws.append(c)
            check(c.recv_json()["type"] == "welcome", "no welcome through nginx")
        wait_until(lambda: stack.redis.cmd("PUBSUB", "NUMSUB", "herald:user:alice")[1] == 2, 5,
                   "both gateways subscribed to alice")

        status, body = http_request(port, "POST", "/notifications",
                                    {"user_id": "alice", "message": "via nginx"},
                                    ingest_headers({"X-Request-Id": "rid-nginx-1"}))
        check(status == 202, f"POST through nginx: {status} {body}")
        nid = body["id"]
        for c in ws:
            n = c.recv_type("notification")["notification"]
            check(n["id"] == nid, f"socket got {n}")

        status, body = http_request(port, "POST", "/notifications/batch",
                                    {"notifications": [{"user_id": "alice", "message": "b1"}]},
                                    ingest_headers())
        check(status in (200, 202, 207), f"batch through nginx: {status} {body}")

        def inbox_has_it():
            s, b = http_request(port, "GET", "/notifications", headers=bearer(mint_token("alice")))
            return s == 200 and any(i["id"] == nid for i in b["items"])
        wait_until(inbox_has_it, 10, "the notification in history through nginx")
        s, b = http_request(port, "GET", "/notifications/unread-count",
                            headers=bearer(mint_token("alice")))
        check(s == 200, f"unread-count through nginx: {s} {b}")

        for path in ("/metrics", "/metrics/x"):
            s, _ = http_request(port, "GET", path)
            check(s == 403, f"{path} through nginx answered {s}")
        s, page = http_request(port, "GET", "/")
        check(s == 200 and b"herald demo" in page, f"/ answered {s} {page!r}")
        s, page = http_request(port, "GET", "/inbox/deep/link")
        check(s == 200 and b"herald demo" in page, "a client route does not fall back to index.html")
        log_text = read(os.path.join(d, "nginx.log"))
        check("rid=rid-nginx-1" in log_text, "nginx did not keep the caller's X-Request-Id")
    finally:
        for c in ws:
            c.close()
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        stack.stop()
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(demo, ignore_errors=True)


# -- Prometheus and Grafana ----------------------------------------------------
def prometheus_config_and_rules_pass_promtool():
    check_ok(run(["promtool", "check", "config", os.path.join(PROM, "prometheus.yml")]),
             "promtool check config")
    check_ok(run(["promtool", "check", "rules", os.path.join(PROM, "alerts.yml")]),
             "promtool check rules")
    check_ok(run(["promtool", "test", "rules", "alerts_test.yml"], cwd=PROM),
             "promtool test rules")
    text = read(os.path.join(PROM, "alerts.yml"))
    for alert in ("HeraldWorkerLagging", "HeraldDeadLettersGrowing", "HeraldServiceNotReady",
                  "HeraldSlowConsumerSpike", "HeraldRedisUnreachable", "HeraldPostgresUnreachable"):
        check(f"alert: {alert}" in text, f"no {alert} rule")


def dashboard_exprs():
    dash = json.loads(read(DASHBOARD))
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def grafana_dashboard_exprs_are_valid_promql():
    exprs = dashboard_exprs()
    titles = " ".join(t for t, _ in exprs).lower()
    for topic in ("websockets", "frames", "post rate", "post latency", "worker lag",
                  "history latency", "errors", "slow consumers"):
        check(topic in titles, f"the dashboard has no {topic!r} panel")
    # promtool parses PromQL in rule files: one recording rule per expression.
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, (_, e) in enumerate(exprs):
            f.write(f"      - record: dashboard_expr_{i}\n        expr: {json.dumps(e)}\n")
    try:
        check_ok(run(["promtool", "check", "rules", f.name]), "dashboard expressions")
    finally:
        os.unlink(f.name)
    ds = read(os.path.join(DEPLOY, "grafana", "provisioning", "datasources", "prometheus.yml"))
    check("uid: herald-prometheus" in ds and "url: http://prometheus:9090" in ds,
          "the provisioned data source is not the dashboard's")


METRIC_RE = re.compile(r"\b((?:herald|process)_[a-z0-9_]+)")


def listed_metrics():
    text = read(os.path.join(SRC_DIR, "proto", "metrics.md"))
    return set(re.findall(r"^\| `([a-z_][a-z0-9_]*)` \|", text, re.M))


def base_name(name, listed):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in listed:
            return name[: -len(suffix)]
    return name


def used_metrics():
    used = {}
    for title, e in dashboard_exprs():
        for n in METRIC_RE.findall(e):
            used.setdefault(n, f"dashboard panel {title!r}")
    for n in METRIC_RE.findall(read(os.path.join(PROM, "alerts.yml"))):
        used.setdefault(n, "alerts.yml")
    return used


def dashboard_and_alert_metrics_are_in_the_contract():
    listed = listed_metrics()
    check(len(listed) > 30, f"proto/metrics.md lists only {len(listed)} names")
    used = used_metrics()
    check(len(used) > 15, f"only {len(used)} metric names found in dashboard + alerts")
    missing = {n: where for n, where in used.items() if base_name(n, listed) not in listed}
    check(not missing, f"used but not in proto/metrics.md: {missing}")
    # The check has teeth: a name the contract lacks is caught.
    check(base_name("herald_gateway_made_up_total", listed) not in listed, "the check is vacuous")


# -- compose -------------------------------------------------------------------
def compose_file_passes_docker_compose_config():
    out = run(["docker-compose", "-f", os.path.join(SRC_DIR, "docker-compose.yml"), "config"],
              cwd=SRC_DIR)
    check_ok(out, "docker-compose config")
    import yaml  # docker-compose is Python and depends on PyYAML
    cfg = yaml.safe_load(out.stdout)
    svcs = cfg["services"]
    want = {"redis": 1, "postgres": 1, "migrate": 1, "gateway": 3, "ingest": 2, "worker": 2,
            "history": 2, "nginx": 1, "prometheus": 1, "grafana": 1}
    for name, replicas in want.items():
        check(name in svcs, f"no {name} service")
        got = svcs[name].get("deploy", {}).get("replicas", 1)
        check(got == replicas, f"{name}: {got} replicas, want {replicas}")
        check("restart" in svcs[name], f"{name} has no restart policy")
    check("--appendonly" in svcs["redis"]["command"], "redis without AOF")
    check(svcs["nginx"]["ports"][0]["published"] in (8080, "8080"), "nginx is not on :8080")
    for name in ("gateway", "ingest", "worker", "history"):
        s = svcs[name]
        check("container_name" not in s and "ports" not in s,
              f"{name} has a fixed name or host port: it cannot --scale")
        conds = {d: v.get("condition") for d, v in s["depends_on"].items()}
        check(conds and all(c in ("service_healthy", "service_completed_successfully")
                            for c in conds.values()), f"{name} depends_on {conds}")
        check(s["environment"].get("HERALD_HEALTH_PORT"), f"{name} has no HERALD_HEALTH_PORT")
    for name in ("redis", "postgres", "prometheus", "grafana"):
        check("healthcheck" in svcs[name], f"{name} has no health check")
    docker = read(os.path.join(DEPLOY, "Dockerfile"))
    check(re.search(r"^FROM debian:bookworm AS build$", docker, re.M), "no bookworm build stage")
    check(re.search(r"^FROM debian:bookworm-slim AS runtime$", docker, re.M), "no slim runtime")
    check(re.search(r"^USER herald", docker, re.M) and "HEALTHCHECK" in docker,
          "runtime image runs as root or has no HEALTHCHECK")
    for lib in ("libwebsockets17", "libwebsockets-evlib-uv", "libhiredis0.14", "libevent-2.1-7",
                "libpq5", "libcjson1", "libconfig9", "libuv1"):
        check(re.search(r"FROM debian:bookworm-slim AS runtime\n(?:.*\n){0,4}.*" + re.escape(lib),
                        docker), f"runtime stage lacks {lib}")
    # The compose bind mounts point at files that exist.
    for rel in ("deploy/prometheus/prometheus.yml", "deploy/prometheus/alerts.yml",
                "deploy/grafana/provisioning/dashboards/herald.yml",
                "deploy/grafana/dashboards/herald.json"):
        check(os.path.isfile(os.path.join(SRC_DIR, rel)), f"{rel} missing")


# -- container health check ----------------------------------------------------
def healthcheck_follows_readyz():
    answer = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(answer["status"] if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    script = os.path.join(DEPLOY, "healthcheck.sh")
    env = dict(os.environ, HERALD_HEALTH_PORT=str(srv.server_address[1]))
    try:
        check(run([script], env=env).returncode == 0, "healthy /readyz judged unhealthy")
        answer["status"] = 503
        check(run([script], env=env).returncode != 0, "503 /readyz judged healthy")
    finally:
        srv.shutdown()
        srv.server_close()
    env["HERALD_HEALTH_PORT"] = str(free_port())
    check(run([script], env=env).returncode != 0, "nothing listening judged healthy")


def main():
    t = TestRun()
    for tool in ("promtool", "nginx", "docker-compose"):
        if shutil.which(tool) is None:
            log(f"{tool} is missing: run scripts/deps.sh test")
    t.check("metrics_text_passes_promtool_check_metrics", metrics_text_passes_promtool)
    t.check("prometheus_scrapes_hr_metrics_over_http", prometheus_scrapes_hr_metrics_over_http)
    t.check("nginx_conf_passes_nginx_t_with_local_and_compose_upstreams", nginx_conf_passes_nginx_t)
    t.check("nginx_ws_timeouts_exceed_gateway_ping_and_idle_and_headers_are_passed",
            nginx_ws_timeouts_exceed_gateway_ping_and_idle)
    t.check("prometheus_config_and_alert_rules_pass_promtool",
            prometheus_config_and_rules_pass_promtool)
    t.check("grafana_dashboard_exprs_are_valid_promql", grafana_dashboard_exprs_are_valid_promql)
    t.check("dashboard_and_alert_metrics_are_listed_in_proto_metrics_md",
            dashboard_and_alert_metrics_are_in_the_contract)
    t.check("compose_file_passes_docker_compose_config_with_the_topology",
            compose_file_passes_docker_compose_config)
    t.check("container_healthcheck_follows_readyz", healthcheck_follows_readyz)
    t.check("nginx_serves_ws_post_and_history_on_one_port",
            nginx_serves_ws_post_and_history_on_one_port)
    t.finish()


if __name__ == "__main__":
    main()
