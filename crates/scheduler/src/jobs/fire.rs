//! Firing due schedules: every enabled job whose `next_run_at` has passed
//! gets a run row for its slot (or a `skipped` / `missed` record), and its
//! `next_run_at` moves on. One transaction per job; the slot is unique per
//! job and the advance is conditional on the `next_run_at` read, so two
//! replicas racing on one job create one run.
//!
//! Missed slots (the scheduler was down): the latest slot runs late if it
//! is within the job's starting deadline; otherwise it is recorded as
//! `missed`. Earlier missed slots are summed up in one `missed` row (never
//! one row per slot: an every-minute job down for a day would write 1,440).

use chrono::{DateTime, Duration, Utc};
use ferry_cron::Schedule;
use ferry_db::entities::enums::{ConcurrencyPolicy, JobRunStatus, JobTrigger};
use ferry_db::entities::{job_runs, jobs};
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ActiveValue::Set, ColumnTrait as _, Condition, ConnectionTrait, DatabaseConnection,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use uuid::Uuid;

use crate::Result;

/// A slot at most this old when it is seen runs as on time.
pub const ON_TIME: Duration = Duration::seconds(60);
/// Due jobs handled per tick (the rest wait for the next one).
pub const MAX_DUE_PER_TICK: u64 = 1_000;
/// Missed slots counted at most (the summary says "at least").
const MAX_COUNTED: usize = 1_000;

/// Runs the fire step made active or cancelled (for the dispatcher).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Fired {
    /// Runs inserted as pending.
    pub pending: Vec<Uuid>,
    /// Active runs a REPLACE policy cancelled: their Jobs must go.
    pub cancelled: Vec<Uuid>,
    pub skipped: usize,
    pub missed: usize,
}

impl Fired {
    fn extend(&mut self, other: Fired) {
        self.pending.extend(other.pending);
        self.cancelled.extend(other.cancelled);
        self.skipped += other.skipped;
        self.missed += other.missed;
    }
}

/// Fires every job due at `now`.
pub async fn fire_due(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<Fired> {
    let due = jobs::Entity::find()
        .filter(jobs::Column::Enabled.eq(true))
        .filter(jobs::Column::NextRunAt.lte(now))
        .order_by_asc(jobs::Column::NextRunAt)
        .limit(MAX_DUE_PER_TICK)
        .all(db)
        .await?;
    let mut fired = Fired::default();
    for job in due {
        match fire_one(db, &job, now).await {
            Ok(f) => fired.extend(f),
            // One broken job never stops the others.
            Err(err) => {
                tracing::warn!(job = %job.id, error = %err, "firing a job failed; retrying next tick")
            }
        }
    }
    Ok(fired)
}

/// What to do with a due job at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The slot to run (on time, or late within the starting deadline).
    pub run: Option<DateTime<Utc>>,
    /// The slot recorded as missed, with how many slots it stands for.
    pub missed: Option<(DateTime<Utc>, usize)>,
    /// The job's next fire time after this.
    pub next: Option<DateTime<Utc>>,
}

/// Decides a due job's slots: `first` is its `next_run_at`.
pub fn plan(
    schedule: &Schedule,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
    starting_deadline: Option<Duration>,
) -> Plan {
    let latest = schedule
        .last_at_or_before(now)
        .filter(|t| *t >= first)
        .unwrap_or(first);
    let next = schedule.next_after(now);
    let late = now - latest;
    let runs_latest = late <= ON_TIME || starting_deadline.is_some_and(|deadline| late <= deadline);
    // Slots from `first` up to `latest` that will not run.
    let mut skipped_over = 0usize;
    let mut at = first;
    while at < latest && skipped_over < MAX_COUNTED {
        skipped_over += 1;
        match schedule.next_after(at) {
            Some(t) => at = t,
            None => break,
        }
    }
    if runs_latest {
        Plan {
            run: Some(latest),
            missed: (skipped_over > 0).then_some((first, skipped_over)),
            next,
        }
    } else {
        Plan {
            run: None,
            missed: Some((latest, skipped_over + 1)),
            next,
        }
    }
}

async fn fire_one(db: &DatabaseConnection, job: &jobs::Model, now: DateTime<Utc>) -> Result<Fired> {
    let Some(first) = job.next_run_at else {
        return Ok(Fired::default());
    };
    let schedule = match job
        .schedule
        .as_deref()
        .map(|s| Schedule::parse(s, &job.timezone))
    {
        Some(Ok(s)) => s,
        other => {
            // The api validates schedules; one that no longer parses (a
            // time zone removed from the database, say) stops firing.
            tracing::warn!(job = %job.id, problem = ?other.map(|r| r.err()), "job schedule unusable; not firing it");
            advance(db, job.id, first, None).await?;
            return Ok(Fired::default());
        }
    };
    let deadline = job
        .starting_deadline_seconds
        .map(|s| Duration::seconds(i64::from(s)));
    let plan = plan(&schedule, first, now, deadline);
    let txn = ferry_db::begin_write(db).await?;
    // Claim the job's due slot first: of racing replicas one moves it.
    if !advance(&txn, job.id, first, plan.next).await? {
        return Ok(Fired::default());
    }
    let mut fired = Fired::default();
    if let Some((slot, count)) = plan.missed {
        let reason = if count == 1 {
            format!("the slot at {slot} passed while no scheduler was running")
        } else {
            let more = if count >= MAX_COUNTED {
                "at least "
            } else {
                ""
            };
            format!("{more}{count} slots from {slot} on passed while no scheduler was running")
        };
        if insert_run(&txn, job.id, slot, JobRunStatus::Missed, Some(reason), now).await? {
            fired.missed += 1;
        }
    }
    if let Some(slot) = plan.run {
        let active = job_runs::Entity::find()
            .filter(job_runs::Column::JobId.eq(job.id))
            .filter(job_runs::Column::Status.is_in(super::ACTIVE))
            .all(&txn)
            .await?;
        let status = match (job.concurrency_policy, active.first()) {
            (ConcurrencyPolicy::Forbid, Some(busy)) => {
                let reason = format!(
                    "run {} was still {}; the concurrency policy is forbid",
                    busy.id,
                    if busy.status == JobRunStatus::Pending {
                        "pending"
                    } else {
                        "running"
                    }
                );
                if insert_run(&txn, job.id, slot, JobRunStatus::Skipped, Some(reason), now).await? {
                    fired.skipped += 1;
                }
                None
            }
            (ConcurrencyPolicy::Replace, Some(_)) => {
                let ids: Vec<Uuid> = active.iter().map(|r| r.id).collect();
                super::cancel_active(
                    &txn,
                    job.id,
                    Condition::all().add(job_runs::Column::Id.is_in(ids.clone())),
                    format!("replaced by the run for {slot}"),
                    now,
                )
                .await?;
                fired.cancelled.extend(ids);
                Some(JobRunStatus::Pending)
            }
            _ => Some(JobRunStatus::Pending),
        };
        if let Some(status) = status {
            let id = Uuid::new_v4();
            if insert_run_with_id(&txn, id, job.id, slot, status, None, now).await? {
                fired.pending.push(id);
            }
        }
    }
    txn.commit().await?;
    Ok(fired)
}

/// Moves `next_run_at` from `from` to `to`; `false` when another replica
/// moved it first.
async fn advance<C: ConnectionTrait>(
    db: &C,
    job: Uuid,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
) -> Result<bool> {
    let done = jobs::Entity::update_many()
        .col_expr(jobs::Column::NextRunAt, Expr::value(to))
        .filter(jobs::Column::Id.eq(job))
        .filter(jobs::Column::NextRunAt.eq(from))
        .exec(db)
        .await?;
    Ok(done.rows_affected == 1)
}

async fn insert_run<C: ConnectionTrait>(
    db: &C,
    job: Uuid,
    slot: DateTime<Utc>,
    status: JobRunStatus,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Result<bool> {
    insert_run_with_id(db, Uuid::new_v4(), job, slot, status, reason, now).await
}

/// Inserts the run of `slot` unless the slot has one; `true` if inserted.
async fn insert_run_with_id<C: ConnectionTrait>(
    db: &C,
    id: Uuid,
    job: Uuid,
    slot: DateTime<Utc>,
    status: JobRunStatus,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let terminal = !matches!(status, JobRunStatus::Pending | JobRunStatus::Running);
    let inserted = job_runs::Entity::insert(job_runs::ActiveModel {
        id: Set(id),
        job_id: Set(job),
        status: Set(status),
        trigger_type: Set(JobTrigger::Schedule),
        scheduled_for: Set(Some(slot)),
        reason: Set(reason),
        finished_at: Set(terminal.then_some(now)),
        created_at: Set(now),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([job_runs::Column::JobId, job_runs::Column::ScheduledFor])
    .exec(db)
    .await?;
    Ok(matches!(
        inserted,
        ferry_db::sea_orm::TryInsertResult::Inserted(_)
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn an_on_time_slot_runs() {
        let s = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let p = plan(
            &s,
            t("2026-01-01T10:05:00Z"),
            t("2026-01-01T10:05:02Z"),
            None,
        );
        assert_eq!(p.run, Some(t("2026-01-01T10:05:00Z")));
        assert_eq!(p.missed, None);
        assert_eq!(p.next, Some(t("2026-01-01T10:10:00Z")));
    }

    #[test]
    fn after_downtime_the_latest_slot_runs_within_the_deadline() {
        let s = Schedule::parse("*/5 * * * *", "UTC").unwrap();
        let first = t("2026-01-01T10:05:00Z");
        let now = t("2026-01-01T10:32:00Z");
        // No deadline: the latest slot (10:30) is 2 minutes late → missed.
        let p = plan(&s, first, now, None);
        assert_eq!(p.run, None);
        assert_eq!(p.missed, Some((t("2026-01-01T10:30:00Z"), 6)));
        // A 5-minute deadline: 10:30 runs; 10:05..10:25 (5 slots) missed.
        let p = plan(&s, first, now, Some(Duration::minutes(5)));
        assert_eq!(p.run, Some(t("2026-01-01T10:30:00Z")));
        assert_eq!(p.missed, Some((first, 5)));
        assert_eq!(p.next, Some(t("2026-01-01T10:35:00Z")));
    }

    #[test]
    fn a_long_outage_is_counted_with_a_bound() {
        let s = Schedule::parse("* * * * *", "UTC").unwrap();
        let p = plan(
            &s,
            t("2026-01-01T00:00:00Z"),
            t("2026-01-03T00:00:30Z"),
            None,
        );
        assert_eq!(p.run, Some(t("2026-01-03T00:00:00Z")));
        assert_eq!(p.missed.map(|m| m.1), Some(MAX_COUNTED));
    }
}
