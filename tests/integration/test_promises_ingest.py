"""Ingest promises of proto/redis.md and proto/openapi.yaml that no other test
drove: the NOSCRIPT path (503 + Retry-After, nothing written, reload, retry
with the same key), Retry-After while Redis is down, an idempotency key used
on the other endpoint (409), requests refused before the script are retryable
with the same key, and the key/scope length limits."""
import json

from herald_promises import Checks, check, request
from herald_stack import INGEST_KEY_NAME, Stack, TestRun, ingest_headers, wait_until

NOTIFY = "herald:stream:notifications"

# Checks known to fail against the current code (name → why); printed as skipped.
EXPECTED_FAILURES = {}


def idem_key(client, key, key_name=INGEST_KEY_NAME):
    """The record's name: the scope is "<API key name>/<X-Herald-Client or default>"."""
    scope = f"{key_name}/{client}"
    return f"herald:idem:{len(scope)}:{scope}:{key}"


def main():
    t = TestRun()
    run = Checks(t, EXPECTED_FAILURES)
    stack = Stack(services=("ingest",))
    port = stack.ingest_port

    def post(body, headers=None, path="/notifications"):
        return request(port, "POST", path, body, ingest_headers(headers))

    def xlen():
        return stack.redis.cmd("XLEN", NOTIFY)

    def script_loads():
        info = stack.redis.cmd("INFO", "commandstats")
        for line in info.splitlines():
            if line.startswith("cmdstat_script|load:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    try:
        def noscript_is_resent_as_eval():
            # A script flush answers NOSCRIPT, which means nothing was written:
            # ingest resends the call as EVAL (issue 9 item 21) instead of 503.
            s, _, a = post({"user_id": "ns", "message": "warm"})
            check(s == 202, "warm-up accepted", s, a)
            before = xlen()
            loads_before = script_loads()
            check(stack.redis.cmd("SCRIPT", "FLUSH") == "OK", "script cache flushed")
            h = {"Idempotency-Key": "after-flush"}
            body = {"user_id": "ns", "message": "after the flush"}
            s, _, a = post(body, h)
            check(s == 202 and len(a["id"]) == 36, "the call after the flush is accepted", s, a)
            check(xlen() == before + 1, "written once")
            s2, _, a2 = post(body, h)
            check(s2 == 202 and a2 == a, "a retry with the key replays the first answer", a2)
            check(xlen() == before + 1, "still written once")
            wait_until(lambda: script_loads() > loads_before, 10, "the script loaded again")
        run("noscript_is_resent_as_eval_and_the_script_reloaded", noscript_is_resent_as_eval)

        def redis_down_503_retryable():
            h = {"Idempotency-Key": "during-outage"}
            body = {"user_id": "down", "message": "while redis is away"}
            stack.stop_redis()
            try:
                wait_until(lambda: request(port, "GET", "/readyz")[0] == 503, 10, "ingest sees redis down")
                for path, b in (("/notifications", body),
                                ("/notifications/batch", {"notifications": [body]})):
                    s, hdr, a = post(b, h, path)
                    check(s == 503 and a["error"]["code"] == "unavailable", "503 while down", path, s, a)
                    check(hdr.get("retry-after") == "1", "Retry-After while down", path, hdr)
            finally:
                stack.start_redis()
                # Also when a check above failed: the next checks need ingest back.
                wait_until(lambda: request(port, "GET", "/readyz")[0] == 200, 15, "ingest reconnected")
            s, _, a = wait_until(lambda: (lambda x: x if x[0] != 503 else None)(post(body, h)), 10,
                                 "the script loaded again")
            check(s == 202, "same key accepted after the outage", s, a)
            entries = stack.redis.cmd("XRANGE", NOTIFY, "-", "+")
            ids = [dict(zip(f[::2], f[1::2]))["id"] for _, f in entries]
            check(ids == [a["id"]], "exactly the retried notification is in the (new) stream", ids)
        run("redis_down_gives_503_with_retry_after_and_the_same_key_works_after",
            redis_down_503_retryable)

        def other_endpoint_conflicts():
            h = {"Idempotency-Key": "cross-endpoint"}
            s, _, a = post({"user_id": "x1", "message": "single"}, h)
            check(s == 202, "first use", s, a)
            before = xlen()
            s, _, a = post({"notifications": [{"user_id": "x1", "message": "single"}]}, h,
                           "/notifications/batch")
            check(s == 409 and a["error"]["code"] == "idempotency_conflict",
                  "the key used on /notifications conflicts on /notifications/batch", s, a)
            check(xlen() == before, "the conflict wrote nothing")
            # And the other way round.
            hb = {"Idempotency-Key": "cross-endpoint-2"}
            s, _, a = post({"notifications": [{"user_id": "x2", "message": "batched"}]}, hb,
                           "/notifications/batch")
            check(s == 202, "batch first", s, a)
            s, _, a = post({"user_id": "x2", "message": "batched"}, hb)
            check(s == 409 and a["error"]["code"] == "idempotency_conflict",
                  "the key used on the batch conflicts on /notifications", s, a)
        run("idempotency_key_used_on_the_other_endpoint_gives_409", other_endpoint_conflicts)

        def refused_before_script_keeps_key_free():
            key = "refused-first"
            h = {"Idempotency-Key": key}
            refusals = [
                (b'{"user_id": "r", "message": ', {}, 400, "invalid_json"),
                (b'{"user_id": "r"}', {}, 400, "missing_field"),
                (b'{"user_id": "r", "message": "m", "priority": 1}', {}, 400, "unknown_field"),
                (b'{"user_id": "r", "message": "m"}', {"Content-Type": "text/plain"}, 415,
                 "unsupported_media_type"),
                (b'{"user_id": "r", "message": "' + b"x" * 70000 + b'"}', {}, 413, "body_too_large"),
            ]
            before = xlen()
            for raw, extra, status, code in refusals:
                s, _, a = post(raw, dict(h, **extra))
                check(s == status and isinstance(a, dict) and a["error"]["code"] == code,
                      "refused", status, code, s, a)
                check(stack.redis.cmd("EXISTS", idem_key("default", key)) == 0,
                      "a refusal stores no idempotency record", code)
            check(xlen() == before, "refusals wrote nothing")
            s, _, a = post({"user_id": "r", "message": "finally valid"}, h)
            check(s == 202, "the same key is then accepted with a valid body", s, a)
            stored = stack.redis.cmd("GET", idem_key("default", key))
            check(stored is not None and json.loads(stored[40:]) == a,
                  "the record is sha1 + the 202 answer", stored)
            check(xlen() == before + 1, "written once")
        run("requests_refused_before_the_script_leave_the_key_usable",
            refused_before_script_keeps_key_free)

        def key_and_scope_limits():
            body = {"user_id": "lim", "message": "limits"}
            k255 = "k" * 254 + "~"
            s, _, a = post(body, {"Idempotency-Key": k255})
            check(s == 202, "255-byte key accepted", s, a)
            check(stack.redis.cmd("EXISTS", idem_key("default", k255)) == 1, "stored under its full name")
            for bad in ("k" * 256, "", "tab\there", "caf\u00e9".encode().decode("latin-1")):
                s, _, a = post(body, {"Idempotency-Key": bad})
                check(s == 400 and a["error"]["code"] == "invalid_field", "bad key refused", bad[:20], s, a)
            scope128 = "c" * 127 + "!"
            s, _, a = post(body, {"Idempotency-Key": "scoped", "X-Herald-Client": scope128})
            check(s == 202, "128-byte scope accepted", s, a)
            check(stack.redis.cmd("EXISTS", idem_key(scope128, "scoped")) == 1,
                  "stored as herald:idem:133:test/<scope>:<key>")
            for bad in ("c" * 129, "", "two words"):
                s, _, a = post(body, {"Idempotency-Key": "scoped", "X-Herald-Client": bad})
                check(s == 400 and a["error"]["code"] == "invalid_field", "bad scope refused", bad[:20], s, a)
            # A bad scope is refused even without a key.
            s, _, a = post(body, {"X-Herald-Client": "c" * 129})
            check(s == 400 and a["error"]["code"] == "invalid_field", "bad scope without key", s, a)
            # The scope's length keeps "a:b" + "c" and "a" + "b:c" apart.
            s1, _, a1 = post(body, {"X-Herald-Client": "a:b", "Idempotency-Key": "c"})
            s2, _, a2 = post(body, {"X-Herald-Client": "a", "Idempotency-Key": "b:c"})
            check(s1 == 202 and s2 == 202 and a1["id"] != a2["id"], "two distinct keys", a1, a2)
            check(stack.redis.cmd("EXISTS", idem_key("a:b", "c"), idem_key("a", "b:c")) == 2,
                  "both records exist")
        run("idempotency_key_and_scope_length_limits", key_and_scope_limits)
    finally:
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
