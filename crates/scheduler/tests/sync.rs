//! The status sync's lease, on PostgreSQL and SQLite with the in-memory
//! Kubernetes API: one replica watches, the other does not; when the
//! leader goes, the other takes over within the lease's renew period and
//! its first full list repairs what changed while nobody watched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ferry_common::Shutdown;
use ferry_db::entities::enums::{HealthState, ServiceStatus};
use ferry_db::entities::{leases, service_health, services};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, QueryFilter as _,
};
use ferry_k8s::Cluster;
use ferry_k8s::fake::FakeCluster;
use ferry_scheduler::lease::Lease;
use ferry_scheduler::sync::{LEASE, StatusSync};
use serde_json::json;
use tokio::task::JoinHandle;
use uuid::Uuid;

const NS: &str = "ferry-p-sync";
const TTL: Duration = Duration::from_secs(2);

async fn service(db: &DatabaseConnection) -> Uuid {
    let org = ferry_tests::fixtures::organization(db, "Acme", "acme").await;
    let project = ferry_tests::fixtures::project(db, org, "web", NS).await;
    ferry_tests::fixtures::service(db, project, "web", 8080).await
}

fn deployment(service: Uuid, replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": NS,
            "labels": {
                "app.kubernetes.io/managed-by": "ferry",
                "ferry.dev/service-id": service.to_string(),
            },
        },
        "spec": { "replicas": replicas },
    })
}

fn replica(db: &DatabaseConnection, fake: &FakeCluster, name: &str) -> (Shutdown, JoinHandle<()>) {
    let shutdown = Shutdown::new();
    let sync = StatusSync::new(
        db.clone(),
        Cluster::new(fake.client()),
        Lease::new(LEASE, name, TTL),
        TTL,
    );
    let stop = shutdown.clone();
    (shutdown, tokio::spawn(async move { sync.run(&stop).await }))
}

async fn holder(db: &DatabaseConnection) -> String {
    leases::Entity::find()
        .filter(leases::Column::Name.eq(LEASE))
        .one(db)
        .await
        .unwrap()
        .map(|l| l.holder)
        .unwrap_or_default()
}

async fn health(db: &DatabaseConnection, service: Uuid) -> Option<service_health::Model> {
    service_health::Entity::find()
        .filter(service_health::Column::ServiceId.eq(service))
        .one(db)
        .await
        .unwrap()
}

async fn until<F, Fut>(what: &str, within: Duration, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_replica_watches_and_the_other_takes_over() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let db = db.conn.clone();
        let fake = FakeCluster::new();
        let svc = service(&db).await;
        fake.insert(deployment(svc, 2));

        let (stop_a, a) = replica(&db, &fake, "a");
        until("a leads", Duration::from_secs(2), || async {
            holder(&db).await == "a" && fake.open_watches() == 3
        })
        .await;
        until("a writes", Duration::from_secs(2), || async {
            health(&db, svc)
                .await
                .is_some_and(|h| h.state == HealthState::Running)
        })
        .await;

        // The second replica neither takes the lease nor watches.
        let (stop_b, b_task) = replica(&db, &fake, "b");
        tokio::time::sleep(TTL).await;
        assert_eq!(holder(&db).await, "a", "{b}");
        assert_eq!(fake.open_watches(), 3, "{b}: only the leader watches");

        // The leader goes; a change lands while nobody watches.
        stop_a.trigger();
        a.await.unwrap();
        assert_eq!(fake.open_watches(), 0, "{b}");
        fake.insert(deployment(svc, 0));
        let start = Instant::now();
        until(
            "b takes over and repairs",
            Duration::from_secs(3),
            || async {
                holder(&db).await == "b"
                    && health(&db, svc)
                        .await
                        .is_some_and(|h| h.state == HealthState::Stopped)
            },
        )
        .await;
        println!("{b}: takeover and repair in {:?}", start.elapsed());
        let row = services::Entity::find_by_id(svc)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, ServiceStatus::Stopped, "{b}");

        // A deploy in progress owns `services.status`.
        services::ActiveModel {
            id: Set(svc),
            status: Set(ServiceStatus::Deploying),
            ..Default::default()
        }
        .update(&db)
        .await
        .unwrap();
        fake.insert(deployment(svc, 3));
        until("b follows", Duration::from_secs(2), || async {
            health(&db, svc)
                .await
                .is_some_and(|h| h.desired_replicas == 3)
        })
        .await;
        let row = services::Entity::find_by_id(svc)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, ServiceStatus::Deploying, "{b}");

        stop_b.trigger();
        b_task.await.unwrap();
        assert_eq!(holder(&db).await, "", "{b}: released on shutdown");
    }
}
