#!/usr/bin/env python3
"""log.format = "json": every service writes one JSON object per line (ts,
level, service, event, then the key=value pairs as string members), parsed
here with json.loads line by line, startup to shutdown, with traffic that
logs untrusted text. An unknown format refuses to start."""
import json

from herald_stack import (INGEST_KEY, Stack, TestRun, auth_section, check, http_request,
                          post_notification, wait_until)
from herald_ws import WsClient

AUTH = {"Authorization": f"Bearer {INGEST_KEY}"}
TRICKY_ID = 'a"b\\c{}=x'  # visible ASCII: kept by ingest, quoted and escaped in the log


def parse_lines(name, text):
    """Every line of a service log as a dict; fails on the first that is not a JSON object."""
    out = []
    for i, ln in enumerate(text.splitlines()):
        try:
            o = json.loads(ln)
        except ValueError as e:
            check(False, f"{name} line {i + 1} is not JSON ({e}): {ln!r}")
        check(isinstance(o, dict), f"{name} line {i + 1} is not an object: {ln!r}")
        for k in ("ts", "level", "service", "event"):
            check(isinstance(o.get(k), str) and o[k], f"{name} line {i + 1} lacks {k}: {ln!r}")
        check(o["level"] in ("debug", "info", "warn", "error"), ln)
        check(len(o["ts"]) == 24 and o["ts"].endswith("Z"), ln)
        out.append(o)
    return out


def main():
    t = TestRun()
    stack = Stack(gateways=1, workers=1, config=auth_section() + 'log: { format = "json"; };\n',
                  extra_env={"HERALD_LOG_LEVEL": "debug"})
    logs = {}
    try:
        def traffic():
            s, b = post_notification(stack.ingest_port, {"user_id": "lj", "message": "json logs"},
                                     dict(AUTH, **{"X-Request-Id": TRICKY_ID}))
            check(s == 202, s, b)
            s, b = post_notification(stack.ingest_port, b"{broken", AUTH)
            check(s == 400, s, b)
            http_request(stack.history_port, "GET", "/notifications?user_id=lj")
            http_request(stack.history_port, "GET", "/nowhere")
            try:  # accepted or refused: either way the gateway logs it
                WsClient("127.0.0.1", stack.gateway_ports[0], "/ws?user_id=lj").close()
            except (ConnectionError, OSError):
                pass
            wait_until(lambda: stack.psql("SELECT count(*) FROM notifications WHERE user_id = 'lj'")
                       == "1", 15, "the worker stored the row")
        t.check("traffic_through_every_service", traffic)

        def every_line_is_a_json_object():
            # Stopped first, so the shutdown lines are read too.
            for name, svc in stack.services.items():
                svc.terminate()
                logs[name] = parse_lines(name, svc.log_text())
            want = {"ingest": "ingest", "history": "history", "gateway1": "gateway", "worker1": "worker"}
            for name, service in want.items():
                lines = logs[name]
                check(len(lines) >= 3, name, lines)
                check(all(o["service"] == service for o in lines), name, lines[:3])
                check(any(o["event"] == "stopped" for o in lines), f"{name}: no stopped line")
        t.check("every_line_of_every_service_parses_with_json_loads", every_line_is_a_json_object)

        def pairs_are_members():
            req = [o for o in logs["ingest"] if o["event"] == "request" and o.get("status") == "202"]
            check(len(req) == 1, req)
            check(req[0]["request_id"] == TRICKY_ID, req[0])
            check(req[0]["method"] == "POST" and req[0]["path"] == "/notifications", req[0])
            listen = [o for o in logs["ingest"] if o["event"] == "listening"]
            check(len(listen) == 1 and listen[0]["addr"].startswith("127.0.0.1:"), listen)
        t.check("key_value_pairs_become_members_with_untrusted_text_intact", pairs_are_members)

        def unknown_format_refuses_to_start():
            svc = stack.spawn("ingest_xml", "herald-ingest",
                              {"HERALD_INGEST_PORT": 0, "HERALD_LOG_FORMAT": "xml"})
            svc.expect_exit(1)
            text = svc.log_text()
            check("event=config_invalid" in text and "log.format must be kv or json" in text, text)
        t.check("an_unknown_log_format_refuses_to_start", unknown_format_refuses_to_start)
    finally:
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
