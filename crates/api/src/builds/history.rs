//! Builds and webhook deliveries of a service: trigger, read, list, cancel.

use ferry_db::entities::build_configs as configs;
use ferry_db::entities::enums::{
    AuditResourceType, BuildStatus, TriggerType, WebhookDeliveryStatus,
};
use ferry_db::entities::{builds, webhook_deliveries as deliveries};
use ferry_db::sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use ferry_proto::ferry::v1 as pb;
use serde_json::json;
use tonic::Request;
use uuid::Uuid;

use super::{GitApi, queue};
use crate::audit::Entry;
use crate::authz::{Action, Caller, Scope};
use crate::paging::{Key, Keyset, Kind, desc};
use crate::wire::{parse_id, ts};
use crate::workloads::deployments::trigger_to_pb;
use crate::{Error, Result};

/// Newest first (ids are UUIDv7, so time-ordered).
static BUILDS: Keyset<builds::Column> = Keyset {
    list: "builds",
    columns: &[desc(builds::Column::Id, Kind::Id)],
};
static DELIVERIES: Keyset<deliveries::Column> = Keyset {
    list: "webhookDeliveries",
    columns: &[desc(deliveries::Column::Id, Kind::Id)],
};

fn build_status_to_pb(s: BuildStatus) -> pb::BuildStatus {
    match s {
        BuildStatus::Queued => pb::BuildStatus::Queued,
        BuildStatus::Cloning => pb::BuildStatus::Cloning,
        BuildStatus::Building => pb::BuildStatus::Building,
        BuildStatus::Succeeded => pb::BuildStatus::Succeeded,
        BuildStatus::Failed => pb::BuildStatus::Failed,
        BuildStatus::Cancelled => pb::BuildStatus::Cancelled,
        BuildStatus::TimedOut => pb::BuildStatus::TimedOut,
        BuildStatus::Skipped => pb::BuildStatus::Skipped,
        BuildStatus::Planned => pb::BuildStatus::Planned,
    }
}

pub(crate) fn build_to_pb(b: &builds::Model) -> pb::Build {
    pb::Build {
        id: b.id.to_string(),
        service_id: b.service_id.to_string(),
        status: build_status_to_pb(b.status).into(),
        trigger: trigger_to_pb(b.trigger_type).into(),
        branch: b.branch.clone(),
        commit_sha: b.commit_sha.clone().unwrap_or_default(),
        image: b.image.clone().unwrap_or_default(),
        deployment_id: b.deployment_id.to_string(),
        failed_step: b.failed_step.clone().unwrap_or_default(),
        message: b.error_message.clone().unwrap_or_default(),
        detection: serde_json::from_value(b.detection.clone()).unwrap_or_default(),
        triggered_by: b.triggered_by.map(|u| u.to_string()).unwrap_or_default(),
        created_at: Some(ts(b.created_at)),
        started_at: b.started_at.map(ts),
        finished_at: b.finished_at.map(ts),
    }
}

fn delivery_to_pb(d: &deliveries::Model) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        id: d.id.to_string(),
        git_integration_id: d.git_integration_id.to_string(),
        service_id: d.service_id.map(|s| s.to_string()).unwrap_or_default(),
        delivery_id: d.delivery_id.clone(),
        event: d.event.clone(),
        repository: d.repository.clone().unwrap_or_default(),
        branch: d.branch.clone().unwrap_or_default(),
        before_sha: d.before_sha.clone().unwrap_or_default(),
        after_sha: d.after_sha.clone().unwrap_or_default(),
        status: match d.status {
            WebhookDeliveryStatus::Received => pb::WebhookDeliveryStatus::Received,
            WebhookDeliveryStatus::Ignored => pb::WebhookDeliveryStatus::Ignored,
            WebhookDeliveryStatus::Queued => pb::WebhookDeliveryStatus::Queued,
            WebhookDeliveryStatus::Failed => pb::WebhookDeliveryStatus::Failed,
        }
        .into(),
        reason: d.reason.clone().unwrap_or_default(),
        build_id: d.build_id.map(|b| b.to_string()).unwrap_or_default(),
        received_at: Some(ts(d.created_at)),
    }
}

/// A commit id: 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
pub fn commit_sha(field: &str, value: &str) -> Result<String> {
    let v = value.trim().to_ascii_lowercase();
    if matches!(v.len(), 40 | 64) && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v)
    } else {
        Err(Error::InvalidArgument(format!(
            "{field}: a full commit id (40 or 64 hex digits)"
        )))
    }
}

impl GitApi {
    /// The build `id`, if the caller may perform `action` on its service.
    async fn build_row(
        &self,
        caller: &Caller,
        action: Action,
        id: Uuid,
    ) -> Result<(Scope, builds::Model)> {
        let db = &self.0.identity.db;
        let build = builds::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| Error::NotFound("build not found".into()))?;
        let (scope, _, _) =
            caller
                .service(db, action, build.service_id)
                .await
                .map_err(|e| match e {
                    Error::NotFound(_) => Error::NotFound("build not found".into()),
                    other => other,
                })?;
        Ok((scope, build))
    }

    pub(super) async fn trigger(
        &self,
        request: Request<pb::TriggerBuildRequest>,
    ) -> Result<pb::Build> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let service_id = parse_id("serviceId", &req.service_id)?;
        let commit = match req.commit_sha.trim() {
            "" => None,
            v => Some(commit_sha("commitSha", v)?),
        };
        let db = &self.0.identity.db;
        let (scope, service, _) = caller
            .service(db, Action::ServiceDeploy, service_id)
            .await?;
        let txn = crate::db::begin_write(db).await?;
        let config = configs::Entity::find()
            .filter(configs::Column::ServiceId.eq(service_id))
            .one(&txn)
            .await?
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "the service has no build config: call SetBuildConfig first".into(),
                )
            })?;
        if config.git_integration_id.is_none() {
            return Err(Error::FailedPrecondition(
                "the build config's git integration was deleted: name another with SetBuildConfig"
                    .into(),
            ));
        }
        let build = queue::enqueue(
            &txn,
            scope.organization_id(),
            &service,
            &config,
            queue::Request {
                trigger: TriggerType::Manual,
                commit_sha: commit,
                before_sha: None,
                message: None,
                author: None,
                triggered_by: Some(caller.user_id),
            },
        )
        .await?;
        scope
            .audit(
                &txn,
                Entry::new("build.trigger", AuditResourceType::Service, service_id).details(
                    json!({ "buildId": build.id, "branch": build.branch, "commitSha": build.commit_sha }),
                ),
            )
            .await?;
        txn.commit().await?;
        self.0.builds.kick();
        Ok(build_to_pb(&build))
    }

    pub(super) async fn get_build_row(
        &self,
        request: Request<pb::GetBuildRequest>,
    ) -> Result<pb::Build> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (_, build) = self.build_row(&caller, Action::ServiceRead, id).await?;
        Ok(build_to_pb(&build))
    }

    pub(super) async fn list_build_rows(
        &self,
        request: Request<pb::ListBuildsRequest>,
    ) -> Result<pb::ListBuildsResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let page = BUILDS.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.service(db, Action::ServiceRead, id).await?;
        let query = builds::Entity::find().filter(builds::Column::ServiceId.eq(id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) = page.finish(rows, |b| vec![Key::Id(b.id)]);
        Ok(pb::ListBuildsResponse {
            builds: rows.iter().map(build_to_pb).collect(),
            next_page_token,
        })
    }

    pub(super) async fn cancel(
        &self,
        request: Request<pb::CancelBuildRequest>,
    ) -> Result<pb::Build> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (scope, build) = self.build_row(&caller, Action::ServiceDeploy, id).await?;
        if !queue::ACTIVE.contains(&build.status) {
            return Err(Error::FailedPrecondition(format!(
                "the build already finished ({:?})",
                build.status
            )));
        }
        let db = &self.0.identity.db;
        let txn = crate::db::begin_write(db).await?;
        queue::cancel(&txn, &build, "cancelled by a user").await?;
        scope
            .audit(
                &txn,
                Entry::new("build.cancel", AuditResourceType::Service, build.service_id)
                    .details(json!({ "buildId": build.id })),
            )
            .await?;
        txn.commit().await?;
        // The runner driving it sees the cancel and deletes the Job.
        self.0.builds.kick();
        let build = builds::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| Error::NotFound("build not found".into()))?;
        Ok(build_to_pb(&build))
    }

    pub(super) async fn list_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<pb::ListWebhookDeliveriesResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let page = DELIVERIES.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.service(db, Action::ServiceRead, id).await?;
        let query = deliveries::Entity::find().filter(deliveries::Column::ServiceId.eq(id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) = page.finish(rows, |d| vec![Key::Id(d.id)]);
        Ok(pb::ListWebhookDeliveriesResponse {
            deliveries: rows.iter().map(delivery_to_pb).collect(),
            next_page_token,
        })
    }
}
