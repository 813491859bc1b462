"""The WebSocket traffic validator (validate-ws-traffic.mjs) can fail: real
frames of a private gateway, recorded by herald_ws.WsClient as the
integration tests record them, pass it, and the same frames doctored (a field
of the wrong type, an undocumented field, an unknown type, an undocumented
error code, a missing required field, an undocumented close code, ...) each
make it fail, naming the problem."""
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from herald_stack import INGEST_KEY, SRC_DIR, Stack, TestRun, bearer, check, check_eq, http_request  # noqa: E402
from herald_ws import WsClient, WsClosed, user_path  # noqa: E402

ASYNCAPI = os.path.join(SRC_DIR, "proto", "asyncapi.yaml")
VALIDATOR = os.path.join(HERE, "validate-ws-traffic.mjs")


def validate(records, tmp, name):
    """Runs the validator on records; returns (exit status, output)."""
    path = os.path.join(tmp, name + ".jsonl")
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    out = subprocess.run(["node", VALIDATOR, ASYNCAPI, path], capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr


def record_real_frames(stack):
    """Drives one socket through welcome, joined, pong, error, notification
    and a close the gateway starts (a binary frame: error, then 1003)."""
    port = stack.gateway_ports[0]
    c = WsClient("127.0.0.1", port, user_path("alice", rooms=["lobby"]))
    check_eq(c.recv_json()["type"], "welcome")
    c.send_json({"type": "join", "room": "lobby", "ref": 1})
    check_eq(c.recv_type("joined")["ref"], 1)
    c.send_json({"type": "ping", "ref": "p"})
    check_eq(c.recv_type("pong")["ref"], "p")
    c.send_json({"type": "publish", "room": "elsewhere", "message": "hi", "ref": 2})
    check_eq(c.recv_type("error")["ref"], 2)
    s, b = http_request(stack.ingest_port, "POST", "/notifications", {"user_id": "alice", "message": "hi"},
                        bearer(INGEST_KEY))
    check(s == 202, s, b)
    c.recv_type("notification", 10)
    c.send_frame(0x2, b"\x00")
    try:
        while True:
            c.recv_frame()
    except WsClosed as e:
        check_eq(e.code, 1003)
    c.sock.close()


def main():
    t = TestRun()
    tmp = tempfile.mkdtemp(prefix="herald-contract-ws-")
    log = os.path.join(tmp, "frames.jsonl")
    os.environ["HERALD_CONTRACT_WS_LOG"] = log
    stack = Stack(gateways=1, services=("ingest", "gateway"))
    try:
        record_real_frames(stack)
        os.environ.pop("HERALD_CONTRACT_WS_LOG")
        with open(log) as f:
            recs = [json.loads(line) for line in f]

        def frame(rec):
            return json.loads(rec["payload"]["text"])

        def find(direction, kind, cond=lambda r: True):
            for r in recs:
                if r["from"] != direction:
                    continue
                if kind == "close" and "close" in r and cond(r):
                    return r
                if kind != "close" and "payload" in r and frame(r).get("type") == kind and cond(r):
                    return r
            raise AssertionError(f"no recorded {direction} {kind} frame in {len(recs)} records")

        welcome, joined, pong = find("server", "welcome"), find("server", "joined"), find("server", "pong")
        error = find("server", "error", lambda r: frame(r).get("ref") == 2)
        notification = find("server", "notification")
        close = find("server", "close")
        join = find("client", "join")
        cases = []  # (name, doctored records, what the validator must say about the last one)

        def doctored(rec, n):
            r = copy.deepcopy(rec)
            r["conn"] = f"doctored-{n}"  # a connection of its own, so the cases do not meet
            return r

        def frame_case(name, rec, change, want):
            r = doctored(rec, len(cases))
            f = frame(r)
            change(f)
            r["payload"] = {"text": json.dumps(f, separators=(",", ":"))}
            cases.append((name, [r], want))

        def rec_case(name, rec, change, want, before=()):
            n = len(cases)
            rs = [doctored(b, n) for b in before] + [doctored(rec, n)]
            change(rs)
            cases.append((name, rs, want))

        frame_case("a_field_of_the_wrong_type_fails", welcome, lambda f: f.update(connection_id=42),
                   "welcome: payload/connection_id 42 must be string")
        frame_case("an_undocumented_field_fails", pong, lambda f: f.update(latency_ms=3),
                   'pong: payload has the undocumented field "latency_ms"')
        frame_case("an_unknown_type_fails", pong, lambda f: f.update(type="pang"),
                   'frame of the unknown type "pang"')
        frame_case("an_undocumented_error_code_fails", error, lambda f: f.update(code="teapot"),
                   'error: payload/code "teapot" is not documented')
        frame_case("a_missing_required_field_fails", joined, lambda f: f.pop("user_id"),
                   'joined: payload lacks the required field "user_id"')
        frame_case("a_frame_without_type_fails", pong, lambda f: f.pop("type"), 'frame has no "type"')
        frame_case("a_malformed_field_in_the_envelope_fails", notification,
                   lambda f: f["notification"].update(created_at="yesterday"),
                   'notification: payload/notification/created_at "yesterday" must match pattern')
        frame_case("a_ref_of_the_wrong_type_fails", joined, lambda f: f.update(ref=[1]),
                   "joined: payload/ref [1] is none of the allowed a string | a number")
        rec_case("an_undocumented_close_code_fails", close, lambda rs: rs[-1]["close"].update(code=4999),
                 "the gateway's close has the undocumented code 4999 (CloseCode: 1001, 1002,")
        rec_case("a_close_without_status_code_fails", close, lambda rs: rs[-1]["close"].update(code=1005),
                 "the gateway's close carries no status code")
        rec_case("a_close_4001_without_its_error_fails", close, lambda rs: rs[-1]["close"].update(code=4001),
                 "close 4001 is not preceded by the error token_expired")
        rec_case("a_frame_that_is_not_json_fails", pong, lambda rs: rs[-1].update(payload={"text": "pong"}),
                 'frame is not JSON: "pong"')
        rec_case("a_binary_frame_fails", pong, lambda rs: rs[-1].update(opcode=2),
                 "the gateway sent a binary frame")
        rec_case("an_accepted_client_frame_the_contract_refuses_fails", joined,
                 lambda rs: rs[0].update(payload={"text": json.dumps({"type": "join", "room": "not a room",
                                                                      "ref": frame(joined)["ref"]})}),
                 "the gateway accepted (answered joined) the client's frame", before=[join])

        frame_case("a_ref_no_client_frame_sent_fails", pong, lambda f: f.update(ref="nobody"),
                   'the gateway\'s "pong" carries the ref "nobody", which no earlier client frame on this connection sent')
        rec_case("an_answer_to_another_kind_of_frame_fails", pong,
                 lambda rs: rs[-1].update(payload={"text": json.dumps({"type": "pong", "ref": frame(joined)["ref"]})}),
                 'the gateway\'s "pong" carries the ref 1 of the client\'s "join", which "pong" does not answer',
                 before=[join])

        # One run of the validator (its start dominates): the real records, then the doctored ones.
        doctored_recs = [r for c in cases for r in c[1]]
        rc, out = validate(recs + doctored_recs, tmp, "selftest")
        said = {}
        for line in out.splitlines():
            if line.startswith("VIOLATION "):
                n = int(line.split()[1].rsplit(":", 1)[1])
                said.setdefault(n, []).append(line)

        for line in out.splitlines():  # what a reader of a failing contract_ws_traffic sees
            if line.startswith("VIOLATION "):
                print("# " + line[:300])

        def real_frames_pass():
            kinds = {frame(r)["type"] for r in recs if r["from"] == "server" and "payload" in r}
            check(kinds >= {"welcome", "joined", "pong", "error", "notification"}, kinds)
            check(any(r["from"] == "client" for r in recs), "no client frame recorded")
            check(all(r["check"] is None and r["test"] == os.path.basename(__file__) for r in recs), recs[0])
            real = {n: v for n, v in said.items() if n <= len(recs)}
            check(not real, "the validator refused real frames:\n" + "\n".join(sum(real.values(), [])))
            check(rc == 1 and f"# {len(recs) + len(doctored_recs)} frames" in out, rc, out[-2000:])
        t.check("real_frames_of_a_gateway_pass_the_validator", real_frames_pass)

        n = len(recs)
        for name, rs, want in cases:
            n += len(rs)

            def case(n=n, want=want):
                lines = said.get(n, [])
                check(any(want in line for line in lines), f"wanted {want!r} for record {n}, got {lines}")
            t.check(name, case)
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
