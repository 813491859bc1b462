"""Several herald-ingest processes on one port (ingest.reuseport, SO_REUSEPORT):
both bind it, the kernel spreads connections over both, each answers its
POSTs into the one stream, and one draining leaves the other serving.
Without reuseport a second process on a taken port fails to start. Real
binaries against a private redis-server."""
import http.client
import json
import os

from herald_stack import Stack, TestRun, check, check_eq, http_get, ingest_headers, listening_ports, wait_until

STREAM = "herald:stream:notifications"


def served_connections(pid, port):
    """ESTABLISHED TCP sockets of process pid whose local port is port (its
    accepted clients), from /proc: which process the kernel gave them to."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                local_port = int(cols[1].rsplit(":", 1)[1], 16)
                if cols[3] == "01" and local_port == port and cols[9] in inodes:
                    n += 1
    return n


def post(conn, i):
    body = json.dumps({"user_id": f"u{i}", "message": f"m{i}"})
    conn.request("POST", "/notifications", body=body,
                 headers=ingest_headers({"Content-Type": "application/json"}))
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def main():
    t = TestRun()
    stack = Stack(services=())
    try:
        r = stack.redis
        env = {"HERALD_INGEST_REUSEPORT": "true"}
        port = stack.spawn_listening("ingest_a", "herald-ingest", "HERALD_INGEST_PORT", env)
        a = stack.services["ingest_a"]
        b = stack.spawn("ingest_b", "herald-ingest", dict(env, HERALD_INGEST_PORT=port))
        for svc in (a, b):
            wait_until(lambda: svc.proc.poll() is not None or port in listening_ports(svc.proc.pid),
                       15, f"{svc.name} to listen on {port}")
            check(svc.proc.poll() is None, svc.name, "exited:", svc.log_text()[-2000:])
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, "readyz 200")

        def two_processes_share_one_port_and_both_serve():
            # 64 connections: the kernel hashes each to one listener; all on one
            # process would happen with probability 2^-63.
            conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(64)]
            try:
                for i, c in enumerate(conns):
                    st, body = post(c, i)
                    check(st == 202 and "id" in body, i, st, body)
                na = served_connections(a.proc.pid, port)
                nb = served_connections(b.proc.pid, port)
                check(na + nb == 64 and na > 0 and nb > 0, "connections per process", na, nb)
                # Each keeps serving its connections (keep-alive: same process).
                for i, c in enumerate(conns):
                    st, body = post(c, 100 + i)
                    check_eq(st, 202, i, body)
            finally:
                for c in conns:
                    c.close()
            check_eq(r.cmd("XLEN", STREAM), 128, "every POST of both processes is in the stream")

        def one_draining_leaves_the_other_serving():
            check_eq(a.terminate(), 0, "ingest_a after SIGTERM")
            wait_until(lambda: port in listening_ports(b.proc.pid), 5, "ingest_b still listens")
            xlen = r.cmd("XLEN", STREAM)
            for i in range(20):  # new connections: only ingest_b is left to take them
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    st, body = post(c, 200 + i)
                finally:
                    c.close()
                check_eq(st, 202, i, body)
            check_eq(r.cmd("XLEN", STREAM), xlen + 20)

        def without_reuseport_a_taken_port_refuses_to_start():
            c = stack.spawn("ingest_c", "herald-ingest", {"HERALD_INGEST_PORT": port})
            c.expect_exit(1)
            check("cannot bind" in c.log_text(), c.log_text()[-2000:])

        t.check("two_processes_share_one_port_and_both_serve",
                two_processes_share_one_port_and_both_serve)
        t.check("one_draining_leaves_the_other_serving", one_draining_leaves_the_other_serving)
        t.check("without_reuseport_a_taken_port_refuses_to_start",
                without_reuseport_a_taken_port_refuses_to_start)
    finally:
        stack.stop()
    t.finish()


if __name__ == "__main__":
    main()
