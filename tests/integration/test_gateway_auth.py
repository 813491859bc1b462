"""Identity and access at the gateway (proto/auth.md "Gateway", proto/ws.md):
real gateways, real Redis, real signed tokens. A refused upgrade is HTTP 401
JSON with nothing registered or subscribed; a socket lives while its token
does (refresh, close 4001); rooms follow the token's claim; revocation
cut-offs and disconnect orders reach every gateway (close 4003); Origin,
upgrade rate and JSON depth limits; the token never reaches a log."""
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time

from herald_stack import (SRC_DIR, Stack, TestRun, auth_section, check, check_eq, http_request,
                          mint_token, post_notification, wait_until)
from herald_ws import WsClient, WsRefused

# The revocation script of proto/auth.md, as ingest runs it: the cut-off first, then the order.
REVOKE_LUA = """
if ARGV[1] ~= '' then
  local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
  local t = tonumber(ARGV[1])
  if cur > t then t = cur end
  redis.call('SET', KEYS[1], tostring(t), 'EX', ARGV[2])
end
local ib = cjson.null
if ARGV[1] ~= '' then ib = tonumber(ARGV[1]) end
return redis.call('PUBLISH', 'herald:control',
  cjson.encode({type='disconnect', user_id=ARGV[3], issued_before=ib}))
"""


def golden(name):
    """A frame of proto/testdata/ (the contract's own example)."""
    with open(os.path.join(SRC_DIR, "proto", "testdata", name)) as f:
        return json.load(f)


def same_shape(got, want):
    """Same members with the same JSON types (values such as exp differ)."""
    return sorted(got) == sorted(want) and all(type(got[k]) is type(want[k]) for k in want)


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def numsub(stack, channel):
    return stack.redis.cmd("PUBSUB", "NUMSUB", channel)[1]


def revoke(stack, user, issued_before=None):
    """What POST /users/{user}/revoke (or /disconnect, issued_before None) does in Redis."""
    return stack.redis.cmd("EVAL", REVOKE_LUA, "1", "herald:revoked:{%s}" % user,
                           "" if issued_before is None else str(issued_before), "3600", user)


def refused(port, path="/ws", **kw):
    """Opens an upgrade that must be refused; returns the WsRefused."""
    try:
        c = WsClient("127.0.0.1", port, path, **kw)
    except WsRefused as e:
        return e
    try:
        frame = c.recv_json(2)
    except Exception as e:  # noqa: BLE001
        frame = repr(e)
    c.close()
    check(False, "upgrade accepted, first frame:", frame)


def metrics(port):
    status, raw = http_request(port, "GET", "/metrics")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def expect_401(port, reason, **kw):
    e = refused(port, **kw)
    check_eq(e.status, 401, e.body)
    body = e.json()
    check_eq(body["error"]["code"], "unauthorized", body)
    check_eq(body["error"]["reason"], reason, body)
    check(isinstance(body["error"].get("message"), str), body)
    return e


def main():
    t = TestRun()
    keydir = tempfile.mkdtemp(prefix="herald-gwauth-")
    priv, pub = os.path.join(keydir, "rsa.pem"), os.path.join(keydir, "rsa.pub.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", priv], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True,
                   capture_output=True)
    # Debug logging: no line at any level may hold a token (checked at the end).
    stack = Stack(gateways=2, services=("ingest", "gateway"), extra_env={"HERALD_LOG_LEVEL": "debug"},
                  config=auth_section(extra_keys=f', {{ kid = "rsa-1"; alg = "RS256"; '
                                                 f'public_key_file = "{pub}"; }}'))
    gw1, gw2 = stack.gateway_ports
    opened = []
    tokens = []  # every token handed to a gateway: none may appear in a log

    def tok(sub, **kw):
        kw.setdefault("rooms", ["lobby"])
        x = mint_token(sub, **kw)
        tokens.append(x)
        return x

    def ws(port, token, **kw):
        c = WsClient("127.0.0.1", port, "/ws", token=token, **kw)
        opened.append(c)
        return c

    def welcomed(port, sub, **kw):
        c = ws(port, tok(sub, **kw))
        check_eq(c.recv_type("welcome")["user_id"], sub)
        return c

    try:
        def bad_tokens_get_401_and_nothing_subscribed():
            now = int(time.time())
            pem = open(pub).read()
            header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": "test-1"}).encode())
            claims = b64url(json.dumps({"sub": "mallory", "iat": now, "exp": now + 600}).encode())
            kinds = {
                "malformed": "not.a.jwt",
                "bad_signature": mint_token("mallory", secret="x" * 40),
                "expired": mint_token("mallory", iat=now - 1000, ttl=-900),
                "not_yet_valid": mint_token("mallory", claims={"nbf": now + 3600}),
                "wrong_alg": header + "." + claims + ".",
                "unknown_kid": mint_token("mallory", kid="nobody"),
            }
            tokens.extend(kinds.values())
            for reason, bad in kinds.items():
                for port in (gw1, gw2):
                    expect_401(port, reason, token=bad)
            check_eq(expect_401(gw1, "expired", token=kinds["expired"]).json(),
                     golden("error_unauthorized_expired.json"))
            # HS256 signed with the RSA public key as the secret: the classic confusion.
            confused = mint_token("mallory", secret=pem, kid="rsa-1", alg="HS256")
            tokens.append(confused)
            expect_401(gw1, "wrong_alg", token=confused)
            expect_401(gw1, "malformed", token="a" * 9000)  # over 8192 bytes
            expect_401(gw1, "missing")
            expect_401(gw2, "missing", path="/ws?user_id=mallory")
            check_eq(numsub(stack, "herald:user:mallory"), 0, "nothing subscribed for mallory")
            for port in (gw1, gw2):
                status, body = http_request(port, "GET", "/healthz")
                check_eq(body["connections"], 0, "no socket registered", body)
                text = metrics(port)
                check('herald_gateway_connects_total{result="unauthorized"}' in text)
                check('herald_gateway_auth_refusals_total{reason="bad_signature"} 1' in text, text)
        t.check("bad_tokens_get_401_json_no_welcome_nothing_subscribed",
                bad_tokens_get_401_and_nothing_subscribed)

        def users_see_only_their_own_frames():
            a1, a2 = welcomed(gw1, "alice"), welcomed(gw2, "alice")
            b1, b2 = welcomed(gw1, "bob"), welcomed(gw2, "bob")
            wait_until(lambda: numsub(stack, "herald:user:alice") == 2 and
                       numsub(stack, "herald:user:bob") == 2, 5, "both users subscribed")
            s, body = post_notification(stack.ingest_port, {"user_id": "alice", "message": "for alice"})
            check_eq(s, 202, body)
            for a in (a1, a2):
                check_eq(a.recv_type("notification")["notification"]["id"], body["id"])
            s, fence = post_notification(stack.ingest_port, {"user_id": "bob", "message": "for bob"})
            for b in (b1, b2):
                frame = b.recv_json()
                check_eq(frame["type"], "notification", frame)
                check_eq(frame["notification"]["id"], fence["id"], "bob's first frame is his own")
            for c in (a1, a2, b1, b2):
                c.close()
        t.check("valid_bob_never_receives_alices_frames_on_either_gateway",
                users_see_only_their_own_frames)

        def rooms_follow_the_claim():
            c = welcomed(gw1, "carl", rooms=["lobby", "team:*"])
            c.send_json({"type": "join", "room": "secret", "ref": 1})
            e = c.recv_type("error")
            check_eq((e["code"], e["ref"]), ("forbidden", 1), e)
            c.send_json({"type": "publish", "room": "secret", "message": "x", "ref": 2})
            check_eq(c.recv_type("error")["code"], "forbidden")
            c.send_json({"type": "join", "room": "team", "ref": 3})
            check_eq(c.recv_type("error")["code"], "forbidden", "team:* does not match team")
            c.send_json({"type": "join", "room": "team:red", "ref": 4})
            check_eq(c.recv_type("joined")["ref"], 4)
            c.send_json({"type": "publish", "room": "team:red", "message": "hi", "ref": 5})
            check_eq(c.recv_type("message")["ref"], 5)
            none = welcomed(gw2, "nora", rooms=None)
            none.send_json({"type": "join", "room": "lobby", "ref": 6})
            check_eq(none.recv_type("error")["code"], "forbidden", "no rooms claim: no room")
            c.close()
            none.close()
        t.check("join_and_publish_outside_the_rooms_claim_are_forbidden", rooms_follow_the_claim)

        def refresh_and_expiry():
            # Both expire in 3 s (+2 s leeway); only one refreshes.
            keep = welcomed(gw1, "erin", ttl=3)
            lapse = welcomed(gw2, "erin", ttl=3)
            keep.send_json({"type": "refresh", "token": tok("frank"), "ref": "r0"})
            e = keep.recv_type("error")
            check_eq((e["code"], e["reason"], e["ref"]), ("unauthorized", "sub_changed", "r0"), e)
            keep.send_json({"type": "refresh", "token": "garbage", "ref": "r1"})
            check_eq(keep.recv_type("error")["reason"], "malformed")
            fresh = tok("erin", ttl=120)
            keep.send_json({"type": "refresh", "token": fresh, "ref": 2})
            r = keep.recv_type("refreshed")
            check_eq(r["ref"], 2, r)
            check(same_shape(r, golden("frame_refreshed.json")), r)
            check(r["exp"] >= time.time() + 100, "the new exp", r)
            e = lapse.recv_type("error", timeout=15)
            check_eq(e, golden("frame_error_token_expired.json"))
            lapse.expect_close(4001, timeout=5)
            # Past the first token's exp + leeway: the refreshed socket lives on.
            keep.send_json({"type": "ping", "ref": "after"})
            check_eq(keep.recv_type("pong")["ref"], "after")
            keep.close()
        t.check("refresh_extends_past_the_first_exp_without_it_close_4001", refresh_and_expiry)

        def refresh_narrowing_the_rooms_claim_leaves_those_rooms():
            rooms = ["nr-a", "nr-b"]

            def joined(c, room, ref):
                c.send_json({"type": "join", "room": room, "ref": ref})
                while True:  # room events (another user's joined) may come first
                    f = c.recv_type("joined")
                    if f.get("ref") == ref:
                        return f

            def users_of(c, room, ref):
                c.send_json({"type": "presence", "room": room, "ref": ref})
                f = c.recv_type("presence")
                check_eq(f["ref"], ref, f)
                return sorted(f["users"])

            o = welcomed(gw1, "ola", rooms=rooms)
            pat = welcomed(gw2, "pat", rooms=rooms)  # the room as others see it, from gw2
            for i, room in enumerate(rooms):
                joined(o, room, i)
                joined(pat, room, 10 + i)
            check_eq(users_of(pat, "nr-b", "p0"), ["ola", "pat"])
            o.send_json({"type": "refresh", "token": tok("ola", rooms=["nr-a"]), "ref": "narrow"})
            got = []
            while not got or got[-1]["type"] != "refreshed":
                f = o.recv_json()
                if f["type"] in ("left", "refreshed"):
                    got.append(f)
            check_eq(got[0], {"type": "left", "room": "nr-b", "user_id": "ola", "reason": "forbidden"},
                     "nr-b left, told before refreshed", got)
            check_eq(len(got), 2, "nr-a stays joined", got)
            check_eq(got[1]["ref"], "narrow", got)
            # Others see an ordinary leave: the room's event, and presence without ola.
            while True:
                f = pat.recv_type("left")
                if f["room"] == "nr-b":
                    check_eq(f, {"type": "left", "room": "nr-b", "user_id": "ola"})
                    break
            check_eq(users_of(pat, "nr-b", "p1"), ["pat"], "ola is no longer present in nr-b")
            check_eq(users_of(pat, "nr-a", "p2"), ["ola", "pat"])
            check_eq(numsub(stack, "herald:room:nr-b"), 1, "gw1 unsubscribed nr-b (gw2 still listens)")
            # nr-b's chat and notifications no longer reach ola; nr-a's do (the fence).
            pat.send_json({"type": "publish", "room": "nr-b", "message": "not for ola", "ref": "b"})
            check_eq(pat.recv_type("message")["ref"], "b")
            s, body = post_notification(stack.ingest_port, {"room": "nr-b", "message": "not for ola"})
            check_eq(s, 202, body)
            check_eq(pat.recv_type("notification")["notification"]["id"], body["id"])
            pat.send_json({"type": "publish", "room": "nr-a", "message": "fence", "ref": "a"})
            while True:
                f = o.recv_json()
                check(f["type"] not in ("message", "notification") or
                      (f["type"] == "message" and f["room"] == "nr-a"), "a frame of nr-b reached ola", f)
                if f["type"] == "message":
                    check_eq(f["message"], "fence", f)
                    break
            o.send_json({"type": "publish", "room": "nr-a", "message": "still here", "ref": "oa"})
            check_eq(o.recv_type("message")["ref"], "oa", "nr-a still works")
            o.send_json({"type": "publish", "room": "nr-b", "message": "x", "ref": "ob"})
            e = o.recv_type("error")
            check_eq((e["code"], e["ref"]), ("forbidden", "ob"), e)
            o.send_json({"type": "leave", "room": "nr-b", "ref": "lb"})
            e = o.recv_type("error")
            check_eq((e["code"], e["ref"]), ("not_member", "lb"), "nr-b was left", e)
            o.close()
            pat.close()
        t.check("refresh_narrowing_the_rooms_claim_leaves_the_rooms_it_no_longer_allows",
                refresh_narrowing_the_rooms_claim_leaves_those_rooms)

        def subprotocol_token():
            jwt = tok("sue")
            c = WsClient("127.0.0.1", gw1, "/ws", subprotocols=["herald", "herald.token." + jwt])
            opened.append(c)
            check_eq(c.subprotocol, "herald", c.headers)
            check_eq(c.recv_type("welcome")["user_id"], "sue")
            c.close()
            # A head longer than the first read buffer (a token with many rooms).
            big = tok("sue", rooms=[f"room-{i:04d}" for i in range(250)])
            check(len(big) > 4096, len(big))
            c = WsClient("127.0.0.1", gw2, "/ws", subprotocols=["herald", "herald.token." + big])
            opened.append(c)
            check_eq(c.subprotocol, "herald", c.headers)
            check_eq(c.recv_type("welcome")["user_id"], "sue")
            c.close()
            e = refused(gw2, subprotocols=["herald", "herald.token.not-a-token"])
            check_eq((e.status, e.json()["error"]["reason"]), (401, "malformed"), e.body)
            # Both ways at once must agree.
            other = tok("sue")
            e = refused(gw1, token=other + "x", subprotocols=["herald", "herald.token." + jwt])
            check_eq((e.status, e.json()["error"]["reason"]), (401, "malformed"), e.body)
        t.check("subprotocol_token_is_accepted_and_answered_herald", subprotocol_token)

        def revoked_tokens():
            now = int(time.time())
            old = tok("rita", iat=now - 60)
            # A socket on each gateway: its close shows that gateway has applied the order.
            live = [welcomed(port, "rita", iat=now - 60) for port in (gw1, gw2)]
            check_eq(revoke(stack, "rita", now), 2, "both gateways got the order")
            for c in live:
                check_eq(c.recv_type("error"), golden("frame_error_revoked.json"))
                c.expect_close(4003)
            for port in (gw1, gw2):
                expect_401(port, "revoked", token=old)
            c = welcomed(gw1, "rita", iat=now)
            c.send_json({"type": "refresh", "token": old, "ref": "old"})
            e = c.recv_type("error")
            check_eq((e["code"], e["reason"], e["ref"]), ("unauthorized", "revoked", "old"), e)
            c.close()
        t.check("revoked_token_gets_401_and_a_newer_token_works", revoked_tokens)

        def disconnect_closes_everywhere():
            now = int(time.time())
            d1, d2 = welcomed(gw1, "dave", iat=now - 30), welcomed(gw2, "dave", iat=now - 30)
            order = golden("control_disconnect.json")  # dave, issued_before null
            check_eq(stack.redis.cmd("PUBLISH", "herald:control", json.dumps(order)), 2)
            for d in (d1, d2):
                check_eq(d.recv_type("error")["code"], "revoked")
                d.expect_close(4003)
            # A cut-off closes only the older tokens.
            older, newer = welcomed(gw1, "dave", iat=now - 30), welcomed(gw2, "dave", iat=now)
            revoke(stack, "dave", now - 10)
            older.expect_close(4003)
            newer.send_json({"type": "ping", "ref": 1})
            check_eq(newer.recv_type("pong")["ref"], 1, "issued after the cut-off: stays")
            newer.close()
        t.check("disconnect_order_closes_the_users_sockets_on_both_gateways_4003",
                disconnect_closes_everywhere)

        def cutoffs_are_read_again_after_a_reconnect():
            # An order missed while the subscriber was away: the re-read finds the key
            # and closes the socket the cut-off covers.
            now = int(time.time())
            k = welcomed(gw1, "kim", iat=now - 30)
            stack.redis.cmd("SET", "herald:revoked:{kim}", str(now), "EX", "3600")
            k.send_json({"type": "ping", "ref": 1})
            check_eq(k.recv_type("pong")["ref"], 1, "no order was published: still open")
            check(stack.redis.cmd("CLIENT", "KILL", "TYPE", "pubsub") >= 2, "subscribers killed")
            check_eq(k.recv_type("error", timeout=15)["code"], "revoked")
            k.expect_close(4003)
            old = tok("kim", iat=now - 30)

            def gw2_refuses():  # gw2 re-reads on its own reconnect
                try:
                    WsClient("127.0.0.1", gw2, "/ws", token=old).close()
                except WsRefused as e:
                    return e.status == 401 and e.json()["error"]["reason"] == "revoked"
                return False
            wait_until(gw2_refuses, 15, "gw2 refuses kim's old token after its re-read")
        t.check("cutoffs_are_read_again_after_a_redis_reconnect_and_close_covered_sockets",
                cutoffs_are_read_again_after_a_reconnect)

        def cutoffs_are_read_at_start():
            # Written without an order (as if published while no gateway listened).
            now = int(time.time())
            stack.redis.cmd("SET", "herald:revoked:{vic}", str(now), "EX", "3600")
            port = stack.spawn_listening("gateway3", "herald-gateway", "HERALD_GATEWAY_PORT",
                                         {"HERALD_GATEWAY_NODE_ID": "gw3"})
            wait_until(lambda: http_request(port, "GET", "/readyz")[0] == 200, 15, "gw3 ready")
            expect_401(port, "revoked", token=tok("vic", iat=now - 5))
            welcomed(port, "vic", iat=now).close()
        t.check("a_starting_gateway_reads_the_cutoffs_before_accepting", cutoffs_are_read_at_start)

        def deep_json():
            c = welcomed(gw1, "deep")
            c.send_text('{"type":"ping","x":' + "[" * 40 + "]" * 40 + "}")
            check_eq(c.recv_type("error")["code"], "json_too_deep")
            c.send_json({"type": "ping", "ref": 1, "x": [[[1]]]})
            check_eq(c.recv_type("pong")["ref"], 1)
            c.close()
        t.check("deeply_nested_frame_is_refused_too_deep", deep_json)

        def token_never_logged():
            for name in ("gateway1", "gateway2", "gateway3"):
                text = stack.services[name].log_text()
                for x in tokens:
                    sig = x.rsplit(".", 1)[-1]
                    check(x not in text and (len(sig) < 16 or sig not in text),
                          f"{name} logged a token")
        t.check("no_log_line_holds_a_token", token_never_logged)
    finally:
        for c in opened:
            try:
                c.sock.close()
            except OSError:
                pass
        stack.stop()

    # Origin, upgrade rate and the development switch: a gateway of its own.
    dev = Stack(gateways=1, services=("gateway",), extra_env={
        "HERALD_GATEWAY_ALLOWED_ORIGINS": "https://app.example, http://localhost:3000",
        "HERALD_GATEWAY_DEV_USER_QUERY": "true",
        "HERALD_GATEWAY_UPGRADE_RATE": 1,
        "HERALD_GATEWAY_UPGRADE_BURST": 3,
    })
    port = dev.gateway_ports[0]
    try:
        def origins():
            e = refused(port, "/ws?user_id=o", headers={"Origin": "https://evil.example"},
                        source="127.0.0.2")
            check_eq((e.status, e.json()["error"]["code"]), (403, "forbidden_origin"), e.body)
            c = WsClient("127.0.0.1", port, "/ws?user_id=o", headers={"Origin": "https://app.example"},
                         source="127.0.0.2")
            check_eq(c.recv_type("welcome")["user_id"], "o")
            c.close()
            c = WsClient("127.0.0.1", port, "/ws?user_id=o", source="127.0.0.2")  # not a browser
            check_eq(c.recv_type("welcome")["user_id"], "o")
            c.close()
        t.check("origin_outside_allowed_origins_gets_403", origins)

        def upgrade_rate():
            got = []
            for i in range(10):  # a burst of 3, then 1 per second: some of these are refused
                try:
                    c = WsClient("127.0.0.1", port, f"/ws?user_id=r{i}", source="127.0.0.3")
                    c.recv_type("welcome")
                    c.close()
                    got.append(101)
                except WsRefused as e:
                    got.append(e.status)
                    if e.status == 429:
                        check(int(e.headers["retry-after"]) >= 1, e.headers)
                        check_eq(e.json()["error"]["code"], "too_many_requests")
            check(got[:3] == [101, 101, 101] and 429 in got, got)
            check('herald_gateway_connects_total{result="rate_limited"}' in metrics(port))
            # Another address has its own bucket.
            c = WsClient("127.0.0.1", port, "/ws?user_id=other", source="127.0.0.4")
            c.recv_type("welcome")
            c.close()
        t.check("upgrades_over_the_rate_of_one_address_get_429_retry_after", upgrade_rate)

        def dev_mode_warns():
            text = dev.services["gateway1"].log_text()
            check(any("level=warn" in line and "event=dev_user_query" in line
                      for line in text.splitlines()), text[-1500:])
        t.check("dev_user_query_logs_a_warning_at_start", dev_mode_warns)
    finally:
        dev.stop()
        shutil.rmtree(keydir, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
