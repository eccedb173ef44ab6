"""Renders the chart with the real helm binary (installed by
deploy/scripts/chart-tools.sh) for the rendered-output tests."""
import base64
import functools
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "ferry"
HELM = os.environ.get("HELM") or str(ROOT / ".tools" / "bin" / "helm")
NAMESPACE = "ferry-system"

# The value files `make chart-check` renders, by name.
VALUE_SETS = {
    "default": [],
    "ha": ["-f", str(CHART / "values-ha.yaml")],
    "external-db": ["-f", str(CHART / "examples" / "external-database.yaml")],
    # Variants that switch on what the three above leave off.
    "daemonset-hostports": ["--set", "proxy.kind=DaemonSet,proxy.hostPorts.enabled=true"],
    "no-hooks": ["--set", "migrations.useHelmHooks=false"],
    "existing-db-secret": [
        "--set", "postgresql.enabled=false,database.existingSecret=my-db,database.existingSecretKey=dsn",
    ],
}


class RenderError(Exception):
    pass


@functools.lru_cache(maxsize=None)
def _render(args):
    proc = subprocess.run(
        [HELM, "template", "ferry", str(CHART), "--namespace", NAMESPACE, *args],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr)
    return proc.stdout


def render(*args):
    """The rendered objects (dicts) for `helm template` with these arguments."""
    return [d for d in yaml.safe_load_all(_render(tuple(args))) if d]


def render_fails(*args):
    """helm's error output when the render fails, else None."""
    try:
        _render(tuple(args))
    except RenderError as err:
        return str(err)
    return None


def decoded_secret_values(objects):
    out = []
    for o in objects:
        if o["kind"] == "Secret":
            out += [base64.b64decode(v).decode() for v in (o.get("data") or {}).values()]
            out += list((o.get("stringData") or {}).values())
    return out


POD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "Job", "Pod"}


def pod_spec(obj):
    if obj["kind"] == "Pod":
        return obj["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(obj):
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels") or {}
    return obj["spec"]["template"]["metadata"].get("labels") or {}


def workloads(objects):
    return [o for o in objects if o["kind"] in POD_KINDS]


@pytest.fixture(params=sorted(VALUE_SETS))
def rendered(request):
    return request.param, render(*VALUE_SETS[request.param])
