"""Reading a service's /metrics in tests: the Prometheus text format
(0.0.4) scraped, parsed into {name{labels}: value}, checked by promtool, and
the names proto/metrics.md promises."""
import http.client
import os
import re
import subprocess

from herald_stack import SRC_DIR, check

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def scrape(port):
    """The body of GET /metrics, which must be 200 text/plain; version=0.0.4."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        check(resp.status == 200, f"/metrics status {resp.status}")
        check(resp.getheader("Content-Type", "").startswith("text/plain; version=0.0.4"),
              resp.getheader("Content-Type"))
        return body
    finally:
        conn.close()


def parse(text):
    """{'name{labels}': value} of every sample line; fails on a line it cannot read."""
    out = {}
    for ln in text.splitlines():
        if not ln or ln.startswith("#"):
            continue
        m = LINE.match(ln)
        check(m is not None, f"unparsable line {ln!r}")
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def promtool_check(text):
    """promtool (Debian's prometheus package) accepts the exposition."""
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=30)
    check(out.returncode == 0, f"promtool: {out.stdout}{out.stderr}")


def listed_names(sections):
    """(name, type) of the table rows in the given sections of proto/metrics.md."""
    with open(os.path.join(SRC_DIR, "proto", "metrics.md")) as f:
        text = f.read()
    rows = []
    for sec in sections:
        m = re.search(rf"^## {re.escape(sec)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        check(m is not None, f"section {sec} in metrics.md")
        for row in re.finditer(r"^\| `([a-z_:]+)` \| ([a-z]+)", m.group(1), re.M):
            rows.append((row.group(1), row.group(2)))
    return rows
