#!/usr/bin/env bash
# Ingest throughput (not in CTest): a private redis-server on a free port,
# herald-ingest (Release), then wrk POSTing single notifications
# (bench/post.lua). Prints POST/s, latency, the ingest process's CPU per
# request, heap allocations per POST (LD_PRELOAD counter) and system
# calls per POST (strace -c over a separate short run: epoll_ctl, reads, writes, ioctl).
#
# With PIN=1 (default) ingest runs on CPU 1 and wrk + redis-server on CPU 0,
# so post_per_sec_per_ingest_core is one core's worth of ingest.
#
#   bench/ingest_bench.sh [BUILD_DIR]        (default: build-bench, a Release build)
#   THREADS=1 CONNS=64 SECONDS_RUN=8 PIN=1 bench/ingest_bench.sh
#   INGEST=/path/to/herald-ingest NO_BUILD=1 bench/ingest_bench.sh   (another build, e.g. before a change)
#   PROCS=2 bench/ingest_bench.sh   (throughput run: 2 ingest processes on one port, ingest.reuseport)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build-bench}
THREADS=${THREADS:-1}
CONNS=${CONNS:-64}
SECONDS_RUN=${SECONDS_RUN:-8}
PIN=${PIN:-1}
PROCS=${PROCS:-1}

if [ "${NO_BUILD:-0}" != 1 ]; then
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DHERALD_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j2 --target herald-ingest >/dev/null
fi
INGEST=${INGEST:-$BUILD/services/ingest/herald-ingest}
ON_INGEST_CPU=(); ON_LOAD_CPU=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then ON_INGEST_CPU=(taskset -c 1); ON_LOAD_CPU=(taskset -c 0); fi
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TMP=$(mktemp -d /tmp/herald-ingest-bench-XXXXXX)
RPORT=$(free_port); IPORT=$(free_port)
PIDS=()
# QUOTA=0.4: ingest runs in a cgroup (v1 cpu controller) limited to 0.4 of a
# core, so it is saturated even when wrk and redis-server cannot load a whole
# core; POST/s divided by the quota is then a saturated per-core figure.
CG=""
if [ -n "${QUOTA:-}" ]; then
  CG=/sys/fs/cgroup/cpu/herald-ingest-bench-$$
  mkdir -p "$CG"
  echo 100000 >"$CG/cpu.cfs_period_us"
  awk -v q="$QUOTA" 'BEGIN {printf "%d\n", q * 100000}' >"$CG/cpu.cfs_quota_us"
fi
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  [ -f "$TMP/redis.pid" ] && kill "$(cat "$TMP/redis.pid")" 2>/dev/null
  sleep 0.3; rm -rf "$TMP"
  [ -n "$CG" ] && rmdir "$CG" 2>/dev/null
}
trap cleanup EXIT

cc -O2 -shared -fPIC -o "$TMP/alloc_count.so" "$SRC/bench/alloc_count.c"
"${ON_LOAD_CPU[@]}" redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$TMP/redis.pid" --logfile "$TMP/redis.log" --dir "$TMP"
rcli() { redis-cli -p "$RPORT" "$@"; }
until rcli PING >/dev/null 2>&1; do sleep 0.05; done
export HERALD_REDIS_URL=redis://127.0.0.1:$RPORT HERALD_INGEST_PORT=$IPORT HERALD_LOG_LEVEL=warn
# A real API key (bench/post.lua sends it), so each POST pays the key check as in production.
echo "auth: { ingest_keys = ( { name = \"bench\"; sha256 = \"$(printf %s herald-bench-key | sha256sum | cut -d' ' -f1)\"; } ); };" >"$TMP/herald.conf"
export HERALD_CONFIG=$TMP/herald.conf

start_ingest() { # $@: extra env
  env "$@" "${ON_INGEST_CPU[@]}" "$INGEST" >>"$TMP/ingest.log" 2>&1 &
  PIDS+=($!)
  [ -n "$CG" ] && echo "$!" >"$CG/tasks"
  until curl -sf "http://127.0.0.1:$IPORT/healthz" >/dev/null 2>&1; do sleep 0.05; done
}
stop_ingests() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cpu_ticks() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
# Voluntary context switches: how often ingest slept in epoll_wait for want of work.
vcsw() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$p/status"))); done; echo $t; }
sys_ticks() { local t=0; for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $15}' "/proc/$p/stat"))); done; echo $t; }

# 1. Throughput, in ROUNDS rounds (default 3): ingest (PROCS processes sharing
#    the port; the CPU time is their sum), then, when nginx is installed, the
#    box's own limit for one HTTP exchange: nginx (one process, pinned like
#    ingest) answering the same wrk load with a canned 202 of the same size
#    and no backend. Its CPU per request is the floor the kernel's loopback
#    TCP and a good HTTP server set on this machine; ingest over it, in the
#    same round, is what the Redis write and Herald cost. The machine is
#    shared: single rounds vary, so each round is printed and the medians.
ROUNDS=${ROUNDS:-3}
hz=$(getconf CLK_TCK)
netin() { rcli INFO stats | awk -F: '/^total_net_input_bytes/ {print $2+0}'; }
NGINX_ON=0
if [ "${NGINX:-1}" = 1 ] && command -v nginx >/dev/null; then
  NGINX_ON=1
  NPORT=$(free_port)
  mkdir -p "$TMP/nginx"
  cat >"$TMP/nginx/nginx.conf" <<NGX
daemon off;
master_process off;
worker_processes 1;
error_log $TMP/nginx/error.log warn;
pid $TMP/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$NPORT;
    location / {
      add_header X-Request-Id 0192c1a4-5b6d-7e8f-9a0b-1c2d3e4f5a6b;
      default_type application/json;
      return 202 '{"id":"0192c1a4-5b6d-7e8f-9a0b-1c2d3e4f5a6b","created_at":"2026-12-02T03:00:00.000Z"}\n';
    }
  }
}
NGX
fi

ingest_round() { # $1: round; appends "us_per_post per_core rps" to $TMP/ingest.rounds
  if [ "$PROCS" -gt 1 ]; then
    for _ in $(seq "$PROCS"); do start_ingest HERALD_INGEST_REUSEPORT=true; done
  else
    start_ingest
  fi
  wrk -t1 -c8 -d1s -s "$SRC/bench/post.lua" "http://127.0.0.1:$IPORT" >/dev/null # warm-up
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || { echo "an ingest process exited:" >&2; cat "$TMP/ingest.log" >&2; exit 1; }; done
  rcli DEL herald:stream:notifications >/dev/null
  local in0 in1 t0 t1 k0 k1 v0 v1
  in0=$(netin); t0=$(cpu_ticks); k0=$(sys_ticks); v0=$(vcsw)
  "${ON_LOAD_CPU[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${SECONDS_RUN}s" --latency -s "$SRC/bench/post.lua" \
    "http://127.0.0.1:$IPORT" >"$TMP/wrk.out"
  t1=$(cpu_ticks); k1=$(sys_ticks); v1=$(vcsw); in1=$(netin)
  stop_ingests
  local rps total non2xx stored
  rps=$(awk '/^Requests\/sec/ {print $2}' "$TMP/wrk.out")
  total=$(awk '/requests in/ {print $1}' "$TMP/wrk.out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$TMP/wrk.out"); non2xx=${non2xx:-0}
  stored=$(rcli XLEN herald:stream:notifications)
  echo "round $1 ingest: post_per_sec $rps requests $total non_2xx $non2xx stored_in_stream $stored" \
    "latency_p50 $(awk '$1 == "50%" {print $2}' "$TMP/wrk.out") p99 $(awk '$1 == "99%" {print $2}' "$TMP/wrk.out")"
  awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$total" -v s="$SECONDS_RUN" -v r="$rps" \
    -v b="$((in1 - in0))" -v k="$((k1 - k0))" -v v="$((v1 - v0))" -v round="$1" -v f="$TMP/ingest.rounds" \
    'BEGIN {us = t / hz * 1e6 / n;
            printf "round %d ingest: cpu_cores %.2f cpu_us_per_post %.1f (user %.1f, kernel %.1f) per_core %.0f sleeps_per_post %.3f redis_bytes_in_per_post %.0f\n",
                   round, t / hz / s, us, (t - k) / hz * 1e6 / n, k / hz * 1e6 / n, 1e6 / us, v / n, b / n;
            printf "%.2f %.0f %.0f\n", us, 1e6 / us, r >> f}'
}

nginx_round() { # $1: round; appends "us_per_request per_core rps" to $TMP/nginx.rounds
  "${ON_INGEST_CPU[@]}" nginx -p "$TMP/nginx/" -c "$TMP/nginx/nginx.conf" &
  local ngpid=$! n0 n1 nk0 nk1 ntotal nrps
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$NPORT/notifications")" = 202 ]; do sleep 0.05; done
  wrk -t1 -c8 -d1s -s "$SRC/bench/post.lua" "http://127.0.0.1:$NPORT" >/dev/null # warm-up
  n0=$(awk '{print $14 + $15}' "/proc/$ngpid/stat"); nk0=$(awk '{print $15}' "/proc/$ngpid/stat")
  "${ON_LOAD_CPU[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${SECONDS_RUN}s" -s "$SRC/bench/post.lua" \
    "http://127.0.0.1:$NPORT" >"$TMP/wrk-nginx.out"
  n1=$(awk '{print $14 + $15}' "/proc/$ngpid/stat"); nk1=$(awk '{print $15}' "/proc/$ngpid/stat")
  kill "$ngpid"; wait "$ngpid" 2>/dev/null || true
  ntotal=$(awk '/requests in/ {print $1}' "$TMP/wrk-nginx.out")
  nrps=$(awk '/^Requests\/sec/ {print $2}' "$TMP/wrk-nginx.out")
  awk -v t="$((n1 - n0))" -v k="$((nk1 - nk0))" -v hz="$hz" -v n="$ntotal" -v r="$nrps" -v round="$1" -v f="$TMP/nginx.rounds" \
    'BEGIN {us = t / hz * 1e6 / n;
            printf "round %d nginx canned 202: per_sec %.0f cpu_us_per_request %.1f (user %.1f, kernel %.1f) per_core %.0f\n",
                   round, r, us, (t - k) / hz * 1e6 / n, k / hz * 1e6 / n, 1e6 / us;
            printf "%.2f %.0f %.0f\n", us, 1e6 / us, r >> f}'
}

echo "command: wrk -t$THREADS -c$CONNS -d${SECONDS_RUN}s -s bench/post.lua (pinned: $PIN, ingest processes: $PROCS, rounds: $ROUNDS) ingest: $INGEST"
echo "load_before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  ingest_round "$r"
  [ "$NGINX_ON" = 1 ] && nginx_round "$r"
done
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
iu=$(awk '{print $1}' "$TMP/ingest.rounds" | median)
echo "ingest_cpu_us_per_post: $iu (median of $ROUNDS)"
echo "post_per_sec_per_ingest_core: $(awk '{print $2}' "$TMP/ingest.rounds" | median) (median; best $(awk '{print $2}' "$TMP/ingest.rounds" | sort -n | tail -1))"
echo "post_per_sec: $(awk '{print $3}' "$TMP/ingest.rounds" | median) (median; wrk and redis-server share the other core)"
if [ "$NGINX_ON" = 1 ]; then
  nu=$(awk '{print $1}' "$TMP/nginx.rounds" | median)
  echo "nginx_cpu_us_per_request: $nu (median)"
  echo "nginx_requests_per_sec_per_core: $(awk '{print $2}' "$TMP/nginx.rounds" | median) (median)"
  paste "$TMP/ingest.rounds" "$TMP/nginx.rounds" | awk '{print $4 / $1}' | median |
    awk '{printf "ingest_per_core_vs_nginx_canned_202: %.2f (median of the rounds'"'"' ratios)\n", $1}'
fi

# 2. allocations per POST: a fixed number of requests with the counter preloaded
N_ALLOC=${N_ALLOC:-20000}
start_ingest LD_PRELOAD="$TMP/alloc_count.so" HERALD_ALLOC_COUNT_FILE="$TMP/allocs.idle"
stop_ingests
idle=$(cat "$TMP/allocs.idle")
start_ingest LD_PRELOAD="$TMP/alloc_count.so" HERALD_ALLOC_COUNT_FILE="$TMP/allocs.run"
wrk -t1 -c8 -d2s -s "$SRC/bench/post.lua" "http://127.0.0.1:$IPORT" >"$TMP/wrk2.out"
n2=$(awk '/requests in/ {print $1}' "$TMP/wrk2.out")
stop_ingests
run=$(cat "$TMP/allocs.run")
awk -v a="$((run - idle))" -v n="$n2" 'BEGIN {printf "allocations_per_post: %.1f\n", a / n}'

# 3. epoll_ctl per POST (strace slows ingest; only the ratio matters)
if command -v strace >/dev/null; then
  start_ingest
  strace -f -c \
    -p "${PIDS[0]}" -o "$TMP/strace.out" &
  SPID=$!
  sleep 0.5
  wrk -t1 -c8 -d2s -s "$SRC/bench/post.lua" "http://127.0.0.1:$IPORT" >"$TMP/wrk3.out"
  kill -INT "$SPID"; wait "$SPID" 2>/dev/null || true
  n3=$(awk '/requests in/ {print $1}' "$TMP/wrk3.out")
  awk -v n="$n3" '$NF ~ /^[a-z_0-9]+$/ && $NF != "syscall" && $4 / n >= 0.005 {
      printf "syscalls_per_post_%s: %.2f\n", $NF, $4 / n }' "$TMP/strace.out"
  stop_ingests
fi

# 4. user-space instructions per POST (IR=1; valgrind's callgrind): does not
#    depend on what else the machine runs, unlike the CPU time above. One
#    connection, N_IR requests sent one after another.
if [ "${IR:-0}" = 1 ] && command -v valgrind >/dev/null; then
  N_IR=${N_IR:-2000}
  ir_run() { # $1: number of requests; prints the total Ir of the process
    env valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$INGEST" >>"$TMP/ingest.log" 2>&1 &
    PIDS+=($!)
    until curl -sf "http://127.0.0.1:$IPORT/healthz" >/dev/null 2>&1; do sleep 0.1; done
    python3 - "$IPORT" "$1" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for n in range(int(sys.argv[2])):
    body = ('{"user_id":"user%d","type":"comment","message":"bench message %d","data":{"n":%d}}'
            % (n % 10000, n, n)).encode()
    c.request("POST", "/notifications", body=body,
              headers={"Content-Type": "application/json", "Authorization": "Bearer herald-bench-key"})
    r = c.getresponse()
    r.read()
    if r.status != 202:
        sys.exit(f"status {r.status}")
PY
    stop_ingests
    awk '/^summary:/ {print $2}' "$TMP/cg.out"
  }
  ir0=$(ir_run 10)
  ir1=$(ir_run $((N_IR + 10)))
  awk -v a="$ir0" -v b="$ir1" -v n="$N_IR" 'BEGIN {printf "user_instructions_per_post: %.0f\n", (b - a) / n}'
fi
