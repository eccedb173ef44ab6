#!/usr/bin/env bash
# ferry-proxy vs nginx on loopback (make bench-proxy). Not a test: prints a
# markdown table and writes it to crates/proxy/bench/RESULTS.md.
#
# Env: BENCH_DURATION (10s), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
# BENCH_ROUNDS (3), BENCH_CARGO_ARGS (none), BENCH_PROFILE (bench-release: fat LTO, see the root
# Cargo.toml), BENCH_CASES (all; "quick" runs only the two-route cases).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
OUT="$ROOT/crates/proxy/bench/RESULTS.md"
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-64}
THREADS=${BENCH_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-3}
PROFILE=${BENCH_PROFILE:-bench-release}
CASES=${BENCH_CASES:-all}
UP_PORT=18081 NGINX_PORT=18082 FERRY_PORT=18083
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT

source "$ROOT/crates/proxy/bench/common.sh"
need_tools
cd "$ROOT"
# BENCH_CARGO_ARGS, e.g. "--no-default-features" to measure without mimalloc.
cargo build --profile "$PROFILE" -p ferry-proxy --bin ferry-proxy --example bench_upstream ${BENCH_CARGO_ARGS:-}
BIN="$ROOT/target/$PROFILE"

UP="127.0.0.1:$UP_PORT"
bench_files "$WORK" "$UP" "$NGINX_PORT" 2

"$BIN/examples/bench_upstream" "$UP" >/dev/null & PIDS+=($!)
wait_port "$UP_PORT"
nginx -c "$WORK/nginx.conf" -p "$WORK"
wait_port "$NGINX_PORT"

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f", v}'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
NAMES=()
declare -A RPS P50 P99 ERRS
# run NAME PORT PATH HOST [LUA_HOSTS]: one wrk run, results appended.
run() {
  local name=$1 port=$2 path=$3 host=$4 lua=${5:-}
  local args=(-t"$THREADS" -c"$CONNS" -d"$DURATION" --latency)
  if [ -n "$lua" ]; then args+=(-s "$WORK/hosts.lua"); else args+=(-H "Host: $host"); fi
  local out; out=$(WRK_HOSTS=${lua:-1} wrk "${args[@]}" "http://127.0.0.1:$port$path")
  local rps p50 p99 errs
  rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out" | to_ms)
  p99=$(awk '$1=="99%" {print $2}' <<<"$out" | to_ms)
  errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  [[ " ${NAMES[*]} " == *" ${name// /_} "* ]] || NAMES+=("${name// /_}")
  RPS[$name]+="$rps " P50[$name]+="$p50 " P99[$name]+="$p99 "
  [ -n "$errs" ] && ERRS[$name]+="$errs"
  echo "  $name: $rps req/s p50 ${p50}ms p99 ${p99}ms ${errs}" >&2
}

FERRY2=18090 FERRY10K=18100
start_ferry "$WORK/routes2.json" $FERRY2
wait_port $FERRY2
start_ferry "$WORK/routes10k.json" $FERRY10K
wait_port $FERRY10K
FERRY10K_PID=$FERRY_PID
RSS_IDLE=$(awk '/VmRSS/ {print $2}' "/proc/$FERRY10K_PID/status")

LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
echo "warming up" >&2
for port in $NGINX_PORT $FERRY2; do
  wrk -t1 -c16 -d2s -H "Host: app.bench" "http://127.0.0.1:$port/" >/dev/null
done
# Interleaved rounds: the machine is shared, so each case is measured
# ROUNDS times alternating nginx and ferry, and the median is reported.
for round in $(seq "$ROUNDS"); do
  echo "round $round/$ROUNDS" >&2
  run "upstream direct" "$UP_PORT" / app.bench
  run "nginx host" "$NGINX_PORT" / app.bench
  run "ferry host" "$FERRY2" / app.bench
  run "nginx prefix" "$NGINX_PORT" /api/x prefix.bench
  run "ferry prefix" "$FERRY2" /api/x prefix.bench
  [ "$CASES" = quick ] && continue
  run "nginx lua 1 host" "$NGINX_PORT" / - 1
  run "ferry lua 1 host" "$FERRY2" / - 1
  run "nginx lua 10k hosts" "$NGINX_PORT" / - 10000
  run "ferry lua 10k hosts" "$FERRY10K" / - 10000
done
RSS_LOADED=$(awk '/VmRSS/ {print $2}' "/proc/$FERRY10K_PID/status")

declare -A MED
for key in "${NAMES[@]}"; do MED[${key//_/ }]=$(median <<<"${RPS[${key//_/ }]}"); done
ratio() { awk -v a="${MED[$1]}" -v b="${MED[$2]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
{
  echo "## ferry-proxy benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t$THREADS -c$CONNS -d$DURATION, median of $ROUNDS interleaved rounds, loopback, load before start: $LOAD)"
  echo
  echo "| case | req/s | p50 ms | p99 ms | errors | vs nginx |"
  echo "|---|---:|---:|---:|---|---:|"
  for key in "${NAMES[@]}"; do
    name=${key//_/ }
    rps=$(median <<<"${RPS[$name]}") p50=$(median <<<"${P50[$name]}") p99=$(median <<<"${P99[$name]}")
    errs=${ERRS[$name]:-none}
    vs="-"
    case "$name" in
      ferry*) vs=$(ratio "$name" "nginx${name#ferry}") ;;
    esac
    echo "| $name | $rps | $p50 | $p99 | $errs | $vs |"
    echo "  all runs req/s: ${RPS[$name]}" >&2
  done
  echo
  [ "$CASES" = quick ] || echo "10k hosts vs 1 host (same Lua request generator): ferry $(ratio 'ferry lua 10k hosts' 'ferry lua 1 host'), nginx $(ratio 'nginx lua 10k hosts' 'nginx lua 1 host')"
  echo
  echo "ferry-proxy RSS with 10,002 routes: ${RSS_IDLE} kB after load, ${RSS_LOADED} kB after the 10k-host run"
  echo
  echo "Both proxies set Host, X-Forwarded-For/-Proto/-Host and X-Request-Id; nginx: worker_processes 2, upstream keepalive 128, access_log off. Upstream: crates/proxy/examples/bench_upstream.rs (1 worker thread). All on one machine, so the proxies compete with wrk and the upstream for CPU."
} | tee "$OUT"
