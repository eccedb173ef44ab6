#!/usr/bin/env bash
# CPU time per request, ferry-proxy vs nginx (make bench-proxy-cpu). Both
# proxies carry the same 10,002 routes (common.sh) in ONE instance each; wrk
# alternates between them (host route, then 10,000 hosts from a Lua
# generator) and the proxies' CPU time (utime+stime from /proc) is divided by
# the requests served. Less sensitive to the 2-core scheduling noise than
# req/s alone, but still noisy on a shared VM (see instr.sh for a
# deterministic count). Not a test. Env: BENCH_ROUNDS (3), BENCH_DURATION
# (6s), BENCH_PROFILE (bench-release).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
ROUNDS=${BENCH_ROUNDS:-3} DURATION=${BENCH_DURATION:-6s} PROFILE=${BENCH_PROFILE:-bench-release}
UP=127.0.0.1:18181 NGINX_PORT=18182 FERRY_PORT=18190
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 0.3; rm -rf "$WORK"
}
trap cleanup EXIT
source "$ROOT/crates/proxy/bench/common.sh"
need_tools
cd "$ROOT"
cargo build -q --profile "$PROFILE" -p ferry-proxy --bin ferry-proxy --example bench_upstream
BIN="$ROOT/target/$PROFILE"
bench_files "$WORK" "$UP" "$NGINX_PORT" 2
"$BIN/examples/bench_upstream" "$UP" >/dev/null & PIDS+=($!)
nginx -c "$WORK/nginx.conf" -p "$WORK"
start_ferry "$WORK/routes10k.json" "$FERRY_PORT"
wait_port "$FERRY_PORT"
sleep 2
NGINX_PIDS=$(pgrep -d' ' -P "$(cat "$WORK/nginx.pid")")
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)
for port in "$NGINX_PORT" "$FERRY_PORT"; do wrk -t2 -c64 -d2s -H 'Host: app.bench' "http://127.0.0.1:$port/" >/dev/null; done
echo "| round | case | nginx req/s | ferry req/s | nginx CPU µs/req | ferry CPU µs/req |"
echo "|---|---|---:|---:|---:|---:|"
for round in $(seq "$ROUNDS"); do
  for mode in host "10k hosts"; do
    line="| $round | $mode"; rps=(); cpu=()
    for who in nginx ferry; do
      if [ "$who" = nginx ]; then port=$NGINX_PORT; pids=$NGINX_PIDS; else port=$FERRY_PORT; pids=$FERRY_PID; fi
      c0=$(ticks $pids)
      if [ "$mode" = host ]; then out=$(wrk -t2 -c64 -d"$DURATION" -H 'Host: app.bench' "http://127.0.0.1:$port/")
      else out=$(WRK_HOSTS=10000 wrk -t2 -c64 -d"$DURATION" -s "$WORK/hosts.lua" "http://127.0.0.1:$port/"); fi
      c1=$(ticks $pids)
      req=$(awk '/requests in/ {print $1}' <<<"$out")
      rps+=("$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")")
      cpu+=("$(python3 -c "print(round(($c1-$c0)/$HZ*1e6/$req, 1))")")
    done
    echo "$line | ${rps[0]} | ${rps[1]} | ${cpu[0]} | ${cpu[1]} |"
  done
done
