"""Starts a private Herald stack for one integration test: its own redis-server
and throwaway PostgreSQL cluster (initdb in a temp dir, free ports), then the
real service binaries. Everything is stopped by pid; nothing touches the
machine's default servers or ports.

Nothing outlives the test process: SIGTERM/SIGINT/SIGHUP raise SystemExit in
the main thread (so `finally: stack.stop()` runs), and a detached reaper
process (see _Reaper) kills every process started under this test and removes
its temp dirs when the test process is gone, also after a SIGKILL (CTest
3.25's timeout SIGKILLs the test's process tree, which misses daemonized
servers and leaves temp dirs)."""
import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import herald_contract_log

BIN_DIR = os.environ.get("HERALD_BIN_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
SRC_DIR = os.environ.get("HERALD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
PG_BIN = os.environ.get("HERALD_PG_BIN", "/usr/lib/postgresql/15/bin")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


def log(msg):
    print(f"# {msg}", flush=True)


# -- credentials (proto/auth.md) -------------------------------------------
# Every stack gets this auth section (HERALD_CONFIG): tests use real tokens
# and a real ingest key. The secret and key are the tests' own.
TEST_KID = "test-1"
TEST_SECRET = "herald-integration-test-secret-0123456789"
INGEST_KEY = "herald-test-ingest-key"
INGEST_KEY_NAME = "test"


def ingest_key_entry(name, key, extra=""):
    """One libconfig entry of auth.ingest_keys for a key (hashed, as the config keeps it)."""
    return (f'{{ name = "{name}"; sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"; '
            f'{extra} }}')


def auth_section(extra_keys="", extra_ingest_keys="", settings=""):
    """The auth section a Stack writes; extra_* are further libconfig list
    entries (with a leading comma), settings further `name = value;` lines."""
    return ("auth: {\n  leeway_s = 2;\n" + settings +
            f'  keys = ( {{ kid = "{TEST_KID}"; alg = "HS256"; secret = "{TEST_SECRET}"; }}'
            f"{extra_keys} );\n"
            f"  ingest_keys = ( {ingest_key_entry(INGEST_KEY_NAME, INGEST_KEY)}{extra_ingest_keys} );\n}};\n")


def _b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint_token(sub, rooms=None, ttl=3600, iat=None, secret=TEST_SECRET, kid=TEST_KID,
               alg="HS256", claims=None, header=None):
    """An HS256 JWT signed with the test key (RFC 7519), as an auth server
    would mint it. claims/header add or override members (None deletes)."""
    now = int(time.time())
    c = {"sub": sub, "iat": now if iat is None else iat, "exp": now + ttl}
    if rooms is not None:
        c["rooms"] = list(rooms)
    for k, v in (claims or {}).items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    h = {"alg": alg, "typ": "JWT", "kid": kid}
    for k, v in (header or {}).items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    signing = _b64url(json.dumps(h).encode()) + "." + _b64url(json.dumps(c).encode())
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + _b64url(sig)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


class CheckFailed(AssertionError):
    """A failed check(); an AssertionError so existing handlers still see it."""


def check(cond, *what):
    """Fails the current test step unless cond is true; what (any values) goes
    into the message. Used instead of `assert`, which PYTHONOPTIMIZE removes."""
    if not cond:
        raise CheckFailed(" ".join(repr(w) if not isinstance(w, str) else w for w in what)
                          or "check failed")
    return cond


def check_eq(got, want, *what):
    """check(got == want) with both values in the message."""
    if got != want:
        raise CheckFailed(f"got {got!r}, wanted {want!r}" + (" - " + " ".join(map(str, what)) if what else ""))
    return got


def free_port():
    """A port that was free a moment ago. Racy (another process may take it
    before the caller binds it): prefer starting services on port 0 and
    reading the port back (Stack does), or retrying on a bind failure."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _tcp_rows(pid):
    """The /proc/net/tcp{,6} rows (split into columns) of the sockets process
    pid holds open, matched by socket inode."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return []
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                rows.extend(cols for cols in (line.split() for line in f) if cols[9] in inodes)
        except OSError:
            pass
    return rows


def listening_ports(pid):
    """TCP ports process pid listens on, from /proc (its socket inodes matched
    against /proc/net/tcp LISTEN entries): state, not log text."""
    return sorted({int(cols[1].rsplit(":", 1)[1], 16) for cols in _tcp_rows(pid) if cols[3] == "0A"})


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def tcp_states(pid):
    """States ("ESTABLISHED", "CLOSE_WAIT", ...) of the TCP sockets process pid
    holds open. CLOSE_WAIT = the peer hung up and pid has not closed its end
    yet: a way to wait until a server has processed clients leaving."""
    return [TCP_STATES.get(cols[3], cols[3]) for cols in _tcp_rows(pid)]


class CheckedThread(threading.Thread):
    """A thread whose exception is not lost: join() re-raises it in the
    caller, and .result holds the target's return value."""

    def __init__(self, target, *args, **kwargs):
        super().__init__(daemon=True)
        self._fn, self._args, self._kwargs = target, args, kwargs
        self.result = None
        self.error = None

    def run(self):
        try:
            self.result = self._fn(*self._args, **self._kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to join()
            self.error = e

    def join(self, timeout=None):
        super().join(timeout)
        if self.is_alive():
            raise CheckFailed(f"thread {self._fn.__name__} still running after {timeout}s")
        if self.error is not None:
            raise self.error
        return self.result


def run_threads(fn, args_list, timeout=None):
    """Runs fn(*args) for each args in its own CheckedThread, joins all and
    re-raises the first exception; returns the results in order."""
    ths = [CheckedThread(fn, *a) for a in args_list]
    for th in ths:
        th.start()
    errors, results = [], []
    for th in ths:
        try:
            results.append(th.join(timeout))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    if errors:
        raise errors[0]
    return results


# Every process started under this test inherits this tag in its environment,
# so the reaper can find them (daemons included) after the test process died.
# A fresh one per test process, never inherited: two tests sharing a tag would
# reap each other's servers.
TAG_VAR = "HERALD_TEST_TAG"
TAG = uuid.uuid4().hex
os.environ[TAG_VAR] = TAG

_REAPER_CODE = r"""
import os, shutil, signal, sys, time
tag, owner, me = sys.argv[1].encode(), int(sys.argv[2]), os.getpid()
if os.fork():
    os._exit(0)          # the parent returns at once; the grandchild is detached
os.setsid()
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
dirs, pids = [], {}
for line in sys.stdin:
    op, _, arg = line.rstrip("\n").partition(" ")
    if op == "dir":
        dirs.append(arg)
    elif op == "undir" and arg in dirs:
        dirs.remove(arg)
    elif op == "pid":  # "pid START_TIME": START_TIME tells a reused pid apart
        pid, start = arg.split()
        pids[int(pid)] = start
# EOF: the test process is exiting (normal exit, signal or SIGKILL). Wait until
# it is gone: killing it while it finishes would change its exit status.
def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
deadline = time.monotonic() + 60
while alive(owner) and time.monotonic() < deadline:
    time.sleep(0.05)
def tagged():
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) in (me, owner, os.getpid()):
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                if b"HERALD_TEST_TAG=" + tag in f.read().split(b"\0"):
                    out.append(int(p))
        except OSError:
            pass
    return out
def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
def registered():
    # Processes that rewrite their environment for a title (redis-server)
    # lose the tag: these were registered by pid.
    return [p for p, t in pids.items() if start_time(p) == t and alive(p)]
def postmasters():
    out = []
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            if "postmaster.pid" in files:
                try:
                    out.append(int(open(os.path.join(root, "postmaster.pid")).readline()))
                except (OSError, ValueError):
                    pass
    return out
for _ in range(50):
    victims = tagged() + registered() + postmasters()
    if not victims:
        break
    for p in victims:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.1)
for d in dirs:
    shutil.rmtree(d, ignore_errors=True)
"""


class _Reaper:
    """A detached process that, once the test process has gone, SIGKILLs every
    process carrying this test's TAG and removes the temp dirs registered
    with it (still registered = not removed by a clean stop)."""

    def __init__(self):
        self.w = None
        self.lock = threading.Lock()

    def _start(self):
        r, w = os.pipe()
        p = subprocess.Popen([sys.executable, "-c", _REAPER_CODE, TAG, str(os.getpid())], stdin=r,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        p.wait()  # the first process exits at once; its detached child reads the pipe
        os.close(r)
        self.w = os.fdopen(w, "w", buffering=1)

    def send(self, op, path):
        with self.lock:
            if self.w is None:
                self._start()
            self.w.write(f"{op} {path}\n")


_reaper = _Reaper()


def _start_time(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def register_pid(pid):
    """SIGKILLs pid when the test process is gone (for children whose
    environment no longer shows the tag)."""
    try:
        _reaper.send("pid", f"{pid} {_start_time(pid)}")
    except OSError:
        pass  # already gone


def tagged_processes():
    """(pid, comm) of live processes started under this test (they carry
    TAG in their environment), the test process and the reaper excluded."""
    out = []
    me = os.getpid()
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == me:
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                if f"{TAG_VAR}={TAG}".encode() not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if TAG.encode() in f.read().split(b"\0"):
                    continue  # the reaper (TAG is its argument)
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    continue
            with open(f"/proc/{p}/comm") as f:
                out.append((int(p), f.read().strip()))
        except OSError:
            pass
    return out


def register_dir(path):
    """Removes path when the test process is gone, unless unregister_dir()."""
    _reaper.send("dir", path)


def unregister_dir(path):
    _reaper.send("undir", path)


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def install_signal_handlers():
    """SIGTERM/SIGHUP end the test like SIGINT (an exception in the main
    thread), so `finally` blocks stop the stack."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)


install_signal_handlers()


class StopWaiting(CheckFailed):
    """Raised by a wait_until() predicate when waiting longer cannot help
    (the process it waits for has exited): wait_until re-raises it at once."""


def wait_until(pred, timeout, what, interval=0.05):
    """Polls pred() until it returns a true value (returned) or timeout s
    pass (CheckFailed). Exceptions from pred are retried, except StopWaiting."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except StopWaiting:
            raise
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(interval)
    raise CheckFailed(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


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
        raw = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        for b in raw:
            out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        if len(raw) == 3 and raw[0].upper() == b"PUBLISH":
            herald_contract_log.redis_publish(raw[1].decode(errors="replace"), raw[2])
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


def describe_exit(rc):
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


class Service:
    """One service process. Every way it ends is judged: an exit other than 0
    after SIGTERM, a death by any signal the test did not send (kill9), and a
    SIGTERM it ignored until SIGKILL are recorded in .problems, which
    Stack.stop() turns into a failed test, also for a process start() has
    since replaced."""

    def __init__(self, name, argv, env, logdir):
        self.name = name
        self.argv = argv
        self.env = env
        self.logpath = os.path.join(logdir, f"{name}.log")
        self.proc = None
        self.problems = []
        self.killed_by_test = False
        self.judged = False
        self.start()

    def start(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                raise CheckFailed(f"{self.name}: start() while pid {self.proc.pid} is still running")
            self._judge(self.proc.returncode)
        self.logf = open(self.logpath, "ab")
        self.killed_by_test = False
        self.judged = False
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        register_pid(self.proc.pid)

    def _judge(self, rc, how=""):
        """Records rc of the current process once (an exit a test may expect
        to see: 0, or SIGKILL it sent with kill9)."""
        if self.judged:
            return
        self.judged = True
        if self.logf and not self.logf.closed:
            self.logf.close()
        if rc == 0 or (self.killed_by_test and rc == -signal.SIGKILL):
            return
        self.problems.append(f"{self.name} (pid {self.proc.pid}): {how}{describe_exit(rc)}")

    def kill9(self):
        """SIGKILL sent by the test: that death is expected, not a problem."""
        if self.proc.poll() is not None:
            self._judge(self.proc.returncode, "had already exited before kill9: ")
            return
        self.killed_by_test = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._judge(self.proc.returncode)

    def wait(self, timeout=15):
        """Waits for an exit the test caused (e.g. its own SIGTERM) and
        returns the exit code; an exit other than 0 is recorded as a problem,
        not seeing one within timeout fails."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"{self.name} (pid {self.proc.pid}) still running after {timeout}s") from None
        self._judge(rc)
        return rc

    def expect_exit(self, code, timeout=15):
        """For a test that makes the service exit on purpose (bad config, a
        refused start): waits, fails unless it exited with code, and does
        not count that exit as a problem at stop()."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"{self.name} (pid {self.proc.pid}) still running after {timeout}s") from None
        self.judged = True
        if self.logf and not self.logf.closed:
            self.logf.close()
        check(rc == code, f"{self.name}: {describe_exit(rc)}, wanted exit code {code}")
        return rc

    def terminate(self, timeout=15, sent=False):
        """SIGTERM (unless sent: the caller already did) and wait; returns the
        exit code, or None if it ignored SIGTERM for timeout s and had to be
        SIGKILLed (recorded as a problem)."""
        if not sent and self.proc.poll() is not None:
            self._judge(self.proc.returncode, "had already exited: ")
            return self.proc.returncode
        if not sent:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.judged = True
            self.logf.close()
            self.problems.append(f"{self.name} (pid {self.proc.pid}): ignored SIGTERM for {timeout}s, "
                                 "needed SIGKILL")
            return None
        self._judge(rc, "after SIGTERM: ")
        return rc

    def log_text(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")


def redis_asleep(port):
    """Whether the redis-server on port has stopped answering (DEBUG SLEEP)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.settimeout(0.1)
    try:
        s.sendall(b"PING\r\n")
        s.recv(16)
        return False
    except socket.timeout:
        return True
    finally:
        s.close()

def processes_in(directory):
    """(pid, command line) of every process whose working directory is directory
    or below it (a deleted directory still shows its path)."""
    out = []
    root = os.path.realpath(directory)
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{name}/cwd").removesuffix(" (deleted)")
            if cwd == root or cwd.startswith(root + "/"):
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    argv = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                out.append((int(name), argv))
        except OSError:
            continue
    return out


class Stack:
    # More redis-server arguments (e.g. ("--enable-debug-command", "yes")).
    redis_args = ()

    def __init__(self, gateways=2, workers=1, services=("ingest", "worker", "history", "gateway"),
                 extra_env=None, config=None):
        """config: the text of the services' config file (HERALD_CONFIG);
        default auth_section()."""
        self.tmp = tempfile.mkdtemp(prefix="herald-it-")
        register_dir(self.tmp)
        os.chmod(self.tmp, 0o755)
        self.config_path = os.path.join(self.tmp, "herald.conf")
        with open(self.config_path, "w") as f:
            f.write(auth_section() if config is None else config)
        self.services = {}
        self.retired = []  # services replaced by spawn() under the same key
        self.extra_env = extra_env or {}
        self.pg_dir = os.path.join(self.tmp, "pg")
        self.redis_pidfile = os.path.join(self.tmp, "redis.pid")
        self.redis_proc = None
        try:
            # redis-server and PostgreSQL need a port up front: retry on another
            # one if it was taken between free_port() and their bind.
            for attempt in range(5):
                self.redis_port = free_port()
                try:
                    self.start_redis()
                    break
                except subprocess.CalledProcessError:
                    if attempt == 4:
                        raise
            for attempt in range(5):
                self.pg_port = free_port()
                try:
                    self.start_postgres()
                    break
                except subprocess.CalledProcessError:
                    if attempt == 4:
                        raise
            self.env = self.service_env()
            if "worker" in services:
                self.migrate()
            # The services bind port 0; the port is read back from /proc.
            if "ingest" in services:
                self.ingest_port = self.spawn_listening("ingest", "herald-ingest", "HERALD_INGEST_PORT", {})
            if "history" in services:
                self.history_port = self.spawn_listening("history", "herald-history",
                                                         "HERALD_HISTORY_PORT", {})
            self.gateway_ports = []
            if "gateway" in services:
                for i in range(gateways):
                    self.gateway_ports.append(self.spawn_listening(
                        f"gateway{i + 1}", "herald-gateway", "HERALD_GATEWAY_PORT",
                        {"HERALD_GATEWAY_NODE_ID": f"gw{i + 1}"}))
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
        """Starts redis-server on self.redis_port, as a child (not daemonized,
        so it dies with a killed process tree too)."""
        self.redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--pidfile", self.redis_pidfile,
             "--logfile", os.path.join(self.tmp, "redis.log"), "--dir", self.tmp,
             *self.redis_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        register_pid(self.redis_proc.pid)
        self.redis = Redis(self.redis_port)
        proc = self.redis_proc

        def up():
            if proc.poll() is not None:
                raise StopWaiting(f"redis-server exited: {describe_exit(proc.returncode)}")
            return self.redis.cmd("PING") == "PONG"
        try:
            wait_until(up, 10, "redis")
        except StopWaiting:
            # e.g. the port was taken since free_port(): the caller may retry.
            raise subprocess.CalledProcessError(proc.returncode, "redis-server") from None

    def stop_redis(self):
        self.redis.close()
        proc, self.redis_proc = self.redis_proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise CheckFailed("redis-server ignored SIGTERM for 10 s") from None

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
                             check=True, capture_output=True, text=True, timeout=120)
        return out.stdout.strip()

    # -- services --------------------------------------------------------
    def service_env(self):
        env = dict(os.environ)
        env.update({
            "HERALD_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}",
            "HERALD_POSTGRES_URL": f"host=127.0.0.1 port={self.pg_port} dbname=herald user=postgres",
            "HERALD_WORKER_MIGRATIONS_DIR": os.path.join(SRC_DIR, "migrations"),
            "HERALD_LOG_LEVEL": "info",
            "HERALD_CONFIG": self.config_path,
            # The worker's /metrics listener (default 8084): any free port, several workers may run.
            "HERALD_WORKER_PORT": "0",
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
        if key in self.services:
            # Replaced (e.g. a restart on the same port): still judged at stop().
            self.retired.append(self.services[key])
        self.services[key] = Service(key, [self.binary(binary)], env, self.tmp)
        return self.services[key]

    def spawn_listening(self, key, binary, port_var, env_over, timeout=15):
        """spawn() with port_var=0, then waits until the process listens and
        returns its port (read from /proc, no free_port() race). The port is
        written back into the service's env so a later start() reuses it."""
        svc = self.spawn(key, binary, dict(env_over, **{port_var: 0}))

        def bound():
            if svc.proc.poll() is not None:
                raise StopWaiting(f"{key} exited before listening ({describe_exit(svc.proc.returncode)}):\n"
                                  f"{svc.log_text()[-2000:]}")
            return listening_ports(svc.proc.pid)
        ports = wait_until(bound, timeout, f"{key} to listen")
        check(len(ports) == 1, key, "listens on", ports)
        svc.env[port_var] = str(ports[0])
        herald_contract_log.register(ports[0], binary)
        return ports[0]

    def migrate(self):
        out = subprocess.run([self.binary("herald-worker"), "--migrate"], env=self.env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise AssertionError(f"migrate failed: {out.stdout}{out.stderr}")

    def wait_ready(self):
        if "ingest" in self.services:
            wait_until(lambda: http_get(self.ingest_port, "/readyz")[0] == 200, 15, "ingest")
        if "history" in self.services:
            wait_until(lambda: http_get(self.history_port, "/readyz")[0] == 200, 15, "history")
        for port in self.gateway_ports:
            wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, f"gateway :{port}")
        for name, svc in self.services.items():
            if svc.proc.poll() is not None:
                raise AssertionError(f"{name} exited early:\n{svc.log_text()}")

    def stop(self, check=True):
        """Stops every service by SIGTERM, then the servers. With check, fails
        (CheckFailed) if any service, including ones replaced by start() or
        spawn() during the test, exited other than 0 after SIGTERM, died of
        a signal the test did not send, needed SIGKILL, or logged a
        sanitizer report. Logs are kept on failure; the temp dir is removed
        otherwise (and by the reaper if the test process dies first)."""
        problems = []
        every = self.retired + list(self.services.values())
        signalled = set()
        for svc in every:  # SIGTERM to all first: they drain in parallel
            if svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)
                signalled.add(id(svc))
        for svc in every:
            svc.terminate(sent=id(svc) in signalled)
            problems += svc.problems
            text = svc.log_text()
            if any(m in text for m in SANITIZER_MARKS):
                problems.append(f"{svc.name}: sanitizer report\n{text[-4000:]}")
            elif svc.problems:
                problems.append(f"{svc.name} log tail:\n{text[-2000:]}")
        try:
            if os.path.exists(os.path.join(self.pg_dir, "postmaster.pid")):
                self.stop_postgres()
        except Exception as e:  # noqa: BLE001
            problems.append(f"postgres stop: {e}")
        try:
            if self.redis_proc is not None:
                self.stop_redis()
        except Exception as e:  # noqa: BLE001
            problems.append(f"redis stop: {e}")
        # Nothing the stack started may outlive it (a server started beside the harness's way).
        for pid, argv in processes_in(self.tmp):
            problems.append(f"left running in the stack's directory: pid {pid} {argv}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        keep = bool(problems and os.environ.get("HERALD_KEEP_TMP"))
        if keep:
            unregister_dir(self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if not os.path.exists(self.tmp):
                unregister_dir(self.tmp)
        if check and problems:
            where = (f"logs kept in {self.tmp}" if keep else
                     "run with HERALD_KEEP_TMP=1 to keep the logs")
            raise CheckFailed("\n".join(problems) + f"\n({where})")

    # -- state probes ----------------------------------------------------
    def entries_added(self, stream):
        """How many entries were ever added to stream (XINFO STREAM
        entries-added, Redis 7): exact even after the worker trimmed it."""
        try:
            info = self.redis.cmd("XINFO", "STREAM", stream)
        except RuntimeError as e:  # no such key
            if "no such key" in str(e).lower():
                return 0
            raise
        return int(dict(zip(info[::2], info[1::2]))["entries-added"])

    def pending_of(self, stream, group, consumer):
        """Entry ids stream's group holds pending for consumer."""
        return [e[0] for e in self.redis.cmd("XPENDING", stream, group, "-", "+", 100000, consumer)]

    def lock_table(self, table):
        """Context manager: a psql session holds ACCESS EXCLUSIVE on table
        (granted before the block starts) until the block ends, so a writer
        blocks inside its transaction, before its COMMIT."""
        return _TableLock(self, table)

    def waiting_on_lock(self):
        """Backends (other than the lock holder) waiting for a lock."""
        return int(self.psql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))

    @staticmethod
    def _pid(path):
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None


class _TableLock:
    def __init__(self, stack, table):
        self.stack, self.table = stack, table

    def __enter__(self):
        st = self.stack
        self.proc = subprocess.Popen(
            ["psql", "-h", "127.0.0.1", "-p", str(st.pg_port), "-U", "postgres", "-d", "herald",
             "-v", "ON_ERROR_STOP=1", "-q"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        register_pid(self.proc.pid)
        self.proc.stdin.write(f"BEGIN; LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE;\n")
        self.proc.stdin.flush()
        wait_until(lambda: st.psql(
            f"SELECT count(*) FROM pg_locks WHERE relation = '{self.table}'::regclass "
            "AND mode = 'AccessExclusiveLock' AND granted") == "1", 10, f"lock on {self.table}")
        return self

    def __exit__(self, *exc):
        try:
            self.proc.stdin.write("COMMIT;\n")
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        if exc[0] is None:
            check(rc == 0, f"psql holding the lock on {self.table} exited {rc}: {self.proc.stderr.read()}")
        return False


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
    """One request; a header given as None is not sent. Returns (status, parsed body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        herald_contract_log.record(port, method, path, h, data, resp.status, resp.getheaders(), raw)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return resp.status, parsed
    finally:
        conn.close()


def http_get(port, path):
    return http_request(port, "GET", path)


def ingest_headers(headers=None, key=INGEST_KEY):
    """headers with the test API key's Authorization (proto/auth.md) unless
    they set their own; {"Authorization": None} sends none."""
    h = bearer(key)
    h.update(headers or {})
    return h


def ingest_request(port, method, path, body=None, headers=None, timeout=5):
    """http_request() to ingest with the test API key (ingest_headers)."""
    return http_request(port, method, path, body, ingest_headers(headers), timeout)


def post_notification(port, body, headers=None):
    return ingest_request(port, "POST", "/notifications", body, headers)


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
        outer = herald_contract_log.set_check(name)
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            self.failed += 1
            import traceback
            print(f"not ok {self.n} - {name}\n# {traceback.format_exc().replace(chr(10), chr(10) + '# ')}",
                  flush=True)
            return False
        finally:
            herald_contract_log.set_check(outer)
        self.passed += 1
        print(f"ok {self.n} - {name} ({time.monotonic() - t0:.2f}s)", flush=True)
        return True

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)


class DebugStack(Stack):
    """A Stack whose redis-server accepts DEBUG, so a test can stall it."""

    redis_args = ("--enable-debug-command", "yes")

    def stall_redis(self, seconds):
        """DEBUG SLEEP on a connection of its own (it blocks that thread);
        returns the thread (join it) once Redis has stopped answering."""
        th = threading.Thread(target=lambda: Redis(self.redis_port).cmd("DEBUG", "SLEEP", str(seconds)))
        th.start()
        wait_until(lambda: redis_asleep(self.redis_port), 5, "redis to be asleep", 0.01)
        return th
