//! Push webhooks over real HTTP, through a real ferry-proxy fed by the api's
//! route feed, to the api's HTTP listener, on SQLite and PostgreSQL: every
//! provider's signature scheme, forged / missing signatures (401, nothing
//! recorded), unknown integrations (404), replays (recorded once, built
//! once), branch filters, newer pushes superseding older builds, and the
//! body cap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::builds::signature::sign_hex;
use ferry_api::builds::webhook::Webhooks;
use ferry_api::feed::FeedHub;
use ferry_common::Shutdown;
use ferry_db::entities::webhook_deliveries;
use ferry_db::sea_orm::{DatabaseConnection, EntityTrait as _, PaginatorTrait as _};
use ferry_proto::ferry::v1 as pb;
use pb::git_service_client::GitServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::service_service_client::ServiceServiceClient;
use serde_json::json;
use support::*;
use tokio::net::TcpListener;
use tonic::transport::Channel;

const FEED_TOKEN: &str = "webhook-test-feed-token";
const PUBLIC_HOST: &str = "ferry.example.test";

/// The api (gRPC + HTTP listener) and a proxy fed by it.
struct Stack {
    api: Api,
    http: SocketAddr,
    proxy: SocketAddr,
    stop: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _state_dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("ferry-hooks-{}", uuid::Uuid::now_v7()));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }
}

async fn start_stack(db: &DatabaseConnection) -> Stack {
    let stop = Shutdown::new();
    let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = http_listener.local_addr().unwrap();
    let mut state = ferry_api::testing::state(db, Some(FEED_TOKEN));
    state.feed = FeedHub::with_installation_route(PUBLIC_HOST, &http.to_string());
    state.feed.reload(db, &state.keyring).await.unwrap();
    let api = start_state(&state, relaxed()).await;
    let mut tasks = vec![tokio::spawn(ferry_api::http::serve(
        http_listener,
        Webhooks::new(db.clone(), state.keyring.clone()),
        stop.clone(),
        Duration::from_secs(1),
    ))];

    let dir = tempdir::Dir::new();
    let args = support::proxy::args(&format!("http://{}", api.addr), FEED_TOKEN, &dir.0);
    let listeners = ferry_proxy::Listeners::bind(&args).await.unwrap();
    let proxy = listeners.http_addr().unwrap();
    let proxy_state = Arc::new(ferry_proxy::ProxyState::default());
    let proxy_stop = stop.clone();
    tasks.push(tokio::spawn(async move {
        ferry_proxy::run_with_listeners(args, listeners, proxy_state, proxy_stop)
            .await
            .unwrap();
    }));
    // The installation route reaches the proxy over the feed.
    for _ in 0..250 {
        let (status, _) = post(proxy, "/hooks/git/not-an-id", &[], b"{}").await;
        if status == 404 {
            let (_, body) = post(proxy, "/hooks/git/not-an-id", &[], b"{}").await;
            if body.contains("unknown integration") {
                return Stack {
                    api,
                    http,
                    proxy,
                    stop,
                    tasks,
                    _state_dir: dir,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the proxy never routed /hooks/ to the api");
}

impl Stack {
    async fn stop(self) {
        self.stop.trigger();
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .unwrap()
                .unwrap();
        }
        self.api.stop().await;
    }
}

/// One POST with `Host: PUBLIC_HOST`; (status, body).
async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    http_post(addr, PUBLIC_HOST, path, headers, body).await
}

struct Owner {
    git: GitServiceClient<Channel>,
    services: ServiceServiceClient<Channel>,
    token: String,
    org: String,
    project: String,
}

async fn owner(api: &Api) -> Owner {
    let mut c = clients(api.addr).await;
    register(&mut c, "hookie").await;
    let token = login(&mut c, "hookie").await;
    let org = create_org(&mut c, &token, "Hook Org").await.id;
    let project = ProjectServiceClient::new(c.channel.clone())
        .create_project(authed(
            pb::CreateProjectRequest {
                organization_id: org.clone(),
                name: "Shop".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    Owner {
        git: GitServiceClient::new(c.channel.clone()),
        services: ServiceServiceClient::new(c.channel.clone()),
        token,
        org,
        project,
    }
}

/// A provider's integration, a service building `repo` from `main`.
async fn connect(
    o: &mut Owner,
    provider: pb::GitProvider,
    name: &str,
    repo: &str,
) -> (pb::GitIntegration, String) {
    let integration = o
        .git
        .create_git_integration(authed(
            pb::CreateGitIntegrationRequest {
                organization_id: o.org.clone(),
                provider: provider.into(),
                name: name.into(),
                base_url: match provider {
                    pb::GitProvider::Gitea | pb::GitProvider::Forgejo => {
                        "https://git.example.test".into()
                    }
                    _ => String::new(),
                },
                token: if provider == pb::GitProvider::Generic {
                    String::new()
                } else {
                    "tok_0123456789".into()
                },
                webhook_secret: String::new(),
                ssh_known_hosts: String::new(),
            },
            &o.token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        integration.webhook_secret.len(),
        64,
        "generated, shown once"
    );
    let service = o
        .services
        .create_service(authed(
            pb::CreateServiceRequest {
                project_id: o.project.clone(),
                name: name.into(),
                spec: Some(pb::create_service_request::Spec::Application(
                    pb::ApplicationSpec {
                        image: "ghcr.io/acme/placeholder:1".into(),
                        ..Default::default()
                    },
                )),
                ports: vec![],
            },
            &o.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    o.git
        .set_build_config(authed(
            pb::SetBuildConfigRequest {
                service_id: service.clone(),
                git_integration_id: integration.id.clone(),
                repository: repo.into(),
                branch: "main".into(),
                auto_deploy: true,
                ..Default::default()
            },
            &o.token,
        ))
        .await
        .unwrap();
    (integration, service)
}

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

/// A push body and its headers as `provider` sends them, signed with `secret`.
fn push(
    provider: pb::GitProvider,
    secret: &str,
    delivery: &str,
    repo: &str,
    branch: &str,
    after: &str,
) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let before = sha('a');
    let body = match provider {
        pb::GitProvider::Gitlab => json!({
            "object_kind": "push", "ref": format!("refs/heads/{branch}"),
            "before": before, "after": after, "user_name": "Lin",
            "project": {"path_with_namespace": repo},
            "commits": [{"id": after, "message": "feat"}]
        }),
        pb::GitProvider::Bitbucket => json!({
            "repository": {"full_name": repo},
            "push": {"changes": [{
                "old": {"type": "branch", "name": branch, "target": {"hash": before}},
                "new": {"type": "branch", "name": branch, "target": {"hash": after, "message": "m"}}
            }]}
        }),
        _ => json!({
            "ref": format!("refs/heads/{branch}"), "before": before, "after": after,
            "repository": {"full_name": repo, "clone_url": format!("https://example.test/{repo}.git")},
            "head_commit": {"message": "fix", "author": {"name": "Ada"}}
        }),
    }
    .to_string()
    .into_bytes();
    let sig = sign_hex(secret.as_bytes(), &body);
    let headers = match provider {
        pb::GitProvider::Gitlab => vec![
            ("X-Gitlab-Event", "Push Hook".to_owned()),
            ("X-Gitlab-Event-UUID", delivery.to_owned()),
            ("X-Gitlab-Token", secret.to_owned()),
        ],
        pb::GitProvider::Bitbucket => vec![
            ("X-Event-Key", "repo:push".to_owned()),
            ("X-Request-UUID", delivery.to_owned()),
            ("X-Hub-Signature", format!("sha256={sig}")),
        ],
        pb::GitProvider::Gitea => vec![
            ("X-Gitea-Event", "push".to_owned()),
            ("X-Gitea-Delivery", delivery.to_owned()),
            ("X-Gitea-Signature", sig),
        ],
        pb::GitProvider::Forgejo => vec![
            ("X-Forgejo-Event", "push".to_owned()),
            ("X-Forgejo-Delivery", delivery.to_owned()),
            ("X-Forgejo-Signature", sig),
        ],
        _ => vec![
            ("X-GitHub-Event", "push".to_owned()),
            ("X-GitHub-Delivery", delivery.to_owned()),
            ("X-Hub-Signature-256", format!("sha256={sig}")),
        ],
    };
    (headers, body)
}

async fn builds(o: &mut Owner, service: &str) -> Vec<pb::Build> {
    o.git
        .list_builds(authed(
            pb::ListBuildsRequest {
                service_id: service.into(),
                ..Default::default()
            },
            &o.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .builds
}

async fn deliveries(o: &mut Owner, service: &str) -> Vec<pb::WebhookDelivery> {
    o.git
        .list_webhook_deliveries(authed(
            pb::ListWebhookDeliveriesRequest {
                service_id: service.into(),
                ..Default::default()
            },
            &o.token,
        ))
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

async fn delivery_rows(db: &DatabaseConnection) -> u64 {
    webhook_deliveries::Entity::find().count(db).await.unwrap()
}

/// The secret shown once at creation (the test kept it).
fn hook_path(i: &pb::GitIntegration) -> String {
    let path = i.webhook_url.split_once("/hooks/").unwrap().1;
    format!("/hooks/{path}")
}

#[tokio::test]
async fn every_provider_signs_and_a_push_queues_one_build_through_the_proxy() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let stack = start_stack(&db.conn).await;
        let mut o = owner(&stack.api).await;
        for (n, provider) in [
            pb::GitProvider::Github,
            pb::GitProvider::Gitlab,
            pb::GitProvider::Gitea,
            pb::GitProvider::Forgejo,
            pb::GitProvider::Bitbucket,
            pb::GitProvider::Generic,
        ]
        .into_iter()
        .enumerate()
        {
            let repo = format!("acme/app{n}");
            // Generic servers are named by their clone URL.
            let configured = if provider == pb::GitProvider::Generic {
                format!("https://example.test/{repo}.git")
            } else {
                repo.clone()
            };
            let (integration, service) =
                connect(&mut o, provider, &format!("svc{n}"), &configured).await;
            let secret = integration.webhook_secret.clone();
            let path = hook_path(&integration);
            let after = sha('b');
            let (headers, body) = push(provider, &secret, &format!("d-{n}"), &repo, "main", &after);

            // Forged: the right headers, signed with another secret.
            let rows = delivery_rows(&db.conn).await;
            let (forged_headers, _) = push(
                provider,
                "not-the-secret-at-all",
                "f",
                &repo,
                "main",
                &after,
            );
            let (status, _) = post(stack.proxy, &path, &forged_headers, &body).await;
            assert_eq!(status, 401, "{b} {provider:?}: forged");
            // Missing signature.
            let unsigned: Vec<_> = headers
                .iter()
                .filter(|(k, _)| !k.contains("Signature") && !k.contains("Token"))
                .cloned()
                .collect();
            let (status, _) = post(stack.proxy, &path, &unsigned, &body).await;
            assert_eq!(status, 401, "{b} {provider:?}: unsigned");
            // A valid signature over another body.
            let mut tampered = body.clone();
            tampered.extend_from_slice(b" ");
            let (status, _) = post(stack.proxy, &path, &headers, &tampered).await;
            if provider == pb::GitProvider::Gitlab {
                // GitLab signs nothing: its shared token is the proof.
                assert_eq!(status, 202, "{b}: gitlab token");
            } else {
                assert_eq!(status, 401, "{b} {provider:?}: tampered body");
                assert_eq!(
                    delivery_rows(&db.conn).await,
                    rows,
                    "{b}: refusals record nothing"
                );
            }

            let (status, answer) = post(stack.proxy, &path, &headers, &body).await;
            let expected = if provider == pb::GitProvider::Gitlab {
                200
            } else {
                202
            };
            assert_eq!(status, expected, "{b} {provider:?}: {answer}");
            let list = builds(&mut o, &service).await;
            assert_eq!(list.len(), 1, "{b} {provider:?}: {list:?}");
            assert_eq!(list[0].status(), pb::BuildStatus::Queued, "{b}");
            assert_eq!(list[0].trigger(), pb::DeploymentTrigger::Webhook, "{b}");
            assert_eq!(list[0].commit_sha, after, "{b}");
            let d = deliveries(&mut o, &service).await;
            assert_eq!(d.len(), 1, "{b} {provider:?}");
            assert_eq!(d[0].status(), pb::WebhookDeliveryStatus::Queued, "{b}");
            assert_eq!(d[0].build_id, list[0].id, "{b}");
            assert_eq!(d[0].branch, "main", "{b}");
        }
        stack.stop().await;
    }
}

#[tokio::test]
async fn replays_branches_supersession_unknown_ids_and_the_body_cap() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let stack = start_stack(&db.conn).await;
        let mut o = owner(&stack.api).await;
        let (gh, web) = connect(&mut o, pb::GitProvider::Github, "web", "acme/web").await;
        let path = hook_path(&gh);
        let secret = gh.webhook_secret.clone();

        let (h1, body1) = push(
            pb::GitProvider::Github,
            &secret,
            "one",
            "acme/web",
            "main",
            &sha('1'),
        );
        let (status, answer) = post(stack.proxy, &path, &h1, &body1).await;
        assert_eq!(status, 202, "{b}: {answer}");
        assert!(answer.contains("\"builds\""), "{b}: {answer}");

        // Replayed: the same delivery id records nothing and builds nothing.
        for _ in 0..3 {
            let (status, answer) = post(stack.proxy, &path, &h1, &body1).await;
            assert_eq!(status, 200, "{b}: {answer}");
            assert!(answer.contains("duplicate"), "{b}: {answer}");
        }
        assert_eq!(builds(&mut o, &web).await.len(), 1, "{b}");
        assert_eq!(deliveries(&mut o, &web).await.len(), 1, "{b}");

        // Another branch: recorded as ignored, with the reason.
        let (h, body) = push(
            pb::GitProvider::Github,
            &secret,
            "two",
            "acme/web",
            "feature/x",
            &sha('2'),
        );
        assert_eq!(post(stack.proxy, &path, &h, &body).await.0, 202, "{b}");
        let d = deliveries(&mut o, &web).await;
        assert_eq!(d[0].status(), pb::WebhookDeliveryStatus::Ignored, "{b}");
        assert!(
            d[0].reason
                .contains("feature/x is not the watched branch main"),
            "{b}: {}",
            d[0].reason
        );
        assert_eq!(builds(&mut o, &web).await.len(), 1, "{b}");

        // Another repository: recorded without a service.
        let (h, body) = push(
            pb::GitProvider::Github,
            &secret,
            "three",
            "acme/other",
            "main",
            &sha('3'),
        );
        let (status, answer) = post(stack.proxy, &path, &h, &body).await;
        assert_eq!(status, 202, "{b}");
        assert!(
            answer.contains("no service builds this repository"),
            "{b}: {answer}"
        );

        // A newer push supersedes the queued build.
        let (h, body) = push(
            pb::GitProvider::Github,
            &secret,
            "four",
            "acme/web",
            "main",
            &sha('4'),
        );
        assert_eq!(post(stack.proxy, &path, &h, &body).await.0, 202, "{b}");
        let list = builds(&mut o, &web).await;
        assert_eq!(list.len(), 2, "{b}");
        assert_eq!(
            (list[0].status(), list[1].status()),
            (pb::BuildStatus::Queued, pb::BuildStatus::Cancelled),
            "{b}: newest first"
        );
        assert!(
            list[1].message.contains("superseded"),
            "{b}: {}",
            list[1].message
        );

        // Unknown integrations.
        let ghost = format!("/hooks/git/{}", uuid::Uuid::now_v7());
        assert_eq!(post(stack.proxy, &ghost, &h, &body).await.0, 404, "{b}");
        assert_eq!(
            post(stack.proxy, "/hooks/git/x", &h, &body).await.0,
            404,
            "{b}"
        );

        // The body cap (direct and through the proxy): 413, nothing read.
        let big = vec![b' '; 2 * 1024 * 1024];
        let (status, _) = post(stack.http, &path, &h, &big).await;
        assert_eq!(status, 413, "{b}");

        // Ping events are recorded, not built.
        let ping = br#"{"zen":"Keep it logically awesome."}"#;
        let sig = sign_hex(secret.as_bytes(), ping);
        let headers = vec![
            ("X-GitHub-Event", "ping".to_owned()),
            ("X-GitHub-Delivery", "ping-1".to_owned()),
            ("X-Hub-Signature-256", format!("sha256={sig}")),
        ];
        let (status, answer) = post(stack.proxy, &path, &headers, ping).await;
        assert_eq!(status, 202, "{b}");
        assert!(
            answer.contains("ping events are not pushes"),
            "{b}: {answer}"
        );
        stack.stop().await;
    }
}
