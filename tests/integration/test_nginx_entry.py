"""End to end through the one entry port: nginx with deploy/nginx.conf (and
the upstreams deploy/nginx-local.sh writes, as make up does) in front of a
harness stack of three gateways, ingest and history. A WebSocket through
nginx gets a POST made through nginx (with the ingest key), the inbox read
through nginx (with a token) lists it, and every route lands on the service
proto/ says: nginx's access log names the upstream that answered each
request (ingest for POST /notifications, /notifications/batch and /users/…;
history for the reads, marks, rooms and POST /dev/token; a gateway for /ws;
nothing for /metrics, /readyz, /docs/ and the demo)."""
import os
import re
import shutil
import subprocess
import tempfile

from herald_stack import (INGEST_KEY, SRC_DIR, Stack, TestRun, auth_section, bearer, check,
                          check_eq, free_port, http_request, listening_ports, mint_token,
                          register_dir, register_pid, wait_until)
from herald_ws import WsClient

DEPLOY = os.path.join(SRC_DIR, "deploy")
DEMO_MARK = "herald-demo-for-test_nginx_entry"
DOCS_MARK = "herald-docs-for-test_nginx_entry"


class Nginx:
    def __init__(self, tmp, stack):
        self.dir = os.path.join(tmp, "nginx")
        demo = os.path.join(tmp, "demo")
        site = os.path.join(tmp, "site")
        os.makedirs(demo)
        os.makedirs(os.path.join(site, "docs"))
        with open(os.path.join(demo, "index.html"), "w") as f:
            f.write(f"<!doctype html><title>{DEMO_MARK}</title>\n")
        with open(os.path.join(site, "docs", "index.html"), "w") as f:
            f.write(f"<!doctype html><title>{DOCS_MARK}</title>\n")
        for root, dirs, files in os.walk(tmp):  # nginx's workers run as nobody
            os.chmod(root, 0o755)
            for n in files:
                os.chmod(os.path.join(root, n), 0o644)
        self.port = None
        self.proc = None
        for attempt in range(5):  # the port is chosen before nginx binds it
            self.port = free_port()
            env = dict(os.environ, NGINX_PORT=str(self.port),
                       GATEWAYS=" ".join(f"127.0.0.1:{p}" for p in stack.gateway_ports),
                       INGESTS=f"127.0.0.1:{stack.ingest_port}",
                       HISTORIES=f"127.0.0.1:{stack.history_port}", DEMO_ROOT=demo, SITE_ROOT=site)
            out = subprocess.run([os.path.join(DEPLOY, "nginx-local.sh"), self.dir], env=env,
                                 capture_output=True, text=True, timeout=30)
            check(out.returncode == 0, "nginx-local.sh", out.stdout, out.stderr)
            os.chmod(self.dir, 0o755)
            self.log = open(os.path.join(self.dir, "access.log"), "w")
            self.proc = subprocess.Popen(
                ["nginx", "-p", self.dir + "/", "-c", os.path.join(self.dir, "nginx.conf"),
                 "-e", "stderr", "-g", "daemon off;"], stdout=self.log, stderr=subprocess.STDOUT)
            register_pid(self.proc.pid)
            wait_until(lambda: self.proc.poll() is not None or self.port in listening_ports(self.proc.pid),
                       15, "nginx to listen")
            if self.proc.poll() is None:
                return
            self.log.close()
            check(attempt < 4, "nginx did not start", self.log_text())

    def log_text(self):
        with open(os.path.join(self.dir, "access.log"), errors="replace") as f:
            return f.read()

    def upstream_of(self, method, path):
        """The upstream port of the last logged `method path` request, "-" for
        none (nginx answered itself), or None while it is not logged yet."""
        found = None
        for m in re.finditer(r'"(\S+) (\S+) HTTP/1\.1" (\d+) .* upstream=(\S+) ', self.log_text()):
            if m.group(1) == method and m.group(2) == path:
                up = m.group(4)
                found = up if up == "-" else int(up.rsplit(":", 1)[1])
        return found

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.log.close()


def one_port_carries_everything():
    tmp = tempfile.mkdtemp(prefix="herald-nginx-entry-")
    register_dir(tmp)
    # dev_mint: POST /dev/token exists once history knows it (proto/auth.md).
    stack = Stack(gateways=3, workers=1, config=auth_section() + "history: { dev_mint = true; };\n")
    nginx = None
    socks = []
    try:
        nginx = Nginx(tmp, stack)
        port = nginx.port
        ingest, history, gateways = stack.ingest_port, stack.history_port, set(stack.gateway_ports)

        def routed(method, path, want):
            got = wait_until(lambda: nginx.upstream_of(method, path), 10, f"{method} {path} logged")
            if want == "gateway":
                check(got in gateways, f"{method} {path} went to {got}, not a gateway", gateways)
            else:
                check_eq(got, want, f"{method} {path}: the upstream that answered")

        token = mint_token("alice", rooms=["lobby", "team:*"])
        user = bearer(token)
        key = bearer(INGEST_KEY)

        # Three sockets through the one port: least_conn puts one on each gateway.
        for _ in range(3):
            c = WsClient("127.0.0.1", port, "/ws?user_id=alice&token=" + token)
            socks.append(c)
            check_eq(c.recv_type("welcome")["user_id"], "alice", "welcome through nginx")
        wait_until(lambda: stack.redis.cmd("PUBSUB", "NUMSUB", "herald:user:alice")[1] == 3, 10,
                   "all three gateways serve alice")

        s, body = http_request(port, "POST", "/notifications",
                               {"user_id": "alice", "message": "through nginx"},
                               dict(key, **{"X-Request-Id": "rid-entry-1"}))
        check_eq(s, 202, "POST /notifications through nginx", body)
        nid = body["id"]
        routed("POST", "/notifications", ingest)
        for c in socks:
            check_eq(c.recv_type("notification")["notification"]["id"], nid, "the socket's frame")
        check("rid=rid-entry-1" in nginx.log_text(), "nginx keeps the caller's X-Request-Id")

        s, body = http_request(port, "POST", "/notifications/batch",
                               {"notifications": [{"user_id": "alice", "message": "b1"}]}, key)
        check(s in (200, 202, 207), "batch through nginx", s, body)
        routed("POST", "/notifications/batch", ingest)

        def inbox_has_it():
            s, b = http_request(port, "GET", "/notifications?user_id=alice", headers=user)
            return s == 200 and any(i["id"] == nid for i in b["items"])
        wait_until(inbox_has_it, 20, "the notification in the inbox through nginx")
        routed("GET", "/notifications?user_id=alice", history)

        for method, path in (("GET", "/notifications/unread-count?user_id=alice"),
                             ("GET", f"/notifications/{nid}?user_id=alice"),
                             ("POST", f"/notifications/{nid}/read?user_id=alice"),
                             ("POST", "/notifications/read-all?user_id=alice"),
                             ("GET", "/rooms/lobby/messages")):
            s, b = http_request(port, method, path, headers=user)
            check_eq(s, 200, f"{method} {path} through nginx", b)
            routed(method, path, history)
        s, _ = http_request(port, "OPTIONS", "/notifications",
                            headers={"Origin": "http://example.test",
                                     "Access-Control-Request-Method": "GET"})
        routed("OPTIONS", "/notifications", history)

        # Routed, whichever branch answers them yet (history's dev mint,
        # ingest's revocation routes): the upstream is the proof.
        s, b = http_request(port, "POST", "/dev/token", {"user_id": "bob", "rooms": ["lobby"],
                                                         "ttl_s": 60})
        check(isinstance(b, dict), "POST /dev/token answered JSON", s, b)
        routed("POST", "/dev/token", history)
        s, b = http_request(port, "POST", "/users/mallory/disconnect", None, key)
        check(isinstance(b, dict), "POST /users/…/disconnect answered JSON", s, b)
        routed("POST", "/users/mallory/disconnect", ingest)

        for path in ("/metrics", "/metrics/x", "/readyz"):
            s, _ = http_request(port, "GET", path)
            check_eq(s, 403, f"{path} through nginx")
            routed("GET", path, "-")
        s, page = http_request(port, "GET", "/docs/")
        check(s == 200 and DOCS_MARK.encode() in page, "/docs/ serves the reference", s, page)
        s, _ = http_request(port, "GET", "/docs")
        check_eq(s, 301, "/docs redirects to /docs/")
        for path in ("/", "/inbox/deep/link"):
            s, page = http_request(port, "GET", path)
            check(s == 200 and DEMO_MARK.encode() in page, f"{path} serves the demo", s, page)
            routed("GET", path, "-")
        for c in socks:
            c.close()
        socks.clear()
        # nginx logs the upgrade with the token's value replaced, never the token.
        routed("GET", "/ws?user_id=alice&token=<redacted>", "gateway")
        check(token not in nginx.log_text(), "a token in nginx's access log")
    finally:
        for c in socks:
            c.close()
        if nginx is not None:
            nginx.stop()
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    t = TestRun()
    t.check("nginx_one_port_carries_ws_post_and_history_to_the_right_service",
            one_port_carries_everything)
    t.finish()


if __name__ == "__main__":
    main()
