//! Readiness: whether this replica can do its work right now. Every
//! `FERRY_SCHEDULER_READINESS_INTERVAL_MS` it runs `SELECT 1` on the
//! database and, when a cluster is configured, one LIST of Ferry's job-run
//! Jobs with `limit=1` (the access the job loop needs), each within a
//! timeout; gRPC health is `SERVING` while both answer and `NOT_SERVING`
//! while either does not. Leadership plays no part: a replica that does not
//! hold a lease is ready to take it over.

use std::time::Duration;

use ferry_common::Shutdown;
use ferry_db::sea_orm::{ConnectionTrait as _, DatabaseConnection};
use ferry_k8s::Cluster;
use tokio::sync::watch;

/// Each check gets at most this long (and at least the interval, within
/// [`MIN_TIMEOUT`, `MAX_TIMEOUT`]) before it counts as failed.
const MIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(5);

/// What the scheduler depends on.
#[derive(Clone)]
pub struct Probe {
    db: DatabaseConnection,
    cluster: Option<Cluster>,
    timeout: Duration,
}

impl Probe {
    /// Checks `db` (and `cluster`, if any), each bounded by `timeout`.
    pub fn new(db: DatabaseConnection, cluster: Option<Cluster>, timeout: Duration) -> Self {
        Self {
            db,
            cluster,
            timeout,
        }
    }

    /// `Ok` when every dependency answers; otherwise what does not, in words.
    pub async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.db.execute_unprepared("SELECT 1")).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return Err(format!("database unreachable: {err}")),
            Err(_) => {
                return Err(format!(
                    "database unreachable: no answer within {:?}",
                    self.timeout
                ));
            }
        }
        if let Some(cluster) = &self.cluster {
            match tokio::time::timeout(self.timeout, cluster.probe_job_runs()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(format!("Kubernetes API unreachable: {err}")),
                Err(_) => {
                    return Err(format!(
                        "Kubernetes API unreachable: no answer within {:?}",
                        self.timeout
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The timeout of each check for a probe every `interval`.
pub fn timeout_for(interval: Duration) -> Duration {
    interval.clamp(MIN_TIMEOUT, MAX_TIMEOUT)
}

/// Checks now and then every `interval` until shutdown, publishing the
/// result on `ready` (and logging each change once).
pub async fn watch(
    probe: Probe,
    interval: Duration,
    ready: watch::Sender<bool>,
    shutdown: &Shutdown,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Result<(), String>> = None;
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        let outcome = probe.check().await;
        let changed = match (&last, &outcome) {
            (None, _) => true,
            (Some(before), now) => before.is_ok() != now.is_ok(),
        };
        if changed {
            match &outcome {
                Ok(()) if probe.cluster.is_some() => {
                    tracing::info!("the database and the Kubernetes API answer: ready");
                }
                Ok(()) => tracing::info!("the database answers: ready"),
                Err(why) => tracing::warn!(problem = %why, "not ready"),
            }
        }
        ready.send_replace(outcome.is_ok());
        last = Some(outcome);
    }
}
