#!/bin/bash
# Container HEALTHCHECK for every Herald service (one image runs all four):
# healthy when GET $HERALD_HEALTH_PATH (/readyz: dependencies reachable, not
# draining) on 127.0.0.1:$HERALD_HEALTH_PORT answers 200. Plain bash
# (/dev/tcp), so the runtime image needs no curl.
port=${HERALD_HEALTH_PORT:-8080}
path=${HERALD_HEALTH_PATH:-/readyz}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
IFS=' ' read -r -t 5 _ status _ <&3 || exit 1
[ "$status" = 200 ]
