//! `ferry.v1.DeploymentService`: deploy, plan, roll back, scale, restart,
//! stop, history and a live status stream.

use std::pin::Pin;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::Utc;
use ferry_db::entities::enums::{
    AuditResourceType, DeploymentStatus, ServiceKind, ServiceStatus, TriggerType,
};
use ferry_db::entities::{deployment_logs, deployments, services};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, IntoActiveModel as _, QueryFilter as _, QueryOrder as _,
};
use ferry_k8s::WorkloadKindRef as WorkloadRef;
use ferry_proto::ferry::v1 as pb;
use pb::deployment_service_server::DeploymentService;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::deploy::recorded_yaml;
use super::services::service_to_pb;
use super::{Scope, Workloads, validate};
use crate::audit::Entry;
use crate::authz::{Action, Caller};
use crate::paging::{Key, Keyset, Kind, desc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// The `DeploymentService` implementation.
#[derive(Debug, Clone)]
pub struct DeploymentApi(pub Workloads);

pub(crate) fn status_to_pb(s: DeploymentStatus) -> pb::DeploymentStatus {
    match s {
        DeploymentStatus::Pending => pb::DeploymentStatus::Pending,
        DeploymentStatus::Cloning | DeploymentStatus::Building => pb::DeploymentStatus::Building,
        DeploymentStatus::Deploying => pb::DeploymentStatus::Deploying,
        DeploymentStatus::Running => pb::DeploymentStatus::Running,
        DeploymentStatus::Success | DeploymentStatus::RolledBack => {
            pb::DeploymentStatus::Superseded
        }
        DeploymentStatus::Failed => pb::DeploymentStatus::Failed,
        DeploymentStatus::Cancelled => pb::DeploymentStatus::Cancelled,
        DeploymentStatus::Planned => pb::DeploymentStatus::Planned,
    }
}

fn finished(s: DeploymentStatus) -> bool {
    !matches!(
        s,
        DeploymentStatus::Pending
            | DeploymentStatus::Cloning
            | DeploymentStatus::Building
            | DeploymentStatus::Deploying
    )
}

pub(crate) fn trigger_to_pb(t: TriggerType) -> pb::DeploymentTrigger {
    match t {
        TriggerType::Manual => pb::DeploymentTrigger::Manual,
        TriggerType::Webhook => pb::DeploymentTrigger::Webhook,
        TriggerType::Rollback => pb::DeploymentTrigger::Rollback,
        TriggerType::Api => pb::DeploymentTrigger::Api,
    }
}

pub(crate) fn deployment_to_pb(d: &deployments::Model) -> pb::Deployment {
    pb::Deployment {
        id: d.id.to_string(),
        service_id: d.service_id.map(|i| i.to_string()).unwrap_or_default(),
        status: status_to_pb(d.status).into(),
        trigger: trigger_to_pb(d.trigger_type).into(),
        image: d.image.clone().unwrap_or_default(),
        message: d.error_message.clone().unwrap_or_default(),
        rollback_of_id: d.rollback_of_id.map(|i| i.to_string()).unwrap_or_default(),
        triggered_by: d.triggered_by.map(|i| i.to_string()).unwrap_or_default(),
        manifests_yaml: recorded_yaml(d),
        created_at: Some(ts(d.created_at)),
        started_at: d.started_at.map(ts),
        finished_at: d.finished_at.map(ts),
    }
}

fn workload_ref(service: &services::Model) -> WorkloadRef {
    match service.kind {
        ServiceKind::Application => WorkloadRef::Deployment,
        ServiceKind::Database => WorkloadRef::StatefulSet,
    }
}

/// ListDeployments' order: newest first. Ids are UUIDv7 (time-ordered).
static DEPLOYMENTS: Keyset<deployments::Column> = Keyset {
    list: "deployments",
    columns: &[desc(deployments::Column::Id, Kind::Id)],
};

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::DeploymentEvent, Status>> + Send>>;

impl DeploymentApi {
    async fn deploy(&self, request: Request<pb::DeployRequest>) -> Result<pb::Deployment> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("serviceId", &request.get_ref().service_id)?;
        let db = &self.0.identity.db;
        let (scope, service, project) = caller.service(db, Action::ServiceDeploy, id).await?;
        let d = self
            .0
            .deployer
            .start(&scope, &service, &project, TriggerType::Manual, None)
            .await?;
        Ok(deployment_to_pb(&d))
    }

    async fn plan(
        &self,
        request: Request<pb::PlanDeploymentRequest>,
    ) -> Result<pb::PlanDeploymentResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("serviceId", &request.get_ref().service_id)?;
        let db = &self.0.identity.db;
        let (scope, service, project) = caller.service(db, Action::ServiceRead, id).await?;
        // Viewers see the plan with secret values masked.
        let reveal = scope
            .actor()
            .can(
                db,
                Action::ServiceReadSecrets,
                crate::authz::Resource::Service {
                    organization_id: scope.organization_id(),
                    project_id: project.id,
                    id,
                },
            )
            .await
            .is_ok();
        let spec = self
            .0
            .deployer
            .current_spec(db, &service, &project, Uuid::nil())
            .await?;
        let (yaml, redacted) = self.0.deployer.plan(&spec, reveal)?;
        let last = deployments::Entity::find()
            .filter(deployments::Column::ServiceId.eq(id))
            .order_by_desc(deployments::Column::CreatedAt)
            .one(db)
            .await?;
        // The diff compares redacted renders, with the deployment id that
        // differs on every render normalised away.
        let diff = match last {
            Some(last) => {
                let old =
                    recorded_yaml(&last).replace(&last.id.to_string(), &Uuid::nil().to_string());
                ferry_k8s::render::diff(&old, &redacted)
            }
            None => String::new(),
        };
        Ok(pb::PlanDeploymentResponse {
            yaml,
            diff,
            cluster_configured: self.0.deployer.cluster.is_some(),
            secrets_revealed: reveal,
        })
    }

    async fn rollback(&self, request: Request<pb::RollbackRequest>) -> Result<pb::Deployment> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("deploymentId", &request.get_ref().deployment_id)?;
        let db = &self.0.identity.db;
        let target = deployments::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| Error::NotFound("deployment not found".into()))?;
        let service_id = target
            .service_id
            .ok_or_else(|| Error::NotFound("deployment not found".into()))?;
        let (scope, service, project) = caller
            .service(db, Action::ServiceDeploy, service_id)
            .await?;
        if !matches!(
            target.status,
            DeploymentStatus::Running
                | DeploymentStatus::Success
                | DeploymentStatus::RolledBack
                | DeploymentStatus::Planned
        ) {
            return Err(Error::FailedPrecondition(
                "only a deployment that ran (or was planned) can be rolled back to".into(),
            ));
        }
        let d = self
            .0
            .deployer
            .start(
                &scope,
                &service,
                &project,
                TriggerType::Rollback,
                Some(&target),
            )
            .await?;
        Ok(deployment_to_pb(&d))
    }

    /// Sets the replica count in the database, then on the cluster (scale
    /// subresource) when the service has been deployed there.
    async fn set_replicas(
        &self,
        scope: &Scope,
        service: services::Model,
        project: &ferry_db::entities::projects::Model,
        replicas: i32,
        action: &'static str,
    ) -> Result<pb::Service> {
        let db = &self.0.identity.db;
        if service.kind == ServiceKind::Database && replicas > 1 {
            return Err(Error::InvalidArgument(
                "replicas: a database runs 0 or 1 replica".into(),
            ));
        }
        let deployed = deployments::Entity::find()
            .filter(deployments::Column::ServiceId.eq(service.id))
            .filter(deployments::Column::Status.eq(DeploymentStatus::Running))
            .one(db)
            .await?
            .is_some();
        if let (Some(cluster), true) = (&self.0.deployer.cluster, deployed) {
            let owner = ferry_k8s::Owner::service(&project.namespace, project.id, service.id);
            cluster
                .scale(&owner, &service.name, workload_ref(&service), replicas)
                .await?;
        }
        let txn = crate::db::begin_write(db).await?;
        let previous = service.replicas;
        let mut row = service.into_active_model();
        row.replicas = Set(replicas);
        if deployed {
            row.status = Set(if replicas == 0 {
                ServiceStatus::Stopped
            } else {
                ServiceStatus::Running
            });
        }
        row.updated_at = Set(Utc::now());
        let service = row.update(&txn).await?;
        scope
            .audit(&txn, Entry::new(action, AuditResourceType::Service, service.id).details(json!({ "replicas": replicas, "previous": previous, "applied": deployed && self.0.deployer.cluster.is_some() })))
            .await?;
        txn.commit().await?;
        service_to_pb(db, &service).await
    }

    async fn scale(&self, request: Request<pb::ScaleRequest>) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (scope, service, project) = caller.service(db, Action::ServiceDeploy, id).await?;
        let replicas = validate::replicas("replicas", req.replicas)?;
        self.set_replicas(&scope, service, &project, replicas, "service.scale")
            .await
    }

    async fn stop(&self, request: Request<pb::StopRequest>) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("serviceId", &request.get_ref().service_id)?;
        let db = &self.0.identity.db;
        let (scope, service, project) = caller.service(db, Action::ServiceDeploy, id).await?;
        self.set_replicas(&scope, service, &project, 0, "service.stop")
            .await
    }

    async fn restart(&self, request: Request<pb::RestartRequest>) -> Result<pb::Service> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("serviceId", &request.get_ref().service_id)?;
        let db = &self.0.identity.db;
        let (scope, service, project) = caller.service(db, Action::ServiceDeploy, id).await?;
        let Some(cluster) = &self.0.deployer.cluster else {
            return Err(Error::FailedPrecondition(
                "no Kubernetes cluster is configured: nothing runs to restart".into(),
            ));
        };
        let deployed = deployments::Entity::find()
            .filter(deployments::Column::ServiceId.eq(id))
            .filter(deployments::Column::Status.eq(DeploymentStatus::Running))
            .one(db)
            .await?
            .is_some();
        if !deployed {
            return Err(Error::FailedPrecondition(
                "the service has no running deployment".into(),
            ));
        }
        let owner = ferry_k8s::Owner::service(&project.namespace, project.id, service.id);
        cluster
            .restart(&owner, &service.name, workload_ref(&service))
            .await?;
        let txn = crate::db::begin_write(db).await?;
        scope
            .audit(
                &txn,
                Entry::new("service.restart", AuditResourceType::Service, id),
            )
            .await?;
        txn.commit().await?;
        service_to_pb(db, &service).await
    }

    async fn list(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<pb::ListDeploymentsResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let page = DEPLOYMENTS.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.service(db, Action::ServiceRead, id).await?;
        let query = deployments::Entity::find().filter(deployments::Column::ServiceId.eq(id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) = page.finish(rows, |d| vec![Key::Id(d.id)]);
        Ok(pb::ListDeploymentsResponse {
            deployments: rows.iter().map(deployment_to_pb).collect(),
            next_page_token,
        })
    }

    /// A deployment the caller may read.
    async fn readable(&self, caller: &Caller, id: Uuid) -> Result<deployments::Model> {
        let db = &self.0.identity.db;
        let d = deployments::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| Error::NotFound("deployment not found".into()))?;
        let service = d
            .service_id
            .ok_or_else(|| Error::NotFound("deployment not found".into()))?;
        caller
            .service(db, Action::ServiceRead, service)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound("deployment not found".into()),
                other => other,
            })?;
        Ok(d)
    }

    async fn get(&self, request: Request<pb::GetDeploymentRequest>) -> Result<pb::Deployment> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        Ok(deployment_to_pb(&self.readable(&caller, id).await?))
    }

    async fn watch(&self, request: Request<pb::WatchDeploymentRequest>) -> Result<EventStream> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let first = self.readable(&caller, id).await?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(follow(self.0.identity.db.clone(), first, tx));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// How often a watch re-reads the deployment and its log.
const WATCH_POLL: Duration = Duration::from_millis(200);

/// Live WatchDeployment tasks in this process, a gauge like a metric.
static ACTIVE_WATCHES: LazyLock<watch::Sender<usize>> = LazyLock::new(|| watch::Sender::new(0));

/// The number of WatchDeployment server tasks still running in this
/// process; wait on it to see a disconnected client's task end.
pub fn active_watches() -> watch::Receiver<usize> {
    ACTIVE_WATCHES.subscribe()
}

/// Counts one watch task for as long as it lives, however it ends.
struct WatchGauge;

impl WatchGauge {
    fn enter() -> Self {
        ACTIVE_WATCHES.send_modify(|n| *n += 1);
        WatchGauge
    }
}

impl Drop for WatchGauge {
    fn drop(&mut self) {
        ACTIVE_WATCHES.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The server side of one WatchDeployment stream. A client that goes away
/// drops the receiver; `tx.closed()` then cancels the polling wherever it
/// waits (a query, the pause between polls), not only at the next send,
/// which a deployment stuck without changes might never reach.
async fn follow(
    db: DatabaseConnection,
    first: deployments::Model,
    tx: mpsc::Sender<Result<pb::DeploymentEvent, Status>>,
) {
    let _live = WatchGauge::enter();
    let failed = tokio::select! {
        () = tx.closed() => return,
        result = poll(&db, first, &tx) => result,
    };
    if let Err(err) = failed {
        let _ = tx.send(Err(Status::from(err))).await;
    }
}

/// Sends status changes and new log lines (polling the rows, which works
/// across api replicas and restarts) until the deployment finishes.
async fn poll(
    db: &DatabaseConnection,
    mut current: deployments::Model,
    tx: &mpsc::Sender<Result<pb::DeploymentEvent, Status>>,
) -> Result<()> {
    let id = current.id;
    let mut last_log: Option<Uuid> = None;
    let mut last_status = None;
    loop {
        let logs = logs_after(db, id, last_log).await?;
        if let Some(l) = logs.last() {
            last_log = Some(l.id);
        }
        if !logs.is_empty() || last_status != Some(current.status) {
            last_status = Some(current.status);
            if tx.send(Ok(event(&current, &logs))).await.is_err() {
                return Ok(());
            }
        }
        if finished(current.status) && logs.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(WATCH_POLL).await;
        match deployments::Entity::find_by_id(id).one(db).await? {
            Some(d) => current = d,
            None => return Ok(()),
        }
    }
}

/// A deployment's log lines after `after` (all of them for `None`).
async fn logs_after(
    db: &DatabaseConnection,
    id: Uuid,
    after: Option<Uuid>,
) -> Result<Vec<deployment_logs::Model>> {
    let mut logs = deployment_logs::Entity::find()
        .filter(deployment_logs::Column::DeploymentId.eq(id))
        .order_by_asc(deployment_logs::Column::Id);
    if let Some(after) = after {
        logs = logs.filter(deployment_logs::Column::Id.gt(after));
    }
    Ok(logs.all(db).await?)
}

fn event(d: &deployments::Model, logs: &[deployment_logs::Model]) -> pb::DeploymentEvent {
    pb::DeploymentEvent {
        deployment: Some(deployment_to_pb(d)),
        logs: logs
            .iter()
            .map(|l| pb::DeploymentLogLine {
                timestamp: Some(ts(l.timestamp)),
                level: format!("{:?}", l.level).to_lowercase(),
                message: l.message.clone(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl DeploymentService for DeploymentApi {
    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        Ok(Response::new(DeploymentApi::deploy(self, request).await?))
    }
    async fn plan_deployment(
        &self,
        request: Request<pb::PlanDeploymentRequest>,
    ) -> Result<Response<pb::PlanDeploymentResponse>, Status> {
        Ok(Response::new(self.plan(request).await?))
    }
    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        Ok(Response::new(DeploymentApi::rollback(self, request).await?))
    }
    async fn scale(
        &self,
        request: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(DeploymentApi::scale(self, request).await?))
    }
    async fn restart(
        &self,
        request: Request<pb::RestartRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(DeploymentApi::restart(self, request).await?))
    }
    async fn stop(
        &self,
        request: Request<pb::StopRequest>,
    ) -> Result<Response<pb::Service>, Status> {
        Ok(Response::new(DeploymentApi::stop(self, request).await?))
    }
    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }
    async fn get_deployment(
        &self,
        request: Request<pb::GetDeploymentRequest>,
    ) -> Result<Response<pb::Deployment>, Status> {
        Ok(Response::new(self.get(request).await?))
    }

    type WatchDeploymentStream = EventStream;

    async fn watch_deployment(
        &self,
        request: Request<pb::WatchDeploymentRequest>,
    ) -> Result<Response<Self::WatchDeploymentStream>, Status> {
        Ok(Response::new(self.watch(request).await?))
    }
}
