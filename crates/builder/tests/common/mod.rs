//! Shared set-up of the builder's end-to-end tests: a real git server, the
//! in-memory cluster, the real builder over TCP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ferry_builder::testing::{self, TestBuilder, TestConfig};
use ferry_git::CommitSha;
use ferry_git::testing::{GitServer, TestRepo};
use ferry_k8s::fake::{FakeCluster, FakeContainerState};
use ferry_proto::ferry::internal::v1 as pb;
use pb::build_event::Event;
use tonic::Streaming;
use uuid::Uuid;

pub const NS: &str = "ferry-builds";
pub const TIMEOUT: Duration = Duration::from_secs(20);
pub const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// buildctl's metadata file, as the build container's termination message.
pub fn metadata() -> String {
    format!(r#"{{"containerimage.config.digest":"sha256:00","containerimage.digest":"{DIGEST}"}}"#)
}

/// Build ids as the api makes them (v7: one shared millisecond prefix,
/// so Job names must come from the random end).
pub fn build_id(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_1234_5678_7000_8000_0000_0000_0000 + n)
}

/// A request for `url` with the usual ids and `auto`.
pub fn request(url: &str, build_id: Uuid) -> pb::RunBuildRequest {
    pb::RunBuildRequest {
        build_id: build_id.to_string(),
        organization_id: Uuid::from_u128(1).to_string(),
        project_id: Uuid::from_u128(2).to_string(),
        project_name: "shop".into(),
        service_id: Uuid::from_u128(3).to_string(),
        service_name: "web".into(),
        repository_url: url.into(),
        branch: "main".into(),
        build_type: "auto".into(),
        ..Default::default()
    }
}

/// A builder on `fake` (or planning only).
pub async fn builder(fake: Option<&FakeCluster>) -> TestBuilder {
    let mut config = TestConfig::new();
    if let Some(fake) = fake {
        config = config.with_cluster(fake.client());
    }
    testing::start(config).await.unwrap()
}

pub async fn git() -> GitServer {
    GitServer::start().await.unwrap()
}

/// A repository `app` with a Dockerfile on `main`, and a builder on
/// `fake` (or planning only).
pub struct App {
    pub git: GitServer,
    pub repo: TestRepo,
    pub sha: CommitSha,
    pub builder: TestBuilder,
}

impl App {
    pub async fn start(fake: Option<&FakeCluster>) -> App {
        let git = git().await;
        let repo = git.create_repo("app").await.unwrap();
        let sha = repo
            .commit("main", &[("Dockerfile", "FROM scratch\n")])
            .await
            .unwrap();
        App {
            git,
            repo,
            sha,
            builder: builder(fake).await,
        }
    }

    /// [`request`] for this repository.
    pub fn request(&self, id: u128) -> pb::RunBuildRequest {
        request(self.repo.url(), build_id(id))
    }
}

/// Starts a RunBuild stream.
pub async fn run(builder: &TestBuilder, request: pb::RunBuildRequest) -> Streaming<pb::BuildEvent> {
    builder
        .client()
        .run_build(builder.request(request))
        .await
        .unwrap()
        .into_inner()
}

/// The next event.
pub async fn next(stream: &mut Streaming<pb::BuildEvent>) -> Event {
    let event = tokio::time::timeout(TIMEOUT, stream.message())
        .await
        .expect("no event in time")
        .unwrap()
        .expect("the stream ended");
    assert!(event.at.is_some(), "events carry their time");
    event.event.unwrap()
}

/// Every remaining event, until the stream ends.
pub async fn rest(stream: &mut Streaming<pb::BuildEvent>) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let message = tokio::time::timeout(TIMEOUT, stream.message())
            .await
            .expect("the stream did not end in time")
            .unwrap();
        match message {
            Some(event) => events.push(event.event.unwrap()),
            None => return events,
        }
    }
}

/// Events until one matches (returned with those before it).
pub async fn until(
    stream: &mut Streaming<pb::BuildEvent>,
    wanted: impl Fn(&Event) -> bool,
) -> (Vec<Event>, Event) {
    let mut before = Vec::new();
    loop {
        let event = next(stream).await;
        if wanted(&event) {
            return (before, event);
        }
        before.push(event);
    }
}

pub fn is_terminal(event: &Event) -> bool {
    matches!(
        event,
        Event::Finished(_) | Event::Failed(_) | Event::Skipped(_) | Event::Planned(_)
    )
}

pub fn resolved(event: Event) -> pb::Resolved {
    match event {
        Event::Resolved(r) => r,
        other => panic!("expected Resolved, got {other:?}"),
    }
}

/// The steps of the Progress events, in order.
pub fn steps(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Progress(p) => Some(p.step.clone()),
            _ => None,
        })
        .collect()
}

/// The log lines as (step, line), in order.
pub fn log_lines(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Logs(l) => Some(l.lines.iter().map(|l| (l.step.clone(), l.line.clone()))),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Job applies the fake received (each would create or change a Job).
pub fn job_applies(fake: &FakeCluster) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.is_apply() && r.path.contains("/jobs/"))
        .count()
}

/// Waits for the Job's pod.
pub async fn pod_of(fake: &FakeCluster, job: &str) -> String {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(pod) = fake.job_pod_name(NS, job) {
            return pod;
        }
        assert!(tokio::time::Instant::now() < deadline, "no pod for {job}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `check` holds.
pub async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Drives one build pod's containers.
pub struct Pod<'a> {
    pub fake: &'a FakeCluster,
    pub name: String,
}

impl Pod<'_> {
    pub fn set(&self, container: &str, state: FakeContainerState) {
        assert!(
            self.fake
                .set_container_state(NS, &self.name, container, state),
            "no container {container}"
        );
    }

    pub fn log(&self, container: &str, line: &str) {
        self.fake.append_log(NS, &self.name, container, line);
    }

    /// Runs a container: running, its lines, then exit 0 with `message`.
    pub fn run_ok(&self, container: &str, lines: &[&str], message: &str) {
        self.set(container, FakeContainerState::Running);
        for line in lines {
            self.log(container, line);
        }
        self.set(container, FakeContainerState::succeeded(message));
    }

    pub fn clone_succeeds(&self) {
        self.run_ok("clone-init", &["Initialized empty Git repository"], "");
        self.run_ok("clone-fetch", &["fetching the commit"], "");
        self.run_ok("clone-checkout", &[], "");
    }
}
