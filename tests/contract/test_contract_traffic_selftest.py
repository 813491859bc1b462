"""The traffic validator (validate-traffic.mjs) can fail: real exchanges with
a private stack pass it, and the same exchanges with one answer doctored (a
field of the wrong type, an unknown field, an undocumented status, header or
Content-Type, a missing newline) each make it fail, naming the problem."""
import copy
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from herald_stack import (INGEST_KEY, SRC_DIR, Stack, TestRun, bearer, check, http_request,  # noqa: E402
                          mint_token, wait_until)

OPENAPI = os.path.join(SRC_DIR, "proto", "openapi.yaml")
VALIDATOR = os.path.join(HERE, "validate-traffic.mjs")


def validate(records, tmp, name):
    """Runs the validator on records; returns (exit status, output)."""
    path = os.path.join(tmp, name + ".jsonl")
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    out = subprocess.run(["node", VALIDATOR, OPENAPI, path], capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr


def body_of(rec):
    return json.loads(rec["response"]["body"]["text"])


def with_body(rec, obj):
    r = copy.deepcopy(rec)
    text = json.dumps(obj, separators=(",", ":")) + "\n"
    r["response"]["body"] = {"text": text}
    r["response"]["headers"] = [[k, str(len(text)) if k.lower() == "content-length" else v]
                                for k, v in r["response"]["headers"]]
    return r


def main():
    t = TestRun()
    tmp = tempfile.mkdtemp(prefix="herald-contract-")
    log = os.path.join(tmp, "traffic.jsonl")
    os.environ["HERALD_CONTRACT_LOG"] = log
    stack = Stack(gateways=0, services=("ingest", "worker", "history"))
    try:
        ip, hp = stack.ingest_port, stack.history_port
        key = bearer(INGEST_KEY)
        s, b = http_request(ip, "POST", "/notifications", {"user_id": "alice", "message": "hi"}, key)
        check(s == 202, s, b)
        http_request(ip, "POST", "/notifications", {"user_id": "alice"}, key)  # 400 missing_field
        alice = bearer(mint_token("alice"))
        wait_until(lambda: http_request(hp, "GET", "/notifications", headers=alice)[1]["items"], 15,
                   "the notification in history")
        http_request(hp, "GET", "/notifications/unread-count", headers=alice)
        http_request(hp, "GET", "/nope")
        http_request(hp, "OPTIONS", "/notifications")
        http_request(hp, "GET", "/readyz")
        http_request(ip, "GET", "/healthz")
        os.environ.pop("HERALD_CONTRACT_LOG")
        with open(log) as f:
            recs = [json.loads(line) for line in f]

        def find(service, method, path, status, cond=lambda r: True):
            for r in recs:
                if (r["service"], r["method"], r["path"], r["status"]) == (service, method, path, status) \
                        and cond(r):
                    return r
            raise AssertionError(f"no recorded {service} {method} {path} {status} in {len(recs)} records")

        page = find("history", "GET", "/notifications", 200, lambda r: body_of(r)["items"])
        accepted = find("ingest", "POST", "/notifications", 202)
        cases = []  # (name, doctored record, what the validator must say about it)

        def body_case(name, rec, change, want):
            b = body_of(rec)
            change(b)
            cases.append((name, with_body(rec, b), want))

        def rec_case(name, rec, change, want):
            r = copy.deepcopy(rec)
            change(r)
            cases.append((name, r, want))

        body_case("a_field_of_the_wrong_type_fails", page,
                  lambda b: b.update(unread_count=str(b["unread_count"])), "body/unread_count must be integer")
        body_case("a_malformed_timestamp_in_an_item_fails", page,
                  lambda b: b["items"][0].update(created_at="yesterday"), "body/items/0/created_at must match")
        body_case("an_undocumented_field_fails", accepted, lambda b: b.update(stored=True),
                  "must NOT have additional properties (stored)")
        body_case("a_missing_required_field_fails", page, lambda b: b.pop("next_cursor"),
                  "must have required property 'next_cursor'")
        rec_case("an_undocumented_status_fails", accepted, lambda r: r.update(status=201),
                 "status 201 is not documented")
        body_case("a_framing_status_with_another_code_fails", page,
                  lambda b: (b.clear(), b.update(error={"code": "not_found", "message": "x"})),
                  "status 413 is not documented for GET /notifications")
        cases[-1][1]["status"] = 413
        rec_case("an_undocumented_header_fails", accepted,
                 lambda r: r["response"]["headers"].append(["X-Debug", "1"]), "additional properties (x-debug)")
        rec_case("an_undocumented_content_type_fails", page,
                 lambda r: r["response"].update(headers=[[k, "text/html" if k.lower() == "content-type" else v]
                                                         for k, v in r["response"]["headers"]]),
                 "Content-Type text/html is not one of application/json")
        rec_case("a_json_answer_without_its_newline_fails", accepted,
                 lambda r: r["response"]["body"].update(text=r["response"]["body"]["text"].rstrip("\n")),
                 "does not end with a newline")
        rec_case("an_unknown_path_answered_other_than_404_fails", find("history", "GET", "/nope", 404),
                 lambda r: r.update(status=200), "a path the service does not have was answered 200")
        rec_case("an_accepted_request_the_contract_refuses_fails", accepted,
                 lambda r: r["request"].update(body={"text": json.dumps({"user_id": "alice", "message": "hi",
                                                                         "priority": 1})}),
                 "the accepted request/requestBody must NOT have additional properties (priority)")
        rec_case("an_ingest_route_answered_by_history_fails", accepted, lambda r: r.update(service="history"),
                 "a method the path does not take")

        # One run of the validator (its start dominates): the real records, then the doctored ones.
        rc, out = validate(recs + [c[1] for c in cases], tmp, "selftest")
        said = {}
        for line in out.splitlines():
            if line.startswith("VIOLATION "):
                n = int(line.split()[1].rsplit(":", 1)[1])
                said.setdefault(n, []).append(line)

        def real_exchanges_pass():
            check(len(recs) >= 8, len(recs))
            real = {n: v for n, v in said.items() if n <= len(recs)}
            check(not real, "the validator refused real traffic:\n" + "\n".join(sum(real.values(), [])))
            check(rc == 1 and f"{len(recs) + len(cases)} exchanges" in out, rc, out[-2000:])
        t.check("real_exchanges_with_ingest_and_history_pass_the_validator", real_exchanges_pass)

        for i, (name, _, want) in enumerate(cases):
            n = len(recs) + 1 + i

            def case(n=n, want=want):
                lines = said.get(n, [])
                check(any(want in line for line in lines), f"wanted {want!r} for record {n}, got {lines}")
            t.check(name, case)
    finally:
        stack.stop()
    t.finish()


if __name__ == "__main__":
    main()
