#!/usr/bin/env bash
# CPU time per request, ferry-proxy vs nginx (make bench-proxy-cpu). Both
# proxies carry the same 10,001 routes in ONE instance each; wrk alternates
# between them (host route, then 10,000 hosts from a Lua generator) and the
# proxies' CPU time (utime+stime from /proc) is divided by the requests
# served. Less sensitive to the 2-core scheduling noise than req/s alone.
# Not a test. Env: BENCH_ROUNDS (3), BENCH_DURATION (6s), BENCH_PROFILE
# (bench-release). Run `make bench-proxy` once first, or this builds.
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
command -v wrk >/dev/null && command -v nginx >/dev/null || apt-get install -y wrk nginx-light >/dev/null
cd "$ROOT"
cargo build -q --profile "$PROFILE" -p ferry-proxy --bin ferry-proxy --example bench_upstream
BIN="$ROOT/target/$PROFILE"
python3 - "$WORK" "$UP" "$NGINX_PORT" <<'PY'
import json, sys
work, up, port = sys.argv[1], sys.argv[2], sys.argv[3]
common = """proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $request_id;"""
names = " ".join(f"h{i}.bench" for i in range(10000))
open(f"{work}/nginx.conf", "w").write(f"""worker_processes 2;
pid {work}/nginx.pid; error_log {work}/nginx.err warn; daemon on;
events {{ worker_connections 4096; }}
http {{
  access_log off; server_names_hash_max_size 65536; server_names_hash_bucket_size 128;
  client_body_temp_path {work}/ncb; proxy_temp_path {work}/np; fastcgi_temp_path {work}/nf;
  uwsgi_temp_path {work}/nu; scgi_temp_path {work}/ns;
  upstream up {{ server {up}; keepalive 128; }}
  server {{ listen 127.0.0.1:{port} default_server; return 404; }}
  server {{ listen 127.0.0.1:{port}; server_name app.bench {names};
    location / {{ proxy_pass http://up; {common} }} }}
}}
""")
routes = [{"id": "app", "hosts": ["app.bench"], "targets": [{"path_prefix": "/", "upstreams": [up]}]}]
routes += [{"id": f"gen{i}", "hosts": [f"h{i}.bench"], "targets": [{"path_prefix": "/", "upstreams": [up]}]} for i in range(10000)]
open(f"{work}/routes.json", "w").write(json.dumps({"version": 1, "routes": routes}))
PY
cat > "$WORK/hosts.lua" <<'LUA'
local n = tonumber(os.getenv("WRK_HOSTS") or "1")
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/", { ["Host"] = "h" .. (i % n) .. ".bench" })
end
LUA
"$BIN/examples/bench_upstream" "$UP" >/dev/null & PIDS+=($!)
nginx -c "$WORK/nginx.conf" -p "$WORK"
RUST_LOG=warn FERRY_PROXY_ROUTES_FILE="$WORK/routes.json" FERRY_PROXY_HTTP_LISTEN="127.0.0.1:$FERRY_PORT" \
  FERRY_PROXY_HTTPS_LISTEN="127.0.0.1:$((FERRY_PORT + 1))" FERRY_PROXY_ADMIN_LISTEN="127.0.0.1:$((FERRY_PORT + 2))" \
  FERRY_PROXY_LISTEN="127.0.0.1:$((FERRY_PORT + 3))" "$BIN/ferry-proxy" >/dev/null 2>&1 &
FERRY_PID=$!; PIDS+=($FERRY_PID)
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
