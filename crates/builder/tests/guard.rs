//! What the builder refuses before doing anything: callers without the
//! service credential, and malformed requests (named by field). Neither
//! touches git or the cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ferry_builder::testing::{self, TestConfig};
use ferry_k8s::fake::FakeCluster;
use ferry_proto::ferry::internal::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn calls_without_the_service_token_are_refused_and_start_nothing() {
    let fake = FakeCluster::new();
    let app = App::start(Some(&fake)).await;
    let (git, builder) = (&app.git, &app.builder);
    let mut client = builder.client();
    let req = app.request(50);

    let missing = client.run_build(req.clone()).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let mut wrong = tonic::Request::new(req.clone());
    let almost = format!("Bearer {}x", builder.token.expose());
    wrong
        .metadata_mut()
        .insert("authorization", almost.parse().unwrap());
    let err = client.run_build(wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!err.message().contains(builder.token.expose()));
    let cancel = pb::CancelBuildRequest {
        build_id: build_id(50).to_string(),
    };
    let err = client.cancel_build(cancel).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert_eq!(git.requests(), 0);
    assert_eq!(job_applies(&fake), 0);
}

#[tokio::test]
async fn a_builder_without_a_token_serves_no_builds() {
    let mut config = TestConfig::new();
    let token = config.config.token.take().unwrap();
    // The helper needs a token; start the server itself.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = ferry_common::Shutdown::new();
    let server = tokio::spawn(ferry_builder::serve(
        config.config,
        None,
        listener,
        std::time::Duration::from_secs(1),
        shutdown.clone(),
    ));
    let mut client =
        pb::builder_service_client::BuilderServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    let mut req = tonic::Request::new(request("https://example.com/a/b", build_id(51)));
    req.metadata_mut()
        .insert("authorization", token.bearer().parse().unwrap());
    let err = client.run_build(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("FERRY_BUILDER_TOKEN"), "{err:?}");
    shutdown.trigger();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn invalid_requests_name_the_field_and_create_nothing() {
    let fake = FakeCluster::new();
    let app = App::start(Some(&fake)).await;
    let (git, builder) = (&app.git, &app.builder);
    let mut client = builder.client();
    type Mutation = fn(&mut pb::RunBuildRequest);
    let cases: Vec<(Mutation, &str)> = vec![
        (|r| r.build_id = "not-a-uuid".into(), "buildId: "),
        (
            |r| r.repository_url = "ext::sh -c id".into(),
            "repositoryUrl: ",
        ),
        (
            |r| r.repository_url = "/srv/git/app".into(),
            "repositoryUrl: ",
        ),
        (|r| r.commit_sha = "deadbeef".into(), "commitSha: "),
        (|r| r.branch = "a..b".into(), "branch: "),
        (
            |r| r.watch_paths = vec!["apps/**".into(), "*.md".into(), "[z-a]".into()],
            "watchPaths[2]: ",
        ),
        (|r| r.root_dir = "../../etc".into(), "rootDir: "),
        (|r| r.project_name = "Shop!".into(), "projectName: "),
        (
            |r| {
                r.build_args.insert("BAD NAME".into(), "x".into());
            },
            "buildArgs[\"BAD NAME\"]: ",
        ),
        (
            |r| {
                r.build_args = (0..101).map(|i| (format!("ARG_{i}"), "v".into())).collect();
            },
            "buildArgs: ",
        ),
        (|r| r.build_type = "docker".into(), "buildType: "),
        (|r| r.timeout_seconds = 100_000, "timeoutSeconds: "),
        (|r| r.cpu_limit = "two".into(), "cpuLimit: "),
    ];
    for (mutate, prefix) in cases {
        let mut req = app.request(52);
        mutate(&mut req);
        let err = client.run_build(builder.request(req)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{prefix}: {err:?}");
        assert!(
            err.message().starts_with(prefix),
            "{prefix}: {}",
            err.message()
        );
    }
    let err = client
        .cancel_build(builder.request(pb::CancelBuildRequest {
            build_id: "x".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("buildId: "));

    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
    assert_eq!(git.requests(), 0, "no git traffic for a bad request");
}

#[tokio::test]
async fn cancel_without_a_cluster_finds_nothing() {
    let builder = testing::start(TestConfig::new()).await.unwrap();
    let found = builder
        .client()
        .cancel_build(builder.request(pb::CancelBuildRequest {
            build_id: build_id(53).to_string(),
        }))
        .await
        .unwrap()
        .into_inner()
        .found;
    assert!(!found);
}
