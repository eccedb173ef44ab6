#!/usr/bin/env bash
# `make e2e`: Ferry on a real cluster, end to end. NOT run by CI: it needs a
# cluster (KUBECONFIG), the Ferry images in a registry the cluster can pull
# from, and kubectl, helm and grpcurl on PATH. It has not been run on this
# project's machines (no cluster can be installed there).
#
#   E2E_REGISTRY=registry.example/ferry-paas  (images: <registry>/ferry-api:<tag> ...)
#   E2E_TAG=0.1.0   E2E_NAMESPACE=ferry-e2e   E2E_VALUES=extra-values.yaml (optional)
#   E2E_APP_IMAGE=docker.io/traefik/whoami:v1.10  (an HTTP app listening on 80)
#
# Steps: helm install (bundled PostgreSQL) --wait; helm test; register a user,
# log in, create an organization, a project and an application service with a
# route; deploy it; curl it through the proxy (port-forwarded); helm
# uninstall, then delete what uninstall leaves behind (kept Secrets, the
# database volume, the project's namespace).
set -euo pipefail

: "${KUBECONFIG:?set KUBECONFIG to a cluster you may install into}"
: "${E2E_REGISTRY:?set E2E_REGISTRY to where the ferry-* images are (e.g. pushed with skopeo from make image)}"
for tool in kubectl helm grpcurl curl; do
    command -v "$tool" >/dev/null || { echo "e2e needs $tool on PATH"; exit 1; }
done
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NS="${E2E_NAMESPACE:-ferry-e2e}"
TAG="${E2E_TAG:-$(sed -n 's/^appVersion: "\(.*\)"/\1/p' "$ROOT/deploy/helm/ferry/Chart.yaml")}"
APP_IMAGE="${E2E_APP_IMAGE:-docker.io/traefik/whoami:v1.10}"
HOST="e2e-$RANDOM.ferry.test"
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    echo "==> uninstall"
    helm uninstall ferry -n "$NS" --wait || true
    # What uninstall leaves behind on purpose (docs/install.md).
    kubectl -n "$NS" delete secret ferry-secrets ferry-postgresql --ignore-not-found
    kubectl -n "$NS" delete pvc -l app.kubernetes.io/instance=ferry --ignore-not-found
    kubectl delete namespace -l app.kubernetes.io/managed-by=ferry --ignore-not-found --wait=false
    kubectl delete namespace "$NS" --ignore-not-found --wait=false
}
trap cleanup EXIT

echo "==> install into $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
helm install ferry "$ROOT/deploy/helm/ferry" -n "$NS" --wait --timeout 10m \
    --set "image.registry=${E2E_REGISTRY%%/*}" \
    --set "api.image.repository=${E2E_REGISTRY#*/}/ferry-api" \
    --set "proxy.image.repository=${E2E_REGISTRY#*/}/ferry-proxy" \
    --set "builder.image.repository=${E2E_REGISTRY#*/}/ferry-builder" \
    --set "scheduler.image.repository=${E2E_REGISTRY#*/}/ferry-scheduler" \
    --set "image.tag=$TAG" --set proxy.service.type=ClusterIP \
    ${E2E_VALUES:+-f "$E2E_VALUES"}
helm test ferry -n "$NS" --logs

echo "==> port-forward api and proxy"
kubectl -n "$NS" port-forward svc/ferry-api 15051:50051 >/dev/null & pids+=($!)
kubectl -n "$NS" port-forward svc/ferry-proxy 18080:80 >/dev/null & pids+=($!)
sleep 3
g() { grpcurl -plaintext ${TOKEN:+-H "authorization: Bearer $TOKEN"} -d "$2" 127.0.0.1:15051 "ferry.v1.$1"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$1"; }

echo "==> register, log in, organization, project, service, route, deploy"
g AuthService/Register '{"email":"e2e@example.com","username":"e2e","password":"correct horse battery staple"}' >/dev/null
TOKEN="$(g AuthService/Login '{"login":"e2e","password":"correct horse battery staple"}' | field '["token"]')"
ORG="$(g OrganizationService/CreateOrganization '{"name":"e2e"}' | field '["id"]')"
PROJECT="$(g ProjectService/CreateProject "{\"organizationId\":\"$ORG\",\"name\":\"e2e\"}" | field '["id"]')"
SERVICE="$(g ServiceService/CreateService "{\"projectId\":\"$PROJECT\",\"name\":\"web\",\"application\":{\"image\":\"$APP_IMAGE\"},\"ports\":[{\"name\":\"http\",\"containerPort\":80}]}" | field '["id"]')"
g RouteService/CreateRoute "{\"projectId\":\"$PROJECT\",\"hostname\":\"$HOST\",\"targets\":[{\"serviceId\":\"$SERVICE\",\"port\":80}]}" >/dev/null
DEPLOYMENT="$(g DeploymentService/Deploy "{\"serviceId\":\"$SERVICE\"}" | field '["id"]')"
for _ in $(seq 1 60); do
    status="$(g DeploymentService/GetDeployment "{\"id\":\"$DEPLOYMENT\"}" | field '["status"]')"
    echo "    deployment $DEPLOYMENT: $status"
    [[ "$status" == DEPLOYMENT_STATUS_RUNNING ]] && break
    [[ "$status" == DEPLOYMENT_STATUS_FAILED || "$status" == DEPLOYMENT_STATUS_PLANNED ]] && exit 1
    sleep 5
done

echo "==> curl through the proxy"
for _ in $(seq 1 30); do
    if curl -fsS -H "Host: $HOST" http://127.0.0.1:18080/ | tee /dev/stderr | grep -qi hostname; then
        echo "e2e passed"
        exit 0
    fi
    sleep 2
done
echo "e2e FAILED: the app did not answer through the proxy"
exit 1
