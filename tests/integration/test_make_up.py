"""`make up` itself: runs scripts/herald-up.sh on private ports with its data in
a temp dir and checks what it promises: nginx on one port in front of three
gateways, ingest and history, two workers; every URL and command it prints
works (the demo and the docs through nginx, the node listener, the curl POST
with the printed ingest key, the inbox with the printed token); the printed
token is a real dev-1 token for alice; a service killed with SIGKILL is
restarted with a log line while the rest keep running; SIGINT (Ctrl-C)
stops everything, and a second run started right after that SIGINT (before
the first has finished stopping) comes up with its own Redis and PostgreSQL;
a run after one killed with SIGKILL stops the servers that one left and comes
up; at the end no process or port is left."""
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.parse

from herald_promises import CheckFailed, Checks, check, request
from herald_stack import (BIN_DIR, SRC_DIR, Redis, TestRun, free_port, listening_ports,
                          mint_token, register_dir, wait_until)
from herald_ws import WsClient

SCRIPT = os.path.join(SRC_DIR, "scripts", "herald-up.sh")
DEV_CONF = os.path.join(SRC_DIR, "deploy", "dev.conf")
MARK = "herald-demo-page-for-test_make_up"
DOCS_MARK = "herald-docs-page-for-test_make_up"
DEV_INGEST_KEY = "dev-ingest-key-change-me"
PORT_NAMES = ("NGINX_PORT", "REDIS_PORT", "PG_PORT", "INGEST_PORT", "HISTORY_PORT", "GATEWAY1_PORT",
              "GATEWAY2_PORT", "GATEWAY3_PORT", "WORKER1_PORT", "WORKER2_PORT")

# Checks known to fail against the current code (name → why); printed as skipped.
EXPECTED_FAILURES = {}


class Lines:
    """Collects a pipe's lines on a thread so reading never blocks the test."""

    def __init__(self, pipe):
        self.lines = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self.thread.start()

    def _pump(self, pipe):
        for raw in iter(pipe.readline, b""):
            with self.lock:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
        pipe.close()

    def text(self):
        with self.lock:
            return "\n".join(self.lines)


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    return st[st.rindex(")") + 2:].split()


def session_pids(sid):
    """Live (non-zombie) processes of session sid."""
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = stat_fields(d)
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            out.add(int(d))
    return out


def alive(pid):
    try:
        return stat_fields(pid)[0] not in ("Z", "X")
    except OSError:
        return False


def cwd_under(pid, top):
    """redis-server runs in var/, postgres in var/pg: a recycled pid does not."""
    try:
        return os.readlink(f"/proc/{pid}/cwd").startswith(top + os.sep)
    except OSError:
        return False


def listener_of(port, pids):
    """The pid among pids that listens on port, or None."""
    for p in pids:
        if port in listening_ports(p):
            return p
    return None


def listening(port):
    import socket
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def dev_token(sub):
    """A token signed with deploy/dev.conf's dev-1 key (what herald-token mints)."""
    with open(DEV_CONF) as f:
        secret = re.search(r'kid = "dev-1"; alg = "HS256"; secret = "([^"]+)"', f.read())
    check(secret is not None, "deploy/dev.conf has the dev-1 HS256 key")
    return mint_token(sub, rooms=["lobby"], secret=secret.group(1), kid="dev-1")


def ws_path(sub):
    """/ws for sub: a token, and user_id for a gateway that predates tokens
    (with a token, its sub wins: proto/auth.md)."""
    return f"/ws?user_id={sub}&token={dev_token(sub)}"


def b64url_json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class Up:
    """One run of herald-up.sh in its own session (as a terminal's would be)."""

    def __init__(self, env):
        self.proc = subprocess.Popen(["bash", SCRIPT, BIN_DIR], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.out = Lines(self.proc.stdout)
        self.seen = set()  # every process of its session observed while it ran

    def text(self):
        return self.out.text()

    def observe(self):
        self.seen.update(session_pids(self.proc.pid))

    def wait_up(self, timeout=150):
        def up():
            if self.proc.poll() is not None:
                raise CheckFailed(f"herald-up.sh exited {self.proc.returncode}:\n{self.text()}")
            return re.search(r"Direct ports, for debugging.*\n(?:.*\n)*?\s+redis\s+127\.0\.0\.1:\d+"
                             r"\s+postgresql 127\.0\.0\.1:\d+", self.text())
        try:
            wait_until(up, timeout, "the 'Herald is up' message")
        except CheckFailed as e:
            raise CheckFailed(f"{e}\n{self.text()[-3000:]}") from None
        self.observe()

    def block(self):
        text = self.text()
        return text[text.rindex("Herald is up"):]


def check_urls_and_commands(run, up, ports, extra):
    block = up.block()
    urls = sorted(set(re.findall(r"(?:https?|ws)://[^\s'\"]+", block)))
    nginx = ports["NGINX_PORT"]
    token = re.search(r"alice's token\s+(\S+)", block)
    check(token is not None, "the token is printed", block)
    token = token.group(1)

    def credentials_are_real():
        key = re.search(r"ingest key\s+(\S+)", block)
        check(key is not None and key.group(1) == DEV_INGEST_KEY, "the dev ingest key", block)
        with open(DEV_CONF) as f:
            conf = f.read()
        want = re.search(r'sha256 = "([0-9a-f]{64})"', conf)
        check(want and hashlib.sha256(key.group(1).encode()).hexdigest() == want.group(1),
              "the printed key is the one deploy/dev.conf's ingest_keys hash", want)
        secret = re.search(r'kid = "dev-1"; alg = "HS256"; secret = "([^"]+)"', conf)
        check(secret is not None, "deploy/dev.conf has the dev-1 HS256 key")
        h, c, s = token.split(".")
        sig = hmac.new(secret.group(1).encode(), f"{h}.{c}".encode(), hashlib.sha256).digest()
        check(base64.urlsafe_b64encode(sig).rstrip(b"=").decode() == s, "signed with dev-1's secret")
        header, claims = b64url_json(h), b64url_json(c)
        check(header.get("kid") == "dev-1" and header.get("alg") == "HS256", "header", header)
        check(claims.get("sub") == "alice" and claims.get("rooms") == ["lobby", "team:*"]
              and claims["exp"] - claims["iat"] == 3600, "claims: alice, lobby + team:*, 1 h", claims)
    run("printed_ingest_key_and_token_are_dev_conf_credentials", credentials_are_real)

    def every_url_answers():
        by_port = {}
        for u in urls:
            p = urllib.parse.urlsplit(u)
            check(p.hostname == "127.0.0.1", "loopback only", u)
            by_port.setdefault(p.port, []).append(p)
        want = {ports[k] for k in ("NGINX_PORT", "INGEST_PORT", "HISTORY_PORT", "GATEWAY1_PORT",
                                   "GATEWAY2_PORT", "GATEWAY3_PORT", "WORKER1_PORT", "WORKER2_PORT")}
        check(set(by_port) == want, "the printed URLs: nginx and each service's direct port",
              urls, ports)
        gateways = (ports["GATEWAY1_PORT"], ports["GATEWAY2_PORT"], ports["GATEWAY3_PORT"])
        for port, parts in by_port.items():
            for p in parts:
                path = p.path + ("?" + p.query if p.query else "")
                if port == nginx and p.scheme == "ws":
                    check(p.path == "/ws", "a ws URL on nginx's port is /ws", p.geturl())
                elif port == nginx and p.path.startswith("/docs"):
                    s, _, body = request(port, "GET", path)
                    check(s == 200 and DOCS_MARK.encode() in body, "/docs/ through nginx", s, body)
                elif port == nginx and p.path == "/notifications":
                    continue  # the printed curl commands (next check)
                elif port == nginx:
                    s, _, body = request(port, "GET", path)
                    check(s == 200 and MARK.encode() in body, "the demo through nginx", p.geturl(), s)
                    q = urllib.parse.parse_qs(p.query)
                    if q:
                        check(q.get("gateway") == [f"ws://127.0.0.1:{nginx}"]
                              and q.get("history") == [f"http://127.0.0.1:{nginx}"],
                              "the demo is pointed at nginx", q)
                elif port in gateways:
                    check(p.scheme == "ws" and p.path == "/ws", "gateway URL", p.geturl())
                    # user_id for a gateway without tokens; a token's sub wins (proto/auth.md).
                    c = WsClient("127.0.0.1", port, "/ws?token=" + token)
                    try:
                        check(c.recv_type("welcome")["user_id"] == "alice", "welcome", p.geturl())
                    finally:
                        c.close()
                elif port in (ports["WORKER1_PORT"], ports["WORKER2_PORT"]):
                    s, _, body = request(port, "GET", path)
                    check(s == 200 and b"herald_worker_" in body, "worker /metrics", p.geturl(), s)
                else:  # ingest, history: the base URL; both answer /healthz
                    s, _, _ = request(port, "GET", "/healthz")
                    check(s == 200, "direct /healthz", p.geturl(), s)
    run("every_printed_url_answers", every_url_answers)

    def printed_commands_work_through_nginx():
        lines = block.splitlines()
        listen = next(ln.strip() for ln in lines if ln.strip().startswith("node "))
        i = next(i for i, ln in enumerate(lines) if ln.startswith("Send her a notification"))
        send = (lines[i + 1] + "\n" + lines[i + 2]).strip()
        i = next(i for i, ln in enumerate(lines) if ln.startswith("Read her inbox"))
        inbox = lines[i + 1].strip()
        for cmd in (listen, send, inbox):
            used = {int(m) for m in re.findall(r"127\.0\.0\.1:(\d+)", cmd)}
            check(used == {nginx}, "the command goes through nginx's port only", cmd)
        check(f"Bearer {DEV_INGEST_KEY}" in send, "the POST sends the ingest key", send)
        check(f"Bearer {token}" in inbox, "the inbox read sends the token", inbox)
        check(f"token={token}" in listen, "the socket sends the token", listen)
        node = subprocess.Popen(["bash", "-c", "exec " + listen], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        extra.append(node)
        heard = Lines(node.stdout)
        wait_until(lambda: '"type":"welcome"' in heard.text(), 20, "the node listener's welcome")
        sent = subprocess.run(["bash", "-c", send], capture_output=True, text=True, timeout=20)
        check(sent.returncode == 0, "the curl POST runs", sent.stdout, sent.stderr)
        nid = re.search(r'"id":"([0-9a-f-]{36})"', sent.stdout)
        check(nid is not None, "it answers with an id", sent.stdout)
        nid = nid.group(1)
        wait_until(lambda: nid in heard.text(), 10, "the node listener prints the notification")
        wait_until(lambda: nid in subprocess.run(["bash", "-c", inbox], capture_output=True,
                                                 text=True, timeout=20).stdout,
                   20, "the inbox curl lists it")
        node.send_signal(signal.SIGTERM)
        node.wait(10)
    run("printed_listen_send_and_inbox_commands_work_through_nginx",
        printed_commands_work_through_nginx)


def check_topology(run, up, ports):
    def three_gateways_behind_nginx_and_two_workers():
        redis = Redis(ports["REDIS_PORT"])
        socks = []
        try:
            # least_conn spreads sockets held open: three land on three gateways,
            # each of which subscribes carol's channel once.
            for _ in range(3):
                c = WsClient("127.0.0.1", ports["NGINX_PORT"], ws_path("carol"))
                socks.append(c)
                check(c.recv_type("welcome")["user_id"] == "carol", "welcome through nginx")
            wait_until(lambda: redis.cmd("PUBSUB", "NUMSUB", "herald:user:carol")[1] == 3, 10,
                       "three gateways subscribed to carol")
            consumers = {dict(zip(c[::2], c[1::2]))["name"] for c in
                         redis.cmd("XINFO", "CONSUMERS", "herald:stream:notifications", "herald-workers")}
            check({"worker1", "worker2"} <= consumers, "two workers in the consumer group", consumers)
        finally:
            for c in socks:
                c.close()
            redis.close()
    run("nginx_fronts_three_gateways_and_two_workers_consume", three_gateways_behind_nginx_and_two_workers)

    def killed_service_is_restarted():
        up.observe()
        port = ports["GATEWAY2_PORT"]
        old = listener_of(port, up.seen)
        check(old is not None, "gateway2's pid", sorted(up.seen))
        # The other servers: every process of the session listening on a port of
        # the stack (the script's own short-lived helpers come and go).
        ours = set(ports.values())
        others = {p for p in up.seen if p != old and alive(p) and ours & set(listening_ports(p))}
        check(len(others) >= 9, "the other servers of the stack", others)
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: re.search(rf"gateway2 \(pid {old}\) was killed by signal 9.*restarting",
                                     up.text()), 15, "the restart line")
        wait_until(lambda: re.search(r"gateway2 restarted \(pid \d+\)", up.text()), 15,
                   "the restarted line")
        new = int(re.findall(r"gateway2 restarted \(pid (\d+)\)", up.text())[-1])
        wait_until(lambda: port in listening_ports(new), 15, "the new gateway2 listening")
        check(new != old, "a new process")
        c = WsClient("127.0.0.1", port, ws_path("alice"))
        try:
            check(c.recv_type("welcome")["user_id"] == "alice", "the restarted gateway2 welcomes")
        finally:
            c.close()
        check(up.proc.poll() is None, "herald-up.sh still runs", up.text()[-2000:])
        gone = sorted(p for p in others if not alive(p))
        check(not gone, "nothing else stopped", gone)
        up.observe()
    run("a_killed_service_is_restarted_with_a_log_line_and_the_rest_keep_running",
        killed_service_is_restarted)


def main():
    t = TestRun()
    run = Checks(t, EXPECTED_FAILURES)
    tmp = tempfile.mkdtemp(prefix="herald-up-")
    register_dir(tmp)  # and what runs under it: removed and killed if this test dies
    os.chmod(tmp, 0o755)  # PostgreSQL runs as postgres, nginx's workers as nobody, under it
    var = os.path.join(tmp, "var")
    demo = os.path.join(tmp, "demo")
    os.mkdir(demo)
    with open(os.path.join(demo, "index.html"), "w") as f:
        f.write(f"<!doctype html><title>{MARK}</title>\n")
    docs_script = os.path.join(tmp, "build-docs.sh")
    with open(docs_script, "w") as f:
        f.write(f'mkdir -p "$1" && echo "<title>{DOCS_MARK}</title>" >"$1/index.html"\n')
    # Held open together, the ports differ from each other (free_port() one by
    # one may hand out the same port twice: postgres and gateway2 once shared one).
    held = []
    for _ in PORT_NAMES:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        held.append(sock)
    ports = {k: sock.getsockname()[1] for k, sock in zip(PORT_NAMES, held)}
    for sock in held:
        sock.close()
    env = dict(os.environ, HERALD_UP_VAR=var, HERALD_UP_DEMO_DIR=demo,
               HERALD_UP_DOCS_SCRIPT=docs_script,
               ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
               **{k: str(v) for k, v in ports.items()})
    for k in list(env):
        if k.startswith("HERALD_") and not k.startswith("HERALD_UP_") and k not in (
                "HERALD_BIN_DIR", "HERALD_SOURCE_DIR", "HERALD_TEST_TAG"):
            del env[k]
    ups = [Up(env)]
    extra = []    # processes the test itself started
    server_pids = set()

    def note_servers():
        for p in (read_pid(os.path.join(var, "redis.pid")),
                  read_pid(os.path.join(var, "pg", "postmaster.pid"))):
            if p:
                server_pids.add(p)
    try:
        def comes_up():
            ups[0].wait_up()
            note_servers()
            check(read_pid(os.path.join(var, "redis.pid")) is not None, "redis pid file in HERALD_UP_VAR")
            check(os.path.exists(os.path.join(var, "pg", "PG_VERSION")), "cluster in HERALD_UP_VAR")
        if run("herald_up_starts_and_prints_its_urls", comes_up):
            check_urls_and_commands(run, ups[0], ports, extra)
            check_topology(run, ups[0], ports)
        ups[0].observe()

        def rerun_right_after_sigint_starts_cleanly():
            first = ups[0]
            check(first.proc.poll() is None, "still running before the SIGINT", first.text()[-3000:])
            old_redis = read_pid(os.path.join(var, "redis.pid"))
            first.proc.send_signal(signal.SIGINT)
            # At once, as a user pressing the up arrow would: the first run is
            # still draining its services and shutting Redis and PostgreSQL down.
            second = Up(env)
            ups.append(second)
            rc = first.proc.wait(90)
            check(rc == 0, "the first run exits 0 on SIGINT", rc, first.text()[-3000:])
            check(first.text().rstrip().endswith("herald: stopped"), "says it stopped",
                  first.text()[-500:])
            second.wait_up()
            note_servers()
            new_redis = read_pid(os.path.join(var, "redis.pid"))
            check(new_redis != old_redis and alive(new_redis), "a new redis-server", old_redis, new_redis)
            check(ports["REDIS_PORT"] in listening_ports(new_redis), "the new redis listens",
                  second.text()[-2000:])
            check(not alive(old_redis), "the old redis-server is gone")
            s, _, body = request(ports["NGINX_PORT"], "POST", "/notifications",
                                 {"user_id": "alice", "message": "after a rerun"},
                                 {"Authorization": f"Bearer {DEV_INGEST_KEY}"})
            check(s == 202, "the second stack takes a POST through nginx", s, body,
                  second.text()[-2000:])
        run("a_rerun_right_after_sigint_waits_for_the_first_and_starts_cleanly",
            rerun_right_after_sigint_starts_cleanly)
        ups[-1].observe()

        def rerun_after_a_killed_run_stops_its_leftovers():
            killed = ups[-1]
            check(killed.proc.poll() is None, "running before the SIGKILL", killed.text()[-3000:])
            killed.observe()
            ours = set(ports.values())
            servers = {p for p in killed.seen if alive(p) and ours & set(listening_ports(p))}
            check(len(servers) >= 9, "its servers", servers)
            # Only the script dies (a closed terminal, kill -9): its servers run on.
            killed.proc.kill()
            killed.proc.wait()
            check(all(alive(p) for p in servers), "the servers outlive the script")
            third = Up(env)
            ups.append(third)
            third.wait_up()
            note_servers()
            check("stopping what an earlier make up left running" in third.text(),
                  "it says it stops the leftovers", third.text()[:2000])
            left = sorted(p for p in servers if alive(p))
            check(not left, "the leftovers are gone", left)
            s, _, body = request(ports["NGINX_PORT"], "POST", "/notifications",
                                 {"user_id": "alice", "message": "after a killed run"},
                                 {"Authorization": f"Bearer {DEV_INGEST_KEY}"})
            check(s == 202, "the new stack takes a POST through nginx", s, body, third.text()[-2000:])
        run("a_run_after_a_killed_one_stops_what_it_left_and_starts_cleanly",
            rerun_after_a_killed_run_stops_its_leftovers)
        ups[-1].observe()
    finally:
        note_servers()
        started = set(server_pids)
        for u in ups:
            started |= u.seen

        def sigint_stops_everything():
            last = ups[-1]
            check(last.proc.poll() is None, "still running before the SIGINT", last.text()[-3000:])
            last.proc.send_signal(signal.SIGINT)
            rc = last.proc.wait(90)
            check(rc == 0, "herald-up.sh exits 0 on SIGINT", rc, last.text()[-3000:])
            check(last.text().rstrip().endswith("herald: stopped"), "says it stopped", last.text()[-500:])
            check(len(started) >= 10, "saw the services, nginx, redis and postgres", started)
            left = sorted(p for p in started if alive(p))
            for u in ups:
                left += sorted(session_pids(u.proc.pid))
            check(not left, "no process left", left)
            busy = [k for k, port in ports.items() if listening(port)]
            check(not busy, "no port still listening", busy)
            logs = os.path.join(var, "log")
            for name in sorted(os.listdir(logs)):
                with open(os.path.join(logs, name), errors="replace") as f:
                    body = f.read()
                check("Sanitizer" not in body and "runtime error:" not in body,
                      "no sanitizer report", name, body[-2000:])
        t.check("sigint_stops_it_and_leaves_no_process_or_port", sigint_stops_everything)
        for p in extra:
            if p.poll() is None:
                p.kill()
                p.wait()
        for u in ups:
            if u.proc.poll() is None:
                u.proc.send_signal(signal.SIGINT)
                try:
                    u.proc.wait(60)
                except subprocess.TimeoutExpired:
                    u.proc.kill()
                    u.proc.wait()
        for pid in started:  # only what herald-up.sh started, by pid, if it is still that
            if alive(pid) and (any(pid in session_pids(u.proc.pid) for u in ups)
                               or cwd_under(pid, tmp)):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
