//! The live side of a service in its API view: the health row and the
//! containers that ferry-scheduler's status sync keeps true to the
//! cluster, and the latest metrics sample of each container. Read only:
//! the api never writes these tables.

use std::collections::HashMap;

use chrono::Utc;
use ferry_db::entities::enums::{ContainerStatus, HealthState};
use ferry_db::entities::{cluster_facts, container_metrics, containers, service_health};
use ferry_db::sea_orm::{
    ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _,
};
use ferry_proto::ferry::v1 as pb;
use uuid::Uuid;

use crate::Result;
use crate::wire::ts;

/// Containers shown per service.
const MAX_CONTAINERS: u64 = 100;

/// Samples older than this are not shown as current.
const FRESH_SAMPLE: chrono::Duration = chrono::Duration::minutes(5);

/// Name of the scheduler's `cluster_facts` row about metrics.k8s.io.
const METRICS_FACT: &str = "metrics";

/// The health of each of `ids` that has a row (one query).
pub(crate) async fn health_of<C: ConnectionTrait>(
    db: &C,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, pb::ServiceHealth>> {
    Ok(service_health::Entity::find()
        .filter(service_health::Column::ServiceId.is_in(ids.to_vec()))
        .all(db)
        .await?
        .into_iter()
        .map(|h| {
            let message = pb::ServiceHealth {
                state: state_name(h.state).to_owned(),
                desired_replicas: h.desired_replicas,
                ready_replicas: h.ready_replicas,
                restarts: h.restarts,
                reason: h.reason.unwrap_or_default(),
                message: h.message.unwrap_or_default(),
                since: Some(ts(h.state_since)),
                observed_at: Some(ts(h.observed_at)),
                lag_ms: h.lag_ms,
            };
            (h.service_id, message)
        })
        .collect())
}

fn state_name(state: HealthState) -> &'static str {
    match state {
        HealthState::Running => "running",
        HealthState::Degraded => "degraded",
        HealthState::CrashLooping => "crash_looping",
        HealthState::Pending => "pending",
        HealthState::Stopped => "stopped",
        HealthState::Failed => "failed",
        HealthState::Missing => "missing",
    }
}

/// Fills GetService's live fields: current containers with their latest
/// sample, and why samples are missing when they are.
pub(crate) async fn fill_live<C: ConnectionTrait>(
    db: &C,
    service: &mut pb::Service,
    id: Uuid,
) -> Result<()> {
    let rows = containers::Entity::find()
        .filter(containers::Column::ServiceId.eq(id))
        .filter(containers::Column::RemovedAt.is_null())
        .order_by_asc(containers::Column::PodName)
        .order_by_asc(containers::Column::ContainerName)
        .limit(MAX_CONTAINERS)
        .all(db)
        .await?;
    let since = Utc::now() - FRESH_SAMPLE;
    let mut latest: HashMap<Uuid, container_metrics::Model> = HashMap::new();
    if !rows.is_empty() {
        // Newest first; the first seen per container wins. Bounded by the
        // window and the container count.
        for m in container_metrics::Entity::find()
            .filter(container_metrics::Column::ContainerId.is_in(rows.iter().map(|c| c.id)))
            .filter(container_metrics::Column::Timestamp.gte(since))
            .order_by_desc(container_metrics::Column::Timestamp)
            .limit(MAX_CONTAINERS * 20)
            .all(db)
            .await?
        {
            latest.entry(m.container_id).or_insert(m);
        }
    }
    service.containers = rows
        .into_iter()
        .map(|c| {
            let usage = latest.remove(&c.id).map(|m| pb::ContainerUsage {
                cpu_millicores: m.cpu_percent.map_or(0, |p| (p * 10.0).round() as i64),
                memory_bytes: m.memory_usage.unwrap_or(0),
                memory_limit_bytes: m.memory_limit.unwrap_or(0),
                sampled_at: Some(ts(m.timestamp)),
            });
            container_to_pb(c, usage)
        })
        .collect();
    service.metrics_unavailable_reason = metrics_unavailable(db).await?;
    Ok(())
}

fn container_to_pb(c: containers::Model, usage: Option<pb::ContainerUsage>) -> pb::Container {
    pb::Container {
        pod_name: c.pod_name,
        container_name: c.container_name,
        image: c.image,
        node_name: c.node_name.unwrap_or_default(),
        state: match c.status {
            ContainerStatus::Waiting => "waiting",
            ContainerStatus::Running => "running",
            ContainerStatus::Terminated => "terminated",
            ContainerStatus::Unknown => "unknown",
        }
        .to_owned(),
        ready: c.ready,
        restart_count: c.restart_count,
        reason: c.reason.unwrap_or_default(),
        message: c.message.unwrap_or_default(),
        last_termination_reason: c.last_termination_reason.unwrap_or_default(),
        last_exit_code: c.last_exit_code.unwrap_or(0),
        last_terminated_at: c.last_terminated_at.map(ts),
        started_at: c.started_at.map(ts),
        deployment_id: c.deployment_id.map(|d| d.to_string()).unwrap_or_default(),
        usage,
    }
}

/// Why there are no samples: what the scheduler recorded about
/// metrics.k8s.io, or that it has not sampled yet.
async fn metrics_unavailable<C: ConnectionTrait>(db: &C) -> Result<String> {
    let fact = cluster_facts::Entity::find()
        .filter(cluster_facts::Column::Name.eq(METRICS_FACT))
        .one(db)
        .await?;
    Ok(match fact {
        None => "no metrics sample yet: ferry-scheduler samples metrics.k8s.io when a cluster is configured".into(),
        Some(f) if f.value["available"].as_bool() == Some(true) => String::new(),
        Some(f) => f.value["reason"]
            .as_str()
            .unwrap_or("metrics.k8s.io is not available")
            .to_owned(),
    })
}
