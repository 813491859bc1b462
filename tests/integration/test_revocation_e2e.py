"""Revocation across services, real binaries: a backend team's ingest key
calls POST /users/{id}/revoke and /disconnect (proto/auth.md, "Revocation");
every gateway closes the user's sockets with 4003, her old token is then
refused by both gateways and by history, and a token minted afterwards works."""
import time

from herald_stack import INGEST_KEY, Stack, TestRun, bearer, check, check_eq, http_request, mint_token
from herald_ws import WsClient, WsClosed, WsRefused, token_path


def connect(port, token):
    c = WsClient("127.0.0.1", port, token_path(token))
    check_eq(c.recv_json()["type"], "welcome", "first frame")
    return c


def closed_with(c, code, error):
    """The socket gets an error frame `error`, then close `code`."""
    frames = []
    try:
        while True:
            frames.append(c.recv_json(5))
    except WsClosed as e:
        check_eq(e.code, code, "close code", frames)
    check(any(f.get("type") == "error" and f.get("code") == error for f in frames),
          "no error frame", error, frames)


def upgrade_refused(port, token):
    try:
        c = WsClient("127.0.0.1", port, token_path(token))
    except WsRefused as e:
        return e
    c.close()
    check(False, "upgrade accepted with a revoked token")


def ingest(stack, path, body=None):
    return http_request(stack.ingest_port, "POST", path, body, bearer(INGEST_KEY))


def main():
    t = TestRun()
    stack = Stack(gateways=2)
    try:
        gw1, gw2 = stack.gateway_ports
        old = mint_token("alice", rooms=["lobby"], iat=int(time.time()) - 60)
        bob_token = mint_token("bob", rooms=["lobby"], iat=int(time.time()) - 60)

        def revoke_closes_sockets_on_both_gateways_and_refuses_the_old_token():
            a1, a2, b = connect(gw1, old), connect(gw2, old), connect(gw1, bob_token)
            s, body = ingest(stack, "/users/alice/revoke")
            check_eq(s, 200, body)
            check_eq(body["gateways"], 2, "both gateways got the order", body)
            closed_with(a1, 4003, "revoked")
            closed_with(a2, 4003, "revoked")
            b.send_json({"type": "ping", "ref": "still"})
            check_eq(b.recv_type("pong").get("ref"), "still", "bob's socket stays")
            b.close()
            for port in (gw1, gw2):
                e = upgrade_refused(port, old)
                check_eq(e.status, 401, e.body)
                check_eq(e.json()["error"].get("reason"), "revoked", e.body)
            s, body = http_request(stack.history_port, "GET", "/notifications", None, bearer(old))
            check_eq(s, 401, body)
            check_eq(body["error"].get("reason"), "revoked", body)
        t.check("revoke_closes_sockets_on_both_gateways_and_refuses_the_old_token",
                revoke_closes_sockets_on_both_gateways_and_refuses_the_old_token)

        def a_token_minted_after_the_revocation_works_everywhere():
            # The cut-off is whole seconds: a token issued in a later second is newer.
            cut = int(stack.redis.cmd("GET", "herald:revoked:{alice}"))
            while int(time.time()) < cut:
                time.sleep(0.05)
            fresh = mint_token("alice", rooms=["lobby"], iat=max(cut, int(time.time())))
            for port in (gw1, gw2):
                connect(port, fresh).close()
            s, body = http_request(stack.history_port, "GET", "/notifications", None, bearer(fresh))
            check_eq(s, 200, body)
        t.check("a_token_minted_after_the_revocation_works_everywhere",
                a_token_minted_after_the_revocation_works_everywhere)

        def disconnect_closes_sockets_but_the_token_still_connects():
            tok = mint_token("carol", rooms=["lobby"])
            c1, c2 = connect(gw1, tok), connect(gw2, tok)
            s, body = ingest(stack, "/users/carol/disconnect")
            check_eq(s, 200, body)
            check(body["issued_before"] is None, body)
            closed_with(c1, 4003, "revoked")
            closed_with(c2, 4003, "revoked")
            connect(gw1, tok).close()
        t.check("disconnect_closes_sockets_but_the_token_still_connects",
                disconnect_closes_sockets_but_the_token_still_connects)
    finally:
        stack.stop()
    return t.finish()


if __name__ == "__main__":
    raise SystemExit(main())
