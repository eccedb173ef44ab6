#!/usr/bin/env bash
# Instructions per request, ferry-proxy vs nginx (make bench-proxy-instr).
# Wall-clock numbers on a shared 2-core VM swing by ±20 %; callgrind's
# instruction count does not, so this is the repeatable comparison of the
# two proxies' own (user-space) work. Each proxy runs alone under callgrind
# with one worker and the same 10,002 routes (common.sh); wrk sends
# sequential keep-alive requests (one connection) for the host route and for
# 10,000 hosts. Counters are reset after a warm-up and read after the
# measured run. Kernel time (the loopback sockets) is not counted. Not a
# test. Env: BENCH_DURATION (10s), BENCH_PROFILE (bench-release).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
DURATION=${BENCH_DURATION:-10s} PROFILE=${BENCH_PROFILE:-bench-release}
UP=127.0.0.1:18281 PORT=18290
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.3; rm -rf "$WORK"
}
trap cleanup EXIT
source "$ROOT/crates/proxy/bench/common.sh"
need_tools valgrind callgrind_control
cd "$ROOT"
cargo build -q --profile "$PROFILE" -p ferry-proxy --bin ferry-proxy --example bench_upstream
BIN="$ROOT/target/$PROFILE"
bench_files "$WORK" "$UP" "$PORT" 1 foreground
"$BIN/examples/bench_upstream" "$UP" >/dev/null & PIDS+=($!)

CALLGRIND=(valgrind --tool=callgrind --compress-strings=no --compress-pos=no)
# measure WHO HOSTS: prints instructions per request.
measure() {
  local who=$1 hosts=$2 out="$WORK/cg-$1-$2.out" pid
  if [ "$who" = ferry ]; then
    FERRY_PROXY_WORKERS=1 start_ferry "$WORK/routes10k.json" "$PORT" "${CALLGRIND[@]}" --callgrind-out-file="$out"
    pid=$FERRY_PID
  else
    "${CALLGRIND[@]}" --callgrind-out-file="$out" nginx -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx-cg.log" 2>&1 &
    pid=$!; PIDS+=("$pid")
  fi
  wait_port "$PORT"
  WRK_HOSTS=$hosts wrk -t1 -c1 -d3s -s "$WORK/hosts.lua" "http://127.0.0.1:$PORT/" >/dev/null
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  local result
  result=$(WRK_HOSTS=$hosts wrk -t1 -c1 -d"$DURATION" -s "$WORK/hosts.lua" "http://127.0.0.1:$PORT/")
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if grep -q "Non-2xx" <<<"$result"; then echo "$who: non-2xx answers" >&2; exit 1; fi
  local requests instructions
  requests=$(awk '/requests in/ {print $1}' <<<"$result")
  # The second dump holds exactly the measured run.
  instructions=$(awk '/^summary:/ {print $2}' "$out.2")
  awk -v i="$instructions" -v r="$requests" 'BEGIN { printf "%.0f", i / r }'
}

declare -A IR
for hosts in 1 10000; do
  for who in nginx ferry; do
    IR[$who-$hosts]=$(measure "$who" "$hosts")
    echo "  $who, $hosts host(s): ${IR[$who-$hosts]} instructions/request" >&2
  done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "## Instructions per request (callgrind, one worker, sequential requests, $(date -u +%Y-%m-%dT%H:%MZ))"
echo
echo "| case | nginx | ferry-proxy | ferry / nginx |"
echo "|---|---:|---:|---:|"
echo "| 1 host (h0.bench) | ${IR[nginx-1]} | ${IR[ferry-1]} | $(ratio "${IR[ferry-1]}" "${IR[nginx-1]}") |"
echo "| 10,000 hosts | ${IR[nginx-10000]} | ${IR[ferry-10000]} | $(ratio "${IR[ferry-10000]}" "${IR[nginx-10000]}") |"
echo
echo "10,000 hosts vs 1 host: nginx $(ratio "${IR[nginx-10000]}" "${IR[nginx-1]}")×, ferry $(ratio "${IR[ferry-10000]}" "${IR[ferry-1]}")× the instructions"
