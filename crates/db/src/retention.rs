//! Retention cleanup, called periodically by the scheduler: deletes
//! deployment logs, container metrics, finished job runs (with their logs),
//! webhook deliveries and audit logs older than the policy allows, and
//! expired sessions, settled invitations and login-throttle rows that can
//! no longer matter.
//!
//! Deletes run in bounded batches ([`BATCH`] rows, one short transaction
//! each), never one huge transaction: a year of logs does not lock a table
//! or blow the WAL, and an interrupted run leaves only whole batches done.
//!
//! On SQLite timestamps are RFC 3339 text in UTC (as sqlx writes them, and as
//! the column defaults write them), which sorts chronologically, so the
//! cutoff is compared as a bound `DateTime<Utc>` parameter on both backends.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _, Query, SimpleExpr};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, TransactionTrait};

use std::collections::BTreeMap;

use sea_orm::{ActiveModelTrait as _, IntoActiveModel as _, QueryOrder as _, QuerySelect as _};
use uuid::Uuid;

use crate::Result;
use crate::audit::{chain_of, checkpoint_content};
use crate::crypto::{Encrypted, Keyring};
use crate::entities::enums::JobRunStatus;
use crate::entities::{
    audit_checkpoints, audit_logs, auth_throttle, container_metrics, deployment_logs, job_runs,
    org_invitations, sessions, webhook_deliveries,
};

/// Rows deleted per transaction.
pub const BATCH: u64 = 5_000;

/// Settled invitations (accepted, revoked or expired) and expired
/// sessions are kept this long for support questions, then deleted.
pub const SETTLED_HORIZON: Duration = Duration::days(30);

/// How long each kind of time-series data is kept, in days. `0` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub deployment_logs_days: u32,
    pub container_metrics_days: u32,
    pub audit_logs_days: u32,
    /// Finished job runs and their logs.
    pub job_runs_days: u32,
    pub webhook_deliveries_days: u32,
}

impl Default for RetentionPolicy {
    /// 30 days of deployment logs (seeds 001/002), 7 days of container
    /// metrics (seed 001) and a year of audit logs (seed 002, compliance).
    fn default() -> Self {
        Self {
            deployment_logs_days: 30,
            container_metrics_days: 7,
            audit_logs_days: 365,
            job_runs_days: 30,
            webhook_deliveries_days: 30,
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
    pub job_runs: u64,
    pub webhook_deliveries: u64,
    /// Sessions expired more than [`SETTLED_HORIZON`] ago.
    pub sessions: u64,
    /// Invitations settled more than [`SETTLED_HORIZON`] ago.
    pub invitations: u64,
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
    keyring: &Keyring,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<RetentionReport> {
    cleanup_in_batches(db, keyring, policy, now, BATCH).await
}

/// [`cleanup`], deleting at most `batch` rows per transaction.
pub async fn cleanup_in_batches(
    db: &DatabaseConnection,
    keyring: &Keyring,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    batch: u64,
) -> Result<RetentionReport> {
    let batch = std::cmp::max(batch, 1);
    let mut report = RetentionReport::default();
    if let Some(before) = cutoff(now, policy.deployment_logs_days) {
        report.deployment_logs = delete_batched::<deployment_logs::Entity, _>(
            db,
            deployment_logs::Column::Id,
            deployment_logs::Column::Timestamp.lt(before),
            batch,
        )
        .await?;
    }
    if let Some(before) = cutoff(now, policy.container_metrics_days) {
        report.container_metrics = delete_batched::<container_metrics::Entity, _>(
            db,
            container_metrics::Column::Id,
            container_metrics::Column::Timestamp.lt(before),
            batch,
        )
        .await?;
    }
    if let Some(before) = cutoff(now, policy.audit_logs_days) {
        report.audit_logs = cut_audit_chains(db, keyring, before, now, batch).await?;
    }
    if let Some(before) = cutoff(now, policy.job_runs_days) {
        // Only finished runs: an active run is never cut, however old.
        let finished = job_runs::Column::FinishedAt.lt(before).and(
            job_runs::Column::Status.is_not_in([JobRunStatus::Pending, JobRunStatus::Running]),
        );
        report.job_runs =
            delete_batched::<job_runs::Entity, _>(db, job_runs::Column::Id, finished, batch)
                .await?;
    }
    if let Some(before) = cutoff(now, policy.webhook_deliveries_days) {
        report.webhook_deliveries = delete_batched::<webhook_deliveries::Entity, _>(
            db,
            webhook_deliveries::Column::Id,
            webhook_deliveries::Column::CreatedAt.lt(before),
            batch,
        )
        .await?;
    }
    let settled = now - SETTLED_HORIZON;
    report.sessions = delete_batched::<sessions::Entity, _>(
        db,
        sessions::Column::Id,
        sessions::Column::ExpiresAt.lt(settled),
        batch,
    )
    .await?;
    report.invitations = delete_batched::<org_invitations::Entity, _>(
        db,
        org_invitations::Column::Id,
        Expr::col(org_invitations::Column::ExpiresAt)
            .lt(settled)
            .or(Expr::col(org_invitations::Column::AcceptedAt).lt(settled))
            .or(Expr::col(org_invitations::Column::RevokedAt).lt(settled)),
        batch,
    )
    .await?;
    let stale = now - THROTTLE_HORIZON;
    report.auth_throttle = delete_batched::<auth_throttle::Entity, _>(
        db,
        auth_throttle::Column::Id,
        Expr::col(auth_throttle::Column::UpdatedAt).lt(stale).and(
            Expr::col(auth_throttle::Column::LockedUntil)
                .is_null()
                .or(Expr::col(auth_throttle::Column::LockedUntil).lt(now)),
        ),
        batch,
    )
    .await?;
    tracing::info!(
        deployment_logs = report.deployment_logs,
        container_metrics = report.container_metrics,
        audit_logs = report.audit_logs,
        job_runs = report.job_runs,
        webhook_deliveries = report.webhook_deliveries,
        sessions = report.sessions,
        invitations = report.invitations,
        auth_throttle = report.auth_throttle,
        "retention cleanup"
    );
    Ok(report)
}

/// Deletes audit rows older than `before`, oldest first, `batch` per
/// transaction; in the same transaction each chain cut gets its checkpoint
/// (the last deleted row's hash, time and id, and the running count),
/// sealed with `keyring`, so the chain still verifies from there. Rows
/// are taken in time order across chains, and a chain's times strictly
/// increase, so what goes is always the start of each chain.
async fn cut_audit_chains(
    db: &DatabaseConnection,
    keyring: &Keyring,
    before: DateTime<Utc>,
    now: DateTime<Utc>,
    batch: u64,
) -> Result<u64> {
    let mut deleted = 0;
    loop {
        let txn = crate::begin_write(db).await?;
        let rows = audit_logs::Entity::find()
            .filter(audit_logs::Column::CreatedAt.lt(before))
            .order_by_asc(audit_logs::Column::CreatedAt)
            .order_by_asc(audit_logs::Column::Id)
            .limit(batch)
            .all(&txn)
            .await?;
        if rows.is_empty() {
            return Ok(deleted);
        }
        // The last row of each chain in this batch, and how many go.
        let mut cuts: BTreeMap<String, (&audit_logs::Model, i64)> = BTreeMap::new();
        for row in &rows {
            let entry = cuts.entry(chain_of(row)).or_insert((row, 0));
            entry.0 = row;
            entry.1 += 1;
        }
        for (chain, (last, count)) in cuts {
            let Some(last_hash) = last.hash.clone() else {
                // A row outside any hash chain (written before chains
                // existed) needs no checkpoint.
                continue;
            };
            let existing = audit_checkpoints::Entity::find()
                .filter(audit_checkpoints::Column::Chain.eq(chain.as_str()))
                .one(&txn)
                .await?;
            let id = existing.as_ref().map_or_else(Uuid::now_v7, |c| c.id);
            let mut cp = audit_checkpoints::Model {
                id,
                chain,
                last_hash,
                through_created_at: last.created_at,
                through_id: last.id,
                deleted_count: existing.as_ref().map_or(0, |c| c.deleted_count) + count,
                seal: Encrypted(String::new()),
                created_at: existing.as_ref().map_or(now, |c| c.created_at),
                updated_at: now,
            };
            cp.seal = keyring.encrypt("audit_checkpoints", "seal", id, &checkpoint_content(&cp))?;
            let active = cp.into_active_model().reset_all();
            if existing.is_some() {
                active.update(&txn).await?;
            } else {
                active.insert(&txn).await?;
            }
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let done = audit_logs::Entity::delete_many()
            .filter(audit_logs::Column::Id.is_in(ids))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        deleted += done;
        if (rows.len() as u64) < batch {
            return Ok(deleted);
        }
    }
}

/// Deletes the rows of `E` matching `condition`, `batch` at a time
/// (`DELETE ... WHERE id IN (SELECT id ... LIMIT batch)`, one transaction
/// each, on both backends), until fewer than `batch` match.
async fn delete_batched<E, C>(
    db: &DatabaseConnection,
    id: C,
    condition: impl Into<SimpleExpr>,
    batch: u64,
) -> Result<u64>
where
    E: EntityTrait,
    C: ColumnTrait,
{
    let condition: SimpleExpr = condition.into();
    let mut deleted = 0;
    loop {
        let txn = db.begin().await?;
        let ids = Query::select()
            .column(id)
            .from(E::default())
            .and_where(condition.clone())
            .limit(batch)
            .to_owned();
        let done = E::delete_many()
            .filter(id.in_subquery(ids))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        deleted += done;
        if done < batch {
            return Ok(deleted);
        }
    }
}
