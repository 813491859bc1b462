#!/usr/bin/env bash
# Redis memory per accepted notification, measured through the real ingest:
# starts a private redis-server and herald-ingest (no worker, so the stream
# keeps every entry), POSTs N notifications without and then N with an
# Idempotency-Key, and prints Redis `used_memory` growth per POST:
#
#   stream_entry_bytes   one short notification in herald:stream:notifications
#   idempotency_key_bytes the extra cost of an Idempotency-Key (kept 24 h)
#
# and what that means for sizing (1M stream entries; a day of keys at 1,000/s).
# Fails (exit 1, no figures) if any POST is not answered 202.
#
#   bench/redis_memory_bench.sh [--no-build]      env: N (20000), BUILD_DIR (build-bench)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
N=${N:-20000}
[ "${1:-}" = --no-build ] || {
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHERALD_TESTS=OFF >/dev/null
    cmake --build "$BUILD" -j2 --target herald-ingest >/dev/null
}
ING_BIN=$BUILD/services/ingest/herald-ingest
[ -x "$ING_BIN" ] || { echo "missing $ING_BIN" >&2; exit 1; }

WORK=$(mktemp -d /tmp/herald-redis-mem.XXXXXX)
ING_PID=""
REDIS_PID=""
cleanup() {
    set +e
    [ -n "$ING_PID" ] && kill "$ING_PID" 2>/dev/null && wait "$ING_PID" 2>/dev/null
    [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
fail() { echo "redis_memory_bench: FAILED: $*" >&2; exit 1; }

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --logfile "$WORK/redis.log" --dir "$WORK" &
REDIS_PID=$!
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$RPORT" ping >/dev/null || fail "redis-server did not start"

IPORT=$(free_port)
HERALD_REDIS_URL=redis://127.0.0.1:$RPORT HERALD_INGEST_PORT=$IPORT HERALD_LOG_LEVEL=warn HERALD_INGEST_ALLOW_ANONYMOUS=true \
    "$ING_BIN" >"$WORK/ingest.log" 2>&1 &
ING_PID=$!
ready=0
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$IPORT/healthz" >/dev/null && { ready=1; break; }; sleep 0.05; done
[ $ready = 1 ] || fail "ingest not ready: $(tail -3 "$WORK/ingest.log")"

used() { redis-cli -p "$RPORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
post() { # $1 = with_key (0/1): N POSTs, every answer must be 202
    python3 - "$IPORT" "$N" "$1" <<'EOF'
import http.client, json, sys
port, n, with_key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
for i in range(n):
    h = {"Content-Type": "application/json"}
    if with_key:
        h["Idempotency-Key"] = f"bench-key-{i:08d}"
    c.request("POST", "/notifications", body=json.dumps({"user_id": f"user{i % 1000}",
                                                         "message": f"Your order #{i} has shipped"}), headers=h)
    r = c.getresponse()
    body = r.read()
    if r.status != 202:
        sys.exit(f"redis_memory_bench: FAILED: POST {i} answered {r.status}: {body[:200]!r}")
EOF
}

m0=$(used); post 0; m1=$(used); post 1; m2=$(used)
entry=$(( (m1 - m0) / N ))
with_key=$(( (m2 - m1) / N ))
key=$(( with_key - entry ))
echo "posts=$N stream_entry_bytes=$entry idempotency_key_bytes=$key"
echo "stream_1M_entries_mb=$entry keys_per_day_at_1000_per_s_gb=$(awk -v k="$key" 'BEGIN { printf "%.1f", k * 86400 * 1000 / 1e9 }')"
