"""The shipped configuration files load: every binary starts with
`--config deploy/herald.conf.example` and with `--config deploy/dev.conf`
(ports and URLs from the environment, which overrides the file), the stack
works end to end, and values the files set are really read (the example's
gateway.dev_user_query = false in both refuses ?user_id=, the files' dev key signs tokens).
A missing file is refused."""
import os
import subprocess

from herald_promises import Checks, check, expect_close, request
from herald_stack import (BIN_DIR, SANITIZER_MARKS, SRC_DIR, Service, Stack, TestRun, bearer, free_port,
                          mint_token, wait_until)
from herald_ws import WsClient, WsRefused

CONFIGS = {
    "example": os.path.join(SRC_DIR, "deploy", "herald.conf.example"),
    "dev": os.path.join(SRC_DIR, "deploy", "dev.conf"),
}

# The development key both files hold (auth.keys): history wants a token.
DEV_JWT = mint_token("cfg", kid="dev-1", secret="dev-only-secret-change-me-0123456789abcdef")
DEV_TOKEN = bearer(DEV_JWT)

# Checks known to fail against the current code (name → why); printed as skipped.
EXPECTED_FAILURES = {}


def start(stack, name, binary, conf, env_over):
    env = dict(stack.env)
    env.update({k: str(v) for k, v in env_over.items()})
    svc = Service(name, [stack.binary(binary), "--config", conf], env, stack.tmp)
    stack.services[name] = svc
    return svc


def run_config(t, run, label, conf):
    stack = Stack(services=())  # redis-server and PostgreSQL only; the services come from here
    try:
        def loads_and_serves():
            out = subprocess.run([stack.binary("herald-worker"), "--config", conf, "--migrate"],
                                 env=stack.env, capture_output=True, text=True, timeout=60)
            check(out.returncode == 0, "--migrate with the file", out.stdout, out.stderr)
            ports = {"ingest": free_port(), "history": free_port(), "gateway": free_port()}
            start(stack, "ingest", "herald-ingest", conf, {"HERALD_INGEST_PORT": ports["ingest"]})
            start(stack, "history", "herald-history", conf, {"HERALD_HISTORY_PORT": ports["history"]})
            start(stack, "gateway", "herald-gateway", conf, {"HERALD_GATEWAY_PORT": ports["gateway"],
                                                              "HERALD_GATEWAY_NODE_ID": "gwc"})
            start(stack, "worker", "herald-worker", conf, {"HERALD_WORKER_CONSUMER": "wc"})
            for name, port in ports.items():
                wait_until(lambda: request(port, "GET", "/healthz")[0] == 200, 15, f"{name} healthy")
            wait_until(lambda: request(ports["history"], "GET", "/readyz")[0] == 200, 15, "history ready")
            wait_until(lambda: request(ports["ingest"], "GET", "/readyz")[0] == 200, 15, "ingest ready")
            # Ready = Redis up and the revocation cut-offs read (upgrades get 503 before).
            wait_until(lambda: request(ports["gateway"], "GET", "/readyz")[0] == 200, 15, "gateway ready")
            for name, svc in stack.services.items():
                check(svc.proc.poll() is None, f"{name} running", svc.log_text()[-2000:])
            # Neither file turns on gateway.dev_user_query: ?user_id= alone is 401,
            # a token signed with the files' development key (kid dev-1) is welcome.
            try:
                WsClient("127.0.0.1", ports["gateway"], "/ws?user_id=cfg").close()
                check(False, f"{label}: dev_user_query = false accepted ?user_id=")
            except WsRefused as e:
                check(e.status == 401, f"{label}: dev_user_query = false", e.body)
            c = WsClient("127.0.0.1", ports["gateway"], "/ws?token=" + DEV_JWT)
            try:
                check(c.recv_type("welcome")["user_id"] == "cfg", f"{label}: the dev key signs tokens")
            finally:
                c.close()
            # The development key of both files (dev.conf accepts no anonymous caller).
            key = {"Authorization": "Bearer dev-ingest-key-change-me"}
            s, _, a = request(ports["ingest"], "POST", "/notifications",
                              {"user_id": "cfg", "message": f"through {label}"}, key)
            check(s == 202, "ingest accepts", s, a)
            wait_until(lambda: stack.psql(f"SELECT count(*) FROM notifications WHERE id = '{a['id']}'")
                       == "1", 15, "the worker stored it")
            s, _, body = request(ports["history"], "GET", "/notifications", headers=DEV_TOKEN)
            check(s == 200 and [i["id"] for i in body["items"]] == [a["id"]], "history serves it", body)
            # history.cors_origin = "*" is the example's (and the default) value.
            s, hdr, _ = request(ports["history"], "GET", "/notifications", headers=DEV_TOKEN)
            check(hdr.get("access-control-allow-origin") == "*", "cors header", hdr)
        run(f"every_binary_starts_with_{label}_conf_and_the_stack_works", loads_and_serves)

        def exit_cleanly():
            for name, svc in list(stack.services.items()):
                rc = svc.terminate()
                text = svc.log_text()
                check(rc == 0 and not any(m in text for m in SANITIZER_MARKS),
                      f"{name} exits 0 without sanitizer reports", rc, text[-2000:])
            stack.services.clear()
        t.check(f"{label}_conf_services_exit_cleanly", exit_cleanly)
    finally:
        stack.stop(check=False)


def main():
    t = TestRun()
    run = Checks(t, EXPECTED_FAILURES)
    for label, conf in CONFIGS.items():
        run_config(t, run, label, conf)

    def missing_file_refused():
        missing = os.path.join(SRC_DIR, "deploy", "no-such.conf")
        for svc in ("ingest", "gateway", "worker", "history"):
            binary = os.path.join(BIN_DIR, "services", svc, f"herald-{svc}")
            out = subprocess.run([binary, "--config", missing], capture_output=True, text=True,
                                 timeout=30, env=dict(os.environ, HERALD_INGEST_PORT="0",
                                                      HERALD_GATEWAY_PORT="0", HERALD_HISTORY_PORT="0"))
            check(out.returncode > 0, "exits non-zero", svc,
                  out.returncode, out.stdout[-500:], out.stderr[-500:])
    run("a_missing_config_file_is_refused_by_every_binary", missing_file_refused)
    t.finish()


if __name__ == "__main__":
    main()
