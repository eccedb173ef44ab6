//! Build Jobs against the in-memory `FakeCluster`: start, watch, fail,
//! time out, cancel, resume, logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::build::*;
use ferry_k8s::build::{BuildOutcome, BuildSpec, BuildStep, EgressPolicy, FailureReason, job_name};
use ferry_k8s::fake::{FakeCluster, FakeContainerState};
use ferry_k8s::logs::PodLogLine;
use ferry_k8s::{Cluster, Error, builds_namespace};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use uuid::Uuid;

const NS: &str = "ferry-builds";
const TIMEOUT: Duration = Duration::from_secs(10);
const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn metadata() -> String {
    format!(
        r#"{{"containerimage.config.digest":"sha256:0000","containerimage.digest":"{DIGEST}"}}"#
    )
}

/// A started build and the handles to drive it.
struct Build {
    fake: FakeCluster,
    cluster: Cluster,
    spec: BuildSpec,
    pod: String,
}

impl Build {
    async fn start(spec: BuildSpec) -> Build {
        let fake = FakeCluster::new();
        Build::start_on(fake, spec).await
    }

    async fn start_on(fake: FakeCluster, spec: BuildSpec) -> Build {
        let cluster = Cluster::new(fake.client());
        cluster.start_build(&spec, &credentials()).await.unwrap();
        let pod = fake.job_pod_name(NS, &job_name(spec.build_id)).unwrap();
        Build {
            fake,
            cluster,
            spec,
            pod,
        }
    }

    fn set(&self, container: &str, state: FakeContainerState) {
        assert!(
            self.fake
                .set_container_state(NS, &self.pod, container, state),
            "no container {container}"
        );
    }

    fn clone_succeeds(&self) {
        for c in ["clone-init", "clone-fetch", "clone-checkout"] {
            self.set(c, FakeContainerState::Running);
            self.set(c, FakeContainerState::succeeded(""));
        }
    }

    /// Watches the build in the background; outcomes arrive on the channel.
    fn watch(&self) -> mpsc::UnboundedReceiver<ferry_k8s::Result<BuildOutcome>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let stream = self.cluster.watch_build(NS, self.spec.build_id);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        rx
    }

    fn job(&self) -> Option<serde_json::Value> {
        self.fake.get("Job", NS, &job_name(self.spec.build_id))
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<ferry_k8s::Result<BuildOutcome>>) -> BuildOutcome {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("no outcome in time")
        .expect("watch ended")
        .unwrap()
}

async fn ended(rx: &mut mpsc::UnboundedReceiver<ferry_k8s::Result<BuildOutcome>>) {
    let rest = tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("watch did not end");
    assert!(rest.is_none(), "more after a terminal outcome: {rest:?}");
}

#[tokio::test]
async fn a_build_runs_clone_then_build_and_succeeds_with_its_digest() {
    let b = Build::start(dockerfile_spec()).await;
    let mut rx = b.watch();
    assert_eq!(
        next(&mut rx).await,
        BuildOutcome::Pending {
            reason: "PodInitializing".into()
        }
    );
    // From here on the watch alone must carry every change: no list, no get.
    b.fake.clear_requests();

    b.set("clone-init", FakeContainerState::Running);
    assert_eq!(
        next(&mut rx).await,
        BuildOutcome::Running {
            step: BuildStep::Clone
        }
    );
    b.set("clone-init", FakeContainerState::succeeded(""));
    for c in ["clone-fetch", "clone-checkout"] {
        b.set(c, FakeContainerState::Running);
        b.set(c, FakeContainerState::succeeded(""));
    }
    assert_eq!(
        next(&mut rx).await,
        BuildOutcome::Running {
            step: BuildStep::Build
        }
    );
    b.set("build", FakeContainerState::Running);
    b.set("build", FakeContainerState::succeeded(metadata()));
    assert_eq!(
        next(&mut rx).await,
        BuildOutcome::Succeeded {
            digest: DIGEST.into()
        }
    );
    ended(&mut rx).await;
    assert!(
        b.fake.requests().is_empty(),
        "the watch polled: {:?}",
        b.fake.requests()
    );
    // The Job controller's verdict agrees; a one-off read says the same.
    let job = b.job().unwrap();
    assert_eq!(job["status"]["succeeded"], 1);
    assert_eq!(
        b.cluster.build_outcome(NS, b.spec.build_id).await.unwrap(),
        BuildOutcome::Succeeded {
            digest: DIGEST.into()
        }
    );
}

#[tokio::test]
async fn the_watch_selects_the_build_by_label() {
    let b = Build::start(dockerfile_spec()).await;
    let mut rx = b.watch();
    next(&mut rx).await;
    let selector = format!(
        "app.kubernetes.io/managed-by=ferry,ferry.dev/build-id={}",
        b.spec.build_id
    );
    for path in [
        "/apis/batch/v1/namespaces/ferry-builds/jobs",
        "/api/v1/namespaces/ferry-builds/pods",
    ] {
        assert!(
            b.fake.requests().iter().any(|r| r.path == path
                && r.param("watch") == Some("true")
                && r.param("labelSelector") == Some(selector.as_str())),
            "no watch on {path}"
        );
    }
}

#[tokio::test]
async fn a_failed_clone_names_the_step_exit_code_and_message() {
    let b = Build::start(dockerfile_spec()).await;
    let mut rx = b.watch();
    next(&mut rx).await;
    b.set("clone-init", FakeContainerState::Running);
    b.set("clone-init", FakeContainerState::succeeded(""));
    b.set("clone-fetch", FakeContainerState::Running);
    b.set(
        "clone-fetch",
        FakeContainerState::failed(
            128,
            "fatal: could not read Username for 'https://git.example.com': terminal prompts disabled\n",
        ),
    );
    let mut last = next(&mut rx).await;
    while !last.is_terminal() {
        last = next(&mut rx).await;
    }
    assert_eq!(
        last,
        BuildOutcome::Failed {
            step: Some(BuildStep::Clone),
            reason: FailureReason::StepFailed,
            exit_code: Some(128),
            message: "fatal: could not read Username for 'https://git.example.com': terminal prompts disabled".into(),
        }
    );
    ended(&mut rx).await;
    // The build container never ran; the Job failed as its controller says.
    let job = b.job().unwrap();
    assert_eq!(job["status"]["conditions"][1]["type"], "Failed");
    assert_eq!(
        job["status"]["conditions"][1]["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(
        b.cluster.build_outcome(NS, b.spec.build_id).await.unwrap(),
        last
    );
}

#[tokio::test]
async fn a_failed_build_step_carries_its_reason() {
    let b = Build::start(dockerfile_spec()).await;
    b.clone_succeeds();
    b.set("build", FakeContainerState::Running);
    b.set(
        "build",
        FakeContainerState::Terminated {
            exit_code: 137,
            reason: "OOMKilled".into(),
            message: "#9 [build 4/6] RUN npm ci".into(),
        },
    );
    assert_eq!(
        b.cluster.build_outcome(NS, b.spec.build_id).await.unwrap(),
        BuildOutcome::Failed {
            step: Some(BuildStep::Build),
            reason: FailureReason::OutOfMemory,
            exit_code: Some(137),
            message: "#9 [build 4/6] RUN npm ci".into(),
        }
    );

    let b = Build::start(dockerfile_spec()).await;
    b.clone_succeeds();
    b.set("build", FakeContainerState::Running);
    b.set(
        "build",
        FakeContainerState::failed(
            1,
            "ERROR: failed to solve: process \"/bin/sh -c npm ci\" did not complete successfully: exit code: 1",
        ),
    );
    let BuildOutcome::Failed {
        step,
        reason,
        exit_code,
        message,
    } = b.cluster.build_outcome(NS, b.spec.build_id).await.unwrap()
    else {
        panic!("not failed")
    };
    assert_eq!(
        (step, reason, exit_code),
        (Some(BuildStep::Build), FailureReason::StepFailed, Some(1))
    );
    assert!(message.contains("failed to solve"), "{message}");

    // An image that cannot be pulled fails the build at once.
    let b = Build::start(dockerfile_spec()).await;
    b.clone_succeeds();
    b.set(
        "build",
        FakeContainerState::Waiting {
            reason: "ImagePullBackOff".into(),
            message: "Back-off pulling image \"moby/buildkit:v0.23.2-rootless\"".into(),
        },
    );
    assert!(matches!(
        b.cluster.build_outcome(NS, b.spec.build_id).await.unwrap(),
        BuildOutcome::Failed {
            step: Some(BuildStep::Build),
            reason: FailureReason::ImagePull,
            ..
        }
    ));
}

#[tokio::test]
async fn a_build_past_its_deadline_times_out_in_the_step_it_was_in() {
    let b = Build::start(dockerfile_spec()).await;
    let mut rx = b.watch();
    next(&mut rx).await;
    b.clone_succeeds();
    b.set("build", FakeContainerState::Running);
    let mut last = next(&mut rx).await;
    while last
        != (BuildOutcome::Running {
            step: BuildStep::Build,
        })
    {
        last = next(&mut rx).await;
    }
    let name = job_name(b.spec.build_id);
    assert!(b.fake.fail_job(
        NS,
        &name,
        "DeadlineExceeded",
        "Job was active longer than specified deadline"
    ));
    assert_eq!(
        next(&mut rx).await,
        BuildOutcome::Failed {
            step: Some(BuildStep::Build),
            reason: FailureReason::TimedOut,
            exit_code: None,
            message: "Job was active longer than specified deadline".into(),
        }
    );
    ended(&mut rx).await;
    // The controller killed the pod; the Job's verdict stands alone.
    assert!(b.fake.job_pods(NS, &name).is_empty());
    assert!(matches!(
        b.cluster.build_outcome(NS, b.spec.build_id).await.unwrap(),
        BuildOutcome::Failed {
            reason: FailureReason::TimedOut,
            ..
        }
    ));
}

#[tokio::test]
async fn starting_a_build_twice_changes_nothing() {
    let b = Build::start(dockerfile_spec()).await;
    let first = b.job().unwrap();
    let again = b
        .cluster
        .start_build(&b.spec, &credentials())
        .await
        .unwrap();
    let job = b.job().unwrap();
    assert_eq!(job["metadata"]["uid"], first["metadata"]["uid"]);
    assert_eq!(again.job_uid, first["metadata"]["uid"].as_str().unwrap());
    assert_eq!(job["metadata"]["generation"], 1);
    assert_eq!(b.fake.job_pods(NS, &again.job_name).len(), 1);
    // Both objects were server-side applied by `ferry`.
    let applies: Vec<_> = b
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.is_apply())
        .collect();
    assert_eq!(applies.len(), 4);
    for r in &applies {
        assert_eq!(r.field_manager(), Some("ferry"));
    }
    // The Secret is owned by the Job (garbage-collected with it).
    let secret = b.fake.get("Secret", NS, &again.job_name).unwrap();
    assert_eq!(
        secret["metadata"]["ownerReferences"],
        json!([{ "apiVersion": "batch/v1", "kind": "Job", "name": again.job_name, "uid": again.job_uid }])
    );
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["metadata"]["labels"]["ferry.dev/build-id"],
        b.spec.build_id.to_string()
    );
}

#[tokio::test]
async fn cancel_deletes_the_job_its_pod_and_its_secret() {
    let b = Build::start(dockerfile_spec()).await;
    let mut rx = b.watch();
    next(&mut rx).await;
    let name = job_name(b.spec.build_id);
    let uid = b.job().unwrap()["metadata"]["uid"].clone();
    b.fake.clear_requests();
    assert!(b.cluster.cancel_build(NS, b.spec.build_id).await.unwrap());
    let delete = b
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE" && r.path.ends_with(&format!("/jobs/{name}")))
        .unwrap();
    let body = delete.body.unwrap();
    assert_eq!(body["propagationPolicy"], "Background");
    // Only the Job whose labels were checked may go.
    assert_eq!(body["preconditions"]["uid"], uid);
    assert!(b.job().is_none());
    assert!(b.fake.job_pods(NS, &name).is_empty());
    assert!(b.fake.get("Secret", NS, &name).is_none());
    assert_eq!(
        next(&mut rx).await,
        BuildOutcome::Failed {
            step: None,
            reason: FailureReason::Deleted,
            exit_code: None,
            message: "the build's Job was deleted (cancelled) before it finished".into(),
        }
    );
    ended(&mut rx).await;
    // Gone already: nothing to cancel.
    assert!(!b.cluster.cancel_build(NS, b.spec.build_id).await.unwrap());
}

#[tokio::test]
async fn a_job_deleted_without_propagation_keeps_its_pods() {
    // Why cancel says Background: the API's default for Jobs orphans pods.
    let b = Build::start(dockerfile_spec()).await;
    let name = job_name(b.spec.build_id);
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(b.fake.client(), NS);
    jobs.delete(&name, &Default::default()).await.unwrap();
    let pods = b.fake.job_pods(NS, &name);
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["metadata"]["ownerReferences"], json!([]));
}

#[tokio::test]
async fn a_delete_with_a_stale_uid_precondition_is_refused() {
    let b = Build::start(dockerfile_spec()).await;
    let name = job_name(b.spec.build_id);
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(b.fake.client(), NS);
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("an-older-job".into()),
            resource_version: None,
        }),
        ..kube::api::DeleteParams::background()
    };
    let err = jobs.delete(&name, &params).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    assert!(b.job().is_some());
}

#[tokio::test]
async fn cancel_refuses_a_job_ferry_does_not_own() {
    let fake = FakeCluster::new();
    let cluster = Cluster::new(fake.client());
    let id = build_id();
    let name = job_name(id);
    fake.insert(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name, "namespace": NS, "labels": { "team": "data" } },
        "spec": { "template": { "spec": { "containers": [{ "name": "etl", "image": "etl:1" }] } } },
    }));
    let err = cluster.cancel_build(NS, id).await.unwrap_err();
    assert!(matches!(err, Error::NotOwned { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "Job ferry-builds/{name} exists but is not managed by this Ferry"
        )) && text.contains("app.kubernetes.io/managed-by is missing"),
        "{text}"
    );
    assert!(fake.get("Job", NS, &name).is_some());
    assert_eq!(fake.job_pods(NS, &name).len(), 1);
    assert!(!fake.requests().iter().any(|r| r.method == "DELETE"));

    // Ferry's, but another build's (a 12-hex-digit collision).
    let other = Uuid::from_u128(build_id().as_u128() + (1 << 100));
    assert_eq!(job_name(other), name);
    let fake = FakeCluster::new();
    let b = Build::start_on(fake, build_spec_with_id(other)).await;
    let err = b.cluster.cancel_build(NS, id).await.unwrap_err();
    assert!(
        err.to_string().contains("label ferry.dev/build-id is"),
        "{err}"
    );
    assert!(b.job().is_some());

    // Starting a build refuses the foreign Job too.
    let err = cluster
        .start_build(&dockerfile_spec(), &credentials())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotOwned { .. }), "{err:?}");
}

/// The next log line as (container, text).
async fn line_of(rx: &mut mpsc::Receiver<PodLogLine>) -> (String, String) {
    let line = tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    (line.container, line.line)
}

fn build_spec_with_id(id: Uuid) -> BuildSpec {
    let mut spec = dockerfile_spec();
    spec.build_id = id;
    spec
}

#[tokio::test]
async fn find_build_returns_the_jobs_annotations_and_outcome() {
    let fake = FakeCluster::new();
    let cluster = Cluster::new(fake.client());
    assert_eq!(cluster.find_build(NS, build_id()).await.unwrap(), None);
    let mut spec = dockerfile_spec();
    spec.annotations
        .insert("ferry.dev/build-type".into(), "dockerfile".into());
    let b = Build::start_on(fake, spec).await;
    b.set("clone-init", FakeContainerState::Running);
    let found = b
        .cluster
        .find_build(NS, b.spec.build_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.job_name, job_name(b.spec.build_id));
    assert_eq!(found.annotations["ferry.dev/build-type"], "dockerfile");
    assert_eq!(
        found.outcome,
        BuildOutcome::Running {
            step: BuildStep::Clone
        }
    );
    // Another build's id finds nothing.
    let other = Uuid::from_u128(0x7777_0000_0000_4000_8000_0000_0000_0002);
    assert_eq!(b.cluster.find_build(NS, other).await.unwrap(), None);
}

#[tokio::test]
async fn a_restarted_builder_lists_running_builds_and_resumes_watching() {
    let fake = FakeCluster::new();
    let done = Build::start_on(fake.clone(), dockerfile_spec()).await;
    done.clone_succeeds();
    done.set("build", FakeContainerState::Running);
    done.set("build", FakeContainerState::succeeded(metadata()));
    let running = Build::start_on(
        fake.clone(),
        build_spec_with_id(Uuid::from_u128(0x7777_0000_0000_4000_8000_0000_0000_0001)),
    )
    .await;
    running.set("clone-init", FakeContainerState::Running);
    // Someone else's Job in the namespace is not a build.
    fake.insert(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": { "name": "etl", "namespace": NS },
        "spec": { "template": { "spec": { "containers": [{ "name": "etl", "image": "etl:1" }] } } },
    }));

    // A new process: a new client, nothing remembered.
    let restarted = Cluster::new(fake.client());
    let builds = restarted.list_builds(NS).await.unwrap();
    let mut found: Vec<(Uuid, BuildOutcome)> = builds
        .into_iter()
        .map(|b| (b.build_id, b.outcome))
        .collect();
    found.sort_by_key(|(id, _)| *id);
    assert_eq!(
        found,
        [
            (
                done.spec.build_id,
                BuildOutcome::Succeeded {
                    digest: DIGEST.into()
                }
            ),
            (
                running.spec.build_id,
                BuildOutcome::Running {
                    step: BuildStep::Clone
                }
            ),
        ]
    );
    let unfinished: Vec<Uuid> = found
        .iter()
        .filter(|(_, o)| !o.is_terminal())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(unfinished, [running.spec.build_id]);
    let watch = restarted.watch_build(NS, unfinished[0]);
    let mut watch = std::pin::pin!(watch);
    assert_eq!(
        watch.next().await.unwrap().unwrap(),
        BuildOutcome::Running {
            step: BuildStep::Clone
        }
    );
    running.set("clone-init", FakeContainerState::succeeded(""));
    for c in ["clone-fetch", "clone-checkout"] {
        running.set(c, FakeContainerState::Running);
        running.set(c, FakeContainerState::succeeded(""));
    }
    running.set("build", FakeContainerState::succeeded(metadata()));
    let mut last = watch.next().await.unwrap().unwrap();
    while !last.is_terminal() {
        last = watch.next().await.unwrap().unwrap();
    }
    assert_eq!(
        last,
        BuildOutcome::Succeeded {
            digest: DIGEST.into()
        }
    );
    assert!(watch.next().await.is_none());
}

#[tokio::test]
async fn watching_a_build_that_does_not_exist_says_so() {
    let fake = FakeCluster::new();
    let cluster = Cluster::new(fake.client());
    let watch = cluster.watch_build(NS, build_id());
    let mut watch = std::pin::pin!(watch);
    let err = watch.next().await.unwrap().unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(watch.next().await.is_none());
    assert!(
        cluster
            .build_outcome(NS, build_id())
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn build_logs_follow_the_containers_in_order() {
    let b = Build::start(dockerfile_spec()).await;
    let (tx, mut rx) = mpsc::channel::<PodLogLine>(64);
    let cluster = b.cluster.clone();
    let id = b.spec.build_id;
    let reader = tokio::spawn(async move {
        cluster
            .stream_build_logs(NS, id, true, &tx, |line| line)
            .await
    });
    let say = |container: &str, line: &str| b.fake.append_log(NS, &b.pod, container, line);

    // Nothing is read before a container starts.
    say(
        "clone-init",
        "Initialized empty Git repository in /workspace/src/.git/",
    );
    b.set("clone-init", FakeContainerState::Running);
    assert_eq!(
        line_of(&mut rx).await,
        (
            "clone-init".into(),
            "Initialized empty Git repository in /workspace/src/.git/".into()
        )
    );
    b.set("clone-init", FakeContainerState::succeeded(""));
    b.set("clone-fetch", FakeContainerState::Running);
    say("clone-fetch", "From https://git.example.com/acme/shop");
    assert_eq!(
        line_of(&mut rx).await,
        (
            "clone-fetch".into(),
            "From https://git.example.com/acme/shop".into()
        )
    );
    b.set("clone-fetch", FakeContainerState::succeeded(""));
    b.set("clone-checkout", FakeContainerState::Running);
    b.set("clone-checkout", FakeContainerState::succeeded(""));
    b.set("build", FakeContainerState::Running);
    say(
        "build",
        "#1 [internal] load build definition from Dockerfile.prod",
    );
    say("build", "#12 exporting to image");
    assert_eq!(
        line_of(&mut rx).await,
        (
            "build".into(),
            "#1 [internal] load build definition from Dockerfile.prod".into()
        )
    );
    assert_eq!(
        line_of(&mut rx).await,
        ("build".into(), "#12 exporting to image".into())
    );
    b.set("build", FakeContainerState::succeeded(metadata()));
    // The last container ended: the stream ends by itself.
    tokio::time::timeout(TIMEOUT, reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(rx.recv().await.is_none());
    assert_eq!(b.fake.open_log_streams(), 0);

    // Afterwards, without follow: every container's lines, in order.
    let (tx, mut rx) = mpsc::channel::<PodLogLine>(64);
    b.cluster
        .stream_build_logs(NS, id, false, &tx, |line| line)
        .await
        .unwrap();
    drop(tx);
    let mut all = Vec::new();
    while let Some(line) = rx.recv().await {
        all.push(line.container);
    }
    assert_eq!(all, ["clone-init", "clone-fetch", "build", "build"]);
}

#[tokio::test]
async fn build_logs_stop_after_a_failed_step() {
    let b = Build::start(dockerfile_spec()).await;
    let (tx, mut rx) = mpsc::channel::<PodLogLine>(64);
    let cluster = b.cluster.clone();
    let id = b.spec.build_id;
    let reader =
        tokio::spawn(async move { cluster.stream_build_logs(NS, id, true, &tx, |l| l).await });
    b.set("clone-init", FakeContainerState::Running);
    b.set("clone-init", FakeContainerState::succeeded(""));
    b.set("clone-fetch", FakeContainerState::Running);
    b.fake
        .append_log(NS, &b.pod, "clone-fetch", "fatal: repository not found");
    b.set(
        "clone-fetch",
        FakeContainerState::failed(128, "fatal: repository not found"),
    );
    tokio::time::timeout(TIMEOUT, reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line.line);
    }
    assert_eq!(lines, ["fatal: repository not found"]);
}

#[tokio::test]
async fn the_builds_namespace_is_applied_and_a_foreign_one_refused() {
    let fake = FakeCluster::new();
    let cluster = Cluster::new(fake.client());
    let egress = EgressPolicy {
        pod_cidrs: vec!["10.244.0.0/16".into()],
        ..EgressPolicy::default()
    };
    let objects = builds_namespace(NS, &egress).unwrap();
    cluster.ensure_builds_namespace(&objects).await.unwrap();
    cluster.ensure_builds_namespace(&objects).await.unwrap();
    let ns = fake.get("Namespace", "", NS).unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    assert_eq!(fake.objects("NetworkPolicy").len(), 2);
    assert!(
        fake.requests()
            .iter()
            .filter(|r| r.is_apply())
            .all(|r| r.field_manager() == Some("ferry"))
    );

    fake.insert(
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "builds" } }),
    );
    let foreign = builds_namespace("builds", &egress).unwrap();
    let err = cluster.ensure_builds_namespace(&foreign).await.unwrap_err();
    assert!(matches!(err, Error::NotOwned { .. }), "{err:?}");
}
