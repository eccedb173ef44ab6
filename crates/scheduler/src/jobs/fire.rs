//! Firing due schedules: every enabled job whose `next_run_at` has passed
//! gets a run row for its slot (or a `skipped` / `missed` record), and its
//! `next_run_at` moves on. The slot is unique per job and the advance is
//! conditional on the `next_run_at` read, so two replicas (or the api)
//! racing on one job create one run.
//!
//! Due jobs are fired in chunks of [`CHUNK`], one transaction each and a
//! handful of statements whatever the chunk's size: one conditional UPDATE
//! moves every job's `next_run_at` on (a `CASE` per job, each conditional
//! on the value read), one SELECT reads the active runs of the jobs that
//! run a slot, one multi-row INSERT .. ON CONFLICT DO NOTHING writes the
//! runs. If the UPDATE moved fewer jobs than it was given (the api or
//! another replica changed one since it was read) or a statement fails, the
//! chunk is rolled back and fired one job per transaction instead, so a
//! lost race or one broken job never costs the others their slots.
//!
//! Missed slots (the scheduler was down): the latest slot runs late if it
//! is within the job's starting deadline; otherwise it is recorded as
//! `missed`. Earlier missed slots are summed up in one `missed` row (never
//! one row per slot: an every-minute job down for a day would write 1,440).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use ferry_cron::Schedule;
use ferry_db::entities::enums::{ConcurrencyPolicy, JobRunStatus, JobTrigger};
use ferry_db::entities::{job_runs, jobs};
use ferry_db::sea_orm::sea_query::{CaseStatement, Expr, ExprTrait as _};
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
/// Due jobs fired per transaction (each costs 5 bind parameters in the
/// UPDATE and 8 in the INSERT: far below either database's limit).
pub const CHUNK: usize = 200;
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
    Ok(fire_jobs(db, &due, now).await)
}

/// Fires `due`, jobs read as due at `now` (perhaps a while ago: a job whose
/// `next_run_at` has moved since is left alone).
pub async fn fire_jobs(db: &DatabaseConnection, due: &[jobs::Model], now: DateTime<Utc>) -> Fired {
    let mut fired = Fired::default();
    // Jobs share schedules (`0 * * * *`): each is parsed once per tick.
    let mut schedules = Schedules::default();
    for chunk in due.chunks(CHUNK) {
        match fire_chunk(db, chunk, &mut schedules, now).await {
            Ok(Some(f)) => {
                fired.extend(f);
                continue;
            }
            Ok(None) => tracing::debug!(
                jobs = chunk.len(),
                "a due job changed since it was read; firing this chunk job by job"
            ),
            Err(err) => tracing::warn!(
                jobs = chunk.len(),
                error = %err,
                "firing a chunk of jobs failed; firing it job by job"
            ),
        }
        fired.extend(fire_one_by_one(db, chunk, now).await);
    }
    fired
}

/// Fires each job in its own transaction.
async fn fire_one_by_one(
    db: &DatabaseConnection,
    jobs: &[jobs::Model],
    now: DateTime<Utc>,
) -> Fired {
    let mut fired = Fired::default();
    for job in jobs {
        match fire_one(db, job, now).await {
            Ok(f) => fired.extend(f),
            // One broken job never stops the others.
            Err(err) => {
                tracing::warn!(job = %job.id, error = %err, "firing a job failed; retrying next tick")
            }
        }
    }
    fired
}

/// Parsed schedules by expression and time zone.
#[derive(Default)]
struct Schedules(HashMap<(Option<String>, String), Option<Schedule>>);

impl Schedules {
    fn of(&mut self, job: &jobs::Model) -> Option<&Schedule> {
        self.0
            .entry((job.schedule.clone(), job.timezone.clone()))
            .or_insert_with(|| schedule_of(job))
            .as_ref()
    }
}

/// A due job's schedule, or `None` (logged) when it no longer parses: the
/// api validates schedules, but a time zone can leave the database.
fn schedule_of(job: &jobs::Model) -> Option<Schedule> {
    match job
        .schedule
        .as_deref()
        .map(|s| Schedule::parse(s, &job.timezone))
    {
        Some(Ok(s)) => Some(s),
        other => {
            tracing::warn!(job = %job.id, problem = ?other.map(|r| r.err()), "job schedule unusable; not firing it");
            None
        }
    }
}

fn deadline_of(job: &jobs::Model) -> Option<Duration> {
    job.starting_deadline_seconds
        .map(|s| Duration::seconds(i64::from(s)))
}

/// Why a missed slot was not run, in words.
fn missed_reason(slot: DateTime<Utc>, count: usize) -> String {
    if count == 1 {
        format!("the slot at {slot} passed while no scheduler was running")
    } else {
        let more = if count >= MAX_COUNTED {
            "at least "
        } else {
            ""
        };
        format!("{more}{count} slots from {slot} on passed while no scheduler was running")
    }
}

/// Why a FORBID job's slot was skipped, in words.
fn forbid_reason(busy: Uuid, status: JobRunStatus) -> String {
    format!(
        "run {busy} was still {}; the concurrency policy is forbid",
        if status == JobRunStatus::Pending {
            "pending"
        } else {
            "running"
        }
    )
}

/// A run row to insert for a slot.
fn run_row(
    id: Uuid,
    job: Uuid,
    slot: DateTime<Utc>,
    status: JobRunStatus,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> job_runs::ActiveModel {
    let terminal = !matches!(status, JobRunStatus::Pending | JobRunStatus::Running);
    job_runs::ActiveModel {
        id: Set(id),
        job_id: Set(job),
        status: Set(status),
        trigger_type: Set(JobTrigger::Schedule),
        scheduled_for: Set(Some(slot)),
        reason: Set(reason),
        finished_at: Set(terminal.then_some(now)),
        created_at: Set(now),
        ..Default::default()
    }
}

/// Fires `chunk` in one transaction. `None` (nothing written) when a job's
/// `next_run_at` is no longer the one read.
async fn fire_chunk(
    db: &DatabaseConnection,
    chunk: &[jobs::Model],
    schedules: &mut Schedules,
    now: DateTime<Utc>,
) -> Result<Option<Fired>> {
    // (job, its due slot, the plan; `None`: unusable schedule, just stop it)
    let decided: Vec<(&jobs::Model, DateTime<Utc>, Option<Plan>)> = chunk
        .iter()
        .filter_map(|job| {
            let first = job.next_run_at?;
            let plan = schedules
                .of(job)
                .map(|s| plan(s, first, now, deadline_of(job)));
            Some((job, first, plan))
        })
        .collect();
    if decided.is_empty() {
        return Ok(Some(Fired::default()));
    }
    let txn = ferry_db::begin_write(db).await?;
    // Claim every due slot at once: of racing writers one moves each.
    let moves: Vec<Move> = decided
        .iter()
        .map(|(job, first, plan)| Move {
            job: job.id,
            from: *first,
            to: plan.as_ref().and_then(|p| p.next),
        })
        .collect();
    if advance_many(&txn, &moves).await? != moves.len() as u64 {
        txn.rollback().await?;
        return Ok(None);
    }
    // The active runs of the jobs that run a slot, oldest first.
    let running: Vec<Uuid> = decided
        .iter()
        .filter(|(_, _, plan)| plan.as_ref().is_some_and(|p| p.run.is_some()))
        .map(|(job, _, _)| job.id)
        .collect();
    let mut active: HashMap<Uuid, Vec<(Uuid, JobRunStatus)>> = HashMap::new();
    if !running.is_empty() {
        let rows: Vec<(Uuid, Uuid, JobRunStatus)> = job_runs::Entity::find()
            .select_only()
            .column(job_runs::Column::Id)
            .column(job_runs::Column::JobId)
            .column(job_runs::Column::Status)
            .filter(job_runs::Column::JobId.is_in(running))
            .filter(job_runs::Column::Status.is_in(super::ACTIVE))
            .order_by_asc(job_runs::Column::CreatedAt)
            .into_tuple()
            .all(&txn)
            .await?;
        for (id, job, status) in rows {
            active.entry(job).or_default().push((id, status));
        }
    }
    let mut fired = Fired::default();
    let mut rows = Vec::new();
    // What each row is, to count the ones inserted.
    let mut kinds: Vec<(Uuid, JobRunStatus)> = Vec::new();
    let mut push = |row: job_runs::ActiveModel, id: Uuid, status: JobRunStatus| {
        rows.push(row);
        kinds.push((id, status));
    };
    for (job, _, plan) in &decided {
        let Some(plan) = plan else {
            continue;
        };
        if let Some((slot, count)) = plan.missed {
            let id = Uuid::new_v4();
            let reason = missed_reason(slot, count);
            push(
                run_row(id, job.id, slot, JobRunStatus::Missed, Some(reason), now),
                id,
                JobRunStatus::Missed,
            );
        }
        let Some(slot) = plan.run else {
            continue;
        };
        let busy = active.get(&job.id).and_then(|runs| runs.first());
        let (status, reason) = match (job.concurrency_policy, busy) {
            (ConcurrencyPolicy::Forbid, Some(&(busy, busy_status))) => (
                JobRunStatus::Skipped,
                Some(forbid_reason(busy, busy_status)),
            ),
            (ConcurrencyPolicy::Replace, Some(_)) => {
                let ids: Vec<Uuid> = active[&job.id].iter().map(|(id, _)| *id).collect();
                super::cancel_active(
                    &txn,
                    job.id,
                    Condition::all().add(job_runs::Column::Id.is_in(ids.clone())),
                    format!("replaced by the run for {slot}"),
                    now,
                )
                .await?;
                fired.cancelled.extend(ids);
                (JobRunStatus::Pending, None)
            }
            _ => (JobRunStatus::Pending, None),
        };
        let id = Uuid::new_v4();
        push(run_row(id, job.id, slot, status, reason, now), id, status);
    }
    let inserted = insert_runs(&txn, rows, &kinds).await?;
    for (id, status) in kinds {
        if !inserted.contains(&id) {
            continue;
        }
        match status {
            JobRunStatus::Missed => fired.missed += 1,
            JobRunStatus::Skipped => fired.skipped += 1,
            _ => fired.pending.push(id),
        }
    }
    txn.commit().await?;
    Ok(Some(fired))
}

/// Inserts `rows` (one multi-row INSERT, slots that have a run already are
/// left alone); the ids of the rows inserted.
async fn insert_runs<C: ConnectionTrait>(
    db: &C,
    rows: Vec<job_runs::ActiveModel>,
    kinds: &[(Uuid, JobRunStatus)],
) -> Result<HashSet<Uuid>> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let wanted = rows.len() as u64;
    let done = job_runs::Entity::insert_many(rows)
        .on_conflict_do_nothing_on([job_runs::Column::JobId, job_runs::Column::ScheduledFor])
        .exec_without_returning(db)
        .await?;
    let count = match done {
        ferry_db::sea_orm::TryInsertResult::Inserted(n) => n,
        _ => 0,
    };
    let ids = kinds.iter().map(|(id, _)| *id);
    if count == wanted {
        return Ok(ids.collect());
    }
    // Some slots had a run already: read back which rows went in.
    Ok(job_runs::Entity::find()
        .select_only()
        .column(job_runs::Column::Id)
        .filter(job_runs::Column::Id.is_in(ids))
        .into_tuple::<Uuid>()
        .all(db)
        .await?
        .into_iter()
        .collect())
}

/// A job's `next_run_at` moving on.
struct Move {
    job: Uuid,
    /// The value read.
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
}

/// Moves each job's `next_run_at` from `from` to `to` in one UPDATE,
/// conditional per job on `from`; the number of jobs moved.
async fn advance_many<C: ConnectionTrait>(db: &C, moves: &[Move]) -> Result<u64> {
    let mut to = CaseStatement::new();
    let mut from = CaseStatement::new();
    for m in moves {
        to = to.case(Expr::col(jobs::Column::Id).eq(m.job), Expr::value(m.to));
        from = from.case(Expr::col(jobs::Column::Id).eq(m.job), Expr::value(m.from));
    }
    let done = jobs::Entity::update_many()
        .col_expr(jobs::Column::NextRunAt, to.into())
        .filter(jobs::Column::Id.is_in(moves.iter().map(|m| m.job)))
        .filter(Expr::col(jobs::Column::NextRunAt).eq(Into::<Expr>::into(from)))
        .exec(db)
        .await?;
    Ok(done.rows_affected)
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
    let Some(schedule) = schedule_of(job) else {
        advance(db, job.id, first, None).await?;
        return Ok(Fired::default());
    };
    let deadline = deadline_of(job);
    let plan = plan(&schedule, first, now, deadline);
    let txn = ferry_db::begin_write(db).await?;
    // Claim the job's due slot first: of racing replicas one moves it.
    if !advance(&txn, job.id, first, plan.next).await? {
        return Ok(Fired::default());
    }
    let mut fired = Fired::default();
    if let Some((slot, count)) = plan.missed {
        let reason = missed_reason(slot, count);
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
                let reason = forbid_reason(busy.id, busy.status);
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
    let inserted = job_runs::Entity::insert(run_row(id, job, slot, status, reason, now))
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
