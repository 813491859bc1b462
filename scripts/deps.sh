#!/usr/bin/env bash
# Installs what Herald needs to build, run and test, and nothing twice.
# Idempotent: used by both `make up` and `make test` (and so by .ci/run).
set -euo pipefail

pkgs=(build-essential cmake pkg-config git python3 procps
      libwebsockets-dev libevent-dev libhiredis-dev libpq-dev libcjson-dev
      libconfig-dev libuv1-dev redis-server postgresql curl)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

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
