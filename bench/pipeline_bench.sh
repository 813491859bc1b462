#!/usr/bin/env bash
# Durable pipeline benchmark (not in CTest):
#   1. fills herald:stream:notifications with N valid entries (one Lua script
#      per 50,000, run inside Redis), then measures herald-worker's rows/s
#      draining it with 1 worker, then again with 2 workers;
#   2. end-to-end lag under a steady POST load through herald-ingest:
#      created_at (stamped by ingest when it accepts the POST) -> COMMIT of the
#      row's transaction (pg_xact_commit_timestamp, track_commit_timestamp=on),
#      over exactly the rows of the 202 answers, once all of them are stored.
# Private redis-server and PostgreSQL on free ports, stopped by pid.
# Exits non-zero, printing no figure for the failed part, when a drain does
# not reach N distinct rows within DRAIN_TIMEOUT, rows are duplicated, a
# worker does not exit 0 on SIGTERM, a POST is not answered 202, or the
# accepted rows are not all stored within DRAIN_TIMEOUT.
#
#   bench/pipeline_bench.sh [BUILD_DIR]      (default: build-bench, a Release build made if missing)
#   N=1000000 RATE=2000 SECONDS_LOAD=10 DRAIN_TIMEOUT=600 bench/pipeline_bench.sh
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build-bench}
N=${N:-1000000}
RATE=${RATE:-2000}
SECONDS_LOAD=${SECONDS_LOAD:-10}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
PG_BIN=${HERALD_PG_BIN:-/usr/lib/postgresql/15/bin}

if [ ! -x "$BUILD/services/worker/herald-worker" ]; then
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DHERALD_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j2 --target herald-worker herald-ingest >/dev/null
fi
WORKER=$BUILD/services/worker/herald-worker
INGEST=$BUILD/services/ingest/herald-ingest

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TMP=$(mktemp -d /tmp/herald-bench-XXXXXX)
chmod 755 "$TMP"
RPORT=$(free_port); PPORT=$(free_port); IPORT=$(free_port)
PIDS=()
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  [ -f "$TMP/pg/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$TMP/pg" -m fast -w stop >/dev/null 2>&1
  [ -f "$TMP/redis.pid" ] && kill "$(cat "$TMP/redis.pid")" 2>/dev/null
  sleep 0.3; rm -rf "$TMP"
}
trap cleanup EXIT

redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$TMP/redis.pid" --logfile "$TMP/redis.log" --dir "$TMP"
mkdir -m 700 "$TMP/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$TMP/pg" "$TMP"
as_pg "$PG_BIN/initdb" -D "$TMP/pg" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$TMP/pg" -l "$TMP/pg.log" -w -o "-p $PPORT -k $TMP -c listen_addresses=127.0.0.1 \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c track_commit_timestamp=on" start >/dev/null
rcli() { redis-cli -p "$RPORT" "$@"; }
sql() { psql -h 127.0.0.1 -p "$PPORT" -U postgres -d herald -At -c "$1"; }
psql -h 127.0.0.1 -p "$PPORT" -U postgres -d postgres -qc "CREATE DATABASE herald"

export HERALD_REDIS_URL=redis://127.0.0.1:$RPORT
export HERALD_POSTGRES_URL="host=127.0.0.1 port=$PPORT dbname=herald user=postgres"
export HERALD_WORKER_MIGRATIONS_DIR=$SRC/migrations
export HERALD_LOG_LEVEL=warn
"$WORKER" --migrate

# KEYS[1] stream; ARGV[1] first index, ARGV[2] count, ARGV[3] created_at, ARGV[4] ms (hex, 12 digits)
FILL='
local base = tonumber(ARGV[1])
for i = base, base + tonumber(ARGV[2]) - 1 do
  local id = string.format("%s-%s-7%03x-8%03x-%012x", string.sub(ARGV[4], 1, 8), string.sub(ARGV[4], 9, 12),
                           i % 4096, math.floor(i / 4096) % 4096, i)
  local user = "u" .. (i % 1000)
  local env = "{\"id\":\"" .. id .. "\",\"user_id\":\"" .. user .. "\",\"type\":\"default\",\"message\":\"bench message " ..
              i .. "\",\"data\":null,\"created_at\":\"" .. ARGV[3] .. "\"}"
  redis.call("XADD", KEYS[1], "*", "id", id, "user_id", user, "payload", env)
end
return 0'

fill() {
  local ms hex created t0
  ms=$(date +%s%3N); hex=$(printf '%012x' "$ms")
  created=$(date -u -d "@$((ms / 1000))" +%Y-%m-%dT%H:%M:%S).$(printf '%03d' $((ms % 1000)))Z
  t0=$(date +%s%N)
  for ((at = 0; at < N; at += 50000)); do
    local c=$(( N - at < 50000 ? N - at : 50000 ))
    rcli EVAL "$FILL" 1 herald:stream:notifications "$at" "$c" "$created" "$hex" >/dev/null
  done
  echo "filled $(rcli XLEN herald:stream:notifications) entries in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}

fail() { echo "pipeline_bench: FAILED: $*" >&2; exit 1; }

drain() { # $1 = number of workers
  local t0 t1 pids=() rows total p rc deadline
  t0=$(date +%s%N)
  deadline=$((SECONDS + DRAIN_TIMEOUT))
  for ((k = 1; k <= $1; k++)); do
    HERALD_WORKER_CONSUMER=bench$k "$WORKER" 2>>"$TMP/worker.log" & pids+=($!); PIDS+=($!)
  done
  while :; do
    rows=$(sql "SELECT count(DISTINCT id) FROM notifications")
    [ "$rows" -ge "$N" ] && break
    [ $SECONDS -ge $deadline ] && fail "workers=$1: $rows of $N rows after ${DRAIN_TIMEOUT}s"
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || fail "worker $p exited during the drain"; done
    sleep 0.2
  done
  t1=$(date +%s%N)
  for p in "${pids[@]}"; do
    kill "$p"
    rc=0; wait "$p" || rc=$?
    [ $rc -eq 0 ] || fail "worker $p exited $rc after SIGTERM"
  done
  total=$(sql "SELECT count(*) FROM notifications")
  [ "$total" -eq "$N" ] || fail "workers=$1: $total rows for $N distinct ids (duplicates)"
  local ms=$(( (t1 - t0) / 1000000 ))
  echo "workers=$1 rows=$rows time_ms=$ms rows_per_s=$(( rows * 1000 / (ms > 0 ? ms : 1) ))"
}

rcli XGROUP CREATE herald:stream:notifications herald-workers 0 MKSTREAM >/dev/null
fill; drain 1
sql "TRUNCATE notifications" >/dev/null
rcli DEL herald:stream:notifications >/dev/null
rcli XGROUP CREATE herald:stream:notifications herald-workers 0 MKSTREAM >/dev/null
fill; drain 2

# End-to-end lag under a steady POST load.
sql "TRUNCATE notifications" >/dev/null
HERALD_INGEST_PORT=$IPORT HERALD_INGEST_ALLOW_ANONYMOUS=true "$INGEST" 2>>"$TMP/ingest.log" & PIDS+=($!)
HERALD_WORKER_CONSUMER=lag1 "$WORKER" 2>>"$TMP/worker.log" & PIDS+=($!)
ready=0
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$IPORT/healthz" >/dev/null && { ready=1; break; }; sleep 0.05; done
[ $ready = 1 ] || fail "ingest not ready on :$IPORT after 10 s (log: $(tail -3 "$TMP/ingest.log"))"
# Every answer must be 202; the ids go to $TMP/ids for the lag query. Any
# other answer or error fails the run (exit 1), so no lag is printed for it.
python3 - "$IPORT" "$RATE" "$SECONDS_LOAD" "$TMP/ids" <<'EOF'
import http.client, json, sys, threading, time
port, rate, secs, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
threads = 4
ids = [[] for _ in range(threads)]
errors = []
def run(t):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        per = rate / threads
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < secs:
            due = start + i / per
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            c.request("POST", "/notifications", body=json.dumps({"user_id": f"lag{i % 100}", "message": "x"}),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse(); raw = r.read()
            if r.status != 202:
                raise RuntimeError(f"POST answered {r.status}: {raw[:200]!r}")
            ids[t].append(json.loads(raw)["id"])
            i += 1
    except Exception as e:  # noqa: BLE001 - reported below, fails the run
        errors.append(f"poster {t}: {e!r}")
ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
if errors:
    sys.exit("pipeline_bench: FAILED: " + "; ".join(errors))
n = sum(len(x) for x in ids)
with open(out, "w") as f:
    f.write("".join(i + "\n" for x in ids for i in x))
print(f"posted {n} (all 202) at a target of {rate}/s for {secs:.0f} s")
EOF
ACCEPTED=$(wc -l <"$TMP/ids")
sql "CREATE TABLE bench_ids (id uuid PRIMARY KEY)" >/dev/null
psql -h 127.0.0.1 -p "$PPORT" -U postgres -d herald -qc "\\copy bench_ids FROM '$TMP/ids'"
deadline=$((SECONDS + DRAIN_TIMEOUT))
while :; do
  stored=$(sql "SELECT count(*) FROM bench_ids b JOIN notifications n USING (id)")
  [ "$stored" -ge "$ACCEPTED" ] && break
  [ $SECONDS -ge $deadline ] && fail "$stored of $ACCEPTED accepted notifications stored after ${DRAIN_TIMEOUT}s"
  sleep 0.2
done
sql "SELECT 'lag_ms (created_at -> commit) rows=' || count(*) ||
  ' p50=' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY l)::numeric, 1) ||
  ' p99=' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY l)::numeric, 1) ||
  ' max=' || round(max(l)::numeric, 1)
  FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(n.xmin) - n.created_at) * 1000 AS l
        FROM bench_ids b JOIN notifications n USING (id)) x"
