//! Users' scheduled jobs: each tick the replica holding the `jobs` lease
//! fires due schedules ([`fire`]), starts pending runs and records finished
//! ones ([`runs`]). The api writes jobs (and their `next_run_at`) and
//! manual runs; everything else about a run happens here.

pub mod fire;
pub mod runs;

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_common::Shutdown;
use ferry_db::entities::enums::JobRunStatus;
use ferry_db::entities::job_runs;
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ColumnTrait as _, Condition, ConnectionTrait, DatabaseConnection, EntityTrait as _,
    QueryFilter as _,
};
use ferry_k8s::Cluster;
use uuid::Uuid;

use crate::Result;
use crate::lease::Lease;

/// Run states that count against a concurrency policy.
pub const ACTIVE: [JobRunStatus; 2] = [JobRunStatus::Pending, JobRunStatus::Running];

/// Marks the active runs of `job` matching `which` cancelled (the replace
/// policy); the tracker deletes their Jobs. The number of runs cancelled.
pub(crate) async fn cancel_active<C: ConnectionTrait>(
    db: &C,
    job: Uuid,
    which: Condition,
    reason: String,
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(job_runs::Entity::update_many()
        .col_expr(
            job_runs::Column::Status,
            Expr::value(JobRunStatus::Cancelled),
        )
        .col_expr(job_runs::Column::Reason, Expr::value(reason))
        .col_expr(job_runs::Column::FinishedAt, Expr::value(now))
        .filter(job_runs::Column::JobId.eq(job))
        .filter(job_runs::Column::Status.is_in(ACTIVE))
        .filter(which)
        .exec(db)
        .await?
        .rows_affected)
}

/// Lease name of the job loop.
pub const LEASE: &str = "jobs";

/// What one tick did; `leader` false when another replica holds the lease.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tick {
    pub leader: bool,
    pub fired: fire::Fired,
    pub dispatched: runs::Report,
    pub tracked: runs::Report,
}

/// The job loop of one scheduler replica.
#[derive(Clone)]
pub struct Engine {
    db: DatabaseConnection,
    runs: runs::Runs,
    lease: Lease,
}

impl Engine {
    pub fn new(db: DatabaseConnection, cluster: Option<Cluster>, lease: Lease) -> Self {
        Self {
            runs: runs::Runs::new(db.clone(), cluster),
            db,
            lease,
        }
    }

    /// One pass at `now` (tests pass their own clock).
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Tick> {
        if !self.lease.acquire(&self.db, now).await? {
            return Ok(Tick::default());
        }
        let fired = fire::fire_due(&self.db, now).await?;
        let dispatched = self.runs.dispatch(now).await?;
        let tracked = self.runs.track(now).await?;
        Ok(Tick {
            leader: true,
            fired,
            dispatched,
            tracked,
        })
    }

    /// Ticks every `interval` until shutdown, then gives the lease up.
    pub async fn run(&self, interval: Duration, shutdown: &Shutdown) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                _ = ticker.tick() => {}
            }
            match self.tick(Utc::now()).await {
                Ok(t) if t.leader => {
                    if t.fired != fire::Fired::default()
                        || t.dispatched != runs::Report::default()
                        || t.tracked != runs::Report::default()
                    {
                        tracing::info!(
                            fired = t.fired.pending.len(),
                            skipped = t.fired.skipped,
                            missed = t.fired.missed,
                            replaced = t.fired.cancelled.len(),
                            started = t.dispatched.started,
                            planned = t.dispatched.planned,
                            finished = t.tracked.finished,
                            collected = t.tracked.collected,
                            "job tick"
                        );
                    }
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "job tick failed; retrying"),
            }
        }
        if let Err(err) = self.lease.release(&self.db).await {
            tracing::warn!(error = %err, "releasing the jobs lease failed");
        }
    }
}
