"""A NUL character (the escape \\u0000 or a raw 0 byte) anywhere in a POST
body is refused by ingest with 400 before the write script runs: in message,
type, data (a value or a key, at any depth), user_id, user_ids, room, and in
an item of a batch. The worker dead-letters envelopes that hold one
(PostgreSQL text cannot), so none may reach the stream. Drives the real
herald-ingest against a private redis-server."""
import json
import re

from herald_stack import Stack, TestRun, check, check_eq, ingest_request

STREAM = "herald:stream:notifications"

# Each body once with the \u0000 escape (JSON text) and once with a raw 0 byte.
NUL_PLACES = {
    "message": '{"user_id":"u1","message":"a%sb"}',
    "type": '{"user_id":"u1","type":"t%sx","message":"m"}',
    "data_value": '{"user_id":"u1","message":"m","data":{"k":"v%sw"}}',
    "data_key": '{"user_id":"u1","message":"m","data":{"k%s":1}}',
    "data_nested": '{"user_id":"u1","message":"m","data":{"a":[{"b":"%s"}]}}',
    "user_id": '{"user_id":"u%s1","message":"m"}',
    "user_ids": '{"user_ids":["u1","u%s2"],"message":"m"}',
    "room": '{"room":"r%s1","message":"m"}',
    "top_level_key": '{"user_id":"u1","message":"m","type%s":"x"}',
}
NULS = {"escape": "\\u0000", "raw": "\x00"}


def script_calls(redis):
    """EVAL + EVALSHA calls so far (INFO commandstats)."""
    info = redis.cmd("INFO", "commandstats")
    n = 0
    for name in ("eval", "evalsha"):
        m = re.search(r"^cmdstat_" + name + r":calls=(\d+)", info, re.M)
        n += int(m.group(1)) if m else 0
    return n


def main():
    t = TestRun()
    stack = Stack(services=("ingest",))
    try:
        port, r = stack.ingest_port, stack.redis

        def post(path, raw):
            return ingest_request(port, "POST", path, raw)

        def nul_anywhere_in_a_post_is_400_before_the_script():
            # A valid POST first, so the script is loaded and counted once.
            st, _ = post("/notifications", b'{"user_id":"u1","message":"ok"}')
            check_eq(st, 202)
            calls, xlen = script_calls(r), r.cmd("XLEN", STREAM)
            for place, tmpl in NUL_PLACES.items():
                for how, nul in NULS.items():
                    raw = (tmpl % nul).encode()
                    st, body = post("/notifications", raw)
                    check(st == 400 and isinstance(body, dict), place, how, st, body)
                    check_eq(body["error"]["code"], "invalid_json", place, how)
            check_eq(script_calls(r), calls, "a refused POST ran the script")
            check_eq(r.cmd("XLEN", STREAM), xlen, "a refused POST reached the stream")

        def nul_in_a_batch_item_refuses_that_item_only():
            xlen = r.cmd("XLEN", STREAM)
            for how, nul in NULS.items():
                items = ['{"user_id":"u1","message":"good %s"}' % how,
                         NUL_PLACES["message"] % nul, NUL_PLACES["data_value"] % nul]
                raw = ('{"notifications":[%s]}' % ",".join(items)).encode()
                st, body = post("/notifications/batch", raw)
                if how == "raw":
                    # A raw 0 byte is not UTF-8 text: the whole batch is refused.
                    check(st == 400 and body["error"]["code"] == "invalid_json", how, st, body)
                    continue
                check(st == 202 and body["accepted"] == 1 and body["rejected"] == 2, how, st, body)
                for res in body["results"][1:]:
                    check_eq(res["error"]["code"], "invalid_json", how, res)
            check_eq(r.cmd("XLEN", STREAM), xlen + 1, "only the valid batch item was stored")
            _sid, fields = r.cmd("XREVRANGE", STREAM, "+", "-", "COUNT", "1")[0]
            f = dict(zip(fields[::2], fields[1::2]))
            check_eq(json.loads(f["payload"])["message"], "good escape")

        def escaped_backslash_before_u0000_is_stored_as_text():
            # "\\u0000" is a backslash and the letters u0000, not a NUL.
            raw = b'{"user_id":"u1","message":"a\\\\u0000b","data":{"k":"\\\\u0000"}}'
            st, body = post("/notifications", raw)
            check(st == 202, st, body)
            _sid, fields = r.cmd("XREVRANGE", STREAM, "+", "-", "COUNT", "1")[0]
            env = json.loads(dict(zip(fields[::2], fields[1::2]))["payload"])
            check_eq(env["message"], "a\\u0000b")
            check_eq(env["data"], {"k": "\\u0000"})

        t.check("nul_anywhere_in_a_post_is_400_before_the_script",
                nul_anywhere_in_a_post_is_400_before_the_script)
        t.check("nul_in_a_batch_item_refuses_that_item_only", nul_in_a_batch_item_refuses_that_item_only)
        t.check("escaped_backslash_before_u0000_is_stored_as_text",
                escaped_backslash_before_u0000_is_stored_as_text)
    finally:
        stack.stop()
    t.finish()


if __name__ == "__main__":
    main()
