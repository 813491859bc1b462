#!/usr/bin/env bash
# Installs what Herald needs to build and run (and with `test`, to run every
# test), and nothing twice. Idempotent: `make up` runs it bare, `make test`
# (and so .ci/run) runs `scripts/deps.sh test`.
set -euo pipefail

pkgs=(build-essential cmake pkg-config git python3 procps
      libwebsockets-dev libevent-dev libhiredis-dev libpq-dev libcjson-dev
      libconfig-dev libuv1-dev libjwt-dev libssl-dev redis-server postgresql curl
      nginx-light)   # make up's one entry port (deploy/nginx.conf); its own service is not used

if [ "${1:-}" = test ]; then
  pkgs+=(chromium)   # headless browser for the e2e test (tests/e2e), driven by playwright-core
  pkgs+=(prometheus docker-compose)   # promtool and a Prometheus server, docker-compose config (test_deploy_files, test_prometheus_scrape)
  pkgs+=(clang)      # libFuzzer targets in fuzz/ (make fuzz, and their short run in the unit tier)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Node.js and npm build the demo client (examples/client) and run the e2e
# test. Keep whatever node is already on PATH (the image has a newer one);
# install Debian's only when there is none.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  # Debian's postinst tries to start redis/postgres through invoke-rc.d; we
  # start our own servers, so a denied start is expected and harmless.
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
