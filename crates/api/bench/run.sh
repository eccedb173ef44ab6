#!/usr/bin/env bash
# Authenticated read cost of ferry-api (make bench-api). A release ferry-api
# runs against (a) a SQLite file and (b) a throwaway PostgreSQL 15 (unix
# socket, as tests/scripts/with-postgres.sh); for each, the load generator
# (crates/api/examples/load.rs, a separate process) registers a user, logs
# in, creates an organization and a project, then sends GetOrganization and
# GetProject with the session token at a FIXED rate over several HTTP/2
# connections (open loop: latency counts from each request's scheduled
# send time). Reported per RPC: api CPU time per request (utime+stime of
# /proc/<api pid>/stat over the measured phase, divided by the requests),
# the PostgreSQL server's CPU per request, and p50/p99 latency. The results
# table goes to stdout and crates/api/bench/RESULTS.md.
#
# Not a test. Everything shares the machine's cores with the generator (and,
# on PostgreSQL, the database), so latency swings with other load; CPU per
# request is the steadier number.
#
# Env: BENCH_RATE (2000 req/s), BENCH_DURATION (10 s per RPC), BENCH_WARMUP
# (2 s), BENCH_CONNECTIONS (4), BENCH_ROUNDS (1), BENCH_BACKENDS
# ("sqlite postgres"), BENCH_PROFILE (release), BENCH_RPCS (info,org,project;
# info is SystemService.GetServerInfo, no authentication and no database:
# the gRPC floor on this machine),
# BENCH_API_BIN (a ferry-api binary to measure instead of the one built
# here, e.g. a copy of an older build), BENCH_RUST_LOG (info, the service
# default), BENCH_PERF=1 records a perf profile of the api per backend into
# $BENCH_OUT (default /tmp/ferry-bench-api).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
RATE=${BENCH_RATE:-2000} DURATION=${BENCH_DURATION:-10} WARMUP=${BENCH_WARMUP:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-4} ROUNDS=${BENCH_ROUNDS:-1}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres} PROFILE=${BENCH_PROFILE:-release}
RPCS=${BENCH_RPCS:-info,org,project} PERF=${BENCH_PERF:-0} OUT=${BENCH_OUT:-/tmp/ferry-bench-api}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PORT=${BENCH_PORT:-18350} API_LOG=${BENCH_RUST_LOG:-info}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferry-bench-api.XXXXXX")
API_PID=""
PG_UP=0

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
stop_api() {
  if [ -n "$API_PID" ]; then
    kill "$API_PID" 2>/dev/null || true
    wait "$API_PID" 2>/dev/null || true
    API_PID=""
  fi
}
stop_pg() {
  if [ "$PG_UP" = 1 ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$WORK/pg"
    PG_UP=0
  fi
}
cleanup() { stop_api; stop_pg; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need_tools() {
  local missing=() tool
  for tool in python3 getconf; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ "$PERF" = 1 ] && ! command -v perf >/dev/null; then missing+=(linux-perf); fi
  if [[ " $BACKENDS " == *" postgres "* ]] && [ ! -x "$PG_BIN/initdb" ]; then missing+=(postgresql-15); fi
  [ ${#missing[@]} = 0 ] && return 0
  local pkgs=("${missing[@]/getconf/libc-bin}")
  apt-get install -y "${pkgs[@]}" >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y "${pkgs[@]}" >/dev/null; }
}

wait_port() { # up to 60 s (migrations run first)
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 not up; api log:" >&2
  cat "$WORK/api.log" >&2
  exit 1
}

start_pg() {
  # initdb refuses to run as root: as root the server runs as postgres, in
  # a directory it can reach.
  mkdir -p "$WORK/pg"
  if [ "$(id -u)" -eq 0 ]; then chmod 755 "$WORK"; chown postgres "$WORK/pg"; fi
  as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -U postgres -A trust --no-sync -E UTF8 >"$WORK/pg/initdb.log" 2>&1 ||
    { cat "$WORK/pg/initdb.log" >&2; exit 1; }
  as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -t 60 \
    -o "-k $WORK/pg -c listen_addresses='' -c port=5432 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { cat "$WORK/pg/server.log" >&2; exit 1; }
  PG_UP=1
  PG_PID=$(head -1 "$WORK/pg/data/postmaster.pid")
}

# start_api DATABASE_URL: sets API_PID
start_api() {
  DATABASE_URL="$1" ENCRYPTION_KEY="$KEY" FERRY_API_LISTEN="127.0.0.1:$PORT" RUST_LOG="$API_LOG" \
    FERRY_SHUTDOWN_GRACE_SECS=1 "$API_BIN" >"$WORK/api.log" 2>&1 &
  API_PID=$!
  wait_port "$PORT"
}

need_tools
cd "$ROOT"
echo "building ferry-api and the load generator ($PROFILE)..." >&2
# Two invocations: building the example unifies the dev-dependencies'
# features into everything it builds; the measured binary is built as
# `cargo build --release -p ferry-api` builds it.
[ -n "${BENCH_API_BIN:-}" ] || cargo build -q --profile "$PROFILE" -p ferry-api --bin ferry-api
cargo build -q --profile "$PROFILE" -p ferry-api --example load
DIR=$PROFILE; [ "$PROFILE" = dev ] && DIR=debug
BIN="$TARGET/$DIR"
API_BIN=${BENCH_API_BIN:-$BIN/ferry-api}
KEY=$("$API_BIN" generate-key)
HZ=$(getconf CLK_TCK)
mkdir -p "$OUT"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$WORK/results"

for round in $(seq "$ROUNDS"); do
  for backend in $BACKENDS; do
    DB_ARGS=()
    case $backend in
      sqlite)
        rm -f "$WORK"/ferry.db*
        url="sqlite://$WORK/ferry.db?mode=rwc" ;;
      postgres)
        start_pg
        url="postgres://postgres@localhost/postgres?host=$WORK/pg&port=5432"
        DB_ARGS=(--db-pid "$PG_PID") ;;
      *) echo "unknown backend $backend" >&2; exit 2 ;;
    esac
    start_api "$url"
    if [ "$PERF" = 1 ]; then
      perf record -q -F 999 -g -p "$API_PID" -o "$OUT/perf-$backend.data" 2>/dev/null &
      PERF_PID=$!
    fi
    "$BIN/examples/load" --addr "http://127.0.0.1:$PORT" --pid "$API_PID" "${DB_ARGS[@]}" \
      --clk-tck "$HZ" --label "$backend" --rate "$RATE" --duration "$DURATION" \
      --warmup "$WARMUP" --connections "$CONNECTIONS" --rpcs "$RPCS" |
      sed "s/^RESULT /RESULT round=$round /" | tee -a "$WORK/results" >&2
    if [ "$PERF" = 1 ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" || true; fi
    stop_api
    [ "$backend" = postgres ] && stop_pg
  done
done

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no | grep -q . && echo "+changes" || true)
WHAT="commit $COMMIT$DIRTY"; [ -n "${BENCH_API_BIN:-}" ] && WHAT="api binary $BENCH_API_BIN"
python3 - "$WORK/results" "$ROOT/crates/api/bench/RESULTS.md" "$WHAT" "$LOAD_BEFORE" \
  "$(nproc)" "$PROFILE" <<'PY'
import sys, datetime
results, out, what, load, cores, profile = sys.argv[1:7]
rows = []
for line in open(results):
    if not line.startswith("RESULT "):
        continue
    rows.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
r0 = rows[0] if rows else {}
head = (f"## ferry-api authenticated reads ({now}, {what}, {profile} build, {cores} cores, "
        f"{r0.get('rate', '?')} req/s open loop, {r0.get('seconds', '?')} s per RPC, "
        f"{r0.get('connections', '?')} HTTP/2 connections, load before start: {load})")
table = ["| round | backend | RPC | requests | errors | achieved req/s | api CPU µs/req | api cores "
         "| DB CPU µs/req | load gen CPU µs/req | p50 ms | p99 ms | max ms |",
         "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    db = r["db_cpu_us"] if r["db_cpu_us"] != "NaN" else "-"
    table.append(f"| {r['round']} | {r['label']} | {r['rpc']} | {r['requests']} | {r['errors']} "
                 f"| {r['achieved_rps']} | {r['api_cpu_us']} | {r['api_cores']} | {db} | {r['loadgen_cpu_us']} "
                 f"| {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |")
# With several rounds, the median of each column per backend and RPC.
groups = {}
for r in rows:
    groups.setdefault((r["label"], r["rpc"]), []).append(r)
median_table = []
if len({r["round"] for r in rows}) > 1:
    def med(rs, key):
        vals = sorted(float(r[key]) for r in rs if r[key] != "NaN")
        return "-" if not vals else f"{vals[len(vals) // 2]:g}"
    median_table = ["", "Median of the rounds:", "",
                    "| backend | RPC | api CPU µs/req | DB CPU µs/req | p50 ms | p99 ms | errors |",
                    "|---|---|---:|---:|---:|---:|---:|"]
    for (label, rpc), rs in groups.items():
        errors = sum(int(r["errors"]) for r in rs)
        median_table.append(f"| {label} | {rpc} | {med(rs, 'api_cpu_us')} | {med(rs, 'db_cpu_us')} "
                            f"| {med(rs, 'p50_ms')} | {med(rs, 'p99_ms')} | {errors} |")
notes = """
api CPU: utime+stime of every ferry-api thread over the measured phase, divided by the requests
sent in it. DB CPU: the PostgreSQL postmaster and its backends, likewise (SQLite runs inside the
api). GetServerInfo (no authentication, no database) is the gRPC + loopback TCP floor of this
machine: an authenticated read's own cost is its row minus that one. Latency: from each request's
scheduled send time to its answer, at the client (crates/api/examples/load.rs), so queueing behind
a slow request counts. Session token, `authorization: Bearer`; the caller is the organization's
owner. Generated by `make bench-api` (crates/api/bench/run.sh)."""
text = head + "\n\n" + "\n".join(table + median_table) + "\n" + notes + "\n"
open(out, "w").write(text)
print(text)
PY
