#!/usr/bin/env bash
# Writes a runnable copy of deploy/nginx.conf for the local stack (or a test)
# into OUTDIR: nginx.conf with the entry port, and herald-upstreams.conf with
# loopback addresses. Then run:  nginx -p OUTDIR/ -c OUTDIR/nginx.conf -e stderr
#
#   deploy/nginx-local.sh OUTDIR
#     NGINX_PORT=8080  GATEWAYS="127.0.0.1:8081 127.0.0.1:8091 127.0.0.1:8101"
#     INGESTS="127.0.0.1:8083"  HISTORIES="127.0.0.1:8082"  DEMO_ROOT=examples/client/dist
#     SITE_ROOT=OUTDIR/site   (/docs/ is served from SITE_ROOT/docs/)
# These defaults are scripts/herald-up.sh's ports (make up).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
out=$1
: "${NGINX_PORT:=8080}" "${GATEWAYS:=127.0.0.1:8081 127.0.0.1:8091 127.0.0.1:8101}"
: "${INGESTS:=127.0.0.1:8083}" "${HISTORIES:=127.0.0.1:8082}"
: "${DEMO_ROOT:=$top/examples/client/dist}" "${SITE_ROOT:=$out/site}"
case "$DEMO_ROOT" in /*) ;; *) DEMO_ROOT="$top/$DEMO_ROOT" ;; esac
case "$SITE_ROOT" in /*) ;; *) SITE_ROOT="$(pwd)/$SITE_ROOT" ;; esac

mkdir -p "$out/tmp"
sed "s/^\(        listen \)8080;/\1$NGINX_PORT;/" "$top/deploy/nginx.conf" >"$out/nginx.conf"
grep -q "listen $NGINX_PORT;" "$out/nginx.conf" || { echo "$0: no listen line in nginx.conf" >&2; exit 1; }

servers() { for a in $1; do printf '    server %s max_fails=1 fail_timeout=2s;\n' "$a"; done; }
{
  echo "# Written by deploy/nginx-local.sh; do not edit."
  # zone: nginx's workers share one view of the upstreams (least_conn counts
  # every worker's sockets, failures seen by one are seen by all).
  echo "upstream herald_gateways {"; echo "    zone herald_gateways 64k;"; echo "    least_conn;"
  servers "$GATEWAYS"; echo "}"
  echo "upstream herald_ingest {"; echo "    zone herald_ingest 64k;"; servers "$INGESTS"
  echo "    keepalive 32;"; echo "}"
  echo "upstream herald_history {"; echo "    zone herald_history 64k;"; servers "$HISTORIES"
  echo "    keepalive 32;"; echo "}"
  echo "map \$host \$herald_demo_root {"; echo "    default \"$DEMO_ROOT\";"; echo "}"
  echo "map \$host \$herald_site_root {"; echo "    default \"$SITE_ROOT\";"; echo "}"
} >"$out/herald-upstreams.conf"
