//! Retention cleanup, called periodically by the scheduler: deletes
//! deployment logs, container metrics, finished job runs (with their logs),
//! webhook deliveries and audit logs older than the policy allows, and
//! expired sessions, settled invitations and login-throttle rows that can
//! no longer matter.
//!
//! The [`RetentionPolicy`] is the installation's default. An organization
//! may override any of its five windows in `organizations.settings.retention`
//! ([`OrgRetention`], set through the api's `SetRetentionPolicy`); cleanup
//! honours the overrides for the organization's data without a query per
//! organization: per kind of data it reads the *distinct* override windows
//! (one `SELECT DISTINCT` over `organizations`), then runs one batched delete
//! for the default window (every organization but those that keep the data
//! longer) and one per distinct override window (the organizations that
//! chose it). A row's organization is found by a correlated `EXISTS` that
//! joins its owner by primary keys up to `organizations` and tests the
//! override there, read from the JSON column in SQL ([`override_days`]):
//! never a list of ids, so the statements stay the same size however many
//! organizations there are, and PostgreSQL plans semi- and anti-joins. With
//! no organization keeping data longer than the installation, the default
//! pass is the plain one-table delete.
//!
//! Deletes run in bounded batches ([`BATCH`] rows, one short transaction
//! each), never one huge transaction: a year of logs does not lock a table
//! or blow the WAL, and an interrupted run leaves only whole batches done.
//!
//! On SQLite timestamps are RFC 3339 text in UTC (as sqlx writes them, and as
//! the column defaults write them), which sorts chronologically, so the
//! cutoff is compared as a bound `DateTime<Utc>` parameter on both backends.

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Alias, Expr, ExprTrait as _, Func, Query, SelectStatement, SimpleExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait as _, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    TransactionTrait,
};
use serde_json::{Map, Value};

use std::collections::BTreeMap;

use sea_orm::{ActiveModelTrait as _, IntoActiveModel as _, QueryOrder as _, QuerySelect as _};
use uuid::Uuid;

use crate::Result;
use crate::audit::{chain_of, checkpoint_content};
use crate::crypto::{Encrypted, Keyring};
use crate::entities::enums::JobRunStatus;
use crate::entities::{
    audit_checkpoints, audit_logs, auth_throttle, container_metrics, containers, deployment_logs,
    deployments, job_runs, jobs, org_invitations, organizations, projects, services, sessions,
    stacks, webhook_deliveries,
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

/// The key of an organization's overrides in `organizations.settings`.
pub const SETTINGS_KEY: &str = "retention";

/// The longest window an organization may choose (ten years).
pub const MAX_DAYS: u32 = 3650;

/// The kinds of data an organization owns, whose window it may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scoped {
    DeploymentLogs,
    ContainerMetrics,
    AuditLogs,
    JobRuns,
    WebhookDeliveries,
}

impl Scoped {
    pub const ALL: [Scoped; 5] = [
        Scoped::DeploymentLogs,
        Scoped::ContainerMetrics,
        Scoped::AuditLogs,
        Scoped::JobRuns,
        Scoped::WebhookDeliveries,
    ];

    /// The key of its window in `organizations.settings.retention`.
    pub const fn key(self) -> &'static str {
        match self {
            Scoped::DeploymentLogs => "deployment_logs_days",
            Scoped::ContainerMetrics => "container_metrics_days",
            Scoped::AuditLogs => "audit_logs_days",
            Scoped::JobRuns => "job_runs_days",
            Scoped::WebhookDeliveries => "webhook_deliveries_days",
        }
    }

    /// Its window in `policy`.
    pub const fn days(self, policy: &RetentionPolicy) -> u32 {
        match self {
            Scoped::DeploymentLogs => policy.deployment_logs_days,
            Scoped::ContainerMetrics => policy.container_metrics_days,
            Scoped::AuditLogs => policy.audit_logs_days,
            Scoped::JobRuns => policy.job_runs_days,
            Scoped::WebhookDeliveries => policy.webhook_deliveries_days,
        }
    }

    fn days_mut(self, policy: &mut RetentionPolicy) -> &mut u32 {
        match self {
            Scoped::DeploymentLogs => &mut policy.deployment_logs_days,
            Scoped::ContainerMetrics => &mut policy.container_metrics_days,
            Scoped::AuditLogs => &mut policy.audit_logs_days,
            Scoped::JobRuns => &mut policy.job_runs_days,
            Scoped::WebhookDeliveries => &mut policy.webhook_deliveries_days,
        }
    }
}

/// An organization's overrides of the installation's windows, kept in
/// `organizations.settings.retention` as `{"audit_logs_days": 90, ...}`
/// (only the overridden keys). `None`: the installation default applies.
/// Reading is lenient, key by key: a missing `retention` object (settings
/// written before overrides existed), a missing key, or a value that is not
/// an integer from 1 to [`MAX_DAYS`] all mean "no override" — the same rule
/// cleanup applies in SQL ([`override_days`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrgRetention {
    pub deployment_logs_days: Option<u32>,
    pub container_metrics_days: Option<u32>,
    pub audit_logs_days: Option<u32>,
    pub job_runs_days: Option<u32>,
    pub webhook_deliveries_days: Option<u32>,
}

impl OrgRetention {
    /// The override of `kind`.
    pub const fn get(&self, kind: Scoped) -> Option<u32> {
        match kind {
            Scoped::DeploymentLogs => self.deployment_logs_days,
            Scoped::ContainerMetrics => self.container_metrics_days,
            Scoped::AuditLogs => self.audit_logs_days,
            Scoped::JobRuns => self.job_runs_days,
            Scoped::WebhookDeliveries => self.webhook_deliveries_days,
        }
    }

    /// Sets (or clears, with `None`) the override of `kind`.
    pub fn set(&mut self, kind: Scoped, days: Option<u32>) {
        let slot = match kind {
            Scoped::DeploymentLogs => &mut self.deployment_logs_days,
            Scoped::ContainerMetrics => &mut self.container_metrics_days,
            Scoped::AuditLogs => &mut self.audit_logs_days,
            Scoped::JobRuns => &mut self.job_runs_days,
            Scoped::WebhookDeliveries => &mut self.webhook_deliveries_days,
        };
        *slot = days;
    }

    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        Scoped::ALL.iter().all(|k| self.get(*k).is_none())
    }

    /// The overrides in an organization's `settings` (see the type docs).
    pub fn from_settings(settings: &Value) -> Self {
        let mut out = Self::default();
        let Some(map) = settings.get(SETTINGS_KEY).and_then(Value::as_object) else {
            return out;
        };
        for kind in Scoped::ALL {
            let days = map
                .get(kind.key())
                .and_then(Value::as_u64)
                .and_then(|d| u32::try_from(d).ok())
                .filter(|d| (1..=MAX_DAYS).contains(d));
            out.set(kind, days);
        }
        out
    }

    /// The JSON object stored under [`SETTINGS_KEY`] (only overridden keys).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for kind in Scoped::ALL {
            if let Some(days) = self.get(kind) {
                map.insert(kind.key().to_owned(), Value::from(days));
            }
        }
        Value::Object(map)
    }

    /// `settings` with these overrides in place (the key removed when
    /// there are none); every other setting is kept.
    pub fn store_in(&self, settings: &Value) -> Value {
        let mut map = match settings {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        if self.is_empty() {
            map.remove(SETTINGS_KEY);
        } else {
            map.insert(SETTINGS_KEY.to_owned(), self.to_json());
        }
        Value::Object(map)
    }

    /// What cleanup applies to the organization under the installation's
    /// `defaults`.
    pub fn effective(&self, defaults: &RetentionPolicy) -> RetentionPolicy {
        let mut out = *defaults;
        for kind in Scoped::ALL {
            if let Some(days) = self.get(kind) {
                *kind.days_mut(&mut out) = days;
            }
        }
        out
    }
}

/// An organization's override of `kind`'s window, in days, as a SQL
/// expression over `organizations.settings`: NULL unless the value is an
/// integer (checked before it is cast, so a malformed setting never fails
/// the run); callers also require 1 to [`MAX_DAYS`], which makes the rule
/// [`OrgRetention::from_settings`]'s.
pub fn override_days(backend: DbBackend, kind: Scoped) -> SimpleExpr {
    let key = kind.key();
    match backend {
        DbBackend::Postgres => Expr::cust(format!(
            "(CASE WHEN jsonb_typeof(organizations.settings #> '{{retention,{key}}}') = 'number' \
             AND (organizations.settings #>> '{{retention,{key}}}') ~ '^[0-9]{{1,9}}$' \
             THEN (organizations.settings #>> '{{retention,{key}}}')::bigint END)"
        )),
        _ => Expr::cust(format!(
            "(CASE WHEN json_valid(organizations.settings) THEN \
             CASE WHEN json_type(organizations.settings, '$.retention.{key}') = 'integer' \
             THEN json_extract(organizations.settings, '$.retention.{key}') END END)"
        )),
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
    /// Containers whose pod went away longer ago than any organization
    /// keeps metrics (their samples go with them).
    pub removed_containers: u64,
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

/// Deletes rows strictly older than `now - days` for each table of the
/// policy (the installation's default), and for each organization that
/// overrides a window, of its own data older than its window.
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
    for kind in Scoped::ALL {
        let deleted = cleanup_scoped(db, keyring, kind, kind.days(policy), now, batch).await?;
        *match kind {
            Scoped::DeploymentLogs => &mut report.deployment_logs,
            Scoped::ContainerMetrics => &mut report.container_metrics,
            Scoped::AuditLogs => &mut report.audit_logs,
            Scoped::JobRuns => &mut report.job_runs,
            Scoped::WebhookDeliveries => &mut report.webhook_deliveries,
        } = deleted;
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
    report.removed_containers = cleanup_removed_containers(db, policy, now, batch).await?;
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
        removed_containers = report.removed_containers,
        auth_throttle = report.auth_throttle,
        "retention cleanup"
    );
    Ok(report)
}

/// Containers the status sync marked removed before the longest metrics
/// window in use (the installation's or any organization's), so no
/// organization loses samples it keeps; none while metrics are kept forever.
async fn cleanup_removed_containers(
    db: &DatabaseConnection,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    batch: u64,
) -> Result<u64> {
    let longest = override_windows(db, Scoped::ContainerMetrics)
        .await?
        .into_iter()
        .chain([policy.container_metrics_days])
        .max()
        .unwrap_or(0);
    let Some(before) = cutoff(now, longest).filter(|_| policy.container_metrics_days > 0) else {
        return Ok(0);
    };
    delete_batched::<containers::Entity, _>(
        db,
        containers::Column::Id,
        containers::Column::RemovedAt.lt(before),
        batch,
    )
    .await
}

/// The distinct override windows organizations chose for `kind` (one
/// query, however many organizations there are), ascending.
async fn override_windows(db: &DatabaseConnection, kind: Scoped) -> Result<Vec<u32>> {
    let days = override_days(db.get_database_backend(), kind);
    let query = Query::select()
        .distinct()
        .expr_as(days.clone(), Alias::new("days"))
        .from(organizations::Entity)
        .and_where(days.between(1, MAX_DAYS))
        .to_owned();
    let mut windows = Vec::new();
    for row in db.query_all(&query).await? {
        let days: i64 = row.try_get("", "days")?;
        windows.extend(u32::try_from(days).ok());
    }
    windows.sort_unstable();
    Ok(windows)
}

/// `kind`'s rows whose organization passes `test` (an expression over
/// `organizations`, e.g. on [`override_days`]): `EXISTS` over the row's
/// owner, correlated on the row's own foreign key and joined by primary
/// keys up to its organization (deployment → service or stack → project,
/// container → service → project, job → project); `NOT EXISTS` with
/// `negate`. PostgreSQL plans these as semi- and anti-joins (never a
/// `NOT IN` over a list it might have to scan per row), SQLite as a few
/// primary-key lookups per row; an audit row whose organization is gone
/// (NULL) is no organization's.
fn owned_by(kind: Scoped, test: SimpleExpr, negate: bool) -> SimpleExpr {
    use organizations::Column as O;
    let org = || {
        Query::select()
            .expr(Expr::val(1))
            .from(organizations::Entity)
            .to_owned()
    };
    let owner = |mut select: SelectStatement, project: SimpleExpr| {
        select
            .inner_join(
                projects::Entity,
                Expr::col((projects::Entity, projects::Column::Id)).eq(project),
            )
            .inner_join(
                organizations::Entity,
                Expr::col((organizations::Entity, O::Id))
                    .equals((projects::Entity, projects::Column::OrganizationId)),
            )
            .to_owned()
    };
    let mut select = match kind {
        Scoped::DeploymentLogs => owner(
            Query::select()
                .expr(Expr::val(1))
                .from(deployments::Entity)
                .left_join(
                    services::Entity,
                    Expr::col((services::Entity, services::Column::Id))
                        .equals((deployments::Entity, deployments::Column::ServiceId)),
                )
                .left_join(
                    stacks::Entity,
                    Expr::col((stacks::Entity, stacks::Column::Id))
                        .equals((deployments::Entity, deployments::Column::StackId)),
                )
                .and_where(
                    Expr::col((deployments::Entity, deployments::Column::Id)).equals((
                        deployment_logs::Entity,
                        deployment_logs::Column::DeploymentId,
                    )),
                )
                .to_owned(),
            // A deployment belongs to a service or to a stack (CHECK).
            Func::coalesce([
                Expr::col((services::Entity, services::Column::ProjectId)),
                Expr::col((stacks::Entity, stacks::Column::ProjectId)),
            ])
            .into(),
        ),
        Scoped::ContainerMetrics => owner(
            Query::select()
                .expr(Expr::val(1))
                .from(containers::Entity)
                .inner_join(
                    services::Entity,
                    Expr::col((services::Entity, services::Column::Id))
                        .equals((containers::Entity, containers::Column::ServiceId)),
                )
                .and_where(
                    Expr::col((containers::Entity, containers::Column::Id)).equals((
                        container_metrics::Entity,
                        container_metrics::Column::ContainerId,
                    )),
                )
                .to_owned(),
            Expr::col((services::Entity, services::Column::ProjectId)),
        ),
        Scoped::JobRuns => owner(
            Query::select()
                .expr(Expr::val(1))
                .from(jobs::Entity)
                .and_where(
                    Expr::col((jobs::Entity, jobs::Column::Id))
                        .equals((job_runs::Entity, job_runs::Column::JobId)),
                )
                .to_owned(),
            Expr::col((jobs::Entity, jobs::Column::ProjectId)),
        ),
        Scoped::WebhookDeliveries => org()
            .and_where(Expr::col((organizations::Entity, O::Id)).equals((
                webhook_deliveries::Entity,
                webhook_deliveries::Column::OrganizationId,
            )))
            .to_owned(),
        Scoped::AuditLogs => org()
            .and_where(
                Expr::col((organizations::Entity, O::Id))
                    .equals((audit_logs::Entity, audit_logs::Column::OrganizationId)),
            )
            .to_owned(),
    };
    let exists = Expr::exists(select.and_where(test).to_owned());
    if negate { exists.not() } else { exists }
}

/// `kind`'s rows that are due once older than `before` (finished job runs
/// only: an active run is never cut, however old).
fn due(kind: Scoped, before: DateTime<Utc>) -> SimpleExpr {
    match kind {
        Scoped::DeploymentLogs => deployment_logs::Column::Timestamp.lt(before),
        Scoped::ContainerMetrics => container_metrics::Column::Timestamp.lt(before),
        Scoped::AuditLogs => audit_logs::Column::CreatedAt.lt(before),
        Scoped::JobRuns => job_runs::Column::FinishedAt.lt(before).and(
            job_runs::Column::Status.is_not_in([JobRunStatus::Pending, JobRunStatus::Running]),
        ),
        Scoped::WebhookDeliveries => webhook_deliveries::Column::CreatedAt.lt(before),
    }
}

/// Cleans one organization-owned kind of data: one batched delete for the
/// installation's window (`default_days`, 0: keep forever), leaving out the
/// organizations that keep it longer, then one per distinct override
/// window for the organizations that chose it. Organizations with a
/// shorter window lose their oldest rows in the first pass already.
async fn cleanup_scoped(
    db: &DatabaseConnection,
    keyring: &Keyring,
    kind: Scoped,
    default_days: u32,
    now: DateTime<Utc>,
    batch: u64,
) -> Result<u64> {
    let windows = override_windows(db, kind).await?;
    let days = || override_days(db.get_database_backend(), kind);
    let mut deleted = 0;
    if let Some(before) = cutoff(now, default_days) {
        let mut condition = due(kind, before);
        if windows.iter().any(|w| *w > default_days) {
            let longer = days().between(i64::from(default_days) + 1, MAX_DAYS);
            condition = condition.and(owned_by(kind, longer, true));
        }
        deleted += delete_due(db, keyring, kind, condition, now, batch).await?;
    }
    for window in windows.into_iter().filter(|w| *w != default_days) {
        let Some(before) = cutoff(now, window) else {
            continue;
        };
        let condition = due(kind, before).and(owned_by(kind, days().eq(window), false));
        deleted += delete_due(db, keyring, kind, condition, now, batch).await?;
    }
    Ok(deleted)
}

/// Deletes `kind`'s rows matching `condition` in batches (audit rows with
/// their chains' checkpoints).
async fn delete_due(
    db: &DatabaseConnection,
    keyring: &Keyring,
    kind: Scoped,
    condition: SimpleExpr,
    now: DateTime<Utc>,
    batch: u64,
) -> Result<u64> {
    match kind {
        Scoped::DeploymentLogs => {
            delete_batched::<deployment_logs::Entity, _>(
                db,
                deployment_logs::Column::Id,
                condition,
                batch,
            )
            .await
        }
        Scoped::ContainerMetrics => {
            delete_batched::<container_metrics::Entity, _>(
                db,
                container_metrics::Column::Id,
                condition,
                batch,
            )
            .await
        }
        Scoped::JobRuns => {
            delete_batched::<job_runs::Entity, _>(db, job_runs::Column::Id, condition, batch).await
        }
        Scoped::WebhookDeliveries => {
            delete_batched::<webhook_deliveries::Entity, _>(
                db,
                webhook_deliveries::Column::Id,
                condition,
                batch,
            )
            .await
        }
        Scoped::AuditLogs => cut_audit_chains(db, keyring, condition, now, batch).await,
    }
}

/// Deletes the audit rows `due` matches (rows older than a cutoff, of a set
/// of whole chains), oldest first, `batch` per
/// transaction; in the same transaction each chain cut gets its checkpoint
/// (the last deleted row's hash, time and id, and the running count),
/// sealed with `keyring`, so the chain still verifies from there. Rows
/// are taken in time order across chains, and a chain's times strictly
/// increase, so what goes is always the start of each chain.
async fn cut_audit_chains(
    db: &DatabaseConnection,
    keyring: &Keyring,
    due: SimpleExpr,
    now: DateTime<Utc>,
    batch: u64,
) -> Result<u64> {
    let mut deleted = 0;
    loop {
        let txn = crate::begin_write(db).await?;
        let rows = audit_logs::Entity::find()
            .filter(due.clone())
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
