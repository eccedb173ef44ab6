#!/usr/bin/env bash
# `make image`: the four Ferry service images, without a Docker daemon.
#
#   1. static release binaries: `cargo build --release --target
#      x86_64-unknown-linux-musl` (rustup target + Debian musl-tools, installed
#      when missing), stripped
#   2. the builder's tools: Debian's git (+ git-remote-http/https), OpenSSH
#      client and dash (/bin/sh, for git's GIT_SSH_COMMAND), each with the
#      shared libraries `ldd` names, staged into builder-tools/ with the
#      packages' copyright files and a list of the Debian package versions
#   3. buildah (vfs storage, chroot isolation, --timestamp 0) builds one
#      image per service from deploy/images/Containerfile
#   4. each is written to target/images/<name>.oci.tar (OCI archive), and its
#      size and manifest digest are printed (and kept in target/images/digests.txt)
#
# Same inputs (binaries, CA bundle, Containerfile, buildah) -> same digest.
# Environment: IMAGES="ferry-api ..." to build fewer; SKIP_CARGO=1 to reuse
# the binaries already built; CARGO_TARGET_DIR as for cargo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TARGET=x86_64-unknown-linux-musl
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="${IMAGES_OUT:-$ROOT/target/images}"
IMAGES="${IMAGES:-ferry-api ferry-proxy ferry-builder ferry-scheduler}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
STORE=(--root "$OUT/storage" --runroot "$OUT/run" --storage-driver vfs)

need_apt() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if ((${#missing[@]})); then
        echo "==> apt-get install ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
need_apt buildah skopeo musl-tools ca-certificates binutils
# What the builder image copies from Debian (see stage_builder_tools).
BUILDER_PACKAGES=(git openssh-client dash)
[[ " $IMAGES " == *" ferry-builder "* ]] && need_apt "${BUILDER_PACKAGES[@]}"

start=$SECONDS
if [[ -z "${SKIP_CARGO:-}" ]]; then
    rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
    echo "==> cargo build --release --target $TARGET"
    t=$SECONDS
    pkgs=()
    for image in $IMAGES; do pkgs+=(-p "$image"); done
    cargo build --release --locked --target "$TARGET" "${pkgs[@]}" --bins
    echo "    release build: $((SECONDS - t)) s"
fi

ctx="$OUT/context"
rm -rf "$ctx" && mkdir -p "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/bin"
chmod 1777 "$ctx/rootfs/tmp"
cat >"$ctx/rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
PASSWD
cat >"$ctx/rootfs/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"
for image in $IMAGES; do
    bin="$TARGET_DIR/$TARGET/release/$image"
    [[ -x "$bin" ]] || { echo "missing $bin (run without SKIP_CARGO)"; exit 1; }
    if readelf -l "$bin" | grep -q 'INTERP'; then
        echo "$bin is dynamically linked: the image has no libc"; exit 1
    fi
    strip --strip-all -o "$ctx/bin/$image" "$bin"
    chmod 0755 "$ctx/bin/$image"
done
chmod 0644 "$ctx/rootfs/etc/passwd" "$ctx/rootfs/etc/group"

# stage_builder_tools DIR: what ferry-builder runs besides itself. ferry-git
# runs the system `git` (ls-remote, fetch, diff, checkout for build-type
# detection); git starts git-remote-http(s) from its exec path
# /usr/lib/git-core, and for ssh:// remotes runs GIT_SSH_COMMAND through
# /bin/sh, which starts `ssh`. Nothing else (no git-upload-pack, no
# git-remote-ftp, no scp/sftp). Binaries keep their Debian paths; each
# shared library `ldd` names goes to /usr/lib/x86_64-linux-gnu (a glibc
# default search dir), the loader to /lib64 (the binaries' PT_INTERP).
stage_builder_tools() {
    local dir="$1" f lib pkg
    local -A libs=() pkgs=()
    local files=(/usr/bin/git /usr/lib/git-core/git-remote-http /usr/bin/ssh /bin/dash)
    rm -rf "$dir"
    mkdir -p "$dir/usr/bin" "$dir/usr/lib/git-core" "$dir/usr/lib/x86_64-linux-gnu" "$dir/lib64" \
        "$dir/bin" "$dir/etc" "$dir/usr/share/git-core/templates" "$dir/usr/share/doc"
    install -m 0755 /usr/bin/git "$dir/usr/bin/git"
    install -m 0755 /usr/lib/git-core/git-remote-http "$dir/usr/lib/git-core/git-remote-http"
    # As in Debian: one binary for both schemes; `git` in the exec path too.
    ln -s git-remote-http "$dir/usr/lib/git-core/git-remote-https"
    ln -s ../../bin/git "$dir/usr/lib/git-core/git"
    install -m 0755 /usr/bin/ssh "$dir/usr/bin/ssh"
    install -m 0755 /bin/dash "$dir/usr/bin/dash"
    ln -s ../usr/bin/dash "$dir/bin/sh"
    for f in "${files[@]}"; do
        while read -r lib; do libs["$lib"]=1; done < <(ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
    done
    for lib in "${!libs[@]}"; do
        if [[ "$(basename "$lib")" == ld-linux-x86-64.so.2 ]]; then
            install -m 0755 "$(readlink -f "$lib")" "$dir/lib64/ld-linux-x86-64.so.2"
        else
            install -m 0644 "$(readlink -f "$lib")" "$dir/usr/lib/x86_64-linux-gnu/$(basename "$lib")"
        fi
    done
    # glibc >= 2.34 has the files and dns NSS modules built in: no libnss_*.
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$dir/etc/nsswitch.conf"
    # Which Debian packages are inside (for CVE tracking), and their licences.
    for f in "${files[@]}" "${!libs[@]}"; do
        pkg="$(dpkg -S "$f" 2>/dev/null || dpkg -S "$(readlink -f "$f")" 2>/dev/null || dpkg -S "${f#/usr}" 2>/dev/null)" \
            || { echo "no Debian package owns $f"; exit 1; }
        pkg="${pkg%%:*}"
        pkgs["$pkg"]=1
    done
    mkdir -p "$dir/usr/share/ferry"
    for pkg in "${!pkgs[@]}"; do
        dpkg-query -W -f '${Package} ${Version}\n' "$pkg"
        mkdir -p "$dir/usr/share/doc/$pkg"
        install -m 0644 "/usr/share/doc/$pkg/copyright" "$dir/usr/share/doc/$pkg/copyright"
    done | LC_ALL=C sort >"$dir/usr/share/ferry/builder-packages.txt"
    chmod 0644 "$dir/etc/nsswitch.conf" "$dir/usr/share/ferry/builder-packages.txt"
}
if [[ " $IMAGES " == *" ferry-builder "* ]]; then
    stage_builder_tools "$ctx/builder-tools"
    echo "builder tools: $(du -sh --apparent-size "$ctx/builder-tools" | cut -f1)," \
        "$(wc -l <"$ctx/builder-tools/usr/share/ferry/builder-packages.txt") Debian packages"
fi
# Content, not checkout time, decides the digest (buildah --timestamp also
# clamps what it records, this keeps the context itself stable too).
find "$ctx" -exec touch -h -d @0 {} +

mkdir -p "$OUT"
: >"$OUT/digests.txt.new"
printf '%-16s %10s %10s  %s\n' IMAGE BINARY ARCHIVE DIGEST
for image in $IMAGES; do
    t=$SECONDS
    buildah "${STORE[@]}" build --quiet --isolation chroot --timestamp 0 \
        --identity-label=false --layers=false --pull=never \
        --build-arg "VERSION=$VERSION" --target "$image" \
        -f deploy/images/Containerfile -t "localhost/ferry/$image:$VERSION" "$ctx" >/dev/null
    rm -f "$OUT/$image.oci.tar"
    buildah "${STORE[@]}" push --quiet --digestfile "$OUT/$image.digest" \
        "localhost/ferry/$image:$VERSION" "oci-archive:$OUT/$image.oci.tar:ferry/$image:$VERSION"
    digest="$(cat "$OUT/$image.digest")"
    bin_size="$(stat -c %s "$ctx/bin/$image")"
    tar_size="$(stat -c %s "$OUT/$image.oci.tar")"
    awk -v n="$image" -v b="$bin_size" -v a="$tar_size" -v d="$digest" -v t="$((SECONDS - t))" \
        'BEGIN { printf "%-16s %9.1fM %9.1fM  %s  (%ss)\n", n, b / 1048576, a / 1048576, d, t }'
    echo "$image $digest $tar_size" >>"$OUT/digests.txt.new"
done
mv "$OUT/digests.txt.new" "$OUT/digests.txt"
# Where the binaries came from, so `make image-check` rebuilds from the same ones.
echo "$TARGET_DIR" >"$OUT/cargo-target-dir.txt"
echo "images in $OUT (total $((SECONDS - start)) s)"
