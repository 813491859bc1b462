"""Records the integration tests' HTTP exchanges with ingest and history, so
that tests/contract/validate-traffic.mjs can check every one against
proto/openapi.yaml with a third-party OpenAPI validator (issue 13).

With $HERALD_CONTRACT_LOG set (CTest sets it per test), each exchange that
herald_stack.http_request makes with a port a Stack registered as ingest or
history is appended to that file as one JSON line. Exchanges with other
ports (gateways, workers, servers a test started by hand) are not recorded:
they are not on the OpenAPI contract.

With $HERALD_CONTRACT_WS_LOG set (CTest sets it per test too), every frame
herald_ws.WsClient reads from a gateway (text, binary and close frames; not
PING/PONG) and every data or close frame it writes is appended to that file
as one JSON line, for tests/contract/validate-ws-traffic.mjs to check against
proto/asyncapi.yaml. Each line names the test, the TestRun check that was
running (`check`), the connection (`conn`, unique in the file) and the
frame's place on it (`seq`)."""
import base64
import hashlib
import os
import sys
import threading

import json

_services = {}  # port -> "ingest" | "history"
_lock = threading.Lock()
_current_check = None  # the name of the TestRun check running now
_conns = 0
_injected = {}  # sha256 of a message a test PUBLISHed on a herald:* channel -> the channel


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


def set_check(name):
    """TestRun.check names the check it runs; returns the one it replaces."""
    global _current_check
    outer, _current_check = _current_check, name
    return outer


def _append(log_path, rec):
    line = json.dumps(rec) + "\n"
    with _lock:
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def redis_publish(channel, message):
    """The test PUBLISHes message (bytes) on channel itself (herald_stack.Redis):
    a gateway forwards it byte for byte, so the frame is the test's, not
    Herald's, and is recorded as injected rather than judged."""
    if os.environ.get("HERALD_CONTRACT_WS_LOG") and channel.startswith("herald:"):
        with _lock:
            _injected[hashlib.sha256(message).hexdigest()] = channel


def ws_connection(port, path):
    """A new WebSocket connection to port; returns its record state (None:
    not recording). The path is kept without its query (it may hold a token)."""
    global _conns
    if not os.environ.get("HERALD_CONTRACT_WS_LOG"):
        return None
    with _lock:
        _conns += 1
        n = _conns
    return {"conn": f"{os.getpid()}-{n}", "port": port, "path": (path or "").partition("?")[0], "seq": 0}


def ws_frame(state, direction, opcode, payload, fin=True, masked=False):
    """Appends one frame of the connection state (ws_connection), read from
    the server (direction "server") or written by the test ("client"): a
    close frame as {"close": {"code", "reason"}} (code 1005: no code), any
    other frame as its opcode and its payload ({"text"} or {"base64"}), or
    for a frame a test PUBLISHed itself (redis_publish) "injected": channel;
    "fin": false for a fragment, "masked": true for a masked frame."""
    log_path = os.environ.get("HERALD_CONTRACT_WS_LOG")
    if not log_path or state is None:
        return
    with _lock:
        state["seq"] += 1
        seq = state["seq"]
    rec = {"test": os.path.basename(sys.argv[0]), "check": _current_check, "conn": state["conn"],
           "port": state["port"], "path": state["path"], "seq": seq, "from": direction}
    injected = None
    if direction == "server" and opcode != 0x8 and _injected:
        injected = _injected.get(hashlib.sha256(payload).hexdigest())
    if opcode == 0x8:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        rec["close"] = {"code": code, "reason": payload[2:].decode("utf-8", "replace")}
        if len(payload) == 1:
            rec["close"]["malformed"] = True
    elif injected:
        rec["opcode"] = opcode  # the test's own PUBLISH, forwarded: its channel, not its bytes
        rec["injected"] = injected
        rec["length"] = len(payload)
    elif direction == "client" and len(payload) > 65536:
        rec["opcode"] = opcode  # a test's oversized frame: its length, not its bytes
        rec["length"] = len(payload)
    else:
        rec["opcode"] = opcode
        rec["payload"] = _text(bytes(payload))
    if not fin:
        rec["fin"] = False
    if masked:
        rec["masked"] = True
    _append(log_path, rec)


def record(port, method, target, req_headers, req_body, status, resp_headers, resp_body):
    """Appends one exchange; resp_headers is the list of (name, value) pairs as sent."""
    service = _services.get(port)
    log_path = os.environ.get("HERALD_CONTRACT_LOG")
    if not log_path or service is None:
        return
    path, _, query = target.partition("?")
    _append(log_path, {
        "test": os.path.basename(sys.argv[0]),
        "check": _current_check,
        "service": service,
        "method": method,
        "path": path,
        "query": query,
        "request": {"headers": {k: str(v) for k, v in req_headers.items()}, "body": _text(req_body)},
        "status": status,
        "response": {"headers": [[k, v] for k, v in resp_headers], "body": _text(resp_body)},
    })
