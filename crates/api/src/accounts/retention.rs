//! `GetRetentionPolicy` / `SetRetentionPolicy`: an organization's overrides
//! of the installation's retention windows, kept in
//! `organizations.settings.retention` ([`OrgRetention`]) and applied by
//! ferry-scheduler's retention cleanup ([`ferry_db::retention`]).
//!
//! Any member reads them; admins and the owner set them (platform
//! super-admins too). Each window is 0 (the installation's default) or 1 to
//! [`MAX_DAYS`]. The audit log is kept at least [`MIN_TENANT_AUDIT_DAYS`]
//! days unless a super-admin sets less, so an admin cannot make the record
//! of what they just did vanish by the next run. The api does not know the
//! installation's defaults (they are the scheduler's flags), so it answers
//! with the overrides, 0 meaning "the default".

use chrono::Utc;
use ferry_db::entities::enums::AuditResourceType;
use ferry_db::retention::{MAX_DAYS, OrgRetention, Scoped};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, DatabaseConnection, IntoActiveModel as _,
};
use ferry_proto::ferry::v1 as pb;
use serde_json::json;
use uuid::Uuid;

use super::limits::organization;
use crate::audit::{Auditor, Entry};
use crate::authz::{Action, Caller};
use crate::wire::parse_id;
use crate::{Error, Result};

/// The shortest audit window an organization's admins may choose.
pub const MIN_TENANT_AUDIT_DAYS: u32 = 30;

/// Each kind with its field's JSON name in `policy` and its slot in the
/// wire message.
fn fields(p: &mut pb::RetentionPolicy) -> [(Scoped, &'static str, &mut u32); 5] {
    [
        (
            Scoped::DeploymentLogs,
            "deploymentLogsDays",
            &mut p.deployment_logs_days,
        ),
        (Scoped::JobRuns, "jobRunsDays", &mut p.job_runs_days),
        (
            Scoped::ContainerMetrics,
            "containerMetricsDays",
            &mut p.container_metrics_days,
        ),
        (
            Scoped::WebhookDeliveries,
            "webhookDeliveriesDays",
            &mut p.webhook_deliveries_days,
        ),
        (Scoped::AuditLogs, "auditLogsDays", &mut p.audit_logs_days),
    ]
}

/// The overrides `policy` asks for, validated (fields named
/// `policy.<json>`); `super_admin` may keep audit logs shorter.
fn overrides(mut policy: pb::RetentionPolicy, super_admin: bool) -> Result<OrgRetention> {
    let mut out = OrgRetention::default();
    for (kind, name, days) in fields(&mut policy) {
        let days = *days;
        if days == 0 {
            continue;
        }
        if days > MAX_DAYS {
            return Err(Error::InvalidArgument(format!(
                "policy.{name}: must be 0 (the installation default) or 1 to {MAX_DAYS} days"
            )));
        }
        if kind == Scoped::AuditLogs && days < MIN_TENANT_AUDIT_DAYS && !super_admin {
            return Err(Error::InvalidArgument(format!(
                "policy.{name}: audit logs are kept at least {MIN_TENANT_AUDIT_DAYS} days \
                 (only a platform super-admin may set less)"
            )));
        }
        out.set(kind, Some(days));
    }
    Ok(out)
}

fn to_pb(id: Uuid, overrides: &OrgRetention) -> pb::OrganizationRetention {
    let mut policy = pb::RetentionPolicy::default();
    for (kind, _, days) in fields(&mut policy) {
        *days = overrides.get(kind).unwrap_or(0);
    }
    pb::OrganizationRetention {
        organization_id: id.to_string(),
        overrides: Some(policy),
    }
}

/// GetRetentionPolicy: any member.
pub async fn get(
    caller: &Caller,
    db: &DatabaseConnection,
    request: &pb::GetRetentionPolicyRequest,
) -> Result<pb::OrganizationRetention> {
    let id = parse_id("organizationId", &request.organization_id)?;
    let org = organization(db, caller, Action::OrganizationReadRetention, id).await?;
    Ok(to_pb(id, &OrgRetention::from_settings(&org.settings)))
}

/// SetRetentionPolicy: admins and the owner; replaces the overrides,
/// audited with the old and new ones, in one transaction.
pub async fn set(
    caller: &Caller,
    db: &DatabaseConnection,
    request: pb::SetRetentionPolicyRequest,
) -> Result<pb::OrganizationRetention> {
    let id = parse_id("organizationId", &request.organization_id)?;
    let txn = crate::db::begin_write(db).await?;
    let org = organization(&txn, caller, Action::OrganizationSetRetention, id).await?;
    let new = overrides(request.policy.unwrap_or_default(), caller.super_admin)?;
    let old = OrgRetention::from_settings(&org.settings);
    let settings = new.store_in(&org.settings);
    let mut active = org.into_active_model();
    active.settings = Set(settings);
    active.updated_at = Set(Utc::now());
    active.update(&txn).await?;
    Auditor::org(caller, id)
        .record(
            &txn,
            Entry::new(
                Action::OrganizationSetRetention.name(),
                AuditResourceType::Organization,
                id,
            )
            .details(json!({ "from": old.to_json(), "to": new.to_json() })),
        )
        .await?;
    txn.commit().await?;
    Ok(to_pb(id, &new))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_window_is_checked_and_named() {
        let all = |days| pb::RetentionPolicy {
            deployment_logs_days: days,
            job_runs_days: days,
            container_metrics_days: days,
            webhook_deliveries_days: days,
            audit_logs_days: days,
        };
        assert!(overrides(all(0), false).unwrap().is_empty());
        let set = overrides(all(MAX_DAYS), false).unwrap();
        assert!(Scoped::ALL.iter().all(|k| set.get(*k) == Some(MAX_DAYS)));
        let err = overrides(all(MAX_DAYS + 1), false).unwrap_err();
        assert!(
            err.to_string().contains("policy.deploymentLogsDays"),
            "{err}"
        );
        let short_audit = pb::RetentionPolicy {
            audit_logs_days: MIN_TENANT_AUDIT_DAYS - 1,
            ..all(1)
        };
        let err = overrides(short_audit, false).unwrap_err();
        assert!(err.to_string().contains("policy.auditLogsDays"), "{err}");
        assert_eq!(
            overrides(short_audit, true).unwrap().audit_logs_days,
            Some(MIN_TENANT_AUDIT_DAYS - 1)
        );
    }
}
