"""Rooms and presence against a real Redis and real gateway processes: the
presence key layout, pruning of a dead gateway's entries, paged presence
answers, idempotent chat retries and the script calls of the refresh."""
import socket
import time

from herald_stack import Stack, TestRun, wait_until
from herald_ws import WsClient, WsClosed

PRESENCE_TTL = 3


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def redis_now_ms(stack):
    sec, usec = stack.redis.cmd("TIME")
    return int(sec) * 1000 + int(usec) // 1000


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
        c = WsClient("127.0.0.1", stack.gateway_ports[gw], f"/ws?user_id={user}")
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
    finally:
        for c in opened:
            try:
                c.close()
            except OSError:
                pass
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
