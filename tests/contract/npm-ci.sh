#!/bin/sh
# Installs tests/contract's npm packages (package-lock.json, exact versions)
# unless node_modules already holds them: CI's first run installs (about a
# minute), later runs and the other contract tests reuse them.
set -eu
cd "$(dirname "$0")"
want=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.herald-lock-sha256
exec 9>"${TMPDIR:-/tmp}/herald-contract-npm.lock"
flock 9
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm-ci.sh: npm is missing (scripts/deps.sh installs it)" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"
