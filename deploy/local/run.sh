#!/usr/bin/env bash
# `make run`: build and start all four Ferry services on an embedded SQLite
# database in ./.ferry (git-ignored). A development encryption key is
# generated there (mode 0600) unless ENCRYPTION_KEY is set. Ctrl-C stops all.
#
# Every FERRY_*/DATABASE_URL/ENCRYPTION_KEY variable you export is passed
# through, e.g. `FERRY_API_LISTEN=127.0.0.1:6000 make run`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CARGO="${CARGO:-cargo}"
DATA_DIR="$ROOT/.ferry"

echo "==> building (cargo build --bins)"
"$CARGO" build --workspace --bins
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"

mkdir -p "$DATA_DIR"
chmod 700 "$DATA_DIR"

if [[ -z "${ENCRYPTION_KEY:-}" ]]; then
    KEY_FILE="$DATA_DIR/encryption.key"
    if [[ ! -s "$KEY_FILE" ]]; then
        (umask 077 && "$BIN_DIR/ferry-api" generate-key >"$KEY_FILE")
        echo "==> generated a development encryption key in $KEY_FILE"
    fi
    chmod 600 "$KEY_FILE"
    ENCRYPTION_KEY="$(<"$KEY_FILE")"
fi
export ENCRYPTION_KEY
export DATABASE_URL="${DATABASE_URL:-sqlite://$DATA_DIR/ferry.db?mode=rwc}"

export FERRY_API_LISTEN="${FERRY_API_LISTEN:-127.0.0.1:50051}"
export FERRY_BUILDER_LISTEN="${FERRY_BUILDER_LISTEN:-127.0.0.1:50052}"
export FERRY_SCHEDULER_LISTEN="${FERRY_SCHEDULER_LISTEN:-127.0.0.1:50053}"
export FERRY_PROXY_LISTEN="${FERRY_PROXY_LISTEN:-127.0.0.1:50054}"
export FERRY_PROXY_HTTP_LISTEN="${FERRY_PROXY_HTTP_LISTEN:-127.0.0.1:8080}"
export FERRY_PROXY_HTTPS_LISTEN="${FERRY_PROXY_HTTPS_LISTEN:-127.0.0.1:8443}"
export FERRY_PROXY_ADMIN_LISTEN="${FERRY_PROXY_ADMIN_LISTEN:-127.0.0.1:9090}"
export FERRY_API_HTTP_LISTEN="${FERRY_API_HTTP_LISTEN:-127.0.0.1:8081}"

# The proxy follows the api's route feed with a shared service credential.
if [[ -z "${FERRY_PROXY_FEED_TOKEN:-}" ]]; then
    FEED_TOKEN_FILE="$DATA_DIR/proxy-feed.token"
    if [[ ! -s "$FEED_TOKEN_FILE" ]]; then
        (umask 077 && "$BIN_DIR/ferry-api" generate-key >"$FEED_TOKEN_FILE")
    fi
    chmod 600 "$FEED_TOKEN_FILE"
    FERRY_PROXY_FEED_TOKEN="$(<"$FEED_TOKEN_FILE")"
fi
export FERRY_PROXY_FEED_TOKEN
api_host="${FERRY_API_LISTEN%:*}"
[[ "$api_host" == "0.0.0.0" ]] && api_host=127.0.0.1
export FERRY_PROXY_API_URL="${FERRY_PROXY_API_URL:-http://$api_host:${FERRY_API_LISTEN##*:}}"
export FERRY_PROXY_STATE_DIR="${FERRY_PROXY_STATE_DIR:-$DATA_DIR/proxy}"

# The api hands builds to the builder with another shared credential; push
# webhooks reach the api through the proxy (`/hooks/` on the public host).
if [[ -z "${FERRY_BUILDER_TOKEN:-}" ]]; then
    BUILDER_TOKEN_FILE="$DATA_DIR/builder.token"
    if [[ ! -s "$BUILDER_TOKEN_FILE" ]]; then
        (umask 077 && "$BIN_DIR/ferry-api" generate-key >"$BUILDER_TOKEN_FILE")
    fi
    chmod 600 "$BUILDER_TOKEN_FILE"
    FERRY_BUILDER_TOKEN="$(<"$BUILDER_TOKEN_FILE")"
fi
export FERRY_BUILDER_TOKEN
builder_host="${FERRY_BUILDER_LISTEN%:*}"
[[ "$builder_host" == "0.0.0.0" ]] && builder_host=127.0.0.1
export FERRY_BUILDER_URL="${FERRY_BUILDER_URL:-http://$builder_host:${FERRY_BUILDER_LISTEN##*:}}"
# Without a registry the builder answers FAILED_PRECONDITION; this one is a
# placeholder for planned builds (no cluster): set your own to push.
export FERRY_BUILDER_REGISTRY="${FERRY_BUILDER_REGISTRY:-localhost:5000/ferry}"
export FERRY_API_HOOKS_UPSTREAM="${FERRY_API_HOOKS_UPSTREAM:-$FERRY_API_HTTP_LISTEN}"

PIDS=()
NAMES=()

stop_all() {
    trap - INT TERM EXIT
    echo
    echo "==> stopping Ferry"
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    echo "==> stopped"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

# start NAME LABEL [args...]: runs a service, its output prefixed with LABEL.
start() {
    local name="$1" label="$2"
    shift 2
    # The prefixer ignores Ctrl-C so the services' shutdown logs still show.
    "$BIN_DIR/$name" "$@" > >(trap '' INT TERM; exec sed -u "s/^/$label /") 2>&1 &
    PIDS+=("$!")
    NAMES+=("$name")
}

# wait_port NAME HOST:PORT: until something accepts on the port, or fail.
wait_port() {
    local name="$1" addr="$2" host port
    host="${addr%:*}"
    port="${addr##*:}"
    [[ "$host" == "0.0.0.0" || -z "$host" ]] && host=127.0.0.1
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
            echo "==> $name exited during start-up; see its output above" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "==> $name did not open $addr within 60 s" >&2
    exit 1
}

# The api migrates the database; the others start once it is up.
start ferry-api "[api]      "
wait_port ferry-api "$FERRY_API_LISTEN"
# RBAC catalogue and official templates; idempotent, so every run is safe.
"$BIN_DIR/ferry-api" seed 2>&1 | grep -v ' INFO ' | sed -u "s/^/[seed]      /" || true
start ferry-builder "[builder]  "
start ferry-scheduler "[scheduler]"
start ferry-proxy "[proxy]    "
wait_port ferry-proxy "$FERRY_PROXY_ADMIN_LISTEN"

cat <<BANNER

  Ferry is running (data in $DATA_DIR)
    api        grpc://$FERRY_API_LISTEN  webhooks http://$FERRY_API_HTTP_LISTEN/hooks/git/<integration>
    builder    grpc://$FERRY_BUILDER_LISTEN
    scheduler  grpc://$FERRY_SCHEDULER_LISTEN
    proxy      http://$FERRY_PROXY_HTTP_LISTEN  https://$FERRY_PROXY_HTTPS_LISTEN
               admin http://$FERRY_PROXY_ADMIN_LISTEN/healthz  grpc://$FERRY_PROXY_LISTEN
    database   $(printf '%s' "${DATABASE_URL%%\?*}" | sed -E 's#(://[^:/@]+):[^@]*@#\1:****@#')
BANNER
if [[ -z "${KUBECONFIG:-}" && -z "${KUBERNETES_SERVICE_HOST:-}" ]]; then
    echo "  No Kubernetes cluster configured: deployments are rendered and recorded, not applied."
else
    echo "  Kubernetes: ${KUBECONFIG:-in-cluster}"
fi
echo "  Press Ctrl-C to stop."
echo

# Stop everything if any service dies on its own. `wait` (unlike a
# foreground sleep) returns as soon as Ctrl-C arrives, so the trap runs first.
while true; do
    sleep 1 &
    wait "$!" || true
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            status=0
            wait "${PIDS[$i]}" || status=$?
            echo "==> ${NAMES[$i]} stopped (exit status $status); stopping the others" >&2
            exit 1
        fi
    done
done
