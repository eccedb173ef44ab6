#!/usr/bin/env bash
# `make chart-mutants`: proves that the chart checks can fail. Each case
# breaks one thing in a template, values.yaml or the schema, runs the check
# that must catch it, expects a failure, and restores the file. Exits 1 if a
# mutant survives. Not in CI (about 6 minutes); run it after changing tests.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TOOLS_BIN="$(bash deploy/scripts/chart-tools.sh)"
export PATH="$TOOLS_BIN:$PATH" HELM="$TOOLS_BIN/helm"
T=deploy/helm/ferry/templates
PY="cd deploy/helm/tests && pytest -q -x -p no:cacheprovider"
survived=0
backup="$(mktemp)"
current=""
restore() { [[ -n "$current" ]] && cp "$backup" "$current"; current=""; }
trap restore EXIT

# mutant DESCRIPTION FILE OLD NEW COMMAND [EXPECTED]: COMMAND must fail, and
# its output must contain EXPECTED (default: a pytest failure) so that a
# mutant is only "caught" by the check meant to catch it.
mutant() {
    local desc="$1" file="$2" old="$3" new="$4" cmd="$5" expect="${6:-AssertionError}"
    cp "$file" "$backup"; current="$file"
    python3 - "$file" "$old" "$new" <<'PY'
import sys
p, old, new = sys.argv[1:]
s = open(p).read()
assert old in s, f"pattern not found in {p}: {old!r}"
open(p, "w").write(s.replace(old, new, 1))
PY
    if bash -c "$cmd" >/tmp/chart-mutant.log 2>&1; then
        echo "SURVIVED: $desc"; survived=1
    elif ! grep -qF -- "$expect" /tmp/chart-mutant.log; then
        echo "FAILED FOR ANOTHER REASON: $desc (no '$expect'):"; tail -n 5 /tmp/chart-mutant.log; survived=1
    else
        echo "caught:   $desc -> $(grep -m1 -F -- "$expect" /tmp/chart-mutant.log | sed 's/^ *//' | cut -c1-110)"
    fi
    restore
}

mutant "readOnlyRootFilesystem turned off" $T/_helpers.tpl "readOnlyRootFilesystem: true" "readOnlyRootFilesystem: false" "$PY -k hardened"
mutant "allowPrivilegeEscalation removed" $T/_helpers.tpl "allowPrivilegeEscalation: false
privileged: false" "privileged: false" "$PY -k hardened"
mutant "capabilities not all dropped" $T/_helpers.tpl 'drop: ["ALL"]' 'drop: ["NET_RAW"]' "$PY -k hardened"
mutant "enableServiceLinks left on (builder)" $T/builder.yaml "enableServiceLinks: false" "enableServiceLinks: true" "$PY -k hardened"
mutant "token mounted where unused (proxy)" $T/proxy.yaml "automountServiceAccountToken: false" "automountServiceAccountToken: true" "$PY -k hardened"
mutant "no resource limits (migrations)" deploy/helm/ferry/values.yaml "    limits:
      cpu: 500m
      memory: 256Mi
" "" "$PY -k hardened"
mutant "schema object left open" deploy/helm/ferry/values.schema.json '"additionalProperties": false' '"additionalProperties": true' "$PY -k 'schema_closes or unknown_key'"
mutant "RBAC verb not in RBAC.md" $T/rbac.yaml "verbs: [list]" "verbs: [list, watch]" "$PY -k rbac"
mutant "secret as an env literal" $T/_helpers.tpl '- name: ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "ferry.encryptionSecretName" . }}
      key: {{ include "ferry.encryptionSecretKey" . }}' '- name: ENCRYPTION_KEY
  value: "0123456789abcdef0123456789abcdef"' "$PY -k secret_value"
mutant "hook Secret after the Job" $T/migrations.yaml 'helm.sh/hook-weight: "-10"' 'helm.sh/hook-weight: "5"' "$PY -k hook"
mutant "selector of another component" $T/builder.yaml '    matchLabels:
      {{- include "ferry.selectorLabels" (list . "builder") | nindent 6 }}' '    matchLabels:
      {{- include "ferry.selectorLabels" (list . "scheduler") | nindent 6 }}' "$PY -k selectors"
mutant "unknown field in a pod spec" $T/builder.yaml "enableServiceLinks: false" "enableServiceLinks: false
      enableServiceLink: false" "helm template ferry deploy/helm/ferry -n x >/tmp/m.yaml && kubernetes-validate -k 1.33.0 --strict /tmp/m.yaml" "Additional properties are not allowed"
mutant "kind without a schema (not a CRD)" $T/builder.yaml "apiVersion: apps/v1
kind: Deployment" "apiVersion: apps/v2
kind: Deployment" "CHART_OUT=/tmp/chart-mutant-out bash deploy/scripts/chart-check.sh" "FAIL: no schema for apps/v2/Deployment"
mutant "checkov finding (privileged)" $T/_helpers.tpl "privileged: false" "privileged: true" \
    "mkdir -p /tmp/m && helm template ferry deploy/helm/ferry -n x >/tmp/m/m.yaml && checkov --framework kubernetes --skip-download --quiet --compact -c CKV_K8S_16 -d /tmp/m" "CKV_K8S_16"
mutant "checkov skip without a reason" deploy/helm/checkov-skips.txt "CKV_K8S_15  Image pull policy" "CKV_K8S_15
CKV_K8S_99  Image pull policy" "CHART_OUT=/tmp/chart-mutant-out bash deploy/scripts/chart-check.sh" "FAIL: checkov skip CKV_K8S_15 has no reason"
mutant "README values table stale" deploy/helm/ferry/values.yaml "# -- Database name." "# -- The database name." "$PY -k readme"

# Builds and push webhooks (deploy/helm/tests/test_builds.py).
mutant "api's builder token from another key" $T/api.yaml '{{- include "ferry.builderTokenEnv" . | nindent 12 }}' '- name: FERRY_BUILDER_TOKEN
              valueFrom:
                secretKeyRef:
                  name: {{ include "ferry.secretsName" . }}
                  key: proxy-feed-token' "$PY -k shared_by_api_and_builder"
mutant "builder token regenerated on every upgrade" $T/secrets.yaml 'builder-token: {{ index $data "builder-token" | default (randAlphaNum 64 | b64enc) }}' 'builder-token: {{ randAlphaNum 64 | b64enc }}' "$PY -k reads_the_existing"
mutant "hooks upstream on the gRPC port" $T/api.yaml '(.Values.clusterDomain | trimSuffix ".") $c.service.hooksPort | quote' '(.Values.clusterDomain | trimSuffix ".") $c.service.port | quote' "$PY -k hooks_upstream"
mutant "hooks port published with a LoadBalancer api" $T/api.yaml '    {{- if eq $c.service.type "ClusterIP" }}
    {{- include "ferry.apiHooksPort" . | nindent 4 }}
    {{- end }}' '    {{- include "ferry.apiHooksPort" . | nindent 4 }}' "$PY -k published"
mutant "builder URL on the api's port" $T/api.yaml 'printf "http://%s:50052"' 'printf "http://%s:50051"' "$PY -k builder_service"
mutant "builds per org not from values" $T/api.yaml 'value: {{ .Values.builds.perOrg | quote }}' 'value: "2"' "$PY -k per_org"
mutant "cluster CIDRs not passed to the builder" $T/builder.yaml '- name: FERRY_BUILDER_CLUSTER_CIDRS' '- name: FERRY_BUILDER_CLUSTER_CIDR' "$PY -k builder_defaults"
mutant "registry credential mounted writable" $T/builder.yaml '              mountPath: /etc/ferry/registry
              readOnly: true' '              mountPath: /etc/ferry/registry' "$PY -k builder_env_from_values"
mutant "builder work dir not a volume" $T/builder.yaml '            - name: work
              mountPath: /var/lib/ferry/builder/work' '' "$PY -k work_dir"
mutant "builder pod seccomp Unconfined" $T/builder.yaml '          securityContext:
            {{- include "ferry.containerSecurityContext" . | nindent 12 }}' '          securityContext:
            {{- include "ferry.containerSecurityContext" . | replace "RuntimeDefault" "Unconfined" | nindent 12 }}' "$PY -k unconfined_nowhere"
mutant "builds settings not validated" $T/builder.yaml '{{- include "ferry.validateBuilds" . -}}' '' "$PY -k builds_settings_are_validated"
mutant "builder Role verb missing (RBAC-builds.md)" $T/rbac.yaml '    resources: [jobs]
    verbs: [get, list, watch, create, patch, delete]' '    resources: [jobs]
    verbs: [get, list, watch, create, patch]' "$PY -k rbac_builds"
mutant "builder may patch every namespace" $T/rbac.yaml '    resourceNames: [{{ .Values.builds.namespace | quote }}]
' '' "$PY -k rbac_builds"
mutant "builds namespace Pod Security baseline" $T/builds-namespace.yaml '"pod-security.kubernetes.io/enforce" "privileged"' '"pod-security.kubernetes.io/enforce" "baseline"' "$PY -k builds_namespace_is_labelled"
mutant "builds namespace managed by Helm (builder refuses it)" $T/builds-namespace.yaml '{{- $_ := set $labels "app.kubernetes.io/managed-by" "ferry" }}' '' "$PY -k builds_namespace_is_labelled"
mutant "http-hooks open to every pod" $T/networkpolicies.yaml '        - port: http-hooks
          protocol: TCP
      from:
        {{- include "ferry.peer" (list . "proxy") | nindent 8 }}
        {{- include "ferry.peer" (list . "test") | nindent 8 }}' '        - port: http-hooks
          protocol: TCP' "$PY -k http_listener"
mutant "builder reachable from the proxy" $T/networkpolicies.yaml '      from:
        {{- include "ferry.peer" (list . "api") | nindent 8 }}
---
# scheduler' '      from:
        {{- include "ferry.peer" (list . "api") | nindent 8 }}
        {{- include "ferry.peer" (list . "proxy") | nindent 8 }}
---
# scheduler' "$PY -k only_the_api_reaches_the_builder"

# The scheduler's RBAC (deploy/helm/tests/test_scheduler.py).
mutant "scheduler token not mounted" $T/scheduler.yaml "automountServiceAccountToken: true" "automountServiceAccountToken: false" "$PY -k mounts_its_token"
mutant "scheduler may watch Jobs (RBAC-scheduler.md)" $T/rbac.yaml '    resources: [jobs]
    verbs: [get, list, create, patch, delete]' '    resources: [jobs]
    verbs: [get, list, watch, create, patch, delete]' "$PY -k rbac_scheduler"
mutant "scheduler cannot read run logs" $T/rbac.yaml '  # `job_run_logs` reads the newest pod'"'"'s log (the kubelet log endpoint).
  - apiGroups: [""]
    resources: [pods/log]
    verbs: [get]
' '' "$PY -k rbac_scheduler"
mutant "scheduler may create namespaces" $T/rbac.yaml '  - apiGroups: [metrics.k8s.io]' '  - apiGroups: [""]
    resources: [namespaces]
    verbs: [create]
  - apiGroups: [metrics.k8s.io]' "$PY -k creates_no_namespace"
mutant "scheduler role bound to the api's account" $T/rbac.yaml '    name: {{ include "ferry.serviceAccountName" (list . "scheduler") }}' '    name: {{ include "ferry.serviceAccountName" (list . "api") }}' "$PY -k bound_to_its_service_account"

rm -rf /tmp/m /tmp/chart-mutant-out "$backup"
exit $survived
