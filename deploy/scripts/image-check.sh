#!/usr/bin/env bash
# `make image-check` (after `make image`): checks the images in target/images.
#   1. reproducible: the same binaries, rebuilt into an empty buildah store,
#      give the same manifest digest for every image
#   2. small: each image <= 30 MiB compressed (the OCI archive's size)
#   3. hardened config: user 65532, no shell in the image (ferry-builder:
#      exactly dash as /bin/sh, which git needs for ssh:// remotes)
#   3b. ferry-builder's git and ssh, run from the image's files under chroot
#      as uid 65532 (deploy/scripts/builder-tools-smoke.sh): HTTP and HTTPS
#      fetches against a local git http-backend, the image's CA bundle, ssh://
#      through GIT_SSH_COMMAND
#   4. smoke test of the api image with podman (runc, cgroupfs, no network,
#      explicit ulimits; never podman's default bridge network): `--version`,
#      then `migrate up` of an SQLite file on a mounted volume, read-only root
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/images"
IMAGES="${IMAGES:-ferry-api ferry-proxy ferry-builder ferry-scheduler}"
LIMIT=$((30 * 1024 * 1024))
# Shells an image may contain, by image: none, except ferry-builder's dash.
# git runs GIT_SSH_COMMAND (which ferry-git sets for ssh:// remotes, with
# options, crates/git/src/run.rs) through /bin/sh; without a shell every
# ssh:// fetch fails with "cannot run ssh ...". Drop it once ferry-git
# starts ssh without a shell.
declare -A ALLOWED_SHELLS=([ferry-builder]="bin/sh usr/bin/dash")
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
[[ -s "$OUT/digests.txt" ]] || { echo "no images: run make image first"; exit 1; }
for pkg in podman runc skopeo; do
    dpkg -s "$pkg" >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc skopeo >/dev/null; break; }
done
fail=0
start=$SECONDS

echo "==> reproducibility: rebuild from the same binaries into an empty store"
rm -rf "$OUT-repro"
CARGO_TARGET_DIR="$(cat "$OUT/cargo-target-dir.txt")" IMAGES_OUT="$OUT-repro" SKIP_CARGO=1 IMAGES="$IMAGES" bash deploy/scripts/image-build.sh >/dev/null
for image in $IMAGES; do
    a="$(awk -v n="$image" '$1 == n { print $2 }' "$OUT/digests.txt")"
    b="$(awk -v n="$image" '$1 == n { print $2 }' "$OUT-repro/digests.txt")"
    if [[ -n "$a" && "$a" == "$b" ]]; then
        echo "ok   $image $a"
    else
        echo "FAIL $image: $a != $b"; fail=1
    fi
done
rm -rf "$OUT-repro"

echo "==> size (compressed, limit 30 MiB) and config"
for image in $IMAGES; do
    size="$(stat -c %s "$OUT/$image.oci.tar")"
    cfg="$(skopeo inspect --config "oci-archive:$OUT/$image.oci.tar")"
    user="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["config"].get("User",""))' <<<"$cfg")"
    files="$(python3 - "$OUT/$image.oci.tar" <<'PY'
import io, json, sys, tarfile
oci = tarfile.open(sys.argv[1])
blob = lambda d: oci.extractfile("blobs/sha256/" + d.split(":", 1)[1]).read()
index = json.loads(oci.extractfile("index.json").read())
manifest = json.loads(blob(index["manifests"][0]["digest"]))
for layer in manifest["layers"]:
    for member in tarfile.open(fileobj=io.BytesIO(blob(layer["digest"])), mode="r:*"):
        print(member.name.lstrip("./"), end=" ")
PY
)"
    echo "     $image: $(awk -v s="$size" 'BEGIN { printf "%.1f MiB", s / 1048576 }'), user $user, files: $files"
    ((size <= LIMIT)) || { echo "FAIL $image is larger than 30 MiB"; fail=1; }
    [[ "$user" == "65532:65532" ]] || { echo "FAIL $image runs as '$user'"; fail=1; }
    shells="$(tr ' ' '\n' <<<"$files" | grep -E '^(usr/)?bin/(sh|bash|dash|ash|busybox|zsh)$' | sort | xargs || true)"
    allowed="$(tr ' ' '\n' <<<"${ALLOWED_SHELLS[$image]:-}" | sort | xargs || true)"
    if [[ -n "$shells" && "$shells" != "$allowed" ]]; then
        echo "FAIL $image contains a shell: $shells (allowed: ${allowed:-none})"; fail=1
    elif [[ -n "$shells" ]]; then
        echo "     $image: shell $shells (allowed: git runs GIT_SSH_COMMAND through /bin/sh)"
    fi
done

if [[ " $IMAGES " == *" ferry-builder "* ]]; then
    echo "==> ferry-builder: git and ssh from the image, under chroot as uid 65532"
    root="$(mktemp -d)"
    python3 - "$OUT/ferry-builder.oci.tar" "$root" <<'PY'
import io, json, sys, tarfile
oci = tarfile.open(sys.argv[1])
blob = lambda d: oci.extractfile("blobs/sha256/" + d.split(":", 1)[1]).read()
index = json.loads(oci.extractfile("index.json").read())
manifest = json.loads(blob(index["manifests"][0]["digest"]))
for layer in manifest["layers"]:
    layer_tar = tarfile.open(fileobj=io.BytesIO(blob(layer["digest"])), mode="r:*")
    try:
        layer_tar.extractall(sys.argv[2], filter="tar")
    except TypeError:  # Python without extraction filters
        layer_tar.extractall(sys.argv[2])
PY
    if ! bash deploy/scripts/builder-tools-smoke.sh "$root" 2>&1 | sed 's/^/     /'; then
        echo "FAIL the builder's git/ssh smoke test"; fail=1
    fi
    echo "     Debian packages inside: $(awk '{ printf "%s%s", sep, $0; sep = ", " }' "$root/usr/share/ferry/builder-packages.txt")"
    rm -rf "$root"
fi

echo "==> podman smoke test of ferry-api"
P=(podman --root "$OUT/podman/root" --runroot "$OUT/podman/run" --storage-driver vfs
   --runtime runc --cgroup-manager cgroupfs --events-backend file)
RUN=(run --rm --network none --ulimit nofile=20000:20000 --ulimit nproc=4096:4096
     --read-only --cap-drop ALL --security-opt no-new-privileges)
"${P[@]}" load -q -i "$OUT/ferry-api.oci.tar" >/dev/null
ref="$("${P[@]}" images --format '{{.Repository}}:{{.Tag}}' | grep '/ferry-api:' | head -n1)"
out="$("${P[@]}" "${RUN[@]}" "$ref" --version)"
echo "     --version: $out"
[[ "$out" == "ferry-api $VERSION" ]] || { echo "FAIL --version said '$out'"; fail=1; }
if "${P[@]}" "${RUN[@]}" --entrypoint /bin/sh "$ref" -c true >/dev/null 2>&1; then
    echo "FAIL the image ran /bin/sh"; fail=1
else
    echo "     no /bin/sh: ok"
fi
data="$(mktemp -d)"
chown 65532:65532 "$data"
migrate() {
    "${P[@]}" "${RUN[@]}" -v "$data:/data" -e 'DATABASE_URL=sqlite:///data/ferry.db?mode=rwc' \
        -e FERRY_LOG_FORMAT=json "$ref" migrate "$@"
}
migrate up >"$data.log" 2>&1 || { cat "$data.log"; echo "FAIL migrate up"; fail=1; }
status="$(migrate status 2>/dev/null | tail -n1)"
echo "     migrate up, then status: $status"
[[ -s "$data/ferry.db" ]] || { echo "FAIL no database file on the volume"; fail=1; }
[[ "$(stat -c %u "$data/ferry.db")" == 65532 ]] || { echo "FAIL the database is not owned by 65532"; fail=1; }
if [[ "$status" =~ ^([0-9]+)\ of\ ([0-9]+)\ migrations\ applied$ ]] && [[ "${BASH_REMATCH[1]}" == "${BASH_REMATCH[2]}" ]]; then
    echo "     all migrations applied on the mounted volume: ok"
else
    echo "FAIL migrate status: $status"; fail=1
fi
# `serve` on the migrated volume, read-only root: health turns SERVING.
name="ferry-smoke-$$"
"${P[@]}" run -d --name "$name" --network none --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
    --read-only --cap-drop ALL --security-opt no-new-privileges -v "$data:/data" \
    -e 'DATABASE_URL=sqlite:///data/ferry.db?mode=rwc' -e "ENCRYPTION_KEY=$(printf '%064d' 7)" \
    -e FERRY_LOG_FORMAT=json "$ref" serve >/dev/null
served=0
for _ in $(seq 1 50); do
    if "${P[@]}" logs "$name" 2>&1 | grep -q 'health is SERVING'; then served=1; break; fi
    sleep 0.2
done
"${P[@]}" stop -t 10 "$name" >/dev/null 2>&1 || true
if [[ $served == 1 ]] && "${P[@]}" logs "$name" 2>&1 | grep -q 'gRPC server stopped'; then
    echo "     serve: health SERVING, then a clean stop on SIGTERM: ok"
else
    "${P[@]}" logs "$name" 2>&1 | tail -n 20
    echo "FAIL serve did not become SERVING and stop cleanly"; fail=1
fi
"${P[@]}" rm -f "$name" >/dev/null 2>&1 || true
rm -rf "$data" "$data.log"

if [[ " $IMAGES " == *" ferry-builder "* ]]; then
    echo "==> ferry-builder: git and ssh under podman (read-only root, no capabilities)"
    "${P[@]}" load -q -i "$OUT/ferry-builder.oci.tar" >/dev/null
    r="$("${P[@]}" images --format '{{.Repository}}:{{.Tag}}' | grep "/ferry-builder:" | head -n1)"
    for cmd in "git --version" "ssh -V" "git init -q /tmp/x"; do
        # shellcheck disable=SC2086
        if out="$("${P[@]}" "${RUN[@]}" --entrypoint "/usr/bin/${cmd%% *}" "$r" ${cmd#* } 2>&1)"; then
            echo "     $cmd: ok ${out:+($out)}"
        else
            echo "FAIL $cmd: $out"; fail=1
        fi
    done
fi

echo "==> every image answers --version"
for image in $IMAGES; do
    [[ "$image" == ferry-api ]] && continue
    "${P[@]}" load -q -i "$OUT/$image.oci.tar" >/dev/null
    r="$("${P[@]}" images --format '{{.Repository}}:{{.Tag}}' | grep "/$image:" | head -n1)"
    out="$("${P[@]}" "${RUN[@]}" "$r" --version 2>&1 || true)"
    echo "     $out"
    [[ "$out" == "$image $VERSION" ]] || { echo "FAIL $image --version said '$out'"; fail=1; }
done
"${P[@]}" rmi -a -f >/dev/null 2>&1 || true

echo "image-check: $([[ $fail == 0 ]] && echo passed || echo FAILED) in $((SECONDS - start)) s"
exit $fail
