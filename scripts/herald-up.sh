#!/usr/bin/env bash
# Runs the whole Herald stack on this machine: redis-server and a PostgreSQL
# cluster whose data lives in var/, migrations, two gateways, ingest, worker
# and history. Ctrl-C stops everything.
#
# Ports come from REDIS_PORT, PG_PORT, INGEST_PORT, HISTORY_PORT, GATEWAY1_PORT,
# GATEWAY2_PORT, DEMO_PORT and WORKER_PORT (the worker's /metrics; defaults below); HERALD_UP_VAR moves var/ (data
# and logs) elsewhere; HERALD_UP_DEMO_DIR serves an already built demo from that
# directory instead of building examples/client (tests/integration/test_make_up.py
# uses all of them to run a private copy).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$top/$build" ;; esac
var=${HERALD_UP_VAR:-$top/var}
mkdir -p "$var/log"

: "${REDIS_PORT:=16379}" "${PG_PORT:=15432}" "${INGEST_PORT:=8080}" "${HISTORY_PORT:=8082}"
: "${GATEWAY1_PORT:=8081}" "${GATEWAY2_PORT:=8091}" "${DEMO_PORT:=8090}" "${WORKER_PORT:=8084}"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo; echo "herald: stopping"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  as_postgres "$PG_BIN/pg_ctl" -D "$var/pg" -m fast -w stop >/dev/null 2>&1 || true
  if [ -f "$var/redis.pid" ]; then
    # Wait for it (it rewrites its AOF on the way out): "stopped" means stopped.
    rp=$(cat "$var/redis.pid")
    kill "$rp" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$rp" 2>/dev/null || break; sleep 0.1; done
  fi
  echo "herald: stopped"
}
trap "stop_all; exit 0" INT TERM
trap stop_all EXIT

echo "herald: redis-server on 127.0.0.1:$REDIS_PORT (data in var/)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --pidfile "$var/redis.pid" \
  --logfile "$var/log/redis.log" --dir "$var" --appendonly yes --appendfsync everysec --save ''
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

if [ ! -f "$var/pg/PG_VERSION" ]; then
  echo "herald: initdb var/pg"
  mkdir -p "$var/pg"; chmod 700 "$var/pg"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$var/pg"
  as_postgres "$PG_BIN/initdb" -D "$var/pg" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
fi
mkdir -p "$var/pgsock"; [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$var/pgsock" "$var/log"
echo "herald: postgresql on 127.0.0.1:$PG_PORT"
as_postgres "$PG_BIN/pg_ctl" -D "$var/pg" -l "$var/log/postgres.log" -w \
  -o "-p $PG_PORT -k $var/pgsock -c listen_addresses=127.0.0.1" start >/dev/null
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc \
  "SELECT 1 FROM pg_database WHERE datname='herald'" | grep -q 1 ||
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "CREATE DATABASE herald"

export HERALD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export HERALD_POSTGRES_URL="host=127.0.0.1 port=$PG_PORT dbname=herald user=postgres"
export HERALD_WORKER_MIGRATIONS_DIR="$top/migrations"
conf="$top/deploy/dev.conf"

"$build/services/worker/herald-worker" --config "$conf" --migrate

start() { # name binary [VAR=value ...]
  local name=$1 bin=$2; shift 2
  env "$@" "$build/services/$bin/herald-$bin" --config "$conf" >>"$var/log/$name.log" 2>&1 &
  pids+=($!)
}
start ingest ingest HERALD_INGEST_PORT="$INGEST_PORT"
start gateway1 gateway HERALD_GATEWAY_PORT="$GATEWAY1_PORT" HERALD_GATEWAY_NODE_ID=gw1
start gateway2 gateway HERALD_GATEWAY_PORT="$GATEWAY2_PORT" HERALD_GATEWAY_NODE_ID=gw2
start worker worker HERALD_WORKER_PORT="$WORKER_PORT"
start history history HERALD_HISTORY_PORT="$HISTORY_PORT"

# The React demo (examples/client), built once and served as static files.
demo=""
demo_dist="$top/examples/client/dist"
if [ -n "${HERALD_UP_DEMO_DIR:-}" ]; then
  demo_dist=$HERALD_UP_DEMO_DIR
elif command -v npm >/dev/null 2>&1; then
  client="$top/examples/client"
  if [ ! -f "$client/dist/index.html" ] || [ -n "$(find "$client/src" "$client/index.html" \
        "$client/package-lock.json" -newer "$client/dist/index.html" 2>/dev/null | head -1)" ]; then
    echo "herald: building the demo client (examples/client)"
    if (cd "$client" && npm ci --no-audit --no-fund --loglevel=error >"$var/log/demo-build.log" 2>&1 &&
        npm run build >>"$var/log/demo-build.log" 2>&1); then :; else
      echo "herald: demo client build failed (see var/log/demo-build.log); the stack runs without it"
    fi
  fi
fi
if [ -f "$demo_dist/index.html" ]; then
  python3 -m http.server "$DEMO_PORT" --bind 127.0.0.1 --directory "$demo_dist" \
    >>"$var/log/demo.log" 2>&1 &
  pids+=($!)
  demo="http://127.0.0.1:$DEMO_PORT/?user=alice&gateway=ws://127.0.0.1:$GATEWAY1_PORT&history=http://127.0.0.1:$HISTORY_PORT"
fi

for url in "http://127.0.0.1:$INGEST_PORT/healthz" "http://127.0.0.1:$HISTORY_PORT/healthz" \
           "http://127.0.0.1:$GATEWAY1_PORT/healthz" "http://127.0.0.1:$GATEWAY2_PORT/healthz"; do
  for _ in $(seq 100); do curl -sf "$url" >/dev/null && break; sleep 0.1; done
  curl -sf "$url" >/dev/null || { echo "herald: $url is not answering; see var/log/"; exit 1; }
done

cat <<MSG

Herald is up (logs in var/log/, Ctrl-C stops everything):
  ingest    http://127.0.0.1:$INGEST_PORT/notifications
  gateway   ws://127.0.0.1:$GATEWAY1_PORT/ws   ws://127.0.0.1:$GATEWAY2_PORT/ws
  history   http://127.0.0.1:$HISTORY_PORT/notifications?user_id=alice

${demo:+Demo in a browser: $demo
  (open a second tab with user=bob&gateway=ws://127.0.0.1:$GATEWAY2_PORT to chat across gateways)
}
Listen as alice (in another terminal):
  node --experimental-websocket -e 'const w=new WebSocket("ws://127.0.0.1:$GATEWAY1_PORT/ws?user_id=alice"); w.onmessage=e=>console.log(e.data)'
Send her a notification:
  curl -s -X POST http://127.0.0.1:$INGEST_PORT/notifications -H 'Content-Type: application/json' \\
       -d '{"user_id":"alice","message":"Hello from Herald","type":"greeting"}'
Read her inbox:
  curl -s 'http://127.0.0.1:$HISTORY_PORT/notifications?user_id=alice'
MSG

# Stay in the foreground; if a service dies, say so and stop the rest.
wait -n "${pids[@]}" || true
echo "herald: a service exited; see var/log/"
