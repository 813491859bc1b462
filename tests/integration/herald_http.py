"""Raw HTTP/1.1 over sockets for the integration tests that speak to
hr_httpd byte by byte (framing, pipelining, deadlines, refusals)."""
import json
import socket


def _check(cond, what):
    if not cond:
        raise AssertionError(what)


def connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_head(s, buf=b""):
    """Reads up to the end of a head: (status line, headers dict, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response head: {buf[:200]!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, rest


def read_response(s, buf=b"", head_only=False):
    """One response from s (buf: bytes already read): (status, headers, body, rest).
    head_only: an answer to HEAD (its Content-Length has no body)."""
    line, headers, rest = read_head(s, buf)
    n = 0 if head_only else int(headers.get("content-length", "0"))
    while len(rest) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(line.split(" ")[1]), headers, rest[:n], rest[n:]


def closes(s, rest=b"", within=5):
    """Whether the server closes s (recv returns b"" or a reset) within
    `within` seconds, with nothing more than rest sent."""
    s.settimeout(within)
    try:
        more = s.recv(65536)
    except socket.timeout:
        return False
    except ConnectionResetError:
        return rest == b""
    return more == b"" and rest == b""


def exchange(port, data, timeout=5, want_close=True):
    """Sends raw bytes on a fresh connection, reads one response; returns
    (status, headers, body, closed), closed None unless want_close."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        status, headers, body, rest = read_response(s)
        closed = closes(s, rest, timeout) if want_close else None
        return status, headers, body, closed
    finally:
        s.close()


def check_json_refusal(port, data, status, code=None):
    """data is refused with status (and code): a JSON error, then the connection closes."""
    st, h, body, closed = exchange(port, data)
    _check(st == status, f"{data[:60]!r}: status {st}, wanted {status}; {body[:200]!r}")
    _check(h.get("content-type") == "application/json", f"{data[:60]!r}: {h}")
    err = json.loads(body)["error"]
    _check(isinstance(err.get("message"), str) and err.get("code"), err)
    if code is not None:
        _check(err["code"] == code, f"{data[:60]!r}: {err}")
    _check(closed, f"{data[:60]!r}: connection left open after a refusal")
    return h, err


def check_connection_cap(port, svc, cap):
    """svc (on port) serves `cap` connections at most: it logs connection_limit,
    one more connection waits unanswered in the backlog, and is served once
    one of the others closes."""
    import socket as _socket
    from herald_stack import wait_until
    held = []
    try:
        for _ in range(cap):
            c = connect(port)
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            st, h, body, rest = read_response(c)
            _check(st == 200, st)
            held.append(c)
        wait_until(lambda: "connection_limit" in svc.log_text(), 5, "limit logged")
        extra = connect(port)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        extra.settimeout(0.5)
        try:
            early = extra.recv(100)
        except _socket.timeout:
            early = None
        _check(early is None, f"a connection over the cap was served: {early!r}")
        held.pop().close()
        extra.settimeout(5)
        st, h, body, rest = read_response(extra)
        _check(st == 200, st)
        extra.close()
    finally:
        for c in held:
            c.close()


def check_accept_pauses(port, svc, name):
    """svc, started under `prlimit --nofile=40:40`, meets more connections than
    it has descriptors: it logs accept_paused, neither floods its log nor
    spins, and serves again once they close."""
    import os
    import time
    from herald_stack import http_request, wait_until
    held = []
    try:
        for _ in range(60):
            held.append(connect(port))
        wait_until(lambda: "accept_paused" in svc.log_text(), 10, "accept paused")
        size0 = os.path.getsize(svc.logpath)
        pid = svc.proc.pid
        with open(f"/proc/{pid}/stat") as f:
            f0 = f.read().split()
        t0 = time.monotonic()
        time.sleep(1.5)  # an observation window, not a synchronisation
        with open(f"/proc/{pid}/stat") as f:
            f1 = f.read().split()
        ticks = (int(f1[13]) + int(f1[14])) - (int(f0[13]) + int(f0[14]))
        cpu = ticks / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
        grown = os.path.getsize(svc.logpath) - size0
        print(f"# {name} at the file limit: {cpu:.0%} of a core, log +{grown} bytes in 1.5 s",
              flush=True)
        _check(grown < 2000, f"the log grew by {grown} bytes in 1.5 s at the file limit")
        _check(cpu < 0.5, f"{name} spins at the file limit: {cpu:.0%} of a core")
        other = [ln for ln in svc.log_text().splitlines()
                 if "Too many open files" in ln and "accept_paused" not in ln]
        _check(not other, f"other accept warnings in the log: {other[:2]}")
    finally:
        for c in held:
            c.close()
    wait_until(lambda: http_request(port, "GET", "/healthz")[0] == 200, 10, f"{name} serves again")


def check_slow_head_cut(port, limit_s=15):
    """A head sent a byte every 0.2 s gets 408 request_timeout at the server's
    header deadline (well before limit_s), and a prompt request on a fresh
    connection is served meanwhile."""
    import socket as _socket
    import time
    from herald_stack import http_request
    s = connect(port, timeout=10)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        data = b"X-Slow: " + b"a" * 200
        t0 = time.monotonic()
        got = None
        s.settimeout(0.2)
        for i in range(len(data)):
            try:
                s.sendall(data[i:i + 1])
            except OSError:
                break
            try:
                got = s.recv(65536)
                break
            except _socket.timeout:
                _check(time.monotonic() - t0 < limit_s,
                       f"still open after {limit_s} s of a byte per 0.2 s")
        _check(got, "no answer to a head sent a byte per 0.2 s")
        s.settimeout(5)
        st, h, body, rest = read_response(s, got)
        _check(st == 408, (st, body))
        _check(json.loads(body)["error"]["code"] == "request_timeout", body)
    finally:
        s.close()
    st, b = http_request(port, "GET", "/healthz")
    _check(st == 200, (st, b))
