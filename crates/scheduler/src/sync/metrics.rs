//! Container metrics: the replica holding the `metrics` lease lists
//! metrics.k8s.io's PodMetrics of Ferry's pods every interval (30 s by
//! default) and inserts one `container_metrics` row per running container
//! it knows, in batched inserts. Whether the cluster serves the metrics API
//! is recorded in `cluster_facts` (`metrics`), so the api can say so
//! instead of showing nothing.
//!
//! CPU is stored as `cpu_percent` of one core (as `docker stats` does:
//! 250m is 25 %); memory as bytes, with the service's memory limit and the
//! share of it when one is set.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_common::Shutdown;
use ferry_db::entities::{cluster_facts, container_metrics, containers, services};
use ferry_db::sea_orm::sea_query::OnConflict;
use ferry_db::sea_orm::{
    ActiveValue::Set, ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _,
};
use ferry_k8s::Cluster;
use uuid::Uuid;

use crate::Result;
use crate::lease::Lease;

/// Lease name of the metrics sampler.
pub const LEASE: &str = "metrics";

/// Name of the `cluster_facts` row saying whether metrics are served.
pub const FACT: &str = "metrics";

/// Rows per insert statement.
const INSERT_CHUNK: usize = 500;

/// What one sample did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sample {
    /// metrics.k8s.io answered.
    pub available: bool,
    /// Rows inserted.
    pub rows: usize,
}

/// Samples every `interval` under the lease until shutdown.
pub async fn run(
    db: &DatabaseConnection,
    cluster: &Cluster,
    lease: &Lease,
    interval: Duration,
    shutdown: &Shutdown,
) {
    lease
        .every(db, interval, shutdown, |now| sample(db, cluster, now))
        .await;
}

/// One sample at `now`.
pub async fn sample(
    db: &DatabaseConnection,
    cluster: &Cluster,
    now: DateTime<Utc>,
) -> Result<Sample> {
    let pods = match cluster.pod_metrics().await? {
        Some(pods) => pods,
        None => {
            record_fact(
                db,
                serde_json::json!({
                    "available": false,
                    "reason": "the cluster does not serve metrics.k8s.io; install metrics-server to see CPU and memory",
                    "checked_at": now,
                }),
                now,
            )
            .await?;
            return Ok(Sample::default());
        }
    };
    let known = running_containers(db).await?;
    let limits = memory_limits(db, &known).await?;
    let mut rows = Vec::new();
    for pod in &pods {
        for c in &pod.containers {
            let key = (pod.namespace.clone(), pod.name.clone(), c.name.clone());
            let Some(&(container_id, service_id)) = known.get(&key) else {
                continue;
            };
            let limit = limits.get(&service_id).copied().flatten();
            rows.push(container_metrics::ActiveModel {
                id: Set(Uuid::new_v4()),
                container_id: Set(container_id),
                timestamp: Set(pod.timestamp.unwrap_or(now)),
                cpu_percent: Set(Some(c.cpu_millicores as f64 / 10.0)),
                memory_usage: Set(Some(c.memory_bytes)),
                memory_limit: Set(limit),
                memory_percent: Set(
                    limit.map(|l| (c.memory_bytes as f64 * 100.0 / l as f64).min(100.0))
                ),
                network_rx: Set(None),
                network_tx: Set(None),
                block_read: Set(None),
                block_write: Set(None),
            });
        }
    }
    let count = rows.len();
    for chunk in rows.chunks(INSERT_CHUNK) {
        container_metrics::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(db)
            .await?;
    }
    record_fact(
        db,
        serde_json::json!({ "available": true, "sampled_at": now }),
        now,
    )
    .await?;
    Ok(Sample {
        available: true,
        rows: count,
    })
}

/// Containers the status sync knows as present, by namespace, pod and
/// container name.
async fn running_containers(
    db: &DatabaseConnection,
) -> Result<HashMap<(String, String, String), (Uuid, Uuid)>> {
    Ok(containers::Entity::find()
        .filter(containers::Column::RemovedAt.is_null())
        .all(db)
        .await?
        .into_iter()
        .map(|c| {
            (
                (c.namespace, c.pod_name, c.container_name),
                (c.id, c.service_id),
            )
        })
        .collect())
}

/// Each service's memory limit in bytes (when set and parseable).
async fn memory_limits(
    db: &DatabaseConnection,
    known: &HashMap<(String, String, String), (Uuid, Uuid)>,
) -> Result<HashMap<Uuid, Option<i64>>> {
    let ids: Vec<Uuid> = known
        .values()
        .map(|(_, s)| *s)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out = HashMap::new();
    for chunk in ids.chunks(INSERT_CHUNK) {
        for s in services::Entity::find()
            .filter(services::Column::Id.is_in(chunk.to_vec()))
            .all(db)
            .await?
        {
            let limit = s
                .memory_limit
                .as_deref()
                .and_then(ferry_k8s::validate::memory_bytes)
                .filter(|l| *l > 0);
            out.insert(s.id, limit);
        }
    }
    Ok(out)
}

async fn record_fact(
    db: &DatabaseConnection,
    value: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    cluster_facts::Entity::insert(cluster_facts::ActiveModel {
        id: Set(Uuid::new_v4()),
        name: Set(FACT.to_owned()),
        value: Set(value),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(cluster_facts::Column::Name)
            .update_columns([
                cluster_facts::Column::Value,
                cluster_facts::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}
