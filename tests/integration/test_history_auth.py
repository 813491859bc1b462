"""History's identity and access (proto/auth.md, "Where each service checks
→ History") against the real binaries, Redis and PostgreSQL: every user
route needs `Authorization: Bearer <jwt>` (401 with the reason and
WWW-Authenticate), the user is the token's sub (another user's id is 404, a
differing ?user_id= 403), room history needs the rooms claim, the user's
revocation cut-off is read from Redis for each request (401 revoked; Redis
down → 503), CORS preflights allow Authorization, and POST /dev/token exists
only with history.dev_mint, minting tokens history accepts."""
import json
import socket
import time

from herald_promises import request
from herald_stack import (TEST_SECRET, Stack, TestRun, bearer, check, check_eq, http_request,
                          mint_token, wait_until)

ALICE_ID = "01a20b48-fa36-709d-a4df-000000000a11"
BOB_ID = "01a20b48-fa36-709d-a4df-000000000b0b"


def req_h(port, method, path, headers=None, body=None, timeout=5):
    """herald_promises.request with headers first and a str body sent as is:
    (status, headers with lowercase names, parsed JSON body or None)."""
    return request(port, method, path, body.encode() if isinstance(body, str) else body, headers,
                   timeout)


def raw_request(port, head):
    """Sends a hand-written request head; returns (status, parsed JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            hdr, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in hdr.lower():
                n = int(hdr.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= n:
                    break
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.partition(b"\r\n\r\n")[2])


def refused(status, hdrs, body, reason, token=None):
    """check() that an answer is the 401 of proto/auth.md with this reason."""
    check(status == 401, status, body)
    check(body["error"]["code"] == "unauthorized" and body["error"]["reason"] == reason, body)
    check(body["error"].get("message"), body)
    check(hdrs.get("www-authenticate", "").startswith("Bearer"), hdrs)
    if token:
        text = json.dumps(body)
        check(token not in text and all(len(p) < 8 or p not in text for p in token.split(".")),
              "the token is echoed in the answer")


def main():
    t = TestRun()
    stack = Stack(gateways=0, services=("worker", "history"))
    hp = stack.history_port
    alice = bearer(mint_token("alice"))
    try:
        stack.psql(f"""
            INSERT INTO notifications (id, user_id, type, message, created_at)
            VALUES ('{ALICE_ID}', 'alice', 't', 'for alice', now()),
                   ('{BOB_ID}', 'bob', 't', 'for bob', now());
            INSERT INTO room_messages (id, room, user_id, message, created_at)
            VALUES ('01a20b48-fa36-709d-a4df-00000000c001', 'lobby', 'bob', 'hi lobby', now()),
                   ('01a20b48-fa36-709d-a4df-00000000c002', 'team:red', 'bob', 'hi red', now())""")

        def no_token():
            for method, path in (("GET", "/notifications"), ("GET", "/notifications?user_id=alice"),
                                 ("GET", "/notifications/unread-count"),
                                 ("GET", f"/notifications/{ALICE_ID}"),
                                 ("POST", f"/notifications/{ALICE_ID}/read"),
                                 ("POST", f"/notifications/{ALICE_ID}/unread"),
                                 ("POST", "/notifications/read-all"),
                                 ("GET", "/rooms/lobby/messages"),
                                 # Credentials come before parameters: no 400 to a stranger.
                                 ("GET", "/notifications?limit=0")):
                s, h, b = req_h(hp, method, path)
                refused(s, h, b, "missing")
                check_eq(h["www-authenticate"], "Bearer", path)
            check(stack.psql(f"SELECT read_at IS NULL FROM notifications WHERE id = '{ALICE_ID}'") == "t")
            # The probes stay open.
            check(req_h(hp, "GET", "/healthz")[0] == 200 and req_h(hp, "GET", "/readyz")[0] == 200)
        t.check("no_token_gives_401_missing_with_www_authenticate_bearer", no_token)

        def alice_not_bob():
            s, b = http_request(hp, "GET", "/notifications", headers=alice)
            check(s == 200 and [i["id"] for i in b["items"]] == [ALICE_ID], (s, b))
            s, b = http_request(hp, "GET", "/notifications?user_id=alice", headers=alice)
            check(s == 200 and b["unread_count"] == 1, (s, b))
            for method, path in (("GET", f"/notifications/{BOB_ID}"),
                                 ("POST", f"/notifications/{BOB_ID}/read"),
                                 ("POST", f"/notifications/{BOB_ID}/unread")):
                s, b = http_request(hp, method, path, headers=alice)
                check(s == 404 and b["error"]["code"] == "not_found", (path, s, b))
            # Naming bob in the query does not make alice bob.
            for method, path in (("GET", "/notifications?user_id=bob"),
                                 ("GET", "/notifications/unread-count?user_id=bob"),
                                 ("GET", f"/notifications/{BOB_ID}?user_id=bob"),
                                 ("POST", f"/notifications/{BOB_ID}/read?user_id=bob"),
                                 ("POST", "/notifications/read-all?user_id=bob")):
                s, b = http_request(hp, method, path, headers=alice)
                check(s == 403 and b["error"]["code"] == "forbidden", (path, s, b))
            check(stack.psql(f"SELECT read_at IS NULL FROM notifications WHERE id = '{BOB_ID}'") == "t",
                  "bob's notification was marked")
            s, b = http_request(hp, "POST", f"/notifications/{ALICE_ID}/read", headers=alice)
            check(s == 200 and b["notification"]["read_at"] and b["unread_count"] == 0, (s, b))
            s, b = http_request(hp, "GET", f"/notifications/{BOB_ID}", headers=bearer(mint_token("bob")))
            check(s == 200 and b["read_at"] is None, (s, b))
        t.check("alice_cannot_read_or_mark_bobs_notifications_404_and_403", alice_not_bob)

        def bad_tokens():
            now = int(time.time())
            cases = [
                ("expired", mint_token("alice", ttl=-60)),
                ("bad_signature", mint_token("alice", secret="another-secret-of-at-least-32-bytes!!")),
                ("unknown_kid", mint_token("alice", kid="nope")),
                ("wrong_alg", mint_token("alice", alg="none")),
                ("not_yet_valid", mint_token("alice", claims={"nbf": now + 600})),
                ("bad_sub", mint_token("")),
                ("malformed", "not.a.jwt"),
                ("malformed", mint_token("alice").rsplit(".", 1)[0]),
            ]
            for reason, tok in cases:
                s, h, b = req_h(hp, "GET", "/notifications", bearer(tok))
                refused(s, h, b, reason, tok)
                check(h["www-authenticate"].startswith('Bearer error="invalid_token"'), h)
            good = mint_token("alice")
            for hdr in ("Basic " + good, "Bearer", "Bearer ", good):
                s, h, b = req_h(hp, "GET", "/notifications", {"Authorization": hdr})
                refused(s, h, b, "malformed")
            # Two Authorization headers are one too many, even if both are good.
            s, b = raw_request(hp, f"GET /notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}"
                                   f"\r\nAuthorization: Bearer {good}\r\nConnection: close\r\n\r\n")
            check(s == 401 and b["error"]["reason"] == "malformed", (s, b))
            # Case-insensitive scheme (RFC 7235).
            s, _, b = req_h(hp, "GET", "/notifications", {"Authorization": "bearer " + good})
            check(s == 200, (s, b))
            text = stack.services["history"].log_text()
            check(good.split(".")[2] not in text and TEST_SECRET not in text, "a token in the log")
        t.check("expired_forged_and_malformed_tokens_401_with_their_reason", bad_tokens)

        def revoked():
            now = int(time.time())
            old = mint_token("alice", iat=now - 100)
            no_iat = mint_token("alice", claims={"iat": None})
            check(http_request(hp, "GET", "/notifications", headers=bearer(old))[0] == 200)
            stack.redis.cmd("SET", "herald:revoked:{alice}", str(now - 50))
            for tok in (old, no_iat):
                for method, path in (("GET", "/notifications"), ("POST", "/notifications/read-all"),
                                     ("GET", f"/notifications/{ALICE_ID}")):
                    s, h, b = req_h(hp, method, path, bearer(tok))
                    refused(s, h, b, "revoked", tok)
            fresh = mint_token("alice", iat=now - 50)  # iat == cut-off: issued after it
            s, b = http_request(hp, "GET", "/notifications", headers=bearer(fresh))
            check(s == 200 and b["items"][0]["id"] == ALICE_ID, (s, b))
            # Another user's cut-off is not alice's.
            s, _ = http_request(hp, "GET", "/notifications", headers=bearer(mint_token("bob", iat=now - 100)))
            check(s == 200, s)
            stack.redis.cmd("DEL", "herald:revoked:{alice}")
        t.check("revoked_token_gives_401_revoked_and_a_new_token_works", revoked)

        def rooms():
            cases = [(None, "lobby", 403), ([], "lobby", 403), (["team:*"], "lobby", 403),
                     (["team:*"], "team", 403), (["lobby"], "lobby", 200), (["*"], "lobby", 200),
                     (["team:*"], "team:red", 200), (["lobby", "team:red"], "team:red", 200)]
            for claim, room, want in cases:
                s, b = http_request(hp, "GET", f"/rooms/{room}/messages",
                                    headers=bearer(mint_token("carol", rooms=claim)))
                check(s == want, (claim, room, s, b))
                if want == 403:
                    check(b["error"]["code"] == "forbidden", b)
                else:
                    check([i["message"] for i in b["items"]] == ["hi red" if room == "team:red" else "hi lobby"], b)
        t.check("room_history_needs_the_rooms_claim_403_without_200_with", rooms)

        def cors():
            s, h, _ = req_h(hp, "OPTIONS", "/notifications", {
                "Origin": "http://app.example", "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization"})
            check(s == 204, s)
            allowed = [x.strip().lower() for x in h["access-control-allow-headers"].split(",")]
            check("authorization" in allowed and "content-type" in allowed, h)
            # A page can read why it was refused.
            s, h, _ = req_h(hp, "GET", "/notifications", {"Origin": "http://app.example"})
            check(s == 401 and h["access-control-allow-origin"] == "*", h)
            exposed = [x.strip().lower() for x in h["access-control-expose-headers"].split(",")]
            check("www-authenticate" in exposed and "retry-after" in exposed, h)
        t.check("cors_preflight_allows_authorization_and_401_exposes_www_authenticate", cors)

        def dev_token():
            body = json.dumps({"user_id": "alice", "rooms": ["lobby"], "ttl_s": 600})
            js = {"Content-Type": "application/json"}
            for method in ("POST", "GET", "OPTIONS"):
                s, h, b = req_h(hp, method, "/dev/token", js if method == "POST" else {},
                                body if method == "POST" else None)
                if method == "OPTIONS":
                    check(s == 204, s)  # every preflight passes, so the page sees the 404
                else:
                    check(s == 404 and b["error"]["code"] == "not_found", (method, s, b))
            check("dev_mint" not in stack.services["history"].log_text())
            mp = stack.spawn_listening("history_mint", "herald-history", "HERALD_HISTORY_PORT",
                                       {"HERALD_HISTORY_DEV_MINT": "true"})
            wait_until(lambda: http_request(mp, "GET", "/readyz")[0] == 200, 15, "minting history ready")
            log = stack.services["history_mint"].log_text()
            check("warn" in log and "dev_mint" in log, log[-2000:])
            now = int(time.time())
            s, h, b = req_h(mp, "POST", "/dev/token", js, body)
            check(s == 200 and set(b) == {"token", "expires_at"}, (s, b))
            check(now + 600 <= b["expires_at"] <= int(time.time()) + 600, b)
            tok = b["token"]
            # Accepted by the other history (the same keys): its sub and rooms apply.
            s, r = http_request(hp, "GET", "/notifications", headers=bearer(tok))
            check(s == 200 and [i["id"] for i in r["items"]] == [ALICE_ID], (s, r))
            s, r = http_request(hp, "GET", "/rooms/lobby/messages", headers=bearer(tok))
            check(s == 200 and r["items"], (s, r))
            s, r = http_request(hp, "GET", "/rooms/team:red/messages", headers=bearer(tok))
            check(s == 403, (s, r))
            # Defaults: no rooms claim (no room), ttl 3600.
            s, h, b = req_h(mp, "POST", "/dev/token", js, json.dumps({"user_id": "dave"}))
            check(s == 200 and now + 3600 <= b["expires_at"] <= int(time.time()) + 3600, (s, b))
            check(http_request(hp, "GET", "/rooms/lobby/messages", headers=bearer(b["token"]))[0] == 403)
            check(http_request(hp, "GET", "/notifications", headers=bearer(b["token"]))[0] == 200)
            bad = [({"rooms": ["lobby"]}, "missing_field"),
                   ({"user_id": ""}, "invalid_field"),
                   ({"user_id": "a\u0001b"}, "invalid_field"),
                   ({"user_id": "x" * 129}, "invalid_field"),
                   ({"user_id": 7}, "invalid_field"),
                   ({"user_id": "a", "rooms": "lobby"}, "invalid_field"),
                   ({"user_id": "a", "rooms": ["no spaces"]}, "invalid_field"),
                   ({"user_id": "a", "rooms": ["*x"]}, "invalid_field"),
                   ({"user_id": "a", "rooms": ["te*am:*"]}, "invalid_field"),
                   ({"user_id": "a", "rooms": ["r" * 65]}, "invalid_field"),
                   ({"user_id": "a", "rooms": [1]}, "invalid_field"),
                   ({"user_id": "a", "rooms": [f"r{i}" for i in range(257)]}, "invalid_field"),
                   ({"user_id": "a", "ttl_s": 0}, "invalid_field"),
                   ({"user_id": "a", "ttl_s": 86401}, "invalid_field"),
                   ({"user_id": "a", "ttl_s": 1.5}, "invalid_field"),
                   ({"user_id": "a", "ttl_s": "60"}, "invalid_field"),
                   ({"user_id": "a", "admin": True}, "unknown_field")]
            for doc, code in bad:
                s, h, b = req_h(mp, "POST", "/dev/token", js, json.dumps(doc))
                check(s == 400 and b["error"]["code"] == code and b["error"]["message"], (doc, s, b))
            s, h, b = req_h(mp, "POST", "/dev/token", js, "{not json")
            check(s == 400 and b["error"]["code"] == "invalid_json", (s, b))
            s, h, b = req_h(mp, "POST", "/dev/token", {"Content-Type": "text/plain"}, body)
            check(s == 415, (s, b))
            s, h, b = req_h(mp, "GET", "/dev/token")
            check(s == 405, (s, b))
            s, h, _ = req_h(mp, "OPTIONS", "/dev/token", {"Origin": "http://app.example",
                                                          "Access-Control-Request-Method": "POST"})
            check(s == 204 and "POST" in h["access-control-allow-methods"], h)
            check("content-type" in h["access-control-allow-headers"].lower(), h)
            # 256 rooms, each a pattern: fits (the body limit is above the claim's).
            many = {"user_id": "a", "rooms": [f"{'p' * 60}{i:03d}:*" for i in range(256)]}
            s, h, b = req_h(mp, "POST", "/dev/token", js, json.dumps(many))
            check(s == 200, (s, b))
        t.check("dev_token_absent_without_dev_mint_and_minting_accepted_tokens_with_it", dev_token)

        def redis_down():
            stack.stop_redis()
            s, h, b = req_h(hp, "GET", "/notifications", alice)
            check(s == 503 and b["error"]["code"] == "unavailable" and h.get("retry-after") == "1", (s, h, b))
            s, h, b = req_h(hp, "POST", f"/notifications/{ALICE_ID}/unread", alice)
            check(s == 503, (s, b))
            check(stack.psql(f"SELECT read_at IS NOT NULL FROM notifications WHERE id = '{ALICE_ID}'") == "t",
                  "a mark went through without its cut-off check")
            # A refused token is still 401: nothing to look up.
            s, h, b = req_h(hp, "GET", "/notifications", bearer(mint_token("alice", ttl=-60)))
            refused(s, h, b, "expired")
            stack.start_redis()
            wait_until(lambda: http_request(hp, "GET", "/notifications", headers=alice)[0] == 200, 15,
                       "history answers again once Redis is back")
        t.check("redis_down_gives_503_for_an_authenticated_request_then_recovers", redis_down)
    finally:
        t.check("services_exit_cleanly_without_sanitizer_reports", stack.stop)
    t.finish()


if __name__ == "__main__":
    main()
