#!/usr/bin/env bash
# builder-tools-smoke.sh ROOTFS: runs the builder image's git and ssh from
# ROOTFS (the image's files, extracted; modified: /dev nodes and a CA file
# are added) under chroot as uid 65532, against servers on 127.0.0.1 on the
# host, the way ferry-git runs them (argv only, scrubbed environment, HOME
# in a private dir, GIT_SSH_COMMAND through /bin/sh):
#   - smart HTTP (git http-backend behind a small CGI shim): ls-remote, a
#     shallow fetch of a branch, checkout
#   - HTTPS with a throwaway CA: ls-remote works with it (GIT_SSL_CAINFO),
#     and without it fails on verification against the image's CA bundle
#   - ssh:// through GIT_SSH_COMMAND: /bin/sh starts ssh, which reaches the
#     network (a closed port answers "Connection refused")
# Needs root (chroot, mknod), python3, openssl and the host's git.
set -euo pipefail
ROOT="$(cd "$1" && pwd)"
[[ -x "$ROOT/usr/bin/git" ]] || { echo "no /usr/bin/git in $ROOT"; exit 1; }
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fail=1; }

# What a container runtime would provide (a root uid 65532 can enter, too).
chmod 0755 "$ROOT"
mkdir -p "$ROOT/dev" "$ROOT/tmp"
chmod 1777 "$ROOT/tmp"
for node in "null 1 3" "zero 1 5" "random 1 8" "urandom 1 9"; do
    set -- $node
    [[ -e "$ROOT/dev/$1" ]] || mknod -m 0666 "$ROOT/dev/$1" c "$2" "$3"
done

# A repository with one commit on main, served by git http-backend.
git init -q --bare "$work/srv/repo.git"
git init -q -b main "$work/src"
echo "hello from the smoke test" >"$work/src/README"
git -C "$work/src" add README
git -C "$work/src" -c user.name=smoke -c user.email=smoke@example.invalid commit -q -m first
git -C "$work/src" push -q "$work/srv/repo.git" main
git -C "$work/srv/repo.git" config http.receivepack false
head="$(git -C "$work/src" rev-parse HEAD)"

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=ferry smoke CA" \
    -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:TRUE" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat >"$work/serve.py" <<'PY'
import http.server, os, ssl, subprocess, sys
root, tls = sys.argv[1], sys.argv[2] == "tls"
class H(http.server.BaseHTTPRequestHandler):
    def run(self):
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        env = {"GIT_PROJECT_ROOT": root, "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
               "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_ADDR": "127.0.0.1",
               "CONTENT_TYPE": self.headers.get("content-type", ""),
               "CONTENT_LENGTH": str(len(body)), "GIT_PROTOCOL": self.headers.get("git-protocol", ""),
               "PATH": os.environ["PATH"]}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            k, _, v = line.partition(": ")
            if k.lower() == "status":
                status = int(v.split()[0])
            elif k:
                headers.append((k, v))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
    do_GET = do_POST = run
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
PY
# start_server MODE: in this shell (not a $(...) subshell), so the EXIT trap
# stops it; its output goes to a file, never to our stdout/stderr, so a
# pipe reading this script's output sees its end.
start_server() {
    python3 "$work/serve.py" "$work/srv" "$1" "$work/cert.pem" "$work/key.pem" >"$work/port.$1" 2>"$work/log.$1" </dev/null &
    pids+=($!)
    for _ in $(seq 1 50); do [[ -s "$work/port.$1" ]] && break; sleep 0.1; done
}
start_server plain
start_server tls
http_port="$(head -n1 "$work/port.plain")"
https_port="$(head -n1 "$work/port.tls")"
[[ -n "$http_port" && -n "$https_port" ]] || { cat "$work"/log.*; echo "FAIL the git servers did not start"; exit 1; }
closed_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
install -m 0644 "$work/cert.pem" "$ROOT/tmp/smoke-ca.pem"

# run CMD...: in the image's root as uid 65532, with ferry-git's environment.
CHROOT="$(command -v chroot)"
run() {
    env -i PATH=/usr/local/bin:/usr/bin \
        SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt HOME=/tmp/home GIT_CONFIG_NOSYSTEM=1 \
        GIT_CONFIG_GLOBAL=/dev/null GIT_TERMINAL_PROMPT=0 LC_ALL=C GIT_ALLOW_PROTOCOL=https:ssh:http \
        "${extra_env[@]}" "$CHROOT" --userspec=65532:65532 "$ROOT" "$@"
}
G=(git -c protocol.file.allow=never -c core.hooksPath=/dev/null -c credential.helper= -c gc.auto=0
   -c init.defaultBranch=main -c advice.detachedHead=false)
extra_env=()
rm -rf "$ROOT/tmp/home" "$ROOT/tmp/w" && mkdir -p "$ROOT/tmp/home" && chown 65532:65532 "$ROOT/tmp/home"

v="$(run git --version)" && ok "git --version: $v" || bad "git --version"
v="$(run ssh -V 2>&1)" && ok "ssh -V: $v" || bad "ssh -V: $v"
v="$(run /bin/sh -c 'echo sh works')" && ok "/bin/sh: $v" || bad "/bin/sh"

out="$(run "${G[@]}" ls-remote "http://127.0.0.1:$http_port/repo.git" 2>&1)" || true
[[ "$out" == *"$head"*"refs/heads/main"* ]] && ok "ls-remote over smart HTTP (git-remote-http)" \
    || bad "ls-remote over HTTP: $out"
if out="$(run "${G[@]}" init -q /tmp/w 2>&1 && run "${G[@]}" -C /tmp/w fetch -q --depth 1 \
        "http://127.0.0.1:$http_port/repo.git" main 2>&1 && run "${G[@]}" -C /tmp/w checkout -q --detach FETCH_HEAD 2>&1)" \
        && [[ "$(cat "$ROOT/tmp/w/README")" == "hello from the smoke test" ]]; then
    ok "init, shallow fetch, checkout over HTTP"
else
    bad "init/fetch/checkout: $out"
fi

extra_env=(GIT_SSL_CAINFO=/tmp/smoke-ca.pem)
out="$(run "${G[@]}" ls-remote "https://127.0.0.1:$https_port/repo.git" 2>&1)" || true
[[ "$out" == *"$head"*"refs/heads/main"* ]] && ok "ls-remote over HTTPS (git-remote-https, gnutls)" \
    || bad "ls-remote over HTTPS: $out"
extra_env=()
if out="$(run "${G[@]}" ls-remote "https://127.0.0.1:$https_port/repo.git" 2>&1)"; then
    bad "HTTPS with a CA outside the image's bundle was accepted"
elif [[ "$out" == *"certificate verification failed"* ]]; then
    ok "a CA outside the image's bundle is refused"
else
    bad "HTTPS with an unknown CA failed for another reason: $out"
fi
# The trust store git uses by default is the image's CA bundle: with the
# throwaway CA appended to it, the same request succeeds.
bundle="$ROOT/etc/ssl/certs/ca-certificates.crt"
cp "$bundle" "$work/bundle.orig"
cat "$work/cert.pem" >>"$bundle"
out="$(run "${G[@]}" ls-remote "https://127.0.0.1:$https_port/repo.git" 2>&1)" || true
cp "$work/bundle.orig" "$bundle"
[[ "$out" == *"$head"*"refs/heads/main"* ]] \
    && ok "HTTPS trusts /etc/ssl/certs/ca-certificates.crt by default" \
    || bad "HTTPS with the CA in the image's bundle: $out"

# As ferry-git builds it (crates/git/src/run.rs ssh_command): run by /bin/sh.
extra_env=("GIT_SSH_VARIANT=ssh"
    "GIT_SSH_COMMAND=ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile='/tmp/home/known_hosts' -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=5")
out="$(run "${G[@]}" ls-remote "ssh://git@127.0.0.1:$closed_port/repo.git" 2>&1)" || true
[[ "$out" == *"port $closed_port: Connection refused"* ]] \
    && ok "ssh:// through GIT_SSH_COMMAND (/bin/sh -> ssh): connection refused, as expected" \
    || bad "ssh:// via GIT_SSH_COMMAND: $out"
extra_env=()

rm -rf "$ROOT/tmp/w" "$ROOT/tmp/home" "$ROOT/tmp/smoke-ca.pem"
exit $fail
