"""Rendered-output tests of deploy/helm/ferry: what `helm lint`,
kubernetes-validate and checkov cannot see."""
import base64
import json
import re

import pytest
import yaml

from conftest import (CHART, ROOT, VALUE_SETS, decoded_secret_values, pod_labels,
                      pod_spec, render, render_fails, workloads)

FERRY_COMPONENTS = {"api", "proxy", "builder", "scheduler"}
# Environment variables that carry secrets: only ever from a Secret.
SECRET_ENV = {"DATABASE_URL", "ENCRYPTION_KEY", "ENCRYPTION_KEY_PREVIOUS",
              "FERRY_PROXY_FEED_TOKEN", "FERRY_BUILDER_TOKEN", "POSTGRES_PASSWORD"}
# Components that call the Kubernetes API (crates/k8s/RBAC.md, RBAC-builds.md,
# RBAC-scheduler.md).
API_CALLERS = {"api", "builder", "scheduler"}


def component(obj):
    return (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/component")


def containers(spec):
    return (spec.get("initContainers") or []) + spec["containers"]


# ---------------------------------------------------------------- hardening

def test_every_pod_is_hardened(rendered):
    name, objects = rendered
    pods = workloads(objects)
    assert pods, name
    for obj in pods:
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        spec = pod_spec(obj)
        psc = spec.get("securityContext") or {}
        assert psc.get("runAsNonRoot") is True, where
        assert psc.get("runAsUser") == 65532, where
        assert psc.get("runAsGroup") == 65532, where
        assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where
        assert spec.get("enableServiceLinks") is False, where
        assert spec.get("hostNetwork") in (None, False), where
        assert spec.get("hostPID") in (None, False) and spec.get("hostIPC") in (None, False), where
        # Only the api, the builder and the scheduler call the Kubernetes
        # API, so only their pods get a token.
        if component(obj) in API_CALLERS:
            assert spec.get("automountServiceAccountToken") is True, where
        else:
            assert spec.get("automountServiceAccountToken") is False, where
        for c in containers(spec):
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext") or {}
            assert sc.get("runAsNonRoot") is True, cw
            assert sc.get("runAsUser", psc.get("runAsUser")) == 65532, cw
            assert sc.get("readOnlyRootFilesystem") is True, cw
            assert sc.get("allowPrivilegeEscalation") is False, cw
            assert sc.get("privileged") in (None, False), cw
            assert (sc.get("capabilities") or {}).get("drop") == ["ALL"], cw
            assert not (sc.get("capabilities") or {}).get("add"), cw
            assert (sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", cw
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    assert (res.get(kind) or {}).get(r), f"{cw}: resources.{kind}.{r}"


def test_long_running_pods_have_health_probes(rendered):
    name, objects = rendered
    for obj in workloads(objects):
        if obj["kind"] in ("Job", "Pod"):
            continue
        for c in pod_spec(obj)["containers"]:
            where = f"{name}: {obj['metadata']['name']}/{c['name']}"
            assert c.get("readinessProbe") and c.get("livenessProbe"), where
            comp = component(obj)
            if comp in ("api", "builder", "scheduler"):
                # grpc.health.v1 on the service's own gRPC port.
                listen = f"FERRY_{comp.upper()}_LISTEN"
                port = int(next(e["value"] for e in c["env"] if e["name"] == listen)
                           .rsplit(":", 1)[1])
                for probe in ("readinessProbe", "livenessProbe"):
                    assert c[probe].get("grpc", {}).get("port") == port, where
            if comp == "proxy":
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", where
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", where


def test_writable_paths_are_volumes_under_a_read_only_root(rendered):
    name, objects = rendered
    for obj in workloads(objects):
        spec = pod_spec(obj)
        volumes = {v["name"] for v in spec.get("volumes") or []}
        volumes |= {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates") or []}
        for c in containers(spec):
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
            assert "/tmp" in mounts, f"{name}: {obj['metadata']['name']}/{c['name']} has no /tmp"
            assert set(mounts.values()) <= volumes, name
        if component(obj) == "proxy":
            env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
            assert env["FERRY_PROXY_STATE_DIR"] in {
                m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}


# ------------------------------------------------------- labels, selectors

def _matches(selector, labels):
    return selector and all(labels.get(k) == v for k, v in selector.items())


def test_labels_and_selectors_match(rendered):
    name, objects = rendered
    pods = workloads(objects)
    for o in objects:
        labels = o["metadata"].get("labels") or {}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{name}: {o['kind']}/{o['metadata']['name']} lacks {key}"
    for w in pods:
        if w["kind"] in ("Pod", "Job"):
            continue
        sel = w["spec"]["selector"]["matchLabels"]
        assert _matches(sel, pod_labels(w)), f"{name}: {w['metadata']['name']}"
        assert set(sel) == {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                            "app.kubernetes.io/component"}, name
        # No other workload's pods fall under this selector.
        others = [o for o in pods if o is not w and _matches(sel, pod_labels(o))]
        assert not others, f"{name}: {w['metadata']['name']} selects {others}"
    for svc in (o for o in objects if o["kind"] == "Service"):
        targets = [w for w in pods if w["kind"] != "Job" and w["kind"] != "Pod"
                   and _matches(svc["spec"]["selector"], pod_labels(w))]
        assert len(targets) == 1, f"{name}: Service {svc['metadata']['name']} -> {len(targets)}"
        ports = {p["name"] for c in pod_spec(targets[0])["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"{name}: {svc['metadata']['name']} {p}"
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        assert any(_matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(w)) for w in pods)
    for np in (o for o in objects if o["kind"] == "NetworkPolicy"):
        sel = np["spec"]["podSelector"]["matchLabels"]
        comp = sel["app.kubernetes.io/component"]
        if comp == "test":
            assert any(component(w) == "test" for w in pods)
            continue
        assert any(_matches(sel, pod_labels(w)) for w in pods), f"{name}: {np['metadata']['name']}"
        for rule in np["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                m = (peer.get("podSelector") or {}).get("matchLabels")
                if m and "app.kubernetes.io/component" in m:
                    assert any(_matches(m, pod_labels(w)) for w in pods), f"{name}: {peer}"
    for sm in (o for o in objects if o["kind"] == "ServiceMonitor"):
        svcs = [s for s in objects if s["kind"] == "Service"
                and _matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert [s["metadata"]["name"] for s in svcs] == ["ferry-proxy-admin"]


def test_every_workload_has_a_network_policy(rendered):
    name, objects = rendered
    if not any(o["kind"] == "NetworkPolicy" for o in objects):
        pytest.fail(f"{name}: NetworkPolicies are on by default")
    policies = [o["spec"]["podSelector"]["matchLabels"] for o in objects if o["kind"] == "NetworkPolicy"]
    for w in workloads(objects):
        assert any(_matches(p, pod_labels(w)) for p in policies), f"{name}: {w['metadata']['name']}"


def test_network_policies_opt_out():
    assert not [o for o in render("--set", "networkPolicy.enabled=false") if o["kind"] == "NetworkPolicy"]


# -------------------------------------------------------------------- RBAC

def rbac_md(name="RBAC.md"):
    """(rules from the YAML block, rules from the table) of crates/k8s/<name>."""
    text = (ROOT / "crates" / "k8s" / name).read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    doc = yaml.safe_load(block)
    table = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            group = cells[0].strip("`").strip('"')
            resources = sorted(r.strip().strip("`") for r in cells[1].split(","))
            verbs = sorted(v.strip() for v in cells[2].split(","))
            table.append((group, tuple(resources), tuple(verbs)))
    return doc, table


def normalize(rules):
    return sorted((r["apiGroups"][0] if r["apiGroups"][0] else "",
                   tuple(sorted(r["resources"])), tuple(sorted(r["verbs"]))) for r in rules)


def test_rbac_is_exactly_what_rbac_md_documents():
    doc, table = rbac_md()
    documented = normalize(doc["rules"])
    # The document's table and its YAML agree with each other ...
    assert sorted(table) == documented
    objects = render()
    roles = [o for o in objects if o["kind"] in ("ClusterRole", "Role")]
    # ... and the chart grants exactly that, to the api alone (the builder's
    # roles are test_builds.py's, the scheduler's test_scheduler.py's).
    api_roles = [r for r in roles if component(r) == "api"]
    assert [(r["kind"], r["metadata"]["name"]) for r in api_roles] == [("ClusterRole", "ferry-api")]
    assert {component(r) for r in roles} == {"api", "builder", "scheduler"}
    assert normalize(api_roles[0]["rules"]) == documented
    for r in api_roles[0]["rules"]:
        assert all(len(r[k]) == 1 or k != "apiGroups" for k in r)
        assert "*" not in r["verbs"] and "*" not in r["resources"]
    bindings = [o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    to_api = [b for b in bindings if b["roleRef"]["name"] == "ferry-api"]
    assert len(to_api) == 1 and to_api[0]["kind"] == "ClusterRoleBinding"
    assert to_api[0]["subjects"] == [
        {"kind": "ServiceAccount", "name": "ferry-api", "namespace": "ferry-system"}]
    # No other binding names the api's ServiceAccount.
    for b in bindings:
        if b is not to_api[0]:
            assert all(s["name"] != "ferry-api" for s in b["subjects"]), b["metadata"]["name"]
    api = next(o for o in objects if o["kind"] == "Deployment" and component(o) == "api")
    assert pod_spec(api)["serviceAccountName"] == "ferry-api"


def test_rbac_can_be_left_to_the_operator():
    objects = render("--set", "rbac.create=false")
    assert not [o for o in objects if o["kind"].endswith("Role") or o["kind"].endswith("RoleBinding")]


def test_every_service_account_disables_token_automount(rendered):
    name, objects = rendered
    for sa in (o for o in objects if o["kind"] == "ServiceAccount"):
        assert sa.get("automountServiceAccountToken") is False, f"{name}: {sa['metadata']['name']}"


# ------------------------------------------------------------------ secrets

def _env_literals(objects):
    for w in workloads(objects):
        for c in containers(pod_spec(w)):
            for e in c.get("env") or []:
                yield w, c, e


def test_no_secret_value_in_a_config_map_or_env_literal(rendered):
    name, objects = rendered
    secrets = [s for s in decoded_secret_values(objects) if len(s) >= 8]
    # The example's URL carries a password: it must end up in a Secret only.
    if name == "external-db":
        assert any("example-db-password" in s for s in secrets)
        secrets.append("example-db-password")
    for w, c, e in _env_literals(objects):
        if e["name"] in SECRET_ENV:
            assert "value" not in e and "secretKeyRef" in e.get("valueFrom", {}), \
                f"{name}: {w['metadata']['name']}/{c['name']} {e['name']}"
        for s in secrets:
            assert s not in str(e.get("value", "")), f"{name}: {e['name']} holds a secret"
        for a in c.get("args") or []:
            for s in secrets:
                assert s not in a, f"{name}: {c['name']} argument holds a secret"
    for cm in (o for o in objects if o["kind"] == "ConfigMap"):
        blob = json.dumps(cm.get("data") or {})
        for s in secrets:
            assert s not in blob, f"{name}: ConfigMap {cm['metadata']['name']} holds a secret"
    for o in objects:
        if o["kind"] != "Secret":
            blob = json.dumps(o.get("metadata", {}).get("annotations") or {})
            assert not any(s in blob for s in secrets), name


def test_generated_keys_are_kept_on_uninstall_and_not_generated_when_provided():
    objects = render()
    sec = next(o for o in objects if o["metadata"]["name"] == "ferry-secrets")
    assert sec["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    key = base64.b64decode(sec["data"]["encryption-key"])
    assert len(base64.b64decode(key)) == 32  # base64 of 32 random bytes
    assert len(base64.b64decode(sec["data"]["proxy-feed-token"])) >= 16
    assert len(base64.b64decode(sec["data"]["builder-token"])) >= 16
    objects = render(*VALUE_SETS["external-db"])
    assert not [o for o in objects if o["metadata"]["name"] == "ferry-secrets"]
    api = next(o for o in objects if o["kind"] == "Deployment" and component(o) == "api")
    env = {e["name"]: e for e in pod_spec(api)["containers"][0]["env"]}
    assert env["ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "ferry-keys", "key": "encryption-key"}
    assert env["ENCRYPTION_KEY_PREVIOUS"]["valueFrom"]["secretKeyRef"]["key"] == "encryption-key-previous"


def test_database_settings_are_validated():
    assert "set database.existingSecret" in render_fails("--set", "postgresql.enabled=false")
    assert "postgresql.enabled is true" in render_fails("--set", "database.url=postgres://u:p@h/db")


# --------------------------------------------------------------- migrations

def _hooks(objects):
    out = {}
    for o in objects:
        ann = o["metadata"].get("annotations") or {}
        if "helm.sh/hook" in ann and ann["helm.sh/hook"] != "test":
            out[(o["kind"], o["metadata"]["name"])] = ann
    return out


def test_migration_hook_runs_after_its_secret_and_service_account():
    objects = render(*VALUE_SETS["external-db"])
    hooks = _hooks(objects)
    sa = hooks[("ServiceAccount", "ferry-migrations")]
    secret = hooks[("Secret", "ferry-migrations")]
    job = hooks[("Job", "ferry-migrations")]
    # Same events; external database: before anything else is installed.
    assert sa["helm.sh/hook"] == secret["helm.sh/hook"] == job["helm.sh/hook"] == "pre-install,pre-upgrade"
    weight = lambda a: int(a["helm.sh/hook-weight"])
    assert weight(sa) < weight(job) and weight(secret) < weight(job)
    for ann in (sa, secret, job):
        assert "before-hook-creation" in ann["helm.sh/hook-delete-policy"]
    jobobj = next(o for o in objects if o["kind"] == "Job")
    spec = pod_spec(jobobj)
    assert spec["serviceAccountName"] == "ferry-migrations"
    c = spec["containers"][0]
    assert c["args"] == ["migrate", "up"]
    url = next(e for e in c["env"] if e["name"] == "DATABASE_URL")
    assert url["valueFrom"]["secretKeyRef"]["name"] == "ferry-migrations"
    # Nothing the hook needs is a regular (not yet created) resource.
    assert not ({"ENCRYPTION_KEY", "FERRY_PROXY_FEED_TOKEN", "FERRY_BUILDER_TOKEN"}
                & {e["name"] for e in c["env"]})


def test_migration_hook_with_bundled_postgresql_runs_post_install():
    objects = render()
    hooks = _hooks(objects)
    assert set(hooks) == {("ServiceAccount", "ferry-migrations"), ("Job", "ferry-migrations")}
    assert {a["helm.sh/hook"] for a in hooks.values()} == {"post-install,pre-upgrade"}
    job = next(o for o in objects if o["kind"] == "Job")
    url = next(e for e in pod_spec(job)["containers"][0]["env"] if e["name"] == "DATABASE_URL")
    # The bundled database's Secret is a regular resource: it exists post-install.
    assert url["valueFrom"]["secretKeyRef"]["name"] == "ferry-postgresql"
    assert any(o["kind"] == "Secret" and o["metadata"]["name"] == "ferry-postgresql"
               and "helm.sh/hook" not in (o["metadata"].get("annotations") or {}) for o in objects)


def test_migration_job_with_an_existing_secret_uses_it():
    objects = render(*VALUE_SETS["existing-db-secret"])
    assert ("Secret", "ferry-migrations") not in _hooks(objects)
    job = next(o for o in objects if o["kind"] == "Job")
    url = next(e for e in pod_spec(job)["containers"][0]["env"] if e["name"] == "DATABASE_URL")
    assert url["valueFrom"]["secretKeyRef"] == {"name": "my-db", "key": "dsn"}


def test_migrations_without_helm_hooks_are_plain_resources_named_by_image():
    a = render(*VALUE_SETS["no-hooks"])
    assert not _hooks(a)
    job = next(o for o in a if o["kind"] == "Job")
    assert re.fullmatch(r"ferry-migrations-[0-9a-f]{10}", job["metadata"]["name"])
    b = render("--set", "migrations.useHelmHooks=false,api.image.tag=9.9.9")
    assert next(o for o in b if o["kind"] == "Job")["metadata"]["name"] != job["metadata"]["name"]
    assert not [o for o in render("--set", "migrations.enabled=false") if o["kind"] == "Job"]


# ------------------------------------------------------------------- schema

@pytest.mark.parametrize("typo", [
    "replicsa=2",                      # top level
    "api.replicsa=2",                  # component
    "proxy.service.tpye=NodePort",     # nested
    "api.resources.requests.cpuu=1",   # resources
    "postgresql.persistence.sise=1Gi",
    "api.tolerations[0].kee=x",        # list items
])
def test_schema_refuses_an_unknown_key(typo):
    err = render_fails("--set", typo)
    assert err and "Additional property" in err, err


@pytest.mark.parametrize("bad", [
    "proxy.kind=StatefulSet",
    "api.image.digest=latest",
    "logging.format=xml",
    "database.url=mysql://x",
    "api.replicas=-1",
])
def test_schema_refuses_a_bad_value(bad):
    assert render_fails("--set", bad)


# Free-form maps whose keys are the user's (labels, annotations, selectors)
# or Kubernetes types checked after rendering by kubernetes-validate.
OPEN_OBJECTS = {"stringMap", "nodeSelector", "affinity.nodeAffinity", "affinity.podAffinity",
                "affinity.podAntiAffinity", "topologySpreadConstraint.labelSelector",
                "envVar.valueFrom", "peers.items"}


def _walk(node, path, found):
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            found.append((path, node))
        for k, v in node.items():
            if k in ("properties", "$defs"):
                for name, sub in v.items():
                    _walk(sub, f"{path}.{name}" if path else name, found)
            elif k == "items":
                _walk(v, f"{path}.items", found)
            elif k in ("oneOf", "anyOf", "allOf"):
                for sub in v:
                    _walk(sub, path, found)


def test_schema_closes_every_object():
    schema = json.loads((CHART / "values.schema.json").read_text())
    found = []
    _walk(schema, "", found)
    assert len(found) > 30
    for path, node in found:
        if path in OPEN_OBJECTS:
            assert node.get("additionalProperties") in (None, {"type": "string"}), path
            continue
        assert node.get("additionalProperties") is False, f"{path or '<root>'} is open"


def test_every_value_is_in_the_schema_and_documented():
    import values_table
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    documented = {p for p, _ in values_table.documented_keys((CHART / "values.yaml").read_text())}

    def resolve(node):
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def check(v, s, path):
        s = resolve(s)
        if path and not (isinstance(v, dict) and "properties" in s):
            # A key is documented itself or lies under a documented object.
            parts = path.split(".")
            assert any(".".join(parts[:i]) in documented for i in range(1, len(parts) + 1)), path
        if isinstance(v, dict) and "properties" in s:
            for k, sub in v.items():
                assert k in s["properties"], f"{path}.{k} not in schema"
                check(sub, s["properties"][k], f"{path}.{k}" if path else k)

    check(values, schema, "")


def test_readme_values_table_is_up_to_date():
    import values_table
    readme = (CHART / "README.md").read_text()
    assert values_table.table() in readme, "run: python3 deploy/helm/tests/values_table.py --write"


# ------------------------------------------------------------------- proxy

def test_proxy_daemonset_with_host_ports():
    objects = render(*VALUE_SETS["daemonset-hostports"])
    ds = next(o for o in objects if o["kind"] == "DaemonSet")
    ports = {p["name"]: p for p in pod_spec(ds)["containers"][0]["ports"]}
    assert ports["http"]["hostPort"] == 80 and ports["https"]["hostPort"] == 443
    assert "hostPort" not in ports["admin"] and "hostPort" not in ports["grpc"]
    assert not [o for o in objects if o["kind"] == "Deployment" and component(o) == "proxy"]


def test_ha_values_run_several_api_replicas_with_a_pdb():
    objects = render(*VALUE_SETS["ha"])
    api = next(o for o in objects if o["kind"] == "Deployment" and component(o) == "api")
    assert api["spec"]["replicas"] >= 2
    assert any(o["kind"] == "PodDisruptionBudget" and component(o) == "api" for o in objects)
    assert not [o for o in objects if o["kind"] == "StatefulSet"]  # no bundled database
    tsc = pod_spec(api)["topologySpreadConstraints"]
    assert all(t["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api" for t in tsc)


def test_otlp_endpoint_reaches_every_service():
    objects = render("--set", "otel.endpoint=http://collector:4317")
    for w in workloads(objects):
        if component(w) in FERRY_COMPONENTS | {"migrations"}:
            env = {e["name"]: e.get("value") for e in pod_spec(w)["containers"][0]["env"]}
            assert env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://collector:4317", w["metadata"]["name"]
    for w in workloads(render()):
        env = {e["name"] for c in containers(pod_spec(w)) for e in c.get("env") or []}
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env


def test_image_digest_wins_over_tag():
    objects = render("--set", "api.image.digest=sha256:" + "a" * 64 + ",image.registry=reg.example")
    api = next(o for o in objects if o["kind"] == "Deployment" and component(o) == "api")
    assert pod_spec(api)["containers"][0]["image"] == "reg.example/ferry-paas/ferry-api@sha256:" + "a" * 64
    proxy = next(o for o in objects if component(o) == "proxy" and o["kind"] == "Deployment")
    assert pod_spec(proxy)["containers"][0]["image"] == "reg.example/ferry-paas/ferry-proxy:0.1.0"


def test_helm_test_pod_checks_api_grpc_health_and_proxy_readyz():
    pod = next(o for o in render() if o["kind"] == "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = {c["name"]: " ".join(c.get("args", [])) for c in pod["spec"]["containers"]}
    assert "-addr=ferry-api:50051" in args["api-grpc-health"]
    assert "http://ferry-api:8081/healthz" in args["api-http-healthz"]
    assert "http://ferry-proxy-admin:9090/readyz" in args["proxy-readyz"]
