//! Status sync end to end, on PostgreSQL and SQLite: the api deploys a
//! service to the in-memory Kubernetes API, ferry-scheduler's status sync
//! (in process, the real loop with its lease and watches) follows the
//! cluster, and `GetService` over gRPC shows each change made on the
//! cluster (pods ready, crash-looping, a lost node, `kubectl scale`,
//! deletion by someone else) within 2 s. Also: metrics.k8s.io absent and
//! present, and objects outside the project's namespace ignored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use ferry_common::Shutdown;
use ferry_k8s::Cluster;
use ferry_k8s::fake::FakeCluster;
use ferry_proto::ferry::v1 as pb;
use ferry_scheduler::lease::Lease;
use ferry_scheduler::sync::{self, StatusSync};
use kube::api::{Api as KubeApi, DeleteParams, Patch, PatchParams};
use pb::deployment_service_client::DeploymentServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::service_service_client::ServiceServiceClient;
use serde_json::{Value, json};
use support::*;

/// How soon a cluster change must show in `GetService`.
const WITHIN: Duration = Duration::from_secs(2);

struct Ctx {
    services: ServiceServiceClient<tonic::transport::Channel>,
    token: String,
    id: String,
}

impl Ctx {
    async fn get(&mut self) -> pb::Service {
        self.services
            .get_service(authed(
                pb::GetServiceRequest {
                    id: self.id.clone(),
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Polls `GetService` until `ok` holds; fails after [`WITHIN`].
    async fn within(&mut self, what: &str, ok: impl Fn(&pb::Service) -> bool) -> pb::Service {
        let start = Instant::now();
        loop {
            let s = self.get().await;
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < WITHIN,
                "{what}: not reflected within {WITHIN:?}: health {:?}, status {}, containers {:#?}",
                s.health,
                s.status,
                s.containers
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn state(s: &pb::Service) -> &str {
    s.health.as_ref().map_or("", |h| h.state.as_str())
}

fn pod(ns: &str, name: &str, labels: &Value, node: &str, status: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": ns, "labels": labels },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": "app", "image": "ghcr.io/acme/web:1.0",
                             "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }] }],
        },
        "status": status,
    })
}

fn ready() -> Value {
    json!({
        "phase": "Running",
        "containerStatuses": [{
            "name": "app", "image": "ghcr.io/acme/web:1.0", "imageID": "", "ready": true,
            "restartCount": 0,
            "state": { "running": { "startedAt": "2026-12-06T10:00:00Z" } },
        }],
    })
}

fn crashing(restarts: i32) -> Value {
    json!({
        "phase": "Running",
        "containerStatuses": [{
            "name": "app", "image": "ghcr.io/acme/web:1.0", "imageID": "", "ready": false,
            "restartCount": restarts,
            "state": { "waiting": { "reason": "CrashLoopBackOff",
                                    "message": "back-off 40s restarting failed container=app" } },
            "lastState": { "terminated": { "reason": "Error", "exitCode": 1,
                                            "finishedAt": "2026-12-06T10:01:00Z" } },
        }],
    })
}

fn deployment_status(replicas: i32, ready: i32) -> Value {
    json!({ "observedGeneration": 1, "replicas": replicas, "readyReplicas": ready,
            "updatedReplicas": replicas, "availableReplicas": ready })
}

/// A user's service "web" (`replicas`, 256Mi limit) in a new project,
/// with a deploy started; no status sync has seen it yet.
async fn deployed(api: &Api, user: &str, replicas: i32) -> (Ctx, String, pb::Deployment) {
    let mut c = clients(api.addr).await;
    register(&mut c, user).await;
    let token = login(&mut c, user).await;
    let org = create_org(&mut c, &token, &format!("{user} org")).await.id;
    let project = ProjectServiceClient::new(c.channel.clone())
        .create_project(authed(
            pb::CreateProjectRequest {
                organization_id: org,
                name: "Shop".into(),
                slug: String::new(),
                description: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut services = ServiceServiceClient::new(c.channel.clone());
    let svc = services
        .create_service(authed(
            pb::CreateServiceRequest {
                project_id: project.id.clone(),
                name: "web".into(),
                spec: Some(pb::create_service_request::Spec::Application(
                    pb::ApplicationSpec {
                        image: "ghcr.io/acme/web:1.0".into(),
                        replicas: Some(replicas),
                        resources: Some(pb::Resources {
                            memory_limit: "256Mi".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )),
                ports: vec![],
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut ctx = Ctx {
        services,
        token: token.clone(),
        id: svc.id.clone(),
    };
    // Before any sync: no health.
    assert!(ctx.get().await.health.is_none());
    let deploy = DeploymentServiceClient::new(c.channel.clone())
        .deploy(authed(pb::DeployRequest { service_id: svc.id }, &token))
        .await
        .unwrap()
        .into_inner();
    (ctx, project.namespace, deploy)
}

/// The scheduler's status sync, as ferry-scheduler runs it.
fn spawn_sync(
    db: &ferry_db::sea_orm::DatabaseConnection,
    cluster: &Cluster,
) -> (Shutdown, tokio::task::JoinHandle<()>) {
    let shutdown = Shutdown::new();
    let (db, stop, cluster) = (db.clone(), shutdown.clone(), cluster.clone());
    let task = tokio::spawn(async move {
        let ttl = Duration::from_secs(15);
        StatusSync::new(db, cluster, Lease::new(sync::LEASE, "test", ttl), ttl)
            .run(&stop)
            .await;
    });
    (shutdown, task)
}

#[tokio::test]
async fn get_service_follows_the_cluster_within_two_seconds() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let (api, _state) =
            start_with_cluster(&db.conn, Some(&fake), Duration::from_secs(10)).await;
        let (mut ctx, ns, deploy) = deployed(&api, "alice", 2).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while ctx.get().await.status != "running" {
            assert!(
                Instant::now() < deadline,
                "{b}: deploy {} never ran",
                deploy.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let cluster = Cluster::new(fake.client());
        let (shutdown, sync_task) = spawn_sync(&db.conn, &cluster);

        // The workload as deployed: 2 of 2 ready (the fake's controller).
        let s = ctx.within("initial sync", |s| state(s) == "running").await;
        let h = s.health.unwrap();
        assert_eq!((h.desired_replicas, h.ready_replicas), (2, 2), "{b}");
        assert!(h.lag_ms >= 0 && h.observed_at.is_some(), "{b}");

        // Two pods become ready on two nodes.
        let dep = fake.get("Deployment", &ns, "web").unwrap();
        let labels = dep["spec"]["template"]["metadata"]["labels"].clone();
        fake.insert(pod(&ns, "web-a", &labels, "node-1", ready()));
        fake.insert(pod(&ns, "web-b", &labels, "node-2", ready()));
        // Someone else's pod labelled with this service, in another namespace.
        fake.insert(pod("intruder", "web-x", &labels, "node-9", crashing(9)));
        let s = ctx
            .within("two ready pods", |s| {
                s.containers.len() == 2 && s.containers.iter().all(|c| c.ready)
            })
            .await;
        let a = &s.containers[0];
        assert_eq!(
            (a.pod_name.as_str(), a.node_name.as_str(), a.state.as_str()),
            ("web-a", "node-1", "running"),
            "{b}"
        );
        assert_eq!(a.deployment_id, deploy.id, "{b}: the pod's deployment");
        assert!(a.started_at.is_some(), "{b}");
        assert_eq!(state(&s), "running", "{b}: the intruder is ignored");

        // One pod starts crash-looping: degraded.
        fake.set_status("Deployment", &ns, "web", deployment_status(2, 1));
        fake.set_status("Pod", &ns, "web-b", crashing(4));
        let s = ctx
            .within("one crash-looping pod", |s| state(s) == "degraded")
            .await;
        let h = s.health.as_ref().unwrap();
        assert_eq!(h.reason, "CrashLoopBackOff", "{b}");
        assert!(h.message.contains("web-b"), "{b}: {}", h.message);
        let crashed = s.containers.iter().find(|c| c.pod_name == "web-b").unwrap();
        assert_eq!(
            (
                crashed.state.as_str(),
                crashed.reason.as_str(),
                crashed.restart_count,
                crashed.last_termination_reason.as_str(),
                crashed.last_exit_code,
                crashed.ready,
            ),
            ("waiting", "CrashLoopBackOff", 4, "Error", 1, false),
            "{b}"
        );
        assert_eq!(s.status, "running", "{b}: degraded is still running");

        // Both crash: crash-looping, and the settled status follows.
        fake.set_status("Deployment", &ns, "web", deployment_status(2, 0));
        fake.set_status("Pod", &ns, "web-a", crashing(2));
        let s = ctx
            .within("all pods crash-looping", |s| {
                state(s) == "crash_looping" && s.status == "failed"
            })
            .await;
        assert_eq!(s.health.unwrap().restarts, 6, "{b}");

        // They recover; then the node of one goes silent.
        fake.set_status("Pod", &ns, "web-a", ready());
        fake.set_status("Pod", &ns, "web-b", ready());
        fake.set_status("Deployment", &ns, "web", deployment_status(2, 2));
        ctx.within("recovered", |s| {
            state(s) == "running" && s.status == "running"
        })
        .await;
        let mut lost = ready();
        lost["phase"] = json!("Unknown");
        lost["containerStatuses"][0]["ready"] = json!(false);
        fake.set_status("Pod", &ns, "web-b", lost);
        fake.set_status("Deployment", &ns, "web", deployment_status(2, 1));
        let s = ctx
            .within("node lost", |s| {
                s.health.as_ref().is_some_and(|h| h.reason == "NodeLost")
            })
            .await;
        assert_eq!(state(&s), "degraded", "{b}");
        let b_pod = s.containers.iter().find(|c| c.pod_name == "web-b").unwrap();
        assert_eq!(b_pod.state, "unknown", "{b}");

        // `kubectl scale --replicas=0`, then the pods go away.
        let deployments: KubeApi<k8s_openapi::api::apps::v1::Deployment> =
            KubeApi::namespaced(fake.client(), &ns);
        deployments
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
            )
            .await
            .unwrap();
        let pods: KubeApi<k8s_openapi::api::core::v1::Pod> =
            KubeApi::namespaced(fake.client(), &ns);
        for name in ["web-a", "web-b"] {
            pods.delete(name, &DeleteParams::default()).await.unwrap();
        }
        let s = ctx
            .within("scaled to zero", |s| {
                state(s) == "stopped" && s.containers.is_empty() && s.status == "stopped"
            })
            .await;
        assert_eq!(s.health.unwrap().desired_replicas, 0, "{b}");

        // Deleted by someone else.
        deployments
            .delete("web", &DeleteParams::default())
            .await
            .unwrap();
        let s = ctx.within("deleted", |s| state(s) == "missing").await;
        assert_eq!(s.health.unwrap().reason, "WorkloadMissing", "{b}");

        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), sync_task)
            .await
            .expect("the sync stops on shutdown")
            .unwrap();
        // It gave its lease up, and its watches are closed.
        assert_eq!(fake.open_watches(), 0, "{b}");
        api.stop().await;
    }
}

#[tokio::test]
async fn get_service_shows_metrics_or_says_why_not() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let (api, _state) =
            start_with_cluster(&db.conn, Some(&fake), Duration::from_secs(10)).await;
        let (mut ctx, ns, _) = deployed(&api, "bob", 1).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while fake.get("Deployment", &ns, "web").is_none() {
            assert!(Instant::now() < deadline, "{b}: never applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let labels =
            fake.get("Deployment", &ns, "web").unwrap()["spec"]["template"]["metadata"]["labels"]
                .clone();
        fake.insert(pod(&ns, "web-a", &labels, "node-1", ready()));

        let cluster = Cluster::new(fake.client());
        let (shutdown, sync_task) = spawn_sync(&db.conn, &cluster);
        ctx.within("the pod", |s| s.containers.len() == 1).await;
        let s = ctx.get().await;
        assert!(
            s.metrics_unavailable_reason
                .contains("no metrics sample yet"),
            "{b}: {}",
            s.metrics_unavailable_reason
        );

        // No metrics-server: said in words, no usage.
        let sample = sync::metrics::sample(&db.conn, &cluster, chrono::Utc::now())
            .await
            .unwrap();
        assert!(!sample.available, "{b}");
        let s = ctx.get().await;
        assert!(
            s.metrics_unavailable_reason.contains("metrics-server"),
            "{b}: {}",
            s.metrics_unavailable_reason
        );
        assert!(s.containers[0].usage.is_none(), "{b}");

        // With it: the pod's usage, and the share of the memory limit.
        fake.serve_metrics(true);
        fake.insert(json!({
            "apiVersion": "metrics.k8s.io/v1beta1",
            "kind": "PodMetrics",
            "metadata": { "name": "web-a", "namespace": ns, "labels": labels },
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "window": "15s",
            "containers": [{ "name": "app", "usage": { "cpu": "250000000n", "memory": "65536Ki" } }],
        }));
        // A pod that is not Ferry's is not sampled.
        fake.insert(json!({
            "apiVersion": "metrics.k8s.io/v1beta1",
            "kind": "PodMetrics",
            "metadata": { "name": "other", "namespace": ns, "labels": {} },
            "containers": [{ "name": "app", "usage": { "cpu": "1", "memory": "1Gi" } }],
        }));
        let sample = sync::metrics::sample(&db.conn, &cluster, chrono::Utc::now())
            .await
            .unwrap();
        assert_eq!((sample.available, sample.rows), (true, 1), "{b}");
        let s = ctx.get().await;
        assert_eq!(s.metrics_unavailable_reason, "", "{b}");
        let usage = s.containers[0].usage.expect("a sample");
        assert_eq!(
            (
                usage.cpu_millicores,
                usage.memory_bytes,
                usage.memory_limit_bytes
            ),
            (250, 64 * 1024 * 1024, 256 * 1024 * 1024),
            "{b}"
        );

        shutdown.trigger();
        sync_task.await.unwrap();
        api.stop().await;
    }
}
