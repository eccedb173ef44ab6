#!/usr/bin/env bash
# Runs a command with DATABASE_URL pointing at PostgreSQL.
# If DATABASE_URL is already set, the command runs as is. Otherwise a throwaway
# PostgreSQL 15 cluster is created in a temp dir (unix socket only, no TCP),
# the command runs against it, and the cluster is always stopped and removed.
# Exits with the command's status.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 <command> [args...]" >&2
    exit 2
fi

if [[ -n "${DATABASE_URL:-}" ]]; then
    exec "$@"
fi

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
if [[ ! -x "$PG_BIN/initdb" ]]; then
    echo "with-postgres: $PG_BIN/initdb not found; install PostgreSQL 15 or set DATABASE_URL" >&2
    exit 1
fi

DIR="$(mktemp -d "${TMPDIR:-/tmp}/ferry-pg.XXXXXX")"
# initdb refuses to run as root: run the server as the postgres user then.
if [[ "$(id -u)" -eq 0 ]]; then
    chown postgres "$DIR"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

cleanup() {
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

as_pg "$PG_BIN/initdb" -D "$DIR/data" -U postgres -A trust --no-sync -E UTF8 >"$DIR/initdb.log" 2>&1 || {
    cat "$DIR/initdb.log" >&2
    exit 1
}
as_pg "$PG_BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
    -o "-k $DIR -c listen_addresses='' -c port=5432 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null || {
    cat "$DIR/server.log" >&2
    exit 1
}

export DATABASE_URL="postgres://postgres@localhost/postgres?host=$DIR&port=5432"
echo "with-postgres: started a throwaway PostgreSQL 15 in $DIR (removed on exit)"

set +e
"$@"
status=$?
set -e
exit "$status"
