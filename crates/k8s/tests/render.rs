//! Renderer: names, labels, selectors, security, secrets, probes, YAML.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::{REGISTRY_PASSWORD, SECRET_VALUE, app_spec, db_spec, revealed};
use ferry_k8s::spec::MountSpec;
use ferry_k8s::{Error, Redact, Rendered, Workload, WorkloadKindRef, diff, render};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn pod_spec(r: &Rendered) -> &PodSpec {
    r.workload.template().spec.as_ref().unwrap()
}

fn invalid_field(spec: &ferry_k8s::spec::WorkloadSpec) -> String {
    match render(spec) {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn application_renders_every_object_in_order() {
    let r = render(&app_spec()).unwrap();
    assert_eq!(
        r.object_names(),
        [
            "Namespace/shop",
            "NetworkPolicy/ferry-default-deny",
            "ResourceQuota/ferry-quota",
            "LimitRange/ferry-limits",
            "Secret/web-env",
            "Secret/web-registry",
            "PersistentVolumeClaim/vol-uploads",
            "Service/web",
            "Deployment/web",
        ]
    );
    assert_eq!(r.workload.kind(), WorkloadKindRef::Deployment);
    let Workload::Deployment(d) = &r.workload else {
        panic!()
    };
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let ru = spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
    assert_eq!(ru.max_surge, Some(IntOrString::Int(1)));
    assert!(spec.revision_history_limit.unwrap() <= 5);
}

#[test]
fn labels_and_selector() {
    let spec = app_spec();
    let r = render(&spec).unwrap();
    let json = r.to_json(Redact::None);
    let sid = spec.service_id.to_string();
    for obj in json.as_array().unwrap() {
        let labels = &obj["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ferry", "{obj}");
        assert_eq!(
            labels["ferry.dev/organization-id"],
            spec.organization_id.to_string()
        );
        assert_eq!(labels["ferry.dev/project-id"], spec.project_id.to_string());
        match obj["kind"].as_str().unwrap() {
            "Namespace" | "NetworkPolicy" | "ResourceQuota" | "LimitRange" => {
                assert!(labels.get("ferry.dev/service-id").is_none())
            }
            // Project volumes can be shared between services.
            "PersistentVolumeClaim" => {
                assert!(labels.get("ferry.dev/service-id").is_none());
                assert!(labels["ferry.dev/volume"].is_string());
            }
            _ => {
                assert_eq!(labels["ferry.dev/service-id"], sid.as_str());
                assert_eq!(labels["app.kubernetes.io/name"], "web");
                assert_eq!(labels["app.kubernetes.io/instance"], "web");
                assert_eq!(labels["app.kubernetes.io/component"], "application");
                assert_eq!(labels["app.kubernetes.io/part-of"], "shop");
            }
        }
    }
    let Workload::Deployment(d) = &r.workload else {
        panic!()
    };
    let selector = d
        .spec
        .as_ref()
        .unwrap()
        .selector
        .match_labels
        .clone()
        .unwrap();
    assert_eq!(selector.len(), 1);
    assert_eq!(selector["ferry.dev/service-id"], sid);
    let pod_labels = r
        .workload
        .template()
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    for (k, v) in &selector {
        assert_eq!(pod_labels.get(k), Some(v), "selector ⊂ pod labels");
    }
    assert_eq!(
        pod_labels["ferry.dev/deployment-id"],
        spec.deployment_id.to_string()
    );
    let svc_selector = r
        .service
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .selector
        .clone()
        .unwrap();
    assert_eq!(svc_selector, selector);
}

#[test]
fn service_ports_target_container_port_names() {
    let r = render(&app_spec()).unwrap();
    let container = &pod_spec(&r).containers[0];
    assert_eq!(container.name, "app");
    let cports = container.ports.clone().unwrap();
    let names: Vec<_> = cports.iter().map(|p| p.name.clone().unwrap()).collect();
    assert_eq!(names, ["http", "udp-9090"]);
    assert_eq!(cports[1].protocol.as_deref(), Some("UDP"));
    let sports = r
        .service
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .ports
        .clone()
        .unwrap();
    assert_eq!(
        r.service
            .as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .type_
            .as_deref(),
        Some("ClusterIP")
    );
    for (s, c) in sports.iter().zip(&cports) {
        assert_eq!(s.name, c.name);
        assert_eq!(s.port, c.container_port);
        assert_eq!(s.protocol, c.protocol);
        assert_eq!(
            s.target_port,
            Some(IntOrString::String(c.name.clone().unwrap()))
        );
    }
}

#[test]
fn no_ports_no_service() {
    let mut spec = app_spec();
    spec.ports.clear();
    spec.health_check = None;
    let r = render(&spec).unwrap();
    assert!(r.service.is_none());
    assert!(pod_spec(&r).containers[0].ports.is_none());
    assert!(pod_spec(&r).containers[0].readiness_probe.is_none());
}

#[test]
fn volumes_claims_and_mounts() {
    let r = render(&app_spec()).unwrap();
    let pvc = &r.volume_claims[0];
    assert_eq!(pvc.metadata.name.as_deref(), Some("vol-uploads"));
    let pvc_spec = pvc.spec.as_ref().unwrap();
    assert_eq!(pvc_spec.access_modes.clone().unwrap(), ["ReadWriteMany"]);
    assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        pvc_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "5Gi"
    );
    let pod = pod_spec(&r);
    let claims: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name
                .clone()
        })
        .collect();
    let pvc_names: Vec<_> = r
        .volume_claims
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(claims, pvc_names);
    let mount = &pod.containers[0].volume_mounts.as_ref().unwrap()[0];
    assert_eq!(mount.mount_path, "/srv/uploads");
    assert_eq!(mount.sub_path.as_deref(), Some("web"));
    assert_eq!(mount.read_only, Some(true));
    let volume_names: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    assert!(volume_names.contains(&mount.name));
    for v in pod.volumes.iter().flatten() {
        assert!(v.host_path.is_none());
    }
    assert_ne!(pod.host_network, Some(true));
}

#[test]
fn security_context_application_and_database() {
    let r = render(&app_spec()).unwrap();
    let pod = pod_spec(&r);
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(
        pod.security_context
            .as_ref()
            .unwrap()
            .run_as_non_root
            .is_none()
    );
    let sc = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.drop.unwrap(), ["ALL"]);
    assert!(caps.add.is_none(), "applications get no capabilities back");

    let db = render(&db_spec()).unwrap();
    let caps = pod_spec(&db).containers[0]
        .security_context
        .clone()
        .unwrap()
        .capabilities
        .unwrap();
    assert_eq!(caps.drop.unwrap(), ["ALL"]);
    assert_eq!(
        caps.add.unwrap(),
        ["CHOWN", "SETUID", "SETGID", "FOWNER", "DAC_OVERRIDE"]
    );
    let yaml = db.to_yaml(Redact::None).unwrap();
    assert!(!yaml.contains("hostPath"));
    assert!(!yaml.contains("hostNetwork"));
}

#[test]
fn env_comes_from_the_secret_only() {
    let r = render(&app_spec()).unwrap();
    let c = &pod_spec(&r).containers[0];
    assert!(c.env.is_none());
    let from = c.env_from.clone().unwrap();
    assert_eq!(from[0].secret_ref.as_ref().unwrap().name, "web-env");
    let data = r.env_secret.data.clone().unwrap();
    assert_eq!(r.env_secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(data["LOG_LEVEL"].0, b"info");
    assert!(
        String::from_utf8(data["DATABASE_URL"].0.clone())
            .unwrap()
            .contains(SECRET_VALUE)
    );
    // The workload itself never carries a value.
    let workload = serde_json::to_string(&r.to_json(Redact::None)[6]).unwrap();
    assert!(!revealed(&workload).contains(SECRET_VALUE));
}

#[test]
fn image_pull_secret() {
    let r = render(&app_spec()).unwrap();
    let secret = r.registry_secret.as_ref().unwrap();
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let config: serde_json::Value =
        serde_json::from_slice(&secret.data.as_ref().unwrap()[".dockerconfigjson"].0).unwrap();
    let auth = &config["auths"]["ghcr.io"];
    assert_eq!(auth["username"], "acme");
    assert_eq!(auth["password"], REGISTRY_PASSWORD);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth["auth"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, format!("acme:{REGISTRY_PASSWORD}").as_bytes());
    let pull = pod_spec(&r).image_pull_secrets.clone().unwrap();
    assert_eq!(pull[0].name, "web-registry");

    let mut spec = app_spec();
    spec.image_pull = None;
    let r = render(&spec).unwrap();
    assert!(r.registry_secret.is_none());
    assert!(pod_spec(&r).image_pull_secrets.is_none());
}

#[test]
fn probes_http_and_tcp() {
    let r = render(&app_spec()).unwrap();
    let c = &pod_spec(&r).containers[0];
    for probe in [
        c.readiness_probe.clone().unwrap(),
        c.liveness_probe.clone().unwrap(),
    ] {
        let http = probe.http_get.unwrap();
        assert_eq!(http.path.as_deref(), Some("/healthz"));
        assert_eq!(http.port, IntOrString::Int(8080));
        assert!(probe.tcp_socket.is_none());
        assert_eq!(probe.period_seconds, Some(10));
    }
    let db = render(&db_spec()).unwrap();
    let c = &pod_spec(&db).containers[0];
    for probe in [
        c.readiness_probe.clone().unwrap(),
        c.liveness_probe.clone().unwrap(),
    ] {
        assert!(probe.http_get.is_none());
        assert_eq!(probe.tcp_socket.unwrap().port, IntOrString::Int(5432));
        assert_eq!(probe.period_seconds, Some(5));
    }
}

#[test]
fn container_image_command_resources() {
    let r = render(&app_spec()).unwrap();
    let c = &pod_spec(&r).containers[0];
    assert_eq!(c.image.as_deref(), Some("ghcr.io/acme/web:1.2.3"));
    assert_eq!(c.command.clone().unwrap(), ["/bin/server"]);
    assert_eq!(c.args.clone().unwrap(), ["--port", "8080"]);
    let res = c.resources.clone().unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "250m");
    assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "256Mi");
    assert_eq!(res.limits.as_ref().unwrap()["cpu"].0, "1");
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "512Mi");
    let db = render(&db_spec()).unwrap();
    let c = &pod_spec(&db).containers[0];
    assert!(c.command.is_none() && c.args.is_none() && c.resources.is_none());
}

#[test]
fn database_stateful_set() {
    let spec = db_spec();
    let r = render(&spec).unwrap();
    let Workload::StatefulSet(s) = &r.workload else {
        panic!("not a StatefulSet")
    };
    assert_eq!(s.metadata.name.as_deref(), Some("db"));
    let sts = s.spec.as_ref().unwrap();
    assert_eq!(sts.service_name.as_deref(), Some("db"));
    assert_eq!(
        sts.update_strategy.as_ref().unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    let vct = &sts.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(vct.metadata.name.as_deref(), Some("data"));
    assert_eq!(
        vct.metadata.labels.as_ref().unwrap()["ferry.dev/service-id"],
        spec.service_id.to_string()
    );
    let req = vct
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .clone()
        .unwrap();
    assert_eq!(req["storage"].0, "10Gi");
    let mounts = pod_spec(&r).containers[0].volume_mounts.clone().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "data" && m.mount_path == "/var/lib/postgresql/data")
    );
    let labels = s.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["app.kubernetes.io/component"], "database");
}

#[test]
fn network_policy_and_namespace() {
    let r = render(&app_spec()).unwrap();
    let ns_labels = r.namespace.metadata.labels.clone().unwrap();
    assert_eq!(ns_labels["app.kubernetes.io/managed-by"], "ferry");
    assert!(ns_labels.contains_key("ferry.dev/project-id"));
    let np = r.network_policy.spec.as_ref().unwrap();
    assert_eq!(
        r.network_policy.metadata.name.as_deref(),
        Some("ferry-default-deny")
    );
    assert_eq!(r.network_policy.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(np.policy_types.clone().unwrap(), ["Ingress", "Egress"]);
    assert_eq!(np.pod_selector.clone().unwrap(), Default::default());
    let from = np.ingress.as_ref().unwrap()[0].from.clone().unwrap();
    assert_eq!(from.len(), 2);
    assert_eq!(from[0].pod_selector.clone().unwrap(), Default::default());
    assert!(from[0].namespace_selector.is_none());
    let ns_sel = from[1]
        .namespace_selector
        .clone()
        .unwrap()
        .match_labels
        .unwrap();
    assert_eq!(ns_sel["kubernetes.io/metadata.name"], "ferry-system");
}

#[test]
fn redacted_yaml_and_json_never_show_secrets() {
    let r = render(&app_spec()).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let yaml = r.to_yaml(Redact::Secrets).unwrap();
    let json = r.to_json(Redact::Secrets).to_string();
    for text in [&yaml, &json] {
        // Secret data is base64: check the decoded text too.
        let all = revealed(text);
        assert!(!all.contains(SECRET_VALUE), "{all}");
        assert!(!all.contains(REGISTRY_PASSWORD), "{all}");
        assert!(!text.contains(&b64("info")));
        assert!(!text.contains(&b64(&format!("postgres://app:{SECRET_VALUE}@db/app"))));
        assert!(text.contains("***"));
    }
    assert_eq!(yaml.matches("---\n").count(), 9);
    let plain = r.to_yaml(Redact::None).unwrap();
    assert!(plain.contains(&b64(&format!("postgres://app:{SECRET_VALUE}@db/app"))));
    assert!(revealed(&plain).contains(SECRET_VALUE));
    let docs: Vec<serde_json::Value> = plain
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml_ng::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 9);
    assert_eq!(docs[0]["kind"], "Namespace");
    assert_eq!(docs[8]["kind"], "Deployment");
    // Debug never leaks either.
    assert!(!format!("{r:?}").contains(SECRET_VALUE));
}

#[test]
fn json_round_trip() {
    let r = render(&app_spec()).unwrap();
    let back = Rendered::from_json(r.to_json(Redact::None)).unwrap();
    // Everything but the pull secret, which no text rendering carries.
    let pull = back.registry_secret.clone().unwrap().data.unwrap();
    assert_eq!(pull[".dockerconfigjson"].0, b"***");
    assert_eq!(back.env_secret, r.env_secret);
    assert_eq!(
        Rendered {
            registry_secret: r.registry_secret.clone(),
            ..back
        },
        r
    );
    let redacted = Rendered::from_json(r.to_json(Redact::Secrets)).unwrap();
    assert_eq!(redacted.env_secret.data.unwrap()["LOG_LEVEL"].0, b"***");
    assert_eq!(redacted.workload, r.workload);
    let db = render(&db_spec()).unwrap();
    assert_eq!(Rendered::from_json(db.to_json(Redact::None)).unwrap(), db);
}

#[test]
fn diff_shows_changed_lines() {
    let old = render(&app_spec())
        .unwrap()
        .to_yaml(Redact::Secrets)
        .unwrap();
    let mut spec = app_spec();
    spec.image = "ghcr.io/acme/web:1.2.4".into();
    let new = render(&spec).unwrap().to_yaml(Redact::Secrets).unwrap();
    let d = diff(&old, &new);
    assert!(
        d.contains("-    image: ghcr.io/acme/web:1.2.3")
            || d.contains("-        image: ghcr.io/acme/web:1.2.3"),
        "{d}"
    );
    assert!(d.contains("ghcr.io/acme/web:1.2.4"));
    assert!(d.contains("@@"));
    assert!(diff(&old, &old).is_empty());
}

#[test]
fn validation_names_the_field() {
    let mut s = app_spec();
    s.image = " ".into();
    assert_eq!(invalid_field(&s), "image");

    let mut s = app_spec();
    s.name = "Web_1".into();
    assert_eq!(invalid_field(&s), "name");

    let mut s = app_spec();
    s.namespace = "-shop".into();
    assert_eq!(invalid_field(&s), "namespace");

    let mut s = app_spec();
    s.ports[1].name = Some("http".into());
    assert_eq!(invalid_field(&s), "ports[1].name");

    let mut s = app_spec();
    s.ports[0].name = Some("this-name-is-way-too-long".into());
    assert_eq!(invalid_field(&s), "ports[0].name");

    let mut s = app_spec();
    s.mounts.push(MountSpec {
        volume: "nope".into(),
        mount_path: "/x".into(),
        sub_path: None,
        read_only: false,
    });
    assert_eq!(invalid_field(&s), "mounts[1].volume");

    let mut s = app_spec();
    s.mounts[0].mount_path = "relative/path".into();
    assert_eq!(invalid_field(&s), "mounts[0].mount_path");

    let mut s = app_spec();
    s.volumes[0].name = "Bad".into();
    s.mounts.clear();
    assert_eq!(invalid_field(&s), "volumes[0].name");

    let mut s = db_spec();
    if let ferry_k8s::spec::WorkloadKind::Database { data_path, .. } = &mut s.kind {
        *data_path = "data".into();
    }
    assert_eq!(invalid_field(&s), "kind.data_path");

    let mut s = app_spec();
    s.env[0].key = "BAD KEY".into();
    assert_eq!(invalid_field(&s), "env[0].key");
}

#[test]
fn egress_reaches_dns_the_project_and_the_internet_only() {
    let r = render(&app_spec()).unwrap();
    let np = serde_json::to_value(&r.network_policy).unwrap();
    let egress = np["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 3, "{np}");
    // DNS, anywhere (node-local caches included), and nothing else on that rule.
    assert_eq!(
        egress[0],
        serde_json::json!({ "ports": [
            { "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 },
        ]})
    );
    // The project's own pods.
    assert_eq!(
        egress[1],
        serde_json::json!({ "to": [{ "podSelector": {} }] })
    );
    // The internet, minus metadata and the private ranges of the cluster.
    let blocks = egress[2]["to"].as_array().unwrap();
    assert_eq!(blocks[0]["ipBlock"]["cidr"], "0.0.0.0/0");
    let v4: Vec<&str> = blocks[0]["ipBlock"]["except"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for denied in [
        "169.254.0.0/16",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    ] {
        assert!(v4.contains(&denied), "{denied} not denied: {v4:?}");
    }
    assert_eq!(blocks[1]["ipBlock"]["cidr"], "::/0");
    let v6 = blocks[1]["ipBlock"]["except"].as_array().unwrap();
    assert!(v6.iter().any(|c| c == "fc00::/7"), "{v6:?}");
    assert!(v6.iter().all(|c| c.as_str().unwrap().contains(':')));
}

#[test]
fn quota_and_limit_range_bound_the_project() {
    let mut spec = app_spec();
    spec.policy.quota.cpu = "2".into();
    spec.policy.quota.memory = "4Gi".into();
    spec.policy.quota.pods = 10;
    let r = render(&spec).unwrap();
    let q = serde_json::to_value(&r.resource_quota).unwrap();
    assert_eq!(q["metadata"]["namespace"], "shop");
    let hard = &q["spec"]["hard"];
    assert_eq!(hard["limits.cpu"], "2");
    assert_eq!(hard["requests.memory"], "4Gi");
    assert_eq!(hard["pods"], "10");
    assert_eq!(hard["requests.storage"], "100Gi");
    assert_eq!(hard["services.loadbalancers"], "0");
    assert_eq!(hard["services.nodeports"], "0");
    let lr = serde_json::to_value(&r.limit_range).unwrap();
    let container = &lr["spec"]["limits"][0];
    assert_eq!(container["type"], "Container");
    assert_eq!(container["defaultRequest"]["cpu"], "100m");
    assert_eq!(container["default"]["memory"], "512Mi");
    assert_eq!(container["max"]["cpu"], "2");
    assert_eq!(lr["spec"]["limits"][1]["type"], "PersistentVolumeClaim");
}

#[test]
fn build_limits_stay_out_of_the_project_namespace() {
    // Builds run in the builds namespace: their limits change nothing the
    // project renders, and are not checked here (the api checks them).
    let plain = render(&app_spec()).unwrap().to_json(Redact::None);
    let mut spec = app_spec();
    spec.policy.quota.build_cpu = "not checked here".into();
    spec.policy.quota.build_memory = "64Gi".into();
    spec.policy.quota.concurrent_builds = 0;
    assert_eq!(render(&spec).unwrap().to_json(Redact::None), plain);

    // A spec or setting stored before the build limits existed reads them
    // as the defaults.
    let mut stored = serde_json::to_value(&spec.policy.quota).unwrap();
    for key in ["build_cpu", "build_memory", "concurrent_builds"] {
        stored.as_object_mut().unwrap().remove(key);
    }
    let quota: ferry_k8s::spec::ProjectQuota = serde_json::from_value(stored).unwrap();
    assert_eq!(
        (
            quota.build_cpu.as_str(),
            quota.build_memory.as_str(),
            quota.concurrent_builds
        ),
        ("2", "4Gi", 2)
    );
}

#[test]
fn bad_policy_is_refused_naming_the_field() {
    let mut spec = app_spec();
    spec.policy.quota.cpu = "lots".into();
    assert_eq!(invalid_field(&spec), "policy.quota.cpu");
    let mut spec = app_spec();
    spec.policy.quota.storage = "1 TB".into();
    assert_eq!(invalid_field(&spec), "policy.quota.storage");
    let mut spec = app_spec();
    spec.policy.quota.pods = -1;
    assert_eq!(invalid_field(&spec), "policy.quota.pods");
    let mut spec = app_spec();
    spec.policy.egress_deny_cidrs.push("10.0.0.0/99".into());
    assert_eq!(invalid_field(&spec), "policy.egress_deny_cidrs[8]");
}

#[test]
fn no_text_rendering_carries_registry_credentials() {
    let r = render(&app_spec()).unwrap();
    // The typed object the cluster gets has them.
    let pull = r.registry_secret.clone().unwrap().data.unwrap();
    let config = String::from_utf8(pull[".dockerconfigjson"].0.clone()).unwrap();
    assert!(config.contains(REGISTRY_PASSWORD));
    for redact in [Redact::Secrets, Redact::None] {
        let yaml = r.to_yaml(redact).unwrap();
        let json = r.to_json(redact).to_string();
        for text in [&yaml, &json] {
            let all = revealed(text);
            assert!(!all.contains(REGISTRY_PASSWORD), "{redact:?}: {all}");
            assert!(!all.contains("acme:"), "{redact:?}: basic auth in {all}");
        }
        assert!(
            yaml.contains("kubernetes.io/dockerconfigjson"),
            "{redact:?}"
        );
        assert!(
            yaml.contains(".dockerconfigjson: '***'"),
            "{redact:?}: {yaml}"
        );
    }
}
