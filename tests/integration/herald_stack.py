"""Starts a private Herald stack for one integration test: its own redis-server
and throwaway PostgreSQL cluster (initdb in a temp dir, free ports), then the
real service binaries. Everything is stopped by pid; nothing touches the
machine's default servers or ports."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN_DIR = os.environ.get("HERALD_BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
SRC_DIR = os.environ.get("HERALD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
PG_BIN = os.environ.get("HERALD_PG_BIN", "/usr/lib/postgresql/15/bin")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


def log(msg):
    print(f"# {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


class Redis:
    """Minimal RESP2 client for assertions and fault injection."""

    def __init__(self, port):
        self.port = port
        self.sock = None

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.f = self.sock.makefile("rb")

    def cmd(self, *args):
        if self.sock is None:
            self._connect()
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        try:
            self.sock.sendall(b"".join(out))
            return self._read()
        except OSError:
            self.sock = None
            raise

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode(errors="replace")
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"bad RESP line {line!r}")

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None


class Service:
    def __init__(self, name, argv, env, logdir):
        self.name = name
        self.argv = argv
        self.env = env
        self.logpath = os.path.join(logdir, f"{name}.log")
        self.proc = None
        self.start()

    def start(self):
        self.logf = open(self.logpath, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.logf,
                                     stderr=subprocess.STDOUT)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.logf.close()

    def terminate(self, timeout=15):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.proc.poll() is not None:
            self.logf.close()
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.logf.close()
        return rc

    def log_text(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")


class Stack:
    def __init__(self, gateways=2, workers=1, services=("ingest", "worker", "history", "gateway"),
                 extra_env=None):
        self.tmp = tempfile.mkdtemp(prefix="herald-it-")
        os.chmod(self.tmp, 0o755)
        self.services = {}
        self.extra_env = extra_env or {}
        self.pg_dir = os.path.join(self.tmp, "pg")
        self.redis_pidfile = os.path.join(self.tmp, "redis.pid")
        self.redis_port = free_port()
        self.pg_port = free_port()
        try:
            self.start_redis()
            self.start_postgres()
            self.env = self.service_env()
            if "worker" in services:
                self.migrate()
            if "ingest" in services:
                self.ingest_port = free_port()
                self.spawn("ingest", "herald-ingest", {"HERALD_INGEST_PORT": self.ingest_port})
            if "history" in services:
                self.history_port = free_port()
                self.spawn("history", "herald-history", {"HERALD_HISTORY_PORT": self.history_port})
            self.gateway_ports = []
            if "gateway" in services:
                for i in range(gateways):
                    port = free_port()
                    self.gateway_ports.append(port)
                    self.spawn(f"gateway{i + 1}", "herald-gateway",
                               {"HERALD_GATEWAY_PORT": port, "HERALD_GATEWAY_DEV_USER_QUERY": "true",
                                "HERALD_GATEWAY_NODE_ID": f"gw{i + 1}"})
            if "worker" in services:
                for i in range(workers):
                    self.spawn(f"worker{i + 1}", "herald-worker",
                               {"HERALD_WORKER_CONSUMER": f"worker{i + 1}"})
            self.wait_ready()
        except BaseException:
            self.stop(check=False)
            raise

    # -- servers ---------------------------------------------------------
    def start_redis(self):
        subprocess.run(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--daemonize", "yes",
                        "--pidfile", self.redis_pidfile,
                        "--logfile", os.path.join(self.tmp, "redis.log"), "--dir", self.tmp],
                       check=True)
        self.redis = Redis(self.redis_port)
        wait_until(lambda: self.redis.cmd("PING") == "PONG", 10, "redis")

    def stop_redis(self):
        self.redis.close()
        pid = self._pid(self.redis_pidfile)
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not _alive(pid), 10, "redis to exit")

    def _as_postgres(self, argv):
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--"] + argv
        return argv

    def start_postgres(self):
        if not os.path.isdir(self.pg_dir):
            os.mkdir(self.pg_dir, 0o700)
            if os.geteuid() == 0:
                shutil.chown(self.pg_dir, "postgres", "postgres")
                shutil.chown(self.tmp, "postgres", "postgres")
            subprocess.run(self._as_postgres([f"{PG_BIN}/initdb", "-D", self.pg_dir, "-U", "postgres",
                                              "-A", "trust", "--no-sync", "-E", "UTF8",
                                              "--locale=C.UTF-8"]),
                           check=True, stdout=subprocess.DEVNULL)
        self.pg_ctl("start", "-o",
                    f"-p {self.pg_port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off",
                    "-l", os.path.join(self.tmp, "postgres.log"))
        if not getattr(self, "_db_created", False):
            self.psql("CREATE DATABASE herald", db="postgres")
            self._db_created = True

    def pg_ctl(self, *args):
        subprocess.run(self._as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.pg_dir, "-w", "-m", "fast"]
                                         + list(args)),
                       check=True, stdout=subprocess.DEVNULL)

    def stop_postgres(self):
        self.pg_ctl("stop")

    def psql(self, sql, db="herald"):
        out = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres",
                              "-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip()

    # -- services --------------------------------------------------------
    def service_env(self):
        env = dict(os.environ)
        env.update({
            "HERALD_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}",
            "HERALD_POSTGRES_URL": f"host=127.0.0.1 port={self.pg_port} dbname=herald user=postgres",
            "HERALD_WORKER_MIGRATIONS_DIR": os.path.join(SRC_DIR, "migrations"),
            "HERALD_LOG_LEVEL": "info",
            "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        })
        env.update({k: str(v) for k, v in self.extra_env.items()})
        return env

    def binary(self, name):
        sub = {"herald-ingest": "ingest", "herald-gateway": "gateway", "herald-worker": "worker",
               "herald-history": "history"}[name]
        return os.path.join(BIN_DIR, "services", sub, name)

    def spawn(self, key, binary, env_over):
        env = dict(self.env)
        env.update({k: str(v) for k, v in env_over.items()})
        self.services[key] = Service(key, [self.binary(binary)], env, self.tmp)
        return self.services[key]

    def migrate(self):
        out = subprocess.run([self.binary("herald-worker"), "--migrate"], env=self.env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise AssertionError(f"migrate failed: {out.stdout}{out.stderr}")

    def wait_ready(self):
        if "ingest" in self.services:
            wait_until(lambda: http_get(self.ingest_port, "/healthz")[0] == 200, 15, "ingest")
        if "history" in self.services:
            wait_until(lambda: http_get(self.history_port, "/healthz")[0] == 200, 15, "history")
        for port in self.gateway_ports:
            wait_until(lambda: http_get(port, "/healthz")[0] == 200, 15, f"gateway :{port}")
        for name, svc in self.services.items():
            if svc.proc.poll() is not None:
                raise AssertionError(f"{name} exited early:\n{svc.log_text()}")

    def stop(self, check=True):
        """Stops every service by SIGTERM, then the servers. With check, asserts
        each service exited 0 and its log has no sanitizer report."""
        problems = []
        for name, svc in list(self.services.items()):
            rc = svc.terminate()
            text = svc.log_text()
            if any(m in text for m in SANITIZER_MARKS):
                problems.append(f"{name}: sanitizer report\n{text[-4000:]}")
            elif rc not in (0, -9) and svc.proc.returncode != -signal.SIGKILL:
                problems.append(f"{name}: exit code {rc}\n{text[-2000:]}")
        try:
            if os.path.exists(os.path.join(self.pg_dir, "postmaster.pid")):
                self.stop_postgres()
        except Exception as e:  # noqa: BLE001
            problems.append(f"postgres stop: {e}")
        try:
            self.stop_redis()
        except Exception:  # noqa: BLE001 - already stopped by the test
            pass
        if check and problems:
            keep = self.tmp
            raise AssertionError("\n".join(problems) + f"\n(logs kept in {keep})")
        shutil.rmtree(self.tmp, ignore_errors=True)

    @staticmethod
    def _pid(path):
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child still answers kill(0); check its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def http_request(port, method, path, body=None, headers=None, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return resp.status, parsed
    finally:
        conn.close()


def http_get(port, path):
    return http_request(port, "GET", path)


def post_notification(port, body, headers=None):
    return http_request(port, "POST", "/notifications", body, headers)


class TestRun:
    """Runs named checks, prints TAP-style lines and the closing
    'N passed, N failed' line that CI reads."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.n = 0

    def check(self, name, fn):
        self.n += 1
        t0 = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            self.failed += 1
            import traceback
            print(f"not ok {self.n} - {name}\n# {traceback.format_exc().replace(chr(10), chr(10) + '# ')}",
                  flush=True)
            return False
        self.passed += 1
        print(f"ok {self.n} - {name} ({time.monotonic() - t0:.2f}s)", flush=True)
        return True

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)
