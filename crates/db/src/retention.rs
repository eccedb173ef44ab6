//! Retention cleanup, called periodically by the scheduler: deletes
//! deployment logs, container metrics and audit logs older than the policy
//! allows, in one transaction.
//!
//! On SQLite timestamps are RFC 3339 text in UTC (as sqlx writes them, and as
//! the column defaults write them), which sorts chronologically, so the
//! cutoff is compared as a bound `DateTime<Utc>` parameter on both backends.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, TransactionTrait};

use crate::Result;
use crate::entities::{audit_logs, container_metrics, deployment_logs};

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
}

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
    txn.commit().await?;
    tracing::info!(
        deployment_logs = report.deployment_logs,
        container_metrics = report.container_metrics,
        audit_logs = report.audit_logs,
        "retention cleanup"
    );
    Ok(report)
}
