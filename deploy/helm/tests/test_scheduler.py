"""ferry-scheduler and the Kubernetes API: its RBAC (exactly
crates/k8s/RBAC-scheduler.md, and exactly what crates/k8s/src/jobrun.rs,
status.rs and metrics.rs call), its mounted token and its ServiceAccount."""
import pytest

from conftest import NAMESPACE, pod_spec, render
from test_chart import component, normalize, rbac_md

# What the scheduler's code calls, verbs per (API group, resource):
EXPECTED = {
    # jobrun.rs: start_job_run (get metadata, SSA patch, create when new),
    # cancel_job_run (get metadata, delete Background), job_runs (Api::all list).
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    # job_runs (Api::all list), job_run_logs (list), watch_status (Api::all list+watch).
    ("", "pods"): {"list", "watch"},
    # job_run_logs.
    ("", "pods/log"): {"get"},
    # watch_status (Api::all list+watch).
    ("apps", "deployments"): {"list", "watch"},
    ("apps", "statefulsets"): {"list", "watch"},
    # pod_metrics: GET /apis/metrics.k8s.io/v1beta1/pods?labelSelector=...
    ("metrics.k8s.io", "pods"): {"list"},
}


def verbs_per_resource(rules):
    out = {}
    for r in rules:
        for group in r["apiGroups"]:
            for res in r["resources"]:
                out.setdefault((group, res), set()).update(r["verbs"])
    return out


def scheduler_roles(objects):
    return [o for o in objects if o["kind"] in ("Role", "ClusterRole") and component(o) == "scheduler"]


def scheduler_bindings(objects, sa="ferry-scheduler"):
    return [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
            and any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in o["subjects"])]


def scheduler_deployment(objects):
    return next(o for o in objects if o["kind"] == "Deployment" and component(o) == "scheduler")


def test_scheduler_rbac_is_exactly_what_rbac_scheduler_md_documents():
    doc, table = rbac_md("RBAC-scheduler.md")
    documented = normalize(doc["rules"])
    assert doc["kind"] == "ClusterRole"
    # The document's table and its YAML agree, and both say what the code calls.
    assert sorted(table) == documented
    assert verbs_per_resource(doc["rules"]) == EXPECTED

    objects = render()
    roles = scheduler_roles(objects)
    assert [(r["kind"], r["metadata"]["name"]) for r in roles] == [("ClusterRole", "ferry-scheduler")]
    rules = roles[0]["rules"]
    assert normalize(rules) == documented
    assert verbs_per_resource(rules) == EXPECTED
    for r in rules:
        assert len(r["apiGroups"]) == 1 and "resourceNames" not in r and "nonResourceURLs" not in r
        assert "*" not in r["verbs"] and "*" not in r["resources"]
    # Each (group, resource) in one rule only: the comments in rbac.yaml say why.
    pairs = [(r["apiGroups"][0], res) for r in rules for res in r["resources"]]
    assert len(pairs) == len(set(pairs))


def test_scheduler_creates_no_namespace_reads_no_secret_and_writes_only_jobs():
    rules = verbs_per_resource(scheduler_roles(render())[0]["rules"])
    assert ("", "namespaces") not in rules
    assert ("", "secrets") not in rules
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    assert {k for k, verbs in rules.items() if verbs & writes} == {("batch", "jobs")}
    # Runs are followed by a watch on their Jobs and pods, which only reads.
    assert {"list", "watch"} <= rules[("batch", "jobs")]


def test_scheduler_role_is_bound_to_its_service_account_only():
    objects = render()
    bindings = scheduler_bindings(objects)
    assert [(b["kind"], b["metadata"]["name"]) for b in bindings] == [
        ("ClusterRoleBinding", "ferry-scheduler")]
    b = bindings[0]
    assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "ferry-scheduler"}
    assert b["subjects"] == [{"kind": "ServiceAccount", "name": "ferry-scheduler", "namespace": NAMESPACE}]
    # Nobody else is bound to the scheduler's role.
    others = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
              and o["roleRef"]["name"] == "ferry-scheduler" and o is not b]
    assert not others


def test_scheduler_mounts_its_token(rendered):
    name, objects = rendered
    spec = pod_spec(scheduler_deployment(objects))
    assert spec["serviceAccountName"] == "ferry-scheduler", name
    # Cluster::from_env needs the in-cluster files in a pod.
    assert spec["automountServiceAccountToken"] is True, name
    sa = next(o for o in objects if o["kind"] == "ServiceAccount" and component(o) == "scheduler")
    assert sa["metadata"]["name"] == "ferry-scheduler"
    # The in-cluster configuration comes from the pod (KUBERNETES_SERVICE_HOST
    # and the token), as the api's does: nothing points it elsewhere.
    env = {e["name"] for c in spec["containers"] for e in c.get("env") or []}
    assert not env & {"KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}, name


def test_scheduler_rbac_follows_rbac_create():
    objects = render("--set", "rbac.create=false")
    assert not scheduler_roles(objects)
    assert not scheduler_bindings(objects)
    # The operator grants the same; the token is still mounted.
    assert pod_spec(scheduler_deployment(objects))["automountServiceAccountToken"] is True


@pytest.mark.parametrize("create", [True, False])
def test_scheduler_rbac_follows_its_service_account_name(create):
    objects = render("--set", f"scheduler.serviceAccount.create={str(create).lower()}"
                     ",scheduler.serviceAccount.name=jobs-runner")
    assert pod_spec(scheduler_deployment(objects))["serviceAccountName"] == "jobs-runner"
    sas = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount" and component(o) == "scheduler"]
    assert sas == (["jobs-runner"] if create else [])
    bindings = scheduler_bindings(objects, "jobs-runner")
    assert [b["roleRef"]["name"] for b in bindings] == ["ferry-scheduler"]
    assert not scheduler_bindings(objects, "ferry-scheduler")


def test_api_callers_may_reach_the_api_server():
    # The chart's NetworkPolicies restrict ingress only: none of them may
    # start restricting the egress of a component that calls the API server.
    objects = render()
    for np in (o for o in objects if o["kind"] == "NetworkPolicy"):
        assert "Egress" not in np["spec"]["policyTypes"], np["metadata"]["name"]
        assert not np["spec"].get("egress"), np["metadata"]["name"]
