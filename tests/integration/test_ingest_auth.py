"""Ingest's API keys (proto/auth.md, "Ingest API keys" and "Where each
service checks → Ingest"), against the real herald-ingest and a private
redis-server: every route but the probes needs `Authorization: Bearer <key>`
(401 unknown_key with WWW-Authenticate), a target outside the key's scope is
403 out_of_scope with nothing written (a fan-out user, a room, one item of a
batch), an empty bucket is 429 over_rate with a Retry-After after which the
key works again, the key's name is in the log line of its requests and the
key itself in no line, and ingest.allow_anonymous is off unless set."""
import time

from herald_promises import request
from herald_stack import (INGEST_KEY, INGEST_KEY_NAME, Stack, TestRun, auth_section, bearer, check,
                          check_eq, ingest_key_entry)

STREAM = "herald:stream:notifications"
SCOPED_KEY = "scoped-key-0123456789abcdef"   # users alice and carol, rooms team:*
SLOW_KEY = "slow-key-0123456789abcdef"       # one request a second, no burst
WRONG_KEY = "not-a-configured-key-0123456789"
KEYS = (', ' + ingest_key_entry("scoped", SCOPED_KEY, 'users = ["alice", "carol"]; rooms = ["team:*"];')
        + ', ' + ingest_key_entry("slow", SLOW_KEY, "rate = 1; burst = 1;"))
NOTE = {"user_id": "alice", "message": "hi"}


def xlen(stack):
    return stack.redis.cmd("XLEN", STREAM)


def refused(status, body, want_status, want_code, *what):
    check(status == want_status and isinstance(body, dict)
          and body.get("error", {}).get("code") == want_code, *what, status, body)


def main():
    t = TestRun()
    stack = Stack(services=("ingest",), config=auth_section(extra_ingest_keys=KEYS),
                  extra_env={"HERALD_LOG_LEVEL": "debug"})
    try:
        port = stack.ingest_port

        def post(path, body, key=INGEST_KEY, headers=None):
            h = bearer(key) if key is not None else {}
            h.update(headers or {})
            return request(port, "POST", path, body, h)

        def a_request_without_a_key_is_401_with_www_authenticate():
            n = xlen(stack)
            s, h, b = post("/notifications", NOTE, key=None)
            refused(s, b, 401, "unknown_key", "no Authorization")
            check(h.get("www-authenticate", "").startswith("Bearer"), "WWW-Authenticate", h)
            # allow_anonymous is off by default: the stack does not set it.
            check_eq(xlen(stack), n, "nothing written")
        t.check("a_request_without_a_key_is_401_with_www_authenticate",
                a_request_without_a_key_is_401_with_www_authenticate)

        def a_wrong_or_malformed_key_is_401():
            n = xlen(stack)
            for name, hdr in (("unknown key", bearer(WRONG_KEY)),
                              ("another scheme", {"Authorization": f"Basic {INGEST_KEY}"}),
                              ("no key after Bearer", {"Authorization": "Bearer "}),
                              ("the key's hash", bearer(ingest_key_entry("x", INGEST_KEY).split('"')[3]))):
                s, h, b = post("/notifications", NOTE, key=None, headers=hdr)
                refused(s, b, 401, "unknown_key", name)
                check("www-authenticate" in h, name, h)
            check_eq(xlen(stack), n, "nothing written")
            # The scheme is case-insensitive and blanks around the key are dropped.
            s, _, b = post("/notifications", NOTE, key=None,
                           headers={"Authorization": f"bearer   {INGEST_KEY}  "})
            check_eq(s, 202, b)
        t.check("a_wrong_or_malformed_key_is_401", a_wrong_or_malformed_key_is_401)

        def every_route_but_the_probes_needs_a_key():
            for method, path, body in (("POST", "/notifications/batch", {"notifications": [NOTE]}),
                                       ("POST", "/users/alice/revoke", None),
                                       ("POST", "/users/alice/disconnect", None),
                                       ("GET", "/notifications", None),
                                       ("GET", "/no/such/route", None)):
                s, _, b = request(port, method, path, body)
                refused(s, b, 401, "unknown_key", method, path)
            s, _, b = request(port, "GET", "/healthz")
            check_eq(s, 200, "/healthz without a key", b)
            # With a key, an unknown route is still 404.
            s, _, b = request(port, "GET", "/no/such/route", headers=bearer(INGEST_KEY))
            refused(s, b, 404, "not_found", "unknown route with a key")
        t.check("every_route_but_the_probes_needs_a_key", every_route_but_the_probes_needs_a_key)

        def a_target_outside_the_scope_is_403_and_nothing_is_written():
            n = xlen(stack)
            cases = (
                ("/notifications", {"user_id": "bob", "message": "m"}, "user"),
                ("/notifications", {"user_ids": ["alice", "bob"], "message": "m"}, "fan-out user"),
                ("/notifications", {"room": "lobby", "message": "m"}, "room"),
                ("/notifications", {"room": "team", "message": "m"}, "room without the prefix"),
                ("/notifications/batch", {"notifications": [
                    {"user_id": "alice", "message": "m"}, {"room": "team:red", "message": "m"},
                    {"user_id": "bob", "message": "m"}]}, "one batch item"),
            )
            for path, body, what in cases:
                s, _, b = post(path, body, key=SCOPED_KEY)
                refused(s, b, 403, "out_of_scope", what)
                check_eq(xlen(stack), n, what, "wrote to the stream")
            # What the scope allows goes through: 1 + 2 + 1 + 2 entries.
            for path, body in (("/notifications", {"user_id": "alice", "message": "m"}),
                               ("/notifications", {"user_ids": ["alice", "carol"], "message": "m"}),
                               ("/notifications", {"room": "team:red", "message": "m"}),
                               ("/notifications/batch", {"notifications": [
                                   {"user_id": "carol", "message": "m"},
                                   {"room": "team:blue", "message": "m"}]})):
                s, _, b = post(path, body, key=SCOPED_KEY)
                check_eq(s, 202, path, body, b)
            check_eq(xlen(stack), n + 6, "in-scope writes")
            # A key without users/rooms may notify anyone.
            s, _, b = post("/notifications", {"user_id": "bob", "message": "m"})
            check_eq(s, 202, b)
        t.check("a_target_outside_the_scope_is_403_and_nothing_is_written",
                a_target_outside_the_scope_is_403_and_nothing_is_written)

        def over_the_rate_is_429_with_retry_after_and_works_after_it():
            # A request refused as out of scope would take nothing; the bucket
            # holds one request: the first passes, the next is refused.
            s, _, b = post("/notifications", NOTE, key=SLOW_KEY)
            check_eq(s, 202, "first request of the bucket", b)
            n = xlen(stack)
            s, h, b = post("/notifications", NOTE, key=SLOW_KEY)
            refused(s, b, 429, "over_rate", "second request")
            retry = int(h.get("retry-after", "0"))
            check(retry >= 1, "Retry-After >= 1", h)
            s, h2, b = post("/notifications/batch", {"notifications": [NOTE]}, key=SLOW_KEY)
            refused(s, b, 429, "over_rate", "batch while over")
            check_eq(xlen(stack), n, "nothing written while over the rate")
            # Other keys have their own buckets.
            s, _, b = post("/notifications", NOTE)
            check_eq(s, 202, "another key", b)
            # The client does what the answer says: waits Retry-After seconds.
            time.sleep(retry)
            s, _, b = post("/notifications", NOTE, key=SLOW_KEY)
            check_eq(s, 202, f"after waiting Retry-After ({retry} s)", b)
        t.check("over_the_rate_is_429_with_retry_after_and_works_after_it",
                over_the_rate_is_429_with_retry_after_and_works_after_it)

        def idempotency_keys_are_scoped_to_the_api_key():
            body = {"user_id": "alice", "message": "once per key"}
            h = {"Idempotency-Key": "shared-1"}
            s1, _, a1 = post("/notifications", body, headers=h)
            s2, _, a2 = post("/notifications", body, key=SCOPED_KEY, headers=h)
            check(s1 == 202 and s2 == 202 and a1["id"] != a2["id"],
                  "another key's same Idempotency-Key is a new request, not a replay", a1, a2)
            s3, _, a3 = post("/notifications", {"user_id": "carol", "message": "other body"},
                             key=SCOPED_KEY, headers={"Idempotency-Key": "shared-1-b"})
            check_eq(s3, 202, a3)
            s4, _, a4 = post("/notifications", {"user_id": "carol", "message": "x"},
                             headers={"Idempotency-Key": "shared-1-b"})
            check_eq(s4, 202, "no 409 across keys", a4)
            s5, _, a5 = post("/notifications", body, headers=h)
            check(s5 == 202 and a5 == a1, "the same key still replays its own answer", a5, a1)
            check_eq(stack.redis.cmd("EXISTS", "herald:idem:12:test/default:shared-1",
                                     "herald:idem:14:scoped/default:shared-1"), 2)
        t.check("idempotency_keys_are_scoped_to_the_api_key", idempotency_keys_are_scoped_to_the_api_key)

        def the_key_name_is_logged_and_the_key_never():
            text = stack.services["ingest"].log_text()
            lines = [ln for ln in text.splitlines() if "event=request " in ln]
            check(any("status=202" in ln and f"key={INGEST_KEY_NAME}" in ln for ln in lines),
                  "a 202 line with key=test", lines[-5:])
            check(any("status=403" in ln and "key=scoped" in ln for ln in lines),
                  "a 403 line with key=scoped", lines[-5:])
            check(any("status=429" in ln and "key=slow" in ln for ln in lines),
                  "a 429 line with key=slow", lines[-5:])
            check(any("status=401" in ln and "key=-" in ln for ln in lines),
                  "a 401 line without a key name", lines[-5:])
            for secret in (INGEST_KEY, SCOPED_KEY, SLOW_KEY, WRONG_KEY):
                check(secret not in text, "a key's text is in the log", secret)
        t.check("the_key_name_is_logged_and_the_key_never", the_key_name_is_logged_and_the_key_never)
    finally:
        stack.stop()

    stack = Stack(services=("ingest",), extra_env={"HERALD_INGEST_ALLOW_ANONYMOUS": "true"})
    try:
        port = stack.ingest_port

        def allow_anonymous_accepts_no_key_but_not_a_wrong_one():
            s, _, b = request(port, "POST", "/notifications", NOTE)
            check_eq(s, 202, "no key with allow_anonymous", b)
            s, _, b = request(port, "POST", "/notifications", NOTE, bearer(WRONG_KEY))
            refused(s, b, 401, "unknown_key", "a wrong key is still refused")
            s, _, b = request(port, "POST", "/notifications", NOTE, bearer(INGEST_KEY))
            check_eq(s, 202, "a right key", b)
            text = stack.services["ingest"].log_text()
            check("level=warn" in text and "event=allow_anonymous" in text,
                  "a warning at start", text[-1500:])
        t.check("allow_anonymous_accepts_no_key_but_not_a_wrong_one",
                allow_anonymous_accepts_no_key_but_not_a_wrong_one)
    finally:
        stack.stop()
    t.finish()


if __name__ == "__main__":
    main()
