"""Rooms and presence against a real Redis and real gateway processes: the
presence key layout, pruning of a dead gateway's entries, paged presence
answers, idempotent chat retries and the script calls of the refresh."""
import socket
import time

from herald_stack import Stack, TestRun, free_port, http_get, wait_until
from herald_ws import WsClient, WsClosed, user_path

PRESENCE_TTL = 3


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def redis_now_ms(stack):
    sec, usec = stack.redis.cmd("TIME")
    return int(sec) * 1000 + int(usec) // 1000


def redis_raw(stack):
    return socket.create_connection(("127.0.0.1", stack.redis_port), timeout=10)


SLEEP_4S = ("local s = redis.call('TIME') local e = s[1] * 1000000 + s[2] + 4000000 local n "
            "repeat n = redis.call('TIME') until n[1] * 1000000 + n[2] >= e return 1")


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def redis_busy(stack):
    """Whether Redis is blocked (a PING gets no answer within 0.3 s)."""
    s = redis_raw(stack)
    try:
        s.sendall(b"PING\r\n")
        s.settimeout(0.3)
        try:
            return not s.recv(16)
        except socket.timeout:
            return True
    finally:
        s.close()


def main():
    t = TestRun()
    stack = Stack(gateways=2, services=("gateway",), extra_env={
        "HERALD_GATEWAY_PRESENCE_TTL_S": PRESENCE_TTL,
        "HERALD_GATEWAY_PRESENCE_EVENTS_MAX": 3,
        "HERALD_GATEWAY_QUEUE_MAX_BYTES": 65536,
        "HERALD_GATEWAY_PUBLISH_RATE": 50,
        "HERALD_GATEWAY_MAX_ROOMS": 10,
    })
    opened = []

    def ws(gw, user):
        c = WsClient("127.0.0.1", stack.gateway_ports[gw], user_path(user))
        opened.append(c)
        check(c.recv_type("welcome")["user_id"] == user, "welcome")
        return c

    def join(c, room, subscribers=1):
        c.send_json({"type": "join", "room": room, "ref": "j-" + room})
        check(c.recv_type("joined")["ref"] == "j-" + room, f"joined {room}")
        # The room channel is subscribed asynchronously: events before that are missed.
        wait_until(lambda: stack.redis.cmd("PUBSUB", "NUMSUB", "herald:room:" + room)[1]
                   >= subscribers, 5, f"{room} subscribed")

    def presence(c, room, cursor=None):
        frame = {"type": "presence", "room": room, "ref": "p"}
        if cursor is not None:
            frame["cursor"] = cursor
        c.send_json(frame)
        return c.recv_type("presence")

    def recv_event(c, type_, user, timeout=5.0):
        """The next `type_` room event about user (events about others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            m = c.recv_type(type_, max(0.01, deadline - time.monotonic()))
            if m.get("user_id") == user and "ref" not in m:
                return m

    def spawn_gateway(name):
        port = free_port()
        stack.spawn(name, "herald-gateway", {"HERALD_GATEWAY_PORT": port,
                                             "HERALD_GATEWAY_DEV_USER_QUERY": "true",
                                             "HERALD_GATEWAY_NODE_ID": name})
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 15, f"{name} ready")
        stack.gateway_ports.append(port)
        return len(stack.gateway_ports) - 1

    def room_set(room):
        """The room's presence set as stored (read without pruning anything)."""
        flat = stack.redis.cmd("ZRANGE", "herald:presence:{%s}" % room, 0, -1, "WITHSCORES")
        return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

    def present(c, room, user):
        return user in presence(c, room)["users"]

    try:
        def room_with_colon_does_not_touch_another_rooms_user():
            alice = ws(0, "alice")
            bob = ws(0, "bob")
            zed = ws(0, "zed")
            join(bob, "lobby")
            join(alice, "lobby")
            recv_event(bob, "joined", "alice")
            # Under the old layout zed's room set was alice's set of gateways for lobby.
            join(zed, "lobby:alice")
            wait_until(lambda: present(zed, "lobby:alice", "zed"), 5, "zed present")
            alice.send_json({"type": "leave", "room": "lobby"})
            alice.recv_type("left")
            recv_event(bob, "left", "alice")
            check(not present(bob, "lobby", "alice"), "alice still listed in lobby")
        t.check("zed_in_room_lobby_alice_does_not_keep_alice_in_lobby",
                room_with_colon_does_not_touch_another_rooms_user)

        def node_id_is_never_listed_as_a_user():
            u42 = ws(0, "42")
            join(u42, "team")
            asker = ws(0, "asker")
            join(asker, "team:42")
            users = presence(asker, "team:42")["users"]
            check(users == ["asker"], f"presence of team:42 lists {users}")
        t.check("presence_of_team_42_does_not_list_the_gateway_of_user_42_in_team",
                node_id_is_never_listed_as_a_user)

        def dead_gateways_users_are_pruned_by_live_refresh():
            # Two users on a gateway that is killed, one member on a live one
            # (3 users: still within presence_events_max).
            doomed = spawn_gateway("doomed")
            live = ws(0, "keeper")
            join(live, "churn")
            for i in range(2):
                c = ws(doomed, f"ghost{i}")
                join(c, "churn", subscribers=2)
                recv_event(live, "joined", f"ghost{i}")
            stack.services["doomed"].kill9()
            ghosts = {f"ghost{i}" for i in range(2)}
            # Once their expiry has passed, the keeper's refresh must drop them
            # (no presence query is made, which would prune them too).
            wait_until(lambda: max(v for u, v in room_set("churn").items() if u in ghosts)
                       < redis_now_ms(stack), PRESENCE_TTL + 5, "ghosts expired")
            wait_until(lambda: not ghosts & set(room_set("churn")), PRESENCE_TTL + 5,
                       "ghosts pruned from the room set")
            # With the ghosts counted the room would have 4 users, over the bound.
            newbie = ws(1, "newbie")
            join(newbie, "churn", subscribers=2)
            recv_event(live, "joined", "newbie")
            newbie.send_json({"type": "leave", "room": "churn"})
            recv_event(live, "left", "newbie")
        t.check("kill9_gateways_users_are_pruned_by_refresh_and_events_keep_flowing",
                dead_gateways_users_are_pruned_by_live_refresh)

        def events_bound_is_the_same_for_join_and_leave():
            # presence_events_max is 3: a room of up to 3 users (the joiner or
            # leaver counted) gets both events, a 4th user gets neither.
            watcher = ws(0, "b1")
            join(watcher, "bound")
            others = {}
            for u in ("b2", "b3", "b4"):
                others[u] = ws(1, u)
                join(others[u], "bound", subscribers=2)
            recv_event(watcher, "joined", "b2")
            recv_event(watcher, "joined", "b3")
            others["b4"].send_json({"type": "leave", "room": "bound"})
            others["b4"].recv_type("left")
            others["b3"].send_json({"type": "leave", "room": "bound"})
            others["b3"].recv_type("left")
            m = watcher.recv_json()
            while m.get("type") not in ("joined", "left") or "ref" in m:
                m = watcher.recv_json()
            check(m == {"type": "left", "room": "bound", "user_id": "b3"},
                  f"the next event after b4 joined and left, then b3 left: {m}")
        t.check("joined_and_left_events_use_one_room_size_bound", events_bound_is_the_same_for_join_and_leave)

        def chat_retry_after_unknown_outcome_is_published_once():
            sender = ws(0, "sender")
            reader = ws(1, "reader")
            join(sender, "idem")
            join(reader, "idem", subscribers=2)
            before = stack.redis.cmd("XLEN", "herald:stream:room_messages")
            # Block Redis past the gateway's 2 s command watchdog. DEBUG SLEEP
            # needs enable-debug-command; a 4 s script blocks Redis the same way
            # (under the 5 s busy-script threshold).
            sleeper = redis_raw(stack)
            sleeper.sendall(resp("EVAL", SLEEP_4S, "0"))
            wait_until(lambda: redis_busy(stack), 5, "redis to be asleep")
            frame = {"type": "publish", "room": "idem", "message": "exactly once",
                     "idempotency_key": "k-1", "ref": "r1"}
            sender.send_json(frame)
            err = sender.recv_type("error", timeout=10)
            check(err["code"] == "outcome_unknown" and err["ref"] == "r1", err)
            sleeper.settimeout(10)
            check(sleeper.recv(16).startswith(b":1"), "the sleeping script answered")
            sleeper.close()
            # The script did run after all: this is the case a retry could duplicate.
            wait_until(lambda: stack.redis.cmd("XLEN", "herald:stream:room_messages") == before + 1,
                       5, "the first attempt's entry")
            first = reader.recv_type("message")
            check(first["message"] == "exactly once", first)
            wait_until(lambda: http_get(stack.gateway_ports[0], "/readyz")[0] == 200, 15,
                       "gateway's command connection back")
            sender.send_json(frame)
            again = sender.recv_type("message")
            while again.get("ref") != "r1":
                again = sender.recv_type("message")
            check(again["id"] == first["id"] and again.get("duplicate") is True
                  and again["created_at"] == first["created_at"], (again, first))
            sender.send_json({"type": "publish", "room": "idem", "message": "next"})
            nxt = reader.recv_type("message")
            check(nxt["message"] == "next", f"reader got a second copy: {nxt}")
            check(stack.redis.cmd("XLEN", "herald:stream:room_messages") == before + 2,
                  "one stream entry per message")
            # The same key for another text is refused, and nothing is written.
            sender.send_json({"type": "publish", "room": "idem", "message": "other",
                              "idempotency_key": "k-1", "ref": "r2"})
            err = sender.recv_type("error")
            check(err["code"] == "idempotency_conflict" and err["ref"] == "r2", err)
            # The key is scoped per user and room: the reader may use it too.
            join(reader, "idem")
            reader.send_json({"type": "publish", "room": "idem", "message": "exactly once",
                              "idempotency_key": "k-1", "ref": "r3"})
            mine = reader.recv_type("message")
            while mine.get("ref") != "r3":
                mine = reader.recv_type("message")
            check("duplicate" not in mine and mine["from"] == "reader", mine)
            sender.send_json({"type": "publish", "room": "idem", "message": "x",
                              "idempotency_key": "bad key"})
            check(sender.recv_type("error")["code"] == "invalid_field", "bad key refused")
        t.check("chat_retry_after_unknown_outcome_is_published_once",
                chat_retry_after_unknown_outcome_is_published_once)

        def presence_of_a_huge_room_comes_in_pages():
            # 3,000 users of ~100 bytes (~320 KB as one answer) against a 64 KiB
            # socket queue; written straight into the room set, as gateways would.
            exp = redis_now_ms(stack) + 120000
            everyone = {f"{i:05d}-" + "u" * 94 for i in range(3000)}
            names = sorted(everyone)
            for i in range(0, len(names), 500):
                args = []
                for n in names[i:i + 500]:
                    args += [exp, n]
                stack.redis.cmd("ZADD", "herald:presence:{big}", *args)
            stack.redis.cmd("ZADD", "herald:presence:{big}", 1, "long-gone")
            asker = ws(0, "asker2")
            join(asker, "big")
            everyone.add("asker2")
            seen, cursor, pages = set(), None, 0
            while True:
                p = presence(asker, "big", cursor)
                pages += 1
                check(len(p["users"]) <= 200, f"page of {len(p['users'])} users")
                seen |= set(p["users"])
                cursor = p["cursor"]
                if cursor is None:
                    break
                check(pages < 200, "presence pages never end")
            check(seen == everyone, f"missing {len(everyone - seen)}, extra {seen - everyone}")
            check(pages >= 15, f"only {pages} pages")
            asker.send_json({"type": "ping", "ref": "alive"})
            check(asker.recv_type("pong")["ref"] == "alive", "asker still connected")
            asker.send_json({"type": "presence", "room": "big", "cursor": "x1"})
            check(asker.recv_type("error")["code"] == "invalid_field", "bad cursor refused")
        t.check("presence_of_a_huge_room_comes_in_pages_within_the_queue_limit",
                presence_of_a_huge_room_comes_in_pages)
    finally:
        for c in opened:
            try:
                c.close()
            except OSError:
                pass
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)

    # The refresh's script calls, counted on a Redis of their own.
    stack = Stack(gateways=1, services=("gateway",), extra_env={
        "HERALD_GATEWAY_PRESENCE_TTL_S": PRESENCE_TTL, "HERALD_GATEWAY_MAX_ROOMS": 10})
    opened = []

    def script_calls():
        info = stack.redis.cmd("INFO", "commandstats")
        calls = {}
        for line in info.splitlines():
            if line.startswith("cmdstat_eval"):
                name, rest = line.split(":", 1)
                calls[name[len("cmdstat_"):]] = int(rest.split(",")[0].split("=")[1])
        return calls.get("eval", 0), calls.get("evalsha", 0)

    try:
        users = [f"h{i}" for i in range(29)] + ["x/y"]
        socks = {}
        for u in users:
            c = WsClient("127.0.0.1", stack.gateway_ports[0], user_path(u))
            opened.append(c)
            c.recv_type("welcome")
            c.send_json({"type": "join", "room": "hot", "ref": 1})
            c.recv_type("joined")
            socks[u] = c

        def hot_set():
            flat = stack.redis.cmd("ZRANGE", "herald:presence:{hot}", 0, -1, "WITHSCORES")
            return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

        def refresh_is_one_evalsha_per_room():
            wait_until(lambda: len(hot_set()) == 30, 5, "30 users present")
            eval0, sha0 = script_calls()
            before = hot_set()
            wait_until(lambda: all(v > before[u] for u, v in hot_set().items()), 5,
                       "every user refreshed")
            eval1, sha1 = script_calls()
            check(eval1 == eval0, f"{eval1 - eval0} EVALs (full script text) in the refresh")
            check(1 <= sha1 - sha0 <= 4, f"{sha1 - sha0} EVALSHAs for one room of 30 users")
        t.check("presence_refresh_is_one_evalsha_per_room_not_one_eval_per_user",
                refresh_is_one_evalsha_per_room)

        def refresh_restores_lost_presence_with_events():
            watcher = socks["h0"]
            stack.redis.cmd("DEL", "herald:presence:{hot}")
            wait_until(lambda: len(hot_set()) == 30, 5, "the refresh to restore all 30 users")
            deadline = time.monotonic() + 5
            while True:
                m = watcher.recv_type("joined", max(0.01, deadline - time.monotonic()))
                if m.get("user_id") == "x/y" and "ref" not in m:
                    break
            check(m == {"type": "joined", "room": "hot", "user_id": "x/y"}, m)
        t.check("refresh_restores_lost_presence_and_announces_it",
                refresh_restores_lost_presence_with_events)

        def noscript_falls_back_to_eval():
            stack.redis.cmd("SCRIPT", "FLUSH")
            c = socks["h1"]
            c.send_json({"type": "publish", "room": "hot", "message": "after flush", "ref": "f"})
            m = c.recv_type("message")
            while m.get("ref") != "f":
                m = c.recv_type("message")
            check(m["message"] == "after flush", m)
            c.send_json({"type": "presence", "room": "hot"})
            check(len(c.recv_type("presence")["users"]) == 30, "presence after flush")
            # The scripts are loaded again: the next refreshes are EVALSHA.
            eval0, sha0 = script_calls()
            before = hot_set()
            wait_until(lambda: all(v > before[u] for u, v in hot_set().items()), 5,
                       "every user refreshed")
            wait_until(lambda: script_calls()[1] > sha0, 5, "EVALSHA again")
        t.check("scripts_flushed_from_redis_fall_back_to_eval_and_reload",
                noscript_falls_back_to_eval)
    finally:
        for c in opened:
            try:
                c.close()
            except OSError:
                pass
        t.check("refresh_gateway_exits_cleanly", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
