//! The build runner against a scripted ferry-builder over real gRPC/TCP,
//! on SQLite and PostgreSQL: a build's events become rows (status, commit,
//! log lines on its deployment), success deploys the pushed image, failure
//! records the step and last lines, a skip marks the delivery ignored,
//! cancelling deletes the Job through the builder, an organization's
//! builds wait for its limit (`concurrentBuilds`, set by a super-admin
//! with SetOrganizationLimits) without holding back other organizations,
//! and its `buildCpu`/`buildMemory` reach the builder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_api::ApiState;
use ferry_api::builds::runner::{BuildRunner, RunnerConfig};
use ferry_common::Shutdown;
use ferry_db::entities::deployment_logs;
use ferry_db::entities::enums::OrgRole;
use ferry_db::sea_orm::{ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _};
use ferry_proto::ferry::internal::v1 as ipb;
use ferry_proto::ferry::v1 as pb;
use ipb::build_event::Event;
use ipb::builder_service_server::{BuilderService, BuilderServiceServer};
use pb::git_service_client::GitServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::service_service_client::ServiceServiceClient;
use support::*;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const BUILDER_TOKEN: &str = "builder-test-token-0123456789";
const IMAGE: &str = "registry.example.test/shop/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// What the fake builder does with one RunBuild.
#[derive(Clone)]
struct Script {
    events: Vec<Event>,
    /// Keep the stream open after the events until released.
    hold: bool,
    /// Sent once released (a verdict, say).
    then: Vec<Event>,
}

impl Script {
    /// Resolves `commit`, then waits for a release before finishing.
    fn held(commit: &str) -> Self {
        let mut finish = finish_script(commit);
        Script {
            events: vec![finish.events.remove(0)],
            hold: true,
            then: finish.events,
        }
    }
}

fn finish_script(commit: &str) -> Script {
    Script {
        events: vec![
            resolved(commit),
            Event::Progress(ipb::Progress {
                step: "clone".into(),
                message: String::new(),
            }),
            logs("clone", &["Cloning into '/workspace/src'..."]),
            Event::Progress(ipb::Progress {
                step: "build".into(),
                message: String::new(),
            }),
            logs(
                "build",
                &["#1 [internal] load build definition", "#9 DONE 1.2s"],
            ),
            Event::Finished(ipb::Finished {
                image: IMAGE.into(),
                digest: IMAGE.rsplit('@').next().unwrap().into(),
            }),
        ],
        hold: false,
        then: vec![],
    }
}

fn resolved(commit: &str) -> Event {
    Event::Resolved(ipb::Resolved {
        commit_sha: commit.into(),
        build_type: "dockerfile".into(),
        detection: vec!["Dockerfile found at Dockerfile".into()],
        job_name: "ferry-build-0123456789ab".into(),
    })
}

fn logs(step: &str, lines: &[&str]) -> Event {
    Event::Logs(ipb::BuildLogLines {
        lines: lines
            .iter()
            .map(|l| ipb::BuildLogLine {
                timestamp: None,
                step: step.into(),
                line: (*l).into(),
            })
            .collect(),
    })
}

#[derive(Clone, Default)]
struct FakeBuilder {
    scripts: Arc<Mutex<VecDeque<Script>>>,
    requests: Arc<Mutex<Vec<(String, ipb::RunBuildRequest)>>>,
    cancels: Arc<Mutex<Vec<String>>>,
    release: Arc<Notify>,
}

#[tonic::async_trait]
impl BuilderService for FakeBuilder {
    type RunBuildStream = ReceiverStream<Result<ipb::BuildEvent, Status>>;

    async fn run_build(
        &self,
        request: Request<ipb::RunBuildRequest>,
    ) -> Result<Response<Self::RunBuildStream>, Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if auth != format!("Bearer {BUILDER_TOKEN}") {
            return Err(Status::unauthenticated("wrong builder token"));
        }
        self.requests
            .lock()
            .unwrap()
            .push((auth, request.get_ref().clone()));
        let script = self
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| finish_script(&"c".repeat(40)));
        let (tx, rx) = mpsc::channel(64);
        let release = self.release.clone();
        tokio::spawn(async move {
            for event in script.events {
                let e = ipb::BuildEvent {
                    at: None,
                    event: Some(event),
                };
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            if script.hold {
                release.notified().await;
            }
            for event in script.then {
                let e = ipb::BuildEvent {
                    at: None,
                    event: Some(event),
                };
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel_build(
        &self,
        request: Request<ipb::CancelBuildRequest>,
    ) -> Result<Response<ipb::CancelBuildResponse>, Status> {
        self.cancels
            .lock()
            .unwrap()
            .push(request.get_ref().build_id.clone());
        Ok(Response::new(ipb::CancelBuildResponse { found: true }))
    }
}

async fn start_builder(fake: FakeBuilder) -> (SocketAddr, Shutdown) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Shutdown::new();
    let wait = stop.wait();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(BuilderServiceServer::new(fake))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                wait,
            ),
    );
    (addr, stop)
}

struct Env {
    api: Api,
    state: ApiState,
    fake: FakeBuilder,
    stop: Shutdown,
    builder_stop: Shutdown,
    c: Clients,
    git: GitServiceClient<Channel>,
    services: ServiceServiceClient<Channel>,
    token: String,
    org: String,
    project: String,
}

/// The api and a runner on `db`; `per_org_limit` is the installation's
/// default of concurrent builds per organization (`--builds-per-org`).
async fn env(db: &DatabaseConnection, per_org_limit: i32, builder: bool) -> Env {
    let mut state = ferry_api::testing::state(db, None);
    state.deploy.policy.quota.concurrent_builds = per_org_limit;
    let api = start_state(&state, relaxed()).await;
    let fake = FakeBuilder::default();
    let (addr, builder_stop) = start_builder(fake.clone()).await;
    let stop = Shutdown::new();
    BuildRunner::new(
        db.clone(),
        state.keyring.clone(),
        ferry_api::deployer(&state),
        RunnerConfig {
            builder_url: builder.then(|| format!("http://{addr}")),
            builder_token: Some(BUILDER_TOKEN.into()),
            lease_ttl: Duration::from_millis(900),
            poll: Duration::from_millis(100),
            ..RunnerConfig::default()
        },
        state.builds.clone(),
        stop.clone(),
    )
    .unwrap()
    .spawn();
    let mut c = clients(api.addr).await;
    let user = format!("builder{}", if builder { "" } else { "-alone" });
    register(&mut c, &user).await;
    let token = login(&mut c, &user).await;
    let org = create_org(&mut c, &token, "Build Org").await.id;
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
    Env {
        api,
        state,
        fake,
        stop,
        builder_stop,
        git: GitServiceClient::new(c.channel.clone()),
        services: ServiceServiceClient::new(c.channel.clone()),
        c,
        token,
        org,
        project,
    }
}

impl Env {
    async fn stop(self) {
        self.stop.trigger();
        self.builder_stop.trigger();
        self.fake.release.notify_waiters();
        self.api.stop().await;
    }

    /// A service building acme/<name> with a GitHub token and a secret
    /// build arg.
    async fn service(&mut self, name: &str) -> String {
        let (org, project) = (self.org.clone(), self.project.clone());
        self.service_in(&org, &project, name).await
    }

    /// Another organization of the same user, with a project.
    async fn other_org(&mut self, name: &str) -> (String, String) {
        let org = create_org(&mut self.c, &self.token, name).await.id;
        let project = ProjectServiceClient::new(self.c.channel.clone())
            .create_project(authed(
                pb::CreateProjectRequest {
                    organization_id: org.clone(),
                    name: "Shop".into(),
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .id;
        (org, project)
    }

    /// A platform super-admin's session token.
    async fn super_admin(&mut self, db: &DatabaseConnection, name: &str) -> String {
        let user = register(&mut self.c, name).await;
        make_super_admin(db, &user.id).await;
        login(&mut self.c, name).await
    }

    /// SetOrganizationLimits on `org` as `token`.
    async fn set_limits(
        &mut self,
        token: &str,
        org: &str,
        limits: pb::ResourceLimits,
    ) -> Result<pb::OrganizationLimits, Status> {
        self.c
            .orgs
            .set_organization_limits(authed(
                pb::SetOrganizationLimitsRequest {
                    organization_id: org.into(),
                    limits: Some(limits),
                },
                token,
            ))
            .await
            .map(Response::into_inner)
    }

    /// The RunBuild request the builder got for build `id` (the last one).
    fn request_for(&self, id: &str) -> Option<ipb::RunBuildRequest> {
        self.fake
            .requests
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, r)| r.build_id == id)
            .map(|(_, r)| r.clone())
    }

    /// A service of `org`'s `project`, as [`Env::service`].
    async fn service_in(&mut self, org: &str, project: &str, name: &str) -> String {
        let integration = self
            .git
            .create_git_integration(authed(
                pb::CreateGitIntegrationRequest {
                    organization_id: org.into(),
                    provider: pb::GitProvider::Github.into(),
                    name: format!("gh-{name}"),
                    token: "github_pat_SECRET_TOKEN".into(),
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .id;
        let service = self
            .services
            .create_service(authed(
                pb::CreateServiceRequest {
                    project_id: project.into(),
                    name: name.into(),
                    spec: Some(pb::create_service_request::Spec::Application(
                        pb::ApplicationSpec {
                            image: "ghcr.io/acme/placeholder:1".into(),
                            ..Default::default()
                        },
                    )),
                    ports: vec![],
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .id;
        self.git
            .set_build_config(authed(
                pb::SetBuildConfigRequest {
                    service_id: service.clone(),
                    git_integration_id: integration,
                    repository: format!("acme/{name}"),
                    branch: "main".into(),
                    build_args: vec![
                        pb::BuildArg {
                            name: "MODE".into(),
                            value: "prod".into(),
                            secret: false,
                        },
                        pb::BuildArg {
                            name: "NPM_TOKEN".into(),
                            value: "npm_SECRET_VALUE".into(),
                            secret: true,
                        },
                    ],
                    auto_deploy: true,
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap();
        service
    }

    async fn trigger(&mut self, service: &str) -> pb::Build {
        self.git
            .trigger_build(authed(
                pb::TriggerBuildRequest {
                    service_id: service.into(),
                    commit_sha: String::new(),
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
    }

    async fn build(&mut self, id: &str) -> pb::Build {
        self.git
            .get_build(authed(pb::GetBuildRequest { id: id.into() }, &self.token))
            .await
            .unwrap()
            .into_inner()
    }

    /// Releases held builds until build `id` is in `status` (5 s at most).
    async fn release_until(&mut self, id: &str, status: pb::BuildStatus) -> pb::Build {
        for _ in 0..250 {
            self.fake.release.notify_waiters();
            let b = self.build(id).await;
            if b.status() == status {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "build {id} never reached {status:?}: {:?}",
            self.build(id).await
        );
    }

    /// Waits (5 s at most) until the build is in `status`.
    async fn wait_for(&mut self, id: &str, status: pb::BuildStatus) -> pb::Build {
        for _ in 0..250 {
            let b = self.build(id).await;
            if b.status() == status {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "build {id} never reached {status:?}: {:?}",
            self.build(id).await
        );
    }
}

async fn log_lines(db: &DatabaseConnection, deployment: &str) -> Vec<(String, String)> {
    deployment_logs::Entity::find()
        .filter(deployment_logs::Column::DeploymentId.eq(deployment.parse::<uuid::Uuid>().unwrap()))
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.source.unwrap_or_default(), l.message))
        .collect()
}

#[tokio::test]
async fn a_build_streams_into_its_deployment_and_deploys_the_pushed_image() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn, 2, true).await;
        let web = e.service("web").await;
        let commit = "d".repeat(40);
        e.fake
            .scripts
            .lock()
            .unwrap()
            .push_back(finish_script(&commit));
        let build = e.trigger(&web).await;
        assert_eq!(build.status(), pb::BuildStatus::Queued, "{b}");
        let done = e.wait_for(&build.id, pb::BuildStatus::Succeeded).await;
        assert_eq!(done.commit_sha, commit, "{b}");
        assert_eq!(done.image, IMAGE, "{b}");
        assert_eq!(
            done.detection,
            vec!["Dockerfile found at Dockerfile"],
            "{b}"
        );

        // What the builder was asked: the clone URL, the provider's token
        // user, plain and secret build args.
        let (auth, req) = e.fake.requests.lock().unwrap()[0].clone();
        assert_eq!(auth, format!("Bearer {BUILDER_TOKEN}"), "{b}");
        assert_eq!(req.repository_url, "https://github.com/acme/web.git", "{b}");
        assert_eq!(req.build_id, build.id, "{b}");
        assert_eq!(req.branch, "main", "{b}");
        match req.credential.unwrap().kind.unwrap() {
            ipb::git_credential::Kind::Token(t) => {
                assert_eq!(
                    (t.username.as_str(), t.token.as_str()),
                    ("x-access-token", "github_pat_SECRET_TOKEN")
                );
            }
            _ => panic!("{b}: another credential kind"),
        }
        assert_eq!(req.build_args["MODE"], "prod", "{b}");
        assert_eq!(
            req.secret_build_args["NPM_TOKEN"], "npm_SECRET_VALUE",
            "{b}"
        );

        // The deployment: deployed (planned: no cluster) with the image,
        // the build's lines in its log, no secret anywhere in it.
        let mut deployment = None;
        for _ in 0..250 {
            let d = ferry_db::entities::deployments::Entity::find_by_id(
                done.deployment_id.parse::<uuid::Uuid>().unwrap(),
            )
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
            if d.status != ferry_db::entities::enums::DeploymentStatus::Building {
                deployment = Some(d);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deployment = deployment.expect("the built image is deployed");
        assert_eq!(deployment.image.as_deref(), Some(IMAGE), "{b}");
        assert_eq!(
            deployment.status,
            ferry_db::entities::enums::DeploymentStatus::Planned,
            "{b}"
        );
        assert_eq!(
            deployment.commit_sha.as_deref(),
            Some(commit.as_str()),
            "{b}"
        );
        let lines = log_lines(&db.conn, &done.deployment_id).await;
        let text = format!("{lines:?}");
        assert!(
            lines.contains(&("build/build".into(), "#9 DONE 1.2s".into())),
            "{b}: {text}"
        );
        assert!(
            lines.contains(&(
                "build/clone".into(),
                "Cloning into '/workspace/src'...".into()
            )),
            "{b}"
        );
        assert!(text.contains("deploying the built image"), "{b}: {text}");
        assert!(!text.contains("SECRET"), "{b}: a secret reached the log");

        // A generic server: the generated deploy key and the known hosts
        // given at creation go to the builder.
        let known = "git.example.test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let generic = e
            .git
            .create_git_integration(authed(
                pb::CreateGitIntegrationRequest {
                    organization_id: e.org.clone(),
                    provider: pb::GitProvider::Generic.into(),
                    name: "generic".into(),
                    ssh_known_hosts: known.into(),
                    ..Default::default()
                },
                &e.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(generic.ssh_public_key.starts_with("ssh-ed25519 "), "{b}");
        // Without known hosts an SSH repository is refused up front (every
        // build would fail on the host key); https needs none.
        let unpinned = e
            .git
            .create_git_integration(authed(
                pb::CreateGitIntegrationRequest {
                    organization_id: e.org.clone(),
                    provider: pb::GitProvider::Generic.into(),
                    name: "unpinned".into(),
                    ..Default::default()
                },
                &e.token,
            ))
            .await
            .unwrap()
            .into_inner();
        let set = |repository: &str| pb::SetBuildConfigRequest {
            service_id: web.clone(),
            git_integration_id: unpinned.id.clone(),
            repository: repository.into(),
            ..Default::default()
        };
        let err = e
            .git
            .set_build_config(authed(set("git@git.example.test:team/web.git"), &e.token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{b}: {err:?}");
        assert!(err.message().contains("sshKnownHosts"), "{b}: {err:?}");
        e.git
            .set_build_config(authed(
                set("https://git.example.test/team/web.git"),
                &e.token,
            ))
            .await
            .unwrap();
        assert!(!generic.has_token, "{b}");
        e.git
            .set_build_config(authed(
                pb::SetBuildConfigRequest {
                    service_id: web.clone(),
                    git_integration_id: generic.id.clone(),
                    repository: "git@git.example.test:team/web.git".into(),
                    auto_deploy: true,
                    ..Default::default()
                },
                &e.token,
            ))
            .await
            .unwrap();
        let build = e.trigger(&web).await;
        e.wait_for(&build.id, pb::BuildStatus::Succeeded).await;
        let (_, req) = e.fake.requests.lock().unwrap().last().unwrap().clone();
        assert_eq!(
            req.repository_url, "git@git.example.test:team/web.git",
            "{b}"
        );
        let credential = req.credential.unwrap();
        assert_eq!(credential.ssh_known_hosts, known, "{b}");
        match credential.kind.unwrap() {
            ipb::git_credential::Kind::SshPrivateKey(k) => {
                assert!(k.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{b}");
            }
            _ => panic!("{b}: another credential kind"),
        }
        e.stop().await;
    }
}

/// The payloads of the `build.failed` outbox events, oldest first.
async fn build_failed_events(db: &DatabaseConnection) -> Vec<serde_json::Value> {
    use ferry_db::entities::notification_outbox as outbox;
    use ferry_db::sea_orm::QueryOrder as _;
    outbox::Entity::find()
        .filter(outbox::Column::Event.eq("build.failed"))
        .order_by_asc(outbox::Column::CreatedAt)
        .order_by_asc(outbox::Column::Id)
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect()
}

#[tokio::test]
async fn failures_skips_and_a_missing_builder_are_recorded_in_words() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn, 2, true).await;
        let web = e.service("web").await;
        e.fake.scripts.lock().unwrap().push_back(Script {
            events: vec![
                resolved(&"e".repeat(40)),
                Event::Failed(ipb::Failed {
                    step: "build".into(),
                    reason: "exit code 1".into(),
                    timed_out: false,
                    last_lines: vec!["npm ERR! missing script: build".into()],
                }),
            ],
            hold: false,
            then: vec![],
        });
        let build = e.trigger(&web).await;
        let failed = e.wait_for(&build.id, pb::BuildStatus::Failed).await;
        assert_eq!(failed.failed_step, "build", "{b}");
        assert!(
            failed
                .message
                .contains("build failed at step build: exit code 1"),
            "{b}: {}",
            failed.message
        );
        assert!(
            failed.message.contains("npm ERR! missing script"),
            "{b}: {}",
            failed.message
        );
        // Exactly one `build.failed` event, written with the failure.
        let events = build_failed_events(&db.conn).await;
        assert_eq!(events.len(), 1, "{b}: {events:?}");
        assert_eq!(events[0]["build"]["id"], serde_json::json!(build.id), "{b}");
        assert_eq!(events[0]["build"]["timedOut"], false, "{b}");
        assert!(
            events[0]["summary"]
                .as_str()
                .unwrap()
                .starts_with("Build of web in Shop: build failed at step build"),
            "{b}: {}",
            events[0]["summary"]
        );

        e.fake.scripts.lock().unwrap().push_back(Script {
            events: vec![
                resolved(&"f".repeat(40)),
                Event::Failed(ipb::Failed {
                    step: "build".into(),
                    reason: "timed out after 1800 s".into(),
                    timed_out: true,
                    last_lines: vec![],
                }),
            ],
            hold: false,
            then: vec![],
        });
        let build = e.trigger(&web).await;
        e.wait_for(&build.id, pb::BuildStatus::TimedOut).await;
        let events = build_failed_events(&db.conn).await;
        assert_eq!(events.len(), 2, "{b}: a time-out is a failure too");
        assert_eq!(events[1]["build"]["id"], serde_json::json!(build.id), "{b}");
        assert_eq!(events[1]["build"]["timedOut"], true, "{b}");

        e.fake.scripts.lock().unwrap().push_back(Script {
            events: vec![Event::Skipped(ipb::Skipped {
                reason: "no watched path changed".into(),
            })],
            hold: false,
            then: vec![],
        });
        let build = e.trigger(&web).await;
        let skipped = e.wait_for(&build.id, pb::BuildStatus::Skipped).await;
        assert_eq!(skipped.message, "no watched path changed", "{b}");
        assert_eq!(
            build_failed_events(&db.conn).await.len(),
            2,
            "{b}: a skip is no failure"
        );
        e.stop().await;

        // No builder configured: the build fails saying so.
        let mut e = env(&db.conn, 2, false).await;
        let api = e.service("api").await;
        let build = e.trigger(&api).await;
        let failed = e.wait_for(&build.id, pb::BuildStatus::Failed).await;
        assert!(
            failed.message.contains("no ferry-builder is configured"),
            "{b}: {}",
            failed.message
        );
        e.stop().await;
    }
}

#[tokio::test]
async fn cancelling_deletes_the_job_and_the_org_limit_queues_the_rest() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn, 1, true).await;
        let web = e.service("web").await;
        let api = e.service("api").await;
        // The first build runs until released; with a limit of one the
        // second waits queued.
        e.fake.scripts.lock().unwrap().push_back(Script {
            events: vec![resolved(&"1".repeat(40))],
            hold: true,
            then: vec![],
        });
        let first = e.trigger(&web).await;
        e.wait_for(&first.id, pb::BuildStatus::Cloning).await;
        let second = e.trigger(&api).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            e.build(&second.id).await.status(),
            pb::BuildStatus::Queued,
            "{b}: limit"
        );
        assert_eq!(e.fake.requests.lock().unwrap().len(), 1, "{b}");

        // Cancelling the running build: the runner tells the builder.
        let cancelled = e
            .git
            .cancel_build(authed(
                pb::CancelBuildRequest {
                    id: first.id.clone(),
                },
                &e.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cancelled.status(), pb::BuildStatus::Cancelled, "{b}");
        for _ in 0..100 {
            if e.fake.cancels.lock().unwrap().contains(&first.id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            e.fake.cancels.lock().unwrap().contains(&first.id),
            "{b}: CancelBuild sent"
        );
        // The slot freed: the second build runs to the end.
        e.fake.release.notify_waiters();
        e.wait_for(&second.id, pb::BuildStatus::Succeeded).await;
        // A finished build cannot be cancelled.
        let err = e
            .git
            .cancel_build(authed(
                pb::CancelBuildRequest {
                    id: second.id.clone(),
                },
                &e.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{b}");
        let _ = &e.state;
        e.stop().await;
    }
}

/// (cpu request, cpu limit, memory request, memory limit) of a request.
fn resources(r: &ipb::RunBuildRequest) -> (&str, &str, &str, &str) {
    (
        r.cpu_request.as_str(),
        r.cpu_limit.as_str(),
        r.memory_request.as_str(),
        r.memory_limit.as_str(),
    )
}

#[tokio::test]
async fn an_organizations_concurrent_builds_hold_its_builds_not_other_organizations() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        // The installation lets each organization run two builds at once;
        // a super-admin allows this one a single build.
        let mut e = env(&db.conn, 2, true).await;
        let root = e.super_admin(&db.conn, "root").await;
        let org = e.org.clone();
        let set = e
            .set_limits(
                &root,
                &org,
                pb::ResourceLimits {
                    concurrent_builds: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(set.effective.unwrap().concurrent_builds, Some(1), "{b}");
        assert_eq!(set.defaults.unwrap().concurrent_builds, Some(2), "{b}");
        let web = e.service("web").await;
        let api = e.service("api").await;
        let (other, other_project) = e.other_org("Other Org").await;
        let o1 = e.service_in(&other, &other_project, "o1").await;
        let o2 = e.service_in(&other, &other_project, "o2").await;
        // The first three builds the builder sees run until released.
        for commit in ["1", "2", "3"] {
            e.fake
                .scripts
                .lock()
                .unwrap()
                .push_back(Script::held(&commit.repeat(40)));
        }
        let first = e.trigger(&web).await;
        e.wait_for(&first.id, pb::BuildStatus::Cloning).await;
        let second = e.trigger(&api).await;
        // Several polls later the second build still waits.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            e.build(&second.id).await.status(),
            pb::BuildStatus::Queued,
            "{b}: the organization's limit"
        );
        // The other organization is not held back: both its builds run
        // (its limit is the default, two) while the second still waits.
        let third = e.trigger(&o1).await;
        let fourth = e.trigger(&o2).await;
        e.wait_for(&third.id, pb::BuildStatus::Cloning).await;
        e.wait_for(&fourth.id, pb::BuildStatus::Cloning).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            e.build(&second.id).await.status(),
            pb::BuildStatus::Queued,
            "{b}: still the organization's limit"
        );
        assert!(e.request_for(&second.id).is_none(), "{b}: not sent");
        assert_eq!(e.fake.requests.lock().unwrap().len(), 3, "{b}");

        // The first finishes: the second runs.
        e.release_until(&first.id, pb::BuildStatus::Succeeded).await;
        e.wait_for(&second.id, pb::BuildStatus::Succeeded).await;
        for id in [&third.id, &fourth.id] {
            e.release_until(id, pb::BuildStatus::Succeeded).await;
        }
        e.stop().await;
    }
}

#[tokio::test]
async fn an_organizations_build_cpu_and_memory_reach_the_builder() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn, 2, true).await;
        let root = e.super_admin(&db.conn, "root").await;
        let web = e.service("web").await;

        // The installation defaults (`--build-cpu 2`, `--build-memory
        // 4Gi`): limits, and a quarter of each as the request.
        let build = e.trigger(&web).await;
        e.wait_for(&build.id, pb::BuildStatus::Succeeded).await;
        let request = e.request_for(&build.id).unwrap();
        assert_eq!(resources(&request), ("500m", "2", "1Gi", "4Gi"), "{b}");

        // A super-admin gives the organization bigger builds; the next
        // build gets them.
        let org = e.org.clone();
        e.set_limits(
            &root,
            &org,
            pb::ResourceLimits {
                build_cpu: Some("3".into()),
                build_memory: Some("8Gi".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let build = e.trigger(&web).await;
        e.wait_for(&build.id, pb::BuildStatus::Succeeded).await;
        let request = e.request_for(&build.id).unwrap();
        assert_eq!(resources(&request), ("750m", "3", "2Gi", "8Gi"), "{b}");

        // Small limits: the requests stop at their floors (100m, 256Mi).
        e.set_limits(
            &root,
            &org,
            pb::ResourceLimits {
                build_cpu: Some("250m".into()),
                build_memory: Some("512Mi".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let build = e.trigger(&web).await;
        e.wait_for(&build.id, pb::BuildStatus::Succeeded).await;
        let request = e.request_for(&build.id).unwrap();
        assert_eq!(
            resources(&request),
            ("100m", "250m", "256Mi", "512Mi"),
            "{b}"
        );

        // Another organization keeps the defaults.
        let (other, project) = e.other_org("Other Org").await;
        let service = e.service_in(&other, &project, "o").await;
        let build = e.trigger(&service).await;
        e.wait_for(&build.id, pb::BuildStatus::Succeeded).await;
        let request = e.request_for(&build.id).unwrap();
        assert_eq!(resources(&request), ("500m", "2", "1Gi", "4Gi"), "{b}");
        e.stop().await;
    }
}

#[tokio::test]
async fn build_limits_are_checked_and_only_super_admins_set_them() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let mut e = env(&db.conn, 2, true).await;
        let root = e.super_admin(&db.conn, "root").await;
        let org = e.org.clone();
        let cpu = |v: &str| pb::ResourceLimits {
            build_cpu: Some(v.into()),
            ..Default::default()
        };
        let memory = |v: &str| pb::ResourceLimits {
            build_memory: Some(v.into()),
            ..Default::default()
        };
        let concurrent = |n: i32| pb::ResourceLimits {
            concurrent_builds: Some(n),
            ..Default::default()
        };
        for (limits, field) in [
            (cpu("lots"), "limits.buildCpu"),
            (cpu("0"), "limits.buildCpu"),
            (cpu(""), "limits.buildCpu"),
            (memory("4 GB"), "limits.buildMemory"),
            (memory("0Mi"), "limits.buildMemory"),
            (concurrent(0), "limits.concurrentBuilds"),
            (concurrent(51), "limits.concurrentBuilds"),
            (concurrent(-1), "limits.concurrentBuilds"),
        ] {
            let err = e.set_limits(&root, &org, limits.clone()).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{b}: {limits:?}");
            assert!(
                err.message().starts_with(&format!("{field}:")),
                "{b}: {limits:?}: {}",
                err.message()
            );
        }

        // The organization's owner and an admin are tenants: they cannot
        // give themselves more builds.
        let admin = register(&mut e.c, "ops").await;
        add_member(&db.conn, &org, &admin.id, OrgRole::Admin).await;
        let admin = login(&mut e.c, "ops").await;
        let owner = e.token.clone();
        for token in [&owner, &admin] {
            let err = e.set_limits(token, &org, concurrent(10)).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::PermissionDenied, "{b}");
        }
        // Nothing of it was stored.
        let got =
            e.c.orgs
                .get_organization_limits(authed(
                    pb::GetOrganizationLimitsRequest {
                        organization_id: org.clone(),
                    },
                    &owner,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(got.overrides, Some(pb::ResourceLimits::default()), "{b}");

        // The bounds themselves are accepted.
        for n in [1, 50] {
            let set = e.set_limits(&root, &org, concurrent(n)).await.unwrap();
            assert_eq!(set.effective.unwrap().concurrent_builds, Some(n), "{b}");
        }
        e.stop().await;
    }
}
