#!/usr/bin/env bash
# Builds the libFuzzer targets with Debian's clang and runs each one.
#   fuzz/run.sh [--smoke] [OUT_DIR]
# FUZZ_SECONDS per target (default 60; --smoke: 3); FUZZ_TARGETS="gateway proto"
# runs only those. OUT_DIR (default
# build-fuzz) holds the binaries, the working corpora (seeded from
# fuzz/corpus/ and proto/testdata/, never written back to the repo) and the
# logs. Prints one line per target: seconds, executions, exec/s, findings.
# Exit 0, 1 if a target found a crash/leak, 77 if clang cannot build fuzzers.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
smoke=0
if [ "${1:-}" = --smoke ]; then smoke=1; shift; fi
out=${1:-$top/build-fuzz}
secs=${FUZZ_SECONDS:-$([ $smoke = 1 ] && echo 3 || echo 60)}
cc=${FUZZ_CC:-clang}

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "fuzz: skipped: $cc not found (scripts/deps.sh test installs clang)"
  exit 77
fi
mkdir -p "$out"
probe="$out/probe.c"
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n){(void)d;(void)n;return 0;}\n' >"$probe"
if ! "$cc" -fsanitize=fuzzer "$probe" -o "$out/probe" 2>"$out/probe.log"; then
  echo "fuzz: skipped: $cc cannot link -fsanitize=fuzzer (libclang-rt-dev missing?): $(head -1 "$out/probe.log")"
  exit 77
fi

common=(common/src/hr_alloc.c common/src/hr_log.c common/src/hr_config.c common/src/hr_json.c
        common/src/hr_uuid.c common/src/hr_time.c common/src/hr_token.c common/src/hr_apikey.c
        common/src/hr_dict.c common/src/hr_http_parse.c proto/hr_proto.c proto/hr_proto_body.c)
flags=(-std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -I"$top/common/include" -I"$top/proto"
       -I"$top/services/gateway" -I"$top/services/history")
libs=$(pkg-config --libs libjwt libcrypto libcjson libconfig libevent)

# name : seed directories (relative to the repo) : service sources it links.
# fuzz_httpd includes common/src/hr_httpd.c and hr_httpd_req.c itself (it drives static functions) and
# links hr_http.c (reasons, error bodies).
targets=("token:fuzz/corpus/token:"
         "proto:fuzz/corpus/proto proto/testdata:"
         "config:fuzz/corpus/config:"
         "gateway:fuzz/corpus/gateway:services/gateway/gw_frame.c services/gateway/gw_hub.c services/gateway/gw_msg.c"
         "history:fuzz/corpus/history:services/history/hist_params.c"
         "httpd:fuzz/corpus/httpd:common/src/hr_http.c")
if [ -n "${FUZZ_TARGETS:-}" ]; then
  chosen=()
  for t in "${targets[@]}"; do
    case " $FUZZ_TARGETS " in *" ${t%%:*} "*) chosen+=("$t") ;; esac
  done
  targets=("${chosen[@]}")
fi

# The modules once, instrumented for coverage; each target links them.
mkdir -p "$out/obj"
compile() { # src -> prints the object
  local obj
  obj="$out/obj/$(basename "$1" .c).o"
  (cd "$top" && "$cc" "${flags[@]/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,}" -c "$1" -o "$obj")
  echo "$obj"
}
objs=()
for src in "${common[@]}"; do
  objs+=("$(compile "$src")")
done

status=0
for t in "${targets[@]}"; do
  name=${t%%:*}
  rest=${t#*:}
  seeds=${rest%%:*}
  extra=()
  for src in ${rest#*:}; do
    extra+=("$(compile "$src")")
  done
  bin="$out/fuzz_$name"
  (cd "$top" && "$cc" "${flags[@]}" "fuzz/fuzz_$name.c" "${objs[@]}" "${extra[@]}" $libs -lm -o "$bin")
  # Inputs that once crashed (fuzz/regressions/<target>/) run first, every time.
  if [ -d "$top/fuzz/regressions/$name" ]; then
    if ! ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions="$top/fuzz/lsan.supp" \
         "$bin" "$top/fuzz/regressions/$name"/* >"$out/regressions_$name.log" 2>&1; then
      echo "fuzz_$name: a regression input fails again: see $out/regressions_$name.log"
      grep -m3 -E 'ERROR|SUMMARY|runtime error|Running:' "$out/regressions_$name.log" || true
      status=1
      continue
    fi
  fi
  work="$out/corpus_$name"
  # This run's findings only: copy what you keep to fuzz/regressions/<target>/.
  rm -rf "$out/crashes_$name"
  mkdir -p "$work" "$out/crashes_$name"
  log="$out/fuzz_$name.log"
  rc=0
  (cd "$out/crashes_$name" &&
   ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions="$top/fuzz/lsan.supp" "$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
     -rss_limit_mb=2048 -max_len=16384 "$work" $(for d in $seeds; do echo "$top/$d"; done) >"$log" 2>&1) || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  found=$(find "$out/crashes_$name" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  size=$(find "$work" -type f | wc -l)
  printf 'fuzz_%s: %ss, %s executions, %s exec/s, corpus %s files, %s findings%s\n' "$name" "$secs" \
    "${execs:-?}" "${eps:-?}" "$size" "$found" "$([ $rc -ne 0 ] && echo " (exit $rc, see $log)")"
  if [ $rc -ne 0 ] || [ "$found" -ne 0 ]; then
    status=1
    grep -m3 -E 'ERROR|SUMMARY|runtime error' "$log" || true
  fi
done
exit $status
