//! Builds on the in-memory cluster over real gRPC: the full lifecycle, a
//! failed step, a timeout, cancelling, and re-attaching after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ferry_k8s::build::job_name;
use ferry_k8s::fake::{FakeCluster, FakeContainerState};
use ferry_proto::ferry::internal::v1 as pb;
use pb::build_event::Event;

#[tokio::test]
async fn a_build_runs_from_queued_to_finished_with_its_digest_and_logs() {
    let fake = FakeCluster::new();
    let app = App::start(Some(&fake)).await;
    let (sha, builder) = (&app.sha, &app.builder);
    let id = build_id(1);
    let mut stream = run(builder, app.request(1)).await;

    let resolved = resolved(next(&mut stream).await);
    assert_eq!(resolved.commit_sha, sha.as_str());
    assert_eq!(resolved.build_type, "dockerfile");
    assert_eq!(resolved.detection, ["Dockerfile found at Dockerfile"]);
    assert_eq!(resolved.job_name, job_name(id));

    // The Job carries what was resolved, for a builder that re-attaches.
    let job = fake.get("Job", NS, &resolved.job_name).unwrap();
    let annotations = &job["metadata"]["annotations"];
    assert_eq!(annotations["ferry.dev/commit-sha"], sha.as_str());
    assert_eq!(annotations["ferry.dev/build-type"], "dockerfile");
    assert!(fake.get("Secret", NS, &resolved.job_name).is_some());
    assert!(fake.get("Namespace", "", NS).is_some());

    let (before, queued) = until(&mut stream, |e| matches!(e, Event::Progress(_))).await;
    assert!(before.is_empty(), "{before:?}");
    assert!(
        matches!(&queued, Event::Progress(p) if p.step == "queued"),
        "{queued:?}"
    );

    let pod = Pod {
        fake: &fake,
        name: pod_of(&fake, &resolved.job_name).await,
    };
    pod.clone_succeeds();
    pod.set("build", FakeContainerState::Running);
    for i in 0..3 {
        pod.log("build", &format!("#{i} building"));
    }
    pod.set("build", FakeContainerState::succeeded(metadata()));

    let mut events = vec![queued];
    events.extend(rest(&mut stream).await);
    assert_eq!(steps(&events), ["queued", "clone", "build"]);
    assert_eq!(
        log_lines(&events),
        [
            ("clone", "Initialized empty Git repository"),
            ("clone", "fetching the commit"),
            ("build", "#0 building"),
            ("build", "#1 building"),
            ("build", "#2 building"),
        ]
        .map(|(s, l)| (s.to_owned(), l.to_owned()))
    );
    let terminal: Vec<&Event> = events.iter().filter(|e| is_terminal(e)).collect();
    assert_eq!(terminal.len(), 1, "{events:?}");
    let Some(Event::Finished(finished)) = events.last() else {
        panic!("{events:?}");
    };
    assert_eq!(finished.digest, DIGEST);
    assert_eq!(
        finished.image,
        format!("registry.ferry.test/ferry/shop/web@{DIGEST}")
    );
    assert_eq!(job_applies(&fake), 1);
    // Nothing is left open on the cluster.
    eventually("watches closed", || fake.open_watches() == 0).await;
    eventually("log streams closed", || fake.open_log_streams() == 0).await;
}

#[tokio::test]
async fn a_failed_build_step_reports_its_exit_code_and_last_lines() {
    let fake = FakeCluster::new();
    let app = App::start(Some(&fake)).await;
    let builder = &app.builder;
    let mut stream = run(builder, app.request(2)).await;
    let resolved = resolved(next(&mut stream).await);
    let pod = Pod {
        fake: &fake,
        name: pod_of(&fake, &resolved.job_name).await,
    };
    pod.clone_succeeds();
    pod.set("build", FakeContainerState::Running);
    for i in 0..40 {
        pod.log("build", &format!("step {i}"));
    }
    // A line far over 64 KiB arrives cut.
    pod.log("build", &"x".repeat(100 * 1024));
    pod.log("build", "ERROR: failed to solve: exit code 1");
    pod.set(
        "build",
        FakeContainerState::failed(1, "ERROR: failed to solve: exit code 1"),
    );

    let events = rest(&mut stream).await;
    let Some(Event::Failed(failed)) = events.last() else {
        panic!("{events:?}");
    };
    assert_eq!(failed.step, "build");
    assert_eq!(failed.reason, "exit code 1 in the build step");
    assert!(!failed.timed_out);
    assert_eq!(failed.last_lines.len(), 30);
    assert_eq!(failed.last_lines[0], "step 12");
    assert_eq!(
        failed.last_lines.last().unwrap(),
        "ERROR: failed to solve: exit code 1"
    );
    let lines = log_lines(&events);
    let (_, cut) = lines.iter().max_by_key(|(_, l)| l.len()).unwrap();
    assert!(
        (60 * 1024..=64 * 1024).contains(&cut.len()),
        "lines are capped at 64 KiB: {}",
        cut.len()
    );
    assert!(cut.ends_with(ferry_k8s::logs::TRUNCATED));
    assert_eq!(events.iter().filter(|e| is_terminal(e)).count(), 1);
}

#[tokio::test]
async fn a_build_past_its_deadline_times_out() {
    let fake = FakeCluster::new();
    let app = App::start(Some(&fake)).await;
    let builder = &app.builder;
    let mut req = app.request(3);
    req.timeout_seconds = 60;
    let mut stream = run(builder, req).await;
    let resolved = resolved(next(&mut stream).await);
    let job = fake.get("Job", NS, &resolved.job_name).unwrap();
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 60);
    let pod = Pod {
        fake: &fake,
        name: pod_of(&fake, &resolved.job_name).await,
    };
    pod.set("clone-init", FakeContainerState::Running);
    until(
        &mut stream,
        |e| matches!(e, Event::Progress(p) if p.step == "clone"),
    )
    .await;
    assert!(fake.fail_job(
        NS,
        &resolved.job_name,
        "DeadlineExceeded",
        "Job was active longer than specified deadline"
    ));
    let events = rest(&mut stream).await;
    let Some(Event::Failed(failed)) = events.last() else {
        panic!("{events:?}");
    };
    assert!(failed.timed_out, "{failed:?}");
    assert_eq!(failed.step, "clone");
    assert!(
        failed.reason.starts_with("timed out in the clone step"),
        "{}",
        failed.reason
    );
}

#[tokio::test]
async fn cancel_deletes_the_job_and_the_stream_says_so() {
    let fake = FakeCluster::new();
    let app = App::start(Some(&fake)).await;
    let builder = &app.builder;
    let id = build_id(4);
    let mut stream = run(builder, app.request(4)).await;
    let resolved = resolved(next(&mut stream).await);
    pod_of(&fake, &resolved.job_name).await;

    let cancel = pb::CancelBuildRequest {
        build_id: id.to_string(),
    };
    let mut client = builder.client();
    let found = client
        .cancel_build(builder.request(cancel.clone()))
        .await
        .unwrap()
        .into_inner()
        .found;
    assert!(found);
    assert!(fake.get("Job", NS, &resolved.job_name).is_none());
    assert!(fake.get("Secret", NS, &resolved.job_name).is_none());
    let events = rest(&mut stream).await;
    let Some(Event::Failed(failed)) = events.last() else {
        panic!("{events:?}");
    };
    assert!(failed.reason.contains("deleted (cancelled)"), "{failed:?}");
    // Again: nothing to cancel.
    let again = client
        .cancel_build(builder.request(cancel))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.found);
}

#[tokio::test]
async fn a_restarted_builder_re_attaches_instead_of_starting_a_second_job() {
    let fake = FakeCluster::new();
    // The git server lives in `_git` until the end.
    let App {
        git: _git,
        repo,
        sha,
        builder: first,
    } = App::start(Some(&fake)).await;
    let req = || request(repo.url(), build_id(5));
    let mut stream = run(&first, req()).await;
    let job = resolved(next(&mut stream).await).job_name;
    let pod = Pod {
        fake: &fake,
        name: pod_of(&fake, &job).await,
    };
    pod.clone_succeeds();
    until(
        &mut stream,
        |e| matches!(e, Event::Progress(p) if p.step == "build"),
    )
    .await;

    // The client goes away mid-build: the builder lets go of everything
    // but the Job.
    drop(stream);
    eventually("watches closed", || fake.open_watches() == 0).await;
    eventually("log streams closed", || fake.open_log_streams() == 0).await;
    assert!(fake.get("Job", NS, &job).is_some());

    // A stream still open when the builder stops ends at once, as
    // UNAVAILABLE, and the Job stays.
    let mut open = run(&first, req()).await;
    resolved(next(&mut open).await);
    let stopping = tokio::spawn(first.stop());
    let end = tokio::time::timeout(TIMEOUT, async {
        loop {
            match open.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends when the builder stops");
    let status = end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    stopping.await.unwrap().unwrap();
    assert!(fake.get("Job", NS, &job).is_some());

    // A new builder process, same cluster: RunBuild again re-attaches.
    let second = builder(Some(&fake)).await;
    let mut stream = run(&second, req()).await;
    let again = resolved(next(&mut stream).await);
    assert_eq!(again.job_name, job);
    assert_eq!(again.commit_sha, sha.as_str());
    assert_eq!(again.build_type, "dockerfile");
    assert_eq!(again.detection, ["Dockerfile found at Dockerfile"]);
    pod.set("build", FakeContainerState::Running);
    pod.log("build", "#1 pushing");
    pod.set("build", FakeContainerState::succeeded(metadata()));
    let events = rest(&mut stream).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Finished(f) if f.digest == DIGEST))
            .count(),
        1,
        "{events:?}"
    );
    assert_eq!(events.iter().filter(|e| is_terminal(e)).count(), 1);
    assert!(matches!(events.last(), Some(Event::Finished(_))));
    assert_eq!(job_applies(&fake), 1, "one Job, ever");
}
