//! Deployments: record, apply, watch, and resume after a restart.
//!
//! [`Deployer::start`] renders the service, then records the deployment
//! (with the redacted manifests, the spec and the encrypted environment) and
//! its audit row in one transaction. Only after the commit does a background
//! task apply the objects and watch the rollout; every state change it makes
//! is its own short transaction. If the api stops mid-rollout, the row stays
//! `pending`/`deploying` and [`Deployer::resume`] picks it up on the next
//! start (apply is idempotent). Without a cluster the deployment is recorded
//! as `planned` and nothing runs in the background.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_db::crypto::Keyring;
use ferry_db::entities::enums::{
    AuditResourceType, DeploymentStatus, LogLevel, ServiceStatus, StackStatus, TriggerType,
};
use ferry_db::entities::{deployment_logs, deployments, projects, services, stacks};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DatabaseConnection,
    EntityTrait as _, IntoActiveModel as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use ferry_k8s::cluster::{Cluster, RolloutEvent, RolloutOutcome};
use ferry_k8s::render::{Redact, Rendered, render};
use ferry_k8s::spec::{EnvVar, ProjectPolicy, SecretValue, WorkloadSpec};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Scope;
use crate::audit::Entry;
use crate::lease::Lease;
use crate::{Error, Result};

/// Shown on `planned` deployments.
pub const PLANNED_MESSAGE: &str =
    "no Kubernetes cluster is configured: the manifests were rendered and recorded, not applied";

/// Deployment settings.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// How long a rollout may take before it is marked failed.
    pub rollout_timeout: Duration,
    /// Namespace of ferry-proxy (admitted by every project's NetworkPolicy).
    pub proxy_namespace: String,
    /// The installation's default project policy (quota, egress); an
    /// organization's `settings.limits` overrides the quota.
    pub policy: ProjectPolicy,
    /// When it fires, background rollouts stop where they are; the rows stay
    /// `pending`/`deploying`, their leases are released, and the next start
    /// (or another replica) resumes them.
    pub stop: ferry_common::Shutdown,
    /// This api process, as a lease owner.
    pub replica_id: String,
    /// How long a rollout's lease lasts without renewal (renewed every
    /// third of it). Another replica takes over a rollout whose lease ran
    /// out: its driver died.
    pub lease_ttl: Duration,
    /// The background rollouts of this process (shared by every clone).
    pub rollouts: Rollouts,
    /// The base domain and the resolver domain challenges are checked with.
    pub domains: crate::domains::DomainConfig,
    /// Whether notification targets may be private addresses.
    pub notifications: crate::notifications::NotificationConfig,
}

/// Counts this process's background rollout tasks, so a stopping api can
/// wait until each has released its lease.
#[derive(Debug, Clone, Default)]
pub struct Rollouts(Arc<(std::sync::atomic::AtomicUsize, tokio::sync::Notify)>);

/// Held by a running rollout task; dropping it counts the task out.
struct RolloutGuard(Rollouts);

impl Drop for RolloutGuard {
    fn drop(&mut self) {
        let (count, done) = &*(self.0).0;
        count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        done.notify_waiters();
    }
}

impl Rollouts {
    fn enter(&self) -> RolloutGuard {
        self.0.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        RolloutGuard(self.clone())
    }

    /// Waits (at most `grace`) until no rollout task runs; true if none does.
    pub async fn drained(&self, grace: Duration) -> bool {
        let (count, done) = &*self.0;
        tokio::time::timeout(grace, async {
            loop {
                let notified = done.notified();
                if count.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            rollout_timeout: Duration::from_secs(300),
            proxy_namespace: "ferry-system".into(),
            policy: ProjectPolicy::default(),
            stop: ferry_common::Shutdown::new(),
            replica_id: Uuid::now_v7().to_string(),
            lease_ttl: Duration::from_secs(30),
            rollouts: Rollouts::default(),
            domains: crate::domains::DomainConfig::default(),
            notifications: crate::notifications::NotificationConfig::default(),
        }
    }
}

/// Applies deployments to the cluster, if there is one.
#[derive(Clone)]
pub struct Deployer {
    pub db: DatabaseConnection,
    pub keyring: Arc<Keyring>,
    pub cluster: Option<Arc<Cluster>>,
    pub config: DeployConfig,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer")
            .field("cluster", &self.cluster.is_some())
            .field("config", &self.config)
            .finish()
    }
}

/// What the deployment row records in `k8s_artifacts`.
fn artifacts(spec: &WorkloadSpec, yaml: &str) -> Result<Value> {
    let mut stored = spec.clone();
    for var in &mut stored.env {
        var.value = SecretValue(String::new());
    }
    if let Some(pull) = &mut stored.image_pull {
        pull.password = SecretValue(String::new());
    }
    Ok(json!({
        "spec": serde_json::to_value(&stored).map_err(|e| Error::Internal(e.to_string()))?,
        "yaml": yaml,
    }))
}

fn render_checked(spec: &WorkloadSpec) -> Result<Rendered> {
    Ok(render(spec)?)
}

/// The redacted YAML recorded on a deployment.
pub fn recorded_yaml(d: &deployments::Model) -> String {
    d.k8s_artifacts
        .get("yaml")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl Deployer {
    pub fn new(
        db: DatabaseConnection,
        keyring: Arc<Keyring>,
        cluster: Option<Arc<Cluster>>,
        config: DeployConfig,
    ) -> Self {
        Self {
            db,
            keyring,
            cluster,
            config,
        }
    }

    /// The spec a deployment of `service` would apply now.
    pub async fn current_spec<C: ConnectionTrait>(
        &self,
        db: &C,
        service: &services::Model,
        project: &projects::Model,
        deployment_id: Uuid,
    ) -> Result<WorkloadSpec> {
        super::spec::workload_spec(
            db,
            &self.keyring,
            service,
            project,
            deployment_id,
            &self.config,
        )
        .await
    }

    /// Renders `spec` once as YAML: `(shown, redacted)`, where `shown`
    /// reveals secret values only when `reveal`.
    pub fn plan(&self, spec: &WorkloadSpec, reveal: bool) -> Result<(String, String)> {
        let rendered = render_checked(spec)?;
        let yaml = |redact| {
            rendered
                .to_yaml(redact)
                .map_err(|e| Error::Internal(e.to_string()))
        };
        let redacted = yaml(Redact::Secrets)?;
        let shown = if reveal {
            yaml(Redact::None)?
        } else {
            redacted.clone()
        };
        Ok((shown, redacted))
    }

    /// Records a deployment of `service` and starts applying it.
    /// `from`: an earlier deployment whose recorded spec and environment are
    /// redeployed (a rollback).
    pub async fn start(
        &self,
        scope: &Scope,
        service: &services::Model,
        project: &projects::Model,
        trigger: TriggerType,
        from: Option<&deployments::Model>,
    ) -> Result<deployments::Model> {
        let id = Uuid::now_v7();
        let txn = crate::db::begin_write(&self.db).await?;
        let busy = deployments::Entity::find()
            .filter(deployments::Column::ServiceId.eq(service.id))
            .filter(
                deployments::Column::Status
                    .is_in([DeploymentStatus::Pending, DeploymentStatus::Deploying]),
            )
            .one(&txn)
            .await?;
        if let Some(busy) = busy {
            return Err(Error::FailedPrecondition(format!(
                "deployment {} of this service is still in progress",
                busy.id
            )));
        }
        let spec = match from {
            Some(old) => self.recorded_spec(&txn, old, id).await?,
            None => self.current_spec(&txn, service, project, id).await?,
        };
        let rendered = render_checked(&spec)?;
        let yaml = rendered
            .to_yaml(Redact::Secrets)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let env_json =
            serde_json::to_string(&spec.env).map_err(|e| Error::Internal(e.to_string()))?;
        let now = Utc::now();
        let planned = self.cluster.is_none();
        let row = deployments::ActiveModel {
            id: Set(id),
            service_id: Set(Some(service.id)),
            stack_id: Set(None),
            triggered_by: Set(Some(scope.actor().user_id)),
            trigger_type: Set(trigger),
            status: Set(if planned {
                DeploymentStatus::Planned
            } else {
                DeploymentStatus::Pending
            }),
            commit_sha: Set(None),
            commit_message: Set(None),
            commit_author: Set(None),
            branch: Set(None),
            image: Set(Some(spec.image.clone())),
            rollback_of_id: Set(from.map(|d| d.id)),
            error_message: Set(planned.then(|| PLANNED_MESSAGE.to_owned())),
            k8s_artifacts: Set(artifacts(&spec, &yaml)?),
            env_snapshot: Set(Some(self.keyring.encrypt(
                "deployments",
                "env_snapshot",
                id,
                &env_json,
            )?)),
            metadata: Set(json!({})),
            started_at: Set(None),
            finished_at: Set(planned.then_some(now)),
            created_at: Set(now),
            lease_owner: Set((!planned).then(|| self.config.replica_id.clone())),
            lease_expires_at: Set((!planned).then(|| self.lease_until())),
        }
        .insert(&txn)
        .await
        // `idx_deployments_one_in_progress`: a concurrent Deploy won the race.
        .map_err(|e| {
            if crate::db::is_unique_violation(&e) {
                Error::FailedPrecondition(
                    "another deployment of this service is still in progress".into(),
                )
            } else {
                e.into()
            }
        })?;
        scope
            .audit(
                &txn,
                Entry::new(
                    if from.is_some() {
                        "deployment.rollback"
                    } else {
                        "deployment.create"
                    },
                    AuditResourceType::Deployment,
                    id,
                )
                .details(json!({
                    "serviceId": service.id.to_string(),
                    "image": spec.image,
                    "trigger": format!("{trigger:?}").to_lowercase(),
                    "rollbackOf": from.map(|d| d.id.to_string()),
                    "planned": planned,
                })),
            )
            .await?;
        log(
            &txn,
            id,
            LogLevel::Info,
            if planned {
                PLANNED_MESSAGE
            } else {
                "deployment recorded"
            },
        )
        .await?;
        txn.commit().await?;
        if let Some(cluster) = &self.cluster {
            self.spawn(cluster.clone(), id, rendered);
        }
        Ok(row)
    }

    /// Deploys the image a build pushed, as the build's own deployment
    /// (`building` until now), exactly as a manual deploy of the service
    /// with that image. `Ok(false)`: another deployment of the service is
    /// in progress; try again once it ends.
    pub async fn deploy_built(&self, deployment_id: Uuid, image: &str) -> Result<bool> {
        let txn = crate::db::begin_write(&self.db).await?;
        let d = deployments::Entity::find_by_id(deployment_id)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("the build's deployment is gone".into()))?;
        if d.status != DeploymentStatus::Building {
            return Err(Error::FailedPrecondition(format!(
                "the build's deployment is {:?}, not building",
                d.status
            )));
        }
        let service = match d.service_id {
            Some(id) => services::Entity::find_by_id(id).one(&txn).await?,
            None => None,
        }
        .ok_or_else(|| Error::FailedPrecondition("the build's service is gone".into()))?;
        let project = projects::Entity::find_by_id(service.project_id)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::FailedPrecondition("the build's project is gone".into()))?;
        let busy = deployments::Entity::find()
            .filter(deployments::Column::ServiceId.eq(service.id))
            .filter(
                deployments::Column::Status
                    .is_in([DeploymentStatus::Pending, DeploymentStatus::Deploying]),
            )
            .one(&txn)
            .await?;
        if busy.is_some() {
            return Ok(false);
        }
        let mut spec = self
            .current_spec(&txn, &service, &project, deployment_id)
            .await?;
        spec.image = image.to_owned();
        let rendered = render_checked(&spec)?;
        let yaml = rendered
            .to_yaml(Redact::Secrets)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let env_json =
            serde_json::to_string(&spec.env).map_err(|e| Error::Internal(e.to_string()))?;
        let now = Utc::now();
        let planned = self.cluster.is_none();
        let mut row = d.clone().into_active_model();
        row.status = Set(if planned {
            DeploymentStatus::Planned
        } else {
            DeploymentStatus::Pending
        });
        row.image = Set(Some(spec.image.clone()));
        row.error_message = Set(planned.then(|| PLANNED_MESSAGE.to_owned()));
        row.k8s_artifacts = Set(artifacts(&spec, &yaml)?);
        row.env_snapshot = Set(Some(self.keyring.encrypt(
            "deployments",
            "env_snapshot",
            deployment_id,
            &env_json,
        )?));
        row.finished_at = Set(planned.then_some(now));
        row.lease_owner = Set((!planned).then(|| self.config.replica_id.clone()));
        row.lease_expires_at = Set((!planned).then(|| self.lease_until()));
        let row = row.update(&txn).await.map_err(|e| {
            if crate::db::is_unique_violation(&e) {
                Error::FailedPrecondition("another deployment of this service won".into())
            } else {
                e.into()
            }
        })?;
        let meta = crate::request::RequestMeta::default();
        crate::audit::Auditor::system(&meta, Some(project.organization_id))
            .record(
                &txn,
                Entry::new(
                    "deployment.create",
                    AuditResourceType::Deployment,
                    deployment_id,
                )
                .details(json!({
                    "serviceId": service.id.to_string(),
                    "image": spec.image,
                    "trigger": format!("{:?}", row.trigger_type).to_lowercase(),
                    "build": true,
                    "planned": planned,
                })),
            )
            .await?;
        log(
            &txn,
            deployment_id,
            LogLevel::Info,
            &format!("deploying the built image {}", spec.image),
        )
        .await?;
        txn.commit().await?;
        if let Some(cluster) = &self.cluster {
            self.spawn(cluster.clone(), deployment_id, rendered);
        }
        Ok(true)
    }

    /// A recorded deployment's spec with its environment, re-targeted at
    /// deployment `id` and at what must be current whatever was recorded:
    /// the project's namespace and policy, and the service's registry
    /// credentials (read again, so a rollback, revert or resume of a
    /// private image still pulls, with a rotated password if it changed).
    pub async fn recorded_spec<C: ConnectionTrait>(
        &self,
        db: &C,
        d: &deployments::Model,
        id: Uuid,
    ) -> Result<WorkloadSpec> {
        let spec =
            d.k8s_artifacts.get("spec").cloned().ok_or_else(|| {
                Error::FailedPrecondition("the deployment recorded no spec".into())
            })?;
        let mut spec: WorkloadSpec =
            serde_json::from_value(spec).map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(enc) = &d.env_snapshot {
            let json = self
                .keyring
                .decrypt("deployments", "env_snapshot", d.id, enc)?;
            spec.env = serde_json::from_str::<Vec<EnvVar>>(json.expose())
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        let service = match d.service_id {
            Some(sid) => services::Entity::find_by_id(sid).one(db).await?,
            None => None,
        }
        .ok_or_else(|| Error::FailedPrecondition("the deployment's service is gone".into()))?;
        let project = projects::Entity::find_by_id(service.project_id)
            .one(db)
            .await?
            .ok_or_else(|| Error::FailedPrecondition("the deployment's project is gone".into()))?;
        spec.namespace = project.namespace.clone();
        spec.proxy_namespace = self.config.proxy_namespace.clone();
        spec.policy =
            super::spec::project_policy(db, &self.config.policy, project.organization_id).await?;
        spec.image_pull = match service.registry_integration_id {
            Some(reg) => super::spec::registry_auth(db, &self.keyring, reg).await?,
            None => None,
        };
        spec.deployment_id = id;
        Ok(spec)
    }

    /// This replica's rollout leases.
    fn lease(&self) -> Lease<'_> {
        Lease::new(&self.config.replica_id, self.config.lease_ttl)
    }

    fn lease_until(&self) -> chrono::DateTime<Utc> {
        self.lease().until()
    }

    /// Takes (or renews) the lease of in-progress deployment `id` when it is
    /// free, expired or already ours; true when this replica now holds it.
    async fn claim(&self, id: Uuid) -> Result<bool> {
        self.lease()
            .claim::<deployments::Entity>(&self.db, id)
            .await
    }

    /// Gives the lease up (graceful stop): another replica, or the next
    /// start, may resume at once instead of waiting for it to expire.
    async fn release(&self, id: Uuid) -> Result<()> {
        self.lease()
            .release::<deployments::Entity>(&self.db, id)
            .await
    }

    /// Renews the lease every third of its lifetime; returns when it is lost
    /// (another replica took the rollout over).
    async fn keep_lease(&self, id: Uuid) {
        self.lease()
            .keep::<deployments::Entity>(&self.db, id, "rollout")
            .await;
        tracing::warn!("lost the rollout's lease: another replica drives it now");
    }

    fn spawn(&self, cluster: Arc<Cluster>, id: Uuid, rendered: Rendered) {
        let this = self.clone();
        let span = tracing::info_span!("rollout", deployment = %id);
        let stop = self.config.stop.wait();
        let guard = self.config.rollouts.enter();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _guard = guard;
                let result = tokio::select! {
                    r = this.run(&cluster, id, &rendered) => r,
                    () = this.keep_lease(id) => return,
                    () = stop => {
                        tracing::info!("stopping: the lease is released, the next start resumes this rollout");
                        if let Err(err) = this.release(id).await {
                            tracing::warn!(error = %err, "releasing the rollout's lease failed");
                        }
                        return;
                    }
                };
                if let Err(err) = result {
                    tracing::error!(deployment = %id, error = %err, "deployment task failed");
                    let reason = format!("internal error: {err}");
                    if let Err(e) = this
                        .finish(id, DeploymentStatus::Failed, Some(&reason))
                        .await
                    {
                        tracing::error!(deployment = %id, error = %e, "recording the failure failed");
                    }
                }
            },
            span,
        ));
    }

    async fn run(&self, cluster: &Cluster, id: Uuid, rendered: &Rendered) -> Result<()> {
        self.set_status(id, DeploymentStatus::Deploying).await?;
        log(
            &self.db,
            id,
            LogLevel::Info,
            "applying manifests (server-side apply, field manager ferry)",
        )
        .await?;
        let applied = match cluster.apply(rendered).await {
            Ok(a) => a,
            Err(err) => {
                let reason = format!("apply failed: {err}");
                log(&self.db, id, LogLevel::Error, &reason).await?;
                self.finish(id, DeploymentStatus::Failed, Some(&reason))
                    .await?;
                self.revert(cluster, id).await;
                return Ok(());
            }
        };
        log(
            &self.db,
            id,
            LogLevel::Info,
            &format!("applied; waiting for {} to roll out", applied.name),
        )
        .await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RolloutEvent>();
        let db = self.db.clone();
        let logger = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let (level, message) = describe(&event);
                if let Err(err) = log(&db, id, level, &message).await {
                    tracing::warn!(error = %err, "writing a deployment log line failed");
                }
            }
        });
        let outcome = cluster
            .wait_rollout(&applied, id, self.config.rollout_timeout, move |e| {
                let _ = tx.send(e);
            })
            .await;
        let _ = logger.await;
        match outcome {
            Ok(RolloutOutcome::Succeeded) => {
                log(&self.db, id, LogLevel::Info, "rollout complete").await?;
                self.finish(id, DeploymentStatus::Running, None).await?;
            }
            Ok(RolloutOutcome::Failed { reason }) => {
                log(&self.db, id, LogLevel::Error, &reason).await?;
                self.finish(id, DeploymentStatus::Failed, Some(&reason))
                    .await?;
                self.revert(cluster, id).await;
            }
            Ok(RolloutOutcome::TimedOut) => {
                let reason = format!(
                    "rollout did not finish within {} s",
                    self.config.rollout_timeout.as_secs()
                );
                log(&self.db, id, LogLevel::Error, &reason).await?;
                self.finish(id, DeploymentStatus::Failed, Some(&reason))
                    .await?;
                self.revert(cluster, id).await;
            }
            Err(err) => {
                let reason = format!("watching the rollout failed: {err}");
                log(&self.db, id, LogLevel::Error, &reason).await?;
                self.finish(id, DeploymentStatus::Failed, Some(&reason))
                    .await?;
                self.revert(cluster, id).await;
            }
        }
        Ok(())
    }

    /// After a failed rollout, re-applies the deployment that was running,
    /// so the cluster keeps matching what Ferry says is live.
    async fn revert(&self, cluster: &Cluster, failed: Uuid) {
        let result: Result<Option<Uuid>> = async {
            let Some(d) = deployments::Entity::find_by_id(failed)
                .one(&self.db)
                .await?
            else {
                return Ok(None);
            };
            let Some(service) = d.service_id else {
                return Ok(None);
            };
            let Some(live) = deployments::Entity::find()
                .filter(deployments::Column::ServiceId.eq(service))
                .filter(deployments::Column::Status.eq(DeploymentStatus::Running))
                .order_by_desc(deployments::Column::CreatedAt)
                .one(&self.db)
                .await?
            else {
                return Ok(None);
            };
            let spec = self.recorded_spec(&self.db, &live, live.id).await?;
            let rendered = render_checked(&spec)?;
            cluster
                .apply(&rendered)
                .await
                .map_err(|e| Error::Internal(format!("re-applying {}: {e}", live.id)))?;
            Ok(Some(live.id))
        }
        .await;
        match result {
            Ok(Some(live)) => {
                let _ = log(
                    &self.db,
                    failed,
                    LogLevel::Warn,
                    &format!("re-applied the running deployment {live}: the previous version keeps serving"),
                )
                .await;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::error!(deployment = %failed, error = %err, "reverting to the running deployment failed");
                let _ = log(
                    &self.db,
                    failed,
                    LogLevel::Error,
                    "re-applying the previous deployment failed",
                )
                .await;
            }
        }
    }

    async fn set_status(&self, id: Uuid, status: DeploymentStatus) -> Result<()> {
        let Some(d) = deployments::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(());
        };
        let mut d = d.into_active_model();
        d.status = Set(status);
        d.started_at = Set(Some(Utc::now()));
        d.update(&self.db).await?;
        Ok(())
    }

    /// Records the outcome, and the service's status, in one transaction.
    async fn finish(&self, id: Uuid, status: DeploymentStatus, reason: Option<&str>) -> Result<()> {
        let txn = crate::db::begin_write(&self.db).await?;
        let Some(d) = deployments::Entity::find_by_id(id).one(&txn).await? else {
            return Ok(());
        };
        let service_id = d.service_id;
        let finished = d.clone();
        let mut row = d.into_active_model();
        row.status = Set(status);
        row.error_message = Set(reason.map(str::to_owned));
        row.finished_at = Set(Some(Utc::now()));
        row.update(&txn).await?;
        crate::notifications::produce::deployment_finished(&txn, &finished, status, reason).await?;
        if let Some(service_id) = service_id {
            if status == DeploymentStatus::Running {
                // The one running deployment of a service is the latest.
                deployments::Entity::update_many()
                    .col_expr(
                        deployments::Column::Status,
                        ferry_db::sea_orm::sea_query::Expr::value(DeploymentStatus::Success),
                    )
                    .filter(deployments::Column::ServiceId.eq(service_id))
                    .filter(deployments::Column::Status.eq(DeploymentStatus::Running))
                    .filter(deployments::Column::Id.ne(id))
                    .exec(&txn)
                    .await?;
            }
            if let Some(service) = services::Entity::find_by_id(service_id).one(&txn).await? {
                let still_running = deployments::Entity::find()
                    .filter(deployments::Column::ServiceId.eq(service_id))
                    .filter(deployments::Column::Status.eq(DeploymentStatus::Running))
                    .one(&txn)
                    .await?
                    .is_some();
                let new_status = match status {
                    DeploymentStatus::Running if service.replicas == 0 => ServiceStatus::Stopped,
                    DeploymentStatus::Running => ServiceStatus::Running,
                    _ if still_running => ServiceStatus::Running,
                    _ => ServiceStatus::Failed,
                };
                let stack = service.stack_id;
                let mut s = service.into_active_model();
                s.status = Set(new_status);
                s.updated_at = Set(Utc::now());
                s.update(&txn).await?;
                if let Some(stack) = stack {
                    roll_up_stack(&txn, stack).await?;
                }
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// Picks up deployments whose driver is gone (lease expired or
    /// released): on start, and periodically with several replicas. Each one
    /// is claimed first, so exactly one replica resumes it. Returns how many
    /// this replica took.
    pub async fn resume(&self) -> Result<usize> {
        let open = deployments::Entity::find()
            .filter(
                deployments::Column::Status
                    .is_in([DeploymentStatus::Pending, DeploymentStatus::Deploying]),
            )
            .all(&self.db)
            .await?;
        let mut taken = 0;
        for d in open {
            if !self.claim(d.id).await? {
                continue;
            }
            taken += 1;
            let Some(cluster) = self.cluster.clone() else {
                let reason = "the api restarted before this rollout finished, and no cluster is configured now";
                log(&self.db, d.id, LogLevel::Error, reason).await?;
                self.finish(d.id, DeploymentStatus::Failed, Some(reason))
                    .await?;
                continue;
            };
            let rendered = match self
                .recorded_spec(&self.db, &d, d.id)
                .await
                .and_then(|s| render_checked(&s))
            {
                Ok(r) => r,
                Err(err) => {
                    let reason = format!("cannot resume after a restart: {err}");
                    self.finish(d.id, DeploymentStatus::Failed, Some(&reason))
                        .await?;
                    continue;
                }
            };
            log(
                &self.db,
                d.id,
                LogLevel::Warn,
                "the api restarted: resuming this rollout",
            )
            .await?;
            tracing::info!(deployment = %d.id, "resuming an unfinished rollout");
            self.spawn(cluster, d.id, rendered);
        }
        Ok(taken)
    }

    /// Runs [`Deployer::resume`] every lease lifetime until `stop`, so a
    /// rollout whose replica died is taken over by a live one.
    pub fn spawn_resumer(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let stop = self.config.stop.wait();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.config.lease_ttl);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let sweep = async {
                loop {
                    tick.tick().await;
                    match this.resume().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            deployments = n,
                            "took over rollouts whose replica is gone"
                        ),
                        Err(err) => {
                            tracing::warn!(error = %err, "looking for abandoned rollouts failed")
                        }
                    }
                }
            };
            tokio::select! {
                () = sweep => {}
                () = stop => {}
            }
        })
    }
}

fn describe(event: &RolloutEvent) -> (LogLevel, String) {
    match event {
        RolloutEvent::Progress {
            updated,
            ready,
            available,
            desired,
        } => (
            LogLevel::Info,
            format!("{updated}/{desired} updated, {ready} ready, {available} available"),
        ),
        RolloutEvent::PodWaiting {
            pod,
            reason,
            message,
        } => (
            LogLevel::Warn,
            format!(
                "pod {pod} waiting: {reason}{}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ),
        ),
        RolloutEvent::WatchError { message } => (
            LogLevel::Warn,
            format!("watch interrupted (retrying): {message}"),
        ),
    }
}

/// A stack's status from its services': failed if any failed, running
/// (or stopped) when all are, deploying otherwise.
async fn roll_up_stack<C: ConnectionTrait>(txn: &C, stack: Uuid) -> Result<()> {
    // Serialise roll-ups of one stack: two services finishing at once must
    // not each miss the other's new status (write skew on PostgreSQL).
    if txn.get_database_backend() == ferry_db::sea_orm::DbBackend::Postgres {
        stacks::Entity::find_by_id(stack)
            .lock_exclusive()
            .one(txn)
            .await?;
    }
    let members = services::Entity::find()
        .filter(services::Column::StackId.eq(stack))
        .all(txn)
        .await?;
    let all = |wanted: &[ServiceStatus]| members.iter().all(|m| wanted.contains(&m.status));
    let status = if members.iter().any(|m| m.status == ServiceStatus::Failed) {
        StackStatus::Failed
    } else if all(&[ServiceStatus::Stopped]) {
        StackStatus::Stopped
    } else if all(&[ServiceStatus::Running, ServiceStatus::Stopped]) {
        StackStatus::Running
    } else {
        StackStatus::Deploying
    };
    if let Some(row) = stacks::Entity::find_by_id(stack).one(txn).await? {
        let mut row = row.into_active_model();
        row.status = Set(status);
        row.updated_at = Set(Utc::now());
        row.update(txn).await?;
    }
    Ok(())
}

/// Appends a deployment log line.
pub async fn log<C: ConnectionTrait>(
    db: &C,
    deployment: Uuid,
    level: LogLevel,
    message: &str,
) -> Result<()> {
    deployment_logs::ActiveModel {
        id: Set(Uuid::now_v7()),
        deployment_id: Set(deployment),
        timestamp: Set(Utc::now()),
        level: Set(level),
        source: Set(Some("ferry".into())),
        message: Set(message.to_owned()),
    }
    .insert(db)
    .await?;
    Ok(())
}
