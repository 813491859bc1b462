"""Records the integration tests' HTTP exchanges with ingest and history, so
that tests/contract/validate-traffic.mjs can check every one against
proto/openapi.yaml with a third-party OpenAPI validator (issue 13).

With $HERALD_CONTRACT_LOG set (CTest sets it per test), each exchange that
herald_stack.http_request makes with a port a Stack registered as ingest or
history is appended to that file as one JSON line. Exchanges with other
ports (gateways, workers, servers a test started by hand) are not recorded:
they are not on the OpenAPI contract."""
import base64
import os
import sys
import threading

import json

_services = {}  # port -> "ingest" | "history"
_lock = threading.Lock()


def register(port, binary):
    """Port port is served by binary (herald-ingest, herald-history, ...)."""
    service = {"herald-ingest": "ingest", "herald-history": "history"}.get(binary)
    if service is not None:
        _services[port] = service


def _text(raw):
    """A body as {"text": str} when it is UTF-8, else {"base64": str}."""
    if raw is None:
        return None
    try:
        return {"text": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def record(port, method, target, req_headers, req_body, status, resp_headers, resp_body):
    """Appends one exchange; resp_headers is the list of (name, value) pairs as sent."""
    service = _services.get(port)
    log_path = os.environ.get("HERALD_CONTRACT_LOG")
    if not log_path or service is None:
        return
    path, _, query = target.partition("?")
    line = json.dumps({
        "test": os.path.basename(sys.argv[0]),
        "service": service,
        "method": method,
        "path": path,
        "query": query,
        "request": {"headers": {k: str(v) for k, v in req_headers.items()}, "body": _text(req_body)},
        "status": status,
        "response": {"headers": [[k, v] for k, v in resp_headers], "body": _text(resp_body)},
    }) + "\n"
    with _lock:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
