//! `GetOrganizationLimits` / `SetOrganizationLimits`: an organization's
//! overrides of the installation's per-project quota and of its build
//! resources and concurrency, kept in `organizations.settings.limits`
//! (keyed by `ProjectQuota`'s field names) and read by the renderer
//! through [`spec::project_policy`] and by the build runner
//! ([`crate::builds::runner`]).
//!
//! Only platform super-admins set them: tenants never raise their own
//! quota. Everything Set accepts renders (the same quantity checks as
//! the renderer, and container defaults within the totals, which
//! Kubernetes requires of a LimitRange).

use chrono::Utc;
use ferry_db::entities::enums::AuditResourceType;
use ferry_db::entities::organizations;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ConnectionTrait, EntityTrait as _,
    IntoActiveModel as _,
};
use ferry_k8s::spec::ProjectQuota;
use ferry_proto::ferry::v1 as pb;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::audit::{Auditor, Entry};
use crate::authz::{Action, Caller, Resource};
use crate::wire::parse_id;
use crate::workloads::{spec, validate};
use crate::{Error, Result};

/// Largest object count an override may set.
pub const MAX_COUNT: i32 = 100_000;

/// Most builds of one organization that may run at once.
pub const MAX_CONCURRENT_BUILDS: i32 = 50;

#[derive(Clone, Copy)]
pub(crate) enum Unit {
    Cpu,
    Bytes,
}

/// The quantity fields: proto JSON name, settings key, unit, the field.
fn quantities(
    l: &mut pb::ResourceLimits,
) -> [(&'static str, &'static str, Unit, &mut Option<String>); 9] {
    [
        ("cpu", "cpu", Unit::Cpu, &mut l.cpu),
        ("memory", "memory", Unit::Bytes, &mut l.memory),
        ("storage", "storage", Unit::Bytes, &mut l.storage),
        (
            "defaultCpuRequest",
            "default_cpu_request",
            Unit::Cpu,
            &mut l.default_cpu_request,
        ),
        (
            "defaultMemoryRequest",
            "default_memory_request",
            Unit::Bytes,
            &mut l.default_memory_request,
        ),
        (
            "defaultCpuLimit",
            "default_cpu_limit",
            Unit::Cpu,
            &mut l.default_cpu_limit,
        ),
        (
            "defaultMemoryLimit",
            "default_memory_limit",
            Unit::Bytes,
            &mut l.default_memory_limit,
        ),
        ("buildCpu", "build_cpu", Unit::Cpu, &mut l.build_cpu),
        (
            "buildMemory",
            "build_memory",
            Unit::Bytes,
            &mut l.build_memory,
        ),
    ]
}

/// The count fields: proto JSON name, settings key, largest value, the
/// field (the smallest is 1).
fn counts(l: &mut pb::ResourceLimits) -> [(&'static str, &'static str, i32, &mut Option<i32>); 6] {
    [
        ("pods", "pods", MAX_COUNT, &mut l.pods),
        ("services", "services", MAX_COUNT, &mut l.services),
        (
            "persistentVolumeClaims",
            "persistent_volume_claims",
            MAX_COUNT,
            &mut l.persistent_volume_claims,
        ),
        ("secrets", "secrets", MAX_COUNT, &mut l.secrets),
        ("configMaps", "config_maps", MAX_COUNT, &mut l.config_maps),
        (
            "concurrentBuilds",
            "concurrent_builds",
            MAX_CONCURRENT_BUILDS,
            &mut l.concurrent_builds,
        ),
    ]
}

/// The quantities a build cannot run with at all: zero CPU or memory.
const POSITIVE: [&str; 2] = ["build_cpu", "build_memory"];

/// The overrides `limits` sets, validated (fields named `limits.<json>`).
fn overrides(mut limits: pb::ResourceLimits) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for (name, key, unit, value) in quantities(&mut limits) {
        let Some(value) = value.take() else { continue };
        let field = format!("limits.{name}");
        let checked = match unit {
            Unit::Cpu => validate::cpu(&field, &value)?,
            Unit::Bytes => validate::memory(&field, &value)?,
        };
        // Empty text is no quantity; unset clears an override.
        let checked = checked.ok_or_else(|| {
            Error::InvalidArgument(format!("{field}: must not be empty (leave it unset)"))
        })?;
        if POSITIVE.contains(&key) && amount(unit, &checked).is_none_or(|a| a <= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "{field}: must be more than zero"
            )));
        }
        out.insert(key.to_owned(), Value::String(checked));
    }
    for (name, key, max, value) in counts(&mut limits) {
        let Some(value) = *value else { continue };
        if !(1..=max).contains(&value) {
            return Err(Error::InvalidArgument(format!(
                "limits.{name}: must be between 1 and {max}"
            )));
        }
        out.insert(key.to_owned(), Value::from(value));
    }
    Ok(out)
}

/// The value of a quantity already checked by `validate` (CPU in cores,
/// memory in bytes), for comparisons and the build runner's requests.
pub(crate) fn amount(unit: Unit, value: &str) -> Option<f64> {
    let (number, scale) = match unit {
        Unit::Cpu => match value.strip_suffix('m') {
            Some(n) => (n, 1e-3),
            None => (value, 1.0),
        },
        Unit::Bytes => [
            ("Ki", 1024f64),
            ("Mi", 1024f64.powi(2)),
            ("Gi", 1024f64.powi(3)),
            ("Ti", 1024f64.powi(4)),
            ("K", 1e3),
            ("M", 1e6),
            ("G", 1e9),
            ("T", 1e12),
        ]
        .iter()
        .find_map(|(s, f)| value.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((value, 1.0)),
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// Kubernetes refuses a LimitRange whose default request exceeds its
/// default limit, or whose defaults exceed its max (the project totals).
fn check_consistent(q: &ProjectQuota) -> Result<()> {
    let pairs = [
        (
            Unit::Cpu,
            "defaultCpuRequest",
            &q.default_cpu_request,
            "defaultCpuLimit",
            &q.default_cpu_limit,
        ),
        (
            Unit::Cpu,
            "defaultCpuLimit",
            &q.default_cpu_limit,
            "cpu",
            &q.cpu,
        ),
        (
            Unit::Bytes,
            "defaultMemoryRequest",
            &q.default_memory_request,
            "defaultMemoryLimit",
            &q.default_memory_limit,
        ),
        (
            Unit::Bytes,
            "defaultMemoryLimit",
            &q.default_memory_limit,
            "memory",
            &q.memory,
        ),
    ];
    for (unit, small_name, small, big_name, big) in pairs {
        if let (Some(s), Some(b)) = (amount(unit, small), amount(unit, big))
            && s > b
        {
            return Err(Error::InvalidArgument(format!(
                "limits.{small_name}: {small} exceeds {big_name} ({big})"
            )));
        }
    }
    Ok(())
}

/// `map` (settings keys) as the wire message; missing keys stay unset.
fn to_pb(map: &Map<String, Value>) -> pb::ResourceLimits {
    let mut out = pb::ResourceLimits::default();
    for (_, key, _, value) in quantities(&mut out) {
        *value = map.get(key).and_then(Value::as_str).map(str::to_owned);
    }
    for (_, key, _, value) in counts(&mut out) {
        *value = map
            .get(key)
            .and_then(Value::as_i64)
            .and_then(|n| i32::try_from(n).ok());
    }
    out
}

fn quota_map(q: &ProjectQuota) -> Result<Map<String, Value>> {
    match serde_json::to_value(q) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::Internal("a quota is not a JSON object".into())),
        Err(e) => Err(Error::Internal(e.to_string())),
    }
}

fn limits_to_pb(
    id: Uuid,
    default: &ProjectQuota,
    overrides: &Map<String, Value>,
) -> Result<pb::OrganizationLimits> {
    let effective = spec::merge_quota(default, overrides)?;
    Ok(pb::OrganizationLimits {
        organization_id: id.to_string(),
        effective: Some(to_pb(&quota_map(&effective)?)),
        overrides: Some(to_pb(overrides)),
        defaults: Some(to_pb(&quota_map(default)?)),
    })
}

/// The organization `id` and the caller's right to `action` on it.
pub(crate) async fn organization<C: ConnectionTrait>(
    db: &C,
    caller: &Caller,
    action: Action,
    id: Uuid,
) -> Result<organizations::Model> {
    let (org, _) = caller
        .load(
            db,
            action,
            organizations::Entity::find_by_id(id),
            organizations::Column::Id,
            |o| Resource::Organization(o.id),
            "organization not found",
        )
        .await?;
    Ok(org)
}

/// GetOrganizationLimits: any member.
pub async fn get(
    caller: &Caller,
    db: &ferry_db::sea_orm::DatabaseConnection,
    default: &ProjectQuota,
    request: &pb::GetOrganizationLimitsRequest,
) -> Result<pb::OrganizationLimits> {
    let id = parse_id("organizationId", &request.organization_id)?;
    let org = organization(db, caller, Action::OrganizationReadLimits, id).await?;
    limits_to_pb(id, default, &spec::quota_overrides(&org.settings))
}

/// SetOrganizationLimits: super-admins; replaces the overrides, audited
/// with the old and new ones, in one transaction.
pub async fn set(
    caller: &Caller,
    db: &ferry_db::sea_orm::DatabaseConnection,
    default: &ProjectQuota,
    request: pb::SetOrganizationLimitsRequest,
) -> Result<pb::OrganizationLimits> {
    let id = parse_id("organizationId", &request.organization_id)?;
    let txn = crate::db::begin_write(db).await?;
    let org = organization(&txn, caller, Action::OrganizationSetLimits, id).await?;
    let new = overrides(request.limits.unwrap_or_default())?;
    check_consistent(&spec::merge_quota(default, &new)?)?;
    let old = spec::quota_overrides(&org.settings);
    let mut settings = match &org.settings {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    if new.is_empty() {
        settings.remove("limits");
    } else {
        settings.insert("limits".into(), Value::Object(new.clone()));
    }
    let mut active = org.into_active_model();
    active.settings = Set(Value::Object(settings));
    active.updated_at = Set(Utc::now());
    active.update(&txn).await?;
    Auditor::org(caller, id)
        .record(
            &txn,
            Entry::new(
                Action::OrganizationSetLimits.name(),
                AuditResourceType::Organization,
                id,
            )
            .details(json!({ "from": old, "to": new })),
        )
        .await?;
    txn.commit().await?;
    limits_to_pb(id, default, &new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_compare_across_units() {
        assert_eq!(amount(Unit::Cpu, "500m"), Some(0.5));
        assert_eq!(amount(Unit::Cpu, "2"), Some(2.0));
        assert_eq!(amount(Unit::Bytes, "1Gi"), Some(1024f64.powi(3)));
        assert_eq!(amount(Unit::Bytes, "1G"), Some(1e9));
        let big = ProjectQuota {
            default_cpu_limit: "3".into(),
            cpu: "2".into(),
            ..ProjectQuota::default()
        };
        assert!(check_consistent(&big).is_err());
        assert!(check_consistent(&ProjectQuota::default()).is_ok());
    }
}
