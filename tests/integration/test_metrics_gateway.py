"""The gateway's GET /metrics, /healthz and /readyz against the real binary
and a private Redis: promtool accepts the text, every name proto/metrics.md
lists for the gateway is there, counters move by exact amounts with traffic,
/readyz is 503 while Redis is down and 200 again after, /healthz stays 200."""
import http.client
import os
import re
import subprocess
import time

from herald_stack import Stack, TestRun, check, check_eq, http_get, wait_until
from herald_ws import WsClient, WsRefused, user_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scrape(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        check(resp.status == 200, "/metrics status", resp.status, body[:500])
        check(resp.getheader("Content-Type", "").startswith("text/plain; version=0.0.4"),
              "content type", resp.getheader("Content-Type"))
        return body
    finally:
        conn.close()


def samples(text):
    """{'name{labels}': value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def listed_names():
    """The names of proto/metrics.md's 'Every service' and 'gateway' tables."""
    with open(os.path.join(ROOT, "proto", "metrics.md")) as f:
        md = f.read()
    names = []
    for section in ("Every service", "gateway"):
        body = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
        names += re.findall(r"^\| `([a-z_]+)` \|", body, re.M)
    return names


def main():
    t = TestRun()
    stack = Stack(gateways=1, services=("gateway",))
    port = stack.gateway_ports[0]
    opened = []

    def ws(path):
        c = WsClient("127.0.0.1", port, path)
        opened.append(c)
        return c

    try:
        def promtool_accepts_every_listed_name():
            text = scrape(port)
            out = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                                 capture_output=True, timeout=30)
            check(out.returncode == 0, "promtool check metrics", out.stdout, out.stderr)
            names = listed_names()
            check(len(names) >= 17, "names parsed from metrics.md", names)
            for name in names:
                check(re.search(rf"^# TYPE {name} ", text, re.M), f"{name} exported", text)
            check('herald_build_info{service="gateway",' in text, "build info", text)
            s = samples(text)
            check_eq(s['herald_dependency_up{service="gateway",dependency="redis"}'], 1, "redis up")
            check_eq(s['herald_ready{service="gateway"}'], 1, "ready")
        t.check("metrics_pass_promtool_and_export_every_listed_name",
                promtool_accepts_every_listed_name)

        def counters_move_with_traffic():
            before = samples(scrape(port))
            a, b = ws(user_path("mx")), ws(user_path("mx"))
            a.recv_type("welcome")
            b.recv_type("welcome")
            try:  # no token: refused before the upgrade, no socket
                ws("/ws")
                check(False, "an upgrade without a token was accepted")
            except WsRefused as e:
                check_eq(e.status, 401, e.body)
            mid = samples(scrape(port))
            check_eq(mid['herald_gateway_connects_total{result="ok"}'],
                     before['herald_gateway_connects_total{result="ok"}'] + 2, "connects ok")
            check_eq(mid['herald_gateway_connects_total{result="unauthorized"}'],
                     before['herald_gateway_connects_total{result="unauthorized"}'] + 1,
                     "connects unauthorized")
            check_eq(mid['herald_gateway_auth_refusals_total{reason="missing"}'],
                     before['herald_gateway_auth_refusals_total{reason="missing"}'] + 1,
                     "refusals by reason")
            check_eq(mid["herald_gateway_connections"], before["herald_gateway_connections"] + 2,
                     "open sockets")
            check(mid["herald_gateway_channels"] >= 1, "mx's channel subscribed", mid)
            n, payloads = 5, []
            for i in range(n):
                p = f'{{"type":"notification","id":"m{i}","n":{i}}}'
                payloads.append(p)
                check_eq(stack.redis.cmd("PUBLISH", "herald:user:mx", p), 1, "one subscriber")
            for c in (a, b):
                for i in range(n):
                    check_eq(c.recv_type("notification")["n"], i, "in order")
            after = samples(scrape(port))
            # Everything was read: nothing waits in a queue (a gauge, not a total).
            check_eq(after["herald_gateway_queued_frames"], 0, "queues empty")
            check_eq(after["herald_gateway_frames_out_total"],
                     mid["herald_gateway_frames_out_total"] + 2 * n, "frames out: N x sockets")
            check_eq(after["herald_gateway_bytes_out_total"],
                     mid["herald_gateway_bytes_out_total"] + 2 * sum(map(len, payloads)),
                     "bytes out")
            for i in range(3):
                a.send_json({"type": "ping", "ref": i})
                a.recv_type("pong")
            a.send_text("not json")
            a.recv_type("error")
            a.send_json({"type": "leave", "room": "nowhere", "ref": "l"})
            a.recv_type("error")
            last = samples(scrape(port))
            for typ, k in (("ping", 3), ("invalid", 1), ("leave", 1), ("join", 0)):
                key = f'herald_gateway_frames_in_total{{type="{typ}"}}'
                check_eq(last[key], after[key] + k, f"frames in {typ}")
            # A notification's id is a UUIDv7 (its created_at): one observation
            # per notification per gateway, at its first write.
            ids = []
            for i in range(2):
                ms = int(time.time() * 1000) - 50
                h = f"{ms:012x}"
                nid = f"{h[:8]}-{h[8:]}-7000-8000-00000000000{i}"
                ids.append(nid)
                frame = ('{"type":"notification","notification":{"id":"%s","user_id":"mx",'
                         '"type":"t","message":"m","data":null,"created_at":"x"}}' % nid)
                stack.redis.cmd("PUBLISH", "herald:user:mx", frame)
            for c in (a, b):
                got = [c.recv_type("notification")["notification"]["id"] for _ in ids]
                check_eq(got, ids, "notifications delivered")
            d = samples(scrape(port))
            check_eq(d["herald_gateway_delivery_delay_seconds_count"],
                     last["herald_gateway_delivery_delay_seconds_count"] + 2, "delay observed")
            check(d["herald_gateway_delivery_delay_seconds_sum"]
                  >= last["herald_gateway_delivery_delay_seconds_sum"] + 0.1, "delay >= 50 ms each")
            a.close_handshake(1000)
            b.close_handshake(1000)
            wait_until(lambda: samples(scrape(port))["herald_gateway_connections"]
                       == before["herald_gateway_connections"], 10, "sockets gone")
            end = samples(scrape(port))
            for code, k in (("1000", 2), ("1008", 0), ("1006", 0)):
                key = f'herald_gateway_disconnects_total{{code="{code}"}}'
                check_eq(end[key], before[key] + k, f"disconnects {code}")
        t.check("counters_move_with_traffic_by_exact_amounts", counters_move_with_traffic)

        def readyz_follows_redis():
            status, body = http_get(port, "/readyz")
            check(status == 200 and body["status"] == "ready", "ready", status, body)
            base = samples(scrape(port))["herald_gateway_redis_reconnects_total"]
            stack.stop_redis()
            try:
                wait_until(lambda: http_get(port, "/readyz")[0] == 503, 10, "503 without Redis")
                status, body = http_get(port, "/readyz")
                check(body["redis"] == "down" and body["status"] == "unavailable", "names redis",
                      body)
                status, body = http_get(port, "/healthz")
                check(status == 200 and body["status"] == "ok" and body["redis"] == "down",
                      "alive without Redis", status, body)
                s = samples(scrape(port))
                check_eq(s['herald_ready{service="gateway"}'], 0, "not ready")
                check_eq(s['herald_dependency_up{service="gateway",dependency="redis"}'], 0,
                         "redis down")
            finally:
                stack.start_redis()
            wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, "ready again")
            check_eq(http_get(port, "/healthz")[0], 200, "healthz")
            s = samples(scrape(port))
            # Both connections (subscriptions and commands) came back once.
            check_eq(s["herald_gateway_redis_reconnects_total"], base + 2, "reconnects")
            check_eq(s['herald_ready{service="gateway"}'], 1, "ready gauge")
        t.check("readyz_503_while_redis_down_healthz_stays_200", readyz_follows_redis)
    finally:
        for c in opened:
            try:
                c.close()
            except OSError:
                pass
        t.check("gateway_exits_cleanly", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
