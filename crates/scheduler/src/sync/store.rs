//! Writes observations: one transaction per chunk of services.
//!
//! - `service_health` gets one row per service (rewritten only when what
//!   it says changed; `state_since` kept while the state holds);
//! - `containers` gets one row per container seen (upserted by pod uid and
//!   container name); a container no longer seen is marked `removed_at`
//!   and kept for its metrics until retention;
//! - `services.status` follows only when it is settled (`running`,
//!   `stopped`, `failed`): a deploy in progress owns it until it ends.
//!
//! Objects are matched to services by the `ferry.dev/service-id` label and
//! the project's namespace; labels naming an unknown service, or objects in
//! another namespace, are ignored.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use ferry_db::entities::enums::{ContainerStatus, HealthState, ServiceStatus};
use ferry_db::entities::{containers, deployments, projects, service_health, services};
use ferry_db::sea_orm::sea_query::{Expr, OnConflict};
use ferry_db::sea_orm::{
    ActiveValue::Set, ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _,
    QuerySelect as _,
};
use ferry_k8s::{ContainerObservation, ServiceObservation, StatusView};
use uuid::Uuid;

use crate::Result;

/// Services per transaction (bounds statement sizes on a full re-list).
const CHUNK: usize = 200;

/// What one write did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Services written (known to the database).
    pub services: usize,
    /// Of those, whose health row changed.
    pub changed: usize,
    /// Container rows upserted.
    pub containers: usize,
    /// Container rows marked removed.
    pub removed: usize,
    /// Longest time from a change's arrival to its commit.
    pub max_lag_ms: i64,
}

/// Writes the services of `batch` as `watch` says they are now. With
/// `full` (a re-list), every service the database thinks deployed is
/// written too, so one whose objects vanished meanwhile becomes `missing`.
pub async fn record(
    db: &DatabaseConnection,
    watch: &StatusView,
    batch: &BTreeMap<String, DateTime<Utc>>,
    full: bool,
    now: DateTime<Utc>,
) -> Result<Report> {
    let mut seen: BTreeMap<Uuid, DateTime<Utc>> = batch
        .iter()
        .filter_map(|(id, at)| Some((Uuid::parse_str(id).ok()?, *at)))
        .collect();
    if full {
        for id in deployed_services(db).await? {
            seen.entry(id).or_insert(now);
        }
    }
    let ids: Vec<Uuid> = seen.keys().copied().collect();
    let mut report = Report::default();
    for chunk in ids.chunks(CHUNK) {
        record_chunk(db, watch, chunk, &seen, &mut report).await?;
    }
    Ok(report)
}

/// Services the database believes are on the cluster.
async fn deployed_services(db: &DatabaseConnection) -> Result<BTreeSet<Uuid>> {
    let mut ids: BTreeSet<Uuid> = service_health::Entity::find()
        .select_only()
        .column(service_health::Column::ServiceId)
        .filter(service_health::Column::State.ne(HealthState::Missing))
        .into_tuple::<Uuid>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    ids.extend(
        services::Entity::find()
            .select_only()
            .column(services::Column::Id)
            .filter(services::Column::Status.is_in(SETTLED))
            .into_tuple::<Uuid>()
            .all(db)
            .await?,
    );
    Ok(ids)
}

/// Lifecycle states the sync may correct; the others belong to a deploy.
const SETTLED: [ServiceStatus; 3] = [
    ServiceStatus::Running,
    ServiceStatus::Stopped,
    ServiceStatus::Failed,
];

async fn record_chunk(
    db: &DatabaseConnection,
    watch: &StatusView,
    ids: &[Uuid],
    seen: &BTreeMap<Uuid, DateTime<Utc>>,
    report: &mut Report,
) -> Result<()> {
    let known = services::Entity::find()
        .filter(services::Column::Id.is_in(ids.to_vec()))
        .find_also_related(projects::Entity)
        .all(db)
        .await?;
    let observations: Vec<(services::Model, ServiceObservation)> = known
        .into_iter()
        .filter_map(|(service, project)| {
            let project = project?;
            let obs = watch.observe(&service.id.to_string(), &project.namespace);
            Some((service, obs))
        })
        .collect();
    if observations.is_empty() {
        return Ok(());
    }
    let service_ids: Vec<Uuid> = observations.iter().map(|(s, _)| s.id).collect();
    let valid_deployments = deployment_ids(db, &observations).await?;

    let txn = ferry_db::begin_write(db).await?;
    let health: HashMap<Uuid, service_health::Model> = service_health::Entity::find()
        .filter(service_health::Column::ServiceId.is_in(service_ids.clone()))
        .all(&txn)
        .await?
        .into_iter()
        .map(|h| (h.service_id, h))
        .collect();
    let current: Vec<containers::Model> = containers::Entity::find()
        .filter(containers::Column::ServiceId.is_in(service_ids))
        .filter(containers::Column::RemovedAt.is_null())
        .all(&txn)
        .await?;
    let now = Utc::now();
    let mut rows = Vec::new();
    let mut observed: BTreeSet<(String, String)> = BTreeSet::new();
    for (service, obs) in &observations {
        let arrived = seen.get(&service.id).copied().unwrap_or(now);
        let lag_ms = (now - arrived).num_milliseconds().max(0);
        if write_health(
            &txn,
            service,
            obs,
            health.get(&service.id),
            arrived,
            lag_ms,
            now,
        )
        .await?
        {
            report.changed += 1;
            report.max_lag_ms = report.max_lag_ms.max(lag_ms);
            follow_status(&txn, service, obs, now).await?;
        }
        for c in &obs.containers {
            observed.insert((c.pod_uid.clone(), c.container_name.clone()));
            rows.push(container_row(service.id, c, &valid_deployments, now));
        }
    }
    report.services += observations.len();
    report.containers += rows.len();
    for rows in rows.chunks(100) {
        containers::Entity::insert_many(rows.to_vec())
            .on_conflict(
                OnConflict::columns([
                    containers::Column::PodUid,
                    containers::Column::ContainerName,
                ])
                .update_columns(UPSERTED)
                .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
    }
    let gone: Vec<Uuid> = current
        .iter()
        .filter(|c| !observed.contains(&(c.pod_uid.clone(), c.container_name.clone())))
        .map(|c| c.id)
        .collect();
    if !gone.is_empty() {
        report.removed += gone.len();
        containers::Entity::update_many()
            .col_expr(containers::Column::RemovedAt, Expr::value(now))
            .col_expr(containers::Column::Ready, Expr::value(false))
            .col_expr(containers::Column::UpdatedAt, Expr::value(now))
            .filter(containers::Column::Id.is_in(gone))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Columns an upsert rewrites (everything the cluster says).
const UPSERTED: [containers::Column; 18] = [
    containers::Column::DeploymentId,
    containers::Column::ServiceId,
    containers::Column::Namespace,
    containers::Column::PodName,
    containers::Column::Image,
    containers::Column::NodeName,
    containers::Column::Status,
    containers::Column::Ready,
    containers::Column::RestartCount,
    containers::Column::Reason,
    containers::Column::Message,
    containers::Column::LastTerminationReason,
    containers::Column::LastExitCode,
    containers::Column::LastTerminatedAt,
    containers::Column::Ports,
    containers::Column::StartedAt,
    containers::Column::RemovedAt,
    containers::Column::UpdatedAt,
];

/// Deployment ids named by pod labels that are real deployments of the
/// pod's service (a label is not trusted as a foreign key).
async fn deployment_ids(
    db: &DatabaseConnection,
    observations: &[(services::Model, ServiceObservation)],
) -> Result<BTreeSet<(Uuid, Uuid)>> {
    let named: BTreeSet<Uuid> = observations
        .iter()
        .flat_map(|(_, o)| o.containers.iter())
        .filter_map(|c| Uuid::parse_str(c.deployment_id.as_deref()?).ok())
        .collect();
    if named.is_empty() {
        return Ok(BTreeSet::new());
    }
    Ok(deployments::Entity::find()
        .select_only()
        .column(deployments::Column::Id)
        .column(deployments::Column::ServiceId)
        .filter(deployments::Column::Id.is_in(named))
        .into_tuple::<(Uuid, Uuid)>()
        .all(db)
        .await?
        .into_iter()
        .collect())
}

fn container_row(
    service_id: Uuid,
    c: &ContainerObservation,
    valid_deployments: &BTreeSet<(Uuid, Uuid)>,
    now: DateTime<Utc>,
) -> containers::ActiveModel {
    let deployment_id = c
        .deployment_id
        .as_deref()
        .and_then(|d| Uuid::parse_str(d).ok())
        .filter(|d| valid_deployments.contains(&(*d, service_id)));
    containers::ActiveModel {
        id: Set(Uuid::new_v4()),
        deployment_id: Set(deployment_id),
        service_id: Set(service_id),
        node_id: Set(None),
        namespace: Set(c.namespace.clone()),
        pod_name: Set(c.pod_name.clone()),
        pod_uid: Set(c.pod_uid.clone()),
        container_name: Set(c.container_name.clone()),
        image: Set(c.image.clone()),
        node_name: Set(c.node_name.clone()),
        status: Set(match c.state {
            ferry_k8s::ContainerState::Waiting => ContainerStatus::Waiting,
            ferry_k8s::ContainerState::Running => ContainerStatus::Running,
            ferry_k8s::ContainerState::Terminated => ContainerStatus::Terminated,
            ferry_k8s::ContainerState::Unknown => ContainerStatus::Unknown,
        }),
        ready: Set(c.ready),
        restart_count: Set(c.restart_count),
        reason: Set(c.reason.clone()),
        message: Set(c.message.clone()),
        last_termination_reason: Set(c.last_termination_reason.clone()),
        last_exit_code: Set(c.last_exit_code),
        last_terminated_at: Set(c.last_terminated_at),
        ports: Set(c.ports.clone()),
        labels: Set(serde_json::to_value(&c.labels).unwrap_or_default()),
        started_at: Set(c.started_at),
        removed_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

fn health_state(state: ferry_k8s::HealthState) -> HealthState {
    match state {
        ferry_k8s::HealthState::Running => HealthState::Running,
        ferry_k8s::HealthState::Degraded => HealthState::Degraded,
        ferry_k8s::HealthState::CrashLooping => HealthState::CrashLooping,
        ferry_k8s::HealthState::Pending => HealthState::Pending,
        ferry_k8s::HealthState::Stopped => HealthState::Stopped,
        ferry_k8s::HealthState::Failed => HealthState::Failed,
        ferry_k8s::HealthState::Missing => HealthState::Missing,
    }
}

/// Inserts or updates the service's health row; `true` when it changed.
async fn write_health<C: ferry_db::sea_orm::ConnectionTrait>(
    db: &C,
    service: &services::Model,
    obs: &ServiceObservation,
    old: Option<&service_health::Model>,
    arrived: DateTime<Utc>,
    lag_ms: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let state = health_state(obs.state);
    let same = old.is_some_and(|h| {
        h.state == state
            && h.desired_replicas == obs.desired_replicas
            && h.ready_replicas == obs.ready_replicas
            && h.restarts == obs.restarts
            && h.reason == obs.reason
            && h.message == obs.message
    });
    if same {
        return Ok(false);
    }
    let state_since = match old {
        Some(h) if h.state == state => h.state_since,
        _ => now,
    };
    let row = service_health::ActiveModel {
        id: Set(old.map_or_else(Uuid::new_v4, |h| h.id)),
        service_id: Set(service.id),
        state: Set(state),
        desired_replicas: Set(obs.desired_replicas.max(0)),
        ready_replicas: Set(obs.ready_replicas.max(0)),
        restarts: Set(obs.restarts.max(0)),
        reason: Set(obs.reason.clone()),
        message: Set(obs.message.clone()),
        observed_at: Set(arrived),
        lag_ms: Set(lag_ms),
        state_since: Set(state_since),
        created_at: Set(old.map_or(now, |h| h.created_at)),
        updated_at: Set(now),
    };
    service_health::Entity::insert(row)
        .on_conflict(
            OnConflict::column(service_health::Column::ServiceId)
                .update_columns([
                    service_health::Column::State,
                    service_health::Column::DesiredReplicas,
                    service_health::Column::ReadyReplicas,
                    service_health::Column::Restarts,
                    service_health::Column::Reason,
                    service_health::Column::Message,
                    service_health::Column::ObservedAt,
                    service_health::Column::LagMs,
                    service_health::Column::StateSince,
                    service_health::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(true)
}

/// Sets a settled `services.status` to what the cluster shows; leaves a
/// deploy in progress (and `pending` observations) alone.
async fn follow_status<C: ferry_db::sea_orm::ConnectionTrait>(
    db: &C,
    service: &services::Model,
    obs: &ServiceObservation,
    now: DateTime<Utc>,
) -> Result<()> {
    use ferry_k8s::HealthState as H;
    let status = match obs.state {
        H::Running | H::Degraded => ServiceStatus::Running,
        H::Stopped | H::Missing => ServiceStatus::Stopped,
        H::CrashLooping | H::Failed => ServiceStatus::Failed,
        H::Pending => return Ok(()),
    };
    services::Entity::update_many()
        .col_expr(services::Column::Status, Expr::value(status))
        .col_expr(services::Column::UpdatedAt, Expr::value(now))
        .filter(services::Column::Id.eq(service.id))
        .filter(services::Column::Status.is_in(SETTLED))
        .filter(services::Column::Status.ne(status))
        .exec(db)
        .await?;
    Ok(())
}
