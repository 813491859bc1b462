#!/usr/bin/env bash
# `make up`: the whole Herald stack on this machine, shaped like a deployment.
# nginx (deploy/nginx.conf) on ONE port, :8080, in front of three gateways,
# ingest and history; two workers; redis-server and a PostgreSQL cluster whose
# data lives in var/. Each service keeps its own port for debugging.
#
# A service that exits is restarted (as compose's `restart: unless-stopped`
# would: after 1 s, doubling up to 30 s while it keeps failing) with a line
# saying so; the rest keep running. Ctrl-C stops everything and waits until
# every process has gone. Every process the script starts inherits the lock
# on var/up.lock, so a second `make up` waits until all of an earlier one has
# stopped (redis-server rewriting its AOF, postgres checkpointing) instead of
# racing it for the ports, and stops what a killed one left behind.
#
# Ports: NGINX_PORT (8080), GATEWAY1_PORT GATEWAY2_PORT GATEWAY3_PORT (8081
# 8091 8101), HISTORY_PORT (8082), INGEST_PORT (8083), WORKER1_PORT
# WORKER2_PORT (8084 8094, /metrics and health), REDIS_PORT (16379), PG_PORT
# (15432). HERALD_UP_VAR moves var/ (data and logs); HERALD_UP_DEMO_DIR serves
# an already built demo from that directory instead of building
# examples/client; HERALD_UP_DOCS_SCRIPT replaces scripts/build-docs.sh (run
# as SCRIPT OUTDIR; /docs/ serves OUTDIR; no script: no docs).
# tests/integration/test_make_up.py uses all of them to run a private copy.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$top/$build" ;; esac
var=${HERALD_UP_VAR:-$top/var}
mkdir -p "$var/log"
var=$(cd "$var" && pwd)

: "${NGINX_PORT:=8080}" "${GATEWAY1_PORT:=8081}" "${GATEWAY2_PORT:=8091}" "${GATEWAY3_PORT:=8101}"
: "${HISTORY_PORT:=8082}" "${INGEST_PORT:=8083}" "${WORKER1_PORT:=8084}" "${WORKER2_PORT:=8094}"
: "${REDIS_PORT:=16379}" "${PG_PORT:=15432}"
: "${HERALD_UP_DOCS_SCRIPT:=$top/scripts/build-docs.sh}"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
conf="$top/deploy/dev.conf"
INGEST_KEY=dev-ingest-key-change-me # deploy/dev.conf's auth.ingest_keys "dev"

as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
alive() { [ -e "/proc/$1" ] && ! grep -q '^[^)]*) [ZX]' "/proc/$1/stat" 2>/dev/null; }
say() { echo "herald: $*"; }

# -- one make up per var/ ----------------------------------------------------
lock="$var/up.lock"
: >>"$lock"
lock_holders() { # pids holding var/up.lock open (our shell does not yet)
  { find /proc/[0-9]*/fd -lname "$lock" 2>/dev/null || true; } | cut -d/ -f3 | sort -un
}
if ! flock -n "$lock" true; then
  prev=$(cat "$var/up.pid" 2>/dev/null || true)
  if [ -n "$prev" ] && alive "$prev" && tr '\0' ' ' <"/proc/$prev/cmdline" | grep -q herald-up; then
    say "waiting for the make up still running or stopping from $var (pid $prev)"
    flock -w 60 "$lock" true ||
      { say "another make up (pid $prev) runs from $var: stop it first"; exit 1; }
  else
    # An earlier make up died without stopping (SIGKILL, a closed terminal):
    # what it started still holds the lock. Stop the top of each tree (a
    # postmaster, not its backends) and wait until all of it has gone.
    holders=$(lock_holders)
    tops=()
    for p in $holders; do
      pp=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f2 || true) # the parent
      grep -qx "${pp:-x}" <<<"$holders" || tops+=("$p")
    done
    say "stopping what an earlier make up left running: pids ${tops[*]:-none}"
    for p in "${tops[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    flock -w 60 "$lock" true ||
      { say "pids $(lock_holders | tr '\n' ' ')still hold $lock; stop them first"; exit 1; }
  fi
fi
exec 9>>"$lock"
flock -n 9 || { say "another make up took $lock just now"; exit 1; }
echo $$ >"$var/up.pid"

# -- supervision ---------------------------------------------------------------
declare -A name_of=()    # pid -> service name
declare -A pid_of=()     # service name -> pid
declare -A since=()      # service name -> $SECONDS at its start
declare -A delay_of=()   # service name -> the next restart delay, seconds
order=()                 # service names in start order
sleeper=""               # the pid of a restart delay's sleep

launch() { # name: starts (or restarts) svc_<name> with its output in var/log/<name>.log
  local name=$1
  "svc_$name" >>"$var/log/$name.log" 2>&1 </dev/null &
  name_of[$!]=$name
  pid_of[$name]=$!
  since[$name]=$SECONDS
}

stop_all() {
  trap - INT TERM EXIT
  echo; say "stopping"
  [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null || true
  # The services first (they drain in parallel), then nginx, then redis: each
  # waited for by pid, so "stopped" means stopped.
  local n p
  for n in "${order[@]}"; do
    case $n in redis | nginx) continue ;; esac
    p=${pid_of[$n]:-}
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  done
  for n in "${order[@]}"; do
    case $n in redis | nginx) continue ;; esac
    p=${pid_of[$n]:-}
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  for n in nginx redis; do
    p=${pid_of[$n]:-}
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ -f "$var/pg/postmaster.pid" ]; then
    as_postgres "$PG_BIN/pg_ctl" -D "$var/pg" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -f "$var/up.pid"
  say "stopped"
}
trap "stop_all; exit 0" INT TERM
trap stop_all EXIT

# -- the services ---------------------------------------------------------------
svc_redis() {
  exec redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize no --pidfile "$var/redis.pid" \
    --logfile "" --dir "$var" --appendonly yes --appendfsync everysec --save ''
}
svc_ingest() { HERALD_INGEST_PORT=$INGEST_PORT exec "$build/services/ingest/herald-ingest" --config "$conf"; }
svc_history() { HERALD_HISTORY_PORT=$HISTORY_PORT exec "$build/services/history/herald-history" --config "$conf"; }
gateway() { # N PORT
  HERALD_GATEWAY_PORT=$2 HERALD_GATEWAY_NODE_ID=gw$1 exec "$build/services/gateway/herald-gateway" --config "$conf"
}
svc_gateway1() { gateway 1 "$GATEWAY1_PORT"; }
svc_gateway2() { gateway 2 "$GATEWAY2_PORT"; }
svc_gateway3() { gateway 3 "$GATEWAY3_PORT"; }
worker() { # N PORT
  HERALD_WORKER_PORT=$2 HERALD_WORKER_CONSUMER=worker$1 exec "$build/services/worker/herald-worker" --config "$conf"
}
svc_worker1() { worker 1 "$WORKER1_PORT"; }
svc_worker2() { worker 2 "$WORKER2_PORT"; }
svc_nginx() { exec nginx -p "$var/nginx/" -c "$var/nginx/nginx.conf" -e stderr -g "daemon off;$nginx_user"; }

say "redis-server on 127.0.0.1:$REDIS_PORT (data in $var)"
order+=(redis)
launch redis
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || { say "redis-server is not answering; see $var/log/redis.log"; exit 1; }

if [ ! -f "$var/pg/PG_VERSION" ]; then
  say "initdb $var/pg"
  mkdir -p "$var/pg"; chmod 700 "$var/pg"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$var/pg"; fi
  as_postgres "$PG_BIN/initdb" -D "$var/pg" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
fi
mkdir -p "$var/pgsock"
if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$var/pgsock"; touch "$var/log/postgres.log"; chown postgres "$var/log/postgres.log"; fi
say "postgresql on 127.0.0.1:$PG_PORT"
as_postgres "$PG_BIN/pg_ctl" -D "$var/pg" -l "$var/log/postgres.log" -w \
  -o "-p $PG_PORT -k $var/pgsock -c listen_addresses=127.0.0.1" start >/dev/null
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc \
  "SELECT 1 FROM pg_database WHERE datname='herald'" | grep -q 1 ||
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "CREATE DATABASE herald"

export HERALD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export HERALD_POSTGRES_URL="host=127.0.0.1 port=$PG_PORT dbname=herald user=postgres"
export HERALD_WORKER_MIGRATIONS_DIR="$top/migrations"
"$build/services/worker/herald-worker" --config "$conf" --migrate >>"$var/log/migrate.log" 2>&1 ||
  { say "migrations failed; see $var/log/migrate.log"; exit 1; }

for n in ingest history gateway1 gateway2 gateway3 worker1 worker2; do
  order+=("$n")
  launch "$n"
done

# The React demo (examples/client), built once; nginx serves it at /.
demo_dist="$top/examples/client/dist"
if [ -n "${HERALD_UP_DEMO_DIR:-}" ]; then
  demo_dist=$HERALD_UP_DEMO_DIR
elif command -v npm >/dev/null 2>&1; then
  client="$top/examples/client"
  if [ ! -f "$client/dist/index.html" ] || [ -n "$(find "$client/src" "$client/index.html" \
        "$client/package-lock.json" -newer "$client/dist/index.html" 2>/dev/null | head -1)" ]; then
    say "building the demo client (examples/client)"
    if (cd "$client" && npm ci --no-audit --no-fund --loglevel=error >"$var/log/demo-build.log" 2>&1 &&
        npm run build >>"$var/log/demo-build.log" 2>&1); then :; else
      say "demo client build failed (see $var/log/demo-build.log); the stack runs without it"
    fi
  fi
fi

# The HTML API reference, if this checkout can build it.
mkdir -p "$var/site"
docs=""
if [ -f "$HERALD_UP_DOCS_SCRIPT" ]; then
  index="$var/site/docs/index.html"
  # Built again only when proto/ (or the script) changed since.
  if [ ! -f "$index" ] || [ -n "$(find "$top/proto" "$HERALD_UP_DOCS_SCRIPT" -newer "$index" \
        -type f 2>/dev/null | head -1)" ]; then
    say "building the API reference ($(basename "$HERALD_UP_DOCS_SCRIPT"))"
    rm -rf "$var/site/docs"
    bash "$HERALD_UP_DOCS_SCRIPT" "$var/site/docs" >"$var/log/docs-build.log" 2>&1 || rm -f "$index"
  fi
  if [ -f "$index" ]; then
    docs="http://127.0.0.1:$NGINX_PORT/docs/"
  else
    say "the API reference did not build (see $var/log/docs-build.log); /docs/ is empty"
  fi
fi

# nginx: deploy/nginx.conf with this stack's addresses. Its workers drop root
# for nobody, who must be able to read the demo and the docs.
GATEWAYS="127.0.0.1:$GATEWAY1_PORT 127.0.0.1:$GATEWAY2_PORT 127.0.0.1:$GATEWAY3_PORT" \
INGESTS="127.0.0.1:$INGEST_PORT" HISTORIES="127.0.0.1:$HISTORY_PORT" NGINX_PORT=$NGINX_PORT \
DEMO_ROOT="$demo_dist" SITE_ROOT="$var/site" "$top/deploy/nginx-local.sh" "$var/nginx" >/dev/null
nginx_user=""
if [ "$(id -u)" -eq 0 ]; then
  for d in "$demo_dist" "$var/site"; do
    if [ -d "$d" ] && ! runuser -u nobody -- test -r "$d/." -a -x "$d/." 2>/dev/null; then
      nginx_user=" user root;" # a checkout private to root: nobody could not read it
    fi
  done
fi
order+=(nginx)
launch nginx

# Ready: /readyz answers 200 (dependencies reachable), or the service has no
# /readyz yet and its /healthz answers. nginx refuses /readyz (not public).
ready() {
  local code
  [ "$1" != "$NGINX_PORT" ] || { curl -sf -o /dev/null "http://127.0.0.1:$1/healthz"; return; }
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz" || true)
  [ "$code" = 200 ] || { [ "$code" = 404 ] && curl -sf -o /dev/null "http://127.0.0.1:$1/healthz"; }
}
for n in ingest:$INGEST_PORT history:$HISTORY_PORT gateway1:$GATEWAY1_PORT gateway2:$GATEWAY2_PORT \
         gateway3:$GATEWAY3_PORT worker1:$WORKER1_PORT worker2:$WORKER2_PORT nginx:$NGINX_PORT; do
  for _ in $(seq 150); do ready "${n#*:}" && break; sleep 0.1; done
  ready "${n#*:}" || { say "${n%%:*} (127.0.0.1:${n#*:}) is not ready; see $var/log/${n%%:*}.log"; exit 1; }
done

token=$("$build/tools/token/herald-token" alice --rooms 'lobby,team:*' --ttl 1h --config "$conf" \
  2>"$var/log/token.log") || { say "herald-token failed: $(cat "$var/log/token.log")"; exit 1; }
url="http://127.0.0.1:$NGINX_PORT"
demo=""
[ -f "$demo_dist/index.html" ] && demo="$url/?user=alice&gateway=ws://127.0.0.1:$NGINX_PORT&history=$url"

cat <<MSG

Herald is up at $url/   (logs in $var/log/, Ctrl-C stops everything)
${demo:+
Demo in a browser: $demo
  (a second tab with user=bob chats with alice; both go through nginx to any of the three gateways)
}${docs:+
API reference: $docs
}
Development credentials (deploy/dev.conf; never in production):
  ingest key     $INGEST_KEY
  alice's token  $token
                 (1 h, rooms lobby and team:*; mint more: $build/tools/token/herald-token bob --rooms lobby --ttl 1h --config $conf)

Listen as alice (in another terminal):
  node --experimental-websocket -e 'const w=new WebSocket("ws://127.0.0.1:$NGINX_PORT/ws?token=$token"); w.onmessage=e=>console.log(e.data)'
Send her a notification:
  curl -s -X POST $url/notifications -H 'Authorization: Bearer $INGEST_KEY' -H 'Content-Type: application/json' \\
       -d '{"user_id":"alice","message":"Hello from Herald","type":"greeting"}'
Read her inbox:
  curl -s '$url/notifications' -H 'Authorization: Bearer $token'

Direct ports, for debugging (each also answers /healthz, /readyz and /metrics):
  ingest   http://127.0.0.1:$INGEST_PORT       history  http://127.0.0.1:$HISTORY_PORT
  gateways ws://127.0.0.1:$GATEWAY1_PORT/ws  ws://127.0.0.1:$GATEWAY2_PORT/ws  ws://127.0.0.1:$GATEWAY3_PORT/ws
  workers  http://127.0.0.1:$WORKER1_PORT/metrics  http://127.0.0.1:$WORKER2_PORT/metrics
  redis    127.0.0.1:$REDIS_PORT   postgresql 127.0.0.1:$PG_PORT (user postgres, database herald)
MSG

# Stay in the foreground and restart whatever exits. Polled: bash's `wait -n`
# misses a child that ended while the script was busy elsewhere, `wait PID`
# still returns its status.
declare -A due=() # service name -> $SECONDS when it restarts
while :; do
  sleep 0.5 9>&- &
  sleeper=$!
  wait "$sleeper" || true
  sleeper=""
  for gone in "${!name_of[@]}"; do
    kill -0 "$gone" 2>/dev/null && continue
    rc=0
    wait "$gone" 2>/dev/null || rc=$?
    name=${name_of[$gone]}
    unset "name_of[$gone]"
    pid_of[$name]="" # never signal a pid the system may hand out again
    ran=$((SECONDS - since[$name]))
    delay=${delay_of[$name]:-1}
    ((ran < 30)) || delay=1
    if ((rc > 128)); then how="was killed by signal $((rc - 128))"; else how="exited with code $rc"; fi
    say "$name (pid $gone) $how after ${ran}s; restarting it in ${delay}s (see $var/log/$name.log)"
    delay_of[$name]=$((delay * 2 > 30 ? 30 : delay * 2))
    due[$name]=$((SECONDS + delay))
  done
  for name in "${!due[@]}"; do
    ((SECONDS >= due[$name])) || continue
    unset "due[$name]"
    launch "$name"
    say "$name restarted (pid ${pid_of[$name]})"
  done
done
