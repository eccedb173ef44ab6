//! Status sync lag: 1,000 services with two pods each in the in-memory
//! Kubernetes API, the real sync loop, on SQLite and PostgreSQL. Measures
//! the first full sync, the lag from a cluster change to its committed
//! `service_health` row (one change at a time, 200 times), and a burst of
//! 100 changes at once. A measurement, not a test:
//!
//! ```text
//! make bench-scheduler
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ferry_common::Shutdown;
use ferry_db::entities::enums::{HealthState, ServiceKind, ServiceStatus, SourceType};
use ferry_db::entities::{organizations, projects, service_health, services};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, PaginatorTrait as _, QueryFilter as _,
};
use ferry_k8s::Cluster;
use ferry_k8s::fake::FakeCluster;
use ferry_scheduler::lease::Lease;
use ferry_scheduler::sync::{LEASE, StatusSync};
use serde_json::json;
use uuid::Uuid;

const SERVICES: usize = 1_000;
const NS: &str = "ferry-p-bench";

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn labels(id: Uuid) -> serde_json::Value {
    json!({ "app.kubernetes.io/managed-by": "ferry", "ferry.dev/service-id": id.to_string() })
}

fn pod_status(ready: bool) -> serde_json::Value {
    let state = if ready {
        json!({ "running": { "startedAt": "2026-12-06T10:00:00Z" } })
    } else {
        json!({ "waiting": { "reason": "CrashLoopBackOff", "message": "back-off" } })
    };
    json!({ "phase": "Running", "containerStatuses": [{
        "name": "app", "image": "nginx", "imageID": "", "ready": ready, "restartCount": 0, "state": state }] })
}

async fn state_of(db: &DatabaseConnection, id: Uuid) -> Option<HealthState> {
    service_health::Entity::find()
        .filter(service_health::Column::ServiceId.eq(id))
        .one(db)
        .await
        .unwrap()
        .map(|h| h.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with make bench-scheduler"]
async fn sync_lag_with_1000_services() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let conn = db.conn.clone();
        let org = organizations::ActiveModel {
            id: Set(Uuid::now_v7()),
            name: Set("Bench".into()),
            slug: Set("bench".into()),
            ..Default::default()
        }
        .insert(&conn)
        .await
        .unwrap();
        let project = projects::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org.id),
            name: Set("bench".into()),
            slug: Set("bench".into()),
            namespace: Set(NS.into()),
            ..Default::default()
        }
        .insert(&conn)
        .await
        .unwrap();
        let fake = FakeCluster::new();
        let mut ids = Vec::new();
        for i in 0..SERVICES {
            let id = Uuid::now_v7();
            services::ActiveModel {
                id: Set(id),
                project_id: Set(project.id),
                name: Set(format!("svc-{i}")),
                kind: Set(ServiceKind::Application),
                source_type: Set(SourceType::Image),
                status: Set(ServiceStatus::Running),
                image: Set(Some("nginx".into())),
                replicas: Set(2),
                ..Default::default()
            }
            .insert(&conn)
            .await
            .unwrap();
            fake.insert(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": format!("svc-{i}"), "namespace": NS, "labels": labels(id) },
                "spec": { "replicas": 2 },
            }));
            for p in 0..2 {
                fake.insert(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": { "name": format!("svc-{i}-{p}"), "namespace": NS, "labels": labels(id) },
                    "spec": { "nodeName": "node-1", "containers": [{ "name": "app", "image": "nginx" }] },
                    "status": pod_status(true),
                }));
            }
            ids.push(id);
        }

        let shutdown = Shutdown::new();
        let task = {
            let (conn, shutdown) = (conn.clone(), shutdown.clone());
            let cluster = Cluster::new(fake.client());
            tokio::spawn(async move {
                let ttl = Duration::from_secs(15);
                StatusSync::new(conn, cluster, Lease::new(LEASE, "bench", ttl), ttl)
                    .run(&shutdown)
                    .await;
            })
        };
        let start = Instant::now();
        while service_health::Entity::find().count(&conn).await.unwrap() < SERVICES as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let full = start.elapsed();

        // One change at a time: a pod starts crash-looping (degraded).
        let mut lags = Vec::new();
        for (n, id) in ids.iter().take(200).enumerate() {
            let i = n;
            let start = Instant::now();
            fake.set_status("Pod", NS, &format!("svc-{i}-0"), pod_status(false));
            while state_of(&conn, *id).await != Some(HealthState::Degraded) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            lags.push(start.elapsed().as_secs_f64() * 1000.0);
        }

        // A burst: 100 services change at once.
        let start = Instant::now();
        for i in 200..300 {
            fake.set_status("Pod", NS, &format!("svc-{i}-0"), pod_status(false));
        }
        for id in &ids[200..300] {
            while state_of(&conn, *id).await != Some(HealthState::Degraded) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let burst = start.elapsed();
        println!(
            "{b}: {SERVICES} services / {} pods: first full sync {:.0} ms; change → row p50 {:.1} ms, p99 {:.1} ms (200 changes, polled every 2 ms); burst of 100 changes all written in {:.0} ms",
            SERVICES * 2,
            full.as_secs_f64() * 1000.0,
            pct(lags.clone(), 0.5),
            pct(lags, 0.99),
            burst.as_secs_f64() * 1000.0,
        );
        shutdown.trigger();
        task.await.unwrap();
    }
}
