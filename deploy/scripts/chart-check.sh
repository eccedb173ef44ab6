#!/usr/bin/env bash
# `make chart-check`: every offline check of deploy/helm/ferry. Exits non-zero
# on the first failing step.
#   1. helm lint --strict (default values, values-ha.yaml, the external-db example)
#   2. helm template of the same three (plus the ServiceMonitor and host-port
#      variants) into target/chart/
#   3. kubernetes-validate -k 1.33.0 --strict on every rendered manifest; a kind
#      without a schema fails unless it is a listed CRD
#   3b. the same on what ferry-k8s renders for image builds (build Jobs, their
#      Secrets, the builds namespace): `cargo run --example render_build`
#   4. checkov --framework kubernetes --skip-download, skips from
#      deploy/helm/checkov-skips.txt (each with its reason)
#   5. pytest deploy/helm/tests (rendered-output tests)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CHART=deploy/helm/ferry
OUT="${CHART_OUT:-$ROOT/target/chart}"
K8S_VERSION=1.33.0
# CRDs the chart may render that kubernetes-validate has no schema for.
ALLOWED_CRDS="monitoring.coreos.com/v1/ServiceMonitor"

step() { printf '\n==> %s\n' "$*"; }
start=$SECONDS

step "tools"
TOOLS_BIN="$(bash deploy/scripts/chart-tools.sh)"
export PATH="$TOOLS_BIN:$PATH"
export HELM="$TOOLS_BIN/helm"
helm version --short

declare -A SETS=(
    [default]=""
    [ha]="-f $CHART/values-ha.yaml"
    [external-db]="-f $CHART/examples/external-database.yaml"
)

step "helm lint --strict"
for name in default ha external-db; do
    # shellcheck disable=SC2086
    helm lint --strict --namespace ferry-system $CHART ${SETS[$name]}
done

step "helm template"
rm -rf "$OUT" && mkdir -p "$OUT"
for name in default ha external-db; do
    # shellcheck disable=SC2086
    helm template ferry $CHART --namespace ferry-system ${SETS[$name]} >"$OUT/$name.yaml"
    echo "$OUT/$name.yaml: $(grep -c '^kind:' "$OUT/$name.yaml") objects"
done
helm template ferry $CHART --namespace ferry-system \
    --set proxy.kind=DaemonSet,proxy.hostPorts.enabled=true,serviceMonitor.enabled=true,migrations.useHelmHooks=false \
    >"$OUT/variants.yaml"
echo "$OUT/variants.yaml: $(grep -c '^kind:' "$OUT/variants.yaml") objects"

# validate FILE...: kubernetes-validate --strict on each; sets failed=1 on an
# error or a kind without a schema that is not a listed CRD.
failed=0
validate() {
    local f log line kind
    for f in "$@"; do
        log="$(kubernetes-validate -k "$K8S_VERSION" --strict "$f" 2>&1)" || { echo "$log"; failed=1; continue; }
        # A missing schema is only a warning there: fail unless it is a listed CRD.
        while IFS= read -r line; do
            kind="$(sed -E 's/.*for kind ([^ ]+) with api version ([^ ]+) .*/\2\/\1/' <<<"$line")"
            if [[ " $ALLOWED_CRDS " == *" $kind "* ]]; then
                echo "allowed CRD without a schema: $kind ($(basename "$f"))"
            else
                echo "FAIL: no schema for $kind in $f (not a listed CRD)"
                failed=1
            fi
        done < <(grep "Couldn't find schema" <<<"$log" || true)
        grep -E '^(ERROR|WARN)' <<<"$log" | grep -v "Couldn't find schema" && failed=1
        echo "$(basename "$f"): $(grep -c ' passed for resource ' <<<"$log") resources valid"
    done
}

step "kubernetes-validate -k $K8S_VERSION --strict"
validate "$OUT"/*.yaml
[[ $failed == 0 ]] || { echo "kubernetes-validate failed"; exit 1; }

# Build objects go to their own directory: checkov and the chart's pytest
# read $OUT, and a build Job's rootless BuildKit container is unconfined on
# purpose (see crates/k8s/src/build.rs).
BUILDS_OUT="$OUT-builds"
step "kubernetes-validate -k $K8S_VERSION --strict: ferry-k8s build objects"
rm -rf "$BUILDS_OUT" && mkdir -p "$BUILDS_OUT"
cargo run -q -p ferry-k8s --example render_build -- "$BUILDS_OUT" >/dev/null
shopt -s nullglob
build_files=("$BUILDS_OUT"/*.yaml)
shopt -u nullglob
[[ ${#build_files[@]} -gt 0 ]] || { echo "FAIL: render_build wrote nothing into $BUILDS_OUT"; exit 1; }
validate "${build_files[@]}"
[[ $failed == 0 ]] || { echo "kubernetes-validate failed on the build objects"; exit 1; }

step "checkov"
skips=()
while IFS= read -r line; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    id="$(awk '{print $1}' <<<"$line")"
    reason="$(cut -d' ' -f2- <<<"$line" | sed -E 's/^ +//')"
    if [[ -z "$reason" || "$reason" == "$id" ]]; then
        echo "FAIL: checkov skip $id has no reason in deploy/helm/checkov-skips.txt"
        exit 1
    fi
    echo "skip ${id#resource:}: $reason"
    [[ "$id" == resource:* ]] || skips+=("$id")
done <deploy/helm/checkov-skips.txt
# Every in-template skip annotation must be listed in the file.
for id in $(grep -ho 'checkov.io/skip[0-9]*: CKV[0-9A-Z_]*' "$OUT"/*.yaml | awk '{print $2}' | sort -u); do
    grep -q "^resource:$id " deploy/helm/checkov-skips.txt \
        || { echo "FAIL: $id is skipped in a template but not listed in checkov-skips.txt"; exit 1; }
done
checkov --framework kubernetes --skip-download --quiet --compact \
    --skip-check "$(IFS=,; echo "${skips[*]}")" -d "$OUT"

step "pytest deploy/helm/tests"
# The builds namespace ferry-k8s rendered above: the chart's must carry its labels.
export FERRY_BUILDS_RENDER="$BUILDS_OUT"
(cd deploy/helm/tests && pytest -q -p no:cacheprovider)

printf '\nchart-check passed in %ss\n' "$((SECONDS - start))"
