//! StreamLogs and GetServiceEvents end to end over real gRPC/TCP, against
//! the in-memory Kubernetes API (`ferry_k8s::fake::FakeCluster`) serving
//! pod logs, on PostgreSQL and SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_api::ApiState;
use ferry_api::feed::{FeedAuth, FeedHub};
use ferry_api::workloads::DeployConfig;
use ferry_db::entities::enums::OrgRole;
use ferry_db::sea_orm::DatabaseConnection;
use ferry_k8s::cluster::Cluster;
use ferry_k8s::fake::FakeCluster;
use ferry_proto::ferry::v1 as pb;
use pb::project_service_client::ProjectServiceClient;
use pb::service_service_client::ServiceServiceClient;
use serde_json::json;
use support::*;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

async fn start_api(conn: &DatabaseConnection, cluster: Option<&FakeCluster>) -> Api {
    let state = ApiState {
        db: conn.clone(),
        keyring: Arc::new(ferry_tests::test_keyring()),
        feed: FeedHub::new(),
        feed_auth: FeedAuth::new(None),
        cluster: cluster.map(|f| Arc::new(Cluster::new(f.client()))),
        deploy: DeployConfig::default(),
        builds: Default::default(),
    };
    start_state(&state, relaxed()).await
}

/// A user, their organization, a project and its services `web` and `other`.
struct Tenant {
    services: ServiceServiceClient<Channel>,
    token: String,
    org: String,
    ns: String,
    web: String,
    other: String,
}

async fn tenant(api: &Api, name: &str) -> Tenant {
    let mut c = clients(api.addr).await;
    register(&mut c, name).await;
    let token = login(&mut c, name).await;
    let org = create_org(&mut c, &token, &format!("{name} org")).await.id;
    let project = ProjectServiceClient::new(c.channel.clone())
        .create_project(authed(
            pb::CreateProjectRequest {
                organization_id: org.clone(),
                name: format!("{name} shop"),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut services = ServiceServiceClient::new(c.channel.clone());
    let mut ids = Vec::new();
    for service in ["web", "other"] {
        let spec = pb::create_service_request::Spec::Application(pb::ApplicationSpec {
            image: "nginx:1".into(),
            replicas: Some(1),
            ..Default::default()
        });
        let created = services
            .create_service(authed(
                pb::CreateServiceRequest {
                    project_id: project.id.clone(),
                    name: service.into(),
                    spec: Some(spec),
                    ports: vec![],
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        ids.push(created.id);
    }
    Tenant {
        services,
        token,
        org,
        ns: project.namespace,
        other: ids.pop().unwrap(),
        web: ids.pop().unwrap(),
    }
}

/// A running pod of `service_id`, as the Deployment controller would make it.
fn pod(fake: &FakeCluster, ns: &str, name: &str, service_id: &str) {
    fake.insert(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                "app.kubernetes.io/managed-by": "ferry",
                "ferry.dev/service-id": service_id,
            },
        },
        "spec": { "containers": [{ "name": "app", "image": "nginx:1" }] },
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "image": "nginx:1", "imageID": "", "ready": true,
                "restartCount": 0, "state": { "running": {} },
            }],
        },
    }));
}

fn logs_request(t: &Tenant, req: pb::StreamLogsRequest) -> tonic::Request<pb::StreamLogsRequest> {
    authed(
        pb::StreamLogsRequest {
            service_id: t.web.clone(),
            ..req
        },
        &t.token,
    )
}

async fn collect(stream: &mut Streaming<pb::LogLine>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some(line) = stream.message().await.unwrap() {
        assert!(line.time.is_some(), "{line:?}");
        assert_eq!(line.container, "app");
        out.push((line.pod, line.line));
    }
    out
}

async fn next(stream: &mut Streaming<pb::LogLine>) -> (String, String) {
    let line = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("the stream goes on");
    (line.pod, line.line)
}

fn of(lines: &[(String, String)], pod: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|(p, _)| p == pod)
        .map(|(_, l)| l.clone())
        .collect()
}

/// Waits until the fake holds no log stream and no watch open.
async fn wait_closed(fake: &FakeCluster) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.open_log_streams() + fake.open_watches() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server still holds {} log streams and {} watches",
            fake.open_log_streams(),
            fake.open_watches()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn logs_interleave_pods_and_honour_tail_and_since() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let api = start_api(&db.conn, Some(&fake)).await;
        let mut t = tenant(&api, "alice").await;
        let ns = t.ns.clone();
        pod(&fake, &ns, "web-1", &t.web);
        pod(&fake, &ns, "web-2", &t.web);
        pod(&fake, &ns, "other-1", &t.other);
        let old = Utc::now() - chrono::TimeDelta::minutes(10);
        for i in 0..3 {
            fake.append_log_at(&ns, "web-1", "app", old, &format!("old {i}"));
        }
        for i in 0..2 {
            fake.append_log(&ns, "web-1", "app", &format!("one {i}"));
            fake.append_log(&ns, "web-2", "app", &format!("two {i}"));
        }
        fake.append_log(&ns, "other-1", "app", "not web's");
        let long = "x".repeat(100 * 1024);
        fake.append_log(&ns, "web-2", "app", &long);

        let mut all = t
            .services
            .stream_logs(logs_request(&t, Default::default()))
            .await
            .unwrap()
            .into_inner();
        let all = collect(&mut all).await;
        assert_eq!(
            of(&all, "web-1"),
            ["old 0", "old 1", "old 2", "one 0", "one 1"],
            "{b}"
        );
        let two = of(&all, "web-2");
        assert_eq!(two[..2], ["two 0", "two 1"], "{b}");
        assert!(
            two[2].len() < 65 * 1024 && two[2].ends_with("[line truncated by ferry]"),
            "{b}: {}",
            two[2].len()
        );
        assert_eq!(all.len(), 8, "{b}: no other service's pod: {all:?}");

        let mut tail = t
            .services
            .stream_logs(logs_request(
                &t,
                pb::StreamLogsRequest {
                    tail_lines: 1,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let tail = collect(&mut tail).await;
        assert_eq!(of(&tail, "web-1"), ["one 1"], "{b}");
        assert_eq!(tail.len(), 2, "{b}: {tail:?}");

        let mut since = t
            .services
            .stream_logs(logs_request(
                &t,
                pb::StreamLogsRequest {
                    since_seconds: 60,
                    pod: "web-1".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            collect(&mut since).await,
            [
                ("web-1".into(), "one 0".into()),
                ("web-1".into(), "one 1".into())
            ],
            "{b}"
        );
        let r = fake
            .requests()
            .into_iter()
            .rfind(|r| r.path.ends_with("/log"))
            .unwrap();
        assert_eq!(
            (
                r.param("sinceSeconds"),
                r.param("tailLines"),
                r.param("timestamps")
            ),
            (Some("60"), Some("100"), Some("true")),
            "{b}"
        );
        api.stop().await;
    }
}

#[tokio::test]
async fn following_picks_up_new_lines_and_new_pods_and_stops_when_the_client_goes() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let api = start_api(&db.conn, Some(&fake)).await;
        let mut t = tenant(&api, "alice").await;
        let ns = t.ns.clone();
        pod(&fake, &ns, "web-1", &t.web);
        fake.append_log(&ns, "web-1", "app", "before");

        let mut stream = t
            .services
            .stream_logs(logs_request(
                &t,
                pb::StreamLogsRequest {
                    follow: true,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            next(&mut stream).await,
            ("web-1".into(), "before".into()),
            "{b}"
        );
        fake.append_log(&ns, "web-1", "app", "after");
        assert_eq!(
            next(&mut stream).await,
            ("web-1".into(), "after".into()),
            "{b}"
        );

        // A rollout's new pod joins; the old pod's log ending ends nothing.
        pod(&fake, &ns, "web-2", &t.web);
        fake.append_log(&ns, "web-2", "app", "new pod");
        assert_eq!(
            next(&mut stream).await,
            ("web-2".into(), "new pod".into()),
            "{b}"
        );
        fake.end_log(&ns, "web-1", "app");
        fake.append_log(&ns, "web-2", "app", "still here");
        assert_eq!(
            next(&mut stream).await,
            ("web-2".into(), "still here".into()),
            "{b}"
        );
        assert!(
            fake.open_log_streams() >= 1 && fake.open_watches() >= 1,
            "{b}"
        );

        // The client goes away: every Kubernetes stream of the call closes.
        drop(stream);
        wait_closed(&fake).await;
        api.stop().await;
    }
}

#[tokio::test]
async fn logs_and_events_are_authorised_like_reading_the_service() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let api = start_api(&db.conn, Some(&fake)).await;
        let mut t = tenant(&api, "alice").await;
        let ns = t.ns.clone();
        pod(&fake, &ns, "web-1", &t.web);
        pod(&fake, &ns, "other-1", &t.other);
        fake.append_log(&ns, "web-1", "app", "hello");
        fake.append_log(&ns, "other-1", "app", "secret of other");

        // An outsider: NOT_FOUND, and no pod log was requested.
        let mut outsider = tenant(&api, "mallory").await;
        fake.clear_requests();
        let request = |token: &str, pod: &str| {
            authed(
                pb::StreamLogsRequest {
                    service_id: t.web.clone(),
                    pod: pod.into(),
                    ..Default::default()
                },
                token,
            )
        };
        let err = outsider
            .services
            .stream_logs(request(&outsider.token, ""))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{b}: {err:?}");
        let err = outsider
            .services
            .get_service_events(authed(
                pb::GetServiceEventsRequest {
                    service_id: t.web.clone(),
                    limit: 0,
                },
                &outsider.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{b}: {err:?}");
        assert!(fake.requests().is_empty(), "{b}: {:?}", fake.requests());

        // A viewer of the organization reads them.
        let mut c = clients(api.addr).await;
        let viewer = register(&mut c, "victor").await;
        let viewer_token = login(&mut c, "victor").await;
        add_member(&db.conn, &t.org, &viewer.id, OrgRole::Viewer).await;
        let mut lines = outsider
            .services
            .stream_logs(request(&viewer_token, ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            collect(&mut lines).await,
            [("web-1".into(), "hello".into())],
            "{b}"
        );

        // Only the service's own pods, whatever the caller names.
        for pod in ["other-1", "web-9"] {
            let err = t
                .services
                .stream_logs(request(&t.token, pod))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "{b}: {pod}: {err:?}");
        }
        let err = t
            .services
            .stream_logs(request(&t.token, "../../kube-system/pods/x"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}: {err:?}");

        let err = t
            .services
            .stream_logs(logs_request(
                &t,
                pb::StreamLogsRequest {
                    tail_lines: 10_001,
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}");
        assert!(err.message().starts_with("tailLines"), "{b}: {err:?}");
        api.stop().await;

        // Plan-only: no cluster, nothing to read.
        let api = start_api(&db.conn, None).await;
        let mut t = tenant(&api, "paula").await;
        let err = t
            .services
            .stream_logs(logs_request(&t, Default::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{b}: {err:?}");
        assert!(
            err.message().contains("no Kubernetes cluster"),
            "{b}: {err:?}"
        );
        let err = t
            .services
            .get_service_events(authed(
                pb::GetServiceEventsRequest {
                    service_id: t.web.clone(),
                    limit: 0,
                },
                &t.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{b}: {err:?}");
        api.stop().await;
    }
}

#[tokio::test]
async fn events_of_the_service_objects_in_plain_words() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let api = start_api(&db.conn, Some(&fake)).await;
        let mut t = tenant(&api, "alice").await;
        let ns = t.ns.clone();
        let event = |n: i64, kind: &str, name: &str, type_: &str, reason: &str, message: &str| {
            let at = (Utc::now() - chrono::TimeDelta::minutes(60 - n)).to_rfc3339();
            fake.insert(json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": { "name": format!("e{n}"), "namespace": ns },
                "involvedObject": { "kind": kind, "name": name, "namespace": ns },
                "type": type_, "reason": reason, "message": message, "count": n,
                "firstTimestamp": at, "lastTimestamp": at,
            }));
        };
        event(
            1,
            "Deployment",
            "web",
            "Normal",
            "ScalingReplicaSet",
            "Scaled up replica set web-7d9f to 1",
        );
        event(
            2,
            "ReplicaSet",
            "web-7d9f",
            "Normal",
            "SuccessfulCreate",
            "Created pod: web-7d9f-x2b4z",
        );
        event(
            3,
            "Pod",
            "web-7d9f-x2b4z",
            "Warning",
            "Failed",
            "Failed to pull image \"nginx:nope\": not found",
        );
        event(
            4,
            "Pod",
            "web-7d9f-x2b4z",
            "Warning",
            "BackOff",
            "Back-off restarting failed container app",
        );
        event(
            5,
            "Pod",
            "web-7d9f-x2b4z",
            "Warning",
            "Unhealthy",
            "Liveness probe failed: HTTP 500",
        );
        event(
            6,
            "Pod",
            "web-7d9f-x2b4z",
            "Warning",
            "OOMKilling",
            "Memory cgroup out of memory",
        );
        event(
            7,
            "Pod",
            "web-7d9f-x2b4z",
            "Warning",
            "FailedScheduling",
            "0/3 nodes are available",
        );
        event(
            8,
            "Pod",
            "other-5c4b-xyz12",
            "Warning",
            "BackOff",
            "not web's",
        );
        event(
            9,
            "Deployment",
            "other",
            "Normal",
            "ScalingReplicaSet",
            "not web's",
        );
        event(
            10,
            "ReplicaSet",
            "web-api-1a2b",
            "Normal",
            "SuccessfulCreate",
            "not web's",
        );

        let list = |limit| {
            authed(
                pb::GetServiceEventsRequest {
                    service_id: t.web.clone(),
                    limit,
                },
                &t.token,
            )
        };
        let events = t
            .services
            .get_service_events(list(0))
            .await
            .unwrap()
            .into_inner()
            .events;
        let objects: Vec<&str> = events.iter().map(|e| e.object.as_str()).collect();
        assert_eq!(
            objects,
            [
                "Deployment/web",
                "ReplicaSet/web-7d9f",
                "Pod/web-7d9f-x2b4z",
                "Pod/web-7d9f-x2b4z",
                "Pod/web-7d9f-x2b4z",
                "Pod/web-7d9f-x2b4z",
                "Pod/web-7d9f-x2b4z",
            ],
            "{b}: oldest first, nobody else's"
        );
        let summary = |reason: &str| {
            events
                .iter()
                .find(|e| e.reason == reason)
                .unwrap()
                .summary
                .clone()
        };
        assert!(
            summary("Failed").starts_with("the image could not be pulled"),
            "{b}"
        );
        assert!(summary("BackOff").contains("crash loop"), "{b}");
        assert!(summary("OOMKilling").contains("ran out of memory"), "{b}");
        assert!(
            summary("Unhealthy").starts_with("a health check failed: Liveness"),
            "{b}"
        );
        assert!(
            summary("FailedScheduling").starts_with("no node can run the pod"),
            "{b}"
        );
        let oom = events.iter().find(|e| e.reason == "OOMKilling").unwrap();
        assert_eq!((oom.r#type.as_str(), oom.count), ("Warning", 6), "{b}");
        assert!(oom.last_seen.is_some(), "{b}");

        let last_two = t
            .services
            .get_service_events(list(2))
            .await
            .unwrap()
            .into_inner()
            .events;
        let reasons: Vec<&str> = last_two.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["OOMKilling", "FailedScheduling"], "{b}");
        let err = t.services.get_service_events(list(501)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}");
        assert!(err.message().starts_with("limit"), "{b}: {err:?}");
        api.stop().await;
    }
}
