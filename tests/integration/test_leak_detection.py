"""A memory leak in any service fails the integration test that ran it.

The harness runs every service with ASAN_OPTIONS=detect_leaks=1 and fails a
test whose service logged a sanitizer report or exited non-zero. That only
works if each service ends through exit() after SIGTERM (LeakSanitizer runs
at exit: a service leaving by _exit, by a signal's default action or by
abort never reports). Proof, for each of the four binaries: it is restarted
with a canary preloaded that leaks one block at start (herald_leak_canary),
traffic goes through, and Stack.stop() must fail naming that service, the
LeakSanitizer report and the canary's frame. The same canary freeing its
block instead (the control) must stop clean, so the failure is the leak's.

Skipped (exit 77) when the binaries are not built with ASan."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from herald_stack import (INGEST_KEY, CheckFailed, Stack, TestRun, bearer, check, log,
                          post_notification, wait_until)

CANARY = r"""
#include <stdlib.h>
#include <string.h>
void *volatile herald_leak_canary_slot;
__attribute__((noinline)) static void herald_leak_canary(void)
{
    herald_leak_canary_slot = malloc(4242);
    memset(herald_leak_canary_slot, 0x5a, 4242);
#ifdef CANARY_FREES
    free(herald_leak_canary_slot);
#endif
    herald_leak_canary_slot = NULL;
}
__attribute__((constructor)) static void herald_leak_canary_init(void) { herald_leak_canary(); }
"""

# key in Stack.services -> binary, port variable (None: no listener), extra env
SERVICES = {
    "ingest": ("herald-ingest", "HERALD_INGEST_PORT", {}),
    "history": ("herald-history", "HERALD_HISTORY_PORT", {}),
    "gateway1": ("herald-gateway", "HERALD_GATEWAY_PORT",
                 {"HERALD_GATEWAY_DEV_USER_QUERY": "true", "HERALD_GATEWAY_NODE_ID": "gw1"}),
    "worker1": ("herald-worker", None, {"HERALD_WORKER_CONSUMER": "worker1"}),
}


def asan_runtime(binary):
    """The libasan a binary loads (it must come first in LD_PRELOAD), or None."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    m = re.search(r"^\s*libasan\.so\S*\s+=>\s+(\S+)", out, re.M)
    return m.group(1) if m else None


def build_canaries(tmp):
    src = os.path.join(tmp, "canary.c")
    with open(src, "w") as f:
        f.write(CANARY)
    libs = {}
    for kind, flags in (("leaks", []), ("frees", ["-DCANARY_FREES"])):
        libs[kind] = os.path.join(tmp, f"canary_{kind}.so")
        subprocess.run(["cc", "-shared", "-fPIC", "-g", "-O0", *flags, src, "-o", libs[kind]],
                       check=True)
    return libs


def run_with_canary(key, canary, asan):
    """A stack with `key` restarted under the canary, some traffic, then
    stop(); returns the CheckFailed message, or None if it stopped clean."""
    stack = Stack(gateways=1)
    try:
        binary, port_var, env = SERVICES[key]
        old = stack.services[key]
        # wait_ready() does not wait for the worker: a SIGTERM before its handler
        # is installed would kill it by the default action (no exit, no report).
        ready = "event=started" if port_var is None else "event=listening"
        wait_until(lambda: ready in old.log_text(), 15, f"{key} started")
        check(old.terminate() == 0, key, "did not exit 0 on SIGTERM")
        env = dict(env, LD_PRELOAD=f"{asan} {canary}")
        if port_var is None:
            stack.spawn(key, binary, env)
        else:
            port = stack.spawn_listening(key, binary, port_var, env)
            if key == "ingest":
                stack.ingest_port = port
            elif key == "history":
                stack.history_port = port
            else:
                stack.gateway_ports[0] = port
        stack.wait_ready()
        # The service does its usual work before the SIGTERM: a notification end to end.
        status, body = post_notification(stack.ingest_port, {"user_id": "alice", "message": "m"},
                                         bearer(INGEST_KEY))
        check(status == 202, status, body)
        wait_until(lambda: stack.psql("SELECT count(*) FROM notifications") == "1", 15,
                   "the notification stored by the worker")
    except BaseException:
        stack.stop(check=False)
        raise
    try:
        stack.stop(check=True)
    except CheckFailed as e:
        return str(e)
    return None


def main():
    bindir = os.environ["HERALD_BIN_DIR"]
    asan = asan_runtime(os.path.join(bindir, "services", "ingest", "herald-ingest"))
    if asan is None:
        print("# skipped: the services are not built with ASan (HERALD_SANITIZE=OFF)")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="herald-canary-")
    canaries = build_canaries(tmp)
    t = TestRun()

    for key in SERVICES:
        def leak_fails_the_stack(key=key):
            msg = run_with_canary(key, canaries["leaks"], asan)
            check(msg is not None, key, "leaked and the stack stopped clean")
            log(msg.splitlines()[0])
            check(f"{key}: sanitizer report" in msg, "no sanitizer report from", key, msg[-3000:])
            check("ERROR: LeakSanitizer" in msg and "herald_leak_canary" in msg,
                  "the report is not the canary's leak", msg[-3000:])
        t.check(f"a_leak_in_{re.sub(r'[0-9]', '', key)}_fails_the_test", leak_fails_the_stack)

    def control_without_a_leak_stops_clean():
        for key in ("ingest", "gateway1"):
            msg = run_with_canary(key, canaries["frees"], asan)
            check(msg is None, key, "failed without a leak:", msg)
    t.check("the_same_canary_freeing_its_block_stops_clean", control_without_a_leak_stops_clean)
    shutil.rmtree(tmp, ignore_errors=True)
    t.finish()


if __name__ == "__main__":
    main()
