"""Notification settings in the chart: the scheduler's delivery flags, the
private-targets switch on ferry-api and ferry-scheduler, and the SMTP relay
CA (notifications.smtpCa) mounted read-only into both as FERRY_SMTP_CA_FILE."""
import pytest

from conftest import pod_spec, render, render_fails
from test_chart import component

CA_FILE = "/etc/ferry/smtp-ca/ca.crt"


def deployment(objects, name):
    return next(o for o in objects if o["kind"] == "Deployment" and component(o) == name)


def env(objects, name):
    c = pod_spec(deployment(objects, name))["containers"][0]
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def test_scheduler_gets_every_delivery_flag_with_the_binarys_defaults():
    e = env(render(), "scheduler")
    assert {k: v for k, v in e.items() if k.startswith("FERRY_NOTIFICATIONS_")} == {
        "FERRY_NOTIFICATIONS_INTERVAL_MS": "1000",
        "FERRY_NOTIFICATIONS_TIMEOUT_SECS": "10",
        "FERRY_NOTIFICATIONS_MAX_ATTEMPTS": "8",
        "FERRY_NOTIFICATIONS_BACKOFF_MS": "10000",
        "FERRY_NOTIFICATIONS_CONCURRENCY": "8",
        "FERRY_NOTIFICATIONS_RETENTION_DAYS": "30",
        "FERRY_NOTIFICATIONS_ALLOW_PRIVATE_TARGETS": "false",
    }


def test_delivery_flags_and_private_targets_follow_the_values():
    objects = render("--set", "scheduler.notifications.retentionDays=0,"
                     "scheduler.notifications.intervalMs=250,notifications.allowPrivateTargets=true")
    e = env(objects, "scheduler")
    assert e["FERRY_NOTIFICATIONS_RETENTION_DAYS"] == "0"
    assert e["FERRY_NOTIFICATIONS_INTERVAL_MS"] == "250"
    for name in ("api", "scheduler"):
        assert env(objects, name)["FERRY_NOTIFICATIONS_ALLOW_PRIVATE_TARGETS"] == "true"


def test_without_a_smtp_ca_nothing_is_mounted():
    objects = render()
    for name in ("api", "scheduler"):
        assert "FERRY_SMTP_CA_FILE" not in env(objects, name)
        spec = pod_spec(deployment(objects, name))
        assert all(v["name"] != "smtp-ca" for v in spec["volumes"])


def test_the_smtp_ca_secret_is_mounted_read_only_into_api_and_scheduler():
    objects = render("--set", "notifications.smtpCa.secretName=relay-ca,notifications.smtpCa.key=pem")
    for name in ("api", "scheduler"):
        spec = pod_spec(deployment(objects, name))
        assert env(objects, name)["FERRY_SMTP_CA_FILE"] == CA_FILE
        volume = next(v for v in spec["volumes"] if v["name"] == "smtp-ca")
        assert volume["secret"] == {"secretName": "relay-ca", "items": [{"key": "pem", "path": "ca.crt"}]}
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "smtp-ca")
        assert mount == {"name": "smtp-ca", "mountPath": "/etc/ferry/smtp-ca", "readOnly": True}


@pytest.mark.parametrize("setting", [
    "scheduler.notifications.intervalMs=10",
    "scheduler.notifications.retentionDays=-1",
    "scheduler.notifications.maxAttempts=0",
    "scheduler.notifications.concurrency=1000",
    "notifications.smtpCa.key=",
    "notifications.smtpCa.file=x",
])
def test_schema_refuses_what_the_binary_would(setting):
    assert render_fails("--set", setting)
