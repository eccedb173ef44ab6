"""Builds and push webhooks in the chart: the api's HTTP listener and its
route for the proxies, the builder's settings, the token the two share, the
builder's RBAC (exactly crates/k8s/RBAC-builds.md), the builds namespace
(labelled as ferry-k8s renders it) and the network policies between them."""
import base64
import os
from pathlib import Path

import pytest
import yaml

from conftest import NAMESPACE, VALUE_SETS, pod_labels, pod_spec, render, render_fails
from test_chart import component, normalize, rbac_md

BUILDS_NS = "ferry-builds"


def deployment(objects, comp):
    return next(o for o in objects if o["kind"] == "Deployment" and component(o) == comp)


def container(objects, comp):
    return pod_spec(deployment(objects, comp))["containers"][0]


def env(objects, comp):
    """name -> value (a literal) or the valueFrom dict."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects, comp)["env"]}


def service(objects, name):
    return next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == name)


def _selects(svc, obj):
    sel = svc["spec"]["selector"]
    return all(pod_labels(obj).get(k) == v for k, v in sel.items())


# ------------------------------------------------------ api: HTTP listener

def test_api_serves_http_hooks_on_8081():
    objects = render()
    c = container(objects, "api")
    ports = {p["name"]: p for p in c["ports"]}
    assert ports["http-hooks"]["containerPort"] == 8081
    assert ports["http-hooks"]["protocol"] == "TCP"
    assert ports["grpc"]["containerPort"] == 50051
    e = env(objects, "api")
    assert e["FERRY_API_HTTP_LISTEN"] == "0.0.0.0:8081"
    assert e["FERRY_API_LISTEN"] == "0.0.0.0:50051"


@pytest.mark.parametrize("name", ["default", "ha", "external-db"])
def test_hooks_upstream_is_a_cluster_ip_service_of_the_api_on_the_hooks_port(name):
    objects = render(*VALUE_SETS[name])
    upstream = env(objects, "api")["FERRY_API_HOOKS_UPSTREAM"]
    host, port = upstream.rsplit(":", 1)
    svc_name, ns, svc, domain = host.split(".", 3)
    assert (ns, svc, domain) == (NAMESPACE, "svc", "cluster.local"), upstream
    svc_obj = service(objects, svc_name)
    assert svc_obj["spec"]["type"] == "ClusterIP", "the HTTP listener must never be published"
    assert _selects(svc_obj, deployment(objects, "api"))
    hooks = [p for p in svc_obj["spec"]["ports"] if p["name"] == "http-hooks"]
    assert len(hooks) == 1 and hooks[0]["port"] == int(port) == 8081
    assert hooks[0]["targetPort"] == "http-hooks"
    # No Service other than that one carries the listener.
    others = [s["metadata"]["name"] for s in objects if s["kind"] == "Service"
              and s is not svc_obj and any(p.get("targetPort") == "http-hooks" for p in s["spec"]["ports"])]
    assert not others


def test_api_service_exposes_the_hooks_port_and_a_published_api_does_not():
    svc = service(render(), "ferry-api")
    assert svc["spec"]["type"] == "ClusterIP"
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"grpc": 50051, "http-hooks": 8081}
    objects = render("--set", "api.service.type=LoadBalancer")
    assert [p["name"] for p in service(objects, "ferry-api")["spec"]["ports"]] == ["grpc"]
    assert env(objects, "api")["FERRY_API_HOOKS_UPSTREAM"] == \
        "ferry-api-hooks.ferry-system.svc.cluster.local:8081"
    assert service(objects, "ferry-api-hooks")["spec"]["type"] == "ClusterIP"


def test_hooks_port_and_cluster_domain_are_values():
    objects = render("--set", "api.service.hooksPort=9000,clusterDomain=k8s.example.")
    assert env(objects, "api")["FERRY_API_HOOKS_UPSTREAM"] == "ferry-api.ferry-system.svc.k8s.example:9000"
    assert env(objects, "api")["FERRY_BUILDER_URL"] == "http://ferry-builder.ferry-system.svc.k8s.example:50052"
    hooks = next(p for p in service(objects, "ferry-api")["spec"]["ports"] if p["name"] == "http-hooks")
    assert hooks["port"] == 9000 and hooks["targetPort"] == "http-hooks"
    # The container still listens on 8081: only the Service port moves.
    assert env(objects, "api")["FERRY_API_HTTP_LISTEN"] == "0.0.0.0:8081"


# ------------------------------------------------------- api -> builder

def test_api_reaches_the_builder_service():
    objects = render()
    url = env(objects, "api")["FERRY_BUILDER_URL"]
    assert url == "http://ferry-builder.ferry-system.svc.cluster.local:50052"
    svc = service(objects, url.split("//")[1].split(".")[0])
    assert _selects(svc, deployment(objects, "builder"))
    assert {p["port"] for p in svc["spec"]["ports"]} == {50052}
    assert env(objects, "builder")["FERRY_BUILDER_LISTEN"] == "0.0.0.0:50052"


def test_builds_per_org_comes_from_values():
    assert env(render(), "api")["FERRY_BUILDS_PER_ORG"] == "2"
    assert env(render("--set", "builds.perOrg=7"), "api")["FERRY_BUILDS_PER_ORG"] == "7"
    assert "FERRY_BUILDS_PER_ORG" not in env(render(), "builder")


def test_build_resources_default_from_values_on_the_api():
    # The api sends them with every build (organization limits over these
    # defaults); the builder's own resource flags stay unset.
    api = env(render(), "api")
    assert (api["FERRY_API_BUILD_CPU"], api["FERRY_API_BUILD_MEMORY"]) == ("2", "4Gi")
    api = env(render("--set", "builds.cpu=1500m,builds.memory=6Gi"), "api")
    assert (api["FERRY_API_BUILD_CPU"], api["FERRY_API_BUILD_MEMORY"]) == ("1500m", "6Gi")
    assert env(render("--set", "builds.cpu=3"), "api")["FERRY_API_BUILD_CPU"] == "3"
    builder = env(render(), "builder")
    assert not any(k.startswith("FERRY_API_BUILD") for k in builder), builder


# ------------------------------------------------------------ the token

def test_builder_token_is_one_generated_secret_shared_by_api_and_builder():
    objects = render()
    api, builder = env(objects, "api")["FERRY_BUILDER_TOKEN"], env(objects, "builder")["FERRY_BUILDER_TOKEN"]
    assert api == builder == {"secretKeyRef": {"name": "ferry-secrets", "key": "builder-token"}}
    sec = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "ferry-secrets")
    token = base64.b64decode(sec["data"]["builder-token"]).decode()
    assert len(token) >= 16
    # Kept across upgrades (lookup) and uninstalls, like the other generated keys.
    assert sec["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert token != base64.b64decode(sec["data"]["proxy-feed-token"]).decode()
    # Nothing else gets it.
    for w in objects:
        if w["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job", "Pod") and component(w) not in ("api", "builder"):
            names = {e["name"] for c in pod_spec(w)["containers"] for e in c.get("env") or []}
            assert "FERRY_BUILDER_TOKEN" not in names, w["metadata"]["name"]


def test_builder_token_generation_reads_the_existing_value_back():
    # The lookup of the existing Secret is what keeps the token across
    # upgrades: same pattern as the proxy feed token.
    text = (Path(__file__).resolve().parents[1] / "ferry" / "templates" / "secrets.yaml").read_text()
    assert 'builder-token: {{ index $data "builder-token" | default (randAlphaNum 64 | b64enc) }}' in text
    assert '(lookup "v1" "Secret" .Release.Namespace $name)' in text


def test_builder_token_from_an_existing_secret():
    objects = render("--set", "builderToken.existingSecret=my-tokens,builderToken.existingSecretKey=bt")
    want = {"secretKeyRef": {"name": "my-tokens", "key": "bt"}}
    assert env(objects, "api")["FERRY_BUILDER_TOKEN"] == want
    assert env(objects, "builder")["FERRY_BUILDER_TOKEN"] == want
    sec = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "ferry-secrets")
    assert "builder-token" not in sec["data"] and "encryption-key" in sec["data"]
    # All three from existing Secrets: no generated Secret at all.
    objects = render(*VALUE_SETS["external-db"])
    assert not [o for o in objects if o["metadata"]["name"] == "ferry-secrets"]
    assert env(objects, "builder")["FERRY_BUILDER_TOKEN"] == \
        {"secretKeyRef": {"name": "ferry-keys", "key": "builder-token"}}


# ------------------------------------------------------------- the builder

def test_builder_defaults():
    objects = render()
    e = env(objects, "builder")
    assert e["FERRY_BUILDER_NAMESPACE"] == BUILDS_NS
    assert e["FERRY_BUILDER_WORK_DIR"] == "/var/lib/ferry/builder/work"
    assert e.get("FERRY_BUILDER_CLUSTER_CIDRS") == \
        "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"
    # Unset values are not passed at all (the binary's own defaults apply).
    for absent in ("FERRY_BUILDER_REGISTRY", "FERRY_BUILDER_REGISTRY_AUTH_FILE", "FERRY_BUILDER_ALLOW_HTTP_GIT"):
        assert absent not in e
    assert "registry-auth" not in {v["name"] for v in pod_spec(deployment(objects, "builder"))["volumes"]}


def test_builder_env_from_values():
    objects = render("--set", "builds.registry=registry.example.com/ferry,builds.registryAuthSecret=push-creds,"
                     "builds.namespace=builds-x,builds.clusterCidrs={10.42.0.0/16,fd00::/8},builds.allowHttpGit=true")
    e = env(objects, "builder")
    assert e["FERRY_BUILDER_REGISTRY"] == "registry.example.com/ferry"
    assert e["FERRY_BUILDER_NAMESPACE"] == "builds-x"
    assert e["FERRY_BUILDER_CLUSTER_CIDRS"] == "10.42.0.0/16,fd00::/8"
    assert e["FERRY_BUILDER_ALLOW_HTTP_GIT"] == "true"
    # The push credential: the user's dockerconfigjson Secret, read-only, as a file.
    spec = pod_spec(deployment(objects, "builder"))
    vol = next(v for v in spec["volumes"] if v["name"] == "registry-auth")
    assert vol["secret"]["secretName"] == "push-creds"
    assert vol["secret"]["items"] == [{"key": ".dockerconfigjson", "path": "config.json"}]
    assert vol["secret"]["defaultMode"] == 0o440
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "registry-auth")
    assert mount.get("readOnly") is True
    assert e["FERRY_BUILDER_REGISTRY_AUTH_FILE"] == mount["mountPath"] + "/config.json"
    # The namespace follows everywhere: Namespace, Role, RoleBinding, ClusterRole.
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == ["builds-x"]
    for o in objects:
        if o["kind"] in ("Role", "RoleBinding"):
            assert o["metadata"]["namespace"] == "builds-x"
    cr = next(o for o in objects if o["kind"] == "ClusterRole" and component(o) == "builder")
    assert cr["rules"][0]["resourceNames"] == ["builds-x"]


def test_builder_work_dir_and_tmp_are_size_limited_empty_dirs():
    objects = render("--set", "builder.workDirSizeLimit=10Gi,builder.tmpSizeLimit=512Mi")
    spec = pod_spec(deployment(objects, "builder"))
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    work = env(objects, "builder")["FERRY_BUILDER_WORK_DIR"]
    assert work in mounts, f"{work} is on the (read-only) root filesystem"
    assert vols[mounts[work]]["emptyDir"] == {"sizeLimit": "10Gi"}
    assert vols[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "512Mi"}
    # Writable paths are volumes: the root filesystem stays read-only.
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_builder_pod_is_hardened_and_unconfined_nowhere():
    for name in ("default", "external-db"):
        objects = render(*VALUE_SETS[name])
        spec = pod_spec(deployment(objects, "builder"))
        psc = spec.get("securityContext") or {}
        assert psc.get("seccompProfile") == {"type": "RuntimeDefault"}
        assert psc.get("runAsNonRoot") is True
        sc = spec["containers"][0].get("securityContext") or {}
        assert sc.get("allowPrivilegeEscalation") is False and sc.get("privileged") is False
        assert sc.get("capabilities") == {"drop": ["ALL"]}
        assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}
        assert sc.get("readOnlyRootFilesystem") is True and sc.get("runAsNonRoot") is True
        assert "appArmorProfile" not in sc and "appArmorProfile" not in psc
        # The chart renders no unconfined profile at all: build pods are the
        # builder's, in the builds namespace.
        assert "Unconfined" not in yaml.safe_dump_all(objects), name
        assert spec.get("automountServiceAccountToken") is True
        assert spec.get("serviceAccountName") == "ferry-builder"


@pytest.mark.parametrize("bad, message", [
    ("builds.namespace=ferry-system", "must not be the release namespace"),
    ("builds.registryAuthSecret=push-creds", "without builds.registry"),
])
def test_builds_settings_are_validated(bad, message):
    err = render_fails("--set", bad)
    assert err and message in err, err


@pytest.mark.parametrize("bad", [
    "builds.registry=https://registry.example.com/ferry",
    "builds.namespace=Ferry_Builds",
    "builds.perOrg=0",
    "builds.perOrg=51",
    "builds.cpu=lots",
    "builds.cpu=2Gi",
    "builds.memory=4GB",
    "builds.memory=lots",
    "builds.clusterCidrs={not-a-cidr}",
    "builds.allowHttpGit=yes",
    "api.service.hooksPort=0",
    "builder.workDirSizeLimit=lots",
])
def test_schema_refuses_bad_build_values(bad):
    assert render_fails("--set", bad), bad


# --------------------------------------------------------- builds namespace

# What ferry-k8s's `builds_namespace` puts on the Namespace
# (crates/k8s/src/build/namespace.rs). The builder re-applies that object
# and refuses one without these labels (ownership check).
K8S_NAMESPACE_LABELS = {
    "app.kubernetes.io/managed-by": "ferry",
    "app.kubernetes.io/component": "builds",
    "pod-security.kubernetes.io/enforce": "privileged",
    "pod-security.kubernetes.io/warn": "baseline",
    "pod-security.kubernetes.io/audit": "baseline",
}
# What the chart may add on top (Helm bookkeeping, never a policy).
CHART_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance",
                     "app.kubernetes.io/version", "app.kubernetes.io/part-of"}


def builds_namespace(objects):
    nss = [o for o in objects if o["kind"] == "Namespace"]
    assert len(nss) == 1, [o["metadata"]["name"] for o in nss]
    return nss[0]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_builds_namespace_is_labelled_as_ferry_k8s_renders_it(name):
    ns = builds_namespace(render(*VALUE_SETS[name]))
    labels = ns["metadata"]["labels"]
    assert {k: labels.get(k) for k in K8S_NAMESPACE_LABELS} == K8S_NAMESPACE_LABELS
    assert set(labels) - set(K8S_NAMESPACE_LABELS) <= CHART_ONLY_LABELS
    assert "namespace" not in ns["metadata"]


def test_builds_namespace_labels_match_ferry_k8s_render():
    """Against ferry-k8s's own render (`cargo run -p ferry-k8s --example
    render_build`, which `make chart-check` runs first and names in
    FERRY_BUILDS_RENDER); the constant above is checked without it."""
    where = os.environ.get("FERRY_BUILDS_RENDER")
    if not where:
        pytest.skip("FERRY_BUILDS_RENDER is not set (make chart-check sets it)")
    docs = [d for d in yaml.safe_load_all((Path(where) / "builds-namespace.yaml").read_text()) if d]
    k8s_ns = next(d for d in docs if d["kind"] == "Namespace")
    assert k8s_ns["metadata"]["labels"] == K8S_NAMESPACE_LABELS
    chart_ns = builds_namespace(render())
    assert chart_ns["metadata"]["name"] == k8s_ns["metadata"]["name"] == BUILDS_NS


# ---------------------------------------------------------------- RBAC

def test_builder_rbac_is_exactly_what_rbac_builds_md_documents():
    doc, table = rbac_md("RBAC-builds.md")
    documented = normalize(doc["rules"])
    assert doc["kind"] == "Role"
    # The table lists the Role's rules plus the namespaces row (cluster-scoped).
    ns_rows = [r for r in table if r[1] == ("namespaces",)]
    assert len(ns_rows) == 1
    assert sorted(r for r in table if r not in ns_rows) == documented

    objects = render()
    builder_roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole") and component(o) == "builder"]
    assert sorted((r["kind"], r["metadata"]["name"]) for r in builder_roles) == \
        [("ClusterRole", "ferry-builder"), ("Role", "ferry-builder")]
    role = next(r for r in builder_roles if r["kind"] == "Role")
    assert role["metadata"]["namespace"] == BUILDS_NS
    assert normalize(role["rules"]) == documented
    for r in role["rules"]:
        assert len(r["apiGroups"]) == 1 and "resourceNames" not in r
        assert "*" not in r["verbs"] and "*" not in r["resources"]

    # Cluster scope: only get/patch of the builds Namespace, by name. The
    # chart creates it, so `create` (from the documented row) is not needed.
    cluster = next(r for r in builder_roles if r["kind"] == "ClusterRole")
    assert cluster["rules"] == [{"apiGroups": [""], "resources": ["namespaces"],
                                 "resourceNames": [BUILDS_NS], "verbs": ["get", "patch"]}]
    assert set(cluster["rules"][0]["verbs"]) <= set(ns_rows[0][2])

    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and any(s["name"] == "ferry-builder" for s in o["subjects"])]
    assert sorted((b["kind"], b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
                  for b in bindings) == [
        ("ClusterRoleBinding", "ClusterRole", "ferry-builder", None),
        ("RoleBinding", "Role", "ferry-builder", BUILDS_NS)]
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "ferry-builder", "namespace": NAMESPACE}]


def test_builder_rbac_follows_rbac_create():
    objects = render("--set", "rbac.create=false")
    assert not [o for o in objects if "Role" in o["kind"]]
    # The namespace is still the chart's (its labels are policy, not RBAC).
    assert builds_namespace(objects)["metadata"]["name"] == BUILDS_NS


# ------------------------------------------------------- network policies

def _policy(objects, comp):
    return next(o for o in objects if o["kind"] == "NetworkPolicy" and component(o) == comp)


def _peers(rule):
    return sorted(p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule.get("from") or [])


@pytest.mark.parametrize("name", ["default", "external-db"])
def test_only_the_proxies_and_helm_test_reach_the_api_http_listener(name):
    objects = render(*VALUE_SETS[name])
    pol = _policy(objects, "api")
    rules = [r for r in pol["spec"]["ingress"] if any(p["port"] == "http-hooks" for p in r["ports"])]
    assert len(rules) == 1
    assert rules[0]["ports"] == [{"port": "http-hooks", "protocol": "TCP"}]
    assert _peers(rules[0]) == ["proxy", "test"]
    # The gRPC rule does not open the HTTP port.
    for r in pol["spec"]["ingress"]:
        if r is not rules[0]:
            assert [p["port"] for p in r["ports"]] == ["grpc"]


def test_only_the_api_reaches_the_builder():
    pol = _policy(render(), "builder")
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    assert len(pol["spec"]["ingress"]) == 1
    rule = pol["spec"]["ingress"][0]
    assert rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert _peers(rule) == ["api"]
    assert pol["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "builder"


def test_the_chart_leaves_the_builds_namespace_policies_to_the_builder():
    # ferry-k8s renders them with the CIDRs the builder is given; a second
    # copy from Helm would fight over them.
    objects = render()
    assert not [o for o in objects if o["kind"] == "NetworkPolicy"
                and o["metadata"].get("namespace") == BUILDS_NS]
