#!/usr/bin/env bash
# Gateway benchmark: builds the binaries (RelWithDebInfo, build-bench/), starts a
# private redis-server, GATEWAYS herald-gateway processes sharing ONE port with
# SO_REUSEPORT, and herald-ingest, then runs the scenarios through herald-load:
#
#   idle    idle WebSocket connections (IDLE_SIZES, default 20000 and 100000):
#           gateway RSS per socket
#   fanout  a FANOUT_MEMBERS-member room (default 10000), FANOUT_MESSAGES
#           publishes at FANOUT_RATE/s: latency to each member and to the last
#           one, frames/s delivered (skipped with a message while the gateway
#           answers join with error unknown_type)
#   notify  POST /notifications at NOTIFY_RATE/s (default 10000) to users with
#           a socket open: POST → socket latency
#
# usage: bench/gateway_bench.sh [--no-build] [idle] [fanout] [notify]   (default: all)
#
# Everything is loopback, every run is bounded by `timeout`, and every process
# the script starts is stopped by pid on exit, failure or Ctrl-C. Logs and the
# raw key=value outputs stay in $WORK (printed at the start; removed on
# success unless KEEP=1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-bench}
GATEWAYS=${GATEWAYS:-8}                  # gateway processes on the one port
IDLE_SIZES=${IDLE_SIZES:-"20000 100000"}
CONN_RATE=${CONN_RATE:-5000}             # new connections per second
PER_PROC=${PER_PROC:-17000}              # client sockets per herald-load process (< 20,000 files)
FANOUT_MEMBERS=${FANOUT_MEMBERS:-10000}
FANOUT_USERS=${FANOUT_USERS:-100}       # distinct users among the members (see README: presence)
FANOUT_MESSAGES=${FANOUT_MESSAGES:-200}
FANOUT_RATE=${FANOUT_RATE:-10}           # publishes per second
FANOUT_PROCS=${FANOUT_PROCS:-2}          # herald-load processes receiving the fan-out
NOTIFY_CONNS=${NOTIFY_CONNS:-10000}
NOTIFY_RATE=${NOTIFY_RATE:-10000}
NOTIFY_COUNT=${NOTIFY_COUNT:-50000}
RUN_LIMIT=${RUN_LIMIT:-300}              # seconds, per herald-load run
# The publisher is one socket: a gateway busy fanning out reads its frames in
# bursts, which the default per-socket limit (gateway.publish_rate 20/s, bursts
# of 40) and command limit (gateway.command_rate 50/s, bursts of 100) would
# refuse. The fan-out is measured, not the limiters.
PUBLISH_RATE=${PUBLISH_RATE:-100000}

build=1
scenarios=()
for a in "$@"; do
    case "$a" in
    --no-build) build=0 ;;
    idle | fanout | notify) scenarios+=("$a") ;;
    -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done
[ ${#scenarios[@]} -eq 0 ] && scenarios=(idle fanout notify)

WORK=$(mktemp -d /tmp/herald-bench.XXXXXX)
PIDS=()          # every process we started and have not stopped yet
GW_PIDS=()
REDIS_PID=""
FAILED=0
echo "# work dir: $WORK"

log() { echo "# $(date +%H:%M:%S) $*" >&2; }

stop_pids() { # pid...: SIGTERM, up to 10 s, then SIGKILL
    local p
    for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 100); do
        local alive=0
        for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

forget() { # pid...: drop from PIDS
    local keep=() p q drop
    for p in "${PIDS[@]}"; do
        drop=0
        for q in "$@"; do [ "$p" = "$q" ] && drop=1; done
        [ $drop -eq 0 ] && keep+=("$p")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ ${#PIDS[@]} -gt 0 ] && stop_pids "${PIDS[@]}"
    if [ -n "$REDIS_PID" ]; then stop_pids "$REDIS_PID"; fi
    if [ $rc -eq 0 ] && [ $FAILED -eq 0 ] && [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$WORK"
    else
        echo "# logs kept in $WORK" >&2
    fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # port path seconds
    local deadline=$((SECONDS + $3))
    until curl -fs -o /dev/null "http://127.0.0.1:$1$2"; do
        [ $SECONDS -ge $deadline ] && { log "127.0.0.1:$1$2 not ready after $3 s"; return 1; }
        sleep 0.1
    done
}

# ---- build -----------------------------------------------------------------
if [ $build -eq 1 ]; then
    log "building into $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHERALD_TESTS=OFF >"$WORK/cmake.log"
    cmake --build "$BUILD" -j2 --target herald-gateway herald-ingest herald-load >>"$WORK/cmake.log" 2>&1 ||
        { tail -30 "$WORK/cmake.log"; exit 1; }
fi
GW_BIN=$BUILD/services/gateway/herald-gateway
ING_BIN=$BUILD/services/ingest/herald-ingest
LOAD_BIN=$BUILD/bench/herald-load
for b in "$GW_BIN" "$ING_BIN" "$LOAD_BIN"; do [ -x "$b" ] || { echo "missing $b" >&2; exit 1; }; done

# ---- servers ---------------------------------------------------------------
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log" --dir "$WORK" --maxclients 1000
for _ in $(seq 50); do [ -s "$WORK/redis.pid" ] && break; sleep 0.1; done
REDIS_PID=$(cat "$WORK/redis.pid")
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
export HERALD_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export HERALD_LOG_LEVEL=info # no per-connection lines; shows listening/signal/draining
log "redis pid $REDIS_PID port $REDIS_PORT"

GW_PORT=$(free_port)
GW_PORTS=()      # the ports herald-load connects to: GW_PORT, or one per gateway
SHARED_PORT=${SHARED_PORT:-1} # 0: one port per gateway from the start
listeners_on() { # port: how many distinct processes listen on it
    ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | sort -u | wc -l
}
start_gateways() { # a fresh set, so each scenario measures from a clean baseline
    local i port
    GW_PIDS=()
    GW_PORTS=()
    for i in $(seq "$GATEWAYS"); do
        if [ "$SHARED_PORT" = 1 ]; then port=$GW_PORT; else port=$(free_port); GW_PORTS+=("$port"); fi
        HERALD_GATEWAY_PORT=$port HERALD_GATEWAY_REUSEPORT=true \
            HERALD_GATEWAY_DEV_USER_QUERY=true HERALD_GATEWAY_NODE_ID="bench-gw$i" \
            HERALD_GATEWAY_QUEUE_MAX_FRAMES=65536 HERALD_GATEWAY_QUEUE_MAX_BYTES=67108864 \
            HERALD_GATEWAY_PUBLISH_RATE=$PUBLISH_RATE HERALD_GATEWAY_COMMAND_RATE=$PUBLISH_RATE \
            "$GW_BIN" >>"$WORK/gateway$i.log" 2>&1 &
        GW_PIDS+=($!)
        PIDS+=($!)
        [ "$SHARED_PORT" = 1 ] && [ "$i" = 1 ] && wait_http "$GW_PORT" /healthz 15
    done
    [ "$SHARED_PORT" = 1 ] && GW_PORTS=("$GW_PORT")
    for port in "${GW_PORTS[@]}"; do wait_http "$port" /healthz 15; done
    sleep 0.5 # every gateway subscribed to Redis, not only the ones that answered
    for i in "${GW_PIDS[@]}"; do
        kill -0 "$i" 2>/dev/null || { log "gateway $i exited"; cat "$WORK"/gateway*.log >&2; exit 1; }
    done
    if [ "$SHARED_PORT" = 1 ]; then
        local n
        n=$(listeners_on "$GW_PORT")
        if [ "$n" -lt "$GATEWAYS" ]; then
            # A gateway whose bind failed keeps running without a listener, so
            # count the listeners instead of trusting that the processes are up.
            log "WARNING: SO_REUSEPORT not effective: $n of $GATEWAYS gateways listen on :$GW_PORT" \
                "(the others logged 'ERROR on binding ... (-1 98)'); falling back to one port per gateway"
            stop_gateways
            SHARED_PORT=0
            start_gateways
            return
        fi
    fi
    log "$GATEWAYS gateways on port(s) ${GW_PORTS[*]}: pids ${GW_PIDS[*]}"
}
stop_gateways() {
    stop_pids "${GW_PIDS[@]}"
    forget "${GW_PIDS[@]}"
    GW_PIDS=()
}

ING_PORT=$(free_port)
HERALD_INGEST_PORT=$ING_PORT HERALD_INGEST_ALLOW_ANONYMOUS=true "$ING_BIN" >>"$WORK/ingest.log" 2>&1 &
PIDS+=($!)
wait_http "$ING_PORT" /healthz 15
log "ingest port $ING_PORT"

# run_load name args...: herald-load under timeout, output in $WORK/name.out; sets LOAD_RC
run_load() {
    local name=$1
    shift
    local conns=0 a prev=""
    for a in "$@"; do [ "$prev" = --conns ] && conns=$a; prev=$a; done
    local procs=$(((conns + PER_PROC - 1) / PER_PROC))
    [ $procs -lt 1 ] && procs=1
    [ -n "${LOAD_PROCS:-}" ] && procs=$LOAD_PROCS
    local gwp
    gwp=$(IFS=,; echo "${GW_PIDS[*]}")
    local ports
    ports=$(IFS=,; echo "${GW_PORTS[*]}")
    echo "\$ herald-load --ports $ports --procs $procs --src-from 2 --src-to 250 --rate $CONN_RATE --gateway-pids $gwp $*" \
        >"$WORK/$name.cmd"
    log "$name: $(cat "$WORK/$name.cmd")"
    timeout --kill-after=10 "$RUN_LIMIT" "$LOAD_BIN" --ports "$ports" --procs "$procs" \
        --src-from 2 --src-to 250 --rate "$CONN_RATE" --gateway-pids "$gwp" "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    local lp=$!
    PIDS+=($lp)
    LOAD_RC=0
    wait $lp || LOAD_RC=$?
    forget $lp
    cat "$WORK/$name.err" >&2
    if [ $LOAD_RC -ne 0 ] && [ $LOAD_RC -ne 3 ]; then
        log "$name: herald-load exited $LOAD_RC"
        FAILED=1
    fi
}

val() { grep -m1 "^$2=" "$WORK/$1.out" | cut -d= -f2- || true; }

SUMMARY=()
summary() { SUMMARY+=("$*"); echo "$*"; }

# ---- scenarios ---------------------------------------------------------------
for sc in "${scenarios[@]}"; do
    case "$sc" in
    idle)
        for n in $IDLE_SIZES; do
            start_gateways
            run_load "idle_$n" --conns "$n" --hold 5 --handshake-timeout 30 --inflight 500
            echo "## idle $n: $(cat "$WORK/idle_$n.cmd")"
            cat "$WORK/idle_$n.out"
            summary "idle conns=$n ok=$(val idle_$n connections_ok) failed=$(val idle_$n connections_failed)" \
                "gateways=$GATEWAYS gateway_rss_kib=$(val idle_$n gateway_rss_kib_before)->$(val idle_$n gateway_rss_kib_after)" \
                "rss_per_conn_bytes=$(val idle_$n rss_per_conn_bytes) connect_s=$(val idle_$n connect_seconds)" \
                "client_rss_kib=$(val idle_$n load_rss_kib)"
            stop_gateways
        done
        ;;
    fanout)
        start_gateways
        LOAD_PROCS=$FANOUT_PROCS run_load fanout --conns "$FANOUT_MEMBERS" --users "$FANOUT_USERS" --room bench-room \
            --publish "$FANOUT_MESSAGES" --pub-rate "$FANOUT_RATE" --hold 3 --drain 30
        echo "## fanout: $(cat "$WORK/fanout.cmd")"
        cat "$WORK/fanout.out"
        if [ $LOAD_RC -eq 3 ]; then
            summary "fanout SKIPPED: the gateway answers join with error unknown_type (rooms not in this build yet)"
        else
            summary "fanout members=$(val fanout room_members) messages=$(val fanout publish_sent)" \
                "delivered_to_all=$(val fanout messages_delivered_to_all) frames_per_sec=$(val fanout frames_per_sec)" \
                "latency_us_p50=$(val fanout latency_us_p50) p99=$(val fanout latency_us_p99)" \
                "all_delivered_us_p50=$(val fanout all_delivered_us_p50) p99=$(val fanout all_delivered_us_p99)"
        fi
        stop_gateways
        ;;
    notify)
        start_gateways
        # The box's own limit for one hop, in the same run: a loopback round
        # trip to Redis (one connection, one PING at a time). POST -> socket
        # crosses four one-way hops (client -> ingest -> Redis -> gateway ->
        # client), so two round trips are its floor here.
        rtt=$(redis-benchmark -p "$REDIS_PORT" -c 1 -n 20000 -t ping_inline 2>/dev/null |
            awk '/latency summary/ {getline; getline; print $3 * 1000, $5 * 1000; exit}')
        rtt_p50=${rtt%% *}; rtt_p99=${rtt##* }
        run_load notify --conns "$NOTIFY_CONNS" --hold 1 --drain 15 \
            --notify-url "http://127.0.0.1:$ING_PORT/notifications" --notify-rate "$NOTIFY_RATE" \
            --notify-count "$NOTIFY_COUNT" --notify-conns 32
        echo "## notify: $(cat "$WORK/notify.cmd")"
        cat "$WORK/notify.out"
        summary "notify sockets=$NOTIFY_CONNS target_rate=$NOTIFY_RATE achieved=$(val notify notify_rate_achieved)" \
            "accepted=$(val notify notify_accepted)/$(val notify notify_sent) frames=$(val notify notify_frames_received)" \
            "post_rtt_us_p50=$(val notify notify_post_rtt_us_p50) p99=$(val notify notify_post_rtt_us_p99)" \
            "latency_us_p50=$(val notify notify_latency_us_p50) p99=$(val notify notify_latency_us_p99) max=$(val notify notify_latency_us_max)"
        summary "notify box_loopback_rtt_us_p50=$rtt_p50 p99=$rtt_p99" \
            "latency_p50_vs_two_rtt=$(awk -v l="$(val notify notify_latency_us_p50)" -v r="$rtt_p50" 'BEGIN {if (r > 0) printf "%.2f", l / (2 * r)}')"
        stop_gateways
        ;;
    esac
done

echo
echo "# ==== summary ===="
for l in "${SUMMARY[@]}"; do echo "$l"; done
exit $FAILED
