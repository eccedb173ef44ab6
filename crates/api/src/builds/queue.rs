//! Queueing and cancelling builds. A build is a `builds` row plus the
//! deployment it will become (status `building` until the image is
//! pushed). One active build per service (a partial unique index): a newer
//! one cancels the older in the same transaction, so two pushes racing
//! leave exactly one active build.

use chrono::Utc;
use ferry_db::entities::enums::{BuildStatus, DeploymentStatus, TriggerType};
use ferry_db::entities::{build_configs, builds, deployments, services};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _,
};
use serde_json::json;
use uuid::Uuid;

use crate::Result;

/// Build states that hold the service's slot.
pub const ACTIVE: [BuildStatus; 3] = [
    BuildStatus::Queued,
    BuildStatus::Cloning,
    BuildStatus::Building,
];

/// What to build.
#[derive(Debug, Clone)]
pub struct Request {
    pub trigger: TriggerType,
    /// Empty: the builder resolves the branch head.
    pub commit_sha: Option<String>,
    /// Webhook builds: the commit the branch moved from (watch paths).
    pub before_sha: Option<String>,
    pub message: Option<String>,
    pub author: Option<String>,
    pub triggered_by: Option<Uuid>,
}

/// Queues a build of `service` per `config`, cancelling the service's
/// active build. Returns the new build.
pub async fn enqueue<C: ConnectionTrait>(
    txn: &C,
    organization_id: Uuid,
    service: &services::Model,
    config: &build_configs::Model,
    request: Request,
) -> Result<builds::Model> {
    let now = Utc::now();
    let build_id = Uuid::now_v7();
    cancel_active(
        txn,
        service.id,
        &format!("superseded by a newer build ({build_id})"),
    )
    .await?;
    let deployment = deployments::ActiveModel {
        id: Set(Uuid::now_v7()),
        service_id: Set(Some(service.id)),
        stack_id: Set(None),
        triggered_by: Set(request.triggered_by),
        trigger_type: Set(request.trigger),
        status: Set(DeploymentStatus::Building),
        commit_sha: Set(request.commit_sha.clone()),
        commit_message: Set(request.message),
        commit_author: Set(request.author),
        branch: Set(Some(config.branch.clone())),
        image: Set(None),
        rollback_of_id: Set(None),
        error_message: Set(None),
        k8s_artifacts: Set(json!({})),
        env_snapshot: Set(None),
        metadata: Set(json!({ "buildId": build_id })),
        started_at: Set(None),
        finished_at: Set(None),
        created_at: Set(now),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
    }
    .insert(txn)
    .await?;
    let build = builds::ActiveModel {
        id: Set(build_id),
        organization_id: Set(organization_id),
        service_id: Set(service.id),
        deployment_id: Set(deployment.id),
        status: Set(BuildStatus::Queued),
        trigger_type: Set(request.trigger),
        branch: Set(config.branch.clone()),
        commit_sha: Set(request.commit_sha),
        before_sha: Set(request.before_sha),
        image: Set(None),
        job_name: Set(None),
        failed_step: Set(None),
        error_message: Set(None),
        detection: Set(json!([])),
        triggered_by: Set(request.triggered_by),
        lease_owner: Set(None),
        lease_expires_at: Set(None),
        created_at: Set(now),
        started_at: Set(None),
        finished_at: Set(None),
    }
    .insert(txn)
    .await?;
    Ok(build)
}

/// Marks the service's active build (if any) and its deployment cancelled
/// with `reason`. The builder deletes a cancelled build's Job.
pub async fn cancel_active<C: ConnectionTrait>(
    txn: &C,
    service_id: Uuid,
    reason: &str,
) -> Result<Option<Uuid>> {
    let active = builds::Entity::find()
        .filter(builds::Column::ServiceId.eq(service_id))
        .filter(builds::Column::Status.is_in(ACTIVE))
        .one(txn)
        .await?;
    match active {
        Some(b) => {
            cancel(txn, &b, reason).await?;
            Ok(Some(b.id))
        }
        None => Ok(None),
    }
}

/// Marks `build` (active) and its deployment cancelled.
pub async fn cancel<C: ConnectionTrait>(
    txn: &C,
    build: &builds::Model,
    reason: &str,
) -> Result<()> {
    let now = Utc::now();
    builds::Entity::update_many()
        .filter(builds::Column::Id.eq(build.id))
        .filter(builds::Column::Status.is_in(ACTIVE))
        .col_expr(builds::Column::Status, BuildStatus::Cancelled.into())
        .col_expr(builds::Column::ErrorMessage, Some(reason.to_owned()).into())
        .col_expr(builds::Column::FinishedAt, Some(now).into())
        .exec(txn)
        .await?;
    deployments::Entity::update_many()
        .filter(deployments::Column::Id.eq(build.deployment_id))
        .filter(
            deployments::Column::Status
                .is_in([DeploymentStatus::Building, DeploymentStatus::Cloning]),
        )
        .col_expr(
            deployments::Column::Status,
            DeploymentStatus::Cancelled.into(),
        )
        .col_expr(
            deployments::Column::ErrorMessage,
            Some(format!("build cancelled: {reason}")).into(),
        )
        .col_expr(deployments::Column::FinishedAt, Some(now).into())
        .exec(txn)
        .await?;
    Ok(())
}
