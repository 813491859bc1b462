"""The revocation routes of ingest (proto/auth.md "Revocation", proto/redis.md),
against the real herald-ingest and a private redis-server:
POST /users/{id}/revoke sets herald:revoked:{<id>} to the later of the stored
cut-off and issued_before, with auth.revocation_ttl_s as its TTL, and
publishes {"type":"disconnect","user_id","issued_before"} on herald:control
(a raw SUBSCRIBEd client receives it); POST /users/{id}/disconnect publishes
issued_before null and writes no cut-off; a key not allowed to notify the
user is 403; bad ids and bodies are 400 (413, 415, 405 where they fit);
Redis down is 503."""
import json
import time
import urllib.parse

from herald_promises import request
from herald_stack import Redis, Stack, TestRun, auth_section, bearer, check, check_eq, ingest_key_entry

TTL = 3600
SCOPED_KEY = "revoke-scoped-key-0123456789"  # may notify alice only
KEYS = ", " + ingest_key_entry("alice-only", SCOPED_KEY, 'users = ["alice"];')
CONTROL = "herald:control"


def refused(status, body, want_status, want_code, *what):
    check(status == want_status and isinstance(body, dict)
          and body.get("error", {}).get("code") == want_code, *what, status, body)


def main():
    t = TestRun()
    stack = Stack(services=("ingest",),
                  config=auth_section(extra_ingest_keys=KEYS, settings=f"  revocation_ttl_s = {TTL};\n"))
    sub = Redis(stack.redis_port)
    try:
        port, r = stack.ingest_port, stack.redis
        check_eq(sub.cmd("SUBSCRIBE", CONTROL), ["subscribe", CONTROL, 1])

        def post(user, action, body=None, key=None, headers=None, quote=True):
            from herald_stack import INGEST_KEY
            h = bearer(key or INGEST_KEY)
            h.update(headers or {})
            path = f"/users/{urllib.parse.quote(user, safe='') if quote else user}/{action}"
            return request(port, "POST", path, body, h)

        def next_order():
            kind, channel, data = sub._read()
            check_eq((kind, channel), ("message", CONTROL))
            return json.loads(data)

        def receivers():
            return r.cmd("PUBSUB", "NUMSUB", CONTROL)[1]

        def revoke_sets_the_cutoff_with_its_ttl_and_publishes_the_order():
            cut = int(time.time()) - 10
            s, _, b = post("alice", "revoke", {"issued_before": cut})
            check_eq(s, 200, b)
            check_eq(b, {"user_id": "alice", "issued_before": cut, "gateways": receivers()})
            check_eq(b["gateways"], 1, "the test's subscriber got it")
            check_eq(r.cmd("GET", "herald:revoked:{alice}"), str(cut))
            ttl = r.cmd("TTL", "herald:revoked:{alice}")
            check(0 < ttl <= TTL, "TTL from auth.revocation_ttl_s", ttl)
            check_eq(next_order(), {"type": "disconnect", "user_id": "alice", "issued_before": cut})
        t.check("revoke_sets_the_cutoff_with_its_ttl_and_publishes_the_order",
                revoke_sets_the_cutoff_with_its_ttl_and_publishes_the_order)

        def an_earlier_revoke_keeps_the_later_cutoff():
            later = int(r.cmd("GET", "herald:revoked:{alice}"))
            s, _, b = post("alice", "revoke", {"issued_before": later - 100})
            check_eq(s, 200, b)
            check_eq(b["issued_before"], later, "the answer is the cut-off in force")
            check_eq(r.cmd("GET", "herald:revoked:{alice}"), str(later))
            check_eq(next_order()["issued_before"], later)
            # Without a body the cut-off is now, which is later.
            t0 = int(time.time())
            s, _, b = post("alice", "revoke")
            t1 = int(time.time())
            check(s == 200 and t0 <= b["issued_before"] <= t1, "default: now", t0, t1, s, b)
            check_eq(r.cmd("GET", "herald:revoked:{alice}"), str(b["issued_before"]))
            check_eq(next_order()["issued_before"], b["issued_before"])
        t.check("an_earlier_revoke_keeps_the_later_cutoff", an_earlier_revoke_keeps_the_later_cutoff)

        def disconnect_publishes_issued_before_null_and_writes_no_cutoff():
            for body in (None, {}):
                s, _, b = post("bob", "disconnect", body)
                check_eq(s, 200, b)
                check_eq(b, {"user_id": "bob", "issued_before": None, "gateways": 1})
                check_eq(next_order(), {"type": "disconnect", "user_id": "bob", "issued_before": None})
            check_eq(r.cmd("EXISTS", "herald:revoked:{bob}"), 0)
        t.check("disconnect_publishes_issued_before_null_and_writes_no_cutoff",
                disconnect_publishes_issued_before_null_and_writes_no_cutoff)

        def a_user_id_is_percent_decoded_and_json_escaped():
            odd = 'a b/"c\\é'
            s, _, b = post(odd, "revoke", {"issued_before": 5})
            check_eq(s, 200, b)
            check_eq(b["user_id"], odd)
            check_eq(r.cmd("GET", "herald:revoked:{" + odd + "}"), "5")
            check_eq(next_order(), {"type": "disconnect", "user_id": odd, "issued_before": 5})
        t.check("a_user_id_is_percent_decoded_and_json_escaped",
                a_user_id_is_percent_decoded_and_json_escaped)

        def a_key_not_allowed_to_notify_the_user_is_403():
            for action in ("revoke", "disconnect"):
                s, _, b = post("bob", action, key=SCOPED_KEY)
                refused(s, b, 403, "out_of_scope", action)
            check_eq(r.cmd("EXISTS", "herald:revoked:{bob}"), 0)
            # The scoped key may act on alice; the next order is that one, not bob's.
            s, _, b = post("alice", "disconnect", key=SCOPED_KEY)
            check_eq(s, 200, b)
            check_eq(next_order()["user_id"], "alice", "no order was published for bob")
            s, _, b = post("alice", "revoke", headers={"Authorization": "Bearer nope"})
            refused(s, b, 401, "unknown_key", "wrong key")
        t.check("a_key_not_allowed_to_notify_the_user_is_403", a_key_not_allowed_to_notify_the_user_is_403)

        def bad_ids_and_bodies_are_refused():
            before = r.cmd("GET", "herald:revoked:{alice}")
            for path_id, what in (("", "empty id"), ("%01x", "control character"),
                                  ("%FF", "not UTF-8"), ("%00", "NUL"), ("u" * 129, "129 bytes")):
                s, _, b = post(path_id, "revoke", quote=False)
                refused(s, b, 400, "invalid_field", what)
            now = int(time.time())
            for body, code, what in (
                    ({"issued_before": "1"}, "invalid_field", "a string"),
                    ({"issued_before": 1.5}, "invalid_field", "a fraction"),
                    ({"issued_before": -1}, "invalid_field", "negative"),
                    ({"issued_before": now + 86400}, "invalid_field", "a day ahead"),
                    ({"issued_before": True}, "invalid_field", "a boolean"),
                    ({"issued_before": 1, "x": 1}, "unknown_field", "another member"),
                    (b"not json", "invalid_json", "not JSON"),
                    (b"[1]", "invalid_json", "not an object"),
                    (b'{"issued_before":1,"issued_before":2}', "invalid_json", "a member twice")):
                s, _, b = post("alice", "revoke", body)
                refused(s, b, 400, code, what)
            s, _, b = post("alice", "disconnect", {"issued_before": 1})
            refused(s, b, 400, "unknown_field", "disconnect takes no issued_before")
            s, _, b = post("alice", "revoke", b'{"issued_before":1}', headers={"Content-Type": "text/plain"})
            refused(s, b, 415, "unsupported_media_type", "not JSON content")
            s, _, b = post("alice", "revoke", b'{"issued_before":1' + b" " * 2000 + b"}")
            refused(s, b, 413, "body_too_large", "over 1 KiB")
            s, _, b = request(port, "GET", "/users/alice/revoke", headers=bearer(SCOPED_KEY))
            refused(s, b, 405, "method_not_allowed", "GET")
            s, _, b = request(port, "POST", "/users/alice/ban", headers=bearer(SCOPED_KEY))
            refused(s, b, 404, "not_found", "another action")
            check_eq(r.cmd("GET", "herald:revoked:{alice}"), before, "no refusal changed the cut-off")
            # Within the allowed clock skew a future cut-off is accepted.
            s, _, b = post("carol", "revoke", {"issued_before": now + 60})
            check_eq(s, 200, b)
            check_eq(next_order()["user_id"], "carol", "only the accepted request published")
        t.check("bad_ids_and_bodies_are_refused", bad_ids_and_bodies_are_refused)

        def redis_down_is_503():
            stack.stop_redis()
            for action in ("revoke", "disconnect"):
                s, h, b = post("alice", action)
                refused(s, b, 503, "unavailable", action)
                check("retry-after" in h, h)
        t.check("redis_down_is_503", redis_down_is_503)
    finally:
        sub.close()
        stack.stop()
    t.finish()


if __name__ == "__main__":
    main()
