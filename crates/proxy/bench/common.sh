# Shared by run.sh, cpu.sh and instr.sh (sourced, not run): the same routes,
# nginx configuration and wrk host generator for every proxy benchmark.

# bench_files WORK UPSTREAM NGINX_PORT NGINX_WORKERS [foreground]
# Writes WORK/routes2.json (app.bench, prefix.bench with /api stripped,
# h0.bench), WORK/routes10k.json (the same plus h1..h9999.bench),
# WORK/nginx.conf (the same hosts) and WORK/hosts.lua. "foreground" runs
# nginx as one process without a master (for valgrind).
bench_files() {
  python3 - "$@" <<'PY'
import json, sys
work, up, port, workers = sys.argv[1:5]
foreground = len(sys.argv) > 5 and sys.argv[5] == "foreground"

def routes(n):
    out = [
        {"id": "app", "hosts": ["app.bench"], "targets": [{"path_prefix": "/", "upstreams": [up]}]},
        {"id": "prefix", "hosts": ["prefix.bench"],
         "targets": [{"path_prefix": "/api", "strip_prefix": True, "upstreams": [up]}]},
    ]
    out += [{"id": f"gen{i}", "hosts": [f"h{i}.bench"], "targets": [{"path_prefix": "/", "upstreams": [up]}]}
            for i in range(n)]
    return json.dumps({"version": 1, "routes": out})

open(f"{work}/routes2.json", "w").write(routes(1))
open(f"{work}/routes10k.json", "w").write(routes(10000))

common = """proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Request-Id $request_id;"""
names = " ".join(f"h{i}.bench" for i in range(10000))
mode = "master_process off; daemon off;" if foreground else "daemon on;"
open(f"{work}/nginx.conf", "w").write(f"""worker_processes {workers}; {mode}
pid {work}/nginx.pid; error_log {work}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; server_names_hash_max_size 65536; server_names_hash_bucket_size 128;
  client_body_temp_path {work}/ncb; proxy_temp_path {work}/np; fastcgi_temp_path {work}/nf;
  uwsgi_temp_path {work}/nu; scgi_temp_path {work}/ns;
  upstream up {{ server {up}; keepalive 128; }}
  server {{ listen 127.0.0.1:{port} default_server; return 404; }}
  server {{ listen 127.0.0.1:{port}; server_name app.bench {names};
    location / {{ proxy_pass http://up; {common} }} }}
  server {{ listen 127.0.0.1:{port}; server_name prefix.bench;
    location /api/ {{ proxy_pass http://up/; {common} }} }}
}}
""")
open(f"{work}/hosts.lua", "w").write("""local n = tonumber(os.getenv("WRK_HOSTS") or "1")
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/", { ["Host"] = "h" .. (i % n) .. ".bench" })
end
""")
PY
}

# start_ferry ROUTES_FILE PORT_BASE [valgrind args...]: sets FERRY_PID. Uses
# PORT_BASE..PORT_BASE+3 (http, https, admin, grpc) and $BIN/ferry-proxy.
start_ferry() {
  local routes=$1 base=$2; shift 2
  RUST_LOG=warn FERRY_PROXY_ROUTES_FILE="$routes" FERRY_PROXY_HTTP_LISTEN="127.0.0.1:$base" \
    FERRY_PROXY_HTTPS_LISTEN="127.0.0.1:$((base + 1))" FERRY_PROXY_ADMIN_LISTEN="127.0.0.1:$((base + 2))" \
    FERRY_PROXY_LISTEN="127.0.0.1:$((base + 3))" "$@" "$BIN/ferry-proxy" >"$WORK/ferry-$base.log" 2>&1 &
  FERRY_PID=$!
  PIDS+=("$FERRY_PID")
}

# wait_port PORT: up to 30 s (valgrind starts slowly).
wait_port() {
  for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 not up" >&2
  exit 1
}

need_tools() { # wrk, nginx and any extra commands given
  local missing=0 tool
  for tool in wrk nginx "$@"; do command -v "$tool" >/dev/null || missing=1; done
  [ "$missing" = 0 ] && return 0
  apt-get install -y wrk nginx-light valgrind >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y wrk nginx-light valgrind >/dev/null; }
}
