"""ACME on ferry-scheduler: the FERRY_ACME_* environment the chart renders
from scheduler.acme (crates/scheduler/src/args.rs names the variables),
secrets only by reference, the root CA mounted where the variable points."""
import pytest

from conftest import pod_spec, render, render_fails
from test_chart import component

DIRECTORY = "scheduler.acme.directory=https://acme.example/dir"


def scheduler_container(objects):
    dep = next(o for o in objects if o["kind"] == "Deployment" and component(o) == "scheduler")
    spec = pod_spec(dep)
    return spec, next(c for c in spec["containers"] if c["name"] == "scheduler")


def acme_env(objects):
    _, c = scheduler_container(objects)
    return {e["name"]: e for e in c["env"] if e["name"].startswith("FERRY_ACME_")}


def test_acme_is_off_until_a_directory_is_set():
    assert acme_env(render()) == {}
    # DNS settings alone turn nothing on.
    assert acme_env(render("--set", "scheduler.acme.dns.provider=cloudflare")) == {}


def test_cloudflare_token_comes_from_a_secret_and_the_root_ca_is_mounted():
    objects = render("--set", ",".join([
        DIRECTORY,
        "scheduler.acme.contact=mailto:ops@example.com",
        "scheduler.acme.rootCA.secretName=test-ca",
        "scheduler.acme.dns.provider=cloudflare",
        "scheduler.acme.dns.cloudflare.apiTokenSecretName=cf-token",
        "scheduler.acme.dns.cloudflare.zoneId=zone-1",
    ]))
    env = acme_env(objects)
    assert env["FERRY_ACME_DIRECTORY"]["value"] == "https://acme.example/dir"
    assert env["FERRY_ACME_CONTACT"]["value"] == "mailto:ops@example.com"
    assert env["FERRY_ACME_DNS_PROVIDER"]["value"] == "cloudflare"
    assert env["FERRY_ACME_CLOUDFLARE_ZONE_ID"]["value"] == "zone-1"
    token = env["FERRY_ACME_CLOUDFLARE_API_TOKEN"]
    assert "value" not in token
    assert token["valueFrom"]["secretKeyRef"] == {"name": "cf-token", "key": "api-token"}
    assert "FERRY_ACME_DNS_SERVER" not in env
    spec, c = scheduler_container(objects)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "acme-root-ca")
    assert mount["mountPath"] == env["FERRY_ACME_ROOT_CA"]["value"]
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == "acme-root-ca")
    assert volume["secret"]["secretName"] == "test-ca"
    assert mount["subPath"] == volume["secret"]["items"][0]["path"] == "ca.pem"


def test_rfc2136_with_a_tsig_secret_reference():
    env = acme_env(render("--set", ",".join([
        DIRECTORY,
        "scheduler.acme.dns.rfc2136.server=10.0.0.53:53",
        "scheduler.acme.dns.rfc2136.zone=example.com",
        "scheduler.acme.dns.rfc2136.tsigKeyName=ferry",
        "scheduler.acme.dns.rfc2136.tsigSecretName=tsig",
    ])))
    assert env["FERRY_ACME_DNS_PROVIDER"]["value"] == "rfc2136"
    assert env["FERRY_ACME_DNS_SERVER"]["value"] == "10.0.0.53:53"
    assert env["FERRY_ACME_DNS_ZONE"]["value"] == "example.com"
    assert env["FERRY_ACME_DNS_TSIG_NAME"]["value"] == "ferry"
    assert env["FERRY_ACME_DNS_TSIG_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "tsig", "key": "secret"}
    assert "FERRY_ACME_CLOUDFLARE_API_TOKEN" not in env


@pytest.mark.parametrize("settings, error", [
    ("scheduler.acme.dns.provider=cloudflare", "apiTokenSecretName"),
    ("scheduler.acme.dns.rfc2136.server=10.0.0.53:53", "rfc2136.zone"),
    ("scheduler.acme.dns.provider=route53", "provider"),
    ("scheduler.acme.dns.cloudflare.apiToken=inline", "apiToken"),
])
def test_unusable_acme_settings_fail_the_render(settings, error):
    out = render_fails("--set", f"{DIRECTORY},{settings}")
    assert out is not None and error in out, out
