#!/usr/bin/env bash
# History benchmark: GET /notifications against a big table.
#
# Builds herald-history and herald-worker (Release, build-hist-bench/), starts
# a private PostgreSQL 15 (initdb in a temp dir) and redis-server on free
# ports, applies the migrations with `herald-worker --migrate`, loads ROWS
# notifications over USERS users straight into PostgreSQL (one INSERT … SELECT
# generate_series per chunk; ids are UUIDv7 built from a timestamp, so they
# sort by time like the real ones; READ_PCT % of them read), VACUUM ANALYZEs,
# starts herald-history and runs wrk with a Lua script that picks a random user
# per request:
#
#   inbox    GET /notifications?user_id=<random>                 (first page, 20)
#   unread   GET /notifications?user_id=<random>&status=unread
#   page2    GET /notifications?user_id=<random>&cursor=<…>      (a page mid-inbox)
#   count    GET /notifications/unread-count?user_id=<random>
#   token    GET /notifications with Authorization: Bearer <the random user's
#            token> (what production does: HS256 check, then GET of the
#            user's revocation cut-off in Redis before the query)
#
# The ?user_id= scenarios run through history.dev_user_query (no token, no
# Redis lookup), so inbox vs token is the price of authentication.
#
# and prints p50/p99 latency, req/s and history's CPU per request for each. A scenario with any non-2xx
# answer or socket error fails the run (exit 1, its line marked FAILED), as
# does history not becoming ready. Then one heavy user with HEAVY unread rows
# (default 1,000,000): the time of its unread count, first page, one mark and
# read-all (once each, after a warm-up; curl -w).
#
# plans (not in the default set) prints the plan of every statement history
# runs, as history runs it (prepared, generic plan: plan_cache_mode is
# force_generic_plan for the step; EXPLAIN ANALYZE BUFFERS through
# auto_explain in PostgreSQL's log): one request of each kind for user
# PLAN_USER. The marks and read-all really run (after the wrk scenarios).
#
# usage: bench/history_bench.sh [--no-build] [inbox] [unread] [page2] [count] [token] [plans]
#        (default: inbox unread page2 count token)
# env:   ROWS (10000000) USERS (10000) READ_PCT (70) DURATION (15 s per scenario)
#        HEAVY (1000000 unread rows of user "heavy"; 0 skips it)
#        CONNS (32) THREADS (2) POOL (history.pg_pool_size, 4) KEEP=1 keeps $WORK
#        PLAN_USER (u4242)
#
# Every process the script starts is stopped by pid on exit, failure or Ctrl-C.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-hist-bench}
ROWS=${ROWS:-10000000}
USERS=${USERS:-10000}
READ_PCT=${READ_PCT:-70}
HEAVY=${HEAVY:-1000000}
DURATION=${DURATION:-15}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
POOL=${POOL:-4}
PLAN_USER=${PLAN_USER:-u4242}
CHUNK=1000000
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

build=1
plans=0
scenarios=()
for a in "$@"; do
    case "$a" in
    --no-build) build=0 ;;
    inbox | unread | page2 | count | token) scenarios+=("$a") ;;
    plans) plans=1 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
[ ${#scenarios[@]} -eq 0 ] && [ $plans = 0 ] && scenarios=(inbox unread page2 count token)
# auto_explain is loaded only for a plans run, and logs nothing until the
# plans step turns it on.
EXPLAIN_OPTS=""
# (Only the library on the command line: a -c setting would override ALTER SYSTEM.)
[ $plans = 1 ] && EXPLAIN_OPTS="-c shared_preload_libraries=auto_explain"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }

WORK=$(mktemp -d /tmp/herald-hist-bench.XXXXXX)
chmod 755 "$WORK"
HIST_PID=""
REDIS_PID=""
PG_UP=0
echo "# work dir: $WORK"
log() { echo "# $(date +%H:%M:%S) $*" >&2; }

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
    set +e
    if [ -n "$HIST_PID" ]; then kill -TERM "$HIST_PID" 2>/dev/null; wait "$HIST_PID" 2>/dev/null; fi
    if [ -n "$REDIS_PID" ]; then kill -TERM "$REDIS_PID" 2>/dev/null; fi
    [ $PG_UP = 1 ] && as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "# kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ $build = 1 ]; then
    log "building (Release) in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DHERALD_TESTS=OFF >/dev/null
    cmake --build "$BUILD" -j2 --target herald-history herald-worker >/dev/null
fi

# -- PostgreSQL ---------------------------------------------------------------
PG_PORT=$(free_port)
mkdir -m 700 "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$WORK" "$WORK/pg"
as_pg "$PG_BIN/initdb" -D "$WORK/pg" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/postgres.log" -w -o "-p $PG_PORT -k $WORK \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=30min \
    -c maintenance_work_mem=512MB $EXPLAIN_OPTS" start >/dev/null
PG_UP=1
PSQL=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE herald"
PG_URL="host=127.0.0.1 port=$PG_PORT dbname=herald user=postgres"

# -- Redis (history publishes read events; GETs do not need it) ---------------
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log" --dir "$WORK"
for _ in $(seq 50); do [ -s "$WORK/redis.pid" ] && break; sleep 0.1; done
REDIS_PID=$(cat "$WORK/redis.pid")

export HERALD_POSTGRES_URL="$PG_URL" HERALD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export HERALD_WORKER_MIGRATIONS_DIR="$ROOT/migrations" HERALD_LOG_LEVEL=warn
# The bench's signing key (proto/auth.md); ?user_id= requests through the dev switch.
SECRET=history-bench-secret-0123456789abcdef
printf 'auth: { keys = ( { kid = "bench"; alg = "HS256"; secret = "%s"; } ); };\n' "$SECRET" >"$WORK/herald.conf"
export HERALD_CONFIG="$WORK/herald.conf" HERALD_HISTORY_DEV_USER_QUERY=true
"$BUILD/services/worker/herald-worker" --migrate

# -- data ---------------------------------------------------------------------
# Row g: user 'u<g mod USERS>', created 1 ms after row g-1 (so each user's rows
# interleave in time like a real inbox), id = UUIDv7 of that ms with g in the
# random bits (unique, time-ordered). Read or not by the row's rank k in its
# user's inbox: (k * 61) mod 100 < READ_PCT spreads each user's READ_PCT % of
# read rows evenly over the inbox.
log "loading $ROWS rows over $USERS users ($READ_PCT% read)"
t0=$(date +%s)
base_ms=$(( ($(date +%s) - 86400 * 30) * 1000 ))
for ((lo = 1; lo <= ROWS; lo += CHUNK)); do
    hi=$(( lo + CHUNK - 1 )); [ $hi -gt "$ROWS" ] && hi=$ROWS
    "${PSQL[@]}" -d herald -c "
        INSERT INTO notifications (id, user_id, type, message, data, created_at, delivered_at, read_at)
        SELECT (lpad(to_hex(ms), 12, '0') || '7' || lpad(to_hex(g % 4096), 3, '0') || '8'
                || lpad(to_hex(g), 15, '0'))::uuid,
               'u' || (g % $USERS), 'bench', 'notification number ' || g,
               ('{\"n\":' || g || '}')::jsonb, ts, ts,
               CASE WHEN ((g / $USERS) * 61) % 100 < $READ_PCT THEN ts + interval '1 minute' END
        FROM (SELECT g, $base_ms + g AS ms, to_timestamp(($base_ms + g) / 1000.0) AS ts
              FROM generate_series($lo, $hi) g) s"
    log "  $hi rows"
done
if [ "$HEAVY" -gt 0 ]; then
    # The heavy user's rows are older than everything above (ms before base_ms), all unread.
    log "loading $HEAVY unread rows for user heavy"
    "${PSQL[@]}" -d herald -c "
        INSERT INTO notifications (id, user_id, type, message, data, created_at, delivered_at)
        SELECT (lpad(to_hex(ms), 12, '0') || '7' || lpad(to_hex(g % 4096), 3, '0') || 'a'
                || lpad(to_hex(g), 15, '0'))::uuid,
               'heavy', 'bench', 'heavy number ' || g, NULL, ts, ts
        FROM (SELECT g, $base_ms - $HEAVY - 1000 + g AS ms,
                     to_timestamp(($base_ms - $HEAVY - 1000 + g) / 1000.0) AS ts
              FROM generate_series(1, $HEAVY) g) s"
fi
log "VACUUM ANALYZE, CHECKPOINT"
"${PSQL[@]}" -d herald -c "VACUUM ANALYZE notifications"
# Flush the load's dirty pages now, not as a checkpoint in the middle of a run.
"${PSQL[@]}" -d herald -c "CHECKPOINT"
LOAD_S=$(( $(date +%s) - t0 ))
SIZE=$("${PSQL[@]}" -d herald -c "SELECT pg_size_pretty(pg_total_relation_size('notifications'))")
log "loaded in ${LOAD_S}s, table+indexes $SIZE"

# -- history --------------------------------------------------------------------
HIST_PORT=$(free_port)
HERALD_HISTORY_PORT=$HIST_PORT HERALD_HISTORY_PG_POOL_SIZE=$POOL \
    "$BUILD/services/history/herald-history" >"$WORK/history.log" 2>&1 &
HIST_PID=$!
ready=0
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$HIST_PORT/readyz" >/dev/null 2>&1 && { ready=1; break; }
    kill -0 "$HIST_PID" 2>/dev/null || break
    sleep 0.1
done
if [ $ready != 1 ]; then
    echo "history_bench: FAILED: herald-history not ready on :$HIST_PORT after 10 s" >&2
    tail -20 "$WORK/history.log" >&2
    exit 1
fi

# A cursor into the middle of an inbox (after half of u1's rows, at most 100 in).
HALF=$(( ROWS / USERS / 2 )); [ $HALF -gt 100 ] && HALF=100; [ $HALF -lt 1 ] && HALF=1
CURSOR=$(curl -sf "http://127.0.0.1:$HIST_PORT/notifications?user_id=u1&limit=$HALF" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["next_cursor"] or "")')
if [ -z "$CURSOR" ] && [[ " ${scenarios[*]} " == *" page2 "* ]]; then
    echo "history_bench: FAILED: no cursor into u1's inbox for page2 (ROWS/USERS too small?)" >&2
    exit 1
fi

# -- wrk --------------------------------------------------------------------------
# A token per user u0..u<USERS-1>, valid for the whole run, as a Lua table.
python3 - "$SECRET" "$USERS" >"$WORK/tokens.lua" <<'PY'
import base64, hashlib, hmac, json, sys, time
secret, users, now = sys.argv[1].encode(), int(sys.argv[2]), int(time.time())
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "bench"}).encode())
print("return {")
for u in range(users):
    body = head + "." + b64(json.dumps({"sub": f"u{u}", "iat": now, "exp": now + 86400}).encode())
    print(f'[{u}]="{body}.{b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}",')
print("}")
PY
cat >"$WORK/random_user.lua" <<EOF
-- One random user per request; PATH_FMT has %d for the user number; with
-- TOKENS set, the request carries that user's token.
local users = $USERS
local fmt = os.getenv("PATH_FMT")
local tokens = os.getenv("TOKENS") == "1" and dofile("$WORK/tokens.lua")
local counter = 0
function setup(thread)
    counter = counter + 1
    thread:set("tid", counter)
end
function init(args)
    math.randomseed(os.time() * 100 + tid)
end
request = function()
    local u = math.random(0, users - 1)
    local h = tokens and {["Authorization"] = "Bearer " .. tokens[u]} or nil
    return wrk.format("GET", string.format(fmt, u), h)
end
done = function(summary, latency, requests)
    local s = summary.duration / 1e6
    -- req_s counts 2xx answers only; errors and non2xx make the script fail.
    local ok = summary.requests - summary.errors.status
    io.write(string.format("RESULT req_s=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d errors=%d non2xx=%d\n",
        ok / s, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
        latency:percentile(99) / 1000, latency.max / 1000, summary.requests,
        summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
        summary.errors.status))
end
EOF

# utime + stime of herald-history, in clock ticks (/proc/<pid>/stat fields 14, 15).
hist_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$HIST_PID/stat"; }
failed=0
echo
echo "rows=$ROWS users=$USERS read_pct=$READ_PCT pool=$POOL wrk: -t$THREADS -c$CONNS -d${DURATION}s load_s=$LOAD_S size=\"$SIZE\""
for sc in "${scenarios[@]+"${scenarios[@]}"}"; do
    case $sc in
    inbox) fmt="/notifications?user_id=u%d" ;;
    unread) fmt="/notifications?user_id=u%d&status=unread" ;;
    page2) fmt="/notifications?user_id=u%d&cursor=$CURSOR" ;;
    count) fmt="/notifications/unread-count?user_id=u%d" ;;
    token) fmt="/notifications" ;;
    esac
    tokens=""; [ "$sc" = token ] && tokens=1
    # 2 s warm-up, then the measured run.
    TOKENS=$tokens PATH_FMT=$fmt timeout 30 wrk -t"$THREADS" -c"$CONNS" -d2s -s "$WORK/random_user.lua" \
        "http://127.0.0.1:$HIST_PORT" >/dev/null
    c0=$(hist_cpu_ticks)
    out=$(TOKENS=$tokens PATH_FMT=$fmt timeout $((DURATION + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" \
        -s "$WORK/random_user.lua" "http://127.0.0.1:$HIST_PORT")
    c1=$(hist_cpu_ticks)
    res=$(echo "$out" | sed -n 's/^RESULT //p')
    # history's own CPU (user + system) per request: comparable even on a busy machine.
    n=$(echo "$res" | sed -n 's/.* requests=\([0-9]*\).*/\1/p')
    [ -n "$res" ] && [ "${n:-0}" -gt 0 ] &&
        res="$res cpu_us_per_req=$(( (c1 - c0) * 1000000 / $(getconf CLK_TCK) / n ))"
    errs=$(echo "$res" | sed -n 's/.* errors=\([0-9]*\).*/\1/p')
    bad=$(echo "$res" | sed -n 's/.* non2xx=\([0-9]*\).*/\1/p')
    if [ -z "$res" ] || [ "${errs:-1}" != 0 ] || [ "${bad:-1}" != 0 ]; then
        printf '%-7s FAILED (errors=%s non2xx=%s): %s\n' "$sc" "${errs:-?}" "${bad:-?}" "${res:-no wrk result}"
        failed=1
    else
        printf '%-7s %s\n' "$sc" "$res"
    fi
done
if [ "$HEAVY" -gt 0 ]; then
    # status and ms of one request; -X method, path
    one() { curl -s -o /dev/null -w '%{http_code} %{time_total}' -X "$1" "http://127.0.0.1:$HIST_PORT$2" |
        awk '{ printf "status=%s ms=%.1f", $1, $2 * 1000 }'; }
    one GET "/notifications/unread-count?user_id=heavy" >/dev/null
    one GET "/notifications?user_id=heavy" >/dev/null
    HID=$(curl -sf "http://127.0.0.1:$HIST_PORT/notifications?user_id=heavy&limit=1" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["items"][0]["id"])')
    echo "heavy   unread_rows=$HEAVY"
    echo "heavy   count     $(one GET "/notifications/unread-count?user_id=heavy")"
    echo "heavy   inbox     $(one GET "/notifications?user_id=heavy")"
    echo "heavy   mark      $(one POST "/notifications/$HID/read?user_id=heavy")"
    echo "heavy   read_all  $(one POST "/notifications/read-all?user_id=heavy")"
    echo "heavy   count     $(one GET "/notifications/unread-count?user_id=heavy") (after read-all)"
fi
if [ $plans = 1 ]; then
    H="http://127.0.0.1:$HIST_PORT"
    "${PSQL[@]}" -d herald -c "ALTER SYSTEM SET auto_explain.log_min_duration = 0" \
        -c "ALTER SYSTEM SET auto_explain.log_analyze = on" -c "ALTER SYSTEM SET auto_explain.log_buffers = on" \
        -c "ALTER SYSTEM SET auto_explain.log_timing = off" \
        -c "ALTER SYSTEM SET plan_cache_mode = force_generic_plan" -c "SELECT pg_reload_conf()" >/dev/null
    # A fresh history, so its pooled sessions start with these settings.
    kill -TERM "$HIST_PID"; wait "$HIST_PID" || true
    HERALD_HISTORY_PORT=$HIST_PORT HERALD_HISTORY_PG_POOL_SIZE=$POOL \
        "$BUILD/services/history/herald-history" >>"$WORK/history.log" 2>&1 &
    HIST_PID=$!
    for _ in $(seq 100); do curl -sf "$H/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf "$H/readyz" >/dev/null || { echo "history_bench: FAILED: history did not restart" >&2; exit 1; }
    NID=$(curl -sf "$H/notifications?user_id=$PLAN_USER&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
    PCUR=$(curl -sf "$H/notifications?user_id=$PLAN_USER&limit=$HALF" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"] or "")')
    # Rooms: 200,000 messages over 100 rooms; a cursor after the first 1,000 of r42.
    "${PSQL[@]}" -d herald -c "
        INSERT INTO room_messages (id, room, user_id, message, created_at)
        SELECT (lpad(to_hex(ms), 12, '0') || '7' || lpad(to_hex(g % 4096), 3, '0') || '8'
                || lpad(to_hex(g), 15, '0'))::uuid,
               'r' || (g % 100), 'u' || (g % $USERS), 'room message ' || g, to_timestamp(ms / 1000.0)
        FROM (SELECT g, $base_ms + g AS ms FROM generate_series(1, 200000) g) s" -c "ANALYZE room_messages"
    RCUR=""
    for _ in $(seq 10); do
        RCUR=$(curl -sf "$H/rooms/r42/messages?limit=100${RCUR:+&before=$RCUR}" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"] or "")')
    done
    [ -n "$RCUR" ] || { echo "history_bench: FAILED: plans: no room cursor" >&2; exit 1; }
    reqs=("GET /notifications?user_id=$PLAN_USER" "GET /notifications?user_id=$PLAN_USER&status=unread"
          "GET /notifications?user_id=$PLAN_USER&status=read" "GET /notifications?user_id=$PLAN_USER&cursor=$PCUR"
          "GET /notifications/$NID?user_id=$PLAN_USER" "GET /notifications/unread-count?user_id=$PLAN_USER"
          "POST /notifications/$NID/read?user_id=$PLAN_USER" "POST /notifications/$NID/unread?user_id=$PLAN_USER"
          "POST /notifications/read-all?user_id=$PLAN_USER" "GET /rooms/r42/messages?before=$RCUR")
    from=$(stat -c %s "$WORK/postgres.log")
    for r in "${reqs[@]}"; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X "${r%% *}" "$H${r#* }")
        [ "$code" = 200 ] || { echo "history_bench: FAILED: plans: $r answered $code" >&2; exit 1; }
    done
    "${PSQL[@]}" -d herald -c "ALTER SYSTEM RESET ALL" -c "SELECT pg_reload_conf()" >/dev/null
    # One plan per request, headed by it.
    tail -c +"$((from + 1))" "$WORK/postgres.log" |
        REQS=$(printf '%s\n' "${reqs[@]}") python3 -c '
import os, re, sys
runs, cur, took = [], None, None
def keep(block, took):
    if block and block[0] not in ("Query Text: SELECT 1", "Query Text: SELECT pg_reload_conf()"):
        block = block + [f"Execution (auto_explain duration): {took}"]
        runs.append(block)
for line in sys.stdin:
    if cur is not None and line.startswith("\t"):
        cur.append(line[1:].rstrip("\n"))
        continue
    keep(cur, took)
    m = re.search(r"LOG:  duration: ([0-9.]+ ms)  plan:", line)
    cur, took = ([], m.group(1)) if m else (None, None)
keep(cur, took)
reqs = os.environ["REQS"].split("\n")
for i, block in enumerate(runs):
    print(f"### {reqs[i]}" if len(runs) == len(reqs) else "###")
    print("\n".join(block))
    print()
'
fi
if grep -q "level=error" "$WORK/history.log"; then
    echo "history logged errors:" >&2
    grep "level=error" "$WORK/history.log" | head >&2
    exit 1
fi
if [ $failed = 1 ]; then
    echo "history_bench: FAILED: a scenario had errors or non-2xx answers" >&2
    exit 1
fi
