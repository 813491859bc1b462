#!/usr/bin/env bash
# Builds Herald's HTML API reference into OUTDIR (issue 13):
#   OUTDIR/index.html     links to both
#   OUTDIR/rest.html      proto/openapi.yaml (ingest, history), Redocly build-docs
#   OUTDIR/ws.html        proto/asyncapi.yaml (WebSocket frames, Redis channels
#                         and streams), Redocly build-docs (it renders AsyncAPI 3)
#   OUTDIR/openapi.yaml, OUTDIR/asyncapi.yaml   the sources, for client generators
# Each page is one self-contained file (Redoc inlined, no CDN). `make up`
# serves OUTDIR at /docs/. Needs node and npm; installs tests/contract's
# locked packages on first use.
set -euo pipefail
out=${1:?usage: scripts/build-docs.sh OUTDIR}
root=$(cd "$(dirname "$0")/.." && pwd)
sh "$root/tests/contract/npm-ci.sh"
redocly=$root/tests/contract/node_modules/.bin/redocly
mkdir -p "$out"
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_COLOR=1
build() { # SPEC PAGE TITLE
  "$redocly" build-docs "$root/proto/$1" --config "$root/redocly.yaml" --inlineBundle \
    --title "$3" -o "$out/$2" >"$out/.build-$2.log" 2>&1 ||
    { cat "$out/.build-$2.log" >&2; exit 1; }
  rm -f "$out/.build-$2.log"
}
build openapi.yaml rest.html "Herald REST API"
build asyncapi.yaml ws.html "Herald WebSocket and Redis protocol"
cp "$root/proto/openapi.yaml" "$root/proto/asyncapi.yaml" "$out/"
cat >"$out/index.html" <<'HTML'
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Herald API reference</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44em;margin:3em auto;padding:0 1em}</style></head>
<body><h1>Herald API reference</h1>
<ul>
<li><a href="rest.html">REST API</a>: ingest (<code>POST /notifications</code>, revocation) and history
(inbox, read marks, room history), from <a href="openapi.yaml">openapi.yaml</a> (OpenAPI 3.0).</li>
<li><a href="ws.html">WebSocket and Redis protocol</a>: every frame of <code>/ws</code>, error and close
codes, the Pub/Sub channels and streams, from <a href="asyncapi.yaml">asyncapi.yaml</a> (AsyncAPI 3.0).</li>
</ul></body></html>
HTML
echo "docs: $out/index.html"
