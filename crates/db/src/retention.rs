//! Retention cleanup, called periodically by the scheduler: deletes
//! deployment logs, container metrics and audit logs older than the policy
//! allows, and login-throttle rows that can no longer matter, in one
//! transaction.
//!
//! On SQLite timestamps are RFC 3339 text in UTC (as sqlx writes them, and as
//! the column defaults write them), which sorts chronologically, so the
//! cutoff is compared as a bound `DateTime<Utc>` parameter on both backends.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, TransactionTrait};

use crate::Result;
use crate::entities::{audit_logs, auth_throttle, container_metrics, deployment_logs};

/// How long each kind of time-series data is kept, in days. `0` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub deployment_logs_days: u32,
    pub container_metrics_days: u32,
    pub audit_logs_days: u32,
}

impl Default for RetentionPolicy {
    /// 30 days of deployment logs (seeds 001/002), 7 days of container
    /// metrics (seed 001) and a year of audit logs (seed 002, compliance).
    fn default() -> Self {
        Self {
            deployment_logs_days: 30,
            container_metrics_days: 7,
            audit_logs_days: 365,
        }
    }
}

/// Rows deleted per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deployment_logs: u64,
    pub container_metrics: u64,
    pub audit_logs: u64,
    /// Login/second-factor throttle rows past [`THROTTLE_HORIZON`].
    pub auth_throttle: u64,
}

/// An `auth_throttle` row untouched this long, and not locked, is dead: the
/// api forgets a key one hour after its last lock ends (and locks last at
/// most an hour), and TOTP replay and challenge counters matter for
/// minutes. Without the sweep, every address and username ever tried
/// (anyone can try) would stay a row forever.
pub const THROTTLE_HORIZON: Duration = Duration::days(1);

fn cutoff(now: DateTime<Utc>, days: u32) -> Option<DateTime<Utc>> {
    (days > 0).then(|| now - Duration::days(i64::from(days)))
}

/// Deletes rows strictly older than `now - days` for each table of the policy.
pub async fn cleanup(
    db: &DatabaseConnection,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<RetentionReport> {
    let txn = db.begin().await?;
    let mut report = RetentionReport::default();
    if let Some(before) = cutoff(now, policy.deployment_logs_days) {
        report.deployment_logs = deployment_logs::Entity::delete_many()
            .filter(deployment_logs::Column::Timestamp.lt(before))
            .exec(&txn)
            .await?
            .rows_affected;
    }
    if let Some(before) = cutoff(now, policy.container_metrics_days) {
        report.container_metrics = container_metrics::Entity::delete_many()
            .filter(container_metrics::Column::Timestamp.lt(before))
            .exec(&txn)
            .await?
            .rows_affected;
    }
    if let Some(before) = cutoff(now, policy.audit_logs_days) {
        report.audit_logs = audit_logs::Entity::delete_many()
            .filter(audit_logs::Column::CreatedAt.lt(before))
            .exec(&txn)
            .await?
            .rows_affected;
    }
    let stale = now - THROTTLE_HORIZON;
    report.auth_throttle = auth_throttle::Entity::delete_many()
        .filter(auth_throttle::Column::UpdatedAt.lt(stale))
        .filter(
            sea_orm::Condition::any()
                .add(auth_throttle::Column::LockedUntil.is_null())
                .add(auth_throttle::Column::LockedUntil.lt(now)),
        )
        .exec(&txn)
        .await?
        .rows_affected;
    txn.commit().await?;
    tracing::info!(
        deployment_logs = report.deployment_logs,
        container_metrics = report.container_metrics,
        audit_logs = report.audit_logs,
        auth_throttle = report.auth_throttle,
        "retention cleanup"
    );
    Ok(report)
}
