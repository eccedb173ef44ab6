//! Status sync: the replica holding the `status-sync` lease watches every
//! Ferry-labelled Deployment, StatefulSet and Pod of the cluster
//! ([`ferry_k8s::StatusWatch`]) and writes what changed into
//! `service_health`, `containers` and the settled values of
//! `services.status` ([`store`]), within moments of the event, whoever made
//! the change (a rollout, `kubectl scale`, a lost node). Changes that
//! arrive close together are written in one transaction. Replicas without
//! the lease do not watch at all; the one that takes over starts with a
//! full list and so repairs anything missed meanwhile.

pub mod metrics;
pub mod store;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_common::Shutdown;
use ferry_db::sea_orm::DatabaseConnection;
use ferry_k8s::{Cluster, StatusChange, StatusView, StatusWatch};

use crate::lease::Lease;

/// Lease name of the status sync.
pub const LEASE: &str = "status-sync";

/// How long changes are gathered before one write.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// The status sync of one scheduler replica.
pub struct StatusSync {
    db: DatabaseConnection,
    cluster: Cluster,
    lease: Lease,
    renew_every: Duration,
}

impl StatusSync {
    pub fn new(db: DatabaseConnection, cluster: Cluster, lease: Lease, ttl: Duration) -> Self {
        Self {
            db,
            cluster,
            lease,
            renew_every: (ttl / 3).max(Duration::from_millis(200)),
        }
    }

    /// Tries for the lease every third of its lifetime; while it holds the
    /// lease, watches and writes. Gives the lease up on shutdown.
    pub async fn run(&self, shutdown: &Shutdown) {
        loop {
            match self.lease.acquire(&self.db, Utc::now()).await {
                Ok(true) => {
                    tracing::info!("status sync: leading");
                    if self.lead(shutdown).await {
                        break;
                    }
                    tracing::info!("status sync: lease lost; watches stopped");
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "status sync: lease check failed"),
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = tokio::time::sleep(self.renew_every) => {}
            }
        }
        if let Err(err) = self.lease.release(&self.db).await {
            tracing::warn!(error = %err, "releasing the status-sync lease failed");
        }
    }

    /// Watches and writes until the lease is lost (`false`) or shutdown
    /// (`true`).
    async fn lead(&self, shutdown: &Shutdown) -> bool {
        let mut watch = self.cluster.watch_status();
        let mut renew = tokio::time::interval(self.renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        loop {
            tokio::select! {
                () = shutdown.wait() => return true,
                _ = renew.tick() => match self.lease.acquire(&self.db, Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => return false,
                    Err(err) => tracing::warn!(error = %err, "status sync: renewing the lease failed"),
                },
                change = watch.next() => {
                    let Some(change) = change else { return false };
                    let batch = gather(&mut watch, change).await;
                    self.write(&watch.view(), batch).await;
                }
            }
        }
    }

    async fn write(&self, view: &StatusView, batch: Batch) {
        match store::record(&self.db, view, &batch.services, batch.full, Utc::now()).await {
            Ok(report) if report != store::Report::default() => tracing::debug!(
                services = report.services,
                changed = report.changed,
                containers = report.containers,
                removed = report.removed,
                max_lag_ms = report.max_lag_ms,
                "status sync wrote"
            ),
            Ok(_) => {}
            // The next event (or the next re-list) writes them again.
            Err(err) => tracing::warn!(error = %err, "status sync: writing failed"),
        }
    }
}

/// Services to write, each with when its first change of the batch came.
#[derive(Debug, Default)]
pub struct Batch {
    pub services: BTreeMap<String, DateTime<Utc>>,
    /// A re-list: services no longer seen are rewritten too.
    pub full: bool,
}

impl Batch {
    fn add(&mut self, change: StatusChange, at: DateTime<Utc>) {
        let ids = match change {
            StatusChange::Changed(ids) => ids,
            StatusChange::Resynced(ids) => {
                self.full = true;
                ids
            }
        };
        for id in ids {
            self.services.entry(id).or_insert(at);
        }
    }
}

/// The change and those that follow within [`BATCH_WINDOW`].
async fn gather(watch: &mut StatusWatch, first: StatusChange) -> Batch {
    let mut batch = Batch::default();
    batch.add(first, Utc::now());
    let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
    while let Ok(Some(change)) = tokio::time::timeout_at(deadline, watch.next()).await {
        batch.add(change, Utc::now());
    }
    batch
}
