"""Ingest refuses a POST body whose objects and arrays nest deeper than 32
levels (the body's own object is level 1) with 400 json_too_deep before
anything is parsed or written; 32 levels pass. In a batch the limit applies
to each item (the batch's own two levels are not counted), and one item too
deep refuses the whole batch. Against the real herald-ingest and a private
redis-server."""
from herald_stack import Stack, TestRun, check, check_eq, ingest_request

STREAM = "herald:stream:notifications"
LIMIT = 32


def body_of_depth(depth, key="u"):
    """A notification body nesting depth containers in all: {} + data {} + arrays."""
    inner = "[" * (depth - 2) + "1" + "]" * (depth - 2)
    return '{"user_id":"%s","message":"m","data":{"a":%s}}' % (key, inner)


def main():
    t = TestRun()
    stack = Stack(services=("ingest",))
    try:
        port, r = stack.ingest_port, stack.redis

        def post(path, raw):
            return ingest_request(port, "POST", path, raw.encode())

        def a_body_nesting_past_the_limit_is_400_json_too_deep():
            n = r.cmd("XLEN", STREAM)
            for depth in (LIMIT + 1, 500, 5000):
                s, b = post("/notifications", body_of_depth(depth))
                check(s == 400 and b["error"]["code"] == "json_too_deep", depth, s, b)
            # Brackets inside strings are text, not nesting.
            s, b = post("/notifications", '{"user_id":"u","message":"%s"}' % ("[{" * 100))
            check_eq(s, 202, b)
            s, b = post("/notifications", body_of_depth(LIMIT))
            check_eq(s, 202, "exactly the limit", b)
            check_eq(r.cmd("XLEN", STREAM), n + 2, "only the two accepted bodies were written")
        t.check("a_body_nesting_past_the_limit_is_400_json_too_deep",
                a_body_nesting_past_the_limit_is_400_json_too_deep)

        def a_batch_counts_the_depth_of_each_item():
            n = r.cmd("XLEN", STREAM)
            s, b = post("/notifications/batch", '{"notifications":[%s,%s]}'
                        % (body_of_depth(LIMIT), body_of_depth(3)))
            check(s == 202 and b["accepted"] == 2, "items at the limit", s, b)
            s, b = post("/notifications/batch", '{"notifications":[%s,%s]}'
                        % (body_of_depth(3), body_of_depth(LIMIT + 1)))
            check(s == 400 and b["error"]["code"] == "json_too_deep", "one item too deep", s, b)
            check_eq(r.cmd("XLEN", STREAM), n + 2)
        t.check("a_batch_counts_the_depth_of_each_item", a_batch_counts_the_depth_of_each_item)
    finally:
        stack.stop()
    t.finish()


if __name__ == "__main__":
    main()
