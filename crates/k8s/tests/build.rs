//! Rendering image builds: the Job's shape, where credentials go (and
//! where they never go), validation, the builds namespace, and reading a
//! build's outcome from its Job and pod.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::build::*;
use ferry_k8s::build::{
    BuildKind, BuildOutcome, BuildSpec, BuildStep, EgressPolicy, FailureReason, GitAuth,
    builds_namespace, job_name, render_build, render_build_secret,
};
use ferry_k8s::{Error, GitCredential};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

fn job_json(spec: &BuildSpec) -> Value {
    serde_json::to_value(render_build(spec).unwrap()).unwrap()
}

fn containers(job: &Job) -> Vec<Container> {
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.init_containers
        .iter()
        .flatten()
        .chain(&pod.containers)
        .cloned()
        .collect()
}

fn names(job: &Job) -> Vec<String> {
    containers(job).into_iter().map(|c| c.name).collect()
}

fn container(job: &Job, name: &str) -> Container {
    containers(job)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn argv(c: &Container) -> Vec<String> {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect()
}

fn invalid_field(result: ferry_k8s::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn all_kinds() -> Vec<(BuildSpec, ferry_k8s::BuildCredentials)> {
    vec![
        (dockerfile_spec(), credentials()),
        (build_spec(BuildKind::railpack()), credentials()),
        (
            build_spec(BuildKind::static_site(Some("dist".into()))),
            credentials(),
        ),
        (buildpacks_spec(), ssh_credentials()),
    ]
}

#[test]
fn dockerfile_job_has_the_required_shape() {
    let spec = dockerfile_spec();
    let job = render_build(&spec).unwrap();
    let meta = &job.metadata;
    assert_eq!(meta.name.as_deref(), Some("ferry-build-123456789abc"));
    assert_eq!(meta.namespace.as_deref(), Some("ferry-builds"));
    let labels = meta.labels.clone().unwrap();
    for (k, v) in [
        ("app.kubernetes.io/managed-by", "ferry"),
        ("app.kubernetes.io/name", "web"),
        ("app.kubernetes.io/part-of", "shop"),
        ("app.kubernetes.io/component", "build"),
        ("app.kubernetes.io/instance", "ferry-build-123456789abc"),
        ("ferry.dev/build-id", "5f0e3c2a-9b71-4d8e-a6f4-123456789abc"),
        (
            "ferry.dev/organization-id",
            "00000000-0000-0000-0000-000000000001",
        ),
        (
            "ferry.dev/project-id",
            "00000000-0000-0000-0000-000000000002",
        ),
        (
            "ferry.dev/service-id",
            "00000000-0000-0000-0000-000000000003",
        ),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
    }
    let js = job.spec.as_ref().unwrap();
    assert_eq!(js.backoff_limit, Some(0));
    assert_eq!(js.active_deadline_seconds, Some(1800));
    assert_eq!(js.ttl_seconds_after_finished, Some(3600));
    // The pod carries the same labels: watches and log reads select on them.
    assert_eq!(
        js.template.metadata.as_ref().unwrap().labels.as_ref(),
        Some(&labels)
    );
    let pod = js.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.enable_service_links, Some(false));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(
        names(&job),
        ["clone-init", "clone-fetch", "clone-checkout", "build"]
    );
    assert_eq!(
        argv(&container(&job, "clone-init")),
        ["git", "init", "--quiet", "/workspace/src"]
    );
    assert_eq!(
        argv(&container(&job, "clone-fetch")),
        [
            "git",
            "-C",
            "/workspace/src",
            "fetch",
            "--quiet",
            "--depth=1",
            "--no-tags",
            "https://git.example.com/acme/shop.git",
            COMMIT,
        ]
    );
    assert_eq!(
        argv(&container(&job, "clone-checkout")),
        [
            "git",
            "-C",
            "/workspace/src",
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
            "FETCH_HEAD"
        ]
    );
    let build = container(&job, "build");
    assert_eq!(
        build.image.as_deref(),
        Some("moby/buildkit:v0.23.2-rootless")
    );
    let dest = format!("registry.ferry.example:5000/shop/web:{COMMIT}");
    let cache = "registry.ferry.example:5000/shop/web:buildcache";
    assert_eq!(
        argv(&build),
        [
            "buildctl-daemonless.sh",
            "build",
            "--progress=plain",
            "--frontend",
            "dockerfile.v0",
            "--local",
            "context=/workspace/src/apps/web",
            "--local",
            "dockerfile=/workspace/src/apps/web/docker",
            "--opt",
            "filename=Dockerfile.prod",
            "--opt",
            "target=runtime",
            "--opt",
            "build-arg:NODE_ENV=production",
            "--opt",
            "build-arg:GREETING=hello, world; $(not a shell)",
            "--secret",
            "id=NPM_TOKEN,src=/run/ferry/secrets/NPM_TOKEN",
            "--output",
            &format!("type=image,name={dest},push=true"),
            "--export-cache",
            &format!("type=registry,ref={cache},mode=max"),
            "--import-cache",
            &format!("type=registry,ref={cache}"),
            "--metadata-file",
            "/dev/termination-log",
        ]
    );
    let env: Vec<(String, String)> = build
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        env,
        [
            (
                "BUILDKITD_FLAGS".into(),
                "--oci-worker-no-process-sandbox".into()
            ),
            ("DOCKER_CONFIG".into(), "/run/ferry/registry".into())
        ]
    );
    assert_eq!(
        build.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    // Every container is limited.
    for c in containers(&job) {
        let limits = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .unwrap();
        assert_eq!(limits["memory"].0, "4Gi", "{}", c.name);
    }
}

#[test]
fn no_step_runs_a_shell() {
    for (spec, _) in all_kinds() {
        let job = render_build(&spec).unwrap();
        for c in containers(&job) {
            let first = argv(&c).first().cloned().unwrap_or_default();
            assert!(
                !["sh", "bash", "/bin/sh", "/bin/bash"].contains(&first.as_str()),
                "{}: {first}",
                c.name
            );
            assert!(!argv(&c).iter().any(|a| a == "-c" && first.ends_with("sh")));
        }
    }
}

#[test]
fn credentials_never_reach_env_or_args() {
    for (spec, credentials) in all_kinds() {
        let job = serde_json::to_string(&render_build(&spec).unwrap()).unwrap();
        for secret in SECRETS {
            assert!(
                !job.contains(secret),
                "{:?}: {secret} in the Job",
                spec.kind
            );
        }
        // ... while the Secret holds them (so the check above can fail).
        let secret = render_build_secret(&spec, &credentials).unwrap();
        let data = secret.data.unwrap();
        let all: String = data
            .values()
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .collect();
        assert!(all.contains(PUSH_PASSWORD));
        assert!(all.contains(SECRET_ARG_VALUE));
        assert!(all.contains(GIT_TOKEN) || all.contains("b3BlbnNzaC1rZXktdjEAAAAfake"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret.metadata.name, Some(job_name(spec.build_id)));
        assert_eq!(
            secret.metadata.labels.unwrap()["ferry.dev/build-id"],
            spec.build_id.to_string()
        );
    }
}

#[test]
fn the_git_credential_is_a_file_only_the_fetch_step_mounts() {
    let spec = dockerfile_spec();
    let job = render_build(&spec).unwrap();
    let mounts_of = |name: &str| -> Vec<String> {
        container(&job, name)
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.clone())
            .collect()
    };
    for c in containers(&job) {
        let mounts = mounts_of(&c.name);
        assert_eq!(
            mounts.contains(&"git-credentials".to_owned()),
            c.name == "clone-fetch",
            "{}",
            c.name
        );
        assert_eq!(mounts.contains(&"registry".to_owned()), c.name == "build");
        assert_eq!(
            mounts.contains(&"build-secrets".to_owned()),
            c.name == "build"
        );
    }
    let fetch = container(&job, "clone-fetch");
    let env: Vec<(String, String)> = fetch
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    assert!(env.contains(&("GIT_CONFIG_KEY_0".into(), "credential.helper".into())));
    assert!(env.contains(&(
        "GIT_CONFIG_VALUE_0".into(),
        "store --file=/run/ferry/git/git-credentials".into()
    )));
    assert!(env.contains(&("GIT_ALLOW_PROTOCOL".into(), "https:ssh".into())));
    // No env value comes from a Secret either.
    let json = job_json(&spec);
    assert!(!json.to_string().contains("secretKeyRef"));
    // The credential-store line is https://user:token@host.
    let secret = render_build_secret(&spec, &credentials()).unwrap();
    let line = String::from_utf8(secret.data.unwrap()["git-credentials"].0.clone()).unwrap();
    assert_eq!(
        line,
        format!("https://x-access-token:{GIT_TOKEN}@git.example.com\n")
    );
}

#[test]
fn secret_build_args_are_buildkit_secrets_not_build_args() {
    let job = render_build(&dockerfile_spec()).unwrap();
    let args = argv(&container(&job, "build"));
    assert!(!args.iter().any(|a| a.contains("build-arg:NPM_TOKEN")));
    assert!(args.contains(&"id=NPM_TOKEN,src=/run/ferry/secrets/NPM_TOKEN".to_owned()));
    let volumes = job.spec.unwrap().template.spec.unwrap().volumes.unwrap();
    let secrets = volumes.iter().find(|v| v.name == "build-secrets").unwrap();
    let items: Vec<(String, String)> = secrets
        .secret
        .as_ref()
        .unwrap()
        .items
        .iter()
        .flatten()
        .map(|i| (i.key.clone(), i.path.clone()))
        .collect();
    assert_eq!(items, [("build-arg.NPM_TOKEN".into(), "NPM_TOKEN".into())]);
}

#[test]
fn only_the_buildkit_container_is_unconfined() {
    for (spec, _) in all_kinds() {
        let job = render_build(&spec).unwrap();
        let buildkit = !matches!(spec.kind, BuildKind::Buildpacks { .. });
        for c in containers(&job) {
            let sc = c.security_context.clone().unwrap();
            let seccomp = sc.seccomp_profile.unwrap().type_;
            let apparmor = sc.app_armor_profile.map(|p| p.type_);
            if buildkit && c.name == "build" {
                assert_eq!(seccomp, "Unconfined");
                assert_eq!(apparmor.as_deref(), Some("Unconfined"));
                assert_eq!(sc.run_as_user, Some(1000));
                assert_eq!(sc.privileged, Some(false));
            } else {
                assert_eq!(seccomp, "RuntimeDefault", "{}", c.name);
                assert_eq!(apparmor, None, "{}", c.name);
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
                assert_eq!(
                    sc.capabilities.unwrap().drop.unwrap(),
                    ["ALL"],
                    "{}",
                    c.name
                );
            }
        }
        let json = job_json(&spec).to_string();
        let unconfined = json.matches("Unconfined").count();
        assert_eq!(unconfined, if buildkit { 2 } else { 0 }, "{:?}", spec.kind);
    }
}

#[test]
fn railpack_prepares_a_plan_then_builds_through_its_frontend() {
    let job = render_build(&build_spec(BuildKind::railpack())).unwrap();
    assert_eq!(
        names(&job),
        [
            "clone-init",
            "clone-fetch",
            "clone-checkout",
            "prepare-tools",
            "prepare-plan",
            "build"
        ]
    );
    assert_eq!(
        argv(&container(&job, "prepare-tools")),
        ["cp", "/railpack", "/ferry/tools/railpack"]
    );
    let prepare = container(&job, "prepare-plan");
    assert_eq!(
        prepare.image.as_deref(),
        Some(ferry_k8s::build::DEFAULT_RAILPACK_BUILDER_IMAGE)
    );
    assert_eq!(
        argv(&prepare),
        [
            "/ferry/tools/railpack",
            "prepare",
            "--plan-out",
            "/ferry/plan/railpack-plan.json",
            "--info-out",
            "/ferry/plan/railpack-info.json",
            "--env=NODE_ENV=production",
            "--env=GREETING=hello, world; $(not a shell)",
            "/workspace/src/apps/web",
        ]
    );
    let args = argv(&container(&job, "build"));
    let window = |a: &str, b: &str| args.windows(2).any(|w| w[0] == a && w[1] == b);
    assert!(window("--frontend", "gateway.v0"));
    assert!(window(
        "--opt",
        &format!(
            "source={}",
            ferry_k8s::build::DEFAULT_RAILPACK_FRONTEND_IMAGE
        )
    ));
    assert!(window("--local", "dockerfile=/ferry/plan"));
    assert!(window("--opt", "filename=railpack-plan.json"));
    assert!(window("--local", "context=/workspace/src/apps/web"));

    let site = render_build(&build_spec(BuildKind::static_site(Some("dist".into())))).unwrap();
    assert!(
        argv(&container(&site, "prepare-plan"))
            .contains(&"--env=RAILPACK_STATIC_FILE_ROOT=dist".to_owned())
    );
}

#[test]
fn buildpacks_run_the_lifecycle_creator_as_the_cnb_user_over_ssh() {
    let spec = buildpacks_spec();
    let job = render_build(&spec).unwrap();
    let build = container(&job, "build");
    assert_eq!(
        argv(&build),
        [
            "/cnb/lifecycle/creator",
            "-app=/workspace/src/apps/web",
            "-layers=/layers",
            "-platform=/platform",
            "-cache-image=registry.ferry.example:5000/shop/web:buildcache",
            "-report=/dev/termination-log",
            &format!("registry.ferry.example:5000/shop/web:{COMMIT}"),
        ]
    );
    let sc = build.security_context.unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1000), Some(1000)));
    // Build args (plain and secret) are files in /platform/env.
    let secret = render_build_secret(&spec, &ssh_credentials()).unwrap();
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    for key in [
        "build-arg.GREETING",
        "build-arg.NODE_ENV",
        "build-arg.NPM_TOKEN",
        "ssh-privatekey",
        "known_hosts",
        "passwd",
        "config.json",
    ] {
        assert!(keys.iter().any(|k| *k == key), "{key}");
    }
    // SSH: the key and known_hosts are files; ssh checks host keys.
    let fetch = container(&job, "clone-fetch");
    let ssh = fetch
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "GIT_CONFIG_VALUE_0")
        .and_then(|e| e.value.clone())
        .unwrap();
    assert!(ssh.contains("-i /run/ferry/git/ssh-privatekey"), "{ssh}");
    assert!(ssh.contains("StrictHostKeyChecking=yes"), "{ssh}");
    assert!(
        fetch
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/etc/passwd" && m.sub_path.as_deref() == Some("passwd"))
    );
}

#[test]
fn renders_are_deterministic() {
    for (spec, credentials) in all_kinds() {
        assert_eq!(job_json(&spec), job_json(&spec));
        assert_eq!(
            render_build_secret(&spec, &credentials).unwrap(),
            render_build_secret(&spec, &credentials).unwrap()
        );
    }
    let name = job_name(build_id());
    assert_eq!(name, "ferry-build-123456789abc");
    assert!(name.len() <= 63);
    assert_eq!(job_name(uuid::Uuid::max()), "ferry-build-ffffffffffff");
}

#[test]
fn invalid_specs_name_the_field() {
    type Mutation = fn(&mut BuildSpec);
    let cases: Vec<(Mutation, &str)> = vec![
        (|s| s.build_args[1].0 = "1BAD".into(), "buildArgs[1].name"),
        (|s| s.build_args[0].0 = "A-B".into(), "buildArgs[0].name"),
        (|s| s.build_args[0].0 = "A".repeat(129), "buildArgs[0].name"),
        (|s| s.build_args[1].1 = "a\0b".into(), "buildArgs[1].value"),
        (
            |s| s.build_args[0].1 = "x".repeat(4097),
            "buildArgs[0].value",
        ),
        (
            |s| s.build_args = (0..100).map(|i| (format!("A{i}"), String::new())).collect(),
            "buildArgs",
        ),
        (
            |s| s.secret_build_args[0] = "NODE_ENV".into(),
            "secretBuildArgs[0]",
        ),
        (|s| s.root_dir = "../other".into(), "rootDir"),
        (|s| s.root_dir = "/etc".into(), "rootDir"),
        (|s| s.root_dir = "-x".into(), "rootDir"),
        (
            |s| {
                s.kind = BuildKind::Dockerfile {
                    path: "a/../../Dockerfile".into(),
                    target: None,
                }
            },
            "kind.path",
        ),
        (
            |s| {
                s.kind = BuildKind::Dockerfile {
                    path: "--file".into(),
                    target: None,
                }
            },
            "kind.path",
        ),
        (
            |s| {
                s.kind = BuildKind::Dockerfile {
                    path: "Dockerfile".into(),
                    target: Some("a b".into()),
                }
            },
            "kind.target",
        ),
        (|s| s.commit_sha = "main".into(), "commitSha"),
        (|s| s.commit_sha = COMMIT.to_uppercase(), "commitSha"),
        (|s| s.commit_sha = COMMIT[..39].into(), "commitSha"),
        (
            |s| s.repository_url = "https://me:tok@git.example.com/acme/shop".into(),
            "repositoryUrl",
        ),
        (
            |s| s.repository_url = "--upload-pack=x".into(),
            "repositoryUrl",
        ),
        (
            |s| s.repository_url = "ext::sh -c x".into(),
            "repositoryUrl",
        ),
        (
            |s| s.destination = "registry.example/shop/web:1,push=false".into(),
            "destination",
        ),
        (
            |s| s.destination = "registry.example/shop/web".into(),
            "destination",
        ),
        (
            |s| s.cache_ref = "registry.example/shop/Web".into(),
            "cacheRef",
        ),
        (|s| s.images.git = "alpine/git:v2 ; x".into(), "images.git"),
        (|s| s.timeout_seconds = 0, "timeoutSeconds"),
        (|s| s.timeout_seconds = 24 * 3600 + 1, "timeoutSeconds"),
        (
            |s| s.ttl_seconds_after_finished = -1,
            "ttlSecondsAfterFinished",
        ),
        (|s| s.service_name = "Web".into(), "serviceName"),
        (
            |s| s.resources.memory_limit = Some("4 GB".into()),
            "resources.memoryLimit",
        ),
        (
            |s| s.scratch_size_limit = Some("lots".into()),
            "scratchSizeLimit",
        ),
        (|s| s.git_auth = GitAuth::SshKey, "repositoryUrl"),
        (
            |s| s.repository_url = "http://git.example.com/acme/shop.git".into(),
            "repositoryUrl",
        ),
        (
            |s| {
                s.annotations
                    .insert("example.com/x".into(), "foreign prefix".into());
            },
            "annotations[\"example.com/x\"]",
        ),
        (
            |s| {
                s.annotations.insert("ferry.dev/".into(), "no name".into());
            },
            "annotations[\"ferry.dev/\"]",
        ),
        (
            |s| {
                s.annotations
                    .insert("ferry.dev/big".into(), "x".repeat(40 * 1024));
            },
            "annotations",
        ),
    ];
    for (mutate, field) in cases {
        let mut spec = dockerfile_spec();
        mutate(&mut spec);
        assert_eq!(invalid_field(render_build(&spec)), field);
    }
    let err = {
        let mut spec = dockerfile_spec();
        spec.build_args[1].0 = "1BAD".into();
        render_build(&spec).unwrap_err().to_string()
    };
    assert!(
        err.starts_with("invalid buildArgs[1].name: \"1BAD\""),
        "{err}"
    );
}

#[test]
fn annotations_go_on_the_job_only() {
    let mut spec = dockerfile_spec();
    spec.annotations
        .insert("ferry.dev/commit-sha".into(), COMMIT.into());
    let job = job_json(&spec);
    assert_eq!(
        job["metadata"]["annotations"]["ferry.dev/commit-sha"],
        COMMIT
    );
    assert!(job["spec"]["template"]["metadata"]["annotations"].is_null());
    let secret = serde_json::to_value(render_build_secret(&spec, &credentials()).unwrap()).unwrap();
    assert!(secret["metadata"]["annotations"].is_null(), "{secret}");
    // None: no empty annotations map.
    assert!(job_json(&dockerfile_spec())["metadata"]["annotations"].is_null());
}

#[test]
fn plain_http_repositories_only_when_allowed() {
    let mut spec = dockerfile_spec();
    spec.repository_url = "http://gitea.ferry-system:3000/acme/shop.git".into();
    assert_eq!(invalid_field(render_build(&spec)), "repositoryUrl");
    spec.allow_http = true;
    let job = render_build(&spec).unwrap();
    let fetch = container(&job, "clone-fetch");
    let protocols = fetch
        .env
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.name == "GIT_ALLOW_PROTOCOL")
        .and_then(|e| e.value);
    assert_eq!(protocols.as_deref(), Some("https:ssh:http"));
    // The token is stored for the http origin git asks about.
    let secret = render_build_secret(&spec, &credentials()).unwrap();
    let line = secret.data.unwrap()["git-credentials"].0.clone();
    let line = String::from_utf8(line).unwrap();
    assert!(
        line.starts_with("http://x-access-token:") && line.ends_with("@gitea.ferry-system:3000\n"),
        "{line}"
    );
    // https specs keep https only.
    let job = render_build(&dockerfile_spec()).unwrap();
    let env = container(&job, "clone-init").env.unwrap_or_default();
    assert!(
        env.iter()
            .any(|e| e.name == "GIT_ALLOW_PROTOCOL" && e.value.as_deref() == Some("https:ssh"))
    );
}

#[test]
fn credentials_must_match_the_spec() {
    let spec = dockerfile_spec();
    let mut c = credentials();
    c.git = GitCredential::None;
    assert_eq!(
        invalid_field(render_build_secret(&spec, &c)),
        "credentials.git"
    );
    let mut c = credentials();
    c.secret_build_args.clear();
    assert_eq!(
        invalid_field(render_build_secret(&spec, &c)),
        "credentials.secretBuildArgs"
    );
    let mut c = credentials();
    c.secret_build_args
        .push(("OTHER".into(), ferry_k8s::spec::SecretValue("x".into())));
    assert_eq!(
        invalid_field(render_build_secret(&spec, &c)),
        "credentials.secretBuildArgs[1].name"
    );
    let mut ssh = ssh_credentials();
    if let GitCredential::SshKey { known_hosts, .. } = &mut ssh.git {
        known_hosts.clear();
    }
    assert_eq!(
        invalid_field(render_build_secret(&buildpacks_spec(), &ssh)),
        "credentials.git.knownHosts"
    );
    // Debug never shows a secret value.
    let debug = format!("{:?}", credentials());
    for secret in SECRETS {
        assert!(!debug.contains(secret));
    }
}

fn cluster_ranges() -> EgressPolicy {
    EgressPolicy {
        pod_cidrs: vec!["10.244.0.0/16".into(), "fd00:10:244::/56".into()],
        service_cidrs: vec!["10.96.0.0/12".into()],
        node_cidrs: vec!["192.168.10.0/24".into()],
        api_server: vec!["192.168.10.2".into(), "fd00::1".into()],
    }
}

#[test]
fn builds_namespace_is_privileged_but_fenced() {
    let ns = builds_namespace("ferry-builds", &cluster_ranges()).unwrap();
    let labels = ns.namespace.metadata.labels.clone().unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "privileged");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "baseline");
    assert_eq!(labels["pod-security.kubernetes.io/audit"], "baseline");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "ferry");

    let deny = serde_json::to_value(&ns.deny_ingress).unwrap();
    assert_eq!(
        deny["spec"],
        json!({ "podSelector": {}, "policyTypes": ["Ingress"] })
    );
    let egress = serde_json::to_value(&ns.egress).unwrap();
    assert_eq!(egress["spec"]["policyTypes"], json!(["Egress"]));
    let rules = egress["spec"]["egress"].as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(
        rules[0],
        json!({
            "to": [{
                "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } },
                "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } },
            }],
            "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }],
        })
    );
    assert_eq!(
        rules[1]["to"],
        json!([
            { "ipBlock": { "cidr": "0.0.0.0/0", "except": [
                "10.244.0.0/16", "10.96.0.0/12", "169.254.169.254/32", "192.168.10.0/24", "192.168.10.2/32",
            ]}},
            { "ipBlock": { "cidr": "::/0", "except": [
                "fd00:10:244::/56", "fd00::1/128", "fd00:ec2::254/128",
            ]}},
        ])
    );
    assert!(rules[1].get("ports").is_none());
    assert_eq!(ns.values().len(), 3);

    let mut bad = cluster_ranges();
    bad.pod_cidrs[1] = "10.244.0.0/33".into();
    assert_eq!(
        invalid_field(builds_namespace("ferry-builds", &bad)),
        "egress.podCidrs[1]"
    );
    let mut all = cluster_ranges();
    all.node_cidrs = vec!["0.0.0.0/0".into()];
    assert_eq!(
        invalid_field(builds_namespace("ferry-builds", &all)),
        "egress.nodeCidrs[0]"
    );
    assert_eq!(
        invalid_field(builds_namespace("Builds", &cluster_ranges())),
        "name"
    );
}

// ------------------------------------------------------------- outcomes

const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn job(conditions: Value) -> Job {
    serde_json::from_value(json!({
        "metadata": { "name": "ferry-build-123456789abc", "uid": "job-uid" },
        "spec": { "template": {} },
        "status": { "conditions": conditions },
    }))
    .unwrap()
}

/// A build pod (Dockerfile kind) whose containers have these states.
fn pod(states: &[(&str, Value)]) -> Pod {
    let status = |name: &str, state: &Value| json!({ "name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": state });
    let init: Vec<Value> = states
        .iter()
        .filter(|(n, _)| *n != "build")
        .map(|(n, s)| status(n, s))
        .collect();
    let main: Vec<Value> = states
        .iter()
        .filter(|(n, _)| *n == "build")
        .map(|(n, s)| status(n, s))
        .collect();
    let container = |name: &str| json!({ "name": name });
    let init_containers = ["clone-init", "clone-fetch", "clone-checkout"].map(container);
    serde_json::from_value(json!({
        "metadata": {
            "name": "ferry-build-123456789abc-x2b4z",
            "labels": { "batch.kubernetes.io/controller-uid": "job-uid" },
        },
        "spec": {
            "initContainers": init_containers,
            "containers": [container("build")],
        },
        "status": { "phase": "Running", "initContainerStatuses": init, "containerStatuses": main },
    }))
    .unwrap()
}

fn done() -> Value {
    json!({ "terminated": { "exitCode": 0, "reason": "Completed" } })
}

fn waiting(reason: &str) -> Value {
    json!({ "waiting": { "reason": reason, "message": "details" } })
}

fn clone_done() -> Vec<(&'static str, Value)> {
    vec![
        ("clone-init", done()),
        ("clone-fetch", done()),
        ("clone-checkout", done()),
    ]
}

#[test]
fn outcome_follows_the_containers_in_order() {
    let job = job(json!([]));
    assert!(matches!(
        BuildOutcome::from_job(&job, &[]),
        BuildOutcome::Pending { .. }
    ));
    let first_waiting = pod(&[
        ("clone-init", waiting("PodInitializing")),
        ("clone-fetch", waiting("PodInitializing")),
        ("clone-checkout", waiting("PodInitializing")),
        ("build", waiting("PodInitializing")),
    ]);
    assert_eq!(
        BuildOutcome::from_job(&job, &[first_waiting]),
        BuildOutcome::Pending {
            reason: "PodInitializing".into()
        }
    );
    let cloning = pod(&[
        ("clone-init", done()),
        ("clone-fetch", json!({ "running": {} })),
        ("clone-checkout", waiting("PodInitializing")),
        ("build", waiting("PodInitializing")),
    ]);
    assert_eq!(
        BuildOutcome::from_job(&job, &[cloning]),
        BuildOutcome::Running {
            step: BuildStep::Clone
        }
    );
    // Between steps: the next one is about to start.
    let mut between = clone_done();
    between.push(("build", waiting("PodInitializing")));
    assert_eq!(
        BuildOutcome::from_job(&job, &[pod(&between)]),
        BuildOutcome::Running {
            step: BuildStep::Build
        }
    );
    // A pod of another Job is ignored.
    let mut foreign = pod(&between);
    foreign.metadata.labels = None;
    assert!(matches!(
        BuildOutcome::from_job(&job, &[foreign]),
        BuildOutcome::Pending { .. }
    ));
}

#[test]
fn outcome_reads_the_digest_and_the_failures() {
    let running = job(json!([]));
    let mut built = clone_done();
    built.push((
        "build",
        json!({ "terminated": { "exitCode": 0, "reason": "Completed",
            "message": format!(r#"{{"containerimage.digest":"{DIGEST}"}}"#) } }),
    ));
    let complete = job(json!([{ "type": "Complete", "status": "True" }]));
    for job in [&running, &complete] {
        assert_eq!(
            BuildOutcome::from_job(job, &[pod(&built)]),
            BuildOutcome::Succeeded {
                digest: DIGEST.into()
            }
        );
    }
    // Completed, but the digest is not a digest.
    let mut bad = clone_done();
    bad.push((
        "build",
        json!({ "terminated": { "exitCode": 0, "message": r#"{"containerimage.digest":"sha256:xyz"}"# } }),
    ));
    assert!(matches!(
        BuildOutcome::from_job(&complete, &[pod(&bad)]),
        BuildOutcome::Failed {
            reason: FailureReason::NoDigest,
            ..
        }
    ));
    assert!(matches!(
        BuildOutcome::from_job(&complete, &[]),
        BuildOutcome::Failed {
            reason: FailureReason::NoDigest,
            ..
        }
    ));

    let failed =
        job(json!([{ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded" }]));
    let oom = {
        let mut states = clone_done();
        states.push((
            "build",
            json!({ "terminated": { "exitCode": 137, "reason": "OOMKilled", "message": "killed" } }),
        ));
        pod(&states)
    };
    assert_eq!(
        BuildOutcome::from_job(&failed, &[oom]),
        BuildOutcome::Failed {
            step: Some(BuildStep::Build),
            reason: FailureReason::OutOfMemory,
            exit_code: Some(137),
            message: "killed".into(),
        }
    );
    let pull = pod(&[
        ("clone-init", waiting("ImagePullBackOff")),
        ("clone-fetch", waiting("PodInitializing")),
        ("clone-checkout", waiting("PodInitializing")),
        ("build", waiting("PodInitializing")),
    ]);
    assert!(matches!(
        BuildOutcome::from_job(&running, &[pull]),
        BuildOutcome::Failed {
            step: Some(BuildStep::Clone),
            reason: FailureReason::ImagePull,
            ..
        }
    ));

    let deadline = job(
        json!([{ "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
        "message": "Job was active longer than specified deadline" }]),
    );
    let mut building = clone_done();
    building.push(("build", json!({ "running": {} })));
    assert_eq!(
        BuildOutcome::from_job(&deadline, &[pod(&building)]),
        BuildOutcome::Failed {
            step: Some(BuildStep::Build),
            reason: FailureReason::TimedOut,
            exit_code: None,
            message: "Job was active longer than specified deadline".into(),
        }
    );
    assert!(BuildOutcome::from_job(&deadline, &[]).is_terminal());
}
