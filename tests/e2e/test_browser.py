"""Browser end-to-end test: the demo client (examples/client), built with
Vite and served from a throwaway http.server, driven in headless Chromium by
browser_chat.mjs (playwright-core) against a private Herald stack with two
gateways (herald_stack.Stack from tests/integration).

Every page logs in the way deploy/dev.conf lets a demo do it: history runs
with history.dev_mint (POST /dev/token), the gateways WITHOUT
gateway.dev_user_query, so each socket carries its token in
Sec-WebSocket-Protocol and refreshes it before it expires (alice's tokens
live 12 s). Alice (gateway 1), a second alice tab and bob (gateway 2) chat in "lobby";
a notification POSTed to ingest shows up live with unread badge 1, a click
marks it read and the other tab's badge follows through the live `read`
frame; gateway 2 drains and restarts and its pages reconnect. Screenshots of
every page go to the build directory (HERALD_E2E_OUT_DIR)."""
import fcntl
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from herald_stack import (INGEST_KEY, SRC_DIR, Stack, TestRun, bearer, check, http_get,  # noqa: E402
                          http_request, log, mint_token, post_notification, register_dir, tagged_processes,
                          wait_until)

CLIENT_DIR = os.path.join(SRC_DIR, "examples", "client")
OUT_DIR = os.path.abspath(os.environ.get("HERALD_E2E_OUT_DIR", os.path.join(HERE, "out")))
DIST = os.path.join(OUT_DIR, "client-dist")
NODE_TIMEOUT = 300
# The gateways check tokens (no ?user_id=) and the pages' Origin (set once the
# page server has its port); history mints the tokens for the pages.
GATEWAY_ENV = {"HERALD_GATEWAY_DEV_USER_QUERY": "false"}
ALICE_TTL_S = 12  # short enough that alice's sockets refresh during the test
NPM_ENV = dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1", npm_config_audit="false",
               npm_config_fund="false", npm_config_update_notifier="false")


def run(argv, cwd, timeout=300):
    log(f"$ {' '.join(argv)}  (in {os.path.relpath(cwd, SRC_DIR)})")
    out = subprocess.run(argv, cwd=cwd, env=NPM_ENV, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        err = out.stderr if len(out.stderr) < 4000 else f"{out.stderr[:2500]}\n…\n{out.stderr[-1000:]}"
        raise AssertionError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout[-2000:]}{err}")


def npm_ci(cwd):
    """npm ci unless node_modules already matches package-lock.json."""
    stamp = os.path.join(cwd, "node_modules", ".package-lock.json")
    lock = os.path.join(cwd, "package-lock.json")
    if os.path.exists(stamp) and os.path.getmtime(stamp) >= os.path.getmtime(lock):
        log(f"{os.path.relpath(cwd, SRC_DIR)}/node_modules is up to date")
        return
    run(["npm", "ci", "--no-audit", "--no-fund"], cwd)


class npm_lock:
    """Serializes npm work between concurrent test runs sharing a checkout."""

    def __enter__(self):
        self.f = open(os.path.join(tempfile.gettempdir(), "herald-e2e-npm.lock"), "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def build_client():
    with npm_lock():
        npm_ci(CLIENT_DIR)
        run(["npm", "run", "build", "--", "--outDir", DIST, "--emptyOutDir", "--logLevel", "warn"], CLIENT_DIR)
        npm_ci(HERE)
    check(os.path.exists(os.path.join(DIST, "index.html")), "vite wrote no index.html")


def serve(directory):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=directory))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def main():
    t = TestRun()
    if not t.check("demo client built (npm ci + vite build), playwright-core installed", build_client):
        t.finish()
    os.makedirs(OUT_DIR, exist_ok=True)

    stack = Stack(gateways=2, extra_env={"HERALD_HISTORY_DEV_MINT": "true"})
    srv = serve(DIST)
    GATEWAY_ENV["HERALD_GATEWAY_ALLOWED_ORIGINS"] = f"http://127.0.0.1:{srv.server_address[1]}"
    node = None
    try:
        def gateways_without_dev_user_query():
            for i, port in enumerate(stack.gateway_ports):
                name = f"gateway{i + 1}"
                check(stack.services[name].terminate() == 0, f"{name} exited non-zero on SIGTERM")
                stack.spawn(name, "herald-gateway",
                            dict(GATEWAY_ENV, HERALD_GATEWAY_PORT=port, HERALD_GATEWAY_NODE_ID=f"gw{i + 1}"))
                wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, f"{name} back")
            check(http_request(stack.history_port, "POST", "/dev/token", {"user_id": "x"})[0] == 200,
                  "history mints tokens (history.dev_mint)")

        t.check("gateways run without dev_user_query, history with dev_mint", gateways_without_dev_user_query)
        gw = [f"ws://127.0.0.1:{p}" for p in stack.gateway_ports]
        seed = "Welcome to Herald, bob"

        def seed_bob():
            st, body = post_notification(stack.ingest_port, {"user_id": "bob", "message": seed, "type": "welcome"},
                                         headers=bearer(INGEST_KEY))
            check(st == 202, (st, body))
            wait_until(lambda: http_request(stack.history_port, "GET", "/notifications",
                                            headers=bearer(mint_token("bob")))[1]["items"], 15,
                       "bob's notification in history")

        t.check("seed: a stored notification for bob before his page opens", seed_bob)

        # Chromium's profile dir (playwright's mkdtemp) goes under a dir the
        # harness's reaper removes even if this test is killed.
        node_tmp = tempfile.mkdtemp(prefix="herald-e2e-")
        register_dir(node_tmp)
        env = dict(os.environ, TMPDIR=node_tmp,
                   E2E_CLIENT_URL=f"http://127.0.0.1:{srv.server_address[1]}/",
                   E2E_GATEWAY1=gw[0], E2E_GATEWAY2=gw[1],
                   E2E_HISTORY=f"http://127.0.0.1:{stack.history_port}",
                   E2E_INGEST=f"http://127.0.0.1:{stack.ingest_port}", E2E_INGEST_KEY=INGEST_KEY,
                   E2E_ALICE_TTL=str(ALICE_TTL_S),
                   E2E_OUT_DIR=OUT_DIR, E2E_BOB_SEED=seed)
        errlog = open(os.path.join(OUT_DIR, "browser_chat.stderr.log"), "w")
        node = subprocess.Popen(["node", os.path.join(HERE, "browser_chat.mjs")], cwd=HERE, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, text=True)
        watchdog = threading.Timer(NODE_TIMEOUT, node.kill)
        watchdog.start()
        screenshots = []

        def restart_gateway2():
            svc = stack.services["gateway2"]
            rc = svc.terminate()
            check(rc == 0, f"gateway2 exited {rc} on SIGTERM")
            port = stack.gateway_ports[1]
            # Same port (the pages reconnect to it); spawn() keeps the old one judged.
            stack.spawn("gateway2", "herald-gateway",
                        dict(GATEWAY_ENV, HERALD_GATEWAY_PORT=port, HERALD_GATEWAY_NODE_ID="gw2"))
            wait_until(lambda: http_get(port, "/healthz")[0] == 200, 15, "gateway2 back")

        for line in node.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                log(f"node: {line.rstrip()}")
                continue
            if "step" in msg:
                def result(m=msg):
                    if not m["ok"]:
                        raise AssertionError(m["error"])
                took = f" [{msg['ms'] / 1000:.2f}s in the browser]" if msg["ok"] else ""
                t.check(f"browser: {msg['step']}{took}", result)
            elif "request" in msg:
                ok = msg["request"] == "restart_gateway2" and t.check("gateway 2 drained and restarted",
                                                                      restart_gateway2)
                node.stdin.write("done\n" if ok else "failed\n")
                node.stdin.flush()
            elif "screenshot" in msg:
                screenshots.append(msg["screenshot"])
                log(f"screenshot: {msg['screenshot']}")
        rc = node.wait()
        watchdog.cancel()
        errlog.close()

        def node_exit():
            if rc != 0:
                with open(errlog.name) as f:
                    raise AssertionError(f"browser_chat.mjs exited {rc}\n{f.read()[-4000:]}")

        t.check("browser_chat.mjs exited 0", node_exit)
        t.check("a screenshot of each page", lambda: _assert(len(screenshots) == 3 and all(
            os.path.getsize(s) > 1000 for s in screenshots), screenshots))

        def stored():
            _, inbox = http_request(stack.history_port, "GET", "/notifications",
                                    headers=bearer(mint_token("alice")))
            check(inbox["unread_count"] == 0 and inbox["items"][0]["read_at"], inbox)
            want = {"hello from alice", "hi alice, bob here", "welcome back bob"}
            lobby = bearer(mint_token("reader", rooms=["lobby"]))
            wait_until(lambda: want <= {m["message"] for m in
                                        http_request(stack.history_port, "GET", "/rooms/lobby/messages",
                                                     headers=lobby)[1]["items"]},
                       15, "the chat in history")

        t.check("history agrees: alice's notification read, the chat stored", stored)
    finally:
        if node and node.poll() is None:
            node.kill()
            node.wait()
        # node, playwright and Chromium carry the harness's tag: none may outlive the test.
        if node is not None:
            def browser_left():
                return [p for p in tagged_processes() if p[1] == "node" or p[1].startswith("chrom")]
            t.check("node and Chromium exited",
                    lambda: wait_until(lambda: not browser_left(), 15, "node and Chromium to exit"))
        srv.shutdown()
        srv.server_close()
        t.check("stack stops cleanly (exit 0, no sanitizer report)", stack.stop)
        if node is not None:
            shutil.rmtree(node_tmp, ignore_errors=True)
    t.finish()


def _assert(cond, what):
    if not cond:
        raise AssertionError(what)


if __name__ == "__main__":
    main()
