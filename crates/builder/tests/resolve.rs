//! What the builder does before a Job: resolve the branch on a real git
//! server, check watch paths against the real diff, detect the build type
//! on a real checkout, and plan without a cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use common::*;
use ferry_builder::PLANNED_REASON;
use ferry_builder::testing::{self, TestConfig};
use ferry_k8s::fake::FakeCluster;
use ferry_k8s::spec::{RegistryAuth, SecretValue};
use ferry_proto::ferry::internal::v1 as pb;
use pb::build_event::Event;

const NODE_PACKAGE: &str = r#"{"name":"web","dependencies":{"next":"15.0.0"}}"#;

fn planned(events: &[Event]) -> &pb::Planned {
    match events.last() {
        Some(Event::Planned(p)) => p,
        other => panic!("expected Planned, got {other:?} in {events:?}"),
    }
}

#[tokio::test]
async fn auto_detects_a_dockerfile_in_the_root_dir() {
    let git = git().await;
    let repo = git.create_repo("mono").await.unwrap();
    let sha = repo
        .commit(
            "main",
            &[
                ("apps/web/Dockerfile", "FROM scratch\n"),
                ("apps/web/package.json", NODE_PACKAGE),
                ("README.md", "mono\n"),
            ],
        )
        .await
        .unwrap();
    let builder = builder(None).await;
    let mut req = request(repo.url(), build_id(10));
    req.root_dir = "apps/web".into();
    req.dockerfile_target = "runtime".into();
    let mut stream = run(&builder, req).await;
    let resolved = resolved(next(&mut stream).await);
    assert_eq!(resolved.commit_sha, sha.as_str());
    assert_eq!(resolved.build_type, "dockerfile");
    assert_eq!(
        resolved.detection,
        ["Dockerfile found at apps/web/Dockerfile"]
    );
    let events = rest(&mut stream).await;
    let yaml = &planned(&events).job_yaml;
    assert!(yaml.contains("filename=Dockerfile"), "{yaml}");
    assert!(yaml.contains("target=runtime"), "{yaml}");
    assert!(yaml.contains("context=/workspace/src/apps/web"), "{yaml}");
}

#[tokio::test]
async fn without_a_cluster_a_node_app_is_detected_and_planned_without_secrets() {
    const GIT_TOKEN: &str = "gitea-token-6b1d2f";
    const NPM_TOKEN: &str = "npm-secret-9c3e71";
    const PUSH_PASSWORD: &str = "push-password-2e8f40";
    let git = git().await;
    let repo = git.create_private_repo("web", GIT_TOKEN).await.unwrap();
    let sha = repo
        .commit(
            "main",
            &[
                ("package.json", NODE_PACKAGE),
                ("pnpm-lock.yaml", "lockfileVersion: 9\n"),
            ],
        )
        .await
        .unwrap();
    let mut config = TestConfig::new();
    config.config.registry_auth = Some(RegistryAuth {
        server: "registry.ferry.test".into(),
        username: "pusher".into(),
        password: SecretValue(PUSH_PASSWORD.into()),
    });
    let builder = testing::start(config).await.unwrap();
    let mut req = request(repo.url(), build_id(11));
    req.credential = Some(pb::GitCredential {
        kind: Some(pb::git_credential::Kind::Token(pb::TokenCredential {
            username: "ferry".into(),
            token: GIT_TOKEN.into(),
        })),
        ssh_known_hosts: String::new(),
    });
    req.build_args
        .insert("NODE_ENV".into(), "production".into());
    req.secret_build_args
        .insert("NPM_TOKEN".into(), NPM_TOKEN.into());
    let mut stream = run(&builder, req).await;
    let resolved = resolved(next(&mut stream).await);
    assert_eq!(resolved.commit_sha, sha.as_str());
    assert_eq!(resolved.build_type, "railpack");
    assert_eq!(
        resolved.detection,
        ["package.json with next dependency: Node.js (Next.js), pnpm (pnpm-lock.yaml)"]
    );
    let events = rest(&mut stream).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let plan = planned(&events);
    assert_eq!(plan.reason, PLANNED_REASON);
    let yaml = &plan.job_yaml;
    assert!(
        yaml.starts_with("apiVersion: batch/v1\nkind: Job\n"),
        "{yaml}"
    );
    assert!(yaml.contains(sha.as_str()));
    assert!(yaml.contains("registry.ferry.test/ferry/shop/web:"));
    assert!(
        yaml.contains("build-arg:NODE_ENV=production"),
        "plain args are visible"
    );
    assert!(yaml.contains("id=NPM_TOKEN"), "secret args by name only");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ferry:{GIT_TOKEN}"));
    for secret in [GIT_TOKEN, NPM_TOKEN, PUSH_PASSWORD, basic.as_str()] {
        assert!(!yaml.contains(secret), "{secret} in the plan:\n{yaml}");
    }
}

#[tokio::test]
async fn a_repository_with_nothing_to_build_fails_detection() {
    let git = git().await;
    let repo = git.create_repo("docs").await.unwrap();
    repo.commit("main", &[("README.md", "just docs\n")])
        .await
        .unwrap();
    let builder = builder(None).await;
    let events = rest(&mut run(&builder, request(repo.url(), build_id(12))).await).await;
    let [Event::Failed(failed)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(failed.step, "detect");
    assert!(
        failed.reason.starts_with("could not detect how to build"),
        "{}",
        failed.reason
    );
}

#[tokio::test]
async fn watch_paths_skip_pushes_that_touch_nothing_watched() {
    let fake = FakeCluster::new();
    let git = git().await;
    let repo = git.create_repo("mono").await.unwrap();
    let first = repo
        .commit(
            "main",
            &[
                ("apps/web/Dockerfile", "FROM scratch\n"),
                ("apps/api/main.go", "package main\n"),
            ],
        )
        .await
        .unwrap();
    let api_only = repo
        .commit("main", &[("apps/api/main.go", "package main // v2\n")])
        .await
        .unwrap();
    let builder = builder(Some(&fake)).await;
    let push = |id, before: &ferry_git::CommitSha, after: &ferry_git::CommitSha| {
        let mut req = request(repo.url(), build_id(id));
        req.root_dir = "apps/web".into();
        req.before_sha = before.to_string();
        req.commit_sha = after.to_string();
        req.watch_paths = vec!["apps/web/**".into()];
        req
    };

    let events = rest(&mut run(&builder, push(20, &first, &api_only)).await).await;
    let [Event::Skipped(skipped)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(
        skipped.reason,
        "no watched path changed: 1 file changed, none matches apps/web/**"
    );
    assert_eq!(job_applies(&fake), 0, "a skipped build starts nothing");

    let web = repo
        .commit(
            "main",
            &[("apps/web/Dockerfile", "FROM scratch\nCOPY . /\n")],
        )
        .await
        .unwrap();
    let mut stream = run(&builder, push(21, &api_only, &web)).await;
    let (before, resolved) = until(&mut stream, |e| matches!(e, Event::Resolved(_))).await;
    let [Event::Progress(why)] = before.as_slice() else {
        panic!("{before:?}");
    };
    assert_eq!(
        why.message,
        "watch paths: apps/web/Dockerfile matched apps/web/**"
    );
    let Event::Resolved(resolved) = resolved else {
        unreachable!()
    };
    assert_eq!(resolved.commit_sha, web.as_str());
    eventually("the Job is created", || job_applies(&fake) == 1).await;

    // A new branch has no diff to check: built anyway, and said so.
    let mut req = push(22, &web, &web);
    req.before_sha = "0".repeat(40);
    let mut stream = run(&builder, req).await;
    let (before, _) = until(&mut stream, |e| matches!(e, Event::Resolved(_))).await;
    assert!(
        matches!(before.as_slice(), [Event::Progress(p)] if p.message.contains("new branch")),
        "{before:?}"
    );
}

#[tokio::test]
async fn private_repositories_resolve_with_the_right_token_only() {
    const TOKEN: &str = "right-token-4f2a9e";
    const WRONG: &str = "wrong-token-7c1b3d";
    let git = git().await;
    let repo = git.create_private_repo("private", TOKEN).await.unwrap();
    let sha = repo
        .commit("main", &[("Dockerfile", "FROM scratch\n")])
        .await
        .unwrap();
    let builder = builder(None).await;
    let with = |id, token: &str| {
        let mut req = request(repo.url(), build_id(id));
        req.credential = Some(pb::GitCredential {
            kind: Some(pb::git_credential::Kind::Token(pb::TokenCredential {
                username: String::new(),
                token: token.into(),
            })),
            ssh_known_hosts: String::new(),
        });
        req
    };
    let mut stream = run(&builder, with(30, TOKEN)).await;
    assert_eq!(resolved(next(&mut stream).await).commit_sha, sha.as_str());

    let events = rest(&mut run(&builder, with(31, WRONG)).await).await;
    let [Event::Failed(failed)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(failed.step, "resolve");
    assert!(
        failed.reason.starts_with("git ls-remote failed"),
        "{}",
        failed.reason
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("git:{WRONG}"));
    let shown = format!("{failed:?}");
    assert!(!shown.contains(WRONG) && !shown.contains(&basic), "{shown}");

    // No credential at all.
    let events = rest(&mut run(&builder, request(repo.url(), build_id(32))).await).await;
    assert!(
        matches!(events.as_slice(), [Event::Failed(f)] if f.step == "resolve"),
        "{events:?}"
    );
}

/// Over ssh ([`SshServer`], where the machine can run sshd): the builder's
/// own resolve checks the host key against the integration's known_hosts
/// lines, as the Job does.
#[tokio::test]
async fn ssh_builds_check_the_host_key_before_any_job() {
    use ferry_git::testing::SshServer;
    if let Some(why) = SshServer::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let sshd = SshServer::start().await.unwrap();
    let git = git().await;
    let repo = git.create_repo("app").await.unwrap();
    let sha = repo
        .commit("main", &[("Dockerfile", "FROM scratch\n")])
        .await
        .unwrap();
    let builder = builder(None).await;
    let with = |id, known_hosts: String| {
        let mut req = request(&sshd.url(&repo).unwrap(), build_id(id));
        req.credential = Some(pb::GitCredential {
            kind: Some(pb::git_credential::Kind::SshPrivateKey(
                sshd.client_key().to_owned(),
            )),
            ssh_known_hosts: known_hosts,
        });
        req
    };
    let mut stream = run(&builder, with(35, sshd.known_hosts())).await;
    let first = next(&mut stream).await;
    let log = sshd.log();
    assert!(matches!(first, Event::Resolved(_)), "{first:?}\n{log}");
    assert_eq!(resolved(first).commit_sha, sha.as_str());
    let events = rest(&mut stream).await;
    assert_eq!(planned(&events).reason, PLANNED_REASON);

    let events = rest(&mut run(&builder, with(36, sshd.wrong_known_hosts())).await).await;
    let [Event::Failed(failed)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(failed.step, "resolve");
    assert!(
        failed.reason.contains("Host key verification failed"),
        "{}",
        failed.reason
    );
}

#[tokio::test]
async fn an_unknown_branch_fails_resolve_in_words() {
    let app = App::start(None).await;
    let mut req = app.request(40);
    req.branch = "release/9".into();
    let events = rest(&mut run(&app.builder, req).await).await;
    let [Event::Failed(failed)] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(failed.step, "resolve");
    assert!(
        failed.reason.contains("branch \"release/9\" not found"),
        "{}",
        failed.reason
    );
}
