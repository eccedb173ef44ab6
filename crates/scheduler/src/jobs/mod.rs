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
use ferry_k8s::jobwatch::{JobRunView, JobRunWatch, RunsChange};
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

    /// One pass at `now` (tests pass their own clock), reading the
    /// cluster's job-run Jobs with two LISTs.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Tick> {
        self.tick_with(now, None).await
    }

    /// One pass, reading the job-run Jobs from `watched` when given.
    async fn tick_with(&self, now: DateTime<Utc>, watched: Option<&JobRunView>) -> Result<Tick> {
        if !self.lease.acquire(&self.db, now).await? {
            return Ok(Tick::default());
        }
        let fired = fire::fire_due(&self.db, now).await?;
        let dispatched = self.runs.dispatch(now).await?;
        let tracked = self.runs.track(now, watched).await?;
        Ok(Tick {
            leader: true,
            fired,
            dispatched,
            tracked,
        })
    }

    /// Ticks every `interval` until shutdown, then gives the lease up.
    /// While it leads, it watches the job-run Jobs and pods: a change ticks
    /// at once (after [`COALESCE`], so a burst is one tick), and tracking
    /// reads the watch instead of listing.
    pub async fn run(&self, interval: Duration, shutdown: &Shutdown) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = RunWatch::default();
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                _ = ticker.tick() => {}
                () = watch.changed() => {}
            }
            match self.tick_with(Utc::now(), watch.view.as_ref()).await {
                Ok(t) if t.leader => {
                    watch.lead(self.runs.cluster());
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
                Ok(_) => watch = RunWatch::default(),
                Err(err) => tracing::warn!(error = %err, "job tick failed; retrying"),
            }
        }
        if let Err(err) = self.lease.release(&self.db).await {
            tracing::warn!(error = %err, "releasing the jobs lease failed");
        }
    }
}

/// How long the loop gathers watch events before it ticks.
pub const COALESCE: Duration = Duration::from_millis(20);

/// The leader's watch on job-run Jobs and pods; empty on a follower.
#[derive(Default)]
struct RunWatch {
    watch: Option<JobRunWatch>,
    /// Set once the watch has listed: until then tracking lists.
    view: Option<JobRunView>,
}

impl RunWatch {
    /// Starts watching (once) when there is a cluster.
    fn lead(&mut self, cluster: Option<&Cluster>) {
        if self.watch.is_none()
            && let Some(cluster) = cluster
        {
            self.watch = Some(cluster.watch_job_runs());
        }
    }

    /// Waits for the watch to report changes, then for [`COALESCE`] more;
    /// never returns without a watch.
    async fn changed(&mut self) {
        let Some(watch) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        let change = watch.next().await;
        if !self.absorb(change) {
            return;
        }
        let window = tokio::time::sleep(COALESCE);
        tokio::pin!(window);
        loop {
            let Some(watch) = self.watch.as_mut() else {
                return;
            };
            let change = tokio::select! {
                () = &mut window => return,
                change = watch.next() => change,
            };
            if !self.absorb(change) {
                return;
            }
        }
    }

    /// Takes one watch answer; false when the watch ended (it is dropped
    /// and restarted by the next leading tick).
    fn absorb(&mut self, change: Option<RunsChange>) -> bool {
        match (change, &self.watch) {
            (Some(RunsChange::Resynced), Some(watch)) => {
                self.view = Some(watch.view());
                true
            }
            (Some(_), _) => true,
            (None, _) => {
                *self = Self::default();
                false
            }
        }
    }
}
